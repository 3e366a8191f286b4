//! Database rows → `ctrl.v1` messages for agents.

use ctrl_core::status::DesiredState;
use ctrl_db::topology::DesiredDeployment;
use ctrl_db::types::{HealthCheck, InstanceStatus, ShutdownSignal, UpstreamProtocol};
use ctrl_proto::ctrl::v1 as pb;
use prost::Message;

/// Why a row cannot be sent to an agent.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// The deployment has no image yet (its build has not finished).
    #[error("deployment {0} has no image yet")]
    NoImage(String),
    /// A stored document does not decode.
    #[error("deployment {deployment}: stored {what} does not decode: {reason}")]
    Corrupt {
        /// The deployment.
        deployment: String,
        /// Which document.
        what: &'static str,
        /// The decoder's message.
        reason: String,
    },
}

/// The desired state of a topology row: `apply` while it should run,
/// `delete` once it should not. `version` is the row's region version (0 for
/// point lookups).
pub fn deployment_state(
    d: DesiredDeployment,
    version: u64,
) -> Result<pb::DeploymentState, ConvertError> {
    use pb::deployment_state::State;
    let namespace = d.k8s_namespace.clone().unwrap_or_default();
    if d.desired_status != DesiredState::Running {
        return Ok(pb::DeploymentState {
            version,
            state: Some(State::Delete(pb::DeleteDeployment {
                k8s_namespace: namespace,
                k8s_name: d.k8s_name,
                deployment_id: d.deployment_id,
            })),
        });
    }
    let image = d
        .image
        .clone()
        .filter(|i| !i.is_empty())
        .ok_or_else(|| ConvertError::NoImage(d.deployment_id.clone()))?;
    let corrupt = |what, reason: String| ConvertError::Corrupt {
        deployment: d.deployment_id.clone(),
        what,
        reason,
    };
    let environment = if d.encrypted_environment.is_empty() {
        None
    } else {
        Some(
            pb::EncryptedEnvironment::decode(d.encrypted_environment.as_slice())
                .map_err(|e| corrupt("environment", e.to_string()))?,
        )
    };
    let network_policy = d
        .network_policy
        .as_ref()
        .map(|p| serde_json::from_value::<pb::NetworkPolicy>(p.0.clone()))
        .transpose()
        .map_err(|e| corrupt("network policy", e.to_string()))?;
    let apply = pb::ApplyDeployment {
        k8s_namespace: namespace,
        k8s_name: d.k8s_name,
        workspace_id: d.workspace_id,
        project_id: d.project_id,
        app_id: d.app_id,
        environment_id: d.environment_id,
        environment_slug: d.environment_slug,
        deployment_id: d.deployment_id,
        region: d.region_name,
        image,
        command: d.command.0,
        port: d.port,
        cpu_millicores: i64::from(d.cpu_millicores),
        memory_mib: i64::from(d.memory_mib),
        storage_mib: i64::from(d.storage_mib),
        environment,
        health_check: d.healthcheck.map(|h| health_check(&h.0)),
        shutdown_signal: shutdown_signal(d.shutdown_signal) as i32,
        termination_grace_seconds: d.termination_grace_seconds,
        autoscaling: Some(pb::AutoscalingPolicy {
            min_replicas: d.min_replicas,
            max_replicas: d.max_replicas,
            cpu_threshold_percent: u32::from(d.cpu_threshold_percent),
            memory_threshold_percent: u32::from(d.memory_threshold_percent),
        }),
        labels: Default::default(),
        network_policy,
        upstream_protocol: upstream_protocol(d.upstream_protocol) as i32,
        build_id: d.build_id.unwrap_or_default(),
        git_commit_sha: d.git_commit_sha.unwrap_or_default(),
        git_branch: d.git_branch.unwrap_or_default(),
        git_repository: d.git_repository.unwrap_or_default(),
        startup_timeout_seconds: i32::try_from(d.startup_timeout_seconds).unwrap_or(i32::MAX),
    };
    Ok(pb::DeploymentState {
        version,
        state: Some(State::Apply(apply)),
    })
}

/// A row as a streamed change (stamped with its own version); a row that
/// cannot be sent is logged and skipped — the original does the same, and
/// the row's next change (or the agent's point lookup) sends it again.
pub fn change(d: DesiredDeployment) -> Option<pb::DeploymentState> {
    let version = d.version;
    deployment_state(d, version)
        .map_err(|e| tracing::warn!(error = %e, "desired-state change not sent"))
        .ok()
}

/// A stored health check on the wire.
pub fn health_check(h: &HealthCheck) -> pb::HealthCheck {
    pb::HealthCheck {
        method: match h.method.as_str() {
            "POST" => pb::HealthCheckMethod::Post,
            _ => pb::HealthCheckMethod::Get,
        } as i32,
        path: h.path.clone(),
        interval_seconds: h.interval_seconds,
        timeout_seconds: h.timeout_seconds,
        failure_threshold: h.failure_threshold,
        initial_delay_seconds: h.initial_delay_seconds,
    }
}

/// A stored stop signal on the wire.
pub fn shutdown_signal(s: ShutdownSignal) -> pb::ShutdownSignal {
    match s {
        ShutdownSignal::Sigterm => pb::ShutdownSignal::Sigterm,
        ShutdownSignal::Sigint => pb::ShutdownSignal::Sigint,
        ShutdownSignal::Sigquit => pb::ShutdownSignal::Sigquit,
        ShutdownSignal::Sigkill => pb::ShutdownSignal::Sigkill,
    }
}

/// A stored upstream protocol on the wire.
pub fn upstream_protocol(p: UpstreamProtocol) -> pb::UpstreamProtocol {
    match p {
        UpstreamProtocol::Http1 => pb::UpstreamProtocol::Http1,
        UpstreamProtocol::H2c => pb::UpstreamProtocol::H2c,
    }
}

/// A reported instance state as stored (unspecified counts as pending: it
/// is not running, so it neither takes traffic nor makes a deployment ready).
pub fn instance_status(s: pb::InstanceStatus) -> InstanceStatus {
    match s {
        pb::InstanceStatus::Running => InstanceStatus::Running,
        pb::InstanceStatus::Failed => InstanceStatus::Failed,
        pb::InstanceStatus::Pending | pb::InstanceStatus::Unspecified => InstanceStatus::Pending,
    }
}

/// A stored instance state as the API shows it.
pub fn instance_status_to_pb(s: InstanceStatus) -> pb::InstanceStatus {
    match s {
        InstanceStatus::Running => pb::InstanceStatus::Running,
        InstanceStatus::Failed => pb::InstanceStatus::Failed,
        InstanceStatus::Pending => pb::InstanceStatus::Pending,
    }
}
