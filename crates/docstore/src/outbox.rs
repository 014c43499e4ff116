//! Events recorded in the metadata commit (the transactional outbox).
//!
//! The store never publishes: the metadata backend writes the event in the same conditional write or
//! transaction as the version, and a relay (the pipeline crate) publishes and marks it sent. So a
//! crash between commit and publish loses nothing, and a duplicate publish is absorbed by idempotent
//! consumers keyed by the event id.

use std::collections::BTreeMap;

use docstore_events::{CloudEvent, EventType, FileDeleted, FileProcessed, FileUploaded};

use crate::model::{StageResult, VersionRecord};

/// CloudEvents `source` of events produced by the store.
pub const SOURCE: &str = "urn:docstore:store";

/// The event types the store records; their names and data types are the event contract's
/// (`docstore-events`), shared with every consumer.
pub use docstore_events::{FILE_DELETED, FILE_PROCESSED, FILE_UPLOADED, INDEX_TOPICS};

/// A W3C `traceparent` whose trace id is derived from `trace_of` (an event id) and whose span id
/// from `span_of`: deterministic, so a redelivered event keeps its trace, and `file.processed`
/// (span of its own id, trace of the version's `file.uploaded`) joins the upload's trace.
pub fn traceparent(trace_of: &str, span_of: &str) -> String {
    use sha2::{Digest, Sha256};
    let hex = |s: &str, n: usize| -> String {
        Sha256::digest(s.as_bytes())
            .iter()
            .take(n)
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    format!("00-{}-{}-01", hex(trace_of, 16), hex(span_of, 8))
}

/// The id of the `event_type` event of a version: derived from its version id, so a re-recorded
/// event is recognisably the same one, and `file.processed` can name its upload's trace.
fn id_of(event_type: &str, version_id: &str) -> String {
    format!("{event_type}:{version_id}")
}

/// The `file.deleted` CloudEvent: event id, JSON. `version` is `None` for document-level changes
/// (tombstone, restore, purge) and the version for a shred. Each change is recorded once, in the
/// write that makes it, under a fresh id.
pub fn file_deleted(document_id: &str, version: Option<u64>, reason: &str) -> (String, String) {
    let event_id = format!("{FILE_DELETED}:{}", uuid::Uuid::now_v7());
    let data = FileDeleted {
        document_id: document_id.to_owned(),
        version,
        reason: reason.to_owned(),
    };
    let event = CloudEvent::new(
        &event_id,
        SOURCE,
        EventType::FileDeleted,
        crate::model::Timestamp::now().to_rfc3339(),
        document_id,
        &data,
    )
    .with_traceparent(traceparent(&event_id, &event_id));
    (event_id, event.to_json())
}

/// The `file.uploaded` CloudEvent (structured JSON mode) for a committed version: event id, JSON.
///
/// Carries identifiers and digests only, never content. The id is derived from the version id, so a
/// re-recorded event for the same version is recognisably the same event.
pub fn file_uploaded(record: &VersionRecord) -> (String, String) {
    let event_id = id_of(FILE_UPLOADED, record.version_id.as_str());
    let data = FileUploaded {
        document_id: record.document_id.clone(),
        version: record.version,
        version_id: record.version_id.to_string(),
        patient_id: record.patient_id.clone(),
        exam_id: record.exam_id.clone(),
        kind: record.kind.as_str().to_owned(),
        media_type: record.media_type.clone(),
        size: record.size,
        sha256: record.sha256.clone(),
    };
    let event = CloudEvent::new(
        &event_id,
        SOURCE,
        EventType::FileUploaded,
        record.created_at.to_rfc3339(),
        &record.document_id,
        &data,
    );
    (event_id, event.to_json())
}

/// The `file.processed` CloudEvent for a version whose stages all succeeded: event id, JSON.
///
/// Names the renditions (with digests), page count, text length and which stage versions ran.
/// The id is derived from the version id: the outbox's unique event id is a second guard, beside
/// the join's conditional write, against recording it twice.
pub fn file_processed(record: &VersionRecord, stages: &BTreeMap<String, StageResult>) -> (String, String) {
    let event_id = id_of(FILE_PROCESSED, record.version_id.as_str());
    let uploaded_id = id_of(FILE_UPLOADED, record.version_id.as_str());
    let page_count = stages.values().filter_map(|s| s.page_count).max();
    let text_length = stages.values().filter_map(|s| s.text_length).max();
    let data = FileProcessed {
        document_id: record.document_id.clone(),
        version: record.version,
        version_id: record.version_id.to_string(),
        patient_id: record.patient_id.clone(),
        exam_id: record.exam_id.clone(),
        kind: record.kind.as_str().to_owned(),
        sha256: record.sha256.clone(),
        // Wrapped keys stay in the store: events name renditions, they do not carry keys.
        renditions: record
            .renditions
            .iter()
            .map(|r| docstore_events::Rendition {
                stage: r.stage.clone(),
                stage_version: r.stage_version,
                blob_key: r.blob_key.clone(),
                media_type: r.media_type.clone(),
                size: r.size,
                sha256: r.sha256.clone(),
            })
            .collect(),
        page_count,
        text_length,
        stages: stages
            .iter()
            .map(|(name, s)| (name.clone(), s.stage_version))
            .collect(),
    };
    let event = CloudEvent::new(
        &event_id,
        SOURCE,
        EventType::FileProcessed,
        crate::model::Timestamp::now().to_rfc3339(),
        &record.document_id,
        &data,
    )
    .with_traceparent(traceparent(&uploaded_id, &event_id));
    (event_id, event.to_json())
}

/// The store writes the events its outbox holds with the contract's types; the consumers'
/// strict decoder must accept each, with the same data.
#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use docstore_events::{CloudEvent, EventType};

    use crate::model::{Rendition, StageResult, Timestamp, VersionRecord};
    use crate::outbox;

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
}
