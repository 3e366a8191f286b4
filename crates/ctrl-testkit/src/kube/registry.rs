//! The kinds the fake serves (built-in ones and those registered by
//! CustomResourceDefinitions) and the discovery documents describing them.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

/// How names of a kind are validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NameRule {
    /// DNS-1123 subdomain (most kinds).
    Subdomain,
    /// DNS-1123 label (Namespace).
    Label,
    /// DNS-1035 label (Service).
    Dns1035,
    /// Anything usable as a path segment (custom resources).
    PathSegment,
}

/// One resource of one group/version.
#[derive(Debug, Clone)]
pub(crate) struct ResourceType {
    pub(crate) group: String,
    pub(crate) version: String,
    pub(crate) kind: String,
    pub(crate) plural: String,
    pub(crate) singular: String,
    pub(crate) namespaced: bool,
    /// Has a `/status` subresource: main-resource writes ignore `.status`.
    pub(crate) status: bool,
    /// Has a `/scale` subresource (`spec.replicas`).
    pub(crate) scale: bool,
    pub(crate) short_names: Vec<String>,
    pub(crate) categories: Vec<String>,
    /// Built into Kubernetes (typed): list items carry no `kind`/`apiVersion`.
    pub(crate) builtin: bool,
    /// Sets and bumps `metadata.generation`.
    pub(crate) generation: bool,
    pub(crate) names: NameRule,
    /// Verbs allowed on the main resource.
    pub(crate) verbs: Vec<&'static str>,
    /// Other subresources listed in discovery: (name, group, version, kind, verbs).
    pub(crate) extra_subresources: Vec<(
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        Vec<&'static str>,
    )>,
}

const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

impl ResourceType {
    pub(crate) fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Where objects of this resource are stored: all versions of a
    /// resource share one store.
    pub(crate) fn store_key(&self) -> String {
        format!("{}/{}", self.group, self.plural)
    }

    /// `deployments.apps`, `pods`: how errors name the resource.
    pub(crate) fn qualified_resource(&self) -> String {
        self.qualify(&self.plural)
    }

    /// `Deployment.apps`, `Pod`: how `Invalid` errors name the kind.
    pub(crate) fn qualified_kind(&self) -> String {
        self.qualify(&self.kind)
    }

    /// `name.group`, or `name` in the core group.
    fn qualify(&self, name: &str) -> String {
        if self.group.is_empty() {
            name.to_owned()
        } else {
            format!("{name}.{}", self.group)
        }
    }

    pub(crate) fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    pub(crate) fn is(&self, group: &str, plural: &str) -> bool {
        self.group == group && self.plural == plural
    }

    fn discovery_entries(&self) -> Vec<Value> {
        let mut main = json!({
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": self.verbs,
        });
        if !self.short_names.is_empty() {
            main["shortNames"] = json!(self.short_names);
        }
        if !self.categories.is_empty() {
            main["categories"] = json!(self.categories);
        }
        let mut entries = vec![main];
        for (name, group, version, kind, verbs) in self.subresources() {
            let mut entry = json!({
                "name": format!("{}/{name}", self.plural),
                "singularName": "",
                "namespaced": self.namespaced,
                "kind": kind,
                "verbs": verbs,
            });
            if !group.is_empty() || !version.is_empty() {
                entry["group"] = json!(group);
                entry["version"] = json!(version);
            }
            entries.push(entry);
        }
        entries
    }

    /// Every subresource: (name, group, version, kind, verbs); empty group
    /// and version mean the resource's own.
    fn subresources(
        &self,
    ) -> Vec<(
        &'static str,
        &'static str,
        &'static str,
        String,
        Vec<&'static str>,
    )> {
        let mut out = Vec::new();
        if self.status {
            out.push((
                "status",
                "",
                "",
                self.kind.clone(),
                vec!["get", "patch", "update"],
            ));
        }
        if self.scale {
            out.push((
                "scale",
                "autoscaling",
                "v1",
                "Scale".to_owned(),
                vec!["get", "patch", "update"],
            ));
        }
        for (name, group, version, kind, verbs) in &self.extra_subresources {
            out.push((name, group, version, (*kind).to_owned(), verbs.clone()));
        }
        out.sort_by(|a, b| a.0.cmp(b.0));
        out
    }

    /// This resource in aggregated discovery (`apidiscovery.k8s.io/v2`).
    fn aggregated(&self) -> Value {
        let subresources: Vec<Value> = self
            .subresources()
            .into_iter()
            .map(|(name, group, version, kind, verbs)| {
                let (group, version) = if group.is_empty() && version.is_empty() {
                    (self.group.as_str(), self.version.as_str())
                } else {
                    (group, version)
                };
                json!({
                    "subresource": name,
                    "responseKind": {"group": group, "version": version, "kind": kind},
                    "verbs": verbs,
                })
            })
            .collect();
        let mut entry = json!({
            "resource": self.plural,
            "responseKind": {"group": self.group, "version": self.version, "kind": self.kind},
            "scope": if self.namespaced { "Namespaced" } else { "Cluster" },
            "singularResource": self.singular,
            "verbs": self.verbs,
        });
        if !self.short_names.is_empty() {
            entry["shortNames"] = json!(self.short_names);
        }
        if !self.categories.is_empty() {
            entry["categories"] = json!(self.categories);
        }
        if !subresources.is_empty() {
            entry["subresources"] = Value::Array(subresources);
        }
        entry
    }
}

/// Builds a built-in resource.
#[allow(clippy::too_many_arguments)]
fn builtin(
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
    namespaced: bool,
    status: bool,
    generation: bool,
    short_names: &[&str],
) -> ResourceType {
    ResourceType {
        group: group.to_owned(),
        version: version.to_owned(),
        kind: kind.to_owned(),
        plural: plural.to_owned(),
        singular: kind.to_ascii_lowercase(),
        namespaced,
        status,
        scale: false,
        short_names: short_names.iter().map(|s| (*s).to_owned()).collect(),
        categories: Vec::new(),
        builtin: true,
        generation,
        names: NameRule::Subdomain,
        verbs: ALL_VERBS.to_vec(),
        extra_subresources: Vec::new(),
    }
}

/// The built-in resources.
fn builtins() -> Vec<ResourceType> {
    let all = |mut rt: ResourceType| {
        rt.categories = vec!["all".to_owned()];
        rt
    };
    let scaled = |mut rt: ResourceType| {
        rt.scale = true;
        rt
    };
    let mut namespace = builtin(
        "",
        "v1",
        "Namespace",
        "namespaces",
        false,
        true,
        false,
        &["ns"],
    );
    namespace.names = NameRule::Label;
    namespace.verbs = vec![
        "create", "delete", "get", "list", "patch", "update", "watch",
    ];
    namespace.extra_subresources = vec![("finalize", "", "", "Namespace", vec!["update"])];
    let mut service = all(builtin(
        "",
        "v1",
        "Service",
        "services",
        true,
        true,
        false,
        &["svc"],
    ));
    service.names = NameRule::Dns1035;
    service.verbs = vec![
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    ];
    service.extra_subresources = vec![(
        "proxy",
        "",
        "",
        "ServiceProxyOptions",
        vec!["create", "delete", "get", "patch", "update"],
    )];
    let mut pod = all(builtin("", "v1", "Pod", "pods", true, true, false, &["po"]));
    pod.extra_subresources = vec![
        ("attach", "", "", "PodAttachOptions", vec!["create", "get"]),
        ("binding", "", "", "Binding", vec!["create"]),
        (
            "ephemeralcontainers",
            "",
            "",
            "Pod",
            vec!["get", "patch", "update"],
        ),
        ("eviction", "policy", "v1", "Eviction", vec!["create"]),
        ("exec", "", "", "PodExecOptions", vec!["create", "get"]),
        ("log", "", "", "Pod", vec!["get"]),
        (
            "portforward",
            "",
            "",
            "PodPortForwardOptions",
            vec!["create", "get"],
        ),
        (
            "proxy",
            "",
            "",
            "PodProxyOptions",
            vec!["create", "delete", "get", "patch", "update"],
        ),
    ];
    let mut node = builtin("", "v1", "Node", "nodes", false, true, false, &["no"]);
    node.extra_subresources = vec![(
        "proxy",
        "",
        "",
        "NodeProxyOptions",
        vec!["create", "delete", "get", "patch", "update"],
    )];
    let mut event = builtin("", "v1", "Event", "events", true, false, false, &["ev"]);
    event.names = NameRule::PathSegment;
    let mut crd = builtin(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        false,
        true,
        true,
        &["crd", "crds"],
    );
    crd.categories = vec!["api-extensions".to_owned()];
    vec![
        namespace,
        pod,
        service,
        node,
        event,
        builtin(
            "",
            "v1",
            "ConfigMap",
            "configmaps",
            true,
            false,
            false,
            &["cm"],
        ),
        builtin("", "v1", "Secret", "secrets", true, false, false, &[]),
        builtin(
            "",
            "v1",
            "ServiceAccount",
            "serviceaccounts",
            true,
            false,
            false,
            &["sa"],
        ),
        builtin(
            "",
            "v1",
            "PersistentVolumeClaim",
            "persistentvolumeclaims",
            true,
            true,
            false,
            &["pvc"],
        ),
        builtin(
            "",
            "v1",
            "PersistentVolume",
            "persistentvolumes",
            false,
            true,
            false,
            &["pv"],
        ),
        builtin(
            "",
            "v1",
            "Endpoints",
            "endpoints",
            true,
            false,
            false,
            &["ep"],
        ),
        builtin(
            "",
            "v1",
            "LimitRange",
            "limitranges",
            true,
            false,
            false,
            &["limits"],
        ),
        builtin(
            "",
            "v1",
            "ResourceQuota",
            "resourcequotas",
            true,
            true,
            false,
            &["quota"],
        ),
        all(scaled(builtin(
            "apps",
            "v1",
            "Deployment",
            "deployments",
            true,
            true,
            true,
            &["deploy"],
        ))),
        all(scaled(builtin(
            "apps",
            "v1",
            "StatefulSet",
            "statefulsets",
            true,
            true,
            true,
            &["sts"],
        ))),
        all(scaled(builtin(
            "apps",
            "v1",
            "ReplicaSet",
            "replicasets",
            true,
            true,
            true,
            &["rs"],
        ))),
        all(builtin(
            "apps",
            "v1",
            "DaemonSet",
            "daemonsets",
            true,
            true,
            true,
            &["ds"],
        )),
        builtin(
            "apps",
            "v1",
            "ControllerRevision",
            "controllerrevisions",
            true,
            false,
            false,
            &[],
        ),
        all(builtin(
            "autoscaling",
            "v2",
            "HorizontalPodAutoscaler",
            "horizontalpodautoscalers",
            true,
            true,
            true,
            &["hpa"],
        )),
        builtin(
            "policy",
            "v1",
            "PodDisruptionBudget",
            "poddisruptionbudgets",
            true,
            true,
            true,
            &["pdb"],
        ),
        builtin(
            "networking.k8s.io",
            "v1",
            "NetworkPolicy",
            "networkpolicies",
            true,
            false,
            true,
            &["netpol"],
        ),
        builtin(
            "networking.k8s.io",
            "v1",
            "Ingress",
            "ingresses",
            true,
            true,
            true,
            &["ing"],
        ),
        builtin(
            "networking.k8s.io",
            "v1",
            "IngressClass",
            "ingressclasses",
            false,
            false,
            true,
            &[],
        ),
        all(builtin("batch", "v1", "Job", "jobs", true, true, true, &[])),
        all(builtin(
            "batch",
            "v1",
            "CronJob",
            "cronjobs",
            true,
            true,
            true,
            &["cj"],
        )),
        builtin(
            "coordination.k8s.io",
            "v1",
            "Lease",
            "leases",
            true,
            false,
            false,
            &[],
        ),
        builtin(
            "discovery.k8s.io",
            "v1",
            "EndpointSlice",
            "endpointslices",
            true,
            false,
            false,
            &[],
        ),
        builtin(
            "storage.k8s.io",
            "v1",
            "StorageClass",
            "storageclasses",
            false,
            false,
            false,
            &["sc"],
        ),
        builtin(
            "scheduling.k8s.io",
            "v1",
            "PriorityClass",
            "priorityclasses",
            false,
            false,
            false,
            &["pc"],
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "Role",
            "roles",
            true,
            false,
            false,
            &[],
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "RoleBinding",
            "rolebindings",
            true,
            false,
            false,
            &[],
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRole",
            "clusterroles",
            false,
            false,
            false,
            &[],
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRoleBinding",
            "clusterrolebindings",
            false,
            false,
            false,
            &[],
        ),
        crd,
    ]
}

/// The metrics API's resources (served only when enabled; computed, read-only).
pub(crate) fn metrics_resources() -> Vec<ResourceType> {
    let mut pods = builtin(
        "metrics.k8s.io",
        "v1beta1",
        "PodMetrics",
        "pods",
        true,
        false,
        false,
        &[],
    );
    pods.singular = String::new();
    pods.verbs = vec!["get", "list"];
    let mut nodes = builtin(
        "metrics.k8s.io",
        "v1beta1",
        "NodeMetrics",
        "nodes",
        false,
        false,
        false,
        &[],
    );
    nodes.singular = String::new();
    nodes.verbs = vec!["get", "list"];
    vec![pods, nodes]
}

/// Every served resource, by (group, version, plural).
#[derive(Debug, Clone)]
pub(crate) struct Registry {
    resources: BTreeMap<(String, String, String), Arc<ResourceType>>,
    /// Groups in the order `/apis` lists them (built-ins first).
    group_order: Vec<String>,
}

impl Registry {
    pub(crate) fn new() -> Self {
        let mut registry = Self {
            resources: BTreeMap::new(),
            group_order: Vec::new(),
        };
        for rt in builtins() {
            registry.insert(rt);
        }
        registry
    }

    pub(crate) fn insert(&mut self, rt: ResourceType) {
        if !rt.group.is_empty() && !self.group_order.contains(&rt.group) {
            self.group_order.push(rt.group.clone());
        }
        self.resources.insert(
            (rt.group.clone(), rt.version.clone(), rt.plural.clone()),
            Arc::new(rt),
        );
    }

    /// Removes every version of `group`/`plural`.
    pub(crate) fn remove(&mut self, group: &str, plural: &str) {
        self.resources
            .retain(|(g, _, p), _| !(g == group && p == plural));
        if !self.resources.keys().any(|(g, _, _)| g == group) {
            self.group_order.retain(|g| g != group);
        }
    }

    pub(crate) fn get(
        &self,
        group: &str,
        version: &str,
        plural: &str,
    ) -> Option<Arc<ResourceType>> {
        self.resources
            .get(&(group.to_owned(), version.to_owned(), plural.to_owned()))
            .cloned()
    }

    /// The resource of `kind` in `api_version`.
    pub(crate) fn by_kind(&self, api_version: &str, kind: &str) -> Option<Arc<ResourceType>> {
        let (group, version) = split_api_version(api_version);
        self.resources
            .iter()
            .find(|((g, v, _), rt)| g == group && v == version && rt.kind == kind)
            .map(|(_, rt)| Arc::clone(rt))
    }

    /// Any served version of the resource stored under `store_key`.
    pub(crate) fn by_store(&self, store_key: &str) -> Option<Arc<ResourceType>> {
        let (group, plural) = store_key.split_once('/')?;
        self.resources
            .iter()
            .find(|((g, _, p), _)| g == group && p == plural)
            .map(|(_, rt)| Arc::clone(rt))
    }

    /// Every resource (each version).
    pub(crate) fn all(&self) -> impl Iterator<Item = &Arc<ResourceType>> {
        self.resources.values()
    }

    /// The versions served for `group`, preferred (highest) first.
    fn versions(&self, group: &str) -> Vec<String> {
        let mut versions: Vec<String> = self
            .resources
            .keys()
            .filter(|(g, _, _)| g == group)
            .map(|(_, v, _)| v.clone())
            .collect();
        versions.dedup();
        versions.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        versions.dedup();
        versions
    }

    fn groups(&self, metrics: bool) -> Vec<String> {
        let mut groups = self.group_order.clone();
        if metrics {
            groups.push("metrics.k8s.io".to_owned());
        }
        groups
    }

    fn resources_of(&self, group: &str, version: &str, metrics: bool) -> Vec<ResourceType> {
        if group == "metrics.k8s.io" {
            return if metrics && version == "v1beta1" {
                metrics_resources()
            } else {
                Vec::new()
            };
        }
        self.resources
            .iter()
            .filter(|((g, v, _), _)| g == group && v == version)
            .map(|(_, rt)| (**rt).clone())
            .collect()
    }

    /// `GET /api`.
    pub(crate) fn core_versions(&self, server: &str) -> Value {
        json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server}],
        })
    }

    fn group_doc(&self, group: &str) -> Value {
        let versions: Vec<Value> = self
            .versions(group)
            .iter()
            .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
            .collect();
        let preferred = versions.first().cloned().unwrap_or(Value::Null);
        json!({"name": group, "versions": versions, "preferredVersion": preferred})
    }

    /// `GET /apis`.
    pub(crate) fn group_list(&self, metrics: bool) -> Value {
        let groups: Vec<Value> = self
            .groups(metrics)
            .iter()
            .map(|g| {
                if g == "metrics.k8s.io" {
                    metrics_group_doc()
                } else {
                    self.group_doc(g)
                }
            })
            .collect();
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
    }

    /// `GET /apis/{group}`, if served.
    pub(crate) fn group(&self, group: &str, metrics: bool) -> Option<Value> {
        if group == "metrics.k8s.io" {
            return metrics.then(|| {
                let mut doc = metrics_group_doc();
                doc["kind"] = json!("APIGroup");
                doc["apiVersion"] = json!("v1");
                doc
            });
        }
        if !self.group_order.iter().any(|g| g == group) {
            return None;
        }
        let mut doc = self.group_doc(group);
        doc["kind"] = json!("APIGroup");
        doc["apiVersion"] = json!("v1");
        Some(doc)
    }

    /// `GET /api/v1`, `GET /apis/{group}/{version}`, if served.
    pub(crate) fn resource_list(&self, group: &str, version: &str, metrics: bool) -> Option<Value> {
        let resources = self.resources_of(group, version, metrics);
        if resources.is_empty() {
            return None;
        }
        let entries: Vec<Value> = resources
            .iter()
            .flat_map(ResourceType::discovery_entries)
            .collect();
        let group_version = if group.is_empty() {
            version.to_owned()
        } else {
            format!("{group}/{version}")
        };
        Some(json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": group_version,
            "resources": entries,
        }))
    }

    /// Aggregated discovery (`apidiscovery.k8s.io/v2`) for `/api` (core)
    /// or `/apis` (every group).
    pub(crate) fn aggregated(&self, core: bool, metrics: bool) -> Value {
        let groups = if core {
            vec![String::new()]
        } else {
            self.groups(metrics)
        };
        let items: Vec<Value> = groups
            .iter()
            .map(|group| {
                let versions = if group == "metrics.k8s.io" {
                    vec!["v1beta1".to_owned()]
                } else if group.is_empty() {
                    vec!["v1".to_owned()]
                } else {
                    self.versions(group)
                };
                let versions: Vec<Value> = versions
                    .iter()
                    .map(|v| {
                        let resources: Vec<Value> = self
                            .resources_of(group, v, metrics)
                            .iter()
                            .map(ResourceType::aggregated)
                            .collect();
                        json!({"version": v, "resources": resources, "freshness": "Current"})
                    })
                    .collect();
                let mut metadata = json!({"creationTimestamp": null});
                if !group.is_empty() {
                    metadata["name"] = json!(group);
                }
                json!({"metadata": metadata, "versions": versions})
            })
            .collect();
        json!({
            "kind": "APIGroupDiscoveryList",
            "apiVersion": "apidiscovery.k8s.io/v2",
            "metadata": {},
            "items": items,
        })
    }
}

fn metrics_group_doc() -> Value {
    let version = json!({"groupVersion": "metrics.k8s.io/v1beta1", "version": "v1beta1"});
    json!({"name": "metrics.k8s.io", "versions": [version], "preferredVersion": version})
}

/// `apps/v1` → (`apps`, `v1`); `v1` → (``, `v1`).
pub(crate) fn split_api_version(api_version: &str) -> (&str, &str) {
    api_version.split_once('/').unwrap_or(("", api_version))
}

/// Kubernetes' version ordering: GA > beta > alpha, higher numbers first.
pub(crate) fn version_priority(version: &str) -> (u8, u32, u32) {
    let Some(rest) = version.strip_prefix('v') else {
        return (0, 0, 0);
    };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let Ok(major) = digits.parse::<u32>() else {
        return (0, 0, 0);
    };
    let tail = &rest[digits.len()..];
    if tail.is_empty() {
        return (3, major, 0);
    }
    let (level, num) = if let Some(n) = tail.strip_prefix("beta") {
        (2, n)
    } else if let Some(n) = tail.strip_prefix("alpha") {
        (1, n)
    } else {
        return (0, 0, 0);
    };
    match num.parse::<u32>() {
        Ok(minor) => (level, major, minor),
        Err(_) => (0, 0, 0),
    }
}

/// A resource type for a CustomResourceDefinition's served version.
#[allow(clippy::too_many_arguments)]
pub(crate) fn custom(
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
    singular: &str,
    namespaced: bool,
    status: bool,
    scale: bool,
    short_names: Vec<String>,
    categories: Vec<String>,
) -> ResourceType {
    ResourceType {
        group: group.to_owned(),
        version: version.to_owned(),
        kind: kind.to_owned(),
        plural: plural.to_owned(),
        singular: if singular.is_empty() {
            kind.to_ascii_lowercase()
        } else {
            singular.to_owned()
        },
        namespaced,
        status,
        scale,
        short_names,
        categories,
        builtin: false,
        generation: true,
        names: NameRule::PathSegment,
        verbs: ALL_VERBS.to_vec(),
        extra_subresources: Vec::new(),
    }
}
