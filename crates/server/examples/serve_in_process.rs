//! The HTTP service inside your own process: the embedded single node on a free port of
//! 127.0.0.1, a staff token from the local issuer, an upload, a read back and the patient's list
//! over real HTTP, then a graceful shutdown. Run:
//! `cargo run -p docstore-server --example serve_in_process`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use docstore::DocStore;
use docstore_server::ServiceConfig;
use docstore_server::auth::{LocalIssuer, TokenRequest};
use docstore_server::policy::Role;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let store = Arc::new(DocStore::init_local(&data).await?);
    let mut config = ServiceConfig::embedded(&data);
    config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let service = docstore_server::start(store, config).await?;
    let base = format!("http://{}", service.local_addr());

    let token = LocalIssuer::open_or_create(&data)?.mint(&TokenRequest {
        subject: "ana".into(),
        role: Role::Staff,
        patient_id: None,
        ttl: Duration::from_secs(600),
    })?;
    let http = reqwest::Client::new();
    let created: serde_json::Value = http
        .post(format!("{base}/v1/documents?patient=pac-1&exam=exm-7"))
        .bearer_auth(&token)
        .header("Content-Type", "text/plain")
        .body("Hemoglobina: 13,5 g/dL")
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let id = created["document_id"].as_str().ok_or("no document_id")?;
    let body = http
        .get(format!("{base}/v1/documents/{id}"))
        .bearer_auth(&token)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    let list: serde_json::Value = http
        .get(format!("{base}/v1/patients/pac-1/documents"))
        .bearer_auth(&token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    println!("uploaded {id}, read back {body:?}; the patient's list: {list}");
    // Without a token the service answers 401 with a problem+json body.
    let anonymous = http.get(format!("{base}/v1/documents/{id}")).send().await?;
    println!("without a token: {}", anonymous.status());
    assert_eq!(body, "Hemoglobina: 13,5 g/dL");
    assert_eq!(anonymous.status(), reqwest::StatusCode::UNAUTHORIZED);
    service.shutdown().await;
    Ok(())
}
