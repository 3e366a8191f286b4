//! Starts the worker binary registered on a fresh Restate server, over a
//! fresh database with an app, its environments, a region and deployments.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use ctrl_core::domains::Sticky;
use ctrl_core::id::{IdKind, generate};
use ctrl_core::status::{DeploymentStatus, DesiredState};
use ctrl_db::deployment::NewDeployment;
use ctrl_db::instance::ReportedInstance;
use ctrl_db::route::NewRoute;
use ctrl_db::settings::RuntimeSettings;
use ctrl_db::settings::{RegionPolicy, Scope};
use ctrl_db::tenancy::{NewApp, NewEnvironment};
use ctrl_db::topology::NewTopology;
use ctrl_db::types::InstanceStatus;
use ctrl_db::types::{EnvironmentKind, SourceKind, TriggerKind};
use ctrl_db::{cluster, deployment, instance, settings, tenancy, topology};
use ctrl_testkit::process::Supervised;
use ctrl_testkit::{RestateServer, TestDatabase, free_ports, http_client};

pub(crate) struct Harness {
    pub(crate) restate: RestateServer,
    pub(crate) db: TestDatabase,
    /// The worker process (killed with the harness).
    worker: Supervised,
    health_port: u16,
    pub(crate) app: String,
    pub(crate) workspace: String,
    pub(crate) production: String,
    pub(crate) preview: String,
    pub(crate) region: String,
    /// Where the worker serves the Restate protocol.
    pub(crate) worker_url: String,
    dir: tempfile::TempDir,
}

impl Harness {
    pub(crate) async fn start() -> Result<Self> {
        Self::start_with("").await
    }

    /// Like [`Harness::start`], with extra TOML for the `[deploy]` section.
    pub(crate) async fn start_with(deploy: &str) -> Result<Self> {
        Self::start_with_sections(deploy, "").await
    }

    /// Like [`Harness::start_with`], with more sections (whole TOML tables,
    /// e.g. `[build]`) in the worker's configuration.
    pub(crate) async fn start_with_sections(deploy: &str, sections: &str) -> Result<Self> {
        Self::start_on(RestateServer::start().await?, deploy, sections).await
    }

    /// Like [`Harness::start_with_sections`] on a given Restate server.
    pub(crate) async fn start_on(
        restate: RestateServer,
        deploy: &str,
        sections: &str,
    ) -> Result<Self> {
        let db = ctrl_testkit::test_database().await?;
        let dir = tempfile::tempdir()?;
        let [port, health_port] = free_ports()?;
        let config = dir.path().join("worker.toml");
        std::fs::write(
            &config,
            format!(
                "{sections}\n[restate]\nlisten = \"127.0.0.1:{port}\"\nadmin_url = \"{admin}\"\nregister_as = \"http://127.0.0.1:{port}\"\ningress_url = \"{ingress}\"\nidentity_keys = [\"{identity}\"]\n\
                 [database]\nurl = \"{url}\"\n[health]\nlisten = \"127.0.0.1:{health_port}\"\n[deploy]\n{deploy}\n",
                admin = restate.admin_url(),
                ingress = restate.ingress_url(),
                identity = restate.identity_key(),
                url = db.url,
            ),
        )?;
        let worker = spawn_worker(dir.path(), health_port).await?;
        restate
            .serve_and_register(
                restate_sdk::prelude::Endpoint::builder()
                    .bind(
                        restate_sdk::service::IntoServiceDefinition::into_service_definition(
                            internal::Forwarder,
                        ),
                    )
                    .build(),
            )
            .await?;

        let p = &db.pool;
        let (workspace, project, app) = (
            generate(IdKind::Workspace, &mut rand::rng()),
            generate(IdKind::Project, &mut rand::rng()),
            generate(IdKind::App, &mut rand::rng()),
        );
        tenancy::insert_workspace(p, &workspace, "Acme", "acme", 1).await?;
        tenancy::insert_project(p, &project, &workspace, "Shop", "shop", 1).await?;
        tenancy::insert_app(
            p,
            &NewApp {
                id: &app,
                workspace_id: &workspace,
                project_id: &project,
                name: "Web",
                slug: "web",
                default_branch: "main",
            },
            1,
        )
        .await?;
        let (production, preview) = (
            generate(IdKind::Environment, &mut rand::rng()),
            generate(IdKind::Environment, &mut rand::rng()),
        );
        for (id, slug, kind) in [
            (&production, "production", EnvironmentKind::Production),
            (&preview, "preview", EnvironmentKind::Preview),
        ] {
            tenancy::insert_environment(
                p,
                &NewEnvironment {
                    id,
                    workspace_id: &workspace,
                    project_id: &project,
                    app_id: &app,
                    slug,
                    kind,
                    description: "",
                },
                1,
            )
            .await?;
        }
        let mut conn = p.acquire().await?;
        let region = cluster::upsert_region(
            &mut conn,
            &generate(IdKind::Region, &mut rand::rng()),
            "local",
            "dev",
            1,
        )
        .await?
        .id;
        drop(conn);
        for environment_id in [&production, &preview] {
            let mut tx = p.begin().await?;
            let scope = Scope {
                workspace_id: &workspace,
                app_id: &app,
                environment_id,
            };
            let policy = RegionPolicy {
                region_id: &region,
                min_replicas: 1,
                max_replicas: 1,
                cpu_threshold_percent: 0,
                memory_threshold_percent: 0,
            };
            settings::replace_regional(&mut tx, scope, &[policy], 1).await?;
            tx.commit().await?;
        }
        Ok(Self {
            restate,
            db,
            worker,
            health_port,
            app,
            workspace,
            production,
            preview,
            region,
            worker_url: format!("http://127.0.0.1:{port}"),
            dir,
        })
    }

    /// A ready deployment with a running topology row in the region.
    pub(crate) async fn ready_deployment(&self, environment: &str) -> Result<String> {
        let id = self.pending_deployment(environment, None).await?;
        deployment::compare_and_set_status(
            &self.db.pool,
            &id,
            DeploymentStatus::Pending,
            DeploymentStatus::Ready,
            2,
        )
        .await?;
        let mut tx = self.db.pool.begin().await?;
        let t = NewTopology {
            workspace_id: &self.workspace,
            deployment_id: &id,
            region_id: &self.region,
            min_replicas: 1,
            max_replicas: 1,
            cpu_threshold_percent: 0,
            memory_threshold_percent: 0,
            startup_timeout_seconds: 0,
        };
        topology::upsert_running(&mut tx, &t, 2).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// A pending image deployment, from a commit on `branch` if given.
    pub(crate) async fn pending_deployment(
        &self,
        environment: &str,
        branch: Option<&str>,
    ) -> Result<String> {
        let sha = branch.map(|_| format!("{:040x}", rand::random::<u128>()));
        self.pending_with(environment, |d| {
            d.git_repository = branch.map(|_| "acme/shop".into());
            d.git_commit_sha = sha;
            d.git_branch = branch.map(Into::into);
        })
        .await
    }

    /// A pending deployment of the app's image, changed by `edit` first.
    pub(crate) async fn pending_with(
        &self,
        environment: &str,
        edit: impl FnOnce(&mut NewDeployment),
    ) -> Result<String> {
        let id = generate(IdKind::Deployment, &mut rand::rng());
        let project = tenancy::get_app(&self.db.pool, &self.app).await?.project_id;
        let mut d = NewDeployment {
            id: id.clone(),
            k8s_name: ctrl_core::names::random_dns1035(12, &mut rand::rng()),
            workspace_id: self.workspace.clone(),
            project_id: project,
            app_id: self.app.clone(),
            environment_id: environment.into(),
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
        edit(&mut d);
        // Created now, so the queued step measures real time.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis();
        deployment::insert(&self.db.pool, &d, i64::try_from(now)?).await?;
        Ok(id)
    }

    /// Starts the deployment's pipeline the way ctrl-api does (the
    /// deployment id is the idempotency key).
    pub(crate) async fn deploy(&self, id: &str) -> Result<()> {
        let response = http_client()
            .post(format!(
                "{}/Deploy/{id}/Deploy/send",
                self.restate.ingress_url()
            ))
            .header("idempotency-key", id)
            .json(&serde_json::json!({ "deployment_id": id }))
            .send()
            .await?;
        if !response.status().is_success() {
            bail!(
                "Deploy {id}: {} {}",
                response.status(),
                response.text().await?
            );
        }
        Ok(())
    }

    /// Waits until the deployment's pipeline invocation has completed.
    pub(crate) async fn wait_finished(&self, id: &str) -> Result<()> {
        eventually(Duration::from_secs(30), || async {
            let rows = self.invocations("Deploy", id, "Deploy").await?;
            Ok(rows.iter().any(|r| r["status"] == "completed"))
        })
        .await
    }

    /// Reports `n` running instances in the region and wakes the pipeline,
    /// the way cluster-sync does when an agent reports.
    pub(crate) async fn report_running(&self, id: &str, n: usize) -> Result<()> {
        self.report_running_quietly(id, n).await?;
        self.send(&format!("Deploy/{id}/NotifyInstancesChanged"), None)
            .await
    }

    /// Writes `n` running instances in the region *without* telling the
    /// workflow (a notification lost on the way).
    pub(crate) async fn report_running_quietly(&self, id: &str, n: usize) -> Result<()> {
        let reported: Vec<ReportedInstance> = (0..n)
            .map(|i| ReportedInstance {
                new_id: generate(IdKind::Instance, &mut rand::rng()),
                name: format!("{id}-{i}"),
                address: format!("127.0.0.1:{}", 20000 + i),
                cpu_millicores: 250,
                memory_mib: 256,
                status: InstanceStatus::Running,
            })
            .collect();
        let mut tx = self.db.pool.begin().await?;
        instance::replace_for_deployment(&mut tx, &self.workspace, id, &self.region, &reported, 5)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records what the region's agent reports as a problem and wakes the
    /// waiting handler, the way cluster-sync does.
    pub(crate) async fn report_problem(&self, id: &str, problem: &str, failed: u32) -> Result<()> {
        topology::record_problem(&self.db.pool, id, &self.region, 0, Some(problem), failed, 6)
            .await?;
        self.send(&format!("Deploy/{id}/NotifyInstancesChanged"), None)
            .await
    }

    /// The message and error of one of the deployment's steps.
    pub(crate) async fn step(
        &self,
        id: &str,
        kind: ctrl_core::status::StepKind,
    ) -> Result<deployment::Step> {
        deployment::list_steps(&self.db.pool, id)
            .await?
            .into_iter()
            .find(|s| s.step == kind)
            .ok_or_else(|| anyhow::anyhow!("{id} has no {} step", kind.as_str()))
    }

    /// Simulates the agent finishing a stop: no instance left, and
    /// cluster-sync's "stopped once drained".
    pub(crate) async fn report_drained(&self, id: &str) -> Result<()> {
        instance::delete_for_deployment(&self.db.pool, id, &self.region, 6).await?;
        deployment::mark_stopped_if_drained(&self.db.pool, id, 7).await?;
        Ok(())
    }

    /// Waits until the deployment has `status`.
    pub(crate) async fn wait_status(&self, id: &str, status: DeploymentStatus) -> Result<()> {
        let waited = eventually(Duration::from_secs(30), || async {
            Ok(deployment::get(&self.db.pool, id).await?.status == status)
        })
        .await;
        if let Err(e) = waited {
            let d = deployment::get(&self.db.pool, id).await?;
            bail!(
                "{id} is {} ({:?}), not {status}: {e}\nworker log:\n{}",
                d.status,
                d.error_message,
                self.worker_log(30)
            );
        }
        Ok(())
    }

    /// Kills the worker with SIGKILL (a crash: nothing is flushed or
    /// finished) and starts it again with the same configuration.
    pub(crate) async fn crash_worker(&mut self) -> Result<()> {
        self.worker.kill();
        self.worker = spawn_worker(self.dir.path(), self.health_port).await?;
        Ok(())
    }

    /// The worker's health listener (`/health/*`, `/metrics`).
    pub(crate) fn health_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.health_port)
    }

    /// The last `n` lines of the worker's log (for failure messages).
    pub(crate) fn worker_log(&self, n: usize) -> String {
        self.worker.log_tail(n)
    }

    /// Calls a handler through the ingress and waits: (HTTP status, body as
    /// JSON, or as a JSON string when it is not JSON).
    pub(crate) async fn call(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> Result<(u16, serde_json::Value)> {
        let response = http_client()
            .post(format!("{}/{path}", self.restate.ingress_url()))
            .json(&body)
            .send()
            .await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        Ok((status, body))
    }

    /// A frontline route of the app to `deployment_id`.
    pub(crate) async fn route(
        &self,
        environment: &str,
        deployment_id: &str,
        fqdn: &str,
        sticky: Sticky,
    ) -> Result<String> {
        let id = generate(IdKind::FrontlineRoute, &mut rand::rng());
        let project = tenancy::get_app(&self.db.pool, &self.app).await?.project_id;
        let route = NewRoute {
            id: &id,
            workspace_id: &self.workspace,
            project_id: &project,
            app_id: &self.app,
            environment_id: environment,
            deployment_id,
            fqdn,
            sticky,
        };
        ctrl_db::route::insert(&self.db.pool, &route, 1).await?;
        Ok(id)
    }

    /// Calls a handler through the ingress without waiting (`/send`).
    pub(crate) async fn send(&self, path: &str, body: Option<serde_json::Value>) -> Result<()> {
        let mut request = http_client().post(format!("{}/{path}/send", self.restate.ingress_url()));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        if !response.status().is_success() {
            bail!("{path}: {} {}", response.status(), response.text().await?);
        }
        Ok(())
    }

    /// Calls an ingress-private handler (`Service/key/Handler`) and waits
    /// until it has run, through a one-line test service that forwards it
    /// from inside Restate (the ingress refuses the handler). Waiting keeps
    /// consecutive calls in order: two one-way forwards could reach the
    /// object in either order.
    pub(crate) async fn call_private(
        &self,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<()> {
        let mut parts = path.splitn(3, '/');
        let (Some(service), Some(key), Some(handler)) = (parts.next(), parts.next(), parts.next())
        else {
            bail!("{path}: expected Service/key/Handler");
        };
        let body = serde_json::json!({
            "service": service, "key": key, "handler": handler, "body": body,
        });
        let (status, answer) = self.call("Internal/Forward", body).await?;
        if !(200..300).contains(&status) {
            bail!("{path}: {status} {answer}");
        }
        Ok(())
    }

    /// Rows of Restate's `sys_invocation` for a handler of a key.
    pub(crate) async fn invocations(
        &self,
        service: &str,
        key: &str,
        handler: &str,
    ) -> Result<Vec<serde_json::Value>> {
        self.query(&format!(
            "SELECT id, status, completion_failure FROM sys_invocation WHERE target_service_name = '{service}' AND target_service_key = '{key}' AND target_handler_name = '{handler}'"
        ))
        .await
    }

    /// Rows of a query on Restate's introspection tables (admin `/query`).
    pub(crate) async fn query(&self, sql: &str) -> Result<Vec<serde_json::Value>> {
        let rows: serde_json::Value = http_client()
            .post(format!("{}/query", self.restate.admin_url()))
            .header("accept", "application/json")
            .json(&serde_json::json!({ "query": sql }))
            .send()
            .await?
            .json()
            .await?;
        Ok(rows["rows"].as_array().cloned().unwrap_or_default())
    }

    /// Waits until the deployment has topology rows and all of them have `state`.
    pub(crate) async fn wait_topology(&self, id: &str, state: DesiredState) -> Result<()> {
        eventually(Duration::from_secs(30), || async {
            let rows = topology::list_by_deployment(&self.db.pool, id).await?;
            Ok(!rows.is_empty() && rows.iter().all(|t| t.desired_status == state))
        })
        .await
    }

    /// Deploys `id` all the way: starts the pipeline, reports its instance
    /// once it asked for one, and waits until the pipeline has finished.
    pub(crate) async fn deploy_to_ready(&self, id: &str) -> Result<()> {
        self.deploy(id).await?;
        self.wait_topology(id, DesiredState::Running).await?;
        self.report_running(id, 1).await?;
        self.wait_finished(id).await
    }
}

/// Starts the worker with `dir/worker.toml` and waits until it is ready
/// (registered with Restate).
async fn spawn_worker(dir: &std::path::Path, health_port: u16) -> Result<Supervised> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ctrl-worker"));
    cmd.arg("--config")
        .arg(dir.join("worker.toml"))
        .env_remove("RUST_LOG");
    let mut worker = Supervised::spawn("ctrl-worker", cmd, &dir.join("worker.log"), None)?;
    let ready = format!("http://127.0.0.1:{health_port}/health/ready");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if http_client()
            .get(&ready)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(worker);
        }
        if worker.exit_status().is_some() || Instant::now() > deadline {
            bail!("ctrl-worker did not become ready:\n{}", worker.log_tail(40));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `check` every 50 ms for up to `limit`.
pub(crate) async fn eventually<F, Fut>(limit: Duration, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await? {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("condition not met within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A test service that calls another service's handler from inside
/// Restate, where ingress-private handlers are reachable, and answers
/// with its outcome.
mod internal {
    use restate_sdk::context::RequestTarget;
    use restate_sdk::prelude::*;

    #[derive(serde::Deserialize)]
    pub(crate) struct Forward {
        service: String,
        key: String,
        handler: String,
        body: Option<serde_json::Value>,
    }

    pub(crate) struct Forwarder;

    #[restate_sdk::service(name = "Internal")]
    impl Forwarder {
        #[handler(name = "Forward")]
        async fn forward(&self, ctx: Context<'_>, Json(req): Json<Forward>) -> HandlerResult<()> {
            let target = RequestTarget::object(req.service, req.key, req.handler);
            match req.body {
                Some(body) => ctx.request::<_, ()>(target, Json(body)).call().await?,
                None => ctx.request::<_, ()>(target, ()).call().await?,
            }
            Ok(())
        }
    }
}
