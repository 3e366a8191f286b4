//! kube-controller-manager in miniature: the Deployment, ReplicaSet and
//! StatefulSet controllers, PersistentVolumeClaim binding, the namespace
//! lifecycle, garbage collection, and the loop that runs them (and the
//! kubelet) on queued work.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::kinds::field;
use super::kubelet::{self, is_ready, ready_since};
use super::patch::canonical;
use super::registry::ResourceType;
use super::state::{CONTROLLER_MANAGER, DeleteOptions, ObjRef, Shared, State, Sub, Work, str_at};
use super::time;

const REVISION: &str = "deployment.kubernetes.io/revision";
const DESIRED: &str = "deployment.kubernetes.io/desired-replicas";
const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
const TEMPLATE_HASH: &str = "pod-template-hash";

/// Runs queued work until shutdown.
pub(crate) async fn run(shared: Arc<Shared>) {
    let mut done = 0u32;
    loop {
        let next = {
            let mut state = shared.lock();
            let (work, next) = state.queue.pop(Instant::now());
            match work {
                Some(work) => {
                    reconcile(&mut state, &work);
                    None
                }
                None => Some(next),
            }
        };
        match next {
            None => {
                done += 1;
                if done.is_multiple_of(16) {
                    tokio::task::yield_now().await;
                }
            }
            Some(next) => {
                let deadline = next.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
                tokio::select! {
                    () = shared.work.notified() => {}
                    () = tokio::time::sleep_until(deadline) => {}
                    () = shared.shutdown.cancelled() => return,
                }
            }
        }
    }
}

fn reconcile(state: &mut State, work: &Work) {
    match work {
        Work::Gc(uid) => state.collect_garbage(uid),
        Work::Object(r) => match r.store.as_str() {
            "apps/deployments" => sync_deployment(state, r),
            "apps/replicasets" => sync_replicaset(state, r),
            "apps/statefulsets" => sync_statefulset(state, r),
            "/pods" => kubelet::sync_pod(state, r),
            "/namespaces" => sync_namespace(state, r),
            "/persistentvolumeclaims" => sync_pvc(state, r),
            "apiextensions.k8s.io/customresourcedefinitions" => sync_crd(state, r),
            _ => {}
        },
    }
}

fn rt(state: &State, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
    state.registry.get(group, version, plural)
}

/// An integer field, clamped to the `int32` range the API's fields have.
fn int(value: &Value, pointer: &str) -> Option<i64> {
    value
        .pointer(pointer)
        .and_then(Value::as_i64)
        .map(|v| v.clamp(i64::from(i32::MIN), i64::from(i32::MAX)))
}

/// Pods a controller creates or deletes per sync at most (the real
/// controllers' `burstReplicas`).
const BURST: i64 = 500;

/// An owner reference marking `owner` as the controller.
fn controller_ref(owner: &Value) -> Value {
    json!({
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// Objects of `store` whose controller is `owner_uid`.
fn controlled(state: &State, owner_uid: &str, store: &str) -> Vec<Arc<Value>> {
    let mut out: Vec<Arc<Value>> = state
        .dependents_of(owner_uid)
        .into_iter()
        .filter(|(r, o)| {
            r.store == store
                && o.pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .is_some_and(|refs| {
                        refs.iter()
                            .any(|x| x["uid"] == owner_uid && x["controller"] == json!(true))
                    })
        })
        .map(|(_, o)| o)
        .collect();
    out.sort_by(|a, b| str_at(a, "/metadata/name").cmp(str_at(b, "/metadata/name")));
    out
}

fn terminating(object: &Value) -> bool {
    object.pointer("/metadata/deletionTimestamp").is_some()
}

/// FNV-1a (32 bit), as the controllers hash pod templates.
fn fnv32a(data: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in data {
        hash ^= u32::from(*b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// A template's hash the way the controllers name things with it
/// (`rand.SafeEncodeString` of the decimal FNV hash).
fn template_hash(template: &Value, collisions: i64) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut data = canonical(template).into_bytes();
    if collisions > 0 {
        data.extend_from_slice(&collisions.to_le_bytes());
    }
    fnv32a(&data)
        .to_string()
        .bytes()
        .map(|b| char::from(ALPHABET[usize::from(b) % ALPHABET.len()]))
        .collect()
}

fn without_hash_label(template: &Value) -> Value {
    let mut t = template.clone();
    if let Some(labels) = t
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove(TEMPLATE_HASH);
        if labels.is_empty()
            && let Some(meta) = t.pointer_mut("/metadata").and_then(Value::as_object_mut)
        {
            meta.remove("labels");
        }
    }
    t
}

fn annotation<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
}

fn revision(object: &Value) -> u64 {
    annotation(object, REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn set_annotation(object: &mut Value, key: &str, value: &str) {
    if let Some(annotations) = field(&mut object["metadata"], "annotations") {
        annotations[key] = json!(value);
    }
}

/// `maxSurge`/`maxUnavailable`: an integer or a percentage of `total`.
fn int_or_percent(value: &Value, total: i64, round_up: bool) -> i64 {
    let clamp = |v: i64| v.clamp(0, i64::from(i32::MAX));
    match value {
        Value::Number(n) => clamp(n.as_i64().unwrap_or(0)),
        Value::String(s) => {
            let Some(p) = s
                .strip_suffix('%')
                .and_then(|p| p.trim().parse::<i64>().ok())
            else {
                return clamp(s.parse().unwrap_or(0));
            };
            let scaled = clamp(p).saturating_mul(total);
            if round_up {
                (scaled + 99) / 100
            } else {
                scaled / 100
            }
        }
        _ => 0,
    }
}

fn scale_replica_set(
    state: &mut State,
    rs_rt: &ResourceType,
    rs: &Value,
    replicas: i64,
    annotations: &[(&str, String)],
) -> Option<Arc<Value>> {
    let mut new = rs.clone();
    new["spec"]["replicas"] = json!(replicas);
    for (k, v) in annotations {
        set_annotation(&mut new, k, v);
    }
    if new == *rs {
        return None;
    }
    state.controller_update(rs_rt, new, Sub::Main, CONTROLLER_MANAGER)
}

/// The Deployment controller: one ReplicaSet per pod template, rolled
/// out per the strategy; status and conditions.
fn sync_deployment(state: &mut State, r: &ObjRef) {
    let Some(d) = state.get_ref(r) else { return };
    if terminating(&d) {
        return;
    }
    let (Some(d_rt), Some(rs_rt)) = (
        rt(state, "apps", "v1", "deployments"),
        rt(state, "apps", "v1", "replicasets"),
    ) else {
        return;
    };
    let uid = str_at(&d, "/metadata/uid").to_owned();
    let name = str_at(&d, "/metadata/name").to_owned();
    let namespace = str_at(&d, "/metadata/namespace").to_owned();
    let desired = int(&d, "/spec/replicas").unwrap_or(1).max(0);
    let template = d["spec"]["template"].clone();
    let strategy = d["spec"]["strategy"]["type"]
        .as_str()
        .unwrap_or("RollingUpdate")
        .to_owned();
    let rolling = &d["spec"]["strategy"]["rollingUpdate"];
    let (mut max_surge, mut max_unavailable) = if strategy == "RollingUpdate" {
        (
            int_or_percent(
                rolling.get("maxSurge").unwrap_or(&json!("25%")),
                desired,
                true,
            ),
            int_or_percent(
                rolling.get("maxUnavailable").unwrap_or(&json!("25%")),
                desired,
                false,
            ),
        )
    } else {
        (0, 0)
    };
    if strategy == "RollingUpdate" && max_surge == 0 && max_unavailable == 0 {
        max_unavailable = 1;
    }
    max_surge = max_surge.max(0);
    max_unavailable = max_unavailable.clamp(0, desired);
    let collisions = int(&d, "/status/collisionCount").unwrap_or(0);
    let rss = controlled(state, &uid, "apps/replicasets");
    let wanted = without_hash_label(&template);
    let new_rs = rss
        .iter()
        .find(|rs| without_hash_label(&rs["spec"]["template"]) == wanted)
        .cloned();
    let max_old_revision = rss
        .iter()
        .filter(|rs| {
            new_rs
                .as_ref()
                .is_none_or(|n| n.pointer("/metadata/uid") != rs.pointer("/metadata/uid"))
        })
        .map(|rs| revision(rs))
        .max()
        .unwrap_or(0);
    let paused = d["spec"]["paused"] == json!(true);
    let mut created = false;
    let new_rs = match new_rs {
        Some(rs) => {
            let mut annotations = vec![
                (DESIRED, desired.to_string()),
                (MAX_REPLICAS, (desired + max_surge).to_string()),
            ];
            if revision(&rs) <= max_old_revision {
                annotations.push((REVISION, (max_old_revision + 1).to_string()));
            }
            let replicas = int(&rs, "/spec/replicas").unwrap_or(0);
            scale_replica_set(state, &rs_rt, &rs, replicas, &annotations).unwrap_or(rs)
        }
        None if paused => {
            update_deployment_status(state, &d_rt, &d, None, desired, max_unavailable, false);
            return;
        }
        None => {
            let hash = template_hash(&wanted, collisions);
            let rs_name = format!("{name}-{hash}");
            if state.get(&rs_rt, &namespace, &rs_name).is_some() {
                let mut new = (*d).clone();
                new["status"]["collisionCount"] = json!(collisions + 1);
                state.controller_update(&d_rt, new, Sub::Status, CONTROLLER_MANAGER);
                return;
            }
            let mut labels = template["metadata"]["labels"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            labels.insert(TEMPLATE_HASH.to_owned(), json!(hash));
            let mut rs_template = template.clone();
            if let Some(meta) = field(&mut rs_template, "metadata") {
                meta["labels"] = Value::Object(labels.clone());
            }
            let mut selector = d["spec"]["selector"].clone();
            if let Some(match_labels) = field(&mut selector, "matchLabels") {
                match_labels[TEMPLATE_HASH] = json!(hash);
            }
            let old_pods: i64 = rss
                .iter()
                .map(|rs| int(rs, "/spec/replicas").unwrap_or(0))
                .sum();
            let initial = if strategy == "RollingUpdate" {
                desired.min((desired + max_surge - old_pods).max(0))
            } else if old_pods == 0 {
                desired
            } else {
                0
            };
            let mut annotations = Map::new();
            if let Some(a) = template
                .pointer("/metadata/annotations")
                .and_then(Value::as_object)
            {
                annotations.extend(a.clone());
            }
            annotations.insert(
                REVISION.to_owned(),
                json!((max_old_revision + 1).to_string()),
            );
            annotations.insert(DESIRED.to_owned(), json!(desired.to_string()));
            annotations.insert(
                MAX_REPLICAS.to_owned(),
                json!((desired + max_surge).to_string()),
            );
            let mut spec = json!({
                "replicas": initial,
                "selector": selector,
                "template": rs_template,
            });
            if let Some(min_ready) = d["spec"].get("minReadySeconds") {
                spec["minReadySeconds"] = min_ready.clone();
            }
            let body = json!({
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "metadata": {
                    "name": rs_name,
                    "namespace": namespace,
                    "labels": labels,
                    "annotations": annotations,
                    "ownerReferences": [controller_ref(&d)],
                },
                "spec": spec,
            });
            let Some(rs) = state.controller_create(&rs_rt, body) else {
                return;
            };
            created = true;
            rs
        }
    };
    if !paused {
        let new_uid = str_at(&new_rs, "/metadata/uid").to_owned();
        let olds = |state: &State| -> Vec<Arc<Value>> {
            let mut olds: Vec<Arc<Value>> = controlled(state, &uid, "apps/replicasets")
                .into_iter()
                .filter(|rs| str_at(rs, "/metadata/uid") != new_uid)
                .collect();
            olds.sort_by_key(|rs| revision(rs));
            olds
        };
        let current =
            |state: &State| state.get(&rs_rt, &namespace, str_at(&new_rs, "/metadata/name"));
        if strategy == "Recreate" {
            let old = olds(state);
            for rs in &old {
                if int(rs, "/spec/replicas").unwrap_or(0) > 0 {
                    scale_replica_set(state, &rs_rt, rs, 0, &[]);
                }
            }
            let old_pods: i64 = olds(state)
                .iter()
                .map(|rs| int(rs, "/status/replicas").unwrap_or(0))
                .sum();
            if old_pods == 0
                && let Some(rs) = current(state)
            {
                scale_replica_set(state, &rs_rt, &rs, desired, &[]);
            }
        } else {
            // Scale up the new replica set within maxSurge.
            if let Some(rs) = current(state) {
                let new_replicas = int(&rs, "/spec/replicas").unwrap_or(0);
                let total: i64 = new_replicas
                    + olds(state)
                        .iter()
                        .map(|o| int(o, "/spec/replicas").unwrap_or(0))
                        .sum::<i64>();
                let target = if new_replicas > desired {
                    desired
                } else if new_replicas < desired && total < desired + max_surge {
                    desired.min(new_replicas + (desired + max_surge - total))
                } else {
                    new_replicas
                };
                if target != new_replicas {
                    scale_replica_set(state, &rs_rt, &rs, target, &[]);
                }
            }
            // Scale down old replica sets within maxUnavailable.
            let old = olds(state);
            if old
                .iter()
                .any(|o| int(o, "/spec/replicas").unwrap_or(0) > 0)
                && let Some(rs) = current(state)
            {
                let new_replicas = int(&rs, "/spec/replicas").unwrap_or(0);
                let new_available = int(&rs, "/status/availableReplicas").unwrap_or(0);
                let all: i64 = new_replicas
                    + old
                        .iter()
                        .map(|o| int(o, "/spec/replicas").unwrap_or(0))
                        .sum::<i64>();
                let min_available = desired - max_unavailable;
                let new_unavailable = (new_replicas - new_available).max(0);
                let mut budget = all - min_available - new_unavailable;
                if budget > 0 {
                    // Unhealthy old replicas go first.
                    for o in &old {
                        let replicas = int(o, "/spec/replicas").unwrap_or(0);
                        let unhealthy = replicas - int(o, "/status/availableReplicas").unwrap_or(0);
                        if budget <= 0 || unhealthy <= 0 {
                            continue;
                        }
                        let by = unhealthy.min(budget);
                        scale_replica_set(state, &rs_rt, o, replicas - by, &[]);
                        budget -= by;
                    }
                    let old = olds(state);
                    let available: i64 = new_available
                        + old
                            .iter()
                            .map(|o| int(o, "/status/availableReplicas").unwrap_or(0))
                            .sum::<i64>();
                    let mut remaining = (available - min_available).max(0).min(budget.max(0));
                    for o in &old {
                        let replicas = int(o, "/spec/replicas").unwrap_or(0);
                        if remaining <= 0 || replicas == 0 {
                            continue;
                        }
                        let by = replicas.min(remaining);
                        scale_replica_set(state, &rs_rt, o, replicas - by, &[]);
                        remaining -= by;
                    }
                }
            }
        }
        // Old, empty replica sets beyond revisionHistoryLimit go.
        let limit = usize::try_from(int(&d, "/spec/revisionHistoryLimit").unwrap_or(10).max(0))
            .unwrap_or(0);
        let empty: Vec<Arc<Value>> = olds(state)
            .into_iter()
            .filter(|o| {
                int(o, "/spec/replicas").unwrap_or(0) == 0
                    && int(o, "/status/replicas").unwrap_or(0) == 0
            })
            .collect();
        if empty.len() > limit {
            for o in &empty[..empty.len() - limit] {
                let _ = state.delete(
                    &rs_rt,
                    &namespace,
                    str_at(o, "/metadata/name"),
                    &DeleteOptions::default(),
                );
            }
        }
    }
    let new_rs = state.get(&rs_rt, &namespace, str_at(&new_rs, "/metadata/name"));
    let Some(d) = state.get_ref(r) else { return };
    if let Some(rs) = &new_rs {
        let rev = revision(rs).to_string();
        if annotation(&d, REVISION) != Some(rev.as_str()) {
            let mut new = (*d).clone();
            set_annotation(&mut new, REVISION, &rev);
            state.controller_update(&d_rt, new, Sub::Main, CONTROLLER_MANAGER);
        }
    }
    let Some(d) = state.get_ref(r) else { return };
    update_deployment_status(
        state,
        &d_rt,
        &d,
        new_rs.as_deref(),
        desired,
        max_unavailable,
        created,
    );
}

fn condition_of<'a>(status: &'a Value, kind: &str) -> Option<&'a Value> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

fn deployment_condition(
    previous: Option<&Value>,
    kind: &str,
    ok: bool,
    reason: &str,
    message: &str,
    now: &str,
    touch: bool,
) -> Value {
    let status = if ok { "True" } else { "False" };
    match previous {
        Some(p) if p["status"] == status && p["reason"] == reason && !touch => {
            let mut c = p.clone();
            c["message"] = json!(message);
            c
        }
        Some(p) if p["status"] == status => json!({
            "type": kind, "status": status, "lastUpdateTime": now,
            "lastTransitionTime": p["lastTransitionTime"], "reason": reason, "message": message,
        }),
        _ => json!({
            "type": kind, "status": status, "lastUpdateTime": now,
            "lastTransitionTime": now, "reason": reason, "message": message,
        }),
    }
}

fn update_deployment_status(
    state: &mut State,
    d_rt: &ResourceType,
    d: &Value,
    new_rs: Option<&Value>,
    desired: i64,
    max_unavailable: i64,
    created: bool,
) {
    let uid = str_at(d, "/metadata/uid");
    let rss = controlled(state, uid, "apps/replicasets");
    let sum = |pointer: &str| -> i64 { rss.iter().map(|rs| int(rs, pointer).unwrap_or(0)).sum() };
    let replicas = sum("/status/replicas");
    let available = sum("/status/availableReplicas");
    let ready = sum("/status/readyReplicas");
    let total_spec = sum("/spec/replicas");
    let updated = new_rs.map_or(0, |rs| int(rs, "/status/replicas").unwrap_or(0));
    let generation = int(d, "/metadata/generation").unwrap_or(1);
    let old_status = &d["status"];
    let now = time::now();
    let rs_name = new_rs
        .map(|rs| str_at(rs, "/metadata/name").to_owned())
        .unwrap_or_default();
    let available_ok = available >= desired - max_unavailable;
    let available_condition = deployment_condition(
        condition_of(old_status, "Available"),
        "Available",
        available_ok,
        if available_ok {
            "MinimumReplicasAvailable"
        } else {
            "MinimumReplicasUnavailable"
        },
        if available_ok {
            "Deployment has minimum availability."
        } else {
            "Deployment does not have minimum availability."
        },
        &now,
        false,
    );
    let previous = condition_of(old_status, "Progressing");
    let complete = updated == desired && replicas == desired && available == desired;
    let progressed = updated > int(old_status, "/updatedReplicas").unwrap_or(0)
        || ready > int(old_status, "/readyReplicas").unwrap_or(0)
        || available > int(old_status, "/availableReplicas").unwrap_or(0)
        || (replicas - updated)
            < (int(old_status, "/replicas").unwrap_or(0)
                - int(old_status, "/updatedReplicas").unwrap_or(0));
    let deadline = int(d, "/spec/progressDeadlineSeconds").unwrap_or(600);
    let paused = d["spec"]["paused"] == json!(true);
    let progressing = if paused {
        Some(deployment_condition(
            previous,
            "Progressing",
            false,
            "DeploymentPaused",
            "Deployment is paused",
            &now,
            false,
        ))
    } else if complete {
        Some(deployment_condition(
            previous,
            "Progressing",
            true,
            "NewReplicaSetAvailable",
            &format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
            &now,
            false,
        ))
    } else if created {
        Some(deployment_condition(
            previous,
            "Progressing",
            true,
            "NewReplicaSetCreated",
            &format!("Created new replica set \"{rs_name}\""),
            &now,
            true,
        ))
    } else if progressed {
        Some(deployment_condition(
            previous,
            "Progressing",
            true,
            "ReplicaSetUpdated",
            &format!("ReplicaSet \"{rs_name}\" is progressing."),
            &now,
            true,
        ))
    } else {
        let last_update = previous
            .and_then(|p| time::parse(p["lastUpdateTime"].as_str()?))
            .unwrap_or_else(SystemTime::now);
        let timed_out = previous.is_some_and(|p| p["reason"] != "NewReplicaSetAvailable")
            && SystemTime::now()
                >= last_update + Duration::from_secs(u64::try_from(deadline).unwrap_or(600));
        if timed_out {
            Some(deployment_condition(
                previous,
                "Progressing",
                false,
                "ProgressDeadlineExceeded",
                &format!("ReplicaSet \"{rs_name}\" has timed out progressing."),
                &now,
                false,
            ))
        } else if previous.is_none() && new_rs.is_some() {
            Some(deployment_condition(
                previous,
                "Progressing",
                true,
                "FoundNewReplicaSet",
                &format!("Found new replica set \"{rs_name}\""),
                &now,
                true,
            ))
        } else {
            previous.cloned()
        }
    };
    let mut conditions = vec![available_condition];
    if let Some(p) = &progressing {
        if !complete && !paused && p["reason"] != "ProgressDeadlineExceeded" {
            let last_update = time::parse(p["lastUpdateTime"].as_str().unwrap_or_default())
                .unwrap_or_else(SystemTime::now);
            let at = last_update
                + Duration::from_secs(u64::try_from(deadline).unwrap_or(600))
                + Duration::from_millis(100);
            let wait = at.duration_since(SystemTime::now()).unwrap_or_default();
            let key = ObjRef {
                store: "apps/deployments".to_owned(),
                namespace: str_at(d, "/metadata/namespace").to_owned(),
                name: str_at(d, "/metadata/name").to_owned(),
            };
            state.enqueue_at(Instant::now() + wait, Work::Object(key));
        }
        conditions.push(p.clone());
    }
    let mut status = json!({
        "observedGeneration": generation,
        "replicas": replicas,
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": available,
        "unavailableReplicas": (total_spec - available).max(0),
        "conditions": conditions,
    });
    if let Some(c) = old_status.get("collisionCount") {
        status["collisionCount"] = c.clone();
    }
    let mut new = d.clone();
    new["status"] = status;
    if new != *d {
        state.controller_update(d_rt, new, Sub::Status, CONTROLLER_MANAGER);
    }
}

/// The ReplicaSet controller: as many pods as `spec.replicas`.
fn sync_replicaset(state: &mut State, r: &ObjRef) {
    let Some(rs) = state.get_ref(r) else { return };
    if terminating(&rs) {
        return;
    }
    let (Some(rs_rt), Some(pod_rt)) = (
        rt(state, "apps", "v1", "replicasets"),
        rt(state, "", "v1", "pods"),
    ) else {
        return;
    };
    let uid = str_at(&rs, "/metadata/uid").to_owned();
    let desired = int(&rs, "/spec/replicas").unwrap_or(1).max(0);
    let active = |state: &State| -> Vec<Arc<Value>> {
        controlled(state, &uid, "/pods")
            .into_iter()
            .filter(|p| {
                !terminating(p)
                    && !matches!(
                        p.pointer("/status/phase").and_then(Value::as_str),
                        Some("Succeeded" | "Failed")
                    )
            })
            .collect()
    };
    let pods = active(state);
    let count = i64::try_from(pods.len()).unwrap_or(i64::MAX);
    if count < desired {
        let template = &rs["spec"]["template"];
        for _ in count..desired.min(count + BURST) {
            let mut metadata = json!({
                "generateName": format!("{}-", str_at(&rs, "/metadata/name")),
                "namespace": r.namespace,
                "ownerReferences": [controller_ref(&rs)],
            });
            for k in ["labels", "annotations"] {
                if let Some(v) = template.pointer(&format!("/metadata/{k}")) {
                    metadata[k] = v.clone();
                }
            }
            let body = json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": metadata,
                "spec": template["spec"],
            });
            if state.controller_create(&pod_rt, body).is_none() {
                break;
            }
        }
    } else if count > desired {
        let mut ranked = pods;
        ranked.sort_by_key(|p| {
            let phase = match p.pointer("/status/phase").and_then(Value::as_str) {
                Some("Pending") => 0,
                Some("Running") => 2,
                _ => 1,
            };
            let restarts: i64 = p
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array)
                .map(|cs| cs.iter().filter_map(|c| c["restartCount"].as_i64()).sum())
                .unwrap_or(0);
            (
                p.pointer("/spec/nodeName").is_some(),
                phase,
                is_ready(p),
                -restarts,
                std::cmp::Reverse(str_at(p, "/metadata/creationTimestamp").to_owned()),
            )
        });
        let excess = usize::try_from((count - desired).min(BURST)).unwrap_or(0);
        for p in ranked.iter().take(excess) {
            let _ = state.delete(
                &pod_rt,
                &r.namespace,
                str_at(p, "/metadata/name"),
                &DeleteOptions::default(),
            );
        }
    }
    let pods = active(state);
    let min_ready = Duration::from_secs(
        u64::try_from(int(&rs, "/spec/minReadySeconds").unwrap_or(0)).unwrap_or(0),
    );
    let now = SystemTime::now();
    let ready: Vec<&Arc<Value>> = pods.iter().filter(|p| is_ready(p)).collect();
    let mut wake: Option<Duration> = None;
    let available = ready
        .iter()
        .filter(|p| {
            if min_ready.is_zero() {
                return true;
            }
            let since = ready_since(p).unwrap_or(now);
            let at = since + min_ready;
            if at <= now {
                true
            } else {
                let wait = at.duration_since(now).unwrap_or_default();
                wake = Some(wake.map_or(wait, |w| w.min(wait)));
                false
            }
        })
        .count();
    if let Some(wait) = wake {
        state.enqueue_at(
            Instant::now() + wait + Duration::from_millis(10),
            Work::Object(r.clone()),
        );
    }
    let Some(rs) = state.get_ref(r) else { return };
    let mut new = (*rs).clone();
    new["status"] = json!({
        "replicas": pods.len(),
        "fullyLabeledReplicas": pods.len(),
        "readyReplicas": ready.len(),
        "availableReplicas": available,
        "observedGeneration": int(&rs, "/metadata/generation").unwrap_or(1),
    });
    if new != *rs {
        state.controller_update(&rs_rt, new, Sub::Status, CONTROLLER_MANAGER);
    }
}

/// The StatefulSet controller: ordinal pods in order, claims from
/// `volumeClaimTemplates`, rolling updates from the highest ordinal down.
fn sync_statefulset(state: &mut State, r: &ObjRef) {
    let Some(sts) = state.get_ref(r) else { return };
    if terminating(&sts) {
        return;
    }
    let (Some(sts_rt), Some(pod_rt), Some(cr_rt), Some(pvc_rt)) = (
        rt(state, "apps", "v1", "statefulsets"),
        rt(state, "", "v1", "pods"),
        rt(state, "apps", "v1", "controllerrevisions"),
        rt(state, "", "v1", "persistentvolumeclaims"),
    ) else {
        return;
    };
    let uid = str_at(&sts, "/metadata/uid").to_owned();
    let name = str_at(&sts, "/metadata/name").to_owned();
    let namespace = r.namespace.clone();
    let replicas = int(&sts, "/spec/replicas").unwrap_or(1).max(0);
    let start = int(&sts, "/spec/ordinals/start").unwrap_or(0).max(0);
    let parallel = sts["spec"]["podManagementPolicy"] == "Parallel";
    let on_delete = sts["spec"]["updateStrategy"]["type"] == "OnDelete";
    let partition = int(&sts, "/spec/updateStrategy/rollingUpdate/partition").unwrap_or(0);
    let template = sts["spec"]["template"].clone();

    // Revisions.
    let hash = template_hash(&template, int(&sts, "/status/collisionCount").unwrap_or(0));
    let update_revision = format!("{name}-{hash}");
    let revisions = controlled(state, &uid, "apps/controllerrevisions");
    let max_revision = revisions
        .iter()
        .filter_map(|c| c["revision"].as_i64())
        .max()
        .unwrap_or(0);
    match revisions
        .iter()
        .find(|c| str_at(c, "/metadata/name") == update_revision)
    {
        None => {
            let mut labels = template["metadata"]["labels"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            labels.insert("controller.kubernetes.io/hash".to_owned(), json!(hash));
            let mut patch_template = template.clone();
            patch_template["$patch"] = json!("replace");
            let body = json!({
                "apiVersion": "apps/v1",
                "kind": "ControllerRevision",
                "metadata": {
                    "name": update_revision,
                    "namespace": namespace,
                    "labels": labels,
                    "ownerReferences": [controller_ref(&sts)],
                },
                "data": {"spec": {"template": patch_template}},
                "revision": max_revision + 1,
            });
            state.controller_create(&cr_rt, body);
        }
        Some(c) if c["revision"].as_i64().unwrap_or(0) < max_revision => {
            let mut new = (**c).clone();
            new["revision"] = json!(max_revision + 1);
            state.controller_update(&cr_rt, new, Sub::Main, CONTROLLER_MANAGER);
        }
        Some(_) => {}
    }
    let current_revision = sts["status"]["currentRevision"]
        .as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or(&update_revision)
        .to_owned();
    let revision_template = |state: &State, revision: &str| -> Value {
        if revision == update_revision {
            return template.clone();
        }
        state
            .get(&cr_rt, &namespace, revision)
            .and_then(|c| {
                let mut t = c.pointer("/data/spec/template")?.clone();
                t.as_object_mut()?.remove("$patch");
                Some(t)
            })
            .unwrap_or_else(|| template.clone())
    };

    let pods_by_ordinal = |state: &State| -> BTreeMap<i64, Arc<Value>> {
        controlled(state, &uid, "/pods")
            .into_iter()
            .filter_map(|p| {
                let ordinal = str_at(&p, "/metadata/name")
                    .strip_prefix(&format!("{name}-"))?
                    .parse::<i64>()
                    .ok()?;
                Some((ordinal, p))
            })
            .collect()
    };
    let pods = pods_by_ordinal(state);
    let wanted = start..start + replicas;
    let mut blocked = false;
    let mut created = 0;
    for ordinal in wanted.clone() {
        match pods.get(&ordinal) {
            None => {
                if (blocked && !parallel) || created >= BURST {
                    break;
                }
                created += 1;
                let revision = if ordinal - start < partition {
                    current_revision.clone()
                } else {
                    update_revision.clone()
                };
                let t = revision_template(state, &revision);
                create_stateful_pod(state, &sts, &pod_rt, &pvc_rt, ordinal, &revision, &t);
                if !parallel {
                    blocked = true;
                }
            }
            Some(p) => {
                if !parallel && (terminating(p) || !is_ready(p)) {
                    blocked = true;
                }
            }
        }
    }
    // Scale down: the highest ordinal first.
    let condemned: Vec<(&i64, &Arc<Value>)> = pods
        .iter()
        .rev()
        .filter(|(o, _)| !wanted.contains(o))
        .collect();
    if !condemned.is_empty() && (!blocked || parallel) {
        for (_, p) in &condemned {
            if terminating(p) {
                if !parallel {
                    blocked = true;
                    break;
                }
                continue;
            }
            let _ = state.delete(
                &pod_rt,
                &namespace,
                str_at(p, "/metadata/name"),
                &DeleteOptions::default(),
            );
            if !parallel {
                blocked = true;
                break;
            }
        }
    }
    // Rolling update: one pod at a time, highest ordinal first.
    let all_ready = wanted
        .clone()
        .all(|o| pods.get(&o).is_some_and(|p| !terminating(p) && is_ready(p)));
    if !on_delete && !blocked && all_ready && condemned.is_empty() {
        for ordinal in wanted.clone().rev() {
            if ordinal - start < partition {
                break;
            }
            let Some(p) = pods.get(&ordinal) else { break };
            let pod_revision = p
                .pointer("/metadata/labels/controller-revision-hash")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if pod_revision != update_revision {
                let _ = state.delete(
                    &pod_rt,
                    &namespace,
                    str_at(p, "/metadata/name"),
                    &DeleteOptions::default(),
                );
                break;
            }
        }
    }
    // History.
    let limit =
        usize::try_from(int(&sts, "/spec/revisionHistoryLimit").unwrap_or(10).max(0)).unwrap_or(0);
    let mut old: Vec<Arc<Value>> = controlled(state, &uid, "apps/controllerrevisions")
        .into_iter()
        .filter(|c| {
            let n = str_at(c, "/metadata/name");
            n != update_revision && n != current_revision
        })
        .collect();
    if old.len() > limit {
        old.sort_by_key(|c| c["revision"].as_i64().unwrap_or(0));
        for c in &old[..old.len() - limit] {
            let _ = state.delete(
                &cr_rt,
                &namespace,
                str_at(c, "/metadata/name"),
                &DeleteOptions::default(),
            );
        }
    }
    // Status.
    let pods = pods_by_ordinal(state);
    let live: Vec<&Arc<Value>> = pods.values().collect();
    let count = |f: &dyn Fn(&Value) -> bool| live.iter().filter(|p| f(p)).count();
    let revision_of = |p: &Value| {
        p.pointer("/metadata/labels/controller-revision-hash")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let ready = count(&|p| is_ready(p));
    let updated = count(&|p| revision_of(p) == update_revision);
    let mut current = count(&|p| revision_of(p) == current_revision);
    let mut current_name = current_revision;
    let total = live.len();
    if !on_delete
        && updated == total
        && ready == total
        && i64::try_from(total).unwrap_or(0) == replicas
    {
        current_name = update_revision.clone();
        current = updated;
    }
    let Some(sts) = state.get_ref(r) else { return };
    let mut new = (*sts).clone();
    new["status"] = json!({
        "observedGeneration": int(&sts, "/metadata/generation").unwrap_or(1),
        "replicas": total,
        "readyReplicas": ready,
        "currentReplicas": current,
        "updatedReplicas": updated,
        "availableReplicas": ready,
        "currentRevision": current_name,
        "updateRevision": update_revision,
        "collisionCount": int(&sts, "/status/collisionCount").unwrap_or(0),
    });
    if new != *sts {
        state.controller_update(&sts_rt, new, Sub::Status, CONTROLLER_MANAGER);
    }
}

fn create_stateful_pod(
    state: &mut State,
    sts: &Value,
    pod_rt: &ResourceType,
    pvc_rt: &ResourceType,
    ordinal: i64,
    revision: &str,
    template: &Value,
) {
    let sts_name = str_at(sts, "/metadata/name");
    let namespace = str_at(sts, "/metadata/namespace").to_owned();
    let pod_name = format!("{sts_name}-{ordinal}");
    let mut spec = template["spec"].clone();
    let delete_claims =
        sts["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Delete";
    for claim in sts["spec"]["volumeClaimTemplates"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let claim_name = claim["metadata"]["name"].as_str().unwrap_or_default();
        let pvc_name = format!("{claim_name}-{sts_name}-{ordinal}");
        if state.get(pvc_rt, &namespace, &pvc_name).is_none() {
            let mut labels = claim
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            if let Some(selector) = sts
                .pointer("/spec/selector/matchLabels")
                .and_then(Value::as_object)
            {
                labels.extend(selector.clone());
            }
            let mut metadata = json!({"name": pvc_name, "namespace": namespace, "labels": labels});
            if let Some(a) = claim.pointer("/metadata/annotations") {
                metadata["annotations"] = a.clone();
            }
            if delete_claims {
                metadata["ownerReferences"] = json!([controller_ref(sts)]);
            }
            let body = json!({
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": metadata,
                "spec": claim["spec"],
            });
            state.controller_create(pvc_rt, body);
        }
        let volume = json!({"name": claim_name, "persistentVolumeClaim": {"claimName": pvc_name}});
        match spec.get_mut("volumes").and_then(Value::as_array_mut) {
            Some(volumes) => {
                volumes.retain(|v| v["name"] != claim_name);
                volumes.push(volume);
            }
            None => {
                if spec.is_object() {
                    spec["volumes"] = json!([volume]);
                }
            }
        }
    }
    if spec.is_object() {
        spec["hostname"] = json!(pod_name);
        if let Some(service) = sts["spec"]["serviceName"]
            .as_str()
            .filter(|s| !s.is_empty())
        {
            spec["subdomain"] = json!(service);
        }
    }
    let mut labels = template
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    labels.insert(
        "statefulset.kubernetes.io/pod-name".to_owned(),
        json!(pod_name),
    );
    labels.insert("controller-revision-hash".to_owned(), json!(revision));
    labels.insert(
        "apps.kubernetes.io/pod-index".to_owned(),
        json!(ordinal.to_string()),
    );
    let mut metadata = json!({
        "name": pod_name,
        "namespace": namespace,
        "labels": labels,
        "ownerReferences": [controller_ref(sts)],
    });
    if let Some(a) = template.pointer("/metadata/annotations") {
        metadata["annotations"] = a.clone();
    }
    let body = json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec});
    state.controller_create(pod_rt, body);
}

/// Binds claims at once (a default storage class with immediate binding).
fn sync_pvc(state: &mut State, r: &ObjRef) {
    let Some(pvc) = state.get_ref(r) else { return };
    if terminating(&pvc) || pvc.pointer("/status/phase").and_then(Value::as_str) == Some("Bound") {
        return;
    }
    let mut new = (*pvc).clone();
    let uid = str_at(&pvc, "/metadata/uid").to_owned();
    if let Some(spec) = field(&mut new, "spec") {
        if spec.get("volumeName").is_none() {
            spec["volumeName"] = json!(format!("pvc-{uid}"));
        }
        if spec.get("storageClassName").is_none() {
            spec["storageClassName"] = json!("standard");
        }
    }
    set_annotation(&mut new, "pv.kubernetes.io/bind-completed", "yes");
    set_annotation(&mut new, "pv.kubernetes.io/bound-by-controller", "yes");
    let storage = pvc
        .pointer("/spec/resources/requests/storage")
        .cloned()
        .unwrap_or(json!("1Gi"));
    new["status"] = json!({
        "phase": "Bound",
        "accessModes": pvc.pointer("/spec/accessModes").cloned().unwrap_or(json!(["ReadWriteOnce"])),
        "capacity": {"storage": storage},
    });
    state.put("/persistentvolumeclaims", new);
}

/// A new namespace gets its `default` service account and root CA config
/// map; a terminating one is emptied and removed.
fn sync_namespace(state: &mut State, r: &ObjRef) {
    let Some(ns) = state.get_ref(r) else { return };
    let name = r.name.clone();
    if terminating(&ns) {
        state.finalize_namespace(&name);
        return;
    }
    if let Some(sa_rt) = rt(state, "", "v1", "serviceaccounts")
        && state.get(&sa_rt, &name, "default").is_none()
    {
        let body = json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "default", "namespace": name}});
        state.controller_create(&sa_rt, body);
    }
    if let Some(cm_rt) = rt(state, "", "v1", "configmaps")
        && state.get(&cm_rt, &name, "kube-root-ca.crt").is_none()
    {
        let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "kube-root-ca.crt", "namespace": name,
                "annotations": {"kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."}},
            "data": {"ca.crt": "-----BEGIN CERTIFICATE-----\nZmFrZQ==\n-----END CERTIFICATE-----\n"}});
        state.controller_create(&cm_rt, body);
    }
}

/// A deleted CustomResourceDefinition takes its kinds and objects along.
fn sync_crd(state: &mut State, r: &ObjRef) {
    if state.get_ref(r).is_some() {
        return;
    }
    let Some((plural, group)) = r.name.split_once('.') else {
        return;
    };
    let (plural, group) = (plural.to_owned(), group.to_owned());
    let store = format!("{group}/{plural}");
    for object in state.list(&store, None, None) {
        let namespace = str_at(&object, "/metadata/namespace").to_owned();
        let name = str_at(&object, "/metadata/name").to_owned();
        state.remove(&store, &namespace, &name);
    }
    state.registry.remove(&group, &plural);
}
