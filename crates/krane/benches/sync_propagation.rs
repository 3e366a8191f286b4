//! Change propagation through cluster-sync: commit → agent receives it, for
//! 1, 10 and 50 agents watching one region (one shared feed), and the time
//! of a full snapshot of 10,000 deployments. Real MariaDB; prints figures.
//!
//! `cargo bench -p krane --bench sync_propagation [-- <changes>]`

#[path = "../tests/it/support.rs"]
#[allow(dead_code, unreachable_pub)]
mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use ctrl_proto::ctrl::v1 as pb;
use support::{Seed, SyncServer};

#[tokio::main]
async fn main() -> Result<()> {
    let changes: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200);
    let db = ctrl_testkit::test_database().await?;
    let seed = Seed::new(&db.pool).await?;
    let settings = ctrl_cluster_sync::Settings::default();
    println!(
        "cluster-sync defaults: feed poll {:?}, page {}",
        settings.feed.poll_interval, settings.page_size
    );
    let server = SyncServer::start(&db.pool, "http://127.0.0.1:9", settings).await?;
    let mut deployments = Vec::new();
    for _ in 0..20 {
        deployments.push(seed.deployment(&db.pool).await?);
    }
    println!("propagation (commit → received), {changes} changes each:");
    for agents in [1usize, 10, 50] {
        let received: Arc<Mutex<Vec<HashMap<u64, Instant>>>> =
            Arc::new(Mutex::new(vec![HashMap::new(); agents]));
        let control = server.control("bench-1").await?;
        control.heartbeat(pb::AgentBackend::Docker).await?;
        let start = ctrl_db::topology::current_version(&db.pool, &seed.region).await?;
        let mut tasks = Vec::new();
        for agent in 0..agents {
            let mut stream = control.watch(start).await?;
            let received = received.clone();
            tasks.push(tokio::spawn(async move {
                while let Ok(Some(msg)) = stream.message().await {
                    if msg.event.is_some() {
                        received.lock().unwrap()[agent].insert(msg.version, Instant::now());
                    }
                }
            }));
        }
        let mut committed = HashMap::new();
        for i in 0..changes {
            let d = &deployments[i % deployments.len()];
            let version = seed
                .set(&db.pool, d, i % 3 != 0, 1 + (i % 2) as u32)
                .await?;
            // A no-op returns an older version (or 0): nothing new to deliver.
            if version > start {
                committed.insert(version, Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Let the last ones arrive.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let done = received
                .lock()
                .unwrap()
                .iter()
                .all(|r| committed.keys().all(|v| r.contains_key(v)));
            if done {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut latencies: Vec<Duration> = Vec::new();
        let mut missing = 0;
        for r in received.lock().unwrap().iter() {
            for (v, at) in &committed {
                match r.get(v) {
                    Some(got) => latencies.push(got.saturating_duration_since(*at)),
                    None => missing += 1,
                }
            }
        }
        latencies.sort();
        let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
        println!(
            "  {agents:>2} agents: p50 {:>6.1} ms  p99 {:>6.1} ms  max {:>6.1} ms  ({} deliveries, {missing} missing, feeds {})",
            pct(0.5).as_secs_f64() * 1e3,
            pct(0.99).as_secs_f64() * 1e3,
            pct(1.0).as_secs_f64() * 1e3,
            latencies.len(),
            server.sync.as_ref().unwrap().feeds().active(),
        );
        for t in tasks {
            t.abort();
        }
    }

    // Full snapshot of 10,000 running deployments.
    let n = 10_000;
    let fill = Instant::now();
    for _ in 0..n {
        let d = seed.deployment(&db.pool).await?;
        seed.set(&db.pool, &d, true, 1).await?;
    }
    println!(
        "snapshot: {n} deployments inserted in {:.1} s",
        fill.elapsed().as_secs_f64()
    );
    let control = server.control("bench-1").await?;
    for run in 1..=3 {
        let started = Instant::now();
        let mut stream = control.snapshot().await?;
        let mut count = 0u64;
        let mut complete = None;
        while let Some(msg) = stream.message().await? {
            match msg.event {
                Some(pb::sync_desired_state_response::Event::Deployment(_)) => count += 1,
                Some(pb::sync_desired_state_response::Event::Complete(c)) => complete = Some(c),
                None => {}
            }
        }
        let complete = complete.expect("snapshot completes");
        println!(
            "  run {run}: {count} deployments ({} announced) in {:.0} ms",
            complete.deployments,
            started.elapsed().as_secs_f64() * 1e3
        );
    }
    Ok(())
}
