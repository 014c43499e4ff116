//! Who may do what, over real HTTP: the authorization matrix driven by the policy table (which
//! `docs/access.md` must print row for row), release, and the token attacks.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{Harness, assert_problem};
use docstore_server::auth::{ClaimMapping, KeySource, LocalIssuer, TokenRequest, VerifierConfig};
use docstore_server::policy::{Action, Condition, POLICY, Role, grant};
use docstore_server::{Authentication, ServiceConfig};

/// `docs/access.md`'s policy table, parsed.
fn documented_policy() -> BTreeSet<(String, String, String)> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/access.md")).unwrap();
    let start = text
        .find("<!-- policy-table -->")
        .expect("marker in docs/access.md");
    text[start..]
        .lines()
        .skip(3)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let cells: Vec<String> = l
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().trim_matches('`').to_owned())
                .collect();
            (cells[0].clone(), cells[1].clone(), cells[2].clone())
        })
        .collect()
}

#[test]
fn docs_access_md_prints_exactly_the_policy() {
    let code: BTreeSet<(String, String, String)> = POLICY
        .iter()
        .map(|r| {
            (
                r.role.as_str().into(),
                r.action.as_str().into(),
                r.when.as_str().into(),
            )
        })
        .collect();
    assert_eq!(documented_policy(), code);
}

/// The endpoints of the matrix: what each does to a document of `doc`'s exam and patient.
#[derive(Clone, Copy, Debug)]
enum Call {
    Read,
    Versions,
    Rendition,
    ListPatient,
    ListExam,
    AddVersion,
    Delete,
    Restore,
    Hold,
    Shred,
    Search,
    Audit,
    Create,
    Release,
    Share,
    ShareExam,
    History,
}

impl Call {
    fn action(self) -> Action {
        match self {
            Call::Read | Call::Versions | Call::Rendition => Action::Read,
            Call::ListPatient => Action::ListPatient,
            Call::ListExam => Action::ListExam,
            Call::AddVersion => Action::AddVersion,
            Call::Delete => Action::Delete,
            Call::Restore => Action::Restore,
            Call::Hold => Action::Hold,
            Call::Shred => Action::Shred,
            Call::Search => Action::Search,
            Call::Audit => Action::AuditRead,
            Call::Create => Action::Create,
            Call::Release => Action::Release,
            Call::Share | Call::ShareExam => Action::Share,
            Call::History => Action::History,
        }
    }
}

struct Doc {
    id: String,
    patient: &'static str,
    exam: &'static str,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_matrix_follows_the_policy_table() {
    let h = Harness::start(false, |_| {}).await;
    let staff = h.staff();
    // pac-a owns a released and an unreleased exam; pac-b a released one. dr-x requested
    // exm-a1 only.
    let mut docs = Vec::new();
    for (patient, exam) in [("pac-a", "exm-a1"), ("pac-a", "exm-a2"), ("pac-b", "exm-b1")] {
        let id = h
            .upload(
                &staff,
                patient,
                exam,
                "application/pdf",
                b"%PDF-1.4 matrix".to_vec(),
            )
            .await;
        docs.push(Doc { id, patient, exam });
    }
    h.release("exm-a1").await;
    h.release("exm-b1").await;
    let access = &h.service.as_ref().unwrap().state().access;
    access.record_exam("exm-a1", "pac-a").await.unwrap();
    access.assign("exm-a1", "dr-x").await.unwrap();
    let released = |exam: &str| exam != "exm-a2";

    let principals: Vec<(Role, &str, Option<&str>)> = vec![
        (Role::Patient, "u-a", Some("pac-a")),
        (Role::Doctor, "dr-x", None),
        (Role::Staff, "st", None),
        (Role::Admin, "ad", None),
        (Role::Auditor, "au", None),
        (Role::Service, "svc", None),
    ];
    let calls = [
        Call::Read,
        Call::Versions,
        Call::Rendition,
        Call::ListPatient,
        Call::ListExam,
        Call::AddVersion,
        Call::Delete,
        Call::Restore,
        Call::Hold,
        Call::Shred,
        Call::Search,
        Call::Audit,
        Call::Create,
        Call::Release,
        Call::Share,
        Call::ShareExam,
        Call::History,
    ];
    let mut checked = 0;
    for (role, sub, patient) in &principals {
        let token = h.token(*role, sub, *patient);
        for call in calls {
            for doc in &docs {
                let condition = grant(*role, call.action());
                // May this caller see this one document?
                let sees = |patient_of: &str, exam: &str| match condition {
                    None => false,
                    Some(Condition::Always) => true,
                    Some(Condition::OwnReleased) => Some(patient_of) == *patient && released(exam),
                    Some(Condition::Assigned) => exam == "exm-a1",
                    Some(other) => panic!("the matrix does not know {other:?}"),
                };
                // Lists and searches are narrowed rather than refused, except a patient's list of
                // another patient and a doctor's list of another doctor's exam.
                let allowed = match (call, condition) {
                    (_, None) => false,
                    (Call::ListPatient, Some(Condition::OwnReleased)) => Some(doc.patient) == *patient,
                    (Call::ListPatient | Call::Search, Some(_)) => true,
                    (Call::ListExam, Some(Condition::Assigned)) => doc.exam == "exm-a1",
                    _ => sees(doc.patient, doc.exam),
                };
                let (req, ok, denied) = match call {
                    Call::Read => (h.http.get(h.url(&format!("/v1/documents/{}", doc.id))), 200, 404),
                    Call::Versions => (
                        h.http.get(h.url(&format!("/v1/documents/{}/versions", doc.id))),
                        200,
                        404,
                    ),
                    // No pipeline here: a readable version has no rendition yet (404 either way,
                    // but the denial is audited as such).
                    Call::Rendition => (
                        h.http.get(h.url(&format!(
                            "/v1/documents/{}/versions/1/renditions/thumbnail",
                            doc.id
                        ))),
                        404,
                        404,
                    ),
                    Call::ListPatient => (
                        h.http
                            .get(h.url(&format!("/v1/patients/{}/documents", doc.patient))),
                        200,
                        404,
                    ),
                    Call::ListExam => (
                        h.http.get(h.url(&format!("/v1/exams/{}/documents", doc.exam))),
                        200,
                        404,
                    ),
                    Call::AddVersion => (
                        h.http
                            .post(h.url(&format!("/v1/documents/{}/versions", doc.id)))
                            .header("content-type", "application/pdf")
                            .body("%PDF-1.4 v"),
                        201,
                        404,
                    ),
                    Call::Delete => (
                        h.http.delete(h.url(&format!("/v1/documents/{}", doc.id))),
                        200,
                        404,
                    ),
                    Call::Restore => (
                        h.http.post(h.url(&format!("/v1/documents/{}/restore", doc.id))),
                        200,
                        404,
                    ),
                    Call::Hold => (
                        h.http
                            .put(h.url(&format!("/v1/documents/{}/hold", doc.id)))
                            .json(&serde_json::json!({"legal_hold": false})),
                        200,
                        404,
                    ),
                    // Shredding is checked on a version nobody reads afterwards.
                    Call::Shred => (
                        h.http
                            .post(h.url(&format!("/v1/documents/{}/versions/999/shred", doc.id))),
                        404,
                        404,
                    ),
                    Call::Search => (h.http.get(h.url("/v1/search?q=x")), 200, 404),
                    Call::Audit => (h.http.get(h.url("/v1/audit?limit=1")), 200, 403),
                    Call::History => (
                        h.http.get(h.url(&format!("/v1/documents/{}/history", doc.id))),
                        200,
                        404,
                    ),
                    Call::Create => (
                        h.http
                            .post(h.url(&format!(
                                "/v1/documents?patient={}&exam={}",
                                doc.patient, doc.exam
                            )))
                            .header("content-type", "application/pdf")
                            .body("%PDF-1.4 new"),
                        201,
                        403,
                    ),
                    Call::Share => (
                        h.http
                            .post(h.url(&format!("/v1/documents/{}/versions/1/links", doc.id))),
                        201,
                        404,
                    ),
                    // A doctor outside the matrix, so its own doctor's rights stay as they are.
                    Call::ShareExam => (
                        h.http
                            .put(h.url(&format!("/v1/exams/{}/shares/dr-outside", doc.exam))),
                        204,
                        404,
                    ),
                    // A throwaway exam: the matrix's own exams keep their release state.
                    Call::Release => (
                        h.http
                            .post(h.url("/v1/exams/exm-throwaway/release"))
                            .json(&serde_json::json!({"patient_id": "pac-z"})),
                        200,
                        403,
                    ),
                };
                let r = req.bearer_auth(&token).send().await.unwrap();
                let want = if allowed { ok } else { denied };
                let status = r.status().as_u16();
                let body = r.text().await.unwrap();
                assert_eq!(
                    status, want,
                    "{role:?} {call:?} on {} ({}/{}): {body}",
                    doc.id, doc.patient, doc.exam
                );
                if matches!(call, Call::ListPatient | Call::ListExam) && status == 200 {
                    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
                    for item in page["items"].as_array().unwrap() {
                        let (p, e) = (
                            item["patient_id"].as_str().unwrap(),
                            item["exam_id"].as_str().unwrap(),
                        );
                        assert!(sees(p, e), "{role:?} {call:?} listed {p}/{e}");
                    }
                }
                // A deleted document stays deleted for the next calls: restore it.
                if matches!(call, Call::Delete) && allowed {
                    let r = h
                        .http
                        .post(h.url(&format!("/v1/documents/{}/restore", doc.id)))
                        .bearer_auth(&staff)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 200);
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, principals.len() * calls.len() * docs.len());

    // A patient's list holds only their released documents; search is empty without an index
    // entry, but never another patient's.
    let patient = h.token(Role::Patient, "u-a", Some("pac-a"));
    let r: serde_json::Value = h
        .http
        .get(h.url("/v1/patients/pac-a/documents"))
        .bearer_auth(&patient)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let exams: BTreeSet<&str> = r["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["exam_id"].as_str().unwrap())
        .collect();
    assert_eq!(exams, BTreeSet::from(["exm-a1"]));

    // Every denial is in the audit log, with the subject and role.
    let audit = h.audit().await;
    let denied: Vec<_> = audit.iter().filter(|r| r.outcome == "denied").collect();
    assert!(!denied.is_empty());
    assert!(
        denied
            .iter()
            .any(|r| r.actor == "patient:u-a" && r.document.as_deref() == Some(docs[2].id.as_str()))
    );
    assert!(
        denied
            .iter()
            .all(|r| r.detail.as_deref().is_some_and(|d| d.contains("role=")))
    );
    assert!(
        audit
            .iter()
            .any(|r| r.actor == "doctor:dr-x" && r.outcome == "allowed" && r.action == "http.read")
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patient_sees_a_result_only_once_its_exam_is_released() {
    let h = Harness::start(false, |_| {}).await;
    let id = h
        .upload(
            &h.staff(),
            "pac-r",
            "exm-r",
            "application/pdf",
            b"%PDF-1.4 result".to_vec(),
        )
        .await;
    let patient = h.token(Role::Patient, "maria", Some("pac-r"));
    let get = || {
        h.http
            .get(h.url(&format!("/v1/documents/{id}")))
            .bearer_auth(&patient)
            .send()
    };
    let before = get().await.unwrap();
    assert_problem(&before, 404);
    let missing = h
        .http
        .get(h.url("/v1/documents/0190a0a0-0000-7000-8000-000000000000"))
        .bearer_auth(&patient)
        .send()
        .await
        .unwrap();
    // Unreleased reads exactly like missing.
    let (b1, b2) = (before.text().await.unwrap(), missing.text().await.unwrap());
    assert_eq!(b1, b2);
    // Patients cannot release; staff can.
    let r = h
        .http
        .post(h.url("/v1/exams/exm-r/release"))
        .bearer_auth(&patient)
        .send()
        .await
        .unwrap();
    assert_problem(&r, 403);
    h.release("exm-r").await;
    let after = get().await.unwrap();
    assert_eq!(after.status(), 200);
    assert_eq!(after.bytes().await.unwrap().as_ref(), b"%PDF-1.4 result");
    // Another patient still cannot.
    let other = h.token(Role::Patient, "joao", Some("pac-other"));
    let r = h
        .http
        .get(h.url(&format!("/v1/documents/{id}")))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert_problem(&r, 404);
    h.stop().await;
}

/// A patient shares a released exam with a doctor who did not request it: the doctor then reads
/// its documents and lists the exam, until the share ends. Nobody shares what they cannot see,
/// and a doctor cannot pass an exam on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patient_shares_a_released_exam_with_a_doctor_until_unshared() {
    let h = Harness::start(false, |_| {}).await;
    let staff = h.staff();
    let id = h
        .upload(
            &staff,
            "pac-s",
            "exm-s",
            "application/pdf",
            b"%PDF-1.4 shared".to_vec(),
        )
        .await;
    let patient = h.token(Role::Patient, "sofia", Some("pac-s"));
    let doctor = h.token(Role::Doctor, "dr-second", None);
    let send = |method: reqwest::Method, path: &str, token: &str| {
        h.http.request(method, h.url(path)).bearer_auth(token).send()
    };
    use reqwest::Method;
    let read = format!("/v1/documents/{id}");
    let share = "/v1/exams/exm-s/shares/dr-second";
    // Unreleased: the patient cannot share it (it reads as missing), and the doctor sees nothing.
    assert_problem(&send(Method::PUT, share, &patient).await.unwrap(), 404);
    h.release("exm-s").await;
    assert_problem(&send(Method::GET, &read, &doctor).await.unwrap(), 404);
    // Another patient cannot share it; the doctor cannot share it onwards; ids are checked.
    let other = h.token(Role::Patient, "eve", Some("pac-other"));
    assert_problem(&send(Method::PUT, share, &other).await.unwrap(), 404);
    assert_problem(
        &send(Method::PUT, "/v1/exams/exm-s/shares/dr-third", &doctor)
            .await
            .unwrap(),
        404,
    );
    assert_problem(
        &send(Method::PUT, "/v1/exams/exm-s/shares/..%2Fx", &patient)
            .await
            .unwrap(),
        404,
    );
    assert_eq!(send(Method::PUT, share, &patient).await.unwrap().status(), 204);
    assert_eq!(send(Method::PUT, share, &patient).await.unwrap().status(), 204);
    let r = send(Method::GET, &read, &doctor).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"%PDF-1.4 shared");
    let list = h.get_json("/v1/exams/exm-s/documents", &doctor).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let shares = h.get_json("/v1/exams/exm-s/shares", &staff).await;
    assert_eq!(shares["items"][0]["doctor"], "dr-second");
    assert_eq!(shares["items"][0]["shared_by"], "patient:sofia");
    // Unshared: gone at once; unsharing again is a 404.
    assert_eq!(send(Method::DELETE, share, &patient).await.unwrap().status(), 204);
    assert_problem(&send(Method::GET, &read, &doctor).await.unwrap(), 404);
    assert_problem(&send(Method::DELETE, share, &staff).await.unwrap(), 404);
    // The shares are audited with their exam.
    let audit = h.audit().await;
    assert!(audit.iter().any(|r| r.actor == "patient:sofia"
        && r.action == "http.share"
        && r.outcome == "allowed"
        && r.detail.as_deref().is_some_and(|d| d.contains("exam=exm-s"))));
    assert!(
        audit
            .iter()
            .any(|r| r.actor == "patient:eve" && r.action == "http.share" && r.outcome == "denied")
    );
    h.stop().await;
}

/// A JWKS served on 127.0.0.1 by the test, counting fetches; its keys can be swapped.
struct Jwks {
    url: String,
    fetches: Arc<AtomicUsize>,
    keys: Arc<std::sync::Mutex<serde_json::Value>>,
}

async fn serve_jwks(initial: serde_json::Value) -> Jwks {
    let fetches = Arc::new(AtomicUsize::new(0));
    let keys = Arc::new(std::sync::Mutex::new(initial));
    let (f, k) = (fetches.clone(), keys.clone());
    let app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            let (f, k) = (f.clone(), k.clone());
            async move {
                f.fetch_add(1, Ordering::SeqCst);
                axum::Json(k.lock().unwrap().clone())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Jwks { url, fetches, keys }
}

fn b64(v: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_attacks_are_401_and_audited() {
    // An "external" issuer: its own Ed25519 key, published as a JWKS by the test.
    let issuer_dir = tempfile::tempdir().unwrap();
    let idp = LocalIssuer::open_or_create(issuer_dir.path()).unwrap();
    let jwks = serve_jwks(serde_json::to_value(idp.jwks()).unwrap()).await;
    let config = VerifierConfig {
        issuer: docstore_server::auth::local_issuer::LOCAL_ISSUER.into(),
        audience: docstore_server::auth::local_issuer::LOCAL_AUDIENCE.into(),
        keys: KeySource::Jwks(jwks.url.clone()),
        claims: ClaimMapping::default(),
        refresh_interval: Duration::ZERO,
    };
    let h = Harness::start(false, |c: &mut ServiceConfig| {
        c.auth = Authentication::Oidc(config)
    })
    .await;
    let good = idp
        .mint(&TokenRequest {
            subject: "ana".into(),
            role: Role::Staff,
            patient_id: None,
            ttl: Duration::from_secs(300),
        })
        .unwrap();
    let call = |token: Option<String>| {
        let mut r = h.http.get(h.url("/v1/patients/pac-1/documents"));
        if let Some(t) = token {
            r = r.header("authorization", format!("Bearer {t}"));
        }
        r.send()
    };
    assert_eq!(call(Some(good.clone())).await.unwrap().status(), 200);
    assert_eq!(jwks.fetches.load(Ordering::SeqCst), 1);

    let parts: Vec<&str> = good.split('.').collect();
    let header: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    let kid = header["kid"].as_str().unwrap().to_owned();
    let now = jsonwebtoken::get_current_timestamp();
    let with_claims = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut c = claims.clone();
        edit(&mut c);
        // Re-signed properly by the issuer: only the claim is wrong.
        let mut hd = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        hd.kid = Some(kid.clone());
        let pk8 = std::fs::read(LocalIssuer::key_path(issuer_dir.path())).unwrap();
        jsonwebtoken::encode(&hd, &c, &jsonwebtoken::EncodingKey::from_ed_der(&pk8)).unwrap()
    };
    let public_x = idp.jwks().keys[0].clone();
    let x = match &public_x.algorithm {
        jsonwebtoken::jwk::AlgorithmParameters::OctetKeyPair(p) => URL_SAFE_NO_PAD.decode(&p.x).unwrap(),
        _ => unreachable!(),
    };
    let hs256 = {
        let mut hd = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        hd.kid = Some(kid.clone());
        jsonwebtoken::encode(&hd, &claims, &jsonwebtoken::EncodingKey::from_secret(&x)).unwrap()
    };
    let none = format!(
        "{}.{}.",
        b64(&serde_json::json!({"alg": "none", "typ": "JWT", "kid": kid})),
        parts[1]
    );
    let mut tampered_claims = claims.clone();
    tampered_claims["cognito:groups"] = serde_json::json!(["admin"]);
    let tampered = format!("{}.{}.{}", parts[0], b64(&tampered_claims), parts[2]);
    let unknown_kid = {
        let other_dir = tempfile::tempdir().unwrap();
        let other = LocalIssuer::open_or_create(other_dir.path()).unwrap();
        other
            .mint(&TokenRequest {
                subject: "ana".into(),
                role: Role::Staff,
                patient_id: None,
                ttl: Duration::from_secs(300),
            })
            .unwrap()
    };
    let attacks: Vec<(&str, Option<String>)> = vec![
        ("no token", None),
        ("malformed", Some("not.a.jwt".into())),
        ("alg none", Some(none)),
        ("HS256 with the public key as secret", Some(hs256)),
        (
            "wrong iss",
            Some(with_claims(&|c| c["iss"] = "https://evil.example".into())),
        ),
        ("wrong aud", Some(with_claims(&|c| c["aud"] = "other".into()))),
        ("expired", Some(with_claims(&|c| c["exp"] = (now - 3600).into()))),
        (
            "nbf in the future",
            Some(with_claims(&|c| c["nbf"] = (now + 3600).into())),
        ),
        (
            "iat in the future",
            Some(with_claims(&|c| c["iat"] = (now + 3600).into())),
        ),
        (
            "no exp",
            Some(with_claims(&|c| drop(c.as_object_mut().unwrap().remove("exp")))),
        ),
        ("tampered payload", Some(tampered)),
        ("unknown kid", Some(unknown_kid)),
        (
            "over 8 KiB",
            Some(with_claims(&|c| c["pad"] = "x".repeat(9000).into())),
        ),
    ];
    let before = jwks.fetches.load(Ordering::SeqCst);
    for (name, token) in &attacks {
        let r = call(token.clone()).await.unwrap();
        assert_problem(&r, 401);
        assert_eq!(r.headers()["www-authenticate"], "Bearer", "{name}");
    }
    // Only the unknown kid made the verifier look for new keys, once.
    assert_eq!(jwks.fetches.load(Ordering::SeqCst), before + 1);
    let audit = h.audit().await;
    let unauth = audit.iter().filter(|r| r.outcome == "unauthenticated").count();
    assert_eq!(unauth, attacks.len());
    // No token text in the audit log.
    let log = std::fs::read_to_string(h.dir.path().join("audit.jsonl")).unwrap();
    assert!(!log.contains(&parts[2][..20]));

    // A rotated key is picked up by one refresh when a token names it.
    let rotated_dir = tempfile::tempdir().unwrap();
    let rotated = LocalIssuer::open_or_create(rotated_dir.path()).unwrap();
    let mut set = serde_json::to_value(idp.jwks()).unwrap();
    set["keys"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::to_value(&rotated.jwks().keys[0]).unwrap());
    *jwks.keys.lock().unwrap() = set;
    let fresh = rotated
        .mint(&TokenRequest {
            subject: "ana".into(),
            role: Role::Staff,
            patient_id: None,
            ttl: Duration::from_secs(300),
        })
        .unwrap();
    assert_eq!(call(Some(fresh.clone())).await.unwrap().status(), 200);

    // Valid tokens without a single docstore role, or a patient without a binding: 403.
    let no_role = with_claims(&|c| c["cognito:groups"] = serde_json::json!(["billing"]));
    let two_roles = with_claims(&|c| c["cognito:groups"] = serde_json::json!(["staff", "admin"]));
    let unbound = with_claims(&|c| c["cognito:groups"] = serde_json::json!(["patient"]));
    for t in [no_role, two_roles, unbound] {
        assert_problem(&call(Some(t)).await.unwrap(), 403);
    }

    // The issuer withdraws the first key: at the next refresh (here, the next unknown kid), a
    // token it signed stops working, though it was accepted (and cached as verified) before.
    assert_eq!(call(Some(good.clone())).await.unwrap().status(), 200);
    *jwks.keys.lock().unwrap() = serde_json::to_value(rotated.jwks()).unwrap();
    let third_dir = tempfile::tempdir().unwrap();
    let third = LocalIssuer::open_or_create(third_dir.path())
        .unwrap()
        .mint(&TokenRequest {
            subject: "ana".into(),
            role: Role::Staff,
            patient_id: None,
            ttl: Duration::from_secs(300),
        })
        .unwrap();
    assert_problem(&call(Some(third)).await.unwrap(), 401);
    assert_problem(&call(Some(good.clone())).await.unwrap(), 401);
    assert_eq!(call(Some(fresh)).await.unwrap().status(), 200);
    h.stop().await;
}
