//! The domain rules of every metadata backend (SQLite, PostgreSQL and DynamoDB alike), written
//! once: who may add a version, when a commit conflicts, what a commit inserts, which release is
//! kept, what a tombstone change announces. The backends differ only in how they read and write.

use crate::error::{Error, Result};
use crate::model::{DocumentRecord, ExamRelease, NewVersion, ProcessingState, VersionRecord};

/// Refuses a new version whose owner differs from the document's.
pub(crate) fn check_owner(doc: &DocumentRecord, new: &NewVersion) -> Result<()> {
    if doc.patient_id != new.patient_id || doc.exam_id != new.exam_id || doc.kind != new.kind {
        return Err(Error::InvalidInput(format!(
            "document {} belongs to another patient, exam or kind; a new version must keep them",
            doc.document_id
        )));
    }
    Ok(())
}

/// Refuses a compare-and-swap commit whose expected latest version is not the document's.
pub(crate) fn check_expected(document_id: &str, expected: Option<u64>, latest: u64) -> Result<()> {
    match expected {
        Some(expected) if expected != latest => Err(Error::Conflict {
            document: document_id.to_owned(),
            expected,
            actual: latest,
        }),
        _ => Ok(()),
    }
}

/// The record a commit inserts as version `latest + 1`.
pub(crate) fn next_version(new: NewVersion, latest: u64) -> VersionRecord {
    VersionRecord {
        document_id: new.document_id,
        version: latest + 1,
        version_id: new.version_id,
        patient_id: new.patient_id,
        exam_id: new.exam_id,
        kind: new.kind,
        media_type: new.media_type,
        size: new.size,
        sha256: hex::encode(new.sha256),
        created_at: new.created_at,
        created_by: new.created_by,
        blob_key: new.blob_key,
        key_block: new.key_block,
        state: ProcessingState::Pending,
        renditions: Vec::new(),
    }
}

/// The release a store keeps when `asked` was recorded unless one already was: the one it
/// reads back (`recorded`), unless that names another patient.
pub(crate) fn kept_release(recorded: Option<ExamRelease>, asked: &ExamRelease) -> Result<ExamRelease> {
    let recorded = recorded.ok_or_else(|| {
        Error::bad_record(format!(
            "exam {}: release not found after recording it",
            asked.exam_id
        ))
    })?;
    if recorded.patient_id != asked.patient_id {
        return Err(Error::InvalidInput(format!(
            "exam {} belongs to another patient",
            asked.exam_id
        )));
    }
    Ok(recorded)
}

/// What a tombstone change announces in `file.deleted`'s `reason`.
pub(crate) fn tombstone_reason(deleted: bool) -> &'static str {
    if deleted { "deleted" } else { "restored" }
}

/// The refusal of a key-block swap whose expected block is no longer there.
pub(crate) fn key_block_changed(document_id: &str, version: u64) -> Error {
    Error::Refused {
        document: document_id.to_owned(),
        reason: format!("v{version}: key block changed concurrently or version missing"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Kind, Timestamp};

    fn doc() -> DocumentRecord {
        DocumentRecord {
            document_id: "d".into(),
            patient_id: "p".into(),
            exam_id: "e".into(),
            kind: Kind::Report,
            latest_version: 1,
            created_at: Timestamp(0),
            deleted_at: None,
            deleted_by: None,
            legal_hold: false,
            retain_until: None,
        }
    }

    fn new(patient: &str, exam: &str, kind: Kind) -> NewVersion {
        NewVersion {
            document_id: "d".into(),
            version_id: crate::VersionId::new("v").unwrap(),
            patient_id: patient.into(),
            exam_id: exam.into(),
            kind,
            media_type: "application/pdf".into(),
            size: 1,
            sha256: [0; 32],
            created_at: Timestamp(0),
            created_by: "t".into(),
            blob_key: "k".into(),
            key_block: vec![],
        }
    }

    /// A new version keeps its document's patient, exam and kind: each one changed alone is
    /// refused.
    #[test]
    fn a_version_keeps_every_owner_field() {
        assert!(check_owner(&doc(), &new("p", "e", Kind::Report)).is_ok());
        for other in [
            new("q", "e", Kind::Report),
            new("p", "f", Kind::Report),
            new("p", "e", Kind::Image),
        ] {
            assert!(matches!(check_owner(&doc(), &other), Err(Error::InvalidInput(_))));
        }
    }
}
