//! Finalizing: the deployment is ready; then, only ever forward in creation
//! order, it becomes live (production) or replaces older previews of its
//! branch. A deployment that becomes ready after a newer one of its app
//! (production) or branch (preview) is ready but not live, and retires like
//! any replaced deployment.

use ctrl_core::status::{DeploymentStatus, StepKind};
use ctrl_db::deployment;
use restate_sdk::prelude::*;
use sqlx::MySqlPool;

use super::compensation::Undo;
use super::{Plan, steps};
use crate::errors::{WorkflowError, begin, commit, db_error, now_ms, step_retry};
use crate::services::deploy::{DeploySettings, retire};
use crate::services::routing::{AutoPromote, Promotion, RoutingObjectClient};

/// Marks the deployment ready, then moves traffic forward.
pub(super) async fn finish(
    db: &MySqlPool,
    settings: &DeploySettings,
    ctx: &ObjectContext<'_>,
    plan: &Plan,
    undo: &mut Vec<Undo>,
) -> Result<(), TerminalError> {
    steps::advance(
        db,
        ctx,
        &plan.workspace_id,
        &plan.deployment_id,
        DeploymentStatus::Finalizing,
        "Making the deployment available",
    )
    .await?;
    let (pool, id) = (db.clone(), plan.deployment_id.clone());
    let ready = ctx
        .run(|| async move {
            let now = now_ms();
            let mut tx = begin(&pool).await?;
            let ready =
                deployment::set_status_if_active(&mut *tx, &id, DeploymentStatus::Ready, None, now)
                    .await
                    .map_err(db_error)?
                    // Already ready: this step committed before a crash.
                    || deployment::get(&mut *tx, &id).await.map_err(db_error)?.status
                        == DeploymentStatus::Ready;
            if ready {
                deployment::end_step(&mut *tx, &id, StepKind::Finalizing, None, now)
                    .await
                    .map_err(db_error)?;
            }
            commit(tx).await?;
            Ok(ready)
        })
        .name("mark ready")
        .retry_policy(step_retry())
        .await?;
    if !ready {
        return Err(WorkflowError::NoLongerActive.into());
    }
    // Ready is final for this pipeline: nothing below may undo it.
    undo.clear();

    if plan.is_production {
        let Json(promoted) = ctx
            .object_client::<RoutingObjectClient<'_>>(&plan.environment_id)
            .auto_promote(Json(AutoPromote {
                app_id: plan.app_id.clone(),
                deployment_id: plan.deployment_id.clone(),
                operation_id: format!("{}:auto-promote", ctx.invocation_id()),
            }))
            .call()
            .await?;
        match promoted.outcome {
            Promotion::Promoted => {
                let previous = promoted.previous_deployment_id;
                if !previous.is_empty() && previous != plan.deployment_id {
                    retire(ctx, &previous, settings.retire_previous_live, true);
                }
            }
            // A newer deployment is live already: this one is replaced.
            Promotion::NewerIsLive => {
                retire(
                    ctx,
                    &plan.deployment_id,
                    settings.retire_previous_live,
                    false,
                );
            }
            Promotion::RolledBack => {}
        }
    } else if plan.git_branch.is_some() {
        let (pool, id) = (db.clone(), plan.deployment_id.clone());
        let Json((older, replaced)) = ctx
            .run(|| async move {
                let d = deployment::get(&pool, &id).await.map_err(db_error)?;
                let older = deployment::list_older_running_siblings(&pool, &d)
                    .await
                    .map_err(db_error)?;
                let replaced = deployment::has_newer_ready_sibling(&pool, &d)
                    .await
                    .map_err(db_error)?;
                Ok(Json((older, replaced)))
            })
            .name("find older and newer previews of the branch")
            .retry_policy(step_retry())
            .await?;
        for sibling in older {
            retire(ctx, &sibling, settings.retire_previous_preview, false);
        }
        if replaced {
            retire(
                ctx,
                &plan.deployment_id,
                settings.retire_previous_preview,
                false,
            );
        }
    }
    Ok(())
}
