//! Building: the image a deployment runs. A given image is used as is; an
//! upload or a git commit is built by the configured backend, in steps:
//!
//! 1. queue — the deployment's `builds` row (one per deployment);
//! 2. resolve (git) — the branch head or pinned SHA, with its metadata,
//!    recorded on the deployment;
//! 3. take a build slot of the workspace — waiting durably (and saying why)
//!    while others hold them, production first, then oldest first;
//! 4. build and push — one long `ctx.run`: fetch the source, check and
//!    re-root it, build, push; output streamed to `build_logs` and the
//!    step's message; cancelled when the deployment stops being active;
//!    bounded by the build timeout. The backend is idempotent per build id,
//!    so a retry after a crash reuses what was pushed or built;
//! 5. record — the image **by digest** on the build and the deployment.

use std::collections::VecDeque;
use std::time::Duration;

use ctrl_build::builder::{BuildError, BuildEvent, BuildRequest, Built};
use ctrl_build::context::{self, Layout};
use ctrl_core::id::IdKind;
use ctrl_core::status::{DeploymentStatus, StepKind};
use ctrl_db::build::{self, NewBuild, Slot};
use ctrl_db::deployment;
use ctrl_github::{RepoRef, Want};
use restate_sdk::prelude::*;
use serde::{Deserialize, Serialize};
use sqlx::MySqlPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::compensation::Undo;
use super::{BuildSpec, Plan, Source, steps};
use crate::builds::Builds;
use crate::errors::{WorkflowError, begin, commit, db_error, now_ms, step_retry};

/// How often build output is written out, and how often a running build
/// checks that its deployment is still wanted.
const FLUSH_EVERY: Duration = Duration::from_millis(250);
const CANCEL_CHECK_EVERY: Duration = Duration::from_secs(1);

/// Output lines quoted in a failed build's error.
const TAIL_LINES: usize = 8;

/// The longest pause between two looks for a free build slot.
const SLOT_POLL_MAX: Duration = Duration::from_secs(10);

/// The image to run: the given one, or the one built for this deployment.
pub(super) async fn image(
    db: &MySqlPool,
    builds: &Builds,
    ctx: &ObjectContext<'_>,
    plan: &Plan,
    undo: &mut Vec<Undo>,
) -> Result<String, TerminalError> {
    let advance = |message: String| async move {
        steps::advance(
            db,
            ctx,
            &plan.workspace_id,
            &plan.deployment_id,
            DeploymentStatus::Building,
            &message,
        )
        .await
    };
    let spec = match &plan.source {
        Source::Image(image) => {
            advance(format!("Using image {image}")).await?;
            return Ok(image.clone());
        }
        Source::Context { spec, .. } | Source::Git { spec, .. } => spec,
    };
    advance("Queued for a build".into()).await?;
    let (Some(builder), Some(name)) = (
        builds.builder.as_ref(),
        builds.image_name(
            &plan.workspace_slug,
            &plan.project_slug,
            &plan.app_slug,
            &plan.deployment_id,
        ),
    ) else {
        return Err(WorkflowError::BuildsUnavailable(
            "This server does not build images: its worker has no build backend ([build] backend and [registry]).".into(),
        )
        .into());
    };
    if matches!(plan.source, Source::Context { .. }) && builds.store.is_none() {
        return Err(WorkflowError::BuildsUnavailable(
            "This server cannot read uploaded build contexts: its worker has no [build_contexts]."
                .into(),
        )
        .into());
    }
    let build_id = queue(db, ctx, plan, builder.name(), spec).await?;
    undo.push(Undo::EndBuild);
    let sha = match &plan.source {
        Source::Git {
            repository,
            installation_id,
            ..
        } => Some(
            resolve(
                db,
                builds,
                ctx,
                plan,
                &build_id,
                repository,
                *installation_id,
            )
            .await?,
        ),
        _ => None,
    };
    take_slot(db, builds, ctx, plan, &build_id).await?;
    let job = Job {
        build_id: build_id.clone(),
        deployment_id: plan.deployment_id.clone(),
        source: plan.source.clone(),
        sha,
        request: BuildRequest {
            build_id: build_id.clone(),
            project_id: plan.project_id.clone(),
            image: name,
            build_args: spec.args.clone(),
            platform: builds.settings.platform.clone(),
            labels: Default::default(),
            // Opened inside the build step only (never journaled).
            secrets: Default::default(),
        },
    };
    let retry = RunRetryPolicy::new()
        .initial_delay(Duration::from_secs(2))
        .exponentiation_factor(2.0)
        .max_delay(Duration::from_secs(30))
        .max_attempts(builds.settings.attempts);
    let (pool, b) = (db.clone(), builds.clone());
    let Json(built) = ctx
        .run(|| {
            let (pool, b, job) = (pool.clone(), b.clone(), job.clone());
            async move { execute(&pool, &b, &job).await.map(Json) }
        })
        .name("build and push image")
        .retry_policy(retry)
        .await?;
    record(db, ctx, &build_id, &built).await?;
    steps::show(
        db,
        ctx,
        &plan.deployment_id,
        StepKind::Building,
        &format!("Built {}", built.image),
    )
    .await?;
    Ok(built.image)
}

/// Creates (or finds) the deployment's build row.
async fn queue(
    db: &MySqlPool,
    ctx: &ObjectContext<'_>,
    plan: &Plan,
    backend: &'static str,
    spec: &BuildSpec,
) -> Result<String, TerminalError> {
    let (pool, plan, spec) = (db.clone(), plan.clone(), spec.clone());
    ctx.run(|| {
        let (pool, plan, spec) = (pool.clone(), plan.clone(), spec.clone());
        async move {
            let id = ctrl_core::id::generate(IdKind::Build, &mut rand::rng());
            let repository = match &plan.source {
                Source::Git { repository, .. } => Some(repository.as_str()),
                _ => None,
            };
            let mut tx = begin(&pool).await?;
            let b = build::ensure(
                &mut tx,
                &NewBuild {
                    id: &id,
                    workspace_id: &plan.workspace_id,
                    app_id: &plan.app_id,
                    deployment_id: &plan.deployment_id,
                    backend,
                    is_production: plan.is_production,
                    git_repository: repository,
                    context_path: &spec.dir,
                    dockerfile_path: &spec.dockerfile,
                },
                now_ms(),
            )
            .await
            .map_err(db_error)?;
            commit(tx).await?;
            Ok(b.id)
        }
    })
    .name("queue build")
    .retry_policy(step_retry())
    .await
}

/// Resolves the commit to build (the pinned SHA, the branch head, or the
/// default branch's head) and records it with its metadata.
async fn resolve(
    db: &MySqlPool,
    builds: &Builds,
    ctx: &ObjectContext<'_>,
    plan: &Plan,
    build_id: &str,
    repository: &str,
    installation_id: Option<u64>,
) -> Result<String, TerminalError> {
    let what = match (&plan.git_commit_sha, &plan.git_branch) {
        (Some(sha), _) => format!("Resolving commit {sha} of {repository}"),
        (None, Some(branch)) => format!("Resolving the head of {branch} in {repository}"),
        (None, None) => format!("Resolving the default branch of {repository}"),
    };
    steps::show(db, ctx, &plan.deployment_id, StepKind::Building, &what).await?;
    let (pool, github) = (db.clone(), builds.github.clone());
    let (id, build_id, repository) = (
        plan.deployment_id.clone(),
        build_id.to_owned(),
        repository.to_owned(),
    );
    let (sha, branch) = (plan.git_commit_sha.clone(), plan.git_branch.clone());
    ctx.run(|| {
        let (pool, github, id, build_id, repository) = (
            pool.clone(),
            github.clone(),
            id.clone(),
            build_id.clone(),
            repository.clone(),
        );
        let want = match (&sha, &branch) {
            (Some(sha), _) => Want::Commit(sha.clone()),
            (None, Some(branch)) => Want::Branch(branch.clone()),
            (None, None) => Want::DefaultBranch,
        };
        async move {
            let repo = RepoRef::parse(&repository).map_err(github_error)?;
            let c = github
                .resolve(&repo, installation_id, want)
                .await
                .map_err(github_error)?;
            let now = now_ms();
            let mut tx = begin(&pool).await?;
            deployment::set_git_commit(
                &mut *tx,
                &id,
                &deployment::ResolvedCommit {
                    sha: &c.sha,
                    branch: c.branch.as_deref(),
                    message: &c.message,
                    author_handle: &c.author_handle,
                    author_avatar_url: &c.author_avatar_url,
                    timestamp: c.timestamp_ms,
                },
                now,
            )
            .await
            .map_err(db_error)?;
            build::set_commit(&mut *tx, &build_id, &c.sha, now)
                .await
                .map_err(db_error)?;
            commit(tx).await?;
            Ok(c.sha)
        }
    })
    .name("resolve commit")
    .retry_policy(step_retry())
    .await
}

/// A GitHub failure: retried when GitHub may answer later, else the
/// deployment fails with GitHub's reason.
fn github_error(e: ctrl_github::GitHubError) -> HandlerError {
    if e.is_transient() {
        HandlerError::from(e)
    } else {
        WorkflowError::BuildFailed(e.to_string()).into()
    }
}

/// The answer of one look for a slot, as journaled.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum SlotAnswer {
    Started,
    Wait { running: i64, ahead: i64 },
    Ended,
}

/// Waits (durably) until the build holds one of its workspace's slots.
async fn take_slot(
    db: &MySqlPool,
    builds: &Builds,
    ctx: &ObjectContext<'_>,
    plan: &Plan,
    build_id: &str,
) -> Result<(), TerminalError> {
    let limit = builds.settings.slots_per_workspace;
    let (mut waited, mut delay, mut shown) = (Duration::ZERO, Duration::from_secs(1), None);
    loop {
        let (pool, id) = (db.clone(), build_id.to_owned());
        let Json(answer) = ctx
            .run(|| {
                let (pool, id) = (pool.clone(), id.clone());
                async move {
                    let mut tx = begin(&pool).await?;
                    let slot = build::try_start(&mut tx, &id, limit, now_ms())
                        .await
                        .map_err(db_error)?;
                    commit(tx).await?;
                    Ok(Json(match slot {
                        Slot::Started => SlotAnswer::Started,
                        Slot::Wait { running, ahead } => SlotAnswer::Wait { running, ahead },
                        Slot::Ended(_) => SlotAnswer::Ended,
                    }))
                }
            })
            .name("take a build slot")
            .retry_policy(step_retry())
            .await?;
        let (running, ahead) = match answer {
            SlotAnswer::Started => return Ok(()),
            SlotAnswer::Ended => return Err(WorkflowError::NoLongerActive.into()),
            SlotAnswer::Wait { running, ahead } => (running, ahead),
        };
        if waited >= builds.settings.queue_timeout {
            return Err(WorkflowError::BuildTimedOut(format!(
                "No build slot became free within {} s ({running} of {limit} builds of this workspace running).",
                builds.settings.queue_timeout.as_secs()
            ))
            .into());
        }
        let message = match ahead {
            0 => format!(
                "Waiting for a build slot: {running} of {limit} builds of this workspace are running"
            ),
            n => format!(
                "Waiting for a build slot: {running} of {limit} builds of this workspace are running, {n} queued ahead"
            ),
        };
        if shown.as_ref() != Some(&message) {
            steps::show(db, ctx, &plan.deployment_id, StepKind::Building, &message).await?;
            shown = Some(message);
        }
        ctx.sleep(delay).await?;
        waited += delay;
        delay = (delay * 2).min(SLOT_POLL_MAX);
    }
}

/// What one attempt of the build needs.
#[derive(Debug, Clone)]
struct Job {
    build_id: String,
    deployment_id: String,
    source: Source,
    sha: Option<String>,
    request: BuildRequest,
}

/// One attempt: fetch, check, build, push. A transient failure (engine,
/// registry, store or GitHub unreachable) is retried; anything else fails
/// the deployment with the reason and the build's last output lines.
async fn execute(db: &MySqlPool, builds: &Builds, job: &Job) -> Result<Built, HandlerError> {
    let builder = builds
        .builder
        .clone()
        .ok_or_else(|| WorkflowError::BuildsUnavailable("no build backend".into()))?;
    let first_line = build::last_log_line(db, &job.build_id)
        .await
        .map_err(db_error)?
        + 1;
    let (tx, rx) = mpsc::channel(1024);
    let writer = tokio::spawn(write_output(
        db.clone(),
        job.build_id.clone(),
        job.deployment_id.clone(),
        first_line,
        builds.settings.max_log_lines,
        rx,
    ));
    if first_line > 1 {
        let _ = tx
            .send(BuildEvent::Line(
                "ctrl: an earlier attempt of this build was interrupted; resuming".into(),
            ))
            .await;
    }
    let cancel = CancellationToken::new();
    let watcher = tokio::spawn(watch_deployment(
        db.clone(),
        job.deployment_id.clone(),
        cancel.clone(),
    ));
    let timeout = builds.settings.timeout;
    let result = tokio::time::timeout(timeout, async {
        let mut request = job.request.clone();
        request.secrets = open_secrets(db, builds, job)
            .await
            .map_err(Failure::Decided)?;
        let context = fetch(db, builds, job, &tx).await?;
        builder
            .build(&request, context, &tx, &cancel)
            .await
            .map_err(Failure::Build)
    })
    .await;
    watcher.abort();
    drop(tx);
    let tail = writer.await.unwrap_or_default();
    match result {
        Ok(Ok(built)) => Ok(built),
        Err(_) => Err(WorkflowError::BuildTimedOut(format!(
            "The build did not finish within {} s{}.{}",
            timeout.as_secs(),
            tail.step
                .as_ref()
                .map(|s| format!(" (it was at {s})"))
                .unwrap_or_default(),
            tail.quote()
        ))
        .into()),
        Ok(Err(Failure::Build(BuildError::Cancelled))) => Err(WorkflowError::NoLongerActive.into()),
        Ok(Err(Failure::Build(e))) if e.is_transient() => Err(HandlerError::from(e)),
        Ok(Err(Failure::Build(e))) => {
            Err(WorkflowError::BuildFailed(format!("Build failed: {e}.{}", tail.quote())).into())
        }
        Ok(Err(Failure::Decided(e))) => Err(e),
    }
}

/// Why an attempt stopped.
#[derive(Debug)]
enum Failure {
    /// The backend's verdict.
    Build(BuildError),
    /// Fetching or checking the source failed; the error already says
    /// whether it is retried (transient) or terminal.
    Decided(HandlerError),
}

/// The values of the variables the build receives as secrets, opened from
/// the deployment's sealed snapshot (the vault's keyring is the
/// environment). They live only in this attempt's memory.
async fn open_secrets(
    db: &MySqlPool,
    builds: &Builds,
    job: &Job,
) -> Result<std::collections::BTreeMap<String, zeroize::Zeroizing<String>>, HandlerError> {
    use prost::Message;
    let names = match &job.source {
        Source::Context { spec, .. } | Source::Git { spec, .. } => &spec.secrets,
        Source::Image(_) => return Ok(Default::default()),
    };
    if names.is_empty() {
        return Ok(Default::default());
    }
    let vault = builds.vault.as_ref().ok_or_else(|| {
        WorkflowError::BuildsUnavailable(
            "This build needs secrets, and the worker has no [vault] to open them with.".into(),
        )
    })?;
    let d = deployment::get(db, &job.deployment_id)
        .await
        .map_err(db_error)?;
    let snapshot =
        ctrl_proto::ctrl::v1::EncryptedEnvironment::decode(d.encrypted_environment.as_slice())
            .map_err(|e| {
                WorkflowError::Internal(format!("the deployment's variables cannot be read: {e}"))
            })?;
    let mut secrets = std::collections::BTreeMap::new();
    for name in names {
        let sealed = snapshot.variables.get(name).ok_or_else(|| {
            WorkflowError::BuildFailed(format!(
                "The build secret {name} is not among the deployment's variables."
            ))
        })?;
        let plain = vault.open(&snapshot.keyring, sealed).map_err(|e| {
            tracing::error!(deployment_id = %job.deployment_id, variable = %name, error = %e, "cannot open a build secret");
            WorkflowError::BuildFailed(format!("The build secret {name} could not be decrypted."))
        })?;
        let value = String::from_utf8(plain.to_vec()).map_err(|_| {
            WorkflowError::BuildFailed(format!("The build secret {name} is not UTF-8 text."))
        })?;
        secrets.insert(name.clone(), zeroize::Zeroizing::new(value));
    }
    Ok(secrets)
}

/// Downloads the source and makes it a checked context rooted at the
/// directory to build.
async fn fetch(
    db: &MySqlPool,
    builds: &Builds,
    job: &Job,
    events: &ctrl_build::builder::Events,
) -> Result<context::Context, Failure> {
    let (archive, layout, spec) = match &job.source {
        Source::Image(_) => {
            return Err(Failure::Decided(
                WorkflowError::Internal("an image deployment has nothing to build".into()).into(),
            ));
        }
        Source::Context { key, spec } => {
            let store = builds.store.as_ref().ok_or_else(|| {
                Failure::Decided(
                    WorkflowError::BuildsUnavailable("no [build_contexts]".into()).into(),
                )
            })?;
            let _ = events
                .send(BuildEvent::Step("Downloading the build context".into()))
                .await;
            let data = store.get(key).await.map_err(|e| {
                Failure::Decided(match e {
                    ctrl_build::store::StoreError::Unavailable(_) => HandlerError::from(e),
                    other => WorkflowError::BuildFailed(other.to_string()).into(),
                })
            })?;
            (data, Layout::Root, spec)
        }
        Source::Git {
            repository,
            installation_id,
            spec,
        } => {
            let sha = job.sha.as_deref().unwrap_or_default();
            let _ = events
                .send(BuildEvent::Step(format!(
                    "Downloading {repository} at {}",
                    &sha[..sha.len().min(12)]
                )))
                .await;
            let repo = RepoRef::parse(repository).map_err(|e| Failure::Decided(github_error(e)))?;
            let data = builds
                .github
                .tarball(&repo, *installation_id, sha)
                .await
                .map_err(|e| Failure::Decided(github_error(e)))?;
            (data.to_vec(), Layout::SingleTopDir, spec)
        }
    };
    let (dir, dockerfile, limits) = (
        spec.dir.clone(),
        spec.dockerfile.clone(),
        builds.settings.limits,
    );
    let size = archive.len();
    let context = tokio::task::spawn_blocking(move || {
        context::prepare(&archive, layout, &dir, &dockerfile, limits)
    })
    .await
    .map_err(|e| Failure::Decided(WorkflowError::Internal(e.to_string()).into()))?
    .map_err(|e| Failure::Decided(WorkflowError::BuildFailed(e.to_string()).into()))?;
    let _ = events
        .send(BuildEvent::Line(format!(
            "ctrl: build context of {} files, {} ({} compressed)",
            context.entries,
            context::human_bytes(context.bytes),
            context::human_bytes(size as u64)
        )))
        .await;
    build::set_progress(
        db,
        &job.build_id,
        None,
        0,
        i64::try_from(context.bytes).ok(),
        now_ms(),
    )
    .await
    .map_err(|e| Failure::Decided(db_error(e)))?;
    Ok(context)
}

/// Fires `cancel` once the deployment is no longer building (cancelled,
/// superseded, failed by someone else).
async fn watch_deployment(db: MySqlPool, deployment_id: String, cancel: CancellationToken) {
    loop {
        tokio::time::sleep(CANCEL_CHECK_EVERY).await;
        if let Ok(status) = deployment::status(&db, &deployment_id).await
            && status != DeploymentStatus::Building
        {
            tracing::info!(%deployment_id, %status, "deployment no longer building; stopping its build");
            cancel.cancel();
            return;
        }
    }
}

/// The end of a build's output, for its error message.
#[derive(Debug, Default)]
struct Tail {
    step: Option<String>,
    lines: VecDeque<String>,
}

impl Tail {
    fn quote(&self) -> String {
        if self.lines.is_empty() {
            return String::new();
        }
        let lines: Vec<&str> = self.lines.iter().map(String::as_str).collect();
        format!(" Last output:\n{}", lines.join("\n"))
    }
}

/// Writes build events out: lines to `build_logs` (numbered from `first`,
/// at most `max` kept), the current step to the build and the deployment's
/// building step, every [`FLUSH_EVERY`]. Writing is best effort (output is
/// informational; a failed write is logged, the build goes on).
async fn write_output(
    db: MySqlPool,
    build_id: String,
    deployment_id: String,
    first: i32,
    max: u32,
    mut rx: mpsc::Receiver<BuildEvent>,
) -> Tail {
    let mut tail = Tail::default();
    let mut pending: Vec<(i64, String)> = Vec::new();
    let (mut next, mut seen) = (first, first - 1);
    let mut step_changed = false;
    let max = i32::try_from(max).unwrap_or(i32::MAX);
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    let mut open = true;
    while open {
        tokio::select! {
            event = rx.recv() => match event {
                Some(BuildEvent::Line(line)) => {
                    seen = seen.saturating_add(1);
                    if tail.lines.len() == TAIL_LINES {
                        tail.lines.pop_front();
                    }
                    tail.lines.push_back(line.clone());
                    if seen <= max {
                        pending.push((now_ms(), line));
                    }
                    if pending.len() < 200 {
                        continue;
                    }
                }
                Some(BuildEvent::Step(step)) => {
                    tail.step = Some(step);
                    step_changed = true;
                    continue;
                }
                None => open = false,
            },
            _ = tick.tick() => {}
        }
        let lines: Vec<(i64, &str)> = pending.iter().map(|(at, l)| (*at, l.as_str())).collect();
        let written = build::append_logs(&db, &build_id, next, &lines).await;
        let step = step_changed.then(|| tail.step.clone()).flatten();
        let progress =
            build::set_progress(&db, &build_id, step.as_deref(), seen, None, now_ms()).await;
        if let Some(step) = &step {
            let _ =
                deployment::set_step_message(&db, &deployment_id, StepKind::Building, step).await;
        }
        if let Err(e) = written.and(progress) {
            tracing::warn!(%build_id, error = %e, "could not write build output");
        } else {
            next += i32::try_from(pending.len()).unwrap_or(0);
            pending.clear();
            step_changed = false;
        }
    }
    tail
}

/// Records the pushed image on the build and the deployment.
async fn record(
    db: &MySqlPool,
    ctx: &ObjectContext<'_>,
    build_id: &str,
    built: &Built,
) -> Result<(), TerminalError> {
    let (pool, id, image, digest) = (
        db.clone(),
        build_id.to_owned(),
        built.image.clone(),
        built.digest.clone(),
    );
    ctx.run(|| {
        let (pool, id, image, digest) = (pool.clone(), id.clone(), image.clone(), digest.clone());
        async move {
            let mut tx = begin(&pool).await?;
            build::succeed(&mut tx, &id, &image, &digest, now_ms())
                .await
                .map_err(db_error)?;
            commit(tx).await?;
            Ok(())
        }
    })
    .name("record image")
    .retry_policy(step_retry())
    .await
}
