//! Patches: JSON merge patch (RFC 7386), strategic merge patch (merge
//! lists by their patch merge key, `$patch` directives) and JSON patch
//! (RFC 6902); and what the fake knows of list semantics, shared with
//! server-side apply.

use serde_json::{Map, Value};

/// How a list field merges (the OpenAPI `x-kubernetes-list-type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ListType {
    /// Replaced as a whole.
    Atomic,
    /// Scalars, merged as a set.
    Set,
    /// Objects identified by these key fields.
    Map(&'static [&'static str]),
}

/// The list type of field `name` of a built-in kind holding `items`.
pub(crate) fn list_type(name: &str, items: &[Value], builtin: bool) -> ListType {
    if name == "finalizers" {
        return ListType::Set;
    }
    if name == "ownerReferences" {
        return ListType::Map(&["uid"]);
    }
    if !builtin {
        return ListType::Atomic;
    }
    match name {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims"
        | "schedulingGates" => ListType::Map(&["name"]),
        "volumeMounts" => ListType::Map(&["mountPath"]),
        "volumeDevices" => ListType::Map(&["devicePath"]),
        "conditions" => ListType::Map(&["type"]),
        "hostAliases" => ListType::Map(&["ip"]),
        "topologySpreadConstraints" => ListType::Map(&["topologyKey", "whenUnsatisfiable"]),
        "ports" => {
            if items.iter().any(|i| i.get("containerPort").is_some()) {
                ListType::Map(&["containerPort", "protocol"])
            } else if items.iter().any(|i| i.get("port").is_some()) {
                ListType::Map(&["port", "protocol"])
            } else {
                ListType::Atomic
            }
        }
        _ => ListType::Atomic,
    }
}

/// The identity of a map-list element: its key fields (`protocol`
/// defaulting to TCP), as a canonical JSON object.
pub(crate) fn element_key(item: &Value, keys: &[&str]) -> String {
    let mut map = Map::new();
    for k in keys {
        match item.get(*k) {
            Some(v) => {
                map.insert((*k).to_owned(), v.clone());
            }
            None if *k == "protocol" => {
                map.insert("protocol".to_owned(), Value::String("TCP".to_owned()));
            }
            None => {}
        }
    }
    canonical(&Value::Object(map))
}

/// JSON with object keys sorted, for hashing and identity.
pub(crate) fn canonical(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*k).clone()).to_string());
                out.push(':');
                write_canonical(&map[*k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// RFC 7386 JSON merge patch.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(map) = target else { return };
    for (k, v) in patch {
        if v.is_null() {
            map.remove(k);
        } else {
            merge_patch(map.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// A strategic merge patch: a merge patch whose lists of objects with a
/// patch merge key merge element by element, with `$patch: delete|replace`
/// and `$deleteFromPrimitiveList/…`; other directives are accepted and
/// ignored.
pub(crate) fn strategic_merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if patch.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut replaced = Value::Object(patch.clone());
        strip_directives(&mut replaced);
        *target = replaced;
        return;
    }
    if patch.get("$patch").and_then(Value::as_str) == Some("delete") {
        *target = Value::Object(Map::new());
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(map) = target else { return };
    for (k, v) in patch {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(items)), Value::Array(remove)) = (map.get_mut(field), v) {
                items.retain(|i| !remove.contains(i));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        if v.is_null() {
            map.remove(k);
            continue;
        }
        match (map.get_mut(k), v) {
            (Some(Value::Array(current)), Value::Array(items)) => match list_type(k, items, true) {
                ListType::Map(keys) => merge_keyed(current, items, keys),
                ListType::Set => {
                    for item in items {
                        if !current.contains(item) {
                            current.push(item.clone());
                        }
                    }
                }
                ListType::Atomic => {
                    let mut replaced = v.clone();
                    strip_directives(&mut replaced);
                    *current = replaced.as_array().cloned().unwrap_or_default();
                }
            },
            (Some(current), Value::Object(_)) => strategic_merge(current, v),
            _ => {
                let mut value = v.clone();
                strip_directives(&mut value);
                map.insert(k.clone(), value);
            }
        }
    }
}

fn merge_keyed(current: &mut Vec<Value>, items: &[Value], keys: &[&str]) {
    if items
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        let mut replaced: Vec<Value> = items
            .iter()
            .filter(|i| i.get("$patch").is_none())
            .cloned()
            .collect();
        for item in &mut replaced {
            strip_directives(item);
        }
        *current = replaced;
        return;
    }
    for item in items {
        let key = element_key(item, keys);
        let position = current.iter().position(|c| element_key(c, keys) == key);
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (position, delete) {
            (Some(i), true) => {
                current.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => strategic_merge(&mut current[i], item),
            (None, false) => {
                let mut item = item.clone();
                strip_directives(&mut item);
                current.push(item);
            }
        }
    }
}

fn strip_directives(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|k, _| !k.starts_with('$'));
            for v in map.values_mut() {
                strip_directives(v);
            }
        }
        Value::Array(items) => {
            for v in items {
                strip_directives(v);
            }
        }
        _ => {}
    }
}

/// RFC 6902 JSON patch.
pub(crate) fn json_patch(target: &mut Value, patch: &Value) -> Result<(), String> {
    let ops = patch
        .as_array()
        .ok_or("json patch must be an array of operations")?;
    for op in ops {
        let name = op["op"].as_str().ok_or("missing op")?;
        let path = op["path"]
            .as_str()
            .ok_or_else(|| format!("missing path for {name} operation"))?;
        match name {
            "add" => add(
                target,
                path,
                op.get("value").cloned().ok_or("missing value")?,
            )?,
            "remove" => {
                remove(target, path)?;
            }
            "replace" => {
                let value = op.get("value").cloned().ok_or("missing value")?;
                let slot = target.pointer_mut(path).ok_or_else(|| {
                    format!("replace operation does not apply: doc is missing key: {path}")
                })?;
                *slot = value;
            }
            "test" => {
                let value = op.get("value").ok_or("missing value")?;
                if target.pointer(path) != Some(value) {
                    return Err(format!("testing value {path} failed: test failed"));
                }
            }
            "move" | "copy" => {
                let from = op["from"].as_str().ok_or("missing from")?;
                let value = if name == "move" {
                    remove(target, from)?
                } else {
                    target.pointer(from).cloned().ok_or_else(|| {
                        format!("copy operation does not apply: doc is missing from path: {from}")
                    })?
                };
                add(target, path, value)?;
            }
            other => return Err(format!("Unexpected kind: {other}")),
        }
    }
    Ok(())
}

fn split_pointer(path: &str) -> Result<(String, String), String> {
    let i = path
        .rfind('/')
        .ok_or_else(|| format!("invalid JSON pointer: {path:?}"))?;
    let last = path[i + 1..].replace("~1", "/").replace("~0", "~");
    Ok((path[..i].to_owned(), last))
}

fn add(target: &mut Value, path: &str, value: Value) -> Result<(), String> {
    if path.is_empty() {
        *target = value;
        return Ok(());
    }
    let (parent, last) = split_pointer(path)?;
    let container = target
        .pointer_mut(&parent)
        .ok_or_else(|| format!("add operation does not apply: doc is missing path: {path:?}"))?;
    match container {
        Value::Object(map) => {
            map.insert(last, value);
            Ok(())
        }
        Value::Array(items) => {
            if last == "-" {
                items.push(value);
                return Ok(());
            }
            let i: usize = last.parse().map_err(|_| format!("invalid index: {last}"))?;
            if i > items.len() {
                return Err(format!(
                    "add operation does not apply: index out of bounds: {i}"
                ));
            }
            items.insert(i, value);
            Ok(())
        }
        _ => Err(format!(
            "add operation does not apply: doc is missing path: {path:?}"
        )),
    }
}

fn remove(target: &mut Value, path: &str) -> Result<Value, String> {
    let (parent, last) = split_pointer(path)?;
    let missing = || format!("remove operation does not apply: doc is missing path: {path:?}");
    match target.pointer_mut(&parent).ok_or_else(missing)? {
        Value::Object(map) => map.remove(&last).ok_or_else(missing),
        Value::Array(items) => {
            let i: usize = last.parse().map_err(|_| missing())?;
            if i < items.len() {
                Ok(items.remove(i))
            } else {
                Err(missing())
            }
        }
        _ => Err(missing()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn merge_patch_rfc7386() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut doc, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e"}}));
        merge_patch(&mut doc, &json!({"list": [1, 2]}));
        merge_patch(&mut doc, &json!({"list": [3]}));
        assert_eq!(doc["list"], json!([3]));
    }

    #[test]
    fn strategic_merge_merges_containers_by_name() {
        let mut doc = json!({"spec": {"containers": [
            {"name": "app", "image": "a:1", "env": [{"name": "X", "value": "1"}]},
            {"name": "side", "image": "s:1"}
        ]}});
        strategic_merge(
            &mut doc,
            &json!({"spec": {"containers": [
                {"name": "app", "image": "a:2", "env": [{"name": "Y", "value": "2"}]},
                {"name": "side", "$patch": "delete"}
            ]}}),
        );
        assert_eq!(
            doc,
            json!({"spec": {"containers": [
                {"name": "app", "image": "a:2", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]}
            ]}})
        );
    }

    #[test]
    fn json_patch_ops() {
        let mut doc = json!({"a": {"b": [1, 2]}, "c": 1});
        json_patch(
            &mut doc,
            &json!([
                {"op": "add", "path": "/a/b/-", "value": 3},
                {"op": "replace", "path": "/c", "value": 2},
                {"op": "remove", "path": "/a/b/0"},
                {"op": "test", "path": "/c", "value": 2},
                {"op": "add", "path": "/a/x~1y", "value": true}
            ]),
        )
        .unwrap();
        assert_eq!(doc, json!({"a": {"b": [2, 3], "x/y": true}, "c": 2}));
        assert!(json_patch(&mut doc, &json!([{"op": "test", "path": "/c", "value": 5}])).is_err());
        assert!(json_patch(&mut doc, &json!([{"op": "remove", "path": "/nope"}])).is_err());
    }
}
