//! The embedded pipeline (relay, stamp, thumbnail, text, index on the in-process bus) fed every
//! hostile file of the corpus, then a good report and a good image: each hostile version is
//! dead-lettered by the stages that read it (typed, permanent, no retries), no worker stops, and
//! the good files uploaded after them are processed and searchable.

#[path = "../../stages/tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{corpus, files};
use docstore::conformance::request;
use docstore::{DocStore, Identity, Kind, ProcessingState};
use docstore_search::{SearchIndex, SearchQuery};
use docstore_tools::local::{LocalConfig, LocalPipeline};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_files_are_dead_lettered_and_the_pipeline_keeps_going() {
    let dir = corpus();
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
    let who = Identity::new("staff:hostile");
    let hostile = files(&dir, "hostile-", &[".pdf", ".jpg", ".png", ".gif", ".webp"]);
    // Every hostile file the corpus lists, so that a renamed or unreadable one cannot drop out.
    let listed = std::fs::read_to_string(dir.join("MANIFEST.tsv"))
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("hostile-"))
        .count();
    assert!(listed >= 17, "the corpus lists {listed} hostile files");
    assert_eq!(hostile.len(), listed, "hostile files found against those listed");
    let mut bad = Vec::new();
    for path in &hostile {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let mut req = request(None, "pac-h", &format!("exm-{name}"));
        if !name.ends_with(".pdf") {
            req.kind = Kind::Image;
            req.media_type = "image/*".into();
        }
        let v = store
            .put(&who, req, &std::fs::read(path).unwrap()[..])
            .await
            .unwrap();
        bad.push((name, v.document_id));
    }
    let good_pdf = store
        .put(
            &who,
            request(None, "pac-g", "exm-good"),
            &std::fs::read(dir.join("text-1p-latex-objstm.pdf")).unwrap()[..],
        )
        .await
        .unwrap();
    let mut req = request(None, "pac-g", "exm-good-img");
    req.kind = Kind::Image;
    req.media_type = "image/jpeg".into();
    let good_img = store
        .put(
            &who,
            req,
            &std::fs::read(dir.join("image-progressive-512.jpg")).unwrap()[..],
        )
        .await
        .unwrap();

    let pipeline = LocalPipeline::start(store.clone(), index.clone(), LocalConfig::default());
    let start = Instant::now();
    let processed = |id: String| {
        let store = store.clone();
        async move { store.metadata().version(&id, Some(1)).await.unwrap().state == ProcessingState::Processed }
    };
    while !(processed(good_pdf.document_id.clone()).await && processed(good_img.document_id.clone()).await) {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "good files not processed after the hostile ones"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every stage saw every version: wait until the hostile ones are accounted for too.
    let expected_dead: u64 = bad
        .iter()
        .map(|(n, _)| if n.ends_with(".pdf") { 3 } else { 1 })
        .sum();
    let dead = || {
        pipeline
            .metrics()
            .iter()
            .map(|(_, m)| m.dead_lettered.get())
            .sum::<u64>()
    };
    while dead() < expected_dead {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{} of {expected_dead} dead letters",
            dead()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let retried: u64 = pipeline.metrics().iter().map(|(_, m)| m.retried.get()).sum();
    assert_eq!(retried, 0, "bad input is permanent: no retries");
    // The index stage follows `file.processed`: the report becomes searchable shortly after.
    while index.search(&SearchQuery::new("troublemakers")).unwrap().total == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the good report is not searchable"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pipeline.stop().await;
    for (name, id) in &bad {
        let state = store.metadata().version(id, Some(1)).await.unwrap().state;
        assert_ne!(state, ProcessingState::Processed, "{name}");
    }
}
