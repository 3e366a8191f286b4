//! Rollback and Promote.
//!
//! Rollback runs on the Deploy object of the deployment that is live now
//! and Promote on the target's, and both move traffic through
//! `Routing(environment)` in one short transaction — so neither ever waits
//! behind a newer deployment's pipeline that is waiting for instances.

use std::time::Duration;

use ctrl_core::domains::Sticky;
use ctrl_core::gate::{self, AppFacts, DeploymentFacts};
use ctrl_core::workflows::{LiveSwap, PromoteInput, RollbackInput};
use ctrl_db::types::EnvironmentKind;
use ctrl_db::{deployment, route, tenancy};
use restate_sdk::prelude::*;
use serde::{Deserialize, Serialize};
use sqlx::MySqlPool;

use super::retire;
use crate::errors::{WorkflowError, db_error};
use crate::services::deployment::DeploymentObjectClient;
use crate::services::routing::{RoutingObjectClient, SwapLive};

/// What the deploy-gate rules and the swap need, read in one `ctx.run`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LiveContext {
    app_id: String,
    environment_id: String,
    live_deployment_id: Option<String>,
    is_rolled_back: bool,
    /// (id, project, app, environment, status, desired state, production?)
    deployments: Vec<GateRow>,
    /// The environment's live and environment routes.
    route_ids: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct GateRow {
    id: String,
    project_id: String,
    app_id: String,
    environment_id: String,
    status: String,
    desired_state: String,
    is_production: bool,
}

impl GateRow {
    fn facts(&self) -> Result<DeploymentFacts<'_>, HandlerError> {
        let corrupt = |e: ctrl_core::status::UnknownName| {
            HandlerError::from(WorkflowError::Internal(e.to_string()))
        };
        Ok(DeploymentFacts {
            id: &self.id,
            project_id: &self.project_id,
            app_id: &self.app_id,
            environment_id: &self.environment_id,
            status: self.status.parse().map_err(corrupt)?,
            desired_state: self.desired_state.parse().map_err(corrupt)?,
            is_production: self.is_production,
        })
    }
}

impl LiveContext {
    fn app(&self) -> AppFacts<'_> {
        AppFacts {
            live_deployment_id: self.live_deployment_id.as_deref(),
            is_rolled_back: self.is_rolled_back,
        }
    }

    /// Moves the live pointer and the live/environment routes to `target`
    /// through `Routing(environment)`, and drops the target's pending
    /// retirement (it is live now). Returns what was live before.
    async fn swap(
        &self,
        ctx: &ObjectContext<'_>,
        target: &str,
        rolled_back: bool,
    ) -> Result<String, TerminalError> {
        let swap = SwapLive {
            app_id: self.app_id.clone(),
            deployment_id: target.to_owned(),
            route_ids: self.route_ids.clone(),
            rolled_back,
            // The same across replays of this invocation: the swap's record
            // in the app row.
            operation_id: format!("{}:swap", ctx.invocation_id()),
        };
        let Json(swapped) = ctx
            .object_client::<RoutingObjectClient<'_>>(&self.environment_id)
            .swap(Json(swap))
            .call()
            .await?;
        ctx.object_client::<DeploymentObjectClient<'_>>(target)
            .clear()
            .send();
        Ok(swapped.previous_deployment_id)
    }
}

/// Loads the target, the app's live deployment and (for a rollback) the
/// given source, plus the routes that follow the live deployment.
async fn load(
    db: &MySqlPool,
    target_id: &str,
    source_id: Option<&str>,
) -> Result<LiveContext, HandlerError> {
    let row = |d: deployment::Deployment, is_production: bool| GateRow {
        id: d.id,
        project_id: d.project_id,
        app_id: d.app_id,
        environment_id: d.environment_id,
        status: d.status.as_str().into(),
        desired_state: d.desired_state.as_str().into(),
        is_production,
    };
    let target = deployment::get(db, target_id).await.map_err(db_error)?;
    let env = tenancy::get_environment(db, &target.environment_id)
        .await
        .map_err(db_error)?;
    let app = tenancy::get_app(db, &target.app_id)
        .await
        .map_err(db_error)?;
    let production = env.kind == EnvironmentKind::Production;
    let routes =
        route::list_by_environment_sticky(db, &env.id, &[Sticky::Live, Sticky::Environment])
            .await
            .map_err(db_error)?;
    let mut deployments = vec![row(target, production)];
    if let Some(source_id) = source_id.filter(|s| *s != target_id) {
        let source = deployment::get(db, source_id).await.map_err(db_error)?;
        let source_env = tenancy::get_environment(db, &source.environment_id)
            .await
            .map_err(db_error)?;
        deployments.push(row(source, source_env.kind == EnvironmentKind::Production));
    }
    Ok(LiveContext {
        app_id: app.id,
        environment_id: env.id,
        live_deployment_id: app.live_deployment_id,
        is_rolled_back: app.is_rolled_back,
        deployments,
        route_ids: routes.into_iter().map(|r| r.id).collect(),
    })
}

fn refused(e: gate::GateError) -> HandlerError {
    WorkflowError::Refused(e.message()).into()
}

/// Moves the app's live traffic back to `target` and freezes
/// auto-promotion. Runs on the live (source) deployment's key.
pub(super) async fn rollback(
    db: &MySqlPool,
    ctx: &ObjectContext<'_>,
    req: RollbackInput,
) -> HandlerResult<Json<LiveSwap>> {
    if req.source_deployment_id != ctx.key() {
        return Err(WorkflowError::WrongKey {
            handler: "Rollback",
            whose: "source",
        }
        .into());
    }
    let db = db.clone();
    let (target_id, source_id) = (
        req.target_deployment_id.clone(),
        req.source_deployment_id.clone(),
    );
    let Json(live) = ctx
        .run(|| async move { load(&db, &target_id, Some(&source_id)).await.map(Json) })
        .name("load rollback context")
        .await?;
    let target = live.deployments[0].facts()?;
    let source = live.deployments.get(1).map(GateRow::facts).transpose()?;
    gate::check_rollback(source.as_ref(), &target, &live.app()).map_err(refused)?;
    let previous = live.swap(ctx, &req.target_deployment_id, true).await?;
    Ok(Json(LiveSwap {
        previous_deployment_id: previous,
    }))
}

/// Makes `target` live and re-enables auto-promotion; the previous live
/// deployment retires after `retire_previous_live`, and so — when the
/// promote confirms a rollback — does every deployment the rollbacks left
/// running (the one rolled back from above all). Runs on the target's key.
pub(super) async fn promote(
    db: &MySqlPool,
    ctx: &ObjectContext<'_>,
    req: PromoteInput,
    retire_previous_live: Duration,
) -> HandlerResult<Json<LiveSwap>> {
    if req.target_deployment_id != ctx.key() {
        return Err(WorkflowError::WrongKey {
            handler: "Promote",
            whose: "target",
        }
        .into());
    }
    let (pool, target_id) = (db.clone(), req.target_deployment_id.clone());
    let Json(live) = ctx
        .run(|| async move { load(&pool, &target_id, None).await.map(Json) })
        .name("load promote context")
        .await?;
    gate::check_promote(&live.deployments[0].facts()?, &live.app()).map_err(refused)?;
    let previous = live.swap(ctx, &req.target_deployment_id, false).await?;
    if !previous.is_empty() && previous != req.target_deployment_id {
        retire(ctx, &previous, retire_previous_live, false);
    }
    if live.is_rolled_back {
        let (pool, app, env, target) = (
            db.clone(),
            live.app_id.clone(),
            live.environment_id.clone(),
            req.target_deployment_id.clone(),
        );
        let Json(left) = ctx
            .run(|| async move {
                deployment::list_running_not_live(&pool, &app, &env, &target)
                    .await
                    .map(Json)
                    .map_err(db_error)
            })
            .name("find what the rollback left running")
            .await?;
        for id in left.iter().filter(|id| **id != previous) {
            retire(ctx, id, retire_previous_live, false);
        }
    }
    Ok(Json(LiveSwap {
        previous_deployment_id: previous,
    }))
}
