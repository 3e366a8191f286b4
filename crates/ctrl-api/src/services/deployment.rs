//! DeploymentService: the reads (GetDeployment, ListDeployments; the
//! WatchDeployment stream is in `rpc.rs`) and the RPCs that start or steer
//! the worker's durable workflows (create, approve, rollback, promote,
//! cancel, stop, wake, delete).

use ctrl_core::domains::Sticky;
use ctrl_core::id::IdKind;
use ctrl_core::logs::MAX_TAIL_LINES;
use ctrl_core::status::{DeploymentStatus, DesiredState, StepKind};
use ctrl_db::deployment::{self, Deployment, ListFilter};
use ctrl_db::types::{ActorType, InstanceStatus, TriggerKind};
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
    let has_git = d.git_commit_sha.is_some() || d.git_branch.is_some() || d.git_pr_number.is_some();
    let git = has_git.then(|| pb::GitCommitInfo {
        commit_sha: d.git_commit_sha.clone().unwrap_or_default(),
        branch: d.git_branch.clone().unwrap_or_default(),
        commit_message: d.git_commit_message.clone().unwrap_or_default(),
        author_handle: d.git_commit_author_handle.clone().unwrap_or_default(),
        author_avatar_url: d.git_commit_author_avatar_url.clone().unwrap_or_default(),
        timestamp: d.git_commit_timestamp.unwrap_or_default(),
        fork_repository: d.fork_repository.clone().unwrap_or_default(),
        pr_number: d.git_pr_number.map(i64::from).unwrap_or_default(),
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
        build_id: d.build_id.unwrap_or_default(),
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
    let instances = instance::list_by_deployment(s.db(), id).await?;
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
    let in_region = |region: &str| {
        let region = region.to_owned();
        instances.iter().filter(move |i| i.region_id == region)
    };
    out.regions = topology
        .into_iter()
        .map(|t| pb::RegionTopology {
            region_name: regions
                .iter()
                .find(|r| r.id == t.region_id)
                .map(|r| r.name.clone())
                .unwrap_or_default(),
            running_instances: in_region(&t.region_id)
                .filter(|i| i.status == InstanceStatus::Running)
                .count()
                .try_into()
                .unwrap_or(i32::MAX),
            instances: in_region(&t.region_id)
                .map(|i| pb::Instance {
                    name: i.name.clone(),
                    address: i.address.clone(),
                    cpu_millicores: i.cpu_millicores.into(),
                    memory_mib: i.memory_mib.into(),
                    status: ctrl_cluster_sync::convert::instance_status_to_pb(i.status) as i32,
                })
                .collect(),
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

/// DeploymentService.StreamDeploymentLogs, before streaming: checks the
/// request and returns the regions to read, each with its cluster.
pub async fn log_sources(
    s: &AppState,
    req: &pb::StreamDeploymentLogsRequest,
) -> Result<Vec<cluster::LogSource>, ApiError> {
    validate::id("deployment_id", IdKind::Deployment, &req.deployment_id)?;
    if req.tail_lines.is_some_and(|n| n > MAX_TAIL_LINES) {
        return Err(ApiError::invalid(
            "tail_lines",
            format!("at most {MAX_TAIL_LINES}"),
        ));
    }
    deployment::get(s.db(), &req.deployment_id).await?;
    let mut sources = cluster::log_sources(s.db(), &req.deployment_id).await?;
    if !req.region.is_empty() {
        let regions: Vec<String> = sources.iter().map(|x| x.region_name.clone()).collect();
        sources.retain(|x| x.region_name == req.region);
        if sources.is_empty() {
            return Err(ApiError::invalid(
                "region",
                format!(
                    "deployment {} does not run in region {:?} (its regions: {})",
                    req.deployment_id,
                    req.region,
                    if regions.is_empty() {
                        "none yet".into()
                    } else {
                        regions.join(", ")
                    }
                ),
            ));
        }
    }
    if sources.is_empty() {
        return Err(ApiError::FailedPrecondition(format!(
            "deployment {} has no instances in any region yet",
            req.deployment_id
        )));
    }
    Ok(sources)
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

/// Longest client idempotency key.
const MAX_IDEMPOTENCY_KEY: usize = 128;

/// At most `max` bytes of `s`, cut at a character boundary, owned.
fn truncate(s: &str, max: usize) -> String {
    ctrl_core::names::clip(s, max).to_owned()
}

/// DeploymentService.CreateDeployment: validate, snapshot the runtime
/// settings and the sealed environment, insert the row (pending), then start
/// the worker's Deploy pipeline through Restate (key and idempotency key =
/// deployment id) and return at once.
///
/// The row is committed before the send, so the worker always finds it; if
/// the send fails the row is removed again and the caller gets `unavailable`
/// (nothing half-created; a retry with the same idempotency key works).
pub async fn create_deployment(
    s: &AppState,
    req: pb::CreateDeploymentRequest,
) -> Result<pb::CreateDeploymentResponse, ApiError> {
    use ctrl_db::types::ActorType as DbActor;
    use prost::Message;

    validate::id("app_id", IdKind::App, &req.app_id)?;
    validate::slug("environment_slug", &req.environment_slug)?;
    let idempotency_key = (!req.idempotency_key.is_empty()).then_some(req.idempotency_key.as_str());
    if let Some(key) = idempotency_key
        && (key.len() > MAX_IDEMPOTENCY_KEY || key.chars().any(char::is_control))
    {
        return Err(ApiError::invalid(
            "idempotency_key",
            format!("must be at most {MAX_IDEMPOTENCY_KEY} characters without control characters"),
        ));
    }
    let git = req.git.clone().unwrap_or_default();
    if !git.commit_sha.is_empty()
        && (git.commit_sha.len() != 40 || !git.commit_sha.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(ApiError::invalid(
            "git.commit_sha",
            "must be a full 40-character hex SHA",
        ));
    }
    if !git.branch.is_empty() {
        validate::branch("git.branch", &git.branch)?;
    }
    if req.command.len() > 64 || req.command.iter().any(|c| c.len() > 4096) {
        return Err(ApiError::invalid(
            "command",
            "at most 64 arguments of at most 4096 bytes",
        ));
    }
    let trigger = match pb::DeploymentTrigger::try_from(req.trigger) {
        Ok(pb::DeploymentTrigger::Cli) => TriggerKind::Cli,
        Ok(pb::DeploymentTrigger::Dashboard) => TriggerKind::Dashboard,
        Ok(pb::DeploymentTrigger::Github) => TriggerKind::Github,
        Ok(pb::DeploymentTrigger::System) => TriggerKind::System,
        Ok(_) => TriggerKind::Api,
        Err(_) => return Err(ApiError::invalid("trigger", "unknown trigger")),
    };

    let app = tenancy::get_app(s.db(), &req.app_id).await?;
    if let Some(key) = idempotency_key
        && let Some(existing) = deployment::find_by_idempotency_key(s.db(), &app.id, key).await?
    {
        return Ok(pb::CreateDeploymentResponse {
            deployment_id: existing.id,
            status: status_to_pb(existing.status) as i32,
            deduplicated: true,
        });
    }
    let env = tenancy::find_environment_by_slug(s.db(), &app.id, &req.environment_slug)
        .await
        .map_err(|_| {
            ApiError::NotFound(format!(
                "environment {:?} not found for this app",
                req.environment_slug
            ))
        })?;
    super::tenancy::not_deleting("app", app.deleting_at)?;
    super::tenancy::not_deleting("environment", env.deleting_at)?;
    let source = source(s, &req, &app, &env.id).await?;
    let schedulable = ctrl_db::settings::list_regional(s.db(), &env.id)
        .await?
        .into_iter()
        .filter(|r| r.can_schedule)
        .count();
    if schedulable == 0 {
        return Err(ApiError::FailedPrecondition(
            "No regions configured. Please configure at least one region before deploying.".into(),
        ));
    }
    let mut runtime = ctrl_db::settings::get_runtime(s.db(), &env.id).await?;
    if !req.command.is_empty() {
        runtime.command = sqlx::types::Json(req.command.clone());
    }
    let sealed = ctrl_db::settings::list_env_vars(s.db(), &env.id).await?;
    let mut source = source;
    if let Some(build) = &mut source.build {
        build.secrets = sealed
            .iter()
            .filter(|v| v.build_secret)
            .map(|v| v.key.clone())
            .collect();
    }
    let environment = pb::EncryptedEnvironment {
        keyring: env.id.clone(),
        variables: sealed
            .into_iter()
            .map(|v| (v.key, v.encrypted_value))
            .collect(),
    };
    let actor = req.actor.clone().unwrap_or_default();

    let id = ctrl_core::id::generate(IdKind::Deployment, &mut rand::rng());
    let new = deployment::NewDeployment {
        id: id.clone(),
        k8s_name: ctrl_core::names::random_dns1035(12, &mut rand::rng()),
        workspace_id: app.workspace_id.clone(),
        project_id: app.project_id.clone(),
        app_id: app.id.clone(),
        environment_id: env.id.clone(),
        source_kind: source.kind,
        image: source.image,
        build: source.build,
        git_repository: source.repository,
        git_commit_sha: (!git.commit_sha.is_empty()).then(|| git.commit_sha.to_ascii_lowercase()),
        git_branch: (!git.branch.is_empty()).then(|| git.branch.clone()),
        git_commit_message: (!git.commit_message.is_empty())
            .then(|| truncate(&git.commit_message, 10240)),
        git_commit_author_handle: (!git.author_handle.is_empty())
            .then(|| truncate(&git.author_handle, 256)),
        git_commit_author_avatar_url: (!git.author_avatar_url.is_empty())
            .then(|| truncate(&git.author_avatar_url, 512)),
        git_commit_timestamp: (git.timestamp != 0).then_some(git.timestamp),
        fork_repository: (!git.fork_repository.is_empty())
            .then(|| truncate(&git.fork_repository, 256)),
        git_pr_number: None,
        runtime,
        encrypted_environment: environment.encode_to_vec(),
        trigger_kind: trigger,
        trigger_reason: (!req.trigger_reason.is_empty())
            .then(|| truncate(&req.trigger_reason, 512)),
        actor_id: (!actor.id.is_empty()).then(|| truncate(&actor.id, 256)),
        actor_name: (!actor.name.is_empty()).then(|| truncate(&actor.name, 256)),
        actor_type: match pb::ActorType::try_from(actor.r#type) {
            Ok(pb::ActorType::User) => Some(DbActor::User),
            Ok(pb::ActorType::Token) => Some(DbActor::Token),
            Ok(pb::ActorType::System) => Some(DbActor::System),
            _ => None,
        },
        idempotency_key: idempotency_key.map(str::to_owned),
    };
    match deployment::insert(s.db(), &new, s.now_ms()).await {
        Ok(()) => {}
        // A concurrent request with the same idempotency key won the race.
        Err(ctrl_db::Error::AlreadyExists { key }) if key == "deployments_idempotency" => {
            let existing = deployment::find_by_idempotency_key(
                s.db(),
                &app.id,
                idempotency_key.unwrap_or_default(),
            )
            .await?
            .ok_or_else(|| ApiError::Internal("internal error".into()))?;
            return Ok(pb::CreateDeploymentResponse {
                deployment_id: existing.id,
                status: status_to_pb(existing.status) as i32,
                deduplicated: true,
            });
        }
        Err(e) => return Err(e.into()),
    }

    let undo = async || deployment::delete_unstarted(s.db(), &id).await;
    start_deploy(s, &id, undo, "removed").await?;
    tracing::info!(deployment_id = %id, app_id = %app.id, environment = %env.slug, "deployment created");
    Ok(pb::CreateDeploymentResponse {
        deployment_id: id,
        status: pb::DeploymentStatus::Pending as i32,
        deduplicated: false,
    })
}

/// Starts the worker's Deploy pipeline of a pending deployment: an ingress
/// send to `Deploy/{id}/Deploy` (the idempotency key is the id too, so a
/// retried start lands on the same invocation), then records the
/// invocation id on the row.
///
/// If Restate did not accept the invocation, `undo` runs (it puts the row
/// back as it was; `undone` says how, for the log should it fail) and the
/// send's error is returned: nothing was started.
pub(crate) async fn start_deploy(
    s: &AppState,
    id: &str,
    undo: impl AsyncFnOnce() -> ctrl_db::Result<bool>,
    undone: &str,
) -> Result<(), ApiError> {
    use ctrl_core::workflows::{DEPLOY_HANDLER, DEPLOY_SERVICE, DeployInput};
    let input = DeployInput {
        deployment_id: id.to_owned(),
    };
    match s
        .ingress()
        .send(DEPLOY_SERVICE, id, DEPLOY_HANDLER, &input, id)
        .await
    {
        Ok(invocation_id) => {
            deployment::set_invocation_id(s.db(), id, &invocation_id, s.now_ms()).await?;
            Ok(())
        }
        Err(e) => {
            if let Err(cleanup) = undo().await {
                tracing::error!(deployment_id = %id, error = %cleanup, "the workflow of a deployment did not start, and the deployment could not be {undone}");
            }
            Err(e)
        }
    }
}

/// DeploymentService.ApproveDeployment: moves a deployment that awaits
/// approval to pending (a conditional update: of concurrent approvals one
/// wins) and starts its Deploy pipeline as CreateDeployment does. Idempotent:
/// a deployment that no longer awaits approval keeps its status, which is
/// answered, and nothing starts. If the pipeline cannot be started, the
/// deployment awaits approval again and the error is returned.
pub async fn approve_deployment(
    s: &AppState,
    req: pb::ApproveDeploymentRequest,
) -> Result<pb::ApproveDeploymentResponse, ApiError> {
    use DeploymentStatus::{AwaitingApproval, Pending};
    validate::id("deployment_id", IdKind::Deployment, &req.deployment_id)?;
    let d = deployment::get(s.db(), &req.deployment_id).await?;
    let actor = req.actor.unwrap_or_default();
    if d.status == AwaitingApproval {
        let app = tenancy::get_app(s.db(), &d.app_id).await?;
        let env = tenancy::get_environment(s.db(), &d.environment_id).await?;
        super::tenancy::not_deleting("app", app.deleting_at)?;
        super::tenancy::not_deleting("environment", env.deleting_at)?;
    }
    // Clears the hold's reason with the status.
    if !deployment::approve(s.db(), &d.id, s.now_ms()).await? {
        let status = deployment::status(s.db(), &d.id).await?;
        tracing::info!(deployment_id = %d.id, approver = %actor.id, status = status.as_str(), "approval of a deployment that does not await approval: nothing to do");
        return Ok(pb::ApproveDeploymentResponse {
            status: status_to_pb(status) as i32,
        });
    }
    // Back on hold, with its reason.
    let reason = d.error_message.clone().unwrap_or_default();
    let undo =
        async || deployment::hold(s.db(), &d.id, AwaitingApproval, &reason, s.now_ms()).await;
    start_deploy(s, &d.id, undo, "put back to awaiting approval").await?;
    tracing::info!(
        deployment_id = %d.id,
        app_id = %d.app_id,
        approver = %actor.id,
        approver_name = %actor.name,
        "deployment approved"
    );
    Ok(pb::ApproveDeploymentResponse {
        status: status_to_pb(Pending) as i32,
    })
}

/// What a new deployment runs or builds.
struct Source {
    kind: ctrl_db::types::SourceKind,
    image: Option<String>,
    build: Option<deployment::BuildSource>,
    repository: Option<String>,
}

/// Most build arguments one deployment may pass.
const MAX_BUILD_ARGS: usize = 64;

/// Checks the request's source: an image reference, an upload of this app
/// (it must exist and be within the size limit), or a GitHub repository;
/// fills a build's directory and Dockerfile from the app's build settings
/// when the request leaves them empty.
async fn source(
    s: &AppState,
    req: &pb::CreateDeploymentRequest,
    app: &ctrl_db::tenancy::App,
    environment_id: &str,
) -> Result<Source, ApiError> {
    use ctrl_db::types::SourceKind;
    use pb::create_deployment_request::Source as S;
    let (dir, dockerfile) = match &req.source {
        Some(S::Image(img)) => {
            ctrl_core::settings::validate_image_reference(&img.image)
                .map_err(|e| ApiError::invalid("image.image", e.message))?;
            if !req.build_args.is_empty() {
                return Err(ApiError::invalid(
                    "build_args",
                    "only builds from source take build arguments",
                ));
            }
            return Ok(Source {
                kind: SourceKind::Image,
                image: Some(img.image.clone()),
                build: None,
                repository: None,
            });
        }
        Some(S::GitBuild(g)) => (g.context_path.as_str(), g.dockerfile_path.as_str()),
        // The upload is the context itself: the app's `docker_context`
        // (a directory of its repository) does not apply.
        Some(S::ContextBuild(c)) => (".", c.dockerfile_path.as_str()),
        None => {
            return Err(ApiError::invalid(
                "source",
                "set image (a built image), context_build (an upload) or git_build",
            ));
        }
    };
    validate::build_args("build_args", &req.build_args, MAX_BUILD_ARGS)?;
    let settings = ctrl_db::settings::get_build(s.db(), environment_id).await?;
    let dir = if dir.is_empty() {
        settings.docker_context.clone()
    } else {
        dir.to_owned()
    };
    let dockerfile = match (dockerfile, settings.dockerfile.as_deref()) {
        ("", Some(d)) if !d.is_empty() => d.to_owned(),
        ("", _) => ctrl_build::context::DEFAULT_DOCKERFILE.to_owned(),
        (d, _) => d.to_owned(),
    };
    let field = |f: &'static str| match &req.source {
        Some(S::GitBuild(_)) => ("git_build", f),
        _ => ("context_build", f),
    };
    let dir = ctrl_build::context::relative_path("build directory", &dir).map_err(|e| {
        let (source, f) = field("context_path");
        ApiError::invalid(&format!("{source}.{f}"), e.to_string())
    })?;
    let dockerfile =
        ctrl_build::context::relative_path("dockerfile", &dockerfile).map_err(|e| {
            let (source, f) = field("dockerfile_path");
            ApiError::invalid(&format!("{source}.{f}"), e.to_string())
        })?;
    let mut build = deployment::BuildSource {
        context_path: None,
        dir: Some(if dir.is_empty() { ".".into() } else { dir }),
        dockerfile: Some(dockerfile),
        args: req.build_args.clone().into_iter().collect(),
        // Filled from the same rows as the environment snapshot.
        secrets: Vec::new(),
        installation_id: None,
    };
    match &req.source {
        Some(S::ContextBuild(c)) => {
            let store = s.build_contexts().ok_or_else(|| {
                ApiError::FailedPrecondition(
                    "this server takes no build contexts ([build_contexts] is not configured)"
                        .into(),
                )
            })?;
            store
                .check(&app.workspace_id, &app.id, &c.build_context_path)
                .await
                .map_err(|e| match e {
                    ctrl_build::store::StoreError::Invalid(m) => {
                        ApiError::invalid("context_build.build_context_path", m)
                    }
                    ctrl_build::store::StoreError::Missing { .. } => {
                        ApiError::FailedPrecondition(e.to_string())
                    }
                    ctrl_build::store::StoreError::Unavailable(m) => ApiError::Unavailable(m),
                })?;
            build.context_path = Some(c.build_context_path.clone());
            Ok(Source {
                kind: SourceKind::Context,
                image: None,
                build: Some(build),
                repository: None,
            })
        }
        Some(S::GitBuild(g)) => {
            validate::repository("git_build.repository", &g.repository)?;
            if g.installation_id < 0 {
                return Err(ApiError::invalid(
                    "git_build.installation_id",
                    "must be a GitHub App installation id (or 0 for none)",
                ));
            }
            build.installation_id = (g.installation_id > 0).then_some(g.installation_id);
            Ok(Source {
                kind: SourceKind::Git,
                image: None,
                build: Some(build),
                repository: Some(g.repository.clone()),
            })
        }
        _ => Err(ApiError::Internal("unreachable source".into())),
    }
}

/// The message stamped on steps and the deployment when a user cancels.
pub const CANCELLED_BY_USER: &str = "Cancelled by user";

/// DeploymentService.CancelDeployment: stamps running steps and sets the
/// status to cancelled — both only if the deployment is still progressing
/// (first writer wins against the workflow) — then cancels its Restate
/// invocation. Idempotent: a repeat (or a deployment that already finished)
/// returns its terminal status.
pub async fn cancel_deployment(
    s: &AppState,
    req: pb::CancelDeploymentRequest,
) -> Result<pb::CancelDeploymentResponse, ApiError> {
    validate::id("deployment_id", IdKind::Deployment, &req.deployment_id)?;
    let d = deployment::get(s.db(), &req.deployment_id).await?;
    if d.status.is_progressing() {
        let now = s.now_ms();
        deployment::end_running_steps(s.db(), &d.id, CANCELLED_BY_USER, now).await?;
        deployment::set_status_if_active(
            s.db(),
            &d.id,
            DeploymentStatus::Cancelled,
            Some(CANCELLED_BY_USER),
            now,
        )
        .await?;
    }
    let after = deployment::get(s.db(), &d.id).await?;
    if after.status == DeploymentStatus::Cancelled
        && let Some(invocation) = &after.invocation_id
    {
        // Also on repeats: an earlier call may have failed to reach Restate.
        s.admin().cancel(invocation).await?;
        tracing::info!(deployment_id = %d.id, "deployment cancelled");
    }
    Ok(pb::CancelDeploymentResponse {
        status: status_to_pb(after.status) as i32,
    })
}

/// What the deploy-gate rules need to know about one deployment.
struct GateView {
    row: Deployment,
    is_production: bool,
}

impl GateView {
    fn facts(&self) -> ctrl_core::gate::DeploymentFacts<'_> {
        self.row.gate_facts(self.is_production)
    }
}

async fn gate_view(s: &AppState, field: &str, id: &str) -> Result<GateView, ApiError> {
    validate::id(field, IdKind::Deployment, id)?;
    let row = deployment::get(s.db(), id).await?;
    let env = tenancy::get_environment(s.db(), &row.environment_id).await?;
    Ok(GateView {
        is_production: env.kind == ctrl_db::types::EnvironmentKind::Production,
        row,
    })
}

/// DeploymentService.Rollback: the deploy-gate rules first (same messages
/// as the worker), then the worker's Rollback on the live deployment's
/// Deploy object; returns what was live before.
pub async fn rollback(
    s: &AppState,
    req: pb::RollbackRequest,
) -> Result<pb::RollbackResponse, ApiError> {
    use ctrl_core::workflows::{DEPLOY_SERVICE, LiveSwap, ROLLBACK_HANDLER, RollbackInput};
    let target = gate_view(s, "target_deployment_id", &req.target_deployment_id).await?;
    let app = tenancy::get_app(s.db(), &target.row.app_id).await?;
    let source = if req.source_deployment_id.is_empty() {
        match &app.live_deployment_id {
            Some(live) => Some(gate_view(s, "source_deployment_id", live).await?),
            None => None,
        }
    } else {
        Some(gate_view(s, "source_deployment_id", &req.source_deployment_id).await?)
    };
    ctrl_core::gate::check_rollback(
        source.as_ref().map(GateView::facts).as_ref(),
        &target.facts(),
        &app.gate_facts(),
    )?;
    let source_id = source
        .map(|v| v.row.id)
        .ok_or(ApiError::FailedPrecondition(
            ctrl_core::gate::GateError::NoLiveDeployment.message(),
        ))?;
    let input = RollbackInput {
        source_deployment_id: source_id.clone(),
        target_deployment_id: target.row.id.clone(),
    };
    let swap: LiveSwap = s
        .ingress()
        .call(DEPLOY_SERVICE, &source_id, ROLLBACK_HANDLER, &input)
        .await?;
    tracing::info!(app_id = %app.id, from = %source_id, to = %target.row.id, "rolled back");
    Ok(pb::RollbackResponse {
        previous_deployment_id: swap.previous_deployment_id,
    })
}

/// DeploymentService.Promote: the deploy-gate rules, then the worker's
/// Promote on the target's Deploy object.
pub async fn promote(
    s: &AppState,
    req: pb::PromoteRequest,
) -> Result<pb::PromoteResponse, ApiError> {
    use ctrl_core::workflows::{DEPLOY_SERVICE, LiveSwap, PROMOTE_HANDLER, PromoteInput};
    let target = gate_view(s, "target_deployment_id", &req.target_deployment_id).await?;
    let app = tenancy::get_app(s.db(), &target.row.app_id).await?;
    ctrl_core::gate::check_promote(&target.facts(), &app.gate_facts())?;
    let input = PromoteInput {
        target_deployment_id: target.row.id.clone(),
    };
    let swap: LiveSwap = s
        .ingress()
        .call(DEPLOY_SERVICE, &target.row.id, PROMOTE_HANDLER, &input)
        .await?;
    tracing::info!(app_id = %app.id, to = %target.row.id, "promoted");
    Ok(pb::PromoteResponse {
        previous_deployment_id: swap.previous_deployment_id,
    })
}

/// Stops the deployment through the worker's Deployment object (which
/// checks the stop rules again).
async fn stop_now(s: &AppState, id: &str, actor: &str) -> Result<(), ApiError> {
    use ctrl_core::workflows::{DEPLOYMENT_SERVICE, STOP_HANDLER, StopInput};
    let input = StopInput {
        actor: truncate(actor, 256),
    };
    let _: serde_json::Value = s
        .ingress()
        .call(DEPLOYMENT_SERVICE, id, STOP_HANDLER, &input)
        .await?;
    Ok(())
}

/// DeploymentService.StopDeployment: the stop rules, then the change.
pub async fn stop_deployment(
    s: &AppState,
    req: pb::StopDeploymentRequest,
) -> Result<pb::StopDeploymentResponse, ApiError> {
    let d = gate_view(s, "deployment_id", &req.deployment_id).await?;
    let app = tenancy::get_app(s.db(), &d.row.app_id).await?;
    ctrl_core::gate::check_stop(&d.facts(), &app.gate_facts())?;
    let actor = req.actor.map(|a| a.name).unwrap_or_default();
    stop_now(s, &d.row.id, &actor).await?;
    Ok(pb::StopDeploymentResponse {})
}

/// DeploymentService.WakeDeployment: the wake rules, then the change.
pub async fn wake_deployment(
    s: &AppState,
    req: pb::WakeDeploymentRequest,
) -> Result<pb::WakeDeploymentResponse, ApiError> {
    use ctrl_core::workflows::{DEPLOY_SERVICE, WAKE_HANDLER, WakeInput};
    let d = gate_view(s, "deployment_id", &req.deployment_id).await?;
    ctrl_core::gate::check_wake(&d.facts())?;
    // The worker's Wake runs it like a deploy: desired state running, the
    // wait for instances (with the agents' problems on the step), `ready`.
    // One wake per stop: a retried request lands on the same invocation.
    let input = WakeInput {
        deployment_id: d.row.id.clone(),
    };
    let idempotency = ctrl_core::workflows::wake_idempotency_key(&d.row.id, d.row.updated_at);
    s.ingress()
        .send(
            DEPLOY_SERVICE,
            &d.row.id,
            WAKE_HANDLER,
            &input,
            &idempotency,
        )
        .await?;
    Ok(pb::WakeDeploymentResponse {})
}

/// DeploymentService.DeleteDeployment: the delete rule (never the live
/// deployment on its own), then the worker's durable `Deploy/{id}/Delete`.
pub async fn delete_deployment(
    s: &AppState,
    req: pb::DeleteDeploymentRequest,
) -> Result<pb::DeleteDeploymentResponse, ApiError> {
    use ctrl_core::workflows::{DELETE_DEPLOYMENT_HANDLER, DEPLOY_SERVICE, DeleteDeploymentInput};
    let d = gate_view(s, "deployment_id", &req.deployment_id).await?;
    let app = tenancy::get_app(s.db(), &d.row.app_id).await?;
    ctrl_core::gate::check_delete(&d.facts(), &app.gate_facts())?;
    let input = DeleteDeploymentInput {
        deployment_id: d.row.id.clone(),
        cascade: false,
    };
    s.ingress()
        .send(
            DEPLOY_SERVICE,
            &d.row.id,
            DELETE_DEPLOYMENT_HANDLER,
            &input,
            &format!("delete:{}", d.row.id),
        )
        .await?;
    tracing::info!(deployment_id = %d.row.id, "deletion started");
    Ok(pb::DeleteDeploymentResponse {})
}
