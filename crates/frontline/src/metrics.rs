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
    /// Each worker thread observes its own histograms (a histogram takes a
    /// lock per observation; shared, the workers would queue on it).
    worker: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabels {
    worker: u64,
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
    duration: Vec<[Histogram; 5]>,
    upstream_errors: Family<KindLabels, Counter>,
    tls_handshakes: Family<KindLabels, Counter>,
    connections: Family<WorkerLabels, Gauge>,
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

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn class_index(status: StatusCode) -> usize {
    match status.as_u16() {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

/// A deployment's request counters by status class, looked up in the family
/// once (the request path then only increments).
#[derive(Debug, Clone)]
pub struct DeploymentCounters([Counter; 5]);

impl Metrics {
    /// The metrics and their registry, for one worker thread.
    pub fn new() -> Self {
        Self::with_workers(1)
    }

    /// The metrics and their registry, for `workers` worker threads.
    pub fn with_workers(workers: usize) -> Self {
        let mut m = Self {
            requests: Family::default(),
            duration: Vec::new(),
            upstream_errors: Family::default(),
            tls_handshakes: Family::default(),
            connections: Family::default(),
            table_version: Gauge::default(),
            table_connected: Gauge::default(),
            table_ready: Gauge::default(),
            table_staleness: Gauge::default(),
            hosts: Gauge::default(),
            deployments: Gauge::default(),
            certificates: Gauge::default(),
            // The naming scheme of every ctrl service (ctrl_runtime::metrics).
            registry: Registry::with_prefix("ctrl_frontline"),
        };
        let mut r = std::mem::take(&mut m.registry);
        r.register(
            "requests",
            "Requests answered, by deployment and status class",
            m.requests.clone(),
        );
        let duration: Family<ClassLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        // Clones share their values: the request path observes these.
        m.duration = (0..workers.max(1))
            .map(|w| {
                CLASSES.map(|class| {
                    duration
                        .get_or_create(&ClassLabels {
                            class,
                            worker: w.to_string(),
                        })
                        .clone()
                })
            })
            .collect();
        r.register(
            "request_duration_seconds",
            "Time to answer headers, by status class",
            duration,
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
            "connections",
            "Client connections open, by worker thread",
            m.connections.clone(),
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
        m.registry = r;
        m
    }

    /// Counts a request `worker` answered.
    pub fn request(
        &self,
        worker: usize,
        deployment: Option<&crate::table::Deployment>,
        status: StatusCode,
        elapsed: Duration,
    ) {
        let i = class_index(status);
        match deployment {
            Some(d) => {
                let counters = d.counters.get_or_init(|| {
                    DeploymentCounters(CLASSES.map(|class| {
                        self.requests
                            .get_or_create(&RequestLabels {
                                deployment_id: d.id.to_string(),
                                class,
                            })
                            .clone()
                    }))
                });
                counters.0[i].inc();
            }
            None => {
                self.requests
                    .get_or_create(&RequestLabels {
                        deployment_id: "-".to_owned(),
                        class: CLASSES[i],
                    })
                    .inc();
            }
        }
        if let Some(h) = self.duration.get(worker) {
            h[i].observe(elapsed.as_secs_f64());
        }
    }

    /// Counts a failed upstream request.
    pub fn upstream_error(&self, kind: &'static str) {
        self.upstream_errors
            .get_or_create(&KindLabels { kind })
            .inc();
    }

    /// Counts a TLS handshake (`ok`, `error`, `timeout`).
    /// The gauge of client connections `worker` serves (clones share it).
    pub fn connections(&self, worker: usize) -> Gauge {
        self.connections
            .get_or_create(&WorkerLabels {
                worker: worker as u64,
            })
            .clone()
    }

    pub fn tls_handshake(&self, kind: &'static str) {
        self.tls_handshakes
            .get_or_create(&KindLabels { kind })
            .inc();
    }

    /// The text exposition, with the table gauges read now.
    pub fn render(&self, routes: &Routes) -> String {
        let table = routes.current();
        let (hosts, deployments, certificates) = table.sizes();
        self.table_version.set(routes.cursor());
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
