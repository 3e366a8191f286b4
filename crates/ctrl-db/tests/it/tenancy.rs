use anyhow::Result;
use ctrl_core::id::IdKind;
use ctrl_db::Error;
use ctrl_db::tenancy::{self, NewEnvironment};
use ctrl_db::types::EnvironmentKind;
use ctrl_testkit::test_database;

use crate::fixtures::{NOW, id, tree};

#[tokio::test]
async fn workspaces_insert_get_list_page_namespace_and_delete() -> Result<()> {
    let db = test_database().await?;
    let p = &db.pool;
    let ids: Vec<String> = (0..3).map(|_| id(IdKind::Workspace)).collect();
    for (i, ws) in ids.iter().enumerate() {
        tenancy::insert_workspace(p, ws, "Acme", &format!("acme-{i}"), NOW + i as i64).await?;
    }
    let dup = tenancy::insert_workspace(p, &id(IdKind::Workspace), "x", "acme-0", NOW).await;
    assert!(
        matches!(dup, Err(Error::AlreadyExists { ref key }) if key == "workspaces_slug"),
        "{dup:?}"
    );

    let ws = tenancy::get_workspace(p, &ids[1]).await?;
    assert_eq!(
        (ws.slug.as_str(), ws.created_at, ws.k8s_namespace),
        ("acme-1", NOW + 1, None)
    );

    let first = tenancy::list_workspaces(p, 0, 2).await?;
    assert_eq!(
        first.items.iter().map(|w| &w.id).collect::<Vec<_>>(),
        [&ids[0], &ids[1]]
    );
    let second = tenancy::list_workspaces(p, first.next_cursor.expect("more"), 2).await?;
    assert_eq!(second.items.len(), 1);
    assert_eq!(second.next_cursor, None);

    let mut conn = p.acquire().await?;
    assert_eq!(
        tenancy::ensure_k8s_namespace(&mut conn, &ids[0], "ns-first", NOW).await?,
        "ns-first"
    );
    assert_eq!(
        tenancy::ensure_k8s_namespace(&mut conn, &ids[0], "ns-second", NOW).await?,
        "ns-first"
    );

    assert!(tenancy::delete_workspace(p, &ids[2]).await?);
    assert!(!tenancy::delete_workspace(p, &ids[2]).await?);
    assert!(matches!(
        tenancy::get_workspace(p, &ids[2]).await,
        Err(Error::NotFound("workspace"))
    ));
    Ok(())
}

/// Two pipelines claiming deployments of a fresh workspace at once: the
/// second transaction read the workspace (its snapshot: no namespace)
/// before the first committed its namespace; it must see the winner's.
#[tokio::test]
async fn a_concurrent_namespace_assignment_sees_the_winner() -> Result<()> {
    let db = test_database().await?;
    let p = &db.pool;
    let t = tree(p).await?;
    let mut late = p.begin().await?;
    assert_eq!(
        tenancy::get_workspace(&mut *late, &t.workspace)
            .await?
            .k8s_namespace,
        None
    );
    let mut first = p.begin().await?;
    assert_eq!(
        tenancy::ensure_k8s_namespace(&mut first, &t.workspace, "ns-first", NOW).await?,
        "ns-first"
    );
    first.commit().await?;
    assert_eq!(
        tenancy::ensure_k8s_namespace(&mut late, &t.workspace, "ns-late", NOW).await?,
        "ns-first"
    );
    late.commit().await?;
    Ok(())
}

#[tokio::test]
async fn projects_and_apps() -> Result<()> {
    let db = test_database().await?;
    let p = &db.pool;
    let t = tree(p).await?;

    let project = tenancy::get_project(p, &t.project).await?;
    assert_eq!(
        (project.slug.as_str(), project.workspace_id.as_str()),
        ("shop", t.workspace.as_str())
    );
    let dup =
        tenancy::insert_project(p, &id(IdKind::Project), &t.workspace, "Again", "shop", NOW).await;
    assert!(
        matches!(dup, Err(Error::AlreadyExists { ref key }) if key == "projects_workspace_slug")
    );
    assert_eq!(tenancy::count_projects(p, &t.workspace).await?, 1);
    assert_eq!(
        tenancy::list_projects(p, &t.workspace, 0, 10).await?.items,
        [project]
    );

    let app = tenancy::get_app(p, &t.app).await?;
    assert_eq!(
        (
            app.slug.as_str(),
            app.default_branch.as_str(),
            app.is_rolled_back
        ),
        ("web", "main", false)
    );
    assert_eq!(tenancy::count_apps(p, &t.project).await?, 1);
    assert_eq!(
        tenancy::list_apps(p, &t.project, 0, 10).await?.items.len(),
        1
    );

    assert!(tenancy::delete_app(p, &t.app).await?);
    assert!(matches!(
        tenancy::get_app(p, &t.app).await,
        Err(Error::NotFound("app"))
    ));
    assert!(tenancy::delete_project(p, &t.project).await?);
    assert_eq!(tenancy::count_projects(p, &t.workspace).await?, 0);
    Ok(())
}

#[tokio::test]
async fn the_live_pointer_swaps_atomically_and_clears_only_if_unchanged() -> Result<()> {
    let db = test_database().await?;
    let t = tree(&db.pool).await?;
    let mut tx = db.pool.begin().await?;
    assert_eq!(
        tenancy::swap_live_deployment(&mut tx, &t.app, "d_first", false, "op-1", NOW).await?,
        None
    );
    assert_eq!(
        tenancy::swap_live_deployment(&mut tx, &t.app, "d_second", true, "op-2", NOW).await?,
        Some("d_first".into())
    );
    tx.commit().await?;
    // The same operation again (a replay after a crash): the same answer,
    // nothing changed — not "d_second was live before d_second".
    let mut conn = db.pool.acquire().await?;
    assert_eq!(
        tenancy::swap_live_deployment(&mut conn, &t.app, "d_second", true, "op-2", NOW).await?,
        Some("d_first".into())
    );
    drop(conn);
    let app = tenancy::get_app(&db.pool, &t.app).await?;
    assert_eq!(
        (app.live_deployment_id.as_deref(), app.is_rolled_back),
        (Some("d_second"), true)
    );

    assert!(!tenancy::clear_live_deployment_if(&db.pool, &t.app, "d_first", NOW).await?);
    assert!(tenancy::clear_live_deployment_if(&db.pool, &t.app, "d_second", NOW).await?);
    assert_eq!(
        tenancy::get_app(&db.pool, &t.app).await?.live_deployment_id,
        None
    );

    let mut conn = db.pool.acquire().await?;
    let missing =
        tenancy::swap_live_deployment(&mut conn, "app_missing", "d_x", false, "op-3", NOW).await;
    assert!(matches!(missing, Err(Error::NotFound("app"))));
    Ok(())
}

#[tokio::test]
async fn environments_one_production_per_app_and_lookups() -> Result<()> {
    let db = test_database().await?;
    let p = &db.pool;
    let t = tree(p).await?;
    let second_prod = NewEnvironment {
        id: &id(IdKind::Environment),
        workspace_id: &t.workspace,
        project_id: &t.project,
        app_id: &t.app,
        slug: "prod2",
        kind: EnvironmentKind::Production,
        description: "",
    };
    let err = tenancy::insert_environment(p, &second_prod, NOW).await;
    assert!(
        matches!(err, Err(Error::AlreadyExists { ref key }) if key == "environments_one_production"),
        "{err:?}"
    );
    let staging = NewEnvironment {
        slug: "staging",
        kind: EnvironmentKind::Preview,
        ..second_prod
    };
    tenancy::insert_environment(p, &staging, NOW).await?;
    let dup_slug = NewEnvironment {
        id: &id(IdKind::Environment),
        ..staging.clone()
    };
    assert!(matches!(
        tenancy::insert_environment(p, &dup_slug, NOW).await,
        Err(Error::AlreadyExists { .. })
    ));

    let envs = tenancy::list_environments(p, &t.app).await?;
    let slugs: Vec<_> = envs.iter().map(|e| e.slug.as_str()).collect();
    assert_eq!(
        slugs,
        ["production", "preview", "staging"],
        "production first, then by slug"
    );
    assert_eq!(envs[0].kind, EnvironmentKind::Production);

    let prod = tenancy::find_environment_by_slug(p, &t.app, "production").await?;
    assert_eq!(prod.id, t.production);
    assert_eq!(
        tenancy::get_environment(p, &t.preview).await?.kind,
        EnvironmentKind::Preview
    );
    assert!(matches!(
        tenancy::find_environment_by_slug(p, &t.app, "nope").await,
        Err(Error::NotFound(_))
    ));
    assert!(tenancy::delete_environment(p, staging.id).await?);
    Ok(())
}
