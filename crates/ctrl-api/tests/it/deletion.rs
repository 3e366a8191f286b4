//! Deleting through the API: the rules (protection, the production
//! environment, the live deployment) before anything is started; then the
//! worker's durable cascade is started on the right key, and nothing new
//! can be created under what is being deleted. (The cascade itself runs in
//! ctrl-worker's tests and end to end in krane's.)

use std::sync::{Arc, Mutex};

use anyhow::Result;
use ctrl_api::error::ApiError;
use ctrl_api::services::{deployment as deployments, tenancy};
use ctrl_core::status::DeploymentStatus as S;
use ctrl_core::workflows::{DeleteDeploymentInput, DeletionInput};
use ctrl_proto::ctrl::v1 as pb;
use ctrl_testkit::RestateServer;
use restate_sdk::prelude::*;

use crate::state_with_restate;

type Calls = Arc<Mutex<Vec<String>>>;

/// Stands in for the worker's Deletion object.
#[derive(Clone, Default)]
struct DeletionStandIn {
    calls: Calls,
}

#[restate_sdk::object(name = "Deletion")]
impl DeletionStandIn {
    #[handler(name = "Delete")]
    async fn delete(
        &self,
        ctx: ObjectContext<'_>,
        Json(input): Json<DeletionInput>,
    ) -> HandlerResult<()> {
        assert_eq!(input.id, ctx.key());
        self.calls
            .lock()
            .expect("lock")
            .push(format!("cascade@{}", ctx.key()));
        Ok(())
    }
}

/// Stands in for the worker's Deploy object (Delete).
#[derive(Clone, Default)]
struct DeployStandIn {
    calls: Calls,
}

#[restate_sdk::object(name = "Deploy")]
impl DeployStandIn {
    #[handler(name = "Delete")]
    async fn delete(
        &self,
        ctx: ObjectContext<'_>,
        Json(input): Json<DeleteDeploymentInput>,
    ) -> HandlerResult<()> {
        assert_eq!(input.deployment_id, ctx.key());
        assert!(!input.cascade);
        self.calls
            .lock()
            .expect("lock")
            .push(format!("delete@{}", ctx.key()));
        Ok(())
    }
}

async fn restate(calls: &Calls) -> Result<RestateServer> {
    crate::restate_with(
        Endpoint::builder()
            .bind(DeletionStandIn {
                calls: calls.clone(),
            })
            .bind(DeployStandIn {
                calls: calls.clone(),
            })
            .build(),
    )
    .await
}

/// Waits until the stand-ins saw `call`.
async fn seen(calls: &Calls, call: &str) -> Result<()> {
    for _ in 0..200 {
        if calls.lock().expect("lock").iter().any(|c| c == call) {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    anyhow::bail!(
        "{call} never arrived; saw {:?}",
        calls.lock().expect("lock")
    )
}

fn precondition(e: ApiError) -> String {
    match e {
        ApiError::FailedPrecondition(m) => m,
        other => panic!("expected failed_precondition, got {other:?}"),
    }
}

#[tokio::test]
async fn deletes_check_their_rules_then_start_the_cascade_and_nothing_new_is_created() -> Result<()>
{
    let calls = Calls::default();
    let restate = restate(&calls).await?;
    let s = state_with_restate(&restate.ingress_url(), &restate.admin_url()).await?;
    let f = crate::fixtures::app(&s, true).await?;

    // A protected app is refused before anything starts.
    sqlx::query("UPDATE apps SET delete_protection = TRUE WHERE id = ?")
        .bind(&f.app.id)
        .execute(s.db())
        .await?;
    let refused = tenancy::delete_project(
        &s,
        pb::DeleteProjectRequest {
            project_id: f.app.project_id.clone(),
            actor: None,
        },
    )
    .await
    .unwrap_err();
    assert_eq!(
        precondition(refused),
        "the app \"web\" is protected against deletion"
    );
    sqlx::query("UPDATE apps SET delete_protection = FALSE WHERE id = ?")
        .bind(&f.app.id)
        .execute(s.db())
        .await?;
    // The production environment goes only with its app.
    let refused = tenancy::delete_environment(
        &s,
        pb::DeleteEnvironmentRequest {
            environment_id: f.production.id.clone(),
            actor: None,
        },
    )
    .await
    .unwrap_err();
    assert!(precondition(refused).contains("production environment cannot be deleted"));

    // One deployment: never the live one on its own.
    let live =
        crate::fixtures::deployment(&s, &f.app, &f.production.id, None, S::Ready, "").await?;
    let old = crate::fixtures::deployment(&s, &f.app, &f.production.id, None, S::Ready, "").await?;
    let mut conn = s.db().acquire().await?;
    ctrl_db::tenancy::swap_live_deployment(&mut conn, &f.app.id, &live, false, "test", 3).await?;
    drop(conn);
    let delete = |id: &str| pb::DeleteDeploymentRequest {
        deployment_id: id.into(),
        actor: None,
    };
    let refused = deployments::delete_deployment(&s, delete(&live))
        .await
        .unwrap_err();
    assert_eq!(
        precondition(refused),
        "The live deployment cannot be deleted; roll back to or promote another deployment first."
    );
    deployments::delete_deployment(&s, delete(&old)).await?;
    seen(&calls, &format!("delete@{old}")).await?;
    assert!(
        !calls
            .lock()
            .expect("lock")
            .contains(&format!("delete@{live}"))
    );

    // The app: the cascade starts on its key, and it is marked at once.
    tenancy::delete_app(
        &s,
        pb::DeleteAppRequest {
            app_id: f.app.id.clone(),
            actor: None,
        },
    )
    .await?;
    seen(&calls, &format!("cascade@{}", f.app.id)).await?;
    let app = ctrl_db::tenancy::get_app(s.db(), &f.app.id).await?;
    assert!(app.deleting_at.is_some());
    let refused = deployments::create_deployment(
        &s,
        pb::CreateDeploymentRequest {
            app_id: f.app.id.clone(),
            environment_slug: "production".into(),
            source: Some(pb::create_deployment_request::Source::Image(
                pb::ImageSource {
                    image: "localhost/demo:1".into(),
                },
            )),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(precondition(refused), "the app is being deleted");
    let refused = tenancy::create_environment(
        &s,
        pb::CreateEnvironmentRequest {
            app_id: f.app.id.clone(),
            slug: "staging".into(),
            kind: pb::EnvironmentKind::Preview as i32,
            description: String::new(),
            actor: None,
        },
    )
    .await
    .unwrap_err();
    assert_eq!(precondition(refused), "the app is being deleted");

    // The workspace: a cascade on its key; no project can be added.
    tenancy::delete_workspace(
        &s,
        pb::DeleteWorkspaceRequest {
            workspace_id: f.app.workspace_id.clone(),
            actor: None,
        },
    )
    .await?;
    seen(&calls, &format!("cascade@{}", f.app.workspace_id)).await?;
    let refused = tenancy::create_project(
        &s,
        pb::CreateProjectRequest {
            workspace_id: f.app.workspace_id.clone(),
            name: "More".into(),
            slug: "more".into(),
            actor: None,
        },
    )
    .await
    .unwrap_err();
    assert_eq!(precondition(refused), "the workspace is being deleted");
    Ok(())
}
