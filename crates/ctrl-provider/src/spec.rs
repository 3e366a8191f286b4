//! What a workload should look like: services, their roles and ordering,
//! ports, volumes, health checks, resources, secrets and config files.
//!
//! A [`WorkloadSpec`] is one unit of co-scheduling per replica (a Pod on
//! Kubernetes, a set of containers on one network on Docker). [`WorkloadSpec::plan`]
//! validates it and returns the order services start in; every backend calls
//! it first, so a bad spec fails the same way everywhere, before anything is
//! created.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Error;

/// Longest workload id: it prefixes container and volume names.
pub const MAX_WORKLOAD_ID_LEN: usize = 63;
/// Longest service name (a DNS label inside the workload's network).
pub const MAX_SERVICE_NAME_LEN: usize = 30;

/// The desired shape of a workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadSpec {
    /// Stable id: a lowercase DNS label, unique per backend.
    pub id: String,
    /// The release this spec belongs to (a deployment id, a version);
    /// rollback names it.
    pub release: String,
    /// Stateless replicas or replicas with stable identity and storage.
    #[serde(default)]
    pub kind: WorkloadKind,
    /// Number of replicas (co-scheduling units).
    pub replicas: u32,
    /// The services of every replica; exactly one has the main role.
    pub services: Vec<ServiceSpec>,
    /// Labels put on every object of the workload.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Replica counts that follow load (backends with the `autoscale`
    /// capability; others run `replicas`).
    #[serde(default)]
    pub autoscaling: Option<Autoscaling>,
    /// Which traffic may reach the replicas (enforced where the backend can).
    #[serde(default)]
    pub network_policy: Option<NetworkPolicy>,
}

/// Replica bounds and the utilisation that scales out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Autoscaling {
    /// Fewest replicas (at least 1).
    pub min_replicas: u32,
    /// Most replicas (at least `min_replicas`).
    pub max_replicas: u32,
    /// Average CPU utilisation (percent of the limit) that scales out.
    pub cpu_percent: u32,
    /// Average memory utilisation that scales out; none = not a trigger.
    #[serde(default)]
    pub memory_percent: Option<u32>,
}

/// Allowed traffic to a workload; everything else is denied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkPolicy {
    /// Allowed inbound traffic.
    #[serde(default)]
    pub ingress: Vec<IngressRule>,
    /// Whether replicas may open connections outside the cluster.
    #[serde(default)]
    pub allow_internet_egress: bool,
}

/// One kind of allowed inbound traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngressRule {
    /// Destination port on the replicas.
    pub port: u16,
    /// Allowed sources; empty = any source.
    #[serde(default)]
    pub from: Vec<NetworkPeer>,
}

/// A source of traffic: workloads carrying all of `match_labels` (in
/// `namespace`), or an address range.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkPeer {
    /// Labels the source carries.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    /// Namespace of the source; none = the workload's own.
    #[serde(default)]
    pub namespace: Option<String>,
    /// An address range in CIDR notation, instead of labels.
    #[serde(default)]
    pub cidr: Option<String>,
}

/// Runtime topology of a workload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkloadKind {
    /// Interchangeable replicas: updates start the new replica before the
    /// old one stops.
    #[default]
    Stateless,
    /// Replicas keep their identity and persistent volumes: updates stop the
    /// old replica before the new one starts on the same volumes.
    Stateful,
}

/// One container (task) of every replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    /// DNS-safe name, unique in the workload (a network alias).
    pub name: String,
    /// Image reference.
    pub image: String,
    /// Lifecycle role.
    #[serde(default)]
    pub role: Role,
    /// Services that must be running (inits: completed) before this one starts.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// Overrides the image's entrypoint; empty keeps it.
    #[serde(default)]
    pub command: Vec<String>,
    /// Overrides the image's command; empty keeps it.
    #[serde(default)]
    pub args: Vec<String>,
    /// Plain environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Environment variables whose values are resolved just before start.
    #[serde(default)]
    pub secrets: Vec<SecretRef>,
    /// Files written into the container before it starts.
    #[serde(default)]
    pub config_files: Vec<ConfigFile>,
    /// Ports the service listens on.
    #[serde(default)]
    pub ports: Vec<PortSpec>,
    /// Volumes mounted into the service.
    #[serde(default)]
    pub volumes: Vec<VolumeSpec>,
    /// How to tell the service is ready; none = ready once running.
    #[serde(default)]
    pub health_check: Option<HealthCheck>,
    /// Limits.
    #[serde(default)]
    pub resources: Resources,
    /// What happens when the process exits (ignored for inits, which never restart).
    #[serde(default)]
    pub restart: RestartPolicy,
    /// Signal that asks the service to stop.
    #[serde(default)]
    pub stop_signal: StopSignal,
    /// Time between the stop signal and a forced kill.
    #[serde(default = "default_grace", with = "secs")]
    pub stop_grace: Duration,
}

fn default_grace() -> Duration {
    Duration::from_secs(10)
}

/// Lifecycle role of a service.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Runs to completion before the long-lived services start; a non-zero
    /// exit fails the replica.
    Init,
    /// The primary long-lived process; exactly one per workload.
    #[default]
    Main,
    /// A long-lived helper started after the main service.
    Sidecar,
}

/// An environment variable whose value comes from a secret store.
///
/// `reference` is opaque to backends and handed to a
/// [`SecretResolver`](crate::SecretResolver) just before the service starts.
/// It takes part in change detection, so a reference must change when the
/// value does (sealed values and versioned keys do).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRef {
    /// Variable name inside the container.
    pub env: String,
    /// What the resolver looks up (a sealed value, a versioned key).
    pub reference: String,
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretRef")
            .field("env", &self.env)
            .finish_non_exhaustive()
    }
}

/// A file written into a service's filesystem before it starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigFile {
    /// Absolute path inside the container.
    pub path: String,
    /// File content.
    pub content: String,
    /// Unix permission bits.
    #[serde(default = "default_mode")]
    pub mode: u32,
}

fn default_mode() -> u32 {
    0o644
}

/// A port the service listens on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortSpec {
    /// Port inside the container.
    pub container: u16,
    /// Fixed port on the host; none = any free port. A fixed port allows
    /// only one replica and turns updates into stop-then-start.
    #[serde(default)]
    pub host: Option<u16>,
    /// Transport protocol.
    #[serde(default)]
    pub protocol: Protocol,
}

/// Transport protocol of a port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// TCP.
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// Lowercase name as container engines spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// A volume mounted into a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeSpec {
    /// Name, unique per service.
    pub name: String,
    /// Absolute mount path.
    pub mount_path: String,
    /// Ephemeral (gone with the container) or persistent (kept per replica
    /// across releases; stateful workloads only).
    #[serde(default)]
    pub persistence: Persistence,
}

/// Lifetime of a volume.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Persistence {
    /// Removed with the container.
    #[default]
    Ephemeral,
    /// Kept per replica until the workload is deprovisioned.
    Persistent,
}

/// How readiness is probed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// What is probed.
    pub probe: Probe,
    /// Time between probes.
    #[serde(with = "secs")]
    pub interval: Duration,
    /// Time one probe may take.
    #[serde(with = "secs")]
    pub timeout: Duration,
    /// Consecutive failures after which a started service counts as failed
    /// (during a rollout: the time budget is start period + retries × interval).
    pub retries: u32,
    /// Grace time after start during which failures do not count.
    #[serde(with = "secs")]
    pub start_period: Duration,
}

impl HealthCheck {
    /// An HTTP GET probe with common defaults.
    pub fn http(port: u16, path: impl Into<String>) -> Self {
        Self {
            probe: Probe::Http {
                port,
                path: path.into(),
                method: HttpMethod::Get,
            },
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            retries: 3,
            start_period: Duration::from_secs(30),
        }
    }

    /// How long a rollout waits for the first success.
    pub fn rollout_budget(&self) -> Duration {
        self.start_period + self.interval * self.retries.max(1)
    }
}

/// What a health check probes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Probe {
    /// An HTTP request answered with 2xx or 3xx.
    Http {
        /// Container port.
        port: u16,
        /// Request path.
        path: String,
        /// Request method.
        #[serde(default)]
        method: HttpMethod,
    },
    /// A TCP connection is accepted.
    Tcp {
        /// Container port.
        port: u16,
    },
    /// A command run inside the container exits 0.
    Command {
        /// Program and arguments.
        command: Vec<String>,
    },
}

/// Method of an HTTP probe.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    /// GET.
    #[default]
    Get,
    /// POST with an empty body.
    Post,
}

impl HttpMethod {
    /// The method as HTTP writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
        }
    }
}

/// Resource limits of one container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// CPU in millicores; 0 = unlimited.
    #[serde(default)]
    pub cpu_millis: u32,
    /// Memory in MiB; 0 = unlimited.
    #[serde(default)]
    pub memory_mib: u32,
    /// Process count; 0 = the engine's default.
    #[serde(default)]
    pub pids: u32,
    /// GPUs; needs the `gpu` capability.
    #[serde(default)]
    pub gpus: u32,
    /// Writable disk in MiB; 0 = unlimited. Needs the `disk-limits` capability.
    #[serde(default)]
    pub disk_mib: u32,
}

/// What happens when a long-lived service's process exits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum RestartPolicy {
    /// Restart unless it was stopped on purpose.
    #[default]
    Always,
    /// Restart after a non-zero exit, at most `max_retries` times.
    OnFailure {
        /// Restart budget.
        max_retries: u32,
    },
    /// Never restart.
    Never,
}

/// Signal that asks a process to stop.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum StopSignal {
    /// SIGTERM.
    #[default]
    Sigterm,
    /// SIGINT.
    Sigint,
    /// SIGQUIT.
    Sigquit,
    /// SIGKILL.
    Sigkill,
}

impl StopSignal {
    /// The signal's name as container engines spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            StopSignal::Sigterm => "SIGTERM",
            StopSignal::Sigint => "SIGINT",
            StopSignal::Sigquit => "SIGQUIT",
            StopSignal::Sigkill => "SIGKILL",
        }
    }
}

impl ServiceSpec {
    /// A main service running `image` with defaults everywhere else.
    pub fn main(name: impl Into<String>, image: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            image: image.into(),
            role: Role::Main,
            depends_on: Vec::new(),
            command: Vec::new(),
            args: Vec::new(),
            env: BTreeMap::new(),
            secrets: Vec::new(),
            config_files: Vec::new(),
            ports: Vec::new(),
            volumes: Vec::new(),
            health_check: None,
            resources: Resources::default(),
            restart: RestartPolicy::default(),
            stop_signal: StopSignal::default(),
            stop_grace: default_grace(),
        }
    }

    /// Whether the service keeps running (main and sidecars).
    pub fn is_long_lived(&self) -> bool {
        self.role != Role::Init
    }
}

/// The validated start order of a workload's services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Indices into `services`, inits first, each after what it depends on;
    /// among independent services the main one comes before sidecars.
    pub order: Vec<usize>,
    /// Index of the main service.
    pub main: usize,
}

impl WorkloadSpec {
    /// Validates the spec and computes the start order. Every error names
    /// the field and the offending value.
    pub fn plan(&self) -> Result<Plan, Error> {
        check_label("workload id", &self.id, MAX_WORKLOAD_ID_LEN)?;
        if self.release.is_empty() {
            return invalid("release must not be empty");
        }
        if self.replicas == 0 {
            return invalid("replicas must be at least 1 (stop the workload to run none)");
        }
        let mut names = BTreeSet::new();
        let mut main: Option<usize> = None;
        for (i, service) in self.services.iter().enumerate() {
            check_label("service name", &service.name, MAX_SERVICE_NAME_LEN)?;
            if !names.insert(service.name.as_str()) {
                return invalid(format!("service {:?} is declared twice", service.name));
            }
            if service.image.trim().is_empty() {
                return invalid(format!("service {:?} has no image", service.name));
            }
            if service.role == Role::Main {
                if let Some(other) = main {
                    return invalid(format!(
                        "services {:?} and {:?} are both main; a workload has exactly one",
                        self.services[other].name, service.name
                    ));
                }
                main = Some(i);
            }
            self.check_service(service)?;
        }
        let Some(main) = main else {
            return invalid("a workload needs exactly one service with the main role");
        };
        for service in &self.services {
            for dep in &service.depends_on {
                let Some(target) = self.services.iter().find(|s| &s.name == dep) else {
                    return invalid(format!(
                        "service {:?} depends on unknown service {dep:?}",
                        service.name
                    ));
                };
                if service.role == Role::Init && target.role != Role::Init {
                    return invalid(format!(
                        "init service {:?} cannot depend on long-lived service {dep:?}: inits run first",
                        service.name
                    ));
                }
            }
        }
        let order = self.start_order()?;
        Ok(Plan { order, main })
    }

    fn check_service(&self, service: &ServiceSpec) -> Result<(), Error> {
        let name = &service.name;
        let mut ports = BTreeSet::new();
        for port in &service.ports {
            if port.container == 0 {
                return invalid(format!("service {name:?}: container port 0"));
            }
            if !ports.insert((port.container, port.protocol.as_str())) {
                return invalid(format!(
                    "service {name:?}: port {} is declared twice",
                    port.container
                ));
            }
            if port.host.is_some() && self.replicas > 1 {
                return invalid(format!(
                    "service {name:?}: fixed host port {} allows only one replica, not {}",
                    port.host.unwrap_or_default(),
                    self.replicas
                ));
            }
        }
        let mut seen = BTreeSet::new();
        for secret in &service.secrets {
            check_env_name(name, &secret.env)?;
            if service.env.contains_key(&secret.env) || !seen.insert(&secret.env) {
                return invalid(format!(
                    "service {name:?}: variable {:?} is set twice",
                    secret.env
                ));
            }
        }
        for key in service.env.keys() {
            check_env_name(name, key)?;
        }
        let mut volumes = BTreeSet::new();
        for volume in &service.volumes {
            check_label("volume name", &volume.name, MAX_SERVICE_NAME_LEN)?;
            if !volumes.insert(&volume.name) {
                return invalid(format!(
                    "service {name:?}: volume {:?} is declared twice",
                    volume.name
                ));
            }
            check_path(name, "volume mount path", &volume.mount_path)?;
            if volume.persistence == Persistence::Persistent && self.kind != WorkloadKind::Stateful
            {
                return invalid(format!(
                    "service {name:?}: persistent volume {:?} needs a stateful workload",
                    volume.name
                ));
            }
        }
        for file in &service.config_files {
            check_path(name, "config file path", &file.path)?;
            if file.path.ends_with('/') {
                return invalid(format!(
                    "service {name:?}: config file path {:?} names a directory",
                    file.path
                ));
            }
        }
        if let Some(check) = &service.health_check {
            if service.role == Role::Init {
                return invalid(format!("init service {name:?} cannot have a health check"));
            }
            if check.interval.is_zero() || check.timeout.is_zero() {
                return invalid(format!(
                    "service {name:?}: health check interval and timeout must be positive"
                ));
            }
            match &check.probe {
                Probe::Http { port, path, .. } => {
                    self.check_probe_port(service, *port)?;
                    if !path.starts_with('/') {
                        return invalid(format!(
                            "service {name:?}: health check path {path:?} must start with '/'"
                        ));
                    }
                }
                Probe::Tcp { port } => self.check_probe_port(service, *port)?,
                Probe::Command { command } if command.is_empty() => {
                    return invalid(format!("service {name:?}: health check command is empty"));
                }
                Probe::Command { .. } => {}
            }
        }
        Ok(())
    }

    fn check_probe_port(&self, service: &ServiceSpec, port: u16) -> Result<(), Error> {
        if service
            .ports
            .iter()
            .any(|p| p.container == port && p.protocol == Protocol::Tcp)
        {
            Ok(())
        } else {
            invalid(format!(
                "service {:?}: health check port {port} is not one of its TCP ports",
                service.name
            ))
        }
    }

    /// Kahn's algorithm with a priority (role, declaration order), so the
    /// order is deterministic; whatever is left over is a cycle.
    fn start_order(&self) -> Result<Vec<usize>, Error> {
        let index: BTreeMap<&str, usize> = self
            .services
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.as_str(), i))
            .collect();
        // Inits first, then main and what it needs, then the other sidecars.
        let mut needed_by_main = BTreeSet::new();
        let mut stack: Vec<usize> = self
            .services
            .iter()
            .position(|s| s.role == Role::Main)
            .into_iter()
            .collect();
        while let Some(i) = stack.pop() {
            if needed_by_main.insert(i) {
                stack.extend(
                    self.services[i]
                        .depends_on
                        .iter()
                        .filter_map(|d| index.get(d.as_str()).copied()),
                );
            }
        }
        let rank = |i: usize| match self.services[i].role {
            Role::Init => 0u8,
            _ if needed_by_main.contains(&i) => 1,
            _ => 2,
        };
        let mut waiting_on: Vec<usize> = self.services.iter().map(|s| s.depends_on.len()).collect();
        let mut ready: BTreeSet<(u8, usize)> = BTreeSet::new();
        for (i, n) in waiting_on.iter().enumerate() {
            if *n == 0 {
                ready.insert((rank(i), i));
            }
        }
        let mut order = Vec::with_capacity(self.services.len());
        while let Some(next) = ready.pop_first() {
            let (_, i) = next;
            order.push(i);
            for (j, service) in self.services.iter().enumerate() {
                let uses = service
                    .depends_on
                    .iter()
                    .filter(|d| index.get(d.as_str()) == Some(&i))
                    .count();
                if uses > 0 {
                    waiting_on[j] -= uses;
                    if waiting_on[j] == 0 {
                        ready.insert((rank(j), j));
                    }
                }
            }
        }
        if order.len() < self.services.len() {
            let mut cycle: Vec<&str> = (0..self.services.len())
                .filter(|i| !order.contains(i))
                .map(|i| self.services[i].name.as_str())
                .collect();
            cycle.sort_unstable();
            return invalid(format!(
                "services {} depend on each other in a cycle",
                cycle.join(", ")
            ));
        }
        Ok(order)
    }

    /// The main service.
    pub fn main_service(&self) -> Option<&ServiceSpec> {
        self.services.iter().find(|s| s.role == Role::Main)
    }
}

fn invalid<T>(message: impl Into<String>) -> Result<T, Error> {
    Err(Error::InvalidSpec(message.into()))
}

/// A lowercase DNS label: `[a-z0-9]([a-z0-9-]*[a-z0-9])?`.
pub(crate) fn check_label(what: &str, value: &str, max: usize) -> Result<(), Error> {
    let ok = !value.is_empty()
        && value.len() <= max
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if ok {
        Ok(())
    } else {
        invalid(format!(
            "{what} {value:?} must be 1-{max} lowercase letters, digits or '-', not starting or ending with '-'"
        ))
    }
}

fn check_env_name(service: &str, name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && !name.as_bytes()[0].is_ascii_digit()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        invalid(format!(
            "service {service:?}: environment variable name {name:?} must be letters, digits and '_', not starting with a digit"
        ))
    }
}

fn check_path(service: &str, what: &str, path: &str) -> Result<(), Error> {
    if path.starts_with('/') && !path.split('/').any(|part| part == "..") && path.len() > 1 {
        Ok(())
    } else {
        invalid(format!(
            "service {service:?}: {what} {path:?} must be an absolute path without '..'"
        ))
    }
}

/// Durations as whole or fractional seconds in JSON.
mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(services: Vec<ServiceSpec>) -> WorkloadSpec {
        WorkloadSpec {
            id: "web".into(),
            release: "r1".into(),
            kind: WorkloadKind::Stateless,
            replicas: 1,
            services,
            labels: BTreeMap::new(),
            autoscaling: None,
            network_policy: None,
        }
    }

    fn service(name: &str, role: Role, deps: &[&str]) -> ServiceSpec {
        ServiceSpec {
            role,
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            ..ServiceSpec::main(name, "img")
        }
    }

    fn names(spec: &WorkloadSpec) -> Vec<&str> {
        let plan = spec.plan().expect("valid");
        plan.order
            .iter()
            .map(|&i| spec.services[i].name.as_str())
            .collect()
    }

    #[test]
    fn inits_first_then_main_then_sidecars_respecting_dependencies() {
        let s = spec(vec![
            service("proxy", Role::Sidecar, &[]),
            service("app", Role::Main, &["cache"]),
            service("cache", Role::Sidecar, &[]),
            service("migrate", Role::Init, &["fetch"]),
            service("fetch", Role::Init, &[]),
        ]);
        assert_eq!(names(&s), ["fetch", "migrate", "cache", "app", "proxy"]);
    }

    #[test]
    fn cycles_are_named() {
        let s = spec(vec![
            service("app", Role::Main, &["b"]),
            service("b", Role::Sidecar, &["c"]),
            service("c", Role::Sidecar, &["b"]),
            service("free", Role::Sidecar, &[]),
        ]);
        let err = s.plan().unwrap_err().to_string();
        assert!(
            err.contains("b, c depend on each other in a cycle"),
            "{err}"
        );
        assert!(!err.contains("free"), "{err}");
    }

    #[test]
    fn self_dependency_is_a_cycle() {
        let s = spec(vec![service("app", Role::Main, &["app"])]);
        assert!(s.plan().unwrap_err().to_string().contains("cycle"));
    }

    #[test]
    fn exactly_one_main() {
        let none = spec(vec![service("a", Role::Sidecar, &[])]);
        assert!(none.plan().unwrap_err().to_string().contains("exactly one"));
        let two = spec(vec![
            service("a", Role::Main, &[]),
            service("b", Role::Main, &[]),
        ]);
        assert!(two.plan().unwrap_err().to_string().contains("both main"));
    }

    #[test]
    fn bad_input_is_named() {
        let cases: Vec<(WorkloadSpec, &str)> = vec![
            (spec(vec![service("App", Role::Main, &[])]), "\"App\""),
            (
                spec(vec![service("app", Role::Main, &["db"])]),
                "unknown service \"db\"",
            ),
            (
                spec(vec![
                    service("app", Role::Main, &[]),
                    service("app", Role::Sidecar, &[]),
                ]),
                "declared twice",
            ),
            (
                spec(vec![
                    service("app", Role::Main, &[]),
                    service("init", Role::Init, &["app"]),
                ]),
                "inits run first",
            ),
            (
                spec(vec![ServiceSpec {
                    health_check: Some(HealthCheck::http(8080, "/health")),
                    ..ServiceSpec::main("app", "img")
                }]),
                "health check port 8080",
            ),
            (
                spec(vec![ServiceSpec {
                    env: BTreeMap::from([("1X".into(), "v".into())]),
                    ..ServiceSpec::main("app", "img")
                }]),
                "\"1X\"",
            ),
            (
                spec(vec![ServiceSpec {
                    config_files: vec![ConfigFile {
                        path: "/etc/../x".into(),
                        content: String::new(),
                        mode: 0o644,
                    }],
                    ..ServiceSpec::main("app", "img")
                }]),
                "without '..'",
            ),
            (
                spec(vec![ServiceSpec {
                    volumes: vec![VolumeSpec {
                        name: "data".into(),
                        mount_path: "/data".into(),
                        persistence: Persistence::Persistent,
                    }],
                    ..ServiceSpec::main("app", "img")
                }]),
                "needs a stateful workload",
            ),
            (
                WorkloadSpec {
                    replicas: 2,
                    ..spec(vec![ServiceSpec {
                        ports: vec![PortSpec {
                            container: 80,
                            host: Some(8080),
                            protocol: Protocol::Tcp,
                        }],
                        ..ServiceSpec::main("app", "img")
                    }])
                },
                "only one replica",
            ),
            (
                WorkloadSpec {
                    replicas: 0,
                    ..spec(vec![service("app", Role::Main, &[])])
                },
                "at least 1",
            ),
        ];
        for (s, expected) in cases {
            let err = s.plan().unwrap_err();
            assert!(matches!(err, Error::InvalidSpec(_)));
            assert!(err.to_string().contains(expected), "{err} lacks {expected}");
        }
    }

    #[test]
    fn json_round_trip_and_secret_debug_hides_reference() {
        let mut s = spec(vec![ServiceSpec {
            secrets: vec![SecretRef {
                env: "TOKEN".into(),
                reference: "sealed:abc".into(),
            }],
            health_check: Some(HealthCheck::http(80, "/")),
            ports: vec![PortSpec {
                container: 80,
                host: None,
                protocol: Protocol::Tcp,
            }],
            ..ServiceSpec::main("app", "img")
        }]);
        s.labels.insert("team".into(), "a".into());
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<WorkloadSpec>(&json).unwrap(), s);
        assert!(!format!("{s:?}").contains("sealed:abc"));
    }
}
