//! `ctrl deploy`: create a deployment — of an image, a git commit, or a
//! local directory packed and uploaded first — follow its steps (and its
//! build's output) live, end with its URLs — or with the failing step's
//! message and a non-zero exit.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use ctrl_proto::ctrl::v1 as pb;
use rand::Rng;
use tokio::sync::{mpsc, watch};

use super::deployments::urls_with;
use super::{Ctx, build};
use crate::args::DeployArgs;
use crate::output::{self, duration, status, step_kind};
use crate::progress::Progress;
use crate::resolve;

/// Consecutive stream failures after which `deploy` stops following (the
/// deployment itself goes on).
const MAX_WATCH_FAILURES: u32 = 6;

/// `ctrl deploy …`
pub(super) async fn run(ctx: &Ctx, args: DeployArgs) -> Result<ExitCode> {
    use pb::create_deployment_request::Source;
    let api = &ctx.api;
    // A local directory is checked before anything is sent.
    let local = match (&args.context, &args.git) {
        (Some(dir), None) => Some((
            dir.clone(),
            build::check_local(dir, args.dockerfile.as_deref().unwrap_or_default())?,
        )),
        _ => None,
    };
    let app = resolve::app(api, ctx.workspace_ref(), &args.target.app).await?;
    let env = args.target.env.clone();
    let git = (args.branch.is_some() || args.commit.is_some()).then(|| pb::GitCommitInfo {
        commit_sha: args.commit.clone().unwrap_or_default(),
        branch: args.branch.clone().unwrap_or_default(),
        ..Default::default()
    });
    let (source, what) = match (&args.image, &args.git, local) {
        (Some(image), _, _) => (
            Source::Image(pb::ImageSource {
                image: image.clone(),
            }),
            image.clone(),
        ),
        (None, Some(repository), _) => (
            Source::GitBuild(pb::GitSource {
                repository: repository.clone(),
                context_path: args.context.clone().unwrap_or_default(),
                dockerfile_path: args.dockerfile.clone().unwrap_or_default(),
                installation_id: args.installation.unwrap_or(0),
            }),
            match (&args.commit, &args.branch) {
                (Some(sha), _) => format!("{repository}@{}", sha.get(..12).unwrap_or(sha)),
                (None, Some(branch)) => format!("{repository}@{branch}"),
                (None, None) => repository.clone(),
            },
        ),
        (None, None, Some((dir, (path, dockerfile)))) => (
            Source::ContextBuild(
                build::upload_local(ctx, &app.id, &path, &dockerfile, args.verbose).await?,
            ),
            dir,
        ),
        (None, None, None) => {
            bail!("say what to deploy: --image <image>, --git <owner/repo> or --context <dir>")
        }
    };
    let from_source = !matches!(source, Source::Image(_));
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
        build_args: args.build_args.iter().cloned().collect(),
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
    let mut progress = Progress::new(std::io::stderr().is_terminal()).verbose(args.verbose);
    let followed = tokio::select! {
        d = follow_deploy(ctx, &id, &mut progress, from_source) => d,
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
                let custom = custom_domains(ctx, &d).await;
                for url in urls_with(&d, ctx.edge_https_port, &custom) {
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

/// The failing step and its message, in full: a failed build's goes on
/// with its last output lines.
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
            // Both say why; the longer says more.
            if s.error_message.len() >= d.error_message.len() {
                &s.error_message
            } else {
                &d.error_message
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
    follow_with(ctx, id, progress, None).await
}

/// [`follow`], with the build's output alongside for a deployment made
/// from source.
async fn follow_deploy(
    ctx: &Ctx,
    id: &str,
    progress: &mut Progress,
    from_source: bool,
) -> Result<pb::Deployment> {
    if !from_source {
        return follow(ctx, id, progress).await;
    }
    let (phase, phase_rx) = watch::channel(pb::DeploymentStatus::Pending as i32);
    let (lines_tx, lines) = mpsc::unbounded_channel();
    let (followed, ()) = tokio::join!(
        follow_with(ctx, id, progress, Some(BuildFeed { phase, lines })),
        build::follow_output(&ctx.api, id, phase_rx, lines_tx),
    );
    followed
}

/// The build output's way into the display: the deployment's status goes
/// out (the follower stops after the building phase), lines come in.
#[derive(Debug)]
struct BuildFeed {
    phase: watch::Sender<i32>,
    lines: mpsc::UnboundedReceiver<Vec<pb::BuildLogLine>>,
}

impl BuildFeed {
    /// Shows what the follower still sends until it stops.
    async fn drain(mut self, progress: &mut Progress) {
        while let Some(batch) = self.lines.recv().await {
            progress.build_lines(&batch);
        }
    }
}

/// The next lines of the build output; never, without a follower or after
/// it stopped.
async fn next_lines(build: &mut Option<BuildFeed>) -> Vec<pb::BuildLogLine> {
    if let Some(feed) = build.as_mut() {
        match feed.lines.recv().await {
            Some(batch) => return batch,
            None => *build = None,
        }
    }
    std::future::pending().await
}

async fn follow_with(
    ctx: &Ctx,
    id: &str,
    progress: &mut Progress,
    mut build: Option<BuildFeed>,
) -> Result<pb::Deployment> {
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
                let message = tokio::select! {
                    m = stream.message() => m,
                    batch = next_lines(&mut build) => {
                        progress.build_lines(&batch);
                        continue;
                    }
                };
                match message {
                    Ok(Some(msg)) => {
                        failures = 0;
                        let Some(d) = msg.deployment else { continue };
                        if let Some(feed) = &build {
                            feed.phase.send_replace(d.status);
                        }
                        if terminal(&d) {
                            // The build's last lines before its verdict.
                            if let Some(feed) = build.take() {
                                feed.drain(progress).await;
                            }
                            progress.update(&d);
                            return Ok(d);
                        }
                        progress.update(&d);
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

/// Longest wait for the custom domains a deploy's result lists.
const CUSTOM_DOMAINS_TIMEOUT: Duration = Duration::from_secs(5);

/// The environment's verified custom domains that serve `d` (one
/// ListCustomDomains call). Nothing when they cannot be read: the deploy's
/// result never depends on them.
async fn custom_domains(ctx: &Ctx, d: &pb::Deployment) -> Vec<String> {
    let api = &ctx.api;
    let req = api.request(pb::ListCustomDomainsRequest {
        environment_id: d.environment_id.clone(),
    });
    let mut client = api.custom_domains();
    let call = api.call_status(client.list_custom_domains(req));
    match tokio::time::timeout(CUSTOM_DOMAINS_TIMEOUT, call).await {
        Ok(Ok(res)) => serving(d, &res.custom_domains),
        _ => Vec::new(),
    }
}

/// The verified domains among `domains` that route to `d`: those its
/// routes already list, or all of them when it is the app's live
/// deployment (their routes follow it).
fn serving(d: &pb::Deployment, domains: &[pb::CustomDomain]) -> Vec<String> {
    domains
        .iter()
        .filter(|c| c.status == pb::CustomDomainStatus::Verified as i32)
        .filter(|c| d.is_live || d.hostnames.iter().any(|h| h.fqdn == c.domain))
        .map(|c| c.domain.clone())
        .collect()
}

/// Whether a failed stream is worth opening again.
fn transient(code: tonic::Code) -> bool {
    use tonic::Code;
    matches!(
        code,
        Code::Unavailable | Code::Unknown | Code::Internal | Code::DeadlineExceeded | Code::Aborted
    )
}

#[cfg(test)]
mod tests {
    use super::super::deployments::urls_with;
    use super::*;

    fn custom(host: &str, status: pb::CustomDomainStatus) -> pb::CustomDomain {
        pb::CustomDomain {
            domain: host.into(),
            status: status as i32,
            ..Default::default()
        }
    }

    #[test]
    fn a_deploy_lists_the_verified_custom_domains_that_serve_it() {
        let listed = [
            custom("pending.example.com", pb::CustomDomainStatus::Verifying),
            custom("shop.example.com", pb::CustomDomainStatus::Verified),
            custom("www.example.com", pb::CustomDomainStatus::Verified),
        ];
        let mut d = pb::Deployment {
            hostnames: vec![
                pb::Hostname {
                    fqdn: "web-git-main-acme.ctrl.test".into(),
                    ..Default::default()
                },
                pb::Hostname {
                    fqdn: "shop.example.com".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        // Not live: only the domains already routed to it.
        assert_eq!(serving(&d, &listed), ["shop.example.com"]);
        d.is_live = true;
        let custom = serving(&d, &listed);
        assert_eq!(custom, ["shop.example.com", "www.example.com"]);
        assert_eq!(
            urls_with(&d, Some(8443), &custom),
            [
                "https://web-git-main-acme.ctrl.test:8443  (hostname, through the edge)",
                "https://shop.example.com:8443             (custom domain)",
                "https://www.example.com:8443              (custom domain)",
            ]
        );
        assert_eq!(
            urls_with(&d, None, &[]),
            [
                "https://web-git-main-acme.ctrl.test  (hostname, through the edge)",
                "https://shop.example.com             (hostname, through the edge)",
            ]
        );
    }
}
