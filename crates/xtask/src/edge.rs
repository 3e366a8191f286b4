//! `cargo xtask edge`: the edge end to end on real processes.
//!
//! On the whole stack ([`crate::stack`]: MariaDB, restate-server, podman,
//! ctrl-worker, ctrl-api, krane and frontline as processes) it checks, as a
//! user would see it through frontline:
//!
//! 1. v1's commit, branch, per-deployment, environment and live hostnames
//!    answer v1 over HTTP and HTTPS (the stack's CA); an unknown host
//!    answers 404; the ACME HTTP-01 path answers an open challenge;
//! 2. after deploying v2 (a later commit on the same branch) the live,
//!    environment and branch hosts answer v2 while v1's commit and
//!    deployment hosts still answer v1; rollback → v1; promote → v2;
//! 3. under steady load (`--rps` for `--load-seconds`) a deploy, a rollback
//!    and a promote: no failed request, and every answer comes from the
//!    deployment live when the request started or the one before it;
//! 4. 50 MiB streamed up and down through the edge;
//! 5. with ctrl-api (and its cluster-sync) and MariaDB killed, the edge
//!    keeps serving its last table, and follows a rollback made after they
//!    are back, without a restart of its own;
//! 6. a stopped preview is woken by a request;
//! 7. rollback at the edge: from a Rollback RPC's answer to the first
//!    response served by the target, `--rollbacks` times (p50/p99);
//! 8. a WebSocket echo: an app answering WebSockets, deployed, echoes
//!    text and binary messages through the edge.
//!
//! It prints each check and the figures, and fails if any check failed.

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::json;

use crate::stack::{IMAGES, Stack, Victim, WEBSOCKET_IMAGE};

/// The commits v1 and v2 are deployed as (their branch hostname is shared).
const COMMITS: [&str; 2] = [
    "e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1",
    "e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2",
];
const BRANCH: &str = "feature/edge";

/// `cargo xtask edge` options.
#[derive(Debug, Args)]
pub(crate) struct EdgeArgs {
    /// Rollbacks whose edge latency is measured.
    #[arg(long, default_value_t = 50)]
    rollbacks: usize,
    /// Requests per second of the steady load.
    #[arg(long, default_value_t = 200)]
    rps: u32,
    /// The load runs at least this long (the deploy, rollback and promote
    /// happen in its first seconds).
    #[arg(long, default_value_t = 30)]
    load_seconds: u64,
    /// Keep the scratch directory (logs, data).
    #[arg(long)]
    keep: bool,
    /// The cargo profile the services are built with (`release` for the
    /// memory figures of production builds).
    #[arg(long, default_value = "dev")]
    profile: String,
}

/// Failed checks, printed as they happen.
#[derive(Default)]
struct Checks {
    failed: Vec<String>,
}

impl Checks {
    fn check(&mut self, ok: bool, what: &str, detail: impl FnOnce() -> String) {
        if ok {
            println!("  ✓ {what}");
        } else {
            let d = detail();
            println!("  ✗ {what}: {d}");
            self.failed.push(format!("{what}: {d}"));
        }
    }
}

pub(crate) async fn run(args: EdgeArgs) -> Result<ExitCode> {
    let started = Instant::now();
    crate::deps::ensure(false)?;
    let bin = crate::dev::build_services(&args.profile)?;
    let scratch = tempfile::Builder::new()
        .prefix("ctrl-edge-")
        .tempdir()
        .context("create a scratch directory")?;
    eprintln!("edge: state and logs in {}", scratch.path().display());
    // Replaced deployments stay up: the rollbacks need them.
    let mut stack = Stack::start(scratch.path(), &bin, Duration::from_secs(3600)).await?;
    let mut c = Checks::default();
    // cluster-sync runs inside ctrl-api here; a standalone one beside it
    // (no agents connect to it, it follows the same feed) is measured too.
    let sync = start_cluster_sync(&stack).await?;
    let rss = |stack: &Stack| {
        let mut all = stack.rss();
        all.push(("cluster-sync", crate::stack::rss_kib(&sync)));
        all
    };
    // Idle: connected, nothing deployed yet.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = rss(&stack);
    let outcome = scenario(&mut stack, &mut c, &args).await;
    print_rss(&args.profile, &idle, &rss(&stack));
    drop(sync);
    stack.stop();
    if let Err(e) = &outcome {
        c.failed.push(format!("the scenario stopped: {e:#}"));
        println!("  ✗ the scenario stopped: {e:#}");
    }
    println!(
        "\nedge: {} check(s) failed in {:.0}s",
        c.failed.len(),
        started.elapsed().as_secs_f64()
    );
    if !c.failed.is_empty() || args.keep {
        let kept = scratch.keep();
        eprintln!("state and logs kept in {}", kept.display());
    }
    Ok(if c.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Starts `ctrl-cluster-sync` on its own, on the stack's database, and
/// waits until it is ready.
async fn start_cluster_sync(stack: &Stack) -> Result<ctrl_testkit::process::Supervised> {
    let [listen, ops] = ctrl_testkit::free_ports()?;
    let config = stack.dir.join("ctrl-cluster-sync.toml");
    std::fs::write(
        &config,
        format!(
            "[http]\nlisten = \"127.0.0.1:{listen}\"\nops_listen = \"127.0.0.1:{ops}\"\n\
             [database]\nurl = \"${{DATABASE_URL}}\"\n\
             [restate]\ningress_url = \"{}\"\n",
            stack.restate.ingress_url()
        ),
    )?;
    let mut cmd = std::process::Command::new(stack.bin.join("ctrl-cluster-sync"));
    cmd.arg("--config")
        .arg(&config)
        .env("DATABASE_URL", &stack.database_url);
    let mut sync = ctrl_testkit::process::Supervised::spawn(
        "ctrl-cluster-sync",
        cmd,
        &stack.dir.join("ctrl-cluster-sync.log"),
        None,
    )?;
    crate::dev::wait_for_http(&mut sync, &format!("http://127.0.0.1:{ops}/health/ready")).await?;
    Ok(sync)
}

/// Each service's resident memory idle and after the scenario's load
/// (deploys, rollbacks, a few hundred requests through the edge), and the
/// ratio (debug builds stay above what release images use).
fn print_rss(profile: &str, idle: &[(&str, Option<u64>)], loaded: &[(&str, Option<u64>)]) {
    println!("\nresident memory ({profile} builds; target < 30 MB idle):");
    for ((name, before), (_, after)) in idle.iter().zip(loaded) {
        let mib =
            |k: &Option<u64>| k.map_or("-".to_owned(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
        let ratio = match (before, after) {
            (Some(b), Some(a)) if *b > 0 => format!("{:.2}x", *a as f64 / *b as f64),
            _ => "-".to_owned(),
        };
        println!(
            "  {name:<12} idle {:>10}   loaded {:>10}   {ratio}",
            mib(before),
            mib(after)
        );
    }
}

/// The hostnames of a deployment by stickiness.
async fn hosts_of(stack: &Stack, deployment: &str) -> Result<Vec<(String, String)>> {
    Ok(sqlx::query_as(
        "SELECT sticky, fully_qualified_domain_name FROM frontline_routes WHERE deployment_id = ? ORDER BY sticky",
    )
    .bind(deployment)
    .fetch_all(&stack.db)
    .await?)
}

/// The hostname unique to `deployment`.
async fn own_host(stack: &Stack, deployment: &str) -> Result<String> {
    hosts_of(stack, deployment)
        .await?
        .into_iter()
        .find(|(sticky, _)| sticky == "deployment")
        .map(|(_, host)| host)
        .with_context(|| format!("no hostname of its own for {deployment}"))
}

/// Waits until `host` answers through the edge from `deployment`.
async fn until_served(
    stack: &Stack,
    host: &str,
    deployment: &str,
    within: Duration,
) -> Result<Duration> {
    let start = Instant::now();
    loop {
        if let Ok((200, Some(d), _)) = stack.edge_get(host, "/").await
            && d == deployment
        {
            return Ok(start.elapsed());
        }
        if start.elapsed() > within {
            bail!("{host} is not served by {deployment} after {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn https_body(stack: &Stack, host: &str) -> Result<(u16, String)> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], stack.ports.edge.https));
    Ok(ctrl_testkit::ca::https_get(&stack.ca_pem, addr, host, "/", Duration::from_secs(5)).await?)
}

async fn scenario(stack: &mut Stack, c: &mut Checks, args: &EdgeArgs) -> Result<()> {
    let app = stack.seed_app().await?;
    println!("1. v1 through the edge");
    let v1 = stack
        .deploy_commit(&app, IMAGES[0], "edge-1", Some((COMMITS[0], BRANCH)))
        .await?;
    stack.wait_terminal(&v1).await?;
    let hosts = hosts_of(stack, &v1).await?;
    let kinds: BTreeSet<&str> = hosts.iter().map(|(s, _)| s.as_str()).collect();
    c.check(
        kinds == BTreeSet::from(["branch", "deployment", "environment", "live", "none"]),
        "v1 has a commit, a branch, a deployment, an environment and a live hostname",
        || format!("{hosts:?}"),
    );
    for (sticky, host) in &hosts {
        until_served(stack, host, &v1, Duration::from_secs(10)).await?;
        let (status, _, body) = stack.edge_get(host, "/").await?;
        c.check(
            status == 200 && body.trim() == "v1",
            &format!("http {sticky} host {host} answers v1"),
            || format!("{status} {body:?}"),
        );
        let (status, body) = https_body(stack, host).await?;
        c.check(
            status == 200 && body.trim() == "v1",
            &format!("https {sticky} host answers v1"),
            || format!("{status} {body:?}"),
        );
    }
    let (status, _, _) = stack.edge_get("nothing-here.ctrl.localhost", "/").await?;
    c.check(status == 404, "an unknown host answers 404", || {
        status.to_string()
    });
    // An open HTTP-01 challenge is answered on plain HTTP (through
    // AcmeService); an unknown token is not.
    let (domain, token) = ("shop.example.com", "edge-acme-token-0123456789abcdef");
    ctrl_db::custom_domain::insert(
        &stack.db,
        &ctrl_db::custom_domain::NewCustomDomain {
            id: "dom_edgetest000000001",
            workspace_id: "ws_edge",
            project_id: "proj_edge",
            app_id: &app,
            environment_id: "env_edge",
            domain,
            verification_token: "txt",
            target_cname: "edge-test.cname.ctrl.localhost",
        },
        1,
    )
    .await?;
    ctrl_db::certificate::open_http01_challenge(
        &stack.db,
        &ctrl_db::certificate::NewHttp01Challenge {
            workspace_id: "ws_edge",
            domain_id: "dom_edgetest000000001",
            token,
            authorization: &format!("{token}.thumbprint"),
            expires_at: 1,
        },
        1,
    )
    .await?;
    let (status, _, body) = stack
        .edge_get(domain, &format!("/.well-known/acme-challenge/{token}"))
        .await?;
    c.check(
        status == 200 && body == format!("{token}.thumbprint"),
        "the ACME HTTP-01 path answers the key authorization",
        || format!("{status} {body:?}"),
    );
    let (status, _, _) = stack
        .edge_get(
            domain,
            "/.well-known/acme-challenge/someothertoken0123456789",
        )
        .await?;
    c.check(status == 404, "an unknown ACME token answers 404", || {
        status.to_string()
    });
    let live_host = stack.live_host(&app).await?.context("a live host")?;
    let env_host = hosts
        .iter()
        .find(|(s, _)| s == "environment")
        .map(|(_, h)| h.clone())
        .context("an environment host")?;
    let host_of = |sticky: &str| {
        hosts
            .iter()
            .find(|(s, _)| s == sticky)
            .map(|(_, h)| h.clone())
            .with_context(|| format!("a {sticky} host"))
    };
    let v1_host = host_of("deployment")?;
    let commit_host = host_of("none")?;
    let branch_host = host_of("branch")?;

    println!("2. v2, rollback, promote");
    let v2 = stack
        .deploy_commit(&app, IMAGES[1], "edge-2", Some((COMMITS[1], BRANCH)))
        .await?;
    stack.wait_terminal(&v2).await?;
    for host in [&live_host, &env_host, &branch_host] {
        let t = until_served(stack, host, &v2, Duration::from_secs(10)).await;
        c.check(
            t.is_ok(),
            &format!("{host} answers v2 after the deploy"),
            || format!("{t:?}"),
        );
    }
    for (what, host) in [("deployment", &v1_host), ("commit", &commit_host)] {
        let (_, served, body) = stack.edge_get(host, "/").await?;
        c.check(
            served.as_deref() == Some(v1.as_str()) && body.trim() == "v1",
            &format!("v1's {what} host still answers v1"),
            || format!("{served:?} {body:?}"),
        );
    }
    stack
        .rpc(
            "DeploymentService/Rollback",
            json!({ "targetDeploymentId": v1 }),
        )
        .await?;
    let t = until_served(stack, &live_host, &v1, Duration::from_secs(5)).await;
    c.check(t.is_ok(), "rollback: the live host answers v1", || {
        format!("{t:?}")
    });
    stack
        .rpc(
            "DeploymentService/Promote",
            json!({ "targetDeploymentId": v2 }),
        )
        .await?;
    let t = until_served(stack, &live_host, &v2, Duration::from_secs(5)).await;
    c.check(t.is_ok(), "promote: the live host answers v2", || {
        format!("{t:?}")
    });

    println!(
        "3. steady load ({} req/s) through a deploy, a rollback and a promote",
        args.rps
    );
    let load = Load::start(stack, &live_host, &app, args.rps);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let v3 = stack.deploy(&app, IMAGES[0], "edge-3").await?;
    stack.wait_terminal(&v3).await?;
    until_served(stack, &live_host, &v3, Duration::from_secs(10)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stack
        .rpc(
            "DeploymentService/Rollback",
            json!({ "targetDeploymentId": v2 }),
        )
        .await?;
    until_served(stack, &live_host, &v2, Duration::from_secs(5)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stack
        .rpc(
            "DeploymentService/Promote",
            json!({ "targetDeploymentId": v3 }),
        )
        .await?;
    until_served(stack, &live_host, &v3, Duration::from_secs(5)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rest = Duration::from_secs(args.load_seconds).saturating_sub(load.started.elapsed());
    tokio::time::sleep(rest).await;
    let report = load.finish().await;
    println!(
        "     {} requests in {:.1}s ({:.0}/s), latency p50 {:.2} ms, p99 {:.2} ms",
        report.total,
        report.seconds,
        report.total as f64 / report.seconds,
        report.p50_ms,
        report.p99_ms
    );
    c.check(
        report.failures.is_empty(),
        "no failed request under load",
        || {
            format!(
                "{} failed, e.g. {:?}",
                report.failures.len(),
                report.failures.first()
            )
        },
    );
    c.check(
        report.misrouted.is_empty(),
        "every answer came from the live deployment or the one before",
        || {
            format!(
                "{} misrouted, e.g. {:?}",
                report.misrouted.len(),
                report.misrouted.first()
            )
        },
    );

    println!("4. 50 MiB streamed through the edge");
    let big = 50u64 << 20;
    let url = format!(
        "http://127.0.0.1:{}/cgi-bin/bytes?800",
        stack.ports.edge.http
    );
    let down = stack
        .http
        .get(&url)
        .header("host", &live_host)
        .timeout(Duration::from_secs(120))
        .send()
        .await?
        .bytes()
        .await?;
    c.check(down.len() as u64 == big, "a 50 MiB download", || {
        format!("{} bytes", down.len())
    });
    let payload: Vec<u8> = (0..big).map(|i| (i % 251) as u8).collect();
    let up = stack
        .http
        .post(format!(
            "http://127.0.0.1:{}/cgi-bin/echo",
            stack.ports.edge.http
        ))
        .header("host", &live_host)
        .timeout(Duration::from_secs(120))
        .body(payload.clone())
        .send()
        .await?;
    let up_status = up.status().as_u16();
    let echoed = up.bytes().await?;
    c.check(
        up_status == 200 && echoed.as_ref() == payload.as_slice(),
        "a 50 MiB upload echoed back",
        || format!("{up_status}, {} bytes back", echoed.len()),
    );

    println!("5. the control plane goes away");
    if let Some(mut api) = stack.api.take() {
        api.kill();
    }
    if let Some(m) = stack.mariadb.take() {
        m.kill();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut stale = String::new();
    while Instant::now() < deadline {
        stale = stack
            .http
            .get(format!(
                "http://127.0.0.1:{}/health/ready",
                stack.ports.edge.admin
            ))
            .send()
            .await?
            .text()
            .await?;
        if stale.contains("unreachable") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    c.check(
        stale.contains("unreachable"),
        "the edge says the control plane is unreachable",
        || stale.clone(),
    );
    let mut served_ok = 0;
    for _ in 0..100 {
        if let Ok((200, Some(d), _)) = stack.edge_get(&live_host, "/").await
            && d == v3
        {
            served_ok += 1;
        }
    }
    c.check(
        served_ok == 100,
        "100 of 100 requests served from the last table",
        || served_ok.to_string(),
    );
    stack.start_one(Victim::MariaDb).await?;
    stack.start_one(Victim::Api).await?;
    stack
        .rpc(
            "DeploymentService/Rollback",
            json!({ "targetDeploymentId": v2 }),
        )
        .await?;
    let t = until_served(stack, &live_host, &v2, Duration::from_secs(30)).await;
    c.check(
        t.is_ok(),
        "after the restart, the edge follows a rollback without restarting itself",
        || format!("{t:?}"),
    );
    stack
        .rpc(
            "DeploymentService/Promote",
            json!({ "targetDeploymentId": v3 }),
        )
        .await?;
    until_served(stack, &live_host, &v3, Duration::from_secs(10)).await?;

    println!("6. a stopped preview wakes on request");
    let preview = stack
        .rpc(
            "DeploymentService/CreateDeployment",
            json!({ "appId": app, "environmentSlug": "preview", "image": { "image": IMAGES[1] }, "idempotencyKey": "edge-preview" }),
        )
        .await?["deploymentId"]
        .as_str()
        .map(str::to_owned)
        .context("a preview deployment id")?;
    stack.wait_terminal(&preview).await?;
    let preview_host = own_host(stack, &preview).await?;
    stack
        .rpc(
            "DeploymentService/StopDeployment",
            json!({ "deploymentId": preview }),
        )
        .await?;
    let stopped = wait_db_status(stack, &preview, "stopped", Duration::from_secs(60)).await;
    c.check(stopped.is_ok(), "the preview stopped", || {
        format!("{stopped:?}")
    });
    let asked = Instant::now();
    let woken = stack.edge_get(&preview_host, "/").await;
    let took = asked.elapsed();
    c.check(
        matches!(&woken, Ok((200, Some(d), body)) if *d == preview && body.trim() == "v2"),
        &format!(
            "a request woke the preview and was answered ({:.1}s)",
            took.as_secs_f64()
        ),
        || format!("{woken:?}"),
    );

    println!("7. rollback at the edge, {} times", args.rollbacks);
    let mut latencies = Vec::new();
    let mut target = v2.clone();
    for _ in 0..args.rollbacks {
        stack
            .rpc(
                "DeploymentService/Rollback",
                json!({ "targetDeploymentId": target }),
            )
            .await?;
        let t = until_served(stack, &live_host, &target, Duration::from_secs(5)).await?;
        latencies.push(t);
        target = if target == v2 { v3.clone() } else { v2.clone() };
    }
    let mut ms: Vec<f64> = latencies.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    let pct = |p| percentile(&ms, p);
    println!(
        "     rollback → first answer from the target: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {}",
        pct(0.5),
        pct(0.99),
        pct(1.0),
        ms.len()
    );

    println!("8. a WebSocket echo through the edge");
    let ws = stack.deploy(&app, WEBSOCKET_IMAGE, "edge-ws").await?;
    stack.wait_terminal(&ws).await?;
    let ws_host = own_host(stack, &ws).await?;
    until_served(stack, &ws_host, &ws, Duration::from_secs(10)).await?;
    let echoed = websocket_echo(stack, &ws_host).await;
    c.check(
        echoed.is_ok(),
        "text and binary messages come back through the edge",
        || format!("{echoed:?}"),
    );
    Ok(())
}

/// Opens a WebSocket to `host` through the edge's plain-HTTP port, sends
/// text and binary messages, and checks each comes back unchanged.
async fn websocket_echo(stack: &Stack, host: &str) -> Result<()> {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let mut request =
        format!("ws://127.0.0.1:{}/ws", stack.ports.edge.http).into_client_request()?;
    request.headers_mut().insert("host", host.parse()?);
    let (mut ws, _) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(request),
    )
    .await
    .context("no handshake within 10 s")??;
    let messages = [
        Message::text("hello through the edge"),
        Message::binary((0u8..=124).collect::<Vec<u8>>()),
        Message::text("ü ✓"),
    ];
    for sent in messages {
        ws.send(sent.clone()).await?;
        let back = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .context("no echo within 10 s")?
            .context("the connection ended")??;
        anyhow::ensure!(back == sent, "sent {sent:?}, got {back:?}");
    }
    ws.close(None).await?;
    Ok(())
}

/// The `p` quantile of sorted values (nearest rank; 0 when empty).
fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 * p).ceil() as usize).saturating_sub(1))
        .copied()
        .unwrap_or(0.0)
}

async fn wait_db_status(stack: &Stack, id: &str, want: &str, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let status: Option<String> =
            sqlx::query_scalar("SELECT status FROM deployments WHERE id = ?")
                .bind(id)
                .fetch_optional(&stack.db)
                .await?;
        if status.as_deref() == Some(want) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{id} is {status:?}, not {want}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One request of the load: when it started (ms since the load began),
/// how long it took, what answered.
#[derive(Debug, Clone)]
struct Sample {
    at_ms: f64,
    took_ms: f64,
    outcome: Result<(u16, Option<String>), String>,
}

/// Steady load on one host, and the live deployment over time.
struct Load {
    stop: tokio::sync::watch::Sender<bool>,
    workers: Vec<tokio::task::JoinHandle<Vec<Sample>>>,
    monitor: tokio::task::JoinHandle<Vec<(f64, String)>>,
    started: Instant,
}

/// What the load saw.
struct Report {
    total: usize,
    seconds: f64,
    p50_ms: f64,
    p99_ms: f64,
    failures: Vec<Sample>,
    misrouted: Vec<(Sample, BTreeSet<String>)>,
}

/// Concurrent connections the load uses.
const LOAD_WORKERS: u32 = 8;

impl Load {
    fn start(stack: &Stack, host: &str, app: &str, rps: u32) -> Self {
        let (stop, _) = tokio::sync::watch::channel(false);
        let started = Instant::now();
        let url = format!("http://127.0.0.1:{}/", stack.ports.edge.http);
        let period = Duration::from_secs_f64(f64::from(LOAD_WORKERS) / f64::from(rps.max(1)));
        let workers = (0..LOAD_WORKERS)
            .map(|_| {
                let (url, host, mut stop) = (url.clone(), host.to_owned(), stop.subscribe());
                let client = ctrl_testkit::http_client();
                tokio::spawn(async move {
                    let mut out = Vec::new();
                    let mut tick = tokio::time::interval(period);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        tokio::select! {
                            _ = stop.wait_for(|s| *s) => return out,
                            _ = tick.tick() => {}
                        }
                        let at = started.elapsed();
                        let answer = client.get(&url).header("host", &host).send().await;
                        let outcome = match answer {
                            Ok(r) => {
                                let status = r.status().as_u16();
                                let served = r
                                    .headers()
                                    .get("x-ctrl-deployment")
                                    .and_then(|v| v.to_str().ok())
                                    .map(str::to_owned);
                                match r.bytes().await {
                                    Ok(_) => Ok((status, served)),
                                    Err(e) => Err(format!("body: {e}")),
                                }
                            }
                            Err(e) => Err(e.to_string()),
                        };
                        out.push(Sample {
                            at_ms: at.as_secs_f64() * 1000.0,
                            took_ms: (started.elapsed() - at).as_secs_f64() * 1000.0,
                            outcome,
                        });
                    }
                })
            })
            .collect();
        let (db, app, mut stop_rx) = (stack.db.clone(), app.to_owned(), stop.subscribe());
        let monitor = tokio::spawn(async move {
            let seen = Arc::new(Mutex::new(Vec::<(f64, String)>::new()));
            loop {
                let live: Option<Option<String>> =
                    sqlx::query_scalar("SELECT live_deployment_id FROM apps WHERE id = ?")
                        .bind(&app)
                        .fetch_optional(&db)
                        .await
                        .ok()
                        .flatten();
                if let Some(Some(live)) = live {
                    let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
                    if s.last().is_none_or(|(_, l)| *l != live) {
                        s.push((started.elapsed().as_secs_f64() * 1000.0, live));
                    }
                }
                tokio::select! {
                    _ = stop_rx.wait_for(|s| *s) => break,
                    () = tokio::time::sleep(Duration::from_millis(10)) => {}
                }
            }
            let s = seen.lock().unwrap_or_else(|e| e.into_inner());
            s.clone()
        });
        Self {
            stop,
            workers,
            monitor,
            started,
        }
    }

    async fn finish(self) -> Report {
        self.stop.send_replace(true);
        let seconds = self.started.elapsed().as_secs_f64();
        let mut samples = Vec::new();
        for w in self.workers {
            samples.extend(w.await.unwrap_or_default());
        }
        let timeline = self.monitor.await.unwrap_or_default();
        // Live at `t` as observed (every 10 ms), the one before it, and what
        // the observer saw 100 ms later (its own polling lag).
        let allowed = |t: f64| -> BTreeSet<String> {
            let mut set = BTreeSet::new();
            let idx = timeline.iter().rposition(|(at, _)| *at <= t);
            if let Some(i) = idx {
                set.insert(timeline[i].1.clone());
                if i > 0 {
                    set.insert(timeline[i - 1].1.clone());
                }
            }
            if let Some((_, later)) = timeline.iter().rev().find(|(at, _)| *at <= t + 100.0) {
                set.insert(later.clone());
            }
            set
        };
        let mut failures = Vec::new();
        let mut misrouted = Vec::new();
        let mut latencies: Vec<f64> = Vec::new();
        for s in &samples {
            match &s.outcome {
                Ok((200, Some(d))) => {
                    latencies.push(s.took_ms);
                    let ok = allowed(s.at_ms);
                    if !ok.contains(d) {
                        misrouted.push((s.clone(), ok));
                    }
                }
                _ => failures.push(s.clone()),
            }
        }
        latencies.sort_by(f64::total_cmp);
        Report {
            total: samples.len(),
            seconds,
            p50_ms: percentile(&latencies, 0.5),
            p99_ms: percentile(&latencies, 0.99),
            failures,
            misrouted,
        }
    }
}
