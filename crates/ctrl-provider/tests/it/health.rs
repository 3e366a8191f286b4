use std::time::Duration;

use anyhow::{Context, Result};
use ctrl_provider::spec::{HealthCheck, Probe, Resources, RestartPolicy, ServiceSpec};
use ctrl_provider::{Provider, State};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::support::*;

#[tokio::test]
async fn a_container_killed_from_outside_is_restarted_and_counted() -> Result<()> {
    let env = env().await?;
    env.provider.provision(&web("crash", V1)).await?;
    let inspect = env
        .podman
        .docker()
        .inspect_container(
            "crash-web-0-r1",
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await?;
    let pid = inspect
        .state
        .and_then(|s| s.pid)
        .context("running container has a pid")?;
    kill(Pid::from_raw(i32::try_from(pid)?), Signal::SIGKILL)?;

    let status = wait_status(&env.provider, "crash", Duration::from_secs(30), |s| {
        s.ready && s.restarts >= 1
    })
    .await?;
    assert_eq!(status.services[0].restarts, 1, "{status:#?}");
    assert!(
        status.message.contains("restarted 1 times")
            || status.services[0].message.contains("restarted 1 times"),
        "{status:#?}"
    );
    assert_eq!(answer(&env.provider, "crash").await?, "v1");
    Ok(())
}

#[tokio::test]
async fn memory_limit_is_enforced_and_status_says_out_of_memory() -> Result<()> {
    let env = env().await?;
    let mut spec = web("hog", V1);
    spec.services[0] = ServiceSpec {
        // Doubles a string until the 16 MiB limit kills it.
        command: vec![
            "sh".into(),
            "-c".into(),
            "a=x; while :; do a=\"$a$a\"; done".into(),
        ],
        resources: Resources {
            memory_mib: 16,
            ..Resources::default()
        },
        restart: RestartPolicy::Never,
        ..ServiceSpec::main("hog", V1)
    };
    // It is "running" for a moment, which is all a service without a health check needs.
    let _ = env.provider.provision(&spec).await;
    let status = wait_status(&env.provider, "hog", Duration::from_secs(30), |s| {
        s.services.first().is_some_and(|c| c.exit_code.is_some())
    })
    .await?;
    let hog = &status.services[0];
    assert_eq!(hog.exit_code, Some(137), "{status:#?}");
    assert!(hog.oom_killed, "{status:#?}");
    assert_eq!(hog.state, State::Failed);
    assert!(
        hog.message.contains("out of memory") && hog.message.contains("16 MiB"),
        "{}",
        hog.message
    );
    assert_eq!(status.state, State::Failed);
    assert!(!status.ready);
    Ok(())
}

#[tokio::test]
async fn command_and_tcp_probes() -> Result<()> {
    let env = env().await?;
    let mut spec = web("probes", V1);
    let check = spec.services[0].health_check.clone().unwrap();
    spec.services[0].health_check = Some(HealthCheck {
        probe: Probe::Command {
            command: vec!["sh".into(), "-c".into(), "test -f /www/health".into()],
        },
        ..check.clone()
    });
    env.provider.provision(&spec).await?;
    assert!(env.provider.status("probes").await?.ready);

    // The file goes away: the command probe fails and status says why.
    let rm = ctrl_provider::ExecRequest {
        command: vec!["rm".into(), "/www/health".into()],
        ..Default::default()
    };
    env.provider.exec("probes", &rm).await?;
    let status = env.provider.status("probes").await?;
    assert!(!status.ready);
    assert_eq!(status.state, State::Starting);
    assert!(
        status.message.contains("health command exited with 1"),
        "{}",
        status.message
    );
    assert!(status.endpoints.is_empty());

    let mut tcp = web("tcp", V1);
    tcp.services[0].health_check = Some(HealthCheck {
        probe: Probe::Tcp { port: 8080 },
        ..check
    });
    env.provider.provision(&tcp).await?;
    assert!(env.provider.status("tcp").await?.ready);
    Ok(())
}
