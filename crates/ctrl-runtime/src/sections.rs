//! Configuration sections every service has, with their validation, so the
//! binaries read `[database]` and `[log]` the same way.

use std::time::Duration;

use serde::Deserialize;

use crate::config::Validator;

/// `[database]`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `mysql://user:password@host:port/database`.
    pub url: String,
    /// Pool size.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// How long to keep retrying the first connection at startup.
    #[serde(default = "default_connect_seconds")]
    pub connect_timeout_seconds: u64,
}

fn default_max_connections() -> u32 {
    20
}

fn default_connect_seconds() -> u64 {
    30
}

impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &redact_url(&self.url))
            .field("max_connections", &self.max_connections)
            .finish_non_exhaustive()
    }
}

impl DatabaseConfig {
    /// Connects, retrying every second for up to `connect_timeout_seconds`,
    /// then fails with the last error (the URL in it without its password).
    pub async fn connect(&self) -> anyhow::Result<sqlx::MySqlPool> {
        use anyhow::Context as _;
        let url = redact_url(&self.url);
        ctrl_db::connect_retrying(
            &self.url,
            self.max_connections,
            Duration::from_secs(self.connect_timeout_seconds),
            &url,
        )
        .await
        .with_context(|| {
            format!(
                "cannot connect to the database at {url} (gave up after {} s)",
                self.connect_timeout_seconds
            )
        })
    }

    /// Adds the section's problems (fields named `database.*`).
    pub fn validate(&self, v: &mut Validator) {
        v.url("database.url", &self.url, &["mysql"]);
        v.range("database.max_connections", self.max_connections, 1..=1000);
        v.range(
            "database.connect_timeout_seconds",
            self.connect_timeout_seconds,
            0..=600,
        );
    }
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `tracing` filter, e.g. "info" or "info,ctrl_api=debug" (RUST_LOG wins when set).
    pub filter: String,
    /// "text" or "json".
    pub format: String,
    /// An OTLP/gRPC collector the spans are exported to, e.g.
    /// "http://otel-collector.observability:4317" (plain gRPC: a collector
    /// beside the service). Unset: no export.
    pub otlp_endpoint: Option<String>,
    /// The fraction of traces exported, 0.0–1.0 (a request's spans are
    /// kept or dropped together).
    pub otlp_sample_ratio: f64,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            filter: "info".into(),
            format: "text".into(),
            otlp_endpoint: None,
            otlp_sample_ratio: 1.0,
        }
    }
}

impl LogConfig {
    /// Adds the section's problems (fields named `log.*`).
    pub fn validate(&self, v: &mut Validator) {
        v.check(
            matches!(self.format.as_str(), "text" | "json"),
            "log.format",
            "must be \"text\" or \"json\"",
        );
        if let Some(endpoint) = &self.otlp_endpoint {
            v.url("log.otlp_endpoint", endpoint, &["http"]);
        }
        v.range("log.otlp_sample_ratio", self.otlp_sample_ratio, 0.0..=1.0);
    }

    /// Installs the global `tracing` subscriber (`RUST_LOG` overrides the
    /// filter) for `service` (its name in exported traces). Lines are
    /// formatted where they happen but written to stdout by a thread of
    /// their own, so a request never waits on the write; none is dropped (a
    /// full queue makes the caller wait instead). With `otlp_endpoint`, the
    /// spans the filter lets through are also exported in batches. Call it
    /// inside the Tokio runtime and hold the guard until exit: dropping it
    /// flushes the queue and the last spans.
    pub fn init(&self, service: &'static str) -> LogGuard {
        self.init_filtered(service, tracing_subscriber::filter::LevelFilter::TRACE)
    }

    /// [`LogConfig::init`] with one more filter on the log lines (the
    /// worker's drops what a Restate handler logs while it replays its
    /// journal, so each line appears once, not on every replay).
    pub fn init_filtered<F>(&self, service: &'static str, extra: F) -> LogGuard
    where
        F: tracing_subscriber::layer::Filter<
                tracing_subscriber::layer::Layered<
                    tracing_subscriber::EnvFilter,
                    tracing_subscriber::Registry,
                >,
            > + Send
            + Sync
            + 'static,
    {
        use tracing_subscriber::Layer;
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
            .lossy(false)
            .thread_name("log-writer")
            .finish(std::io::stdout());
        let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&self.filter));
        // Whatever the filter asks: these log request URLs at debug level,
        // and GitHub's tarball redirects carry a token in theirs.
        for quiet in SECRET_BEARING_TARGETS {
            if let Ok(directive) = format!("{quiet}=info").parse() {
                filter = filter.add_directive(directive);
            }
        }
        // Colours only on a terminal: log files and collectors get plain text.
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
        let lines = tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_ansi(ansi)
            .with_writer(writer);
        let lines = if self.format == "json" {
            lines.json().with_filter(extra).boxed()
        } else {
            lines.with_filter(extra).boxed()
        };
        let traces = self.otlp_endpoint.as_deref().map(|endpoint| {
            crate::otlp::tracer_provider(endpoint, service, self.otlp_sample_ratio)
        });
        let (traces, traces_failed) = match traces {
            Some(Ok(provider)) => (Some(provider), None),
            Some(Err(e)) => (None, Some(e)),
            None => (None, None),
        };
        let spans = traces.as_ref().map(|provider| {
            use opentelemetry::trace::TracerProvider as _;
            tracing_opentelemetry::layer().with_tracer(provider.tracer(service))
        });
        tracing_subscriber::registry()
            .with(filter)
            .with(lines)
            .with(spans)
            .init();
        if let Some(e) = traces_failed {
            // Telemetry never stops a service: say so, and run without it.
            tracing::error!("traces are not exported: {e}");
        }
        LogGuard {
            _writer: guard,
            traces,
        }
    }
}

/// Libraries whose debug logs would print credentials (URLs with tokens);
/// they never log below info.
pub const SECRET_BEARING_TARGETS: &[&str] = &["octocrab", "tower_http"];

/// Keeps the log writer thread and the span exporter; dropping it writes
/// what is still queued and exports the last spans (bounded by
/// [`crate::otlp::SHUTDOWN_TIMEOUT`]).
#[must_use = "hold it until exit, or the last log lines are lost"]
pub struct LogGuard {
    _writer: tracing_appender::non_blocking::WorkerGuard,
    traces: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.traces.take() {
            crate::otlp::shutdown(&provider);
        }
    }
}

impl std::fmt::Debug for LogGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogGuard")
    }
}

/// A connection URL with its password replaced by `***`, for logs and errors.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            let user = creds.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("mysql://ctrl:secret@db:3306/x"),
            "mysql://ctrl:***@db:3306/x"
        );
        assert_eq!(redact_url("mysql://db/x"), "mysql://db/x");
        let c = DatabaseConfig {
            url: "mysql://ctrl:secret@db/x".into(),
            max_connections: 1,
            connect_timeout_seconds: 1,
        };
        assert!(!format!("{c:?}").contains("secret"));
    }

    #[test]
    fn a_trace_collector_needs_a_plain_grpc_url_and_a_ratio() {
        let mut v = crate::config::Validator::default();
        LogConfig {
            otlp_endpoint: Some("collector:4317".into()),
            otlp_sample_ratio: 1.5,
            ..LogConfig::default()
        }
        .validate(&mut v);
        let problems: Vec<String> = v.problems().iter().map(ToString::to_string).collect();
        assert_eq!(
            problems,
            [
                "`log.otlp_endpoint` must be a http URL, got \"collector:4317\"",
                "`log.otlp_sample_ratio` must be between 0 and 1, got 1.5"
            ]
        );
        let mut v = crate::config::Validator::default();
        LogConfig {
            otlp_endpoint: Some("http://otel-collector:4317".into()),
            ..LogConfig::default()
        }
        .validate(&mut v);
        assert!(v.problems().is_empty());
    }
}

/// The `[vault]` section: keys that seal (ctrl-api) and open (krane)
/// environment variables; the first seals new values.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultConfig {
    /// `{ id, key }` pairs; `key` is base64 of 32 random bytes.
    pub keys: Vec<VaultKey>,
}

impl std::fmt::Debug for VaultConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|k| k.id.as_str()).collect();
        f.debug_struct("VaultConfig")
            .field("key_ids", &ids)
            .finish()
    }
}

/// One vault key.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultKey {
    /// Short id stored with every value it seals.
    pub id: String,
    /// Base64 of 32 random bytes.
    pub key: String,
}

impl std::fmt::Debug for VaultKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultKey")
            .field("id", &self.id)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl VaultConfig {
    /// At least one key, each valid.
    pub fn validate(&self, v: &mut Validator) {
        v.check(
            !self.keys.is_empty(),
            "vault.keys",
            "must list at least one key",
        );
        if !self.keys.is_empty()
            && let Err(e) = self.vault()
        {
            v.check(false, "vault.keys", e.to_string());
        }
    }

    /// The vault these keys describe.
    pub fn vault(&self) -> Result<ctrl_vault::Vault, ctrl_vault::Error> {
        let keys: Vec<ctrl_vault::KeyConfig> = self
            .keys
            .iter()
            .map(|k| ctrl_vault::KeyConfig {
                id: k.id.clone(),
                base64: k.key.clone(),
            })
            .collect();
        ctrl_vault::Vault::new(&keys)
    }
}

/// A secret config value (a key or token): its `Debug` never shows it.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() {
            "<unset>"
        } else {
            "<redacted>"
        })
    }
}

impl Secret {
    /// The value; `None` when empty (a config naming an unset variable).
    pub fn get(&self) -> Option<&str> {
        Some(self.0.trim()).filter(|s| !s.is_empty())
    }
}

/// Default headers for a client of an API behind a key (Restate's
/// `restate.api_key`): `Authorization: Bearer <key>`, marked sensitive so
/// it never shows in debug output; none without a key.
pub fn bearer_headers(
    key: Option<&str>,
) -> Result<axum::http::HeaderMap, axum::http::header::InvalidHeaderValue> {
    let mut headers = axum::http::HeaderMap::new();
    if let Some(key) = key {
        let mut value = axum::http::HeaderValue::from_str(&format!("Bearer {key}"))?;
        value.set_sensitive(true);
        headers.insert(axum::http::header::AUTHORIZATION, value);
    }
    Ok(headers)
}
