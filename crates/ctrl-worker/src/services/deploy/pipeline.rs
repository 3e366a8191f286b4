//! The deployment pipeline (`Deploy/{id}/Deploy`):
//!
//! claim (pending → starting, superseding) → building (image) → deploying
//! (topology and network policy per schedulable region, then wait for
//! instances) → network (hostnames and routes) → finalizing (ready, then
//! auto-promote in production or retire older previews of the branch).
//!
//! Every side effect is a named `ctx.run` with bounded retries
//! ([`step_retry`]); each phase is a `deployment_steps` row and a status.
//! On a terminal failure or a cancel, the compensations registered so far
//! run in reverse: stop the instances, mark the deployment failed (or
//! cancelled) unless it already reached a terminal status.

use std::time::Duration;

use ctrl_core::domains::{ExistingRoute, GeneratedHost, HostInputs, Sticky, generate_hosts};
use ctrl_core::id::{IdKind, generate};
use ctrl_core::status::{DeploymentStatus, StepKind, enough_regions_ready};
use ctrl_core::workflows::DeployInput;
use ctrl_db::route::NewRoute;
use ctrl_db::topology::{NetworkPolicy, NewTopology};
use ctrl_db::types::{EnvironmentKind, SourceKind, TriggerKind};
use ctrl_db::{deployment, instance, route, settings, tenancy, topology};
use restate_sdk::prelude::*;
use serde::{Deserialize, Serialize};
use sqlx::MySqlPool;

use super::{DeploySettings, READINESS_AWAKEABLE, retire};
use crate::errors::{begin, commit, db_error, now_ms, step_retry};
use crate::services::routing::{AssignRoutes, AutoPromote, RoutingObjectClient};

/// Stamped on the steps and status of deployments a newer commit replaced.
/// (The dashboard matches this exact string.)
pub const SUPERSEDED: &str = "Superseded by newer commit";

/// Restate's status code for a cancelled invocation; the pipeline never
/// uses it for anything else.
const CANCELLED: u16 = 409;

/// Everything the later steps need, loaded once and journaled.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Plan {
    deployment_id: String,
    workspace_id: String,
    project_id: String,
    app_id: String,
    environment_id: String,
    k8s_name: String,
    namespace: String,
    image: Option<String>,
    from_git: bool,
    port: i32,
    git_commit_sha: Option<String>,
    git_branch: Option<String>,
    fork_owner: Option<String>,
    from_cli: bool,
    workspace_slug: String,
    project_slug: String,
    app_slug: String,
    environment_slug: String,
    is_production: bool,
}

/// The outcome of claiming a deployment.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Claim {
    /// It was pending and is now starting.
    Started(Box<Plan>),
    /// Nothing to do (superseded, cancelled, already finished): why.
    Skipped(String),
}

/// A generated hostname's route, found or created.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ClaimedRoute {
    id: String,
    /// A live or environment route (moves with the live pointer in production).
    follows_live: bool,
}

/// What to undo when the pipeline fails, in reverse order of registration.
#[derive(Debug, Clone, Copy)]
enum Undo {
    MarkFailed,
    StopInstances,
    ForgetAwakeable,
}

/// Runs the pipeline of `req.deployment_id` (the object's key).
pub(super) async fn run(
    db: &MySqlPool,
    settings: &DeploySettings,
    ctx: &ObjectContext<'_>,
    req: DeployInput,
) -> HandlerResult<()> {
    if req.deployment_id != ctx.key() {
        return Err(TerminalError::new_with_code(
            400,
            "Deploy must be invoked on the deployment's own key",
        )
        .into());
    }
    let (pool, id) = (db.clone(), req.deployment_id.clone());
    let Json(claimed) = ctx
        .run(|| async move { claim(&pool, &id).await.map(Json) })
        .name("claim deployment")
        .retry_policy(step_retry())
        .await?;
    let plan = match claimed {
        Claim::Started(plan) => *plan,
        Claim::Skipped(why) => {
            tracing::info!(deployment_id = %req.deployment_id, %why, "deployment skipped");
            return Ok(());
        }
    };
    let mut undo = vec![Undo::MarkFailed];
    match phases(db, settings, ctx, &plan, &mut undo).await {
        Ok(()) => Ok(()),
        Err(e) => {
            tracing::warn!(deployment_id = %plan.deployment_id, error = %e.message(), "deployment failed");
            unwind(db, ctx, &plan, undo, &e).await;
            Err(e.into())
        }
    }
}

/// The phases after the claim; any error ends the pipeline.
async fn phases(
    db: &MySqlPool,
    settings: &DeploySettings,
    ctx: &ObjectContext<'_>,
    plan: &Plan,
    undo: &mut Vec<Undo>,
) -> Result<(), TerminalError> {
    // Building: a given image is used as is; git builds plug in here.
    let image = match (&plan.image, plan.from_git) {
        (Some(image), _) => image.clone(),
        (None, true) => {
            return Err(TerminalError::new_with_code(
                501,
                "Building from a git repository is not available yet; deploy an image.",
            ));
        }
        (None, false) => {
            return Err(TerminalError::new_with_code(
                400,
                "The deployment has neither an image nor a git source.",
            ));
        }
    };
    advance(
        db,
        ctx,
        plan,
        DeploymentStatus::Building,
        &format!("Using image {image}"),
    )
    .await?;

    // Deploying: desired state per region, then wait for instances.
    let (pool, environment_id) = (db.clone(), plan.environment_id.clone());
    let Json(regions) = ctx
        .run(|| async move {
            let regions = settings::list_regional(&pool, &environment_id)
                .await
                .map_err(db_error)?;
            Ok(Json(
                regions
                    .into_iter()
                    .filter(|r| r.can_schedule)
                    .map(|r| {
                        (
                            r.region_id,
                            r.min_replicas,
                            r.max_replicas,
                            r.cpu_threshold_percent,
                            r.memory_threshold_percent,
                        )
                    })
                    .collect::<Vec<_>>(),
            ))
        })
        .name("find schedulable regions")
        .retry_policy(step_retry())
        .await?;
    if regions.is_empty() {
        return Err(TerminalError::new_with_code(
            400,
            "No schedulable region is configured for this environment.",
        ));
    }
    advance(
        db,
        ctx,
        plan,
        DeploymentStatus::Deploying,
        &format!("Starting instances in {} region(s)", regions.len()),
    )
    .await?;
    undo.push(Undo::StopInstances);
    for (region_id, min, max, cpu, memory) in regions {
        let (pool, plan_) = (db.clone(), plan.clone());
        ctx.run(|| async move {
            let mut tx = begin(&pool).await?;
            let t = NewTopology {
                workspace_id: &plan_.workspace_id,
                deployment_id: &plan_.deployment_id,
                region_id: &region_id,
                min_replicas: min,
                max_replicas: max,
                cpu_threshold_percent: cpu,
                memory_threshold_percent: memory,
            };
            topology::upsert_running(&mut tx, &t, now_ms())
                .await
                .map_err(db_error)?;
            let policy = network_policy(plan_.port);
            let id = generate(IdKind::NetworkPolicy, &mut rand::rng());
            let name = format!("{}-ingress", plan_.k8s_name);
            let np = NetworkPolicy {
                id: &id,
                workspace_id: &plan_.workspace_id,
                deployment_id: &plan_.deployment_id,
                region_id: &region_id,
                k8s_namespace: &plan_.namespace,
                k8s_name: &name,
                policy: &policy,
            };
            topology::upsert_network_policy(&mut *tx, np, now_ms())
                .await
                .map_err(db_error)?;
            commit(tx).await?;
            Ok(())
        })
        .name("create topology and network policy")
        .retry_policy(step_retry())
        .await?;
    }
    undo.push(Undo::ForgetAwakeable);
    wait_for_instances(db, ctx, plan, settings.readiness_timeout).await?;

    // Network: hostnames and routes.
    advance(
        db,
        ctx,
        plan,
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
    .map_err(|e| TerminalError::new_with_code(500, format!("cannot name the deployment: {e}")))?;
    let mut to_assign = Vec::new();
    for host in hosts {
        let (pool, plan_, fqdn) = (db.clone(), plan.clone(), host.fqdn.clone());
        let Json(claimed) = ctx
            .run(|| async move { claim_route(&pool, &plan_, &host).await.map(Json) })
            .name(format!("route {fqdn}"))
            .retry_policy(step_retry())
            .await?;
        match claimed {
            // In production, live and environment routes move only with the
            // live pointer (below), so a rollback freezes them.
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

    // Finalizing: ready, then make it live or retire older previews.
    advance(
        db,
        ctx,
        plan,
        DeploymentStatus::Finalizing,
        "Making the deployment available",
    )
    .await?;
    let (pool, id) = (db.clone(), plan.deployment_id.clone());
    let ready = ctx
        .run(|| async move {
            let now = now_ms();
            let mut tx = begin(&pool).await?;
            let ready =
                deployment::set_status_if_active(&mut *tx, &id, DeploymentStatus::Ready, None, now)
                    .await
                    .map_err(db_error)?
                    // Already ready: this step committed before a crash.
                    || deployment::get(&mut *tx, &id).await.map_err(db_error)?.status
                        == DeploymentStatus::Ready;
            if ready {
                deployment::end_step(&mut *tx, &id, StepKind::Finalizing, None, now)
                    .await
                    .map_err(db_error)?;
            }
            commit(tx).await?;
            Ok(ready)
        })
        .name("mark ready")
        .retry_policy(step_retry())
        .await?;
    if !ready {
        return Err(no_longer_active());
    }
    // Ready is final for this pipeline: nothing below may undo it.
    undo.clear();

    if plan.is_production {
        let Json(promoted) = ctx
            .object_client::<RoutingObjectClient<'_>>(&plan.environment_id)
            .auto_promote(Json(AutoPromote {
                app_id: plan.app_id.clone(),
                deployment_id: plan.deployment_id.clone(),
            }))
            .call()
            .await?;
        let previous = promoted.previous_deployment_id;
        if promoted.promoted && !previous.is_empty() && previous != plan.deployment_id {
            retire(ctx, &previous, settings.retire_previous_live, true);
        }
    } else if plan.git_branch.is_some() {
        let (pool, id) = (db.clone(), plan.deployment_id.clone());
        let Json(older) = ctx
            .run(|| async move {
                let d = deployment::get(&pool, &id).await.map_err(db_error)?;
                deployment::list_running_siblings(&pool, &d)
                    .await
                    .map(Json)
                    .map_err(db_error)
            })
            .name("find older previews of the branch")
            .retry_policy(step_retry())
            .await?;
        for sibling in older {
            retire(ctx, &sibling, settings.retire_previous_preview, false);
        }
    }
    Ok(())
}

/// Claims a pending deployment: supersedes it if a newer one of its branch
/// exists, supersedes older ones that have not started, moves it to
/// `starting` and loads what the pipeline needs — in one transaction.
async fn claim(db: &MySqlPool, id: &str) -> Result<Claim, HandlerError> {
    let now = now_ms();
    let mut tx = begin(db).await?;
    let d = deployment::get(&mut *tx, id).await.map_err(db_error)?;
    match d.status {
        DeploymentStatus::Pending => {
            if let Some(skipped) = start(&mut tx, &d, now).await? {
                commit(tx).await?;
                return Ok(skipped);
            }
        }
        // Our own claim committed, then the worker died before Restate
        // journaled it: load again, change nothing.
        DeploymentStatus::Starting => {}
        s if s.is_terminal() => return Ok(Claim::Skipped(format!("deployment is {s}"))),
        s => {
            return Err(TerminalError::new_with_code(
                400,
                format!("deployment {id} is already {s}: its pipeline started before"),
            )
            .into());
        }
    }
    let workspace = tenancy::get_workspace(&mut *tx, &d.workspace_id)
        .await
        .map_err(db_error)?;
    let project = tenancy::get_project(&mut *tx, &d.project_id)
        .await
        .map_err(db_error)?;
    let app = tenancy::get_app(&mut *tx, &d.app_id)
        .await
        .map_err(db_error)?;
    let environment = tenancy::get_environment(&mut *tx, &d.environment_id)
        .await
        .map_err(db_error)?;
    let candidate = ctrl_core::names::random_dns1035(12, &mut rand::rng());
    let namespace = tenancy::ensure_k8s_namespace(&mut tx, &workspace.id, &candidate, now)
        .await
        .map_err(db_error)?;
    deployment::end_step(&mut *tx, id, StepKind::Starting, None, now)
        .await
        .map_err(db_error)?;
    commit(tx).await?;
    Ok(Claim::Started(Box::new(Plan {
        deployment_id: d.id,
        workspace_id: d.workspace_id,
        project_id: d.project_id,
        app_id: d.app_id,
        environment_id: d.environment_id,
        k8s_name: d.k8s_name,
        namespace,
        image: d.image,
        from_git: d.source_kind == SourceKind::Git,
        port: d.port,
        git_commit_sha: d.git_commit_sha,
        git_branch: d.git_branch,
        fork_owner: d
            .fork_repository
            .as_deref()
            .and_then(|r| r.split_once('/'))
            .map(|(owner, _)| owner.to_owned()),
        from_cli: d.trigger_kind == TriggerKind::Cli,
        workspace_slug: workspace.slug,
        project_slug: project.slug,
        app_slug: app.slug,
        environment_slug: environment.slug,
        is_production: environment.kind == EnvironmentKind::Production,
    })))
}

/// Supersedes `d` if a newer deployment of its branch exists (returning
/// why it is skipped), else supersedes older ones of the branch that have
/// not started and moves `d` from pending to starting.
async fn start(
    tx: &mut sqlx::MySqlConnection,
    d: &deployment::Deployment,
    now: i64,
) -> Result<Option<Claim>, HandlerError> {
    use DeploymentStatus::{AwaitingApproval, Pending, Starting, Superseded};
    if d.git_branch.is_some() {
        if deployment::has_newer_active(&mut *tx, d)
            .await
            .map_err(db_error)?
        {
            if deployment::compare_and_set_status(&mut *tx, &d.id, Pending, Superseded, now)
                .await
                .map_err(db_error)?
            {
                queued_step(tx, d, Some(SUPERSEDED), now).await?;
            }
            return Ok(Some(Claim::Skipped(SUPERSEDED.into())));
        }
        let older = deployment::list_older_not_started(&mut *tx, d)
            .await
            .map_err(db_error)?;
        for id in older {
            for from in [Pending, AwaitingApproval] {
                if deployment::compare_and_set_status(&mut *tx, &id, from, Superseded, now)
                    .await
                    .map_err(db_error)?
                {
                    let older = deployment::get(&mut *tx, &id).await.map_err(db_error)?;
                    queued_step(tx, &older, Some(SUPERSEDED), now).await?;
                }
            }
        }
    }
    if !deployment::compare_and_set_status(&mut *tx, &d.id, Pending, Starting, now)
        .await
        .map_err(db_error)?
    {
        return Ok(Some(Claim::Skipped("no longer pending".into())));
    }
    queued_step(tx, d, None, now).await?;
    deployment::start_step(
        &mut *tx,
        &d.workspace_id,
        &d.id,
        StepKind::Starting,
        "Loading the deployment",
        now,
    )
    .await
    .map_err(db_error)?;
    Ok(None)
}

/// Records the time spent queued (from creation until now).
async fn queued_step(
    tx: &mut sqlx::MySqlConnection,
    d: &deployment::Deployment,
    error: Option<&str>,
    now: i64,
) -> Result<(), HandlerError> {
    deployment::start_step(
        &mut *tx,
        &d.workspace_id,
        &d.id,
        StepKind::Queued,
        "Queued",
        d.created_at,
    )
    .await
    .map_err(db_error)?;
    deployment::end_step(&mut *tx, &d.id, StepKind::Queued, error, now)
        .await
        .map_err(db_error)?;
    Ok(())
}

/// Moves the deployment to the next phase and starts its step, unless it
/// was cancelled meanwhile (then the pipeline stops).
async fn advance(
    db: &MySqlPool,
    ctx: &ObjectContext<'_>,
    plan: &Plan,
    status: DeploymentStatus,
    message: &str,
) -> Result<(), TerminalError> {
    let Some(step) = status.step() else {
        return Err(TerminalError::new_with_code(
            500,
            format!("{status} is not a pipeline phase"),
        ));
    };
    let (pool, plan_, message) = (db.clone(), plan.clone(), message.to_owned());
    let active = ctx
        .run(|| async move {
            let now = now_ms();
            let mut tx = begin(&pool).await?;
            let active =
                deployment::set_status_if_active(&mut *tx, &plan_.deployment_id, status, None, now)
                    .await
                    .map_err(db_error)?;
            if active {
                deployment::complete_running_steps(&mut *tx, &plan_.deployment_id, now)
                    .await
                    .map_err(db_error)?;
                deployment::start_step(
                    &mut *tx,
                    &plan_.workspace_id,
                    &plan_.deployment_id,
                    step,
                    &message,
                    now,
                )
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
        Err(no_longer_active())
    }
}

fn no_longer_active() -> TerminalError {
    // 410, not 409: 409 is how Restate reports a cancel (see `CANCELLED`).
    TerminalError::new_with_code(
        410,
        "The deployment was cancelled or finished while its pipeline ran.",
    )
}

/// Waits until enough regions run enough instances. The awakeable is stored
/// before the database check, so a `NotifyInstancesReady` that lands between
/// the two still wakes us; every wake-up re-checks the database, so an early
/// or duplicate notification is harmless.
async fn wait_for_instances(
    db: &MySqlPool,
    ctx: &ObjectContext<'_>,
    plan: &Plan,
    timeout: Duration,
) -> Result<(), TerminalError> {
    let timeout_ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
    let deadline = ctx
        .run(|| async move { Ok(now_ms().saturating_add(timeout_ms)) })
        .name("readiness deadline")
        .await?;
    loop {
        let (awakeable_id, woken) = ctx.awakeable::<()>();
        ctx.set(READINESS_AWAKEABLE, awakeable_id);
        let (pool, id) = (db.clone(), plan.deployment_id.clone());
        let Json((ready, now)) = ctx
            .run(|| async move {
                let ready = instances_ready(&pool, &id).await?;
                Ok(Json((ready, now_ms())))
            })
            .name("check instances")
            .retry_policy(step_retry())
            .await?;
        if ready {
            ctx.clear(READINESS_AWAKEABLE);
            return Ok(());
        }
        let left = u64::try_from(deadline - now).unwrap_or(0);
        let woke = if left == 0 {
            false
        } else {
            restate_sdk::select! {
                r = woken => r.map(|()| true)?,
                r = ctx.sleep(Duration::from_millis(left)) => r.map(|()| false)?,
                on_cancel => return Err(TerminalError::new_with_code(CANCELLED, "cancelled")),
            }
        };
        if !woke {
            return Err(TerminalError::new_with_code(
                504,
                format!(
                    "Not enough regions became healthy within {} s.",
                    timeout.as_secs()
                ),
            ));
        }
    }
}

/// Whether the deployment's running instances satisfy its regions.
async fn instances_ready(db: &MySqlPool, id: &str) -> Result<bool, HandlerError> {
    let per_region = instance::readiness_by_region(db, id)
        .await
        .map_err(db_error)?;
    Ok(enough_regions_ready(&per_region))
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

/// The network policy of a deployment: its port is reachable from the
/// frontline (and from nothing else); instances may reach the internet.
fn network_policy(port: i32) -> serde_json::Value {
    serde_json::json!({
        "ingress": [{
            "port": port,
            "from": [{ "matchLabels": { "ctrl.dev/component": "frontline" }, "namespace": "frontline" }]
        }],
        "allowInternetEgress": true
    })
}

/// Runs the compensations in reverse. Failures are logged, not raised: the
/// pipeline's own error is what the caller sees.
async fn unwind(
    db: &MySqlPool,
    ctx: &ObjectContext<'_>,
    plan: &Plan,
    undo: Vec<Undo>,
    error: &TerminalError,
) {
    let cancelled = error.code() == CANCELLED;
    for step in undo.into_iter().rev() {
        match step {
            Undo::ForgetAwakeable => ctx.clear(READINESS_AWAKEABLE),
            Undo::StopInstances => retire(ctx, &plan.deployment_id, Duration::ZERO, true),
            Undo::MarkFailed => {
                let (pool, id) = (db.clone(), plan.deployment_id.clone());
                let (status, message) = if cancelled {
                    (DeploymentStatus::Cancelled, "Cancelled".to_owned())
                } else {
                    (DeploymentStatus::Failed, error.message().to_owned())
                };
                let marked = ctx
                    .run(|| async move {
                        let now = now_ms();
                        let mut tx = begin(&pool).await?;
                        deployment::end_running_steps(&mut *tx, &id, &message, now)
                            .await
                            .map_err(db_error)?;
                        deployment::set_status_if_active(
                            &mut *tx,
                            &id,
                            status,
                            Some(&message),
                            now,
                        )
                        .await
                        .map_err(db_error)?;
                        commit(tx).await?;
                        Ok(())
                    })
                    .name("[compensation] mark failed")
                    .retry_policy(step_retry())
                    .await;
                if let Err(e) = marked {
                    tracing::error!(deployment_id = %plan.deployment_id, error = %e.message(), "compensation failed");
                }
            }
        }
    }
}
