//! Download links over real HTTP: a valid link streams its version with no bearer token;
//! expired, tampered, revoked, over-used and other-version links are refused alike; every use
//! is audited under the link's id.

mod common;

use common::{Harness, assert_problem};
use docstore_server::auth::{LinkClaims, LinkSigner};
use docstore_server::policy::Role;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_are_bound_expiring_use_limited_and_revocable() {
    let h = Harness::start(false, |_| {}).await;
    let staff = h.staff();
    let v1 = b"%PDF-1.4 first version of the result".to_vec();
    let id = h
        .upload(&staff, "pac-l", "exm-l", "application/pdf", v1.clone())
        .await;
    let patient = h.token(Role::Patient, "lia", Some("pac-l"));
    let make = |token: String, version: u64, body: serde_json::Value| {
        let http = h.http.clone();
        let url = h.url(&format!("/v1/documents/{id}/versions/{version}/links"));
        async move {
            http.post(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    // Not before release, not by another patient.
    assert_problem(&make(patient.clone(), 1, serde_json::json!({})).await, 404);
    h.release("exm-l").await;
    let other = h.token(Role::Patient, "eve", Some("pac-x"));
    assert_problem(&make(other, 1, serde_json::json!({})).await, 404);
    assert_problem(
        &make(patient.clone(), 1, serde_json::json!({"ttl_seconds": 5})).await,
        400,
    );

    let r = make(
        patient.clone(),
        1,
        serde_json::json!({"max_uses": 2, "label": "Dr. Souza"}),
    )
    .await;
    assert_eq!(r.status(), 201);
    let link: serde_json::Value = r.json().await.unwrap();
    let url = link["url"].as_str().unwrap().to_owned();
    let lid = link["link_id"].as_str().unwrap().to_owned();
    let open = |path: String, range: Option<&'static str>| {
        let http = h.http.clone();
        let url = h.url(&path);
        async move {
            let mut r = http.get(url);
            if let Some(range) = range {
                r = r.header("range", range);
            }
            r.send().await.unwrap()
        }
    };
    // A new version does not change what the link serves.
    let r = h
        .http
        .post(h.url(&format!("/v1/documents/{id}/versions")))
        .bearer_auth(&staff)
        .header("content-type", "application/pdf")
        .body("%PDF-1.4 v2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let first = open(url.clone(), None).await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.bytes().await.unwrap().as_ref(), &v1[..]);
    // A viewer's later ranges are part of the same use.
    let later = open(url.clone(), Some("bytes=5-9")).await;
    assert_eq!(later.status(), 206);
    assert_eq!(later.bytes().await.unwrap().as_ref(), &v1[5..10]);
    assert_eq!(open(url.clone(), None).await.status(), 200);
    // Over-used.
    assert_problem(&open(url.clone(), None).await, 404);

    // Tampered: one character of the payload, one of the signature.
    let token = url.strip_prefix("/v1/links/").unwrap().to_owned();
    let flip = |t: &str, at: usize| {
        let mut b = t.as_bytes().to_vec();
        b[at] = if b[at] == b'A' { b'B' } else { b'A' };
        String::from_utf8(b).unwrap()
    };
    for at in [5, token.len() - 3] {
        assert_problem(&open(format!("/v1/links/{}", flip(&token, at)), None).await, 404);
    }
    // Signed with the right key but expired, or naming another version: refused.
    let r = make(patient.clone(), 1, serde_json::json!({})).await;
    let fresh: serde_json::Value = r.json().await.unwrap();
    let fresh_lid = fresh["link_id"].as_str().unwrap().to_owned();
    let signer = LinkSigner::open_or_create(&LinkSigner::key_path(h.dir.path())).unwrap();
    let now = docstore::Timestamp::now().0;
    let expired = signer.sign(&LinkClaims {
        lid: fresh_lid.clone(),
        doc: id.clone(),
        v: 1,
        exp: now - 1,
    });
    assert_problem(&open(format!("/v1/links/{expired}"), None).await, 404);
    let other_version = signer.sign(&LinkClaims {
        lid: fresh_lid.clone(),
        doc: id.clone(),
        v: 2,
        exp: now + 60_000,
    });
    assert_problem(&open(format!("/v1/links/{other_version}"), None).await, 404);
    let fresh_url = fresh["url"].as_str().unwrap().to_owned();
    assert_eq!(open(fresh_url.clone(), None).await.status(), 200);

    // The patient lists their links and revokes one; it stops working at once.
    let list = h.get_json(&format!("/v1/documents/{id}/links"), &patient).await;
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert!(items.iter().any(|l| l["label"] == "Dr. Souza" && l["uses"] == 2));
    let doctor = h.token(Role::Doctor, "dr-q", None);
    let r = h
        .http
        .delete(h.url(&format!("/v1/links/{fresh_lid}")))
        .bearer_auth(&doctor)
        .send()
        .await
        .unwrap();
    assert_problem(&r, 404);
    let r = h
        .http
        .delete(h.url(&format!("/v1/links/{fresh_lid}")))
        .bearer_auth(&patient)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_problem(&open(fresh_url, None).await, 404);

    // Every use and refusal is audited under the link's id.
    let audit = h.audit().await;
    let of = |lid: &str, outcome: &str| {
        audit
            .iter()
            .filter(|r| r.actor == format!("link:{lid}") && r.outcome == outcome && r.action == "http.read")
            .count()
    };
    assert_eq!(of(&lid, "allowed"), 3);
    assert!(of(&lid, "denied") >= 1);
    assert_eq!(of(&fresh_lid, "allowed"), 1);
    assert!(of(&fresh_lid, "denied") >= 3);
    h.stop().await;
}

/// A link that asks for a second factor: without it a 401 names the factor (no try taken); a
/// wrong answer is a 401 audited as denied; the right one streams. Five wrong answers lock the
/// link for good, even against the right answer, and concurrent guesses cannot exceed five.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_factor_links_lock_after_five_wrong_answers() {
    let h = Harness::start(false, |_| {}).await;
    let staff = h.staff();
    let body = b"%PDF-1.4 a result behind a second factor".to_vec();
    let id = h
        .upload(&staff, "pac-f", "exm-f", "application/pdf", body.clone())
        .await;
    let make = |json: serde_json::Value| {
        let http = h.http.clone();
        let url = h.url(&format!("/v1/documents/{id}/versions/1/links"));
        let staff = staff.clone();
        async move {
            http.post(url)
                .bearer_auth(staff)
                .json(&json)
                .send()
                .await
                .unwrap()
        }
    };
    // At most 7 days; a date of birth must be a date.
    assert_problem(
        &make(serde_json::json!({"ttl_seconds": 8 * 24 * 3600})).await,
        400,
    );
    assert_problem(
        &make(serde_json::json!({"second_factor": {"date_of_birth": "1980-02-30"}})).await,
        400,
    );
    let open = |url: String, answer: Option<String>| {
        let http = h.http.clone();
        let url = h.url(&url);
        async move {
            let mut r = http.get(url);
            if let Some(a) = answer {
                r = r.header("docstore-link-factor", a);
            }
            r.send().await.unwrap()
        }
    };

    let r = make(serde_json::json!({"second_factor": {"date_of_birth": "1980-02-29"}})).await;
    assert_eq!(r.status(), 201);
    let dob: serde_json::Value = r.json().await.unwrap();
    assert_eq!(dob["second_factor"], "date_of_birth");
    assert!(dob.get("one_time_code").is_none());
    let url = dob["url"].as_str().unwrap().to_owned();
    let asked = open(url.clone(), None).await;
    assert_problem(&asked, 401);
    let p: serde_json::Value = asked.json().await.unwrap();
    assert_eq!(p["second_factor"], "date_of_birth");
    assert_problem(&open(url.clone(), Some("1980-03-01".into())).await, 401);
    let ok = open(url.clone(), Some(" 1980-02-29 ".into())).await;
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.bytes().await.unwrap().as_ref(), &body[..]);
    // Four more wrong answers, at once: the fifth wrong answer in all locks it.
    let guesses: Vec<_> = (0..4)
        .map(|i| open(url.clone(), Some(format!("1990-01-0{}", i + 1))))
        .collect();
    for r in futures::future::join_all(guesses).await {
        assert_problem(&r, 401);
    }
    assert_problem(&open(url.clone(), Some("1980-02-29".into())).await, 403);

    // A one-time code: shown once, eight digits, and concurrent guessing stops at five tries.
    let r = make(serde_json::json!({"second_factor": "one_time_code"})).await;
    let otc: serde_json::Value = r.json().await.unwrap();
    let code = otc["one_time_code"].as_str().unwrap().to_owned();
    assert_eq!(code.len(), 8);
    let url = otc["url"].as_str().unwrap().to_owned();
    assert_eq!(open(url.clone(), Some(code.clone())).await.status(), 200);
    let wrong = format!("{:08}", (code.parse::<u32>().unwrap() + 1) % 100_000_000);
    let guesses: Vec<_> = (0..12).map(|_| open(url.clone(), Some(wrong.clone()))).collect();
    let statuses: Vec<u16> = futures::future::join_all(guesses)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert_eq!(statuses.iter().filter(|s| **s == 401).count(), 5, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 403).count(), 7, "{statuses:?}");
    assert_problem(&open(url.clone(), Some(code)).await, 403);
    let list = h.get_json(&format!("/v1/documents/{id}/links"), &staff).await;
    assert!(
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["locked"] == true)
    );
    // Wrong answers are denials in the audit log; the code itself is never written there.
    let audit = h.audit().await;
    let lid = otc["link_id"].as_str().unwrap();
    let denied = audit
        .iter()
        .filter(|r| r.actor == format!("link:{lid}") && r.outcome == "denied")
        .count();
    assert_eq!(denied, 13);
    let log = std::fs::read_to_string(h.dir.path().join("audit.jsonl")).unwrap();
    assert!(!log.contains(otc["one_time_code"].as_str().unwrap()));
    h.stop().await;
}
