//! Events recorded in the metadata commit (the transactional outbox).
//!
//! The store never publishes: the metadata backend writes the event in the same conditional write or
//! transaction as the version, and a relay (the pipeline crate) publishes and marks it sent. So a
//! crash between commit and publish loses nothing, and a duplicate publish is absorbed by idempotent
//! consumers keyed by the event id.

use std::collections::BTreeMap;

use crate::model::{StageResult, VersionRecord};

/// CloudEvents `source` of events produced by the store.
pub const SOURCE: &str = "urn:docstore:store";
/// Event type recorded for every committed version.
pub const FILE_UPLOADED: &str = "file.uploaded";

/// Event type recorded once per version when every configured stage has succeeded.
pub const FILE_PROCESSED: &str = "file.processed";

/// Event type recorded when a document is deleted (tombstoned), restored or purged, or a version
/// crypto-shredded; `data.reason` says which (`deleted`, `restored`, `purged`, `shredded`).
/// Consumers that mirror the store (the search index) re-read the document when they see it.
pub const FILE_DELETED: &str = "file.deleted";

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
    let data = serde_json::json!({
        "document_id": document_id,
        "version": version,
        "reason": reason,
    });
    let mut event = cloud_event(
        &event_id,
        FILE_DELETED,
        crate::model::Timestamp::now().to_rfc3339(),
        document_id,
        data,
    );
    event["traceparent"] = serde_json::Value::String(traceparent(&event_id, &event_id));
    (event_id, event.to_string())
}

/// The structured-mode CloudEvent around `data`, about document `subject`.
fn cloud_event(
    id: &str,
    event_type: &str,
    time: String,
    subject: &str,
    data: serde_json::Value,
) -> serde_json::Value {
    serde_json::json!({
        "specversion": "1.0",
        "id": id,
        "source": SOURCE,
        "type": event_type,
        "time": time,
        "subject": subject,
        "datacontenttype": "application/json",
        "data": data,
    })
}

/// The `file.uploaded` CloudEvent (structured JSON mode) for a committed version: event id, JSON.
///
/// Carries identifiers and digests only, never content. The id is derived from the version id, so a
/// re-recorded event for the same version is recognisably the same event.
pub fn file_uploaded(record: &VersionRecord) -> (String, String) {
    let event_id = id_of(FILE_UPLOADED, &record.version_id);
    let data = serde_json::json!({
        "document_id": record.document_id,
        "version": record.version,
        "version_id": record.version_id,
        "patient_id": record.patient_id,
        "exam_id": record.exam_id,
        "kind": record.kind,
        "media_type": record.media_type,
        "size": record.size,
        "sha256": record.sha256,
    });
    let event = cloud_event(
        &event_id,
        FILE_UPLOADED,
        record.created_at.to_rfc3339(),
        &record.document_id,
        data,
    );
    (event_id, event.to_string())
}

/// The `file.processed` CloudEvent for a version whose stages all succeeded: event id, JSON.
///
/// Names the renditions (with digests), page count, text length and which stage versions ran.
/// The id is derived from the version id: the outbox's unique event id is a second guard, beside
/// the join's conditional write, against recording it twice.
pub fn file_processed(record: &VersionRecord, stages: &BTreeMap<String, StageResult>) -> (String, String) {
    let event_id = id_of(FILE_PROCESSED, &record.version_id);
    let uploaded_id = id_of(FILE_UPLOADED, &record.version_id);
    let page_count = stages.values().filter_map(|s| s.page_count).max();
    let text_length = stages.values().filter_map(|s| s.text_length).max();
    let stage_versions: BTreeMap<&str, u32> = stages
        .iter()
        .map(|(name, s)| (name.as_str(), s.stage_version))
        .collect();
    let data = serde_json::json!({
        "document_id": record.document_id,
        "version": record.version,
        "version_id": record.version_id,
        "patient_id": record.patient_id,
        "exam_id": record.exam_id,
        "kind": record.kind,
        "sha256": record.sha256,
        // Wrapped keys stay in the store: events name renditions, they do not carry keys.
        "renditions": record.renditions.iter().map(|r| serde_json::json!({
            "stage": r.stage,
            "stage_version": r.stage_version,
            "blob_key": r.blob_key,
            "media_type": r.media_type,
            "size": r.size,
            "sha256": r.sha256,
        })).collect::<Vec<_>>(),
        "page_count": page_count,
        "text_length": text_length,
        "stages": stage_versions,
    });
    let mut event = cloud_event(
        &event_id,
        FILE_PROCESSED,
        crate::model::Timestamp::now().to_rfc3339(),
        &record.document_id,
        data,
    );
    event["traceparent"] = serde_json::Value::String(traceparent(&uploaded_id, &event_id));
    (event_id, event.to_string())
}
