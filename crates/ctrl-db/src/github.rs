//! Apps connected to GitHub repositories through the GitHub App
//! (`github_repo_connections`): one connection per app; a repository may
//! feed several apps (a monorepo).

use sqlx::{FromRow, MySqlExecutor};

use crate::Result;

/// A `github_repo_connections` row (serde: journaled by the webhook
/// handler).
#[derive(Debug, Clone, PartialEq, Eq, FromRow, serde::Serialize, serde::Deserialize)]
pub struct Connection {
    /// Owner.
    pub workspace_id: String,
    /// The app's project.
    pub project_id: String,
    /// The app.
    pub app_id: String,
    /// The installation that reads the repository.
    pub installation_id: i64,
    /// "owner/repo" as GitHub spells it.
    pub repository_full_name: String,
    /// GitHub's id of the repository, once known.
    pub repository_id: Option<i64>,
    /// Unix ms.
    pub created_at: i64,
}

/// A connection to record.
#[derive(Debug, Clone)]
pub struct NewConnection<'a> {
    /// Owner.
    pub workspace_id: &'a str,
    /// The app's project.
    pub project_id: &'a str,
    /// The app.
    pub app_id: &'a str,
    /// The installation.
    pub installation_id: i64,
    /// "owner/repo".
    pub repository_full_name: &'a str,
}

const CONNECTION: &str = "SELECT workspace_id, project_id, app_id, installation_id,
    repository_full_name, repository_id, created_at FROM github_repo_connections";

/// Connects an app, replacing its earlier connection (a different
/// repository forgets the id learnt for the old one).
pub async fn connect(ex: impl MySqlExecutor<'_>, c: &NewConnection<'_>, now: i64) -> Result<()> {
    sqlx::query(
        "INSERT INTO github_repo_connections
           (workspace_id, project_id, app_id, installation_id, repository_full_name, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?)
         ON DUPLICATE KEY UPDATE
           repository_id = IF(repository_key = LOWER(VALUES(repository_full_name)), repository_id, NULL),
           installation_id = VALUES(installation_id),
           repository_full_name = VALUES(repository_full_name),
           updated_at = VALUES(updated_at)",
    )
    .bind(c.workspace_id)
    .bind(c.project_id)
    .bind(c.app_id)
    .bind(c.installation_id)
    .bind(c.repository_full_name)
    .bind(now)
    .bind(now)
    .execute(ex)
    .await?;
    Ok(())
}

/// The app's connection.
pub async fn get(ex: impl MySqlExecutor<'_>, app_id: &str) -> Result<Option<Connection>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{CONNECTION} WHERE app_id = ?"
    )))
    .bind(app_id)
    .fetch_optional(ex)
    .await?)
}

/// A workspace's connections (or one app's), oldest first.
pub async fn list(
    ex: impl MySqlExecutor<'_>,
    workspace_id: &str,
    app_id: Option<&str>,
) -> Result<Vec<Connection>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{CONNECTION} WHERE workspace_id = ? AND (? IS NULL OR app_id = ?) ORDER BY pk"
    )))
    .bind(workspace_id)
    .bind(app_id)
    .bind(app_id)
    .fetch_all(ex)
    .await?)
}

/// Disconnects an app; whether it was connected.
pub async fn disconnect(ex: impl MySqlExecutor<'_>, app_id: &str) -> Result<bool> {
    let done = sqlx::query("DELETE FROM github_repo_connections WHERE app_id = ?")
        .bind(app_id)
        .execute(ex)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// The connections a webhook of `installation_id` about a repository
/// reaches: by GitHub's id once known (renames keep it), else by name.
pub async fn for_repository(
    ex: impl MySqlExecutor<'_>,
    installation_id: i64,
    repository_id: i64,
    full_name: &str,
) -> Result<Vec<Connection>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{CONNECTION} WHERE installation_id = ?
           AND (repository_id = ? OR (repository_id IS NULL AND repository_key = LOWER(?)))
         ORDER BY pk"
    )))
    .bind(installation_id)
    .bind(repository_id)
    .bind(full_name)
    .fetch_all(ex)
    .await?)
}

/// Records GitHub's id and current name of a connected repository (from a
/// webhook), so a rename keeps the connection.
pub async fn learn_repository(
    ex: impl MySqlExecutor<'_>,
    app_id: &str,
    repository_id: i64,
    full_name: &str,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE github_repo_connections
         SET repository_id = ?, repository_full_name = ?, updated_at = ?
         WHERE app_id = ?",
    )
    .bind(repository_id)
    .bind(full_name)
    .bind(now)
    .bind(app_id)
    .execute(ex)
    .await?;
    Ok(())
}

/// Drops the connections of an installation (uninstalled), or only those
/// of some of its repositories (removed from it, by GitHub id or name);
/// how many.
pub async fn disconnect_installation(
    ex: impl MySqlExecutor<'_>,
    installation_id: i64,
    repositories: Option<&[(i64, String)]>,
) -> Result<u64> {
    let done = match repositories {
        None => {
            sqlx::query("DELETE FROM github_repo_connections WHERE installation_id = ?")
                .bind(installation_id)
                .execute(ex)
                .await?
        }
        Some([]) => return Ok(0),
        Some(repos) => {
            let marks = vec!["?"; repos.len()].join(", ");
            let mut q = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM github_repo_connections WHERE installation_id = ?
                   AND (repository_id IN ({marks}) OR repository_key IN ({marks}))"
            )))
            .bind(installation_id);
            for (id, _) in repos {
                q = q.bind(id);
            }
            for (_, name) in repos {
                q = q.bind(name.to_lowercase());
            }
            q.execute(ex).await?
        }
    };
    Ok(done.rows_affected())
}
