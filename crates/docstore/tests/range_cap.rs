//! A ranged read is decrypted into memory, so it is capped: a range over `MAX_RANGE` bytes is a
//! typed refusal (read it as a stream with `get`), audited like any read.

use docstore::conformance::request;
use docstore::{DocStore, Error, Identity, MAX_RANGE};
use tokio::io::AsyncReadExt;

#[tokio::test]
async fn a_range_over_the_cap_is_refused_and_one_under_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = DocStore::init_local(&dir.path().join("data")).await.unwrap();
    let who = Identity::new("staff:range");
    let size = MAX_RANGE + 4096;
    let body = tokio::io::repeat(7).take(size);
    let v = store
        .put(&who, request(None, "pat-range", "exam-range"), body)
        .await
        .unwrap();
    match store
        .get_range(&who, &v.document_id, None, 0..MAX_RANGE + 1)
        .await
    {
        Err(Error::InvalidInput(why)) => assert!(why.contains("cap"), "{why}"),
        other => panic!("{:?}", other.map(|b| b.len())),
    }
    let tail = store
        .get_range(&who, &v.document_id, None, size - 10..size)
        .await
        .unwrap();
    assert_eq!(&tail[..], &[7u8; 10]);
    // Exactly the cap is still one ranged read, from anywhere in the document.
    let whole = store
        .get_range(&who, &v.document_id, None, 4096..4096 + MAX_RANGE)
        .await
        .unwrap();
    assert_eq!(whole.len() as u64, MAX_RANGE);
    let audit = store.audit_log(&who, Some(&v.document_id), 10).await.unwrap();
    assert!(audit.iter().any(|r| r.action == "get_range" && r.outcome != "ok"));
}
