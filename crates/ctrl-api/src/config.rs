//! ctrl-api's configuration file (TOML; `${VAR}` expanded; overrides from
//! `CTRL_API__SECTION__KEY`). See `deploy/ctrl-api.example.toml`.

use std::net::{IpAddr, SocketAddr};

use ctrl_runtime::config::{Validate, Validator};
use ctrl_runtime::sections::{DatabaseConfig, LogConfig};
use serde::Deserialize;

/// The environment prefix for overrides.
pub const ENV_PREFIX: &str = "CTRL_API";

/// Everything ctrl-api reads at startup.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The listener.
    #[serde(default)]
    pub http: HttpConfig,
    /// Who may call the API.
    pub auth: ctrl_runtime::auth::AuthConfig,
    /// The database.
    pub database: DatabaseConfig,
    /// Keys sealing environment variables.
    pub vault: ctrl_runtime::sections::VaultConfig,
    /// The Restate server running the worker's services.
    pub restate: RestateConfig,
    /// Also serve the agents' ClusterService on this port (present =
    /// enabled; otherwise run ctrl-cluster-sync on its own).
    #[serde(default)]
    pub cluster_sync: Option<ctrl_cluster_sync::config::SyncConfig>,
    /// Request rates and open streams per token.
    #[serde(default)]
    pub limits: crate::limits::LimitsConfig,
    /// Users' own domains (absent: AddCustomDomain is refused).
    #[serde(default)]
    pub custom_domains: CustomDomainsConfig,
    /// Uploads of build contexts (`ctrl deploy --context`): the S3 bucket
    /// the worker reads them from (no bucket = uploads are refused).
    #[serde(default)]
    pub build_contexts: ctrl_build::store::StoreConfig,
    /// The GitHub App's webhooks (`POST /webhooks/github`; no secret =
    /// the route answers 404).
    #[serde(default)]
    pub github: GitHubWebhooksConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
}

/// The `[github]` section of ctrl-api: what it needs to accept the GitHub
/// App's webhooks.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GitHubWebhooksConfig {
    /// The webhook secret set on the GitHub App (seed 001's
    /// `webhook_secret`); never logged.
    pub webhook_secret: String,
    /// A second accepted secret while the first is rotated.
    pub previous_webhook_secret: String,
}

impl GitHubWebhooksConfig {
    /// The secrets a delivery may be signed with.
    pub fn secrets(&self) -> Vec<String> {
        [&self.webhook_secret, &self.previous_webhook_secret]
            .into_iter()
            .filter(|s| !s.is_empty())
            .cloned()
            .collect()
    }
}

impl std::fmt::Debug for GitHubWebhooksConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHubWebhooksConfig")
            .field("configured", &!self.webhook_secret.is_empty())
            .finish_non_exhaustive()
    }
}

/// The `[custom_domains]` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CustomDomainsConfig {
    /// Users' CNAMEs point at `{random}.{cname_domain}` (seed 001's name);
    /// empty = custom domains are off.
    pub cname_domain: String,
    /// Domains users may not claim (the platform's apex, e.g. the worker's
    /// `deploy.apex_domain`); `cname_domain` is always refused too.
    pub platform_domains: Vec<String>,
    /// The edge's public addresses: the A/AAAA records an apex domain needs.
    pub apex_addresses: Vec<IpAddr>,
}

/// The listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address to listen on (Connect, gRPC, the webhook and liveness).
    pub listen: SocketAddr,
    /// The operations listener: `/health/live`, `/health/ready` and
    /// `/metrics`. Keep it off public networks (port 0: any free port).
    pub ops_listen: SocketAddr,
    /// Seconds to let in-flight requests finish after SIGTERM.
    pub shutdown_grace_seconds: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7091)),
            ops_listen: SocketAddr::from(([127, 0, 0, 1], 7094)),
            shutdown_grace_seconds: 10,
        }
    }
}

/// The Restate server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestateConfig {
    /// Ingress base URL, e.g. `http://restate:8080`.
    pub ingress_url: String,
    /// Admin API base URL, e.g. `http://restate:9070` (cancelling invocations).
    pub admin_url: String,
    /// Sent as `Authorization: Bearer` to the admin API (a managed Restate,
    /// or a proxy guarding it); empty = none.
    #[serde(default)]
    pub api_key: ctrl_runtime::sections::Secret,
}

impl Validate for Config {
    fn validate(&self, v: &mut Validator) {
        self.auth.validate(v);
        self.database.validate(v);
        self.limits.validate(v);
        if let Some(sync) = &self.cluster_sync {
            sync.validate("cluster_sync", v);
        }
        v.range(
            "http.shutdown_grace_seconds",
            self.http.shutdown_grace_seconds,
            0..=600,
        );
        self.vault.validate(v);
        for (field, secret) in [
            ("github.webhook_secret", &self.github.webhook_secret),
            (
                "github.previous_webhook_secret",
                &self.github.previous_webhook_secret,
            ),
        ] {
            v.check(
                secret.is_empty() || secret.len() >= 16,
                field,
                "must be at least 16 characters (or empty: webhooks off)",
            );
        }
        v.check(
            self.github.previous_webhook_secret.is_empty()
                || !self.github.webhook_secret.is_empty(),
            "github.previous_webhook_secret",
            "needs github.webhook_secret",
        );
        let d = &self.custom_domains;
        v.check(
            d.cname_domain.is_empty() || ctrl_core::names::is_hostname(&d.cname_domain),
            "custom_domains.cname_domain",
            "must be a lowercase hostname, e.g. \"edge.example.net\"",
        );
        for (n, p) in d.platform_domains.iter().enumerate() {
            v.check(
                ctrl_core::names::is_hostname(p),
                &format!("custom_domains.platform_domains[{n}]"),
                "must be a lowercase hostname",
            );
        }
        for (field, problem) in self.build_contexts.problems() {
            v.check(false, field, problem);
        }
        self.log.validate(v);
        v.url(
            "restate.ingress_url",
            &self.restate.ingress_url,
            &["http", "https"],
        );
        v.url(
            "restate.admin_url",
            &self.restate.admin_url,
            &["http", "https"],
        );
    }
}

impl Config {
    /// The vault described by `vault.keys` (valid after validation).
    pub fn vault(&self) -> Result<ctrl_vault::Vault, ctrl_vault::Error> {
        self.vault.vault()
    }
}

/// `mysql://user:***@host/db`: the URL without its password, for logs.
#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const GOOD: &str = r#"
        [auth]
        tokens = ["${CTRL_TOKEN}"]
        [database]
        url = "mysql://ctrl:${DB_PASSWORD}@127.0.0.1:3307/ctrl"
        [vault]
        keys = [{ id = "k1", key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=" }]
        [restate]
        ingress_url = "http://127.0.0.1:8080"
        admin_url = "http://127.0.0.1:9070"
    "#;

    fn env() -> HashMap<String, String> {
        [
            ("CTRL_TOKEN", "0123456789abcdef0123"),
            ("DB_PASSWORD", "pw"),
        ]
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect()
    }

    #[test]
    fn a_minimal_file_gets_defaults_and_expands_variables() {
        let c: Config = ctrl_runtime::config::parse(GOOD, "api.toml", &env(), ENV_PREFIX).unwrap();
        assert_eq!(c.http.listen.to_string(), "127.0.0.1:7091");
        assert_eq!(c.database.max_connections, 20);
        assert_eq!(c.auth.tokens, ["0123456789abcdef0123"]);
        assert!(c.vault().is_ok());
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let c: Config = ctrl_runtime::config::parse(GOOD, "api.toml", &env(), ENV_PREFIX).unwrap();
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("0123456789abcdef0123")
                && !debug.contains(":pw@")
                && !debug.contains("AAEC"),
            "{debug}"
        );
    }

    #[test]
    fn the_example_file_is_valid() {
        let env: HashMap<String, String> = [
            ("CTRL_API_TOKEN", "0123456789abcdef0123"),
            ("CTRL_DB_PASSWORD", "pw"),
            (
                "CTRL_VAULT_KEY",
                "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            ),
            ("CTRL_S3_ACCESS_KEY", "AKIDEXAMPLE"),
            ("CTRL_S3_SECRET_KEY", "s3-secret-value"),
            ("CTRL_GITHUB_WEBHOOK_SECRET", "gh-webhook-secret-value"),
        ]
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
        let text = include_str!("../../../deploy/ctrl-api.example.toml");
        let c: Config =
            ctrl_runtime::config::parse(text, "ctrl-api.example.toml", &env, ENV_PREFIX).unwrap();
        assert!(c.build_contexts.enabled());
        assert!(!format!("{c:?}").contains("s3-secret-value"));
        assert_eq!(c.github.secrets(), ["gh-webhook-secret-value"]);
        assert!(!format!("{c:?}").contains("gh-webhook-secret-value"));
    }

    #[test]
    fn bad_values_are_named() {
        let mut e = env();
        e.insert("CTRL_TOKEN".into(), "short".into());
        let err = ctrl_runtime::config::parse::<Config>(GOOD, "api.toml", &e, ENV_PREFIX)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`auth.tokens[0]` must be at least 16 characters"),
            "{err}"
        );
        let bad_key = GOOD.replace("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", "c2hvcnQ=");
        let err = ctrl_runtime::config::parse::<Config>(&bad_key, "api.toml", &env(), ENV_PREFIX)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("vault.keys") && err.contains("32 bytes"),
            "{err}"
        );
        let no_db = GOOD.replace("[database]", "[databse]");
        let err = ctrl_runtime::config::parse::<Config>(&no_db, "api.toml", &env(), ENV_PREFIX)
            .unwrap_err()
            .to_string();
        assert!(err.contains("databse") || err.contains("database"), "{err}");
    }
}
