//! The outbox relay on the embedded store, on the in-process bus and on a real Kafka broker: every
//! committed version's `file.uploaded` reaches the bus exactly once, in commit order per document,
//! across a crash between publishing and marking sent, and with two relays running at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use docstore::conformance::request;
use docstore::{DocStore, Identity};
use docstore_bus::kafka::{KafkaBus, KafkaConfig};
use docstore_bus::{EventBus, InProcessBus, Message};
use docstore_events::{CloudEvent, EventType};
use docstore_pipeline::relay::{DEFAULT_RELAY, OutboxRelay};

#[tokio::test]
async fn relays_every_committed_version_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = DocStore::init_local(&dir.path().join("data")).await.unwrap();
    let who = Identity::new("staff:relay");
    let mut docs = Vec::new();
    for d in 0..3 {
        let v1 = store
            .put(&who, request(None, "p", "e"), &b"v1"[..])
            .await
            .unwrap();
        for _ in 0..d {
            store
                .put(&who, request(Some(&v1.document_id), "p", "e"), &b"vn"[..])
                .await
                .unwrap();
        }
        docs.push((v1.document_id, d + 1));
    }
    let bus = Arc::new(InProcessBus::new(4));
    let relay = OutboxRelay::new(store.metadata().clone(), bus.clone(), 2);
    let mut passes = Vec::new();
    for _ in 0..10 {
        let n = relay.run_once().await.unwrap();
        passes.push(n);
        if n == 0 {
            break;
        }
    }
    assert_eq!(passes, [2, 2, 2, 0], "batches of 2, then an empty pass");
    assert_eq!(
        relay.run_once().await.unwrap(),
        0,
        "nothing left after marking sent"
    );
    let mut sub = bus.subscribe("test", &["file.uploaded".into()]).await.unwrap();
    let got = sub.poll(100, Duration::from_millis(50)).await.unwrap();
    assert_eq!(got.len(), 6);
    for (doc, versions) in docs {
        let seq: Vec<u64> = got
            .iter()
            .filter(|d| d.message.key == doc)
            .map(|d| {
                let ev = CloudEvent::decode(&d.message.payload).unwrap();
                assert_eq!(ev.event_type, EventType::FileUploaded);
                assert_eq!(ev.subject.as_deref(), Some(doc.as_str()));
                ev.file_uploaded().unwrap().version
            })
            .collect();
        assert_eq!(
            seq,
            (1..=versions as u64).collect::<Vec<_>>(),
            "per-document order"
        );
    }
}

/// `run` goes on at once after a full batch (a short one waits `idle`, here longer than the
/// test), and returns when told to stop.
#[tokio::test]
async fn run_drains_in_full_batches_and_stops_when_told() {
    let dir = tempfile::tempdir().unwrap();
    let store = DocStore::init_local(&dir.path().join("data")).await.unwrap();
    let ids = upload(&store, 5).await;
    let bus = Arc::new(InProcessBus::new(4));
    let relay = OutboxRelay::new(store.metadata().clone(), bus.clone(), 2);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(async move {
        relay
            .run(Duration::from_secs(600), async {
                let _ = stopped.await;
            })
            .await
    });
    let mut sub = bus.subscribe("test", &["file.uploaded".into()]).await.unwrap();
    let mut seen = Vec::new();
    let start = std::time::Instant::now();
    while seen.len() < ids.len() && start.elapsed() < Duration::from_secs(8) {
        for d in sub.poll(100, Duration::from_millis(100)).await.unwrap() {
            seen.push(d.message.key.clone());
        }
    }
    seen.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(
        seen, want,
        "all five published without waiting `idle` between batches"
    );
    // Marked sent just after the publish that made them visible: wait for it, bounded.
    let marking = std::time::Instant::now();
    while !store.metadata().outbox_pending(10).await.unwrap().is_empty() {
        assert!(
            marking.elapsed() < Duration::from_secs(8),
            "published but never marked sent"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("run stops when told")
        .unwrap();
}

/// Two buses on the same topics (on Kafka: two clients, as two processes would have), or `None`.
fn buses(kind: &str) -> Option<(Arc<dyn EventBus>, Arc<dyn EventBus>)> {
    if kind == "memory" {
        let bus: Arc<dyn EventBus> = Arc::new(InProcessBus::new(4));
        return Some((bus.clone(), bus));
    }
    let brokers = docstore_testkit::service("DOCSTORE_TEST_KAFKA")?;
    let prefix = format!("r{}.", uuid::Uuid::new_v4().simple());
    let make = || -> Arc<dyn EventBus> {
        let mut c = KafkaConfig::new(brokers.clone());
        c.topic_prefix = prefix.clone();
        c.partitions = 4;
        Arc::new(KafkaBus::new(c).unwrap())
    };
    Some((make(), make()))
}

async fn upload(store: &DocStore, n: usize) -> Vec<String> {
    let who = Identity::new("staff:relay");
    let mut ids = Vec::new();
    for i in 0..n {
        let r = store
            .put(&who, request(None, "p", "e"), format!("body {i}").as_bytes())
            .await
            .unwrap();
        ids.push(r.document_id);
    }
    ids
}

/// Every `file.uploaded` on the topic, by document id (read as a group of its own).
async fn uploaded_counts(bus: &dyn EventBus, expect: usize) -> HashMap<String, usize> {
    let group = format!("count-{}", uuid::Uuid::new_v4().simple());
    let mut sub = bus.subscribe(&group, &["file.uploaded".into()]).await.unwrap();
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut idle = 0;
    let start = std::time::Instant::now();
    while counts.values().sum::<usize>() < expect || idle < 10 {
        assert!(start.elapsed() < Duration::from_secs(90), "timed out counting");
        let got = sub.poll(500, Duration::from_millis(200)).await.unwrap();
        idle = if got.is_empty() { idle + 1 } else { 0 };
        for d in got {
            *counts.entry(d.message.key.clone()).or_default() += 1;
        }
    }
    counts
}

async fn crash_after_publish_before_mark(kind: &str) {
    let Some((bus, _)) = buses(kind) else { return };
    let dir = tempfile::tempdir().unwrap();
    let store = DocStore::init_local(&dir.path().join("data")).await.unwrap();
    let ids = upload(&store, 7).await;
    // What a relay does up to the crash: its session publishes the pending entries with their
    // checkpoint — and the process dies before marking them sent.
    let session = bus.begin_session(DEFAULT_RELAY).await.unwrap();
    let pending = store.metadata().outbox_pending(100).await.unwrap();
    assert_eq!(pending.len(), 7);
    let event_ids: Vec<String> = pending.iter().map(|e| e.event_id.clone()).collect();
    let messages = pending
        .iter()
        .map(|e| Message {
            topic: e.event_type.clone(),
            key: e.key.clone(),
            payload: e.payload.clone().into_bytes(),
            headers: vec![],
        })
        .collect();
    bus.publish_atomic(&session, messages, serde_json::to_vec(&event_ids).unwrap())
        .await
        .unwrap();
    assert_eq!(store.metadata().outbox_pending(100).await.unwrap().len(), 7);
    // The restarted relay reconciles from the checkpoint instead of publishing again.
    let relay = OutboxRelay::new(store.metadata().clone(), bus.clone(), 100);
    assert_eq!(relay.run_once().await.unwrap(), 0, "republished after the crash");
    assert!(store.metadata().outbox_pending(100).await.unwrap().is_empty());
    // And later entries still flow.
    let more = upload(&store, 3).await;
    assert_eq!(relay.run_once().await.unwrap(), 3);
    let counts = uploaded_counts(bus.as_ref(), 10).await;
    for id in ids.iter().chain(&more) {
        assert_eq!(counts.get(id), Some(&1), "{id}");
    }
    // The fenced session can no longer publish.
    assert!(
        bus.publish_atomic(&session, vec![], b"[]".to_vec())
            .await
            .is_err()
    );
}

async fn two_relays_at_once(kind: &str) {
    let Some((bus_a, bus_b)) = buses(kind) else { return };
    let dir = tempfile::tempdir().unwrap();
    let store = DocStore::init_local(&dir.path().join("data")).await.unwrap();
    let ids = upload(&store, 150).await;
    let run = |bus: Arc<dyn EventBus>| {
        let relay = OutboxRelay::new(store.metadata().clone(), bus, 7);
        async move {
            // Each keeps going until the outbox is empty; fenced passes fail and start over.
            for _ in 0..500 {
                match relay.run_once().await {
                    Ok(0) => return,
                    Ok(_) => {}
                    // Fenced by the other relay (or its transaction aborted): stand by a little,
                    // as `OutboxRelay::run` does, instead of fencing it right back.
                    Err(_) => tokio::time::sleep(Duration::from_millis(rand::random_range(200..1200))).await,
                }
            }
            panic!("relay never drained the outbox");
        }
    };
    futures::future::join(run(bus_a.clone()), run(bus_b)).await;
    assert!(store.metadata().outbox_pending(1000).await.unwrap().is_empty());
    let counts = uploaded_counts(bus_a.as_ref(), 150).await;
    assert_eq!(counts.len(), 150);
    for id in &ids {
        assert_eq!(
            counts.get(id),
            Some(&1),
            "{id} published {:?} times",
            counts.get(id)
        );
    }
}

#[tokio::test]
async fn crash_after_publish_before_mark_in_process() {
    crash_after_publish_before_mark("memory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_publish_before_mark_kafka() {
    crash_after_publish_before_mark("kafka").await;
}

#[tokio::test]
async fn two_relays_at_once_in_process() {
    two_relays_at_once("memory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_at_once_kafka() {
    two_relays_at_once("kafka").await;
}

/// A relay killed mid-transaction leaves an aborted checkpoint record and its marker at the end of
/// the checkpoint topic. After many such kills in a row the next session still finds the last
/// committed checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_found_behind_aborted_transactions_kafka() {
    use rdkafka::config::ClientConfig;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let Some(brokers) = docstore_testkit::service("DOCSTORE_TEST_KAFKA") else {
        return;
    };
    let prefix = format!("a{}.", uuid::Uuid::new_v4().simple());
    let mut c = KafkaConfig::new(brokers.clone());
    c.topic_prefix = prefix.clone();
    c.partitions = 1;
    let bus = KafkaBus::new(c).unwrap();
    let session = bus.begin_session("aborts").await.unwrap();
    assert!(session.checkpoint.is_none());
    bus.publish_atomic(&session, vec![], b"[\"committed\"]".to_vec())
        .await
        .unwrap();
    // What a relay killed after writing its checkpoint, before committing, leaves behind; the
    // next producer's init aborts it. 40 in a row: past every read window but the whole topic.
    let (txn_id, topic) = (
        format!("{prefix}aborts"),
        format!("{prefix}docstore.relay.aborts"),
    );
    tokio::task::spawn_blocking(move || {
        for i in 0..40 {
            let p: BaseProducer = ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .set("transactional.id", &txn_id)
                .create()
                .unwrap();
            p.init_transactions(Duration::from_secs(30)).unwrap();
            p.begin_transaction().unwrap();
            p.send(
                BaseRecord::to(&topic)
                    .key("aborts")
                    .payload(&format!("[\"aborted {i}\"]")),
            )
            .map_err(|(e, _)| e)
            .unwrap();
            p.flush(Duration::from_secs(30)).unwrap();
            // Dropped with its transaction open, as a SIGKILL would leave it.
        }
    })
    .await
    .unwrap();
    let start = std::time::Instant::now();
    let session = bus.begin_session("aborts").await.unwrap();
    eprintln!("session opened in {:?}", start.elapsed());
    assert_eq!(session.checkpoint.as_deref(), Some(&b"[\"committed\"]"[..]));
}
