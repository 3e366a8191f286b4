//! Building: the image a deployment runs. A given image is used as is; git
//! builds plug in here.

use ctrl_core::status::DeploymentStatus;
use restate_sdk::prelude::*;
use sqlx::MySqlPool;

use super::{Plan, steps};
use crate::errors::WorkflowError;

/// The image to run, once the building step says so.
pub(super) async fn image(
    db: &MySqlPool,
    ctx: &ObjectContext<'_>,
    plan: &Plan,
) -> Result<String, TerminalError> {
    let image = match (&plan.image, plan.from_git) {
        (Some(image), _) => image.clone(),
        (None, true) => return Err(WorkflowError::GitBuildUnavailable.into()),
        (None, false) => return Err(WorkflowError::NoSource.into()),
    };
    steps::advance(
        db,
        ctx,
        &plan.workspace_id,
        &plan.deployment_id,
        DeploymentStatus::Building,
        &format!("Using image {image}"),
    )
    .await?;
    Ok(image)
}
