//! Untrusted PDF bytes through the structural check every PDF stage runs first: a typed verdict on
//! any input, never a panic; a document it accepts has a page tree to walk.
#![no_main]

use docstore_stages::preflight::{PreflightLimits, preflight};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = PreflightLimits {
        max_stream_decoded: 8 << 20,
        max_total_decoded: 32 << 20,
        ..PreflightLimits::default()
    };
    if let Ok(doc) = preflight(data, &limits) {
        let _ = doc.get_pages();
    }
});
