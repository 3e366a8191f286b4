//! The krane process: config → logging → provider → heartbeat, stream,
//! reconcile and report loops, health endpoint → on SIGTERM stop taking
//! work, let running applies finish, exit. Workloads keep running.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use ctrl_proto::ctrl::v1 as pb;
use ctrl_provider::docker::{DockerConfig, DockerProvider, SecretDelivery};
use ctrl_provider::kubernetes::{KubernetesConfig, KubernetesProvider};
use ctrl_provider::{Provider, Registry};
use tokio::sync::watch;

use crate::agent::Agent;
use crate::config::{Config, ProviderKind};
use crate::control::Control;
use crate::metrics::Metrics;
use crate::stream::{StreamSettings, StreamState};

/// Connects to the Docker-API engine the config names.
pub async fn docker_provider(config: &Config) -> Result<DockerProvider> {
    let docker = match &config.docker.socket {
        Some(path) => bollard::Docker::connect_with_unix(
            &path.to_string_lossy(),
            60,
            bollard::API_DEFAULT_VERSION,
        ),
        None => bollard::Docker::connect_with_local_defaults(),
    }
    .context("connect to the Docker API")?;
    let settings = DockerConfig {
        region: config.cluster.region.clone(),
        cluster: config.cluster.cell_id.clone(),
        bind_address: config.docker.bind_address,
        advertise_host: config.docker.advertise_host.clone(),
        allow_exec: config.docker.allow_exec,
        drain_delay: Duration::from_millis(config.docker.drain_delay_ms),
        secret_delivery: secret_delivery(config)?,
        ..DockerConfig::default()
    };
    DockerProvider::connect(docker, settings, secrets(config)?)
        .await
        .context("cannot use the Docker engine")
}

/// How secret variables reach containers: `[docker] init_binary` (checked:
/// an error names it), else a static `ctrl-init` next to krane, else none
/// (deployments with secrets are refused, and the log says why).
fn secret_delivery(config: &Config) -> Result<Option<SecretDelivery>> {
    let set = |p: &Option<std::path::PathBuf>| p.clone().filter(|p| !p.as_os_str().is_empty());
    let init_binary = match set(&config.docker.init_binary) {
        Some(path) => path,
        None => {
            let beside = std::env::current_exe()
                .ok()
                .and_then(|exe| exe.parent().map(|d| d.join("ctrl-init")))
                .filter(|p| {
                    p.is_file()
                        && ctrl_provider::docker::secrets::is_dynamic(p)
                            .is_ok_and(|dynamic| !dynamic)
                });
            let Some(path) = beside else {
                tracing::warn!(
                    "no static ctrl-init next to krane and no [docker] init_binary: \
                     deployments with secret variables will be refused"
                );
                return Ok(None);
            };
            path
        }
    };
    let dir = set(&config.docker.secrets_dir).unwrap_or_else(|| {
        std::path::PathBuf::from("/dev/shm/ctrl-krane").join(&config.cluster.cell_id)
    });
    // Checked (and ctrl-init copied into the tmpfs) when the provider connects.
    Ok(Some(SecretDelivery { init_binary, dir }))
}

/// Opens sealed variables with the configured vault keys.
fn secrets(config: &Config) -> Result<Arc<crate::secrets::VaultSecrets>> {
    let vault = config
        .vault
        .as_ref()
        .map(ctrl_runtime::sections::VaultConfig::vault)
        .transpose()
        .context("vault keys")?;
    Ok(Arc::new(crate::secrets::VaultSecrets::new(vault)))
}

/// Connects to the Kubernetes cluster the config names, labelling and
/// watching only this agent's region and cluster.
pub async fn kubernetes_provider(config: &Config) -> Result<KubernetesProvider> {
    let settings = KubernetesConfig {
        region: config.cluster.region.clone(),
        cluster: config.cluster.cell_id.clone(),
        ..config.kubernetes.clone()
    };
    KubernetesProvider::connect(settings, secrets(config)?)
        .await
        .context("the Kubernetes API does not answer")
}

/// The backend `[provider] kind` selects, registered under its name as the
/// registry's default.
pub async fn provider(config: &Config) -> Result<Arc<dyn Provider>> {
    let registry = Registry::new();
    let kind = config.provider.kind;
    let provider: Arc<dyn Provider> = match kind {
        ProviderKind::Docker => Arc::new(docker_provider(config).await?),
        ProviderKind::Kubernetes => Arc::new(kubernetes_provider(config).await?),
    };
    registry.register(kind.name(), provider);
    registry.set_default(kind.name())?;
    Ok(registry.default_provider()?)
}

/// Runs until `shutdown` resolves.
pub async fn run(
    config: &Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let provider = provider(config).await?;
    let key = pb::ClusterKey {
        platform: config.cluster.platform.clone(),
        region: config.cluster.region.clone(),
        cell_id: config.cluster.cell_id.clone(),
    };
    let control = Control::new(
        &config.control.url,
        &config.control.token,
        key,
        Duration::from_secs(config.control.call_timeout_seconds),
    )?;
    let metrics = Metrics::default();
    let agent = Agent::new(
        control.clone(),
        provider,
        metrics.clone(),
        config.agent.max_concurrent_applies,
    );
    let state = Arc::new(StreamState::default());
    let (stop_tx, stop) = watch::channel(false);

    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.http.listen))?;
    tracing::info!(health = %listener.local_addr()?, control = %config.control.url, "krane starting");
    let mut http_stop = stop.clone();
    let app = crate::http::router(state.clone(), metrics.clone());
    let http = tokio::spawn(async move {
        axum::serve(ctrl_runtime::net::nodelay(listener), app)
            .with_graceful_shutdown(async move {
                let _ = http_stop.wait_for(|s| *s).await;
            })
            .await
    });

    let reconnect = config.agent.reconnect();
    let heartbeat = tokio::spawn(crate::stream::heartbeat_loop(
        control.clone(),
        match config.provider.kind {
            ProviderKind::Docker => pb::AgentBackend::Docker,
            ProviderKind::Kubernetes => pb::AgentBackend::Kubernetes,
        },
        state.clone(),
        reconnect,
        stop.clone(),
    ));
    let logs = tokio::spawn(crate::logs::serve(
        control.clone(),
        agent.clone(),
        state.clone(),
        reconnect,
        stop.clone(),
    ));
    let follow = tokio::spawn(crate::stream::follow(
        control,
        Arc::new(agent.clone()),
        StreamSettings {
            full_sync: Duration::from_secs(config.agent.full_sync_seconds),
            reconnect,
        },
        state.clone(),
        metrics,
        stop.clone(),
    ));
    let reconcile = tokio::spawn(every(
        Duration::from_secs(config.agent.reconcile_seconds),
        stop.clone(),
        state.clone(),
        {
            let agent = agent.clone();
            move || {
                let agent = agent.clone();
                async move { agent.reconcile().await }
            }
        },
    ));
    let reports = tokio::spawn(every(
        Duration::from_secs(config.agent.report_seconds),
        stop.clone(),
        state,
        {
            let agent = agent.clone();
            move || {
                let agent = agent.clone();
                async move { agent.report_all().await }
            }
        },
    ));

    shutdown.await;
    tracing::info!("shutting down: finishing running applies (workloads keep running)");
    let _ = stop_tx.send(true);
    agent.drain(Duration::from_secs(30)).await;
    for task in [heartbeat, logs, follow, reconcile, reports] {
        let _ = task.await;
    }
    let _ = http.await;
    Ok(())
}

/// Runs `pass` every `interval` once the first snapshot is in, until stopped.
async fn every<F, Fut>(
    interval: Duration,
    mut stop: watch::Receiver<bool>,
    state: Arc<StreamState>,
    pass: F,
) where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(interval) => {}
        }
        if state.synced.load(std::sync::atomic::Ordering::SeqCst) {
            pass().await;
        }
    }
}
