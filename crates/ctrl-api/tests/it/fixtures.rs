//! Shared test data: a workspace → project → app with its two environments,
//! and deployment rows in a given status.

use anyhow::Result;
use ctrl_api::services::tenancy;
use ctrl_api::state::AppState;
use ctrl_core::status::DeploymentStatus;
use ctrl_db::deployment::{self, NewDeployment};
use ctrl_db::types::{SourceKind, TriggerKind};
use ctrl_db::{cluster, settings};
use ctrl_proto::ctrl::v1 as pb;

/// The region [`app`] creates when asked for one.
pub(crate) const REGION_ID: &str = "rgn_00000000000000ab";

/// An app and its environments.
pub(crate) struct AppFixture {
    pub(crate) app: pb::App,
    pub(crate) production: pb::Environment,
    pub(crate) preview: pb::Environment,
}

/// Workspace `acme`, project `shop`, app `web`; with `with_region`, a
/// schedulable region `local` exists first, so both environments run there.
pub(crate) async fn app(s: &AppState, with_region: bool) -> Result<AppFixture> {
    let ws = tenancy::create_workspace(
        s,
        pb::CreateWorkspaceRequest {
            name: "A".into(),
            slug: "acme".into(),
            actor: None,
        },
    )
    .await?
    .workspace
    .expect("workspace");
    let p = tenancy::create_project(
        s,
        pb::CreateProjectRequest {
            workspace_id: ws.id,
            name: "P".into(),
            slug: "shop".into(),
            actor: None,
        },
    )
    .await?
    .project
    .expect("project");
    if with_region {
        let mut conn = s.db().acquire().await?;
        cluster::upsert_region(&mut conn, REGION_ID, "local", "dev", 1).await?;
    }
    let created = tenancy::create_app(
        s,
        pb::CreateAppRequest {
            project_id: p.id,
            name: "Web".into(),
            slug: "web".into(),
            default_branch: String::new(),
            actor: None,
        },
    )
    .await?;
    let mut envs = created.environments.into_iter();
    Ok(AppFixture {
        app: created.app.expect("app"),
        production: envs.next().expect("production"),
        preview: envs.next().expect("preview"),
    })
}

/// A deployment row of `app` in `environment_id` with `status`; its id ends
/// in `id_suffix` (for stand-ins that react to particular ids).
pub(crate) async fn deployment(
    s: &AppState,
    app: &pb::App,
    environment_id: &str,
    branch: Option<&str>,
    status: DeploymentStatus,
    id_suffix: &str,
) -> Result<String> {
    deployment_of_pr(s, app, environment_id, branch, None, status, id_suffix).await
}

/// [`deployment`], made for pull request `pr_number` (when given).
pub(crate) async fn deployment_of_pr(
    s: &AppState,
    app: &pb::App,
    environment_id: &str,
    branch: Option<&str>,
    pr_number: Option<u32>,
    status: DeploymentStatus,
    id_suffix: &str,
) -> Result<String> {
    let random = ctrl_core::id::generate(ctrl_core::id::IdKind::Deployment, &mut rand::rng());
    let id = format!("{}{id_suffix}", &random[..random.len() - id_suffix.len()]);
    let d = NewDeployment {
        id: id.clone(),
        k8s_name: ctrl_core::names::random_dns1035(12, &mut rand::rng()),
        workspace_id: app.workspace_id.clone(),
        project_id: app.project_id.clone(),
        app_id: app.id.clone(),
        environment_id: environment_id.into(),
        source_kind: SourceKind::Image,
        image: Some("localhost/demo:1".into()),
        build: None,
        git_repository: None,
        git_commit_sha: Some("abc1234def5678901234567890123456789abcde".into()),
        git_branch: branch.map(str::to_owned),
        git_commit_message: Some("ship it".into()),
        git_commit_author_handle: None,
        git_commit_author_avatar_url: None,
        git_commit_timestamp: None,
        fork_repository: None,
        git_pr_number: pr_number,
        runtime: settings::RuntimeSettings::default(),
        encrypted_environment: Vec::new(),
        trigger_kind: TriggerKind::Cli,
        trigger_reason: None,
        actor_id: Some("dev".into()),
        actor_name: None,
        actor_type: None,
        idempotency_key: None,
    };
    deployment::insert(s.db(), &d, s.now_ms()).await?;
    if status != DeploymentStatus::Pending {
        deployment::compare_and_set_status(
            s.db(),
            &id,
            DeploymentStatus::Pending,
            status,
            s.now_ms(),
        )
        .await?;
    }
    Ok(id)
}
