use std::time::Duration;

use anyhow::Result;
use ctrl_provider::spec::{Persistence, Role, ServiceSpec, VolumeSpec, WorkloadKind};
use ctrl_provider::{Error, ExecRequest, Provider, ScaleRequest, State};

use crate::support::*;

#[tokio::test]
async fn provision_answers_http_and_applying_again_changes_nothing() -> Result<()> {
    let env = env().await?;
    let spec = web("shop", V1);
    let first = env.provider.provision(&spec).await?;
    assert!(first.changed);
    assert_eq!(first.release, "r1");
    assert_eq!(first.provider_ref, "ctrl-shop");
    assert_eq!(get(&first.endpoints[0].address, "/").await?, "v1");

    let status = env.provider.status("shop").await?;
    assert!(status.ready, "{status:#?}");
    assert_eq!(status.state, State::Running);
    assert_eq!((status.replicas, status.ready_replicas), (1, 1));
    let names = container_names(&env, "shop").await?;
    assert_eq!(names, ["shop-web-0-r1"]);

    // Every id is on the container, and the network is the workload's own.
    let inspect = env
        .podman
        .docker()
        .inspect_container(
            "shop-web-0-r1",
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await?;
    let labels = inspect.config.and_then(|c| c.labels).unwrap_or_default();
    for (key, value) in [
        ("ctrl.dev/workload", "shop"),
        ("ctrl.dev/service", "web"),
        ("ctrl.dev/replica", "0"),
        ("ctrl.dev/release", "r1"),
        ("ctrl.dev/deployment-id", "dep1"),
    ] {
        assert_eq!(labels.get(key).map(String::as_str), Some(value), "{key}");
    }
    let networks = inspect
        .network_settings
        .and_then(|n| n.networks)
        .unwrap_or_default();
    assert!(networks.contains_key("ctrl-shop"), "{networks:?}");

    let again = env.provider.provision(&spec).await?;
    assert!(!again.changed);
    assert_eq!(container_names(&env, "shop").await?, names);
    let after = env.provider.status("shop").await?;
    assert_eq!(
        after.services[0].provider_ref,
        status.services[0].provider_ref
    );
    Ok(())
}

#[tokio::test]
async fn stop_start_and_restart() -> Result<()> {
    let env = env().await?;
    env.provider.provision(&web("app", V1)).await?;

    env.provider.stop("app").await?;
    let stopped = env.provider.status("app").await?;
    assert_eq!(stopped.state, State::Stopped, "{stopped:#?}");
    assert!(!stopped.ready);
    assert!(stopped.endpoints.is_empty());

    env.provider.start("app").await?;
    assert_eq!(answer(&env.provider, "app").await?, "v1");

    let before = env.provider.status("app").await?;
    env.provider.restart("app").await?;
    let after = env.provider.status("app").await?;
    assert!(after.ready, "{after:#?}");
    assert_eq!(after.metadata["revision"], before.metadata["revision"]);
    assert_eq!(answer(&env.provider, "app").await?, "v1");
    // A restart keeps the container (and its logs) but restarts its process.
    assert_eq!(
        after.services[0].provider_ref,
        before.services[0].provider_ref
    );
    Ok(())
}

#[tokio::test]
async fn scale_up_and_down() -> Result<()> {
    let env = env().await?;
    env.provider.provision(&web("api", V1)).await?;
    env.provider
        .scale(
            "api",
            &ScaleRequest {
                replicas: Some(3),
                resources: None,
            },
        )
        .await?;
    let status = env.provider.status("api").await?;
    assert_eq!(
        (status.replicas, status.ready_replicas),
        (3, 3),
        "{status:#?}"
    );
    assert_eq!(status.endpoints.len(), 3);
    for endpoint in &status.endpoints {
        assert_eq!(get(&endpoint.address, "/").await?, "v1");
    }
    assert_eq!(
        container_names(&env, "api").await?,
        ["api-web-0-r1", "api-web-1-r1", "api-web-2-r1"]
    );

    env.provider
        .scale(
            "api",
            &ScaleRequest {
                replicas: Some(1),
                resources: None,
            },
        )
        .await?;
    assert_eq!(container_names(&env, "api").await?, ["api-web-0-r1"]);
    assert_eq!(env.provider.status("api").await?.replicas, 1);

    let zero = env
        .provider
        .scale(
            "api",
            &ScaleRequest {
                replicas: Some(0),
                resources: None,
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(zero, Error::InvalidSpec(_)), "{zero}");
    Ok(())
}

#[tokio::test]
async fn inits_run_first_and_sidecars_start_after_main() -> Result<()> {
    let env = env().await?;
    let mut spec = web("stack", V1);
    // The sidecar reaches main by its network alias as it starts: it would
    // exit (and fail the rollout) if main were not up yet.
    spec.services.push(ServiceSpec {
        role: Role::Sidecar,
        command: vec![
            "sh".into(),
            "-c".into(),
            "wget -q -O- http://web:8080/ && exec sleep 3600".into(),
        ],
        ..ServiceSpec::main("probe", V1)
    });
    spec.services.push(ServiceSpec {
        role: Role::Init,
        command: vec!["sh".into(), "-c".into(), "echo migrated".into()],
        ..ServiceSpec::main("migrate", V1)
    });
    env.provider.provision(&spec).await?;
    let status = env.provider.status("stack").await?;
    assert!(status.ready, "{status:#?}");
    let init = status
        .services
        .iter()
        .find(|s| s.service == "migrate")
        .unwrap();
    assert_eq!(
        (init.state, init.exit_code, init.message.as_str()),
        (State::Running, Some(0), "completed")
    );
    let sidecar = status
        .services
        .iter()
        .find(|s| s.service == "probe")
        .unwrap();
    assert_eq!(sidecar.state, State::Running);

    // A failing init fails the workload with its exit code and output.
    let mut bad = web("broken", V1);
    bad.services.push(ServiceSpec {
        role: Role::Init,
        command: vec![
            "sh".into(),
            "-c".into(),
            "echo cannot migrate; exit 2".into(),
        ],
        ..ServiceSpec::main("migrate", V1)
    });
    let err = env.provider.provision(&bad).await.unwrap_err().to_string();
    assert!(err.contains("init exited with code 2"), "{err}");
    assert!(err.contains("cannot migrate"), "{err}");
    // Nothing of the failed first release is left running.
    assert!(container_names(&env, "broken").await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn deprovision_removes_containers_volumes_and_network() -> Result<()> {
    let env = env().await?;
    let mut spec = web("db", V1);
    spec.kind = WorkloadKind::Stateful;
    spec.services[0].volumes.push(VolumeSpec {
        name: "data".into(),
        mount_path: "/data".into(),
        persistence: Persistence::Persistent,
    });
    env.provider.provision(&spec).await?;

    // Persistent data survives a new release (stop-then-start on the same volume).
    let write = ExecRequest {
        command: vec!["sh".into(), "-c".into(), "echo kept > /data/file".into()],
        ..Default::default()
    };
    assert_eq!(env.provider.exec("db", &write).await?.exit_code, 0);
    let mut next = spec.clone();
    next.release = "r2".into();
    next.services[0].image = V2.into();
    env.provider.provision(&next).await?;
    assert_eq!(answer(&env.provider, "db").await?, "v2");
    let read = ExecRequest {
        command: vec!["cat".into(), "/data/file".into()],
        ..Default::default()
    };
    assert_eq!(
        String::from_utf8(env.provider.exec("db", &read).await?.stdout)?,
        "kept\n"
    );

    env.provider.deprovision("db").await?;
    assert!(container_names(&env, "db").await?.is_empty());
    let docker = env.podman.docker();
    let volumes = docker
        .list_volumes(None::<bollard::query_parameters::ListVolumesOptions>)
        .await?
        .volumes
        .unwrap_or_default();
    assert!(
        volumes.iter().all(|v| !v.name.starts_with("db-")),
        "{volumes:?}"
    );
    let network = docker
        .inspect_network(
            "ctrl-db",
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await;
    assert!(network.is_err(), "network still there");
    assert!(matches!(
        env.provider.status("db").await,
        Err(Error::NotFound(_))
    ));
    // Removing what is gone succeeds.
    env.provider.deprovision("db").await?;
    Ok(())
}

#[tokio::test]
async fn provisioning_again_after_a_crash_half_way_finishes_the_job() -> Result<()> {
    let env = env_with(
        ctrl_provider::docker::DockerConfig {
            api_timeout: Duration::from_secs(10),
            ..test_config()
        },
        std::sync::Arc::new(ctrl_provider::NoSecrets),
    )
    .await?;
    env.provider.provision(&web("cr", V1)).await?;
    let mut next = web("cr", V2);
    next.release = "r2".into();
    next.services[0]
        .env
        .insert("HEALTHY_AFTER".into(), "2".into());
    // The agent "crashes" (its future is dropped) while the new container
    // runs but is not healthy yet.
    let mut rollout = Box::pin(env.provider.provision(&next));
    let crashed = async {
        loop {
            let status = env.provider.status("cr").await?;
            if status
                .services
                .iter()
                .any(|s| s.release == "r2" && s.state == State::Starting)
            {
                return anyhow::Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::select! {
        done = &mut rollout => panic!("rollout finished before the crash: {done:?}"),
        seen = crashed => seen?,
    }
    drop(rollout);
    assert_eq!(container_names(&env, "cr").await?.len(), 2);

    let result = env.provider.provision(&next).await?;
    assert_eq!(result.release, "r2");
    assert_eq!(container_names(&env, "cr").await?, ["cr-web-0-r2"]);
    assert_eq!(answer(&env.provider, "cr").await?, "v2");
    Ok(())
}

/// Two agents (different regions or clusters) on one engine: each lists
/// and observes only its own containers, so neither takes the other's for
/// an orphan; containers without the labels (made before them) stay the
/// agent's own.
#[tokio::test]
async fn agents_sharing_an_engine_never_see_each_others_workloads() -> Result<()> {
    let env = env_with(
        ctrl_provider::docker::DockerConfig {
            region: "eu".into(),
            cluster: "eu-1".into(),
            ..test_config()
        },
        std::sync::Arc::new(ctrl_provider::NoSecrets),
    )
    .await?;
    let other = ctrl_provider::docker::DockerProvider::connect(
        env.podman.docker().clone(),
        ctrl_provider::docker::DockerConfig {
            region: "us".into(),
            cluster: "us-1".into(),
            ..test_config()
        },
        std::sync::Arc::new(ctrl_provider::NoSecrets),
    )
    .await?;
    env.provider.provision(&web("ours", V1)).await?;
    other.provision(&web("theirs", V1)).await?;
    let ids = |list: Vec<ctrl_provider::WorkloadSummary>| {
        list.into_iter().map(|w| w.id).collect::<Vec<_>>()
    };
    assert_eq!(ids(env.provider.list().await?), ["ours"]);
    assert_eq!(ids(other.list().await?), ["theirs"]);
    assert!(matches!(
        env.provider.status("theirs").await,
        Err(Error::NotFound(_))
    ));
    assert!(env.provider.status("ours").await?.ready);
    for label in ["ctrl.dev/region=eu", "ctrl.dev/cluster=eu-1"] {
        let labelled = env
            .podman
            .docker()
            .list_containers(Some(bollard::query_parameters::ListContainersOptions {
                all: true,
                filters: Some(std::collections::HashMap::from([(
                    "label".to_owned(),
                    vec![label.to_owned()],
                )])),
                ..Default::default()
            }))
            .await?;
        assert_eq!(labelled.len(), 1, "{label}");
    }
    // Deprovisioning one agent's workload leaves the other's running.
    env.provider.deprovision("ours").await?;
    assert!(other.status("theirs").await?.ready);
    Ok(())
}
