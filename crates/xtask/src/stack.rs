//! The whole stack on real processes in a scratch directory, each process
//! restartable by its pid: MariaDB, restate-server, podman, ctrl-worker,
//! ctrl-api (with the ClusterService and EdgeService), krane and frontline
//! (region dev/local, with a certificate for `*.ctrl.localhost` signed by
//! the scratch directory's CA). `cargo xtask chaos` and `cargo xtask edge`
//! drive it through the API, as a user would.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ctrl_testkit::process::Supervised;
use ctrl_testkit::{MariaDb, Podman, RestatePorts, RestateServer, free_ports, images};
use serde_json::{Value, json};
use sqlx::MySqlPool;

use crate::dev;

/// The images apps deploy: the testkit's HTTP image answering `v1`, `v2`.
pub(crate) const IMAGES: [&str; 2] = ["localhost/chaos:v1", "localhost/chaos:v2"];
/// The same image serving a WebSocket echo (testkit's `$WEBSOCKET`).
pub(crate) const WEBSOCKET_IMAGE: &str = "localhost/chaos:ws";
/// How long the stack may take to settle after a change.
pub(crate) const SETTLE: Duration = Duration::from_secs(150);

/// The processes that can be killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Victim {
    Worker,
    Api,
    Krane,
    Restate,
    MariaDb,
    Frontline,
}

impl Victim {
    pub(crate) const ALL: [Self; 6] = [
        Self::Worker,
        Self::Api,
        Self::Krane,
        Self::Restate,
        Self::MariaDb,
        Self::Frontline,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Worker => "ctrl-worker",
            Self::Api => "ctrl-api",
            Self::Krane => "krane",
            Self::Restate => "restate-server",
            Self::MariaDb => "MariaDB",
            Self::Frontline => "frontline",
        }
    }
}

/// The stack, each process restartable.
pub(crate) struct Stack {
    /// Deployments whose deletion was asked for: they must disappear.
    pub(crate) deleted: std::sync::Mutex<Vec<String>>,
    pub(crate) dir: PathBuf,
    pub(crate) bin: PathBuf,
    pub(crate) mysql_port: u16,
    pub(crate) retire_previous_live: Duration,
    pub(crate) mariadb: Option<MariaDb>,
    pub(crate) restate: RestateServer,
    pub(crate) podman: Podman,
    pub(crate) worker: Option<Supervised>,
    pub(crate) api: Option<Supervised>,
    pub(crate) krane: Option<Supervised>,
    pub(crate) frontline: Option<Supervised>,
    /// The CA that signed the edge's certificate.
    pub(crate) ca_pem: String,
    pub(crate) ports: Ports,
    pub(crate) token: String,
    pub(crate) edge_token: String,
    pub(crate) agent_token: String,
    pub(crate) vault_key: String,
    pub(crate) database_url: String,
    pub(crate) db: MySqlPool,
    pub(crate) http: reqwest::Client,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Ports {
    pub(crate) api: u16,
    pub(crate) worker: u16,
    pub(crate) worker_health: u16,
    pub(crate) krane_health: u16,
    pub(crate) edge: dev::Edge,
}

impl Stack {
    /// Starts everything; a deployment replaced as live is stopped
    /// `retire_previous_live` later.
    pub(crate) async fn start(
        dir: &Path,
        bin: &Path,
        retire_previous_live: Duration,
    ) -> Result<Self> {
        let [
            mysql,
            ingress,
            admin,
            fabric,
            api,
            worker,
            worker_health,
            krane_health,
            edge_http,
            edge_https,
            edge_admin,
        ] = free_ports::<11>()?;
        let mariadb = MariaDb::builder()
            .dir(dir.join("mariadb"))
            .port(mysql)
            .start()
            .await?;
        let database_url = mariadb.database_url("ctrl");
        dev::migrate(&mariadb.admin_url(), &database_url).await?;
        let restate = RestateServer::builder()
            .data_dir(dir.join("restate"))
            .ports(RestatePorts {
                ingress,
                admin,
                fabric,
            })
            .log_filter("warn,restate=info")
            .start()
            .await?;
        let podman = Podman::builder().dir(dir.join("podman")).start().await?;
        let base = "localhost/chaos:base";
        images::build_http_image(podman.docker(), base).await?;
        for (tag, version) in [(IMAGES[0], "v1"), (IMAGES[1], "v2")] {
            images::derive_image(podman.docker(), base, tag, &[("VERSION", version)]).await?;
        }
        images::derive_image(
            podman.docker(),
            base,
            WEBSOCKET_IMAGE,
            &[("WEBSOCKET", "1")],
        )
        .await?;
        let db = sqlx::mysql::MySqlPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(3))
            .connect_lazy(&database_url)?;
        let mut stack = Self {
            deleted: std::sync::Mutex::default(),
            dir: dir.to_owned(),
            bin: bin.to_owned(),
            mysql_port: mysql,
            retire_previous_live,
            mariadb: Some(mariadb),
            restate,
            podman,
            worker: None,
            api: None,
            krane: None,
            frontline: None,
            ca_pem: String::new(),
            ports: Ports {
                api,
                worker,
                worker_health,
                krane_health,
                edge: dev::Edge {
                    http: edge_http,
                    https: edge_https,
                    admin: edge_admin,
                },
            },
            token: dev::secret(&dir.join("token"), 24, dev::Encoding::Hex)?,
            edge_token: dev::secret(&dir.join("edge-token"), 24, dev::Encoding::Hex)?,
            agent_token: dev::secret(&dir.join("agent-token"), 24, dev::Encoding::Hex)?,
            vault_key: dev::secret(&dir.join("vault.key"), 32, dev::Encoding::Base64)?,
            database_url,
            db,
            http: ctrl_testkit::http_client(),
        };
        dev::register_agents(&stack.database_url, stack.secrets()).await?;
        for victim in [Victim::Worker, Victim::Api, Victim::Krane] {
            stack.start_one(victim).await?;
        }
        let ca = dev::edge_certificate(dir, &stack.database_url, &stack.vault_key).await?;
        stack.ca_pem = std::fs::read_to_string(ca)?;
        stack.start_frontline().await?;
        Ok(stack)
    }

    /// Starts frontline and waits until it has a routing table. Plain HTTP
    /// is served too (no redirect), so load can run without TLS.
    pub(crate) async fn start_frontline(&mut self) -> Result<()> {
        let mut frontline = dev::start_frontline(
            &self.dir,
            &self.bin.join("frontline"),
            &self.api_url(),
            self.secrets(),
            self.ports.edge,
            &[
                ("FRONTLINE__LISTEN__REDIRECT_HTTPS", "false".into()),
                ("FRONTLINE__PROXY__TRAFFIC_REPORT_SECONDS", "2".into()),
            ],
        )?;
        dev::wait_for_http(
            &mut frontline,
            &format!("http://127.0.0.1:{}/health/ready", self.ports.edge.admin),
        )
        .await?;
        self.frontline = Some(frontline);
        Ok(())
    }

    pub(crate) fn secrets(&self) -> dev::Secrets<'_> {
        dev::Secrets {
            token: &self.token,
            edge_token: &self.edge_token,
            agent_token: &self.agent_token,
            vault_key: &self.vault_key,
        }
    }

    pub(crate) fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.api)
    }

    /// Starts one process (again) and waits until it is ready.
    pub(crate) async fn start_one(&mut self, victim: Victim) -> Result<()> {
        match victim {
            Victim::Worker => {
                let mut worker = dev::start_ctrl_worker(
                    &self.dir,
                    &self.bin.join("ctrl-worker"),
                    self.ports.worker,
                    self.ports.worker_health,
                    &self.database_url,
                    &self.restate,
                    &[
                        (
                            "CTRL_WORKER__DEPLOY__RETIRE_PREVIOUS_LIVE_SECONDS",
                            self.retire_previous_live.as_secs().to_string(),
                        ),
                        (
                            "CTRL_WORKER__DEPLOY__READINESS_TIMEOUT_SECONDS",
                            "120".into(),
                        ),
                        ("CTRL_WORKER__DEPLOY__SWEEP_INTERVAL_SECONDS", "10".into()),
                        ("CTRL_WORKER__DEPLOY__SWEEP_GRACE_SECONDS", "60".into()),
                        (
                            "CTRL_BUILD_DOCKER_SOCKET",
                            self.podman.socket().display().to_string(),
                        ),
                    ],
                )?;
                dev::wait_for_http(
                    &mut worker,
                    &format!("http://127.0.0.1:{}/health/ready", self.ports.worker_health),
                )
                .await?;
                self.worker = Some(worker);
            }
            Victim::Api => {
                let mut api = dev::start_ctrl_api(
                    &self.dir,
                    &self.bin.join("ctrl-api"),
                    self.ports.api,
                    &self.database_url,
                    self.secrets(),
                    &self.restate,
                    &[("CTRL_API_OPS_LISTEN", "127.0.0.1:0".into())],
                )?;
                dev::wait_for_api(&mut api, &self.api_url()).await?;
                self.api = Some(api);
            }
            Victim::Krane => {
                // Its own secrets directory: never a running dev stack's.
                let secrets_dir = format!("/dev/shm/ctrl-krane/stack-{}", std::process::id());
                let mut krane = dev::start_krane(
                    &self.dir,
                    &self.bin.join("krane"),
                    &self.api_url(),
                    self.secrets(),
                    &self.podman,
                    self.ports.krane_health,
                    &[
                        ("KRANE__AGENT__RECONCILE_SECONDS", "5".into()),
                        ("KRANE__AGENT__REPORT_SECONDS", "2".into()),
                        ("KRANE__DOCKER__SECRETS_DIR", secrets_dir),
                    ],
                )?;
                dev::wait_for_http(
                    &mut krane,
                    &format!("http://127.0.0.1:{}/health/ready", self.ports.krane_health),
                )
                .await?;
                self.krane = Some(krane);
            }
            Victim::Restate => self.restate.restart().await?,
            Victim::Frontline => self.start_frontline().await?,
            Victim::MariaDb => {
                self.mariadb = Some(
                    MariaDb::builder()
                        .dir(self.dir.join("mariadb"))
                        .port(self.mysql_port)
                        .start()
                        .await?,
                );
            }
        }
        Ok(())
    }

    /// Resident memory (KiB, `/proc/<pid>/status` VmRSS) of each ctrl
    /// service running now (ctrl-api serves cluster-sync here).
    pub(crate) fn rss(&self) -> Vec<(&'static str, Option<u64>)> {
        [
            (Victim::Api, &self.api),
            (Victim::Worker, &self.worker),
            (Victim::Krane, &self.krane),
            (Victim::Frontline, &self.frontline),
        ]
        .into_iter()
        .map(|(victim, process)| (victim.name(), process.as_ref().and_then(rss_kib)))
        .collect()
    }

    /// SIGKILLs `victim` (by its pid), waits `down_for`, starts it again.
    pub(crate) async fn crash(&mut self, victim: Victim, down_for: Duration) -> Result<()> {
        match victim {
            Victim::Worker => self.worker.take().map(|mut p| p.kill()),
            Victim::Api => self.api.take().map(|mut p| p.kill()),
            Victim::Krane => self.krane.take().map(|mut p| p.kill()),
            Victim::Restate => {
                self.restate.kill();
                Some(())
            }
            Victim::MariaDb => self.mariadb.take().map(MariaDb::kill),
            Victim::Frontline => self.frontline.take().map(|mut p| p.kill()),
        };
        tokio::time::sleep(down_for).await;
        self.start_one(victim)
            .await
            .with_context(|| format!("restart {}", victim.name()))
    }

    pub(crate) fn stop(&mut self) {
        for p in [
            &mut self.frontline,
            &mut self.krane,
            &mut self.api,
            &mut self.worker,
        ] {
            if let Some(mut p) = p.take() {
                p.terminate(Duration::from_secs(10));
            }
        }
        self.podman.stop(Duration::from_secs(10));
        self.restate.stop(Duration::from_secs(10));
        if let Some(m) = self.mariadb.take() {
            m.stop(Duration::from_secs(20));
        }
    }

    /// One Connect JSON call, retried while the API (or what it needs) is down.
    pub(crate) async fn rpc(&self, method: &str, body: Value) -> Result<Value> {
        let url = format!("{}/ctrl.v1.{method}", self.api_url());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let answer = self
                .http
                .post(&url)
                .header("authorization", format!("Bearer {}", self.token))
                .header("content-type", "application/json")
                .timeout(Duration::from_secs(10))
                .json(&body)
                .send()
                .await;
            let retry = match answer {
                Ok(r) if r.status().is_success() => return Ok(r.json().await?),
                Ok(r) => {
                    let status = r.status();
                    let text = r.text().await.unwrap_or_default();
                    // Unavailable / internal: the stack is on its way back.
                    if !status.is_server_error() {
                        bail!("{method}: {status} {text}");
                    }
                    format!("{status} {text}")
                }
                Err(e) => e.to_string(),
            };
            if Instant::now() > deadline {
                bail!("{method}: still failing after 60 s: {retry}");
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    pub(crate) async fn seed_app(&self) -> Result<String> {
        let ws = self
            .rpc(
                "WorkspaceService/CreateWorkspace",
                json!({ "name": "Chaos", "slug": "chaos" }),
            )
            .await?;
        let project = self
            .rpc(
                "ProjectService/CreateProject",
                json!({ "workspaceId": ws["workspace"]["id"], "name": "Chaos", "slug": "chaos" }),
            )
            .await?;
        let app = self
            .rpc(
                "AppService/CreateApp",
                json!({ "projectId": project["project"]["id"], "name": "Web", "slug": "web" }),
            )
            .await?;
        app["app"]["id"]
            .as_str()
            .map(str::to_owned)
            .context("CreateApp answered no app id")
    }

    pub(crate) async fn deploy(&self, app: &str, image: &str, key: &str) -> Result<String> {
        self.deploy_commit(app, image, key, None).await
    }

    /// Deploys `image` to production, as built from `commit` (sha, branch)
    /// if given: the commit and branch hostnames come from it.
    pub(crate) async fn deploy_commit(
        &self,
        app: &str,
        image: &str,
        key: &str,
        commit: Option<(&str, &str)>,
    ) -> Result<String> {
        let mut request = json!({
            "appId": app,
            "environmentSlug": "production",
            "image": { "image": image },
            "idempotencyKey": key,
        });
        if let Some((sha, branch)) = commit {
            request["git"] = json!({ "commitSha": sha, "branch": branch });
        }
        let created = self
            .rpc("DeploymentService/CreateDeployment", request)
            .await?;
        created["deploymentId"]
            .as_str()
            .map(str::to_owned)
            .context("CreateDeployment answered no id")
    }

    pub(crate) async fn live(&self, app: &str) -> Result<(Option<String>, bool)> {
        let answer = self
            .rpc("AppService/GetApp", json!({ "appId": app }))
            .await?;
        let live = answer["app"]["liveDeploymentId"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        Ok((
            live,
            answer["app"]["isRolledBack"].as_bool().unwrap_or(false),
        ))
    }

    /// The newest ready, running production deployment other than `live`.
    pub(crate) async fn rollback_target(&self, app: &str, live: &str) -> Result<Option<String>> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT d.id FROM deployments d JOIN environments e ON e.id = d.environment_id
             WHERE d.app_id = ? AND e.kind = 'production' AND d.id <> ? AND d.status = 'ready'
               AND d.desired_state = 'running' ORDER BY d.pk DESC LIMIT 1",
        )
        .bind(app)
        .bind(live)
        .fetch_all(&self.db)
        .await?;
        Ok(rows.into_iter().next())
    }

    pub(crate) async fn wait_terminal(&self, id: &str) -> Result<()> {
        let deadline = Instant::now() + SETTLE;
        loop {
            let status: Option<String> =
                sqlx::query_scalar("SELECT status FROM deployments WHERE id = ?")
                    .bind(id)
                    .fetch_optional(&self.db)
                    .await
                    .ok()
                    .flatten();
            match status.as_deref() {
                Some("ready") => return Ok(()),
                Some(s @ ("failed" | "cancelled" | "superseded" | "skipped" | "stopped")) => {
                    bail!("{id} ended {s}")
                }
                _ if Instant::now() > deadline => bail!("{id} never became ready"),
                _ => tokio::time::sleep(Duration::from_millis(300)).await,
            }
        }
    }

    /// The app's production live hostname.
    pub(crate) async fn live_host(&self, app: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT r.fully_qualified_domain_name FROM frontline_routes r
             JOIN environments e ON e.id = r.environment_id
             WHERE r.app_id = ? AND e.kind = 'production' AND r.sticky = 'live' LIMIT 1",
        )
        .bind(app)
        .fetch_optional(&self.db)
        .await?)
    }

    /// GET `path` of `host` through the edge over plain HTTP: (status, the
    /// deployment that answered, body).
    pub(crate) async fn edge_get(
        &self,
        host: &str,
        path: &str,
    ) -> Result<(u16, Option<String>, String)> {
        let r = self
            .http
            .get(format!("http://127.0.0.1:{}{path}", self.ports.edge.http))
            .header("host", host)
            .timeout(Duration::from_secs(10))
            .send()
            .await?;
        let status = r.status().as_u16();
        let served = r
            .headers()
            .get("x-ctrl-deployment")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok((status, served, r.text().await?))
    }
}

/// A process's resident memory in KiB (`/proc/<pid>/status` VmRSS).
pub(crate) fn rss_kib(process: &Supervised) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{}/status", process.id().pid))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}
