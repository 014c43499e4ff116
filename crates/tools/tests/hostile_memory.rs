//! Every hostile file of the corpus through every stage that reads it, one at a time in this
//! process: a typed error within 5 s, and under 512 MiB peak RSS for that file alone — the peak is
//! reset between files through `/proc/self/clear_refs`. One test in this binary, so no other test
//! shares the process while it measures.

#[path = "../../stages/tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{corpus, files};
use docstore_stages::extract::{ExtractLimits, extract_pdf_text};
use docstore_stages::stamp::{StampInfo, StampLimits, stamp_pdf};
use docstore_stages::thumbnail::{ThumbnailLimits, thumbnail_image, thumbnail_pdf};
use docstore_tools::load::{peak_rss_mib as peak_mib, reset_peak_rss as reset_peak};

/// A stage's result with its error as text.
fn typed<T, E: std::fmt::Display>(r: Result<T, E>) -> Result<(), String> {
    r.map(drop).map_err(|e| e.to_string())
}

/// One stage on one file: its typed error as text.
type Run = fn(&[u8]) -> Result<(), String>;

fn stamp(b: &[u8]) -> Result<(), String> {
    let info = StampInfo {
        clinic: "Clínica".into(),
        exam_id: "exm-1".into(),
        patient_id: "pac-1".into(),
        time: "2026-12-01 10:00 UTC".into(),
        released: true,
        text: "Documento liberado".into(),
    };
    typed(stamp_pdf(b, &info, &StampLimits::default()))
}

fn pdf_thumbnail(b: &[u8]) -> Result<(), String> {
    typed(thumbnail_pdf(b, &ThumbnailLimits::default()))
}

fn text(b: &[u8]) -> Result<(), String> {
    typed(extract_pdf_text(b, &ExtractLimits::default()))
}

fn image_thumbnail(b: &[u8]) -> Result<(), String> {
    typed(thumbnail_image(b, &ThumbnailLimits::default()))
}

#[cfg(feature = "ocr")]
fn ocr(b: &[u8]) -> Result<(), String> {
    let settings = docstore_stages::ocr::OcrSettings::default();
    typed(docstore_stages::ocr::ocr_image(b, &settings))
}

#[test]
fn each_hostile_file_fails_typed_fast_and_small_in_every_stage() {
    let dir = corpus();
    let hostile = files(
        &dir,
        "hostile-",
        &[".pdf", ".jpg", ".png", ".gif", ".tiff", ".webp"],
    );
    assert!(hostile.len() >= 16, "hostile files missing");
    let resettable = reset_peak();
    let mut rows = Vec::new();
    for path in hostile {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let bytes = std::fs::read(&path).unwrap();
        let runs: Vec<(&str, Run)> = if name.ends_with(".pdf") {
            vec![("stamp", stamp), ("thumbnail", pdf_thumbnail), ("text", text)]
        } else {
            vec![
                ("thumbnail", image_thumbnail),
                #[cfg(feature = "ocr")]
                ("ocr", ocr),
            ]
        };
        for (stage, run) in runs {
            reset_peak();
            let start = Instant::now();
            let result = run(&bytes);
            let took = start.elapsed();
            let peak = peak_mib();
            eprintln!("{name} / {stage}: {result:?} in {took:?}, peak {peak} MiB");
            assert!(result.is_err(), "{name} / {stage}: {result:?}");
            assert!(took < Duration::from_secs(5), "{name} / {stage}: {took:?}");
            rows.push((name.clone(), stage, peak));
        }
    }
    let worst = rows.iter().max_by_key(|r| r.2).unwrap();
    eprintln!(
        "worst peak: {} / {}: {} MiB (per-file reset: {resettable})",
        worst.0, worst.1, worst.2
    );
    assert!(
        worst.2 < 512,
        "{} / {}: peak RSS {} MiB",
        worst.0,
        worst.1,
        worst.2
    );
}
