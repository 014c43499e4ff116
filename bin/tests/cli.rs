//! The `docstore` binary end to end: every bad input gets a clear message and a non-zero exit, and
//! leaves the stored state exactly as it was.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

struct Cli {
    _dir: tempfile::TempDir,
    data: PathBuf,
    work: PathBuf,
}

impl Cli {
    fn new() -> Cli {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let work = dir.path().to_owned();
        let cli = Cli {
            _dir: dir,
            data,
            work,
        };
        cli.ok(&["init"]);
        cli
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_docstore"))
            .args(args)
            .env("DOCSTORE_DATA_DIR", &self.data)
            .env("DOCSTORE_ACTOR", "test:cli")
            .current_dir(&self.work)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(&all)).unwrap()
    }

    /// Runs a failing command: returns (exit code, stderr).
    fn fails(&self, args: &[&str]) -> (i32, String) {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(
            stderr.starts_with("error: "),
            "{args:?}: unclear error {stderr:?}"
        );
        assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
        (out.status.code().unwrap(), stderr)
    }

    fn file(&self, name: &str, bytes: &[u8]) -> String {
        let p = self.work.join(name);
        std::fs::write(&p, bytes).unwrap();
        p.display().to_string()
    }

    fn put(&self, file: &str, doc: Option<&str>) -> Value {
        let mut args = vec!["put", file, "--patient", "p-1", "--exam", "e-1"];
        if let Some(d) = doc {
            args.extend(["--document", d]);
        }
        self.json(&args)
    }

    /// Logical state: every document's versions and every blob's bytes.
    fn state(&self) -> (Value, BTreeMap<PathBuf, Vec<u8>>) {
        let docs = self.json(&["list", "--patient", "p-1"]);
        let mut versions = Vec::new();
        for d in docs.as_array().unwrap() {
            let id = d["document_id"].as_str().unwrap();
            versions.push((d.clone(), self.json(&["versions", id])));
        }
        let mut blobs = BTreeMap::new();
        walk(&self.data.join("objects"), &mut blobs);
        (serde_json::to_value(versions).unwrap(), blobs)
    }
}

fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.insert(p.clone(), std::fs::read(&p).unwrap());
        }
    }
}

fn setup() -> (Cli, String) {
    let cli = Cli::new();
    let f = cli.file("report.pdf", b"%PDF-1.7 a small report");
    let v1 = cli.put(&f, None);
    let doc = v1["document_id"].as_str().unwrap().to_owned();
    assert_eq!(v1["media_type"], "application/pdf");
    let f2 = cli.file("report2.pdf", b"%PDF-1.7 the corrected report");
    assert_eq!(cli.put(&f2, Some(&doc))["version"], 2);
    (cli, doc)
}

#[test]
fn round_trip_versions_ranges_and_listing() {
    let (cli, doc) = setup();
    let out = cli.work.join("out.pdf");
    cli.ok(&["get", &doc, "--version", "1", "-o", out.to_str().unwrap()]);
    assert_eq!(std::fs::read(&out).unwrap(), b"%PDF-1.7 a small report");
    assert_eq!(cli.ok(&["get", &doc]), "%PDF-1.7 the corrected report");
    assert_eq!(cli.ok(&["get", &doc, "--range", "9-12"]), "the");
    let versions = cli.json(&["versions", &doc]);
    assert_eq!(versions.as_array().unwrap().len(), 2);
    assert!(cli.ok(&["versions", &doc]).contains(" v2 "));
    let audit = cli.json(&["audit", "--document", &doc]);
    assert!(audit.as_array().unwrap().iter().all(|r| r["actor"] == "test:cli"));
    assert!(cli.ok(&["audit"]).contains("get_range"));
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let (cli, doc) = setup();
    let before = cli.state();
    let empty = cli.file("empty.pdf", b"");
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (
            vec![
                "put",
                &empty,
                "--patient",
                "p-1",
                "--exam",
                "e-1",
                "--document",
                &doc,
            ],
            7,
            "empty body",
        ),
        (vec!["get", "no-such-doc"], 3, "not found"),
        (vec!["get", &doc, "--version", "7"], 3, "at version 7"),
        (vec!["get", &doc, "--range", "0-9999"], 7, "range"),
        (vec!["versions", "no-such-doc"], 3, "not found"),
        (
            vec!["put", &empty, "--patient", "p 1", "--exam", "e-1"],
            7,
            "patient id",
        ),
        (
            vec![
                "put",
                "report.pdf",
                "--patient",
                "p-1",
                "--exam",
                "e-1",
                "--document",
                &doc,
                "--expected-version",
                "1",
            ],
            4,
            "conflict",
        ),
        (
            vec![
                "put",
                "report.pdf",
                "--patient",
                "p-2",
                "--exam",
                "e-1",
                "--document",
                &doc,
            ],
            7,
            "another patient",
        ),
        (
            vec!["put", "missing.pdf", "--patient", "p-1", "--exam", "e-1"],
            1,
            "No such file",
        ),
        (vec!["purge", &doc], 6, "delete the document before purging"),
    ];
    for (args, code, needle) in &cases {
        let (got, stderr) = cli.fails(args);
        assert_eq!(got, *code, "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr:?} lacks {needle:?}");
    }
    assert!(cli.state() == before, "a refused command changed the store");

    // Purge under legal hold: refused, document and blobs intact, restorable.
    cli.ok(&["hold", &doc, "--on"]);
    cli.ok(&["delete", &doc]);
    let (code, stderr) = cli.fails(&["purge", &doc]);
    assert_eq!(code, 6);
    assert!(stderr.contains("legal hold"));
    cli.ok(&["restore", &doc]);
    cli.ok(&["hold", &doc, "--off"]);
    assert!(cli.state() == before, "refused purge changed the store");
    let (code, stderr) = cli.fails(&["hold", &doc]);
    assert_eq!(code, 7, "{stderr}");

    // Retention, then purge once allowed.
    cli.ok(&["hold", &doc, "--retain-until", "2999-01-01"]);
    cli.ok(&["delete", &doc]);
    assert!(
        cli.fails(&["purge", &doc])
            .1
            .contains("retained until 2999-01-01")
    );
    cli.ok(&["hold", &doc, "--clear-retention"]);
    let purged = cli.json(&["purge", &doc]);
    assert_eq!(purged["blobs"], 2);
    assert_eq!(cli.fails(&["get", &doc]).0, 3);
    assert!(cli.state().1.is_empty(), "purge left blobs");
}

#[test]
fn keyring_with_wrong_permissions_is_refused() {
    let (cli, doc) = setup();
    let ring = cli.data.join("keyring.json");
    for mode in [0o644, 0o640, 0o604] {
        std::fs::set_permissions(&ring, std::fs::Permissions::from_mode(mode)).unwrap();
        let (code, stderr) = cli.fails(&["get", &doc]);
        assert_eq!(code, 8, "{stderr}");
        assert!(stderr.contains("unsafe permissions"), "{stderr}");
    }
    std::fs::set_permissions(&ring, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(cli.ok(&["get", &doc]), "%PDF-1.7 the corrected report");
}

#[test]
fn corrupted_metadata_database_is_reported_and_left_alone() {
    let (cli, doc) = setup();
    let db = cli.data.join("metadata.sqlite");
    // Fold the WAL into the main file first, so the corruption below is the whole database.
    for side in ["metadata.sqlite-wal", "metadata.sqlite-shm"] {
        let _ = std::fs::remove_file(cli.data.join(side));
    }
    let mut garbage = b"this is not a database ".repeat(400);
    garbage.truncate(8192);
    std::fs::write(&db, &garbage).unwrap();
    for args in [
        vec!["get", doc.as_str()],
        vec!["versions", doc.as_str()],
        vec!["list", "--patient", "p-1"],
    ] {
        let (code, stderr) = cli.fails(&args);
        assert_eq!(code, 9, "{args:?}: {stderr}");
        assert!(stderr.contains("corrupted"), "{stderr}");
    }
    let f = cli.file("new.pdf", b"%PDF new");
    assert_eq!(cli.fails(&["put", &f, "--patient", "p-1", "--exam", "e-1"]).0, 9);
    assert_eq!(
        std::fs::read(&db).unwrap(),
        garbage,
        "the corrupted file was modified"
    );
}

#[test]
fn uninitialised_directory_and_double_init() {
    let cli = Cli::new();
    let (code, stderr) = cli.fails(&["init"]);
    assert_eq!(code, 7, "{stderr}");
    let out = Command::new(env!("CARGO_BIN_EXE_docstore"))
        .args(["versions", "x"])
        .env("DOCSTORE_DATA_DIR", cli.work.join("nowhere"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(9));
    assert!(String::from_utf8_lossy(&out.stderr).contains("docstore init"));
    assert!(
        !cli.work.join("nowhere").exists(),
        "a read command created a data directory"
    );
}

#[test]
fn tampered_blob_writes_no_output_file() {
    let (cli, doc) = setup();
    let mut blobs = BTreeMap::new();
    walk(&cli.data.join("objects"), &mut blobs);
    for (path, mut bytes) in blobs {
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(path, bytes).unwrap();
    }
    let out = cli.work.join("out.pdf");
    let (code, stderr) = cli.fails(&["get", &doc, "-o", out.to_str().unwrap()]);
    assert_eq!(code, 5, "{stderr}");
    assert!(stderr.contains("integrity"), "{stderr}");
    let leftovers: Vec<_> = std::fs::read_dir(&cli.work)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("out.pdf"))
        .collect();
    assert!(leftovers.is_empty(), "a failed read left {leftovers:?}");
}

#[test]
fn thumbnail_of_a_local_file() {
    let cli = Cli::new();
    let image = cli.work.join("photo.png");
    let img = image::RgbImage::from_fn(900, 300, |x, _| image::Rgb([(x % 251) as u8, 10, 200]));
    img.save(&image).unwrap();
    let out = cli.work.join("t.png");
    let v = cli.json(&["thumbnail", image.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_eq!((v["width"].as_u64(), v["height"].as_u64()), (Some(256), Some(85)));
    let back = image::open(&out).unwrap();
    assert_eq!((back.width(), back.height()), (256, 85));
    let not_image = cli.work.join("notes.txt");
    std::fs::write(&not_image, "not an image").unwrap();
    let (code, err) = cli.fails(&["thumbnail", not_image.to_str().unwrap()]);
    assert_eq!(code, 7, "{err}");
    assert!(err.contains("unsupported format"), "{err}");
    let (code, _) = cli.fails(&["thumbnail", "/nonexistent/x.png"]);
    assert_eq!(code, 1);
}

#[test]
fn stamp_and_extract_a_local_pdf() {
    let pdf = docstore_testkit::corpus_file("text-pt-8p-diario-oficial-signed.pdf");
    let cli = Cli::new();
    let out = cli.work.join("stamped.pdf");
    let pdf_s = pdf.to_str().unwrap();
    cli.json(&[
        "stamp",
        pdf_s,
        "-o",
        out.to_str().unwrap(),
        "--exam",
        "EXM-9",
        "--patient",
        "PAC-3",
    ]);
    let text = cli.ok(&["extract", out.to_str().unwrap()]);
    let pages: Vec<&str> = text.split('\u{c}').collect();
    assert_eq!(pages.len(), 8);
    assert!(
        pages.iter().all(|p| p.contains("EXM-9") && p.contains("PAC-3")),
        "stamp on every page"
    );
    let v = cli.json(&["extract", pdf_s]);
    assert_eq!(v["pages"], 8);
    let not_pdf = cli.work.join("x.pdf");
    std::fs::write(&not_pdf, "hello").unwrap();
    assert_eq!(cli.fails(&["stamp", not_pdf.to_str().unwrap()]).0, 7);
    assert_eq!(cli.fails(&["extract", not_pdf.to_str().unwrap()]).0, 7);
}

/// A PDF on which pdf_oxide panics (found by the `extract` fuzz target): a typed error and a
/// non-zero exit, and the panic's message, which quotes the document, nowhere in the output.
#[test]
fn third_party_panic_is_typed_and_its_message_withheld() {
    let cli = Cli::new();
    let pdf = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/stages/tests/fuzz-found/extract-pdf-oxide-char-boundary.pdf");
    let out = cli.run(&["extract", pdf.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("error: "), "{stderr}");
    assert!(stderr.contains("message withheld"), "the hook ran: {stderr}");
    assert!(
        !stderr.contains("char boundary"),
        "panic message leaked: {stderr}"
    );
    assert!(out.stdout.is_empty());
}

/// `docstore demo` end to end on the embedded store (a small run): every document uploaded is
/// processed and indexed, the searches find the synthetic reports by words of their body, and
/// `docstore search` / `reindex` then work on what it left; bad search input is a typed error.
#[test]
fn demo_processes_indexes_and_searches() {
    let cli = Cli::new();
    let out = cli.json(&["demo", "--reports", "8", "--images", "2", "--seed", "11"]);
    assert_eq!(out["documents"], 10);
    let searches = out["searches"].as_array().unwrap();
    assert_eq!(searches.len(), 6);
    let hits = |q: &str| -> u64 {
        searches
            .iter()
            .find(|s| s["query"].as_str().unwrap().starts_with(q))
            .unwrap()["results"]["total"]
            .as_u64()
            .unwrap()
    };
    // Eight reports of two to four of seven exams: these words are in some of them.
    assert!(hits("hemoglobina") > 0 && hits("\"colesterol total\"") + hits("creatinina") > 0);
    assert!(hits("glicoses") > 0, "plural query must reach the singular");
    let found = cli.json(&["search", "paciente", "--per-page", "20"]);
    assert_eq!(found["total"], 8, "every report has the word 'Paciente': {found}");
    assert_eq!(found["by_kind"]["report"], 8);
    let images = cli.json(&["search", "--kind", "image"]);
    assert_eq!(images["total"], 2);
    // Bad queries: invalid input (exit 7), nothing else happens.
    let (code, err) = cli.fails(&["search", "nofield:x"]);
    assert_eq!(code, 7, "{err}");
    assert!(err.contains("search query"), "{err}");
    let (code, _) = cli.fails(&["search", "x", "--per-page", "0"]);
    assert_eq!(code, 7);
    let (code, _) = cli.fails(&["search", "x", "--from", "yesterday"]);
    assert_eq!(code, 7);
    // A rebuild from the store finds the same documents.
    let re = cli.json(&["reindex"]);
    assert_eq!(re["documents"], 10);
    assert_eq!(cli.json(&["search", "paciente"])["total"], 8);
    // Every search is in the audit trail.
    let audit = cli.ok(&["audit", "--limit", "200"]);
    assert!(audit.matches("search").count() >= 9, "{audit}");
    // The index the searches read holds none of their words in the clear.
    let index = cli.data.join("index");
    let mut files = 0;
    for e in std::fs::read_dir(&index).unwrap() {
        let bytes = std::fs::read(e.unwrap().path()).unwrap().to_ascii_lowercase();
        files += 1;
        for word in ["hemoglobina", "paciente", "creatinina"] {
            assert!(
                !bytes.windows(word.len()).any(|w| w == word.as_bytes()),
                "{word} in the index"
            );
        }
    }
    assert!(files > 3, "{files} index files");
}

/// `docstore index`: a snapshot of the demo's index, its status, a restore into a new node's
/// directory that answers like the first, and an altered snapshot refused (exit 6, nothing put
/// in place).
#[test]
fn index_snapshot_status_and_restore() {
    let cli = Cli::new();
    let none = cli.json(&["index", "status"]);
    assert_eq!(
        (&none["entries"], &none["snapshots"], &none["newest"]),
        (&Value::Null, &json!(0), &Value::Null)
    );
    cli.json(&["demo", "--reports", "4", "--images", "1", "--seed", "5"]);
    let taken = cli.json(&["index", "snapshot"]);
    assert_eq!(taken["entries"], 5, "{taken}");
    assert_eq!(taken["positions"], json!([]), "no bus, no positions");
    let id = taken["id"].as_str().unwrap().to_owned();
    let status = cli.json(&["index", "status"]);
    assert_eq!(
        (&status["entries"], &status["snapshots"]),
        (&json!(5), &json!(1)),
        "{status}"
    );
    assert_eq!(status["newest"]["id"], id.as_str());
    assert_eq!(status["positions"], Value::Null);

    let node = cli.work.join("node-2").display().to_string();
    let restored = cli.json(&["index", "restore", "--index", &node]);
    assert_eq!(restored, taken);
    for q in ["paciente", "hemoglobina", ""] {
        let (one, two) = (
            cli.json(&["search", q]),
            cli.json(&["search", q, "--index", &node]),
        );
        assert_eq!(
            (&one["total"], &one["hits"]),
            (&two["total"], &two["hits"]),
            "{q:?}"
        );
    }
    let (code, err) = cli.fails(&["index", "restore", "--index", &node]);
    assert_eq!(code, 7, "a restore goes into a new directory: {err}");

    let files = cli
        .data
        .join("objects")
        .join("search-snapshots")
        .join(&id)
        .join("files");
    let victim = std::fs::read_dir(&files).unwrap().next().unwrap().unwrap().path();
    let mut bytes = std::fs::read(&victim).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&victim, bytes).unwrap();
    let node3 = cli.work.join("node-3");
    let (code, err) = cli.fails(&["index", "restore", "--index", &node3.display().to_string()]);
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("integrity"), "{err}");
    assert!(!node3.exists());
    let (code, _) = cli.fails(&[
        "index",
        "restore",
        "--id",
        "../x",
        "--index",
        &node3.display().to_string(),
    ]);
    assert_eq!(code, 7);
}

/// `docstore process` on the embedded default: what the CLI put is stamped, thumbnailed,
/// text-extracted and indexed, and the command exits once drained. Work an earlier process took
/// off the outbox but never finished (here: `docstore relay` onto an in-process bus that dies with
/// it) is announced again, a lost index is rebuilt, and a version no stage can read is reported
/// (non-zero exit) and tried again on the next run.
#[test]
fn process_handles_what_the_cli_put_and_what_a_dead_process_left() {
    let cli = Cli::new();
    let report = docstore_tools::synthetic::Generator::new(3, "Clínica", 2).report();
    let f = cli.file("laudo.pdf", &report.pdf);
    let doc = cli.put(&f, None)["document_id"].as_str().unwrap().to_owned();
    let state = |doc: &str| cli.json(&["versions", doc])[0]["state"].clone();
    assert_eq!(state(&doc), "pending");
    let (_, err) = cli.fails(&["search", "paciente"]);
    assert!(err.contains("no search index"), "nothing indexed yet: {err}");

    let out = cli.json(&["process"]);
    assert_eq!(out["dead_lettered"], 0, "{out}");
    for stage in ["stamp", "thumbnail", "text", "index"] {
        assert_eq!(out["handled"][stage], 1, "{stage}: {out}");
    }
    assert_eq!(state(&doc), "processed");
    let v = &cli.json(&["versions", &doc])[0];
    let mut stages: Vec<&str> = v["renditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["stage"].as_str().unwrap())
        .collect();
    stages.sort();
    assert_eq!(stages, ["stamp", "text", "thumbnail"]);
    assert_eq!(cli.json(&["search", "paciente"])["total"], 1);

    // Nothing left: the next run handles nothing and exits.
    let out = cli.json(&["process"]);
    assert_eq!(out["handled"]["stamp"], 0, "{out}");
    assert_eq!(
        (&out["catch_up"]["reannounced"], &out["catch_up"]["reindexed"]),
        (&0.into(), &0.into())
    );

    // Events lost with the process that held them: the outbox says sent, the version is pending.
    let img = image::RgbImage::from_fn(300, 200, |x, y| image::Rgb([(x % 251) as u8, (y % 241) as u8, 9]));
    let png = cli.work.join("raio-x.png");
    img.save_with_format(&png, image::ImageFormat::Png).unwrap();
    let put = [
        "put",
        png.to_str().unwrap(),
        "--patient",
        "p-1",
        "--exam",
        "e-2",
        "--kind",
        "image",
    ];
    let doc2 = cli.json(&put)["document_id"].as_str().unwrap().to_owned();
    cli.ok(&["relay", "--bus", "memory://", "--once"]);
    assert_eq!(state(&doc2), "pending");
    let out = cli.json(&["process"]);
    assert_eq!(out["catch_up"]["reannounced"], 1, "{out}");
    assert_eq!(state(&doc2), "processed");

    // The index lost: both documents are read back into it.
    std::fs::remove_dir_all(cli.data.join("index")).unwrap();
    let out = cli.json(&["process"]);
    assert_eq!(out["catch_up"]["reindexed"], 2, "{out}");
    let found = cli.json(&["search", "paciente"]);
    assert_eq!(found["total"], 1, "{found}");
    assert_eq!(cli.json(&["search", "--kind", "image"])["total"], 1);
    // An index from before its files were sealed (a plain meta.json, no key file): replaced and
    // rebuilt, not refused.
    let index = cli.data.join("index");
    std::fs::remove_dir_all(&index).unwrap();
    std::fs::create_dir(&index).unwrap();
    std::fs::set_permissions(&index, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    std::fs::write(index.join("meta.json"), br#"{"segments":[],"opstamp":0}"#).unwrap();
    let out = cli.json(&["process"]);
    assert_eq!(out["catch_up"]["reindexed"], 2, "{out}");
    assert_eq!(cli.json(&["search", "paciente"])["total"], 1);
    assert!(index.join("index.key").exists());

    // A version no stage can read: dead-lettered, named in a WARN line, a non-zero exit; it stays
    // pending and the next run tries it again.
    let bad = cli.file("broken.pdf", b"%PDF-1.7 not really");
    let doc3 = cli.put(&bad, None)["document_id"].as_str().unwrap().to_owned();
    for run in ["first", "next"] {
        let out = cli.run(&["process"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(10), "{run}: {err}");
        assert!(
            err.contains("\"dead-lettered\"") && err.contains(&doc3),
            "{run}: {err}"
        );
        assert!(
            err.trim_end().lines().last().unwrap().starts_with("error: "),
            "{err}"
        );
        assert_eq!(state(&doc3), "pending");
    }
}

/// `docstore process --follow` handles versions put while it runs and ends cleanly on SIGTERM.
#[test]
fn process_follow_handles_new_versions_until_sigterm() {
    let cli = Cli::new();
    let follow = Command::new(env!("CARGO_BIN_EXE_docstore"))
        .args(["process", "--follow"])
        .env("DOCSTORE_DATA_DIR", &cli.data)
        .current_dir(&cli.work)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let report = docstore_tools::synthetic::Generator::new(5, "Clínica", 2).report();
    let f = cli.file("laudo.pdf", &report.pdf);
    let doc = cli.put(&f, None)["document_id"].as_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while cli.json(&["versions", &doc])[0]["state"] != "processed" {
        assert!(
            std::time::Instant::now() < deadline,
            "not processed while following"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let status = Command::new("kill")
        .args(["-TERM", &follow.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = follow.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        summary.contains("stamp 1") && summary.contains("0 dead-lettered"),
        "{summary}"
    );
}

/// `docstore load --rate`: exam `i`'s uploads start no earlier than `i / rate` seconds in, so 5
/// exams at 4 a second take at least a second to upload; a rate that is not above 0 is refused.
#[test]
fn load_paces_uploads_at_the_given_rate() {
    let cli = Cli::new();
    let load = |rate: &str| {
        Command::new(env!("CARGO_BIN_EXE_docstore"))
            .args(["--json", "load", "--exams", "5", "--image-size", "300x200"])
            .args(["--distinct-images", "1", &format!("--rate={rate}")])
            .env("DOCSTORE_DATA_DIR", &cli.data)
            .current_dir(&cli.work)
            .output()
            .unwrap()
    };
    let out = load("4");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["plan"]["rate"], 4.0);
    let uploads = v["report"]["upload_seconds"].as_f64().unwrap();
    assert!(uploads >= 1.0, "5 exams at 4/s uploaded in {uploads} s");
    assert_eq!(v["report"]["failed_documents"], 0);
    for bad in ["0", "-1", "NaN"] {
        let out = load(bad);
        assert!(!out.status.success(), "--rate {bad} accepted");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("above 0"),
            "--rate {bad}"
        );
    }
}

/// `docstore load` on the embedded default: a small day through every stage, figures in the JSON
/// report; nothing from the documents or the keyring in any output, log line (at trace level)
/// or the report.
#[test]
fn load_measures_a_small_day_and_leaks_nothing() {
    let cli = Cli::new();
    let out = Command::new(env!("CARGO_BIN_EXE_docstore"))
        .args([
            "--json",
            "load",
            "--exams",
            "4",
            "--image-size",
            "900x700",
            "--distinct-images",
            "2",
        ])
        .env("DOCSTORE_DATA_DIR", &cli.data)
        .env("RUST_LOG", "trace,pdf_oxide=trace,lopdf=trace")
        .current_dir(&cli.work)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    let r = &v["report"];
    assert_eq!(r["exams"], 4);
    assert_eq!((r["reports"].as_u64(), r["images"].as_u64()), (Some(4), Some(4)));
    assert_eq!(r["failed_documents"], 0);
    assert!(r["exams_per_second"].as_f64().unwrap() > 0.0);
    assert!(r["time_to_searchable_ms"]["p50"].as_f64().unwrap() > 0.0);
    for stage in ["stamp", "thumbnail", "text", "index"] {
        assert_eq!(r["stages"][stage]["processed"], 8, "{stage}: {r}");
        assert!(r["stages"][stage]["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
    }
    assert!(r["peak_rss_mib"].as_u64().unwrap() > 0 && r["cpu_seconds"].as_f64().unwrap() > 0.0);
    // The search mix timed over the finished index, and the index's size on disk.
    let search = &r["search_ms"];
    assert!(search["p50"].as_f64().unwrap() > 0.0, "{r}");
    assert!(search["p99"].as_f64().unwrap() >= search["p50"].as_f64().unwrap());
    // (The writer may still remove merged-away files when the process ends: not compared exactly.)
    assert!(r["index_bytes"].as_u64().unwrap() > 4 * 1000, "{r}");
    let written = std::fs::read_to_string(cli.data.join("load-report.json")).unwrap();
    assert_eq!(serde_json::from_str::<Value>(&written).unwrap(), v);
    // Searchable: every report says "Paciente".
    assert_eq!(cli.json(&["search", "paciente"])["total"], 4);
    // No plaintext: report words, analyte names, the clinic's letterhead, and no key material.
    let keyring: Value =
        serde_json::from_str(&std::fs::read_to_string(cli.data.join("keyring.json")).unwrap()).unwrap();
    let mut secrets: Vec<String> = keyring["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["material"].as_str().unwrap().to_owned())
        .collect();
    secrets.extend(
        [
            "Paciente",
            "Laboratório",
            "Hemoglobina",
            "Creatinina",
            "Glicose",
            "Valores de referência",
            "Observação",
        ]
        .map(String::from),
    );
    for s in &secrets {
        for (what, text) in [("stdout", &*stdout), ("stderr", &*stderr), ("report", &*written)] {
            assert!(
                !text.to_lowercase().contains(&s.to_lowercase()),
                "{what} contains {s:?}"
            );
        }
    }
    assert!(
        stderr.lines().count() > 0,
        "trace logging produced no lines to check"
    );
}

#[test]
fn a_bmp_is_stored_as_an_image_and_thumbnailed() {
    let cli = Cli::new();
    let bmp = cli.work.join("scan"); // no extension: the bytes say what it is
    let img = image::RgbImage::from_fn(512, 256, |x, y| image::Rgb([(x % 251) as u8, (y % 241) as u8, 7]));
    img.save_with_format(&bmp, image::ImageFormat::Bmp).unwrap();
    let v = cli.put(bmp.to_str().unwrap(), None);
    assert_eq!(v["media_type"], "image/bmp");
    let out = cli.work.join("t.png");
    let t = cli.json(&["thumbnail", bmp.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_eq!(
        (t["width"].as_u64(), t["height"].as_u64()),
        (Some(256), Some(128))
    );
}

/// Runs `docstore ARGS | head -c 1`: the reader goes away after one byte. Returns (status, stderr).
fn into_closed_pipe(cli: &Cli, args: &[&str]) -> (std::process::ExitStatus, String) {
    use std::io::Read;
    let mut child = Command::new(env!("CARGO_BIN_EXE_docstore"))
        .args(args)
        .env("DOCSTORE_DATA_DIR", &cli.data)
        .env("DOCSTORE_ACTOR", "test:cli")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut one = [0u8; 1];
    stdout.read_exact(&mut one).unwrap();
    drop(stdout);
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    (child.wait().unwrap(), stderr)
}

#[test]
fn a_closed_pipe_ends_a_command_quietly() {
    let (cli, doc) = setup();
    // Far more output than a pipe buffers (64 KiB), so the writer meets the closed pipe: a
    // thousand puts in process leave some three thousand audit lines.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = docstore::config::StoreConfig::resolve(&cli.data, None)
            .unwrap()
            .open(false)
            .await
            .unwrap();
        let who = docstore::Identity::new("test:cli");
        for i in 0..1000 {
            let req = docstore::conformance::request(None, "p-1", "e-1");
            store
                .put(&who, req, format!("%PDF-1.7 {i}").as_bytes())
                .await
                .unwrap();
        }
    });
    let (status, stderr) = into_closed_pipe(&cli, &["audit", "--limit", "100000"]);
    assert!(status.success(), "{status}: {stderr}");
    assert!(stderr.is_empty(), "{stderr}");
    // A large version to standard output, likewise.
    let big = cli.file("big.pdf", &vec![b'x'; 4 << 20]);
    cli.put(&big, Some(&doc));
    let (status, stderr) = into_closed_pipe(&cli, &["get", &doc]);
    assert!(status.success(), "{status}: {stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}

/// Decrypted content written with `get -o`, whole or a range, is readable by its owner only, and
/// an existing output is replaced, not written through.
#[test]
fn get_output_files_are_owner_only() {
    let cli = Cli::new();
    let src = cli.file("exam.pdf", b"%PDF-1.4 owner only");
    let v = cli.put(&src, None);
    let doc = v["document_id"].as_str().unwrap();
    let whole = cli.work.join("whole.pdf");
    std::fs::write(&whole, b"old").unwrap();
    std::fs::set_permissions(&whole, std::fs::Permissions::from_mode(0o644)).unwrap();
    cli.ok(&["get", doc, "-o", whole.to_str().unwrap()]);
    let part = cli.work.join("part.pdf");
    cli.ok(&["get", doc, "--range", "0-8", "-o", part.to_str().unwrap()]);
    for path in [&whole, &part] {
        let mode = std::fs::metadata(path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{}: {:o}", path.display(), mode & 0o777);
    }
    assert_eq!(std::fs::read(&whole).unwrap(), b"%PDF-1.4 owner only");
}

/// A third-party parser's own error text (which can quote the file) is in no error message, not
/// even at `RUST_LOG=trace`; only the `docstore_parser_detail` log target, when named, has it.
#[test]
fn third_party_error_texts_stay_out_of_errors() {
    let cli = Cli::new();
    let pdf = cli.file(
        "broken.pdf",
        b"%PDF-1.4\nMARIASOUZA-PATIENT\nstartxref\n9\n%%EOF\n",
    );
    let mut png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR".to_vec();
    png.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, 8, 2, 0, 0, 0]);
    let png = cli.file("cut.png", &png);
    let run = |args: &[&str], rust_log: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_docstore"));
        c.args(args)
            .env("DOCSTORE_DATA_DIR", &cli.data)
            .current_dir(&cli.work);
        match rust_log {
            Some(l) => c.env("RUST_LOG", l),
            None => c.env_remove("RUST_LOG"),
        };
        let out = c.output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let out = cli.work.join("out");
    let out = out.to_str().unwrap();
    let (pdf, png) = (pdf.as_str(), png.as_str());
    for (args, fixed) in [
        (vec!["extract", pdf], "lopdf could not parse the PDF"),
        (vec!["stamp", pdf, "-o", out], "lopdf could not parse the PDF"),
        (
            vec!["thumbnail", png, "-o", out],
            "the image decoder refused the data",
        ),
    ] {
        for level in [None, Some("trace")] {
            let err = run(&args, level);
            assert!(err.contains(fixed), "{args:?} {level:?}: {err}");
            // lopdf's and png's own words.
            assert!(
                !err.contains("couldn't parse") && !err.to_lowercase().contains("end of file"),
                "{args:?} {level:?}: {err}"
            );
        }
    }
    let detail = run(&["extract", pdf], Some("warn,docstore_parser_detail=debug"));
    assert!(detail.contains("couldn't parse input"), "{detail}");
}
