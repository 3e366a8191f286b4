//! Rollback, Promote, Stop and Wake: the deploy-gate rules in the API, then
//! the worker's handlers through a real Restate server (small stand-ins for
//! the unbuilt worker record what they are asked and answer like it).

use std::sync::{Arc, Mutex};

use anyhow::Result;
use ctrl_api::error::ApiError;
use ctrl_api::services::deployment as svc;
use ctrl_api::state::AppState;
use ctrl_core::status::{DeploymentStatus as S, DesiredState};
use ctrl_core::workflows::{LiveSwap, PromoteInput, RollbackInput, StopInput, WakeInput};
use ctrl_db::deployment;
use ctrl_proto::ctrl::v1 as pb;
use ctrl_testkit::RestateServer;
use restate_sdk::prelude::*;

use crate::{state, state_with_restate};

type Calls = Arc<Mutex<Vec<String>>>;

/// Stands in for the worker's Deploy object (Rollback, Promote).
#[derive(Clone, Default)]
struct DeployStandIn {
    calls: Calls,
}

#[restate_sdk::object(name = "Deploy")]
impl DeployStandIn {
    #[handler(name = "Rollback")]
    async fn rollback(
        &self,
        ctx: ObjectContext<'_>,
        Json(input): Json<RollbackInput>,
    ) -> HandlerResult<Json<LiveSwap>> {
        self.calls.lock().expect("lock").push(format!(
            "rollback@{} -> {}",
            ctx.key(),
            input.target_deployment_id
        ));
        Ok(Json(LiveSwap {
            previous_deployment_id: input.source_deployment_id,
        }))
    }

    #[handler(name = "Wake")]
    async fn wake(
        &self,
        ctx: ObjectContext<'_>,
        Json(input): Json<WakeInput>,
    ) -> HandlerResult<()> {
        assert_eq!(input.deployment_id, ctx.key());
        self.calls
            .lock()
            .expect("lock")
            .push(format!("wake@{}", ctx.key()));
        Ok(())
    }

    #[handler(name = "Promote")]
    async fn promote(
        &self,
        ctx: ObjectContext<'_>,
        Json(input): Json<PromoteInput>,
    ) -> HandlerResult<Json<LiveSwap>> {
        if input.target_deployment_id.ends_with("refuse") {
            return Err(TerminalError::new_with_code(
                409,
                "The deployment is shutting down and cannot serve traffic.",
            )
            .into());
        }
        self.calls
            .lock()
            .expect("lock")
            .push(format!("promote@{}", ctx.key()));
        Ok(Json(LiveSwap {
            previous_deployment_id: "d_previous".into(),
        }))
    }
}

/// Stands in for the worker's Deployment object (desired-state changes).
#[derive(Clone, Default)]
struct DeploymentStandIn {
    calls: Calls,
}

#[restate_sdk::object(name = "Deployment")]
impl DeploymentStandIn {
    #[handler(name = "Stop")]
    async fn stop(
        &self,
        ctx: ObjectContext<'_>,
        Json(input): Json<StopInput>,
    ) -> HandlerResult<()> {
        self.calls
            .lock()
            .expect("lock")
            .push(format!("stop@{} by {}", ctx.key(), input.actor));
        Ok(())
    }
}

async fn restate(calls: &Calls) -> Result<RestateServer> {
    crate::restate_with(
        Endpoint::builder()
            .bind(DeployStandIn {
                calls: calls.clone(),
            })
            .bind(DeploymentStandIn {
                calls: calls.clone(),
            })
            .build(),
    )
    .await
}

struct App {
    app: pb::App,
    production: String,
    preview: String,
}

async fn app(s: &AppState) -> Result<App> {
    let f = crate::fixtures::app(s, false).await?;
    Ok(App {
        app: f.app,
        production: f.production.id,
        preview: f.preview.id,
    })
}

/// A deployment row in `status` (ids end in `suffix` for the stand-ins).
async fn deployment_in(
    s: &AppState,
    a: &App,
    env: &str,
    status: S,
    suffix: &str,
) -> Result<String> {
    crate::fixtures::deployment(s, &a.app, env, None, status, suffix).await
}

async fn make_live(s: &AppState, a: &App, id: &str, rolled_back: bool) -> Result<()> {
    let mut conn = s.db().acquire().await?;
    ctrl_db::tenancy::swap_live_deployment(
        &mut conn,
        &a.app.id,
        id,
        rolled_back,
        &format!("test-{id}-{rolled_back}"),
        3,
    )
    .await?;
    Ok(())
}

fn precondition(e: ApiError) -> String {
    match e {
        ApiError::FailedPrecondition(m) => m,
        other => panic!("expected failed_precondition, got {other:?}"),
    }
}

#[tokio::test]
async fn the_gate_refuses_before_anything_is_called_with_the_catalogue_messages() -> Result<()> {
    let s = state().await?; // no Restate: a refusal must not need it
    let a = app(&s).await?;
    let live = deployment_in(&s, &a, &a.production, S::Ready, "").await?;
    let building = deployment_in(&s, &a, &a.production, S::Building, "").await?;
    let preview = deployment_in(&s, &a, &a.preview, S::Ready, "").await?;
    let old = deployment_in(&s, &a, &a.production, S::Ready, "").await?;

    let promote = |id: &str| pb::PromoteRequest {
        target_deployment_id: id.into(),
        actor: None,
    };
    assert_eq!(
        precondition(svc::promote(&s, promote(&old)).await.unwrap_err()),
        "The app has no current deployment."
    );
    make_live(&s, &a, &live, false).await?;
    assert_eq!(
        precondition(svc::promote(&s, promote(&building)).await.unwrap_err()),
        "The deployment is not ready."
    );
    assert_eq!(
        precondition(svc::promote(&s, promote(&preview)).await.unwrap_err()),
        "Only production deployments can be promoted or rolled back."
    );
    assert_eq!(
        precondition(svc::promote(&s, promote(&live)).await.unwrap_err()),
        "The deployment is already the current deployment."
    );

    let rollback = |source: &str, target: &str| pb::RollbackRequest {
        source_deployment_id: source.into(),
        target_deployment_id: target.into(),
        actor: None,
    };
    assert_eq!(
        precondition(svc::rollback(&s, rollback("", &live)).await.unwrap_err()),
        "The deployment is already the current deployment."
    );
    assert_eq!(
        precondition(
            svc::rollback(&s, rollback(&old, &building))
                .await
                .unwrap_err()
        ),
        "The deployment is not ready."
    );
    let other_old = deployment_in(&s, &a, &a.production, S::Ready, "").await?;
    assert_eq!(
        precondition(
            svc::rollback(&s, rollback(&other_old, &old))
                .await
                .unwrap_err()
        ),
        "The source deployment is not the current live deployment."
    );

    deployment::set_desired_state(s.db(), &old, DesiredState::Stopped, 4).await?;
    assert_eq!(
        precondition(svc::rollback(&s, rollback("", &old)).await.unwrap_err()),
        "The deployment is shutting down and cannot serve traffic."
    );

    let stop = |id: &str| pb::StopDeploymentRequest {
        deployment_id: id.into(),
        actor: None,
    };
    assert_eq!(
        precondition(svc::stop_deployment(&s, stop(&live)).await.unwrap_err()),
        "Production deployments cannot be stopped."
    );
    let preview_building = deployment_in(&s, &a, &a.preview, S::Building, "").await?;
    assert_eq!(
        precondition(
            svc::stop_deployment(&s, stop(&preview_building))
                .await
                .unwrap_err()
        ),
        "The deployment is not running."
    );
    let wake = |id: &str| pb::WakeDeploymentRequest {
        deployment_id: id.into(),
        actor: None,
    };
    assert_eq!(
        precondition(svc::wake_deployment(&s, wake(&preview)).await.unwrap_err()),
        "The deployment is not stopped."
    );

    let missing = svc::promote(&s, promote("d_0000000000000000"))
        .await
        .unwrap_err();
    assert!(matches!(missing, ApiError::NotFound(_)));
    Ok(())
}

#[tokio::test]
async fn allowed_changes_call_the_worker_on_the_right_keys_and_return_its_answer() -> Result<()> {
    let calls = Calls::default();
    let restate = restate(&calls).await?;
    let s = state_with_restate(&restate.ingress_url(), &restate.admin_url()).await?;
    let a = app(&s).await?;
    let live = deployment_in(&s, &a, &a.production, S::Ready, "").await?;
    let old = deployment_in(&s, &a, &a.production, S::Ready, "").await?;
    make_live(&s, &a, &live, false).await?;

    let rolled = svc::rollback(
        &s,
        pb::RollbackRequest {
            source_deployment_id: String::new(),
            target_deployment_id: old.clone(),
            actor: None,
        },
    )
    .await?;
    assert_eq!(rolled.previous_deployment_id, live);
    make_live(&s, &a, &old, true).await?;
    // Promoting the rolled-back-to deployment confirms the rollback.
    let promoted = svc::promote(
        &s,
        pb::PromoteRequest {
            target_deployment_id: old.clone(),
            actor: None,
        },
    )
    .await?;
    assert_eq!(promoted.previous_deployment_id, "d_previous");

    let preview = deployment_in(&s, &a, &a.preview, S::Ready, "").await?;
    svc::stop_deployment(
        &s,
        pb::StopDeploymentRequest {
            deployment_id: preview.clone(),
            actor: Some(pb::ActorInfo {
                name: "ana".into(),
                ..Default::default()
            }),
        },
    )
    .await?;
    deployment::set_desired_state(s.db(), &preview, DesiredState::Stopped, 5).await?;
    svc::wake_deployment(
        &s,
        pb::WakeDeploymentRequest {
            deployment_id: preview.clone(),
            actor: None,
        },
    )
    .await?;

    // Wake is sent, not awaited: it runs like a deploy.
    let waked = format!("wake@{preview}");
    for _ in 0..100 {
        if calls.lock().expect("lock").contains(&waked) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let seen = calls.lock().expect("lock").clone();
    assert_eq!(
        seen,
        [
            format!("rollback@{live} -> {old}"),
            format!("promote@{old}"),
            format!("stop@{preview} by ana"),
            waked,
        ]
    );

    // A rule the worker enforces comes back as failed_precondition with its message.
    let refused = deployment_in(&s, &a, &a.production, S::Ready, "refuse").await?;
    let err = svc::promote(
        &s,
        pb::PromoteRequest {
            target_deployment_id: refused,
            actor: None,
        },
    )
    .await
    .unwrap_err();
    assert_eq!(
        precondition(err),
        "The deployment is shutting down and cannot serve traffic."
    );
    Ok(())
}
