//! Push-to-deploy figures, on the real stack of the webhook tests (ctrl-api's
//! router in process, restate-server, the worker process, MariaDB, podman,
//! docker-registry, the fake GitHub).
//!
//! `cargo bench -p ctrl-worker --bench webhooks [-- ROUNDS]`
//!
//! Each round pushes a new commit to a new branch and sends its signed
//! `push` delivery:
//!
//! - webhook → deployment created: from the POST to the preview
//!   deployment's row existing (signature check, Restate ingress, the
//!   GitHubWebhook object, the row and its Deploy workflow sent), against
//!   the baseline of the same run: a signed `ping`, which ctrl-api answers
//!   itself (the HTTP round trip and the signature check).
//! - webhook → preview ready: to the deployment being ready, its image
//!   built from the repository's tarball (layers cached after the first
//!   round) and its instances reported at once by the harness (an agent that
//!   answers immediately). The edge serves a new route within the figures
//!   `cargo xtask edge` prints (about 20 ms), so this is when the preview URL
//!   answers, give or take those.
//!
//! Figures are printed, never asserted: these machines are shared.

#[path = "../tests/it/harness.rs"]
#[allow(dead_code)]
mod harness;

#[path = "../tests/it/build_stack.rs"]
#[allow(dead_code)]
mod build_stack;

#[path = "../tests/it/github_stack.rs"]
#[allow(dead_code)]
mod github_stack;

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use ctrl_core::status::DeploymentStatus;
use ctrl_db::deployment;
use github_stack::{REPO, SECRET, Stack, ZERO, push_payload, web_commit};
use serde_json::json;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5);
    let st = Stack::start().await?;

    let mut ping = Vec::new();
    for i in 0..rounds * 4 {
        let started = Instant::now();
        let (status, _) = st
            .deliver(
                "ping",
                &format!("ping-{i}"),
                &json!({"zen": "x"}),
                Some(SECRET),
            )
            .await?;
        if status != 200 {
            bail!("ping answered {status}");
        }
        ping.push(started.elapsed());
    }

    let (mut created, mut ready) = (Vec::new(), Vec::new());
    for i in 0..rounds {
        let branch = format!("bench-{i}");
        let sha = st
            .github
            .push(REPO, &branch, web_commit(&format!("Round {i}"), "bench\n"));
        let delivery = format!("bench-push-{i}");
        let payload = push_payload(&branch, ZERO, &sha, &["web/index.html"], false);
        let started = Instant::now();
        let (status, body) = st
            .deliver("push", &delivery, &payload, Some(SECRET))
            .await?;
        if status != 202 {
            bail!("push answered {status}: {body}");
        }
        let key = format!("github:{delivery}");
        let id = loop {
            if let Some(d) =
                deployment::find_by_idempotency_key(&st.s.h.db.pool, &st.s.h.app, &key).await?
            {
                break d.id;
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("no deployment for {delivery}");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        created.push(started.elapsed());
        st.s.h.wait_status(&id, DeploymentStatus::Deploying).await?;
        st.s.h.report_running(&id, 1).await?;
        st.s.h.wait_status(&id, DeploymentStatus::Ready).await?;
        ready.push(started.elapsed());
    }

    let (p, c, r) = (stats(&mut ping), stats(&mut created), stats(&mut ready));
    println!("push to deploy, {rounds} rounds (each a new branch: a preview)");
    println!(
        "  baseline: signed ping answered        p50 {:>8.1} ms  p99 {:>8.1} ms",
        p.0, p.1
    );
    println!(
        "  webhook → deployment created          p50 {:>8.1} ms  p99 {:>8.1} ms  ({:.1}× the baseline)",
        c.0,
        c.1,
        c.0 / p.0.max(0.001)
    );
    println!(
        "  webhook → preview ready (built)       p50 {:>8.1} ms  p99 {:>8.1} ms",
        r.0, r.1
    );
    Ok(())
}

/// (p50, p99) in milliseconds.
fn stats(samples: &mut [Duration]) -> (f64, f64) {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[i].as_secs_f64() * 1000.0
    };
    (at(0.5), at(0.99))
}
