//! The worker process, in the order the seed prescribes: validated config →
//! logging → database (bounded retry) → Restate endpoint bound → self-
//! registration with the admin API (retry, `force` so a changed schema
//! replaces the old one) → health endpoint → serve until SIGTERM/SIGINT, then
//! stop accepting new invocations and let running handlers finish (or
//! suspend: Restate resumes them elsewhere).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use restate_sdk::endpoint::ServiceOptions;
use restate_sdk::prelude::Endpoint;
use restate_sdk::service::IntoServiceDefinition;
use sqlx::MySqlPool;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::services::deletion::DeletionObject;
use crate::services::deploy::{DeployObject, DeploySettings};
use crate::services::deployment::DeploymentObject;
use crate::services::routing::RoutingObject;

/// Every Restate service of the worker, with its invocation retry policy:
/// the backstop behind each step's own bounded retries. Retries start fast
/// (a restarted worker is picked up within 100 ms) and back off to 30 s, about
/// six minutes in all; then the invocation pauses rather than dies, so an
/// operator can resume or cancel it and a cancelled pipeline still runs its
/// compensation.
pub fn endpoint(db: &MySqlPool, config: &Config) -> Endpoint {
    let options = || {
        ServiceOptions::new()
            .retry_policy_initial_interval(Duration::from_millis(100))
            .retry_policy_exponentiation_factor(2.0)
            .retry_policy_max_interval(Duration::from_secs(30))
            .retry_policy_max_attempts(20)
            .retry_policy_pause_on_max_attempts()
    };
    Endpoint::builder()
        .bind(
            DeploymentObject::new(db.clone())
                .into_service_definition()
                .options(options()),
        )
        // Only other handlers move routes.
        .bind(
            RoutingObject::new(db.clone())
                .into_service_definition()
                .options(options().ingress_private(true)),
        )
        .bind(
            DeployObject::new(db.clone(), DeploySettings::from(&config.deploy))
                .into_service_definition()
                .options(options()),
        )
        .bind(
            DeletionObject::new(db.clone())
                .into_service_definition()
                .options(options()),
        )
        .build()
}

/// Registers `uri` with Restate's admin API (with `force`), retrying with
/// backoff for `attempts` attempts.
pub async fn register(admin_url: &str, uri: &str, attempts: u32) -> Result<()> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(15))
        .build()
        .context("build the registration client")?;
    let url = format!("{}/deployments", admin_url.trim_end_matches('/'));
    let mut delay = Duration::from_millis(250);
    for attempt in 1..=attempts {
        let result = http
            .post(&url)
            .json(&serde_json::json!({ "uri": uri, "force": true }))
            .send()
            .await;
        match result {
            Ok(r) if r.status().is_success() => {
                tracing::info!(%uri, "registered with Restate");
                return Ok(());
            }
            Ok(r) => {
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                tracing::warn!(attempt, %status, %body, "registration refused; retrying");
            }
            Err(e) => {
                tracing::warn!(attempt, error = %e, "Restate admin API not reachable; retrying")
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
    bail!("could not register {uri} with Restate at {admin_url} after {attempts} attempts")
}

#[derive(Clone)]
struct Health {
    db: MySqlPool,
    registered: Arc<AtomicBool>,
}

async fn ready(State(h): State<Health>) -> (StatusCode, &'static str) {
    if !h.registered.load(Ordering::SeqCst) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not registered with Restate yet",
        );
    }
    match tokio::time::timeout(Duration::from_secs(2), ctrl_db::ping(&h.db)).await {
        Ok(Ok(())) => (StatusCode::OK, "ready"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "database unreachable"),
    }
}

/// Serves the endpoint and the health routes until `shutdown` resolves.
pub async fn run(
    config: &Config,
    db: MySqlPool,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let listener = TcpListener::bind(config.restate.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.restate.listen))?;
    let health_listener = TcpListener::bind(config.health.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.health.listen))?;
    tracing::info!(restate = %listener.local_addr()?, health = %health_listener.local_addr()?, "ctrl-worker listening");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let services = endpoint(&db, config);
    let mut endpoint_stop = stop_rx.clone();
    let serving = tokio::spawn(crate::serve::serve(
        services,
        listener,
        async move {
            let _ = endpoint_stop.wait_for(|s| *s).await;
        },
        // In-flight handlers get this long to finish or suspend.
        Duration::from_secs(10),
    ));

    let db_for_sweep = db.clone();
    let registered = Arc::new(AtomicBool::new(config.restate.register_as.is_empty()));
    let health = axum::Router::new()
        .route("/health/live", get(|| async { "ok" }))
        .route("/health/ready", get(ready))
        .with_state(Health {
            db,
            registered: registered.clone(),
        });
    let mut health_stop = stop_rx.clone();
    let health_server = tokio::spawn(async move {
        let _ = axum::serve(ctrl_runtime::net::nodelay(health_listener), health)
            .with_graceful_shutdown(async move {
                let _ = health_stop.wait_for(|s| *s).await;
            })
            .await;
    });

    let sweeping = (config.deploy.sweep_interval_seconds > 0).then(|| {
        let sweep = crate::sweep::Sweep::new(
            db_for_sweep.clone(),
            &config.restate.admin_url,
            Duration::from_secs(config.deploy.sweep_grace_seconds),
        );
        let interval = Duration::from_secs(config.deploy.sweep_interval_seconds);
        let mut sweep_stop = stop_rx.clone();
        tokio::spawn(async move {
            match sweep {
                Ok(sweep) => {
                    sweep
                        .run_every(interval, async move {
                            let _ = sweep_stop.wait_for(|s| *s).await;
                        })
                        .await
                }
                Err(e) => tracing::error!(error = %e, "the sweep cannot start"),
            }
        })
    });

    if !config.restate.register_as.is_empty() {
        register(
            &config.restate.admin_url,
            &config.restate.register_as,
            config.restate.register_attempts,
        )
        .await?;
        registered.store(true, Ordering::SeqCst);
    }

    shutdown.await;
    tracing::info!("shutting down: finishing running handlers");
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(30), serving).await;
    let _ = health_server.await;
    if let Some(sweeping) = sweeping {
        let _ = sweeping.await;
    }
    Ok(())
}
