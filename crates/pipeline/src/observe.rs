//! Worker observability: Prometheus metrics and health endpoints.
//!
//! [`WorkerMetrics`] is what the runtime updates; [`serve`] exposes it over HTTP:
//! - `GET /metrics`: Prometheus text format (processed, failed, retried, dead-lettered and ignored
//!   counters, a stage latency histogram, consumer lag);
//! - `GET /healthz`: 200 while the process runs;
//! - `GET /readyz`: 200 once the worker has joined its group and is polling, 503 before and after.
//!
//! Labels carry the stage name only: never document ids or anything from an event.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Counters, histogram and gauges of one worker.
#[derive(Debug)]
pub struct WorkerMetrics {
    /// Events a stage handled successfully.
    pub processed: Counter,
    /// Failed attempts (each retry that fails counts).
    pub failed: Counter,
    /// Retries scheduled after a transient failure.
    pub retried: Counter,
    /// Events sent to the dead-letter topic.
    pub dead_lettered: Counter,
    /// Events of ignored types (`account.*`).
    pub ignored: Counter,
    /// Stage latency of successful attempts, seconds.
    pub latency: Histogram,
    /// Messages in the owned partitions not yet read (refreshed every few seconds).
    pub lag: Gauge,
    /// Joined the group and polling.
    pub ready: AtomicBool,
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        WorkerMetrics {
            processed: Counter::default(),
            failed: Counter::default(),
            retried: Counter::default(),
            dead_lettered: Counter::default(),
            ignored: Counter::default(),
            // 1 ms … ~65 s
            latency: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
            lag: Gauge::default(),
            ready: AtomicBool::new(false),
        }
    }
}

impl WorkerMetrics {
    /// Prometheus text exposition of these metrics, labelled with `stage`.
    pub fn render(&self, stage: &str) -> String {
        let mut registry = Registry::with_prefix_and_labels(
            "docstore_worker",
            [("stage".into(), stage.to_owned().into())].into_iter(),
        );
        registry.register("processed", "Events handled successfully", self.processed.clone());
        registry.register("failed", "Failed attempts", self.failed.clone());
        registry.register(
            "retried",
            "Retries after transient failures",
            self.retried.clone(),
        );
        registry.register(
            "dead_lettered",
            "Events sent to the dead-letter topic",
            self.dead_lettered.clone(),
        );
        registry.register("ignored", "Events of ignored types", self.ignored.clone());
        registry.register(
            "stage_latency_seconds",
            "Latency of successful stage attempts",
            self.latency.clone(),
        );
        registry.register(
            "consumer_lag",
            "Unread messages in owned partitions",
            self.lag.clone(),
        );
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &registry);
        out
    }
}

#[derive(Clone)]
struct Served {
    stage: String,
    metrics: Arc<WorkerMetrics>,
}

async fn metrics(State(s): State<Served>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.render(&s.stage),
    )
}

async fn ready(State(s): State<Served>) -> StatusCode {
    if s.metrics.ready.load(Ordering::Relaxed) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr` until the task is dropped; returns the
/// bound address (port 0 picks a free one).
pub async fn serve(
    addr: SocketAddr,
    stage: &str,
    metrics: Arc<WorkerMetrics>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let app = axum::Router::new()
        .route("/metrics", get(self::metrics))
        .route("/healthz", get(|| async { StatusCode::OK }))
        .route("/readyz", get(ready))
        .with_state(Served {
            stage: stage.to_owned(),
            metrics,
        });
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "metrics endpoint stopped");
        }
    });
    Ok((bound, task))
}
