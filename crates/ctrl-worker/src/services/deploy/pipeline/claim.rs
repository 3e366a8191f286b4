//! Claiming a pending deployment: supersede it if a newer one of its branch
//! exists, supersede older ones that have not started, move it to
//! `starting` and load what the pipeline needs — in one transaction.

use ctrl_core::status::{DeploymentStatus, StepKind};
use ctrl_db::types::{EnvironmentKind, SourceKind, TriggerKind};
use ctrl_db::{deployment, tenancy};
use restate_sdk::prelude::*;
use serde::{Deserialize, Serialize};
use sqlx::MySqlPool;

use super::Plan;
use super::compensation;
use crate::errors::{begin, commit, db_error, now_ms, step_retry};

/// Stamped on the steps and status of deployments a newer commit replaced.
/// (The dashboard matches this exact string.)
pub const SUPERSEDED: &str = "Superseded by newer commit";

/// The outcome of claiming a deployment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(in crate::services::deploy) enum Claim {
    /// It was pending and is now starting.
    Started(Box<Plan>),
    /// Nothing to do (superseded, cancelled, already finished): why.
    Skipped(String),
}

/// Claims `id`. If the claim cannot be made at all (the database stays
/// unreachable past the step's retries), the deployment is marked failed —
/// durably — rather than left pending with nothing behind it.
pub(in crate::services::deploy) async fn claim(
    db: &MySqlPool,
    ctx: &ObjectContext<'_>,
    id: &str,
) -> Result<Claim, TerminalError> {
    let (pool, id_) = (db.clone(), id.to_owned());
    let claimed = ctx
        .run(|| async move { load(&pool, &id_).await.map(Json) })
        .name("claim deployment")
        .retry_policy(step_retry())
        .await;
    match claimed {
        Ok(Json(claim)) => Ok(claim),
        Err(e) => {
            let why = format!("The deployment could not be started: {}", e.message());
            compensation::mark_failed(db, ctx, id, &why).await?;
            Err(e)
        }
    }
}

async fn load(db: &MySqlPool, id: &str) -> Result<Claim, HandlerError> {
    let now = now_ms();
    let mut tx = begin(db).await?;
    let d = deployment::get(&mut *tx, id).await.map_err(db_error)?;
    match d.status {
        DeploymentStatus::Pending => {
            if let Some(skipped) = start(&mut tx, &d, now).await? {
                commit(tx).await?;
                return Ok(skipped);
            }
        }
        // Our own claim committed, then the worker died before Restate
        // journaled it: load again, change nothing.
        DeploymentStatus::Starting => {}
        s if s.is_terminal() => return Ok(Claim::Skipped(format!("deployment is {s}"))),
        // Another run of the pipeline owns it.
        s => {
            return Ok(Claim::Skipped(format!(
                "deployment is already {s}: its pipeline started before"
            )));
        }
    }
    let workspace = tenancy::get_workspace(&mut *tx, &d.workspace_id)
        .await
        .map_err(db_error)?;
    let project = tenancy::get_project(&mut *tx, &d.project_id)
        .await
        .map_err(db_error)?;
    let app = tenancy::get_app(&mut *tx, &d.app_id)
        .await
        .map_err(db_error)?;
    let environment = tenancy::get_environment(&mut *tx, &d.environment_id)
        .await
        .map_err(db_error)?;
    let candidate = ctrl_core::names::random_dns1035(12, &mut rand::rng());
    let namespace = tenancy::ensure_k8s_namespace(&mut tx, &workspace.id, &candidate, now)
        .await
        .map_err(db_error)?;
    deployment::end_step(&mut *tx, id, StepKind::Starting, None, now)
        .await
        .map_err(db_error)?;
    commit(tx).await?;
    let source = source_of(&d)?;
    Ok(Claim::Started(Box::new(Plan {
        deployment_id: d.id,
        workspace_id: d.workspace_id,
        project_id: d.project_id,
        app_id: d.app_id,
        environment_id: d.environment_id,
        k8s_name: d.k8s_name,
        namespace,
        source,
        port: d.port,
        git_commit_sha: d.git_commit_sha,
        git_branch: d.git_branch,
        fork_owner: d
            .fork_repository
            .as_deref()
            .and_then(|r| r.split_once('/'))
            .map(|(owner, _)| owner.to_owned()),
        from_cli: d.trigger_kind == TriggerKind::Cli,
        workspace_slug: workspace.slug,
        project_slug: project.slug,
        app_slug: app.slug,
        environment_slug: environment.slug,
        is_production: environment.kind == EnvironmentKind::Production,
        from_github: d.trigger_kind == TriggerKind::Github,
    })))
}

/// What the deployment row says to run or build.
fn source_of(d: &deployment::Deployment) -> Result<super::Source, HandlerError> {
    use super::{BuildSpec, Source};
    let spec = || BuildSpec {
        dir: d.build_dir.clone().unwrap_or_else(|| ".".into()),
        dockerfile: d
            .dockerfile_path
            .clone()
            .unwrap_or_else(|| ctrl_build::context::DEFAULT_DOCKERFILE.into()),
        args: d.build_args.clone().map(|a| a.0).unwrap_or_default(),
        secrets: d.build_secrets.clone().map(|s| s.0).unwrap_or_default(),
    };
    let missing = |what: &str| -> HandlerError {
        crate::errors::WorkflowError::Internal(format!(
            "deployment {} is a {} build without {what}",
            d.id,
            d.source_kind.as_str()
        ))
        .into()
    };
    Ok(match d.source_kind {
        SourceKind::Image => Source::Image(
            d.image
                .clone()
                .ok_or(crate::errors::WorkflowError::NoSource)?,
        ),
        SourceKind::Context => Source::Context {
            key: d
                .build_context_path
                .clone()
                .ok_or_else(|| missing("a build context"))?,
            spec: spec(),
        },
        SourceKind::Git => Source::Git {
            repository: d
                .git_repository
                .clone()
                .ok_or_else(|| missing("a repository"))?,
            installation_id: d
                .git_installation_id
                .and_then(|i| u64::try_from(i).ok())
                .filter(|i| *i > 0),
            spec: spec(),
        },
    })
}

/// Supersedes `d` if a newer deployment of its branch exists (returning
/// why it is skipped), else supersedes older ones of the branch that have
/// not started and moves `d` from pending to starting.
async fn start(
    tx: &mut sqlx::MySqlConnection,
    d: &deployment::Deployment,
    now: i64,
) -> Result<Option<Claim>, HandlerError> {
    use DeploymentStatus::{AwaitingApproval, Pending, Starting, Superseded};
    if d.git_branch.is_some() {
        if deployment::has_newer_active(&mut *tx, d)
            .await
            .map_err(db_error)?
        {
            if deployment::compare_and_set_status(&mut *tx, &d.id, Pending, Superseded, now)
                .await
                .map_err(db_error)?
            {
                queued_step(tx, d, Some(SUPERSEDED), now).await?;
            }
            return Ok(Some(Claim::Skipped(SUPERSEDED.into())));
        }
        let older = deployment::list_older_not_started(&mut *tx, d)
            .await
            .map_err(db_error)?;
        for id in older {
            for from in [Pending, AwaitingApproval] {
                if deployment::compare_and_set_status(&mut *tx, &id, from, Superseded, now)
                    .await
                    .map_err(db_error)?
                {
                    let older = deployment::get(&mut *tx, &id).await.map_err(db_error)?;
                    queued_step(tx, &older, Some(SUPERSEDED), now).await?;
                }
            }
        }
    }
    if !deployment::compare_and_set_status(&mut *tx, &d.id, Pending, Starting, now)
        .await
        .map_err(db_error)?
    {
        return Ok(Some(Claim::Skipped("no longer pending".into())));
    }
    queued_step(tx, d, None, now).await?;
    deployment::start_step(
        &mut *tx,
        &d.workspace_id,
        &d.id,
        StepKind::Starting,
        "Loading the deployment",
        now,
    )
    .await
    .map_err(db_error)?;
    Ok(None)
}

/// Records the time spent queued (from creation until now).
async fn queued_step(
    tx: &mut sqlx::MySqlConnection,
    d: &deployment::Deployment,
    error: Option<&str>,
    now: i64,
) -> Result<(), HandlerError> {
    deployment::start_step(
        &mut *tx,
        &d.workspace_id,
        &d.id,
        StepKind::Queued,
        "Queued",
        d.created_at,
    )
    .await
    .map_err(db_error)?;
    deployment::end_step(&mut *tx, &d.id, StepKind::Queued, error, now)
        .await
        .map_err(db_error)?;
    Ok(())
}
