//! ctrl-api against a real MariaDB, called as a library and over real
//! sockets with the Connect and gRPC clients.

mod acme;
mod binary;
mod builds;
mod create;
mod deletion;
mod deployments;
mod fixtures;
mod fuzz;
mod limits;
mod live;
mod repositories;
mod server;
mod settings;
mod tenancy;

use ctrl_api::state::AppState;
use ctrl_vault::{KeyConfig, Vault};

/// The token tests authenticate with.
pub(crate) const TOKEN: &str = "test-token-0123456789abcdef";
/// frontline's credential for dev/local, registered by [`state`].
pub(crate) const EDGE_TOKEN: &str = "ctrl_agent_test_edge_local_0123456789abcdef";

/// State over a fresh database, a test vault key and [`TOKEN`] (plus a
/// second, rotated-in token).
pub(crate) async fn state() -> anyhow::Result<AppState> {
    // No Restate behind this address: tests that start workflows use
    // `state_with_ingress` with a real server.
    let nowhere = format!("http://127.0.0.1:{}", ctrl_testkit::free_port()?);
    state_with_restate(&nowhere, &nowhere).await
}

/// Like [`state`], with Restate's ingress and admin API at these URLs.
pub(crate) async fn state_with_restate(ingress: &str, admin: &str) -> anyhow::Result<AppState> {
    let db = ctrl_testkit::test_database().await?;
    let vault = Vault::new(&[KeyConfig {
        id: "test".into(),
        base64: "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".into(),
    }])?;
    let tokens = [TOKEN.to_owned(), "second-token-abcdefghijklmnop".to_owned()];
    let restate = (
        ctrl_api::restate::Ingress::new(ingress),
        ctrl_api::restate::Admin::new(admin),
    );
    ctrl_cluster_sync::agents::ensure(
        &db.pool,
        &ctrl_cluster_sync::agents::Binding::frontline("dev", "local", "test edge"),
        EDGE_TOKEN,
        0,
    )
    .await?;
    Ok(AppState::new(db.pool, vault, &tokens, restate))
}

/// Serves the API for `state` on 127.0.0.1:<free port>; returns the base URL.
pub(crate) async fn serve(state: AppState) -> anyhow::Result<String> {
    serve_router(ctrl_api::rpc::router(state)).await
}

/// Serves the operations listener (readiness, metrics) for `state`.
pub(crate) async fn serve_ops(state: AppState) -> anyhow::Result<String> {
    serve_router(ctrl_api::rpc::ops_router(state)).await
}

pub(crate) async fn serve_router(app: axum::Router) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        axum::serve(ctrl_runtime::net::nodelay(listener), app)
            .await
            .expect("serve");
    });
    Ok(base)
}

/// A real Restate server with `endpoint` (stand-ins for the worker's
/// objects) registered on it, served until the test ends.
pub(crate) async fn restate_with(
    endpoint: restate_sdk::prelude::Endpoint,
) -> anyhow::Result<ctrl_testkit::RestateServer> {
    let restate = ctrl_testkit::RestateServer::start().await?;
    restate.serve_and_register(endpoint).await?;
    Ok(restate)
}
