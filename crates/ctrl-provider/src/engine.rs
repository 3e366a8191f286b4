//! Engines beside the workload API (seed 004): rendered manifests applied
//! as they are, Argo CD `Application`s, and Helm charts — each tracked per
//! *instance* so status and delete find exactly what was applied.
//!
//! Every method defaults to [`Error::Unsupported`]; a backend advertises
//! the engines it has with [`Capability::Manifests`],
//! [`Capability::ArgoCd`] and [`Capability::Helm`].

use std::path::PathBuf;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::status::State;
use crate::{Capability, Error, Provider, ProvisionResult};

/// One object an engine applied.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AppliedObject {
    /// `group/version` (or `v1`).
    pub api_version: String,
    /// Kind.
    pub kind: String,
    /// Namespace (none for cluster-scoped objects).
    #[serde(default)]
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
}

impl std::fmt::Display for AppliedObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// What an engine's instance looks like now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineStatus {
    /// Aggregate state.
    pub state: State,
    /// Everything is present and ready.
    pub ready: bool,
    /// Why not, in a user's words.
    pub message: String,
    /// The revision applied (1 for the first apply, +1 per change).
    pub revision: u64,
    /// The objects applied, each with whether it is present and ready.
    pub objects: Vec<(AppliedObject, bool)>,
}

/// Rendered manifests for one instance.
#[derive(Debug, Clone, PartialEq)]
pub struct ManifestApply {
    /// The instance: names the tracking record (a DNS label).
    pub instance: String,
    /// Namespace of the record and of namespaced objects that name none.
    pub namespace: String,
    /// The objects (each with `apiVersion`, `kind`, `metadata.name`).
    pub objects: Vec<serde_json::Value>,
}

/// An Argo CD `Application` for one instance.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ArgoApplication {
    /// The instance (the Application's name).
    pub instance: String,
    /// Argo CD project.
    pub project: String,
    /// Git or Helm repository URL.
    pub repo_url: String,
    /// Directory in a Git repository (or none for a Helm chart repository).
    pub path: Option<String>,
    /// Chart name in a Helm repository.
    pub chart: Option<String>,
    /// Branch, tag, commit or chart version.
    pub target_revision: String,
    /// Helm values (YAML) for a chart source.
    pub helm_values: Option<String>,
    /// Destination cluster API URL (default: the cluster Argo CD runs in).
    pub destination_server: Option<String>,
    /// Destination namespace.
    pub destination_namespace: String,
    /// Sync automatically (with pruning and self-heal).
    pub automated: bool,
}

/// A Helm chart installed as one instance.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HelmRelease {
    /// The instance (the release name).
    pub instance: String,
    /// Namespace of the release.
    pub namespace: String,
    /// A chart directory or packaged chart.
    pub chart: PathBuf,
    /// Values files (YAML), applied in order.
    pub values: Vec<String>,
    /// `--set` overrides (`key=value`).
    pub set: Vec<String>,
}

/// The engines of a backend.
#[async_trait]
pub trait Engines: Provider {
    /// Applies the objects (server-side), prunes what an earlier apply of
    /// the instance had and this one has not, and records what was applied.
    async fn apply_manifests(&self, request: &ManifestApply) -> Result<ProvisionResult, Error> {
        let _ = request;
        Err(self.unsupported("apply_manifests", Capability::Manifests))
    }

    /// Presence and readiness of what the instance applied.
    async fn manifest_status(
        &self,
        namespace: &str,
        instance: &str,
    ) -> Result<EngineStatus, Error> {
        let _ = (namespace, instance);
        Err(self.unsupported("manifest_status", Capability::Manifests))
    }

    /// Deletes what the instance applied, then its record. A missing
    /// instance succeeds.
    async fn delete_manifests(&self, namespace: &str, instance: &str) -> Result<(), Error> {
        let _ = (namespace, instance);
        Err(self.unsupported("delete_manifests", Capability::Manifests))
    }

    /// Creates or updates the instance's Application.
    async fn argo_apply(&self, app: &ArgoApplication) -> Result<ProvisionResult, Error> {
        let _ = app;
        Err(self.unsupported("argo_apply", Capability::ArgoCd))
    }

    /// The Application's sync and health as a state.
    async fn argo_status(&self, instance: &str) -> Result<EngineStatus, Error> {
        let _ = instance;
        Err(self.unsupported("argo_status", Capability::ArgoCd))
    }

    /// Deletes the Application; a missing one succeeds.
    async fn argo_delete(&self, instance: &str) -> Result<(), Error> {
        let _ = instance;
        Err(self.unsupported("argo_delete", Capability::ArgoCd))
    }

    /// Installs a chart as a new release (fails if the release exists).
    async fn helm_install(&self, release: &HelmRelease) -> Result<ProvisionResult, Error> {
        let _ = release;
        Err(self.unsupported("helm_install", Capability::Helm))
    }

    /// Upgrades an existing release (fails if there is none).
    async fn helm_upgrade(&self, release: &HelmRelease) -> Result<ProvisionResult, Error> {
        let _ = release;
        Err(self.unsupported("helm_upgrade", Capability::Helm))
    }

    /// The release's state.
    async fn helm_status(&self, namespace: &str, instance: &str) -> Result<EngineStatus, Error> {
        let _ = (namespace, instance);
        Err(self.unsupported("helm_status", Capability::Helm))
    }

    /// Removes the release; a missing one succeeds.
    async fn helm_uninstall(&self, namespace: &str, instance: &str) -> Result<(), Error> {
        let _ = (namespace, instance);
        Err(self.unsupported("helm_uninstall", Capability::Helm))
    }
}
