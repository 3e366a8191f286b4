use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Result;
use ctrl_provider::{DeployRequest, Error, Provider, ServiceUpdate};

use crate::support::*;

/// Like an edge proxy: every 50 ms, resolve the workload's endpoints and
/// send one request. Returns (ok, failed, answers seen).
fn poll_every_50ms(
    provider: ctrl_provider::docker::DockerProvider,
    workload: &'static str,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(usize, Vec<String>, Vec<String>)> {
    tokio::spawn(async move {
        let ok = AtomicUsize::new(0);
        let mut failures = Vec::new();
        let mut seen = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            let result = async {
                let status = provider.status(workload).await?;
                let endpoint = status
                    .endpoints
                    .first()
                    .ok_or_else(|| anyhow::anyhow!("no endpoint: {status:?}"))?;
                get(&endpoint.address, "/").await
            }
            .await;
            match result {
                Ok(answer) => {
                    ok.fetch_add(1, Ordering::SeqCst);
                    if seen.last() != Some(&answer) {
                        seen.push(answer);
                    }
                }
                Err(e) => failures.push(e.to_string()),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (ok.load(Ordering::SeqCst), failures, seen)
    })
}

#[tokio::test]
async fn image_update_rolls_without_a_failed_request_and_rolls_back() -> Result<()> {
    let env = env().await?;
    env.provider.provision(&web("web", V1)).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let client = poll_every_50ms(env.provider.clone(), "web", stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let deployed = env
        .provider
        .deploy(
            "web",
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
    assert_eq!(
        (
            deployed.release.as_str(),
            deployed.revision,
            deployed.changed
        ),
        ("r2", 2, true)
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let (ok, failures, seen) = client.await?;
    assert!(
        failures.is_empty(),
        "{} failed of {}: {failures:?}",
        failures.len(),
        ok + failures.len()
    );
    assert!(ok >= 10, "only {ok} requests");
    assert_eq!(seen, ["v1", "v2"]);
    assert_eq!(container_names(&env, "web").await?, ["web-web-0-r2"]);

    // Rollback restores the previous image, as a new revision.
    let back = env.provider.rollback("web", "r1").await?;
    assert_eq!((back.release.as_str(), back.revision), ("r1", 3));
    assert_eq!(answer(&env.provider, "web").await?, "v1");
    let status = env.provider.status("web").await?;
    assert_eq!(status.release, "r1");
    let inspect = env
        .podman
        .docker()
        .inspect_container(
            "web-web-0-r3",
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await?;
    assert_eq!(inspect.config.and_then(|c| c.image).as_deref(), Some(V1));
    // ...and r2 can be rolled forward again.
    env.provider.rollback("web", "r2").await?;
    assert_eq!(answer(&env.provider, "web").await?, "v2");

    let unknown = env.provider.rollback("web", "r9").await.unwrap_err();
    assert!(
        matches!(&unknown, Error::UnknownRelease { known, .. } if known == "r2, r1"),
        "{unknown}"
    );
    Ok(())
}

#[tokio::test]
async fn a_release_that_never_gets_healthy_is_undone() -> Result<()> {
    let env = env().await?;
    env.provider.provision(&web("svc", V1)).await?;
    let mut check = web("svc", V1).services[0].health_check.clone().unwrap();
    check.start_period = Duration::from_secs(1);
    let err = env
        .provider
        .deploy(
            "svc",
            &DeployRequest {
                release: "bad".into(),
                services: vec![ServiceUpdate {
                    name: "web".into(),
                    image: Some(V2.into()),
                    env: Some(BTreeMap::from([("UNHEALTHY".into(), "1".into())])),
                    health_check: Some(check),
                    ..Default::default()
                }],
            },
        )
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, Error::RolloutFailed { .. }), "{message}");
    assert!(message.contains("not ready within"), "{message}");
    assert!(message.contains("404"), "{message}");
    assert!(
        message.contains("last output: ") && message.contains("response:404"),
        "the app's output is in the error: {message}"
    );

    let status = env.provider.status("svc").await?;
    assert_eq!(status.release, "r1");
    assert!(status.ready);
    assert_eq!(answer(&env.provider, "svc").await?, "v1");
    assert_eq!(container_names(&env, "svc").await?, ["svc-web-0-r1"]);
    // The failed release is not offered for rollback.
    let rollback = env.provider.rollback("svc", "bad").await.unwrap_err();
    assert!(
        matches!(rollback, Error::UnknownRelease { .. }),
        "{rollback}"
    );
    Ok(())
}

#[tokio::test]
async fn an_env_only_change_is_a_new_revision() -> Result<()> {
    let env = env().await?;
    env.provider.provision(&web("cfg", V1)).await?;
    let result = env
        .provider
        .deploy(
            "cfg",
            &DeployRequest {
                release: "r2".into(),
                services: vec![ServiceUpdate {
                    name: "web".into(),
                    env: Some(BTreeMap::from([("VERSION".into(), "from-env".into())])),
                    ..Default::default()
                }],
            },
        )
        .await?;
    assert!(result.changed);
    assert_eq!(answer(&env.provider, "cfg").await?, "from-env");

    let unknown = env
        .provider
        .deploy(
            "cfg",
            &DeployRequest {
                release: "r3".into(),
                services: vec![ServiceUpdate {
                    name: "nope".into(),
                    ..Default::default()
                }],
            },
        )
        .await
        .unwrap_err();
    assert!(
        unknown.to_string().contains("unknown service \"nope\""),
        "{unknown}"
    );
    Ok(())
}
