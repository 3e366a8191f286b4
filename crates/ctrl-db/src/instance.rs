//! Observed instances, written only from agent reports.

use ctrl_core::status::RegionReadiness;
use sqlx::{Acquire, FromRow, MySql, MySqlConnection, MySqlExecutor};

use crate::Result;
use crate::edge::{self, Key};
use crate::types::InstanceStatus;

/// An instance row.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Instance {
    /// `ins_…`
    pub id: String,
    /// The deployment.
    pub deployment_id: String,
    /// The region.
    pub region_id: String,
    /// Pod or container name.
    pub name: String,
    /// "host:port".
    pub address: String,
    /// CPU limit.
    pub cpu_millicores: i32,
    /// Memory limit.
    pub memory_mib: i32,
    /// State.
    pub status: InstanceStatus,
    /// Restarts so far.
    pub restart_count: i32,
    /// Last exit code.
    pub last_exit_code: Option<i32>,
    /// Last exit reason.
    pub last_exit_reason: Option<String>,
    /// Last exit time, unix ms.
    pub last_exit_at: Option<i64>,
    /// Killed for exceeding its memory limit.
    pub oom_killed: bool,
    /// Why it waits to start.
    pub waiting_reason: Option<String>,
}

/// An instance as an agent reports it.
#[derive(Debug, Clone)]
pub struct ReportedInstance {
    /// Id to use if the instance is new.
    pub new_id: String,
    /// Pod or container name.
    pub name: String,
    /// "host:port".
    pub address: String,
    /// CPU limit.
    pub cpu_millicores: i32,
    /// Memory limit.
    pub memory_mib: i32,
    /// State.
    pub status: InstanceStatus,
}

/// Replaces the set of a deployment's instances in a region with `reported`
/// (a complete report: instances not in it are deleted). Call inside a
/// transaction. Returns whether anything changed (an instance appeared or
/// went away); a change the edge routes by (an address or a state) is also
/// recorded in its feed.
pub async fn replace_for_deployment(
    conn: &mut MySqlConnection,
    workspace_id: &str,
    deployment_id: &str,
    region_id: &str,
    reported: &[ReportedInstance],
    now: i64,
) -> Result<bool> {
    let mut changed = false;
    let existing: Vec<(String, String, InstanceStatus)> = sqlx::query_as(
        "SELECT name, address, status FROM instances WHERE deployment_id = ? AND region_id = ? FOR UPDATE",
    )
    .bind(deployment_id)
    .bind(region_id)
    .fetch_all(&mut *conn)
    .await?;
    // What the edge routes by: the set of (name, address, state).
    let seen_by_edge =
        |a: &str, b: &str, s: InstanceStatus| (a.to_owned(), b.to_owned(), s.as_str());
    let mut before: Vec<_> = existing
        .iter()
        .map(|(n, a, s)| seen_by_edge(n, a, *s))
        .collect();
    let mut after: Vec<_> = reported
        .iter()
        .map(|r| seen_by_edge(&r.name, &r.address, r.status))
        .collect();
    before.sort();
    after.sort();
    for (name, _, _) in existing
        .iter()
        .filter(|(n, _, _)| !reported.iter().any(|r| &r.name == n))
    {
        sqlx::query("DELETE FROM instances WHERE region_id = ? AND name = ?")
            .bind(region_id)
            .bind(name)
            .execute(&mut *conn)
            .await?;
        changed = true;
    }
    for r in reported {
        let done = sqlx::query(
            "INSERT INTO instances
               (id, workspace_id, deployment_id, region_id, name, address, cpu_millicores, memory_mib, status,
                created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON DUPLICATE KEY UPDATE deployment_id = VALUES(deployment_id), address = VALUES(address),
               cpu_millicores = VALUES(cpu_millicores), memory_mib = VALUES(memory_mib),
               status = VALUES(status), updated_at = VALUES(updated_at)",
        )
        .bind(&r.new_id)
        .bind(workspace_id)
        .bind(deployment_id)
        .bind(region_id)
        .bind(&r.name)
        .bind(&r.address)
        .bind(r.cpu_millicores)
        .bind(r.memory_mib)
        .bind(r.status)
        .bind(now)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        // MySQL reports 1 for an insert, 2 for a changed row, 0 for no change
        // (`updated_at` alone counts, so compare the fields that matter).
        changed |= done.rows_affected() == 1;
    }
    if before != after {
        edge::record(conn, &[Key::Deployment(deployment_id)], now).await?;
    }
    Ok(changed)
}

/// Deletes all of a deployment's instances in a region (its workload is gone).
pub async fn delete_for_deployment(
    db: impl Acquire<'_, Database = MySql>,
    deployment_id: &str,
    region_id: &str,
    now: i64,
) -> Result<u64> {
    let mut tx = db.begin().await?;
    let done = sqlx::query("DELETE FROM instances WHERE deployment_id = ? AND region_id = ?")
        .bind(deployment_id)
        .bind(region_id)
        .execute(&mut *tx)
        .await?;
    if done.rows_affected() > 0 {
        edge::record(&mut tx, &[Key::Deployment(deployment_id)], now).await?;
    }
    tx.commit().await?;
    Ok(done.rows_affected())
}

const INSTANCE: &str = "SELECT id, deployment_id, region_id, name, address, cpu_millicores, memory_mib, status,
    restart_count, last_exit_code, last_exit_reason, last_exit_at, oom_killed, waiting_reason FROM instances";

/// A deployment's instances in all regions.
pub async fn list_by_deployment(
    ex: impl MySqlExecutor<'_>,
    deployment_id: &str,
) -> Result<Vec<Instance>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{INSTANCE} WHERE deployment_id = ? ORDER BY region_id, name"
    )))
    .bind(deployment_id)
    .fetch_all(ex)
    .await?)
}

/// Per region where the deployment should run: its minimum replica count,
/// how many instances run there now and what its agent last reported as a
/// problem — the input of `ctrl_core::status::assess`, shared by the Deploy
/// workflow and cluster-sync so both decide readiness the same way.
pub async fn readiness_by_region(
    ex: impl MySqlExecutor<'_>,
    deployment_id: &str,
) -> Result<Vec<RegionReadiness>> {
    let rows: Vec<(String, u32, i64, Option<String>, u32)> = sqlx::query_as(
        "SELECT COALESCE(r.name, t.region_id), t.min_replicas,
                (SELECT COUNT(*) FROM instances i
                 WHERE i.deployment_id = t.deployment_id AND i.region_id = t.region_id AND i.status = 'running'),
                t.problem, t.failed_attempts
         FROM deployment_topology t LEFT JOIN regions r ON r.id = t.region_id
         WHERE t.deployment_id = ? AND t.desired_status = 'running' ORDER BY t.region_id",
    )
    .bind(deployment_id)
    .fetch_all(ex)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(region, min_replicas, running, problem, failed_attempts)| RegionReadiness {
                region,
                min_replicas,
                running: u64::try_from(running).unwrap_or(0),
                problem,
                failed_attempts,
            },
        )
        .collect())
}

/// An exit or wait event of an instance.
#[derive(Debug, Clone)]
pub struct InstanceEvent<'a> {
    /// Instance name.
    pub name: &'a str,
    /// Restarts so far.
    pub restart_count: i32,
    /// Exit code, for an exit.
    pub exit_code: Option<i32>,
    /// Exit or wait reason.
    pub reason: Option<&'a str>,
    /// Killed for memory.
    pub oom_killed: bool,
    /// Event time, unix ms.
    pub at: i64,
    /// Whether it is waiting to start (crash loop) rather than exited.
    pub waiting: bool,
}

/// Records an exit or wait on the instance row; stale events (lower restart
/// count, or same count and older) are ignored. Returns whether it applied.
pub async fn record_event(
    db: impl Acquire<'_, Database = MySql>,
    region_id: &str,
    e: &InstanceEvent<'_>,
) -> Result<bool> {
    let mut tx = db.begin().await?;
    let done = sqlx::query(
        "UPDATE instances SET restart_count = ?,
           last_exit_code = IF(?, last_exit_code, ?), last_exit_reason = IF(?, last_exit_reason, ?),
           last_exit_at = IF(?, last_exit_at, ?), oom_killed = IF(?, oom_killed, ?),
           waiting_reason = IF(?, ?, NULL), status = IF(? OR ?, 'failed', status), updated_at = ?
         WHERE region_id = ? AND name = ?
           AND (restart_count < ? OR (restart_count = ? AND COALESCE(last_exit_at, 0) <= ?))",
    )
    .bind(e.restart_count)
    .bind(e.waiting)
    .bind(e.exit_code)
    .bind(e.waiting)
    .bind(e.reason)
    .bind(e.waiting)
    .bind(e.at)
    .bind(e.waiting)
    .bind(e.oom_killed)
    .bind(e.waiting)
    .bind(e.reason)
    .bind(e.waiting)
    .bind(e.exit_code.is_some_and(|c| c != 0))
    .bind(e.at)
    .bind(region_id)
    .bind(e.name)
    .bind(e.restart_count)
    .bind(e.restart_count)
    .bind(e.at)
    .execute(&mut *tx)
    .await?;
    let applied = done.rows_affected() == 1;
    if applied && (e.waiting || e.exit_code.is_some_and(|c| c != 0)) {
        // The instance is now `failed`: the edge stops sending it traffic.
        let deployment: Option<String> = sqlx::query_scalar(
            "SELECT deployment_id FROM instances WHERE region_id = ? AND name = ?",
        )
        .bind(region_id)
        .bind(e.name)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(d) = deployment {
            edge::record(&mut tx, &[Key::Deployment(&d)], e.at).await?;
        }
    }
    tx.commit().await?;
    Ok(applied)
}
