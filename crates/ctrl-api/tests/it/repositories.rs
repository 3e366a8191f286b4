//! RepositoryService: apps connected to GitHub repositories — connect
//! (replacing), list, disconnect, and bad input named by its field.

use anyhow::Result;
use ctrl_api::error::ApiError;
use ctrl_api::services::repository as svc;
use ctrl_api::services::tenancy;
use ctrl_proto::ctrl::v1 as pb;

use crate::{TOKEN, serve, state};

fn connect(app_id: &str, repository: &str, installation_id: i64) -> pb::ConnectRepositoryRequest {
    pb::ConnectRepositoryRequest {
        app_id: app_id.into(),
        repository: repository.into(),
        installation_id,
    }
}

fn list(workspace_id: &str, app_id: &str) -> pb::ListRepositoryConnectionsRequest {
    pb::ListRepositoryConnectionsRequest {
        workspace_id: workspace_id.into(),
        app_id: app_id.into(),
    }
}

fn disconnect(app_id: &str) -> pb::DisconnectRepositoryRequest {
    pb::DisconnectRepositoryRequest {
        app_id: app_id.into(),
    }
}

/// The field an `invalid_argument` names.
fn field(e: ApiError) -> String {
    match e {
        ApiError::InvalidArgument { field, .. } => field,
        other => panic!("expected invalid_argument, got {other:?}"),
    }
}

#[tokio::test]
async fn connect_replace_list_and_disconnect_round_trip() -> Result<()> {
    let s = state().await?;
    let f = crate::fixtures::app(&s, false).await?;
    let app = &f.app;
    // A second app in the same project, connected to the same repository
    // (a monorepo feeds several apps).
    let other = tenancy::create_app(
        &s,
        pb::CreateAppRequest {
            project_id: app.project_id.clone(),
            name: "Api".into(),
            slug: "api".into(),
            default_branch: String::new(),
            actor: None,
        },
    )
    .await?
    .app
    .expect("app");

    let first = svc::connect_repository(&s, connect(&app.id, "acme/web", 11))
        .await?
        .connection
        .expect("connection");
    assert_eq!(
        (
            first.app_id.as_str(),
            first.project_id.as_str(),
            first.workspace_id.as_str(),
            first.repository.as_str(),
            first.installation_id,
            first.repository_id,
        ),
        (
            app.id.as_str(),
            app.project_id.as_str(),
            app.workspace_id.as_str(),
            "acme/web",
            11,
            0
        )
    );
    assert!(first.created_at > 0);
    svc::connect_repository(&s, connect(&other.id, "acme/web", 11)).await?;

    let all = svc::list_repository_connections(&s, list(&app.workspace_id, ""))
        .await?
        .connections;
    let apps: Vec<&str> = all.iter().map(|c| c.app_id.as_str()).collect();
    assert_eq!(apps, [app.id.as_str(), other.id.as_str()], "oldest first");
    let one = svc::list_repository_connections(&s, list(&app.workspace_id, &app.id))
        .await?
        .connections;
    assert_eq!(one, std::slice::from_ref(&first));

    // Once a webhook told GitHub's id, the connection shows it; connecting
    // the app again replaces its connection (one per app).
    ctrl_db::github::learn_repository(s.db(), &app.id, 4242, "acme/web", s.now_ms()).await?;
    let replaced = svc::connect_repository(&s, connect(&app.id, "Acme/Shop", 12))
        .await?
        .connection
        .expect("connection");
    assert_eq!(
        (
            replaced.repository.as_str(),
            replaced.installation_id,
            replaced.repository_id,
            replaced.created_at,
        ),
        ("Acme/Shop", 12, 0, first.created_at),
        "another repository forgets the id learnt for the old one"
    );
    let one = svc::list_repository_connections(&s, list(&app.workspace_id, &app.id))
        .await?
        .connections;
    assert_eq!(one, [replaced]);
    assert_eq!(
        svc::list_repository_connections(&s, list(&app.workspace_id, ""))
            .await?
            .connections
            .len(),
        2
    );

    // Disconnect is idempotent.
    assert!(
        svc::disconnect_repository(&s, disconnect(&app.id))
            .await?
            .disconnected
    );
    assert!(
        !svc::disconnect_repository(&s, disconnect(&app.id))
            .await?
            .disconnected
    );
    let left = svc::list_repository_connections(&s, list(&app.workspace_id, ""))
        .await?
        .connections;
    let apps: Vec<&str> = left.iter().map(|c| c.app_id.as_str()).collect();
    assert_eq!(apps, [other.id.as_str()]);
    assert!(
        svc::list_repository_connections(&s, list(&app.workspace_id, &app.id))
            .await?
            .connections
            .is_empty()
    );
    Ok(())
}

#[tokio::test]
async fn bad_input_and_unknown_or_deleting_apps_are_refused_clearly() -> Result<()> {
    let s = state().await?;
    let f = crate::fixtures::app(&s, false).await?;
    let app = &f.app;

    for bad in ["acme", "acme/web/x", "-acme/web", "acme/we b", ""] {
        let e = svc::connect_repository(&s, connect(&app.id, bad, 1))
            .await
            .unwrap_err();
        assert_eq!(field(e), "repository", "{bad:?}");
    }
    for bad in [0, -7] {
        let e = svc::connect_repository(&s, connect(&app.id, "acme/web", bad))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, ApiError::InvalidArgument { field, message }
                if field == "installation_id" && message.contains("GitHub App installation")),
            "{e:?}"
        );
    }
    for bad in ["", "web", "proj_0000000000000000"] {
        let e = svc::connect_repository(&s, connect(bad, "acme/web", 1))
            .await
            .unwrap_err();
        assert_eq!(field(e), "app_id", "{bad:?}");
    }
    let unknown = "app_0000000000000000";
    assert_eq!(
        svc::connect_repository(&s, connect(unknown, "acme/web", 1))
            .await
            .unwrap_err(),
        ApiError::NotFound(format!("app {unknown} not found"))
    );
    assert_eq!(
        svc::disconnect_repository(&s, disconnect(unknown))
            .await
            .unwrap_err(),
        ApiError::NotFound(format!("app {unknown} not found"))
    );
    assert_eq!(
        field(
            svc::disconnect_repository(&s, disconnect("nope"))
                .await
                .unwrap_err()
        ),
        "app_id"
    );

    // Listing: the workspace must exist, and the app must be one of its.
    assert_eq!(
        field(
            svc::list_repository_connections(&s, list("", ""))
                .await
                .unwrap_err()
        ),
        "workspace_id"
    );
    assert_eq!(
        field(
            svc::list_repository_connections(&s, list(&app.workspace_id, "x"))
                .await
                .unwrap_err()
        ),
        "app_id"
    );
    assert!(matches!(
        svc::list_repository_connections(&s, list("ws_0000000000000000", ""))
            .await
            .unwrap_err(),
        ApiError::NotFound(_)
    ));
    let elsewhere = tenancy::create_workspace(
        &s,
        pb::CreateWorkspaceRequest {
            name: "B".into(),
            slug: "bravo".into(),
            actor: None,
        },
    )
    .await?
    .workspace
    .expect("workspace");
    assert_eq!(
        svc::list_repository_connections(&s, list(&elsewhere.id, &app.id))
            .await
            .unwrap_err(),
        ApiError::NotFound(format!(
            "app {} not found in workspace {}",
            app.id, elsewhere.id
        ))
    );

    // An app being deleted takes no connection.
    let mut conn = s.db().acquire().await?;
    ctrl_db::deletion::mark(
        &mut conn,
        ctrl_db::deletion::Scope::App(&app.id),
        s.now_ms(),
    )
    .await?;
    assert_eq!(
        svc::connect_repository(&s, connect(&app.id, "acme/web", 1))
            .await
            .unwrap_err(),
        ApiError::FailedPrecondition("the app is being deleted".into())
    );
    assert!(
        svc::list_repository_connections(&s, list(&app.workspace_id, ""))
            .await?
            .connections
            .is_empty(),
        "nothing was recorded"
    );
    Ok(())
}

#[tokio::test]
async fn the_service_is_served_over_connect_and_grpc() -> Result<()> {
    use pb::repository_service_client::RepositoryServiceClient as Grpc;
    use pb::repository_service_connect_client::RepositoryServiceClient as Connect;

    let s = state().await?;
    let f = crate::fixtures::app(&s, false).await?;
    let base = serve(s.clone()).await?;
    let connect_client = Connect::builder(base.clone())
        .default_header("authorization", format!("Bearer {TOKEN}"))
        .build()?;
    let mut grpc = Grpc::connect(base).await?;

    let made = connect_client
        .connect_repository(&connect(&f.app.id, "acme/web", 5))
        .await?
        .into_inner()
        .connection
        .expect("connection");
    assert_eq!(made.repository, "acme/web");
    let mut req = tonic::Request::new(list(&f.app.workspace_id, ""));
    req.metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse()?);
    let listed = grpc.list_repository_connections(req).await?.into_inner();
    assert_eq!(listed.connections, [made]);

    let bad = connect_client
        .connect_repository(&connect(&f.app.id, "acme/web", 0))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), connectrpc_axum_client::Code::InvalidArgument);
    assert!(
        bad.message()
            .unwrap_or_default()
            .starts_with("installation_id:"),
        "{bad:?}"
    );
    // Unauthenticated calls are refused before the service runs.
    let refused = grpc
        .disconnect_repository(disconnect(&f.app.id))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    Ok(())
}
