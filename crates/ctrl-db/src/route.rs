//! Frontline routes: hostname → deployment, with stickiness.

use ctrl_core::domains::Sticky;
use sqlx::{FromRow, MySqlConnection, MySqlExecutor};

use crate::{Error, Result};

/// A route row.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Route {
    /// `flr_…`
    pub id: String,
    /// Owner.
    pub workspace_id: String,
    /// Owner.
    pub project_id: String,
    /// The app.
    pub app_id: String,
    /// The environment.
    pub environment_id: String,
    /// Where it points now.
    pub deployment_id: String,
    /// The hostname.
    pub fully_qualified_domain_name: String,
    /// How it follows deployments.
    #[sqlx(try_from = "String")]
    pub sticky: Sticky,
}

/// A route to create.
#[derive(Debug, Clone)]
pub struct NewRoute<'a> {
    /// `flr_…`
    pub id: &'a str,
    /// Owner.
    pub workspace_id: &'a str,
    /// Owner.
    pub project_id: &'a str,
    /// The app.
    pub app_id: &'a str,
    /// The environment.
    pub environment_id: &'a str,
    /// Target deployment.
    pub deployment_id: &'a str,
    /// Hostname; taken = `AlreadyExists { key: "frontline_routes_fqdn" }`.
    pub fqdn: &'a str,
    /// Stickiness.
    pub sticky: Sticky,
}

/// Creates a route.
pub async fn insert(ex: impl MySqlExecutor<'_>, r: &NewRoute<'_>, now: i64) -> Result<()> {
    sqlx::query(
        "INSERT INTO frontline_routes
           (id, workspace_id, project_id, app_id, environment_id, deployment_id, fully_qualified_domain_name,
            sticky, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(r.id)
    .bind(r.workspace_id)
    .bind(r.project_id)
    .bind(r.app_id)
    .bind(r.environment_id)
    .bind(r.deployment_id)
    .bind(r.fqdn)
    .bind(r.sticky.as_str())
    .bind(now)
    .bind(now)
    .execute(ex)
    .await?;
    Ok(())
}

const ROUTE: &str = "SELECT id, workspace_id, project_id, app_id, environment_id, deployment_id,
    fully_qualified_domain_name, sticky FROM frontline_routes";

/// The route for a hostname, if any.
pub async fn find_by_fqdn(ex: impl MySqlExecutor<'_>, fqdn: &str) -> Result<Option<Route>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{ROUTE} WHERE fully_qualified_domain_name = ?"
    )))
    .bind(fqdn)
    .fetch_optional(ex)
    .await?)
}

/// Routes pointing at a deployment, by hostname.
pub async fn list_by_deployment(
    ex: impl MySqlExecutor<'_>,
    deployment_id: &str,
) -> Result<Vec<Route>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{ROUTE} WHERE deployment_id = ? ORDER BY fully_qualified_domain_name"
    )))
    .bind(deployment_id)
    .fetch_all(ex)
    .await?)
}

/// An environment's routes with one of `stickies` (e.g. environment and live
/// routes to move on deploy, rollback or promote), oldest first.
pub async fn list_by_environment_sticky(
    ex: impl MySqlExecutor<'_>,
    environment_id: &str,
    stickies: &[Sticky],
) -> Result<Vec<Route>> {
    if stickies.is_empty() {
        return Ok(Vec::new());
    }
    let marks = vec!["?"; stickies.len()].join(", ");
    let mut q = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{ROUTE} WHERE environment_id = ? AND sticky IN ({marks}) ORDER BY created_at, pk"
    )))
    .bind(environment_id);
    for s in stickies {
        q = q.bind(s.as_str());
    }
    Ok(q.fetch_all(ex).await?)
}

/// Points routes at `deployment_id` (call inside a transaction); returns
/// each route's previous deployment.
pub async fn reassign(
    conn: &mut MySqlConnection,
    route_ids: &[String],
    deployment_id: &str,
    now: i64,
) -> Result<Vec<(String, String)>> {
    let mut previous = Vec::with_capacity(route_ids.len());
    for id in route_ids {
        let before: Option<String> = sqlx::query_scalar(
            "SELECT deployment_id FROM frontline_routes WHERE id = ? FOR UPDATE",
        )
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
        let before = before.ok_or(Error::NotFound("route"))?;
        sqlx::query("UPDATE frontline_routes SET deployment_id = ?, updated_at = ? WHERE id = ?")
            .bind(deployment_id)
            .bind(now)
            .bind(id)
            .execute(&mut *conn)
            .await?;
        previous.push((id.clone(), before));
    }
    Ok(previous)
}
