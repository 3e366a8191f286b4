//! One podman per test, the tiny HTTP image built through the API, and
//! a provider on it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use ctrl_provider::docker::{DockerConfig, DockerProvider};
use ctrl_provider::spec::{HealthCheck, PortSpec, Protocol, ServiceSpec, WorkloadKind};
use ctrl_provider::{NoSecrets, Provider, SecretResolver, WorkloadSpec, WorkloadStatus};
use ctrl_testkit::Podman;
use ctrl_testkit::images;

pub(crate) const V1: &str = "localhost/web:v1";
pub(crate) const V2: &str = "localhost/web:v2";

pub(crate) struct Env {
    pub(crate) provider: DockerProvider,
    // Dropped last: removes every container and stops the service.
    pub(crate) podman: Podman,
}

pub(crate) async fn env() -> Result<Env> {
    env_with(test_config(), Arc::new(NoSecrets)).await
}

pub(crate) fn test_config() -> DockerConfig {
    DockerConfig {
        drain_delay: Duration::from_millis(500),
        start_timeout: Duration::from_secs(20),
        ..DockerConfig::default()
    }
}

pub(crate) async fn env_with(
    config: DockerConfig,
    secrets: Arc<dyn SecretResolver>,
) -> Result<Env> {
    let podman = Podman::start().await?;
    images::build_http_image(podman.docker(), V1).await?;
    images::derive_image(podman.docker(), V1, V2, &[("VERSION", "v2")]).await?;
    let provider = DockerProvider::connect(podman.docker().clone(), config, secrets).await?;
    Ok(Env { provider, podman })
}

/// One replica of the web image with an HTTP health check.
pub(crate) fn web(id: &str, image: &str) -> WorkloadSpec {
    WorkloadSpec {
        id: id.into(),
        release: "r1".into(),
        kind: WorkloadKind::Stateless,
        replicas: 1,
        services: vec![web_service("web", image)],
        labels: BTreeMap::from([("ctrl.dev/deployment-id".into(), "dep1".into())]),
        autoscaling: None,
        network_policy: None,
    }
}

pub(crate) fn web_service(name: &str, image: &str) -> ServiceSpec {
    ServiceSpec {
        ports: vec![PortSpec {
            container: 8080,
            host: None,
            protocol: Protocol::Tcp,
        }],
        health_check: Some(HealthCheck {
            interval: Duration::from_millis(200),
            timeout: Duration::from_secs(1),
            retries: 5,
            start_period: Duration::from_secs(10),
            ..HealthCheck::http(8080, "/health")
        }),
        stop_grace: Duration::from_secs(2),
        ..ServiceSpec::main(name, image)
    }
}

/// GET `path` on an endpoint address.
pub(crate) async fn get(address: &str, path: &str) -> Result<String> {
    let response = reqwest::Client::new()
        .get(format!("http://{address}{path}"))
        .timeout(Duration::from_secs(2))
        .send()
        .await?
        .error_for_status()?;
    Ok(response.text().await?.trim().to_owned())
}

/// The first endpoint's answer to `/`.
pub(crate) async fn answer(provider: &DockerProvider, workload: &str) -> Result<String> {
    let status = provider.status(workload).await?;
    let endpoint = status.endpoints.first().context("no endpoint")?;
    get(&endpoint.address, "/").await
}

/// Polls status until `done` holds (or fails after `limit`).
pub(crate) async fn wait_status(
    provider: &DockerProvider,
    workload: &str,
    limit: Duration,
    done: impl Fn(&WorkloadStatus) -> bool,
) -> Result<WorkloadStatus> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let status = provider.status(workload).await?;
        if done(&status) {
            return Ok(status);
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("status never matched within {limit:?}: {status:#?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Names of the workload's containers, sorted.
pub(crate) async fn container_names(env: &Env, workload: &str) -> Result<Vec<String>> {
    let filters = std::collections::HashMap::from([(
        "label".to_owned(),
        vec![format!("ctrl.dev/workload={workload}")],
    )]);
    let list = env
        .podman
        .docker()
        .list_containers(Some(bollard::query_parameters::ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await?;
    let mut names: Vec<String> = list
        .into_iter()
        .flat_map(|c| c.names.unwrap_or_default())
        .map(|n| n.trim_start_matches('/').to_owned())
        .collect();
    names.sort();
    Ok(names)
}
