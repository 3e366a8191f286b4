//! The state ctrl reports is the truth: what an agent knows reaches the
//! deployment within seconds, a lost notification costs seconds, newer
//! deployments win, wake ends ready, races around the live pointer never
//! leave the live deployment stopped or routes on a cancelled one, and no
//! row stays on its way without a workflow.

use std::time::Duration;

use anyhow::{Result, bail};
use ctrl_core::domains::Sticky;
use ctrl_core::status::{DeploymentStatus, DesiredState, StepKind};
use ctrl_db::{deployment, route, tenancy, topology};
use ctrl_testkit::http_client;
use serde_json::json;

use crate::harness::{Harness, eventually};

#[tokio::test]
async fn a_region_problem_shows_at_once_and_fails_the_deploy_after_the_attempts() -> Result<()> {
    // The readiness timeout is far away: only the attempts can fail it.
    let h = Harness::start().await?;
    let d = h.pending_deployment(&h.preview, None).await?;
    h.deploy(&d).await?;
    h.wait_topology(&d, DesiredState::Running).await?;

    h.report_problem(&d, "image localhost/x:1 not found", 1)
        .await?;
    let shown = "Starting instances in 1 region(s) — local: image localhost/x:1 not found (attempt 1 of 3 failed)";
    eventually(Duration::from_secs(10), || async {
        Ok(h.step(&d, StepKind::Deploying).await?.message == shown)
    })
    .await
    .map_err(|e| anyhow::anyhow!("the step never said {shown:?}: {e}"))?;
    assert_eq!(
        deployment::get(&h.db.pool, &d).await?.status,
        DeploymentStatus::Deploying,
        "one failed attempt is not the end"
    );

    h.report_problem(&d, "image localhost/x:1 not found", 3)
        .await?;
    h.wait_status(&d, DeploymentStatus::Failed).await?;
    let why = "local: image localhost/x:1 not found (3 failed attempts)";
    let row = deployment::get(&h.db.pool, &d).await?;
    assert_eq!(row.error_message.as_deref(), Some(why));
    assert_eq!(
        h.step(&d, StepKind::Deploying).await?.error.as_deref(),
        Some(why)
    );
    // Failing fast still compensates: the instances are stopped.
    h.wait_topology(&d, DesiredState::Stopped).await?;
    Ok(())
}

#[tokio::test]
async fn a_lost_notification_costs_seconds_not_the_timeout() -> Result<()> {
    let h = Harness::start().await?;
    let d = h.pending_deployment(&h.preview, None).await?;
    h.deploy(&d).await?;
    h.wait_topology(&d, DesiredState::Running).await?;
    // The instances run, but nobody tells the workflow.
    h.report_running_quietly(&d, 1).await?;
    h.wait_status(&d, DeploymentStatus::Ready).await?;
    Ok(())
}

#[tokio::test]
async fn an_older_deployment_ready_late_never_takes_traffic_from_a_newer_one() -> Result<()> {
    let h = Harness::start_with("retire_previous_live_seconds = 1").await?;
    let older = h.pending_deployment(&h.production, None).await?;
    let newer = h.pending_deployment(&h.production, None).await?;
    for d in [&older, &newer] {
        h.deploy(d).await?;
        h.wait_topology(d, DesiredState::Running).await?;
    }
    h.report_running(&newer, 1).await?;
    h.wait_finished(&newer).await?;
    assert_eq!(
        tenancy::get_app(&h.db.pool, &h.app)
            .await?
            .live_deployment_id
            .as_deref(),
        Some(newer.as_str())
    );

    // The older one becomes ready afterwards: ready, not live, retired.
    h.report_running(&older, 1).await?;
    h.wait_finished(&older).await?;
    assert_eq!(
        deployment::get(&h.db.pool, &older).await?.status,
        DeploymentStatus::Ready
    );
    let app = tenancy::get_app(&h.db.pool, &h.app).await?;
    assert_eq!(app.live_deployment_id.as_deref(), Some(newer.as_str()));
    for r in route::list_by_environment_sticky(
        &h.db.pool,
        &h.production,
        &[Sticky::Live, Sticky::Environment],
    )
    .await?
    {
        assert_eq!(
            r.deployment_id, newer,
            "{} moved back",
            r.fully_qualified_domain_name
        );
    }
    h.wait_topology(&older, DesiredState::Stopped).await?;
    assert_eq!(
        deployment::get(&h.db.pool, &newer).await?.desired_state,
        DesiredState::Running
    );
    Ok(())
}

#[tokio::test]
async fn an_older_preview_ready_late_never_takes_its_branch_from_a_newer_one() -> Result<()> {
    let h = Harness::start_with("retire_previous_preview_seconds = 1").await?;
    let older = h.pending_deployment(&h.preview, Some("feat")).await?;
    h.deploy(&older).await?;
    h.wait_topology(&older, DesiredState::Running).await?;
    // Created once the older one started (else it would supersede it).
    let newer = h.pending_deployment(&h.preview, Some("feat")).await?;
    h.deploy(&newer).await?;
    h.wait_topology(&newer, DesiredState::Running).await?;
    h.report_running(&newer, 1).await?;
    h.wait_finished(&newer).await?;
    let branch_routes = || async {
        let routes =
            route::list_by_environment_sticky(&h.db.pool, &h.preview, &[Sticky::Branch]).await?;
        anyhow::ensure!(!routes.is_empty(), "no branch route");
        Ok::<_, anyhow::Error>(routes)
    };
    for r in branch_routes().await? {
        assert_eq!(r.deployment_id, newer);
    }

    h.report_running(&older, 1).await?;
    h.wait_finished(&older).await?;
    for r in branch_routes().await? {
        assert_eq!(r.deployment_id, newer, "the older preview took the branch");
    }
    h.wait_topology(&older, DesiredState::Stopped).await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        deployment::get(&h.db.pool, &newer).await?.desired_state,
        DesiredState::Running,
        "the newer preview was retired"
    );
    Ok(())
}

/// Stops `d` the way StopDeployment does and waits until it is stopped.
async fn stop(h: &Harness, d: &str) -> Result<()> {
    h.send(
        &format!("Deployment/{d}/Stop"),
        Some(json!({ "actor": "test" })),
    )
    .await?;
    h.wait_topology(d, DesiredState::Stopped).await?;
    h.report_drained(d).await?;
    h.wait_status(d, DeploymentStatus::Stopped).await
}

#[tokio::test]
async fn wake_waits_for_readiness_and_ends_ready_again_every_time() -> Result<()> {
    let h = Harness::start().await?;
    let d = h.pending_deployment(&h.preview, None).await?;
    h.deploy_to_ready(&d).await?;
    for round in 0..2 {
        stop(&h, &d).await?;
        h.send(
            &format!("Deploy/{d}/Wake"),
            Some(json!({ "deployment_id": d })),
        )
        .await?;
        h.wait_status(&d, DeploymentStatus::Deploying).await?;
        h.wait_topology(&d, DesiredState::Running).await?;
        assert_eq!(
            deployment::get(&h.db.pool, &d).await?.desired_state,
            DesiredState::Running
        );
        h.report_running(&d, 1).await?;
        h.wait_status(&d, DeploymentStatus::Ready)
            .await
            .map_err(|e| e.context(format!("round {round}")))?;
    }

    // A wake whose instances cannot start: stopped again, saying why.
    stop(&h, &d).await?;
    h.send(
        &format!("Deploy/{d}/Wake"),
        Some(json!({ "deployment_id": d })),
    )
    .await?;
    h.wait_topology(&d, DesiredState::Running).await?;
    h.report_problem(&d, "exited with code 1: no config", 3)
        .await?;
    h.wait_topology(&d, DesiredState::Stopped).await?;
    let row = deployment::get(&h.db.pool, &d).await?;
    assert_eq!(row.status, DeploymentStatus::Stopped);
    assert_eq!(row.desired_state, DesiredState::Stopped);
    assert_eq!(
        row.error_message.as_deref(),
        Some("local: exited with code 1: no config (3 failed attempts)")
    );
    Ok(())
}

/// Whether the Deployment object of `id` holds a scheduled change.
async fn retirement_scheduled(h: &Harness, id: &str) -> Result<bool> {
    let rows = h
        .query(&format!(
            "SELECT key FROM state WHERE service_name = 'Deployment' AND service_key = '{id}' AND key = 'transition'"
        ))
        .await?;
    Ok(!rows.is_empty())
}

#[tokio::test]
async fn confirming_a_rollback_retires_the_deployment_rolled_back_from() -> Result<()> {
    let h = Harness::start().await?;
    let first = h.pending_deployment(&h.production, None).await?;
    h.deploy_to_ready(&first).await?;
    let second = h.pending_deployment(&h.production, None).await?;
    h.deploy_to_ready(&second).await?;
    eventually(Duration::from_secs(10), || async {
        retirement_scheduled(&h, &first).await
    })
    .await?;

    let (status, body) = h
        .call(
            &format!("Deploy/{second}/Rollback"),
            json!({ "source_deployment_id": second, "target_deployment_id": first }),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    assert!(
        !retirement_scheduled(&h, &second).await?,
        "rolled back from, kept for now"
    );
    let (status, body) = h
        .call(
            &format!("Deploy/{first}/Promote"),
            json!({ "target_deployment_id": first }),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    eventually(Duration::from_secs(10), || async {
        retirement_scheduled(&h, &second).await
    })
    .await
    .map_err(|e| e.context("the deployment rolled back from never retires"))?;
    Ok(())
}

/// Waits until `Routing/{environment}/{handler}` runs (then it waits for the
/// row the test holds), and a moment more for it to reach that row.
async fn routing_blocked(h: &Harness, environment: &str, handler: &str) -> Result<()> {
    let ran = eventually(Duration::from_secs(20), || async {
        let rows = h.invocations("Routing", environment, handler).await?;
        Ok(rows.iter().any(|r| r["status"] == "running"))
    })
    .await;
    if let Err(e) = ran {
        let rows = h
            .query(&format!(
                "SELECT target_service_name, target_handler_name, status FROM sys_invocation WHERE target_service_key = '{environment}'"
            ))
            .await?;
        let waiting: Vec<(Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT state, info FROM information_schema.processlist WHERE command <> 'Sleep'",
        )
        .fetch_all(&h.db.pool)
        .await?;
        bail!(
            "Routing {handler} never ran ({e}): {rows:?}\nstatements: {waiting:?}\nworker log:\n{}",
            h.worker_log(30)
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(())
}

#[tokio::test]
async fn a_retirement_racing_a_rollback_never_leaves_the_live_deployment_stopped() -> Result<()> {
    let h = Harness::start().await?;
    let first = h.pending_deployment(&h.production, None).await?;
    h.deploy_to_ready(&first).await?;
    let second = h.pending_deployment(&h.production, None).await?;
    h.deploy_to_ready(&second).await?;

    // Hold the app row: the rollback passes its rules, then waits.
    let mut held = h.db.pool.begin().await?;
    tenancy::lock_app(&mut held, &h.app).await?;
    h.send(
        &format!("Deploy/{second}/Rollback"),
        Some(json!({ "source_deployment_id": second, "target_deployment_id": first })),
    )
    .await?;
    routing_blocked(&h, &h.production, "SwapLiveDeployment").await?;
    // Meanwhile the retirement of `first` fires.
    h.call_private(
        &format!("Deployment/{first}/ScheduleDesiredStateChange"),
        Some(json!({ "delay_millis": 0, "state": "stopped", "overwrite": true })),
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(700)).await;
    held.commit().await?;

    eventually(Duration::from_secs(20), || async {
        let rows = h.invocations("Deploy", &second, "Rollback").await?;
        Ok(rows.iter().any(|r| r["status"] == "completed"))
    })
    .await
    .map_err(|e| {
        e.context(format!(
            "the rollback never finished; worker log:\n{}",
            h.worker_log(30)
        ))
    })?;
    eventually(Duration::from_secs(20), || async {
        let scheduling = h
            .invocations("Deployment", &first, "ScheduleDesiredStateChange")
            .await?;
        let changing = h
            .invocations("Deployment", &first, "ChangeDesiredState")
            .await?;
        Ok(scheduling.iter().all(|r| r["status"] == "completed")
            && changing
                .iter()
                .all(|r| r["status"] == "completed" || r["status"] == "scheduled"))
    })
    .await
    .map_err(|e| {
        e.context(format!(
            "the retirement never finished; worker log:\n{}",
            h.worker_log(30)
        ))
    })?;
    let app = tenancy::get_app(&h.db.pool, &h.app).await?;
    assert_eq!(app.live_deployment_id.as_deref(), Some(first.as_str()));
    let live = deployment::get(&h.db.pool, &first).await?;
    assert_eq!(
        (live.status, live.desired_state),
        (DeploymentStatus::Ready, DesiredState::Running),
        "the live deployment is being stopped"
    );
    for t in topology::list_by_deployment(&h.db.pool, &first).await? {
        assert_eq!(t.desired_status, DesiredState::Running);
    }
    Ok(())
}

#[tokio::test]
async fn a_cancel_in_the_network_phase_leaves_no_route_on_the_cancelled_deployment() -> Result<()> {
    let h = Harness::start().await?;
    let serving = h.pending_deployment(&h.preview, Some("feat")).await?;
    h.deploy_to_ready(&serving).await?;
    let branch = route::list_by_environment_sticky(&h.db.pool, &h.preview, &[Sticky::Branch])
        .await?
        .pop()
        .expect("a branch route");
    assert_eq!(branch.deployment_id, serving);

    // Hold the branch route (by primary key: a record lock, no gap, so
    // new routes can still be inserted): the next deploy reaches its
    // network phase and waits there.
    let pk: u64 = sqlx::query_scalar("SELECT pk FROM frontline_routes WHERE id = ?")
        .bind(&branch.id)
        .fetch_one(&h.db.pool)
        .await?;
    let mut held = h.db.pool.begin().await?;
    sqlx::query("SELECT pk FROM frontline_routes WHERE pk = ? FOR UPDATE")
        .bind(pk)
        .fetch_one(&mut *held)
        .await?;
    let cancelled = h.pending_deployment(&h.preview, Some("feat")).await?;
    h.deploy(&cancelled).await?;
    h.wait_topology(&cancelled, DesiredState::Running).await?;
    h.report_running(&cancelled, 1).await?;
    h.wait_status(&cancelled, DeploymentStatus::Network).await?;
    routing_blocked(&h, &h.preview, "AssignFrontlineRoutes").await?;

    // CancelDeployment: the status first, then the invocation.
    deployment::set_status_if_active(
        &h.db.pool,
        &cancelled,
        DeploymentStatus::Cancelled,
        Some("Cancelled by user"),
        8,
    )
    .await?;
    let invocation = h
        .invocations("Deploy", &cancelled, "Deploy")
        .await?
        .first()
        .and_then(|r| r["id"].as_str().map(str::to_owned))
        .expect("the pipeline's invocation");
    let response = http_client()
        .patch(format!(
            "{}/invocations/{invocation}/cancel",
            h.restate.admin_url()
        ))
        .send()
        .await?;
    if !response.status().is_success() {
        bail!("cancel: {}", response.status());
    }
    held.commit().await?;
    h.wait_finished(&cancelled).await?;

    let branch = route::find_by_fqdn(&h.db.pool, &branch.fully_qualified_domain_name)
        .await?
        .expect("the branch route");
    assert_eq!(
        branch.deployment_id, serving,
        "the branch route stayed on the cancelled deployment"
    );
    assert!(
        route::list_by_deployment(&h.db.pool, &cancelled)
            .await?
            .is_empty(),
        "routes still point at the cancelled deployment"
    );
    assert_eq!(
        deployment::get(&h.db.pool, &cancelled).await?.status,
        DeploymentStatus::Cancelled
    );
    h.wait_topology(&cancelled, DesiredState::Stopped).await?;
    Ok(())
}

#[tokio::test]
async fn the_sweep_fails_a_deployment_left_on_its_way_without_a_workflow() -> Result<()> {
    let h = Harness::start_with("sweep_interval_seconds = 1\nsweep_grace_seconds = 1").await?;
    // Left `deploying` with nothing behind it (its workflow is gone).
    let orphan = h.pending_deployment(&h.preview, None).await?;
    deployment::compare_and_set_status(
        &h.db.pool,
        &orphan,
        DeploymentStatus::Pending,
        DeploymentStatus::Deploying,
        1,
    )
    .await?;
    // One with its workflow waiting for instances: left alone.
    let waiting = h.pending_deployment(&h.preview, None).await?;
    h.deploy(&waiting).await?;
    h.wait_topology(&waiting, DesiredState::Running).await?;
    sqlx::query("UPDATE deployments SET updated_at = 1 WHERE id = ?")
        .bind(&waiting)
        .execute(&h.db.pool)
        .await?;

    h.wait_status(&orphan, DeploymentStatus::Failed).await?;
    assert_eq!(
        deployment::get(&h.db.pool, &orphan)
            .await?
            .error_message
            .as_deref(),
        Some(ctrl_worker::sweep::ORPHANED)
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        deployment::get(&h.db.pool, &waiting).await?.status,
        DeploymentStatus::Deploying
    );
    h.report_running(&waiting, 1).await?;
    h.wait_status(&waiting, DeploymentStatus::Ready).await?;
    Ok(())
}
