//! Inputs the fuzz targets found (`scripts/fuzz.sh`), kept as regression tests.

use std::path::PathBuf;
use std::time::Duration;

use docstore_events::CloudEvent;
use docstore_stages::extract::{ExtractError, ExtractLimits, extract_pdf_text};

fn found(name: &str) -> Vec<u8> {
    std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fuzz-found")
            .join(name),
    )
    .unwrap()
}

/// `extract` target: pdf_oxide 0.3.78 slices a string inside a multi-byte character while it
/// looks for an object header (`has_standalone_obj_keyword`) and panics. The panic stays inside
/// the stage's thread; pdf-extract cannot read the file either, so the caller gets a typed error
/// and the process goes on. (Found when the harness aborted at every panic; it now counts caught
/// dependency panics instead, see `fuzz/fuzz_targets/dependency_panics.rs`.)
#[test]
fn third_party_panic_in_extraction_is_a_typed_error() {
    let limits = ExtractLimits {
        max_time: Duration::from_secs(60),
        ..ExtractLimits::default()
    };
    let got = extract_pdf_text(&found("extract-pdf-oxide-char-boundary.pdf"), &limits);
    assert!(matches!(got, Err(ExtractError::Panicked)), "{got:?}");
}

/// `event_decode` target: a 129-digit number decoded as a float re-encoded one ulp off, so an
/// event changed when re-published. Fixed by serde_json's `float_roundtrip`.
#[test]
fn event_with_a_long_number_re_encodes_to_itself() {
    let bytes = found("event-decode-long-number.json");
    let ev = CloudEvent::decode(&bytes).unwrap();
    assert_eq!(CloudEvent::decode(&ev.encode()).unwrap(), ev);
}
