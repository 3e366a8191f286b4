//! What the edge (frontline) serves, and its change feed.
//!
//! The edge's table has three kinds of entries: hosts (hostname →
//! deployment), deployments (upstream protocol, desired state, instances by
//! region) and certificates. Every function of this crate that changes one
//! of them calls [`record`] in the same transaction with the keys it
//! touched; the feed (ctrl-cluster-sync) reads `version > cursor` and then
//! the *current* state of each key, so a replayed or coalesced change is
//! harmless.
//!
//! **Invariant:** versions become visible in order. [`record`] locks the
//! one `edge_sequence` row until the transaction commits, so writers commit
//! in version order and a reader that has seen version v never later finds
//! a change ≤ v. Lock order: [`record`] runs last in every writer, after its
//! data rows and after any `region_versions` lock, so no two writers wait
//! on each other in opposite orders.

use sqlx::{FromRow, MySqlConnection, MySqlExecutor};

use ctrl_core::status::{DeploymentStatus, DesiredState};

use crate::Result;
use crate::types::{InstanceStatus, UpstreamProtocol};

/// What changed: the key of one entry of the edge's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key<'a> {
    /// A hostname's route.
    Host(&'a str),
    /// A deployment's edge view (desired state, instances).
    Deployment(&'a str),
    /// The certificate for a hostname (maybe a wildcard).
    Certificate(&'a str),
}

impl<'a> Key<'a> {
    fn kind(self) -> &'static str {
        match self {
            Self::Host(_) => "host",
            Self::Deployment(_) => "deployment",
            Self::Certificate(_) => "certificate",
        }
    }

    fn reference(self) -> &'a str {
        match self {
            Self::Host(k) | Self::Deployment(k) | Self::Certificate(k) => k,
        }
    }
}

/// Appends `keys` to the edge's change feed, each with the next version;
/// call inside the transaction that made the change, after its data writes
/// (module docs: lock order).
pub async fn record(conn: &mut MySqlConnection, keys: &[Key<'_>], now: i64) -> Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let n = keys.len() as u64;
    sqlx::query("UPDATE edge_sequence SET version = version + ? WHERE id = 1")
        .bind(n)
        .execute(&mut *conn)
        .await?;
    let last: u64 = sqlx::query_scalar("SELECT version FROM edge_sequence WHERE id = 1")
        .fetch_one(&mut *conn)
        .await?;
    let marks = vec!["(?, ?, ?, ?)"; keys.len()].join(", ");
    let mut q = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO edge_changes (version, kind, ref, created_at) VALUES {marks}"
    )));
    for (i, key) in keys.iter().enumerate() {
        q = q
            .bind(last - n + 1 + i as u64)
            .bind(key.kind())
            .bind(key.reference())
            .bind(now);
    }
    q.execute(&mut *conn).await?;
    Ok(())
}

/// The highest version handed out.
pub async fn current_version(ex: impl MySqlExecutor<'_>) -> Result<u64> {
    Ok(
        sqlx::query_scalar("SELECT version FROM edge_sequence WHERE id = 1")
            .fetch_optional(ex)
            .await?
            .unwrap_or(0),
    )
}

/// Whether a reader at `cursor` can follow the feed from the changes still
/// kept (otherwise it needs a snapshot): nothing after it was pruned.
pub async fn can_resume(ex: impl MySqlExecutor<'_>, cursor: u64) -> Result<bool> {
    let (oldest, current): (Option<u64>, u64) = sqlx::query_as(
        "SELECT (SELECT MIN(version) FROM edge_changes), (SELECT version FROM edge_sequence WHERE id = 1)",
    )
    .fetch_one(ex)
    .await?;
    Ok(cursor <= current && cursor + 1 >= oldest.unwrap_or(current + 1))
}

/// The kind of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A hostname.
    Host,
    /// A deployment.
    Deployment,
    /// A certificate.
    Certificate,
}

impl TryFrom<String> for Kind {
    type Error = String;

    fn try_from(s: String) -> std::result::Result<Self, String> {
        match s.as_str() {
            "host" => Ok(Self::Host),
            "deployment" => Ok(Self::Deployment),
            "certificate" => Ok(Self::Certificate),
            _ => Err(format!("unknown edge change kind {s:?}")),
        }
    }
}

/// One change of the feed.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Change {
    /// Its version.
    pub version: u64,
    /// What kind of entry changed.
    #[sqlx(try_from = "String")]
    pub kind: Kind,
    /// Which one.
    #[sqlx(rename = "ref")]
    pub key: String,
}

/// Changes after `cursor`, in version order.
pub async fn list_changes(
    ex: impl MySqlExecutor<'_>,
    cursor: u64,
    limit: u32,
) -> Result<Vec<Change>> {
    Ok(sqlx::query_as(
        "SELECT version, kind, ref FROM edge_changes WHERE version > ? ORDER BY version LIMIT ?",
    )
    .bind(cursor)
    .bind(limit)
    .fetch_all(ex)
    .await?)
}

/// Forgets changes recorded before `before` (unix ms), always keeping the
/// newest `keep` (readers further behind take a snapshot).
pub async fn prune(ex: impl MySqlExecutor<'_>, before: i64, keep: u64) -> Result<u64> {
    let done = sqlx::query(
        "DELETE FROM edge_changes WHERE created_at < ?
           AND version <= (SELECT version FROM edge_sequence WHERE id = 1) - ?",
    )
    .bind(before)
    .bind(keep)
    .execute(ex)
    .await?;
    Ok(done.rows_affected())
}

/// A hostname and the deployment it routes to.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Host {
    /// The hostname.
    pub fqdn: String,
    /// Where it routes.
    pub deployment_id: String,
}

/// A deployment as the edge needs it.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Deployment {
    /// The deployment.
    pub id: String,
    /// Owner.
    pub workspace_id: String,
    /// Owner.
    pub project_id: String,
    /// The app.
    pub app_id: String,
    /// The environment.
    pub environment_id: String,
    /// How to speak to its instances.
    pub upstream_protocol: UpstreamProtocol,
    /// Whether its instances should run.
    #[sqlx(try_from = "String")]
    pub desired_state: DesiredState,
    /// Its status.
    #[sqlx(try_from = "String")]
    pub status: DeploymentStatus,
    /// Whether its environment is the app's production environment.
    pub is_production: bool,
}

impl Deployment {
    /// What the deploy-gate rules (`ctrl_core::gate`) need to know about it.
    pub fn gate_facts(&self) -> ctrl_core::gate::DeploymentFacts<'_> {
        ctrl_core::gate::DeploymentFacts {
            id: &self.id,
            project_id: &self.project_id,
            app_id: &self.app_id,
            environment_id: &self.environment_id,
            status: self.status,
            desired_state: self.desired_state,
            is_production: self.is_production,
        }
    }
}

/// An instance as the edge needs it.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Instance {
    /// Its deployment.
    pub deployment_id: String,
    /// Its region's platform.
    pub platform: String,
    /// Its region's name.
    pub region: String,
    /// "host:port".
    pub address: String,
    /// State.
    pub status: InstanceStatus,
}

/// A certificate as the edge needs it.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Certificate {
    /// The hostname it covers (maybe `*.example.com`).
    pub hostname: String,
    /// PEM chain.
    pub certificate: String,
    /// The private key, sealed by the vault (keyring: the workspace).
    pub encrypted_private_key: Vec<u8>,
    /// Keyring of the sealed key.
    pub workspace_id: String,
    /// Expiry, unix ms.
    pub not_after: i64,
}

const HOST: &str =
    "SELECT fully_qualified_domain_name AS fqdn, deployment_id FROM frontline_routes";
const DEPLOYMENT: &str = "SELECT d.id, d.workspace_id, d.project_id, d.app_id, d.environment_id,
    d.upstream_protocol, d.desired_state, d.status, COALESCE(e.kind = 'production', FALSE) AS is_production
    FROM deployments d LEFT JOIN environments e ON e.id = d.environment_id";
const INSTANCE: &str = "SELECT i.deployment_id, r.platform, r.name AS region, i.address, i.status
    FROM instances i JOIN regions r ON r.id = i.region_id";
const CERTIFICATE: &str = "SELECT hostname, certificate, encrypted_private_key, workspace_id, not_after FROM certificates";

fn marks(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// The routes of these hostnames (missing ones have none).
pub async fn hosts(ex: impl MySqlExecutor<'_>, fqdns: &[String]) -> Result<Vec<Host>> {
    if fqdns.is_empty() {
        return Ok(Vec::new());
    }
    let mut q = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{HOST} WHERE fully_qualified_domain_name IN ({})",
        marks(fqdns.len())
    )));
    for f in fqdns {
        q = q.bind(f);
    }
    Ok(q.fetch_all(ex).await?)
}

/// These deployments (missing ones are gone).
pub async fn deployments(ex: impl MySqlExecutor<'_>, ids: &[String]) -> Result<Vec<Deployment>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut q = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{DEPLOYMENT} WHERE d.id IN ({})",
        marks(ids.len())
    )));
    for id in ids {
        q = q.bind(id);
    }
    Ok(q.fetch_all(ex).await?)
}

/// The instances of these deployments in every region.
pub async fn instances(
    ex: impl MySqlExecutor<'_>,
    deployment_ids: &[String],
) -> Result<Vec<Instance>> {
    if deployment_ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut q = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{INSTANCE} WHERE i.deployment_id IN ({}) ORDER BY i.name",
        marks(deployment_ids.len())
    )));
    for id in deployment_ids {
        q = q.bind(id);
    }
    Ok(q.fetch_all(ex).await?)
}

/// The certificates of these hostnames (missing ones have none).
pub async fn certificates(
    ex: impl MySqlExecutor<'_>,
    hostnames: &[String],
) -> Result<Vec<Certificate>> {
    if hostnames.is_empty() {
        return Ok(Vec::new());
    }
    let mut q = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{CERTIFICATE} WHERE hostname IN ({})",
        marks(hostnames.len())
    )));
    for h in hostnames {
        q = q.bind(h);
    }
    Ok(q.fetch_all(ex).await?)
}

/// The whole table at one version.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Every change up to this version is in the snapshot, none after it.
    pub version: u64,
    /// Every route.
    pub hosts: Vec<Host>,
    /// Every deployment a route points at.
    pub deployments: Vec<Deployment>,
    /// Their instances.
    pub instances: Vec<Instance>,
    /// Every certificate.
    pub certificates: Vec<Certificate>,
}

/// Reads the whole table in one consistent read (a snapshot transaction,
/// so the version and the rows agree). Memory is about the size of the
/// routing table, which the edge holds in full anyway.
pub async fn snapshot(conn: &mut MySqlConnection) -> Result<Snapshot> {
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut *conn)
        .await?;
    sqlx::query("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        .execute(&mut *conn)
        .await?;
    let read = async {
        let version = current_version(&mut *conn).await?;
        let hosts = sqlx::query_as(sqlx::AssertSqlSafe(format!("{HOST} ORDER BY pk")))
            .fetch_all(&mut *conn)
            .await?;
        let deployments = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "{DEPLOYMENT} WHERE d.id IN (SELECT deployment_id FROM frontline_routes)"
        )))
        .fetch_all(&mut *conn)
        .await?;
        let instances = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "{INSTANCE} WHERE i.deployment_id IN (SELECT deployment_id FROM frontline_routes) ORDER BY i.name"
        )))
        .fetch_all(&mut *conn)
        .await?;
        let certificates = sqlx::query_as(sqlx::AssertSqlSafe(format!("{CERTIFICATE} ORDER BY pk")))
            .fetch_all(&mut *conn)
            .await?;
        Ok::<_, crate::Error>(Snapshot {
            version,
            hosts,
            deployments,
            instances,
            certificates,
        })
    }
    .await;
    sqlx::query("COMMIT").execute(&mut *conn).await?;
    read
}

/// Requests the edge served for one deployment in one minute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Traffic {
    /// The deployment.
    pub deployment_id: String,
    /// Start of the minute, unix ms.
    pub minute: i64,
    /// Requests in it.
    pub requests: u64,
    /// The last of them, unix ms.
    pub last_request_at: i64,
}

/// Adds a batch of traffic counts of one region (a report the edge may
/// resend adds again: counts are for scale-down decisions, not billing).
/// Call inside a transaction.
pub async fn add_traffic(
    conn: &mut MySqlConnection,
    region_id: &str,
    rows: &[Traffic],
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let values = vec!["(?, ?, ?, ?)"; rows.len()].join(", ");
    let mut q = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO deployment_traffic (deployment_id, region_id, minute, requests) VALUES {values}
         ON DUPLICATE KEY UPDATE requests = requests + VALUES(requests)"
    )));
    for r in rows {
        q = q
            .bind(&r.deployment_id)
            .bind(region_id)
            .bind(r.minute)
            .bind(r.requests);
    }
    q.execute(&mut *conn).await?;
    for r in rows {
        sqlx::query(
            "UPDATE deployments SET last_request_at = GREATEST(COALESCE(last_request_at, 0), ?) WHERE id = ?",
        )
        .bind(r.last_request_at)
        .bind(&r.deployment_id)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Requests per minute of a deployment since `since` (unix ms), all regions
/// summed, oldest minute first.
pub async fn traffic_since(
    ex: impl MySqlExecutor<'_>,
    deployment_id: &str,
    since: i64,
) -> Result<Vec<(i64, u64)>> {
    Ok(sqlx::query_as(
        "SELECT minute, CAST(SUM(requests) AS UNSIGNED) FROM deployment_traffic
         WHERE deployment_id = ? AND minute >= ? GROUP BY minute ORDER BY minute",
    )
    .bind(deployment_id)
    .bind(since)
    .fetch_all(ex)
    .await?)
}

/// Forgets traffic counts of minutes before `before` (unix ms).
pub async fn prune_traffic(ex: impl MySqlExecutor<'_>, before: i64) -> Result<u64> {
    let done = sqlx::query("DELETE FROM deployment_traffic WHERE minute < ?")
        .bind(before)
        .execute(ex)
        .await?;
    Ok(done.rows_affected())
}

#[cfg(test)]
mod tests {
    /// Every function of this crate that writes what the edge routes by —
    /// a route, an instance, a certificate, a deployment's desired state —
    /// records the change in the same function (module docs). A new writer
    /// that forgets fails here, naming itself.
    #[test]
    fn every_edge_writer_records_its_keys() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let writes = [
            "INSERT INTO frontline_routes",
            "UPDATE frontline_routes",
            "DELETE FROM frontline_routes",
            "INSERT INTO instances",
            "UPDATE instances",
            "DELETE FROM instances",
            "INSERT INTO certificates",
            "UPDATE certificates",
            "DELETE FROM certificates",
            "SET desired_state",
        ];
        let mut writers = 0;
        let mut forgetful = Vec::new();
        for entry in std::fs::read_dir(&src).expect("src").flatten() {
            let path = entry.path();
            let text = std::fs::read_to_string(&path).expect("read");
            // Function bodies: from one `async fn` to the next.
            let starts: Vec<usize> = text.match_indices("async fn ").map(|(i, _)| i).collect();
            for (n, &start) in starts.iter().enumerate() {
                // A body ends at the next function or its closing brace.
                let next = starts.get(n + 1).copied().unwrap_or(text.len());
                let close = text[start..].find("\n}\n").map_or(next, |i| start + i);
                let body = &text[start..next.min(close)];
                let name = body["async fn ".len()..].split('(').next().unwrap_or("?");
                // Table-driven deletes name their tables as string literals.
                let table_loop = body.contains("DELETE FROM {table}")
                    && ["\"frontline_routes\"", "\"instances\""]
                        .iter()
                        .any(|t| body.contains(t));
                if name == "record" || !(writes.iter().any(|w| body.contains(w)) || table_loop) {
                    continue;
                }
                writers += 1;
                let records = ["edge::record(", "record_hosts(", "record(conn"]
                    .iter()
                    .any(|r| body.contains(r));
                if !records {
                    forgetful.push(format!("{}: {name}", path.display()));
                }
            }
        }
        assert!(writers >= 10, "the scan found only {writers} writers");
        assert!(
            forgetful.is_empty(),
            "these write what the edge serves without recording it: {forgetful:?}"
        );
    }
}
