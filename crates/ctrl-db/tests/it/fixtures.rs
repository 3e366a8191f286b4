//! A workspace → project → app → production/preview environments → region
//! hierarchy to hang test rows on.

use ctrl_core::id::{IdKind, generate};
use ctrl_db::cluster;
use ctrl_db::deployment::{self, NewDeployment};
use ctrl_db::settings::RuntimeSettings;
use ctrl_db::tenancy::{self, NewApp, NewEnvironment};
use ctrl_db::types::{EnvironmentKind, SourceKind, TriggerKind};
use sqlx::MySqlPool;

pub(crate) const NOW: i64 = 1_795_000_000_000;

pub(crate) fn id(kind: IdKind) -> String {
    generate(kind, &mut rand::rng())
}

#[derive(Debug, Clone)]
pub(crate) struct Tree {
    pub(crate) workspace: String,
    pub(crate) project: String,
    pub(crate) app: String,
    pub(crate) production: String,
    pub(crate) preview: String,
    pub(crate) region: String,
}

pub(crate) async fn tree(pool: &MySqlPool) -> anyhow::Result<Tree> {
    let t = Tree {
        workspace: id(IdKind::Workspace),
        project: id(IdKind::Project),
        app: id(IdKind::App),
        production: id(IdKind::Environment),
        preview: id(IdKind::Environment),
        region: String::new(),
    };
    let slug = format!("ws{}", &t.workspace[3..11]);
    tenancy::insert_workspace(pool, &t.workspace, "Acme", &slug, NOW).await?;
    tenancy::insert_project(pool, &t.project, &t.workspace, "Shop", "shop", NOW).await?;
    let app = NewApp {
        id: &t.app,
        workspace_id: &t.workspace,
        project_id: &t.project,
        name: "Web",
        slug: "web",
        default_branch: "main",
    };
    tenancy::insert_app(pool, &app, NOW).await?;
    for (env, slug, kind) in [
        (&t.production, "production", EnvironmentKind::Production),
        (&t.preview, "preview", EnvironmentKind::Preview),
    ] {
        let e = NewEnvironment {
            id: env,
            workspace_id: &t.workspace,
            project_id: &t.project,
            app_id: &t.app,
            slug,
            kind,
            description: "",
        };
        tenancy::insert_environment(pool, &e, NOW).await?;
    }
    let mut conn = pool.acquire().await?;
    let region =
        cluster::upsert_region(&mut conn, &id(IdKind::Region), "local", "dev", NOW).await?;
    Ok(Tree {
        region: region.id,
        ..t
    })
}

pub(crate) fn new_deployment(t: &Tree, environment: &str, branch: Option<&str>) -> NewDeployment {
    NewDeployment {
        id: id(IdKind::Deployment),
        k8s_name: ctrl_core::names::random_dns1035(12, &mut rand::rng()),
        workspace_id: t.workspace.clone(),
        project_id: t.project.clone(),
        app_id: t.app.clone(),
        environment_id: environment.to_owned(),
        source_kind: SourceKind::Image,
        image: Some("localhost/demo:1".into()),
        build: None,
        git_repository: None,
        git_commit_sha: Some("abc1234def5678901234567890123456789abcde".into()),
        git_branch: branch.map(str::to_owned),
        git_commit_message: Some("fix: ünïcode ✓".into()),
        git_commit_author_handle: Some("dev".into()),
        git_commit_author_avatar_url: None,
        git_commit_timestamp: Some(NOW - 1000),
        fork_repository: None,
        git_pr_number: None,
        runtime: RuntimeSettings::default(),
        encrypted_environment: vec![0, 159, 146, 150],
        trigger_kind: TriggerKind::Cli,
        trigger_reason: Some("because".into()),
        actor_id: Some("u_1".into()),
        actor_name: Some("Dev".into()),
        actor_type: None,
        idempotency_key: None,
    }
}

pub(crate) async fn deploy(
    pool: &MySqlPool,
    t: &Tree,
    environment: &str,
    branch: Option<&str>,
) -> anyhow::Result<deployment::Deployment> {
    let d = new_deployment(t, environment, branch);
    deployment::insert(pool, &d, NOW).await?;
    Ok(deployment::get(pool, &d.id).await?)
}
