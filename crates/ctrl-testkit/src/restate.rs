//! A real `restate-server` on loopback ports.
//!
//! Tests get a fresh server with its own data directory and free ports, tuned
//! for speed (one partition, a 1 s retry-backoff cap so a restarted service is
//! retried at once, small RocksDB budget, no WAL fsync for throwaway data). The dev stack uses the same type
//! with fixed ports and a persistent data directory.
//!
//! Every server signs its requests to services (Restate's request identity)
//! with an Ed25519 key kept in its directory; [`RestateServer::identity_key`]
//! is the public half a worker is configured to require.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use tempfile::TempDir;

use crate::process::{Supervised, wait_ready};
use crate::{Error, free_ports, http_client, paths, reaper};

/// How to start a Restate server; see [`RestateServer::builder`].
#[derive(Debug, Clone)]
pub struct RestateBuilder {
    data_dir: Option<PathBuf>,
    ports: Option<RestatePorts>,
    fast_retries: bool,
    inactivity_timeout: Option<Duration>,
    log_filter: String,
    startup_timeout: Duration,
}

/// The three ports of a single-node server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestatePorts {
    /// Ingress (invoking handlers): Restate's default is 8080.
    pub ingress: u16,
    /// Admin API (registration, invocations, SQL): default 9070.
    pub admin: u16,
    /// Node-to-node fabric and metrics: default 5122.
    pub fabric: u16,
}

impl RestatePorts {
    fn free() -> Result<Self, Error> {
        let [ingress, admin, fabric] = free_ports()?;
        Ok(Self {
            ingress,
            admin,
            fabric,
        })
    }
}

impl RestateBuilder {
    /// Keep the server's data in `dir` (created if missing) instead of a
    /// throwaway directory; the directory is not deleted on drop.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Use these ports instead of free ones.
    pub fn ports(mut self, ports: RestatePorts) -> Self {
        self.ports = Some(ports);
        self
    }

    /// Cap invocation retry backoff at 1 s (default `true`; Restate's own
    /// default grows to 1 min, which makes recovery tests slow).
    pub fn fast_retries(mut self, on: bool) -> Self {
        self.fast_retries = on;
        self
    }

    /// Suspend idle invocations after this long (Restate's default is 1 min);
    /// lower it to exercise suspension and resumption.
    pub fn inactivity_timeout(mut self, timeout: Duration) -> Self {
        self.inactivity_timeout = Some(timeout);
        self
    }

    /// The server's log filter (default: warnings, plus the few lines that
    /// trace startup, so a stalled start shows how far it got).
    pub fn log_filter(mut self, filter: impl Into<String>) -> Self {
        self.log_filter = filter.into();
        self
    }

    /// Starts the server and waits until admin and ingress are healthy.
    pub async fn start(self) -> Result<RestateServer, Error> {
        let binary = paths::restate_server_bin()?;
        let (dir, scratch) = reaper::instance_dir(self.data_dir.as_deref(), "restate-")?;
        let identity = identity_key(&dir)?;
        // Free ports can be taken by a parallel test between our probe and the
        // server's bind, and on a loaded machine a fresh server has been seen
        // to stall silently during its first start. Both are retried (bounded)
        // on new ports and, for a throwaway directory, fresh data.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let ports = match self.ports {
                Some(p) => p,
                None => RestatePorts::free()?,
            };
            let mut server = RestateServer {
                binary: binary.clone(),
                dir: dir.clone(),
                ports,
                options: self.clone(),
                identity: identity.clone(),
                process: None,
                client: http_client(),
                _scratch: None,
            };
            match server.spawn().await {
                Ok(()) => {
                    server._scratch = scratch;
                    return Ok(server);
                }
                Err(e) if attempt < START_ATTEMPTS && self.may_retry(&e, scratch.is_some()) => {
                    eprintln!("restate-server: attempt {attempt} failed, starting again: {e}");
                    if scratch.is_some() {
                        remove_data(&dir)?;
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether a failed start is worth another attempt: only with ports we
    /// chose (a fixed port in use stays in use), and a stall only when the
    /// data is ours to throw away.
    fn may_retry(&self, error: &Error, throwaway: bool) -> bool {
        let Error::Startup { reason, tail, .. } = error else {
            return false;
        };
        self.ports.is_none()
            && (tail.contains("in use") || (throwaway && reason.starts_with("not ready")))
    }
}

/// The server's request-identity key (PKCS#8 PEM) in its directory.
const IDENTITY_FILE: &str = "identity.pem";

/// The public half of the server's request-identity key in `dir`, as
/// `publickeyv1_<base58 of the raw Ed25519 key>`; the key is made (and kept
/// private to its owner) when the directory has none.
fn identity_key(dir: &Path) -> Result<String, Error> {
    use base64::Engine as _;
    use ring::signature::KeyPair as _;
    let engine = base64::engine::general_purpose::STANDARD;
    let path = dir.join(IDENTITY_FILE);
    let bad = |what: &str| {
        Error::io(
            format!("{what} {}", path.display()),
            std::io::ErrorKind::InvalidData.into(),
        )
    };
    let der = match std::fs::read_to_string(&path) {
        Ok(pem) => {
            let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
            engine.decode(body).map_err(|_| bad("decode"))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let rng = ring::rand::SystemRandom::new();
            let der = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)
                .map_err(|_| bad("generate"))?
                .as_ref()
                .to_vec();
            let encoded = engine.encode(&der);
            let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
            for line in encoded.as_bytes().chunks(64) {
                pem.push_str(&String::from_utf8_lossy(line));
                pem.push('\n');
            }
            pem.push_str("-----END PRIVATE KEY-----\n");
            write_private(&path, &pem)?;
            der
        }
        Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
    };
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
        .map_err(|_| bad("parse"))?;
    Ok(format!(
        "publickeyv1_{}",
        bs58::encode(pair.public_key().as_ref()).into_string()
    ))
}

fn write_private(path: &Path, contents: &str) -> Result<(), Error> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(format!("create {}", path.display()), e))?;
    file.write_all(contents.as_bytes())
        .map_err(|e| Error::io(format!("write {}", path.display()), e))
}

/// How many times [`RestateBuilder::start`] tries before giving up.
const START_ATTEMPTS: u32 = 3;

/// Empties a throwaway server's data so the next attempt starts fresh.
fn remove_data(dir: &Path) -> Result<(), Error> {
    let data = dir.join("data");
    match std::fs::remove_dir_all(&data) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(Error::io(format!("remove {}", data.display()), e))
        }
        _ => Ok(()),
    }
}

/// Warnings, and the startup milestones: node provisioning, the listeners.
const STARTUP_LOG_FILTER: &str = "warn,restate_node=info,restate_core::network::net_util=info,\
restate_ingress_http::server=info,restate_admin::service=info";

/// A running `restate-server`; killed (and its throwaway data deleted) on drop.
#[derive(Debug)]
pub struct RestateServer {
    binary: PathBuf,
    dir: PathBuf,
    ports: RestatePorts,
    options: RestateBuilder,
    identity: String,
    process: Option<Supervised>,
    client: reqwest::Client,
    // Declared last: the directory is removed after the process is killed.
    _scratch: Option<TempDir>,
}

impl RestateServer {
    /// A builder with test defaults: throwaway data, free ports, fast retries.
    pub fn builder() -> RestateBuilder {
        RestateBuilder {
            data_dir: None,
            ports: None,
            fast_retries: true,
            inactivity_timeout: None,
            log_filter: STARTUP_LOG_FILTER.into(),
            startup_timeout: Duration::from_secs(40),
        }
    }

    /// Starts a server with the test defaults.
    pub async fn start() -> Result<Self, Error> {
        Self::builder().start().await
    }

    /// The ingress base URL, e.g. `http://127.0.0.1:8080`.
    pub fn ingress_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.ingress)
    }

    /// The admin API base URL, e.g. `http://127.0.0.1:9070`.
    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.admin)
    }

    /// The ports in use.
    pub fn ports(&self) -> RestatePorts {
        self.ports
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    /// The public key its requests to services are signed with, as a
    /// worker's `restate.identity_keys` takes it (`publickeyv1_…`).
    pub fn identity_key(&self) -> &str {
        &self.identity
    }

    /// The server's pid, while it runs.
    pub fn pid(&self) -> Option<i32> {
        self.process.as_ref().map(|p| p.id().pid)
    }

    /// Registers (or re-registers, with `force`) a service endpoint served
    /// over h2c at `uri`, and returns the admin API's answer.
    pub async fn register(&self, uri: &str) -> Result<serde_json::Value, Error> {
        let context = format!("register the Restate endpoint {uri}");
        let response = self
            .client
            .post(format!("{}/deployments", self.admin_url()))
            .json(&json!({ "uri": uri, "force": true }))
            .send()
            .await
            .map_err(|e| Error::request(&context, e))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| Error::request(&context, e))?;
        if !status.is_success() {
            return Err(Error::request(context, format!("{status}: {body}")));
        }
        serde_json::from_str(&body).map_err(|e| Error::request(context, e))
    }

    /// Serves `endpoint` (stand-ins for the worker's services, or the real
    /// ones) on a loopback port for as long as the current runtime runs,
    /// and registers it.
    pub async fn serve_and_register(
        &self,
        endpoint: restate_sdk::prelude::Endpoint,
    ) -> Result<(), Error> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| Error::io("bind a port for the Restate endpoint", e))?;
        let uri = format!(
            "http://{}",
            listener
                .local_addr()
                .map_err(|e| Error::io("read the endpoint's address", e))?
        );
        let server = restate_sdk::prelude::HttpServer::new(endpoint);
        tokio::spawn(async move {
            server
                .serve_with_cancel(listener, std::future::pending::<()>())
                .await;
        });
        self.register(&uri).await.map(|_| ())
    }

    /// Kills the server with SIGKILL, keeping its data directory and ports
    /// (to simulate a crash; follow with [`RestateServer::restart`]).
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// Stops the server gracefully (SIGTERM, then SIGKILL after `grace`).
    pub fn stop(&mut self, grace: Duration) {
        if let Some(mut process) = self.process.take() {
            process.terminate(grace);
        }
    }

    /// Starts the server again on the same data directory and ports.
    pub async fn restart(&mut self) -> Result<(), Error> {
        self.kill();
        self.spawn().await
    }

    async fn spawn(&mut self) -> Result<(), Error> {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--no-logo")
            .arg("--base-dir")
            .arg(self.dir.join("data"))
            .args(["--log-disable-ansi-codes", "true"]);
        // Only our settings: a RESTATE_* variable in the caller's environment
        // (the dev stack exports RESTATE_ADMIN_URL, say) must not leak in.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("RESTATE_") {
                cmd.env_remove(key);
            }
        }
        let o = &self.options;
        cmd.env("RESTATE_BIND_IP", "127.0.0.1")
            .env("RESTATE_LISTEN_MODE", "tcp")
            .env("RESTATE_NODE_NAME", "ctrl")
            .env("RESTATE_DISABLE_TELEMETRY", "true")
            .env("RESTATE_DEFAULT_NUM_PARTITIONS", "1")
            .env("RESTATE_ROCKSDB_TOTAL_MEMORY_SIZE", "256MiB")
            .env("RESTATE_LOG_FILTER", &o.log_filter)
            .env("RESTATE_INGRESS__BIND_PORT", self.ports.ingress.to_string())
            .env("RESTATE_ADMIN__BIND_PORT", self.ports.admin.to_string())
            .env("RESTATE_BIND_PORT", self.ports.fabric.to_string())
            .env(
                "RESTATE_WORKER__INVOKER__REQUEST_IDENTITY_PRIVATE_KEY_PEM_FILE",
                self.dir.join(IDENTITY_FILE),
            );
        if o.data_dir.is_none() {
            // Throwaway data: write the logs' WAL without fsync. A SIGKILL
            // (the crash tests) still loses nothing, and a busy disk cannot
            // stall the server for seconds.
            cmd.env("RESTATE_LOG_SERVER__ROCKSDB_DISABLE_WAL_FSYNC", "true")
                .env("RESTATE_BIFROST__LOCAL__ROCKSDB_DISABLE_WAL_FSYNC", "true");
        }
        if o.fast_retries {
            cmd.env("RESTATE_DEFAULT_RETRY_POLICY__MAX_INTERVAL", "1s");
        }
        if let Some(t) = o.inactivity_timeout {
            cmd.env(
                "RESTATE_WORKER__INVOKER__INACTIVITY_TIMEOUT",
                format!("{}ms", t.as_millis()),
            );
        }
        let log = self.dir.join("restate.log");
        let pid_file = self.dir.join("restate.pid");
        let mut process = Supervised::spawn("restate-server", cmd, &log, Some(&pid_file))?;
        let (admin, ingress) = (
            format!("{}/health", self.admin_url()),
            format!("{}/restate/health", self.ingress_url()),
        );
        let client = &self.client;
        wait_ready(&mut process, o.startup_timeout, || async {
            is_ok(client, &admin).await && is_ok(client, &ingress).await
        })
        .await?;
        self.process = Some(process);
        Ok(())
    }
}

/// A readiness probe: a quick request, so a port held by something that
/// accepts but never answers cannot stall the startup loop.
async fn is_ok(client: &reqwest::Client, url: &str) -> bool {
    client
        .get(url)
        .timeout(Duration::from_millis(500))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}
