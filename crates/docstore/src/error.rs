//! The one error type of the `docstore` crate.
//!
//! Messages name documents, versions, keys ids and paths, never content, key bytes or tokens: they end
//! up in logs and in audit records.

use std::path::PathBuf;

/// Why stored bytes failed verification. Every variant means "do not trust these bytes"; none of them
/// carries plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IntegrityError {
    /// The envelope does not start with the docstore magic bytes.
    #[error("not a docstore envelope (bad magic)")]
    BadMagic,
    /// The envelope format version is not one this build reads.
    #[error("unsupported envelope format version {0}")]
    UnsupportedVersion(u8),
    /// The algorithm id is not one this build knows.
    #[error("unsupported envelope algorithm 0x{0:04x}")]
    UnsupportedAlgorithm(u16),
    /// The header or key block is malformed (bad lengths, bad UTF-8, bad field order).
    #[error("malformed envelope header: {0}")]
    MalformedHeader(&'static str),
    /// The frame size in the header is outside the range this build accepts.
    #[error("frame size {0} outside the accepted range")]
    FrameSize(u32),
    /// The key commitment in the header does not match the data key.
    #[error("key commitment mismatch: the data key does not belong to this envelope")]
    Commitment,
    /// A frame failed authentication (bit flip, reordering, truncation or extension).
    #[error("frame {index} failed authentication")]
    Frame {
        /// Zero-based frame index.
        index: u64,
    },
    /// The ciphertext length cannot be split into valid frames.
    #[error("envelope body has an impossible length ({0} bytes)")]
    Length(u64),
    /// The encryption context in the header is not the one expected for this version.
    #[error("encryption context does not match the document version")]
    Context,
    /// The wrapped data key could not be unwrapped (tampered, wrong key, or wrong context).
    #[error("wrapped data key failed to unwrap")]
    KeyUnwrap,
    /// The plaintext digest differs from the recorded SHA-256.
    #[error("plaintext SHA-256 differs from the recorded digest")]
    Digest,
    /// The plaintext length differs from the recorded size.
    #[error("plaintext size {actual} differs from the recorded {expected}")]
    Size {
        /// Size recorded in metadata.
        expected: u64,
        /// Size actually decrypted.
        actual: u64,
    },
}

/// Why a key provider could not serve a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFailure {
    /// The caller may not use the key.
    #[error("access denied")]
    AccessDenied,
    /// The key is disabled.
    #[error("key disabled")]
    Disabled,
    /// The key does not exist (or is pending deletion).
    #[error("key not found")]
    NotFound,
    /// The provider kept throttling after bounded retries.
    #[error("throttled after retries")]
    Throttled,
    /// The provider could not be reached or failed.
    #[error("provider unavailable")]
    Unavailable,
    /// A wrapped key names a key this store is not configured to trust; it was not sent to the
    /// provider (content sealed under another key is not served as authentic).
    #[error("key not on the allowlist")]
    NotAllowed,
}

/// Errors returned by the docstore library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The document, or the requested version of it, does not exist.
    #[error("document {document} not found{}", version.map(|v| format!(" at version {v}")).unwrap_or_default())]
    NotFound {
        /// Document id.
        document: String,
        /// Version asked for, if any.
        version: Option<u64>,
    },
    /// The document is soft-deleted (tombstoned); restore it first.
    #[error("document {document} is deleted")]
    Deleted {
        /// Document id.
        document: String,
    },
    /// `expected_version` did not match the latest version.
    #[error("version conflict on {document}: expected latest version {expected}, found {actual}")]
    Conflict {
        /// Document id.
        document: String,
        /// What the caller expected as latest version (0: no version yet).
        expected: u64,
        /// What the store holds.
        actual: u64,
    },
    /// Stored bytes failed verification; nothing unverified was released.
    #[error("integrity failure on {document} v{version}: {kind}")]
    Integrity {
        /// Document id ("-" when not known, e.g. a bare envelope).
        document: String,
        /// Version number (0 when not known).
        version: u64,
        /// What failed.
        kind: IntegrityError,
    },
    /// The operation is refused by a retention rule or legal hold, or needs a prior step.
    #[error("refused on {document}: {reason}")]
    Refused {
        /// Document id.
        document: String,
        /// Why.
        reason: String,
    },
    /// The caller's input is invalid (empty body, bad range, mismatched patient ...).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A key provider failed (unknown key, disabled key, bad keyring).
    #[error("key provider: {0}")]
    Key(String),
    /// A key provider refused or failed a request for a key.
    #[error("key {key_id}: {failure}")]
    KeyUnavailable {
        /// Key id, alias or ARN.
        key_id: String,
        /// What went wrong.
        failure: KeyFailure,
    },
    /// The version was crypto-shredded: its wrapped data key is destroyed, it can never be read.
    #[error("document {document} v{version} was crypto-shredded and can never be read")]
    Shredded {
        /// Document id.
        document: String,
        /// Version.
        version: u64,
    },
    /// The local keyring file is readable by group or others, is not a regular file (a symlink),
    /// or another user owns it.
    #[error("keyring {path} has unsafe permissions {mode:o}; it must be 0600 and owned by you")]
    KeyringPermissions {
        /// Keyring path.
        path: PathBuf,
        /// File mode found.
        mode: u32,
    },
    /// The metadata database is not a database this build can read.
    #[error("metadata database {path} is corrupted or not a docstore database: {detail}")]
    MetadataCorrupt {
        /// Database path.
        path: String,
        /// What the database engine said.
        detail: String,
    },
    /// A backend could not be reached, or kept failing after bounded retries; nothing was
    /// committed by the failed call.
    #[error("{backend} unavailable: {detail}")]
    Unavailable {
        /// Which backend (`dynamodb`, `kms`, `postgres`, `s3`).
        backend: String,
        /// What the client saw (no request content).
        detail: String,
        /// The client's own error, when there is one.
        #[source]
        source: Option<BoxError>,
    },
    /// A metadata backend failed.
    #[error("metadata store: {0}")]
    Metadata(#[source] MetadataFailure),
    /// A blob backend failed.
    #[error("blob store ({key}): {source}")]
    Blob {
        /// Blob key.
        key: String,
        /// The backend error.
        #[source]
        source: object_store::Error,
    },
    /// The data directory is missing or was never initialised.
    #[error("no docstore at {path}: the data directory was never initialised")]
    NotInitialized {
        /// Data directory.
        path: PathBuf,
    },
    /// Local I/O failed (reading the upload body, the keyring, the audit log).
    #[error("i/o on {path}: {source}")]
    Io {
        /// What was being read or written.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// A backend client's error, kept whole as the source of ours.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What a metadata backend reported: the driver's or client's own error where there is one, so
/// `Error::source()` reaches it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataFailure {
    /// The SQL driver (SQLite, PostgreSQL).
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    /// Applying the schema migrations.
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored JSON column or attribute did not decode, or a value did not encode.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// A backend client (DynamoDB's SDK) refused the request; `what` is the operation and the
    /// service's error code.
    #[error("{what}")]
    Client {
        /// Operation and error code.
        what: String,
        /// The client's error.
        #[source]
        source: BoxError,
    },
    /// A stored record breaks a rule of the store (a missing column, an unknown kind …).
    #[error("{0}")]
    Record(String),
}

impl Error {
    /// A metadata record that breaks a rule of the store.
    pub(crate) fn bad_record(what: impl Into<String>) -> Self {
        Error::Metadata(MetadataFailure::Record(what.into()))
    }

    /// `backend` could not serve the call; `detail` says how.
    pub fn unavailable(backend: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::Unavailable {
            backend: backend.into(),
            detail: detail.into(),
            source: None,
        }
    }

    /// The same, keeping the client's error as the source.
    pub fn unavailable_from(
        backend: impl Into<String>,
        detail: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        Error::Unavailable {
            backend: backend.into(),
            detail: detail.into(),
            source: Some(source.into()),
        }
    }

    /// An I/O error on `path`.
    pub fn io(path: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn integrity(document: &str, version: u64, kind: IntegrityError) -> Self {
        Error::Integrity {
            document: document.to_owned(),
            version,
            kind,
        }
    }

    /// Whether the same call may succeed later: a backend (metadata, blob store, KMS) or the
    /// disk failed, not the request. The one rule for retries: the stages retry these and
    /// dead-letter the rest, the HTTP service answers them 503 instead of 500.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Unavailable { .. } | Error::Io { .. } | Error::Blob { .. } => true,
            // A disabled, missing or refused key, or one off the allowlist, stays so until
            // someone acts: dead-lettered (and replayed after the fix), not retried.
            Error::KeyUnavailable { failure, .. } => {
                matches!(failure, KeyFailure::Throttled | KeyFailure::Unavailable)
            }
            _ => false,
        }
    }

    /// A short stable name for the error class, used in audit records and CLI JSON output.
    pub fn class(&self) -> &'static str {
        match self {
            Error::NotFound { .. } => "not_found",
            Error::Deleted { .. } => "deleted",
            Error::Conflict { .. } => "conflict",
            Error::Integrity { .. } => "integrity",
            Error::Refused { .. } => "refused",
            Error::InvalidInput(_) => "invalid_input",
            Error::Key(_) | Error::KeyringPermissions { .. } | Error::KeyUnavailable { .. } => "key",
            Error::Shredded { .. } => "shredded",
            Error::MetadataCorrupt { .. } => "metadata_corrupt",
            Error::Metadata(_) => "metadata",
            Error::Unavailable { .. } => "unavailable",
            Error::Blob { .. } => "blob",
            Error::NotInitialized { .. } => "not_initialized",
            Error::Io { .. } => "io",
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_backend_and_disk_failures_are_transient() {
        let transient = [
            Error::unavailable("metadata", "connection refused"),
            Error::io("objects/x", std::io::Error::other("disk")),
            Error::KeyUnavailable {
                key_id: "alias/x".into(),
                failure: KeyFailure::Throttled,
            },
        ];
        for e in &transient {
            assert!(e.is_transient(), "{e}");
        }
        let permanent = [
            Error::InvalidInput("empty body".into()),
            Error::NotFound {
                document: "d".into(),
                version: None,
            },
            Error::Key("unknown key".into()),
            Error::bad_record("bad row"),
            Error::KeyUnavailable {
                key_id: "alias/x".into(),
                failure: KeyFailure::NotAllowed,
            },
            Error::KeyUnavailable {
                key_id: "alias/x".into(),
                failure: KeyFailure::Disabled,
            },
        ];
        for e in &permanent {
            assert!(!e.is_transient(), "{e}");
        }
    }
}
