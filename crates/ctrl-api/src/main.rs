//! `ctrl-api`: the public Connect + gRPC API server.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ctrl_api::config::{Config, ENV_PREFIX};
use ctrl_api::server;

#[derive(Debug, Parser)]
#[command(name = "ctrl-api", version, about = "The ctrl API server")]
struct Cli {
    /// The configuration file (TOML; ${VAR} expanded; CTRL_API__SECTION__KEY overrides).
    #[arg(long, short, env = "CTRL_API_CONFIG", default_value = "ctrl-api.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the API (the default).
    Serve,
    /// Apply the database migrations and exit.
    Migrate,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // Configuration first: a bad file stops us before logging or any port.
    let config: Config = match ctrl_runtime::config::load(&cli.config, ENV_PREFIX) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ctrl-api: {e}");
            return ExitCode::from(2);
        }
    };
    let _logs = config.log.init();
    match run(cli.command.unwrap_or(Command::Serve), &config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("ctrl-api: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, config: &Config) -> anyhow::Result<()> {
    let db = config.database.connect().await?;
    match command {
        Command::Migrate => {
            ctrl_db::MIGRATOR.run(&db).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Serve => {
            let listener = tokio::net::TcpListener::bind(config.http.listen)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.http.listen))?;
            tracing::info!(address = %listener.local_addr()?, "ctrl-api listening (Connect, gRPC, /health)");
            server::serve(config, listener, db, ctrl_runtime::shutdown_signal()).await
        }
    }
}
