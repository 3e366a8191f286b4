//! The engines on Kubernetes: rendered manifests applied server-side with a
//! per-instance tracking ConfigMap (`ctrl-engine-<instance>`), Argo CD
//! `Application` objects, and Helm charts rendered by a `helm` program
//! (`helm template`, Helm's own engine) and applied like manifests, with a
//! revision per install or upgrade — Helm's Go engine cannot run inside
//! this process, so the capability is advertised only when a program is
//! configured, and nothing reports success that did not happen.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch};
use kube::discovery::{ApiCapabilities, Scope};
use kube::{Api, ResourceExt};

use super::KubernetesProvider;
use super::manifests::{CLUSTER, MANAGED_BY, MANAGED_BY_VALUE, REGION};
use crate::engine::{
    AppliedObject, ArgoApplication, EngineStatus, Engines, HelmRelease, ManifestApply,
};
use crate::status::State;
use crate::{Error, ProvisionResult};

/// The label naming an engine instance on every object it applied.
pub const INSTANCE: &str = "ctrl.dev/instance";
const TRACKING_PREFIX: &str = "ctrl-engine-";
const ARGO_GROUP: &str = "argoproj.io";

/// Discovered API resources by group/version/kind (one discovery request
/// per group version, then cached).
#[derive(Debug, Default)]
pub(super) struct Discovered(Mutex<HashMap<String, (ApiResource, ApiCapabilities)>>);

async fn resource(
    provider: &KubernetesProvider,
    api_version: &str,
    kind: &str,
) -> Result<(ApiResource, ApiCapabilities), Error> {
    let key = format!("{api_version}/{kind}");
    if let Some(found) = provider
        .inner
        .discovered
        .0
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&key)
    {
        return Ok(found.clone());
    }
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    };
    let gvk = GroupVersionKind::gvk(group, version, kind);
    // A group version the cluster does not serve answers 404; a served one
    // without the kind is a discovery error.
    let not_served = || {
        Error::InvalidSpec(format!(
            "the cluster does not serve {kind} in {api_version} (is its CRD installed?)"
        ))
    };
    let what = format!("discover {kind} ({api_version})");
    let found = match provider
        .bounded(
            &what,
            kube::discovery::pinned_kind(&provider.inner.client, &gvk),
        )
        .await?
    {
        Ok(found) => found,
        Err(kube::Error::Api(status)) if status.code == 404 => return Err(not_served()),
        Err(kube::Error::Discovery(_)) => return Err(not_served()),
        Err(e) => return Err(Error::backend(what, e)),
    };
    provider
        .inner
        .discovered
        .0
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, found.clone());
    Ok(found)
}

fn dynamic_api(
    provider: &KubernetesProvider,
    resource: &ApiResource,
    caps: &ApiCapabilities,
    namespace: Option<&str>,
) -> Api<DynamicObject> {
    match (caps.scope == Scope::Namespaced, namespace) {
        (true, Some(ns)) => Api::namespaced_with(provider.inner.client.clone(), ns, resource),
        _ => Api::all_with(provider.inner.client.clone(), resource),
    }
}

/// Server-side apply of one object given as JSON.
pub(super) async fn apply_dynamic(
    provider: &KubernetesProvider,
    object: &serde_json::Value,
) -> Result<AppliedObject, Error> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    if api_version.is_empty() || kind.is_empty() || name.is_empty() {
        return Err(Error::InvalidSpec(format!(
            "a manifest needs apiVersion, kind and metadata.name (got {api_version:?}/{kind:?}/{name:?})"
        )));
    }
    let (ar, caps) = resource(provider, api_version, kind).await?;
    let namespace = object["metadata"]["namespace"].as_str();
    let namespaced = caps.scope == Scope::Namespaced;
    if namespaced && namespace.is_none() {
        return Err(Error::InvalidSpec(format!(
            "{kind} {name} has no namespace"
        )));
    }
    let api = dynamic_api(provider, &ar, &caps, namespace);
    provider
        .call(
            format!(
                "apply {kind} {}{name}",
                namespace.map(|n| format!("{n}/")).unwrap_or_default()
            ),
            api.patch(name, &super::apply_params(), &Patch::Apply(object)),
        )
        .await?;
    Ok(AppliedObject {
        api_version: api_version.to_owned(),
        kind: kind.to_owned(),
        namespace: namespaced.then(|| namespace.unwrap_or_default().to_owned()),
        name: name.to_owned(),
    })
}

/// Deletes one object; a missing one (or a missing kind) is fine.
pub(super) async fn delete_dynamic(
    provider: &KubernetesProvider,
    api_version: &str,
    kind: &str,
    namespace: &str,
    name: &str,
) -> Result<(), Error> {
    let (ar, caps) = match resource(provider, api_version, kind).await {
        Ok(found) => found,
        Err(Error::InvalidSpec(_)) => return Ok(()),
        Err(e) => return Err(e),
    };
    let api = dynamic_api(provider, &ar, &caps, Some(namespace));
    provider
        .call_opt(
            format!("delete {kind} {namespace}/{name}"),
            api.delete(name, &DeleteParams::background()),
        )
        .await
        .map(drop)
}

async fn get_dynamic(
    provider: &KubernetesProvider,
    object: &AppliedObject,
) -> Result<Option<DynamicObject>, Error> {
    let (ar, caps) = resource(provider, &object.api_version, &object.kind).await?;
    let api = dynamic_api(provider, &ar, &caps, object.namespace.as_deref());
    provider
        .call(format!("read {object}"), api.get_opt(&object.name))
        .await
}

/// The tracking record of an instance.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Tracking {
    engine: String,
    revision: u64,
    objects: Vec<AppliedObject>,
    /// Helm: chart path, values digest, status per revision.
    #[serde(default)]
    notes: BTreeMap<String, String>,
}

fn tracking_name(instance: &str) -> String {
    format!("{TRACKING_PREFIX}{instance}")
}

async fn read_tracking(
    provider: &KubernetesProvider,
    namespace: &str,
    instance: &str,
) -> Result<Option<Tracking>, Error> {
    let api: Api<ConfigMap> = Api::namespaced(provider.inner.client.clone(), namespace);
    let name = tracking_name(instance);
    let found = provider
        .call(
            format!("read ConfigMap {namespace}/{name}"),
            api.get_opt(&name),
        )
        .await?;
    Ok(found.and_then(|cm| {
        cm.data
            .and_then(|d| d.get("tracking").cloned())
            .and_then(|json| serde_json::from_str(&json).ok())
    }))
}

async fn write_tracking(
    provider: &KubernetesProvider,
    namespace: &str,
    instance: &str,
    tracking: &Tracking,
) -> Result<(), Error> {
    let json = serde_json::to_string(tracking).map_err(|e| Error::backend("record objects", e))?;
    let cm = ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some(tracking_name(instance)),
            namespace: Some(namespace.to_owned()),
            labels: Some(labels(provider, instance)),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("tracking".to_owned(), json)])),
        ..ConfigMap::default()
    };
    provider.apply(Some(namespace), &cm).await.map(drop)
}

fn labels(provider: &KubernetesProvider, instance: &str) -> BTreeMap<String, String> {
    let mut labels = provider.inner.config.labels.clone();
    labels.insert(MANAGED_BY.into(), MANAGED_BY_VALUE.into());
    labels.insert(REGION.into(), provider.inner.config.region.clone());
    labels.insert(CLUSTER.into(), provider.inner.config.cluster.clone());
    labels.insert(INSTANCE.into(), instance.to_owned());
    labels
}

fn check_instance(instance: &str) -> Result<(), Error> {
    crate::spec::check_label("instance", instance, 63 - TRACKING_PREFIX.len())
}

/// Applies `objects` for an instance as engine `engine`, pruning what the
/// previous revision had; returns (revision, changed).
async fn apply_tracked(
    provider: &KubernetesProvider,
    request: &ManifestApply,
    engine: &str,
    notes: BTreeMap<String, String>,
) -> Result<ProvisionResult, Error> {
    check_instance(&request.instance)?;
    // Validate every document before applying any.
    let mut objects = Vec::new();
    for (i, doc) in request.objects.iter().enumerate() {
        let mut doc = doc.clone();
        let Some(map) = doc.as_object_mut() else {
            return Err(Error::InvalidSpec(format!("manifest {i} is not an object")));
        };
        for field in ["apiVersion", "kind"] {
            if map
                .get(field)
                .and_then(|v| v.as_str())
                .is_none_or(str::is_empty)
            {
                return Err(Error::InvalidSpec(format!("manifest {i} has no {field}")));
            }
        }
        if doc["metadata"]["name"].as_str().is_none_or(str::is_empty) {
            return Err(Error::InvalidSpec(format!(
                "manifest {i} ({}) has no metadata.name",
                doc["kind"].as_str().unwrap_or_default()
            )));
        }
        let metadata = doc["metadata"].as_object_mut().ok_or_else(|| {
            Error::InvalidSpec(format!("manifest {i}: metadata is not an object"))
        })?;
        let mut merged = metadata
            .get("labels")
            .and_then(|l| serde_json::from_value::<BTreeMap<String, String>>(l.clone()).ok())
            .unwrap_or_default();
        merged.extend(labels(provider, &request.instance));
        metadata.insert("labels".into(), serde_json::json!(merged));
        objects.push(doc);
    }
    let previous = read_tracking(provider, &request.namespace, &request.instance).await?;
    let mut applied = Vec::new();
    for mut doc in objects {
        let (_, caps) = resource(
            provider,
            doc["apiVersion"].as_str().unwrap_or_default(),
            doc["kind"].as_str().unwrap_or_default(),
        )
        .await?;
        if caps.scope == Scope::Namespaced && doc["metadata"]["namespace"].is_null() {
            doc["metadata"]["namespace"] = request.namespace.clone().into();
        }
        applied.push(apply_dynamic(provider, &doc).await?);
    }
    let previous_objects = previous
        .as_ref()
        .map(|t| t.objects.clone())
        .unwrap_or_default();
    for stale in previous_objects.iter().filter(|o| !applied.contains(o)) {
        delete_dynamic(
            provider,
            &stale.api_version,
            &stale.kind,
            stale.namespace.as_deref().unwrap_or(&request.namespace),
            &stale.name,
        )
        .await?;
    }
    let changed = previous
        .as_ref()
        .is_none_or(|p| p.objects != applied || p.notes.get("digest") != notes.get("digest"));
    let revision = previous
        .as_ref()
        .map_or(1, |p| p.revision + u64::from(changed));
    write_tracking(
        provider,
        &request.namespace,
        &request.instance,
        &Tracking {
            engine: engine.to_owned(),
            revision,
            objects: applied,
            notes,
        },
    )
    .await?;
    Ok(ProvisionResult {
        provider_ref: format!("{}/{}", request.namespace, tracking_name(&request.instance)),
        release: revision.to_string(),
        changed,
        endpoints: Vec::new(),
    })
}

/// Presence and readiness of tracked objects: a Deployment, StatefulSet
/// or ReplicaSet is ready when its ready replicas reach its replicas, a Job
/// when it succeeded; other kinds when present.
async fn tracked_status(
    provider: &KubernetesProvider,
    namespace: &str,
    instance: &str,
) -> Result<EngineStatus, Error> {
    let Some(tracking) = read_tracking(provider, namespace, instance).await? else {
        return Err(Error::NotFound(instance.to_owned()));
    };
    let mut objects = Vec::new();
    let mut problems = Vec::new();
    let mut missing = false;
    for object in &tracking.objects {
        let found = get_dynamic(provider, object).await?;
        let ready = match &found {
            None => {
                missing = true;
                problems.push(format!("{object} is missing"));
                false
            }
            Some(o) => {
                let ready = object_ready(&object.kind, &o.data);
                if !ready {
                    problems.push(format!("{object} is not ready"));
                }
                ready
            }
        };
        objects.push((object.clone(), ready));
    }
    let ready = problems.is_empty();
    Ok(EngineStatus {
        state: if ready {
            State::Running
        } else if missing {
            State::Provisioning
        } else {
            State::Starting
        },
        ready,
        message: problems.join("; "),
        revision: tracking.revision,
        objects,
    })
}

fn object_ready(kind: &str, data: &serde_json::Value) -> bool {
    let int = |v: &serde_json::Value| v.as_i64().unwrap_or(0);
    match kind {
        "Deployment" | "StatefulSet" | "ReplicaSet" => {
            let wanted = data["spec"]["replicas"].as_i64().unwrap_or(1);
            int(&data["status"]["readyReplicas"]) >= wanted
                && int(&data["status"]["observedGeneration"])
                    >= int(&data["metadata"]["generation"])
        }
        "Job" => int(&data["status"]["succeeded"]) > 0,
        _ => true,
    }
}

async fn delete_tracked(
    provider: &KubernetesProvider,
    namespace: &str,
    instance: &str,
) -> Result<(), Error> {
    let Some(tracking) = read_tracking(provider, namespace, instance).await? else {
        return Ok(());
    };
    for object in &tracking.objects {
        delete_dynamic(
            provider,
            &object.api_version,
            &object.kind,
            object.namespace.as_deref().unwrap_or(namespace),
            &object.name,
        )
        .await?;
    }
    delete_dynamic(
        provider,
        "v1",
        "ConfigMap",
        namespace,
        &tracking_name(instance),
    )
    .await
}

impl KubernetesProvider {
    /// Runs the configured `helm template` and parses its documents.
    async fn helm_render(&self, release: &HelmRelease) -> Result<Vec<serde_json::Value>, Error> {
        let Some(helm) = &self.inner.config.helm_bin else {
            return Err(crate::Provider::unsupported(
                self,
                "helm",
                crate::Capability::Helm,
            ));
        };
        check_instance(&release.instance)?;
        let dir =
            tempfile::tempdir().map_err(|e| Error::backend("create a values directory", e))?;
        let mut command = tokio::process::Command::new(helm);
        command
            .arg("template")
            .arg(&release.instance)
            .arg(&release.chart)
            .arg("--namespace")
            .arg(&release.namespace)
            .kill_on_drop(true);
        for (i, values) in release.values.iter().enumerate() {
            let path = dir.path().join(format!("values-{i}.yaml"));
            std::fs::write(&path, values).map_err(|e| Error::backend("write values", e))?;
            command.arg("-f").arg(path);
        }
        for set in &release.set {
            command.arg("--set").arg(set);
        }
        let output = tokio::time::timeout(self.timeout(), command.output())
            .await
            .map_err(|_| Error::backend("helm template", "did not finish in time"))?
            .map_err(|e| Error::backend(format!("run {}", helm.display()), e))?;
        if !output.status.success() {
            return Err(Error::InvalidSpec(format!(
                "helm template {}: {}",
                release.chart.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        let text = String::from_utf8_lossy(&output.stdout);
        let docs: Vec<Option<serde_json::Value>> = serde_saphyr::from_multiple(&text)
            .map_err(|e| Error::backend("parse the rendered chart", e))?;
        Ok(docs
            .into_iter()
            .flatten()
            .filter(|d| d.is_object())
            .collect())
    }

    async fn helm_apply(
        &self,
        release: &HelmRelease,
        install: bool,
    ) -> Result<ProvisionResult, Error> {
        let existing = read_tracking(self, &release.namespace, &release.instance).await?;
        match (&existing, install) {
            (Some(_), true) => {
                return Err(Error::InvalidSpec(format!(
                    "helm release {:?} already exists in {}: upgrade it",
                    release.instance, release.namespace
                )));
            }
            (None, false) => return Err(Error::NotFound(release.instance.clone())),
            _ => {}
        }
        let objects = self.helm_render(release).await?;
        let digest = super::manifests::digest(&serde_json::to_vec(&objects).unwrap_or_default());
        let notes = BTreeMap::from([
            ("chart".to_owned(), release.chart.display().to_string()),
            ("digest".to_owned(), digest),
        ]);
        apply_tracked(
            self,
            &ManifestApply {
                instance: release.instance.clone(),
                namespace: release.namespace.clone(),
                objects,
            },
            "helm",
            notes,
        )
        .await
    }

    fn argo_api(&self) -> Api<DynamicObject> {
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(ARGO_GROUP, "v1alpha1", "Application"),
            "applications",
        );
        Api::namespaced_with(
            self.inner.client.clone(),
            &self.inner.config.argo_namespace,
            &ar,
        )
    }
}

#[async_trait]
impl Engines for KubernetesProvider {
    async fn apply_manifests(&self, request: &ManifestApply) -> Result<ProvisionResult, Error> {
        let digest =
            super::manifests::digest(&serde_json::to_vec(&request.objects).unwrap_or_default());
        apply_tracked(
            self,
            request,
            "manifests",
            BTreeMap::from([("digest".to_owned(), digest)]),
        )
        .await
    }

    async fn manifest_status(
        &self,
        namespace: &str,
        instance: &str,
    ) -> Result<EngineStatus, Error> {
        tracked_status(self, namespace, instance).await
    }

    async fn delete_manifests(&self, namespace: &str, instance: &str) -> Result<(), Error> {
        delete_tracked(self, namespace, instance).await
    }

    async fn argo_apply(&self, app: &ArgoApplication) -> Result<ProvisionResult, Error> {
        check_instance(&app.instance)?;
        if app.repo_url.is_empty() || app.destination_namespace.is_empty() {
            return Err(Error::InvalidSpec(
                "an Argo CD application needs repo_url and destination_namespace".into(),
            ));
        }
        if app.path.is_some() == app.chart.is_some() {
            return Err(Error::InvalidSpec(
                "an Argo CD application needs exactly one of path (Git) or chart (Helm repository)"
                    .into(),
            ));
        }
        let mut source = serde_json::json!({
            "repoURL": app.repo_url,
            "targetRevision": if app.target_revision.is_empty() { "HEAD" } else { &app.target_revision },
        });
        if let Some(path) = &app.path {
            source["path"] = path.clone().into();
        }
        if let Some(chart) = &app.chart {
            source["chart"] = chart.clone().into();
        }
        if let Some(values) = &app.helm_values {
            source["helm"] = serde_json::json!({ "values": values });
        }
        let mut spec = serde_json::json!({
            "project": if app.project.is_empty() { "default" } else { &app.project },
            "source": source,
            "destination": {
                "server": app.destination_server.clone().unwrap_or_else(|| "https://kubernetes.default.svc".into()),
                "namespace": app.destination_namespace,
            },
        });
        if app.automated {
            spec["syncPolicy"] = serde_json::json!({
                "automated": {"prune": true, "selfHeal": true},
                "syncOptions": ["CreateNamespace=true"],
            });
        }
        let object = serde_json::json!({
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Application",
            "metadata": {
                "name": app.instance,
                "namespace": self.inner.config.argo_namespace,
                "labels": labels(self, &app.instance),
            },
            "spec": spec,
        });
        let before = self
            .call(
                "read the Argo CD application",
                self.argo_api().get_opt(&app.instance),
            )
            .await?;
        // Without Argo CD's CRD the cluster has no such resource: 404.
        let after = self
            .call_opt(
                format!("apply Argo CD application {}", app.instance),
                self.argo_api().patch(
                    &app.instance,
                    &super::apply_params(),
                    &Patch::Apply(&object),
                ),
            )
            .await?
            .ok_or_else(|| {
                Error::InvalidSpec(
                    "Argo CD is not installed in the cluster (no applications.argoproj.io)".into(),
                )
            })?;
        Ok(ProvisionResult {
            provider_ref: format!("{}/{}", self.inner.config.argo_namespace, app.instance),
            release: after.resource_version().unwrap_or_default(),
            changed: before.is_none_or(|b| b.resource_version() != after.resource_version()),
            endpoints: Vec::new(),
        })
    }

    async fn argo_status(&self, instance: &str) -> Result<EngineStatus, Error> {
        let Some(app) = self
            .call(
                "read the Argo CD application",
                self.argo_api().get_opt(instance),
            )
            .await?
        else {
            return Err(Error::NotFound(instance.to_owned()));
        };
        Ok(argo_state(&app.data))
    }

    async fn argo_delete(&self, instance: &str) -> Result<(), Error> {
        self.call_opt(
            format!("delete Argo CD application {instance}"),
            self.argo_api()
                .delete(instance, &DeleteParams::foreground()),
        )
        .await
        .map(drop)
    }

    async fn helm_install(&self, release: &HelmRelease) -> Result<ProvisionResult, Error> {
        self.helm_apply(release, true).await
    }

    async fn helm_upgrade(&self, release: &HelmRelease) -> Result<ProvisionResult, Error> {
        self.helm_apply(release, false).await
    }

    async fn helm_status(&self, namespace: &str, instance: &str) -> Result<EngineStatus, Error> {
        tracked_status(self, namespace, instance).await
    }

    async fn helm_uninstall(&self, namespace: &str, instance: &str) -> Result<(), Error> {
        delete_tracked(self, namespace, instance).await
    }
}

/// Argo CD's sync and health statuses as a state.
pub(super) fn argo_state(data: &serde_json::Value) -> EngineStatus {
    let sync = data["status"]["sync"]["status"]
        .as_str()
        .unwrap_or("Unknown");
    let health = data["status"]["health"]["status"]
        .as_str()
        .unwrap_or("Unknown");
    let operation = data["status"]["operationState"]["phase"]
        .as_str()
        .unwrap_or("");
    let operation_message = data["status"]["operationState"]["message"]
        .as_str()
        .unwrap_or_default();
    let health_message = data["status"]["health"]["message"]
        .as_str()
        .unwrap_or_default();
    let (state, ready) = match (sync, health, operation) {
        (_, _, "Failed" | "Error") => (State::Failed, false),
        (_, "Degraded", _) => (State::Failed, false),
        ("Synced", "Healthy", _) => (State::Running, true),
        (_, "Suspended", _) => (State::Stopped, false),
        (_, "Missing", _) => (State::Provisioning, false),
        _ => (State::Starting, false),
    };
    let message = if ready {
        String::new()
    } else {
        let detail = [operation_message, health_message]
            .into_iter()
            .find(|m| !m.is_empty())
            .map(|m| format!(": {m}"))
            .unwrap_or_default();
        format!("sync {sync}, health {health}{detail}")
    };
    let revision = data["status"]["history"]
        .as_array()
        .map_or(0, |h| u64::try_from(h.len()).unwrap_or(0));
    EngineStatus {
        state,
        ready,
        message,
        revision,
        objects: data["status"]["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                let group = r["group"].as_str().unwrap_or_default();
                let version = r["version"].as_str().unwrap_or("v1");
                (
                    AppliedObject {
                        api_version: if group.is_empty() {
                            version.to_owned()
                        } else {
                            format!("{group}/{version}")
                        },
                        kind: r["kind"].as_str().unwrap_or_default().to_owned(),
                        namespace: r["namespace"].as_str().map(str::to_owned),
                        name: r["name"].as_str().unwrap_or_default().to_owned(),
                    },
                    r["status"].as_str() == Some("Synced")
                        && r["health"]["status"]
                            .as_str()
                            .is_none_or(|h| h == "Healthy"),
                )
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argo_statuses_map_to_states() {
        let app = |sync: &str, health: &str, phase: &str| {
            serde_json::json!({"status": {
                "sync": {"status": sync},
                "health": {"status": health, "message": "pod crashed"},
                "operationState": {"phase": phase, "message": ""},
            }})
        };
        let s = argo_state(&app("Synced", "Healthy", "Succeeded"));
        assert!(s.ready);
        assert_eq!(s.state, State::Running);
        let s = argo_state(&app("Synced", "Degraded", "Succeeded"));
        assert_eq!(s.state, State::Failed);
        assert!(s.message.contains("pod crashed"), "{}", s.message);
        assert_eq!(
            argo_state(&app("OutOfSync", "Progressing", "Running")).state,
            State::Starting
        );
        assert_eq!(
            argo_state(&app("OutOfSync", "Missing", "")).state,
            State::Provisioning
        );
        assert_eq!(
            argo_state(&app("Synced", "Suspended", "")).state,
            State::Stopped
        );
        assert_eq!(
            argo_state(&app("Synced", "Healthy", "Failed")).state,
            State::Failed
        );
    }

    #[test]
    fn readiness_of_tracked_kinds() {
        let d = serde_json::json!({"metadata": {"generation": 2}, "spec": {"replicas": 2},
            "status": {"readyReplicas": 2, "observedGeneration": 2}});
        assert!(object_ready("Deployment", &d));
        let stale = serde_json::json!({"metadata": {"generation": 3}, "spec": {"replicas": 2},
            "status": {"readyReplicas": 2, "observedGeneration": 2}});
        assert!(!object_ready("Deployment", &stale));
        assert!(!object_ready("Job", &serde_json::json!({"status": {}})));
        assert!(object_ready("ConfigMap", &serde_json::json!({})));
    }

    #[test]
    fn instance_names_are_checked() {
        assert!(check_instance("web-1").is_ok());
        assert!(check_instance("Web").is_err());
        assert!(check_instance(&"a".repeat(60)).is_err());
    }
}
