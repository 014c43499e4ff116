//! Prometheus metrics of the HTTP service: requests by method, route and status, a latency
//! histogram by route, bytes sent, requests in flight.

use std::sync::Mutex;
use std::time::Duration;

use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

/// The service's request metrics.
pub struct HttpMetrics {
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    bytes: Counter,
    in_flight: Gauge,
}

impl std::fmt::Debug for HttpMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpMetrics").finish_non_exhaustive()
    }
}

/// Decrements the in-flight gauge when the request ends.
#[derive(Debug)]
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Default for HttpMetrics {
    fn default() -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            // 0.5 ms … ~4 s.
            Histogram::new(exponential_buckets(0.0005, 2.0, 14))
        });
        let bytes = Counter::default();
        let in_flight = Gauge::default();
        let mut registry = Registry::with_prefix("docstore_http");
        registry.register(
            "requests",
            "HTTP requests by method, route and status",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time to the response head, by route",
            latency.clone(),
        );
        registry.register(
            "response_bytes",
            "Response body bytes announced by Content-Length",
            bytes.clone(),
        );
        registry.register("in_flight_requests", "Requests being handled", in_flight.clone());
        HttpMetrics {
            registry: Mutex::new(registry),
            requests,
            latency,
            bytes,
            in_flight,
        }
    }
}

impl HttpMetrics {
    /// Counts a request in flight until the guard drops.
    pub fn in_flight(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    /// Records a finished request.
    pub fn observe(&self, method: &str, route: &str, status: u16, took: Duration, resp: &Response) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_owned(),
                route: route.to_owned(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .observe(took.as_secs_f64());
        if let Some(len) = resp
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
        {
            self.bytes.inc_by(len);
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &registry);
        out
    }
}
