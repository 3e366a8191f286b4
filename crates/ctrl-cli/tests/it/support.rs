//! The stack the CLI talks to, in this process on loopback ports (the
//! services' binaries belong to other packages), and the `ctrl` binary run
//! as a user runs it.

use std::collections::HashMap;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ctrl_testkit::{
    ChallTestSrv, InProcess, Podman, Registry, RestateServer, S3Server, free_ports, images,
    wait_until_ok,
};

pub(crate) const TOKEN: &str = "cli-test-token-0123456789";
const VAULT_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
pub(crate) const V1: &str = "localhost/cli-demo:v1";
pub(crate) const V2: &str = "localhost/cli-demo:v2";
/// How long the worker waits for instances before failing a deployment.
pub(crate) const READINESS_TIMEOUT_SECONDS: u64 = 8;
/// Where custom domains' CNAMEs point (`{random}.CNAME_DOMAIN`).
pub(crate) const CNAME_DOMAIN: &str = "edge.cli.test";

/// Every service of a one-region installation; dropping it stops them.
pub(crate) struct Stack {
    pub(crate) api_url: String,
    /// krane's HTTP port (health, metrics, logs).
    pub(crate) krane_url: String,
    /// A working directory without a `.dev/stack.env` above it.
    pub(crate) cwd: tempfile::TempDir,
    // Stopped first (fields drop in order), then the servers they use.
    _services: InProcess,
    /// The database (for rows only a webhook would make).
    pub(crate) db: ctrl_testkit::TestDatabase,
    _podman: Podman,
    _restate: RestateServer,
    _s3: S3Server,
    _registry: Registry,
    /// krane's secrets directory (a tmpfs), this stack's only.
    _secrets: tempfile::TempDir,
    /// The DNS server the worker checks custom domains' records with.
    pub(crate) dns: ChallTestSrv,
}

fn parse<T: serde::de::DeserializeOwned + ctrl_runtime::config::Validate>(
    text: &str,
    prefix: &str,
) -> Result<T> {
    ctrl_runtime::config::parse(text, "test.toml", &HashMap::new(), prefix)
        .map_err(|e| anyhow::anyhow!("{e}"))
}

impl Stack {
    pub(crate) async fn start() -> Result<Self> {
        let restate = RestateServer::start().await?;
        let db = ctrl_testkit::test_database().await?;
        let podman = Podman::start().await?;
        let dns = ChallTestSrv::start().await?;
        // Builds from source: `FROM busybox` without a pull, a registry to
        // push to, S3 for the uploads.
        let (s3, registry) = tokio::try_join!(S3Server::start(), Registry::start())?;
        podman.import_busybox_image("docker.io/library/busybox:latest")?;
        let build_contexts = format!(
            "[build_contexts]\nendpoint = \"{}\"\nbucket = \"contexts\"\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\nforce_path_style = true\n",
            s3.endpoint_url(),
            s3.access_key(),
            s3.secret_key()
        );
        images::build_http_image(podman.docker(), V1).await?;
        images::derive_image(podman.docker(), V1, V2, &[("VERSION", "v2")]).await?;
        let [worker_port, worker_health, api_port, krane_health] = free_ports()?;
        let mut services = InProcess::default();

        let worker: ctrl_worker::config::Config = parse(
            &format!(
                "[restate]\nlisten = \"127.0.0.1:{worker_port}\"\nadmin_url = \"{admin}\"\nregister_as = \"http://127.0.0.1:{worker_port}\"\nidentity_keys = [\"{identity}\"]\n\
                 [database]\nurl = \"{url}\"\n[health]\nlisten = \"127.0.0.1:{worker_health}\"\n\
                 [deploy]\nreadiness_timeout_seconds = {READINESS_TIMEOUT_SECONDS}\n\
                 [custom_domains]\nnameservers = [\"{dns_addr}\"]\ncheck_interval_seconds = 1\n\
                 [build]\nbackend = \"docker\"\ndocker_socket = \"{socket}\"\n\
                 [registry]\nurl = \"{registry}\"\n\
                 {build_contexts}create_bucket = true\n",
                admin = restate.admin_url(),
                identity = restate.identity_key(),
                url = db.url,
                dns_addr = dns.dns_addr(),
                socket = podman.socket().display(),
                registry = registry.url(),
            ),
            ctrl_worker::config::ENV_PREFIX,
        )?;
        let pool = db.pool.clone();
        services.spawn("ctrl-worker", move |stop| async move {
            ctrl_worker::startup::run(&worker, pool, stop.wait()).await
        });

        // ctrl-api serving the agents' ClusterService too, as in the dev stack.
        let api: ctrl_api::config::Config = parse(
            &format!(
                "[http]\nlisten = \"127.0.0.1:{api_port}\"\nops_listen = \"127.0.0.1:0\"\n[auth]\ntokens = [\"{TOKEN}\"]\n[database]\nurl = \"{url}\"\n\
                 [vault]\nkeys = [{{ id = \"k1\", key = \"{VAULT_KEY}\" }}]\n\
                 [restate]\ningress_url = \"{ingress}\"\nadmin_url = \"{admin}\"\n\
                 [cluster_sync]\npoll_interval_ms = 50\nlog_poll_interval_ms = 50\n\
                 [custom_domains]\ncname_domain = \"{CNAME_DOMAIN}\"\n{build_contexts}",
                url = db.url,
                ingress = restate.ingress_url(),
                admin = restate.admin_url(),
            ),
            ctrl_api::config::ENV_PREFIX,
        )?;
        let listener = tokio::net::TcpListener::bind(api.http.listen).await?;
        let pool = db.pool.clone();
        services.spawn("ctrl-api", move |stop| async move {
            ctrl_api::server::serve(&api, listener, pool, stop.wait()).await
        });
        let api_url = format!("http://127.0.0.1:{api_port}");

        // krane's own credential, issued the way an operator does.
        let cwd = tempfile::tempdir()?;
        wait_until_ok(&format!("{api_url}/health/live"), Duration::from_secs(30)).await?;
        let issued = run_ctrl(
            &[
                "regions",
                "agents",
                "add",
                "--kind",
                "krane",
                "--platform",
                "dev",
                "--region",
                "local",
                "--cell",
                "local-1",
                "-o",
                "json",
            ],
            &[("CTRL_API_URL", api_url.as_str()), ("CTRL_TOKEN", TOKEN)],
            cwd.path(),
        )
        .await?;
        if !issued.success() {
            bail!("ctrl regions agents add failed: {issued}");
        }
        let agent_token = serde_json::from_str::<serde_json::Value>(&issued.stdout)?["token"]
            .as_str()
            .context("the issued credential's token")?
            .to_owned();

        let secrets = tempfile::tempdir_in("/dev/shm")?;
        let krane: krane::config::Config = parse(
            &format!(
                "[cluster]\nplatform = \"dev\"\nregion = \"local\"\ncell_id = \"local-1\"\n\
                 [control]\nurl = \"{api_url}\"\ntoken = \"{agent_token}\"\n\
                 [docker]\nsocket = \"{socket}\"\ndrain_delay_ms = 200\ninit_binary = \"{init}\"\nsecrets_dir = \"{secrets_dir}\"\n\
                 [vault]\nkeys = [{{ id = \"k1\", key = \"{VAULT_KEY}\" }}]\n\
                 [agent]\nreconcile_seconds = 2\nreport_seconds = 1\nreconnect_min_ms = 100\nreconnect_max_ms = 300\n\
                 [http]\nlisten = \"127.0.0.1:{krane_health}\"\n",
                socket = podman.socket().display(),
                init = ctrl_testkit::paths::ctrl_init_bin()?.display(),
                secrets_dir = secrets.path().display(),
            ),
            krane::config::ENV_PREFIX,
        )?;
        services.spawn("krane", move |stop| async move {
            krane::run::run(&krane, stop.wait()).await
        });

        let stack = Self {
            api_url,
            krane_url: format!("http://127.0.0.1:{krane_health}"),
            cwd,
            _services: services,
            db,
            _podman: podman,
            _restate: restate,
            _s3: s3,
            _registry: registry,
            _secrets: secrets,
            dns,
        };
        // Ready once krane registered its region (deployments need one).
        wait_until_ok(
            &format!("{}/health/ready", stack.krane_url),
            Duration::from_secs(60),
        )
        .await?;
        Ok(stack)
    }

    /// The stack's address and token, as stack.env gives them.
    fn env(&self) -> [(&str, &str); 2] {
        [
            ("CTRL_API_URL", self.api_url.as_str()),
            ("CTRL_TOKEN", TOKEN),
        ]
    }

    /// Runs `ctrl args…` with the stack's address and token in the
    /// environment, as after sourcing stack.env.
    pub(crate) async fn ctrl(&self, args: &[&str]) -> Result<Run> {
        run_ctrl(args, &self.env(), self.cwd.path()).await
    }

    /// Starts `ctrl args…` as [`Stack::ctrl`] does, without waiting: its
    /// output is piped, and it is killed when dropped.
    pub(crate) fn spawn_ctrl(&self, args: &[&str]) -> Result<tokio::process::Child> {
        Ok(ctrl_command(args, &self.env(), self.cwd.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?)
    }

    /// Runs `ctrl args…` and fails unless it exits 0.
    pub(crate) async fn ok(&self, args: &[&str]) -> Result<Run> {
        let run = self.ctrl(args).await?;
        if !run.success() {
            bail!("ctrl {} failed:\n{run}", args.join(" "));
        }
        Ok(run)
    }

    /// Runs `ctrl -o json args…` and parses its stdout.
    pub(crate) async fn json(&self, args: &[&str]) -> Result<serde_json::Value> {
        let mut all = vec!["-o", "json"];
        all.extend_from_slice(args);
        let run = self.ok(&all).await?;
        serde_json::from_str(&run.stdout)
            .with_context(|| format!("ctrl {} printed no JSON:\n{run}", all.join(" ")))
    }
}

/// A finished `ctrl` run.
pub(crate) struct Run {
    pub(crate) code: Option<i32>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Run {
    pub(crate) fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs the real binary with only `env` (and PATH) in its environment, in
/// `cwd`, without a terminal; bounded so a hang fails the test.
pub(crate) async fn run_ctrl(args: &[&str], env: &[(&str, &str)], cwd: &Path) -> Result<Run> {
    let mut cmd = ctrl_command(args, env, cwd);
    let out: Output = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .with_context(|| format!("ctrl {} did not finish within 120 s", args.join(" ")))??;
    Ok(Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// The real binary with only `env` (and PATH) in its environment, in `cwd`,
/// without a terminal; killed when dropped.
fn ctrl_command(args: &[&str], env: &[(&str, &str)], cwd: &Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_ctrl"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .current_dir(cwd)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// The instance URL a successful `ctrl deploy` printed.
pub(crate) fn instance_url(stdout: &str) -> Result<String> {
    stdout
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("http://127.0.0.1:"))
        .and_then(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .with_context(|| format!("no instance URL in:\n{stdout}"))
}

/// The deployment id in `✓ d_… is ready` (or any line naming one).
pub(crate) fn deployment_id(text: &str) -> Result<String> {
    text.split_whitespace()
        .find(|w| w.starts_with("d_"))
        .map(|w| w.trim_end_matches([',', ':', '.']).to_owned())
        .with_context(|| format!("no deployment id in:\n{text}"))
}

/// GETs `url` and returns the body.
pub(crate) async fn fetch(url: &str) -> Result<String> {
    Ok(ctrl_testkit::http_client()
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?)
}
