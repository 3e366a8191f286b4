//! `Deletion` (virtual object keyed by the id of what is deleted): the
//! durable cascade behind DeleteEnvironment, DeleteApp, DeleteProject and
//! DeleteWorkspace.
//!
//! Mark the target and everything below it as deleting (nothing new is
//! created under it from then on) → cancel pipelines still running →
//! stop every deployment at once (so the agents drain them in parallel) →
//! delete each deployment through its own `Deploy/{id}/Delete` (after its
//! pipeline's compensation, never during it) → remove the remaining rows:
//! settings, variables, routes, custom domains, then the tenancy rows.
//! Every step is idempotent: a crash anywhere resumes, and a second
//! deletion of the same target finds less to do.

use ctrl_core::workflows::{DeleteDeploymentInput, DeletionInput};
use ctrl_db::deletion::{self, Scope};
use restate_sdk::prelude::*;
use sqlx::MySqlPool;

use crate::errors::{WorkflowError, begin, commit, db_error, now_ms, step_retry};
use crate::services::deploy::DeployObjectClient;

/// The Deletion object.
#[derive(Debug, Clone)]
pub struct DeletionObject {
    db: MySqlPool,
}

impl DeletionObject {
    /// The object over a database pool.
    pub fn new(db: MySqlPool) -> Self {
        Self { db }
    }
}

#[restate_sdk::object(name = "Deletion")]
impl DeletionObject {
    /// Deletes the environment, app, project or workspace named by the key
    /// with everything below it.
    #[handler(name = "Delete")]
    async fn delete(
        &self,
        ctx: ObjectContext<'_>,
        Json(req): Json<DeletionInput>,
    ) -> HandlerResult<()> {
        if req.id != ctx.key() {
            return Err(WorkflowError::Invalid(
                "Deletion must be invoked on the key of what it deletes".into(),
            )
            .into());
        }
        let Some(scope) = Scope::of(&req.id) else {
            return Err(WorkflowError::Invalid(format!(
                "{} is not an environment, app, project or workspace id",
                req.id
            ))
            .into());
        };
        let (pool, id) = (self.db.clone(), req.id.clone());
        let Json(doomed) = ctx
            .run(|| async move {
                let scope = Scope::of(&id).ok_or_else(|| WorkflowError::Invalid(id.clone()))?;
                let mut tx = begin(&pool).await?;
                let now = now_ms();
                deletion::mark(&mut tx, scope, now)
                    .await
                    .map_err(db_error)?;
                deletion::cancel_unfinished(&mut tx, scope, now)
                    .await
                    .map_err(db_error)?;
                let doomed: Vec<Doomed> = deletion::deployments(&mut *tx, scope)
                    .await
                    .map_err(db_error)?
                    .into_iter()
                    .map(|d| Doomed {
                        id: d.id,
                        status: d.status,
                        invocation_id: d.invocation_id,
                    })
                    .collect();
                commit(tx).await?;
                Ok(Json(doomed))
            })
            .name("mark deleting, list deployments")
            .retry_policy(step_retry())
            .await?;

        // Pipelines still running: cancel them (their compensation runs,
        // then each deployment's Delete, which waits on the same key).
        for d in &doomed {
            if let Some(invocation) = running_pipeline(d) {
                ctx.invocation_handle(invocation.to_owned()).cancel();
            }
        }
        let (pool, ids) = (
            self.db.clone(),
            doomed.iter().map(|d| d.id.clone()).collect::<Vec<_>>(),
        );
        ctx.run(|| async move {
            let now = now_ms();
            let mut tx = begin(&pool).await?;
            for id in &ids {
                deletion::stop_deployment(&mut tx, id, now)
                    .await
                    .map_err(db_error)?;
            }
            commit(tx).await?;
            Ok(())
        })
        .name("stop every deployment")
        .retry_policy(step_retry())
        .await?;
        for d in &doomed {
            ctx.object_client::<DeployObjectClient<'_>>(&d.id)
                .delete(Json(DeleteDeploymentInput {
                    deployment_id: d.id.clone(),
                    cascade: true,
                }))
                .call()
                .await?;
        }

        let (pool, id) = (self.db.clone(), req.id.clone());
        ctx.run(|| async move {
            let scope = Scope::of(&id).ok_or_else(|| WorkflowError::Invalid(id.clone()))?;
            let mut tx = begin(&pool).await?;
            deletion::remove_scope(&mut tx, scope, now_ms())
                .await
                .map_err(db_error)?;
            commit(tx).await?;
            Ok(())
        })
        .name("remove the rest")
        .retry_policy(step_retry())
        .await?;
        tracing::info!(id = %scope.id(), deployments = doomed.len(), "deleted");
        Ok(())
    }
}

/// A deployment the cascade removes, as journaled.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Doomed {
    id: String,
    status: String,
    invocation_id: Option<String>,
}

/// The invocation of a pipeline that has not finished.
fn running_pipeline(d: &Doomed) -> Option<&str> {
    let progressing = d
        .status
        .parse::<ctrl_core::status::DeploymentStatus>()
        .is_ok_and(|s| s.is_progressing());
    d.invocation_id.as_deref().filter(|_| progressing)
}
