//! Desired state per deployment and region, versioned per region.
//!
//! **Invariant:** once a reader has seen version v of a region, no change
//! with a version ≤ v can appear later. Every write goes through
//! [`next_version`] inside the same transaction as the row it stamps: the
//! `region_versions` row stays locked until commit, so writers of one region
//! commit in version order and a reader polling `version > cursor` never
//! skips one. (The original allocated versions in a separate step and could
//! skip changes; see the reference, §1.13.)

use ctrl_core::status::DesiredState;
use sqlx::types::Json;
use sqlx::{FromRow, MySqlConnection, MySqlExecutor};

use crate::types::{HealthCheck, ShutdownSignal, UpstreamProtocol};
use crate::{Error, Result};
use ctrl_core::names::clip;

/// Takes the next version of `region_id`, locking the region's counter until
/// the surrounding transaction ends. Call only inside a transaction, and
/// before touching the rows it stamps: taking the region lock first in every
/// writer keeps the lock order fixed (no deadlocks between writers).
pub async fn next_version(conn: &mut MySqlConnection, region_id: &str) -> Result<u64> {
    let bump = || {
        sqlx::query("UPDATE region_versions SET version = version + 1 WHERE region_id = ?")
            .bind(region_id)
    };
    if bump().execute(&mut *conn).await?.rows_affected() == 0 {
        // Regions get their counter row when they are created; this covers rows
        // created any other way.
        sqlx::query("INSERT IGNORE INTO region_versions (region_id, version) VALUES (?, 0)")
            .bind(region_id)
            .execute(&mut *conn)
            .await?;
        bump().execute(&mut *conn).await?;
    }
    Ok(
        sqlx::query_scalar("SELECT version FROM region_versions WHERE region_id = ?")
            .bind(region_id)
            .fetch_one(&mut *conn)
            .await?,
    )
}

/// Locks the region's version counter until the transaction ends, without
/// taking a version (creating the counter row if it is missing).
async fn lock_region(conn: &mut MySqlConnection, region_id: &str) -> Result<()> {
    let lock = || {
        sqlx::query_scalar::<_, u64>(
            "SELECT version FROM region_versions WHERE region_id = ? FOR UPDATE",
        )
        .bind(region_id)
    };
    if lock().fetch_optional(&mut *conn).await?.is_none() {
        sqlx::query("INSERT IGNORE INTO region_versions (region_id, version) VALUES (?, 0)")
            .bind(region_id)
            .execute(&mut *conn)
            .await?;
        lock().fetch_one(&mut *conn).await?;
    }
    Ok(())
}

/// The highest version handed out in a region (0 if none).
pub async fn current_version(ex: impl MySqlExecutor<'_>, region_id: &str) -> Result<u64> {
    Ok(
        sqlx::query_scalar("SELECT version FROM region_versions WHERE region_id = ?")
            .bind(region_id)
            .fetch_optional(ex)
            .await?
            .unwrap_or(0),
    )
}

/// A topology row.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Topology {
    /// Paging cursor.
    pub pk: u64,
    /// The deployment.
    pub deployment_id: String,
    /// The region.
    pub region_id: String,
    /// Replica bounds.
    pub min_replicas: u32,
    /// Replica bounds.
    pub max_replicas: u32,
    /// CPU threshold.
    pub cpu_threshold_percent: u8,
    /// Memory threshold.
    pub memory_threshold_percent: u8,
    /// Run or remove.
    #[sqlx(try_from = "String")]
    pub desired_status: DesiredState,
    /// Region version of the last change.
    pub version: u64,
}

/// A topology row to create.
#[derive(Debug, Clone)]
pub struct NewTopology<'a> {
    /// Owner.
    pub workspace_id: &'a str,
    /// The deployment.
    pub deployment_id: &'a str,
    /// The region.
    pub region_id: &'a str,
    /// Replica bounds (clamped to at least 1).
    pub min_replicas: u32,
    /// Replica bounds (clamped to at least min).
    pub max_replicas: u32,
    /// CPU threshold.
    pub cpu_threshold_percent: u8,
    /// Memory threshold.
    pub memory_threshold_percent: u8,
    /// How long a new instance may take to become healthy (0: the agent's
    /// own default).
    pub startup_timeout_seconds: u32,
}

/// Creates the deployment's row in a region with desired status running, or
/// sets an existing one back to running, stamping a new version and
/// forgetting the region's reported problem. A row that already says
/// exactly this keeps its version (a retried step changes nothing an agent
/// could see). Call inside a transaction. Returns the version.
pub async fn upsert_running(
    conn: &mut MySqlConnection,
    t: &NewTopology<'_>,
    now: i64,
) -> Result<u64> {
    let min = t.min_replicas.max(1);
    let max = t.max_replicas.max(min);
    // The region's counter first (the fixed lock order), then the row.
    lock_region(&mut *conn, t.region_id).await?;
    let existing: Option<(u32, u32, u8, u8, u32, String, u64)> = sqlx::query_as(
        "SELECT min_replicas, max_replicas, cpu_threshold_percent, memory_threshold_percent,
                startup_timeout_seconds, desired_status, version
         FROM deployment_topology WHERE deployment_id = ? AND region_id = ? FOR UPDATE",
    )
    .bind(t.deployment_id)
    .bind(t.region_id)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some((emin, emax, ecpu, emem, estartup, status, version)) = existing
        && (emin, emax, ecpu, emem, estartup)
            == (
                min,
                max,
                t.cpu_threshold_percent,
                t.memory_threshold_percent,
                t.startup_timeout_seconds,
            )
        && status == DesiredState::Running.as_str()
    {
        return Ok(version);
    }
    let version = next_version(&mut *conn, t.region_id).await?;
    sqlx::query(
        "INSERT INTO deployment_topology
           (workspace_id, deployment_id, region_id, min_replicas, max_replicas, cpu_threshold_percent,
            memory_threshold_percent, startup_timeout_seconds, desired_status, version, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'running', ?, ?, ?)
         ON DUPLICATE KEY UPDATE min_replicas = VALUES(min_replicas), max_replicas = VALUES(max_replicas),
           cpu_threshold_percent = VALUES(cpu_threshold_percent),
           memory_threshold_percent = VALUES(memory_threshold_percent),
           startup_timeout_seconds = VALUES(startup_timeout_seconds),
           desired_status = 'running', version = VALUES(version), updated_at = VALUES(updated_at),
           problem = NULL, failed_attempts = 0, problem_at = NULL",
    )
    .bind(t.workspace_id)
    .bind(t.deployment_id)
    .bind(t.region_id)
    .bind(min)
    .bind(max)
    .bind(t.cpu_threshold_percent)
    .bind(t.memory_threshold_percent)
    .bind(t.startup_timeout_seconds)
    .bind(version)
    .bind(now)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(version)
}

/// Sets the desired status of every region row of a deployment, each with a
/// new version of its region (and the region's reported problem
/// forgotten); rows already in that state are left alone. Call inside a
/// transaction. Returns the (region, version) pairs written.
pub async fn set_desired_status(
    conn: &mut MySqlConnection,
    deployment_id: &str,
    status: DesiredState,
    now: i64,
) -> Result<Vec<(String, u64)>> {
    // Read without locking, then lock each region's counter before its row.
    let regions: Vec<String> = sqlx::query_scalar(
        "SELECT region_id FROM deployment_topology WHERE deployment_id = ? AND desired_status <> ? ORDER BY region_id",
    )
    .bind(deployment_id)
    .bind(status.as_str())
    .fetch_all(&mut *conn)
    .await?;
    let mut written = Vec::with_capacity(regions.len());
    for region in regions {
        let version = next_version(&mut *conn, &region).await?;
        let done = sqlx::query(
            "UPDATE deployment_topology SET desired_status = ?, version = ?, updated_at = ?,
               problem = NULL, failed_attempts = 0, problem_at = NULL
             WHERE deployment_id = ? AND region_id = ? AND desired_status <> ?",
        )
        .bind(status.as_str())
        .bind(version)
        .bind(now)
        .bind(deployment_id)
        .bind(&region)
        .bind(status.as_str())
        .execute(&mut *conn)
        .await?;
        // A concurrent writer may have changed it first; the version is then
        // simply unused (readers need increasing versions, not contiguous ones).
        if done.rows_affected() == 1 {
            written.push((region, version));
        }
    }
    Ok(written)
}

/// Records what a region's agent reported about running the deployment:
/// its latest problem (`None`: none) and how many attempts in a row failed.
/// A report about an older desired state than the row's (`applied_version`
/// below the row's version; 0 = unknown) is ignored. Takes no region
/// version: this is observed state. Returns whether it applied.
pub async fn record_problem(
    ex: impl MySqlExecutor<'_>,
    deployment_id: &str,
    region_id: &str,
    applied_version: u64,
    problem: Option<&str>,
    failed_attempts: u32,
    now: i64,
) -> Result<bool> {
    let problem = problem.map(|p| clip(p, 512));
    let done = sqlx::query(
        "UPDATE deployment_topology
         SET problem = ?, failed_attempts = ?, problem_at = IF(? IS NULL, NULL, COALESCE(problem_at, ?))
         WHERE deployment_id = ? AND region_id = ? AND (? = 0 OR version <= ?)
           AND (problem <=> ?) + (failed_attempts = ?) < 2",
    )
    .bind(problem)
    .bind(failed_attempts)
    .bind(problem)
    .bind(now)
    .bind(deployment_id)
    .bind(region_id)
    .bind(applied_version)
    .bind(applied_version)
    .bind(problem)
    .bind(failed_attempts)
    .execute(ex)
    .await?;
    Ok(done.rows_affected() == 1)
}

const TOPOLOGY: &str =
    "SELECT pk, deployment_id, region_id, min_replicas, max_replicas, cpu_threshold_percent,
    memory_threshold_percent, desired_status, version FROM deployment_topology";

/// A deployment's rows in every region.
pub async fn list_by_deployment(
    ex: impl MySqlExecutor<'_>,
    deployment_id: &str,
) -> Result<Vec<Topology>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{TOPOLOGY} WHERE deployment_id = ? ORDER BY region_id"
    )))
    .bind(deployment_id)
    .fetch_all(ex)
    .await?)
}

/// Whether the deployment is placed in the region (has a topology row
/// there, whatever its desired state): what an agent may report on.
pub async fn is_placed(
    ex: impl MySqlExecutor<'_>,
    deployment_id: &str,
    region_id: &str,
) -> Result<bool> {
    let found: Option<(i64,)> = sqlx::query_as(
        "SELECT 1 FROM deployment_topology WHERE deployment_id = ? AND region_id = ?",
    )
    .bind(deployment_id)
    .bind(region_id)
    .fetch_optional(ex)
    .await?;
    Ok(found.is_some())
}

/// Everything an agent needs to apply one deployment in one region: the
/// topology row joined with its deployment, workspace, environment and region.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct DesiredDeployment {
    /// Topology paging cursor.
    pub pk: u64,
    /// Region version of this state.
    pub version: u64,
    /// Run or remove.
    #[sqlx(try_from = "String")]
    pub desired_status: DesiredState,
    /// Region name.
    pub region_name: String,
    /// Workspace namespace (may be unset before the first deploy finished starting).
    pub k8s_namespace: Option<String>,
    /// Workload name.
    pub k8s_name: String,
    /// Ids.
    pub workspace_id: String,
    /// Ids.
    pub project_id: String,
    /// Ids.
    pub app_id: String,
    /// Ids.
    pub environment_id: String,
    /// Environment slug.
    pub environment_slug: String,
    /// Ids.
    pub deployment_id: String,
    /// Image (None before the build finished).
    pub image: Option<String>,
    /// Build id.
    pub build_id: Option<String>,
    /// Command.
    pub command: Json<Vec<String>>,
    /// Port.
    pub port: i32,
    /// CPU.
    pub cpu_millicores: i32,
    /// Memory.
    pub memory_mib: i32,
    /// Disk.
    pub storage_mib: i32,
    /// Sealed environment.
    pub encrypted_environment: Vec<u8>,
    /// Health check.
    pub healthcheck: Option<Json<HealthCheck>>,
    /// Stop signal.
    pub shutdown_signal: ShutdownSignal,
    /// Grace period.
    pub termination_grace_seconds: i32,
    /// Edge protocol.
    pub upstream_protocol: UpstreamProtocol,
    /// Replica bounds.
    pub min_replicas: u32,
    /// Replica bounds.
    pub max_replicas: u32,
    /// CPU threshold.
    pub cpu_threshold_percent: u8,
    /// Memory threshold.
    pub memory_threshold_percent: u8,
    /// Git metadata.
    pub git_commit_sha: Option<String>,
    /// Git metadata.
    pub git_branch: Option<String>,
    /// Git metadata.
    pub git_repository: Option<String>,
    /// Network policy document, if one was written.
    pub network_policy: Option<Json<serde_json::Value>>,
    /// How long a new instance may take to become healthy (0: the agent's default).
    pub startup_timeout_seconds: u32,
}

const DESIRED: &str = "SELECT t.pk, t.version, t.desired_status, r.name AS region_name, w.k8s_namespace,
    d.k8s_name, d.workspace_id, d.project_id, d.app_id, d.environment_id, e.slug AS environment_slug,
    d.id AS deployment_id, d.image, d.build_id, d.command, d.port, d.cpu_millicores, d.memory_mib,
    d.storage_mib, d.encrypted_environment, d.healthcheck, d.shutdown_signal, d.termination_grace_seconds,
    d.upstream_protocol, t.min_replicas, t.max_replicas, t.cpu_threshold_percent, t.memory_threshold_percent,
    d.git_commit_sha, d.git_branch, d.git_repository, np.policy AS network_policy, t.startup_timeout_seconds
    FROM deployment_topology t
    JOIN deployments d ON d.id = t.deployment_id
    JOIN workspaces w ON w.id = d.workspace_id
    JOIN environments e ON e.id = d.environment_id
    JOIN regions r ON r.id = t.region_id
    LEFT JOIN network_policies np ON np.deployment_id = t.deployment_id AND np.region_id = t.region_id";

/// Changes in a region after `after_version`, in version order (the Watch
/// stream): every row whose latest change has a higher version.
pub async fn list_changes(
    ex: impl MySqlExecutor<'_>,
    region_id: &str,
    after_version: u64,
    limit: u32,
) -> Result<Vec<DesiredDeployment>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{DESIRED} WHERE t.region_id = ? AND t.version > ? ORDER BY t.version LIMIT ?"
    )))
    .bind(region_id)
    .bind(after_version)
    .bind(limit)
    .fetch_all(ex)
    .await?)
}

/// One page of everything that should run in a region (the full snapshot),
/// by topology pk after `after_pk`.
pub async fn snapshot_page(
    ex: impl MySqlExecutor<'_>,
    region_id: &str,
    after_pk: u64,
    limit: u32,
) -> Result<Vec<DesiredDeployment>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{DESIRED} WHERE t.region_id = ? AND t.desired_status = 'running' AND t.pk > ? ORDER BY t.pk LIMIT ?"
    )))
    .bind(region_id)
    .bind(after_pk)
    .bind(limit)
    .fetch_all(ex)
    .await?)
}

/// The desired state of one deployment in one region (point lookup).
pub async fn find_desired(
    ex: impl MySqlExecutor<'_>,
    region_id: &str,
    deployment_id: &str,
) -> Result<DesiredDeployment> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{DESIRED} WHERE t.region_id = ? AND t.deployment_id = ?"
    )))
    .bind(region_id)
    .bind(deployment_id)
    .fetch_optional(ex)
    .await?
    .ok_or(Error::NotFound("deployment topology"))
}

/// The network policy of a deployment in a region.
#[derive(Debug, Clone, Copy)]
pub struct NetworkPolicy<'a> {
    /// Id to use if the row is new.
    pub id: &'a str,
    /// Owner.
    pub workspace_id: &'a str,
    /// The deployment.
    pub deployment_id: &'a str,
    /// The region.
    pub region_id: &'a str,
    /// Namespace of the workload.
    pub k8s_namespace: &'a str,
    /// Name of the policy object.
    pub k8s_name: &'a str,
    /// The policy document (`ctrl.v1.NetworkPolicy` as JSON).
    pub policy: &'a serde_json::Value,
}

/// Stores the network policy of a deployment in a region (replacing it).
pub async fn upsert_network_policy(
    ex: impl MySqlExecutor<'_>,
    np: NetworkPolicy<'_>,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO network_policies
           (id, workspace_id, deployment_id, region_id, k8s_namespace, k8s_name, policy, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON DUPLICATE KEY UPDATE k8s_namespace = VALUES(k8s_namespace), k8s_name = VALUES(k8s_name),
           policy = VALUES(policy), updated_at = VALUES(updated_at)",
    )
    .bind(np.id)
    .bind(np.workspace_id)
    .bind(np.deployment_id)
    .bind(np.region_id)
    .bind(np.k8s_namespace)
    .bind(np.k8s_name)
    .bind(Json(np.policy))
    .bind(now)
    .bind(now)
    .execute(ex)
    .await?;
    Ok(())
}

/// A stored network policy.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct StoredNetworkPolicy {
    /// `net_…`
    pub id: String,
    /// The region.
    pub region_id: String,
    /// Namespace of the workload.
    pub k8s_namespace: String,
    /// Name of the policy object.
    pub k8s_name: String,
    /// The policy document (`ctrl.v1.NetworkPolicy` as JSON).
    pub policy: Json<serde_json::Value>,
}

/// A deployment's network policies, one per region, by region.
pub async fn list_network_policies(
    ex: impl MySqlExecutor<'_>,
    deployment_id: &str,
) -> Result<Vec<StoredNetworkPolicy>> {
    Ok(sqlx::query_as(
        "SELECT id, region_id, k8s_namespace, k8s_name, policy FROM network_policies
         WHERE deployment_id = ? ORDER BY region_id",
    )
    .bind(deployment_id)
    .fetch_all(ex)
    .await?)
}
