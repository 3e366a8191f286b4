//! Field ownership (`metadata.managedFields`) and server-side apply.
//!
//! An object's fields are the leaves of its tracked part (everything but
//! `apiVersion`, `kind` and system metadata; `status` only through the
//! status subresource when the kind has one) plus the elements of
//! associative lists (`containers` by `name`, …; see
//! [`super::patch::list_type`]). Every managed-fields entry owns a set of
//! them, serialized as `FieldsV1`.
//!
//! - Non-apply writes (create, update, patch) give the writer ownership of
//!   every field they changed, taking it from other managers.
//! - An apply owns exactly the fields of its configuration: fields it
//!   owned before and omits now are removed unless another manager owns
//!   them; its values are merged into the live object; a field another
//!   manager owns with a different value is a conflict unless forced
//!   (forcing takes ownership); equal values are shared.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use super::patch::{ListType, canonical, element_key, list_type};

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Pe {
    /// A field of an object.
    F(String),
    /// An element of an associative list, by its key fields (canonical JSON).
    K(String),
    /// An element of a set, by value (canonical JSON).
    V(String),
}

pub(crate) type FieldPath = Vec<Pe>;
pub(crate) type FieldSet = BTreeSet<FieldPath>;

impl Pe {
    fn encode(&self) -> String {
        match self {
            Self::F(name) => format!("f:{name}"),
            Self::K(key) => format!("k:{key}"),
            Self::V(value) => format!("v:{value}"),
        }
    }

    fn decode(text: &str) -> Option<Self> {
        if let Some(name) = text.strip_prefix("f:") {
            Some(Self::F(name.to_owned()))
        } else if let Some(key) = text.strip_prefix("k:") {
            serde_json::from_str::<Value>(key)
                .ok()
                .map(|v| Self::K(canonical(&v)))
        } else {
            text.strip_prefix("v:").map(|v| Self::V(v.to_owned()))
        }
    }
}

/// A path as the API server prints it in conflicts:
/// `.spec.template.spec.containers[name="app"].image`.
pub(crate) fn display_path(path: &[Pe]) -> String {
    let mut out = String::new();
    for pe in path {
        match pe {
            Pe::F(name) => {
                out.push('.');
                out.push_str(name);
            }
            Pe::K(key) => {
                let parts: Vec<String> = serde_json::from_str::<Map<String, Value>>(key)
                    .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect())
                    .unwrap_or_default();
                out.push('[');
                out.push_str(&parts.join(","));
                out.push(']');
            }
            Pe::V(value) => {
                out.push_str("[=");
                out.push_str(value);
                out.push(']');
            }
        }
    }
    out
}

/// Which part of an object a write touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// The main resource; `status` excluded when the kind has a status
    /// subresource.
    Main { exclude_status: bool },
    /// The status subresource.
    Status,
}

const TRACKED_METADATA: &[&str] = &["labels", "annotations", "ownerReferences", "finalizers"];

/// The tracked part of an object as a value (for merging and comparing).
fn tracked_keys(object: &Value, scope: Scope) -> Vec<String> {
    let Some(map) = object.as_object() else {
        return Vec::new();
    };
    map.keys()
        .filter(|k| match (k.as_str(), scope) {
            ("apiVersion" | "kind", _) => false,
            ("metadata", Scope::Main { .. }) => true,
            ("status", Scope::Status) => true,
            (_, Scope::Status) => false,
            ("status", Scope::Main { exclude_status }) => !exclude_status,
            _ => true,
        })
        .cloned()
        .collect()
}

/// Every field (leaf or associative-list element) of the tracked part of
/// `object`, with its value (`None` for list elements).
pub(crate) fn members(
    object: &Value,
    scope: Scope,
    builtin: bool,
) -> BTreeMap<FieldPath, Option<Value>> {
    let mut out = BTreeMap::new();
    for key in tracked_keys(object, scope) {
        let value = &object[&key];
        if key == "metadata" {
            for meta in TRACKED_METADATA {
                if let Some(v) = value.get(*meta) {
                    walk(
                        v,
                        vec![Pe::F("metadata".to_owned()), Pe::F((*meta).to_owned())],
                        meta,
                        builtin,
                        &mut out,
                    );
                }
            }
        } else {
            walk(value, vec![Pe::F(key.clone())], &key, builtin, &mut out);
        }
    }
    out
}

fn walk(
    value: &Value,
    path: FieldPath,
    field: &str,
    builtin: bool,
    out: &mut BTreeMap<FieldPath, Option<Value>>,
) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            // Label and annotation keys, and map values in general, are fields.
            for (k, v) in map {
                let mut p = path.clone();
                p.push(Pe::F(k.clone()));
                walk(v, p, k, builtin, out);
            }
        }
        Value::Array(items) => match list_type(field, items, builtin) {
            ListType::Atomic => {
                out.insert(path, Some(value.clone()));
            }
            ListType::Set => {
                for item in items {
                    let mut p = path.clone();
                    p.push(Pe::V(canonical(item)));
                    out.insert(p, Some(item.clone()));
                }
            }
            ListType::Map(keys) => {
                for item in items {
                    let mut p = path.clone();
                    p.push(Pe::K(element_key(item, keys)));
                    out.insert(p.clone(), None);
                    if let Value::Object(fields) = item {
                        for (k, v) in fields {
                            let mut q = p.clone();
                            q.push(Pe::F(k.clone()));
                            walk(v, q, k, builtin, out);
                        }
                    }
                }
            }
        },
        other => {
            out.insert(path, Some(other.clone()));
        }
    }
}

fn key_names(key: &str) -> Vec<String> {
    serde_json::from_str::<Map<String, Value>>(key)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

fn find_element(items: &[Value], pe: &Pe) -> Option<usize> {
    match pe {
        Pe::K(key) => {
            let names = key_names(key);
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            items.iter().position(|i| element_key(i, &names) == *key)
        }
        Pe::V(value) => items.iter().position(|i| canonical(i) == *value),
        Pe::F(_) => None,
    }
}

/// The value at `path`, if present.
pub(crate) fn get_at<'a>(object: &'a Value, path: &[Pe]) -> Option<&'a Value> {
    let mut current = object;
    for pe in path {
        current = match (pe, current) {
            (Pe::F(name), Value::Object(map)) => map.get(name)?,
            (Pe::K(_) | Pe::V(_), Value::Array(items)) => &items[find_element(items, pe)?],
            _ => return None,
        };
    }
    Some(current)
}

/// Removes the field at `path`; maps left empty by the removal go too.
fn remove_at(object: &mut Value, path: &[Pe]) {
    let Some((last, parent_path)) = path.split_last() else {
        return;
    };
    let mut current = &mut *object;
    for pe in parent_path {
        let next = match (pe, current) {
            (Pe::F(name), Value::Object(map)) => map.get_mut(name),
            (Pe::K(_) | Pe::V(_), Value::Array(items)) => {
                find_element(items, pe).and_then(move |i| items.get_mut(i))
            }
            _ => None,
        };
        match next {
            Some(n) => current = n,
            None => return,
        }
    }
    let emptied = match (last, &mut *current) {
        (Pe::F(name), Value::Object(map)) => {
            map.remove(name);
            map.is_empty()
        }
        (Pe::K(_) | Pe::V(_), Value::Array(items)) => {
            if let Some(i) = find_element(items, last) {
                items.remove(i);
            }
            false
        }
        _ => false,
    };
    if emptied && parent_path.len() > 1 && matches!(parent_path.last(), Some(Pe::F(_))) {
        remove_at(object, parent_path);
    }
}

/// One `metadata.managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Managed {
    pub(crate) manager: String,
    pub(crate) operation: String,
    pub(crate) api_version: String,
    pub(crate) time: String,
    pub(crate) subresource: String,
    pub(crate) fields: FieldSet,
}

impl Managed {
    fn is(&self, manager: &str, operation: &str, subresource: &str) -> bool {
        self.manager == manager && self.operation == operation && self.subresource == subresource
    }

    /// How conflicts name this manager.
    fn describe(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if !self.subresource.is_empty() {
            s.push_str(&format!(" with subresource {:?}", self.subresource));
        }
        if self.operation == "Update" {
            s.push_str(&format!(" using {}", self.api_version));
            if !self.time.is_empty() {
                s.push_str(&format!(" at {}", self.time));
            }
        }
        s
    }
}

/// Reads `metadata.managedFields`.
pub(crate) fn read_managed(object: &Value) -> Vec<Managed> {
    let Some(entries) = object
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|e| {
            let manager = e["manager"].as_str()?.to_owned();
            let mut fields = FieldSet::new();
            decode(&e["fieldsV1"], &mut Vec::new(), &mut fields);
            Some(Managed {
                manager,
                operation: e["operation"].as_str().unwrap_or("Update").to_owned(),
                api_version: e["apiVersion"].as_str().unwrap_or_default().to_owned(),
                time: e["time"].as_str().unwrap_or_default().to_owned(),
                subresource: e["subresource"].as_str().unwrap_or_default().to_owned(),
                fields,
            })
        })
        .collect()
}

fn decode(node: &Value, path: &mut FieldPath, out: &mut FieldSet) {
    let Some(map) = node.as_object() else { return };
    for (k, child) in map {
        if k == "." {
            continue;
        }
        let Some(pe) = Pe::decode(k) else { continue };
        path.push(pe);
        let child_map = child.as_object();
        if child_map.is_none_or(|m| m.is_empty() || m.contains_key(".")) {
            out.insert(path.clone());
        }
        decode(child, path, out);
        path.pop();
    }
}

#[derive(Default)]
struct Trie {
    member: bool,
    children: BTreeMap<String, Trie>,
}

fn encode(fields: &FieldSet) -> Value {
    let mut root = Trie::default();
    for path in fields {
        let mut node = &mut root;
        for pe in path {
            node = node.children.entry(pe.encode()).or_default();
        }
        node.member = true;
    }
    fn to_json(node: &Trie) -> Value {
        let mut map = Map::new();
        if node.member && !node.children.is_empty() {
            map.insert(".".to_owned(), json!({}));
        }
        for (k, child) in &node.children {
            map.insert(k.clone(), to_json(child));
        }
        Value::Object(map)
    }
    to_json(&root)
}

/// Writes `entries` as `metadata.managedFields` (removed when empty).
pub(crate) fn write_managed(object: &mut Value, entries: &[Managed]) {
    let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut entry = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": encode(&e.fields),
            });
            if !e.subresource.is_empty() {
                entry["subresource"] = json!(e.subresource);
            }
            entry
        })
        .collect();
    if list.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".to_owned(), Value::Array(list));
    }
}

fn is_prefix(prefix: &[Pe], path: &[Pe]) -> bool {
    path.len() >= prefix.len() && path[..prefix.len()] == *prefix
}

/// Who writes: manager, API version, subresource (`""`, `status`, `scale`).
#[derive(Debug, Clone)]
pub(crate) struct Writer<'a> {
    pub(crate) manager: &'a str,
    pub(crate) api_version: &'a str,
    pub(crate) subresource: &'a str,
    pub(crate) now: &'a str,
}

/// Records a non-apply write (`old`: `None` on create; `managed`: the
/// entries before it): the writer owns every field it changed. `new`'s
/// `managedFields` are replaced.
pub(crate) fn record_update(
    old: Option<&Value>,
    mut managed: Vec<Managed>,
    new: &mut Value,
    writer: &Writer<'_>,
    scope: Scope,
    builtin: bool,
) {
    let old_members = old.map(|o| members(o, scope, builtin)).unwrap_or_default();
    let new_members = members(new, scope, builtin);
    let changed: FieldSet = new_members
        .iter()
        .filter(|(p, v)| old_members.get(*p) != Some(*v))
        .map(|(p, _)| p.clone())
        .collect();
    let removed: FieldSet = old_members
        .keys()
        .filter(|p| !new_members.contains_key(*p))
        .cloned()
        .collect();
    if !changed.is_empty() || !removed.is_empty() {
        for entry in &mut managed {
            entry
                .fields
                .retain(|p| !changed.contains(p) && !removed.contains(p));
        }
        let position = managed
            .iter()
            .position(|e| e.is(writer.manager, "Update", writer.subresource));
        let entry = match position {
            Some(i) => &mut managed[i],
            None => {
                managed.push(Managed {
                    manager: writer.manager.to_owned(),
                    operation: "Update".to_owned(),
                    api_version: writer.api_version.to_owned(),
                    time: String::new(),
                    subresource: writer.subresource.to_owned(),
                    fields: FieldSet::new(),
                });
                let last = managed.len() - 1;
                &mut managed[last]
            }
        };
        entry.fields.extend(changed);
        entry.time = writer.now.to_owned();
        entry.api_version = writer.api_version.to_owned();
        managed.retain(|e| !e.fields.is_empty());
    }
    write_managed(new, &managed);
}

/// Gives `writer` sole ownership of `paths` (an update through `/scale`).
pub(crate) fn take_ownership(
    object: &mut Value,
    paths: &FieldSet,
    writer: &Writer<'_>,
    operation: &str,
) {
    let mut managed = read_managed(object);
    for entry in &mut managed {
        entry.fields.retain(|p| !paths.contains(p));
    }
    match managed
        .iter_mut()
        .find(|e| e.is(writer.manager, operation, writer.subresource))
    {
        Some(entry) => {
            entry.fields.extend(paths.iter().cloned());
            entry.time = writer.now.to_owned();
        }
        None => managed.push(Managed {
            manager: writer.manager.to_owned(),
            operation: operation.to_owned(),
            api_version: writer.api_version.to_owned(),
            time: writer.now.to_owned(),
            subresource: writer.subresource.to_owned(),
            fields: paths.clone(),
        }),
    }
    managed.retain(|e| !e.fields.is_empty());
    write_managed(object, &managed);
}

/// Conflicts an apply of `paths` with these values would have, as
/// (path, manager) pairs.
pub(crate) fn conflicts_for(
    live: &Value,
    applied: &BTreeMap<FieldPath, Option<Value>>,
    writer: &Writer<'_>,
) -> Vec<(FieldPath, String)> {
    let managed = read_managed(live);
    let mut out = Vec::new();
    for (path, value) in applied {
        let Some(value) = value else { continue };
        if get_at(live, path) == Some(value) {
            continue;
        }
        for entry in &managed {
            if entry.is(writer.manager, "Apply", writer.subresource) {
                continue;
            }
            if entry.fields.contains(path) {
                out.push((path.clone(), entry.describe()));
            }
        }
    }
    out
}

/// The outcome of an apply.
#[derive(Debug)]
pub(crate) enum Applied {
    /// The new object, `managedFields` updated.
    Ok(Value),
    /// (field path as printed, manager) for each conflict.
    Conflicts(Vec<(String, String)>),
}

/// Server-side apply of `config` onto `live` (which may be an empty
/// object for a create).
pub(crate) fn apply(
    live: &Value,
    config: &Value,
    writer: &Writer<'_>,
    scope: Scope,
    force: bool,
    builtin: bool,
) -> Applied {
    let new_members = members(config, scope, builtin);
    let conflicts = conflicts_for(live, &new_members, writer);
    let mut managed = read_managed(live);
    if !conflicts.is_empty() {
        if !force {
            return Applied::Conflicts(
                conflicts
                    .into_iter()
                    .map(|(p, m)| (display_path(&p), m))
                    .collect(),
            );
        }
        let taken: FieldSet = conflicts.into_iter().map(|(p, _)| p).collect();
        for entry in &mut managed {
            if !entry.is(writer.manager, "Apply", writer.subresource) {
                entry.fields.retain(|p| !taken.contains(p));
            }
        }
    }
    let previous: FieldSet = managed
        .iter()
        .find(|e| e.is(writer.manager, "Apply", writer.subresource))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let mut object = live.clone();
    let mut dropped: Vec<&FieldPath> = previous
        .iter()
        .filter(|p| !new_members.contains_key(*p))
        .collect();
    dropped.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for path in dropped {
        let owned_elsewhere = managed.iter().any(|e| {
            !e.is(writer.manager, "Apply", writer.subresource)
                && e.fields.iter().any(|q| is_prefix(path, q))
        });
        if !owned_elsewhere {
            remove_at(&mut object, path);
        }
    }
    for key in tracked_keys(config, scope) {
        if key == "metadata" {
            for meta in TRACKED_METADATA {
                if let Some(v) = config["metadata"].get(*meta) {
                    if !object["metadata"].is_object() {
                        object["metadata"] = json!({});
                    }
                    merge_into(&mut object["metadata"], meta, v, builtin);
                }
            }
        } else {
            merge_into(&mut object, &key, &config[&key], builtin);
        }
    }
    let new_fields: FieldSet = new_members.into_keys().collect();
    let changed_object = strip_managed(&object) != strip_managed(live);
    match managed
        .iter_mut()
        .find(|e| e.is(writer.manager, "Apply", writer.subresource))
    {
        Some(entry) => {
            if entry.fields != new_fields || changed_object {
                entry.time = writer.now.to_owned();
            }
            entry.fields = new_fields;
            entry.api_version = writer.api_version.to_owned();
        }
        None => managed.push(Managed {
            manager: writer.manager.to_owned(),
            operation: "Apply".to_owned(),
            api_version: writer.api_version.to_owned(),
            time: writer.now.to_owned(),
            subresource: writer.subresource.to_owned(),
            fields: new_fields,
        }),
    }
    managed.retain(|e| !e.fields.is_empty());
    write_managed(&mut object, &managed);
    Applied::Ok(object)
}

fn strip_managed(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    object
}

/// Merges the applied `value` into `parent[key]`.
fn merge_into(parent: &mut Value, key: &str, value: &Value, builtin: bool) {
    if !parent.is_object() {
        *parent = json!({});
    }
    let Some(map) = parent.as_object_mut() else {
        return;
    };
    if value.is_null() {
        map.remove(key);
        return;
    }
    match map.get_mut(key) {
        Some(current) => merge_value(current, key, value, builtin),
        None => {
            map.insert(key.to_owned(), value.clone());
        }
    }
}

fn merge_value(current: &mut Value, field: &str, value: &Value, builtin: bool) {
    match (current.is_object(), value) {
        (true, Value::Object(applied)) => {
            for (k, v) in applied {
                merge_into(current, k, v, builtin);
            }
        }
        (_, Value::Array(items)) => {
            let Value::Array(existing) = current else {
                *current = value.clone();
                return;
            };
            match list_type(field, items, builtin) {
                ListType::Atomic => *current = value.clone(),
                ListType::Set => {
                    for item in items {
                        if !existing.contains(item) {
                            existing.push(item.clone());
                        }
                    }
                }
                ListType::Map(keys) => {
                    for item in items {
                        let key = element_key(item, keys);
                        match existing.iter_mut().find(|e| element_key(e, keys) == key) {
                            Some(e) => merge_value(e, field, item, builtin),
                            None => existing.push(item.clone()),
                        }
                    }
                }
            }
        }
        _ => *current = value.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(manager: &str) -> Writer<'_> {
        Writer {
            manager,
            api_version: "apps/v1",
            subresource: "",
            now: "2024-01-01T00:00:00Z",
        }
    }

    const MAIN: Scope = Scope::Main {
        exclude_status: true,
    };

    #[test]
    fn fields_v1_round_trip() {
        let object = json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [
                {"name": "app", "image": "a", "ports": [{"containerPort": 80}]}
            ]}}}
        });
        let fields: FieldSet = members(&object, MAIN, true).into_keys().collect();
        let encoded = encode(&fields);
        assert_eq!(encoded["f:spec"]["f:replicas"], json!({}));
        let containers = &encoded["f:spec"]["f:template"]["f:spec"]["f:containers"];
        let app = &containers["k:{\"name\":\"app\"}"];
        assert_eq!(app["."], json!({}));
        assert!(app["f:ports"]["k:{\"containerPort\":80,\"protocol\":\"TCP\"}"].is_object());
        let mut decoded = FieldSet::new();
        decode(&encoded, &mut Vec::new(), &mut decoded);
        assert_eq!(decoded, fields);
    }

    #[test]
    fn apply_removes_dropped_fields_and_detects_conflicts() {
        let first = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"a": "1", "b": "2"}},
            "spec": {"replicas": 2}});
        let Applied::Ok(live) = apply(
            &json!({"metadata": {"name": "web"}}),
            &first,
            &writer("ctrl"),
            MAIN,
            false,
            true,
        ) else {
            panic!("conflict");
        };
        assert_eq!(live["metadata"]["labels"], json!({"a": "1", "b": "2"}));
        let second = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"a": "1"}}, "spec": {"replicas": 2}});
        let Applied::Ok(live) = apply(&live, &second, &writer("ctrl"), MAIN, false, true) else {
            panic!("conflict");
        };
        assert_eq!(live["metadata"]["labels"], json!({"a": "1"}));
        let other = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web"}, "spec": {"replicas": 5}});
        match apply(&live, &other, &writer("hpa"), MAIN, false, true) {
            Applied::Conflicts(c) => assert_eq!(
                c,
                vec![(".spec.replicas".to_owned(), "\"ctrl\"".to_owned())]
            ),
            Applied::Ok(_) => panic!("expected a conflict"),
        }
        let Applied::Ok(forced) = apply(&live, &other, &writer("hpa"), MAIN, true, true) else {
            panic!("force must win");
        };
        assert_eq!(forced["spec"]["replicas"], json!(5));
        let owners = read_managed(&forced);
        let ctrl = owners.iter().find(|m| m.manager == "ctrl").unwrap();
        assert!(
            !ctrl
                .fields
                .contains(&vec![Pe::F("spec".into()), Pe::F("replicas".into())])
        );
    }
}
