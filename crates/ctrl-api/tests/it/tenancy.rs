use anyhow::Result;
use ctrl_api::error::ApiError;
use ctrl_api::services::tenancy as svc;
use ctrl_db::cluster;
use ctrl_proto::ctrl::v1 as pb;

use crate::state;

async fn workspace(s: &ctrl_api::state::AppState, slug: &str) -> Result<pb::Workspace> {
    let req = pb::CreateWorkspaceRequest {
        name: "Acme".into(),
        slug: slug.into(),
        actor: None,
    };
    Ok(svc::create_workspace(s, req)
        .await?
        .workspace
        .expect("workspace"))
}

fn invalid_field(e: &ApiError) -> &str {
    match e {
        ApiError::InvalidArgument { field, .. } => field,
        other => panic!("expected invalid_argument, got {other:?}"),
    }
}

#[tokio::test]
async fn workspaces_validate_are_unique_and_page_and_deleting_needs_the_worker() -> Result<()> {
    let s = state().await?;
    let ws = workspace(&s, "acme").await?;
    assert!(ws.id.starts_with("ws_"));
    assert_eq!(
        svc::get_workspace(
            &s,
            pb::GetWorkspaceRequest {
                workspace_id: ws.id.clone()
            }
        )
        .await?
        .workspace,
        Some(ws.clone())
    );

    let dup = svc::create_workspace(
        &s,
        pb::CreateWorkspaceRequest {
            name: "x".into(),
            slug: "acme".into(),
            actor: None,
        },
    )
    .await;
    assert_eq!(
        dup.unwrap_err(),
        ApiError::AlreadyExists("a workspace with this slug already exists".into())
    );
    let bad = svc::create_workspace(
        &s,
        pb::CreateWorkspaceRequest {
            name: "x".into(),
            slug: "Bad_Slug".into(),
            actor: None,
        },
    )
    .await;
    assert_eq!(invalid_field(&bad.unwrap_err()), "slug");
    let bad = svc::create_workspace(
        &s,
        pb::CreateWorkspaceRequest {
            name: "".into(),
            slug: "ok".into(),
            actor: None,
        },
    )
    .await;
    assert_eq!(invalid_field(&bad.unwrap_err()), "name");
    let bad_id = svc::get_workspace(
        &s,
        pb::GetWorkspaceRequest {
            workspace_id: "nope".into(),
        },
    )
    .await
    .unwrap_err();
    assert_eq!(invalid_field(&bad_id), "workspace_id");
    let missing = svc::get_workspace(
        &s,
        pb::GetWorkspaceRequest {
            workspace_id: "ws_0000000000000000".into(),
        },
    )
    .await;
    assert_eq!(
        missing.unwrap_err(),
        ApiError::NotFound("workspace not found".into())
    );

    workspace(&s, "beta").await?;
    let first = svc::list_workspaces(
        &s,
        pb::ListWorkspacesRequest {
            page: Some(pb::PageRequest {
                page_size: 1,
                page_token: String::new(),
            }),
        },
    )
    .await?;
    assert_eq!(first.workspaces.len(), 1);
    let token = first.page.unwrap().next_page_token;
    assert!(!token.is_empty());
    let second = svc::list_workspaces(
        &s,
        pb::ListWorkspacesRequest {
            page: Some(pb::PageRequest {
                page_size: 1,
                page_token: token,
            }),
        },
    )
    .await?;
    assert_eq!(second.workspaces[0].slug, "beta");
    assert!(second.page.unwrap().next_page_token.is_empty());

    // A workspace with a project: deleting it is a cascade now.
    svc::create_project(
        &s,
        pb::CreateProjectRequest {
            workspace_id: ws.id.clone(),
            name: "Shop".into(),
            slug: "shop".into(),
            actor: None,
        },
    )
    .await?
    .project
    .unwrap();
    // Deleting starts a cascade in the worker: with Restate unreachable it
    // is refused as unavailable and nothing is marked (see deletion.rs for
    // the cascade itself).
    let unreachable = svc::delete_workspace(
        &s,
        pb::DeleteWorkspaceRequest {
            workspace_id: ws.id.clone(),
            actor: None,
        },
    )
    .await;
    assert!(
        matches!(unreachable, Err(ApiError::Unavailable(_))),
        "{unreachable:?}"
    );
    let still = svc::get_workspace(
        &s,
        pb::GetWorkspaceRequest {
            workspace_id: ws.id.clone(),
        },
    )
    .await?;
    assert!(still.workspace.is_some());
    Ok(())
}

#[tokio::test]
async fn projects_reject_reserved_slugs_and_unknown_workspaces() -> Result<()> {
    let s = state().await?;
    let ws = workspace(&s, "acme").await?;
    let req = |slug: &str, workspace_id: &str| pb::CreateProjectRequest {
        workspace_id: workspace_id.into(),
        name: "P".into(),
        slug: slug.into(),
        actor: None,
    };
    let reserved = svc::create_project(&s, req("api", &ws.id))
        .await
        .unwrap_err();
    assert_eq!(invalid_field(&reserved), "slug");
    assert!(reserved.to_string().contains("reserved"), "{reserved}");
    let unknown = svc::create_project(&s, req("shop", "ws_0000000000000000"))
        .await
        .unwrap_err();
    assert_eq!(unknown, ApiError::NotFound("workspace not found".into()));
    svc::create_project(&s, req("shop", &ws.id)).await?;
    let dup = svc::create_project(&s, req("shop", &ws.id))
        .await
        .unwrap_err();
    assert!(matches!(dup, ApiError::AlreadyExists(_)));
    let listed = svc::list_projects(
        &s,
        pb::ListProjectsRequest {
            workspace_id: ws.id,
            page: None,
        },
    )
    .await?;
    assert_eq!(
        listed
            .projects
            .iter()
            .map(|p| p.slug.as_str())
            .collect::<Vec<_>>(),
        ["shop"]
    );
    Ok(())
}

#[tokio::test]
async fn creating_an_app_creates_production_and_preview_with_defaults_in_the_first_schedulable_region()
-> Result<()> {
    let s = state().await?;
    let ws = workspace(&s, "acme").await?;
    let mut conn = s.db().acquire().await?;
    let off = cluster::upsert_region(&mut conn, "rgn_0000000000000001", "a-off", "dev", 1).await?;
    cluster::set_can_schedule(s.db(), &off.id, false, 1).await?;
    let local =
        cluster::upsert_region(&mut conn, "rgn_0000000000000002", "local", "dev", 1).await?;
    drop(conn);
    let project = svc::create_project(
        &s,
        pb::CreateProjectRequest {
            workspace_id: ws.id.clone(),
            name: "Shop".into(),
            slug: "shop".into(),
            actor: None,
        },
    )
    .await?
    .project
    .unwrap();

    let created = svc::create_app(
        &s,
        pb::CreateAppRequest {
            project_id: project.id.clone(),
            name: "Web".into(),
            slug: "web".into(),
            default_branch: String::new(),
            actor: None,
        },
    )
    .await?;
    let app = created.app.unwrap();
    assert_eq!(
        (
            app.default_branch.as_str(),
            app.live_deployment_id.as_str(),
            app.is_rolled_back
        ),
        ("main", "", false)
    );
    let kinds: Vec<_> = created
        .environments
        .iter()
        .map(|e| (e.slug.as_str(), e.kind))
        .collect();
    assert_eq!(
        kinds,
        [
            ("production", pb::EnvironmentKind::Production as i32),
            ("preview", pb::EnvironmentKind::Preview as i32)
        ]
    );
    for env in &created.environments {
        let runtime = ctrl_db::settings::get_runtime(s.db(), &env.id).await?;
        assert_eq!(
            (runtime.port, runtime.cpu_millicores, runtime.memory_mib),
            (8080, 250, 256)
        );
        ctrl_db::settings::get_build(s.db(), &env.id).await?;
        let regions = ctrl_db::settings::list_regional(s.db(), &env.id).await?;
        assert_eq!(
            regions
                .iter()
                .map(|r| r.region_id.as_str())
                .collect::<Vec<_>>(),
            [local.id.as_str()],
            "the schedulable one"
        );
    }

    let dup = svc::create_app(
        &s,
        pb::CreateAppRequest {
            project_id: project.id.clone(),
            name: "Web".into(),
            slug: "web".into(),
            default_branch: "main".into(),
            actor: None,
        },
    )
    .await;
    assert!(matches!(dup, Err(ApiError::AlreadyExists(_))));
    let bad_branch = svc::create_app(
        &s,
        pb::CreateAppRequest {
            project_id: project.id.clone(),
            name: "Api".into(),
            slug: "api".into(),
            default_branch: "bad..branch".into(),
            actor: None,
        },
    )
    .await;
    assert_eq!(invalid_field(&bad_branch.unwrap_err()), "default_branch");
    assert_eq!(
        svc::list_apps(
            &s,
            pb::ListAppsRequest {
                project_id: project.id.clone(),
                page: None
            }
        )
        .await?
        .apps
        .len(),
        1,
        "nothing half-written by the failures"
    );

    // Environments: more previews, never a second production, never delete production.
    svc::create_environment(
        &s,
        pb::CreateEnvironmentRequest {
            app_id: app.id.clone(),
            slug: "staging".into(),
            kind: pb::EnvironmentKind::Preview as i32,
            description: "QA".into(),
            actor: None,
        },
    )
    .await?
    .environment
    .unwrap();
    let prod2 = svc::create_environment(
        &s,
        pb::CreateEnvironmentRequest {
            app_id: app.id.clone(),
            slug: "prod2".into(),
            kind: pb::EnvironmentKind::Production as i32,
            description: String::new(),
            actor: None,
        },
    )
    .await;
    assert_eq!(invalid_field(&prod2.unwrap_err()), "kind");
    let listed = svc::list_environments(
        &s,
        pb::ListEnvironmentsRequest {
            app_id: app.id.clone(),
        },
    )
    .await?;
    assert_eq!(
        listed
            .environments
            .iter()
            .map(|e| e.slug.as_str())
            .collect::<Vec<_>>(),
        ["production", "preview", "staging"]
    );
    let production = &created.environments[0];
    let refused = svc::delete_environment(
        &s,
        pb::DeleteEnvironmentRequest {
            environment_id: production.id.clone(),
            actor: None,
        },
    )
    .await;
    assert!(matches!(refused, Err(ApiError::FailedPrecondition(_))));
    Ok(())
}

#[tokio::test]
async fn regions_are_listed_and_toggled() -> Result<()> {
    let s = state().await?;
    let mut conn = s.db().acquire().await?;
    let r = cluster::upsert_region(&mut conn, "rgn_0000000000000003", "local", "dev", 1).await?;
    drop(conn);
    let updated = svc::update_region(
        &s,
        pb::UpdateRegionRequest {
            region_id: r.id.clone(),
            can_schedule: false,
            actor: None,
        },
    )
    .await?;
    assert!(!updated.region.unwrap().can_schedule);
    let listed = svc::list_regions(&s, pb::ListRegionsRequest {}).await?;
    assert_eq!(listed.regions.len(), 1);
    let missing = svc::update_region(
        &s,
        pb::UpdateRegionRequest {
            region_id: "rgn_0000000000000009".into(),
            can_schedule: true,
            actor: None,
        },
    )
    .await;
    assert!(matches!(missing, Err(ApiError::NotFound(_))));
    Ok(())
}
