//! Soak: a run of exams (synthetic reports and images) on S3 + KMS (moto), PostgreSQL and Kafka,
//! through stage worker processes (stamp, thumbnail, text), an index worker and a relay process,
//! while random ones of them are SIGKILLed and restarted and moto, Kafka and PostgreSQL are each
//! frozen (SIGSTOP) for a while. Afterwards dead letters are replayed until every version is
//! processed, and counted: every version's `file.processed` exactly once, every document in the
//! index once, every record readable. Uploads that meet an outage get a typed error and are
//! retried by the uploader.
//!
//! Short by default (CI: 30 exams, 8 kills, 5 s outages); `DOCSTORE_SOAK=1` runs the long
//! form (1,000 exams, 20 kills, 30 s outages). Needs the services of scripts/services.sh
//! (`DOCSTORE_TEST_KAFKA`, `DOCSTORE_TEST_AWS_ENDPOINT`, `DOCSTORE_TEST_PG_URL` and the PIDs).

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{WorkerProc, count_processed, service};
use docstore::{ExamId, Identity, Kind, PatientId, ProcessingState, PutRequest};
use docstore_bus::open_bus;
use docstore_pipeline::runtime::replay_dead_letters;
use docstore_tools::synthetic::Generator;

struct Plan {
    exams: usize,
    kills: usize,
    outage: Duration,
}

impl Plan {
    fn from_env() -> Plan {
        if std::env::var_os("DOCSTORE_SOAK").is_some() {
            Plan {
                exams: 1_000,
                kills: 20,
                outage: Duration::from_secs(30),
            }
        } else {
            Plan {
                exams: 30,
                kills: 8,
                outage: Duration::from_secs(5),
            }
        }
    }
}

/// The processes that may be killed: the three stage workers, the index worker, the relay.
struct Fleet {
    root: PathBuf,
    bus_url: String,
    store_env: Vec<(String, String)>,
    index_dir: String,
    procs: HashMap<&'static str, WorkerProc>,
    starts: usize,
}

impl Fleet {
    fn start(&mut self, name: &'static str) {
        self.starts += 1;
        let child = if name == "relay" {
            // The CLI is built beside the worker binary by `cargo test --workspace`.
            let cli = Path::new(env!("CARGO_BIN_EXE_docstore-worker")).with_file_name("docstore");
            assert!(cli.exists(), "{} missing: build the workspace", cli.display());
            let mut c = Command::new(cli);
            c.arg("relay").env("DOCSTORE_DATA_DIR", self.root.join("unused"));
            WorkerProc::spawn(&self.root, name, c, &self.bus_url, &self.store_env)
        } else if name == "index" {
            let args = ["--stage", "index", "--index", &self.index_dir];
            WorkerProc::start(&self.root, name, &args, &self.bus_url, &self.store_env)
        } else {
            let args = ["--stage", name, "--required", "stamp,thumbnail,text"];
            WorkerProc::start(&self.root, name, &args, &self.bus_url, &self.store_env)
        };
        self.procs.insert(name, child);
    }

    fn kill(&mut self, name: &'static str) {
        if let Some(w) = self.procs.remove(name) {
            w.kill();
        }
    }

    /// Restarts whatever exited on its own; returns their names.
    fn revive(&mut self) -> Vec<&'static str> {
        let exited: Vec<&'static str> = self
            .procs
            .iter_mut()
            .filter_map(|(n, w)| w.child.try_wait().ok().flatten().map(|_| *n))
            .collect();
        for n in &exited {
            self.procs.remove(n);
            self.start(n);
        }
        exited
    }
}

/// Sends `signal` to `pid` and, for PostgreSQL's postmaster, to its backends too.
fn signal(pid: &str, signal: &str, with_children: bool) {
    let mut pids = vec![pid.to_owned()];
    if with_children && let Ok(out) = Command::new("pgrep").args(["-P", pid]).output() {
        pids.extend(
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_owned),
        );
    }
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .args(&pids)
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {pids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kills_and_outages_lose_nothing_and_duplicate_nothing() {
    let (Some(kafka), Some(endpoint), Some(pg_url)) = (
        service("DOCSTORE_TEST_KAFKA"),
        service("DOCSTORE_TEST_AWS_ENDPOINT"),
        service("DOCSTORE_TEST_PG_URL"),
    ) else {
        return;
    };
    let (Some(moto_pid), Some(kafka_pid), Some(pg_pid)) = (
        service("DOCSTORE_TEST_MOTO_PID"),
        service("DOCSTORE_TEST_KAFKA_PID"),
        service("DOCSTORE_TEST_PG_PID"),
    ) else {
        return;
    };
    let plan = Plan::from_env();
    let pg = docstore::conformance::fresh_pg_database(&pg_url, "soak").await;
    let work = tempfile::tempdir().unwrap();
    let (store_env, store, _) = common::aws_store(&endpoint, pg, work.path()).await;
    let prefix = format!("soak{}.", uuid::Uuid::new_v4().simple());
    let bus_url = format!("kafka://{kafka}?prefix={prefix}&partitions=4&session_timeout_ms=3000");
    let index_dir = work.path().join("index");
    let mut fleet = Fleet {
        root: work.path().to_owned(),
        bus_url: bus_url.clone(),
        store_env,
        index_dir: index_dir.display().to_string(),
        procs: HashMap::new(),
        starts: 0,
    };
    for name in ["stamp", "thumbnail", "text", "index", "relay"] {
        fleet.start(name);
    }

    // Uploads: generated documents, each retried (bounded) while an outage lasts.
    let uploaded = Arc::new(AtomicUsize::new(0));
    let upload_errors = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let uploading = Arc::new(AtomicBool::new(true));
    let uploader = {
        let (store, uploaded, errors, uploading) = (
            store.clone(),
            uploaded.clone(),
            upload_errors.clone(),
            uploading.clone(),
        );
        let exams = plan.exams;
        tokio::spawn(async move {
            let who = Identity::new("soak:reception");
            let mut g = Generator::new(99, "Clínica Soak", 20);
            let mut ids = Vec::new();
            for _ in 0..exams {
                let r = g.report();
                let (_, _, jpeg) = g.image(640, 480);
                for (kind, media, body) in [
                    (Kind::Report, "application/pdf", r.pdf),
                    (Kind::Image, "image/jpeg", jpeg),
                ] {
                    let started = Instant::now();
                    loop {
                        let req = PutRequest::new(
                            PatientId::new(r.patient_id.clone()).unwrap(),
                            ExamId::new(r.exam_id.clone()).unwrap(),
                        )
                        .kind(kind)
                        .media_type(media);
                        match store.put(&who, req, &body[..]).await {
                            Ok(v) => {
                                ids.push(v.document_id);
                                uploaded.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            Err(e) => {
                                errors
                                    .lock()
                                    .unwrap()
                                    .push(format!("{e:?}").chars().take(60).collect());
                                assert!(
                                    started.elapsed() < Duration::from_secs(300),
                                    "upload never succeeded: {e}"
                                );
                                tokio::time::sleep(Duration::from_millis(500)).await;
                            }
                        }
                    }
                }
            }
            uploading.store(false, Ordering::Relaxed);
            ids
        })
    };

    // Disruptions while uploads and processing run: kills at random moments, then one outage of
    // each service, then the rest of the kills.
    let victims: [&'static str; 5] = ["stamp", "thumbnail", "text", "index", "relay"];
    let mut killed: HashMap<&str, usize> = HashMap::new();
    let mut crashed: Vec<&str> = Vec::new();
    // Early, while uploads are still in flight, so the outages meet uploads and processing.
    let outage_at = 1;
    for k in 0..plan.kills {
        tokio::time::sleep(Duration::from_millis(rand::random_range(300..1500))).await;
        let v = victims[rand::random_range(0..victims.len())];
        fleet.kill(v);
        *killed.entry(v).or_default() += 1;
        crashed.extend(fleet.revive());
        fleet.start(v);
        eprintln!("kill {k}: {v}; {} uploaded", uploaded.load(Ordering::Relaxed));
        if k == outage_at {
            for (what, pid, children) in [
                ("moto", &moto_pid, false),
                ("kafka", &kafka_pid, false),
                ("postgres", &pg_pid, true),
            ] {
                eprintln!("outage: {what} frozen for {:?}", plan.outage);
                signal(pid, "STOP", children);
                tokio::time::sleep(plan.outage).await;
                signal(pid, "CONT", children);
                tokio::time::sleep(Duration::from_secs(2)).await;
                crashed.extend(fleet.revive());
            }
        }
    }
    assert!(uploading.load(Ordering::Relaxed) || plan.kills == 0 || uploaded.load(Ordering::Relaxed) > 0);
    let ids = uploader.await.unwrap();
    let total = ids.len();
    assert_eq!(total, plan.exams * 2);

    // Everything processed, replaying dead letters (outages exhaust a stage's retries) as needed.
    let bus = open_bus(&bus_url).unwrap();
    let mut replayed = 0usize;
    let start = Instant::now();
    loop {
        crashed.extend(fleet.revive());
        let mut pending = 0usize;
        for id in &ids {
            if store.metadata().version(id, Some(1)).await.unwrap().state != ProcessingState::Processed {
                pending += 1;
            }
        }
        if pending == 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "{pending} of {total} never processed"
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
        for topic in ["file.uploaded.dlq", "file.processed.dlq"] {
            replayed += replay_dead_letters(bus.as_ref(), topic, 10_000, Duration::from_secs(2))
                .await
                .unwrap();
        }
    }
    let counts = count_processed(bus.as_ref(), total, Duration::from_secs(180)).await;
    let duplicated = counts.values().filter(|n| **n > 1).count();
    let lost = ids
        .iter()
        .filter(|id| !counts.contains_key(&((*id).clone(), 1)))
        .count();

    // Searchable once each: the index holds exactly the uploaded documents.
    let index = docstore_search::SearchIndex::open_read_only(&index_dir, store.keys().as_ref())
        .await
        .unwrap();
    let start = Instant::now();
    while index.len() < total as u64 && start.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        index.refresh().unwrap();
    }
    let mut missing_from_index = 0;
    for id in &ids {
        if !index.contains(id).unwrap() {
            missing_from_index += 1;
        }
    }
    // No record without content: every version reads back whole (decrypted, digest-checked).
    let who = Identity::new("soak:staff");
    let mut unreadable = 0;
    for id in &ids {
        if store
            .get(&who, id, Some(1))
            .await
            .unwrap()
            .read_all()
            .await
            .is_err()
        {
            unreadable += 1;
        }
    }
    let errors = upload_errors.lock().unwrap().clone();
    eprintln!(
        "soak: uploaded {total}, processed {}, dead-lettered and replayed {replayed}, duplicated {duplicated}, \
         lost {lost}, index {} (missing {missing_from_index}), unreadable {unreadable}; kills {killed:?}, \
         restarts after exiting on their own {crashed:?}, upload errors during outages {}",
        counts.len(),
        index.len(),
        errors.len()
    );
    assert_eq!(duplicated, 0, "duplicated file.processed");
    assert_eq!(lost, 0, "versions without file.processed");
    assert_eq!(counts.len(), total);
    assert_eq!(missing_from_index, 0);
    assert_eq!(index.len(), total as u64, "index entries");
    assert_eq!(unreadable, 0);
    // Upload failures during outages are typed backend failures (unreachable, timed out), never
    // an integrity error, a conflict or a panic.
    for e in &errors {
        let backend = ["Unavailable", "KeyUnavailable", "Metadata", "Blob"]
            .iter()
            .any(|p| e.starts_with(p));
        assert!(backend, "upload error of an unexpected class: {e}");
    }
}
