//! The `index` stage: keeps the search index in step with the store.
//!
//! It consumes `file.processed` (a version's text is ready: it names the `text` rendition) and
//! `file.deleted`, reads what it indexes back through the store (so a version deleted, purged or
//! shredded in the meantime is removed, not indexed), and commits before it acknowledges: an
//! acknowledged event is searchable, and a crash before the commit redelivers it. Indexing is a
//! replace, so redelivery never duplicates.

use std::sync::Arc;

use async_trait::async_trait;
use docstore::{DocStore, Error, Identity, ProcessingState, VersionRecord};

use docstore_events::{CloudEvent, EventType};
use docstore_pipeline::join::stage_error;
use docstore_pipeline::runtime::{Stage, StageError};
use docstore_search::{IndexedVersion, SearchError, SearchIndex};

/// Most text indexed per version (the rest is cut at a character boundary).
pub const MAX_INDEXED_TEXT: usize = 8 << 20;

/// The index stage's consumer group unless a node names its own (each search node needs its own).
pub const DEFAULT_GROUP: &str = "docstore-index";

/// The `index` stage (see the module documentation).
pub struct Indexer {
    store: Arc<DocStore>,
    index: Arc<SearchIndex>,
    clinic: String,
    who: Identity,
}

impl Indexer {
    /// Indexes `store`'s processed versions into `index`, labelled with `clinic`.
    pub fn new(store: Arc<DocStore>, index: Arc<SearchIndex>, clinic: impl Into<String>) -> Self {
        Indexer {
            store,
            index,
            clinic: clinic.into(),
            who: Identity::new("service:index-worker"),
        }
    }

    /// Re-reads a document from the store and replaces its index entries: its readable versions
    /// (with their text, where a text rendition exists), or nothing if it is deleted or gone.
    /// Commits before returning.
    pub async fn refresh_document(&self, document_id: &str) -> Result<usize, StageError> {
        let versions = indexable_versions(&self.store, &self.who, document_id, &self.clinic).await?;
        let count = versions.len();
        let index = self.index.clone();
        let id = document_id.to_owned();
        tokio::task::spawn_blocking(move || {
            index.replace_document(&id, &versions)?;
            index.commit()
        })
        .await
        .map_err(|e| StageError::Transient(format!("index task: {e}")))?
        .map_err(search_error)?;
        Ok(count)
    }
}

fn search_error(e: SearchError) -> StageError {
    match e {
        SearchError::Query(m) => StageError::Permanent(m),
        other => StageError::Transient(other.to_string()),
    }
}

/// The versions of a document as the index should hold them: every processed version not
/// shredded, of a document not deleted, with its extracted text.
pub async fn indexable_versions(
    store: &DocStore,
    who: &Identity,
    document_id: &str,
    clinic: &str,
) -> Result<Vec<IndexedVersion>, StageError> {
    // Through the store's audited reads: the index worker sees metadata as any other caller does.
    let doc = match store.document(who, document_id).await {
        Ok(d) => d,
        Err(Error::NotFound { .. }) => return Ok(Vec::new()),
        Err(e) => return Err(stage_error(e)),
    };
    if doc.deleted_at.is_some() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for record in store.versions(who, document_id).await.map_err(stage_error)? {
        // Shredded versions are gone for good; versions still in processing are indexed when
        // their own file.processed arrives (until then the latest processed version stands).
        if record.key_block.is_empty() || record.state != ProcessingState::Processed {
            continue;
        }
        let text = version_text(store, who, &record).await?;
        out.push(IndexedVersion {
            document_id: record.document_id.clone(),
            version: record.version,
            patient_id: record.patient_id.clone(),
            exam_id: record.exam_id.clone(),
            kind: record.kind.as_str().to_owned(),
            clinic: clinic.to_owned(),
            created_at: record.created_at,
            text,
        });
    }
    Ok(out)
}

/// A version's extracted text ("" when it has no text rendition, e.g. an image without OCR).
async fn version_text(
    store: &DocStore,
    who: &Identity,
    record: &VersionRecord,
) -> Result<String, StageError> {
    if !record.renditions.iter().any(|r| r.stage == "text") {
        return Ok(String::new());
    }
    let bytes = store
        .get_rendition(who, &record.document_id, record.version, "text")
        .await
        .map_err(stage_error)?
        .read_all()
        .await
        .map_err(stage_error)?;
    let mut text = String::from_utf8_lossy(&bytes).into_owned();
    if text.len() > MAX_INDEXED_TEXT {
        let mut cut = MAX_INDEXED_TEXT;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    Ok(text)
}

#[async_trait]
impl Stage for Indexer {
    fn name(&self) -> &str {
        "index"
    }

    async fn handle(&self, event: &CloudEvent) -> Result<(), StageError> {
        let document_id = match &event.event_type {
            EventType::FileProcessed => {
                event
                    .file_processed()
                    .map_err(|e| StageError::Permanent(e.to_string()))?
                    .document_id
            }
            EventType::FileDeleted => {
                event
                    .file_deleted()
                    .map_err(|e| StageError::Permanent(e.to_string()))?
                    .document_id
            }
            _ => return Ok(()),
        };
        // Whatever the event says, the store is the truth: re-read the whole document.
        let n = self.refresh_document(&document_id).await?;
        tracing::debug!(document = %document_id, versions = n, "indexed");
        Ok(())
    }
}
