//! `krane`: the regional agent.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use krane::config::{Config, ENV_PREFIX};

#[derive(Debug, Parser)]
#[command(name = "krane", version, about = "The regional agent of ctrl")]
struct Cli {
    /// The configuration file (TOML; ${VAR} expanded; KRANE__SECTION__KEY overrides).
    #[arg(long, short, env = "KRANE_CONFIG", default_value = "krane.toml")]
    config: PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config: Config = match ctrl_runtime::config::load(&cli.config, ENV_PREFIX) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("krane: {e}");
            return ExitCode::from(2);
        }
    };
    let _logs = config.log.init("krane");
    match krane::run::run(&config, ctrl_runtime::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("krane: {e:#}");
            ExitCode::FAILURE
        }
    }
}
