//! What a deployment reports back through: deployments and their statuses,
//! commit statuses, and comments on pull requests.
//!
//! Every endpoint here needs an installation token of an installation that
//! includes the repository — public or private — else `404` (`401` for
//! unknown or expired tokens), and the installation's permission for it
//! (see [`FakeGitHub::deny_permission`]), else `403`.

use std::collections::BTreeMap;

use axum::http::{HeaderMap, Method};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};

use super::{
    FakeGitHub, Identity, Installation, Reply, ReplyBody, State, identify, now_secs, rfc3339,
    with_headers,
};

/// A deployment created through `POST /repos/{owner}/{repo}/deployments`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeDeployment {
    /// GitHub's id.
    pub id: u64,
    /// The commit the `ref` resolved to.
    pub sha: String,
    /// The environment's name.
    pub environment: String,
    /// Its description.
    pub description: String,
    /// `transient_environment`.
    pub transient: bool,
    /// `production_environment` (GitHub's default: whether the environment
    /// is `production`).
    pub production: bool,
    /// Its statuses, oldest first, including the `inactive` ones GitHub adds
    /// for `auto_inactive`.
    pub statuses: Vec<FakeDeploymentStatus>,
}

/// A status of a [`FakeDeployment`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeDeploymentStatus {
    /// `queued`, `in_progress`, `success`, ….
    pub state: String,
    /// Its description (`""` when none was sent).
    pub description: String,
    /// `log_url` (or the older `target_url`).
    pub log_url: Option<String>,
    /// `environment_url`.
    pub environment_url: Option<String>,
}

/// A commit status created through `POST /repos/{owner}/{repo}/statuses/{sha}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeCommitStatus {
    /// `pending`, `success`, `failure` or `error`.
    pub state: String,
    /// Its context (GitHub's default: `default`).
    pub context: String,
    /// Its description (`""` when none was sent).
    pub description: String,
    /// `target_url`.
    pub target_url: Option<String>,
}

/// A comment on a pull request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeComment {
    /// GitHub's id.
    pub id: u64,
    /// Its current body.
    pub body: String,
    /// How many times `PATCH` changed it.
    pub edits: u32,
    /// Its author's login: `{app slug}[bot]` for an app's comments.
    pub author: String,
}

/// A repository's reports.
#[derive(Default)]
pub(super) struct Reports {
    deployments: Vec<StoredDeployment>,
    statuses: Vec<StoredStatus>,
    /// Pull request numbers.
    pulls: std::collections::BTreeSet<u64>,
    comments: Vec<StoredComment>,
}

impl Reports {
    /// The deployments, oldest first, with their statuses.
    pub(super) fn deployments(&self) -> Vec<FakeDeployment> {
        self.deployments
            .iter()
            .map(|d| d.deployment.clone())
            .collect()
    }

    /// The statuses of commit `sha`, oldest first.
    pub(super) fn commit_statuses(&self, sha: &str) -> Vec<FakeCommitStatus> {
        let sha = sha.to_ascii_lowercase();
        self.statuses
            .iter()
            .filter(|s| s.sha == sha)
            .map(|s| s.status.clone())
            .collect()
    }

    /// The comments on pull request `number`, oldest first.
    pub(super) fn comments(&self, number: u64) -> Vec<FakeComment> {
        self.comments
            .iter()
            .filter(|c| c.issue == number)
            .map(|c| c.comment.clone())
            .collect()
    }

    /// Declares pull request `number`; whether it is new.
    pub(super) fn open_pull_request(&mut self, number: u64) -> bool {
        self.pulls.insert(number)
    }
}

struct StoredDeployment {
    deployment: FakeDeployment,
    reference: String,
    creator: Actor,
    created: i64,
}

struct StoredStatus {
    sha: String,
    status: FakeCommitStatus,
}

struct StoredComment {
    comment: FakeComment,
    issue: u64,
    user: Actor,
    created: i64,
    updated: i64,
}

/// Who wrote something.
#[derive(Clone)]
enum Actor {
    App { id: u64, slug: String },
    User(String),
}

impl Actor {
    fn login(&self) -> String {
        match self {
            Self::App { slug, .. } => format!("{slug}[bot]"),
            Self::User(login) => login.clone(),
        }
    }

    fn json(&self, base: &str) -> Value {
        let login = self.login();
        let (id, kind, avatar, html) = match self {
            Self::App { id, slug } => (
                41_000_000 + id,
                "Bot",
                format!("https://avatars.githubusercontent.com/in/{id}?v=4"),
                format!("https://github.com/apps/{slug}"),
            ),
            Self::User(login) => (
                583_231,
                "User",
                "https://avatars.githubusercontent.com/u/583231?v=4".to_owned(),
                format!("https://github.com/{login}"),
            ),
        };
        json!({
            "login": login,
            "id": id,
            "node_id": STANDARD.encode(format!("04:User{id}")),
            "avatar_url": avatar,
            "url": format!("{base}/users/{}", login.replace('[', "%5B").replace(']', "%5D")),
            "html_url": html,
            "type": kind,
            "site_admin": false,
        })
    }

    /// `performed_via_github_app`.
    fn app_json(&self) -> Value {
        match self {
            Self::App { id, slug } => json!({
                "id": id,
                "slug": slug,
                "name": slug,
                "html_url": format!("https://github.com/apps/{slug}"),
            }),
            Self::User(_) => Value::Null,
        }
    }
}

/// A request to one of these endpoints.
pub(super) struct Request<'a> {
    pub(super) method: &'a Method,
    pub(super) query: &'a str,
    pub(super) headers: &'a HeaderMap,
    pub(super) body: &'a [u8],
}

const DOCS_DEPLOYMENTS: &str = "/deployments/deployments#create-a-deployment";
const DOCS_DEPLOYMENT_STATUSES: &str = "/deployments/statuses#create-a-deployment-status";
const DOCS_COMMIT_STATUSES: &str = "/commits/statuses#create-a-commit-status";
const DOCS_LIST_COMMENTS: &str = "/issues/comments#list-issue-comments";
const DOCS_CREATE_COMMENT: &str = "/issues/comments#create-an-issue-comment";
const DOCS_UPDATE_COMMENT: &str = "/issues/comments#update-an-issue-comment";

const DEPLOYMENT_STATES: &[&str] = &[
    "error",
    "failure",
    "inactive",
    "in_progress",
    "queued",
    "pending",
    "success",
];
const COMMIT_STATES: &[&str] = &["error", "failure", "pending", "success"];
const MAX_DESCRIPTION: usize = 140;
const MAX_COMMENT: usize = 65_536;

/// Whether `rest` (after `/repos/{owner}/{repo}/`) is served here.
pub(super) fn is_report(method: &Method, rest: &[&str]) -> bool {
    matches!(
        (method, rest),
        (
            &Method::POST,
            ["deployments"] | ["deployments", _, "statuses"] | ["statuses", _]
        ) | (&Method::GET | &Method::POST, ["issues", _, "comments"])
            | (&Method::PATCH, ["issues", "comments", _])
    )
}

/// An installation token's `permissions`.
pub(super) fn permissions(installation: &Installation) -> Value {
    let mut permissions = Map::new();
    for (name, level) in [
        ("contents", "read"),
        ("metadata", "read"),
        ("deployments", "write"),
        ("statuses", "write"),
        ("issues", "write"),
        ("pull_requests", "write"),
    ] {
        if !installation.denied.contains(name) {
            permissions.insert(name.to_owned(), level.into());
        }
    }
    Value::Object(permissions)
}

/// Serves `rest` of the repository `full_name` (any case).
pub(super) fn route(state: &mut State, full_name: &str, rest: &[&str], req: &Request<'_>) -> Reply {
    let docs = match (req.method, rest) {
        (_, ["deployments"]) => DOCS_DEPLOYMENTS,
        (_, ["deployments", ..]) => DOCS_DEPLOYMENT_STATUSES,
        (_, ["statuses", ..]) => DOCS_COMMIT_STATUSES,
        (&Method::GET, _) => DOCS_LIST_COMMENTS,
        (&Method::POST, _) => DOCS_CREATE_COMMENT,
        _ => DOCS_UPDATE_COMMENT,
    };
    let (identity, limits) = match identify(state, req.headers) {
        Ok(found) => found,
        Err(reply) => return reply,
    };
    let key = full_name.to_ascii_lowercase();
    let installation = match identity {
        Identity::Installation(id) if state.repos.contains_key(&key) => state
            .installations
            .get(&id)
            .filter(|i| i.repos.contains(&key))
            .map(|i| (id, i)),
        _ => None,
    };
    // Writes need an installation that includes the repository, even a
    // public one; GitHub hides what the caller may not touch.
    let Some((_, installation)) = installation else {
        return with_headers(Reply::not_found(docs), limits);
    };
    let allowed = match rest.first() {
        Some(&"deployments") => !installation.denied.contains("deployments"),
        Some(&"statuses") => !installation.denied.contains("statuses"),
        // Pull request comments: either permission will do.
        _ => {
            !(installation.denied.contains("issues")
                && installation.denied.contains("pull_requests"))
        }
    };
    if !allowed {
        return with_headers(
            Reply::error(403, "Resource not accessible by integration", docs),
            limits,
        );
    }
    let app_id = installation.app_id;
    let actor = Actor::App {
        id: app_id,
        slug: state
            .apps
            .get(&app_id)
            .map_or_else(|| format!("app-{app_id}"), |a| a.slug.clone()),
    };
    let reply = match (req.method, rest) {
        (&Method::POST, ["deployments"]) => create_deployment(state, &key, &actor, req.body),
        (&Method::POST, ["deployments", id, "statuses"]) => {
            create_deployment_status(state, &key, &actor, id, req.body)
        }
        (&Method::POST, ["statuses", sha]) => {
            create_commit_status(state, &key, &actor, sha, req.body)
        }
        (&Method::GET, ["issues", number, "comments"]) => {
            list_comments(state, &key, number, req.query)
        }
        (&Method::POST, ["issues", number, "comments"]) => {
            create_comment(state, &key, &actor, number, req.body)
        }
        (&Method::PATCH, ["issues", "comments", id]) => update_comment(state, &key, id, req.body),
        _ => Err(Reply::not_found("")),
    };
    with_headers(reply.unwrap_or_else(|reply| reply), limits)
}

fn next_id(state: &mut State, base: u64) -> u64 {
    state.next_id += 1;
    base + state.next_id
}

/// The request's JSON object, or GitHub's `400`.
fn object(body: &[u8], docs: &str) -> Result<Map<String, Value>, Reply> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(Reply::error(400, "Problems parsing JSON", docs)),
    }
}

/// GitHub's `422` for a body its schema refuses.
fn invalid(docs: &str, why: &str) -> Reply {
    Reply::error(422, &format!("Invalid request.\n\n{why}"), docs)
}

fn required(docs: &str, name: &str) -> Reply {
    invalid(docs, &format!("\"{name}\" wasn't supplied."))
}

/// GitHub's `422 Validation Failed` with one of its `errors`.
fn validation_failed(docs: &str, error: Value) -> Reply {
    let mut reply = Reply::error(422, "Validation Failed", docs);
    if let ReplyBody::Json(body) = &mut reply.body {
        body["errors"] = Value::Array(vec![error]);
    }
    reply
}

fn too_long(docs: &str, resource: &str, field: &str, max: usize) -> Reply {
    validation_failed(
        docs,
        json!({
            "resource": resource,
            "code": "custom",
            "field": field,
            "message": format!("{field} is too long (maximum is {max} characters)"),
        }),
    )
}

/// A string field; `None` when absent or `null`.
fn string<'a>(
    map: &'a Map<String, Value>,
    name: &str,
    docs: &str,
) -> Result<Option<&'a str>, Reply> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(invalid(
            docs,
            &format!("For 'properties/{name}', {other} is not a string."),
        )),
    }
}

/// A boolean field; `None` when absent or `null`.
fn boolean(map: &Map<String, Value>, name: &str, docs: &str) -> Result<Option<bool>, Reply> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(invalid(
            docs,
            &format!("For 'properties/{name}', {other} is not a boolean."),
        )),
    }
}

/// A required field that must be one of `allowed`.
fn one_of<'a>(
    map: &'a Map<String, Value>,
    name: &str,
    allowed: &[&str],
    docs: &str,
) -> Result<&'a str, Reply> {
    let value = string(map, name, docs)?.ok_or_else(|| required(docs, name))?;
    if allowed.contains(&value) {
        return Ok(value);
    }
    let list: Vec<String> = allowed.iter().map(|a| format!("\"{a}\"")).collect();
    Err(invalid(
        docs,
        &format!(
            "For 'properties/{name}', \"{value}\" is not one of [{}].",
            list.join(", ")
        ),
    ))
}

fn description(map: &Map<String, Value>, resource: &str, docs: &str) -> Result<String, Reply> {
    let text = string(map, "description", docs)?.unwrap_or("");
    if text.chars().count() > MAX_DESCRIPTION {
        return Err(too_long(docs, resource, "description", MAX_DESCRIPTION));
    }
    Ok(text.to_owned())
}

fn create_deployment(
    state: &mut State,
    key: &str,
    actor: &Actor,
    body: &[u8],
) -> Result<Reply, Reply> {
    let docs = DOCS_DEPLOYMENTS;
    let map = object(body, docs)?;
    let reference = string(&map, "ref", docs)?.ok_or_else(|| required(docs, "ref"))?;
    let environment =
        string(&map, "environment", docs)?.ok_or_else(|| required(docs, "environment"))?;
    if environment.trim().is_empty() {
        return Err(validation_failed(
            docs,
            json!({"resource": "Deployment", "code": "missing_field", "field": "environment"}),
        ));
    }
    let description = string(&map, "description", docs)?.unwrap_or("").to_owned();
    let transient = boolean(&map, "transient_environment", docs)?.unwrap_or(false);
    let production =
        boolean(&map, "production_environment", docs)?.unwrap_or(environment == "production");
    boolean(&map, "auto_merge", docs)?;
    let required_contexts = match map.get("required_contexts") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .map(|c| c.as_str().map(str::to_owned))
                .collect::<Option<Vec<String>>>()
                .ok_or_else(|| {
                    invalid(
                        docs,
                        "For 'items', the elements of 'properties/required_contexts' must be strings.",
                    )
                })?,
        ),
        Some(other) => {
            return Err(invalid(
                docs,
                &format!("For 'properties/required_contexts', {other} is not an array."),
            ));
        }
    };
    let repo = &state.repos[key];
    let Some(commit) = repo.resolve(reference) else {
        return Err(Reply::error(
            422,
            &format!("No ref found for: {reference}"),
            docs,
        ));
    };
    let sha = commit.sha.clone();
    // Without `required_contexts` GitHub wants every context of the commit
    // to have succeeded; with it, exactly those.
    let mut latest: BTreeMap<&str, &str> = BTreeMap::new();
    for s in repo.reports.statuses.iter().filter(|s| s.sha == sha) {
        latest.insert(&s.status.context, &s.status.state);
    }
    let checked: Vec<(String, String)> = match &required_contexts {
        None => latest
            .iter()
            .map(|(c, s)| ((*c).to_owned(), (*s).to_owned()))
            .collect(),
        Some(contexts) => contexts
            .iter()
            .map(|c| {
                let state = latest.get(c.as_str()).copied().unwrap_or("missing");
                (c.clone(), state.to_owned())
            })
            .collect(),
    };
    if checked.iter().any(|(_, s)| s != "success") {
        let mut reply = Reply::error(
            409,
            &format!("Conflict: Commit status checks failed for {reference}."),
            docs,
        );
        if let ReplyBody::Json(body) = &mut reply.body {
            body["errors"] = json!([{
                "contexts": checked
                    .iter()
                    .map(|(c, s)| json!({"context": c, "state": s}))
                    .collect::<Vec<_>>(),
                "resource": "Deployment",
                "field": "required_contexts",
                "code": "invalid",
            }]);
        }
        return Err(reply);
    }
    let reference = reference.to_owned();
    let environment = environment.to_owned();
    let id = next_id(state, 1_000_000);
    let stored = StoredDeployment {
        deployment: FakeDeployment {
            id,
            sha,
            environment,
            description,
            transient,
            production,
            statuses: Vec::new(),
        },
        reference,
        creator: actor.clone(),
        created: now_secs(),
    };
    let json = deployment_json(&state.base_url, &state.repos[key].full_name(), &stored);
    state
        .repos
        .get_mut(key)
        .expect("the repository exists")
        .reports
        .deployments
        .push(stored);
    Ok(Reply::json(201, json))
}

fn deployment_json(base: &str, full_name: &str, d: &StoredDeployment) -> Value {
    let FakeDeployment {
        id,
        sha,
        environment,
        description,
        transient,
        production,
        ..
    } = &d.deployment;
    json!({
        "url": format!("{base}/repos/{full_name}/deployments/{id}"),
        "id": id,
        "node_id": STANDARD.encode(format!("010:Deployment{id}")),
        "sha": sha,
        "ref": d.reference,
        "task": "deploy",
        "payload": {},
        "original_environment": environment,
        "environment": environment,
        "description": description,
        "creator": d.creator.json(base),
        "created_at": rfc3339(d.created),
        "updated_at": rfc3339(d.created),
        "statuses_url": format!("{base}/repos/{full_name}/deployments/{id}/statuses"),
        "repository_url": format!("{base}/repos/{full_name}"),
        "transient_environment": transient,
        "production_environment": production,
        "performed_via_github_app": d.creator.app_json(),
    })
}

fn create_deployment_status(
    state: &mut State,
    key: &str,
    actor: &Actor,
    id: &str,
    body: &[u8],
) -> Result<Reply, Reply> {
    let docs = DOCS_DEPLOYMENT_STATUSES;
    let id = id.parse::<u64>().ok().filter(|id| {
        state.repos[key]
            .reports
            .deployments
            .iter()
            .any(|d| d.deployment.id == *id)
    });
    let Some(id) = id else {
        return Err(Reply::not_found(docs));
    };
    let map = object(body, docs)?;
    let new_state = one_of(&map, "state", DEPLOYMENT_STATES, docs)?.to_owned();
    let description = description(&map, "DeploymentStatus", docs)?;
    let log_url = match string(&map, "log_url", docs)? {
        Some(url) => Some(url),
        None => string(&map, "target_url", docs)?,
    }
    .map(str::to_owned);
    let environment_url = string(&map, "environment_url", docs)?.map(str::to_owned);
    let environment = string(&map, "environment", docs)?
        .filter(|e| !e.trim().is_empty())
        .map(str::to_owned);
    let auto_inactive = boolean(&map, "auto_inactive", docs)?.unwrap_or(true);
    let status_id = next_id(state, 2_000_000);
    let now = now_secs();
    let base = state.base_url.clone();
    let repo = state.repos.get_mut(key).expect("the repository exists");
    let full_name = repo.full_name();
    let deployments = &mut repo.reports.deployments;
    let at = deployments
        .iter()
        .position(|d| d.deployment.id == id)
        .expect("checked above");
    if let Some(environment) = environment {
        deployments[at].deployment.environment = environment;
    }
    let status = FakeDeploymentStatus {
        state: new_state.clone(),
        description,
        log_url,
        environment_url,
    };
    deployments[at].deployment.statuses.push(status.clone());
    // `auto_inactive`: earlier successful deployments to the same lasting,
    // non-production environment are marked inactive.
    if auto_inactive && new_state == "success" {
        let environment = deployments[at].deployment.environment.clone();
        for d in deployments.iter_mut().map(|d| &mut d.deployment) {
            let last = d.statuses.last().map(|s| s.state.as_str());
            if d.id < id
                && d.environment == environment
                && !d.transient
                && !d.production
                && last == Some("success")
            {
                d.statuses.push(FakeDeploymentStatus {
                    state: "inactive".to_owned(),
                    description: String::new(),
                    log_url: None,
                    environment_url: None,
                });
            }
        }
    }
    let environment = &deployments[at].deployment.environment;
    let url = |u: &Option<String>| u.clone().unwrap_or_default();
    Ok(Reply::json(
        201,
        json!({
            "url": format!("{base}/repos/{full_name}/deployments/{id}/statuses/{status_id}"),
            "id": status_id,
            "node_id": STANDARD.encode(format!("016:DeploymentStatus{status_id}")),
            "state": status.state,
            "creator": actor.json(&base),
            "description": status.description,
            "environment": environment,
            "target_url": url(&status.log_url),
            "log_url": url(&status.log_url),
            "environment_url": url(&status.environment_url),
            "created_at": rfc3339(now),
            "updated_at": rfc3339(now),
            "deployment_url": format!("{base}/repos/{full_name}/deployments/{id}"),
            "repository_url": format!("{base}/repos/{full_name}"),
            "performed_via_github_app": actor.app_json(),
        }),
    ))
}

fn create_commit_status(
    state: &mut State,
    key: &str,
    actor: &Actor,
    sha: &str,
    body: &[u8],
) -> Result<Reply, Reply> {
    let docs = DOCS_COMMIT_STATUSES;
    let map = object(body, docs)?;
    let sha = sha.to_ascii_lowercase();
    if !state.repos[key].commits.contains_key(&sha) {
        return Err(Reply::error(
            422,
            &format!("No commit found for SHA: {sha}"),
            docs,
        ));
    }
    let new_state = one_of(&map, "state", COMMIT_STATES, docs)?.to_owned();
    let description = description(&map, "Status", docs)?;
    let context = string(&map, "context", docs)?
        .filter(|c| !c.is_empty())
        .unwrap_or("default")
        .to_owned();
    let target_url = string(&map, "target_url", docs)?.map(str::to_owned);
    let id = next_id(state, 3_000_000);
    let now = now_secs();
    let base = &state.base_url;
    let repo = state.repos.get_mut(key).expect("the repository exists");
    let status = FakeCommitStatus {
        state: new_state,
        context,
        description,
        target_url,
    };
    repo.reports.statuses.push(StoredStatus {
        sha: sha.clone(),
        status: status.clone(),
    });
    let creator = actor.json(base);
    Ok(Reply::json(
        201,
        json!({
            "url": format!("{base}/repos/{}/statuses/{sha}", repo.full_name()),
            "avatar_url": creator["avatar_url"],
            "id": id,
            "node_id": STANDARD.encode(format!("011:StatusContext{id}")),
            "state": status.state,
            "description": status.description,
            "target_url": status.target_url,
            "context": status.context,
            "created_at": rfc3339(now),
            "updated_at": rfc3339(now),
            "creator": creator,
        }),
    ))
}

/// The pull request `number` of the repository, or `404`.
fn pull_request(state: &State, key: &str, number: &str, docs: &str) -> Result<u64, Reply> {
    number
        .parse::<u64>()
        .ok()
        .filter(|n| state.repos[key].reports.pulls.contains(n))
        .ok_or_else(|| Reply::not_found(docs))
}

fn comment_json(base: &str, full_name: &str, c: &StoredComment) -> Value {
    let FakeComment { id, body, .. } = &c.comment;
    let issue = c.issue;
    json!({
        "url": format!("{base}/repos/{full_name}/issues/comments/{id}"),
        "html_url": format!("https://github.com/{full_name}/pull/{issue}#issuecomment-{id}"),
        "issue_url": format!("{base}/repos/{full_name}/issues/{issue}"),
        "id": id,
        "node_id": STANDARD.encode(format!("012:IssueComment{id}")),
        "user": c.user.json(base),
        "created_at": rfc3339(c.created),
        "updated_at": rfc3339(c.updated),
        "author_association": "NONE",
        "body": body,
        "performed_via_github_app": c.user.app_json(),
    })
}

fn list_comments(state: &State, key: &str, number: &str, query: &str) -> Result<Reply, Reply> {
    let docs = DOCS_LIST_COMMENTS;
    let number = pull_request(state, key, number, docs)?;
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|v| *v > 0)
    };
    let per_page = param("per_page").unwrap_or(30).min(100);
    let page = param("page").unwrap_or(1);
    let repo = &state.repos[key];
    let full_name = repo.full_name();
    let comments: Vec<&StoredComment> = repo
        .reports
        .comments
        .iter()
        .filter(|c| c.issue == number)
        .collect();
    let last = comments.len().div_ceil(per_page).max(1);
    let items: Vec<Value> = comments
        .iter()
        .skip((page - 1).saturating_mul(per_page))
        .take(per_page)
        .map(|c| comment_json(&state.base_url, &full_name, c))
        .collect();
    let mut reply = Reply::json(200, Value::Array(items));
    // GitHub's links name the repository by id.
    let link = |page: usize, rel: &str| {
        format!(
            "<{}/repositories/{}/issues/{number}/comments?per_page={per_page}&page={page}>; rel=\"{rel}\"",
            state.base_url, repo.id
        )
    };
    let mut links = Vec::new();
    if page > 1 {
        links.push(link(page - 1, "prev"));
    }
    if page < last {
        links.push(link(page + 1, "next"));
        links.push(link(last, "last"));
    }
    if page > 1 {
        links.push(link(1, "first"));
    }
    if !links.is_empty() {
        reply = reply.header("link", links.join(", "));
    }
    Ok(reply)
}

/// A comment's body, checked like GitHub does.
fn comment_body(map: &Map<String, Value>, docs: &str) -> Result<String, Reply> {
    let body = string(map, "body", docs)?.ok_or_else(|| required(docs, "body"))?;
    if body.trim().is_empty() {
        return Err(validation_failed(
            docs,
            json!({"resource": "IssueComment", "code": "missing_field", "field": "body"}),
        ));
    }
    if body.chars().count() > MAX_COMMENT {
        return Err(too_long(docs, "IssueComment", "body", MAX_COMMENT));
    }
    Ok(body.to_owned())
}

fn create_comment(
    state: &mut State,
    key: &str,
    actor: &Actor,
    number: &str,
    body: &[u8],
) -> Result<Reply, Reply> {
    let docs = DOCS_CREATE_COMMENT;
    let number = pull_request(state, key, number, docs)?;
    let text = comment_body(&object(body, docs)?, docs)?;
    let stored = add_comment(state, key, number, actor.clone(), text);
    Ok(Reply::json(201, stored))
}

/// Stores a comment and returns its JSON.
fn add_comment(state: &mut State, key: &str, issue: u64, user: Actor, body: String) -> Value {
    let id = next_id(state, 4_000_000);
    let now = now_secs();
    let stored = StoredComment {
        comment: FakeComment {
            id,
            body,
            edits: 0,
            author: user.login(),
        },
        issue,
        user,
        created: now,
        updated: now,
    };
    let repo = state.repos.get_mut(key).expect("the repository exists");
    let json = comment_json(&state.base_url, &repo.full_name(), &stored);
    repo.reports.comments.push(stored);
    json
}

fn update_comment(state: &mut State, key: &str, id: &str, body: &[u8]) -> Result<Reply, Reply> {
    let docs = DOCS_UPDATE_COMMENT;
    let repo = state.repos.get_mut(key).expect("the repository exists");
    let comment = id.parse::<u64>().ok().and_then(|id| {
        repo.reports
            .comments
            .iter_mut()
            .find(|c| c.comment.id == id)
    });
    let Some(comment) = comment else {
        return Err(Reply::not_found(docs));
    };
    let text = comment_body(&object(body, docs)?, docs)?;
    comment.comment.body = text;
    comment.comment.edits += 1;
    comment.updated = now_secs();
    let full_name = format!("{}/{}", repo.owner, repo.name);
    Ok(Reply::json(
        200,
        comment_json(&state.base_url, &full_name, comment),
    ))
}

impl FakeGitHub {
    /// Opens pull request `number` in the repository, so its comments can be
    /// listed and written. (GitHub numbers issues and pull requests alike;
    /// numbers not declared here answer `404`.)
    pub fn add_pull_request(&self, full_name: &str, number: u64) -> &Self {
        let mut state = self.state();
        let repo = state
            .repos
            .get_mut(&full_name.to_ascii_lowercase())
            .unwrap_or_else(|| panic!("pull request in unknown repository {full_name}"));
        repo.reports.open_pull_request(number);
        self
    }

    /// Adds a comment by the user `login` to pull request `number` (declared
    /// with [`add_pull_request`](Self::add_pull_request)) and returns its id.
    pub fn add_comment(&self, full_name: &str, number: u64, login: &str, body: &str) -> u64 {
        let mut state = self.state();
        let key = full_name.to_ascii_lowercase();
        let known = state
            .repos
            .get(&key)
            .is_some_and(|r| r.reports.pulls.contains(&number));
        assert!(known, "no pull request #{number} in {full_name}");
        let json = add_comment(
            &mut state,
            &key,
            number,
            Actor::User(login.to_owned()),
            body.to_owned(),
        );
        json["id"].as_u64().expect("a comment id")
    }

    /// Takes a permission (GitHub's name: `deployments`, `statuses`,
    /// `issues`, `pull_requests`) away from an installation: its requests
    /// that need it answer `403 Resource not accessible by integration`.
    /// Pull request comments need `issues` or `pull_requests`, so both must
    /// be denied to refuse them.
    pub fn deny_permission(&self, installation_id: u64, permission: &str) -> &Self {
        self.state()
            .installations
            .get_mut(&installation_id)
            .unwrap_or_else(|| panic!("unknown installation {installation_id}"))
            .denied
            .insert(permission.to_owned());
        self
    }

    /// The repository's deployments, oldest first, with their statuses.
    pub fn deployments(&self, full_name: &str) -> Vec<FakeDeployment> {
        self.with_reports(full_name, Reports::deployments)
    }

    /// The statuses of commit `sha`, oldest first.
    pub fn commit_statuses(&self, full_name: &str, sha: &str) -> Vec<FakeCommitStatus> {
        self.with_reports(full_name, |r| r.commit_statuses(sha))
    }

    /// The comments on pull request `number`, oldest first.
    pub fn comments(&self, full_name: &str, number: u64) -> Vec<FakeComment> {
        self.with_reports(full_name, |r| r.comments(number))
    }

    fn with_reports<T>(&self, full_name: &str, f: impl FnOnce(&Reports) -> T) -> T {
        let state = self.state();
        let repo = state
            .repos
            .get(&full_name.to_ascii_lowercase())
            .unwrap_or_else(|| panic!("unknown repository {full_name}"));
        f(&repo.reports)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::super::{CommitSpec, FakeGitHub, IssuedToken, RepoOpts, test_app_public_key_der};
    use crate::clock::now_secs;

    /// A fake with app 1 installed (installation 2) on `acme/hello`, a commit
    /// on it and pull request 5; and a token of the installation.
    async fn fake() -> (FakeGitHub, String, String) {
        let fake = FakeGitHub::start().await.unwrap();
        fake.add_app(1, &test_app_public_key_der())
            .set_app_slug(1, "ctrl")
            .add_installation(2, 1, &["acme/hello"])
            .add_repo("acme/hello", RepoOpts::default())
            .add_repo("acme/other", RepoOpts::default())
            .add_pull_request("acme/hello", 5);
        let sha = fake.push("acme/hello", "main", CommitSpec::new("hi"));
        let token = "ghs_reportsreportsreportsreportsreports".to_owned();
        fake.state().tokens.insert(
            token.clone(),
            IssuedToken {
                installation_id: 2,
                expires_at: now_secs() + 3600,
            },
        );
        (fake, sha, token)
    }

    struct Http<'a> {
        fake: &'a FakeGitHub,
        client: reqwest::Client,
        auth: Option<String>,
    }

    impl Http<'_> {
        async fn send(
            &self,
            method: &str,
            path: &str,
            body: Option<&Value>,
        ) -> (u16, Value, Option<String>) {
            let mut request = self
                .client
                .request(
                    method.parse().unwrap(),
                    format!("{}{path}", self.fake.url()),
                )
                .header("user-agent", "test");
            if let Some(auth) = &self.auth {
                request = request.header("authorization", auth);
            }
            if let Some(body) = body {
                request = request.body(body.to_string());
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let link = response
                .headers()
                .get("link")
                .map(|l| l.to_str().unwrap().to_owned());
            let text = response.text().await.unwrap();
            (
                status,
                serde_json::from_str(&text).unwrap_or(Value::Null),
                link,
            )
        }
    }

    #[tokio::test]
    async fn reports_answer_like_github() {
        let (fake, sha, token) = fake().await;
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let anon = Http {
            fake: &fake,
            client: client.clone(),
            auth: None,
        };
        let bad = Http {
            fake: &fake,
            client: client.clone(),
            auth: Some("token ghs_nope".into()),
        };
        let gh = Http {
            fake: &fake,
            client,
            auth: Some(format!("Bearer {token}")),
        };
        let deploy = json!({"ref": sha, "environment": "preview/x", "description": "d", "required_contexts": []});

        // Writes need an installation including the repository, even public.
        let (status, body, _) = anon
            .send("POST", "/repos/acme/hello/deployments", Some(&deploy))
            .await;
        assert_eq!((status, body["message"].as_str()), (404, Some("Not Found")));
        let (status, body, _) = bad
            .send("POST", "/repos/acme/hello/deployments", Some(&deploy))
            .await;
        assert_eq!(
            (status, body["message"].as_str()),
            (401, Some("Bad credentials"))
        );
        let (status, ..) = gh
            .send("POST", "/repos/acme/other/deployments", Some(&deploy))
            .await;
        assert_eq!(status, 404);
        let (status, body, _) = gh.send("POST", "/repos/acme/hello/deployments", None).await;
        assert_eq!(
            (status, body["message"].as_str()),
            (400, Some("Problems parsing JSON"))
        );

        // Deployments.
        let (status, body, _) = gh
            .send("POST", "/repos/ACME/hello/deployments", Some(&deploy))
            .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(
            (
                &body["sha"],
                &body["ref"],
                &body["environment"],
                &body["transient_environment"],
                &body["production_environment"]
            ),
            (
                &json!(sha),
                &json!(sha),
                &json!("preview/x"),
                &json!(false),
                &json!(false)
            )
        );
        assert_eq!(body["creator"]["login"], "ctrl[bot]");
        assert_eq!(body["creator"]["type"], "Bot");
        let id = body["id"].as_u64().unwrap();
        let (status, body, _) = gh
            .send(
                "POST",
                "/repos/acme/hello/deployments",
                Some(&json!({"ref": "nope", "environment": "x"})),
            )
            .await;
        assert_eq!(
            (status, body["message"].as_str()),
            (422, Some("No ref found for: nope"))
        );
        let (status, body, _) = gh
            .send(
                "POST",
                "/repos/acme/hello/deployments",
                Some(&json!({"ref": "main"})),
            )
            .await;
        assert_eq!(status, 422);
        assert_eq!(
            body["message"],
            "Invalid request.\n\n\"environment\" wasn't supplied."
        );
        // A branch is a ref too; production defaults from the name.
        let (status, body, _) = gh
            .send(
                "POST",
                "/repos/acme/hello/deployments",
                Some(&json!({"ref": "main", "environment": "production"})),
            )
            .await;
        assert_eq!(
            (status, &body["production_environment"]),
            (201, &json!(true))
        );

        // Statuses of a deployment.
        let path = format!("/repos/acme/hello/deployments/{id}/statuses");
        let (status, body, _) = gh
            .send("POST", &path, Some(&json!({"state": "in_progress", "log_url": "https://l", "description": "building"})))
            .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(
            (&body["state"], &body["log_url"], &body["target_url"]),
            (
                &json!("in_progress"),
                &json!("https://l"),
                &json!("https://l")
            )
        );
        let (status, body, _) = gh
            .send("POST", &path, Some(&json!({"state": "done"})))
            .await;
        assert_eq!(status, 422);
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("\"done\" is not one of"),
            "{body}"
        );
        let long = json!({"state": "success", "description": "x".repeat(141)});
        let (status, body, _) = gh.send("POST", &path, Some(&long)).await;
        assert_eq!(
            (status, body["message"].as_str()),
            (422, Some("Validation Failed"))
        );
        assert_eq!(
            body["errors"][0]["message"],
            "description is too long (maximum is 140 characters)"
        );
        let (status, ..) = gh
            .send(
                "POST",
                "/repos/acme/hello/deployments/999999/statuses",
                Some(&json!({"state": "success"})),
            )
            .await;
        assert_eq!(status, 404);
        assert_eq!(fake.deployments("acme/hello")[0].statuses.len(), 1);

        // Commit statuses; and GitHub's default check of them on deploying.
        let path = format!("/repos/acme/hello/statuses/{sha}");
        let (status, body, _) = gh
            .send(
                "POST",
                &path,
                Some(&json!({"state": "failure", "context": "ci"})),
            )
            .await;
        assert_eq!(
            (status, &body["context"], &body["target_url"]),
            (201, &json!("ci"), &Value::Null)
        );
        let (status, ..) = gh
            .send("POST", &path, Some(&json!({"state": "queued"})))
            .await;
        assert_eq!(status, 422);
        let (status, ..) = gh
            .send(
                "POST",
                &path,
                Some(&json!({"state": "error", "description": "é".repeat(141)})),
            )
            .await;
        assert_eq!(status, 422);
        let (status, body, _) = gh
            .send(
                "POST",
                &format!("/repos/acme/hello/statuses/{}", "0".repeat(40)),
                Some(&json!({"state": "success"})),
            )
            .await;
        assert_eq!(status, 422, "{body}");
        let (status, body, _) = gh
            .send(
                "POST",
                "/repos/acme/hello/deployments",
                Some(&json!({"ref": sha, "environment": "e"})),
            )
            .await;
        assert_eq!(status, 409, "{body}");
        assert_eq!(
            body["errors"][0]["contexts"],
            json!([{"context": "ci", "state": "failure"}])
        );
        assert_eq!(fake.commit_statuses("acme/hello", &sha).len(), 1);

        // Comments: pages and links.
        for i in 0..5 {
            fake.add_comment("acme/hello", 5, "octocat", &format!("c{i}"));
        }
        let (status, body, link) = gh
            .send(
                "GET",
                "/repos/acme/hello/issues/5/comments?per_page=2&page=2",
                None,
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(
            body.as_array()
                .unwrap()
                .iter()
                .map(|c| c["body"].as_str().unwrap())
                .collect::<Vec<_>>(),
            ["c2", "c3"]
        );
        let link = link.unwrap();
        let next = link
            .split(", ")
            .find(|l| l.ends_with("rel=\"next\""))
            .unwrap()
            .trim_start_matches('<')
            .split('>')
            .next()
            .unwrap()
            .to_owned();
        assert!(
            link.contains("rel=\"prev\"")
                && link.contains("rel=\"last\"")
                && link.contains("rel=\"first\""),
            "{link}"
        );
        let next_path = next.strip_prefix(fake.url()).unwrap();
        assert!(next_path.starts_with("/repositories/"), "{next_path}");
        let (status, body, link) = gh.send("GET", next_path, None).await;
        assert_eq!(
            (
                status,
                body.as_array().unwrap().len(),
                link.as_deref().map(|l| l.contains("next"))
            ),
            (200, 1, Some(false))
        );
        let (status, ..) = gh
            .send("GET", "/repos/acme/hello/issues/6/comments", None)
            .await;
        assert_eq!(status, 404);
        let (status, body, _) = gh
            .send(
                "POST",
                "/repos/acme/hello/issues/5/comments",
                Some(&json!({"body": "ours"})),
            )
            .await;
        assert_eq!(
            (status, &body["user"]["login"], &body["user"]["type"]),
            (201, &json!("ctrl[bot]"), &json!("Bot"))
        );
        let comment = body["id"].as_u64().unwrap();
        let path = format!("/repos/acme/hello/issues/comments/{comment}");
        let (status, body, _) = gh
            .send("PATCH", &path, Some(&json!({"body": "x".repeat(65_537)})))
            .await;
        assert_eq!(
            (status, body["errors"][0]["message"].as_str()),
            (422, Some("body is too long (maximum is 65536 characters)"))
        );
        let (status, body, _) = gh
            .send("PATCH", &path, Some(&json!({"body": "edited"})))
            .await;
        assert_eq!((status, &body["body"]), (200, &json!("edited")));
        let (status, ..) = gh
            .send(
                "PATCH",
                "/repos/acme/hello/issues/comments/1",
                Some(&json!({"body": "x"})),
            )
            .await;
        assert_eq!(status, 404);
        let ours = fake.comments("acme/hello", 5).pop().unwrap();
        assert_eq!(
            (
                ours.id,
                ours.body.as_str(),
                ours.edits,
                ours.author.as_str()
            ),
            (comment, "edited", 1, "ctrl[bot]")
        );

        // Permissions taken away: GitHub's 403.
        fake.deny_permission(2, "statuses");
        let (status, body, _) = gh
            .send(
                "POST",
                &format!("/repos/acme/hello/statuses/{sha}"),
                Some(&json!({"state": "success"})),
            )
            .await;
        assert_eq!(
            (status, body["message"].as_str()),
            (403, Some("Resource not accessible by integration"))
        );
        fake.deny_permission(2, "issues");
        let (status, ..) = gh
            .send("GET", "/repos/acme/hello/issues/5/comments", None)
            .await;
        assert_eq!(status, 200, "pull_requests still allows comments");
        fake.deny_permission(2, "pull_requests");
        let (status, ..) = gh
            .send("GET", "/repos/acme/hello/issues/5/comments", None)
            .await;
        assert_eq!(status, 403);

        // Injected failures apply here too.
        fake.fail_next("/repos/acme/hello/deployments", 502);
        let (status, ..) = gh
            .send("POST", "/repos/acme/hello/deployments", Some(&deploy))
            .await;
        assert_eq!(status, 502);
    }
}
