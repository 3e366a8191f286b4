//! `cargo xtask chaos [ROUNDS]`: the local stack under random crashes.
//!
//! Starts the whole stack in a scratch directory on free loopback ports
//! (MariaDB, restate-server, podman, ctrl-worker, ctrl-api with the
//! ClusterService, krane), deploys an app, then each round starts an action
//! through the API — a deploy, a rollback, a promote or the deletion of an
//! old deployment — and, at a random
//! moment, SIGKILLs one random process (ctrl-worker, ctrl-api, krane,
//! restate-server or MariaDB) and starts it again. Once the stack is back it
//! checks the invariants:
//!
//! - no deployment is left progressing, and every deleted one is gone;
//! - exactly one live deployment, ready and running, and the production
//!   environment's live and environment routes point at it;
//! - containers match desired state (running: at least one; stopped,
//!   failed, cancelled: none);
//! - no Restate invocation is backing off or paused.
//!
//! It prints each round, the violations and the time; it fails if any
//! invariant did not hold within the settle time. Every process is stopped
//! by its pid at the end (or when this process dies).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use ctrl_testkit::process::Supervised;
use ctrl_testkit::{MariaDb, Podman, RestatePorts, RestateServer, free_ports, images};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use sqlx::MySqlPool;

use crate::dev;

const IMAGES: [&str; 2] = ["localhost/chaos:v1", "localhost/chaos:v2"];
/// How long the stack may take to settle after a round.
const SETTLE: Duration = Duration::from_secs(150);

/// `cargo xtask chaos` options.
#[derive(Debug, Args)]
pub(crate) struct ChaosArgs {
    /// Rounds to run.
    #[arg(default_value_t = 10)]
    rounds: usize,
    /// Seed of the random choices (printed; reuse it to replay a run's choices).
    #[arg(long)]
    seed: Option<u64>,
    /// Keep the scratch directory (logs, data) even when every round passed.
    #[arg(long)]
    keep: bool,
}

/// The processes that can be killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Victim {
    Worker,
    Api,
    Krane,
    Restate,
    MariaDb,
}

impl Victim {
    const ALL: [Self; 5] = [
        Self::Worker,
        Self::Api,
        Self::Krane,
        Self::Restate,
        Self::MariaDb,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Worker => "ctrl-worker",
            Self::Api => "ctrl-api",
            Self::Krane => "krane",
            Self::Restate => "restate-server",
            Self::MariaDb => "MariaDB",
        }
    }
}

/// The stack, each process restartable.
struct Stack {
    /// Deployments whose deletion was asked for: they must disappear.
    deleted: std::sync::Mutex<Vec<String>>,
    dir: PathBuf,
    bin: PathBuf,
    mysql_port: u16,
    mariadb: Option<MariaDb>,
    restate: RestateServer,
    podman: Podman,
    worker: Option<Supervised>,
    api: Option<Supervised>,
    krane: Option<Supervised>,
    ports: Ports,
    token: String,
    vault_key: String,
    database_url: String,
    db: MySqlPool,
    http: reqwest::Client,
}

#[derive(Debug, Clone, Copy)]
struct Ports {
    api: u16,
    worker: u16,
    worker_health: u16,
    krane_health: u16,
}

pub(crate) async fn run(args: ChaosArgs) -> Result<ExitCode> {
    let started = Instant::now();
    crate::deps::ensure(false)?;
    let bin = dev::build_services()?;
    let scratch = tempfile::Builder::new()
        .prefix("ctrl-chaos-")
        .tempdir()
        .context("create a scratch directory")?;
    let seed = args.seed.unwrap_or_else(rand::random);
    let mut rng = StdRng::seed_from_u64(seed);
    eprintln!(
        "chaos: {} round(s), seed {seed}, state and logs in {}",
        args.rounds,
        scratch.path().display()
    );
    let mut stack = Stack::start(scratch.path(), &bin).await?;
    let app = stack.seed_app().await?;
    let first = stack.deploy(&app, IMAGES[0], "chaos-0").await?;
    stack.wait_terminal(&first).await?;

    let mut violations: Vec<String> = Vec::new();
    let mut kills: BTreeMap<Victim, usize> = BTreeMap::new();
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut settle_times: Vec<Duration> = Vec::new();
    for round in 1..=args.rounds {
        let victim = Victim::ALL[rng.random_range(0..Victim::ALL.len())];
        let kill_after = Duration::from_millis(rng.random_range(0..1500));
        let down_for = Duration::from_millis(rng.random_range(200..2000));
        let choice = rng.random_range(0..10);
        let round_start = Instant::now();
        // The API answers at once; the kill lands while the workflow runs.
        let action = stack.act(&app, round, choice).await;
        tokio::time::sleep(kill_after).await;
        stack.crash(victim, down_for).await?;
        *kills.entry(victim).or_default() += 1;
        let action = match action {
            Ok(a) => a,
            Err(e) => format!("action failed: {e:#}"),
        };
        let back = Instant::now();
        let settled = stack.settle(&app).await;
        let settle = back.elapsed();
        settle_times.push(settle);
        let (verdict, problems) = match settled {
            Ok(outcome) => {
                outcomes = outcome;
                ("ok".to_owned(), Vec::new())
            }
            Err(problems) => (format!("{} violation(s)", problems.len()), problems),
        };
        println!(
            "round {round:>3}: {action}; killed {} at +{:.1}s for {:.1}s → {verdict}, settled {:.1}s after the restart ({:.1}s)",
            victim.name(),
            kill_after.as_secs_f64(),
            down_for.as_secs_f64(),
            settle.as_secs_f64(),
            round_start.elapsed().as_secs_f64()
        );
        for p in problems {
            println!("           ✗ {p}");
            violations.push(format!("round {round}: {p}"));
        }
    }

    settle_times.sort();
    let settle_p50 = settle_times
        .get(settle_times.len() / 2)
        .copied()
        .unwrap_or_default();
    let settle_max = settle_times.last().copied().unwrap_or_default();
    let mut summary = String::new();
    let _ = write!(
        summary,
        "\nchaos: {} round(s) in {:.0}s, seed {seed}; settled after a restart in {:.1}s p50, {:.1}s max; kills: {}; deployments now: {}; violations: {}",
        args.rounds,
        started.elapsed().as_secs_f64(),
        settle_p50.as_secs_f64(),
        settle_max.as_secs_f64(),
        kills
            .iter()
            .map(|(v, n)| format!("{} ×{n}", v.name()))
            .collect::<Vec<_>>()
            .join(", "),
        outcomes
            .iter()
            .map(|(s, n)| format!("{s} ×{n}"))
            .collect::<Vec<_>>()
            .join(", "),
        violations.len()
    );
    println!("{summary}");
    stack.stop();
    if !violations.is_empty() || args.keep {
        let kept = scratch.keep();
        eprintln!("state and logs kept in {}", kept.display());
    }
    Ok(if violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

impl Stack {
    async fn start(dir: &Path, bin: &Path) -> Result<Self> {
        let [
            mysql,
            ingress,
            admin,
            fabric,
            api,
            worker,
            worker_health,
            krane_health,
        ] = free_ports::<8>()?;
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
        let db = sqlx::mysql::MySqlPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(3))
            .connect_lazy(&database_url)?;
        let mut stack = Self {
            deleted: std::sync::Mutex::default(),
            dir: dir.to_owned(),
            bin: bin.to_owned(),
            mysql_port: mysql,
            mariadb: Some(mariadb),
            restate,
            podman,
            worker: None,
            api: None,
            krane: None,
            ports: Ports {
                api,
                worker,
                worker_health,
                krane_health,
            },
            token: dev::secret(&dir.join("token"), 24, dev::Encoding::Hex)?,
            vault_key: dev::secret(&dir.join("vault.key"), 32, dev::Encoding::Base64)?,
            database_url,
            db,
            http: ctrl_testkit::http_client(),
        };
        for victim in [Victim::Worker, Victim::Api, Victim::Krane] {
            stack.start_one(victim).await?;
        }
        Ok(stack)
    }

    fn secrets(&self) -> dev::Secrets<'_> {
        dev::Secrets {
            token: &self.token,
            edge_token: &self.token,
            vault_key: &self.vault_key,
        }
    }

    fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.api)
    }

    /// Starts one process (again) and waits until it is ready.
    async fn start_one(&mut self, victim: Victim) -> Result<()> {
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
                        // Replaced deployments go away soon: containers stay few.
                        (
                            "CTRL_WORKER__DEPLOY__RETIRE_PREVIOUS_LIVE_SECONDS",
                            "5".into(),
                        ),
                        (
                            "CTRL_WORKER__DEPLOY__READINESS_TIMEOUT_SECONDS",
                            "120".into(),
                        ),
                        ("CTRL_WORKER__DEPLOY__SWEEP_INTERVAL_SECONDS", "10".into()),
                        ("CTRL_WORKER__DEPLOY__SWEEP_GRACE_SECONDS", "60".into()),
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
                )?;
                dev::wait_for_api(&mut api, &self.api_url()).await?;
                self.api = Some(api);
            }
            Victim::Krane => {
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

    /// SIGKILLs `victim` (by its pid), waits `down_for`, starts it again.
    async fn crash(&mut self, victim: Victim, down_for: Duration) -> Result<()> {
        match victim {
            Victim::Worker => self.worker.take().map(|mut p| p.kill()),
            Victim::Api => self.api.take().map(|mut p| p.kill()),
            Victim::Krane => self.krane.take().map(|mut p| p.kill()),
            Victim::Restate => {
                self.restate.kill();
                Some(())
            }
            Victim::MariaDb => self.mariadb.take().map(MariaDb::kill),
        };
        tokio::time::sleep(down_for).await;
        self.start_one(victim)
            .await
            .with_context(|| format!("restart {}", victim.name()))
    }

    fn stop(&mut self) {
        for p in [&mut self.krane, &mut self.api, &mut self.worker] {
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
    async fn rpc(&self, method: &str, body: Value) -> Result<Value> {
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

    async fn seed_app(&self) -> Result<String> {
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

    async fn deploy(&self, app: &str, image: &str, key: &str) -> Result<String> {
        let created = self
            .rpc(
                "DeploymentService/CreateDeployment",
                json!({
                    "appId": app,
                    "environmentSlug": "production",
                    "image": { "image": image },
                    "idempotencyKey": key,
                }),
            )
            .await?;
        created["deploymentId"]
            .as_str()
            .map(str::to_owned)
            .context("CreateDeployment answered no id")
    }

    /// One round's action: mostly deploys, sometimes a rollback to the
    /// newest other ready deployment, a promote that confirms one, or the
    /// deletion of the oldest deployment that is not live.
    async fn act(&self, app: &str, round: usize, choice: u32) -> Result<String> {
        if choice == 6
            && let Some(oldest) = self.oldest_not_live(app).await?
        {
            self.rpc(
                "DeploymentService/DeleteDeployment",
                json!({ "deploymentId": oldest }),
            )
            .await?;
            self.deleted
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(oldest.clone());
            return Ok(format!("delete {oldest}"));
        }
        let (live, rolled_back) = self.live(app).await?;
        if rolled_back && choice < 5 {
            let live = live.context("rolled back but nothing live")?;
            self.rpc(
                "DeploymentService/Promote",
                json!({ "targetDeploymentId": live }),
            )
            .await?;
            return Ok(format!("promote {live} (confirm the rollback)"));
        }
        if choice >= 7
            && let Some(live) = &live
            && let Some(target) = self.rollback_target(app, live).await?
        {
            let answer = self
                .rpc(
                    "DeploymentService/Rollback",
                    json!({ "targetDeploymentId": target }),
                )
                .await;
            return Ok(match answer {
                Ok(_) => format!("rollback {live} → {target}"),
                // The target was retired meanwhile: a refusal is an answer.
                Err(e) => format!("rollback {live} → {target} refused ({e:#})"),
            });
        }
        let image = IMAGES[round % 2];
        let id = self.deploy(app, image, &format!("chaos-{round}")).await?;
        Ok(format!("deploy {id} ({image})"))
    }

    async fn live(&self, app: &str) -> Result<(Option<String>, bool)> {
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

    /// The oldest deployment of the app that is not live (and not already
    /// being deleted).
    async fn oldest_not_live(&self, app: &str) -> Result<Option<String>> {
        let deleted = self
            .deleted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT d.id FROM deployments d JOIN apps a ON a.id = d.app_id
             WHERE d.app_id = ? AND d.id <> COALESCE(a.live_deployment_id, '') ORDER BY d.pk",
        )
        .bind(app)
        .fetch_all(&self.db)
        .await?;
        Ok(rows.into_iter().find(|id| !deleted.contains(id)))
    }

    /// The newest ready, running production deployment other than `live`.
    async fn rollback_target(&self, app: &str, live: &str) -> Result<Option<String>> {
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

    async fn wait_terminal(&self, id: &str) -> Result<()> {
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

    /// Waits until every invariant holds (up to [`SETTLE`]); returns how the
    /// app's deployments ended, or what still did not hold.
    async fn settle(&self, app: &str) -> std::result::Result<BTreeMap<String, usize>, Vec<String>> {
        let deadline = Instant::now() + SETTLE;
        loop {
            match self.check(app).await {
                Ok(Ok(outcome)) => return Ok(outcome),
                Ok(Err(problems)) if Instant::now() > deadline => return Err(problems),
                Err(e) if Instant::now() > deadline => {
                    return Err(vec![format!("cannot check: {e:#}")]);
                }
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }

    /// The invariants, once: `Ok(Ok(statuses))` when they hold.
    async fn check(
        &self,
        app: &str,
    ) -> Result<std::result::Result<BTreeMap<String, usize>, Vec<String>>> {
        let mut problems = Vec::new();
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT id, status, desired_state FROM deployments WHERE app_id = ? ORDER BY pk",
        )
        .bind(app)
        .fetch_all(&self.db)
        .await?;
        for (id, status, _) in &rows {
            let progressing = status
                .parse::<ctrl_core::status::DeploymentStatus>()
                .is_ok_and(|s| s.is_progressing());
            if progressing {
                problems.push(format!("{id} is still {status}"));
            }
        }
        let (live, _) = self.live(app).await?;
        match &live {
            None => problems.push("no live deployment".into()),
            Some(live) => {
                match rows.iter().find(|(id, _, _)| id == live) {
                    Some((_, status, desired)) if status == "ready" && desired == "running" => {}
                    Some((_, status, desired)) => problems.push(format!(
                        "the live deployment {live} is {status} with desired state {desired}"
                    )),
                    None => problems.push(format!("the live deployment {live} does not exist")),
                }
                let stray: Vec<(String, String)> = sqlx::query_as(
                    "SELECT r.fully_qualified_domain_name, r.deployment_id FROM frontline_routes r
                     JOIN environments e ON e.id = r.environment_id
                     WHERE r.app_id = ? AND e.kind = 'production' AND r.sticky IN ('live', 'environment')
                       AND r.deployment_id <> ?",
                )
                .bind(app)
                .bind(live)
                .fetch_all(&self.db)
                .await?;
                for (host, target) in stray {
                    problems.push(format!("{host} points at {target}, not the live {live}"));
                }
            }
        }
        let deleted = self
            .deleted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for (id, status, _) in &rows {
            if deleted.contains(id) {
                problems.push(format!("{id} ({status}) was deleted but is still there"));
            }
        }
        let containers = self.containers()?;
        for id in &deleted {
            if let Some(n) = containers.get(id) {
                problems.push(format!("{id} was deleted but {n} container(s) still run"));
            }
        }
        for (id, status, desired) in &rows {
            let running = containers.get(id).copied().unwrap_or(0);
            let should_run = status == "ready" && desired == "running";
            if should_run && running == 0 {
                problems.push(format!("{id} should run but has no running container"));
            }
            let gone = desired == "stopped"
                || ["failed", "cancelled", "superseded"].contains(&status.as_str());
            if gone && running > 0 {
                problems.push(format!(
                    "{id} ({status}, desired {desired}) still has {running} running container(s)"
                ));
            }
        }
        let stuck = self
            .restate_query(
                "SELECT target, status FROM sys_invocation WHERE status IN ('backing-off', 'paused')",
            )
            .await?;
        for row in stuck {
            problems.push(format!(
                "Restate invocation {} is {}",
                row["target"], row["status"]
            ));
        }
        if problems.is_empty() {
            let mut outcome = BTreeMap::new();
            for (_, status, _) in rows {
                *outcome.entry(status).or_default() += 1;
            }
            Ok(Ok(outcome))
        } else {
            Ok(Err(problems))
        }
    }

    /// Running containers per deployment id (podman's CLI on the stack's podman).
    fn containers(&self) -> Result<BTreeMap<String, usize>> {
        let out = self
            .podman
            .command()?
            .args(["ps", "--format", "json"])
            .output()
            .context("podman ps")?;
        if !out.status.success() {
            bail!("podman ps: {}", String::from_utf8_lossy(&out.stderr));
        }
        let list: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let mut running = BTreeMap::new();
        for c in list {
            if let Some(id) = c["Labels"]["ctrl.dev/deployment-id"].as_str() {
                *running.entry(id.to_owned()).or_default() += 1;
            }
        }
        Ok(running)
    }

    async fn restate_query(&self, sql: &str) -> Result<Vec<Value>> {
        let answer: Value = self
            .http
            .post(format!("{}/query", self.restate.admin_url()))
            .header("accept", "application/json")
            .timeout(Duration::from_secs(5))
            .json(&json!({ "query": sql }))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(answer["rows"].as_array().cloned().unwrap_or_default())
    }
}
