//! Helpers shared by the corpus tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[allow(unused_imports)] // not every test file that includes this module reads the corpus
pub(crate) use docstore_testkit::corpus;

/// The time guard of the correctness tests on the non-hostile corpus. The stages' own limits
/// (seconds) are for hostile input, and the hostile tests hold them; a debug build on a loaded
/// 2-core machine can pass them on a good file, which says nothing about its output.
pub(crate) const UNTIMED: Duration = Duration::from_secs(120);

/// `limits` with the render time guard at [`UNTIMED`].
pub(crate) fn untimed(
    limits: docstore_stages::thumbnail::ThumbnailLimits,
) -> docstore_stages::thumbnail::ThumbnailLimits {
    docstore_stages::thumbnail::ThumbnailLimits {
        max_render_time: UNTIMED,
        ..limits
    }
}

/// Corpus files whose name starts with `prefix` and ends with one of `exts`, sorted.
pub(crate) fn files(dir: &Path, prefix: &str, exts: &[&str]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            name.starts_with(prefix) && exts.iter().any(|e| name.ends_with(e))
        })
        .collect();
    out.sort();
    out
}

/// The corpus PDFs, hostile ones or the others.
pub(crate) fn pdfs(dir: &Path, hostile: bool) -> Vec<PathBuf> {
    files(dir, "", &[".pdf"])
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("hostile-") == hostile)
        .collect()
}

/// What every hostile PDF in the corpus must be refused as, file by file: a [`PdfDefect`] variant
/// name from the structural check, or `Encrypted` / `NotPdf` (each stage's own variants).
///
/// [`PdfDefect`]: docstore_stages::preflight::PdfDefect
pub(crate) fn hostile_pdf_verdict(name: &str) -> &'static str {
    match name {
        "hostile-bad-xref.pdf" => "DamagedXref",
        // lopdf cannot decrypt it (its objects sit in broken flate streams): treated as locked.
        "hostile-broken-flate-null-pages.pdf" => "Encrypted",
        "hostile-decompression-bomb.pdf" => "ContentFilter",
        "hostile-jpeg-40000px-wide.pdf" => "ImageTooLarge",
        "hostile-not-a-pdf-5bytes.pdf" => "NotPdf",
        "hostile-objstm-self-ref.pdf" => "ObjectStreamLoop",
        "hostile-outlines-loop.pdf" => "OutlineLoop",
        "hostile-pagecount-intmin.pdf" => "PageCount",
        "hostile-pages-loop.pdf" => "PageTreeLoop",
        "hostile-truncated-eof-in-array.pdf" => "Unreadable",
        "hostile-type3-content-cycle.pdf" => "ContentCycle",
        "hostile-xref-prev-loop.pdf" => "XrefLoop",
        other => panic!("{other}: a new hostile PDF; list its verdict here"),
    }
}

/// The variant name of a value's `Debug` form (`PageCount { .. }` → `PageCount`).
pub(crate) fn variant(value: &impl std::fmt::Debug) -> String {
    format!("{value:?}")
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Runs `stage` on every hostile PDF of the corpus and checks each answer, within 5 s, against
/// [`hostile_pdf_verdict`]; `stage` returns the variant name it got (or its success word).
pub(crate) fn assert_hostile_pdf_verdicts(dir: &Path, stage: impl Fn(&[u8]) -> String) {
    let hostile = pdfs(dir, true);
    assert!(hostile.len() >= 10, "hostile PDFs missing");
    let mut problems = Vec::new();
    for path in hostile {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let bytes = std::fs::read(&path).unwrap();
        let start = Instant::now();
        let got = stage(&bytes);
        let took = start.elapsed();
        eprintln!("{name}: {got} in {took:?}");
        assert!(took < Duration::from_secs(5), "{name}: took {took:?}");
        if got != hostile_pdf_verdict(&name) {
            problems.push(format!("{name}: {got}, expected {}", hostile_pdf_verdict(&name)));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

/// poppler's `pdftotext` reading of `path` (the reference for reading order and recall), or
/// `None` when it fails or is not installed.
pub(crate) fn pdftotext(path: &Path) -> Option<String> {
    let out = std::process::Command::new("pdftotext")
        .arg(path)
        .arg("-")
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `pdftotext` on `path`, or `None` after [`docstore_testkit::missing`] when it is not installed.
pub(crate) fn pdftotext_or_skip(path: &Path) -> Option<String> {
    let text = pdftotext(path);
    if text.is_none() {
        docstore_testkit::missing("pdftotext (poppler-utils) is not installed");
    }
    text
}
