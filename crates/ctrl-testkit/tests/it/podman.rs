use std::collections::HashMap;

use anyhow::Result;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, ListContainersOptionsBuilder,
};
use ctrl_testkit::Podman;
use ctrl_testkit::process::ProcessId;

#[tokio::test]
async fn serves_the_docker_api_and_runs_real_containers() -> Result<()> {
    let podman = Podman::start().await?;
    let docker = podman.docker();
    let version = docker.version().await?;
    assert!(version.api_version.is_some(), "{version:?}");

    podman.import_busybox_image("localhost/testkit-probe:latest")?;
    let labels = HashMap::from([("ctrl.test".to_owned(), "podman-proof".to_owned())]);
    let options = CreateContainerOptionsBuilder::new().name("probe").build();
    let body = ContainerCreateBody {
        image: Some("localhost/testkit-probe:latest".into()),
        cmd: Some(vec!["sleep".into(), "300".into()]),
        labels: Some(labels),
        ..Default::default()
    };
    docker.create_container(Some(options), body).await?;
    docker.start_container("probe", None).await?;

    let filters = HashMap::from([("label", vec!["ctrl.test=podman-proof"])]);
    let list = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    let containers = docker.list_containers(Some(list)).await?;
    assert_eq!(containers.len(), 1, "{containers:?}");
    assert_eq!(
        containers[0]
            .state
            .as_ref()
            .map(|s| s.to_string())
            .as_deref(),
        Some("running")
    );

    let inspect = docker
        .inspect_container("probe", None::<InspectContainerOptions>)
        .await?;
    let pid = inspect
        .state
        .and_then(|s| s.pid)
        .expect("a running container has a pid");
    let process = ProcessId::of(i32::try_from(pid)?).expect("the container's process runs");

    // Dropping the handle removes the container: its process is gone too.
    let service = podman.pid().expect("service runs");
    drop(podman);
    assert!(
        !process.is_alive(),
        "container process {pid} outlived the podman handle"
    );
    assert!(
        ProcessId::of(service).is_none(),
        "podman service {service} outlived its handle"
    );
    Ok(())
}
