//! Reporting deployments made by GitHub webhooks back to GitHub:
//!
//! - `GitHubStatus` (virtual object keyed by deployment id, so its reports
//!   reach GitHub in order): on the first report a GitHub Deployment for the
//!   commit and the app's environment, then one deployment status per report
//!   (`queued → in_progress → success | failure | inactive`, the log URL on
//!   the dashboard, the environment URL once ready) and the commit status
//!   `ctrl/{app}`; for a pull request, an update of its comment.
//! - `GitHubComment` (keyed by repository and pull request, so updates never
//!   interleave): one sticky comment per pull request, found by its marker or
//!   created once, then edited in place, with a row per app: state and
//!   preview URL.
//!
//! The pipeline only sends reports (fire and forget). Every GitHub call is a
//! named `ctx.run` retried briefly; a call that still fails is logged and
//! skipped — GitHub being down never fails or delays a deployment.

use std::collections::BTreeMap;
use std::time::Duration;

use ctrl_core::domains::Sticky;
use ctrl_core::status::DeploymentStatus;
use ctrl_db::types::{EnvironmentKind, TriggerKind};
use ctrl_db::{deployment, route, tenancy};
use ctrl_github::{
    CommitState, CommitStatus, DeploymentState, DeploymentStatus as GhStatus, GitHub, GitHubError,
    NewDeployment, RepoRef,
};
use restate_sdk::prelude::*;
use serde::{Deserialize, Serialize};
use sqlx::MySqlPool;

use crate::errors::{db_error, step_retry};

/// State key: the GitHub Deployment's id.
const GITHUB_DEPLOYMENT: &str = "github_deployment_id";
/// State key: the pull request comment's id.
const COMMENT: &str = "comment_id";
/// What marks ctrl's comment on a pull request.
pub const COMMENT_MARKER: &str = "<!-- ctrl:preview-deployments -->";

/// Input of `GitHubStatus/{deployment}/Report`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// The deployment's state on GitHub.
    pub state: DeploymentState,
    /// One line (truncated to GitHub's 140 characters).
    pub description: String,
}

/// Input of `GitHubComment/{key}/Update`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommentUpdate {
    /// The installation that writes it.
    pub installation_id: u64,
    /// "owner/repo".
    pub repository: String,
    /// The pull request.
    pub pr_number: u32,
}

impl CommentUpdate {
    /// The comment object's key.
    pub fn key(&self) -> String {
        format!(
            "{}:{}#{}",
            self.installation_id,
            self.repository.to_lowercase(),
            self.pr_number
        )
    }
}

/// Sends a report on a deployment (fire and forget; GitHubStatus ignores
/// deployments webhooks did not make).
pub fn report(
    ctx: &ObjectContext<'_>,
    deployment_id: &str,
    state: DeploymentState,
    description: &str,
) {
    ctx.object_client::<GitHubStatusObjectClient<'_>>(deployment_id)
        .report(Json(Report {
            state,
            description: description.to_owned(),
        }))
        .send();
}

/// Sends an update of a pull request's comment (fire and forget).
pub fn update_comment(ctx: &ObjectContext<'_>, update: CommentUpdate) {
    ctx.object_client::<GitHubCommentObjectClient<'_>>(update.key())
        .update(Json(update))
        .send();
}

/// What a report needs of the deployment, read once per report.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Target {
    installation_id: u64,
    repository: String,
    sha: String,
    environment: String,
    production: bool,
    app_slug: String,
    pr_number: Option<u32>,
    url: Option<String>,
}

/// The objects' shared dependencies.
#[derive(Debug, Clone)]
pub struct Reporter {
    db: MySqlPool,
    github: GitHub,
    /// `[github] dashboard_url`: log URLs are `{dashboard_url}/deployments/{id}`.
    dashboard_url: String,
}

impl Reporter {
    /// Over the database, the GitHub client and the dashboard's URL.
    pub fn new(db: MySqlPool, github: GitHub, dashboard_url: &str) -> Self {
        Self {
            db,
            github,
            dashboard_url: dashboard_url.trim_end_matches('/').to_owned(),
        }
    }
}

/// Brief retries of a GitHub call (about 15 s); then it is skipped.
fn github_retry() -> RunRetryPolicy {
    RunRetryPolicy::new()
        .initial_delay(Duration::from_millis(500))
        .exponentiation_factor(2.0)
        .max_delay(Duration::from_secs(5))
        .max_attempts(4)
}

/// A GitHub failure as a step error: transient ones are retried, others end
/// the step at once.
fn github_error(e: GitHubError) -> HandlerError {
    if e.is_transient() {
        HandlerError::from(e)
    } else {
        TerminalError::new(e.to_string()).into()
    }
}

/// The GitHubStatus object.
#[derive(Debug, Clone)]
pub struct GitHubStatusObject {
    r: Reporter,
}

impl GitHubStatusObject {
    /// The object.
    pub fn new(r: Reporter) -> Self {
        Self { r }
    }
}

#[restate_sdk::object(name = "GitHubStatus")]
impl GitHubStatusObject {
    /// Reports the deployment's state to GitHub (see the module docs).
    #[handler(name = "Report")]
    async fn report(
        &self,
        ctx: ObjectContext<'_>,
        Json(report): Json<Report>,
    ) -> HandlerResult<()> {
        let deployment_id = ctx.key().to_owned();
        let db = self.r.db.clone();
        let id = deployment_id.clone();
        let Json(target) = ctx
            .run(|| async move { target(&db, &id).await.map(Json).map_err(db_error) })
            .name("read the deployment")
            .retry_policy(step_retry())
            .await?;
        let Some(target) = target else {
            return Ok(());
        };
        let repo = match RepoRef::parse(&target.repository) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(%deployment_id, error = %e, "not reported to GitHub");
                return Ok(());
            }
        };
        let log_url = (!self.r.dashboard_url.is_empty())
            .then(|| format!("{}/deployments/{deployment_id}", self.r.dashboard_url));

        let github_deployment = match ctx.get::<u64>(GITHUB_DEPLOYMENT).await? {
            Some(id) => Some(id),
            None => {
                let (github, t, r) = (self.r.github.clone(), target.clone(), repo.clone());
                let created = ctx
                    .run(|| async move {
                        github
                            .create_deployment(
                                t.installation_id,
                                &r,
                                &NewDeployment {
                                    sha: &t.sha,
                                    environment: &t.environment,
                                    description: &format!("ctrl deployment of {}", t.app_slug),
                                    transient: !t.production,
                                    production: t.production,
                                },
                            )
                            .await
                            .map_err(github_error)
                    })
                    .name("create the GitHub deployment")
                    .retry_policy(github_retry())
                    .await;
                match created {
                    Ok(id) => {
                        ctx.set(GITHUB_DEPLOYMENT, id);
                        Some(id)
                    }
                    Err(e) => {
                        tracing::warn!(%deployment_id, error = %e, "could not create the GitHub deployment");
                        None
                    }
                }
            }
        };
        if let Some(gh_id) = github_deployment {
            let (github, t, r, report, log) = (
                self.r.github.clone(),
                target.clone(),
                repo.clone(),
                report.clone(),
                log_url.clone(),
            );
            let posted = ctx
                .run(|| async move {
                    let environment_url = (report.state == DeploymentState::Success)
                        .then_some(t.url.as_deref())
                        .flatten();
                    github
                        .create_deployment_status(
                            t.installation_id,
                            &r,
                            gh_id,
                            &GhStatus {
                                state: report.state,
                                description: &report.description,
                                log_url: log.as_deref(),
                                environment_url,
                            },
                        )
                        .await
                        .map_err(github_error)
                })
                .name(format!("deployment status {:?}", report.state))
                .retry_policy(github_retry())
                .await;
            if let Err(e) = posted {
                tracing::warn!(%deployment_id, error = %e, "could not post the GitHub deployment status");
            }
        }
        let commit_state = match report.state {
            DeploymentState::Queued | DeploymentState::InProgress => Some(CommitState::Pending),
            DeploymentState::Success => Some(CommitState::Success),
            DeploymentState::Failure => Some(CommitState::Failure),
            DeploymentState::Error => Some(CommitState::Error),
            DeploymentState::Inactive => None,
        };
        if let Some(state) = commit_state {
            let (github, t, r, report, log) = (
                self.r.github.clone(),
                target.clone(),
                repo.clone(),
                report.clone(),
                log_url,
            );
            let posted = ctx
                .run(|| async move {
                    github
                        .create_commit_status(
                            t.installation_id,
                            &r,
                            &t.sha,
                            &CommitStatus {
                                state,
                                context: &format!("ctrl/{}", t.app_slug),
                                description: &report.description,
                                target_url: log.as_deref().or(t.url.as_deref()),
                            },
                        )
                        .await
                        .map_err(github_error)
                })
                .name("commit status")
                .retry_policy(github_retry())
                .await;
            if let Err(e) = posted {
                tracing::warn!(%deployment_id, error = %e, "could not post the commit status");
            }
        }
        if let Some(pr_number) = target.pr_number {
            update_comment(
                &ctx,
                CommentUpdate {
                    installation_id: target.installation_id,
                    repository: target.repository.clone(),
                    pr_number,
                },
            );
        }
        Ok(())
    }
}

/// The GitHubComment object.
#[derive(Debug, Clone)]
pub struct GitHubCommentObject {
    r: Reporter,
}

impl GitHubCommentObject {
    /// The object.
    pub fn new(r: Reporter) -> Self {
        Self { r }
    }
}

#[restate_sdk::object(name = "GitHubComment")]
impl GitHubCommentObject {
    /// Renders the pull request's table and writes it to its comment.
    #[handler(name = "Update")]
    async fn update(
        &self,
        ctx: ObjectContext<'_>,
        Json(u): Json<CommentUpdate>,
    ) -> HandlerResult<()> {
        let (db, repository, dashboard) = (
            self.r.db.clone(),
            u.repository.clone(),
            self.r.dashboard_url.clone(),
        );
        let body = ctx
            .run(|| async move {
                comment_body(&db, &repository, u.pr_number, &dashboard)
                    .await
                    .map_err(db_error)
            })
            .name("render the comment")
            .retry_policy(step_retry())
            .await?;
        let Ok(repo) = RepoRef::parse(&u.repository) else {
            return Ok(());
        };
        let mut comment = ctx.get::<u64>(COMMENT).await?;
        if comment.is_none() {
            let (github, r) = (self.r.github.clone(), repo.clone());
            let found = ctx
                .run(|| async move {
                    github
                        .find_comment(
                            u.installation_id,
                            &r,
                            u64::from(u.pr_number),
                            COMMENT_MARKER,
                        )
                        .await
                        .map_err(github_error)
                })
                .name("find the comment")
                .retry_policy(github_retry())
                .await;
            match found {
                Ok(Some(id)) => comment = Some(id),
                Ok(None) => {
                    let (github, r, b) = (self.r.github.clone(), repo.clone(), body.clone());
                    let created = ctx
                        .run(|| async move {
                            github
                                .create_comment(u.installation_id, &r, u64::from(u.pr_number), &b)
                                .await
                                .map_err(github_error)
                        })
                        .name("create the comment")
                        .retry_policy(github_retry())
                        .await;
                    match created {
                        Ok(id) => {
                            ctx.set(COMMENT, id);
                            return Ok(());
                        }
                        Err(e) => {
                            tracing::warn!(pr = u.pr_number, error = %e, "could not create the pull request comment");
                            return Ok(());
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(pr = u.pr_number, error = %e, "could not look for the pull request comment");
                    return Ok(());
                }
            }
        }
        let Some(id) = comment else { return Ok(()) };
        ctx.set(COMMENT, id);
        let (github, r) = (self.r.github.clone(), repo);
        let updated = ctx
            .run(|| async move {
                github
                    .update_comment(u.installation_id, &r, id, &body)
                    .await
                    .map_err(github_error)
            })
            .name("update the comment")
            .retry_policy(github_retry())
            .await;
        if let Err(e) = updated {
            // Deleted by someone, or no access: look for it again next time.
            ctx.clear(COMMENT);
            tracing::warn!(pr = u.pr_number, error = %e, "could not update the pull request comment");
        }
        Ok(())
    }
}

/// What a report needs, for a deployment a webhook made (else `None`).
async fn target(db: &MySqlPool, id: &str) -> Result<Option<Target>, ctrl_db::Error> {
    let d = deployment::get(db, id).await?;
    let (Some(installation_id), Some(repository), Some(sha)) = (
        d.git_installation_id.and_then(|i| u64::try_from(i).ok()),
        d.git_repository.clone(),
        d.git_commit_sha.clone(),
    ) else {
        return Ok(None);
    };
    if d.trigger_kind != TriggerKind::Github {
        return Ok(None);
    }
    let app = tenancy::get_app(db, &d.app_id).await?;
    let env = tenancy::get_environment(db, &d.environment_id).await?;
    let production = env.kind == EnvironmentKind::Production;
    // Like Vercel's "Production" and "Preview": one GitHub environment per
    // app and ctrl environment (previews transient), not one per branch.
    let environment = format!("{} ({})", app.slug, env.slug);
    Ok(Some(Target {
        installation_id,
        repository,
        sha,
        environment,
        production,
        app_slug: app.slug,
        pr_number: d.git_pr_number,
        url: url_of(db, id, production).await?,
    }))
}

/// The URL a deployment answers at: for production the environment's (or
/// live) hostname, for a preview its branch's, else its own.
async fn url_of(
    db: &MySqlPool,
    id: &str,
    production: bool,
) -> Result<Option<String>, ctrl_db::Error> {
    let routes = route::list_by_deployment(db, id).await?;
    let order: &[Sticky] = if production {
        &[
            Sticky::Live,
            Sticky::Environment,
            Sticky::Branch,
            Sticky::None,
            Sticky::Deployment,
        ]
    } else {
        &[
            Sticky::Branch,
            Sticky::None,
            Sticky::Deployment,
            Sticky::Environment,
            Sticky::Live,
        ]
    };
    Ok(order
        .iter()
        .find_map(|s| routes.iter().find(|r| r.sticky == *s))
        .map(|r| format!("https://{}", r.fully_qualified_domain_name)))
}

/// The comment: a marker, then one row per app (its newest deployment for
/// the pull request).
async fn comment_body(
    db: &MySqlPool,
    repository: &str,
    pr_number: u32,
    dashboard: &str,
) -> Result<String, ctrl_db::Error> {
    let mut newest: BTreeMap<String, deployment::Deployment> = BTreeMap::new();
    for d in deployment::list_for_pull_request(db, repository, pr_number).await? {
        newest.insert(d.app_id.clone(), d);
    }
    let mut rows = Vec::new();
    for d in newest.values() {
        let app = match tenancy::get_app(db, &d.app_id).await {
            Ok(app) => app.slug,
            Err(ctrl_db::Error::NotFound(_)) => continue,
            Err(e) => return Err(e),
        };
        let state = match d.status {
            DeploymentStatus::Ready => "✅ Ready",
            DeploymentStatus::Failed => "❌ Failed",
            DeploymentStatus::AwaitingApproval => "⏸️ Awaiting approval",
            DeploymentStatus::Skipped => "⏭️ Skipped",
            DeploymentStatus::Cancelled | DeploymentStatus::Superseded => "⏹️ Cancelled",
            DeploymentStatus::Stopped => "⏹️ Stopped",
            _ => "⏳ Building",
        };
        let url = if d.status == DeploymentStatus::Ready {
            url_of(db, &d.id, false).await?.unwrap_or_default()
        } else {
            String::new()
        };
        let preview = if url.is_empty() {
            "—".to_owned()
        } else {
            format!("[{}]({url})", url.trim_start_matches("https://"))
        };
        let sha = d
            .git_commit_sha
            .as_deref()
            .unwrap_or("")
            .get(..7)
            .unwrap_or("");
        let details = if dashboard.is_empty() {
            d.id.clone()
        } else {
            format!("[{}]({dashboard}/deployments/{})", d.id, d.id)
        };
        rows.push(format!(
            "| {app} | {state} | {preview} | `{sha}` | {details} |"
        ));
    }
    Ok(format!(
        "{COMMENT_MARKER}\n**ctrl** previews of this pull request\n\n| App | State | Preview | Commit | Deployment |\n|---|---|---|---|---|\n{}\n",
        rows.join("\n")
    ))
}
