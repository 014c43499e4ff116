//! # docstore-stages
//!
//! The processing stages, as [`docstore_pipeline::join::Processor`]s the worker runtime runs.
//!
//! Each reads a version through the store, works on the plaintext in memory (bounded by the
//! stage's limits), stores its output as an encrypted rendition and reports it for the join.
//! Every PDF passes [`preflight`] (structure, loops, bombs) before a renderer or extractor sees it.
//! CPU-bound work runs on blocking threads; third-party decoder panics are caught here.
//!
//! Each stage sits behind its cargo feature, and with it the parsers only it needs, so a binary
//! links only the decoders of the stages it runs (the `verify` worker links none).
//!
//! ## Layout
//! - `lib.rs`: the [`Thumbnailer`], [`Extractor`] and [`Stamper`] processors and what they share
//!   (reading a version under a size limit, storing a rendition, parser errors kept out of logs);
//! - [`preflight`]: the PDF structure check every PDF stage runs first (lopdf);
//! - [`thumbnail`] (feature `thumbnail`): page 1 or the image at ~256 px (hayro, image,
//!   fast_image_resize, jpeg-decoder, tiff); `fax.rs`: CCITT fax TIFFs (hayro-ccitt);
//! - [`extract`] (feature `text`): the text of every page (pdf_oxide, pdf-extract as fallback);
//!   `columns.rs`: reading order of multi-column pages;
//! - [`ocr`] (feature `ocr`): Tesseract for pages without a text layer and for images;
//! - [`stamp`] (feature `stamp`): the release stamp on every page (lopdf);
//! - [`index`] (feature `index`): the search index stage ([`docstore_search`]).
//!
//! The bounded helper threads the parsers run on are [`docstore_pipeline::bounded`], re-exported
//! here.

#[cfg(feature = "text")]
mod columns;
#[cfg(feature = "text")]
pub mod extract;
#[cfg(feature = "thumbnail")]
mod fax;
#[cfg(feature = "index")]
pub mod index;
#[cfg(feature = "ocr")]
pub mod ocr;
#[cfg(any(feature = "thumbnail", feature = "text", feature = "stamp"))]
pub mod preflight;
#[cfg(feature = "stamp")]
pub mod stamp;
#[cfg(feature = "thumbnail")]
pub mod thumbnail;

#[cfg(any(feature = "thumbnail", feature = "text", feature = "stamp"))]
use async_trait::async_trait;
#[cfg(any(feature = "thumbnail", feature = "text", feature = "stamp"))]
use docstore::{DocStore, Identity, RenditionSpec};
#[cfg(any(feature = "thumbnail", feature = "text", feature = "stamp"))]
use docstore_events::FileUploaded;
#[cfg(any(feature = "thumbnail", feature = "text", feature = "stamp"))]
use docstore_pipeline::bounded::helpers_available;
pub use docstore_pipeline::bounded::{Aborted, HelperThreads, MAX_HELPER_THREADS, bounded, helper_threads};
#[cfg(any(feature = "thumbnail", feature = "text", feature = "stamp"))]
use docstore_pipeline::join::{Output, Processor, stage_error};
#[cfg(any(feature = "thumbnail", feature = "text", feature = "stamp"))]
use docstore_pipeline::runtime::StageError;
#[cfg(any(feature = "thumbnail", feature = "text", feature = "stamp"))]
use zeroize::Zeroizing;

#[cfg(any(feature = "thumbnail", feature = "text", feature = "stamp"))]
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

#[cfg(any(feature = "thumbnail", feature = "text", feature = "stamp"))]
/// What the stages read: a PDF, or an image in a format they decode.
enum Readable {
    Pdf(Zeroizing<Vec<u8>>),
    // The stamp stage skips images: built with it alone, nothing reads an image's bytes.
    Image(
        #[cfg_attr(not(any(feature = "thumbnail", feature = "text")), allow(dead_code))] Zeroizing<Vec<u8>>,
    ),
}

#[cfg(any(feature = "thumbnail", feature = "text", feature = "stamp"))]
/// The preamble every content stage shares: its helper threads available, the version read whole
/// (within `max`), and told a PDF from an image by its bytes (not its announced media type);
/// anything else is refused permanently.
async fn read_readable(
    store: &DocStore,
    who: &Identity,
    file: &FileUploaded,
    max: usize,
) -> Result<Readable, StageError> {
    helpers_available()?;
    let bytes = read_version(store, who, file, max).await?;
    if bytes.starts_with(b"%PDF-") {
        Ok(Readable::Pdf(bytes))
    } else if image_format(&bytes).is_some() {
        Ok(Readable::Image(bytes))
    } else {
        Err(StageError::Permanent(format!(
            "{} v{}: not a PDF or an image this stage reads ({})",
            file.document_id, file.version, file.media_type
        )))
    }
}

#[cfg(any(feature = "thumbnail", feature = "text", feature = "stamp"))]
/// A third-party parser's error as the fixed description `what`. The parser's own text can
/// quote bytes of the file ("Expected object header, found: …"), so it goes only to the
/// [`docstore_pipeline::observe::PARSER_DETAIL`] log target, which is off unless asked for, and never into
/// an error, a dead letter's headers or `docstore dlq list`.
pub(crate) fn described(what: &'static str, e: impl std::fmt::Display) -> String {
    tracing::debug!(target: "docstore_parser_detail", what, detail = %e, "third-party parser error");
    what.to_owned()
}

/// Image formats the stages read, by magic bytes (a PDF is none of them).
#[cfg(any(feature = "thumbnail", feature = "text", feature = "stamp"))]
pub fn image_format(bytes: &[u8]) -> Option<image::ImageFormat> {
    use image::ImageFormat;
    match image::guess_format(bytes).ok()? {
        f @ (ImageFormat::Jpeg
        | ImageFormat::Png
        | ImageFormat::Tiff
        | ImageFormat::WebP
        | ImageFormat::Gif
        | ImageFormat::Bmp) => Some(f),
        _ => None,
    }
}

#[cfg(any(feature = "text", feature = "stamp"))]
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
    Ok(!head.starts_with(b"%PDF-") && image_format(&head).is_some())
}

#[cfg(any(feature = "thumbnail", feature = "text", feature = "stamp"))]
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

#[cfg(any(feature = "thumbnail", feature = "text", feature = "stamp"))]
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

#[cfg(feature = "thumbnail")]
/// The `thumbnail` stage: a ~256 px PNG of each exam image or of page 1 of each PDF (see
/// [`thumbnail`]).
#[derive(Debug, Default, Clone)]
pub struct Thumbnailer {
    /// Decoding limits.
    pub limits: thumbnail::ThumbnailLimits,
}

#[cfg(feature = "thumbnail")]
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
        let (bytes, is_pdf) = match read_readable(store, who, file, self.limits.max_input).await? {
            Readable::Pdf(b) => (b, true),
            Readable::Image(b) => (b, false),
        };
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

#[cfg(feature = "text")]
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

#[cfg(feature = "text")]
impl Extractor {
    fn ocr_enabled(&self) -> bool {
        #[cfg(feature = "ocr")]
        return self.ocr.is_some();
        #[cfg(not(feature = "ocr"))]
        false
    }
}

#[cfg(feature = "text")]
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
        let (bytes, is_pdf) = match read_readable(store, who, file, self.limits.max_input).await? {
            Readable::Pdf(b) => (b, true),
            Readable::Image(b) => (b, false),
        };
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

#[cfg(feature = "stamp")]
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

#[cfg(feature = "stamp")]
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

#[cfg(feature = "stamp")]
/// Release time as printed on stamps: UTC, to the minute.
pub fn release_time(t: docstore::Timestamp) -> String {
    let s = t.to_rfc3339();
    format!("{} {} UTC", &s[..10], &s[11..16])
}

#[cfg(feature = "stamp")]
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
        // Images are not stamped (nor a version's file that only claims to be one).
        let Readable::Pdf(bytes) = read_readable(store, who, file, self.limits.max_input).await? else {
            return Ok(Output::default());
        };
        // The exam's release time when it is known (recorded on every metadata backend), so
        // the stamp a patient prints says when the results were released to them.
        let release = store
            .exam_release(who, &file.exam_id)
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
