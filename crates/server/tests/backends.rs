//! The API end to end on the production backends: S3 + KMS (moto) with PostgreSQL (metadata
//! and the access database), and S3 + KMS with DynamoDB. Create, a version with If-Match (412
//! when stale), latest and version N, ranges across frames, 304, renditions and search through
//! the in-process pipeline, lists with pagination, release, delete/restore, hold → purge
//! refused. Needs the test services (scripts/services.sh).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Harness, assert_problem};
use docstore::DocStore;
use docstore::audit::JsonlAudit;
use docstore::aws::AwsSettings;
use docstore::blob::ObjectBlobStore;
use docstore::keys::kms::KmsKeys;
use docstore::meta::MetadataStore;
use docstore_server::policy::Role;

use docstore_testkit::service;

async fn aws_store(
    settings: &AwsSettings,
    meta: Arc<dyn MetadataStore>,
    dir: &std::path::Path,
) -> Arc<DocStore> {
    let (prefix, alias) = aws_place(settings).await;
    aws_store_at(settings, &prefix, &alias, meta, dir)
}

/// A fresh blob prefix and KMS key (by alias) on the test services.
async fn aws_place(settings: &AwsSettings) -> (String, String) {
    let prefix = format!("server-{}", uuid::Uuid::new_v4().simple());
    let client = settings.kms_client();
    let key = client.create_key().send().await.unwrap();
    let key_id = key.key_metadata().unwrap().key_id().to_owned();
    let alias = format!("alias/docstore-server-{}", uuid::Uuid::new_v4().simple());
    client
        .create_alias()
        .alias_name(&alias)
        .target_key_id(&key_id)
        .send()
        .await
        .unwrap();
    (prefix, alias)
}

/// A store on the blobs under `prefix` and the KMS key `alias`: several such stores are the
/// nodes of one deployment.
fn aws_store_at(
    settings: &AwsSettings,
    prefix: &str,
    alias: &str,
    meta: Arc<dyn MetadataStore>,
    dir: &std::path::Path,
) -> Arc<DocStore> {
    let bucket = std::env::var("DOCSTORE_TEST_S3_BUCKET").unwrap_or_else(|_| "docstore-test".into());
    let blobs = ObjectBlobStore::s3(&bucket, Some(prefix), settings).unwrap();
    Arc::new(DocStore::new(
        Arc::new(blobs),
        meta,
        Arc::new(KmsKeys::new(settings.kms_client(), alias.to_owned())),
        Arc::new(JsonlAudit::open(&dir.join("audit.jsonl")).unwrap()),
    ))
}

/// A database of its own on the test server, so other tests' rows never mix in.
async fn fresh_postgres(url: &str) -> String {
    use sqlx::Connection;
    let name = format!("srv_{}", uuid::Uuid::new_v4().simple());
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut c)
        .await
        .unwrap();
    let (base, _) = url.rsplit_once('/').unwrap();
    format!("{base}/{name}")
}

/// The metadata of the PostgreSQL database `db`, as a server's store holds it.
async fn pg_meta(db: &str) -> Arc<docstore::meta::postgres::PostgresMetadata> {
    Arc::new(
        docstore::meta::postgres::PostgresMetadata::connect(db, 8)
            .await
            .unwrap(),
    )
}

async fn scenario(h: &Harness) {
    let staff = h.staff();
    let report = docstore_tools::synthetic::Generator::new(11, "Clínica", 2).report();
    let (patient_id, exam) = (report.patient_id.clone(), report.exam_id.clone());
    let r = h
        .http
        .post(h.url(&format!("/v1/documents?patient={patient_id}&exam={exam}")))
        .bearer_auth(&staff)
        .header("content-type", "application/pdf")
        .body(report.pdf.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let etag1 = r.headers()["etag"].to_str().unwrap().to_owned();
    let v: serde_json::Value = r.json().await.unwrap();
    let id = v["document_id"].as_str().unwrap().to_owned();
    let get = |path: String, headers: Vec<(&'static str, String)>| {
        let (http, url, token) = (h.http.clone(), h.url(&path), staff.clone());
        async move {
            let mut r = http.get(url).bearer_auth(token);
            for (k, v) in headers {
                r = r.header(k, v);
            }
            r.send().await.unwrap()
        }
    };
    let r = get(format!("/v1/documents/{id}"), vec![]).await;
    assert_eq!(r.bytes().await.unwrap().as_ref(), &report.pdf[..]);
    let n = report.pdf.len();
    let frame = 64 * 1024;
    let (a, b) = if n > frame + 10 {
        (frame - 5, frame + 5)
    } else {
        (1, n - 2)
    };
    let r = get(
        format!("/v1/documents/{id}/versions/1"),
        vec![("range", format!("bytes={a}-{b}"))],
    )
    .await;
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &report.pdf[a..=b]);
    let r = get(
        format!("/v1/documents/{id}"),
        vec![("if-none-match", etag1.clone())],
    )
    .await;
    assert_eq!(r.status(), 304);

    // Renditions and search, from the in-process pipeline over these backends.
    let started = Instant::now();
    let total = loop {
        let r: serde_json::Value = get(
            "/v1/search?q=hemograma%20OR%20glicemia%20OR%20colesterol%20OR%20urina".into(),
            vec![],
        )
        .await
        .json()
        .await
        .unwrap();
        if r["total"].as_u64().unwrap_or(0) >= 1 {
            break r["total"].as_u64().unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "never searchable: {r}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(total, 1);
    let r = get(
        format!("/v1/documents/{id}/versions/1/renditions/thumbnail"),
        vec![],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap().starts_with(b"\x89PNG"));
    let r = get(format!("/v1/documents/{id}/versions/1/renditions/stamp"), vec![]).await;
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap().starts_with(b"%PDF"));

    // A version with a stale If-Match: 412; with the right one: 201.
    let post_version = |tag: String| {
        let (http, url, token) = (
            h.http.clone(),
            h.url(&format!("/v1/documents/{id}/versions")),
            staff.clone(),
        );
        async move {
            http.post(url)
                .bearer_auth(token)
                .header("content-type", "application/pdf")
                .header("if-match", tag)
                .body("%PDF-1.4 second")
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(post_version(etag1.clone()).await.status(), 201);
    assert_problem(&post_version(etag1).await, 412);
    let r = get(format!("/v1/documents/{id}/versions/1"), vec![]).await;
    assert_eq!(r.bytes().await.unwrap().as_ref(), &report.pdf[..]);

    // Lists, paginated.
    let second = h
        .upload(
            &staff,
            &patient_id,
            "exm-extra",
            "application/pdf",
            b"%PDF-1.4 x".to_vec(),
        )
        .await;
    let page1: serde_json::Value = get(format!("/v1/patients/{patient_id}/documents?limit=1"), vec![])
        .await
        .json()
        .await
        .unwrap();
    let cursor = page1["next_cursor"].as_str().unwrap().to_owned();
    let page2: serde_json::Value = get(
        format!("/v1/patients/{patient_id}/documents?limit=1&cursor={cursor}"),
        vec![],
    )
    .await
    .json()
    .await
    .unwrap();
    let mut ids = vec![
        page1["items"][0]["document_id"].as_str().unwrap().to_owned(),
        page2["items"][0]["document_id"].as_str().unwrap().to_owned(),
    ];
    ids.sort();
    let mut want = vec![id.clone(), second.clone()];
    want.sort();
    assert_eq!(ids, want);

    // Release: the patient reads their result, the access database being this deployment's.
    let patient = h.token(Role::Patient, "p", Some(&patient_id));
    let read = |token: String| {
        let (http, url) = (h.http.clone(), h.url(&format!("/v1/documents/{id}")));
        async move {
            http.get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(read(patient.clone()).await, 404);
    h.release(&exam).await;
    assert_eq!(read(patient).await, 200);

    // Delete/restore; hold → purge refused.
    let admin = h.token(Role::Admin, "root", None);
    let send = |m: reqwest::Method, path: String, body: Option<serde_json::Value>| {
        let (http, url, token) = (h.http.clone(), h.url(&path), admin.clone());
        async move {
            let mut r = http.request(m, url).bearer_auth(token);
            if let Some(b) = body {
                r = r.json(&b);
            }
            r.send().await.unwrap().status().as_u16()
        }
    };
    assert_eq!(
        send(
            reqwest::Method::PUT,
            format!("/v1/documents/{second}/hold"),
            Some(serde_json::json!({"legal_hold": true}))
        )
        .await,
        200
    );
    assert_eq!(
        send(reqwest::Method::DELETE, format!("/v1/documents/{second}"), None).await,
        200
    );
    assert_eq!(
        send(
            reqwest::Method::POST,
            format!("/v1/documents/{second}/purge"),
            None
        )
        .await,
        409
    );
    assert_eq!(
        send(
            reqwest::Method::POST,
            format!("/v1/documents/{second}/restore"),
            None
        )
        .await,
        200
    );
    assert_eq!(get(format!("/v1/documents/{second}"), vec![]).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_on_s3_kms_and_postgres() {
    let Some(endpoint) = service("DOCSTORE_TEST_AWS_ENDPOINT") else {
        return;
    };
    let Some(pg) = service("DOCSTORE_TEST_PG_URL") else {
        return;
    };
    let settings = AwsSettings::local(&endpoint);
    let db = fresh_postgres(&pg).await;
    let meta = pg_meta(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let store = aws_store(&settings, meta, dir.path()).await;
    let h = Harness::start_on(dir, store, true, |c| c.access_url = Some(db.clone())).await;
    scenario(&h).await;
    h.stop().await;
    // The release is in PostgreSQL, not in a file of this node.
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(&db).await.unwrap();
    let (n,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM docstore_access_exams WHERE released_at IS NOT NULL")
            .fetch_one(&mut c)
            .await
            .unwrap();
    assert_eq!(n, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_on_s3_kms_and_dynamodb() {
    let Some(endpoint) = service("DOCSTORE_TEST_AWS_ENDPOINT") else {
        return;
    };
    let settings = AwsSettings::local(&endpoint);
    let client = settings.dynamodb_client();
    let table = format!("docstore-server-{}", uuid::Uuid::new_v4().simple());
    docstore::meta::dynamodb::DynamoMetadata::create_table(&client, &table)
        .await
        .unwrap();
    let meta = Arc::new(docstore::meta::dynamodb::DynamoMetadata::new(client, table));
    let dir = tempfile::tempdir().unwrap();
    let store = aws_store(&settings, meta, dir.path()).await;
    let h = Harness::start_on(dir, store, true, |_| {}).await;
    scenario(&h).await;
    h.stop().await;
}

/// The value of the hidden `csrf` field in a page.
fn csrf_of(html: &str) -> String {
    let field = "name=\"csrf\" value=\"";
    let at = html.find(field).expect("a csrf field") + field.len();
    html[at..at + html[at..].find('"').unwrap()].to_owned()
}

/// The `docstore_session` cookie a response sets, as a `Cookie` header value.
fn session_cookie(r: &reqwest::Response) -> Option<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("docstore_session="))
        .map(|c| c.split(';').next().unwrap().to_owned())
}

/// Rows of the shared session table under the id `cookie` carries.
async fn session_rows(db: &str, cookie: &str) -> i64 {
    use sqlx::Connection;
    let id = cookie.strip_prefix("docstore_session=").unwrap();
    let mut c = sqlx::PgConnection::connect(db).await.unwrap();
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM tower_sessions.session WHERE id = $1")
        .bind(id)
        .fetch_one(&mut c)
        .await
        .unwrap();
    n
}

/// Two servers behind one load balancer: the same PostgreSQL (metadata, access, sessions), the
/// same S3 prefix and KMS key, the same link key from configuration, tokens from one issuer.
/// Versions sent through both at once are all kept, numbered without a gap; of two
/// compare-and-swaps on the same version through different servers exactly one wins; a link
/// minted on one downloads on the other and its use limit holds across both; a page session
/// signed in on one is valid on the other, and signing out on the other ends it on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_versions_links_and_sessions() {
    let Some(endpoint) = service("DOCSTORE_TEST_AWS_ENDPOINT") else {
        return;
    };
    let Some(pg) = service("DOCSTORE_TEST_PG_URL") else {
        return;
    };
    let settings = AwsSettings::local(&endpoint);
    let db = fresh_postgres(&pg).await;
    let (prefix, alias) = aws_place(&settings).await;
    let shared = tempfile::tempdir().unwrap();
    let link_key = shared.path().join("link-key");
    let mut nodes = Vec::new();
    let mut trust = None;
    for _ in 0..2 {
        let meta = pg_meta(&db).await;
        let dir = tempfile::tempdir().unwrap();
        let store = aws_store_at(&settings, &prefix, &alias, meta, dir.path());
        let (db, link_key, trust_a) = (db.clone(), link_key.clone(), trust.clone());
        let h = Harness::start_on(dir, store, false, move |c| {
            c.access_url = Some(db);
            c.link_key = Some(link_key);
            c.index_dir = None;
            // The second trusts the first's issuer, as both would trust Cognito.
            if let Some(v) = trust_a {
                c.auth = docstore_server::Authentication::Oidc(v);
            }
        })
        .await;
        trust.get_or_insert_with(|| h.issuer.verifier_config());
        nodes.push(h);
    }
    let (a, b) = (&nodes[0], &nodes[1]);
    let staff = a.staff();
    let id = a
        .upload(
            &staff,
            "pac-two",
            "exm-two",
            "application/pdf",
            b"%PDF-1.4 v1".to_vec(),
        )
        .await;

    // 16 versions at once, alternating servers, none conditional.
    let sends = (0..16).map(|i| {
        let (node, body) = (&nodes[i % 2], format!("%PDF-1.4 version {i} via node {}", i % 2));
        let (http, url, staff) = (
            node.http.clone(),
            node.url(&format!("/v1/documents/{id}/versions")),
            staff.clone(),
        );
        async move {
            let r = http
                .post(url)
                .bearer_auth(staff)
                .header("content-type", "application/pdf")
                .body(body.clone())
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), body)
        }
    });
    let sent = futures::future::join_all(sends).await;
    assert!(sent.iter().all(|(s, _)| *s == 201), "{sent:?}");
    let list = b.get_json(&format!("/v1/documents/{id}/versions"), &staff).await;
    let numbers: Vec<u64> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers.len(), 17, "{list}");
    let mut sorted = numbers.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (1..=17).collect::<Vec<_>>());
    let mut bodies = Vec::new();
    for n in 2..=17u64 {
        let node = &nodes[n as usize % 2];
        let r = node
            .http
            .get(node.url(&format!("/v1/documents/{id}/versions/{n}")))
            .bearer_auth(&staff)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        bodies.push(String::from_utf8(r.bytes().await.unwrap().to_vec()).unwrap());
    }
    let mut want: Vec<String> = sent.into_iter().map(|(_, b)| b).collect();
    bodies.sort();
    want.sort();
    assert_eq!(bodies, want, "every version sent is stored, once");

    // Compare-and-swap on version 17 through both servers at once: one wins, one gets 412.
    let etag = a
        .http
        .get(a.url(&format!("/v1/documents/{id}")))
        .bearer_auth(&staff)
        .send()
        .await
        .unwrap()
        .headers()["etag"]
        .to_str()
        .unwrap()
        .to_owned();
    let cas = nodes.iter().map(|node| {
        node.http
            .post(node.url(&format!("/v1/documents/{id}/versions")))
            .bearer_auth(&staff)
            .header("content-type", "application/pdf")
            .header("if-match", &etag)
            .body("%PDF-1.4 conditional")
            .send()
    });
    let mut statuses: Vec<u16> = futures::future::join_all(cas)
        .await
        .into_iter()
        .map(|r| r.unwrap().status().as_u16())
        .collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 412]);

    // A link minted on A downloads on B, once: its use limit is counted for both.
    a.release("exm-two").await;
    let patient = a.token(Role::Patient, "lia", Some("pac-two"));
    let r = a
        .http
        .post(a.url(&format!("/v1/documents/{id}/versions/1/links")))
        .bearer_auth(&patient)
        .json(&serde_json::json!({"max_uses": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let link: serde_json::Value = r.json().await.unwrap();
    let path = link["url"].as_str().unwrap().to_owned();
    let r = b.http.get(b.url(&path)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"%PDF-1.4 v1");
    assert_problem(&a.http.get(a.url(&path)).send().await.unwrap(), 404);

    // A page session signed in on A is valid on B; signing out on B ends it on A too. Redirects
    // are not followed: each answer's cookie is read as the browser would.
    let http = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let form = http.get(a.url("/entrar")).send().await.unwrap();
    let cookie = session_cookie(&form).expect("the sign-in form starts a session");
    let csrf = csrf_of(&form.text().await.unwrap());
    let signed = http
        .post(a.url("/entrar"))
        .header("cookie", &cookie)
        .form(&[
            ("csrf", csrf.as_str()),
            ("subject", "ana"),
            ("role", "staff"),
            ("patient", ""),
        ])
        .send()
        .await
        .unwrap();
    // Signing in gives the session a new id (no fixation).
    assert!(signed.status().is_redirection(), "{}", signed.status());
    let cookie = session_cookie(&signed).expect("signing in sets the new session id");
    let page = |node: &Harness, path: &str| http.get(node.url(path)).header("cookie", &cookie).send();
    let on_b = page(b, "/enviar").await.unwrap();
    assert_eq!(on_b.status(), 200, "the session from A is valid on B");
    let csrf = csrf_of(&on_b.text().await.unwrap());
    assert_eq!(
        session_rows(&db, &cookie).await,
        1,
        "the session is a row in PostgreSQL"
    );
    let r = http
        .post(b.url("/sair"))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert!(r.status().is_redirection(), "{}", r.status());
    let after = page(a, "/enviar").await.unwrap();
    assert!(
        after.status().is_redirection() || after.status() == 401,
        "signed out on B, still signed in on A: {}",
        after.status()
    );
    assert_eq!(session_rows(&db, &cookie).await, 0, "the record is gone");
    for h in nodes {
        h.stop().await;
    }
}
