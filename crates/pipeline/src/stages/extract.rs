//! Text of each PDF page, for search and for the `file.processed` text length.
//!
//! Two extractors read every document: `pdf_oxide` first, then `pdf-extract`, and each page
//! keeps the reading that holds more text in plausible words ([`word_letters`]). Neither
//! extractor is right on every PDF of the corpus: `pdf_oxide` drops ligature glyphs without a
//! Unicode mapping ("eld" for "field"), joins spreadsheet cells ("permanent10") and runs words
//! together on fonts with a built-in Type 1 encoding; `pdf-extract` splits some fonts into single
//! letters and loses text in signed and object-stream files. Whichever breaks a page, the broken
//! reading has fewer letters in words of normal shape, so the choice needs no reference text.
//!
//! The text rendition is UTF-8 with pages separated by form feeds (`\f`), as `pdftotext` writes
//! it. Each extractor runs on a helper thread under the time bound, with panics caught; the second
//! gets what time the first left, and when it fails or runs out the first's text stands. Page
//! count and total text are bounded.

use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// Pages whose text came from the second extractor (`pdf-extract`).
    pub second_reading_pages: usize,
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
    let deadline = Instant::now() + limits.max_time;
    let data: Arc<[u8]> = bytes.into();
    let copy = *limits;
    let first = {
        let data = data.clone();
        super::bounded("pdf-extract", limits.max_time, move || {
            first_reading(&data, &copy)
        })
    };
    let first = match first {
        Ok(result) => result?,
        Err(super::Aborted::TimedOut) => return Err(ExtractError::TimedOut(limits.max_time)),
        Err(super::Aborted::Panicked) => return Err(ExtractError::Panicked),
        Err(super::Aborted::NoThread) => return Err(ExtractError::Invalid("no extract thread".into())),
    };
    // The second reading only ever adds: its failure, panic or lateness leaves the first's text
    // (or, when pdf_oxide panicked past the preflight, the typed error).
    let left = deadline.saturating_duration_since(Instant::now());
    let second = if first.encrypted || left.is_zero() {
        None
    } else {
        super::bounded("pdf-extract-2", left, move || {
            pdf_extract::extract_text_from_mem_by_pages(&data).ok()
        })
        .ok()
        .flatten()
    };
    if first.oxide_panicked {
        let Some(pages) = second.filter(|p| p.iter().any(|t| !t.trim().is_empty())) else {
            return Err(ExtractError::Panicked);
        };
        let unread = FirstReading {
            pages: vec![None; pages.len().min(limits.max_pages)],
            page_count: pages.len(),
            encrypted: false,
            oxide_panicked: true,
        };
        return assemble(unread, Some(pages), limits);
    }
    assemble(first, second, limits)
}

/// `pdf_oxide`'s reading: each page's text, `None` where the page could not be read.
struct FirstReading {
    pages: Vec<Option<String>>,
    page_count: usize,
    /// Encrypted with an empty user password: `pdf-extract` cannot decrypt every such file.
    encrypted: bool,
    /// pdf_oxide panicked on this document (caught); `pages` is empty.
    oxide_panicked: bool,
}

fn first_reading(data: &[u8], limits: &ExtractLimits) -> Result<FirstReading, ExtractError> {
    preflight(data, &limits.preflight)?;
    // A panic here is pdf_oxide's, on a document the preflight let through: pdf-extract may
    // still read it.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| oxide_reading(data, limits))).unwrap_or(Ok(
        FirstReading {
            pages: Vec::new(),
            page_count: 0,
            encrypted: false,
            oxide_panicked: true,
        },
    ))
}

fn oxide_reading(data: &[u8], limits: &ExtractLimits) -> Result<FirstReading, ExtractError> {
    let doc =
        pdf_oxide::PdfDocument::from_bytes(data.to_vec()).map_err(|e| ExtractError::Invalid(short(e)))?;
    let encrypted = doc.is_encrypted();
    if encrypted
        && !doc
            .authenticate(b"")
            .map_err(|e| ExtractError::Invalid(short(e)))?
    {
        return Err(ExtractError::Encrypted);
    }
    let page_count = doc.page_count().map_err(|e| ExtractError::Invalid(short(e)))?;
    // One unreadable page does not cost the others their text.
    let pages = (0..page_count.min(limits.max_pages))
        .map(|i| doc.extract_text(i).ok())
        .collect();
    Ok(FirstReading {
        pages,
        page_count,
        encrypted,
        oxide_panicked: false,
    })
}

/// Per page, the better of the two readings; then NFKC and the text bound.
fn assemble(
    first: FirstReading,
    second: Option<Vec<String>>,
    limits: &ExtractLimits,
) -> Result<ExtractedText, ExtractError> {
    // Page numbers must line up, or the readings are of different page trees.
    let second = second.filter(|pages| pages.len() == first.page_count);
    let mut pages = Vec::with_capacity(first.pages.len());
    let (mut total, mut failed, mut seconds) = (0usize, 0usize, 0usize);
    for (i, one) in first.pages.into_iter().enumerate() {
        let two = second.as_ref().and_then(|p| p.get(i));
        // NFKC: ligatures (ﬁ), compatibility forms and decomposed accents become what people type.
        let nfkc = |t: &str| -> String { t.nfkc().collect() };
        let mut text = match (one, two) {
            (Some(one), Some(two)) => {
                let (one, two) = (nfkc(&one), nfkc(two));
                if second_is_better(&one, &two) {
                    seconds += 1;
                    two
                } else {
                    one
                }
            }
            (Some(one), None) => nfkc(&one),
            (None, Some(two)) if !two.trim().is_empty() => {
                seconds += 1;
                nfkc(two)
            }
            (None, _) => {
                failed += 1;
                pages.push(String::new());
                continue;
            }
        };
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
    if first.page_count > 0 && failed == pages.len() {
        return Err(ExtractError::Invalid("no page could be read".into()));
    }
    Ok(ExtractedText {
        pages,
        page_count: first.page_count,
        failed_pages: failed,
        ocr_pages: 0,
        second_reading_pages: seconds,
    })
}

/// The second reading replaces the first only when clearly better (2 % more letters in words),
/// so near-ties keep `pdf_oxide`'s layout (hyphen joining, table rows).
fn second_is_better(first: &str, second: &str) -> bool {
    word_letters(second) * 100 > word_letters(first) * 102
}

/// Letters in words of normal shape: 2 to 24 letters (no digits, no spacing modifier letters,
/// which broken fonts map garbage to) and lower case after the first letter, or all capitals.
/// Dropped glyphs shorten words, joined cells mix in digits, and words run together grow too long
/// or change case inside; each lowers the count.
pub fn word_letters(text: &str) -> usize {
    text.split(|c: char| !c.is_alphanumeric())
        .filter_map(|w| {
            let mut n = 0usize;
            let (mut upper_inside, mut lower) = (false, false);
            for (i, c) in w.chars().enumerate() {
                if !c.is_alphabetic() || ('\u{2b0}'..='\u{2ff}').contains(&c) {
                    return None;
                }
                upper_inside |= i > 0 && c.is_uppercase();
                lower |= c.is_lowercase();
                n += 1;
            }
            ((2..=24).contains(&n) && !(upper_inside && lower)).then_some(n)
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_of_normal_shape_count_their_letters() {
        assert_eq!(word_letters("The field is FINITE."), 3 + 5 + 2 + 6);
        assert_eq!(word_letters("Diário Oficial, edição"), 6 + 7 + 6);
    }

    #[test]
    fn broken_readings_count_fewer_letters() {
        // Dropped ligature glyphs, cells run together, words run together, garbage glyphs.
        assert!(word_letters("eld nite") < word_letters("field finite"));
        assert!(word_letters("permanent10 permanent04") < word_letters("permanent 10 permanent 04"));
        assert!(
            word_letters("OverviewoftheTechnologyAcceptanceModel")
                < word_letters("Overview of the Technology Acceptance Model")
        );
        assert_eq!(word_letters("ˇˇ˚ ˝ˇ"), 0);
        assert_eq!(word_letters("D i á r i o"), 0);
    }

    #[test]
    fn near_ties_keep_the_first_reading() {
        let first = "inter- preter of the trace monkey";
        assert!(!second_is_better(first, "interpreter of the tracemonkey"));
        assert!(second_is_better("the eld is nite", "the field is finite"));
    }

    #[test]
    fn a_second_reading_of_another_page_tree_is_ignored() {
        let first = FirstReading {
            pages: vec![Some("one page".into())],
            page_count: 1,
            encrypted: false,
            oxide_panicked: false,
        };
        let second = vec!["a much longer reading of page one".into(), "two".into()];
        let text = assemble(first, Some(second), &ExtractLimits::default()).unwrap();
        assert_eq!(text.pages, ["one page"]);
        assert_eq!(text.second_reading_pages, 0);
    }

    #[test]
    fn unreadable_first_pages_take_the_second_reading() {
        let first = FirstReading {
            pages: vec![None, Some("kept".into()), None],
            page_count: 3,
            encrypted: false,
            oxide_panicked: false,
        };
        let second = vec!["rescued".into(), "kept".into(), " ".into()];
        let text = assemble(first, Some(second), &ExtractLimits::default()).unwrap();
        assert_eq!(text.pages, ["rescued", "kept", ""]);
        assert_eq!((text.second_reading_pages, text.failed_pages), (1, 1));
    }
}
