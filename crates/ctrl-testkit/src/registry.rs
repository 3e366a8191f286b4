//! A real container registry on a loopback port: Debian's
//! `docker-registry` (distribution/registry 2.8) over a fresh directory.
//!
//! It serves the Docker Registry HTTP API v2 over plain HTTP, without
//! authentication or with a Basic login ([`Registry::start_with_login`]),
//! from a generated config; images pushed to it live in a
//! throwaway directory. Like the other handles, it runs as a supervised child
//! and is killed on drop (see [`crate::process`]).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use crate::acme::{fresh_log, retry_on_port_clash};
use crate::process::{Supervised, wait_ready};
use crate::{Error, free_port, http_client, paths, reaper};

/// How long the registry may take to become ready.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// `docker-registry serve` on a free loopback port, storing images in a
/// fresh directory; killed on drop.
#[derive(Debug)]
pub struct Registry {
    process: Supervised,
    port: u16,
    // Declared last: the directory is removed after the process is killed.
    _scratch: Option<TempDir>,
}

impl Registry {
    /// Starts the registry (the apt package `docker-registry`, which
    /// `cargo xtask deps` installs) and waits until `GET /v2/` answers 200.
    pub async fn start() -> Result<Self, Error> {
        Self::start_in(None, None).await
    }

    /// [`Registry::start`], keeping the images in `dir` (kept after the
    /// registry stops: the dev stack's images outlive a restart) and
    /// listening on `port` when given.
    pub async fn start_in(dir: Option<&Path>, fixed_port: Option<u16>) -> Result<Self, Error> {
        Self::start_inner(dir, fixed_port, None).await
    }

    /// [`Registry::start`] asking for a login: every API call needs Basic
    /// auth as `user` with `password` (an htpasswd file with its bcrypt
    /// hash, as operators configure distribution), else 401 with a
    /// `WWW-Authenticate: Basic` challenge.
    pub async fn start_with_login(user: &str, password: &str) -> Result<Self, Error> {
        Self::start_inner(None, None, Some((user, password))).await
    }

    async fn start_inner(
        dir: Option<&Path>,
        fixed_port: Option<u16>,
        login: Option<(&str, &str)>,
    ) -> Result<Self, Error> {
        let binary = paths::system_program("docker-registry")?;
        let (dir, scratch) = reaper::instance_dir(dir, "registry-")?;
        let data = dir.join("data");
        std::fs::create_dir_all(&data)
            .map_err(|e| Error::io(format!("create {}", data.display()), e))?;
        let htpasswd = match login {
            Some((user, password)) => {
                let hash = bcrypt::hash(password, 4)
                    .map_err(|e| Error::request("hash the registry password", e))?;
                let path = dir.join("htpasswd");
                std::fs::write(&path, format!("{user}:{hash}\n"))
                    .map_err(|e| Error::io(format!("write {}", path.display()), e))?;
                Some(path)
            }
            None => None,
        };
        let client = http_client();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = match fixed_port {
                Some(port) => port,
                None => free_port()?,
            };
            let config = dir.join("config.yml");
            std::fs::write(&config, config_yaml(&data, port, htpasswd.as_deref()))
                .map_err(|e| Error::io(format!("write {}", config.display()), e))?;
            let mut cmd = Command::new(&binary);
            cmd.arg("serve").arg(&config).current_dir(&dir);
            // Only our config: REGISTRY_* variables override it.
            for (key, _) in std::env::vars_os() {
                if key.to_string_lossy().starts_with("REGISTRY_") {
                    cmd.env_remove(key);
                }
            }
            let log = fresh_log(&dir, "registry.log")?;
            let mut process = Supervised::spawn(
                "docker-registry",
                cmd,
                &log,
                Some(&dir.join("registry.pid")),
            )?;
            let url = format!("http://127.0.0.1:{port}/v2/");
            let ready = wait_ready(&mut process, STARTUP_TIMEOUT, || async {
                let mut request = client.get(&url).timeout(Duration::from_millis(500));
                if let Some((user, password)) = login {
                    request = request.basic_auth(user, Some(password));
                }
                request.send().await.is_ok_and(|r| r.status().is_success())
            })
            .await;
            match ready {
                Ok(()) => {
                    return Ok(Self {
                        process,
                        port,
                        _scratch: scratch,
                    });
                }
                Err(e)
                    if fixed_port.is_none()
                        && retry_on_port_clash("docker-registry", attempt, &e) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The registry's address for image names, e.g. `127.0.0.1:5000`
    /// (`127.0.0.1:5000/hello:1`).
    pub fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The API's base URL, e.g. `http://127.0.0.1:5000` (append `/v2/...`).
    pub fn url(&self) -> String {
        format!("http://{}", self.host_port())
    }

    /// The registry's pid.
    pub fn pid(&self) -> i32 {
        self.process.id().pid
    }

    /// The registry's log (one line per request).
    pub fn log_path(&self) -> &Path {
        self.process.log_path()
    }
}

/// The registry's configuration: filesystem storage in `data`, plain HTTP
/// on `127.0.0.1:port`, deletes allowed, and Basic auth from `htpasswd`
/// when given (none otherwise).
fn config_yaml(data: &Path, port: u16, htpasswd: Option<&Path>) -> String {
    let secret = format!("{:032x}", rand::random::<u128>());
    let auth = htpasswd.map_or_else(String::new, |path| {
        format!(
            "auth:\n  htpasswd:\n    realm: ctrl-testkit\n    path: \"{}\"\n",
            path.display()
        )
    });
    format!(
        "# Written by ctrl-testkit.
version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: \"{data}\"
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:{port}
  secret: {secret}
{auth}",
        data = data.display()
    )
}
