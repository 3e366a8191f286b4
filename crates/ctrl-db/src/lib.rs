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

/// The forward-only migrations of `migrations/`, applied by the services'
/// `migrate` commands, the dev stack and `ctrl_testkit::test_database`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

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
