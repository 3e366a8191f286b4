//! Deleting one deployment (`Deploy/{id}/Delete`), on its own key so it
//! never overlaps its pipeline or a wake: in one transaction under the
//! app's row lock, refuse the live deployment (unless a cascade deletes its
//! app), cancel it if it never finished, stop it everywhere and release its
//! routes; then wait until the agents report no instance (bounded by
//! `deploy.delete_drain_seconds`); then remove its rows. Every step is
//! idempotent, so a crash anywhere resumes.

use std::time::Duration;

use ctrl_core::gate;
use ctrl_core::status::DeploymentStatus;
use ctrl_core::workflows::DeleteDeploymentInput;
use ctrl_db::types::EnvironmentKind;
use ctrl_db::{deletion, deployment, route, tenancy};
use restate_sdk::prelude::*;
use serde::{Deserialize, Serialize};
use sqlx::MySqlPool;

use super::{DeploySettings, READINESS_AWAKEABLE};
use crate::errors::{WorkflowError, begin, commit, db_error, now_ms, step_retry};
use crate::services::deployment::DeploymentObjectClient;

/// Shown on a deployment deleted before it finished.
const DELETED: &str = "Deleted";

/// How often the drain is checked.
const DRAIN_CHECK: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Stopped {
    /// Stopping; wait for the instances, then remove.
    Stopping,
    /// Nothing to do: it is gone already.
    Gone,
    /// A rule forbids it: why.
    Refused(String),
}

pub(super) async fn run(
    db: &MySqlPool,
    settings: &DeploySettings,
    ctx: &ObjectContext<'_>,
    req: DeleteDeploymentInput,
) -> HandlerResult<()> {
    if req.deployment_id != ctx.key() {
        return Err(WorkflowError::WrongKey {
            handler: "Delete",
            whose: "own",
        }
        .into());
    }
    let id = req.deployment_id;
    let (pool, id_, cascade) = (db.clone(), id.clone(), req.cascade);
    let Json(stopped) = ctx
        .run(|| async move { stop(&pool, &id_, cascade).await.map(Json) })
        .name("delete: stop everywhere")
        .retry_policy(step_retry())
        .await?;
    match stopped {
        Stopped::Gone => return Ok(()),
        Stopped::Refused(why) => return Err(WorkflowError::Refused(why).into()),
        Stopped::Stopping => {}
    }
    ctx.clear(READINESS_AWAKEABLE);
    ctx.object_client::<DeploymentObjectClient<'_>>(&id)
        .clear()
        .send();

    // The agents remove the workload; wait until they say so (bounded: an
    // agent that is away removes it on its next snapshot instead).
    let mut waited = Duration::ZERO;
    loop {
        let (pool, id_) = (db.clone(), id.clone());
        let left = ctx
            .run(|| async move {
                deletion::instances_left(&pool, &id_)
                    .await
                    .map_err(db_error)
            })
            .name("delete: instances left")
            .retry_policy(step_retry())
            .await?;
        if left == 0 {
            break;
        }
        if waited >= settings.delete_drain {
            tracing::warn!(deployment_id = %id, left, "instances still reported after the drain wait; removing the deployment anyway");
            break;
        }
        ctx.sleep(DRAIN_CHECK).await?;
        waited += DRAIN_CHECK;
    }

    let (pool, id_) = (db.clone(), id.clone());
    ctx.run(|| async move {
        let mut tx = begin(&pool).await?;
        deletion::remove_deployment(&mut tx, &id_, now_ms())
            .await
            .map_err(db_error)?;
        commit(tx).await?;
        Ok(())
    })
    .name("delete: remove rows")
    .retry_policy(step_retry())
    .await?;
    tracing::info!(deployment_id = %id, "deployment deleted");
    Ok(())
}

/// Whether the environment, its app, project or workspace is marked for
/// deletion (what a deletion cascade does first).
async fn parent_deleting(
    tx: &mut sqlx::MySqlConnection,
    env: &tenancy::Environment,
    app: &tenancy::App,
) -> Result<bool, HandlerError> {
    if env.deleting_at.is_some() || app.deleting_at.is_some() {
        return Ok(true);
    }
    // A parent already gone was deleted, too.
    let project = match tenancy::get_project(&mut *tx, &app.project_id).await {
        Ok(p) => p.deleting_at.is_some(),
        Err(ctrl_db::Error::NotFound(_)) => true,
        Err(e) => return Err(db_error(e)),
    };
    if project {
        return Ok(true);
    }
    match tenancy::get_workspace(&mut *tx, &app.workspace_id).await {
        Ok(w) => Ok(w.deleting_at.is_some()),
        Err(ctrl_db::Error::NotFound(_)) => Ok(true),
        Err(e) => Err(db_error(e)),
    }
}

/// The rule check and the stop, in one transaction under the app's lock.
async fn stop(db: &MySqlPool, id: &str, cascade: bool) -> Result<Stopped, HandlerError> {
    let now = now_ms();
    let mut tx = begin(db).await?;
    let d = match deployment::get(&mut *tx, id).await {
        Ok(d) => d,
        Err(ctrl_db::Error::NotFound(_)) => return Ok(Stopped::Gone),
        Err(e) => return Err(db_error(e)),
    };
    let app = tenancy::lock_app(&mut tx, &d.app_id)
        .await
        .map_err(db_error)?;
    let env = tenancy::get_environment(&mut *tx, &d.environment_id)
        .await
        .map_err(db_error)?;
    // A cascade skips the rules only while one of the deployment's parents
    // is really being deleted (the handler is reachable from the ingress).
    let cascade = cascade && parent_deleting(&mut tx, &env, &app).await?;
    if !cascade {
        let facts = d.gate_facts(env.kind == EnvironmentKind::Production);
        let app_facts = app.gate_facts();
        if let Err(e) = gate::check_delete(&facts, &app_facts) {
            return Ok(Stopped::Refused(e.message()));
        }
    }
    if d.status.is_progressing() {
        deployment::end_running_steps(&mut *tx, id, DELETED, now)
            .await
            .map_err(db_error)?;
        deployment::set_status_if_active(
            &mut *tx,
            id,
            DeploymentStatus::Cancelled,
            Some(DELETED),
            now,
        )
        .await
        .map_err(db_error)?;
    }
    deletion::stop_deployment(&mut tx, id, now)
        .await
        .map_err(db_error)?;
    route::release(&mut tx, id, now).await.map_err(db_error)?;
    commit(tx).await?;
    Ok(Stopped::Stopping)
}
