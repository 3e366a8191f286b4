//! `GitHubWebhook` (virtual object keyed by installation and repository, so
//! one repository's deliveries run in order): what a GitHub App delivery
//! does, once per delivery — ctrl-api sends it with the delivery id as the
//! idempotency key, and each app's deployment is created with the key
//! `github:{delivery}`, so a redelivery or a worker killed half-way never
//! makes a second deployment for an app.
//!
//! - A push to a branch: for each app connected to the repository, a
//!   deployment of the pushed commit to its production environment (the
//!   app's default branch) or its preview environment (any other branch).
//!   `auto_deploy` off, or watch paths none of the pushed files match, make
//!   it `skipped` with the reason. A deleted branch stops its previews.
//! - A pull request opened or updated: a preview deployment of its head;
//!   from a fork it waits for approval (`ctrl deployments approve`). Closed:
//!   its previews stop.
//! - The app uninstalled, or repositories removed from it: their
//!   connections go.
//!
//! A newer push to a branch supersedes older deployments of it that have
//! not started: that is the pipeline's rule, applied when the newer one
//! starts (builds of superseded ones are cancelled by the build's watcher).

use std::collections::BTreeSet;

use ctrl_core::id::IdKind;
use ctrl_core::status::{DeploymentStatus, DesiredState};
use ctrl_core::workflows::{DeployInput, ScheduleDesiredStateChange};
use ctrl_db::github::Connection;
use ctrl_db::types::{EnvironmentKind, SourceKind, TriggerKind};
use ctrl_db::{deployment, github, settings, tenancy};
use ctrl_github::DeploymentState;
use ctrl_github::webhook::{Delivery, Event, HeadCommit, PullRequestAction};
use prost::Message as _;
use restate_sdk::prelude::*;
use serde::{Deserialize, Serialize};
use sqlx::MySqlPool;

use crate::errors::{db_error, now_ms, step_retry};
use crate::services::deploy::DeployObjectClient;
use crate::services::deployment::DeploymentObjectClient;
use crate::services::github_status;

/// What one delivery did (the handler's output).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// Deployments made (or found, on a retry): (app, deployment, status).
    pub deployments: Vec<(String, String, String)>,
    /// Previews stopped or cancelled.
    pub stopped: Vec<String>,
    /// Connections removed.
    pub disconnected: u64,
}

/// A deployment a delivery asks for, for one connected app.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Wanted {
    branch: String,
    sha: String,
    commit: Option<HeadCommit>,
    pr_number: Option<u32>,
    fork: Option<String>,
    sender: String,
    /// Files the push changed, and whether that is all of them (`None` for
    /// pull requests: not in the payload).
    changed_files: Option<(BTreeSet<String>, bool)>,
    reason: String,
}

/// A deployment row made (or found) for a delivery.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Made {
    id: String,
    status: String,
    /// Its Deploy workflow is to be started now.
    start: bool,
    /// Made by this delivery (not found from an earlier one).
    new: bool,
    /// An earlier deployment of the commit now also deploys the delivery's
    /// pull request.
    pr_attached: bool,
}

/// The GitHubWebhook object.
#[derive(Debug, Clone)]
pub struct GitHubWebhookObject {
    db: MySqlPool,
}

impl GitHubWebhookObject {
    /// The object over a database pool.
    pub fn new(db: MySqlPool) -> Self {
        Self { db }
    }
}

#[restate_sdk::object(name = "GitHubWebhook")]
impl GitHubWebhookObject {
    /// Handles one delivery (see the module docs).
    #[handler(name = "Handle")]
    async fn handle(
        &self,
        ctx: ObjectContext<'_>,
        Json(delivery): Json<Delivery>,
    ) -> HandlerResult<Json<Outcome>> {
        let mut outcome = Outcome::default();
        match delivery.event {
            Event::Ping => {}
            Event::Push(push) if push.deleted => {
                let connections = self
                    .connections(&ctx, push.installation_id, &push.repository)
                    .await?;
                let reason = format!("the branch {} was deleted", push.branch);
                outcome.stopped = self
                    .stop_previews(&ctx, &connections, &push.branch, None, &reason)
                    .await?;
            }
            Event::Push(push) => {
                let connections = self
                    .connections(&ctx, push.installation_id, &push.repository)
                    .await?;
                let wanted = Wanted {
                    reason: format!("push to {} by {}", push.branch, push.sender),
                    branch: push.branch,
                    sha: push.after,
                    commit: push.head_commit,
                    pr_number: None,
                    fork: None,
                    sender: push.sender,
                    changed_files: Some((push.changed_files, push.changed_files_complete)),
                };
                outcome.deployments = self
                    .deploy(&ctx, &delivery.delivery_id, &connections, &wanted)
                    .await?;
            }
            Event::PullRequest(pr) => {
                let connections = self
                    .connections(&ctx, pr.installation_id, &pr.repository)
                    .await?;
                if pr.action == PullRequestAction::Closed {
                    let reason = format!("pull request #{} was closed", pr.number);
                    outcome.stopped = self
                        .stop_previews(
                            &ctx,
                            &connections,
                            &pr.head_branch,
                            Some(pr.number),
                            &reason,
                        )
                        .await?;
                } else {
                    let wanted = Wanted {
                        reason: format!("pull request #{} by {}", pr.number, pr.sender),
                        branch: pr.head_branch,
                        sha: pr.head_sha,
                        commit: None,
                        pr_number: Some(pr.number),
                        fork: pr.fork,
                        sender: pr.sender,
                        changed_files: None,
                    };
                    outcome.deployments = self
                        .deploy(&ctx, &delivery.delivery_id, &connections, &wanted)
                        .await?;
                }
            }
            Event::InstallationRemoved { installation_id } => {
                let db = self.db.clone();
                outcome.disconnected = ctx
                    .run(|| async move {
                        github::disconnect_installation(&db, installation_id, None)
                            .await
                            .map_err(db_error)
                    })
                    .name("disconnect the installation")
                    .retry_policy(step_retry())
                    .await?;
            }
            Event::RepositoriesRemoved {
                installation_id,
                repositories,
            } => {
                let db = self.db.clone();
                outcome.disconnected = ctx
                    .run(|| async move {
                        github::disconnect_installation(&db, installation_id, Some(&repositories))
                            .await
                            .map_err(db_error)
                    })
                    .name("disconnect the repositories")
                    .retry_policy(step_retry())
                    .await?;
            }
        }
        tracing::info!(delivery = %delivery.delivery_id, ?outcome, "webhook handled");
        Ok(Json(outcome))
    }
}

impl GitHubWebhookObject {
    /// The apps connected to the repository through the installation; also
    /// records the repository's GitHub id and current name (renames).
    async fn connections(
        &self,
        ctx: &ObjectContext<'_>,
        installation_id: i64,
        repository: &ctrl_github::webhook::Repository,
    ) -> Result<Vec<Connection>, HandlerError> {
        let (db, repo) = (self.db.clone(), repository.clone());
        let Json(found) = ctx
            .run(|| async move {
                let found = github::for_repository(&db, installation_id, repo.id, &repo.full_name)
                    .await
                    .map_err(db_error)?;
                let now = now_ms();
                for c in &found {
                    if c.repository_id != Some(repo.id) || c.repository_full_name != repo.full_name
                    {
                        github::learn_repository(&db, &c.app_id, repo.id, &repo.full_name, now)
                            .await
                            .map_err(db_error)?;
                    }
                }
                Ok(Json(found))
            })
            .name("find the connected apps")
            .retry_policy(step_retry())
            .await?;
        Ok(found)
    }

    /// One deployment per connected app, each made once and started once.
    async fn deploy(
        &self,
        ctx: &ObjectContext<'_>,
        delivery_id: &str,
        connections: &[Connection],
        wanted: &Wanted,
    ) -> Result<Vec<(String, String, String)>, HandlerError> {
        let mut made_all = Vec::new();
        for c in connections {
            let (db, c2, w, key) = (
                self.db.clone(),
                c.clone(),
                wanted.clone(),
                format!("github:{delivery_id}"),
            );
            let Json(made) = ctx
                .run(|| async move {
                    match make(&db, &c2, &w, &key).await {
                        Ok(made) => Ok(Json(made)),
                        // One app's missing rows (deleted meanwhile) do not
                        // keep the delivery from the others.
                        Err(ctrl_db::Error::NotFound(what)) => {
                            tracing::warn!(%what, "not deployed: missing");
                            Ok(Json(None))
                        }
                        Err(e) => Err(db_error(e)),
                    }
                })
                .name(format!("deployment of {}", c.app_id))
                .retry_policy(step_retry())
                .await?;
            let Some(made) = made else { continue };
            if made.start {
                let invocation = ctx
                    .object_client::<DeployObjectClient<'_>>(&made.id)
                    .deploy(Json(DeployInput {
                        deployment_id: made.id.clone(),
                    }))
                    .send()
                    .await?
                    .invocation_id()
                    .to_owned();
                let (db, id) = (self.db.clone(), made.id.clone());
                ctx.run(|| async move {
                    deployment::set_invocation_id(&db, &id, &invocation, now_ms())
                        .await
                        .map_err(db_error)
                })
                .name(format!("record the workflow of {}", made.id))
                .retry_policy(step_retry())
                .await?;
            }
            match made.status.as_str() {
                "pending" => {
                    github_status::report(ctx, &made.id, DeploymentState::Queued, "Queued")
                }
                "awaiting_approval" => github_status::report(
                    ctx,
                    &made.id,
                    DeploymentState::Queued,
                    "Waiting for approval (a pull request from a fork)",
                ),
                _ => {}
            }
            if made.pr_attached
                && let (Ok(installation_id), Some(pr_number)) =
                    (u64::try_from(c.installation_id), wanted.pr_number)
            {
                github_status::update_comment(
                    ctx,
                    github_status::CommentUpdate {
                        installation_id,
                        repository: c.repository_full_name.clone(),
                        pr_number,
                    },
                );
            }
            made_all.push((c.app_id.clone(), made.id, made.status));
        }
        Ok(made_all)
    }

    /// Stops the previews of a branch (or pull request) of the connected
    /// apps: running ones are stopped, progressing ones cancelled.
    async fn stop_previews(
        &self,
        ctx: &ObjectContext<'_>,
        connections: &[Connection],
        branch: &str,
        pr_number: Option<u32>,
        reason: &str,
    ) -> Result<Vec<String>, HandlerError> {
        let apps: Vec<String> = connections.iter().map(|c| c.app_id.clone()).collect();
        let (db, branch, why) = (self.db.clone(), branch.to_owned(), reason.to_owned());
        // Cancels the progressing ones in the same step; returns the
        // running ones to stop.
        let Json((cancelled, running)) = ctx
            .run(|| async move {
                let (mut cancelled, mut running) = (Vec::new(), Vec::new());
                let now = now_ms();
                for app in &apps {
                    for d in deployment::list_branch_previews(&db, app, &branch, pr_number)
                        .await
                        .map_err(db_error)?
                    {
                        if d.status.is_progressing() {
                            deployment::end_running_steps(&db, &d.id, &why, now)
                                .await
                                .map_err(db_error)?;
                            deployment::set_status_if_active(
                                &db,
                                &d.id,
                                DeploymentStatus::Cancelled,
                                Some(&why),
                                now,
                            )
                            .await
                            .map_err(db_error)?;
                            cancelled.push(d.id);
                        } else if d.desired_state == DesiredState::Running {
                            running.push(d.id);
                        }
                    }
                }
                Ok(Json((cancelled, running)))
            })
            .name("find the previews to stop")
            .retry_policy(step_retry())
            .await?;
        for id in &running {
            ctx.object_client::<DeploymentObjectClient<'_>>(id)
                .schedule(Json(ScheduleDesiredStateChange {
                    delay_millis: 0,
                    state: DesiredState::Stopped.as_str().into(),
                    overwrite: true,
                }))
                .send();
        }
        for id in cancelled.iter().chain(&running) {
            github_status::report(ctx, id, DeploymentState::Inactive, reason);
        }
        tracing::info!(%reason, ?cancelled, ?running, "previews stopped");
        Ok(cancelled.into_iter().chain(running).collect())
    }
}

/// How long a skipped reason lists watch paths.
const MAX_LISTED_PATHS: usize = 5;

/// Makes the deployment `w` asks for in `c`'s app, once per `key`: `None`
/// when the app has no environment for it (or is being deleted).
async fn make(
    db: &MySqlPool,
    c: &Connection,
    w: &Wanted,
    key: &str,
) -> Result<Option<Made>, ctrl_db::Error> {
    if let Some(d) = deployment::find_by_idempotency_key(db, &c.app_id, key).await? {
        return Ok(Some(Made {
            start: d.status == DeploymentStatus::Pending && d.invocation_id.is_none(),
            new: false,
            pr_attached: false,
            status: d.status.as_str().into(),
            id: d.id,
        }));
    }
    let app = tenancy::get_app(db, &c.app_id).await?;
    if app.deleting_at.is_some() {
        return Ok(None);
    }
    let kind = if w.pr_number.is_none() && w.branch == app.default_branch {
        EnvironmentKind::Production
    } else {
        EnvironmentKind::Preview
    };
    let environments = tenancy::list_environments(db, &app.id).await?;
    let Some(env) = environments
        .into_iter()
        .filter(|e| e.kind == kind && e.deleting_at.is_none())
        .min_by_key(|e| (e.slug != "preview", e.slug.clone()))
    else {
        tracing::info!(app = %app.id, ?kind, "no environment for the delivery; nothing deployed");
        return Ok(None);
    };
    // One commit of a branch deploys once, whichever of its push and its
    // pull request event comes first; the pull request's number is kept.
    let sha = w.sha.to_ascii_lowercase();
    if let Some(d) = deployment::find_github_commit(db, &env.id, &w.branch, &sha).await? {
        let pr_attached = match w.pr_number {
            Some(n) => deployment::set_pr_number(db, &d.id, n, now_ms()).await?,
            None => false,
        };
        tracing::info!(deployment_id = %d.id, reason = %w.reason, "this commit is already deployed by an earlier delivery");
        return Ok(Some(Made {
            start: false,
            new: false,
            pr_attached,
            status: d.status.as_str().into(),
            id: d.id,
        }));
    }
    let build = settings::get_build(db, &env.id).await?;
    let runtime = settings::get_runtime(db, &env.id).await?;
    let sealed = settings::list_env_vars(db, &env.id).await?;
    let schedulable = settings::list_regional(db, &env.id)
        .await?
        .iter()
        .filter(|r| r.can_schedule)
        .count();
    let secrets = sealed
        .iter()
        .filter(|v| v.build_secret)
        .map(|v| v.key.clone())
        .collect();
    let environment = ctrl_proto::ctrl::v1::EncryptedEnvironment {
        keyring: env.id.clone(),
        variables: sealed
            .into_iter()
            .map(|v| (v.key, v.encrypted_value))
            .collect(),
    };
    let id = ctrl_core::id::generate(IdKind::Deployment, &mut rand::rng());
    let commit = w.commit.as_ref();
    let new = deployment::NewDeployment {
        id: id.clone(),
        k8s_name: ctrl_core::names::random_dns1035(12, &mut rand::rng()),
        workspace_id: app.workspace_id.clone(),
        project_id: app.project_id.clone(),
        app_id: app.id.clone(),
        environment_id: env.id.clone(),
        source_kind: SourceKind::Git,
        image: None,
        build: Some(deployment::BuildSource {
            context_path: None,
            dir: Some(build.docker_context.clone()),
            dockerfile: Some(
                build
                    .dockerfile
                    .clone()
                    .filter(|d| !d.is_empty())
                    .unwrap_or_else(|| ctrl_build::context::DEFAULT_DOCKERFILE.into()),
            ),
            args: Default::default(),
            secrets,
            installation_id: Some(c.installation_id),
        }),
        git_repository: Some(c.repository_full_name.clone()),
        git_commit_sha: Some(sha),
        git_branch: Some(w.branch.clone()),
        git_commit_message: commit.map(|c| c.message.clone()),
        git_commit_author_handle: commit.map(|c| c.author.clone()),
        git_commit_author_avatar_url: None,
        git_commit_timestamp: commit.map(|c| c.timestamp_ms).filter(|t| *t > 0),
        fork_repository: w.fork.clone(),
        git_pr_number: w.pr_number,
        runtime,
        encrypted_environment: environment.encode_to_vec(),
        trigger_kind: TriggerKind::Github,
        trigger_reason: Some(w.reason.clone()),
        actor_id: None,
        actor_name: Some(w.sender.clone()),
        actor_type: Some(ctrl_db::types::ActorType::User),
        idempotency_key: Some(key.to_owned()),
    };
    let hold = if !build.auto_deploy {
        Some((
            DeploymentStatus::Skipped,
            format!("auto-deploy is off for the {} environment", env.slug),
        ))
    } else if let Some(why) = unwatched(&build.watch_paths.0, w.changed_files.as_ref()) {
        Some((DeploymentStatus::Skipped, why))
    } else if schedulable == 0 {
        Some((
            DeploymentStatus::Skipped,
            format!("the {} environment has no regions to deploy to", env.slug),
        ))
    } else {
        w.fork.as_ref().map(|fork| {
            (
                DeploymentStatus::AwaitingApproval,
                format!(
                    "pull request #{} comes from the fork {fork}: approve it to deploy (ctrl deployments approve {id})",
                    w.pr_number.unwrap_or_default()
                ),
            )
        })
    };
    let now = now_ms();
    let mut tx = db.begin().await?;
    match deployment::insert(&mut *tx, &new, now).await {
        Ok(()) => {}
        // An earlier attempt of this step committed it.
        Err(ctrl_db::Error::AlreadyExists { key: index }) if index == "deployments_idempotency" => {
            drop(tx);
            let d = deployment::find_by_idempotency_key(db, &c.app_id, key)
                .await?
                .ok_or_else(|| ctrl_db::Error::NotFound("the deployment of the delivery"))?;
            return Ok(Some(Made {
                start: d.status == DeploymentStatus::Pending && d.invocation_id.is_none(),
                new: false,
                pr_attached: false,
                status: d.status.as_str().into(),
                id: d.id,
            }));
        }
        Err(e) => return Err(e),
    }
    if let Some((status, why)) = &hold {
        deployment::hold(&mut *tx, &id, *status, why, now).await?;
    }
    tx.commit().await?;
    let status = hold.as_ref().map_or(DeploymentStatus::Pending, |(s, _)| *s);
    tracing::info!(deployment_id = %id, app_id = %app.id, environment = %env.slug, status = status.as_str(), reason = %w.reason, "deployment made by a webhook");
    Ok(Some(Made {
        id,
        status: status.as_str().into(),
        start: hold.is_none(),
        new: true,
        pr_attached: false,
    }))
}

/// Why a push does not deploy given the watch paths, if it does not: none
/// of the (complete) changed files matches any of them.
fn unwatched(watch_paths: &[String], changed: Option<&(BTreeSet<String>, bool)>) -> Option<String> {
    let (files, complete) = changed?;
    if watch_paths.is_empty() || !complete {
        return None;
    }
    let mut set = globset::GlobSetBuilder::new();
    for p in watch_paths {
        match globset::Glob::new(p.trim_start_matches('/')) {
            Ok(g) => {
                set.add(g);
            }
            // A bad pattern never silently skips deploys.
            Err(_) => return None,
        }
    }
    let set = set.build().ok()?;
    if files.iter().any(|f| set.is_match(f)) {
        return None;
    }
    let listed: Vec<&str> = watch_paths
        .iter()
        .take(MAX_LISTED_PATHS)
        .map(String::as_str)
        .collect();
    Some(format!(
        "no changed file matches the watch paths ({}{})",
        listed.join(", "),
        if watch_paths.len() > MAX_LISTED_PATHS {
            ", …"
        } else {
            ""
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_paths_skip_only_pushes_that_touch_none_of_them() {
        let files =
            |fs: &[&str], complete: bool| (fs.iter().map(|s| (*s).to_owned()).collect(), complete);
        let paths = vec!["api/**".to_owned(), "Dockerfile".to_owned()];
        assert_eq!(
            unwatched(&paths, Some(&files(&["api/src/main.rs"], true))),
            None
        );
        assert_eq!(unwatched(&paths, Some(&files(&["Dockerfile"], true))), None);
        let why = unwatched(&paths, Some(&files(&["web/index.html"], true))).expect("skipped");
        assert!(why.contains("api/**, Dockerfile"), "{why}");
        // An incomplete list, no list (pull requests) or no watch paths
        // always deploy.
        assert_eq!(unwatched(&paths, Some(&files(&["web/x"], false))), None);
        assert_eq!(unwatched(&paths, None), None);
        assert_eq!(unwatched(&[], Some(&files(&["web/x"], true))), None);
        // A bad pattern never skips.
        assert_eq!(
            unwatched(&["a/[".to_owned()], Some(&files(&["web/x"], true))),
            None
        );
    }
}
