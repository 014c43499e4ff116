//! Text of each PDF page (`pdf_oxide`), for search and for the `file.processed` text length.
//!
//! The text rendition is UTF-8 with pages separated by form feeds (`\f`), as `pdftotext` writes
//! it. Extraction runs on a helper thread under a time bound, with panics caught; page count and
//! total text are bounded.

use std::time::Duration;

use unicode_normalization::UnicodeNormalization;

use super::preflight::{PdfDefect, PreflightLimits, preflight};
use super::short;

/// Bounds on extraction.
#[derive(Debug, Clone, Copy)]
pub struct ExtractLimits {
    /// Largest input, bytes.
    pub max_input: usize,
    /// Most pages read.
    pub max_pages: usize,
    /// Most text kept, bytes (the rest is cut at a character boundary).
    pub max_text: usize,
    /// Longest the whole document may take.
    pub max_time: Duration,
    /// Structural checks before extracting.
    pub preflight: PreflightLimits,
}

impl Default for ExtractLimits {
    fn default() -> Self {
        ExtractLimits {
            max_input: 256 << 20,
            max_pages: 5_000,
            max_text: 32 << 20,
            max_time: Duration::from_secs(30),
            preflight: PreflightLimits::default(),
        }
    }
}

/// Why no text was extracted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExtractError {
    /// Not a PDF.
    #[error("not a PDF")]
    NotPdf,
    /// A password is needed to read the PDF.
    #[error("encrypted PDF")]
    Encrypted,
    /// Over a limit.
    #[error("too large: {0}")]
    TooLarge(String),
    /// The PDF cannot be parsed.
    #[error("cannot read the PDF: {0}")]
    Invalid(String),
    /// Refused by the structural check (damaged or hostile; see [`super::preflight`]).
    #[error(transparent)]
    Defect(PdfDefect),
    /// Extraction did not finish in time.
    #[error("gave up after {0:?}")]
    TimedOut(Duration),
    /// The extractor panicked; caught here.
    #[error("the PDF text extractor panicked on this input")]
    Panicked,
}

impl From<PdfDefect> for ExtractError {
    fn from(defect: PdfDefect) -> Self {
        match defect {
            PdfDefect::Encrypted => ExtractError::Encrypted,
            other => ExtractError::Defect(other),
        }
    }
}

/// Extracted text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractedText {
    /// Text per page, in page order.
    pub pages: Vec<String>,
    /// Pages in the document (may exceed `pages.len()` when `max_pages` cut it).
    pub page_count: usize,
    /// Pages whose text could not be read (kept as empty pages).
    pub failed_pages: usize,
    /// Pages whose text came from OCR (no usable text layer).
    pub ocr_pages: usize,
}

impl ExtractedText {
    /// Pages joined with form feeds (the stored rendition).
    pub fn joined(&self) -> String {
        self.pages.join("\u{c}")
    }

    /// Characters of text.
    pub fn chars(&self) -> u64 {
        self.pages.iter().map(|p| p.chars().count() as u64).sum()
    }
}

/// The text of every page of a PDF (blocking; bounded in time: past the bound the call returns and
/// the helper thread is abandoned).
pub fn extract_pdf_text(bytes: &[u8], limits: &ExtractLimits) -> Result<ExtractedText, ExtractError> {
    if bytes.len() > limits.max_input {
        return Err(ExtractError::TooLarge(format!("{} bytes", bytes.len())));
    }
    if !bytes.starts_with(b"%PDF-") {
        return Err(ExtractError::NotPdf);
    }
    let data = bytes.to_vec();
    let copy = *limits;
    match super::bounded("pdf-extract", limits.max_time, move || extract(data, &copy)) {
        Ok(result) => result,
        Err(super::Aborted::TimedOut) => Err(ExtractError::TimedOut(limits.max_time)),
        Err(super::Aborted::Panicked) => Err(ExtractError::Panicked),
        Err(super::Aborted::NoThread) => Err(ExtractError::Invalid("no extract thread".into())),
    }
}

fn extract(data: Vec<u8>, limits: &ExtractLimits) -> Result<ExtractedText, ExtractError> {
    preflight(&data, &limits.preflight)?;
    let doc = pdf_oxide::PdfDocument::from_bytes(data).map_err(|e| ExtractError::Invalid(short(e)))?;
    if doc.is_encrypted()
        && !doc
            .authenticate(b"")
            .map_err(|e| ExtractError::Invalid(short(e)))?
    {
        return Err(ExtractError::Encrypted);
    }
    let page_count = doc.page_count().map_err(|e| ExtractError::Invalid(short(e)))?;
    let mut pages = Vec::with_capacity(page_count.min(limits.max_pages));
    let mut total = 0usize;
    let mut failed = 0usize;
    for i in 0..page_count.min(limits.max_pages) {
        // One unreadable page does not cost the others their text.
        let raw = match doc.extract_text(i) {
            Ok(t) => t,
            Err(_) => {
                failed += 1;
                pages.push(String::new());
                continue;
            }
        };
        // NFKC: ligatures (ﬁ), compatibility forms and decomposed accents become what people type.
        let mut text: String = raw.nfkc().collect();
        if total + text.len() > limits.max_text {
            let mut cut = limits.max_text.saturating_sub(total);
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            pages.push(text);
            break;
        }
        total += text.len();
        pages.push(text);
    }
    if page_count > 0 && failed == pages.len() {
        return Err(ExtractError::Invalid("no page could be read".into()));
    }
    Ok(ExtractedText {
        pages,
        page_count,
        failed_pages: failed,
        ocr_pages: 0,
    })
}
