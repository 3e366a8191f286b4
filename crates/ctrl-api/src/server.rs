//! Startup and shutdown, in the order the services share: validated config →
//! logging → database (bounded retry) → listeners (the API's, and the
//! operations listener for readiness and metrics) → serve → drain on signal.

use std::future::Future;
use std::time::Duration;

use anyhow::{Context, Result};
use sqlx::MySqlPool;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::state::AppState;

/// Serves the API on `listener` until `shutdown` resolves, then lets
/// in-flight requests finish for up to the configured grace period.
pub async fn serve(
    config: &Config,
    listener: TcpListener,
    db: MySqlPool,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let restate = (
        crate::restate::Ingress::new(&config.restate.ingress_url),
        crate::restate::Admin::new(&config.restate.admin_url)
            .with_api_key(config.restate.api_key.get())
            .context("restate.api_key")?,
    );
    let state = AppState::new(
        db.clone(),
        config.vault().context("vault keys")?,
        &config.auth.tokens,
        restate,
    )
    .with_custom_domains(config.custom_domains.clone())
    .with_limits(&config.limits)
    .with_webhook_secrets(config.github.secrets());
    let state = if config.build_contexts.enabled() {
        state.with_build_contexts(ctrl_build::store::ContextStore::new(&config.build_contexts))
    } else {
        state
    };
    let cluster = config.cluster_sync.as_ref().map(|sync| {
        ctrl_cluster_sync::ClusterSync::new(
            db.clone(),
            &config.restate.ingress_url,
            sync.settings(),
        )
    });
    let app = crate::rpc::router_with(state.clone(), cluster.clone());
    let ops_listener = TcpListener::bind(config.http.ops_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (http.ops_listen)",
                config.http.ops_listen
            )
        })?;
    tracing::info!(address = %ops_listener.local_addr()?, "operations listener (/health, /metrics)");
    let grace = Duration::from_secs(config.http.shutdown_grace_seconds);
    let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
    let (ops_stop, mut ops_stopped) = tokio::sync::watch::channel(false);
    let ops = axum::serve(
        ctrl_runtime::net::nodelay(ops_listener),
        crate::rpc::ops_router(state.clone()),
    )
    .with_graceful_shutdown(async move {
        let _ = ops_stopped.wait_for(|s| *s).await;
    });
    let ops = tokio::spawn(async move { ops.await });
    let server =
        axum::serve(ctrl_runtime::net::nodelay(listener), app).with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: draining in-flight requests");
            state.begin_shutdown();
            if let Some(cluster) = &cluster {
                cluster.begin_shutdown();
            }
            let _ = signalled_tx.send(());
        });
    let server = tokio::spawn(async move { server.await });
    // Once the signal came, give the drain `grace`, then stop regardless.
    tokio::select! {
        result = server => result.context("server task")?.context("server")?,
        () = async {
            let _ = signalled_rx.await;
            tokio::time::sleep(grace).await;
        } => tracing::warn!("drain took longer than {grace:?}; exiting"),
    }
    ops_stop.send_replace(true);
    let _ = ops.await;
    Ok(())
}
