//! Waiting for instances, shared by the pipeline and by waking a stopped
//! deployment.
//!
//! **No silent waits:** each check reads readiness *and* the problems the
//! agents reported (`ctrl_db::instance::readiness_by_region` →
//! `ctrl_core::status::assess`); a new problem is shown on the step at once,
//! and regions that failed `max_failed_attempts` times in a row fail the
//! deployment with their reason instead of the timeout.
//!
//! Each check also reads the deployment's status: cancelled (CancelDeployment
//! sets it before it cancels the invocation), failed or deleted meanwhile,
//! the wait ends.
//!
//! **Never one notification:** the awakeable is stored before each check,
//! so a `NotifyInstancesChanged` that lands in between still wakes us; and
//! a durable timer re-checks every `readiness_recheck` anyway, so a lost
//! notification (restate-server killed between cluster-sync's send and its
//! journal) costs seconds, not the timeout.

use ctrl_core::status::{Readiness, StepKind, assess};
use restate_sdk::prelude::*;
use sqlx::MySqlPool;

use super::steps;
use crate::errors::{WorkflowError, db_error, now_ms, step_retry};
use crate::services::deploy::{DeploySettings, READINESS_AWAKEABLE};

/// What is being waited for.
#[derive(Debug, Clone, Copy)]
pub(in crate::services::deploy) struct Waiting<'a> {
    /// The deployment.
    pub(in crate::services::deploy) deployment_id: &'a str,
    /// The running step that shows the progress.
    pub(in crate::services::deploy) step: StepKind,
    /// The step's message without problems ("Starting instances in 1 region(s)").
    pub(in crate::services::deploy) headline: &'a str,
}

/// Waits until enough regions run enough instances, failing when the
/// agents gave up or the readiness timeout passed.
pub(in crate::services::deploy) async fn instances(
    db: &MySqlPool,
    settings: &DeploySettings,
    ctx: &ObjectContext<'_>,
    waiting: &Waiting<'_>,
) -> Result<(), TerminalError> {
    let timeout = settings.readiness_timeout;
    let timeout_ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
    let deadline = ctx
        .run(|| async move { Ok(now_ms().saturating_add(timeout_ms)) })
        .name("readiness deadline")
        .await?;
    let max_attempts = settings.max_failed_attempts;
    let mut shown: Vec<String> = Vec::new();
    loop {
        let (awakeable_id, woken) = ctx.awakeable::<()>();
        ctx.set(READINESS_AWAKEABLE, awakeable_id);
        let (pool, id) = (db.clone(), waiting.deployment_id.to_owned());
        let Json((readiness, now)) = ctx
            .run(|| async move {
                // Cancelled (or failed, or deleted) meanwhile: stop waiting.
                let status = ctrl_db::deployment::get(&pool, &id)
                    .await
                    .map_err(db_error)?
                    .status;
                if !status.is_progressing() {
                    return Ok(Json((None, now_ms())));
                }
                let regions = ctrl_db::instance::readiness_by_region(&pool, &id)
                    .await
                    .map_err(db_error)?;
                Ok(Json((Some(assess(&regions, max_attempts)), now_ms())))
            })
            .name("check instances")
            .retry_policy(step_retry())
            .await?;
        let Some(readiness) = readiness else {
            return Err(WorkflowError::NoLongerActive.into());
        };
        let problems = match readiness {
            Readiness::Ready => {
                ctx.clear(READINESS_AWAKEABLE);
                return Ok(());
            }
            Readiness::Failed(reason) => return Err(WorkflowError::RegionsFailed(reason).into()),
            Readiness::Waiting(problems) => problems,
        };
        if problems != shown {
            let message = if problems.is_empty() {
                waiting.headline.to_owned()
            } else {
                format!("{} — {}", waiting.headline, problems.join("; "))
            };
            steps::show(db, ctx, waiting.deployment_id, waiting.step, &message).await?;
            shown = problems;
        }
        let left = u64::try_from(deadline - now).unwrap_or(0);
        if left == 0 {
            return Err(WorkflowError::ReadinessTimeout {
                seconds: timeout.as_secs(),
                last_problem: (!shown.is_empty()).then(|| shown.join("; ")),
            }
            .into());
        }
        let nap = std::time::Duration::from_millis(left).min(settings.readiness_recheck);
        restate_sdk::select! {
            r = woken => r?,
            r = ctx.sleep(nap) => r?,
            on_cancel => return Err(WorkflowError::Cancelled.into()),
        }
    }
}
