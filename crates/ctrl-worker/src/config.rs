//! ctrl-worker's configuration (TOML; `${VAR}` expanded; overrides from
//! `CTRL_WORKER__SECTION__KEY`).

use std::net::SocketAddr;

use ctrl_core::domains::MAX_APEX_LEN;
use ctrl_runtime::config::{Validate, Validator};
use ctrl_runtime::sections::{DatabaseConfig, LogConfig};
use serde::Deserialize;

/// The environment prefix for overrides.
pub const ENV_PREFIX: &str = "CTRL_WORKER";

/// Everything ctrl-worker reads at startup.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The Restate endpoint and its registration.
    pub restate: RestateConfig,
    /// The database.
    pub database: DatabaseConfig,
    /// Liveness/readiness endpoint.
    #[serde(default)]
    pub health: HealthConfig,
    /// Timings of the deploy pipeline.
    #[serde(default)]
    pub deploy: DeployConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
}

/// The Restate side.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestateConfig {
    /// Where this worker serves the Restate protocol (h2c).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Restate's admin API, for self-registration.
    pub admin_url: String,
    /// The URL Restate uses to reach this worker; empty = do not register
    /// (registration happens elsewhere, e.g. in Kubernetes).
    #[serde(default)]
    pub register_as: String,
    /// Registration attempts before giving up (one per second, backing off to 5 s).
    #[serde(default = "default_register_attempts")]
    pub register_attempts: u32,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9080))
}

fn default_register_attempts() -> u32 {
    30
}

/// The health endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Address of `/health/live` and `/health/ready`.
    pub listen: SocketAddr,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9081)),
        }
    }
}

/// Timings of the deploy pipeline (configurable so tests take seconds).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeployConfig {
    /// How long a replaced live deployment keeps running (instant rollback window).
    pub retire_previous_live_seconds: u64,
    /// How long older preview deployments of a branch keep running after a newer one is ready.
    pub retire_previous_preview_seconds: u64,
    /// How long to wait for instances before failing a deployment (also
    /// the startup window a new instance gets before failing health checks
    /// count against it).
    pub readiness_timeout_seconds: u64,
    /// A deployment fails once a region's agent failed this many attempts in
    /// a row (apply errors, crashes during startup), without waiting for the
    /// readiness timeout — unless enough other regions can still make it.
    pub max_failed_attempts: u32,
    /// While waiting for instances, the database is re-checked this often
    /// even without a notification from cluster-sync (a lost one is harmless).
    pub readiness_recheck_seconds: u64,
    /// How often the sweep looks for deployments still on their way with no
    /// workflow behind them (0: never).
    pub sweep_interval_seconds: u64,
    /// How long such a deployment must be unchanged before the sweep fails it.
    pub sweep_grace_seconds: u64,
    /// How long deleting a deployment waits for the agents to remove its
    /// instances before it removes the deployment anyway (an agent that is
    /// away removes the workload on its next snapshot).
    pub delete_drain_seconds: u64,
    /// The platform's apex domain: generated hostnames end in it.
    pub apex_domain: String,
}

impl Default for DeployConfig {
    fn default() -> Self {
        Self {
            retire_previous_live_seconds: 30 * 60,
            retire_previous_preview_seconds: 60,
            readiness_timeout_seconds: 15 * 60,
            max_failed_attempts: 3,
            readiness_recheck_seconds: 3,
            sweep_interval_seconds: 60,
            sweep_grace_seconds: 120,
            delete_drain_seconds: 300,
            apex_domain: "ctrl.localhost".into(),
        }
    }
}

impl Validate for Config {
    fn validate(&self, v: &mut Validator) {
        v.url(
            "restate.admin_url",
            &self.restate.admin_url,
            &["http", "https"],
        );
        if !self.restate.register_as.is_empty() {
            v.url(
                "restate.register_as",
                &self.restate.register_as,
                &["http", "https"],
            );
        }
        v.range(
            "restate.register_attempts",
            self.restate.register_attempts,
            1..=1000,
        );
        self.database.validate(v);
        v.range(
            "deploy.readiness_timeout_seconds",
            self.deploy.readiness_timeout_seconds,
            1..=24 * 3600,
        );
        v.range(
            "deploy.max_failed_attempts",
            self.deploy.max_failed_attempts,
            1..=100,
        );
        v.range(
            "deploy.readiness_recheck_seconds",
            self.deploy.readiness_recheck_seconds,
            1..=300,
        );
        v.range(
            "deploy.sweep_interval_seconds",
            self.deploy.sweep_interval_seconds,
            0..=24 * 3600,
        );
        v.range(
            "deploy.sweep_grace_seconds",
            self.deploy.sweep_grace_seconds,
            1..=24 * 3600,
        );
        v.range(
            "deploy.delete_drain_seconds",
            self.deploy.delete_drain_seconds,
            0..=24 * 3600,
        );
        v.check(
            ctrl_core::names::is_hostname(&self.deploy.apex_domain)
                && self.deploy.apex_domain.len() <= MAX_APEX_LEN,
            "deploy.apex_domain",
            format!(
                "must be a lowercase hostname of at most {MAX_APEX_LEN} characters, e.g. \"ctrl.example.com\""
            ),
        );
        self.log.validate(v);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn parse(text: &str) -> Result<Config, ctrl_runtime::config::ConfigError> {
        let env = HashMap::from([("CTRL_DB_PASSWORD".to_owned(), "secret".to_owned())]);
        ctrl_runtime::config::parse(text, "test", &env, ENV_PREFIX)
    }

    #[test]
    fn the_example_configuration_is_valid() {
        let text = include_str!("../../../deploy/ctrl-worker.example.toml");
        let config = parse(text).expect("example parses");
        assert_eq!(config.deploy.apex_domain, "ctrl.example.com");
        assert_eq!(config.deploy.retire_previous_live_seconds, 1800);
    }

    #[test]
    fn a_bad_apex_domain_is_named() {
        let text = "[restate]\nadmin_url = \"http://r:9070\"\n[database]\nurl = \"mysql://u@h/db\"\n[deploy]\napex_domain = \"Not A Host\"\n";
        let err = parse(text).expect_err("invalid apex").to_string();
        assert!(err.contains("deploy.apex_domain"), "{err}");
    }
}
