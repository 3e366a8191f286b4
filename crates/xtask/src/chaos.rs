//! `cargo xtask chaos [ROUNDS]`: the local stack under random crashes.
//!
//! Starts the whole stack in a scratch directory on free loopback ports
//! (MariaDB, restate-server, podman, ctrl-worker, ctrl-api with the
//! ClusterService, krane), deploys an app, then each round starts an action
//! through the API — a deploy, a rollback, a promote or the deletion of an
//! old deployment — and, at a random
//! moment, SIGKILLs one random process (ctrl-worker, ctrl-api, krane,
//! restate-server, MariaDB or frontline) and starts it again. Once the stack is back it
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
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::dev;
use crate::stack::{IMAGES, SETTLE, Stack, Victim};

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

pub(crate) async fn run(args: ChaosArgs) -> Result<ExitCode> {
    let started = Instant::now();
    crate::deps::ensure(false)?;
    let bin = dev::build_services("dev")?;
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
    // Replaced deployments go away soon: containers stay few.
    let mut stack = Stack::start(scratch.path(), &bin, Duration::from_secs(5)).await?;
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
                // The edge agrees: the live hostname answers from the live deployment.
                if let Some(host) = self.live_host(app).await? {
                    match self.edge_get(&host, "/").await {
                        Ok((200, Some(served), _)) if served == *live => {}
                        Ok((status, served, _)) => problems.push(format!(
                            "the edge answers {status} from {} for {host}, not the live {live}",
                            served.as_deref().unwrap_or("no deployment")
                        )),
                        Err(e) => problems.push(format!("the edge does not answer {host}: {e:#}")),
                    }
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
