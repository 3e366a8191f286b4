use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Result;
use async_trait::async_trait;
use ctrl_provider::docker::{DockerConfig, SecretDelivery};
use ctrl_provider::spec::{ConfigFile, Resources, SecretRef};
use ctrl_provider::{Error, ExecRequest, LogOptions, LogStream, Provider, SecretResolver};
use futures::StreamExt;
use zeroize::Zeroizing;

use crate::support::*;

#[tokio::test]
async fn exec_returns_the_real_exit_code_and_output() -> Result<()> {
    let env = env().await?;
    env.provider.provision(&web("ex", V1)).await?;
    let run = |command: &[&str], stdin: Option<&[u8]>| ExecRequest {
        command: command.iter().map(|s| s.to_string()).collect(),
        stdin: stdin.map(<[u8]>::to_vec),
        ..Default::default()
    };
    let exit = env
        .provider
        .exec("ex", &run(&["sh", "-c", "exit 3"], None))
        .await?;
    assert_eq!(exit.exit_code, 3);
    let io = env
        .provider
        .exec(
            "ex",
            &run(&["sh", "-c", "cat; echo oops >&2"], Some(b"hello")),
        )
        .await?;
    assert_eq!(
        (io.exit_code, io.stdout.as_slice(), io.stderr.as_slice()),
        (0, &b"hello"[..], &b"oops\n"[..])
    );
    let slow = ExecRequest {
        timeout: Some(Duration::from_millis(300)),
        ..run(&["sleep", "5"], None)
    };
    let err = env
        .provider
        .exec("ex", &slow)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("did not finish within"), "{err}");
    let missing = env
        .provider
        .exec("nope", &run(&["true"], None))
        .await
        .unwrap_err();
    assert!(matches!(missing, Error::NotFound(_)), "{missing}");
    Ok(())
}

#[tokio::test]
async fn logs_tail_since_and_follow() -> Result<()> {
    let env = env().await?;
    env.provider.provision(&web("lg", V1)).await?;
    let all: Vec<_> = env
        .provider
        .logs("lg", &LogOptions::default())
        .await?
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let start = all
        .iter()
        .find(|l| l.line == "starting v1 on port 8080")
        .expect("start line");
    assert_eq!(
        (start.service.as_str(), start.replica, start.stream),
        ("web", 0, LogStream::Stdout)
    );
    assert!(start.timestamp.is_some());

    let tail: Vec<_> = env
        .provider
        .logs(
            "lg",
            &LogOptions {
                tail: Some(1),
                ..Default::default()
            },
        )
        .await?
        .collect()
        .await;
    assert_eq!(tail.len(), 1, "{tail:?}");

    let future = SystemTime::now() + Duration::from_secs(3600);
    let none: Vec<_> = env
        .provider
        .logs(
            "lg",
            &LogOptions {
                since: Some(future),
                ..Default::default()
            },
        )
        .await?
        .collect()
        .await;
    assert!(none.is_empty(), "{none:?}");

    // Following: a request made now shows up in httpd's access log (stderr);
    // only the unknown path answers 404.
    let mut follow = env
        .provider
        .logs(
            "lg",
            &LogOptions {
                follow: true,
                tail: Some(0),
                ..Default::default()
            },
        )
        .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    get(
        &env.provider.status("lg").await?.endpoints[0].address,
        "/followed",
    )
    .await
    .ok();
    let line = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let line = follow.next().await.expect("stream open")?;
            if line.line.contains("response:404") {
                return anyhow::Ok(line);
            }
        }
    })
    .await??;
    assert_eq!(line.stream, LogStream::Stderr);
    Ok(())
}

#[tokio::test]
async fn resources_come_from_real_stats() -> Result<()> {
    let env = env().await?;
    let mut spec = web("res", V1);
    spec.services[0].resources = Resources {
        memory_mib: 64,
        cpu_millis: 500,
        pids: 50,
        ..Resources::default()
    };
    env.provider.provision(&spec).await?;
    let usage = env.provider.resources("res").await?;
    assert_eq!(usage.containers, 1);
    assert!((usage.memory_limit_mib - 64.0).abs() < 0.01, "{usage:?}");
    assert!(usage.memory_used_mib > 0.0, "{usage:?}");
    assert!(usage.pids >= 1, "{usage:?}");
    // The limits really are in the container's cgroup.
    let read = |path: &str| ExecRequest {
        command: vec!["cat".into(), path.into()],
        ..Default::default()
    };
    let quota = env
        .provider
        .exec("res", &read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"))
        .await?;
    assert_eq!(String::from_utf8(quota.stdout)?.trim(), "50000");
    let pids = env
        .provider
        .exec("res", &read("/sys/fs/cgroup/pids/pids.max"))
        .await?;
    assert_eq!(String::from_utf8(pids.stdout)?.trim(), "50");
    Ok(())
}

#[derive(Debug)]
struct Vault;

#[async_trait]
impl SecretResolver for Vault {
    async fn resolve(&self, secret: &SecretRef) -> Result<Zeroizing<String>, String> {
        match secret.reference.as_str() {
            "vault:token:v1" => Ok(Zeroizing::new("s3cret-value".into())),
            other => Err(format!("no secret {other}")),
        }
    }
}

/// Secret delivery through `ctrl-init` and a tmpfs directory.
fn delivery(dir: &std::path::Path) -> Result<SecretDelivery> {
    Ok(SecretDelivery {
        init_binary: ctrl_testkit::paths::ctrl_init_bin()?,
        dir: dir.to_owned(),
    })
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &std::path::Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(path),
                Ok(t)
                    if t.is_file()
                        && std::fs::read(&path)
                            .is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle)) =>
                {
                    found.push(path.display().to_string());
                }
                _ => {}
            }
        }
    }
    found
}

#[tokio::test]
async fn secrets_reach_the_workload_and_never_the_engines_config_or_disk() -> Result<()> {
    // The tmpfs every Linux host has.
    let shm = tempfile::tempdir_in("/dev/shm")?;
    let config = DockerConfig {
        secret_delivery: Some(delivery(shm.path())?),
        ..test_config()
    };
    // Left by a container that went away while krane was down: pruned.
    std::fs::create_dir_all(shm.path().join("gone-web-0-r3"))?;
    std::fs::write(shm.path().join("gone-web-0-r3/env"), "OLD=s3cret-value\0")?;
    let env = env_with(config, Arc::new(Vault)).await?;
    assert!(
        !shm.path().join("gone-web-0-r3").exists(),
        "stale secrets pruned"
    );
    assert!(shm.path().join(".ctrl-init").is_file(), "ctrl-init copied");
    let mut spec = web("sec", V1);
    spec.services[0].secrets = vec![SecretRef {
        env: "TOKEN".into(),
        reference: "vault:token:v1".into(),
    }];
    spec.services[0].config_files = vec![ConfigFile {
        path: "/etc/app/settings.toml".into(),
        content: "mode = \"fast\"\n".into(),
        mode: 0o600,
    }];
    spec.services[0].env = BTreeMap::from([("PLAIN".into(), "visible".into())]);
    env.provider.provision(&spec).await?;
    // The workload's own environment has both (the image's CMD ran behind
    // ctrl-init, whose entrypoint wraps it).
    let address = env.provider.status("sec").await?.endpoints[0]
        .address
        .clone();
    let seen = get(&address, "/cgi-bin/env").await?;
    assert!(
        seen.lines().any(|l| l == "TOKEN=s3cret-value")
            && seen.lines().any(|l| l == "PLAIN=visible"),
        "{seen}"
    );
    let out = env
        .provider
        .exec(
            "sec",
            &ExecRequest {
                command: vec![
                    "sh".into(),
                    "-c".into(),
                    "cat /etc/app/settings.toml; ls -l /etc/app/settings.toml".into(),
                ],
                ..Default::default()
            },
        )
        .await?;
    let text = String::from_utf8(out.stdout)?;
    assert!(text.starts_with("mode = \"fast\"\n-rw-------"), "{text}");

    // Not in what the engine stores or shows: inspect, labels, its disk.
    let inspect = env
        .podman
        .docker()
        .inspect_container(
            "sec-web-0-r1",
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await?;
    let shown = serde_json::to_string(&inspect)?;
    assert!(!shown.contains("s3cret-value"), "the secret is in inspect");
    assert!(
        shown.contains("PLAIN=visible"),
        "plain variables stay in the config"
    );
    let labels = format!("{:?}", inspect.config.and_then(|c| c.labels));
    assert!(
        labels.contains("vault:token:v1"),
        "the reference is recorded for rollback"
    );
    let on_disk = files_containing(env.podman.dir(), b"s3cret-value");
    assert!(
        on_disk.is_empty(),
        "the secret is on the engine's disk: {on_disk:?}"
    );
    // Only the tmpfs holds it, and removing the workload removes it.
    assert_eq!(files_containing(shm.path(), b"s3cret-value").len(), 1);
    env.provider.deprovision("sec").await?;
    assert!(files_containing(shm.path(), b"s3cret-value").is_empty());

    // Without a way to deliver them, secrets are refused, naming the setting.
    let plain = env_with(test_config(), Arc::new(Vault)).await?;
    let mut refused = web("nosec", V1);
    refused.services[0].secrets = spec.services[0].secrets.clone();
    let err = plain
        .provider
        .provision(&refused)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("init_binary") && err.contains("secrets_dir"),
        "{err}"
    );
    assert!(container_names(&plain, "nosec").await?.is_empty());
    // A directory on a disk, or a dynamically linked init, is refused at
    // connect, naming the setting.
    let disk = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
    for (delivery, setting) in [
        (
            SecretDelivery {
                init_binary: ctrl_testkit::paths::ctrl_init_bin()?,
                dir: disk.path().to_owned(),
            },
            "not on a tmpfs",
        ),
        (
            SecretDelivery {
                init_binary: std::env::current_exe()?,
                dir: shm.path().join("other"),
            },
            "dynamically linked",
        ),
    ] {
        let config = DockerConfig {
            secret_delivery: Some(delivery),
            ..test_config()
        };
        let err = ctrl_provider::docker::DockerProvider::connect(
            plain.podman.docker().clone(),
            config,
            Arc::new(Vault),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(err.contains(setting), "{err}");
    }

    // An unresolvable secret fails before anything is created, naming the variable.
    let mut bad = web("bad", V1);
    bad.services[0].secrets = vec![SecretRef {
        env: "DB_PASSWORD".into(),
        reference: "vault:missing".into(),
    }];
    let err = env.provider.provision(&bad).await.unwrap_err().to_string();
    assert!(
        err.contains("DB_PASSWORD") && err.contains("no secret vault:missing"),
        "{err}"
    );
    assert!(container_names(&env, "bad").await?.is_empty());
    Ok(())
}
