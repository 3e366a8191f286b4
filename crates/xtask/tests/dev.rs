//! The README's dev command, run for real: it brings the stack up, writes
//! `stack.env`, keeps data across restarts, and leaves no process behind on
//! Ctrl-C or when it is killed.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ctrl_testkit::process::{ProcessId, Supervised};
use ctrl_testkit::reaper::read_pid_file;
use ctrl_testkit::{free_ports, http_client};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sqlx::Connection;
use sqlx::mysql::MySqlConnection;

struct Stack {
    xtask: Supervised,
    env: HashMap<String, String>,
    /// restate-server, mariadbd, podman system service.
    servers: Vec<ProcessId>,
}

/// Starts `xtask dev` in `dir` and waits until it has written stack.env.
fn start(dir: &Path, ports: &[u16; 7]) -> Result<Stack> {
    // The service binaries the workspace build put next to this xtask binary.
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_xtask"))
        .parent()
        .expect("a directory")
        .to_owned();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.arg("dev")
        .arg("--dir")
        .arg(dir)
        .args(["--mysql-port", &ports[0].to_string()])
        .args(["--restate-ingress-port", &ports[1].to_string()])
        .args(["--restate-admin-port", &ports[2].to_string()])
        .args(["--restate-fabric-port", &ports[3].to_string()])
        .args(["--api-port", &ports[4].to_string()])
        .args(["--worker-port", &ports[5].to_string()])
        .args(["--worker-health-port", &ports[6].to_string()])
        .arg("--bin-dir")
        .arg(&bin_dir);
    let log = dir.with_extension("log");
    let mut xtask = Supervised::spawn("xtask dev", cmd, &log, None)?;
    let env_file = dir.join("stack.env");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !env_file.exists() {
        if xtask.exit_status().is_some() || Instant::now() > deadline {
            bail!("xtask dev did not come up:\n{}", xtask.log_tail(30));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let env = std::fs::read_to_string(&env_file)?
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let servers = [
        "restate/restate.pid",
        "mariadb/mariadbd.testkit.pid",
        "podman/service.pid",
        "ctrl-api.pid",
        "ctrl-worker.pid",
    ]
    .iter()
    .map(|f| {
        read_pid_file(&dir.join(f))
            .map(|(p, _)| p)
            .context(format!("pid file {f}"))
    })
    .collect::<Result<Vec<_>>>()?;
    Ok(Stack {
        xtask,
        env,
        servers,
    })
}

fn assert_gone(ids: &[ProcessId]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while ids.iter().any(ProcessId::is_alive) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let alive: Vec<_> = ids.iter().filter(|p| p.is_alive()).collect();
    assert!(alive.is_empty(), "still running: {alive:?}");
}

#[tokio::test]
async fn dev_stack_comes_up_keeps_data_and_stops_cleanly() -> Result<()> {
    let root = tempfile::tempdir()?;
    let dir = root.path().join("dev");
    let ports: [u16; 7] = free_ports()?;

    // First run: everything is reachable through what stack.env says.
    let mut stack = start(&dir, &ports)?;
    for key in [
        "CTRL_API_URL",
        "CTRL_TOKEN",
        "DATABASE_URL",
        "RESTATE_INGRESS_URL",
        "RESTATE_ADMIN_URL",
        "DOCKER_HOST",
    ] {
        assert!(
            stack.env.contains_key(key),
            "stack.env lacks {key}: {:?}",
            stack.env.keys()
        );
    }
    assert!(stack.env["CTRL_TOKEN"].len() >= 32);
    let mut db = MySqlConnection::connect(&stack.env["DATABASE_URL"]).await?;
    sqlx::query("SELECT COUNT(*) FROM _sqlx_migrations")
        .execute(&mut db)
        .await?;
    sqlx::query("CREATE TABLE dev_marker (id INT PRIMARY KEY)")
        .execute(&mut db)
        .await?;
    drop(db);
    let health = http_client()
        .get(format!("{}/health", stack.env["RESTATE_ADMIN_URL"]))
        .send()
        .await?;
    assert!(health.status().is_success());
    assert!(Path::new(stack.env["DOCKER_HOST"].trim_start_matches("unix://")).exists());
    // The API answers with the token from stack.env, and refuses without it.
    let list = |token: Option<&str>| {
        let mut req = http_client()
            .post(format!(
                "{}/ctrl.v1.WorkspaceService/ListWorkspaces",
                stack.env["CTRL_API_URL"]
            ))
            .header("content-type", "application/json")
            .body("{}");
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req.send()
    };
    assert_eq!(list(Some(&stack.env["CTRL_TOKEN"])).await?.status(), 200);
    assert_eq!(list(None).await?.status(), 401);

    // Ctrl-C: a clean stop, no process left, stack.env removed.
    kill(Pid::from_raw(stack.xtask.id().pid), Signal::SIGINT)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = stack.xtask.exit_status() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "xtask dev did not stop on SIGINT"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}: {}", stack.xtask.log_tail(20));
    assert_gone(&stack.servers);
    assert!(
        !dir.join("stack.env").exists(),
        "stack.env outlived the stack"
    );

    // Second run reuses the data and the token.
    let token = stack.env["CTRL_TOKEN"].clone();
    let mut stack = start(&dir, &ports)?;
    assert_eq!(stack.env["CTRL_TOKEN"], token);
    let mut db = MySqlConnection::connect(&stack.env["DATABASE_URL"]).await?;
    sqlx::query("SELECT COUNT(*) FROM dev_marker")
        .execute(&mut db)
        .await?;
    drop(db);

    // Killed outright (no chance to clean up): its servers die with it.
    kill(Pid::from_raw(stack.xtask.id().pid), Signal::SIGKILL)?;
    while stack.xtask.exit_status().is_none() {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_gone(&stack.servers);
    Ok(())
}
