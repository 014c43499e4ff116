//! `LocalPipeline::catch_up` running while versions are put: a version whose `file.uploaded` is
//! still in the outbox or already on this process's bus is never announced a second time, so
//! each stage handles each version once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use docstore::conformance::request;
use docstore::{DocStore, Identity};
use docstore_search::SearchIndex;
use docstore_tools::local::{LocalConfig, LocalPipeline};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn catch_up_during_puts_announces_nothing_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(DocStore::init_local(&tmp.path().join("data")).await.unwrap());
    let index_dir = tmp.path().join("index");
    std::fs::create_dir(&index_dir).unwrap();
    std::fs::set_permissions(&index_dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let index = Arc::new(
        SearchIndex::open(&index_dir, store.keys().as_ref())
            .await
            .unwrap(),
    );
    let pipeline = LocalPipeline::start(store.clone(), index, LocalConfig::default());
    let pdf = docstore_tools::synthetic::Generator::new(1, "Clínica", 1)
        .report()
        .pdf;
    const PUTS: u64 = 40;
    let putter = {
        let store = store.clone();
        tokio::spawn(async move {
            let who = Identity::new("staff:catch-up");
            for i in 0..PUTS {
                let req = request(None, &format!("pac-{i}"), &format!("exm-{i}"));
                store.put(&who, req, &pdf[..]).await.unwrap();
                tokio::task::yield_now().await;
            }
        })
    };
    // Catch-up passes racing the puts and the relay, as `process --follow` and the server's
    // start do while another process writes.
    let mut reannounced = 0;
    let mut passes = 0;
    while !putter.is_finished() {
        reannounced += pipeline.catch_up().await.unwrap().reannounced;
        passes += 1;
    }
    putter.await.unwrap();
    reannounced += pipeline.catch_up().await.unwrap().reannounced;
    let start = Instant::now();
    while !pipeline.drained().await.unwrap() {
        assert!(start.elapsed() < Duration::from_secs(120), "pipeline not drained");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(reannounced, 0, "announced again during {passes} catch-up passes");
    for (stage, m) in pipeline.metrics() {
        if stage != "index" {
            assert_eq!(
                m.processed.get(),
                PUTS,
                "{stage} handled a version more than once"
            );
        }
    }
    pipeline.stop().await;
}
