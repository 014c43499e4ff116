//! `DocStore::builder()`: every seam must be named; a built store stores and reads back.

use std::sync::Arc;

use docstore::audit::MemoryAudit;
use docstore::blob::ObjectBlobStore;
use docstore::conformance::request;
use docstore::keys::keyring::Keyring;
use docstore::meta::sqlite::SqliteMetadata;
use docstore::{DocStore, Error, Identity};

#[tokio::test]
async fn a_built_store_works_and_a_missing_seam_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = Arc::new(ObjectBlobStore::local(&dir.path().join("objects")).unwrap());
    let meta = Arc::new(SqliteMetadata::in_memory().await.unwrap());
    let keys = Arc::new(Keyring::create(&dir.path().join("keyring.json")).unwrap());
    let audit = Arc::new(MemoryAudit::default());

    let err = DocStore::builder()
        .blobs(blobs.clone())
        .metadata(meta.clone())
        .audit(audit.clone())
        .build()
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput(m) if m.contains("key provider")),
        "{err}"
    );
    let err = DocStore::builder()
        .blobs(blobs.clone())
        .metadata(meta.clone())
        .keys(keys.clone())
        .audit(audit.clone())
        .frame_size(1)
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");

    let store = DocStore::builder()
        .blobs(blobs)
        .metadata(meta)
        .keys(keys)
        .audit(audit)
        .frame_size(4096)
        .build()
        .unwrap();
    let who = Identity::new("staff:builder");
    let body = vec![7u8; 10_000];
    let v = store
        .put(&who, request(None, "pac-b", "exm-b"), &body[..])
        .await
        .unwrap();
    let back = store
        .get(&who, &v.document_id, None)
        .await
        .unwrap()
        .read_all()
        .await
        .unwrap();
    assert_eq!(back[..], body[..]);
}
