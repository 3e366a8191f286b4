//! The Deployment object: delayed desired-state changes, last writer wins,
//! clearing, and the live deployment never stopped.

use std::time::Duration;

use anyhow::{Context, Result};
use ctrl_core::status::DesiredState;
use ctrl_db::{deployment, tenancy, topology};

use crate::harness::{Harness, eventually};

async fn desired(h: &Harness, id: &str) -> Result<(DesiredState, Vec<(DesiredState, u64)>)> {
    let d = deployment::get(&h.db.pool, id).await?;
    let rows = topology::list_by_deployment(&h.db.pool, id)
        .await?
        .into_iter()
        .map(|t| (t.desired_status, t.version))
        .collect();
    Ok((d.desired_state, rows))
}

fn schedule(state: &str, delay_millis: u64, overwrite: bool) -> serde_json::Value {
    serde_json::json!({ "delay_millis": delay_millis, "state": state, "overwrite": overwrite })
}

#[tokio::test]
async fn a_scheduled_stop_applies_after_the_delay_with_new_region_versions() -> Result<()> {
    let h = Harness::start().await?;
    let id = h.ready_deployment(&h.preview).await?;
    let (_, before) = desired(&h, &id).await?;
    h.call_private(
        &format!("Deployment/{id}/ScheduleDesiredStateChange"),
        Some(schedule("stopped", 600, true)),
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        desired(&h, &id).await?.0,
        DesiredState::Running,
        "not before the delay"
    );
    eventually(Duration::from_secs(15), || async {
        Ok(desired(&h, &id).await?.0 == DesiredState::Stopped)
    })
    .await?;
    let (_, after) = desired(&h, &id).await?;
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].0, DesiredState::Stopped);
    assert!(
        after[0].1 > before[0].1,
        "a new region version: {before:?} -> {after:?}"
    );
    Ok(())
}

#[tokio::test]
async fn the_last_schedule_wins_and_a_cleared_change_never_applies() -> Result<()> {
    let h = Harness::start().await?;
    let replaced = h.ready_deployment(&h.preview).await?;
    h.call_private(
        &format!("Deployment/{replaced}/ScheduleDesiredStateChange"),
        Some(schedule("stopped", 800, true)),
    )
    .await?;
    h.call_private(
        &format!("Deployment/{replaced}/ScheduleDesiredStateChange"),
        Some(schedule("running", 0, true)),
    )
    .await?;
    let cleared = h.ready_deployment(&h.preview).await?;
    h.call_private(
        &format!("Deployment/{cleared}/ScheduleDesiredStateChange"),
        Some(schedule("stopped", 800, true)),
    )
    .await?;
    h.call_private(
        &format!("Deployment/{cleared}/ClearScheduledStateChanges"),
        None,
    )
    .await?;
    let kept = h.ready_deployment(&h.preview).await?;
    h.call_private(
        &format!("Deployment/{kept}/ScheduleDesiredStateChange"),
        Some(schedule("stopped", 600, false)),
    )
    .await?;
    h.call_private(
        &format!("Deployment/{kept}/ScheduleDesiredStateChange"),
        Some(schedule("running", 0, false)),
    )
    .await?;

    // Wait until both delayed calls have run (they complete as no-ops or changes).
    eventually(Duration::from_secs(15), || async {
        let done = |rows: Vec<serde_json::Value>| {
            rows.iter().filter(|r| r["status"] == "completed").count()
        };
        Ok(done(
            h.invocations("Deployment", &replaced, "ChangeDesiredState")
                .await?,
        ) == 2
            && done(
                h.invocations("Deployment", &cleared, "ChangeDesiredState")
                    .await?,
            ) == 1
            && done(
                h.invocations("Deployment", &kept, "ChangeDesiredState")
                    .await?,
            ) == 1)
    })
    .await?;
    assert_eq!(
        desired(&h, &replaced).await?.0,
        DesiredState::Running,
        "the later schedule replaced the stop"
    );
    assert_eq!(
        desired(&h, &cleared).await?.0,
        DesiredState::Running,
        "the cleared stop never applied"
    );
    assert_eq!(
        desired(&h, &kept).await?.0,
        DesiredState::Stopped,
        "overwrite=false keeps the first schedule"
    );
    Ok(())
}

#[tokio::test]
async fn the_live_deployment_is_never_stopped() -> Result<()> {
    let h = Harness::start().await?;
    let live = h.ready_deployment(&h.production).await?;
    let mut conn = h.db.pool.acquire().await?;
    tenancy::swap_live_deployment(&mut conn, &h.app, &live, false, "test-swap", 3).await?;
    drop(conn);
    h.call_private(
        &format!("Deployment/{live}/ScheduleDesiredStateChange"),
        Some(schedule("stopped", 0, true)),
    )
    .await?;
    eventually(Duration::from_secs(15), || async {
        let rows = h
            .invocations("Deployment", &live, "ChangeDesiredState")
            .await?;
        Ok(rows.iter().any(|r| r["status"] == "completed"))
    })
    .await?;
    let rows = h
        .invocations("Deployment", &live, "ChangeDesiredState")
        .await?;
    let failure = rows[0]["completion_failure"].to_string();
    assert!(
        failure.contains("The live deployment cannot be stopped."),
        "{failure}"
    );
    assert_eq!(desired(&h, &live).await?.0, DesiredState::Running);
    let versions: Vec<_> = desired(&h, &live).await?.1;
    assert_eq!(versions[0].0, DesiredState::Running, "topology untouched");
    Ok(())
}

#[test]
fn a_bad_configuration_exits_2_naming_the_field() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("worker.toml");
    std::fs::write(
        &config,
        "[restate]\nadmin_url = \"ftp://nope\"\n[database]\nurl = \"mysql://x@127.0.0.1:1/db\"\n",
    )?;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ctrl-worker"))
        .arg("--config")
        .arg(&config)
        .output()?;
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`restate.admin_url` must be a http or https URL"),
        "{stderr}"
    );
    Ok(())
}

/// The names ctrl-api and cluster-sync call (`ctrl_core::workflows`) are
/// exactly what the worker registered with Restate.
#[tokio::test]
async fn the_contract_names_are_the_registered_services_and_handlers() -> Result<()> {
    use ctrl_core::workflows as w;
    let h = crate::harness::Harness::start().await?;
    let services: serde_json::Value = ctrl_testkit::http_client()
        .get(format!("{}/services", h.restate.admin_url()))
        .send()
        .await?
        .json()
        .await?;
    let registered: std::collections::BTreeSet<(String, String)> = services["services"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| {
            let service = s["name"].as_str().unwrap_or_default().to_owned();
            s["handlers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |h| {
                    (
                        service.clone(),
                        h["name"].as_str().unwrap_or_default().to_owned(),
                    )
                })
        })
        .collect();
    for (service, handler) in [
        (w::DEPLOY_SERVICE, w::DEPLOY_HANDLER),
        (w::DEPLOY_SERVICE, w::WAKE_HANDLER),
        (w::DEPLOY_SERVICE, w::DELETE_DEPLOYMENT_HANDLER),
        (w::DEPLOY_SERVICE, w::NOTIFY_INSTANCES_HANDLER),
        (w::DEPLOY_SERVICE, w::ROLLBACK_HANDLER),
        (w::DEPLOY_SERVICE, w::PROMOTE_HANDLER),
        (w::DEPLOYMENT_SERVICE, w::SCHEDULE_DESIRED_STATE_HANDLER),
        (w::DELETION_SERVICE, w::DELETION_HANDLER),
    ] {
        assert!(
            registered.contains(&(service.to_owned(), handler.to_owned())),
            "{service}/{handler} is not registered; the worker has {registered:?}"
        );
    }
    Ok(())
}

/// Seed 001's worker file starts the worker as it is: it listens on
/// `restate.http_port` (on loopback here, through `listen`), reports ready only once registered with Restate
/// (here it cannot be: nothing answers at the admin URL), and says at start
/// which settings ctrl does not use — without their secret values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_shaped_file_starts_the_worker_ready_only_once_registered() -> Result<()> {
    let db = ctrl_testkit::test_database().await?;
    let dir = tempfile::tempdir()?;
    let [restate_port, health_port, nowhere] = ctrl_testkit::free_ports()?;
    let config = dir.path().join("worker.toml");
    std::fs::write(
        &config,
        format!(
            "instance_id = \"worker-seed-1\"\nregion = \"us-east-1\"\ndefault_domain = \"apps.example.com\"\n\
             cname_domain = \"edge.example.com\"\n\
             [database]\nurl = \"{url}\"\n\
             [restate]\nadmin_url = \"http://127.0.0.1:{nowhere}\"\nhttp_port = {restate_port}\n\
             listen = \"127.0.0.1:{restate_port}\"\n\
             register_as = \"http://127.0.0.1:{restate_port}\"\nregister_attempts = 1000\n\
             [health]\nlisten = \"127.0.0.1:{health_port}\"\n\
             [clickhouse]\nurl = \"clickhouse://default:ch-secret-pw@127.0.0.1:9000\"\n\
             [slack]\nquota_check_webhook_url = \"https://hooks.slack.com/services/slack-secret\"\n\
             [log]\nformat = \"text\"\n",
            url = db.url,
        ),
    )?;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ctrl-worker"));
    cmd.arg("--config").arg(&config).env_remove("RUST_LOG");
    let worker = ctrl_testkit::process::Supervised::spawn(
        "ctrl-worker",
        cmd,
        &dir.path().join("worker.log"),
        None,
    )?;
    let client = ctrl_testkit::http_client();
    let health = format!("http://127.0.0.1:{health_port}");
    crate::harness::eventually(Duration::from_secs(30), || async {
        Ok(client
            .get(format!("{health}/health/live"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success()))
    })
    .await
    .with_context(|| worker.log_tail(40))?;
    // http_port is where it serves Restate.
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", restate_port))
            .await
            .is_ok()
    );
    let ready = client.get(format!("{health}/health/ready")).send().await?;
    assert_eq!(ready.status(), 503);
    assert!(ready.text().await?.contains("not registered"));
    let log = worker.log_tail(200);
    for unused in [
        "set but not used: cname_domain",
        "set but not used: clickhouse.url",
        "set but not used: slack.quota_check_webhook_url",
        "worker-seed-1",
    ] {
        assert!(log.contains(unused), "{unused}:\n{log}");
    }
    for secret in ["ch-secret-pw", "slack-secret"] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
    Ok(())
}
