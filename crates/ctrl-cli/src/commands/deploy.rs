//! `ctrl deploy`: create a deployment, follow its steps live, end with its
//! URLs — or with the failing step's message and a non-zero exit.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use ctrl_proto::ctrl::v1 as pb;
use rand::Rng;

use super::Ctx;
use super::deployments::urls;
use crate::args::DeployArgs;
use crate::output::{self, duration, status, step_kind};
use crate::progress::Progress;
use crate::resolve;

/// Consecutive stream failures after which `deploy` stops following (the
/// deployment itself goes on).
const MAX_WATCH_FAILURES: u32 = 6;

/// `ctrl deploy …`
pub(super) async fn run(ctx: &Ctx, args: DeployArgs) -> Result<ExitCode> {
    let api = &ctx.api;
    let app = resolve::app(api, ctx.workspace_ref(), &args.target.app).await?;
    let env = args.target.env.clone();
    let git = (args.branch.is_some() || args.commit.is_some()).then(|| pb::GitCommitInfo {
        commit_sha: args.commit.clone().unwrap_or_default(),
        branch: args.branch.clone().unwrap_or_default(),
        ..Default::default()
    });
    let (source, what) = match (&args.image, &args.git) {
        (Some(image), _) => (
            pb::create_deployment_request::Source::Image(pb::ImageSource {
                image: image.clone(),
            }),
            image.clone(),
        ),
        (None, Some(repository)) => (
            pb::create_deployment_request::Source::GitBuild(pb::GitSource {
                repository: repository.clone(),
                context_path: args.context.clone().unwrap_or_default(),
                dockerfile_path: args.dockerfile.clone().unwrap_or_default(),
            }),
            match (&args.commit, &args.branch) {
                (Some(sha), _) => format!("{repository}@{}", sha.get(..12).unwrap_or(sha)),
                (None, Some(branch)) => format!("{repository}@{branch}"),
                (None, None) => repository.clone(),
            },
        ),
        (None, None) => bail!("say what to deploy: --image <image> or --git <owner/repo>"),
    };
    // The same key on a retried request returns the same deployment.
    let idempotency_key = format!("cli-{:032x}", rand::rng().random::<u128>());
    let req = api.request(pb::CreateDeploymentRequest {
        app_id: app.id.clone(),
        environment_slug: env.clone(),
        source: Some(source),
        git,
        command: args.command.clone(),
        trigger: pb::DeploymentTrigger::Cli as i32,
        trigger_reason: args.reason.clone().unwrap_or_default(),
        actor: Some(ctx.actor()),
        idempotency_key,
    });
    let created = api
        .call(
            "creating the deployment",
            api.deployments().create_deployment(req),
        )
        .await?;
    let id = created.deployment_id;

    if args.detach {
        if ctx.json() {
            output::json(&serde_json::json!({ "deployment_id": id }))?;
        } else {
            println!("{id}");
            eprintln!("follow it with `ctrl deployments get {id}`");
        }
        return Ok(ExitCode::SUCCESS);
    }

    eprintln!(
        "Deploying {what} to {} ({env}) as {id}",
        resolve::app_label(&args.target.app, &app)
    );
    let mut progress = Progress::new(std::io::stderr().is_terminal());
    let followed = tokio::select! {
        d = follow(ctx, &id, &mut progress) => d,
        _ = tokio::signal::ctrl_c() => {
            progress.interrupt();
            eprintln!(
                "\nStopped following {id}; it goes on. `ctrl deployments get {id}` shows it, `ctrl cancel {id}` stops it."
            );
            return Ok(ExitCode::from(130));
        }
    };
    progress.finish();
    let d = settle_live(ctx, followed?).await?;

    if ctx.json() {
        output::json(&d)?;
    }
    match pb::DeploymentStatus::try_from(d.status) {
        Ok(pb::DeploymentStatus::Ready) => {
            if !ctx.json() {
                let took = d
                    .steps
                    .iter()
                    .map(|s| s.ended_at)
                    .max()
                    .map_or(String::new(), |end| {
                        format!(" in {}", duration(end - d.created_at))
                    });
                let live = if d.is_live { ", live" } else { "" };
                println!("\n✓ {id} is ready{took}{live}");
                for url in urls(&d, ctx.edge_https_port) {
                    println!("  {url}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Ok(pb::DeploymentStatus::Failed) => Err(failure(&d)),
        Ok(pb::DeploymentStatus::Superseded) => Err(anyhow!(
            "deployment {id} was superseded by a newer deployment of the same app, environment and branch"
        )),
        _ => Err(anyhow!(
            "deployment {id} ended {}{}",
            status(d.status),
            if d.error_message.is_empty() {
                String::new()
            } else {
                format!(": {}", d.error_message)
            }
        )),
    }
}

/// The failing step and its message.
fn failure(d: &pb::Deployment) -> anyhow::Error {
    let step = d
        .steps
        .iter()
        .find(|s| s.status == pb::DeploymentStepStatus::Failed as i32);
    match step {
        Some(s) => anyhow!(
            "deployment {} failed at step {}: {}",
            d.id,
            step_kind(s.kind),
            if s.error_message.is_empty() {
                &d.error_message
            } else {
                &s.error_message
            }
        ),
        None => anyhow!("deployment {} failed: {}", d.id, d.error_message),
    }
}

/// Whether the deployment's workflow is done with it.
fn terminal(d: &pb::Deployment) -> bool {
    use pb::DeploymentStatus as S;
    matches!(
        S::try_from(d.status),
        Ok(S::Ready | S::Failed | S::Skipped | S::Stopped | S::Superseded | S::Cancelled)
    )
}

/// Follows WatchDeployment until a terminal status, reconnecting (bounded)
/// when the stream breaks: each stream starts with the current state, so
/// nothing is missed.
pub(super) async fn follow(ctx: &Ctx, id: &str, progress: &mut Progress) -> Result<pb::Deployment> {
    let api = &ctx.api;
    let mut failures = 0;
    loop {
        // No timeout header: it would end the stream; opening it is bounded.
        let req = tonic::Request::new(pb::WatchDeploymentRequest {
            deployment_id: id.to_owned(),
        });
        let opened = api
            .call_status(api.deployments().watch_deployment(req))
            .await;
        let what = format!("following {id}");
        let status = match opened {
            Ok(mut stream) => loop {
                match stream.message().await {
                    Ok(Some(msg)) => {
                        failures = 0;
                        let Some(d) = msg.deployment else { continue };
                        progress.update(&d);
                        if terminal(&d) {
                            return Ok(d);
                        }
                    }
                    Ok(None) => break tonic::Status::unavailable("the server ended the stream"),
                    Err(status) => break status,
                }
            },
            Err(status) => status,
        };
        let problem = api.explain(&what, &status);
        if !transient(status.code()) {
            return Err(problem);
        }
        failures += 1;
        if failures >= MAX_WATCH_FAILURES {
            return Err(problem.context(format!(
                "lost track of {id} (it goes on; `ctrl deployments get {id}` shows it)"
            )));
        }
        tokio::time::sleep(Duration::from_millis(250 << failures.min(4))).await;
    }
}

/// A ready production deployment goes live a moment after it is ready (the
/// worker's auto-promotion, unless the app is rolled back). Waits briefly
/// for that, so the result says what is live.
async fn settle_live(ctx: &Ctx, d: pb::Deployment) -> Result<pb::Deployment> {
    let ready = d.status == pb::DeploymentStatus::Ready as i32;
    if !ready || d.is_live || d.environment_slug != "production" {
        return Ok(d);
    }
    let api = &ctx.api;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let req = api.request(pb::GetAppRequest {
            app_id: d.app_id.clone(),
        });
        let app = api
            .call("reading the app", api.apps().get_app(req))
            .await?
            .app
            .unwrap_or_default();
        if app.live_deployment_id == d.id {
            return resolve::deployment(api, &d.id).await;
        }
        if app.is_rolled_back {
            break;
        }
    }
    Ok(d)
}

/// Whether a failed stream is worth opening again.
fn transient(code: tonic::Code) -> bool {
    use tonic::Code;
    matches!(
        code,
        Code::Unavailable | Code::Unknown | Code::Internal | Code::DeadlineExceeded | Code::Aborted
    )
}
