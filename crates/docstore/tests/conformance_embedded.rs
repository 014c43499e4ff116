//! The conformance suite on the embedded backends (local folder, SQLite, keyring, JSONL audit), and
//! on the in-memory object store and SQLite, which share the same trait implementations.

mod common;

use std::sync::Arc;

use docstore::audit::MemoryAudit;
use docstore::blob::ObjectBlobStore;
use docstore::conformance;
use docstore::keys::keyring::Keyring;
use docstore::meta::sqlite::SqliteMetadata;

#[tokio::test]
async fn blob_store_local_folder() {
    let dir = tempfile::tempdir().unwrap();
    conformance::blob_store(&ObjectBlobStore::local(dir.path()).unwrap()).await;
}

#[tokio::test]
async fn blob_store_in_memory() {
    let mem = ObjectBlobStore::new(Arc::new(object_store::memory::InMemory::new()));
    conformance::blob_store(&mem).await;
}

#[tokio::test]
async fn key_provider_keyring() {
    let dir = tempfile::tempdir().unwrap();
    conformance::key_provider(&Keyring::create(&dir.path().join("k.json")).unwrap()).await;
}

#[tokio::test]
async fn metadata_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let meta = SqliteMetadata::open(&dir.path().join("m.sqlite"), true)
        .await
        .unwrap();
    conformance::metadata_store(&meta).await;
    conformance::processing_join(&meta).await;
    conformance::shred_write(&meta).await;
}

#[tokio::test]
async fn metadata_sqlite_in_memory() {
    conformance::metadata_store(&SqliteMetadata::in_memory().await.unwrap()).await;
    conformance::processing_join(&SqliteMetadata::in_memory().await.unwrap()).await;
    conformance::shred_write(&SqliteMetadata::in_memory().await.unwrap()).await;
}

#[tokio::test]
async fn docstore_embedded_default() {
    let (_dir, store) = common::local_store().await;
    conformance::docstore(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_writers_fifty_puts_one_document() {
    let (_dir, store) = common::local_store().await;
    conformance::concurrent_writers(&[store], 16, 50).await;
}

#[tokio::test]
async fn crash_between_blob_and_commit_leaves_only_an_orphan() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = Arc::new(ObjectBlobStore::local(&dir.path().join("objects")).unwrap());
    let meta = Arc::new(
        SqliteMetadata::open(&dir.path().join("m.sqlite"), true)
            .await
            .unwrap(),
    );
    let keys = Arc::new(Keyring::create(&dir.path().join("k.json")).unwrap());
    conformance::crash_before_commit(blobs, meta, keys, Arc::new(MemoryAudit::default())).await;
}

#[tokio::test]
async fn a_refused_rendition_swap_is_retried_then_reported() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = Arc::new(ObjectBlobStore::local(&dir.path().join("objects")).unwrap());
    let meta = Arc::new(SqliteMetadata::in_memory().await.unwrap());
    let keys = Arc::new(Keyring::create(&dir.path().join("k.json")).unwrap());
    let target = Arc::new(Keyring::create(&dir.path().join("target.json")).unwrap());
    conformance::rendition_swap_retries(blobs, meta, keys, Arc::new(MemoryAudit::default()), target).await;
}

#[tokio::test]
async fn rewrap_to_a_new_keyring_then_shred() {
    let (dir, store) = common::local_store().await;
    let new_ring = dir.path().join("new-keyring.json");
    let target = Arc::new(Keyring::create(&new_ring).unwrap());
    let old_ring = dir.path().join("data").join("keyring.json");
    conformance::rewrap_and_shred(&store, target, async move {
        // Retire the old master key for good: nothing may still need it.
        std::fs::remove_file(old_ring).unwrap();
    })
    .await;
}
