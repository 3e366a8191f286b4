//! Startup and the listeners: plain HTTP (HTTP/1.1, or HTTP/2 with prior
//! knowledge), TLS (ALPN h2 or http/1.1) and the admin port (health,
//! metrics); every connection tracked and drained on shutdown.

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
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::config::Config;
use crate::control::Control;
use crate::metrics::Metrics;
use crate::proxy::{Conn, Proxy};
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
    /// Binds the configured addresses.
    pub async fn bind(config: &Config) -> Result<Self> {
        let bind = |a: SocketAddr, what: &'static str| async move {
            TcpListener::bind(a)
                .await
                .with_context(|| format!("listen on {a} ({what})"))
        };
        Ok(Self {
            http: bind(config.listen.http, "listen.http").await?,
            https: match config.listen.https {
                Some(a) => Some(bind(a, "listen.https").await?),
                None => None,
            },
            admin: bind(config.listen.admin, "listen.admin").await?,
        })
    }
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
    let routes = Arc::new(Routes::default());
    let metrics = Arc::new(Metrics::new());
    let traffic = Arc::new(Traffic::default());
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
    let proxy = Arc::new(Proxy::new(
        config,
        https_port,
        routes.clone(),
        control.clone(),
        metrics.clone(),
        traffic.clone(),
    )?);
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(crate::sync::run(
        control.clone(),
        routes.clone(),
        certs,
        stopped(),
    ));
    {
        let traffic = traffic.clone();
        let every = Duration::from_secs(config.proxy.traffic_report_seconds);
        let control = control.clone();
        let stop = stopped();
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
    .with_graceful_shutdown(stopped());
    tasks.spawn(async move {
        if let Err(e) = admin.await {
            tracing::error!(error = %e, "admin listener failed");
        }
    });

    let builder = Arc::new(http_builder(config));
    let graceful = Arc::new(GracefulShutdown::new());
    tracing::info!(
        http = %listeners.http.local_addr()?,
        https = ?listeners.https.as_ref().map(TcpListener::local_addr).transpose()?,
        region = %config.region.key(),
        "frontline serving"
    );
    let header_timeout = Duration::from_secs(config.proxy.request_header_timeout_seconds);
    tasks.spawn(accept_loop(
        listeners.http,
        None,
        proxy.clone(),
        builder.clone(),
        graceful.clone(),
        metrics.clone(),
        header_timeout,
        stopped(),
    ));
    if let Some(https) = listeners.https {
        let acceptor = TlsAcceptor::from(crate::tls::server_config(routes.clone())?);
        tasks.spawn(accept_loop(
            https,
            Some(acceptor),
            proxy,
            builder,
            graceful.clone(),
            metrics,
            header_timeout,
            stopped(),
        ));
    }

    shutdown.await;
    tracing::info!("shutting down: draining connections");
    stop_tx.send_replace(true);
    while tasks.join_next().await.is_some() {}
    let grace = Duration::from_secs(config.listen.shutdown_grace_seconds);
    let graceful =
        Arc::try_unwrap(graceful).map_err(|_| anyhow::anyhow!("listeners still running"))?;
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("drain took longer than {grace:?}; exiting");
    }
    Ok(())
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

#[allow(clippy::too_many_arguments)]
async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    proxy: Arc<Proxy>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    graceful: Arc<GracefulShutdown>,
    metrics: Arc<Metrics>,
    header_timeout: Duration,
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
        let (proxy, builder, graceful, metrics, tls) = (
            proxy.clone(),
            builder.clone(),
            graceful.clone(),
            metrics.clone(),
            tls.clone(),
        );
        tokio::spawn(async move {
            match tls {
                None => {
                    // A client must start its request within the header
                    // timeout (HTTP/2 prior knowledge included).
                    if !first_byte_within(&stream, header_timeout).await {
                        return;
                    }
                    serve(
                        stream,
                        Conn { peer, tls: false },
                        proxy,
                        &builder,
                        &graceful,
                    )
                    .await;
                }
                Some(acceptor) => {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    {
                        Ok(Ok(tls_stream)) => {
                            metrics.tls_handshake("ok");
                            serve(
                                tls_stream,
                                Conn { peer, tls: true },
                                proxy,
                                &builder,
                                &graceful,
                            )
                            .await;
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

async fn first_byte_within(stream: &TcpStream, timeout: Duration) -> bool {
    let mut buf = [0u8; 1];
    matches!(
        tokio::time::timeout(timeout, stream.peek(&mut buf)).await,
        Ok(Ok(n)) if n > 0
    )
}

async fn serve<I>(
    io: I,
    conn: Conn,
    proxy: Arc<Proxy>,
    builder: &auto::Builder<TokioExecutor>,
    graceful: &GracefulShutdown,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| proxy.clone().handle(req, conn));
    let connection = builder
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .into_owned();
    if let Err(e) = graceful.watch(connection).await {
        tracing::debug!(peer = %conn.peer, error = %e, "connection ended with an error");
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
    let version = r.current().version;
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
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        edge.metrics.render(&edge.routes),
    )
}
