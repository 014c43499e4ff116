//! The embedded default's files hold patient and exam ids, keys and the audit trail: none of them
//! is readable by other users, including the SQLite write-ahead log and shared-memory files that
//! SQLite creates next to the database.

use std::os::unix::fs::PermissionsExt;

use docstore::conformance::request;
use docstore::{DocStore, Identity};

#[tokio::test]
async fn every_file_of_a_fresh_data_directory_is_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let store = DocStore::init_local(&root).await.unwrap();
    let who = Identity::new("staff:modes");
    store
        .put(
            &who,
            request(None, "pat-modes", "exam-modes"),
            &b"%PDF-1.4 modes"[..],
        )
        .await
        .unwrap();
    for name in [
        "metadata.sqlite",
        "metadata.sqlite-wal",
        "metadata.sqlite-shm",
        "keyring.json",
        "audit.jsonl",
    ] {
        let mode = std::fs::metadata(root.join(name)).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{name}: mode {:o}", mode & 0o777);
    }
}
