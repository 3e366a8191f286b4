//! The standalone server: ClusterService (Connect and gRPC) and
//! `/health/{live,ready}` on one port, drained on shutdown.

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

/// Everything on one router.
pub fn router(sync: ClusterSync, db: MySqlPool) -> axum::Router {
    let (connect, grpc) = parts(sync.clone());
    let (edge, edge_grpc) = crate::edge::parts(sync);
    let readiness = std::sync::Arc::new(CachedCheck::new(Duration::from_secs(1)));
    let health = axum::Router::new()
        .route("/health/live", get(|| async { "ok" }))
        .route("/health/ready", get(ready))
        .with_state((db, readiness));
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
    Ok(())
}
