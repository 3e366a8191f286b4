//! The Depot backend against the testkit's FakeDepot: its Connect API is a
//! stateful stand-in, its "machine" speaks BuildKit's real gRPC protocol
//! (mTLS, the session with secrets and registry credentials, status) and
//! builds for real on podman, pushing to the real registry.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use ctrl_build::builder::{BuildError, BuildEvent, BuildRequest, Built, HowBuilt};
use ctrl_build::context::{self, Layout, Limits};
use ctrl_build::depot::{DepotBuilder, DepotConfig};
use ctrl_build::registry::{Registry, RegistryConfig};
use ctrl_build::store::{ContextStore, StoreConfig, StoreError};
use ctrl_testkit::depot::{FakeDepot, FakeDepotOptions};
use ctrl_testkit::{Podman, Registry as RegistryServer, S3Server};
use tokio_util::sync::CancellationToken;

const ORG_TOKEN: &str = "depot-org-token-for-tests";

struct Setup {
    _podman: Podman,
    _s3: S3Server,
    _registry_server: RegistryServer,
    depot: FakeDepot,
    registry: Registry,
    store: ContextStore,
}

async fn setup() -> Result<Setup> {
    let (registry_server, podman, s3) =
        tokio::try_join!(RegistryServer::start(), Podman::start(), S3Server::start())?;
    podman.import_busybox_image("docker.io/library/busybox:latest")?;
    let registry = Registry::new(RegistryConfig {
        url: registry_server.url(),
        repository: "ctrl".into(),
        image_host: String::new(),
        username: String::new(),
        password: String::new().into(),
        request_timeout: Duration::from_secs(10),
    })
    .map_err(anyhow::Error::msg)?;
    let store = ContextStore::new(&StoreConfig {
        endpoint: s3.endpoint_url(),
        bucket: "contexts".into(),
        access_key_id: s3.access_key().into(),
        secret_access_key: s3.secret_key().into(),
        force_path_style: true,
        ..StoreConfig::default()
    });
    store.ensure_bucket().await?;
    let depot = FakeDepot::start(FakeDepotOptions {
        org_token: ORG_TOKEN.into(),
        podman_socket: podman.socket().to_path_buf(),
        registry_url: registry_server.url(),
        build_timeout: Duration::from_secs(300),
        pending_polls: 1,
    })
    .await?;
    Ok(Setup {
        _podman: podman,
        _s3: s3,
        _registry_server: registry_server,
        depot,
        registry,
        store,
    })
}

fn builder(s: &Setup, token: &str) -> Result<DepotBuilder> {
    DepotBuilder::new(
        DepotConfig {
            api_url: s.depot.url().to_owned(),
            token: token.to_owned().into(),
            project_region: "us-east-1".into(),
            project_prefix: "ctrl".into(),
            cache_keep_bytes: 50 << 30,
            cache_keep_days: 14,
            request_timeout: Duration::from_secs(10),
            build_timeout: Duration::from_secs(300),
        },
        s.registry.clone(),
        s.store.clone(),
    )
    .map_err(anyhow::Error::msg)
}

fn request(s: &Setup, build_id: &str, tag: &str) -> BuildRequest {
    crate::request(s.registry.host(), build_id, tag, "hi from depot")
}

fn context_of(dockerfile: &str) -> Result<context::Context> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("Dockerfile"), dockerfile)?;
    let packed = context::pack(dir.path(), "")?;
    Ok(context::prepare(
        &packed.gz,
        Layout::Root,
        ".",
        "",
        Limits::default(),
    )?)
}

async fn build(
    b: &DepotBuilder,
    req: &BuildRequest,
    ctx: context::Context,
    cancel: &CancellationToken,
) -> (Result<Built, BuildError>, Vec<BuildEvent>) {
    crate::run_build(b, req, ctx, cancel).await
}

/// The Depot methods called, in order, without the health reports (their
/// number depends on timing).
fn calls(depot: &FakeDepot) -> Vec<String> {
    depot
        .requests()
        .into_iter()
        .map(|r| r.path.rsplit('/').next().unwrap_or_default().to_owned())
        .filter(|m| m != "ReportBuildHealth")
        .collect()
}

#[tokio::test]
async fn a_depot_build_runs_on_its_machine_with_session_secrets_and_pushes_by_digest() -> Result<()>
{
    let s = setup().await?;
    let b = builder(&s, ORG_TOKEN)?;
    // The Dockerfile must not spell the secret (its steps are printed).
    let hello = context_of(
        "FROM busybox\nARG GREETING\nRUN --mount=type=secret,id=NPM_TOKEN,required=true grep -q '^tok-depot-' /run/secrets/NPM_TOKEN && echo secret-matched\nRUN echo \"$GREETING\" > /greeting.txt\n",
    )?;
    let mut req = request(&s, "bld_depot1", "d_depot1");
    req.secrets.insert(
        "NPM_TOKEN".into(),
        zeroize::Zeroizing::new("tok-depot-s3cr3t".into()),
    );
    let (built, events) = build(&b, &req, hello, &CancellationToken::new()).await;
    let built = built?;
    assert_eq!(built.how, HowBuilt::Built);
    assert_eq!(
        s.registry.digest("ctrl/acme/hello", "d_depot1").await?,
        Some(built.digest.clone()),
        "recorded by the registry's digest"
    );
    assert!(built.image.ends_with(&format!("@{}", built.digest)));
    let steps = events
        .iter()
        .filter(|e| matches!(e, BuildEvent::Step(_)))
        .count();
    assert!(steps >= 2, "the machine's steps were streamed: {events:?}");
    assert!(
        events
            .iter()
            .any(|e| matches!(e, BuildEvent::Line(l) if l.starts_with("Depot build "))),
        "{events:?}"
    );
    let output = format!("{events:?}");
    assert!(output.contains("secret-matched"), "{output}");
    assert!(!output.contains("tok-depot-s3cr3t"), "{output}");

    // The requests, in order: the project found or created, the build
    // created, the machine polled until active, the build finished.
    assert_eq!(
        calls(&s.depot),
        [
            "ListProjects",
            "CreateProject",
            "CreateBuild",
            "GetBuildKitConnection",
            "GetBuildKitConnection",
            "FinishBuild"
        ]
    );
    let projects = s.depot.projects();
    assert_eq!(projects.len(), 1);
    assert_eq!(projects[0].name, "ctrl-proj_hello");
    assert_eq!(projects[0].region_id, "us-east-1");
    let builds = s.depot.builds();
    assert_eq!(builds.len(), 1);
    assert_eq!(
        builds[0].status,
        ctrl_testkit::depot::FakeBuildStatus::Succeeded
    );
    // The secret went through the session, never as an attribute.
    let solves = s.depot.solves();
    assert_eq!(solves.len(), 1);
    let solve = &solves[0];
    assert_eq!(solve.reference, "bld_depot1");
    assert_eq!(
        solve.secrets.get("NPM_TOKEN").map(String::as_str),
        Some("tok-depot-s3cr3t")
    );
    assert_eq!(
        solve
            .frontend_attrs
            .get("build-arg:GREETING")
            .map(String::as_str),
        Some("hi from depot")
    );
    assert!(!format!("{:?}", solve.frontend_attrs).contains("tok-depot-s3cr3t"));
    assert!(!format!("{:?}", s.depot.requests()).contains(ORG_TOKEN));
    // The shared context is gone once the build is done.
    assert!(matches!(
        s.store.get(&ContextStore::prepared_key("bld_depot1")).await,
        Err(StoreError::Missing { .. })
    ));

    // A second build of the project reuses its Depot project; a retry of
    // the first build reuses its pushed image without a Depot build.
    let before = s.depot.requests().len();
    let (again, _) = build(
        &b,
        &req,
        context_of("FROM busybox\n")?,
        &CancellationToken::new(),
    )
    .await;
    let again = again?;
    assert_eq!(again.how, HowBuilt::AlreadyPushed);
    assert_eq!(again.digest, built.digest);
    assert_eq!(
        s.depot.requests().len(),
        before,
        "no Depot call for a retry"
    );
    let (second, _) = build(
        &b,
        &request(&s, "bld_depot2", "d_depot2"),
        context_of("FROM busybox\nRUN echo two\n")?,
        &CancellationToken::new(),
    )
    .await;
    second?;
    assert_eq!(s.depot.projects().len(), 1);
    assert_eq!(
        calls(&s.depot)
            .iter()
            .filter(|m| m.as_str() == "ListProjects")
            .count(),
        1,
        "the project is remembered"
    );
    Ok(())
}

#[tokio::test]
async fn a_failing_step_fails_with_its_name_and_the_depot_build_is_finished_as_failed() -> Result<()>
{
    let s = setup().await?;
    let b = builder(&s, ORG_TOKEN)?;
    let (result, events) = build(
        &b,
        &request(&s, "bld_fail", "d_fail"),
        context_of("FROM busybox\nRUN echo 'about to fail' && exit 3\n")?,
        &CancellationToken::new(),
    )
    .await;
    match result {
        Err(BuildError::StepFailed { step, message }) => {
            assert!(step.contains("exit 3"), "step: {step}");
            assert!(message.contains('3'), "message: {message}");
        }
        other => bail!("expected a failed step, got {other:?}"),
    }
    assert!(
        events
            .iter()
            .any(|e| matches!(e, BuildEvent::Line(l) if l.contains("about to fail"))),
        "{events:?}"
    );
    assert!(matches!(
        &s.depot.builds()[0].status,
        ctrl_testkit::depot::FakeBuildStatus::Failed(m) if m.contains("exit 3")
    ));
    assert_eq!(s.registry.digest("ctrl/acme/hello", "d_fail").await?, None);
    Ok(())
}

#[tokio::test]
async fn a_cancelled_depot_build_stops_and_is_finished_as_canceled() -> Result<()> {
    let s = setup().await?;
    let b = builder(&s, ORG_TOKEN)?;
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(4)).await;
        trigger.cancel();
    });
    let started = Instant::now();
    let (result, _) = build(
        &b,
        &request(&s, "bld_cancel", "d_cancel"),
        context_of("FROM busybox\nRUN sleep 120\n")?,
        &cancel,
    )
    .await;
    assert!(matches!(result, Err(BuildError::Cancelled)), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_eq!(
        s.depot.builds()[0].status,
        ctrl_testkit::depot::FakeBuildStatus::Canceled
    );
    assert_eq!(
        s.registry.digest("ctrl/acme/hello", "d_cancel").await?,
        None
    );
    Ok(())
}

#[tokio::test]
async fn a_bad_token_is_a_permanent_error_and_an_outage_a_transient_one() -> Result<()> {
    let s = setup().await?;
    let wrong = builder(&s, "not-the-org-token")?;
    let (result, _) = build(
        &wrong,
        &request(&s, "bld_token", "d_token"),
        context_of("FROM busybox\n")?,
        &CancellationToken::new(),
    )
    .await;
    let Err(e) = result else {
        bail!("a wrong token built")
    };
    assert!(!e.is_transient(), "{e}");
    let text = e.to_string();
    assert!(text.contains("unauthenticated"), "{text}");
    assert!(!text.contains("not-the-org-token"), "{text}");

    let b = builder(&s, ORG_TOKEN)?;
    s.depot
        .fail_next("/depot.cli.v1.BuildService/CreateBuild", "unavailable");
    let (result, _) = build(
        &b,
        &request(&s, "bld_outage", "d_outage"),
        context_of("FROM busybox\n")?,
        &CancellationToken::new(),
    )
    .await;
    let Err(e) = result else {
        bail!("built through an outage")
    };
    assert!(e.is_transient(), "{e}");
    assert!(s.depot.builds().is_empty());
    Ok(())
}
