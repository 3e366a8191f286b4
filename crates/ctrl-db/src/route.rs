//! Frontline routes: hostname → deployment, with stickiness.

use ctrl_core::domains::Sticky;
use sqlx::{Acquire, FromRow, MySql, MySqlConnection, MySqlExecutor};

use crate::edge::{self, Key};
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
pub async fn insert(
    db: impl Acquire<'_, Database = MySql>,
    r: &NewRoute<'_>,
    now: i64,
) -> Result<()> {
    let mut tx = db.begin().await?;
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
    .execute(&mut *tx)
    .await?;
    edge::record(&mut tx, &[Key::Host(r.fqdn)], now).await?;
    tx.commit().await?;
    Ok(())
}

/// Deletes the route of a hostname if it belongs to `environment_id`;
/// returns whether it did.
pub async fn delete_by_fqdn(
    db: impl Acquire<'_, Database = MySql>,
    fqdn: &str,
    environment_id: &str,
    now: i64,
) -> Result<bool> {
    let mut tx = db.begin().await?;
    let done = sqlx::query(
        "DELETE FROM frontline_routes WHERE fully_qualified_domain_name = ? AND environment_id = ?",
    )
    .bind(fqdn)
    .bind(environment_id)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() > 0 {
        edge::record(&mut tx, &[Key::Host(fqdn)], now).await?;
    }
    tx.commit().await?;
    Ok(done.rows_affected() > 0)
}

/// The deployment an environment's live routes point at now (its live or
/// environment route), if it has one.
pub async fn environment_target(
    ex: impl MySqlExecutor<'_>,
    environment_id: &str,
) -> Result<Option<String>> {
    Ok(sqlx::query_scalar(
        "SELECT deployment_id FROM frontline_routes
         WHERE environment_id = ? AND sticky IN ('live', 'environment') AND deployment_id <> ''
         ORDER BY sticky = 'live' DESC, updated_at DESC LIMIT 1",
    )
    .bind(environment_id)
    .fetch_optional(ex)
    .await?)
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

/// Points routes at `deployment_id` only where that moves them forward:
/// routes whose deployment was created before it (or no longer exists).
/// Automatic moves (a deploy taking its branch and environment routes) use
/// this, so an older deployment that becomes ready late never takes a route
/// from a newer one. Call inside a transaction; returns the moved routes.
pub async fn reassign_forward(
    conn: &mut MySqlConnection,
    route_ids: &[String],
    deployment_id: &str,
    now: i64,
) -> Result<Vec<String>> {
    // Creation order is the primary key; reading it takes no lock (it never
    // changes), so deployments rows are never held by a route move.
    let pk_of = |id: String| {
        sqlx::query_scalar::<_, u64>("SELECT pk FROM deployments WHERE id = ?").bind(id)
    };
    let target = pk_of(deployment_id.to_owned())
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(Error::NotFound("deployment"))?;
    let mut moved = Vec::new();
    let mut hosts = Vec::new();
    for id in route_ids {
        let current: Option<(String, String)> = sqlx::query_as(
            "SELECT deployment_id, fully_qualified_domain_name FROM frontline_routes WHERE id = ? FOR UPDATE",
        )
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
        let (current, fqdn) = current.ok_or(Error::NotFound("route"))?;
        if current == deployment_id {
            continue;
        }
        let older = pk_of(current)
            .fetch_optional(&mut *conn)
            .await?
            .is_none_or(|pk| pk < target);
        if older {
            sqlx::query(
                "UPDATE frontline_routes SET deployment_id = ?, updated_at = ? WHERE id = ?",
            )
            .bind(deployment_id)
            .bind(now)
            .bind(id)
            .execute(&mut *conn)
            .await?;
            moved.push(id.clone());
            hosts.push(fqdn);
        }
    }
    record_hosts(conn, &hosts, now).await?;
    Ok(moved)
}

async fn record_hosts(conn: &mut MySqlConnection, fqdns: &[String], now: i64) -> Result<()> {
    let keys: Vec<Key<'_>> = fqdns.iter().map(|f| Key::Host(f)).collect();
    edge::record(conn, &keys, now).await
}

/// Takes every route off a deployment that failed or was cancelled: a
/// branch, environment or commit route goes back to the newest ready,
/// running deployment of its branch, environment or commit; a live route to
/// the app's live deployment; anything else (its own hostname), or a route
/// with nowhere to go, is deleted. Call inside a transaction; returns
/// (moved, deleted).
pub async fn release(
    conn: &mut MySqlConnection,
    deployment_id: &str,
    now: i64,
) -> Result<(u64, u64)> {
    let routes: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT id, sticky, fully_qualified_domain_name FROM frontline_routes
         WHERE deployment_id = ? ORDER BY pk FOR UPDATE",
    )
    .bind(deployment_id)
    .fetch_all(&mut *conn)
    .await?;
    let (mut moved, mut deleted) = (0, 0);
    let hosts: Vec<String> = routes.iter().map(|r| r.2.clone()).collect();
    for (id, sticky, _) in routes {
        let fallback: Option<String> = match sticky.as_str() {
            "branch" | "environment" | "none" => {
                sqlx::query_scalar(
                    "SELECT o.id FROM deployments d JOIN deployments o
                       ON o.environment_id = d.environment_id AND o.app_id = d.app_id
                      AND (? = FALSE OR o.git_branch <=> d.git_branch)
                      AND (? = FALSE OR o.git_commit_sha <=> d.git_commit_sha)
                     WHERE d.id = ? AND o.id <> d.id AND o.status = 'ready' AND o.desired_state = 'running'
                     ORDER BY o.pk DESC LIMIT 1",
                )
                .bind(sticky == "branch")
                .bind(sticky == "none")
                .bind(deployment_id)
                .fetch_optional(&mut *conn)
                .await?
            }
            "live" => sqlx::query_scalar(
                "SELECT a.live_deployment_id FROM deployments d JOIN apps a ON a.id = d.app_id
                 WHERE d.id = ? AND a.live_deployment_id <> d.id",
            )
            .bind(deployment_id)
            .fetch_optional(&mut *conn)
            .await?
            .flatten(),
            _ => None,
        };
        match fallback {
            Some(target) => {
                sqlx::query(
                    "UPDATE frontline_routes SET deployment_id = ?, updated_at = ? WHERE id = ?",
                )
                .bind(target)
                .bind(now)
                .bind(&id)
                .execute(&mut *conn)
                .await?;
                moved += 1;
            }
            None => {
                sqlx::query("DELETE FROM frontline_routes WHERE id = ?")
                    .bind(&id)
                    .execute(&mut *conn)
                    .await?;
                deleted += 1;
            }
        }
    }
    record_hosts(conn, &hosts, now).await?;
    Ok((moved, deleted))
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
    let mut hosts = Vec::with_capacity(route_ids.len());
    for id in route_ids {
        let before: Option<(String, String)> = sqlx::query_as(
            "SELECT deployment_id, fully_qualified_domain_name FROM frontline_routes WHERE id = ? FOR UPDATE",
        )
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
        let (before, fqdn) = before.ok_or(Error::NotFound("route"))?;
        hosts.push(fqdn);
        sqlx::query("UPDATE frontline_routes SET deployment_id = ?, updated_at = ? WHERE id = ?")
            .bind(deployment_id)
            .bind(now)
            .bind(id)
            .execute(&mut *conn)
            .await?;
        previous.push((id.clone(), before));
    }
    record_hosts(conn, &hosts, now).await?;
    Ok(previous)
}
