//! `ctrl-cluster-sync`: the ClusterService for regional agents.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use ctrl_cluster_sync::config::{Config, ENV_PREFIX};

#[derive(Debug, Parser)]
#[command(
    name = "ctrl-cluster-sync",
    version,
    about = "ClusterService for krane agents"
)]
struct Cli {
    /// The configuration file (TOML; ${VAR} expanded; CTRL_CLUSTER_SYNC__SECTION__KEY overrides).
    #[arg(
        long,
        short,
        env = "CTRL_CLUSTER_SYNC_CONFIG",
        default_value = "ctrl-cluster-sync.toml"
    )]
    config: PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config: Config = match ctrl_runtime::config::load(&cli.config, ENV_PREFIX) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ctrl-cluster-sync: {e}");
            return ExitCode::from(2);
        }
    };
    let _logs = config.log.init("ctrl-cluster-sync");
    match run(&config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("ctrl-cluster-sync: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: &Config) -> anyhow::Result<()> {
    let db = config.database.connect().await?;
    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.http.listen))?;
    tracing::info!(address = %listener.local_addr()?, "ctrl-cluster-sync listening (Connect, gRPC, /health)");
    ctrl_cluster_sync::server::serve(config, listener, db, ctrl_runtime::shutdown_signal()).await
}
