//! Project automation, run as `cargo xtask <task>` (see `.cargo/config.toml`).
//!
//! - `deps`: install or verify the real dependencies (restate-server,
//!   MariaDB, podman, ...), idempotently;
//! - `test`: `deps`, then the whole workspace's tests with cargo-nextest;
//! - `dev`: `deps`, then the local stack with the demo app deployed,
//!   until Ctrl-C;
//! - `chaos`: the stack under random SIGKILLs, its invariants checked
//!   after every round;
//! - `edge`: the edge (frontline) end to end on the stack: hostnames,
//!   rollback and promote under load, streaming, a control-plane outage,
//!   wake on request, and rollback latency at the edge;
//! - `images`: the services' container images from `deploy/Dockerfile`,
//!   built through the Docker API with no base image and no network;
//! - `github push`: push to deploy on the dev stack through its fake
//!   GitHub (a commit, the signed webhook, the deployment followed).

mod chaos;
mod compose;
mod demo;
mod deps;
mod dev;
mod edge;
mod engine;
mod github;
mod helm;
mod images;
mod programs;
mod stack;
mod test;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "ctrl project automation")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install or verify every dependency the tests and the dev stack use,
    /// then prove that a container with a published port answers.
    Deps {
        /// Only report; install nothing, fail if something is missing.
        #[arg(long)]
        check: bool,
    },
    /// Install what is missing, then run all tests with cargo-nextest.
    Test {
        /// Arguments passed to `cargo nextest run` (e.g. a test filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Start the local stack (state and logs in .dev/), deploy the demo app, run until Ctrl-C.
    Dev(dev::DevArgs),
    /// Run the stack under random SIGKILLs and check its invariants after each round.
    Chaos(chaos::ChaosArgs),
    /// Check the edge end to end on the stack and print its figures.
    Edge(edge::EdgeArgs),
    /// Build the services' container images (deploy/Dockerfile) through the Docker API.
    Images(images::ImagesArgs),
    /// Act as GitHub on the dev stack: push a directory and deliver the webhook.
    #[command(name = "github")]
    GitHub(github::GitHubArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Deps { check } => deps::run(check).await.map(|()| ExitCode::SUCCESS),
        Task::Test { args } => test::run(&args).await,
        Task::Dev(args) => dev::run(args).await.map(|()| ExitCode::SUCCESS),
        Task::Chaos(args) => chaos::run(args).await,
        Task::Edge(args) => edge::run(args).await,
        Task::Images(args) => images::run(args).await.map(|()| ExitCode::SUCCESS),
        Task::GitHub(args) => github::run(args).await.map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
