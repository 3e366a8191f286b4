//! GitHub App webhooks end to end: signed deliveries posted to the real
//! ctrl-api router (in process), handed to the real worker through Restate,
//! deployments built from the fake GitHub's tarballs on podman.

use std::time::Duration;

use anyhow::{Context, Result};
use ctrl_core::status::DeploymentStatus;
use ctrl_db::deployment::Deployment;
use ctrl_db::settings::{BuildSettings, Scope};
use ctrl_db::{deployment, github as connections, settings};
use ctrl_github::webhook::sign;
use ctrl_testkit::github::{Author, CommitSpec, FakeGitHub, RepoOpts, TEST_APP_KEY_PEM};
use ctrl_testkit::http_client;
use serde_json::{Value, json};

use crate::build_stack::BuildStack;
use crate::harness::eventually;

const APP_ID: u64 = 4242;
const INSTALLATION: i64 = 77;
const REPO: &str = "acme/shop";
const REPO_ID: i64 = 9_001;
const SECRET: &str = "webhook-secret-of-the-tests";

/// The build stack, the fake GitHub (the app installed on acme/shop, which
/// is private), the API serving webhooks, and the app connected.
struct Stack {
    s: BuildStack,
    github: FakeGitHub,
    api: String,
    _server: tokio::task::JoinHandle<()>,
}

impl Stack {
    async fn start() -> Result<Self> {
        let github = FakeGitHub::start().await?;
        github.add_app(APP_ID, &ctrl_testkit::github::test_app_public_key_der());
        github.add_installation(u64::try_from(INSTALLATION)?, APP_ID, &[REPO]);
        github.add_repo(
            REPO,
            RepoOpts {
                private: true,
                ..RepoOpts::default()
            },
        );
        let key = TEST_APP_KEY_PEM.replace('\n', "\\n");
        let s = BuildStack::start(
            2,
            &format!(
                "[github]\napi_url = \"{}\"\napp_id = {APP_ID}\nprivate_key_pem = \"{key}\"\ndashboard_url = \"https://dashboard.example.com\"\n",
                github.url()
            ),
        )
        .await?;
        for environment_id in [&s.h.production, &s.h.preview] {
            let scope = Scope {
                workspace_id: &s.h.workspace,
                app_id: &s.h.app,
                environment_id,
            };
            // What CreateApp records for each environment.
            settings::upsert_build(
                &s.h.db.pool,
                scope,
                &BuildSettings {
                    docker_context: "web".into(),
                    ..BuildSettings::default()
                },
                1,
            )
            .await?;
            settings::upsert_runtime(
                &s.h.db.pool,
                scope,
                &settings::RuntimeSettings::default(),
                1,
            )
            .await?;
        }
        let app = ctrl_db::tenancy::get_app(&s.h.db.pool, &s.h.app).await?;
        connections::connect(
            &s.h.db.pool,
            &connections::NewConnection {
                workspace_id: &s.h.workspace,
                project_id: &app.project_id,
                app_id: &s.h.app,
                installation_id: INSTALLATION,
                repository_full_name: REPO,
            },
            1,
        )
        .await?;
        let vault = ctrl_vault::Vault::new(&[ctrl_vault::KeyConfig {
            id: "k1".into(),
            base64: "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=".into(),
        }])?;
        let state = ctrl_api::state::AppState::new(
            s.h.db.pool.clone(),
            vault,
            &["api-token-0123456789abcdef".to_owned()],
            &[],
            (
                ctrl_api::restate::Ingress::new(&s.h.restate.ingress_url()),
                ctrl_api::restate::Admin::new(&s.h.restate.admin_url()),
            ),
            None,
        )
        .with_webhook_secrets(vec![SECRET.to_owned()]);
        let router = ctrl_api::rpc::router(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let api = format!("http://{}", listener.local_addr()?);
        let server = tokio::spawn(async move {
            let _ = axum::serve(ctrl_runtime::net::nodelay(listener), router).await;
        });
        Ok(Self {
            s,
            github,
            api,
            _server: server,
        })
    }

    /// Posts a delivery signed with `secret` (None: unsigned); the status
    /// and JSON answer.
    async fn deliver(
        &self,
        event: &str,
        delivery: &str,
        payload: &Value,
        secret: Option<&str>,
    ) -> Result<(u16, Value)> {
        let body = serde_json::to_vec(payload)?;
        let mut request = http_client()
            .post(format!("{}/webhooks/github", self.api))
            .header("content-type", "application/json")
            .header("x-github-event", event)
            .header("x-github-delivery", delivery)
            .header("user-agent", "GitHub-Hookshot/abc123");
        if let Some(secret) = secret {
            request = request.header("x-hub-signature-256", sign(secret, &body));
        }
        let response = request.body(body).send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    /// The deployments of the app, oldest first.
    async fn deployments(&self) -> Result<Vec<Deployment>> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM deployments WHERE app_id = ? ORDER BY created_at, pk",
        )
        .bind(&self.s.h.app)
        .fetch_all(&self.s.h.db.pool)
        .await?;
        let mut all = Vec::new();
        for id in ids {
            all.push(deployment::get(&self.s.h.db.pool, &id).await?);
        }
        Ok(all)
    }

    /// Waits for the deployment a delivery made.
    async fn made_by(&self, delivery: &str) -> Result<Deployment> {
        let key = format!("github:{delivery}");
        let made = eventually(Duration::from_secs(30), || async {
            Ok(
                deployment::find_by_idempotency_key(&self.s.h.db.pool, &self.s.h.app, &key)
                    .await?
                    .is_some(),
            )
        })
        .await;
        if made.is_err() {
            let invocations = self
                .s
                .h
                .query("SELECT target_service_key, status, last_failure, completion_failure, completion_result FROM sys_invocation WHERE target_service_name = 'GitHubWebhook'")
                .await?;
            anyhow::bail!(
                "no deployment for {delivery}; handler invocations: {invocations:?}\n{}",
                self.s.h.worker_log(40)
            );
        }
        deployment::find_by_idempotency_key(&self.s.h.db.pool, &self.s.h.app, &key)
            .await?
            .context("made")
    }
}

fn web_commit(message: &str, greeting: &str) -> CommitSpec {
    CommitSpec::new(message)
        .author(Author {
            login: Some("octocat".into()),
            name: "The Octocat".into(),
            email: "octocat@example.com".into(),
            avatar_url: "https://avatars.example.com/u/1".into(),
        })
        .date(1_700_000_000)
        .file(
            "web/Dockerfile",
            "FROM busybox\nCOPY index.html /www/index.html\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n",
        )
        .file("web/index.html", greeting)
}

fn repository() -> Value {
    json!({
        "id": REPO_ID,
        "node_id": "R_kgDOxyz",
        "name": "shop",
        "full_name": REPO,
        "private": true,
        "owner": { "login": "acme", "id": 1, "type": "Organization" },
        "html_url": format!("https://github.com/{REPO}"),
        "default_branch": "main",
        "fork": false
    })
}

/// A push event as GitHub sends it (the fields ctrl reads, and others).
fn push_payload(branch: &str, before: &str, after: &str, files: &[&str], deleted: bool) -> Value {
    let commit = json!({
        "id": after,
        "tree_id": "0000000000000000000000000000000000000000",
        "distinct": true,
        "message": "Change the shop",
        "timestamp": "2023-11-14T22:13:20Z",
        "url": format!("https://github.com/{REPO}/commit/{after}"),
        "author": { "name": "The Octocat", "email": "octocat@example.com", "username": "octocat" },
        "committer": { "name": "GitHub", "email": "noreply@github.com", "username": "web-flow" },
        "added": [],
        "removed": [],
        "modified": files
    });
    json!({
        "ref": format!("refs/heads/{branch}"),
        "before": before,
        "after": after,
        "created": false,
        "deleted": deleted,
        "forced": false,
        "base_ref": null,
        "compare": format!("https://github.com/{REPO}/compare/{before}...{after}"),
        "commits": if deleted { json!([]) } else { json!([commit]) },
        "head_commit": if deleted { Value::Null } else { commit },
        "repository": repository(),
        "pusher": { "name": "octocat", "email": "octocat@example.com" },
        "sender": { "login": "octocat", "id": 1, "type": "User" },
        "installation": { "id": INSTALLATION, "node_id": "MDIzOkludGVncmF0aW9uSW5zdGFsbGF0aW9uNzc=" }
    })
}

fn pull_request_payload(
    action: &str,
    number: u32,
    branch: &str,
    sha: &str,
    head_repo: &str,
) -> Value {
    json!({
        "action": action,
        "number": number,
        "pull_request": {
            "id": 1,
            "number": number,
            "state": if action == "closed" { "closed" } else { "open" },
            "title": "Make the shop nicer",
            "user": { "login": "contributor" },
            "head": {
                "label": format!("x:{branch}"),
                "ref": branch,
                "sha": sha,
                "repo": { "id": 5, "full_name": head_repo, "default_branch": "main", "fork": head_repo != REPO }
            },
            "base": { "label": "acme:main", "ref": "main", "sha": "0".repeat(40), "repo": repository() },
            "merged": false
        },
        "repository": repository(),
        "sender": { "login": "contributor", "id": 2, "type": "User" },
        "installation": { "id": INSTALLATION }
    })
}

const ZERO: &str = "0000000000000000000000000000000000000000";

#[tokio::test]
async fn a_signed_push_deploys_once_and_bad_deliveries_start_nothing() -> Result<()> {
    let st = Stack::start().await?;
    let sha = st
        .github
        .push(REPO, "main", web_commit("Open the shop", "hello shop\n"));
    let payload = push_payload("main", ZERO, &sha, &["web/index.html"], false);

    // Refused before anything: unsigned, wrongly signed, malformed,
    // oversize, a repository nobody connected.
    let (status, body) = st.deliver("push", "d-unsigned", &payload, None).await?;
    assert_eq!(status, 401, "{body}");
    let (status, body) = st
        .deliver("push", "d-badsig", &payload, Some("not-the-secret-at-all"))
        .await?;
    assert_eq!(status, 401, "{body}");
    let (status, body) = st
        .deliver("push", "d-malformed", &json!({ "ref": 5 }), Some(SECRET))
        .await?;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or("")
            .contains("push payload is malformed"),
        "{body}"
    );
    let mut other = payload.clone();
    other["repository"]["full_name"] = json!("acme/other");
    other["repository"]["id"] = json!(1234);
    let (status, body) = st.deliver("push", "d-other", &other, Some(SECRET)).await?;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or("")
            .contains("no app is connected to acme/other")
    );
    let huge = json!({ "padding": "x".repeat(26 << 20) });
    let (status, _) = st.deliver("push", "d-huge", &huge, Some(SECRET)).await?;
    assert_eq!(status, 413);
    let (status, body) = st
        .deliver("ping", "d-ping", &json!({"zen": "hi"}), Some(SECRET))
        .await?;
    assert_eq!((status, body["status"].as_str()), (200, Some("pong")));
    assert!(st.deployments().await?.is_empty(), "nothing was started");

    // The signed push deploys production once; a redelivery is the same.
    let (status, body) = st
        .deliver("push", "d-push-1", &payload, Some(SECRET))
        .await?;
    assert_eq!(status, 202, "{body}");
    let (status, again) = st
        .deliver("push", "d-push-1", &payload, Some(SECRET))
        .await?;
    assert_eq!(status, 202, "{again}");
    assert_eq!(
        body["invocation_id"], again["invocation_id"],
        "one invocation per delivery"
    );
    let d = st.made_by("d-push-1").await?;
    assert_eq!(d.environment_id, st.s.h.production);
    assert_eq!(d.git_commit_sha.as_deref(), Some(sha.as_str()));
    assert_eq!(d.git_branch.as_deref(), Some("main"));
    assert_eq!(d.git_repository.as_deref(), Some(REPO));
    assert_eq!(d.git_commit_message.as_deref(), Some("Change the shop"));
    assert_eq!(d.actor_name.as_deref(), Some("octocat"));
    st.s.h
        .wait_status(&d.id, DeploymentStatus::Deploying)
        .await?;
    st.s.h.report_running(&d.id, 1).await?;
    st.s.h.wait_finished(&d.id).await?;
    assert_eq!(
        deployment::get(&st.s.h.db.pool, &d.id).await?.status,
        DeploymentStatus::Ready
    );
    // The image is the repository's web/ at that commit, built through the
    // installation (the repository is private).
    let image = deployment::get(&st.s.h.db.pool, &d.id)
        .await?
        .image
        .context("image")?;
    let out =
        st.s.podman
            .command()?
            .args(["run", "--rm", &image, "cat", "/www/index.html"])
            .output()?;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello shop\n");
    assert_eq!(
        st.deployments().await?.len(),
        1,
        "exactly one deployment for the delivery"
    );
    // GitHub heard about it: one deployment of the commit to the app's
    // production environment, its statuses in order, the commit status.
    eventually(Duration::from_secs(30), || async {
        Ok(st
            .github
            .deployments(REPO)
            .first()
            .is_some_and(|d| d.statuses.len() >= 3))
    })
    .await?;
    let gh = st.github.deployments(REPO);
    assert_eq!(gh.len(), 1, "{gh:?}");
    assert_eq!(gh[0].sha, sha);
    assert_eq!(gh[0].environment, "web (production)");
    assert!(gh[0].production && !gh[0].transient);
    let states: Vec<&str> = gh[0].statuses.iter().map(|s| s.state.as_str()).collect();
    assert_eq!(states, ["queued", "in_progress", "success"]);
    assert_eq!(
        gh[0].statuses[2].log_url.as_deref(),
        Some(format!("https://dashboard.example.com/deployments/{}", d.id).as_str())
    );
    let commit: Vec<String> = st
        .github
        .commit_statuses(REPO, &sha)
        .into_iter()
        .map(|c| format!("{}:{}", c.context, c.state))
        .collect();
    assert_eq!(
        commit.last().map(String::as_str),
        Some("ctrl/web:success"),
        "{commit:?}"
    );
    // The connection learnt the repository's id.
    let c = connections::get(&st.s.h.db.pool, &st.s.h.app)
        .await?
        .context("connected")?;
    assert_eq!(c.repository_id, Some(REPO_ID));
    Ok(())
}

#[tokio::test]
async fn branches_preview_rules_skip_and_deleting_the_branch_stops_its_preview() -> Result<()> {
    let st = Stack::start().await?;
    let sha = st
        .github
        .push(REPO, "feature", web_commit("Try a feature", "feature\n"));

    // A branch deploys the preview environment.
    let (status, body) = st
        .deliver(
            "push",
            "d-feature",
            &push_payload("feature", ZERO, &sha, &["web/index.html"], false),
            Some(SECRET),
        )
        .await?;
    assert_eq!(status, 202, "{body}");
    let preview = st.made_by("d-feature").await?;
    assert_eq!(preview.environment_id, st.s.h.preview);
    st.s.h
        .wait_status(&preview.id, DeploymentStatus::Deploying)
        .await?;
    st.s.h.report_running(&preview.id, 1).await?;
    st.s.h.wait_finished(&preview.id).await?;

    // Watch paths none of the pushed files match: skipped, with why.
    settings::upsert_build(
        &st.s.h.db.pool,
        Scope {
            workspace_id: &st.s.h.workspace,
            app_id: &st.s.h.app,
            environment_id: &st.s.h.preview,
        },
        &BuildSettings {
            docker_context: "web".into(),
            watch_paths: sqlx::types::Json(vec!["web/**".into()]),
            ..BuildSettings::default()
        },
        2,
    )
    .await?;
    st.deliver(
        "push",
        "d-docs",
        &push_payload("feature", &sha, &sha, &["docs/readme.md"], false),
        Some(SECRET),
    )
    .await?;
    let skipped = st.made_by("d-docs").await?;
    assert_eq!(skipped.status, DeploymentStatus::Skipped);
    assert!(
        skipped
            .error_message
            .as_deref()
            .unwrap_or("")
            .contains("no changed file matches the watch paths (web/**)"),
        "{:?}",
        skipped.error_message
    );

    // auto_deploy off: skipped, with why.
    settings::upsert_build(
        &st.s.h.db.pool,
        Scope {
            workspace_id: &st.s.h.workspace,
            app_id: &st.s.h.app,
            environment_id: &st.s.h.preview,
        },
        &BuildSettings {
            docker_context: "web".into(),
            auto_deploy: false,
            ..BuildSettings::default()
        },
        3,
    )
    .await?;
    st.deliver(
        "push",
        "d-off",
        &push_payload("feature", &sha, &sha, &["web/index.html"], false),
        Some(SECRET),
    )
    .await?;
    let off = st.made_by("d-off").await?;
    assert_eq!(off.status, DeploymentStatus::Skipped);
    assert!(
        off.error_message
            .as_deref()
            .unwrap_or("")
            .contains("auto-deploy is off"),
        "{:?}",
        off.error_message
    );

    // Deleting the branch stops its running preview.
    st.deliver(
        "push",
        "d-delete",
        &push_payload("feature", &sha, ZERO, &[], true),
        Some(SECRET),
    )
    .await?;
    st.s.h
        .wait_topology(&preview.id, ctrl_core::status::DesiredState::Stopped)
        .await?;
    Ok(())
}

#[tokio::test]
async fn a_fork_pull_request_waits_for_approval_and_closing_it_cancels_its_preview() -> Result<()> {
    let st = Stack::start().await?;
    let sha = st
        .github
        .push(REPO, "fork-work", web_commit("From a fork", "fork\n"));
    let payload = pull_request_payload("opened", 12, "fork-work", &sha, "stranger/shop");
    let (status, body) = st
        .deliver("pull_request", "d-pr-open", &payload, Some(SECRET))
        .await?;
    assert_eq!(status, 202, "{body}");
    let d = st.made_by("d-pr-open").await?;
    assert_eq!(d.status, DeploymentStatus::AwaitingApproval);
    assert_eq!(d.environment_id, st.s.h.preview);
    assert_eq!(d.git_pr_number, Some(12));
    assert_eq!(d.fork_repository.as_deref(), Some("stranger/shop"));
    assert!(
        d.error_message
            .as_deref()
            .unwrap_or("")
            .contains("comes from the fork stranger/shop"),
        "{:?}",
        d.error_message
    );
    // Nothing runs until approved.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        deployment::get(&st.s.h.db.pool, &d.id).await?.status,
        DeploymentStatus::AwaitingApproval
    );

    // Closing the pull request cancels it.
    let closed = pull_request_payload("closed", 12, "fork-work", &sha, "stranger/shop");
    let (status, _) = st
        .deliver("pull_request", "d-pr-close", &closed, Some(SECRET))
        .await?;
    assert_eq!(status, 202);
    eventually(Duration::from_secs(30), || async {
        Ok(deployment::get(&st.s.h.db.pool, &d.id).await?.status == DeploymentStatus::Cancelled)
    })
    .await?;
    let after = deployment::get(&st.s.h.db.pool, &d.id).await?;
    assert_eq!(
        after.error_message.as_deref(),
        Some("pull request #12 was closed")
    );

    // Uninstalling the app removes the connection.
    let (status, _) = st
        .deliver(
            "installation",
            "d-uninstall",
            &json!({ "action": "deleted", "installation": { "id": INSTALLATION, "account": { "login": "acme" } }, "sender": { "login": "acme-admin" } }),
            Some(SECRET),
        )
        .await?;
    assert_eq!(status, 202);
    eventually(Duration::from_secs(30), || async {
        Ok(connections::get(&st.s.h.db.pool, &st.s.h.app)
            .await?
            .is_none())
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_worker_killed_while_handling_a_delivery_makes_one_deployment() -> Result<()> {
    let mut st = Stack::start().await?;
    let sha = st
        .github
        .push(REPO, "main", web_commit("Crash test", "crash\n"));
    let payload = push_payload("main", ZERO, &sha, &["web/index.html"], false);
    let (status, _) = st
        .deliver("push", "d-crash", &payload, Some(SECRET))
        .await?;
    assert_eq!(status, 202);
    // Kill the worker as soon as the delivery's deployment exists (mid-way:
    // the Deploy workflow may or may not have been sent yet).
    let d = st.made_by("d-crash").await?;
    st.s.h.crash_worker().await?;
    // Redelivered too, for good measure.
    st.deliver("push", "d-crash", &payload, Some(SECRET))
        .await?;
    st.s.h
        .wait_status(&d.id, DeploymentStatus::Deploying)
        .await?;
    st.s.h.report_running(&d.id, 1).await?;
    st.s.h.wait_finished(&d.id).await?;
    let all = st.deployments().await?;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].status, DeploymentStatus::Ready);
    Ok(())
}

#[tokio::test]
async fn a_pull_request_gets_a_preview_and_one_comment_kept_up_to_date() -> Result<()> {
    let st = Stack::start().await?;
    st.github.add_pull_request(REPO, 5);
    let first = st
        .github
        .push(REPO, "nicer", web_commit("Nicer", "nicer\n"));
    let opened = pull_request_payload("opened", 5, "nicer", &first, REPO);
    let (status, body) = st
        .deliver("pull_request", "d-pr5-open", &opened, Some(SECRET))
        .await?;
    assert_eq!(status, 202, "{body}");
    let d = st.made_by("d-pr5-open").await?;
    assert_eq!(d.environment_id, st.s.h.preview);
    assert_eq!(d.git_pr_number, Some(5));
    assert_ne!(
        d.status,
        DeploymentStatus::AwaitingApproval,
        "same-repository pull requests need no approval"
    );
    st.s.h
        .wait_status(&d.id, DeploymentStatus::Deploying)
        .await?;
    st.s.h.report_running(&d.id, 1).await?;
    st.s.h.wait_finished(&d.id).await?;
    let ready_row = |short: String| {
        let st = &st;
        async move {
            let comments = st.github.comments(REPO, 5);
            Ok::<_, anyhow::Error>(
                comments.len() == 1
                    && comments[0].body.contains("| web | ✅ Ready |")
                    && comments[0].body.contains(&short),
            )
        }
    };
    eventually(Duration::from_secs(30), || {
        ready_row(format!("`{}`", &first[..7]))
    })
    .await
    .with_context(|| format!("{:?}", st.github.comments(REPO, 5)))?;

    // New commits: a new preview, the same comment edited in place.
    let second = st
        .github
        .push(REPO, "nicer", web_commit("Nicer still", "nicer still\n"));
    let sync = pull_request_payload("synchronize", 5, "nicer", &second, REPO);
    st.deliver("pull_request", "d-pr5-sync", &sync, Some(SECRET))
        .await?;
    let d2 = st.made_by("d-pr5-sync").await?;
    st.s.h
        .wait_status(&d2.id, DeploymentStatus::Deploying)
        .await?;
    st.s.h.report_running(&d2.id, 1).await?;
    st.s.h.wait_finished(&d2.id).await?;
    eventually(Duration::from_secs(30), || {
        ready_row(format!("`{}`", &second[..7]))
    })
    .await
    .with_context(|| format!("{:?}", st.github.comments(REPO, 5)))?;
    let comments = st.github.comments(REPO, 5);
    assert_eq!(comments.len(), 1, "one sticky comment");
    assert!(comments[0].edits >= 1, "edited in place: {comments:?}");
    // The preview's URL: the branch's hostname, which follows its newest
    // deployment.
    let body = &comments[0].body;
    assert!(body.contains("(https://") && body.contains("nicer"), "{body}");
    let gh = st.github.deployments(REPO);
    assert!(
        gh.iter()
            .all(|g| g.environment == "web (pull request #5)" && g.transient),
        "{gh:?}"
    );
    Ok(())
}

#[tokio::test]
async fn github_being_down_never_fails_or_holds_a_deploy() -> Result<()> {
    let st = Stack::start().await?;
    let sha = st
        .github
        .push(REPO, "main", web_commit("Outage", "outage\n"));
    for _ in 0..40 {
        st.github
            .fail_next(&format!("/repos/{REPO}/deployments"), 502);
        st.github.fail_next(&format!("/repos/{REPO}/statuses"), 502);
    }
    let payload = push_payload("main", ZERO, &sha, &["web/index.html"], false);
    st.deliver("push", "d-outage", &payload, Some(SECRET))
        .await?;
    let d = st.made_by("d-outage").await?;
    st.s.h
        .wait_status(&d.id, DeploymentStatus::Deploying)
        .await?;
    st.s.h.report_running(&d.id, 1).await?;
    st.s.h.wait_finished(&d.id).await?;
    assert_eq!(
        deployment::get(&st.s.h.db.pool, &d.id).await?.status,
        DeploymentStatus::Ready
    );
    Ok(())
}
