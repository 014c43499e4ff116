//! # docstore
//!
//! Versioned, envelope-encrypted storage for clinical exam documents.
//!
//! A document has a stable id and immutable versions 1, 2, 3 …; each version's content is sealed
//! with its own data key in the framed format of [`envelope`] (spec: `docs/envelope-v1.md`), stored
//! in a [`blob::BlobStore`], and described by a record in a [`meta::MetadataStore`] that also holds
//! the wrapped data key and the `file.uploaded` outbox event. Every call takes an
//! [`Identity`] and leaves an [`audit::AuditRecord`].
//!
//! ```no_run
//! # async fn demo() -> docstore::Result<()> {
//! use docstore::{DocStore, ExamId, Identity, Kind, PatientId, PutRequest};
//! let store = DocStore::init_local(std::path::Path::new("/tmp/docstore-example")).await?;
//! let who = Identity::new("staff:ana");
//! let req = PutRequest::new(PatientId::new("p-1")?, ExamId::new("e-1")?).kind(Kind::Report);
//! let v1 = store.put(&who, req, &b"%PDF-1.7 ..."[..]).await?;
//! let bytes = store.get(&who, &v1.document_id, None).await?.read_all().await?;
//! # Ok(()) }
//! ```
//!
//! ## Layout
//! - `store.rs`: [`DocStore`] and its builder: the write order, the read path, re-wrap, shred, gc;
//! - `model.rs`: ids (checked where they are built), records, kinds, timestamps; `error.rs`: [`Error`];
//! - [`envelope`]: the framed format, sealing and opening frames;
//! - [`keys`]: the key-provider seam, the local keyring, AWS KMS, the data-key cache;
//! - [`blob`]: the blob seam over `object_store` (local folder, memory, S3);
//! - [`meta`]: the metadata seam; the rules every backend applies (`rules.rs`), the SQL
//!   backends' flows written once (`sql.rs`), SQLite, PostgreSQL and DynamoDB;
//! - [`outbox`]: the events the metadata commit records, built from `docstore-events`' types;
//! - [`audit`]: audit records and their sinks; [`config`]: backends from settings; `aws.rs`: AWS
//!   client settings; `failpoint.rs`: crash-test pause points;
//! - `conformance` (feature `conformance`): the one suite every backend runs.

pub mod audit;
#[cfg(feature = "aws")]
pub mod aws;
pub mod blob;
pub mod config;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod envelope;
mod error;
mod failpoint;
pub mod keys;
pub mod meta;
mod model;
pub mod outbox;
mod store;

pub use error::{BoxError, Error, IntegrityError, KeyFailure, MetadataFailure, Result};
pub use model::{
    DocumentId, DocumentRecord, ExamId, ExamRelease, Identity, JoinOutcome, Kind, NewVersion, OutboxEntry,
    PatientId, ProcessingState, Rendition, StageResult, Timestamp, VersionId, VersionRecord, validate_id,
};
pub use store::{
    BLOB_PREFIX, CTX_DOCUMENT, CTX_VERSION_ID, DocStore, DocStoreBuilder, Document, GcReport, LocalLayout,
    MAX_RANGE, PutRequest, RENDITION_PREFIX, RenditionSpec, RewrapReport,
};

/// Creates the new file `path` with mode 0600, for plaintext (decrypted content, a restored
/// index): an existing file of that name is an error, never overwritten or followed.
pub async fn create_private(path: &std::path::Path) -> std::io::Result<tokio::fs::File> {
    tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .await
}

/// Creates `path` empty with mode 0600 unless it exists, so that a database opened at it next
/// (and the `-wal`/`-shm` files SQLite gives the database's mode) is never readable by others.
pub fn create_owner_only(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}
