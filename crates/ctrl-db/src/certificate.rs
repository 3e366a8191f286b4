//! TLS certificates and ACME HTTP-01 challenges.

use sqlx::{Acquire, MySql, MySqlExecutor};

use crate::Result;
use crate::edge::{self, Key};

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
