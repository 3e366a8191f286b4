//! Rollback and Promote on the real worker: routes and the live pointer
//! move together through Routing, the previous live deployment retires after
//! the delay, and every gate violation answers with its message.

use std::time::Duration;

use anyhow::Result;
use ctrl_core::domains::Sticky;
use ctrl_core::gate::GateError;
use ctrl_core::status::DesiredState;
use ctrl_db::{deployment, route, tenancy};
use serde_json::json;

use crate::harness::{Harness, eventually};

async fn make_live(h: &Harness, id: &str) -> Result<()> {
    let mut conn = h.db.pool.acquire().await?;
    tenancy::swap_live_deployment(&mut conn, &h.app, id, false, &format!("test-{id}"), 3).await?;
    Ok(())
}

async fn targets(h: &Harness, routes: &[String]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for fqdn in [
        "shop-acme.ctrl.test",
        "shop-production-acme.ctrl.test",
        "shop-a-acme.ctrl.test",
    ] {
        if let Some(r) = route::find_by_fqdn(&h.db.pool, fqdn).await? {
            assert!(routes.contains(&r.id));
            out.push(r.deployment_id);
        }
    }
    Ok(out)
}

#[tokio::test]
async fn rollback_then_promote_move_routes_and_the_live_pointer_and_retire_the_previous()
-> Result<()> {
    let h = Harness::start_with("retire_previous_live_seconds = 1").await?;
    let a = h.ready_deployment(&h.production).await?;
    let b = h.ready_deployment(&h.production).await?;
    make_live(&h, &b).await?;
    let routes = vec![
        h.route(&h.production, &b, "shop-acme.ctrl.test", Sticky::Live)
            .await?,
        h.route(
            &h.production,
            &b,
            "shop-production-acme.ctrl.test",
            Sticky::Environment,
        )
        .await?,
        h.route(
            &h.production,
            &a,
            "shop-a-acme.ctrl.test",
            Sticky::Deployment,
        )
        .await?,
    ];

    // Roll back from B (live) to A.
    let (status, body) = h
        .call(
            &format!("Deploy/{b}/Rollback"),
            json!({"source_deployment_id": b, "target_deployment_id": a}),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["previous_deployment_id"], b.as_str());
    let app = tenancy::get_app(&h.db.pool, &h.app).await?;
    assert_eq!(
        (app.live_deployment_id.as_deref(), app.is_rolled_back),
        (Some(a.as_str()), true)
    );
    assert_eq!(
        targets(&h, &routes).await?,
        [a.clone(), a.clone(), a.clone()],
        "live and environment routes moved; the deployment route is A's own"
    );

    // Promote B again: live pointer back, flag cleared, A retires after the delay.
    let (status, body) = h
        .call(
            &format!("Deploy/{b}/Promote"),
            json!({"target_deployment_id": b}),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["previous_deployment_id"], a.as_str());
    let app = tenancy::get_app(&h.db.pool, &h.app).await?;
    assert_eq!(
        (app.live_deployment_id.as_deref(), app.is_rolled_back),
        (Some(b.as_str()), false)
    );
    assert_eq!(
        targets(&h, &routes).await?,
        [b.clone(), b.clone(), a.clone()]
    );
    eventually(Duration::from_secs(15), || async {
        Ok(deployment::get(&h.db.pool, &a).await?.desired_state == DesiredState::Stopped)
    })
    .await?;
    assert_eq!(
        deployment::get(&h.db.pool, &b).await?.desired_state,
        DesiredState::Running
    );
    Ok(())
}

/// Promote's answer: (HTTP status, error message).
async fn promote(h: &Harness, target: &str) -> Result<(u16, Option<String>)> {
    let (status, body) = h
        .call(
            &format!("Deploy/{target}/Promote"),
            json!({"target_deployment_id": target}),
        )
        .await?;
    Ok((status, body["message"].as_str().map(str::to_owned)))
}

/// Rollback's answer: (HTTP status, error message).
async fn rollback(h: &Harness, source: &str, target: &str) -> Result<(u16, Option<String>)> {
    let (status, body) = h
        .call(
            &format!("Deploy/{source}/Rollback"),
            json!({"source_deployment_id": source, "target_deployment_id": target}),
        )
        .await?;
    Ok((status, body["message"].as_str().map(str::to_owned)))
}

/// What a refusal for `violation` looks like.
fn refused(violation: GateError) -> (u16, Option<String>) {
    (412, Some(violation.message()))
}

#[tokio::test]
async fn gate_violations_answer_with_their_message() -> Result<()> {
    let h = Harness::start().await?;
    let live = h.ready_deployment(&h.production).await?;
    let preview = h.ready_deployment(&h.preview).await?;
    assert_eq!(
        promote(&h, &live).await?,
        refused(GateError::NoLiveDeployment)
    );
    make_live(&h, &live).await?;
    assert_eq!(
        promote(&h, &preview).await?,
        refused(GateError::TargetNotProduction)
    );
    assert_eq!(promote(&h, &live).await?, refused(GateError::TargetIsLive));
    assert_eq!(
        rollback(&h, &live, &live).await?,
        refused(GateError::TargetIsLive)
    );
    // Rolling back from a deployment that is not live.
    let other = h.ready_deployment(&h.production).await?;
    let earlier = h.ready_deployment(&h.production).await?;
    assert_eq!(
        rollback(&h, &other, &earlier).await?,
        refused(GateError::SourceNotLive)
    );
    // A target that is not ready, or is being stopped.
    let pending = h.pending_deployment(&h.production, None).await?;
    let draining = h.ready_deployment(&h.production).await?;
    deployment::set_desired_state(&h.db.pool, &draining, DesiredState::Stopped, 9).await?;
    for (target, violation) in [
        (&pending, GateError::TargetNotReady),
        (&draining, GateError::TargetIsDraining),
    ] {
        assert_eq!(promote(&h, target).await?, refused(violation));
        assert_eq!(rollback(&h, &live, target).await?, refused(violation));
    }
    // A source in another environment than the target.
    assert_eq!(
        rollback(&h, &preview, &other).await?,
        refused(GateError::DifferentEnvironment)
    );

    let app = tenancy::get_app(&h.db.pool, &h.app).await?;
    assert_eq!(
        (app.live_deployment_id.as_deref(), app.is_rolled_back),
        (Some(live.as_str()), false),
        "nothing moved"
    );
    Ok(())
}

#[tokio::test]
async fn routes_cannot_be_moved_from_outside_the_worker() -> Result<()> {
    let h = Harness::start().await?;
    let d = h.ready_deployment(&h.production).await?;
    let route = h
        .route(&h.production, &d, "shop-acme.ctrl.test", Sticky::Live)
        .await?;
    let other = h.ready_deployment(&h.production).await?;
    let (status, body) = h
        .call(
            &format!("Routing/{}/AssignFrontlineRoutes", h.production),
            json!({"deployment_id": other, "route_ids": [route]}),
        )
        .await?;
    assert!((400..500).contains(&status), "{status} {body}");
    let routes = route::list_by_deployment(&h.db.pool, &d).await?;
    assert_eq!(routes.len(), 1, "the route still points at {d}");
    Ok(())
}
