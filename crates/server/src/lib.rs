//! # docstore-server
//!
//! The clinic's File Management Service over the docstore library: a REST API under `/v1`
//! (`docs/api.md`), bearer tokens verified against an OIDC issuer's keys (or the embedded local
//! issuer), one access policy (`docs/access.md`) on every request, and an audit record of every
//! request, allowed or denied.
//!
//! ## Layout
//! | file | what |
//! | --- | --- |
//! | `auth/jwt.rs` | bearer-token verification: JWKS cache, pinned algorithms, claim mapping |
//! | `auth/local_issuer.rs` | the embedded default's Ed25519 issuer (not for production) |
//! | `policy.rs` | role × action × condition: the policy table |
//! | `access.rs` | exam releases and doctor assignments (SQLite or PostgreSQL) |
//! | `exam_events.rs` | the exam service's events applied to `access.rs` |
//! | `state.rs` | shared state, the `Caller` extractor, the per-request audit middleware |
//! | `tls.rs` | HTTPS: rustls (aws-lc-rs), PEM certificate and key, ALPN h2 and http/1.1 |
//! | `routes/` | one module per resource: documents, lists and release, search |
//! | `problem.rs` | RFC 9457 problem+json errors |
//! | `openapi.rs` | the OpenAPI 3.1 document, generated from the handlers' annotations |
//! | `ratelimit.rs`, `metrics.rs` | per-identity download limit; Prometheus metrics |
//! | `web/` | the pages: sessions, CSRF, security headers, templates (`templates/`), assets |
//! | `lib.rs` | [`start`]: the listener, connection limits, timeouts, graceful shutdown |
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! let dir = std::path::Path::new("/tmp/docstore-serve-example");
//! let store = Arc::new(docstore::DocStore::init_local(dir).await?);
//! let config = docstore_server::ServiceConfig::embedded(dir);
//! let service = docstore_server::start(store, config).await?;
//! println!("listening on {}", service.local_addr());
//! service.shutdown().await;
//! # Ok(()) }
//! ```

pub mod access;
pub mod auth;
pub mod exam_events;
pub mod metrics;
pub mod openapi;
pub mod policy;
pub mod problem;
pub mod ratelimit;
pub mod routes;
pub mod state;
pub mod tls;
pub mod web;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use docstore::DocStore;
use docstore_search::SearchIndex;
use docstore_tools::local::{LocalConfig, LocalPipeline};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

pub use state::Limits;

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// Binding the listener.
    #[error("listening on {addr}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The local issuer's key.
    #[error(transparent)]
    Issuer(#[from] auth::local_issuer::IssuerError),
    /// The link key.
    #[error(transparent)]
    KeyFile(#[from] auth::keyfile::KeyFileError),
    /// The issuer's key set.
    #[error(transparent)]
    Jwks(#[from] auth::jwt::JwksError),
    /// The access database.
    #[error(transparent)]
    Access(#[from] access::AccessError),
    /// The search index.
    #[error("search index")]
    Search(#[source] docstore_search::SearchError),
    /// The TLS certificate or key.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The HTTP client of the pages' OIDC sign-in.
    #[error("OIDC sign-in client")]
    OidcClient(#[source] reqwest::Error),
    /// The shared session store in the access database.
    #[error("session store")]
    Sessions(#[source] sqlx::Error),
}

/// Who issues the tokens the service trusts.
#[derive(Debug, Clone)]
pub enum Authentication {
    /// The embedded local issuer, whose key lives in the data directory (not for production).
    Local,
    /// An OIDC issuer (Amazon Cognito in production).
    Oidc(auth::VerifierConfig),
}

/// How to run the service.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Data directory (the local issuer's key, the embedded access database, the index).
    pub data_dir: PathBuf,
    /// Address to listen on (port 0: any free port).
    pub listen: SocketAddr,
    /// Token issuer.
    pub auth: Authentication,
    /// Request limits.
    pub limits: Limits,
    /// Search index directory (`None`: no search on this node).
    pub index_dir: Option<PathBuf>,
    /// Run the relay, every stage and the index in this process, on the in-process bus (the
    /// embedded single node). Off when workers run the stages from Kafka.
    pub pipeline: bool,
    /// Access database URL (`sqlite://…`, `postgres://…`); default: a SQLite file in the data
    /// directory.
    pub access_url: Option<String>,
    /// How long shutdown waits for requests in flight.
    pub shutdown_grace: Duration,
    /// Clinic name on stamps and in the index.
    pub clinic: String,
    /// A bus carrying the exam service's events (Kafka in production): when set, the service
    /// runs the [`exam_events::ExamEvents`] worker on it, so `exam.result.ready` releases results.
    pub exam_bus: Option<Arc<dyn docstore_bus::EventBus>>,
    /// The download links' HMAC key file (default `data_dir/server/link-key`, created on first
    /// use). Servers that share links share this key.
    pub link_key: Option<PathBuf>,
    /// Serve HTTPS (HTTP/2 and HTTP/1.1 by ALPN) with this certificate; `None`: plain HTTP.
    pub tls: Option<tls::TlsFiles>,
    /// The pages' sign-in with an OIDC provider (authorization code with PKCE); `None`: the
    /// development sign-in on the local issuer, or no page sign-in.
    pub pages_oidc: Option<web::oidc::PagesOidc>,
}

impl ServiceConfig {
    /// The embedded single node on 127.0.0.1:8080: local issuer, in-process pipeline, index
    /// under `data_dir/index`.
    pub fn embedded(data_dir: &Path) -> Self {
        ServiceConfig {
            data_dir: data_dir.to_owned(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            auth: Authentication::Local,
            limits: Limits::default(),
            index_dir: Some(data_dir.join("index")),
            pipeline: true,
            access_url: None,
            shutdown_grace: Duration::from_secs(10),
            clinic: "Clínica".into(),
            link_key: None,
            exam_bus: None,
            tls: None,
            pages_oidc: None,
        }
    }
}

/// A running service.
pub struct RunningService {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    pipeline: Option<LocalPipeline>,
    exam_worker: Option<(tokio_util::sync::CancellationToken, JoinHandle<()>)>,
    state: Arc<state::AppState>,
}

impl std::fmt::Debug for RunningService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningService")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl RunningService {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The shared state (the store, the access database).
    pub fn state(&self) -> &Arc<state::AppState> {
        &self.state
    }

    /// Stops accepting, drains requests in flight within the grace period, stops the pipeline.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        if let Some((stop, task)) = self.exam_worker {
            stop.cancel();
            let _ = task.await;
        }
        if let Some(p) = self.pipeline {
            p.stop().await;
        }
    }

    /// Runs until SIGTERM or SIGINT, then shuts down.
    pub async fn run_until_signal(self) {
        docstore_pipeline::runtime::shutdown_signal().await;
        tracing::info!("shutting down: draining requests in flight");
        self.shutdown().await;
    }
}

/// Starts the service on `store`.
pub async fn start(store: Arc<DocStore>, config: ServiceConfig) -> Result<RunningService, ServerError> {
    let verifier = match &config.auth {
        Authentication::Local => {
            let issuer = auth::LocalIssuer::open_or_create(&config.data_dir)?;
            tracing::warn!("tokens are verified against the local issuer: not for production");
            auth::TokenVerifier::new(issuer.verifier_config())?
        }
        Authentication::Oidc(v) => auth::TokenVerifier::new(v.clone())?,
    };
    let access = match &config.access_url {
        Some(url) => access::AccessStore::connect(url, 8).await?,
        None => access::AccessStore::sqlite(&config.data_dir.join("server").join("access.sqlite")).await?,
    };
    let keys = store.keys().as_ref();
    let index = match &config.index_dir {
        None => None,
        // An index of an older docstore is replaced: the pipeline's catch-up refills it.
        Some(dir) if config.pipeline => Some(Arc::new(
            SearchIndex::open_or_replace(dir, keys)
                .await
                .map_err(ServerError::Search)?,
        )),
        // Another process (the index worker) writes it; create it empty if it is not there yet.
        Some(dir) if !dir.exists() => Some(Arc::new(
            SearchIndex::open(dir, keys)
                .await
                .and_then(SearchIndex::finish_writing)
                .map_err(ServerError::Search)?,
        )),
        Some(dir) => Some(Arc::new(
            SearchIndex::open_read_only(dir, keys)
                .await
                .map_err(ServerError::Search)?,
        )),
    };
    if let (Some(index), false) = (&index, config.pipeline) {
        // A reader beside another process's writer sees new commits only after a reload.
        let index = Arc::downgrade(index);
        tokio::spawn(async move {
            while let Some(i) = index.upgrade() {
                if let Err(e) = i.refresh() {
                    tracing::warn!(error = %e, "search index reload failed");
                }
                drop(i);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
    let pipeline = match (&index, config.pipeline) {
        (Some(index), true) => Some(LocalPipeline::start(
            store.clone(),
            index.clone(),
            LocalConfig {
                clinic: config.clinic.clone(),
                ..LocalConfig::default()
            },
        )),
        _ => None,
    };
    if let Some(p) = &pipeline {
        // What an earlier process left half done (the in-process bus forgets on exit).
        match p.catch_up().await {
            Ok(c) => tracing::info!(
                reannounced = c.reannounced,
                reindexed = c.reindexed,
                "pipeline caught up"
            ),
            Err(e) => tracing::warn!(error = %e, "pipeline catch-up failed; new versions still flow"),
        }
    }
    let link_key = config
        .link_key
        .clone()
        .unwrap_or_else(|| auth::LinkSigner::key_path(&config.data_dir));
    let links = auth::LinkSigner::open_or_create(&link_key)?;
    // Servers that share a PostgreSQL access database share the pages' sessions too.
    let sessions = match &config.access_url {
        Some(url) if url.starts_with("postgres:") || url.starts_with("postgresql:") => {
            web::sessions::SessionBackend::postgres(url)
                .await
                .map_err(ServerError::Sessions)?
        }
        _ => web::sessions::SessionBackend::Memory(Default::default()),
    };
    let state = Arc::new(state::AppState {
        links,
        store,
        index,
        access,
        verifier: Arc::new(verifier),
        downloads: ratelimit::DownloadLimiter::new(config.limits.downloads_per_minute),
        limits: config.limits.clone(),
        metrics: Arc::new(metrics::HttpMetrics::default()),
        dev_sign_in: matches!(config.auth, Authentication::Local) && config.pages_oidc.is_none(),
        tls: config.tls.is_some(),
        sessions: sessions.clone(),
        oidc_login: config
            .pages_oidc
            .clone()
            .map(web::oidc::OidcLogin::new)
            .transpose()
            .map_err(ServerError::OidcClient)?,
    });
    let tls = config.tls.as_ref().map(tls::acceptor).transpose()?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServerError::Listen {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServerError::Listen {
        addr: config.listen,
        source,
    })?;
    let exam_worker = config.exam_bus.clone().map(|bus| {
        use docstore_pipeline::runtime::{RuntimeConfig, Worker};
        let mut rc = RuntimeConfig::new("docstore-exam-access", exam_events::TOPICS);
        rc.poll_wait = Duration::from_millis(100);
        let worker = Worker::new(
            bus,
            Arc::new(exam_events::ExamEvents::new(
                state.access.clone(),
                state.store.metadata().clone(),
            )),
            rc,
        );
        let stop = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move { worker.run_until_cancelled(&stop).await }
        });
        (stop, task)
    });
    let (stop, stopped) = watch::channel(false);
    if matches!(sessions, web::sessions::SessionBackend::Postgres(_)) {
        // Expired sessions leave the shared table every few minutes (any server may sweep).
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = until_stopped(&mut stopped) => break,
                    _ = tokio::time::sleep(Duration::from_secs(300)) => {}
                }
                if let Err(e) = sessions.delete_expired().await {
                    tracing::warn!(error = %e, "expired sessions were not deleted");
                }
            }
        });
    }
    let app = routes::router(state.clone());
    let task = tokio::spawn(accept_loop(
        listener,
        app,
        config.limits.clone(),
        config.shutdown_grace,
        stopped,
        tls,
    ));
    tracing::info!(%addr, "docstore service listening");
    Ok(RunningService {
        addr,
        stop,
        task,
        pipeline,
        exam_worker,
        state,
    })
}

async fn until_stopped(rx: &mut watch::Receiver<bool>) {
    loop {
        let stop = *rx.borrow_and_update();
        if stop || rx.changed().await.is_err() {
            return;
        }
    }
}

/// Accepts connections until told to stop, at most `max_connections` at once; each gets the
/// head-read timeout (a client trickling its headers is cut). On stop, in-flight requests get
/// `grace` to finish.
async fn accept_loop(
    listener: TcpListener,
    app: axum::Router,
    limits: Limits,
    grace: Duration,
    mut stopped: watch::Receiver<bool>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(64 * 1024)
        .max_concurrent_streams(100);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = until_stopped(&mut stopped) => break,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = until_stopped(&mut stopped) => break,
        };
        let _ = stream.set_nodelay(true);
        let svc = TowerToHyperService::new(app.clone());
        let watcher = graceful.watcher();
        let builder = builder.clone();
        let tls = tls.clone();
        let handshake_timeout = limits.header_timeout;
        tokio::spawn(async move {
            match tls {
                None => {
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                    let _ = watcher.watch(conn.into_owned()).await;
                }
                // The handshake runs in the connection's task, under the header timeout, so a
                // client that stalls it holds one connection slot for a bounded time.
                Some(acceptor) => {
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => {
                            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls_stream), svc);
                            let _ = watcher.watch(conn.into_owned()).await;
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(grace) => tracing::warn!("grace period over: requests still in flight were cut"),
    }
}
