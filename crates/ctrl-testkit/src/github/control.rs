//! The control routes under `/_fake/`: another process acting as a
//! developer on the fake (pushing commits, opening pull requests) and
//! reading what ctrl reported back. Served only when the fake is started
//! with [`FakeGitHubOptions::control_routes`](super::FakeGitHubOptions);
//! they need no credentials (the fake listens on 127.0.0.1) and are not
//! recorded in [`FakeGitHub::requests`](super::FakeGitHub::requests).

use std::collections::BTreeMap;

use axum::http::Method;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};

use super::payloads::ZERO_SHA;
use super::{
    Author, CommitSpec, FakeComment, FakeCommitStatus, FakeDeployment, FakeFile, Reply, Repo, State,
};

/// Serves `segments` (the path after `/_fake/`).
pub(super) fn route(state: &mut State, method: &Method, segments: &[&str], body: &[u8]) -> Reply {
    let ["repos", owner, name, rest @ ..] = segments else {
        return fail(404, "no such control route");
    };
    let full_name = format!("{owner}/{name}");
    let Some(repo) = state.repos.get_mut(&full_name.to_ascii_lowercase()) else {
        return fail(404, &format!("no repository {full_name} in the fake"));
    };
    match (method, rest) {
        (&Method::GET, []) => Reply::json(200, repo_json(repo)),
        (&Method::POST, ["commits"]) => commit(repo, body).unwrap_or_else(|r| r),
        (&Method::POST, ["pulls"]) => pull(repo, body).unwrap_or_else(|r| r),
        (&Method::GET, ["deployments"]) => Reply::json(
            200,
            repo.reports
                .deployments()
                .iter()
                .map(deployment_json)
                .collect(),
        ),
        (&Method::GET, ["statuses", sha]) => Reply::json(
            200,
            repo.reports
                .commit_statuses(sha)
                .iter()
                .map(status_json)
                .collect(),
        ),
        (&Method::GET, ["comments", number]) => match number.parse::<u64>() {
            Ok(n) => Reply::json(
                200,
                repo.reports.comments(n).iter().map(comment_json).collect(),
            ),
            Err(_) => fail(400, "the pull request number must be a number"),
        },
        _ => fail(404, "no such control route"),
    }
}

fn fail(status: u16, message: &str) -> Reply {
    Reply::json(status, json!({ "message": message }))
}

fn repo_json(repo: &Repo) -> Value {
    let branches: BTreeMap<&str, Option<&str>> = repo
        .branches
        .keys()
        .map(|b| (b.as_str(), repo.head(b)))
        .collect();
    json!({
        "id": repo.id,
        "full_name": repo.full_name(),
        "private": repo.private,
        "default_branch": repo.default_branch,
        "branches": branches,
    })
}

/// `POST …/commits`: a commit of the whole tree `files` on `branch`.
fn commit(repo: &mut Repo, body: &[u8]) -> Result<Reply, Reply> {
    let map: Map<String, Value> = match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => map,
        _ => return Err(fail(400, "the body must be a JSON object")),
    };
    let text = |name: &str| -> Result<Option<String>, Reply> {
        match map.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(fail(422, &format!("`{name}` must be a string"))),
        }
    };
    let branch = text("branch")?.unwrap_or_else(|| repo.default_branch.clone());
    if branch.is_empty() || branch.contains("..") || branch.starts_with('/') {
        return Err(fail(422, "`branch` must be a branch name"));
    }
    let message = text("message")?.unwrap_or_else(|| "Update".to_owned());
    let login = text("author")?.unwrap_or_else(|| "octocat".to_owned());
    let executable: Vec<&str> = match map.get("executable") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(Value::as_str)
            .collect::<Option<_>>()
            .ok_or_else(|| fail(422, "`executable` must list paths"))?,
        Some(_) => return Err(fail(422, "`executable` must list paths")),
    };
    let Some(Value::Object(files)) = map.get("files") else {
        return Err(fail(
            422,
            "`files` must map each path to its base64 contents",
        ));
    };
    let mut spec = CommitSpec::new(&message).author(Author {
        login: Some(login.clone()),
        name: login.clone(),
        email: format!("{login}@users.noreply.github.com"),
        ..Author::default()
    });
    for (path, contents) in files {
        let valid = !path.is_empty()
            && !path.starts_with('/')
            && path
                .split('/')
                .all(|part| !part.is_empty() && part != "." && part != "..");
        if !valid {
            return Err(fail(
                422,
                &format!("`{path}` is not a relative path with `/`"),
            ));
        }
        let bytes = contents
            .as_str()
            .and_then(|b64| STANDARD.decode(b64).ok())
            .ok_or_else(|| fail(422, &format!("the contents of `{path}` are not base64")))?;
        spec.files.insert(
            path.clone(),
            FakeFile {
                contents: bytes,
                executable: executable.contains(&path.as_str()),
            },
        );
    }
    let before = repo.head(&branch).map(str::to_owned);
    let parent = before
        .clone()
        .or_else(|| repo.head(&repo.default_branch).map(str::to_owned));
    let old = parent
        .and_then(|p| repo.commits.get(&p))
        .map(|c| c.files.clone())
        .unwrap_or_default();
    let (mut added, mut modified) = (Vec::new(), Vec::new());
    for (path, file) in &spec.files {
        match old.get(path) {
            None => added.push(path.clone()),
            Some(was) if was != file => modified.push(path.clone()),
            Some(_) => {}
        }
    }
    let removed: Vec<&String> = old
        .keys()
        .filter(|p| !spec.files.contains_key(*p))
        .collect();
    let sha = repo.commit(&branch, spec);
    let date = repo.commits[&sha].date;
    Ok(Reply::json(
        201,
        json!({
            "sha": sha,
            "repository_id": repo.id,
            "full_name": repo.full_name(),
            "private": repo.private,
            "default_branch": repo.default_branch,
            "branch": branch,
            "before": before.as_deref().unwrap_or(ZERO_SHA),
            "message": message,
            "author": login,
            "author_email": format!("{login}@users.noreply.github.com"),
            "timestamp": date,
            "added": added,
            "modified": modified,
            "removed": removed,
        }),
    ))
}

/// `POST …/pulls`: declares a pull request (`201` new, `200` known).
fn pull(repo: &mut Repo, body: &[u8]) -> Result<Reply, Reply> {
    let number = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("number").and_then(Value::as_u64))
        .filter(|n| *n > 0)
        .ok_or_else(|| fail(422, "the body must be {\"number\": N} with N > 0"))?;
    let created = repo.reports.open_pull_request(number);
    Ok(Reply::json(
        if created { 201 } else { 200 },
        json!({ "number": number, "created": created }),
    ))
}

fn deployment_json(d: &FakeDeployment) -> Value {
    json!({
        "id": d.id,
        "sha": d.sha,
        "environment": d.environment,
        "description": d.description,
        "transient": d.transient,
        "production": d.production,
        "statuses": d.statuses.iter().map(|s| json!({
            "state": s.state,
            "description": s.description,
            "log_url": s.log_url,
            "environment_url": s.environment_url,
        })).collect::<Vec<_>>(),
    })
}

fn status_json(s: &FakeCommitStatus) -> Value {
    json!({
        "state": s.state,
        "context": s.context,
        "description": s.description,
        "target_url": s.target_url,
    })
}

fn comment_json(c: &FakeComment) -> Value {
    json!({ "id": c.id, "body": c.body, "edits": c.edits, "author": c.author })
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::super::{FakeGitHub, FakeGitHubOptions, RepoOpts};

    #[tokio::test]
    async fn a_developer_pushes_and_reads_the_reports() {
        let client = reqwest::Client::builder()
            .no_proxy()
            .user_agent("test")
            .build()
            .unwrap();
        let post = |url: String, body: Value| {
            let client = client.clone();
            async move {
                let r = client.post(url).json(&body).send().await.unwrap();
                let status = r.status().as_u16();
                (status, r.json::<Value>().await.unwrap())
            }
        };

        // Off by default: GitHub has no such routes.
        let off = FakeGitHub::start().await.unwrap();
        off.add_repo("demo/hello", RepoOpts::default());
        let (status, _) = post(
            format!("{}/_fake/repos/demo/hello/pulls", off.url()),
            json!({"number": 1}),
        )
        .await;
        assert_eq!(status, 404);

        let fake = FakeGitHub::start_with(FakeGitHubOptions {
            port: None,
            control_routes: true,
        })
        .await
        .unwrap();
        fake.add_repo(
            "demo/hello",
            RepoOpts {
                private: true,
                ..RepoOpts::default()
            },
        );
        let url = |path: &str| format!("{}/_fake/repos/demo/hello{path}", fake.url());
        let (status, first) = post(
            url("/commits"),
            json!({"message": "First", "author": "dev", "files": {"Dockerfile": "RlJPTSBidXN5Ym94Cg==", "a/b.txt": "YgL="}}),
        )
        .await;
        assert_eq!(status, 422, "bad base64: {first}");
        let (status, first) = post(
            url("/commits"),
            json!({"message": "First", "author": "dev", "files": {"Dockerfile": "RlJPTSBidXN5Ym94Cg==", "a/b.txt": "Yg=="}}),
        )
        .await;
        assert_eq!(status, 201, "{first}");
        assert_eq!(
            (
                &first["branch"],
                &first["before"],
                &first["added"],
                &first["private"]
            ),
            (
                &json!("main"),
                &json!("0".repeat(40)),
                &json!(["Dockerfile", "a/b.txt"]),
                &json!(true)
            )
        );
        let (status, second) = post(
            url("/commits"),
            json!({"branch": "nicer", "message": "Second", "files": {"Dockerfile": "RlJPTSBidXN5Ym94Cg==", "c": ""}}),
        )
        .await;
        assert_eq!(status, 201, "{second}");
        // A new branch: `before` is zeros, the changes are against main.
        assert_eq!(second["before"], json!("0".repeat(40)));
        assert_eq!(
            (&second["added"], &second["modified"], &second["removed"]),
            (&json!(["c"]), &json!([]), &json!(["a/b.txt"]))
        );
        let repo: Value = client
            .get(url(""))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(repo["branches"]["main"], first["sha"]);
        assert_eq!(repo["branches"]["nicer"], second["sha"]);
        assert_eq!(repo["id"], first["repository_id"]);

        let (status, body) = post(url("/pulls"), json!({"number": 3})).await;
        assert_eq!((status, &body["created"]), (201, &json!(true)));
        let (status, body) = post(url("/pulls"), json!({"number": 3})).await;
        assert_eq!((status, &body["created"]), (200, &json!(false)));
        fake.add_comment("demo/hello", 3, "octocat", "looks good");
        for (path, expected) in [
            ("/deployments", json!([])),
            (
                &format!("/statuses/{}", first["sha"].as_str().unwrap()),
                json!([]),
            ),
            ("/comments/3", json!([{"body": "looks good"}])),
        ] {
            let got: Value = client
                .get(url(path))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(
                got.as_array().unwrap().len(),
                expected.as_array().unwrap().len(),
                "{path}: {got}"
            );
        }
        let (status, _) = post(
            format!("{}/_fake/repos/demo/nope/pulls", fake.url()),
            json!({"number": 1}),
        )
        .await;
        assert_eq!(status, 404);
        assert!(fake.requests().is_empty(), "control calls are not recorded");
    }
}
