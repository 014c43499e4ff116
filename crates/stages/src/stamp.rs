//! The release stamp: a visible box on every page of a PDF naming the clinic, exam, patient,
//! release time and a configurable line, written with `lopdf`.
//!
//! - Each page's original content is wrapped in `q … Q`, so whatever graphics state it leaves does
//!   not leak into the stamp; the stamp is appended as its own content stream.
//! - Resources are resolved through the page tree (inherited, direct or indirect) and copied into
//!   the page with the stamp font added under a private name, so shared resource dictionaries are
//!   never modified.
//! - `/Rotate` (inherited too) is honoured: the stamp is drawn in a frame turned with the page, so
//!   it reads upright in a viewer, at the bottom left of the visible (crop) box.
//! - The output is written with object and cross-reference streams (`save_modern`), not unpacked.
//! - Rule for encrypted PDFs: a user password → [`StampError::Encrypted`]; an owner password
//!   (restrictions only) → [`StampError::Restricted`]: a stamped copy would have to drop the
//!   author's restrictions, so the clinic must upload an unrestricted file.

use std::time::Duration;

use lopdf::{Dictionary, Document, Object, ObjectId, Stream, dictionary};

use super::preflight::{PdfDefect, PreflightLimits, preflight};

/// What the stamp says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StampInfo {
    /// Clinic name.
    pub clinic: String,
    /// Exam id.
    pub exam_id: String,
    /// Patient id.
    pub patient_id: String,
    /// The time printed: the exam's release when `released`, else the stamping time.
    pub time: String,
    /// Whether the exam's results were released when the stamp was made.
    pub released: bool,
    /// A configurable last line (e.g. "Documento liberado eletronicamente").
    pub text: String,
}

/// Bounds on stamping.
#[derive(Debug, Clone, Copy)]
pub struct StampLimits {
    /// Largest input, bytes.
    pub max_input: usize,
    /// Most pages.
    pub max_pages: usize,
    /// Longest a document may take.
    pub max_time: Duration,
    /// Structural checks before stamping.
    pub preflight: PreflightLimits,
}

impl Default for StampLimits {
    fn default() -> Self {
        StampLimits {
            max_input: 256 << 20,
            max_pages: 5_000,
            max_time: Duration::from_secs(30),
            preflight: PreflightLimits::default(),
        }
    }
}

/// Why a PDF was not stamped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StampError {
    /// Not a PDF.
    #[error("not a PDF")]
    NotPdf,
    /// A user password is needed to open it.
    #[error("encrypted PDF")]
    Encrypted,
    /// Owner-password restrictions: see the module docs for the rule.
    #[error("PDF with owner-password restrictions: upload an unrestricted copy to have it stamped")]
    Restricted,
    /// Over a limit.
    #[error("too large: {0}")]
    TooLarge(String),
    /// Refused by the structural check (damaged or hostile; see [`super::preflight`]).
    #[error(transparent)]
    Defect(PdfDefect),
    /// The PDF cannot be parsed or rewritten.
    #[error("cannot stamp the PDF: {0}")]
    Invalid(String),
    /// Did not finish in time.
    #[error("gave up after {0:?}")]
    TimedOut(Duration),
    /// `lopdf` panicked; caught here.
    #[error("the PDF library panicked on this input")]
    Panicked,
}

impl From<PdfDefect> for StampError {
    fn from(defect: PdfDefect) -> Self {
        match defect {
            PdfDefect::Encrypted => StampError::Encrypted,
            other => StampError::Defect(other),
        }
    }
}

/// Name of the stamp font in each page's resources (private prefix: no collision with the page's).
const FONT: &[u8] = b"DocstoreStampF1";

/// Stamps every page (blocking; bounded in time: past the bound the call returns and the helper
/// thread is abandoned). Returns the stamped PDF.
pub fn stamp_pdf(bytes: &[u8], info: &StampInfo, limits: &StampLimits) -> Result<Vec<u8>, StampError> {
    if bytes.len() > limits.max_input {
        return Err(StampError::TooLarge(format!("{} bytes", bytes.len())));
    }
    if !bytes.starts_with(b"%PDF-") {
        return Err(StampError::NotPdf);
    }
    let (data, info, copy) = (bytes.to_vec(), info.clone(), *limits);
    match super::bounded("pdf-stamp", limits.max_time, move || stamp(&data, &info, &copy)) {
        Ok(result) => result,
        Err(super::Aborted::TimedOut) => Err(StampError::TimedOut(limits.max_time)),
        Err(super::Aborted::Panicked) => Err(StampError::Panicked),
        Err(super::Aborted::NoThread) => Err(StampError::Invalid("no stamp thread".into())),
    }
}

fn invalid(e: impl std::fmt::Display) -> StampError {
    StampError::Invalid(super::described("lopdf could not write the stamped PDF", e))
}

fn stamp(data: &[u8], info: &StampInfo, limits: &StampLimits) -> Result<Vec<u8>, StampError> {
    // The checked document is the one stamped (rebuilt, when its table had stale entries).
    let mut doc = preflight(data, &limits.preflight)?;
    let pages = doc.get_pages();
    // lopdf opens a user-password file "successfully" with no pages, and silently decrypts an
    // owner-password one: check the encryption state explicitly.
    if doc.was_encrypted() || doc.is_encrypted() {
        return Err(if pages.is_empty() {
            StampError::Encrypted
        } else {
            StampError::Restricted
        });
    }
    if pages.is_empty() {
        return Err(StampError::Invalid("the PDF has no pages".into()));
    }
    if pages.len() > limits.max_pages {
        return Err(StampError::TooLarge(format!("{} pages", pages.len())));
    }
    let font = doc.add_object(dictionary! {
        "Type" => "Font",
        "Subtype" => "Type1",
        "BaseFont" => "Helvetica",
        "Encoding" => "WinAnsiEncoding",
    });
    for page in pages.values() {
        stamp_page(&mut doc, *page, font, info)?;
    }
    let mut out = Vec::with_capacity(data.len() + 16 * 1024);
    doc.save_modern(&mut out).map_err(invalid)?;
    Ok(out)
}

/// A page attribute, looked up through the page tree (`/Resources`, `/MediaBox`, `/CropBox`,
/// `/Rotate` are inheritable), resolved if it is a reference.
fn inherited(doc: &Document, page: ObjectId, key: &[u8]) -> Option<Object> {
    let mut node = doc.get_dictionary(page).ok()?;
    for _ in 0..64 {
        if let Ok(v) = node.get(key) {
            return doc.dereference(v).ok().map(|(_, o)| o.clone());
        }
        let parent = node.get(b"Parent").and_then(Object::as_reference).ok()?;
        node = doc.get_dictionary(parent).ok()?;
    }
    None
}

fn number(o: &Object) -> Option<f32> {
    match o {
        Object::Integer(i) => Some(*i as f32),
        Object::Real(r) => Some(*r),
        _ => None,
    }
}

fn rect(doc: &Document, o: Option<Object>) -> Option<[f32; 4]> {
    let arr = o?.as_array().ok()?.clone();
    if arr.len() != 4 {
        return None;
    }
    let mut v = [0f32; 4];
    for (i, item) in arr.iter().enumerate() {
        v[i] = number(doc.dereference(item).ok()?.1)?;
    }
    Some([v[0].min(v[2]), v[1].min(v[3]), v[0].max(v[2]), v[1].max(v[3])])
}

fn stamp_page(
    doc: &mut Document,
    page: ObjectId,
    font: ObjectId,
    info: &StampInfo,
) -> Result<(), StampError> {
    // Resources: copy the effective dictionary into the page, with the font added.
    let mut resources = match inherited(doc, page, b"Resources") {
        Some(Object::Dictionary(d)) => d,
        _ => Dictionary::new(),
    };
    let mut fonts = match resources.get(b"Font").ok().map(|f| doc.dereference(f)) {
        Some(Ok((_, Object::Dictionary(d)))) => d.clone(),
        _ => Dictionary::new(),
    };
    fonts.set(FONT, Object::Reference(font));
    resources.set("Font", Object::Dictionary(fonts));

    let media = rect(doc, inherited(doc, page, b"MediaBox")).unwrap_or([0.0, 0.0, 612.0, 792.0]);
    let visible = rect(doc, inherited(doc, page, b"CropBox")).unwrap_or(media);
    let rotate = inherited(doc, page, b"Rotate")
        .as_ref()
        .and_then(number)
        .map(|r| (r as i64).rem_euclid(360))
        .unwrap_or(0);
    let ops = stamp_ops(visible, rotate, info);

    let old: Vec<ObjectId> = doc.get_page_contents(page);
    let pre = doc.add_object(Stream::new(Dictionary::new(), b"q\n".to_vec()));
    let post = doc.add_object(Stream::new(Dictionary::new(), ops));
    let mut contents = vec![Object::Reference(pre)];
    contents.extend(old.into_iter().map(Object::Reference));
    contents.push(Object::Reference(post));
    let dict = doc.get_dictionary_mut(page).map_err(invalid)?;
    dict.set("Resources", Object::Dictionary(resources));
    dict.set("Contents", Object::Array(contents));
    Ok(())
}

/// The stamp's content: `Q` (closing the original content's `q`), then the box drawn in a frame
/// turned with the page so it reads upright.
fn stamp_ops(visible: [f32; 4], rotate: i64, info: &StampInfo) -> Vec<u8> {
    let [x0, y0, x1, y1] = visible;
    let (w, h) = (x1 - x0, y1 - y0);
    // (cm matrix, displayed width, displayed height)
    let (cm, dw) = match rotate {
        90 => ([0.0, 1.0, -1.0, 0.0, x1, y0], h),
        180 => ([-1.0, 0.0, 0.0, -1.0, x1, y1], w),
        270 => ([0.0, -1.0, 1.0, 0.0, x0, y1], h),
        _ => ([1.0, 0.0, 0.0, 1.0, x0, y0], w),
    };
    let lines = if info.released {
        [
            format!("LIBERADO · {}", info.clinic),
            format!("Exame {} · Paciente {}", info.exam_id, info.patient_id),
            format!("Liberado em {} · {}", info.time, info.text),
        ]
    } else {
        [
            info.clinic.clone(),
            format!("Exame {} · Paciente {}", info.exam_id, info.patient_id),
            format!("Emitido em {} · {}", info.time, info.text),
        ]
    };
    let size = (dw / 70.0).clamp(5.0, 8.0);
    let longest = lines.iter().map(|l| l.chars().count()).max().unwrap_or(1) as f32;
    let (margin, pad) = (10.0f32, 3.0f32);
    let box_w = (longest * size * 0.52 + 2.0 * pad).min((dw - 2.0 * margin).max(10.0));
    let box_h = lines.len() as f32 * size * 1.25 + 2.0 * pad;
    let mut out = Vec::new();
    out.extend_from_slice(b"Q\nq\n");
    out.extend_from_slice(
        format!(
            "{} {} {} {} {} {} cm\n1 1 1 rg 0.15 0.2 0.55 RG 0.8 w\n{margin} {margin} {box_w:.2} {box_h:.2} re B\n",
            cm[0], cm[1], cm[2], cm[3], cm[4], cm[5]
        )
        .as_bytes(),
    );
    out.extend_from_slice(
        format!(
            "0.1 0.12 0.4 rg\nBT\n/DocstoreStampF1 {size:.2} Tf\n{:.2} {:.2} Td\n",
            margin + pad,
            margin + box_h - pad - size
        )
        .as_bytes(),
    );
    for (i, line) in lines.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(format!("0 {:.2} Td\n", -size * 1.25).as_bytes());
        }
        out.push(b'(');
        out.extend(win_ansi(line));
        out.extend_from_slice(b") Tj\n");
    }
    out.extend_from_slice(b"ET\nQ\n");
    out
}

/// A literal-string body in WinAnsiEncoding (Latin-1 plus the cp1252 extras used here); other
/// characters become `?`; `(`, `)` and `\` escaped.
fn win_ansi(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    for c in s.chars() {
        let b = match c {
            '€' => 0x80,
            '–' => 0x96,
            '—' => 0x97,
            c if (c as u32) < 0x80 && !c.is_control() => c as u8,
            c if (0xA0..=0xFF).contains(&(c as u32)) => c as u32 as u8,
            _ => b'?',
        };
        if matches!(b, b'(' | b')' | b'\\') {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn win_ansi_escapes_and_maps() {
        assert_eq!(win_ansi("a(b)\\ é·€✓"), b"a\\(b\\)\\\\ \xe9\xb7\x80?".to_vec());
    }
}
