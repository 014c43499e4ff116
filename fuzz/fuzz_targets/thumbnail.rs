//! Untrusted image or PDF bytes through the thumbnail stage, under its limits: a typed error or a
//! PNG of at most 256 px that decodes.
#![no_main]

use docstore_stages::thumbnail::{EDGE, ThumbnailLimits, thumbnail_image, thumbnail_pdf};
use libfuzzer_sys::fuzz_target;

mod dependency_panics;

fuzz_target!(|data: &[u8]| {
    dependency_panics::tolerate_caught_dependency_panics();
    let limits = ThumbnailLimits {
        max_side: 8_000,
        max_decoded: 64 << 20,
        ..ThumbnailLimits::default()
    };
    let result = if data.starts_with(b"%PDF-") {
        thumbnail_pdf(data, &limits)
    } else {
        thumbnail_image(data, &limits)
    };
    if let Ok(t) = result {
        assert!(t.width.max(t.height) <= EDGE && t.width >= 1 && t.height >= 1);
        assert!(t.png.starts_with(b"\x89PNG"));
    }
});
