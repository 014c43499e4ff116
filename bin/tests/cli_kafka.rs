//! `docstore relay` and `docstore dlq` against a real Kafka broker (`DOCSTORE_TEST_KAFKA`): the
//! relay process SIGKILLed over and over while versions are stored still publishes every
//! `file.uploaded` exactly once; dead letters are listed, shown and replayed.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use docstore::conformance::request;
use docstore::{DocStore, Identity};
use docstore_bus::{EventBus, Message, open_bus};
use docstore_pipeline::runtime::dlq_headers;
use serde_json::Value;

struct Env {
    _dir: tempfile::TempDir,
    data: PathBuf,
    bus_url: String,
}

fn env() -> Option<Env> {
    let brokers = docstore_testkit::service("DOCSTORE_TEST_KAFKA")?;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let prefix = format!("cli{}.", uuid::Uuid::new_v4().simple());
    Some(Env {
        _dir: dir,
        data,
        bus_url: format!("kafka://{brokers}?prefix={prefix}&partitions=4"),
    })
}

impl Env {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_docstore"));
        c.args(args)
            .env("DOCSTORE_DATA_DIR", &self.data)
            .env("DOCSTORE_BUS", &self.bus_url)
            .env("DOCSTORE_ACTOR", "test:kafka")
            .env_remove("DOCSTORE_CONFIG");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn relay(&self) -> Child {
        self.command(&["relay"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }
}

/// Messages of `topic` by key, read as a group of its own until `expect` arrived and it is quiet.
async fn counts(bus: &dyn EventBus, topic: &str, expect: usize) -> HashMap<String, usize> {
    let group = format!("count-{}", uuid::Uuid::new_v4().simple());
    let mut sub = bus.subscribe(&group, &[topic.to_owned()]).await.unwrap();
    let mut out: HashMap<String, usize> = HashMap::new();
    let (start, mut idle) = (Instant::now(), 0);
    while out.values().sum::<usize>() < expect || idle < 15 {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "timed out reading {topic}"
        );
        let got = sub.poll(500, Duration::from_millis(200)).await.unwrap();
        idle = if got.is_empty() { idle + 1 } else { 0 };
        for d in got {
            *out.entry(d.message.key).or_default() += 1;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_killed_ten_times_publishes_each_event_exactly_once() {
    let Some(env) = env() else { return };
    let store = Arc::new(DocStore::init_local(&env.data).await.unwrap());
    let who = Identity::new("test:kafka");
    let uploaded = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let uploader = {
        let (store, uploaded, stop) = (store.clone(), uploaded.clone(), stop.clone());
        tokio::spawn(async move {
            let mut ids = Vec::new();
            // A steady flow until the last kill (bounded), so every relay life has work.
            for i in 0..5_000 {
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
                let r = store
                    .put(
                        &who,
                        request(None, "p-relay", "e-relay"),
                        format!("report {i}").as_bytes(),
                    )
                    .await
                    .unwrap();
                ids.push(r.document_id);
                uploaded.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            ids
        })
    };
    let mut relay = env.relay();
    let published = || async {
        // Count the stored first: an entry stored after that read but counted pending only
        // lowers the figure, so it never shows progress that did not happen.
        let stored = uploaded.load(std::sync::atomic::Ordering::SeqCst);
        let pending = store.metadata().outbox_pending(100_000).await.unwrap().len();
        stored.saturating_sub(pending)
    };
    for _ in 0..10 {
        // Each life is killed once it is seen publishing, at a random moment of its work: so
        // the kills land mid-batch, however long a start takes on a loaded machine.
        let before = published().await;
        let born = Instant::now();
        while published().await <= before {
            assert!(
                born.elapsed() < Duration::from_secs(60),
                "a relay published nothing for 60 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(rand::random_range(0..400))).await;
        relay.kill().unwrap();
        relay.wait().unwrap();
        eprintln!(
            "killed the relay {:?} after its start: {before} published before its life, {} after",
            born.elapsed(),
            published().await
        );
        relay = env.relay();
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let ids = uploader.await.unwrap();
    // The last relay drains what is left; then the outbox is empty.
    let start = Instant::now();
    while !store.metadata().outbox_pending(10).await.unwrap().is_empty() {
        assert!(start.elapsed() < Duration::from_secs(120), "outbox not drained");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    relay.kill().unwrap();
    relay.wait().unwrap();
    let bus = open_bus(&env.bus_url).unwrap();
    let got = counts(bus.as_ref(), "file.uploaded", ids.len()).await;
    let dups: Vec<_> = got.iter().filter(|(_, n)| **n != 1).collect();
    assert!(dups.is_empty(), "duplicates: {dups:?}");
    assert_eq!(got.len(), ids.len(), "lost events");
    // `relay --once` finds nothing left.
    assert_eq!(env.json(&["relay", "--once"])["published"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_list_show_replay() {
    let Some(env) = env() else { return };
    let bus = open_bus(&env.bus_url).unwrap();
    for (key, error) in [("doc-a", "not a PDF"), ("doc-b", "encrypted PDF")] {
        bus.publish(Message {
            topic: "file.uploaded.dlq".into(),
            key: key.into(),
            payload: format!(r#"{{"specversion":"1.0","id":"{key}","source":"s","type":"file.uploaded"}}"#)
                .into_bytes(),
            headers: vec![
                (
                    "traceparent".into(),
                    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
                ),
                (dlq_headers::ERROR.into(), format!("permanent: {error}")),
                (dlq_headers::KIND.into(), "permanent".into()),
                (dlq_headers::ATTEMPTS.into(), "1".into()),
                (dlq_headers::STAGE.into(), "stamp".into()),
                (dlq_headers::ORIGINAL_TOPIC.into(), "file.uploaded".into()),
            ],
        })
        .await
        .unwrap();
    }
    let list = env.json(&["dlq", "list"]);
    let rows = list.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    let a = rows.iter().find(|r| r["key"] == "doc-a").unwrap();
    assert_eq!(a["error"], "permanent: not a PDF");
    assert_eq!(a["stage"], "stamp");
    let human = env.run(&["dlq", "list"]);
    assert!(String::from_utf8_lossy(&human.stdout).contains("2 dead letters"));

    let shown = env.json(&["dlq", "show", a["id"].as_str().unwrap()]);
    assert_eq!(shown["event"]["id"], "doc-a");
    assert_eq!(shown["headers"]["traceparent"].as_str().unwrap().len(), 55);
    let missing = env.run(&["dlq", "show", "9:999"]);
    assert_eq!(missing.status.code(), Some(7), "unknown dead letter is bad input");

    // Listing consumed nothing: a replay still finds both, and sends them back once.
    assert_eq!(env.json(&["dlq", "replay"])["replayed"], 2);
    assert_eq!(env.json(&["dlq", "replay"])["replayed"], 0, "replayed twice");
    let back = counts(bus.as_ref(), "file.uploaded", 2).await;
    assert_eq!(back.get("doc-a"), Some(&1));
    assert_eq!(back.get("doc-b"), Some(&1));

    let bad = env
        .command(&["dlq", "list", "--bus", "nats://x"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(7));
}
