//! `Certificate` (virtual object keyed by hostname, maybe `*.domain`):
//! obtains or renews one certificate from the ACME CA; and
//! `CertificateRenewal` (one object, key `global`): the durable,
//! self-rescheduling job that renews what is due.
//!
//! Obtain: nothing due → done. Otherwise claim the domain's challenge →
//! get or create the platform's ACME account (credentials sealed by the
//! vault) → create the order (its URL journaled: a replay resumes this order
//! and never orders again) → present the challenges (HTTP-01: the
//! `acme_challenges` row frontline serves; DNS-01: a TXT record through the
//! [`DnsProvider`], waited on until in sync) → answer them → wait for the
//! CA → generate the key inside a step and seal it at once (the journal
//! only ever holds the sealed key) → finalize → store chain, sealed key and
//! expiry (same id on renewal; frontline gets it through its stream) → mark
//! the challenge verified → remove the TXT record. A CA rate limit becomes a
//! durable sleep until its end (at most 3 rounds); a refusal fails the
//! challenge with the CA's words; transient errors retry with bounded
//! backoff, then fail it too. Whatever happens, the TXT record goes.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ctrl_acme::AcmeError;
use ctrl_acme::acme::{ChallengeKind, Directory, Presentation, Validation};
use ctrl_acme::dns::DnsProvider;
use ctrl_core::domains::acme_account_owner;
use ctrl_core::id::{IdKind, generate};
use ctrl_core::workflows::{CertificateOutcome, ObtainCertificate};
use ctrl_db::certificate::{self, NewCertificate, NewHttp01Challenge};
use ctrl_db::custom_domain;
use ctrl_db::types::{ChallengeStatus, CustomDomainStatus};
use restate_sdk::prelude::*;
use serde::{Deserialize, Serialize};
use sqlx::MySqlPool;

use crate::errors::{WorkflowError, compensation_retry, db_error, now_ms};

/// Everything issuing needs besides the database.
#[derive(Debug)]
pub struct Issuer {
    /// The CA.
    pub directory: Directory,
    /// Seals the account and private keys.
    pub vault: ctrl_vault::Vault,
    /// DNS-01 (None: wildcards cannot be issued).
    pub dns: Option<Arc<dyn DnsProvider>>,
    /// The account's contact email.
    pub contact: String,
    /// How long one wait for the CA's validation may take.
    pub validation_timeout: Duration,
    /// Renew certificates expiring within this window.
    pub renew_before: Duration,
    /// How often the renewal job runs.
    pub renewal_interval: Duration,
    /// Spacing between renewals started together.
    pub renewal_spacing: Duration,
    /// Attempts of a step failing transiently before the order fails.
    pub step_attempts: u32,
    /// A failed order is tried again by the renewal job after this long.
    pub retry_failed_after: Duration,
    /// The logged-in account, kept between steps and orders.
    pub session: tokio::sync::Mutex<Option<ctrl_acme::acme::Session>>,
}

/// Rate-limit rounds before the challenge fails.
const MAX_RATE_LIMIT_ROUNDS: u32 = 3;
/// How long a DNS change may take to be in sync.
const DNS_SYNC_PATIENCE: Duration = Duration::from_secs(120);
/// How often to ask whether it is.
const DNS_SYNC_POLL: Duration = Duration::from_secs(2);

/// The outcome of one ACME step, journaled: only transient failures are
/// errors (retried by the step's policy).
#[derive(Debug, Serialize, Deserialize)]
enum Step<T> {
    Done(T),
    RateLimited {
        retry_after_ms: Option<i64>,
        detail: String,
    },
    Refused(String),
}

fn classify<T>(r: Result<T, AcmeError>) -> Result<Json<Step<T>>, HandlerError> {
    match r {
        Ok(v) => Ok(Json(Step::Done(v))),
        Err(AcmeError::RateLimited {
            retry_after,
            detail,
        }) => Ok(Json(Step::RateLimited {
            retry_after_ms: retry_after.and_then(|t| {
                t.duration_since(UNIX_EPOCH)
                    .ok()
                    .and_then(|d| i64::try_from(d.as_millis()).ok())
            }),
            detail,
        })),
        Err(AcmeError::Refused(m)) | Err(AcmeError::Config(m)) => Ok(Json(Step::Refused(m))),
        Err(e @ AcmeError::Transient(_)) => {
            tracing::warn!(error = %e, "ACME step failed; retrying");
            Err(HandlerError::from(e))
        }
    }
}

/// Retries of an ACME step: transient failures (network, 5xx, timeouts)
/// back off from 1 s to 30 s (12 attempts: about five minutes), then the
/// challenge fails with the last error.
fn acme_retry(attempts: u32) -> RunRetryPolicy {
    RunRetryPolicy::new()
        .initial_delay(Duration::from_secs(1))
        .exponentiation_factor(2.0)
        .max_delay(Duration::from_secs(30))
        .max_attempts(attempts)
}

/// Notes a transient failure on the challenge while the step retries, so
/// the API shows why the certificate is still coming (best effort).
async fn noted<T>(
    db: &MySqlPool,
    domain_id: &str,
    r: Result<T, AcmeError>,
) -> Result<T, AcmeError> {
    if let Err(AcmeError::Transient(why)) = &r {
        let note = format!("retrying: {why}");
        if let Err(e) = certificate::note_challenge_error(db, domain_id, &note, now_ms()).await {
            tracing::debug!(error = %e, "could not note the retry");
        }
    }
    r
}

/// Why the run ended early.
enum Stop {
    RateLimited {
        retry_after_ms: Option<i64>,
        detail: String,
    },
    Failed(String),
}

/// A journaled step's result as control flow.
fn step<T>(r: Result<Json<Step<T>>, TerminalError>) -> Result<T, Stop> {
    match r {
        Ok(Json(Step::Done(v))) => Ok(v),
        Ok(Json(Step::RateLimited {
            retry_after_ms,
            detail,
        })) => Err(Stop::RateLimited {
            retry_after_ms,
            detail,
        }),
        Ok(Json(Step::Refused(m))) => Err(Stop::Failed(m)),
        Err(e) => Err(Stop::Failed(e.message().to_owned())),
    }
}

/// What the claim step learned.
#[derive(Debug, Serialize, Deserialize)]
struct Claim {
    /// Nothing to do: the outcome's status (`current`, `skipped`) and why.
    skip: Option<(String, String)>,
    workspace_id: String,
    kind: ChallengeKind,
    not_after: i64,
}

/// The Certificate object.
#[derive(Debug, Clone)]
pub struct CertificateObject {
    db: MySqlPool,
    issuer: Option<Arc<Issuer>>,
}

impl CertificateObject {
    /// The object; without an issuer (ACME disabled) every Obtain fails
    /// with a clear message.
    pub fn new(db: MySqlPool, issuer: Option<Arc<Issuer>>) -> Self {
        Self { db, issuer }
    }
}

#[restate_sdk::object(name = "Certificate")]
impl CertificateObject {
    /// Obtains (or renews) the key's certificate if it is missing or due.
    #[handler(name = "Obtain")]
    async fn obtain(
        &self,
        ctx: ObjectContext<'_>,
        Json(req): Json<ObtainCertificate>,
    ) -> HandlerResult<Json<CertificateOutcome>> {
        let Some(issuer) = self.issuer.clone() else {
            return Err(WorkflowError::Refused(
                "certificates are disabled: set [acme] enabled = true in the worker's config"
                    .into(),
            )
            .into());
        };
        let hostname = ctx.key().to_owned();

        let (db, host, domain_id, renew_before, force) = (
            self.db.clone(),
            hostname.clone(),
            req.domain_id.clone(),
            issuer.renew_before,
            req.force,
        );
        let Json(claim) = ctx
            .run(|| async move { claim(&db, &host, &domain_id, renew_before, force).await })
            .name("claim challenge")
            .retry_policy(crate::errors::step_retry())
            .await?;
        if let Some((status, why)) = claim.skip {
            return Ok(Json(CertificateOutcome {
                status,
                not_after: claim.not_after,
                error: why,
            }));
        }
        if claim.kind == ChallengeKind::Dns01 && issuer.dns.is_none() {
            let why = format!(
                "{hostname} needs a DNS-01 challenge: enable [acme.route53] in the worker's config"
            );
            return self.fail(&ctx, &req.domain_id, why).await;
        }

        let mut rounds = 0;
        loop {
            match self
                .attempt(&ctx, &issuer, &hostname, &req.domain_id, &claim)
                .await
            {
                Ok(not_after) => {
                    return Ok(Json(CertificateOutcome {
                        status: "issued".into(),
                        not_after,
                        error: String::new(),
                    }));
                }
                Err(Stop::Failed(why)) => return self.fail(&ctx, &req.domain_id, why).await,
                Err(Stop::RateLimited {
                    retry_after_ms,
                    detail,
                }) => {
                    rounds += 1;
                    if rounds > MAX_RATE_LIMIT_ROUNDS {
                        let why = format!("rate limited by the CA {rounds} times: {detail}");
                        return self.fail(&ctx, &req.domain_id, why).await;
                    }
                    let now = ctx.run(|| async { Ok(now_ms()) }).name("now").await?;
                    let wait = rate_limit_wait(retry_after_ms, now);
                    tracing::warn!(%hostname, ?wait, %detail, "rate limited by the CA; sleeping");
                    ctx.sleep(wait).await?;
                }
            }
        }
    }
}

/// How long to sleep for a rate limit ending at `retry_after_ms`: until then
/// plus a minute, at least a minute and at most two hours.
fn rate_limit_wait(retry_after_ms: Option<i64>, now: i64) -> Duration {
    let wanted = retry_after_ms.map_or(3_600_000, |at| at - now + 60_000);
    Duration::from_millis(u64::try_from(wanted.clamp(60_000, 7_200_000)).unwrap_or(60_000))
}

impl CertificateObject {
    /// One order from start to stored certificate; returns its expiry.
    async fn attempt(
        &self,
        ctx: &ObjectContext<'_>,
        issuer: &Arc<Issuer>,
        hostname: &str,
        domain_id: &str,
        claim: &Claim,
    ) -> Result<i64, Stop> {
        let terminal = |e: TerminalError| Stop::Failed(e.message().to_owned());
        let kind = claim.kind;

        let (db, iss, dom) = (self.db.clone(), issuer.clone(), domain_id.to_owned());
        step(
            ctx.run(
                || async move { classify(noted(&db, &dom, ensure_account(&db, &iss).await).await) },
            )
            .name("ensure ACME account")
            .retry_policy(acme_retry(issuer.step_attempts))
            .await,
        )?;

        let (db, iss, host, dom) = (
            self.db.clone(),
            issuer.clone(),
            hostname.to_owned(),
            domain_id.to_owned(),
        );
        let order_url = step(
            ctx.run(|| async move {
                let result = async {
                    let session = session(&db, &iss).await?;
                    session.new_order(&host).await
                }
                .await;
                classify(noted(&db, &dom, result).await)
            })
            .name("create order")
            .retry_policy(acme_retry(issuer.step_attempts))
            .await,
        )?;

        let (db, iss, url, ws, dom) = (
            self.db.clone(),
            issuer.clone(),
            order_url.clone(),
            claim.workspace_id.clone(),
            domain_id.to_owned(),
        );
        let presented: Vec<Presentation> = step(
            ctx.run(|| async move {
                let result = present(&db, &iss, &url, kind, &ws, &dom).await;
                classify(noted(&db, &dom, result).await)
            })
            .name("present challenges")
            .retry_policy(acme_retry(issuer.step_attempts))
            .await,
        )?;

        let outcome = self
            .validate_and_finalize(ctx, issuer, hostname, domain_id, claim, &order_url)
            .await;

        // The TXT records go whatever happened (durably: a crash resumes here).
        if kind == ChallengeKind::Dns01 && !presented.is_empty() {
            let iss = issuer.clone();
            ctx.run(|| async move {
                let dns = iss.dns.as_ref().ok_or_else(|| {
                    HandlerError::from(WorkflowError::Internal("no DNS provider".into()))
                })?;
                for p in &presented {
                    dns.delete_txt(&p.name, &p.value)
                        .await
                        .map_err(HandlerError::from)?;
                }
                Ok(())
            })
            .name("remove TXT records")
            .retry_policy(compensation_retry())
            .await
            .map_err(terminal)?;
        }
        outcome
    }

    async fn validate_and_finalize(
        &self,
        ctx: &ObjectContext<'_>,
        issuer: &Arc<Issuer>,
        hostname: &str,
        domain_id: &str,
        claim: &Claim,
        order_url: &str,
    ) -> Result<i64, Stop> {
        let kind = claim.kind;
        let (db, iss, url, dom) = (
            self.db.clone(),
            issuer.clone(),
            order_url.to_owned(),
            domain_id.to_owned(),
        );
        step(
            ctx.run(|| async move {
                let result = async {
                    let session = session(&db, &iss).await?;
                    session.answer(&url, kind).await?;
                    match session.wait_ready(&url, iss.validation_timeout).await? {
                        Validation::Ready => Ok(()),
                        Validation::Pending => Err(AcmeError::Transient(
                            "the CA has not validated the challenge yet".into(),
                        )),
                    }
                }
                .await;
                classify(noted(&db, &dom, result).await)
            })
            .name("answer and await validation")
            .retry_policy(acme_retry(issuer.step_attempts))
            .await,
        )?;

        // The key is born and sealed in one step: the journal holds only the
        // sealed key and the CSR.
        let (iss, host, ws) = (
            issuer.clone(),
            hostname.to_owned(),
            claim.workspace_id.clone(),
        );
        let (sealed_key, csr) = step(
            ctx.run(|| async move {
                let result = async {
                    let (key, csr) = ctrl_acme::acme::key_and_csr(&host)?;
                    let sealed = iss
                        .vault
                        .seal(&ws, key.as_bytes())
                        .map_err(|e| AcmeError::Config(format!("cannot seal the key: {e}")))?;
                    Ok((B64.encode(sealed), B64.encode(csr)))
                }
                .await;
                classify(result)
            })
            .name("generate key")
            .await,
        )?;

        let (db, iss, url, dom) = (
            self.db.clone(),
            issuer.clone(),
            order_url.to_owned(),
            domain_id.to_owned(),
        );
        let chain = step(
            ctx.run(|| async move {
                let result = async {
                    let csr = B64
                        .decode(&csr)
                        .map_err(|e| AcmeError::Config(format!("journaled CSR: {e}")))?;
                    let session = session(&db, &iss).await?;
                    session.finalize(&url, &csr, iss.validation_timeout).await
                }
                .await;
                classify(noted(&db, &dom, result).await)
            })
            .name("finalize order")
            .retry_policy(acme_retry(issuer.step_attempts))
            .await,
        )?;

        let (db, host, ws, dom) = (
            self.db.clone(),
            hostname.to_owned(),
            claim.workspace_id.clone(),
            domain_id.to_owned(),
        );
        step(
            ctx.run(|| async move {
                let (not_after, names) = match ctrl_acme::acme::inspect_chain(&chain) {
                    Ok(v) => v,
                    Err(e) => return Ok(Json(Step::Refused(e.to_string()))),
                };
                if !names.iter().any(|n| n.eq_ignore_ascii_case(&host)) {
                    return Ok(Json(Step::Refused(format!(
                        "the CA's certificate covers {names:?}, not {host}"
                    ))));
                }
                let sealed = B64
                    .decode(&sealed_key)
                    .map_err(|e| WorkflowError::Internal(format!("journaled key: {e}")))?;
                let now = now_ms();
                let new_id = generate(IdKind::Certificate, &mut rand::rng());
                let mut tx = crate::errors::begin(&db).await?;
                certificate::upsert(
                    &mut *tx,
                    &NewCertificate {
                        new_id: &new_id,
                        workspace_id: &ws,
                        hostname: &host,
                        certificate: &chain,
                        encrypted_private_key: &sealed,
                        not_after,
                    },
                    now,
                )
                .await
                .map_err(db_error)?;
                certificate::set_challenge_status(
                    &mut *tx,
                    &dom,
                    ChallengeStatus::Verified,
                    Some(not_after),
                    None,
                    now,
                )
                .await
                .map_err(db_error)?;
                crate::errors::commit(tx).await?;
                tracing::info!(hostname = %host, not_after, "certificate stored");
                Ok(Json(Step::Done(not_after)))
            })
            .name("store certificate")
            .retry_policy(compensation_retry())
            .await,
        )
    }

    /// Marks the challenge failed with `why` (the CA's words) and answers
    /// `failed` — an outcome, not an error: there is nothing to retry.
    async fn fail(
        &self,
        ctx: &ObjectContext<'_>,
        domain_id: &str,
        why: String,
    ) -> HandlerResult<Json<CertificateOutcome>> {
        let (db, dom, reason) = (self.db.clone(), domain_id.to_owned(), why.clone());
        ctx.run(|| async move {
            certificate::set_challenge_status(
                &db,
                &dom,
                ChallengeStatus::Failed,
                None,
                Some(&reason),
                now_ms(),
            )
            .await
            .map_err(db_error)?;
            Ok(())
        })
        .name("mark failed")
        .retry_policy(compensation_retry())
        .await?;
        tracing::warn!(hostname = %ctx.key(), error = %why, "certificate order failed");
        Ok(Json(CertificateOutcome {
            status: "failed".into(),
            not_after: 0,
            error: why,
        }))
    }
}

/// Decides whether an order is needed and claims the challenge (`pending`).
async fn claim(
    db: &MySqlPool,
    hostname: &str,
    domain_id: &str,
    renew_before: Duration,
    force: bool,
) -> Result<Json<Claim>, HandlerError> {
    let skip = |status: &str, why: &str, workspace_id: String, not_after: i64| {
        Ok(Json(Claim {
            skip: Some((status.to_owned(), why.to_owned())),
            workspace_id,
            kind: ChallengeKind::for_hostname(hostname),
            not_after,
        }))
    };
    let Some(domain) = custom_domain::find(db, domain_id).await.map_err(db_error)? else {
        return skip("skipped", "the domain was removed", String::new(), 0);
    };
    if domain.domain != hostname {
        return Err(WorkflowError::Invalid(format!(
            "domain {domain_id} is {}, not {hostname}",
            domain.domain
        ))
        .into());
    }
    if domain.verification_status != CustomDomainStatus::Verified {
        return skip(
            "skipped",
            "the domain is not verified",
            domain.workspace_id,
            0,
        );
    }
    let now = now_ms();
    let current = certificate::find(db, hostname).await.map_err(db_error)?;
    let due_by = now + i64::try_from(renew_before.as_millis()).unwrap_or(i64::MAX / 2);
    if let Some(c) = &current
        && !force
        && c.not_after > due_by
    {
        // Nothing to order: the challenge says so too, or the renewal job
        // would keep finding it (a domain verified again, say).
        certificate::set_challenge_status(
            db,
            domain_id,
            ChallengeStatus::Verified,
            Some(c.not_after),
            None,
            now,
        )
        .await
        .map_err(db_error)?;
        return skip(
            "current",
            "the certificate is current",
            domain.workspace_id,
            c.not_after,
        );
    }
    let kind = ChallengeKind::for_hostname(hostname);
    let mut tx = crate::errors::begin(db).await?;
    certificate::ensure_challenge(
        &mut *tx,
        &domain.workspace_id,
        domain_id,
        kind.as_str(),
        now,
        now,
    )
    .await
    .map_err(db_error)?;
    certificate::set_challenge_status(
        &mut *tx,
        domain_id,
        ChallengeStatus::Pending,
        None,
        None,
        now,
    )
    .await
    .map_err(db_error)?;
    crate::errors::commit(tx).await?;
    Ok(Json(Claim {
        skip: None,
        workspace_id: domain.workspace_id,
        kind,
        not_after: current.map_or(0, |c| c.not_after),
    }))
}

/// Loads the platform's ACME account at the configured CA, creating it on
/// first use (sealed with the account owner as keyring).
async fn ensure_account(db: &MySqlPool, issuer: &Issuer) -> Result<(), AcmeError> {
    let owner = acme_account_owner(issuer.directory.url());
    if certificate::acme_account(db, &owner)
        .await
        .map_err(|e| AcmeError::Transient(e.to_string()))?
        .is_some()
    {
        return Ok(());
    }
    let (url, credentials) = issuer.directory.create_account(&issuer.contact).await?;
    let sealed = issuer
        .vault
        .seal(&owner, credentials.as_bytes())
        .map_err(|e| AcmeError::Config(format!("cannot seal the ACME account: {e}")))?;
    let id = generate(IdKind::Certificate, &mut rand::rng()).replacen("cert_", "acme_", 1);
    certificate::insert_acme_account(db, &id, &owner, &url, &sealed, now_ms())
        .await
        .map_err(|e| AcmeError::Transient(e.to_string()))?;
    tracing::info!(account = %url, "ACME account created");
    Ok(())
}

/// A session of the stored account (kept in the issuer once logged in).
async fn session(db: &MySqlPool, issuer: &Issuer) -> Result<ctrl_acme::acme::Session, AcmeError> {
    let mut kept = issuer.session.lock().await;
    if let Some(s) = kept.as_ref() {
        return Ok(s.clone());
    }
    let s = login(db, issuer).await?;
    *kept = Some(s.clone());
    Ok(s)
}

async fn login(db: &MySqlPool, issuer: &Issuer) -> Result<ctrl_acme::acme::Session, AcmeError> {
    let owner = acme_account_owner(issuer.directory.url());
    let (_, sealed) = certificate::acme_account(db, &owner)
        .await
        .map_err(|e| AcmeError::Transient(e.to_string()))?
        .ok_or_else(|| AcmeError::Transient("the ACME account is not stored yet".into()))?;
    let credentials = issuer
        .vault
        .open(&owner, &sealed)
        .map_err(|e| AcmeError::Config(format!("cannot open the ACME account: {e}")))?;
    let credentials = std::str::from_utf8(&credentials)
        .map_err(|_| AcmeError::Config("the stored ACME account is not UTF-8".into()))?;
    issuer.directory.session(credentials).await
}

/// Publishes what the CA will check: HTTP-01 rows for the edge, or TXT
/// records waited on until in sync.
async fn present(
    db: &MySqlPool,
    issuer: &Issuer,
    order_url: &str,
    kind: ChallengeKind,
    workspace_id: &str,
    domain_id: &str,
) -> Result<Vec<Presentation>, AcmeError> {
    let session = session(db, issuer).await?;
    let presented = session.presentations(order_url, kind).await?;
    let now = now_ms();
    match kind {
        ChallengeKind::Http01 => {
            // One name per order: the domain's one challenge row.
            if let Some(p) = presented.first() {
                certificate::open_http01_challenge(
                    db,
                    &NewHttp01Challenge {
                        workspace_id,
                        domain_id,
                        token: &p.name,
                        authorization: &p.value,
                        expires_at: now + 30 * 86_400_000,
                    },
                    now,
                )
                .await
                .map_err(|e| AcmeError::Transient(e.to_string()))?;
            }
        }
        ChallengeKind::Dns01 => {
            let dns = issuer
                .dns
                .as_ref()
                .ok_or_else(|| AcmeError::Config("no DNS provider configured".into()))?;
            for p in &presented {
                ctrl_acme::dns::publish(
                    dns.as_ref(),
                    &p.name,
                    &p.value,
                    DNS_SYNC_PATIENCE,
                    DNS_SYNC_POLL,
                )
                .await?;
            }
        }
    }
    Ok(presented)
}

/// What the renewal job keeps: when its next run is due (unix ms).
const NEXT_RUN: &str = "next_run_at";

/// The CertificateRenewal object.
#[derive(Debug, Clone)]
pub struct RenewalObject {
    db: MySqlPool,
    issuer: Option<Arc<Issuer>>,
    heartbeat: Option<Heartbeat>,
}

/// A monitoring URL (seed 001's `heartbeat.cert_renewal_url`, e.g.
/// Checkly's) called after each renewal run, so a job that stops running
/// is noticed by someone.
#[derive(Clone)]
struct Heartbeat {
    url: Arc<str>,
    http: reqwest::Client,
}

impl std::fmt::Debug for Heartbeat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL is a credential of the monitoring service.
        f.write_str("Heartbeat(<redacted>)")
    }
}

/// Bound on the heartbeat call.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(10);

impl RenewalObject {
    /// The job over the database; idle without an issuer.
    pub fn new(db: MySqlPool, issuer: Option<Arc<Issuer>>) -> Self {
        Self {
            db,
            issuer,
            heartbeat: None,
        }
    }

    /// Calls `url` (GET) after every run that succeeded.
    #[must_use]
    pub fn with_heartbeat(mut self, url: Option<&str>) -> Self {
        self.heartbeat = url.map(|url| Heartbeat {
            url: url.into(),
            http: reqwest::Client::builder()
                .timeout(HEARTBEAT_TIMEOUT)
                .build()
                .unwrap_or_default(),
        });
        self
    }
}

#[restate_sdk::object(name = "CertificateRenewal")]
impl RenewalObject {
    /// Starts the chain unless a run is already scheduled.
    #[handler(name = "Ensure")]
    async fn ensure(&self, ctx: ObjectContext<'_>) -> HandlerResult<()> {
        let Some(issuer) = self.issuer.clone() else {
            return Ok(());
        };
        let now = ctx.run(|| async { Ok(now_ms()) }).name("now").await?;
        let next = ctx.get::<i64>(NEXT_RUN).await?;
        let interval = i64::try_from(issuer.renewal_interval.as_millis()).unwrap_or(i64::MAX);
        // A scheduled run that is overdue by more than an interval was lost
        // (e.g. its invocation was cancelled): start again.
        if next.is_some_and(|at| at > now - interval) {
            return Ok(());
        }
        ctx.set(NEXT_RUN, now);
        ctx.object_client::<RenewalObjectClient<'_>>(ctx.key())
            .run()
            .send();
        Ok(())
    }

    /// Renews what is due (spread out), then schedules itself again.
    #[handler(name = "Run", ingress_private)]
    async fn run(&self, ctx: ObjectContext<'_>) -> HandlerResult<()> {
        let Some(issuer) = self.issuer.clone() else {
            return Ok(());
        };
        let (db, before, retry) = (
            self.db.clone(),
            issuer.renew_before,
            issuer.retry_failed_after,
        );
        let Json(due) = ctx
            .run(|| async move {
                let now = now_ms();
                let horizon = now + i64::try_from(before.as_millis()).unwrap_or(0);
                let failed_before = now - i64::try_from(retry.as_millis()).unwrap_or(0);
                let due = certificate::due(&db, horizon, failed_before, 1000)
                    .await
                    .map_err(db_error)?;
                // (hostname, domain id), soonest expiry first.
                Ok(Json(
                    due.into_iter()
                        .map(|d| (d.hostname, d.domain_id))
                        .collect::<Vec<_>>(),
                ))
            })
            .name("find certificates due")
            .await?;
        for (n, (hostname, domain_id)) in due.iter().enumerate() {
            let delay = issuer.renewal_spacing * u32::try_from(n).unwrap_or(u32::MAX);
            ctx.object_client::<CertificateObjectClient<'_>>(hostname.clone())
                .obtain(Json(ObtainCertificate {
                    domain_id: domain_id.clone(),
                    force: false,
                }))
                .send_after(delay);
        }
        if !due.is_empty() {
            tracing::info!(count = due.len(), "certificate renewals started");
        }
        if let Some(beat) = self.heartbeat.clone() {
            // Best effort, once: a monitoring outage must not stall renewals.
            ctx.run(|| async move {
                match beat.http.get(&*beat.url).send().await {
                    Ok(r) if r.status().is_success() => {}
                    Ok(r) => tracing::warn!(status = %r.status(), "renewal heartbeat refused"),
                    Err(e) => tracing::warn!(error = %e.without_url(), "renewal heartbeat failed"),
                }
                Ok(())
            })
            .name("heartbeat")
            .await?;
        }
        let now = ctx.run(|| async { Ok(now_ms()) }).name("now").await?;
        let interval = issuer.renewal_interval;
        ctx.set(
            NEXT_RUN,
            now + i64::try_from(interval.as_millis()).unwrap_or(0),
        );
        ctx.object_client::<RenewalObjectClient<'_>>(ctx.key())
            .run()
            .send_after(interval);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limits_sleep_until_their_end_plus_a_minute_within_bounds() {
        let now = 1_000_000_000;
        assert_eq!(
            rate_limit_wait(Some(now + 600_000), now),
            Duration::from_secs(11 * 60)
        );
        assert_eq!(
            rate_limit_wait(Some(now - 5_000), now),
            Duration::from_secs(60)
        );
        assert_eq!(
            rate_limit_wait(Some(now + 86_400_000), now),
            Duration::from_secs(7200)
        );
        assert_eq!(rate_limit_wait(None, now), Duration::from_secs(3600));
    }
}
