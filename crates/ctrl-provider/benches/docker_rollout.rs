//! Provision-to-healthy and rolling-deploy times of the Docker backend on a
//! real podman, for 1 and 5 replicas. Prints figures; asserts nothing
//! about speed (shared machines are noisy).
//!
//! `cargo bench -p ctrl-provider --bench docker_rollout [-- ROUNDS]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use ctrl_provider::docker::{DockerConfig, DockerProvider};
use ctrl_provider::spec::{HealthCheck, PortSpec, Protocol, ServiceSpec};
use ctrl_provider::{DeployRequest, NoSecrets, Provider, ServiceUpdate, WorkloadSpec};
use ctrl_testkit::{Podman, images};

const V1: &str = "localhost/bench:v1";
const V2: &str = "localhost/bench:v2";

fn spec(id: &str, replicas: u32) -> WorkloadSpec {
    WorkloadSpec {
        id: id.into(),
        release: "r1".into(),
        kind: Default::default(),
        replicas,
        services: vec![ServiceSpec {
            ports: vec![PortSpec {
                container: 8080,
                host: None,
                protocol: Protocol::Tcp,
            }],
            health_check: Some(HealthCheck {
                interval: Duration::from_millis(100),
                ..HealthCheck::http(8080, "/health")
            }),
            stop_grace: Duration::from_secs(2),
            ..ServiceSpec::main("web", V1)
        }],
        labels: Default::default(),
        autoscaling: None,
        network_policy: None,
    }
}

fn summary(label: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{label:<34} n={:<3} min {:>7.0} ms  p50 {:>7.0} ms  max {:>7.0} ms",
        samples.len(),
        ms(samples[0]),
        ms(samples[samples.len() / 2]),
        ms(samples[samples.len() - 1]),
    );
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5);
    let podman = Podman::start().await?;
    images::build_http_image(podman.docker(), V1).await?;
    images::derive_image(podman.docker(), V1, V2, &[("VERSION", "v2")]).await?;
    // Drain delay 0: the figures measure the engine and the health gate,
    // not the configured drain time (default 2 s, run in parallel with the next replica).
    let config = DockerConfig {
        drain_delay: Duration::ZERO,
        ..DockerConfig::default()
    };
    let provider =
        DockerProvider::connect(podman.docker().clone(), config, Arc::new(NoSecrets)).await?;
    println!("podman {} — {rounds} rounds each", provider.info().version);
    for replicas in [1u32, 5] {
        let (mut provision, mut deploy) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            let id = format!("b{replicas}x{round}");
            let started = Instant::now();
            let result = provider.provision(&spec(&id, replicas)).await?;
            provision.push(started.elapsed());
            assert_eq!(result.endpoints.len(), replicas as usize);

            let started = Instant::now();
            provider
                .deploy(
                    &id,
                    &DeployRequest {
                        release: "r2".into(),
                        services: vec![ServiceUpdate {
                            name: "web".into(),
                            image: Some(V2.into()),
                            ..Default::default()
                        }],
                    },
                )
                .await?;
            deploy.push(started.elapsed());
            provider.deprovision(&id).await?;
        }
        summary(
            &format!("provision → healthy, {replicas} replica(s)"),
            provision,
        );
        summary(&format!("rolling deploy, {replicas} replica(s)"), deploy);
    }
    Ok(())
}
