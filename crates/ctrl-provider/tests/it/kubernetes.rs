//! The Kubernetes backend against the testkit's fake API server (no real
//! API server can run here): kube-rs talks HTTP to it exactly as to a
//! cluster, its controllers turn Deployments and StatefulSets into pods,
//! and every object the backend wrote is validated against the real
//! Kubernetes OpenAPI schemas at the end of each test.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use async_trait::async_trait;
use ctrl_provider::engine::{ArgoApplication, HelmRelease, ManifestApply};
use ctrl_provider::kubernetes::{KubernetesConfig, KubernetesProvider};
use ctrl_provider::spec::{
    Autoscaling, ConfigFile, HealthCheck, IngressRule, NetworkPeer, NetworkPolicy, Persistence,
    PortSpec, Protocol, SecretRef, ServiceSpec, VolumeSpec, WorkloadKind,
};
use ctrl_provider::{
    Capability, DeployRequest, Engines, Error, ExecRequest, LogOptions, Provider, ScaleRequest,
    SecretResolver, ServiceUpdate, State, WorkloadSpec,
};
use ctrl_testkit::kube::Behaviour;
use ctrl_testkit::{FakeKube, kube_schema};
use futures::StreamExt;
use serde_json::Value;
use zeroize::Zeroizing;

const V1: &str = "registry.example/web:v1";
const V2: &str = "registry.example/web:v2";
const SECRET: &str = "s3cr3t-value-never-in-a-pod-spec";
const NS: &str = "ws-acme";

#[derive(Debug)]
struct Secrets;

#[async_trait]
impl SecretResolver for Secrets {
    async fn resolve(&self, secret: &SecretRef) -> Result<Zeroizing<String>, String> {
        match secret.reference.as_str() {
            "ref:token" => Ok(Zeroizing::new(SECRET.to_owned())),
            other => Err(format!("unknown reference {}", other.len())),
        }
    }
}

struct Kube {
    provider: KubernetesProvider,
    fake: FakeKube,
    kubeconfig: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Kube {
    async fn start(edit: impl FnOnce(&mut KubernetesConfig)) -> Result<Self> {
        let fake = FakeKube::start().await?;
        let dir = tempfile::tempdir()?;
        let kubeconfig = dir.path().join("kubeconfig");
        fake.write_kubeconfig(&kubeconfig)?;
        let mut config = KubernetesConfig {
            kubeconfig: Some(kubeconfig.clone()),
            region: "eu".into(),
            cluster: "eu-1".into(),
            api_timeout_seconds: 10,
            start_timeout_seconds: 10,
            ..KubernetesConfig::default()
        };
        edit(&mut config);
        let provider = KubernetesProvider::connect(config, Arc::new(Secrets)).await?;
        Ok(Self {
            provider,
            fake,
            kubeconfig,
            _dir: dir,
        })
    }

    /// Validates every object the backend sent against the real schemas.
    fn validate_written(&self) -> Result<()> {
        let written = self.fake.written();
        let report = kube_schema::validate(&written, kube_schema::KUBERNETES_VERSION)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if written.is_empty() {
            bail!("nothing was written");
        }
        eprintln!(
            "schema {}: {} objects valid, {} custom resources skipped",
            report.schema_version,
            report.validated.len(),
            report.skipped.len()
        );
        Ok(())
    }

    fn object(&self, api_version: &str, kind: &str, name: &str) -> Option<Value> {
        self.fake.object(api_version, kind, Some(NS), name)
    }

    /// Waits until `workload` runs exactly `count` pods, all of `image`.
    async fn wait_pods(&self, workload: &str, count: usize, image: &str) -> Result<()> {
        eventually(&format!("{count} pods of {image}"), async || {
            let pods = self.pods(workload);
            (pods.len() == count
                && pods
                    .iter()
                    .all(|p| p["spec"]["containers"][0]["image"] == image))
            .then_some(())
        })
        .await
    }

    fn pods(&self, workload: &str) -> Vec<Value> {
        self.fake
            .objects("v1", "Pod")
            .into_iter()
            .filter(|p| p["metadata"]["labels"]["ctrl.dev/workload"] == workload)
            .collect()
    }
}

fn web(id: &str, image: &str, replicas: u32) -> WorkloadSpec {
    WorkloadSpec {
        id: id.into(),
        release: "r1".into(),
        kind: WorkloadKind::Stateless,
        replicas,
        services: vec![ServiceSpec {
            ports: vec![PortSpec {
                container: 8080,
                host: None,
                protocol: Protocol::Tcp,
            }],
            health_check: Some(HealthCheck {
                interval: Duration::from_secs(1),
                start_period: Duration::from_secs(5),
                ..HealthCheck::http(8080, "/health")
            }),
            env: BTreeMap::from([("MODE".to_owned(), "test".to_owned())]),
            secrets: vec![SecretRef {
                env: "TOKEN".into(),
                reference: "ref:token".into(),
            }],
            config_files: vec![ConfigFile {
                path: "/etc/web/app.toml".into(),
                content: "greeting = \"hi\"\n".into(),
                mode: 0o640,
            }],
            ..ServiceSpec::main("web", image)
        }],
        labels: BTreeMap::from([
            ("ctrl.dev/namespace".to_owned(), NS.to_owned()),
            ("ctrl.dev/deployment-id".to_owned(), format!("dep-{id}")),
        ]),
        autoscaling: None,
        network_policy: Some(NetworkPolicy {
            ingress: vec![IngressRule {
                port: 8080,
                from: vec![NetworkPeer {
                    match_labels: BTreeMap::from([("app".to_owned(), "frontline".to_owned())]),
                    namespace: Some("ctrl-system".into()),
                    cidr: None,
                }],
            }],
            allow_internet_egress: true,
        }),
    }
}

async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> Result<T> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_rolls_out_reapplies_for_free_and_goes_through_its_lifecycle() -> Result<()> {
    let k = Kube::start(|_| {}).await?;
    let spec = web("web", V1, 2);
    let first = k.provider.provision(&spec).await?;
    assert!(first.changed);
    assert_eq!(first.endpoints.len(), 2, "{first:?}");
    assert!(first.endpoints.iter().all(|e| e.address.ends_with(":8080")));

    // What was applied: every object in the workspace namespace, labelled.
    let deployment = k
        .object("apps/v1", "Deployment", "web")
        .context("no Deployment")?;
    assert_eq!(deployment["metadata"]["labels"]["ctrl.dev/region"], "eu");
    assert_eq!(deployment["metadata"]["labels"]["ctrl.dev/cluster"], "eu-1");
    let managers: Vec<&str> = deployment["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert!(managers.contains(&"ctrl-krane"), "{managers:?}");
    assert!(
        !deployment.to_string().contains(SECRET),
        "a secret value is in the Deployment"
    );
    let secret = k
        .object("v1", "Secret", "web-web-env")
        .context("no Secret")?;
    assert!(secret["data"]["TOKEN"].is_string());
    for (api, kind) in [
        ("v1", "Service"),
        ("v1", "ConfigMap"),
        ("policy/v1", "PodDisruptionBudget"),
        ("networking.k8s.io/v1", "NetworkPolicy"),
    ] {
        let name = if kind == "ConfigMap" {
            "web-web-files"
        } else {
            "web"
        };
        assert!(k.object(api, kind, name).is_some(), "no {kind}");
    }

    // Re-applying the same spec asks the API nothing.
    k.fake.reset_requests();
    let again = k.provider.provision(&spec).await?;
    assert!(!again.changed);
    assert_eq!(k.fake.request_count(), 0, "{:?}", k.fake.requests());

    // Drift: an image edited behind the backend's back is put back.
    let api: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(k.provider.client().clone(), NS);
    api.patch(
        "web",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Strategic(serde_json::json!({"spec": {"template": {"spec": {
            "containers": [{"name": "web", "image": "evil:1"}]
        }}}})),
    )
    .await?;
    eventually("the edit", async || {
        let d = k.object("apps/v1", "Deployment", "web")?;
        (d["spec"]["template"]["spec"]["containers"][0]["image"] == "evil:1").then_some(())
    })
    .await?;
    // Give the watch cache a moment to see the edit too.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let repaired = k.provider.provision(&spec).await?;
    assert!(repaired.changed, "the drift was not seen");
    let d = k
        .object("apps/v1", "Deployment", "web")
        .context("no Deployment")?;
    assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["image"], V1);

    let status = k.provider.status("web").await?;
    assert!(status.ready, "{status:?}");
    assert_eq!((status.replicas, status.ready_replicas), (2, 2));
    assert_eq!(status.release, "r1");
    let listed = k.provider.list().await?;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].labels["ctrl.dev/deployment-id"], "dep-web");

    // A new release rolls; the old pods go once the new ones are ready.
    let deployed = k
        .provider
        .deploy(
            "web",
            &DeployRequest {
                release: "r2".into(),
                services: vec![ServiceUpdate {
                    name: "web".into(),
                    image: Some(V2.into()),
                    ..ServiceUpdate::default()
                }],
            },
        )
        .await?;
    assert_eq!(deployed.release, "r2");
    k.wait_pods("web", 2, V2).await?;
    let unknown = k.provider.rollback("web", "r9").await.unwrap_err();
    assert!(matches!(unknown, Error::UnknownRelease { .. }), "{unknown}");
    assert!(unknown.to_string().contains("r2, r1"), "{unknown}");
    let back = k.provider.rollback("web", "r1").await?;
    assert_eq!(back.release, "r1");
    k.wait_pods("web", 2, V1).await?;

    // Scale through the scale subresource.
    k.fake.reset_requests();
    k.provider
        .scale(
            "web",
            &ScaleRequest {
                replicas: Some(3),
                resources: None,
            },
        )
        .await?;
    assert!(
        k.fake
            .requests()
            .iter()
            .any(|r| r.path.ends_with("/deployments/web/scale")),
        "{:?}",
        k.fake.requests()
    );
    assert_eq!(k.provider.status("web").await?.ready_replicas, 3);

    // Stop keeps the workload; start brings the replicas back.
    k.provider.stop("web").await?;
    eventually("no pods", async || k.pods("web").is_empty().then_some(())).await?;
    assert_eq!(k.provider.status("web").await?.state, State::Stopped);
    k.provider.start("web").await?;
    let started = k.provider.status("web").await?;
    assert_eq!(
        (started.ready, started.ready_replicas),
        (true, 3),
        "{started:?}"
    );

    // Restart replaces every pod.
    let before: Vec<String> = k
        .pods("web")
        .iter()
        .map(|p| {
            p["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    k.provider.restart("web").await?;
    eventually("new pods after restart", async || {
        let pods = k.pods("web");
        let ready = k.provider.status("web").await.is_ok_and(|s| s.ready);
        (ready
            && pods.len() == 3
            && pods.iter().all(|p| {
                !before.contains(
                    &p["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                )
            }))
        .then_some(())
    })
    .await?;

    // Deprovision removes everything it applied.
    k.provider.deprovision("web").await?;
    eventually("nothing left", async || {
        (k.object("apps/v1", "Deployment", "web").is_none()
            && k.object("v1", "Service", "web").is_none()
            && k.object("v1", "Secret", "web-web-env").is_none()
            && k.object("v1", "ConfigMap", "web-web-files").is_none()
            && k.object("policy/v1", "PodDisruptionBudget", "web")
                .is_none()
            && k.object("networking.k8s.io/v1", "NetworkPolicy", "web")
                .is_none()
            && k.pods("web").is_empty())
        .then_some(())
    })
    .await?;
    assert!(matches!(
        k.provider.status("web").await,
        Err(Error::NotFound(_))
    ));
    k.provider.deprovision("web").await?;
    k.validate_written()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_that_cannot_run_fails_with_the_reason_and_bad_specs_apply_nothing() -> Result<()>
{
    let k = Kube::start(|_| {}).await?;
    k.fake.set_behaviour(
        "registry.example/crash:1",
        Behaviour::CrashLoop {
            exit_code: 3,
            message: "panic: missing DATABASE_URL".into(),
        },
    );
    k.fake
        .set_behaviour("registry.example/missing:1", Behaviour::ImagePullBackOff);
    k.fake
        .set_behaviour("registry.example/oom:1", Behaviour::OomKilled);
    k.fake.set_behaviour(
        "registry.example/slow:1",
        Behaviour::NeverReady {
            message: "HTTP probe failed with statuscode: 503".into(),
        },
    );

    let err = k
        .provider
        .provision(&web("crash", "registry.example/crash:1", 1))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::RolloutFailed { .. }), "{text}");
    assert!(text.contains("exited with code 3"), "{text}");
    assert!(text.contains("missing DATABASE_URL"), "{text}");
    let status = k.provider.status("crash").await?;
    assert!(!status.ready);
    assert!(
        status
            .services
            .iter()
            .any(|s| s.restarts > 0 && s.exit_code == Some(3))
    );

    let err = k
        .provider
        .provision(&web("missing", "registry.example/missing:1", 1))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("registry.example/missing:1 cannot be pulled"),
        "{err}"
    );

    let err = k
        .provider
        .provision(&web("oom", "registry.example/oom:1", 1))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("OOMKilled"), "{err}");
    let oom = k.provider.status("oom").await?;
    assert!(oom.services.iter().any(|s| s.oom_killed), "{oom:?}");

    let mut slow = web("slow", "registry.example/slow:1", 1);
    slow.services[0].health_check = Some(HealthCheck {
        interval: Duration::from_secs(1),
        start_period: Duration::from_secs(1),
        retries: 1,
        ..HealthCheck::http(8080, "/health")
    });
    let err = k.provider.provision(&slow).await.unwrap_err().to_string();
    assert!(err.contains("not ready after 2s"), "{err}");

    // Bad input is refused before any request.
    k.fake.reset_requests();
    let mut gpu = web("gpu", V1, 1);
    gpu.services[0].resources.gpus = 1;
    let err = k.provider.provision(&gpu).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Unsupported {
                capability: Capability::Gpu,
                ..
            }
        ),
        "{err}"
    );
    let mut bad = web("Bad_Name", V1, 1);
    bad.id = "Bad_Name".into();
    assert!(matches!(
        k.provider.provision(&bad).await,
        Err(Error::InvalidSpec(_))
    ));
    let mut autoscale = web("auto", V1, 1);
    autoscale.autoscaling = Some(Autoscaling {
        min_replicas: 3,
        max_replicas: 2,
        cpu_percent: 80,
        memory_percent: None,
    });
    assert!(matches!(
        k.provider.provision(&autoscale).await,
        Err(Error::InvalidSpec(_))
    ));
    assert_eq!(k.fake.request_count(), 0, "{:?}", k.fake.requests());
    k.validate_written()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_exec_resources_and_autoscaling() -> Result<()> {
    let k = Kube::start(|_| {}).await?;
    let mut spec = web("web", V1, 1);
    spec.autoscaling = Some(Autoscaling {
        min_replicas: 1,
        max_replicas: 4,
        cpu_percent: 70,
        memory_percent: None,
    });
    k.provider.provision(&spec).await?;
    let hpa = k
        .object("autoscaling/v2", "HorizontalPodAutoscaler", "web")
        .context("no HPA")?;
    assert_eq!(hpa["spec"]["maxReplicas"], 4);

    let pod = k.pods("web")[0]["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    for n in 1..=3 {
        k.fake.append_log(NS, &pod, "web", &format!("request {n}"));
    }
    let lines: Vec<String> = k
        .provider
        .logs(
            "web",
            &LogOptions {
                tail: Some(2),
                ..LogOptions::default()
            },
        )
        .await?
        .map(|l| l.map(|l| l.line))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    assert_eq!(lines, ["request 2", "request 3"]);
    let mut follow = k
        .provider
        .logs(
            "web",
            &LogOptions {
                follow: true,
                tail: Some(0),
                ..LogOptions::default()
            },
        )
        .await?;
    k.fake.append_log(NS, &pod, "web", "later line");
    let next = tokio::time::timeout(Duration::from_secs(10), follow.next())
        .await?
        .context("log stream ended")??;
    assert_eq!(next.line, "later line");
    assert_eq!(next.service, "web");
    assert!(next.timestamp.is_some());

    let out = k
        .provider
        .exec(
            "web",
            &ExecRequest {
                command: vec![
                    "sh".into(),
                    "-c".into(),
                    "echo out; echo err >&2; exit 3".into(),
                ],
                ..ExecRequest::default()
            },
        )
        .await?;
    assert_eq!(out.exit_code, 3);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    let cat = k
        .provider
        .exec(
            "web",
            &ExecRequest {
                command: vec!["cat".into()],
                stdin: Some(b"piped".to_vec()),
                ..ExecRequest::default()
            },
        )
        .await?;
    assert_eq!(
        (cat.exit_code, cat.stdout.as_slice()),
        (0, b"piped".as_slice())
    );
    let missing = k
        .provider
        .exec(
            "web",
            &ExecRequest {
                replica: 7,
                command: vec!["true".into()],
                ..ExecRequest::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(missing, Error::NotFound(_)), "{missing}");

    // No metrics-server: zero usage, not an error; with it, real numbers.
    k.fake.enable_metrics(false);
    let none = k.provider.resources("web").await?;
    assert!(none.cpu_percent.abs() < f64::EPSILON);
    k.fake.enable_metrics(true);
    let some = k.provider.resources("web").await?;
    assert!(
        some.cpu_percent > 0.0 && some.memory_used_mib > 0.0,
        "{some:?}"
    );

    let info = k.provider.info();
    assert_eq!(
        (info.name.as_str(), info.region.as_str()),
        ("kubernetes", "eu")
    );
    assert_eq!(info.location, Some(("Local".into(), "Localhost".into())));
    let health = k.provider.health(Duration::from_secs(5)).await?;
    assert!(health.starts_with("Kubernetes"), "{health}");
    k.fake.set_down(true);
    let err = k.provider.health(Duration::from_secs(2)).await.unwrap_err();
    assert!(err.to_string().contains("version"), "{err}");
    k.fake.set_down(false);
    k.validate_written()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateful_workloads_and_other_clusters_objects() -> Result<()> {
    let k = Kube::start(|_| {}).await?;
    let mut spec = web("db", V1, 2);
    spec.kind = WorkloadKind::Stateful;
    spec.network_policy = None;
    spec.services[0].volumes = vec![VolumeSpec {
        name: "data".into(),
        mount_path: "/data".into(),
        persistence: Persistence::Persistent,
    }];
    let result = k.provider.provision(&spec).await?;
    assert_eq!(result.endpoints.len(), 2);
    let names: Vec<String> = k
        .pods("db")
        .iter()
        .map(|p| {
            p["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert!(
        names.contains(&"db-0".to_owned()) && names.contains(&"db-1".to_owned()),
        "{names:?}"
    );
    let service = k.object("v1", "Service", "db").context("no Service")?;
    assert_eq!(service["spec"]["clusterIP"], "None");
    let claims = k.fake.objects("v1", "PersistentVolumeClaim");
    assert_eq!(claims.len(), 2, "{claims:?}");
    let status = k.provider.status("db").await?;
    let mut replicas: Vec<u32> = status.services.iter().map(|s| s.replica).collect();
    replicas.sort_unstable();
    assert_eq!(replicas, [0, 1]);
    assert!(
        status.endpoints[0]
            .internal_address
            .contains(".db.ws-acme.svc:8080")
    );

    // Another agent's workload in the same cluster is invisible here.
    let theirs = KubernetesProvider::connect(
        KubernetesConfig {
            kubeconfig: Some(k.kubeconfig.clone()),
            region: "eu".into(),
            cluster: "eu-2".into(),
            start_timeout_seconds: 10,
            ..KubernetesConfig::default()
        },
        Arc::new(Secrets),
    )
    .await?;
    theirs.provision(&web("theirs", V1, 1)).await?;
    let ours: Vec<String> = k.provider.list().await?.into_iter().map(|w| w.id).collect();
    assert_eq!(ours, ["db"]);
    assert_eq!(theirs.list().await?.len(), 1);

    k.provider.deprovision("db").await?;
    eventually("claims deleted", async || {
        k.fake
            .objects("v1", "PersistentVolumeClaim")
            .is_empty()
            .then_some(())
    })
    .await?;
    assert!(k.object("apps/v1", "Deployment", "theirs").is_some());
    k.validate_written()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engines_apply_track_and_remove_manifests_argo_applications_and_helm_charts() -> Result<()>
{
    let helm = ctrl_testkit::paths::helm_bin().ok();
    let k = Kube::start(|c| c.helm_bin.clone_from(&helm)).await?;
    assert_eq!(
        k.provider.capabilities().contains(&Capability::Helm),
        helm.is_some()
    );
    // Rendered manifests: applied, tracked, pruned, deleted.
    let config_map = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "settings"}, "data": {"a": "1"}
    });
    let deployment = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "worker"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "worker"}},
            "template": {
                "metadata": {"labels": {"app": "worker"}},
                "spec": {"containers": [{"name": "worker", "image": V1}]}
            }
        }
    });
    let ns = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}});
    k.provider
        .apply_manifests(&ManifestApply {
            instance: "ns".into(),
            namespace: "default".into(),
            objects: vec![ns],
        })
        .await?;
    let request = ManifestApply {
        instance: "bundle".into(),
        namespace: NS.into(),
        objects: vec![config_map.clone(), deployment.clone()],
    };
    let first = k.provider.apply_manifests(&request).await?;
    assert_eq!((first.release.as_str(), first.changed), ("1", true));
    let same = k.provider.apply_manifests(&request).await?;
    assert_eq!((same.release.as_str(), same.changed), ("1", false));
    let status = eventually("the bundle ready", async || {
        k.provider
            .manifest_status(NS, "bundle")
            .await
            .ok()
            .filter(|s| s.ready)
    })
    .await?;
    assert_eq!(status.objects.len(), 2);
    let worker = k
        .object("apps/v1", "Deployment", "worker")
        .context("no worker")?;
    assert_eq!(worker["metadata"]["labels"]["ctrl.dev/instance"], "bundle");
    let pruned = k
        .provider
        .apply_manifests(&ManifestApply {
            objects: vec![deployment.clone()],
            ..request.clone()
        })
        .await?;
    assert_eq!(pruned.release, "2");
    assert!(
        k.object("v1", "ConfigMap", "settings").is_none(),
        "not pruned"
    );
    let bad = k
        .provider
        .apply_manifests(&ManifestApply {
            objects: vec![serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap"})],
            ..request.clone()
        })
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("metadata.name"), "{bad}");
    k.provider.delete_manifests(NS, "bundle").await?;
    assert!(k.object("apps/v1", "Deployment", "worker").is_none());
    assert!(matches!(
        k.provider.manifest_status(NS, "bundle").await,
        Err(Error::NotFound(_))
    ));
    k.provider.delete_manifests(NS, "bundle").await?;

    // Argo CD: without its CRD the engine says so; with it, the
    // Application is applied and its sync/health read back.
    let app = ArgoApplication {
        instance: "shop".into(),
        repo_url: "https://github.com/acme/shop.git".into(),
        path: Some("deploy".into()),
        target_revision: "main".into(),
        destination_namespace: NS.into(),
        automated: true,
        ..ArgoApplication::default()
    };
    let missing = k.provider.argo_apply(&app).await.unwrap_err();
    assert!(missing.to_string().contains("Argo CD"), "{missing}");
    k.fake.register_crd(
        "argoproj.io",
        "v1alpha1",
        "Application",
        "applications",
        true,
    );
    let argocd = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "argocd"}});
    k.provider
        .apply_manifests(&ManifestApply {
            instance: "argocd-ns".into(),
            namespace: "default".into(),
            objects: vec![argocd],
        })
        .await?;
    k.provider.argo_apply(&app).await?;
    let object = k
        .fake
        .object(
            "argoproj.io/v1alpha1",
            "Application",
            Some("argocd"),
            "shop",
        )
        .context("no Application")?;
    assert_eq!(object["spec"]["source"]["repoURL"], app.repo_url);
    assert_eq!(object["spec"]["destination"]["namespace"], NS);
    assert_eq!(object["spec"]["syncPolicy"]["automated"]["prune"], true);
    let progressing = k.provider.argo_status("shop").await?;
    assert!(!progressing.ready);
    let client = k.provider.client().clone();
    let ar = kube::api::ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Application"),
        "applications",
    );
    let api: kube::Api<kube::api::DynamicObject> =
        kube::Api::namespaced_with(client, "argocd", &ar);
    api.patch_status(
        "shop",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(serde_json::json!({"status": {
            "sync": {"status": "Synced"}, "health": {"status": "Healthy"}
        }})),
    )
    .await?;
    let healthy = k.provider.argo_status("shop").await?;
    assert!(healthy.ready, "{healthy:?}");
    k.provider.argo_delete("shop").await?;
    assert!(matches!(
        k.provider.argo_status("shop").await,
        Err(Error::NotFound(_))
    ));
    k.provider.argo_delete("shop").await?;

    // Helm: the chart rendered by Helm's engine, applied and tracked.
    let release = HelmRelease {
        instance: "hello".into(),
        namespace: NS.into(),
        chart: ctrl_testkit::paths::helm_test_chart(),
        values: vec!["image: registry.example/web:v1\n".into()],
        set: Vec::new(),
    };
    if helm.is_none() {
        let err = k.provider.helm_install(&release).await.unwrap_err();
        assert!(matches!(
            err,
            Error::Unsupported {
                capability: Capability::Helm,
                ..
            }
        ));
        return k.validate_written();
    }
    let installed = k.provider.helm_install(&release).await?;
    assert_eq!(installed.release, "1");
    let again = k.provider.helm_install(&release).await.unwrap_err();
    assert!(again.to_string().contains("already exists"), "{again}");
    let upgraded = k
        .provider
        .helm_upgrade(&HelmRelease {
            set: vec!["replicas=3".into()],
            ..release.clone()
        })
        .await?;
    assert_eq!(upgraded.release, "2");
    let status = eventually("the release ready", async || {
        k.provider
            .helm_status(NS, "hello")
            .await
            .ok()
            .filter(|s| s.ready)
    })
    .await?;
    assert_eq!(status.revision, 2);
    let deployments: Vec<Value> = k
        .fake
        .objects("apps/v1", "Deployment")
        .into_iter()
        .filter(|d| d["metadata"]["labels"]["ctrl.dev/instance"] == "hello")
        .collect();
    assert_eq!(deployments.len(), 1);
    assert_eq!(deployments[0]["spec"]["replicas"], 3);
    k.provider.helm_uninstall(NS, "hello").await?;
    assert!(
        k.fake
            .objects("apps/v1", "Deployment")
            .iter()
            .all(|d| d["metadata"]["labels"]["ctrl.dev/instance"] != "hello")
    );
    k.validate_written()
}
