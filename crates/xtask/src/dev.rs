//! `cargo xtask dev`: the local stack.
//!
//! Starts MariaDB (with the `ctrl` database migrated), restate-server, the
//! podman Docker API, ctrl-worker, ctrl-api (serving the agents'
//! ClusterService too) and krane as the agent of region `dev/local`, with
//! state and logs under `.dev/`, and the testkit's fake GitHub in process
//! (see [`crate::github`]); writes the endpoints, the API token and the
//! demo workspace to `.dev/stack.env`; then deploys the demo app through the
//! `ctrl` CLI (see [`crate::demo`]) and prints where it answers. Runs until
//! Ctrl-C or SIGTERM, then stops everything it started. Re-running reuses
//! the data in `.dev/` — the demo included.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine;
use clap::Args;
use ctrl_testkit::process::{ProcessId, Supervised};
use ctrl_testkit::{MariaDb, Podman, Registry, RestatePorts, RestateServer, S3Server, reaper};

use crate::{demo, github};
use rand::RngCore;
use sqlx::Connection;
use sqlx::mysql::MySqlConnection;
use tokio::signal::unix::{SignalKind, signal};

/// The stack's default ports, which docker-compose.yml publishes too.
pub(crate) mod ports {
    pub(crate) const MYSQL: u16 = 3307;
    pub(crate) const RESTATE_INGRESS: u16 = 8080;
    pub(crate) const RESTATE_ADMIN: u16 = 9070;
    pub(crate) const RESTATE_FABRIC: u16 = 5122;
    pub(crate) const API: u16 = 7091;
    pub(crate) const API_OPS: u16 = 7094;
    pub(crate) const WORKER: u16 = 9080;
    pub(crate) const WORKER_HEALTH: u16 = 9081;
    pub(crate) const KRANE_HEALTH: u16 = 8070;
    pub(crate) const EDGE_HTTP: u16 = 7080;
    pub(crate) const EDGE_ADMIN: u16 = 7081;
    pub(crate) const EDGE_HTTPS: u16 = 7443;
    pub(crate) const S3: u16 = 8014;
    pub(crate) const REGISTRY: u16 = 5051;
    pub(crate) const GITHUB: u16 = 8016;
}

/// Where the stack lives and which ports it uses.
#[derive(Debug, Args)]
pub(crate) struct DevArgs {
    /// State, logs and stack.env go here.
    #[arg(long, env = "CTRL_DEV_DIR", default_value = ".dev")]
    dir: PathBuf,
    /// MariaDB's port.
    #[arg(long, env = "CTRL_DEV_MYSQL_PORT", default_value_t = ports::MYSQL)]
    mysql_port: u16,
    /// Restate's ingress port.
    #[arg(long, env = "CTRL_DEV_RESTATE_INGRESS_PORT", default_value_t = ports::RESTATE_INGRESS)]
    restate_ingress_port: u16,
    /// Restate's admin API port.
    #[arg(long, env = "CTRL_DEV_RESTATE_ADMIN_PORT", default_value_t = ports::RESTATE_ADMIN)]
    restate_admin_port: u16,
    /// Restate's node-to-node port.
    #[arg(long, env = "CTRL_DEV_RESTATE_FABRIC_PORT", default_value_t = ports::RESTATE_FABRIC)]
    restate_fabric_port: u16,
    /// ctrl-api's port (Connect, gRPC, liveness).
    #[arg(long, env = "CTRL_DEV_API_PORT", default_value_t = ports::API)]
    api_port: u16,
    /// ctrl-api's operations port (readiness, metrics).
    #[arg(long, env = "CTRL_DEV_API_OPS_PORT", default_value_t = ports::API_OPS)]
    api_ops_port: u16,
    /// ctrl-worker's Restate endpoint port.
    #[arg(long, env = "CTRL_DEV_WORKER_PORT", default_value_t = ports::WORKER)]
    worker_port: u16,
    /// ctrl-worker's health port.
    #[arg(long, env = "CTRL_DEV_WORKER_HEALTH_PORT", default_value_t = ports::WORKER_HEALTH)]
    worker_health_port: u16,
    /// krane's health and metrics port.
    #[arg(long, env = "CTRL_DEV_KRANE_HEALTH_PORT", default_value_t = ports::KRANE_HEALTH)]
    krane_health_port: u16,
    /// frontline's plain HTTP port.
    #[arg(long, env = "CTRL_DEV_EDGE_HTTP_PORT", default_value_t = ports::EDGE_HTTP)]
    edge_http_port: u16,
    /// frontline's HTTPS port.
    #[arg(long, env = "CTRL_DEV_EDGE_HTTPS_PORT", default_value_t = ports::EDGE_HTTPS)]
    edge_https_port: u16,
    /// frontline's health and metrics port.
    #[arg(long, env = "CTRL_DEV_EDGE_ADMIN_PORT", default_value_t = ports::EDGE_ADMIN)]
    edge_admin_port: u16,
    /// The S3 server's port (uploaded build contexts).
    #[arg(long, env = "CTRL_DEV_S3_PORT", default_value_t = ports::S3)]
    s3_port: u16,
    /// The container registry's port (built images).
    #[arg(long, env = "CTRL_DEV_REGISTRY_PORT", default_value_t = ports::REGISTRY)]
    registry_port: u16,
    /// The fake GitHub's port (push to deploy without GitHub: `cargo xtask github push`).
    #[arg(long, env = "CTRL_DEV_GITHUB_PORT", default_value_t = ports::GITHUB)]
    github_port: u16,
    /// A directory with built ctrl-api, ctrl-worker, krane, frontline and ctrl binaries
    /// to run instead of building them with cargo.
    #[arg(long, env = "CTRL_DEV_BIN_DIR")]
    bin_dir: Option<PathBuf>,
}

const DATABASE: &str = "ctrl";

/// The base image `FROM busybox` resolves to, imported from the host's
/// static busybox (nothing is pulled).
pub(crate) const BUSYBOX: &str = "docker.io/library/busybox:latest";

/// The dev S3's access key id (its secret is generated into `.dev/s3.secret`).
const S3_ACCESS_KEY: &str = "ctrl-dev";

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
        (
            args.krane_health_port,
            "krane health",
            "--krane-health-port",
        ),
        (args.edge_http_port, "frontline HTTP", "--edge-http-port"),
        (args.edge_https_port, "frontline HTTPS", "--edge-https-port"),
        (args.edge_admin_port, "frontline admin", "--edge-admin-port"),
        (args.s3_port, "S3", "--s3-port"),
        (args.registry_port, "the registry", "--registry-port"),
        (args.github_port, "the fake GitHub", "--github-port"),
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

    let bin_dir = match &args.bin_dir {
        Some(dir) => dir.clone(),
        None => build_services("dev")?,
    };

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
    // `FROM busybox` (examples/hello) builds without pulling.
    podman
        .import_busybox_image(BUSYBOX)
        .context("import the busybox base image")?;

    eprintln!(
        "starting S3 (s3s-fs) on 127.0.0.1:{} and a registry on 127.0.0.1:{}",
        args.s3_port, args.registry_port
    );
    let s3_secret = secret(&dir.join("s3.secret"), 24, Encoding::Hex)?;
    let s3 = S3Server::start_in(
        Some(&dir.join("s3")),
        Some(args.s3_port),
        S3_ACCESS_KEY,
        &s3_secret,
    )
    .await?;
    let registry =
        Registry::start_in(Some(&dir.join("registry")), Some(args.registry_port)).await?;
    eprintln!(
        "starting the fake GitHub on 127.0.0.1:{} (app {}, installation {} on {})",
        args.github_port,
        github::APP_ID,
        github::INSTALLATION,
        github::REPO
    );
    let fake_github = github::start_fake(args.github_port).await?;
    let webhook_secret = secret(&dir.join("github-webhook.secret"), 24, Encoding::Hex)?;
    let mut builds = vec![
        ("CTRL_S3_URL", s3.endpoint_url()),
        ("CTRL_S3_ACCESS_KEY", S3_ACCESS_KEY.to_owned()),
        ("CTRL_S3_SECRET_KEY", s3_secret.clone()),
        ("CTRL_REGISTRY_URL", registry.url()),
        (
            "CTRL_BUILD_DOCKER_SOCKET",
            podman.socket().display().to_string(),
        ),
    ];
    // The worker reads repositories and reports back through the fake
    // GitHub's app; ctrl-api checks deliveries with the webhook secret.
    builds.extend(github::service_env(fake_github.url(), &webhook_secret));

    eprintln!("starting ctrl-worker on 127.0.0.1:{}", args.worker_port);
    let mut worker = start_ctrl_worker(
        &dir,
        &bin_dir.join("ctrl-worker"),
        args.worker_port,
        args.worker_health_port,
        &database_url,
        &restate,
        &builds,
    )?;
    wait_for_http(
        &mut worker,
        &format!("http://127.0.0.1:{}/health/ready", args.worker_health_port),
    )
    .await?;

    let token = secret(&dir.join("token"), 24, Encoding::Hex)?;
    let edge_token = secret(&dir.join("edge-token"), 24, Encoding::Hex)?;
    let agent_token = secret(&dir.join("agent-token"), 24, Encoding::Hex)?;
    let vault_key = secret(&dir.join("vault.key"), 32, Encoding::Base64)?;
    let secrets = Secrets {
        token: &token,
        edge_token: &edge_token,
        agent_token: &agent_token,
        vault_key: &vault_key,
    };
    eprintln!(
        "starting ctrl-api on 127.0.0.1:{} (readiness and metrics on :{})",
        args.api_port, args.api_ops_port
    );
    let api_url = format!("http://127.0.0.1:{}", args.api_port);
    let mut api_env = builds.clone();
    api_env.push((
        "CTRL_API_OPS_LISTEN",
        format!("127.0.0.1:{}", args.api_ops_port),
    ));
    let mut api = start_ctrl_api(
        &dir,
        &bin_dir.join("ctrl-api"),
        args.api_port,
        &database_url,
        secrets,
        &restate,
        &api_env,
    )?;
    wait_for_api(&mut api, &api_url).await?;
    register_agents(&database_url, secrets).await?;

    eprintln!("starting krane (region dev/local) on podman");
    let mut krane = start_krane(
        &dir,
        &bin_dir.join("krane"),
        &api_url,
        secrets,
        &podman,
        args.krane_health_port,
        &[],
    )?;
    wait_for_http(
        &mut krane,
        &format!("http://127.0.0.1:{}/health/ready", args.krane_health_port),
    )
    .await?;

    eprintln!(
        "starting frontline (the edge of dev/local) on 127.0.0.1:{} and :{}",
        args.edge_http_port, args.edge_https_port
    );
    let ca = edge_certificate(&dir, &database_url, &vault_key).await?;
    let edge = Edge {
        http: args.edge_http_port,
        https: args.edge_https_port,
        admin: args.edge_admin_port,
    };
    let mut frontline = start_frontline(
        &dir,
        &bin_dir.join("frontline"),
        &api_url,
        secrets,
        edge,
        &[],
    )?;
    wait_for_http(
        &mut frontline,
        &format!("http://127.0.0.1:{}/health/ready", args.edge_admin_port),
    )
    .await?;

    let env_file = dir.join("stack.env");
    write_private(
        &env_file,
        &format!(
            "# Written by `cargo xtask dev`; removed when the stack stops.\n\
             # Load it with: set -a; . {env}; set +a\n\
             CTRL_API_URL={api_url}\n\
             CTRL_TOKEN={token}\n\
             DATABASE_URL={database_url}\n\
             RESTATE_INGRESS_URL={ingress}\n\
             RESTATE_ADMIN_URL={admin}\n\
             CTRL_WORKSPACE={workspace}\n\
             CTRL_EDGE_HTTPS_PORT={edge_https}\n\
             CTRL_EDGE_HTTP_PORT={edge_http}\n\
             CTRL_CA_FILE={ca}\n\
             DOCKER_HOST={docker}\n\
             CTRL_GITHUB_URL={github_url}\n\
             CTRL_GITHUB_WEBHOOK_SECRET={webhook_secret}\n\
             CTRL_GITHUB_INSTALLATION={installation}\n\
             CTRL_GITHUB_REPO={repo}\n",
            env = env_file.display(),
            ingress = restate.ingress_url(),
            admin = restate.admin_url(),
            docker = podman.docker_host(),
            workspace = demo::WORKSPACE,
            edge_https = args.edge_https_port,
            edge_http = args.edge_http_port,
            ca = ca.display(),
            github_url = fake_github.url(),
            installation = github::INSTALLATION,
            repo = github::REPO,
        ),
    )?;
    let ctrl_bin = link_cli(&dir, &bin_dir)?;
    let cli = Path::new(&args.dir).join("bin/ctrl");

    println!(
        "\nctrl dev stack is up in {:.1?}\n\
         \x20 ctrl API     {api_url}  (Connect, gRPC; token in stack.env)\n\
         \x20 ctrl-worker  registered with Restate (health http://127.0.0.1:{worker_health}/health/ready)\n\
         \x20 krane        region dev/local on podman (health http://127.0.0.1:{krane_health}/health/ready)\n\
         \x20 frontline    edge of dev/local: http :{edge_http}, https :{edge_https} (CA {ca}; metrics http://127.0.0.1:{edge_admin}/metrics)\n\
         \x20 MariaDB      {database_url}\n\
         \x20 Restate      ingress {}  admin {}\n\
         \x20 Docker API   {}\n\
         \x20 S3           {s3}  (uploaded build contexts)\n\
         \x20 registry     {registry}  (built images)\n\
         \x20 GitHub       {github}  (fake: app {app_id}, installation {installation} on {repo}; push with `cargo xtask github push`)\n\
         \x20 logs         {}/{{ctrl-api.log,ctrl-worker.log,krane.log,frontline.log,mariadb/error.log,restate/restate.log,podman/service.log}}\n\
         \x20 env          {} (endpoints, API token, demo workspace, the fake GitHub's)",
        started.elapsed(),
        restate.ingress_url(),
        restate.admin_url(),
        podman.docker_host(),
        dir.display(),
        env_file.display(),
        worker_health = args.worker_health_port,
        krane_health = args.krane_health_port,
        edge_http = args.edge_http_port,
        edge_https = args.edge_https_port,
        edge_admin = args.edge_admin_port,
        ca = ca.display(),
        s3 = s3.endpoint_url(),
        registry = registry.url(),
        github = fake_github.url(),
        app_id = github::APP_ID,
        installation = github::INSTALLATION,
        repo = github::REPO,
    );

    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    eprintln!("\nsetting up the demo app {} with the ctrl CLI", demo::APP);
    let ctrl = demo::Ctrl::new(&ctrl_bin, &api_url, &token, args.edge_https_port);
    let interrupted = tokio::select! {
        demo = demo::ensure(&ctrl, &podman, &edge, &ca) => {
            match demo {
                Ok(demo) => print_demo(&demo, &cli, &dir, &env_file, &ca),
                Err(e) => eprintln!(
                    "\nthe demo deployment did not come up: {e:#}\n\
                     the stack keeps running; see {}/krane.log and {}/ctrl-worker.log",
                    dir.display(),
                    dir.display()
                ),
            }
            false
        }
        _ = interrupt.recv() => true,
        _ = terminate.recv() => true,
    };
    if !interrupted {
        println!("Press Ctrl-C to stop everything.");
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    }

    eprintln!("stopping the dev stack");
    let _ = fs::remove_file(&env_file);
    // krane leaves workloads running; podman's stop removes them.
    frontline.terminate(Duration::from_secs(10));
    krane.terminate(Duration::from_secs(15));
    api.terminate(Duration::from_secs(15));
    worker.terminate(Duration::from_secs(15));
    drop(registry);
    drop(s3);
    drop(fake_github);
    podman.stop(Duration::from_secs(10));
    restate.stop(Duration::from_secs(10));
    mariadb.stop(Duration::from_secs(30));
    let _ = fs::remove_file(dir.join("xtask-dev.pid"));
    eprintln!("stopped");
    Ok(())
}

/// What the newcomer sees last: where the demo answers and what to try.
fn print_demo(demo: &demo::Demo, cli: &Path, dir: &Path, env_file: &Path, ca: &Path) {
    let cli = cli.display();
    let app = demo::APP;
    // The CLI looks for `.dev/stack.env` from the working directory up.
    let finds_env = if dir.file_name().is_some_and(|n| n == ".dev") {
        "it reads the stack's address and token from .dev/stack.env".to_owned()
    } else {
        format!(
            "first load the stack's settings: set -a; . {}; set +a",
            env_file.display()
        )
    };
    println!(
        "\nThe demo app {app} is live ({how} {id}), through the edge:\n\
         {urls}\
         \x20 answers {body:?}   (try: curl --cacert {ca} {url})\n\
         \n\
         Try the ctrl CLI ({finds_env}):\n\
         \x20 {cli} deployments list --app {app}\n\
         \x20 {cli} logs --app {app}\n\
         \x20 {cli} deploy --app {app} --image {v2}\n\
         \x20 {cli} deploy --app {app} --context examples/hello\n\
         \x20 {cli} rollback --app {app}\n\
         \x20 {cli} env set --app {app} GREETING=hello\n\
         \x20 {cli} --help",
        how = if demo.reused { "reused" } else { "deployed" },
        id = demo.deployment,
        urls = demo
            .urls
            .iter()
            .map(|u| format!("  {u}\n"))
            .collect::<String>(),
        url = demo.urls.first().map_or("", String::as_str),
        ca = ca.display(),
        body = demo.body,
        v2 = demo::IMAGE_V2,
    );
}

/// Links `dir/bin/ctrl` to the built CLI so the printed commands work from
/// the repository root; returns the binary.
fn link_cli(dir: &Path, bin_dir: &Path) -> Result<PathBuf> {
    let bin = bin_dir.join("ctrl");
    let link_dir = dir.join("bin");
    fs::create_dir_all(&link_dir).with_context(|| format!("create {}", link_dir.display()))?;
    let link = link_dir.join("ctrl");
    let _ = fs::remove_file(&link);
    std::os::unix::fs::symlink(&bin, &link)
        .with_context(|| format!("link {} to {}", link.display(), bin.display()))?;
    Ok(bin)
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
pub(crate) async fn migrate(admin_url: &str, database_url: &str) -> Result<()> {
    let mut admin = MySqlConnection::connect(admin_url).await?;
    sqlx::query("CREATE DATABASE IF NOT EXISTS `ctrl`")
        .execute(&mut admin)
        .await?;
    let mut db = MySqlConnection::connect(database_url).await?;
    ctrl_db::migrate(&mut db)
        .await
        .context("apply the database migrations")?;
    Ok(())
}

/// The stack's API token, agent credentials and vault key, passed to the
/// services that need them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Secrets<'a> {
    pub(crate) token: &'a str,
    /// frontline's credential (EdgeService and AcmeService only).
    pub(crate) edge_token: &'a str,
    /// krane's credential (ClusterService only, as dev/local/local-1).
    pub(crate) agent_token: &'a str,
    pub(crate) vault_key: &'a str,
}

/// Registers the agents' tokens as their credentials (krane as
/// `dev/local/local-1`, frontline as `dev/local`), the way an operator does
/// with `ctrl-api agents ensure`; again on every start changes nothing.
pub(crate) async fn register_agents(database_url: &str, secrets: Secrets<'_>) -> Result<()> {
    use ctrl_cluster_sync::agents::{AgentKind, Binding, ensure};
    let db = ctrl_db::connect(database_url, 1).await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    for (kind, cell_id, token) in [
        (AgentKind::Krane, "local-1", secrets.agent_token),
        (AgentKind::Frontline, "", secrets.edge_token),
    ] {
        let binding = Binding {
            kind,
            platform: "dev",
            region: "local",
            cell_id,
            name: &format!("{} of the dev stack", kind.as_str()),
        };
        ensure(&db, &binding, token, now)
            .await
            .with_context(|| format!("register {}'s credential", kind.as_str()))?;
    }
    db.close().await;
    Ok(())
}

/// frontline's ports.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Edge {
    pub(crate) http: u16,
    pub(crate) https: u16,
    pub(crate) admin: u16,
}

/// The keyring of the platform's own certificates (not a workspace's).
const PLATFORM_KEYRING: &str = "ctrl_internal";

/// Makes the stack's CA (kept in `dir`) sign a certificate for
/// `*.{apex}` and `{apex}` and stores it the way the Certificate object
/// does (key sealed by the vault), so the edge serves it; returns the CA
/// file for `curl --cacert`.
pub(crate) async fn edge_certificate(
    dir: &Path,
    database_url: &str,
    vault_key: &str,
) -> Result<PathBuf> {
    let ca = ctrl_testkit::ca::LocalCa::load_or_create(dir)?;
    let wildcard = format!("*.{APEX}");
    let leaf = ca.leaf(&[&wildcard, APEX])?;
    let vault = ctrl_vault::Vault::new(&[ctrl_vault::KeyConfig {
        id: "dev".into(),
        base64: vault_key.to_owned(),
    }])?;
    let sealed = vault.seal(PLATFORM_KEYRING, leaf.key_pem.as_bytes())?;
    let mut conn = MySqlConnection::connect(database_url).await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let id = ctrl_core::id::generate(ctrl_core::id::IdKind::Certificate, &mut rand::rng());
    ctrl_db::certificate::upsert(
        &mut conn,
        &ctrl_db::certificate::NewCertificate {
            new_id: &id,
            workspace_id: PLATFORM_KEYRING,
            hostname: &wildcard,
            certificate: &leaf.chain_pem,
            encrypted_private_key: &sealed,
            // rcgen's default validity runs far beyond any dev stack.
            not_after: 4_096_000_000_000,
        },
        now,
    )
    .await?;
    Ok(dir.join("ca.pem"))
}

/// The apex the dev stack's hostnames live under (ctrl-worker's default).
pub(crate) const APEX: &str = "ctrl.localhost";

/// Starts frontline with `deploy/dev/frontline.toml` on `ports`.
pub(crate) fn start_frontline(
    dir: &Path,
    bin: &Path,
    api_url: &str,
    secrets: Secrets<'_>,
    ports: Edge,
    overrides: &[(&str, String)],
) -> Result<Supervised> {
    let mut cmd = std::process::Command::new(bin);
    cmd.arg("--config")
        .arg(config_file("frontline.toml"))
        .env("CTRL_API_URL", api_url)
        .env("CTRL_EDGE_TOKEN", secrets.edge_token)
        .env("CTRL_VAULT_KEY", secrets.vault_key)
        .env("FRONTLINE_HTTP_LISTEN", format!("127.0.0.1:{}", ports.http))
        .env(
            "FRONTLINE_HTTPS_LISTEN",
            format!("127.0.0.1:{}", ports.https),
        )
        .env(
            "FRONTLINE_ADMIN_LISTEN",
            format!("127.0.0.1:{}", ports.admin),
        )
        .env(
            "FRONTLINE__LISTEN__PUBLIC_HTTPS_PORT",
            ports.https.to_string(),
        )
        .envs(overrides.iter().map(|(k, v)| (*k, v)));
    Ok(Supervised::spawn(
        "frontline",
        cmd,
        &dir.join("frontline.log"),
        Some(&dir.join("frontline.pid")),
    )?)
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Encoding {
    Hex,
    Base64,
}

/// A random secret kept in `path` (mode 0600): created once, reused after.
pub(crate) fn secret(path: &Path, bytes: usize, encoding: Encoding) -> Result<String> {
    if let Ok(existing) = fs::read_to_string(path)
        && !existing.trim().is_empty()
    {
        return Ok(existing.trim().to_owned());
    }
    let mut raw = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut raw);
    let value = match encoding {
        Encoding::Hex => raw.iter().map(|b| format!("{b:02x}")).collect(),
        Encoding::Base64 => base64::engine::general_purpose::STANDARD.encode(&raw),
    };
    write_private(path, &value)?;
    Ok(value)
}

/// The packages whose binaries make the product: the services and the CLI.
pub(crate) const SERVICE_PACKAGES: &[&str] = &[
    "ctrl-api",
    "ctrl-worker",
    "ctrl-cluster-sync",
    "krane",
    "frontline",
    "ctrl-cli",
];

/// Builds the service binaries with the cargo that runs us, in `profile`
/// (`dev` or `release`); returns their directory.
pub(crate) fn build_services(profile: &str) -> Result<PathBuf> {
    eprintln!("building {} ({profile})", SERVICE_PACKAGES.join(", "));
    let mut cargo = std::process::Command::new(crate::deps::cargo());
    cargo.args(["build", "--quiet", "--bins", "--profile", profile]);
    for package in SERVICE_PACKAGES {
        cargo.args(["-p", package]);
    }
    if !cargo.status().context("run cargo build")?.success() {
        bail!("cargo build --profile {profile} of the services failed");
    }
    let dir = if profile == "dev" { "debug" } else { profile };
    Ok(target_dir().join(dir))
}

/// The repository's root directory.
pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Cargo's target directory (`CARGO_TARGET_DIR`, else `target/`).
pub(crate) fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
}

/// The local stack's config files, shared with docker-compose.yml.
fn config_file(name: &str) -> PathBuf {
    repo_root().join("deploy/dev").join(name)
}

/// Starts ctrl-worker with `deploy/dev/ctrl-worker.toml`; it registers
/// itself with Restate.
pub(crate) fn start_ctrl_worker(
    dir: &Path,
    bin: &Path,
    port: u16,
    health_port: u16,
    database_url: &str,
    restate: &RestateServer,
    overrides: &[(&str, String)],
) -> Result<Supervised> {
    let mut cmd = std::process::Command::new(bin);
    cmd.arg("--config")
        .arg(config_file("ctrl-worker.toml"))
        .env("CTRL_WORKER_LISTEN", format!("127.0.0.1:{port}"))
        .env(
            "CTRL_WORKER_REGISTER_AS",
            format!("http://127.0.0.1:{port}"),
        )
        .env(
            "CTRL_WORKER_HEALTH_LISTEN",
            format!("127.0.0.1:{health_port}"),
        )
        .env("RESTATE_ADMIN_URL", restate.admin_url())
        .env("RESTATE_INGRESS_URL", restate.ingress_url())
        .env("RESTATE_IDENTITY_KEY", restate.identity_key())
        .env("DATABASE_URL", database_url)
        .envs(overrides.iter().map(|(k, v)| (*k, v)));
    Ok(Supervised::spawn(
        "ctrl-worker",
        cmd,
        &dir.join("ctrl-worker.log"),
        Some(&dir.join("ctrl-worker.pid")),
    )?)
}

/// Waits until `url` answers 200.
pub(crate) async fn wait_for_http(process: &mut Supervised, url: &str) -> Result<()> {
    let client = ctrl_testkit::http_client();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if client
            .get(url)
            .timeout(Duration::from_millis(500))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(());
        }
        if process.exit_status().is_some() || Instant::now() > deadline {
            return Err(process
                .startup_error(format!("{url} did not answer"))
                .into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts ctrl-api with `deploy/dev/ctrl-api.toml` (secrets come in
/// through the environment); its log goes to `.dev/ctrl-api.log`.
pub(crate) fn start_ctrl_api(
    dir: &Path,
    bin: &Path,
    port: u16,
    database_url: &str,
    secrets: Secrets<'_>,
    restate: &RestateServer,
    overrides: &[(&str, String)],
) -> Result<Supervised> {
    let Secrets {
        token, vault_key, ..
    } = secrets;
    let mut cmd = std::process::Command::new(bin);
    cmd.arg("--config")
        .arg(config_file("ctrl-api.toml"))
        .arg("serve")
        .env("CTRL_API_LISTEN", format!("127.0.0.1:{port}"))
        .env("CTRL_TOKEN", token)
        .env("DATABASE_URL", database_url)
        .env("CTRL_VAULT_KEY", vault_key)
        .env("RESTATE_INGRESS_URL", restate.ingress_url())
        .env("RESTATE_ADMIN_URL", restate.admin_url())
        .envs(overrides.iter().map(|(k, v)| (*k, v)));
    Ok(Supervised::spawn(
        "ctrl-api",
        cmd,
        &dir.join("ctrl-api.log"),
        Some(&dir.join("ctrl-api.pid")),
    )?)
}

/// Starts krane with `deploy/dev/krane.toml`: the region `dev/local`,
/// talking to the ClusterService that ctrl-api serves, on the stack's podman.
pub(crate) fn start_krane(
    dir: &Path,
    bin: &Path,
    api_url: &str,
    secrets: Secrets<'_>,
    podman: &Podman,
    health_port: u16,
    overrides: &[(&str, String)],
) -> Result<Supervised> {
    let Secrets {
        token,
        agent_token,
        vault_key,
        ..
    } = secrets;
    let mut cmd = std::process::Command::new(bin);
    cmd.arg("--config")
        .arg(config_file("krane.toml"))
        .env("CTRL_API_URL", api_url)
        .env("CTRL_AGENT_TOKEN", agent_token)
        .env("CTRL_TOKEN", token)
        .env("CTRL_VAULT_KEY", vault_key)
        .env("KRANE_DOCKER_SOCKET", podman.socket())
        .env("KRANE_INIT_BINARY", ctrl_testkit::paths::ctrl_init_bin()?)
        .env("KRANE_LISTEN", format!("127.0.0.1:{health_port}"))
        .envs(overrides.iter().map(|(k, v)| (*k, v)));
    Ok(Supervised::spawn(
        "krane",
        cmd,
        &dir.join("krane.log"),
        Some(&dir.join("krane.pid")),
    )?)
}

/// Waits until ctrl-api answers CtrlService.Liveness.
pub(crate) async fn wait_for_api(api: &mut Supervised, url: &str) -> Result<()> {
    let client = ctrl_testkit::http_client();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let live = client
            .post(format!("{url}/ctrl.v1.CtrlService/Liveness"))
            .header("content-type", "application/json")
            .body("{}")
            .timeout(Duration::from_millis(500))
            .send()
            .await;
        if live.is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        if api.exit_status().is_some() || Instant::now() > deadline {
            return Err(api.startup_error("did not answer Liveness").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Writes a file readable only by its owner (it holds a secret).
fn write_private(path: &Path, contents: &str) -> Result<()> {
    fs::write(path, contents).with_context(|| format!("write {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restrict {}", path.display()))
}
