//! Metadata stores: the source of truth for documents, versions and the outbox. Reads go through
//! metadata only; a blob no record points at is an orphan for [`crate::DocStore::gc`].

use std::collections::HashSet;

use async_trait::async_trait;

use crate::error::Result;
use crate::model::{
    DocumentRecord, ExamRelease, JoinOutcome, NewVersion, OutboxEntry, Rendition, StageResult, Timestamp,
    VersionRecord,
};

#[cfg(feature = "aws")]
pub mod dynamodb;
mod join;
#[cfg(feature = "postgres")]
pub mod postgres;
mod rows;
mod rules;
mod sql;
pub mod sqlite;

/// Changes to retention settings; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HoldChange {
    /// Set or clear the legal hold.
    pub legal_hold: Option<bool>,
    /// Set (`Some(Some(t))`) or clear (`Some(None)`) the retention date.
    pub retain_until: Option<Option<Timestamp>>,
}

/// The seam to a metadata database. Every implementation must pass `docstore::conformance`.
#[async_trait]
pub trait MetadataStore: Send + Sync + std::fmt::Debug {
    /// Commits the next version of a document, creating the document on its first version, and
    /// records its `file.uploaded` outbox entry in the same atomic write.
    ///
    /// Versions are assigned 1, 2, 3 … without gaps even under concurrent commits. With
    /// `expected_latest`, fails with `Error::Conflict` unless the latest version equals it (0 = the
    /// document must not exist). Fails with `Error::Deleted` on a tombstoned document and
    /// `Error::InvalidInput` when patient, exam or kind differ from the document's.
    async fn commit_version(&self, new: NewVersion, expected_latest: Option<u64>) -> Result<VersionRecord>;

    /// Document-level record.
    async fn document(&self, document_id: &str) -> Result<DocumentRecord>;

    /// One version, or the latest when `version` is `None`.
    async fn version(&self, document_id: &str, version: Option<u64>) -> Result<VersionRecord>;

    /// Every version, oldest first.
    async fn versions(&self, document_id: &str) -> Result<Vec<VersionRecord>>;

    /// Sets (`Some`) or clears (`None`) the tombstone; returns the updated record.
    async fn set_tombstone(
        &self,
        document_id: &str,
        tombstone: Option<(Timestamp, String)>,
    ) -> Result<DocumentRecord>;

    /// Changes legal hold and retention.
    async fn set_hold(&self, document_id: &str, change: HoldChange) -> Result<DocumentRecord>;

    /// Removes a document and all its versions if [`DocumentRecord::purge_refusal`] allows it at
    /// `now`, checked inside the same atomic write; returns the blob keys to delete afterwards.
    async fn purge(&self, document_id: &str, now: Timestamp) -> Result<Vec<String>>;

    /// Documents of a patient, oldest first.
    async fn documents_by_patient(&self, patient_id: &str) -> Result<Vec<DocumentRecord>>;

    /// Documents of an exam, oldest first.
    async fn documents_by_exam(&self, exam_id: &str) -> Result<Vec<DocumentRecord>>;

    /// Replaces a version's key block if it still equals `expected` (compare-and-swap), for re-wrap
    /// and crypto-shredding (`new` empty). Fails with `Error::Refused` if it changed meanwhile.
    async fn replace_key_block(
        &self,
        document_id: &str,
        version: u64,
        expected: &[u8],
        new: &[u8],
    ) -> Result<()>;

    /// Replaces a version's rendition list if it still equals `expected` (compare-and-swap on the
    /// whole list), for re-wrapping renditions' key blocks. Fails with `Error::Refused` if a stage
    /// recorded new renditions meanwhile (the caller re-reads and tries again).
    async fn replace_renditions(
        &self,
        document_id: &str,
        version: u64,
        expected: &[Rendition],
        new: &[Rendition],
    ) -> Result<()>;

    /// Documents in id order, starting after `after`, at most `limit` (for re-wrap and re-index).
    async fn list_documents(&self, after: Option<&str>, limit: usize) -> Result<Vec<DocumentRecord>>;

    /// Which of `keys` some version (or rendition) references.
    async fn referenced_blobs(&self, keys: &[String]) -> Result<HashSet<String>>;

    /// Unsent outbox entries, oldest first.
    async fn outbox_pending(&self, limit: usize) -> Result<Vec<OutboxEntry>>;

    /// Marks outbox entries sent, by event id (marking an already-sent entry is a no-op).
    async fn outbox_mark_sent(&self, event_ids: &[String]) -> Result<()>;

    /// Records that a stage succeeded for a version (replacing that stage's earlier result and
    /// renditions: idempotent), and — when every stage in `required` has a result and the version
    /// is still pending — marks it processed and records its `file.processed` outbox entry, all in
    /// one atomic write. Of concurrent callers for one version exactly one completes the join.
    /// Fails with `Error::NotFound` if the version does not exist (any more).
    async fn record_stage(
        &self,
        document_id: &str,
        version: u64,
        result: StageResult,
        required: &[String],
    ) -> Result<JoinOutcome>;

    /// Records an exam's release unless one is recorded already, and returns the recorded one
    /// (so the first release's time stays). Fails with `Error::InvalidInput` when the exam is
    /// recorded for another patient.
    async fn record_release(&self, release: &ExamRelease) -> Result<ExamRelease>;

    /// The exam's release, if it was released.
    async fn exam_release(&self, exam_id: &str) -> Result<Option<ExamRelease>>;
}
