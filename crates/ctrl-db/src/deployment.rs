//! Deployments and their progress steps.
//!
//! Status changes are conditional updates with explicit names
//! ([`compare_and_set_status`], [`set_status_if_active`]) so races between
//! the workflow, cancellation and superseding resolve in the database: the
//! first writer wins and the loser sees `false`.

use ctrl_core::status::{DeploymentStatus, DesiredState, StepKind};
use sqlx::types::Json;
use sqlx::{FromRow, MySqlConnection, MySqlExecutor};

use crate::types::{
    ActorType, HealthCheck, Page, ShutdownSignal, SourceKind, TriggerKind, UpstreamProtocol,
};
use crate::{Error, Result};
use ctrl_core::names::clip;

/// A deployment row.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Deployment {
    /// Paging cursor.
    pub pk: u64,
    /// `d_…`
    pub id: String,
    /// Workload name.
    pub k8s_name: String,
    /// Owner.
    pub workspace_id: String,
    /// Owner.
    pub project_id: String,
    /// The app.
    pub app_id: String,
    /// The environment.
    pub environment_id: String,
    /// Lifecycle status.
    #[sqlx(try_from = "String")]
    pub status: DeploymentStatus,
    /// Why it failed.
    pub error_message: Option<String>,
    /// Whether instances should run.
    #[sqlx(try_from = "String")]
    pub desired_state: DesiredState,
    /// Image or git.
    pub source_kind: SourceKind,
    /// The image (set once known).
    pub image: Option<String>,
    /// The build that produced it.
    pub build_id: Option<String>,
    /// S3 key of the uploaded build context (context builds).
    pub build_context_path: Option<String>,
    /// Directory inside the repository or context to build (default ".").
    pub build_dir: Option<String>,
    /// Dockerfile inside that directory (default "Dockerfile").
    pub dockerfile_path: Option<String>,
    /// Build arguments.
    pub build_args: Option<Json<std::collections::BTreeMap<String, String>>>,
    /// Names of the snapshotted variables the build receives as secrets.
    pub build_secrets: Option<Json<Vec<String>>>,
    /// "owner/repo".
    pub git_repository: Option<String>,
    /// The GitHub App installation that reads the repository.
    pub git_installation_id: Option<i64>,
    /// Commit SHA.
    pub git_commit_sha: Option<String>,
    /// Exact branch name.
    pub git_branch: Option<String>,
    /// Commit message.
    pub git_commit_message: Option<String>,
    /// Author handle.
    pub git_commit_author_handle: Option<String>,
    /// Author avatar.
    pub git_commit_author_avatar_url: Option<String>,
    /// Commit time, unix ms.
    pub git_commit_timestamp: Option<i64>,
    /// Fork "owner/repo".
    pub fork_repository: Option<String>,
    /// The pull request it deploys.
    pub git_pr_number: Option<u32>,
    /// Snapshot: port.
    pub port: i32,
    /// Snapshot: CPU.
    pub cpu_millicores: i32,
    /// Snapshot: memory.
    pub memory_mib: i32,
    /// Snapshot: disk.
    pub storage_mib: i32,
    /// Snapshot: command.
    pub command: Json<Vec<String>>,
    /// Snapshot: health check.
    pub healthcheck: Option<Json<HealthCheck>>,
    /// Snapshot: stop signal.
    pub shutdown_signal: ShutdownSignal,
    /// Snapshot: grace period.
    pub termination_grace_seconds: i32,
    /// Snapshot: edge protocol.
    pub upstream_protocol: UpstreamProtocol,
    /// Snapshot of the sealed environment variables (encoded `ctrl.v1.EncryptedEnvironment`).
    pub encrypted_environment: Vec<u8>,
    /// Why it was created.
    pub trigger_kind: TriggerKind,
    /// Free text.
    pub trigger_reason: Option<String>,
    /// Who created it.
    pub actor_id: Option<String>,
    /// Their name.
    pub actor_name: Option<String>,
    /// Their kind.
    pub actor_type: Option<ActorType>,
    /// Client idempotency key.
    pub idempotency_key: Option<String>,
    /// Restate invocation of its Deploy workflow.
    pub invocation_id: Option<String>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
}

/// A deployment to insert (status pending, desired state running).
#[derive(Debug, Clone)]
pub struct NewDeployment {
    /// `d_…`
    pub id: String,
    /// Workload name.
    pub k8s_name: String,
    /// Owner.
    pub workspace_id: String,
    /// Owner.
    pub project_id: String,
    /// The app.
    pub app_id: String,
    /// The environment.
    pub environment_id: String,
    /// Image or git.
    pub source_kind: SourceKind,
    /// The image, for image deployments.
    pub image: Option<String>,
    /// What to build, for builds from source.
    pub build: Option<BuildSource>,
    /// "owner/repo".
    pub git_repository: Option<String>,
    /// Commit SHA.
    pub git_commit_sha: Option<String>,
    /// Exact branch name.
    pub git_branch: Option<String>,
    /// Commit message.
    pub git_commit_message: Option<String>,
    /// Author handle.
    pub git_commit_author_handle: Option<String>,
    /// Author avatar.
    pub git_commit_author_avatar_url: Option<String>,
    /// Commit time.
    pub git_commit_timestamp: Option<i64>,
    /// Fork "owner/repo".
    pub fork_repository: Option<String>,
    /// The pull request it deploys.
    pub git_pr_number: Option<u32>,
    /// Runtime snapshot.
    pub runtime: crate::settings::RuntimeSettings,
    /// Sealed environment snapshot.
    pub encrypted_environment: Vec<u8>,
    /// Why.
    pub trigger_kind: TriggerKind,
    /// Free text.
    pub trigger_reason: Option<String>,
    /// Who.
    pub actor_id: Option<String>,
    /// Their name.
    pub actor_name: Option<String>,
    /// Their kind.
    pub actor_type: Option<ActorType>,
    /// Client idempotency key; a repeat for the same app is
    /// `AlreadyExists { key: "deployments_idempotency" }`.
    pub idempotency_key: Option<String>,
}

/// What a deployment from source builds (besides its git columns).
#[derive(Debug, Clone, Default)]
pub struct BuildSource {
    /// S3 key of the uploaded context (context builds).
    pub context_path: Option<String>,
    /// Directory inside the repository or context.
    pub dir: Option<String>,
    /// Dockerfile inside that directory.
    pub dockerfile: Option<String>,
    /// Build arguments.
    pub args: std::collections::BTreeMap<String, String>,
    /// Variables (of the snapshot) the build receives as secrets.
    pub secrets: Vec<String>,
    /// The GitHub App installation (git builds).
    pub installation_id: Option<i64>,
}

/// Inserts a deployment.
pub async fn insert(ex: impl MySqlExecutor<'_>, d: &NewDeployment, now: i64) -> Result<()> {
    let r = &d.runtime;
    let b = d.build.as_ref();
    sqlx::query(
        "INSERT INTO deployments
           (id, k8s_name, workspace_id, project_id, app_id, environment_id, source_kind, image,
            build_context_path, build_dir, dockerfile_path, build_args, build_secrets, git_installation_id,
            git_repository, git_commit_sha, git_branch, git_commit_message, git_commit_author_handle,
            git_commit_author_avatar_url, git_commit_timestamp, fork_repository, git_pr_number,
            port, cpu_millicores, memory_mib, storage_mib, command, healthcheck, shutdown_signal,
            termination_grace_seconds, upstream_protocol, encrypted_environment,
            trigger_kind, trigger_reason, actor_id, actor_name, actor_type, idempotency_key,
            created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,
                 ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&d.id)
    .bind(&d.k8s_name)
    .bind(&d.workspace_id)
    .bind(&d.project_id)
    .bind(&d.app_id)
    .bind(&d.environment_id)
    .bind(d.source_kind)
    .bind(&d.image)
    .bind(b.and_then(|b| b.context_path.as_deref()))
    .bind(b.and_then(|b| b.dir.as_deref()))
    .bind(b.and_then(|b| b.dockerfile.as_deref()))
    .bind(b.map(|b| Json(&b.args)))
    .bind(b.map(|b| Json(&b.secrets)))
    .bind(b.and_then(|b| b.installation_id))
    .bind(&d.git_repository)
    .bind(&d.git_commit_sha)
    .bind(&d.git_branch)
    .bind(&d.git_commit_message)
    .bind(&d.git_commit_author_handle)
    .bind(&d.git_commit_author_avatar_url)
    .bind(d.git_commit_timestamp)
    .bind(&d.fork_repository)
    .bind(d.git_pr_number)
    .bind(r.port)
    .bind(r.cpu_millicores)
    .bind(r.memory_mib)
    .bind(r.storage_mib)
    .bind(&r.command)
    .bind(&r.healthcheck)
    .bind(r.shutdown_signal)
    .bind(r.termination_grace_seconds)
    .bind(r.upstream_protocol)
    .bind(&d.encrypted_environment)
    .bind(d.trigger_kind)
    .bind(&d.trigger_reason)
    .bind(&d.actor_id)
    .bind(&d.actor_name)
    .bind(d.actor_type)
    .bind(&d.idempotency_key)
    .bind(now)
    .bind(now)
    .execute(ex)
    .await?;
    Ok(())
}

const DEPLOYMENT: &str = "SELECT pk, id, k8s_name, workspace_id, project_id, app_id, environment_id, status,
    error_message, desired_state, source_kind, image, build_id, build_context_path, build_dir,
    dockerfile_path, build_args, build_secrets, git_repository, git_installation_id, git_commit_sha, git_branch,
    git_commit_message, git_commit_author_handle, git_commit_author_avatar_url, git_commit_timestamp,
    fork_repository, git_pr_number, port, cpu_millicores, memory_mib, storage_mib, command, healthcheck, shutdown_signal,
    termination_grace_seconds, upstream_protocol, encrypted_environment, trigger_kind, trigger_reason,
    actor_id, actor_name, actor_type, idempotency_key, invocation_id, created_at, updated_at FROM deployments";

/// The deployment with this id.
pub async fn get(ex: impl MySqlExecutor<'_>, id: &str) -> Result<Deployment> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("{DEPLOYMENT} WHERE id = ?")))
        .bind(id)
        .fetch_optional(ex)
        .await?
        .ok_or(Error::NotFound("deployment"))
}

/// The deployment created for this app with this idempotency key, if any.
pub async fn find_by_idempotency_key(
    ex: impl MySqlExecutor<'_>,
    app_id: &str,
    key: &str,
) -> Result<Option<Deployment>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{DEPLOYMENT} WHERE app_id = ? AND idempotency_key = ?"
    )))
    .bind(app_id)
    .bind(key)
    .fetch_optional(ex)
    .await?)
}

/// Filters for [`list`].
#[derive(Debug, Clone, Default)]
pub struct ListFilter<'a> {
    /// The app (required).
    pub app_id: &'a str,
    /// Only this environment.
    pub environment_id: Option<&'a str>,
    /// Only this exact branch.
    pub branch: Option<&'a str>,
    /// Only these statuses (empty = all).
    pub statuses: &'a [DeploymentStatus],
}

/// An app's deployments, newest first; `before` is the cursor (0 = start).
pub async fn list(
    ex: impl MySqlExecutor<'_>,
    f: &ListFilter<'_>,
    before: u64,
    limit: u32,
) -> Result<Page<Deployment>> {
    let mut sql = format!("{DEPLOYMENT} WHERE app_id = ?");
    if f.environment_id.is_some() {
        sql.push_str(" AND environment_id = ?");
    }
    if f.branch.is_some() {
        sql.push_str(" AND git_branch = ?");
    }
    if !f.statuses.is_empty() {
        sql.push_str(&format!(
            " AND status IN ({})",
            vec!["?"; f.statuses.len()].join(", ")
        ));
    }
    if before > 0 {
        sql.push_str(" AND pk < ?");
    }
    sql.push_str(" ORDER BY pk DESC LIMIT ?");
    let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(f.app_id);
    if let Some(env) = f.environment_id {
        q = q.bind(env);
    }
    if let Some(branch) = f.branch {
        q = q.bind(branch);
    }
    for s in f.statuses {
        q = q.bind(s.as_str());
    }
    if before > 0 {
        q = q.bind(before);
    }
    let rows: Vec<Deployment> = q.bind(limit + 1).fetch_all(ex).await?;
    Ok(Page::from_rows(rows, limit, |d| d.pk))
}

impl Deployment {
    /// What the deploy-gate rules (`ctrl_core::gate`) need to know about it;
    /// `is_production` is its environment's kind.
    pub fn gate_facts(&self, is_production: bool) -> ctrl_core::gate::DeploymentFacts<'_> {
        ctrl_core::gate::DeploymentFacts {
            id: &self.id,
            project_id: &self.project_id,
            app_id: &self.app_id,
            environment_id: &self.environment_id,
            status: self.status,
            desired_state: self.desired_state,
            is_production,
        }
    }
}

/// Marks a just-inserted (pending) deployment as not started on purpose:
/// `skipped` (with the reason as its message) or `awaiting_approval`.
pub async fn hold(
    ex: impl MySqlExecutor<'_>,
    id: &str,
    to: DeploymentStatus,
    reason: &str,
    now: i64,
) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE deployments SET status = ?, error_message = ?, updated_at = ?
         WHERE id = ? AND status = 'pending'",
    )
    .bind(to.as_str())
    .bind(clip(reason, 1024))
    .bind(now)
    .bind(id)
    .execute(ex)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Releases a deployment that awaited approval: back to `pending`, its
/// hold reason cleared; false if it was not awaiting approval.
pub async fn approve(ex: impl MySqlExecutor<'_>, id: &str, now: i64) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE deployments SET status = 'pending', error_message = NULL, updated_at = ?
         WHERE id = ? AND status = 'awaiting_approval'",
    )
    .bind(now)
    .bind(id)
    .execute(ex)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The deployment webhooks already made of a commit of a branch in an
/// environment, if any: GitHub sends both a `push` and a `pull_request`
/// event for a commit pushed to a pull request's branch, and one commit
/// deploys once.
pub async fn find_github_commit(
    ex: impl MySqlExecutor<'_>,
    environment_id: &str,
    branch: &str,
    sha: &str,
) -> Result<Option<Deployment>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{DEPLOYMENT} WHERE environment_id = ? AND git_branch = ? AND git_commit_sha = ?
           AND trigger_kind = 'github'
         ORDER BY created_at DESC, pk DESC LIMIT 1"
    )))
    .bind(environment_id)
    .bind(branch)
    .bind(sha)
    .fetch_optional(ex)
    .await?)
}

/// Records the pull request a deployment (made by a push) also deploys.
pub async fn set_pr_number(
    ex: impl MySqlExecutor<'_>,
    id: &str,
    pr_number: u32,
    now: i64,
) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE deployments SET git_pr_number = ?, updated_at = ? WHERE id = ? AND git_pr_number IS NULL",
    )
    .bind(pr_number)
    .bind(now)
    .bind(id)
    .execute(ex)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The deployments made for a pull request of a repository (any app),
/// oldest first: what its sticky comment lists.
pub async fn list_for_pull_request(
    ex: impl MySqlExecutor<'_>,
    repository: &str,
    pr_number: u32,
) -> Result<Vec<Deployment>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{DEPLOYMENT} WHERE git_pr_number = ? AND LOWER(git_repository) = LOWER(?)
         ORDER BY created_at, pk LIMIT 500"
    )))
    .bind(pr_number)
    .bind(repository)
    .fetch_all(ex)
    .await?)
}

/// Preview deployments of an app's branch (or pull request) that still run
/// or progress: what a deleted branch or a closed pull request stops.
pub async fn list_branch_previews(
    ex: impl MySqlExecutor<'_>,
    app_id: &str,
    branch: &str,
    pr_number: Option<u32>,
) -> Result<Vec<Deployment>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{DEPLOYMENT} WHERE app_id = ? AND (git_branch = ? OR (? IS NOT NULL AND git_pr_number = ?))
           AND environment_id IN (SELECT id FROM environments WHERE app_id = ? AND kind = 'preview')
           AND (desired_state = 'running' OR status IN {})
         ORDER BY created_at",
        crate::progressing_sql()
    )))
    .bind(app_id)
    .bind(branch)
    .bind(pr_number)
    .bind(pr_number)
    .bind(app_id)
    .fetch_all(ex)
    .await?)
}

/// Sets the status to `to` only if it is still `from`; false if it was not.
pub async fn compare_and_set_status(
    ex: impl MySqlExecutor<'_>,
    id: &str,
    from: DeploymentStatus,
    to: DeploymentStatus,
    now: i64,
) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE deployments SET status = ?, updated_at = ? WHERE id = ? AND status = ?",
    )
    .bind(to.as_str())
    .bind(now)
    .bind(id)
    .bind(from.as_str())
    .execute(ex)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Sets the status (and error message, if given) only while the deployment
/// is still progressing; false if it already reached a terminal status.
pub async fn set_status_if_active(
    ex: impl MySqlExecutor<'_>,
    id: &str,
    to: DeploymentStatus,
    error_message: Option<&str>,
    now: i64,
) -> Result<bool> {
    let done = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE deployments SET status = ?, error_message = COALESCE(?, error_message), updated_at = ?
         WHERE id = ? AND status IN {}",
        crate::progressing_sql()
    )))
    .bind(to.as_str())
    .bind(error_message)
    .bind(now)
    .bind(id)
    .execute(ex)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Records the image (and build) a deployment runs.
pub async fn set_image(
    ex: impl MySqlExecutor<'_>,
    id: &str,
    image: &str,
    build_id: Option<&str>,
    now: i64,
) -> Result<()> {
    let done = sqlx::query("UPDATE deployments SET image = ?, build_id = COALESCE(?, build_id), updated_at = ? WHERE id = ?")
        .bind(image)
        .bind(build_id)
        .bind(now)
        .bind(id)
        .execute(ex)
        .await?;
    if done.rows_affected() == 0 {
        return Err(Error::NotFound("deployment"));
    }
    Ok(())
}

/// Records the Restate invocation id of the deployment's workflow.
pub async fn set_invocation_id(
    ex: impl MySqlExecutor<'_>,
    id: &str,
    invocation_id: &str,
    now: i64,
) -> Result<()> {
    sqlx::query("UPDATE deployments SET invocation_id = ?, updated_at = ? WHERE id = ?")
        .bind(invocation_id)
        .bind(now)
        .bind(id)
        .execute(ex)
        .await?;
    Ok(())
}

/// Sets whether the deployment's instances should run.
pub async fn set_desired_state(
    db: impl sqlx::Acquire<'_, Database = sqlx::MySql>,
    id: &str,
    state: DesiredState,
    now: i64,
) -> Result<()> {
    let mut tx = db.begin().await?;
    let done = sqlx::query("UPDATE deployments SET desired_state = ?, updated_at = ? WHERE id = ?")
        .bind(state.as_str())
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    if done.rows_affected() == 0 {
        return Err(Error::NotFound("deployment"));
    }
    crate::edge::record(&mut tx, &[crate::edge::Key::Deployment(id)], now).await?;
    tx.commit().await?;
    Ok(())
}

/// Sets whether the deployment's instances should run, on the deployment
/// and on every region's topology row (each with a new region version, so
/// the agents see it); rows already in that state are left alone. The one
/// way desired state changes; call inside a transaction.
pub async fn set_desired_everywhere(
    conn: &mut MySqlConnection,
    id: &str,
    state: DesiredState,
    now: i64,
) -> Result<()> {
    let changed = sqlx::query(
        "UPDATE deployments SET desired_state = ?, updated_at = ? WHERE id = ? AND desired_state <> ?",
    )
    .bind(state.as_str())
    .bind(now)
    .bind(id)
    .bind(state.as_str())
    .execute(&mut *conn)
    .await?
    .rows_affected()
        > 0;
    crate::topology::set_desired_status(&mut *conn, id, state, now).await?;
    if changed {
        crate::edge::record(conn, &[crate::edge::Key::Deployment(id)], now).await?;
    }
    Ok(())
}

/// Whether a newer, still active (ready counts) deployment exists on the
/// same app, environment and branch (NULL-safe on the branch).
pub async fn has_newer_active(ex: impl MySqlExecutor<'_>, d: &Deployment) -> Result<bool> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM deployments WHERE app_id = ? AND environment_id = ? AND git_branch <=> ?
           AND pk > ? AND status NOT IN ('failed', 'skipped', 'stopped', 'superseded', 'cancelled'))",
    )
    .bind(&d.app_id)
    .bind(&d.environment_id)
    .bind(&d.git_branch)
    .bind(d.pk)
    .fetch_one(ex)
    .await?)
}

/// Older deployments of the same app, environment and branch that have not
/// started (pending or awaiting approval): candidates to supersede.
pub async fn list_older_not_started(
    ex: impl MySqlExecutor<'_>,
    d: &Deployment,
) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM deployments WHERE app_id = ? AND environment_id = ? AND git_branch <=> ?
           AND pk < ? AND status IN ('pending', 'awaiting_approval') ORDER BY pk",
    )
    .bind(&d.app_id)
    .bind(&d.environment_id)
    .bind(&d.git_branch)
    .bind(d.pk)
    .fetch_all(ex)
    .await?)
}

/// Older deployments of the same app, environment and branch whose
/// instances should run (preview clean-up after a newer one is ready).
pub async fn list_older_running_siblings(
    ex: impl MySqlExecutor<'_>,
    d: &Deployment,
) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM deployments WHERE app_id = ? AND environment_id = ? AND git_branch <=> ?
           AND pk < ? AND desired_state = 'running' AND status IN ('ready', 'stopped') ORDER BY pk",
    )
    .bind(&d.app_id)
    .bind(&d.environment_id)
    .bind(&d.git_branch)
    .bind(d.pk)
    .fetch_all(ex)
    .await?)
}

/// Whether a newer deployment of the same app, environment and branch is
/// ready and running (then `d`, ready late, is already replaced).
pub async fn has_newer_ready_sibling(ex: impl MySqlExecutor<'_>, d: &Deployment) -> Result<bool> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM deployments WHERE app_id = ? AND environment_id = ? AND git_branch <=> ?
           AND pk > ? AND status = 'ready' AND desired_state = 'running')",
    )
    .bind(&d.app_id)
    .bind(&d.environment_id)
    .bind(&d.git_branch)
    .bind(d.pk)
    .fetch_one(ex)
    .await?)
}

/// Ready deployments of an app's environment that still run but are not
/// `live_id`: what rollbacks left running, to retire once one is confirmed.
pub async fn list_running_not_live(
    ex: impl MySqlExecutor<'_>,
    app_id: &str,
    environment_id: &str,
    live_id: &str,
) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM deployments WHERE app_id = ? AND environment_id = ? AND id <> ?
           AND status = 'ready' AND desired_state = 'running' ORDER BY pk",
    )
    .bind(app_id)
    .bind(environment_id)
    .bind(live_id)
    .fetch_all(ex)
    .await?)
}

/// Whether deployment `id` was created after `than` (creation order is the
/// primary key's order); false if either is missing.
pub async fn is_newer(ex: impl MySqlExecutor<'_>, id: &str, than: &str) -> Result<bool> {
    Ok(sqlx::query_scalar(
        "SELECT COALESCE((SELECT pk FROM deployments WHERE id = ?) > (SELECT pk FROM deployments WHERE id = ?), FALSE)",
    )
    .bind(id)
    .bind(than)
    .fetch_one(ex)
    .await?)
}

/// Deployments still on their way (pending … finalizing) that have not
/// changed since `before` (unix ms), oldest first: what the sweep checks
/// for a workflow behind them.
pub async fn list_progressing_since(
    ex: impl MySqlExecutor<'_>,
    before: i64,
    limit: u32,
) -> Result<Vec<(String, DeploymentStatus)>> {
    let rows: Vec<(String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT id, status FROM deployments WHERE status IN {} AND updated_at < ? ORDER BY pk LIMIT ?",
        crate::progressing_sql()
    )))
    .bind(before)
    .bind(limit)
    .fetch_all(ex)
    .await?;
    rows.into_iter()
        .map(|(id, status)| {
            let status = status
                .parse()
                .map_err(|e: ctrl_core::status::UnknownName| Error::Corrupt(e.to_string()))?;
            Ok((id, status))
        })
        .collect()
}

/// Starts waking a deployment that is stopped (or still stopping): status
/// deploying, desired state running everywhere. False if it is not
/// stopped. Call inside a transaction.
pub async fn begin_wake(conn: &mut MySqlConnection, id: &str, now: i64) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE deployments SET status = 'deploying', error_message = NULL, updated_at = ?
         WHERE id = ? AND desired_state = 'stopped' AND status IN ('stopped', 'ready')",
    )
    .bind(now)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    set_desired_everywhere(conn, id, DesiredState::Running, now).await?;
    Ok(true)
}

/// Ends a wake that could not start the instances: deploying → stopped,
/// desired state stopped everywhere, the reason as the deployment's error.
/// False if it was not waking. Call inside a transaction.
pub async fn fail_wake(
    conn: &mut MySqlConnection,
    id: &str,
    error_message: &str,
    now: i64,
) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE deployments SET status = 'stopped', error_message = ?, updated_at = ?
         WHERE id = ? AND status = 'deploying'",
    )
    .bind(error_message)
    .bind(now)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    set_desired_everywhere(conn, id, DesiredState::Stopped, now).await?;
    Ok(done.rows_affected() == 1)
}

/// Marks a deployment `stopped` if its desired state is stopped, it is ready,
/// and no instance of it remains anywhere; true if it changed.
pub async fn mark_stopped_if_drained(
    ex: impl MySqlExecutor<'_>,
    id: &str,
    now: i64,
) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE deployments d SET d.status = 'stopped', d.updated_at = ?
         WHERE d.id = ? AND d.desired_state = 'stopped' AND d.status = 'ready'
           AND NOT EXISTS (SELECT 1 FROM instances i WHERE i.deployment_id = d.id)",
    )
    .bind(now)
    .bind(id)
    .execute(ex)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// One progress step.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Step {
    /// Which phase.
    #[sqlx(try_from = "String")]
    pub step: StepKind,
    /// What it does.
    pub message: String,
    /// Why it failed.
    pub error: Option<String>,
    /// Unix ms.
    pub started_at: i64,
    /// Unix ms; `None` while running.
    pub ended_at: Option<i64>,
}

/// Starts (or restarts, on a workflow retry) a step: clears its end and error.
pub async fn start_step(
    ex: impl MySqlExecutor<'_>,
    workspace_id: &str,
    deployment_id: &str,
    step: StepKind,
    message: &str,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO deployment_steps (workspace_id, deployment_id, step, message, started_at)
         VALUES (?, ?, ?, ?, ?)
         ON DUPLICATE KEY UPDATE message = VALUES(message), started_at = VALUES(started_at),
           ended_at = NULL, error = NULL",
    )
    .bind(workspace_id)
    .bind(deployment_id)
    .bind(step.as_str())
    .bind(clip(message, 512))
    .bind(now)
    .execute(ex)
    .await?;
    Ok(())
}

/// Replaces the message of a running step (progress within a phase, e.g.
/// the problem an agent reports); false if the step is not running or
/// already says this.
pub async fn set_step_message(
    ex: impl MySqlExecutor<'_>,
    deployment_id: &str,
    step: StepKind,
    message: &str,
) -> Result<bool> {
    let message = clip(message, 512);
    let done = sqlx::query(
        "UPDATE deployment_steps SET message = ? WHERE deployment_id = ? AND step = ? AND ended_at IS NULL AND message <> ?",
    )
    .bind(message)
    .bind(deployment_id)
    .bind(step.as_str())
    .bind(message)
    .execute(ex)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Ends a running step, with an error if it failed. The first end wins:
/// false if the step had already ended (e.g. "Cancelled by user").
pub async fn end_step(
    ex: impl MySqlExecutor<'_>,
    deployment_id: &str,
    step: StepKind,
    error: Option<&str>,
    now: i64,
) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE deployment_steps SET ended_at = ?, error = ? WHERE deployment_id = ? AND step = ? AND ended_at IS NULL",
    )
    .bind(now)
    .bind(error.map(|e| clip(e, 512)))
    .bind(deployment_id)
    .bind(step.as_str())
    .execute(ex)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Ends every running step of a deployment with `error`; returns how many.
pub async fn end_running_steps(
    ex: impl MySqlExecutor<'_>,
    deployment_id: &str,
    error: &str,
    now: i64,
) -> Result<u64> {
    let done = sqlx::query("UPDATE deployment_steps SET ended_at = ?, error = ? WHERE deployment_id = ? AND ended_at IS NULL")
        .bind(now)
        .bind(clip(error, 512))
        .bind(deployment_id)
        .execute(ex)
        .await?;
    Ok(done.rows_affected())
}

/// Ends every running step of a deployment as done (no error), e.g. when
/// the pipeline moves on to its next phase; returns how many.
pub async fn complete_running_steps(
    ex: impl MySqlExecutor<'_>,
    deployment_id: &str,
    now: i64,
) -> Result<u64> {
    let done = sqlx::query(
        "UPDATE deployment_steps SET ended_at = ? WHERE deployment_id = ? AND ended_at IS NULL",
    )
    .bind(now)
    .bind(deployment_id)
    .execute(ex)
    .await?;
    Ok(done.rows_affected())
}

/// A deployment's steps in phase order.
pub async fn list_steps(ex: impl MySqlExecutor<'_>, deployment_id: &str) -> Result<Vec<Step>> {
    Ok(sqlx::query_as(
        "SELECT step, message, error, started_at, ended_at FROM deployment_steps WHERE deployment_id = ? ORDER BY step",
    )
    .bind(deployment_id)
    .fetch_all(ex)
    .await?)
}

/// Number of deployments of an app.
pub async fn count_for_app(ex: impl MySqlExecutor<'_>, app_id: &str) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT COUNT(*) FROM deployments WHERE app_id = ?")
            .bind(app_id)
            .fetch_one(ex)
            .await?,
    )
}

/// Number of deployments in an environment.
pub async fn count_for_environment(
    ex: impl MySqlExecutor<'_>,
    environment_id: &str,
) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT COUNT(*) FROM deployments WHERE environment_id = ?")
            .bind(environment_id)
            .fetch_one(ex)
            .await?,
    )
}

/// Deletes a deployment whose workflow was never started (still pending,
/// no invocation id); true if it was deleted.
pub async fn delete_unstarted(ex: impl MySqlExecutor<'_>, id: &str) -> Result<bool> {
    let done = sqlx::query(
        "DELETE FROM deployments WHERE id = ? AND status = 'pending' AND invocation_id IS NULL",
    )
    .bind(id)
    .execute(ex)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The commit a git build resolved (its branch head, or the pinned SHA),
/// with its metadata; fills only what the deployment did not already say.
#[derive(Debug, Clone, Default)]
pub struct ResolvedCommit<'a> {
    /// Full SHA.
    pub sha: &'a str,
    /// Branch it was resolved from.
    pub branch: Option<&'a str>,
    /// Commit message.
    pub message: &'a str,
    /// Author handle.
    pub author_handle: &'a str,
    /// Author avatar URL.
    pub author_avatar_url: &'a str,
    /// Commit time, unix ms.
    pub timestamp: i64,
}

/// Records the commit a git build resolved.
pub async fn set_git_commit(
    ex: impl MySqlExecutor<'_>,
    id: &str,
    c: &ResolvedCommit<'_>,
    now: i64,
) -> Result<()> {
    let done = sqlx::query(
        "UPDATE deployments SET git_commit_sha = ?, git_branch = COALESCE(git_branch, ?),
           git_commit_message = COALESCE(git_commit_message, ?),
           git_commit_author_handle = COALESCE(git_commit_author_handle, ?),
           git_commit_author_avatar_url = COALESCE(git_commit_author_avatar_url, ?),
           git_commit_timestamp = COALESCE(git_commit_timestamp, ?), updated_at = ?
         WHERE id = ?",
    )
    .bind(c.sha)
    .bind(c.branch)
    .bind(non_empty(c.message, 10240))
    .bind(non_empty(c.author_handle, 256))
    .bind(non_empty(c.author_avatar_url, 512))
    .bind((c.timestamp != 0).then_some(c.timestamp))
    .bind(now)
    .bind(id)
    .execute(ex)
    .await?;
    if done.rows_affected() == 0 {
        return Err(Error::NotFound("deployment"));
    }
    Ok(())
}

fn non_empty(s: &str, max: usize) -> Option<&str> {
    (!s.is_empty()).then(|| clip(s, max))
}

/// Only the deployment's status (cheap enough to poll, e.g. by a running
/// build watching for a cancel).
pub async fn status(ex: impl MySqlExecutor<'_>, id: &str) -> Result<DeploymentStatus> {
    let s: String = sqlx::query_scalar("SELECT status FROM deployments WHERE id = ?")
        .bind(id)
        .fetch_optional(ex)
        .await?
        .ok_or(Error::NotFound("deployment"))?;
    s.parse()
        .map_err(|e: ctrl_core::status::UnknownName| Error::Corrupt(e.to_string()))
}
