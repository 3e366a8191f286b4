//! The standalone server: ClusterService and EdgeService (Connect and
//! gRPC) and `/health/{live,ready}` on the agents' port; health and
//! `/metrics` on the operations listener (`http.ops_listen`, never a public
//! network); drained on shutdown.

use std::future::Future;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use connectrpc_axum::MakeServiceBuilder;
use ctrl_runtime::health::CachedCheck;
use sqlx::MySqlPool;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::service::{ClusterSync, parts};

/// The agents' port: both services and health.
pub fn router(sync: ClusterSync, db: MySqlPool) -> axum::Router {
    let (connect, grpc) = parts(sync.clone());
    let (edge, edge_grpc) = crate::edge::parts(sync);
    let health = health(db);
    axum::Router::new().fallback_service(
        MakeServiceBuilder::new()
            .add_router(connect)
            .add_router(edge)
            .add_grpc_service(grpc)
            .add_grpc_service(edge_grpc)
            .add_axum_router_raw(health)
            .receive_max_bytes(4 << 20)
            .build(),
    )
}

/// `/health/live` and `/health/ready` (the database, checked at most once
/// a second).
fn health(db: MySqlPool) -> axum::Router {
    let readiness = std::sync::Arc::new(CachedCheck::new(Duration::from_secs(1)));
    axum::Router::new()
        .route("/health/live", get(|| async { "ok" }))
        .route("/health/ready", get(ready))
        .with_state((db, readiness))
}

/// The operations listener: health and `/metrics` (`ctrl_cluster_sync_…`).
pub fn ops_router(sync: &ClusterSync, db: MySqlPool) -> axum::Router {
    let metrics = ctrl_runtime::metrics::MetricsRegistry::new("cluster_sync");
    sync.metrics().register(&metrics);
    health(db).merge(metrics.router())
}

type Readiness = std::sync::Arc<CachedCheck<(StatusCode, &'static str)>>;

/// The database answers; checked at most once a second (a flood of probes
/// costs one ping).
async fn ready(
    State((db, readiness)): State<(MySqlPool, Readiness)>,
) -> (StatusCode, &'static str) {
    readiness
        .get(|| async {
            match tokio::time::timeout(Duration::from_secs(2), ctrl_db::ping(&db)).await {
                Ok(Ok(())) => (StatusCode::OK, "ready"),
                _ => (StatusCode::SERVICE_UNAVAILABLE, "database unreachable"),
            }
        })
        .await
}

/// Serves on `listener` until `shutdown` resolves; open streams end at once
/// (agents reconnect), other requests get the configured grace.
pub async fn serve(
    config: &Config,
    listener: TcpListener,
    db: MySqlPool,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let sync = ClusterSync::new(
        db.clone(),
        &config.restate.ingress_url,
        config.sync.settings(),
    );
    let ops_listener = TcpListener::bind(config.http.ops_listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.http.ops_listen))?;
    tracing::info!(address = %ops_listener.local_addr()?, "operations listener (health, metrics)");
    let ops = ops_router(&sync, db.clone());
    let (ops_stop_tx, ops_stop) = tokio::sync::watch::channel(false);
    let ops_server = tokio::spawn(async move {
        let mut ops_stop = ops_stop;
        axum::serve(ctrl_runtime::net::nodelay(ops_listener), ops)
            .with_graceful_shutdown(async move {
                let _ = ops_stop.wait_for(|s| *s).await;
            })
            .await
    });
    let app = router(sync.clone(), db);
    let grace = Duration::from_secs(config.http.shutdown_grace_seconds);
    let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
    let server =
        axum::serve(ctrl_runtime::net::nodelay(listener), app).with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: ending agent streams");
            sync.begin_shutdown();
            let _ = signalled_tx.send(());
        });
    let server = tokio::spawn(async move { server.await });
    tokio::select! {
        result = server => result.context("server task")?.context("server")?,
        () = async {
            let _ = signalled_rx.await;
            tokio::time::sleep(grace).await;
        } => tracing::warn!("drain took longer than {grace:?}; exiting"),
    }
    let _ = ops_stop_tx.send(true);
    let _ = ops_server.await;
    Ok(())
}
