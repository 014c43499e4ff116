//! A service on 127.0.0.1 (port 0) over a fresh embedded store, and tokens from its local issuer.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use docstore::DocStore;
use docstore_server::auth::{LocalIssuer, TokenRequest};
use docstore_server::policy::Role;
use docstore_server::{RunningService, ServiceConfig};

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub service: Option<RunningService>,
    pub issuer: LocalIssuer,
    pub base: String,
    pub http: reqwest::Client,
    pub store: Arc<DocStore>,
}

impl Harness {
    pub async fn start(pipeline: bool, tweak: impl FnOnce(&mut ServiceConfig)) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(DocStore::init_local(dir.path()).await.unwrap());
        Harness::start_on(dir, store, pipeline, tweak).await
    }

    /// The service over `store` (any backends), with `dir` as its data directory.
    pub async fn start_on(
        dir: tempfile::TempDir,
        store: Arc<DocStore>,
        pipeline: bool,
        tweak: impl FnOnce(&mut ServiceConfig),
    ) -> Harness {
        let mut config = ServiceConfig::embedded(dir.path());
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.pipeline = pipeline;
        config.shutdown_grace = Duration::from_secs(2);
        tweak(&mut config);
        let service = docstore_server::start(store.clone(), config).await.unwrap();
        let issuer = LocalIssuer::open_or_create(dir.path()).unwrap();
        let base = format!("http://{}", service.local_addr());
        Harness {
            dir,
            service: Some(service),
            issuer,
            base,
            // No pooled connections: a server that refused a body closes its connection, and a
            // reused one would fail the next request.
            http: reqwest::Client::builder()
                .no_proxy()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap(),
            store,
        }
    }

    pub fn token(&self, role: Role, sub: &str, patient: Option<&str>) -> String {
        self.issuer
            .mint(&TokenRequest {
                subject: sub.into(),
                role,
                patient_id: patient.map(str::to_owned),
                ttl: Duration::from_secs(600),
            })
            .unwrap()
    }

    pub fn staff(&self) -> String {
        self.token(Role::Staff, "ana", None)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Uploads `body` as a new document; returns its id.
    pub async fn upload(&self, token: &str, patient: &str, exam: &str, media: &str, body: Vec<u8>) -> String {
        let r = self
            .http
            .post(self.url(&format!(
                "/v1/documents?patient={patient}&exam={exam}&kind=report"
            )))
            .bearer_auth(token)
            .header("content-type", media)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "upload: {}", r.text().await.unwrap());
        let v: serde_json::Value = r.json().await.unwrap();
        v["document_id"].as_str().unwrap().to_owned()
    }

    pub async fn release(&self, exam: &str) {
        let r = self
            .http
            .post(self.url(&format!("/v1/exams/{exam}/release")))
            .bearer_auth(self.staff())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "release: {}", r.text().await.unwrap());
    }

    /// Every audit record so far.
    /// `GET path` with `token`, its body as JSON (whatever the status).
    pub async fn get_json(&self, path: &str, token: &str) -> serde_json::Value {
        self.http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn audit(&self) -> Vec<docstore::audit::AuditRecord> {
        self.store.audit_sink().read(None, 100_000).await.unwrap()
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.service.take() {
            s.shutdown().await;
        }
    }
}

pub fn assert_problem(r: &reqwest::Response, status: u16) {
    assert_eq!(r.status().as_u16(), status);
    assert_eq!(
        r.headers().get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/problem+json"),
        "status {status} without problem+json"
    );
}
