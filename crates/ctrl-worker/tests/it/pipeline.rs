//! The Deploy pipeline on the real worker: readiness through
//! NotifyInstancesChanged, auto-promotion and retirement, readiness timeout
//! and cancel with compensation, rollback while a deploy waits, and
//! superseding by a newer commit.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Result, bail};
use ctrl_core::domains::Sticky;
use ctrl_core::status::{DeploymentStatus, DesiredState, StepKind};
use ctrl_db::{deployment, route, tenancy, topology};
use ctrl_testkit::http_client;
use serde_json::json;

use crate::harness::Harness;

/// The stickiness of every route pointing at `id`.
async fn stickies(h: &Harness, id: &str) -> Result<BTreeSet<&'static str>> {
    Ok(route::list_by_deployment(&h.db.pool, id)
        .await?
        .into_iter()
        .map(|r| r.sticky.as_str())
        .collect())
}

#[tokio::test]
async fn a_deploy_becomes_ready_once_instances_run_and_replaces_the_live_one() -> Result<()> {
    let h = Harness::start_with("retire_previous_live_seconds = 1").await?;
    let a = h.pending_deployment(&h.production, None).await?;
    h.deploy(&a).await?;
    h.wait_status(&a, DeploymentStatus::Deploying).await?;
    h.wait_topology(&a, DesiredState::Running).await?;
    let rows = topology::list_by_deployment(&h.db.pool, &a).await?;
    assert_eq!(rows.len(), 1, "one region configured");
    assert_eq!(
        (rows[0].region_id.as_str(), rows[0].desired_status),
        (h.region.as_str(), DesiredState::Running)
    );
    assert!(rows[0].version > 0);
    // It waits: no instances yet, so it stays deploying.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        deployment::get(&h.db.pool, &a).await?.status,
        DeploymentStatus::Deploying
    );

    h.report_running(&a, 1).await?;
    h.wait_status(&a, DeploymentStatus::Ready).await?;
    h.wait_finished(&a).await?;
    let app = tenancy::get_app(&h.db.pool, &h.app).await?;
    assert_eq!(app.live_deployment_id.as_deref(), Some(a.as_str()));
    assert_eq!(
        stickies(&h, &a).await?,
        BTreeSet::from(["deployment", "environment", "live"])
    );
    let steps = deployment::list_steps(&h.db.pool, &a).await?;
    let kinds: Vec<StepKind> = steps.iter().map(|s| s.step).collect();
    assert_eq!(
        kinds,
        [
            StepKind::Queued,
            StepKind::Starting,
            StepKind::Building,
            StepKind::Deploying,
            StepKind::Network,
            StepKind::Finalizing
        ]
    );
    assert!(
        steps
            .iter()
            .all(|s| s.ended_at.is_some() && s.error.is_none()),
        "{steps:?}"
    );

    // A second production deploy takes over live and environment routes;
    // the first is stopped after the (1 s) retirement delay.
    let b = h.pending_deployment(&h.production, None).await?;
    h.deploy(&b).await?;
    h.wait_status(&b, DeploymentStatus::Deploying).await?;
    h.report_running(&b, 1).await?;
    h.wait_status(&b, DeploymentStatus::Ready).await?;
    h.wait_finished(&b).await?;
    let app = tenancy::get_app(&h.db.pool, &h.app).await?;
    assert_eq!(app.live_deployment_id.as_deref(), Some(b.as_str()));
    assert_eq!(
        stickies(&h, &b).await?,
        BTreeSet::from(["deployment", "environment", "live"])
    );
    assert_eq!(stickies(&h, &a).await?, BTreeSet::from(["deployment"]));
    h.wait_topology(&a, DesiredState::Stopped).await?;
    assert_eq!(
        deployment::get(&h.db.pool, &a).await?.desired_state,
        DesiredState::Stopped
    );
    assert_eq!(
        deployment::get(&h.db.pool, &b).await?.desired_state,
        DesiredState::Running
    );
    Ok(())
}

#[tokio::test]
async fn a_readiness_timeout_fails_the_deployment_and_stops_its_instances() -> Result<()> {
    let h = Harness::start_with("readiness_timeout_seconds = 2").await?;
    let d = h.pending_deployment(&h.production, None).await?;
    h.deploy(&d).await?;
    h.wait_status(&d, DeploymentStatus::Failed).await?;
    let row = deployment::get(&h.db.pool, &d).await?;
    assert_eq!(
        row.error_message.as_deref(),
        Some("Not enough regions became healthy within 2 s.")
    );
    h.wait_topology(&d, DesiredState::Stopped).await?;
    let steps = deployment::list_steps(&h.db.pool, &d).await?;
    let deploying = steps
        .iter()
        .find(|s| s.step == StepKind::Deploying)
        .expect("deploying step");
    assert_eq!(
        deploying.error.as_deref(),
        Some("Not enough regions became healthy within 2 s.")
    );
    assert!(steps.iter().all(|s| s.ended_at.is_some()), "{steps:?}");
    let app = tenancy::get_app(&h.db.pool, &h.app).await?;
    assert_eq!(
        app.live_deployment_id, None,
        "a failed deploy never goes live"
    );
    Ok(())
}

#[tokio::test]
async fn cancelling_a_waiting_deploy_cancels_it_and_stops_its_instances() -> Result<()> {
    let h = Harness::start().await?;
    let d = h.pending_deployment(&h.production, None).await?;
    h.deploy(&d).await?;
    h.wait_status(&d, DeploymentStatus::Deploying).await?;
    // Instances were asked for: cancelling now must stop them again.
    h.wait_topology(&d, DesiredState::Running).await?;
    let rows = h.invocations("Deploy", &d, "Deploy").await?;
    let [row] = rows.as_slice() else {
        bail!("expected one Deploy invocation, got {rows:?}");
    };
    let invocation = row["id"].as_str().expect("invocation id").to_owned();
    let response = http_client()
        .patch(format!(
            "{}/invocations/{invocation}/cancel",
            h.restate.admin_url()
        ))
        .send()
        .await?;
    assert!(response.status().is_success(), "{}", response.status());
    h.wait_status(&d, DeploymentStatus::Cancelled).await?;
    h.wait_topology(&d, DesiredState::Stopped).await?;
    // A late readiness report changes nothing.
    h.report_running(&d, 1).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        deployment::get(&h.db.pool, &d).await?.status,
        DeploymentStatus::Cancelled
    );
    Ok(())
}

#[tokio::test]
async fn a_rollback_completes_while_a_deploy_of_the_same_app_waits() -> Result<()> {
    let h = Harness::start().await?;
    // A is live, B was live before it.
    let b = h.pending_deployment(&h.production, None).await?;
    h.deploy_to_ready(&b).await?;
    let a = h.pending_deployment(&h.production, None).await?;
    h.deploy_to_ready(&a).await?;

    // C waits for instances that never come.
    let c = h.pending_deployment(&h.production, None).await?;
    h.deploy(&c).await?;
    h.wait_status(&c, DeploymentStatus::Deploying).await?;

    let (status, body) = tokio::time::timeout(
        Duration::from_secs(10),
        h.call(
            &format!("Deploy/{a}/Rollback"),
            json!({"source_deployment_id": a, "target_deployment_id": b}),
        ),
    )
    .await??;
    assert_eq!(status, 200, "{body}");
    let app = tenancy::get_app(&h.db.pool, &h.app).await?;
    assert_eq!(
        (app.live_deployment_id.as_deref(), app.is_rolled_back),
        (Some(b.as_str()), true)
    );
    assert_eq!(
        deployment::get(&h.db.pool, &c).await?.status,
        DeploymentStatus::Deploying,
        "C still waits"
    );

    // When C becomes ready it does not undo the rollback.
    h.report_running(&c, 1).await?;
    h.wait_status(&c, DeploymentStatus::Ready).await?;
    h.wait_finished(&c).await?;
    let app = tenancy::get_app(&h.db.pool, &h.app).await?;
    assert_eq!(app.live_deployment_id.as_deref(), Some(b.as_str()));
    assert!(stickies(&h, &b).await?.contains(Sticky::Live.as_str()));
    assert_eq!(stickies(&h, &c).await?, BTreeSet::from(["deployment"]));
    Ok(())
}

#[tokio::test]
async fn a_newer_commit_supersedes_deployments_that_have_not_started() -> Result<()> {
    let h = Harness::start_with("retire_previous_preview_seconds = 1").await?;
    // Three pushes to one branch while the worker was busy: the newest runs,
    // the older ones are superseded whichever starts first.
    let first = h.pending_deployment(&h.preview, Some("feat/login")).await?;
    let second = h.pending_deployment(&h.preview, Some("feat/login")).await?;
    let newest = h.pending_deployment(&h.preview, Some("feat/login")).await?;
    let other_branch = h.pending_deployment(&h.preview, Some("main")).await?;

    h.deploy(&second).await?;
    h.wait_status(&second, DeploymentStatus::Superseded).await?;
    h.deploy(&newest).await?;
    h.wait_status(&newest, DeploymentStatus::Deploying).await?;
    h.wait_status(&first, DeploymentStatus::Superseded).await?;
    // Its own pipeline, started late, does nothing.
    h.deploy(&first).await?;
    h.wait_finished(&first).await?;
    assert_eq!(
        deployment::get(&h.db.pool, &first).await?.status,
        DeploymentStatus::Superseded
    );
    for id in [&first, &second] {
        assert!(
            topology::list_by_deployment(&h.db.pool, id)
                .await?
                .is_empty()
        );
        let steps = deployment::list_steps(&h.db.pool, id).await?;
        assert!(
            steps
                .iter()
                .any(|s| s.error.as_deref() == Some("Superseded by newer commit")),
            "{steps:?}"
        );
    }
    assert_eq!(
        deployment::get(&h.db.pool, &other_branch).await?.status,
        DeploymentStatus::Pending,
        "another branch is untouched"
    );

    // Once the newest is ready, an earlier ready preview of the branch retires.
    h.report_running(&newest, 1).await?;
    h.wait_status(&newest, DeploymentStatus::Ready).await?;
    let next = h.pending_deployment(&h.preview, Some("feat/login")).await?;
    h.deploy(&next).await?;
    h.wait_status(&next, DeploymentStatus::Deploying).await?;
    h.report_running(&next, 1).await?;
    h.wait_status(&next, DeploymentStatus::Ready).await?;
    h.wait_topology(&newest, DesiredState::Stopped).await?;
    assert_eq!(
        stickies(&h, &next).await?,
        BTreeSet::from(["branch", "deployment", "environment", "none"])
    );
    Ok(())
}
