//! The routing table in memory: hostname → deployment → this region's
//! backends, plus certificates. Requests read an immutable [`Table`]
//! (an `Arc` clone under a read lock held for nanoseconds); the sync task
//! builds the next one and swaps it in whole, so a request never sees half
//! of a change.

use std::collections::HashMap;

/// The maps requests look things up in: a fast hash, which is safe here
/// because their keys come from the control plane (clients only look up).
pub type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use ctrl_proto::ctrl::v1 as pb;
use rustls::sign::CertifiedKey;
use tokio::sync::watch;

use crate::clock;

/// How to speak to a deployment's instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2 without TLS (prior knowledge).
    H2c,
}

/// Whether to route, wake or refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Route to its backends (or a peer region).
    Running,
    /// Stopped while idle: a request wakes it.
    Idle,
    /// Stopped on purpose: 503.
    Stopped,
}

/// One instance, shared by every table that lists it, so in-flight counts
/// and ejections survive table updates.
#[derive(Debug)]
pub struct Backend {
    /// "host:port".
    pub address: String,
    /// The same, parsed once for request URIs.
    pub authority: Option<hyper::http::uri::Authority>,
    /// Requests sent and not yet answered.
    pub in_flight: AtomicUsize,
    /// Monotonic ms (see [`clock`]) until which it gets no traffic.
    pub ejected_until: AtomicU64,
}

impl Backend {
    /// Whether it may get traffic at `now` (monotonic ms).
    pub fn available(&self, now: u64) -> bool {
        self.ejected_until.load(Ordering::Relaxed) <= now
    }
}

/// A deployment as the edge routes it.
#[derive(Debug)]
pub struct Deployment {
    /// `d_…` (shared with traffic counts and metrics without copying).
    pub id: Arc<str>,
    /// Its app (metrics, logs).
    pub app_id: String,
    /// How to speak to it.
    pub upstream: Upstream,
    /// Route, wake or refuse.
    pub state: State,
    /// Running instances in this region.
    pub backends: Vec<Arc<Backend>>,
    /// Other regions ("platform/region") where it runs.
    pub peer_regions: Vec<String>,
    /// Its id as a response header value, built once.
    pub header: Option<hyper::header::HeaderValue>,
    /// Its request counters by status class, looked up once.
    pub counters: std::sync::OnceLock<crate::metrics::DeploymentCounters>,
}

/// One immutable version of the table.
#[derive(Debug, Default, Clone)]
pub struct Table {
    hosts: Map<String, Arc<str>>,
    deployments: Map<Arc<str>, Arc<Deployment>>,
    certificates: Map<String, Arc<CertifiedKey>>,
    /// The control plane's version this table reflects.
    pub version: u64,
}

impl Table {
    /// The deployment serving `host` (lowercase, no port).
    pub fn route(&self, host: &str) -> Option<&Arc<Deployment>> {
        self.deployments.get(self.hosts.get(host)?)
    }

    /// The deployment with this id.
    pub fn deployment(&self, id: &str) -> Option<&Arc<Deployment>> {
        self.deployments.get(id)
    }

    /// The certificate for `host`: its own, else the wildcard one level up
    /// (`*.example.com` covers `a.example.com`, not `b.a.example.com`).
    pub fn certificate(&self, host: &str) -> Option<&Arc<CertifiedKey>> {
        self.certificates.get(host).or_else(|| {
            let (_, parent) = host.split_once('.')?;
            self.certificates.get(&format!("*.{parent}"))
        })
    }

    /// Counts (hosts, deployments, certificates).
    pub fn sizes(&self) -> (usize, usize, usize) {
        (
            self.hosts.len(),
            self.deployments.len(),
            self.certificates.len(),
        )
    }
}

/// Turns wire certificates into signing keys (opening the sealed key).
pub trait CertificateLoader: Send + Sync {
    /// The key pair, or why not.
    fn load(&self, c: &pb::EdgeCertificate) -> anyhow::Result<Arc<CertifiedKey>>;
}

/// A table being built from wire events.
pub struct Builder<'a> {
    table: Table,
    backends: &'a Backends,
    certs: &'a dyn CertificateLoader,
}

impl std::fmt::Debug for Builder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("version", &self.table.version)
            .finish()
    }
}

impl<'a> Builder<'a> {
    /// Starts from `base` (a copy of the live table, or empty for a snapshot).
    pub fn new(base: Table, backends: &'a Backends, certs: &'a dyn CertificateLoader) -> Self {
        Self {
            table: base,
            backends,
            certs,
        }
    }

    /// Applies one event.
    pub fn apply(&mut self, event: pb::watch_routes_response::Event) {
        use pb::watch_routes_response::Event;
        match event {
            Event::Host(h) => {
                let id: Arc<str> = match self
                    .table
                    .deployments
                    .get_key_value(h.deployment_id.as_str())
                {
                    Some((k, _)) => k.clone(),
                    None => h.deployment_id.into(),
                };
                self.table.hosts.insert(h.hostname, id);
            }
            Event::HostRemoved(h) => {
                self.table.hosts.remove(&h);
            }
            Event::Deployment(d) => {
                let upstream = match pb::UpstreamProtocol::try_from(d.upstream_protocol) {
                    Ok(pb::UpstreamProtocol::H2c) => Upstream::H2c,
                    _ => Upstream::Http1,
                };
                let state = match pb::EdgeDeploymentState::try_from(d.state) {
                    Ok(pb::EdgeDeploymentState::Idle) => State::Idle,
                    Ok(pb::EdgeDeploymentState::Stopped) => State::Stopped,
                    _ => State::Running,
                };
                let backends = d.addresses.iter().map(|a| self.backends.get(a)).collect();
                let id: Arc<str> = d.deployment_id.into();
                let dep = Deployment {
                    header: hyper::header::HeaderValue::from_str(&id).ok(),
                    id: id.clone(),
                    app_id: d.app_id,
                    upstream,
                    state,
                    backends,
                    peer_regions: d.peer_regions,
                    counters: std::sync::OnceLock::new(),
                };
                self.table.deployments.insert(id, Arc::new(dep));
            }
            Event::DeploymentRemoved(id) => {
                self.table.deployments.remove(id.as_str());
            }
            Event::Certificate(c) => match self.certs.load(&c) {
                Ok(key) => {
                    self.table.certificates.insert(c.hostname, key);
                }
                Err(e) => {
                    tracing::warn!(hostname = %c.hostname, error = %e, "certificate not usable; hosts it covers get no TLS");
                    self.table.certificates.remove(&c.hostname);
                }
            },
            Event::CertificateRemoved(h) => {
                self.table.certificates.remove(&h);
            }
            Event::SnapshotBegin(_) | Event::SnapshotEnd(_) => {}
        }
    }

    /// The finished table at `version`.
    pub fn finish(mut self, version: u64) -> Table {
        self.table.version = version;
        self.table
    }
}

/// Every backend by address, so its counters outlive table versions.
#[derive(Debug, Default)]
pub struct Backends {
    by_address: Mutex<HashMap<String, Arc<Backend>>>,
}

impl Backends {
    /// The backend for `address`, created on first use.
    pub fn get(&self, address: &str) -> Arc<Backend> {
        let mut map = self.by_address.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(address.to_owned())
            .or_insert_with(|| {
                Arc::new(Backend {
                    address: address.to_owned(),
                    authority: address.parse().ok(),
                    in_flight: AtomicUsize::new(0),
                    ejected_until: AtomicU64::new(0),
                })
            })
            .clone()
    }

    /// Forgets backends no table references any more.
    pub fn prune(&self) {
        let mut map = self.by_address.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, b| Arc::strong_count(b) > 1);
    }
}

/// Numbers each [`Routes`] of the process.
static NEXT_ROUTES: AtomicU64 = AtomicU64::new(0);

/// The table a thread read last ([`Routes::with_current`]).
struct Seen {
    routes: u64,
    generation: u64,
    table: Arc<Table>,
}

thread_local! {
    static SEEN: std::cell::RefCell<Option<Seen>> = const { std::cell::RefCell::new(None) };
}

/// The live table and what the sync task knows about it.
#[derive(Debug)]
pub struct Routes {
    table: RwLock<Arc<Table>>,
    /// Tells this `Routes` apart from others in the process (threads keep
    /// the table they last read, see [`Routes::with_current`]).
    id: u64,
    /// Bumped after every published table.
    generation: AtomicU64,
    changed: watch::Sender<u64>,
    /// Has ever had a complete table.
    ready: AtomicBool,
    /// The version to resume the stream from: the table's, or later when
    /// the control plane confirmed nothing changed since (0 = no table).
    cursor: AtomicU64,
    /// The stream to the control plane is open.
    connected: AtomicBool,
    /// Wall-clock ms when the control plane last confirmed the table is
    /// current (a change or a keepalive).
    confirmed_at: AtomicI64,
    /// The instances.
    pub backends: Backends,
}

impl Default for Routes {
    fn default() -> Self {
        Self {
            table: RwLock::new(Arc::new(Table::default())),
            id: NEXT_ROUTES.fetch_add(1, Ordering::Relaxed),
            generation: AtomicU64::new(0),
            changed: watch::channel(0).0,
            ready: AtomicBool::new(false),
            cursor: AtomicU64::new(0),
            connected: AtomicBool::new(false),
            confirmed_at: AtomicI64::new(0),
            backends: Backends::default(),
        }
    }
}

impl Routes {
    /// The current table.
    pub fn current(&self) -> Arc<Table> {
        self.table.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Runs `f` on the current table (which `f` must not ask for again).
    /// Each thread keeps the table it last read and takes the lock again
    /// only after a newer one was published, so a request touches no lock
    /// and no shared reference count to find its route. (A worker that
    /// stays idle keeps its last table alive until its next request.)
    pub fn with_current<R>(&self, f: impl FnOnce(&Table) -> R) -> R {
        let generation = self.generation.load(Ordering::Acquire);
        SEEN.with_borrow_mut(|seen| {
            let table = match seen {
                Some(s) if s.routes == self.id && s.generation == generation => &s.table,
                _ => {
                    &seen
                        .insert(Seen {
                            routes: self.id,
                            generation,
                            table: self.current(),
                        })
                        .table
                }
            };
            f(table)
        })
    }

    /// Replaces the table (a complete one).
    pub fn publish(&self, table: Table) {
        let version = table.version;
        *self.table.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
        self.generation.fetch_add(1, Ordering::Release);
        self.cursor.store(version, Ordering::Release);
        self.ready.store(true, Ordering::Release);
        self.confirm();
        self.changed.send_replace(version);
    }

    /// Resolves on every published table.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Where the stream resumes (0 before the first table).
    pub fn cursor(&self) -> u64 {
        self.cursor.load(Ordering::Acquire)
    }

    /// The control plane confirmed nothing changed up to `version`.
    pub fn advance(&self, version: u64) {
        if self.is_ready() {
            self.cursor.fetch_max(version, Ordering::AcqRel);
        }
        self.confirm();
    }

    /// The control plane confirmed the table is current.
    pub fn confirm(&self) {
        self.confirmed_at.store(clock::wall_ms(), Ordering::Relaxed);
    }

    /// Records whether the stream is open.
    pub fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
    }

    /// Whether a complete table was ever published.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Whether the stream is open.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Seconds since the control plane last confirmed the table (0 before
    /// the first table).
    pub fn staleness_seconds(&self) -> f64 {
        let at = self.confirmed_at.load(Ordering::Relaxed);
        if at == 0 {
            return 0.0;
        }
        (clock::wall_ms() - at).max(0) as f64 / 1000.0
    }
}
