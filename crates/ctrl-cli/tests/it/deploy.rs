//! A newcomer's session, command by command, on the real stack: tenancy,
//! variables, deploys followed live, rollback and promote, a failing deploy,
//! stop, and the JSON scripts read.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::support::{
    READINESS_TIMEOUT_SECONDS, Stack, TOKEN, V1, V2, deployment_id, fetch, instance_url, run_ctrl,
};

fn str_field<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_deploys_rolls_back_and_scripts_with_json() -> Result<()> {
    let stack = Stack::start().await?;

    // Tenancy by slug; the only workspace needs no --workspace.
    let created = stack.ok(&["workspaces", "create", "acme"]).await?;
    assert!(
        created.stdout.contains("created workspace acme"),
        "{created}"
    );
    stack.ok(&["projects", "create", "shop"]).await?;
    let app = stack
        .json(&["apps", "create", "web", "--project", "shop"])
        .await?;
    let app_id = str_field(&app, "id").to_owned();
    assert!(app_id.starts_with("app_"), "{app}");
    let envs = stack.json(&["envs", "list", "--app", "shop/web"]).await?;
    let slugs: Vec<&str> = envs
        .as_array()
        .context("array")?
        .iter()
        .map(|e| str_field(e, "slug"))
        .collect();
    assert_eq!(slugs, ["production", "preview"]);
    let listed = stack.ok(&["apps", "list"]).await?;
    assert!(listed.stdout.contains("shop/web"), "{listed}");

    // Variables: values are never printed unless asked, write-only never.
    stack
        .ok(&["env", "set", "--app", "web", "GREETING=hello-there"])
        .await?;
    stack
        .ok(&[
            "env",
            "set",
            "--app",
            "web",
            "--write-only",
            "API_KEY=s3cr3t-value",
        ])
        .await?;
    let hidden = stack.ok(&["env", "list", "--app", "web"]).await?;
    assert!(hidden.stdout.contains("GREETING"), "{hidden}");
    assert!(!hidden.stdout.contains("hello-there"), "{hidden}");
    let revealed = stack
        .ok(&["env", "list", "--app", "web", "--reveal"])
        .await?;
    assert!(revealed.stdout.contains("hello-there"), "{revealed}");
    assert!(!revealed.stdout.contains("s3cr3t-value"), "{revealed}");
    assert!(revealed.stdout.contains("(write-only)"), "{revealed}");

    // Deploy v1: steps stream as plain lines (no terminal), URLs at the end.
    let first = stack
        .ok(&["deploy", "--app", "shop/web", "--image", V1])
        .await?;
    for step in ["starting", "building", "deploying", "network", "finalizing"] {
        assert!(
            first
                .stderr
                .lines()
                .any(|l| l.trim_start().starts_with(step) && l.contains("done")),
            "no finished {step} step:\n{first}"
        );
    }
    assert!(first.stdout.contains("is ready"), "{first}");
    assert!(first.stdout.contains("https://"), "no hostname:\n{first}");
    let v1_id = deployment_id(&first.stdout)?;
    let v1_url = instance_url(&first.stdout)?;
    assert_eq!(fetch(&v1_url).await?.trim(), "v1");

    // Deploy v2: it goes live.
    let second = stack.ok(&["deploy", "--app", "web", "--image", V2]).await?;
    let v2_id = deployment_id(&second.stdout)?;
    assert!(second.stdout.contains("live"), "{second}");
    assert_eq!(fetch(&instance_url(&second.stdout)?).await?.trim(), "v2");

    // Scripts read JSON.
    let list = stack.json(&["deployments", "list", "--app", "web"]).await?;
    let list = list.as_array().context("array")?;
    assert_eq!(
        list.iter().map(|d| str_field(d, "id")).collect::<Vec<_>>(),
        [v2_id.as_str(), v1_id.as_str()],
        "newest first"
    );
    assert_eq!(list[0]["isLive"], Value::Bool(true));
    assert_eq!(str_field(&list[0], "status"), "DEPLOYMENT_STATUS_READY");
    let full = stack.json(&["deployments", "get", &v2_id]).await?;
    assert_eq!(str_field(&full, "image"), V2);
    assert!(
        full["steps"].as_array().is_some_and(|s| s.len() >= 5),
        "{full}"
    );
    let instance = &full["regions"][0]["instances"][0];
    assert_eq!(str_field(instance, "status"), "INSTANCE_STATUS_RUNNING");

    // Rollback without naming the target goes to v1; promote brings v2 back.
    let rolled = stack.ok(&["rollback", "--app", "web"]).await?;
    assert!(rolled.stdout.contains(&v1_id), "{rolled}");
    let app = stack.json(&["apps", "get", "shop/web"]).await?;
    assert_eq!(str_field(&app, "liveDeploymentId"), v1_id);
    assert_eq!(app["isRolledBack"], Value::Bool(true));
    stack.ok(&["promote", &v2_id]).await?;
    let app = stack.json(&["apps", "get", &app_id]).await?;
    assert_eq!(str_field(&app, "liveDeploymentId"), v2_id);
    assert_eq!(app.get("isRolledBack"), None, "false is left out: {app}");

    // A deploy that cannot become healthy exits non-zero with the step's message.
    let failed = stack
        .ctrl(&[
            "deploy",
            "--app",
            "web",
            "--image",
            "localhost/does-not-exist:1",
        ])
        .await?;
    assert_eq!(failed.code, Some(1), "{failed}");
    let last = failed.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: deployment d_") && last.contains("failed at step deploying"),
        "{failed}"
    );
    assert!(
        last.contains(&format!(
            "Not enough regions became healthy within {READINESS_TIMEOUT_SECONDS} s"
        )),
        "{failed}"
    );
    let failed_id = deployment_id(last)?;
    let shown = stack.ok(&["deployments", "get", &failed_id]).await?;
    assert!(shown.stdout.contains("✗"), "{shown}");
    let cancelled = stack.ok(&["cancel", &failed_id]).await?;
    assert!(cancelled.stdout.contains("is failed"), "{cancelled}");
    // The live deployment is untouched.
    let app = stack.json(&["apps", "get", "web"]).await?;
    assert_eq!(str_field(&app, "liveDeploymentId"), v2_id);

    // --detach returns the id at once; a preview deployment can be stopped.
    let detached = stack
        .ok(&[
            "deploy", "--app", "web", "--env", "preview", "--image", V1, "--detach",
        ])
        .await?;
    let preview_id = detached.stdout.trim().to_owned();
    assert!(preview_id.starts_with("d_"), "{detached}");
    wait_status(&stack, &preview_id, "DEPLOYMENT_STATUS_READY").await?;
    stack.ok(&["stop", &preview_id]).await?;
    wait_status(&stack, &preview_id, "DEPLOYMENT_STATUS_STOPPED").await?;

    // Errors are one line naming what is wrong.
    let missing = stack.ctrl(&["apps", "get", "nope"]).await?;
    assert_eq!(missing.code, Some(1), "{missing}");
    assert_eq!(missing.stderr.lines().count(), 1, "{missing}");
    assert!(
        missing.stderr.contains("app \"nope\" not found"),
        "{missing}"
    );
    let refused = stack.ctrl(&["projects", "delete", "shop"]).await?;
    assert_eq!(refused.code, Some(1), "{refused}");
    assert!(refused.stderr.contains("pass --yes"), "{refused}");
    stack.ok(&["projects", "get", "shop"]).await?;

    // Without flags or environment, the nearest .dev/stack.env is used.
    let repo = tempfile::tempdir()?;
    std::fs::create_dir_all(repo.path().join(".dev"))?;
    std::fs::create_dir_all(repo.path().join("src/deep"))?;
    std::fs::write(
        repo.path().join(".dev/stack.env"),
        format!(
            "# Written by `cargo xtask dev`\nCTRL_API_URL={}\nCTRL_TOKEN={TOKEN}\n",
            stack.api_url
        ),
    )?;
    let found = run_ctrl(&["projects", "list"], &[], &repo.path().join("src/deep")).await?;
    assert!(found.success() && found.stdout.contains("shop"), "{found}");

    // Operators: the region and its agents' credentials (the stack issued
    // krane's with `regions agents add`).
    let regions = stack.ok(&["regions", "list"]).await?;
    assert!(regions.stdout.contains("dev/local"), "{regions}");
    let agents = stack.json(&["regions", "agents", "list"]).await?;
    assert_eq!(agents[0]["cellId"], "local-1", "{agents}");
    assert!(agents[0]["lastUsedAt"].as_str().is_some(), "{agents}");
    let edge = stack
        .ok(&[
            "regions",
            "agents",
            "add",
            "--kind",
            "frontline",
            "--platform",
            "dev",
            "--region",
            "local",
        ])
        .await?;
    assert!(edge.stdout.trim().starts_with("ctrl_agent_"), "{edge}");
    assert!(edge.stderr.contains("shown only now"), "{edge}");
    let edge_id = stack
        .json(&["regions", "agents", "list", "--region", "dev/local"])
        .await?[1]["id"]
        .as_str()
        .map(str::to_owned)
        .expect("the edge's credential");
    let listed = stack.ok(&["regions", "agents", "list"]).await?;
    assert!(listed.stdout.contains("frontline dev/local"), "{listed}");
    assert!(
        !listed.stdout.contains(edge.stdout.trim()),
        "no token in lists"
    );
    let revoked = stack.ok(&["regions", "agents", "revoke", &edge_id]).await?;
    assert!(revoked.stdout.contains("revoked"), "{revoked}");
    let active = stack.json(&["regions", "agents", "list"]).await?;
    assert_eq!(active.as_array().map(Vec::len), Some(1), "{active}");
    let bad = stack
        .ctrl(&[
            "regions",
            "agents",
            "add",
            "--kind",
            "krane",
            "--platform",
            "dev",
            "--region",
            "local",
        ])
        .await?;
    assert_eq!(bad.code, Some(2), "--cell is required for krane: {bad}");
    Ok(())
}

async fn wait_status(stack: &Stack, id: &str, want: &str) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let d = stack.json(&["deployments", "get", id]).await?;
        if str_field(&d, "status") == want {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{id} did not become {want}: {d}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
