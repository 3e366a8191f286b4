//! What a failed or cancelled pipeline undoes, in reverse order of
//! registration. Compensations are retried durably
//! (`errors::compensation_retry`): a deployment row never stays on its way
//! with nothing behind it, and routes never stay on a failed deployment.

use std::time::Duration;

use ctrl_core::status::DeploymentStatus;
use ctrl_db::deployment;
use restate_sdk::prelude::*;
use sqlx::MySqlPool;

use crate::errors::{CANCELLED, begin, commit, compensation_retry, db_error, now_ms};
use crate::services::deploy::{READINESS_AWAKEABLE, retire};
use crate::services::routing::{ReleaseRoutes, RoutingObjectClient};

/// One compensation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::services::deploy) enum Undo {
    /// Mark the deployment failed (or cancelled) unless already terminal.
    MarkFailed,
    /// Stop its instances everywhere.
    StopInstances,
    /// Forget the readiness awakeable.
    ForgetAwakeable,
    /// Move or delete the routes that point at it.
    ReleaseRoutes,
    /// End its unfinished build (failed, or cancelled), freeing its slot.
    EndBuild,
}

/// Runs the compensations in reverse. The pipeline's own error is what the
/// caller sees; a compensation that cannot finish (the invocation is
/// cancelled while it retries) is logged.
pub(in crate::services::deploy) async fn unwind(
    db: &MySqlPool,
    ctx: &ObjectContext<'_>,
    deployment_id: &str,
    environment_id: &str,
    undo: Vec<Undo>,
    error: &TerminalError,
) {
    let cancelled = error.code() == CANCELLED;
    for step in undo.into_iter().rev() {
        let done = match step {
            Undo::ForgetAwakeable => {
                ctx.clear(READINESS_AWAKEABLE);
                Ok(())
            }
            Undo::StopInstances => {
                retire(ctx, deployment_id, Duration::ZERO, true);
                Ok(())
            }
            Undo::ReleaseRoutes => ctx
                .object_client::<RoutingObjectClient<'_>>(environment_id)
                .release(Json(ReleaseRoutes {
                    deployment_id: deployment_id.to_owned(),
                }))
                .call()
                .await
                .map(|_| ()),
            Undo::EndBuild => end_build(db, ctx, deployment_id, cancelled, error).await,
            Undo::MarkFailed if cancelled => {
                end(
                    db,
                    ctx,
                    deployment_id,
                    DeploymentStatus::Cancelled,
                    "Cancelled",
                )
                .await
            }
            Undo::MarkFailed => mark_failed(db, ctx, deployment_id, error.message()).await,
        };
        if let Err(e) = done {
            tracing::error!(%deployment_id, compensation = ?step, error = %e.message(), "compensation failed");
        }
    }
}

/// Ends the deployment's build if it has not ended: cancelled when the
/// deployment was (or stopped being active), else failed with the error.
async fn end_build(
    db: &MySqlPool,
    ctx: &ObjectContext<'_>,
    deployment_id: &str,
    cancelled: bool,
    error: &TerminalError,
) -> Result<(), TerminalError> {
    use ctrl_db::types::BuildStatus;
    let gone = cancelled || error.code() == crate::errors::WorkflowError::NoLongerActive.code();
    let (status, why) = if gone {
        (
            BuildStatus::Cancelled,
            "The deployment was cancelled or replaced".to_owned(),
        )
    } else {
        (BuildStatus::Failed, error.message().to_owned())
    };
    let (pool, id) = (db.clone(), deployment_id.to_owned());
    ctx.run(|| async move {
        if let Some(b) = ctrl_db::build::for_deployment(&pool, &id)
            .await
            .map_err(db_error)?
        {
            ctrl_db::build::end(&pool, &b.id, status, &why, now_ms())
                .await
                .map_err(db_error)?;
        }
        Ok(())
    })
    .name("[compensation] end build")
    .retry_policy(compensation_retry())
    .await
}

/// Marks the deployment failed with `why` (its running steps too), unless
/// it already reached a terminal status; retried until the database takes it.
pub(in crate::services::deploy) async fn mark_failed(
    db: &MySqlPool,
    ctx: &ObjectContext<'_>,
    deployment_id: &str,
    why: &str,
) -> Result<(), TerminalError> {
    end(db, ctx, deployment_id, DeploymentStatus::Failed, why).await
}

async fn end(
    db: &MySqlPool,
    ctx: &ObjectContext<'_>,
    deployment_id: &str,
    status: DeploymentStatus,
    message: &str,
) -> Result<(), TerminalError> {
    let (pool, id, message) = (db.clone(), deployment_id.to_owned(), message.to_owned());
    ctx.run(|| async move {
        let now = now_ms();
        let mut tx = begin(&pool).await?;
        deployment::end_running_steps(&mut *tx, &id, &message, now)
            .await
            .map_err(db_error)?;
        deployment::set_status_if_active(&mut *tx, &id, status, Some(&message), now)
            .await
            .map_err(db_error)?;
        commit(tx).await?;
        Ok(())
    })
    .name("[compensation] mark failed")
    .retry_policy(compensation_retry())
    .await
}
