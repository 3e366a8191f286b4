//! Moving a deployment from phase to phase: its status and its
//! `deployment_steps` row, in one transaction.

use ctrl_core::status::{DeploymentStatus, StepKind};
use ctrl_db::deployment;
use restate_sdk::prelude::*;
use sqlx::MySqlPool;

use crate::errors::{WorkflowError, begin, commit, db_error, now_ms, step_retry};

/// Moves the deployment to the phase `status` and starts its step with
/// `message`, unless it was cancelled or finished meanwhile (then the
/// pipeline stops with [`WorkflowError::NoLongerActive`]).
pub(in crate::services::deploy) async fn advance(
    db: &MySqlPool,
    ctx: &ObjectContext<'_>,
    workspace_id: &str,
    deployment_id: &str,
    status: DeploymentStatus,
    message: &str,
) -> Result<(), TerminalError> {
    let Some(step) = status.step() else {
        return Err(WorkflowError::Internal(format!("{status} is not a pipeline phase")).into());
    };
    let (pool, workspace_id, id, message) = (
        db.clone(),
        workspace_id.to_owned(),
        deployment_id.to_owned(),
        message.to_owned(),
    );
    let active = ctx
        .run(|| async move {
            let now = now_ms();
            let mut tx = begin(&pool).await?;
            let active = deployment::set_status_if_active(&mut *tx, &id, status, None, now)
                .await
                .map_err(db_error)?;
            if active {
                deployment::complete_running_steps(&mut *tx, &id, now)
                    .await
                    .map_err(db_error)?;
                deployment::start_step(&mut *tx, &workspace_id, &id, step, &message, now)
                    .await
                    .map_err(db_error)?;
            }
            commit(tx).await?;
            Ok(active)
        })
        .name(format!("start {}", step.as_str()))
        .retry_policy(step_retry())
        .await?;
    if active {
        Ok(())
    } else {
        Err(WorkflowError::NoLongerActive.into())
    }
}

/// Shows progress within a running step (e.g. what an agent reports).
pub(in crate::services::deploy) async fn show(
    db: &MySqlPool,
    ctx: &ObjectContext<'_>,
    deployment_id: &str,
    step: StepKind,
    message: &str,
) -> Result<(), TerminalError> {
    let (pool, id, message) = (db.clone(), deployment_id.to_owned(), message.to_owned());
    ctx.run(|| async move {
        deployment::set_step_message(&pool, &id, step, &message)
            .await
            .map_err(db_error)?;
        Ok(())
    })
    .name(format!("show {} progress", step.as_str()))
    .retry_policy(step_retry())
    .await
}
