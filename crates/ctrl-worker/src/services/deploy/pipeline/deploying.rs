//! Deploying: desired state and network policy per schedulable region,
//! then the wait for instances.

use ctrl_core::id::{IdKind, generate};
use ctrl_core::status::{DeploymentStatus, StepKind};
use ctrl_db::topology::{NetworkPolicy, NewTopology};
use ctrl_db::{settings, topology};
use restate_sdk::prelude::*;
use serde::{Deserialize, Serialize};
use sqlx::MySqlPool;

use super::compensation::Undo;
use super::wait::{self, Waiting};
use super::{Plan, steps};
use crate::errors::{WorkflowError, begin, commit, db_error, now_ms, step_retry};
use crate::services::deploy::DeploySettings;

/// Where and how big a deployment runs in one region (from the
/// environment's regional settings).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RegionPlan {
    region_id: String,
    min_replicas: u32,
    max_replicas: u32,
    cpu_threshold_percent: u8,
    memory_threshold_percent: u8,
}

/// Writes the desired state of every schedulable region and waits until
/// enough of them run the deployment (or fails with what the agents said).
pub(super) async fn start_instances(
    db: &MySqlPool,
    settings: &DeploySettings,
    ctx: &ObjectContext<'_>,
    plan: &Plan,
    undo: &mut Vec<Undo>,
) -> Result<(), TerminalError> {
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
                    .map(|r| RegionPlan {
                        region_id: r.region_id,
                        min_replicas: r.min_replicas,
                        max_replicas: r.max_replicas,
                        cpu_threshold_percent: r.cpu_threshold_percent,
                        memory_threshold_percent: r.memory_threshold_percent,
                    })
                    .collect::<Vec<_>>(),
            ))
        })
        .name("find schedulable regions")
        .retry_policy(step_retry())
        .await?;
    if regions.is_empty() {
        return Err(WorkflowError::NoRegion.into());
    }
    let headline = format!("Starting instances in {} region(s)", regions.len());
    steps::advance(
        db,
        ctx,
        &plan.workspace_id,
        &plan.deployment_id,
        DeploymentStatus::Deploying,
        &headline,
    )
    .await?;
    undo.push(Undo::StopInstances);
    let startup = u32::try_from(settings.readiness_timeout.as_secs()).unwrap_or(u32::MAX);
    for region in regions {
        let (pool, plan_) = (db.clone(), plan.clone());
        ctx.run(|| async move {
            let mut tx = begin(&pool).await?;
            let t = NewTopology {
                workspace_id: &plan_.workspace_id,
                deployment_id: &plan_.deployment_id,
                region_id: &region.region_id,
                min_replicas: region.min_replicas,
                max_replicas: region.max_replicas,
                cpu_threshold_percent: region.cpu_threshold_percent,
                memory_threshold_percent: region.memory_threshold_percent,
                startup_timeout_seconds: startup,
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
                region_id: &region.region_id,
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
    wait::instances(
        db,
        settings,
        ctx,
        &Waiting {
            deployment_id: &plan.deployment_id,
            step: StepKind::Deploying,
            headline: &headline,
        },
    )
    .await
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
