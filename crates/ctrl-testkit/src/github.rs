//! [`FakeGitHub`]: a stateful, in-process stand-in for the parts of GitHub's
//! REST API that `ctrl-github` uses, for tests.
//!
//! It serves, on 127.0.0.1, exactly these endpoints, with GitHub's status
//! codes, messages, JSON shapes and headers (`x-github-request-id`,
//! `x-ratelimit-*`):
//!
//! - `POST /app/installations/{id}/access_tokens`: needs
//!   `Authorization: Bearer <jwt>`, an RS256 JSON web token verified with the
//!   app's public key (`iss` the app id, `exp` in the future and at most ten
//!   minutes ahead); answers `201` with `token` and `expires_at`.
//! - `GET /repos/{owner}/{repo}`, `GET /repos/{owner}/{repo}/commits/{ref}`
//!   (`ref`: a SHA or its prefix, a branch, or `heads/{branch}`; `409` "Git
//!   Repository is empty." and `422` "No commit found for SHA: …" like
//!   GitHub), `GET /repos/{owner}/{repo}/tarball/{ref}` (`302` to the
//!   codeload stand-in `/_codeload/{owner}/{repo}/legacy.tar.gz/{sha}`, with
//!   a `?token=` for private repositories). Private repositories need an
//!   unexpired installation token (`Authorization: token …` or `Bearer …`)
//!   of an installation that includes them, else `404` — GitHub hides them;
//!   unknown or expired tokens get `401 Bad credentials`; public ones are
//!   readable anonymously, within an anonymous rate limit (60 an hour).
//! - What a deployment reports back, each needing an installation token of
//!   an installation that includes the repository — public ones too, as
//!   writes always need one — else `404` (`401` for unknown or expired
//!   tokens), and the installation's permission for it
//!   ([`deny_permission`](FakeGitHub::deny_permission)), else `403`:
//!   - `POST /repos/{owner}/{repo}/deployments` (`201`; `ref` must resolve
//!     to a commit, else `422` "No ref found for: …"; `environment`
//!     required; without `required_contexts: []` every commit status of the
//!     commit must be `success`, else `409` like GitHub);
//!   - `POST /repos/{owner}/{repo}/deployments/{id}/statuses` (`201`;
//!     unknown deployment `404`; `state` one of GitHub's seven; description
//!     over 140 characters `422`; `auto_inactive`, on by default, marks
//!     earlier successful deployments to the same non-transient,
//!     non-production environment `inactive`);
//!   - `POST /repos/{owner}/{repo}/statuses/{sha}` (`201`; unknown commit
//!     `422`; `state` error, failure, pending or success; description over
//!     140 characters `422`);
//!   - `GET` and `POST /repos/{owner}/{repo}/issues/{number}/comments`
//!     (`per_page` up to 100, `page`, and a `Link` header with `next`,
//!     `last`, `prev` and `first` as GitHub sends them, its URLs under
//!     `/repositories/{id}/…`, which are served too; `201` for a new
//!     comment by `{app slug}[bot]`) and
//!     `PATCH /repos/{owner}/{repo}/issues/comments/{id}` (`200`); bodies
//!     over 65536 characters `422`; pull requests other than those declared
//!     with [`add_pull_request`](FakeGitHub::add_pull_request), and unknown
//!     comments, `404`.
//!
//!   Bodies GitHub's schema refuses get its `422 Invalid request.` (a
//!   missing or mistyped field) or `422 Validation Failed` with `errors`
//!   (too long, blank); JSON that does not parse `400`.
//!
//! Tarballs are gzip'd tars like GitHub's: a pax global header whose
//! `comment` is the commit SHA, then every entry under one top directory
//! `{owner}-{repo}-{sha:7}/`.
//!
//! Tests build the state with [`FakeGitHub::add_app`],
//! [`add_installation`](FakeGitHub::add_installation),
//! [`add_repo`](FakeGitHub::add_repo), [`push`](FakeGitHub::push) and
//! [`add_pull_request`](FakeGitHub::add_pull_request) (others' comments:
//! [`add_comment`](FakeGitHub::add_comment)), inject failures with
//! [`fail_next`](FakeGitHub::fail_next) (on any path), and
//! inspect what the client sent with [`requests`](FakeGitHub::requests) and
//! what it reported with [`deployments`](FakeGitHub::deployments),
//! [`commit_statuses`](FakeGitHub::commit_statuses) and
//! [`comments`](FakeGitHub::comments). A repository without pushes is
//! empty, as a freshly created GitHub repository is. [`payloads`] builds
//! the webhook deliveries GitHub would send about them.
//!
//! Started with [`FakeGitHubOptions::control_routes`] (the dev stack does;
//! tests leave them off, and they answer `404` then), it also serves
//! another process acting as a developer, without credentials and without
//! being recorded in [`requests`](FakeGitHub::requests); errors are
//! `{"message": …}`:
//!
//! - `POST /_fake/repos/{owner}/{repo}/commits` with
//!   `{"branch": "main", "message": "…", "author": "login", "files":
//!   {"path/in/repo": "<base64 contents>", …}, "executable": ["path", …]}`:
//!   commits that whole tree (a snapshot, like [`push`](FakeGitHub::push);
//!   `branch` defaults to the default branch, which a new branch starts
//!   from) and answers `201` with `sha`, `repository_id`, `full_name`,
//!   `private`, `default_branch`, `branch`, `before` (the branch's previous
//!   head, zeros for a new branch), `message`, `author`, `author_email`,
//!   `timestamp` (unix seconds) and the `added`, `modified` and `removed`
//!   paths against the parent: what a push payload needs;
//! - `POST /_fake/repos/{owner}/{repo}/pulls` with `{"number": N}`:
//!   declares the pull request ([`add_pull_request`](FakeGitHub::add_pull_request)),
//!   `201 {"number", "created": true}`, or `200` with `created: false` when
//!   it was known;
//! - `GET /_fake/repos/{owner}/{repo}`: `id`, `full_name`, `private`,
//!   `default_branch` and `branches` (name → head SHA);
//! - `GET /_fake/repos/{owner}/{repo}/deployments`: what
//!   [`deployments`](FakeGitHub::deployments) returns (`id`, `sha`,
//!   `environment`, `description`, `transient`, `production`, `statuses`
//!   with `state`, `description`, `log_url`, `environment_url`);
//! - `GET /_fake/repos/{owner}/{repo}/statuses/{sha}`:
//!   [`commit_statuses`](FakeGitHub::commit_statuses) (`state`, `context`,
//!   `description`, `target_url`);
//! - `GET /_fake/repos/{owner}/{repo}/comments/{number}`:
//!   [`comments`](FakeGitHub::comments) (`id`, `body`, `edits`, `author`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::convert::Infallible;
use std::io::Write as _;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, Method, Response, StatusCode, Uri};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use ring::signature::{KeyPair as _, RSA_PKCS1_2048_8192_SHA256, RsaKeyPair, UnparsedPublicKey};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::Error;
use crate::clock::{now_secs, rfc3339};

mod control;
pub mod payloads;
mod reports;

use reports::Reports;
pub use reports::{FakeComment, FakeCommitStatus, FakeDeployment, FakeDeploymentStatus};

/// A test-only GitHub App private key (PKCS#1 PEM, 2048 bits). It protects
/// nothing; see `fixtures/README.md`.
pub const TEST_APP_KEY_PEM: &str = include_str!("../fixtures/github-app.pem");

/// A second test-only key, for signatures the fake must refuse.
pub const OTHER_TEST_APP_KEY_PEM: &str = include_str!("../fixtures/github-app-other.pem");

/// The public key of [`TEST_APP_KEY_PEM`] as [`FakeGitHub::add_app`] takes it.
pub fn test_app_public_key_der() -> Vec<u8> {
    public_key_der(TEST_APP_KEY_PEM)
}

/// The public key (PKCS#1 `RSAPublicKey` DER) of an RSA private key in PEM
/// (`RSA PRIVATE KEY` or `PRIVATE KEY`). Panics on anything else: it is for
/// test keys.
pub fn public_key_der(private_key_pem: &str) -> Vec<u8> {
    key_pair(private_key_pem).public_key().as_ref().to_vec()
}

fn key_pair(private_key_pem: &str) -> RsaKeyPair {
    let label = private_key_pem
        .lines()
        .find_map(|l| l.trim().strip_prefix("-----BEGIN ")?.strip_suffix("-----"))
        .expect("a PEM private key");
    let body: String = private_key_pem
        .lines()
        .map(str::trim)
        .skip_while(|l| !l.starts_with("-----BEGIN "))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END "))
        .collect();
    let der = STANDARD.decode(body).expect("PEM base64");
    match label {
        "RSA PRIVATE KEY" => RsaKeyPair::from_der(&der),
        "PRIVATE KEY" => RsaKeyPair::from_pkcs8(&der),
        other => panic!("not an RSA private key: {other}"),
    }
    .expect("a valid RSA key")
}

/// How a recorded request authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthKind {
    /// No `Authorization` header.
    None,
    /// `Bearer` with a JSON web token (three dot-separated parts).
    Jwt,
    /// `token …`, or `Bearer` with anything but a JSON web token.
    Token,
    /// Any other scheme.
    Other,
}

impl AuthKind {
    fn of(headers: &HeaderMap) -> Self {
        let Some(value) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
            return Self::None;
        };
        match value.split_once(' ') {
            Some((scheme, cred)) if scheme.eq_ignore_ascii_case("bearer") => {
                if cred.split('.').count() == 3 {
                    Self::Jwt
                } else {
                    Self::Token
                }
            }
            Some((scheme, _)) if scheme.eq_ignore_ascii_case("token") => Self::Token,
            _ => Self::Other,
        }
    }
}

/// One request the fake answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// `GET`, `POST`, ….
    pub method: String,
    /// The path, without query.
    pub path: String,
    /// How it authenticated.
    pub authorization_kind: AuthKind,
    /// The status the fake answered.
    pub status: u16,
    /// Every `User-Agent` header sent.
    pub user_agents: Vec<String>,
    /// The `Accept` header.
    pub accept: Option<String>,
    /// The `X-GitHub-Api-Version` header.
    pub api_version: Option<String>,
}

/// A repository's settings.
#[derive(Debug, Clone)]
pub struct RepoOpts {
    /// Private repositories are visible only to installations that include
    /// them.
    pub private: bool,
    /// The default branch's name.
    pub default_branch: String,
}

impl Default for RepoOpts {
    fn default() -> Self {
        Self {
            private: false,
            default_branch: "main".to_owned(),
        }
    }
}

/// A commit's author.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Author {
    /// The GitHub account the email belongs to; `None` makes GitHub's
    /// top-level `author` `null`.
    pub login: Option<String>,
    /// `commit.author.name`.
    pub name: String,
    /// `commit.author.email`.
    pub email: String,
    /// `author.avatar_url`.
    pub avatar_url: String,
}

impl Default for Author {
    fn default() -> Self {
        Self {
            login: Some("octocat".to_owned()),
            name: "The Octocat".to_owned(),
            email: "octocat@github.com".to_owned(),
            avatar_url: "https://avatars.githubusercontent.com/u/583231?v=4".to_owned(),
        }
    }
}

/// A file in a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeFile {
    /// Its bytes.
    pub contents: Vec<u8>,
    /// Mode 0775 in the tarball instead of 0664.
    pub executable: bool,
}

/// What [`FakeGitHub::push`] commits. `files` is the whole tree of the new
/// commit (a snapshot, not a change).
#[derive(Debug, Clone)]
pub struct CommitSpec {
    /// The commit message.
    pub message: String,
    /// Its author.
    pub author: Author,
    /// The author date, unix seconds; `None`: the time of the push.
    pub date: Option<i64>,
    /// Path (with `/`) → file.
    pub files: BTreeMap<String, FakeFile>,
}

impl CommitSpec {
    /// A commit by [`Author::default`] with no files.
    pub fn new(message: &str) -> Self {
        Self {
            message: message.to_owned(),
            author: Author::default(),
            date: None,
            files: BTreeMap::new(),
        }
    }

    /// Sets the author.
    pub fn author(mut self, author: Author) -> Self {
        self.author = author;
        self
    }

    /// Sets the author date (unix seconds).
    pub fn date(mut self, unix_secs: i64) -> Self {
        self.date = Some(unix_secs);
        self
    }

    /// Adds a regular file.
    pub fn file(mut self, path: &str, contents: impl Into<Vec<u8>>) -> Self {
        self.files.insert(
            path.to_owned(),
            FakeFile {
                contents: contents.into(),
                executable: false,
            },
        );
        self
    }

    /// Adds an executable file.
    pub fn executable(mut self, path: &str, contents: impl Into<Vec<u8>>) -> Self {
        self.files.insert(
            path.to_owned(),
            FakeFile {
                contents: contents.into(),
                executable: true,
            },
        );
        self
    }
}

/// How to start a [`FakeGitHub`].
#[derive(Debug, Clone, Copy, Default)]
pub struct FakeGitHubOptions {
    /// The loopback port to listen on; `None`: a free one.
    pub port: Option<u16>,
    /// Serve the `/_fake/…` control routes (see the module's documentation).
    pub control_routes: bool,
}

/// The fake server. Stops when dropped.
#[derive(Debug)]
pub struct FakeGitHub {
    state: Arc<Mutex<State>>,
    url: String,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeGitHub {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeGitHub {
    /// Starts an empty fake on a free loopback port, without control routes.
    pub async fn start() -> Result<Self, Error> {
        Self::start_with(FakeGitHubOptions::default()).await
    }

    /// Starts an empty fake as `options` say.
    pub async fn start_with(options: FakeGitHubOptions) -> Result<Self, Error> {
        let context = "start the fake GitHub";
        let listener = match options.port {
            None => crate::loopback_listener(context)?,
            Some(port) => {
                let listener = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, port))
                    .map_err(|e| Error::io(context, e))?;
                listener
                    .set_nonblocking(true)
                    .map_err(|e| Error::io(context, e))?;
                listener
            }
        };
        let addr = listener.local_addr().map_err(|e| Error::io(context, e))?;
        let listener =
            tokio::net::TcpListener::from_std(listener).map_err(|e| Error::io(context, e))?;
        let url = format!("http://{addr}");
        let mut state = State::new(url.clone());
        state.control_routes = options.control_routes;
        let state = Arc::new(Mutex::new(state));
        let router = axum::Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&state));
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(ctrl_runtime::net::nodelay(listener), router).await {
                tracing::warn!(error = %e, "the fake GitHub stopped");
            }
        });
        Ok(Self { state, url, server })
    }

    /// The API's base URL (`http://127.0.0.1:{port}`), for `api_url`.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Registers a GitHub App and its public key (PKCS#1 `RSAPublicKey`
    /// DER, e.g. from [`test_app_public_key_der`]). Its slug is
    /// `app-{app_id}` until [`set_app_slug`](Self::set_app_slug).
    pub fn add_app(&self, app_id: u64, public_key_der: &[u8]) -> &Self {
        self.state().apps.insert(
            app_id,
            App {
                key: public_key_der.to_vec(),
                slug: format!("app-{app_id}"),
            },
        );
        self
    }

    /// Sets an app's slug: what it writes shows as `{slug}[bot]`.
    pub fn set_app_slug(&self, app_id: u64, slug: &str) -> &Self {
        self.state()
            .apps
            .get_mut(&app_id)
            .unwrap_or_else(|| panic!("unknown app {app_id}"))
            .slug = slug.to_owned();
        self
    }

    /// Installs an app on the repositories `repos` (`owner/name`).
    pub fn add_installation(&self, installation_id: u64, app_id: u64, repos: &[&str]) -> &Self {
        self.state().installations.insert(
            installation_id,
            Installation {
                app_id,
                repos: repos.iter().map(|r| r.to_ascii_lowercase()).collect(),
                denied: BTreeSet::new(),
            },
        );
        self
    }

    /// Creates an empty repository `owner/name`.
    pub fn add_repo(&self, full_name: &str, opts: RepoOpts) -> &Self {
        let (owner, name) = full_name
            .split_once('/')
            .expect("a repository name of the form owner/name");
        let mut state = self.state();
        state.next_id += 1;
        let repo = Repo {
            id: 1_000 + state.next_id,
            owner: owner.to_owned(),
            name: name.to_owned(),
            private: opts.private,
            default_branch: opts.default_branch,
            branches: BTreeMap::new(),
            commits: HashMap::new(),
            created: now_secs(),
            reports: Reports::default(),
        };
        state.repos.insert(full_name.to_ascii_lowercase(), repo);
        self
    }

    /// Commits `spec` on top of `branch` (created from the default branch's
    /// head if new) and returns the new commit's SHA.
    pub fn push(&self, full_name: &str, branch: &str, spec: CommitSpec) -> String {
        let mut state = self.state();
        let repo = state
            .repos
            .get_mut(&full_name.to_ascii_lowercase())
            .unwrap_or_else(|| panic!("push to unknown repository {full_name}"));
        repo.commit(branch, spec)
    }

    /// Installation tokens minted from now on expire after `ttl` (GitHub's:
    /// one hour).
    pub fn set_token_ttl(&self, ttl: Duration) -> &Self {
        self.state().token_ttl = ttl;
        self
    }

    /// Whether codeload sends `Content-Length` (it streams without by
    /// default, as codeload.github.com does).
    pub fn set_codeload_content_length(&self, on: bool) -> &Self {
        self.state().codeload_content_length = on;
        self
    }

    /// Anonymous requests allowed per hour (GitHub: 60).
    pub fn set_anonymous_rate_limit(&self, limit: u32) -> &Self {
        self.state().anonymous_limit = limit;
        self
    }

    /// Makes every token of the installation invalid (`401 Bad credentials`),
    /// as revoking it on GitHub does.
    pub fn revoke_tokens(&self, installation_id: u64) -> &Self {
        self.state()
            .tokens
            .retain(|_, t| t.installation_id != installation_id);
        self
    }

    /// The next request whose path starts with `path_prefix` is answered
    /// with `status` instead: `429` (and `403`) come with `retry-after: 60`
    /// as GitHub's secondary rate limit does; other statuses with GitHub's
    /// JSON error body.
    pub fn fail_next(&self, path_prefix: &str, status: u16) -> &Self {
        let headers: &[(&str, &str)] = if matches!(status, 403 | 429) {
            &[("retry-after", "60")]
        } else {
            &[]
        };
        self.fail_next_with(path_prefix, status, headers)
    }

    /// Like [`fail_next`](Self::fail_next) with exactly these extra headers.
    pub fn fail_next_with(
        &self,
        path_prefix: &str,
        status: u16,
        headers: &[(&str, &str)],
    ) -> &Self {
        self.state().failures.push(Injected {
            prefix: path_prefix.to_owned(),
            status,
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        });
        self
    }

    /// Every request answered so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state().requests.clone()
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

struct State {
    base_url: String,
    apps: HashMap<u64, App>,
    installations: HashMap<u64, Installation>,
    tokens: HashMap<String, IssuedToken>,
    /// `?token=` of codeload URLs for private repositories.
    codeload_tokens: HashMap<String, (String, i64)>,
    /// By lowercase `owner/name`: GitHub's names are case-insensitive.
    repos: BTreeMap<String, Repo>,
    requests: Vec<RecordedRequest>,
    failures: Vec<Injected>,
    token_ttl: Duration,
    codeload_content_length: bool,
    anonymous_limit: u32,
    rate: HashMap<Identity, Bucket>,
    next_id: u64,
    /// Serve `/_fake/…`.
    control_routes: bool,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("base_url", &self.base_url)
            .field("repos", &self.repos.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl State {
    fn new(base_url: String) -> Self {
        Self {
            base_url,
            apps: HashMap::new(),
            installations: HashMap::new(),
            tokens: HashMap::new(),
            codeload_tokens: HashMap::new(),
            repos: BTreeMap::new(),
            requests: Vec::new(),
            failures: Vec::new(),
            token_ttl: Duration::from_secs(3600),
            codeload_content_length: false,
            anonymous_limit: 60,
            rate: HashMap::new(),
            next_id: 0,
            control_routes: false,
        }
    }
}

struct App {
    /// PKCS#1 `RSAPublicKey` DER.
    key: Vec<u8>,
    slug: String,
}

struct Installation {
    app_id: u64,
    repos: BTreeSet<String>,
    /// Permissions taken away with [`FakeGitHub::deny_permission`].
    denied: BTreeSet<String>,
}

struct IssuedToken {
    installation_id: u64,
    expires_at: i64,
}

struct Repo {
    id: u64,
    owner: String,
    name: String,
    private: bool,
    default_branch: String,
    /// Branch → its commits, oldest first.
    branches: BTreeMap<String, Vec<String>>,
    commits: HashMap<String, StoredCommit>,
    created: i64,
    /// Deployments, statuses, pull requests and comments.
    reports: Reports,
}

impl Repo {
    /// Commits `spec` on top of `branch` (from the default branch's head if
    /// new); the new commit's SHA.
    fn commit(&mut self, branch: &str, spec: CommitSpec) -> String {
        let parent = self
            .head(branch)
            .or_else(|| self.head(&self.default_branch))
            .map(str::to_owned);
        let date = spec.date.unwrap_or_else(now_secs);
        let mut hash = Sha256::new();
        hash.update(parent.as_deref().unwrap_or("").as_bytes());
        hash.update(spec.message.as_bytes());
        hash.update(spec.author.name.as_bytes());
        hash.update(spec.author.email.as_bytes());
        hash.update(date.to_be_bytes());
        let tree = tree_sha(&spec.files);
        hash.update(tree.as_bytes());
        let sha = hex40(&hash.finalize());
        self.commits.insert(
            sha.clone(),
            StoredCommit {
                sha: sha.clone(),
                parents: parent.into_iter().collect(),
                message: spec.message,
                author: spec.author,
                date,
                tree,
                files: spec.files,
            },
        );
        self.branches
            .entry(branch.to_owned())
            .or_default()
            .push(sha.clone());
        sha
    }

    fn head(&self, branch: &str) -> Option<&str> {
        self.branches.get(branch)?.last().map(String::as_str)
    }

    fn full_name(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }

    /// What `git rev-parse` would make of a ref in the API's `{ref}`.
    fn resolve(&self, reference: &str) -> Option<&StoredCommit> {
        let branch = reference
            .strip_prefix("refs/heads/")
            .or_else(|| reference.strip_prefix("heads/"));
        if let Some(branch) = branch {
            return self.commits.get(self.head(branch)?);
        }
        if let Some(head) = self.head(reference) {
            return self.commits.get(head);
        }
        let hex =
            (4..=40).contains(&reference.len()) && reference.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex {
            return None;
        }
        let prefix = reference.to_ascii_lowercase();
        let mut found = self.commits.values().filter(|c| c.sha.starts_with(&prefix));
        match (found.next(), found.next()) {
            (Some(commit), None) => Some(commit),
            _ => None,
        }
    }
}

struct StoredCommit {
    sha: String,
    parents: Vec<String>,
    message: String,
    author: Author,
    date: i64,
    tree: String,
    files: BTreeMap<String, FakeFile>,
}

struct Injected {
    prefix: String,
    status: u16,
    headers: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Identity {
    Anonymous,
    App(u64),
    Installation(u64),
}

struct Bucket {
    used: u32,
    reset: i64,
}

/// An answer, built under the lock and turned into a response after it.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: ReplyBody,
}

enum ReplyBody {
    Empty,
    Json(Value),
    Text(String),
    Archive { bytes: Vec<u8>, with_length: bool },
}

impl Reply {
    fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: ReplyBody::Json(body),
        }
    }

    /// GitHub's error body.
    fn error(status: u16, message: &str, docs: &str) -> Self {
        Self::json(
            status,
            json!({
                "message": message,
                "documentation_url": format!("https://docs.github.com/rest{docs}"),
                "status": status.to_string(),
            }),
        )
    }

    fn not_found(docs: &str) -> Self {
        Self::error(404, "Not Found", docs)
    }

    fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }
}

const DOCS_TOKEN: &str = "/apps/apps#create-an-installation-access-token-for-an-app";
const DOCS_REPO: &str = "/repos/repos#get-a-repository";
const DOCS_COMMIT: &str = "/commits/commits#get-a-commit";
const DOCS_TARBALL: &str = "/repos/contents#download-a-repository-archive-tar";
const JWT_UNDECODABLE: &str = "A JSON web token could not be decoded";
const API_VERSION: &str = "2022-11-28";

async fn handle(
    AxumState(state): AxumState<Arc<Mutex<State>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let reply = {
        let mut state = lock(&state);
        if state.control_routes
            && let Some(rest) = uri.path().strip_prefix("/_fake/")
        {
            let segments: Vec<String> = rest.split('/').map(percent_decode).collect();
            let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
            let reply = control::route(&mut state, &method, &segments, &body);
            drop(state);
            return respond(reply);
        }
        let reply = route(&mut state, &method, &uri, &headers, &body);
        state.requests.push(RecordedRequest {
            method: method.to_string(),
            path: uri.path().to_owned(),
            authorization_kind: AuthKind::of(&headers),
            status: reply.status,
            user_agents: headers
                .get_all("user-agent")
                .iter()
                .filter_map(|v| v.to_str().ok().map(str::to_owned))
                .collect(),
            accept: header(&headers, "accept").map(str::to_owned),
            api_version: header(&headers, "x-github-api-version").map(str::to_owned),
        });
        reply
    };
    respond(reply)
}

fn respond(reply: Reply) -> Response<Body> {
    let mut response = Response::builder()
        .status(StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("x-github-request-id", request_id());
    for (name, value) in &reply.headers {
        response = response.header(name.as_str(), value.as_str());
    }
    let body = match reply.body {
        ReplyBody::Empty => Body::empty(),
        ReplyBody::Json(value) => {
            response = response.header("content-type", "application/json; charset=utf-8");
            Body::from(value.to_string())
        }
        ReplyBody::Text(text) => {
            response = response.header("content-type", "text/plain; charset=utf-8");
            Body::from(text)
        }
        ReplyBody::Archive { bytes, with_length } => {
            if with_length {
                Body::from(bytes)
            } else {
                // Chunked, as codeload streams archives.
                let chunks: Vec<Result<Bytes, Infallible>> = bytes
                    .chunks(16 << 10)
                    .map(|c| Ok(Bytes::copy_from_slice(c)))
                    .collect();
                Body::from_stream(futures::stream::iter(chunks))
            }
        }
    };
    response
        .body(body)
        .unwrap_or_else(|_| Response::new(Body::from("the fake GitHub built a bad response")))
}

fn route(state: &mut State, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Reply {
    let path = uri.path();
    if header(headers, "user-agent").is_none() {
        return Reply {
            status: 403,
            headers: Vec::new(),
            body: ReplyBody::Text(
                "Request forbidden by administrative rules. Please make sure your request has a \
                 User-Agent header (https://docs.github.com/en/rest/overview/resources-in-the-rest-api#user-agent-required). \
                 Check https://developer.github.com for other possible causes.\n"
                    .to_owned(),
            ),
        };
    }
    if let Some(at) = state
        .failures
        .iter()
        .position(|f| path.starts_with(&f.prefix))
    {
        let failure = state.failures.remove(at);
        return injected(&failure);
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if segments.first() == Some(&"_codeload") {
        return codeload(state, &segments[1..], uri.query().unwrap_or(""));
    }
    if let Some(version) = header(headers, "x-github-api-version")
        && version != API_VERSION
    {
        return Reply::error(
            400,
            &format!("Unsupported 'X-GitHub-Api-Version': {version}"),
            "/overview/api-versions",
        );
    }
    let query = uri.query().unwrap_or("");
    let report = reports::Request {
        method,
        query,
        headers,
        body,
    };
    let reply = match (method, segments.as_slice()) {
        (&Method::POST, ["app", "installations", id, "access_tokens"]) => {
            access_token(state, id, headers)
        }
        (_, ["repos", owner, name, rest @ ..]) if reports::is_report(method, rest) => {
            reports::route(state, &format!("{owner}/{name}"), rest, &report)
        }
        (&Method::GET, ["repositories", id, rest @ ..]) if reports::is_report(method, rest) => {
            let key = id.parse::<u64>().ok().and_then(|id| {
                state
                    .repos
                    .iter()
                    .find(|(_, r)| r.id == id)
                    .map(|(k, _)| k.clone())
            });
            match key {
                Some(key) => reports::route(state, &key, rest, &report),
                None => Reply::not_found(""),
            }
        }
        (&Method::GET, ["repos", owner, name, rest @ ..]) => {
            repos(state, owner, name, rest, headers)
        }
        _ => Reply::not_found(""),
    };
    reply.header("x-github-api-version-selected", API_VERSION)
}

fn injected(failure: &Injected) -> Reply {
    let message = match failure.status {
        403 | 429 => "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.".to_owned(),
        status => StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error")
            .to_owned(),
    };
    let mut reply = Reply::error(failure.status, &message, "");
    for (name, value) in &failure.headers {
        reply = reply.header(name, value.as_str());
    }
    reply
}

/// Counts a request against its identity's hourly limit; `Err` once spent.
fn rate_limit(state: &mut State, identity: Identity) -> Result<Vec<(String, String)>, Reply> {
    let limit = match identity {
        Identity::Anonymous => state.anonymous_limit,
        Identity::App(_) | Identity::Installation(_) => 5_000,
    };
    let now = now_secs();
    let bucket = state.rate.entry(identity).or_insert(Bucket {
        used: 0,
        reset: now + 3600,
    });
    if bucket.reset <= now {
        *bucket = Bucket {
            used: 0,
            reset: now + 3600,
        };
    }
    let exhausted = bucket.used >= limit;
    if !exhausted {
        bucket.used += 1;
    }
    let headers = vec![
        ("x-ratelimit-limit".to_owned(), limit.to_string()),
        (
            "x-ratelimit-remaining".to_owned(),
            (limit - bucket.used.min(limit)).to_string(),
        ),
        ("x-ratelimit-reset".to_owned(), bucket.reset.to_string()),
        ("x-ratelimit-used".to_owned(), bucket.used.to_string()),
        ("x-ratelimit-resource".to_owned(), "core".to_owned()),
    ];
    if exhausted {
        let mut reply = Reply::error(
            403,
            "API rate limit exceeded for 127.0.0.1. (But here's the good news: Authenticated \
             requests get a higher rate limit. Check out the documentation for more details.)",
            "/overview/rate-limits-for-the-rest-api",
        );
        reply.headers = headers;
        return Err(reply);
    }
    Ok(headers)
}

fn with_headers(mut reply: Reply, headers: Vec<(String, String)>) -> Reply {
    reply.headers.extend(headers);
    reply
}

fn access_token(state: &mut State, id: &str, headers: &HeaderMap) -> Reply {
    let jwt = header(headers, "authorization").and_then(|v| {
        let (scheme, cred) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then_some(cred.trim())
    });
    let Some(jwt) = jwt else {
        return Reply::error(401, "A JSON web token could not be decoded", DOCS_TOKEN);
    };
    let app_id = match verify_jwt(state, jwt, now_secs()) {
        Ok(app_id) => app_id,
        Err(message) => return Reply::error(401, message, DOCS_TOKEN),
    };
    let limits = match rate_limit(state, Identity::App(app_id)) {
        Ok(limits) => limits,
        Err(reply) => return reply,
    };
    let installation = id.parse::<u64>().ok().filter(|id| {
        state
            .installations
            .get(id)
            .is_some_and(|i| i.app_id == app_id)
    });
    let Some(installation_id) = installation else {
        return with_headers(Reply::not_found(DOCS_TOKEN), limits);
    };
    let token = format!("ghs_{}", random_alnum(36));
    let expires_at = now_secs() + i64::try_from(state.token_ttl.as_secs()).unwrap_or(i64::MAX / 2);
    state.tokens.insert(
        token.clone(),
        IssuedToken {
            installation_id,
            expires_at,
        },
    );
    let reply = Reply::json(
        201,
        json!({
            "token": token,
            "expires_at": rfc3339(expires_at),
            "permissions": reports::permissions(&state.installations[&installation_id]),
            "repository_selection": "selected",
        }),
    );
    with_headers(reply, limits)
}

/// Checks an app's JSON web token like GitHub; `Ok(app id)` or GitHub's
/// message.
fn verify_jwt(state: &State, jwt: &str, now: i64) -> Result<u64, &'static str> {
    let parts: Vec<&str> = jwt.split('.').collect();
    let [header, claims, signature] = parts.as_slice() else {
        return Err(JWT_UNDECODABLE);
    };
    let decode = |part: &str| -> Result<Value, &'static str> {
        let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| JWT_UNDECODABLE)?;
        serde_json::from_slice(&bytes).map_err(|_| JWT_UNDECODABLE)
    };
    if decode(header)?.get("alg").and_then(Value::as_str) != Some("RS256") {
        return Err(JWT_UNDECODABLE);
    }
    let claims = decode(claims)?;
    let app_id = match claims.get("iss") {
        Some(Value::String(s)) => s.parse::<u64>().ok(),
        Some(Value::Number(n)) => n.as_u64(),
        _ => None,
    }
    .ok_or("'Issuer' claim ('iss') must be an Integer")?;
    let key = &state.apps.get(&app_id).ok_or(JWT_UNDECODABLE)?.key;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| JWT_UNDECODABLE)?;
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, key)
        .verify(format!("{header}.{}", parts[1]).as_bytes(), &signature)
        .map_err(|_| JWT_UNDECODABLE)?;
    let iat = claims.get("iat").and_then(Value::as_i64).ok_or(
        "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued",
    )?;
    let exp = claims.get("exp").and_then(Value::as_i64).ok_or(
        "'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires",
    )?;
    if iat > now + 60 {
        return Err(
            "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued",
        );
    }
    if exp <= now {
        return Err(
            "'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires",
        );
    }
    if exp > now + 600 || exp - iat > 600 {
        return Err("'Expiration time' claim ('exp') is too far in the future");
    }
    Ok(app_id)
}

/// Who is asking: anonymous, or an installation by its token (`token …`
/// or `Bearer …`); `401 Bad credentials` for unknown or expired tokens.
/// Counts the request against the identity's rate limit.
fn identify(
    state: &mut State,
    headers: &HeaderMap,
) -> Result<(Identity, Vec<(String, String)>), Reply> {
    let credential = header(headers, "authorization").and_then(|v| {
        let (scheme, cred) = v.split_once(' ')?;
        (scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer"))
            .then_some(cred.trim())
            .or(Some(""))
    });
    let identity = match credential {
        None => Identity::Anonymous,
        Some(token) => match state.tokens.get(token) {
            Some(t) if t.expires_at > now_secs() => Identity::Installation(t.installation_id),
            _ => {
                let limits = rate_limit(state, Identity::Anonymous).unwrap_or_default();
                return Err(with_headers(
                    Reply::error(401, "Bad credentials", ""),
                    limits,
                ));
            }
        },
    };
    let limits = rate_limit(state, identity)?;
    Ok((identity, limits))
}

fn repos(state: &mut State, owner: &str, name: &str, rest: &[&str], headers: &HeaderMap) -> Reply {
    let (identity, limits) = match identify(state, headers) {
        Ok(found) => found,
        Err(reply) => return reply,
    };
    let key = format!("{owner}/{name}").to_ascii_lowercase();
    let visible = state.repos.get(&key).is_some_and(|repo| {
        !repo.private
            || matches!(identity, Identity::Installation(id)
                if state.installations.get(&id).is_some_and(|i| i.repos.contains(&key)))
    });
    let docs = match rest.first() {
        None => DOCS_REPO,
        Some(&"commits") => DOCS_COMMIT,
        Some(&"tarball") => DOCS_TARBALL,
        Some(_) => "",
    };
    if !visible {
        return with_headers(Reply::not_found(docs), limits);
    }
    let reply = match rest {
        [] => repo_json(state, &key),
        ["commits", reference @ ..] if !reference.is_empty() => {
            commit_json(state, &key, &percent_decode(&reference.join("/")))
        }
        ["tarball", reference @ ..] => {
            tarball_redirect(state, &key, &percent_decode(&reference.join("/")))
        }
        _ => Reply::not_found(""),
    };
    with_headers(reply, limits)
}

fn repo_json(state: &State, key: &str) -> Reply {
    let repo = &state.repos[key];
    let base = &state.base_url;
    let full_name = repo.full_name();
    Reply::json(
        200,
        json!({
            "id": repo.id,
            "node_id": STANDARD.encode(format!("010:Repository{}", repo.id)),
            "name": repo.name,
            "full_name": full_name,
            "private": repo.private,
            "owner": {
                "login": repo.owner,
                "id": repo.id + 1_000_000,
                "type": "Organization",
                "avatar_url": format!("https://avatars.githubusercontent.com/u/{}?v=4", repo.id + 1_000_000),
                "url": format!("{base}/users/{}", repo.owner),
            },
            "html_url": format!("https://github.com/{full_name}"),
            "description": null,
            "fork": false,
            "url": format!("{base}/repos/{full_name}"),
            "archived": false,
            "disabled": false,
            "visibility": if repo.private { "private" } else { "public" },
            "default_branch": repo.default_branch,
            "created_at": rfc3339(repo.created),
            "updated_at": rfc3339(repo.created),
            "pushed_at": rfc3339(repo.commits.values().map(|c| c.date).max().unwrap_or(repo.created)),
        }),
    )
}

fn commit_json(state: &State, key: &str, reference: &str) -> Reply {
    let repo = &state.repos[key];
    if repo.commits.is_empty() {
        return Reply::error(409, "Git Repository is empty.", DOCS_COMMIT);
    }
    let Some(commit) = repo.resolve(reference) else {
        return Reply::error(
            422,
            &format!("No commit found for SHA: {reference}"),
            DOCS_COMMIT,
        );
    };
    let base = &state.base_url;
    let full_name = repo.full_name();
    let sha = &commit.sha;
    let actor = json!({
        "name": commit.author.name,
        "email": commit.author.email,
        "date": rfc3339(commit.date),
    });
    let user = commit.author.login.as_ref().map(|login| {
        json!({
            "login": login,
            "id": 583_231,
            "node_id": "MDQ6VXNlcjU4MzIzMQ==",
            "avatar_url": commit.author.avatar_url,
            "url": format!("{base}/users/{login}"),
            "html_url": format!("https://github.com/{login}"),
            "type": "User",
            "site_admin": false,
        })
    });
    Reply::json(
        200,
        json!({
            "sha": sha,
            "node_id": STANDARD.encode(format!("04:Commit{sha}")),
            "url": format!("{base}/repos/{full_name}/commits/{sha}"),
            "html_url": format!("https://github.com/{full_name}/commit/{sha}"),
            "comments_url": format!("{base}/repos/{full_name}/commits/{sha}/comments"),
            "commit": {
                "url": format!("{base}/repos/{full_name}/git/commits/{sha}"),
                "author": actor,
                "committer": actor,
                "message": commit.message,
                "tree": {"sha": commit.tree, "url": format!("{base}/repos/{full_name}/git/trees/{}", commit.tree)},
                "comment_count": 0,
                "verification": {"verified": false, "reason": "unsigned", "signature": null, "payload": null, "verified_at": null},
            },
            "author": user,
            "committer": user,
            "parents": commit.parents.iter().map(|p| json!({
                "sha": p,
                "url": format!("{base}/repos/{full_name}/commits/{p}"),
                "html_url": format!("https://github.com/{full_name}/commit/{p}"),
            })).collect::<Vec<_>>(),
        }),
    )
}

fn tarball_redirect(state: &mut State, key: &str, reference: &str) -> Reply {
    let repo = &state.repos[key];
    let reference = if reference.is_empty() {
        repo.default_branch.as_str()
    } else {
        reference
    };
    let Some(commit) = repo.resolve(reference) else {
        return Reply::not_found(DOCS_TARBALL);
    };
    let mut location = format!(
        "{}/_codeload/{}/{}/legacy.tar.gz/{}",
        state.base_url, repo.owner, repo.name, commit.sha
    );
    if repo.private {
        let token = random_alnum(29);
        location = format!("{location}?token={token}");
        state
            .codeload_tokens
            .insert(token, (key.to_owned(), now_secs() + 300));
    }
    Reply {
        status: 302,
        headers: vec![("location".to_owned(), location)],
        body: ReplyBody::Empty,
    }
}

fn codeload(state: &State, segments: &[&str], query: &str) -> Reply {
    let text_404 = || Reply {
        status: 404,
        headers: Vec::new(),
        body: ReplyBody::Text("404: Not Found".to_owned()),
    };
    let [owner, name, "legacy.tar.gz", sha] = segments else {
        return text_404();
    };
    let key = format!("{owner}/{name}").to_ascii_lowercase();
    let Some(repo) = state.repos.get(&key) else {
        return text_404();
    };
    if repo.private {
        let token = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("token="))
            .unwrap_or("");
        let valid = state
            .codeload_tokens
            .get(token)
            .is_some_and(|(for_repo, until)| *for_repo == key && *until > now_secs());
        if !valid {
            return text_404();
        }
    }
    let Some(commit) = repo.commits.get(*sha) else {
        return text_404();
    };
    let bytes = match archive(repo, commit) {
        Ok(bytes) => bytes,
        Err(e) => {
            return Reply {
                status: 500,
                headers: Vec::new(),
                body: ReplyBody::Text(format!("the fake GitHub could not build the archive: {e}")),
            };
        }
    };
    Reply {
        status: 200,
        headers: vec![
            ("content-type".to_owned(), "application/x-gzip".to_owned()),
            (
                "content-disposition".to_owned(),
                format!(
                    "attachment; filename={}-{}-{}.tar.gz",
                    repo.owner,
                    repo.name,
                    &commit.sha[..7]
                ),
            ),
            ("etag".to_owned(), format!("\"{}\"", commit.sha)),
        ],
        body: ReplyBody::Archive {
            bytes,
            with_length: state.codeload_content_length,
        },
    }
}

/// The commit's tree as GitHub's legacy tarball: a pax global header with
/// the SHA as `comment`, then directories and files under
/// `{owner}-{repo}-{sha:7}/`, in git's order, dated at the commit.
fn archive(repo: &Repo, commit: &StoredCommit) -> std::io::Result<Vec<u8>> {
    let top = format!("{}-{}-{}", repo.owner, repo.name, &commit.sha[..7]);
    let mtime = u64::try_from(commit.date).unwrap_or(0);
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    let header = |kind: tar::EntryType, size: u64, mode: u32| -> std::io::Result<tar::Header> {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_mtime(mtime);
        h.set_uid(0);
        h.set_gid(0);
        h.set_username("root")?;
        h.set_groupname("root")?;
        Ok(h)
    };
    let pax = pax_record("comment", &commit.sha);
    let mut global = header(tar::EntryType::XGlobalHeader, pax.len() as u64, 0o666)?;
    global.set_path("pax_global_header")?;
    global.set_cksum();
    tar.append(&global, pax.as_slice())?;
    // Directories first where git puts them: a tree sorts a directory as its
    // name followed by `/`.
    let mut entries: BTreeMap<String, Option<&FakeFile>> = BTreeMap::new();
    entries.insert(format!("{top}/"), None);
    for (path, file) in &commit.files {
        let mut dir = String::new();
        let parts: Vec<&str> = path.split('/').collect();
        for part in &parts[..parts.len() - 1] {
            dir.push_str(part);
            dir.push('/');
            entries.insert(format!("{top}/{dir}"), None);
        }
        entries.insert(format!("{top}/{path}"), Some(file));
    }
    for (path, file) in entries {
        match file {
            None => {
                let mut h = header(tar::EntryType::Directory, 0, 0o775)?;
                tar.append_data(&mut h, &path, std::io::empty())?;
            }
            Some(file) => {
                let mode = if file.executable { 0o775 } else { 0o664 };
                let mut h = header(tar::EntryType::Regular, file.contents.len() as u64, mode)?;
                tar.append_data(&mut h, &path, file.contents.as_slice())?;
            }
        }
    }
    let mut gz = tar.into_inner()?;
    gz.flush()?;
    gz.finish()
}

/// One pax record: `"{length} {key}={value}\n"`, the length counting itself.
fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let rest = key.len() + value.len() + 3;
    let mut length = rest + 1;
    while length != rest + length.to_string().len() {
        length = rest + length.to_string().len();
    }
    format!("{length} {key}={value}\n").into_bytes()
}

fn tree_sha(files: &BTreeMap<String, FakeFile>) -> String {
    let mut hash = Sha256::new();
    for (path, file) in files {
        hash.update(path.as_bytes());
        hash.update([0, u8::from(file.executable)]);
        hash.update((file.contents.len() as u64).to_be_bytes());
        hash.update(&file.contents);
    }
    hex40(&hash.finalize())
}

/// The first 20 bytes as 40 lowercase hex digits, like a git SHA-1.
fn hex40(digest: &[u8]) -> String {
    digest[..20].iter().map(|b| format!("{b:02x}")).collect()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn random_alnum(n: usize) -> String {
    use rand::Rng as _;
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..n)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

fn request_id() -> String {
    let r: [u16; 5] = rand::random();
    format!(
        "{:04X}:{:04X}:{:04X}{:04X}:{:04X}",
        r[0], r[1], r[2], r[3], r[4]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_and_pax_records() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_302_796_849), "2011-04-14T16:00:49Z");
        assert_eq!(rfc3339(1_709_164_800), "2024-02-29T00:00:00Z");
        let record = pax_record("comment", &"a".repeat(40));
        assert_eq!(record.len(), 52);
        assert!(record.starts_with(b"52 comment=aaaa"));
        assert_eq!(pax_record("k", "v"), b"6 k=v\n");
        assert_eq!(percent_decode("fix%2312%25/x%zz"), "fix#12%/x%zz");
    }

    #[test]
    fn auth_kinds() {
        let kind = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert("authorization", v.parse().unwrap());
            AuthKind::of(&h)
        };
        assert_eq!(AuthKind::of(&HeaderMap::new()), AuthKind::None);
        assert_eq!(kind("Bearer a.b.c"), AuthKind::Jwt);
        assert_eq!(kind("Bearer ghs_x"), AuthKind::Token);
        assert_eq!(kind("token ghs_x"), AuthKind::Token);
        assert_eq!(kind("Basic eDp5"), AuthKind::Other);
    }

    #[test]
    fn refs_resolve_like_git() {
        let mut repo = Repo {
            id: 1,
            owner: "acme".into(),
            name: "hello".into(),
            private: false,
            default_branch: "main".into(),
            branches: BTreeMap::new(),
            commits: HashMap::new(),
            created: 0,
            reports: Reports::default(),
        };
        for (sha, branch) in [("abcd1111", "main"), ("abcd2222", "dev")] {
            let sha = format!("{sha}{}", "0".repeat(32));
            repo.commits.insert(
                sha.clone(),
                StoredCommit {
                    sha: sha.clone(),
                    parents: vec![],
                    message: String::new(),
                    author: Author::default(),
                    date: 0,
                    tree: String::new(),
                    files: BTreeMap::new(),
                },
            );
            repo.branches.insert(branch.into(), vec![sha]);
        }
        let sha = |r: &str| repo.resolve(r).map(|c| c.sha[..8].to_owned());
        assert_eq!(sha("main").as_deref(), Some("abcd1111"));
        assert_eq!(sha("heads/dev").as_deref(), Some("abcd2222"));
        assert_eq!(sha("refs/heads/dev").as_deref(), Some("abcd2222"));
        assert_eq!(sha("abcd2").as_deref(), Some("abcd2222"));
        assert_eq!(sha("ABCD1").as_deref(), Some("abcd1111"));
        assert_eq!(sha("abcd"), None, "ambiguous");
        assert_eq!(sha("heads/nope"), None);
        assert_eq!(sha("nope"), None);
    }

    /// An RS256 JSON web token with these claims, signed with `pem`.
    fn jwt(pem: &str, claims: &Value) -> String {
        let key = key_pair(pem);
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut signature = vec![0; key.public().modulus_len()];
        key.sign(
            &ring::signature::RSA_PKCS1_SHA256,
            &ring::rand::SystemRandom::new(),
            signed.as_bytes(),
            &mut signature,
        )
        .unwrap();
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    #[tokio::test]
    async fn answers_like_github() {
        let fake = FakeGitHub::start().await.unwrap();
        fake.add_app(1, &test_app_public_key_der())
            .add_installation(2, 1, &["acme/private"])
            .add_repo("acme/hello", RepoOpts::default())
            .add_repo(
                "acme/private",
                RepoOpts {
                    private: true,
                    ..RepoOpts::default()
                },
            );
        let sha = fake.push("acme/hello", "main", CommitSpec::new("hi").file("a", "b"));
        fake.push("acme/private", "main", CommitSpec::new("hi"));
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let url = |path: &str| format!("{}{path}", fake.url());
        let get = |path: &str| http.get(url(path)).header("user-agent", "test");

        // GitHub refuses requests without User-Agent.
        let r = http.get(url("/repos/acme/hello")).send().await.unwrap();
        assert_eq!(r.status(), 403);

        let r = get("/repos/acme/hello").send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers().contains_key("x-github-request-id"));
        assert_eq!(r.headers()["x-ratelimit-limit"], "60");
        assert_eq!(r.headers()["x-ratelimit-remaining"], "59");
        let body: Value = r.json().await.unwrap();
        assert_eq!(
            (
                &body["full_name"],
                &body["private"],
                &body["default_branch"]
            ),
            (&json!("acme/hello"), &json!(false), &json!("main"))
        );

        // Tarball: a redirect to codeload, which streams unless told otherwise.
        let r = get("/repos/acme/hello/tarball/main").send().await.unwrap();
        assert_eq!(r.status(), 302);
        let location = r.headers()["location"].to_str().unwrap().to_owned();
        assert_eq!(
            location,
            url(&format!("/_codeload/acme/hello/legacy.tar.gz/{sha}"))
        );
        let r = http
            .get(&location)
            .header("user-agent", "t")
            .send()
            .await
            .unwrap();
        assert_eq!((r.status().as_u16(), r.content_length()), (200, None));
        fake.set_codeload_content_length(true);
        let r = http
            .get(&location)
            .header("user-agent", "t")
            .send()
            .await
            .unwrap();
        let length = r.content_length().unwrap();
        assert_eq!(r.bytes().await.unwrap().len() as u64, length);

        // Private: hidden without a token; codeload wants the URL's token.
        let r = get("/repos/acme/private").send().await.unwrap();
        assert_eq!(r.status(), 404);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["message"], "Not Found");

        // JSON web tokens are checked like GitHub does.
        let now = now_secs();
        let mint = |jwt: String| {
            http.post(url("/app/installations/2/access_tokens"))
                .header("user-agent", "test")
                .bearer_auth(jwt)
                .send()
        };
        let message = |r: reqwest::Response| async move {
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap();
            (status, body["message"].as_str().unwrap_or("").to_owned())
        };
        let claims = |iat: i64, exp: i64| json!({"iat": iat, "exp": exp, "iss": "1"});
        let (status, text) = message(
            mint(jwt(TEST_APP_KEY_PEM, &claims(now - 700, now - 100)))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 401);
        assert!(
            text.starts_with("'Expiration time' claim ('exp') must be"),
            "{text}"
        );
        let (status, text) = message(
            mint(jwt(TEST_APP_KEY_PEM, &claims(now, now + 3600)))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            (status, text.as_str()),
            (
                401,
                "'Expiration time' claim ('exp') is too far in the future"
            )
        );
        let (status, text) = message(
            mint(jwt(OTHER_TEST_APP_KEY_PEM, &claims(now - 60, now + 540)))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!((status, text.as_str()), (401, JWT_UNDECODABLE));
        let r = mint(jwt(TEST_APP_KEY_PEM, &claims(now - 60, now + 540)))
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let body: Value = r.json().await.unwrap();
        let token = body["token"].as_str().unwrap().to_owned();
        assert!(token.starts_with("ghs_") && token.len() == 40, "{token}");
        assert_eq!(body["expires_at"].as_str().unwrap().len(), 20);

        // The token reads the private repository; codeload needs the URL token.
        let r = get("/repos/acme/private")
            .header("authorization", format!("token {token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            (
                r.status().as_u16(),
                r.headers()["x-ratelimit-limit"].to_str().unwrap()
            ),
            (200, "5000")
        );
        let r = get("/repos/acme/private/tarball")
            .header("authorization", format!("Bearer {token}"))
            .send()
            .await
            .unwrap();
        let location = r.headers()["location"].to_str().unwrap().to_owned();
        assert!(location.contains("?token="), "{location}");
        let r = http
            .get(&location)
            .header("user-agent", "t")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let bare = location.split('?').next().unwrap();
        let r = http
            .get(bare)
            .header("user-agent", "t")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        let r = get("/repos/acme/hello")
            .header("authorization", "token ghs_nope")
            .send()
            .await
            .unwrap();
        assert_eq!(message(r).await, (401, "Bad credentials".to_owned()));

        let recorded = fake.requests();
        assert_eq!(recorded[0].status, 403);
        assert!(
            recorded
                .iter()
                .any(|r| r.authorization_kind == AuthKind::Jwt && r.status == 201)
        );
    }
}
