//! Prometheus metrics: requests by route template and status, a latency histogram, and
//! the pool's usage; [`summary`] reads them back for the console's System page. Labels use the matched route (`/api/v1/products/{id}`), never the raw
//! path, so the label set stays bounded.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sqlx::PgPool;

use super::AppState;

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process-wide recorder (the `metrics` facade has one global recorder; several
/// servers in one test process share it).
pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("http_request_duration_seconds".into()),
                    LATENCY_BUCKETS,
                )
                .unwrap_or_else(|_| PrometheusBuilder::new());
            match builder.install_recorder() {
                Ok(handle) => handle,
                // Another recorder is installed already: render from a private one.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

/// Middleware recording each request.
pub async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Sets the pool gauges from `pool` now and renders every metric as `/metrics` shows it.
fn observe(pool: &PgPool) -> String {
    metrics::gauge!("db_pool_connections").set(f64::from(pool.size()));
    metrics::gauge!("db_pool_idle_connections").set(pool.num_idle() as f64);
    metrics::gauge!("db_pool_max_connections").set(f64::from(pool.options().get_max_connections()));
    handle().render()
}

/// `GET /metrics`
pub async fn render(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        observe(&state.pool),
    )
}

/// The numbers of `/metrics` an operator reads first (the console's System page), read
/// back from the same rendering, summed over routes and methods. Process-wide: one service
/// instance's since it started.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub pool_connections: u64,
    pub pool_idle: u64,
    pub pool_max: u64,
    /// Requests answered, by status class (`2xx`, `4xx`, …).
    pub requests_by_class: BTreeMap<String, u64>,
    /// Requests timed, and their total time in seconds.
    pub timed: u64,
    pub seconds: f64,
    /// The latency histogram over every route: (upper bound in seconds, requests at or
    /// below it), ascending; the last bound is +Inf.
    pub buckets: Vec<(f64, u64)>,
    /// Connection recycling (`src/db/recycle.rs`): backends measured, connections closed.
    pub memory_checks: u64,
    pub recycled: u64,
}

impl Summary {
    /// The bucket bound at or below which at least `q` of the requests were answered
    /// (e.g. `≤ 25 ms` for the 95th percentile); `None` before any request.
    pub fn quantile_bound(&self, q: f64) -> Option<f64> {
        if self.timed == 0 {
            return None;
        }
        let wanted = ((q * self.timed as f64).ceil() as u64).max(1);
        self.buckets
            .iter()
            .find(|(_, n)| *n >= wanted)
            .map(|(le, _)| *le)
    }

    /// The mean latency in seconds.
    pub fn mean(&self) -> Option<f64> {
        (self.timed > 0).then(|| self.seconds / self.timed as f64)
    }
}

/// The [`Summary`] of `/metrics` as it would answer now for `pool`.
pub fn summary(pool: &PgPool) -> Summary {
    summarize(&observe(pool))
}

/// Reads a Prometheus text rendering into a [`Summary`].
fn summarize(text: &str) -> Summary {
    let mut summary = Summary::default();
    let mut buckets: BTreeMap<u64, (f64, u64)> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        let label = |key: &str| {
            let at = labels.find(&format!("{key}=\""))? + key.len() + 2;
            labels[at..].split('"').next()
        };
        let count = value as u64;
        match name {
            "db_pool_connections" => summary.pool_connections = count,
            "db_pool_idle_connections" => summary.pool_idle = count,
            "db_pool_max_connections" => summary.pool_max = count,
            "db_backend_memory_checks_total" => summary.memory_checks += count,
            "db_connections_recycled_total" => summary.recycled += count,
            "http_requests_total" => {
                if let Some(class) = label("status").and_then(|s| s.get(..1)) {
                    *summary
                        .requests_by_class
                        .entry(format!("{class}xx"))
                        .or_default() += count;
                }
            }
            "http_request_duration_seconds_count" => summary.timed += count,
            "http_request_duration_seconds_sum" => summary.seconds += value,
            "http_request_duration_seconds_bucket" => {
                let le = match label("le") {
                    Some("+Inf") => f64::INFINITY,
                    Some(le) => match le.parse::<f64>() {
                        Ok(le) => le,
                        Err(_) => continue,
                    },
                    None => continue,
                };
                // Keyed by the bound's bits: every bound is positive, so they sort as the
                // bounds do.
                buckets.entry(le.to_bits()).or_insert((le, 0)).1 += count;
            }
            _ => {}
        }
    }
    summary.buckets = buckets.into_values().collect();
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rendering_sums_over_routes_by_status_class_and_bound() {
        let text = "\
# TYPE http_requests_total counter
http_requests_total{method=\"GET\",route=\"/a\",status=\"200\"} 3
http_requests_total{method=\"POST\",route=\"/b\",status=\"201\"} 1
http_requests_total{method=\"GET\",route=\"/a\",status=\"404\"} 2
http_request_duration_seconds_bucket{method=\"GET\",route=\"/a\",le=\"0.005\"} 4
http_request_duration_seconds_bucket{method=\"GET\",route=\"/a\",le=\"0.1\"} 5
http_request_duration_seconds_bucket{method=\"GET\",route=\"/a\",le=\"+Inf\"} 5
http_request_duration_seconds_sum{method=\"GET\",route=\"/a\"} 0.05
http_request_duration_seconds_count{method=\"GET\",route=\"/a\"} 5
http_request_duration_seconds_bucket{method=\"POST\",route=\"/b\",le=\"0.005\"} 0
http_request_duration_seconds_bucket{method=\"POST\",route=\"/b\",le=\"0.1\"} 0
http_request_duration_seconds_bucket{method=\"POST\",route=\"/b\",le=\"+Inf\"} 1
http_request_duration_seconds_sum{method=\"POST\",route=\"/b\"} 0.95
http_request_duration_seconds_count{method=\"POST\",route=\"/b\"} 1
db_pool_connections 4
db_pool_idle_connections 3
db_pool_max_connections 10
db_connections_recycled_total 2
";
        let s = summarize(text);
        assert_eq!(s.requests_by_class["2xx"], 4);
        assert_eq!(s.requests_by_class["4xx"], 2);
        assert_eq!(s.timed, 6);
        assert!((s.mean().unwrap() - 1.0 / 6.0).abs() < 1e-9);
        assert_eq!(s.buckets, vec![(0.005, 4), (0.1, 5), (f64::INFINITY, 6)]);
        assert_eq!(s.quantile_bound(0.5), Some(0.005));
        assert_eq!(s.quantile_bound(0.8), Some(0.1));
        assert_eq!(s.quantile_bound(0.95), Some(f64::INFINITY));
        assert_eq!((s.pool_connections, s.pool_idle, s.pool_max), (4, 3, 10));
        assert_eq!((s.memory_checks, s.recycled), (0, 2));
        assert_eq!(summarize("").quantile_bound(0.5), None);
    }
}
