//! Builds of deployments made from source, their workspace's build slots
//! and their output lines.
//!
//! One row per deployment (the pipeline's retries resume it). A build holds
//! one of its workspace's slots while `running`; [`try_start`] hands slots
//! out production first, then oldest first, and only counts builds whose
//! deployment is still in progress — so a deployment that ended without its
//! workflow finishing (killed, swept) never keeps a slot.

use sqlx::{FromRow, MySqlConnection, MySqlExecutor};

use crate::types::BuildStatus;
use crate::{Error, Result};
use ctrl_core::names::clip;

/// A `builds` row.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Build {
    /// `bld_…`
    pub id: String,
    /// Owner.
    pub workspace_id: String,
    /// The app.
    pub app_id: String,
    /// The deployment it builds.
    pub deployment_id: String,
    /// Where it is.
    pub status: BuildStatus,
    /// `docker` or `depot`.
    pub backend: String,
    /// Served before previews when slots are scarce.
    pub is_production: bool,
    /// "owner/repo" for git builds.
    pub git_repository: Option<String>,
    /// The commit built.
    pub git_commit_sha: Option<String>,
    /// Directory built.
    pub context_path: String,
    /// Dockerfile inside it.
    pub dockerfile_path: Option<String>,
    /// Pushed image by digest.
    pub image: Option<String>,
    /// `sha256:…` of the pushed manifest.
    pub digest: Option<String>,
    /// The step it is at or last reached.
    pub current_step: Option<String>,
    /// Unpacked context size.
    pub context_bytes: Option<i64>,
    /// Output lines seen (kept or not).
    pub log_lines: i32,
    /// Why it failed.
    pub error: Option<String>,
    /// Unix ms.
    pub started_at: Option<i64>,
    /// Unix ms.
    pub finished_at: Option<i64>,
    /// Unix ms (queued).
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
}

const BUILD: &str =
    "SELECT id, workspace_id, app_id, deployment_id, status, backend, is_production,
    git_repository, git_commit_sha, context_path, dockerfile_path, image, digest, current_step,
    context_bytes, log_lines, error, started_at, finished_at, created_at, updated_at FROM builds";

/// A build to queue.
#[derive(Debug, Clone)]
pub struct NewBuild<'a> {
    /// `bld_…` (used only if the deployment has no build yet).
    pub id: &'a str,
    /// Owner.
    pub workspace_id: &'a str,
    /// The app.
    pub app_id: &'a str,
    /// The deployment.
    pub deployment_id: &'a str,
    /// Backend name.
    pub backend: &'a str,
    /// Production deployments are served first.
    pub is_production: bool,
    /// "owner/repo".
    pub git_repository: Option<&'a str>,
    /// Directory built.
    pub context_path: &'a str,
    /// Dockerfile.
    pub dockerfile_path: &'a str,
}

/// The deployment's build, queuing it (and linking it to the deployment) if
/// it has none yet. Idempotent: a repeat returns the first row.
pub async fn ensure(conn: &mut MySqlConnection, b: &NewBuild<'_>, now: i64) -> Result<Build> {
    sqlx::query(
        "INSERT IGNORE INTO builds (id, workspace_id, app_id, deployment_id, status, backend,
           is_production, git_repository, context_path, dockerfile_path, created_at, updated_at)
         VALUES (?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(b.id)
    .bind(b.workspace_id)
    .bind(b.app_id)
    .bind(b.deployment_id)
    .bind(b.backend)
    .bind(b.is_production)
    .bind(b.git_repository)
    .bind(clip(b.context_path, 500))
    .bind(clip(b.dockerfile_path, 500))
    .bind(now)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    let build = for_deployment(&mut *conn, b.deployment_id)
        .await?
        .ok_or(Error::NotFound("build"))?;
    sqlx::query(
        "UPDATE deployments SET build_id = ?, updated_at = ? WHERE id = ? AND build_id IS NULL",
    )
    .bind(&build.id)
    .bind(now)
    .bind(b.deployment_id)
    .execute(&mut *conn)
    .await?;
    Ok(build)
}

/// The build with this id.
pub async fn get(ex: impl MySqlExecutor<'_>, id: &str) -> Result<Build> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("{BUILD} WHERE id = ?")))
        .bind(id)
        .fetch_optional(ex)
        .await?
        .ok_or(Error::NotFound("build"))
}

/// The deployment's build, if it has one.
pub async fn for_deployment(
    ex: impl MySqlExecutor<'_>,
    deployment_id: &str,
) -> Result<Option<Build>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{BUILD} WHERE deployment_id = ?"
    )))
    .bind(deployment_id)
    .fetch_optional(ex)
    .await?)
}

/// The answer of [`try_start`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// The build is running (now, or already before).
    Started,
    /// No slot yet: `running` builds hold the workspace's slots and `ahead`
    /// queued builds go first.
    Wait {
        /// Builds of the workspace running now.
        running: i64,
        /// Queued builds served before this one.
        ahead: i64,
    },
    /// The build already ended (or its deployment did): nothing to start.
    Ended(BuildStatus),
}

/// Statuses of a deployment whose build may hold or wait for a slot.
const IN_PROGRESS: &str = "'pending', 'starting', 'building', 'deploying', 'network', 'finalizing'";

/// Starts the build if its workspace has a free slot (at most `limit`
/// running) and no queued build goes before it. Call inside a transaction:
/// it locks the workspace row so two builds cannot take the last slot.
pub async fn try_start(conn: &mut MySqlConnection, id: &str, limit: u32, now: i64) -> Result<Slot> {
    let b = get(&mut *conn, id).await?;
    if b.status != BuildStatus::Queued {
        return Ok(match b.status {
            BuildStatus::Running => Slot::Started,
            s => Slot::Ended(s),
        });
    }
    sqlx::query("SELECT id FROM workspaces WHERE id = ? FOR UPDATE")
        .bind(&b.workspace_id)
        .fetch_optional(&mut *conn)
        .await?;
    let running: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM builds b JOIN deployments d ON d.id = b.deployment_id
         WHERE b.workspace_id = ? AND b.status = 'running' AND d.status IN ({IN_PROGRESS})"
    )))
    .bind(&b.workspace_id)
    .fetch_one(&mut *conn)
    .await?;
    let ahead: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM builds b JOIN deployments d ON d.id = b.deployment_id
         WHERE b.workspace_id = ? AND b.status = 'queued' AND d.status IN ({IN_PROGRESS})
           AND b.id <> ?
           AND (b.is_production > ? OR (b.is_production = ? AND (b.created_at, b.id) < (?, ?)))"
    )))
    .bind(&b.workspace_id)
    .bind(&b.id)
    .bind(b.is_production)
    .bind(b.is_production)
    .bind(b.created_at)
    .bind(&b.id)
    .fetch_one(&mut *conn)
    .await?;
    if running + ahead >= i64::from(limit) {
        return Ok(Slot::Wait { running, ahead });
    }
    sqlx::query(
        "UPDATE builds SET status = 'running', started_at = ?, updated_at = ?
         WHERE id = ? AND status = 'queued'",
    )
    .bind(now)
    .bind(now)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(Slot::Started)
}

/// Records the step a running build is at and how many output lines it has
/// produced.
pub async fn set_progress(
    ex: impl MySqlExecutor<'_>,
    id: &str,
    step: Option<&str>,
    log_lines: i32,
    context_bytes: Option<i64>,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE builds SET current_step = COALESCE(?, current_step), log_lines = ?,
           context_bytes = COALESCE(?, context_bytes), updated_at = ?
         WHERE id = ? AND status = 'running'",
    )
    .bind(step.map(|s| clip(s, 512)))
    .bind(log_lines)
    .bind(context_bytes)
    .bind(now)
    .bind(id)
    .execute(ex)
    .await?;
    Ok(())
}

/// Records the commit a git build builds.
pub async fn set_commit(ex: impl MySqlExecutor<'_>, id: &str, sha: &str, now: i64) -> Result<()> {
    sqlx::query("UPDATE builds SET git_commit_sha = ?, updated_at = ? WHERE id = ?")
        .bind(sha)
        .bind(now)
        .bind(id)
        .execute(ex)
        .await?;
    Ok(())
}

/// Marks the build succeeded with its pushed image, and makes that image
/// the deployment's. Call inside a transaction.
pub async fn succeed(
    conn: &mut MySqlConnection,
    id: &str,
    image: &str,
    digest: &str,
    now: i64,
) -> Result<()> {
    let b = get(&mut *conn, id).await?;
    sqlx::query(
        "UPDATE builds SET status = 'succeeded', image = ?, digest = ?, error = NULL,
           finished_at = COALESCE(finished_at, ?), updated_at = ?
         WHERE id = ? AND status IN ('queued', 'running', 'succeeded')",
    )
    .bind(image)
    .bind(digest)
    .bind(now)
    .bind(now)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    crate::deployment::set_image(&mut *conn, &b.deployment_id, image, Some(id), now).await
}

/// Ends an unfinished build as failed or cancelled with `error`; a build
/// that already ended keeps its outcome. Returns whether it changed.
pub async fn end(
    ex: impl MySqlExecutor<'_>,
    id: &str,
    status: BuildStatus,
    error: &str,
    now: i64,
) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE builds SET status = ?, error = ?, finished_at = ?, updated_at = ?
         WHERE id = ? AND status IN ('queued', 'running')",
    )
    .bind(status)
    .bind(clip(error, 1024))
    .bind(now)
    .bind(now)
    .bind(id)
    .execute(ex)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// One recorded output line.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct LogLine {
    /// Position, from 1.
    pub line: i32,
    /// Unix ms.
    pub at: i64,
    /// The text.
    pub text: String,
}

/// Appends output lines numbered from `first` (a repeat of the same numbers
/// — a retried write — changes nothing).
pub async fn append_logs(
    ex: impl MySqlExecutor<'_>,
    build_id: &str,
    first: i32,
    lines: &[(i64, &str)],
) -> Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    let mut q =
        sqlx::QueryBuilder::new("INSERT IGNORE INTO build_logs (build_id, line, at, text) ");
    q.push_values(lines.iter().zip(first..), |mut row, ((at, text), n)| {
        row.push_bind(build_id)
            .push_bind(n)
            .push_bind(*at)
            .push_bind(clip(text, 4096));
    });
    q.build().execute(ex).await?;
    Ok(())
}

/// Up to `limit` lines after line `after`, in order.
pub async fn list_logs(
    ex: impl MySqlExecutor<'_>,
    build_id: &str,
    after: i64,
    limit: u32,
) -> Result<Vec<LogLine>> {
    Ok(sqlx::query_as(
        "SELECT line, at, text FROM build_logs WHERE build_id = ? AND line > ? ORDER BY line LIMIT ?",
    )
    .bind(build_id)
    .bind(after)
    .bind(limit)
    .fetch_all(ex)
    .await?)
}

/// The number of the last kept line (0 = none).
pub async fn last_log_line(ex: impl MySqlExecutor<'_>, build_id: &str) -> Result<i32> {
    Ok(
        sqlx::query_scalar::<_, Option<i32>>("SELECT MAX(line) FROM build_logs WHERE build_id = ?")
            .bind(build_id)
            .fetch_one(ex)
            .await?
            .unwrap_or(0),
    )
}
