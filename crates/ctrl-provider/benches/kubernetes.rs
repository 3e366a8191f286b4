//! The Kubernetes backend against the testkit's fake API server: apply
//! latency per workload, API requests per deploy, and a reconcile of 1,000
//! workloads — each next to a baseline measured in the same run (a bare
//! API round trip; what an agent without watch caches would at least ask:
//! one GET per workload).
//!
//! `cargo bench -p ctrl-provider --bench kubernetes [-- WORKLOADS]` (default 1000).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ctrl_provider::kubernetes::{KubernetesConfig, KubernetesProvider};
use ctrl_provider::spec::{HealthCheck, PortSpec, Protocol, ServiceSpec, WorkloadKind};
use ctrl_provider::{NoSecrets, Provider, WorkloadSpec};
use ctrl_testkit::FakeKube;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;

fn spec(id: &str, namespace: &str) -> WorkloadSpec {
    WorkloadSpec {
        id: id.into(),
        release: "r1".into(),
        kind: WorkloadKind::Stateless,
        replicas: 1,
        services: vec![ServiceSpec {
            ports: vec![PortSpec {
                container: 8080,
                host: None,
                protocol: Protocol::Tcp,
            }],
            health_check: Some(HealthCheck::http(8080, "/health")),
            ..ServiceSpec::main("web", "registry.example/web:v1")
        }],
        labels: BTreeMap::from([("ctrl.dev/namespace".to_owned(), namespace.to_owned())]),
        autoscaling: None,
        network_policy: None,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentiles(label: &str, mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "{label:<46} n={:<5} p50 {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms",
        samples.len(),
        ms(at(0.5)),
        ms(at(0.99)),
        ms(at(1.0)),
    );
    at(0.5)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let workloads: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1000);
    let fake = FakeKube::start().await?;
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    fake.write_kubeconfig(&kubeconfig)?;
    let config = KubernetesConfig {
        kubeconfig: Some(kubeconfig.clone()),
        api_timeout_seconds: 60,
        ..KubernetesConfig::default()
    };
    let provider = KubernetesProvider::connect(config.clone(), Arc::new(NoSecrets)).await?;
    let client = provider.client().clone();

    // Baseline: one bare round trip to the API.
    let mut round_trips = Vec::new();
    for _ in 0..200 {
        let started = Instant::now();
        client.apiserver_version().await?;
        round_trips.push(started.elapsed());
    }
    let rtt = percentiles("baseline: GET /version", round_trips);

    // Apply latency per workload (apply → pods ready) and its requests.
    let mut applies = Vec::new();
    fake.reset_requests();
    let sample = 50.min(workloads);
    for i in 0..sample {
        let started = Instant::now();
        provider.provision(&spec(&format!("w{i}"), "bench")).await?;
        applies.push(started.elapsed());
    }
    let requests = fake.requests();
    let writes = requests.iter().filter(|r| r.method != "GET").count();
    let apply = percentiles("provision → ready (fake pods ready ~50-100 ms)", applies);
    println!(
        "API requests per deploy: {:.2} ({:.2} writes, {:.2} reads; namespace applied once per process)",
        requests.len() as f64 / sample as f64,
        writes as f64 / sample as f64,
        (requests.len() - writes) as f64 / sample as f64
    );
    println!(
        "provision p50 = {:.1} × the API round trip",
        ms(apply) / ms(rtt)
    );

    // The rest, 20 at a time, to have `workloads` in the cluster.
    let rest: Vec<usize> = (sample..workloads).collect();
    futures::stream::iter(rest)
        .map(|i| {
            let provider = provider.clone();
            async move { provider.provision(&spec(&format!("w{i}"), "bench")).await }
        })
        .buffer_unordered(20)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    println!("{workloads} workloads running");

    // Reconcile: list, then re-apply every workload (all unchanged).
    fake.reset_requests();
    let started = Instant::now();
    let listed = provider.list().await?;
    for w in &listed {
        let result = provider.provision(&spec(&w.id, "bench")).await?;
        assert!(!result.changed);
    }
    let reconcile = started.elapsed();
    println!(
        "reconcile of {} workloads: {:.1} ms, {} API requests",
        listed.len(),
        ms(reconcile),
        fake.request_count()
    );

    // Baseline: one GET per workload, what a cache-less agent needs at least.
    let api: kube::Api<Deployment> = kube::Api::namespaced(client.clone(), "bench");
    let started = Instant::now();
    for w in &listed {
        api.get(&w.id).await?;
    }
    let naive = started.elapsed();
    println!(
        "baseline: one GET per workload: {:.1} ms → the cached reconcile takes {:.3} × that",
        ms(naive),
        reconcile.as_secs_f64() / naive.as_secs_f64()
    );

    // A restarted agent: connect (one list per watched kind) and reconcile.
    fake.reset_requests();
    let started = Instant::now();
    let restarted = KubernetesProvider::connect(config, Arc::new(NoSecrets)).await?;
    let connected = started.elapsed();
    for w in restarted.list().await? {
        restarted.provision(&spec(&w.id, "bench")).await?;
    }
    println!(
        "restarted agent: caches filled in {:.1} ms, reconcile of {workloads} done in {:.1} ms total, {} API requests ({} writes)",
        ms(connected),
        ms(started.elapsed()),
        fake.request_count(),
        fake.requests().iter().filter(|r| r.method != "GET").count()
    );
    Ok(())
}
