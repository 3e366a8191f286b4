//! Prometheus metrics of the agent (`ctrl_krane_…`, see
//! [`ctrl_runtime::metrics`]).

use prometheus_client::metrics::counter::Counter;
use std::sync::atomic::AtomicU64;

use ctrl_runtime::metrics::MetricsRegistry;
use prometheus_client::metrics::gauge::Gauge;

/// Every metric krane exports (cheap to clone; clones share values).
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// Desired-state changes received (snapshot and watch).
    pub changes: Counter,
    /// Snapshots completed.
    pub snapshots: Counter,
    /// Watch reconnects.
    pub reconnects: Counter,
    /// Applies that succeeded.
    pub applies_ok: Counter,
    /// Applies that failed.
    pub applies_failed: Counter,
    /// Workloads removed.
    pub deletes: Counter,
    /// Reconcile passes that found drift and fixed it.
    pub reconcile_corrections: Counter,
    /// Status reports sent.
    pub reports: Counter,
    /// Deployments krane knows it should run (updated by each reconcile).
    pub desired: Gauge,
    /// The newest region version received: where a reconnecting watch resumes.
    pub cursor: Gauge<u64, AtomicU64>,
}

impl Metrics {
    /// A registry exposing these metrics (`ctrl_krane_…`).
    pub fn registry(&self) -> MetricsRegistry {
        let r = MetricsRegistry::new("krane");
        r.register(
            "changes_received",
            "Desired-state changes received",
            self.changes.clone(),
        );
        r.register(
            "snapshots",
            "Full snapshots applied",
            self.snapshots.clone(),
        );
        r.register(
            "watch_reconnects",
            "Watch stream reconnects",
            self.reconnects.clone(),
        );
        r.register(
            "applies_succeeded",
            "Deployment applies that succeeded",
            self.applies_ok.clone(),
        );
        r.register(
            "applies_failed",
            "Deployment applies that failed",
            self.applies_failed.clone(),
        );
        r.register(
            "deletes",
            "Deployment workloads removed",
            self.deletes.clone(),
        );
        r.register(
            "reconcile_corrections",
            "Drift found and fixed by the reconcile loop",
            self.reconcile_corrections.clone(),
        );
        r.register(
            "status_reports",
            "Instance reports sent",
            self.reports.clone(),
        );
        r.register(
            "desired_deployments",
            "Deployments that should run here",
            self.desired.clone(),
        );
        r.register(
            "cursor_version",
            "Newest region version received",
            self.cursor.clone(),
        );
        r
    }
}
