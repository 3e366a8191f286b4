//! Waking a stopped deployment (`Deploy/{id}/Wake`): desired state running
//! again, then the same wait as a deploy — readiness, the agents' problems
//! on the step, failure after `max_failed_attempts` — and the status goes
//! back to `ready`. If the instances cannot start, the deployment is
//! stopped again with the reason as its error (it stays wakeable).

use ctrl_core::gate;
use ctrl_core::status::{DeploymentStatus, DesiredState, StepKind};
use ctrl_core::workflows::WakeInput;
use ctrl_db::types::EnvironmentKind;
use ctrl_db::{deployment, tenancy, topology};
use restate_sdk::prelude::*;
use serde::{Deserialize, Serialize};
use sqlx::MySqlPool;

use super::pipeline::wait::{self, Waiting};
use super::{DeploySettings, READINESS_AWAKEABLE};
use crate::errors::{
    CANCELLED, WorkflowError, begin, commit, compensation_retry, db_error, now_ms, step_retry,
};
use crate::services::deployment::DeploymentObjectClient;

/// The outcome of starting a wake.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Started {
    /// Waking; the step's message.
    Waking(String),
    /// Not stopped (any more): why.
    Refused(String),
}

/// Runs the wake of `req.deployment_id` (the object's key).
pub(super) async fn run(
    db: &MySqlPool,
    settings: &DeploySettings,
    ctx: &ObjectContext<'_>,
    req: WakeInput,
) -> HandlerResult<()> {
    if req.deployment_id != ctx.key() {
        return Err(WorkflowError::WrongKey {
            handler: "Wake",
            whose: "own",
        }
        .into());
    }
    let id = req.deployment_id;
    // A retirement scheduled earlier must not stop it again.
    ctx.object_client::<DeploymentObjectClient<'_>>(&id)
        .clear()
        .send();
    let (pool, id_) = (db.clone(), id.clone());
    let Json(started) = ctx
        .run(|| async move { begin_wake(&pool, &id_).await.map(Json) })
        .name("wake: desired state running")
        .retry_policy(step_retry())
        .await?;
    let headline = match started {
        Started::Waking(headline) => headline,
        Started::Refused(why) => return Err(WorkflowError::Refused(why).into()),
    };
    let waited = wait::instances(
        db,
        settings,
        ctx,
        &Waiting {
            deployment_id: &id,
            step: StepKind::Deploying,
            headline: &headline,
        },
    )
    .await;
    let (pool, id_) = (db.clone(), id.clone());
    match waited {
        Ok(()) => {
            ctx.run(|| async move {
                let now = now_ms();
                let mut tx = begin(&pool).await?;
                deployment::compare_and_set_status(
                    &mut *tx,
                    &id_,
                    DeploymentStatus::Deploying,
                    DeploymentStatus::Ready,
                    now,
                )
                .await
                .map_err(db_error)?;
                deployment::end_step(&mut *tx, &id_, StepKind::Deploying, None, now)
                    .await
                    .map_err(db_error)?;
                commit(tx).await?;
                Ok(())
            })
            .name("wake: ready")
            .retry_policy(step_retry())
            .await?;
            Ok(())
        }
        Err(e) => {
            ctx.clear(READINESS_AWAKEABLE);
            let why = if e.code() == CANCELLED {
                "Wake cancelled".to_owned()
            } else {
                e.message().to_owned()
            };
            ctx.run(|| async move {
                let now = now_ms();
                let mut tx = begin(&pool).await?;
                deployment::fail_wake(&mut tx, &id_, &why, now)
                    .await
                    .map_err(db_error)?;
                deployment::end_running_steps(&mut *tx, &id_, &why, now)
                    .await
                    .map_err(db_error)?;
                commit(tx).await?;
                Ok(())
            })
            .name("[compensation] wake failed: stop again")
            .retry_policy(compensation_retry())
            .await?;
            Err(e.into())
        }
    }
}

/// Stopped (or stopping) → deploying with desired state running, in one
/// transaction with the topology rows and the step.
async fn begin_wake(db: &MySqlPool, id: &str) -> Result<Started, HandlerError> {
    let now = now_ms();
    let mut tx = begin(db).await?;
    let d = deployment::get(&mut *tx, id).await.map_err(db_error)?;
    // The user's wake rules again (the handler is reachable from Restate's
    // ingress): a production deployment is woken by promote or rollback.
    if d.desired_state == DesiredState::Stopped {
        let env = tenancy::get_environment(&mut *tx, &d.environment_id)
            .await
            .map_err(db_error)?;
        if let Err(e) = gate::check_wake(&d.gate_facts(env.kind == EnvironmentKind::Production)) {
            return Ok(Started::Refused(e.message()));
        }
    }
    if !deployment::begin_wake(&mut tx, id, now)
        .await
        .map_err(db_error)?
    {
        // Our own commit, replayed after a crash: carry on.
        if d.status == DeploymentStatus::Deploying && d.desired_state == DesiredState::Running {
            return Ok(Started::Waking(headline(&mut tx, id).await?));
        }
        return Ok(Started::Refused(format!(
            "The deployment is {} and its desired state is {}: only a stopped deployment can be woken.",
            d.status,
            d.desired_state.as_str()
        )));
    }
    let headline = headline(&mut tx, id).await?;
    deployment::start_step(
        &mut *tx,
        &d.workspace_id,
        id,
        StepKind::Deploying,
        &headline,
        now,
    )
    .await
    .map_err(db_error)?;
    commit(tx).await?;
    Ok(Started::Waking(headline))
}

async fn headline(tx: &mut sqlx::MySqlConnection, id: &str) -> Result<String, HandlerError> {
    let regions = topology::list_by_deployment(&mut *tx, id)
        .await
        .map_err(db_error)?
        .len();
    Ok(format!("Waking: starting instances in {regions} region(s)"))
}
