//! The thumbnail stage on every image of the shared corpus (`DOCSTORE_CORPUS`, default
//! `../shared/corpus`): a PNG of at most 256 px that decodes, with EXIF orientation applied — or a
//! typed rejection listed here file by file. Hostile files: a typed error within 5 s, no panic,
//! bounded memory (peak RSS of this test process checked).

#[path = "../../stages/tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{assert_hostile_pdf_verdicts, corpus, files, variant};
use docstore_stages::thumbnail::{EDGE, ThumbnailError, ThumbnailLimits, thumbnail_image, thumbnail_pdf};
use docstore_tools::load::peak_rss_mib;

/// Corpus images this stage rejects, and why (checked: each must fail with this error kind).
fn expected_rejection(name: &str) -> Option<fn(&ThumbnailError) -> bool> {
    match name {
        // Lossless (process 14) 12-bit JPEG from a DICOM export: not a baseline/progressive JPEG
        // the pure-Rust decoder reads.
        "image-dicom-mr-lossless-12bit.jpg" => {
            Some(|e| matches!(e, ThumbnailError::Decode(_) | ThumbnailError::Unsupported(_)))
        }
        _ => None,
    }
}

#[test]
fn every_corpus_image_is_thumbnailed_or_rejected_as_listed() {
    let dir = corpus();
    let images = files(
        &dir,
        "image-",
        &[".jpg", ".png", ".gif", ".tif", ".tiff", ".webp"],
    );
    assert!(images.len() >= 15, "corpus images missing");
    let limits = common::untimed(ThumbnailLimits::default());
    for path in images {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let bytes = std::fs::read(&path).unwrap();
        let result = thumbnail_image(&bytes, &limits);
        match (expected_rejection(&name), result) {
            (None, Ok(t)) => {
                assert!(
                    t.width.max(t.height) <= EDGE && t.width >= 1 && t.height >= 1,
                    "{name}"
                );
                let back = image::load_from_memory_with_format(&t.png, image::ImageFormat::Png)
                    .unwrap_or_else(|e| panic!("{name}: thumbnail does not decode: {e}"));
                assert_eq!((back.width(), back.height()), (t.width, t.height), "{name}");
                // Aspect ratio within a pixel of the (oriented) source's.
                let expect_h = t.width as f64 * t.source_height as f64 / t.source_width as f64;
                assert!((expect_h - t.height as f64).abs() <= 1.0, "{name}: aspect");
                eprintln!(
                    "{name}: {}×{} → {}×{}",
                    t.source_width, t.source_height, t.width, t.height
                );
            }
            (Some(is), Err(e)) => assert!(is(&e), "{name}: rejected, but not as listed: {e}"),
            (None, Err(e)) => panic!("{name}: unexpected rejection: {e}"),
            (Some(_), Ok(_)) => panic!("{name}: listed as rejected but thumbnailed"),
        }
    }
}

#[test]
fn exif_orientation_is_applied() {
    let dir = corpus();
    let bytes = std::fs::read(dir.join("image-jpeg-exif-orientation-6.jpg")).unwrap();
    // `load_from_memory` ignores EXIF: the pixels as stored.
    let stored = image::load_from_memory(&bytes).unwrap().to_rgb8();
    let t = thumbnail_image(&bytes, &ThumbnailLimits::default()).unwrap();
    let thumb = image::load_from_memory(&t.png).unwrap().to_rgb8();
    let resized = |img: &image::RgbImage| {
        image::imageops::resize(
            img,
            thumb.width(),
            thumb.height(),
            image::imageops::FilterType::Triangle,
        )
    };
    let diff = |a: &image::RgbImage| -> u64 {
        a.as_raw()
            .iter()
            .zip(thumb.as_raw())
            .map(|(x, y)| (*x as i64 - *y as i64).unsigned_abs())
            .sum()
    };
    // Orientation 6: shown rotated 90° clockwise. The thumbnail must match that, not the stored
    // pixels (the file is square, so only the content tells).
    let rotated = diff(&resized(&image::imageops::rotate90(&stored)));
    let unrotated = diff(&resized(&stored));
    assert!(
        rotated * 2 < unrotated,
        "rotated {rotated} vs as stored {unrotated}"
    );
}

#[test]
fn hostile_images_fail_typed_fast_and_bounded() {
    let dir = corpus();
    let hostile = files(
        &dir,
        "hostile-",
        &[".jpg", ".png", ".gif", ".tif", ".tiff", ".webp"],
    );
    assert!(hostile.len() >= 4, "hostile images missing");
    for path in hostile {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let bytes = std::fs::read(&path).unwrap();
        let start = Instant::now();
        let result = thumbnail_image(&bytes, &ThumbnailLimits::default());
        let took = start.elapsed();
        eprintln!(
            "{name}: {result:?} in {took:?}",
            result = result.as_ref().map(|t| (t.width, t.height))
        );
        assert!(took < Duration::from_secs(5), "{name}: took {took:?}");
        match (name.as_str(), result) {
            // A valid 1×1 image whose zTXt chunk is a decompression bomb: refused by its
            // text-chunk limit before any decoder runs.
            ("hostile-png-text-chunk-bomb.png", Err(ThumbnailError::TooLarge(why))) => {
                assert!(why.contains("PNG text chunk"), "{why}")
            }
            ("hostile-png-text-chunk-bomb.png", other) => panic!("{name}: {other:?}"),
            (_, Ok(t)) => panic!("{name}: hostile file accepted ({}×{})", t.width, t.height),
            (_, Err(_)) => {}
        }
    }
    let peak = peak_rss_mib();
    assert!(peak < 512, "peak RSS {peak} MiB");
}

/// Corpus PDFs whose page 1 this stage does not render, and why. (Owner-password files — printing
/// or copying restricted, empty user password — are readable and rendered: viewing is allowed.)
fn expected_pdf_rejection(name: &str) -> Option<fn(&ThumbnailError) -> bool> {
    match name {
        "encrypted-aes256-r6-userpw.pdf" | "encrypted-rc4-40-userpw.pdf" => {
            Some(|e| matches!(e, ThumbnailError::Encrypted))
        }
        _ => None,
    }
}

#[test]
fn every_corpus_pdf_gets_a_page_one_thumbnail_or_is_rejected_as_listed() {
    let dir = corpus();
    let pdfs = common::pdfs(&dir, false);
    assert!(pdfs.len() >= 30, "corpus PDFs missing");
    let limits = common::untimed(ThumbnailLimits::default());
    let mut failures = Vec::new();
    for path in pdfs {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let bytes = std::fs::read(&path).unwrap();
        let start = Instant::now();
        let result = thumbnail_pdf(&bytes, &limits);
        eprintln!(
            "{name}: {:?} in {:?}",
            result.as_ref().map(|t| (t.width, t.height)),
            start.elapsed()
        );
        match (expected_pdf_rejection(&name), result) {
            (None, Ok(t)) => {
                assert_eq!(t.width.max(t.height), EDGE, "{name}");
                image::load_from_memory_with_format(&t.png, image::ImageFormat::Png)
                    .unwrap_or_else(|e| panic!("{name}: thumbnail does not decode: {e}"));
            }
            (Some(is), Err(e)) => assert!(is(&e), "{name}: rejected, but not as listed: {e}"),
            (None, Err(e)) => failures.push(format!("{name}: unexpected rejection: {e}")),
            (Some(_), Ok(_)) => failures.push(format!("{name}: listed as rejected but rendered")),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn hostile_pdfs_fail_typed_fast_and_bounded() {
    let dir = corpus();
    assert_hostile_pdf_verdicts(&dir, |bytes| {
        match thumbnail_pdf(bytes, &ThumbnailLimits::default()) {
            Ok(_) => "thumbnailed".to_owned(),
            Err(ThumbnailError::Defect(d)) => variant(&d),
            Err(ThumbnailError::Unsupported(_)) => "NotPdf".to_owned(),
            Err(e) => variant(&e),
        }
    });
    let peak = peak_rss_mib();
    assert!(peak < 512, "peak RSS {peak} MiB");
}

/// The 12-megapixel photo goes through the scaled JPEG decode (1/4 scale in the IDCT): the
/// thumbnail still reports the source's full size and matches a full decode closely.
#[test]
fn large_jpeg_scaled_decode_matches_a_full_decode() {
    let dir = corpus();
    let bytes = std::fs::read(dir.join("image-large-photo-4032x3024.jpg")).unwrap();
    let t = thumbnail_image(&bytes, &ThumbnailLimits::default()).unwrap();
    assert_eq!(
        (t.source_width, t.source_height, t.width, t.height),
        (4032, 3024, 256, 192)
    );
    let ours = image::load_from_memory(&t.png).unwrap().to_rgb8();
    let full = image::load_from_memory(&bytes).unwrap().resize_exact(
        256,
        192,
        image::imageops::FilterType::Lanczos3,
    );
    let full = full.to_rgb8();
    let mean_abs: f64 = ours
        .as_raw()
        .iter()
        .zip(full.as_raw())
        .map(|(a, b)| (*a as f64 - *b as f64).abs())
        .sum::<f64>()
        / ours.as_raw().len() as f64;
    assert!(
        mean_abs < 4.0,
        "mean absolute difference {mean_abs:.2} per channel"
    );
}
