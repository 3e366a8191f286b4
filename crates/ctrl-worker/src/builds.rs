//! What the Deploy pipeline's building phase works with, made once from
//! the configuration: the build backend (a `ctrl_build::builder::Builder`),
//! the registry it pushes to, the store of uploaded contexts, the GitHub
//! client, and the limits.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use ctrl_build::builder::{Builder, ImageName};
use ctrl_build::context::Limits;
use ctrl_build::registry::{Registry, RegistryConfig};
use ctrl_build::store::ContextStore;
use ctrl_github::{GitHub, GitHubConfig};

use crate::config::Config;

/// The limits and timings of builds.
#[derive(Debug, Clone)]
pub struct BuildSettings {
    /// `build_platform`.
    pub platform: String,
    /// One build (with its push).
    pub timeout: Duration,
    /// Running builds per workspace.
    pub slots_per_workspace: u32,
    /// Longest wait for a slot.
    pub queue_timeout: Duration,
    /// Unpacked context bounds.
    pub limits: Limits,
    /// Output lines kept per build.
    pub max_log_lines: u32,
    /// Attempts of a transiently failing build.
    pub attempts: u32,
}

/// Everything builds need.
#[derive(Debug, Clone)]
pub struct Builds {
    /// The backend; `None` when `[build] backend` is empty.
    pub builder: Option<Arc<dyn Builder>>,
    /// Where images go (present with a backend).
    pub registry: Option<Registry>,
    /// Uploaded contexts; `None` without `[build_contexts]`.
    pub store: Option<ContextStore>,
    /// Reads repositories.
    pub github: GitHub,
    /// Opens the variables a build receives as secrets (`[vault]`).
    pub vault: Option<ctrl_vault::Vault>,
    /// Limits and timings.
    pub settings: BuildSettings,
}

impl Builds {
    /// Builds from the (validated) configuration.
    pub async fn from_config(config: &Config) -> Result<Self> {
        let b = &config.build;
        let timeout = Duration::from_secs(b.timeout_seconds);
        let (builder, registry) = if b.backend.is_empty() {
            (None, None)
        } else {
            let registry = Registry::new(RegistryConfig {
                url: config.registry.base_url(),
                image_host: config.registry.image_host.clone(),
                repository: config.registry.repository.clone(),
                username: config.registry.username.clone(),
                password: config.registry.password.clone().into(),
                request_timeout: Duration::from_secs(30),
            })
            .map_err(anyhow::Error::msg)?;
            let builder: Arc<dyn Builder> = if b.backend == "depot" {
                let store = ContextStore::new(&config.build_contexts);
                let d = &config.depot;
                Arc::new(
                    ctrl_build::depot::DepotBuilder::new(
                        ctrl_build::depot::DepotConfig {
                            api_url: d.api_url.clone(),
                            token: d.token.clone().into(),
                            project_region: d.project_region.clone(),
                            project_prefix: d.project_prefix.clone(),
                            cache_keep_bytes: d.cache_keep_gib << 30,
                            cache_keep_days: d.cache_keep_days,
                            request_timeout: Duration::from_secs(d.request_timeout_seconds),
                            build_timeout: timeout,
                        },
                        registry.clone(),
                        store,
                    )
                    .map_err(anyhow::Error::msg)?,
                )
            } else {
                let mut docker = ctrl_build::docker::DockerBuilder::new(
                    &b.docker_socket,
                    timeout,
                    registry.clone(),
                    &config.build_platform,
                )
                .map_err(anyhow::Error::msg)?;
                // Which engine it is decides whether builds take secrets. An
                // engine that is not up yet is not asked again: builds with
                // secrets are refused with the reason until the worker restarts.
                if let Err(e) = docker.detect().await {
                    tracing::warn!(error = %e, "could not ask the build engine what it is; builds take no secrets");
                }
                Arc::new(docker)
            };
            (Some(builder), Some(registry))
        };
        let store = config
            .build_contexts
            .enabled()
            .then(|| ContextStore::new(&config.build_contexts));
        let g = &config.github;
        let github = GitHub::new(GitHubConfig {
            api_url: g.api_url.clone(),
            app_id: g.app_id,
            private_key_pem: g.private_key_pem.clone().into(),
            allow_unauthenticated: g.allow_unauthenticated_deployments,
            request_timeout: Duration::from_secs(g.request_timeout_seconds),
            max_tarball_bytes: g.max_tarball_bytes,
            ..GitHubConfig::default()
        })
        .context("[github]")?;
        let vault = match &config.vault {
            Some(v) => Some(v.vault().map_err(|e| anyhow::anyhow!("vault: {e}"))?),
            None => None,
        };
        Ok(Self {
            builder,
            registry,
            store,
            github,
            vault,
            settings: BuildSettings {
                platform: config.build_platform.clone(),
                timeout,
                slots_per_workspace: b.slots_per_workspace,
                queue_timeout: Duration::from_secs(b.queue_timeout_seconds),
                limits: Limits {
                    max_unpacked_bytes: b.max_context_bytes,
                    max_entries: 200_000,
                },
                max_log_lines: b.max_log_lines,
                attempts: b.attempts,
            },
        })
    }

    /// Creates the uploads' bucket when `[build_contexts] create_bucket` asks
    /// for it (local stacks), retrying for up to a minute while the store starts;
    /// a failure is logged, not fatal (uploads then fail with the store's
    /// message).
    pub async fn create_bucket(&self, config: &Config) {
        let Some(store) = self
            .store
            .as_ref()
            .filter(|_| config.build_contexts.create_bucket)
        else {
            return;
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            match store.ensure_bucket().await {
                Ok(()) => return,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(error = %e, "build context bucket not ready; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, bucket = %config.build_contexts.bucket, "could not create the build context bucket");
                    return;
                }
            }
        }
    }

    /// Where the build of a deployment is pushed:
    /// `{registry}/{prefix}/{workspace}/{project}-{app}:{deployment id}`
    /// (slugs are lowercase DNS labels, valid repository path components;
    /// the id is a valid tag).
    pub fn image_name(
        &self,
        workspace_slug: &str,
        project_slug: &str,
        app_slug: &str,
        deployment_id: &str,
    ) -> Option<ImageName> {
        let registry = self.registry.as_ref()?;
        Some(ImageName {
            registry: registry.host().to_owned(),
            path: format!(
                "{}/{workspace_slug}/{project_slug}-{app_slug}",
                registry.repository_prefix()
            ),
            tag: deployment_id.to_owned(),
        })
    }
}
