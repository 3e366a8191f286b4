//! What every handler shares.

use std::sync::Arc;
use std::time::SystemTime;

use ctrl_vault::Vault;
use sqlx::MySqlPool;

/// How long a readiness answer is reused.
const READINESS_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// Shared, cheaply cloned handler state.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    shutdown: tokio::sync::watch::Sender<bool>,
    ingress: crate::restate::Ingress,
    admin: crate::restate::Admin,
    db: MySqlPool,
    vault: Vault,
    tokens: ctrl_runtime::auth::BearerTokens,
    custom_domains: crate::config::CustomDomainsConfig,
    build_contexts: Option<ctrl_build::store::ContextStore>,
    webhook_secrets: Vec<zeroize::Zeroizing<String>>,
    metrics: crate::observe::Metrics,
    limits: crate::limits::Limits,
    watch_feeds: crate::watch::Feeds,
    readiness: ctrl_runtime::health::CachedCheck<(axum::http::StatusCode, &'static str)>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("vault", &self.inner.vault)
            .field("tokens", &self.inner.tokens)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// State over a database pool (which also holds the agents'
    /// credentials, for AcmeService), a vault, the accepted bearer tokens
    /// (several, so tokens can rotate) and Restate's ingress and admin API.
    pub fn new(
        db: MySqlPool,
        vault: Vault,
        tokens: &[String],
        restate: (crate::restate::Ingress, crate::restate::Admin),
    ) -> Self {
        let (ingress, admin) = restate;
        let (shutdown, _) = tokio::sync::watch::channel(false);
        Self {
            inner: Arc::new(Inner {
                shutdown,
                ingress,
                admin,
                db,
                vault,
                tokens: ctrl_runtime::auth::BearerTokens::new(tokens),
                custom_domains: crate::config::CustomDomainsConfig::default(),
                build_contexts: None,
                webhook_secrets: Vec::new(),
                metrics: crate::observe::Metrics::default(),
                limits: crate::limits::Limits::new(
                    &crate::limits::LimitsConfig::default(),
                    tokens.len(),
                ),
                watch_feeds: crate::watch::Feeds::default(),
                readiness: ctrl_runtime::health::CachedCheck::new(READINESS_TTL),
            }),
        }
    }

    /// The same state with custom domains configured (call before sharing it).
    pub fn with_custom_domains(mut self, config: crate::config::CustomDomainsConfig) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.custom_domains = config,
            None => tracing::error!("with_custom_domains called on a shared state; ignored"),
        }
        self
    }

    /// The same state with these limits (call before sharing it).
    pub fn with_limits(mut self, config: &crate::limits::LimitsConfig) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.limits = crate::limits::Limits::new(config, inner.tokens.len()),
            None => tracing::error!("with_limits called on a shared state; ignored"),
        }
        self
    }

    /// The same state with uploads of build contexts (call before sharing it).
    pub fn with_build_contexts(mut self, store: ctrl_build::store::ContextStore) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.build_contexts = Some(store),
            None => tracing::error!("with_build_contexts called on a shared state; ignored"),
        }
        self
    }

    /// With the secrets GitHub webhooks are signed with.
    pub fn with_webhook_secrets(mut self, secrets: Vec<String>) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => {
                inner.webhook_secrets = secrets.into_iter().map(Into::into).collect();
            }
            None => tracing::error!("with_webhook_secrets called on a shared state; ignored"),
        }
        self
    }

    /// The secrets GitHub webhooks may be signed with (none: webhooks off).
    pub fn webhook_secrets(&self) -> Vec<&str> {
        self.inner
            .webhook_secrets
            .iter()
            .map(|s| s.as_str())
            .collect()
    }

    /// Where build contexts are uploaded, if the server takes uploads.
    pub fn build_contexts(&self) -> Option<&ctrl_build::store::ContextStore> {
        self.inner.build_contexts.as_ref()
    }

    /// The custom-domain settings.
    pub fn custom_domains(&self) -> &crate::config::CustomDomainsConfig {
        &self.inner.custom_domains
    }

    /// Tells long-lived streams to finish (called when the server starts
    /// draining, so open watches do not hold the process).
    pub fn begin_shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }

    /// Resolves once [`AppState::begin_shutdown`] was called.
    pub fn shutdown_signal(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.inner.shutdown.subscribe();
        async move {
            let _ = rx.wait_for(|stopping| *stopping).await;
        }
    }

    /// The database pool.
    pub fn db(&self) -> &MySqlPool {
        &self.inner.db
    }

    /// Restate's ingress, to start worker invocations.
    pub fn ingress(&self) -> &crate::restate::Ingress {
        &self.inner.ingress
    }

    /// Restate's admin API, to cancel invocations.
    pub fn admin(&self) -> &crate::restate::Admin {
        &self.inner.admin
    }

    /// The vault for environment variables.
    pub fn vault(&self) -> &Vault {
        &self.inner.vault
    }

    /// The API's metrics (shared by the API and operations listeners).
    pub fn metrics(&self) -> &crate::observe::Metrics {
        &self.inner.metrics
    }

    /// The request and stream limits.
    pub fn limits(&self) -> &crate::limits::Limits {
        &self.inner.limits
    }

    /// The deployments' shared watch feeds.
    pub fn watch_feeds(&self) -> &crate::watch::Feeds {
        &self.inner.watch_feeds
    }

    /// The cached readiness check.
    pub fn readiness(
        &self,
    ) -> &ctrl_runtime::health::CachedCheck<(axum::http::StatusCode, &'static str)> {
        &self.inner.readiness
    }

    /// The accepted bearer tokens.
    pub fn tokens(&self) -> &ctrl_runtime::auth::BearerTokens {
        &self.inner.tokens
    }

    /// The current time in unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        ctrl_runtime::now_ms()
    }

    /// The wall clock.
    pub fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}
