//! The README's dev command, run for real: it brings the stack up, writes
//! `stack.env`, deploys the demo app through the ctrl CLI (reused on the next
//! run), prints commands that work as printed, deploys a push through its
//! fake GitHub (the README's walkthrough), keeps data across restarts, and
//! leaves no process behind on Ctrl-C or when it is killed.

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
    /// restate-server, mariadbd, podman system service, the ctrl services.
    servers: Vec<ProcessId>,
    /// What xtask printed once the demo was up.
    output: String,
}

/// Starts `xtask dev` in `dir` and waits until it has written stack.env and
/// set up the demo.
fn start(dir: &Path, ports: &[u16; 14]) -> Result<Stack> {
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
        .args(["--krane-health-port", &ports[7].to_string()])
        .args(["--edge-http-port", &ports[8].to_string()])
        .args(["--edge-https-port", &ports[9].to_string()])
        .args(["--edge-admin-port", &ports[10].to_string()])
        .args(["--s3-port", &ports[11].to_string()])
        .args(["--registry-port", &ports[12].to_string()])
        .args(["--github-port", &ports[13].to_string()])
        .arg("--bin-dir")
        .arg(&bin_dir);
    let log = dir.with_extension("log");
    // The log is appended to; this run's output starts empty.
    let _ = std::fs::remove_file(&log);
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
        "krane.pid",
        "frontline.pid",
    ]
    .iter()
    .map(|f| {
        read_pid_file(&dir.join(f))
            .map(|(p, _)| p)
            .context(format!("pid file {f}"))
    })
    .collect::<Result<Vec<_>>>()?;
    let deadline = Instant::now() + Duration::from_secs(180);
    let output = loop {
        let output = std::fs::read_to_string(&log)?;
        if output.contains("Press Ctrl-C to stop everything.") {
            break output;
        }
        if xtask.exit_status().is_some() || Instant::now() > deadline {
            bail!("xtask dev did not set up the demo:\n{}", xtask.log_tail(40));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    Ok(Stack {
        xtask,
        env,
        servers,
        output,
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
    // Killed outright at the end, the stack leaves its containers running
    // (as a user's would, until the next `xtask dev`); the test removes
    // them, also when it fails. Dropped before `root`.
    let _containers = RemoveContainers(root.path().join(".dev/podman"));
    // `.dev` as in a clone, so the printed commands find stack.env from `root`.
    let dir = root.path().join(".dev");
    let ports: [u16; 14] = free_ports()?;

    // First run: everything is reachable through what stack.env says.
    let mut stack = start(&dir, &ports)?;
    for key in [
        "CTRL_API_URL",
        "CTRL_TOKEN",
        "DATABASE_URL",
        "RESTATE_INGRESS_URL",
        "RESTATE_ADMIN_URL",
        "DOCKER_HOST",
        "CTRL_EDGE_HTTPS_PORT",
        "CTRL_CA_FILE",
        "CTRL_GITHUB_URL",
        "CTRL_GITHUB_WEBHOOK_SECRET",
        "CTRL_GITHUB_INSTALLATION",
    ] {
        assert!(
            stack.env.contains_key(key),
            "stack.env lacks {key}: {:?}",
            stack.env.keys()
        );
    }
    assert!(stack.env["CTRL_TOKEN"].len() >= 32);
    assert_eq!(stack.env["CTRL_WORKSPACE"], "demo");

    // The demo was deployed and answers where the output says.
    assert!(
        stack
            .output
            .contains("The demo app demo/hello is live (deployed d_"),
        "{}",
        stack.output
    );
    assert_eq!(demo_answer(&stack.output).await?, "v1");
    // Plain HTTP to the edge redirects to the printed HTTPS URL.
    let url = demo_url(&stack.output)?;
    let (host, port) = host_port(&url)?;
    let no_follow = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let redirect = no_follow
        .get(format!("http://127.0.0.1:{}/", ports[8]))
        .header("host", &host)
        .send()
        .await?;
    assert_eq!(redirect.status(), 308);
    assert_eq!(
        redirect.headers()["location"],
        format!("https://{host}:{port}/")
    );
    // Every printed CLI command works as printed, from the clone's root
    // (which has the example apps: one command builds examples/hello).
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples"),
        &root.path().join("examples"),
    )?;
    let commands = printed_commands(&stack.output);
    assert!(commands.len() >= 4, "{}", stack.output);
    for command in &commands {
        run_printed(command, root.path())?;
    }
    push_to_deploy(&stack, root.path()).await?;
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
    // The demo is reused: krane ran its live deployment again.
    assert!(
        stack
            .output
            .contains("The demo app demo/hello is live (reused d_"),
        "{}",
        stack.output
    );
    assert!(!demo_answer(&stack.output).await?.is_empty());

    // Killed outright (no chance to clean up): its servers die with it.
    kill(Pid::from_raw(stack.xtask.id().pid), Signal::SIGKILL)?;
    while stack.xtask.exit_status().is_none() {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_gone(&stack.servers);
    Ok(())
}

/// The README's push to deploy, once: the demo app connected to the fake
/// GitHub's demo/hello, a directory pushed with `xtask github push`; the
/// production deployment it makes is ready, answers through the edge with
/// the pushed content, and GitHub heard queued → in_progress → success.
async fn push_to_deploy(stack: &Stack, root: &Path) -> Result<()> {
    let marker = "pushed through the fake GitHub";
    std::fs::write(
        root.join("examples/hello/public/index.html"),
        format!("{marker}\n"),
    )?;
    run_printed(
        ".dev/bin/ctrl repos connect --app demo/hello --repo demo/hello --installation 1",
        root,
    )?;
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args([
            "github",
            "push",
            "--dir",
            "examples/hello",
            "--message",
            "Push from the test",
        ])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .current_dir(root)
        .output()?;
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    anyhow::ensure!(
        out.status.success(),
        "xtask github push failed: {printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{printed}");
    assert!(printed.contains("delivered push "), "{printed}");
    // "d_… is ready at https://host:port"
    let url = printed
        .lines()
        .find_map(|l| l.split(" is ready at ").nth(1))
        .with_context(|| format!("no URL printed: {printed}"))?
        .trim()
        .to_owned();
    let (host, port) = host_port(&url)?;
    let ca_pem = std::fs::read_to_string(&stack.env["CTRL_CA_FILE"])?;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let (status, body) =
        ctrl_testkit::ca::https_get(&ca_pem, addr, &host, "/", Duration::from_secs(5)).await?;
    assert_eq!((status, body.trim()), (200, marker), "{url}");

    let sha = printed
        .lines()
        .find_map(|l| l.strip_prefix("committed "))
        .and_then(|l| l.split_whitespace().next())
        .with_context(|| format!("no commit printed: {printed}"))?
        .to_owned();
    let recorded: serde_json::Value = http_client()
        .get(format!(
            "{}/_fake/repos/demo/hello/deployments",
            stack.env["CTRL_GITHUB_URL"]
        ))
        .send()
        .await?
        .json()
        .await?;
    let deployment = recorded
        .as_array()
        .and_then(|all| {
            all.iter()
                .find(|d| d["sha"].as_str().is_some_and(|s| s.starts_with(&sha)))
        })
        .with_context(|| format!("GitHub heard of no deployment of {sha}: {recorded}"))?;
    let states: Vec<&str> = deployment["statuses"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["state"].as_str())
        .collect();
    assert_eq!(states, ["queued", "in_progress", "success"], "{recorded}");
    assert_eq!(deployment["environment"], "hello (production)");
    Ok(())
}

/// Removes every container of the stack's podman on drop.
struct RemoveContainers(std::path::PathBuf);

impl Drop for RemoveContainers {
    fn drop(&mut self) {
        ctrl_testkit::podman::remove_all_containers(&self.0);
    }
}

/// The URL in "(try: curl --cacert CA URL)".
fn demo_url(output: &str) -> Result<String> {
    output
        .lines()
        .find_map(|l| l.split("curl --cacert ").nth(1))
        .and_then(|rest| rest.split_whitespace().nth(1))
        .map(|u| u.trim_end_matches(')').to_owned())
        .context("no demo URL printed")
}

fn host_port(url: &str) -> Result<(String, u16)> {
    let rest = url.strip_prefix("https://").context("an https URL")?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let (host, port) = authority.split_once(':').context("a port in the URL")?;
    Ok((host.to_owned(), port.parse()?))
}

/// GETs the printed demo URL over HTTPS, trusting only the printed CA, as
/// `curl --cacert` would.
async fn demo_answer(output: &str) -> Result<String> {
    let ca = output
        .lines()
        .find_map(|l| l.split("curl --cacert ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .context("no CA printed")?;
    let url = demo_url(output)?;
    let (host, port) = host_port(&url)?;
    let ca_pem = std::fs::read_to_string(ca)?;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let (status, body) =
        ctrl_testkit::ca::https_get(&ca_pem, addr, &host, "/", Duration::from_secs(5)).await?;
    anyhow::ensure!(status == 200, "{url} answered {status}: {body}");
    Ok(body.trim().to_owned())
}

/// Copies a directory tree.
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// The commands printed under "Try the ctrl CLI".
fn printed_commands(output: &str) -> Vec<String> {
    output
        .lines()
        .skip_while(|l| !l.starts_with("Try the ctrl CLI"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(|l| l.trim().to_owned())
        .collect()
}

/// Runs a printed command in `cwd` with nothing from this environment but
/// PATH (the CLI must find stack.env by itself).
fn run_printed(command: &str, cwd: &Path) -> Result<()> {
    let words: Vec<&str> = command.split_whitespace().collect();
    let out = Command::new(cwd.join(words[0]))
        .args(&words[1..])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .current_dir(cwd)
        .output()
        .with_context(|| format!("run {command}"))?;
    if !out.status.success() {
        bail!(
            "`{command}` failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
