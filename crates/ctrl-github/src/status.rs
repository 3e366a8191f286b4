//! Reporting back to a repository: deployments and their statuses, commit
//! statuses, and the comment ctrl keeps on a pull request.
//!
//! Every call needs an installation (there is no anonymous way to write),
//! whose app has the permission the call names in its errors:
//! "Deployments: write", "Commit statuses: write" or "Pull requests: write".
//! Descriptions longer than GitHub's 140 characters are cut to 139 and "…";
//! comment bodies longer than GitHub's 65536 characters are refused.
//!
//! A write that timed out may still have been done by GitHub: trying again
//! can create a second deployment, status or comment.

use std::borrow::Cow;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::client::{Auth, GitHub, read_answer};
use crate::error::{GitHubError, Write, write_failure};
use crate::repos::{RepoRef, commit_sha};

/// The most characters GitHub keeps in a deployment's or a status's
/// description.
pub const MAX_DESCRIPTION_CHARS: usize = 140;

/// The most characters GitHub accepts in a comment's body.
pub const MAX_COMMENT_CHARS: usize = 65_536;

/// How many pages of 100 comments [`GitHub::find_comment`] reads at most.
pub const MAX_COMMENT_PAGES: u64 = 20;

const COMMENTS_PER_PAGE: usize = 100;

/// GitHub's limit on environment names.
const MAX_ENVIRONMENT_CHARS: usize = 255;

/// A deployment to create with [`GitHub::create_deployment`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewDeployment<'a> {
    /// The commit deployed: all 40 hexadecimal digits.
    pub sha: &'a str,
    /// The environment's name as GitHub shows it, e.g. "production" or
    /// "preview/feature-x".
    pub environment: &'a str,
    /// A short description (cut to 140 characters).
    pub description: &'a str,
    /// The environment goes away at some point (previews).
    pub transient: bool,
    /// The environment is the one end users see.
    pub production: bool,
}

/// A deployment's state, as GitHub names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentState {
    /// Waiting to start.
    Queued,
    /// Building or rolling out.
    InProgress,
    /// Live.
    Success,
    /// Failed because of what was deployed.
    Failure,
    /// Failed because of ctrl or the infrastructure.
    Error,
    /// Replaced or stopped.
    Inactive,
}

/// A status to add to a deployment with
/// [`GitHub::create_deployment_status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeploymentStatus<'a> {
    /// The new state.
    pub state: DeploymentState,
    /// A short description (cut to 140 characters).
    pub description: &'a str,
    /// Where the deployment's logs are (GitHub's "View logs").
    pub log_url: Option<&'a str>,
    /// Where the deployed app answers (GitHub's "View deployment").
    pub environment_url: Option<&'a str>,
}

/// A commit status's state, as GitHub names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommitState {
    /// Running.
    Pending,
    /// Passed.
    Success,
    /// Failed because of the commit.
    Failure,
    /// Failed because of ctrl or the infrastructure.
    Error,
}

/// A status to set on a commit with [`GitHub::create_commit_status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitStatus<'a> {
    /// The new state.
    pub state: CommitState,
    /// Which check this is, e.g. "ctrl/deploy"; a later status with the
    /// same context replaces it on GitHub's pages.
    pub context: &'a str,
    /// A short description (cut to 140 characters).
    pub description: &'a str,
    /// Where the status's "Details" link leads.
    pub target_url: Option<&'a str>,
}

#[derive(Deserialize)]
struct IdJson {
    id: u64,
}

#[derive(Deserialize)]
struct CommentJson {
    id: u64,
    #[serde(default)]
    body: Option<String>,
}

impl GitHub {
    /// Creates a deployment of a commit to an environment and returns its
    /// id.
    ///
    /// Sends `POST /repos/{owner}/{repo}/deployments` without auto-merge and
    /// without required status checks, so GitHub records the deployment of
    /// exactly this commit whatever its checks say.
    pub async fn create_deployment(
        &self,
        installation_id: u64,
        repo: &RepoRef,
        d: &NewDeployment<'_>,
    ) -> Result<u64, GitHubError> {
        let sha = commit_sha(d.sha, 40)?;
        let environment = d.environment;
        if environment.trim().is_empty() {
            return Err(GitHubError::invalid(
                "deployment.environment",
                "must not be empty",
            ));
        }
        if environment.chars().count() > MAX_ENVIRONMENT_CHARS {
            return Err(GitHubError::invalid(
                "deployment.environment",
                format!("must be at most {MAX_ENVIRONMENT_CHARS} characters"),
            ));
        }
        let path = format!("{}/deployments", repo.api_path());
        let body = json!({
            "ref": sha,
            "environment": environment,
            "description": description(d.description),
            "auto_merge": false,
            "required_contexts": [],
            "transient_environment": d.transient,
            "production_environment": d.production,
        });
        let write = Write::Deployment {
            sha: &sha,
            environment,
        };
        let answer = self
            .call_as_installation(
                installation_id,
                repo,
                Method::POST,
                &path,
                Some(&body),
                write,
            )
            .await?;
        Ok(parse::<IdJson>(&answer, "POST", &path)?.id)
    }

    /// Adds a status to a deployment. GitHub marks the earlier successful
    /// deployments to the same environment inactive (`auto_inactive`) when
    /// the environment is neither transient nor production.
    ///
    /// Sends `POST /repos/{owner}/{repo}/deployments/{id}/statuses`.
    pub async fn create_deployment_status(
        &self,
        installation_id: u64,
        repo: &RepoRef,
        deployment_id: u64,
        s: &DeploymentStatus<'_>,
    ) -> Result<(), GitHubError> {
        nonzero("deployment_id", deployment_id)?;
        let path = format!("{}/deployments/{deployment_id}/statuses", repo.api_path());
        let mut body = json!({
            "state": s.state,
            "description": description(s.description),
            "auto_inactive": true,
        });
        if let Some(url) = s.log_url {
            body["log_url"] = url.into();
        }
        if let Some(url) = s.environment_url {
            body["environment_url"] = url.into();
        }
        self.call_as_installation(
            installation_id,
            repo,
            Method::POST,
            &path,
            Some(&body),
            Write::DeploymentStatus(deployment_id),
        )
        .await?;
        Ok(())
    }

    /// Sets a status on a commit (`sha`: all 40 digits).
    ///
    /// Sends `POST /repos/{owner}/{repo}/statuses/{sha}`.
    pub async fn create_commit_status(
        &self,
        installation_id: u64,
        repo: &RepoRef,
        sha: &str,
        s: &CommitStatus<'_>,
    ) -> Result<(), GitHubError> {
        let sha = commit_sha(sha, 40)?;
        if s.context.trim().is_empty() {
            return Err(GitHubError::invalid(
                "commit_status.context",
                "must not be empty",
            ));
        }
        let path = format!("{}/statuses/{sha}", repo.api_path());
        let mut body = json!({
            "state": s.state,
            "context": s.context,
            "description": description(s.description),
        });
        if let Some(url) = s.target_url {
            body["target_url"] = url.into();
        }
        let write = Write::CommitStatus {
            sha: &sha,
            context: s.context,
        };
        self.call_as_installation(
            installation_id,
            repo,
            Method::POST,
            &path,
            Some(&body),
            write,
        )
        .await?;
        Ok(())
    }

    /// The id of the oldest comment on pull request (or issue) `number`
    /// whose body contains `marker`, if any.
    ///
    /// Sends `GET /repos/{owner}/{repo}/issues/{number}/comments` for pages
    /// of 100 comments, oldest first, until a page is not full, at most
    /// [`MAX_COMMENT_PAGES`] pages (comments after the 2000th are not
    /// looked at).
    pub async fn find_comment(
        &self,
        installation_id: u64,
        repo: &RepoRef,
        number: u64,
        marker: &str,
    ) -> Result<Option<u64>, GitHubError> {
        nonzero("pull_request", number)?;
        if marker.is_empty() {
            return Err(GitHubError::invalid("comment.marker", "must not be empty"));
        }
        for page in 1..=MAX_COMMENT_PAGES {
            let path = format!(
                "{}/issues/{number}/comments?per_page={COMMENTS_PER_PAGE}&page={page}",
                repo.api_path()
            );
            let answer = self
                .call_as_installation(
                    installation_id,
                    repo,
                    Method::GET,
                    &path,
                    None,
                    Write::Comments(number),
                )
                .await?;
            let comments: Vec<CommentJson> = parse(&answer, "GET", &path)?;
            if let Some(found) = comments
                .iter()
                .find(|c| c.body.as_deref().is_some_and(|b| b.contains(marker)))
            {
                return Ok(Some(found.id));
            }
            if comments.len() < COMMENTS_PER_PAGE {
                return Ok(None);
            }
        }
        tracing::warn!(
            repository = %repo,
            number,
            "stopped looking for ctrl's comment after {MAX_COMMENT_PAGES} pages"
        );
        Ok(None)
    }

    /// Comments on pull request (or issue) `number` and returns the
    /// comment's id.
    ///
    /// Sends `POST /repos/{owner}/{repo}/issues/{number}/comments`.
    pub async fn create_comment(
        &self,
        installation_id: u64,
        repo: &RepoRef,
        number: u64,
        body: &str,
    ) -> Result<u64, GitHubError> {
        nonzero("pull_request", number)?;
        check_comment(body)?;
        let path = format!("{}/issues/{number}/comments", repo.api_path());
        let answer = self
            .call_as_installation(
                installation_id,
                repo,
                Method::POST,
                &path,
                Some(&json!({ "body": body })),
                Write::Comments(number),
            )
            .await?;
        Ok(parse::<IdJson>(&answer, "POST", &path)?.id)
    }

    /// Replaces the body of a comment.
    ///
    /// Sends `PATCH /repos/{owner}/{repo}/issues/comments/{comment_id}`.
    pub async fn update_comment(
        &self,
        installation_id: u64,
        repo: &RepoRef,
        comment_id: u64,
        body: &str,
    ) -> Result<(), GitHubError> {
        nonzero("comment_id", comment_id)?;
        check_comment(body)?;
        let path = format!("{}/issues/comments/{comment_id}", repo.api_path());
        self.call_as_installation(
            installation_id,
            repo,
            Method::PATCH,
            &path,
            Some(&json!({ "body": body })),
            Write::Comment(comment_id),
        )
        .await?;
        Ok(())
    }

    /// Sends one request about `repo` with the installation's token and
    /// returns the answer's body; when GitHub refuses the cached token
    /// (revoked early), drops it and tries once more with a fresh one.
    async fn call_as_installation(
        &self,
        installation_id: u64,
        repo: &RepoRef,
        method: Method,
        path: &str,
        body: Option<&Value>,
        write: Write<'_>,
    ) -> Result<Bytes, GitHubError> {
        let mut token = self.installation_token(installation_id).await?;
        let deadline = Instant::now() + self.inner.request_timeout;
        let mut response = self
            .send(method.clone(), path, &Auth::Token(&token), body, deadline)
            .await?;
        if response.status() == StatusCode::UNAUTHORIZED {
            tracing::info!(
                installation_id,
                "GitHub refused an installation token; minting a new one"
            );
            self.forget_token(installation_id, &token).await;
            token = self.installation_token(installation_id).await?;
            response = self
                .send(method.clone(), path, &Auth::Token(&token), body, deadline)
                .await?;
        }
        match read_answer(response, deadline, &format!("{method} {path}")).await? {
            Ok(answer) => Ok(answer),
            Err(failure) => Err(write_failure(&failure, repo, installation_id, write)),
        }
    }
}

fn parse<T: serde::de::DeserializeOwned>(
    answer: &[u8],
    method: &str,
    path: &str,
) -> Result<T, GitHubError> {
    serde_json::from_slice(answer)
        .map_err(|e| GitHubError::Transient(format!("{method} {path}: unexpected answer: {e}")))
}

fn nonzero(field: &'static str, id: u64) -> Result<(), GitHubError> {
    if id == 0 {
        return Err(GitHubError::invalid(field, "must not be 0"));
    }
    Ok(())
}

fn check_comment(body: &str) -> Result<(), GitHubError> {
    if body.trim().is_empty() {
        return Err(GitHubError::invalid("comment.body", "must not be empty"));
    }
    let chars = body.chars().count();
    if chars > MAX_COMMENT_CHARS {
        return Err(GitHubError::invalid(
            "comment.body",
            format!("is {chars} characters long; GitHub accepts at most {MAX_COMMENT_CHARS}"),
        ));
    }
    Ok(())
}

/// `text` cut to [`MAX_DESCRIPTION_CHARS`] characters, the last one "…".
pub(crate) fn description(text: &str) -> Cow<'_, str> {
    match text.char_indices().nth(MAX_DESCRIPTION_CHARS) {
        None => Cow::Borrowed(text),
        Some(_) => {
            let end = text
                .char_indices()
                .nth(MAX_DESCRIPTION_CHARS - 1)
                .map_or(text.len(), |(i, _)| i);
            Cow::Owned(format!("{}…", &text[..end]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_are_cut_on_char_boundaries() {
        assert_eq!(description("short"), "short");
        let exact = "é".repeat(MAX_DESCRIPTION_CHARS);
        assert_eq!(description(&exact), exact);
        let long = "é".repeat(MAX_DESCRIPTION_CHARS + 1);
        let cut = description(&long);
        assert_eq!(cut.chars().count(), MAX_DESCRIPTION_CHARS);
        assert!(cut.ends_with("é…"), "{cut}");
        assert_eq!(description(""), "");
    }

    #[test]
    fn states_are_githubs_names() {
        let names: Vec<String> = [
            DeploymentState::Queued,
            DeploymentState::InProgress,
            DeploymentState::Success,
            DeploymentState::Failure,
            DeploymentState::Error,
            DeploymentState::Inactive,
        ]
        .iter()
        .map(|s| {
            serde_json::to_value(s)
                .unwrap()
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
        assert_eq!(
            names,
            [
                "queued",
                "in_progress",
                "success",
                "failure",
                "error",
                "inactive"
            ]
        );
        assert_eq!(
            serde_json::to_value(CommitState::Pending).unwrap(),
            json!("pending")
        );
    }

    #[test]
    fn comment_bodies_are_checked() {
        assert!(check_comment("hello").is_ok());
        assert!(check_comment(&"ü".repeat(MAX_COMMENT_CHARS)).is_ok());
        let e = check_comment(&"x".repeat(MAX_COMMENT_CHARS + 1)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid comment.body: is 65537 characters long; GitHub accepts at most 65536"
        );
        assert!(check_comment(" \n").is_err());
    }
}
