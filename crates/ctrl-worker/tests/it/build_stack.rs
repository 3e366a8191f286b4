//! The worker harness with builds: a podman engine, a registry and an S3
//! store of uploads, all real. Shared by the build tests and the `builds`
//! benchmark.

use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use ctrl_build::store::{CONTENT_TYPE, ContextStore, StoreConfig};
use ctrl_db::deployment::BuildSource;
use ctrl_db::types::SourceKind;
use ctrl_db::{build, deployment};
use ctrl_testkit::{Podman, Registry, S3Server, http_client};

use crate::harness::{Harness, eventually};

/// The harness with a build backend, a registry and an upload store.
pub(crate) struct BuildStack {
    pub(crate) h: Harness,
    pub(crate) podman: Podman,
    pub(crate) registry: Registry,
    pub(crate) _s3: S3Server,
    pub(crate) store: ContextStore,
    pub(crate) digests: ctrl_build::registry::Registry,
    /// The Depot stand-in, when the stack builds on `depot`.
    pub(crate) depot: Option<ctrl_testkit::depot::FakeDepot>,
}

/// The organization token of the stack's FakeDepot.
pub(crate) const DEPOT_TOKEN: &str = "depot-org-token-of-the-worker-tests";

/// Which build backend the worker uses.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    /// podman's Docker API.
    Docker,
    /// The testkit's FakeDepot (whose machine builds on the same podman).
    Depot,
}

impl BuildStack {
    /// `slots` builds of a workspace at once; `extra` more worker TOML
    /// (whole tables).
    pub(crate) async fn start(slots: u32, extra: &str) -> Result<Self> {
        Self::start_with(slots, 120, extra).await
    }

    /// [`BuildStack::start`] with a build timeout of `timeout_seconds`.
    pub(crate) async fn start_with(slots: u32, timeout_seconds: u64, extra: &str) -> Result<Self> {
        Self::start_on(Backend::Docker, slots, timeout_seconds, extra).await
    }

    /// [`BuildStack::start_with`] on `backend`.
    pub(crate) async fn start_on(
        backend: Backend,
        slots: u32,
        timeout_seconds: u64,
        extra: &str,
    ) -> Result<Self> {
        let (podman, registry, s3) =
            tokio::try_join!(Podman::start(), Registry::start(), S3Server::start())?;
        podman.import_busybox_image("docker.io/library/busybox:latest")?;
        let store_config = StoreConfig {
            endpoint: s3.endpoint_url(),
            bucket: "contexts".into(),
            access_key_id: s3.access_key().into(),
            secret_access_key: s3.secret_key().into(),
            force_path_style: true,
            ..StoreConfig::default()
        };
        let store = ContextStore::new(&store_config);
        store.ensure_bucket().await?;
        let depot = match backend {
            Backend::Docker => None,
            Backend::Depot => Some(
                ctrl_testkit::depot::FakeDepot::start(ctrl_testkit::depot::FakeDepotOptions {
                    org_token: DEPOT_TOKEN.into(),
                    podman_socket: podman.socket().to_path_buf(),
                    registry_url: registry.url(),
                    build_timeout: Duration::from_secs(timeout_seconds),
                    pending_polls: 1,
                })
                .await?,
            ),
        };
        let (backend_name, depot_section) = match &depot {
            None => ("docker", String::new()),
            Some(d) => (
                "depot",
                format!(
                    "[depot]\napi_url = \"{}\"\ntoken = \"{DEPOT_TOKEN}\"\n",
                    d.url()
                ),
            ),
        };
        let sections = format!(
            "build_platform = \"linux/amd64\"\n\
             [build]\nbackend = \"{backend_name}\"\ndocker_socket = \"{socket}\"\nslots_per_workspace = {slots}\ntimeout_seconds = {timeout_seconds}\n\
             [registry]\nurl = \"{registry}\"\nrepository = \"ctrl\"\n\
             [build_contexts]\nendpoint = \"{endpoint}\"\nbucket = \"contexts\"\naccess_key_id = \"{key}\"\nsecret_access_key = \"{secret}\"\nforce_path_style = true\n\
             {depot_section}{extra}",
            socket = podman.socket().display(),
            registry = registry.url(),
            endpoint = s3.endpoint_url(),
            key = s3.access_key(),
            secret = s3.secret_key(),
        );
        let h = Harness::start_with_sections("readiness_timeout_seconds = 60\n", &sections).await?;
        let digests = ctrl_build::registry::Registry::new(ctrl_build::registry::RegistryConfig {
            url: registry.url(),
            repository: "ctrl".into(),
            image_host: String::new(),
            username: String::new(),
            password: String::new().into(),
            request_timeout: Duration::from_secs(10),
        })
        .map_err(anyhow::Error::msg)?;
        Ok(Self {
            h,
            podman,
            registry,
            _s3: s3,
            store,
            digests,
            depot,
        })
    }

    /// Packs and uploads `dir` through a presigned URL, as the CLI does.
    pub(crate) async fn upload(&self, dir: &Path) -> Result<String> {
        let packed = ctrl_build::context::pack(dir, "")?;
        let upload = self
            .store
            .presign_upload(
                &self.h.workspace,
                &self.h.app,
                &ctrl_core::names::random_dns1035(12, &mut rand::rng()),
                packed.gz.len() as u64,
                SystemTime::now(),
            )
            .await?;
        let status = http_client()
            .put(&upload.url)
            .header("content-type", CONTENT_TYPE)
            .body(packed.gz)
            .send()
            .await?
            .status();
        if !status.is_success() {
            bail!("upload answered {status}");
        }
        Ok(upload.key)
    }

    /// A pending deployment building the upload `key`.
    pub(crate) async fn context_deployment(&self, environment: &str, key: &str) -> Result<String> {
        let key = key.to_owned();
        self.h
            .pending_with(environment, move |d| {
                d.source_kind = SourceKind::Context;
                d.image = None;
                d.build = Some(BuildSource {
                    context_path: Some(key),
                    dir: Some(".".into()),
                    dockerfile: Some("Dockerfile".into()),
                    args: [("GREETING".to_owned(), "built by the worker".to_owned())].into(),
                    secrets: Vec::new(),
                    installation_id: None,
                });
            })
            .await
    }

    /// Uploads a context made of `files` and starts a deployment building it.
    pub(crate) async fn deploy_files(&self, files: &[(&str, &str)]) -> Result<String> {
        let dir = tempfile::tempdir()?;
        for (name, body) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().context("parent")?)?;
            std::fs::write(path, body)?;
        }
        let key = self.upload(dir.path()).await?;
        let id = self.context_deployment(&self.h.production, &key).await?;
        self.h.deploy(&id).await?;
        Ok(id)
    }

    /// The deployment's build row, once it exists.
    pub(crate) async fn build_of(&self, id: &str) -> Result<build::Build> {
        eventually(Duration::from_secs(30), || async {
            Ok(build::for_deployment(&self.h.db.pool, id).await?.is_some())
        })
        .await?;
        build::for_deployment(&self.h.db.pool, id)
            .await?
            .context("no build")
    }

    /// Waits until the deployment failed; its error message.
    pub(crate) async fn failure(&self, id: &str) -> Result<String> {
        self.h
            .wait_status(id, ctrl_core::status::DeploymentStatus::Failed)
            .await?;
        Ok(deployment::get(&self.h.db.pool, id)
            .await?
            .error_message
            .unwrap_or_default())
    }

    /// Waits until the deployment's build has `status`; the build.
    pub(crate) async fn wait_build(
        &self,
        id: &str,
        status: ctrl_db::types::BuildStatus,
    ) -> Result<build::Build> {
        eventually(Duration::from_secs(60), || async {
            let b = build::for_deployment(&self.h.db.pool, id).await?;
            Ok(b.is_some_and(|b| b.status == status))
        })
        .await?;
        self.build_of(id).await
    }

    /// Waits until the deployment's building step says something containing `text`.
    pub(crate) async fn wait_step_message(&self, id: &str, text: &str) -> Result<()> {
        let waited = eventually(Duration::from_secs(60), || async {
            let steps = deployment::list_steps(&self.h.db.pool, id).await?;
            Ok(steps.iter().any(|s| s.message.contains(text)))
        })
        .await;
        if waited.is_err() {
            let steps = deployment::list_steps(&self.h.db.pool, id).await?;
            bail!(
                "no step said {text:?}: {steps:?}\nworker log:\n{}",
                self.h.worker_log(30)
            );
        }
        Ok(())
    }

    /// Every line of the build's output.
    pub(crate) async fn output(&self, build_id: &str) -> Result<String> {
        let lines = build::list_logs(&self.h.db.pool, build_id, 0, 100_000).await?;
        Ok(lines
            .into_iter()
            .map(|l| l.text)
            .collect::<Vec<_>>()
            .join("\n"))
    }

    /// The tags of the app's repository in the registry.
    pub(crate) async fn tags(&self) -> Result<Vec<String>> {
        let url = format!("{}/v2/ctrl/acme/shop-web/tags/list", self.registry.url());
        let response = http_client().get(url).send().await?;
        if response.status() == 404 {
            return Ok(Vec::new());
        }
        let body: serde_json::Value = response.json().await?;
        Ok(body["tags"]
            .as_array()
            .map(|t| {
                t.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }
}
