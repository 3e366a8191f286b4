//! Startup and the listeners: plain HTTP (HTTP/1.1, or HTTP/2 with prior
//! knowledge), TLS (ALPN h2 or http/1.1) and the admin port (health,
//! metrics); every connection tracked and drained on shutdown. A client's
//! HTTP/1.1 connection starts on the fast path (`proxy::fast`); hyper
//! serves HTTP/2 and whatever the fast path hands it.
//!
//! The request path runs thread-per-core, as nginx's workers do: each
//! worker thread has its own single-threaded runtime, its own listening
//! sockets on the same ports (`SO_REUSEPORT`; a worker hands a connection it
//! accepted to one serving fewer, see `Balance`) and its own upstream
//! connection pools, so a request and the upstream connection serving it
//! never wake another thread. The routing
//! table, metrics and traffic counts are shared (atomics and an `Arc` swap);
//! the control-plane stream, traffic reports and the admin port run on the
//! caller's runtime.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

use crate::config::Config;
use crate::control::Control;
use crate::metrics::Metrics;
use crate::proxy::{Conn, Left, Proxy, Rewind};
use crate::table::Routes;
use crate::tls::VaultLoader;
use crate::traffic::Traffic;

/// A TLS handshake must finish within this.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The listeners, bound (tests bind port 0 and read the addresses).
#[derive(Debug)]
pub struct Listeners {
    /// Plain HTTP.
    pub http: TcpListener,
    /// TLS.
    pub https: Option<TcpListener>,
    /// Health and metrics.
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds the configured addresses (the proxy ports with `SO_REUSEPORT`,
    /// so each worker thread can bind its own socket next to these).
    pub async fn bind(config: &Config) -> Result<Self> {
        let with_context = |a: SocketAddr, what: &'static str| {
            move |e: std::io::Error| anyhow::anyhow!("listen on {a} ({what}): {e}")
        };
        Ok(Self {
            http: reuseport(config.listen.http)
                .map_err(with_context(config.listen.http, "listen.http"))?,
            https: match config.listen.https {
                Some(a) => Some(reuseport(a).map_err(with_context(a, "listen.https"))?),
                None => None,
            },
            admin: TcpListener::bind(config.listen.admin)
                .await
                .map_err(with_context(config.listen.admin, "listen.admin"))?,
        })
    }
}

/// A listening socket on `addr` that other sockets may share.
fn reuseport(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Shared pieces of a running edge.
#[derive(Debug, Clone)]
pub struct Edge {
    /// The routing table.
    pub routes: Arc<Routes>,
    /// The metrics.
    pub metrics: Arc<Metrics>,
}

/// Runs the edge on `listeners` until `shutdown` resolves, then drains.
pub async fn run(
    config: &Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let count = match config.listen.workers {
        0 => std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        n => n,
    };
    let routes = Arc::new(Routes::default());
    let metrics = Arc::new(Metrics::with_workers(count));
    let traffic = Arc::new(Traffic::with_workers(count));
    let control = Control::new(config)?;
    let vault = config
        .vault
        .as_ref()
        .map(ctrl_runtime::sections::VaultConfig::vault)
        .transpose()
        .context("vault keys")?;
    if vault.is_none() {
        tracing::warn!("no [vault] keys: certificates cannot be opened, TLS serves none");
    }
    let certs = Arc::new(VaultLoader::new(vault));
    let https_port = match &listeners.https {
        Some(l) => Some(
            config
                .listen
                .public_https_port
                .unwrap_or(l.local_addr()?.port()),
        ),
        None => None,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |rx: &watch::Receiver<bool>| {
        let mut rx = rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(crate::sync::run(
        control.clone(),
        routes.clone(),
        certs,
        stopped(&stop_rx),
    ));
    {
        let traffic = traffic.clone();
        let every = Duration::from_secs(config.proxy.traffic_report_seconds);
        let control = control.clone();
        let stop = stopped(&stop_rx);
        tasks.spawn(async move { traffic.report_loop(control, every, stop).await });
    }
    let edge = Edge {
        routes: routes.clone(),
        metrics: metrics.clone(),
    };
    let admin = axum::serve(
        ctrl_runtime::net::nodelay(listeners.admin),
        admin_router(edge),
    )
    .with_graceful_shutdown(stopped(&stop_rx));
    tasks.spawn(async move {
        if let Err(e) = admin.await {
            tracing::error!(error = %e, "admin listener failed");
        }
    });

    tracing::info!(
        http = %listeners.http.local_addr()?,
        https = ?listeners.https.as_ref().map(TcpListener::local_addr).transpose()?,
        region = %config.region.key(),
        "frontline serving"
    );
    let tls = match &listeners.https {
        Some(_) => Some(TlsAcceptor::from(crate::tls::server_config(
            routes.clone(),
        )?)),
        None => None,
    };
    let http_addr = listeners.http.local_addr()?;
    let https_addr = listeners
        .https
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()?;
    // One wake-up bookkeeping for every worker: a deployment is asked for
    // once, whichever thread its requests land on.
    let wakes = Arc::new(crate::wake::Wakes::new(
        routes.clone(),
        control.clone(),
        Duration::from_secs(config.proxy.wake_timeout_seconds),
    ));
    let (balance, mut inboxes) = Balance::new(count, &metrics);
    let mut first = Some((listeners.http, listeners.https));
    let mut workers = Vec::with_capacity(count);
    for (i, inbox) in inboxes.drain(..).enumerate() {
        // The first worker takes the bound sockets; the others bind their own.
        let (http, https) = match first.take() {
            Some(pair) => pair,
            None => (
                reuseport(http_addr)?,
                https_addr.map(reuseport).transpose()?,
            ),
        };
        let worker = Worker {
            index: i,
            http: http.into_std()?,
            https: https.map(TcpListener::into_std).transpose()?,
            tls: tls.clone(),
            config: config.clone(),
            https_port,
            routes: routes.clone(),
            control: control.clone(),
            metrics: metrics.clone(),
            traffic: traffic.clone(),
            wakes: wakes.clone(),
            balance: balance.clone(),
            inbox,
        };
        let stop = stop_rx.clone();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name(format!("frontline-{i}"))
            .spawn(move || {
                let result = worker.run(stop);
                let _ = done_tx.send(result);
            })
            .context("start a worker thread")?;
        workers.push(done_rx);
    }

    shutdown.await;
    tracing::info!("shutting down: draining connections");
    stop_tx.send_replace(true);
    let mut result = Ok(());
    for done in workers {
        match done.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => result = Err(e),
            Err(_) => result = Err(anyhow::anyhow!("a worker thread died")),
        }
    }
    while tasks.join_next().await.is_some() {}
    result
}

/// One worker thread: its own runtime, sockets, upstream pools.
struct Worker {
    index: usize,
    http: std::net::TcpListener,
    https: Option<std::net::TcpListener>,
    tls: Option<TlsAcceptor>,
    config: Config,
    https_port: Option<u16>,
    routes: Arc<Routes>,
    control: Control,
    metrics: Arc<Metrics>,
    traffic: Arc<Traffic>,
    wakes: Arc<crate::wake::Wakes>,
    balance: Arc<Balance>,
    /// Connections other workers hand over.
    inbox: mpsc::UnboundedReceiver<Handover>,
}

/// Spreads client connections evenly over the workers. `SO_REUSEPORT`
/// hashes each connection to a worker, so a few long-lived connections can
/// all land on one worker while another idles (at 4 connections, half the
/// time 3 or 4 on one). A worker that accepts a connection while another
/// serves fewer hands it over: one cross-thread wake per connection, never
/// per request.
#[derive(Debug)]
struct Balance {
    /// Client connections each worker serves or is being handed.
    open: Vec<Gauge>,
    inboxes: Vec<mpsc::UnboundedSender<Handover>>,
}

/// A connection on its way to the worker that serves it.
#[derive(Debug)]
struct Handover {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    tls: bool,
    open: Open,
}

/// Counts a connection in its worker's `open` gauge until dropped.
#[derive(Debug)]
struct Open(Gauge);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Balance {
    fn new(
        workers: usize,
        metrics: &Metrics,
    ) -> (Arc<Self>, Vec<mpsc::UnboundedReceiver<Handover>>) {
        let (inboxes, receivers) = (0..workers).map(|_| mpsc::unbounded_channel()).unzip();
        let open = (0..workers).map(|w| metrics.connections(w)).collect();
        (Arc::new(Self { open, inboxes }), receivers)
    }

    /// Which worker serves a connection `worker` accepted: the one serving
    /// the fewest, `worker` itself on a tie; counted there from now on.
    fn pick(&self, worker: usize) -> (usize, Open) {
        let mut best = worker;
        for (i, g) in self.open.iter().enumerate() {
            if g.get() < self.open[best].get() {
                best = i;
            }
        }
        self.open[best].inc();
        (best, Open(self.open[best].clone()))
    }
}

impl Worker {
    /// Serves until `stop` says so, then drains (bounded by the grace).
    fn run(self, stop: watch::Receiver<bool>) -> Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("a worker runtime")?;
        rt.block_on(async move {
            tokio::spawn(keep_a_timer_due());
            let proxy = Arc::new(Proxy::new(
                &self.config,
                self.index,
                self.https_port,
                self.routes,
                self.control,
                self.metrics.clone(),
                self.traffic,
                self.wakes,
            )?);
            let serving = Arc::new(Serving {
                index: self.index,
                proxy,
                builder: Arc::new(http_builder(&self.config)),
                graceful: Arc::new(GracefulShutdown::new()),
                metrics: self.metrics,
                tls: self.tls,
                balance: self.balance,
                stop: stop.clone(),
            });
            let stopped = || {
                let mut rx = stop.clone();
                async move {
                    let _ = rx.wait_for(|s| *s).await;
                }
            };
            let mut loops = tokio::task::JoinSet::new();
            loops.spawn(accept_loop(
                TcpListener::from_std(self.http)?,
                false,
                serving.clone(),
                stopped(),
            ));
            if let Some(https) = self.https
                && serving.tls.is_some()
            {
                loops.spawn(accept_loop(
                    TcpListener::from_std(https)?,
                    true,
                    serving.clone(),
                    stopped(),
                ));
            }
            loops.spawn(inbox_loop(self.inbox, serving.clone(), stopped()));
            while loops.join_next().await.is_some() {}
            let grace = Duration::from_secs(self.config.listen.shutdown_grace_seconds);
            let graceful = Arc::try_unwrap(serving)
                .ok()
                .and_then(|s| Arc::try_unwrap(s.graceful).ok())
                .ok_or_else(|| anyhow::anyhow!("listeners still running"))?;
            if tokio::time::timeout(grace, graceful.shutdown())
                .await
                .is_err()
            {
                tracing::warn!("drain took longer than {grace:?}; exiting");
            }
            Ok(())
        })
    }
}

/// How soon a worker's runtime always has a timer due.
const TIMER_FLOOR: Duration = Duration::from_secs(1);

/// tokio wakes a runtime's event loop (an eventfd write, then an extra
/// `epoll_wait`) whenever a timer is set to fire before the one it sleeps
/// towards; with none pending that is every timer, and hyper sets one per
/// request head. A timer always due within [`TIMER_FLOOR`] keeps the
/// request path's timers (seconds away) behind it: about one system call
/// less per request.
/// The same tick refreshes the worker's coarse clock (`clock::tick`).
async fn keep_a_timer_due() {
    let mut tick = tokio::time::interval(TIMER_FLOOR);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        crate::clock::tick();
    }
}

fn http_builder(config: &Config) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(
            config.proxy.request_header_timeout_seconds,
        ))
        .max_buf_size(config.proxy.max_header_bytes.max(8192))
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(config.proxy.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(20));
    b
}

/// What a worker's loops share to serve a connection.
struct Serving {
    index: usize,
    proxy: Arc<Proxy>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    graceful: Arc<GracefulShutdown>,
    metrics: Arc<Metrics>,
    tls: Option<TlsAcceptor>,
    balance: Arc<Balance>,
    /// Says when the edge drains (the fast path's connections watch it).
    stop: watch::Receiver<bool>,
}

async fn accept_loop(
    listener: TcpListener,
    tls: bool,
    serving: Arc<Serving>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: pause, never spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let (worker, open) = serving.balance.pick(serving.index);
        if worker == serving.index {
            serving.serve(stream, peer, tls, open);
            continue;
        }
        // Another worker serves fewer: its runtime takes the socket over.
        match stream.into_std() {
            Ok(stream) => {
                let handover = Handover {
                    stream,
                    peer,
                    tls,
                    open,
                };
                // A worker gone (shutting down) drops the connection.
                let _ = serving.balance.inboxes[worker].send(handover);
            }
            Err(e) => tracing::debug!(%peer, error = %e, "hand-over failed"),
        }
    }
}

/// Serves the connections other workers hand over.
async fn inbox_loop(
    mut inbox: mpsc::UnboundedReceiver<Handover>,
    serving: Arc<Serving>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let h = tokio::select! {
            () = &mut shutdown => return,
            h = inbox.recv() => match h {
                Some(h) => h,
                None => return,
            },
        };
        match TcpStream::from_std(h.stream) {
            Ok(stream) => serving.serve(stream, h.peer, h.tls, h.open),
            Err(e) => tracing::debug!(peer = %h.peer, error = %e, "hand-over failed"),
        }
    }
}

impl Serving {
    /// Serves one client connection on a task of this worker, counted in
    /// `open` until it ends.
    fn serve(&self, stream: TcpStream, peer: SocketAddr, tls: bool, open: Open) {
        // A watcher, not the shutdown itself: the drain owns that.
        let (proxy, builder, watcher, metrics, stop) = (
            self.proxy.clone(),
            self.builder.clone(),
            self.graceful.watcher(),
            self.metrics.clone(),
            self.stop.clone(),
        );
        let acceptor = if tls { self.tls.clone() } else { None };
        tokio::spawn(async move {
            let _open = open;
            let serving = Connection {
                proxy,
                builder,
                watcher,
                stop,
            };
            match acceptor {
                None => serving.serve(stream, Conn::new(peer, false), true).await,
                Some(acceptor) => {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    {
                        Ok(Ok(tls_stream)) => {
                            metrics.tls_handshake("ok");
                            // HTTP/2 (by ALPN) is hyper's from the start.
                            let h2 = tls_stream.get_ref().1.alpn_protocol() == Some(b"h2");
                            serving.serve(tls_stream, Conn::new(peer, true), !h2).await;
                        }
                        Ok(Err(e)) => {
                            metrics.tls_handshake("error");
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        }
                        Err(_) => metrics.tls_handshake("timeout"),
                    }
                }
            }
        });
    }
}

/// What serving one client connection takes.
struct Connection {
    proxy: Arc<Proxy>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    /// Keeps the drain waiting until the connection ends.
    watcher: hyper_util::server::graceful::Watcher,
    stop: watch::Receiver<bool>,
}

impl Connection {
    /// Serves `io`: on the fast path while it can (`fast`), then, for the
    /// rest of the connection, through hyper.
    async fn serve<I>(self, io: I, conn: Conn, fast: bool)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let io = if fast {
            match self.proxy.serve_fast(io, &conn, &self.stop).await {
                Left::Closed => return,
                Left::Hyper(io) => io,
            }
        } else {
            Rewind::new(io, bytes::Bytes::new())
        };
        let peer = conn.peer;
        let proxy = self.proxy;
        let service = service_fn(move |req| proxy.clone().handle(req, conn.clone()));
        let connection = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(io), service)
            .into_owned();
        if let Err(e) = self.watcher.watch(connection).await {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
    }
}

/// `/health/live`, `/health/ready` (a table was received) and `/metrics`.
pub fn admin_router(edge: Edge) -> axum::Router {
    axum::Router::new()
        .route("/health/live", get(|| async { "ok" }))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(edge)
}

async fn ready(State(edge): State<Edge>) -> (StatusCode, String) {
    let r = &edge.routes;
    if !r.is_ready() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "no routing table yet\n".into(),
        );
    }
    let version = r.cursor();
    if r.is_connected() {
        (StatusCode::OK, format!("ready: table version {version}\n"))
    } else {
        // Still ready: the last table keeps serving. Said so plainly.
        (
            StatusCode::OK,
            format!(
                "ready: serving table version {version}; control plane unreachable for {:.0} s\n",
                r.staleness_seconds()
            ),
        )
    }
}

async fn metrics(
    State(edge): State<Edge>,
) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            ctrl_runtime::metrics::CONTENT_TYPE,
        )],
        edge.metrics.render(&edge.routes),
    )
}
