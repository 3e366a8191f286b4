//! The `ctrl-api` binary as operators run it.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ctrl_proto::ctrl::v1 as pb;
use ctrl_testkit::process::Supervised;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use pb::ctrl_service_connect_client::CtrlServiceClient;
use sqlx::Connection;

const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fn config(dir: &Path, database_url: &str, port: u16, token: &str) -> Result<std::path::PathBuf> {
    let path = dir.join("ctrl-api.toml");
    std::fs::write(
        &path,
        format!(
            "[http]\nlisten = \"127.0.0.1:{port}\"\nops_listen = \"127.0.0.1:0\"\nshutdown_grace_seconds = 5\n\
             [auth]\ntokens = [\"${{API_TOKEN}}\"]\n\
             [database]\nurl = \"{database_url}\"\nconnect_timeout_seconds = 5\n\
             [vault]\nkeys = [{{ id = \"k1\", key = \"{KEY}\" }}]\n\
             [restate]\ningress_url = \"http://127.0.0.1:1\"\nadmin_url = \"http://127.0.0.1:1\"\n"
        ),
    )?;
    std::fs::write(dir.join("token"), token)?;
    Ok(path)
}

fn ctrl_api(config: &Path, token: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ctrl-api"));
    cmd.arg("--config")
        .arg(config)
        .env("API_TOKEN", token)
        .env_remove("RUST_LOG");
    cmd
}

#[tokio::test]
async fn bad_configuration_exits_before_any_port_opens_and_names_the_field() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let port = ctrl_testkit::free_port()?;
    let path = config(
        dir.path(),
        "mysql://ctrl:ctrl@127.0.0.1:1/none",
        port,
        "short",
    )?;
    let out = ctrl_api(&path, "short").output()?;
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`auth.tokens[0]` must be at least 16 characters"),
        "{stderr}"
    );
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
        "the port was never taken"
    );

    let out = ctrl_api(&dir.path().join("missing.toml"), "x").output()?;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));
    Ok(())
}

/// Migrates, serves, exports its spans to an OTLP collector, and drains on
/// SIGTERM, flushing the last spans before it exits.
#[tokio::test]
async fn migrate_then_serve_then_drain_on_sigterm() -> Result<()> {
    // An empty database (not migrated) on the shared test server.
    let seed = ctrl_testkit::test_database().await?;
    let name = format!("{}_bin", seed.name);
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE `{name}`")))
        .execute(&seed.pool)
        .await?;
    let url = seed.url.replace(&seed.name, &name);

    let dir = tempfile::tempdir()?;
    let port = ctrl_testkit::free_port()?;
    let token = "binary-test-token-0123456789";
    let path = config(dir.path(), &url, port, token)?;

    let out = ctrl_api(&path, token).arg("migrate").output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut conn = sqlx::mysql::MySqlConnection::connect(&url).await?;
    let tables: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE()",
    )
    .fetch_one(&mut conn)
    .await?;
    assert!(tables >= 20, "{tables}");

    // Spans go to a collector, exported in batches while it runs.
    let collector = ctrl_testkit::OtlpCollector::start().await?;
    let mut text = std::fs::read_to_string(&path)?;
    text.push_str(&format!(
        "[log]\notlp_endpoint = \"{}\"\n",
        collector.endpoint()
    ));
    std::fs::write(&path, text)?;

    let log = dir.path().join("api.log");
    let mut server = Supervised::spawn("ctrl-api", ctrl_api(&path, token), &log, None)?;
    let client = CtrlServiceClient::builder(format!("http://127.0.0.1:{port}")).build()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if client.liveness(&pb::LivenessRequest {}).await.is_ok() {
            break;
        }
        if server.exit_status().is_some() || Instant::now() > deadline {
            bail!("ctrl-api did not start:\n{}", server.log_tail(30));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A request about a deployment: its log line names the deployment.
    let asked = ctrl_testkit::http_client()
        .post(format!(
            "http://127.0.0.1:{port}/ctrl.v1.DeploymentService/GetDeployment"
        ))
        .header("content-type", "application/json")
        .bearer_auth(token)
        .body(r#"{"deploymentId":"d_0123456789abcdef"}"#)
        .send()
        .await?;
    assert_eq!(asked.status(), 404);
    kill(Pid::from_raw(server.id().pid), Signal::SIGTERM)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = server.exit_status() {
            break status;
        }
        if Instant::now() > deadline {
            bail!("ctrl-api did not exit on SIGTERM:\n{}", server.log_tail(30));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}: {}", server.log_tail(20));
    let log_text = std::fs::read_to_string(&log).context("log")?;
    assert!(log_text.contains("shutting down"), "{log_text}");
    assert!(
        log_text.lines().any(|l| l.contains("GetDeployment")
            && l.contains("deployment_id=d_0123456789abcdef")
            && l.contains("handled")),
        "{log_text}"
    );
    assert!(!log_text.contains(token), "the token must never be logged");

    // The request's span reached the collector, named after ctrl-api and
    // carrying the RPC and the deployment it was about.
    let span = collector
        .wait_for(Duration::from_secs(10), |s| {
            s.name == "request"
                && s.attributes.get("deployment_id").map(String::as_str)
                    == Some("d_0123456789abcdef")
        })
        .await?;
    assert_eq!(span.service, "ctrl-api");
    assert!(
        span.attributes
            .get("rpc")
            .is_some_and(|r| r.contains("GetDeployment")),
        "{span:?}"
    );
    assert_eq!(span.trace_id.len(), 16);
    assert!(
        !collector
            .spans()
            .iter()
            .any(|s| format!("{s:?}").contains(token)),
        "the token must never be exported"
    );
    Ok(())
}

#[tokio::test]
async fn agents_ensure_registers_a_token_once_and_refuses_a_second_binding() -> Result<()> {
    let db = ctrl_testkit::test_database().await?;
    let dir = tempfile::tempdir()?;
    let path = config(
        dir.path(),
        &db.url,
        ctrl_testkit::free_port()?,
        crate::TOKEN,
    )?;
    let token = "0123456789abcdef0123456789abcdef-operator-made";
    let ensure = |region: &str, token_env: Option<&str>| {
        let mut cmd = ctrl_api(&path, crate::TOKEN);
        cmd.args([
            "agents",
            "ensure",
            "--kind",
            "krane",
            "--platform",
            "aws",
            "--region",
            region,
            "--cell-id",
            "use1-a",
            "--name",
            "prod krane",
        ]);
        if let Some(value) = token_env {
            cmd.env("CTRL_AGENT_TOKEN", value);
        } else {
            cmd.env_remove("CTRL_AGENT_TOKEN");
        }
        cmd.output()
    };
    let first = ensure("us-east-1", Some(token))?;
    assert!(first.status.success(), "{first:?}");
    let id = String::from_utf8(first.stdout)?.trim().to_owned();
    assert!(id.starts_with("agt_"), "{id}");
    // Again: the same credential, nothing added.
    let again = ensure("us-east-1", Some(token))?;
    assert!(again.status.success(), "{again:?}");
    assert_eq!(String::from_utf8(again.stdout)?.trim(), id);
    assert_eq!(ctrl_db::agent::list(&db.pool, None).await?.len(), 1);
    // The same token for another binding, a short token, no token: refused,
    // naming what is wrong, never echoing the token.
    for (region, value, expected) in [
        ("eu-west-1", Some(token), "another binding"),
        ("us-east-1", Some("short"), "at least 32 characters"),
        ("us-east-1", None, "CTRL_AGENT_TOKEN is not set"),
    ] {
        let out = ensure(region, value)?;
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{stderr}");
        assert!(!stderr.contains(token), "{stderr}");
    }
    assert_eq!(ctrl_db::agent::list(&db.pool, None).await?.len(), 1);
    Ok(())
}
