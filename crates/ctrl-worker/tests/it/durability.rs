//! Crashes during a deploy: the worker is SIGKILLed in the middle of steps
//! (held there by a row lock the test owns, so the kill lands inside the
//! step's transaction) and while it waits; Restate itself restarts. Each
//! time the deployment finishes with every effect applied exactly once:
//! one topology row with exactly one region version, one network policy,
//! one route per hostname, one row per step.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use ctrl_core::domains::Sticky;
use ctrl_core::status::{DeploymentStatus, DesiredState};
use ctrl_db::{deployment, route, tenancy, topology};

use crate::harness::Harness;

/// Gives the worker time to reach the lock the test holds.
const REACH_THE_LOCK: Duration = Duration::from_millis(700);

/// Every effect of one finished production deploy, exactly once.
async fn assert_applied_once(h: &Harness, id: &str, versions_before: u64) -> Result<()> {
    let d = deployment::get(&h.db.pool, id).await?;
    assert_eq!(d.status, DeploymentStatus::Ready);
    let app = tenancy::get_app(&h.db.pool, &h.app).await?;
    assert_eq!(
        (app.live_deployment_id.as_deref(), app.is_rolled_back),
        (Some(id), false)
    );

    let rows = topology::list_by_deployment(&h.db.pool, id).await?;
    assert_eq!(rows.len(), 1, "one topology row: {rows:?}");
    assert_eq!(
        topology::current_version(&h.db.pool, &h.region).await?,
        versions_before + 1,
        "exactly one region version was taken (no step wrote twice)"
    );
    assert_eq!(rows[0].version, versions_before + 1);
    let policies = topology::list_network_policies(&h.db.pool, id).await?;
    assert_eq!(policies.len(), 1, "{policies:?}");

    let routes = route::list_by_deployment(&h.db.pool, id).await?;
    let mut per_sticky = BTreeMap::new();
    for r in &routes {
        *per_sticky.entry(r.sticky.as_str()).or_insert(0) += 1;
    }
    assert_eq!(
        per_sticky,
        BTreeMap::from([("deployment", 1), ("environment", 1), ("live", 1)])
    );
    let following = route::list_by_environment_sticky(
        &h.db.pool,
        &h.production,
        &[Sticky::Live, Sticky::Environment],
    )
    .await?;
    assert_eq!(following.len(), 2, "no duplicate live/environment routes");

    let steps = deployment::list_steps(&h.db.pool, id).await?;
    assert_eq!(steps.len(), 6, "{steps:?}");
    assert!(
        steps
            .iter()
            .all(|s| s.ended_at.is_some() && s.error.is_none()),
        "{steps:?}"
    );
    let runs = h.invocations("Deploy", id, "Deploy").await?;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert!(runs[0]["completion_failure"].is_null(), "{runs:?}");
    Ok(())
}

/// The keys of a virtual object's state.
async fn state_keys(h: &Harness, service: &str, key: &str) -> Result<Vec<String>> {
    let rows = h
        .query(&format!(
            "SELECT key FROM state WHERE service_name = '{service}' AND service_key = '{key}'"
        ))
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| r["key"].as_str().map(str::to_owned))
        .collect())
}

#[tokio::test]
async fn a_deploy_survives_worker_crashes_inside_its_steps_and_while_it_waits() -> Result<()> {
    let mut h = Harness::start().await?;
    let previous = h.pending_deployment(&h.production, None).await?;
    h.deploy_to_ready(&previous).await?;
    let versions_before = topology::current_version(&h.db.pool, &h.region).await?;
    let d = h.pending_deployment(&h.production, None).await?;

    // 1. Inside the claim: the test holds the deployment's row.
    let mut hold = h.db.pool.begin().await?;
    deployment::set_desired_state(&mut *hold, &d, DesiredState::Running, 9).await?;
    h.deploy(&d).await?;
    tokio::time::sleep(REACH_THE_LOCK).await;
    h.crash_worker().await?;
    hold.rollback().await?;

    // 2. Inside "create topology": the test holds the region's version counter.
    let mut hold = h.db.pool.begin().await?;
    topology::next_version(&mut hold, &h.region).await?;
    h.wait_status(&d, DeploymentStatus::Deploying).await?;
    tokio::time::sleep(REACH_THE_LOCK).await;
    assert!(
        topology::list_by_deployment(&h.db.pool, &d)
            .await?
            .is_empty(),
        "held before the topology write"
    );
    h.crash_worker().await?;
    hold.rollback().await?;

    // 3. While suspended, waiting for instances.
    h.wait_topology(&d, DesiredState::Running).await?;
    h.crash_worker().await?;

    // 4. Inside the auto-promotion: the test holds the app's row.
    let mut hold = h.db.pool.begin().await?;
    tenancy::lock_app(&mut hold, &h.app).await?;
    h.report_running(&d, 1).await?;
    h.wait_status(&d, DeploymentStatus::Ready).await?;
    tokio::time::sleep(REACH_THE_LOCK).await;
    h.crash_worker().await?;
    hold.rollback().await?;

    h.wait_finished(&d).await?;
    assert_applied_once(&h, &d, versions_before).await?;
    // The replaced deployment is scheduled to retire (30 min by default), once.
    assert_eq!(
        state_keys(&h, "Deployment", &previous).await?,
        ["transition"]
    );
    assert_eq!(
        deployment::get(&h.db.pool, &previous).await?.desired_state,
        DesiredState::Running,
        "not before the delay"
    );
    Ok(())
}

#[tokio::test]
async fn a_deploy_survives_a_restate_restart_while_it_waits() -> Result<()> {
    let mut h = Harness::start().await?;
    let previous = h.pending_deployment(&h.production, None).await?;
    h.deploy_to_ready(&previous).await?;
    let versions_before = topology::current_version(&h.db.pool, &h.region).await?;
    let d = h.pending_deployment(&h.production, None).await?;
    h.deploy(&d).await?;
    h.wait_topology(&d, DesiredState::Running).await?;

    h.restate.restart().await?;
    h.report_running(&d, 1).await?;
    h.wait_finished(&d).await?;
    assert_applied_once(&h, &d, versions_before).await
}

/// A deploy that waits long enough for Restate to suspend it (its
/// inactivity timeout) resumes by replaying its journal from the start;
/// what it logged before is not logged again. Each attempt is a span
/// naming the deployment, exported to the collector.
#[tokio::test]
async fn a_suspended_and_replayed_deploy_logs_its_lines_once() -> Result<()> {
    let restate = ctrl_testkit::RestateServer::builder()
        .inactivity_timeout(Duration::from_millis(300))
        .start()
        .await?;
    let collector = ctrl_testkit::OtlpCollector::start().await?;
    let traces = format!("[log]\notlp_endpoint = \"{}\"\n", collector.endpoint());
    let h = Harness::start_on(restate, "", &traces).await?;
    let id = h.pending_deployment(&h.preview, None).await?;
    h.deploy(&id).await?;
    h.wait_topology(&id, DesiredState::Running).await?;
    // Waiting for the region, long enough to be suspended.
    tokio::time::sleep(Duration::from_secs(2)).await;
    h.report_running(&id, 1).await?;
    h.wait_finished(&id).await?;

    // It was replayed: Restate sent the handler more than one attempt.
    let metrics = ctrl_testkit::http_client()
        .get(format!("{}/metrics", h.health_url()))
        .send()
        .await?
        .text()
        .await?;
    let attempts: f64 = metrics
        .lines()
        .find(|l| {
            l.starts_with("ctrl_worker_handler_attempts_total{")
                && l.contains("service=\"Deploy\"")
                && l.contains("handler=\"Deploy\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_default();
    assert!(
        attempts >= 2.0,
        "not replayed ({attempts} attempts):\n{metrics}"
    );
    let log = h.worker_log(10_000);
    let started = log
        .lines()
        .filter(|l| l.contains("deploy started") && l.contains(&id))
        .count();
    assert_eq!(started, 1, "{log}");

    let span = collector
        .wait_for(Duration::from_secs(10), |s| {
            s.name == "deploy" && s.attributes.get("deployment_id") == Some(&id)
        })
        .await?;
    assert_eq!(span.service, "ctrl-worker");
    Ok(())
}
