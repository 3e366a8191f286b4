//! From the ClusterService desired-state message to a [`WorkloadSpec`].
//!
//! A deployment becomes one workload with a single main service named
//! [`APP_SERVICE`]. Sealed environment variables become [`SecretRef`]s whose
//! reference carries the sealed value ([`sealed_reference`]); the agent's
//! [`SecretResolver`](crate::SecretResolver) opens them just before the
//! container starts, so plaintext is never part of the spec.

use std::collections::BTreeMap;
use std::time::Duration;

use ctrl_proto::ctrl::v1 as pb;

use crate::Error;
use crate::spec::{
    Autoscaling, HealthCheck, HttpMethod, IngressRule, NetworkPeer, NetworkPolicy, PortSpec, Probe,
    Protocol, Resources, RestartPolicy, SecretRef, ServiceSpec, StopSignal, VolumeSpec,
    WorkloadKind, WorkloadSpec,
};

/// Name of the service that runs a deployment's image.
pub const APP_SERVICE: &str = "app";
/// Where an ephemeral disk (`storage_mib > 0`) is mounted.
pub const DISK_PATH: &str = "/data";
const SEALED_PREFIX: &str = "sealed:";

/// The reference for a value sealed with `keyring`: `sealed:<keyring>:<hex>`.
pub fn sealed_reference(keyring: &str, sealed: &[u8]) -> String {
    format!("{SEALED_PREFIX}{keyring}:{}", hex::encode(sealed))
}

/// The keyring and sealed bytes of a [`sealed_reference`].
pub fn parse_sealed_reference(reference: &str) -> Option<(&str, Vec<u8>)> {
    let rest = reference.strip_prefix(SEALED_PREFIX)?;
    let (keyring, value) = rest.rsplit_once(':')?;
    Some((keyring, hex::decode(value).ok()?))
}

/// The workload for one deployment in one region.
pub fn workload_from_apply(apply: &pb::ApplyDeployment) -> Result<WorkloadSpec, Error> {
    let field = |name: &str, value: &str| {
        if value.trim().is_empty() {
            Err(Error::InvalidSpec(format!(
                "ApplyDeployment.{name} is empty"
            )))
        } else {
            Ok(())
        }
    };
    field("k8s_name", &apply.k8s_name)?;
    field("deployment_id", &apply.deployment_id)?;
    field("image", &apply.image)?;
    let port = u16::try_from(apply.port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| {
            Error::InvalidSpec(format!("ApplyDeployment.port {} is not a port", apply.port))
        })?;
    let positive = |name: &str, value: i64| {
        u32::try_from(value).ok().filter(|v| *v > 0).ok_or_else(|| {
            Error::InvalidSpec(format!("ApplyDeployment.{name} {value} must be positive"))
        })
    };
    let cpu_millis = positive("cpu_millicores", apply.cpu_millicores)?;
    let memory_mib = positive("memory_mib", apply.memory_mib)?;
    let disk_mib = u32::try_from(apply.storage_mib).map_err(|_| {
        Error::InvalidSpec(format!(
            "ApplyDeployment.storage_mib {} is out of range",
            apply.storage_mib
        ))
    })?;
    let replicas = apply
        .autoscaling
        .as_ref()
        .map_or(1, |a| a.min_replicas.max(1));

    let mut env = BTreeMap::from([
        ("PORT".to_owned(), port.to_string()),
        ("CTRL_DEPLOYMENT_ID".to_owned(), apply.deployment_id.clone()),
        (
            "CTRL_ENVIRONMENT_ID".to_owned(),
            apply.environment_id.clone(),
        ),
        (
            "CTRL_ENVIRONMENT_SLUG".to_owned(),
            apply.environment_slug.clone(),
        ),
        ("CTRL_REGION".to_owned(), apply.region.clone()),
    ]);
    for (key, value) in [
        ("CTRL_GIT_COMMIT_SHA", &apply.git_commit_sha),
        ("CTRL_GIT_BRANCH", &apply.git_branch),
        ("CTRL_GIT_REPO", &apply.git_repository),
    ] {
        if !value.is_empty() {
            env.insert(key.to_owned(), value.clone());
        }
    }
    let mut volumes = Vec::new();
    if disk_mib > 0 {
        env.insert("CTRL_EPHEMERAL_DISK_PATH".into(), DISK_PATH.into());
        volumes.push(VolumeSpec {
            name: "data".into(),
            mount_path: DISK_PATH.into(),
            persistence: Default::default(),
        });
    }
    let secrets = match &apply.environment {
        Some(sealed) => sealed
            .variables
            .iter()
            .map(|(name, value)| SecretRef {
                env: name.clone(),
                reference: sealed_reference(&sealed.keyring, value),
            })
            .collect(),
        None => Vec::new(),
    };
    // A user variable may override PORT and friends: theirs wins over ours.
    for secret in &secrets {
        env.remove(&secret.env);
    }

    let startup = Duration::from_secs(u64::try_from(apply.startup_timeout_seconds).unwrap_or(0));
    let health_check = apply
        .health_check
        .as_ref()
        .map(|h| health_check(h, port, startup))
        .transpose()?;
    let main = ServiceSpec {
        command: apply.command.clone(),
        env,
        secrets,
        ports: vec![PortSpec {
            container: port,
            host: None,
            protocol: Protocol::Tcp,
        }],
        volumes,
        health_check,
        resources: Resources {
            cpu_millis,
            memory_mib,
            disk_mib,
            ..Resources::default()
        },
        restart: RestartPolicy::Always,
        stop_signal: stop_signal(apply.shutdown_signal()),
        stop_grace: Duration::from_secs(
            u64::try_from(apply.termination_grace_seconds)
                .unwrap_or(0)
                .max(1),
        ),
        ..ServiceSpec::main(APP_SERVICE, apply.image.clone())
    };

    let mut labels: BTreeMap<String, String> = apply
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (key, value) in [
        ("ctrl.dev/workspace-id", &apply.workspace_id),
        ("ctrl.dev/project-id", &apply.project_id),
        ("ctrl.dev/app-id", &apply.app_id),
        ("ctrl.dev/environment-id", &apply.environment_id),
        ("ctrl.dev/deployment-id", &apply.deployment_id),
        ("ctrl.dev/namespace", &apply.k8s_namespace),
        ("ctrl.dev/build-id", &apply.build_id),
    ] {
        if !value.is_empty() {
            labels.insert(key.to_owned(), value.clone());
        }
    }
    let spec = WorkloadSpec {
        id: apply.k8s_name.clone(),
        release: apply.deployment_id.clone(),
        kind: WorkloadKind::Stateless,
        replicas,
        services: vec![main],
        labels,
        autoscaling: apply
            .autoscaling
            .as_ref()
            .map(autoscaling)
            .transpose()?
            .flatten(),
        network_policy: apply
            .network_policy
            .as_ref()
            .map(network_policy)
            .transpose()?,
    };
    spec.plan()?;
    Ok(spec)
}

/// The app's health check. A new instance gets a startup window — the
/// check's initial delay plus `startup` (the deploy's readiness timeout) —
/// before failing checks count against it, like a Kubernetes startup probe:
/// a slow-starting app is waited for, while a crash or exit during startup
/// still fails the attempt at once.
fn health_check(h: &pb::HealthCheck, port: u16, startup: Duration) -> Result<HealthCheck, Error> {
    let secs = |name: &str, v: i32, default: u64| -> Result<Duration, Error> {
        match v {
            0 => Ok(Duration::from_secs(default)),
            v if v > 0 => Ok(Duration::from_secs(v.unsigned_abs().into())),
            v => Err(Error::InvalidSpec(format!(
                "HealthCheck.{name} {v} is negative"
            ))),
        }
    };
    let method = match h.method() {
        pb::HealthCheckMethod::Post => HttpMethod::Post,
        pb::HealthCheckMethod::Get | pb::HealthCheckMethod::Unspecified => HttpMethod::Get,
    };
    let path = if h.path.is_empty() {
        "/".to_owned()
    } else {
        h.path.clone()
    };
    Ok(HealthCheck {
        probe: Probe::Http { port, path, method },
        interval: secs("interval_seconds", h.interval_seconds, 10)?,
        timeout: secs("timeout_seconds", h.timeout_seconds, 2)?,
        retries: u32::try_from(h.failure_threshold).unwrap_or(0).max(1),
        start_period: secs("initial_delay_seconds", h.initial_delay_seconds, 0)? + startup,
    })
}

/// Bounds that leave room to scale become an [`Autoscaling`] policy;
/// `min == max` is a fixed replica count.
fn autoscaling(a: &pb::AutoscalingPolicy) -> Result<Option<Autoscaling>, Error> {
    let min = a.min_replicas.max(1);
    if a.max_replicas != 0 && a.max_replicas < min {
        return Err(Error::InvalidSpec(format!(
            "AutoscalingPolicy.max_replicas {} is below min_replicas {min}",
            a.max_replicas
        )));
    }
    for (name, value) in [
        ("cpu_threshold_percent", a.cpu_threshold_percent),
        ("memory_threshold_percent", a.memory_threshold_percent),
    ] {
        if value > 100 {
            return Err(Error::InvalidSpec(format!(
                "AutoscalingPolicy.{name} {value} is above 100"
            )));
        }
    }
    if a.max_replicas <= min {
        return Ok(None);
    }
    Ok(Some(Autoscaling {
        min_replicas: min,
        max_replicas: a.max_replicas,
        cpu_percent: match a.cpu_threshold_percent {
            0 => 80,
            v => v,
        },
        memory_percent: Some(a.memory_threshold_percent).filter(|v| *v > 0),
    }))
}

fn network_policy(p: &pb::NetworkPolicy) -> Result<NetworkPolicy, Error> {
    let ingress = p
        .ingress
        .iter()
        .map(|rule| {
            let port = u16::try_from(rule.port)
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| {
                    Error::InvalidSpec(format!(
                        "NetworkPolicy.ingress.port {} is not a port",
                        rule.port
                    ))
                })?;
            Ok(IngressRule {
                port,
                from: rule
                    .from
                    .iter()
                    .map(|peer| NetworkPeer {
                        match_labels: peer
                            .match_labels
                            .iter()
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect(),
                        namespace: Some(peer.namespace.clone()).filter(|n| !n.is_empty()),
                        cidr: Some(peer.cidr.clone()).filter(|c| !c.is_empty()),
                    })
                    .collect(),
            })
        })
        .collect::<Result<_, Error>>()?;
    Ok(NetworkPolicy {
        ingress,
        allow_internet_egress: p.allow_internet_egress,
    })
}

fn stop_signal(signal: pb::ShutdownSignal) -> StopSignal {
    match signal {
        pb::ShutdownSignal::Sigint => StopSignal::Sigint,
        pb::ShutdownSignal::Sigquit => StopSignal::Sigquit,
        pb::ShutdownSignal::Sigkill => StopSignal::Sigkill,
        pb::ShutdownSignal::Sigterm | pb::ShutdownSignal::Unspecified => StopSignal::Sigterm,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply() -> pb::ApplyDeployment {
        pb::ApplyDeployment {
            k8s_namespace: "ws1".into(),
            k8s_name: "d-abc".into(),
            workspace_id: "ws1".into(),
            project_id: "p1".into(),
            app_id: "a1".into(),
            environment_id: "env1".into(),
            environment_slug: "production".into(),
            deployment_id: "dep1".into(),
            region: "local".into(),
            image: "localhost/app:v1".into(),
            port: 8080,
            cpu_millicores: 250,
            memory_mib: 256,
            environment: Some(pb::EncryptedEnvironment {
                keyring: "env1".into(),
                variables: [("TOKEN".to_owned(), vec![1u8, 2, 255])].into(),
            }),
            health_check: Some(pb::HealthCheck {
                method: pb::HealthCheckMethod::Get.into(),
                path: "/health".into(),
                interval_seconds: 2,
                timeout_seconds: 1,
                failure_threshold: 3,
                initial_delay_seconds: 5,
            }),
            shutdown_signal: pb::ShutdownSignal::Sigint.into(),
            termination_grace_seconds: 20,
            autoscaling: Some(pb::AutoscalingPolicy {
                min_replicas: 2,
                max_replicas: 4,
                ..Default::default()
            }),
            git_commit_sha: "abc123".into(),
            ..Default::default()
        }
    }

    #[test]
    fn maps_every_runtime_field() {
        let spec = workload_from_apply(&apply()).unwrap();
        assert_eq!(spec.id, "d-abc");
        assert_eq!(spec.release, "dep1");
        assert_eq!(spec.replicas, 2);
        assert_eq!(spec.labels["ctrl.dev/deployment-id"], "dep1");
        let app = &spec.services[0];
        assert_eq!(app.name, APP_SERVICE);
        assert_eq!(app.image, "localhost/app:v1");
        assert_eq!(app.ports[0].container, 8080);
        assert_eq!(app.resources.cpu_millis, 250);
        assert_eq!(app.resources.memory_mib, 256);
        assert_eq!(app.env["PORT"], "8080");
        assert_eq!(app.env["CTRL_GIT_COMMIT_SHA"], "abc123");
        assert!(!app.env.contains_key("CTRL_GIT_BRANCH"));
        assert_eq!(app.stop_signal, StopSignal::Sigint);
        assert_eq!(app.stop_grace, Duration::from_secs(20));
        let check = app.health_check.as_ref().unwrap();
        assert_eq!(
            check.probe,
            Probe::Http {
                port: 8080,
                path: "/health".into(),
                method: HttpMethod::Get
            }
        );
        assert_eq!(check.start_period, Duration::from_secs(5));
        assert_eq!(app.secrets.len(), 1);
        assert_eq!(app.secrets[0].env, "TOKEN");
        let (keyring, sealed) = parse_sealed_reference(&app.secrets[0].reference).unwrap();
        assert_eq!((keyring, sealed), ("env1", vec![1, 2, 255]));
    }

    #[test]
    fn rejects_bad_messages_by_field() {
        for (edit, field) in [
            (
                Box::new(|a: &mut pb::ApplyDeployment| a.image.clear()) as Box<dyn Fn(&mut _)>,
                "image",
            ),
            (
                Box::new(|a: &mut pb::ApplyDeployment| a.port = 70000),
                "port",
            ),
            (
                Box::new(|a: &mut pb::ApplyDeployment| a.memory_mib = 0),
                "memory_mib",
            ),
            (
                Box::new(|a: &mut pb::ApplyDeployment| a.k8s_name = "Bad_Name".into()),
                "Bad_Name",
            ),
            (
                Box::new(|a: &mut pb::ApplyDeployment| {
                    a.environment
                        .as_mut()
                        .unwrap()
                        .variables
                        .insert("bad-name".into(), vec![1]);
                }),
                "bad-name",
            ),
        ] {
            let mut a = apply();
            edit(&mut a);
            let err = workload_from_apply(&a).unwrap_err().to_string();
            assert!(err.contains(field), "{err} lacks {field}");
        }
    }

    #[test]
    fn a_user_variable_overrides_injected_ones() {
        let mut a = apply();
        a.environment
            .as_mut()
            .unwrap()
            .variables
            .insert("PORT".into(), vec![9]);
        let spec = workload_from_apply(&a).unwrap();
        assert!(!spec.services[0].env.contains_key("PORT"));
        assert!(spec.services[0].secrets.iter().any(|s| s.env == "PORT"));
    }
}
