//! Custom domains: a user's hostname for an app's environment, verified
//! before it routes (the CustomDomain object drives it).

use sqlx::MySqlExecutor;

use crate::Result;

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
