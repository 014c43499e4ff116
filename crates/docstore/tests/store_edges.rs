//! The store's edges, each pinned at the value where behaviour changes: which data directories
//! count as initialised, how the audit names the version of a failed read, the media type's
//! bounds, a blob that streams more than it said, releases read back, and a rewrap resumed
//! after a cursor. Each test here was written against a mutant that the rest of the suite let
//! through (docs/mutants.md).

mod common;

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use docstore::blob::{BlobMeta, BlobRead, BlobStore, BlobUpload, ObjectBlobStore};
use docstore::conformance::{pattern, request};
use docstore::keys::keyring::Keyring;
use docstore::{DocStore, Error, ExamRelease, Identity, IntegrityError, LocalLayout, Timestamp};
use futures::StreamExt;

fn who() -> Identity {
    Identity::new("staff:edges")
}

#[tokio::test]
async fn a_data_directory_is_initialised_by_either_of_its_files_and_opened_only_with_both() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let layout = LocalLayout::new(&root);
    drop(DocStore::init_local(&root).await.unwrap());
    let opened = DocStore::open_local(&root).await.unwrap();
    let v = opened
        .put(&who(), request(None, "pat-edge", "exam-edge"), &b"kept"[..])
        .await
        .unwrap();
    drop(opened);

    let (keyring, metadata) = (layout.keyring(), layout.metadata());
    let aside = dir.path().join("aside");
    for (gone, other) in [(&keyring, &metadata), (&metadata, &keyring)] {
        std::fs::rename(gone, &aside).unwrap();
        assert!(other.exists());
        match DocStore::init_local(&root).await {
            Err(Error::InvalidInput(why)) => assert!(why.contains("already initialised"), "{why}"),
            other => panic!("init over {} : {:?}", other.is_ok(), other.err()),
        }
        match DocStore::open_local(&root).await {
            Err(Error::NotInitialized { path }) => assert_eq!(path, root),
            other => panic!("open without {}: {:?}", gone.display(), other.err()),
        }
        std::fs::rename(&aside, gone).unwrap();
    }
    // Nothing was lost by the refusals.
    let store = DocStore::open_local(&root).await.unwrap();
    let body = store.get(&who(), &v.document_id, None).await.unwrap();
    assert_eq!(&body.read_all().await.unwrap()[..], b"kept");
}

#[tokio::test]
async fn a_document_being_read_prints_its_record_and_no_content() {
    let (_dir, store) = common::local_store().await;
    let v = store
        .put(&who(), request(None, "pat-dbg", "exam-dbg"), &b"secret words"[..])
        .await
        .unwrap();
    let doc = store.get(&who(), &v.document_id, None).await.unwrap();
    let printed = format!("{doc:?}");
    assert!(
        printed.starts_with("Document { record: VersionRecord {"),
        "{printed}"
    );
    assert!(
        printed.contains(v.document_id.as_str()) && printed.ends_with(", .. }"),
        "{printed}"
    );
    assert!(!printed.contains("secret"), "{printed}");
}

#[tokio::test]
async fn a_failed_read_is_audited_with_the_version_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let store = DocStore::init_local(&root).await.unwrap();
    let v = store
        .put(
            &who(),
            request(None, "pat-aud", "exam-aud"),
            &pattern(5000, 1)[..],
        )
        .await
        .unwrap();
    let last = |store: DocStore, doc: String| async move {
        let trail = store.audit_log(&who(), Some(&doc), 100).await.unwrap();
        trail.into_iter().rev().find(|r| r.action == "get").unwrap()
    };
    assert!(matches!(
        store.get(&who(), &v.document_id, Some(5)).await,
        Err(Error::NotFound { .. })
    ));
    let missing = last(store.clone(), v.document_id.to_string()).await;
    assert_eq!(
        (missing.outcome.as_str(), missing.version),
        ("not_found", Some(5))
    );

    // A flipped byte in the header: the get itself fails, and its audit names version 1.
    let path = LocalLayout::new(&root).objects().join(&v.blob_key);
    let stored = std::fs::read(&path).unwrap();
    let mut bytes = stored.clone();
    bytes[0] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let got = store.get(&who(), &v.document_id, None).await.map(drop);
    assert!(matches!(got, Err(Error::Integrity { version: 1, .. })), "{got:?}");
    let refused = last(store.clone(), v.document_id.to_string()).await;
    assert_eq!(
        (refused.outcome.as_str(), refused.version),
        ("integrity", Some(1))
    );

    // A flipped byte in the last frame: the read fails as it streams, and its end names v1 too.
    let mut bytes = stored;
    let at = bytes.len() - 20;
    bytes[at] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let read = store.get(&who(), &v.document_id, None).await;
    let failed = match read {
        Ok(doc) => doc.read_all().await.map(|_| ()),
        Err(e) => Err(e),
    };
    assert!(
        matches!(failed, Err(Error::Integrity { version: 1, .. })),
        "{failed:?}"
    );
    let trail = store.audit_log(&who(), Some(&v.document_id), 100).await.unwrap();
    let ends: Vec<_> = trail
        .iter()
        .filter(|r| r.outcome == "integrity")
        .map(|r| (r.action.as_str(), r.version))
        .collect();
    assert!(
        !ends.is_empty() && ends.iter().all(|(_, v)| *v == Some(1)),
        "{ends:?}"
    );
}

#[tokio::test]
async fn a_media_type_is_type_slash_subtype_of_at_most_255_bytes() {
    let (_dir, store) = common::local_store().await;
    let put = |media: String| {
        let store = store.clone();
        async move {
            store
                .put(
                    &who(),
                    request(None, "pat-mt", "exam-mt").media_type(media),
                    &b"x"[..],
                )
                .await
        }
    };
    let longest = format!("application/{}", "x".repeat(255 - "application/".len()));
    assert_eq!(put(longest.clone()).await.unwrap().media_type, longest);
    for bad in [
        String::new(),
        "pdf".to_owned(),
        format!("{longest}x"),
        format!("application/{}", "x".repeat(400)),
    ] {
        match put(bad.clone()).await {
            Err(Error::InvalidInput(why)) => assert!(why.contains("media type"), "{why}"),
            other => panic!("{bad:?}: {:?}", other.map(|v| v.version)),
        }
    }
}

#[tokio::test]
async fn an_exam_release_is_read_back() {
    let (_dir, store) = common::local_store().await;
    assert_eq!(store.exam_release(&who(), "exam-rel").await.unwrap(), None);
    let release = ExamRelease {
        exam_id: "exam-rel".into(),
        patient_id: "pat-rel".into(),
        released_at: Timestamp(1_700_000_000_000),
        released_by: "staff:rel".into(),
    };
    store.metadata().record_release(&release).await.unwrap();
    assert_eq!(
        store.exam_release(&who(), "exam-rel").await.unwrap(),
        Some(release)
    );
}

/// A blob store whose reads stream the stored bytes and then `extra` more than the size they
/// announce: an object overwritten while it was being read.
#[derive(Debug)]
struct Overlong {
    inner: ObjectBlobStore,
    extra: Bytes,
}

#[async_trait]
impl BlobStore for Overlong {
    async fn upload(&self, key: &str) -> docstore::Result<Box<dyn BlobUpload>> {
        self.inner.upload(key).await
    }
    async fn get(&self, key: &str) -> docstore::Result<BlobRead> {
        let read = self.inner.get(key).await?;
        let tail = futures::stream::iter([Ok(self.extra.clone())]);
        Ok(BlobRead {
            stream: read.stream.chain(tail).boxed(),
            ..read
        })
    }
    async fn get_range(&self, key: &str, range: Range<u64>) -> docstore::Result<Bytes> {
        self.inner.get_range(key, range).await
    }
    async fn size(&self, key: &str) -> docstore::Result<u64> {
        self.inner.size(key).await
    }
    async fn delete(&self, key: &str) -> docstore::Result<()> {
        self.inner.delete(key).await
    }
    async fn list(&self, prefix: &str) -> docstore::Result<Vec<BlobMeta>> {
        self.inner.list(prefix).await
    }
}

#[tokio::test]
async fn bytes_past_the_final_frame_fail_the_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = DocStore::builder()
        .blobs(Arc::new(Overlong {
            inner: ObjectBlobStore::local(&dir.path().join("objects")).unwrap(),
            extra: Bytes::from_static(b"appended"),
        }))
        .metadata(Arc::new(
            docstore::meta::sqlite::SqliteMetadata::in_memory().await.unwrap(),
        ))
        .keys(Arc::new(Keyring::create(&dir.path().join("k.json")).unwrap()))
        .audit(Arc::new(docstore::audit::MemoryAudit::default()))
        .frame_size(1024)
        .build()
        .unwrap();
    let v = store
        .put(
            &who(),
            request(None, "pat-long", "exam-long"),
            &pattern(3000, 2)[..],
        )
        .await
        .unwrap();
    let read = store.get(&who(), &v.document_id, None).await.unwrap();
    match read.read_all().await {
        Err(Error::Integrity {
            kind: IntegrityError::Length(_),
            ..
        }) => {}
        other => panic!("{:?}", other.map(|b| b.len())),
    }
}

#[tokio::test]
async fn a_rewrap_of_named_documents_resumes_after_its_cursor() {
    let (dir, store) = common::local_store().await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let v = store
            .put(&who(), request(None, "pat-rw", "exam-rw"), &pattern(100, i)[..])
            .await
            .unwrap();
        ids.push(v.document_id.to_string());
    }
    ids.sort();
    let target = Arc::new(Keyring::create(&dir.path().join("target.json")).unwrap());
    let report = store
        .rewrap(&who(), target.clone(), &ids, Some(&ids[1]))
        .await
        .unwrap();
    assert_eq!(report.rewrapped, 1, "{report:?}");
    assert_eq!(report.last_document.as_deref(), Some(ids[2].as_str()));
    // The first two are still under the old key; a run from the start moves them and no more.
    let rest = store.rewrap(&who(), target, &ids, None).await.unwrap();
    assert_eq!((rest.rewrapped, rest.already), (2, 1), "{rest:?}");
}
