//! The whole loop on real processes: MariaDB, restate-server, ctrl-worker,
//! ctrl-api and ctrl-cluster-sync (in this process, on loopback ports) and
//! the krane binary on podman — or, with [`Backend::Kubernetes`], on the
//! testkit's fake Kubernetes API (see `kubernetes.rs`). A deployment
//! becomes a container that answers HTTP; the workflow learns it is healthy
//! through cluster-sync.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ctrl_proto::ctrl::v1 as pb;
use ctrl_testkit::process::Supervised;
use ctrl_testkit::{
    InProcess, Podman, RestateServer, free_ports, http_client, images, wait_until_ok,
};
use tonic::transport::Channel;

use crate::support::{SyncServer, TOKEN, agent_token, eventually};

const VAULT_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const V1: &str = "localhost/demo:v1";
const V2: &str = "localhost/demo:v2";

/// Where krane runs workloads.
pub(crate) enum Backend {
    /// podman's Docker-compatible API.
    Podman,
    /// The testkit's fake Kubernetes API server.
    Kubernetes,
}

pub(crate) struct Stack {
    // Stopped first (fields drop in order), then the servers they use.
    _services: InProcess,
    pub(crate) db: ctrl_testkit::TestDatabase,
    podman: Option<Podman>,
    pub(crate) kube: Option<ctrl_testkit::FakeKube>,
    _restate: RestateServer,
    pub(crate) sync: SyncServer,
    pub(crate) krane: Option<Supervised>,
    krane_config: std::path::PathBuf,
    pub(crate) krane_health: u16,
    pub(crate) worker_health: u16,
    pub(crate) api: Channel,
    pub(crate) dir: tempfile::TempDir,
    /// krane's secrets directory (a tmpfs), this stack's only.
    _secrets: tempfile::TempDir,
}

fn parse<T: serde::de::DeserializeOwned + ctrl_runtime::config::Validate>(
    text: &str,
    prefix: &str,
) -> Result<T> {
    ctrl_runtime::config::parse(text, "test.toml", &HashMap::new(), prefix)
        .map_err(|e| anyhow::anyhow!("{e}"))
}

impl Stack {
    async fn start() -> Result<Self> {
        Self::start_on(Backend::Podman).await
    }

    pub(crate) async fn start_on(backend: Backend) -> Result<Self> {
        let restate = RestateServer::start().await?;
        let db = ctrl_testkit::test_database().await?;
        let dir = tempfile::tempdir()?;
        let secrets = tempfile::tempdir_in("/dev/shm")?;
        let (podman, kube, backend_config) = match backend {
            Backend::Podman => {
                let podman = Podman::start().await?;
                images::build_http_image(podman.docker(), V1).await?;
                images::derive_image(podman.docker(), V1, V2, &[("VERSION", "v2")]).await?;
                let config = format!(
                    "[docker]\nsocket = \"{}\"\ndrain_delay_ms = 200\ninit_binary = \"{}\"\nsecrets_dir = \"{}\"\n",
                    podman.socket().display(),
                    ctrl_testkit::paths::ctrl_init_bin()?.display(),
                    secrets.path().display(),
                );
                (Some(podman), None, config)
            }
            Backend::Kubernetes => {
                let kube = ctrl_testkit::FakeKube::start().await?;
                let kubeconfig = dir.path().join("kubeconfig");
                kube.write_kubeconfig(&kubeconfig)?;
                let config = format!(
                    "[provider]\nkind = \"kubernetes\"\n\
                     [kubernetes]\nkubeconfig = \"{}\"\nstart_timeout_seconds = 30\n",
                    kubeconfig.display()
                );
                (None, Some(kube), config)
            }
        };
        let [worker_port, worker_health, api_port, krane_health] = free_ports()?;
        let mut services = InProcess::default();

        // ctrl-worker, registered with Restate.
        let worker: ctrl_worker::config::Config = parse(
            &format!(
                "[restate]\nlisten = \"127.0.0.1:{worker_port}\"\nadmin_url = \"{admin}\"\nregister_as = \"http://127.0.0.1:{worker_port}\"\nidentity_keys = [\"{identity}\"]\n\
                 [database]\nurl = \"{url}\"\n[health]\nlisten = \"127.0.0.1:{worker_health}\"\n\
                 [deploy]\nreadiness_timeout_seconds = 120\n",
                admin = restate.admin_url(),
                identity = restate.identity_key(),
                url = db.url,
            ),
            ctrl_worker::config::ENV_PREFIX,
        )?;
        let pool = db.pool.clone();
        services.spawn("ctrl-worker", move |stop| async move {
            ctrl_worker::startup::run(&worker, pool, stop.wait()).await
        });

        // ctrl-cluster-sync, waking workflows through the real ingress.
        let mut settings = ctrl_cluster_sync::Settings::default();
        settings.feed.poll_interval = Duration::from_millis(50);
        let sync = SyncServer::start(&db.pool, &restate.ingress_url(), settings).await?;

        // ctrl-api.
        let api: ctrl_api::config::Config = parse(
            &format!(
                "[http]\nlisten = \"127.0.0.1:{api_port}\"\nops_listen = \"127.0.0.1:0\"\n[auth]\ntokens = [\"{TOKEN}\"]\n[database]\nurl = \"{url}\"\n\
                 [vault]\nkeys = [{{ id = \"k1\", key = \"{VAULT_KEY}\" }}]\n\
                 [restate]\ningress_url = \"{ingress}\"\nadmin_url = \"{admin}\"\n",
                url = db.url,
                ingress = restate.ingress_url(),
                admin = restate.admin_url(),
            ),
            ctrl_api::config::ENV_PREFIX,
        )?;
        let listener = tokio::net::TcpListener::bind(api.http.listen).await?;
        let pool = db.pool.clone();
        services.spawn("ctrl-api", move |stop| async move {
            ctrl_api::server::serve(&api, listener, pool, stop.wait()).await
        });

        let krane_config = dir.path().join("krane.toml");
        std::fs::write(
            &krane_config,
            format!(
                "[cluster]\nplatform = \"dev\"\nregion = \"local\"\ncell_id = \"local-1\"\n\
                 [control]\nurl = \"{sync}\"\ntoken = \"{agent}\"\n\
                 {backend_config}\
                 [vault]\nkeys = [{{ id = \"k1\", key = \"{VAULT_KEY}\" }}]\n\
                 [agent]\nreconcile_seconds = 2\nreport_seconds = 1\nreconnect_min_ms = 100\nreconnect_max_ms = 300\n\
                 [http]\nlisten = \"127.0.0.1:{krane_health}\"\n",
                sync = sync.url(),
                agent = agent_token(&db.pool, "local-1").await?,
            ),
        )?;
        let api_channel =
            Channel::from_shared(format!("http://127.0.0.1:{api_port}"))?.connect_lazy();
        let mut stack = Self {
            _services: services,
            db,
            podman,
            kube,
            _restate: restate,
            sync,
            krane: None,
            krane_config,
            krane_health,
            worker_health,
            api: api_channel,
            dir,
            _secrets: secrets,
        };
        stack.start_krane().await?;
        wait_until_ok(
            &format!("http://127.0.0.1:{worker_health}/health/ready"),
            Duration::from_secs(30),
        )
        .await?;
        Ok(stack)
    }

    pub(crate) async fn start_krane(&mut self) -> Result<()> {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_krane"));
        cmd.arg("--config")
            .arg(&self.krane_config)
            .env("RUST_LOG", "info");
        let log = self.dir.path().join("krane.log");
        self.krane = Some(Supervised::spawn("krane", cmd, &log, None)?);
        wait_until_ok(
            &format!("http://127.0.0.1:{}/health/ready", self.krane_health),
            Duration::from_secs(30),
        )
        .await
        .with_context(|| self.krane_log())
    }

    /// The podman of a [`Backend::Podman`] stack.
    fn podman(&self) -> &Podman {
        self.podman.as_ref().expect("a podman stack")
    }

    pub(crate) fn krane_log(&self) -> String {
        self.krane
            .as_ref()
            .map(|k| k.log_tail(40))
            .unwrap_or_default()
    }

    pub(crate) async fn deploy(&self, app: &str, env: &str, image: &str) -> Result<String> {
        let mut client =
            pb::deployment_service_client::DeploymentServiceClient::new(self.api.clone());
        Ok(client
            .create_deployment(auth(pb::CreateDeploymentRequest {
                app_id: app.into(),
                environment_slug: env.into(),
                source: Some(pb::create_deployment_request::Source::Image(
                    pb::ImageSource {
                        image: image.into(),
                    },
                )),
                ..Default::default()
            }))
            .await?
            .into_inner()
            .deployment_id)
    }

    pub(crate) async fn get(&self, id: &str) -> Result<pb::Deployment> {
        let mut client =
            pb::deployment_service_client::DeploymentServiceClient::new(self.api.clone());
        client
            .get_deployment(auth(pb::GetDeploymentRequest {
                deployment_id: id.into(),
            }))
            .await?
            .into_inner()
            .deployment
            .context("deployment")
    }

    pub(crate) async fn wait_status(
        &self,
        id: &str,
        want: pb::DeploymentStatus,
    ) -> Result<pb::Deployment> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let d = self.get(id).await?;
            if d.status == want as i32 {
                return Ok(d);
            }
            if matches!(
                pb::DeploymentStatus::try_from(d.status),
                Ok(pb::DeploymentStatus::Failed)
            ) || tokio::time::Instant::now() > deadline
            {
                bail!(
                    "{id} is {:?} ({}), not {want:?}\nkrane:\n{}",
                    d.status(),
                    d.error_message,
                    self.krane_log()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// What the deployment's instance answers over HTTP.
    async fn answer(&self, id: &str) -> Result<String> {
        self.fetch(id, "/").await
    }

    /// GET `path` from a running instance of `id`.
    async fn fetch(&self, id: &str, path: &str) -> Result<String> {
        let instances = ctrl_db::instance::list_by_deployment(&self.db.pool, id).await?;
        let running = instances
            .iter()
            .find(|i| i.status == ctrl_db::types::InstanceStatus::Running)
            .context("no running instance")?;
        let body = http_client()
            .get(format!("http://{}{path}", running.address))
            .timeout(Duration::from_secs(2))
            .send()
            .await?
            .text()
            .await?;
        Ok(body.trim().to_owned())
    }

    async fn containers_of(&self, id: &str) -> Result<Vec<String>> {
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![format!("ctrl.dev/deployment-id={id}")],
        )]);
        let list = self
            .podman()
            .docker()
            .list_containers(Some(bollard::query_parameters::ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await?;
        Ok(list.into_iter().filter_map(|c| c.id).collect())
    }
}

impl Stack {
    /// Workspace `acme`, project `shop`, app `web` (running in region
    /// dev/local, which krane registered first).
    /// The worker's, krane's and cluster-sync's metrics, concatenated.
    pub(crate) async fn metrics(&self) -> Result<String> {
        let client = http_client();
        let mut text = String::new();
        for port in [self.worker_health, self.krane_health] {
            text.push_str(
                &client
                    .get(format!("http://127.0.0.1:{port}/metrics"))
                    .send()
                    .await?
                    .error_for_status()?
                    .text()
                    .await?,
            );
        }
        let registry = ctrl_runtime::metrics::MetricsRegistry::new("cluster_sync");
        if let Some(sync) = &self.sync.sync {
            sync.metrics().register(&registry);
        }
        text.push_str(&registry.render());
        Ok(text)
    }

    pub(crate) async fn app(&self) -> Result<pb::App> {
        let ch = self.api.clone();
        let ws = pb::workspace_service_client::WorkspaceServiceClient::new(ch.clone())
            .create_workspace(auth(pb::CreateWorkspaceRequest {
                name: "Acme".into(),
                slug: "acme".into(),
                actor: None,
            }))
            .await?
            .into_inner()
            .workspace
            .context("workspace")?;
        let project = pb::project_service_client::ProjectServiceClient::new(ch.clone())
            .create_project(auth(pb::CreateProjectRequest {
                workspace_id: ws.id,
                name: "Shop".into(),
                slug: "shop".into(),
                actor: None,
            }))
            .await?
            .into_inner()
            .project
            .context("project")?;
        pb::app_service_client::AppServiceClient::new(ch)
            .create_app(auth(pb::CreateAppRequest {
                project_id: project.id,
                name: "Web".into(),
                slug: "web".into(),
                ..Default::default()
            }))
            .await?
            .into_inner()
            .app
            .context("app")
    }

    /// Waits until the deployment's deploying step says something with `text`.
    pub(crate) async fn wait_step_message(&self, id: &str, text: &str) -> Result<String> {
        let mut seen = String::new();
        for _ in 0..150 {
            let d = self.get(id).await?;
            if let Some(step) = d
                .steps
                .iter()
                .find(|s| s.kind == pb::DeploymentStepKind::Deploying as i32)
            {
                seen = format!("{} / {}", step.message, step.error_message);
                if seen.contains(text) {
                    return Ok(seen);
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bail!(
            "the deploying step never mentioned {text:?} (last: {seen:?})\nkrane:\n{}",
            self.krane_log()
        )
    }

    /// Waits until the deployment reaches a status the workflow is done with.
    pub(crate) async fn wait_end(&self, id: &str) -> Result<pb::Deployment> {
        for _ in 0..600 {
            let d = self.get(id).await?;
            if !matches!(
                d.status(),
                pb::DeploymentStatus::Pending
                    | pb::DeploymentStatus::Starting
                    | pb::DeploymentStatus::Building
                    | pb::DeploymentStatus::Deploying
                    | pb::DeploymentStatus::Network
                    | pb::DeploymentStatus::Finalizing
            ) {
                return Ok(d);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bail!("{id} never finished\nkrane:\n{}", self.krane_log())
    }
}

impl Stack {
    /// Sets a write-only (sealed) variable of the app's environment.
    pub(crate) async fn set_secret(
        &self,
        app: &str,
        env: &str,
        key: &str,
        value: &str,
    ) -> Result<()> {
        pb::app_service_client::AppServiceClient::new(self.api.clone())
            .set_environment_variables(auth(pb::SetEnvironmentVariablesRequest {
                app_id: app.into(),
                environment_slug: env.into(),
                variables: vec![pb::EnvironmentVariable {
                    key: key.into(),
                    value: value.into(),
                    r#type: pb::EnvironmentVariableType::Writeonly as i32,
                    ..Default::default()
                }],
                actor: None,
            }))
            .await?;
        Ok(())
    }

    /// Rolls the deployment's environment back to `target`.
    pub(crate) async fn rollback_to(&self, target: &str) -> Result<()> {
        pb::deployment_service_client::DeploymentServiceClient::new(self.api.clone())
            .rollback(auth(pb::RollbackRequest {
                target_deployment_id: target.into(),
                ..Default::default()
            }))
            .await?;
        Ok(())
    }

    /// Asks ctrl to stop the deployment.
    pub(crate) async fn stop(&self, id: &str) -> Result<()> {
        pb::deployment_service_client::DeploymentServiceClient::new(self.api.clone())
            .stop_deployment(auth(pb::StopDeploymentRequest {
                deployment_id: id.into(),
                actor: None,
            }))
            .await?;
        Ok(())
    }
}

pub(crate) fn auth<T>(msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {TOKEN}").parse().expect("header"),
    );
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_run_roll_back_survive_restarts_and_stop() -> Result<()> {
    let stack = Stack::start().await?;
    let mut stack = stack;
    let ch = stack.api.clone();
    let app = stack.app().await?;
    // A sealed variable: krane must open it to start the container.
    stack
        .set_secret(
            &app.id,
            "production",
            "DATABASE_PASSWORD",
            "hunter2-plaintext",
        )
        .await?;

    // First deployment: running, ready with routes, answering.
    let before = stack.metrics().await?;
    let d1 = stack.deploy(&app.id, "production", V1).await?;
    let ready = stack.wait_status(&d1, pb::DeploymentStatus::Ready).await?;
    assert!(!ready.hostnames.is_empty(), "ready with its routes");
    assert_eq!(stack.answer(&d1).await?, "v1");

    // Every service counted the work (one naming scheme: ctrl_<service>_…).
    eventually(Duration::from_secs(10), "the deploy is counted", || async {
        let after = stack.metrics().await?;
        Ok(sum(&after, "ctrl_worker_deploys_total{outcome=\"ready\"}")
            > sum(&before, "ctrl_worker_deploys_total{outcome=\"ready\"}"))
    })
    .await?;
    let after = stack.metrics().await?;
    for (name, grew) in [
        (
            "ctrl_worker_handler_attempts_total{service=\"Deploy\",handler=\"Deploy\"}",
            true,
        ),
        ("ctrl_worker_handler_attempt_duration_seconds_count", true),
        (
            "ctrl_worker_deploy_step_duration_seconds_count{step=\"deploying\"}",
            true,
        ),
        ("ctrl_worker_handler_attempts_in_flight", false),
        ("ctrl_cluster_sync_open_streams{kind=\"krane\"}", false),
        ("ctrl_cluster_sync_feed_changes_published_total", true),
        (
            "ctrl_cluster_sync_notifications_total{outcome=\"sent\"}",
            true,
        ),
        (
            "ctrl_cluster_sync_snapshot_duration_seconds_count{kind=\"krane\"}",
            false,
        ),
        ("ctrl_krane_changes_received_total", true),
        ("ctrl_krane_applies_succeeded_total", true),
    ] {
        assert!(after.contains(name), "{name} is not exposed:\n{after}");
        if grew {
            assert!(
                sum(&after, name) > sum(&before, name),
                "{name} did not grow: {} → {}",
                sum(&before, name),
                sum(&after, name)
            );
        }
    }
    assert!(sum(&after, "ctrl_cluster_sync_open_streams{kind=\"krane\"}") >= 1.0);
    let containers = stack.containers_of(&d1).await?;
    assert_eq!(containers.len(), 1);
    let inspect = stack
        .podman()
        .docker()
        .inspect_container(&containers[0], None)
        .await?;
    // The workload has it; the engine's config, its inspect output and its
    // disk do not (ctrl-init read it from a tmpfs).
    let seen = stack.fetch(&d1, "/cgi-bin/env").await?;
    assert!(
        seen.lines()
            .any(|l| l == "DATABASE_PASSWORD=hunter2-plaintext"),
        "the secret reached the workload: {seen}"
    );
    assert!(
        !serde_json::to_string(&inspect)?.contains("hunter2"),
        "never in the container's config or labels"
    );
    let mut on_disk = Vec::new();
    let mut dirs = vec![stack.podman().dir().to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)?.flatten() {
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                dirs.push(path);
            } else if entry.file_type()?.is_file()
                && std::fs::read(&path).is_ok_and(|b| b.windows(7).any(|w| w == b"hunter2"))
            {
                on_disk.push(path);
            }
        }
    }
    assert!(
        on_disk.is_empty(),
        "the secret is on the engine's disk: {on_disk:?}"
    );
    assert!(
        !std::fs::read_to_string(stack.dir.path().join("krane.log"))?.contains("hunter2"),
        "never in krane's log"
    );

    // Second deployment becomes live; rollback returns to the first.
    let d2 = stack.deploy(&app.id, "production", V2).await?;
    stack.wait_status(&d2, pb::DeploymentStatus::Ready).await?;
    assert_eq!(stack.answer(&d2).await?, "v2");
    eventually(Duration::from_secs(10), "d2 to become live", || async {
        Ok(stack.get(&d2).await?.is_live)
    })
    .await?;
    stack.rollback_to(&d1).await?;
    assert!(stack.get(&d1).await?.is_live && !stack.get(&d2).await?.is_live);
    assert_eq!(
        stack.answer(&d1).await?,
        "v1",
        "the rolled-back deployment still runs"
    );

    // A container removed behind krane's back is recreated by the reconcile.
    let old = stack.containers_of(&d1).await?;
    stack
        .podman()
        .docker()
        .remove_container(
            &old[0],
            Some(bollard::query_parameters::RemoveContainerOptions {
                force: true,
                ..Default::default()
            }),
        )
        .await?;
    eventually(
        Duration::from_secs(30),
        "d1's container to come back",
        || async {
            let now = stack.containers_of(&d1).await?;
            Ok(now.len() == 1
                && now[0] != old[0]
                && stack.answer(&d1).await.is_ok_and(|b| b == "v1"))
        },
    )
    .await?;

    // krane killed; a preview deployment created meanwhile; krane restarted
    // picks it up from its snapshot.
    stack.krane.as_mut().context("krane")?.kill();
    stack.krane = None;
    let p1 = stack.deploy(&app.id, "preview", V1).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stack.start_krane().await?;
    stack.wait_status(&p1, pb::DeploymentStatus::Ready).await?;
    assert_eq!(stack.answer(&p1).await?, "v1");

    // Stopping the preview removes its containers and marks it stopped.
    stack.stop(&p1).await?;
    stack
        .wait_status(&p1, pb::DeploymentStatus::Stopped)
        .await?;
    assert!(
        stack.containers_of(&p1).await?.is_empty(),
        "no container left"
    );
    assert!(
        !stack.containers_of(&d1).await?.is_empty(),
        "others untouched"
    );

    // Deleting the app: every container goes, then every row.
    pb::app_service_client::AppServiceClient::new(ch.clone())
        .delete_app(auth(pb::DeleteAppRequest {
            app_id: app.id.clone(),
            actor: None,
        }))
        .await?;
    eventually(Duration::from_secs(60), "the app to be deleted", || async {
        let gone = pb::app_service_client::AppServiceClient::new(ch.clone())
            .get_app(auth(pb::GetAppRequest {
                app_id: app.id.clone(),
            }))
            .await
            .is_err_and(|s| s.code() == tonic::Code::NotFound);
        Ok(gone)
    })
    .await?;
    for d in [&d1, &d2, &p1] {
        assert!(
            stack.containers_of(d).await?.is_empty(),
            "{d} still has containers"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_that_cannot_start_says_why_slow_starters_deploy_and_wake_ends_ready() -> Result<()>
{
    let stack = Stack::start().await?;
    let ch = stack.api.clone();
    let app = stack.app().await?;
    // A health check that gives up after 3 s of failures once started.
    for env in ["production", "preview"] {
        pb::app_service_client::AppServiceClient::new(ch.clone())
            .update_app_settings(auth(pb::UpdateAppSettingsRequest {
                app_id: app.id.clone(),
                environment_slug: env.into(),
                runtime: Some(pb::RuntimeSettings {
                    port: 8080,
                    cpu_millicores: 250,
                    memory_mib: 256,
                    health_check: Some(pb::HealthCheck {
                        method: pb::HealthCheckMethod::Get as i32,
                        path: "/health".into(),
                        interval_seconds: 1,
                        timeout_seconds: 1,
                        failure_threshold: 3,
                        initial_delay_seconds: 0,
                    }),
                    termination_grace_seconds: 2,
                    ..Default::default()
                }),
                ..Default::default()
            }))
            .await?;
    }

    // An image that cannot be had (not present, and no registry answers
    // for it here): the step says so within seconds, and the deployment
    // fails after the attempts — not at the readiness timeout (120 s).
    let missing = stack.deploy(&app.id, "preview", "localhost/nope:1").await?;
    stack
        .wait_step_message(&missing, "local: image localhost/nope:1 is not present")
        .await?;
    let started = std::time::Instant::now();
    let failed = stack.wait_end(&missing).await?;
    assert_eq!(failed.status(), pb::DeploymentStatus::Failed, "{failed:?}");
    assert!(
        failed
            .error_message
            .contains("image localhost/nope:1 is not present")
            && failed.error_message.contains("3 failed attempts"),
        "{}",
        failed.error_message
    );
    eprintln!(
        "missing image failed {:?} after its first problem",
        started.elapsed()
    );
    eventually(
        Duration::from_secs(30),
        "no container of the failed deploy",
        || async { Ok(stack.containers_of(&missing).await?.is_empty()) },
    )
    .await?;

    // An app that exits at start: its exit and last line, then failed.
    // (The engine restarts it at once, which resets the exit code it shows.)
    let crash = "localhost/demo:crash";
    images::derive_image(
        stack.podman().docker(),
        V1,
        crash,
        &[("CRASH", "fatal: no config")],
    )
    .await?;
    let crashing = stack.deploy(&app.id, "preview", crash).await?;
    let ended = stack.wait_end(&crashing).await?;
    assert_eq!(ended.status(), pb::DeploymentStatus::Failed, "{ended:?}");
    assert!(
        ended.error_message.contains("local: exited")
            && ended
                .error_message
                .contains("before becoming ready: fatal: no config"),
        "{}",
        ended.error_message
    );

    // An app that needs 8 s to warm up (its health check fails until then):
    // the startup window waits for it.
    let slow = "localhost/demo:slow";
    images::derive_image(stack.podman().docker(), V1, slow, &[("HEALTHY_AFTER", "8")]).await?;
    let slow_deploy = stack.deploy(&app.id, "production", slow).await?;
    stack
        .wait_step_message(
            &slow_deploy,
            "health check failing: GET /health answered 404",
        )
        .await?;
    stack
        .wait_status(&slow_deploy, pb::DeploymentStatus::Ready)
        .await?;
    assert_eq!(stack.answer(&slow_deploy).await?, "v1");

    // Stop → wake → stop → wake: each wake waits for readiness and ends ready.
    let preview = stack.deploy(&app.id, "preview", V1).await?;
    stack
        .wait_status(&preview, pb::DeploymentStatus::Ready)
        .await?;
    for round in 0..2 {
        stack.stop(&preview).await?;
        stack
            .wait_status(&preview, pb::DeploymentStatus::Stopped)
            .await?;
        assert!(stack.containers_of(&preview).await?.is_empty());
        pb::deployment_service_client::DeploymentServiceClient::new(ch.clone())
            .wake_deployment(auth(pb::WakeDeploymentRequest {
                deployment_id: preview.clone(),
                actor: None,
            }))
            .await?;
        stack
            .wait_status(&preview, pb::DeploymentStatus::Ready)
            .await
            .with_context(|| format!("wake round {round}"))?;
        assert_eq!(stack.answer(&preview).await?, "v1");
    }
    Ok(())
}

/// The sum of every sample whose name (and labels) start with `name`.
fn sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
