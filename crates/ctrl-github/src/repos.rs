//! Reading repositories: which commit a branch points at, and a commit's
//! tarball.

use std::fmt;

use bytes::Bytes;
use http::Method;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::app::Token;
use crate::client::{Auth, Body, GitHub, ReadError, read_answer, read_body};
use crate::error::{Failure, GitHubError, Resource, UNAUTHENTICATED_NOT_ALLOWED, repo_failure};
use crate::time::parse_rfc3339_ms;

/// A repository's `owner/name`, checked against GitHub's naming rules.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RepoRef {
    owner: String,
    name: String,
}

impl RepoRef {
    /// Checks `owner` (1–39 of `A-Z a-z 0-9 -`, not starting with `-`) and
    /// `name` (1–100 of `A-Z a-z 0-9 . _ -`, not `.` or `..`).
    pub fn new(owner: &str, name: &str) -> Result<Self, GitHubError> {
        let field = "repository.owner";
        if owner.is_empty() || owner.len() > 39 {
            return Err(GitHubError::invalid(field, "must be 1 to 39 characters"));
        }
        if let Some(c) = owner
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return Err(GitHubError::invalid(
                field,
                format!("`{owner}` contains {c:?}; GitHub owners are letters, digits and hyphens"),
            ));
        }
        if owner.starts_with('-') {
            return Err(GitHubError::invalid(field, "must not start with a hyphen"));
        }
        let field = "repository.name";
        if name.is_empty() || name.len() > 100 {
            return Err(GitHubError::invalid(field, "must be 1 to 100 characters"));
        }
        if let Some(c) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(GitHubError::invalid(
                field,
                format!(
                    "`{name}` contains {c:?}; GitHub repository names are letters, digits, `.`, `_` and `-`"
                ),
            ));
        }
        if name == "." || name == ".." {
            return Err(GitHubError::invalid(field, format!("`{name}` is reserved")));
        }
        Ok(Self {
            owner: owner.to_owned(),
            name: name.to_owned(),
        })
    }

    /// Parses `owner/name`.
    pub fn parse(full_name: &str) -> Result<Self, GitHubError> {
        let Some((owner, name)) = full_name.split_once('/') else {
            return Err(GitHubError::invalid(
                "repository",
                format!("`{full_name}` is not of the form owner/name"),
            ));
        };
        Self::new(owner, name)
    }

    /// The owner (user or organization).
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The repository's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The REST API's path of the repository, `/repos/{owner}/{repo}`.
    pub fn api_path(&self) -> String {
        format!("/repos/{}/{}", self.owner, self.name)
    }

    /// `owner/name`.
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }
}

impl fmt::Display for RepoRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

/// Which commit [`GitHub::resolve`] looks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want {
    /// A pinned commit: 4 to 40 hexadecimal digits.
    Commit(String),
    /// The head of a branch.
    Branch(String),
    /// The head of the repository's default branch.
    DefaultBranch,
}

/// A commit, as a deployment records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// The full SHA-1, 40 lowercase hexadecimal digits.
    pub sha: String,
    /// The branch it was resolved from; `None` for a pinned commit.
    pub branch: Option<String>,
    /// The commit message.
    pub message: String,
    /// The author's GitHub login, or the name in the commit when the author
    /// has no GitHub account.
    pub author_handle: String,
    /// The author's avatar; empty without GitHub account.
    pub author_avatar_url: String,
    /// The author date, unix milliseconds.
    pub timestamp_ms: i64,
}

/// Checks a branch name: what git's `check-ref-format --branch` accepts,
/// at most 255 bytes.
pub fn validate_branch(branch: &str) -> Result<(), GitHubError> {
    let field = "branch";
    let bad = |why: String| Err(GitHubError::invalid(field, why));
    if branch.is_empty() {
        return bad("must not be empty".into());
    }
    if branch.len() > 255 {
        return bad("must be at most 255 bytes".into());
    }
    if branch.chars().any(char::is_control) {
        return bad("must not contain control characters".into());
    }
    if let Some(c) = branch
        .chars()
        .find(|c| matches!(c, ' ' | '~' | '^' | ':' | '?' | '*' | '[' | '\\'))
    {
        return bad(format!("git does not allow {c:?} in branch names"));
    }
    if branch.starts_with('-') {
        return bad("must not start with `-`".into());
    }
    if branch == "@" || branch.contains("@{") || branch.contains("..") {
        return bad("git does not allow `@`, `@{` or `..` in branch names".into());
    }
    if branch.ends_with('.') {
        return bad("must not end with `.`".into());
    }
    for part in branch.split('/') {
        if part.is_empty() {
            return bad("must not start or end with `/` or contain `//`".into());
        }
        if part.starts_with('.') || part.ends_with(".lock") {
            return bad("no part between slashes may start with `.` or end with `.lock`".into());
        }
    }
    Ok(())
}

/// Checks and lowercases a commit SHA of `min..=40` hexadecimal digits.
pub(crate) fn commit_sha(sha: &str, min: usize) -> Result<String, GitHubError> {
    let field = "commit_sha";
    if !(min..=40).contains(&sha.len()) {
        return Err(GitHubError::invalid(
            field,
            if min == 40 {
                "must be a full 40-digit commit SHA".to_owned()
            } else {
                format!("must be {min} to 40 hexadecimal digits")
            },
        ));
    }
    if !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(GitHubError::invalid(field, "must be hexadecimal digits"));
    }
    Ok(sha.to_ascii_lowercase())
}

/// Percent-encodes a branch name for a URL path, keeping its slashes.
fn encode_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[derive(Deserialize)]
struct RepoJson {
    default_branch: Option<String>,
}

#[derive(Deserialize)]
struct CommitJson {
    sha: String,
    commit: GitCommitJson,
    author: Option<UserJson>,
}

#[derive(Deserialize)]
struct GitCommitJson {
    message: String,
    author: Option<GitActorJson>,
}

#[derive(Deserialize)]
struct GitActorJson {
    name: Option<String>,
    date: Option<String>,
}

#[derive(Deserialize)]
struct UserJson {
    login: Option<String>,
    avatar_url: Option<String>,
}

/// The credential for a repository: an installation's token, or none.
struct RepoAuth {
    installation: Option<(u64, Token)>,
}

impl RepoAuth {
    fn auth(&self) -> Auth<'_> {
        match &self.installation {
            Some((_, token)) => Auth::Token(token),
            None => Auth::Anonymous,
        }
    }

    fn installation_id(&self) -> Option<u64> {
        self.installation.as_ref().map(|(id, _)| *id)
    }
}

impl GitHub {
    /// The commit a branch (or the default branch) points at, or a pinned
    /// commit, with its metadata. Validates the inputs before any request.
    ///
    /// Sends `GET /repos/{owner}/{repo}` (default branch only) and
    /// `GET /repos/{owner}/{repo}/commits/{sha | heads/{branch}}`, with the
    /// installation's token, or anonymously when `installation_id` is
    /// `None` and the configuration allows it.
    pub async fn resolve(
        &self,
        repo: &RepoRef,
        installation_id: Option<u64>,
        want: Want,
    ) -> Result<Commit, GitHubError> {
        let (reference, branch, pinned) = match want {
            Want::Commit(sha) => (commit_sha(&sha, 4)?, None, true),
            Want::Branch(name) => {
                validate_branch(&name)?;
                (format!("heads/{}", encode_path(&name)), Some(name), false)
            }
            Want::DefaultBranch => {
                let path = repo.api_path();
                let info: RepoJson = self
                    .repo_json(repo, installation_id, &path, Resource::Repository)
                    .await?;
                let name = info
                    .default_branch
                    .filter(|b| !b.is_empty())
                    .ok_or_else(|| GitHubError::NotFound {
                        what: format!("a default branch of {repo}"),
                    })?;
                (format!("heads/{}", encode_path(&name)), Some(name), false)
            }
        };
        let path = format!("{}/commits/{reference}", repo.api_path());
        let resource = match &branch {
            Some(name) => Resource::Branch(name),
            None => Resource::Commit(&reference),
        };
        let json: CommitJson = self
            .repo_json(repo, installation_id, &path, resource)
            .await?;
        let sha = commit_sha(&json.sha, 40).map_err(|_| {
            GitHubError::Transient(format!("GET {path}: unexpected sha `{}`", json.sha))
        })?;
        if pinned && !sha.starts_with(&reference) {
            // A branch named like the SHA answered; the commit itself is absent.
            return Err(GitHubError::NotFound {
                what: format!("commit {reference} of {repo}"),
            });
        }
        let author = json.commit.author;
        let date = author
            .as_ref()
            .and_then(|a| a.date.as_deref())
            .unwrap_or("");
        let timestamp_ms = parse_rfc3339_ms(date).ok_or_else(|| {
            GitHubError::Transient(format!("GET {path}: unreadable commit date `{date}`"))
        })?;
        let login = json.author.as_ref().and_then(|a| a.login.clone());
        Ok(Commit {
            sha,
            branch,
            message: json.commit.message,
            author_handle: login
                .filter(|l| !l.is_empty())
                .or_else(|| author.and_then(|a| a.name))
                .unwrap_or_default(),
            author_avatar_url: json.author.and_then(|a| a.avatar_url).unwrap_or_default(),
            timestamp_ms,
        })
    }

    /// The gzipped tarball of a commit (`sha`: all 40 digits), as GitHub
    /// builds it: entries under one top directory `{owner}-{repo}-{sha:7}/`.
    ///
    /// Sends `GET /repos/{owner}/{repo}/tarball/{sha}` and follows its
    /// redirect to codeload. Refuses answers over `max_tarball_bytes`, by
    /// their `Content-Length` and while reading.
    pub async fn tarball(
        &self,
        repo: &RepoRef,
        installation_id: Option<u64>,
        sha: &str,
    ) -> Result<Bytes, GitHubError> {
        let sha = commit_sha(sha, 40)?;
        let path = format!("{}/tarball/{sha}", repo.api_path());
        let what = format!("the tarball of {repo} at {sha}");
        let limit = self.inner.max_tarball_bytes;
        let too_large = || GitHubError::TooLarge {
            what: what.clone(),
            limit_bytes: limit,
        };
        let started = Instant::now();
        let head_deadline = started + self.inner.request_timeout;
        let (response, auth) = self
            .repo_send(repo, installation_id, &path, head_deadline)
            .await?;
        if !response.status().is_success() {
            let failure = failure_of(response, head_deadline, &path).await?;
            // Here 404 also means a missing commit: tell the two apart.
            if failure.status == 404 {
                let repo_path = repo.api_path();
                let _: RepoJson = self
                    .repo_json(repo, installation_id, &repo_path, Resource::Repository)
                    .await?;
                return Err(GitHubError::NotFound {
                    what: format!("commit {sha} of {repo}"),
                });
            }
            return Err(repo_failure(
                &failure,
                repo,
                auth.installation_id(),
                Resource::Commit(&sha),
            ));
        }
        let length = response
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if length.is_some_and(|length| length > limit) {
            return Err(too_large());
        }
        let deadline = started + self.inner.tarball_timeout;
        match read_body(response.into_body(), limit, deadline, false).await {
            Ok(bytes) => Ok(bytes),
            Err(ReadError::TooLarge) => Err(too_large()),
            Err(ReadError::Timeout) => Err(GitHubError::Transient(format!(
                "{what} did not download within {:?}",
                self.inner.tarball_timeout
            ))),
            Err(e) => Err(e.into_error(&format!("GET {path}"))),
        }
    }

    /// The credential for reading `repo`.
    async fn repo_auth(
        &self,
        repo: &RepoRef,
        installation_id: Option<u64>,
    ) -> Result<RepoAuth, GitHubError> {
        match installation_id {
            Some(id) => {
                let token = self
                    .installation_token(id)
                    .await
                    .map_err(|e| e.for_repo(repo))?;
                Ok(RepoAuth {
                    installation: Some((id, token)),
                })
            }
            None if self.inner.allow_unauthenticated => Ok(RepoAuth { installation: None }),
            None => Err(GitHubError::NoAccess {
                repository: repo.full_name(),
                why: UNAUTHENTICATED_NOT_ALLOWED.to_owned(),
            }),
        }
    }

    /// Sends a GET for `repo`; when GitHub refuses a cached token (revoked
    /// early), drops it and tries once more with a fresh one.
    async fn repo_send(
        &self,
        repo: &RepoRef,
        installation_id: Option<u64>,
        path: &str,
        deadline: Instant,
    ) -> Result<(http::Response<Body>, RepoAuth), GitHubError> {
        let auth = self.repo_auth(repo, installation_id).await?;
        let response = self
            .send(Method::GET, path, &auth.auth(), None, deadline)
            .await?;
        if response.status() != http::StatusCode::UNAUTHORIZED {
            return Ok((response, auth));
        }
        let Some((id, token)) = &auth.installation else {
            return Ok((response, auth));
        };
        tracing::info!(
            installation_id = id,
            "GitHub refused an installation token; minting a new one"
        );
        self.forget_token(*id, token).await;
        let auth = self.repo_auth(repo, installation_id).await?;
        let response = self
            .send(Method::GET, path, &auth.auth(), None, deadline)
            .await?;
        Ok((response, auth))
    }

    /// GETs a small JSON answer about `repo`, mapping failures for `resource`.
    async fn repo_json<T: DeserializeOwned>(
        &self,
        repo: &RepoRef,
        installation_id: Option<u64>,
        path: &str,
        resource: Resource<'_>,
    ) -> Result<T, GitHubError> {
        let deadline = Instant::now() + self.inner.request_timeout;
        let (response, auth) = self
            .repo_send(repo, installation_id, path, deadline)
            .await?;
        match read_answer(response, deadline, &format!("GET {path}")).await? {
            Ok(body) => serde_json::from_slice(&body)
                .map_err(|e| GitHubError::Transient(format!("GET {path}: unexpected answer: {e}"))),
            Err(failure) => Err(repo_failure(
                &failure,
                repo,
                auth.installation_id(),
                resource,
            )),
        }
    }
}

async fn failure_of(
    response: http::Response<Body>,
    deadline: Instant,
    path: &str,
) -> Result<Failure, GitHubError> {
    match read_answer(response, deadline, &format!("GET {path}")).await? {
        Ok(_) => Err(GitHubError::Transient(format!(
            "GET {path}: unexpected success"
        ))),
        Err(failure) => Ok(failure),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names() {
        assert!(RepoRef::new("acme", "hello").is_ok());
        assert!(RepoRef::new("a", "x").is_ok());
        assert!(RepoRef::new("Acme-Corp-2", "my_repo.rs-1").is_ok());
        assert!(RepoRef::new(&"o".repeat(39), &"r".repeat(100)).is_ok());
        assert_eq!(
            RepoRef::parse("acme/hello").unwrap().full_name(),
            "acme/hello"
        );
        let field = |r: Result<RepoRef, GitHubError>| match r {
            Err(GitHubError::InvalidInput { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(RepoRef::new("", "x")), "repository.owner");
        assert_eq!(
            field(RepoRef::new(&"o".repeat(40), "x")),
            "repository.owner"
        );
        assert_eq!(field(RepoRef::new("ac_me", "x")), "repository.owner");
        assert_eq!(field(RepoRef::new("-acme", "x")), "repository.owner");
        assert_eq!(field(RepoRef::new("ac/me", "x")), "repository.owner");
        assert_eq!(field(RepoRef::new("acme", "")), "repository.name");
        assert_eq!(
            field(RepoRef::new("acme", &"r".repeat(101))),
            "repository.name"
        );
        assert_eq!(field(RepoRef::new("acme", ".")), "repository.name");
        assert_eq!(field(RepoRef::new("acme", "..")), "repository.name");
        assert_eq!(field(RepoRef::new("acme", "a/b")), "repository.name");
        assert_eq!(field(RepoRef::new("acme", "a b")), "repository.name");
        assert_eq!(field(RepoRef::new("acme", "héllo")), "repository.name");
        assert_eq!(field(RepoRef::parse("acme")), "repository");
        assert_eq!(field(RepoRef::parse("acme/a/b")), "repository.name");
    }

    #[test]
    fn branch_names() {
        for ok in [
            "main",
            "feature/x",
            "release-1.2",
            "user/fix_#12",
            "v1",
            "ü",
            "a.b",
            "@x",
        ] {
            assert!(validate_branch(ok).is_ok(), "{ok}");
        }
        let long = "b".repeat(256);
        for bad in [
            "", &long, "a\nb", "a\u{7f}", "a b", "a~1", "a^", "a:b", "a?", "a*", "a[", "a\\b",
            "-x", "@", "a@{1}", "a..b", "a.", "/a", "a/", "a//b", ".a", "a/.b", "a.lock",
            "a.lock/b",
        ] {
            match validate_branch(bad) {
                Err(GitHubError::InvalidInput {
                    field: "branch", ..
                }) => {}
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        assert!(validate_branch(&"b".repeat(255)).is_ok());
    }

    #[test]
    fn commit_shas() {
        let full = "0123456789abcdef0123456789ABCDEF01234567";
        assert_eq!(commit_sha(full, 40).unwrap(), full.to_ascii_lowercase());
        assert_eq!(commit_sha("abcd", 4).unwrap(), "abcd");
        assert!(commit_sha("abc", 4).is_err());
        assert!(commit_sha("abcd", 40).is_err());
        assert!(commit_sha(&"a".repeat(41), 4).is_err());
        assert!(commit_sha("main", 4).is_err());
        assert!(matches!(
            commit_sha("xyz12", 4),
            Err(GitHubError::InvalidInput {
                field: "commit_sha",
                ..
            })
        ));
    }

    #[test]
    fn branch_paths_keep_slashes_and_escape_the_rest() {
        assert_eq!(encode_path("feature/x-1.2_~"), "feature/x-1.2_~");
        assert_eq!(encode_path("fix#12%"), "fix%2312%25");
        assert_eq!(encode_path("ü"), "%C3%BC");
    }
}
