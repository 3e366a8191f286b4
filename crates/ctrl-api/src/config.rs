//! ctrl-api's configuration file (TOML; `${VAR}` expanded; overrides from
//! `CTRL_API__SECTION__KEY`). See `deploy/ctrl-api.example.toml`.

use std::net::SocketAddr;

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
    pub auth: AuthConfig,
    /// The database.
    pub database: DatabaseConfig,
    /// Keys sealing environment variables.
    pub vault: VaultConfig,
    /// The Restate server running the worker's services.
    pub restate: RestateConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
}

/// The listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address to listen on (Connect, gRPC and health on one port).
    pub listen: SocketAddr,
    /// Seconds to let in-flight requests finish after SIGTERM.
    pub shutdown_grace_seconds: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7091)),
            shutdown_grace_seconds: 10,
        }
    }
}

/// Bearer tokens.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Accepted tokens; several allow rotation. At least 16 characters each.
    pub tokens: Vec<String>,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("tokens", &format!("<{} redacted>", self.tokens.len()))
            .finish()
    }
}

/// Keys that seal environment variables (the first seals new values).
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

/// The Restate server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestateConfig {
    /// Ingress base URL, e.g. `http://restate:8080`.
    pub ingress_url: String,
    /// Admin API base URL, e.g. `http://restate:9070` (cancelling invocations).
    pub admin_url: String,
}

impl Validate for Config {
    fn validate(&self, v: &mut Validator) {
        v.check(
            !self.auth.tokens.is_empty(),
            "auth.tokens",
            "must list at least one token",
        );
        for (i, t) in self.auth.tokens.iter().enumerate() {
            v.check(
                t.len() >= 16,
                &format!("auth.tokens[{i}]"),
                "must be at least 16 characters",
            );
        }
        self.database.validate(v);
        v.range(
            "http.shutdown_grace_seconds",
            self.http.shutdown_grace_seconds,
            0..=600,
        );
        v.check(
            !self.vault.keys.is_empty(),
            "vault.keys",
            "must list at least one key",
        );
        let keys: Vec<ctrl_vault::KeyConfig> = self
            .vault
            .keys
            .iter()
            .map(|k| ctrl_vault::KeyConfig {
                id: k.id.clone(),
                base64: k.key.clone(),
            })
            .collect();
        if !keys.is_empty()
            && let Err(e) = ctrl_vault::Vault::new(&keys)
        {
            v.check(false, "vault.keys", e.to_string());
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
        let keys: Vec<ctrl_vault::KeyConfig> = self
            .vault
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
