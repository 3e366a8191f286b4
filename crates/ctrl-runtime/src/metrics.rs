//! Prometheus metrics, one naming scheme for every service: each service
//! owns one [`MetricsRegistry`] whose names all start `ctrl_<service>_`
//! (`ctrl_api_`, `ctrl_worker_`, `ctrl_cluster_sync_`, `ctrl_krane_`,
//! `ctrl_frontline_`), counters end `_total` and durations `_seconds`;
//! labels name one concept each (`service`, `handler`, `region`, `kind`,
//! `outcome`). Served as OpenMetrics text at `GET /metrics` on each
//! service's internal listener ([`MetricsRegistry::router`]).

use std::sync::{Arc, Mutex, PoisonError};

use axum::routing::get;
use prometheus_client::registry::{Metric, Registry};

/// The exposition's content type.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A service's metrics; cheap to clone (clones share the registry).
#[derive(Clone)]
pub struct MetricsRegistry {
    service: Arc<str>,
    registry: Arc<Mutex<Registry>>,
}

impl std::fmt::Debug for MetricsRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsRegistry").finish_non_exhaustive()
    }
}

impl MetricsRegistry {
    /// The registry of `service` ("api", "worker", "cluster_sync", ...):
    /// every name registered gets the `ctrl_<service>_` prefix.
    pub fn new(service: &str) -> Self {
        Self {
            service: service.into(),
            registry: Arc::new(Mutex::new(Registry::default())),
        }
    }

    /// Registers `metric` as `ctrl_<service>_<name>` (counters get
    /// `_total` appended by the encoder).
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        let service = self.service.clone();
        self.register_for(&service, name, help, metric);
    }

    /// Registers `metric` as `ctrl_<service>_<name>`: a component that
    /// runs in its own process or mounted in another's (cluster-sync in
    /// ctrl-api) keeps its names either way.
    pub fn register_for(&self, service: &str, name: &str, help: &str, metric: impl Metric) {
        self.lock()
            .register(format!("ctrl_{service}_{name}"), help, metric);
    }

    /// The OpenMetrics text of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.lock())
            .expect("writing to a String cannot fail");
        out
    }

    /// `GET /metrics`.
    pub fn router(&self) -> axum::Router {
        let metrics = self.clone();
        axum::Router::new().route(
            "/metrics",
            get(move || {
                let text = metrics.render();
                async move { ([("content-type", CONTENT_TYPE)], text) }
            }),
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;

    use super::*;

    #[test]
    fn names_carry_the_service_prefix_and_counters_count() {
        let m = MetricsRegistry::new("worker");
        let c = Counter::<u64>::default();
        m.register("things", "Things done", c.clone());
        let mounted = Counter::<u64>::default();
        m.register_for("cluster_sync", "notifications", "Sent", mounted.clone());
        c.inc();
        mounted.inc_by(2);
        let own = Counter::<u64>::default();
        m.register_for("worker", "others", "Others", own.clone());
        own.inc();
        let text = m.render();
        assert!(text.contains("ctrl_worker_things_total 1"), "{text}");
        assert!(text.contains("ctrl_worker_others_total 1"), "{text}");
        assert!(
            text.contains("ctrl_cluster_sync_notifications_total 2"),
            "{text}"
        );
    }
}
