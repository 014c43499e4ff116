//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::path::PathBuf;

use docstore::DocStore;

/// A fresh embedded store in a temporary directory (kept alive by the returned guard).
pub async fn local_store() -> (tempfile::TempDir, DocStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = DocStore::init_local(&dir.path().join("data")).await.unwrap();
    (dir, store)
}

/// The shared test corpus: `DOCSTORE_CORPUS`, else `../shared/corpus` beside the workspace.
/// Missing corpus is a test failure, not a skip: these tests must not pass vacuously.
pub fn corpus_dir() -> PathBuf {
    let dir = std::env::var_os("DOCSTORE_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus"));
    assert!(
        dir.join("MANIFEST.tsv").is_file(),
        "test corpus not found at {} (set DOCSTORE_CORPUS)",
        dir.display()
    );
    dir
}

/// A service setting from `scripts/services.sh` (e.g. `DOCSTORE_TEST_PG_URL`). Without it the test
/// is skipped with a message, unless `DOCSTORE_REQUIRE_SERVICES` is set (as `scripts/test.sh`
/// does), where a missing service is a failure.
pub fn service(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ if std::env::var_os("DOCSTORE_REQUIRE_SERVICES").is_some() => {
            panic!("{var} is not set: start the services with scripts/services.sh")
        }
        _ => {
            eprintln!("SKIPPED: {var} not set (run scripts/services.sh start and source its env)");
            None
        }
    }
}
