//! OCR (feature `ocr`) on the scanned files of the shared corpus: words visible on each page come
//! back; pages with a text layer are not OCRed; hostile images fail typed within 5 s.
#![cfg(feature = "ocr")]

mod common;

use std::time::{Duration, Instant};

use common::{corpus, files};
use docstore_stages::extract::{ExtractLimits, extract_pdf_text};
use docstore_stages::ocr::{self, OcrError, OcrSettings};

fn has_words(text: &str, words: &[&str]) -> Vec<String> {
    let lower = text.to_lowercase();
    words
        .iter()
        .filter(|w| !lower.contains(&w.to_lowercase()))
        .map(|w| w.to_string())
        .collect()
}

fn require_tesseract() -> bool {
    docstore_testkit::tool("Tesseract with por+eng", ocr::check("por+eng"))
}

/// Scanned PDFs (no text layer): the words printed on them, as a reader sees them.
#[test]
fn scanned_pdfs_yield_the_words_on_the_page() {
    let dir = corpus();
    if !require_tesseract() {
        return;
    }
    let settings = OcrSettings::default();
    let cases: &[(&str, &[&str])] = &[
        // A Xerox JBIG2 scan with /Rotate 270: a speech bubble "It Doesn't Work?!?!?!".
        ("scanned-1p-jbig2-xerox-rot270.pdf", &["Doesn"]),
        // A Russian vehicle inspection form with English headings (DCT images, 2 pages).
        (
            "scanned-2p-a4-jpeg-form.pdf",
            &["Certificate", "periodic", "technical", "inspection", "VIN"],
        ),
        // A halftoned photograph of balloons: no words, only the proof that it runs.
        ("scanned-1p-ccitt-ghostscript.pdf", &[]),
    ];
    for (name, words) in cases {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        let start = Instant::now();
        let mut text = extract_pdf_text(&bytes, &ExtractLimits::default()).unwrap();
        let recognised = ocr::fill_scanned_pages(&bytes, &mut text, &settings).unwrap();
        eprintln!("{name}: {recognised} pages recognised in {:?}", start.elapsed());
        assert_eq!(recognised, text.page_count, "{name}: every page is a scan");
        let missing = has_words(&text.joined(), words);
        assert!(
            missing.is_empty(),
            "{name}: missing {missing:?} in {:?}",
            text.joined()
        );
    }
}

/// A PDF whose scanned pages carry an OCR text layer keeps it: no page is recognised again.
#[test]
fn a_text_layer_is_not_ocred_again() {
    let dir = corpus();
    if !require_tesseract() {
        return;
    }
    let bytes = std::fs::read(dir.join("scanned-6p-ocr-text-layer.pdf")).unwrap();
    let mut text = extract_pdf_text(&bytes, &ExtractLimits::default()).unwrap();
    let recognised = ocr::fill_scanned_pages(&bytes, &mut text, &OcrSettings::default()).unwrap();
    assert_eq!((recognised, text.ocr_pages), (0, 0));
    assert!(
        text.pages.iter().all(|p| p.split_whitespace().count() > 20),
        "every page has its text layer"
    );
}

/// Scanned images: every page of a multi-page fax TIFF, and a phone scan of a handwritten note.
#[test]
fn scanned_images_yield_the_words_on_each_page() {
    let dir = corpus();
    if !require_tesseract() {
        return;
    }
    let settings = OcrSettings::default();
    let fax = std::fs::read(dir.join("image-tiff-fax-g4-3p.tiff")).unwrap();
    let text = ocr::ocr_image(&fax, &settings).unwrap();
    assert_eq!((text.page_count, text.ocr_pages), (3, 3));
    for (i, page) in text.pages.iter().enumerate() {
        assert!(page.contains("Page"), "fax page {}: {page:?}", i + 1);
    }
    // Handwriting ("Corrupted" in ballpoint) is beyond Tesseract's printed-text models: it must
    // run and return, not find the word.
    let note = std::fs::read(dir.join("image-scanned-page-brother.jpg")).unwrap();
    let text = ocr::ocr_image(&note, &settings).unwrap();
    assert_eq!(text.page_count, 1);
}

/// A two-page Group 3 fax (the compression the `tiff` crate refuses): both pages are read.
#[test]
fn group3_fax_pages_are_read() {
    if !require_tesseract() {
        return;
    }
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fax/fax-g3-1d-2p.tif");
    let fax = std::fs::read(path).unwrap();
    let text = ocr::ocr_image(&fax, &OcrSettings::default()).unwrap();
    assert_eq!((text.page_count, text.ocr_pages), (2, 2));
    for (i, page) in text.pages.iter().enumerate() {
        let missing = has_words(page, &["Hemograma", "Glicemia", "Paciente"]);
        assert!(
            missing.is_empty(),
            "fax page {}: {missing:?} not in {page:?}",
            i + 1
        );
    }
}

#[test]
fn hostile_images_fail_typed_within_bounds() {
    let dir = corpus();
    if !require_tesseract() {
        return;
    }
    let settings = OcrSettings {
        max_time: Duration::from_secs(4),
        ..OcrSettings::default()
    };
    for path in files(&dir, "hostile-", &[".jpg", ".png", ".gif", ".tiff", ".webp"]) {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let bytes = std::fs::read(&path).unwrap();
        let start = Instant::now();
        let result = ocr::ocr_image(&bytes, &settings);
        let took = start.elapsed();
        eprintln!("{name}: {result:?} in {took:?}");
        assert!(took < Duration::from_secs(5), "{name}: {took:?}");
        match (name.as_str(), result) {
            (_, Err(OcrError::Image(_))) => {}
            (_, other) => panic!("{name}: expected a typed image error, got {other:?}"),
        }
    }
}
