//! frontline's configuration (TOML; `${VAR}` expanded; overrides from
//! `FRONTLINE__SECTION__KEY`). See `deploy/frontline.example.toml`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use ctrl_core::names::is_dns_label;
use ctrl_runtime::config::{Validate, Validator};
use ctrl_runtime::sections::{LogConfig, VaultConfig};
use serde::Deserialize;

/// The environment prefix for overrides.
pub const ENV_PREFIX: &str = "FRONTLINE";

/// Everything frontline reads at startup.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The region this edge serves.
    pub region: RegionConfig,
    /// Where the control plane's EdgeService and AcmeService are.
    pub control: ControlConfig,
    /// Listeners.
    #[serde(default)]
    pub listen: ListenConfig,
    /// Keys that open certificates' private keys (absent: TLS serves no
    /// certificate, and says so in the log).
    #[serde(default)]
    pub vault: Option<VaultConfig>,
    /// Limits and timeouts of the proxy.
    #[serde(default)]
    pub proxy: ProxyConfig,
    /// Other regions' edges, by "platform/region", for deployments that do
    /// not run here (plain `http://` URLs).
    #[serde(default)]
    pub peers: BTreeMap<String, String>,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
}

/// The region.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionConfig {
    /// e.g. "dev", "aws".
    pub platform: String,
    /// e.g. "local", "us-east-1".
    pub name: String,
}

impl RegionConfig {
    /// "platform/name", how peers and deployments name regions.
    pub fn key(&self) -> String {
        format!("{}/{}", self.platform, self.name)
    }
}

/// The control plane.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    /// Base URL of EdgeService (ctrl-cluster-sync, or ctrl-api mounting it),
    /// e.g. `http://127.0.0.1:7091` (gRPC over h2c).
    pub url: String,
    /// Base URL of AcmeService (ctrl-api); default: `url`.
    #[serde(default)]
    pub acme_url: Option<String>,
    /// This edge's credential (a frontline agent credential bound to its region).
    pub token: String,
    /// Bound on every call (opening a stream included).
    #[serde(default = "default_call_timeout")]
    pub call_timeout_seconds: u64,
}

fn default_call_timeout() -> u64 {
    5
}

impl std::fmt::Debug for ControlConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlConfig")
            .field("url", &self.url)
            .field("acme_url", &self.acme_url)
            .field("token", &"<redacted>")
            .field("call_timeout_seconds", &self.call_timeout_seconds)
            .finish()
    }
}

/// Listeners.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenConfig {
    /// Plain HTTP (and the ACME HTTP-01 path).
    pub http: SocketAddr,
    /// TLS (HTTP/1.1 and HTTP/2 by ALPN); absent = no TLS listener.
    pub https: Option<SocketAddr>,
    /// `/health/live`, `/health/ready` and `/metrics`.
    pub admin: SocketAddr,
    /// The HTTPS port as clients see it (redirects and URLs); default: the
    /// `https` listener's port.
    pub public_https_port: Option<u16>,
    /// Answer plain HTTP for a host that has a certificate with a redirect
    /// to HTTPS.
    pub redirect_https: bool,
    /// Seconds to let in-flight requests finish after SIGTERM.
    pub shutdown_grace_seconds: u64,
    /// Worker threads serving requests (each with its own runtime, sockets
    /// and upstream pools); 0 = one per CPU.
    pub workers: usize,
}

impl Default for ListenConfig {
    fn default() -> Self {
        Self {
            http: SocketAddr::from(([127, 0, 0, 1], 8880)),
            https: None,
            admin: SocketAddr::from(([127, 0, 0, 1], 8881)),
            public_https_port: None,
            redirect_https: true,
            shutdown_grace_seconds: 10,
            workers: 0,
        }
    }
}

/// Limits and timeouts of the proxy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// Connecting to an instance.
    pub connect_timeout_ms: u64,
    /// From sending a request to an instance to its response headers.
    pub response_header_timeout_seconds: u64,
    /// A client has this long to send its request headers (slowloris).
    pub request_header_timeout_seconds: u64,
    /// Idle keep-alive connections (to clients and to instances) close after this.
    pub idle_timeout_seconds: u64,
    /// Bound on a request's headers, in bytes.
    pub max_header_bytes: usize,
    /// Bound on a request body, in bytes (0 = unbounded).
    pub max_body_bytes: u64,
    /// Requests that crossed this many edges already answer 508 (a loop).
    pub max_hops: u32,
    /// An instance that refused a connection gets no traffic for this long.
    pub ejection_seconds: u64,
    /// How long a request for an idle deployment waits for it to wake.
    pub wake_timeout_seconds: u64,
    /// How often traffic counts are reported.
    pub traffic_report_seconds: u64,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            connect_timeout_ms: 2_000,
            response_header_timeout_seconds: 60,
            request_header_timeout_seconds: 10,
            idle_timeout_seconds: 90,
            max_header_bytes: 64 * 1024,
            max_body_bytes: 1 << 30,
            max_hops: 10,
            ejection_seconds: 10,
            wake_timeout_seconds: 60,
            traffic_report_seconds: 10,
        }
    }
}

impl ProxyConfig {
    /// Connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
}

impl Validate for Config {
    fn validate(&self, v: &mut Validator) {
        for (field, value) in [
            ("region.platform", &self.region.platform),
            ("region.name", &self.region.name),
        ] {
            v.check(
                is_dns_label(value),
                field,
                "must be a DNS label (lowercase letters, digits and '-', 1-63 characters)",
            );
        }
        v.url("control.url", &self.control.url, &["http", "https"]);
        if let Some(acme) = &self.control.acme_url {
            v.url("control.acme_url", acme, &["http", "https"]);
        }
        v.check(
            self.control.token.len() >= 16,
            "control.token",
            "must be at least 16 characters",
        );
        v.range(
            "control.call_timeout_seconds",
            self.control.call_timeout_seconds,
            1..=120,
        );
        if let Some(vault) = &self.vault {
            vault.validate(v);
        }
        let p = &self.proxy;
        v.range(
            "proxy.connect_timeout_ms",
            p.connect_timeout_ms,
            10..=60_000,
        );
        v.range(
            "proxy.response_header_timeout_seconds",
            p.response_header_timeout_seconds,
            1..=3600,
        );
        v.range(
            "proxy.request_header_timeout_seconds",
            p.request_header_timeout_seconds,
            1..=300,
        );
        v.range(
            "proxy.idle_timeout_seconds",
            p.idle_timeout_seconds,
            1..=3600,
        );
        v.range("proxy.max_header_bytes", p.max_header_bytes, 8192..=1 << 20);
        v.range("proxy.max_hops", p.max_hops, 1..=100);
        v.range("proxy.ejection_seconds", p.ejection_seconds, 1..=600);
        v.range(
            "proxy.wake_timeout_seconds",
            p.wake_timeout_seconds,
            1..=600,
        );
        v.range(
            "proxy.traffic_report_seconds",
            p.traffic_report_seconds,
            1..=600,
        );
        v.range("listen.workers", self.listen.workers, 0..=256);
        v.range(
            "listen.shutdown_grace_seconds",
            self.listen.shutdown_grace_seconds,
            0..=600,
        );
        for (region, url) in &self.peers {
            let ok = region
                .split_once('/')
                .is_some_and(|(p, r)| is_dns_label(p) && is_dns_label(r));
            v.check(
                ok,
                &format!("peers.{region:?}"),
                "key must be \"platform/region\"",
            );
            // Edge-to-edge forwarding is plain HTTP (the peer client
            // refuses https URLs): say so at start, not on the first request.
            v.url(&format!("peers.{region:?}"), url, &["http"]);
        }
        self.log.validate(v);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const GOOD: &str = r#"
        [region]
        platform = "dev"
        name = "local"
        [control]
        url = "http://127.0.0.1:7091"
        token = "${EDGE_TOKEN}"
    "#;

    fn env() -> HashMap<String, String> {
        HashMap::from([("EDGE_TOKEN".to_owned(), "edge-0123456789abcdef".to_owned())])
    }

    #[test]
    fn defaults_redaction_and_named_errors() {
        let c: Config =
            ctrl_runtime::config::parse(GOOD, "frontline.toml", &env(), ENV_PREFIX).unwrap();
        assert_eq!(c.listen.http.to_string(), "127.0.0.1:8880");
        assert_eq!(c.proxy.max_hops, 10);
        assert!(!format!("{c:?}").contains("edge-0123456789abcdef"));
        let bad = format!(
            "{GOOD}\n[proxy]\nmax_hops = 0\n[peers]\n\"nowhere\" = \"ftp://x\"\n\"aws/eu\" = \"https://edge.eu\"\n"
        );
        let err = ctrl_runtime::config::parse::<Config>(&bad, "frontline.toml", &env(), ENV_PREFIX)
            .unwrap_err()
            .to_string();
        assert!(err.contains("proxy.max_hops"), "{err}");
        assert!(err.contains("peers.\"nowhere\""), "{err}");
        assert!(
            err.contains("`peers.\"aws/eu\"` must be a http URL"),
            "https peers are refused at start: {err}"
        );
    }

    #[test]
    fn the_example_file_is_valid() {
        let env = HashMap::from([
            (
                "FRONTLINE_TOKEN".to_owned(),
                "edge-0123456789abcdef".to_owned(),
            ),
            (
                "CTRL_VAULT_KEY".to_owned(),
                "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".to_owned(),
            ),
        ]);
        let text = include_str!("../../../deploy/frontline.example.toml");
        let c: Config =
            ctrl_runtime::config::parse(text, "frontline.example.toml", &env, ENV_PREFIX).unwrap();
        assert_eq!(c.region.key(), "dev/local");
    }
}
