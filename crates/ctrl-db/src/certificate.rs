//! TLS certificates and ACME HTTP-01 challenges.

use sqlx::{Acquire, FromRow, MySql, MySqlExecutor};

use crate::Result;
use crate::edge::{self, Key};
use crate::types::ChallengeStatus;

/// A certificate to store.
#[derive(Debug, Clone)]
pub struct NewCertificate<'a> {
    /// Id to use if the hostname has no certificate yet (`cert_…`); a
    /// renewal keeps the existing id.
    pub new_id: &'a str,
    /// Owner (also the keyring of the sealed key).
    pub workspace_id: &'a str,
    /// The hostname it covers (maybe `*.example.com`).
    pub hostname: &'a str,
    /// PEM chain.
    pub certificate: &'a str,
    /// The private key, sealed by the vault.
    pub encrypted_private_key: &'a [u8],
    /// Expiry, unix ms.
    pub not_after: i64,
}

/// Stores the certificate for a hostname (insert, or replace on renewal)
/// and tells the edge.
pub async fn upsert(
    db: impl Acquire<'_, Database = MySql>,
    c: &NewCertificate<'_>,
    now: i64,
) -> Result<()> {
    let mut tx = db.begin().await?;
    sqlx::query(
        "INSERT INTO certificates
           (id, workspace_id, hostname, certificate, encrypted_private_key, not_after, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)
         ON DUPLICATE KEY UPDATE workspace_id = VALUES(workspace_id), certificate = VALUES(certificate),
           encrypted_private_key = VALUES(encrypted_private_key), not_after = VALUES(not_after),
           updated_at = VALUES(updated_at)",
    )
    .bind(c.new_id)
    .bind(c.workspace_id)
    .bind(c.hostname)
    .bind(c.certificate)
    .bind(c.encrypted_private_key)
    .bind(c.not_after)
    .bind(now)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    edge::record(&mut tx, &[Key::Certificate(c.hostname)], now).await?;
    tx.commit().await?;
    Ok(())
}

/// Deletes the certificate of a hostname; returns whether there was one.
pub async fn delete(
    db: impl Acquire<'_, Database = MySql>,
    hostname: &str,
    now: i64,
) -> Result<bool> {
    let mut tx = db.begin().await?;
    let done = sqlx::query("DELETE FROM certificates WHERE hostname = ?")
        .bind(hostname)
        .execute(&mut *tx)
        .await?;
    if done.rows_affected() > 0 {
        edge::record(&mut tx, &[Key::Certificate(hostname)], now).await?;
    }
    tx.commit().await?;
    Ok(done.rows_affected() > 0)
}

/// A stored certificate's identity and expiry.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct CertificateInfo {
    /// `cert_…` (kept across renewals).
    pub id: String,
    /// The hostname it covers.
    pub hostname: String,
    /// Expiry, unix ms.
    pub not_after: i64,
    /// Last issued or renewed, unix ms.
    pub updated_at: i64,
}

/// The certificate of a hostname, if any.
pub async fn find(ex: impl MySqlExecutor<'_>, hostname: &str) -> Result<Option<CertificateInfo>> {
    Ok(sqlx::query_as(
        "SELECT id, hostname, not_after, updated_at FROM certificates WHERE hostname = ?",
    )
    .bind(hostname)
    .fetch_optional(ex)
    .await?)
}

/// How many certificates a hostname has (0 or 1: the hostname is unique).
pub async fn count(ex: impl MySqlExecutor<'_>, hostname: &str) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT COUNT(*) FROM certificates WHERE hostname = ?")
            .bind(hostname)
            .fetch_one(ex)
            .await?,
    )
}

/// A domain's ACME challenge row.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Challenge {
    /// The custom domain (`dom_…`).
    pub domain_id: String,
    /// Owner.
    pub workspace_id: String,
    /// `http-01` or `dns-01`.
    pub challenge_type: String,
    /// Where it stands.
    pub status: ChallengeStatus,
    /// The certificate's expiry once verified; else when the row stops mattering.
    pub expires_at: i64,
    /// Why the last order failed.
    pub last_error: Option<String>,
}

/// The challenge of a domain, if any.
pub async fn challenge(ex: impl MySqlExecutor<'_>, domain_id: &str) -> Result<Option<Challenge>> {
    Ok(sqlx::query_as(
        "SELECT domain_id, workspace_id, challenge_type, status, expires_at, last_error
         FROM acme_challenges WHERE domain_id = ?",
    )
    .bind(domain_id)
    .fetch_optional(ex)
    .await?)
}

/// Ensures a domain has a challenge row (`waiting`: wants a certificate).
/// An existing row is left as it is.
pub async fn ensure_challenge(
    ex: impl MySqlExecutor<'_>,
    workspace_id: &str,
    domain_id: &str,
    challenge_type: &str,
    expires_at: i64,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO acme_challenges
           (workspace_id, domain_id, token, `authorization`, challenge_type, status, expires_at, created_at, updated_at)
         VALUES (?, ?, '', '', ?, 'waiting', ?, ?, ?)
         ON DUPLICATE KEY UPDATE updated_at = updated_at",
    )
    .bind(workspace_id)
    .bind(domain_id)
    .bind(challenge_type)
    .bind(expires_at)
    .bind(now)
    .bind(now)
    .execute(ex)
    .await?;
    Ok(())
}

/// Moves a domain's challenge to `status` (with the expiry and, for a
/// failure, the CA's reason). Returns whether there was a row.
pub async fn set_challenge_status(
    ex: impl MySqlExecutor<'_>,
    domain_id: &str,
    status: ChallengeStatus,
    expires_at: Option<i64>,
    last_error: Option<&str>,
    now: i64,
) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE acme_challenges SET status = ?, expires_at = COALESCE(?, expires_at), last_error = ?,
           token = IF(? = 'pending', token, ''), `authorization` = IF(? = 'pending', `authorization`, ''),
           updated_at = ?
         WHERE domain_id = ?",
    )
    .bind(status)
    .bind(expires_at)
    .bind(last_error.map(|e| &e[..e.floor_char_boundary(1024)]))
    .bind(status)
    .bind(status)
    .bind(now)
    .bind(domain_id)
    .execute(ex)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Notes why an order under way is being retried (status unchanged).
pub async fn note_challenge_error(
    ex: impl MySqlExecutor<'_>,
    domain_id: &str,
    note: &str,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE acme_challenges SET last_error = ?, updated_at = ? WHERE domain_id = ? AND status = 'pending'",
    )
    .bind(&note[..note.floor_char_boundary(1024)])
    .bind(now)
    .bind(domain_id)
    .execute(ex)
    .await?;
    Ok(())
}

/// Deletes a domain's challenge.
pub async fn delete_challenge(ex: impl MySqlExecutor<'_>, domain_id: &str) -> Result<bool> {
    let done = sqlx::query("DELETE FROM acme_challenges WHERE domain_id = ?")
        .bind(domain_id)
        .execute(ex)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// A certificate due: its hostname, domain and owner.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Due {
    /// The custom domain (`dom_…`).
    pub domain_id: String,
    /// Owner.
    pub workspace_id: String,
    /// The hostname to certify.
    pub hostname: String,
    /// The current certificate's expiry (or the row's deadline).
    pub expires_at: i64,
}

/// Challenges that want a certificate, soonest expiry first, only for
/// verified domains: `waiting` ones; verified ones whose certificate
/// expires before `renew_before` (unix ms); and failed ones last tried
/// before `retry_failed_before` (a CA outage must not leave a domain
/// without a certificate for good).
pub async fn due(
    ex: impl MySqlExecutor<'_>,
    renew_before: i64,
    retry_failed_before: i64,
    limit: u32,
) -> Result<Vec<Due>> {
    Ok(sqlx::query_as(
        "SELECT c.domain_id, c.workspace_id, d.domain AS hostname, c.expires_at
         FROM acme_challenges c JOIN custom_domains d ON d.id = c.domain_id
         WHERE d.verification_status = 'verified'
           AND (c.status = 'waiting'
                OR (c.status = 'verified' AND c.expires_at <= ?)
                OR (c.status = 'failed' AND c.updated_at <= ?))
         ORDER BY c.expires_at LIMIT ?",
    )
    .bind(renew_before)
    .bind(retry_failed_before)
    .bind(limit)
    .fetch_all(ex)
    .await?)
}

/// The ACME account of `owner` (one account for the platform): its URL and
/// sealed credentials.
pub async fn acme_account(
    ex: impl MySqlExecutor<'_>,
    owner: &str,
) -> Result<Option<(String, Vec<u8>)>> {
    Ok(sqlx::query_as(
        "SELECT registration_uri, encrypted_key FROM acme_users WHERE workspace_id = ?",
    )
    .bind(owner)
    .fetch_optional(ex)
    .await?)
}

/// Stores the ACME account of `owner` unless one exists (a concurrent
/// creator wins; read it back with [`acme_account`]).
pub async fn insert_acme_account(
    ex: impl MySqlExecutor<'_>,
    id: &str,
    owner: &str,
    registration_uri: &str,
    sealed_credentials: &[u8],
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO acme_users (id, workspace_id, encrypted_key, registration_uri, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?)
         ON DUPLICATE KEY UPDATE updated_at = updated_at",
    )
    .bind(id)
    .bind(owner)
    .bind(sealed_credentials)
    .bind(registration_uri)
    .bind(now)
    .bind(now)
    .execute(ex)
    .await?;
    Ok(())
}

/// An HTTP-01 challenge to open for a custom domain.
#[derive(Debug, Clone)]
pub struct NewHttp01Challenge<'a> {
    /// Owner.
    pub workspace_id: &'a str,
    /// The custom domain (`dom_…`); one challenge per domain, reused on renewal.
    pub domain_id: &'a str,
    /// The token the CA fetches.
    pub token: &'a str,
    /// The key authorization to answer with.
    pub authorization: &'a str,
    /// When the challenge stops mattering, unix ms.
    pub expires_at: i64,
}

/// Opens (or reopens, with a new token) the domain's HTTP-01 challenge as
/// `pending`.
pub async fn open_http01_challenge(
    ex: impl MySqlExecutor<'_>,
    c: &NewHttp01Challenge<'_>,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO acme_challenges
           (workspace_id, domain_id, token, `authorization`, challenge_type, status, expires_at, created_at, updated_at)
         VALUES (?, ?, ?, ?, 'http-01', 'pending', ?, ?, ?)
         ON DUPLICATE KEY UPDATE token = VALUES(token), `authorization` = VALUES(`authorization`),
           challenge_type = 'http-01', status = 'pending', expires_at = VALUES(expires_at),
           updated_at = VALUES(updated_at)",
    )
    .bind(c.workspace_id)
    .bind(c.domain_id)
    .bind(c.token)
    .bind(c.authorization)
    .bind(c.expires_at)
    .bind(now)
    .bind(now)
    .execute(ex)
    .await?;
    Ok(())
}

/// The key authorization of an open HTTP-01 challenge for `domain` with
/// `token` (what the edge serves at `/.well-known/acme-challenge/{token}`).
pub async fn http01_authorization(
    ex: impl MySqlExecutor<'_>,
    domain: &str,
    token: &str,
) -> Result<Option<String>> {
    Ok(sqlx::query_scalar(
        "SELECT c.`authorization` FROM acme_challenges c JOIN custom_domains d ON d.id = c.domain_id
         WHERE d.domain = ? AND c.token = ? AND c.challenge_type = 'http-01'
           AND c.status IN ('waiting', 'pending')",
    )
    .bind(domain)
    .bind(token)
    .fetch_optional(ex)
    .await?)
}
