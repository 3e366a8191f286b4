//! The fake Kubernetes API exercised through kube-rs, the client the
//! Kubernetes backend uses: every test talks HTTP to a started
//! [`FakeKube`] through a kubeconfig it wrote.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::{AsyncBufReadExt as _, StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, AttachParams, DeleteParams, DynamicObject, ListParams, LogParams, Patch,
    PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;
use kube::{Client, Config, Discovery, ResourceExt as _};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::{Behaviour, FakeKube};

type Result<T = ()> = anyhow::Result<T>;

/// A kube-rs client configured by the kubeconfig the fake writes.
async fn client(kube: &FakeKube) -> Result<Client> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("kubeconfig");
    kube.write_kubeconfig(&path)?;
    let config = Config::from_custom_kubeconfig(
        Kubeconfig::read_from(&path)?,
        &KubeConfigOptions::default(),
    )
    .await?;
    Ok(Client::try_from(config)?)
}

async fn start() -> Result<(FakeKube, Client)> {
    let kube = FakeKube::start().await?;
    let client = client(&kube).await?;
    Ok((kube, client))
}

/// Polls `check` every 20 ms until it returns `Some`, for at most `secs`.
async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn api_error(result: kube::Result<impl std::fmt::Debug>) -> Box<kube::core::Status> {
    match result {
        Err(kube::Error::Api(status)) => status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn deployment(name: &str, image: &str, replicas: i32) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image, "env": [{"name": "FOO", "value": "bar"}]}]},
            },
        },
    })
}

fn pod(name: &str, containers: &[(&str, &str)]) -> Value {
    let containers: Vec<Value> = containers
        .iter()
        .map(|(n, i)| json!({"name": n, "image": i, "env": [{"name": "GREETING", "value": "hello from the pod"}]}))
        .collect();
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {"containers": containers}})
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn apply<K>(api: &Api<K>, manager: &str, body: &Value) -> kube::Result<K>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = body["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    api.patch(&name, &PatchParams::apply(manager), &Patch::Apply(body))
        .await
}

async fn wait_available(
    deployments: &Api<Deployment>,
    name: &str,
    replicas: i32,
) -> Result<Deployment> {
    eventually(10, "the deployment to be available", || async {
        let d = deployments.get(name).await?;
        let s = d.status.clone().unwrap_or_default();
        let done = s.available_replicas == Some(replicas)
            && s.updated_replicas == Some(replicas)
            && s.replicas == Some(replicas)
            && s.observed_generation == d.metadata.generation;
        Ok(done.then_some(d))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_creates_keeps_and_removes_fields() -> Result {
    let (kube, client) = start().await?;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    let first = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "app", "labels": {"a": "1", "b": "2"}},
        "data": {"x": "1", "y": "2"}});
    let created = apply(&api, "ctrl", &first).await?;
    let rv = created.resource_version();
    assert!(rv.is_some());
    assert_eq!(created.namespace().as_deref(), Some("default"));
    let managed = created.metadata.managed_fields.clone().unwrap_or_default();
    assert_eq!(managed.len(), 1);
    assert_eq!(managed[0].manager.as_deref(), Some("ctrl"));
    assert_eq!(managed[0].operation.as_deref(), Some("Apply"));
    let fields = serde_json::to_value(&managed[0].fields_v1)?;
    assert!(fields.pointer("/f:data/f:y").is_some(), "{fields}");

    // The same configuration again changes nothing, not even the resourceVersion.
    let global = kube.resource_version();
    let again = apply(&api, "ctrl", &first).await?;
    assert_eq!(again.resource_version(), rv);
    assert_eq!(kube.resource_version(), global);

    // Another manager's field survives; fields this manager drops go.
    api.patch(
        "app",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"z": "3"}})),
    )
    .await?;
    let second = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "app", "labels": {"a": "1"}}, "data": {"x": "1"}});
    let after = apply(&api, "ctrl", &second).await?;
    assert_ne!(after.resource_version(), rv);
    let data = after.data.clone().unwrap_or_default();
    assert_eq!(data.keys().cloned().collect::<Vec<_>>(), vec!["x", "z"]);
    assert_eq!(after.labels().len(), 1);
    assert_eq!(kube.written().last(), Some(&second));

    // Apply needs a field manager: the real server's 422.
    let status = api_error(
        api.patch("app", &PatchParams::default(), &Patch::Apply(&second))
            .await,
    );
    assert_eq!(status.code, 422);
    assert!(
        status.message.contains("fieldManager: Required value"),
        "{}",
        status.message
    );
    let record = kube
        .requests()
        .into_iter()
        .rfind(|r| r.method == "PATCH" && r.status == 200)
        .expect("a recorded PATCH");
    assert_eq!(
        record.content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
    assert_eq!(record.field_manager.as_deref(), Some("ctrl"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn field_managers_conflict_unless_forced() -> Result {
    let (_kube, client) = start().await?;
    let api: Api<Deployment> = Api::default_namespaced(client);
    apply(&api, "ctrl", &deployment("web", "web:1", 2)).await?;
    let mut other = deployment("web", "web:1", 5);
    other["spec"] = json!({"replicas": 5});
    let status = api_error(apply(&api, "hpa", &other).await);
    assert_eq!(status.code, 409);
    assert_eq!(status.reason, "Conflict");
    assert_eq!(
        status.message,
        "Apply failed with 1 conflict: conflict with \"ctrl\": .spec.replicas"
    );
    let forced = api
        .patch(
            "web",
            &PatchParams::apply("hpa").force(),
            &Patch::Apply(&other),
        )
        .await?;
    assert_eq!(forced.spec.as_ref().and_then(|s| s.replicas), Some(5));
    // Now ctrl's old value conflicts with hpa.
    let status = api_error(apply(&api, "ctrl", &deployment("web", "web:1", 2)).await);
    assert!(
        status.message.contains("conflict with \"hpa\""),
        "{}",
        status.message
    );
    // An update takes ownership: an apply of a different value conflicts with it.
    api.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 7}})),
    )
    .await?;
    let status = api_error(apply(&api, "hpa", &other).await);
    assert!(
        status.message.contains("using apps/v1"),
        "{}",
        status.message
    );
    // The same value is shared without conflict.
    let mut seven = other.clone();
    seven["spec"]["replicas"] = json!(7);
    apply(&api, "hpa", &seven).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_filter_page_and_errors_are_statuses() -> Result {
    let (kube, client) = start().await?;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    for (name, tier) in [
        ("a", "front"),
        ("b", "back"),
        ("c", "front"),
        ("d", "db"),
        ("e", "front"),
    ] {
        let mut labels = json!({"tier": tier});
        if name == "c" {
            labels["canary"] = json!("true");
        }
        let cm: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}}))?;
        api.create(&PostParams::default(), &cm).await?;
    }
    let names = |list: kube::core::ObjectList<ConfigMap>| -> Vec<String> {
        list.items.iter().map(|c| c.name_any()).collect()
    };
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("tier=front"))
                .await?
        ),
        ["a", "c", "e"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("tier in (front,back),!canary"))
                .await?
        ),
        ["a", "b", "e"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("tier!=front,tier"))
                .await?
        ),
        ["b", "d"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().fields("metadata.name=d"))
                .await?
        ),
        ["d"]
    );
    let status = api_error(
        api.list(&ListParams::default().labels("tier in (front"))
            .await,
    );
    assert_eq!(status.code, 400);

    // Pages: limit and continue, with the first page's resourceVersion.
    let first = api
        .list(&ListParams::default().labels("tier").limit(2))
        .await?;
    let token = first.metadata.continue_.clone().expect("a continue token");
    let second = api
        .list(
            &ListParams::default()
                .labels("tier")
                .limit(2)
                .continue_token(&token),
        )
        .await?;
    let third_token = second.metadata.continue_.clone().expect("another page");
    let third = api
        .list(
            &ListParams::default()
                .labels("tier")
                .limit(2)
                .continue_token(&third_token),
        )
        .await?;
    assert!(third.metadata.continue_.is_none());
    assert_eq!(
        second.metadata.resource_version,
        first.metadata.resource_version
    );
    let all: Vec<String> = [first, second, third].into_iter().flat_map(names).collect();
    assert_eq!(all, ["a", "b", "c", "d", "e"]);
    let unfiltered = api.list(&ListParams::default().limit(1)).await?;
    assert!(
        unfiltered
            .metadata
            .remaining_item_count
            .is_some_and(|n| n >= 5)
    );

    // Optimistic concurrency.
    let mut a = api.get("a").await?;
    let stale = a.clone();
    a.data = Some([("k".to_owned(), "v".to_owned())].into());
    api.replace("a", &PostParams::default(), &a).await?;
    let status = api_error(api.replace("a", &PostParams::default(), &stale).await);
    assert_eq!(status.code, 409);
    assert!(
        status.message.contains("the object has been modified"),
        "{}",
        status.message
    );

    // Statuses for missing, existing and invalid objects.
    let status = api_error(api.get("nope").await);
    assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"));
    assert_eq!(status.message, "configmaps \"nope\" not found");
    let dup: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "a"}}))?;
    let status = api_error(api.create(&PostParams::default(), &dup).await);
    assert_eq!(
        (status.code, status.reason.as_str()),
        (409, "AlreadyExists")
    );
    let bad: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "Bad_Name", "labels": {"ok": "no way"}}}),
    )?;
    let status = api_error(api.create(&PostParams::default(), &bad).await);
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    let causes = status.details.clone().map(|d| d.causes).unwrap_or_default();
    let fields: BTreeSet<&str> = causes.iter().map(|c| c.field.as_str()).collect();
    assert_eq!(fields, BTreeSet::from(["metadata.labels", "metadata.name"]));
    let missing_ns: Api<ConfigMap> = Api::namespaced(client, "nowhere");
    let status = api_error(missing_ns.create(&PostParams::default(), &dup).await);
    assert_eq!(status.message, "namespaces \"nowhere\" not found");

    // Injected failures and an unreachable server.
    kube.fail_next("GET", "/configmaps/a", 500, 1);
    assert_eq!(api_error(api.get("a").await).code, 500);
    api.get("a").await?;
    // kube-rs retries 503s with backoff: the get succeeds once the server is back.
    kube.set_down(true);
    let pending = tokio::spawn({
        let api = api.clone();
        async move { api.get("a").await }
    });
    eventually(5, "refused requests", || async {
        Ok(kube
            .requests()
            .iter()
            .any(|r| r.status == 503)
            .then_some(()))
    })
    .await?;
    assert!(!pending.is_finished());
    kube.set_down(false);
    assert_eq!(pending.await??.name_any(), "a");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_sees_a_deployments_replica_set_and_ready_pods() -> Result {
    let (_kube, client) = start().await?;
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let replica_sets: Api<ReplicaSet> = Api::default_namespaced(client.clone());
    let mut pod_events = watcher(pods, watcher::Config::default().labels("app=web")).boxed();
    let mut rs_events = watcher(replica_sets, watcher::Config::default()).boxed();
    apply(&deployments, "ctrl", &deployment("web", "web:1", 2)).await?;
    let ready = tokio::time::timeout(Duration::from_secs(10), async {
        let mut ready = BTreeSet::new();
        while let Some(event) = pod_events.try_next().await? {
            if let watcher::Event::Apply(p) | watcher::Event::InitApply(p) = event
                && is_ready(&p)
            {
                ready.insert(p.name_any());
                if ready.len() == 2 {
                    break;
                }
            }
        }
        anyhow::Ok(ready)
    })
    .await??;
    assert!(ready.iter().all(|n| n.starts_with("web-")), "{ready:?}");
    let rs = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(event) = rs_events.try_next().await? {
            if let watcher::Event::Apply(rs) | watcher::Event::InitApply(rs) = event {
                return anyhow::Ok(rs);
            }
        }
        anyhow::bail!("the watch ended")
    })
    .await??;
    let hash = rs
        .labels()
        .get("pod-template-hash")
        .cloned()
        .expect("a template hash");
    assert_eq!(rs.name_any(), format!("web-{hash}"));
    assert_eq!(
        rs.annotations()
            .get("deployment.kubernetes.io/revision")
            .map(String::as_str),
        Some("1")
    );
    let owner = &rs.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("Deployment", Some(true))
    );
    let d = wait_available(&deployments, "web", 2).await?;
    let conditions = d.status.and_then(|s| s.conditions).unwrap_or_default();
    let reason = |t: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == t)
            .and_then(|c| c.reason.clone())
    };
    assert_eq!(
        reason("Available").as_deref(),
        Some("MinimumReplicasAvailable")
    );
    assert_eq!(
        reason("Progressing").as_deref(),
        Some("NewReplicaSetAvailable")
    );

    // A streaming list (sendInitialEvents) ends its initial events with a bookmark.
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let mut streaming = watcher(pods, watcher::Config::default().streaming_lists()).boxed();
    let initial = tokio::time::timeout(Duration::from_secs(5), async {
        let mut initial = 0;
        while let Some(event) = streaming.try_next().await? {
            match event {
                watcher::Event::InitApply(_) => initial += 1,
                watcher::Event::InitDone => return anyhow::Ok(initial),
                _ => {}
            }
        }
        anyhow::bail!("the watch ended")
    })
    .await??;
    assert_eq!(initial, 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_resource_version_makes_the_watcher_relist() -> Result {
    let (kube, client) = start().await?;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "one"}}))?;
    let created = api.create(&PostParams::default(), &cm).await?;
    let old_rv = created.resource_version().unwrap_or_default();

    // A plain watch from a compacted resourceVersion: an ERROR event, 410.
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    let secret: Secret =
        serde_json::from_value(json!({"metadata": {"name": "s"}, "stringData": {"k": "v"}}))?;
    let secret = secrets.create(&PostParams::default(), &secret).await?;
    assert_eq!(secret.data.unwrap_or_default()["k"].0, b"v");
    kube.compact();
    let mut stream = api.watch(&WatchParams::default(), &old_rv).await?.boxed();
    match stream.try_next().await? {
        Some(WatchEvent::Error(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
            assert!(
                status.message.starts_with("too old resource version"),
                "{}",
                status.message
            );
        }
        other => panic!("expected a 410 error event, got {other:?}"),
    }

    // kube-runtime's watcher relists when its resumed watch gets 410.
    let mut events = watcher(
        api.clone(),
        watcher::Config::default().timeout(1).disable_bookmarks(),
    )
    .boxed();
    let mut inits = 0;
    let relisted = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::InitDone) => {
                    inits += 1;
                    if inits == 2 {
                        return anyhow::Ok(true);
                    }
                    // Move the global resourceVersion on elsewhere and forget history.
                    let s: Secret =
                        serde_json::from_value(json!({"metadata": {"generateName": "s-"}}))?;
                    secrets.create(&PostParams::default(), &s).await?;
                    kube.compact();
                }
                Ok(_) => {}
                Err(watcher::Error::WatchError(status)) => assert_eq!(status.code, 410),
                Err(e) => anyhow::bail!("watcher error: {e}"),
            }
        }
        anyhow::Ok(false)
    })
    .await??;
    assert!(relisted);
    let lists = kube
        .requests()
        .iter()
        .filter(|r| {
            r.path == "/api/v1/namespaces/default/configmaps" && !r.is_watch && r.method == "GET"
        })
        .count();
    assert_eq!(lists, 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_replaces_the_replica_set_and_a_rollback_reuses_it() -> Result {
    let (kube, client) = start().await?;
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let replica_sets: Api<ReplicaSet> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let mut spec = deployment("web", "web:1", 2);
    spec["spec"]["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "100%", "maxUnavailable": 0}});
    apply(&deployments, "ctrl", &spec).await?;
    wait_available(&deployments, "web", 2).await?;
    let first = replica_sets.list(&ListParams::default()).await?.items;
    assert_eq!(first.len(), 1);
    let first_name = first[0].name_any();

    spec["spec"]["template"]["spec"]["containers"][0]["image"] = json!("web:2");
    apply(&deployments, "ctrl", &spec).await?;
    let d = wait_available(&deployments, "web", 2).await?;
    assert_eq!(
        d.annotations()
            .get("deployment.kubernetes.io/revision")
            .map(String::as_str),
        Some("2")
    );
    let sets = replica_sets.list(&ListParams::default()).await?.items;
    assert_eq!(sets.len(), 2);
    let old = sets
        .iter()
        .find(|rs| rs.name_any() == first_name)
        .expect("the old replica set");
    let new = sets
        .iter()
        .find(|rs| rs.name_any() != first_name)
        .expect("the new replica set");
    assert_eq!(old.spec.as_ref().and_then(|s| s.replicas), Some(0));
    assert_eq!(new.spec.as_ref().and_then(|s| s.replicas), Some(2));
    let new_hash = new.labels()["pod-template-hash"].clone();
    eventually(5, "only new pods", || async {
        let list = pods
            .list(&ListParams::default().labels("app=web"))
            .await?
            .items;
        Ok((list.len() == 2
            && list
                .iter()
                .all(|p| p.labels()["pod-template-hash"] == new_hash))
        .then_some(()))
    })
    .await?;

    // Back to web:1: the first replica set again, with the next revision.
    spec["spec"]["template"]["spec"]["containers"][0]["image"] = json!("web:1");
    apply(&deployments, "ctrl", &spec).await?;
    wait_available(&deployments, "web", 2).await?;
    let reused = replica_sets.get(&first_name).await?;
    assert_eq!(
        reused.annotations()["deployment.kubernetes.io/revision"],
        "3"
    );
    assert_eq!(reused.spec.and_then(|s| s.replicas), Some(2));

    // `kubectl rollout restart`: a template annotation is a new template.
    let restart = json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "2025-01-01T00:00:00Z"}}}}});
    deployments
        .patch("web", &PatchParams::default(), &Patch::Strategic(restart))
        .await?;
    let d = wait_available(&deployments, "web", 2).await?;
    assert_eq!(d.annotations()["deployment.kubernetes.io/revision"], "4");
    assert_eq!(
        replica_sets.list(&ListParams::default()).await?.items.len(),
        3
    );
    let generation = d.metadata.generation;
    assert_eq!(generation, Some(4));

    // Deleting the deployment takes its replica sets and pods along.
    deployments
        .delete("web", &DeleteParams::background())
        .await?;
    eventually(5, "garbage collection", || async {
        Ok((kube.objects("apps/v1", "ReplicaSet").is_empty()
            && kube.objects("v1", "Pod").is_empty())
        .then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stateful_set_creates_ordinals_in_order_with_claims() -> Result {
    let (kube, client) = start().await?;
    let sets: Api<StatefulSet> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let claims: Api<PersistentVolumeClaim> = Api::default_namespaced(client.clone());
    let mut events = watcher(pods.clone(), watcher::Config::default().labels("app=db")).boxed();
    let mut spec = json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
        "spec": {
            "replicas": 3, "serviceName": "db",
            "selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"labels": {"app": "db"}},
                "spec": {"containers": [{"name": "db", "image": "db:1",
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}],
        },
    });
    apply(&sets, "ctrl", &spec).await?;
    let order = tokio::time::timeout(Duration::from_secs(10), async {
        let mut order: Vec<String> = Vec::new();
        let mut ready = BTreeSet::new();
        while let Some(event) = events.try_next().await? {
            if let watcher::Event::Apply(p) | watcher::Event::InitApply(p) = event {
                let name = p.name_any();
                if !order.contains(&name) {
                    // A pod appears only once its predecessor is ready.
                    if let Some(previous) = order.last() {
                        assert!(
                            ready.contains(previous),
                            "{name} before {previous} was ready"
                        );
                    }
                    order.push(name.clone());
                }
                if is_ready(&p) {
                    ready.insert(name);
                }
                if ready.len() == 3 {
                    break;
                }
            }
        }
        anyhow::Ok(order)
    })
    .await??;
    assert_eq!(order, ["db-0", "db-1", "db-2"]);
    let db1 = pods.get("db-1").await?;
    assert_eq!(db1.labels()["statefulset.kubernetes.io/pod-name"], "db-1");
    let pod_spec = db1.spec.clone().unwrap_or_default();
    assert_eq!(pod_spec.hostname.as_deref(), Some("db-1"));
    assert_eq!(pod_spec.subdomain.as_deref(), Some("db"));
    let volume = &pod_spec.volumes.unwrap_or_default()[0];
    assert_eq!(
        volume
            .persistent_volume_claim
            .as_ref()
            .map(|c| c.claim_name.as_str()),
        Some("data-db-1")
    );
    let claim = claims.get("data-db-1").await?;
    assert_eq!(claim.status.and_then(|s| s.phase).as_deref(), Some("Bound"));
    let sts = eventually(5, "the stateful set status", || async {
        let s = sets.get("db").await?;
        Ok((s.status.as_ref().and_then(|s| s.ready_replicas) == Some(3)).then_some(s))
    })
    .await?;
    let status = sts.status.unwrap_or_default();
    assert_eq!(status.current_revision, status.update_revision);
    let first_revision = status.update_revision.clone().unwrap_or_default();
    assert_eq!(db1.labels()["controller-revision-hash"], first_revision);

    // A template change replaces the pods from the highest ordinal down.
    spec["spec"]["template"]["spec"]["containers"][0]["image"] = json!("db:2");
    apply(&sets, "ctrl", &spec).await?;
    let sts = eventually(10, "the rolling update", || async {
        let s = sets.get("db").await?;
        let st = s.status.clone().unwrap_or_default();
        let done = st.updated_replicas == Some(3)
            && st.ready_replicas == Some(3)
            && st.current_revision == st.update_revision
            && st.update_revision.as_deref() != Some(first_revision.as_str());
        Ok(done.then_some(s))
    })
    .await?;
    let revision = sts
        .status
        .and_then(|s| s.update_revision)
        .unwrap_or_default();
    for name in ["db-0", "db-1", "db-2"] {
        assert_eq!(
            pods.get(name).await?.labels()["controller-revision-hash"],
            revision
        );
    }

    // Deleting the set deletes its pods but keeps the claims.
    sets.delete("db", &DeleteParams::default()).await?;
    eventually(5, "the pods to go", || async {
        Ok(kube.objects("v1", "Pod").is_empty().then_some(()))
    })
    .await?;
    let names: Vec<String> = claims
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .map(|c| c.name_any())
        .collect();
    assert_eq!(names, ["data-db-0", "data-db-1", "data-db-2"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scale_subresource_reads_and_sets_replicas() -> Result {
    let (_kube, client) = start().await?;
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    apply(&deployments, "ctrl", &deployment("web", "web:1", 1)).await?;
    let scale = deployments.get_scale("web").await?;
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(1));
    assert_eq!(
        scale.status.map(|s| s.selector),
        Some(Some("app=web".to_owned()))
    );
    let scaled = deployments
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await?;
    assert_eq!(scaled.spec.and_then(|s| s.replicas), Some(3));
    wait_available(&deployments, "web", 3).await?;
    assert_eq!(
        pods.list(&ListParams::default().labels("app=web"))
            .await?
            .items
            .len(),
        3
    );
    let apply_scale = json!({"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "web"}, "spec": {"replicas": 1}});
    // The merge patch made its sender the owner of spec.replicas.
    let status = api_error(
        deployments
            .patch_scale(
                "web",
                &PatchParams::apply("hpa"),
                &Patch::Apply(&apply_scale),
            )
            .await,
    );
    assert_eq!(status.code, 409);
    deployments
        .patch_scale(
            "web",
            &PatchParams::apply("hpa").force(),
            &Patch::Apply(&apply_scale),
        )
        .await?;
    let d = wait_available(&deployments, "web", 1).await?;
    let managers: Vec<(String, String)> = d
        .managed_fields()
        .iter()
        .map(|m| {
            (
                m.manager.clone().unwrap_or_default(),
                m.subresource.clone().unwrap_or_default(),
            )
        })
        .collect();
    assert!(
        managers.contains(&("hpa".to_owned(), "scale".to_owned())),
        "{managers:?}"
    );
    // The applier of spec.replicas now conflicts with the scaler.
    let status = api_error(apply(&deployments, "ctrl", &deployment("web", "web:1", 4)).await);
    assert!(
        status
            .message
            .contains("\"hpa\" with subresource \"scale\""),
        "{}",
        status.message
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_behaviours_show_in_the_status() -> Result {
    let (kube, client) = start().await?;
    kube.set_behaviour(
        "crash:1",
        Behaviour::CrashLoop {
            exit_code: 2,
            message: "boom: no config".to_owned(),
        },
    );
    kube.set_behaviour("oom:1", Behaviour::OomKilled);
    kube.set_behaviour("pull:1", Behaviour::ImagePullBackOff);
    kube.set_behaviour(
        "probe:1",
        Behaviour::NeverReady {
            message: "HTTP probe failed with statuscode: 503".to_owned(),
        },
    );
    kube.set_behaviour(
        "big:1",
        Behaviour::Unschedulable {
            message: "0/1 nodes are available: 1 Insufficient cpu.".to_owned(),
        },
    );
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    for (name, image) in [
        ("crash", "crash:1"),
        ("oom", "oom:1"),
        ("pull", "pull:1"),
        ("probe", "probe:1"),
        ("big", "big:1"),
    ] {
        pods.create(
            &PostParams::default(),
            &serde_json::from_value(pod(name, &[("app", image)]))?,
        )
        .await?;
    }
    let crash = eventually(5, "restarts", || async {
        let p = pods.get("crash").await?;
        let restarts = p
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .map_or(0, |c| c[0].restart_count);
        Ok((restarts >= 3).then_some(p))
    })
    .await?;
    let status = crash.status.clone().unwrap_or_default();
    assert_eq!(status.phase.as_deref(), Some("Running"));
    assert!(!is_ready(&crash));
    let container = &status.container_statuses.unwrap_or_default()[0];
    let waiting = container
        .state
        .as_ref()
        .and_then(|s| s.waiting.clone())
        .expect("waiting");
    assert_eq!(waiting.reason.as_deref(), Some("CrashLoopBackOff"));
    assert!(
        waiting
            .message
            .unwrap_or_default()
            .contains("restarting failed container=app pod=crash_default(")
    );
    let last = container
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.clone())
        .expect("terminated");
    assert_eq!(
        (
            last.exit_code,
            last.reason.as_deref(),
            last.message.as_deref()
        ),
        (2, Some("Error"), Some("boom: no config"))
    );
    let logs = pods
        .logs(
            "crash",
            &LogParams {
                previous: true,
                ..LogParams::default()
            },
        )
        .await?;
    assert_eq!(logs.lines().last(), Some("boom: no config"));

    let oom = eventually(5, "an OOM kill", || async {
        let p = pods.get("oom").await?;
        let last = p
            .status
            .and_then(|s| s.container_statuses)
            .and_then(|c| c[0].last_state.clone())
            .and_then(|l| l.terminated);
        Ok(last)
    })
    .await?;
    assert_eq!(
        (oom.exit_code, oom.reason.as_deref()),
        (137, Some("OOMKilled"))
    );

    let pull = eventually(5, "ImagePullBackOff", || async {
        let p = pods.get("pull").await?;
        let waiting = p
            .status
            .clone()
            .and_then(|s| s.container_statuses)
            .and_then(|c| c[0].state.clone())
            .and_then(|s| s.waiting);
        Ok(waiting
            .filter(|w| w.reason.as_deref() == Some("ImagePullBackOff"))
            .map(|w| (p, w)))
    })
    .await?;
    assert_eq!(
        pull.1.message.as_deref(),
        Some("Back-off pulling image \"pull:1\"")
    );
    assert_eq!(
        pull.0.status.and_then(|s| s.phase).as_deref(),
        Some("Pending")
    );
    assert_eq!(
        api_error(pods.logs("pull", &LogParams::default()).await).code,
        400
    );

    let probe = eventually(5, "a running probe pod", || async {
        let p = pods.get("probe").await?;
        Ok((p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")).then_some(p))
    })
    .await?;
    let ready = probe
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_deref()),
        ("False", Some("ContainersNotReady"))
    );
    let events = kube.objects("v1", "Event");
    assert!(events.iter().any(|e| e["reason"] == "Unhealthy"
        && e["message"] == "Readiness probe failed: HTTP probe failed with statuscode: 503"
        && e["involvedObject"]["name"] == "probe"));

    let big = pods.get("big").await?;
    let scheduled = big
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "PodScheduled")
        .expect("PodScheduled");
    assert_eq!(
        (scheduled.status.as_str(), scheduled.reason.as_deref()),
        ("False", Some("Unschedulable"))
    );
    assert!(big.spec.and_then(|s| s.node_name).is_none());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_tail_and_follow() -> Result {
    let (kube, client) = start().await?;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(pod("two", &[("app", "web:1"), ("side", "proxy:1")]))?,
    )
    .await?;
    eventually(5, "a ready pod", || async {
        Ok(is_ready(&pods.get("two").await?).then_some(()))
    })
    .await?;
    let status = api_error(pods.logs("two", &LogParams::default()).await);
    assert_eq!(
        status.message,
        "a container name must be specified for pod two, choose one of: [app side]"
    );
    let app = |lp: LogParams| LogParams {
        container: Some("app".to_owned()),
        ..lp
    };
    assert_eq!(
        pods.logs("two", &app(LogParams::default())).await?,
        "started web:1\n"
    );
    for i in 1..=3 {
        kube.append_log("default", "two", "app", &format!("line {i}"));
    }
    let tail = pods
        .logs(
            "two",
            &app(LogParams {
                tail_lines: Some(2),
                ..LogParams::default()
            }),
        )
        .await?;
    assert_eq!(tail, "line 2\nline 3\n");
    let stamped = pods
        .logs(
            "two",
            &app(LogParams {
                tail_lines: Some(1),
                timestamps: true,
                ..LogParams::default()
            }),
        )
        .await?;
    let (stamp, text) = stamped.trim_end().split_once(' ').expect("a timestamp");
    assert!(stamp.ends_with('Z') && stamp.contains('.'), "{stamp}");
    assert_eq!(text, "line 3");

    let mut lines = pods
        .log_stream(
            "two",
            &app(LogParams {
                follow: true,
                tail_lines: Some(1),
                ..LogParams::default()
            }),
        )
        .await?
        .lines();
    assert_eq!(lines.try_next().await?.as_deref(), Some("line 3"));
    kube.append_log("default", "two", "app", "line 4");
    assert_eq!(lines.try_next().await?.as_deref(), Some("line 4"));
    pods.delete(
        "two",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        },
    )
    .await?;
    let end = tokio::time::timeout(Duration::from_secs(5), lines.try_next()).await?;
    assert!(end?.is_none(), "the stream ends with the pod");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_runs_the_command_and_reports_its_exit() -> Result {
    let (kube, client) = start().await?;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(pod("shell", &[("app", "shell:1")]))?,
    )
    .await?;
    eventually(5, "a running pod", || async {
        Ok(is_ready(&pods.get("shell").await?).then_some(()))
    })
    .await?;

    let mut attached = pods
        .exec(
            "shell",
            [
                "sh",
                "-c",
                "echo out; echo \"$GREETING\"; echo err >&2; exit 3",
            ],
            &AttachParams::default(),
        )
        .await?;
    let (mut stdout, mut stderr) = (
        attached.stdout().expect("stdout"),
        attached.stderr().expect("stderr"),
    );
    let status = attached.take_status().expect("a status");
    let (mut out, mut err) = (String::new(), String::new());
    let (o, e, status) = tokio::join!(
        stdout.read_to_string(&mut out),
        stderr.read_to_string(&mut err),
        status
    );
    o?;
    e?;
    assert_eq!(out, "out\nhello from the pod\n");
    assert_eq!(err, "err\n");
    let status = status.expect("a status on channel 3");
    assert_eq!(status.status.as_deref(), Some("Failure"));
    assert_eq!(status.reason.as_deref(), Some("NonZeroExitCode"));
    assert_eq!(
        status.message.as_deref(),
        Some(
            "command terminated with non-zero exit code: error executing command [sh -c echo out; echo \"$GREETING\"; echo err >&2; exit 3], exit code 3"
        )
    );
    let causes = status.details.and_then(|d| d.causes).unwrap_or_default();
    assert_eq!(causes[0].message.as_deref(), Some("3"));
    let exec = kube
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/exec"))
        .expect("the exec request");
    assert_eq!(exec.status, 101);

    // stdin is forwarded; success is a Success status.
    let mut attached = pods
        .exec(
            "shell",
            ["sh", "-c", "read line; echo \"got $line\""],
            &AttachParams::default().stdin(true).stderr(false),
        )
        .await?;
    let mut stdin = attached.stdin().expect("stdin");
    let mut stdout = attached.stdout().expect("stdout");
    let status = attached.take_status().expect("a status");
    stdin.write_all(b"hello\n").await?;
    stdin.shutdown().await?;
    let mut out = String::new();
    stdout.read_to_string(&mut out).await?;
    assert_eq!(out, "got hello\n");
    assert_eq!(
        status.await.and_then(|s| s.status).as_deref(),
        Some("Success")
    );

    // A missing program fails clearly; an unknown container before upgrading.
    let mut attached = pods
        .exec("shell", ["no-such-program-here"], &AttachParams::default())
        .await?;
    let status = attached
        .take_status()
        .expect("a status")
        .await
        .expect("a status");
    assert!(
        status
            .message
            .unwrap_or_default()
            .contains("executable file not found")
    );
    let error = pods
        .exec(
            "shell",
            ["true"],
            &AttachParams::default().container("nope"),
        )
        .await;
    let status = api_error(error.map(|_| ()));
    assert_eq!(
        (status.code, status.message.as_str()),
        (400, "container nope is not valid for pod shell")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_namespace_deletes_everything_in_it() -> Result {
    let (kube, client) = start().await?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "team"}}))?;
    namespaces.create(&PostParams::default(), &ns).await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "team");
    apply(&deployments, "ctrl", &deployment("api", "api:1", 2)).await?;
    wait_available(&deployments, "api", 2).await?;
    assert!(
        kube.object("v1", "ServiceAccount", Some("team"), "default")
            .is_some()
    );
    let deleted = namespaces.delete("team", &DeleteParams::default()).await?;
    let terminating = deleted.left().expect("the namespace");
    assert_eq!(
        terminating.status.and_then(|s| s.phase).as_deref(),
        Some("Terminating")
    );
    eventually(5, "the namespace to go", || async {
        Ok(namespaces.get_opt("team").await?.is_none().then_some(()))
    })
    .await?;
    for (api_version, kind) in [
        ("apps/v1", "Deployment"),
        ("apps/v1", "ReplicaSet"),
        ("v1", "Pod"),
        ("v1", "ConfigMap"),
    ] {
        assert!(
            kube.objects(api_version, kind)
                .iter()
                .all(|o| o["metadata"]["namespace"] != "team"),
            "{kind} left in team"
        );
    }
    let status = api_error(namespaces.delete("default", &DeleteParams::default()).await);
    assert_eq!(status.code, 403);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_the_token_are_unauthorized() -> Result {
    let kube = FakeKube::start().await?;
    let http = crate::http_client();
    let answer = http
        .get(format!("{}/api/v1/pods", kube.url()))
        .send()
        .await?;
    assert_eq!(answer.status(), 401);
    let body: Value = answer.json().await?;
    assert_eq!(
        body,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": "Unauthorized", "reason": "Unauthorized", "code": 401})
    );
    let answer = http
        .get(format!("{}/api/v1/pods", kube.url()))
        .bearer_auth("wrong")
        .send()
        .await?;
    assert_eq!(answer.status(), 401);
    let answer = http
        .get(format!("{}/api/v1/pods", kube.url()))
        .bearer_auth(kube.token())
        .send()
        .await?;
    assert_eq!(answer.status(), 200);
    let list: Value = answer.json().await?;
    assert_eq!(list["kind"], "PodList");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_and_a_kubeconfig_work_with_kube_rs() -> Result {
    let kube = FakeKube::start().await?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("config");
    kube.write_kubeconfig(&path)?;
    let config = Kubeconfig::read_from(&path)?;
    assert_eq!(config.current_context.as_deref(), Some("fake"));
    assert_eq!(
        config.clusters[0]
            .cluster
            .as_ref()
            .and_then(|c| c.server.clone()),
        Some(kube.url())
    );
    let client = Client::try_from(
        Config::from_custom_kubeconfig(config, &KubeConfigOptions::default()).await?,
    )?;
    assert_eq!(client.default_namespace(), "default");
    let version = client.apiserver_version().await?;
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "33")
    );

    let discovery = Discovery::new(client.clone()).run().await?;
    assert!(discovery.has_group("apps") && discovery.has_group("autoscaling"));
    assert!(!discovery.has_group("metrics.k8s.io"));
    let gvk = kube::core::GroupVersionKind::gvk("apps", "v1", "Deployment");
    let (resource, caps) = discovery.resolve_gvk(&gvk).expect("deployments");
    assert_eq!(resource.plural, "deployments");
    let subresources: BTreeSet<String> = caps
        .subresources
        .iter()
        .map(|(r, _)| r.plural.clone())
        .collect();
    assert_eq!(
        subresources,
        BTreeSet::from(["scale".to_owned(), "status".to_owned()])
    );
    let (_, pod_caps) = discovery
        .resolve_gvk(&kube::core::GroupVersionKind::gvk("", "v1", "Pod"))
        .expect("pods");
    assert!(
        pod_caps
            .subresources
            .iter()
            .any(|(r, _)| r.plural == "exec")
    );
    assert!(pod_caps.subresources.iter().any(|(r, _)| r.plural == "log"));

    kube.enable_metrics(true);
    let aggregated = Discovery::new(client.clone()).run_aggregated().await?;
    assert!(aggregated.has_group("metrics.k8s.io"));
    let (deployments, _) = aggregated
        .resolve_gvk(&gvk)
        .expect("aggregated deployments");
    assert_eq!(deployments.plural, "deployments");

    // The metrics API while enabled.
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(pod("m", &[("app", "web:1")]))?,
    )
    .await?;
    eventually(5, "a running pod", || async {
        Ok(is_ready(&pods.get("m").await?).then_some(()))
    })
    .await?;
    let metrics_resource = ApiResource {
        group: "metrics.k8s.io".to_owned(),
        version: "v1beta1".to_owned(),
        api_version: "metrics.k8s.io/v1beta1".to_owned(),
        kind: "PodMetrics".to_owned(),
        plural: "pods".to_owned(),
    };
    let metrics: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "default", &metrics_resource);
    let m = metrics.get("m").await?;
    assert_eq!(
        m.data["containers"][0]["usage"],
        json!({"cpu": "12m", "memory": "34Mi"})
    );
    kube.enable_metrics(false);
    assert_eq!(api_error(metrics.get("m").await).code, 404);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_resource_definition_serves_its_kind() -> Result {
    let (kube, client) = start().await?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
                "subresources": {"status": {}}}]},
    });
    let created = apply(&crds, "ctrl", &crd).await?;
    let established = created
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default();
    assert!(
        established
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
    );
    let resource = ApiResource {
        group: "example.com".to_owned(),
        version: "v1".to_owned(),
        api_version: "example.com/v1".to_owned(),
        kind: "Widget".to_owned(),
        plural: "widgets".to_owned(),
    };
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &resource);
    let body = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 3}, "status": {"ignored": true}});
    let w = apply(&widgets, "ctrl", &body).await?;
    assert_eq!(w.data["spec"]["size"], 3);
    assert!(w.data.get("status").is_none(), "status is a subresource");
    widgets
        .patch_status(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"ready": true}})),
        )
        .await?;
    let listed = widgets.list(&ListParams::default()).await?;
    assert_eq!(listed.items[0].data["status"]["ready"], true);
    assert_eq!(
        listed.items[0].types.as_ref().map(|t| t.kind.as_str()),
        Some("Widget")
    );
    let status = api_error(
        widgets
            .patch(
                "w",
                &PatchParams::default(),
                &Patch::Strategic(json!({"spec": {"size": 4}})),
            )
            .await,
    );
    assert_eq!(status.code, 415);

    kube.register_crd("example.org", "v1alpha1", "Gadget", "gadgets", false);
    let discovery = Discovery::new(client.clone()).run().await?;
    assert!(discovery.has_group("example.org"));

    crds.delete("widgets.example.com", &DeleteParams::default())
        .await?;
    eventually(5, "the kind to go", || async {
        Ok(matches!(widgets.list(&ListParams::default()).await, Err(kube::Error::Api(s)) if s.code == 404).then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphaned_dependents_stay_and_services_get_cluster_ips() -> Result {
    let (kube, client) = start().await?;
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    apply(&deployments, "ctrl", &deployment("keep", "keep:1", 1)).await?;
    wait_available(&deployments, "keep", 1).await?;
    deployments.delete("keep", &DeleteParams::orphan()).await?;
    eventually(5, "the deployment to go", || async {
        Ok(deployments.get_opt("keep").await?.is_none().then_some(()))
    })
    .await?;
    let sets = kube.objects("apps/v1", "ReplicaSet");
    assert_eq!(sets.len(), 1);
    assert!(sets[0]["metadata"].get("ownerReferences").is_none());

    // Foreground: the owner waits, with a finalizer, until its dependents are gone.
    apply(&deployments, "ctrl", &deployment("fg", "fg:1", 1)).await?;
    wait_available(&deployments, "fg", 1).await?;
    let pending = deployments
        .delete("fg", &DeleteParams::foreground())
        .await?;
    let pending = pending
        .left()
        .expect("the deployment while its dependents go");
    assert!(pending.metadata.deletion_timestamp.is_some());
    assert_eq!(pending.finalizers(), ["foregroundDeletion"]);
    eventually(5, "the foreground deletion", || async {
        Ok(deployments.get_opt("fg").await?.is_none().then_some(()))
    })
    .await?;
    let fg_left = kube
        .objects("v1", "Pod")
        .iter()
        .filter(|p| p["metadata"]["labels"]["app"] == "fg")
        .count();
    assert_eq!(fg_left, 0);
    // A plain delete of a config map answers a Success status, as the real storage does.
    let maps: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "gone"}}))?;
    maps.create(&PostParams::default(), &cm).await?;
    let status = maps
        .delete("gone", &DeleteParams::default())
        .await?
        .right()
        .expect("a status");
    assert!(status.is_success());
    assert_eq!(status.details.map(|d| d.name), Some("gone".to_owned()));

    let services: Api<k8s_openapi::api::core::v1::Service> =
        Api::default_namespaced(client.clone());
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}});
    let created = apply(&services, "ctrl", &svc).await?;
    let spec = created.spec.clone().unwrap_or_default();
    let ip = spec.cluster_ip.clone().unwrap_or_default();
    assert!(ip.starts_with("10.96.") && ip != "10.96.0.1", "{ip}");
    let port = &spec.ports.unwrap_or_default()[0];
    assert_eq!(port.protocol.as_deref(), Some("TCP"));
    // Re-applying the same configuration keeps the defaulted and allocated fields.
    let again = apply(&services, "ctrl", &svc).await?;
    assert_eq!(again.resource_version(), created.resource_version());
    let mut headless = svc.clone();
    headless["metadata"]["name"] = json!("db");
    headless["spec"]["clusterIP"] = json!("None");
    let created = apply(&services, "ctrl", &headless).await?;
    assert_eq!(
        created.spec.and_then(|s| s.cluster_ip).as_deref(),
        Some("None")
    );
    let mut bad = svc.clone();
    bad["metadata"]["name"] = json!("1web");
    assert_eq!(api_error(apply(&services, "ctrl", &bad).await).code, 422);
    Ok(())
}

/// Hundreds of deployments with a watch open: every pod becomes ready,
/// and re-applying them all writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_deployments_with_a_watch() -> Result {
    const N: usize = 500;
    let (kube, client) = start().await?;
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let mut events = watcher(pods, watcher::Config::default()).boxed();
    let watch = tokio::spawn(async move {
        let mut ready = BTreeSet::new();
        while let Some(event) = events.try_next().await? {
            if let watcher::Event::Apply(p) | watcher::Event::InitApply(p) = event
                && is_ready(&p)
            {
                ready.insert(p.labels()["app"].clone());
                if ready.len() == N {
                    break;
                }
            }
        }
        anyhow::Ok(ready.len())
    });
    let started = std::time::Instant::now();
    let apply_all = || async {
        let mut tasks = Vec::new();
        for chunk in 0..4 {
            let deployments = deployments.clone();
            tasks.push(tokio::spawn(async move {
                for i in (chunk..N).step_by(4) {
                    apply(
                        &deployments,
                        "ctrl",
                        &deployment(&format!("d{i}"), "web:1", 1),
                    )
                    .await?;
                }
                anyhow::Ok(())
            }));
        }
        for task in tasks {
            task.await??;
        }
        anyhow::Ok(())
    };
    apply_all().await?;
    let seen = tokio::time::timeout(Duration::from_secs(60), watch).await???;
    assert_eq!(seen, N);
    eventually(30, "every deployment to be available", || async {
        let available = kube
            .objects("apps/v1", "Deployment")
            .iter()
            .filter(|d| d["status"]["availableReplicas"] == 1)
            .count();
        Ok((available == N).then_some(()))
    })
    .await?;
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(60), "{elapsed:?}");
    let rv = kube.resource_version();
    apply_all().await?;
    assert_eq!(
        kube.resource_version(),
        rv,
        "an unchanged re-apply writes nothing"
    );
    Ok(())
}
