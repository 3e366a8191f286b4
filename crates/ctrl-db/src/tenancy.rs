//! Workspaces, projects, apps and environments.

use sqlx::{FromRow, MySqlConnection, MySqlExecutor};

use crate::types::{EnvironmentKind, Page};
use crate::{Error, Result};

/// A workspace row.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Workspace {
    /// Paging cursor.
    pub pk: u64,
    /// `ws_…`
    pub id: String,
    /// Display name.
    pub name: String,
    /// Unique slug.
    pub slug: String,
    /// Namespace of its workloads, assigned on first deploy.
    pub k8s_namespace: Option<String>,
    /// Set while a deletion cascade removes it (unix ms).
    pub deleting_at: Option<i64>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
}

/// Inserts a workspace; a taken slug is `AlreadyExists { key: "workspaces_slug" }`.
pub async fn insert_workspace(
    ex: impl MySqlExecutor<'_>,
    id: &str,
    name: &str,
    slug: &str,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO workspaces (id, name, slug, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(id)
    .bind(name)
    .bind(slug)
    .bind(now)
    .bind(now)
    .execute(ex)
    .await?;
    Ok(())
}

const WORKSPACE: &str =
    "SELECT pk, id, name, slug, k8s_namespace, deleting_at, created_at, updated_at FROM workspaces";

/// The workspace with this id.
pub async fn get_workspace(ex: impl MySqlExecutor<'_>, id: &str) -> Result<Workspace> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("{WORKSPACE} WHERE id = ?")))
        .bind(id)
        .fetch_optional(ex)
        .await?
        .ok_or(Error::NotFound("workspace"))
}

/// Workspaces in creation order, after the cursor.
pub async fn list_workspaces(
    ex: impl MySqlExecutor<'_>,
    after: u64,
    limit: u32,
) -> Result<Page<Workspace>> {
    let rows: Vec<Workspace> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{WORKSPACE} WHERE pk > ? ORDER BY pk LIMIT ?"
    )))
    .bind(after)
    .bind(limit + 1)
    .fetch_all(ex)
    .await?;
    Ok(Page::from_rows(rows, limit, |w| w.pk))
}

/// Deletes a workspace; false if it did not exist.
pub async fn delete_workspace(ex: impl MySqlExecutor<'_>, id: &str) -> Result<bool> {
    let done = sqlx::query("DELETE FROM workspaces WHERE id = ?")
        .bind(id)
        .execute(ex)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Returns the workspace's namespace, assigning `candidate` first if it has
/// none (idempotent: a second caller gets the first caller's namespace).
pub async fn ensure_k8s_namespace(
    conn: &mut MySqlConnection,
    id: &str,
    candidate: &str,
    now: i64,
) -> Result<String> {
    sqlx::query("UPDATE workspaces SET k8s_namespace = ?, updated_at = ? WHERE id = ? AND k8s_namespace IS NULL")
        .bind(candidate)
        .bind(now)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    // A locking read: it sees what a concurrent transaction committed
    // meanwhile (its namespace won), where a plain read in this
    // transaction's snapshot would still see NULL.
    let namespace: Option<Option<String>> =
        sqlx::query_scalar("SELECT k8s_namespace FROM workspaces WHERE id = ? FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    namespace
        .ok_or(Error::NotFound("workspace"))?
        .ok_or_else(|| {
            Error::Corrupt(format!(
                "workspace {id} has no namespace after assigning one"
            ))
        })
}

/// A project row.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Project {
    /// Paging cursor.
    pub pk: u64,
    /// `proj_…`
    pub id: String,
    /// Owner.
    pub workspace_id: String,
    /// Display name.
    pub name: String,
    /// Slug, unique in the workspace.
    pub slug: String,
    /// Refuse deletion.
    pub delete_protection: bool,
    /// Set while a deletion cascade removes it (unix ms).
    pub deleting_at: Option<i64>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
}

/// Inserts a project; a taken slug is `AlreadyExists { key: "projects_workspace_slug" }`.
pub async fn insert_project(
    ex: impl MySqlExecutor<'_>,
    id: &str,
    workspace_id: &str,
    name: &str,
    slug: &str,
    now: i64,
) -> Result<()> {
    sqlx::query("INSERT INTO projects (id, workspace_id, name, slug, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)")
        .bind(id)
        .bind(workspace_id)
        .bind(name)
        .bind(slug)
        .bind(now)
        .bind(now)
        .execute(ex)
        .await?;
    Ok(())
}

const PROJECT: &str = "SELECT pk, id, workspace_id, name, slug, delete_protection, deleting_at, created_at, updated_at FROM projects";

/// The project with this id.
pub async fn get_project(ex: impl MySqlExecutor<'_>, id: &str) -> Result<Project> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("{PROJECT} WHERE id = ?")))
        .bind(id)
        .fetch_optional(ex)
        .await?
        .ok_or(Error::NotFound("project"))
}

/// A workspace's projects in creation order, after the cursor.
pub async fn list_projects(
    ex: impl MySqlExecutor<'_>,
    workspace_id: &str,
    after: u64,
    limit: u32,
) -> Result<Page<Project>> {
    let rows: Vec<Project> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{PROJECT} WHERE workspace_id = ? AND pk > ? ORDER BY pk LIMIT ?"
    )))
    .bind(workspace_id)
    .bind(after)
    .bind(limit + 1)
    .fetch_all(ex)
    .await?;
    Ok(Page::from_rows(rows, limit, |p| p.pk))
}

/// Number of projects in a workspace.
pub async fn count_projects(ex: impl MySqlExecutor<'_>, workspace_id: &str) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT COUNT(*) FROM projects WHERE workspace_id = ?")
            .bind(workspace_id)
            .fetch_one(ex)
            .await?,
    )
}

/// Deletes a project row; false if it did not exist.
pub async fn delete_project(ex: impl MySqlExecutor<'_>, id: &str) -> Result<bool> {
    let done = sqlx::query("DELETE FROM projects WHERE id = ?")
        .bind(id)
        .execute(ex)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// An app row.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct App {
    /// Paging cursor.
    pub pk: u64,
    /// `app_…`
    pub id: String,
    /// Owner.
    pub workspace_id: String,
    /// Owner.
    pub project_id: String,
    /// Display name.
    pub name: String,
    /// Slug, unique in the project.
    pub slug: String,
    /// Branch that deploys to production.
    pub default_branch: String,
    /// The live deployment.
    pub live_deployment_id: Option<String>,
    /// Auto-promotion frozen by a rollback.
    pub is_rolled_back: bool,
    /// The operation id of the last live swap (see [`swap_live_deployment`]).
    pub live_swap_id: Option<String>,
    /// Refuse deletion.
    pub delete_protection: bool,
    /// Set while a deletion cascade removes it (unix ms).
    pub deleting_at: Option<i64>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
}

impl App {
    /// What the deploy-gate rules (`ctrl_core::gate`) need to know about it.
    pub fn gate_facts(&self) -> ctrl_core::gate::AppFacts<'_> {
        ctrl_core::gate::AppFacts {
            live_deployment_id: self.live_deployment_id.as_deref(),
            is_rolled_back: self.is_rolled_back,
        }
    }
}

/// What is needed to insert an app.
#[derive(Debug, Clone)]
pub struct NewApp<'a> {
    /// `app_…`
    pub id: &'a str,
    /// Owner.
    pub workspace_id: &'a str,
    /// Owner.
    pub project_id: &'a str,
    /// Display name.
    pub name: &'a str,
    /// Slug.
    pub slug: &'a str,
    /// Branch that deploys to production.
    pub default_branch: &'a str,
}

/// Inserts an app; a taken slug is `AlreadyExists { key: "apps_project_slug" }`.
pub async fn insert_app(ex: impl MySqlExecutor<'_>, app: &NewApp<'_>, now: i64) -> Result<()> {
    sqlx::query(
        "INSERT INTO apps (id, workspace_id, project_id, name, slug, default_branch, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(app.id)
    .bind(app.workspace_id)
    .bind(app.project_id)
    .bind(app.name)
    .bind(app.slug)
    .bind(app.default_branch)
    .bind(now)
    .bind(now)
    .execute(ex)
    .await?;
    Ok(())
}

const APP: &str =
    "SELECT pk, id, workspace_id, project_id, name, slug, default_branch, live_deployment_id,
    is_rolled_back, live_swap_id, delete_protection, deleting_at, created_at, updated_at FROM apps";

/// The app with this id.
pub async fn get_app(ex: impl MySqlExecutor<'_>, id: &str) -> Result<App> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("{APP} WHERE id = ?")))
        .bind(id)
        .fetch_optional(ex)
        .await?
        .ok_or(Error::NotFound("app"))
}

/// The app with this id, locked until the transaction ends (so a decision
/// on its live pointer or rolled-back flag holds until the write).
pub async fn lock_app(conn: &mut MySqlConnection, id: &str) -> Result<App> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{APP} WHERE id = ? FOR UPDATE"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound("app"))
}

/// A project's apps in creation order, after the cursor.
pub async fn list_apps(
    ex: impl MySqlExecutor<'_>,
    project_id: &str,
    after: u64,
    limit: u32,
) -> Result<Page<App>> {
    let rows: Vec<App> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{APP} WHERE project_id = ? AND pk > ? ORDER BY pk LIMIT ?"
    )))
    .bind(project_id)
    .bind(after)
    .bind(limit + 1)
    .fetch_all(ex)
    .await?;
    Ok(Page::from_rows(rows, limit, |a| a.pk))
}

/// Number of apps in a project.
pub async fn count_apps(ex: impl MySqlExecutor<'_>, project_id: &str) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT COUNT(*) FROM apps WHERE project_id = ?")
            .bind(project_id)
            .fetch_one(ex)
            .await?,
    )
}

/// Deletes an app row; false if it did not exist.
pub async fn delete_app(ex: impl MySqlExecutor<'_>, id: &str) -> Result<bool> {
    let done = sqlx::query("DELETE FROM apps WHERE id = ?")
        .bind(id)
        .execute(ex)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Points the app's live pointer at `deployment_id` and sets the rolled-back
/// flag, as operation `operation_id`, returning the previous live
/// deployment. The operation id and the previous deployment are stored with
/// the swap, so running the same operation again (a replay after a crash
/// between commit and journal) changes nothing and returns the same answer.
/// Locks the app row, so concurrent swaps of one app serialise; call it
/// inside a transaction.
pub async fn swap_live_deployment(
    conn: &mut MySqlConnection,
    app_id: &str,
    deployment_id: &str,
    rolled_back: bool,
    operation_id: &str,
    now: i64,
) -> Result<Option<String>> {
    let row: Option<(Option<String>, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT live_deployment_id, live_swap_id, live_swap_previous_id FROM apps WHERE id = ? FOR UPDATE",
    )
    .bind(app_id)
    .fetch_optional(&mut *conn)
    .await?;
    let (previous, last_operation, last_previous) = row.ok_or(Error::NotFound("app"))?;
    if last_operation.as_deref() == Some(operation_id) {
        return Ok(last_previous);
    }
    sqlx::query(
        "UPDATE apps SET live_deployment_id = ?, is_rolled_back = ?, live_swap_id = ?,
           live_swap_previous_id = ?, updated_at = ? WHERE id = ?",
    )
    .bind(deployment_id)
    .bind(rolled_back)
    .bind(operation_id)
    .bind(&previous)
    .bind(now)
    .bind(app_id)
    .execute(&mut *conn)
    .await?;
    Ok(previous)
}

/// Clears the live pointer only if it still points at `deployment_id`.
pub async fn clear_live_deployment_if(
    ex: impl MySqlExecutor<'_>,
    app_id: &str,
    deployment_id: &str,
    now: i64,
) -> Result<bool> {
    let done = sqlx::query("UPDATE apps SET live_deployment_id = NULL, updated_at = ? WHERE id = ? AND live_deployment_id = ?")
        .bind(now)
        .bind(app_id)
        .bind(deployment_id)
        .execute(ex)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// An environment row.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Environment {
    /// Paging cursor.
    pub pk: u64,
    /// `env_…`
    pub id: String,
    /// Owner.
    pub workspace_id: String,
    /// Owner.
    pub project_id: String,
    /// Owner.
    pub app_id: String,
    /// Slug, unique per app.
    pub slug: String,
    /// Production or preview.
    pub kind: EnvironmentKind,
    /// Free text.
    pub description: String,
    /// Refuse deletion.
    pub delete_protection: bool,
    /// Set while a deletion cascade removes it (unix ms).
    pub deleting_at: Option<i64>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
}

/// What is needed to insert an environment.
#[derive(Debug, Clone)]
pub struct NewEnvironment<'a> {
    /// `env_…`
    pub id: &'a str,
    /// Owner.
    pub workspace_id: &'a str,
    /// Owner.
    pub project_id: &'a str,
    /// Owner.
    pub app_id: &'a str,
    /// Slug.
    pub slug: &'a str,
    /// Kind; a second production environment is `AlreadyExists { key: "environments_one_production" }`.
    pub kind: EnvironmentKind,
    /// Free text.
    pub description: &'a str,
}

/// Inserts an environment.
pub async fn insert_environment(
    ex: impl MySqlExecutor<'_>,
    env: &NewEnvironment<'_>,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO environments (id, workspace_id, project_id, app_id, slug, kind, description, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(env.id)
    .bind(env.workspace_id)
    .bind(env.project_id)
    .bind(env.app_id)
    .bind(env.slug)
    .bind(env.kind)
    .bind(env.description)
    .bind(now)
    .bind(now)
    .execute(ex)
    .await?;
    Ok(())
}

const ENVIRONMENT: &str =
    "SELECT pk, id, workspace_id, project_id, app_id, slug, kind, description,
    delete_protection, deleting_at, created_at, updated_at FROM environments";

/// The environment with this id.
pub async fn get_environment(ex: impl MySqlExecutor<'_>, id: &str) -> Result<Environment> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("{ENVIRONMENT} WHERE id = ?")))
        .bind(id)
        .fetch_optional(ex)
        .await?
        .ok_or(Error::NotFound("environment"))
}

/// The app's environment with this slug.
pub async fn find_environment_by_slug(
    ex: impl MySqlExecutor<'_>,
    app_id: &str,
    slug: &str,
) -> Result<Environment> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{ENVIRONMENT} WHERE app_id = ? AND slug = ?"
    )))
    .bind(app_id)
    .bind(slug)
    .fetch_optional(ex)
    .await?
    .ok_or(Error::NotFound("environment"))
}

/// All environments of an app, production first, then by slug.
pub async fn list_environments(
    ex: impl MySqlExecutor<'_>,
    app_id: &str,
) -> Result<Vec<Environment>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{ENVIRONMENT} WHERE app_id = ? ORDER BY kind = 'production' DESC, slug"
    )))
    .bind(app_id)
    .fetch_all(ex)
    .await?)
}

/// Deletes an environment row; false if it did not exist.
pub async fn delete_environment(ex: impl MySqlExecutor<'_>, id: &str) -> Result<bool> {
    let done = sqlx::query("DELETE FROM environments WHERE id = ?")
        .bind(id)
        .execute(ex)
        .await?;
    Ok(done.rows_affected() == 1)
}
