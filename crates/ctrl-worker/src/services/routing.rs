//! `Routing` (virtual object keyed by environment id): every change of an
//! environment's routes and of its app's live pointer goes through here, so
//! concurrent deploys, rollbacks and promotes of one environment apply one
//! at a time. Each handler is one database transaction inside a named
//! `ctx.run`, so it holds the key only for that long.
//!
//! **Newest wins:** automatic moves (`AssignFrontlineRoutes`, `AutoPromote`)
//! only ever go forward in creation order; only the explicit
//! `SwapLiveDeployment` (Rollback, Promote) may go back.

use ctrl_core::domains::Sticky;
use ctrl_core::status::{DeploymentStatus, DesiredState};
use ctrl_db::{deployment, route, tenancy};
use restate_sdk::prelude::*;
use serde::{Deserialize, Serialize};
use sqlx::{MySqlConnection, MySqlPool};

use crate::errors::{begin, commit, db_error, now_ms};

/// Input of `AssignFrontlineRoutes`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AssignRoutes {
    /// The deployment the routes should point at.
    pub deployment_id: String,
    /// The routes (`flr_…`) to move (those on a newer deployment stay).
    pub route_ids: Vec<String>,
}

/// Input of `SwapLiveDeployment`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SwapLive {
    /// The app whose live pointer moves.
    pub app_id: String,
    /// The deployment to make live.
    pub deployment_id: String,
    /// The live and environment routes to move with it.
    pub route_ids: Vec<String>,
    /// True for a rollback (freezes auto-promotion), false for a promote.
    pub rolled_back: bool,
    /// Identifies this swap: stored with it, so a replay answers the same.
    pub operation_id: String,
}

/// Output of `SwapLiveDeployment`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Swapped {
    /// The deployment that was live before (empty if none).
    pub previous_deployment_id: String,
}

/// Input of `AutoPromote`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AutoPromote {
    /// The app whose live pointer may move.
    pub app_id: String,
    /// The freshly ready deployment.
    pub deployment_id: String,
    /// Identifies this promotion: stored with the swap, so a replay answers the same.
    pub operation_id: String,
}

/// What `AutoPromote` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Promotion {
    /// The deployment is live now.
    Promoted,
    /// The app is rolled back: auto-promotion is frozen.
    #[default]
    RolledBack,
    /// A newer deployment of the app is live already.
    NewerIsLive,
}

/// Output of `AutoPromote`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AutoPromoted {
    /// What happened.
    pub outcome: Promotion,
    /// The deployment that was live before (empty if none or not promoted).
    pub previous_deployment_id: String,
}

/// Input of `ReleaseRoutes`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleaseRoutes {
    /// The failed or cancelled deployment.
    pub deployment_id: String,
}

/// The Routing object.
#[derive(Debug, Clone)]
pub struct RoutingObject {
    db: MySqlPool,
}

impl RoutingObject {
    /// The object over a database pool.
    pub fn new(db: MySqlPool) -> Self {
        Self { db }
    }
}

#[restate_sdk::object(name = "Routing")]
impl RoutingObject {
    /// Points routes at a deployment — those whose deployment is older.
    #[handler(name = "AssignFrontlineRoutes")]
    async fn assign(
        &self,
        ctx: ObjectContext<'_>,
        Json(req): Json<AssignRoutes>,
    ) -> HandlerResult<()> {
        let db = self.db.clone();
        ctx.run(|| async move {
            let mut tx = begin(&db).await?;
            route::reassign_forward(&mut tx, &req.route_ids, &req.deployment_id, now_ms())
                .await
                .map_err(db_error)?;
            commit(tx).await?;
            Ok(())
        })
        .name("assign routes")
        .await?;
        Ok(())
    }

    /// Moves the app's live pointer (with the rolled-back flag) and the
    /// routes in one transaction; returns what was live before.
    #[handler(name = "SwapLiveDeployment")]
    async fn swap(
        &self,
        ctx: ObjectContext<'_>,
        Json(req): Json<SwapLive>,
    ) -> HandlerResult<Json<Swapped>> {
        let db = self.db.clone();
        let previous = ctx
            .run(|| async move {
                let now = now_ms();
                let mut tx = begin(&db).await?;
                let previous = make_live(
                    &mut tx,
                    &req.app_id,
                    &req.deployment_id,
                    req.rolled_back,
                    &req.operation_id,
                    now,
                )
                .await?;
                route::reassign(&mut tx, &req.route_ids, &req.deployment_id, now)
                    .await
                    .map_err(db_error)?;
                commit(tx).await?;
                Ok(previous.unwrap_or_default())
            })
            .name("swap live deployment")
            .await?;
        Ok(Json(Swapped {
            previous_deployment_id: previous,
        }))
    }

    /// A new production deployment is ready: unless the app is rolled back
    /// or a newer deployment is live already, make it live and move the
    /// environment's live and environment routes to it. Both are decided
    /// under the app's row lock in the same transaction as the move, so a
    /// concurrent rollback is never undone.
    #[handler(name = "AutoPromote")]
    async fn auto_promote(
        &self,
        ctx: ObjectContext<'_>,
        Json(req): Json<AutoPromote>,
    ) -> HandlerResult<Json<AutoPromoted>> {
        let db = self.db.clone();
        let environment_id = ctx.key().to_owned();
        let Json(out) = ctx
            .run(|| async move {
                let now = now_ms();
                let mut tx = begin(&db).await?;
                let app = tenancy::lock_app(&mut tx, &req.app_id)
                    .await
                    .map_err(db_error)?;
                // A replay of our own committed promotion answers as before.
                let replayed = app.live_swap_id.as_deref() == Some(req.operation_id.as_str());
                if !replayed {
                    if app.is_rolled_back {
                        return Ok(Json(AutoPromoted::default()));
                    }
                    if let Some(live) = &app.live_deployment_id
                        && live != &req.deployment_id
                        && deployment::is_newer(&mut *tx, live, &req.deployment_id)
                            .await
                            .map_err(db_error)?
                    {
                        return Ok(Json(AutoPromoted {
                            outcome: Promotion::NewerIsLive,
                            previous_deployment_id: String::new(),
                        }));
                    }
                }
                let previous = make_live(
                    &mut tx,
                    &req.app_id,
                    &req.deployment_id,
                    false,
                    &req.operation_id,
                    now,
                )
                .await?;
                let routes = route::list_by_environment_sticky(
                    &mut *tx,
                    &environment_id,
                    &[Sticky::Live, Sticky::Environment],
                )
                .await
                .map_err(db_error)?;
                let ids: Vec<String> = routes.into_iter().map(|r| r.id).collect();
                route::reassign(&mut tx, &ids, &req.deployment_id, now)
                    .await
                    .map_err(db_error)?;
                commit(tx).await?;
                Ok(Json(AutoPromoted {
                    outcome: Promotion::Promoted,
                    previous_deployment_id: previous.unwrap_or_default(),
                }))
            })
            .name("auto-promote")
            .await?;
        Ok(Json(out))
    }

    /// Takes the routes off a failed or cancelled deployment (back to the
    /// newest ready one of their branch or environment, or deleted).
    #[handler(name = "ReleaseRoutes")]
    async fn release(
        &self,
        ctx: ObjectContext<'_>,
        Json(req): Json<ReleaseRoutes>,
    ) -> HandlerResult<()> {
        let db = self.db.clone();
        ctx.run(|| async move {
            let mut tx = begin(&db).await?;
            let (moved, deleted) = route::release(&mut tx, &req.deployment_id, now_ms())
                .await
                .map_err(db_error)?;
            commit(tx).await?;
            if moved + deleted > 0 {
                tracing::info!(deployment_id = %req.deployment_id, moved, deleted, "routes released");
            }
            Ok(())
        })
        .name("release routes")
        .await?;
        Ok(())
    }
}

/// Points the app's live pointer at `deployment_id` (under `operation_id`,
/// see `tenancy::swap_live_deployment`) and makes sure it runs: a
/// retirement that stopped it while the swap waited for this key is undone
/// in the same transaction, so the live deployment never ends up stopped.
/// (`Deployment` decides its stops under the same app row lock.)
async fn make_live(
    tx: &mut MySqlConnection,
    app_id: &str,
    deployment_id: &str,
    rolled_back: bool,
    operation_id: &str,
    now: i64,
) -> Result<Option<String>, HandlerError> {
    let previous = tenancy::swap_live_deployment(
        &mut *tx,
        app_id,
        deployment_id,
        rolled_back,
        operation_id,
        now,
    )
    .await
    .map_err(db_error)?;
    let d = deployment::get(&mut *tx, deployment_id)
        .await
        .map_err(db_error)?;
    if d.desired_state == DesiredState::Stopped {
        tracing::warn!(%deployment_id, "the new live deployment was being stopped: running it again");
        deployment::set_desired_everywhere(&mut *tx, deployment_id, DesiredState::Running, now)
            .await
            .map_err(db_error)?;
        deployment::compare_and_set_status(
            &mut *tx,
            deployment_id,
            DeploymentStatus::Stopped,
            DeploymentStatus::Ready,
            now,
        )
        .await
        .map_err(db_error)?;
    }
    Ok(previous)
}
