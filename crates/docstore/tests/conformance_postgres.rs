//! The conformance suite on PostgreSQL (a real server from `scripts/services.sh`), alone and mixed
//! with the embedded blob store and keyring.

mod common;

use std::sync::Arc;

use docstore::DocStore;
use docstore::audit::MemoryAudit;
use docstore::blob::ObjectBlobStore;
use docstore::conformance;
use docstore::keys::keyring::Keyring;
use docstore::meta::postgres::PostgresMetadata;

async fn pg() -> Option<PostgresMetadata> {
    let url = common::service("DOCSTORE_TEST_PG_URL")?;
    Some(
        PostgresMetadata::connect(&url, 20)
            .await
            .expect("connect to PostgreSQL"),
    )
}

fn store_with(meta: PostgresMetadata, dir: &std::path::Path) -> DocStore {
    DocStore::new(
        Arc::new(ObjectBlobStore::local(&dir.join("objects")).unwrap()),
        Arc::new(meta),
        Arc::new(Keyring::create(&dir.join("keyring.json")).unwrap()),
        Arc::new(MemoryAudit::default()),
    )
}

#[tokio::test]
async fn metadata_postgres() {
    let Some(meta) = pg().await else { return };
    conformance::metadata_store(&meta).await;
    conformance::processing_join(&meta).await;
    conformance::shred_write(&meta).await;
}

#[tokio::test]
async fn docstore_on_postgres() {
    let Some(meta) = pg().await else { return };
    let dir = tempfile::tempdir().unwrap();
    conformance::docstore(&store_with(meta, dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_writers_fifty_puts_on_postgres() {
    let Some(meta) = pg().await else { return };
    let dir = tempfile::tempdir().unwrap();
    // Four pools model four processes: the row lock, not an in-process lock, orders the writers.
    let mut stores = vec![store_with(meta, dir.path())];
    for _ in 1..4 {
        let url = std::env::var("DOCSTORE_TEST_PG_URL").unwrap();
        let meta = Arc::new(PostgresMetadata::connect(&url, 8).await.unwrap());
        stores.push(DocStore::new(
            stores[0].blobs().clone(),
            meta,
            stores[0].keys().clone(),
            stores[0].audit_sink().clone(),
        ));
    }
    conformance::concurrent_writers(&stores, 16, 50).await;
}

#[tokio::test]
async fn crash_between_blob_and_commit_on_postgres() {
    let Some(meta) = pg().await else { return };
    let dir = tempfile::tempdir().unwrap();
    conformance::crash_before_commit(
        Arc::new(ObjectBlobStore::local(&dir.path().join("objects")).unwrap()),
        Arc::new(meta),
        Arc::new(Keyring::create(&dir.path().join("k.json")).unwrap()),
        Arc::new(MemoryAudit::default()),
    )
    .await;
}

#[tokio::test]
async fn a_refused_rendition_swap_is_retried_on_postgres() {
    let Some(meta) = pg().await else { return };
    let dir = tempfile::tempdir().unwrap();
    conformance::rendition_swap_retries(
        Arc::new(ObjectBlobStore::local(&dir.path().join("objects")).unwrap()),
        Arc::new(meta),
        Arc::new(Keyring::create(&dir.path().join("k.json")).unwrap()),
        Arc::new(MemoryAudit::default()),
        Arc::new(Keyring::create(&dir.path().join("target.json")).unwrap()),
    )
    .await;
}

#[tokio::test]
async fn rewrap_to_a_new_keyring_then_shred_on_postgres() {
    let Some(meta) = pg().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(meta, dir.path());
    let target = Arc::new(Keyring::create(&dir.path().join("new-keyring.json")).unwrap());
    let old_ring = dir.path().join("keyring.json");
    conformance::rewrap_and_shred(&store, target, async move {
        std::fs::remove_file(old_ring).unwrap();
    })
    .await;
}
