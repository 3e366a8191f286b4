//! Kind-specific behaviour of writes: the defaults the API server fills in,
//! what creation resets or allocates (a Service's cluster IP, a Secret's
//! `stringData`, a CustomResourceDefinition's kinds) and the `Scale` view.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};

use super::registry::{self, ResourceType};
use super::state::State;

/// Stores whose changes a fake controller reconciles.
pub(crate) fn has_controller(store: &str) -> bool {
    matches!(
        store,
        "apps/deployments"
            | "apps/replicasets"
            | "apps/statefulsets"
            | "/pods"
            | "/namespaces"
            | "/persistentvolumeclaims"
            | "apiextensions.k8s.io/customresourcedefinitions"
    )
}

/// The status a new object starts with (clients cannot create status
/// through the main resource).
pub(crate) fn reset_status(rt: &ResourceType, object: &mut Value) {
    let status = match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "pods") => json!({"phase": "Pending", "qosClass": qos_class(&object["spec"])}),
        ("", "namespaces") => json!({"phase": "Active"}),
        ("", "persistentvolumeclaims") => json!({"phase": "Pending"}),
        ("", "services") => json!({"loadBalancer": {}}),
        // Nodes may be created with their status.
        ("", "nodes") => return,
        _ if !rt.builtin => {
            if let Some(m) = object.as_object_mut() {
                m.remove("status");
            }
            return;
        }
        _ => json!({}),
    };
    object["status"] = status;
}

/// What creation does besides defaulting.
pub(crate) fn on_create(state: &mut State, rt: &ResourceType, object: &mut Value) {
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "services") => {
            let Some(spec) = field(object, "spec") else {
                return;
            };
            if spec["type"].as_str() != Some("ExternalName") {
                let ip = match spec["clusterIP"].as_str() {
                    None | Some("") => state.allocate_service_ip(),
                    Some(ip) => ip.to_owned(),
                };
                spec["clusterIP"] = json!(ip);
                spec["clusterIPs"] = json!([ip]);
            }
        }
        ("", "secrets") => string_data(object),
        ("", "namespaces") => {
            let name = object["metadata"]["name"].clone();
            if let Some(labels) = field(&mut object["metadata"], "labels") {
                labels["kubernetes.io/metadata.name"] = name;
            }
            if let Some(spec) = field(object, "spec") {
                spec["finalizers"] = json!(["kubernetes"]);
            }
        }
        ("", "pods") => {
            let Some(spec) = field(object, "spec") else {
                return;
            };
            if spec["serviceAccountName"]
                .as_str()
                .is_none_or(str::is_empty)
            {
                spec["serviceAccountName"] = json!("default");
            }
            spec["serviceAccount"] = spec["serviceAccountName"].clone();
            set_default(spec, "enableServiceLinks", json!(true));
            set_default(spec, "priority", json!(0));
            set_default(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
        }
        ("apiextensions.k8s.io", "customresourcedefinitions") => register_crd(state, object),
        _ => {}
    }
}

/// What an update does besides defaulting.
pub(crate) fn on_update(state: &mut State, rt: &ResourceType, old: &Value, new: &mut Value) {
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "services") => {
            let Some(spec) = field(new, "spec") else {
                return;
            };
            for name in ["clusterIP", "clusterIPs"] {
                if spec.get(name).is_none_or(|v| v.is_null() || v == "")
                    && let Some(v) = old["spec"].get(name)
                {
                    spec[name] = v.clone();
                }
            }
        }
        ("", "secrets") => string_data(new),
        ("", "namespaces") => {
            let name = new["metadata"]["name"].clone();
            if let Some(labels) = field(&mut new["metadata"], "labels") {
                labels["kubernetes.io/metadata.name"] = name;
            }
            let Some(spec) = field(new, "spec") else {
                return;
            };
            if spec.get("finalizers").is_none() {
                spec["finalizers"] = old["spec"]["finalizers"].clone();
            }
        }
        ("", "pods") => {
            let Some(spec) = field(new, "spec") else {
                return;
            };
            for name in [
                "nodeName",
                "serviceAccountName",
                "serviceAccount",
                "hostname",
                "subdomain",
            ] {
                if spec.get(name).is_none()
                    && let Some(v) = old["spec"].get(name)
                {
                    spec[name] = v.clone();
                }
            }
        }
        ("apiextensions.k8s.io", "customresourcedefinitions") => register_crd(state, new),
        _ => {}
    }
}

/// `stringData` is write-only: merged into `data` (base64).
fn string_data(secret: &mut Value) {
    let Some(string_data) = secret.as_object_mut().and_then(|m| m.remove("stringData")) else {
        return;
    };
    let (Some(map), Some(data)) = (string_data.as_object(), field(secret, "data")) else {
        return;
    };
    for (k, v) in map {
        let encoded = STANDARD.encode(v.as_str().unwrap_or_default());
        data[k] = json!(encoded);
    }
}

/// Registers the kinds a CustomResourceDefinition serves and fills in its
/// status (names accepted, established).
fn register_crd(state: &mut State, crd: &mut Value) {
    let spec = crd["spec"].clone();
    let group = spec["group"].as_str().unwrap_or_default().to_owned();
    let names = &spec["names"];
    let plural = names["plural"].as_str().unwrap_or_default().to_owned();
    let kind = names["kind"].as_str().unwrap_or_default().to_owned();
    if group.is_empty() || plural.is_empty() || kind.is_empty() {
        return;
    }
    let namespaced = spec["scope"].as_str() != Some("Cluster");
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    state.registry.remove(&group, &plural);
    let mut stored = Vec::new();
    for version in spec["versions"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let Some(name) = version["name"].as_str() else {
            continue;
        };
        if version["storage"] == json!(true) {
            stored.push(name.to_owned());
        }
        if version["served"] == json!(false) {
            continue;
        }
        let subresources = &version["subresources"];
        state.registry.insert(registry::custom(
            &group,
            name,
            &kind,
            &plural,
            names["singular"].as_str().unwrap_or_default(),
            namespaced,
            subresources.get("status").is_some(),
            subresources.get("scale").is_some(),
            strings(&names["shortNames"]),
            strings(&names["categories"]),
        ));
    }
    let now = super::time::now();
    let mut accepted = names.clone();
    if accepted.get("singular").is_none() {
        accepted["singular"] = json!(kind.to_ascii_lowercase());
    }
    if accepted.get("listKind").is_none() {
        accepted["listKind"] = json!(format!("{kind}List"));
    }
    let mut stored_versions = strings(&crd["status"]["storedVersions"]);
    for v in stored {
        if !stored_versions.contains(&v) {
            stored_versions.push(v);
        }
    }
    let keep_time = |t: &str| {
        crd["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == t))
            .and_then(|c| c["lastTransitionTime"].as_str())
            .unwrap_or(&now)
            .to_owned()
    };
    crd["status"] = json!({
        "acceptedNames": accepted,
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found", "lastTransitionTime": keep_time("NamesAccepted")},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted", "lastTransitionTime": keep_time("Established")},
        ],
        "storedVersions": stored_versions,
    });
}

fn set_default(object: &mut Value, name: &str, value: Value) {
    if let Some(map) = object.as_object_mut() {
        let slot = map.entry(name).or_insert(Value::Null);
        if slot.is_null() {
            *slot = value;
        }
    }
}

/// The object at `key` of the object `v` (created when missing or null);
/// `None` when either is something else, so client input of the wrong
/// shape is left alone rather than panicking.
pub(crate) fn field<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    if v.is_null() {
        *v = json!({});
    }
    let child = v.as_object_mut()?.entry(key).or_insert(Value::Null);
    if child.is_null() {
        *child = json!({});
    }
    child.is_object().then_some(child)
}

/// The defaults the API server fills in (the ones clients observe most).
pub(crate) fn defaults(rt: &ResourceType, object: &mut Value) {
    if !rt.builtin {
        return;
    }
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("apps", "deployments") => {
            let Some(spec) = field(object, "spec") else {
                return;
            };
            set_default(spec, "replicas", json!(1));
            set_default(spec, "revisionHistoryLimit", json!(10));
            set_default(spec, "progressDeadlineSeconds", json!(600));
            if let Some(strategy) = field(spec, "strategy") {
                set_default(strategy, "type", json!("RollingUpdate"));
                if strategy["type"] == "RollingUpdate"
                    && let Some(rolling) = field(strategy, "rollingUpdate")
                {
                    set_default(rolling, "maxSurge", json!("25%"));
                    set_default(rolling, "maxUnavailable", json!("25%"));
                }
            }
            template_defaults(spec);
        }
        ("apps", "replicasets") => {
            let Some(spec) = field(object, "spec") else {
                return;
            };
            set_default(spec, "replicas", json!(1));
            template_defaults(spec);
        }
        ("apps", "statefulsets") => {
            let Some(spec) = field(object, "spec") else {
                return;
            };
            set_default(spec, "replicas", json!(1));
            set_default(spec, "podManagementPolicy", json!("OrderedReady"));
            set_default(spec, "revisionHistoryLimit", json!(10));
            if let Some(strategy) = field(spec, "updateStrategy") {
                set_default(strategy, "type", json!("RollingUpdate"));
                if strategy["type"] == "RollingUpdate"
                    && let Some(rolling) = field(strategy, "rollingUpdate")
                {
                    set_default(rolling, "partition", json!(0));
                }
            }
            if let Some(retention) = field(spec, "persistentVolumeClaimRetentionPolicy") {
                set_default(retention, "whenDeleted", json!("Retain"));
                set_default(retention, "whenScaled", json!("Retain"));
            }
            if let Some(claims) = spec
                .get_mut("volumeClaimTemplates")
                .and_then(Value::as_array_mut)
            {
                for claim in claims {
                    set_default(claim, "apiVersion", json!("v1"));
                    set_default(claim, "kind", json!("PersistentVolumeClaim"));
                    if let Some(claim_spec) = field(claim, "spec") {
                        set_default(claim_spec, "volumeMode", json!("Filesystem"));
                    }
                    set_default(claim, "status", json!({"phase": "Pending"}));
                }
            }
            template_defaults(spec);
        }
        ("apps", "daemonsets") | ("batch", "jobs") => {
            if let Some(spec) = field(object, "spec") {
                template_defaults(spec);
            }
        }
        ("batch", "cronjobs") => {
            if let Some(job) = field(object, "spec")
                .and_then(|s| field(s, "jobTemplate"))
                .and_then(|j| field(j, "spec"))
            {
                template_defaults(job);
            }
        }
        ("", "pods") => {
            if let Some(spec) = field(object, "spec") {
                pod_spec_defaults(spec);
            }
        }
        ("", "services") => {
            let Some(spec) = field(object, "spec") else {
                return;
            };
            set_default(spec, "type", json!("ClusterIP"));
            set_default(spec, "sessionAffinity", json!("None"));
            if spec["type"] != "ExternalName" {
                set_default(spec, "internalTrafficPolicy", json!("Cluster"));
                set_default(spec, "ipFamilies", json!(["IPv4"]));
                set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
            }
            if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                for port in ports {
                    set_default(port, "protocol", json!("TCP"));
                    let number = port.get("port").cloned().unwrap_or(Value::Null);
                    set_default(port, "targetPort", number);
                }
            }
        }
        ("", "persistentvolumeclaims") => {
            if let Some(spec) = field(object, "spec") {
                set_default(spec, "volumeMode", json!("Filesystem"));
            }
        }
        ("", "secrets") => set_default(object, "type", json!("Opaque")),
        _ => {}
    }
}

/// Pod defaults of the `template` of a workload's `spec`.
fn template_defaults(spec: &mut Value) {
    if let Some(pod) = field(spec, "template").and_then(|t| field(t, "spec")) {
        pod_spec_defaults(pod);
    }
}

fn pod_spec_defaults(spec: &mut Value) {
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "securityContext", json!({}));
    for list in ["containers", "initContainers"] {
        if let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for c in containers {
                container_defaults(c);
            }
        }
    }
    if let Some(volumes) = spec.get_mut("volumes").and_then(Value::as_array_mut) {
        for v in volumes {
            for source in ["configMap", "secret"] {
                if let Some(s) = v.get_mut(source).filter(|s| s.is_object()) {
                    set_default(s, "defaultMode", json!(420));
                }
            }
        }
    }
}

fn container_defaults(c: &mut Value) {
    if !c.is_object() {
        return;
    }
    set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(c, "terminationMessagePolicy", json!("File"));
    let image = c["image"].as_str().unwrap_or_default();
    let last = image.rsplit('/').next().unwrap_or_default();
    let policy = if !image.contains('@') && (!last.contains(':') || last.ends_with(":latest")) {
        "Always"
    } else {
        "IfNotPresent"
    };
    set_default(c, "imagePullPolicy", json!(policy));
    set_default(c, "resources", json!({}));
    if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports {
            set_default(p, "protocol", json!("TCP"));
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = c.get_mut(probe).filter(|p| p.is_object()) {
            set_default(p, "timeoutSeconds", json!(1));
            set_default(p, "periodSeconds", json!(10));
            set_default(p, "successThreshold", json!(1));
            set_default(p, "failureThreshold", json!(3));
            if let Some(http) = p.get_mut("httpGet").filter(|h| h.is_object()) {
                set_default(http, "scheme", json!("HTTP"));
            }
        }
    }
    if let Some(env) = c.get_mut("env").and_then(Value::as_array_mut) {
        for e in env {
            if let Some(field_ref) = e
                .pointer_mut("/valueFrom/fieldRef")
                .filter(|f| f.is_object())
            {
                set_default(field_ref, "apiVersion", json!("v1"));
            }
        }
    }
}

/// A pod's QoS class from its containers' requests and limits.
pub(crate) fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .filter_map(|l| spec[*l].as_array())
        .flatten()
        .collect();
    let mut any = false;
    let mut guaranteed = !containers.is_empty();
    for c in containers {
        let requests = c.pointer("/resources/requests").and_then(Value::as_object);
        let limits = c.pointer("/resources/limits").and_then(Value::as_object);
        if requests.is_some_and(|r| !r.is_empty()) || limits.is_some_and(|l| !l.is_empty()) {
            any = true;
        }
        for resource in ["cpu", "memory"] {
            let limit = limits.and_then(|l| l.get(resource));
            let request = requests.and_then(|r| r.get(resource)).or(limit);
            if limit.is_none() || request != limit {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// A label selector object as the string form (`app=web,tier in (a,b)`).
pub(crate) fn selector_string(selector: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(labels) = selector["matchLabels"].as_object() {
        for (k, v) in labels {
            parts.push(format!("{k}={}", v.as_str().unwrap_or_default()));
        }
    }
    if let Some(expressions) = selector["matchExpressions"].as_array() {
        for e in expressions {
            let key = e["key"].as_str().unwrap_or_default();
            let values: Vec<&str> = e["values"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            match e["operator"].as_str().unwrap_or_default() {
                "In" => parts.push(format!("{key} in ({})", values.join(","))),
                "NotIn" => parts.push(format!("{key} notin ({})", values.join(","))),
                "Exists" => parts.push(key.to_owned()),
                _ => parts.push(format!("!{key}")),
            }
        }
    }
    parts.join(",")
}

/// The `autoscaling/v1` `Scale` of a scalable object.
pub(crate) fn scale_of(rt: &ResourceType, object: &Value) -> Value {
    let meta = &object["metadata"];
    let mut metadata = Map::new();
    for field in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(v) = meta.get(field) {
            metadata.insert(field.to_owned(), v.clone());
        }
    }
    let _ = rt;
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": metadata,
        "spec": {"replicas": object.pointer("/spec/replicas").cloned().unwrap_or(json!(0))},
        "status": {
            "replicas": object.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector_string(&object["spec"]["selector"]),
        },
    })
}
