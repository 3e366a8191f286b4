//! One workload API over container backends.
//!
//! A [`Provider`] provisions a [`WorkloadSpec`] (services with init, main
//! and sidecar roles, ordered by their dependencies), rolls out new
//! releases gated on health, rolls back to earlier ones, scales, starts and
//! stops, reports [`WorkloadStatus`], streams logs and runs commands.
//! Providers advertise [`Capabilities`]; an operation a backend cannot do
//! returns [`Error::Unsupported`] — never a pretend success. A [`Registry`]
//! holds named providers with a default.
//!
//! Backends: [`docker`] (Docker Engine or podman's Docker-compatible API,
//! through bollard) and [`kubernetes`] (kube-rs, with the [`engine`]s of
//! seed 004: rendered manifests, Argo CD and Helm). Nomad is not a backend:
//! no Nomad server can run where ctrl is tested, and a backend that cannot
//! be tested is not shipped; the trait needs nothing new for it. [`desired`] turns the ClusterService desired-state
//! message into a spec, which is how the regional agent (krane) uses this
//! crate.

pub mod capability;
pub mod desired;
pub mod docker;
pub mod engine;
mod error;
pub mod kubernetes;
pub mod provider;
mod registry;
pub mod spec;
pub mod status;

pub use capability::{Capabilities, Capability};
pub use engine::Engines;
pub use error::Error;
pub use provider::{
    DeployRequest, DeployResult, ExecRequest, ExecResult, LogLine, LogOptions, LogStream,
    NoSecrets, Provider, ProviderInfo, ProvisionResult, ScaleRequest, SecretResolver,
    ServiceUpdate, WorkloadSummary, has_capability,
};
pub use registry::{Registry, RegistryError};
pub use spec::{ServiceSpec, WorkloadSpec};
pub use status::{Endpoint, ResourceUsage, ServiceStatus, State, WorkloadStatus};
