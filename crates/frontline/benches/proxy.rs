//! Throughput and latency through the edge, against going direct and going
//! through nginx (Debian's package, configured as the same reverse proxy),
//! measured in one run; then how fast a route move (a rollback's write)
//! reaches the edge.
//!
//! `cargo bench -p frontline --bench proxy [-- SECONDS [CONNECTIONS...]]`
//!
//! Everything is real: MariaDB, cluster-sync (in this process), the
//! frontline binary and nginx as processes on loopback, and an app
//! instance (an HTTP/1.1 server in this process) answering a small body.
//! The load: a fixed number of keep-alive connections, each sending one
//! request after another, at each concurrency given (default 4 and 32). It
//! prints requests/s and p50/p99 per path, the ratios, the added p99 of
//! each proxy over going direct, and each proxy's CPU time per request
//! (from `/proc`, all its threads or worker processes: the figure the
//! shared cores blur least). Neither proxy writes access logs
//! (`FRONTLINE_BENCH_LOG=info` turns frontline's on).
//!
//! The route-move figure is the edge's share of a rollback; `cargo xtask
//! edge` measures the whole of it, from the Rollback RPC's answer.

#[path = "../tests/it/harness.rs"]
#[allow(dead_code, unreachable_pub)]
mod harness;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use ctrl_db::types::UpstreamProtocol;
use ctrl_testkit::process::Supervised;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;

use harness::{Backend, Ingress, Seed, Sync, edge_token, host};

/// Keep-alive connections of the load unless given.
const CONNECTIONS: [usize; 2] = [4, 32];
/// Route moves timed at the end.
const SWAPS: usize = 50;
/// Interleaved rounds per path.
const ROUNDS: usize = 5;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let numbers: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let seconds = numbers.first().copied().unwrap_or(5);
    let mut levels: Vec<usize> = numbers
        .iter()
        .skip(1)
        .filter_map(|&n| usize::try_from(n).ok())
        .collect();
    if levels.is_empty() {
        levels = CONNECTIONS.to_vec();
    }
    let db = ctrl_testkit::test_database().await?;
    let seed = Seed::new(&db.pool).await?;
    let ingress = Ingress::start().await?;
    let sync = Sync::start(&db.pool, &ingress.url).await?;
    let app = Backend::start("ok", false).await?;
    let other = Backend::start("other", false).await?;
    let d1 = seed
        .deployment(&seed.production, UpstreamProtocol::Http1)
        .await?;
    let d2 = seed
        .deployment(&seed.production, UpstreamProtocol::Http1)
        .await?;
    seed.instances(&d1, &[app.addr]).await?;
    seed.instances(&d2, &[other.addr]).await?;
    let bench_host = host("bench");
    let live = seed.route(&bench_host, &d1, &seed.production).await?;

    let dir = tempfile::tempdir()?;
    let [edge_http, edge_admin, nginx_port] = ctrl_testkit::free_ports()?;
    let edge_addr = SocketAddr::from(([127, 0, 0, 1], edge_http));
    let nginx_addr = SocketAddr::from(([127, 0, 0, 1], nginx_port));
    let frontline = start_frontline(dir.path(), &sync.url(), edge_http, edge_admin)?;
    let nginx = start_nginx(dir.path(), nginx_port, app.addr, &d1)?;
    wait_answers(edge_addr, &bench_host).await?;
    wait_answers(nginx_addr, &bench_host).await?;
    // Both proxies answer with the edge's headers (the client reads the same).
    for addr in [edge_addr, nginx_addr] {
        let r = harness::get(addr, &bench_host, "/").await?;
        if r.deployment() != Some(d1.as_str()) || !r.headers.contains_key("x-request-id") {
            bail!("{addr} answers without the edge's headers: {:?}", r.headers);
        }
    }
    let paths = [
        Path {
            name: "direct",
            addr: app.addr,
            cpu: None,
        },
        Path {
            name: "frontline",
            addr: edge_addr,
            cpu: Some(Cpu::Process(frontline.id().pid)),
        },
        Path {
            name: "nginx",
            addr: nginx_addr,
            cpu: Some(Cpu::Children(nginx.id().pid)),
        },
    ];
    for connections in levels {
        compare(&paths, &bench_host, connections, seconds).await?;
    }

    // A route move's commit → the first answer from the target at the edge.
    let mut took = Vec::new();
    let mut target = d2.clone();
    for _ in 0..SWAPS {
        let start = Instant::now();
        seed.move_route(&live, &target).await?;
        loop {
            let r = harness::get(edge_addr, &bench_host, "/").await?;
            if r.deployment() == Some(target.as_str()) {
                break;
            }
            if start.elapsed() > Duration::from_secs(5) {
                bail!("the edge did not follow a route move within 5 s");
            }
        }
        took.push(start.elapsed().as_secs_f64() * 1000.0);
        target = if target == d2 { d1.clone() } else { d2.clone() };
    }
    took.sort_by(f64::total_cmp);
    println!(
        "\nroute move (a rollback's write) → first answer from the target, {SWAPS} moves: p50 {:.1} ms, p99 {:.1} ms (target p99 < 100 ms)",
        percentile(&took, 0.5),
        percentile(&took, 0.99)
    );
    drop(sync);
    Ok(())
}

/// A way to the app, and whose CPU time it costs.
struct Path {
    name: &'static str,
    addr: SocketAddr,
    cpu: Option<Cpu>,
}

/// Where a proxy's CPU time is read.
#[derive(Clone, Copy)]
enum Cpu {
    /// One process (all its threads).
    Process(i32),
    /// A master process's children (nginx's workers).
    Children(i32),
}

impl Cpu {
    /// User and system time so far, in clock ticks.
    fn ticks(self) -> [u64; 2] {
        let of = |pid: i32| -> [u64; 2] {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let rest = stat.get(stat.rfind(')')? + 2..)?.to_owned();
                    let f: Vec<&str> = rest.split_whitespace().collect();
                    // Fields 14 and 15 (utime, stime); `rest` starts at field 3.
                    Some([f.get(11)?.parse().ok()?, f.get(12)?.parse().ok()?])
                })
                .unwrap_or_default()
        };
        match self {
            Self::Process(pid) => of(pid),
            Self::Children(pid) => {
                std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                    .unwrap_or_default()
                    .split_whitespace()
                    .filter_map(|c| c.parse().ok())
                    .map(of)
                    .fold([0, 0], |a, b| [a[0] + b[0], a[1] + b[1]])
            }
        }
    }
}

/// Clock ticks per second of `/proc`'s times (USER_HZ: 100 on x86-64 and arm64).
const TICKS_PER_SECOND: f64 = 100.0;

/// The three paths at `connections` keep-alive connections: rounds that
/// interleave the paths (so a noisy moment of this shared machine hits all
/// three; the two proxies swap places every round, so neither always runs
/// first), each figure the median over the rounds.
async fn compare(paths: &[Path], host: &str, connections: usize, seconds: u64) -> Result<()> {
    println!(
        "\n{connections} keep-alive connections, {ROUNDS} interleaved rounds of {seconds} s per path (each after 1 s of warm-up; medians), GET of a 3-byte body"
    );
    let mut rounds: Vec<Vec<Figures>> = paths.iter().map(|_| Vec::new()).collect();
    for round in 1..=ROUNDS {
        let order = if round % 2 == 1 { [0, 1, 2] } else { [0, 2, 1] };
        for i in order {
            let path = &paths[i];
            let r = load(
                path.addr,
                host,
                connections,
                Duration::from_secs(seconds),
                path.cpu,
            )
            .await?;
            eprintln!(
                "round {round} {:<10} {:>9.0}/s p50 {:.3} ms p99 {:.3} ms",
                path.name, r.rps, r.p50_ms, r.p99_ms
            );
            rounds[i].push(r);
        }
    }
    println!(
        "{:<10} {:>12} {:>10} {:>10} {:>22}",
        "path", "requests/s", "p50 ms", "p99 ms", "CPU µs/request"
    );
    // Each round's two proxies ran back to back, so their ratio within a
    // round cancels this machine's drift between rounds; the spread of
    // those ratios is the figure's resolution.
    let mut paired: Vec<f64> = rounds[1]
        .iter()
        .zip(&rounds[2])
        .map(|(edge, nginx)| edge.rps / nginx.rps)
        .collect();
    paired.sort_by(f64::total_cmp);
    let mut results = Vec::new();
    for (path, all) in paths.iter().zip(rounds) {
        let median = |f: fn(&Figures) -> f64| {
            let mut v: Vec<f64> = all.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let r = Figures {
            rps: median(|f| f.rps),
            p50_ms: median(|f| f.p50_ms),
            p99_ms: median(|f| f.p99_ms),
            cpu_us: median(|f| f.cpu_us),
            sys_us: median(|f| f.sys_us),
        };
        let cpu = if path.cpu.is_some() {
            format!("{:.1} ({:.1} sys)", r.cpu_us, r.sys_us)
        } else {
            "-".to_owned()
        };
        println!(
            "{:<10} {:>12.0} {:>10.3} {:>10.3} {:>22}",
            path.name, r.rps, r.p50_ms, r.p99_ms, cpu
        );
        results.push(r);
    }
    let (direct, edge, nginx) = (&results[0], &results[1], &results[2]);
    println!(
        "frontline / nginx throughput: {:.2}× (round by round: median {:.2}×, {:.2}–{:.2}×)   frontline / direct: {:.2}×   nginx / direct: {:.2}×   frontline / nginx CPU per request: {:.2}×",
        edge.rps / nginx.rps,
        paired[paired.len() / 2],
        paired[0],
        paired[paired.len() - 1],
        edge.rps / direct.rps,
        nginx.rps / direct.rps,
        edge.cpu_us / nginx.cpu_us
    );
    println!(
        "added p99 over direct: frontline {:+.3} ms, nginx {:+.3} ms (p50: {:+.3} / {:+.3} ms)",
        edge.p99_ms - direct.p99_ms,
        nginx.p99_ms - direct.p99_ms,
        edge.p50_ms - direct.p50_ms,
        nginx.p50_ms - direct.p50_ms
    );
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 * p).ceil() as usize).saturating_sub(1))
        .copied()
        .unwrap_or(0.0)
}

fn start_frontline(
    dir: &std::path::Path,
    control: &str,
    http: u16,
    admin: u16,
) -> Result<Supervised> {
    let config = dir.join("frontline.toml");
    std::fs::write(
        &config,
        format!(
            "[region]\nplatform = \"dev\"\nname = \"local\"\n\
             [control]\nurl = \"{control}\"\ntoken = \"{token}\"\n\
             [listen]\nhttp = \"127.0.0.1:{http}\"\nadmin = \"127.0.0.1:{admin}\"\n\
             [log]\nformat = \"json\"\n",
            token = edge_token("local"),
        ),
    )?;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_frontline"));
    cmd.arg("--config").arg(&config).env(
        "RUST_LOG",
        std::env::var("FRONTLINE_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
    );
    Ok(Supervised::spawn(
        "frontline",
        cmd,
        &dir.join("frontline.log"),
        None,
    )?)
}

/// nginx as the same reverse proxy: keep-alive to the instance, HTTP/1.1
/// upstream, the same headers both ways (the forwarded ones, the request
/// id kept or made, the hop count; the deployment and request id on the
/// answer), no access log (frontline's goes to a warn-level filter in this
/// bench).
fn start_nginx(
    dir: &std::path::Path,
    port: u16,
    upstream: SocketAddr,
    deployment: &str,
) -> Result<Supervised> {
    let nginx = ctrl_testkit::paths::system_program("nginx")?;
    let d = dir.display();
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "worker_processes 2;\ndaemon off;\nmaster_process on;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log warn;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  keepalive_requests 1000000;\n  keepalive_timeout 75s;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
               map $http_x_request_id $ctrl_request_id {{ \"\" $request_id; default $http_x_request_id; }}\n\
               upstream app {{ server {upstream}; keepalive 128; }}\n\
               server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass http://app;\n\
                 proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_set_header Host $host;\n\
                 proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n      proxy_set_header X-Forwarded-Proto $scheme;\n\
                 proxy_set_header X-Forwarded-Host $host;\n      proxy_set_header X-Request-Id $ctrl_request_id;\n\
                 proxy_set_header X-Ctrl-Frontline-Hops 1;\n      add_header X-Ctrl-Deployment {deployment} always;\n\
                 add_header X-Request-Id $ctrl_request_id always;\n    }}\n  }}\n}}\n"
        ),
    )?;
    let mut cmd = Command::new(nginx);
    cmd.arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(dir.join("nginx-error.log"));
    Ok(Supervised::spawn(
        "nginx",
        cmd,
        &dir.join("nginx.log"),
        None,
    )?)
}

async fn wait_answers(addr: SocketAddr, host: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if harness::get(addr, host, "/")
            .await
            .is_ok_and(|r| r.status == 200)
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{addr} does not answer for {host}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Figures {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// The proxy's CPU time per request over the measured window.
    cpu_us: f64,
    /// The part of it spent in the kernel.
    sys_us: f64,
}

/// `connections` connections, each sending requests back to back: a
/// 1 s warm-up, then `duration` measured (and `cpu`'s time over it).
async fn load(
    addr: SocketAddr,
    host: &str,
    connections: usize,
    duration: Duration,
    cpu: Option<Cpu>,
) -> Result<Figures> {
    let warmup = Duration::from_secs(1);
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let host = host.to_owned();
        tasks.push(tokio::spawn(async move {
            let connect = || async {
                let stream = tokio::net::TcpStream::connect(addr).await?;
                stream.set_nodelay(true)?;
                let (sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
                tokio::spawn(conn);
                anyhow::Ok(sender)
            };
            let mut sender = connect().await?;
            let mut latencies = Vec::new();
            loop {
                let t = Instant::now();
                if t >= end {
                    break;
                }
                let req = Request::get("/")
                    .header("host", &host)
                    .body(Empty::<Bytes>::new())?;
                // A server may close a keep-alive connection (a request
                // limit): reconnect, as any client does, and count the time.
                if sender.ready().await.is_err() {
                    sender = connect().await?;
                }
                let resp = match sender.send_request(req).await {
                    Ok(r) => r,
                    Err(e) if e.is_canceled() || e.is_closed() => {
                        sender = connect().await?;
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                };
                let status = resp.status();
                resp.into_body().collect().await?;
                anyhow::ensure!(status == 200, "answered {status}");
                if t >= measure_from {
                    latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                }
            }
            anyhow::Ok(latencies)
        }));
    }
    tokio::time::sleep_until(measure_from.into()).await;
    let ticks_before = cpu.map(Cpu::ticks);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.context("load task")??);
    }
    let [user, sys] = match (cpu, ticks_before) {
        (Some(c), Some(before)) => {
            let after = c.ticks();
            [0, 1].map(|i| after[i].saturating_sub(before[i]) as f64 / TICKS_PER_SECOND)
        }
        _ => [0.0, 0.0],
    };
    let requests = all.len().max(1) as f64;
    let per_request = |seconds: f64| seconds * 1e6 / requests;
    all.sort_by(f64::total_cmp);
    Ok(Figures {
        rps: all.len() as f64 / duration.as_secs_f64(),
        p50_ms: percentile(&all, 0.5),
        p99_ms: percentile(&all, 0.99),
        cpu_us: per_request(user + sys),
        sys_us: per_request(sys),
    })
}
