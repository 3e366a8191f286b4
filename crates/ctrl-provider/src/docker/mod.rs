//! The Docker backend: any Docker-API endpoint (Docker Engine, or podman's
//! compatible socket), through bollard.
//!
//! Layout of a workload `w`: one bridge network `ctrl-w`; one container per
//! service, replica and revision, named `w-<service>-<replica>-r<revision>`
//! and labelled with every id ([`labels`]). A *revision* is one applied spec;
//! a new spec (new release, image, env, limits) rolls out as the next
//! revision replica by replica: start the new containers, wait until they
//! are healthy, switch (status reports the new endpoints and marks the old
//! ones draining), and after a drain delay stop and remove the old ones. A
//! rollout that does not become healthy is undone and the previous revision
//! keeps serving. The last releases are recorded in a label on every
//! container, which is what rollback reads back.
//!
//! Health is probed by the provider itself (HTTP and TCP against the
//! published port, commands through exec): podman runs image health checks
//! only under systemd, and the same code then works on every engine.

mod create;
mod health;
mod labels;
mod observe;
mod ops;
mod rollout;
pub mod secrets;

pub use secrets::SecretDelivery;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use futures::stream::BoxStream;

#[cfg(doc)]
use crate::NoSecrets;
use crate::provider::{
    DeployRequest, DeployResult, ExecRequest, ExecResult, LogLine, LogOptions, ProviderInfo,
    ProvisionResult, ScaleRequest,
};
use crate::spec::WorkloadSpec;
use crate::status::{ResourceUsage, WorkloadStatus};
use crate::{Capabilities, Capability, Error, Provider, SecretResolver, WorkloadSummary};

/// Settings of a [`DockerProvider`].
#[derive(Debug, Clone)]
pub struct DockerConfig {
    /// Registry name (default `docker`).
    pub name: String,
    /// Region the workloads run in (a label on every container).
    pub region: String,
    /// Cluster (cell) of the agent (a label on every container): agents
    /// sharing an engine never see each other's containers.
    pub cluster: String,
    /// Address published ports bind to (default 127.0.0.1).
    pub bind_address: IpAddr,
    /// Host the provider reaches published ports on (probes, endpoints);
    /// default: the bind address, or 127.0.0.1 when it is unspecified.
    pub advertise_host: Option<String>,
    /// Whether `exec` is allowed (operators may turn it off).
    pub allow_exec: bool,
    /// Run an init process as PID 1 (forwards signals, reaps zombies).
    pub init_process: bool,
    /// How long a replaced container keeps serving after the switch.
    pub drain_delay: Duration,
    /// How long a service without a health check may take to be running.
    pub start_timeout: Duration,
    /// Limit of every single engine API call.
    pub api_timeout: Duration,
    /// Releases kept for rollback.
    pub history: usize,
    /// How secret variables reach containers without entering their config
    /// (`ctrl-init` and a tmpfs directory); none = services with secrets
    /// are refused.
    pub secret_delivery: Option<secrets::SecretDelivery>,
}

impl Default for DockerConfig {
    fn default() -> Self {
        Self {
            name: "docker".into(),
            region: "local".into(),
            cluster: "local".into(),
            bind_address: IpAddr::from([127, 0, 0, 1]),
            advertise_host: None,
            allow_exec: true,
            init_process: true,
            drain_delay: Duration::from_secs(2),
            start_timeout: Duration::from_secs(60),
            api_timeout: Duration::from_secs(60),
            history: 10,
            secret_delivery: None,
        }
    }
}

/// A [`Provider`] over a Docker-compatible API. Cloning is cheap and
/// shares everything.
#[derive(Debug, Clone)]
pub struct DockerProvider {
    inner: Arc<Inner>,
}

/// The shared state of a [`DockerProvider`].
#[derive(Debug)]
pub struct Inner {
    docker: Docker,
    config: DockerConfig,
    secrets: Arc<dyn SecretResolver>,
    http: reqwest::Client,
    version: String,
    /// One lock per workload: operations on a workload never overlap.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl DockerProvider {
    /// A provider on `docker`, checking that the engine answers. Secret
    /// references are resolved with `secrets` ([`NoSecrets`] when there are none).
    pub async fn connect(
        docker: Docker,
        config: DockerConfig,
        secrets: Arc<dyn SecretResolver>,
    ) -> Result<Self, Error> {
        if let Some(delivery) = &config.secret_delivery {
            delivery
                .check()
                .map_err(|e| Error::backend("prepare the delivery of secret variables", e))?;
        }
        let version = tokio::time::timeout(config.api_timeout, docker.version())
            .await
            .map_err(|_| Error::backend("ask the engine for its version", "timed out"))?
            .map_err(|e| Error::backend("ask the engine for its version", e))?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|e| Error::backend("build the probe client", e))?;
        let provider = Self {
            inner: Arc::new(Inner {
                docker,
                config,
                secrets,
                http,
                version: version.version.unwrap_or_default(),
                locks: Mutex::new(HashMap::new()),
            }),
        };
        provider.prune_secrets().await;
        Ok(provider)
    }

    /// The engine client.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// The agent this provider labels for and may touch.
    fn owner(&self) -> labels::Owner {
        labels::Owner {
            region: self.config.region.clone(),
            cluster: self.config.cluster.clone(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &DockerConfig {
        &self.config
    }

    fn advertise_host(&self) -> String {
        match &self.config.advertise_host {
            Some(host) => host.clone(),
            None if self.config.bind_address.is_unspecified() => "127.0.0.1".into(),
            None => self.config.bind_address.to_string(),
        }
    }

    async fn lock(&self, workload: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            locks.entry(workload.to_owned()).or_default().clone()
        };
        lock.lock_owned().await
    }

    /// Runs one engine call under the API timeout.
    async fn call<T>(
        &self,
        operation: &str,
        fut: impl Future<Output = Result<T, bollard::errors::Error>>,
    ) -> Result<T, Error> {
        self.call_raw(operation, fut)
            .await?
            .map_err(|e| Error::backend(operation, e))
    }

    /// Like [`Self::call`] but hands the engine's error back for inspection.
    async fn call_raw<T>(
        &self,
        operation: &str,
        fut: impl Future<Output = Result<T, bollard::errors::Error>>,
    ) -> Result<Result<T, bollard::errors::Error>, Error> {
        tokio::time::timeout(self.config.api_timeout, fut)
            .await
            .map_err(|_| {
                Error::backend(
                    operation,
                    format!("no answer within {:?}", self.config.api_timeout),
                )
            })
    }

    /// Like [`Self::call_raw`] for reads, retrying while podman reports its
    /// transient `stopped` state (see [`is_transient_podman_state`]).
    async fn read_raw<T, F, Fut>(
        &self,
        operation: &str,
        mut request: F,
    ) -> Result<Result<T, bollard::errors::Error>, Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, bollard::errors::Error>>,
    {
        let mut attempts = 0;
        loop {
            match self.call_raw(operation, request()).await? {
                Err(e) if is_transient_podman_state(&e) && attempts < TRANSIENT_RETRIES => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => return Ok(other),
            }
        }
    }

    fn check_supported(&self, spec: &WorkloadSpec) -> Result<(), Error> {
        for service in &spec.services {
            if service.resources.gpus > 0 {
                return Err(self.unsupported("GPU workloads", Capability::Gpu));
            }
            if service.resources.disk_mib > 0 {
                return Err(self.unsupported("disk limits", Capability::DiskLimits));
            }
        }
        Ok(())
    }
}

impl std::ops::Deref for DockerProvider {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.inner
    }
}

fn status_code(e: &bollard::errors::Error) -> Option<u16> {
    match e {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// How often a read answered in podman's transient `stopped` state is
/// retried (50 ms apart) before it counts as an error.
const TRANSIENT_RETRIES: u32 = 100;

/// 404, or podman's 500 for a container removed a moment ago.
fn is_not_found(e: &bollard::errors::Error) -> bool {
    match e {
        bollard::errors::Error::DockerResponseServerError {
            status_code,
            message,
        } => *status_code == 404 || message.contains("no such container"),
        _ => false,
    }
}

/// podman reports a container whose process just exited as `stopped` until
/// its cleanup ran (milliseconds later), a state Docker's API does not
/// have; bollard then fails to decode the answer. In the same window an
/// inspect can fail with a 500 reading the gone process's cgroup.
fn is_transient_podman_state(e: &bollard::errors::Error) -> bool {
    let text = e.to_string();
    text.contains("unknown variant `stopped`")
        || (text.contains("/cgroup") && text.contains("no such process"))
}

#[async_trait]
impl Provider for DockerProvider {
    async fn health(&self, deadline: Duration) -> Result<String, Error> {
        match tokio::time::timeout(deadline, self.docker.version()).await {
            Ok(Ok(v)) => Ok(format!("engine {}", v.version.unwrap_or_default())),
            Ok(Err(e)) => Err(Error::backend("ask the engine for its version", e)),
            Err(_) => Err(Error::backend(
                "ask the engine for its version",
                format!("no answer within {deadline:?}"),
            )),
        }
    }

    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            name: self.config.name.clone(),
            version: self.version.clone(),
            region: self.config.region.clone(),
            location: None,
        }
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::from([
            Capability::Provision,
            Capability::Deploy,
            Capability::Scale,
            Capability::Logs,
            Capability::Volumes,
            Capability::Rolling,
        ]);
        if self.config.allow_exec {
            caps.insert(Capability::Exec);
        }
        caps
    }

    async fn provision(&self, spec: &WorkloadSpec) -> Result<ProvisionResult, Error> {
        spec.plan()?;
        self.check_supported(spec)?;
        let _guard = self.lock(&spec.id).await;
        let outcome = self.apply(spec.clone(), None).await?;
        let status = self.compute_status(&spec.id).await?;
        Ok(ProvisionResult {
            provider_ref: labels::network_name(&spec.id),
            release: outcome.release,
            changed: outcome.changed,
            endpoints: status.endpoints,
        })
    }

    async fn list(&self) -> Result<Vec<WorkloadSummary>, Error> {
        self.list_workloads().await
    }

    async fn deprovision(&self, workload: &str) -> Result<(), Error> {
        let _guard = self.lock(workload).await;
        self.remove_workload(workload).await
    }

    async fn start(&self, workload: &str) -> Result<(), Error> {
        let _guard = self.lock(workload).await;
        self.start_workload(workload).await
    }

    async fn stop(&self, workload: &str) -> Result<(), Error> {
        let _guard = self.lock(workload).await;
        self.stop_workload(workload).await
    }

    async fn restart(&self, workload: &str) -> Result<(), Error> {
        let _guard = self.lock(workload).await;
        self.restart_workload(workload).await
    }

    async fn status(&self, workload: &str) -> Result<WorkloadStatus, Error> {
        self.compute_status(workload).await
    }

    async fn deploy(&self, workload: &str, request: &DeployRequest) -> Result<DeployResult, Error> {
        let _guard = self.lock(workload).await;
        let spec = self.observe(workload).await?.current_spec(workload)?;
        let spec = rollout::updated_spec(spec, request)?;
        self.check_supported(&spec)?;
        let outcome = self.apply(spec, None).await?;
        Ok(outcome.into())
    }

    async fn rollback(&self, workload: &str, release: &str) -> Result<DeployResult, Error> {
        let _guard = self.lock(workload).await;
        let observed = self.observe(workload).await?;
        if observed.is_empty() {
            return Err(Error::NotFound(workload.to_owned()));
        }
        let releases = observed.releases()?;
        let Some(record) = releases.iter().find(|r| r.release == release) else {
            return Err(Error::UnknownRelease {
                workload: workload.to_owned(),
                release: release.to_owned(),
                known: releases
                    .iter()
                    .map(|r| r.release.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        let mut spec = record.spec.clone();
        spec.replicas = observed.replica_count().max(1);
        let outcome = self.apply(spec, Some(releases)).await?;
        Ok(outcome.into())
    }

    async fn scale(&self, workload: &str, request: &ScaleRequest) -> Result<DeployResult, Error> {
        let _guard = self.lock(workload).await;
        let mut spec = self.observe(workload).await?.current_spec(workload)?;
        if let Some(replicas) = request.replicas {
            spec.replicas = replicas;
        }
        if let Some(resources) = &request.resources {
            let plan = spec.plan()?;
            spec.services[plan.main].resources = resources.clone();
        }
        spec.plan()?;
        self.check_supported(&spec)?;
        let outcome = self.apply(spec, None).await?;
        Ok(outcome.into())
    }

    async fn resources(&self, workload: &str) -> Result<ResourceUsage, Error> {
        self.resource_usage(workload).await
    }

    async fn logs(
        &self,
        workload: &str,
        options: &LogOptions,
    ) -> Result<BoxStream<'static, Result<LogLine, Error>>, Error> {
        self.log_stream(workload, options).await
    }

    async fn exec(&self, workload: &str, request: &ExecRequest) -> Result<ExecResult, Error> {
        if !self.config.allow_exec {
            return Err(self.unsupported("exec", Capability::Exec));
        }
        self.exec_in(workload, request).await
    }
}
