//! Regions and the clusters (agents) that serve them.

use sqlx::{FromRow, MySqlConnection, MySqlExecutor};

use crate::types::Backend;
use crate::{Error, Result};

/// A region row.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Region {
    /// `rgn_…`
    pub id: String,
    /// e.g. "us-east-1".
    pub name: String,
    /// e.g. "aws".
    pub platform: String,
    /// Accepts new deployments.
    pub can_schedule: bool,
    /// Last heartbeat of its cluster, 0 if none.
    pub last_heartbeat_at: i64,
}

const REGION: &str = "SELECT r.id, r.name, r.platform, r.can_schedule, COALESCE(c.last_heartbeat_at, 0) AS last_heartbeat_at
    FROM regions r LEFT JOIN clusters c ON c.region_id = r.id";

/// Returns the region (name, platform), creating it with `new_id` if it does not exist.
pub async fn upsert_region(
    conn: &mut MySqlConnection,
    new_id: &str,
    name: &str,
    platform: &str,
    now: i64,
) -> Result<Region> {
    sqlx::query(
        "INSERT INTO regions (id, name, platform, created_at, updated_at) VALUES (?, ?, ?, ?, ?)
         ON DUPLICATE KEY UPDATE name = name",
    )
    .bind(new_id)
    .bind(name)
    .bind(platform)
    .bind(now)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    let region: Region = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{REGION} WHERE r.name = ? AND r.platform = ?"
    )))
    .bind(name)
    .bind(platform)
    .fetch_one(&mut *conn)
    .await?;
    // Its version counter exists from the start, so version allocation never
    // has to insert it (see topology::next_version).
    sqlx::query("INSERT IGNORE INTO region_versions (region_id, version) VALUES (?, 0)")
        .bind(&region.id)
        .execute(&mut *conn)
        .await?;
    Ok(region)
}

/// The region with this id.
pub async fn get_region(ex: impl MySqlExecutor<'_>, id: &str) -> Result<Region> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("{REGION} WHERE r.id = ?")))
        .bind(id)
        .fetch_optional(ex)
        .await?
        .ok_or(Error::NotFound("region"))
}

/// The region (name, platform), if it exists.
pub async fn find_region(
    ex: impl MySqlExecutor<'_>,
    name: &str,
    platform: &str,
) -> Result<Option<Region>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{REGION} WHERE r.name = ? AND r.platform = ?"
    )))
    .bind(name)
    .bind(platform)
    .fetch_optional(ex)
    .await?)
}

/// All regions by platform and name.
pub async fn list_regions(ex: impl MySqlExecutor<'_>) -> Result<Vec<Region>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{REGION} ORDER BY r.platform, r.name"
    )))
    .fetch_all(ex)
    .await?)
}

/// Sets whether a region accepts new deployments.
pub async fn set_can_schedule(
    ex: impl MySqlExecutor<'_>,
    id: &str,
    can_schedule: bool,
    now: i64,
) -> Result<()> {
    let done = sqlx::query("UPDATE regions SET can_schedule = ?, updated_at = ? WHERE id = ?")
        .bind(can_schedule)
        .bind(now)
        .bind(id)
        .execute(ex)
        .await?;
    if done.rows_affected() == 0 {
        return Err(Error::NotFound("region"));
    }
    Ok(())
}

/// A cluster row joined with its region.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Cluster {
    /// `cls_…`
    pub id: String,
    /// Its region.
    pub region_id: String,
    /// Region name.
    pub region_name: String,
    /// Region platform.
    pub platform: String,
    /// Unique cell id.
    pub cell_id: String,
    /// Agent backend.
    pub backend: Backend,
    /// Agent version.
    pub agent_version: String,
    /// Unix ms.
    pub last_heartbeat_at: i64,
}

/// What a heartbeat reports.
#[derive(Debug, Clone)]
pub struct Heartbeat<'a> {
    /// Id to use if the cluster is new.
    pub new_cluster_id: &'a str,
    /// Id to use if the region is new.
    pub new_region_id: &'a str,
    /// Region name.
    pub region: &'a str,
    /// Platform.
    pub platform: &'a str,
    /// Cell id.
    pub cell_id: &'a str,
    /// Backend.
    pub backend: Backend,
    /// Agent version.
    pub agent_version: &'a str,
}

const CLUSTER: &str =
    "SELECT c.id, c.region_id, r.name AS region_name, r.platform, c.cell_id, c.backend,
    c.agent_version, c.last_heartbeat_at FROM clusters c JOIN regions r ON r.id = c.region_id";

/// Registers or refreshes a cluster (one per region) and its region (call in
/// a transaction). A cell id already used by another region's cluster is
/// `AlreadyExists { key: "clusters_cell" }`.
pub async fn heartbeat(
    conn: &mut MySqlConnection,
    hb: &Heartbeat<'_>,
    now: i64,
) -> Result<Cluster> {
    let region = upsert_region(&mut *conn, hb.new_region_id, hb.region, hb.platform, now).await?;
    sqlx::query(
        "INSERT INTO clusters (id, region_id, cell_id, backend, agent_version, last_heartbeat_at, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)
         ON DUPLICATE KEY UPDATE cell_id = VALUES(cell_id), backend = VALUES(backend),
           agent_version = VALUES(agent_version),
           last_heartbeat_at = VALUES(last_heartbeat_at),
           updated_at = VALUES(updated_at)",
    )
    .bind(hb.new_cluster_id)
    .bind(&region.id)
    .bind(hb.cell_id)
    .bind(hb.backend)
    .bind(hb.agent_version)
    .bind(now)
    .bind(now)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{CLUSTER} WHERE c.region_id = ?"
    )))
    .bind(&region.id)
    .fetch_one(&mut *conn)
    .await
    .map_err(Error::from)
}

/// The cluster identified by an agent's key; `NotFound` until it has sent a heartbeat.
pub async fn find_cluster(
    ex: impl MySqlExecutor<'_>,
    platform: &str,
    region: &str,
    cell_id: &str,
) -> Result<Cluster> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{CLUSTER} WHERE r.platform = ? AND r.name = ? AND c.cell_id = ?"
    )))
    .bind(platform)
    .bind(region)
    .bind(cell_id)
    .fetch_optional(ex)
    .await?
    .ok_or(Error::NotFound("cluster"))
}

/// Where to read a deployment's logs: one row per region it has instances
/// in (or had; a stopped topology keeps its row), with that region's agent.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct LogSource {
    /// Region name.
    pub region_name: String,
    /// The region's cluster, whose agent reads the logs; `None` = no agent
    /// ever registered there.
    pub cluster_id: Option<String>,
    /// Unix ms of the agent's last heartbeat, 0 if it never sent one.
    pub last_heartbeat_at: i64,
}

/// The deployment's regions and their clusters, by region name.
pub async fn log_sources(
    ex: impl MySqlExecutor<'_>,
    deployment_id: &str,
) -> Result<Vec<LogSource>> {
    Ok(sqlx::query_as(
        "SELECT r.name AS region_name, c.id AS cluster_id,
                COALESCE(c.last_heartbeat_at, 0) AS last_heartbeat_at
         FROM deployment_topology t
         JOIN regions r ON r.id = t.region_id
         LEFT JOIN clusters c ON c.region_id = t.region_id
         WHERE t.deployment_id = ?
         ORDER BY r.name",
    )
    .bind(deployment_id)
    .fetch_all(ex)
    .await?)
}
