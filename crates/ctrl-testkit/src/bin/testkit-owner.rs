//! Test helper for ctrl-testkit's cleanup tests (not a user-facing tool).
//!
//! Starts a Restate server, a MariaDB server, pebble-challtestsrv, pebble,
//! moto and a podman API service with a running container, prints
//! `pids <restate> <mariadb> <challtestsrv> <pebble> <moto> <podman> <container>`
//! and then, depending on its argument, panics (`panic`) or waits to be
//! killed (`hang`). The tests then check that nothing it started survives.

use std::io::Write;
use std::time::Duration;

use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{CreateContainerOptionsBuilder, InspectContainerOptions};
use ctrl_testkit::{ChallTestSrv, MariaDb, Moto, Pebble, Podman, RestateServer};

#[tokio::main]
async fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let restate = RestateServer::start().await.expect("start restate");
    let mariadb = MariaDb::start().await.expect("start mariadb");
    let dns = ChallTestSrv::start()
        .await
        .expect("start pebble-challtestsrv");
    let pebble = Pebble::start(&dns, ctrl_testkit::free_port().expect("a free port"))
        .await
        .expect("start pebble");
    let moto = Moto::start().await.expect("start moto");
    let podman = Podman::start().await.expect("start podman");
    podman
        .import_busybox_image("localhost/owner-test:latest")
        .expect("import image");
    let docker = podman.docker();
    let options = CreateContainerOptionsBuilder::new()
        .name("owner-test")
        .build();
    let body = ContainerCreateBody {
        image: Some("localhost/owner-test:latest".into()),
        cmd: Some(vec!["sleep".into(), "300".into()]),
        ..Default::default()
    };
    docker
        .create_container(Some(options), body)
        .await
        .expect("create container");
    docker
        .start_container("owner-test", None)
        .await
        .expect("start container");
    let inspect = docker
        .inspect_container("owner-test", None::<InspectContainerOptions>)
        .await
        .expect("inspect container");
    let container_pid = inspect.state.and_then(|s| s.pid).unwrap_or_default();
    println!(
        "pids {} {} {} {} {} {} {container_pid}",
        restate.pid().unwrap_or_default(),
        mariadb.pid(),
        dns.pid(),
        pebble.pid(),
        moto.pid(),
        podman.pid().unwrap_or_default(),
    );
    std::io::stdout().flush().expect("flush stdout");
    match mode.as_str() {
        "panic" => panic!("testkit-owner panics on purpose"),
        _ => loop {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        },
    }
}
