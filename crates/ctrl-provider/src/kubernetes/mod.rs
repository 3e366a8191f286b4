//! The Kubernetes backend: kube-rs on rustls, server-side apply with a
//! field manager, list/watch caches, and the engines of seed 004 (rendered
//! manifests, Argo CD Applications, Helm charts).
//!
//! A workload is a **Deployment** (stateless) or a **StatefulSet**
//! (stateful) with a Service, Secrets, ConfigMaps, an autoscaler, a
//! disruption budget and a network policy, built by the pure functions of
//! [`manifests`]. Deployments rather than bare ReplicaSets (the original
//! krane's choice): the Deployment controller already does the surge
//! rollout, revision history and pod-template restarts we need, so the
//! agent keeps no rollout state of its own and a restarted agent has
//! nothing to recompute — it re-applies, and an unchanged spec is a no-op
//! (the controller's `ctrl.dev/apply-hash` annotation says so, read from
//! the watch cache: no request at all).
//!
//! One namespace per workspace (the spec's `ctrl.dev/namespace` label).
//! Every object carries the region and cluster labels; the caches, `list`
//! and therefore krane's reconcile see only objects of this region and
//! cluster.
//!
//! Status comes from pods (see [`observe`](self)); provisioning waits for
//! the new revision's pods to be ready, waking on cache changes, and fails
//! at once on an image that cannot be pulled, a crash or an OOM kill,
//! naming the container's last output (the termination message, which the
//! pods take from their logs on error).

mod cache;
mod engines;
pub mod manifests;
mod observe;
mod ops;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures::stream::BoxStream;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy as K8sNetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client};
use serde::{Deserialize, Serialize};

pub use engines::INSTANCE;
pub use manifests::{NetworkPolicyMode, Settings};

use self::cache::{Cached, Caches};
use self::manifests::{
    APPLY_HASH, Controller, FIELD_MANAGER, Manifests, PolicyObject, ReleaseRecord, SPEC_HASH,
    SecretValues, WORKLOAD,
};
use crate::provider::{
    DeployRequest, DeployResult, ExecRequest, ExecResult, LogLine, LogOptions, ProviderInfo,
    ProvisionResult, ScaleRequest,
};
use crate::spec::{WorkloadKind, WorkloadSpec};
use crate::status::{ResourceUsage, WorkloadStatus};
use crate::{Capabilities, Capability, Error, Provider, SecretResolver, WorkloadSummary};

/// Side objects recorded on the controller, so what a newer spec no longer
/// has (an autoscaler, a secret) is deleted.
const OBJECTS: &str = "ctrl.dev/objects";
/// Pod-template annotation that `restart` bumps (as `kubectl rollout restart` does).
const RESTARTED_AT: &str = "ctrl.dev/restarted-at";
/// Replicas to come back to after `stop`.
const STOPPED_REPLICAS: &str = "ctrl.dev/stopped-replicas";
/// The controller's `metadata.generation` right after the last apply: a
/// different generation means someone (or an autoscaler) changed its spec
/// since, so the next provision applies again instead of trusting
/// [`APPLY_HASH`].
const APPLIED_GENERATION: &str = "ctrl.dev/applied-generation";

/// Settings of a [`KubernetesProvider`] (seed 004's options).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubernetesConfig {
    /// Registry name (default `kubernetes`).
    pub name: String,
    /// A kubeconfig file; none = in-cluster config, then `KUBECONFIG` and
    /// `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context; none = its current context.
    pub context: Option<String>,
    /// Only the in-cluster service account (never a developer's kubeconfig).
    pub in_cluster: bool,
    /// Namespace for workloads that name none.
    pub namespace: String,
    /// Region label and the region reported.
    pub region: String,
    /// The cluster (cell) label.
    pub cluster: String,
    /// Where the region is, as reported.
    pub country: String,
    /// Where the region is, as reported.
    pub city: String,
    /// Labels added to every object.
    pub labels: std::collections::BTreeMap<String, String>,
    /// Secrets with registry credentials, added to every pod.
    pub image_pull_secrets: Vec<String>,
    /// Namespace of Argo CD's Application objects.
    pub argo_namespace: String,
    /// How network policies are enforced.
    pub network_policy: NetworkPolicyMode,
    /// Extended resource name of GPUs (a device plugin's); none = no GPUs.
    pub gpu_resource: Option<String>,
    /// Storage class of persistent volumes; none = the cluster default.
    pub storage_class: Option<String>,
    /// Size of a persistent volume whose service sets no disk size.
    pub volume_size_mib: u32,
    /// A `helm` program (Helm 3/4 CLI syntax) for the Helm engine; none =
    /// the engine is unavailable (and not advertised).
    pub helm_bin: Option<PathBuf>,
    /// Allow `exec` into instances.
    pub allow_exec: bool,
    /// Limit of every single API call (watches excepted).
    pub api_timeout_seconds: u64,
    /// How long a workload whose health check sets no budget may take to be ready.
    pub start_timeout_seconds: u64,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        Self {
            name: "kubernetes".into(),
            kubeconfig: None,
            context: None,
            in_cluster: false,
            namespace: "default".into(),
            region: "local".into(),
            cluster: "local".into(),
            country: "Local".into(),
            city: "Localhost".into(),
            labels: Default::default(),
            image_pull_secrets: Vec::new(),
            argo_namespace: "argocd".into(),
            network_policy: NetworkPolicyMode::Standard,
            gpu_resource: None,
            storage_class: None,
            volume_size_mib: 1024,
            helm_bin: None,
            allow_exec: true,
            api_timeout_seconds: 30,
            start_timeout_seconds: 300,
        }
    }
}

impl KubernetesConfig {
    fn settings(&self) -> Settings {
        Settings {
            region: self.region.clone(),
            cluster: self.cluster.clone(),
            default_namespace: self.namespace.clone(),
            extra_labels: self.labels.clone(),
            image_pull_secrets: self.image_pull_secrets.clone(),
            network_policy: self.network_policy,
            gpu_resource: self.gpu_resource.clone(),
            storage_class: self.storage_class.clone(),
            volume_size_mib: self.volume_size_mib,
        }
    }

    /// The kube client configuration these settings select.
    pub async fn client_config(&self) -> Result<kube::Config, Error> {
        let what = "load the Kubernetes client configuration";
        let mut config = if self.in_cluster {
            kube::Config::incluster().map_err(|e| Error::backend(what, e))?
        } else if let Some(path) = &self.kubeconfig {
            let file = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| Error::backend(what, format!("{}: {e}", path.display())))?;
            let options = kube::config::KubeConfigOptions {
                context: self.context.clone(),
                ..Default::default()
            };
            kube::Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(|e| Error::backend(what, format!("{}: {e}", path.display())))?
        } else {
            kube::Config::infer()
                .await
                .map_err(|e| Error::backend(what, e))?
        };
        config.connect_timeout = Some(Duration::from_secs(self.api_timeout_seconds.min(30)));
        Ok(config)
    }
}

/// A [`Provider`] over a Kubernetes cluster. Cloning is cheap.
#[derive(Debug, Clone)]
pub struct KubernetesProvider {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    config: KubernetesConfig,
    settings: Settings,
    secrets: Arc<dyn SecretResolver>,
    caches: Caches,
    discovered: engines::Discovered,
    version: String,
    /// Namespaces applied by this process (applied once, not per deploy).
    namespaces: Mutex<std::collections::HashSet<String>>,
    /// One lock per workload: operations on a workload never overlap.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesProvider")
            .field("config", &self.config)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl KubernetesProvider {
    /// Connects with `config`, checks the API answers, and fills the caches.
    pub async fn connect(
        config: KubernetesConfig,
        secrets: Arc<dyn SecretResolver>,
    ) -> Result<Self, Error> {
        let client_config = config.client_config().await?;
        let client =
            Client::try_from(client_config).map_err(|e| Error::backend("build the client", e))?;
        Self::with_client(client, config, secrets).await
    }

    /// A provider on an existing client.
    pub async fn with_client(
        client: Client,
        config: KubernetesConfig,
        secrets: Arc<dyn SecretResolver>,
    ) -> Result<Self, Error> {
        let timeout = Duration::from_secs(config.api_timeout_seconds);
        let version = tokio::time::timeout(timeout, client.apiserver_version())
            .await
            .map_err(|_| Error::backend("ask the API server for its version", "timed out"))?
            .map_err(|e| Error::backend("ask the API server for its version", e))?;
        let caches = Caches::start(&client, &config.region, &config.cluster, timeout).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                settings: config.settings(),
                client,
                config,
                secrets,
                caches,
                discovered: engines::Discovered::default(),
                version: version.git_version,
                namespaces: Mutex::default(),
                locks: Mutex::default(),
            }),
        })
    }

    /// The API client.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.inner.config.api_timeout_seconds)
    }

    /// Runs one API call within the configured limit.
    async fn call<T>(
        &self,
        what: impl Into<String>,
        call: impl std::future::Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, Error> {
        let what = what.into();
        match self.bounded(&what, call).await? {
            Ok(v) => Ok(v),
            Err(e) => Err(Error::backend(what, e)),
        }
    }

    /// [`call`](Self::call) where the API's 404 means "absent": `Ok(None)`.
    async fn call_opt<T>(
        &self,
        what: impl Into<String>,
        call: impl std::future::Future<Output = Result<T, kube::Error>>,
    ) -> Result<Option<T>, Error> {
        let what = what.into();
        match self.bounded(&what, call).await? {
            Ok(v) => Ok(Some(v)),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
            Err(e) => Err(Error::backend(what, e)),
        }
    }

    async fn bounded<T>(
        &self,
        what: &str,
        call: impl std::future::Future<Output = Result<T, kube::Error>>,
    ) -> Result<Result<T, kube::Error>, Error> {
        tokio::time::timeout(self.timeout(), call)
            .await
            .map_err(|_| {
                Error::backend(
                    what,
                    format!(
                        "the Kubernetes API did not answer within {:?}",
                        self.timeout()
                    ),
                )
            })
    }

    fn lock(&self, workload: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.inner.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(workload.to_owned()).or_default().clone()
    }

    /// Server-side apply of one typed object.
    async fn apply<K>(&self, namespace: Option<&str>, object: &K) -> Result<K, Error>
    where
        K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + k8s_openapi::Resource
            + Clone
            + std::fmt::Debug
            + Serialize
            + serde::de::DeserializeOwned,
    {
        let name = object.meta().name.clone().unwrap_or_default();
        let ns = namespace.unwrap_or_default();
        let api: Api<K> = Api::namespaced(self.inner.client.clone(), ns);
        let body = manifests::to_json(object)?;
        self.call(
            format!("apply {} {ns}/{name}", <K as k8s_openapi::Resource>::KIND),
            api.patch(&name, &apply_params(), &Patch::Apply(&body)),
        )
        .await
    }

    async fn ensure_namespace(&self, manifests: &Manifests) -> Result<(), Error> {
        let name = manifests.namespace_name().to_owned();
        if self
            .inner
            .namespaces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&name)
        {
            return Ok(());
        }
        let api: Api<Namespace> = Api::all(self.inner.client.clone());
        let body = manifests::to_json(&manifests.namespace)?;
        self.call(
            format!("apply Namespace {name}"),
            api.patch(&name, &apply_params(), &Patch::Apply(&body)),
        )
        .await?;
        self.inner
            .namespaces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name);
        Ok(())
    }

    async fn resolve_secrets(&self, spec: &WorkloadSpec) -> Result<SecretValues, Error> {
        let mut values = SecretValues::new();
        for service in &spec.services {
            for secret in &service.secrets {
                let value = crate::provider::resolve_secret(
                    self.inner.secrets.as_ref(),
                    &service.name,
                    secret,
                )
                .await?;
                values.insert((service.name.clone(), secret.env.clone()), value);
            }
        }
        Ok(values)
    }

    fn history(&self, namespace: &str, workload: &str) -> Vec<ReleaseRecord> {
        self.inner
            .caches
            .controller(namespace, workload)
            .map(|c| manifests::read_history(c.meta().annotations.as_ref()))
            .unwrap_or_default()
    }

    /// The spec last applied to `workload`, with its namespace.
    fn current(&self, workload: &str) -> Result<(String, Cached, Option<WorkloadSpec>), Error> {
        let namespace = self
            .inner
            .caches
            .namespace_of(workload)
            .ok_or_else(|| Error::NotFound(workload.to_owned()))?;
        let cached = self
            .inner
            .caches
            .controller(&namespace, workload)
            .ok_or_else(|| Error::NotFound(workload.to_owned()))?;
        let spec = manifests::read_history(cached.meta().annotations.as_ref())
            .into_iter()
            .next()
            .map(|r| r.spec);
        Ok((namespace, cached, spec))
    }

    async fn provision_locked(&self, spec: &WorkloadSpec) -> Result<ProvisionResult, Error> {
        spec.plan()?;
        let settings = &self.inner.settings;
        let namespace = manifests::namespace_of(spec, settings);
        let spec_hash = manifests::spec_hash(spec);
        let cached = self.inner.caches.controller(&namespace, &spec.id);
        // Unchanged: the same inputs were applied, nobody changed the
        // controller since, and its Service is there. Decided from the
        // caches alone — no request, no secret opened, nothing built.
        let apply_hash = manifests::apply_hash(spec, settings);
        let unchanged = cached.as_ref().is_some_and(|c| {
            c.annotation(APPLY_HASH) == Some(apply_hash.as_str())
                && c.annotation(APPLIED_GENERATION)
                    == c.meta().generation.map(|g| g.to_string()).as_deref()
        }) && (!manifests::has_service(spec)
            || self
                .inner
                .caches
                .services
                .get(&kube::runtime::reflector::ObjectRef::new(&spec.id).within(&namespace))
                .is_some());
        if !unchanged {
            let history = self.history(&namespace, &spec.id);
            let secrets = self.resolve_secrets(spec).await?;
            let manifests = manifests::build(spec, settings, &history, &secrets)?;
            self.apply_all(&manifests, cached.as_ref()).await?;
        }
        let status = self.wait_rollout(spec, &namespace, &spec_hash).await?;
        Ok(ProvisionResult {
            provider_ref: format!("{namespace}/{}", spec.id),
            release: spec.release.clone(),
            changed: !unchanged,
            endpoints: status.endpoints,
        })
    }

    /// Applies every object in order, then deletes the side objects an
    /// older spec had and this one has not.
    async fn apply_all(&self, m: &Manifests, previous: Option<&Cached>) -> Result<(), Error> {
        let ns = m.namespace_name().to_owned();
        self.ensure_namespace(m).await?;
        let mut objects = Vec::new();
        for s in &m.secrets {
            self.apply(Some(&ns), s).await?;
            objects.push(format!("Secret/{}", name_of(&s.metadata)));
        }
        for c in &m.config_maps {
            self.apply(Some(&ns), c).await?;
            objects.push(format!("ConfigMap/{}", name_of(&c.metadata)));
        }
        if let Some(s) = &m.service {
            self.apply(Some(&ns), s).await?;
            objects.push(format!("Service/{}", name_of(&s.metadata)));
        }
        if let Some(h) = &m.autoscaler {
            objects.push(format!("HorizontalPodAutoscaler/{}", name_of(&h.metadata)));
        }
        if let Some(p) = &m.disruption_budget {
            objects.push(format!("PodDisruptionBudget/{}", name_of(&p.metadata)));
        }
        match &m.network_policy {
            Some(PolicyObject::Standard(p)) => {
                objects.push(format!("NetworkPolicy/{}", name_of(&p.metadata)));
            }
            Some(PolicyObject::Cilium(p)) => {
                objects.push(format!(
                    "CiliumNetworkPolicy/{}",
                    p["metadata"]["name"].as_str().unwrap_or_default()
                ));
            }
            None => {}
        }
        let recorded = objects.join(",");
        let generation = match &m.controller {
            Controller::Deployment(d) => {
                let mut d = d.as_ref().clone();
                d.metadata
                    .annotations
                    .get_or_insert_default()
                    .insert(OBJECTS.into(), recorded);
                self.apply(Some(&ns), &d).await?.metadata.generation
            }
            Controller::StatefulSet(s) => {
                let mut s = s.as_ref().clone();
                s.metadata
                    .annotations
                    .get_or_insert_default()
                    .insert(OBJECTS.into(), recorded);
                self.apply(Some(&ns), &s).await?.metadata.generation
            }
        };
        if let Some(h) = &m.autoscaler {
            self.apply(Some(&ns), h).await?;
        }
        if let Some(p) = &m.disruption_budget {
            self.apply(Some(&ns), p).await?;
        }
        match &m.network_policy {
            Some(PolicyObject::Standard(p)) => {
                self.apply(Some(&ns), p.as_ref()).await?;
            }
            Some(PolicyObject::Cilium(p)) => {
                engines::apply_dynamic(self, p).await?;
            }
            None => {}
        }
        // Recorded last: a crash before this leaves the next provision
        // applying again. (Metadata changes do not bump the generation.)
        let workload = m.controller_name();
        self.patch_controller(
            &ns,
            matches!(m.controller, Controller::StatefulSet(_)),
            workload,
            false,
            &serde_json::json!({"metadata": {"annotations": {
                APPLIED_GENERATION: generation.unwrap_or_default().to_string()
            }}}),
            format!("record the applied generation of {ns}/{workload}"),
        )
        .await?;
        if let Some(previous) = previous {
            let now: Vec<String> = objects;
            let stale: Vec<String> = previous
                .annotation(OBJECTS)
                .unwrap_or_default()
                .split(',')
                .filter(|o| !o.is_empty() && !now.iter().any(|n| n == o))
                .map(str::to_owned)
                .collect();
            for object in stale {
                self.delete_object(&ns, &object).await?;
            }
        }
        Ok(())
    }

    /// Deletes `Kind/name` in `namespace`; a missing object is fine.
    async fn delete_object(&self, namespace: &str, object: &str) -> Result<(), Error> {
        let Some((kind, name)) = object.split_once('/') else {
            return Ok(());
        };
        match kind {
            "Secret" => self.delete_typed::<Secret>(namespace, name).await,
            "ConfigMap" => self.delete_typed::<ConfigMap>(namespace, name).await,
            "Service" => self.delete_typed::<Service>(namespace, name).await,
            "HorizontalPodAutoscaler" => {
                self.delete_typed::<HorizontalPodAutoscaler>(namespace, name)
                    .await
            }
            "PodDisruptionBudget" => {
                self.delete_typed::<PodDisruptionBudget>(namespace, name)
                    .await
            }
            "NetworkPolicy" => self.delete_typed::<K8sNetworkPolicy>(namespace, name).await,
            "CiliumNetworkPolicy" => {
                engines::delete_dynamic(self, "cilium.io/v2", kind, namespace, name).await
            }
            "Deployment" => self.delete_typed::<Deployment>(namespace, name).await,
            "StatefulSet" => self.delete_typed::<StatefulSet>(namespace, name).await,
            "PersistentVolumeClaim" => {
                self.delete_typed::<PersistentVolumeClaim>(namespace, name)
                    .await
            }
            _ => Ok(()),
        }
    }

    /// Deletes one typed object (dependents in the background); a missing
    /// one is fine.
    async fn delete_typed<K>(&self, namespace: &str, name: &str) -> Result<(), Error>
    where
        K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + k8s_openapi::Resource
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned,
    {
        let api: Api<K> = Api::namespaced(self.inner.client.clone(), namespace);
        self.call_opt(
            format!(
                "delete {} {namespace}/{name}",
                <K as k8s_openapi::Resource>::KIND
            ),
            api.delete(name, &DeleteParams::background()),
        )
        .await
        .map(drop)
    }

    /// Waits until the current revision's pods are ready, waking on cache
    /// changes; fails at once when a current pod cannot become ready.
    async fn wait_rollout(
        &self,
        spec: &WorkloadSpec,
        namespace: &str,
        spec_hash: &str,
    ) -> Result<WorkloadStatus, Error> {
        let budget = spec
            .services
            .iter()
            .filter_map(|s| s.health_check.as_ref().map(|h| h.rollout_budget()))
            .max()
            .unwrap_or(Duration::from_secs(self.inner.config.start_timeout_seconds));
        let deadline = tokio::time::Instant::now() + budget;
        let mut changes = self.inner.caches.subscribe();
        loop {
            // Right after the first apply the cache may not show the
            // controller yet: that is "not ready", not "not found".
            let status = match self.observe(&spec.id, Some(spec), spec_hash) {
                Ok(status) => status,
                Err(Error::NotFound(_)) => WorkloadStatus {
                    workload: spec.id.clone(),
                    release: spec.release.clone(),
                    state: crate::State::Provisioning,
                    ready: false,
                    replicas: spec.replicas,
                    ready_replicas: 0,
                    restarts: 0,
                    services: Vec::new(),
                    endpoints: Vec::new(),
                    message: String::new(),
                    metadata: Default::default(),
                },
                Err(e) => return Err(e),
            };
            if status.ready {
                return Ok(status);
            }
            for pod in self.inner.caches.pods_of(&spec.id) {
                if pod.metadata.namespace.as_deref() != Some(namespace)
                    || cache::label(pod.as_ref(), SPEC_HASH) != Some(spec_hash)
                {
                    continue;
                }
                let replica = status
                    .services
                    .iter()
                    .find(|s| {
                        s.provider_ref
                            .starts_with(pod.metadata.name.as_deref().unwrap_or("-"))
                    })
                    .map_or(0, |s| s.replica);
                if let Some(problem) = observe::fatal_problem(&pod, replica) {
                    return Err(Error::RolloutFailed {
                        workload: spec.id.clone(),
                        reason: problem,
                    });
                }
            }
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        return Err(Error::backend("watch pods", "the watch stopped"));
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    let why = if status.message.is_empty() {
                        format!("{} of {} replicas ready", status.ready_replicas, status.replicas)
                    } else {
                        status.message.clone()
                    };
                    return Err(Error::RolloutFailed {
                        workload: spec.id.clone(),
                        reason: format!("not ready after {}s: {why}", budget.as_secs()),
                    });
                }
            }
        }
    }

    /// The status of `workload` from the caches.
    fn observe(
        &self,
        workload: &str,
        spec: Option<&WorkloadSpec>,
        spec_hash: &str,
    ) -> Result<WorkloadStatus, Error> {
        let namespace = match spec {
            Some(s) => manifests::namespace_of(s, &self.inner.settings),
            None => self
                .inner
                .caches
                .namespace_of(workload)
                .ok_or_else(|| Error::NotFound(workload.to_owned()))?,
        };
        let Some(cached) = self.inner.caches.controller(&namespace, workload) else {
            return Err(Error::NotFound(workload.to_owned()));
        };
        // The recorded spec is parsed only when the caller has none.
        let head = match spec {
            Some(_) => None,
            None => manifests::read_history(cached.meta().annotations.as_ref())
                .into_iter()
                .next()
                .map(|r| r.spec),
        };
        let spec = spec.or(head.as_ref());
        let kind = match cached {
            Cached::Deployment(_) => WorkloadKind::Stateless,
            Cached::StatefulSet(_) => WorkloadKind::Stateful,
        };
        let pods = self.inner.caches.pods_of(workload);
        let pods: Vec<_> = pods
            .iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(namespace.as_str()))
            .map(AsRef::as_ref)
            .collect();
        let release = spec.map(|s| s.release.clone()).unwrap_or_default();
        let replicas = if spec_hash.is_empty() || cached.annotation(SPEC_HASH) == Some(spec_hash) {
            cached.replicas()
        } else {
            spec.map_or(1, |s| s.replicas)
        };
        let mut status = observe::Observed {
            workload,
            namespace: &namespace,
            spec,
            spec_hash: if spec_hash.is_empty() {
                cached.annotation(SPEC_HASH).unwrap_or_default()
            } else {
                spec_hash
            },
            release: &release,
            replicas,
            kind,
            pods,
        }
        .status();
        status
            .metadata
            .insert("controller".into(), cached.kind().to_owned());
        Ok(status)
    }

    async fn scale_to(&self, workload: &str, replicas: u32) -> Result<(), Error> {
        let (namespace, cached, _) = self.current(workload)?;
        let what = format!(
            "scale {} {namespace}/{workload} to {replicas}",
            cached.kind()
        );
        let body = serde_json::json!({"spec": {"replicas": replicas}});
        self.patch_controller(
            &namespace,
            cached.is_stateful(),
            workload,
            true,
            &body,
            what,
        )
        .await
    }

    /// A merge patch of a cached workload's controller.
    async fn annotate(
        &self,
        workload: &str,
        body: serde_json::Value,
        what: &str,
    ) -> Result<(), Error> {
        let (namespace, cached, _) = self.current(workload)?;
        let what = format!("{what} {} {namespace}/{workload}", cached.kind());
        self.patch_controller(
            &namespace,
            cached.is_stateful(),
            workload,
            false,
            &body,
            what,
        )
        .await
    }

    /// A merge patch (as [`FIELD_MANAGER`]) of a Deployment or StatefulSet,
    /// or of its scale subresource.
    async fn patch_controller(
        &self,
        namespace: &str,
        stateful: bool,
        name: &str,
        scale: bool,
        body: &serde_json::Value,
        what: String,
    ) -> Result<(), Error> {
        if stateful {
            self.merge_patch::<StatefulSet>(namespace, name, scale, body, what)
                .await
        } else {
            self.merge_patch::<Deployment>(namespace, name, scale, body, what)
                .await
        }
    }

    async fn merge_patch<K>(
        &self,
        namespace: &str,
        name: &str,
        scale: bool,
        body: &serde_json::Value,
        what: String,
    ) -> Result<(), Error>
    where
        K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned,
    {
        let api: Api<K> = Api::namespaced(self.inner.client.clone(), namespace);
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        let patch = Patch::Merge(body);
        if scale {
            self.call(what, api.patch_scale(name, &params, &patch))
                .await
                .map(drop)
        } else {
            self.call(what, api.patch(name, &params, &patch))
                .await
                .map(drop)
        }
    }

    /// Waits until the cache shows `check` true for the workload (or the
    /// budget runs out), so an operation returns with its effect visible.
    async fn settle(&self, workload: &str, check: impl Fn(&WorkloadStatus) -> bool) {
        let mut changes = self.inner.caches.subscribe();
        let deadline = tokio::time::Instant::now() + self.timeout();
        loop {
            if self.observe(workload, None, "").is_ok_and(|s| check(&s)) {
                return;
            }
            tokio::select! {
                r = changes.changed() => if r.is_err() { return },
                () = tokio::time::sleep_until(deadline) => return,
            }
        }
    }
}

fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

fn name_of(meta: &kube::api::ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or_default()
}

#[async_trait]
impl Provider for KubernetesProvider {
    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            name: self.inner.config.name.clone(),
            version: self.inner.version.clone(),
            region: self.inner.config.region.clone(),
            location: Some((
                self.inner.config.country.clone(),
                self.inner.config.city.clone(),
            )),
        }
    }

    fn capabilities(&self) -> Capabilities {
        let mut c = Capabilities::from([
            Capability::Provision,
            Capability::Deploy,
            Capability::Scale,
            Capability::Logs,
            Capability::Volumes,
            Capability::DiskLimits,
            Capability::Rolling,
            Capability::Autoscale,
            Capability::Manifests,
            Capability::ArgoCd,
        ]);
        if self.inner.config.allow_exec {
            c.insert(Capability::Exec);
        }
        if self.inner.config.gpu_resource.is_some() {
            c.insert(Capability::Gpu);
        }
        if self.inner.config.helm_bin.is_some() {
            c.insert(Capability::Helm);
        }
        c
    }

    async fn provision(&self, spec: &WorkloadSpec) -> Result<ProvisionResult, Error> {
        let lock = self.lock(&spec.id);
        let _guard = lock.lock().await;
        self.provision_locked(spec).await
    }

    async fn list(&self) -> Result<Vec<WorkloadSummary>, Error> {
        let mut out: Vec<WorkloadSummary> = self
            .inner
            .caches
            .controllers()
            .into_iter()
            .map(|c| {
                let head = manifests::read_history(c.meta().annotations.as_ref())
                    .into_iter()
                    .next();
                WorkloadSummary {
                    id: c.meta().name.clone().unwrap_or_default(),
                    release: head.as_ref().map(|r| r.release.clone()).unwrap_or_default(),
                    labels: head
                        .map(|r| r.spec.labels)
                        .unwrap_or_else(|| c.meta().labels.clone().unwrap_or_default()),
                }
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    async fn deprovision(&self, workload: &str) -> Result<(), Error> {
        let lock = self.lock(workload);
        let _guard = lock.lock().await;
        let Some(namespace) = self.inner.caches.namespace_of(workload) else {
            return Ok(());
        };
        let cached = self.inner.caches.controller(&namespace, workload);
        let mut objects: Vec<String> = cached
            .as_ref()
            .and_then(|c| c.annotation(OBJECTS))
            .unwrap_or_default()
            .split(',')
            .filter(|o| !o.is_empty())
            .map(str::to_owned)
            .collect();
        objects.push(format!("Service/{workload}"));
        if let Some(c) = &cached {
            objects.push(format!("{}/{workload}", c.kind()));
        }
        objects.dedup();
        for object in &objects {
            self.delete_object(&namespace, object).await?;
        }
        if matches!(cached, Some(Cached::StatefulSet(_))) {
            let api: Api<PersistentVolumeClaim> =
                Api::namespaced(self.inner.client.clone(), &namespace);
            let claims = self
                .call(
                    "list persistent volume claims",
                    api.list(&ListParams::default().labels(&format!("{WORKLOAD}={workload}"))),
                )
                .await?;
            for claim in claims {
                let name = claim.metadata.name.unwrap_or_default();
                self.delete_typed::<PersistentVolumeClaim>(&namespace, &name)
                    .await?;
            }
        }
        // Return once the cache no longer shows the workload, so a list
        // right after does not resurrect it as an orphan.
        let mut changes = self.inner.caches.subscribe();
        let deadline = tokio::time::Instant::now() + self.timeout();
        while self.inner.caches.controller(&namespace, workload).is_some() {
            tokio::select! {
                r = changes.changed() => if r.is_err() { break },
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        Ok(())
    }

    async fn start(&self, workload: &str) -> Result<(), Error> {
        let lock = self.lock(workload);
        let _guard = lock.lock().await;
        let (_, cached, spec) = self.current(workload)?;
        let replicas = cached
            .annotation(STOPPED_REPLICAS)
            .and_then(|r| r.parse().ok())
            .or(spec.map(|s| s.replicas))
            .unwrap_or(1);
        self.scale_to(workload, replicas).await?;
        self.settle(workload, |s| s.ready).await;
        Ok(())
    }

    async fn stop(&self, workload: &str) -> Result<(), Error> {
        let lock = self.lock(workload);
        let _guard = lock.lock().await;
        let (_, cached, _) = self.current(workload)?;
        let replicas = cached.replicas();
        if replicas > 0 {
            self.annotate(
                workload,
                serde_json::json!({"metadata": {"annotations": {STOPPED_REPLICAS: replicas.to_string()}}}),
                "record the replicas of",
            )
            .await?;
        }
        self.scale_to(workload, 0).await?;
        self.settle(workload, |s| s.services.iter().all(|x| x.draining))
            .await;
        Ok(())
    }

    async fn restart(&self, workload: &str) -> Result<(), Error> {
        let lock = self.lock(workload);
        let _guard = lock.lock().await;
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        self.annotate(
            workload,
            serde_json::json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: now}}}}}),
            "restart",
        )
        .await
    }

    async fn status(&self, workload: &str) -> Result<WorkloadStatus, Error> {
        self.observe(workload, None, "")
    }

    async fn deploy(&self, workload: &str, request: &DeployRequest) -> Result<DeployResult, Error> {
        let lock = self.lock(workload);
        let _guard = lock.lock().await;
        let (_, _, spec) = self.current(workload)?;
        let mut spec = spec.ok_or_else(|| Error::NotFound(workload.to_owned()))?;
        for update in &request.services {
            let Some(service) = spec.services.iter_mut().find(|s| s.name == update.name) else {
                return Err(Error::InvalidSpec(format!(
                    "workload {workload:?} has no service {:?}",
                    update.name
                )));
            };
            if let Some(image) = &update.image {
                service.image.clone_from(image);
            }
            if let Some(env) = &update.env {
                service.env.clone_from(env);
            }
            if let Some(secrets) = &update.secrets {
                service.secrets.clone_from(secrets);
            }
            if let Some(check) = &update.health_check {
                service.health_check = Some(check.clone());
            }
        }
        spec.release.clone_from(&request.release);
        let result = self.provision_locked(&spec).await?;
        Ok(DeployResult {
            release: result.release,
            revision: self.revision(workload),
            changed: result.changed,
        })
    }

    async fn rollback(&self, workload: &str, release: &str) -> Result<DeployResult, Error> {
        let lock = self.lock(workload);
        let _guard = lock.lock().await;
        let (namespace, _, _) = self.current(workload)?;
        let history = self.history(&namespace, workload);
        let Some(record) = history.iter().find(|r| r.release == release) else {
            return Err(Error::UnknownRelease {
                workload: workload.to_owned(),
                release: release.to_owned(),
                known: history
                    .iter()
                    .map(|r| r.release.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        let result = self.provision_locked(&record.spec).await?;
        Ok(DeployResult {
            release: result.release,
            revision: self.revision(workload),
            changed: result.changed,
        })
    }

    async fn scale(&self, workload: &str, request: &ScaleRequest) -> Result<DeployResult, Error> {
        let lock = self.lock(workload);
        let _guard = lock.lock().await;
        let (_, _, spec) = self.current(workload)?;
        let mut spec = spec.ok_or_else(|| Error::NotFound(workload.to_owned()))?;
        let mut changed = false;
        if let Some(resources) = &request.resources {
            let plan = spec.plan()?;
            spec.services[plan.main].resources = resources.clone();
            if let Some(replicas) = request.replicas {
                spec.replicas = replicas;
            }
            changed = self.provision_locked(&spec).await?.changed;
        } else if let Some(replicas) = request.replicas {
            if replicas == 0 {
                return Err(Error::InvalidSpec(
                    "replicas must be at least 1 (stop the workload to run none)".into(),
                ));
            }
            self.scale_to(workload, replicas).await?;
            self.settle(workload, |s| s.ready && s.ready_replicas == replicas)
                .await;
            changed = true;
        }
        Ok(DeployResult {
            release: spec.release,
            revision: self.revision(workload),
            changed,
        })
    }

    async fn resources(&self, workload: &str) -> Result<ResourceUsage, Error> {
        ops::resources(self, workload).await
    }

    async fn logs(
        &self,
        workload: &str,
        options: &LogOptions,
    ) -> Result<BoxStream<'static, Result<LogLine, Error>>, Error> {
        ops::logs(self, workload, options).await
    }

    async fn exec(&self, workload: &str, request: &ExecRequest) -> Result<ExecResult, Error> {
        if !self.inner.config.allow_exec {
            return Err(self.unsupported("exec", Capability::Exec));
        }
        ops::exec(self, workload, request).await
    }

    async fn health(&self, deadline: Duration) -> Result<String, Error> {
        match tokio::time::timeout(deadline, self.inner.client.apiserver_version()).await {
            Ok(Ok(info)) => Ok(format!("Kubernetes {}", info.git_version)),
            Ok(Err(e)) => Err(Error::backend("ask the API server for its version", e)),
            Err(_) => Err(Error::backend(
                "ask the API server for its version",
                format!("no answer within {deadline:?}"),
            )),
        }
    }
}

impl KubernetesProvider {
    /// The controller's generation: the rollout revision number.
    fn revision(&self, workload: &str) -> u64 {
        self.current(workload)
            .ok()
            .and_then(|(_, c, _)| c.meta().generation)
            .and_then(|g| u64::try_from(g).ok())
            .unwrap_or(0)
    }

    pub(crate) fn since(time: SystemTime) -> k8s_openapi::jiff::Timestamp {
        let d = time
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        k8s_openapi::jiff::Timestamp::from_second(i64::try_from(d.as_secs()).unwrap_or(0))
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)
    }
}
