//! Request logging and metrics for every request, on both protocols.
//!
//! Each request gets a request id (the caller's `x-request-id` if it is a
//! sane token, else a new one), echoed in the response and carried by the
//! tracing span, so log lines of one request can be found together. Logged:
//! the RPC path, protocol, code and duration — never headers or bodies,
//! which may hold tokens or secret values.
//!
//! Metrics (Prometheus text at `/metrics`, on the operations listener):
//! `ctrl_api_requests_total` and `ctrl_api_request_duration_seconds`,
//! labelled by RPC, protocol and code, and `ctrl_api_readiness_checks_total`
//! (readiness checks actually run: at most one per second however often
//! `/health/ready` is asked).
//! For gRPC the code is read from a trailers-only error response's
//! `grpc-status` header; errors sent in trailers after a body (streams)
//! count as `ok` here.

use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ctrl_runtime::metrics::MetricsRegistry;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use tracing::Instrument;

/// Labels of the request metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `/ctrl.v1.Service/Method` or the endpoint path.
    pub rpc: String,
    /// `connect`, `grpc` or `http`.
    pub protocol: &'static str,
    /// `ok`, `not_found`, ... (Connect code names).
    pub code: &'static str,
}

/// The API's metrics registry.
#[derive(Clone)]
pub struct Metrics {
    registry: MetricsRegistry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<RequestLabels, Histogram>,
    readiness_checks: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let registry = MetricsRegistry::new("api");
        let requests = Family::<RequestLabels, Counter>::default();
        let durations = Family::<RequestLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        });
        registry.register(
            "requests",
            "Requests handled, by RPC, protocol and code",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time to the response headers, by RPC, protocol and code",
            durations.clone(),
        );
        let readiness_checks = Counter::default();
        registry.register(
            "readiness_checks",
            "Readiness checks run (database and Restate pinged)",
            readiness_checks.clone(),
        );
        Self {
            registry,
            requests,
            durations,
            readiness_checks,
        }
    }
}

impl Metrics {
    /// Counts a readiness check that ran.
    pub fn readiness_checked(&self) {
        self.readiness_checks.inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        self.registry.render()
    }

    /// The registry (mounted services register theirs here too).
    pub fn registry(&self) -> &MetricsRegistry {
        &self.registry
    }
}

/// `GET /metrics`
pub async fn metrics_endpoint(State(metrics): State<Metrics>) -> impl IntoResponse {
    (
        [("content-type", ctrl_runtime::metrics::CONTENT_TYPE)],
        metrics.render(),
    )
}

tokio::task_local! {
    /// The id of the request being handled (for propagation to Restate).
    static REQUEST_ID: String;
}

/// The current request's id, inside a handler.
pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// The middleware: request id, span, log line, metrics.
pub async fn observe(State(metrics): State<Metrics>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 128
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        })
        .map_or_else(
            || ctrl_core::names::random_dns1035(16, &mut rand::rng()),
            str::to_owned,
        );
    let protocol = protocol(&req);
    let rpc = rpc_label(req.uri().path());
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        req.headers_mut().insert("x-request-id", value);
    }
    // deployment_id is filled in by the handler once it has checked one
    // (`validate::id`), so a request's lines say which deployment.
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        rpc = %rpc,
        protocol,
        deployment_id = tracing::field::Empty
    );
    let mut response = REQUEST_ID
        .scope(request_id.clone(), next.run(req).instrument(span.clone()))
        .await;
    let code = code_of(protocol, &response);
    let elapsed = started.elapsed();
    span.in_scope(|| {
        tracing::info!(
            code,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            "handled"
        )
    });
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    let labels = RequestLabels {
        rpc,
        protocol,
        code,
    };
    metrics.requests.get_or_create(&labels).inc();
    metrics
        .durations
        .get_or_create(&labels)
        .observe(elapsed.as_secs_f64());
    response
}

fn protocol(req: &Request) -> &'static str {
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if content_type.starts_with("application/grpc") {
        "grpc"
    } else if req.uri().path().starts_with("/ctrl.v1.") {
        "connect"
    } else {
        "http"
    }
}

/// Known RPC paths and endpoints keep their path; anything else is one
/// label, so random paths cannot grow the metric without bound.
fn rpc_label(path: &str) -> String {
    let known = path.starts_with("/ctrl.v1.") && path.matches('/').count() == 2 && path.len() <= 96;
    if known || matches!(path, "/health/live" | "/health/ready" | "/metrics") {
        path.to_owned()
    } else {
        "other".to_owned()
    }
}

fn code_of(protocol: &str, response: &Response) -> &'static str {
    if protocol == "grpc" {
        let status = response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i32>().ok());
        return match status.unwrap_or(0) {
            0 => "ok",
            1 => "canceled",
            3 => "invalid_argument",
            4 => "deadline_exceeded",
            5 => "not_found",
            6 => "already_exists",
            7 => "permission_denied",
            8 => "resource_exhausted",
            9 => "failed_precondition",
            12 => "unimplemented",
            13 => "internal",
            14 => "unavailable",
            16 => "unauthenticated",
            _ => "unknown",
        };
    }
    match response.status() {
        s if s.is_success() => "ok",
        StatusCode::BAD_REQUEST => "invalid_argument",
        StatusCode::UNAUTHORIZED => "unauthenticated",
        StatusCode::FORBIDDEN => "permission_denied",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::CONFLICT => "already_exists",
        StatusCode::PAYLOAD_TOO_LARGE => "resource_exhausted",
        StatusCode::TOO_MANY_REQUESTS => "resource_exhausted",
        StatusCode::NOT_IMPLEMENTED => "unimplemented",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        StatusCode::GATEWAY_TIMEOUT => "deadline_exceeded",
        _ => "internal",
    }
}
