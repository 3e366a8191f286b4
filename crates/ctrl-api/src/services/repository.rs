//! RepositoryService: apps connected to GitHub repositories through the
//! GitHub App (one connection per app; a repository may feed several apps).
//! The API only records the connection; webhooks from the repository then
//! deploy the app.

use ctrl_core::id::IdKind;
use ctrl_db::github::{self, Connection, NewConnection};
use ctrl_db::tenancy;
use ctrl_proto::ctrl::v1 as pb;

use crate::error::ApiError;
use crate::state::AppState;
use crate::validate;

fn to_pb(c: Connection) -> pb::RepositoryConnection {
    pb::RepositoryConnection {
        app_id: c.app_id,
        project_id: c.project_id,
        workspace_id: c.workspace_id,
        installation_id: c.installation_id,
        repository: c.repository_full_name,
        repository_id: c.repository_id.unwrap_or_default(),
        created_at: c.created_at,
    }
}

/// The app `id` (already validated), or `not_found` naming it.
async fn app(s: &AppState, id: &str) -> Result<tenancy::App, ApiError> {
    match tenancy::get_app(s.db(), id).await {
        Err(ctrl_db::Error::NotFound(_)) => Err(ApiError::NotFound(format!("app {id} not found"))),
        other => Ok(other?),
    }
}

/// RepositoryService.ConnectRepository: checks the input and the app (it
/// must exist and not be being deleted), then records the connection,
/// replacing the app's earlier one.
pub async fn connect_repository(
    s: &AppState,
    req: pb::ConnectRepositoryRequest,
) -> Result<pb::ConnectRepositoryResponse, ApiError> {
    validate::id("app_id", IdKind::App, &req.app_id)?;
    validate::repository("repository", &req.repository)?;
    if req.installation_id <= 0 {
        return Err(ApiError::invalid(
            "installation_id",
            "must be the id of a GitHub App installation with access to the repository (a positive number)",
        ));
    }
    let app = app(s, &req.app_id).await?;
    super::tenancy::not_deleting("app", app.deleting_at)?;
    github::connect(
        s.db(),
        &NewConnection {
            workspace_id: &app.workspace_id,
            project_id: &app.project_id,
            app_id: &app.id,
            installation_id: req.installation_id,
            repository_full_name: &req.repository,
        },
        s.now_ms(),
    )
    .await?;
    let connection = github::get(s.db(), &app.id)
        .await?
        .ok_or_else(|| ApiError::Internal("internal error".into()))?;
    tracing::info!(
        app_id = %app.id,
        repository = %req.repository,
        installation_id = req.installation_id,
        "repository connected"
    );
    Ok(pb::ConnectRepositoryResponse {
        connection: Some(to_pb(connection)),
    })
}

/// RepositoryService.ListRepositoryConnections: the workspace's
/// connections (or only the app's), oldest first.
pub async fn list_repository_connections(
    s: &AppState,
    req: pb::ListRepositoryConnectionsRequest,
) -> Result<pb::ListRepositoryConnectionsResponse, ApiError> {
    validate::id("workspace_id", IdKind::Workspace, &req.workspace_id)?;
    let app_id = (!req.app_id.is_empty()).then_some(req.app_id.as_str());
    if let Some(id) = app_id {
        validate::id("app_id", IdKind::App, id)?;
    }
    tenancy::get_workspace(s.db(), &req.workspace_id).await?;
    if let Some(id) = app_id
        && app(s, id).await?.workspace_id != req.workspace_id
    {
        return Err(ApiError::NotFound(format!(
            "app {id} not found in workspace {}",
            req.workspace_id
        )));
    }
    let rows = github::list(s.db(), &req.workspace_id, app_id).await?;
    Ok(pb::ListRepositoryConnectionsResponse {
        connections: rows.into_iter().map(to_pb).collect(),
    })
}

/// RepositoryService.DisconnectRepository: idempotent; `disconnected` says
/// whether there was a connection. A connection is removed even if its app
/// is gone; an unknown app without one is `not_found`.
pub async fn disconnect_repository(
    s: &AppState,
    req: pb::DisconnectRepositoryRequest,
) -> Result<pb::DisconnectRepositoryResponse, ApiError> {
    validate::id("app_id", IdKind::App, &req.app_id)?;
    let disconnected = github::disconnect(s.db(), &req.app_id).await?;
    if disconnected {
        tracing::info!(app_id = %req.app_id, "repository disconnected");
    } else {
        app(s, &req.app_id).await?;
    }
    Ok(pb::DisconnectRepositoryResponse { disconnected })
}
