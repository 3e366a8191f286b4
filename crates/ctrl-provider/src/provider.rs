//! The operations every backend offers, and their inputs and outputs.
//!
//! Every method has a default that returns [`Error::Unsupported`], so a
//! backend implements what it can and the rest fails loudly instead of
//! pretending (ctrlplane's Docker provider returned success for rollback,
//! scale and exec without doing anything).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::spec::{HealthCheck, Resources, SecretRef, WorkloadSpec};
use crate::status::{Endpoint, ResourceUsage, WorkloadStatus};
use crate::{Capabilities, Capability, Error};

/// Identity of a provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderInfo {
    /// Registry name, e.g. `docker`.
    pub name: String,
    /// Backend version, e.g. the engine's version.
    pub version: String,
    /// Region it places workloads in.
    pub region: String,
    /// Where the region is (country, city), when configured.
    #[serde(default)]
    pub location: Option<(String, String)>,
}

/// A workload the provider manages, as listed (what an agent compares
/// with the desired state to find orphans).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadSummary {
    /// The workload id.
    pub id: String,
    /// The release its newest objects run.
    pub release: String,
    /// The workload's labels (from its spec).
    pub labels: std::collections::BTreeMap<String, String>,
}

/// What provisioning produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvisionResult {
    /// Workload-level handle (the Docker network name).
    pub provider_ref: String,
    /// The release now running.
    pub release: String,
    /// Whether anything was changed (false when the spec was already applied).
    pub changed: bool,
    /// Where the workload answers.
    pub endpoints: Vec<Endpoint>,
}

/// A partial update: services not listed keep their current definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployRequest {
    /// The new release's id.
    pub release: String,
    /// Changed services.
    pub services: Vec<ServiceUpdate>,
}

/// Changes to one service in a [`DeployRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ServiceUpdate {
    /// The service.
    pub name: String,
    /// New image.
    pub image: Option<String>,
    /// New plain environment (replaces the old one).
    pub env: Option<BTreeMap<String, String>>,
    /// New secret references (replace the old ones).
    pub secrets: Option<Vec<SecretRef>>,
    /// New health check.
    pub health_check: Option<HealthCheck>,
}

/// What a deploy or rollback produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployResult {
    /// The release now running.
    pub release: String,
    /// Backend-specific revision number of the rollout.
    pub revision: u64,
    /// Whether anything was changed.
    pub changed: bool,
}

/// A change of size.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ScaleRequest {
    /// New replica count.
    pub replicas: Option<u32>,
    /// New limits of the main service (a rollout where limits cannot change in place).
    pub resources: Option<Resources>,
}

/// Which logs to stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Service; none = the main service.
    pub service: Option<String>,
    /// Replica; none = all.
    pub replica: Option<u32>,
    /// Keep streaming new lines.
    pub follow: bool,
    /// Only lines after this time.
    pub since: Option<SystemTime>,
    /// Only the last N lines of each container.
    pub tail: Option<u32>,
}

/// Output stream of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// One line of a service's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// The service.
    pub service: String,
    /// Replica index.
    pub replica: u32,
    /// Which stream.
    pub stream: LogStream,
    /// RFC 3339 timestamp from the engine, when it gives one.
    pub timestamp: Option<String>,
    /// The line without its newline.
    pub line: String,
}

/// A command to run inside an instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecRequest {
    /// Service; none = the main service.
    pub service: Option<String>,
    /// Replica index.
    pub replica: u32,
    /// Program and arguments.
    pub command: Vec<String>,
    /// Bytes written to the command's stdin, then closed.
    pub stdin: Option<Vec<u8>>,
    /// Allocate a terminal.
    pub tty: bool,
    /// Environment added for this command.
    pub env: BTreeMap<String, String>,
    /// Give up after this long (default 60 s).
    pub timeout: Option<Duration>,
}

/// What a command produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecResult {
    /// The command's real exit code.
    pub exit_code: i64,
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error.
    pub stderr: Vec<u8>,
}

/// Resolves [`SecretRef`]s to values just before a service starts.
#[async_trait]
pub trait SecretResolver: Send + Sync + std::fmt::Debug {
    /// The value of `secret`; errors must not contain it.
    async fn resolve(&self, secret: &SecretRef) -> Result<Zeroizing<String>, String>;
}

/// Resolves `secret` of `service` with `resolver`; the error names the
/// service and variable, never the value.
pub async fn resolve_secret(
    resolver: &dyn SecretResolver,
    service: &str,
    secret: &SecretRef,
) -> Result<Zeroizing<String>, Error> {
    resolver
        .resolve(secret)
        .await
        .map_err(|reason| Error::Secret {
            service: service.to_owned(),
            env: secret.env.clone(),
            reason,
        })
}

/// A resolver for workloads without secrets: every lookup fails.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSecrets;

#[async_trait]
impl SecretResolver for NoSecrets {
    async fn resolve(&self, _: &SecretRef) -> Result<Zeroizing<String>, String> {
        Err("no secret resolver is configured".into())
    }
}

/// One API over container backends.
#[async_trait]
pub trait Provider: Send + Sync + std::fmt::Debug {
    /// Identity.
    fn info(&self) -> ProviderInfo;

    /// What it supports.
    fn capabilities(&self) -> Capabilities;

    /// Makes the workload look like `spec`: creates it, or rolls it to the
    /// spec's release. Applying the same spec twice changes nothing; after a
    /// crash half-way, applying it again finishes the job.
    async fn provision(&self, spec: &WorkloadSpec) -> Result<ProvisionResult, Error> {
        let _ = spec;
        Err(self.unsupported("provision", Capability::Provision))
    }

    /// Every workload this provider manages.
    async fn list(&self) -> Result<Vec<WorkloadSummary>, Error> {
        Err(self.unsupported("list", Capability::Provision))
    }

    /// Removes everything the workload owns. Removing a missing workload succeeds.
    async fn deprovision(&self, workload: &str) -> Result<(), Error> {
        let _ = workload;
        Err(self.unsupported("deprovision", Capability::Provision))
    }

    /// Starts a stopped workload.
    async fn start(&self, workload: &str) -> Result<(), Error> {
        let _ = workload;
        Err(self.unsupported("start", Capability::Provision))
    }

    /// Stops the workload gracefully, keeping it for a later start.
    async fn stop(&self, workload: &str) -> Result<(), Error> {
        let _ = workload;
        Err(self.unsupported("stop", Capability::Provision))
    }

    /// Restarts the workload one replica at a time.
    async fn restart(&self, workload: &str) -> Result<(), Error> {
        let _ = workload;
        Err(self.unsupported("restart", Capability::Provision))
    }

    /// Observed state.
    async fn status(&self, workload: &str) -> Result<WorkloadStatus, Error> {
        let _ = workload;
        Err(self.unsupported("status", Capability::Provision))
    }

    /// Rolls out a partial update as a new release.
    async fn deploy(&self, workload: &str, request: &DeployRequest) -> Result<DeployResult, Error> {
        let _ = (workload, request);
        Err(self.unsupported("deploy", Capability::Deploy))
    }

    /// Rolls the workload back to an earlier release.
    async fn rollback(&self, workload: &str, release: &str) -> Result<DeployResult, Error> {
        let _ = (workload, release);
        Err(self.unsupported("rollback", Capability::Deploy))
    }

    /// Changes replicas or resources.
    async fn scale(&self, workload: &str, request: &ScaleRequest) -> Result<DeployResult, Error> {
        let _ = (workload, request);
        Err(self.unsupported("scale", Capability::Scale))
    }

    /// Resource usage now.
    async fn resources(&self, workload: &str) -> Result<ResourceUsage, Error> {
        let _ = workload;
        Err(self.unsupported("resources", Capability::Provision))
    }

    /// Streams logs.
    async fn logs(
        &self,
        workload: &str,
        options: &LogOptions,
    ) -> Result<BoxStream<'static, Result<LogLine, Error>>, Error> {
        let _ = (workload, options);
        Err(self.unsupported("logs", Capability::Logs))
    }

    /// Runs a command inside an instance.
    async fn exec(&self, workload: &str, request: &ExecRequest) -> Result<ExecResult, Error> {
        let _ = (workload, request);
        Err(self.unsupported("exec", Capability::Exec))
    }

    /// Whether the backend answers, within `deadline` (the caller's: an
    /// unreachable backend never blocks a health sweep). The answer names
    /// the backend and its version.
    async fn health(&self, deadline: Duration) -> Result<String, Error> {
        let _ = deadline;
        Err(self.unsupported("health", Capability::Provision))
    }

    /// The error for an operation this provider cannot do.
    fn unsupported(&self, operation: &'static str, capability: Capability) -> Error {
        Error::Unsupported {
            provider: self.info().name,
            operation,
            capability,
        }
    }
}

/// Whether `provider` advertises `capability`.
pub fn has_capability(provider: &dyn Provider, capability: Capability) -> bool {
    provider.capabilities().contains(&capability)
}
