//! `ctrl deploy --context DIR` against a scripted ctrl-api and object store
//! on loopback ports: what is packed and uploaded, what is asked for, and
//! what the user reads (piped: every build line) — for a build that
//! succeeds and one that fails. The real stack's end-to-end test builds for
//! real; this one pins the CLI's side of the contract.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use ctrl_proto::ctrl::v1 as pb;
use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use crate::support::run_ctrl;

const APP_ID: &str = "app_0123456789abcdef";
const DEPLOYMENT_ID: &str = "d_0123456789abcdef";
const KEY: &str = "ws_1/app_0123456789abcdef/ctx-abc.tar.gz";
const ERROR: &str = "Build failed: STEP 2/2: RUN make failed with exit code 2.\nLast output:\nmake: *** No rule to make target 'all'.  Stop.\nerror building at STEP \"RUN make\"";

type Boxed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// What the fake saw, and how its build ends.
#[derive(Default)]
struct Seen {
    upload_sizes: Vec<i64>,
    uploads: Vec<(HeaderMap, Vec<u8>)>,
    created: Vec<pb::CreateDeploymentRequest>,
    log_calls: u32,
}

#[derive(Clone)]
struct Fake {
    seen: Arc<Mutex<Seen>>,
    store_url: String,
    fails: bool,
}

fn step(
    kind: pb::DeploymentStepKind,
    status: pb::DeploymentStepStatus,
    msg: &str,
) -> pb::DeploymentStep {
    let failed = status == pb::DeploymentStepStatus::Failed;
    pb::DeploymentStep {
        kind: kind as i32,
        status: status as i32,
        message: if failed { String::new() } else { msg.into() },
        error_message: if failed { msg.into() } else { String::new() },
        started_at: 1_800_000_000_000,
        ended_at: if status == pb::DeploymentStepStatus::Running {
            0
        } else {
            1_800_000_001_500
        },
    }
}

fn deployment(status: pb::DeploymentStatus, steps: Vec<pb::DeploymentStep>) -> pb::Deployment {
    pb::Deployment {
        id: DEPLOYMENT_ID.into(),
        app_id: APP_ID.into(),
        environment_slug: "preview".into(),
        status: status as i32,
        error_message: if status == pb::DeploymentStatus::Failed {
            ERROR.into()
        } else {
            String::new()
        },
        build_id: "bld_0123456789abcdef".into(),
        created_at: 1_800_000_000_000,
        steps,
        ..Default::default()
    }
}

impl Fake {
    /// The deployment's states as WatchDeployment sends them.
    fn states(&self) -> Vec<pb::Deployment> {
        use pb::DeploymentStatus as D;
        use pb::DeploymentStepKind as K;
        use pb::DeploymentStepStatus as S;
        let done = |k| step(k, S::Succeeded, "ok");
        let mut states = vec![
            deployment(D::Pending, vec![]),
            deployment(
                D::Building,
                vec![
                    done(K::Queued),
                    done(K::Starting),
                    step(K::Building, S::Running, "Queued for a build"),
                ],
            ),
            deployment(
                D::Building,
                vec![
                    done(K::Queued),
                    done(K::Starting),
                    step(K::Building, S::Running, "STEP 2/2: RUN make"),
                ],
            ),
        ];
        if self.fails {
            states.push(deployment(
                D::Failed,
                vec![
                    done(K::Queued),
                    done(K::Starting),
                    step(K::Building, S::Failed, ERROR),
                ],
            ));
        } else {
            states.push(deployment(
                D::Ready,
                vec![
                    done(K::Queued),
                    done(K::Starting),
                    step(
                        K::Building,
                        S::Succeeded,
                        "Built registry.test/hello@sha256:abc",
                    ),
                    done(K::Deploying),
                ],
            ));
        }
        states
    }
}

/// The deployment's build, once it has ended.
fn the_build(fails: bool) -> pb::Build {
    pb::Build {
        id: "bld_0123456789abcdef".into(),
        deployment_id: DEPLOYMENT_ID.into(),
        status: if fails {
            pb::BuildStatus::Failed
        } else {
            pb::BuildStatus::Succeeded
        } as i32,
        backend: "docker".into(),
        image: if fails {
            String::new()
        } else {
            "registry.test/hello@sha256:abc".into()
        },
        error: if fails { ERROR.into() } else { String::new() },
        current_step: "STEP 2/2: RUN make".into(),
        queued_at: 1_800_000_000_000,
        started_at: 1_800_000_000_500,
        finished_at: 1_800_000_004_700,
        context_bytes: 57,
        log_lines: 3,
    }
}

fn line(number: i64, text: &str) -> pb::BuildLogLine {
    pb::BuildLogLine {
        number,
        time: 1_800_000_000_000 + number,
        text: text.into(),
    }
}

#[tonic::async_trait]
impl pb::build_service_server::BuildService for Fake {
    async fn generate_upload_url(
        &self,
        req: Request<pb::GenerateUploadUrlRequest>,
    ) -> Result<Response<pb::GenerateUploadUrlResponse>, Status> {
        let req = req.into_inner();
        assert_eq!(req.app_id, APP_ID);
        self.seen
            .lock()
            .expect("lock")
            .upload_sizes
            .push(req.size_bytes);
        Ok(Response::new(pb::GenerateUploadUrlResponse {
            upload_url: format!("{}/bucket/{KEY}?X-Amz-Signature=s1gn4ture", self.store_url),
            build_context_path: KEY.into(),
            expires_at: 0,
            max_size_bytes: 512 << 20,
        }))
    }

    async fn get_build(
        &self,
        _: Request<pb::GetBuildRequest>,
    ) -> Result<Response<pb::GetBuildResponse>, Status> {
        Ok(Response::new(pb::GetBuildResponse {
            build: Some(the_build(self.fails)),
        }))
    }

    type StreamBuildLogsStream = Boxed<pb::StreamBuildLogsResponse>;

    async fn stream_build_logs(
        &self,
        req: Request<pb::StreamBuildLogsRequest>,
    ) -> Result<Response<Self::StreamBuildLogsStream>, Status> {
        let calls = {
            let mut seen = self.seen.lock().expect("lock");
            seen.log_calls += 1;
            seen.log_calls
        };
        if calls == 1 {
            return Err(Status::not_found(format!(
                "deployment {DEPLOYMENT_ID} has not started building yet (it is pending)"
            )));
        }
        assert_eq!(req.get_ref().after_line, 0);
        let fails = self.fails;
        let batches = vec![
            pb::StreamBuildLogsResponse {
                lines: vec![
                    line(1, "STEP 1/2: FROM busybox"),
                    line(2, "STEP 2/2: RUN make"),
                ],
                finished: None,
            },
            pb::StreamBuildLogsResponse {
                lines: vec![line(
                    3,
                    "\u{1b}[31mmake: *** No rule to make target 'all'.  Stop.\u{1b}[0m",
                )],
                finished: Some(the_build(fails)),
            },
        ];
        let stream = futures::stream::iter(batches).then(|b| async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok(b)
        });
        Ok(Response::new(stream.boxed()))
    }
}

#[tonic::async_trait]
impl pb::deployment_service_server::DeploymentService for Fake {
    async fn create_deployment(
        &self,
        req: Request<pb::CreateDeploymentRequest>,
    ) -> Result<Response<pb::CreateDeploymentResponse>, Status> {
        self.seen
            .lock()
            .expect("lock")
            .created
            .push(req.into_inner());
        Ok(Response::new(pb::CreateDeploymentResponse {
            deployment_id: DEPLOYMENT_ID.into(),
            ..Default::default()
        }))
    }

    async fn get_deployment(
        &self,
        _: Request<pb::GetDeploymentRequest>,
    ) -> Result<Response<pb::GetDeploymentResponse>, Status> {
        Ok(Response::new(pb::GetDeploymentResponse {
            deployment: self.states().pop(),
        }))
    }

    async fn list_deployments(
        &self,
        _: Request<pb::ListDeploymentsRequest>,
    ) -> Result<Response<pb::ListDeploymentsResponse>, Status> {
        Err(Status::unimplemented("not here"))
    }

    type WatchDeploymentStream = Boxed<pb::WatchDeploymentResponse>;

    async fn watch_deployment(
        &self,
        _: Request<pb::WatchDeploymentRequest>,
    ) -> Result<Response<Self::WatchDeploymentStream>, Status> {
        let stream = futures::stream::iter(self.states())
            .then(|d| async move {
                // Long enough for the build output to be asked for again.
                tokio::time::sleep(Duration::from_millis(400)).await;
                Ok(pb::WatchDeploymentResponse {
                    deployment: Some(d),
                })
            })
            .chain(futures::stream::pending());
        Ok(Response::new(stream.boxed()))
    }

    async fn rollback(
        &self,
        _: Request<pb::RollbackRequest>,
    ) -> Result<Response<pb::RollbackResponse>, Status> {
        Err(Status::unimplemented("not here"))
    }

    async fn promote(
        &self,
        _: Request<pb::PromoteRequest>,
    ) -> Result<Response<pb::PromoteResponse>, Status> {
        Err(Status::unimplemented("not here"))
    }

    async fn approve_deployment(
        &self,
        _: Request<pb::ApproveDeploymentRequest>,
    ) -> Result<Response<pb::ApproveDeploymentResponse>, Status> {
        Err(Status::unimplemented("not here"))
    }

    async fn cancel_deployment(
        &self,
        _: Request<pb::CancelDeploymentRequest>,
    ) -> Result<Response<pb::CancelDeploymentResponse>, Status> {
        Err(Status::unimplemented("not here"))
    }

    async fn stop_deployment(
        &self,
        _: Request<pb::StopDeploymentRequest>,
    ) -> Result<Response<pb::StopDeploymentResponse>, Status> {
        Err(Status::unimplemented("not here"))
    }

    async fn wake_deployment(
        &self,
        _: Request<pb::WakeDeploymentRequest>,
    ) -> Result<Response<pb::WakeDeploymentResponse>, Status> {
        Err(Status::unimplemented("not here"))
    }

    async fn delete_deployment(
        &self,
        _: Request<pb::DeleteDeploymentRequest>,
    ) -> Result<Response<pb::DeleteDeploymentResponse>, Status> {
        Err(Status::unimplemented("not here"))
    }

    type StreamDeploymentLogsStream = Boxed<pb::StreamDeploymentLogsResponse>;

    async fn stream_deployment_logs(
        &self,
        _: Request<pb::StreamDeploymentLogsRequest>,
    ) -> Result<Response<Self::StreamDeploymentLogsStream>, Status> {
        Err(Status::unimplemented("not here"))
    }
}

#[tonic::async_trait]
impl pb::app_service_server::AppService for Fake {
    async fn create_app(
        &self,
        _: Request<pb::CreateAppRequest>,
    ) -> Result<Response<pb::CreateAppResponse>, Status> {
        Err(Status::unimplemented("not here"))
    }

    async fn get_app(
        &self,
        _: Request<pb::GetAppRequest>,
    ) -> Result<Response<pb::GetAppResponse>, Status> {
        Ok(Response::new(pb::GetAppResponse {
            app: Some(pb::App {
                id: APP_ID.into(),
                slug: "hello".into(),
                ..Default::default()
            }),
        }))
    }

    async fn list_apps(
        &self,
        _: Request<pb::ListAppsRequest>,
    ) -> Result<Response<pb::ListAppsResponse>, Status> {
        Err(Status::unimplemented("not here"))
    }

    async fn delete_app(
        &self,
        _: Request<pb::DeleteAppRequest>,
    ) -> Result<Response<pb::DeleteAppResponse>, Status> {
        Err(Status::unimplemented("not here"))
    }

    async fn get_app_settings(
        &self,
        _: Request<pb::GetAppSettingsRequest>,
    ) -> Result<Response<pb::GetAppSettingsResponse>, Status> {
        Err(Status::unimplemented("not here"))
    }

    async fn update_app_settings(
        &self,
        _: Request<pb::UpdateAppSettingsRequest>,
    ) -> Result<Response<pb::UpdateAppSettingsResponse>, Status> {
        Err(Status::unimplemented("not here"))
    }

    async fn list_environment_variables(
        &self,
        _: Request<pb::ListEnvironmentVariablesRequest>,
    ) -> Result<Response<pb::ListEnvironmentVariablesResponse>, Status> {
        Err(Status::unimplemented("not here"))
    }

    async fn set_environment_variables(
        &self,
        _: Request<pb::SetEnvironmentVariablesRequest>,
    ) -> Result<Response<pb::SetEnvironmentVariablesResponse>, Status> {
        Err(Status::unimplemented("not here"))
    }

    async fn delete_environment_variables(
        &self,
        _: Request<pb::DeleteEnvironmentVariablesRequest>,
    ) -> Result<Response<pb::DeleteEnvironmentVariablesResponse>, Status> {
        Err(Status::unimplemented("not here"))
    }
}

/// The fake API and object store; their addresses.
async fn start(fails: bool) -> Result<(String, Arc<Mutex<Seen>>)> {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let record = seen.clone();
    let store = axum::Router::new().route(
        "/bucket/{*key}",
        axum::routing::put(move |headers: HeaderMap, body: Bytes| {
            let record = record.clone();
            async move {
                record
                    .lock()
                    .expect("lock")
                    .uploads
                    .push((headers, body.to_vec()));
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let store_url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(ctrl_runtime::net::nodelay(listener), store).await });

    let fake = Fake {
        seen: seen.clone(),
        store_url,
        fails,
    };
    let incoming = tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse()?)?;
    let api_url = format!("http://{}", incoming.local_addr()?);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(pb::app_service_server::AppServiceServer::new(fake.clone()))
            .add_service(pb::deployment_service_server::DeploymentServiceServer::new(
                fake.clone(),
            ))
            .add_service(pb::build_service_server::BuildServiceServer::new(fake))
            .serve_with_incoming(incoming),
    );
    Ok((api_url, seen))
}

/// A directory to deploy, in a fresh working directory.
fn workdir() -> Result<tempfile::TempDir> {
    let cwd = tempfile::tempdir()?;
    let app = cwd.path().join("app");
    std::fs::create_dir_all(app.join("src"))?;
    std::fs::write(app.join("Dockerfile"), "FROM busybox\nRUN make\n")?;
    std::fs::write(app.join(".dockerignore"), "*.env\n")?;
    std::fs::write(app.join("secret.env"), "TOKEN=hunter2\n")?;
    std::fs::write(app.join("src/main.c"), "int main(void) { return 0; }\n")?;
    Ok(cwd)
}

#[tokio::test]
async fn a_local_directory_is_packed_uploaded_built_and_followed() -> Result<()> {
    let (api_url, seen) = start(false).await?;
    let cwd = workdir()?;
    let env = [
        ("CTRL_API_URL", api_url.as_str()),
        ("CTRL_TOKEN", "test-token-0123456789"),
    ];
    let run = run_ctrl(
        &[
            "deploy",
            "--app",
            APP_ID,
            "--env",
            "preview",
            "--context",
            "app",
            "--build-arg",
            "VERSION=1.2.3",
        ],
        &env,
        cwd.path(),
    )
    .await?;
    assert_eq!(run.code, Some(0), "{run}");

    let seen = seen.lock().expect("lock");
    // Exactly the packed bytes, of the size asked for, as the URL was signed.
    let [(headers, body)] = &seen.uploads[..] else {
        panic!("one upload expected: {run}");
    };
    assert_eq!(seen.upload_sizes, [i64::try_from(body.len())?]);
    assert_eq!(headers["content-type"], "application/gzip");
    assert_eq!(headers["content-length"], body.len().to_string().as_str());
    let context = ctrl_build::context::prepare(
        body,
        ctrl_build::context::Layout::Root,
        "",
        "Dockerfile",
        ctrl_build::context::Limits::default(),
    )
    .context("the upload is a build context")?;
    assert!(
        !context.tar.windows(10).any(|w| w == b"secret.env"),
        ".dockerignore is honoured"
    );
    assert!(context.tar.windows(10).any(|w| w == b"src/main.c"));

    let [created] = &seen.created[..] else {
        panic!("one deployment expected: {run}");
    };
    assert_eq!(
        created.source,
        Some(pb::create_deployment_request::Source::ContextBuild(
            pb::ContextSource {
                build_context_path: KEY.into(),
                dockerfile_path: "Dockerfile".into(),
            }
        ))
    );
    assert_eq!(
        created.build_args,
        HashMap::from([("VERSION".to_owned(), "1.2.3".to_owned())])
    );
    assert_eq!(created.trigger, pb::DeploymentTrigger::Cli as i32);
    assert!(created.idempotency_key.starts_with("cli-"));
    assert!(seen.log_calls >= 2, "asked again after not_found: {run}");

    // Piped: a line per step change and every build line, escapes removed.
    assert!(
        run.stderr.starts_with("Packed 3 files ("),
        "the pack line first: {run}"
    );
    assert!(run.stderr.contains("); 1 ignored\n"), "{run}");
    assert!(run.stderr.contains("\nUploaded "), "{run}");
    assert!(
        run.stderr.contains(&format!(
            "Deploying app to hello (preview) as {DEPLOYMENT_ID}"
        )),
        "{run}"
    );
    for build_line in [
        "  │ STEP 1/2: FROM busybox\n",
        "  │ STEP 2/2: RUN make\n",
        "  │ make: *** No rule to make target 'all'.  Stop.\n",
    ] {
        assert_eq!(
            run.stderr.matches(build_line).count(),
            1,
            "{build_line:?} once: {run}"
        );
    }
    assert!(!run.stderr.contains('\u{1b}'), "{run}");
    assert!(
        !run.stderr.contains("s1gn4ture"),
        "the signed URL is not printed: {run}"
    );
    assert!(run.stderr.contains("building   done "), "{run}");
    assert!(
        run.stdout.contains(&format!("✓ {DEPLOYMENT_ID} is ready")),
        "{run}"
    );
    Ok(())
}

#[tokio::test]
async fn a_failed_build_ends_with_its_step_and_last_lines_in_full() -> Result<()> {
    let (api_url, _) = start(true).await?;
    let cwd = workdir()?;
    let env = [
        ("CTRL_API_URL", api_url.as_str()),
        ("CTRL_TOKEN", "test-token-0123456789"),
    ];
    let run = run_ctrl(
        &[
            "deploy",
            "--app",
            APP_ID,
            "--env",
            "preview",
            "--context",
            "app",
        ],
        &env,
        cwd.path(),
    )
    .await?;
    assert_eq!(run.code, Some(1), "{run}");
    let expected = format!("error: deployment {DEPLOYMENT_ID} failed at step building: {ERROR}\n");
    assert!(
        run.stderr.ends_with(&expected),
        "the whole error, last: {run}"
    );
    // The step's line has only the first line; the build lines came before.
    assert!(
        run.stderr.contains(
            "  building   failed    1.5s  Build failed: STEP 2/2: RUN make failed with exit code 2.\n"
        ),
        "{run}"
    );
    assert!(run.stderr.contains("  │ STEP 2/2: RUN make\n"), "{run}");
    Ok(())
}

#[tokio::test]
async fn a_directory_without_its_dockerfile_is_refused_before_any_call() -> Result<()> {
    let cwd = workdir()?;
    std::fs::remove_file(cwd.path().join("app/Dockerfile"))?;
    // Nothing listens there: this must fail before calling the API.
    let url = format!("http://127.0.0.1:{}", ctrl_testkit::free_port()?);
    let env = [
        ("CTRL_API_URL", url.as_str()),
        ("CTRL_TOKEN", "test-token-0123456789"),
    ];
    let run = run_ctrl(
        &["deploy", "--app", APP_ID, "--context", "app"],
        &env,
        cwd.path(),
    )
    .await?;
    assert_eq!(run.code, Some(1), "{run}");
    assert_eq!(
        run.stderr,
        "error: app has no Dockerfile to build with; add one, or name another file inside it with --dockerfile\n"
    );
    let run = run_ctrl(
        &["deploy", "--app", APP_ID, "--context", "nope"],
        &env,
        cwd.path(),
    )
    .await?;
    assert_eq!(
        run.stderr, "error: --context nope: no such directory\n",
        "{run}"
    );
    Ok(())
}

#[tokio::test]
async fn a_builds_output_and_result_are_read_back() -> Result<()> {
    let (api_url, seen) = start(false).await?;
    // The build exists already (no not_found first).
    seen.lock().expect("lock").log_calls = 1;
    let cwd = tempfile::tempdir()?;
    let env = [
        ("CTRL_API_URL", api_url.as_str()),
        ("CTRL_TOKEN", "test-token-0123456789"),
    ];

    let run = run_ctrl(
        &["logs", "--build", DEPLOYMENT_ID, "--timestamps"],
        &env,
        cwd.path(),
    )
    .await?;
    assert_eq!(run.code, Some(0), "{run}");
    assert_eq!(
        run.stdout,
        "2027-01-15T08:00:00.001Z STEP 1/2: FROM busybox\n\
         2027-01-15T08:00:00.002Z STEP 2/2: RUN make\n\
         2027-01-15T08:00:00.003Z \u{1b}[31mmake: *** No rule to make target 'all'.  Stop.\u{1b}[0m\n",
        "the lines as the build printed them: {run}"
    );
    assert_eq!(
        run.stderr,
        "build bld_0123456789abcdef succeeded in 4.2s: registry.test/hello@sha256:abc\n"
    );

    let run = run_ctrl(&["deployments", "get", DEPLOYMENT_ID], &env, cwd.path()).await?;
    assert_eq!(run.code, Some(0), "{run}");
    let block: Vec<&str> = run
        .stdout
        .lines()
        .skip_while(|l| *l != "build")
        .take(9)
        .collect();
    assert_eq!(
        block,
        [
            "build",
            "  id       bld_0123456789abcdef",
            "  status   succeeded",
            "  backend  docker",
            "  image    registry.test/hello@sha256:abc",
            "  took     4.2s",
            "  step     STEP 2/2: RUN make",
            "  context  57 B",
            "  output   3 lines (`ctrl logs --build d_0123456789abcdef`)",
        ],
        "{run}"
    );
    Ok(())
}
