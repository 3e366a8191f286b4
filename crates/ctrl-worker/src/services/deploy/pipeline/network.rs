//! Network: the deployment's hostnames and routes.

use ctrl_core::domains::{ExistingRoute, GeneratedHost, HostInputs, Sticky, generate_hosts};
use ctrl_core::id::{IdKind, generate};
use ctrl_core::status::DeploymentStatus;
use ctrl_db::route::NewRoute;
use ctrl_db::{deployment, route};
use restate_sdk::prelude::*;
use serde::{Deserialize, Serialize};
use sqlx::MySqlPool;

use super::compensation::Undo;
use super::{Plan, steps};
use crate::errors::{WorkflowError, db_error, now_ms, step_retry};
use crate::services::deploy::DeploySettings;
use crate::services::routing::{AssignRoutes, RoutingObjectClient};

/// A generated hostname's route, found or created.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ClaimedRoute {
    id: String,
    /// A live or environment route (moves with the live pointer in production).
    follows_live: bool,
}

/// Finds or creates a route per generated hostname and moves the branch and
/// environment routes to the deployment — forward only (`Routing`), so an
/// older deployment never takes them from a newer one. In production, live
/// and environment routes move only with the live pointer (finalizing).
pub(super) async fn assign_routes(
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
        DeploymentStatus::Network,
        "Assigning hostnames",
    )
    .await?;
    let hosts = generate_hosts(&HostInputs {
        apex: &settings.apex_domain,
        workspace_slug: &plan.workspace_slug,
        project_slug: &plan.project_slug,
        app_slug: &plan.app_slug,
        environment_slug: &plan.environment_slug,
        environment_id: &plan.environment_id,
        is_production: plan.is_production,
        deployment_id: &plan.deployment_id,
        git_commit_sha: plan.git_commit_sha.as_deref(),
        git_branch: plan.git_branch.as_deref(),
        fork_owner: plan.fork_owner.as_deref(),
        unique_commit_host: plan.from_cli,
    })
    .map_err(|e| WorkflowError::Internal(format!("cannot name the deployment: {e}")))?;
    // From here on, routes may point at this deployment: a failure or a
    // cancel must take them off it again.
    undo.push(Undo::ReleaseRoutes);
    let mut to_assign = Vec::new();
    for host in hosts {
        let (pool, plan_, fqdn) = (db.clone(), plan.clone(), host.fqdn.clone());
        let Json(claimed) = ctx
            .run(|| async move { claim_route(&pool, &plan_, &host).await.map(Json) })
            .name(format!("route {fqdn}"))
            .retry_policy(step_retry())
            .await?;
        match claimed {
            Some(r) if r.follows_live && plan.is_production => {}
            Some(r) => to_assign.push(r.id),
            None => tracing::warn!(%fqdn, "hostname and its fallback belong to others; skipped"),
        }
    }
    if !plan.is_production {
        let (pool, environment_id) = (db.clone(), plan.environment_id.clone());
        let Json(ids) = ctx
            .run(|| async move {
                let routes = route::list_by_environment_sticky(
                    &pool,
                    &environment_id,
                    &[Sticky::Environment],
                )
                .await
                .map_err(db_error)?;
                Ok(Json(routes.into_iter().map(|r| r.id).collect::<Vec<_>>()))
            })
            .name("find environment routes")
            .retry_policy(step_retry())
            .await?;
        for id in ids {
            if !to_assign.contains(&id) {
                to_assign.push(id);
            }
        }
    }
    ctx.object_client::<RoutingObjectClient<'_>>(&plan.environment_id)
        .assign(Json(AssignRoutes {
            deployment_id: plan.deployment_id.clone(),
            route_ids: to_assign,
        }))
        .call()
        .await?;
    Ok(())
}

/// Finds or creates the route for a generated hostname: the readable name if
/// it is free or already this owner's, else the owner's fallback name.
/// Returns the route id and stickiness, or `None` if both are taken.
async fn claim_route(
    db: &MySqlPool,
    plan: &Plan,
    host: &GeneratedHost,
) -> Result<Option<ClaimedRoute>, HandlerError> {
    for fqdn in [&host.fqdn, &host.fallback_fqdn] {
        let Some(existing) = route::find_by_fqdn(db, fqdn).await.map_err(db_error)? else {
            let id = generate(IdKind::FrontlineRoute, &mut rand::rng());
            let new = NewRoute {
                id: &id,
                workspace_id: &plan.workspace_id,
                project_id: &plan.project_id,
                app_id: &plan.app_id,
                environment_id: &plan.environment_id,
                deployment_id: &plan.deployment_id,
                fqdn,
                sticky: host.sticky,
            };
            match route::insert(db, &new, now_ms()).await {
                Ok(()) => {}
                // Inserted concurrently: retrying finds it.
                Err(e @ ctrl_db::Error::AlreadyExists { .. }) => {
                    return Err(HandlerError::from(e.to_string()));
                }
                Err(e) => return Err(db_error(e)),
            }
            return Ok(Some(ClaimedRoute {
                id,
                follows_live: follows_live(host.sticky),
            }));
        };
        let target = match deployment::get(db, &existing.deployment_id).await {
            Ok(d) => Some(d),
            Err(ctrl_db::Error::NotFound(_)) => None,
            Err(e) => return Err(db_error(e)),
        };
        let owned = host.owner.owns(&ExistingRoute {
            environment_id: &existing.environment_id,
            sticky: existing.sticky,
            deployment_id: &existing.deployment_id,
            git_commit_sha: target.as_ref().and_then(|d| d.git_commit_sha.as_deref()),
            git_branch: target.as_ref().and_then(|d| d.git_branch.as_deref()),
        });
        if owned {
            return Ok(Some(ClaimedRoute {
                follows_live: follows_live(existing.sticky),
                id: existing.id,
            }));
        }
    }
    Ok(None)
}

fn follows_live(sticky: Sticky) -> bool {
    matches!(sticky, Sticky::Live | Sticky::Environment)
}
