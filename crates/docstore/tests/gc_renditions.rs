//! `gc` collects rendition blobs no version records (a stage that crashed after storing its
//! output, or whose result was refused), after the grace period, and keeps recorded ones.

use std::time::Duration;

use docstore::conformance::request;
use docstore::{DocStore, Identity, RenditionSpec, StageResult, Timestamp};

#[tokio::test]
async fn orphaned_renditions_are_collected_recorded_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = DocStore::init_local(&dir.path().join("data")).await.unwrap();
    let who = Identity::new("staff:gc");
    let v = store
        .put(&who, request(None, "pat-gc", "exam-gc"), &b"%PDF-1.4 gc"[..])
        .await
        .unwrap();
    let spec = |stage: &str| RenditionSpec {
        stage: stage.into(),
        stage_version: 1,
        media_type: "text/plain".into(),
    };
    let kept = store
        .put_rendition(&who, &v.document_id, 1, &spec("text"), &b"recorded"[..])
        .await
        .unwrap();
    let result = StageResult {
        stage: "text".into(),
        stage_version: 1,
        renditions: vec![kept.clone()],
        page_count: None,
        text_length: Some(8),
        recorded_at: Timestamp::now(),
    };
    store
        .record_stage(&who, &v.document_id, 1, result, &["text".to_owned()])
        .await
        .unwrap();
    let orphan = store
        .put_rendition(
            &who,
            &v.document_id,
            1,
            &spec("thumbnail"),
            &b"never recorded"[..],
        )
        .await
        .unwrap();

    // Within the grace period the orphan stays: its stage may still record it.
    let young = store.gc(&who, Duration::from_secs(3600)).await.unwrap();
    assert_eq!((young.scanned, young.removed, young.young_orphans), (3, 0, 1));
    tokio::time::sleep(Duration::from_millis(20)).await;
    let report = store.gc(&who, Duration::ZERO).await.unwrap();
    assert_eq!((report.scanned, report.removed), (3, 1));
    let blobs = store.blobs();
    assert!(
        blobs.get(&orphan.blob_key).await.is_err(),
        "orphan rendition left behind"
    );
    assert!(
        blobs.get(&kept.blob_key).await.is_ok(),
        "recorded rendition removed"
    );
    assert!(blobs.get(&v.blob_key).await.is_ok(), "the version's blob removed");
}
