//! The transport: every service function exposed over Connect (JSON and
//! binary) and gRPC by one handler, behind bearer authentication, plus the
//! health endpoints, all on one axum router.

// Handlers and their checks answer with connectrpc-axum's wire error; it is
// large, and boxing it on every path would only move the allocation.
#![allow(clippy::result_large_err)]

use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::routing::get;
use connectrpc_axum::tonic::BoxedStream;
use connectrpc_axum::{
    Code, ConnectError, ConnectRequest, ConnectResponse, MakeServiceBuilder, StreamBody,
};
use ctrl_proto::ctrl::v1 as pb;

use crate::error::ApiError;
use crate::services::{agents, build, custom_domain, deployment, repository, settings, tenancy};
use crate::state::AppState;

/// Largest accepted request body.
pub const MAX_REQUEST_BYTES: usize = 4 << 20;

/// Proof that the request carried an accepted bearer token, within its
/// token's rate. Taking it as a handler argument is what protects an RPC; a
/// rejection is answered as `unauthenticated` (or `resource_exhausted`) in
/// the caller's protocol (Connect or gRPC).
#[derive(Debug, Clone, Copy)]
pub struct Authorized {
    /// Which configured token (limits are kept per token).
    token: usize,
}

impl Authorized {
    /// Opens a stream for this token, within its cap of open streams.
    fn open_stream(self, state: &AppState) -> Result<crate::limits::StreamPermit, ConnectError> {
        state.limits().open_stream(self.token)
    }
}

impl FromRequestParts<AppState> for Authorized {
    type Rejection = ConnectError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let authenticated = state.tokens().authenticate(&parts.headers);
        if let Ok(token) = authenticated {
            state.limits().request(token)?;
            return Ok(Self { token });
        }
        // Requests without a valid token share one rate; beyond it they
        // are refused before anything else.
        state.limits().unauthenticated()?;
        authenticated.map(|token| Self { token }).map_err(|e| {
            let agent = ctrl_runtime::auth::bearer_token(&parts.headers)
                .is_some_and(|t| t.starts_with(ctrl_cluster_sync::agents::TOKEN_PREFIX));
            if agent {
                ConnectError::new_unauthenticated(
                    "an agent credential opens only the agents' services, not the API",
                )
            } else {
                ConnectError::new_unauthenticated(e)
            }
        })
    }
}

/// Proof that the request carried an active frontline credential: the
/// only credential AcmeService takes, and one the rest of the API refuses.
#[derive(Debug, Clone, Copy)]
pub struct EdgeAuthorized;

impl FromRequestParts<AppState> for EdgeAuthorized {
    type Rejection = ConnectError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        ctrl_cluster_sync::agents::authenticate(
            state.db(),
            &parts.headers,
            ctrl_cluster_sync::agents::AgentKind::Frontline,
        )
        .await
        .map(|_| Self)
    }
}

/// The one mapping from [`ApiError`] to the wire. Messages are clipped to
/// 1 KiB: gRPC carries them in a header, and a message quoting a huge
/// input would make the response itself fail.
pub fn to_connect(e: ApiError) -> ConnectError {
    let (code, message) = match e {
        ApiError::InvalidArgument { field, message } => {
            (Code::InvalidArgument, format!("{field}: {message}"))
        }
        ApiError::NotFound(m) => (Code::NotFound, m),
        ApiError::AlreadyExists(m) => (Code::AlreadyExists, m),
        ApiError::FailedPrecondition(m) => (Code::FailedPrecondition, m),
        ApiError::Unauthenticated => (Code::Unauthenticated, e.to_string()),
        ApiError::Unavailable(m) => (Code::Unavailable, m),
        ApiError::Internal(m) => (Code::Internal, m),
    };
    ConnectError::new(code, clipped(message))
}

/// At most 1 KiB of `message`, marked with an ellipsis when cut.
fn clipped(mut message: String) -> String {
    const MAX: usize = 1024;
    if message.len() > MAX {
        let keep = ctrl_core::names::clip(&message, MAX).len();
        message.truncate(keep);
        message.push('…');
    }
    message
}

/// Defines an authenticated handler that calls a service function.
macro_rules! unary {
    ($handler:ident => $service:path, $req:ty, $resp:ty) => {
        async fn $handler(
            State(state): State<AppState>,
            _auth: Authorized,
            ConnectRequest(req): ConnectRequest<$req>,
        ) -> Result<ConnectResponse<$resp>, ConnectError> {
            $service(&state, req)
                .await
                .map(ConnectResponse::new)
                .map_err(to_connect)
        }
    };
}

async fn verify_certificate(
    State(state): State<AppState>,
    _auth: EdgeAuthorized,
    ConnectRequest(req): ConnectRequest<pb::VerifyCertificateRequest>,
) -> Result<ConnectResponse<pb::VerifyCertificateResponse>, ConnectError> {
    crate::services::acme::verify_certificate(&state, req)
        .await
        .map(ConnectResponse::new)
        .map_err(to_connect)
}

unary!(create_workspace => tenancy::create_workspace, pb::CreateWorkspaceRequest, pb::CreateWorkspaceResponse);
unary!(get_workspace => tenancy::get_workspace, pb::GetWorkspaceRequest, pb::GetWorkspaceResponse);
unary!(list_workspaces => tenancy::list_workspaces, pb::ListWorkspacesRequest, pb::ListWorkspacesResponse);
unary!(delete_workspace => tenancy::delete_workspace, pb::DeleteWorkspaceRequest, pb::DeleteWorkspaceResponse);
unary!(create_project => tenancy::create_project, pb::CreateProjectRequest, pb::CreateProjectResponse);
unary!(get_project => tenancy::get_project, pb::GetProjectRequest, pb::GetProjectResponse);
unary!(list_projects => tenancy::list_projects, pb::ListProjectsRequest, pb::ListProjectsResponse);
unary!(delete_project => tenancy::delete_project, pb::DeleteProjectRequest, pb::DeleteProjectResponse);
unary!(create_app => tenancy::create_app, pb::CreateAppRequest, pb::CreateAppResponse);
unary!(get_app => tenancy::get_app, pb::GetAppRequest, pb::GetAppResponse);
unary!(list_apps => tenancy::list_apps, pb::ListAppsRequest, pb::ListAppsResponse);
unary!(delete_app => tenancy::delete_app, pb::DeleteAppRequest, pb::DeleteAppResponse);
unary!(get_app_settings => settings::get_app_settings, pb::GetAppSettingsRequest, pb::GetAppSettingsResponse);
unary!(update_app_settings => settings::update_app_settings, pb::UpdateAppSettingsRequest, pb::UpdateAppSettingsResponse);
unary!(list_environment_variables => settings::list_environment_variables, pb::ListEnvironmentVariablesRequest, pb::ListEnvironmentVariablesResponse);
unary!(set_environment_variables => settings::set_environment_variables, pb::SetEnvironmentVariablesRequest, pb::SetEnvironmentVariablesResponse);
unary!(delete_environment_variables => settings::delete_environment_variables, pb::DeleteEnvironmentVariablesRequest, pb::DeleteEnvironmentVariablesResponse);
unary!(create_environment => tenancy::create_environment, pb::CreateEnvironmentRequest, pb::CreateEnvironmentResponse);
unary!(get_environment => tenancy::get_environment, pb::GetEnvironmentRequest, pb::GetEnvironmentResponse);
unary!(list_environments => tenancy::list_environments, pb::ListEnvironmentsRequest, pb::ListEnvironmentsResponse);
unary!(delete_environment => tenancy::delete_environment, pb::DeleteEnvironmentRequest, pb::DeleteEnvironmentResponse);
unary!(create_deployment => deployment::create_deployment, pb::CreateDeploymentRequest, pb::CreateDeploymentResponse);
unary!(cancel_deployment => deployment::cancel_deployment, pb::CancelDeploymentRequest, pb::CancelDeploymentResponse);
unary!(rollback => deployment::rollback, pb::RollbackRequest, pb::RollbackResponse);
unary!(promote => deployment::promote, pb::PromoteRequest, pb::PromoteResponse);
unary!(approve_deployment => deployment::approve_deployment, pb::ApproveDeploymentRequest, pb::ApproveDeploymentResponse);
unary!(stop_deployment => deployment::stop_deployment, pb::StopDeploymentRequest, pb::StopDeploymentResponse);
unary!(wake_deployment => deployment::wake_deployment, pb::WakeDeploymentRequest, pb::WakeDeploymentResponse);
unary!(delete_deployment => deployment::delete_deployment, pb::DeleteDeploymentRequest, pb::DeleteDeploymentResponse);
unary!(get_deployment => deployment::get_deployment, pb::GetDeploymentRequest, pb::GetDeploymentResponse);
unary!(list_deployments => deployment::list_deployments, pb::ListDeploymentsRequest, pb::ListDeploymentsResponse);
unary!(add_custom_domain => custom_domain::add_custom_domain, pb::AddCustomDomainRequest, pb::AddCustomDomainResponse);
unary!(get_custom_domain => custom_domain::get_custom_domain, pb::GetCustomDomainRequest, pb::GetCustomDomainResponse);
unary!(list_custom_domains => custom_domain::list_custom_domains, pb::ListCustomDomainsRequest, pb::ListCustomDomainsResponse);
unary!(delete_custom_domain => custom_domain::delete_custom_domain, pb::DeleteCustomDomainRequest, pb::DeleteCustomDomainResponse);
unary!(retry_verification => custom_domain::retry_verification, pb::RetryVerificationRequest, pb::RetryVerificationResponse);
unary!(connect_repository => repository::connect_repository, pb::ConnectRepositoryRequest, pb::ConnectRepositoryResponse);
unary!(list_repository_connections => repository::list_repository_connections, pb::ListRepositoryConnectionsRequest, pb::ListRepositoryConnectionsResponse);
unary!(disconnect_repository => repository::disconnect_repository, pb::DisconnectRepositoryRequest, pb::DisconnectRepositoryResponse);
unary!(generate_upload_url => build::generate_upload_url, pb::GenerateUploadUrlRequest, pb::GenerateUploadUrlResponse);
unary!(get_build => build::get_build, pb::GetBuildRequest, pb::GetBuildResponse);
unary!(list_regions => tenancy::list_regions, pb::ListRegionsRequest, pb::ListRegionsResponse);
unary!(update_region => tenancy::update_region, pb::UpdateRegionRequest, pb::UpdateRegionResponse);
unary!(create_agent_credential => agents::create_agent_credential, pb::CreateAgentCredentialRequest, pb::CreateAgentCredentialResponse);
unary!(list_agent_credentials => agents::list_agent_credentials, pb::ListAgentCredentialsRequest, pb::ListAgentCredentialsResponse);
unary!(revoke_agent_credential => agents::revoke_agent_credential, pb::RevokeAgentCredentialRequest, pb::RevokeAgentCredentialResponse);

/// DeploymentService.WatchDeployment: the current state, then every change,
/// until a terminal status, the client leaving, or server shutdown. Every
/// watcher of a deployment follows one shared feed (`crate::watch`).
async fn watch_deployment(
    State(state): State<AppState>,
    auth: Authorized,
    ConnectRequest(req): ConnectRequest<pb::WatchDeploymentRequest>,
) -> Result<ConnectResponse<StreamBody<BoxedStream<pb::WatchDeploymentResponse>>>, ConnectError> {
    use crate::watch::Update;
    crate::validate::id(
        "deployment_id",
        ctrl_core::id::IdKind::Deployment,
        &req.deployment_id,
    )
    .map_err(to_connect)?;
    let permit = auth.open_stream(&state)?;
    let first = deployment::load_full(&state, &req.deployment_id)
        .await
        .map_err(to_connect)?;
    let message = |d: &pb::Deployment| {
        Ok(pb::WatchDeploymentResponse {
            deployment: Some(d.clone()),
        })
    };
    if crate::watch::is_terminal(&first) {
        let once = futures::stream::iter([message(&first)]);
        return Ok(ConnectResponse::new(StreamBody::new(
            Box::pin(once) as BoxedStream<_>
        )));
    }
    let mut feed = state.watch_feeds().subscribe(&state, first);
    let shutdown = state.shutdown_signal();
    let stream = async_stream(move |tx| async move {
        let _permit = permit;
        tokio::pin!(shutdown);
        loop {
            let update = feed.borrow_and_update().clone();
            match update {
                Update::Deployment(d) => {
                    if tx.send(message(&d)).await.is_err() || crate::watch::is_terminal(&d) {
                        return;
                    }
                }
                Update::Failed(e) => {
                    let _ = tx.send(Err(to_connect(e))).await;
                    return;
                }
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = tx.closed() => return,
                changed = feed.changed() => if changed.is_err() { return },
            }
        }
    });
    Ok(ConnectResponse::new(StreamBody::new(stream)))
}

/// A response stream fed by `produce` through a small channel (the task
/// ends when the client leaves: sends fail, `closed()` resolves).
fn async_stream<T, F, Fut>(produce: F) -> BoxedStream<T>
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<Result<T, ConnectError>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<T, ConnectError>>(8);
    tokio::spawn(produce(tx));
    Box::pin(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}

/// DeploymentService.StreamDeploymentLogs: every region's agent asked at
/// once (through the relay, see [`crate::agent_logs`]), lines forwarded as
/// they arrive; ends when every region has ended (never, with follow, until
/// the client leaves or the server drains).
async fn stream_deployment_logs(
    State(state): State<AppState>,
    auth: Authorized,
    ConnectRequest(req): ConnectRequest<pb::StreamDeploymentLogsRequest>,
) -> Result<ConnectResponse<StreamBody<BoxedStream<pb::StreamDeploymentLogsResponse>>>, ConnectError>
{
    let permit = auth.open_stream(&state)?;
    let sources = deployment::log_sources(&state, &req)
        .await
        .map_err(to_connect)?;
    let request = crate::agent_logs::LogRequest {
        deployment_id: req.deployment_id,
        follow: req.follow,
        tail: req
            .tail_lines
            .unwrap_or(ctrl_core::logs::DEFAULT_TAIL_LINES),
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel(256);
    for source in sources {
        let (db, request, tx) = (state.db().clone(), request.clone(), tx.clone());
        let stop = state.shutdown_signal();
        tokio::spawn(async move {
            crate::agent_logs::forward(&db, &source, &request, &tx, stop).await;
        });
    }
    // The permit lives as long as the response stream.
    let stream = futures::stream::poll_fn(move |cx| {
        let _held = &permit;
        rx.poll_recv(cx).map(|m| m.map(Ok))
    });
    Ok(ConnectResponse::new(StreamBody::new(
        Box::pin(stream) as BoxedStream<_>
    )))
}

/// BuildService.StreamBuildLogs: the lines recorded so far in batches, then
/// (with follow) new lines as the build writes them, until it has finished
/// and every line is sent; a deployment still queued before its build is
/// waited for.
async fn stream_build_logs(
    State(state): State<AppState>,
    auth: Authorized,
    ConnectRequest(req): ConnectRequest<pb::StreamBuildLogsRequest>,
) -> Result<ConnectResponse<StreamBody<BoxedStream<pb::StreamBuildLogsResponse>>>, ConnectError> {
    let permit = auth.open_stream(&state)?;
    let waiting = |e: &crate::error::ApiError| matches!(e, crate::error::ApiError::NotFound(m) if m.contains("not started building"));
    match build::find(&state, &req.deployment_id).await {
        Ok(_) => {}
        Err(e) if req.follow && waiting(&e) => {}
        Err(e) => return Err(to_connect(e)),
    }
    let (tx, mut rx) =
        tokio::sync::mpsc::channel::<Result<pb::StreamBuildLogsResponse, ConnectError>>(8);
    let stop = state.shutdown_signal();
    tokio::spawn(async move {
        tokio::pin!(stop);
        let mut after = req.after_line.max(0);
        loop {
            let b = match build::find(&state, &req.deployment_id).await {
                Ok(b) => b,
                Err(e) if waiting(&e) => {
                    let ended = ctrl_db::deployment::get(state.db(), &req.deployment_id)
                        .await
                        .map(|d| d.status.is_terminal())
                        .unwrap_or(true);
                    if ended {
                        return;
                    }
                    tokio::select! {
                        () = tokio::time::sleep(crate::watch::POLL) => continue,
                        () = &mut stop => return,
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(to_connect(e))).await;
                    return;
                }
            };
            // The status is read before the lines: once it says finished,
            // every line was written before this read.
            let finished = build::is_finished(b.status);
            let lines = match build::build_logs(&state, &b.id, after).await {
                Ok(lines) => lines,
                Err(e) => {
                    let _ = tx.send(Err(to_connect(e))).await;
                    return;
                }
            };
            let full = lines.len() >= build::LOG_BATCH as usize;
            if let Some(last) = lines.last() {
                after = last.number;
            }
            let done = !full && (finished || !req.follow);
            let message = pb::StreamBuildLogsResponse {
                lines,
                finished: (done && finished).then(|| build::to_pb(b)),
            };
            if (!message.lines.is_empty() || message.finished.is_some())
                && tx.send(Ok(message)).await.is_err()
            {
                return;
            }
            if done {
                return;
            }
            if !full {
                tokio::select! {
                    () = tokio::time::sleep(crate::watch::POLL) => {}
                    () = &mut stop => return,
                }
            }
        }
    });
    let stream = futures::stream::poll_fn(move |cx| {
        let _held = &permit;
        rx.poll_recv(cx)
    });
    Ok(ConnectResponse::new(StreamBody::new(
        Box::pin(stream) as BoxedStream<_>
    )))
}

/// CtrlService.Liveness: the one RPC without a token.
async fn liveness(
    State(_state): State<AppState>,
    ConnectRequest(_req): ConnectRequest<pb::LivenessRequest>,
) -> Result<ConnectResponse<pb::LivenessResponse>, ConnectError> {
    Ok(ConnectResponse::new(pb::LivenessResponse {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        instance_id: instance_id().into(),
    }))
}

/// Identifies this process behind a load balancer.
fn instance_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| ctrl_core::names::random_dns1035(12, &mut rand::rng()))
}

/// `/health/ready`: the database and Restate's ingress answer. Checked at
/// most once a second (concurrent requests share one check), so a flood
/// costs the database nothing.
async fn ready(State(state): State<AppState>) -> (StatusCode, &'static str) {
    state
        .readiness()
        .get(|| async {
            state.metrics().readiness_checked();
            let database =
                tokio::time::timeout(std::time::Duration::from_secs(2), ctrl_db::ping(state.db()));
            let (database, restate) = tokio::join!(database, state.ingress().is_healthy());
            match (matches!(database, Ok(Ok(()))), restate) {
                (true, true) => (StatusCode::OK, "ready"),
                (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "database unreachable"),
                (true, false) => (StatusCode::SERVICE_UNAVAILABLE, "restate unreachable"),
            }
        })
        .await
}

/// The operations listener (`http.ops_listen`, kept off public networks):
/// liveness, readiness and Prometheus metrics. The API's own port serves
/// only the API and liveness.
pub fn ops_router(state: AppState) -> axum::Router {
    axum::Router::new()
        .route("/health/live", get(|| async { "ok" }))
        .route("/health/ready", get(ready))
        .route(
            "/metrics",
            get(crate::observe::metrics_endpoint).with_state(state.metrics().clone()),
        )
        .with_state(state)
}

/// A tonic service with the request size limit, also reachable over
/// gRPC-Web (browsers): `application/grpc-web*` requests are translated.
fn grpc<S>(service: S) -> tonic_web::GrpcWebService<S>
where
    S: MaxDecoding,
{
    use tower_layer::Layer;
    tonic_web::GrpcWebLayer::new().layer(service.limit(MAX_REQUEST_BYTES))
}

/// The generated tonic servers' size limit, as one trait.
trait MaxDecoding: Sized {
    fn limit(self, bytes: usize) -> Self;
}

macro_rules! max_decoding {
    ($($server:ty),* $(,)?) => {$(
        impl MaxDecoding for $server {
            fn limit(self, bytes: usize) -> Self {
                self.max_decoding_message_size(bytes)
            }
        }
    )*};
}

max_decoding!(
    pb::ctrl_service_server::CtrlServiceServer<pb::CtrlTonicService>,
    pb::workspace_service_server::WorkspaceServiceServer<pb::WorkspaceTonicService>,
    pb::project_service_server::ProjectServiceServer<pb::ProjectTonicService>,
    pb::app_service_server::AppServiceServer<pb::AppTonicService>,
    pb::environment_service_server::EnvironmentServiceServer<pb::EnvironmentTonicService>,
    pb::deployment_service_server::DeploymentServiceServer<pb::DeploymentTonicService>,
    pb::region_service_server::RegionServiceServer<pb::RegionTonicService>,
    pb::custom_domain_service_server::CustomDomainServiceServer<pb::CustomDomainTonicService>,
    pb::build_service_server::BuildServiceServer<pb::BuildTonicService>,
    pb::repository_service_server::RepositoryServiceServer<pb::RepositoryTonicService>,
    pb::acme_service_server::AcmeServiceServer<pb::AcmeTonicService>,
);

/// tonic reports a request it cannot decode as `internal` (13); it is the
/// caller's malformed message, so answer `invalid_argument` (3) instead. The
/// decode fails before any handler runs, so the status is in the headers of
/// a trailers-only response (gRPC and gRPC-Web alike).
async fn grpc_decode_errors_are_bad_input(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let mut response = next.run(req).await;
    let headers = response.headers();
    let is_decode_error = headers.get("grpc-status").is_some_and(|v| v == "13")
        && headers
            .get("grpc-message")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|m| {
                m.starts_with("failed to decode") || m.starts_with("failed%20to%20decode")
            });
    if is_decode_error {
        response
            .headers_mut()
            .insert("grpc-status", axum::http::HeaderValue::from_static("3"));
    }
    response
}

/// How long an HTTP/1 client may take to send a request body.
const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// HTTP/1 requests are read to their end before any handler (or the
/// authentication in front of it) runs, so an early answer — 401, 404, 415 —
/// never leaves unread body bytes on the connection. hyper would otherwise
/// close such a connection after the answer without saying so, and a client
/// that reuses it (Connect-ES on Node, any keep-alive pool) fails its next
/// request with EPIPE. A body over the limit, or one that does not arrive in
/// time, is answered with `connection: close`, so the client knows not to
/// reuse the connection. HTTP/1 carries only unary and server-streaming
/// calls, so nothing streams in; HTTP/2 (gRPC) has per-stream resets and is
/// left alone.
async fn http1_bodies_are_read_first(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::body::HttpBody as _;
    use axum::http::{Version, header};
    use axum::response::IntoResponse;
    if req.version() >= Version::HTTP_2 || req.body().is_end_stream() {
        return next.run(req).await;
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        early_close(
            StatusCode::PAYLOAD_TOO_LARGE,
            "resource_exhausted",
            &format!("the request body exceeds {MAX_REQUEST_BYTES} bytes"),
        )
    };
    if declared.is_some_and(|n| n > MAX_REQUEST_BYTES as u64) {
        return too_large();
    }
    let (parts, body) = req.into_parts();
    let read = tokio::time::timeout(
        BODY_READ_TIMEOUT,
        axum::body::to_bytes(body, MAX_REQUEST_BYTES),
    )
    .await;
    match read {
        Ok(Ok(bytes)) => {
            next.run(axum::extract::Request::from_parts(parts, bytes.into()))
                .await
        }
        Ok(Err(e)) if is_length_limit(&e) => too_large(),
        Ok(Err(_)) => early_close(
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            "the request body could not be read",
        ),
        Err(_) => early_close(
            StatusCode::REQUEST_TIMEOUT,
            "deadline_exceeded",
            &format!(
                "the request body did not arrive within {} s",
                BODY_READ_TIMEOUT.as_secs()
            ),
        )
        .into_response(),
    }
}

fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// An answer given before the request was read to its end: a Connect error
/// body, and `connection: close` so the client opens a new connection.
fn early_close(status: StatusCode, code: &str, message: &str) -> axum::response::Response {
    use axum::http::header;
    use axum::response::IntoResponse;
    let body = serde_json::json!({ "code": code, "message": message }).to_string();
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CONNECTION, "close"),
        ],
        body,
    )
        .into_response()
}

/// Every service on one router (Connect, gRPC, gRPC-Web, the GitHub
/// webhook, liveness); see [`ops_router`] for readiness and metrics.
pub fn router(state: AppState) -> axum::Router {
    router_with(state, None)
}

/// [`router`], also serving the agents' ClusterService when given (the
/// `[cluster_sync]` section: one process instead of two).
pub fn router_with(
    state: AppState,
    cluster: Option<ctrl_cluster_sync::ClusterSync>,
) -> axum::Router {
    use pb::*;
    let (ctrl, ctrl_grpc) = ctrl_service_connect::CtrlServiceTonicCompatibleBuilder::new()
        .liveness(liveness)
        .with_state(state.clone())
        .build();
    let (workspaces, workspaces_grpc) =
        workspace_service_connect::WorkspaceServiceTonicCompatibleBuilder::new()
            .create_workspace(create_workspace)
            .get_workspace(get_workspace)
            .list_workspaces(list_workspaces)
            .delete_workspace(delete_workspace)
            .with_state(state.clone())
            .build();
    let (projects, projects_grpc) =
        project_service_connect::ProjectServiceTonicCompatibleBuilder::new()
            .create_project(create_project)
            .get_project(get_project)
            .list_projects(list_projects)
            .delete_project(delete_project)
            .with_state(state.clone())
            .build();
    let (apps, apps_grpc) = app_service_connect::AppServiceTonicCompatibleBuilder::new()
        .create_app(create_app)
        .get_app(get_app)
        .list_apps(list_apps)
        .delete_app(delete_app)
        .get_app_settings(get_app_settings)
        .update_app_settings(update_app_settings)
        .list_environment_variables(list_environment_variables)
        .set_environment_variables(set_environment_variables)
        .delete_environment_variables(delete_environment_variables)
        .with_state(state.clone())
        .build();
    let (environments, environments_grpc) =
        environment_service_connect::EnvironmentServiceTonicCompatibleBuilder::new()
            .create_environment(create_environment)
            .get_environment(get_environment)
            .list_environments(list_environments)
            .delete_environment(delete_environment)
            .with_state(state.clone())
            .build();
    let (deployments, deployments_grpc) =
        deployment_service_connect::DeploymentServiceTonicCompatibleBuilder::new()
            .create_deployment(create_deployment)
            .cancel_deployment(cancel_deployment)
            .rollback(rollback)
            .promote(promote)
            .approve_deployment(approve_deployment)
            .stop_deployment(stop_deployment)
            .wake_deployment(wake_deployment)
            .delete_deployment(delete_deployment)
            .get_deployment(get_deployment)
            .list_deployments(list_deployments)
            .watch_deployment(watch_deployment)
            .stream_deployment_logs(stream_deployment_logs)
            .with_state(state.clone())
            .build();
    let (regions, regions_grpc) =
        region_service_connect::RegionServiceTonicCompatibleBuilder::new()
            .list_regions(list_regions)
            .update_region(update_region)
            .create_agent_credential(create_agent_credential)
            .list_agent_credentials(list_agent_credentials)
            .revoke_agent_credential(revoke_agent_credential)
            .with_state(state.clone())
            .build();
    let (domains, domains_grpc) =
        custom_domain_service_connect::CustomDomainServiceTonicCompatibleBuilder::new()
            .add_custom_domain(add_custom_domain)
            .get_custom_domain(get_custom_domain)
            .list_custom_domains(list_custom_domains)
            .delete_custom_domain(delete_custom_domain)
            .retry_verification(retry_verification)
            .with_state(state.clone())
            .build();
    let (builds, builds_grpc) = build_service_connect::BuildServiceTonicCompatibleBuilder::new()
        .generate_upload_url(generate_upload_url)
        .get_build(get_build)
        .stream_build_logs(stream_build_logs)
        .with_state(state.clone())
        .build();
    let (repositories, repositories_grpc) =
        repository_service_connect::RepositoryServiceTonicCompatibleBuilder::new()
            .connect_repository(connect_repository)
            .list_repository_connections(list_repository_connections)
            .disconnect_repository(disconnect_repository)
            .with_state(state.clone())
            .build();
    let (acme, acme_grpc) = acme_service_connect::AcmeServiceTonicCompatibleBuilder::new()
        .verify_certificate(verify_certificate)
        .with_state(state.clone())
        .build();
    let metrics = state.metrics().clone();
    let webhooks = crate::webhook::router(state);
    let health = axum::Router::new().route("/health/live", get(|| async { "ok" }));

    let dispatch = MakeServiceBuilder::new()
        .add_routers([
            ctrl,
            workspaces,
            projects,
            apps,
            environments,
            deployments,
            regions,
            domains,
            builds,
            repositories,
            acme,
        ])
        .add_grpc_service(grpc(ctrl_grpc))
        .add_grpc_service(grpc(workspaces_grpc))
        .add_grpc_service(grpc(projects_grpc))
        .add_grpc_service(grpc(apps_grpc))
        .add_grpc_service(grpc(environments_grpc))
        .add_grpc_service(grpc(deployments_grpc))
        .add_grpc_service(grpc(regions_grpc))
        .add_grpc_service(grpc(domains_grpc))
        .add_grpc_service(grpc(builds_grpc))
        .add_grpc_service(grpc(repositories_grpc))
        .add_grpc_service(grpc(acme_grpc))
        .add_axum_router_raw(health)
        .add_axum_router_raw(webhooks)
        .receive_max_bytes(MAX_REQUEST_BYTES);
    let dispatch = match cluster {
        Some(cluster) => {
            // Its metrics join the API's on the operations listener.
            cluster.metrics().register(metrics.registry());
            let (connect, grpc) = ctrl_cluster_sync::service::parts(cluster.clone());
            let (edge, edge_grpc) = ctrl_cluster_sync::edge::parts(cluster);
            dispatch
                .add_router(connect)
                .add_grpc_service(grpc)
                .add_router(edge)
                .add_grpc_service(edge_grpc)
        }
        None => dispatch,
    }
    .build();
    axum::Router::new()
        .fallback_service(dispatch)
        .layer(axum::middleware::from_fn(http1_bodies_are_read_first))
        .layer(axum::middleware::from_fn(grpc_decode_errors_are_bad_input))
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            crate::observe::observe,
        ))
}
