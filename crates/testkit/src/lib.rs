//! What docstore's tests need from outside their process, and one policy for when it is missing.
//!
//! # Layout
//! - [`service`] and [`services`]: a server the test talks to (Kafka, PostgreSQL, an S3, DynamoDB
//!   or KMS endpoint), named by the variable `scripts/services.sh` exports;
//! - [`tool`]: a program or library on the machine (`pdftotext`, `qpdf`, Tesseract's languages);
//! - [`corpus`] and [`corpus_file`]: the shared test corpus.
//!
//! # The policy
//! A missing service or tool skips the test with a `SKIPPED:` line on stderr, so that
//! `cargo test` works on a laptop with nothing installed, unless [`REQUIRE`] is set in the
//! environment (as `scripts/test.sh`, and therefore CI, sets it): then it fails the test. A missing
//! corpus always fails: every checkout is meant to have it beside it, and a test that quietly
//! passes without its input proves nothing.

use std::path::PathBuf;

/// The variable that turns a missing service or tool into a failure.
pub const REQUIRE: &str = "DOCSTORE_REQUIRE_SERVICES";

/// Whether missing services and tools fail the test ([`REQUIRE`] is set).
pub fn required() -> bool {
    std::env::var_os(REQUIRE).is_some()
}

/// Skips (returns) or, under [`REQUIRE`], fails: `what` says what is missing and how to get it.
pub fn missing(what: &str) {
    assert!(!required(), "{what}, and {REQUIRE} is set");
    eprintln!("SKIPPED: {what}");
}

/// The value of the service variable `var` (for example `DOCSTORE_TEST_PG_URL`), or `None` after
/// [`missing`] when it is unset or empty.
pub fn service(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            missing(&format!(
                "{var} is not set (scripts/services.sh start, then source its env)"
            ));
            None
        }
    }
}

/// The values of all of `vars`, or `None` after [`missing`] naming the first one unset.
pub fn services<const N: usize>(vars: [&str; N]) -> Option<[String; N]> {
    let mut out = Vec::with_capacity(N);
    for var in vars {
        out.push(service(var)?);
    }
    out.try_into().ok()
}

/// Whether a tool the test needs is there: `check` is its probe's result. `Err` goes to
/// [`missing`] with the probe's message.
pub fn tool<E: std::fmt::Display>(name: &str, check: Result<(), E>) -> bool {
    match check {
        Ok(()) => true,
        Err(e) => {
            missing(&format!("{name} is not available: {e}"));
            false
        }
    }
}

/// The shared test corpus: `DOCSTORE_CORPUS`, else `shared/corpus` beside the checkout. Panics
/// when its `MANIFEST.tsv` is not there.
pub fn corpus() -> PathBuf {
    let dir = std::env::var_os("DOCSTORE_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus"));
    assert!(
        dir.join("MANIFEST.tsv").is_file(),
        "the test corpus is not at {} (put it there or set DOCSTORE_CORPUS)",
        dir.display()
    );
    dir
}

/// One file of the corpus; panics when it is not there.
pub fn corpus_file(name: &str) -> PathBuf {
    let path = corpus().join(name);
    assert!(path.is_file(), "{} is not in the corpus", path.display());
    path
}

/// Every file under `dir`, in every subdirectory, sorted (for the tests that grep what a
/// directory holds on disk).
///
/// # Panics
/// If `dir` cannot be read (a test helper: the test fails there).
pub fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_service_is_returned_and_the_corpus_is_found() {
        // Cargo sets this variable for the tests it runs, to the value it had at build time.
        let var = "CARGO_MANIFEST_DIR";
        let dir = env!("CARGO_MANIFEST_DIR").to_owned();
        assert_eq!(service(var), Some(dir.clone()));
        assert_eq!(services([var, var]), Some([dir.clone(), dir]));
        assert!(corpus().join("MANIFEST.tsv").is_file());
    }

    #[test]
    fn a_missing_service_fails_exactly_when_required() {
        let unset = "DOCSTORE_TESTKIT_NEVER_SET";
        let outcome = std::panic::catch_unwind(|| service(unset));
        match outcome {
            Ok(v) => {
                assert!(!required());
                assert_eq!(v, None);
            }
            Err(_) => assert!(required()),
        }
        let outcome = std::panic::catch_unwind(|| tool("probe", Err::<(), _>("absent")));
        assert_eq!(outcome.is_err(), required());
    }
}
