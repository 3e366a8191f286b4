//! [`GitHubError`] and how GitHub's answers map onto it.
//!
//! The mapping is pure ([`Failure`] in, [`GitHubError`] out) so every rule
//! is unit-tested without a server.

use std::time::{Duration, SystemTime};

use http::HeaderMap;

use crate::repos::RepoRef;

/// Why a GitHub operation failed. Messages are meant for the user who asked
/// for the deployment; none contains a key or a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GitHubError {
    /// A branch, commit or repository does not exist (or the installation
    /// in use cannot see it).
    #[error("{what} was not found on GitHub")]
    NotFound {
        /// What was looked for, e.g. "branch `main` of acme/hello".
        what: String,
    },
    /// ctrl may not read the repository.
    #[error("ctrl cannot read the GitHub repository {repository}: {why}")]
    NoAccess {
        /// `owner/name`.
        repository: String,
        /// Why, in GitHub's words where it gave any.
        why: String,
    },
    /// ctrl may not report to the repository (deployments, statuses,
    /// comments): the GitHub App lacks a permission, or its installation
    /// does not include the repository.
    #[error(
        "ctrl has no access to {what} of the GitHub repository {repository}: {why} (the GitHub App \
         needs the \"{permission}\" permission, in an installation that includes the repository)"
    )]
    NoPermission {
        /// `owner/name`.
        repository: String,
        /// What ctrl tried to write, e.g. "deployments".
        what: &'static str,
        /// The app permission that allows it, as GitHub's settings name it,
        /// e.g. "Deployments: write".
        permission: &'static str,
        /// Why, in GitHub's words where it gave any.
        why: String,
    },
    /// GitHub refused what ctrl sent (`422 Validation Failed`, `409
    /// Conflict`).
    #[error("GitHub refused {what}: {message}")]
    Rejected {
        /// What was sent, e.g. "the status of deployment 12".
        what: String,
        /// GitHub's message, with the details of its `errors`.
        message: String,
    },
    /// The GitHub App installation cannot be used (removed, suspended, or it
    /// belongs to another app). [`GitHub::resolve`](crate::GitHub::resolve)
    /// and [`GitHub::tarball`](crate::GitHub::tarball) report this as
    /// [`GitHubError::NoAccess`] for their repository.
    #[error("the GitHub App installation {installation_id} cannot be used: {why}")]
    InstallationUnavailable {
        /// The installation asked for.
        installation_id: u64,
        /// Why, in GitHub's words where it gave any.
        why: String,
    },
    /// The repository has no commits yet, so the branch has nothing to deploy.
    #[error("branch `{branch}` has no commits: the repository is empty")]
    EmptyBranch {
        /// The branch asked for (or the default branch).
        branch: String,
    },
    /// An input was refused before anything was sent to GitHub.
    #[error("invalid {field}: {why}")]
    InvalidInput {
        /// The input's name.
        field: &'static str,
        /// What is wrong with it.
        why: String,
    },
    /// GitHub's rate limit was reached; trying again later helps.
    #[error("GitHub's API rate limit was reached; {}", retry_hint(.retry_after))]
    RateLimited {
        /// When GitHub said the limit resets, if it did.
        retry_after: Option<Duration>,
    },
    /// A download is larger than ctrl accepts.
    #[error("{what} is larger than the limit of {limit_bytes} bytes (github.max_tarball_bytes)")]
    TooLarge {
        /// What was downloaded.
        what: String,
        /// The configured limit.
        limit_bytes: u64,
    },
    /// A network failure, a timeout or a server error: trying again can help.
    #[error("GitHub could not be reached or failed: {0}")]
    Transient(String),
    /// GitHub answered with a status ctrl does not expect here.
    #[error("GitHub answered {status} unexpectedly: {message}")]
    Unexpected {
        /// The HTTP status.
        status: u16,
        /// GitHub's message.
        message: String,
    },
    /// ctrl's own GitHub configuration is wrong.
    #[error("invalid configuration {field}: {why}")]
    Config {
        /// The configuration field, e.g. `github.private_key`.
        field: &'static str,
        /// What is wrong with it.
        why: String,
    },
}

impl GitHubError {
    /// Whether the same call can succeed later without anything changing on
    /// ctrl's side (rate limits, network failures, GitHub's own errors).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::RateLimited { .. } | Self::Transient(_))
    }

    /// An installation-level failure, restated for the repository that was
    /// being read.
    pub(crate) fn for_repo(self, repo: &RepoRef) -> Self {
        match self {
            Self::InstallationUnavailable {
                installation_id,
                why,
            } => Self::NoAccess {
                repository: repo.full_name(),
                why: format!("the GitHub App installation {installation_id} cannot be used: {why}"),
            },
            other => other,
        }
    }

    pub(crate) fn invalid(field: &'static str, why: impl Into<String>) -> Self {
        Self::InvalidInput {
            field,
            why: why.into(),
        }
    }

    pub(crate) fn config(field: &'static str, why: impl Into<String>) -> Self {
        Self::Config {
            field,
            why: why.into(),
        }
    }
}

fn retry_hint(retry_after: &Option<Duration>) -> String {
    match retry_after {
        Some(after) => format!("try again in {}s", after.as_secs().max(1)),
        None => "try again later".to_owned(),
    }
}

/// The why of [`GitHubError::NoAccess`] for an anonymous read GitHub
/// answered with 404: GitHub hides private repositories.
pub(crate) const PRIVATE_OR_MISSING: &str =
    "the repository is private or does not exist and ctrl has no GitHub App installation for it";

/// The why of [`GitHubError::NoAccess`] when no installation is given and
/// anonymous reads are off.
pub(crate) const UNAUTHENTICATED_NOT_ALLOWED: &str =
    "no GitHub App installation given and unauthenticated deployments are not allowed";

/// A non-success answer from GitHub, reduced to what the mapping needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub(crate) status: u16,
    /// GitHub's `message` (or the start of a non-JSON body).
    pub(crate) message: String,
    /// `x-ratelimit-remaining: 0`, or a message naming a rate limit.
    pub(crate) rate_limited: bool,
    /// From `retry-after`, else from `x-ratelimit-reset` when exhausted.
    pub(crate) retry_after: Option<Duration>,
    /// `x-github-request-id`, for GitHub's support.
    pub(crate) request_id: Option<String>,
}

impl Failure {
    pub(crate) fn new(status: u16, headers: &HeaderMap, body: &[u8], now: SystemTime) -> Self {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        };
        let json = serde_json::from_slice::<serde_json::Value>(body).ok();
        let message = json
            .as_ref()
            .and_then(|v| {
                let message = v.get("message")?.as_str()?;
                let details = error_details(v);
                Some(if details.is_empty() {
                    message.to_owned()
                } else {
                    format!("{message}: {}", details.join("; "))
                })
            })
            .unwrap_or_else(|| {
                let text = String::from_utf8_lossy(body);
                let text = text.trim();
                if text.is_empty() {
                    format!("HTTP {status}")
                } else {
                    text.chars().take(200).collect()
                }
            });
        let exhausted = header("x-ratelimit-remaining") == Some("0");
        let now_secs = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let retry_after = header("retry-after")
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_secs)
            .or_else(|| {
                let reset = header("x-ratelimit-reset")?.parse::<u64>().ok()?;
                exhausted.then(|| Duration::from_secs(reset.saturating_sub(now_secs)))
            });
        let names_limit = message.to_ascii_lowercase().contains("rate limit");
        Self {
            status,
            rate_limited: exhausted
                || status == 429
                || (status == 403 && (names_limit || header("retry-after").is_some())),
            message,
            retry_after,
            request_id: header("x-github-request-id").map(str::to_owned),
        }
    }

    /// Rate limits and GitHub's own errors, the same on every endpoint.
    fn limit_or_server(&self) -> Option<GitHubError> {
        if self.rate_limited && matches!(self.status, 403 | 429) {
            return Some(GitHubError::RateLimited {
                retry_after: self.retry_after,
            });
        }
        if self.status >= 500 {
            let id = self
                .request_id
                .as_deref()
                .map(|id| format!(" (request id {id})"))
                .unwrap_or_default();
            return Some(GitHubError::Transient(format!(
                "GitHub answered {}: {}{id}",
                self.status, self.message
            )));
        }
        None
    }

    fn unexpected(&self) -> GitHubError {
        GitHubError::Unexpected {
            status: self.status,
            message: self.message.clone(),
        }
    }
}

/// The details of a `422 Validation Failed`: each of GitHub's `errors`, as
/// its `message`, or else as `{resource}.{field} {code}`.
fn error_details(body: &serde_json::Value) -> Vec<String> {
    let Some(errors) = body.get("errors").and_then(|e| e.as_array()) else {
        return Vec::new();
    };
    errors
        .iter()
        .take(5)
        .filter_map(|e| {
            if let Some(text) = e.as_str() {
                return Some(text.to_owned());
            }
            if let Some(message) = e.get("message").and_then(|m| m.as_str()) {
                return Some(message.to_owned());
            }
            let part = |k: &str| e.get(k).and_then(|v| v.as_str()).unwrap_or("");
            let (resource, field, code) = (part("resource"), part("field"), part("code"));
            (!code.is_empty()).then(|| match (resource.is_empty(), field.is_empty()) {
                (false, false) => format!("{resource}.{field} {code}"),
                (true, false) => format!("{field} {code}"),
                _ => code.to_owned(),
            })
        })
        .map(|d| d.chars().take(200).collect())
        .collect()
}

/// What a repository read was after, for the words of its errors.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Resource<'a> {
    Repository,
    Branch(&'a str),
    Commit(&'a str),
}

/// Maps a failed `GET /repos/{owner}/{repo}[/commits/{ref}|/tarball/{sha}]`.
/// `installation` is the installation whose token was sent (`None`:
/// anonymous).
pub(crate) fn repo_failure(
    f: &Failure,
    repo: &RepoRef,
    installation: Option<u64>,
    resource: Resource<'_>,
) -> GitHubError {
    if let Some(e) = f.limit_or_server() {
        return e;
    }
    let no_access = |why: String| GitHubError::NoAccess {
        repository: repo.full_name(),
        why,
    };
    let not_found = |what: String| GitHubError::NotFound { what };
    match (f.status, resource) {
        (401, _) => match installation {
            Some(id) => no_access(format!(
                "GitHub refused the token of GitHub App installation {id}: {}",
                f.message
            )),
            None => no_access(format!("GitHub refused the request: {}", f.message)),
        },
        (403 | 451, _) => no_access(f.message.clone()),
        // GitHub answers 404 for a repository it hides from this caller.
        (404, _) => match installation {
            Some(id) => not_found(format!(
                "repository {repo} (or the GitHub App installation {id} does not include it)"
            )),
            None => no_access(PRIVATE_OR_MISSING.to_owned()),
        },
        (409, Resource::Branch(branch)) => GitHubError::EmptyBranch {
            branch: branch.to_owned(),
        },
        (409, Resource::Commit(sha)) => {
            not_found(format!("commit {sha} of {repo} (the repository is empty)"))
        }
        // "No commit found for SHA: …": what GitHub says for a missing ref.
        (422, Resource::Branch(branch)) => not_found(format!("branch `{branch}` of {repo}")),
        (422, Resource::Commit(sha)) => not_found(format!("commit {sha} of {repo}")),
        _ => f.unexpected(),
    }
}

/// What a report to a repository wrote (or, for [`Write::Comments`], also
/// read), for the words of its errors and the permission it needs.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Write<'a> {
    /// `POST /repos/{owner}/{repo}/deployments`.
    Deployment { sha: &'a str, environment: &'a str },
    /// `POST /repos/{owner}/{repo}/deployments/{id}/statuses`.
    DeploymentStatus(u64),
    /// `POST /repos/{owner}/{repo}/statuses/{sha}`.
    CommitStatus { sha: &'a str, context: &'a str },
    /// `GET` or `POST /repos/{owner}/{repo}/issues/{number}/comments`.
    Comments(u64),
    /// `PATCH /repos/{owner}/{repo}/issues/comments/{id}`.
    Comment(u64),
}

impl Write<'_> {
    fn what(self) -> &'static str {
        match self {
            Self::Deployment { .. } => "deployments",
            Self::DeploymentStatus(_) => "deployment statuses",
            Self::CommitStatus { .. } => "commit statuses",
            Self::Comments(_) | Self::Comment(_) => "pull request comments",
        }
    }

    /// The permission as the app's settings page names it. Comments on
    /// pull requests are allowed by "Pull requests: write" (or "Issues:
    /// write"); ctrl asks for the former.
    fn permission(self) -> &'static str {
        match self {
            Self::Deployment { .. } | Self::DeploymentStatus(_) => "Deployments: write",
            Self::CommitStatus { .. } => "Commit statuses: write",
            Self::Comments(_) | Self::Comment(_) => "Pull requests: write",
        }
    }

    /// What a 404 may also mean: the thing addressed by id is gone.
    fn missing(self) -> Option<String> {
        match self {
            Self::Deployment { .. } | Self::CommitStatus { .. } => None,
            Self::DeploymentStatus(id) => Some(format!("deployment {id}")),
            Self::Comments(number) => Some(format!("pull request (or issue) #{number}")),
            Self::Comment(id) => Some(format!("comment {id}")),
        }
    }

    fn subject(self) -> String {
        match self {
            Self::Deployment { sha, environment } => {
                format!("the deployment of {sha} to `{environment}`")
            }
            Self::DeploymentStatus(id) => format!("the status of deployment {id}"),
            Self::CommitStatus { sha, context } => {
                format!("the commit status `{context}` of {sha}")
            }
            Self::Comments(number) => format!("the comment on #{number}"),
            Self::Comment(id) => format!("the edit of comment {id}"),
        }
    }
}

/// Maps a failed report to `repo` (deployments, statuses, comments), sent
/// with a token of `installation_id`.
pub(crate) fn write_failure(
    f: &Failure,
    repo: &RepoRef,
    installation_id: u64,
    write: Write<'_>,
) -> GitHubError {
    if let Some(e) = f.limit_or_server() {
        return e;
    }
    let no_permission = |why: String| GitHubError::NoPermission {
        repository: repo.full_name(),
        what: write.what(),
        permission: write.permission(),
        why,
    };
    match f.status {
        401 => no_permission(format!(
            "GitHub refused the token of GitHub App installation {installation_id}: {}",
            f.message
        )),
        403 | 451 => no_permission(f.message.clone()),
        // GitHub answers 404 for a repository the installation cannot see,
        // and for an unknown deployment, pull request or comment.
        404 => {
            let also = write
                .missing()
                .map(|m| format!(", or {m} does not exist"))
                .unwrap_or_default();
            no_permission(format!(
                "GitHub answered 404 Not Found: the repository does not exist or the GitHub App \
                 installation {installation_id} does not include it{also}"
            ))
        }
        409 | 422 => GitHubError::Rejected {
            what: write.subject(),
            message: f.message.clone(),
        },
        _ => f.unexpected(),
    }
}

/// Maps a failed `POST /app/installations/{id}/access_tokens`.
pub(crate) fn token_failure(f: &Failure, app_id: u64, installation_id: u64) -> GitHubError {
    if let Some(e) = f.limit_or_server() {
        return e;
    }
    match f.status {
        401 => GitHubError::config(
            "github.private_key",
            format!(
                "GitHub refused the JSON web token signed for GitHub App {app_id} ({}); check that \
                 github.private_key is a current key of the app named by github.app_id",
                f.message
            ),
        ),
        403 => GitHubError::InstallationUnavailable {
            installation_id,
            why: f.message.clone(),
        },
        404 => GitHubError::InstallationUnavailable {
            installation_id,
            why: format!(
                "GitHub App {app_id} has no such installation (it was uninstalled, or it \
                 belongs to another app)"
            ),
        },
        _ => f.unexpected(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use http::HeaderMap;

    use super::*;

    fn failure(status: u16, headers: &[(&'static str, &str)], body: &str) -> Failure {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(*name, value.parse().unwrap());
        }
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        Failure::new(status, &map, body.as_bytes(), now)
    }

    fn repo() -> RepoRef {
        RepoRef::new("acme", "hello").unwrap()
    }

    #[test]
    fn reads_github_error_bodies_and_headers() {
        let f = failure(
            404,
            &[("x-github-request-id", "AB:CD")],
            r#"{"message":"Not Found","documentation_url":"https://docs.github.com/rest","status":"404"}"#,
        );
        assert_eq!(f.message, "Not Found");
        assert_eq!(f.request_id.as_deref(), Some("AB:CD"));
        assert!(!f.rate_limited);
        assert_eq!(
            failure(502, &[], "<html>bad gateway</html>").message,
            "<html>bad gateway</html>"
        );
        assert_eq!(failure(502, &[], "").message, "HTTP 502");
    }

    #[test]
    fn rate_limits() {
        // Primary limit: 403 with nothing left; the reset is 60s away.
        let f = failure(
            403,
            &[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "1060"),
            ],
            r#"{"message":"API rate limit exceeded for 1.2.3.4."}"#,
        );
        let e = repo_failure(&f, &repo(), None, Resource::Repository);
        assert_eq!(
            e,
            GitHubError::RateLimited {
                retry_after: Some(Duration::from_secs(60))
            }
        );
        assert!(e.is_transient());
        assert_eq!(
            e.to_string(),
            "GitHub's API rate limit was reached; try again in 60s"
        );
        // Secondary limit: 429 or 403 with retry-after.
        for status in [403, 429] {
            let f = failure(
                status,
                &[("retry-after", "30")],
                r#"{"message":"slow down"}"#,
            );
            assert_eq!(
                repo_failure(&f, &repo(), Some(1), Resource::Branch("main")),
                GitHubError::RateLimited {
                    retry_after: Some(Duration::from_secs(30))
                }
            );
        }
        let f = failure(
            403,
            &[],
            r#"{"message":"You have exceeded a secondary rate limit."}"#,
        );
        assert_eq!(
            token_failure(&f, 1, 2),
            GitHubError::RateLimited { retry_after: None }
        );
        // A 403 that is not about limits is a refusal.
        let f = failure(
            403,
            &[("x-ratelimit-remaining", "4999")],
            r#"{"message":"Resource not accessible by integration"}"#,
        );
        assert_eq!(
            repo_failure(&f, &repo(), Some(7), Resource::Repository),
            GitHubError::NoAccess {
                repository: "acme/hello".into(),
                why: "Resource not accessible by integration".into()
            }
        );
    }

    #[test]
    fn server_errors_are_transient() {
        let f = failure(
            503,
            &[("x-github-request-id", "X:Y")],
            r#"{"message":"Service Unavailable"}"#,
        );
        let e = repo_failure(&f, &repo(), None, Resource::Commit("abc"));
        assert_eq!(
            e,
            GitHubError::Transient(
                "GitHub answered 503: Service Unavailable (request id X:Y)".into()
            )
        );
        assert!(e.is_transient());
        assert!(token_failure(&f, 1, 2).is_transient());
    }

    #[test]
    fn repository_reads() {
        let r = repo();
        let nf = failure(404, &[], r#"{"message":"Not Found"}"#);
        assert_eq!(
            repo_failure(&nf, &r, None, Resource::Repository),
            GitHubError::NoAccess {
                repository: "acme/hello".into(),
                why: PRIVATE_OR_MISSING.into()
            }
        );
        assert_eq!(
            repo_failure(&nf, &r, Some(9), Resource::Branch("main")).to_string(),
            "repository acme/hello (or the GitHub App installation 9 does not include it) was not found on GitHub"
        );
        let empty = failure(409, &[], r#"{"message":"Git Repository is empty."}"#);
        assert_eq!(
            repo_failure(&empty, &r, None, Resource::Branch("main")),
            GitHubError::EmptyBranch {
                branch: "main".into()
            }
        );
        let missing = failure(422, &[], r#"{"message":"No commit found for SHA: nope"}"#);
        assert_eq!(
            repo_failure(&missing, &r, None, Resource::Branch("nope")).to_string(),
            "branch `nope` of acme/hello was not found on GitHub"
        );
        assert_eq!(
            repo_failure(&missing, &r, None, Resource::Commit("abcd")).to_string(),
            "commit abcd of acme/hello was not found on GitHub"
        );
        let bad = failure(401, &[], r#"{"message":"Bad credentials"}"#);
        let e = repo_failure(&bad, &r, Some(3), Resource::Repository);
        assert_eq!(
            e.to_string(),
            "ctrl cannot read the GitHub repository acme/hello: GitHub refused the token of GitHub App installation 3: Bad credentials"
        );
        assert!(!e.is_transient());
        let odd = failure(400, &[], r#"{"message":"Problems parsing JSON"}"#);
        assert_eq!(
            repo_failure(&odd, &r, None, Resource::Repository),
            GitHubError::Unexpected {
                status: 400,
                message: "Problems parsing JSON".into()
            }
        );
    }

    #[test]
    fn validation_errors_keep_githubs_details() {
        let f = failure(
            422,
            &[],
            r#"{"message":"Validation Failed","errors":[{"resource":"DeploymentStatus","code":"custom","field":"description","message":"description is too long (maximum is 140 characters)"},"a plain one",{"resource":"IssueComment","code":"missing_field","field":"body"}]}"#,
        );
        assert_eq!(
            f.message,
            "Validation Failed: description is too long (maximum is 140 characters); a plain one; IssueComment.body missing_field"
        );
    }

    #[test]
    fn reports_name_the_permission() {
        let r = repo();
        let deployment = Write::Deployment {
            sha: "abc",
            environment: "production",
        };
        let forbidden = failure(
            403,
            &[("x-ratelimit-remaining", "4999")],
            r#"{"message":"Resource not accessible by integration"}"#,
        );
        let e = write_failure(&forbidden, &r, 7, deployment);
        assert_eq!(
            e,
            GitHubError::NoPermission {
                repository: "acme/hello".into(),
                what: "deployments",
                permission: "Deployments: write",
                why: "Resource not accessible by integration".into(),
            }
        );
        assert_eq!(
            e.to_string(),
            "ctrl has no access to deployments of the GitHub repository acme/hello: Resource not \
             accessible by integration (the GitHub App needs the \"Deployments: write\" \
             permission, in an installation that includes the repository)"
        );
        assert!(!e.is_transient());
        let nf = failure(404, &[], r#"{"message":"Not Found"}"#);
        for (write, permission, also) in [
            (deployment, "Deployments: write", ""),
            (
                Write::DeploymentStatus(5),
                "Deployments: write",
                ", or deployment 5 does not exist",
            ),
            (
                Write::CommitStatus {
                    sha: "abc",
                    context: "ctrl",
                },
                "Commit statuses: write",
                "",
            ),
            (
                Write::Comments(12),
                "Pull requests: write",
                ", or pull request (or issue) #12 does not exist",
            ),
            (
                Write::Comment(99),
                "Pull requests: write",
                ", or comment 99 does not exist",
            ),
        ] {
            match write_failure(&nf, &r, 7, write) {
                GitHubError::NoPermission {
                    permission: p, why, ..
                } => {
                    assert_eq!(p, permission);
                    assert_eq!(
                        why,
                        format!(
                            "GitHub answered 404 Not Found: the repository does not exist or the \
                             GitHub App installation 7 does not include it{also}"
                        )
                    );
                }
                other => panic!("{other:?}"),
            }
        }
        let bad = failure(401, &[], r#"{"message":"Bad credentials"}"#);
        assert!(matches!(
            write_failure(&bad, &r, 7, Write::Comment(1)),
            GitHubError::NoPermission { why, .. } if why.contains("installation 7: Bad credentials")
        ));
        let invalid = failure(422, &[], r#"{"message":"No ref found for: abc"}"#);
        assert_eq!(
            write_failure(&invalid, &r, 7, deployment).to_string(),
            "GitHub refused the deployment of abc to `production`: No ref found for: abc"
        );
        let limited = failure(403, &[("retry-after", "5")], r#"{"message":"slow down"}"#);
        assert!(write_failure(&limited, &r, 7, Write::Comments(1)).is_transient());
        let down = failure(502, &[], "");
        assert!(write_failure(&down, &r, 7, Write::DeploymentStatus(1)).is_transient());
    }

    #[test]
    fn installation_tokens() {
        let jwt = failure(
            401,
            &[],
            r#"{"message":"A JSON web token could not be decoded"}"#,
        );
        let e = token_failure(&jwt, 42, 7);
        assert!(
            matches!(
                e,
                GitHubError::Config {
                    field: "github.private_key",
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .contains("A JSON web token could not be decoded"),
            "{e}"
        );
        let gone = failure(404, &[], r#"{"message":"Not Found"}"#);
        let e = token_failure(&gone, 42, 7);
        assert!(matches!(
            e,
            GitHubError::InstallationUnavailable {
                installation_id: 7,
                ..
            }
        ));
        // Restated for the repository being read.
        let e = e.for_repo(&repo());
        assert!(
            matches!(&e, GitHubError::NoAccess { repository, why } if repository == "acme/hello" && why.contains("installation 7")),
            "{e:?}"
        );
        let suspended = failure(
            403,
            &[],
            r#"{"message":"This installation has been suspended"}"#,
        );
        assert_eq!(
            token_failure(&suspended, 42, 7),
            GitHubError::InstallationUnavailable {
                installation_id: 7,
                why: "This installation has been suspended".into()
            }
        );
    }
}
