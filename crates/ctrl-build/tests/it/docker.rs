use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use bollard::query_parameters::BuildImageOptionsBuilder;
use ctrl_build::builder::{BuildError, BuildEvent, BuildRequest, Builder, HowBuilt};
use ctrl_build::context::{self, Layout, Limits};
use ctrl_build::docker::{BUILD_ID_LABEL, DockerBuilder};
use ctrl_build::registry::{Registry, RegistryConfig};
use ctrl_testkit::{Podman, Registry as RegistryServer};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

const PLATFORM: &str = "linux/amd64";

struct Setup {
    podman: Podman,
    registry_server: RegistryServer,
    builder: DockerBuilder,
    registry: Registry,
}

async fn setup() -> Result<Setup> {
    setup_with(None, ("", "")).await
}

/// A podman and a registry (asking for `login` when given), and a builder
/// configured with `credentials` (user, password; empty: none).
async fn setup_with(login: Option<(&str, &str)>, credentials: (&str, &str)) -> Result<Setup> {
    let registry = async {
        match login {
            Some((user, password)) => RegistryServer::start_with_login(user, password).await,
            None => RegistryServer::start().await,
        }
    };
    let (registry_server, podman) = tokio::try_join!(registry, Podman::start())?;
    podman.import_busybox_image("docker.io/library/busybox:latest")?;
    let config = RegistryConfig {
        url: registry_server.url(),
        repository: "ctrl".into(),
        image_host: String::new(),
        username: credentials.0.into(),
        password: credentials.1.to_owned().into(),
        request_timeout: Duration::from_secs(10),
    };
    let registry = Registry::new(config).map_err(anyhow::Error::msg)?;
    let mut builder = DockerBuilder::new(
        &podman.socket().to_string_lossy(),
        Duration::from_secs(300),
        registry.clone(),
        PLATFORM,
    )
    .map_err(anyhow::Error::msg)?;
    builder.detect().await.map_err(anyhow::Error::msg)?;
    assert!(
        builder.capabilities().secrets,
        "podman's API takes build secrets"
    );
    Ok(Setup {
        podman,
        registry_server,
        builder,
        registry,
    })
}

fn request(s: &Setup, build_id: &str, tag: &str) -> BuildRequest {
    crate::request(s.registry.host(), build_id, tag, "hi from the test")
}

fn hello_context() -> Result<context::Context> {
    let packed = context::pack(&crate::hello_dir(), "")?;
    Ok(context::prepare(
        &packed.gz,
        Layout::Root,
        ".",
        "",
        Limits::default(),
    )?)
}

async fn build(
    b: &DockerBuilder,
    req: &BuildRequest,
    ctx: context::Context,
    cancel: &CancellationToken,
) -> (
    Result<ctrl_build::builder::Built, BuildError>,
    Vec<BuildEvent>,
) {
    crate::run_build(b, req, ctx, cancel).await
}

/// Builds the hello app for `req`, not cancelled.
async fn build_hello(
    s: &Setup,
    req: &BuildRequest,
) -> Result<(
    Result<ctrl_build::builder::Built, BuildError>,
    Vec<BuildEvent>,
)> {
    Ok(build(&s.builder, req, hello_context()?, &CancellationToken::new()).await)
}

/// A registry that asks for a login gets the configured one, on the push
/// (through the engine) and on ctrl's own digest checks. A wrong password
/// fails the build, naming the registry's refusal and never the password,
/// and is not retried.
#[tokio::test]
async fn a_registry_that_asks_for_a_login_gets_the_configured_one() -> Result<()> {
    const PASSWORD: &str = "s3cret-registry-pw";
    let s = setup_with(Some(("ctrl", PASSWORD)), ("ctrl", PASSWORD)).await?;
    let req = request(&s, "bld_login", "d_login");
    let (built, _) = build_hello(&s, &req).await?;
    let built = built?;
    assert_eq!(built.how, HowBuilt::Built);
    assert_eq!(
        s.registry.digest("ctrl/acme/hello", "d_login").await?,
        Some(built.digest.clone())
    );
    // Without the login the registry refuses: the image is really private.
    let anonymous = reqwest::get(format!(
        "{}/v2/ctrl/acme/hello/tags/list",
        s.registry_server.url()
    ))
    .await?;
    assert_eq!(anonymous.status(), 401);

    let wrong = "wrong-registry-pw";
    let s = setup_with(Some(("ctrl", PASSWORD)), ("ctrl", wrong)).await?;
    let req = request(&s, "bld_wrong", "d_wrong");
    let (built, events) = build_hello(&s, &req).await?;
    let Err(e) = built else {
        bail!("a wrong password pushed: {built:?}")
    };
    let message = e.to_string();
    assert!(
        message.contains("401") || message.to_lowercase().contains("unauthorized"),
        "{message}"
    );
    assert!(!e.is_transient(), "{e:?}");
    let everything = format!("{e:?} {events:?}");
    assert!(!everything.contains(wrong) && !everything.contains(PASSWORD));
    Ok(())
}

#[tokio::test]
async fn builds_pushes_by_digest_and_reuses_an_earlier_attempt() -> Result<()> {
    let s = setup().await?;
    let req = request(&s, "bld_first", "d_first");
    let (built, events) = build_hello(&s, &req).await?;
    let built = built?;
    assert_eq!(built.how, HowBuilt::Built);
    assert!(built.digest.starts_with("sha256:"), "{built:?}");
    assert_eq!(
        built.image,
        format!(
            "{}/ctrl/acme/hello@{}",
            s.registry_server.host_port(),
            built.digest
        )
    );
    let steps: Vec<&String> = events
        .iter()
        .filter_map(|e| match e {
            BuildEvent::Step(s) => Some(s),
            BuildEvent::Line(_) => None,
        })
        .collect();
    assert!(
        steps.iter().any(|s| s.contains("RUN echo")),
        "the RUN step was reported: {steps:?}"
    );
    assert_eq!(
        s.registry.digest("ctrl/acme/hello", "d_first").await?,
        Some(built.digest.clone())
    );

    // A retry of the same build (its result already pushed) builds nothing.
    let (again, events) = build_hello(&s, &req).await?;
    let again = again?;
    assert_eq!(again.how, HowBuilt::AlreadyPushed);
    assert_eq!(again.digest, built.digest);
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, BuildEvent::Step(s) if s.contains("RUN")))
    );

    // The pushed image runs: pull it by digest and read what the RUN step wrote.
    let out = s
        .podman
        .command()?
        .args(["run", "--rm", &built.image, "cat", "/www/greeting.txt"])
        .output()?;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "hi from the test",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[tokio::test]
async fn an_image_built_before_a_crash_is_pushed_not_rebuilt() -> Result<()> {
    let s = setup().await?;
    let req = request(&s, "bld_crashed", "d_crashed");
    // What an attempt that died after building (before pushing) leaves behind.
    let ctx = hello_context()?;
    let labels =
        std::collections::HashMap::from([(BUILD_ID_LABEL.to_owned(), req.build_id.clone())]);
    let options = BuildImageOptionsBuilder::new()
        .t(&req.image.tagged())
        .labels(&labels)
        .rm(true)
        .build();
    let mut stream = s.podman.docker().build_image(
        options,
        None,
        Some(bollard::body_full(ctx.tar.clone().into())),
    );
    while let Some(item) = stream.next().await {
        if let Some(e) = item?.error_detail {
            bail!("pre-build failed: {e:?}");
        }
    }
    let local = s.podman.docker().inspect_image(&req.image.tagged()).await?;
    let (built, _) = build(&s.builder, &req, ctx, &CancellationToken::new()).await;
    let built = built?;
    assert_eq!(built.how, HowBuilt::PushedEarlierBuild);
    let after = s.podman.docker().inspect_image(&req.image.tagged()).await?;
    assert_eq!(local.id, after.id, "the image was rebuilt");
    Ok(())
}

async fn build_dockerfile(
    s: &Setup,
    dockerfile: &str,
    cancel: &CancellationToken,
) -> (
    Result<ctrl_build::builder::Built, BuildError>,
    Vec<BuildEvent>,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("Dockerfile"), dockerfile).expect("write");
    let packed = context::pack(dir.path(), "").expect("pack");
    let ctx =
        context::prepare(&packed.gz, Layout::Root, ".", "", Limits::default()).expect("prepare");
    build(&s.builder, &request(s, "bld_x", "d_x"), ctx, cancel).await
}

#[tokio::test]
async fn a_failing_step_is_named_with_the_engines_message() -> Result<()> {
    let s = setup().await?;
    let (result, events) = build_dockerfile(
        &s,
        "FROM busybox\nRUN echo one\nRUN echo 'about to fail' && exit 3\nRUN echo never\n",
        &CancellationToken::new(),
    )
    .await;
    match result {
        Err(BuildError::StepFailed { step, message }) => {
            // podman counts the build-id label as a step of its own.
            assert!(
                step.starts_with("STEP 3/") && step.ends_with("exit 3"),
                "step: {step}"
            );
            assert!(message.contains("exit status 3"), "message: {message}");
        }
        other => bail!("expected a failed step, got {other:?}"),
    }
    assert!(
        events
            .iter()
            .any(|e| matches!(e, BuildEvent::Line(l) if l.contains("about to fail"))),
        "the failing step's output was streamed"
    );
    assert_eq!(s.registry.digest("ctrl/acme/hello", "d_x").await?, None);
    Ok(())
}

#[tokio::test]
async fn a_cancelled_build_stops_promptly() -> Result<()> {
    let s = setup().await?;
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        trigger.cancel();
    });
    let started = Instant::now();
    let (result, _) = build_dockerfile(&s, "FROM busybox\nRUN sleep 120\n", &cancel).await;
    assert!(matches!(result, Err(BuildError::Cancelled)), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_eq!(s.registry.digest("ctrl/acme/hello", "d_x").await?, None);
    Ok(())
}

#[tokio::test]
async fn a_build_secret_reaches_run_and_no_layer_or_output() -> Result<()> {
    let s = setup().await?;
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("Dockerfile"),
        // The Dockerfile must not spell the value (its steps are printed).
        "FROM busybox\nRUN --mount=type=secret,id=NPM_TOKEN grep -q '^tok-s3cr3t-' /run/secrets/NPM_TOKEN && test \"$(wc -c < /run/secrets/NPM_TOKEN)\" -eq 14 && echo secret-matched\n",
    )?;
    let packed = context::pack(dir.path(), "")?;
    let ctx = context::prepare(&packed.gz, Layout::Root, ".", "", Limits::default())?;
    let mut req = request(&s, "bld_secret", "d_secret");
    req.secrets.insert(
        "NPM_TOKEN".into(),
        zeroize::Zeroizing::new("tok-s3cr3t-123".into()),
    );
    assert!(
        !format!("{req:?}").contains("tok-s3cr3t-123"),
        "Debug redacts"
    );
    let (built, events) = build(&s.builder, &req, ctx, &CancellationToken::new()).await;
    let built = built?;
    let output = format!("{events:?}");
    assert!(
        output.contains("secret-matched"),
        "the RUN step read it: {output}"
    );
    assert!(!output.contains("tok-s3cr3t-123"), "not in the output");
    // Not in any layer, the config or the history of the image (the local
    // image the digest was pushed from).
    let saved = s
        .podman
        .command()?
        .args(["save", &req.image.tagged()])
        .output()?;
    assert!(
        saved.status.success(),
        "{}",
        String::from_utf8_lossy(&saved.stderr)
    );
    assert!(
        !saved.stdout.windows(14).any(|w| w == b"tok-s3cr3t-123"),
        "the secret is in the image"
    );
    let history = s
        .podman
        .command()?
        .args(["history", "--no-trunc", &req.image.tagged()])
        .output()?;
    assert!(!String::from_utf8_lossy(&history.stdout).contains("tok-s3cr3t-123"));
    let files = s
        .podman
        .command()?
        .args([
            "run",
            "--rm",
            &built.image,
            "sh",
            "-c",
            "ls -a / /run/secrets 2>&1",
        ])
        .output()?;
    assert!(
        !String::from_utf8_lossy(&files.stdout).contains("ctrl-build-secret"),
        "{}",
        String::from_utf8_lossy(&files.stdout)
    );
    Ok(())
}
