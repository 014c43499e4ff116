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
    /// Times the worker rejoined its group after a bus failure.
    pub rejoins: Counter,
    /// Stage latency of successful attempts, seconds.
    pub latency: Histogram,
    /// Messages in the owned partitions not yet read (refreshed every few seconds).
    pub lag: Gauge,
    /// Joined the group and polling.
    pub ready: AtomicBool,
    /// The most recent successful attempts' latencies, seconds (a ring of
    /// [`LATENCY_SAMPLES`]), for exact percentiles where the histogram's buckets are too coarse
    /// (`docstore load`).
    recent: std::sync::Mutex<LatencyRing>,
}

/// Crates that read document content and log it at debug or trace level (`pdf_oxide` logs each
/// text span it extracts): silenced whatever `RUST_LOG` asks, so no log level can put patient
/// data in the logs.
pub const CONTENT_LOG_TARGETS: &[&str] = &[
    "pdf_oxide",
    "pdf_extract",
    "lopdf",
    "hayro",
    "hayro_syntax",
    "hayro_interpret",
    "hayro_jbig2",
    "hayro_ccitt",
    "printpdf",
    "jpeg_decoder",
    "tiff",
    "png",
];

/// The log target of third-party parsers' own error texts (which can quote bytes of the file):
/// errors, dead letters and `docstore dlq list` carry fixed descriptions instead. Off unless
/// `RUST_LOG` names it, e.g. `RUST_LOG=info,docstore_parser_detail=debug` while investigating a
/// refused file on a host allowed to log patient data.
pub const PARSER_DETAIL: &str = "docstore_parser_detail";

/// The log filter of every docstore binary: `RUST_LOG` (or `default`), with
/// [`CONTENT_LOG_TARGETS`] turned off on top, and [`PARSER_DETAIL`] too unless named.
pub fn log_filter(default: &str) -> tracing_subscriber::EnvFilter {
    let asked = std::env::var("RUST_LOG").unwrap_or_default();
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let detail_off = (!asked.contains(PARSER_DETAIL)).then_some(PARSER_DETAIL);
    for target in CONTENT_LOG_TARGETS.iter().copied().chain(detail_off) {
        if let Ok(d) = format!("{target}=off").parse() {
            filter = filter.add_directive(d);
        }
    }
    filter
}

/// Replaces the default panic hook (which prints the panic's message) by one that logs the
/// thread and the code location only. A parser's panic message can quote the bytes it choked on
/// (pdf_oxide's "not a char boundary; it is inside '…'" quotes the document), and the stages
/// catch third-party panics and go on, so the message would reach the logs of a healthy process.
pub fn install_redacting_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let at = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        tracing::error!(
            thread = thread.name().unwrap_or("unnamed"),
            at = %at,
            "panic (message withheld: it may quote document content)"
        );
    }));
}

/// How many recent latencies [`WorkerMetrics`] keeps (400 KB).
pub const LATENCY_SAMPLES: usize = 100_000;

#[derive(Debug, Default)]
struct LatencyRing {
    samples: Vec<f32>,
    next: usize,
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        WorkerMetrics {
            processed: Counter::default(),
            failed: Counter::default(),
            retried: Counter::default(),
            dead_lettered: Counter::default(),
            ignored: Counter::default(),
            rejoins: Counter::default(),
            // 1 ms … ~65 s
            latency: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
            lag: Gauge::default(),
            ready: AtomicBool::new(false),
            recent: std::sync::Mutex::default(),
        }
    }
}

impl WorkerMetrics {
    /// Records a successful attempt's latency (histogram and recent samples).
    pub fn observe_latency(&self, seconds: f64) {
        self.latency.observe(seconds);
        let mut ring = self
            .recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if ring.samples.len() < LATENCY_SAMPLES {
            ring.samples.push(seconds as f32);
        } else {
            let at = ring.next;
            ring.samples[at] = seconds as f32;
        }
        ring.next = (ring.next + 1) % LATENCY_SAMPLES;
    }

    /// The `q`-quantiles (0 < q ≤ 1) of the recent latencies, seconds; `None` before any.
    pub fn latency_quantiles(&self, qs: &[f64]) -> Option<Vec<f64>> {
        let mut v = self
            .recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .samples
            .clone();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f32::total_cmp);
        let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1] as f64;
        Some(qs.iter().map(|q| at(*q)).collect())
    }

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
            "rejoins",
            "Group rejoins after a bus failure",
            self.rejoins.clone(),
        );
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
        let helpers = crate::bounded::helper_threads();
        let alive = Gauge::<i64>::default();
        alive.set(i64::try_from(helpers.alive).unwrap_or(i64::MAX));
        registry.register(
            "parser_threads_alive",
            "Parser helper threads alive, timed-out ones included (capped)",
            alive,
        );
        let abandoned = Counter::<u64>::default();
        abandoned.inc_by(helpers.abandoned);
        registry.register(
            "parser_threads_abandoned",
            "Parser helper threads that timed out and were left running",
            abandoned,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_quantiles_are_exact_over_the_recent_ring() {
        let m = WorkerMetrics::default();
        assert_eq!(m.latency_quantiles(&[0.5]), None);
        for ms in 1..=100 {
            m.observe_latency(ms as f64 / 1e3);
        }
        let q = m.latency_quantiles(&[0.5, 0.99, 1.0]).unwrap();
        let close = |a: f64, b: f64| (a - b).abs() < 1e-6;
        assert!(
            close(q[0], 0.050) && close(q[1], 0.099) && close(q[2], 0.100),
            "{q:?}"
        );
        // Past the ring's size the oldest samples give way.
        for _ in 0..LATENCY_SAMPLES {
            m.observe_latency(1.0);
        }
        assert_eq!(m.latency_quantiles(&[0.01]).unwrap()[0], 1.0);
    }
}
