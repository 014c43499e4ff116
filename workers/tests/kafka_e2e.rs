//! The pipeline end to end on a real Kafka broker and a real PostgreSQL: versions uploaded through
//! the store, their `file.uploaded` events relayed from the outbox, `docstore-worker` processes
//! (the `verify` stage) in one consumer group, the join recording `file.processed` once per
//! version, relayed again. Counted on the topic.
//!
//! Needs `DOCSTORE_TEST_KAFKA` and `DOCSTORE_TEST_PG_URL` (scripts/services.sh); skipped without
//! them unless `DOCSTORE_REQUIRE_SERVICES` is set.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

mod common;

use common::{Env, WorkerProc, assert_exactly_once, count_processed, env};
use docstore::{DocStore, Identity, conformance};
use docstore_bus::{Subscription, open_bus};
use docstore_pipeline::runtime::{dlq_headers, replay_dead_letters};
use sqlx::Connection;

/// A `verify` worker on the test's bus and store.
fn verify_worker(env: &Env, name: &str) -> WorkerProc {
    WorkerProc::start(
        &env.root,
        name,
        &["--stage", "verify", "--required", "verify"],
        &env.bus_url,
        &env.store_env,
    )
}

fn relay(env: &Env) -> tokio::task::JoinHandle<()> {
    common::relay(&env.store, &env.bus_url)
}

/// Uploads `docs` × `versions` small versions (interleaved across documents), counting them.
fn uploader(
    store: Arc<DocStore>,
    docs: usize,
    versions: usize,
    done: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let who = Identity::new("test:uploader");
        let mut ids: Vec<String> = Vec::new();
        for v in 0..versions {
            for d in 0..docs {
                let body = conformance::pattern(2048 + d * 7 + v, (d * 31 + v) as u64);
                let req = conformance::request(ids.get(d).map(String::as_str), "pat-e2e", "exam-e2e");
                let rec = store.put(&who, req, &body[..]).await.unwrap();
                if v == 0 {
                    ids.push(rec.document_id);
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }
        ids
    })
}

async fn processed_in_db(pg: &str) -> i64 {
    let mut c = sqlx::PgConnection::connect(pg).await.unwrap();
    sqlx::query_scalar("SELECT count(*) FROM versions WHERE state = 'processed'")
        .fetch_one(&mut c)
        .await
        .unwrap()
}

async fn wait_processed(pg: &str, n: i64, timeout: Duration) {
    let start = Instant::now();
    loop {
        let got = processed_in_db(pg).await;
        if got >= n {
            return;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out: {got} of {n} versions processed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thousand_versions_two_workers_with_a_rebalance_exactly_once() {
    let Some(env) = env().await else { return };
    let _relay = relay(&env);
    let uploaded = Arc::new(AtomicUsize::new(0));
    let a = verify_worker(&env, "worker-a");
    let up = uploader(env.store.clone(), 250, 4, uploaded.clone());
    // The second worker joins late (a rebalance), the first leaves early (another one).
    wait_processed(&env.pg, 250, Duration::from_secs(120)).await;
    let b = verify_worker(&env, "worker-b");
    wait_processed(&env.pg, 600, Duration::from_secs(120)).await;
    a.stop();
    let ids = up.await.unwrap();
    assert_eq!(uploaded.load(Ordering::Relaxed), 1000);
    wait_processed(&env.pg, 1000, Duration::from_secs(180)).await;
    let bus = open_bus(&env.bus_url).unwrap();
    let counts = count_processed(bus.as_ref(), 1000, Duration::from_secs(120)).await;
    assert_exactly_once(&counts, &ids, 4);
    b.stop();
    // Both members did work: the rebalance really moved partitions.
    for name in ["worker-a", "worker-b"] {
        let log = std::fs::read_to_string(env.root.join(format!("{name}.log"))).unwrap();
        assert!(
            log.contains("file.processed recorded"),
            "{name} processed nothing"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_sigkills_during_a_thousand_versions_exactly_once() {
    let Some(env) = env().await else { return };
    let _relay = relay(&env);
    let uploaded = Arc::new(AtomicUsize::new(0));
    let steady = verify_worker(&env, "worker-steady");
    let mut victim = Some(verify_worker(&env, "worker-victim"));
    let up = uploader(env.store.clone(), 200, 5, uploaded.clone());
    for kill in 0..10 {
        // A random point: 200–900 ms into the victim's life.
        tokio::time::sleep(Duration::from_millis(rand::random_range(200..900))).await;
        if let Some(w) = victim.take() {
            w.kill();
        }
        let done = processed_in_db(&env.pg).await;
        eprintln!(
            "kill {kill}: {} uploaded, {done} processed",
            uploaded.load(Ordering::Relaxed)
        );
        if kill == 9 {
            assert!(
                done < 1000,
                "the run ended before the last kill; the test proves nothing"
            );
        }
        victim = Some(verify_worker(&env, &format!("worker-victim-{kill}")));
    }
    let ids = up.await.unwrap();
    assert_eq!(uploaded.load(Ordering::Relaxed), 1000);
    wait_processed(&env.pg, 1000, Duration::from_secs(180)).await;
    let bus = open_bus(&env.bus_url).unwrap();
    let counts = count_processed(bus.as_ref(), 1000, Duration::from_secs(120)).await;
    assert_exactly_once(&counts, &ids, 5);
    drop(victim);
    steady.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn permanent_failure_dead_letters_then_replay_after_the_fix() {
    let Some(env) = env().await else { return };
    let who = Identity::new("test:e2e");
    let bus = open_bus(&env.bus_url).unwrap();
    // A version whose document is deleted before any worker reads it: the verify stage cannot
    // read it (permanent), so its event is dead-lettered with the error.
    let rec = env
        .store
        .put(
            &who,
            conformance::request(None, "pat-dlq", "exam-dlq"),
            &b"lab report"[..],
        )
        .await
        .unwrap();
    env.store.delete(&who, &rec.document_id).await.unwrap();
    let _relay = relay(&env);
    let w = verify_worker(&env, "worker-dlq");
    let mut dlq = bus
        .subscribe("inspect-dlq", &["file.uploaded.dlq".to_owned()])
        .await
        .unwrap();
    let letters = poll_until(dlq.as_mut(), 1, Duration::from_secs(60)).await;
    assert_eq!(letters.len(), 1);
    let header = |k: &str| {
        letters[0]
            .message
            .headers
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(header(dlq_headers::KIND), "permanent");
    assert_eq!(header(dlq_headers::ATTEMPTS), "1");
    assert!(
        header(dlq_headers::ERROR).contains("deleted"),
        "{}",
        header(dlq_headers::ERROR)
    );
    assert_eq!(processed_in_db(&env.pg).await, 0);

    // The fix (restore), then the replay: processed, announced once.
    env.store.restore(&who, &rec.document_id).await.unwrap();
    let n = replay_dead_letters(bus.as_ref(), "file.uploaded.dlq", 10, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(n, 1);
    wait_processed(&env.pg, 1, Duration::from_secs(60)).await;
    let counts = count_processed(bus.as_ref(), 1, Duration::from_secs(60)).await;
    assert_exactly_once(&counts, std::slice::from_ref(&rec.document_id), 1);

    // Observability: the endpoints answer and count what happened; logs are JSON with trace ids
    // and hold no document content.
    let log_path = env.root.join("worker-dlq.log");
    let log = std::fs::read_to_string(&log_path).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not a JSON log line: {l}")))
        .collect();
    let addr = lines
        .iter()
        .find_map(|l| l["fields"]["metrics"].as_str())
        .expect("the worker logs its metrics address")
        .to_owned();
    let (status, metrics) = http_get(&addr, "/metrics");
    assert_eq!(status, 200);
    for want in [
        "docstore_worker_processed_total{stage=\"verify\"} 1",
        "docstore_worker_dead_lettered_total{stage=\"verify\"} 1",
        "docstore_worker_stage_latency_seconds_bucket{",
        "docstore_worker_consumer_lag{stage=\"verify\"}",
    ] {
        assert!(metrics.contains(want), "metrics lack {want}:\n{metrics}");
    }
    assert_eq!(http_get(&addr, "/healthz").0, 200);
    assert_eq!(http_get(&addr, "/readyz").0, 200);
    assert!(
        lines
            .iter()
            .any(|l| l["span"]["trace_id"].as_str().is_some_and(|t| t.len() == 32)),
        "no log line carries a trace id"
    );
    assert!(!log.contains("lab report"), "document content in the logs");
    // One WARN per dead letter, with its ids and error class (issue: failures were invisible).
    let dead: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "dead-lettered")
        .collect();
    assert_eq!(dead.len(), 1, "one dead-letter log line");
    let f = &dead[0]["fields"];
    assert_eq!(dead[0]["level"], "WARN");
    assert_eq!(f["document"], rec.document_id.as_str());
    assert_eq!((f["version"].as_u64(), &f["stage"]), (Some(1), &"verify".into()));
    assert_eq!(
        (&f["error_class"], f["attempts"].as_u64()),
        (&"permanent".into(), Some(1))
    );
    assert_eq!(f["trace_id"].as_str().map(str::len), Some(32));
    w.stop();

    // An independent consumer: the CloudEvents Python SDK, automatic mode detection, reads the
    // upload (and its replay), the dead letter and file.processed off the broker.
    cloudevents_sdk_reads(
        &env,
        &[
            ("file.uploaded", 2),
            ("file.uploaded.dlq", 1),
            ("file.processed", 1),
        ],
        &rec.document_id,
    );
}

/// Runs scripts/interop/cloudevents_read.py (the venv of scripts/services.sh) on the test's topics.
fn cloudevents_sdk_reads(env: &Env, topics: &[(&str, usize)], document: &str) {
    let Some(python) = common::service("DOCSTORE_TEST_PYTHON") else {
        return;
    };
    let kafka = std::env::var("DOCSTORE_TEST_KAFKA").unwrap();
    let prefix = env
        .bus_url
        .split("prefix=")
        .nth(1)
        .and_then(|p| p.split('&').next())
        .unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/interop/cloudevents_read.py"
    );
    let mut cmd = std::process::Command::new(python);
    cmd.arg(script).arg(&kafka);
    for (t, n) in topics {
        cmd.arg(format!("{prefix}{t}")).arg(n.to_string());
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the CloudEvents SDK could not read our events: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for (t, n) in topics {
        let on_topic: Vec<_> = events
            .iter()
            .filter(|e| e["topic"] == format!("{prefix}{t}"))
            .collect();
        assert_eq!(on_topic.len(), *n, "{t}: {events:?}");
        let ty = t.trim_end_matches(".dlq");
        for e in on_topic {
            assert_eq!(e["type"], ty, "{e}");
            assert_eq!(e["subject"], document, "{e}");
            assert_eq!(e["content_type"], docstore_events::STRUCTURED_CONTENT_TYPE);
        }
    }
}

/// A GET over plain HTTP/1.0 on loopback: (status, body).
fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

async fn poll_until(sub: &mut dyn Subscription, n: usize, timeout: Duration) -> Vec<docstore_bus::Delivery> {
    let start = Instant::now();
    let mut out = Vec::new();
    while out.len() < n {
        assert!(start.elapsed() < timeout, "timed out: {} of {n}", out.len());
        out.extend(sub.poll(10, Duration::from_millis(200)).await.unwrap());
    }
    out
}
