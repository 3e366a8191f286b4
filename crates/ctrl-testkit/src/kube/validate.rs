//! Validation as the API server does it: object names, label and
//! annotation keys and values, and the kind-specific rules clients run into
//! most (selectors, containers, immutable fields).

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::registry::{NameRule, ResourceType};
use super::selector::LabelSelector;
use super::status::FieldError;

const DNS1123_SUBDOMAIN: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1123_LABEL: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1035_LABEL: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
const QUALIFIED_NAME: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

fn is_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

pub(crate) fn dns1123_label(s: &str) -> Result<(), String> {
    if s.len() > 63 {
        return Err("must be no more than 63 characters".to_owned());
    }
    if is_label(s) {
        Ok(())
    } else {
        Err(DNS1123_LABEL.to_owned())
    }
}

pub(crate) fn dns1123_subdomain(s: &str) -> Result<(), String> {
    if s.len() > 253 {
        return Err("must be no more than 253 characters".to_owned());
    }
    if !s.is_empty() && s.split('.').all(is_label) {
        Ok(())
    } else {
        Err(DNS1123_SUBDOMAIN.to_owned())
    }
}

fn dns1035_label(s: &str) -> Result<(), String> {
    if s.len() > 63 {
        return Err("must be no more than 63 characters".to_owned());
    }
    if is_label(s) && s.as_bytes()[0].is_ascii_lowercase() {
        Ok(())
    } else {
        Err(DNS1035_LABEL.to_owned())
    }
}

fn is_qualified_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// A label or annotation key: `[prefix/]name`.
pub(crate) fn qualified_name(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            return Err("prefix part must be non-empty".to_owned());
        }
        if let Err(why) = dns1123_subdomain(prefix) {
            return Err(format!("prefix part {why}"));
        }
    }
    if name.is_empty() {
        return Err("name part must be non-empty".to_owned());
    }
    if name.len() > 63 {
        return Err("name part must be no more than 63 characters".to_owned());
    }
    if !is_qualified_part(name) {
        return Err(QUALIFIED_NAME.to_owned());
    }
    Ok(())
}

pub(crate) fn label_value(value: &str) -> Result<(), String> {
    if value.len() > 63 {
        return Err("must be no more than 63 characters".to_owned());
    }
    if value.is_empty() || is_qualified_part(value) {
        Ok(())
    } else {
        Err(LABEL_VALUE.to_owned())
    }
}

/// Validates an object's metadata: name (per the kind's rule), labels,
/// annotations.
pub(crate) fn metadata(rt: &ResourceType, object: &Value, errors: &mut Vec<FieldError>) {
    let meta = &object["metadata"];
    let name = meta["name"].as_str().unwrap_or_default();
    let name_check = match rt.names {
        NameRule::Subdomain => dns1123_subdomain(name),
        NameRule::Label => dns1123_label(name),
        NameRule::Dns1035 => dns1035_label(name),
        NameRule::PathSegment => {
            if name == "." || name == ".." {
                Err(format!("may not be '{name}'"))
            } else if name.contains('/') || name.contains('%') {
                Err("may not contain '/'".to_owned())
            } else {
                Ok(())
            }
        }
    };
    if let Err(why) = name_check {
        errors.push(FieldError::invalid("metadata.name", json!(name), why));
    }
    labels_at(&meta["labels"], "metadata.labels", errors);
    if let Some(annotations) = meta["annotations"].as_object() {
        let mut total = 0;
        for (k, v) in annotations {
            total += k.len() + v.as_str().map_or(0, str::len);
            if let Err(why) = qualified_name(&k.to_ascii_lowercase()) {
                errors.push(FieldError::invalid("metadata.annotations", json!(k), why));
            }
        }
        if total > 256 * 1024 {
            errors.push(FieldError {
                field: "metadata.annotations".to_owned(),
                kind: super::status::FieldErrorKind::TooLong(256 * 1024),
                detail: String::new(),
            });
        }
    }
}

fn labels_at(labels: &Value, field: &str, errors: &mut Vec<FieldError>) {
    if let Some(labels) = labels.as_object() {
        for (k, v) in labels {
            if let Err(why) = qualified_name(k) {
                errors.push(FieldError::invalid(field, json!(k), why));
            }
            match v.as_str() {
                Some(value) => {
                    if let Err(why) = label_value(value) {
                        errors.push(FieldError::invalid(field, json!(value), why));
                    }
                }
                None => errors.push(FieldError::invalid(field, v.clone(), "must be a string")),
            }
        }
    }
}

/// Kind-specific validation of a new object (`old`: the stored one, on
/// updates).
pub(crate) fn object(
    rt: &ResourceType,
    new: &Value,
    old: Option<&Value>,
    errors: &mut Vec<FieldError>,
) {
    if !rt.builtin {
        return;
    }
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "pods") => {
            pod_spec(&new["spec"], "spec", errors);
            if let Some(old) = old {
                pod_update(&old["spec"], &new["spec"], errors);
            }
        }
        ("apps", "deployments" | "replicasets" | "statefulsets" | "daemonsets") => {
            workload(rt, new, old, errors);
        }
        ("", "services") => service(new, old, errors),
        ("apiextensions.k8s.io", "customresourcedefinitions") => crd(new, errors),
        ("", "persistentvolumeclaims") => {
            if let Some(old) = old {
                let spec = |o: &Value| {
                    let mut s = o["spec"].clone();
                    if let Some(m) = s.as_object_mut() {
                        m.remove("resources");
                        m.remove("volumeAttributesClassName");
                    }
                    s
                };
                if old.get("spec").is_some() && spec(old) != spec(new) {
                    errors.push(FieldError::forbidden(
                        "spec",
                        "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
                    ));
                }
            }
        }
        _ => {}
    }
}

fn workload(rt: &ResourceType, new: &Value, old: Option<&Value>, errors: &mut Vec<FieldError>) {
    let spec = &new["spec"];
    let selector = &spec["selector"];
    if selector.is_null() {
        errors.push(FieldError::required("spec.selector", ""));
    } else if selector
        .get("matchLabels")
        .and_then(Value::as_object)
        .is_none_or(serde_json::Map::is_empty)
        && selector
            .get("matchExpressions")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty)
    {
        errors.push(FieldError::invalid(
            "spec.selector",
            selector.clone(),
            "empty selector is invalid for deployment",
        ));
    } else {
        labels_at(
            &selector["matchLabels"],
            "spec.selector.matchLabels",
            errors,
        );
        let template_labels = spec.pointer("/template/metadata/labels");
        if !LabelSelector::from_object(selector).matches_labels(template_labels) {
            errors.push(FieldError::invalid(
                "spec.template.metadata.labels",
                template_labels.cloned().unwrap_or(Value::Null),
                "`selector` does not match template `labels`",
            ));
        }
    }
    if let Some(replicas) = spec.get("replicas")
        && replicas
            .as_i64()
            .is_none_or(|r| r < 0 || r > i64::from(i32::MAX))
    {
        errors.push(FieldError::invalid(
            "spec.replicas",
            replicas.clone(),
            "must be greater than or equal to 0",
        ));
    }
    labels_at(
        spec.pointer("/template/metadata/labels")
            .unwrap_or(&Value::Null),
        "spec.template.metadata.labels",
        errors,
    );
    pod_spec(&spec["template"]["spec"], "spec.template.spec", errors);
    let Some(old) = old else { return };
    if old["spec"]["selector"] != new["spec"]["selector"] {
        errors.push(FieldError::immutable(
            "spec.selector",
            new["spec"]["selector"].clone(),
        ));
    }
    if rt.plural == "statefulsets" {
        let frozen = |o: &Value| {
            let mut s = o["spec"].clone();
            if let Some(m) = s.as_object_mut() {
                for allowed in [
                    "replicas",
                    "ordinals",
                    "template",
                    "updateStrategy",
                    "persistentVolumeClaimRetentionPolicy",
                    "minReadySeconds",
                ] {
                    m.remove(allowed);
                }
            }
            s
        };
        if frozen(old) != frozen(new) {
            errors.push(FieldError::forbidden(
                "spec",
                "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
            ));
        }
    }
}

/// A pod spec (of a pod or a template).
fn pod_spec(spec: &Value, field: &str, errors: &mut Vec<FieldError>) {
    let containers = spec["containers"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if containers.is_empty() {
        errors.push(FieldError::required(format!("{field}.containers"), ""));
    }
    let mut names = BTreeSet::new();
    for (list, items) in [
        (
            "initContainers",
            spec["initContainers"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default(),
        ),
        ("containers", containers),
    ] {
        for (i, c) in items.iter().enumerate() {
            let at = format!("{field}.{list}[{i}]");
            match c["name"].as_str() {
                None | Some("") => errors.push(FieldError::required(format!("{at}.name"), "")),
                Some(name) => {
                    if let Err(why) = dns1123_label(name) {
                        errors.push(FieldError::invalid(format!("{at}.name"), json!(name), why));
                    }
                    if !names.insert(name.to_owned()) {
                        errors.push(FieldError::duplicate(format!("{at}.name"), json!(name)));
                    }
                }
            }
            if c["image"].as_str().is_none_or(|i| i.trim().is_empty()) {
                errors.push(FieldError::required(format!("{at}.image"), ""));
            }
            if let Some(env) = c["env"].as_array() {
                for (j, e) in env.iter().enumerate() {
                    if e["name"].as_str().is_none_or(str::is_empty) {
                        errors.push(FieldError::required(format!("{at}.env[{j}].name"), ""));
                    }
                }
            }
        }
    }
    if let Some(policy) = spec["restartPolicy"].as_str()
        && !matches!(policy, "Always" | "OnFailure" | "Never")
    {
        errors.push(FieldError::not_supported(
            format!("{field}.restartPolicy"),
            json!(policy),
            &["Always", "OnFailure", "Never"],
        ));
    }
}

/// What a pod update may change: images, `activeDeadlineSeconds`, added
/// tolerations — and nothing else in `spec`.
fn pod_update(old: &Value, new: &Value, errors: &mut Vec<FieldError>) {
    let strip = |spec: &Value| {
        let mut spec = spec.clone();
        for list in ["containers", "initContainers"] {
            if let Some(items) = spec.get_mut(list).and_then(Value::as_array_mut) {
                for c in items {
                    if let Some(m) = c.as_object_mut() {
                        m.remove("image");
                    }
                }
            }
        }
        if let Some(m) = spec.as_object_mut() {
            m.remove("activeDeadlineSeconds");
            m.remove("tolerations");
            m.remove("terminationGracePeriodSeconds");
        }
        spec
    };
    if strip(old) != strip(new) {
        errors.push(FieldError::forbidden(
            "spec",
            "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
        ));
    }
}

fn service(new: &Value, old: Option<&Value>, errors: &mut Vec<FieldError>) {
    let spec = &new["spec"];
    let kind = spec["type"].as_str().unwrap_or("ClusterIP");
    if !matches!(
        kind,
        "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName"
    ) {
        errors.push(FieldError::not_supported(
            "spec.type",
            json!(kind),
            &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
        ));
    }
    let headless = spec["clusterIP"].as_str() == Some("None");
    let ports = spec["ports"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if ports.is_empty() && !headless && kind != "ExternalName" {
        errors.push(FieldError::required("spec.ports", ""));
    }
    let mut seen = BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        match p["port"].as_i64() {
            Some(port) if (1..=65535).contains(&port) => {
                let protocol = p["protocol"].as_str().unwrap_or("TCP").to_owned();
                if !seen.insert((port, protocol)) {
                    errors.push(FieldError::duplicate(format!("spec.ports[{i}]"), p.clone()));
                }
            }
            _ => errors.push(FieldError::invalid(
                format!("spec.ports[{i}].port"),
                p["port"].clone(),
                "must be between 1 and 65535, inclusive",
            )),
        }
        if ports.len() > 1 && p["name"].as_str().is_none_or(str::is_empty) {
            errors.push(FieldError::required(format!("spec.ports[{i}].name"), ""));
        }
    }
    if let Some(old) = old {
        let old_ip = &old["spec"]["clusterIP"];
        if old_ip.is_string() && spec["clusterIP"] != *old_ip {
            errors.push(FieldError::invalid(
                "spec.clusterIPs[0]",
                spec["clusterIP"].clone(),
                "may not change once set",
            ));
        }
    }
}

fn crd(new: &Value, errors: &mut Vec<FieldError>) {
    let spec = &new["spec"];
    let group = spec["group"].as_str().unwrap_or_default();
    let plural = spec["names"]["plural"].as_str().unwrap_or_default();
    let name = new["metadata"]["name"].as_str().unwrap_or_default();
    if group.is_empty() {
        errors.push(FieldError::required("spec.group", ""));
    }
    if plural.is_empty() {
        errors.push(FieldError::required("spec.names.plural", ""));
    }
    if spec["names"]["kind"].as_str().is_none_or(str::is_empty) {
        errors.push(FieldError::required("spec.names.kind", ""));
    }
    if !matches!(spec["scope"].as_str(), Some("Namespaced" | "Cluster")) {
        errors.push(FieldError::not_supported(
            "spec.scope",
            spec["scope"].clone(),
            &["Cluster", "Namespaced"],
        ));
    }
    if !group.is_empty() && !plural.is_empty() && name != format!("{plural}.{group}") {
        errors.push(FieldError::invalid(
            "metadata.name",
            json!(name),
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    let versions = spec["versions"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if versions.is_empty() {
        errors.push(FieldError::invalid(
            "spec.versions",
            json!([]),
            "must have exactly one version marked as storage version",
        ));
    } else if versions
        .iter()
        .filter(|v| v["storage"] == json!(true))
        .count()
        != 1
    {
        errors.push(FieldError::invalid(
            "spec.versions",
            spec["versions"].clone(),
            "must have exactly one version marked as storage version",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels() {
        assert!(dns1123_subdomain("web.example-1").is_ok());
        assert!(dns1123_subdomain("Web").is_err());
        assert!(dns1123_subdomain("-a").is_err());
        assert!(dns1123_label("a.b").is_err());
        assert!(dns1035_label("1abc").is_err());
        assert!(dns1035_label("abc-1").is_ok());
        assert!(qualified_name("app.kubernetes.io/name").is_ok());
        assert!(qualified_name("Bad_Key.x").is_ok());
        assert!(qualified_name("/x").is_err());
        assert!(qualified_name("a/b/c").is_err());
        assert!(label_value("").is_ok());
        assert!(label_value("has space").is_err());
        assert!(label_value(&"x".repeat(64)).is_err());
    }
}
