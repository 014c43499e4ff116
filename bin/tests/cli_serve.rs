//! `docstore serve` and `docstore token` as a user runs them: a fresh data directory, a
//! document put with the CLI, the service on 127.0.0.1 (port 0), a token minted by the CLI, the
//! document read back and found by search over HTTP (the embedded pipeline processed it in the
//! service's process), SIGTERM ending the service cleanly, and the service re-executed with its
//! allocator settings.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn docstore(dir: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_docstore"));
    c.env("DOCSTORE_DATA_DIR", dir).env_remove("DOCSTORE_CONFIG");
    c
}

/// One HTTP/1.1 request over a fresh connection; returns status and body.
fn http(addr: &str, method: &str, path: &str, token: &str) -> (u16, Vec<u8>) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let mut body = raw[split + 4..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let nl = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let n = usize::from_str_radix(std::str::from_utf8(&rest[..nl]).unwrap().trim(), 16).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&rest[nl + 2..nl + 2 + n]);
            rest = &rest[nl + 2 + n + 2..];
        }
        body = out;
    }
    (status, body)
}

#[test]
fn serve_token_get_and_search_on_the_embedded_default() {
    let dir = tempfile::tempdir().unwrap();
    assert!(docstore(dir.path()).arg("init").status().unwrap().success());
    let report = docstore_tools::synthetic::Generator::new(7, "Clínica", 3).report();
    let file = dir.path().join("laudo.pdf");
    std::fs::write(&file, &report.pdf).unwrap();
    let out = docstore(dir.path())
        .args(["--json", "put"])
        .arg(&file)
        .args(["--patient", &report.patient_id, "--exam", &report.exam_id])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = v["document_id"].as_str().unwrap().to_owned();

    let mut child = docstore(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let addr = loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "serve exited before listening"
        );
        if let Some(rest) = line.trim().strip_prefix("listening on http://") {
            break rest.to_owned();
        }
    };
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    // The same process, re-executed with the allocator's settings (mimalloc reads them at start).
    let environ = std::fs::read(format!("/proc/{}/environ", child.id())).unwrap();
    let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
    for want in [&b"MIMALLOC_PURGE_DECOMMITS=0"[..], b"MIMALLOC_PURGE_DELAY=1000"] {
        assert!(vars.contains(&want), "{}", String::from_utf8_lossy(want));
    }

    let token = |args: &[&str]| {
        let out = docstore(dir.path()).arg("token").args(args).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let staff = token(&["--role", "staff", "--sub", "ana"]);
    let (status, body) = http(&addr, "GET", &format!("/v1/documents/{id}"), &staff);
    assert_eq!(status, 200);
    assert_eq!(body, report.pdf);

    // The pipeline runs inside the service: the document becomes searchable.
    let started = Instant::now();
    let hits = loop {
        let (status, body) = http(
            &addr,
            "GET",
            "/v1/search?q=hemograma%20OR%20glicemia%20OR%20colesterol",
            &staff,
        );
        assert_eq!(status, 200);
        let r: serde_json::Value = serde_json::from_slice(&body).unwrap();
        if r["total"].as_u64().unwrap_or(0) > 0 {
            break r;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "never searchable: {r}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(hits["hits"][0]["document_id"], id.as_str());
    // Its patient sees nothing until the exam is released.
    let patient = token(&[
        "--role",
        "patient",
        "--sub",
        "maria",
        "--patient",
        &report.patient_id,
    ]);
    let (status, _) = http(&addr, "GET", &format!("/v1/documents/{id}"), &patient);
    assert_eq!(status, 404);
    let (status, body) = http(
        &addr,
        "GET",
        "/v1/search?q=hemograma%20OR%20glicemia%20OR%20colesterol",
        &patient,
    );
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()["total"],
        0
    );
    let (status, _) = http(
        &addr,
        "POST",
        &format!("/v1/exams/{}/release", report.exam_id),
        &staff,
    );
    assert_eq!(status, 200);
    let (status, body) = http(&addr, "GET", &format!("/v1/documents/{id}"), &patient);
    assert_eq!(status, 200);
    assert_eq!(body, report.pdf);
    let (_, body) = http(
        &addr,
        "GET",
        "/v1/search?q=hemograma%20OR%20glicemia%20OR%20colesterol",
        &patient,
    );
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()["total"],
        1
    );
    // The thumbnail the pipeline made is served too.
    let (status, png) = http(
        &addr,
        "GET",
        &format!("/v1/documents/{id}/versions/1/renditions/thumbnail"),
        &patient,
    );
    assert_eq!(status, 200);
    assert!(png.starts_with(b"\x89PNG"));

    // SIGTERM: drains and exits 0.
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "serve exited with {status}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "serve ignored SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A bad role is a clear error.
    let out = docstore(dir.path())
        .args(["token", "--role", "root", "--sub", "x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown role"));
}

#[test]
fn audit_verify_finds_edited_removed_and_reordered_lines() {
    let dir = tempfile::tempdir().unwrap();
    assert!(docstore(dir.path()).arg("init").status().unwrap().success());
    let file = dir.path().join("x.pdf");
    std::fs::write(&file, b"%PDF-1.4 audit chain").unwrap();
    for _ in 0..3 {
        let out = docstore(dir.path())
            .args(["put"])
            .arg(&file)
            .args(["--patient", "pac-1", "--exam", "exm-1"])
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    let audit = dir.path().join("audit.jsonl");
    let verify = |path: &std::path::Path| {
        let out = docstore(dir.path())
            .args(["audit", "verify", "--file"])
            .arg(path)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };
    let (code, text) = verify(&audit);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("intact"));
    let original = std::fs::read_to_string(&audit).unwrap();
    let lines: Vec<&str> = original.lines().collect();
    assert!(lines.len() >= 6, "{}", lines.len());
    let write = |ls: &[String]| {
        let p = dir.path().join("edited.jsonl");
        std::fs::write(&p, ls.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
        p
    };
    let owned: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    // Edited line 3 (an outcome flipped): the chain breaks at line 4, which names line 3.
    let mut edited = owned.clone();
    edited[2] = edited[2].replacen("\"ok\"", "\"denied\"", 1);
    assert_ne!(edited[2], owned[2]);
    let (code, text) = verify(&write(&edited));
    assert_eq!(code, Some(6));
    assert!(text.contains("line 4") && text.contains("line 3"), "{text}");
    // Deleted line 2: breaks at line 2.
    let mut deleted = owned.clone();
    deleted.remove(1);
    let (code, text) = verify(&write(&deleted));
    assert_eq!(code, Some(6));
    assert!(text.contains("broken at line 2"), "{text}");
    // Lines 3 and 4 swapped: breaks at line 3.
    let mut swapped = owned.clone();
    swapped.swap(2, 3);
    let (_, text) = verify(&write(&swapped));
    assert!(text.contains("broken at line 3"), "{text}");
    // A torn last line.
    let p = dir.path().join("torn.jsonl");
    std::fs::write(&p, format!("{original}{{\"at\":1")).unwrap();
    let (_, text) = verify(&p);
    assert!(
        text.contains(&format!("line {}", lines.len() + 1)) && text.contains("torn"),
        "{text}"
    );
    // The store keeps chaining after a reopen.
    let out = docstore(dir.path()).args(["versions", "x"]).output().unwrap();
    assert!(!out.status.success());
    assert_eq!(verify(&audit).0, Some(0));
}
