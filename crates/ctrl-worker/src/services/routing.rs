//! `Routing` (virtual object keyed by environment id): every change of an
//! environment's routes and of its app's live pointer goes through here, so
//! concurrent deploys, rollbacks and promotes of one environment apply one
//! at a time. Each handler is one database transaction inside a named
//! `ctx.run`, so it holds the key only for that long.

use ctrl_core::domains::Sticky;
use ctrl_db::{route, tenancy};
use restate_sdk::prelude::*;
use serde::{Deserialize, Serialize};
use sqlx::MySqlPool;

use crate::errors::{begin, commit, db_error, now_ms};

/// Input of `AssignFrontlineRoutes`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AssignRoutes {
    /// The deployment the routes should point at.
    pub deployment_id: String,
    /// The routes (`flr_…`) to move.
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
}

/// Output of `AutoPromote`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AutoPromoted {
    /// False when the app is rolled back (auto-promotion is frozen).
    pub promoted: bool,
    /// The deployment that was live before (empty if none or not promoted).
    pub previous_deployment_id: String,
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
    /// Points routes at a deployment.
    #[handler(name = "AssignFrontlineRoutes")]
    async fn assign(
        &self,
        ctx: ObjectContext<'_>,
        Json(req): Json<AssignRoutes>,
    ) -> HandlerResult<()> {
        let db = self.db.clone();
        ctx.run(|| async move {
            let mut tx = begin(&db).await?;
            route::reassign(&mut tx, &req.route_ids, &req.deployment_id, now_ms())
                .await
                .map_err(db_error)?;
            commit(tx).await?;
            Ok(())
        })
        .name("assign routes")
        .await?;
        Ok(())
    }

    /// Moves the routes and the app's live pointer (with the rolled-back
    /// flag) in one transaction; returns what was live before.
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
                route::reassign(&mut tx, &req.route_ids, &req.deployment_id, now)
                    .await
                    .map_err(db_error)?;
                let previous = tenancy::swap_live_deployment(
                    &mut tx,
                    &req.app_id,
                    &req.deployment_id,
                    req.rolled_back,
                    now,
                )
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

    /// A new production deployment is ready: unless the app is rolled back,
    /// make it live and move the environment's live and environment routes
    /// to it. The flag is read under the app's row lock in the same
    /// transaction as the move, so a concurrent rollback is never undone.
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
                if app.is_rolled_back {
                    return Ok(Json(AutoPromoted::default()));
                }
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
                let previous = tenancy::swap_live_deployment(
                    &mut tx,
                    &req.app_id,
                    &req.deployment_id,
                    false,
                    now,
                )
                .await
                .map_err(db_error)?;
                commit(tx).await?;
                Ok(Json(AutoPromoted {
                    promoted: true,
                    previous_deployment_id: previous.unwrap_or_default(),
                }))
            })
            .name("auto-promote")
            .await?;
        Ok(Json(out))
    }
}
