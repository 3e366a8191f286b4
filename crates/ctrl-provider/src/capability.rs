//! What a backend can do, as a queryable set.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

/// One feature a provider may support. Operations that need a missing
/// capability fail with [`Error::Unsupported`](crate::Error::Unsupported).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    /// Create and remove workloads.
    Provision,
    /// Roll out new releases and roll back to earlier ones.
    Deploy,
    /// Change replica counts and resources.
    Scale,
    /// Stream logs.
    Logs,
    /// Run commands inside instances.
    Exec,
    /// Mount volumes.
    Volumes,
    /// Schedule GPUs.
    Gpu,
    /// Enforce per-instance disk limits.
    DiskLimits,
    /// Blue-green releases.
    #[serde(rename = "strategy:blue-green")]
    BlueGreen,
    /// Canary releases.
    #[serde(rename = "strategy:canary")]
    Canary,
    /// Rolling releases gated on health.
    #[serde(rename = "strategy:rolling")]
    Rolling,
    /// Replica counts that follow load.
    Autoscale,
    /// Serve custom domains.
    CustomDomains,
    /// Terminate TLS.
    Tls,
    /// Apply rendered manifests as they are (tracked per instance).
    Manifests,
    /// Argo CD `Application`s.
    #[serde(rename = "argo-cd")]
    ArgoCd,
    /// Helm charts.
    Helm,
}

impl Capability {
    /// The stable name (as in ctrlplane: `provision`, `strategy:rolling`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Provision => "provision",
            Capability::Deploy => "deploy",
            Capability::Scale => "scale",
            Capability::Logs => "logs",
            Capability::Exec => "exec",
            Capability::Volumes => "volumes",
            Capability::Gpu => "gpu",
            Capability::DiskLimits => "disk-limits",
            Capability::BlueGreen => "strategy:blue-green",
            Capability::Canary => "strategy:canary",
            Capability::Rolling => "strategy:rolling",
            Capability::Autoscale => "autoscale",
            Capability::CustomDomains => "custom-domains",
            Capability::Tls => "tls",
            Capability::Manifests => "manifests",
            Capability::ArgoCd => "argo-cd",
            Capability::Helm => "helm",
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The capabilities of one provider.
pub type Capabilities = BTreeSet<Capability>;
