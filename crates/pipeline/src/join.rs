//! Processing stages as the join sees them: each stage processes a `file.uploaded` version and
//! records its success through the store; the write that finds every configured stage done records
//! the version's one `file.processed` event in the outbox (see
//! [`docstore::meta::MetadataStore::record_stage`]), and the outbox relay publishes it.
//!
//! So no worker publishes `file.processed` itself: a worker killed at any point either recorded
//! its success (the join is decided in the database) or did not (the event is redelivered and the
//! stage runs again, idempotently).

use std::sync::Arc;

use async_trait::async_trait;
use docstore::{DocStore, Error, Identity, Rendition, StageResult, Timestamp};

use crate::runtime::{Stage, StageError};
use docstore_events::{CloudEvent, FileUploaded};

/// What a processor produced for one version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// Renditions stored (already written through the store, encrypted).
    pub renditions: Vec<Rendition>,
    /// Pages seen, if the processor reads pages.
    pub page_count: Option<u32>,
    /// Characters of text extracted, if any.
    pub text_length: Option<u64>,
}

/// One processing step over a stored version. Must be idempotent: outputs are keyed by
/// (document, version, stage, stage version), so a rerun overwrites identical output.
#[async_trait]
pub trait Processor: Send + Sync {
    /// Stage name, as listed in the join's required stages.
    fn name(&self) -> &str;
    /// Stage version; bump it when the output changes.
    fn version(&self) -> u32;
    /// Processes one version.
    async fn process(
        &self,
        store: &DocStore,
        who: &Identity,
        file: &FileUploaded,
    ) -> Result<Output, StageError>;
}

/// Maps a store error to retry-or-not ([`Error::is_transient`]).
pub fn stage_error(e: Error) -> StageError {
    if e.is_transient() {
        StageError::Transient(e.to_string())
    } else {
        StageError::Permanent(e.to_string())
    }
}

/// The version an event names, as the store records it: the record is loaded by the event's
/// `(document_id, version)`, and every other field of the event must equal the record's
/// (`version_id`, patient, exam, kind, media type, size, digest). A forged `file.uploaded` can
/// then neither make a stage stamp another patient's name on a document nor get a large version
/// read under a small claimed size: a mismatch, or a version the store does not hold, is
/// permanent (dead-lettered) and logged with the names of the fields, never their values.
pub async fn stored_version(
    store: &DocStore,
    who: &Identity,
    claimed: &FileUploaded,
) -> Result<FileUploaded, StageError> {
    let record = match store.version(who, &claimed.document_id, claimed.version).await {
        Ok(r) => r,
        Err(e @ Error::NotFound { .. }) => {
            tracing::warn!(document = %claimed.document_id, version = claimed.version,
                "event names a version the store does not hold");
            return Err(StageError::Permanent(e.to_string()));
        }
        Err(e) => return Err(stage_error(e)),
    };
    // The event the outbox records for this version: its mapping from record to event is the
    // one there is, so every field it carries is compared, by name.
    let (_, payload) = docstore::outbox::file_uploaded(&record);
    let stored = CloudEvent::decode(payload.as_bytes())
        .and_then(|e| e.file_uploaded())
        .map_err(|e| StageError::Permanent(format!("stored version as an event: {e}")))?;
    if stored != *claimed {
        let (ours, theirs) = (serde_json::to_value(&stored), serde_json::to_value(claimed));
        let fields = match (ours, theirs) {
            (Ok(serde_json::Value::Object(ours)), Ok(theirs)) => ours
                .iter()
                .filter(|(k, v)| theirs.get(k.as_str()) != Some(*v))
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            _ => "fields".to_owned(),
        };
        tracing::warn!(document = %claimed.document_id, version = claimed.version, fields,
            "event does not match the stored version");
        return Err(StageError::Permanent(format!(
            "{} v{}: the event's {fields} do not match the stored version",
            claimed.document_id, claimed.version
        )));
    }
    Ok(stored)
}

/// A [`Processor`] run as a runtime [`Stage`] that records its success for the join.
pub struct Joined<P> {
    processor: P,
    store: Arc<DocStore>,
    who: Identity,
    required: Vec<String>,
}

impl<P: Processor> Joined<P> {
    /// Runs `processor` against `store`; `required` lists every stage `file.processed` waits for.
    pub fn new(processor: P, store: Arc<DocStore>, required: Vec<String>) -> Self {
        let who = Identity::new(format!("service:{}-worker", processor.name()));
        Joined {
            processor,
            store,
            who,
            required,
        }
    }
}

#[async_trait]
impl<P: Processor> Stage for Joined<P> {
    fn name(&self) -> &str {
        self.processor.name()
    }

    async fn handle(&self, event: &CloudEvent) -> Result<(), StageError> {
        let claimed = event
            .file_uploaded()
            .map_err(|e| StageError::Permanent(e.to_string()))?;
        let file = stored_version(&self.store, &self.who, &claimed).await?;
        let out = self.processor.process(&self.store, &self.who, &file).await?;
        let result = StageResult {
            stage: self.processor.name().to_owned(),
            stage_version: self.processor.version(),
            renditions: out.renditions,
            page_count: out.page_count,
            text_length: out.text_length,
            recorded_at: Timestamp::now(),
        };
        let outcome = self
            .store
            .record_stage(&self.who, &file.document_id, file.version, result, &self.required)
            .await
            .map_err(stage_error)?;
        if outcome.completed_now {
            tracing::info!(
                stage = self.processor.name(),
                document = %file.document_id,
                version = file.version,
                "all stages done; file.processed recorded"
            );
        }
        Ok(())
    }
}

/// The `verify` stage: reads the whole version back through the store, which authenticates every
/// frame and checks the plaintext SHA-256 against the digest recorded at upload — an end-to-end
/// integrity scrub of each new version (blob, key, envelope) before it is announced as processed.
#[derive(Debug, Default, Clone, Copy)]
pub struct Verify;

#[async_trait]
impl Processor for Verify {
    fn name(&self) -> &str {
        "verify"
    }

    fn version(&self) -> u32 {
        1
    }

    async fn process(
        &self,
        store: &DocStore,
        who: &Identity,
        file: &FileUploaded,
    ) -> Result<Output, StageError> {
        let doc = store
            .get(who, &file.document_id, Some(file.version))
            .await
            .map_err(stage_error)?;
        if doc.record.version_id != *file.version_id {
            return Err(StageError::Permanent(format!(
                "{} v{}: event names version id {}, store has another",
                file.document_id, file.version, file.version_id
            )));
        }
        // The stream checks each frame and, at its end, the whole-document digest.
        let mut body = doc.into_stream();
        let mut size = 0u64;
        while let Some(chunk) = futures::StreamExt::next(&mut body).await {
            size += chunk.map_err(stage_error)?.len() as u64;
        }
        if size != file.size {
            return Err(StageError::Permanent(format!(
                "{} v{}: read {size} bytes, event says {}",
                file.document_id, file.version, file.size
            )));
        }
        Ok(Output::default())
    }
}
