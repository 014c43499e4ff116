//! [`DocStore`]: the public API. It composes a blob store, a metadata store, a key provider and an
//! audit sink, and owns the write order (blob first, then the metadata commit with its outbox entry).

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::BoxStream;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::io::{AsyncRead, AsyncReadExt};
use zeroize::Zeroizing;

use crate::audit::{AuditRecord, AuditSink, JsonlAudit};
use crate::blob::{BlobStore, ObjectBlobStore};
use crate::envelope::{self, EncryptionContext, Header, Layout, Opener, Sealer, TAG_LEN};
use crate::error::{Error, IntegrityError, Result};
use crate::keys::{self, KeyProvider, keyring::Keyring};
use crate::meta::{HoldChange, MetadataStore, sqlite::SqliteMetadata};
use crate::model::{
    DocumentId, DocumentRecord, ExamId, Identity, JoinOutcome, Kind, NewVersion, PatientId, Rendition,
    StageResult, Timestamp, VersionId, VersionRecord, validate_id,
};

/// Context key naming the document in every envelope and wrapped key.
pub const CTX_DOCUMENT: &str = "docstore.document";
/// Context key naming the version id in every envelope and wrapped key.
pub const CTX_VERSION_ID: &str = "docstore.version_id";
/// Prefix under which version envelopes are stored.
pub const BLOB_PREFIX: &str = "blobs";

/// What to store with a new version: built with [`PutRequest::new`] and its setters, so a new
/// field with a default does not break callers.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PutRequest {
    /// Existing document to add a version to; `None` creates a new document with a fresh id.
    pub document_id: Option<DocumentId>,
    /// Patient the document belongs to.
    pub patient_id: PatientId,
    /// Exam the document belongs to.
    pub exam_id: ExamId,
    /// Document kind.
    pub kind: Kind,
    /// Media type of the body, e.g. `application/pdf`.
    pub media_type: String,
    /// Compare-and-swap: commit only if the latest version is this (0: the document must be new).
    pub expected_version: Option<u64>,
}

impl PutRequest {
    /// A new document of `patient`'s `exam`: a report (`application/pdf`) unless the setters say
    /// otherwise, committed whatever the latest version is.
    pub fn new(patient: PatientId, exam: ExamId) -> Self {
        PutRequest {
            document_id: None,
            patient_id: patient,
            exam_id: exam,
            kind: Kind::Report,
            media_type: "application/pdf".into(),
            expected_version: None,
        }
    }

    /// Adds the version to `document` instead of creating a document.
    pub fn document(mut self, document: DocumentId) -> Self {
        self.document_id = Some(document);
        self
    }

    /// The document's kind.
    pub fn kind(mut self, kind: Kind) -> Self {
        self.kind = kind;
        self
    }

    /// The body's media type (`type/subtype`).
    pub fn media_type(mut self, media_type: impl Into<String>) -> Self {
        self.media_type = media_type.into();
        self
    }

    /// Commits only if the document's latest version is `version` (0: only if it is new).
    pub fn expected_version(mut self, version: u64) -> Self {
        self.expected_version = Some(version);
        self
    }
}

/// What a rendition is: which stage (and stage version) made it, and its media type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenditionSpec {
    /// Stage name.
    pub stage: String,
    /// Stage version.
    pub stage_version: u32,
    /// Media type of the rendition.
    pub media_type: String,
}

/// Blob key prefix of renditions.
pub const RENDITION_PREFIX: &str = "renditions";

/// A rendition read as a version of its own: the same checks, with its own blob, key block,
/// digest and encryption context.
fn rendition_as_version(record: &VersionRecord, r: &Rendition) -> Result<VersionRecord> {
    let mut v = record.clone();
    v.version_id = record.version_id.rendition(&r.stage, r.stage_version)?;
    v.blob_key = r.blob_key.clone();
    v.key_block = r.key_block.clone();
    v.size = r.size;
    v.sha256 = r.sha256.clone();
    v.media_type = r.media_type.clone();
    Ok(v)
}

/// Whether a key block holds exactly one key, wrapped by `provider` under `key_id`.
fn under_key(block: &[u8], provider: &str, key_id: &str, doc: &str, v: u64) -> Result<bool> {
    let keys = keys::decode_key_block(block).map_err(|k| Error::integrity(doc, v, k))?;
    Ok(matches!(keys.as_slice(), [only] if only.provider == provider && only.key_id == key_id))
}

/// Whether [`DocStore::seal_upload`] accepts an empty body. A version must have content; a
/// rendition may legitimately be empty (the text of a blank page or of a scan without OCR), and
/// the envelope holds an empty plaintext as one empty final frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    NonEmpty,
    MayBeEmpty,
}

/// What [`DocStore::seal_upload`] wrote.
struct Sealed {
    size: u64,
    sha256: [u8; 32],
    key_block: Vec<u8>,
}

/// Result of a [`DocStore::rewrap`] pass.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RewrapReport {
    /// Versions moved to the target key (content verified by digest after the move).
    pub rewrapped: usize,
    /// Versions already under the target key, left alone (a resumed pass skips them).
    pub already: usize,
    /// Renditions moved to the target key (each read back through it after the move).
    pub renditions_rewrapped: usize,
    /// Shredded versions, left alone.
    pub shredded: usize,
    /// Last document completed: pass it as `after` to resume an interrupted pass.
    pub last_document: Option<String>,
}

/// Result of a [`DocStore::gc`] pass.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct GcReport {
    /// Blobs listed.
    pub scanned: usize,
    /// Unreferenced blobs older than the grace period, deleted.
    pub removed: usize,
    /// Unreferenced blobs younger than the grace period, kept (a put may still commit them).
    pub young_orphans: usize,
}

/// Most bytes one [`DocStore::get_range`] returns (it holds them in memory).
pub const MAX_RANGE: u64 = 64 * 1024 * 1024;

/// A version being read: its record and a stream of authenticated plaintext.
pub struct Document {
    /// The version's metadata.
    pub record: VersionRecord,
    body: BoxStream<'static, Result<Bytes>>,
}

impl std::fmt::Debug for Document {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Document")
            .field("record", &self.record)
            .finish_non_exhaustive()
    }
}

impl Document {
    /// The plaintext as a stream of chunks. Every chunk has been authenticated; the stream ends with
    /// an error if a later frame fails, and the last chunk is held back until the whole-document
    /// SHA-256 matches, so a consumer that keeps only fully successful reads never keeps bad bytes.
    pub fn into_stream(self) -> BoxStream<'static, Result<Bytes>> {
        self.body
    }

    /// Reads the whole plaintext into memory (zeroized on drop).
    pub async fn read_all(mut self) -> Result<Zeroizing<Vec<u8>>> {
        let mut out = Zeroizing::new(Vec::with_capacity(self.record.size as usize));
        while let Some(chunk) = self.body.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }
}

/// File layout of the embedded default under one data directory.
#[derive(Debug, Clone)]
pub struct LocalLayout {
    /// The data directory.
    pub root: PathBuf,
}

impl LocalLayout {
    /// Layout rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalLayout { root: root.into() }
    }
    /// Folder holding blobs.
    pub fn objects(&self) -> PathBuf {
        self.root.join("objects")
    }
    /// SQLite metadata database.
    pub fn metadata(&self) -> PathBuf {
        self.root.join("metadata.sqlite")
    }
    /// Local keyring file.
    pub fn keyring(&self) -> PathBuf {
        self.root.join("keyring.json")
    }
    /// Audit log.
    pub fn audit(&self) -> PathBuf {
        self.root.join("audit.jsonl")
    }
}

/// Versioned, envelope-encrypted document storage.
#[derive(Debug, Clone)]
pub struct DocStore {
    blobs: Arc<dyn BlobStore>,
    meta: Arc<dyn MetadataStore>,
    keys: Arc<dyn KeyProvider>,
    audit: Arc<dyn AuditSink>,
    frame_size: u32,
    verified: Arc<VerifiedObjects>,
}

/// Objects whose whole plaintext already matched its record's SHA-256 in this process, by blob
/// key: the stored object's tag (ETag/version) and the digest it matched. A later full read of
/// the same object skips the hash (0.6 ms per MiB, most of a 1 MB GET's CPU) and keeps every
/// frame's GCM check; another object under the key, or another digest in the record, has another
/// entry and is hashed again. A backend that reports no tag is always hashed.
struct VerifiedObjects(std::sync::Mutex<lru::LruCache<String, String>>);

/// How many verified objects are remembered (about 200 bytes each).
const VERIFIED_OBJECTS: usize = 65_536;

impl VerifiedObjects {
    fn new() -> Self {
        let cap = std::num::NonZeroUsize::new(VERIFIED_OBJECTS).expect("non-zero");
        VerifiedObjects(std::sync::Mutex::new(lru::LruCache::new(cap)))
    }

    fn holds(&self, key: &str, seen: &str) -> bool {
        let mut cache = self.0.lock().unwrap_or_else(|p| p.into_inner());
        cache.get(key).is_some_and(|s| s == seen)
    }

    fn insert(&self, key: String, seen: String) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).put(key, seen);
    }
}

impl std::fmt::Debug for VerifiedObjects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedObjects").finish_non_exhaustive()
    }
}

/// Builds a [`DocStore`] from its four seams ([`DocStore::builder`]): each must be given, and an
/// optional frame size.
#[derive(Default)]
#[must_use]
pub struct DocStoreBuilder {
    blobs: Option<Arc<dyn BlobStore>>,
    meta: Option<Arc<dyn MetadataStore>>,
    keys: Option<Arc<dyn KeyProvider>>,
    audit: Option<Arc<dyn AuditSink>>,
    frame_size: Option<u32>,
}

impl std::fmt::Debug for DocStoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocStoreBuilder")
            .field("blobs", &self.blobs.is_some())
            .field("metadata", &self.meta.is_some())
            .field("keys", &self.keys.is_some())
            .field("audit", &self.audit.is_some())
            .field("frame_size", &self.frame_size)
            .finish()
    }
}

impl DocStoreBuilder {
    /// Where envelopes are stored.
    pub fn blobs(mut self, blobs: Arc<dyn BlobStore>) -> Self {
        self.blobs = Some(blobs);
        self
    }
    /// Where documents, versions and the outbox are recorded.
    pub fn metadata(mut self, meta: Arc<dyn MetadataStore>) -> Self {
        self.meta = Some(meta);
        self
    }
    /// Who wraps and unwraps data keys.
    pub fn keys(mut self, keys: Arc<dyn KeyProvider>) -> Self {
        self.keys = Some(keys);
        self
    }
    /// Where every access is recorded.
    pub fn audit(mut self, audit: Arc<dyn AuditSink>) -> Self {
        self.audit = Some(audit);
        self
    }
    /// Plaintext frame size of new versions (default 64 KiB).
    pub fn frame_size(mut self, frame_size: u32) -> Self {
        self.frame_size = Some(frame_size);
        self
    }
    /// The store; [`Error::InvalidInput`] names a seam left out or a frame size out of range.
    pub fn build(self) -> Result<DocStore> {
        let missing = |what: &str| Error::InvalidInput(format!("DocStore::builder(): no {what} given"));
        let store = DocStore::new(
            self.blobs.ok_or_else(|| missing("blob store"))?,
            self.meta.ok_or_else(|| missing("metadata store"))?,
            self.keys.ok_or_else(|| missing("key provider"))?,
            self.audit.ok_or_else(|| missing("audit sink"))?,
        );
        match self.frame_size {
            Some(size) => store.with_frame_size(size),
            None => Ok(store),
        }
    }
}

impl DocStore {
    /// A builder naming each seam ([`DocStoreBuilder`]); the same as [`DocStore::new`], with
    /// the parts named and the frame size optional.
    pub fn builder() -> DocStoreBuilder {
        DocStoreBuilder::default()
    }

    /// Composes a store from its parts.
    pub fn new(
        blobs: Arc<dyn BlobStore>,
        meta: Arc<dyn MetadataStore>,
        keys: Arc<dyn KeyProvider>,
        audit: Arc<dyn AuditSink>,
    ) -> Self {
        DocStore {
            blobs,
            meta,
            keys,
            audit,
            frame_size: envelope::DEFAULT_FRAME_SIZE,
            verified: Arc::new(VerifiedObjects::new()),
        }
    }

    /// Sets the plaintext frame size for new versions (existing envelopes keep theirs).
    pub fn with_frame_size(mut self, frame_size: u32) -> Result<Self> {
        if !(envelope::MIN_FRAME_SIZE..=envelope::MAX_FRAME_SIZE).contains(&frame_size) {
            return Err(Error::InvalidInput(format!(
                "frame size {frame_size} out of range"
            )));
        }
        self.frame_size = frame_size;
        Ok(self)
    }

    /// Creates the embedded default in `root`: a local object folder, SQLite, a local keyring (0600)
    /// and an audit log. Fails if `root` is already initialised.
    pub async fn init_local(root: &Path) -> Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        let layout = LocalLayout::new(root);
        if layout.keyring().exists() || layout.metadata().exists() {
            return Err(Error::InvalidInput(format!(
                "{} is already initialised",
                root.display()
            )));
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .map_err(|e| Error::io(root.display().to_string(), e))?;
        let keys = Keyring::create(&layout.keyring())?;
        let meta = SqliteMetadata::open(&layout.metadata(), true).await?;
        let blobs = ObjectBlobStore::local(&layout.objects())?;
        let audit = JsonlAudit::open(&layout.audit())?;
        Ok(DocStore::new(
            Arc::new(blobs),
            Arc::new(meta),
            Arc::new(keys),
            Arc::new(audit),
        ))
    }

    /// Opens the embedded default in `root`.
    pub async fn open_local(root: &Path) -> Result<Self> {
        let layout = LocalLayout::new(root);
        if !layout.keyring().exists() || !layout.metadata().exists() {
            return Err(Error::NotInitialized {
                path: root.to_owned(),
            });
        }
        let keys = Keyring::open(&layout.keyring())?;
        let meta = SqliteMetadata::open(&layout.metadata(), false).await?;
        let blobs = ObjectBlobStore::local(&layout.objects())?;
        let audit = JsonlAudit::open(&layout.audit())?;
        Ok(DocStore::new(
            Arc::new(blobs),
            Arc::new(meta),
            Arc::new(keys),
            Arc::new(audit),
        ))
    }

    /// The metadata store (for the outbox relay and the pipeline).
    pub fn metadata(&self) -> &Arc<dyn MetadataStore> {
        &self.meta
    }

    /// The blob store.
    pub fn blobs(&self) -> &Arc<dyn BlobStore> {
        &self.blobs
    }

    /// The key provider.
    pub fn keys(&self) -> &Arc<dyn KeyProvider> {
        &self.keys
    }

    /// The audit sink.
    pub fn audit_sink(&self) -> &Arc<dyn AuditSink> {
        &self.audit
    }

    /// The encryption context of a version.
    pub fn context(document_id: &str, version_id: &VersionId) -> EncryptionContext {
        EncryptionContext::new([(CTX_DOCUMENT, document_id), (CTX_VERSION_ID, version_id.as_str())])
    }

    async fn record(
        &self,
        who: &Identity,
        action: &str,
        document: Option<&str>,
        version: Option<u64>,
        outcome: &str,
        detail: Option<String>,
    ) -> Result<()> {
        let record = AuditRecord {
            at: Timestamp::now(),
            actor: who.subject.clone(),
            action: action.into(),
            document: document.map(str::to_owned),
            version,
            outcome: outcome.into(),
            detail,
        };
        if crate::audit::is_deferred() {
            self.audit.record_queued(record).await
        } else {
            self.audit.record(record).await
        }
    }

    /// Runs `op`, then writes its audit record; an operation whose record cannot be written fails.
    async fn audited<T>(
        &self,
        who: &Identity,
        action: &str,
        document: Option<&str>,
        op: impl Future<Output = Result<(T, Option<u64>, Option<String>)>>,
    ) -> Result<T> {
        match op.await {
            Ok((value, version, detail)) => {
                self.record(who, action, document, version, "ok", detail).await?;
                Ok(value)
            }
            Err(e) => {
                let version = match &e {
                    Error::NotFound { version, .. } => *version,
                    Error::Integrity { version, .. } if *version > 0 => Some(*version),
                    _ => None,
                };
                self.record(who, action, document, version, e.class(), None)
                    .await?;
                Err(e)
            }
        }
    }

    /// Stores `body` as the next version of a document and returns its record.
    ///
    /// The body streams through in O(frame) memory: read a frame, hash it, seal it, upload it. The
    /// blob goes under a fresh key first; only then is the version committed (with its outbox
    /// event), so a crash leaves at worst an orphan blob, never a record without content.
    pub async fn put<R: AsyncRead + Unpin + Send>(
        &self,
        who: &Identity,
        req: PutRequest,
        body: R,
    ) -> Result<VersionRecord> {
        let doc_id = req
            .document_id
            .clone()
            .map_or_else(|| uuid::Uuid::now_v7().to_string(), DocumentId::into_string);
        let outcome = self.put_inner(who, &doc_id, req, body).await;
        match outcome {
            Ok(record) => {
                self.record(who, "put", Some(&doc_id), Some(record.version), "ok", None)
                    .await?;
                Ok(record)
            }
            Err(e) => {
                self.record(who, "put", Some(&doc_id), None, e.class(), None)
                    .await?;
                Err(e)
            }
        }
    }

    async fn put_inner<R: AsyncRead + Unpin + Send>(
        &self,
        who: &Identity,
        doc_id: &str,
        req: PutRequest,
        body: R,
    ) -> Result<VersionRecord> {
        // The ids were checked when they were built (a fresh document id is a UUID).
        if req.media_type.is_empty() || req.media_type.len() > 255 || !req.media_type.contains('/') {
            return Err(Error::InvalidInput(
                "media type must look like type/subtype".into(),
            ));
        }
        let version_id = VersionId::generate();
        let blob_key = format!("{BLOB_PREFIX}/{doc_id}/{version_id}");
        let context = DocStore::context(doc_id, &version_id);
        let sealed = self
            .seal_upload(who, doc_id, &blob_key, context, body, Body::NonEmpty)
            .await?;
        let new = NewVersion {
            document_id: doc_id.to_owned(),
            version_id,
            patient_id: req.patient_id.into_string(),
            exam_id: req.exam_id.into_string(),
            kind: req.kind,
            media_type: req.media_type,
            size: sealed.size,
            sha256: sealed.sha256,
            created_at: Timestamp::now(),
            created_by: who.subject.clone(),
            blob_key: blob_key.clone(),
            key_block: sealed.key_block,
        };
        crate::failpoint::hit("before_commit").await;
        match self.meta.commit_version(new, req.expected_version).await {
            Ok(record) => {
                crate::failpoint::hit("after_commit").await;
                Ok(record)
            }
            Err(e) => {
                // The commit did not happen: the blob is ours alone to remove.
                let _ = self.blobs.delete(&blob_key).await;
                Err(e)
            }
        }
    }

    /// Seals `body` under a fresh data key bound to `context` and uploads it to `blob_key`,
    /// streaming in O(frame) memory: read a frame, hash it, seal it, upload it. An empty body is
    /// refused before anything is written unless `body` says it may be empty; a failed upload is
    /// aborted.
    async fn seal_upload<R: AsyncRead + Unpin + Send>(
        &self,
        who: &Identity,
        doc_id: &str,
        blob_key: &str,
        context: EncryptionContext,
        mut body: R,
        expect: Body,
    ) -> Result<Sealed> {
        let fs = self.frame_size as usize;
        let mut hasher = Sha256::new();
        let mut first = Zeroizing::new(Vec::with_capacity(fs + TAG_LEN));
        fill(&mut body, &mut first, fs).await?;
        if first.is_empty() && expect == Body::NonEmpty {
            return Err(Error::InvalidInput(
                "empty body: a version must have content".into(),
            ));
        }
        let (data_key, wrapped) = self.keys.generate_data_key(&context).await?;
        self.record(
            who,
            "key_generate",
            Some(doc_id),
            None,
            "ok",
            Some(format!("key_id={}", wrapped.key_id)),
        )
        .await?;
        let mut sealer = Sealer::with_random_id(&data_key, context, self.frame_size)
            .map_err(|k| Error::integrity(doc_id, 0, k))?;
        drop(data_key);
        let mut upload = self.blobs.upload(blob_key).await?;
        let streamed = async {
            upload
                .write(Bytes::copy_from_slice(sealer.header().as_bytes()))
                .await?;
            let mut size = 0u64;
            let mut pending = first;
            loop {
                hasher.update(&pending[..]);
                size += pending.len() as u64;
                let mut next = Zeroizing::new(Vec::with_capacity(fs + TAG_LEN));
                if pending.len() == fs {
                    fill(&mut body, &mut next, fs).await?;
                }
                let is_final = next.is_empty();
                sealer
                    .seal_frame(&mut pending, is_final)
                    .map_err(|k| Error::integrity(doc_id, 0, k))?;
                // Sealed bytes are ciphertext: hand the buffer over instead of copying it.
                upload.write(Bytes::from(std::mem::take(&mut *pending))).await?;
                if is_final {
                    return Ok::<u64, Error>(size);
                }
                pending = next;
            }
        }
        .await;
        let size = match streamed {
            Ok(size) => size,
            Err(e) => {
                // Best effort: an aborted upload leaves nothing visible; gc covers the rest.
                let _ = upload.abort().await;
                return Err(e);
            }
        };
        upload.finish().await?;
        Ok(Sealed {
            size,
            sha256: hasher.finalize().into(),
            key_block: keys::encode_key_block(&[wrapped]),
        })
    }

    /// Looks up a readable version: the document must exist and not be deleted.
    async fn readable(&self, doc_id: &str, version: Option<u64>) -> Result<VersionRecord> {
        self.meta.document(doc_id).await?.ensure_live()?;
        self.meta.version(doc_id, version).await
    }

    async fn opener_for(&self, who: &Identity, record: &VersionRecord, header: &Header) -> Result<Opener> {
        let (doc, v) = (record.document_id.as_str(), record.version);
        if record.key_block.is_empty() {
            return Err(Error::Shredded {
                document: doc.to_owned(),
                version: v,
            });
        }
        let context = DocStore::context(doc, &record.version_id);
        if header.context != context {
            return Err(Error::integrity(doc, v, IntegrityError::Context));
        }
        let unwrapped = keys::unwrap_key_block(self.keys.as_ref(), &record.key_block, &context, doc, v).await;
        let outcome = unwrapped.as_ref().map(|_| "ok").unwrap_or_else(|e| e.class());
        self.record(who, "key_unwrap", Some(doc), Some(v), outcome, None)
            .await?;
        Opener::new(header, &unwrapped?).map_err(|k| Error::integrity(doc, v, k))
    }

    /// Opens a version for streaming (the latest when `version` is `None`).
    pub async fn get(&self, who: &Identity, document_id: &str, version: Option<u64>) -> Result<Document> {
        self.audited(who, "get", Some(document_id), async {
            let record = self.readable(document_id, version).await?;
            let v = record.version;
            let doc = self.get_stream(who, record, "get").await?;
            Ok((doc, Some(v), None))
        })
        .await
    }

    /// Opens a version for streaming from records the caller already holds, fresh from
    /// [`DocStore::document`] and [`DocStore::version`]: no metadata is read again, so a service
    /// that has just checked access on those records saves two statements per download. Audited
    /// as `get`, like [`DocStore::get`]; a deleted document or a version of another document is
    /// refused.
    pub async fn open(
        &self,
        who: &Identity,
        doc: &DocumentRecord,
        record: VersionRecord,
    ) -> Result<Document> {
        self.audited(who, "get", Some(&doc.document_id), async {
            if record.document_id != doc.document_id {
                return Err(Error::InvalidInput(format!(
                    "version record of {} given for document {}",
                    record.document_id, doc.document_id
                )));
            }
            doc.ensure_live()?;
            let v = record.version;
            let read = self.get_stream(who, record, "get").await?;
            Ok((read, Some(v), None))
        })
        .await
    }

    /// Opens `record`'s blob for streaming. The read's end is audited too, as `<action>_end`:
    /// `ok` once the whole-document digest matched, the error's class when a frame or the digest
    /// failed (both durable before the caller sees the last chunk or the error), and `abandoned`
    /// when the reader dropped the stream early; the detail is the bytes handed out.
    async fn get_stream(
        &self,
        who: &Identity,
        record: VersionRecord,
        action: &'static str,
    ) -> Result<Document> {
        let (doc, v) = (record.document_id.clone(), record.version);
        let integrity = |k| Error::integrity(&doc, v, k);
        let blob = self.blobs.get(&record.blob_key).await?;
        let seen = blob.tag.as_ref().map(|t| format!("{t}/{}", record.sha256));
        let trusted = seen
            .as_deref()
            .is_some_and(|s| self.verified.holds(&record.blob_key, s));
        let mut stream = blob.stream;
        let mut buf = BytesMut::new();
        // Accumulate until the header parses; a header is at most a few KiB.
        let header = loop {
            if buf.len() >= Header::MIN_PREFIX {
                let len = Header::encoded_len(&buf).map_err(integrity)?;
                if buf.len() >= len {
                    break Header::parse(&buf).map_err(integrity)?.0;
                }
            }
            match stream.next().await {
                Some(chunk) => append(&mut buf, chunk?),
                None => return Err(integrity(IntegrityError::MalformedHeader("truncated header"))),
            }
        };
        let header_len = header.as_bytes().len();
        let _ = buf.split_to(header_len);
        let body_len = blob
            .size
            .checked_sub(header_len as u64)
            .ok_or_else(|| integrity(IntegrityError::Length(0)))?;
        let layout = header.layout(body_len).map_err(integrity)?;
        if layout.plaintext_len != record.size {
            return Err(integrity(IntegrityError::Size {
                expected: record.size,
                actual: layout.plaintext_len,
            }));
        }
        let opener = self.opener_for(who, &record, &header).await?;
        let expected_digest =
            hex::decode(&record.sha256).map_err(|_| Error::bad_record("bad stored sha256"))?;
        let state = FrameStream {
            stream,
            buf,
            opener,
            layout,
            next: 0,
            hasher: (!trusted).then(Sha256::new),
            expected_digest,
            remember: match seen {
                Some(seen) if !trusted => Some((self.verified.clone(), record.blob_key.clone(), seen)),
                _ => None,
            },
            document: doc.clone(),
            version: v,
            done: false,
            end: ReadEnd {
                audit: self.audit.clone(),
                actor: who.subject.clone(),
                action,
                bytes: 0,
                recorded: false,
            },
        };
        let body = futures::stream::unfold(state, |mut s| async move {
            if s.done {
                return None;
            }
            let item = s.next_frame().await;
            let item = match item {
                Ok(chunk) => {
                    s.end.bytes += chunk.len() as u64;
                    if s.done {
                        s.end_read("ok").await.map(|()| chunk)
                    } else {
                        Ok(chunk)
                    }
                }
                Err(e) => {
                    s.done = true;
                    // A failed audit write must not hide the read's own failure.
                    let _ = s.end_read(e.class()).await;
                    Err(e)
                }
            };
            Some((item, s))
        })
        .boxed();
        Ok(Document { record, body })
    }

    /// Reads plaintext bytes `range` of a version, decrypting only the frames that cover it, into
    /// memory: at most [`MAX_RANGE`] bytes (a longer read streams with [`DocStore::get`]).
    pub async fn get_range(
        &self,
        who: &Identity,
        document_id: &str,
        version: Option<u64>,
        range: Range<u64>,
    ) -> Result<Bytes> {
        let detail = format!("range={}..{}", range.start, range.end);
        self.audited(who, "get_range", Some(document_id), async {
            let record = self.readable(document_id, version).await?;
            if range.start >= range.end || range.end > record.size {
                return Err(Error::InvalidInput(format!(
                    "range {}..{} outside 0..{}",
                    range.start, range.end, record.size
                )));
            }
            // The range is decrypted into memory: above the cap, read with `get` (a stream).
            if range.end - range.start > MAX_RANGE {
                return Err(Error::InvalidInput(format!(
                    "range of {} bytes is over the {MAX_RANGE}-byte cap of a ranged read",
                    range.end - range.start
                )));
            }
            let v = record.version;
            let bytes = self.read_range(who, &record, range).await?;
            Ok((bytes, Some(v), Some(detail)))
        })
        .await
    }

    async fn read_range(&self, who: &Identity, record: &VersionRecord, range: Range<u64>) -> Result<Bytes> {
        let (doc, v) = (record.document_id.as_str(), record.version);
        let integrity = |k| Error::integrity(doc, v, k);
        let key = &record.blob_key;
        let mut head = self
            .blobs
            .get_range(key, 0..Header::MIN_PREFIX as u64)
            .await?
            .to_vec();
        let header_len = Header::encoded_len(&head).map_err(integrity)?;
        if header_len > head.len() {
            head = self.blobs.get_range(key, 0..header_len as u64).await?.to_vec();
        }
        let (header, _) = Header::parse(&head).map_err(integrity)?;
        let layout = Layout::from_plaintext_len(header.frame_size, record.size);
        let opener = self.opener_for(who, record, &header).await?;
        let (first, last) = layout.frames_for(range.start, range.end);
        let start = header_len as u64 + layout.frame_offset(first);
        let end =
            header_len as u64 + layout.frame_offset(last) + layout.frame_plaintext_len(last) + TAG_LEN as u64;
        let cipher = self.blobs.get_range(key, start..end).await?;
        if cipher.len() as u64 != end - start {
            return Err(integrity(IntegrityError::Length(cipher.len() as u64)));
        }
        let mut out = Zeroizing::new(Vec::with_capacity((range.end - range.start) as usize));
        let mut frame = Zeroizing::new(Vec::with_capacity(header.frame_size as usize + TAG_LEN));
        let mut offset = 0usize;
        for i in first..=last {
            let len = layout.frame_plaintext_len(i) as usize + TAG_LEN;
            frame.clear();
            frame.extend_from_slice(&cipher[offset..offset + len]);
            offset += len;
            opener
                .open_frame(i, i + 1 == layout.frames, &mut frame)
                .map_err(integrity)?;
            let frame_start = i * header.frame_size as u64;
            let lo = range.start.saturating_sub(frame_start) as usize;
            let hi = ((range.end - frame_start) as usize).min(frame.len());
            out.extend_from_slice(&frame[lo..hi]);
        }
        // The plaintext stays in a zeroizing buffer that the returned bytes own: it is wiped
        // when the last clone is dropped (an HTTP body's, say), with no copy.
        Ok(Bytes::from_owner(out))
    }

    /// One version's record (metadata only; no content is read).
    pub async fn version(&self, who: &Identity, document_id: &str, version: u64) -> Result<VersionRecord> {
        self.audited(who, "version", Some(document_id), async {
            let record = self.meta.version(document_id, Some(version)).await?;
            Ok((record, Some(version), None))
        })
        .await
    }

    /// Every version's record of a document, oldest first.
    pub async fn versions(&self, who: &Identity, document_id: &str) -> Result<Vec<VersionRecord>> {
        self.audited(who, "versions", Some(document_id), async {
            let doc = self.meta.document(document_id).await?;
            let versions = self.meta.versions(document_id).await?;
            Ok((versions, Some(doc.latest_version), None))
        })
        .await
    }

    /// Stores a rendition of a version (stamped PDF, thumbnail, text …), encrypted like an original
    /// under its own data key, bound to (document, version id, stage, stage version). Returns the
    /// [`Rendition`] to record with [`DocStore::record_stage`]; until then it is an orphan that
    /// [`DocStore::gc`] removes after the grace period, so a crashed stage leaves nothing behind.
    pub async fn put_rendition<R: AsyncRead + Unpin + Send>(
        &self,
        who: &Identity,
        document_id: &str,
        version: u64,
        spec: &RenditionSpec,
        body: R,
    ) -> Result<Rendition> {
        let (stage, stage_version, media_type) =
            (spec.stage.as_str(), spec.stage_version, spec.media_type.as_str());
        let detail = format!("stage={stage} v{stage_version}");
        self.audited(who, "put_rendition", Some(document_id), async {
            validate_id("stage", stage)?;
            let record = self.readable(document_id, Some(version)).await?;
            if record.key_block.is_empty() {
                return Err(Error::Shredded {
                    document: document_id.to_owned(),
                    version,
                });
            }
            let context_id = record.version_id.rendition(stage, stage_version)?;
            let blob_key = format!(
                "{RENDITION_PREFIX}/{document_id}/{}/{stage}-v{stage_version}-{}",
                record.version_id,
                uuid::Uuid::new_v4().simple()
            );
            let context = DocStore::context(document_id, &context_id);
            let sealed = self
                .seal_upload(who, document_id, &blob_key, context, body, Body::MayBeEmpty)
                .await?;
            let rendition = Rendition {
                stage: stage.to_owned(),
                stage_version,
                blob_key,
                media_type: media_type.to_owned(),
                size: sealed.size,
                sha256: hex::encode(sealed.sha256),
                key_block: sealed.key_block,
            };
            Ok((rendition, Some(version), Some(detail)))
        })
        .await
    }

    /// Opens the rendition a stage recorded for a version. Renditions are readable exactly while
    /// their version is: a deleted document or a shredded version refuses them too.
    pub async fn get_rendition(
        &self,
        who: &Identity,
        document_id: &str,
        version: u64,
        stage: &str,
    ) -> Result<Document> {
        self.audited(who, "get_rendition", Some(document_id), async {
            let record = self.readable(document_id, Some(version)).await?;
            if record.key_block.is_empty() {
                return Err(Error::Shredded {
                    document: document_id.to_owned(),
                    version,
                });
            }
            let r = record
                .renditions
                .iter()
                .find(|r| r.stage == stage)
                .cloned()
                .ok_or_else(|| Error::NotFound {
                    document: document_id.to_owned(),
                    version: Some(version),
                })?;
            let doc = self
                .get_stream(who, rendition_as_version(&record, &r)?, "get_rendition")
                .await?;
            Ok((doc, Some(version), Some(format!("stage={stage}"))))
        })
        .await
    }

    /// Records a processing stage's success for a version and completes the `file.processed` join
    /// when every stage in `required` has succeeded (see [`MetadataStore::record_stage`]): the
    /// `file.processed` event is recorded in the outbox exactly once per version.
    pub async fn record_stage(
        &self,
        who: &Identity,
        document_id: &str,
        version: u64,
        result: StageResult,
        required: &[String],
    ) -> Result<JoinOutcome> {
        let detail = format!("stage={} v{}", result.stage, result.stage_version);
        self.audited(who, "record_stage", Some(document_id), async {
            let outcome = self
                .meta
                .record_stage(document_id, version, result, required)
                .await?;
            let detail = if outcome.completed_now {
                format!("{detail}; processed")
            } else {
                detail
            };
            Ok((outcome, Some(version), Some(detail)))
        })
        .await
    }

    /// The release of an exam to its patient, if the clinic released it (metadata only; audited
    /// as `exam_release`, naming the exam in the record's detail).
    pub async fn exam_release(&self, who: &Identity, exam_id: &str) -> Result<Option<crate::ExamRelease>> {
        self.audited(who, "exam_release", None, async {
            let release = self.meta.exam_release(exam_id).await?;
            Ok((release, None, Some(format!("exam={exam_id}"))))
        })
        .await
    }

    /// The document-level record (owner, tombstone, hold).
    pub async fn document(&self, who: &Identity, document_id: &str) -> Result<DocumentRecord> {
        self.audited(who, "document", Some(document_id), async {
            Ok((self.meta.document(document_id).await?, None, None))
        })
        .await
    }

    /// Soft-deletes (tombstones) a document: reads fail until [`DocStore::restore`].
    pub async fn delete(&self, who: &Identity, document_id: &str) -> Result<DocumentRecord> {
        self.audited(who, "delete", Some(document_id), async {
            let doc = self
                .meta
                .set_tombstone(document_id, Some((Timestamp::now(), who.subject.clone())))
                .await?;
            Ok((doc, None, None))
        })
        .await
    }

    /// Removes the tombstone.
    pub async fn restore(&self, who: &Identity, document_id: &str) -> Result<DocumentRecord> {
        self.audited(who, "restore", Some(document_id), async {
            Ok((self.meta.set_tombstone(document_id, None).await?, None, None))
        })
        .await
    }

    /// Permanently removes a deleted document: refused while a legal hold or retention date applies.
    /// Metadata goes first, then the blobs, so a crash leaves orphans for `gc`, never dangling records.
    pub async fn purge(&self, who: &Identity, document_id: &str) -> Result<usize> {
        self.audited(who, "purge", Some(document_id), async {
            let keys = self.meta.purge(document_id, Timestamp::now()).await?;
            for key in &keys {
                if let Err(e) = self.blobs.delete(key).await {
                    tracing::warn!(error = %e, "purge left a blob for gc");
                }
            }
            Ok((keys.len(), None, Some(format!("blobs={}", keys.len()))))
        })
        .await
    }

    /// Sets or clears the legal hold and retention date.
    pub async fn set_hold(
        &self,
        who: &Identity,
        document_id: &str,
        change: HoldChange,
    ) -> Result<DocumentRecord> {
        let detail = format!(
            "legal_hold={:?} retain_until={:?}",
            change.legal_hold, change.retain_until
        );
        self.audited(who, "hold", Some(document_id), async {
            Ok((self.meta.set_hold(document_id, change).await?, None, Some(detail)))
        })
        .await
    }

    /// Documents of a patient.
    pub async fn documents_of_patient(
        &self,
        who: &Identity,
        patient_id: &str,
    ) -> Result<Vec<DocumentRecord>> {
        self.audited(who, "list_patient", None, async {
            validate_id("patient", patient_id)?;
            let docs = self.meta.documents_by_patient(patient_id).await?;
            Ok((docs, None, Some(format!("patient={patient_id}"))))
        })
        .await
    }

    /// Documents of an exam.
    pub async fn documents_of_exam(&self, who: &Identity, exam_id: &str) -> Result<Vec<DocumentRecord>> {
        self.audited(who, "list_exam", None, async {
            validate_id("exam", exam_id)?;
            let docs = self.meta.documents_by_exam(exam_id).await?;
            Ok((docs, None, Some(format!("exam={exam_id}"))))
        })
        .await
    }

    /// Moves versions to `target`'s current key without touching content: unwrap with this store's
    /// provider, wrap with `target`, swap the key block (compare-and-swap), then read the version
    /// back through `target` and check its SHA-256. Covers `documents` (every document when empty),
    /// in id order after `after`; versions already under the target key are skipped, so an
    /// interrupted pass can simply run again (or resume from [`RewrapReport::last_document`]).
    pub async fn rewrap(
        &self,
        who: &Identity,
        target: Arc<dyn KeyProvider>,
        documents: &[String],
        after: Option<&str>,
    ) -> Result<RewrapReport> {
        let mut report = RewrapReport::default();
        // The key id the target wraps under now (a KMS alias resolves to a key ARN), learnt once.
        let probe_ctx = EncryptionContext::new([("docstore.purpose", "rewrap-probe")]);
        let probe = target
            .encrypt_data_key(&Zeroizing::new([0u8; 32]), &probe_ctx)
            .await;
        let result = match probe {
            Ok(w) => {
                self.rewrap_inner::<REWRAP_PAGE>(who, &target, &w.key_id, documents, after, &mut report)
                    .await
            }
            Err(e) => Err(e),
        };
        let detail = format!(
            "target={} rewrapped={} already={} renditions={} shredded={}",
            target.name(),
            report.rewrapped,
            report.already,
            report.renditions_rewrapped,
            report.shredded
        );
        let outcome = result.as_ref().map(|_| "ok").unwrap_or_else(|e| e.class());
        self.record(who, "rewrap", None, None, outcome, Some(detail))
            .await?;
        result.map(|_| report)
    }

    /// Rewraps `documents` (all of them, `PAGE` listed at a time, when none are named).
    async fn rewrap_inner<const PAGE: usize>(
        &self,
        who: &Identity,
        target: &Arc<dyn KeyProvider>,
        target_key_id: &str,
        documents: &[String],
        after: Option<&str>,
        report: &mut RewrapReport,
    ) -> Result<()> {
        let mut cursor = after.map(str::to_owned);
        loop {
            let ids: Vec<String> = if documents.is_empty() {
                self.meta
                    .list_documents(cursor.as_deref(), PAGE)
                    .await?
                    .into_iter()
                    .map(|d| d.document_id)
                    .collect()
            } else {
                let mut ids: Vec<String> = documents
                    .iter()
                    .filter(|d| cursor.as_deref().is_none_or(|c| d.as_str() > c))
                    .cloned()
                    .collect();
                ids.sort();
                ids
            };
            if ids.is_empty() {
                return Ok(());
            }
            for id in &ids {
                for record in self.meta.versions(id).await? {
                    self.rewrap_version(who, target, target_key_id, &record, report)
                        .await?;
                }
                report.last_document = Some(id.clone());
                cursor = Some(id.clone());
            }
            if !documents.is_empty() {
                return Ok(());
            }
        }
    }

    async fn rewrap_version(
        &self,
        who: &Identity,
        target: &Arc<dyn KeyProvider>,
        target_key_id: &str,
        record: &VersionRecord,
        report: &mut RewrapReport,
    ) -> Result<()> {
        let (doc, v) = (record.document_id.as_str(), record.version);
        if record.key_block.is_empty() {
            report.shredded += 1;
            return Ok(());
        }
        // Already under the target key (a resumed pass): only its renditions may be left to move.
        if under_key(&record.key_block, target.name(), target_key_id, doc, v)? {
            report.already += 1;
        } else {
            let context = DocStore::context(doc, &record.version_id);
            let data_key =
                keys::unwrap_key_block(self.keys.as_ref(), &record.key_block, &context, doc, v).await?;
            let wrapped = target.encrypt_data_key(&data_key, &context).await?;
            drop(data_key);
            let block = keys::encode_key_block(&[wrapped]);
            self.meta
                .replace_key_block(doc, v, &record.key_block, &block)
                .await?;
            // Proof: the blob is untouched and reads back, through the new key, to the recorded
            // digest.
            let fresh = self.meta.version(doc, Some(v)).await?;
            self.with_keys(target)
                .get_stream(who, fresh, "rewrap_check")
                .await?
                .read_all()
                .await?;
            report.rewrapped += 1;
        }
        self.rewrap_renditions(who, target, target_key_id, doc, v, report)
            .await
    }

    /// Moves a version's rendition keys to `target` (one compare-and-swap of the rendition list;
    /// a stage recording new renditions meanwhile makes it re-read and try again).
    async fn rewrap_renditions(
        &self,
        who: &Identity,
        target: &Arc<dyn KeyProvider>,
        target_key_id: &str,
        doc: &str,
        v: u64,
        report: &mut RewrapReport,
    ) -> Result<()> {
        const ATTEMPTS: usize = 3;
        for attempt in 1..=ATTEMPTS {
            let record = self.meta.version(doc, Some(v)).await?;
            let mut renditions = record.renditions.clone();
            let mut moved = Vec::new();
            for (i, r) in renditions.iter_mut().enumerate() {
                if r.key_block.is_empty() || under_key(&r.key_block, target.name(), target_key_id, doc, v)? {
                    continue;
                }
                let context_id = record.version_id.rendition(&r.stage, r.stage_version)?;
                let context = DocStore::context(doc, &context_id);
                let data_key =
                    keys::unwrap_key_block(self.keys.as_ref(), &r.key_block, &context, doc, v).await?;
                let wrapped = target.encrypt_data_key(&data_key, &context).await?;
                drop(data_key);
                r.key_block = keys::encode_key_block(&[wrapped]);
                moved.push(i);
            }
            if moved.is_empty() {
                return Ok(());
            }
            match self
                .meta
                .replace_renditions(doc, v, &record.renditions, &renditions)
                .await
            {
                Ok(()) => {}
                Err(Error::Refused { .. }) if attempt < ATTEMPTS => continue,
                Err(e) => return Err(e),
            }
            let through_target = self.with_keys(target);
            for i in moved {
                let as_version = rendition_as_version(&record, &renditions[i])?;
                through_target
                    .get_stream(who, as_version, "rewrap_check")
                    .await?
                    .read_all()
                    .await?;
                report.renditions_rewrapped += 1;
            }
            return Ok(());
        }
        Ok(())
    }

    /// This store with another key provider (same blobs, metadata and audit).
    fn with_keys(&self, keys: &Arc<dyn KeyProvider>) -> DocStore {
        DocStore {
            keys: keys.clone(),
            ..self.clone()
        }
    }

    /// Crypto-shreds one version: destroys its wrapped data key, so no key can ever read it again.
    /// Refused under legal hold or retention. The version's record stays (with an empty key block)
    /// as evidence; reads fail with [`Error::Shredded`].
    pub async fn shred(&self, who: &Identity, document_id: &str, version: u64) -> Result<VersionRecord> {
        self.audited(who, "shred", Some(document_id), async {
            // Checked again inside the backend's write, against a hold set meanwhile.
            if let Some(reason) = self
                .meta
                .document(document_id)
                .await?
                .shred_refusal(Timestamp::now())
            {
                return Err(Error::Refused {
                    document: document_id.to_owned(),
                    reason,
                });
            }
            let record = self.meta.version(document_id, Some(version)).await?;
            if !record.key_block.is_empty() {
                // Empties the renditions' key blocks in the same write: no key unwraps their data
                // keys from a backup or a surviving blob.
                self.meta
                    .replace_key_block(document_id, version, &record.key_block, &[])
                    .await?;
            }
            // Their ciphertext goes too; get_rendition refuses a shredded version. Read after the
            // shred, so a rendition a stage recorded just before it is deleted as well.
            let shredded = self.meta.version(document_id, Some(version)).await?;
            for r in &shredded.renditions {
                self.blobs.delete(&r.blob_key).await?;
            }
            Ok((shredded, Some(version), None))
        })
        .await
    }

    /// Deletes blobs no metadata record references and older than `grace` (younger ones may belong
    /// to a put that has not committed yet): versions' blobs and renditions' (a stage that stored
    /// its output but never recorded it, or was refused because the version was shredded).
    pub async fn gc(&self, who: &Identity, grace: Duration) -> Result<GcReport> {
        self.audited(who, "gc", None, async {
            let cutoff = Timestamp(Timestamp::now().0 - grace.as_millis() as i64);
            let mut listed = self.blobs.list(BLOB_PREFIX).await?;
            listed.extend(self.blobs.list(RENDITION_PREFIX).await?);
            let keys: Vec<String> = listed.iter().map(|b| b.key.clone()).collect();
            let referenced = self.meta.referenced_blobs(&keys).await?;
            let mut report = GcReport {
                scanned: listed.len(),
                ..GcReport::default()
            };
            for blob in listed.iter().filter(|b| !referenced.contains(&b.key)) {
                if blob.last_modified <= cutoff {
                    self.blobs.delete(&blob.key).await?;
                    report.removed += 1;
                } else {
                    report.young_orphans += 1;
                }
            }
            let detail = format!("scanned={} removed={}", report.scanned, report.removed);
            Ok((report, None, Some(detail)))
        })
        .await
    }

    /// Reads the audit trail (newest `limit` records); the read itself is audited.
    pub async fn audit_log(
        &self,
        who: &Identity,
        document_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>> {
        let records = self.audit.read(document_id, limit).await?;
        self.record(who, "audit_read", document_id, None, "ok", None)
            .await?;
        Ok(records)
    }
}

/// Appends a blob chunk to the read buffer, taking it over without a copy when the buffer is
/// empty and the chunk unshared (a local read hands a whole small blob over as one chunk).
fn append(buf: &mut BytesMut, chunk: Bytes) {
    if buf.is_empty() {
        match chunk.try_into_mut() {
            Ok(owned) => *buf = owned,
            Err(shared) => buf.extend_from_slice(&shared),
        }
    } else {
        buf.extend_from_slice(&chunk);
    }
}

/// Reads until `buf` holds `want` bytes or the body ends.
async fn fill<R: AsyncRead + Unpin>(body: &mut R, buf: &mut Vec<u8>, want: usize) -> Result<()> {
    while buf.len() < want {
        let n = (&mut *body)
            .take((want - buf.len()) as u64)
            .read_to_end(buf)
            .await
            .map_err(|e| Error::io("upload body", e))?;
        if n == 0 {
            break;
        }
    }
    Ok(())
}

struct FrameStream {
    stream: BoxStream<'static, Result<Bytes>>,
    buf: BytesMut,
    opener: Opener,
    layout: Layout,
    next: u64,
    /// `None` when this object's digest was already verified (see [`VerifiedObjects`]).
    hasher: Option<Sha256>,
    expected_digest: Vec<u8>,
    /// Where to note the object once its digest matched.
    remember: Option<(Arc<VerifiedObjects>, String, String)>,
    document: String,
    version: u64,
    done: bool,
    end: ReadEnd,
}

/// What the audit needs to record a streamed read's end.
struct ReadEnd {
    audit: Arc<dyn AuditSink>,
    actor: String,
    action: &'static str,
    bytes: u64,
    recorded: bool,
}

impl ReadEnd {
    fn record(&mut self, document: &str, version: u64, outcome: &str) -> AuditRecord {
        self.recorded = true;
        AuditRecord {
            at: Timestamp::now(),
            actor: self.actor.clone(),
            action: format!("{}_end", self.action),
            document: Some(document.to_owned()),
            version: Some(version),
            outcome: outcome.into(),
            detail: Some(format!("bytes={}", self.bytes)),
        }
    }
}

impl Drop for FrameStream {
    fn drop(&mut self) {
        if self.end.recorded {
            return;
        }
        // Dropped before its end (a client that went away): queued from a task, since a drop
        // cannot wait; with no runtime left (process exit) there is nowhere to write it.
        let record = self.end.record(&self.document, self.version, "abandoned");
        let audit = self.end.audit.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if audit.record_queued(record).await.is_err() {
                    tracing::warn!("audit record of an abandoned read not written");
                }
            });
        }
    }
}

impl FrameStream {
    /// Audits the read's end, durably before the last chunk or the error is handed out (the
    /// audit file's group commit shares one fsync among concurrent readers).
    async fn end_read(&mut self, outcome: &str) -> Result<()> {
        let record = self.end.record(&self.document, self.version, outcome);
        self.end.audit.record(record).await
    }

    async fn next_frame(&mut self) -> Result<Bytes> {
        let integrity = |s: &Self, k| Error::integrity(&s.document, s.version, k);
        let index = self.next;
        let is_final = index + 1 == self.layout.frames;
        let need = self.layout.frame_plaintext_len(index) as usize + TAG_LEN;
        while self.buf.len() < need {
            match self.stream.next().await {
                Some(chunk) => append(&mut self.buf, chunk?),
                None => return Err(integrity(self, IntegrityError::Length(self.buf.len() as u64))),
            }
        }
        // Opened in place: the plaintext handed out is this buffer, not a copy of it (a copy
        // would leave the caller's bytes as unzeroized as these, at twice the memory traffic).
        let mut frame = self.buf.split_to(need);
        let split = need - TAG_LEN;
        let tag: [u8; TAG_LEN] = frame[split..].try_into().expect("tag length");
        frame.truncate(split);
        self.opener
            .open_in_place(index, is_final, &mut frame, &tag)
            .map_err(|k| integrity(self, k))?;
        if let Some(h) = self.hasher.as_mut() {
            h.update(&frame[..]);
        }
        self.next += 1;
        if is_final {
            self.done = true;
            if !self.buf.is_empty() || self.stream.next().await.is_some() {
                return Err(integrity(self, IntegrityError::Length(self.buf.len() as u64)));
            }
            if let Some(hasher) = self.hasher.take() {
                let digest = hasher.finalize();
                if !bool::from(digest.as_slice().ct_eq(&self.expected_digest)) {
                    return Err(integrity(self, IntegrityError::Digest));
                }
                if let Some((cache, key, seen)) = self.remember.take() {
                    cache.insert(key, seen);
                }
            }
        }
        Ok(frame.freeze())
    }
}

/// Documents listed at a time by a rewrap of the whole store.
const REWRAP_PAGE: usize = 500;

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> PutRequest {
        PutRequest::new(
            PatientId::new("pat-unit").unwrap(),
            ExamId::new("exam-unit").unwrap(),
        )
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
    }

    #[test]
    fn a_ranged_read_holds_at_most_64_mib() {
        assert_eq!(MAX_RANGE, 1 << 26);
    }

    #[test]
    fn the_verified_cache_holds_a_key_under_the_tag_it_was_seen_with() {
        let cache = VerifiedObjects::new();
        assert!(!cache.holds("blobs/a", "etag-1/sha"));
        cache.insert("blobs/a".into(), "etag-1/sha".into());
        assert!(cache.holds("blobs/a", "etag-1/sha"));
        assert!(
            !cache.holds("blobs/a", "etag-2/sha"),
            "another object under the key"
        );
        assert!(!cache.holds("blobs/b", "etag-1/sha"));
        assert_eq!(format!("{cache:?}"), "VerifiedObjects { .. }");
    }

    #[tokio::test]
    async fn a_full_read_remembers_the_object_it_verified() {
        let dir = tempfile::tempdir().unwrap();
        let store = DocStore::init_local(&dir.path().join("data")).await.unwrap();
        let who = Identity::new("staff:unit");
        let v = store.put(&who, request(), &pattern(3000, 1)[..]).await.unwrap();
        let tag = store
            .blobs
            .get(&v.blob_key)
            .await
            .unwrap()
            .tag
            .expect("a local tag");
        let seen = format!("{tag}/{}", v.sha256);
        assert!(!store.verified.holds(&v.blob_key, &seen));
        let read = store.get(&who, &v.document_id, None).await.unwrap();
        assert_eq!(read.read_all().await.unwrap()[..], pattern(3000, 1)[..]);
        assert!(store.verified.holds(&v.blob_key, &seen));
    }

    #[tokio::test]
    async fn fill_reads_exactly_what_is_wanted() {
        let body = pattern(100, 3);
        let mut reader = &body[..];
        let mut buf = body[..10].to_vec();
        fill(&mut reader, &mut buf, 50).await.unwrap();
        assert_eq!(buf.len(), 50);
        assert_eq!(&buf[10..], &body[..40]);
        fill(&mut reader, &mut buf, 200).await.unwrap();
        assert_eq!(buf.len(), 110, "the body ended first");
    }

    #[tokio::test]
    async fn a_whole_store_rewrap_walks_every_page() {
        let dir = tempfile::tempdir().unwrap();
        let store = DocStore::init_local(&dir.path().join("data")).await.unwrap();
        let who = Identity::new("staff:unit");
        for i in 0..5 {
            store.put(&who, request(), &pattern(100, i)[..]).await.unwrap();
        }
        let target: Arc<dyn KeyProvider> = Arc::new(Keyring::create(&dir.path().join("t.json")).unwrap());
        let ctx = EncryptionContext::new([("docstore.purpose", "rewrap-probe")]);
        let probe = target
            .encrypt_data_key(&Zeroizing::new([0u8; 32]), &ctx)
            .await
            .unwrap();
        let mut report = RewrapReport::default();
        store
            .rewrap_inner::<2>(&who, &target, &probe.key_id, &[], None, &mut report)
            .await
            .unwrap();
        assert_eq!(report.rewrapped, 5, "{report:?}");
    }
}
