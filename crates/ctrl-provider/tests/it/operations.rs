use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Result;
use async_trait::async_trait;
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

#[tokio::test]
async fn secrets_and_config_files_reach_the_container_and_not_the_labels() -> Result<()> {
    let env = env_with(test_config(), Arc::new(Vault)).await?;
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
    let out = env
        .provider
        .exec(
            "sec",
            &ExecRequest {
                command: vec![
                    "sh".into(),
                    "-c".into(),
                    "echo $TOKEN $PLAIN; cat /etc/app/settings.toml; ls -l /etc/app/settings.toml"
                        .into(),
                ],
                ..Default::default()
            },
        )
        .await?;
    let text = String::from_utf8(out.stdout)?;
    assert!(
        text.starts_with("s3cret-value visible\nmode = \"fast\"\n-rw-------"),
        "{text}"
    );

    let inspect = env
        .podman
        .docker()
        .inspect_container(
            "sec-web-0-r1",
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await?;
    let labels = format!("{:?}", inspect.config.and_then(|c| c.labels));
    assert!(!labels.contains("s3cret-value"), "secret value in labels");
    assert!(
        labels.contains("vault:token:v1"),
        "the reference is recorded for rollback"
    );

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
