//! Errors every backend reports the same way.

use crate::Capability;

/// Why a provider operation failed. Messages name the workload, service or
/// field at fault and never contain secret values.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The backend cannot do this at all; nothing was changed.
    #[error(
        "provider {provider:?} does not support {operation} (capability {capability} is missing)"
    )]
    Unsupported {
        /// The provider's name.
        provider: String,
        /// What was asked.
        operation: &'static str,
        /// The capability it would need.
        capability: Capability,
    },
    /// The spec or request is invalid; nothing was changed.
    #[error("invalid workload spec: {0}")]
    InvalidSpec(String),
    /// No such workload on this backend.
    #[error("workload {0:?} not found")]
    NotFound(String),
    /// The workload has no release with this id.
    #[error("workload {workload:?} has no release {release:?} to roll back to (known: {known})")]
    UnknownRelease {
        /// The workload.
        workload: String,
        /// The release asked for.
        release: String,
        /// Releases that can be rolled back to, newest first.
        known: String,
    },
    /// A new release did not become healthy; the previous one keeps serving.
    #[error("rollout of workload {workload:?} failed: {reason}")]
    RolloutFailed {
        /// The workload.
        workload: String,
        /// What went wrong, with the service, exit code and last log lines.
        reason: String,
    },
    /// A secret reference could not be resolved.
    #[error("service {service:?}: cannot resolve secret for {env}: {reason}")]
    Secret {
        /// The service.
        service: String,
        /// The variable name.
        env: String,
        /// Why (never the value).
        reason: String,
    },
    /// The backend's API failed or timed out.
    #[error("{operation}: {message}")]
    Backend {
        /// What was being done.
        operation: String,
        /// The backend's answer.
        message: String,
    },
}

impl Error {
    /// A backend failure while doing `operation`.
    pub fn backend(operation: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Self::Backend {
            operation: operation.into(),
            message: message.to_string(),
        }
    }
}
