//! GitHub App webhooks end to end: signed deliveries posted to the real
//! ctrl-api router (in process), handed to the real worker through Restate,
//! deployments built from the fake GitHub's tarballs on podman.

use std::time::Duration;

use anyhow::{Context, Result};
use ctrl_core::status::DeploymentStatus;
use ctrl_db::settings::BuildSettings;
use ctrl_db::{deployment, github as connections};
use serde_json::json;

use crate::github_stack::{
    INSTALLATION, REPO, REPO_ID, SECRET, Stack, ZERO, pull_request_payload, push_payload,
    repository, web_commit,
};
use crate::harness::eventually;
use ctrl_testkit::github::payloads;

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
    // The commit status follows the deployment status in the same report.
    let commit = || -> Vec<String> {
        st.github
            .commit_statuses(REPO, &sha)
            .into_iter()
            .map(|c| format!("{}:{}", c.context, c.state))
            .collect()
    };
    eventually(Duration::from_secs(30), || async {
        Ok(commit().last().map(String::as_str) == Some("ctrl/web:success"))
    })
    .await
    .with_context(|| format!("{:?}", commit()))?;
    assert_eq!(
        commit(),
        ["ctrl/web:pending", "ctrl/web:pending", "ctrl/web:success"]
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
    st.set_build(
        &st.s.h.preview,
        BuildSettings {
            docker_context: "web".into(),
            watch_paths: sqlx::types::Json(vec!["web/**".into()]),
            ..BuildSettings::default()
        },
    )
    .await?;
    let docs = st
        .github
        .push(REPO, "feature", web_commit("Docs only", "feature\n"));
    st.deliver(
        "push",
        "d-docs",
        &push_payload("feature", &sha, &docs, &["docs/readme.md"], false),
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
    st.set_build(
        &st.s.h.preview,
        BuildSettings {
            docker_context: "web".into(),
            auto_deploy: false,
            ..BuildSettings::default()
        },
    )
    .await?;
    let off_sha = st
        .github
        .push(REPO, "feature", web_commit("While off", "feature off\n"));
    st.deliver(
        "push",
        "d-off",
        &push_payload("feature", &docs, &off_sha, &["web/index.html"], false),
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
        &push_payload("feature", &off_sha, ZERO, &[], true),
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
    wait_disconnected(&st).await?;
    Ok(())
}

/// The owner takes a repository away from the app: the apps connected to
/// it through that installation are disconnected, no other; its pushes then
/// start nothing.
#[tokio::test]
async fn a_repository_removed_from_the_installation_is_disconnected() -> Result<()> {
    let st = Stack::start().await?;
    let other = payloads::Repository {
        id: 4321,
        full_name: "acme/other",
        ..repository()
    };
    let (status, _) = st
        .deliver(
            "installation_repositories",
            "d-removed-other",
            &payloads::installation_repositories("removed", &[other]),
            Some(SECRET),
        )
        .await?;
    assert_eq!(status, 202);
    // Another repository went: this connection stays.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        connections::get(&st.s.h.db.pool, &st.s.h.app)
            .await?
            .is_some()
    );
    let (status, _) = st
        .deliver(
            "installation_repositories",
            "d-removed-shop",
            &payloads::installation_repositories("removed", &[repository()]),
            Some(SECRET),
        )
        .await?;
    assert_eq!(status, 202);
    wait_disconnected(&st).await?;
    // Its pushes now answer like any repository nobody connected.
    let sha = st.github.push(REPO, "main", web_commit("After", "after\n"));
    let payload = push_payload("main", ZERO, &sha, &["web/index.html"], false);
    let (status, body) = st
        .deliver("push", "d-after-removal", &payload, Some(SECRET))
        .await?;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or("")
            .contains("no app is connected to acme/shop"),
        "{body}"
    );
    Ok(())
}

#[tokio::test]
async fn a_worker_killed_half_way_through_a_delivery_makes_one_deployment_per_app() -> Result<()> {
    let mut st = Stack::start().await?;
    let (api, api_preview) = st.second_app().await?;
    let sha = st
        .github
        .push(REPO, "main", web_commit("Crash test", "crash\n"));
    let payload = push_payload("main", ZERO, &sha, &["web/index.html"], false);
    // Hold the second app's insert: a locking read of its (missing)
    // deployment row takes the gap lock its INSERT waits for — bounded by
    // two rows of that app around its key, so no other insert waits. The
    // handler makes the first app's deployment, then blocks on the second.
    for bound in ["a-lower", "zz-upper"] {
        let app = api.clone();
        st.s.h
            .pending_with(&api_preview, move |d| {
                d.app_id = app;
                d.idempotency_key = Some(bound.into());
            })
            .await?;
    }
    let mut blocker = st.s.h.db.pool.begin().await?;
    let held: Option<String> = sqlx::query_scalar(
        "SELECT id FROM deployments WHERE app_id = ? AND idempotency_key = 'github:d-crash' FOR UPDATE",
    )
    .bind(&api)
    .fetch_optional(&mut *blocker)
    .await?;
    assert!(held.is_none());
    let (status, _) = st
        .deliver("push", "d-crash", &payload, Some(SECRET))
        .await?;
    assert_eq!(status, 202);
    let web = st.made_by("d-crash").await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        deployment::find_by_idempotency_key(&st.s.h.db.pool, &api, "github:d-crash")
            .await?
            .is_none(),
        "the second app's deployment is held"
    );
    // Killed half-way: one app done, the other's step in flight.
    st.s.h.crash_worker().await?;
    blocker.rollback().await?;
    // A redelivery on top changes nothing.
    st.deliver("push", "d-crash", &payload, Some(SECRET))
        .await?;
    let other = eventually(Duration::from_secs(60), || async {
        Ok(
            deployment::find_by_idempotency_key(&st.s.h.db.pool, &api, "github:d-crash")
                .await?
                .is_some(),
        )
    })
    .await;
    other.with_context(|| st.s.h.worker_log(40))?;
    for app in [&st.s.h.app, &api] {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM deployments WHERE app_id = ? AND idempotency_key LIKE 'github:%'",
        )
        .bind(app)
        .fetch_one(&st.s.h.db.pool)
        .await?;
        assert_eq!(n, 1, "exactly one deployment for {app}");
    }
    let api_d = deployment::find_by_idempotency_key(&st.s.h.db.pool, &api, "github:d-crash")
        .await?
        .context("made")?;
    for id in [&web.id, &api_d.id] {
        st.s.h.wait_status(id, DeploymentStatus::Deploying).await?;
        st.s.h.report_running(id, 1).await?;
        st.s.h.wait_finished(id).await?;
        assert_eq!(
            deployment::get(&st.s.h.db.pool, id).await?.status,
            DeploymentStatus::Ready
        );
    }
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

    // New commits: GitHub sends the branch's push and the pull request's
    // synchronize; the commit deploys once, as a preview of the pull
    // request, and the same comment is edited in place.
    let second = st
        .github
        .push(REPO, "nicer", web_commit("Nicer still", "nicer still\n"));
    let push = push_payload("nicer", &first, &second, &["web/index.html"], false);
    st.deliver("push", "d-pr5-push", &push, Some(SECRET))
        .await?;
    let d2 = st.made_by("d-pr5-push").await?;
    let sync = pull_request_payload("synchronize", 5, "nicer", &second, REPO);
    let (status, _) = st
        .deliver("pull_request", "d-pr5-sync", &sync, Some(SECRET))
        .await?;
    assert_eq!(status, 202);
    eventually(Duration::from_secs(30), || async {
        Ok(deployment::get(&st.s.h.db.pool, &d2.id)
            .await?
            .git_pr_number
            == Some(5))
    })
    .await?;
    let of_second = st
        .deployments()
        .await?
        .into_iter()
        .filter(|d| d.git_commit_sha.as_deref() == Some(second.as_str()))
        .count();
    assert_eq!(of_second, 1, "one deployment per commit");
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
    assert!(
        body.contains("(https://") && body.contains("nicer"),
        "{body}"
    );
    let gh = st.github.deployments(REPO);
    assert!(
        gh.iter()
            .all(|g| g.environment == "web (preview)" && g.transient),
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

/// Waits until the stack's app has no repository connection.
async fn wait_disconnected(st: &Stack) -> Result<()> {
    eventually(Duration::from_secs(30), || async {
        Ok(connections::get(&st.s.h.db.pool, &st.s.h.app)
            .await?
            .is_none())
    })
    .await
}
