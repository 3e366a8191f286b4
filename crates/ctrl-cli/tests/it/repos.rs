//! `ctrl repos` and `ctrl deployments approve` on the real stack: an app is
//! connected to a repository, listed, reconnected elsewhere and
//! disconnected, with bad input refused in one line naming the field; a
//! deployment of a pull request held for approval (as the webhook leaves
//! one from a fork) shows its pull request, is approved once and deploys.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use ctrl_core::status::DeploymentStatus;
use serde_json::Value;

use crate::support::{Stack, V1};

fn str_field<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// A deployment of V1 for pull request 7 from a fork, in `app`'s preview
/// environment, awaiting approval.
async fn held_deployment(stack: &Stack, app: &Value) -> Result<String> {
    use ctrl_db::deployment::{self, NewDeployment};
    use ctrl_db::types::{SourceKind, TriggerKind};
    let db = &stack.db.pool;
    let app_id = str_field(app, "id");
    let env = ctrl_db::tenancy::find_environment_by_slug(db, app_id, "preview").await?;
    let id = ctrl_core::id::generate(ctrl_core::id::IdKind::Deployment, &mut rand::rng());
    let now = now_ms();
    let new = NewDeployment {
        id: id.clone(),
        k8s_name: ctrl_core::names::random_dns1035(12, &mut rand::rng()),
        workspace_id: str_field(app, "workspaceId").to_owned(),
        project_id: str_field(app, "projectId").to_owned(),
        app_id: app_id.to_owned(),
        environment_id: env.id.clone(),
        source_kind: SourceKind::Image,
        image: Some(V1.into()),
        build: None,
        git_repository: Some("acme/web".into()),
        git_commit_sha: Some("abc1234def5678901234567890123456789abcde".into()),
        git_branch: Some("fork-feature".into()),
        git_commit_message: Some("a change from outside".into()),
        git_commit_author_handle: Some("someone".into()),
        git_commit_author_avatar_url: None,
        git_commit_timestamp: None,
        fork_repository: Some("someone/web".into()),
        git_pr_number: Some(7),
        runtime: ctrl_db::settings::get_runtime(db, &env.id).await?,
        encrypted_environment: Vec::new(),
        trigger_kind: TriggerKind::Github,
        trigger_reason: None,
        actor_id: Some("someone".into()),
        actor_name: None,
        actor_type: None,
        idempotency_key: None,
    };
    deployment::insert(db, &new, now).await?;
    let held = deployment::hold(
        db,
        &id,
        DeploymentStatus::AwaitingApproval,
        "Waiting for approval: pull request #7 comes from a fork",
        now,
    )
    .await?;
    assert!(held, "{id} was not pending");
    Ok(id)
}

/// Unix milliseconds.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The line of `text` that mentions `needle`.
fn line_with<'a>(text: &'a str, needle: &str) -> Result<&'a str> {
    text.lines()
        .find(|l| l.contains(needle))
        .with_context(|| format!("no line with {needle:?} in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repos_are_connected_listed_and_disconnected_and_a_held_deployment_is_approved()
-> Result<()> {
    let stack = Stack::start().await?;
    stack.ok(&["workspaces", "create", "acme"]).await?;
    stack.ok(&["projects", "create", "shop"]).await?;
    let web = stack
        .json(&["apps", "create", "web", "--project", "shop"])
        .await?;
    stack
        .ok(&["apps", "create", "api", "--project", "shop"])
        .await?;

    // Connect, list.
    let connected = stack
        .ok(&[
            "repos",
            "connect",
            "--app",
            "shop/web",
            "--repo",
            "acme/web",
            "--installation",
            "42",
        ])
        .await?;
    assert_eq!(
        connected.stdout.trim(),
        "connected shop/web to acme/web (installation 42): pushes to main deploy production, \
         other branches and pull requests deploy previews",
        "{connected}"
    );
    let listed = stack.ok(&["repos", "list"]).await?;
    assert!(
        listed
            .stdout
            .starts_with("APP       REPOSITORY  INSTALLATION  CONNECTED"),
        "{listed}"
    );
    let row: Vec<&str> = line_with(&listed.stdout, "shop/web")?
        .split_whitespace()
        .collect();
    assert_eq!(row[..3], ["shop/web", "acme/web", "42"], "{listed}");

    // Connecting again replaces the connection.
    stack
        .ok(&[
            "repos",
            "connect",
            "--app",
            "web",
            "--repo",
            "acme/shop",
            "--installation",
            "43",
        ])
        .await?;
    let json = stack.json(&["repos", "list", "--app", "web"]).await?;
    let all = json.as_array().context("an array")?;
    assert_eq!(all.len(), 1, "{json}");
    assert_eq!(str_field(&all[0], "repository"), "acme/shop", "{json}");
    assert_eq!(str_field(&all[0], "appId"), str_field(&web, "id"), "{json}");
    assert_eq!(all[0]["installationId"].to_string().trim_matches('"'), "43");
    let none = stack.ok(&["repos", "list", "--app", "api"]).await?;
    assert!(
        none.stdout.starts_with(
            "no connected repositories; connect one with `ctrl repos connect --app api"
        ),
        "{none}"
    );

    // Bad input: one line naming the field, exit 1; usage errors exit 2.
    let bad = stack
        .ctrl(&[
            "repos",
            "connect",
            "--app",
            "web",
            "--repo",
            "not-a-repo",
            "--installation",
            "1",
        ])
        .await?;
    assert_eq!(bad.code, Some(1), "{bad}");
    assert_eq!(
        bad.stderr.trim(),
        "error: connecting web to not-a-repo: invalid request: repository: \"not-a-repo\" is \
         not a GitHub repository as owner/repo",
        "{bad}"
    );
    let unknown = stack
        .ctrl(&[
            "repos",
            "connect",
            "--app",
            "nope",
            "--repo",
            "acme/web",
            "--installation",
            "1",
        ])
        .await?;
    assert_eq!(unknown.code, Some(1), "{unknown}");
    assert!(
        unknown.stderr.contains("app \"nope\" not found"),
        "{unknown}"
    );
    let zero = stack
        .ctrl(&[
            "repos",
            "connect",
            "--app",
            "web",
            "--repo",
            "acme/web",
            "--installation",
            "0",
        ])
        .await?;
    assert_eq!(zero.code, Some(2), "{zero}");
    assert!(zero.stderr.contains("--installation"), "{zero}");

    // Disconnect, idempotently.
    let gone = stack
        .ok(&["repos", "disconnect", "--app", "shop/web"])
        .await?;
    assert_eq!(
        gone.stdout.trim(),
        "disconnected shop/web from its repository; pushes no longer deploy it"
    );
    let again = stack
        .json(&["repos", "disconnect", "--app", "shop/web"])
        .await?;
    assert_eq!(
        str_field(&again, "message"),
        "shop/web was not connected to a repository"
    );
    let empty = stack.json(&["repos", "list"]).await?;
    assert_eq!(empty, serde_json::json!([]));

    // A held deployment of a pull request: shown, approved once, deployed.
    let id = held_deployment(&stack, &web).await?;
    let shown = stack.ok(&["deployments", "get", &id]).await?;
    assert!(
        line_with(&shown.stdout, "status")?.ends_with("awaiting approval"),
        "{shown}"
    );
    assert!(
        line_with(&shown.stdout, "pull request")?.ends_with("#7 from someone/web"),
        "{shown}"
    );
    let json = stack.json(&["deployments", "get", &id]).await?;
    assert_eq!(json["git"]["prNumber"].to_string().trim_matches('"'), "7");

    let approved = stack.ok(&["deployments", "approve", &id]).await?;
    assert_eq!(
        approved.stdout.trim(),
        format!("approved {id}: it deploys now; `ctrl deployments get {id}` shows how far it is"),
        "{approved}"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let d = stack.json(&["deployments", "get", &id]).await?;
        if str_field(&d, "status") == "DEPLOYMENT_STATUS_READY" {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{id} did not become ready after its approval: {d}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let twice = stack.ok(&["deployments", "approve", &id]).await?;
    assert_eq!(
        twice.stdout.trim(),
        format!("{id} does not await approval (it is ready); nothing changed"),
        "{twice}"
    );
    let missing = stack
        .ctrl(&["deployments", "approve", "d_0000000000000000"])
        .await?;
    assert_eq!(missing.code, Some(1), "{missing}");
    assert!(
        missing
            .stderr
            .starts_with("error: approving d_0000000000000000: not found"),
        "{missing}"
    );
    Ok(())
}
