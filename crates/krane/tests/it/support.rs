//! Shared pieces: seeding tenancy and deployments straight into the
//! database, an in-process cluster-sync server that can be restarted on its
//! port, and a recording desired-state sink.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Result;
use ctrl_cluster_sync::service::{ClusterSync, Settings};
use ctrl_core::id::{IdKind, generate};
use ctrl_db::deployment::NewDeployment;
use ctrl_db::settings::RuntimeSettings;
use ctrl_db::tenancy::{NewApp, NewEnvironment};
use ctrl_db::topology::NewTopology;
use ctrl_db::types::{EnvironmentKind, SourceKind, TriggerKind};
use ctrl_proto::ctrl::v1 as pb;
use krane::control::Control;
use krane::stream::DesiredSink;
use sqlx::MySqlPool;

/// The API's token (never an agent's).
pub(crate) const TOKEN: &str = "api-token-0123456789abcdef";

/// The test token of krane `dev/local/<cell>`, registered as its credential.
pub(crate) async fn agent_token(db: &MySqlPool, cell: &str) -> Result<String> {
    let token = format!("ctrl_agent_test_{cell}_0123456789abcdef0123");
    ctrl_cluster_sync::agents::ensure(
        db,
        &ctrl_cluster_sync::agents::Binding::krane(
            "dev",
            "local",
            cell,
            &format!("test krane {cell}"),
        ),
        &token,
        0,
    )
    .await?;
    Ok(token)
}

/// A workspace → app → environment, a region, and deployments in it.
pub(crate) struct Seed {
    pub(crate) workspace: String,
    pub(crate) project: String,
    pub(crate) app: String,
    pub(crate) environment: String,
    pub(crate) region: String,
}

impl Seed {
    /// Tenancy and the region `dev/local` (the cluster key agents use).
    pub(crate) async fn new(db: &MySqlPool) -> Result<Self> {
        let mut rng = rand::rng();
        let (workspace, project, app, environment) = (
            generate(IdKind::Workspace, &mut rng),
            generate(IdKind::Project, &mut rng),
            generate(IdKind::App, &mut rng),
            generate(IdKind::Environment, &mut rng),
        );
        ctrl_db::tenancy::insert_workspace(db, &workspace, "Acme", "acme", 1).await?;
        ctrl_db::tenancy::insert_project(db, &project, &workspace, "Shop", "shop", 1).await?;
        let new_app = NewApp {
            id: &app,
            workspace_id: &workspace,
            project_id: &project,
            name: "Web",
            slug: "web",
            default_branch: "main",
        };
        ctrl_db::tenancy::insert_app(db, &new_app, 1).await?;
        let env = NewEnvironment {
            id: &environment,
            workspace_id: &workspace,
            project_id: &project,
            app_id: &app,
            slug: "production",
            kind: EnvironmentKind::Production,
            description: "",
        };
        ctrl_db::tenancy::insert_environment(db, &env, 1).await?;
        let mut conn = db.acquire().await?;
        let region = ctrl_db::cluster::upsert_region(
            &mut conn,
            &generate(IdKind::Region, &mut rng),
            "local",
            "dev",
            1,
        )
        .await?
        .id;
        Ok(Self {
            workspace,
            project,
            app,
            environment,
            region,
        })
    }

    /// A deployment row (no topology yet).
    pub(crate) async fn deployment(&self, db: &MySqlPool) -> Result<String> {
        let id = generate(IdKind::Deployment, &mut rand::rng());
        let d = NewDeployment {
            id: id.clone(),
            k8s_name: ctrl_core::names::random_dns1035(12, &mut rand::rng()),
            workspace_id: self.workspace.clone(),
            project_id: self.project.clone(),
            app_id: self.app.clone(),
            environment_id: self.environment.clone(),
            source_kind: SourceKind::Image,
            image: Some("localhost/demo:1".into()),
            build: None,
            git_repository: None,
            git_commit_sha: None,
            git_branch: None,
            git_commit_message: None,
            git_commit_author_handle: None,
            git_commit_author_avatar_url: None,
            git_commit_timestamp: None,
            fork_repository: None,
            git_pr_number: None,
            runtime: RuntimeSettings::default(),
            encrypted_environment: Vec::new(),
            trigger_kind: TriggerKind::Api,
            trigger_reason: None,
            actor_id: None,
            actor_name: None,
            actor_type: None,
            idempotency_key: None,
        };
        ctrl_db::deployment::insert(db, &d, 1).await?;
        Ok(id)
    }

    /// Sets a deployment running (`min` replicas) or stopped in the region,
    /// the way the worker does (one transaction); returns the version.
    pub(crate) async fn set(
        &self,
        db: &MySqlPool,
        deployment: &str,
        running: bool,
        min: u32,
    ) -> Result<u64> {
        let mut tx = db.begin().await?;
        let version = if running {
            let t = NewTopology {
                workspace_id: &self.workspace,
                deployment_id: deployment,
                region_id: &self.region,
                min_replicas: min,
                max_replicas: min,
                cpu_threshold_percent: 0,
                memory_threshold_percent: 0,
                startup_timeout_seconds: 0,
            };
            ctrl_db::topology::upsert_running(&mut tx, &t, 1).await?
        } else {
            let written = ctrl_db::topology::set_desired_status(
                &mut tx,
                deployment,
                ctrl_core::status::DesiredState::Stopped,
                1,
            )
            .await?;
            written.first().map_or(0, |(_, v)| *v)
        };
        tx.commit().await?;
        Ok(version)
    }
}

/// cluster-sync in this process on a fixed port; `restart` stops it (open
/// streams break) and serves again on the same port.
pub(crate) struct SyncServer {
    pub(crate) addr: SocketAddr,
    db: MySqlPool,
    ingress: String,
    settings: Settings,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    /// The running service (its feeds are observable).
    pub(crate) sync: Option<ClusterSync>,
}

impl SyncServer {
    pub(crate) async fn start(db: &MySqlPool, ingress: &str, settings: Settings) -> Result<Self> {
        let port = ctrl_testkit::free_port()?;
        let mut server = Self {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            db: db.clone(),
            ingress: ingress.to_owned(),
            settings,
            stop: None,
            task: None,
            sync: None,
        };
        server.serve().await?;
        Ok(server)
    }

    async fn serve(&mut self) -> Result<()> {
        let listener = tokio::net::TcpListener::bind(self.addr).await?;
        let sync = ClusterSync::new(self.db.clone(), &self.ingress, self.settings.clone());
        let app = ctrl_cluster_sync::server::router(sync.clone(), self.db.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        self.stop = Some(tx);
        self.sync = Some(sync.clone());
        self.task = Some(tokio::spawn(async move {
            let server = axum::serve(ctrl_runtime::net::nodelay(listener), app);
            tokio::select! {
                _ = server => {}
                _ = rx => sync.begin_shutdown(),
            }
        }));
        Ok(())
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Kills the server (connections drop) and starts it again.
    pub(crate) async fn restart(&mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
        self.serve().await
    }

    /// A client for the agent `dev/local/<cell>`, with its own credential
    /// (a cell that is not a DNS label borrows `local-1`'s, so the request
    /// can show how a bad key is answered).
    pub(crate) async fn control(&self, cell: &str) -> Result<Control> {
        let owner = if ctrl_core::names::is_dns_label(cell) {
            cell
        } else {
            "local-1"
        };
        Control::new(
            &self.url(),
            &agent_token(&self.db, owner).await?,
            pb::ClusterKey {
                platform: "dev".into(),
                region: "local".into(),
                cell_id: cell.into(),
            },
            Duration::from_secs(5),
        )
    }
}

/// Records what a stream delivers.
#[derive(Default)]
pub(crate) struct Recorder {
    pub(crate) inner: Mutex<Recorded>,
}

#[derive(Default)]
pub(crate) struct Recorded {
    /// (deployment, version, running) in arrival order (watch only).
    pub(crate) watched: Vec<(String, u64, bool)>,
    /// Newest state per deployment: (version, running).
    pub(crate) latest: HashMap<String, (u64, bool)>,
    pub(crate) snapshots: u32,
}

impl DesiredSink for Recorder {
    fn changed(&self, state: pb::DeploymentState) {
        let running = matches!(state.state, Some(pb::deployment_state::State::Apply(_)));
        let id = krane::stream::deployment_id(&state)
            .unwrap_or_default()
            .to_owned();
        let mut r = self.inner.lock().unwrap();
        r.watched.push((id.clone(), state.version, running));
        r.latest.insert(id, (state.version, running));
    }

    fn snapshot_complete(&self, present: &HashSet<String>, _version: u64) {
        let mut r = self.inner.lock().unwrap();
        r.snapshots += 1;
        r.watched.clear();
        r.latest.retain(|id, _| present.contains(id));
    }
}

/// Polls `check` every 50 ms until it holds or `timeout` passes.
pub(crate) async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last = check().await;
        if matches!(last, Ok(true)) {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what} (last check: {last:?})");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
