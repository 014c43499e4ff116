//! # docstore-events
//!
//! The event contract: CloudEvents 1.0 (structured JSON mode) for the clinic's event types,
//! built by the store's outbox (`docstore::outbox`) and decoded strictly into the same types by
//! every consumer. It depends on no other docstore crate.
//!
//! Every event on the bus is one JSON object with the required context attributes `specversion`
//! (`"1.0"`), `id`, `source`, `type`, plus `time`, `subject`, `datacontenttype` and `data`.
//! Extension attributes (e.g. `traceparent`) are kept. Decoding never panics and is bounded in size.
//!
//! ## Layout
//! One file: the event types ([`EventType`]), the envelope ([`CloudEvent`]) and each type's data
//! ([`FileUploaded`], [`FileProcessed`], [`FileDeleted`], [`ExamEvent`]). The wire form is
//! documented in docs/events.md, whose examples a test decodes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The `content-type` header of every event on the bus: structured content mode (CloudEvents
/// Kafka protocol binding §3.1), the whole event as JSON in the message value.
pub const STRUCTURED_CONTENT_TYPE: &str = "application/cloudevents+json; charset=UTF-8";

/// Largest event accepted, in bytes: events carry ids and digests, never content.
pub const MAX_EVENT_BYTES: usize = 256 * 1024;

/// `type` of the event recorded for every committed version.
pub const FILE_UPLOADED: &str = "file.uploaded";
/// `type` of the event recorded once per version when every configured stage has succeeded.
pub const FILE_PROCESSED: &str = "file.processed";
/// `type` of the event recorded when a document is deleted (tombstoned), restored or purged, or
/// a version crypto-shredded; `data.reason` says which.
pub const FILE_DELETED: &str = "file.deleted";
/// The topics a search node's index stage follows (its consumer group's positions cover these).
pub const INDEX_TOPICS: [&str; 2] = [FILE_PROCESSED, FILE_DELETED];

/// The event types of the clinic's architecture.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventType {
    /// `exam.created`
    ExamCreated,
    /// `exam.updated`
    ExamUpdated,
    /// `exam.completed`
    ExamCompleted,
    /// `exam.result.ready`
    ExamResultReady,
    /// `file.uploaded`: a version was committed.
    FileUploaded,
    /// `file.processed`: every stage succeeded for a version.
    FileProcessed,
    /// `file.deleted`
    FileDeleted,
    /// `account.*`: known to exist, ignored by the pipeline.
    Account(String),
}

impl EventType {
    /// The CloudEvents `type` string, which is also the topic name.
    pub fn as_str(&self) -> &str {
        match self {
            EventType::ExamCreated => "exam.created",
            EventType::ExamUpdated => "exam.updated",
            EventType::ExamCompleted => "exam.completed",
            EventType::ExamResultReady => "exam.result.ready",
            EventType::FileUploaded => FILE_UPLOADED,
            EventType::FileProcessed => FILE_PROCESSED,
            EventType::FileDeleted => FILE_DELETED,
            EventType::Account(t) => t,
        }
    }

    /// Parses a `type` attribute.
    pub fn parse(s: &str) -> Result<Self, DecodeError> {
        Ok(match s {
            "exam.created" => EventType::ExamCreated,
            "exam.updated" => EventType::ExamUpdated,
            "exam.completed" => EventType::ExamCompleted,
            "exam.result.ready" => EventType::ExamResultReady,
            FILE_UPLOADED => EventType::FileUploaded,
            FILE_PROCESSED => EventType::FileProcessed,
            FILE_DELETED => EventType::FileDeleted,
            t if t.starts_with("account.") && t.len() > "account.".len() => EventType::Account(t.to_owned()),
            other => return Err(DecodeError::UnknownType(truncate(other))),
        })
    }

    /// Whether the pipeline ignores this type (`account.*`).
    pub fn is_ignored(&self) -> bool {
        matches!(self, EventType::Account(_))
    }
}

/// Why bytes are not a valid event. Messages never echo payload content beyond short field names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Larger than [`MAX_EVENT_BYTES`].
    #[error("event of {0} bytes exceeds the limit")]
    TooLarge(usize),
    /// Not JSON (with the parser's line and column).
    #[error("not JSON (line {line}, column {column})")]
    NotJson {
        /// Line of the syntax error.
        line: usize,
        /// Column of the syntax error.
        column: usize,
    },
    /// JSON, but not an object.
    #[error("event is not a JSON object")]
    NotObject,
    /// A required attribute is missing or empty.
    #[error("missing required attribute {0}")]
    Missing(&'static str),
    /// An attribute has the wrong JSON type.
    #[error("attribute {0} has the wrong type")]
    WrongType(&'static str),
    /// `specversion` is not `1.0`.
    #[error("unsupported specversion {0:?}")]
    SpecVersion(String),
    /// `type` is not one of the known event types.
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    /// `data` does not match the schema of its event type.
    #[error("data of {event_type} is invalid: {reason}")]
    Data {
        /// The event type.
        event_type: String,
        /// What is wrong (field names only).
        reason: String,
    },
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

/// A decoded CloudEvent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CloudEvent {
    /// Always `1.0`.
    pub specversion: String,
    /// Unique per source; consumers deduplicate on it.
    pub id: String,
    /// URI-reference of the producer.
    pub source: String,
    /// Event type.
    #[serde(rename = "type", serialize_with = "ser_type")]
    pub event_type: EventType,
    /// RFC 3339 time of the occurrence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// Subject: the document (or exam) id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Content type of `data`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datacontenttype: Option<String>,
    /// The payload.
    pub data: Value,
    /// Extension attributes (`traceparent`, …).
    #[serde(flatten)]
    pub extensions: BTreeMap<String, Value>,
}

fn ser_type<S: serde::Serializer>(t: &EventType, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(t.as_str())
}

/// Data of `file.uploaded` (and the version part of other `file.*` events).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileUploaded {
    /// Document id.
    pub document_id: String,
    /// Version number.
    pub version: u64,
    /// Version UUID.
    pub version_id: String,
    /// Patient id.
    pub patient_id: String,
    /// Exam id.
    pub exam_id: String,
    /// Kind (`report`, `image`, `attachment`).
    pub kind: String,
    /// Media type.
    pub media_type: String,
    /// Plaintext size.
    pub size: u64,
    /// Hex SHA-256 of the plaintext.
    pub sha256: String,
}

/// Data of `file.processed`: the version, its renditions and what the stages found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileProcessed {
    /// Document id.
    pub document_id: String,
    /// Version number.
    pub version: u64,
    /// Version UUID.
    pub version_id: String,
    /// Patient id.
    pub patient_id: String,
    /// Exam id.
    pub exam_id: String,
    /// Kind (`report`, `image`, `attachment`).
    pub kind: String,
    /// Hex SHA-256 of the original's plaintext.
    pub sha256: String,
    /// Renditions (stage, stage version, blob key, media type, size, digest).
    pub renditions: Vec<Rendition>,
    /// Pages, if a stage counted them.
    pub page_count: Option<u32>,
    /// Characters of extracted text, if a stage extracted any.
    pub text_length: Option<u64>,
    /// Stage name → stage version that ran.
    pub stages: BTreeMap<String, u32>,
}

/// A rendition as `file.processed` names it: where it is and what it holds, never its keys
/// (wrapped keys stay in the store's metadata).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rendition {
    /// Stage that produced it (`stamp`, `thumbnail`, `text`).
    pub stage: String,
    /// Stage version.
    pub stage_version: u32,
    /// Blob key of the encrypted rendition.
    pub blob_key: String,
    /// Media type.
    pub media_type: String,
    /// Plaintext size.
    pub size: u64,
    /// Hex SHA-256 of the plaintext.
    pub sha256: String,
}

/// Data of `file.deleted`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDeleted {
    /// Document id.
    pub document_id: String,
    /// The version concerned; absent when the whole document is.
    #[serde(default)]
    pub version: Option<u64>,
    /// `deleted` (tombstone), `purged` or `shredded`.
    pub reason: String,
}

/// Data of the `exam.*` events (from the clinic's exam system). Only the ids are required; the
/// pipeline passes the rest through untouched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExamEvent {
    /// Exam id.
    pub exam_id: String,
    /// Patient id.
    pub patient_id: String,
    /// Everything else the exam system sent.
    #[serde(flatten)]
    pub rest: BTreeMap<String, Value>,
}

impl CloudEvent {
    /// A structured-mode event of `event_type` about `subject`, carrying `data` as JSON.
    pub fn new(
        id: impl Into<String>,
        source: impl Into<String>,
        event_type: EventType,
        time: impl Into<String>,
        subject: impl Into<String>,
        data: &impl Serialize,
    ) -> CloudEvent {
        CloudEvent {
            specversion: "1.0".into(),
            id: id.into(),
            source: source.into(),
            event_type,
            time: Some(time.into()),
            subject: Some(subject.into()),
            datacontenttype: Some("application/json".into()),
            // The data types here serialize to JSON objects without fail (strings, numbers, maps).
            data: serde_json::to_value(data).expect("event data serializes"),
            extensions: BTreeMap::new(),
        }
    }

    /// The event with the W3C `traceparent` extension set.
    pub fn with_traceparent(mut self, traceparent: impl Into<String>) -> CloudEvent {
        self.extensions
            .insert("traceparent".into(), Value::String(traceparent.into()));
        self
    }

    /// Decodes and validates one event.
    pub fn decode(bytes: &[u8]) -> Result<CloudEvent, DecodeError> {
        if bytes.len() > MAX_EVENT_BYTES {
            return Err(DecodeError::TooLarge(bytes.len()));
        }
        let value: Value = serde_json::from_slice(bytes).map_err(|e| DecodeError::NotJson {
            line: e.line(),
            column: e.column(),
        })?;
        let Value::Object(mut map) = value else {
            return Err(DecodeError::NotObject);
        };
        let mut required = |name: &'static str| -> Result<String, DecodeError> {
            match map.remove(name) {
                Some(Value::String(s)) if !s.is_empty() => Ok(s),
                Some(Value::String(_)) | None => Err(DecodeError::Missing(name)),
                Some(_) => Err(DecodeError::WrongType(name)),
            }
        };
        let specversion = required("specversion")?;
        if specversion != "1.0" {
            return Err(DecodeError::SpecVersion(truncate(&specversion)));
        }
        let id = required("id")?;
        let source = required("source")?;
        let event_type = EventType::parse(&required("type")?)?;
        let mut optional = |name: &'static str| -> Result<Option<String>, DecodeError> {
            match map.remove(name) {
                Some(Value::String(s)) => Ok(Some(s)),
                None | Some(Value::Null) => Ok(None),
                Some(_) => Err(DecodeError::WrongType(name)),
            }
        };
        let time = optional("time")?;
        let subject = optional("subject")?;
        let datacontenttype = optional("datacontenttype")?;
        let data = map.remove("data").unwrap_or(Value::Null);
        let event = CloudEvent {
            specversion,
            id,
            source,
            event_type,
            time,
            subject,
            datacontenttype,
            data,
            extensions: map.into_iter().collect(),
        };
        event.validate_data()?;
        Ok(event)
    }

    fn validate_data(&self) -> Result<(), DecodeError> {
        match self.event_type {
            EventType::FileUploaded => self.file_uploaded().map(drop),
            EventType::FileProcessed => self.file_processed().map(drop),
            EventType::FileDeleted => self.file_deleted().map(drop),
            EventType::ExamCreated
            | EventType::ExamUpdated
            | EventType::ExamCompleted
            | EventType::ExamResultReady => self.exam().map(drop),
            EventType::Account(_) => Ok(()),
        }
    }

    fn data_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, DecodeError> {
        serde_json::from_value(self.data.clone()).map_err(|e| DecodeError::Data {
            event_type: self.event_type.as_str().to_owned(),
            reason: e.to_string().chars().take(120).collect(),
        })
    }

    /// The `file.uploaded` payload.
    pub fn file_uploaded(&self) -> Result<FileUploaded, DecodeError> {
        self.data_as()
    }

    /// The `file.processed` payload.
    pub fn file_processed(&self) -> Result<FileProcessed, DecodeError> {
        self.data_as()
    }

    /// The `file.deleted` payload.
    pub fn file_deleted(&self) -> Result<FileDeleted, DecodeError> {
        self.data_as()
    }

    /// The payload of an `exam.*` event.
    pub fn exam(&self) -> Result<ExamEvent, DecodeError> {
        self.data_as()
    }

    /// The W3C `traceparent` extension, if any.
    pub fn traceparent(&self) -> Option<&str> {
        self.extensions.get("traceparent").and_then(Value::as_str)
    }

    /// Encodes the event as structured-mode JSON.
    pub fn encode(&self) -> Vec<u8> {
        self.to_json().into_bytes()
    }

    /// The same JSON as text (what the store's outbox keeps).
    pub fn to_json(&self) -> String {
        // Strings, numbers and maps with string keys: serialization cannot fail.
        serde_json::to_string(self).expect("serializable")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uploaded() -> Value {
        serde_json::json!({
            "specversion": "1.0", "id": "e1", "source": "urn:t", "type": "file.uploaded",
            "subject": "d1", "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "data": {"document_id": "d1", "version": 1, "version_id": "v", "patient_id": "p",
                     "exam_id": "e", "kind": "report", "media_type": "application/pdf", "size": 3,
                     "sha256": "ab"}
        })
    }

    #[test]
    fn decodes_and_round_trips() {
        let bytes = serde_json::to_vec(&uploaded()).unwrap();
        let ev = CloudEvent::decode(&bytes).unwrap();
        assert_eq!(ev.event_type, EventType::FileUploaded);
        assert_eq!(ev.file_uploaded().unwrap().version, 1);
        assert!(ev.traceparent().unwrap().starts_with("00-"));
        assert_eq!(CloudEvent::decode(&ev.encode()).unwrap(), ev);
    }

    /// Found by the `event_decode` fuzz target: a number too long for an integer is read as a
    /// float, and must re-encode to the same float (serde_json's `float_roundtrip`).
    #[test]
    fn numbers_round_trip_exactly() {
        let event = serde_json::to_string(&uploaded()).unwrap();
        let long = "2".to_owned() + &"1".repeat(128);
        let bytes = format!(r#"{{"n":{long},"x":0.1234567890123456789,{}"#, &event[1..]);
        let ev = CloudEvent::decode(bytes.as_bytes()).unwrap();
        assert_eq!(CloudEvent::decode(&ev.encode()).unwrap(), ev);
    }

    #[test]
    fn every_type_decodes_its_data() {
        let ev = |t: &str, data: Value| {
            let v = serde_json::json!({"specversion": "1.0", "id": "i", "source": "urn:t", "type": t, "data": data});
            CloudEvent::decode(&serde_json::to_vec(&v).unwrap())
        };
        let exam = ev(
            "exam.result.ready",
            serde_json::json!({"exam_id": "e1", "patient_id": "p1", "status": "final"}),
        )
        .unwrap();
        assert_eq!(exam.exam().unwrap().rest["status"], "final");
        assert!(matches!(
            ev("exam.created", serde_json::json!({"exam_id": "e1"})),
            Err(DecodeError::Data { .. })
        ));
        let deleted = ev(
            "file.deleted",
            serde_json::json!({"document_id": "d", "reason": "purged"}),
        )
        .unwrap();
        assert_eq!(deleted.file_deleted().unwrap().version, None);
        assert!(ev("account.created", serde_json::json!(null)).is_ok());
        assert!(matches!(
            ev("file.processed", serde_json::json!({"document_id": "d"})),
            Err(DecodeError::Data { .. })
        ));
    }

    #[test]
    fn rejects_malformed_events_with_typed_errors() {
        let with = |f: &dyn Fn(&mut serde_json::Map<String, Value>)| {
            let mut v = uploaded();
            f(v.as_object_mut().unwrap());
            CloudEvent::decode(&serde_json::to_vec(&v).unwrap())
        };
        assert!(matches!(
            CloudEvent::decode(b"not json"),
            Err(DecodeError::NotJson { .. })
        ));
        assert_eq!(CloudEvent::decode(b"[1]"), Err(DecodeError::NotObject));
        assert_eq!(
            with(&|m| {
                m.insert("specversion".into(), "0.3".into());
            }),
            Err(DecodeError::SpecVersion("0.3".into()))
        );
        assert_eq!(
            with(&|m| {
                m.remove("id");
            }),
            Err(DecodeError::Missing("id"))
        );
        assert_eq!(
            with(&|m| {
                m.insert("source".into(), 5.into());
            }),
            Err(DecodeError::WrongType("source"))
        );
        assert!(matches!(
            with(&|m| {
                m.insert("type".into(), "x.y".into());
            }),
            Err(DecodeError::UnknownType(_))
        ));
        assert!(matches!(
            with(&|m| {
                m["data"]["version"] = "one".into();
            }),
            Err(DecodeError::Data { .. })
        ));
        assert!(
            with(&|m| {
                m.insert("type".into(), "account.created".into());
            })
            .unwrap()
            .event_type
            .is_ignored()
        );
        let big = vec![b' '; MAX_EVENT_BYTES + 1];
        assert!(matches!(CloudEvent::decode(&big), Err(DecodeError::TooLarge(_))));
    }
}
