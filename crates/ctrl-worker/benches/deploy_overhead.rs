//! Control-plane overhead of a deploy, next to a bare Restate handler with
//! the same number of `ctx.run` steps on the same server.
//!
//! `cargo bench -p ctrl-worker --bench deploy_overhead [-- ROUNDS]`
//!
//! A deploy here is what CreateDeployment sets off: a pending deployment
//! row, then `Deploy/{id}/Deploy` through the ingress with the deployment id
//! as idempotency key; the request returns when the pipeline has finished
//! (ready and promoted). Readiness is signalled immediately: the instances
//! are reported running before the pipeline starts, so its first database
//! check passes and the time is the control plane's alone. Everything is
//! real: restate-server, MariaDB and the ctrl-worker binary.

#[path = "../tests/it/harness.rs"]
#[allow(dead_code)]
mod harness;

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use ctrl_testkit::{free_port, http_client};
use restate_sdk::prelude::*;
use serde_json::json;
use tokio::net::TcpListener;

use harness::Harness;

/// A handler doing `steps` no-op `ctx.run`s: the Restate cost alone.
struct Bare;

#[restate_sdk::service(name = "Bare")]
impl Bare {
    #[handler(name = "Run")]
    async fn run(&self, ctx: Context<'_>, steps: u32) -> HandlerResult<u32> {
        for i in 0..steps {
            ctx.run(|| async move { Ok(i) }).name("step").await?;
        }
        Ok(steps)
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20);
    let h = Harness::start().await?;

    let port = free_port()?;
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let serving = tokio::spawn(ctrl_worker::serve::serve(
        Endpoint::builder().bind(Bare).build(),
        listener,
        std::future::pending::<()>(),
        Duration::ZERO,
        ctrl_worker::metrics::WorkerMetrics::default(),
    ));
    h.restate
        .register(&format!("http://127.0.0.1:{port}"))
        .await?;

    // Warm up, and learn how many steps a deploy journals.
    let first = deploy(&h).await?;
    let steps = run_steps(&h, &first.1).await?;
    bare(&h, steps).await?;

    let mut deploys = Vec::with_capacity(rounds);
    let mut bares = Vec::with_capacity(rounds);
    let mut last = first.1;
    for _ in 0..rounds {
        let (took, id) = deploy(&h).await?;
        deploys.push(took);
        last = id;
        bares.push(bare(&h, steps).await?);
    }
    serving.abort();

    let (d50, d90) = percentiles(&mut deploys);
    let (b50, b90) = percentiles(&mut bares);
    println!(
        "deploy overhead, {rounds} rounds, {steps} ctx.run steps each (plus 2 Routing calls in the deploy)"
    );
    println!(
        "  deploy (CreateDeployment effects → ready): p50 {:>7.1} ms   p90 {:>7.1} ms",
        ms(d50),
        ms(d90)
    );
    println!(
        "  bare Restate handler, same steps:          p50 {:>7.1} ms   p90 {:>7.1} ms",
        ms(b50),
        ms(b90)
    );
    println!(
        "  ratio (p50): {:.2}x",
        d50.as_secs_f64() / b50.as_secs_f64()
    );
    println!("  phases of the last deploy (from its deployment_steps rows):");
    for step in ctrl_db::deployment::list_steps(&h.db.pool, &last).await? {
        let took = step.ended_at.unwrap_or(step.started_at) - step.started_at;
        println!("    {:<10} {took:>5} ms", step.step.as_str());
    }
    Ok(())
}

/// One deploy with readiness already satisfied; returns its time and id.
async fn deploy(h: &Harness) -> Result<(Duration, String)> {
    let id = h.pending_deployment(&h.production, None).await?;
    h.report_running(&id, 1).await?;
    let started = Instant::now();
    let response = http_client()
        .post(format!("{}/Deploy/{id}/Deploy", h.restate.ingress_url()))
        .header("idempotency-key", &id)
        .json(&json!({ "deployment_id": id }))
        .send()
        .await?;
    let took = started.elapsed();
    if !response.status().is_success() {
        bail!(
            "deploy {id}: {} {}",
            response.status(),
            response.text().await?
        );
    }
    Ok((took, id))
}

async fn bare(h: &Harness, steps: u32) -> Result<Duration> {
    let started = Instant::now();
    let (status, body) = h.call("Bare/Run", json!(steps)).await?;
    let took = started.elapsed();
    if status != 200 {
        bail!("Bare/Run: {status} {body}");
    }
    Ok(took)
}

/// The number of `ctx.run` steps in the journal of a deployment's pipeline.
async fn run_steps(h: &Harness, id: &str) -> Result<u32> {
    let rows = h.invocations("Deploy", id, "Deploy").await?;
    let invocation = rows
        .first()
        .and_then(|r| r["id"].as_str())
        .context("no Deploy invocation")?
        .to_owned();
    let rows = h
        .query(&format!(
            "SELECT COUNT(*) AS n FROM sys_journal WHERE id = '{invocation}' AND entry_type = 'Command: Run'"
        ))
        .await?;
    let n = rows[0]["n"].as_u64().context("journal count")?;
    Ok(u32::try_from(n)?)
}

fn percentiles(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() - 1) as f64 * q).round() as usize;
        samples[i]
    };
    (at(0.5), at(0.9))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
