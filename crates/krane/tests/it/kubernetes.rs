//! The whole loop with krane on Kubernetes: the real ctrl stack (MariaDB,
//! restate-server, worker, API, cluster-sync) and the krane binary,
//! unchanged but for `[provider] kind = "kubernetes"`, against the
//! testkit's fake API server — deploy → ready, a sealed variable reaching
//! the pod only through a Secret, logs through krane's endpoint, rollback,
//! scale, drift and orphans fixed by the reconcile (another cluster's
//! objects untouched), a restarted krane that writes nothing, stop, and a
//! crash-looping image failing the deploy with its reason. Every object
//! krane wrote is then validated against the real Kubernetes schemas.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ctrl_proto::ctrl::v1 as pb;
use ctrl_provider::kubernetes::{KubernetesConfig, KubernetesProvider};
use ctrl_provider::spec::{ServiceSpec, WorkloadKind};
use ctrl_provider::{NoSecrets, Provider, WorkloadSpec};
use ctrl_testkit::kube::Behaviour;
use ctrl_testkit::{FakeKube, kube_schema};
use serde_json::Value;

use crate::e2e::{Backend, Stack, auth};
use crate::support::eventually;

const V1: &str = "registry.example/demo:v1";
const V2: &str = "registry.example/demo:v2";
const CRASH: &str = "registry.example/demo:crash";

fn kube(stack: &Stack) -> Result<&FakeKube> {
    stack.kube.as_ref().context("a Kubernetes stack")
}

/// The Deployments krane made for ctrl deployment `id`.
fn deployments_of(kube: &FakeKube, id: &str) -> Vec<Value> {
    kube.objects("apps/v1", "Deployment")
        .into_iter()
        .filter(|d| d["metadata"]["labels"]["ctrl.dev/deployment-id"] == id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn krane_runs_deployments_on_kubernetes() -> Result<()> {
    let mut stack = Stack::start_on(Backend::Kubernetes).await?;
    kube(&stack)?.set_behaviour(
        CRASH,
        Behaviour::CrashLoop {
            exit_code: 2,
            message: "fatal: no config".into(),
        },
    );
    let ch = stack.api.clone();
    let app = stack.app().await?;
    stack
        .set_secret(
            &app.id,
            "production",
            "DATABASE_PASSWORD",
            "hunter2-plaintext",
        )
        .await?;

    // Deploy → ready: a Deployment in the workspace's namespace whose pod
    // takes the variable from a Secret.
    let d1 = stack.deploy(&app.id, "production", V1).await?;
    let ready = stack.wait_status(&d1, pb::DeploymentStatus::Ready).await?;
    assert!(!ready.hostnames.is_empty());
    let k = kube(&stack)?;
    let made = deployments_of(k, &d1);
    assert_eq!(made.len(), 1, "{made:?}");
    let deployment = &made[0];
    let namespace = deployment["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default();
    assert!(!namespace.is_empty());
    assert_eq!(deployment["metadata"]["labels"]["ctrl.dev/region"], "local");
    assert_eq!(
        deployment["metadata"]["labels"]["ctrl.dev/cluster"],
        "local-1"
    );
    let env = &deployment["spec"]["template"]["spec"]["containers"][0]["env"];
    let password = env
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["name"] == "DATABASE_PASSWORD")
        .context("no DATABASE_PASSWORD")?;
    assert!(password["value"].is_null());
    assert!(password["valueFrom"]["secretKeyRef"]["name"].is_string());
    for object in k.written() {
        if object["kind"] != "Secret" {
            assert!(
                !object.to_string().contains("hunter2"),
                "plaintext in a {}",
                object["kind"]
            );
        }
    }
    assert!(
        !std::fs::read_to_string(stack.dir.path().join("krane.log"))?.contains("hunter2"),
        "never in krane's log"
    );
    let instances = ctrl_db::instance::list_by_deployment(&stack.db.pool, &d1).await?;
    let pod_ips: Vec<String> = k
        .objects("v1", "Pod")
        .iter()
        .filter_map(|p| p["status"]["podIP"].as_str().map(|ip| format!("{ip}:8080")))
        .collect();
    assert!(
        instances.iter().any(|i| pod_ips.contains(&i.address)),
        "instances {instances:?} are not at pod addresses {pod_ips:?}"
    );

    // `ctrl logs` reads the pod log API through krane, over its own
    // connection to cluster-sync (another server than ctrl-api here: they
    // meet in the database).
    let pod = k
        .objects("v1", "Pod")
        .into_iter()
        .find(|p| p["metadata"]["labels"]["ctrl.dev/deployment-id"] == d1.as_str())
        .context("no pod of d1")?;
    let pod_name = pod["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    k.append_log(namespace, &pod_name, "app", "hello from the pod");
    let mut lines = pb::deployment_service_client::DeploymentServiceClient::new(stack.api.clone())
        .stream_deployment_logs(auth(pb::StreamDeploymentLogsRequest {
            deployment_id: d1.clone(),
            tail_lines: Some(5),
            ..Default::default()
        }))
        .await?
        .into_inner();
    let mut body = Vec::new();
    while let Some(line) = tokio::time::timeout(Duration::from_secs(20), lines.message()).await?? {
        body.push(format!("{}/{} {}", line.region, line.instance, line.line));
    }
    assert!(
        body.iter()
            .any(|l| l.contains("hello from the pod") && l.starts_with("local/")),
        "{body:?}"
    );

    // A second deployment, then rollback to the first.
    let d2 = stack.deploy(&app.id, "production", V2).await?;
    stack.wait_status(&d2, pb::DeploymentStatus::Ready).await?;
    eventually(Duration::from_secs(10), "d2 live", || async {
        Ok(stack.get(&d2).await?.is_live)
    })
    .await?;
    stack.rollback_to(&d1).await?;
    assert!(stack.get(&d1).await?.is_live);
    assert_eq!(deployments_of(kube(&stack)?, &d1).len(), 1, "d1 still runs");

    // Drift: the Deployment deleted behind krane's back comes back.
    let kubeconfig = kube::config::Kubeconfig::read_from(stack.dir.path().join("kubeconfig"))?;
    let client = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?,
    )?;
    let name = deployment["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    kube::Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client, namespace)
        .delete(&name, &Default::default())
        .await?;
    eventually(Duration::from_secs(30), "d1's Deployment back", || async {
        Ok(deployments_of(kube(&stack)?, &d1).len() == 1)
    })
    .await?;

    // Orphans: a workload labelled for this region and cluster that no
    // deployment asks for is removed by krane's reconcile; another
    // cluster's is never touched.
    let agent = |cluster: &str| KubernetesConfig {
        kubeconfig: Some(stack.dir.path().join("kubeconfig")),
        region: "local".into(),
        cluster: cluster.into(),
        start_timeout_seconds: 20,
        ..KubernetesConfig::default()
    };
    let stray = |id: &str| WorkloadSpec {
        id: id.into(),
        release: "r1".into(),
        kind: WorkloadKind::Stateless,
        replicas: 1,
        services: vec![ServiceSpec::main("app", V1)],
        labels: [
            ("ctrl.dev/namespace".to_owned(), namespace.to_owned()),
            ("ctrl.dev/deployment-id".to_owned(), format!("dpl_{id}")),
        ]
        .into(),
        autoscaling: None,
        network_policy: None,
    };
    KubernetesProvider::connect(agent("local-1"), Arc::new(NoSecrets))
        .await?
        .provision(&stray("stray"))
        .await?;
    KubernetesProvider::connect(agent("other-1"), Arc::new(NoSecrets))
        .await?
        .provision(&stray("foreign"))
        .await?;
    eventually(Duration::from_secs(30), "the orphan removed", || async {
        Ok(kube(&stack)?
            .object("apps/v1", "Deployment", Some(namespace), "stray")
            .is_none())
    })
    .await?;
    assert!(
        kube(&stack)?
            .object("apps/v1", "Deployment", Some(namespace), "foreign")
            .is_some(),
        "another cluster's workload was touched"
    );

    // Scale: two replicas in the region → two pods.
    let region = ctrl_db::cluster::list_regions(&stack.db.pool)
        .await?
        .into_iter()
        .next()
        .context("no region")?;
    pb::app_service_client::AppServiceClient::new(ch.clone())
        .update_app_settings(auth(pb::UpdateAppSettingsRequest {
            app_id: app.id.clone(),
            environment_slug: "preview".into(),
            regions: Some(pb::RegionalSettingsList {
                regions: vec![pb::RegionalSettings {
                    region_id: region.id.clone(),
                    autoscaling: Some(pb::AutoscalingPolicy {
                        min_replicas: 2,
                        max_replicas: 2,
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
            }),
            ..Default::default()
        }))
        .await?;
    let p1 = stack.deploy(&app.id, "preview", V1).await?;
    stack.wait_status(&p1, pb::DeploymentStatus::Ready).await?;
    let instances = ctrl_db::instance::list_by_deployment(&stack.db.pool, &p1).await?;
    assert_eq!(instances.len(), 2, "{instances:?}");

    // krane restarted: nothing is recomputed — the re-apply is a no-op.
    let before = kube(&stack)?.request_count();
    stack.krane.as_mut().context("krane")?.kill();
    stack.krane = None;
    stack.start_krane().await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let writes: Vec<_> = kube(&stack)?.requests()[before..]
        .iter()
        .filter(|r| r.method != "GET")
        .cloned()
        .collect();
    assert!(writes.is_empty(), "a restarted krane wrote {writes:?}");

    // Stop removes the preview's objects; the others stay.
    stack.stop(&p1).await?;
    stack
        .wait_status(&p1, pb::DeploymentStatus::Stopped)
        .await?;
    eventually(Duration::from_secs(30), "p1's objects gone", || async {
        Ok(deployments_of(kube(&stack)?, &p1).is_empty())
    })
    .await?;
    assert_eq!(deployments_of(kube(&stack)?, &d1).len(), 1);

    // A crash-looping image fails its deploy with the exit and last line.
    let crashing = stack.deploy(&app.id, "preview", CRASH).await?;
    let ended = stack.wait_end(&crashing).await?;
    assert_eq!(ended.status(), pb::DeploymentStatus::Failed, "{ended:?}");
    assert!(
        ended.error_message.contains("exited with code 2")
            && ended.error_message.contains("fatal: no config"),
        "{}",
        ended.error_message
    );

    let written = kube(&stack)?.written();
    kube_schema::validate(&written, kube_schema::KUBERNETES_VERSION)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if written.len() < 10 {
        bail!("only {} objects written", written.len());
    }
    Ok(())
}
