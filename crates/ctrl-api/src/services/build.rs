//! BuildService: presigned uploads of build contexts, and the builds of
//! deployments made from source (their state; their output is streamed by
//! `rpc::stream_build_logs` over [`build_logs`]).

use ctrl_core::id::IdKind;
use ctrl_db::build::{self, Build};
use ctrl_db::types::BuildStatus;
use ctrl_db::{deployment, tenancy};
use ctrl_proto::ctrl::v1 as pb;

use crate::error::ApiError;
use crate::state::AppState;
use crate::validate;

/// Most lines one message of a build-log stream carries.
pub const LOG_BATCH: u32 = 500;

/// BuildService.GenerateUploadURL: a presigned PUT of exactly `size_bytes`
/// bytes of `application/gzip`, under a key only this app's deployments
/// can build.
pub async fn generate_upload_url(
    s: &AppState,
    req: pb::GenerateUploadUrlRequest,
) -> Result<pb::GenerateUploadUrlResponse, ApiError> {
    validate::id("app_id", IdKind::App, &req.app_id)?;
    let store = s.build_contexts().ok_or_else(|| {
        ApiError::FailedPrecondition(
            "this server takes no build contexts ([build_contexts] is not configured)".into(),
        )
    })?;
    let max = store.max_upload_bytes();
    let size = u64::try_from(req.size_bytes)
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| {
            ApiError::invalid(
                "size_bytes",
                format!(
                    "must be between 1 and {max} bytes ({}), got {}",
                    ctrl_build::context::human_bytes(max),
                    req.size_bytes
                ),
            )
        })?;
    let app = tenancy::get_app(s.db(), &req.app_id).await?;
    super::tenancy::not_deleting("app", app.deleting_at)?;
    let nonce = ctrl_core::names::random_dns1035(20, &mut rand::rng());
    let upload = store
        .presign_upload(&app.workspace_id, &app.id, &nonce, size, s.now())
        .await
        .map_err(|e| match e {
            ctrl_build::store::StoreError::Invalid(m) => ApiError::invalid("size_bytes", m),
            other => ApiError::Unavailable(other.to_string()),
        })?;
    Ok(pb::GenerateUploadUrlResponse {
        upload_url: upload.url,
        build_context_path: upload.key,
        expires_at: upload.expires_at_ms,
        max_size_bytes: i64::try_from(max).unwrap_or(i64::MAX),
    })
}

/// The deployment's build; `not_found` for a deployment of an image (or a
/// build that has not been queued yet).
pub async fn find(s: &AppState, deployment_id: &str) -> Result<Build, ApiError> {
    validate::id("deployment_id", IdKind::Deployment, deployment_id)?;
    let d = deployment::get(s.db(), deployment_id).await?;
    if d.source_kind == ctrl_db::types::SourceKind::Image {
        return Err(ApiError::NotFound(format!(
            "deployment {deployment_id} runs a given image; it has no build"
        )));
    }
    build::for_deployment(s.db(), deployment_id)
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "deployment {deployment_id} has not started building yet (it is {})",
                d.status
            ))
        })
}

/// BuildService.GetBuild.
pub async fn get_build(
    s: &AppState,
    req: pb::GetBuildRequest,
) -> Result<pb::GetBuildResponse, ApiError> {
    let b = find(s, &req.deployment_id).await?;
    Ok(pb::GetBuildResponse {
        build: Some(to_pb(b)),
    })
}

/// A build row on the wire.
pub fn to_pb(b: Build) -> pb::Build {
    pb::Build {
        id: b.id,
        deployment_id: b.deployment_id,
        status: status_to_pb(b.status) as i32,
        backend: b.backend,
        image: b.image.unwrap_or_default(),
        error: b.error.unwrap_or_default(),
        current_step: b.current_step.unwrap_or_default(),
        queued_at: b.created_at,
        started_at: b.started_at.unwrap_or_default(),
        finished_at: b.finished_at.unwrap_or_default(),
        context_bytes: b.context_bytes.unwrap_or_default(),
        log_lines: i64::from(b.log_lines),
    }
}

/// Whether the build will not change any more.
pub fn is_finished(status: BuildStatus) -> bool {
    matches!(
        status,
        BuildStatus::Succeeded | BuildStatus::Failed | BuildStatus::Cancelled
    )
}

fn status_to_pb(s: BuildStatus) -> pb::BuildStatus {
    match s {
        BuildStatus::Queued => pb::BuildStatus::Queued,
        BuildStatus::Running => pb::BuildStatus::Running,
        BuildStatus::Succeeded => pb::BuildStatus::Succeeded,
        BuildStatus::Failed => pb::BuildStatus::Failed,
        BuildStatus::Cancelled => pb::BuildStatus::Cancelled,
    }
}

/// Up to [`LOG_BATCH`] lines of the build after line `after`.
pub async fn build_logs(
    s: &AppState,
    build_id: &str,
    after: i64,
) -> Result<Vec<pb::BuildLogLine>, ApiError> {
    Ok(build::list_logs(s.db(), build_id, after, LOG_BATCH)
        .await?
        .into_iter()
        .map(|l| pb::BuildLogLine {
            number: i64::from(l.line),
            time: l.at,
            text: l.text,
        })
        .collect())
}
