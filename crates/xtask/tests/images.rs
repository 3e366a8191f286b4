//! `cargo xtask images` for real, on the testkit's podman through the Docker
//! API: every image builds from `deploy/Dockerfile`, its binary starts from
//! it (so the root filesystem holds every library it loads), it runs as uid
//! 10001, and ctrl-api migrates a database and then serves from its image —
//! read-only root filesystem, no capabilities — against a real MariaDB and
//! Restate until `/health/ready` answers.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType};
use bollard::query_parameters::{CreateContainerOptions, LogsOptions, WaitContainerOptions};
use ctrl_testkit::{Podman, RestateServer};
use futures::StreamExt;

const TOKEN: &str = "image-test-token-0123456789";
const VAULT_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// The images `xtask images` builds, each named after the binary it runs.
const IMAGES: [&str; 6] = [
    "ctrl-api",
    "ctrl-worker",
    "ctrl-cluster-sync",
    "krane",
    "frontline",
    "ctrl",
];

fn image(name: &str) -> String {
    format!("localhost/it/{name}:t")
}

/// Runs `image` with `args` (after `entrypoint` instead of the image's,
/// when given) on a read-only root filesystem as its own user (host
/// network, `/etc/ctrl` from `config_dir`, a tmpfs `/tmp`); returns the
/// container's id once it runs.
async fn run(
    docker: &Docker,
    name: &str,
    image: &str,
    entrypoint: Option<&str>,
    args: &[&str],
    env: &[String],
    config_dir: Option<&Path>,
) -> Result<String> {
    let mounts = config_dir.map(|dir| {
        vec![Mount {
            target: Some("/etc/ctrl".into()),
            source: Some(dir.display().to_string()),
            typ: Some(MountType::BIND),
            read_only: Some(true),
            ..Default::default()
        }]
    });
    let body = ContainerCreateBody {
        image: Some(image.to_owned()),
        entrypoint: entrypoint.map(|e| vec![e.to_owned()]),
        cmd: Some(args.iter().map(|a| (*a).to_owned()).collect()),
        env: Some(env.to_vec()),
        host_config: Some(HostConfig {
            network_mode: Some("host".into()),
            readonly_rootfs: Some(true),
            cap_drop: Some(vec!["ALL".into()]),
            tmpfs: Some(HashMap::from([("/tmp".into(), "rw,size=16m".into())])),
            mounts,
            ..Default::default()
        }),
        ..Default::default()
    };
    let id = docker
        .create_container(
            Some(CreateContainerOptions {
                name: Some(name.to_owned()),
                ..Default::default()
            }),
            body,
        )
        .await
        .with_context(|| format!("create {name}"))?
        .id;
    docker
        .start_container(
            &id,
            None::<bollard::query_parameters::StartContainerOptions>,
        )
        .await
        .with_context(|| format!("start {name}"))?;
    Ok(id)
}

/// Waits for a container to exit; returns its exit code and output.
async fn finish(docker: &Docker, id: &str) -> Result<(i64, String)> {
    let mut wait = docker.wait_container(id, None::<WaitContainerOptions>);
    let code = match tokio::time::timeout(Duration::from_secs(60), wait.next()).await {
        Ok(Some(Ok(status))) => status.status_code,
        // A non-zero exit arrives as an error carrying the code.
        Ok(Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. }))) => code,
        other => bail!("waiting for {id}: {other:?}"),
    };
    Ok((code, output(docker, id).await))
}

async fn output(docker: &Docker, id: &str) -> String {
    let mut logs = docker.logs(
        id,
        Some(LogsOptions {
            stdout: true,
            stderr: true,
            ..Default::default()
        }),
    );
    let mut text = String::new();
    while let Some(Ok(chunk)) = logs.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
    }
    text
}

#[tokio::test]
async fn every_image_builds_and_ctrl_api_serves_from_its_image_read_only_as_uid_10001() -> Result<()>
{
    let podman = Podman::start().await?;
    let docker = podman.docker().clone();

    // The test build's binaries, next to this xtask binary.
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_xtask"))
        .parent()
        .expect("a directory");
    let context = tempfile::tempdir()?;
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .arg("images")
        .arg("--bin-dir")
        .arg(bin_dir)
        .arg("--context-dir")
        .arg(context.path())
        .args(["--docker-host", &podman.docker_host()])
        .args(["--prefix", "localhost/it", "--tag", "t"])
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "xtask images (debug binaries) in {:.1?}:\n{stdout}",
        started.elapsed()
    );

    // Only what the binaries load is in the root filesystem: no shell.
    let rootfs = context.path().join("rootfs");
    assert!(rootfs.join("etc/ssl/certs/ca-certificates.crt").is_file());
    assert!(!rootfs.join("bin/sh").exists());

    for name in IMAGES {
        let tag = image(name);
        assert!(stdout.contains(&tag), "{tag} not reported:\n{stdout}");
        let inspected = docker.inspect_image(&tag).await?;
        let config = inspected.config.expect("a config");
        assert_eq!(config.user.as_deref(), Some("10001:10001"), "{tag}");
        assert_eq!(config.entrypoint, Some(vec![name.to_owned()]), "{tag}");
        // The binary starts from its image: every library it loads is there.
        let id = run(
            &docker,
            &format!("it-version-{name}"),
            &tag,
            None,
            &["--version"],
            &[],
            None,
        )
        .await?;
        let (code, text) = finish(&docker, &id).await?;
        assert_eq!(code, 0, "{tag} --version: {text}");
        assert!(text.starts_with(name), "{tag} --version: {text}");
    }
    // krane hands its static ctrl-init to containers with secret variables;
    // it is in krane's image and runs there (no program given: usage).
    let id = run(
        &docker,
        "it-ctrl-init",
        &image("krane"),
        Some("ctrl-init"),
        &[],
        &[],
        None,
    )
    .await?;
    let (code, text) = finish(&docker, &id).await?;
    assert_eq!(code, 127, "{text}");
    assert!(text.contains("ctrl-init: usage"), "{text}");

    // ctrl-api against a real MariaDB (a fresh, empty database) and Restate.
    let seed = ctrl_testkit::test_database().await?;
    let database = format!("{}_img", seed.name);
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE `{database}`")))
        .execute(&seed.pool)
        .await?;
    let database_url = seed.url.replace(&seed.name, &database);
    let restate = RestateServer::start().await?;
    let [port, ops_port] = ctrl_testkit::free_ports()?;
    let config_dir = tempfile::tempdir()?;
    std::fs::write(
        config_dir.path().join("ctrl-api.toml"),
        format!(
            "[http]\nlisten = \"127.0.0.1:{port}\"\nops_listen = \"127.0.0.1:{ops_port}\"\n\
             [auth]\ntokens = [\"${{API_TOKEN}}\"]\n\
             [database]\nurl = \"{database_url}\"\nconnect_timeout_seconds = 5\n\
             [vault]\nkeys = [{{ id = \"k1\", key = \"{VAULT_KEY}\" }}]\n\
             [restate]\ningress_url = \"{}\"\nadmin_url = \"{}\"\n",
            restate.ingress_url(),
            restate.admin_url()
        ),
    )?;
    // uid 10001 reads the mounted directory.
    std::fs::set_permissions(
        config_dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    let env = vec![format!("API_TOKEN={TOKEN}")];
    let config = "/etc/ctrl/ctrl-api.toml";

    let id = run(
        &docker,
        "it-migrate",
        &image("ctrl-api"),
        None,
        &["--config", config, "migrate"],
        &env,
        Some(config_dir.path()),
    )
    .await?;
    let (code, text) = finish(&docker, &id).await?;
    assert_eq!(code, 0, "migrate: {text}");

    let id = run(
        &docker,
        "it-ctrl-api",
        &image("ctrl-api"),
        None,
        &["--config", config, "serve"],
        &env,
        Some(config_dir.path()),
    )
    .await?;
    let ready = format!("http://127.0.0.1:{ops_port}/health/ready");
    if let Err(e) = ctrl_testkit::wait_until_ok(&ready, Duration::from_secs(60)).await {
        bail!("{e}\nctrl-api's output:\n{}", output(&docker, &id).await);
    }
    let body = ctrl_testkit::http_client()
        .get(&ready)
        .send()
        .await?
        .text()
        .await?;
    assert_eq!(body, "ready");

    // It really runs as uid 10001 on a read-only root filesystem.
    let inspected = docker
        .inspect_container(
            &id,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await?;
    let pid = inspected.state.and_then(|s| s.pid).expect("a pid");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .expect("a Uid line");
    assert_eq!(
        uid.split_whitespace().collect::<Vec<_>>(),
        ["10001"; 4],
        "{uid}"
    );
    assert_eq!(
        inspected.host_config.and_then(|h| h.readonly_rootfs),
        Some(true)
    );
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mounts"))?;
    let root = mounts
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("/"))
        .expect("the root mount");
    assert!(
        root.split_whitespace()
            .nth(3)
            .is_some_and(|o| o.split(',').any(|o| o == "ro")),
        "{root}"
    );
    Ok(())
}
