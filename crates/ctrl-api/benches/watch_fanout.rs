//! What open WatchDeployment streams cost the rest of the API: the p50 and
//! p99 of GetDeployment (gRPC) with no watcher — the baseline, measured in
//! the same run — and with 100 and 1,000 watchers of one deployment, plus
//! the feeds (database poll loops) running and the process's resident
//! memory (server and clients share the process: an upper bound).
//!
//! `cargo bench -p ctrl-api --bench watch_fanout [-- CALLS]`
//!
//! Real MariaDB, the real router on loopback, tonic clients; the watchers
//! spread over ten HTTP/2 connections.

mod common;

#[path = "../tests/it/fixtures.rs"]
#[allow(dead_code)]
mod fixtures;

use std::time::{Duration, Instant};

use anyhow::Result;
use common::{TOKEN, state};
use ctrl_core::status::DeploymentStatus;
use ctrl_proto::ctrl::v1 as pb;
use pb::deployment_service_client::DeploymentServiceClient;
use tonic::transport::Channel;

fn authed<T>(msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {TOKEN}").parse().expect("header"),
    );
    req
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let calls: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(300);
    let state = state().await?;
    let app = fixtures::app(&state, true).await?;
    let id = fixtures::deployment(
        &state,
        &app.app,
        &app.production.id,
        None,
        DeploymentStatus::Deploying,
        "bench",
    )
    .await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let router = ctrl_api::rpc::router(state.clone());
    tokio::spawn(async move { axum::serve(ctrl_runtime::net::nodelay(listener), router).await });
    let mut reader =
        DeploymentServiceClient::new(Channel::from_shared(base.clone())?.connect().await?);

    println!("watch_fanout: GetDeployment over gRPC, {calls} calls; p50 / p99 in ms");
    let mut watchers = Vec::new();
    let mut baseline = None;
    for target in [0usize, 100, 1000] {
        while watchers.len() < target {
            let mut client =
                DeploymentServiceClient::new(Channel::from_shared(base.clone())?.connect().await?);
            for _ in 0..100 {
                let req = pb::WatchDeploymentRequest {
                    deployment_id: id.clone(),
                };
                let mut stream = client.watch_deployment(authed(req)).await?.into_inner();
                stream.message().await?;
                watchers.push(stream);
            }
        }
        // Let the feeds settle into their polling rhythm.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut samples = Vec::with_capacity(calls);
        for _ in 0..calls {
            let started = Instant::now();
            reader
                .get_deployment(authed(pb::GetDeploymentRequest {
                    deployment_id: id.clone(),
                }))
                .await?;
            samples.push(started.elapsed());
        }
        samples.sort();
        let (p50, p99) = (percentile(&samples, 50), percentile(&samples, 99));
        let base_p50 = *baseline.get_or_insert(p50);
        println!(
            "{target:>5} watchers: {:>6.2} / {:>6.2}   p50 {:>4.2}x the baseline   feeds running: {}   rss {} MiB",
            ms(p50),
            ms(p99),
            p50.as_secs_f64() / base_p50.as_secs_f64().max(1e-9),
            state.watch_feeds().running(),
            rss_mib()
        );
    }
    Ok(())
}

/// Resident memory of this process, from /proc.
fn rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
