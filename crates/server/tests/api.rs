//! The REST API over real HTTP on 127.0.0.1, on the embedded default: documents, versions with
//! If-Match, ranges across frame boundaries, conditional requests, lists with pagination,
//! delete/restore, hold and purge, limits and bad input.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{Harness, assert_problem};
use docstore_server::policy::Role;
use rand::RngCore;

const FRAME: usize = 64 * 1024;

fn random(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::rng().fill_bytes(&mut v);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_versions_ranges_and_conditional_reads() {
    let h = Harness::start(false, |_| {}).await;
    let staff = h.staff();
    let body = random(3 * FRAME + 1234);
    let r = h
        .http
        .post(h.url("/v1/documents?patient=pac-1&exam=exm-1&kind=report"))
        .bearer_auth(&staff)
        .header("content-type", "application/pdf")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let etag1 = r.headers()["etag"].to_str().unwrap().to_owned();
    let v: serde_json::Value = r.json().await.unwrap();
    let id = v["document_id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/v1/documents/{id}/versions/1"));
    assert_eq!(v["size"], body.len());
    assert!(v.get("key_block").is_none() && v.get("blob_key").is_none());

    // Latest and version 1.
    for path in [format!("/v1/documents/{id}"), location.clone()] {
        let r = h.http.get(h.url(&path)).bearer_auth(&staff).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["etag"].to_str().unwrap(), etag1);
        assert_eq!(r.headers()["accept-ranges"], "bytes");
        assert_eq!(r.headers()["content-type"], "application/pdf");
        assert!(r.headers().contains_key("last-modified"));
        assert!(
            r.headers()["content-disposition"]
                .to_str()
                .unwrap()
                .starts_with("inline;")
        );
        assert_eq!(r.bytes().await.unwrap().as_ref(), &body[..]);
    }

    // A version with a stale If-Match is refused; with the right one it lands.
    let v2 = random(1000);
    let r = h
        .http
        .post(h.url(&format!("/v1/documents/{id}/versions")))
        .bearer_auth(&staff)
        .header("content-type", "application/pdf")
        .header("if-match", "\"not-the-latest\"")
        .body(v2.clone())
        .send()
        .await
        .unwrap();
    assert_problem(&r, 412);
    let r = h
        .http
        .post(h.url(&format!("/v1/documents/{id}/versions")))
        .bearer_auth(&staff)
        .header("content-type", "application/pdf")
        .header("if-match", &etag1)
        .body(v2.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let etag2 = r.headers()["etag"].to_str().unwrap().to_owned();
    // The old ETag is stale now.
    let r = h
        .http
        .post(h.url(&format!("/v1/documents/{id}/versions")))
        .bearer_auth(&staff)
        .header("content-type", "application/pdf")
        .header("if-match", &etag1)
        .body(vec![1u8; 10])
        .send()
        .await
        .unwrap();
    assert_problem(&r, 412);
    let latest = h
        .http
        .get(h.url(&format!("/v1/documents/{id}")))
        .bearer_auth(&staff)
        .send()
        .await
        .unwrap();
    assert_eq!(latest.headers()["etag"].to_str().unwrap(), etag2);
    assert_eq!(latest.bytes().await.unwrap().as_ref(), &v2[..]);

    // Ranges within, at and across frame boundaries, open and suffix ranges.
    let n = body.len();
    let cases: Vec<(String, std::ops::Range<usize>)> = vec![
        ("bytes=10-99".into(), 10..100),
        (format!("bytes={}-{}", FRAME - 1, FRAME), FRAME - 1..FRAME + 1),
        (format!("bytes={}-{}", FRAME, 2 * FRAME - 1), FRAME..2 * FRAME),
        (format!("bytes=5-{}", 3 * FRAME + 7), 5..3 * FRAME + 8),
        (format!("bytes={}-", n - 100), n - 100..n),
        ("bytes=-1234".into(), n - 1234..n),
        (format!("bytes=0-{}", n * 2), 0..n),
    ];
    for (header, want) in cases {
        let r = h
            .http
            .get(h.url(&location))
            .bearer_auth(&staff)
            .header("range", &header)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 206, "{header}");
        assert_eq!(
            r.headers()["content-range"].to_str().unwrap(),
            format!("bytes {}-{}/{n}", want.start, want.end - 1)
        );
        assert_eq!(r.bytes().await.unwrap().as_ref(), &body[want], "{header}");
    }
    let r = h
        .http
        .get(h.url(&location))
        .bearer_auth(&staff)
        .header("range", format!("bytes={n}-"))
        .send()
        .await
        .unwrap();
    assert_problem(&r, 416);
    assert_eq!(
        r.headers()["content-range"].to_str().unwrap(),
        format!("bytes */{n}")
    );

    // Conditional reads: 304 on a matching ETag; If-Range with another ETag serves it whole.
    let r = h
        .http
        .get(h.url(&location))
        .bearer_auth(&staff)
        .header("if-none-match", &etag1)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    let r = h
        .http
        .get(h.url(&location))
        .bearer_auth(&staff)
        .header("range", "bytes=0-9")
        .header("if-range", &etag2)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().len(), n);
    let r = h
        .http
        .get(h.url(&format!("{location}?disposition=attachment")))
        .bearer_auth(&staff)
        .send()
        .await
        .unwrap();
    assert!(
        r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment;")
    );

    // Versions, paginated.
    let r: serde_json::Value = h
        .http
        .get(h.url(&format!("/v1/documents/{id}/versions?limit=1")))
        .bearer_auth(&staff)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["items"].as_array().unwrap().len(), 1);
    assert_eq!(r["items"][0]["version"], 1);
    let cursor = r["next_cursor"].as_str().unwrap().to_owned();
    let r: serde_json::Value = h
        .http
        .get(h.url(&format!("/v1/documents/{id}/versions?limit=1&cursor={cursor}")))
        .bearer_auth(&staff)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["items"][0]["version"], 2);
    assert!(r.get("next_cursor").is_none());

    // Lists of a patient and an exam, paginated.
    let second = h
        .upload(&staff, "pac-1", "exm-2", "application/pdf", random(10))
        .await;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = h.url("/v1/patients/pac-1/documents?limit=1");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let r: serde_json::Value = h
            .http
            .get(url)
            .bearer_auth(&staff)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for i in r["items"].as_array().unwrap() {
            seen.push(i["document_id"].as_str().unwrap().to_owned());
        }
        match r["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let mut want = vec![id.clone(), second.clone()];
    want.sort();
    assert_eq!(seen, want);
    let r: serde_json::Value = h
        .http
        .get(h.url("/v1/exams/exm-2/documents"))
        .bearer_auth(&staff)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["items"][0]["document_id"], second.as_str());

    // Delete hides it; restore brings it back.
    let r = h
        .http
        .delete(h.url(&format!("/v1/documents/{id}")))
        .bearer_auth(&staff)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = h
        .http
        .get(h.url(&format!("/v1/documents/{id}")))
        .bearer_auth(&staff)
        .send()
        .await
        .unwrap();
    assert_problem(&r, 404);
    let r = h
        .http
        .post(h.url(&format!("/v1/documents/{id}/restore")))
        .bearer_auth(&staff)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = h
        .http
        .get(h.url(&format!("/v1/documents/{id}")))
        .bearer_auth(&staff)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Hold → purge refused; hold off → purge. Staff may not hold or purge.
    let admin = h.token(Role::Admin, "root", None);
    let r = h
        .http
        .put(h.url(&format!("/v1/documents/{second}/hold")))
        .bearer_auth(&staff)
        .json(&serde_json::json!({"legal_hold": true}))
        .send()
        .await
        .unwrap();
    assert_problem(&r, 404);
    let r = h
        .http
        .put(h.url(&format!("/v1/documents/{second}/hold")))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"legal_hold": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let _ = h
        .http
        .delete(h.url(&format!("/v1/documents/{second}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    let r = h
        .http
        .post(h.url(&format!("/v1/documents/{second}/purge")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_problem(&r, 409);
    let r = h
        .http
        .put(h.url(&format!("/v1/documents/{second}/hold")))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"legal_hold": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = h
        .http
        .post(h.url(&format!("/v1/documents/{second}/purge")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = h
        .http
        .get(h.url(&format!("/v1/documents/{second}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_problem(&r, 404);

    // Metrics count requests by route and status.
    let m = h
        .http
        .get(h.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(m.contains("route=\"/v1/documents/{id}/versions/{n}\""), "{m}");
    assert!(m.contains("status=\"206\""));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_problems_and_stores_nothing() {
    let h = Harness::start(false, |c| {
        c.limits.max_upload = 256 * 1024;
        c.limits.header_timeout = Duration::from_secs(1);
        c.limits.body_timeout = Duration::from_secs(1);
    })
    .await;
    let staff = h.staff();
    let long = "a".repeat(10 * 1024);
    for path in [
        "/v1/documents/..%2F..%2Fetc%2Fpasswd".to_owned(),
        "/v1/documents/%2e%2e".to_owned(),
        format!("/v1/documents/{long}"),
        "/v1/documents/%FF%FE".to_owned(),
        "/v1/documents/x/versions/0".to_owned(),
        "/v1/documents/x/versions/-1".to_owned(),
        "/v1/nothing-here".to_owned(),
    ] {
        let r = h.http.get(h.url(&path)).bearer_auth(&staff).send().await.unwrap();
        let s = r.status().as_u16();
        assert!(s == 400 || s == 404, "{path}: {s}");
        assert_problem(&r, s);
    }
    let r = h
        .http
        .get(h.url("/v1/patients/pac-1/documents?limit=abc"))
        .bearer_auth(&staff)
        .send()
        .await
        .unwrap();
    assert_problem(&r, 400);

    // Empty, over-limit (declared and chunked), no Content-Type: refused, nothing stored.
    let empty = h
        .http
        .post(h.url("/v1/documents?patient=pac-9&exam=e"))
        .bearer_auth(&staff)
        .header("content-type", "application/pdf")
        .body(Vec::new())
        .send()
        .await
        .unwrap();
    assert_problem(&empty, 400);
    // The server answers 413 without reading the rest of the body and closes the connection, so
    // a client still sending may see the reset before the answer: either is a refusal.
    let refused = |r: reqwest::Result<reqwest::Response>| match r {
        Ok(r) => assert_problem(&r, 413),
        Err(e) => assert!(e.is_request() || e.is_body(), "{e}"),
    };
    refused(
        h.http
            .post(h.url("/v1/documents?patient=pac-9&exam=e"))
            .bearer_auth(&staff)
            .header("content-type", "application/pdf")
            .body(random(300 * 1024))
            .send()
            .await,
    );
    let chunks = futures::stream::iter(
        (0..10).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(random(64 * 1024)))),
    );
    refused(
        h.http
            .post(h.url("/v1/documents?patient=pac-9&exam=e"))
            .bearer_auth(&staff)
            .header("content-type", "application/pdf")
            .body(reqwest::Body::wrap_stream(chunks))
            .send()
            .await,
    );
    let untyped = h
        .http
        .post(h.url("/v1/documents?patient=pac-9&exam=e"))
        .bearer_auth(&staff)
        .body(vec![1u8; 10])
        .send()
        .await
        .unwrap();
    assert_problem(&untyped, 400);
    let bad_patient = h
        .http
        .post(h.url("/v1/documents?patient=..%2Fx&exam=e"))
        .bearer_auth(&staff)
        .header("content-type", "application/pdf")
        .body(vec![1u8; 10])
        .send()
        .await
        .unwrap();
    assert_problem(&bad_patient, 400);

    // A client that disconnects mid-upload leaves no version.
    let addr = h.service.as_ref().unwrap().local_addr();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST /v1/documents?patient=pac-9&exam=e HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {staff}\r\n\
         Content-Type: application/pdf\r\nContent-Length: 200000\r\n\r\n"
    )
    .unwrap();
    s.write_all(&random(100_000)).unwrap();
    drop(s);

    // A client that sends its head one byte a second is cut at the header timeout.
    let mut slow = std::net::TcpStream::connect(addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    let started = Instant::now();
    let mut cut = false;
    for b in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: yes\r\n" {
        if slow.write_all(&[*b]).is_err() {
            cut = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(400));
        if started.elapsed() > Duration::from_secs(8) {
            break;
        }
    }
    if !cut {
        let mut buf = [0u8; 512];
        // Closed (0 bytes) or answered 408 and closed.
        let n = slow.read(&mut buf).unwrap_or(0);
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(n == 0 || text.contains("408"), "slow client not cut: {text}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "slow client kept for {:?}",
        started.elapsed()
    );

    tokio::time::sleep(Duration::from_millis(500)).await;
    let docs = h.store.metadata().documents_by_patient("pac-9").await.unwrap();
    assert!(docs.is_empty(), "refused uploads stored {docs:?}");
    // Nothing committed; what the aborted upload left (if anything) is an orphan for gc.
    let gc = h
        .store
        .gc(&docstore::Identity::new("test"), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(gc.scanned, gc.removed);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_past_the_rate_limit_get_429_with_retry_after() {
    let h = Harness::start(false, |c| c.limits.downloads_per_minute = 3).await;
    let staff = h.staff();
    let id = h
        .upload(&staff, "pac-1", "exm-1", "application/pdf", random(100))
        .await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let r = h
            .http
            .get(h.url(&format!("/v1/documents/{id}")))
            .bearer_auth(&staff)
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            assert!(
                r.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap()
                    >= 1
            );
        }
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    // Another identity has its own budget.
    let other = h.token(Role::Staff, "bia", None);
    let r = h
        .http
        .get(h.url(&format!("/v1/documents/{id}")))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documented_problem_example_is_what_the_wire_holds() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/api.md")).unwrap();
    let at = doc.find("<!-- example: not-found -->").unwrap();
    let block = &doc[at..];
    let start = block.find("```json\n").unwrap() + 8;
    let end = block[start..].find("```").unwrap();
    let documented = block[start..start + end].trim();
    let h = Harness::start(false, |_| {}).await;
    let r = h
        .http
        .get(h.url("/v1/documents/0190a0a0-0000-7000-8000-000000000000"))
        .bearer_auth(h.staff())
        .send()
        .await
        .unwrap();
    assert_problem(&r, 404);
    let wire: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    let documented: serde_json::Value = serde_json::from_str(documented).unwrap();
    assert_eq!(wire, documented);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_is_generated_and_names_every_route() {
    let h = Harness::start(false, |_| {}).await;
    let r = h.http.get(h.url("/v1/openapi.json")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let doc: serde_json::Value = r.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/v1/documents",
        "/v1/documents/{id}",
        "/v1/documents/{id}/versions",
        "/v1/documents/{id}/versions/{n}",
        "/v1/documents/{id}/versions/{n}/renditions/{stage}",
        "/v1/documents/{id}/versions/{n}/links",
        "/v1/links/{token}",
        "/v1/patients/{p}/documents",
        "/v1/exams/{e}/release",
        "/v1/search",
        "/v1/audit",
    ] {
        assert!(paths.contains_key(p), "{p} missing");
    }
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    // Queries past the parser's bounds are refused before parsing, without echoing the text.
    let deep = format!("{}x{}", "(".repeat(40), ")".repeat(40));
    let r = h
        .http
        .get(h.url("/v1/search"))
        .query(&[("q", deep.as_str())])
        .bearer_auth(h.staff())
        .send()
        .await
        .unwrap();
    assert_problem(&r, 400);
    let many = (0..70)
        .map(|i| format!("pac-secret{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    let r = h
        .http
        .get(h.url("/v1/search"))
        .query(&[("q", many.as_str())])
        .bearer_auth(h.staff())
        .send()
        .await
        .unwrap();
    assert_problem(&r, 400);
    assert!(!r.text().await.unwrap().contains("pac-secret"));
    h.stop().await;
}
