//! Every streamed read's end is in the audit log: `ok` after the digest matched, `integrity`
//! when a frame fails mid-stream (the opening was `ok` and is no proof the bytes were good), and
//! `abandoned` when the reader stops early; each with the bytes handed out.

use std::time::{Duration, Instant};

use docstore::audit::AuditRecord;
use docstore::envelope::Header;
use docstore::{DocStore, Identity};
use futures::StreamExt;

const FS: u32 = 1024;
const LEN: usize = 4 * FS as usize + 100;

async fn ends(store: &DocStore, who: &Identity, doc: &str, want: usize) -> Vec<AuditRecord> {
    let start = Instant::now();
    loop {
        let trail: Vec<AuditRecord> = store
            .audit_log(who, Some(doc), 1000)
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.action == "get_end")
            .collect();
        if trail.len() >= want || start.elapsed() > Duration::from_secs(10) {
            return trail;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_read_end_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let store = DocStore::init_local(&root)
        .await
        .unwrap()
        .with_frame_size(FS)
        .unwrap();
    let who = Identity::new("staff:reader");
    let plain = docstore::conformance::pattern(LEN, 5);
    let v = store
        .put(
            &who,
            docstore::conformance::request(None, "p-1", "e-1"),
            &plain[..],
        )
        .await
        .unwrap();
    let doc = v.document_id.clone();

    // A whole read.
    let got = store
        .get(&who, &doc, None)
        .await
        .unwrap()
        .read_all()
        .await
        .unwrap();
    assert_eq!(got.len(), LEN);
    let trail = ends(&store, &who, &doc, 1).await;
    assert_eq!(trail.len(), 1, "{trail:?}");
    assert_eq!(trail[0].outcome, "ok");
    assert_eq!(trail[0].detail.as_deref(), Some(format!("bytes={LEN}").as_str()));
    assert_eq!(trail[0].actor, "staff:reader");

    // A reader that stops after the first frame.
    let mut stream = store.get(&who, &doc, None).await.unwrap().into_stream();
    let first = stream.next().await.unwrap().unwrap();
    drop(stream);
    let trail = ends(&store, &who, &doc, 2).await;
    assert_eq!(trail.len(), 2, "{trail:?}");
    assert_eq!(trail[1].outcome, "abandoned");
    assert_eq!(trail[1].detail, Some(format!("bytes={}", first.len())));

    // A frame changed on disk: the opening succeeds, the stream fails at that frame.
    let path = root.join("objects").join(&v.blob_key);
    let mut blob = std::fs::read(&path).unwrap();
    let header_len = Header::parse(&blob).unwrap().1;
    let third_frame = header_len + 2 * (FS as usize + docstore::envelope::TAG_LEN) + 10;
    blob[third_frame] ^= 1;
    std::fs::write(&path, &blob).unwrap();
    let opened = store.get(&who, &doc, None).await.unwrap();
    assert!(opened.read_all().await.is_err());
    let trail = ends(&store, &who, &doc, 3).await;
    assert_eq!(trail.len(), 3, "{trail:?}");
    assert_eq!(trail[2].outcome, "integrity");
    assert_eq!(trail[2].detail, Some(format!("bytes={}", 2 * FS)));
}
