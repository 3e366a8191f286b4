//! [`FakeKube`]: a stateful, in-process stand-in for a Kubernetes API
//! server (v1.33) and the controllers and kubelet behind it, for tests and
//! benchmarks. No real kube-apiserver can run where these tests do; this
//! one follows the real API's documented behaviour closely enough that
//! kube-rs clients, reflectors and watchers run against it unchanged.
//!
//! # The API
//!
//! Plain HTTP/1.1 on `http://127.0.0.1:{port}` ([`FakeKube::url`]). Every
//! request needs `Authorization: Bearer <token>` ([`FakeKube::token`]),
//! else `401 Unauthorized`; only `/healthz`, `/livez` and `/readyz` are
//! anonymous (they answer `ok`). Errors are `Status` objects with the real
//! reasons, codes, messages and `details` (NotFound 404, AlreadyExists and
//! Conflict 409, Invalid 422 with `details.causes[].field`, BadRequest 400,
//! MethodNotAllowed 405, UnsupportedMediaType 415, Expired 410,
//! ServiceUnavailable 503, Forbidden 403 for new content in a terminating
//! namespace).
//!
//! - Discovery: `GET /version` (v1.33.0), `/api`, `/api/v1`, `/apis`,
//!   `/apis/{group}`, `/apis/{group}/{version}` with subresources
//!   (`pods/log`, `pods/exec`, `*/status`, `deployments/scale`, …), and
//!   aggregated discovery (`apidiscovery.k8s.io/v2`) when the `Accept`
//!   header asks for it first, as kube-rs's `Discovery::run_aggregated`
//!   does.
//! - Kinds: v1 Namespace, Pod, Service, ConfigMap, Secret, ServiceAccount,
//!   PersistentVolumeClaim, PersistentVolume, Event, Endpoints, Node,
//!   LimitRange, ResourceQuota; apps/v1 Deployment, StatefulSet,
//!   ReplicaSet, DaemonSet, ControllerRevision; autoscaling/v2
//!   HorizontalPodAutoscaler; policy/v1 PodDisruptionBudget;
//!   networking.k8s.io/v1 NetworkPolicy, Ingress, IngressClass; batch/v1
//!   Job, CronJob; coordination.k8s.io/v1 Lease; discovery.k8s.io/v1
//!   EndpointSlice; storage.k8s.io/v1 StorageClass; scheduling.k8s.io/v1
//!   PriorityClass; rbac.authorization.k8s.io/v1 roles and bindings;
//!   apiextensions.k8s.io/v1 CustomResourceDefinition — creating one serves
//!   its kind in every served version (conversion `None`: one store, the
//!   `apiVersion` rewritten), with `/status` and `/scale` if declared;
//!   deleting it removes the kind and its objects. metrics.k8s.io/v1beta1
//!   PodMetrics and NodeMetrics only when [enabled](FakeKube::enable_metrics)
//!   (read-only; usage `12m`/`34Mi` per running container unless
//!   [set](FakeKube::set_pod_metrics)). Namespaced objects need an existing
//!   namespace (`default`, `kube-system`, `kube-public` and
//!   `kube-node-lease` exist from the start, with the `default/kubernetes`
//!   Service and the node `fake-node`); new namespaces get a `default`
//!   ServiceAccount and the `kube-root-ca.crt` ConfigMap.
//! - Verbs: GET; LIST (namespaced and all-namespaces paths; `labelSelector`
//!   with `=`, `==`, `!=`, `in`, `notin`, `key`, `!key`; `fieldSelector`
//!   `metadata.name`, `metadata.namespace` and the kind-specific fields the
//!   real server supports, e.g. `status.phase` for pods; `limit` and
//!   `continue`; built-in kinds' list items without `kind`/`apiVersion`, as
//!   the real server writes them); POST (`generateName`, `dryRun=All`);
//!   PUT (a stale `metadata.resourceVersion` is a 409 Conflict); PATCH with
//!   `application/apply-patch+yaml` (server-side apply, JSON or YAML body,
//!   `fieldManager` required, `force`), `application/merge-patch+json`,
//!   `application/strategic-merge-patch+json` (built-in kinds; lists with a
//!   patch merge key merge by it; `$patch: delete|replace`) and
//!   `application/json-patch+json`; DELETE (`200` with the object while
//!   its deletion waits for finalizers or a pod's termination, and for the
//!   kinds whose real storage returns it — pods, services, namespaces,
//!   nodes, service accounts, volumes, claims, storage classes, custom
//!   resources —, else a `Success` status naming it; `propagationPolicy`
//!   Background (default), Foreground or Orphan; preconditions) and DELETE
//!   of a collection. `Accept: …;as=PartialObjectMetadata` gets
//!   metadata-only objects.
//! - Metadata the server sets: `uid`, `resourceVersion` (one global
//!   counter), `generation` (for kinds that have one: bumped when anything
//!   outside `metadata` and `status` changes), `creationTimestamp`,
//!   `namespace` from the path, `metadata.managedFields`; names are
//!   validated (DNS-1123 subdomain; DNS-1123 label for Namespace, DNS-1035
//!   label for Service), as are label and annotation keys and values, and
//!   the rules clients meet most: workload selectors matching template
//!   labels and immutable, container names and images, Service ports, the
//!   fields pods and StatefulSets may not change, CRD names. Defaults are
//!   filled in as the real server does for the common fields (replicas,
//!   strategies, pod spec and container defaults, Service type, ports and
//!   cluster IP (10.96.x.y, `None` for headless), Secret `stringData` →
//!   `data`).
//! - Server-side apply: the result is the live object with the fields that
//!   manager applied before replaced by the new configuration — fields it
//!   omits now are removed unless another manager owns them; a field
//!   another manager owns with a different value is a 409 Conflict naming
//!   field and manager unless `force=true`; an apply that changes nothing
//!   keeps the resourceVersion and sends no watch event. Non-apply writes
//!   take ownership of the fields they change (operation `Update`).
//!   Associative lists (containers, env, ports, volumes, conditions, …) are
//!   keyed as in the real schema; other lists are atomic.
//! - Subresources: `/status` (writes change only `.status`; main-resource
//!   writes ignore `.status` for kinds that have it), `/scale` of
//!   Deployments, StatefulSets, ReplicaSets (and CRDs declaring it) as
//!   `autoscaling/v1` `Scale` (GET, PUT, merge and apply PATCH),
//!   `pods/{name}/log` (`container` — required when the pod has several —,
//!   `follow` (streams lines until the pod is deleted or the client goes
//!   away), `tailLines`, `sinceSeconds`, `sinceTime`, `timestamps`,
//!   `previous`, `limitBytes`), `pods/{name}/exec` (WebSocket with the
//!   channel protocol, `v5.channel.k8s.io` preferred over
//!   `v4.channel.k8s.io`: stdin 0, stdout 1, stderr 2, a `Status` on 3 at
//!   the end (`NonZeroExitCode` with the exit code as the kubelet reports
//!   it), v5's 255 to close stdin; **the command runs as a local process
//!   on this host**, with the container's literal `env` values and the
//!   host's `PATH` and `HOME`), `pods/{name}/eviction`.
//! - Watch (`watch=true|1`): newline-delimited JSON events `ADDED`,
//!   `MODIFIED`, `DELETED`, `BOOKMARK` after `resourceVersion` (without
//!   one, or `0`, every current object first as `ADDED`), filtered by
//!   namespace and selectors (an object that stops matching arrives as
//!   `DELETED`, one that starts matching as `ADDED`); `sendInitialEvents`
//!   ends the initial events with the `k8s.io/initial-events-end`
//!   bookmark; `allowWatchBookmarks` gets a bookmark every second; the
//!   stream ends after `timeoutSeconds`. The last 20,000 events of each
//!   resource are kept; an older `resourceVersion` (or any from before a
//!   [`compact`](FakeKube::compact)) gets `{"type":"ERROR","object":{…410
//!   Expired…}}`, so kube-runtime's watcher relists.
//!
//! # The controllers and the node
//!
//! Reacting to changes within milliseconds: Deployments own one ReplicaSet
//! per pod template (`{name}-{hash}`, `pod-template-hash`,
//! `deployment.kubernetes.io/revision`; returning to an old template
//! reuses its ReplicaSet with the next revision), rolled out per strategy
//! (RollingUpdate with `maxSurge`/`maxUnavailable` as the real controller
//! computes them, Recreate), `paused`, `revisionHistoryLimit`, and status
//! with the Available and Progressing conditions (including
//! `ProgressDeadlineExceeded`). ReplicaSets own pods `{name}-{5 chars}`.
//! StatefulSets own pods `{name}-{ordinal}` (OrderedReady or Parallel),
//! a PersistentVolumeClaim per `volumeClaimTemplates` entry (kept when the
//! StatefulSet goes unless its retention policy says Delete) and
//! ControllerRevisions, and roll template changes out from the highest
//! ordinal down, one ready pod at a time. Claims bind at once. Deleting an
//! owner deletes its dependents (`ownerReferences`) unless orphaned;
//! deleting a namespace deletes everything in it.
//!
//! Pods are scheduled to `fake-node` and get an IP (10.244.x.y); each
//! container behaves as the [`Behaviour`] set for its image
//! ([`set_behaviour`](FakeKube::set_behaviour); default: ready after
//! 50 ms), with container statuses, conditions, Warning events and log
//! lines like the kubelet's. Deleted pods terminate within 100 ms.
//!
//! # Simplified or absent
//!
//! JSON (and YAML) only, no protobuf, no HTTP/2. Unknown fields are stored,
//! not pruned, and quantities are not canonicalized. Pages after the first
//! of a paginated list read the current state, not a snapshot. Apply
//! conflicts compare leaf values; lists the fake does not know as keyed
//! are atomic. HorizontalPodAutoscalers, Jobs, CronJobs, DaemonSets,
//! Endpoints, PodDisruptionBudgets and NetworkPolicies are stored and
//! served but no controller acts on them; `minReadySeconds` is honoured,
//! readiness gates and probes' timing are not. A namespace's deletion
//! takes milliseconds and removes its objects whatever their finalizers; a
//! pod terminates in 100 ms whatever its grace period. `previous` logs are
//! the container's whole log. `pods/attach`, `pods/portforward` and
//! proxies are not served (400).
//!
//! Tests inspect and steer it with [`objects`](FakeKube::objects),
//! [`object`](FakeKube::object), [`written`](FakeKube::written),
//! [`requests`](FakeKube::requests), [`fail_next`](FakeKube::fail_next),
//! [`set_down`](FakeKube::set_down) and
//! [`append_log`](FakeKube::append_log).

mod apply;
mod controllers;
mod exec;
mod kinds;
mod kubelet;
mod logs;
mod patch;
mod registry;
mod selector;
mod server;
mod state;
mod status;
mod time;
mod validate;
mod yaml;

pub use yaml::documents as yaml_documents;

#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::Error;
use state::{Fault, Shared, State, str_at};

/// How the containers of an image behave on the fake node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    /// Running, and ready 50 ms after the pod is scheduled.
    Ready,
    /// Running, and ready after this long.
    ReadyAfter(Duration),
    /// Running, but its readiness probe fails with `message` (a Warning
    /// event `Readiness probe failed: <message>`).
    NeverReady {
        /// What the probe reports.
        message: String,
    },
    /// Exits with `exit_code` 100 ms after starting, then restarts every
    /// 200 ms (up to 20 restarts) in `CrashLoopBackOff`; `message` is its
    /// last log line and `lastState.terminated.message`.
    CrashLoop {
        /// The exit code.
        exit_code: i32,
        /// What it prints before exiting.
        message: String,
    },
    /// Killed for memory like `CrashLoop` (exit code 137, reason
    /// `OOMKilled`).
    OomKilled,
    /// The image cannot be pulled: `ErrImagePull`, then after 200 ms
    /// `ImagePullBackOff`; the pod stays Pending.
    ImagePullBackOff,
    /// The pod cannot be scheduled (Pending, `PodScheduled=False`, reason
    /// `Unschedulable`).
    Unschedulable {
        /// The scheduler's message, e.g. `0/1 nodes are available: 1
        /// Insufficient cpu.`.
        message: String,
    },
}

/// One request the fake answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// `GET`, `PATCH`, ….
    pub method: String,
    /// The path, without query.
    pub path: String,
    /// The raw query string.
    pub query: String,
    /// The `Content-Type` header.
    pub content_type: Option<String>,
    /// The `fieldManager` query parameter.
    pub field_manager: Option<String>,
    /// Whether it was a watch (`watch=true`).
    pub is_watch: bool,
    /// The status the fake answered.
    pub status: u16,
}

/// The fake API server. Stops (server, watches, controllers, exec
/// processes) when dropped.
#[derive(Debug)]
pub struct FakeKube {
    shared: Arc<Shared>,
    url: String,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
        self.server.abort();
    }
}

impl FakeKube {
    /// Starts the fake on a free loopback port, with its namespaces, node
    /// and controllers.
    pub async fn start() -> Result<Self, Error> {
        let context = "start the fake Kubernetes API";
        let listener = crate::loopback_listener(context)?;
        let addr = listener.local_addr().map_err(|e| Error::io(context, e))?;
        let listener =
            tokio::net::TcpListener::from_std(listener).map_err(|e| Error::io(context, e))?;
        let token: String = {
            let bytes: [u8; 24] = rand::random();
            bytes.iter().map(|b| format!("{b:02x}")).collect()
        };
        let work = Arc::new(Notify::new());
        let logs = Arc::new(Notify::new());
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(Arc::clone(&work), Arc::clone(&logs))),
            token,
            shutdown: CancellationToken::new(),
            work,
            logs,
        });
        bootstrap(&mut shared.lock());
        tokio::spawn(controllers::run(Arc::clone(&shared)));
        let router = axum::Router::new()
            .fallback(server::handle)
            .with_state(Arc::clone(&shared));
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(ctrl_runtime::net::nodelay(listener), router).await {
                tracing::warn!(error = %e, "the fake Kubernetes API stopped");
            }
        });
        Ok(Self {
            shared,
            url: format!("http://{addr}"),
            server,
        })
    }

    /// The API server's URL (`http://127.0.0.1:{port}`).
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The bearer token every request must carry.
    pub fn token(&self) -> &str {
        &self.shared.token
    }

    /// Writes a kubeconfig for this server: cluster, user (the token) and
    /// context all named `fake`, the current context, namespace `default`.
    pub fn write_kubeconfig(&self, path: &Path) -> Result<(), Error> {
        let config = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {url}\nusers:\n- name: fake\n  user:\n    token: {token}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\ncurrent-context: fake\npreferences: {{}}\n",
            url = self.url,
            token = self.shared.token,
        );
        std::fs::write(path, config)
            .map_err(|e| Error::io(format!("write a kubeconfig to {}", path.display()), e))
    }

    /// The current objects of a kind in all namespaces (`api_version` like
    /// `apps/v1`), ordered by namespace and name.
    pub fn objects(&self, api_version: &str, kind: &str) -> Vec<Value> {
        let state = self.shared.lock();
        let Some(rt) = state.registry.by_kind(api_version, kind) else {
            return Vec::new();
        };
        state
            .list(&rt.store_key(), None, None)
            .iter()
            .map(|o| with_api_version(o, api_version))
            .collect()
    }

    /// One object (`namespace`: `None` for cluster-scoped kinds).
    pub fn object(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let state = self.shared.lock();
        let rt = state.registry.by_kind(api_version, kind)?;
        state
            .get(&rt, namespace.unwrap_or_default(), name)
            .map(|o| with_api_version(&o, api_version))
    }

    /// Every object body clients sent to create, replace or apply, as
    /// sent (YAML as JSON), oldest first.
    pub fn written(&self) -> Vec<Value> {
        self.shared.lock().written.clone()
    }

    /// Every request answered, oldest first (watches and followed logs
    /// when their response starts).
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.lock().requests.clone()
    }

    /// How many requests were answered.
    pub fn request_count(&self) -> usize {
        self.shared.lock().requests.len()
    }

    /// Forgets the recorded requests ([`written`](Self::written) bodies
    /// stay).
    pub fn reset_requests(&self) {
        self.shared.lock().requests.clear();
    }

    /// How containers of `image` (exactly as in the pod spec) behave in
    /// pods scheduled from now on.
    pub fn set_behaviour(&self, image: &str, behaviour: Behaviour) {
        self.shared
            .lock()
            .behaviours
            .insert(image.to_owned(), behaviour);
    }

    /// Serves the metrics API (`metrics.k8s.io/v1beta1`) or not (its paths
    /// `404` and it is absent from discovery). Off at start.
    pub fn enable_metrics(&self, on: bool) {
        self.shared.lock().metrics = on;
    }

    /// The usage the metrics API reports for a container (default `12m`
    /// CPU, `34Mi` memory).
    pub fn set_pod_metrics(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        cpu: &str,
        memory: &str,
    ) {
        self.shared.lock().metrics_usage.insert(
            (namespace.to_owned(), pod.to_owned(), container.to_owned()),
            (cpu.to_owned(), memory.to_owned()),
        );
    }

    /// A line the container prints (followers get it at once).
    pub fn append_log(&self, namespace: &str, pod: &str, container: &str, line: &str) {
        kubelet::append_log(&mut self.shared.lock(), namespace, pod, container, line);
    }

    /// The next `times` requests with this method (`*` or `""`: any) whose
    /// path contains `path_contains` are answered with `status` and the
    /// `Status` the real server pairs with it.
    pub fn fail_next(&self, method: &str, path_contains: &str, status: u16, times: usize) {
        if times == 0 {
            return;
        }
        self.shared.lock().faults.push(Fault {
            method: method.to_owned(),
            path_contains: path_contains.to_owned(),
            status,
            remaining: times,
        });
    }

    /// While down, every request is answered `503 ServiceUnavailable` and
    /// open watches and log streams end. The controllers keep running.
    pub fn set_down(&self, down: bool) {
        let mut state = self.shared.lock();
        state.down = down;
        if down {
            state.drop_watches();
            state.notify_logs();
        }
    }

    /// Forgets the watch history, as etcd compaction does: watches from an
    /// earlier resourceVersion get `410 Expired`.
    pub fn compact(&self) {
        self.shared.lock().compact();
    }

    /// The current resourceVersion of the whole store.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().resource_version()
    }

    /// Registers a custom resource kind as creating a
    /// `CustomResourceDefinition` `{plural}.{group}` with this version
    /// (served and stored, with a `/status` subresource) does.
    pub fn register_crd(
        &self,
        group: &str,
        version: &str,
        kind: &str,
        plural: &str,
        namespaced: bool,
    ) {
        let mut state = self.shared.lock();
        let Some(rt) =
            state
                .registry
                .get("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        else {
            return;
        };
        let crd = json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": format!("{plural}.{group}")},
            "spec": {
                "group": group,
                "names": {
                    "kind": kind,
                    "plural": plural,
                    "singular": kind.to_ascii_lowercase(),
                    "listKind": format!("{kind}List"),
                },
                "scope": if namespaced { "Namespaced" } else { "Cluster" },
                "versions": [{
                    "name": version,
                    "served": true,
                    "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
                    "subresources": {"status": {}},
                }],
            },
        });
        let name = format!("{plural}.{group}");
        let result = match state.get(&rt, "", &name) {
            Some(_) => state
                .apply(
                    &rt,
                    "",
                    &name,
                    &crd,
                    state::Sub::Main,
                    "fake-kube",
                    true,
                    false,
                )
                .map(|_| ()),
            None => state.create(&rt, None, crd, "fake-kube", false).map(|_| ()),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e.message(), "registering a CRD failed");
        }
    }
}

/// An object as `api_version` serves it (custom resources of several
/// versions share a store).
fn with_api_version(object: &Value, api_version: &str) -> Value {
    let mut object = object.clone();
    if str_at(&object, "/apiVersion") != api_version
        && let Some(m) = object.as_object_mut()
    {
        m.insert("apiVersion".to_owned(), json!(api_version));
    }
    object
}

/// What a fresh cluster has: system namespaces, the node, the
/// `kubernetes` Service.
fn bootstrap(state: &mut State) {
    let manager = "kube-apiserver";
    if let Some(rt) = state.registry.get("", "v1", "namespaces") {
        for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
            let _ = state.create(&rt, None, body, manager, false);
        }
    }
    if let Some(rt) = state.registry.get("", "v1", "nodes") {
        let _ = state.create(&rt, None, kubelet::node(), "kubelet", false);
    }
    if let Some(rt) = state.registry.get("", "v1", "services") {
        let body = json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kubernetes", "namespace": "default",
                "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443, "targetPort": 6443}]},
        });
        let _ = state.create(&rt, Some("default"), body, manager, false);
    }
}
