//! `docstore serve`: the HTTP service (crates/server).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use docstore::{DocStore, Error};
use docstore_server::auth::{ClaimMapping, KeySource, VerifierConfig};
use docstore_server::{Authentication, ServiceConfig};

/// `docstore serve`.
#[derive(Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// OIDC issuer URL (its discovery document names the JWKS); default: the local issuer.
    #[arg(long, env = "DOCSTORE_OIDC_ISSUER")]
    oidc_issuer: Option<String>,
    /// Expected `aud` of access tokens (with --oidc-issuer).
    #[arg(long, env = "DOCSTORE_OIDC_AUDIENCE")]
    oidc_audience: Option<String>,
    /// JWKS URL, instead of OIDC discovery.
    #[arg(long, env = "DOCSTORE_OIDC_JWKS")]
    oidc_jwks: Option<String>,
    /// Claim naming the role (a string or an array of group names).
    #[arg(long, default_value = "cognito:groups")]
    roles_claim: String,
    /// Claim naming a patient's patient id.
    #[arg(long, default_value = "patient_id")]
    patient_claim: String,
    /// Search index directory (default: `<data-dir>/index`).
    #[arg(long)]
    index: Option<PathBuf>,
    /// Do not run the relay, the stages and the index in this process (workers run them).
    #[arg(long)]
    no_pipeline: bool,
    /// Access database URL (`sqlite://…`, `postgres://…`; default `<data-dir>/server/access.sqlite`).
    /// With PostgreSQL the pages' sessions live there too, shared by every server on it.
    #[arg(long, env = "DOCSTORE_ACCESS_DB")]
    access_db: Option<String>,
    /// Largest upload, bytes.
    #[arg(long, default_value_t = 256 * 1024 * 1024)]
    max_upload: u64,
    /// Downloads per identity per minute.
    #[arg(long, default_value_t = 600)]
    downloads_per_minute: u32,
    /// Clinic name on stamps and in the index.
    #[arg(long, env = "DOCSTORE_CLINIC", default_value = "Clínica")]
    clinic: String,
    /// Bus carrying the exam service's events (`kafka://host:port[?prefix=P]`): the service
    /// applies `exam.created`, `exam.updated` and `exam.result.ready` from it.
    #[arg(long, env = "DOCSTORE_BUS")]
    bus: Option<String>,
    /// HMAC key file of download links (default `<data-dir>/server/link-key`); servers that
    /// share links share it.
    #[arg(long, env = "DOCSTORE_LINK_KEY")]
    link_key: Option<PathBuf>,
    /// Serve HTTPS with this PEM certificate chain (needs --tls-key); HTTP/2 and HTTP/1.1.
    #[arg(long, env = "DOCSTORE_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "DOCSTORE_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The pages' client id at the OIDC provider (authorization code with PKCE; needs
    /// --oidc-issuer and --oidc-redirect-url).
    #[arg(long, env = "DOCSTORE_OIDC_CLIENT_ID", requires_all = ["oidc_issuer", "oidc_redirect_url"])]
    oidc_client_id: Option<String>,
    /// The client's secret, for a confidential client.
    #[arg(long, env = "DOCSTORE_OIDC_CLIENT_SECRET", hide_env_values = true)]
    oidc_client_secret: Option<String>,
    /// Where the provider returns: this service's `/entrar/retorno`, as the browser reaches it.
    #[arg(long, env = "DOCSTORE_OIDC_REDIRECT_URL")]
    oidc_redirect_url: Option<String>,
}

pub(crate) fn server_error(e: impl std::error::Error) -> Error {
    let mut detail = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        detail.push_str(&format!(": {s}"));
        source = s.source();
    }
    Error::unavailable("server", detail)
}

pub(crate) async fn serve(store: DocStore, data_dir: &Path, a: ServeArgs) -> Result<(), Error> {
    let mut config = ServiceConfig::embedded(data_dir);
    config.listen = a.listen;
    config.pipeline = !a.no_pipeline;
    config.index_dir = Some(a.index.unwrap_or_else(|| data_dir.join("index")));
    config.access_url = a.access_db;
    config.limits.max_upload = a.max_upload;
    config.limits.downloads_per_minute = a.downloads_per_minute;
    config.clinic = a.clinic;
    config.link_key = a.link_key;
    let scheme = if a.tls_cert.is_some() { "https" } else { "http" };
    if let (Some(cert), Some(key)) = (a.tls_cert, a.tls_key) {
        config.tls = Some(docstore_server::tls::TlsFiles { cert, key });
    }
    if let Some(url) = &a.bus {
        config.exam_bus = Some(docstore_bus::open_bus(url).map_err(server_error)?);
    }
    let claims = ClaimMapping {
        roles: a.roles_claim,
        patient: a.patient_claim,
    };
    if let (Some(client_id), Some(issuer), Some(redirect_url)) =
        (a.oidc_client_id, a.oidc_issuer.clone(), a.oidc_redirect_url)
    {
        config.pages_oidc = Some(docstore_server::web::oidc::PagesOidc {
            issuer,
            client_id,
            client_secret: a.oidc_client_secret,
            redirect_url,
            claims: claims.clone(),
        });
    }
    if let Some(issuer) = a.oidc_issuer {
        let audience = a
            .oidc_audience
            .ok_or_else(|| Error::InvalidInput("--oidc-issuer needs --oidc-audience".into()))?;
        config.auth = Authentication::Oidc(VerifierConfig {
            keys: match a.oidc_jwks {
                Some(url) => KeySource::Jwks(url),
                None => KeySource::Discovery(issuer.clone()),
            },
            issuer,
            audience,
            claims,
            refresh_interval: Duration::from_secs(30),
        });
    } else {
        eprintln!("note: tokens come from the local issuer (`docstore token`): not for production");
    }
    let service = docstore_server::start(Arc::new(store), config)
        .await
        .map_err(server_error)?;
    eprintln!("listening on {scheme}://{}", service.local_addr());
    service.run_until_signal().await;
    Ok(())
}
