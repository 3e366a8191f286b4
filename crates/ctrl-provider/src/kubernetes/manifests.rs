//! From a [`WorkloadSpec`] to the Kubernetes objects that run it: pure
//! functions, no API calls, so every field is unit-tested and a bad spec
//! fails here — before anything is applied.
//!
//! Per workload `w` in namespace `ns` (the workspace's namespace):
//! - a **Deployment** `w` (stateless) or a **StatefulSet** `w` (stateful,
//!   with `volumeClaimTemplates` for persistent volumes); one pod per
//!   replica with the main service and sidecars as containers and inits as
//!   init containers;
//! - a **Service** `w` selecting the pods (headless for stateful workloads,
//!   which gives each replica a stable DNS name);
//! - a **Secret** `w-<service>-env` per service with secret variables,
//!   referenced through `secretKeyRef` — values never appear in the pod spec;
//! - a **ConfigMap** `w-<service>-files` per service with config files,
//!   mounted file by file;
//! - a **HorizontalPodAutoscaler** when the spec autoscales, a
//!   **PodDisruptionBudget** when more than one replica runs, and a
//!   **NetworkPolicy** (or **CiliumNetworkPolicy**) when the spec has one.
//!
//! Every object carries the spec's labels, the backend's own
//! ([`MANAGED_BY`], [`WORKLOAD`], [`REGION`], [`CLUSTER`]) and the release;
//! the agent's caches and its reconcile select on region and cluster, so an
//! agent never touches another cluster's objects.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment, StatefulSet,
    StatefulSetSpec,
};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource, ExecAction,
    HTTPGetAction, KeyToPath, Lifecycle, LifecycleHandler, LocalObjectReference, Namespace,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSpec, PodTemplateSpec, Probe as K8sProbe,
    ResourceRequirements, Secret, SecretKeySelector, Service, ServicePort,
    ServiceSpec as K8sServiceSpec, TCPSocketAction, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy as K8sNetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule,
    NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::spec::{
    HttpMethod, NetworkPolicy, Persistence, Probe, Protocol, RestartPolicy, Role, ServiceSpec,
    StopSignal, WorkloadKind, WorkloadSpec, check_label,
};
use crate::{Capability, Error};

/// Marks every object the backend manages.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The value of [`MANAGED_BY`].
pub const MANAGED_BY_VALUE: &str = "ctrl-krane";
/// The workload id (pod selector together with [`MANAGED_BY`]).
pub const WORKLOAD: &str = "ctrl.dev/workload";
/// The region the agent serves.
pub const REGION: &str = "ctrl.dev/region";
/// The cluster (cell) the agent serves.
pub const CLUSTER: &str = "ctrl.dev/cluster";
/// The release a pod template belongs to.
pub const RELEASE: &str = "ctrl.dev/release";
/// Content hash of the pod template's spec (replicas excluded): pods with
/// the current hash are the current revision.
pub const SPEC_HASH: &str = "ctrl.dev/spec-hash";
/// Hash of everything applied for a spec: equal means nothing to apply.
pub const APPLY_HASH: &str = "ctrl.dev/apply-hash";
/// JSON list of [`ReleaseRecord`]s, current first (what rollback reads).
pub const RELEASES: &str = "ctrl.dev/releases";
/// The service a container runs (on pods: which container is the main one).
pub const MAIN_CONTAINER: &str = "ctrl.dev/main-container";
/// The spec's label carrying the workspace namespace.
pub const NAMESPACE_LABEL: &str = "ctrl.dev/namespace";
/// The field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "ctrl-krane";
/// Releases kept for rollback.
pub const HISTORY: usize = 10;
/// Largest `ctrl.dev/releases` annotation (Kubernetes allows 256 KiB of
/// annotations per object); older releases are dropped to fit.
const MAX_HISTORY_BYTES: usize = 128 * 1024;

/// How the deployment's network policy is enforced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkPolicyMode {
    /// `networking.k8s.io/v1` NetworkPolicy (any CNI that enforces them).
    #[default]
    Standard,
    /// `cilium.io/v2` CiliumNetworkPolicy.
    Cilium,
    /// No policy objects (the CNI enforces none).
    Off,
}

/// Cluster facts the builders need.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// Region label value.
    pub region: String,
    /// Cluster (cell) label value.
    pub cluster: String,
    /// Namespace for specs without a [`NAMESPACE_LABEL`].
    pub default_namespace: String,
    /// Labels added to every object.
    pub extra_labels: BTreeMap<String, String>,
    /// `imagePullSecrets` of every pod.
    pub image_pull_secrets: Vec<String>,
    /// How network policies are enforced.
    pub network_policy: NetworkPolicyMode,
    /// The extended resource GPUs are requested as (e.g. `nvidia.com/gpu`);
    /// none = GPUs are unsupported.
    pub gpu_resource: Option<String>,
    /// Storage class of persistent volumes; none = the cluster's default.
    pub storage_class: Option<String>,
    /// Size of a persistent volume when the service sets no disk size.
    pub volume_size_mib: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            region: "local".into(),
            cluster: "local".into(),
            default_namespace: "default".into(),
            extra_labels: BTreeMap::new(),
            image_pull_secrets: Vec::new(),
            network_policy: NetworkPolicyMode::Standard,
            gpu_resource: None,
            storage_class: None,
            volume_size_mib: 1024,
        }
    }
}

/// The network policy object in the flavour the cluster enforces.
#[derive(Debug, Clone, PartialEq)]
pub enum PolicyObject {
    /// A standard NetworkPolicy.
    Standard(Box<K8sNetworkPolicy>),
    /// A CiliumNetworkPolicy (a custom resource, as JSON).
    Cilium(serde_json::Value),
}

/// The controller object of a workload.
#[derive(Debug, Clone, PartialEq)]
pub enum Controller {
    /// Stateless replicas.
    Deployment(Box<Deployment>),
    /// Replicas with identity and storage.
    StatefulSet(Box<StatefulSet>),
}

/// One release the workload ran, with everything needed to run it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseRecord {
    /// The release id.
    pub release: String,
    /// Its spec.
    pub spec: WorkloadSpec,
}

/// Everything applied for one spec, in apply order.
#[derive(Debug, Clone)]
pub struct Manifests {
    /// The workspace namespace.
    pub namespace: Namespace,
    /// Secret variables per service.
    pub secrets: Vec<Secret>,
    /// Config files per service.
    pub config_maps: Vec<ConfigMap>,
    /// The Service (none when no service listens on a port and the
    /// workload is stateless).
    pub service: Option<Service>,
    /// Deployment or StatefulSet.
    pub controller: Controller,
    /// Autoscaler.
    pub autoscaler: Option<HorizontalPodAutoscaler>,
    /// Disruption budget.
    pub disruption_budget: Option<PodDisruptionBudget>,
    /// Network policy.
    pub network_policy: Option<PolicyObject>,
    /// Hash of the pod template's content ([`SPEC_HASH`]).
    pub spec_hash: String,
    /// Hash of everything applied ([`APPLY_HASH`]).
    pub apply_hash: String,
}

impl Manifests {
    /// The workload's namespace name.
    pub fn namespace_name(&self) -> &str {
        self.namespace.metadata.name.as_deref().unwrap_or_default()
    }

    /// The name of the Deployment or StatefulSet.
    pub fn controller_name(&self) -> &str {
        match &self.controller {
            Controller::Deployment(d) => d.metadata.name.as_deref(),
            Controller::StatefulSet(s) => s.metadata.name.as_deref(),
        }
        .unwrap_or_default()
    }

    /// Every object as JSON (what the API receives), in apply order.
    pub fn objects(&self) -> Result<Vec<serde_json::Value>, Error> {
        let mut out = vec![to_json(&self.namespace)?];
        for s in &self.secrets {
            out.push(to_json(s)?);
        }
        for c in &self.config_maps {
            out.push(to_json(c)?);
        }
        if let Some(s) = &self.service {
            out.push(to_json(s)?);
        }
        out.push(match &self.controller {
            Controller::Deployment(d) => to_json(d.as_ref())?,
            Controller::StatefulSet(s) => to_json(s.as_ref())?,
        });
        if let Some(h) = &self.autoscaler {
            out.push(to_json(h)?);
        }
        if let Some(p) = &self.disruption_budget {
            out.push(to_json(p)?);
        }
        match &self.network_policy {
            Some(PolicyObject::Standard(p)) => out.push(to_json(p.as_ref())?),
            Some(PolicyObject::Cilium(p)) => out.push(p.clone()),
            None => {}
        }
        Ok(out)
    }
}

/// A typed object as the JSON the API server receives (with its
/// `apiVersion` and `kind`).
pub fn to_json<K>(object: &K) -> Result<serde_json::Value, Error>
where
    K: k8s_openapi::Resource + Serialize,
{
    let mut value =
        serde_json::to_value(object).map_err(|e| Error::backend("serialize object", e))?;
    if let Some(map) = value.as_object_mut() {
        map.insert("apiVersion".into(), K::API_VERSION.into());
        map.insert("kind".into(), K::KIND.into());
    }
    Ok(value)
}

/// Resolved secret values: (service, variable) → value.
pub type SecretValues = BTreeMap<(String, String), Zeroizing<String>>;

/// The namespace a spec runs in.
pub fn namespace_of(spec: &WorkloadSpec, settings: &Settings) -> String {
    spec.labels
        .get(NAMESPACE_LABEL)
        .filter(|n| !n.is_empty())
        .cloned()
        .unwrap_or_else(|| settings.default_namespace.clone())
}

/// The Secret holding a service's variables.
pub fn secret_name(workload: &str, service: &str) -> String {
    format!("{workload}-{service}-env")
}

/// The ConfigMap holding a service's files.
pub fn files_name(workload: &str, service: &str) -> String {
    format!("{workload}-{service}-files")
}

/// Identifies a spec's pod template content (replicas excluded: scaling is
/// not a new revision). Secrets count by reference, never by value.
pub fn spec_hash(spec: &WorkloadSpec) -> String {
    let mut normalized = spec.clone();
    normalized.replicas = 0;
    normalized.autoscaling = None;
    digest(&serde_json::to_vec(&normalized).unwrap_or_default())
}

/// Bumped whenever the builders produce different objects for the same
/// spec, so agents re-apply after an upgrade.
const BUILDERS_REVISION: u32 = 1;

/// Identifies everything applied for `spec` under `settings` (replicas
/// included): the spec with its secret *references* — values never enter a
/// hash that is stored in the cluster — the settings and the builders'
/// revision. Cheap, so an unchanged re-apply is decided before anything is
/// resolved or built.
pub fn apply_hash(spec: &WorkloadSpec, settings: &Settings) -> String {
    digest(&serde_json::to_vec(&(spec, settings, BUILDERS_REVISION)).unwrap_or_default())
}

/// Whether `spec` gets a Service (it listens on a port, or is stateful).
pub fn has_service(spec: &WorkloadSpec) -> bool {
    spec.kind == WorkloadKind::Stateful
        || spec
            .services
            .iter()
            .any(|s| s.is_long_lived() && !s.ports.is_empty())
}

/// A short content digest (96 bits of SHA-256, hex).
pub(super) fn digest(bytes: &[u8]) -> String {
    hex::encode(&Sha256::digest(bytes)[..12])
}

/// Builds every object for `spec`. `history` holds the releases run before
/// (newest first); `secrets` the resolved values of the spec's secret
/// references. Errors name the field; nothing is built half-way.
pub fn build(
    spec: &WorkloadSpec,
    settings: &Settings,
    history: &[ReleaseRecord],
    secrets: &SecretValues,
) -> Result<Manifests, Error> {
    let plan = spec.plan()?;
    let namespace = namespace_of(spec, settings);
    check_label("namespace", &namespace, 63)?;
    for key in spec.labels.keys().chain(settings.extra_labels.keys()) {
        check_label_key(key)?;
    }
    for (key, value) in spec.labels.iter().chain(&settings.extra_labels) {
        check_label_value(key, value)?;
    }
    if let Some(a) = &spec.autoscaling
        && (a.min_replicas == 0 || a.max_replicas < a.min_replicas)
    {
        return invalid(format!(
            "autoscaling: min_replicas {} and max_replicas {} must satisfy 1 <= min <= max",
            a.min_replicas, a.max_replicas
        ));
    }
    let spec_hash = spec_hash(spec);

    let mut labels = spec.labels.clone();
    labels.extend(settings.extra_labels.clone());
    labels.insert(MANAGED_BY.into(), MANAGED_BY_VALUE.into());
    labels.insert(WORKLOAD.into(), spec.id.clone());
    labels.insert(REGION.into(), settings.region.clone());
    labels.insert(CLUSTER.into(), settings.cluster.clone());
    labels.insert(RELEASE.into(), spec.release.clone());
    let selector = BTreeMap::from([
        (MANAGED_BY.to_owned(), MANAGED_BY_VALUE.to_owned()),
        (WORKLOAD.to_owned(), spec.id.clone()),
    ]);
    let meta = |name: String| ObjectMeta {
        name: Some(name),
        namespace: Some(namespace.clone()),
        labels: Some(labels.clone()),
        ..ObjectMeta::default()
    };

    let mut init_containers = Vec::new();
    let mut containers = Vec::new();
    let mut volumes = Vec::new();
    let mut claims = Vec::new();
    let mut secret_objects = Vec::new();
    let mut config_maps = Vec::new();
    let mut grace = 0u64;
    // Main first among long-lived containers (`kubectl logs` and exec pick
    // the first one by default).
    let mut order = plan.order.clone();
    order.sort_by_key(|i| match spec.services[*i].role {
        Role::Init => 0,
        Role::Main => 1,
        Role::Sidecar => 2,
    });
    for &i in &order {
        let service = &spec.services[i];
        grace = grace.max(service.stop_grace.as_secs());
        let mut mounts = Vec::new();
        if !service.secrets.is_empty() {
            let name = secret_name(&spec.id, &service.name);
            let mut data = BTreeMap::new();
            for s in &service.secrets {
                let value = secrets
                    .get(&(service.name.clone(), s.env.clone()))
                    .ok_or_else(|| Error::Secret {
                        service: service.name.clone(),
                        env: s.env.clone(),
                        reason: "not resolved".into(),
                    })?;
                data.insert(s.env.clone(), ByteString(value.as_bytes().to_vec()));
            }
            secret_objects.push(Secret {
                metadata: meta(name),
                type_: Some("Opaque".into()),
                data: Some(data),
                ..Secret::default()
            });
        }
        if !service.config_files.is_empty() {
            let name = files_name(&spec.id, &service.name);
            let volume = format!("{}-files", service.name);
            let mut data = BTreeMap::new();
            let mut items = Vec::new();
            for (n, file) in service.config_files.iter().enumerate() {
                let key = format!("file-{n}");
                data.insert(key.clone(), file.content.clone());
                items.push(KeyToPath {
                    key: key.clone(),
                    path: key.clone(),
                    mode: Some(i32::try_from(file.mode & 0o777).unwrap_or(0o644)),
                });
                mounts.push(VolumeMount {
                    name: volume.clone(),
                    mount_path: file.path.clone(),
                    sub_path: Some(key),
                    read_only: Some(true),
                    ..VolumeMount::default()
                });
            }
            config_maps.push(ConfigMap {
                metadata: meta(name.clone()),
                data: Some(data),
                ..ConfigMap::default()
            });
            volumes.push(Volume {
                name: volume,
                config_map: Some(ConfigMapVolumeSource {
                    name: name.clone(),
                    items: Some(items),
                    ..ConfigMapVolumeSource::default()
                }),
                ..Volume::default()
            });
        }
        for v in &service.volumes {
            let name = format!("{}-{}", service.name, v.name);
            mounts.push(VolumeMount {
                name: name.clone(),
                mount_path: v.mount_path.clone(),
                ..VolumeMount::default()
            });
            match v.persistence {
                Persistence::Ephemeral => volumes.push(Volume {
                    name,
                    empty_dir: Some(Default::default()),
                    ..Volume::default()
                }),
                Persistence::Persistent => {
                    let size = match service.resources.disk_mib {
                        0 => settings.volume_size_mib,
                        mib => mib,
                    };
                    claims.push(PersistentVolumeClaim {
                        metadata: ObjectMeta {
                            name: Some(name),
                            labels: Some(labels.clone()),
                            ..ObjectMeta::default()
                        },
                        spec: Some(PersistentVolumeClaimSpec {
                            access_modes: Some(vec!["ReadWriteOnce".into()]),
                            storage_class_name: settings.storage_class.clone(),
                            resources: Some(VolumeResourceRequirements {
                                requests: Some(BTreeMap::from([(
                                    "storage".to_owned(),
                                    Quantity(format!("{size}Mi")),
                                )])),
                                ..VolumeResourceRequirements::default()
                            }),
                            ..PersistentVolumeClaimSpec::default()
                        }),
                        ..PersistentVolumeClaim::default()
                    });
                }
            }
        }
        let container = container(&spec.id, service, settings, mounts)?;
        if service.role == Role::Init {
            init_containers.push(container);
        } else {
            containers.push(container);
        }
    }

    let main = &spec.services[plan.main];
    let mut template_labels = labels.clone();
    template_labels.insert(SPEC_HASH.into(), spec_hash.clone());
    let template = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(template_labels),
            annotations: Some(BTreeMap::from([(
                MAIN_CONTAINER.to_owned(),
                main.name.clone(),
            )])),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            containers,
            init_containers: Some(init_containers).filter(|c| !c.is_empty()),
            volumes: Some(volumes).filter(|v| !v.is_empty()),
            termination_grace_period_seconds: Some(i64::try_from(grace).unwrap_or(i64::MAX)),
            image_pull_secrets: Some(
                settings
                    .image_pull_secrets
                    .iter()
                    .map(|name| LocalObjectReference { name: name.clone() })
                    .collect(),
            )
            .filter(|s: &Vec<_>| !s.is_empty()),
            // Apps get no Kubernetes API token and no service-link variables.
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            restart_policy: Some("Always".into()),
            ..PodSpec::default()
        }),
    };

    let history_json = release_history(spec, history)?;
    let mut annotations = BTreeMap::from([
        (RELEASES.to_owned(), history_json),
        (SPEC_HASH.to_owned(), spec_hash.clone()),
    ]);
    let fixed_replicas = spec.autoscaling.is_none();
    let replicas = i32::try_from(spec.replicas).unwrap_or(i32::MAX);
    let selector_object = LabelSelector {
        match_labels: Some(selector.clone()),
        ..LabelSelector::default()
    };
    let rollout_budget = spec
        .services
        .iter()
        .filter_map(|s| {
            s.health_check
                .as_ref()
                .map(|h| h.rollout_budget().as_secs())
        })
        .max()
        .unwrap_or(60);

    let ports: Vec<ServicePort> = spec
        .services
        .iter()
        .filter(|s| s.is_long_lived())
        .flat_map(|s| s.ports.iter())
        .map(|p| ServicePort {
            name: Some(format!("{}-{}", p.protocol.as_str(), p.container)),
            port: i32::from(p.container),
            target_port: Some(IntOrString::Int(i32::from(p.container))),
            protocol: Some(protocol(p.protocol).into()),
            ..ServicePort::default()
        })
        .collect();
    let stateful = spec.kind == WorkloadKind::Stateful;
    let service = (stateful || !ports.is_empty()).then(|| Service {
        metadata: meta(spec.id.clone()),
        spec: Some(K8sServiceSpec {
            selector: Some(selector.clone()),
            ports: Some(ports.clone()).filter(|p| !p.is_empty()),
            cluster_ip: stateful.then(|| "None".to_owned()),
            type_: Some("ClusterIP".into()),
            ..K8sServiceSpec::default()
        }),
        ..Service::default()
    });

    let mut controller_meta = meta(spec.id.clone());
    let controller = if stateful {
        Controller::StatefulSet(Box::new(StatefulSet {
            metadata: controller_meta.clone(),
            spec: Some(StatefulSetSpec {
                replicas: fixed_replicas.then_some(replicas),
                selector: selector_object.clone(),
                service_name: Some(spec.id.clone()),
                template,
                volume_claim_templates: Some(claims).filter(|c| !c.is_empty()),
                pod_management_policy: Some("OrderedReady".into()),
                revision_history_limit: Some(i32::try_from(HISTORY).unwrap_or(10)),
                ..StatefulSetSpec::default()
            }),
            ..StatefulSet::default()
        }))
    } else {
        Controller::Deployment(Box::new(Deployment {
            metadata: controller_meta.clone(),
            spec: Some(DeploymentSpec {
                replicas: fixed_replicas.then_some(replicas),
                selector: selector_object.clone(),
                template,
                // Zero downtime: a new pod is ready before an old one goes.
                strategy: Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: Some(IntOrString::Int(1)),
                        max_unavailable: Some(IntOrString::Int(0)),
                    }),
                }),
                revision_history_limit: Some(i32::try_from(HISTORY).unwrap_or(10)),
                progress_deadline_seconds: Some(
                    i32::try_from(rollout_budget.saturating_add(60)).unwrap_or(i32::MAX),
                ),
                ..DeploymentSpec::default()
            }),
            ..Deployment::default()
        }))
    };

    let target = |kind: &str| CrossVersionObjectReference {
        api_version: Some("apps/v1".into()),
        kind: kind.into(),
        name: spec.id.clone(),
    };
    let controller_kind = if stateful {
        "StatefulSet"
    } else {
        "Deployment"
    };
    let autoscaler = spec.autoscaling.as_ref().map(|a| {
        let resource = |name: &str, percent: u32| MetricSpec {
            type_: "Resource".into(),
            resource: Some(ResourceMetricSource {
                name: name.into(),
                target: MetricTarget {
                    type_: "Utilization".into(),
                    average_utilization: Some(i32::try_from(percent).unwrap_or(80)),
                    ..MetricTarget::default()
                },
            }),
            ..MetricSpec::default()
        };
        let mut metrics = vec![resource("cpu", a.cpu_percent)];
        if let Some(m) = a.memory_percent {
            metrics.push(resource("memory", m));
        }
        HorizontalPodAutoscaler {
            metadata: meta(spec.id.clone()),
            spec: Some(HorizontalPodAutoscalerSpec {
                scale_target_ref: target(controller_kind),
                min_replicas: Some(i32::try_from(a.min_replicas).unwrap_or(1)),
                max_replicas: i32::try_from(a.max_replicas).unwrap_or(i32::MAX),
                metrics: Some(metrics),
                ..HorizontalPodAutoscalerSpec::default()
            }),
            ..HorizontalPodAutoscaler::default()
        }
    });
    let least = spec
        .autoscaling
        .as_ref()
        .map_or(spec.replicas, |a| a.min_replicas);
    let disruption_budget = (least > 1).then(|| PodDisruptionBudget {
        metadata: meta(spec.id.clone()),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(selector_object.clone()),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    });
    let network_policy = match (&spec.network_policy, settings.network_policy) {
        (None, _) | (_, NetworkPolicyMode::Off) => None,
        (Some(p), NetworkPolicyMode::Standard) => Some(PolicyObject::Standard(Box::new(
            standard_policy(p, meta(spec.id.clone()), &selector, &namespace)?,
        ))),
        (Some(p), NetworkPolicyMode::Cilium) => Some(PolicyObject::Cilium(cilium_policy(
            p,
            meta(spec.id.clone()),
            &selector,
            &namespace,
        )?)),
    };

    let mut manifests = Manifests {
        namespace: Namespace {
            metadata: ObjectMeta {
                name: Some(namespace.clone()),
                labels: Some(BTreeMap::from([
                    (MANAGED_BY.to_owned(), MANAGED_BY_VALUE.to_owned()),
                    (REGION.to_owned(), settings.region.clone()),
                    (CLUSTER.to_owned(), settings.cluster.clone()),
                ])),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        },
        secrets: secret_objects,
        config_maps,
        service,
        controller,
        autoscaler,
        disruption_budget,
        network_policy,
        spec_hash,
        apply_hash: String::new(),
    };
    let apply_hash = apply_hash(spec, settings);
    annotations.insert(APPLY_HASH.into(), apply_hash.clone());
    controller_meta.annotations = Some(annotations);
    match &mut manifests.controller {
        Controller::Deployment(d) => d.metadata = controller_meta,
        Controller::StatefulSet(s) => s.metadata = controller_meta,
    }
    manifests.apply_hash = apply_hash;
    Ok(manifests)
}

/// The release history with `spec` first, bounded in count and size.
fn release_history(spec: &WorkloadSpec, history: &[ReleaseRecord]) -> Result<String, Error> {
    let mut records = vec![ReleaseRecord {
        release: spec.release.clone(),
        spec: spec.clone(),
    }];
    records.extend(
        history
            .iter()
            .filter(|r| r.release != spec.release)
            .take(HISTORY - 1)
            .cloned(),
    );
    loop {
        let json =
            serde_json::to_string(&records).map_err(|e| Error::backend("record releases", e))?;
        if json.len() <= MAX_HISTORY_BYTES || records.len() == 1 {
            return Ok(json);
        }
        records.pop();
    }
}

/// The recorded releases of a workload object's annotations, newest first.
pub fn read_history(annotations: Option<&BTreeMap<String, String>>) -> Vec<ReleaseRecord> {
    annotations
        .and_then(|a| a.get(RELEASES))
        .and_then(|json| serde_json::from_str(json).ok())
        .unwrap_or_default()
}

fn container(
    workload: &str,
    service: &ServiceSpec,
    settings: &Settings,
    volume_mounts: Vec<VolumeMount>,
) -> Result<Container, Error> {
    let name = &service.name;
    if service.role != Role::Init && service.restart != RestartPolicy::Always {
        return invalid(format!(
            "service {name:?}: restart policy {:?} is not supported on Kubernetes \
             (long-lived containers of a pod always restart)",
            service.restart
        ));
    }
    if service.resources.pids > 0 {
        return invalid(format!(
            "service {name:?}: resources.pids {} cannot be set per pod on Kubernetes \
             (the kubelet's podPidsLimit applies)",
            service.resources.pids
        ));
    }
    let mut env: Vec<EnvVar> = service
        .env
        .iter()
        .map(|(k, v)| EnvVar {
            name: k.clone(),
            value: Some(v.clone()),
            ..EnvVar::default()
        })
        .collect();
    let secret = secret_name(workload, name);
    env.extend(service.secrets.iter().map(|s| EnvVar {
        name: s.env.clone(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.clone(),
                key: s.env.clone(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }));
    let r = &service.resources;
    let mut limits = BTreeMap::new();
    if r.cpu_millis > 0 {
        limits.insert("cpu".to_owned(), Quantity(format!("{}m", r.cpu_millis)));
    }
    if r.memory_mib > 0 {
        limits.insert("memory".to_owned(), Quantity(format!("{}Mi", r.memory_mib)));
    }
    if r.disk_mib > 0
        && !service
            .volumes
            .iter()
            .any(|v| v.persistence == Persistence::Persistent)
    {
        limits.insert(
            "ephemeral-storage".to_owned(),
            Quantity(format!("{}Mi", r.disk_mib)),
        );
    }
    if r.gpus > 0 {
        let Some(resource) = &settings.gpu_resource else {
            return Err(Error::Unsupported {
                provider: "kubernetes".into(),
                operation: "resources.gpus (no GPU device plugin resource is configured)",
                capability: Capability::Gpu,
            });
        };
        limits.insert(resource.clone(), Quantity(r.gpus.to_string()));
    }
    let resources = (!limits.is_empty()).then(|| ResourceRequirements {
        // Requests equal limits: the pod gets what it may use (Guaranteed QoS).
        requests: Some(limits.clone()),
        limits: Some(limits),
        ..ResourceRequirements::default()
    });
    let (startup, readiness, liveness) = match &service.health_check {
        None => (None, None, None),
        Some(check) => {
            let handler = |probe: &Probe| -> Result<K8sProbe, Error> {
                Ok(match probe {
                    Probe::Http { port, path, method } => {
                        if *method != HttpMethod::Get {
                            return invalid(format!(
                                "service {name:?}: health check method {} is not supported by \
                                 Kubernetes probes (GET only)",
                                method.as_str()
                            ));
                        }
                        K8sProbe {
                            http_get: Some(HTTPGetAction {
                                path: Some(path.clone()),
                                port: IntOrString::Int(i32::from(*port)),
                                scheme: Some("HTTP".into()),
                                ..HTTPGetAction::default()
                            }),
                            ..K8sProbe::default()
                        }
                    }
                    Probe::Tcp { port } => K8sProbe {
                        tcp_socket: Some(TCPSocketAction {
                            port: IntOrString::Int(i32::from(*port)),
                            ..TCPSocketAction::default()
                        }),
                        ..K8sProbe::default()
                    },
                    Probe::Command { command } => K8sProbe {
                        exec: Some(ExecAction {
                            command: Some(command.clone()),
                        }),
                        ..K8sProbe::default()
                    },
                })
            };
            let base = handler(&check.probe)?;
            let period = secs_i32(check.interval.as_secs().max(1));
            let timeout = secs_i32(check.timeout.as_secs().max(1));
            let retries = i32::try_from(check.retries.max(1)).unwrap_or(i32::MAX);
            // The startup window: start period, then the usual retries.
            let startup_failures = i32::try_from(
                check
                    .start_period
                    .as_secs()
                    .div_ceil(check.interval.as_secs().max(1)),
            )
            .unwrap_or(i32::MAX)
            .saturating_add(retries);
            let probe = |failures: i32| K8sProbe {
                period_seconds: Some(period),
                timeout_seconds: Some(timeout),
                failure_threshold: Some(failures),
                success_threshold: Some(1),
                ..base.clone()
            };
            (
                Some(probe(startup_failures)),
                Some(probe(retries)),
                Some(probe(retries)),
            )
        }
    };
    // Kubernetes 1.33 has no stop signal field (alpha behind a gate): a
    // preStop hook sends the signal to the main process and waits for it
    // to exit; the grace period bounds it.
    let lifecycle = match service.stop_signal {
        StopSignal::Sigterm => None,
        signal => Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                exec: Some(ExecAction {
                    command: Some(vec![
                        "/bin/sh".into(),
                        "-c".into(),
                        format!(
                            "kill -{} 1; while kill -0 1 2>/dev/null; do sleep 1; done",
                            signal.as_str().trim_start_matches("SIG")
                        ),
                    ]),
                }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
    };
    let long_lived = service.role != Role::Init;
    Ok(Container {
        name: name.clone(),
        image: Some(service.image.clone()),
        image_pull_policy: Some(
            if service.image.ends_with(":latest") || !service.image.contains(':') {
                "Always"
            } else {
                "IfNotPresent"
            }
            .into(),
        ),
        command: Some(service.command.clone()).filter(|c| !c.is_empty()),
        args: Some(service.args.clone()).filter(|a| !a.is_empty()),
        env: Some(env).filter(|e| !e.is_empty()),
        ports: Some(
            service
                .ports
                .iter()
                .map(|p| ContainerPort {
                    container_port: i32::from(p.container),
                    host_port: p.host.map(i32::from),
                    protocol: Some(protocol(p.protocol).into()),
                    ..ContainerPort::default()
                })
                .collect(),
        )
        .filter(|p: &Vec<_>| !p.is_empty()),
        resources,
        volume_mounts: Some(volume_mounts).filter(|m| !m.is_empty()),
        startup_probe: startup.filter(|_| long_lived),
        readiness_probe: readiness.filter(|_| long_lived),
        liveness_probe: liveness.filter(|_| long_lived),
        lifecycle: lifecycle.filter(|_| long_lived),
        // A crash's last output becomes the termination message, which
        // status reports name ("exited with code 1: <last line>").
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Container::default()
    })
}

fn standard_policy(
    policy: &NetworkPolicy,
    metadata: ObjectMeta,
    selector: &BTreeMap<String, String>,
    namespace: &str,
) -> Result<K8sNetworkPolicy, Error> {
    let ingress = policy
        .ingress
        .iter()
        .map(|rule| NetworkPolicyIngressRule {
            ports: Some(vec![NetworkPolicyPort {
                port: Some(IntOrString::Int(i32::from(rule.port))),
                protocol: Some("TCP".into()),
                ..NetworkPolicyPort::default()
            }]),
            from: Some(
                rule.from
                    .iter()
                    .map(|peer| match &peer.cidr {
                        Some(cidr) => NetworkPolicyPeer {
                            ip_block: Some(IPBlock {
                                cidr: cidr.clone(),
                                ..IPBlock::default()
                            }),
                            ..NetworkPolicyPeer::default()
                        },
                        None => NetworkPolicyPeer {
                            pod_selector: Some(LabelSelector {
                                match_labels: Some(peer.match_labels.clone())
                                    .filter(|m| !m.is_empty()),
                                ..LabelSelector::default()
                            }),
                            namespace_selector: Some(namespace_selector(
                                peer.namespace.as_deref().unwrap_or(namespace),
                            )),
                            ..NetworkPolicyPeer::default()
                        },
                    })
                    .collect(),
            )
            .filter(|f: &Vec<_>| !f.is_empty()),
        })
        .collect();
    // Egress: DNS always; the cluster's pods always; the internet by choice.
    let dns = NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            namespace_selector: Some(namespace_selector("kube-system")),
            ..NetworkPolicyPeer::default()
        }]),
        ports: Some(
            ["UDP", "TCP"]
                .iter()
                .map(|p| NetworkPolicyPort {
                    port: Some(IntOrString::Int(53)),
                    protocol: Some((*p).into()),
                    ..NetworkPolicyPort::default()
                })
                .collect(),
        ),
    };
    let egress = if policy.allow_internet_egress {
        vec![NetworkPolicyEgressRule::default()]
    } else {
        vec![
            dns,
            NetworkPolicyEgressRule {
                to: Some(vec![NetworkPolicyPeer {
                    namespace_selector: Some(LabelSelector::default()),
                    ..NetworkPolicyPeer::default()
                }]),
                ..NetworkPolicyEgressRule::default()
            },
        ]
    };
    Ok(K8sNetworkPolicy {
        metadata,
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector.clone()),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(ingress),
            egress: Some(egress),
        }),
    })
}

fn namespace_selector(namespace: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([(
            "kubernetes.io/metadata.name".to_owned(),
            namespace.to_owned(),
        )])),
        ..LabelSelector::default()
    }
}

fn cilium_policy(
    policy: &NetworkPolicy,
    metadata: ObjectMeta,
    selector: &BTreeMap<String, String>,
    namespace: &str,
) -> Result<serde_json::Value, Error> {
    let ingress: Vec<serde_json::Value> = policy
        .ingress
        .iter()
        .map(|rule| {
            let ports = json!([{"ports": [{"port": rule.port.to_string(), "protocol": "TCP"}]}]);
            if rule.from.is_empty() {
                return json!({"fromEntities": ["all"], "toPorts": ports});
            }
            let endpoints: Vec<_> = rule
                .from
                .iter()
                .filter(|p| p.cidr.is_none())
                .map(|p| {
                    let mut labels = p.match_labels.clone();
                    labels.insert(
                        "k8s:io.kubernetes.pod.namespace".into(),
                        p.namespace.clone().unwrap_or_else(|| namespace.to_owned()),
                    );
                    json!({"matchLabels": labels})
                })
                .collect();
            let cidrs: Vec<_> = rule.from.iter().filter_map(|p| p.cidr.clone()).collect();
            let mut out = json!({"toPorts": ports});
            if !endpoints.is_empty() {
                out["fromEndpoints"] = json!(endpoints);
            }
            if !cidrs.is_empty() {
                out["fromCIDR"] = json!(cidrs);
            }
            out
        })
        .collect();
    let mut egress = vec![
        json!({"toEntities": ["cluster"]}),
        json!({
            "toEndpoints": [{"matchLabels": {
                "k8s:io.kubernetes.pod.namespace": "kube-system",
                "k8s:k8s-app": "kube-dns"
            }}],
            "toPorts": [{"ports": [{"port": "53", "protocol": "ANY"}]}]
        }),
    ];
    if policy.allow_internet_egress {
        egress.push(json!({"toEntities": ["world"]}));
    }
    let mut metadata =
        serde_json::to_value(metadata).map_err(|e| Error::backend("serialize policy", e))?;
    if let Some(m) = metadata.as_object_mut() {
        m.retain(|_, v| !v.is_null());
    }
    Ok(json!({
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": metadata,
        "spec": {
            "endpointSelector": {"matchLabels": selector},
            "ingress": ingress,
            "egress": egress,
        }
    }))
}

fn protocol(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
    }
}

fn secs_i32(secs: u64) -> i32 {
    i32::try_from(secs).unwrap_or(i32::MAX)
}

fn invalid<T>(message: impl Into<String>) -> Result<T, Error> {
    Err(Error::InvalidSpec(message.into()))
}

/// A label key: an optional DNS-subdomain prefix and a name of at most 63
/// characters.
fn check_label_key(key: &str) -> Result<(), Error> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|part| check_label("", part, 63).is_ok())
    });
    if prefix_ok && is_label_name(name, false) {
        Ok(())
    } else {
        invalid(format!(
            "label key {key:?} is not a valid Kubernetes label key"
        ))
    }
}

fn check_label_value(key: &str, value: &str) -> Result<(), Error> {
    if is_label_name(value, true) {
        Ok(())
    } else {
        invalid(format!(
            "label {key:?}: value {value:?} is not a valid Kubernetes label value \
             (at most 63 letters, digits, '-', '_' or '.', starting and ending alphanumeric)"
        ))
    }
}

fn is_label_name(s: &str, may_be_empty: bool) -> bool {
    if s.is_empty() {
        return may_be_empty;
    }
    let bytes = s.as_bytes();
    s.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ctrl_proto::ctrl::v1 as pb;
    use serde_json::Value;

    use super::*;
    use crate::desired::workload_from_apply;
    use crate::spec::{ConfigFile, HealthCheck, PortSpec, Resources, VolumeSpec};

    /// Every field of the desired-state message set to a recognisable value.
    fn full_apply() -> pb::ApplyDeployment {
        pb::ApplyDeployment {
            k8s_namespace: "ws-1".into(),
            k8s_name: "d-abc".into(),
            workspace_id: "ws1".into(),
            project_id: "p1".into(),
            app_id: "a1".into(),
            environment_id: "env1".into(),
            environment_slug: "production".into(),
            deployment_id: "dep1".into(),
            region: "eu".into(),
            image: "registry.example/app:v7".into(),
            command: vec!["/app".into(), "--serve".into()],
            port: 8080,
            cpu_millicores: 250,
            memory_mib: 256,
            storage_mib: 512,
            environment: Some(pb::EncryptedEnvironment {
                keyring: "env1".into(),
                variables: [("TOKEN".to_owned(), vec![1u8, 2])].into(),
            }),
            health_check: Some(pb::HealthCheck {
                method: pb::HealthCheckMethod::Get.into(),
                path: "/healthz".into(),
                interval_seconds: 5,
                timeout_seconds: 2,
                failure_threshold: 3,
                initial_delay_seconds: 10,
            }),
            shutdown_signal: pb::ShutdownSignal::Sigint.into(),
            termination_grace_seconds: 25,
            autoscaling: Some(pb::AutoscalingPolicy {
                min_replicas: 2,
                max_replicas: 6,
                cpu_threshold_percent: 70,
                memory_threshold_percent: 85,
            }),
            labels: [("ctrl.dev/team".to_owned(), "core".to_owned())].into(),
            network_policy: Some(pb::NetworkPolicy {
                ingress: vec![pb::IngressRule {
                    port: 8080,
                    from: vec![
                        pb::NetworkPeer {
                            match_labels: [("app".to_owned(), "frontline".to_owned())].into(),
                            namespace: "ctrl-system".into(),
                            cidr: String::new(),
                        },
                        pb::NetworkPeer {
                            cidr: "10.0.0.0/8".into(),
                            ..Default::default()
                        },
                    ],
                }],
                allow_internet_egress: false,
            }),
            upstream_protocol: pb::UpstreamProtocol::H2c.into(),
            build_id: "b1".into(),
            git_commit_sha: "abc123".into(),
            git_branch: "main".into(),
            git_repository: "acme/web".into(),
            startup_timeout_seconds: 60,
        }
    }

    fn secrets(spec: &WorkloadSpec) -> SecretValues {
        spec.services
            .iter()
            .flat_map(|s| {
                s.secrets.iter().map(|r| {
                    (
                        (s.name.clone(), r.env.clone()),
                        Zeroizing::new(format!("value-of-{}", r.env)),
                    )
                })
            })
            .collect()
    }

    fn settings() -> Settings {
        Settings {
            region: "eu".into(),
            cluster: "eu-1".into(),
            image_pull_secrets: vec!["regcred".into()],
            ..Settings::default()
        }
    }

    fn deployment(m: &Manifests) -> &Deployment {
        match &m.controller {
            Controller::Deployment(d) => d,
            Controller::StatefulSet(_) => panic!("expected a Deployment"),
        }
    }

    /// Every field of `ApplyDeployment` reaches the objects, or is named
    /// here as deliberately not part of them. Destructuring without `..`
    /// makes a new proto field a compile error until it is handled.
    #[test]
    fn every_apply_deployment_field_reaches_the_objects() {
        let apply = full_apply();
        let pb::ApplyDeployment {
            k8s_namespace,
            k8s_name,
            workspace_id,
            project_id,
            app_id,
            environment_id,
            environment_slug,
            deployment_id,
            region,
            image,
            command,
            port,
            cpu_millicores: _,
            memory_mib: _,
            storage_mib: _,
            environment: _,
            health_check: _,
            shutdown_signal: _,
            termination_grace_seconds: _,
            autoscaling: _,
            labels: _,
            network_policy: _,
            // The edge's concern (frontline speaks h2c to the port); not a pod field.
            upstream_protocol: _,
            build_id,
            git_commit_sha,
            git_branch,
            git_repository,
            startup_timeout_seconds: _,
        } = apply.clone();
        let spec = workload_from_apply(&apply).unwrap();
        let m = build(&spec, &settings(), &[], &secrets(&spec)).unwrap();
        let objects = m.objects().unwrap();
        let all = serde_json::to_string(&objects).unwrap();
        for (field, value) in [
            ("k8s_namespace", k8s_namespace.as_str()),
            ("k8s_name", &k8s_name),
            ("workspace_id", &workspace_id),
            ("project_id", &project_id),
            ("app_id", &app_id),
            ("environment_id", &environment_id),
            ("environment_slug", &environment_slug),
            ("deployment_id", &deployment_id),
            ("region", &region),
            ("image", &image),
            ("command", &command[1]),
            ("build_id", &build_id),
            ("git_commit_sha", &git_commit_sha),
            ("git_branch", &git_branch),
            ("git_repository", &git_repository),
        ] {
            assert!(all.contains(value), "{field} ({value}) is in no object");
        }
        assert_eq!(m.namespace_name(), "ws-1");

        let d = deployment(&m);
        let spec_d = d.spec.as_ref().unwrap();
        assert_eq!(spec_d.replicas, None, "the autoscaler owns replicas");
        let pod = spec_d.template.spec.as_ref().unwrap();
        let app = &pod.containers[0];
        assert_eq!(app.name, "app");
        assert_eq!(app.command.as_ref().unwrap(), &command);
        assert_eq!(app.ports.as_ref().unwrap()[0].container_port, port);
        let limits = app.resources.as_ref().unwrap().limits.as_ref().unwrap();
        assert_eq!(limits["cpu"].0, "250m");
        assert_eq!(limits["memory"].0, "256Mi");
        assert_eq!(limits["ephemeral-storage"].0, "512Mi");
        // storage_mib: the ephemeral disk at /data.
        let mount = &app.volume_mounts.as_ref().unwrap()[0];
        assert_eq!(mount.mount_path, "/data");
        assert!(pod.volumes.as_ref().unwrap()[0].empty_dir.is_some());
        // environment: a Secret referenced by secretKeyRef, never a value.
        let token = app
            .env
            .as_ref()
            .unwrap()
            .iter()
            .find(|e| e.name == "TOKEN")
            .unwrap();
        assert!(token.value.is_none());
        let key = token
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!(key.name, "d-abc-app-env");
        assert_eq!(
            m.secrets[0].data.as_ref().unwrap()["TOKEN"].0,
            b"value-of-TOKEN"
        );
        let pod_json = serde_json::to_string(&d).unwrap();
        assert!(
            !pod_json.contains("value-of-TOKEN"),
            "a secret value is in the pod spec"
        );
        // health_check: startup, readiness and liveness probes.
        let readiness = app.readiness_probe.as_ref().unwrap();
        let get = readiness.http_get.as_ref().unwrap();
        assert_eq!(get.path.as_deref(), Some("/healthz"));
        assert_eq!(get.port, IntOrString::Int(8080));
        assert_eq!(readiness.period_seconds, Some(5));
        assert_eq!(readiness.timeout_seconds, Some(2));
        assert_eq!(readiness.failure_threshold, Some(3));
        let startup = app.startup_probe.as_ref().unwrap();
        // (10 s delay + 60 s startup window) / 5 s + 3 retries.
        assert_eq!(startup.failure_threshold, Some(17));
        assert!(app.liveness_probe.is_some());
        // shutdown_signal and termination_grace_seconds.
        let pre_stop = app.lifecycle.as_ref().unwrap().pre_stop.as_ref().unwrap();
        let hook = pre_stop
            .exec
            .as_ref()
            .unwrap()
            .command
            .as_ref()
            .unwrap()
            .join(" ");
        assert!(hook.contains("kill -INT 1"), "{hook}");
        assert_eq!(pod.termination_grace_period_seconds, Some(25));
        assert_eq!(pod.image_pull_secrets.as_ref().unwrap()[0].name, "regcred");
        assert_eq!(pod.automount_service_account_token, Some(false));
        // autoscaling: an HPA and a disruption budget (min 2 replicas).
        let hpa = m.autoscaler.as_ref().unwrap().spec.as_ref().unwrap();
        assert_eq!((hpa.min_replicas, hpa.max_replicas), (Some(2), 6));
        let metrics = hpa.metrics.as_ref().unwrap();
        assert_eq!(
            metrics[0]
                .resource
                .as_ref()
                .unwrap()
                .target
                .average_utilization,
            Some(70)
        );
        assert_eq!(metrics[1].resource.as_ref().unwrap().name, "memory");
        assert_eq!(hpa.scale_target_ref.kind, "Deployment");
        assert!(m.disruption_budget.is_some());
        // labels: on every object.
        for object in &objects {
            if object["kind"] == "Namespace" {
                continue;
            }
            assert_eq!(
                object["metadata"]["labels"]["ctrl.dev/team"], "core",
                "{}",
                object["kind"]
            );
            assert_eq!(object["metadata"]["labels"][REGION], "eu");
            assert_eq!(object["metadata"]["labels"][CLUSTER], "eu-1");
        }
        // network_policy: ingress from the labelled peer and the range only.
        let Some(PolicyObject::Standard(policy)) = &m.network_policy else {
            panic!("no NetworkPolicy");
        };
        let ingress = &policy.spec.as_ref().unwrap().ingress.as_ref().unwrap()[0];
        let from = ingress.from.as_ref().unwrap();
        assert_eq!(
            from[0]
                .namespace_selector
                .as_ref()
                .unwrap()
                .match_labels
                .as_ref()
                .unwrap()["kubernetes.io/metadata.name"],
            "ctrl-system"
        );
        assert_eq!(from[1].ip_block.as_ref().unwrap().cidr, "10.0.0.0/8");
        // The service selects the pods by the stable selector.
        let svc = m.service.as_ref().unwrap().spec.as_ref().unwrap();
        assert_eq!(svc.selector.as_ref().unwrap()[WORKLOAD], "d-abc");
        assert_eq!(svc.ports.as_ref().unwrap()[0].port, 8080);
    }

    #[test]
    fn applying_the_same_spec_builds_the_same_objects() {
        let spec = workload_from_apply(&full_apply()).unwrap();
        let a = build(&spec, &settings(), &[], &secrets(&spec)).unwrap();
        let b = build(&spec, &settings(), &[], &secrets(&spec)).unwrap();
        assert_eq!(a.apply_hash, b.apply_hash);
        assert_eq!(a.objects().unwrap(), b.objects().unwrap());
        let mut scaled = spec.clone();
        scaled.replicas = 5;
        let c = build(&scaled, &settings(), &[], &secrets(&spec)).unwrap();
        assert_eq!(a.spec_hash, c.spec_hash, "replicas are not a new revision");
        let mut newer = spec.clone();
        newer.services[0].image = "registry.example/app:v8".into();
        newer.release = "dep2".into();
        let d = build(&newer, &settings(), &[], &secrets(&spec)).unwrap();
        assert_ne!(a.spec_hash, d.spec_hash);
        // The history carries both releases, newest first.
        let history = read_history(deployment(&d).metadata.annotations.as_ref());
        assert_eq!(history.len(), 1);
        let e = build(
            &newer,
            &settings(),
            &read_history(deployment(&a).metadata.annotations.as_ref()),
            &secrets(&spec),
        )
        .unwrap();
        let history = read_history(deployment(&e).metadata.annotations.as_ref());
        let releases: Vec<_> = history.iter().map(|r| r.release.as_str()).collect();
        assert_eq!(releases, ["dep2", "dep1"]);
    }

    #[test]
    fn stateful_workloads_get_a_statefulset_with_claims_and_a_headless_service() {
        let mut service = ServiceSpec::main("db", "postgres:16");
        service.ports = vec![PortSpec {
            container: 5432,
            host: None,
            protocol: Protocol::Tcp,
        }];
        service.volumes = vec![VolumeSpec {
            name: "data".into(),
            mount_path: "/var/lib/postgresql".into(),
            persistence: Persistence::Persistent,
        }];
        service.resources = Resources {
            disk_mib: 2048,
            ..Resources::default()
        };
        service.config_files = vec![ConfigFile {
            path: "/etc/pg/extra.conf".into(),
            content: "max_connections = 50\n".into(),
            mode: 0o600,
        }];
        let mut init = ServiceSpec::main("migrate", "migrate:1");
        init.role = Role::Init;
        let mut sidecar = ServiceSpec::main("exporter", "exporter:1");
        sidecar.role = Role::Sidecar;
        sidecar.health_check = None;
        let spec = WorkloadSpec {
            id: "pg".into(),
            release: "r1".into(),
            kind: WorkloadKind::Stateful,
            replicas: 3,
            services: vec![sidecar, service, init],
            labels: BTreeMap::from([(NAMESPACE_LABEL.to_owned(), "ws-2".to_owned())]),
            autoscaling: None,
            network_policy: None,
        };
        let m = build(&spec, &Settings::default(), &[], &SecretValues::new()).unwrap();
        let Controller::StatefulSet(sts) = &m.controller else {
            panic!("expected a StatefulSet");
        };
        let s = sts.spec.as_ref().unwrap();
        assert_eq!(s.replicas, Some(3));
        assert_eq!(s.service_name.as_deref(), Some("pg"));
        let claim = &s.volume_claim_templates.as_ref().unwrap()[0];
        assert_eq!(claim.metadata.name.as_deref(), Some("db-data"));
        assert_eq!(
            claim
                .spec
                .as_ref()
                .unwrap()
                .resources
                .as_ref()
                .unwrap()
                .requests
                .as_ref()
                .unwrap()["storage"]
                .0,
            "2048Mi"
        );
        let pod = s.template.spec.as_ref().unwrap();
        let names: Vec<_> = pod.containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["db", "exporter"], "main first, then sidecars");
        assert_eq!(pod.init_containers.as_ref().unwrap()[0].name, "migrate");
        let files = &m.config_maps[0];
        assert_eq!(files.metadata.name.as_deref(), Some("pg-db-files"));
        let volume = pod
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.config_map.is_some())
            .unwrap();
        assert_eq!(
            volume.config_map.as_ref().unwrap().items.as_ref().unwrap()[0].mode,
            Some(0o600)
        );
        let mount = pod.containers[0]
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.mount_path == "/etc/pg/extra.conf")
            .unwrap();
        assert_eq!(mount.sub_path.as_deref(), Some("file-0"));
        let svc = m.service.as_ref().unwrap().spec.as_ref().unwrap();
        assert_eq!(svc.cluster_ip.as_deref(), Some("None"));
        assert_eq!(m.namespace_name(), "ws-2");
        assert!(
            m.disruption_budget.is_some(),
            "3 replicas get a disruption budget"
        );
    }

    #[test]
    fn unsupported_and_invalid_specs_name_the_field() {
        let base = || {
            let mut s = ServiceSpec::main("app", "img:1");
            s.ports = vec![PortSpec {
                container: 80,
                host: None,
                protocol: Protocol::Tcp,
            }];
            WorkloadSpec {
                id: "w".into(),
                release: "r".into(),
                kind: WorkloadKind::Stateless,
                replicas: 1,
                services: vec![s],
                labels: BTreeMap::new(),
                autoscaling: None,
                network_policy: None,
            }
        };
        let build_err = |spec: WorkloadSpec, settings: &Settings| {
            build(&spec, settings, &[], &SecretValues::new()).unwrap_err()
        };
        let mut gpu = base();
        gpu.services[0].resources.gpus = 1;
        let err = build_err(gpu.clone(), &Settings::default());
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
        assert!(err.to_string().contains("gpus"), "{err}");
        let with_gpu = Settings {
            gpu_resource: Some("nvidia.com/gpu".into()),
            ..Settings::default()
        };
        let m = build(&gpu, &with_gpu, &[], &SecretValues::new()).unwrap();
        assert_eq!(
            deployment(&m)
                .spec
                .as_ref()
                .unwrap()
                .template
                .spec
                .as_ref()
                .unwrap()
                .containers[0]
                .resources
                .as_ref()
                .unwrap()
                .limits
                .as_ref()
                .unwrap()["nvidia.com/gpu"]
                .0,
            "1"
        );
        let mut post = base();
        post.services[0].health_check = Some(HealthCheck {
            probe: Probe::Http {
                port: 80,
                path: "/".into(),
                method: HttpMethod::Post,
            },
            ..HealthCheck::http(80, "/")
        });
        assert!(
            build_err(post, &Settings::default())
                .to_string()
                .contains("method POST")
        );
        let mut restart = base();
        restart.services[0].restart = RestartPolicy::Never;
        assert!(
            build_err(restart, &Settings::default())
                .to_string()
                .contains("restart policy")
        );
        let mut pids = base();
        pids.services[0].resources.pids = 100;
        assert!(
            build_err(pids, &Settings::default())
                .to_string()
                .contains("resources.pids")
        );
        let mut ns = base();
        ns.labels.insert(NAMESPACE_LABEL.into(), "Bad_NS".into());
        assert!(
            build_err(ns, &Settings::default())
                .to_string()
                .contains("Bad_NS")
        );
        let mut label = base();
        label.labels.insert("team".into(), "a b".into());
        assert!(
            build_err(label, &Settings::default())
                .to_string()
                .contains("\"team\"")
        );
        let mut secret = base();
        secret.services[0].secrets = vec![crate::spec::SecretRef {
            env: "TOKEN".into(),
            reference: "sealed:x".into(),
        }];
        assert!(matches!(
            build_err(secret, &Settings::default()),
            Error::Secret { .. }
        ));
    }

    #[test]
    fn cilium_policies_when_configured_and_none_when_off() {
        let spec = workload_from_apply(&full_apply()).unwrap();
        let cilium = Settings {
            network_policy: NetworkPolicyMode::Cilium,
            ..settings()
        };
        let m = build(&spec, &cilium, &[], &secrets(&spec)).unwrap();
        let Some(PolicyObject::Cilium(p)) = &m.network_policy else {
            panic!("no CiliumNetworkPolicy");
        };
        assert_eq!(p["kind"], "CiliumNetworkPolicy");
        assert_eq!(
            p["spec"]["endpointSelector"]["matchLabels"][WORKLOAD],
            "d-abc"
        );
        let rule = &p["spec"]["ingress"][0];
        assert_eq!(rule["fromEndpoints"][0]["matchLabels"]["app"], "frontline");
        assert_eq!(rule["fromCIDR"][0], "10.0.0.0/8");
        assert_eq!(rule["toPorts"][0]["ports"][0]["port"], "8080");
        let egress: Vec<&Value> = p["spec"]["egress"].as_array().unwrap().iter().collect();
        assert!(
            !egress.iter().any(|e| e["toEntities"][0] == "world"),
            "no internet egress"
        );
        let off = Settings {
            network_policy: NetworkPolicyMode::Off,
            ..settings()
        };
        assert!(
            build(&spec, &off, &[], &secrets(&spec))
                .unwrap()
                .network_policy
                .is_none()
        );
        let _ = Duration::ZERO;
    }
}
