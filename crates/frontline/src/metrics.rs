//! Prometheus metrics of the edge. Labels never carry hostnames, paths or
//! headers: only deployment ids, status classes and error kinds.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use hyper::StatusCode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::table::Routes;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    deployment_id: String,
    class: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    class: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

/// Every metric frontline exports.
#[derive(Debug)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<ClassLabels, Histogram, fn() -> Histogram>,
    upstream_errors: Family<KindLabels, Counter>,
    tls_handshakes: Family<KindLabels, Counter>,
    table_version: Gauge<u64, AtomicU64>,
    table_connected: Gauge,
    table_ready: Gauge,
    table_staleness: Gauge<f64, AtomicU64>,
    hosts: Gauge,
    deployments: Gauge,
    certificates: Gauge,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn class(status: StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

impl Metrics {
    /// The metrics and their registry.
    pub fn new() -> Self {
        let mut m = Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            upstream_errors: Family::default(),
            tls_handshakes: Family::default(),
            table_version: Gauge::default(),
            table_connected: Gauge::default(),
            table_ready: Gauge::default(),
            table_staleness: Gauge::default(),
            hosts: Gauge::default(),
            deployments: Gauge::default(),
            certificates: Gauge::default(),
            registry: Registry::with_prefix("frontline"),
        };
        let r = &mut m.registry;
        r.register(
            "requests",
            "Requests answered, by deployment and status class",
            m.requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Time to answer headers, by status class",
            m.duration.clone(),
        );
        r.register(
            "upstream_errors",
            "Requests an instance or peer failed, by kind",
            m.upstream_errors.clone(),
        );
        r.register(
            "tls_handshakes",
            "TLS handshakes, by result",
            m.tls_handshakes.clone(),
        );
        r.register(
            "table_version",
            "The control plane version the routing table reflects",
            m.table_version.clone(),
        );
        r.register(
            "table_connected",
            "1 while the routing stream to the control plane is open",
            m.table_connected.clone(),
        );
        r.register(
            "table_ready",
            "1 once a complete routing table was received",
            m.table_ready.clone(),
        );
        r.register(
            "table_staleness_seconds",
            "Seconds since the control plane last confirmed the table is current",
            m.table_staleness.clone(),
        );
        r.register("hosts", "Hostnames in the routing table", m.hosts.clone());
        r.register(
            "deployments",
            "Deployments in the routing table",
            m.deployments.clone(),
        );
        r.register(
            "certificates",
            "Certificates in the routing table",
            m.certificates.clone(),
        );
        m
    }

    /// Counts an answered request.
    pub fn request(&self, deployment_id: Option<&str>, status: StatusCode, elapsed: Duration) {
        let class = class(status);
        self.requests
            .get_or_create(&RequestLabels {
                deployment_id: deployment_id.unwrap_or("-").to_owned(),
                class,
            })
            .inc();
        self.duration
            .get_or_create(&ClassLabels { class })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts a failed upstream request.
    pub fn upstream_error(&self, kind: &'static str) {
        self.upstream_errors
            .get_or_create(&KindLabels { kind })
            .inc();
    }

    /// Counts a TLS handshake (`ok`, `error`, `timeout`).
    pub fn tls_handshake(&self, kind: &'static str) {
        self.tls_handshakes
            .get_or_create(&KindLabels { kind })
            .inc();
    }

    /// The text exposition, with the table gauges read now.
    pub fn render(&self, routes: &Routes) -> String {
        let table = routes.current();
        let (hosts, deployments, certificates) = table.sizes();
        self.table_version.set(table.version);
        self.table_connected.set(i64::from(routes.is_connected()));
        self.table_ready.set(i64::from(routes.is_ready()));
        self.table_staleness.set(routes.staleness_seconds());
        self.hosts.set(hosts as i64);
        self.deployments.set(deployments as i64);
        self.certificates.set(certificates as i64);
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
