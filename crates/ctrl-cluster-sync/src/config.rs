//! ctrl-cluster-sync's configuration (TOML; `${VAR}` expanded; overrides
//! from `CTRL_CLUSTER_SYNC__SECTION__KEY`). See
//! `deploy/ctrl-cluster-sync.example.toml`.

use std::net::SocketAddr;
use std::time::Duration;

use ctrl_runtime::config::{Validate, Validator};
use ctrl_runtime::sections::{DatabaseConfig, LogConfig};
use serde::Deserialize;

use crate::edge::EdgeSettings;
use crate::feed::FeedSettings;
use crate::logs::LogSettings;
use crate::service::Settings;

/// The environment prefix for overrides.
pub const ENV_PREFIX: &str = "CTRL_CLUSTER_SYNC";

/// Everything ctrl-cluster-sync reads at startup.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The listener (Connect, gRPC and health on one port).
    #[serde(default)]
    pub http: HttpConfig,
    /// The database.
    pub database: DatabaseConfig,
    /// Restate's ingress, to wake Deploy workflows.
    pub restate: RestateConfig,
    /// Timings of the protocol.
    #[serde(default)]
    pub sync: SyncConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
}

/// The listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address to listen on (the agents' services and health).
    pub listen: SocketAddr,
    /// Health and `/metrics`, for probes and Prometheus only.
    pub ops_listen: SocketAddr,
    /// Seconds to let in-flight requests finish after SIGTERM (streams end
    /// at once; agents reconnect).
    pub shutdown_grace_seconds: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7092)),
            ops_listen: SocketAddr::from(([127, 0, 0, 1], 7095)),
            shutdown_grace_seconds: 10,
        }
    }
}

/// Restate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestateConfig {
    /// Ingress base URL, e.g. `http://restate:8080`.
    pub ingress_url: String,
}

/// Timings of the protocol.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncConfig {
    /// Agents' heartbeat interval.
    pub heartbeat_interval_seconds: u64,
    /// How often a region's change feed polls the database when idle.
    pub poll_interval_ms: u64,
    /// Rows per query (catch-up, snapshots, feed polls).
    pub page_size: u32,
    /// Keepalive on idle watch streams.
    pub keepalive_seconds: u64,
    /// A watch cursor further behind than this takes a snapshot instead.
    pub resync_after_versions: u64,
    /// How often the edges' feed polls for routing changes (the floor of the
    /// commit-to-edge latency).
    pub edge_poll_interval_ms: u64,
    /// How often an agent's log-request stream looks for new requests (the
    /// floor of `ctrl logs`' start-up latency).
    pub log_poll_interval_ms: u64,
}

impl Default for SyncConfig {
    fn default() -> Self {
        let s = Settings::default();
        Self {
            heartbeat_interval_seconds: s.heartbeat_interval.as_secs(),
            poll_interval_ms: u64::try_from(s.feed.poll_interval.as_millis()).unwrap_or(100),
            page_size: s.page_size,
            keepalive_seconds: s.keepalive.as_secs(),
            resync_after_versions: s.resync_after_versions,
            edge_poll_interval_ms: u64::try_from(s.edge.poll_interval.as_millis()).unwrap_or(20),
            log_poll_interval_ms: u64::try_from(s.logs.poll_interval.as_millis()).unwrap_or(200),
        }
    }
}

impl SyncConfig {
    /// Checks the ranges; `section` names the section in messages.
    pub fn validate(&self, section: &str, v: &mut Validator) {
        let field = |name: &str| format!("{section}.{name}");
        v.range(
            &field("heartbeat_interval_seconds"),
            self.heartbeat_interval_seconds,
            1..=3600,
        );
        v.range(
            &field("poll_interval_ms"),
            self.poll_interval_ms,
            10..=10_000,
        );
        v.range(&field("page_size"), self.page_size, 1..=10_000);
        v.range(&field("keepalive_seconds"), self.keepalive_seconds, 1..=600);
        v.range(
            &field("edge_poll_interval_ms"),
            self.edge_poll_interval_ms,
            5..=10_000,
        );
        v.range(
            &field("log_poll_interval_ms"),
            self.log_poll_interval_ms,
            10..=10_000,
        );
    }

    /// The service settings this section describes.
    pub fn settings(&self) -> Settings {
        Settings {
            heartbeat_interval: Duration::from_secs(self.heartbeat_interval_seconds),
            page_size: self.page_size,
            keepalive: Duration::from_secs(self.keepalive_seconds),
            resync_after_versions: self.resync_after_versions,
            feed: FeedSettings {
                poll_interval: Duration::from_millis(self.poll_interval_ms),
                page_size: self.page_size.max(100),
                ..FeedSettings::default()
            },
            edge: EdgeSettings {
                poll_interval: Duration::from_millis(self.edge_poll_interval_ms),
                keepalive: Duration::from_secs(self.keepalive_seconds),
                ..EdgeSettings::default()
            },
            logs: LogSettings {
                poll_interval: Duration::from_millis(self.log_poll_interval_ms),
                ..LogSettings::default()
            },
        }
    }
}

impl Validate for Config {
    fn validate(&self, v: &mut Validator) {
        self.database.validate(v);
        self.log.validate(v);
        v.url(
            "restate.ingress_url",
            &self.restate.ingress_url,
            &["http", "https"],
        );
        v.range(
            "http.shutdown_grace_seconds",
            self.http.shutdown_grace_seconds,
            0..=600,
        );
        self.sync.validate("sync", v);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const GOOD: &str = r#"
        [database]
        url = "mysql://ctrl:${CTRL_DB_PASSWORD}@127.0.0.1:3307/ctrl"
        [restate]
        ingress_url = "http://127.0.0.1:8080"
    "#;

    fn env() -> HashMap<String, String> {
        HashMap::from([(
            "CTRL_DB_PASSWORD".to_owned(),
            "0123456789abcdef0123".to_owned(),
        )])
    }

    #[test]
    fn defaults_and_named_errors() {
        let c: Config = ctrl_runtime::config::parse(GOOD, "sync.toml", &env(), ENV_PREFIX).unwrap();
        assert_eq!(c.http.listen.to_string(), "127.0.0.1:7092");
        assert_eq!(
            c.sync.settings().feed.poll_interval,
            Duration::from_millis(100)
        );
        assert!(!format!("{c:?}").contains("0123456789abcdef0123"));
        let bad = format!("{GOOD}\n[sync]\npoll_interval_ms = 1\n");
        let err = ctrl_runtime::config::parse::<Config>(&bad, "sync.toml", &env(), ENV_PREFIX)
            .unwrap_err()
            .to_string();
        assert!(err.contains("sync.poll_interval_ms"), "{err}");
    }

    #[test]
    fn the_example_file_is_valid() {
        let env = HashMap::from([("CTRL_DB_PASSWORD".to_owned(), "pw".to_owned())]);
        let text = include_str!("../../../deploy/ctrl-cluster-sync.example.toml");
        let c: Config =
            ctrl_runtime::config::parse(text, "example.toml", &env, ENV_PREFIX).unwrap();
        assert_eq!(c.sync.page_size, 500);
    }
}
