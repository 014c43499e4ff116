//! The processing stages on corpus files, in process (the library call a worker makes) and as
//! whole processes next to their peers on the same file: `docstore stamp` vs `qpdf --overlay`,
//! `docstore thumbnail` vs `vipsthumbnail` (JPEG) and `pdftoppm -scale-to 256` (PDF),
//! `docstore extract` vs `pdftotext`, `docstore extract --ocr` vs `pdftoppm -r 300 | tesseract`.
//!
//! Process benches run when `DOCSTORE_BIN` names a release `docstore` of the default features
//! (what the stamp, thumbnail and extract rows time) and the peer is installed; the OCR group
//! runs `DOCSTORE_OCR_BIN`, a build with `--features ocr`, which also loads Tesseract, Leptonica
//! and their ~50 shared libraries at every start (about 11 ms here). `scripts/bench-stages.sh`
//! builds both and prints the ratios. The corpus comes from `DOCSTORE_CORPUS` (default `../shared/corpus`).

#![allow(missing_docs)] // criterion_group! generates undocumented items

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use docstore_stages::extract::{ExtractLimits, extract_pdf_text};
use docstore_stages::stamp::{StampInfo, StampLimits, stamp_pdf};
use docstore_stages::thumbnail::{ThumbnailLimits, thumbnail_image, thumbnail_pdf};

fn corpus() -> PathBuf {
    std::env::var_os("DOCSTORE_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus"))
}

fn ours() -> Option<PathBuf> {
    std::env::var_os("DOCSTORE_BIN").map(PathBuf::from)
}

#[cfg(feature = "ocr")]
fn ours_with_ocr() -> Option<PathBuf> {
    std::env::var_os("DOCSTORE_OCR_BIN").map(PathBuf::from)
}

fn installed(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs a command to completion, failing the bench if it fails (a peer that errors is not timed).
fn run(cmd: &mut Command) {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A one-page A4 overlay for `qpdf --overlay` carrying what our stamp draws: a framed box with
/// five lines of Helvetica near the bottom-left corner.
fn overlay_pdf(path: &Path) {
    use lopdf::content::{Content, Operation};
    use lopdf::{Document, Object, Stream, dictionary};
    let mut doc = Document::with_version("1.5");
    let pages_id = doc.new_object_id();
    let font = doc.add_object(dictionary! {
        "Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Helvetica",
        "Encoding" => "WinAnsiEncoding",
    });
    let mut ops = vec![
        Operation::new("q", vec![]),
        Operation::new("rg", vec![1.into(), 1.into(), 1.into()]),
        Operation::new("re", vec![24.into(), 24.into(), 260.into(), 70.into()]),
        Operation::new("B", vec![]),
        Operation::new("rg", vec![0.into(), 0.into(), 0.into()]),
        Operation::new("BT", vec![]),
        Operation::new("Tf", vec!["F1".into(), 8.into()]),
        Operation::new("Td", vec![30.into(), 82.into()]),
        Operation::new("TL", vec![12.into()]),
    ];
    for line in [
        "Clinica Exemplo",
        "Exame: exm-1 Paciente: pac-1",
        "Liberado em 2026-11-25 10:00 UTC",
        "Documento liberado eletronicamente",
        "",
    ] {
        ops.push(Operation::new("Tj", vec![Object::string_literal(line)]));
        ops.push(Operation::new("T*", vec![]));
    }
    ops.push(Operation::new("ET", vec![]));
    ops.push(Operation::new("Q", vec![]));
    let content = doc.add_object(Stream::new(
        dictionary! {},
        Content { operations: ops }.encode().unwrap(),
    ));
    let page = doc.add_object(dictionary! {
        "Type" => "Page", "Parent" => pages_id, "Contents" => content,
        "MediaBox" => vec![0.into(), 0.into(), 595.into(), 842.into()],
        "Resources" => dictionary! { "Font" => dictionary! { "F1" => font } },
    });
    doc.objects.insert(
        pages_id,
        Object::Dictionary(dictionary! { "Type" => "Pages", "Kids" => vec![page.into()], "Count" => 1 }),
    );
    let catalog = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages_id });
    doc.trailer.set("Root", catalog);
    doc.save(path).unwrap();
}

fn stamp(c: &mut Criterion) {
    let dir = corpus();
    let tmp = tempfile::tempdir().unwrap();
    let overlay = tmp.path().join("overlay.pdf");
    overlay_pdf(&overlay);
    let info = StampInfo {
        clinic: "Clínica Exemplo".into(),
        exam_id: "exm-1".into(),
        patient_id: "pac-1".into(),
        time: "2026-11-25 10:00 UTC".into(),
        released: true,
        text: "Documento liberado eletronicamente".into(),
    };
    let mut g = c.benchmark_group("stamp");
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    for file in [
        "text-2p-pdf20-tagged-latex.pdf",
        "text-pt-8p-diario-oficial-signed.pdf",
        "text-47p-word2013-xrefstream.pdf",
    ] {
        let path = dir.join(file);
        let bytes = std::fs::read(&path).unwrap();
        g.bench_with_input(BenchmarkId::new("lib", file), &bytes, |b, bytes| {
            b.iter(|| stamp_pdf(bytes, &info, &StampLimits::default()).unwrap())
        });
        let out = tmp.path().join("out.pdf");
        if let Some(bin) = ours() {
            g.bench_function(BenchmarkId::new("docstore", file), |b| {
                b.iter(|| run(Command::new(&bin).arg("stamp").arg(&path).arg("-o").arg(&out)))
            });
        }
        if installed("qpdf") {
            g.bench_function(BenchmarkId::new("qpdf-overlay", file), |b| {
                b.iter(|| {
                    run(Command::new("qpdf")
                        .arg(&path)
                        .arg("--overlay")
                        .arg(&overlay)
                        .args(["--repeat=1", "--"])
                        .arg(&out))
                })
            });
        }
    }
    g.finish();
}

fn thumbnail(c: &mut Criterion) {
    let dir = corpus();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.png");
    let mut g = c.benchmark_group("thumbnail");
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    for file in [
        "image-large-photo-4032x3024.jpg",
        "image-scanned-page-brother.jpg",
        "text-2p-pdf20-tagged-latex.pdf",
        "scanned-2p-a4-jpeg-form.pdf",
        "pagesize-a0-survey-plan.pdf",
    ] {
        let path = dir.join(file);
        let bytes = std::fs::read(&path).unwrap();
        let pdf = file.ends_with(".pdf");
        g.bench_with_input(BenchmarkId::new("lib", file), &bytes, |b, bytes| {
            b.iter(|| {
                if pdf {
                    thumbnail_pdf(bytes, &ThumbnailLimits::default()).unwrap()
                } else {
                    thumbnail_image(bytes, &ThumbnailLimits::default()).unwrap()
                }
            })
        });
        if let Some(bin) = ours() {
            g.bench_function(BenchmarkId::new("docstore", file), |b| {
                b.iter(|| run(Command::new(&bin).arg("thumbnail").arg(&path).arg("-o").arg(&out)))
            });
        }
        if !pdf && installed("vipsthumbnail") {
            g.bench_function(BenchmarkId::new("vipsthumbnail", file), |b| {
                b.iter(|| {
                    run(Command::new("vipsthumbnail")
                        .arg(&path)
                        .args(["-s", "256", "-o"])
                        .arg(&out))
                })
            });
        }
        if pdf && installed("pdftoppm") {
            let prefix = tmp.path().join("page");
            g.bench_function(BenchmarkId::new("pdftoppm", file), |b| {
                b.iter(|| {
                    run(Command::new("pdftoppm")
                        .args(["-png", "-scale-to", "256", "-f", "1", "-l", "1", "-singlefile"])
                        .arg(&path)
                        .arg(&prefix))
                })
            });
        }
    }
    g.finish();
}

fn extract(c: &mut Criterion) {
    let dir = corpus();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.txt");
    let mut g = c.benchmark_group("extract");
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    for file in [
        "text-2p-pdf20-tagged-latex.pdf",
        "text-pt-8p-diario-oficial-signed.pdf",
        "text-47p-word2013-xrefstream.pdf",
    ] {
        let path = dir.join(file);
        let bytes = std::fs::read(&path).unwrap();
        g.bench_with_input(BenchmarkId::new("lib", file), &bytes, |b, bytes| {
            b.iter(|| extract_pdf_text(bytes, &ExtractLimits::default()).unwrap())
        });
        if let Some(bin) = ours() {
            g.bench_function(BenchmarkId::new("docstore", file), |b| {
                b.iter(|| run(Command::new(&bin).arg("extract").arg(&path).arg("-o").arg(&out)))
            });
        }
        if installed("pdftotext") {
            g.bench_function(BenchmarkId::new("pdftotext", file), |b| {
                b.iter(|| run(Command::new("pdftotext").arg(&path).arg(&out)))
            });
        }
    }
    g.finish();
}

#[cfg(feature = "ocr")]
fn ocr(c: &mut Criterion) {
    use docstore_stages::ocr::{OcrSettings, fill_scanned_pages};
    let dir = corpus();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.txt");
    let mut g = c.benchmark_group("ocr");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    for file in ["scanned-1p-jbig2-xerox-rot270.pdf", "scanned-2p-a4-jpeg-form.pdf"] {
        let path = dir.join(file);
        let bytes = std::fs::read(&path).unwrap();
        g.bench_with_input(BenchmarkId::new("lib", file), &bytes, |b, bytes| {
            b.iter(|| {
                let mut text = extract_pdf_text(bytes, &ExtractLimits::default()).unwrap();
                fill_scanned_pages(bytes, &mut text, &OcrSettings::default()).unwrap();
                text
            })
        });
        if let Some(bin) = ours_with_ocr() {
            g.bench_function(BenchmarkId::new("docstore", file), |b| {
                b.iter(|| {
                    run(Command::new(&bin)
                        .args(["extract", "--ocr"])
                        .arg(&path)
                        .arg("-o")
                        .arg(&out))
                })
            });
        }
        if installed("pdftoppm") && installed("tesseract") {
            let script = format!(
                "set -e; d=$(mktemp -d); pdftoppm -r 300 -gray -png '{}' \"$d/p\"; \
                 for p in \"$d\"/p*.png; do tesseract \"$p\" - -l por+eng >> '{}' 2>/dev/null; done; rm -rf \"$d\"",
                path.display(),
                out.display()
            );
            g.bench_function(BenchmarkId::new("pdftoppm-tesseract", file), |b| {
                b.iter(|| run(Command::new("sh").args(["-c", &script])))
            });
        }
    }
    g.finish();
}

#[cfg(not(feature = "ocr"))]
fn ocr(_: &mut Criterion) {}

criterion_group!(benches, stamp, thumbnail, extract, ocr);
criterion_main!(benches);
