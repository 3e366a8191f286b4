//! Observed state of workloads, per service and aggregated worst-of.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Lifecycle state of a service or workload. The order is "how bad":
/// aggregation takes the maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Running and ready.
    Running,
    /// Stopped on purpose.
    Stopped,
    /// Created or started, not ready yet.
    Starting,
    /// Being created.
    Provisioning,
    /// Exited and waiting for a restart, or crash-looping.
    Restarting,
    /// Exited for good with an error, or failing its health check.
    Failed,
}

/// Observed state of one service in one replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// The service.
    pub service: String,
    /// Replica index.
    pub replica: u32,
    /// The release this container runs.
    pub release: String,
    /// State.
    pub state: State,
    /// Whether it passes its health check (inits: completed successfully).
    pub ready: bool,
    /// Restarts since it was created.
    pub restarts: u32,
    /// Exit code of the last exit, if it exited.
    pub exit_code: Option<i64>,
    /// Whether the last exit was an out-of-memory kill.
    pub oom_killed: bool,
    /// The backend's handle (container id).
    pub provider_ref: String,
    /// Human-readable detail (why it is not ready).
    pub message: String,
    /// Whether it is being replaced and no longer receives traffic.
    pub draining: bool,
}

/// Where a service can be reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// The service.
    pub service: String,
    /// Replica index.
    pub replica: u32,
    /// Container port.
    pub port: u16,
    /// Address reachable from the provider's host (`host:port`).
    pub address: String,
    /// Address inside the workload's network (`alias:port`).
    pub internal_address: String,
}

/// Observed state of a workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadStatus {
    /// The workload.
    pub workload: String,
    /// The release the workload is converging to (newest present).
    pub release: String,
    /// Worst state of the services that serve (draining ones excluded).
    pub state: State,
    /// Every replica's long-lived services are ready.
    pub ready: bool,
    /// Replicas asked for.
    pub replicas: u32,
    /// Replicas whose services are all ready.
    pub ready_replicas: u32,
    /// Sum of restarts.
    pub restarts: u32,
    /// One entry per container.
    pub services: Vec<ServiceStatus>,
    /// Ready, non-draining endpoints: where traffic should go now.
    pub endpoints: Vec<Endpoint>,
    /// Explanation when not ready (the worst service's message).
    pub message: String,
    /// Backend-specific facts.
    pub metadata: BTreeMap<String, String>,
}

impl WorkloadStatus {
    /// The worst of the given states (`Stopped` for none).
    pub fn worst(states: impl IntoIterator<Item = State>) -> State {
        states.into_iter().max().unwrap_or(State::Stopped)
    }
}

/// Resource usage of a workload, summed over its running containers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceUsage {
    /// CPU use in percent of one core.
    pub cpu_percent: f64,
    /// Memory in use, MiB.
    pub memory_used_mib: f64,
    /// Sum of memory limits, MiB (0 = unlimited somewhere).
    pub memory_limit_mib: f64,
    /// Bytes received.
    pub network_rx_bytes: u64,
    /// Bytes sent.
    pub network_tx_bytes: u64,
    /// Processes.
    pub pids: u64,
    /// Containers measured.
    pub containers: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_of() {
        assert_eq!(WorkloadStatus::worst([]), State::Stopped);
        assert_eq!(
            WorkloadStatus::worst([State::Running, State::Starting, State::Running]),
            State::Starting
        );
        assert_eq!(
            WorkloadStatus::worst([State::Failed, State::Restarting]),
            State::Failed
        );
        assert!(State::Running < State::Stopped);
    }
}
