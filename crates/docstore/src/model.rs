//! The document/version model shared by every backend.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Milliseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(d.as_millis() as i64)
    }

    /// RFC 3339 rendering, for humans and events.
    pub fn to_rfc3339(self) -> String {
        let fmt = time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        );
        time::OffsetDateTime::from_unix_timestamp_nanos(self.0 as i128 * 1_000_000)
            .ok()
            .and_then(|t| t.format(&fmt).ok())
            .unwrap_or_else(|| self.0.to_string())
    }

    /// Parses RFC 3339 (`2027-01-31T00:00:00Z`) or a plain date (`2027-01-31`, midnight UTC).
    pub fn parse(s: &str) -> Result<Self> {
        use time::format_description::well_known::Rfc3339;
        let t = time::OffsetDateTime::parse(s, &Rfc3339).or_else(|_| {
            let fmt = time::macros::format_description!("[year]-[month]-[day]");
            time::Date::parse(s, &fmt).map(|d| d.midnight().assume_utc())
        });
        t.map(|t| Timestamp((t.unix_timestamp_nanos() / 1_000_000) as i64))
            .map_err(|_| Error::InvalidInput(format!("not a date: {s:?} (want 2027-01-31 or RFC 3339)")))
    }

    /// This time plus `d`.
    pub fn plus(self, d: std::time::Duration) -> Self {
        Timestamp(self.0.saturating_add(d.as_millis() as i64))
    }
}

/// Who is calling. Every operation takes one and records it in the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Stable principal name, e.g. `staff:ana`, `service:stamp-worker`.
    pub subject: String,
}

impl Identity {
    /// An identity for `subject`.
    pub fn new(subject: impl Into<String>) -> Self {
        Identity {
            subject: subject.into(),
        }
    }
}

/// Validates an identifier (document, patient, exam): 1–128 printable ASCII characters without
/// spaces or path separators, so ids are safe in blob keys, logs and URLs.
pub fn validate_id(what: &str, id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        && id != "."
        && id != "..";
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "{what} id must be 1-128 characters of [A-Za-z0-9._:-]"
        )))
    }
}

/// Declares an id type: a string checked by [`validate_id`] once, when it is built, so code that
/// holds one need not check it again.
macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        id_type!($(#[$doc])* $name, $what, validate_id);
    };
    ($(#[$doc:meta])* $name:ident, $what:literal, $check:path) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The id, if it is 1–128 characters of `[A-Za-z0-9._:-]` (and not `.` or `..`);
            /// otherwise [`Error::InvalidInput`] naming what it is.
            pub fn new(id: impl Into<String>) -> Result<Self> {
                let id = id.into();
                $check($what, &id)?;
                Ok($name(id))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The id's text, taken.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                $name::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = Error;
            fn try_from(s: String) -> Result<Self> {
                $name::new(s)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = Error;
            fn try_from(s: &str) -> Result<Self> {
                $name::new(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

id_type!(
    /// A document's id: the name of its versions, their blobs' folder and its audit records.
    DocumentId,
    "document"
);
id_type!(
    /// A patient's id, as the clinic's systems name the patient.
    PatientId,
    "patient"
);
id_type!(
    /// An exam's id, as the clinic's exam system names it.
    ExamId,
    "exam"
);
id_type!(
    /// A version's unique id, fixed before its blob is written and bound into the envelope's
    /// encryption context (the ordinal version number is only known at commit). A rendition's
    /// record carries `<version id>#<stage>@<stage version>`, the id its envelope is bound to.
    VersionId,
    "version",
    validate_version_id
);

/// Validates a version id: what [`validate_id`] accepts, plus `#` and `@` (a rendition's
/// `<version id>#<stage>@<stage version>`), at most 256 characters.
fn validate_version_id(what: &str, id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 256
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'#' | b'@'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "{what} id must be 1-256 characters of [A-Za-z0-9._:#@-]"
        )))
    }
}

impl VersionId {
    /// A version id read back from a metadata store: one that does not check is a malformed
    /// record, not bad input.
    pub(crate) fn stored(id: String) -> Result<VersionId> {
        VersionId::new(id).map_err(|_| Error::bad_record("malformed version id"))
    }

    /// A fresh random version id (a UUID v4).
    pub fn generate() -> VersionId {
        VersionId(uuid::Uuid::new_v4().to_string())
    }

    /// The id a rendition of this version is bound to: `<version id>#<stage>@<stage version>`,
    /// so a rendition cannot be passed off as its version, another stage's output or another
    /// stage version's. Fails if `stage` is not an id.
    pub fn rendition(&self, stage: &str, stage_version: u32) -> Result<VersionId> {
        validate_id("stage", stage)?;
        VersionId::new(format!("{}#{stage}@{stage_version}", self.0))
    }
}

/// What an exam document is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Kind {
    /// A written exam report (usually PDF).
    Report,
    /// An exam image (photo, scan, radiograph export).
    Image,
    /// Anything else attached to an exam.
    Attachment,
}

impl Kind {
    /// The stable name used in storage and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Report => "report",
            Kind::Image => "image",
            Kind::Attachment => "attachment",
        }
    }
}

impl std::str::FromStr for Kind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "report" => Ok(Kind::Report),
            "image" => Ok(Kind::Image),
            "attachment" => Ok(Kind::Attachment),
            other => Err(Error::InvalidInput(format!(
                "unknown kind {other:?} (report, image, attachment)"
            ))),
        }
    }
}

/// Where a version is in the processing pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ProcessingState {
    /// Stored; stages have not finished.
    Pending,
    /// Every configured stage succeeded and `file.processed` was published.
    Processed,
    /// A stage failed permanently (see the dead-letter topic).
    Failed,
}

impl ProcessingState {
    /// Stable name used in storage.
    pub fn as_str(self) -> &'static str {
        match self {
            ProcessingState::Pending => "pending",
            ProcessingState::Processed => "processed",
            ProcessingState::Failed => "failed",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "pending" => Ok(ProcessingState::Pending),
            "processed" => Ok(ProcessingState::Processed),
            "failed" => Ok(ProcessingState::Failed),
            other => Err(Error::bad_record(format!("unknown processing state {other:?}"))),
        }
    }
}

/// A derived artefact of a version (stamped PDF, thumbnail, extracted text), stored encrypted like
/// the original.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rendition {
    /// Stage that produced it (`stamp`, `thumbnail`, `text`).
    pub stage: String,
    /// Stage version, so a new stage release reprocesses.
    pub stage_version: u32,
    /// Blob key of the encrypted rendition.
    pub blob_key: String,
    /// Media type of the rendition.
    pub media_type: String,
    /// Plaintext size.
    pub size: u64,
    /// Hex SHA-256 of the plaintext.
    pub sha256: String,
    /// Encoded key block of the rendition's envelope (wrapped data keys). Stored with the version's
    /// metadata, never published in events.
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "key_block_b64")]
    pub key_block: Vec<u8>,
}

mod key_block_b64 {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

/// A version about to be committed: the blob is already written.
#[derive(Debug, Clone)]
pub struct NewVersion {
    /// Document id.
    pub document_id: String,
    /// Unique id of this version, fixed before the blob is written and bound into the envelope's
    /// encryption context (the ordinal number is only known at commit).
    pub version_id: VersionId,
    /// Patient the document belongs to.
    pub patient_id: String,
    /// Exam the document belongs to.
    pub exam_id: String,
    /// Document kind.
    pub kind: Kind,
    /// Media type of the plaintext.
    pub media_type: String,
    /// Plaintext size in bytes.
    pub size: u64,
    /// SHA-256 of the plaintext.
    pub sha256: [u8; 32],
    /// When the put started.
    pub created_at: Timestamp,
    /// Who put it.
    pub created_by: String,
    /// Blob key of the envelope.
    pub blob_key: String,
    /// Encoded key block (wrapped data keys), stored here rather than in the blob so that re-wrap
    /// and crypto-shredding never touch content.
    pub key_block: Vec<u8>,
}

/// One committed, immutable version of a document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRecord {
    /// Document id.
    pub document_id: String,
    /// Version number, 1-based, gap-free.
    pub version: u64,
    /// Unique id bound into the envelope's encryption context.
    pub version_id: VersionId,
    /// Patient id.
    pub patient_id: String,
    /// Exam id.
    pub exam_id: String,
    /// Document kind.
    pub kind: Kind,
    /// Media type of the plaintext.
    pub media_type: String,
    /// Plaintext size in bytes.
    pub size: u64,
    /// Hex SHA-256 of the plaintext.
    pub sha256: String,
    /// Commit time.
    pub created_at: Timestamp,
    /// Who committed it.
    pub created_by: String,
    /// Blob key of the envelope.
    pub blob_key: String,
    /// Encoded key block; empty once the version is crypto-shredded.
    #[serde(skip)]
    pub key_block: Vec<u8>,
    /// Processing state.
    pub state: ProcessingState,
    /// Renditions produced so far.
    pub renditions: Vec<Rendition>,
}

/// Document-level state: owner, deletion and retention.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentRecord {
    /// Document id.
    pub document_id: String,
    /// Patient id (fixed at the first version).
    pub patient_id: String,
    /// Exam id (fixed at the first version).
    pub exam_id: String,
    /// Kind (fixed at the first version).
    pub kind: Kind,
    /// Latest committed version.
    pub latest_version: u64,
    /// First version's commit time.
    pub created_at: Timestamp,
    /// Tombstone time, if soft-deleted.
    pub deleted_at: Option<Timestamp>,
    /// Who soft-deleted it.
    pub deleted_by: Option<String>,
    /// Legal hold: purge refused while set.
    pub legal_hold: bool,
    /// Retention: purge refused before this time.
    pub retain_until: Option<Timestamp>,
}

impl DocumentRecord {
    /// Why a crypto-shred at `now` is refused, if it is: a legal hold, or a retention date not
    /// reached. Every backend checks it inside the shred's own write.
    pub fn shred_refusal(&self, now: Timestamp) -> Option<String> {
        if self.legal_hold {
            Some("legal hold is set".into())
        } else {
            self.retain_until
                .filter(|t| *t > now)
                .map(|t| format!("retained until {}", t.to_rfc3339()))
        }
    }

    /// `Err(Deleted)` when the document is soft-deleted: no new version and no read of it. The
    /// store and every metadata backend check the tombstone through this one rule.
    pub fn ensure_live(&self) -> Result<()> {
        match self.deleted_at {
            Some(_) => Err(Error::Deleted {
                document: self.document_id.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Why a purge at `now` is refused, if it is.
    pub fn purge_refusal(&self, now: Timestamp) -> Option<String> {
        if self.deleted_at.is_none() {
            Some("delete the document before purging it".into())
        } else if self.legal_hold {
            Some("legal hold is set".into())
        } else {
            self.retain_until
                .filter(|t| *t > now)
                .map(|t| format!("retained until {}", t.to_rfc3339()))
        }
    }
}

/// An exam's results released to its patient (DESIGN §9). Recorded once: a second release of
/// the same exam keeps the first one's time and author.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExamRelease {
    /// Exam id.
    pub exam_id: String,
    /// The exam's patient.
    pub patient_id: String,
    /// When the results were released.
    pub released_at: Timestamp,
    /// Who released them: a user, or the exam service's event id.
    pub released_by: String,
}

/// An event waiting in the outbox, committed with the metadata change that caused it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// Monotonic sequence number within the store.
    pub seq: i64,
    /// Event id (the CloudEvents `id`).
    pub event_id: String,
    /// Event type, e.g. `file.uploaded`; also the topic.
    pub event_type: String,
    /// Partition key: the document id.
    pub key: String,
    /// The CloudEvents JSON document.
    pub payload: String,
    /// When it was recorded.
    pub created_at: Timestamp,
}

/// What a processing stage recorded for a version (the input of the `file.processed` join).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageResult {
    /// Stage name (`verify`, `stamp`, `thumbnail`, `text` …).
    pub stage: String,
    /// Stage version: a new release records anew, replacing the older result.
    pub stage_version: u32,
    /// Renditions the stage stored (they replace this stage's earlier renditions).
    #[serde(default)]
    pub renditions: Vec<Rendition>,
    /// Pages seen, for stages that read a document's pages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_count: Option<u32>,
    /// Characters of extracted text, for text stages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_length: Option<u64>,
    /// When it was recorded.
    pub recorded_at: Timestamp,
}

/// The state of a version's join after a stage recorded its result.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct JoinOutcome {
    /// This call completed the join: it marked the version processed and recorded the one
    /// `file.processed` outbox entry. Exactly one call per version sees `true`.
    pub completed_now: bool,
    /// Processing state after the call.
    pub state: ProcessingState,
    /// Required stages that have not recorded a result yet.
    pub missing: Vec<String>,
}
