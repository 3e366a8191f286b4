//! `Deployment` (virtual object keyed by deployment id): serialised,
//! delayable changes of a deployment's desired state.
//!
//! `ScheduleDesiredStateChange` stores the transition under a fresh nonce and
//! sends itself `ChangeDesiredState` after the delay; a later schedule
//! replaces the nonce, so only the last one takes effect (last writer wins),
//! and `ClearScheduledStateChanges` makes a pending change a no-op. Applying
//! a change updates the deployment and its per-region topology rows (each
//! with a new region version) in one transaction. The app's live deployment
//! can never be stopped.
//!
//! Only `Stop` is reachable from Restate's ingress (ctrl-api's
//! StopDeployment): it re-checks the user's stop rules against the database
//! itself. Scheduling (the pipeline's retirements), applying and clearing
//! are ingress-private: only the worker's own handlers call them.

use std::time::Duration;

use ctrl_core::gate;
use ctrl_core::status::DesiredState;
use ctrl_core::workflows::{ScheduleDesiredStateChange, StopInput};
use ctrl_db::types::EnvironmentKind;
use ctrl_db::{deployment, tenancy};
use restate_sdk::prelude::*;
use serde::{Deserialize, Serialize};
use sqlx::MySqlPool;

use crate::errors::{WorkflowError, begin, commit, db_error, now_ms};

const TRANSITION: &str = "transition";

/// A scheduled change, as stored in the object's state.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Transition {
    nonce: String,
    state: String,
}

/// Input of `ChangeDesiredState` (sent by the object to itself).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChangeDesiredState {
    /// Must match the stored transition's nonce, or the change is stale.
    pub nonce: String,
    /// `"running"` or `"stopped"`.
    pub state: String,
}

/// The Deployment object.
#[derive(Debug, Clone)]
pub struct DeploymentObject {
    db: MySqlPool,
}

impl DeploymentObject {
    /// The object over a database pool.
    pub fn new(db: MySqlPool) -> Self {
        Self { db }
    }
}

fn parse_state(state: &str) -> Result<DesiredState, HandlerError> {
    state.parse::<DesiredState>().map_err(|e| {
        WorkflowError::Invalid(format!("state: {e} (expected \"running\" or \"stopped\")")).into()
    })
}

#[restate_sdk::object(name = "Deployment")]
impl DeploymentObject {
    /// Stops the deployment now, if a user may (ctrl-api's StopDeployment):
    /// the stop rules are checked here again, so a call that reaches
    /// Restate's ingress directly gets no further than the API would.
    #[handler(name = "Stop")]
    async fn stop(
        &self,
        mut ctx: ObjectContext<'_>,
        Json(req): Json<StopInput>,
    ) -> HandlerResult<()> {
        let (db, id) = (self.db.clone(), ctx.key().to_owned());
        let Json(refused) = ctx
            .run(|| async move { may_stop(&db, &id).await.map(Json) })
            .name("stop: check the rules")
            .await?;
        if let Some(why) = refused {
            return Err(WorkflowError::Refused(why).into());
        }
        tracing::info!(deployment_id = %ctx.key(), actor = %req.actor, "stop requested");
        schedule_change(&mut ctx, DesiredState::Stopped, 0, true).await
    }

    /// Schedules a desired-state change after `delay_millis`.
    #[handler(name = "ScheduleDesiredStateChange", ingress_private)]
    async fn schedule(
        &self,
        mut ctx: ObjectContext<'_>,
        Json(req): Json<ScheduleDesiredStateChange>,
    ) -> HandlerResult<()> {
        let state = parse_state(&req.state)?;
        schedule_change(&mut ctx, state, req.delay_millis, req.overwrite).await
    }

    /// Applies a scheduled change if it is still the current one.
    #[handler(name = "ChangeDesiredState", ingress_private)]
    async fn change_desired_state(
        &self,
        ctx: ObjectContext<'_>,
        Json(req): Json<ChangeDesiredState>,
    ) -> HandlerResult<()> {
        match ctx.get::<Json<Transition>>(TRANSITION).await? {
            Some(Json(current)) if current.nonce == req.nonce => {}
            _ => return Ok(()), // replaced by a later schedule, or cleared
        }
        let state = parse_state(&req.state)?;
        let db = self.db.clone();
        let id = ctx.key().to_owned();
        let applied = ctx
            .run(|| async move { apply(&db, &id, state).await })
            .name("change desired state")
            .await;
        // Whatever the outcome, this transition is done.
        ctx.clear(TRANSITION);
        applied.map_err(HandlerError::from)
    }

    /// Drops a scheduled change (a pending one becomes a no-op).
    #[handler(name = "ClearScheduledStateChanges", ingress_private)]
    async fn clear(&self, ctx: ObjectContext<'_>) -> HandlerResult<()> {
        ctx.clear(TRANSITION);
        Ok(())
    }
}

/// Stores the transition under a fresh nonce and sends the object its
/// `ChangeDesiredState` after `delay_millis` (`overwrite` false: a change
/// already scheduled stays).
async fn schedule_change(
    ctx: &mut ObjectContext<'_>,
    state: DesiredState,
    delay_millis: u64,
    overwrite: bool,
) -> HandlerResult<()> {
    if !overwrite && ctx.get::<Json<Transition>>(TRANSITION).await?.is_some() {
        return Ok(());
    }
    let nonce = ctx.rand_uuid().to_string();
    ctx.set(
        TRANSITION,
        Json(Transition {
            nonce: nonce.clone(),
            state: state.as_str().into(),
        }),
    );
    ctx.object_client::<DeploymentObjectClient<'_>>(ctx.key())
        .change_desired_state(Json(ChangeDesiredState {
            nonce,
            state: state.as_str().into(),
        }))
        .send_after(Duration::from_millis(delay_millis));
    Ok(())
}

/// The user's stop rules (`gate::check_stop`) on the database's current
/// facts: `Some(why)` when they refuse.
async fn may_stop(db: &MySqlPool, id: &str) -> Result<Option<String>, HandlerError> {
    let d = deployment::get(db, id).await.map_err(db_error)?;
    let app = tenancy::get_app(db, &d.app_id).await.map_err(db_error)?;
    let env = tenancy::get_environment(db, &d.environment_id)
        .await
        .map_err(db_error)?;
    let facts = d.gate_facts(env.kind == EnvironmentKind::Production);
    Ok(gate::check_stop(&facts, &app.gate_facts())
        .err()
        .map(|e| e.message()))
}

/// Sets the deployment's desired state and its topology rows' desired status
/// (new region versions) in one transaction; refuses to stop the live
/// deployment. The decision holds the app's row lock, as every live swap
/// does, so a stop and a rollback to the same deployment never interleave.
async fn apply(db: &MySqlPool, id: &str, state: DesiredState) -> Result<(), HandlerError> {
    let mut tx = begin(db).await?;
    let app_id = deployment::get(&mut *tx, id)
        .await
        .map_err(db_error)?
        .app_id;
    let app = tenancy::lock_app(&mut tx, &app_id)
        .await
        .map_err(db_error)?;
    let d = deployment::get(&mut *tx, id).await.map_err(db_error)?;
    let env = tenancy::get_environment(&mut *tx, &d.environment_id)
        .await
        .map_err(db_error)?;
    let facts = d.gate_facts(env.kind == EnvironmentKind::Production);
    let app_facts = app.gate_facts();
    gate::check_desired_state_change(&facts, &app_facts, state)
        .map_err(|e| HandlerError::from(WorkflowError::Refused(e.message())))?;
    deployment::set_desired_everywhere(&mut tx, id, state, now_ms())
        .await
        .map_err(db_error)?;
    commit(tx).await?;
    tracing::info!(deployment_id = %id, state = state.as_str(), "desired state changed");
    Ok(())
}
