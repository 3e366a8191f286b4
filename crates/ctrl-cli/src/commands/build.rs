//! Deployments made from source, on the client: a local directory checked,
//! packed and uploaded for `deploy --context DIR`; a build's output
//! followed while `deploy` watches the deployment; `logs --build`; and the
//! build as `deployments get` shows it.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use ctrl_build::context::{DEFAULT_DOCKERFILE, human_bytes, relative_path};
use ctrl_proto::ctrl::v1 as pb;
use tokio::sync::{mpsc, watch};

use super::Ctx;
use crate::api::Api;
use crate::output::{self, duration, now_ms};
use crate::progress::{self, dim};
use crate::upload;

/// How often a build's output is asked for again while the deployment has
/// no build yet (or the stream broke).
const RETRY: Duration = Duration::from_millis(500);

/// How long the output is still read once the deployment has left the
/// building phase, for the build's last lines.
const GRACE: Duration = Duration::from_secs(3);

/// Consecutive broken streams after which `logs --build --follow` gives up.
const MAX_STREAM_FAILURES: u32 = 5;

/// Checks a local build context before anything is sent: `dir` is a
/// directory and has `dockerfile` (a relative path inside it; empty =
/// `Dockerfile`). Returns the directory and the Dockerfile's path.
pub(super) fn check_local(dir: &str, dockerfile: &str) -> Result<(PathBuf, String)> {
    let path = Path::new(dir);
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => bail!(
            "--context {dir}: not a directory; name the directory to build (e.g. --context .)"
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("--context {dir}: no such directory")
        }
        Err(e) => bail!("--context {dir}: cannot read it: {e}"),
    }
    let dockerfile = match relative_path("--dockerfile", dockerfile).map_err(|e| anyhow!("{e}"))? {
        d if d.is_empty() => DEFAULT_DOCKERFILE.to_owned(),
        d => d,
    };
    if !path.join(&dockerfile).is_file() {
        bail!(
            "{} has no {dockerfile} to build with; add one, or name another file inside it with --dockerfile",
            path.display()
        );
    }
    Ok((path.to_path_buf(), dockerfile))
}

/// Packs `dir` (on a blocking thread), asks ctrl-api for an upload URL of
/// its exact size, uploads it and returns the source to deploy.
pub(super) async fn upload_local(
    ctx: &Ctx,
    app_id: &str,
    dir: &Path,
    dockerfile: &str,
    verbose: bool,
) -> Result<pb::ContextSource> {
    let terminal = std::io::stderr().is_terminal();
    let spinner = progress::packing(terminal, &dir.display().to_string());
    let (root, file) = (dir.to_path_buf(), dockerfile.to_owned());
    let packed = tokio::task::spawn_blocking(move || ctrl_build::context::pack(&root, &file))
        .await
        .context("packing the build context")?;
    spinner.finish_and_clear();
    let packed = packed.map_err(|e| anyhow!("{e}"))?;
    eprintln!("{}", dim(&packed_line(&packed), terminal));
    if verbose && !packed.ignored_sample.is_empty() {
        let more = if packed.ignored > packed.ignored_sample.len() as u64 {
            ", …"
        } else {
            ""
        };
        eprintln!(
            "{}",
            dim(
                &format!("  left out: {}{more}", packed.ignored_sample.join(", ")),
                terminal
            )
        );
    }

    let api = &ctx.api;
    let size = packed.gz.len() as u64;
    let req = api.request(pb::GenerateUploadUrlRequest {
        app_id: app_id.to_owned(),
        size_bytes: i64::try_from(size).unwrap_or(i64::MAX),
    });
    let what = "requesting an upload URL for the build context";
    let url = match api.call_status(api.builds().generate_upload_url(req)).await {
        Ok(url) => url,
        Err(status) if status.code() == tonic::Code::InvalidArgument => {
            return Err(anyhow!(
                "{} (the packed context is {}; leave large files out with a .dockerignore in {})",
                api.explain(what, &status),
                human_bytes(size),
                dir.display()
            ));
        }
        Err(status) => return Err(api.explain(what, &status)),
    };

    let bar = progress::uploading(terminal, size);
    let started = Instant::now();
    let sent = upload::put(&url.upload_url, packed.gz.into(), &bar, upload::TIMEOUT).await;
    bar.finish_and_clear();
    sent?;
    eprintln!("{}", dim(&uploaded_line(size, started.elapsed()), terminal));
    Ok(pb::ContextSource {
        build_context_path: url.build_context_path,
        dockerfile_path: dockerfile.to_owned(),
    })
}

/// "Packed 132 files (4.1 MiB, 1.2 MiB compressed); 12 ignored"
fn packed_line(p: &ctrl_build::context::Packed) -> String {
    format!(
        "Packed {} file{} ({}, {} compressed); {} ignored",
        p.files,
        if p.files == 1 { "" } else { "s" },
        human_bytes(p.bytes),
        human_bytes(p.gz.len() as u64),
        p.ignored
    )
}

/// "Uploaded 1.2 MiB in 0.8s (1.5 MiB/s)"
fn uploaded_line(bytes: u64, took: Duration) -> String {
    let rate = bytes as f64 / took.as_secs_f64().max(0.001);
    format!(
        "Uploaded {} in {} ({}/s)",
        human_bytes(bytes),
        duration(i64::try_from(took.as_millis()).unwrap_or(i64::MAX)),
        human_bytes(rate as u64)
    )
}

/// Whether a deployment in `status` may still be about to build or be
/// building.
fn before_or_building(status: i32) -> bool {
    use pb::DeploymentStatus as S;
    matches!(
        S::try_from(status),
        Ok(S::Unspecified | S::Pending | S::Starting | S::Building)
    )
}

/// Follows the build output of deployment `id` for `deploy`, sending each
/// batch of lines to `lines`, until the build finishes, the deployment has
/// left the building phase (`phase`, its latest status; a closed channel
/// counts as left) for [`GRACE`], or `lines` is closed. A deployment whose
/// build does not exist yet is asked again every [`RETRY`]; problems are
/// quiet — the deployment's own display goes on regardless.
pub(super) async fn follow_output(
    api: &Api,
    id: &str,
    mut phase: watch::Receiver<i32>,
    lines: mpsc::UnboundedSender<Vec<pb::BuildLogLine>>,
) {
    let mut after = 0;
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        if deadline.is_none() && !before_or_building(*phase.borrow()) {
            deadline = Some(tokio::time::Instant::now() + GRACE);
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            return;
        }
        // No timeout header: it would end the stream; opening it is bounded.
        let req = tonic::Request::new(pb::StreamBuildLogsRequest {
            deployment_id: id.to_owned(),
            follow: true,
            after_line: after,
        });
        match api.call_status(api.builds().stream_build_logs(req)).await {
            Ok(mut stream) => loop {
                let message = tokio::select! {
                    m = stream.message() => m,
                    () = left(&mut phase, &mut deadline) => return,
                };
                match message {
                    Ok(Some(m)) => {
                        if let Some(last) = m.lines.last() {
                            after = last.number;
                        }
                        if !m.lines.is_empty() && lines.send(m.lines).is_err() {
                            return;
                        }
                        if m.finished.is_some() {
                            return;
                        }
                    }
                    // Ended before the build did (no build yet, or the
                    // server went away): look again.
                    Ok(None) => break,
                    Err(status) if retryable(status.code()) => break,
                    Err(_) => return,
                }
            },
            Err(status) if retryable(status.code()) => {}
            Err(_) => return,
        }
        tokio::select! {
            () = tokio::time::sleep(RETRY) => {}
            () = left(&mut phase, &mut deadline) => return,
        }
    }
}

/// Completes once the deployment has been out of the building phase for
/// [`GRACE`] (setting `deadline` when it leaves).
async fn left(phase: &mut watch::Receiver<i32>, deadline: &mut Option<tokio::time::Instant>) {
    loop {
        if let Some(at) = *deadline {
            tokio::time::sleep_until(at).await;
            return;
        }
        let gone = phase.changed().await.is_err();
        if gone || !before_or_building(*phase.borrow()) {
            *deadline = Some(tokio::time::Instant::now() + GRACE);
        }
    }
}

/// Whether asking for the output again may help: the build does not exist
/// yet (not_found), or the stream broke.
fn retryable(code: tonic::Code) -> bool {
    use tonic::Code;
    matches!(
        code,
        Code::NotFound
            | Code::Unavailable
            | Code::Unknown
            | Code::Internal
            | Code::DeadlineExceeded
            | Code::Aborted
    )
}

/// `ctrl logs --build`: the build's output lines on stdout (`-o json`: each
/// message as one JSON line), following until the build ends with
/// `follow`, then its result as one line on stderr.
pub(super) async fn logs(ctx: &Ctx, id: &str, follow: bool, timestamps: bool) -> Result<()> {
    let api = &ctx.api;
    let what = format!("reading the build output of {id}");
    let (mut after, mut printed, mut failures) = (0, 0u64, 0);
    let mut finished = None;
    'streams: loop {
        // No timeout header: it would cut a followed stream; opening it is
        // bounded by the call timeout, a read without --follow by the server.
        let req = tonic::Request::new(pb::StreamBuildLogsRequest {
            deployment_id: id.to_owned(),
            follow,
            after_line: after,
        });
        let opened = api.call_status(api.builds().stream_build_logs(req)).await;
        let status = match opened {
            Ok(mut stream) => loop {
                match stream.message().await {
                    Ok(Some(m)) => {
                        failures = 0;
                        if let Some(last) = m.lines.last() {
                            after = last.number;
                        }
                        printed += m.lines.len() as u64;
                        match print_lines(ctx, &m, timestamps) {
                            Ok(()) => {}
                            // The reader left (`ctrl logs --build … | head`): done.
                            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
                            Err(e) => bail!("writing the build output failed: {e}"),
                        }
                        if m.finished.is_some() {
                            finished = m.finished;
                        }
                    }
                    Ok(None) => break 'streams,
                    Err(status) => break status,
                }
            },
            Err(status) => status,
        };
        failures += 1;
        let transient = matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Internal
        );
        if !follow || !transient || failures >= MAX_STREAM_FAILURES {
            return Err(api.explain(&what, &status));
        }
        tokio::time::sleep(RETRY * failures).await;
    }
    if ctx.json() {
        return Ok(());
    }
    let build = match finished {
        Some(b) => b,
        None => get(api, id).await?,
    };
    if printed == 0 && build.log_lines == 0 {
        eprintln!("the build of {id} has printed nothing yet");
    }
    eprintln!("{}", summary(&build, now_ms()));
    Ok(())
}

/// One message's lines, where they belong.
fn print_lines(
    ctx: &Ctx,
    m: &pb::StreamBuildLogsResponse,
    timestamps: bool,
) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if ctx.json() {
        writeln!(out, "{}", serde_json::to_string(m)?)?;
    } else {
        for line in &m.lines {
            if timestamps {
                writeln!(out, "{} {}", output::timestamp(line.time), line.text)?;
            } else {
                writeln!(out, "{}", line.text)?;
            }
        }
    }
    // At once: a followed stream is read as it comes.
    out.flush()
}

/// The build of deployment `id`.
pub(super) async fn get(api: &Api, id: &str) -> Result<pb::Build> {
    let req = api.request(pb::GetBuildRequest {
        deployment_id: id.to_owned(),
    });
    api.call(
        &format!("reading the build of {id}"),
        api.builds().get_build(req),
    )
    .await?
    .build
    .ok_or_else(|| anyhow!("the API returned no build"))
}

/// A build status as a word.
fn status(value: i32) -> String {
    pb::BuildStatus::try_from(value).map_or_else(
        |_| format!("status {value}"),
        |s| output::enum_name(s.as_str_name(), "BUILD_STATUS_"),
    )
}

/// How long the build took, or has been running or queued, at `now`.
fn took(b: &pb::Build, now: i64) -> String {
    match (b.started_at, b.finished_at) {
        (start, end) if start > 0 && end > 0 => duration(end - start),
        (start, _) if start > 0 => format!("running for {}", duration(now - start)),
        (_, end) if end > 0 => format!(
            "ended without starting, after {}",
            duration(end - b.queued_at)
        ),
        _ => format!("queued for {}", duration(now - b.queued_at)),
    }
}

/// One line about a build: its status and image or error (first line), or
/// where it is.
pub(super) fn summary(b: &pb::Build, now: i64) -> String {
    use pb::BuildStatus as S;
    let first = |text: &str| text.lines().next().unwrap_or_default().to_owned();
    match S::try_from(b.status) {
        Ok(S::Succeeded) => format!("build {} succeeded in {}: {}", b.id, took(b, now), b.image),
        Ok(S::Failed) => format!(
            "build {} failed after {}: {}",
            b.id,
            took(b, now),
            first(&b.error)
        ),
        Ok(S::Cancelled) => format!("build {} was cancelled ({})", b.id, took(b, now)),
        Ok(S::Running) if !b.current_step.is_empty() => format!(
            "build {} is running ({}), at {}; --follow reads on until it ends",
            b.id,
            took(b, now).trim_start_matches("running for "),
            b.current_step
        ),
        _ => format!(
            "build {} is {} ({}); --follow reads on until it ends",
            b.id,
            status(b.status),
            took(b, now)
        ),
    }
}

/// The `build` block of `deployments get`.
pub(super) fn fields(b: &pb::Build, now: i64) -> Vec<(&'static str, String)> {
    let mut fields = vec![
        ("id", b.id.clone()),
        ("status", status(b.status)),
        ("backend", b.backend.clone()),
    ];
    if !b.image.is_empty() {
        fields.push(("image", b.image.clone()));
    }
    fields.push(("took", took(b, now)));
    if !b.current_step.is_empty() {
        fields.push(("step", b.current_step.clone()));
    }
    if b.context_bytes > 0 {
        fields.push((
            "context",
            human_bytes(u64::try_from(b.context_bytes).unwrap_or(0)),
        ));
    }
    fields.push((
        "output",
        format!(
            "{} line{} (`ctrl logs --build {}`)",
            b.log_lines,
            if b.log_lines == 1 { "" } else { "s" },
            b.deployment_id
        ),
    ));
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    #[test]
    fn a_local_context_must_be_a_directory_with_its_dockerfile() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().to_str().expect("utf-8 path").to_owned();

        let missing = format!("{root}/nope");
        let e = check_local(&missing, "").expect_err("a missing directory");
        assert_eq!(
            e.to_string(),
            format!("--context {missing}: no such directory")
        );

        std::fs::write(dir.path().join("file"), "x").expect("write");
        let e = check_local(&format!("{root}/file"), "").expect_err("a file");
        assert!(e.to_string().contains("not a directory"), "{e}");

        let e = check_local(&root, "").expect_err("no Dockerfile");
        assert!(
            e.to_string().contains("has no Dockerfile to build with")
                && e.to_string().contains("--dockerfile"),
            "{e}"
        );

        std::fs::write(dir.path().join("Dockerfile"), "FROM scratch\n").expect("write");
        let (path, dockerfile) = check_local(&root, "").expect("a Dockerfile");
        assert_eq!(
            (path.as_path(), dockerfile.as_str()),
            (dir.path(), "Dockerfile")
        );

        std::fs::create_dir(dir.path().join("docker")).expect("mkdir");
        std::fs::write(dir.path().join("docker/Dockerfile.prod"), "FROM scratch\n").expect("write");
        let (_, dockerfile) = check_local(&root, "./docker/Dockerfile.prod").expect("named");
        assert_eq!(dockerfile, "docker/Dockerfile.prod");
        let e = check_local(&root, "docker/Other").expect_err("a missing named one");
        assert!(e.to_string().contains("has no docker/Other"), "{e}");
        let e = check_local(&root, "../Dockerfile").expect_err("outside the context");
        assert!(
            e.to_string().contains("must be a relative path inside"),
            "{e}"
        );
    }

    #[test]
    fn pack_and_upload_lines_say_how_much() {
        let packed = ctrl_build::context::Packed {
            gz: vec![0; 1536],
            files: 3,
            bytes: 5 << 20,
            ignored_sample: vec!["node_modules".into()],
            ignored: 12,
        };
        assert_eq!(
            packed_line(&packed),
            "Packed 3 files (5.0 MiB, 1.5 KiB compressed); 12 ignored"
        );
        assert_eq!(
            uploaded_line(3 << 20, Duration::from_millis(1500)),
            "Uploaded 3.0 MiB in 1.5s (2.0 MiB/s)"
        );
    }

    fn build(status: pb::BuildStatus) -> pb::Build {
        pb::Build {
            id: "bld_1".into(),
            deployment_id: "d_1".into(),
            status: status as i32,
            backend: "docker".into(),
            queued_at: NOW - 60_000,
            started_at: NOW - 50_000,
            log_lines: 42,
            ..Default::default()
        }
    }

    #[test]
    fn a_build_is_summed_up_in_one_line() {
        let mut b = build(pb::BuildStatus::Succeeded);
        b.finished_at = NOW - 8_000;
        b.image = "registry.test/acme/web@sha256:abc".into();
        assert_eq!(
            summary(&b, NOW),
            "build bld_1 succeeded in 42.0s: registry.test/acme/web@sha256:abc"
        );

        let mut b = build(pb::BuildStatus::Failed);
        b.finished_at = NOW - 40_000;
        b.error =
            "Build failed: RUN make exited with 2. Last output:\nmake: *** [all] Error 2".into();
        assert_eq!(
            summary(&b, NOW),
            "build bld_1 failed after 10.0s: Build failed: RUN make exited with 2. Last output:"
        );

        let mut b = build(pb::BuildStatus::Running);
        b.current_step = "STEP 2/4: RUN make".into();
        assert_eq!(
            summary(&b, NOW),
            "build bld_1 is running (50.0s), at STEP 2/4: RUN make; --follow reads on until it ends"
        );

        let mut b = build(pb::BuildStatus::Queued);
        b.started_at = 0;
        assert_eq!(
            summary(&b, NOW),
            "build bld_1 is queued (queued for 1m00s); --follow reads on until it ends"
        );
        let fields = fields(&b, NOW);
        assert_eq!(
            fields.last(),
            Some(&("output", "42 lines (`ctrl logs --build d_1`)".to_owned()))
        );
    }

    #[test]
    fn build_output_is_followed_only_around_the_building_phase() {
        use pb::DeploymentStatus as S;
        for s in [S::Pending, S::Starting, S::Building] {
            assert!(before_or_building(s as i32), "{s:?}");
        }
        for s in [
            S::Deploying,
            S::Ready,
            S::Failed,
            S::Cancelled,
            S::Superseded,
        ] {
            assert!(!before_or_building(s as i32), "{s:?}");
        }
        assert!(retryable(tonic::Code::NotFound));
        assert!(!retryable(tonic::Code::PermissionDenied));
    }

    /// A BuildService whose StreamBuildLogs answers from a script, one
    /// reply per call (then a stream that never ends), recording each
    /// call's `after_line`.
    mod fake {
        use std::collections::VecDeque;
        use std::pin::Pin;
        use std::sync::{Arc, Mutex};

        use ctrl_proto::ctrl::v1 as pb;
        use futures::{Stream, StreamExt};
        use tonic::{Request, Response, Status};

        pub(super) enum Reply {
            Refuse(Status),
            /// These messages, then nothing more (the stream stays open).
            Send(Vec<Result<pb::StreamBuildLogsResponse, Status>>),
        }

        #[derive(Clone)]
        pub(super) struct Builds {
            pub(super) script: Arc<Mutex<VecDeque<Reply>>>,
            pub(super) calls: Arc<Mutex<Vec<i64>>>,
        }

        type Lines =
            Pin<Box<dyn Stream<Item = Result<pb::StreamBuildLogsResponse, Status>> + Send>>;

        #[tonic::async_trait]
        impl pb::build_service_server::BuildService for Builds {
            async fn generate_upload_url(
                &self,
                _: Request<pb::GenerateUploadUrlRequest>,
            ) -> Result<Response<pb::GenerateUploadUrlResponse>, Status> {
                Err(Status::unimplemented("not in this test"))
            }

            async fn get_build(
                &self,
                _: Request<pb::GetBuildRequest>,
            ) -> Result<Response<pb::GetBuildResponse>, Status> {
                Err(Status::unimplemented("not in this test"))
            }

            type StreamBuildLogsStream = Lines;

            async fn stream_build_logs(
                &self,
                req: Request<pb::StreamBuildLogsRequest>,
            ) -> Result<Response<Lines>, Status> {
                self.calls
                    .lock()
                    .expect("lock")
                    .push(req.get_ref().after_line);
                let reply = self.script.lock().expect("lock").pop_front();
                match reply {
                    Some(Reply::Refuse(status)) => Err(status),
                    Some(Reply::Send(messages)) => Ok(Response::new(
                        futures::stream::iter(messages)
                            .chain(futures::stream::pending())
                            .boxed(),
                    )),
                    None => Ok(Response::new(futures::stream::pending().boxed())),
                }
            }
        }

        /// Serves `builds` on a loopback port; an [`Api`] for it.
        pub(super) async fn serve(builds: Builds) -> (crate::api::Api, tempfile::TempDir) {
            let incoming =
                tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().expect("addr"))
                    .expect("bind");
            let addr = incoming.local_addr().expect("addr");
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(pb::build_service_server::BuildServiceServer::new(builds))
                    .serve_with_incoming(incoming),
            );
            let cwd = tempfile::tempdir().expect("tempdir");
            let target = crate::api::Target::resolve(
                Some(format!("http://{addr}")),
                Some("test-token-0123456789".into()),
                None,
                &std::collections::HashMap::new(),
                cwd.path(),
            )
            .expect("target");
            let api =
                crate::api::Api::new(&target, std::time::Duration::from_secs(5)).expect("api");
            (api, cwd)
        }
    }

    fn lines(numbers: std::ops::RangeInclusive<i64>) -> Vec<pb::BuildLogLine> {
        numbers
            .map(|n| pb::BuildLogLine {
                number: n,
                time: NOW,
                text: format!("line {n}"),
            })
            .collect()
    }

    fn numbers(batches: &[Vec<pb::BuildLogLine>]) -> Vec<i64> {
        batches.iter().flatten().map(|l| l.number).collect()
    }

    #[tokio::test]
    async fn build_output_is_awaited_resumed_after_a_break_and_ends_with_the_build() {
        use fake::Reply;
        let not_yet = || {
            Reply::Refuse(tonic::Status::not_found(
                "deployment d_1 has not started building yet (it is pending)",
            ))
        };
        let builds = fake::Builds {
            script: std::sync::Arc::new(std::sync::Mutex::new(
                [
                    not_yet(),
                    not_yet(),
                    Reply::Send(vec![
                        Ok(pb::StreamBuildLogsResponse {
                            lines: lines(1..=2),
                            finished: None,
                        }),
                        Ok(pb::StreamBuildLogsResponse {
                            lines: lines(3..=3),
                            finished: None,
                        }),
                        Err(tonic::Status::unavailable("the server went away")),
                    ]),
                    Reply::Send(vec![Ok(pb::StreamBuildLogsResponse {
                        lines: lines(4..=5),
                        finished: Some(build(pb::BuildStatus::Succeeded)),
                    })]),
                ]
                .into(),
            )),
            calls: std::sync::Arc::default(),
        };
        let (api, _cwd) = fake::serve(builds.clone()).await;
        let (_phase, phase_rx) = watch::channel(pb::DeploymentStatus::Building as i32);
        let (tx, mut rx) = mpsc::unbounded_channel();
        tokio::time::timeout(
            Duration::from_secs(20),
            follow_output(&api, "d_1", phase_rx, tx),
        )
        .await
        .expect("it ends with the build");
        let mut got = Vec::new();
        while let Ok(batch) = rx.try_recv() {
            got.push(batch);
        }
        assert_eq!(numbers(&got), [1, 2, 3, 4, 5], "every line once, in order");
        assert_eq!(
            *builds.calls.lock().expect("lock"),
            [0, 0, 0, 3],
            "asked again while there was no build, then resumed after the last line"
        );
    }

    #[tokio::test]
    async fn build_output_stops_soon_after_the_deployment_leaves_the_building_phase() {
        let builds = fake::Builds {
            script: std::sync::Arc::new(std::sync::Mutex::new(
                [fake::Reply::Send(vec![Ok(pb::StreamBuildLogsResponse {
                    lines: lines(1..=1),
                    finished: None,
                })])]
                .into(),
            )),
            calls: std::sync::Arc::default(),
        };
        let (api, _cwd) = fake::serve(builds).await;
        let (phase, phase_rx) = watch::channel(pb::DeploymentStatus::Building as i32);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let follower = tokio::spawn(async move { follow_output(&api, "d_1", phase_rx, tx).await });
        let first = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a first line");
        assert_eq!(numbers(&first.into_iter().collect::<Vec<_>>()), [1]);
        // The stream stays open; the deployment moves on.
        let left_at = Instant::now();
        phase.send_replace(pb::DeploymentStatus::Deploying as i32);
        tokio::time::timeout(GRACE + Duration::from_secs(5), follower)
            .await
            .expect("it stops")
            .expect("no panic");
        let waited = left_at.elapsed();
        assert!(waited >= GRACE - Duration::from_millis(100), "{waited:?}");
    }
}
