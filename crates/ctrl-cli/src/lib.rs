//! The `ctrl` command-line client.
//!
//! It talks gRPC to ctrl-api ([`api`]), found through flags, `CTRL_API_URL`
//! / `CTRL_TOKEN`, or the `.dev/stack.env` the local stack writes. People
//! name things by slug (`project/app`, `production`) and [`resolve`] turns
//! that into ids. Reads print tables or, with `--output json`, the API's
//! JSON mapping; `deploy` follows the deployment's steps live
//! ([`progress`]) and ends with its URLs or the failing step's message.
//! A local directory is packed (`.dockerignore` honoured), uploaded to the
//! presigned URL ctrl-api hands out ([`upload`]) and built; the build's
//! output shows while it runs, and `logs --build` prints it.
//! Errors are one line (a failed build's adds its last output lines); the
//! exit code says whether the command succeeded.

pub mod api;
pub mod args;
pub mod commands;
pub mod output;
pub mod progress;
pub mod resolve;
pub mod upload;

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;

/// Runs the parsed command line with the process environment `env` and
/// working directory `cwd`.
pub async fn run(
    cli: args::Cli,
    env: &HashMap<String, String>,
    cwd: &std::path::Path,
) -> Result<ExitCode> {
    let target = api::Target::resolve(cli.api_url, cli.token, cli.workspace, env, cwd)?;
    let api = api::Api::new(&target, Duration::from_secs(cli.timeout.max(1)))?;
    let mut ctx = commands::Ctx::new(api, target.workspace, cli.output, env);
    ctx.edge_https_port = target.edge_https_port;
    commands::run(&ctx, cli.command).await
}
