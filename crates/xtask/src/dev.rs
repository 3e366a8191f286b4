//! `cargo xtask dev`: the local stack.
//!
//! Starts MariaDB (with the `ctrl` database migrated), restate-server and the
//! podman Docker API — plus the ctrl services as they come to exist — with
//! state and logs under `.dev/`, writes the endpoints and the API token to
//! `.dev/stack.env`, and runs until Ctrl-C or SIGTERM, then stops everything
//! it started. Re-running reuses the data in `.dev/`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use ctrl_testkit::process::ProcessId;
use ctrl_testkit::{MariaDb, Podman, RestatePorts, RestateServer, reaper};
use rand::Rng;
use sqlx::Connection;
use sqlx::mysql::MySqlConnection;
use tokio::signal::unix::{SignalKind, signal};

/// Where the stack lives and which ports it uses.
#[derive(Debug, Args)]
pub(crate) struct DevArgs {
    /// State, logs and stack.env go here.
    #[arg(long, env = "CTRL_DEV_DIR", default_value = ".dev")]
    dir: PathBuf,
    /// MariaDB's port.
    #[arg(long, env = "CTRL_DEV_MYSQL_PORT", default_value_t = 3307)]
    mysql_port: u16,
    /// Restate's ingress port.
    #[arg(long, env = "CTRL_DEV_RESTATE_INGRESS_PORT", default_value_t = 8080)]
    restate_ingress_port: u16,
    /// Restate's admin API port.
    #[arg(long, env = "CTRL_DEV_RESTATE_ADMIN_PORT", default_value_t = 9070)]
    restate_admin_port: u16,
    /// Restate's node-to-node port.
    #[arg(long, env = "CTRL_DEV_RESTATE_FABRIC_PORT", default_value_t = 5122)]
    restate_fabric_port: u16,
}

const DATABASE: &str = "ctrl";

pub(crate) async fn run(args: DevArgs) -> Result<()> {
    let started = Instant::now();
    crate::deps::ensure(false)?;
    fs::create_dir_all(&args.dir).with_context(|| format!("create {}", args.dir.display()))?;
    let dir = args.dir.canonicalize()?;
    claim(&dir)?;

    for (port, what, flag) in [
        (args.mysql_port, "MariaDB", "--mysql-port"),
        (
            args.restate_ingress_port,
            "Restate ingress",
            "--restate-ingress-port",
        ),
        (
            args.restate_admin_port,
            "Restate admin",
            "--restate-admin-port",
        ),
        (
            args.restate_fabric_port,
            "Restate fabric",
            "--restate-fabric-port",
        ),
    ] {
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            bail!("port {port} for {what} is in use; free it or choose another with {flag}");
        }
    }

    eprintln!("starting MariaDB on 127.0.0.1:{}", args.mysql_port);
    let mariadb = MariaDb::builder()
        .dir(dir.join("mariadb"))
        .port(args.mysql_port)
        .start()
        .await?;
    let database_url = mariadb.database_url(DATABASE);
    migrate(&mariadb.admin_url(), &database_url).await?;

    eprintln!(
        "starting restate-server on 127.0.0.1:{}",
        args.restate_ingress_port
    );
    let mut restate = RestateServer::builder()
        .data_dir(dir.join("restate"))
        .ports(RestatePorts {
            ingress: args.restate_ingress_port,
            admin: args.restate_admin_port,
            fabric: args.restate_fabric_port,
        })
        .log_filter("warn,restate=info")
        .start()
        .await?;

    eprintln!("starting the podman Docker API");
    let mut podman = Podman::builder().dir(dir.join("podman")).start().await?;

    let env_file = dir.join("stack.env");
    let token = api_token(&dir)?;
    write_private(
        &env_file,
        &format!(
            "# Written by `cargo xtask dev`; removed when the stack stops.\n\
             # Load it with: set -a; . {env}; set +a\n\
             CTRL_TOKEN={token}\n\
             DATABASE_URL={database_url}\n\
             RESTATE_INGRESS_URL={ingress}\n\
             RESTATE_ADMIN_URL={admin}\n\
             DOCKER_HOST={docker}\n",
            env = env_file.display(),
            ingress = restate.ingress_url(),
            admin = restate.admin_url(),
            docker = podman.docker_host(),
        ),
    )?;

    println!(
        "\nctrl dev stack is up in {:.1?}\n\
         \x20 MariaDB      {database_url}\n\
         \x20 Restate      ingress {}  admin {}\n\
         \x20 Docker API   {}\n\
         \x20 logs         {}/{{mariadb/error.log,restate/restate.log,podman/service.log}}\n\
         \x20 env          {} (endpoints and API token)\n\
         Press Ctrl-C to stop.",
        started.elapsed(),
        restate.ingress_url(),
        restate.admin_url(),
        podman.docker_host(),
        dir.display(),
        env_file.display(),
    );

    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }

    eprintln!("stopping the dev stack");
    let _ = fs::remove_file(&env_file);
    podman.stop(Duration::from_secs(10));
    restate.stop(Duration::from_secs(10));
    mariadb.stop(Duration::from_secs(30));
    let _ = fs::remove_file(dir.join("xtask-dev.pid"));
    eprintln!("stopped");
    Ok(())
}

/// Makes sure no other dev stack uses `dir`, and cleans up after one that
/// crashed (its processes are found through their pid files).
fn claim(dir: &Path) -> Result<()> {
    let lock = dir.join("xtask-dev.pid");
    if let Some((running, _)) = reaper::read_pid_file(&lock)
        && running.is_alive()
    {
        bail!(
            "a dev stack is already running from {} (pid {}); stop it first (Ctrl-C in its terminal, or `kill {}`)",
            dir.display(),
            running.pid,
            running.pid,
        );
    }
    let killed = reaper::reap_orphans(dir);
    if killed > 0 {
        eprintln!("cleaned up {killed} process(es) left by a dev stack that did not stop cleanly");
    }
    // The stack's own pid file: this process, owned by itself.
    let me = ProcessId::current();
    let line = format!(
        "{} {} {} {}\n",
        me.pid, me.start_time, me.pid, me.start_time
    );
    fs::write(&lock, line).with_context(|| format!("write {}", lock.display()))
}

/// Creates the `ctrl` database if needed and applies the migrations.
async fn migrate(admin_url: &str, database_url: &str) -> Result<()> {
    let mut admin = MySqlConnection::connect(admin_url).await?;
    sqlx::query("CREATE DATABASE IF NOT EXISTS `ctrl`")
        .execute(&mut admin)
        .await?;
    let mut db = MySqlConnection::connect(database_url).await?;
    ctrl_db::MIGRATOR
        .run(&mut db)
        .await
        .context("apply the database migrations")?;
    Ok(())
}

/// The dev API token: generated once, kept in `.dev/token` (mode 0600).
fn api_token(dir: &Path) -> Result<String> {
    let path = dir.join("token");
    if let Ok(token) = fs::read_to_string(&path)
        && !token.trim().is_empty()
    {
        return Ok(token.trim().to_owned());
    }
    let bytes: [u8; 24] = rand::rng().random();
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    write_private(&path, &token)?;
    Ok(token)
}

/// Writes a file readable only by its owner (it holds a secret).
fn write_private(path: &Path, contents: &str) -> Result<()> {
    fs::write(path, contents).with_context(|| format!("write {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restrict {}", path.display()))
}
