//! The fake node and its kubelet (and scheduler): pods are bound to
//! `fake-node`, get an IP, and their containers go through the states the
//! [`Behaviour`] registered for their image prescribes; container logs,
//! Warning events, and the metrics API's usage figures.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tokio::time::Instant;

use super::Behaviour;
use super::state::{ObjRef, State, Work, str_at};
use super::time;

/// The node every pod runs on.
pub(crate) const NODE: &str = "fake-node";
/// Its address (`status.hostIP`).
pub(crate) const HOST_IP: &str = "172.18.0.2";

/// How long a `Ready` container takes to become ready.
const READY_DELAY: Duration = Duration::from_millis(50);
/// When a crashing container first exits.
const FIRST_CRASH: Duration = Duration::from_millis(100);
/// How often a crashing container restarts.
const CRASH_PERIOD: Duration = Duration::from_millis(200);
/// Restarts after which the restart count stops growing.
const MAX_RESTARTS: u64 = 20;
/// How long `ErrImagePull` lasts before `ImagePullBackOff`.
const PULL_BACKOFF: Duration = Duration::from_millis(200);
/// How long a deleted (scheduled) pod takes to terminate.
const TERMINATION: Duration = Duration::from_millis(100);

/// One line a container printed.
#[derive(Debug, Clone)]
pub(crate) struct LogLine {
    pub(crate) time: SystemTime,
    pub(crate) text: String,
}

/// What the kubelet remembers of a pod.
#[derive(Debug, Clone)]
pub(crate) struct PodRuntime {
    start: Instant,
    start_wall: SystemTime,
    ip: String,
    /// (container, image, behaviour) of the regular containers.
    containers: Vec<(String, String, Behaviour)>,
    logged: HashSet<String>,
    terminating_since: Option<Instant>,
}

/// The fake node object.
pub(crate) fn node() -> Value {
    let now = time::now();
    let condition = |t: &str, s: &str, reason: &str, message: &str| {
        json!({"type": t, "status": s, "reason": reason, "message": message,
               "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": NODE,
            "labels": {
                "kubernetes.io/hostname": NODE,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node-role.kubernetes.io/control-plane": "",
            },
        },
        "spec": {"podCIDR": "10.244.0.0/16", "podCIDRs": ["10.244.0.0/16"]},
        "status": {
            "capacity": {"cpu": "8", "memory": "32Gi", "pods": "1000", "ephemeral-storage": "100Gi"},
            "allocatable": {"cpu": "8", "memory": "32Gi", "pods": "1000", "ephemeral-storage": "100Gi"},
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": HOST_IP},
                {"type": "Hostname", "address": NODE},
            ],
            "nodeInfo": {
                "kubeletVersion": "v1.33.0",
                "containerRuntimeVersion": "containerd://2.0.0",
                "operatingSystem": "linux",
                "architecture": "amd64",
                "osImage": "fake",
                "kernelVersion": "6.0.0",
            },
        },
    })
}

fn hex_of(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for p in parts {
        hasher.update(p.as_bytes());
        hasher.update([0]);
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn image_id(image: &str) -> String {
    let repo = image.split(['@', ':']).next().unwrap_or(image);
    let repo = if repo.contains('/') {
        repo.to_owned()
    } else {
        format!("docker.io/library/{repo}")
    };
    format!("{repo}@sha256:{}", hex_of(&[image]))
}

fn container_id(uid: &str, name: &str, instance: u64) -> String {
    format!(
        "containerd://{}",
        hex_of(&[uid, name, &instance.to_string()])
    )
}

fn at(start: SystemTime, offset: Duration) -> String {
    time::seconds(start + offset)
}

/// Appends a line to a container's log.
pub(crate) fn append_log(
    state: &mut State,
    namespace: &str,
    pod: &str,
    container: &str,
    text: &str,
) {
    state
        .logs
        .entry((namespace.to_owned(), pod.to_owned(), container.to_owned()))
        .or_default()
        .push(LogLine {
            time: SystemTime::now(),
            text: text.to_owned(),
        });
    state.notify_logs();
}

/// Reconciles one pod: binding, status, logs, events, termination.
pub(crate) fn sync_pod(state: &mut State, r: &ObjRef) {
    let Some(pod) = state.get_ref(r) else { return };
    let uid = str_at(&pod, "/metadata/uid").to_owned();
    let now = Instant::now();
    if pod.pointer("/metadata/deletionTimestamp").is_some() {
        let runtime = state.pods.entry(uid).or_insert_with(|| PodRuntime {
            start: now,
            start_wall: SystemTime::now(),
            ip: String::new(),
            containers: Vec::new(),
            logged: HashSet::new(),
            terminating_since: None,
        });
        let since = *runtime.terminating_since.get_or_insert(now);
        if now >= since + TERMINATION {
            if super::state::finalizers(&pod).is_empty() {
                state.remove("/pods", &r.namespace, &r.name);
            }
        } else {
            state.enqueue_at(since + TERMINATION, Work::Object(r.clone()));
        }
        return;
    }
    if !state.pods.contains_key(&uid) {
        let containers: Vec<(String, String, Behaviour)> = pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .map(|cs| {
                cs.iter()
                    .map(|c| {
                        let image = c["image"].as_str().unwrap_or_default().to_owned();
                        let behaviour = state
                            .behaviours
                            .get(&image)
                            .cloned()
                            .unwrap_or(Behaviour::Ready);
                        (
                            c["name"].as_str().unwrap_or_default().to_owned(),
                            image,
                            behaviour,
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let unschedulable = pod_unschedulable(&containers).is_some();
        let ip = if unschedulable {
            String::new()
        } else {
            state.allocate_pod_ip()
        };
        state.pods.insert(
            uid.clone(),
            PodRuntime {
                start: now,
                start_wall: SystemTime::now(),
                ip,
                containers,
                logged: HashSet::new(),
                terminating_since: None,
            },
        );
    }
    let Some(runtime) = state.pods.get(&uid).cloned() else {
        return;
    };
    let elapsed = now.saturating_duration_since(runtime.start);
    let (status, next) = pod_status(&pod, &runtime, elapsed);
    let mut new = (*pod).clone();
    let scheduled = pod_unschedulable(&runtime.containers).is_none();
    if scheduled && pod.pointer("/spec/nodeName").is_none() {
        new["spec"]["nodeName"] = json!(NODE);
    }
    new["status"] = status;
    if new != *pod {
        state.put("/pods", new);
    }
    side_effects(state, &pod, &runtime, elapsed);
    if let Some(next) = next {
        state.enqueue_at(runtime.start + next, Work::Object(r.clone()));
    }
}

fn pod_unschedulable(containers: &[(String, String, Behaviour)]) -> Option<&str> {
    containers.iter().find_map(|(_, _, b)| match b {
        Behaviour::Unschedulable { message } => Some(message.as_str()),
        _ => None,
    })
}

/// Logs and events a pod's containers produce up to `elapsed`.
fn side_effects(state: &mut State, pod: &Arc<Value>, runtime: &PodRuntime, elapsed: Duration) {
    let namespace = str_at(pod, "/metadata/namespace").to_owned();
    let name = str_at(pod, "/metadata/name").to_owned();
    let uid = str_at(pod, "/metadata/uid").to_owned();
    let mut done = Vec::new();
    let mark = |key: String, done: &mut Vec<String>| {
        if runtime.logged.contains(&key) || done.contains(&key) {
            false
        } else {
            done.push(key);
            true
        }
    };
    if let Some(message) = pod_unschedulable(&runtime.containers) {
        if mark("scheduling".to_owned(), &mut done) {
            let message = message.to_owned();
            event(
                state,
                pod,
                "",
                "FailedScheduling",
                &message,
                "default-scheduler",
            );
        }
    } else {
        for c in pod
            .pointer("/spec/initContainers")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let cname = c["name"].as_str().unwrap_or_default();
            if mark(format!("start/{cname}"), &mut done) {
                let image = c["image"].as_str().unwrap_or_default();
                append_log(state, &namespace, &name, cname, &format!("started {image}"));
            }
        }
        for (cname, image, behaviour) in &runtime.containers {
            let field = format!("spec.containers{{{cname}}}");
            match behaviour {
                Behaviour::ImagePullBackOff => {
                    if mark(format!("pull/{cname}"), &mut done) {
                        event(
                            state,
                            pod,
                            &field,
                            "Failed",
                            &format!("Failed to pull image \"{image}\": {}", pull_error(image)),
                            "kubelet",
                        );
                        event(
                            state,
                            pod,
                            &field,
                            "Failed",
                            "Error: ErrImagePull",
                            "kubelet",
                        );
                    }
                    if elapsed >= PULL_BACKOFF && mark(format!("backoff/{cname}"), &mut done) {
                        event(
                            state,
                            pod,
                            &field,
                            "BackOff",
                            &format!("Back-off pulling image \"{image}\""),
                            "kubelet",
                        );
                        event(
                            state,
                            pod,
                            &field,
                            "Failed",
                            "Error: ImagePullBackOff",
                            "kubelet",
                        );
                    }
                    continue;
                }
                Behaviour::Unschedulable { .. } => continue,
                _ => {}
            }
            if mark(format!("start/{cname}"), &mut done) {
                append_log(state, &namespace, &name, cname, &format!("started {image}"));
            }
            let crashed = matches!(
                behaviour,
                Behaviour::CrashLoop { .. } | Behaviour::OomKilled
            ) && elapsed >= FIRST_CRASH;
            if let Behaviour::NeverReady { message } = behaviour
                && mark(format!("unhealthy/{cname}"), &mut done)
            {
                event(
                    state,
                    pod,
                    &field,
                    "Unhealthy",
                    &format!("Readiness probe failed: {message}"),
                    "kubelet",
                );
            }
            if crashed && mark(format!("crash/{cname}"), &mut done) {
                if let Behaviour::CrashLoop { message, .. } = behaviour {
                    append_log(state, &namespace, &name, cname, message);
                }
                event(
                    state,
                    pod,
                    &field,
                    "BackOff",
                    &format!(
                        "Back-off restarting failed container {cname} in pod {name}_{namespace}({uid})"
                    ),
                    "kubelet",
                );
            }
        }
    }
    if !done.is_empty()
        && let Some(rt) = state.pods.get_mut(&uid)
    {
        rt.logged.extend(done);
    }
}

fn pull_error(image: &str) -> String {
    format!(
        "rpc error: code = NotFound desc = failed to pull and unpack image \"{image}\": failed to resolve reference \"{image}\": not found"
    )
}

/// Creates a Warning event about a pod.
fn event(
    state: &mut State,
    pod: &Value,
    field_path: &str,
    reason: &str,
    message: &str,
    component: &str,
) {
    let Some(rt) = state.registry.get("", "v1", "events") else {
        return;
    };
    let namespace = str_at(pod, "/metadata/namespace").to_owned();
    let name = str_at(pod, "/metadata/name");
    let suffix: u64 = rand::random();
    let now = time::now();
    let mut involved = json!({
        "kind": "Pod",
        "namespace": namespace,
        "name": name,
        "uid": str_at(pod, "/metadata/uid"),
        "apiVersion": "v1",
        "resourceVersion": str_at(pod, "/metadata/resourceVersion"),
    });
    if !field_path.is_empty() {
        involved["fieldPath"] = json!(field_path);
    }
    let mut source = json!({"component": component});
    if component == "kubelet" {
        source["host"] = json!(NODE);
    }
    let body = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": format!("{name}.{suffix:016x}"), "namespace": namespace},
        "involvedObject": involved,
        "reason": reason,
        "message": message,
        "source": source,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
        "type": "Warning",
        "eventTime": null,
        "reportingComponent": component,
        "reportingInstance": if component == "kubelet" { NODE } else { "" },
    });
    let _ = state.create(&rt, Some(&namespace), body, component, false);
}

/// The status of `pod` `elapsed` after the kubelet first saw it, and when
/// it next changes (since that moment).
fn pod_status(pod: &Value, runtime: &PodRuntime, elapsed: Duration) -> (Value, Option<Duration>) {
    let start = runtime.start_wall;
    let started_at = time::seconds(start);
    let qos = pod
        .pointer("/status/qosClass")
        .cloned()
        .unwrap_or_else(|| json!(super::kinds::qos_class(&pod["spec"])));
    if let Some(message) = pod_unschedulable(&runtime.containers) {
        return (
            json!({
                "phase": "Pending",
                "qosClass": qos,
                "conditions": [{
                    "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                    "message": message, "lastProbeTime": null, "lastTransitionTime": started_at,
                }],
            }),
            None,
        );
    }
    let uid = str_at(pod, "/metadata/uid");
    let pod_name = str_at(pod, "/metadata/name");
    let namespace = str_at(pod, "/metadata/namespace");
    let mut next: Option<Duration> = None;
    let mut soon = |d: Duration| {
        if d > elapsed {
            next = Some(next.map_or(d, |n| n.min(d)));
        }
    };
    let init: Vec<Value> = pod
        .pointer("/spec/initContainers")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|c| {
            let name = c["name"].as_str().unwrap_or_default();
            let image = c["image"].as_str().unwrap_or_default();
            let id = container_id(uid, name, 0);
            json!({
                "name": name, "image": image, "imageID": image_id(image), "containerID": id,
                "ready": true, "restartCount": 0, "started": false,
                "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                    "startedAt": started_at, "finishedAt": started_at, "containerID": id}},
                "lastState": {},
            })
        })
        .collect();
    let mut statuses = Vec::new();
    let mut pulling = false;
    let mut unready = Vec::new();
    let mut ready_since = Duration::ZERO;
    for (name, image, behaviour) in &runtime.containers {
        let mut status = json!({
            "name": name, "image": image, "imageID": image_id(image),
            "containerID": container_id(uid, name, 0),
            "restartCount": 0, "lastState": {},
        });
        let running = json!({"running": {"startedAt": started_at}});
        let (ready, started) = match behaviour {
            Behaviour::Ready | Behaviour::ReadyAfter(_) => {
                let delay = match behaviour {
                    Behaviour::ReadyAfter(d) => *d,
                    _ => READY_DELAY,
                };
                status["state"] = running;
                soon(delay);
                ready_since = ready_since.max(delay);
                (elapsed >= delay, true)
            }
            Behaviour::NeverReady { .. } => {
                status["state"] = running;
                (false, true)
            }
            Behaviour::CrashLoop { .. } | Behaviour::OomKilled => {
                if elapsed < FIRST_CRASH {
                    status["state"] = running;
                    soon(FIRST_CRASH);
                    (false, true)
                } else {
                    let since_first = elapsed - FIRST_CRASH;
                    let periods = u64::try_from(since_first.as_millis() / CRASH_PERIOD.as_millis())
                        .unwrap_or(u64::MAX);
                    let restarts = (1 + periods).min(MAX_RESTARTS);
                    if restarts < MAX_RESTARTS {
                        soon(
                            FIRST_CRASH
                                + CRASH_PERIOD * u32::try_from(restarts).unwrap_or(u32::MAX),
                        );
                    }
                    let (exit_code, reason, message) = match behaviour {
                        Behaviour::CrashLoop { exit_code, message } => {
                            (*exit_code, "Error", Some(message.as_str()))
                        }
                        _ => (137, "OOMKilled", None),
                    };
                    let crashed_at =
                        FIRST_CRASH + CRASH_PERIOD * u32::try_from(restarts - 1).unwrap_or(0);
                    let instance_start = crashed_at.saturating_sub(Duration::from_millis(100));
                    let backoff = (10u64 << (restarts - 1).min(5)).min(300);
                    let mut terminated = json!({
                        "exitCode": exit_code, "reason": reason,
                        "startedAt": at(start, instance_start), "finishedAt": at(start, crashed_at),
                        "containerID": container_id(uid, name, restarts - 1),
                    });
                    if let Some(message) = message {
                        terminated["message"] = json!(message);
                    }
                    status["restartCount"] = json!(restarts);
                    status["containerID"] = json!(container_id(uid, name, restarts - 1));
                    status["lastState"] = json!({"terminated": terminated});
                    status["state"] = json!({"waiting": {
                        "reason": "CrashLoopBackOff",
                        "message": format!(
                            "back-off {} restarting failed container={name} pod={pod_name}_{namespace}({uid})",
                            time::go_duration(backoff)
                        ),
                    }});
                    (false, false)
                }
            }
            Behaviour::ImagePullBackOff => {
                pulling = true;
                status["imageID"] = json!("");
                if let Some(m) = status.as_object_mut() {
                    m.remove("containerID");
                }
                status["state"] = if elapsed < PULL_BACKOFF {
                    soon(PULL_BACKOFF);
                    json!({"waiting": {"reason": "ErrImagePull", "message": pull_error(image)}})
                } else {
                    json!({"waiting": {"reason": "ImagePullBackOff",
                        "message": format!("Back-off pulling image \"{image}\"")}})
                };
                (false, false)
            }
            Behaviour::Unschedulable { .. } => (false, false),
        };
        status["ready"] = json!(ready);
        status["started"] = json!(started);
        if !ready {
            unready.push(name.clone());
        }
        statuses.push(status);
    }
    let all_ready = unready.is_empty();
    let condition = |t: &str, ok: bool, since: String| {
        let mut c = json!({"type": t, "status": if ok { "True" } else { "False" },
            "lastProbeTime": null, "lastTransitionTime": since});
        if !ok {
            c["reason"] = json!("ContainersNotReady");
            c["message"] = json!(format!(
                "containers with unready status: [{}]",
                unready.join(" ")
            ));
        }
        c
    };
    let ready_at = if all_ready {
        at(start, ready_since)
    } else {
        started_at.clone()
    };
    let mut status = json!({
        "phase": if pulling { "Pending" } else { "Running" },
        "qosClass": qos,
        "hostIP": HOST_IP,
        "hostIPs": [{"ip": HOST_IP}],
        "podIP": runtime.ip,
        "podIPs": [{"ip": runtime.ip}],
        "startTime": started_at,
        "conditions": [
            {"type": "PodReadyToStartContainers", "status": "True", "lastProbeTime": null, "lastTransitionTime": started_at},
            {"type": "Initialized", "status": "True", "lastProbeTime": null, "lastTransitionTime": started_at},
            condition("Ready", all_ready, ready_at.clone()),
            condition("ContainersReady", all_ready, ready_at),
            {"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": started_at},
        ],
        "containerStatuses": statuses,
    });
    if !init.is_empty() {
        status["initContainerStatuses"] = Value::Array(init);
    }
    (status, next)
}

/// Whether a pod is ready (its `Ready` condition).
pub(crate) fn is_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// When a ready pod became ready.
pub(crate) fn ready_since(pod: &Value) -> Option<SystemTime> {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c["type"] == "Ready" && c["status"] == "True")
        .and_then(|c| time::parse(c["lastTransitionTime"].as_str()?))
}

/// `PodMetrics` of a running pod (`None` for pods not running).
pub(crate) fn pod_metrics(state: &State, pod: &Value) -> Option<Value> {
    if pod.pointer("/status/phase").and_then(Value::as_str) != Some("Running") {
        return None;
    }
    let namespace = str_at(pod, "/metadata/namespace");
    let name = str_at(pod, "/metadata/name");
    let containers: Vec<Value> = pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)?
        .iter()
        .filter(|c| c.pointer("/state/running").is_some())
        .map(|c| {
            let container = c["name"].as_str().unwrap_or_default();
            let (cpu, memory) = state
                .metrics_usage
                .get(&(namespace.to_owned(), name.to_owned(), container.to_owned()))
                .cloned()
                .unwrap_or_else(|| ("12m".to_owned(), "34Mi".to_owned()));
            json!({"name": container, "usage": {"cpu": cpu, "memory": memory}})
        })
        .collect();
    let mut metadata = json!({
        "name": name,
        "namespace": namespace,
        "creationTimestamp": time::now(),
    });
    if let Some(labels) = pod.pointer("/metadata/labels") {
        metadata["labels"] = labels.clone();
    }
    Some(json!({
        "kind": "PodMetrics",
        "apiVersion": "metrics.k8s.io/v1beta1",
        "metadata": metadata,
        "timestamp": time::now(),
        "window": "15s",
        "containers": containers,
    }))
}

/// `NodeMetrics` of the fake node.
pub(crate) fn node_metrics() -> Value {
    json!({
        "kind": "NodeMetrics",
        "apiVersion": "metrics.k8s.io/v1beta1",
        "metadata": {"name": NODE, "creationTimestamp": time::now(),
            "labels": {"kubernetes.io/hostname": NODE}},
        "timestamp": time::now(),
        "window": "20s",
        "usage": {"cpu": "250m", "memory": "2Gi"},
    })
}
