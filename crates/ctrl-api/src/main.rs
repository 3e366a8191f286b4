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
    /// Agent credentials kept in the database.
    #[command(subcommand)]
    Agents(AgentsCommand),
}

#[derive(Debug, Subcommand)]
enum AgentsCommand {
    /// Register a token you generated (e.g. a Kubernetes Secret's) as an
    /// agent's credential, once: running it again with the same token and
    /// binding changes nothing. (`ctrl regions agents add` issues one instead.)
    Ensure {
        /// The agent: krane or frontline.
        #[arg(long, value_parser = ["krane", "frontline"])]
        kind: String,
        /// Platform of the region, e.g. aws.
        #[arg(long)]
        platform: String,
        /// The region, e.g. us-east-1.
        #[arg(long)]
        region: String,
        /// krane's cell id (not for frontline).
        #[arg(long, default_value = "")]
        cell_id: String,
        /// A label for operators.
        #[arg(long)]
        name: String,
        /// The environment variable holding the token (never a flag: flags show in process lists).
        #[arg(long, default_value = "CTRL_AGENT_TOKEN")]
        token_env: String,
    },
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
    let _logs = config.log.init("ctrl-api");
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
            ctrl_db::migrate(&mut *db.acquire().await?).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Agents(AgentsCommand::Ensure {
            kind,
            platform,
            region,
            cell_id,
            name,
            token_env,
        }) => {
            let token = zeroize::Zeroizing::new(std::env::var(&token_env).map_err(|_| {
                anyhow::anyhow!("{token_env} is not set: it must hold the agent's token")
            })?);
            let kind = kind
                .parse::<ctrl_cluster_sync::agents::AgentKind>()
                .map_err(anyhow::Error::msg)?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
            let binding = ctrl_cluster_sync::agents::Binding {
                kind,
                platform: &platform,
                region: &region,
                cell_id: &cell_id,
                name: &name,
            };
            let credential = ctrl_cluster_sync::agents::ensure(&db, &binding, &token, now).await?;
            // The id alone on stdout, for scripts (this command logs nothing).
            println!("{}", credential.id);
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
