//! DeploymentService reads: GetDeployment, ListDeployments and the
//! WatchDeployment stream. (Create, rollback, promote, cancel, stop and wake
//! start durable workflows and arrive with the worker.)

use ctrl_core::domains::Sticky;
use ctrl_core::id::IdKind;
use ctrl_core::status::{DeploymentStatus, DesiredState, StepKind};
use ctrl_db::deployment::{self, Deployment, ListFilter};
use ctrl_db::types::{ActorType, TriggerKind};
use ctrl_db::{cluster, instance, route, tenancy, topology};
use ctrl_proto::ctrl::v1 as pb;

use crate::error::ApiError;
use crate::paging::{self, Page};
use crate::services::settings::runtime_to_pb;
use crate::state::AppState;
use crate::validate;

/// The wire status of a deployment status.
pub fn status_to_pb(s: DeploymentStatus) -> pb::DeploymentStatus {
    use DeploymentStatus as S;
    use pb::DeploymentStatus as P;
    match s {
        S::Pending => P::Pending,
        S::AwaitingApproval => P::AwaitingApproval,
        S::Starting => P::Starting,
        S::Building => P::Building,
        S::Deploying => P::Deploying,
        S::Network => P::Network,
        S::Finalizing => P::Finalizing,
        S::Ready => P::Ready,
        S::Failed => P::Failed,
        S::Skipped => P::Skipped,
        S::Stopped => P::Stopped,
        S::Superseded => P::Superseded,
        S::Cancelled => P::Cancelled,
    }
}

fn status_from_pb(field: &str, value: i32) -> Result<DeploymentStatus, ApiError> {
    use DeploymentStatus as S;
    use pb::DeploymentStatus as P;
    Ok(match P::try_from(value) {
        Ok(P::Pending) => S::Pending,
        Ok(P::AwaitingApproval) => S::AwaitingApproval,
        Ok(P::Starting) => S::Starting,
        Ok(P::Building) => S::Building,
        Ok(P::Deploying) => S::Deploying,
        Ok(P::Network) => S::Network,
        Ok(P::Finalizing) => S::Finalizing,
        Ok(P::Ready) => S::Ready,
        Ok(P::Failed) => S::Failed,
        Ok(P::Skipped) => S::Skipped,
        Ok(P::Stopped) => S::Stopped,
        Ok(P::Superseded) => S::Superseded,
        Ok(P::Cancelled) => S::Cancelled,
        _ => {
            return Err(ApiError::invalid(
                field,
                format!("unknown deployment status {value}"),
            ));
        }
    })
}

fn desired_to_pb(s: DesiredState) -> i32 {
    let v = match s {
        DesiredState::Running => pb::DesiredState::Running,
        DesiredState::Stopped => pb::DesiredState::Stopped,
    };
    v as i32
}

fn step_kind_to_pb(k: StepKind) -> i32 {
    let v = match k {
        StepKind::Queued => pb::DeploymentStepKind::Queued,
        StepKind::Starting => pb::DeploymentStepKind::Starting,
        StepKind::Building => pb::DeploymentStepKind::Building,
        StepKind::Deploying => pb::DeploymentStepKind::Deploying,
        StepKind::Network => pb::DeploymentStepKind::Network,
        StepKind::Finalizing => pb::DeploymentStepKind::Finalizing,
    };
    v as i32
}

fn sticky_to_pb(s: Sticky) -> i32 {
    let v = match s {
        Sticky::None => pb::RouteStickiness::None,
        Sticky::Branch => pb::RouteStickiness::Branch,
        Sticky::Environment => pb::RouteStickiness::Environment,
        Sticky::Live => pb::RouteStickiness::Live,
        Sticky::Deployment => pb::RouteStickiness::Deployment,
    };
    v as i32
}

/// The summary fields of a deployment (what ListDeployments returns).
fn summary(d: Deployment, environment_slug: String, live: bool) -> pb::Deployment {
    let git = (d.git_commit_sha.is_some() || d.git_branch.is_some()).then(|| pb::GitCommitInfo {
        commit_sha: d.git_commit_sha.clone().unwrap_or_default(),
        branch: d.git_branch.clone().unwrap_or_default(),
        commit_message: d.git_commit_message.clone().unwrap_or_default(),
        author_handle: d.git_commit_author_handle.clone().unwrap_or_default(),
        author_avatar_url: d.git_commit_author_avatar_url.clone().unwrap_or_default(),
        timestamp: d.git_commit_timestamp.unwrap_or_default(),
        fork_repository: d.fork_repository.clone().unwrap_or_default(),
    });
    let actor = d.actor_id.clone().map(|id| pb::ActorInfo {
        id,
        name: d.actor_name.clone().unwrap_or_default(),
        r#type: match d.actor_type {
            Some(ActorType::User) => pb::ActorType::User,
            Some(ActorType::Token) => pb::ActorType::Token,
            Some(ActorType::System) | None => pb::ActorType::System,
        } as i32,
        ..Default::default()
    });
    let runtime = runtime_to_pb(ctrl_db::settings::RuntimeSettings {
        port: d.port,
        cpu_millicores: d.cpu_millicores,
        memory_mib: d.memory_mib,
        storage_mib: d.storage_mib,
        command: d.command.clone(),
        healthcheck: d.healthcheck.clone(),
        shutdown_signal: d.shutdown_signal,
        termination_grace_seconds: d.termination_grace_seconds,
        upstream_protocol: d.upstream_protocol,
        openapi_spec_path: None,
    });
    pb::Deployment {
        id: d.id,
        workspace_id: d.workspace_id,
        project_id: d.project_id,
        app_id: d.app_id,
        environment_id: d.environment_id,
        environment_slug,
        status: status_to_pb(d.status) as i32,
        error_message: d.error_message.unwrap_or_default(),
        desired_state: desired_to_pb(d.desired_state),
        image: d.image.unwrap_or_default(),
        git,
        trigger: match d.trigger_kind {
            TriggerKind::Api => pb::DeploymentTrigger::Api,
            TriggerKind::Cli => pb::DeploymentTrigger::Cli,
            TriggerKind::Dashboard => pb::DeploymentTrigger::Dashboard,
            TriggerKind::Github => pb::DeploymentTrigger::Github,
            TriggerKind::System => pb::DeploymentTrigger::System,
        } as i32,
        trigger_reason: d.trigger_reason.unwrap_or_default(),
        actor,
        runtime: Some(runtime),
        steps: Vec::new(),
        hostnames: Vec::new(),
        regions: Vec::new(),
        is_live: live,
        created_at: d.created_at,
        updated_at: d.updated_at,
    }
}

/// A deployment with its steps, hostnames and per-region topology.
pub async fn load_full(s: &AppState, id: &str) -> Result<pb::Deployment, ApiError> {
    let d = deployment::get(s.db(), id).await?;
    let app = tenancy::get_app(s.db(), &d.app_id).await?;
    let env = tenancy::get_environment(s.db(), &d.environment_id).await?;
    let steps = deployment::list_steps(s.db(), id).await?;
    let routes = route::list_by_deployment(s.db(), id).await?;
    let topology = topology::list_by_deployment(s.db(), id).await?;
    let running = instance::count_running_by_region(s.db(), id).await?;
    let regions = cluster::list_regions(s.db()).await?;

    let live = app.live_deployment_id.as_deref() == Some(d.id.as_str());
    let mut out = summary(d, env.slug, live);
    out.steps = steps
        .into_iter()
        .map(|step| pb::DeploymentStep {
            kind: step_kind_to_pb(step.step),
            status: match (step.ended_at, &step.error) {
                (None, _) => pb::DeploymentStepStatus::Running,
                (Some(_), None) => pb::DeploymentStepStatus::Succeeded,
                (Some(_), Some(_)) => pb::DeploymentStepStatus::Failed,
            } as i32,
            message: step.message,
            error_message: step.error.unwrap_or_default(),
            started_at: step.started_at,
            ended_at: step.ended_at.unwrap_or_default(),
        })
        .collect();
    out.hostnames = routes
        .into_iter()
        .map(|r| pb::Hostname {
            fqdn: r.fully_qualified_domain_name,
            stickiness: sticky_to_pb(r.sticky),
        })
        .collect();
    out.regions = topology
        .into_iter()
        .map(|t| pb::RegionTopology {
            region_name: regions
                .iter()
                .find(|r| r.id == t.region_id)
                .map(|r| r.name.clone())
                .unwrap_or_default(),
            running_instances: running
                .iter()
                .find(|(region, _)| *region == t.region_id)
                .map_or(0, |(_, n)| i32::try_from(*n).unwrap_or(i32::MAX)),
            desired_state: desired_to_pb(t.desired_status),
            autoscaling: Some(pb::AutoscalingPolicy {
                min_replicas: t.min_replicas,
                max_replicas: t.max_replicas,
                cpu_threshold_percent: u32::from(t.cpu_threshold_percent),
                memory_threshold_percent: u32::from(t.memory_threshold_percent),
            }),
            region_id: t.region_id,
        })
        .collect();
    Ok(out)
}

/// DeploymentService.GetDeployment
pub async fn get_deployment(
    s: &AppState,
    req: pb::GetDeploymentRequest,
) -> Result<pb::GetDeploymentResponse, ApiError> {
    validate::id("deployment_id", IdKind::Deployment, &req.deployment_id)?;
    Ok(pb::GetDeploymentResponse {
        deployment: Some(load_full(s, &req.deployment_id).await?),
    })
}

/// DeploymentService.ListDeployments: newest first.
pub async fn list_deployments(
    s: &AppState,
    req: pb::ListDeploymentsRequest,
) -> Result<pb::ListDeploymentsResponse, ApiError> {
    validate::id("app_id", IdKind::App, &req.app_id)?;
    let page = Page::from_request(req.page.as_ref())?;
    if !req.branch.is_empty() {
        validate::branch("branch", &req.branch)?;
    }
    let statuses = req
        .statuses
        .iter()
        .enumerate()
        .map(|(i, v)| status_from_pb(&format!("statuses[{i}]"), *v))
        .collect::<Result<Vec<_>, _>>()?;
    let app = tenancy::get_app(s.db(), &req.app_id).await?;
    let environments = tenancy::list_environments(s.db(), &app.id).await?;
    let environment_id = if req.environment_slug.is_empty() {
        None
    } else {
        let env = environments
            .iter()
            .find(|e| e.slug == req.environment_slug)
            .ok_or_else(|| {
                ApiError::NotFound(format!("environment {:?} not found", req.environment_slug))
            })?;
        Some(env.id.as_str())
    };
    let filter = ListFilter {
        app_id: &app.id,
        environment_id,
        branch: (!req.branch.is_empty()).then_some(req.branch.as_str()),
        statuses: &statuses,
    };
    let rows = deployment::list(s.db(), &filter, page.cursor, page.size).await?;
    let deployments = rows
        .items
        .into_iter()
        .map(|d| {
            let slug = environments
                .iter()
                .find(|e| e.id == d.environment_id)
                .map(|e| e.slug.clone())
                .unwrap_or_default();
            let live = app.live_deployment_id.as_deref() == Some(d.id.as_str());
            summary(d, slug, live)
        })
        .collect();
    Ok(pb::ListDeploymentsResponse {
        deployments,
        page: Some(paging::response(rows.next_cursor)),
    })
}
