//! Text of each PDF page, for search and for the `file.processed` text length.
//!
//! Every page is read three ways and keeps the reading that holds the most text of normal shape
//! ([`plausible_chars`]): `pdf_oxide`'s own assembly, `pdf-extract`'s, and `pdf_oxide`'s glyphs
//! re-spaced by their gaps ([`glyph_reading`]). No one reading is right on every PDF of the
//! corpus: `pdf_oxide` drops ligature glyphs without a Unicode mapping ("eld" for "field"), joins
//! spreadsheet cells ("permanent10"), runs words together on fonts with a built-in Type 1
//! encoding, and both libraries run the digits of adjacent table cells together ("015,00514" for
//! "0 15,005 14"); `pdf-extract` splits some fonts into single letters and loses text in signed
//! and object-stream files; the gap reading splits letter-spaced dates ("0 9 / 1 8"). Whichever
//! breaks a page, the broken reading has fewer letters in words of normal shape or fewer digits
//! in numbers of normal shape, so the choice needs no reference text.
//!
//! The text rendition is UTF-8 with pages separated by form feeds (`\f`), as `pdftotext` writes
//! it. Each library runs on a helper thread under the time bound, with panics caught; the second
//! gets what time the first left, and when it fails or runs out the first's text stands. Page
//! count and total text are bounded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use unicode_normalization::UnicodeNormalization;

use super::columns::{self, Columns};
use super::described;
use super::preflight::{PdfDefect, PreflightLimits, preflight};

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
    /// Opened with the empty user password, but its permissions forbid extracting text (see
    /// [`text_permitted`]).
    #[error("the PDF's permissions do not allow extracting its text")]
    Restricted,
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
    /// Pages whose text is not `pdf_oxide`'s own assembly (see the module documentation).
    pub alternative_pages: usize,
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
    let second = if first.as_ref().is_some_and(|f| f.encrypted) || left.is_zero() {
        None
    } else {
        super::bounded("pdf-extract-2", left, move || {
            pdf_extract::extract_text_from_mem_by_pages(&data).ok()
        })
        .ok()
        .flatten()
    };
    match first {
        Some(first) => assemble(first, second, limits),
        // pdf_oxide panicked past the preflight: pdf-extract's reading alone, if it has any text.
        None => match second.filter(|p| p.iter().any(|t| !t.trim().is_empty())) {
            Some(pages) => {
                let unread = FirstReading {
                    pages: (0..pages.len().min(limits.max_pages)).map(|_| None).collect(),
                    page_count: pages.len(),
                    encrypted: false,
                };
                assemble(unread, Some(pages), limits)
            }
            None => Err(ExtractError::Panicked),
        },
    }
}

/// Whether a document opened with the empty user password lets its text be extracted, as the
/// Standard security handler's permissions say (ISO 32000-1, table 22): revision 2 has one bit for
/// copying and extracting (bit 5); from revision 3 on, extraction for accessibility (bit 10) is
/// enough, since the stored text serves reading and search, not a copy of the document. Bits
/// above 6 are reserved as 1 in revision 2, so bit 10 says nothing there. Unencrypted: always.
pub fn text_permitted(doc: &lopdf::Document) -> bool {
    use lopdf::Permissions;
    match &doc.encryption_state {
        None => true,
        Some(state) if state.revision() <= 2 => state.permissions().contains(Permissions::COPYABLE),
        Some(state) => state
            .permissions()
            .intersects(Permissions::COPYABLE | Permissions::COPYABLE_FOR_ACCESSIBILITY),
    }
}

/// `pdf_oxide`'s readings of a page: its text, its glyph reading, and the column reading when the
/// page is set in columns.
struct PageReading {
    text: String,
    glyphs: String,
    columns: Option<Columns>,
}

impl PageReading {
    #[cfg(test)]
    fn plain(text: &str) -> Self {
        PageReading {
            text: text.into(),
            glyphs: text.into(),
            columns: None,
        }
    }
}

/// `pdf_oxide`'s readings of each page, `None` where the page could not be read.
struct FirstReading {
    pages: Vec<Option<PageReading>>,
    page_count: usize,
    /// Encrypted with an empty user password: `pdf-extract` cannot decrypt every such file.
    encrypted: bool,
}

/// The preflight, then `pdf_oxide`'s readings; `Ok(None)` when pdf_oxide panicked (caught) on a
/// document the preflight let through, which pdf-extract may still read.
fn first_reading(data: &[u8], limits: &ExtractLimits) -> Result<Option<FirstReading>, ExtractError> {
    let doc = preflight(data, &limits.preflight)?;
    if !text_permitted(&doc) {
        return Err(ExtractError::Restricted);
    }
    drop(doc);
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| oxide_reading(data, limits)))
        .map_or(Ok(None), |r| r.map(Some))
}

fn oxide_reading(data: &[u8], limits: &ExtractLimits) -> Result<FirstReading, ExtractError> {
    let doc = pdf_oxide::PdfDocument::from_bytes(data.to_vec())
        .map_err(|e| ExtractError::Invalid(described("pdf_oxide could not read the PDF", e)))?;
    let encrypted = doc.is_encrypted();
    if encrypted
        && !doc
            .authenticate(b"")
            .map_err(|e| ExtractError::Invalid(described("pdf_oxide could not open the encryption", e)))?
    {
        return Err(ExtractError::Encrypted);
    }
    let page_count = doc
        .page_count()
        .map_err(|e| ExtractError::Invalid(described("pdf_oxide could not count the pages", e)))?;
    // One unreadable page does not cost the others their text.
    let pages = (0..page_count.min(limits.max_pages))
        .map(|i| {
            let text = doc.extract_text(i).ok()?;
            let chars = doc.extract_chars(i).unwrap_or_default();
            Some(PageReading {
                text,
                glyphs: glyph_reading(&chars),
                columns: columns::detect(&chars),
            })
        })
        .collect();
    Ok(FirstReading {
        pages,
        page_count,
        encrypted,
    })
}

/// Per page, the best of the readings; then NFKC and the text bound.
fn assemble(
    first: FirstReading,
    second: Option<Vec<String>>,
    limits: &ExtractLimits,
) -> Result<ExtractedText, ExtractError> {
    // Page numbers must line up, or the readings are of different page trees.
    let second = second.filter(|pages| pages.len() == first.page_count);
    // NFKC: ligatures (ﬁ), compatibility forms and decomposed accents become what people type.
    let nfkc = |t: &str| -> String { t.nfkc().collect() };
    let mut pages = Vec::with_capacity(first.pages.len());
    let (mut total, mut failed, mut alternatives) = (0usize, 0usize, 0usize);
    for (i, one) in first.pages.into_iter().enumerate() {
        let two = second.as_ref().and_then(|p| p.get(i)).map(|t| nfkc(t));
        let mut text = match one {
            // In order of preference: a later reading must be clearly better to replace an earlier.
            Some(page) => {
                let candidates = [nfkc(&page.text), two.unwrap_or_default(), nfkc(&page.glyphs)];
                let best = best_reading(&candidates);
                let chosen = candidates.into_iter().nth(best).unwrap_or_default();
                // A reading that runs the rows of a column into the next gives way to the page
                // read column by column (see super::columns).
                match page.columns {
                    Some(cols) if cols.crossed_by(&chosen) => {
                        alternatives += 1;
                        nfkc(&cols.reading)
                    }
                    _ => {
                        alternatives += usize::from(best > 0);
                        chosen
                    }
                }
            }
            // pdf_oxide could not read the page (or panicked on the document).
            None => match two {
                Some(two) if !two.trim().is_empty() => {
                    alternatives += 1;
                    two
                }
                _ => {
                    failed += 1;
                    pages.push(String::new());
                    continue;
                }
            },
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
        alternative_pages: alternatives,
    })
}

/// Index of the reading to keep: a later one replaces the one kept so far only when it holds 2 %
/// more plausible text, so near-ties keep `pdf_oxide`'s layout (hyphen joining, table rows).
fn best_reading(candidates: &[String]) -> usize {
    let mut best = (0, candidates.first().map_or(0, |c| plausible_chars(c)));
    for (i, c) in candidates.iter().enumerate().skip(1) {
        let score = plausible_chars(c);
        if score * 100 > best.1 * 102 {
            best = (i, score);
        }
    }
    best.0
}

/// Text of normal shape, in half characters: [`word_letters`] and [`number_digits`] count double,
/// a letter standing alone (an "a", a glyph of a spaced-out sample line) counts once; symbols
/// that broken encodings put in place of letters ("´", "˜") count nothing.
pub fn plausible_chars(text: &str) -> usize {
    2 * (word_letters(text) + number_digits(text)) + lone_letters(text)
}

fn lone_letters(text: &str) -> usize {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| {
            let mut cs = w.chars();
            matches!((cs.next(), cs.next()), (Some(c), None) if is_letter(c))
        })
        .count()
}

/// A letter, but not a spacing modifier letter (U+02B0–U+02FF), which broken fonts map to.
fn is_letter(c: char) -> bool {
    c.is_alphabetic() && !('\u{2b0}'..='\u{2ff}').contains(&c)
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
                if !is_letter(c) {
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

/// Digits in numbers of normal shape: at least 2 digits, no leading zero past 2 digits ("09" is
/// a day, "015" is two cells run together), and either at most 12 digits in two groups (an amount
/// with decimals) or thousands groups of 3 ("15,005", "1.234.567,89"). Digits of adjacent cells run
/// together break these shapes; digits spaced one by one are not counted at all.
pub fn number_digits(text: &str) -> usize {
    text.split(|c: char| !(c.is_ascii_digit() || c == ',' || c == '.'))
        .map(|t| t.trim_matches([',', '.']))
        .filter(|t| t.bytes().any(|b| b.is_ascii_digit()) && normal_number(t))
        .map(|t| t.bytes().filter(u8::is_ascii_digit).count())
        .sum()
}

fn normal_number(t: &str) -> bool {
    let groups: Vec<&str> = t.split([',', '.']).collect();
    if groups.iter().any(|g| g.is_empty()) {
        return false;
    }
    let digits: usize = groups.iter().map(|g| g.len()).sum();
    let first = groups[0];
    if digits < 2 || (first.len() > 2 && first.starts_with('0')) {
        return false;
    }
    match groups.as_slice() {
        [one] => one.len() <= 12,
        [int, frac] => int.len() <= 12 && frac.len() <= 12,
        // Thousands groups, the last one possibly decimals ("1.234,56").
        [lead, middle @ .., last] => {
            lead.len() <= 3 && middle.iter().all(|g| g.len() == 3) && last.len() <= 12
        }
        [] => false,
    }
}

/// `pdf_oxide`'s glyphs in its reading order: a space where the gap to the previous glyph
/// exceeds a quarter of its font size (or the text moves back), a line break where the baseline
/// moves by half of it. Table cells drawn as separate text objects come apart here when both
/// libraries' assembly runs them together. Only for pages whose glyphs are all upright: pdf_oxide
/// orders glyphs by position, which interleaves the lines of rotated text (a stamp drawn upright
/// on a rotated page), so such a page gets no glyph reading (empty, never chosen).
fn glyph_reading(chars: &[pdf_oxide::layout::TextChar]) -> String {
    if chars.iter().any(|c| c.rotation_degrees.abs() > 1.0) {
        return String::new();
    }
    let mut text = String::with_capacity(chars.len() + chars.len() / 4);
    let mut prev: Option<&pdf_oxide::layout::TextChar> = None;
    for c in chars {
        if let Some(p) = prev {
            let size = p.font_size.max(1.0);
            if (c.bbox.y - p.bbox.y).abs() > 0.5 * size {
                text.push('\n');
            } else if c.bbox.x - (p.bbox.x + p.bbox.width) > 0.25 * size || c.bbox.x < p.bbox.x {
                text.push(' ');
            }
        }
        text.push(c.char);
        prev = Some(c);
    }
    text
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
        // Glyphs of a sample line mis-decoded to accents and symbols.
        assert!(plausible_chars("à À â ´ ä ˜ ç ˙") < plausible_chars("à À â Â ä Ä ç Ç"));
    }

    #[test]
    fn numbers_of_adjacent_cells_run_together_count_fewer_digits() {
        assert_eq!(number_digits("0 15,005 14,753 778"), 5 + 5 + 3);
        assert_eq!(number_digits("015,00514,753778"), 0);
        assert_eq!(number_digits("09/18/2015 R$ 1.234,56 v1.2.3"), 2 + 2 + 4 + 6);
        assert_eq!(number_digits("0 9 / 1 8"), 0);
    }

    #[test]
    fn near_ties_keep_the_earlier_reading() {
        let first = "inter- preter of the trace monkey".to_owned();
        assert_eq!(
            best_reading(&[first.clone(), "interpreter of the tracemonkey".into()]),
            0
        );
        let fixed = "the field is finite".to_owned();
        assert_eq!(best_reading(&["the eld is nite".into(), fixed.clone(), fixed]), 1);
        let cells = "Oklahoma 0 15,005 14,753 778".to_owned();
        let joined = "Oklahoma 015,00514,753778".to_owned();
        assert_eq!(best_reading(&[joined.clone(), joined, cells]), 2);
    }

    #[test]
    fn a_second_reading_of_another_page_tree_is_ignored() {
        let first = FirstReading {
            pages: vec![Some(PageReading::plain("one page"))],
            page_count: 1,
            encrypted: false,
        };
        let second = vec!["a much longer reading of page one".into(), "two".into()];
        let text = assemble(first, Some(second), &ExtractLimits::default()).unwrap();
        assert_eq!(text.pages, ["one page"]);
        assert_eq!(text.alternative_pages, 0);
    }

    #[test]
    fn unreadable_first_pages_take_the_second_reading() {
        let first = FirstReading {
            pages: vec![None, Some(PageReading::plain("kept")), None, None],
            page_count: 4,
            encrypted: false,
        };
        // "7" scores nothing as text of normal shape, but it is the only text of its page.
        let second = vec!["rescued".into(), "kept".into(), " ".into(), "7".into()];
        let text = assemble(first, Some(second), &ExtractLimits::default()).unwrap();
        assert_eq!(text.pages, ["rescued", "kept", "", "7"]);
        assert_eq!((text.alternative_pages, text.failed_pages), (2, 1));
    }
}
