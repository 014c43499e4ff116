//! The stamp stage on the shared corpus: every non-hostile PDF stamped (qpdf --check clean where
//! qpdf accepts the input; the stamp text found on every page by the text extractor; output kept
//! compact) or rejected with a listed typed reason; every hostile PDF fails typed, as listed,
//! within 5 s.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{assert_hostile_pdf_verdicts, corpus, pdfs, variant};
use docstore_stages::extract::{ExtractLimits, extract_pdf_text};
use docstore_stages::stamp::{StampError, StampInfo, StampLimits, stamp_pdf};

fn info() -> StampInfo {
    StampInfo {
        clinic: "Clínica São Lucas".into(),
        exam_id: "EXM-2026-0042".into(),
        patient_id: "PAC-7781".into(),
        time: "2026-11-24 10:30 UTC".into(),
        released: true,
        text: "Documento liberado eletronicamente".into(),
    }
}

/// `qpdf --check` verdict, or `None` when qpdf is not installed.
fn qpdf_ok(path: &Path) -> Option<bool> {
    let out = std::process::Command::new("qpdf")
        .arg("--check")
        .arg(path)
        .output()
        .ok()?;
    // 0: clean, 3: warnings only; 2: errors.
    Some(matches!(out.status.code(), Some(0) | Some(3)))
}

fn expected_rejection(name: &str) -> Option<fn(&StampError) -> bool> {
    match name {
        "encrypted-aes256-r6-userpw.pdf" | "encrypted-rc4-40-userpw.pdf" => {
            Some(|e| matches!(e, StampError::Encrypted))
        }
        "encrypted-aes128-emptypw.pdf"
        | "encrypted-aes256-r6-ownerpw-restricted-30p.pdf"
        | "encrypted-rc4-128-ownerpw-30p.pdf" => Some(|e| matches!(e, StampError::Restricted)),
        _ => None,
    }
}

#[test]
fn every_corpus_pdf_is_stamped_or_rejected_as_listed() {
    let dir = corpus();
    let have_qpdf = qpdf_ok(&dir.join("text-1p-latex-objstm.pdf")).is_some();
    if !have_qpdf {
        docstore_testkit::missing("qpdf is not installed: the stamped files are not checked with it");
    }
    let work = tempfile::tempdir().unwrap();
    let mut problems = Vec::new();
    for path in pdfs(&dir, false) {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let bytes = std::fs::read(&path).unwrap();
        let start = Instant::now();
        let limits = StampLimits {
            max_time: common::UNTIMED,
            ..StampLimits::default()
        };
        let result = stamp_pdf(&bytes, &info(), &limits);
        match (expected_rejection(&name), result) {
            (Some(is), Err(e)) => assert!(is(&e), "{name}: rejected, but not as listed: {e}"),
            (Some(_), Ok(_)) => problems.push(format!("{name}: listed as rejected but stamped")),
            (None, Err(e)) => problems.push(format!("{name}: unexpected rejection: {e}")),
            (None, Ok(out)) => {
                let took = start.elapsed();
                let stamped = work.path().join(&name);
                std::fs::write(&stamped, &out).unwrap();
                if have_qpdf && qpdf_ok(&path) == Some(true) && qpdf_ok(&stamped) != Some(true) {
                    problems.push(format!("{name}: qpdf --check fails on the stamped file"));
                }
                // Compact: object streams kept, not a blown-up rewrite.
                if out.len() > bytes.len() * 3 / 2 + 64 * 1024 {
                    problems.push(format!("{name}: {} → {} bytes", bytes.len(), out.len()));
                }
                match extract_pdf_text(&out, &ExtractLimits::default()) {
                    Ok(text) => {
                        let missing: Vec<usize> = text
                            .pages
                            .iter()
                            .enumerate()
                            .filter(|(_, p)| !p.contains("EXM-2026-0042"))
                            .map(|(i, _)| i + 1)
                            .collect();
                        if !missing.is_empty() {
                            problems.push(format!("{name}: stamp text not found on pages {missing:?}"));
                        }
                    }
                    Err(e) => problems.push(format!("{name}: stamped file does not extract: {e}")),
                }
                eprintln!("{name}: {} → {} bytes in {took:?}", bytes.len(), out.len());
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn hostile_pdfs_fail_typed_within_bounds() {
    let dir = corpus();
    let limits = StampLimits {
        max_time: Duration::from_secs(4),
        ..StampLimits::default()
    };
    assert_hostile_pdf_verdicts(&dir, |bytes| match stamp_pdf(bytes, &info(), &limits) {
        Ok(_) => "stamped".to_owned(),
        Err(StampError::Defect(d)) => variant(&d),
        Err(e) => variant(&e),
    });
}
