//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub, missing_docs)]

use docstore::DocStore;

/// A fresh embedded store in a temporary directory (kept alive by the returned guard).
pub async fn local_store() -> (tempfile::TempDir, DocStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = DocStore::init_local(&dir.path().join("data")).await.unwrap();
    (dir, store)
}

#[allow(unused_imports)] // not every test file that includes this module needs a service
pub use docstore_testkit::service;
