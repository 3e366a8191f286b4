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

use std::time::Duration;

use ctrl_core::gate;
use ctrl_core::status::DesiredState;
use ctrl_core::workflows::ScheduleDesiredStateChange;
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
    /// Schedules a desired-state change after `delay_millis`.
    #[handler(name = "ScheduleDesiredStateChange")]
    async fn schedule(
        &self,
        mut ctx: ObjectContext<'_>,
        Json(req): Json<ScheduleDesiredStateChange>,
    ) -> HandlerResult<()> {
        let state = parse_state(&req.state)?;
        if !req.overwrite && ctx.get::<Json<Transition>>(TRANSITION).await?.is_some() {
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
            .send_after(Duration::from_millis(req.delay_millis));
        Ok(())
    }

    /// Applies a scheduled change if it is still the current one.
    #[handler(name = "ChangeDesiredState")]
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
    #[handler(name = "ClearScheduledStateChanges")]
    async fn clear(&self, ctx: ObjectContext<'_>) -> HandlerResult<()> {
        ctx.clear(TRANSITION);
        Ok(())
    }
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
