//! ctrl-worker's configuration (TOML; `${VAR}` expanded; overrides from
//! `CTRL_WORKER__SECTION__KEY`).

use std::net::{IpAddr, SocketAddr};

use ctrl_core::domains::MAX_APEX_LEN;
use ctrl_runtime::config::{Validate, Validator};
use ctrl_runtime::sections::{DatabaseConfig, LogConfig, VaultConfig};
use serde::Deserialize;

/// The environment prefix for overrides.
pub const ENV_PREFIX: &str = "CTRL_WORKER";

/// Everything ctrl-worker reads at startup. Seed 001's worker file
/// (`unkey.toml`'s shape) loads as it is: its top-level keys and sections
/// are accepted here, the ones naming ctrl settings by another name
/// (`default_domain`, `dashboard_url`, `restate.http_port`) are the same
/// settings, and those for features ctrl does not have are validated and
/// reported at start-up by [`Config::unused`], never silently ignored.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This worker's name in logs (seed 001's `instance_id`); empty: the
    /// host name.
    #[serde(default)]
    pub instance_id: String,
    /// The region this worker runs in, for logs (seed 001's `region`).
    #[serde(default)]
    pub region: String,
    /// Seed 001's `default_domain`: the platform's apex, the same setting as
    /// `deploy.apex_domain` (set either; both set must agree).
    #[serde(default)]
    pub default_domain: Option<String>,
    /// Seed 001's `dashboard_url`, the same setting as
    /// `github.dashboard_url` (set either; both set must agree).
    #[serde(default)]
    pub dashboard_url: Option<String>,
    /// Seed 001's `cname_domain`. Custom domains' CNAME targets are assigned
    /// by ctrl-api (`[custom_domains] cname_domain`); the worker only checks
    /// it is a hostname and reports it unused.
    #[serde(default)]
    pub cname_domain: String,
    /// Seed 001's `[clickhouse]` (analytics): accepted, reported unused.
    #[serde(default)]
    pub clickhouse: ClickHouseSection,
    /// Seed 001's `[heartbeat]` (Checkly URLs): `cert_renewal_url` is
    /// called after each certificate renewal run; the others name jobs ctrl
    /// does not have and are reported unused.
    #[serde(default)]
    pub heartbeat: HeartbeatSection,
    /// Seed 001's `[slack]` (quota notifications): accepted, reported unused.
    #[serde(default)]
    pub slack: SlackSection,
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
    /// Certificates from an ACME CA (off by default).
    #[serde(default)]
    pub acme: AcmeConfig,
    /// Verifying users' custom domains.
    #[serde(default)]
    pub custom_domains: CustomDomainsConfig,
    /// Target platform of image builds (seed 001's `build_platform`).
    #[serde(default = "default_build_platform")]
    pub build_platform: String,
    /// Builds of deployments from source (no backend = they fail with why).
    #[serde(default)]
    pub build: BuildConfig,
    /// Where built images are pushed (seed 001's `[registry]`).
    #[serde(default)]
    pub registry: RegistrySection,
    /// Depot, the `depot` build backend (seed 001's `[depot]`).
    #[serde(default)]
    pub depot: DepotSection,
    /// Uploaded build contexts (the same section as ctrl-api's).
    #[serde(default)]
    pub build_contexts: ctrl_build::store::StoreConfig,
    /// The GitHub App reading repositories (seed 001's `[github]`).
    #[serde(default)]
    pub github: GitHubSection,
    /// Keys sealing the ACME account and certificates' private keys
    /// (required when `acme.enabled`).
    #[serde(default)]
    pub vault: Option<VaultConfig>,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
}

fn default_build_platform() -> String {
    "linux/amd64".into()
}

/// Seed 001's `[clickhouse]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClickHouseSection {
    /// The analytics database.
    pub url: ctrl_runtime::sections::Secret,
    /// Its admin user (provisioning workspace users).
    pub admin_url: ctrl_runtime::sections::Secret,
}

/// Seed 001's `[heartbeat]`: Checkly heartbeat URLs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeartbeatSection {
    /// Called (GET) after each certificate renewal run that succeeded.
    pub cert_renewal_url: ctrl_runtime::sections::Secret,
    /// Unkey's quota check job (ctrl has none).
    pub quota_check_url: ctrl_runtime::sections::Secret,
    /// Unkey's key refill job (ctrl has none).
    pub key_refill_url: ctrl_runtime::sections::Secret,
    /// Unkey's key last-used sync (ctrl has none).
    pub key_last_used_sync_url: ctrl_runtime::sections::Secret,
}

/// Seed 001's `[slack]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlackSection {
    /// Unkey's quota notifications (ctrl has no quotas).
    pub quota_check_webhook_url: ctrl_runtime::sections::Secret,
}

impl Config {
    /// The platform's apex domain (`default_domain` or `deploy.apex_domain`).
    pub fn apex_domain(&self) -> &str {
        self.default_domain
            .as_deref()
            .unwrap_or(&self.deploy.apex_domain)
    }

    /// The dashboard's base URL (`dashboard_url` or `github.dashboard_url`;
    /// empty: none).
    pub fn dashboard_url(&self) -> &str {
        if self.github.dashboard_url.is_empty() {
            self.dashboard_url.as_deref().unwrap_or_default()
        } else {
            &self.github.dashboard_url
        }
    }

    /// This worker's name in logs: `instance_id`, else the host name.
    pub fn instance_id(&self) -> String {
        if !self.instance_id.is_empty() {
            return self.instance_id.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "ctrl-worker".into())
    }

    /// Settings that are set but that ctrl does not use, each with why
    /// (logged as warnings at start-up).
    pub fn unused(&self) -> Vec<String> {
        let mut unused = Vec::new();
        if !self.cname_domain.is_empty() {
            unused.push("cname_domain: custom domains' CNAME targets are assigned by ctrl-api ([custom_domains] cname_domain in its config)".to_owned());
        }
        for (field, value) in [
            ("clickhouse.url", &self.clickhouse.url),
            ("clickhouse.admin_url", &self.clickhouse.admin_url),
        ] {
            if value.get().is_some() {
                unused.push(format!("{field}: ctrl keeps no analytics in ClickHouse"));
            }
        }
        for (field, value) in [
            ("heartbeat.quota_check_url", &self.heartbeat.quota_check_url),
            ("heartbeat.key_refill_url", &self.heartbeat.key_refill_url),
            (
                "heartbeat.key_last_used_sync_url",
                &self.heartbeat.key_last_used_sync_url,
            ),
        ] {
            if value.get().is_some() {
                unused.push(format!("{field}: ctrl has no such job"));
            }
        }
        if self.slack.quota_check_webhook_url.get().is_some() {
            unused.push("slack.quota_check_webhook_url: ctrl has no quotas".to_owned());
        }
        unused
    }
}

/// The `[build]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BuildConfig {
    /// `docker` (a Docker Engine API: Docker or podman), `depot` (Depot's
    /// BuildKit machines, `[depot]`) or empty (builds off).
    pub backend: String,
    /// The engine's unix socket (`docker` backend).
    pub docker_socket: String,
    /// A build (with its push) taking longer fails.
    pub timeout_seconds: u64,
    /// Builds of one workspace running at once; more wait in line
    /// (production first, then oldest first).
    pub slots_per_workspace: u32,
    /// A build waiting longer than this for a slot fails.
    pub queue_timeout_seconds: u64,
    /// Largest unpacked build context.
    pub max_context_bytes: u64,
    /// Output lines kept per build (the rest is counted, not kept).
    pub max_log_lines: u32,
    /// Attempts of a build failing for a transient reason (engine or
    /// registry unreachable) before the deployment fails.
    pub attempts: u32,
}

impl Default for BuildConfig {
    fn default() -> Self {
        Self {
            backend: String::new(),
            docker_socket: "/run/podman/podman.sock".into(),
            timeout_seconds: 30 * 60,
            slots_per_workspace: 2,
            queue_timeout_seconds: 3600,
            max_context_bytes: 2 << 30,
            max_log_lines: 10_000,
            attempts: 3,
        }
    }
}

/// The `[depot]` section.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DepotSection {
    /// Depot's API.
    pub api_url: String,
    /// The organization token; never logged.
    pub token: String,
    /// Region of the Depot projects created (one per ctrl project).
    pub project_region: String,
    /// Prefix of their names: `{project_prefix}-{ctrl project id}`.
    pub project_prefix: String,
    /// Build cache a project keeps, in GiB.
    pub cache_keep_gib: u64,
    /// Days a project keeps its build cache.
    pub cache_keep_days: u32,
    /// Bound on each API call.
    pub request_timeout_seconds: u64,
}

impl Default for DepotSection {
    fn default() -> Self {
        Self {
            api_url: "https://api.depot.dev".into(),
            token: String::new(),
            project_region: "us-east-1".into(),
            project_prefix: "ctrl".into(),
            cache_keep_gib: 50,
            cache_keep_days: 14,
            request_timeout_seconds: 30,
        }
    }
}

impl std::fmt::Debug for DepotSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DepotSection")
            .field("api_url", &self.api_url)
            .field("token", &"<redacted>")
            .field("project_region", &self.project_region)
            .field("project_prefix", &self.project_prefix)
            .finish_non_exhaustive()
    }
}

/// The `[registry]` section.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrySection {
    /// `https://ghcr.io`, `http://127.0.0.1:5000`, … (where the worker asks
    /// for digests).
    pub url: String,
    /// The registry's name in image references when engines reach it under
    /// another name than `url` (e.g. `127.0.0.1:5051`); empty = `url`'s host.
    pub image_host: String,
    /// Path prefix of ctrl's repositories in it.
    pub repository: String,
    /// Empty = anonymous.
    pub username: String,
    /// Password or token; never logged.
    pub password: String,
}

impl RegistrySection {
    /// `url` with its scheme: a bare host (seed 001's form, e.g.
    /// "registry.depot.dev") is reached over HTTPS.
    pub fn base_url(&self) -> String {
        if self.url.contains("://") {
            self.url.clone()
        } else {
            format!("https://{}", self.url)
        }
    }
}

impl Default for RegistrySection {
    fn default() -> Self {
        Self {
            url: String::new(),
            image_host: String::new(),
            repository: "ctrl".into(),
            username: String::new(),
            password: String::new(),
        }
    }
}

impl std::fmt::Debug for RegistrySection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrySection")
            .field("url", &self.url)
            .field("image_host", &self.image_host)
            .field("repository", &self.repository)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The `[github]` section.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GitHubSection {
    /// The GitHub App's id (0 = no app: public repositories only).
    pub app_id: u64,
    /// The app's private key (PEM); never logged.
    pub private_key_pem: String,
    /// Build public repositories without an installation.
    pub allow_unauthenticated_deployments: bool,
    /// GitHub's REST API.
    pub api_url: String,
    /// Bound on each request.
    pub request_timeout_seconds: u64,
    /// Largest repository tarball downloaded.
    pub max_tarball_bytes: u64,
    /// The dashboard (seed 001's `dashboard_url`): GitHub statuses link to
    /// `{dashboard_url}/deployments/{id}`; empty = no log links.
    pub dashboard_url: String,
}

impl Default for GitHubSection {
    fn default() -> Self {
        Self {
            app_id: 0,
            private_key_pem: String::new(),
            allow_unauthenticated_deployments: false,
            api_url: "https://api.github.com".into(),
            request_timeout_seconds: 30,
            max_tarball_bytes: 512 << 20,
            dashboard_url: String::new(),
        }
    }
}

impl std::fmt::Debug for GitHubSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHubSection")
            .field("app_id", &self.app_id)
            .field("private_key_pem", &"<redacted>")
            .field(
                "allow_unauthenticated_deployments",
                &self.allow_unauthenticated_deployments,
            )
            .field("api_url", &self.api_url)
            .finish_non_exhaustive()
    }
}

/// The `[acme]` section (seed 001's names, plus the directory and CA bundle
/// for private CAs).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AcmeConfig {
    /// Issue certificates at all.
    pub enabled: bool,
    /// The account's contact is `acme@{email_domain}`.
    pub email_domain: String,
    /// `letsencrypt`, `letsencrypt-staging`, or a directory URL (pebble's in tests).
    pub directory: String,
    /// A PEM file of roots to trust for the directory's HTTPS (a private CA); empty = system roots.
    pub ca_bundle: String,
    /// Bound on each request to the CA.
    pub request_timeout_seconds: u64,
    /// How long the CA may take to validate a challenge before the step is retried.
    pub validation_timeout_seconds: u64,
    /// Renew certificates expiring within this many days.
    pub renew_before_days: u64,
    /// How often the renewal job looks for certificates due.
    pub renewal_interval_seconds: u64,
    /// Renewals found together start this far apart (spreads load on the CA).
    pub renewal_spacing_seconds: u64,
    /// Attempts of an ACME step failing transiently (unreachable CA, 5xx,
    /// timeouts; backing off from 1 s to 30 s) before the order fails.
    pub step_attempts: u32,
    /// The renewal job tries a failed order again after this long.
    pub retry_failed_after_seconds: u64,
    /// DNS-01 through Route53 (wildcards, the platform's `*.{apex}`).
    pub route53: Route53Section,
}

impl Default for AcmeConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            email_domain: String::new(),
            directory: "letsencrypt".into(),
            ca_bundle: String::new(),
            request_timeout_seconds: 30,
            validation_timeout_seconds: 90,
            renew_before_days: 30,
            renewal_interval_seconds: 3600,
            renewal_spacing_seconds: 10,
            step_attempts: 12,
            retry_failed_after_seconds: 3600,
            route53: Route53Section::default(),
        }
    }
}

/// The `[acme.route53]` section.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Route53Section {
    /// Use Route53 for DNS-01.
    pub enabled: bool,
    /// IAM access key id.
    pub access_key_id: String,
    /// IAM secret; never logged.
    pub secret_access_key: String,
    /// The API's region.
    pub region: String,
    /// The zone to write to; empty = find it by name.
    pub hosted_zone_id: String,
    /// Another Route53 endpoint (tests: moto); empty = AWS.
    pub endpoint: String,
}

impl Default for Route53Section {
    fn default() -> Self {
        Self {
            enabled: false,
            access_key_id: String::new(),
            secret_access_key: String::new(),
            region: "us-east-1".into(),
            hosted_zone_id: String::new(),
            endpoint: String::new(),
        }
    }
}

impl std::fmt::Debug for Route53Section {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route53Section")
            .field("enabled", &self.enabled)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("region", &self.region)
            .field("hosted_zone_id", &self.hosted_zone_id)
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

/// The `[custom_domains]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CustomDomainsConfig {
    /// Resolvers asked for users' records (no cache).
    pub nameservers: Vec<SocketAddr>,
    /// Time between two checks of a domain not verified yet.
    pub check_interval_seconds: u64,
    /// Give up verifying after this long.
    pub give_up_after_seconds: u64,
    /// Check a verified domain's records again this often (a removed or
    /// changed record shows on the domain; it stays routed).
    pub recheck_interval_seconds: u64,
    /// The edge's public addresses an apex domain must point at (empty: any).
    pub apex_addresses: Vec<IpAddr>,
}

impl Default for CustomDomainsConfig {
    fn default() -> Self {
        Self {
            nameservers: vec![
                SocketAddr::from(([1, 1, 1, 1], 53)),
                SocketAddr::from(([8, 8, 8, 8], 53)),
            ],
            check_interval_seconds: 60,
            give_up_after_seconds: 24 * 3600,
            recheck_interval_seconds: 3600,
            apex_addresses: Vec::new(),
        }
    }
}

/// The Restate side.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestateConfig {
    /// Where this worker serves the Restate protocol (h2c).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Seed 001's `http_port`: the port of `listen` on every interface
    /// (set this or `listen`).
    #[serde(default)]
    pub http_port: Option<u16>,
    /// Restate's admin API, for self-registration.
    #[serde(default = "default_admin_url")]
    pub admin_url: String,
    /// The URL Restate uses to reach this worker; empty = do not register
    /// (registration happens elsewhere, e.g. in Kubernetes).
    #[serde(default)]
    pub register_as: String,
    /// Registration attempts before giving up (one per second, backing off to 5 s).
    #[serde(default = "default_register_attempts")]
    pub register_attempts: u32,
    /// Restate's ingress, for the jobs the worker starts itself (certificate
    /// renewal and the platform's wildcard).
    #[serde(default = "default_ingress")]
    pub ingress_url: String,
    /// Public keys of the Restate server's request identity
    /// (`publickeyv1_…`, from its `request-identity-private-key-pem-file`):
    /// when any is set, requests not signed by one of them are refused
    /// (401), so only Restate can invoke the worker. Empty entries are
    /// skipped (a config can name an unset variable); none = unsigned
    /// requests are accepted, with a warning at start.
    #[serde(default)]
    pub identity_keys: Vec<String>,
    /// Sent as `Authorization: Bearer` to Restate's admin API (a managed
    /// Restate, or a proxy guarding it); empty = none.
    #[serde(default)]
    pub api_key: ctrl_runtime::sections::Secret,
}

impl RestateConfig {
    /// Where to serve the Restate protocol: `listen` when set (with
    /// `http_port`, their ports agree), else `http_port` on every interface
    /// (seed 001's meaning), else the default loopback address.
    pub fn listen_addr(&self) -> SocketAddr {
        match self.http_port {
            Some(port) if self.listen == default_listen() => SocketAddr::from(([0, 0, 0, 0], port)),
            _ => self.listen,
        }
    }

    /// The configured identity keys (empty entries skipped).
    pub fn identity_keys(&self) -> impl Iterator<Item = &str> {
        self.identity_keys
            .iter()
            .map(|k| k.trim())
            .filter(|k| !k.is_empty())
    }
}

fn default_ingress() -> String {
    "http://127.0.0.1:8080".into()
}

fn default_admin_url() -> String {
    "http://restate:9070".into()
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
        for (i, key) in self.restate.identity_keys.iter().enumerate() {
            v.check(
                key.trim().is_empty() || crate::identity::is_valid_key(key.trim()),
                &format!("restate.identity_keys[{i}]"),
                "must be a request identity public key, \"publickeyv1_\" and the base58 of 32 bytes",
            );
        }
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
        let apex_field = if self.default_domain.is_some() {
            "default_domain"
        } else {
            "deploy.apex_domain"
        };
        v.check(
            ctrl_core::names::is_hostname(self.apex_domain())
                && self.apex_domain().len() <= MAX_APEX_LEN,
            apex_field,
            format!(
                "must be a lowercase hostname of at most {MAX_APEX_LEN} characters, e.g. \"ctrl.example.com\""
            ),
        );
        self.validate_seed_settings(v);
        v.url(
            "restate.ingress_url",
            &self.restate.ingress_url,
            &["http", "https"],
        );
        let a = &self.acme;
        if a.enabled {
            v.check(
                ctrl_core::names::is_hostname(&a.email_domain),
                "acme.email_domain",
                "must be a hostname (the account's contact is acme@{email_domain})",
            );
            let dir = ctrl_acme::acme::directory_url(&a.directory);
            v.url("acme.directory", dir, &["https", "http"]);
            v.check(
                a.ca_bundle.is_empty() || std::path::Path::new(&a.ca_bundle).is_file(),
                "acme.ca_bundle",
                format!("{:?} is not a readable file", a.ca_bundle),
            );
            v.range(
                "acme.request_timeout_seconds",
                a.request_timeout_seconds,
                1..=300,
            );
            v.range(
                "acme.validation_timeout_seconds",
                a.validation_timeout_seconds,
                1..=3600,
            );
            v.range("acme.renew_before_days", a.renew_before_days, 1..=89);
            v.range(
                "acme.renewal_interval_seconds",
                a.renewal_interval_seconds,
                1..=7 * 86_400,
            );
            v.range(
                "acme.renewal_spacing_seconds",
                a.renewal_spacing_seconds,
                0..=3600,
            );
            v.range("acme.step_attempts", a.step_attempts, 1..=100);
            v.range(
                "acme.retry_failed_after_seconds",
                a.retry_failed_after_seconds,
                1..=30 * 86_400,
            );
            v.check(
                self.vault.is_some(),
                "vault",
                "acme.enabled needs [vault] keys to seal the account and private keys",
            );
        }
        if a.route53.enabled {
            v.check(
                !a.route53.access_key_id.is_empty(),
                "acme.route53.access_key_id",
                "is required when acme.route53.enabled",
            );
            v.check(
                !a.route53.secret_access_key.is_empty(),
                "acme.route53.secret_access_key",
                "is required when acme.route53.enabled",
            );
            v.check(
                !a.route53.region.is_empty(),
                "acme.route53.region",
                "must name an AWS region, e.g. \"us-east-1\"",
            );
            if !a.route53.endpoint.is_empty() {
                v.url(
                    "acme.route53.endpoint",
                    &a.route53.endpoint,
                    &["http", "https"],
                );
            }
        }
        if let Some(vault) = &self.vault {
            vault.validate(v);
        }
        let d = &self.custom_domains;
        v.check(
            !d.nameservers.is_empty(),
            "custom_domains.nameservers",
            "must list at least one resolver, e.g. [\"1.1.1.1:53\"]",
        );
        v.range(
            "custom_domains.check_interval_seconds",
            d.check_interval_seconds,
            1..=3600,
        );
        v.range(
            "custom_domains.recheck_interval_seconds",
            d.recheck_interval_seconds,
            1..=7 * 86_400,
        );
        v.range(
            "custom_domains.give_up_after_seconds",
            d.give_up_after_seconds,
            1..=30 * 86_400,
        );
        self.validate_builds(v);
        self.log.validate(v);
    }
}

impl Config {
    /// Seed 001's names for ctrl settings must agree with ctrl's own; its
    /// sections for features ctrl lacks must still be well-formed.
    fn validate_seed_settings(&self, v: &mut Validator) {
        if let Some(domain) = &self.default_domain {
            let deploy = &self.deploy.apex_domain;
            v.check(
                *deploy == DeployConfig::default().apex_domain || deploy == domain,
                "default_domain",
                format!("is the same setting as deploy.apex_domain ({deploy:?}): set one of them"),
            );
        }
        if let Some(url) = &self.dashboard_url {
            let github = &self.github.dashboard_url;
            v.check(
                github.is_empty() || github == url,
                "dashboard_url",
                format!(
                    "is the same setting as github.dashboard_url ({github:?}): set one of them"
                ),
            );
        }
        if !self.dashboard_url().is_empty() {
            v.url("dashboard_url", self.dashboard_url(), &["http", "https"]);
        }
        if let Some(port) = self.restate.http_port {
            v.check(port > 0, "restate.http_port", "must be 1 to 65535");
            v.check(
                self.restate.listen == default_listen() || self.restate.listen.port() == port,
                "restate.http_port",
                format!(
                    "is the port of restate.listen ({}): set one of them",
                    self.restate.listen
                ),
            );
        }
        if !self.cname_domain.is_empty() {
            v.check(
                ctrl_core::names::is_hostname(&self.cname_domain),
                "cname_domain",
                "must be a lowercase hostname, e.g. \"edge.example.com\"",
            );
        }
        for (field, url, schemes) in [
            (
                "clickhouse.url",
                &self.clickhouse.url,
                &["http", "https", "clickhouse", "tcp"][..],
            ),
            (
                "clickhouse.admin_url",
                &self.clickhouse.admin_url,
                &["http", "https", "clickhouse", "tcp"][..],
            ),
            (
                "heartbeat.cert_renewal_url",
                &self.heartbeat.cert_renewal_url,
                &["http", "https"][..],
            ),
            (
                "heartbeat.quota_check_url",
                &self.heartbeat.quota_check_url,
                &["http", "https"][..],
            ),
            (
                "heartbeat.key_refill_url",
                &self.heartbeat.key_refill_url,
                &["http", "https"][..],
            ),
            (
                "heartbeat.key_last_used_sync_url",
                &self.heartbeat.key_last_used_sync_url,
                &["http", "https"][..],
            ),
            (
                "slack.quota_check_webhook_url",
                &self.slack.quota_check_webhook_url,
                &["https"][..],
            ),
        ] {
            if let Some(url) = url.get() {
                v.secret_url(field, url, schemes);
            }
        }
    }

    fn validate_builds(&self, v: &mut Validator) {
        let b = &self.build;
        v.check(
            matches!(b.backend.as_str(), "" | "docker" | "depot"),
            "build.backend",
            "must be \"docker\", \"depot\" or empty (builds off)",
        );
        v.check(
            matches!(
                self.build_platform.as_str(),
                "linux/amd64"
                    | "linux/arm64"
                    | "linux/arm/v7"
                    | "linux/386"
                    | "linux/ppc64le"
                    | "linux/s390x"
            ),
            "build_platform",
            "must be a linux platform, e.g. \"linux/amd64\" or \"linux/arm64\"",
        );
        if !b.backend.is_empty() {
            v.nonempty("registry.url", &self.registry.url);
        }
        if b.backend == "docker" {
            v.nonempty("build.docker_socket", &b.docker_socket);
        }
        if b.backend == "depot" {
            let d = &self.depot;
            v.url("depot.api_url", &d.api_url, &["http", "https"]);
            v.nonempty("depot.token", &d.token);
            v.check(
                !d.project_region.trim().is_empty(),
                "depot.project_region",
                "must name a Depot region, e.g. \"us-east-1\"",
            );
            v.check(
                !d.project_prefix.is_empty()
                    && d.project_prefix.len() <= 40
                    && d.project_prefix
                        .bytes()
                        .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'),
                "depot.project_prefix",
                "must be 1 to 40 letters, digits, \"-\" or \"_\"",
            );
            v.range("depot.cache_keep_gib", d.cache_keep_gib, 1..=10_000);
            v.range("depot.cache_keep_days", d.cache_keep_days, 1..=365);
            v.range(
                "depot.request_timeout_seconds",
                d.request_timeout_seconds,
                1..=600,
            );
            v.check(
                self.build_contexts.enabled(),
                "build_contexts",
                "the depot backend shares build contexts with Depot's machines through [build_contexts] (S3): configure it",
            );
        }
        v.range("build.timeout_seconds", b.timeout_seconds, 10..=6 * 3600);
        v.range("build.slots_per_workspace", b.slots_per_workspace, 1..=100);
        v.range(
            "build.queue_timeout_seconds",
            b.queue_timeout_seconds,
            1..=24 * 3600,
        );
        v.range(
            "build.max_context_bytes",
            b.max_context_bytes,
            1 << 10..=64 << 30,
        );
        v.range("build.max_log_lines", b.max_log_lines, 100..=1_000_000);
        v.range("build.attempts", b.attempts, 1..=20);
        if !self.registry.url.is_empty() {
            v.url(
                "registry.url",
                &self.registry.base_url(),
                &["http", "https"],
            );
        }
        for (field, problem) in self.build_contexts.problems() {
            v.check(false, field, problem);
        }
        let g = &self.github;
        v.url("github.api_url", &g.api_url, &["http", "https"]);
        v.check(
            (g.app_id == 0) == g.private_key_pem.trim().is_empty(),
            "github.private_key_pem",
            "github.app_id and github.private_key_pem go together",
        );
        v.range(
            "github.request_timeout_seconds",
            g.request_timeout_seconds,
            1..=600,
        );
        if !g.dashboard_url.is_empty() {
            v.url("github.dashboard_url", &g.dashboard_url, &["http", "https"]);
        }
        v.range(
            "github.max_tarball_bytes",
            g.max_tarball_bytes,
            1 << 10..=64 << 30,
        );
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn parse(text: &str) -> Result<Config, ctrl_runtime::config::ConfigError> {
        let env = HashMap::from([
            ("CTRL_DB_PASSWORD".to_owned(), "secret".to_owned()),
            (
                "RESTATE_IDENTITY_KEY".to_owned(),
                "publickeyv1_3Jmacxu8C8DuVHbJAcjdy4uA39MkGarZDvFzPQpY3Sti".to_owned(),
            ),
            (
                "CTRL_REGISTRY_PASSWORD".to_owned(),
                "registry-secret-value".to_owned(),
            ),
            ("CTRL_S3_ACCESS_KEY".to_owned(), "AKIDEXAMPLE".to_owned()),
            (
                "CTRL_S3_SECRET_KEY".to_owned(),
                "s3-secret-value".to_owned(),
            ),
            (
                "CTRL_GITHUB_APP_KEY".to_owned(),
                "-----BEGIN RSA PRIVATE KEY-----\nx\n".to_owned(),
            ),
        ]);
        ctrl_runtime::config::parse(text, "test", &env, ENV_PREFIX)
    }

    /// A worker file shaped like seed 001's (`unkey.toml`): every top-level
    /// key and section it names.
    const SEED_SHAPED: &str = r#"
instance_id = "worker-use1-1"
region = "us-east-1"
default_domain = "apps.example.com"
dashboard_url = "https://dashboard.example.com"
build_platform = "linux/arm64"
cname_domain = "edge.example.com"

[database]
url = "mysql://ctrl:${CTRL_DB_PASSWORD}@mysql:3306/ctrl"

[vault]
keys = [{ id = "k1", key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=" }]

[acme]
enabled = false
email_domain = "example.com"

[acme.route53]
enabled = false
access_key_id = ""
secret_access_key = ""
region = "us-east-1"
hosted_zone_id = ""

[restate]
api_key = ""
http_port = 9080
register_as = "http://worker:9080"

[depot]
api_url = "https://api.depot.dev"
project_region = "us-east-1"

[registry]
url = "registry.depot.dev"
username = "x-token"
password = "${CTRL_REGISTRY_PASSWORD}"

[clickhouse]
url = "clickhouse://default:ch-secret-pw@clickhouse:9000"
admin_url = "clickhouse://admin:ch-admin-pw@clickhouse:9000"

[github]
app_id = 12345
private_key_pem = "${CTRL_GITHUB_APP_KEY}"
allow_unauthenticated_deployments = false

[heartbeat]
cert_renewal_url = "https://ping.checklyhq.com/cert-secret"
quota_check_url = "https://ping.checklyhq.com/quota-secret"
key_refill_url = ""
key_last_used_sync_url = ""

[slack]
quota_check_webhook_url = "https://hooks.slack.com/services/slack-secret"
"#;

    #[test]
    fn a_seed_shaped_file_loads_and_says_what_ctrl_does_not_use() {
        let c = parse(SEED_SHAPED).expect("the seed-shaped file loads");
        // Seed names for ctrl settings are those settings.
        assert_eq!(c.apex_domain(), "apps.example.com");
        assert_eq!(c.dashboard_url(), "https://dashboard.example.com");
        assert_eq!(c.restate.listen_addr().to_string(), "0.0.0.0:9080");
        assert_eq!(
            c.restate.admin_url, "http://restate:9070",
            "seed 001's default"
        );
        assert_eq!(c.instance_id(), "worker-use1-1");
        assert_eq!(c.region, "us-east-1");
        assert_eq!(c.build_platform, "linux/arm64");
        // Features ctrl does not have are reported, each with why; the
        // renewal heartbeat is used, so it is not.
        let unused = c.unused();
        let fields: Vec<&str> = unused
            .iter()
            .map(|u| u.split(':').next().unwrap_or_default())
            .collect();
        assert_eq!(
            fields,
            [
                "cname_domain",
                "clickhouse.url",
                "clickhouse.admin_url",
                "heartbeat.quota_check_url",
                "slack.quota_check_webhook_url"
            ],
            "{unused:?}"
        );
        // Credentials in those URLs never show.
        let shown = format!("{c:?} {unused:?}");
        for secret in [
            "ch-secret-pw",
            "ch-admin-pw",
            "cert-secret",
            "quota-secret",
            "slack-secret",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        // Without them, nothing is reported and the defaults hold.
        let plain = parse(
            "[restate]\nadmin_url = \"http://r:9070\"\n[database]\nurl = \"mysql://u@h/db\"\n",
        )
        .expect("minimal");
        assert!(plain.unused().is_empty());
        assert_eq!(plain.apex_domain(), "ctrl.localhost");
        assert_eq!(plain.restate.listen_addr().to_string(), "127.0.0.1:9080");
    }

    #[test]
    fn seed_names_and_ctrl_names_of_one_setting_must_agree() {
        for (edit, field) in [
            (
                (
                    "[slack]",
                    "[deploy]\napex_domain = \"other.example.com\"\n[slack]",
                ),
                "default_domain",
            ),
            (
                // Both names with the same value agree.
                (
                    "allow_unauthenticated_deployments = false",
                    "allow_unauthenticated_deployments = false\ndashboard_url = \"https://dashboard.example.com\"",
                ),
                "",
            ),
            (
                (
                    "http_port = 9080",
                    "http_port = 9080\nlisten = \"127.0.0.1:9090\"",
                ),
                "restate.http_port",
            ),
            (
                (
                    "default_domain = \"apps.example.com\"",
                    "default_domain = \"Apps_Example\"",
                ),
                "default_domain",
            ),
            (
                (
                    "cname_domain = \"edge.example.com\"",
                    "cname_domain = \"not a host\"",
                ),
                "cname_domain",
            ),
            (
                (
                    "url = \"clickhouse://default:ch-secret-pw@clickhouse:9000\"",
                    "url = \"ftp://ch-secret-pw\"",
                ),
                "clickhouse.url",
            ),
            (
                (
                    "quota_check_webhook_url = \"https://hooks.slack.com/services/slack-secret\"",
                    "quota_check_webhook_url = \"slack-secret\"",
                ),
                "slack.quota_check_webhook_url",
            ),
        ] {
            let text = SEED_SHAPED.replacen(edit.0, edit.1, 1);
            assert_ne!(text, SEED_SHAPED, "{edit:?}");
            let result = parse(&text);
            if field.is_empty() {
                assert!(result.is_ok(), "{edit:?}: {result:?}");
                continue;
            }
            let err = result.expect_err(field).to_string();
            assert!(err.contains(field), "{field}: {err}");
            for secret in ["ch-secret-pw", "slack-secret"] {
                assert!(!err.contains(secret), "{secret} in {err}");
            }
        }
        let both = SEED_SHAPED.replacen(
            "allow_unauthenticated_deployments = false",
            "allow_unauthenticated_deployments = false\ndashboard_url = \"https://other.example.com\"",
            1,
        );
        let err = parse(&both).expect_err("two dashboards").to_string();
        assert!(err.contains("dashboard_url"), "{err}");
    }

    #[test]
    fn the_example_configuration_is_valid() {
        let text = include_str!("../../../deploy/ctrl-worker.example.toml");
        let config = parse(text).expect("example parses");
        assert_eq!(config.deploy.apex_domain, "ctrl.example.com");
        assert_eq!(config.restate.identity_keys().count(), 1);
        let bad = text.replace("${RESTATE_IDENTITY_KEY}", "publickeyv1_short");
        let err = parse(&bad).unwrap_err().to_string();
        assert!(err.contains("restate.identity_keys[0]"), "{err}");
        assert_eq!(config.deploy.retire_previous_live_seconds, 1800);
        assert_eq!(config.build.backend, "docker");
        assert_eq!(config.build_platform, "linux/amd64");
        let shown = format!("{config:?}");
        for secret in ["registry-secret-value", "s3-secret-value", "BEGIN RSA"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
    }

    #[test]
    fn build_fields_are_named() {
        let base =
            "[restate]\nadmin_url = \"http://r:9070\"\n[database]\nurl = \"mysql://u@h/db\"\n";
        let err = parse(&format!(
            "build_platform = \"windows/amd64\"\n{base}[build]\nbackend = \"kaniko\"\nslots_per_workspace = 0\n[github]\napp_id = 5\n"
        ))
        .expect_err("invalid")
        .to_string();
        for field in [
            "build_platform",
            "build.backend",
            "build.slots_per_workspace",
            "github.private_key_pem",
        ] {
            assert!(err.contains(field), "{field} not named: {err}");
        }
        let err = parse(&format!("{base}[build]\nbackend = \"docker\"\n"))
            .expect_err("no registry")
            .to_string();
        assert!(err.contains("registry.url"), "{err}");
    }

    #[test]
    fn the_depot_backend_needs_its_token_and_the_context_store_and_hides_the_token() {
        let base = "[restate]\nadmin_url = \"http://r:9070\"\n[database]\nurl = \"mysql://u@h/db\"\n[registry]\nurl = \"https://ghcr.io\"\n[build]\nbackend = \"depot\"\n";
        let err = parse(&format!(
            "{base}[depot]\nproject_prefix = \"a b\"\nproject_region = \"\"\n"
        ))
        .expect_err("invalid")
        .to_string();
        for field in [
            "depot.token",
            "depot.project_prefix",
            "depot.project_region",
            "build_contexts",
        ] {
            assert!(err.contains(field), "{field} not named: {err}");
        }
        let ok = parse(&format!(
            "{base}[depot]\ntoken = \"depot-org-token-value\"\n[build_contexts]\nbucket = \"ctx\"\naccess_key_id = \"AKID\"\nsecret_access_key = \"s3-secret-value\"\n"
        ))
        .expect("valid");
        assert_eq!(ok.depot.api_url, "https://api.depot.dev");
        assert_eq!(ok.depot.project_region, "us-east-1");
        let shown = format!("{ok:?}");
        assert!(!shown.contains("depot-org-token-value"), "{shown}");
    }

    #[test]
    fn a_bad_apex_domain_is_named() {
        let text = "[restate]\nadmin_url = \"http://r:9070\"\n[database]\nurl = \"mysql://u@h/db\"\n[deploy]\napex_domain = \"Not A Host\"\n";
        let err = parse(text).expect_err("invalid apex").to_string();
        assert!(err.contains("deploy.apex_domain"), "{err}");
    }

    #[test]
    fn acme_fields_are_named_and_the_route53_secret_is_redacted() {
        let base =
            "[restate]\nadmin_url = \"http://r:9070\"\n[database]\nurl = \"mysql://u@h/db\"\n";
        let err = parse(&format!(
            "{base}[acme]\nenabled = true\nemail_domain = \"x y\"\n"
        ))
        .expect_err("invalid")
        .to_string();
        assert!(err.contains("acme.email_domain"), "{err}");
        assert!(err.contains("vault"), "{err}");
        let err = parse(&format!(
            "{base}[acme.route53]\nenabled = true\nsecret_access_key = \"topsecret-value\"\n"
        ))
        .expect_err("no key id")
        .to_string();
        assert!(err.contains("acme.route53.access_key_id"), "{err}");
        assert!(!err.contains("topsecret-value"), "{err}");
        let ok = parse(&format!(
            "{base}[acme.route53]\nenabled = true\naccess_key_id = \"AKID\"\nsecret_access_key = \"topsecret-value\"\n"
        ))
        .expect("valid");
        assert!(!format!("{ok:?}").contains("topsecret-value"));
        let err = parse(&format!("{base}[custom_domains]\nnameservers = []\n"))
            .expect_err("no resolver")
            .to_string();
        assert!(err.contains("custom_domains.nameservers"), "{err}");
    }
}
