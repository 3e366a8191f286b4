//! MySQL access for the control plane.
//!
//! The only crate with SQL. It owns the migrations in the workspace's
//! `migrations/` directory (embedded at compile time as [`MIGRATOR`]) and
//! every query, grouped by table family: [`agent`] (agent credentials), [`tenancy`] (workspaces, projects,
//! apps, environments), [`settings`] (build/runtime/regional settings and
//! sealed environment variables), [`build`] (builds, build slots, build
//! output), [`cluster`] (regions, clusters),
//! [`deployment`] (deployments and steps), [`topology`] (versioned desired
//! state per region), [`instance`], [`log_relay`] (instance logs on their way from agents to readers), [`route`], [`certificate`] (and ACME
//! challenges), [`custom_domain`], [`github`] (apps connected to repositories), [`edge`] (what the edge serves, and its change feed) and
//! [`deletion`] (what a deletion cascade removes).
//!
//! Functions take an executor (pool, connection or transaction) and the
//! current time in unix milliseconds, so callers decide transactions and
//! Restate handlers pass journaled time. Functions that must run inside a
//! transaction take `&mut MySqlConnection` and say so. Conditional updates
//! return whether they applied. No business rules live here: ctrl-core
//! decides, this crate persists.
//!
//! Works with MySQL 8 and MariaDB 10.11+ (tests run on MariaDB).

pub mod agent;
pub mod build;
pub mod certificate;
pub mod cluster;
pub mod custom_domain;
pub mod deletion;
pub mod deployment;
pub mod edge;
pub mod github;
pub mod instance;
pub mod log_relay;
pub mod route;
pub mod settings;
pub mod tenancy;
pub mod topology;
pub mod types;

mod error;

use std::time::Duration;

pub use error::{Error, Result};
use sqlx::mysql::{MySqlPool, MySqlPoolOptions};

/// The forward-only migrations of `migrations/`, applied by [`migrate`].
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// How long a migration run waits for another one to finish.
const MIGRATE_LOCK_SECONDS: u32 = 600;

/// Applies [`MIGRATOR`] (for ctrl-api's `migrate` command, the Helm
/// chart's Job, the dev stack and `ctrl_testkit::test_database`) under a
/// named lock of this database, so two runs at once — two Jobs, or one
/// retried while the first still runs — wait for each other instead of
/// both applying the same migration (sqlx's own lock does not prevent that
/// on MariaDB).
pub async fn migrate(
    conn: &mut sqlx::MySqlConnection,
) -> std::result::Result<(), sqlx::migrate::MigrateError> {
    use sqlx::migrate::MigrateError;
    const NAME: &str = "CONCAT('ctrl_migrate_', COALESCE(DATABASE(), ''))";
    let got: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT GET_LOCK({NAME}, {MIGRATE_LOCK_SECONDS})"
    )))
    .fetch_one(&mut *conn)
    .await
    .map_err(MigrateError::Execute)?;
    if got != Some(1) {
        return Err(MigrateError::Execute(sqlx::Error::Protocol(format!(
            "another migration run held the lock for more than {MIGRATE_LOCK_SECONDS} s"
        ))));
    }
    let result = MIGRATOR.run(&mut *conn).await;
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DO RELEASE_LOCK({NAME})")))
        .execute(&mut *conn)
        .await;
    result
}

/// Opens a pool with bounded waits: 5 s to connect or acquire a connection.
pub async fn connect(url: &str, max_connections: u32) -> Result<MySqlPool> {
    Ok(MySqlPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect(url)
        .await?)
}

/// Like [`connect`], retrying every second while the database is not
/// reachable, for up to `give_up_after` (services start before their
/// database in compose and Kubernetes). `what` names the database in the
/// retry warnings, without its password.
pub async fn connect_retrying(
    url: &str,
    max_connections: u32,
    give_up_after: Duration,
    what: &str,
) -> Result<MySqlPool> {
    let deadline = tokio::time::Instant::now() + give_up_after;
    loop {
        match connect(url, max_connections).await {
            Ok(pool) => return Ok(pool),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(database = %what, error = %e, "database not reachable yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// A round trip to the database (readiness checks).
pub async fn ping(ex: impl sqlx::MySqlExecutor<'_>) -> Result<()> {
    sqlx::query("SELECT 1").execute(ex).await?;
    Ok(())
}

/// `('pending', …, 'finalizing')`: the statuses of a deployment still on its
/// way, as an SQL list, derived from `DeploymentStatus::is_progressing` so
/// the database and the domain rule never disagree.
pub(crate) fn progressing_sql() -> &'static str {
    static LIST: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let names: Vec<String> = ctrl_core::status::DeploymentStatus::ALL
            .into_iter()
            .filter(|s| s.is_progressing())
            .map(|s| format!("'{}'", s.as_str()))
            .collect();
        format!("({})", names.join(", "))
    });
    &LIST
}
