//! WorkspaceService, ProjectService, AppService (create/get/list/delete),
//! EnvironmentService and RegionService: validation, then ctrl-db.

use ctrl_core::id::{self, IdKind};
use ctrl_db::settings::{self, BuildSettings, RegionPolicy, RuntimeSettings, Scope};
use ctrl_db::types::EnvironmentKind;
use ctrl_db::{cluster, tenancy};
use ctrl_proto::ctrl::v1 as pb;

use crate::error::ApiError;
use crate::paging::{self, Page};
use crate::state::AppState;
use crate::validate;

fn new_id(kind: IdKind) -> String {
    id::generate(kind, &mut rand::rng())
}

// === workspaces ===

fn workspace(w: tenancy::Workspace) -> pb::Workspace {
    pb::Workspace {
        id: w.id,
        name: w.name,
        slug: w.slug,
        created_at: w.created_at,
        updated_at: w.updated_at,
    }
}

/// WorkspaceService.CreateWorkspace
pub async fn create_workspace(
    s: &AppState,
    req: pb::CreateWorkspaceRequest,
) -> Result<pb::CreateWorkspaceResponse, ApiError> {
    validate::name("name", &req.name)?;
    validate::slug("slug", &req.slug)?;
    let id = new_id(IdKind::Workspace);
    tenancy::insert_workspace(s.db(), &id, &req.name, &req.slug, s.now_ms()).await?;
    let w = tenancy::get_workspace(s.db(), &id).await?;
    Ok(pb::CreateWorkspaceResponse {
        workspace: Some(workspace(w)),
    })
}

/// WorkspaceService.GetWorkspace
pub async fn get_workspace(
    s: &AppState,
    req: pb::GetWorkspaceRequest,
) -> Result<pb::GetWorkspaceResponse, ApiError> {
    validate::id("workspace_id", IdKind::Workspace, &req.workspace_id)?;
    let w = tenancy::get_workspace(s.db(), &req.workspace_id).await?;
    Ok(pb::GetWorkspaceResponse {
        workspace: Some(workspace(w)),
    })
}

/// WorkspaceService.ListWorkspaces
pub async fn list_workspaces(
    s: &AppState,
    req: pb::ListWorkspacesRequest,
) -> Result<pb::ListWorkspacesResponse, ApiError> {
    let page = Page::from_request(req.page.as_ref())?;
    let rows = tenancy::list_workspaces(s.db(), page.cursor, page.size).await?;
    Ok(pb::ListWorkspacesResponse {
        workspaces: rows.items.into_iter().map(workspace).collect(),
        page: Some(paging::response(rows.next_cursor)),
    })
}

/// WorkspaceService.DeleteWorkspace: only an empty workspace.
pub async fn delete_workspace(
    s: &AppState,
    req: pb::DeleteWorkspaceRequest,
) -> Result<pb::DeleteWorkspaceResponse, ApiError> {
    validate::id("workspace_id", IdKind::Workspace, &req.workspace_id)?;
    tenancy::get_workspace(s.db(), &req.workspace_id).await?;
    start_deletion(s, ctrl_db::deletion::Scope::Workspace(&req.workspace_id)).await?;
    Ok(pb::DeleteWorkspaceResponse {})
}

/// Refuses to create anything under a row a deletion cascade removes.
pub(crate) fn not_deleting(what: &str, deleting_at: Option<i64>) -> Result<(), ApiError> {
    match deleting_at {
        Some(_) => Err(ApiError::FailedPrecondition(format!(
            "the {what} is being deleted"
        ))),
        None => Ok(()),
    }
}

/// Starts the durable cascade deleting `scope` and everything below it:
/// refused while something in it is protected; hands it to the worker's
/// `Deletion` object, then marks it deleting (nothing new is created under
/// it from now on). A repeated request joins the same cascade.
async fn start_deletion(s: &AppState, scope: ctrl_db::deletion::Scope<'_>) -> Result<(), ApiError> {
    use ctrl_core::workflows::{DELETION_HANDLER, DELETION_SERVICE, DeletionInput};
    let mut conn = s.db().acquire().await.map_err(ctrl_db::Error::from)?;
    if let Some((kind, slug)) = ctrl_db::deletion::protected(&mut conn, scope).await? {
        return Err(ApiError::FailedPrecondition(format!(
            "the {kind} {slug:?} is protected against deletion"
        )));
    }
    let input = DeletionInput {
        id: scope.id().to_owned(),
    };
    s.ingress()
        .send(
            DELETION_SERVICE,
            scope.id(),
            DELETION_HANDLER,
            &input,
            &format!("delete:{}", scope.id()),
        )
        .await?;
    // The cascade marks it first thing too; marking here as well makes the
    // refusal to create under it immediate.
    let mut tx = s.db().begin().await.map_err(ctrl_db::Error::from)?;
    ctrl_db::deletion::mark(&mut tx, scope, s.now_ms()).await?;
    tx.commit().await.map_err(ctrl_db::Error::from)?;
    tracing::info!(id = %scope.id(), "deletion started");
    Ok(())
}

// === projects ===

fn project(p: tenancy::Project) -> pb::Project {
    pb::Project {
        id: p.id,
        workspace_id: p.workspace_id,
        name: p.name,
        slug: p.slug,
        delete_protection: p.delete_protection,
        created_at: p.created_at,
        updated_at: p.updated_at,
    }
}

/// ProjectService.CreateProject
pub async fn create_project(
    s: &AppState,
    req: pb::CreateProjectRequest,
) -> Result<pb::CreateProjectResponse, ApiError> {
    validate::id("workspace_id", IdKind::Workspace, &req.workspace_id)?;
    validate::name("name", &req.name)?;
    validate::project_slug("slug", &req.slug)?;
    let ws = tenancy::get_workspace(s.db(), &req.workspace_id).await?;
    not_deleting("workspace", ws.deleting_at)?;
    let id = new_id(IdKind::Project);
    tenancy::insert_project(
        s.db(),
        &id,
        &req.workspace_id,
        &req.name,
        &req.slug,
        s.now_ms(),
    )
    .await?;
    Ok(pb::CreateProjectResponse {
        project: Some(project(tenancy::get_project(s.db(), &id).await?)),
    })
}

/// ProjectService.GetProject
pub async fn get_project(
    s: &AppState,
    req: pb::GetProjectRequest,
) -> Result<pb::GetProjectResponse, ApiError> {
    validate::id("project_id", IdKind::Project, &req.project_id)?;
    Ok(pb::GetProjectResponse {
        project: Some(project(
            tenancy::get_project(s.db(), &req.project_id).await?,
        )),
    })
}

/// ProjectService.ListProjects
pub async fn list_projects(
    s: &AppState,
    req: pb::ListProjectsRequest,
) -> Result<pb::ListProjectsResponse, ApiError> {
    validate::id("workspace_id", IdKind::Workspace, &req.workspace_id)?;
    let page = Page::from_request(req.page.as_ref())?;
    tenancy::get_workspace(s.db(), &req.workspace_id).await?;
    let rows = tenancy::list_projects(s.db(), &req.workspace_id, page.cursor, page.size).await?;
    Ok(pb::ListProjectsResponse {
        projects: rows.items.into_iter().map(project).collect(),
        page: Some(paging::response(rows.next_cursor)),
    })
}

/// ProjectService.DeleteProject: refused under delete protection or while
/// apps remain (the durable cascade over apps arrives with the worker).
pub async fn delete_project(
    s: &AppState,
    req: pb::DeleteProjectRequest,
) -> Result<pb::DeleteProjectResponse, ApiError> {
    validate::id("project_id", IdKind::Project, &req.project_id)?;
    let p = tenancy::get_project(s.db(), &req.project_id).await?;
    start_deletion(s, ctrl_db::deletion::Scope::Project(&p.id)).await?;
    Ok(pb::DeleteProjectResponse {})
}

// === apps ===

fn app(a: tenancy::App) -> pb::App {
    pb::App {
        id: a.id,
        workspace_id: a.workspace_id,
        project_id: a.project_id,
        name: a.name,
        slug: a.slug,
        default_branch: a.default_branch,
        live_deployment_id: a.live_deployment_id.unwrap_or_default(),
        is_rolled_back: a.is_rolled_back,
        delete_protection: a.delete_protection,
        created_at: a.created_at,
        updated_at: a.updated_at,
    }
}

fn environment(e: tenancy::Environment) -> pb::Environment {
    pb::Environment {
        id: e.id,
        workspace_id: e.workspace_id,
        project_id: e.project_id,
        app_id: e.app_id,
        slug: e.slug,
        kind: match e.kind {
            EnvironmentKind::Production => pb::EnvironmentKind::Production,
            EnvironmentKind::Preview => pb::EnvironmentKind::Preview,
        } as i32,
        description: e.description,
        created_at: e.created_at,
        updated_at: e.updated_at,
    }
}

/// AppService.CreateApp: the app, its `production` and `preview`
/// environments and their default settings, in one transaction. Each
/// environment starts in the first schedulable region (by platform, then
/// name) with one replica, if any region exists yet.
pub async fn create_app(
    s: &AppState,
    req: pb::CreateAppRequest,
) -> Result<pb::CreateAppResponse, ApiError> {
    validate::id("project_id", IdKind::Project, &req.project_id)?;
    validate::name("name", &req.name)?;
    validate::slug("slug", &req.slug)?;
    let default_branch = if req.default_branch.is_empty() {
        "main"
    } else {
        req.default_branch.as_str()
    };
    validate::branch("default_branch", default_branch)?;
    let project = tenancy::get_project(s.db(), &req.project_id).await?;
    not_deleting("project", project.deleting_at)?;
    let first_region = cluster::list_regions(s.db())
        .await?
        .into_iter()
        .find(|r| r.can_schedule);

    let now = s.now_ms();
    let app_id = new_id(IdKind::App);
    let mut tx = s.db().begin().await.map_err(ctrl_db::Error::from)?;
    let new = tenancy::NewApp {
        id: &app_id,
        workspace_id: &project.workspace_id,
        project_id: &project.id,
        name: &req.name,
        slug: &req.slug,
        default_branch,
    };
    tenancy::insert_app(&mut *tx, &new, now).await?;
    for (slug, kind) in [
        ("production", EnvironmentKind::Production),
        ("preview", EnvironmentKind::Preview),
    ] {
        let env_id = new_id(IdKind::Environment);
        let env = tenancy::NewEnvironment {
            id: &env_id,
            workspace_id: &project.workspace_id,
            project_id: &project.id,
            app_id: &app_id,
            slug,
            kind,
            description: "",
        };
        tenancy::insert_environment(&mut *tx, &env, now).await?;
        let scope = Scope {
            workspace_id: &project.workspace_id,
            app_id: &app_id,
            environment_id: &env_id,
        };
        settings::upsert_build(&mut *tx, scope, &BuildSettings::default(), now).await?;
        settings::upsert_runtime(&mut *tx, scope, &RuntimeSettings::default(), now).await?;
        if let Some(region) = &first_region {
            let policy = RegionPolicy {
                region_id: &region.id,
                min_replicas: 1,
                max_replicas: 1,
                cpu_threshold_percent: 0,
                memory_threshold_percent: 0,
            };
            settings::replace_regional(&mut tx, scope, &[policy], now).await?;
        }
    }
    tx.commit().await.map_err(ctrl_db::Error::from)?;

    let app_row = tenancy::get_app(s.db(), &app_id).await?;
    let environments = tenancy::list_environments(s.db(), &app_id).await?;
    Ok(pb::CreateAppResponse {
        app: Some(app(app_row)),
        environments: environments.into_iter().map(environment).collect(),
    })
}

/// AppService.GetApp
pub async fn get_app(s: &AppState, req: pb::GetAppRequest) -> Result<pb::GetAppResponse, ApiError> {
    validate::id("app_id", IdKind::App, &req.app_id)?;
    Ok(pb::GetAppResponse {
        app: Some(app(tenancy::get_app(s.db(), &req.app_id).await?)),
    })
}

/// AppService.ListApps
pub async fn list_apps(
    s: &AppState,
    req: pb::ListAppsRequest,
) -> Result<pb::ListAppsResponse, ApiError> {
    validate::id("project_id", IdKind::Project, &req.project_id)?;
    let page = Page::from_request(req.page.as_ref())?;
    tenancy::get_project(s.db(), &req.project_id).await?;
    let rows = tenancy::list_apps(s.db(), &req.project_id, page.cursor, page.size).await?;
    Ok(pb::ListAppsResponse {
        apps: rows.items.into_iter().map(app).collect(),
        page: Some(paging::response(rows.next_cursor)),
    })
}

/// AppService.DeleteApp: refused under delete protection or while
/// deployments remain (the durable cascade arrives with the worker).
pub async fn delete_app(
    s: &AppState,
    req: pb::DeleteAppRequest,
) -> Result<pb::DeleteAppResponse, ApiError> {
    validate::id("app_id", IdKind::App, &req.app_id)?;
    let a = tenancy::get_app(s.db(), &req.app_id).await?;
    start_deletion(s, ctrl_db::deletion::Scope::App(&a.id)).await?;
    Ok(pb::DeleteAppResponse {})
}

// === environments ===

/// EnvironmentService.CreateEnvironment: preview-kind environments only (the
/// production one comes with the app), with default settings copied from
/// nothing — the defaults.
pub async fn create_environment(
    s: &AppState,
    req: pb::CreateEnvironmentRequest,
) -> Result<pb::CreateEnvironmentResponse, ApiError> {
    validate::id("app_id", IdKind::App, &req.app_id)?;
    validate::slug("slug", &req.slug)?;
    match pb::EnvironmentKind::try_from(req.kind) {
        Ok(pb::EnvironmentKind::Preview) => {}
        Ok(pb::EnvironmentKind::Production) => {
            return Err(ApiError::invalid(
                "kind",
                "the app already has its production environment; only PREVIEW can be created",
            ));
        }
        _ => {
            return Err(ApiError::invalid(
                "kind",
                "must be ENVIRONMENT_KIND_PREVIEW",
            ));
        }
    }
    if req.description.chars().count() > 512 {
        return Err(ApiError::invalid(
            "description",
            "must be at most 512 characters",
        ));
    }
    let a = tenancy::get_app(s.db(), &req.app_id).await?;
    not_deleting("app", a.deleting_at)?;
    let now = s.now_ms();
    let env_id = new_id(IdKind::Environment);
    let mut tx = s.db().begin().await.map_err(ctrl_db::Error::from)?;
    let env = tenancy::NewEnvironment {
        id: &env_id,
        workspace_id: &a.workspace_id,
        project_id: &a.project_id,
        app_id: &a.id,
        slug: &req.slug,
        kind: EnvironmentKind::Preview,
        description: &req.description,
    };
    tenancy::insert_environment(&mut *tx, &env, now).await?;
    let scope = Scope {
        workspace_id: &a.workspace_id,
        app_id: &a.id,
        environment_id: &env_id,
    };
    settings::upsert_build(&mut *tx, scope, &BuildSettings::default(), now).await?;
    settings::upsert_runtime(&mut *tx, scope, &RuntimeSettings::default(), now).await?;
    tx.commit().await.map_err(ctrl_db::Error::from)?;
    Ok(pb::CreateEnvironmentResponse {
        environment: Some(environment(
            tenancy::get_environment(s.db(), &env_id).await?,
        )),
    })
}

/// EnvironmentService.GetEnvironment
pub async fn get_environment(
    s: &AppState,
    req: pb::GetEnvironmentRequest,
) -> Result<pb::GetEnvironmentResponse, ApiError> {
    validate::id("environment_id", IdKind::Environment, &req.environment_id)?;
    Ok(pb::GetEnvironmentResponse {
        environment: Some(environment(
            tenancy::get_environment(s.db(), &req.environment_id).await?,
        )),
    })
}

/// EnvironmentService.ListEnvironments
pub async fn list_environments(
    s: &AppState,
    req: pb::ListEnvironmentsRequest,
) -> Result<pb::ListEnvironmentsResponse, ApiError> {
    validate::id("app_id", IdKind::App, &req.app_id)?;
    tenancy::get_app(s.db(), &req.app_id).await?;
    let envs = tenancy::list_environments(s.db(), &req.app_id).await?;
    Ok(pb::ListEnvironmentsResponse {
        environments: envs.into_iter().map(environment).collect(),
    })
}

/// EnvironmentService.DeleteEnvironment: never the production environment;
/// refused while deployments remain (the durable cascade arrives with the worker).
pub async fn delete_environment(
    s: &AppState,
    req: pb::DeleteEnvironmentRequest,
) -> Result<pb::DeleteEnvironmentResponse, ApiError> {
    validate::id("environment_id", IdKind::Environment, &req.environment_id)?;
    let env = tenancy::get_environment(s.db(), &req.environment_id).await?;
    if env.kind == EnvironmentKind::Production {
        return Err(ApiError::FailedPrecondition(
            "the production environment cannot be deleted on its own; delete the app".into(),
        ));
    }
    start_deletion(s, ctrl_db::deletion::Scope::Environment(&env.id)).await?;
    Ok(pb::DeleteEnvironmentResponse {})
}

// === regions ===

fn region(r: cluster::Region) -> pb::Region {
    pb::Region {
        id: r.id,
        name: r.name,
        platform: r.platform,
        can_schedule: r.can_schedule,
        last_heartbeat_at: r.last_heartbeat_at,
    }
}

/// RegionService.ListRegions
pub async fn list_regions(
    s: &AppState,
    _req: pb::ListRegionsRequest,
) -> Result<pb::ListRegionsResponse, ApiError> {
    Ok(pb::ListRegionsResponse {
        regions: cluster::list_regions(s.db())
            .await?
            .into_iter()
            .map(region)
            .collect(),
    })
}

/// RegionService.UpdateRegion
pub async fn update_region(
    s: &AppState,
    req: pb::UpdateRegionRequest,
) -> Result<pb::UpdateRegionResponse, ApiError> {
    validate::id("region_id", IdKind::Region, &req.region_id)?;
    cluster::set_can_schedule(s.db(), &req.region_id, req.can_schedule, s.now_ms()).await?;
    Ok(pb::UpdateRegionResponse {
        region: Some(region(cluster::get_region(s.db(), &req.region_id).await?)),
    })
}
