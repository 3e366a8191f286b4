//! `ctrl-worker`: the Restate endpoint hosting ctrl's durable services.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use ctrl_worker::config::{Config, ENV_PREFIX};
use ctrl_worker::startup;

#[derive(Debug, Parser)]
#[command(
    name = "ctrl-worker",
    version,
    about = "ctrl's durable workflow worker"
)]
struct Cli {
    /// The configuration file (TOML; ${VAR} expanded; CTRL_WORKER__SECTION__KEY overrides).
    #[arg(
        long,
        short,
        env = "CTRL_WORKER_CONFIG",
        default_value = "ctrl-worker.toml"
    )]
    config: PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config: Config = match ctrl_runtime::config::load(&cli.config, ENV_PREFIX) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ctrl-worker: {e}");
            return ExitCode::from(2);
        }
    };
    // What a handler logs while Restate replays its journal is dropped:
    // each line appears once, not on every replay.
    let _logs = config
        .log
        .init_filtered("ctrl-worker", restate_sdk::filter::ReplayAwareFilter);
    let result = async {
        let db = config.database.connect().await?;
        startup::run(&config, db, ctrl_runtime::shutdown_signal()).await
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("ctrl-worker: {e:#}");
            ExitCode::FAILURE
        }
    }
}
