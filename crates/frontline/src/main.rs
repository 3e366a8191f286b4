//! `frontline`: the regional edge.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use frontline::config::{Config, ENV_PREFIX};

#[derive(Debug, Parser)]
#[command(name = "frontline", version, about = "The regional edge of ctrl")]
struct Cli {
    /// The configuration file (TOML; ${VAR} expanded; FRONTLINE__SECTION__KEY overrides).
    #[arg(
        long,
        short,
        env = "FRONTLINE_CONFIG",
        default_value = "frontline.toml"
    )]
    config: PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config: Config = match ctrl_runtime::config::load(&cli.config, ENV_PREFIX) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("frontline: {e}");
            return ExitCode::from(2);
        }
    };
    let _logs = config.log.init("frontline");
    let run = async {
        let listeners = frontline::server::Listeners::bind(&config).await?;
        frontline::server::run(&config, listeners, ctrl_runtime::shutdown_signal()).await
    };
    match run.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("frontline: {e:#}");
            ExitCode::FAILURE
        }
    }
}
