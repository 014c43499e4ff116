//! HTTPS on 127.0.0.1: a certificate made by the test, HTTP/2 and HTTP/1.1 chosen by ALPN, the
//! API behind it unchanged, plaintext refused, and a client that never finishes its handshake
//! cut at the header timeout.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::Harness;
use docstore_server::policy::Role;
use docstore_server::tls::TlsFiles;

fn certificate(dir: &std::path::Path) -> (TlsFiles, reqwest::Certificate) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let files = TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    std::fs::write(&files.cert, cert.pem()).unwrap();
    std::fs::write(&files.key, key.serialize_pem()).unwrap();
    (
        files,
        reqwest::Certificate::from_pem(cert.pem().as_bytes()).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_http2_and_http1_and_cuts_stalled_handshakes() {
    let certs = tempfile::tempdir().unwrap();
    let (files, root) = certificate(certs.path());
    let h = Harness::start(false, |c| {
        c.tls = Some(files.clone());
        c.limits.header_timeout = Duration::from_secs(1);
    })
    .await;
    let addr = h.service.as_ref().unwrap().local_addr();
    let base = format!("https://127.0.0.1:{}", addr.port());
    let client = |http1: bool| {
        let b = reqwest::Client::builder()
            .no_proxy()
            .tls_built_in_root_certs(false)
            .add_root_certificate(root.clone());
        if http1 { b.http1_only() } else { b }.build().unwrap()
    };
    let staff = h.staff();
    let id = {
        let r = client(false)
            .post(format!("{base}/v1/documents?patient=pac-t&exam=exm-t"))
            .bearer_auth(&staff)
            .header("content-type", "application/pdf")
            .body("%PDF-1.4 over TLS")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        assert_eq!(r.version(), reqwest::Version::HTTP_2, "ALPN chose h2");
        r.json::<serde_json::Value>().await.unwrap()["document_id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let r = client(true)
        .get(format!("{base}/v1/documents/{id}"))
        .bearer_auth(&staff)
        .header("range", "bytes=14-16")
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"TLS");
    // Authorization is the same behind TLS.
    let patient = h.token(Role::Patient, "p", Some("pac-other"));
    let r = client(false)
        .get(format!("{base}/v1/documents/{id}"))
        .bearer_auth(&patient)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = reqwest::Client::builder().no_proxy().build().unwrap();
    assert!(
        plain
            .get(format!("http://127.0.0.1:{}/healthz", addr.port()))
            .send()
            .await
            .is_err()
    );
    // A client that connects and never says hello is cut at the header timeout.
    let started = Instant::now();
    let cut = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(&[0x16]); // the first byte of a handshake record, then silence
        let mut buf = [0u8; 64];
        matches!(s.read(&mut buf), Ok(0) | Err(_))
    })
    .await
    .unwrap();
    assert!(cut, "the stalled handshake was closed");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "cut near the 1 s timeout"
    );
    h.stop().await;
}

/// A key that does not match the certificate, or a file with no certificate, is a typed
/// start-up error naming the file, never the key.
#[tokio::test]
async fn mismatched_or_empty_pem_files_fail_start_up() {
    let certs = tempfile::tempdir().unwrap();
    let (files, _) = certificate(certs.path());
    let other = tempfile::tempdir().unwrap();
    let (other_files, _) = certificate(other.path());
    let mismatched = TlsFiles {
        cert: files.cert.clone(),
        key: other_files.key.clone(),
    };
    let Err(e) = docstore_server::tls::acceptor(&mismatched) else {
        panic!("a mismatched key was accepted")
    };
    assert!(matches!(e, docstore_server::tls::TlsError::Config(_)), "{e:?}");
    std::fs::write(certs.path().join("empty.pem"), "").unwrap();
    let empty = TlsFiles {
        cert: certs.path().join("empty.pem"),
        key: files.key.clone(),
    };
    let Err(e) = docstore_server::tls::acceptor(&empty) else {
        panic!("an empty certificate file was accepted")
    };
    assert!(e.to_string().contains("empty.pem"));
    let key = std::fs::read_to_string(&files.key).unwrap();
    assert!(!format!("{e:?}").contains(&key[30..60]));
}
