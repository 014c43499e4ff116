//! Owner-password PDFs encrypted with RC4 40-bit (revision 2) whose trailer has no `/ID`, as older
//! writers made them (fixtures and their writer in `tests/encrypted/`): the text and thumbnail
//! stages read them where the permissions allow, as pdftotext and pdftoppm do; the stamp keeps its
//! rule (an encrypted file is not stamped); a file that needs a user password stays refused.

mod common;

use std::path::PathBuf;

use docstore_stages::extract::{ExtractError, ExtractLimits, extract_pdf_text};
use docstore_stages::preflight::{PdfDefect, PreflightLimits, preflight};
use docstore_stages::stamp::{StampError, StampInfo, StampLimits, stamp_pdf};
use docstore_stages::thumbnail::{ThumbnailError, ThumbnailLimits, thumbnail_pdf};

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/encrypted")
        .join(name);
    let bytes = std::fs::read(&path).unwrap();
    // What makes them what they are: RC4 revision 2 and no file identifier.
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains("/V 1 /R 2 /Length 40"), "{name}");
    assert!(!text.contains("/ID"), "{name}");
    bytes
}

/// Share of the page's pixels that are not near white.
fn inked(png: &[u8]) -> f64 {
    let img = image::load_from_memory(png).unwrap().to_luma8();
    let dark = img.pixels().filter(|p| p.0[0] < 200).count();
    dark as f64 / (img.width() * img.height()) as f64
}

const PAGES: [&str; 2] = [
    "Hemograma completo\nGlicemia de jejum 92 mg/dL",
    "Paciente Maria Souza\nLaudo liberado",
];

#[test]
fn an_owner_password_file_without_an_id_is_read_and_thumbnailed() {
    let bytes = fixture("rc4-40-ownerpw-noid.pdf");
    let doc = preflight(&bytes, &PreflightLimits::default()).unwrap();
    assert_eq!(doc.get_pages().len(), 2);
    assert!(doc.was_encrypted());
    // The /ID lent for the key is not left in the document the stages get.
    assert!(!doc.trailer.has(b"ID"));

    let text = extract_pdf_text(&bytes, &ExtractLimits::default()).unwrap();
    assert_eq!(text.page_count, 2);
    let pages: Vec<&str> = text.pages.iter().map(|p| p.trim()).collect();
    assert_eq!(pages, PAGES);

    let thumb = thumbnail_pdf(&bytes, &ThumbnailLimits::default()).unwrap();
    assert_eq!((thumb.width, thumb.height), (198, 256));
    let ink = inked(&thumb.png);
    assert!(ink > 0.0005, "page 1 rendered blank ({ink})");
}

#[test]
fn text_is_refused_where_the_permissions_forbid_extraction_but_the_page_is_still_shown() {
    let bytes = fixture("rc4-40-ownerpw-noid-locked.pdf");
    assert_eq!(
        extract_pdf_text(&bytes, &ExtractLimits::default()),
        Err(ExtractError::Restricted)
    );
    // Viewing needs no permission once the empty user password opens the file.
    let thumb = thumbnail_pdf(&bytes, &ThumbnailLimits::default()).unwrap();
    assert!(inked(&thumb.png) > 0.0005);
}

#[test]
fn the_stamp_keeps_its_rule_for_encrypted_files() {
    let info = StampInfo {
        clinic: "Clínica São Lucas".into(),
        exam_id: "EXM-2026-0042".into(),
        patient_id: "PAC-7781".into(),
        time: "2026-11-24 10:30 UTC".into(),
        released: true,
        text: "Documento liberado eletronicamente".into(),
    };
    for name in ["rc4-40-ownerpw-noid.pdf", "rc4-40-ownerpw-noid-locked.pdf"] {
        let got = stamp_pdf(&fixture(name), &info, &StampLimits::default());
        assert!(matches!(got, Err(StampError::Restricted)), "{name}: {got:?}");
    }
    let got = stamp_pdf(&fixture("rc4-40-userpw-noid.pdf"), &info, &StampLimits::default());
    assert!(matches!(got, Err(StampError::Encrypted)), "{got:?}");
}

#[test]
fn a_file_that_needs_a_user_password_stays_refused_without_an_id_too() {
    let bytes = fixture("rc4-40-userpw-noid.pdf");
    assert!(matches!(
        preflight(&bytes, &PreflightLimits::default()),
        Err(PdfDefect::Encrypted)
    ));
    assert_eq!(
        extract_pdf_text(&bytes, &ExtractLimits::default()),
        Err(ExtractError::Encrypted)
    );
    assert!(matches!(
        thumbnail_pdf(&bytes, &ThumbnailLimits::default()),
        Err(ThumbnailError::Encrypted)
    ));
}

/// pdftotext (poppler), the reference the issue names, reads the same words from the two files
/// that open, so the fixtures are what a third-party reader takes them for.
#[test]
fn poppler_reads_the_fixtures_as_we_do() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/encrypted");
    let Some(open) = common::pdftotext_or_skip(&dir.join("rc4-40-ownerpw-noid.pdf")) else {
        return;
    };
    let pages: Vec<&str> = open
        .trim_end_matches('\u{c}')
        .split('\u{c}')
        .map(str::trim)
        .collect();
    assert_eq!(pages, PAGES);
    assert!(common::pdftotext(&dir.join("rc4-40-ownerpw-noid-locked.pdf")).is_some());
    assert!(common::pdftotext(&dir.join("rc4-40-userpw-noid.pdf")).is_none());
}
