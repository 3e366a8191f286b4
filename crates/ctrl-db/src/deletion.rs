//! What deleting an environment, app, project or workspace — or one
//! deployment — takes away. The order lives in the worker's `Deletion`
//! object (mark → stop and remove each deployment → remove the rest); the
//! rows it touches live here.
//!
//! There are no foreign keys: each function names every table it removes
//! rows from, and each is idempotent (running it again after a crash
//! between commit and journal removes nothing more and fails on nothing).

use ctrl_core::status::DesiredState;
use sqlx::{MySqlConnection, MySqlExecutor};

use crate::Result;
use crate::edge::Key;

/// What a cascade deletes: an environment, an app, a project or a workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    /// One (non-production) environment of an app.
    Environment(&'a str),
    /// An app with all its environments.
    App(&'a str),
    /// A project with all its apps.
    Project(&'a str),
    /// A workspace with all its projects.
    Workspace(&'a str),
}

impl<'a> Scope<'a> {
    /// The scope an id names, by its prefix (`env_`, `app_`, `proj_`, `ws_`).
    pub fn of(id: &'a str) -> Option<Self> {
        let (prefix, _) = id.split_once('_')?;
        Some(match prefix {
            "env" => Self::Environment(id),
            "app" => Self::App(id),
            "proj" => Self::Project(id),
            "ws" => Self::Workspace(id),
            _ => return None,
        })
    }

    /// The id of what is deleted.
    pub fn id(self) -> &'a str {
        match self {
            Self::Environment(id) | Self::App(id) | Self::Project(id) | Self::Workspace(id) => id,
        }
    }

    /// The column that ties a row to this scope in tables below it.
    fn column(self) -> &'static str {
        match self {
            Self::Environment(_) => "environment_id",
            Self::App(_) => "app_id",
            Self::Project(_) => "project_id",
            Self::Workspace(_) => "workspace_id",
        }
    }

    /// The tenancy tables at or below this scope, deepest first, each with
    /// the column tying it to the scope (`id` for the scope's own table).
    fn tenancy_tables(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Self::Environment(_) => &[("environments", "id")],
            Self::App(_) => &[("environments", "app_id"), ("apps", "id")],
            Self::Project(_) => &[
                ("environments", "project_id"),
                ("apps", "project_id"),
                ("projects", "id"),
            ],
            Self::Workspace(_) => &[
                ("environments", "workspace_id"),
                ("apps", "workspace_id"),
                ("projects", "workspace_id"),
                ("workspaces", "id"),
            ],
        }
    }
}

/// The first row at or below the scope that is protected against deletion:
/// (`"project"`, `"app"` or `"environment"`, its slug).
pub async fn protected(
    ex: &mut MySqlConnection,
    scope: Scope<'_>,
) -> Result<Option<(&'static str, String)>> {
    for (table, column) in scope.tenancy_tables() {
        let kind = match *table {
            "projects" => "project",
            "apps" => "app",
            "environments" => "environment",
            _ => continue,
        };
        let slug: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT slug FROM {table} WHERE {column} = ? AND delete_protection ORDER BY pk LIMIT 1"
        )))
        .bind(scope.id())
        .fetch_optional(&mut *ex)
        .await?;
        if let Some(slug) = slug {
            return Ok(Some((kind, slug)));
        }
    }
    Ok(None)
}

/// Marks the scope and everything below it as being deleted (the first
/// time counts); from then on nothing new is created under it.
pub async fn mark(conn: &mut MySqlConnection, scope: Scope<'_>, now: i64) -> Result<()> {
    for (table, column) in scope.tenancy_tables() {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE {table} SET deleting_at = COALESCE(deleting_at, ?) WHERE {column} = ?"
        )))
        .bind(now)
        .bind(scope.id())
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Cancels ("Deleted") the deployments in the scope still on their way:
/// their pipelines see it at their next check and stop.
pub async fn cancel_unfinished(
    conn: &mut MySqlConnection,
    scope: Scope<'_>,
    now: i64,
) -> Result<()> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE deployment_steps s JOIN deployments d ON d.id = s.deployment_id
         SET s.ended_at = ?, s.error = 'Deleted'
         WHERE d.{} = ? AND s.ended_at IS NULL AND d.status IN {}",
        scope.column(),
        crate::progressing_sql()
    )))
    .bind(now)
    .bind(scope.id())
    .execute(&mut *conn)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE deployments SET status = 'cancelled', error_message = 'Deleted', updated_at = ?
         WHERE {} = ? AND status IN {}",
        scope.column(),
        crate::progressing_sql()
    )))
    .bind(now)
    .bind(scope.id())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A deployment a cascade must remove.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Doomed {
    /// The deployment.
    pub id: String,
    /// Its status, as stored.
    pub status: String,
    /// Its pipeline's Restate invocation, if one was started.
    pub invocation_id: Option<String>,
}

/// The deployments in the scope, oldest first.
pub async fn deployments(ex: impl MySqlExecutor<'_>, scope: Scope<'_>) -> Result<Vec<Doomed>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT id, status, invocation_id FROM deployments WHERE {} = ? ORDER BY pk",
        scope.column()
    )))
    .bind(scope.id())
    .fetch_all(ex)
    .await?)
}

/// Stops a deployment everywhere (desired state and every region's row,
/// with new region versions) and takes the live pointer off it; call inside
/// a transaction.
pub async fn stop_deployment(conn: &mut MySqlConnection, id: &str, now: i64) -> Result<()> {
    sqlx::query(
        "UPDATE apps SET live_deployment_id = NULL, updated_at = ? WHERE live_deployment_id = ?",
    )
    .bind(now)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    crate::deployment::set_desired_everywhere(conn, id, DesiredState::Stopped, now).await
}

/// How many instances of the deployment agents still report.
pub async fn instances_left(ex: impl MySqlExecutor<'_>, id: &str) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT COUNT(*) FROM instances WHERE deployment_id = ?")
            .bind(id)
            .fetch_one(ex)
            .await?,
    )
}

/// Removes a deployment and everything that belongs to it; call inside a
/// transaction. Its topology rows go too: agents already received the stop,
/// and one that missed it finds the deployment gone on its next snapshot
/// (or point lookup) and removes the workload.
pub async fn remove_deployment(conn: &mut MySqlConnection, id: &str, now: i64) -> Result<()> {
    let hosts: Vec<String> = sqlx::query_scalar(
        "SELECT fully_qualified_domain_name FROM frontline_routes WHERE deployment_id = ?",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    sqlx::query(
        "DELETE FROM build_logs WHERE build_id IN (SELECT id FROM builds WHERE deployment_id = ?)",
    )
    .bind(id)
    .execute(&mut *conn)
    .await?;
    for table in [
        "frontline_routes",
        "network_policies",
        "deployment_topology",
        "instances",
        "deployment_steps",
        "builds",
        "deployments",
    ] {
        let column = if table == "deployments" {
            "id"
        } else {
            "deployment_id"
        };
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE {column} = ?"
        )))
        .bind(id)
        .execute(&mut *conn)
        .await?;
    }
    let mut keys: Vec<Key<'_>> = hosts.iter().map(|h| Key::Host(h)).collect();
    keys.push(Key::Deployment(id));
    crate::edge::record(conn, &keys, now).await
}

/// Removes the scope's own rows once its deployments are gone: settings,
/// variables, routes, custom domains (with their certificates), repository
/// connections, then the tenancy rows (and, for a
/// workspace, its ACME account); call inside a transaction.
pub async fn remove_scope(conn: &mut MySqlConnection, scope: Scope<'_>, now: i64) -> Result<()> {
    let hosts: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT fully_qualified_domain_name FROM frontline_routes WHERE {} = ?",
        scope.column()
    )))
    .bind(scope.id())
    .fetch_all(&mut *conn)
    .await?;
    // Settings and variables hang off environments (they carry no project
    // or workspace column of their own).
    let in_env = match scope {
        Scope::Environment(_) => "id",
        other => other.column(),
    };
    for table in [
        "app_build_settings",
        "app_runtime_settings",
        "app_regional_settings",
        "app_environment_variables",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE environment_id IN (SELECT id FROM environments WHERE {in_env} = ?)"
        )))
        .bind(scope.id())
        .execute(&mut *conn)
        .await?;
    }
    // Custom domains take their certificates and challenges with them.
    let domains: Vec<(String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT id, domain FROM custom_domains WHERE {} = ? AND platform = FALSE",
        scope.column()
    )))
    .bind(scope.id())
    .fetch_all(&mut *conn)
    .await?;
    for (domain_id, domain) in &domains {
        sqlx::query("DELETE FROM acme_challenges WHERE domain_id = ?")
            .bind(domain_id)
            .execute(&mut *conn)
            .await?;
        sqlx::query("DELETE FROM certificates WHERE hostname = ?")
            .bind(domain)
            .execute(&mut *conn)
            .await?;
    }
    let mut tables = vec!["frontline_routes", "custom_domains"];
    if matches!(scope, Scope::Workspace(_)) {
        tables.push("acme_users");
    }
    // An app's connection to its repository goes with the app.
    if !matches!(scope, Scope::Environment(_)) {
        tables.push("github_repo_connections");
    }
    for table in tables {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE {} = ?",
            scope.column()
        )))
        .bind(scope.id())
        .execute(&mut *conn)
        .await?;
    }
    for (table, column) in scope.tenancy_tables() {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE {column} = ?"
        )))
        .bind(scope.id())
        .execute(&mut *conn)
        .await?;
    }
    let mut keys: Vec<Key<'_>> = hosts.iter().map(|h| Key::Host(h)).collect();
    keys.extend(domains.iter().map(|(_, d)| Key::Certificate(d)));
    crate::edge::record(conn, &keys, now).await
}

#[cfg(test)]
mod tests {
    use super::Scope;

    #[test]
    fn scopes_come_from_id_prefixes() {
        assert_eq!(Scope::of("env_x"), Some(Scope::Environment("env_x")));
        assert_eq!(Scope::of("app_x"), Some(Scope::App("app_x")));
        assert_eq!(Scope::of("proj_x"), Some(Scope::Project("proj_x")));
        assert_eq!(Scope::of("ws_x"), Some(Scope::Workspace("ws_x")));
        assert_eq!(Scope::of("d_x"), None);
        assert_eq!(Scope::of("nothing"), None);
    }
}
