//! `CustomDomain` (virtual object keyed by the custom domain's id):
//! verification and removal of a user's hostname.
//!
//! `StartVerification` resets the row and starts a chain of `Verify` calls
//! the object sends itself: each checks the DNS records once (a real
//! resolver, no cache), records what it found, and — not verified yet —
//! schedules the next check after the interval, until the give-up time
//! (24 h by default) fails the domain. A generation number in the object's
//! state makes older chains stop when verification restarts or the domain
//! is deleted. Verified → revoke a contested claim of another workspace →
//! create the environment-sticky route (it follows the live deployment in
//! production, the newest one in a preview) and mark the domain verified in
//! one transaction → open the HTTP-01 challenge and ask `Certificate` for
//! the certificate. A verified domain is re-checked every
//! `recheck_interval_seconds`: it stays routed, but a record removed or
//! changed since shows on the domain (as "re-check: …"). `Delete` removes the
//! route, the challenge, the certificate and the row, each step durable.

use std::net::IpAddr;
use std::time::Duration;

use ctrl_acme::verify::{Checker, Expected};
use ctrl_core::domains::Sticky;
use ctrl_core::id::{IdKind, generate};
use ctrl_core::workflows::{CustomDomainInput, ObtainCertificate};
use ctrl_db::custom_domain::{self, Check, CustomDomain};
use ctrl_db::route::{self, NewRoute};
use ctrl_db::types::{ChallengeStatus, CustomDomainStatus};
use ctrl_db::{certificate, tenancy};
use restate_sdk::prelude::*;
use serde::{Deserialize, Serialize};
use sqlx::MySqlPool;

use crate::errors::{
    WorkflowError, begin, commit, compensation_retry, db_error, now_ms, step_retry,
};
use crate::services::certificate::CertificateObjectClient;

const GENERATION: &str = "generation";
const STARTED_AT: &str = "started_at";

/// How domains are verified.
#[derive(Debug)]
pub struct Verifier {
    /// The resolver.
    pub checker: Checker,
    /// Time between checks.
    pub interval: Duration,
    /// Give up after this long.
    pub give_up_after: Duration,
    /// Addresses an apex must point at (empty: any).
    pub apex_addresses: Vec<IpAddr>,
    /// Certificates are issued (ACME enabled).
    pub issue_certificates: bool,
    /// Time between re-checks of a verified domain.
    pub recheck_interval: Duration,
}

/// Input of `Verify` (sent by the object to itself).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifyInput {
    /// The chain this check belongs to; stale chains stop.
    pub generation: u64,
}

/// What a check step found.
#[derive(Debug, Serialize, Deserialize)]
enum Checked {
    /// The row is gone, or no longer waiting for verification.
    Over,
    /// Checked; verified or not, with what was found.
    Result {
        verified: bool,
        cname_verified: bool,
        ownership_verified: bool,
        summary: String,
        domain: Box<CustomDomainRow>,
    },
}

/// The row as the later steps need it (journaled).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CustomDomainRow {
    id: String,
    workspace_id: String,
    project_id: String,
    app_id: String,
    environment_id: String,
    domain: String,
}

impl From<&CustomDomain> for CustomDomainRow {
    fn from(d: &CustomDomain) -> Self {
        Self {
            id: d.id.clone(),
            workspace_id: d.workspace_id.clone(),
            project_id: d.project_id.clone(),
            app_id: d.app_id.clone(),
            environment_id: d.environment_id.clone(),
            domain: d.domain.clone(),
        }
    }
}

/// The CustomDomain object.
#[derive(Debug, Clone)]
pub struct CustomDomainObject {
    db: MySqlPool,
    verifier: std::sync::Arc<Verifier>,
}

impl CustomDomainObject {
    /// The object over the database and a verifier.
    pub fn new(db: MySqlPool, verifier: std::sync::Arc<Verifier>) -> Self {
        Self { db, verifier }
    }
}

#[restate_sdk::object(name = "CustomDomain")]
impl CustomDomainObject {
    /// (Re)starts verification now.
    #[handler(name = "StartVerification")]
    async fn start(
        &self,
        ctx: ObjectContext<'_>,
        Json(req): Json<CustomDomainInput>,
    ) -> HandlerResult<()> {
        own_key(&ctx, &req)?;
        let generation = ctx.get::<u64>(GENERATION).await?.unwrap_or(0) + 1;
        ctx.set(GENERATION, generation);
        let (db, id) = (self.db.clone(), ctx.key().to_owned());
        let now = ctx
            .run(|| async move {
                let now = now_ms();
                if custom_domain::find(&db, &id)
                    .await
                    .map_err(db_error)?
                    .is_none()
                {
                    return Err(WorkflowError::NotFound("custom domain").into());
                }
                custom_domain::reset(&db, &id, now)
                    .await
                    .map_err(db_error)?;
                Ok(now)
            })
            .name("reset verification")
            .retry_policy(step_retry())
            .await?;
        ctx.set(STARTED_AT, now);
        ctx.object_client::<CustomDomainObjectClient<'_>>(ctx.key())
            .verify(Json(VerifyInput { generation }))
            .send();
        Ok(())
    }

    /// One check; schedules the next while not verified.
    #[handler(name = "Verify", ingress_private)]
    async fn verify(
        &self,
        ctx: ObjectContext<'_>,
        Json(req): Json<VerifyInput>,
    ) -> HandlerResult<()> {
        if ctx.get::<u64>(GENERATION).await? != Some(req.generation) {
            return Ok(()); // restarted or deleted since
        }
        let started = ctx.get::<i64>(STARTED_AT).await?.unwrap_or(0);
        let (db, verifier, id) = (self.db.clone(), self.verifier.clone(), ctx.key().to_owned());
        let Json(checked) = ctx
            .run(|| async move { check(&db, &verifier, &id).await })
            .name("check DNS records")
            .retry_policy(step_retry())
            .await?;
        let (verified, flags, summary, domain) = match checked {
            Checked::Over => return Ok(()),
            Checked::Result {
                verified,
                cname_verified,
                ownership_verified,
                summary,
                domain,
            } => (
                verified,
                (cname_verified, ownership_verified),
                summary,
                domain,
            ),
        };
        if verified {
            return self.on_verified(&ctx, &domain, flags, &summary).await;
        }
        let now = ctx.run(|| async { Ok(now_ms()) }).name("now").await?;
        let give_up = i64::try_from(self.verifier.give_up_after.as_millis()).unwrap_or(i64::MAX);
        if now - started >= give_up {
            let hours = self.verifier.give_up_after.as_secs_f64() / 3600.0;
            let why = format!("not verified within {hours:.1} h; last check: {summary}");
            let (db, id) = (self.db.clone(), ctx.key().to_owned());
            ctx.run(|| async move {
                custom_domain::mark_failed(&db, &id, &why, now_ms())
                    .await
                    .map_err(db_error)?;
                Ok(())
            })
            .name("give up")
            .retry_policy(compensation_retry())
            .await?;
            return Ok(());
        }
        ctx.object_client::<CustomDomainObjectClient<'_>>(ctx.key())
            .verify(Json(req))
            .send_after(self.verifier.interval);
        Ok(())
    }

    /// Checks a verified domain's records again (they may have been removed
    /// or changed since): it stays routed, and what was found shows on the
    /// domain; then schedules the next re-check.
    #[handler(name = "Recheck", ingress_private)]
    async fn recheck(
        &self,
        ctx: ObjectContext<'_>,
        Json(req): Json<VerifyInput>,
    ) -> HandlerResult<()> {
        if ctx.get::<u64>(GENERATION).await? != Some(req.generation) {
            return Ok(());
        }
        let (db, verifier, id) = (self.db.clone(), self.verifier.clone(), ctx.key().to_owned());
        let still_verified = ctx
            .run(|| async move { recheck(&db, &verifier, &id).await })
            .name("re-check DNS records")
            .retry_policy(step_retry())
            .await?;
        if still_verified {
            ctx.object_client::<CustomDomainObjectClient<'_>>(ctx.key())
                .recheck(Json(req))
                .send_after(self.verifier.recheck_interval);
        }
        Ok(())
    }

    /// Removes the domain with its route, challenge and certificate.
    #[handler(name = "Delete")]
    async fn delete(
        &self,
        ctx: ObjectContext<'_>,
        Json(req): Json<CustomDomainInput>,
    ) -> HandlerResult<()> {
        own_key(&ctx, &req)?;
        // Stops any verification chain.
        let generation = ctx.get::<u64>(GENERATION).await?.unwrap_or(0) + 1;
        ctx.set(GENERATION, generation);
        let (db, id) = (self.db.clone(), ctx.key().to_owned());
        ctx.run(|| async move {
            let Some(d) = custom_domain::find(&db, &id).await.map_err(db_error)? else {
                return Ok(());
            };
            if d.platform {
                return Err(WorkflowError::Refused(
                    "the platform's own domains cannot be deleted".into(),
                )
                .into());
            }
            custom_domain::unserve(&db, &d, now_ms())
                .await
                .map_err(db_error)?;
            custom_domain::delete(&db, &id).await.map_err(db_error)?;
            tracing::info!(domain = %d.domain, "custom domain deleted");
            Ok(())
        })
        .name("delete route, challenge, certificate and domain")
        .retry_policy(compensation_retry())
        .await?;
        ctx.clear(STARTED_AT);
        Ok(())
    }
}

impl CustomDomainObject {
    /// Revokes contested claims, then routes the domain and marks it
    /// verified in one transaction (verified always means routed), then
    /// asks for its certificate.
    async fn on_verified(
        &self,
        ctx: &ObjectContext<'_>,
        d: &CustomDomainRow,
        (cname_verified, ownership_verified): (bool, bool),
        summary: &str,
    ) -> HandlerResult<()> {
        let (db, row) = (self.db.clone(), d.clone());
        ctx.run(|| async move {
            let now = now_ms();
            for other in custom_domain::verified_others(&db, &row.domain, &row.id)
                .await
                .map_err(db_error)?
            {
                // Unserved while still marked verified: its certificate goes too.
                custom_domain::unserve(&db, &other, now)
                    .await
                    .map_err(db_error)?;
                custom_domain::mark_failed(
                    &db,
                    &other.id,
                    "domain claimed by another workspace that proved ownership with its TXT record",
                    now,
                )
                .await
                .map_err(db_error)?;
                tracing::warn!(domain = %other.domain, revoked = %other.id, "contested domain revoked");
            }
            Ok(())
        })
        .name("revoke contested claims")
        .retry_policy(compensation_retry())
        .await?;

        let (db, row, summary) = (self.db.clone(), d.clone(), summary.to_owned());
        ctx.run(|| async move {
            let now = now_ms();
            let route_id = generate(IdKind::FrontlineRoute, &mut rand::rng());
            let mut tx = begin(&db).await?;
            let existing = route::find_by_fqdn(&mut *tx, &row.domain)
                .await
                .map_err(db_error)?;
            match existing {
                Some(r) if r.environment_id == row.environment_id => {}
                Some(_) => {
                    return Err(WorkflowError::Refused(format!(
                        "{} already routes to another environment",
                        row.domain
                    ))
                    .into());
                }
                None => {
                    let target = route::environment_target(&mut *tx, &row.environment_id)
                        .await
                        .map_err(db_error)?
                        .unwrap_or_default();
                    route::insert(
                        &mut *tx,
                        &NewRoute {
                            id: &route_id,
                            workspace_id: &row.workspace_id,
                            project_id: &row.project_id,
                            app_id: &row.app_id,
                            environment_id: &row.environment_id,
                            deployment_id: &target,
                            fqdn: &row.domain,
                            // Follows the environment: in production the
                            // live swaps (deploy, rollback, promote), in a
                            // preview each new deployment.
                            sticky: Sticky::Environment,
                        },
                        now,
                    )
                    .await
                    .map_err(db_error)?;
                    tracing::info!(domain = %row.domain, deployment_id = %target, "custom domain routed");
                }
            }
            let found = Check {
                cname_verified,
                ownership_verified,
                summary: &summary,
            };
            custom_domain::mark_verified(&mut *tx, &row.id, found, now)
                .await
                .map_err(db_error)?;
            commit(tx).await?;
            Ok(())
        })
        .name("route and mark verified")
        .retry_policy(compensation_retry())
        .await?;

        let generation = ctx.get::<u64>(GENERATION).await?.unwrap_or(0);
        ctx.object_client::<CustomDomainObjectClient<'_>>(ctx.key())
            .recheck(Json(VerifyInput { generation }))
            .send_after(self.verifier.recheck_interval);
        let (db, row, issue) = (self.db.clone(), d.clone(), self.verifier.issue_certificates);
        ctx.run(|| async move {
            let now = now_ms();
            certificate::ensure_challenge(
                &db,
                &row.workspace_id,
                &row.id,
                "http-01",
                now + 30 * 86_400_000,
                now,
            )
            .await
            .map_err(db_error)?;
            if !issue {
                // Said where users look; once ACME is enabled, the renewal
                // job retries failed challenges.
                certificate::set_challenge_status(
                    &db,
                    &row.id,
                    ChallengeStatus::Failed,
                    None,
                    Some("certificates are not issued by this installation ([acme] enabled = false in ctrl-worker's config)"),
                    now,
                )
                .await
                .map_err(db_error)?;
            }
            Ok(())
        })
        .name("open challenge")
        .retry_policy(compensation_retry())
        .await?;
        if !self.verifier.issue_certificates {
            return Ok(());
        }
        ctx.object_client::<CertificateObjectClient<'_>>(d.domain.clone())
            .obtain(Json(ObtainCertificate {
                domain_id: d.id.clone(),
                force: false,
            }))
            .send();
        Ok(())
    }
}

fn own_key(ctx: &ObjectContext<'_>, req: &CustomDomainInput) -> Result<(), HandlerError> {
    if req.domain_id != ctx.key() {
        return Err(WorkflowError::Invalid(format!(
            "CustomDomain {} was invoked for {}",
            ctx.key(),
            req.domain_id
        ))
        .into());
    }
    Ok(())
}

/// One re-check of a verified domain, recorded on its row; whether it is
/// still verified (deleted, failed or restarted: the re-checks stop).
async fn recheck(db: &MySqlPool, verifier: &Verifier, id: &str) -> Result<bool, HandlerError> {
    let Some(d) = custom_domain::find(db, id).await.map_err(db_error)? else {
        return Ok(false);
    };
    if d.verification_status != CustomDomainStatus::Verified {
        return Ok(false);
    }
    let verdict = verifier
        .checker
        .check(&expected(db, verifier, &d).await?)
        .await;
    let summary = if verdict.verified {
        String::new()
    } else {
        format!("re-check: {}", verdict.summary)
    };
    let found = Check {
        cname_verified: verdict.cname_verified,
        ownership_verified: verdict.ownership_verified,
        summary: &summary,
    };
    custom_domain::record_recheck(db, id, found, now_ms())
        .await
        .map_err(db_error)
}

/// What a domain must show: contested when another workspace holds it
/// verified.
async fn expected(
    db: &MySqlPool,
    verifier: &Verifier,
    d: &CustomDomain,
) -> Result<Expected, HandlerError> {
    let contested = custom_domain::verified_others(db, &d.domain, &d.id)
        .await
        .map_err(db_error)?
        .iter()
        .any(|o| o.workspace_id != d.workspace_id);
    Ok(Expected {
        domain: d.domain.clone(),
        target_cname: d.target_cname.clone(),
        token: d.verification_token.clone(),
        contested,
        apex_addresses: verifier.apex_addresses.clone(),
    })
}

/// One DNS check of the domain, recorded on its row.
async fn check(
    db: &MySqlPool,
    verifier: &Verifier,
    id: &str,
) -> Result<Json<Checked>, HandlerError> {
    let Some(d) = custom_domain::find(db, id).await.map_err(db_error)? else {
        return Ok(Json(Checked::Over));
    };
    if !matches!(
        d.verification_status,
        CustomDomainStatus::Pending | CustomDomainStatus::Verifying
    ) {
        return Ok(Json(Checked::Over));
    }
    let verdict = verifier
        .checker
        .check(&expected(db, verifier, &d).await?)
        .await;
    let found = Check {
        cname_verified: verdict.cname_verified,
        ownership_verified: verdict.ownership_verified,
        summary: &verdict.summary,
    };
    let now = now_ms();
    // A verified domain is marked so only together with its route.
    let applied = custom_domain::record_check(db, id, found, now)
        .await
        .map_err(db_error)?;
    if !applied {
        return Ok(Json(Checked::Over));
    }
    tracing::debug!(domain = %d.domain, verified = verdict.verified, summary = %verdict.summary, "custom domain checked");
    // The app may have been deleted meanwhile: then there is nothing to route.
    if verdict.verified && tenancy::get_app(db, &d.app_id).await.is_err() {
        return Ok(Json(Checked::Over));
    }
    Ok(Json(Checked::Result {
        verified: verdict.verified,
        cname_verified: verdict.cname_verified,
        ownership_verified: verdict.ownership_verified,
        summary: verdict.summary,
        domain: Box::new(CustomDomainRow::from(&d)),
    }))
}
