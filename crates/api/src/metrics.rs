//! Prometheus metrics in the text exposition format, written by hand: a few counters and
//! histograms need no client library. `track` is the middleware that counts and times every
//! request and writes the structured request log line.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::auth::{Caller, ConnInfo, Level};
use crate::problem::Problem;
use crate::state::AppState;

/// Histogram bounds, in seconds.
const BUCKETS: [f64; 14] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0];

#[derive(Debug, Clone, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += secs;
        self.count += 1;
    }
}

/// (metric name, label text such as `route="/v1/resources"`).
type Key = (&'static str, String);

/// The process's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<Key, u64>>,
    histograms: Mutex<BTreeMap<Key, Histogram>>,
}

/// Escapes a label value (`\`, `"`, newline).
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// `a="x",b="y"` from pairs.
pub fn labels(pairs: &[(&str, &str)]) -> String {
    pairs.iter().map(|(k, v)| format!("{k}=\"{}\"", esc(v))).collect::<Vec<_>>().join(",")
}

const HELP: &[(&str, &str, &str)] = &[
    ("nicompute_api_requests_total", "counter", "HTTP requests by route, method and status"),
    ("nicompute_api_request_duration_seconds", "histogram", "HTTP request handling time by route"),
    ("nicompute_api_allocations_total", "counter", "Allocations finished through the API by result"),
    ("nicompute_api_allocation_duration_seconds", "histogram", "Time from request to active or failed"),
    ("nicompute_api_checks_total", "counter", "Health checks of allocations by result"),
    ("nicompute_api_releases_total", "counter", "Releases by cause and result"),
    ("nicompute_api_deliveries_total", "counter", "Webhook delivery attempts by result"),
    ("nicompute_api_delivery_latency_seconds", "histogram", "Time from an event to its delivery"),
];

impl Metrics {
    pub fn inc(&self, name: &'static str, labels: String) {
        *self.counters.lock().unwrap_or_else(PoisonError::into_inner).entry((name, labels)).or_default() += 1;
    }

    pub fn observe(&self, name: &'static str, labels: String, d: Duration) {
        self.histograms
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((name, labels))
            .or_default()
            .observe(d.as_secs_f64());
    }

    /// The text exposition format, with `gauges` (name, help, value) appended.
    pub fn render(&self, gauges: &[(&str, &str, f64)]) -> String {
        let counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let histograms = self.histograms.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let mut out = String::new();
        for (name, kind, help) in HELP {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for ((n, l), v) in counters.iter().filter(|((n, _), _)| n == name) {
                let _ = writeln!(out, "{n}{{{l}}} {v}");
            }
            for ((n, l), h) in histograms.iter().filter(|((n, _), _)| n == name) {
                let sep = if l.is_empty() { "" } else { "," };
                for (b, c) in BUCKETS.iter().zip(h.counts) {
                    let _ = writeln!(out, "{n}_bucket{{{l}{sep}le=\"{b}\"}} {c}");
                }
                let _ = writeln!(out, "{n}_bucket{{{l}{sep}le=\"+Inf\"}} {}", h.count);
                let _ = writeln!(out, "{n}_sum{{{l}}} {}", h.sum);
                let _ = writeln!(out, "{n}_count{{{l}}} {}", h.count);
            }
        }
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        out
    }
}

/// Counts and times every request and logs one structured line per request.
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |m| m.as_str()).to_owned();
    let method = req.method().to_string();
    let peer = req.extensions().get::<ConnInfo>().map(|c| c.peer.to_string()).unwrap_or_default();
    let resp = next.run(req).await;
    let took = started.elapsed();
    let status = resp.status().as_u16().to_string();
    let m = state.metrics();
    m.inc("nicompute_api_requests_total", labels(&[("route", &route), ("method", &method), ("status", &status)]));
    m.observe("nicompute_api_request_duration_seconds", labels(&[("route", &route)]), took);
    tracing::info!(target: "nicompute::api::request", %method, %route, %status, %peer, micros = took.as_micros() as u64, "request");
    resp
}

async fn metrics(State(state): State<AppState>, caller: Caller) -> Result<Response, Problem> {
    caller.require(Level::Read)?;
    let pending = state.db().deliveries(Some(compute::db::DeliveryState::Pending), 100_000)?.len() as f64;
    let dead = state.db().deliveries(Some(compute::db::DeliveryState::Dead), 100_000)?.len() as f64;
    let text = state.metrics().render(&[
        ("nicompute_api_allocations_in_flight", "Allocations being made now", state.jobs_in_flight() as f64),
        ("nicompute_api_outbox_pending", "Webhook deliveries waiting", pending),
        ("nicompute_api_outbox_dead", "Webhook deliveries given up (dead letters)", dead),
    ]);
    let mut r = text.into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
    Ok(r)
}

pub fn routes() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics)).route("/healthz", get(|| async { "ok\n" }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_text_format() {
        let m = Metrics::default();
        m.inc("nicompute_api_requests_total", labels(&[("route", "/v1/x\"y"), ("status", "200")]));
        m.observe("nicompute_api_request_duration_seconds", labels(&[("route", "/v1/x")]), Duration::from_millis(3));
        let t = m.render(&[("g", "a gauge", 2.0)]);
        assert!(t.contains("nicompute_api_requests_total{route=\"/v1/x\\\"y\",status=\"200\"} 1"), "{t}");
        assert!(t.contains("nicompute_api_request_duration_seconds_bucket{route=\"/v1/x\",le=\"0.0025\"} 0"), "{t}");
        assert!(t.contains("nicompute_api_request_duration_seconds_bucket{route=\"/v1/x\",le=\"0.005\"} 1"), "{t}");
        assert!(t.contains("# TYPE g gauge\ng 2"), "{t}");
    }
}
