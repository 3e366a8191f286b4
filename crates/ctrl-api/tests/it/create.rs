//! CreateDeployment against a real Restate server. The worker does not
//! exist yet, so a small `Deploy` object registered on the real server
//! records what it is asked to run (it stands in for ctrl-worker's pipeline,
//! not for Restate).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use ctrl_api::error::ApiError;
use ctrl_api::services::{deployment as svc, settings};
use ctrl_api::state::AppState;
use ctrl_core::workflows::DeployInput;
use ctrl_db::deployment;
use ctrl_proto::ctrl::v1 as pb;
use ctrl_testkit::RestateServer;
use prost::Message;
use restate_sdk::prelude::*;

use crate::{state, state_with_restate};

/// Records the deployment ids it is invoked for; with `block`, then waits
/// (a durable sleep) like a pipeline waiting for instances.
#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<Vec<String>>>,
    request_ids: Arc<Mutex<Vec<String>>>,
    block: bool,
}

#[restate_sdk::object(name = "Deploy")]
impl Recorder {
    #[handler(name = "Deploy")]
    async fn deploy(
        &self,
        ctx: ObjectContext<'_>,
        Json(input): Json<DeployInput>,
    ) -> HandlerResult<()> {
        assert_eq!(ctx.key(), input.deployment_id, "keyed by the deployment id");
        self.seen.lock().expect("lock").push(input.deployment_id);
        let request_id = ctx
            .headers()
            .get("x-request-id")
            .cloned()
            .unwrap_or_default();
        self.request_ids.lock().expect("lock").push(request_id);
        if self.block {
            ctx.sleep(Duration::from_secs(600)).await?;
        }
        Ok(())
    }
}

/// A real Restate server with the recorder registered.
async fn restate_with_recorder() -> Result<(RestateServer, Recorder)> {
    restate_with(Recorder::default()).await
}

async fn restate_with(recorder: Recorder) -> Result<(RestateServer, Recorder)> {
    let restate = crate::restate_with(Endpoint::builder().bind(recorder.clone()).build()).await?;
    Ok((restate, recorder))
}

async fn wait_for(recorder: &Recorder, count: usize) -> Result<Vec<String>> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let seen = recorder.seen.lock().expect("lock").clone();
        if seen.len() >= count {
            return Ok(seen);
        }
        if Instant::now() > deadline {
            bail!("the Deploy object saw {seen:?}, expected {count} invocation(s)");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An app with one schedulable region and a sealed variable in production.
async fn app(s: &AppState, with_region: bool) -> Result<pb::App> {
    let app = crate::fixtures::app(s, with_region).await?.app;
    let var = pb::EnvironmentVariable {
        key: "SECRET".into(),
        value: "s3cr3t".into(),
        r#type: 0,
        description: String::new(),
        updated_at: 0,
        build_secret: false,
    };
    settings::set_environment_variables(
        s,
        pb::SetEnvironmentVariablesRequest {
            app_id: app.id.clone(),
            environment_slug: "production".into(),
            variables: vec![var],
            actor: None,
        },
    )
    .await?;
    Ok(app)
}

fn request(app: &pb::App, image: &str, key: &str) -> pb::CreateDeploymentRequest {
    pb::CreateDeploymentRequest {
        app_id: app.id.clone(),
        environment_slug: "production".into(),
        source: Some(pb::create_deployment_request::Source::Image(
            pb::ImageSource {
                image: image.into(),
            },
        )),
        git: Some(pb::GitCommitInfo {
            commit_sha: "ABC1234DEF5678901234567890123456789ABCDE".into(),
            branch: "main".into(),
            ..Default::default()
        }),
        command: vec!["./serve".into()],
        trigger: pb::DeploymentTrigger::Cli as i32,
        idempotency_key: key.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn create_snapshots_the_settings_and_starts_the_deploy_object_once() -> Result<()> {
    let (restate, recorder) = restate_with_recorder().await?;
    let s = state_with_restate(&restate.ingress_url(), &restate.admin_url()).await?;
    let app = app(&s, true).await?;

    // With a real Restate behind it, the server is ready.
    let ops = crate::serve_ops(s.clone()).await?;
    let ready = ctrl_testkit::http_client()
        .get(format!("{ops}/health/ready"))
        .send()
        .await?;
    assert_eq!(ready.status(), 200, "{}", ready.text().await?);

    let created = svc::create_deployment(&s, request(&app, "localhost/demo:1", "ci-42")).await?;
    assert!(!created.deduplicated);
    assert_eq!(created.status, pb::DeploymentStatus::Pending as i32);
    assert_eq!(
        wait_for(&recorder, 1).await?,
        std::slice::from_ref(&created.deployment_id)
    );

    let row = deployment::get(s.db(), &created.deployment_id).await?;
    assert!(
        row.invocation_id
            .as_deref()
            .is_some_and(|i| i.starts_with("inv_")),
        "{:?}",
        row.invocation_id
    );
    assert_eq!(row.image.as_deref(), Some("localhost/demo:1"));
    assert_eq!(
        row.command.0,
        ["./serve"],
        "the command override is part of the snapshot"
    );
    assert_eq!(
        row.git_commit_sha.as_deref(),
        Some("abc1234def5678901234567890123456789abcde"),
        "normalised"
    );
    assert!(ctrl_core::names::is_dns1035_label(&row.k8s_name));
    let env = pb::EncryptedEnvironment::decode(row.encrypted_environment.as_slice())?;
    let sealed = &env.variables["SECRET"];
    assert_eq!(
        s.vault().open(&env.keyring, sealed)?.as_slice(),
        b"s3cr3t",
        "sealed, openable for its environment"
    );

    // The same idempotency key returns the same deployment and starts nothing.
    let again = svc::create_deployment(&s, request(&app, "localhost/demo:1", "ci-42")).await?;
    assert!(again.deduplicated);
    assert_eq!(again.deployment_id, created.deployment_id);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(recorder.seen.lock().expect("lock").len(), 1);
    // A new key is a new deployment.
    let other = svc::create_deployment(&s, request(&app, "localhost/demo:2", "ci-43")).await?;
    assert_ne!(other.deployment_id, created.deployment_id);
    wait_for(&recorder, 2).await?;
    Ok(())
}

#[tokio::test]
async fn create_rejects_bad_input_and_missing_regions_with_clear_errors() -> Result<()> {
    let s = state().await?;
    let app = app(&s, false).await?;
    let err = svc::create_deployment(&s, request(&app, "localhost/demo:1", ""))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ApiError::FailedPrecondition(
            "No regions configured. Please configure at least one region before deploying.".into()
        )
    );

    let field = |e: ApiError| match e {
        ApiError::InvalidArgument { field, .. } => field,
        other => panic!("expected invalid_argument, got {other:?}"),
    };
    assert_eq!(
        field(
            svc::create_deployment(&s, request(&app, "Not An Image!", ""))
                .await
                .unwrap_err()
        ),
        "image.image"
    );
    let mut no_source = request(&app, "x", "");
    no_source.source = None;
    assert_eq!(
        field(svc::create_deployment(&s, no_source).await.unwrap_err()),
        "source"
    );
    let mut bad_sha = request(&app, "localhost/demo:1", "");
    bad_sha.git.as_mut().unwrap().commit_sha = "abc".into();
    assert_eq!(
        field(svc::create_deployment(&s, bad_sha).await.unwrap_err()),
        "git.commit_sha"
    );
    let mut bad_env = request(&app, "localhost/demo:1", "");
    bad_env.environment_slug = "staging".into();
    assert!(matches!(
        svc::create_deployment(&s, bad_env).await,
        Err(ApiError::NotFound(_))
    ));
    let mut upload = request(&app, "x", "");
    upload.source = Some(pb::create_deployment_request::Source::ContextBuild(
        pb::ContextSource {
            build_context_path: format!("contexts/{}/{}/x.tar.gz", app.workspace_id, app.id),
            dockerfile_path: String::new(),
        },
    ));
    assert_eq!(
        svc::create_deployment(&s, upload).await.unwrap_err(),
        ApiError::FailedPrecondition(
            "this server takes no build contexts ([build_contexts] is not configured)".into()
        )
    );
    assert_eq!(
        deployment::count_for_app(s.db(), &app.id).await?,
        0,
        "nothing was created"
    );
    Ok(())
}

#[tokio::test]
async fn an_uploaded_context_and_a_git_commit_become_deployments_to_build() -> Result<()> {
    let (restate, recorder) = restate_with_recorder().await?;
    let (_s3, store) = crate::builds::store().await?;
    let s = state_with_restate(&restate.ingress_url(), &restate.admin_url())
        .await?
        .with_build_contexts(store);
    let app = app(&s, true).await?;
    settings::set_environment_variables(
        &s,
        pb::SetEnvironmentVariablesRequest {
            app_id: app.id.clone(),
            environment_slug: "production".into(),
            variables: vec![pb::EnvironmentVariable {
                key: "NPM_TOKEN".into(),
                value: "tok".into(),
                build_secret: true,
                ..Default::default()
            }],
            actor: None,
        },
    )
    .await?;
    let listed = settings::list_environment_variables(
        &s,
        pb::ListEnvironmentVariablesRequest {
            app_id: app.id.clone(),
            environment_slug: "production".into(),
            ..Default::default()
        },
    )
    .await?
    .variables;
    let marked: Vec<(&str, bool)> = listed
        .iter()
        .map(|v| (v.key.as_str(), v.build_secret))
        .collect();
    assert_eq!(marked, [("NPM_TOKEN", true), ("SECRET", false)]);
    let key = crate::builds::upload(&s, &app, b"gzip bytes".to_vec()).await?;
    let mut req = request(&app, "x", "");
    req.git = None;
    req.source = Some(pb::create_deployment_request::Source::ContextBuild(
        pb::ContextSource {
            build_context_path: key.clone(),
            dockerfile_path: "docker/Dockerfile.prod".into(),
        },
    ));
    req.build_args = [("VERSION".to_owned(), "1.2.3".to_owned())].into();
    let id = svc::create_deployment(&s, req).await?.deployment_id;
    let d = deployment::get(s.db(), &id).await?;
    assert_eq!(d.source_kind, ctrl_db::types::SourceKind::Context);
    assert_eq!(d.image, None);
    assert_eq!(d.build_context_path.as_deref(), Some(key.as_str()));
    assert_eq!(d.build_dir.as_deref(), Some("."));
    assert_eq!(d.dockerfile_path.as_deref(), Some("docker/Dockerfile.prod"));
    assert_eq!(
        d.build_args.map(|a| a.0),
        Some([("VERSION".to_owned(), "1.2.3".to_owned())].into())
    );
    assert_eq!(
        d.build_secrets.map(|s| s.0),
        Some(vec!["NPM_TOKEN".to_owned()]),
        "only the marked variable is the build's secret"
    );
    assert_eq!(wait_for(&recorder, 1).await?, std::slice::from_ref(&id));

    let mut git = request(&app, "x", "");
    git.git = Some(pb::GitCommitInfo {
        branch: "feature/x".into(),
        ..Default::default()
    });
    git.source = Some(pb::create_deployment_request::Source::GitBuild(
        pb::GitSource {
            repository: "acme/web".into(),
            context_path: "services/api".into(),
            dockerfile_path: String::new(),
            installation_id: 77,
        },
    ));
    let git_id = svc::create_deployment(&s, git).await?.deployment_id;
    let g = deployment::get(s.db(), &git_id).await?;
    assert_eq!(g.source_kind, ctrl_db::types::SourceKind::Git);
    assert_eq!(g.git_repository.as_deref(), Some("acme/web"));
    assert_eq!(g.git_installation_id, Some(77));
    assert_eq!(g.build_dir.as_deref(), Some("services/api"));
    assert_eq!(g.dockerfile_path.as_deref(), Some("Dockerfile"));
    assert_eq!(g.git_branch.as_deref(), Some("feature/x"));

    // Their builds are not queued yet; an image deployment has none at all.
    let e = ctrl_api::services::build::get_build(
        &s,
        pb::GetBuildRequest {
            deployment_id: id.clone(),
        },
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&e, ApiError::NotFound(m) if m.contains("has not started building yet")),
        "{e:?}"
    );
    let image = svc::create_deployment(&s, request(&app, "localhost/demo:1", "")).await?;
    let e = ctrl_api::services::build::get_build(
        &s,
        pb::GetBuildRequest {
            deployment_id: image.deployment_id,
        },
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&e, ApiError::NotFound(m) if m.contains("runs a given image")),
        "{e:?}"
    );
    Ok(())
}

#[tokio::test]
async fn when_restate_is_unreachable_create_fails_as_unavailable_and_leaves_nothing() -> Result<()>
{
    let s = state().await?; // the ingress address has no server behind it
    let app = app(&s, true).await?;
    let err = svc::create_deployment(&s, request(&app, "localhost/demo:1", "retry-me"))
        .await
        .unwrap_err();
    assert!(matches!(err, ApiError::Unavailable(_)), "{err:?}");
    assert_eq!(
        deployment::count_for_app(s.db(), &app.id).await?,
        0,
        "the row was removed again"
    );
    Ok(())
}

#[tokio::test]
async fn cancel_stamps_steps_sets_cancelled_cancels_the_invocation_and_is_idempotent() -> Result<()>
{
    let (restate, recorder) = restate_with(Recorder {
        block: true,
        ..Default::default()
    })
    .await?;
    let s = state_with_restate(&restate.ingress_url(), &restate.admin_url()).await?;
    let app = app(&s, true).await?;
    let created = svc::create_deployment(&s, request(&app, "localhost/demo:1", "")).await?;
    wait_for(&recorder, 1).await?;
    let now = s.now_ms();
    deployment::compare_and_set_status(
        s.db(),
        &created.deployment_id,
        ctrl_core::status::DeploymentStatus::Pending,
        ctrl_core::status::DeploymentStatus::Deploying,
        now,
    )
    .await?;
    deployment::start_step(
        s.db(),
        &app.workspace_id,
        &created.deployment_id,
        ctrl_core::status::StepKind::Deploying,
        "waiting for instances",
        now,
    )
    .await?;

    let cancel = || pb::CancelDeploymentRequest {
        deployment_id: created.deployment_id.clone(),
        actor: None,
    };
    assert_eq!(
        svc::cancel_deployment(&s, cancel()).await?.status,
        pb::DeploymentStatus::Cancelled as i32
    );
    let row = deployment::get(s.db(), &created.deployment_id).await?;
    assert_eq!(row.error_message.as_deref(), Some(svc::CANCELLED_BY_USER));
    let steps = deployment::list_steps(s.db(), &created.deployment_id).await?;
    assert!(
        steps
            .iter()
            .all(|st| st.ended_at.is_some() && st.error.as_deref() == Some(svc::CANCELLED_BY_USER)),
        "{steps:?}"
    );

    // Restate ends the invocation as cancelled.
    let invocation = row.invocation_id.clone().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let rows: serde_json::Value = ctrl_testkit::http_client()
            .post(format!("{}/query", restate.admin_url()))
            .header("accept", "application/json")
            .json(&serde_json::json!({ "query": format!("SELECT status, completion_failure FROM sys_invocation WHERE id = '{invocation}'") }))
            .send()
            .await?
            .json()
            .await?;
        let status = rows["rows"][0]["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if status == "completed" {
            let failure = rows["rows"][0]["completion_failure"].to_string();
            assert!(failure.contains("cancel"), "{failure}");
            break;
        }
        if Instant::now() > deadline {
            bail!("the invocation was not cancelled: {rows}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Again: same answer, nothing changes; a finished deployment keeps its status.
    assert_eq!(
        svc::cancel_deployment(&s, cancel()).await?.status,
        pb::DeploymentStatus::Cancelled as i32
    );
    let other = svc::create_deployment(&s, request(&app, "localhost/demo:2", "")).await?;
    deployment::compare_and_set_status(
        s.db(),
        &other.deployment_id,
        ctrl_core::status::DeploymentStatus::Pending,
        ctrl_core::status::DeploymentStatus::Ready,
        now,
    )
    .await?;
    let ready = svc::cancel_deployment(
        &s,
        pb::CancelDeploymentRequest {
            deployment_id: other.deployment_id,
            actor: None,
        },
    )
    .await?;
    assert_eq!(ready.status, pb::DeploymentStatus::Ready as i32);
    Ok(())
}

#[tokio::test]
async fn over_the_wire_create_is_idempotent_and_cancel_twice_answers_the_same() -> Result<()> {
    use pb::deployment_service_client::DeploymentServiceClient as Grpc;
    use pb::deployment_service_connect_client::DeploymentServiceClient as Connect;

    let (restate, recorder) = restate_with(Recorder {
        block: true,
        ..Default::default()
    })
    .await?;
    let s = state_with_restate(&restate.ingress_url(), &restate.admin_url()).await?;
    let app = app(&s, true).await?;
    let base = crate::serve(s.clone()).await?;
    let connect = Connect::builder(base.clone())
        .default_header("authorization", format!("Bearer {}", crate::TOKEN))
        .default_header("x-request-id", "wire-request-1")
        .build()?;
    let mut grpc = Grpc::connect(base).await?;

    let first = connect
        .create_deployment(&request(&app, "localhost/demo:1", "wire-1"))
        .await?
        .into_inner();
    let again = grpc
        .create_deployment(auth(request(&app, "localhost/demo:1", "wire-1")))
        .await?
        .into_inner();
    assert_eq!(again.deployment_id, first.deployment_id);
    assert!(!first.deduplicated && again.deduplicated);
    wait_for(&recorder, 1).await?;
    assert_eq!(
        recorder.request_ids.lock().expect("lock").clone(),
        ["wire-request-1"],
        "the request id reaches the worker"
    );

    let bad = connect
        .create_deployment(&request(&app, "NOT VALID", ""))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), connectrpc_axum_client::Code::InvalidArgument);
    assert!(
        bad.message()
            .unwrap_or_default()
            .starts_with("image.image:"),
        "{bad:?}"
    );

    let cancel = pb::CancelDeploymentRequest {
        deployment_id: first.deployment_id.clone(),
        actor: None,
    };
    let once = connect.cancel_deployment(&cancel).await?.into_inner();
    let twice = grpc
        .cancel_deployment(auth(cancel.clone()))
        .await?
        .into_inner();
    assert_eq!(once.status, pb::DeploymentStatus::Cancelled as i32);
    assert_eq!(twice, once);
    Ok(())
}

/// Why the deployments of these tests wait (what the webhook would say).
const HELD: &str = "Waiting for approval: pull request #7 comes from a fork";

/// A deployment of pull request 7 in the app's preview environment that
/// awaits approval, as the webhook leaves one.
async fn awaiting_approval(s: &AppState, app: &pb::App) -> Result<String> {
    use ctrl_core::status::DeploymentStatus as S;
    let preview = ctrl_db::tenancy::find_environment_by_slug(s.db(), &app.id, "preview").await?;
    let id = crate::fixtures::deployment_of_pr(
        s,
        app,
        &preview.id,
        Some("fork-feature"),
        Some(7),
        S::Pending,
        "",
    )
    .await?;
    assert!(deployment::hold(s.db(), &id, S::AwaitingApproval, HELD, s.now_ms()).await?);
    Ok(id)
}

fn approve(id: &str) -> pb::ApproveDeploymentRequest {
    pb::ApproveDeploymentRequest {
        deployment_id: id.into(),
        actor: Some(pb::ActorInfo {
            id: "reviewer".into(),
            name: "Re Viewer".into(),
            r#type: pb::ActorType::User as i32,
            ..Default::default()
        }),
    }
}

#[tokio::test]
async fn approve_starts_a_deployment_awaiting_approval_once() -> Result<()> {
    use ctrl_core::status::DeploymentStatus as S;
    let (restate, recorder) = restate_with_recorder().await?;
    let s = state_with_restate(&restate.ingress_url(), &restate.admin_url()).await?;
    let app = app(&s, true).await?;
    let id = awaiting_approval(&s, &app).await?;

    // Shown as awaiting approval, with its pull request.
    let shown = svc::get_deployment(
        &s,
        pb::GetDeploymentRequest {
            deployment_id: id.clone(),
        },
    )
    .await?
    .deployment
    .expect("deployment");
    assert_eq!(shown.status, pb::DeploymentStatus::AwaitingApproval as i32);
    assert_eq!(shown.git.as_ref().map(|g| g.pr_number), Some(7));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        recorder.seen.lock().expect("lock").is_empty(),
        "nothing runs before the approval"
    );

    let approved = svc::approve_deployment(&s, approve(&id)).await?;
    assert_eq!(approved.status, pb::DeploymentStatus::Pending as i32);
    assert_eq!(wait_for(&recorder, 1).await?, std::slice::from_ref(&id));
    let row = deployment::get(s.db(), &id).await?;
    assert_eq!(row.status, S::Pending);
    let invocation = row.invocation_id.clone();
    assert!(
        invocation.as_deref().is_some_and(|i| i.starts_with("inv_")),
        "{invocation:?}"
    );
    assert_eq!(
        row.actor_id.as_deref(),
        Some("dev"),
        "the creator stays the actor"
    );

    // Again: it no longer awaits approval, so nothing starts.
    let again = svc::approve_deployment(&s, approve(&id)).await?;
    assert_eq!(again.status, pb::DeploymentStatus::Pending as i32);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(recorder.seen.lock().expect("lock").len(), 1);
    assert_eq!(
        deployment::get(s.db(), &id).await?.invocation_id,
        invocation
    );

    // A deployment that is ready or failed answers its status unchanged.
    let production = ctrl_db::tenancy::find_environment_by_slug(s.db(), &app.id, "production")
        .await?
        .id;
    for (status, wire) in [
        (S::Ready, pb::DeploymentStatus::Ready),
        (S::Failed, pb::DeploymentStatus::Failed),
    ] {
        let other =
            crate::fixtures::deployment(&s, &app, &production, Some("main"), status, "").await?;
        let answer = svc::approve_deployment(&s, approve(&other)).await?;
        assert_eq!(answer.status, wire as i32, "{status:?}");
        let row = deployment::get(s.db(), &other).await?;
        assert_eq!((row.status, row.invocation_id), (status, None));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(recorder.seen.lock().expect("lock").len(), 1);

    // Over the wire too (Connect), for a second held deployment.
    let second = awaiting_approval(&s, &app).await?;
    let base = crate::serve(s.clone()).await?;
    let connect = pb::deployment_service_connect_client::DeploymentServiceClient::builder(base)
        .default_header("authorization", format!("Bearer {}", crate::TOKEN))
        .build()?;
    let answer = connect
        .approve_deployment(&approve(&second))
        .await?
        .into_inner();
    assert_eq!(answer.status, pb::DeploymentStatus::Pending as i32);
    assert_eq!(wait_for(&recorder, 2).await?[1], second);
    Ok(())
}

#[tokio::test]
async fn approve_puts_the_deployment_back_when_restate_is_unreachable() -> Result<()> {
    use ctrl_core::status::DeploymentStatus as S;
    let s = state().await?; // the ingress address has no server behind it
    let app = app(&s, true).await?;
    let id = awaiting_approval(&s, &app).await?;
    let err = svc::approve_deployment(&s, approve(&id)).await.unwrap_err();
    assert!(matches!(err, ApiError::Unavailable(_)), "{err:?}");
    let row = deployment::get(s.db(), &id).await?;
    assert_eq!(
        (row.status, row.invocation_id, row.error_message.as_deref()),
        (S::AwaitingApproval, None, Some(HELD)),
        "it awaits approval again"
    );

    // Bad input is named; an unknown deployment is not found.
    let e = svc::approve_deployment(&s, approve("d_x"))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ApiError::InvalidArgument { field, .. } if field == "deployment_id"),
        "{e:?}"
    );
    let e = svc::approve_deployment(&s, approve("d_0000000000000000"))
        .await
        .unwrap_err();
    assert!(matches!(e, ApiError::NotFound(_)), "{e:?}");

    // A deployment of an app being deleted is not started.
    let mut conn = s.db().acquire().await?;
    ctrl_db::deletion::mark(
        &mut conn,
        ctrl_db::deletion::Scope::App(&app.id),
        s.now_ms(),
    )
    .await?;
    assert_eq!(
        svc::approve_deployment(&s, approve(&id)).await.unwrap_err(),
        ApiError::FailedPrecondition("the app is being deleted".into())
    );
    assert_eq!(deployment::status(s.db(), &id).await?, S::AwaitingApproval);
    Ok(())
}

fn auth<T>(msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", crate::TOKEN).parse().expect("header"),
    );
    req
}
