//! Agent credentials: one bearer token per regional agent, bound to the
//! region (and for krane the cell) it serves. Only digests are stored.

use sqlx::{FromRow, MySqlExecutor};

use crate::types::AgentKind;
use crate::{Error, Result};

/// A credential row (never the token).
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct AgentCredential {
    /// `agt_…`
    pub id: String,
    /// The agent it belongs to.
    pub kind: AgentKind,
    /// Platform of the bound region.
    pub platform: String,
    /// Name of the bound region.
    pub region: String,
    /// krane's cell id; empty for frontline.
    pub cell_id: String,
    /// The operator's label.
    pub name: String,
    /// The token's last four characters.
    pub token_hint: String,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms of the last heartbeat or stream start with it, if any.
    pub last_used_at: Option<i64>,
    /// Unix ms it was revoked, if it was.
    pub revoked_at: Option<i64>,
}

/// A credential to store.
#[derive(Debug, Clone)]
pub struct NewAgentCredential<'a> {
    /// `agt_…`
    pub id: &'a str,
    /// The agent it belongs to.
    pub kind: AgentKind,
    /// Platform of the bound region.
    pub platform: &'a str,
    /// Name of the bound region.
    pub region: &'a str,
    /// krane's cell id; empty for frontline.
    pub cell_id: &'a str,
    /// The operator's label.
    pub name: &'a str,
    /// SHA-256 of the token.
    pub token_digest: &'a [u8; 32],
    /// The token's last four characters.
    pub token_hint: &'a str,
}

const COLUMNS: &str = "SELECT id, kind, platform, region, cell_id, name, token_hint, created_at,
    last_used_at, revoked_at FROM agent_credentials";

/// Stores a new credential.
pub async fn insert(
    ex: impl MySqlExecutor<'_>,
    c: &NewAgentCredential<'_>,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO agent_credentials
           (id, kind, platform, region, cell_id, name, token_digest, token_hint, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(c.id)
    .bind(c.kind)
    .bind(c.platform)
    .bind(c.region)
    .bind(c.cell_id)
    .bind(c.name)
    .bind(&c.token_digest[..])
    .bind(c.token_hint)
    .bind(now)
    .execute(ex)
    .await?;
    Ok(())
}

/// The unrevoked credential whose token has this digest, if any.
pub async fn find_active_by_digest(
    ex: impl MySqlExecutor<'_>,
    digest: &[u8; 32],
) -> Result<Option<AgentCredential>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{COLUMNS} WHERE token_digest = ? AND revoked_at IS NULL"
    )))
    .bind(&digest[..])
    .fetch_optional(ex)
    .await?)
}

/// Whether the credential `id` exists and is not revoked (what a long
/// stream re-checks now and then).
pub async fn is_active(ex: impl MySqlExecutor<'_>, id: &str) -> Result<bool> {
    let found: Option<(i64,)> =
        sqlx::query_as("SELECT 1 FROM agent_credentials WHERE id = ? AND revoked_at IS NULL")
            .bind(id)
            .fetch_optional(ex)
            .await?;
    Ok(found.is_some())
}

/// Records a use, at most once a minute per credential (a heartbeat does
/// not turn into a write every time).
pub async fn touch(ex: impl MySqlExecutor<'_>, id: &str, now: i64) -> Result<()> {
    sqlx::query(
        "UPDATE agent_credentials SET last_used_at = ?
         WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ? - 60000)",
    )
    .bind(now)
    .bind(id)
    .bind(now)
    .execute(ex)
    .await?;
    Ok(())
}

/// Every credential, revoked ones too, oldest first; optionally only one
/// region's (`(platform, region)`).
pub async fn list(
    ex: impl MySqlExecutor<'_>,
    region: Option<(&str, &str)>,
) -> Result<Vec<AgentCredential>> {
    let rows = match region {
        Some((platform, name)) => {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "{COLUMNS} WHERE platform = ? AND region = ? ORDER BY pk"
            )))
            .bind(platform)
            .bind(name)
            .fetch_all(ex)
            .await?
        }
        None => {
            sqlx::query_as(sqlx::AssertSqlSafe(format!("{COLUMNS} ORDER BY pk")))
                .fetch_all(ex)
                .await?
        }
    };
    Ok(rows)
}

/// Revokes `id` (again: no change, its first revocation time stays) and
/// returns the row; `NotFound` if there is no such credential.
pub async fn revoke(
    conn: &mut sqlx::MySqlConnection,
    id: &str,
    now: i64,
) -> Result<AgentCredential> {
    sqlx::query("UPDATE agent_credentials SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
        .bind(now)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query_as(sqlx::AssertSqlSafe(format!("{COLUMNS} WHERE id = ?")))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(Error::NotFound("agent credential"))
}
