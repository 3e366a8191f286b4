//! Custom domains: a user's hostname for an app's environment, verified
//! before it routes (the CustomDomain object drives it). The platform's own
//! certificate names (its wildcard) are rows here too, marked `platform`,
//! pre-verified, so one challenge table serves both.

use sqlx::{Acquire, FromRow, MySql, MySqlExecutor};

use crate::types::CustomDomainStatus;
use crate::{Error, Result};

/// A custom domain to create.
#[derive(Debug, Clone)]
pub struct NewCustomDomain<'a> {
    /// `dom_…`
    pub id: &'a str,
    /// Owner.
    pub workspace_id: &'a str,
    /// Owner.
    pub project_id: &'a str,
    /// The app.
    pub app_id: &'a str,
    /// The environment it serves.
    pub environment_id: &'a str,
    /// The hostname, lowercase.
    pub domain: &'a str,
    /// The TXT value proving ownership.
    pub verification_token: &'a str,
    /// What the user's CNAME must point at (unique).
    pub target_cname: &'a str,
}

/// Creates a pending custom domain; a taken `(workspace, domain)` or target
/// is `AlreadyExists` naming the index.
pub async fn insert(ex: impl MySqlExecutor<'_>, d: &NewCustomDomain<'_>, now: i64) -> Result<()> {
    sqlx::query(
        "INSERT INTO custom_domains
           (id, workspace_id, project_id, app_id, environment_id, domain, verification_token, target_cname,
            created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(d.id)
    .bind(d.workspace_id)
    .bind(d.project_id)
    .bind(d.app_id)
    .bind(d.environment_id)
    .bind(d.domain)
    .bind(d.verification_token)
    .bind(d.target_cname)
    .bind(now)
    .bind(now)
    .execute(ex)
    .await?;
    Ok(())
}

/// A custom domain row.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct CustomDomain {
    /// `dom_…`
    pub id: String,
    /// Owner.
    pub workspace_id: String,
    /// Owner.
    pub project_id: String,
    /// The app.
    pub app_id: String,
    /// The environment it serves.
    pub environment_id: String,
    /// The hostname.
    pub domain: String,
    /// `http-01` or `dns-01`: how its certificate is proven.
    pub challenge_type: String,
    /// Verification state.
    pub verification_status: CustomDomainStatus,
    /// The ownership token.
    pub verification_token: String,
    /// The TXT record was found.
    pub ownership_verified: bool,
    /// The CNAME points at the target.
    pub cname_verified: bool,
    /// Where the CNAME must point.
    pub target_cname: String,
    /// Last check, unix ms.
    pub last_checked_at: Option<i64>,
    /// Checks so far.
    pub check_attempts: i32,
    /// What the last check found (not verified), or why it failed.
    pub verification_error: Option<String>,
    /// A platform name (its wildcard), not a user's.
    pub platform: bool,
    /// Creation, unix ms.
    pub created_at: i64,
}

const DOMAIN: &str =
    "SELECT id, workspace_id, project_id, app_id, environment_id, domain, challenge_type,
    verification_status, verification_token, ownership_verified, cname_verified, target_cname,
    last_checked_at, check_attempts, verification_error, platform, created_at FROM custom_domains";

/// A custom domain by id.
pub async fn find(ex: impl MySqlExecutor<'_>, id: &str) -> Result<Option<CustomDomain>> {
    Ok(
        sqlx::query_as(sqlx::AssertSqlSafe(format!("{DOMAIN} WHERE id = ?")))
            .bind(id)
            .fetch_optional(ex)
            .await?,
    )
}

/// A custom domain by id (`NotFound` if none).
pub async fn get(ex: impl MySqlExecutor<'_>, id: &str) -> Result<CustomDomain> {
    find(ex, id).await?.ok_or(Error::NotFound("custom domain"))
}

/// An environment's custom domains, by domain.
pub async fn list_by_environment(
    ex: impl MySqlExecutor<'_>,
    environment_id: &str,
) -> Result<Vec<CustomDomain>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{DOMAIN} WHERE environment_id = ? AND platform = FALSE ORDER BY domain"
    )))
    .bind(environment_id)
    .fetch_all(ex)
    .await?)
}

/// The row holding `domain` verified, if any (whoever owns it).
pub async fn find_verified(
    ex: impl MySqlExecutor<'_>,
    domain: &str,
) -> Result<Option<CustomDomain>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{DOMAIN} WHERE domain = ? AND verification_status = 'verified' ORDER BY pk LIMIT 1"
    )))
    .bind(domain)
    .fetch_optional(ex)
    .await?)
}

/// Other rows holding `domain` verified (claims another workspace made
/// before this one proved ownership).
pub async fn verified_others(
    ex: impl MySqlExecutor<'_>,
    domain: &str,
    except_id: &str,
) -> Result<Vec<CustomDomain>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{DOMAIN} WHERE domain = ? AND id <> ? AND verification_status = 'verified' AND platform = FALSE ORDER BY pk"
    )))
    .bind(domain)
    .bind(except_id)
    .fetch_all(ex)
    .await?)
}

/// What one DNS check found.
#[derive(Debug, Clone, Copy)]
pub struct Check<'a> {
    /// The CNAME points at the target.
    pub cname_verified: bool,
    /// The TXT record is there.
    pub ownership_verified: bool,
    /// What was found against what was expected.
    pub summary: &'a str,
}

/// Records a check that did not verify the domain: `verifying`, one more
/// attempt, what was found. Only while pending or verifying (a domain
/// verified, failed or deleted meanwhile is left alone); returns whether it
/// applied.
pub async fn record_check(
    ex: impl MySqlExecutor<'_>,
    id: &str,
    c: Check<'_>,
    now: i64,
) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE custom_domains SET verification_status = 'verifying', check_attempts = check_attempts + 1,
           last_checked_at = ?, cname_verified = ?, ownership_verified = ?, verification_error = ?, updated_at = ?
         WHERE id = ? AND verification_status IN ('pending', 'verifying')",
    )
    .bind(now)
    .bind(c.cname_verified)
    .bind(c.ownership_verified)
    .bind(c.summary)
    .bind(now)
    .bind(id)
    .execute(ex)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Marks a domain verified after a check that proved it.
pub async fn mark_verified(
    ex: impl MySqlExecutor<'_>,
    id: &str,
    c: Check<'_>,
    now: i64,
) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE custom_domains SET verification_status = 'verified', check_attempts = check_attempts + 1,
           last_checked_at = ?, cname_verified = ?, ownership_verified = ?, verification_error = NULL, updated_at = ?
         WHERE id = ? AND verification_status IN ('pending', 'verifying')",
    )
    .bind(now)
    .bind(c.cname_verified)
    .bind(c.ownership_verified)
    .bind(now)
    .bind(id)
    .execute(ex)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Records a re-check of a verified domain: it stays verified and routed
/// (its users keep being served), but what was found is kept, so a record
/// removed or changed since shows (`summary` empty when all is well).
pub async fn record_recheck(
    ex: impl MySqlExecutor<'_>,
    id: &str,
    c: Check<'_>,
    now: i64,
) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE custom_domains SET last_checked_at = ?, cname_verified = ?, ownership_verified = ?,
           verification_error = NULLIF(?, ''), updated_at = ?
         WHERE id = ? AND verification_status = 'verified'",
    )
    .bind(now)
    .bind(c.cname_verified)
    .bind(c.ownership_verified)
    .bind(c.summary)
    .bind(now)
    .bind(id)
    .execute(ex)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Marks a domain failed with the reason.
pub async fn mark_failed(
    ex: impl MySqlExecutor<'_>,
    id: &str,
    why: &str,
    now: i64,
) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE custom_domains SET verification_status = 'failed', verification_error = ?, updated_at = ?
         WHERE id = ?",
    )
    .bind(ctrl_core::names::clip(why, 512))
    .bind(now)
    .bind(id)
    .execute(ex)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Starts verification over: pending, no attempts, no error.
pub async fn reset(ex: impl MySqlExecutor<'_>, id: &str, now: i64) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE custom_domains SET verification_status = 'pending', check_attempts = 0,
           verification_error = NULL, last_checked_at = NULL, cname_verified = FALSE,
           ownership_verified = FALSE, updated_at = ?
         WHERE id = ? AND platform = FALSE",
    )
    .bind(now)
    .bind(id)
    .execute(ex)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Stops serving a domain, in one transaction: its route (in its own
/// environment), its ACME challenge, and — if it held the domain verified,
/// so the certificate is its own — its certificate. The row stays.
pub async fn unserve(
    db: impl Acquire<'_, Database = MySql>,
    d: &CustomDomain,
    now: i64,
) -> Result<()> {
    let mut tx = db.begin().await?;
    crate::route::delete_by_fqdn(&mut *tx, &d.domain, &d.environment_id, now).await?;
    crate::certificate::delete_challenge(&mut *tx, &d.id).await?;
    if d.verification_status == CustomDomainStatus::Verified {
        crate::certificate::delete(&mut *tx, &d.domain, now).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Deletes a custom domain row; returns whether there was one.
pub async fn delete(ex: impl MySqlExecutor<'_>, id: &str) -> Result<bool> {
    let done = sqlx::query("DELETE FROM custom_domains WHERE id = ?")
        .bind(id)
        .execute(ex)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Ensures the platform's row for `hostname` (e.g. `*.ctrl.example.com`):
/// verified, DNS-01, owned by `workspace_id` (the platform's keyring).
/// Returns its id (the existing one if there is one).
pub async fn ensure_platform(
    ex: impl MySqlExecutor<'_> + Copy,
    new_id: &str,
    workspace_id: &str,
    hostname: &str,
    now: i64,
) -> Result<String> {
    sqlx::query(
        "INSERT INTO custom_domains
           (id, workspace_id, project_id, app_id, environment_id, domain, challenge_type, verification_status,
            verification_token, ownership_verified, cname_verified, target_cname, platform, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, 'dns-01', 'verified', '', TRUE, TRUE, ?, TRUE, ?, ?)
         ON DUPLICATE KEY UPDATE updated_at = updated_at",
    )
    .bind(new_id)
    .bind(workspace_id)
    .bind(workspace_id)
    .bind(workspace_id)
    .bind(workspace_id)
    .bind(hostname)
    .bind(format!("platform:{hostname}"))
    .bind(now)
    .bind(now)
    .execute(ex)
    .await?;
    sqlx::query_scalar("SELECT id FROM custom_domains WHERE workspace_id = ? AND domain = ?")
        .bind(workspace_id)
        .bind(hostname)
        .fetch_optional(ex)
        .await?
        .ok_or(Error::NotFound("platform domain"))
}
