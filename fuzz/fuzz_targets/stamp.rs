//! Untrusted PDF bytes through the stamp stage: a typed error or a stamped PDF that passes the
//! structural check itself, within the stage's time bound; panics in lopdf are caught by the stage
//! (see `dependency_panics.rs`: such a panic is logged, not counted as a crash).
#![no_main]

use std::time::Duration;

use docstore_stages::preflight::{PreflightLimits, preflight};
use docstore_stages::stamp::{StampInfo, StampLimits, stamp_pdf};
use libfuzzer_sys::fuzz_target;

mod dependency_panics;

fuzz_target!(|data: &[u8]| {
    dependency_panics::tolerate_caught_dependency_panics();
    let info = StampInfo {
        clinic: "Clínica São Lucas".into(),
        exam_id: "exm-1".into(),
        patient_id: "pac-1".into(),
        time: "2026-12-01 10:00 UTC".into(),
        released: true,
        text: "Documento liberado eletronicamente".into(),
    };
    let limits = StampLimits {
        max_pages: 200,
        max_time: Duration::from_secs(5),
        ..StampLimits::default()
    };
    if let Ok(out) = stamp_pdf(data, &info, &limits) {
        preflight(&out, &PreflightLimits::default()).expect("a stamped PDF passes the check");
    }
});
