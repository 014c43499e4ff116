//! `docstore extract`: the text stage on a local PDF (or, with OCR, an image), no store.

use docstore::Error;
use serde_json::json;

/// `docstore extract FILE [--ocr]`: the text stage on a local PDF (or, with OCR, an image).
pub(crate) async fn run(
    file: &std::path::Path,
    output: Option<&std::path::Path>,
    ocr: bool,
    json_out: bool,
) -> Result<(), Error> {
    use docstore_stages::extract::{ExtractLimits, extract_pdf_text};
    let limits = ExtractLimits::default();
    let bytes = super::read_limited(file, limits.max_input)?;
    let name = file.display().to_string();
    let text = tokio::task::spawn_blocking(move || -> Result<_, String> {
        if ocr {
            return extract_with_ocr(&bytes, &limits);
        }
        extract_pdf_text(&bytes, &limits).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| Error::InvalidInput(format!("extract task failed: {e}")))?
    .map_err(|e| Error::InvalidInput(format!("{name}: {e}")))?;
    let joined = text.joined();
    match output {
        Some(out) => std::fs::write(out, &joined).map_err(|e| Error::io(out.display().to_string(), e))?,
        None if !json_out => print!("{joined}"),
        None => {}
    }
    if json_out {
        let v = json!({"pages": text.page_count, "chars": text.chars(), "ocr_pages": text.ocr_pages,
                       "alternative_pages": text.alternative_pages,
                       "text": if output.is_none() { Some(&joined) } else { None }});
        say!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    }
    Ok(())
}

#[cfg(feature = "ocr")]
fn extract_with_ocr(
    bytes: &[u8],
    limits: &docstore_stages::extract::ExtractLimits,
) -> Result<docstore_stages::extract::ExtractedText, String> {
    use docstore_stages::ocr;
    let settings = ocr::OcrSettings {
        languages: std::env::var("DOCSTORE_OCR_LANGUAGES").unwrap_or_else(|_| "por+eng".into()),
        ..ocr::OcrSettings::default()
    };
    if !bytes.starts_with(b"%PDF-") {
        return ocr::ocr_image(bytes, &settings).map_err(|e| e.to_string());
    }
    let mut text = docstore_stages::extract::extract_pdf_text(bytes, limits).map_err(|e| e.to_string())?;
    ocr::fill_scanned_pages(bytes, &mut text, &settings).map_err(|e| e.to_string())?;
    Ok(text)
}

#[cfg(not(feature = "ocr"))]
fn extract_with_ocr(
    _: &[u8],
    _: &docstore_stages::extract::ExtractLimits,
) -> Result<docstore_stages::extract::ExtractedText, String> {
    Err("--ocr: this docstore was built without the `ocr` feature".into())
}
