//! Readiness probes and the status computed from observed containers.

use std::collections::BTreeMap;
use std::time::Duration;

use bollard::models::ContainerStateStatusEnum;
use bollard::query_parameters::LogsOptions;
use futures::StreamExt;

use super::DockerProvider;
use super::observe::Instance;
use crate::spec::{HealthCheck, HttpMethod, Probe, RestartPolicy, Role, ServiceSpec};
use crate::status::{Endpoint, ServiceStatus, State, WorkloadStatus};
use crate::{Error, ExecRequest};

impl DockerProvider {
    /// Runs `check` once against `instance`; the error says what failed.
    pub(super) async fn probe(
        &self,
        instance: &Instance,
        check: &HealthCheck,
    ) -> Result<(), String> {
        match &check.probe {
            Probe::Http { port, path, method } => {
                let host_port = instance
                    .host_ports
                    .get(port)
                    .ok_or_else(|| format!("port {port} is not published"))?;
                let url = format!("http://{}:{host_port}{path}", self.advertise_host());
                let request = match method {
                    HttpMethod::Get => self.http.get(&url),
                    HttpMethod::Post => self.http.post(&url),
                };
                let response =
                    request.timeout(check.timeout).send().await.map_err(|e| {
                        format!("{} {path}: {}", method.as_str(), connect_error(&e))
                    })?;
                let status = response.status();
                if status.is_success() || status.is_redirection() {
                    Ok(())
                } else {
                    Err(format!("{} {path} answered {status}", method.as_str()))
                }
            }
            Probe::Tcp { port } => {
                let host_port = instance
                    .host_ports
                    .get(port)
                    .ok_or_else(|| format!("port {port} is not published"))?;
                let address = format!("{}:{host_port}", self.advertise_host());
                match tokio::time::timeout(check.timeout, tokio::net::TcpStream::connect(&address))
                    .await
                {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(format!("connect to port {port}: {e}")),
                    Err(_) => Err(format!(
                        "connect to port {port}: timed out after {:?}",
                        check.timeout
                    )),
                }
            }
            Probe::Command { command } => {
                let result = self
                    .exec_container(
                        &instance.id,
                        &ExecRequest {
                            command: command.clone(),
                            timeout: Some(check.timeout),
                            ..Default::default()
                        },
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                if result.exit_code == 0 {
                    Ok(())
                } else {
                    Err(format!("health command exited with {}", result.exit_code))
                }
            }
        }
    }

    /// The last lines a container printed, formatted for an error message.
    pub(super) async fn log_tail(&self, id: &str) -> String {
        let mut lines = Vec::new();
        let mut logs = self.docker.logs(
            id,
            Some(LogsOptions {
                stdout: true,
                stderr: true,
                tail: "10".into(),
                ..Default::default()
            }),
        );
        let collect = async {
            while let Some(Ok(chunk)) = logs.next().await {
                let text = String::from_utf8_lossy(&chunk.into_bytes()).into_owned();
                lines.extend(text.lines().map(str::to_owned));
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), collect).await;
        if lines.is_empty() {
            String::new()
        } else {
            let tail = lines.split_off(lines.len().saturating_sub(10));
            format!("; last output: {}", tail.join(" | "))
        }
    }

    /// The workload's status from its containers, probing readiness now.
    pub(super) async fn compute_status(&self, workload: &str) -> Result<WorkloadStatus, Error> {
        let observed = self.observe(workload).await?;
        let Some(newest) = observed.newest() else {
            return Err(Error::NotFound(workload.to_owned()));
        };
        let current = observed.current_spec(workload)?;
        let probes = observed.instances.iter().map(|instance| {
            let service = instance.service_spec();
            async move {
                let (ready, detail) = match (&service, instance.role) {
                    (_, Role::Init) => (instance.completed(), String::new()),
                    (Some(s), _) if instance.running() => match &s.health_check {
                        None => (true, String::new()),
                        Some(check) => match self.probe(instance, check).await {
                            Ok(()) => (true, String::new()),
                            Err(e) => (false, format!("health check failing: {e}")),
                        },
                    },
                    _ => (false, String::new()),
                };
                (instance, service, ready, detail)
            }
        });
        let probed = futures::future::join_all(probes).await;

        // A container is draining once a newer revision of its slot is ready.
        let newest_ready: BTreeMap<(&str, u32), u64> =
            probed
                .iter()
                .filter(|p| p.2)
                .fold(BTreeMap::new(), |mut m, p| {
                    let key = (p.0.service.as_str(), p.0.replica);
                    let rev = m.entry(key).or_insert(0);
                    *rev = (*rev).max(p.0.revision);
                    m
                });
        let mut services = Vec::new();
        let mut endpoints = Vec::new();
        for (instance, service, ready, detail) in &probed {
            let draining = instance.role != Role::Init
                && newest_ready
                    .get(&(instance.service.as_str(), instance.replica))
                    .is_some_and(|rev| *rev > instance.revision);
            let (state, message) = instance_state(instance, service.as_ref(), *ready, detail);
            if *ready && !draining && instance.role != Role::Init {
                for port in service.iter().flat_map(|s| &s.ports) {
                    if let Some(host_port) = instance.host_ports.get(&port.container) {
                        endpoints.push(Endpoint {
                            service: instance.service.clone(),
                            replica: instance.replica,
                            port: port.container,
                            address: format!("{}:{host_port}", self.advertise_host()),
                            internal_address: format!("{}:{}", instance.name, port.container),
                        });
                    }
                }
            }
            services.push(ServiceStatus {
                service: instance.service.clone(),
                replica: instance.replica,
                release: instance.release.clone(),
                state,
                ready: *ready,
                restarts: instance.restarts,
                exit_code: instance.exited().then_some(instance.exit_code).flatten(),
                oom_killed: instance.looks_oom_killed(),
                provider_ref: instance.id.clone(),
                message,
                draining,
            });
        }
        let serving: Vec<&ServiceStatus> = services.iter().filter(|s| !s.draining).collect();
        let ready_replicas = (0..current.replicas)
            .filter(|replica| {
                current
                    .services
                    .iter()
                    .filter(|s| s.is_long_lived())
                    .all(|s| {
                        serving
                            .iter()
                            .any(|st| st.replica == *replica && st.service == s.name && st.ready)
                    })
            })
            .count();
        let ready_replicas = u32::try_from(ready_replicas).unwrap_or(u32::MAX);
        let state = WorkloadStatus::worst(serving.iter().map(|s| s.state));
        let message = serving
            .iter()
            .filter(|s| s.state == state && !s.message.is_empty())
            .map(|s| format!("{} (replica {}): {}", s.service, s.replica, s.message))
            .next()
            .unwrap_or_default();
        Ok(WorkloadStatus {
            workload: workload.to_owned(),
            release: newest.release.clone(),
            state,
            ready: ready_replicas == current.replicas,
            replicas: current.replicas,
            ready_replicas,
            restarts: services.iter().map(|s| s.restarts).sum(),
            services,
            endpoints,
            message,
            metadata: BTreeMap::from([
                ("network".to_owned(), super::labels::network_name(workload)),
                ("revision".to_owned(), newest.revision.to_string()),
            ]),
        })
    }
}

/// State and message of one container.
fn instance_state(
    instance: &Instance,
    service: Option<&ServiceSpec>,
    ready: bool,
    detail: &str,
) -> (State, String) {
    let restarts = if instance.restarts > 0 {
        format!(" (restarted {} times)", instance.restarts)
    } else {
        String::new()
    };
    match instance.status {
        ContainerStateStatusEnum::RUNNING if ready => (State::Running, restarts.trim().to_owned()),
        ContainerStateStatusEnum::RUNNING => (State::Starting, format!("{detail}{restarts}")),
        ContainerStateStatusEnum::CREATED => (State::Provisioning, "created, not started".into()),
        ContainerStateStatusEnum::RESTARTING => (
            State::Restarting,
            format!("{}{restarts}", instance.exit_message()),
        ),
        ContainerStateStatusEnum::PAUSED => (State::Stopped, "paused".into()),
        _ if instance.role == Role::Init => {
            if instance.exit_code == Some(0) {
                (State::Running, "completed".into())
            } else {
                (State::Failed, format!("init {}", instance.exit_message()))
            }
        }
        _ => {
            let policy = service.map(|s| s.restart).unwrap_or_default();
            let clean = instance.exit_code == Some(0);
            // An exited container the engine would have restarted was
            // stopped on purpose — unless the kernel killed it for memory.
            if instance.looks_oom_killed() {
                (
                    State::Failed,
                    format!("{}{restarts}", instance.exit_message()),
                )
            } else if policy == RestartPolicy::Always || clean {
                (
                    State::Stopped,
                    format!("stopped ({}){restarts}", instance.exit_message()),
                )
            } else {
                (
                    State::Failed,
                    format!("{}{restarts}", instance.exit_message()),
                )
            }
        }
    }
}

fn connect_error(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection refused".into()
    } else {
        e.to_string()
    }
}
