//! `ctrl logs` on the real stack: the instances' output travels from podman
//! through krane, over its own outbound connection (the log relay), and
//! ctrl-api to the binary — past lines, JSON for scripts, a followed
//! stream, and the errors a user can hit. krane listens for none of it.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::support::{Stack, TOKEN, V1, deployment_id, fetch, instance_url};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployments_output_reaches_ctrl_logs_past_and_followed() -> Result<()> {
    let stack = Stack::start().await?;
    stack.ok(&["workspaces", "create", "acme"]).await?;
    stack.ok(&["projects", "create", "shop"]).await?;
    stack
        .ok(&["apps", "create", "web", "--project", "shop"])
        .await?;
    let deployed = stack.ok(&["deploy", "--app", "web", "--image", V1]).await?;
    let id = deployment_id(&deployed.stdout)?;
    let url = instance_url(&deployed.stdout)?;
    let got = stack.json(&["deployments", "get", &id]).await?;
    let instance = got["regions"][0]["instances"][0]["name"]
        .as_str()
        .context("an instance name")?
        .to_owned();

    // Past output, prefixed by region/instance: the app's first line.
    let past = stack.ok(&["logs", &id]).await?;
    let prefix = format!("local/{instance} | ");
    assert!(
        past.stdout
            .lines()
            .any(|l| l.starts_with(&prefix) && l.contains("starting v1 on port")),
        "{past}"
    );

    // Scripts: one JSON message per line; --app reads the live deployment.
    let json = stack.ok(&["-o", "json", "logs", "--app", "web"]).await?;
    let messages = json
        .stdout
        .lines()
        .map(serde_json::from_str::<Value>)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("NDJSON expected:\n{json}"))?;
    assert!(
        messages.iter().any(|m| m["region"] == "local"
            && m["instance"] == instance.as_str()
            && m["stream"] == "LOG_STREAM_STDOUT"
            && m["line"]
                .as_str()
                .is_some_and(|l| l.contains("starting v1"))),
        "{json}"
    );

    // Followed: a request to the app makes httpd log a line (on its
    // stderr, so on ours), which arrives while `ctrl logs -f` runs.
    // "Only new lines" has the engine's one-second resolution (`since`):
    // start following in a later second than the app's first line.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut follow = stack.spawn_ctrl(&["logs", "-f", "-n", "0", &id])?;
    let stderr = follow.stderr.take().context("stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let seen = loop {
        fetch(&url).await?;
        match tokio::time::timeout(Duration::from_millis(500), lines.next_line()).await {
            Ok(Ok(Some(line))) if line.starts_with(&prefix) => break line,
            Ok(Ok(Some(_))) | Err(_) => {}
            Ok(Ok(None)) => bail!("ctrl logs -f ended: {:?}", follow.wait().await?),
            Ok(Err(e)) => return Err(e.into()),
        }
        if tokio::time::Instant::now() > deadline {
            bail!("no followed line within 20 s");
        }
    };
    assert!(
        follow.try_wait()?.is_none(),
        "still following after {seen:?}"
    );
    follow.kill().await?;
    let mut stdout = String::new();
    tokio::io::AsyncReadExt::read_to_string(
        &mut follow.stdout.take().context("stdout")?,
        &mut stdout,
    )
    .await?;
    assert!(
        !stdout.contains("starting v1"),
        "-n 0 prints no past output:\n{stdout}"
    );

    // What a user gets wrong, in one line each.
    let missing = stack.ctrl(&["logs", "d_0000000000000000"]).await?;
    assert_eq!(missing.code, Some(1), "{missing}");
    assert!(missing.stderr.contains("not found"), "{missing}");
    let elsewhere = stack.ctrl(&["logs", &id, "--region", "mars"]).await?;
    assert_eq!(elsewhere.code, Some(1), "{elsewhere}");
    assert!(
        elsewhere.stderr.contains("its regions: local"),
        "{elsewhere}"
    );
    let too_many = stack.ctrl(&["logs", &id, "-n", "20000"]).await?;
    assert!(too_many.stderr.contains("tail_lines"), "{too_many}");

    // krane serves no logs on its port, whatever the token.
    let endpoint = format!("{}/v1/deployments/{id}/logs", stack.krane_url);
    let client = ctrl_testkit::http_client();
    let asked = client.get(&endpoint).bearer_auth(TOKEN).send().await?;
    assert_eq!(asked.status(), 404);
    assert!(!asked.text().await?.contains("starting v1"));
    Ok(())
}
