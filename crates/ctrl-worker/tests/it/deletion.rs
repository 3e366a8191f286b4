//! Deleting: one deployment (never the live one on its own), and the
//! durable cascades that take an environment or an app with everything in
//! it — instances stopped and gone first, then every row.

use std::time::Duration;

use anyhow::Result;
use ctrl_core::domains::Sticky;
use ctrl_core::status::{DeploymentStatus, DesiredState};
use ctrl_db::{deployment, route, tenancy, topology};
use serde_json::json;

use crate::harness::{Harness, eventually};

/// Rows of `table` whose `column` is `value`.
async fn rows(h: &Harness, table: &str, column: &str, value: &str) -> Result<i64> {
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM {table} WHERE {column} = ?"
    )))
    .bind(value)
    .fetch_one(&h.db.pool)
    .await?)
}

/// Waits until `lookup` finds nothing: the cascade removed it.
async fn wait_gone<T, F, Fut>(h: &Harness, what: &str, mut lookup: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ctrl_db::Result<T>>,
{
    eventually(Duration::from_secs(30), || {
        let found = lookup();
        async move { Ok(matches!(found.await, Err(ctrl_db::Error::NotFound(_)))) }
    })
    .await
    .map_err(|e| e.context(format!("{what} was never removed\n{}", h.worker_log(30))))
}

/// Plays the agent: once a deployment's desired state is stopped, its
/// instances are gone.
async fn drain_when_stopped(h: &Harness, id: &str) -> Result<()> {
    h.wait_topology(id, DesiredState::Stopped).await?;
    h.report_drained(id).await
}

#[tokio::test]
async fn a_deployment_is_deleted_after_its_instances_are_gone_but_never_the_live_one() -> Result<()>
{
    let h = Harness::start().await?;
    let old = h.pending_deployment(&h.production, None).await?;
    h.deploy_to_ready(&old).await?;
    let live = h.pending_deployment(&h.production, None).await?;
    h.deploy_to_ready(&live).await?;

    let (status, body) = h
        .call(
            &format!("Deploy/{live}/Delete"),
            json!({ "deployment_id": live }),
        )
        .await?;
    assert_eq!(status, 412, "{body}");
    assert!(
        body.to_string()
            .contains("live deployment cannot be deleted"),
        "{body}"
    );

    h.send(
        &format!("Deploy/{old}/Delete"),
        Some(json!({ "deployment_id": old })),
    )
    .await?;
    h.wait_topology(&old, DesiredState::Stopped).await?;
    // Still there while an agent reports instances of it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(deployment::get(&h.db.pool, &old).await.is_ok());
    h.report_drained(&old).await?;
    wait_gone(&h, "the deployment", || deployment::get(&h.db.pool, &old)).await?;
    for table in [
        "deployment_topology",
        "network_policies",
        "deployment_steps",
        "frontline_routes",
        "instances",
    ] {
        assert_eq!(rows(&h, table, "deployment_id", &old).await?, 0, "{table}");
    }
    // The live one is untouched.
    let row = deployment::get(&h.db.pool, &live).await?;
    assert_eq!(
        (row.status, row.desired_state),
        (DeploymentStatus::Ready, DesiredState::Running)
    );
    Ok(())
}

#[tokio::test]
async fn deleting_an_app_stops_everything_then_removes_every_row() -> Result<()> {
    let h = Harness::start().await?;
    let live = h.pending_deployment(&h.production, None).await?;
    h.deploy_to_ready(&live).await?;
    let preview = h.pending_deployment(&h.preview, Some("feat")).await?;
    h.deploy_to_ready(&preview).await?;
    // One still waiting for its instances: its pipeline is cancelled.
    let waiting = h.pending_deployment(&h.preview, None).await?;
    h.deploy(&waiting).await?;
    h.wait_topology(&waiting, DesiredState::Running).await?;
    assert!(
        !route::list_by_environment_sticky(&h.db.pool, &h.preview, &[Sticky::Branch])
            .await?
            .is_empty()
    );

    h.send(
        &format!("Deletion/{}/Delete", h.app),
        Some(json!({ "id": h.app })),
    )
    .await?;
    // Marked at once: nothing new under it.
    eventually(Duration::from_secs(10), || async {
        Ok(tenancy::get_app(&h.db.pool, &h.app)
            .await?
            .deleting_at
            .is_some())
    })
    .await?;
    for d in [&live, &preview, &waiting] {
        drain_when_stopped(&h, d).await?;
    }
    wait_gone(&h, "the app", || tenancy::get_app(&h.db.pool, &h.app)).await?;
    for table in [
        "deployments",
        "frontline_routes",
        "environments",
        "app_regional_settings",
        "app_runtime_settings",
        "app_build_settings",
        "app_environment_variables",
    ] {
        assert_eq!(rows(&h, table, "app_id", &h.app).await?, 0, "{table}");
    }
    for d in [&live, &preview, &waiting] {
        assert_eq!(
            rows(&h, "deployment_topology", "deployment_id", d).await?,
            0
        );
    }
    // The workspace stays.
    assert!(
        tenancy::get_workspace(&h.db.pool, &h.workspace)
            .await
            .is_ok()
    );
    // A second deletion of the same app finds nothing to do.
    let (status, body) = h
        .call(
            &format!("Deletion/{}/Delete", h.app),
            json!({ "id": h.app }),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    Ok(())
}

#[tokio::test]
async fn deleting_an_environment_leaves_the_rest_of_the_app() -> Result<()> {
    let h = Harness::start().await?;
    let live = h.pending_deployment(&h.production, None).await?;
    h.deploy_to_ready(&live).await?;
    let preview = h.pending_deployment(&h.preview, None).await?;
    h.deploy_to_ready(&preview).await?;

    h.send(
        &format!("Deletion/{}/Delete", h.preview),
        Some(json!({ "id": h.preview })),
    )
    .await?;
    drain_when_stopped(&h, &preview).await?;
    wait_gone(&h, "the environment", || {
        tenancy::get_environment(&h.db.pool, &h.preview)
    })
    .await?;
    assert_eq!(
        rows(&h, "deployments", "environment_id", &h.preview).await?,
        0
    );
    assert_eq!(
        rows(&h, "app_regional_settings", "environment_id", &h.preview).await?,
        0
    );
    let app = tenancy::get_app(&h.db.pool, &h.app).await?;
    assert_eq!(app.live_deployment_id.as_deref(), Some(live.as_str()));
    assert!(app.deleting_at.is_none());
    for t in topology::list_by_deployment(&h.db.pool, &live).await? {
        assert_eq!(t.desired_status, DesiredState::Running);
    }
    Ok(())
}

#[tokio::test]
async fn a_cascade_survives_worker_crashes_while_it_waits_for_the_agents() -> Result<()> {
    let mut h = Harness::start().await?;
    let live = h.pending_deployment(&h.production, None).await?;
    h.deploy_to_ready(&live).await?;
    let preview = h.pending_deployment(&h.preview, None).await?;
    h.deploy_to_ready(&preview).await?;

    h.send(
        &format!("Deletion/{}/Delete", h.app),
        Some(json!({ "id": h.app })),
    )
    .await?;
    // Both stopped at once; the cascade waits for the agents: crash it there.
    h.wait_topology(&live, DesiredState::Stopped).await?;
    h.wait_topology(&preview, DesiredState::Stopped).await?;
    h.crash_worker().await?;
    h.report_drained(&live).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.crash_worker().await?;
    h.report_drained(&preview).await?;
    wait_gone(&h, "the app", || tenancy::get_app(&h.db.pool, &h.app)).await?;
    assert_eq!(rows(&h, "deployments", "app_id", &h.app).await?, 0);
    assert_eq!(rows(&h, "environments", "app_id", &h.app).await?, 0);
    Ok(())
}
