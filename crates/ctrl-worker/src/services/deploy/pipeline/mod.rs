//! The deployment pipeline (`Deploy/{id}/Deploy`), one module per phase:
//!
//! [`claim`] (pending → starting, superseding) → [`building`] (the image:
//! given, or built from an upload or a git commit) →
//! [`deploying`] (topology and network policy per schedulable region, then
//! [`wait`] for instances) → [`network`] (hostnames and routes) →
//! [`finalizing`] (ready, then live in production or older previews
//! retired — only ever forward in creation order).
//!
//! Every side effect is a named `ctx.run` with bounded retries
//! (`errors::step_retry`); each phase is a `deployment_steps` row and a
//! status ([`steps`]). On a terminal failure or a cancel, the
//! [`compensation`]s registered so far run in reverse, durably.

mod building;
pub(super) mod claim;
pub(super) mod compensation;
mod deploying;
mod finalizing;
mod network;
pub(super) mod steps;
pub(super) mod wait;

use ctrl_core::workflows::DeployInput;
use ctrl_github::DeploymentState;
use restate_sdk::prelude::*;
use serde::{Deserialize, Serialize};
use sqlx::MySqlPool;

use claim::Claim;
pub use claim::SUPERSEDED;
use compensation::Undo;

use super::DeploySettings;
use crate::errors::WorkflowError;

/// Everything the later steps need, loaded once by the claim and journaled.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Plan {
    pub(super) deployment_id: String,
    pub(super) workspace_id: String,
    pub(super) project_id: String,
    pub(super) app_id: String,
    pub(super) environment_id: String,
    pub(super) k8s_name: String,
    pub(super) namespace: String,
    pub(super) source: Source,
    pub(super) port: i32,
    pub(super) git_commit_sha: Option<String>,
    pub(super) git_branch: Option<String>,
    pub(super) fork_owner: Option<String>,
    pub(super) from_cli: bool,
    pub(super) workspace_slug: String,
    pub(super) project_slug: String,
    pub(super) app_slug: String,
    pub(super) environment_slug: String,
    pub(super) is_production: bool,
    /// Made by a GitHub webhook: its progress is reported to GitHub.
    pub(super) from_github: bool,
}

/// What the deployment runs, or builds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) enum Source {
    /// A given image.
    Image(String),
    /// An uploaded context (its S3 key).
    Context { key: String, spec: BuildSpec },
    /// A GitHub repository at a commit (pinned, or the head of the branch).
    Git {
        repository: String,
        installation_id: Option<u64>,
        spec: BuildSpec,
    },
}

/// How to build a context.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct BuildSpec {
    /// Directory inside the source ("." = its root).
    pub(super) dir: String,
    /// Dockerfile inside that directory.
    pub(super) dockerfile: String,
    /// Build arguments.
    pub(super) args: std::collections::BTreeMap<String, String>,
    /// Variables of the deployment's snapshot handed to the build as
    /// secrets (names only; values are opened inside the build step).
    pub(super) secrets: Vec<String>,
}

/// Runs the pipeline of `req.deployment_id` (the object's key).
pub(super) async fn run(
    db: &MySqlPool,
    settings: &DeploySettings,
    builds: &crate::builds::Builds,
    metrics: &crate::metrics::WorkerMetrics,
    ctx: &ObjectContext<'_>,
    req: DeployInput,
) -> HandlerResult<()> {
    if req.deployment_id != ctx.key() {
        return Err(WorkflowError::WrongKey {
            handler: "Deploy",
            whose: "own",
        }
        .into());
    }
    let plan = match claim::claim(db, ctx, &req.deployment_id).await? {
        Claim::Started(plan) => {
            // Once per deploy: a replay of this handler does not print it
            // again (the worker's log filter drops replayed lines).
            tracing::info!(deployment_id = %plan.deployment_id, "deploy started");
            *plan
        }
        Claim::Skipped(why) => {
            tracing::info!(deployment_id = %req.deployment_id, %why, "deployment skipped");
            return Ok(());
        }
    };
    let github = |state, description: &str| {
        if plan.from_github {
            crate::services::github_status::report(ctx, &plan.deployment_id, state, description);
        }
    };
    github(DeploymentState::InProgress, "Building and deploying");
    let mut undo = vec![Undo::MarkFailed];
    match phases(db, settings, builds, ctx, &plan, &mut undo).await {
        Ok(()) => {
            github(DeploymentState::Success, "Deployed");
            record(db, metrics, ctx, &plan.deployment_id, true).await;
            Ok(())
        }
        Err(e) => {
            tracing::warn!(deployment_id = %plan.deployment_id, error = %e.message(), "deployment failed");
            compensation::unwind(db, ctx, &plan.deployment_id, &plan.environment_id, undo, &e)
                .await;
            github(DeploymentState::Failure, e.message());
            record(db, metrics, ctx, &plan.deployment_id, false).await;
            Err(e.into())
        }
    }
}

/// Counts the ended run and its steps' durations, once: inside a journaled
/// step (a replay does not record again); best effort.
async fn record(
    db: &MySqlPool,
    metrics: &crate::metrics::WorkerMetrics,
    ctx: &ObjectContext<'_>,
    deployment_id: &str,
    ready: bool,
) {
    let (db, metrics, id) = (db.clone(), metrics.clone(), deployment_id.to_owned());
    let recorded = ctx
        .run(|| async move {
            match ctrl_db::deployment::list_steps(&db, &id).await {
                Ok(steps) => metrics.deploy_ended(ready, &steps),
                Err(e) => {
                    tracing::debug!(deployment_id = %id, error = %e, "steps not read for metrics")
                }
            }
            Ok(())
        })
        .name("record metrics")
        .await;
    if let Err(e) = recorded {
        tracing::debug!(deployment_id, error = %e, "metrics not recorded");
    }
}

/// The phases after the claim; any error ends the pipeline.
async fn phases(
    db: &MySqlPool,
    settings: &DeploySettings,
    builds: &crate::builds::Builds,
    ctx: &ObjectContext<'_>,
    plan: &Plan,
    undo: &mut Vec<Undo>,
) -> Result<(), TerminalError> {
    building::image(db, builds, ctx, plan, undo).await?;
    deploying::start_instances(db, settings, ctx, plan, undo).await?;
    network::assign_routes(db, settings, ctx, plan, undo).await?;
    finalizing::finish(db, settings, ctx, plan, undo).await
}
