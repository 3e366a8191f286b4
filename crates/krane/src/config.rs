//! krane's configuration (TOML; `${VAR}` expanded; overrides from
//! `KRANE__SECTION__KEY`). See `deploy/krane.example.toml`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ctrl_runtime::config::{Validate, Validator};
use ctrl_runtime::sections::{LogConfig, VaultConfig};
use serde::Deserialize;

/// The environment prefix for overrides.
pub const ENV_PREFIX: &str = "KRANE";

/// Everything krane reads at startup.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Which cluster this agent is.
    pub cluster: ClusterConfig,
    /// Where ctrl-cluster-sync is.
    pub control: ControlConfig,
    /// Which backend runs workloads.
    #[serde(default)]
    pub provider: ProviderSection,
    /// The Docker-API engine workloads run on (`provider.kind = "docker"`).
    #[serde(default)]
    pub docker: DockerSection,
    /// The Kubernetes cluster workloads run on (`provider.kind =
    /// "kubernetes"`); its region and cluster labels come from `[cluster]`.
    #[serde(default)]
    pub kubernetes: ctrl_provider::kubernetes::KubernetesConfig,
    /// Keys that open sealed environment variables (absent: deployments
    /// with variables fail to apply, naming the variable).
    #[serde(default)]
    pub vault: Option<VaultConfig>,
    /// Timings.
    #[serde(default)]
    pub agent: AgentConfig,
    /// Health and metrics endpoint.
    #[serde(default)]
    pub http: HttpConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
}

/// The cluster key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// e.g. "dev", "aws".
    pub platform: String,
    /// e.g. "local", "us-east-1".
    pub region: String,
    /// Unique across the installation.
    pub cell_id: String,
}

/// ctrl-cluster-sync.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    /// Base URL, e.g. `http://127.0.0.1:7092` (gRPC over h2c).
    pub url: String,
    /// Bearer token.
    pub token: String,
    /// Limit of each unary call.
    #[serde(default = "default_call_timeout")]
    pub call_timeout_seconds: u64,
}

fn default_call_timeout() -> u64 {
    10
}

impl std::fmt::Debug for ControlConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlConfig")
            .field("url", &self.url)
            .field("token", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// The backend choice.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProviderSection {
    /// `docker` (default) or `kubernetes`.
    pub kind: ProviderKind,
}

/// The backends krane can drive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// A Docker-API engine (Docker or podman).
    #[default]
    Docker,
    /// A Kubernetes cluster.
    Kubernetes,
}

impl ProviderKind {
    /// The registry name.
    pub fn name(self) -> &'static str {
        match self {
            ProviderKind::Docker => "docker",
            ProviderKind::Kubernetes => "kubernetes",
        }
    }
}

/// The Docker backend.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DockerSection {
    /// Engine socket; empty = `DOCKER_HOST` or the default socket.
    pub socket: Option<PathBuf>,
    /// Address published ports bind to.
    pub bind_address: IpAddr,
    /// Host that ctrl's edge and krane's probes reach published ports on.
    pub advertise_host: Option<String>,
    /// How long a replaced container keeps serving.
    pub drain_delay_ms: u64,
    /// Allow `exec` into instances.
    pub allow_exec: bool,
    /// The static `ctrl-init` that delivers secret variables (see
    /// `ctrl_provider::docker::secrets`); default: `ctrl-init` next to
    /// krane's executable, if static. Without one, deployments with secret
    /// variables are refused.
    pub init_binary: Option<PathBuf>,
    /// A directory on a tmpfs for the containers' secret files; default:
    /// `/dev/shm/ctrl-krane/<cell_id>`.
    pub secrets_dir: Option<PathBuf>,
}

impl Default for DockerSection {
    fn default() -> Self {
        Self {
            socket: None,
            bind_address: IpAddr::from([127, 0, 0, 1]),
            advertise_host: None,
            drain_delay_ms: 2000,
            allow_exec: true,
            init_binary: None,
            secrets_dir: None,
        }
    }
}

/// Timings of the agent (defaults follow the reference design).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Full snapshot interval (besides the one at start).
    pub full_sync_seconds: u64,
    /// Reconcile interval: drift, orphans, failed applies.
    pub reconcile_seconds: u64,
    /// Actual-state report interval.
    pub report_seconds: u64,
    /// Applies that may run at once (different deployments).
    pub max_concurrent_applies: usize,
    /// Reconnect backoff: a random delay in this range (ms).
    pub reconnect_min_ms: u64,
    /// Reconnect backoff: a random delay in this range (ms).
    pub reconnect_max_ms: u64,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            full_sync_seconds: 600,
            reconcile_seconds: 60,
            report_seconds: 30,
            max_concurrent_applies: 10,
            reconnect_min_ms: 1000,
            reconnect_max_ms: 5000,
        }
    }
}

impl AgentConfig {
    /// The reconnect backoff range.
    pub fn reconnect(&self) -> (Duration, Duration) {
        (
            Duration::from_millis(self.reconnect_min_ms),
            Duration::from_millis(self.reconnect_max_ms),
        )
    }
}

/// Health and metrics.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// `/health/live`, `/health/ready`, `/metrics`.
    pub listen: SocketAddr,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8070)),
        }
    }
}

impl Validate for Config {
    fn validate(&self, v: &mut Validator) {
        for (field, value) in [
            ("cluster.platform", &self.cluster.platform),
            ("cluster.region", &self.cluster.region),
            ("cluster.cell_id", &self.cluster.cell_id),
        ] {
            v.check(
                ctrl_core::names::is_dns_label(value),
                field,
                "must be a DNS label (lowercase letters, digits and '-', 1-63 characters)",
            );
        }
        v.url("control.url", &self.control.url, &["http", "https"]);
        v.check(
            self.control.token.len() >= 16,
            "control.token",
            "must be at least 16 characters",
        );
        // At least 5: a log push may wait 3 s for a slow reader.
        v.range(
            "control.call_timeout_seconds",
            self.control.call_timeout_seconds,
            5..=300,
        );
        if let Some(vault) = &self.vault {
            vault.validate(v);
        }
        if self.provider.kind == ProviderKind::Kubernetes {
            let k = &self.kubernetes;
            v.check(
                !(k.in_cluster && k.kubeconfig.is_some()),
                "kubernetes.in_cluster",
                "cannot be combined with kubernetes.kubeconfig",
            );
            v.check(
                ctrl_core::names::is_dns_label(&k.namespace),
                "kubernetes.namespace",
                "must be a DNS label",
            );
            v.check(
                ctrl_core::names::is_dns_label(&k.argo_namespace),
                "kubernetes.argo_namespace",
                "must be a DNS label",
            );
            v.range(
                "kubernetes.api_timeout_seconds",
                k.api_timeout_seconds,
                1..=300,
            );
            v.range(
                "kubernetes.start_timeout_seconds",
                k.start_timeout_seconds,
                1..=3600,
            );
            v.range(
                "kubernetes.volume_size_mib",
                k.volume_size_mib,
                1..=u32::MAX,
            );
            if let Some(path) = &k.kubeconfig {
                v.check(
                    path.is_file(),
                    "kubernetes.kubeconfig",
                    "must name an existing file",
                );
            }
            if let Some(path) = &k.helm_bin {
                v.check(
                    path.is_file(),
                    "kubernetes.helm_bin",
                    "must name an existing file",
                );
            }
        }
        let a = &self.agent;
        v.range("agent.full_sync_seconds", a.full_sync_seconds, 10..=86_400);
        v.range("agent.reconcile_seconds", a.reconcile_seconds, 1..=3600);
        v.range("agent.report_seconds", a.report_seconds, 1..=3600);
        v.range(
            "agent.max_concurrent_applies",
            a.max_concurrent_applies,
            1..=1000,
        );
        v.check(
            a.reconnect_min_ms <= a.reconnect_max_ms,
            "agent.reconnect_min_ms",
            "must not exceed agent.reconnect_max_ms",
        );
        self.log.validate(v);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const GOOD: &str = r#"
        [cluster]
        platform = "dev"
        region = "local"
        cell_id = "local-1"
        [control]
        url = "http://127.0.0.1:7092"
        token = "${CTRL_TOKEN}"
    "#;

    #[test]
    fn defaults_redaction_and_named_errors() {
        let env = HashMap::from([("CTRL_TOKEN".to_owned(), "0123456789abcdef0123".to_owned())]);
        let c: Config = ctrl_runtime::config::parse(GOOD, "krane.toml", &env, ENV_PREFIX).unwrap();
        assert_eq!(c.agent.max_concurrent_applies, 10);
        assert_eq!(c.http.listen.to_string(), "127.0.0.1:8070");
        assert!(!format!("{c:?}").contains("0123456789abcdef0123"));
        // The log endpoint is gone (logs travel over the agent's own
        // connection): an old config naming it is told so, not ignored.
        let served = format!("{GOOD}\n[logs]\ntoken = \"${{CTRL_TOKEN}}\"\n");
        let err = ctrl_runtime::config::parse::<Config>(&served, "krane.toml", &env, ENV_PREFIX)
            .unwrap_err()
            .to_string();
        assert!(err.contains("logs"), "{err}");
        let bad = GOOD.replace("local-1", "Local_1");
        let err = ctrl_runtime::config::parse::<Config>(&bad, "krane.toml", &env, ENV_PREFIX)
            .unwrap_err()
            .to_string();
        assert!(err.contains("cluster.cell_id"), "{err}");
    }

    #[test]
    fn the_example_file_is_valid() {
        let env = HashMap::from([
            (
                "CTRL_AGENT_TOKEN".to_owned(),
                "0123456789abcdef0123".to_owned(),
            ),
            (
                "CTRL_VAULT_KEY".to_owned(),
                "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".to_owned(),
            ),
        ]);
        let text = include_str!("../../../deploy/krane.example.toml");
        let c: Config =
            ctrl_runtime::config::parse(text, "krane.example.toml", &env, ENV_PREFIX).unwrap();
        assert_eq!(c.cluster.cell_id, "use1-a");
        assert!(c.vault.is_some());
        assert_eq!(c.provider.kind, ProviderKind::Docker);

        let text = include_str!("../../../deploy/krane.kubernetes.example.toml");
        let c: Config =
            ctrl_runtime::config::parse(text, "krane.kubernetes.example.toml", &env, ENV_PREFIX)
                .unwrap();
        assert_eq!(c.provider.kind, ProviderKind::Kubernetes);
        assert!(c.kubernetes.in_cluster);
        assert_eq!(
            c.kubernetes.network_policy,
            ctrl_provider::kubernetes::NetworkPolicyMode::Cilium
        );
        assert_eq!(c.kubernetes.gpu_resource.as_deref(), Some("nvidia.com/gpu"));
    }

    #[test]
    fn kubernetes_settings_are_validated_by_name() {
        let env = HashMap::from([("CTRL_TOKEN".to_owned(), "0123456789abcdef0123".to_owned())]);
        for (extra, field) in [
            (
                "[kubernetes]\nin_cluster = true\nkubeconfig = \"/etc/hosts\"\n",
                "kubernetes.in_cluster",
            ),
            (
                "[kubernetes]\nkubeconfig = \"/nonexistent/kubeconfig\"\n",
                "kubernetes.kubeconfig",
            ),
            (
                "[kubernetes]\nnamespace = \"Bad_NS\"\n",
                "kubernetes.namespace",
            ),
            (
                "[kubernetes]\napi_timeout_seconds = 0\n",
                "kubernetes.api_timeout_seconds",
            ),
            (
                "[kubernetes]\nnetwork_policy = \"calico\"\n",
                "network_policy",
            ),
        ] {
            let text = format!("{GOOD}\n[provider]\nkind = \"kubernetes\"\n{extra}");
            let err = ctrl_runtime::config::parse::<Config>(&text, "krane.toml", &env, ENV_PREFIX)
                .unwrap_err()
                .to_string();
            assert!(err.contains(field), "{extra}: {err}");
        }
        let bad_kind = format!("{GOOD}\n[provider]\nkind = \"nomad\"\n");
        let err = ctrl_runtime::config::parse::<Config>(&bad_kind, "krane.toml", &env, ENV_PREFIX)
            .unwrap_err()
            .to_string();
        assert!(err.contains("nomad"), "{err}");
    }
}
