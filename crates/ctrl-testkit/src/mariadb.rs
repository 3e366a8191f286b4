//! A real MariaDB server on a loopback port, and fresh databases in it.
//!
//! `mariadb-install-db` is most of a cold start (2–4 s here), so it runs once
//! per MariaDB version into a cached *template* data directory; each instance
//! starts from a copy of it (a fraction of a second). The server gets a user
//! `ctrl`/`ctrl` with all privileges on `127.0.0.1`, created at every start by
//! an init file, so instances never depend on how the template was made.
//!
//! Tests call [`test_database`]: one server per test process (or the server
//! the test command shares with the whole run through
//! `CTRL_TESTKIT_MYSQL_URL`), one new database per call, migrations applied.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rand::Rng;
use sqlx::mysql::{MySqlConnection, MySqlPool, MySqlPoolOptions};
use sqlx::{AssertSqlSafe, Connection};
use tempfile::TempDir;
use tokio::sync::OnceCell;

use crate::process::{Supervised, wait_ready};
use crate::{Error, free_port, paths, reaper};

/// Environment variable naming an already running server (as an admin URL
/// without a database, `mysql://ctrl:ctrl@127.0.0.1:PORT`) that
/// [`test_database`] uses instead of starting its own.
pub const SHARED_URL_ENV: &str = "CTRL_TESTKIT_MYSQL_URL";

const USER: &str = "ctrl";
const PASSWORD: &str = "ctrl";

/// How to start a MariaDB server; see [`MariaDb::builder`].
#[derive(Debug, Clone)]
pub struct MariaDbBuilder {
    dir: Option<PathBuf>,
    port: Option<u16>,
    startup_timeout: Duration,
}

impl MariaDbBuilder {
    /// Keep the server in `dir` (data in `dir/data`, created from the template
    /// if missing); the directory is not deleted on drop.
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// Listen on this port instead of a free one.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Starts the server and waits until the `ctrl` user can connect.
    pub async fn start(self) -> Result<MariaDb, Error> {
        let server = paths::system_program("mariadbd")?;
        let template = template_datadir(&server)?;
        let (dir, scratch) = reaper::instance_dir(self.dir.as_deref(), "mariadb-")?;
        let data = dir.join("data");
        if !data.join("mysql").is_dir() {
            copy_dir(&template, &data)?;
        }
        let init_sql = dir.join("init.sql");
        fs::write(
            &init_sql,
            format!(
                "CREATE USER IF NOT EXISTS '{USER}'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}';\n\
                 GRANT ALL PRIVILEGES ON *.* TO '{USER}'@'127.0.0.1' WITH GRANT OPTION;\n"
            ),
        )
        .map_err(|e| Error::io("write the MariaDB init file", e))?;

        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = match self.port {
                Some(p) => p,
                None => free_port()?,
            };
            let mut cmd = Command::new(&server);
            cmd.arg("--no-defaults")
                .arg(format!("--datadir={}", data.display()))
                .arg(format!("--socket={}", dir.join("mysqld.sock").display()))
                .arg(format!("--pid-file={}", dir.join("mysqld.pid").display()))
                .arg(format!("--log-error={}", dir.join("error.log").display()))
                .arg(format!("--init-file={}", init_sql.display()))
                .arg(format!("--port={port}"))
                .args(SERVER_FLAGS);
            if nix::unistd::geteuid().is_root() {
                cmd.arg("--user=root");
            }
            // mariadbd writes to --log-error; its stdout/stderr get early failures.
            let log = dir.join("mariadbd.log");
            let mut process = Supervised::spawn(
                "mariadbd",
                cmd,
                &log,
                Some(&dir.join("mariadbd.testkit.pid")),
            )?;
            let url = format!("mysql://{USER}:{PASSWORD}@127.0.0.1:{port}");
            let ready = wait_ready(&mut process, self.startup_timeout, || async {
                match MySqlConnection::connect(&url).await {
                    Ok(conn) => conn.close().await.is_ok(),
                    Err(_) => false,
                }
            })
            .await;
            match ready {
                Ok(()) => {
                    return Ok(MariaDb {
                        process,
                        port,
                        dir,
                        _scratch: scratch,
                    });
                }
                Err(_) if self.port.is_none() && attempt < 3 && port_clash(&dir) => continue,
                Err(Error::Startup { name, reason, .. }) => {
                    // The useful messages are in the error log, not stdout.
                    let log = dir.join("error.log");
                    let tail = crate::process::log_tail(&log, 40);
                    return Err(Error::Startup {
                        name,
                        reason,
                        log,
                        tail,
                    });
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Settings for a light, fast, throwaway server that behaves like MySQL 8's
/// defaults where it matters (utf8mb4, binary collation).
const SERVER_FLAGS: &[&str] = &[
    "--bind-address=127.0.0.1",
    "--skip-name-resolve",
    "--skip-log-bin",
    "--innodb-buffer-pool-size=64M",
    "--innodb-log-file-size=16M",
    "--innodb-flush-log-at-trx-commit=2",
    "--character-set-server=utf8mb4",
    "--collation-server=utf8mb4_bin",
    "--max-connections=1000",
];

fn port_clash(dir: &Path) -> bool {
    crate::process::log_tail(&dir.join("error.log"), 20).contains("Address already in use")
}

/// A running MariaDB server; killed (and throwaway data deleted) on drop.
#[derive(Debug)]
pub struct MariaDb {
    process: Supervised,
    port: u16,
    dir: PathBuf,
    // Declared last: the directory is removed after the process is killed.
    _scratch: Option<TempDir>,
}

impl MariaDb {
    /// A builder with test defaults: throwaway directory, free port.
    pub fn builder() -> MariaDbBuilder {
        MariaDbBuilder {
            dir: None,
            port: None,
            startup_timeout: Duration::from_secs(60),
        }
    }

    /// Starts a server with the test defaults.
    pub async fn start() -> Result<Self, Error> {
        Self::builder().start().await
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's pid.
    pub fn pid(&self) -> i32 {
        self.process.id().pid
    }

    /// The server's directory (data, socket, logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A URL for the `ctrl` user with no database selected.
    pub fn admin_url(&self) -> String {
        format!("mysql://{USER}:{PASSWORD}@127.0.0.1:{}", self.port)
    }

    /// A URL for the `ctrl` user on database `name`.
    pub fn database_url(&self, name: &str) -> String {
        format!("{}/{name}", self.admin_url())
    }

    /// Stops the server gracefully (SIGTERM, then SIGKILL after `grace`).
    pub fn stop(mut self, grace: Duration) {
        self.process.terminate(grace);
    }

    /// Kills the server with SIGKILL (a crash: nothing is flushed); a
    /// server started with [`MariaDbBuilder::dir`] keeps its data, so the
    /// same builder starts it again.
    pub fn kill(mut self) {
        self.process.kill();
    }
}

/// A fresh database with the migrations applied; see [`test_database`].
#[derive(Debug)]
pub struct TestDatabase {
    /// A pool connected to the database.
    pub pool: MySqlPool,
    /// The database's name (`t_` and random hex).
    pub name: String,
    /// A URL connecting to it, for processes under test.
    pub url: String,
}

/// Creates a new database on the shared server, applies the migrations and
/// returns a pool for it. Each call gets its own database, so tests are
/// isolated while sharing one server.
pub async fn test_database() -> Result<TestDatabase, Error> {
    let admin_url = shared_server_url().await?;
    let name = format!("t_{:016x}", rand::rng().random::<u64>());
    let mut admin = MySqlConnection::connect(admin_url)
        .await
        .map_err(|e| Error::request(format!("connect to MariaDB at {admin_url}"), e))?;
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE `{name}`")))
        .execute(&mut admin)
        .await
        .map_err(|e| Error::request(format!("create database {name}"), e))?;
    let _ = admin.close().await;
    let url = format!("{admin_url}/{name}");
    let pool = MySqlPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(10))
        .connect(&url)
        .await
        .map_err(|e| Error::request(format!("connect to {name}"), e))?;
    let mut conn = pool
        .acquire()
        .await
        .map_err(|e| Error::request(format!("connect to {name}"), e))?;
    ctrl_db::migrate(&mut conn)
        .await
        .map_err(|e| Error::request(format!("migrate {name}"), e))?;
    Ok(TestDatabase { pool, name, url })
}

/// The admin URL of the server shared by this process: the one named by
/// [`SHARED_URL_ENV`], or one started on first use and kept for the process's
/// lifetime (the kernel kills it when the process exits; see `process`).
async fn shared_server_url() -> Result<&'static str, Error> {
    static SHARED: OnceCell<String> = OnceCell::const_new();
    SHARED
        .get_or_try_init(|| async {
            if let Ok(url) = std::env::var(SHARED_URL_ENV) {
                return Ok(url);
            }
            let server = MariaDb::start().await?;
            let url = server.admin_url();
            // Kept alive until the process exits; PR_SET_PDEATHSIG then kills
            // it and the next run's reaper deletes its directory.
            std::mem::forget(server);
            Ok(url)
        })
        .await
        .map(String::as_str)
}

/// The cached, pristine data directory for this MariaDB version, created
/// once (under a file lock, as parallel test processes may race for it).
fn template_datadir(server: &Path) -> Result<PathBuf, Error> {
    let version = Command::new(server)
        .arg("--version")
        .output()
        .map_err(|e| Error::io(format!("run {} --version", server.display()), e))?;
    let version = String::from_utf8_lossy(&version.stdout);
    let version = version
        .split_whitespace()
        .find(|w| w.contains("MariaDB"))
        .unwrap_or("unknown")
        .to_owned();
    let root = paths::cache_dir().join(format!("mariadb-template-{version}"));
    let data = root.join("data");
    let done = root.join("complete");
    if done.exists() {
        return Ok(data);
    }
    fs::create_dir_all(&root).map_err(|e| Error::io(format!("create {}", root.display()), e))?;
    let lock = fs::File::create(root.join("lock"))
        .map_err(|e| Error::io("create the template lock file", e))?;
    lock.lock()
        .map_err(|e| Error::io("lock the MariaDB template", e))?;
    if done.exists() {
        return Ok(data);
    }
    let _ = fs::remove_dir_all(&data);
    let install = paths::system_program("mariadb-install-db")?;
    let log = root.join("install.log");
    let log_file = fs::File::create(&log).map_err(|e| Error::io("create the install-db log", e))?;
    let mut cmd = Command::new(install);
    cmd.arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .args([
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            "--skip-name-resolve",
        ])
        .stdout(
            log_file
                .try_clone()
                .map_err(|e| Error::io("clone log handle", e))?,
        )
        .stderr(log_file);
    if nix::unistd::geteuid().is_root() {
        cmd.arg("--user=root");
    }
    let status = cmd
        .status()
        .map_err(|e| Error::io("run mariadb-install-db", e))?;
    if !status.success() {
        return Err(Error::Startup {
            name: "mariadb-install-db".into(),
            reason: format!("exited with {status}"),
            tail: crate::process::log_tail(&log, 40),
            log,
        });
    }
    fs::write(&done, version).map_err(|e| Error::io("mark the template complete", e))?;
    Ok(data)
}

/// Copies a directory tree (the template is ~35 MB of plain files).
fn copy_dir(from: &Path, to: &Path) -> Result<(), Error> {
    fs::create_dir_all(to).map_err(|e| Error::io(format!("create {}", to.display()), e))?;
    let entries =
        fs::read_dir(from).map_err(|e| Error::io(format!("read {}", from.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("read {}", from.display()), e))?;
        let target = to.join(entry.file_name());
        let kind = entry
            .file_type()
            .map_err(|e| Error::io(format!("stat {}", entry.path().display()), e))?;
        if kind.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), &target)
                .map_err(|e| Error::io(format!("copy {}", entry.path().display()), e))?;
        }
    }
    Ok(())
}
