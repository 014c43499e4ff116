//! The store writes the events its outbox holds with the event contract's types
//! (`docstore-events`); the consumers' strict decoder must accept each, with the same data.

use std::collections::BTreeMap;

use docstore::outbox;
use docstore::{Rendition, StageResult, Timestamp, VersionRecord};
use docstore_events::{CloudEvent, EventType};

fn record() -> VersionRecord {
    serde_json::from_value(serde_json::json!({
        "document_id": "d1", "version": 2, "version_id": "vid", "patient_id": "p", "exam_id": "e",
        "kind": "report", "media_type": "application/pdf", "size": 10, "sha256": "ab",
        "created_at": 0, "created_by": "t", "blob_key": "k", "state": "processed", "renditions": []
    }))
    .unwrap()
}

#[test]
fn file_uploaded_decodes_into_the_contract() {
    let (id, payload) = outbox::file_uploaded(&record());
    let ev = CloudEvent::decode(payload.as_bytes()).unwrap();
    assert_eq!(
        (ev.id.as_str(), &ev.event_type),
        (id.as_str(), &EventType::FileUploaded)
    );
    assert_eq!(
        (ev.source.as_str(), ev.subject.as_deref()),
        (outbox::SOURCE, Some("d1"))
    );
    let data = ev.file_uploaded().unwrap();
    assert_eq!(
        (
            data.version,
            data.kind.as_str(),
            data.media_type.as_str(),
            data.size
        ),
        (2, "report", "application/pdf", 10)
    );
    assert_eq!(ev.time.as_deref(), Some(Timestamp(0).to_rfc3339().as_str()));
}

#[test]
fn file_processed_decodes_names_renditions_and_keeps_keys_out() {
    let mut record = record();
    record.renditions.push(Rendition {
        stage: "thumbnail".into(),
        stage_version: 1,
        blob_key: "renditions/d1/x".into(),
        media_type: "image/png".into(),
        size: 5,
        sha256: "cd".into(),
        key_block: vec![7; 40],
    });
    let stages = BTreeMap::from([(
        "verify".to_owned(),
        StageResult {
            stage: "verify".into(),
            stage_version: 1,
            renditions: vec![],
            page_count: Some(3),
            text_length: None,
            recorded_at: Timestamp(0),
        },
    )]);
    let (id, payload) = outbox::file_processed(&record, &stages);
    assert!(
        !payload.contains("key_block"),
        "wrapped keys never leave the store"
    );
    let ev = CloudEvent::decode(payload.as_bytes()).unwrap();
    assert_eq!(ev.id, id);
    let data = ev.file_processed().unwrap();
    assert_eq!(
        (data.version, data.page_count, data.stages["verify"]),
        (2, Some(3), 1)
    );
    assert_eq!(
        (data.renditions[0].blob_key.as_str(), data.renditions[0].size),
        ("renditions/d1/x", 5)
    );
    // Same trace as the version's file.uploaded (as the relay stamps it), its own span.
    let uploaded = outbox::traceparent("file.uploaded:vid", "file.uploaded:vid");
    let processed = ev.traceparent().unwrap();
    assert_eq!(processed.split('-').nth(1), uploaded.split('-').nth(1));
    assert_ne!(processed.split('-').nth(2), uploaded.split('-').nth(2));
}

#[test]
fn file_deleted_decodes_with_and_without_a_version() {
    for (version, reason) in [(None, "deleted"), (Some(3), "shredded")] {
        let (id, payload) = outbox::file_deleted("d1", version, reason);
        let ev = CloudEvent::decode(payload.as_bytes()).unwrap();
        assert_eq!((&ev.id, &ev.event_type), (&id, &EventType::FileDeleted));
        let data = ev.file_deleted().unwrap();
        assert_eq!(
            (data.document_id.as_str(), data.version, data.reason.as_str()),
            ("d1", version, reason)
        );
        assert!(ev.traceparent().is_some());
    }
}

#[test]
fn the_event_names_are_the_contracts() {
    assert_eq!(outbox::FILE_UPLOADED, EventType::FileUploaded.as_str());
    assert_eq!(outbox::FILE_PROCESSED, EventType::FileProcessed.as_str());
    assert_eq!(outbox::FILE_DELETED, EventType::FileDeleted.as_str());
}
