//! `/health/live`, `/health/ready` (registered and a snapshot applied) and
//! `/metrics`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;
use crate::stream::StreamState;

#[derive(Clone)]
struct Health {
    stream: Arc<StreamState>,
    metrics: Metrics,
}

/// The router.
pub fn router(stream: Arc<StreamState>, metrics: Metrics) -> axum::Router {
    axum::Router::new()
        .route("/health/live", get(|| async { "ok" }))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics_endpoint))
        .with_state(Health { stream, metrics })
}

async fn ready(State(h): State<Health>) -> (StatusCode, &'static str) {
    if !h.stream.registered.load(Ordering::SeqCst) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not registered with cluster-sync yet",
        )
    } else if !h.stream.synced.load(Ordering::SeqCst) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "first snapshot not applied yet",
        )
    } else {
        (StatusCode::OK, "ready")
    }
}

async fn metrics_endpoint(State(h): State<Health>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, ctrl_runtime::metrics::CONTENT_TYPE)],
        h.metrics.registry().render(),
    )
}
