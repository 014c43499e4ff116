//! Helpers shared by the end-to-end tests: worker processes, the in-process relay, and counting
//! `file.processed` on the topic.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use docstore::DocStore;
use docstore::aws::AwsSettings;
use docstore::config::StoreConfig;
use docstore_bus::{EventBus, open_bus};
use docstore_pipeline::relay::OutboxRelay;

pub(crate) struct WorkerProc {
    pub(crate) child: Child,
    log: std::path::PathBuf,
}

impl WorkerProc {
    /// Starts `docstore-worker` with `args` (plus `--bus` and a free metrics port), the store
    /// configured by `store_env`, logging to `<root>/<name>.log`.
    pub(crate) fn start(
        root: &Path,
        name: &str,
        args: &[&str],
        bus_url: &str,
        store_env: &[(String, String)],
    ) -> WorkerProc {
        let mut c = Command::new(env!("CARGO_BIN_EXE_docstore-worker"));
        c.args(args).args(["--metrics-addr", "127.0.0.1:0"]);
        WorkerProc::spawn(root, name, c, bus_url, store_env)
    }

    /// Starts `command` with `--bus`, the store's environment and INFO logs appended to
    /// `<root>/<name>.log`.
    pub(crate) fn spawn(
        root: &Path,
        name: &str,
        mut command: Command,
        bus_url: &str,
        store_env: &[(String, String)],
    ) -> WorkerProc {
        let log_path = root.join(format!("{name}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        let child = command
            .arg("--bus")
            .arg(bus_url)
            .envs(store_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        WorkerProc { child, log: log_path }
    }

    pub(crate) fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait (bounded) for a clean exit.
    pub(crate) fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                if !status.success() {
                    // The log's tail says why; without it a CI failure is a bare exit code.
                    let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(40).collect();
                    let tail: Vec<&str> = tail.into_iter().rev().collect();
                    panic!("worker exited with {status}; its log ends:\n{}", tail.join("\n"));
                }
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "worker ignored SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A store on S3 + KMS (moto at `endpoint`, a fresh key alias and blob prefix) with `metadata`
/// (a URL), its audit log under `root`: the environment for worker processes, and the store.
pub(crate) async fn aws_store(
    endpoint: &str,
    metadata: String,
    root: &Path,
) -> (Vec<(String, String)>, Arc<DocStore>, AwsSettings) {
    let settings = AwsSettings::local(endpoint);
    let alias = docstore::conformance::fresh_kms_alias(&settings, "test").await;
    let bucket = std::env::var("DOCSTORE_TEST_S3_BUCKET").unwrap_or_else(|_| "docstore-test".into());
    let config = StoreConfig {
        blobs: format!("s3://{bucket}/{}", uuid::Uuid::new_v4().simple()),
        metadata,
        keys: format!("kms://{alias}"),
        audit: format!("file://{}", root.join("audit.jsonl").display()),
    };
    let env = docstore::conformance::process_env(&settings, &config);
    let store = Arc::new(config.open_with(true, &settings).await.unwrap());
    (env, store, settings)
}

pub(crate) use docstore_testkit::service;

/// A test's own store on PostgreSQL and its own topics on Kafka (see [`env`]).
pub(crate) struct Env {
    pub(crate) _dir: tempfile::TempDir,
    pub(crate) root: PathBuf,
    pub(crate) bus_url: String,
    pub(crate) store_env: Vec<(String, String)>,
    pub(crate) store: Arc<DocStore>,
    pub(crate) pg: String,
}

pub(crate) fn services() -> Option<(String, String)> {
    Some((service("DOCSTORE_TEST_KAFKA")?, service("DOCSTORE_TEST_PG_URL")?))
}

/// A store of its own (fresh PostgreSQL database, blob folder, keyring, audit log) and topics of
/// its own (a fresh prefix) on the shared servers.
pub(crate) async fn env() -> Option<Env> {
    let (kafka, pg_url) = services()?;
    let pg = docstore::conformance::fresh_pg_database(&pg_url, "e2e").await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let store_env = vec![
        (
            "DOCSTORE_BLOBS".to_owned(),
            format!("file://{}", root.join("objects").display()),
        ),
        ("DOCSTORE_METADATA".to_owned(), pg.clone()),
        (
            "DOCSTORE_KEYS".to_owned(),
            format!("keyring://{}", root.join("keyring.json").display()),
        ),
        (
            "DOCSTORE_AUDIT".to_owned(),
            format!("file://{}", root.join("audit.jsonl").display()),
        ),
    ];
    let config = StoreConfig {
        blobs: store_env[0].1.clone(),
        metadata: store_env[1].1.clone(),
        keys: store_env[2].1.clone(),
        audit: store_env[3].1.clone(),
    };
    std::fs::create_dir_all(root.join("objects")).unwrap();
    let store = Arc::new(config.open(true).await.unwrap());
    let prefix = format!("e2e{}.", uuid::Uuid::new_v4().simple());
    Some(Env {
        _dir: dir,
        root,
        bus_url: format!("kafka://{kafka}?prefix={prefix}&partitions=6&session_timeout_ms=3000"),
        store_env,
        store,
        pg,
    })
}

/// Runs the outbox relay in this process until dropped.
pub(crate) fn relay(store: &Arc<DocStore>, bus_url: &str) -> tokio::task::JoinHandle<()> {
    let bus = open_bus(bus_url).unwrap();
    let relay = OutboxRelay::new(store.metadata().clone(), bus, 200);
    tokio::spawn(async move { relay.run(Duration::from_millis(50), std::future::pending()).await })
}

/// Reads every `file.processed` on the topic (as a group of its own) until `expect` distinct
/// versions were seen and nothing more arrives for a while; returns (document, version) → count.
pub(crate) async fn count_processed(
    bus: &dyn EventBus,
    expect: usize,
    timeout: Duration,
) -> HashMap<(String, u64), usize> {
    let mut counts: HashMap<(String, u64), usize> = HashMap::new();
    for ev in processed_events(bus, expect, timeout).await {
        let key = (
            ev["data"]["document_id"].as_str().unwrap().to_owned(),
            ev["data"]["version"].as_u64().unwrap(),
        );
        *counts.entry(key).or_default() += 1;
    }
    counts
}

/// Every `file.processed` event on the topic, as read off the wire (the CloudEvents JSON), once
/// `expect` distinct versions were seen and nothing more arrived for a while.
#[allow(dead_code)] // not every test binary that shares this module reads payloads
pub(crate) async fn processed_events(
    bus: &dyn EventBus,
    expect: usize,
    timeout: Duration,
) -> Vec<serde_json::Value> {
    let group = format!("count-{}", uuid::Uuid::new_v4().simple());
    let mut sub = bus
        .subscribe(&group, &["file.processed".to_owned()])
        .await
        .unwrap();
    let mut events = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let start = Instant::now();
    let mut quiet_since = Instant::now();
    loop {
        let batch = sub.poll(500, Duration::from_millis(200)).await.unwrap();
        if batch.is_empty() {
            if seen.len() >= expect && quiet_since.elapsed() > Duration::from_secs(5) {
                break;
            }
        } else {
            quiet_since = Instant::now();
        }
        for d in batch {
            let ev: serde_json::Value = serde_json::from_slice(&d.message.payload).unwrap();
            assert_eq!(ev["type"], "file.processed");
            seen.insert((
                ev["data"]["document_id"].as_str().unwrap().to_owned(),
                ev["data"]["version"].as_u64().unwrap(),
            ));
            events.push(ev);
            sub.ack(&d).await.unwrap();
        }
        assert!(
            start.elapsed() < timeout,
            "timed out reading file.processed: {} of {expect}",
            seen.len()
        );
    }
    events
}

pub(crate) fn assert_exactly_once(counts: &HashMap<(String, u64), usize>, ids: &[String], versions: u64) {
    let dups: Vec<_> = counts.iter().filter(|(_, n)| **n != 1).collect();
    assert!(dups.is_empty(), "duplicated file.processed: {dups:?}");
    for id in ids {
        for v in 1..=versions {
            assert!(counts.contains_key(&(id.clone(), v)), "{id} v{v} never processed");
        }
    }
    assert_eq!(
        counts.len(),
        ids.len() * versions as usize,
        "unexpected extra versions"
    );
}
