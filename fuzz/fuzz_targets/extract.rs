//! Untrusted PDF bytes through the text stage: a typed error or text within the limits (pages no
//! more than the page count, text no longer than the cap).
#![no_main]

use std::time::Duration;

use docstore_stages::extract::{ExtractLimits, extract_pdf_text};
use libfuzzer_sys::fuzz_target;

mod dependency_panics;

fuzz_target!(|data: &[u8]| {
    dependency_panics::tolerate_caught_dependency_panics();
    let limits = ExtractLimits {
        max_pages: 200,
        max_text: 1 << 20,
        max_time: Duration::from_secs(5),
        ..ExtractLimits::default()
    };
    if let Ok(text) = extract_pdf_text(data, &limits) {
        assert!(text.pages.len() <= text.page_count.max(1));
        assert!(text.joined().len() <= limits.max_text + text.pages.len());
    }
});
