//! `DocStore::open` reads from records the caller already holds: it streams the version those
//! records name, audited as `get`, and refuses a deleted document or a version record of another
//! document (the records are the caller's, so they are checked against each other).

use docstore::conformance::{pattern, request};
use docstore::{DocStore, Error, Identity};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_streams_the_named_version_and_refuses_mismatched_or_deleted_records() {
    let dir = tempfile::tempdir().unwrap();
    let store = DocStore::init_local(&dir.path().join("data")).await.unwrap();
    let who = Identity::new("staff:reader");
    let (one, two) = (pattern(70_000, 1), pattern(90_000, 2));
    let v1 = store
        .put(&who, request(None, "p-1", "e-1"), &one[..])
        .await
        .unwrap();
    let id = v1.document_id.clone();
    store
        .put(&who, request(Some(&id), "p-1", "e-1"), &two[..])
        .await
        .unwrap();
    let other = store
        .put(
            &who,
            request(None, "p-2", "e-2"),
            &b"another patient's report"[..],
        )
        .await
        .unwrap();

    // The older version, not the latest, when its record is given.
    let doc = store.document(&who, &id).await.unwrap();
    assert_eq!(doc.latest_version, 2);
    let first = store.version(&who, &id, 1).await.unwrap();
    let got = store
        .open(&who, &doc, first)
        .await
        .unwrap()
        .read_all()
        .await
        .unwrap();
    assert_eq!(&got[..], &one[..]);

    // Another document's version under this document's record: refused, nothing streamed.
    let foreign = store.version(&who, &other.document_id, 1).await.unwrap();
    match store.open(&who, &doc, foreign).await {
        Err(Error::InvalidInput(msg)) => assert!(msg.contains(&other.document_id), "{msg}"),
        Err(e) => panic!("wrong error {e:?}"),
        Ok(_) => panic!("a foreign version record was opened"),
    }

    // A document record that says deleted is refused, whatever version record comes with it.
    let latest = store.version(&who, &id, 2).await.unwrap();
    store.delete(&who, &id).await.unwrap();
    let deleted = store.document(&who, &id).await.unwrap();
    assert!(matches!(
        store.open(&who, &deleted, latest).await,
        Err(Error::Deleted { .. })
    ));

    // Each attempt is audited as `get`: one allowed, two refused.
    let gets: Vec<_> = store
        .audit_log(&who, Some(&id), 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.action == "get")
        .map(|r| r.outcome)
        .collect();
    assert_eq!(gets, ["ok", "invalid_input", "deleted"], "{gets:?}");
}
