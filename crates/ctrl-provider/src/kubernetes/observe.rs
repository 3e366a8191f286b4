//! From pods to [`WorkloadStatus`]: the same states, messages and
//! restart/exit facts the Docker backend reports, read from container
//! statuses (ready, restarts, OOMKilled, CrashLoopBackOff with the last
//! termination message, image pull errors, unschedulable pods).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

use super::manifests::{MAIN_CONTAINER, RELEASE, SPEC_HASH};
use crate::spec::{Role, WorkloadKind, WorkloadSpec};
use crate::status::{Endpoint, ServiceStatus, State, WorkloadStatus};

/// Waiting reasons that mean the container cannot start as it is.
const FATAL_WAITING: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// What the workload object says and what its pods show.
pub(super) struct Observed<'a> {
    pub(super) workload: &'a str,
    pub(super) namespace: &'a str,
    /// The spec last applied (the release history's head), if known.
    pub(super) spec: Option<&'a WorkloadSpec>,
    /// The current pod template's hash.
    pub(super) spec_hash: &'a str,
    pub(super) release: &'a str,
    pub(super) replicas: u32,
    pub(super) kind: WorkloadKind,
    pub(super) pods: Vec<&'a Pod>,
}

/// A pod with its replica index and whether it is being replaced.
struct Indexed<'a> {
    pod: &'a Pod,
    replica: u32,
    current: bool,
}

impl Observed<'_> {
    pub(super) fn status(&self) -> WorkloadStatus {
        let pods = self.indexed();
        let current_ready = pods
            .iter()
            .filter(|p| p.current && pod_ready(p.pod))
            .count();
        let rolled = u32::try_from(current_ready).unwrap_or(u32::MAX) >= self.replicas;
        let mut services = Vec::new();
        let mut endpoints = Vec::new();
        for p in &pods {
            let terminating = p.pod.metadata.deletion_timestamp.is_some();
            // Old pods keep serving until the new revision is complete.
            let draining = terminating || (!p.current && rolled);
            let release = label(p.pod, RELEASE).unwrap_or_default().to_owned();
            let name = p.pod.metadata.name.clone().unwrap_or_default();
            let status = p.pod.status.as_ref();
            let pod_message = pod_problem(p.pod);
            let inits = status
                .and_then(|s| s.init_container_statuses.as_ref())
                .into_iter()
                .flatten()
                .map(|c| (c, true));
            let mains = status
                .and_then(|s| s.container_statuses.as_ref())
                .into_iter()
                .flatten()
                .map(|c| (c, false));
            let mut seen = 0;
            for (c, init) in inits.chain(mains) {
                seen += 1;
                let mut s = container_status(c, init);
                s.replica = p.replica;
                s.release.clone_from(&release);
                s.provider_ref = format!("{name}/{}", c.name);
                s.draining = draining;
                services.push(s);
            }
            if seen == 0 {
                // Not scheduled or not started: one entry per container of
                // the template, all waiting for the same reason.
                for c in p.pod.spec.iter().flat_map(|s| s.containers.iter()) {
                    services.push(ServiceStatus {
                        service: c.name.clone(),
                        replica: p.replica,
                        release: release.clone(),
                        state: State::Provisioning,
                        ready: false,
                        restarts: 0,
                        exit_code: None,
                        oom_killed: false,
                        provider_ref: format!("{name}/{}", c.name),
                        message: pod_message.clone().unwrap_or_else(|| "pending".into()),
                        draining,
                    });
                }
            }
            if draining || !pod_ready(p.pod) {
                continue;
            }
            let Some(ip) = status.and_then(|s| s.pod_ip.as_deref()) else {
                continue;
            };
            for c in p.pod.spec.iter().flat_map(|s| s.containers.iter()) {
                for port in c.ports.iter().flatten() {
                    let port = u16::try_from(port.container_port).unwrap_or(0);
                    let internal = match self.kind {
                        WorkloadKind::Stateful => {
                            format!("{name}.{}.{}.svc:{port}", self.workload, self.namespace)
                        }
                        WorkloadKind::Stateless => {
                            format!("{}.{}.svc:{port}", self.workload, self.namespace)
                        }
                    };
                    endpoints.push(Endpoint {
                        service: c.name.clone(),
                        replica: p.replica,
                        port,
                        address: format!("{ip}:{port}"),
                        internal_address: internal,
                    });
                }
            }
        }
        let serving: Vec<&ServiceStatus> = services.iter().filter(|s| !s.draining).collect();
        let long_lived = |s: &&&ServiceStatus| {
            self.spec.is_none_or(|spec| {
                spec.services
                    .iter()
                    .find(|x| x.name == s.service)
                    .is_none_or(|x| x.role != Role::Init)
            }) && !s.provider_ref.is_empty()
        };
        let state = if self.replicas == 0 {
            State::Stopped
        } else if serving.is_empty() {
            State::Provisioning
        } else {
            WorkloadStatus::worst(
                serving.iter().filter(long_lived).map(|s| s.state).chain(
                    serving
                        .iter()
                        .filter(|s| s.state == State::Failed)
                        .map(|s| s.state),
                ),
            )
        };
        let ready_replicas = u32::try_from(current_ready).unwrap_or(u32::MAX);
        let ready = self.replicas > 0 && ready_replicas >= self.replicas && rolled;
        let message = if ready {
            String::new()
        } else {
            serving
                .iter()
                .filter(|s| !s.ready && !s.message.is_empty())
                .max_by_key(|s| s.state)
                .map(|s| s.message.clone())
                .unwrap_or_default()
        };
        WorkloadStatus {
            workload: self.workload.to_owned(),
            release: self.release.to_owned(),
            state,
            ready,
            replicas: self.replicas,
            ready_replicas,
            restarts: services.iter().map(|s| s.restarts).sum(),
            services,
            endpoints,
            message,
            metadata: BTreeMap::from([
                ("namespace".to_owned(), self.namespace.to_owned()),
                ("spec_hash".to_owned(), self.spec_hash.to_owned()),
            ]),
        }
    }

    /// Replica indexes: stateful pods by ordinal; a Deployment's current
    /// pods by age (0, 1, ...), its older revision's pods likewise.
    fn indexed(&self) -> Vec<Indexed<'_>> {
        let mut pods: Vec<&Pod> = self.pods.clone();
        pods.sort_by(|a, b| {
            (
                a.metadata.creation_timestamp.as_ref().map(|t| t.0),
                &a.metadata.name,
            )
                .cmp(&(
                    b.metadata.creation_timestamp.as_ref().map(|t| t.0),
                    &b.metadata.name,
                ))
        });
        let mut next = [0u32; 2];
        pods.into_iter()
            .map(|pod| {
                let current = label(pod, SPEC_HASH) == Some(self.spec_hash);
                let replica = match self.kind {
                    WorkloadKind::Stateful => pod
                        .metadata
                        .name
                        .as_deref()
                        .and_then(|n| n.rsplit_once('-'))
                        .and_then(|(_, o)| o.parse().ok())
                        .unwrap_or(0),
                    WorkloadKind::Stateless => {
                        let slot = &mut next[usize::from(!current)];
                        *slot += 1;
                        *slot - 1
                    }
                };
                Indexed {
                    pod,
                    replica,
                    current,
                }
            })
            .collect()
    }
}

/// Why a current pod cannot become ready at all (the rollout fails now,
/// not at its deadline): an image that cannot be pulled, a bad container
/// config, or a container that exited with an error or was OOM-killed.
pub(super) fn fatal_problem(pod: &Pod, replica: u32) -> Option<String> {
    let status = pod.status.as_ref()?;
    let all = status
        .init_container_statuses
        .iter()
        .flatten()
        .map(|c| (c, true))
        .chain(
            status
                .container_statuses
                .iter()
                .flatten()
                .map(|c| (c, false)),
        );
    for (c, init) in all {
        let waiting = c.state.as_ref().and_then(|s| s.waiting.as_ref());
        if let Some(w) = waiting
            && let Some(reason) = w.reason.as_deref()
            && FATAL_WAITING.contains(&reason)
        {
            let what = if reason.contains("Image") {
                format!(
                    "image {} cannot be pulled",
                    c.image.trim_start_matches("docker.io/library/")
                )
            } else {
                reason.to_owned()
            };
            return Some(format!(
                "service {:?}: {what}: {}",
                c.name,
                w.message.as_deref().unwrap_or(reason)
            ));
        }
        let terminated = c
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .or_else(|| c.state.as_ref().and_then(|s| s.terminated.as_ref()));
        if let Some(t) = terminated {
            let oom = t.reason.as_deref() == Some("OOMKilled");
            if oom || (t.exit_code != 0 && (c.restart_count > 0 || init)) {
                return Some(format!(
                    "service {:?} (replica {}): {} before becoming ready{}",
                    c.name,
                    replica,
                    if oom {
                        "was killed for using more memory than its limit (OOMKilled)".to_owned()
                    } else {
                        format!("exited with code {}", t.exit_code)
                    },
                    t.message
                        .as_deref()
                        .map(str::trim)
                        .filter(|m| !m.is_empty())
                        .map(|m| format!(
                            "; last output: {}",
                            m.lines().collect::<Vec<_>>().join(" | ")
                        ))
                        .unwrap_or_default()
                ));
            }
        }
    }
    None
}

/// Whether the pod's Ready condition is true (and it is not terminating).
pub(super) fn pod_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// A pending pod's reason in a user's words (unschedulable, say).
pub(super) fn pod_problem(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
        .map(|c| {
            format!(
                "not scheduled ({}): {}",
                c.reason.as_deref().unwrap_or("Pending"),
                c.message.as_deref().unwrap_or_default()
            )
        })
}

/// The name of the pod's main container.
pub(super) fn main_container(pod: &Pod) -> Option<&str> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(MAIN_CONTAINER))
        .map(String::as_str)
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.containers.first())
                .map(|c| c.name.as_str())
        })
}

fn container_status(c: &ContainerStatus, init: bool) -> ServiceStatus {
    let state = c.state.as_ref();
    let waiting = state.and_then(|s| s.waiting.as_ref());
    let running = state.and_then(|s| s.running.as_ref());
    let terminated = state.and_then(|s| s.terminated.as_ref());
    let last = c.last_state.as_ref().and_then(|s| s.terminated.as_ref());
    let exit = terminated.or(last);
    let oom_killed = exit.is_some_and(|t| t.reason.as_deref() == Some("OOMKilled"));
    let exit_message = |prefix: &str| {
        exit.map(|t| {
            let what = if t.reason.as_deref() == Some("OOMKilled") {
                "was killed for using more memory than its limit (OOMKilled)".to_owned()
            } else {
                format!("exited with code {}", t.exit_code)
            };
            let output = t
                .message
                .as_deref()
                .map(str::trim)
                .and_then(|m| m.lines().last())
                .map(|l| format!(": {l}"))
                .unwrap_or_default();
            format!("{prefix}{what}{output}")
        })
    };
    let (state, message) = if init {
        match (terminated, running, waiting) {
            (Some(t), _, _) if t.exit_code == 0 => (State::Running, String::new()),
            (Some(_), _, _) => (State::Failed, exit_message("init ").unwrap_or_default()),
            (_, Some(_), _) => (State::Starting, "init container running".into()),
            (_, _, Some(w)) => waiting_state(w.reason.as_deref(), w.message.as_deref()),
            _ => (State::Provisioning, String::new()),
        }
    } else if let Some(w) = waiting {
        let (s, m) = waiting_state(w.reason.as_deref(), w.message.as_deref());
        if w.reason.as_deref() == Some("CrashLoopBackOff") {
            (s, exit_message("").unwrap_or(m))
        } else {
            (s, m)
        }
    } else if running.is_some() {
        if c.ready {
            (State::Running, String::new())
        } else {
            (
                State::Starting,
                "running, not ready yet (readiness probe)".into(),
            )
        }
    } else if terminated.is_some() {
        (State::Restarting, exit_message("").unwrap_or_default())
    } else {
        (State::Provisioning, String::new())
    };
    ServiceStatus {
        service: c.name.clone(),
        replica: 0,
        release: String::new(),
        state,
        ready: if init {
            terminated.is_some_and(|t| t.exit_code == 0)
        } else {
            c.ready
        },
        restarts: u32::try_from(c.restart_count).unwrap_or(0),
        exit_code: exit.map(|t| i64::from(t.exit_code)),
        oom_killed,
        provider_ref: String::new(),
        message,
        draining: false,
    }
}

fn waiting_state(reason: Option<&str>, message: Option<&str>) -> (State, String) {
    let reason = reason.unwrap_or("Waiting");
    let text = match message {
        Some(m) if !m.is_empty() => format!("{reason}: {m}"),
        _ => reason.to_owned(),
    };
    match reason {
        "CrashLoopBackOff" => (State::Restarting, text),
        r if FATAL_WAITING.contains(&r) => (State::Failed, text),
        "ContainerCreating" | "PodInitializing" => (State::Provisioning, String::new()),
        _ => (State::Starting, text),
    }
}

fn label<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(key))
        .map(String::as_str)
}
