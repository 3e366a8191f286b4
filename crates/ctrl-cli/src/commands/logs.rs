//! `ctrl logs`: a deployment's output, from every region whose agent serves
//! logs. The instances' stdout goes to stdout and their stderr to stderr,
//! each line prefixed by `region/instance`; ctrl's own notices (a region
//! that cannot be read) go to stderr. `-o json` prints every message as one
//! JSON line on stdout instead. `--build` prints the deployment's build
//! output instead (see `build::logs`).

use std::io::Write;

use anyhow::{Result, bail};
use ctrl_proto::ctrl::v1 as pb;

use super::{Ctx, build};
use crate::args::LogsArgs;
use crate::resolve;

/// `ctrl logs …`
pub(super) async fn run(ctx: &Ctx, args: LogsArgs) -> Result<()> {
    let api = &ctx.api;
    let deployment_id = match (args.deployment, args.app) {
        (Some(id), _) => id,
        (None, Some(app)) => {
            let app = resolve::app(api, ctx.workspace_ref(), &app).await?;
            if app.live_deployment_id.is_empty() {
                bail!(
                    "app {} has no live deployment; name one (`ctrl deployments list --app {}`)",
                    app.slug,
                    app.id
                );
            }
            app.live_deployment_id
        }
        (None, None) => bail!("name a deployment or --app"),
    };
    if args.build {
        return build::logs(ctx, &deployment_id, args.follow, args.timestamps).await;
    }
    // No timeout header: it would cut a followed stream; opening it is
    // bounded by the call timeout, a read without --follow by the server.
    let req = tonic::Request::new(pb::StreamDeploymentLogsRequest {
        deployment_id: deployment_id.clone(),
        follow: args.follow,
        tail_lines: Some(args.tail),
        region: args.region.unwrap_or_default(),
    });
    let what = format!("reading the logs of {deployment_id}");
    let mut stream = api
        .call(&what, api.deployments().stream_deployment_logs(req))
        .await?;
    let mut lines = 0usize;
    loop {
        match stream.message().await {
            Ok(Some(message)) => {
                lines += 1;
                match print(ctx, &message, args.timestamps) {
                    Ok(()) => {}
                    // The reader left (`ctrl logs … | head`): done.
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
                    Err(e) => bail!("writing the logs failed: {e}"),
                }
            }
            Ok(None) => break,
            Err(status) => return Err(api.explain(&what, &status)),
        }
    }
    if lines == 0 && !ctx.json() {
        eprintln!("{deployment_id} has printed nothing yet");
    }
    Ok(())
}

/// One message, where it belongs.
fn print(ctx: &Ctx, m: &pb::StreamDeploymentLogsResponse, timestamps: bool) -> std::io::Result<()> {
    if ctx.json() {
        let line = serde_json::to_string(m)?;
        return write_line(&mut std::io::stdout().lock(), &line);
    }
    let stream = pb::LogStream::try_from(m.stream).unwrap_or(pb::LogStream::Unspecified);
    if stream == pb::LogStream::Ctrl {
        return write_line(&mut std::io::stderr().lock(), &format!("ctrl: {}", m.line));
    }
    let time = if timestamps && !m.timestamp.is_empty() {
        format!("{} ", m.timestamp)
    } else {
        String::new()
    };
    let line = format!("{time}{}/{} | {}", m.region, m.instance, m.line);
    if stream == pb::LogStream::Stderr {
        write_line(&mut std::io::stderr().lock(), &line)
    } else {
        write_line(&mut std::io::stdout().lock(), &line)
    }
}

/// Writes a line at once (a followed stream is read as it comes).
fn write_line(out: &mut impl Write, line: &str) -> std::io::Result<()> {
    writeln!(out, "{line}")?;
    out.flush()
}
