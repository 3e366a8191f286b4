//! cluster-sync's metrics (`ctrl_cluster_sync_…`; see
//! [`ctrl_runtime::metrics`]): open agent streams by kind, each region
//! feed's last successful poll and the changes it published, readiness
//! notifications sent and failed, snapshot durations, log batches relayed.
//! Served by the standalone server's operations listener, or by ctrl-api's
//! when mounted there.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

use ctrl_runtime::metrics::MetricsRegistry;

/// `kind` of a stream or snapshot: `krane`, `edge` or `log_requests`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// What kind.
    pub kind: &'static str,
}

/// A region (its id).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RegionLabels {
    /// The region's id.
    pub region: String,
}

/// `outcome` of a notification: `sent` or `failed`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// What happened.
    pub outcome: &'static str,
}

/// The service's metrics; cheap to clone.
#[derive(Debug, Clone)]
pub struct SyncMetrics {
    streams: Family<KindLabels, Gauge>,
    feed_last_poll: Family<RegionLabels, Gauge>,
    changes_published: Family<RegionLabels, Counter>,
    notifications: Family<OutcomeLabels, Counter>,
    snapshot_duration: Family<KindLabels, Histogram>,
    log_batches: Counter,
}

impl Default for SyncMetrics {
    fn default() -> Self {
        Self {
            streams: Family::default(),
            feed_last_poll: Family::default(),
            changes_published: Family::default(),
            notifications: Family::default(),
            snapshot_duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 16))
            }),
            log_batches: Counter::default(),
        }
    }
}

impl SyncMetrics {
    /// Adds every metric to `registry` under `ctrl_cluster_sync_`.
    pub fn register(&self, registry: &MetricsRegistry) {
        const SERVICE: &str = "cluster_sync";
        registry.register_for(
            SERVICE,
            "open_streams",
            "Agent streams open now, by kind (krane, edge, log_requests)",
            self.streams.clone(),
        );
        registry.register_for(
            SERVICE,
            "feed_last_poll_timestamp_seconds",
            "Unix time of each region feed's last successful poll (time() minus it is the feed's lag)",
            self.feed_last_poll.clone(),
        );
        registry.register_for(
            SERVICE,
            "feed_changes_published",
            "Desired-state changes each region feed published",
            self.changes_published.clone(),
        );
        registry.register_for(
            SERVICE,
            "notifications",
            "Readiness notifications to Deploy workflows, by outcome (sent, failed)",
            self.notifications.clone(),
        );
        registry.register_for(
            SERVICE,
            "snapshot_duration_seconds",
            "Time to stream a full snapshot, by kind (krane, edge)",
            self.snapshot_duration.clone(),
        );
        registry.register_for(
            SERVICE,
            "log_batches",
            "Batches of log lines agents pushed for readers",
            self.log_batches.clone(),
        );
    }

    /// Counts a stream of `kind` as open until the guard is dropped.
    pub(crate) fn stream_opened(&self, kind: &'static str) -> StreamGuard {
        let gauge = self.streams.get_or_create(&KindLabels { kind }).clone();
        gauge.inc();
        StreamGuard(gauge)
    }

    pub(crate) fn feed_polled(&self, region: &str, published: u64) {
        let labels = RegionLabels {
            region: region.to_owned(),
        };
        self.feed_last_poll
            .get_or_create(&labels)
            .set(ctrl_runtime::now_ms() / 1000);
        if published > 0 {
            self.changes_published
                .get_or_create(&labels)
                .inc_by(published);
        }
    }

    pub(crate) fn notified(&self, sent: bool) {
        let outcome = if sent { "sent" } else { "failed" };
        self.notifications
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    pub(crate) fn snapshot_took(&self, kind: &'static str, elapsed: std::time::Duration) {
        self.snapshot_duration
            .get_or_create(&KindLabels { kind })
            .observe(elapsed.as_secs_f64());
    }

    pub(crate) fn log_batch(&self) {
        self.log_batches.inc();
    }
}

/// Decrements its stream gauge when the stream's task ends.
#[derive(Debug)]
pub(crate) struct StreamGuard(Gauge);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
