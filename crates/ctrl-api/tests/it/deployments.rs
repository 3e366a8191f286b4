//! DeploymentService reads and the WatchDeployment stream.

use std::time::Duration;

use anyhow::{Context, Result};
use ctrl_api::services::deployment as svc;
use ctrl_api::state::AppState;
use ctrl_core::domains::Sticky;
use ctrl_core::status::{DeploymentStatus as S, StepKind};
use ctrl_db::deployment::{self};
use ctrl_db::types::InstanceStatus;
use ctrl_db::{instance, route, topology};
use ctrl_proto::ctrl::v1 as pb;
use futures::StreamExt;
use pb::deployment_service_client::DeploymentServiceClient as GrpcDeployments;
use pb::deployment_service_connect_client::DeploymentServiceClient as ConnectDeployments;

use crate::{TOKEN, serve, state};

use crate::fixtures::{AppFixture as Fixture, REGION_ID};

async fn fixture(s: &AppState) -> Result<Fixture> {
    crate::fixtures::app(s, true).await
}

async fn insert(s: &AppState, f: &Fixture, env: &pb::Environment, branch: &str) -> Result<String> {
    crate::fixtures::deployment(s, &f.app, &env.id, Some(branch), S::Pending, "").await
}

#[tokio::test]
async fn get_shows_steps_hostnames_regions_and_the_live_flag() -> Result<()> {
    let s = state().await?;
    let f = fixture(&s).await?;
    let id = insert(&s, &f, &f.production, "main").await?;
    let now = s.now_ms();
    deployment::start_step(
        s.db(),
        &f.app.workspace_id,
        &id,
        StepKind::Queued,
        "queued",
        now,
    )
    .await?;
    deployment::end_step(s.db(), &id, StepKind::Queued, None, now).await?;
    deployment::start_step(
        s.db(),
        &f.app.workspace_id,
        &id,
        StepKind::Deploying,
        "starting instances",
        now,
    )
    .await?;
    let mut tx = s.db().begin().await?;
    topology::upsert_running(
        &mut tx,
        &topology::NewTopology {
            workspace_id: &f.app.workspace_id,
            deployment_id: &id,
            region_id: REGION_ID,
            min_replicas: 1,
            max_replicas: 2,
            cpu_threshold_percent: 0,
            memory_threshold_percent: 0,
            startup_timeout_seconds: 0,
        },
        now,
    )
    .await?;
    instance::replace_for_deployment(
        &mut tx,
        &f.app.workspace_id,
        &id,
        REGION_ID,
        &[instance::ReportedInstance {
            new_id: "ins_0000000000000001".into(),
            name: "c1".into(),
            address: "127.0.0.1:9000".into(),
            cpu_millicores: 250,
            memory_mib: 256,
            status: InstanceStatus::Running,
        }],
        now,
    )
    .await?;
    ctrl_db::tenancy::swap_live_deployment(
        &mut tx,
        &f.app.id,
        &id,
        false,
        &format!("test-{id}"),
        now,
    )
    .await?;
    tx.commit().await?;
    route::insert(
        s.db(),
        &route::NewRoute {
            id: "flr_0000000000000001",
            workspace_id: &f.app.workspace_id,
            project_id: &f.app.project_id,
            app_id: &f.app.id,
            environment_id: &f.production.id,
            deployment_id: &id,
            fqdn: "shop-acme.ctrl.test",
            sticky: Sticky::Live,
        },
        now,
    )
    .await?;

    let d = svc::get_deployment(
        &s,
        pb::GetDeploymentRequest {
            deployment_id: id.clone(),
        },
    )
    .await?
    .deployment
    .unwrap();
    assert_eq!(d.status, pb::DeploymentStatus::Pending as i32);
    assert_eq!(d.environment_slug, "production");
    assert!(d.is_live);
    assert_eq!(d.git.as_ref().unwrap().branch, "main");
    assert_eq!(d.trigger, pb::DeploymentTrigger::Cli as i32);
    let steps: Vec<_> = d.steps.iter().map(|st| (st.kind, st.status)).collect();
    assert_eq!(
        steps,
        [
            (
                pb::DeploymentStepKind::Queued as i32,
                pb::DeploymentStepStatus::Succeeded as i32
            ),
            (
                pb::DeploymentStepKind::Deploying as i32,
                pb::DeploymentStepStatus::Running as i32
            ),
        ]
    );
    assert_eq!(
        d.hostnames,
        [pb::Hostname {
            fqdn: "shop-acme.ctrl.test".into(),
            stickiness: pb::RouteStickiness::Live as i32
        }]
    );
    assert_eq!(d.regions.len(), 1);
    assert_eq!(
        (
            d.regions[0].region_name.as_str(),
            d.regions[0].running_instances
        ),
        ("local", 1)
    );
    assert_eq!(d.runtime.unwrap().port, 8080);

    let missing = svc::get_deployment(
        &s,
        pb::GetDeploymentRequest {
            deployment_id: "d_0000000000000000".into(),
        },
    )
    .await;
    assert!(matches!(
        missing,
        Err(ctrl_api::error::ApiError::NotFound(_))
    ));
    Ok(())
}

#[tokio::test]
async fn list_filters_by_environment_branch_and_status_newest_first() -> Result<()> {
    let s = state().await?;
    let f = fixture(&s).await?;
    let a = insert(&s, &f, &f.production, "main").await?;
    let b = insert(&s, &f, &f.preview, "feat/x").await?;
    let c = insert(&s, &f, &f.preview, "feat/x").await?;
    deployment::compare_and_set_status(s.db(), &c, S::Pending, S::Failed, s.now_ms()).await?;
    let list = |env: &str, branch: &str, statuses: Vec<i32>| pb::ListDeploymentsRequest {
        app_id: f.app.id.clone(),
        environment_slug: env.into(),
        branch: branch.into(),
        statuses,
        page: None,
    };
    let ids = |r: pb::ListDeploymentsResponse| {
        r.deployments.into_iter().map(|d| d.id).collect::<Vec<_>>()
    };
    assert_eq!(
        ids(svc::list_deployments(&s, list("", "", vec![])).await?),
        [c.clone(), b.clone(), a.clone()]
    );
    assert_eq!(
        ids(svc::list_deployments(
            &s,
            list(
                "preview",
                "feat/x",
                vec![pb::DeploymentStatus::Pending as i32]
            )
        )
        .await?),
        [b]
    );
    assert_eq!(
        ids(svc::list_deployments(&s, list("production", "", vec![])).await?),
        [a]
    );
    let unknown = svc::list_deployments(&s, list("staging", "", vec![])).await;
    assert!(matches!(
        unknown,
        Err(ctrl_api::error::ApiError::NotFound(_))
    ));
    let bad = svc::list_deployments(&s, list("", "", vec![99]))
        .await
        .unwrap_err();
    assert!(
        matches!(bad, ctrl_api::error::ApiError::InvalidArgument { ref field, .. } if field == "statuses[0]")
    );
    Ok(())
}

#[tokio::test]
async fn watch_streams_changes_until_a_terminal_status_over_connect_and_grpc() -> Result<()> {
    let s = state().await?;
    let f = fixture(&s).await?;
    let id = insert(&s, &f, &f.preview, "feat").await?;
    let base = serve(s.clone()).await?;

    let connect = ConnectDeployments::builder(base.clone())
        .default_header("authorization", format!("Bearer {TOKEN}"))
        .build()?;
    let mut grpc = GrpcDeployments::connect(base.clone()).await?;
    let mut req = tonic::Request::new(pb::WatchDeploymentRequest {
        deployment_id: id.clone(),
    });
    req.metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse()?);
    let mut grpc_stream = grpc.watch_deployment(req).await?.into_inner();
    let request = pb::WatchDeploymentRequest {
        deployment_id: id.clone(),
    };
    let mut connect_stream = connect.watch_deployment(&request).await?.into_inner();

    let first = connect_stream.next().await.context("first message")??;
    assert_eq!(
        first.deployment.unwrap().status,
        pb::DeploymentStatus::Pending as i32
    );
    let first = grpc_stream.message().await?.context("first gRPC message")?;
    assert_eq!(
        first.deployment.unwrap().status,
        pb::DeploymentStatus::Pending as i32
    );

    // The workflow moves on: both watchers see each change, then the end.
    let db = s.db().clone();
    let id2 = id.clone();
    tokio::spawn(async move {
        for (from, to) in [
            (S::Pending, S::Starting),
            (S::Starting, S::Deploying),
            (S::Deploying, S::Ready),
        ] {
            tokio::time::sleep(Duration::from_millis(400)).await;
            deployment::compare_and_set_status(&db, &id2, from, to, 1)
                .await
                .expect("update");
        }
    });
    let mut seen = Vec::new();
    while let Some(msg) =
        tokio::time::timeout(Duration::from_secs(10), connect_stream.next()).await?
    {
        seen.push(msg?.deployment.unwrap().status);
    }
    assert_eq!(
        seen,
        [
            pb::DeploymentStatus::Starting as i32,
            pb::DeploymentStatus::Deploying as i32,
            pb::DeploymentStatus::Ready as i32
        ]
    );
    let mut grpc_seen = Vec::new();
    while let Some(msg) =
        tokio::time::timeout(Duration::from_secs(10), grpc_stream.message()).await??
    {
        grpc_seen.push(msg.deployment.unwrap().status);
    }
    assert_eq!(
        grpc_seen.last(),
        Some(&(pb::DeploymentStatus::Ready as i32)),
        "the gRPC stream ends after ready too"
    );

    // Errors before the stream starts arrive as errors.
    let missing = pb::WatchDeploymentRequest {
        deployment_id: "d_0000000000000000".into(),
    };
    let mut stream = connect.watch_deployment(&missing).await?.into_inner();
    let err = stream.next().await.context("an error item")?.unwrap_err();
    assert_eq!(err.code(), connectrpc_axum_client::Code::NotFound);
    Ok(())
}

#[tokio::test]
async fn watches_end_when_the_server_shuts_down() -> Result<()> {
    let s = state().await?;
    let f = fixture(&s).await?;
    let id = insert(&s, &f, &f.preview, "feat").await?;
    let base = serve(s.clone()).await?;
    let connect = ConnectDeployments::builder(base)
        .default_header("authorization", format!("Bearer {TOKEN}"))
        .build()?;
    let request = pb::WatchDeploymentRequest { deployment_id: id };
    let mut stream = connect.watch_deployment(&request).await?.into_inner();
    stream.next().await.context("first message")??;
    s.begin_shutdown();
    let end = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .context("the stream must end on shutdown")?;
    assert!(end.is_none(), "expected the end of the stream, got {end:?}");
    Ok(())
}
