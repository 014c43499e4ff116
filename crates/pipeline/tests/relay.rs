//! The outbox relay on the embedded store and the in-process bus: every committed version's
//! `file.uploaded` reaches the bus once per pass, in commit order per document, and decodes.

use std::sync::Arc;
use std::time::Duration;

use docstore::conformance::request;
use docstore::{DocStore, Identity};
use docstore_pipeline::bus::{EventBus, InProcessBus};
use docstore_pipeline::events::{CloudEvent, EventType};
use docstore_pipeline::relay::OutboxRelay;

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
    let mut total = 0;
    loop {
        let n = relay.run_once().await.unwrap();
        total += n;
        if n == 0 {
            break;
        }
    }
    assert_eq!(total, 6);
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
