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
        let message = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("message")?.as_str().map(str::to_owned))
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
