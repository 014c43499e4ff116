//! Processing stages, as [`crate::join::Processor`]s the worker runtime runs.
//!
//! Each reads a version through the store, works on the plaintext in memory (bounded by the
//! stage's limits), stores its output as an encrypted rendition and reports it for the join.
//! Every PDF passes [`preflight`] (structure, loops, bombs) before a renderer or extractor sees it.
//! CPU-bound work runs on blocking threads; third-party decoder panics are caught here.

mod columns;
pub mod extract;
mod fax;
pub mod index;
#[cfg(feature = "ocr")]
pub mod ocr;
pub mod preflight;
pub mod stamp;
pub mod thumbnail;

use async_trait::async_trait;
use docstore::{DocStore, Identity, RenditionSpec};
use zeroize::Zeroizing;

use crate::events::FileUploaded;
use crate::join::{Output, Processor, stage_error};
use crate::runtime::StageError;

/// Why [`bounded`] returned without the work's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aborted {
    /// The work panicked (caught).
    Panicked,
    /// The work did not finish within the bound; its thread is abandoned, not killed (counted in
    /// [`helper_threads`] until it ends).
    TimedOut,
    /// No thread was started: [`MAX_HELPER_THREADS`] are still running (abandoned ones
    /// included), or the OS refused one.
    NoThread,
}

/// Most helper threads of third-party parsers alive at once in a process. A timed-out parser
/// cannot be killed inside the process, so each looping file would otherwise keep one more
/// thread (and its plaintext copy) burning a core: past this cap new work is refused instead,
/// and the `parser_threads_*` metrics show it (restart the worker).
pub const MAX_HELPER_THREADS: usize = 32;

static HELPERS_ALIVE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static HELPERS_ABANDONED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// This process's parser helper threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HelperThreads {
    /// Alive now: at work, or timed out and still running.
    pub alive: usize,
    /// Timed out since the process started (each left running).
    pub abandoned: u64,
}

/// The helper threads' counts, for metrics.
pub fn helper_threads() -> HelperThreads {
    use std::sync::atomic::Ordering::Relaxed;
    HelperThreads {
        alive: HELPERS_ALIVE.load(Relaxed),
        abandoned: HELPERS_ABANDONED.load(Relaxed),
    }
}

/// A stage about to parse refuses, transiently, while every helper slot is taken (by parsers
/// that timed out and run on): the file is not at fault, and retries wait for slots to free.
fn helpers_available() -> Result<(), StageError> {
    if helper_threads().alive >= MAX_HELPER_THREADS {
        return Err(StageError::Transient(format!(
            "all {MAX_HELPER_THREADS} parser helper threads are busy or stuck; restart the worker if this lasts"
        )));
    }
    Ok(())
}

/// Gives the helper slot back when its thread ends, however it ends.
struct HelperSlot;

impl Drop for HelperSlot {
    fn drop(&mut self) {
        HELPERS_ALIVE.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Runs third-party parsing or rendering on a helper thread named `name`, catching panics, and
/// waits at most `limit`: a looping decoder cannot hold the caller past the bound, and at most
/// [`MAX_HELPER_THREADS`] such threads are alive at once.
pub fn bounded<T: Send + 'static>(
    name: &str,
    limit: std::time::Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Aborted> {
    use std::sync::atomic::Ordering::{AcqRel, Relaxed};
    HELPERS_ALIVE
        .fetch_update(AcqRel, Relaxed, |n| (n < MAX_HELPER_THREADS).then_some(n + 1))
        .map_err(|_| {
            tracing::error!(name, max = MAX_HELPER_THREADS, "parser helper threads exhausted");
            Aborted::NoThread
        })?;
    let slot = HelperSlot;
    let (tx, rx) = std::sync::mpsc::channel();
    // The caller's span (document, trace id) follows the work, so the panic hook's line names them.
    let span = tracing::Span::current();
    let started = std::thread::Builder::new().name(name.to_owned()).spawn(move || {
        let _slot = slot;
        let _in = span.enter();
        let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)));
    });
    // A refused spawn dropped the closure, and the slot with it.
    started.map_err(|_| Aborted::NoThread)?;
    match rx.recv_timeout(limit) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(_)) => Err(Aborted::Panicked),
        Err(_) => {
            HELPERS_ABANDONED.fetch_add(1, Relaxed);
            tracing::warn!(name, "parser timed out; its thread is left running");
            Err(Aborted::TimedOut)
        }
    }
}

/// Reads a version's plaintext whole, refusing (permanently) anything above `max` bytes.
async fn read_version(
    store: &DocStore,
    who: &Identity,
    file: &FileUploaded,
    max: usize,
) -> Result<Zeroizing<Vec<u8>>, StageError> {
    if file.size > max as u64 {
        return Err(StageError::Permanent(format!(
            "{} v{}: {} bytes exceeds this stage's limit of {max}",
            file.document_id, file.version, file.size
        )));
    }
    store
        .get(who, &file.document_id, Some(file.version))
        .await
        .map_err(stage_error)?
        .read_all()
        .await
        .map_err(stage_error)
}

/// A third-party parser's error as the fixed description `what`. The parser's own text can
/// quote bytes of the file ("Expected object header, found: …"), so it goes only to the
/// [`crate::observe::PARSER_DETAIL`] log target, which is off unless asked for, and never into
/// an error, a dead letter's headers or `docstore dlq list`.
pub(crate) fn described(what: &'static str, e: impl std::fmt::Display) -> String {
    tracing::debug!(target: "docstore_parser_detail", what, detail = %e, "third-party parser error");
    what.to_owned()
}

/// Whether a version announced as an image (`image/*`) is one, judged from its first bytes (one
/// frame decrypted): stages that skip images then need not decrypt a 12 MP photo whole. Anything
/// else is `false` without a read, so a PDF costs one read (one key unwrap), not two; the caller
/// reads it whole and judges the bytes as before.
async fn announced_image(store: &DocStore, who: &Identity, file: &FileUploaded) -> Result<bool, StageError> {
    if !file.media_type.starts_with("image/") || file.size == 0 {
        return Ok(false);
    }
    let head = store
        .get_range(who, &file.document_id, Some(file.version), 0..file.size.min(64))
        .await
        .map_err(stage_error)?;
    Ok(!head.starts_with(b"%PDF-") && thumbnail::image_format(&head).is_some())
}

/// Runs CPU-bound stage work off the async runtime; its error, or a failed task, is permanent
/// (bad input does not get better with retries).
async fn blocking<T, E>(
    file: &FileUploaded,
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, StageError>
where
    T: Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(work))
        .await
        .map_err(|e| StageError::Permanent(format!("stage task failed: {e}")))?
        .map_err(|e| StageError::Permanent(format!("{} v{}: {e}", file.document_id, file.version)))
}

/// Stores `body` as `stage`'s rendition of the version.
async fn store_rendition(
    store: &DocStore,
    who: &Identity,
    file: &FileUploaded,
    stage: &dyn Processor,
    media_type: &str,
    body: &[u8],
) -> Result<docstore::Rendition, StageError> {
    let spec = RenditionSpec {
        stage: stage.name().to_owned(),
        stage_version: stage.version(),
        media_type: media_type.to_owned(),
    };
    store
        .put_rendition(who, &file.document_id, file.version, &spec, body)
        .await
        .map_err(stage_error)
}

/// The `thumbnail` stage: a ~256 px PNG of each exam image or of page 1 of each PDF (see
/// [`thumbnail`]).
#[derive(Debug, Default, Clone)]
pub struct Thumbnailer {
    /// Decoding limits.
    pub limits: thumbnail::ThumbnailLimits,
}

#[async_trait]
impl Processor for Thumbnailer {
    fn name(&self) -> &str {
        "thumbnail"
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
        helpers_available()?;
        let bytes = read_version(store, who, file, self.limits.max_input).await?;
        let is_pdf = bytes.starts_with(b"%PDF-");
        if !is_pdf && thumbnail::image_format(&bytes).is_none() {
            return Err(StageError::Permanent(format!(
                "{} v{}: not a PDF or an image this stage reads ({})",
                file.document_id, file.version, file.media_type
            )));
        }
        let limits = self.limits;
        let thumb = blocking(file, move || {
            if is_pdf {
                thumbnail::thumbnail_pdf(&bytes, &limits)
            } else {
                thumbnail::thumbnail_image(&bytes, &limits)
            }
        })
        .await?;
        let rendition = store_rendition(store, who, file, self, "image/png", &thumb.png).await?;
        Ok(Output {
            renditions: vec![rendition],
            ..Output::default()
        })
    }
}

/// The `text` stage: the text of every PDF page (see [`extract`]), stored as a UTF-8 rendition
/// with pages separated by form feeds; reports page count and text length for `file.processed`.
/// With OCR (cargo feature `ocr`, [`Extractor::ocr`] set), pages without a text layer and images
/// are recognised by Tesseract; without it, images are recorded with no text.
#[derive(Debug, Default, Clone)]
pub struct Extractor {
    /// Extraction limits.
    pub limits: extract::ExtractLimits,
    /// OCR settings; `None` leaves scanned pages and images without text.
    #[cfg(feature = "ocr")]
    pub ocr: Option<ocr::OcrSettings>,
}

impl Extractor {
    fn ocr_enabled(&self) -> bool {
        #[cfg(feature = "ocr")]
        return self.ocr.is_some();
        #[cfg(not(feature = "ocr"))]
        false
    }
}

#[async_trait]
impl Processor for Extractor {
    fn name(&self) -> &str {
        "text"
    }

    /// 2 with OCR: turning OCR on makes versions processed without it eligible again.
    fn version(&self) -> u32 {
        if self.ocr_enabled() { 2 } else { 1 }
    }

    async fn process(
        &self,
        store: &DocStore,
        who: &Identity,
        file: &FileUploaded,
    ) -> Result<Output, StageError> {
        // Read without OCR, an image's text is not measured: null in file.processed, not a 0
        // that would claim the image holds no text (nor a page count the stage never took).
        let image_text = Output::default();
        if !self.ocr_enabled() && announced_image(store, who, file).await? {
            return Ok(image_text);
        }
        helpers_available()?;
        let bytes = read_version(store, who, file, self.limits.max_input).await?;
        let is_pdf = bytes.starts_with(b"%PDF-");
        if !is_pdf && thumbnail::image_format(&bytes).is_none() {
            return Err(StageError::Permanent(format!(
                "{} v{}: not a PDF or an image ({})",
                file.document_id, file.version, file.media_type
            )));
        }
        if !is_pdf && !self.ocr_enabled() {
            return Ok(image_text);
        }
        let limits = self.limits;
        #[cfg(feature = "ocr")]
        let ocr = self.ocr.clone();
        let text = blocking(file, move || -> Result<extract::ExtractedText, String> {
            #[cfg(feature = "ocr")]
            if let Some(settings) = ocr {
                if !is_pdf {
                    return ocr::ocr_image(&bytes, &settings).map_err(|e| e.to_string());
                }
                let mut text = extract::extract_pdf_text(&bytes, &limits).map_err(|e| e.to_string())?;
                match ocr::fill_scanned_pages(&bytes, &mut text, &settings) {
                    Ok(_) => {}
                    Err(e @ ocr::OcrError::Unavailable(_)) => return Err(e.to_string()),
                    // The text layer stands; the scanned pages stay empty.
                    Err(e) => tracing::warn!(error = %e, "OCR of pages without text failed"),
                }
                return Ok(text);
            }
            extract::extract_pdf_text(&bytes, &limits).map_err(|e| e.to_string())
        })
        .await?;
        let joined = Zeroizing::new(text.joined().into_bytes());
        let rendition = store_rendition(store, who, file, self, "text/plain; charset=utf-8", &joined).await?;
        Ok(Output {
            renditions: vec![rendition],
            page_count: Some(text.page_count as u32),
            text_length: Some(text.chars()),
        })
    }
}

/// The `stamp` stage: a release stamp on every page of each PDF (see [`stamp`]), stored as an
/// `application/pdf` rendition. Images are not stamped (recorded with no rendition).
#[derive(Debug, Clone)]
pub struct Stamper {
    /// Clinic name printed on the stamp.
    pub clinic: String,
    /// The configurable last line.
    pub text: String,
    /// Limits.
    pub limits: stamp::StampLimits,
}

impl Stamper {
    /// A stamper for `clinic`, with the default line.
    pub fn new(clinic: impl Into<String>) -> Self {
        Stamper {
            clinic: clinic.into(),
            text: "Documento liberado eletronicamente".into(),
            limits: stamp::StampLimits::default(),
        }
    }
}

/// Release time as printed on stamps: UTC, to the minute.
pub fn release_time(t: docstore::Timestamp) -> String {
    let s = t.to_rfc3339();
    format!("{} {} UTC", &s[..10], &s[11..16])
}

#[async_trait]
impl Processor for Stamper {
    fn name(&self) -> &str {
        "stamp"
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
        if announced_image(store, who, file).await? {
            return Ok(Output::default());
        }
        helpers_available()?;
        let bytes = read_version(store, who, file, self.limits.max_input).await?;
        if !bytes.starts_with(b"%PDF-") {
            if thumbnail::image_format(&bytes).is_some() {
                return Ok(Output::default());
            }
            return Err(StageError::Permanent(format!(
                "{} v{}: not a PDF or an image ({})",
                file.document_id, file.version, file.media_type
            )));
        }
        // The exam's release time when it is known (recorded on every metadata backend), so
        // the stamp a patient prints says when the results were released to them.
        let release = store
            .metadata()
            .exam_release(&file.exam_id)
            .await
            .map_err(stage_error)?
            .filter(|r| r.patient_id == file.patient_id);
        let info = stamp::StampInfo {
            clinic: self.clinic.clone(),
            exam_id: file.exam_id.clone(),
            patient_id: file.patient_id.clone(),
            time: release_time(
                release
                    .as_ref()
                    .map_or_else(docstore::Timestamp::now, |r| r.released_at),
            ),
            released: release.is_some(),
            text: self.text.clone(),
        };
        let limits = self.limits;
        let stamped = blocking(file, move || stamp::stamp_pdf(&bytes, &info, &limits)).await?;
        let rendition = store_rendition(store, who, file, self, "application/pdf", &stamped).await?;
        Ok(Output {
            renditions: vec![rendition],
            ..Output::default()
        })
    }
}
