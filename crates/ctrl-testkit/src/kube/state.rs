//! The fake's storage: one store per resource (objects ordered by
//! namespace and name, a bounded history of watch events, the open
//! watches), one global resourceVersion counter, the uid and owner indexes
//! garbage collection and the controllers use, and the write operations
//! (create, update, apply, patch, delete) with the API server's semantics.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use super::apply::{self, Applied, FieldSet, Pe, Scope, Writer};
use super::kinds;
use super::kubelet::{LogLine, PodRuntime};
use super::patch;
use super::registry::{Registry, ResourceType};
use super::status::{ApiError, FieldError};
use super::{Behaviour, RequestRecord, time};

/// Events kept per store for watches that resume from a resourceVersion.
pub(crate) const HISTORY: usize = 20_000;

/// The manager name of the fake's controllers.
pub(crate) const CONTROLLER_MANAGER: &str = "kube-controller-manager";

/// Everything the server, the controllers and the handle share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) state: Mutex<State>,
    pub(crate) token: String,
    pub(crate) shutdown: tokio_util::sync::CancellationToken,
    /// Woken when controller work is queued.
    pub(crate) work: Arc<Notify>,
    /// Woken when log lines are added or pods go away.
    pub(crate) logs: Arc<Notify>,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Identifies a stored object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ObjRef {
    pub(crate) store: String,
    pub(crate) namespace: String,
    pub(crate) name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventKind {
    Added,
    Modified,
    Deleted,
}

impl EventKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One change of one object.
#[derive(Debug)]
pub(crate) struct Event {
    pub(crate) rv: u64,
    pub(crate) kind: EventKind,
    pub(crate) object: Arc<Value>,
    /// The object before a modification.
    pub(crate) previous: Option<Arc<Value>>,
}

#[derive(Debug)]
struct Watcher {
    namespace: Option<String>,
    tx: mpsc::UnboundedSender<Arc<Event>>,
}

#[derive(Debug, Default)]
struct Store {
    objects: BTreeMap<(String, String), Arc<Value>>,
    history: VecDeque<Arc<Event>>,
    /// Every event after this resourceVersion is in `history`.
    floor: u64,
    watchers: Vec<Watcher>,
}

/// Controller work.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Work {
    /// Reconcile this object (deployment, replica set, pod, …).
    Object(ObjRef),
    /// Garbage-collect around this owner uid.
    Gc(String),
}

/// The controllers' queue: deduplicated work now, and work at a time.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    items: VecDeque<Work>,
    queued: HashSet<Work>,
    timers: BinaryHeap<Reverse<(Instant, u64, Work)>>,
    seq: u64,
}

impl Queue {
    pub(crate) fn push(&mut self, work: Work) {
        if self.queued.insert(work.clone()) {
            self.items.push_back(work);
        }
    }

    pub(crate) fn at(&mut self, when: Instant, work: Work) {
        self.seq += 1;
        self.timers.push(Reverse((when, self.seq, work)));
    }

    /// The next due work, and when the next timer fires.
    pub(crate) fn pop(&mut self, now: Instant) -> (Option<Work>, Option<Instant>) {
        while let Some(Reverse((when, _, _))) = self.timers.peek() {
            if *when > now {
                break;
            }
            if let Some(Reverse((_, _, work))) = self.timers.pop() {
                self.push(work);
            }
        }
        let work = self.items.pop_front();
        if let Some(w) = &work {
            self.queued.remove(w);
        }
        let next = self.timers.peek().map(|Reverse((when, _, _))| *when);
        (work, next)
    }
}

/// An injected failure.
#[derive(Debug, Clone)]
pub(crate) struct Fault {
    pub(crate) method: String,
    pub(crate) path_contains: String,
    pub(crate) status: u16,
    pub(crate) remaining: usize,
}

/// Which part of an object a write addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sub {
    Main,
    Status,
    Scale,
}

impl Sub {
    fn name(self) -> &'static str {
        match self {
            Self::Main => "",
            Self::Status => "status",
            Self::Scale => "scale",
        }
    }
}

/// How a write's field ownership is recorded.
enum Ownership<'a> {
    /// A non-apply write by this manager.
    Update(&'a str),
    /// Already computed (server-side apply).
    Keep,
}

/// `DeleteOptions`.
#[derive(Debug, Clone, Default)]
pub(crate) struct DeleteOptions {
    pub(crate) propagation: Option<String>,
    pub(crate) grace_period: Option<i64>,
    pub(crate) uid: Option<String>,
    pub(crate) resource_version: Option<String>,
    pub(crate) dry_run: bool,
}

/// What a watch starts with.
pub(crate) struct WatchStart {
    pub(crate) backlog: Vec<Arc<Event>>,
    pub(crate) rx: mpsc::UnboundedReceiver<Arc<Event>>,
}

/// The whole fake cluster.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) registry: Registry,
    stores: HashMap<String, Store>,
    rv: u64,
    uids: HashMap<String, ObjRef>,
    dependents: HashMap<String, BTreeSet<ObjRef>>,
    pub(crate) queue: Queue,
    pub(crate) requests: Vec<RequestRecord>,
    pub(crate) written: Vec<Value>,
    pub(crate) behaviours: HashMap<String, Behaviour>,
    pub(crate) metrics: bool,
    pub(crate) metrics_usage: HashMap<(String, String, String), (String, String)>,
    pub(crate) down: bool,
    pub(crate) faults: Vec<Fault>,
    pub(crate) logs: HashMap<(String, String, String), Vec<LogLine>>,
    pub(crate) pods: HashMap<String, PodRuntime>,
    pub(crate) history_limit: usize,
    pub(crate) bookmark_interval: Duration,
    next_pod_ip: u32,
    next_service_ip: u32,
    work: Arc<Notify>,
    logs_changed: Arc<Notify>,
}

impl State {
    pub(crate) fn new(work: Arc<Notify>, logs_changed: Arc<Notify>) -> Self {
        Self {
            registry: Registry::new(),
            stores: HashMap::new(),
            rv: 0,
            uids: HashMap::new(),
            dependents: HashMap::new(),
            queue: Queue::default(),
            requests: Vec::new(),
            written: Vec::new(),
            behaviours: HashMap::new(),
            metrics: false,
            metrics_usage: HashMap::new(),
            down: false,
            faults: Vec::new(),
            logs: HashMap::new(),
            pods: HashMap::new(),
            history_limit: HISTORY,
            bookmark_interval: Duration::from_secs(1),
            next_pod_ip: 0,
            next_service_ip: 0,
            work,
            logs_changed,
        }
    }

    pub(crate) fn resource_version(&self) -> u64 {
        self.rv
    }

    pub(crate) fn enqueue_at(&mut self, when: Instant, work: Work) {
        self.queue.at(when, work);
        self.work.notify_one();
    }

    pub(crate) fn notify_logs(&self) {
        self.logs_changed.notify_waiters();
    }

    // ---- reads ----

    pub(crate) fn get(&self, rt: &ResourceType, namespace: &str, name: &str) -> Option<Arc<Value>> {
        self.get_in(&rt.store_key(), namespace, name)
    }

    pub(crate) fn get_in(&self, store: &str, namespace: &str, name: &str) -> Option<Arc<Value>> {
        self.stores
            .get(store)?
            .objects
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    pub(crate) fn get_ref(&self, r: &ObjRef) -> Option<Arc<Value>> {
        self.get_in(&r.store, &r.namespace, &r.name)
    }

    pub(crate) fn by_uid(&self, uid: &str) -> Option<ObjRef> {
        self.uids.get(uid).cloned()
    }

    /// Objects of a store in `namespace` (all namespaces: `None`), ordered
    /// by namespace and name, starting after `after` (namespace, name).
    pub(crate) fn list(
        &self,
        store: &str,
        namespace: Option<&str>,
        after: Option<&(String, String)>,
    ) -> Vec<Arc<Value>> {
        let Some(store) = self.stores.get(store) else {
            return Vec::new();
        };
        use std::ops::Bound;
        let start = match (after, namespace) {
            (Some(key), _) => Bound::Excluded(key.clone()),
            (None, Some(ns)) => Bound::Included((ns.to_owned(), String::new())),
            (None, None) => Bound::Unbounded,
        };
        store
            .objects
            .range((start, Bound::Unbounded))
            .take_while(|((ns, _), _)| namespace.is_none_or(|want| ns == want))
            .map(|(_, v)| Arc::clone(v))
            .collect()
    }

    /// Objects owned by `uid` (through any owner reference).
    pub(crate) fn dependents_of(&self, uid: &str) -> Vec<(ObjRef, Arc<Value>)> {
        self.dependents
            .get(uid)
            .map(|set| {
                set.iter()
                    .filter_map(|r| Some((r.clone(), self.get_ref(r)?)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether any event of `store` is newer than `rv`.
    pub(crate) fn changed_since(&self, store: &str, rv: u64) -> bool {
        self.stores
            .get(store)
            .is_some_and(|s| s.floor > rv || s.history.back().is_some_and(|e| e.rv > rv))
    }

    /// Namespaced stores (for namespace deletion).
    fn namespaced_stores(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .registry
            .all()
            .filter(|rt| rt.namespaced)
            .map(|rt| rt.store_key())
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    // ---- raw writes: every change goes through put/remove ----

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    /// Stores `object` (new or replacing), assigning a resourceVersion.
    pub(crate) fn put(&mut self, store_key: &str, mut object: Value) -> Arc<Value> {
        let rv = self.next_rv();
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let namespace = str_at(&object, "/metadata/namespace").to_owned();
        let name = str_at(&object, "/metadata/name").to_owned();
        let uid = str_at(&object, "/metadata/uid").to_owned();
        let object = Arc::new(object);
        let r = ObjRef {
            store: store_key.to_owned(),
            namespace: namespace.clone(),
            name: name.clone(),
        };
        let store = self.stores.entry(store_key.to_owned()).or_default();
        let previous = store.objects.insert((namespace, name), Arc::clone(&object));
        let old_owners = previous.as_deref().map(owner_uids).unwrap_or_default();
        let new_owners = owner_uids(&object);
        for owner in old_owners.difference(&new_owners) {
            if let Some(set) = self.dependents.get_mut(owner) {
                set.remove(&r);
            }
        }
        for owner in new_owners.difference(&old_owners) {
            self.dependents
                .entry(owner.clone())
                .or_default()
                .insert(r.clone());
        }
        if !uid.is_empty() {
            self.uids.insert(uid, r.clone());
        }
        let kind = if previous.is_some() {
            EventKind::Modified
        } else {
            EventKind::Added
        };
        self.publish(
            store_key,
            Event {
                rv,
                kind,
                object: Arc::clone(&object),
                previous,
            },
        );
        self.after_change(&r, &object, false);
        object
    }

    /// Removes an object; the returned value carries the deletion's
    /// resourceVersion, as the `DELETED` event does.
    pub(crate) fn remove(
        &mut self,
        store_key: &str,
        namespace: &str,
        name: &str,
    ) -> Option<Arc<Value>> {
        let key = (namespace.to_owned(), name.to_owned());
        let old = self.stores.get_mut(store_key)?.objects.remove(&key)?;
        let rv = self.next_rv();
        let mut object = (*old).clone();
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let object = Arc::new(object);
        let r = ObjRef {
            store: store_key.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        };
        for owner in owner_uids(&object) {
            if let Some(set) = self.dependents.get_mut(&owner) {
                set.remove(&r);
                if set.is_empty() {
                    self.dependents.remove(&owner);
                }
            }
        }
        let uid = str_at(&object, "/metadata/uid").to_owned();
        self.uids.remove(&uid);
        self.publish(
            store_key,
            Event {
                rv,
                kind: EventKind::Deleted,
                object: Arc::clone(&object),
                previous: None,
            },
        );
        if store_key == "/pods" {
            self.pods.remove(&uid);
            for container in containers_of(&object) {
                self.logs
                    .remove(&(namespace.to_owned(), name.to_owned(), container));
            }
            self.notify_logs();
        }
        self.after_change(&r, &object, true);
        Some(object)
    }

    fn publish(&mut self, store_key: &str, event: Event) {
        let limit = self.history_limit;
        let store = self.stores.entry(store_key.to_owned()).or_default();
        let event = Arc::new(event);
        let namespace = str_at(&event.object, "/metadata/namespace").to_owned();
        store.watchers.retain(|w| {
            if w.namespace.as_ref().is_some_and(|ns| *ns != namespace) {
                return !w.tx.is_closed();
            }
            w.tx.send(Arc::clone(&event)).is_ok()
        });
        store.history.push_back(event);
        while store.history.len() > limit {
            if let Some(old) = store.history.pop_front() {
                store.floor = old.rv;
            }
        }
    }

    /// Queues the controllers interested in a change.
    fn after_change(&mut self, r: &ObjRef, object: &Value, deleted: bool) {
        if kinds::has_controller(&r.store) {
            self.queue.push(Work::Object(r.clone()));
        }
        let uid = str_at(object, "/metadata/uid").to_owned();
        if let Some(refs) = object
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
        {
            for owner in refs {
                let owner_uid = owner["uid"].as_str().unwrap_or_default();
                let Some(owner_ref) = self.uids.get(owner_uid).cloned() else {
                    continue;
                };
                if owner["controller"] == json!(true) && kinds::has_controller(&owner_ref.store) {
                    self.queue.push(Work::Object(owner_ref.clone()));
                }
                if deleted {
                    let terminating = self
                        .get_ref(&owner_ref)
                        .is_some_and(|o| o.pointer("/metadata/deletionTimestamp").is_some());
                    if terminating {
                        self.queue.push(Work::Gc(owner_uid.to_owned()));
                    }
                }
            }
        }
        if deleted {
            if self.dependents.contains_key(&uid) {
                self.queue.push(Work::Gc(uid));
            }
        } else if object.pointer("/metadata/deletionTimestamp").is_some()
            && !finalizers(object).is_empty()
        {
            self.queue.push(Work::Gc(uid));
        }
        self.work.notify_one();
    }

    /// Starts a watch: the backlog after `rv` (or, without one, every
    /// current object as `ADDED`) and the live feed.
    pub(crate) fn watch(
        &mut self,
        rt: &ResourceType,
        namespace: Option<&str>,
        rv: Option<u64>,
    ) -> Result<WatchStart, ApiError> {
        let store_key = rt.store_key();
        let initial = match rv {
            None => self
                .list(&store_key, namespace, None)
                .into_iter()
                .map(|object| {
                    Arc::new(Event {
                        rv: rv_of(&object),
                        kind: EventKind::Added,
                        object,
                        previous: None,
                    })
                })
                .collect(),
            Some(rv) => {
                let store = self.stores.entry(store_key.clone()).or_default();
                if rv < store.floor {
                    return Err(ApiError::expired(format!(
                        "too old resource version: {rv} ({})",
                        store.floor + 1
                    )));
                }
                let start = store.history.partition_point(|e| e.rv <= rv);
                store
                    .history
                    .range(start..)
                    .filter(|e| {
                        namespace.is_none_or(|ns| str_at(&e.object, "/metadata/namespace") == ns)
                    })
                    .cloned()
                    .collect()
            }
        };
        let (tx, rx) = mpsc::unbounded_channel();
        self.stores
            .entry(store_key)
            .or_default()
            .watchers
            .push(Watcher {
                namespace: namespace.map(str::to_owned),
                tx,
            });
        Ok(WatchStart {
            backlog: initial,
            rx,
        })
    }

    /// Ends every open watch (the API server went away).
    pub(crate) fn drop_watches(&mut self) {
        for store in self.stores.values_mut() {
            store.watchers.clear();
        }
    }

    /// Forgets the watch history, as etcd compaction does: watches from
    /// older resourceVersions get `410 Expired`.
    pub(crate) fn compact(&mut self) {
        let rv = self.rv;
        for store in self.stores.values_mut() {
            store.history.clear();
            store.floor = rv;
        }
    }

    // ---- API operations ----

    fn writer<'a>(
        &self,
        rt: &'a ResourceType,
        manager: &'a str,
        sub: Sub,
        now: &'a str,
    ) -> (Writer<'a>, String) {
        let api_version = if sub == Sub::Scale {
            "autoscaling/v1".to_owned()
        } else {
            rt.api_version()
        };
        (
            Writer {
                manager,
                api_version: "",
                subresource: sub.name(),
                now,
            },
            api_version,
        )
    }

    /// `POST`: creates an object (`dry_run`: validates only).
    pub(crate) fn create(
        &mut self,
        rt: &ResourceType,
        namespace: Option<&str>,
        body: Value,
        manager: &str,
        dry_run: bool,
    ) -> Result<Arc<Value>, ApiError> {
        let object = self.prepare_create(rt, namespace, body, &Ownership::Update(manager))?;
        if dry_run {
            return Ok(Arc::new(object));
        }
        Ok(self.put(&rt.store_key(), object))
    }

    fn prepare_create(
        &mut self,
        rt: &ResourceType,
        namespace: Option<&str>,
        mut object: Value,
        ownership: &Ownership<'_>,
    ) -> Result<Value, ApiError> {
        check_types(rt, &mut object)?;
        let meta = object["metadata"]
            .as_object_mut()
            .ok_or_else(|| ApiError::bad_request("metadata must be an object"))?;
        if rt.namespaced {
            let Some(path_ns) = namespace else {
                return Err(ApiError::bad_request(
                    "the server could not find the requested resource",
                ));
            };
            if let Some(body_ns) = meta.get("namespace").and_then(Value::as_str)
                && !body_ns.is_empty()
                && body_ns != path_ns
            {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            meta.insert("namespace".to_owned(), json!(path_ns));
        } else {
            meta.remove("namespace");
        }
        let mut name = meta
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if name.is_empty() {
            let prefix = meta
                .get("generateName")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            if prefix.is_empty() {
                return Err(ApiError::invalid(
                    rt,
                    "",
                    &[FieldError::required(
                        "metadata.name",
                        "name or generateName is required",
                    )],
                ));
            }
            let ns = namespace.unwrap_or_default();
            name = loop {
                let candidate = format!("{prefix}{}", random_suffix());
                if self.get(rt, ns, &candidate).is_none() {
                    break candidate;
                }
            };
            meta.insert("name".to_owned(), json!(name));
        }
        for system in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "selfLink",
        ] {
            meta.remove(system);
        }
        if matches!(ownership, Ownership::Update(_)) {
            meta.remove("managedFields");
        }
        let ns = namespace.unwrap_or_default();
        if rt.namespaced {
            match self.get_in("/namespaces", "", ns) {
                None => return Err(ApiError::namespace_not_found(ns)),
                Some(n) if n.pointer("/metadata/deletionTimestamp").is_some() => {
                    return Err(ApiError::namespace_terminating(rt, &name, ns));
                }
                Some(_) => {}
            }
        }
        if self.get(rt, ns, &name).is_some() {
            return Err(ApiError::already_exists(rt, &name));
        }
        let now = time::now();
        object["metadata"]["uid"] = json!(new_uid());
        object["metadata"]["creationTimestamp"] = json!(now);
        if rt.generation {
            object["metadata"]["generation"] = json!(1);
        }
        if rt.status {
            kinds::reset_status(rt, &mut object);
        }
        kinds::on_create(self, rt, &mut object);
        kinds::defaults(rt, &mut object);
        let mut errors = Vec::new();
        super::validate::metadata(rt, &object, &mut errors);
        super::validate::object(rt, &object, None, &mut errors);
        if !errors.is_empty() {
            return Err(ApiError::invalid(rt, &name, &errors));
        }
        if let Ownership::Update(manager) = ownership {
            let (mut writer, api_version) = self.writer(rt, manager, Sub::Main, &now);
            writer.api_version = &api_version;
            apply::record_update(
                None,
                Vec::new(),
                &mut object,
                &writer,
                Scope::Main {
                    exclude_status: rt.status,
                },
                rt.builtin,
            );
        }
        Ok(object)
    }

    /// `PUT`: replaces an object (or its status).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn replace(
        &mut self,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
        body: Value,
        sub: Sub,
        manager: &str,
        dry_run: bool,
    ) -> Result<Arc<Value>, ApiError> {
        let old = self
            .get(rt, namespace, name)
            .ok_or_else(|| ApiError::not_found(rt, name))?;
        if sub == Sub::Scale {
            let replicas = scale_replicas(&body)?;
            if let Some(rv) = body
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                && !rv.is_empty()
                && rv != str_at(&old, "/metadata/resourceVersion")
            {
                return Err(ApiError::stale(rt, name));
            }
            return self.set_replicas(rt, &old, replicas, manager, "Update", false, dry_run);
        }
        let new = self.prepare_update(rt, &old, body, sub, &Ownership::Update(manager), true)?;
        match new {
            None => Ok(old),
            Some(_) if dry_run => Ok(old),
            Some(new) => Ok(self.commit_update(rt, new)),
        }
    }

    fn prepare_update(
        &mut self,
        rt: &ResourceType,
        old: &Value,
        mut new: Value,
        sub: Sub,
        ownership: &Ownership<'_>,
        check_rv: bool,
    ) -> Result<Option<Value>, ApiError> {
        check_types(rt, &mut new)?;
        let name = str_at(old, "/metadata/name").to_owned();
        let body_name = str_at(&new, "/metadata/name");
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let old_ns = str_at(old, "/metadata/namespace");
        let body_ns = str_at(&new, "/metadata/namespace");
        if rt.namespaced && !body_ns.is_empty() && body_ns != old_ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let body_rv = str_at(&new, "/metadata/resourceVersion");
        if check_rv && !body_rv.is_empty() && body_rv != str_at(old, "/metadata/resourceVersion") {
            return Err(ApiError::stale(rt, &name));
        }
        if sub == Sub::Status {
            let status = new.get("status").cloned();
            let body_managed = new.pointer("/metadata/managedFields").cloned();
            new = old.clone();
            match status {
                Some(s) if !s.is_null() => new["status"] = s,
                _ => {
                    if let Some(m) = new.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
            if let (Ownership::Keep, Some(m)) = (ownership, body_managed) {
                new["metadata"]["managedFields"] = m;
            }
        } else if rt.status {
            match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    if let Some(m) = new.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
        }
        let meta = new["metadata"]
            .as_object_mut()
            .ok_or_else(|| ApiError::bad_request("metadata must be an object"))?;
        for system in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "generation",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "resourceVersion",
        ] {
            match old["metadata"].get(system) {
                Some(v) => {
                    meta.insert(system.to_owned(), v.clone());
                }
                None => {
                    meta.remove(system);
                }
            }
        }
        meta.remove("selfLink");
        let body_managed = meta.get("managedFields").cloned();
        let base_managed = match (ownership, body_managed) {
            (Ownership::Update(_), Some(m)) if Some(&m) != old["metadata"].get("managedFields") => {
                apply::read_managed(&json!({"metadata": {"managedFields": m}}))
            }
            _ => apply::read_managed(old),
        };
        kinds::on_update(self, rt, old, &mut new);
        kinds::defaults(rt, &mut new);
        let mut errors = Vec::new();
        super::validate::metadata(rt, &new, &mut errors);
        super::validate::object(rt, &new, Some(old), &mut errors);
        if !errors.is_empty() {
            return Err(ApiError::invalid(rt, &name, &errors));
        }
        if rt.generation && spec_of(old, rt.status) != spec_of(&new, rt.status) {
            let generation = old["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
            new["metadata"]["generation"] = json!(generation);
        }
        if let Ownership::Update(manager) = ownership {
            let now = time::now();
            let (mut writer, api_version) = self.writer(rt, manager, sub, &now);
            writer.api_version = &api_version;
            let scope = if sub == Sub::Status {
                Scope::Status
            } else {
                Scope::Main {
                    exclude_status: rt.status,
                }
            };
            apply::record_update(
                Some(old),
                base_managed,
                &mut new,
                &writer,
                scope,
                rt.builtin,
            );
        }
        if new == *old {
            return Ok(None);
        }
        Ok(Some(new))
    }

    /// Stores an updated object; one whose deletion waited for finalizers
    /// goes away once they are all removed.
    fn commit_update(&mut self, rt: &ResourceType, new: Value) -> Arc<Value> {
        let store = rt.store_key();
        if new.pointer("/metadata/deletionTimestamp").is_some()
            && finalizers(&new).is_empty()
            && !(store == "/pods" && new.pointer("/spec/nodeName").is_some())
            && store != "/namespaces"
        {
            let namespace = str_at(&new, "/metadata/namespace").to_owned();
            let name = str_at(&new, "/metadata/name").to_owned();
            let stored = self.put(&store, new);
            return self.remove(&store, &namespace, &name).unwrap_or(stored);
        }
        self.put(&store, new)
    }

    /// An update by a controller (no preconditions, ownership recorded
    /// for `manager`). Errors are the controller's bugs: logged.
    pub(crate) fn controller_update(
        &mut self,
        rt: &ResourceType,
        new: Value,
        sub: Sub,
        manager: &str,
    ) -> Option<Arc<Value>> {
        let namespace = str_at(&new, "/metadata/namespace").to_owned();
        let name = str_at(&new, "/metadata/name").to_owned();
        let old = self.get(rt, &namespace, &name)?;
        match self.prepare_update(rt, &old, new, sub, &Ownership::Update(manager), false) {
            Ok(Some(new)) => Some(self.commit_update(rt, new)),
            Ok(None) => Some(old),
            Err(e) => {
                tracing::warn!(kind = %rt.kind, %name, error = %e.message(), "a fake controller's write was refused");
                None
            }
        }
    }

    /// A create by a controller.
    pub(crate) fn controller_create(
        &mut self,
        rt: &ResourceType,
        object: Value,
    ) -> Option<Arc<Value>> {
        let namespace = str_at(&object, "/metadata/namespace").to_owned();
        let ns = (!namespace.is_empty()).then_some(namespace.as_str());
        match self.create(rt, ns, object, CONTROLLER_MANAGER, false) {
            Ok(o) => Some(o),
            Err(e) => {
                if e.reason() != "AlreadyExists" && e.reason() != "Forbidden" {
                    tracing::warn!(kind = %rt.kind, error = %e.message(), "a fake controller's create was refused");
                }
                None
            }
        }
    }

    /// `PATCH` with a server-side apply configuration.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn apply(
        &mut self,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
        config: &Value,
        sub: Sub,
        manager: &str,
        force: bool,
        dry_run: bool,
    ) -> Result<(Arc<Value>, bool), ApiError> {
        if !config.is_object() {
            return Err(ApiError::bad_request(format!(
                "error decoding YAML: Object 'Kind' is missing in '{config}'"
            )));
        }
        let (want_api_version, want_kind) = if sub == Sub::Scale {
            ("autoscaling/v1".to_owned(), "Scale".to_owned())
        } else {
            (rt.api_version(), rt.kind.clone())
        };
        let kind = config["kind"].as_str().unwrap_or_default();
        let api_version = config["apiVersion"].as_str().unwrap_or_default();
        if kind.is_empty() {
            return Err(ApiError::bad_request(format!(
                "Object 'Kind' is missing in '{config}'"
            )));
        }
        if api_version.is_empty() {
            return Err(ApiError::bad_request(format!(
                "Object 'apiVersion' is missing in '{config}'"
            )));
        }
        if kind != want_kind || api_version != want_api_version {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({api_version}) does not match the expected API version ({want_api_version})"
            )
            .replace(
                "the API version in the data",
                if kind == want_kind { "the API version in the data" } else { "the kind or API version in the data" },
            )));
        }
        if config
            .pointer("/metadata/managedFields")
            .is_some_and(|m| !m.is_null())
        {
            return Err(ApiError::bad_request("metadata.managedFields must be nil"));
        }
        let config_name = str_at(config, "/metadata/name");
        if !config_name.is_empty() && config_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({config_name}) does not match the name on the URL ({name})"
            )));
        }
        let now = time::now();
        let (mut writer, api_version) = self.writer(rt, manager, sub, &now);
        writer.api_version = &api_version;
        let old = self.get(rt, namespace, name);
        if let Some(old) = &old {
            let rv = str_at(config, "/metadata/resourceVersion");
            if !rv.is_empty() && rv != str_at(old, "/metadata/resourceVersion") {
                return Err(ApiError::stale(rt, name));
            }
        }
        if sub == Sub::Scale {
            let old = old.ok_or_else(|| ApiError::not_found(rt, name))?;
            let replicas = scale_replicas(config)?;
            let path: apply::FieldPath =
                vec![Pe::F("spec".to_owned()), Pe::F("replicas".to_owned())];
            if !force && old.pointer("/spec/replicas").and_then(Value::as_i64) != Some(replicas) {
                let applied = BTreeMap::from([(path, Some(json!(replicas)))]);
                let conflicts = apply::conflicts_for(&old, &applied, &writer);
                if !conflicts.is_empty() {
                    let conflicts: Vec<(String, String)> = conflicts
                        .into_iter()
                        .map(|(p, m)| (apply::display_path(&p), m))
                        .collect();
                    return Err(ApiError::apply_conflicts(&conflicts));
                }
            }
            let result = self.set_replicas(rt, &old, replicas, manager, "Apply", true, dry_run)?;
            return Ok((result, false));
        }
        let scope = if sub == Sub::Status {
            Scope::Status
        } else {
            Scope::Main {
                exclude_status: rt.status,
            }
        };
        match old {
            None => {
                if sub != Sub::Main {
                    return Err(ApiError::not_found(rt, name));
                }
                let empty = json!({"metadata": {}});
                let Applied::Ok(mut object) =
                    apply::apply(&empty, config, &writer, scope, true, rt.builtin)
                else {
                    return Err(ApiError::internal("apply to an empty object conflicted"));
                };
                object["metadata"]["name"] = json!(name);
                object["apiVersion"] = json!(rt.api_version());
                object["kind"] = json!(rt.kind);
                let ns = rt.namespaced.then_some(namespace);
                let object = self.prepare_create(rt, ns, object, &Ownership::Keep)?;
                if dry_run {
                    return Ok((Arc::new(object), true));
                }
                Ok((self.put(&rt.store_key(), object), true))
            }
            Some(old) => {
                let new = match apply::apply(&old, config, &writer, scope, force, rt.builtin) {
                    Applied::Ok(new) => new,
                    Applied::Conflicts(conflicts) => {
                        return Err(ApiError::apply_conflicts(&conflicts));
                    }
                };
                match self.prepare_update(rt, &old, new, sub, &Ownership::Keep, false)? {
                    None => Ok((old, false)),
                    Some(_) if dry_run => Ok((old, false)),
                    Some(new) => Ok((self.commit_update(rt, new), false)),
                }
            }
        }
    }

    /// `PATCH` with a merge, strategic merge or JSON patch.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn patch(
        &mut self,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
        kind: PatchKind,
        body: &Value,
        sub: Sub,
        manager: &str,
        dry_run: bool,
    ) -> Result<Arc<Value>, ApiError> {
        let old = self
            .get(rt, namespace, name)
            .ok_or_else(|| ApiError::not_found(rt, name))?;
        let mut target = if sub == Sub::Scale {
            kinds::scale_of(rt, &old)
        } else {
            (*old).clone()
        };
        match kind {
            PatchKind::Merge => patch::merge_patch(&mut target, body),
            PatchKind::Strategic => patch::strategic_merge(&mut target, body),
            PatchKind::Json => patch::json_patch(&mut target, body).map_err(|e| {
                let mut error = ApiError::new(
                    422,
                    "Invalid",
                    "the server rejected our request due to an error in our request",
                );
                error.body["details"] =
                    json!({"causes": [{"reason": "UnexpectedServerResponse", "message": e}]});
                error
            })?,
        }
        if sub == Sub::Scale {
            let replicas = scale_replicas(&target)?;
            return self.set_replicas(rt, &old, replicas, manager, "Update", false, dry_run);
        }
        match self.prepare_update(rt, &old, target, sub, &Ownership::Update(manager), true)? {
            None => Ok(old),
            Some(_) if dry_run => Ok(old),
            Some(new) => Ok(self.commit_update(rt, new)),
        }
    }

    /// A write through `/scale`: sets `spec.replicas`, the writer owning it.
    #[allow(clippy::too_many_arguments)]
    fn set_replicas(
        &mut self,
        rt: &ResourceType,
        old: &Arc<Value>,
        replicas: i64,
        manager: &str,
        operation: &str,
        _applied: bool,
        dry_run: bool,
    ) -> Result<Arc<Value>, ApiError> {
        let mut new = (**old).clone();
        match kinds::field(&mut new, "spec") {
            Some(spec) => spec["replicas"] = json!(replicas),
            None => return Err(ApiError::bad_request("spec is not an object")),
        }
        if new == **old {
            return Ok(Arc::new(kinds::scale_of(rt, old)));
        }
        let generation = old["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
        new["metadata"]["generation"] = json!(generation);
        let mut errors = Vec::new();
        if replicas < 0 {
            errors.push(FieldError::invalid(
                "spec.replicas",
                json!(replicas),
                "must be greater than or equal to 0",
            ));
            return Err(ApiError::invalid_kind(
                "Scale.autoscaling",
                "autoscaling",
                str_at(old, "/metadata/name"),
                &errors,
            ));
        }
        let now = time::now();
        let writer = Writer {
            manager,
            api_version: "autoscaling/v1",
            subresource: "scale",
            now: &now,
        };
        let paths: FieldSet =
            BTreeSet::from([vec![Pe::F("spec".to_owned()), Pe::F("replicas".to_owned())]]);
        apply::take_ownership(&mut new, &paths, &writer, operation);
        if dry_run {
            return Ok(Arc::new(kinds::scale_of(rt, &new)));
        }
        let stored = self.put(&rt.store_key(), new);
        Ok(Arc::new(kinds::scale_of(rt, &stored)))
    }

    /// `DELETE`. Returns the object and whether it is gone (`false`: its
    /// deletion waits for finalizers or a pod's termination).
    pub(crate) fn delete(
        &mut self,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
        options: &DeleteOptions,
    ) -> Result<(Arc<Value>, bool), ApiError> {
        let old = self
            .get(rt, namespace, name)
            .ok_or_else(|| ApiError::not_found(rt, name))?;
        if let Some(uid) = &options.uid {
            let actual = str_at(&old, "/metadata/uid");
            if uid != actual {
                return Err(ApiError::conflict(
                    rt,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"
                    ),
                ));
            }
        }
        if let Some(rv) = &options.resource_version {
            let actual = str_at(&old, "/metadata/resourceVersion");
            if rv != actual {
                return Err(ApiError::conflict(
                    rt,
                    name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {actual}"
                    ),
                ));
            }
        }
        if options.dry_run {
            return Ok((old, false));
        }
        let store = rt.store_key();
        let now = time::now();
        if store == "/namespaces" {
            if matches!(name, "default" | "kube-system" | "kube-public") {
                return Err(ApiError::forbidden(
                    rt,
                    name,
                    "this namespace may not be deleted",
                ));
            }
            if old.pointer("/metadata/deletionTimestamp").is_some() {
                return Ok((old, false));
            }
            let mut new = (*old).clone();
            new["metadata"]["deletionTimestamp"] = json!(now);
            if let Some(status) = kinds::field(&mut new, "status") {
                status["phase"] = json!("Terminating");
            }
            let stored = self.put(&store, new);
            return Ok((stored, false));
        }
        let is_pod = store == "/pods";
        if old.pointer("/metadata/deletionTimestamp").is_some() {
            if is_pod && options.grace_period == Some(0) && finalizers(&old).is_empty() {
                let gone = self.remove(&store, namespace, name).unwrap_or(old);
                return Ok((gone, true));
            }
            return Ok((old, false));
        }
        let policy = options.propagation.as_deref().unwrap_or("Background");
        let mut added = Vec::new();
        match policy {
            "Foreground" => added.push("foregroundDeletion"),
            "Orphan" => added.push("orphan"),
            "Background" => {}
            other => {
                return Err(ApiError::invalid_kind(
                    "DeleteOptions.meta.k8s.io",
                    "meta.k8s.io",
                    "",
                    &[FieldError::not_supported(
                        "propagationPolicy",
                        json!(other),
                        &["Foreground", "Background", "Orphan", "nil"],
                    )],
                ));
            }
        }
        let existing = finalizers(&old);
        if !existing.is_empty() || !added.is_empty() {
            let mut new = (*old).clone();
            new["metadata"]["deletionTimestamp"] = json!(now);
            new["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            let mut list = existing;
            for f in added {
                if !list.iter().any(|x| x == f) {
                    list.push(f.to_owned());
                }
            }
            new["metadata"]["finalizers"] = json!(list);
            let stored = self.put(&store, new);
            return Ok((stored, false));
        }
        if is_pod && old.pointer("/spec/nodeName").is_some() {
            let grace = options.grace_period.unwrap_or_else(|| {
                old.pointer("/spec/terminationGracePeriodSeconds")
                    .and_then(Value::as_i64)
                    .unwrap_or(30)
            });
            if grace > 0 {
                let mut new = (*old).clone();
                let grace = grace.min(i64::from(i32::MAX));
                let at = SystemTime::now() + Duration::from_secs(u64::try_from(grace).unwrap_or(0));
                new["metadata"]["deletionTimestamp"] = json!(time::seconds(at));
                new["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
                let stored = self.put(&store, new);
                return Ok((stored, false));
            }
        }
        let gone = self.remove(&store, namespace, name).unwrap_or(old);
        Ok((gone, true))
    }

    /// Garbage collection around owner `uid`.
    pub(crate) fn collect_garbage(&mut self, uid: &str) {
        let owner = self
            .by_uid(uid)
            .and_then(|r| Some((r.clone(), self.get_ref(&r)?)));
        match owner {
            Some((r, object)) => {
                if object.pointer("/metadata/deletionTimestamp").is_none() {
                    return;
                }
                let Some(rt) = self.registry.by_store(&r.store) else {
                    return;
                };
                let mut fins = finalizers(&object);
                if fins.iter().any(|f| f == "orphan") {
                    for (dep_ref, dep) in self.dependents_of(uid) {
                        let mut dep = (*dep).clone();
                        if let Some(refs) = dep["metadata"]["ownerReferences"].as_array_mut() {
                            refs.retain(|o| o["uid"].as_str() != Some(uid));
                            if refs.is_empty()
                                && let Some(m) = dep["metadata"].as_object_mut()
                            {
                                m.remove("ownerReferences");
                            }
                        }
                        if let Some(dep_rt) = self.registry.by_store(&dep_ref.store) {
                            self.controller_update(
                                &dep_rt,
                                dep,
                                Sub::Main,
                                "kube-controller-manager",
                            );
                        }
                    }
                    fins.retain(|f| f != "orphan");
                }
                if fins.iter().any(|f| f == "foregroundDeletion") {
                    let dependents = self.dependents_of(uid);
                    if dependents.is_empty() {
                        fins.retain(|f| f != "foregroundDeletion");
                    } else {
                        for (dep_ref, dep) in dependents {
                            if dep.pointer("/metadata/deletionTimestamp").is_some() {
                                continue;
                            }
                            if let Some(dep_rt) = self.registry.by_store(&dep_ref.store) {
                                let options = DeleteOptions {
                                    propagation: Some("Foreground".to_owned()),
                                    ..DeleteOptions::default()
                                };
                                let _ = self.delete(
                                    &dep_rt,
                                    &dep_ref.namespace,
                                    &dep_ref.name,
                                    &options,
                                );
                            }
                        }
                    }
                }
                if fins != finalizers(&object) {
                    let mut new = (*object).clone();
                    new["metadata"]["finalizers"] = json!(fins);
                    if fins.is_empty()
                        && let Some(m) = new["metadata"].as_object_mut()
                    {
                        m.remove("finalizers");
                    }
                    self.controller_update(&rt, new, Sub::Main, CONTROLLER_MANAGER);
                }
            }
            None => {
                for (dep_ref, dep) in self.dependents_of(uid) {
                    let owners = owner_uids(&dep);
                    let live_owner = owners.iter().any(|o| o != uid && self.uids.contains_key(o));
                    let Some(dep_rt) = self.registry.by_store(&dep_ref.store) else {
                        continue;
                    };
                    if live_owner {
                        let mut dep = (*dep).clone();
                        if let Some(refs) = dep["metadata"]["ownerReferences"].as_array_mut() {
                            refs.retain(|o| o["uid"].as_str() != Some(uid));
                        }
                        self.controller_update(&dep_rt, dep, Sub::Main, "kube-controller-manager");
                    } else if dep.pointer("/metadata/deletionTimestamp").is_none() {
                        let _ = self.delete(
                            &dep_rt,
                            &dep_ref.namespace,
                            &dep_ref.name,
                            &DeleteOptions::default(),
                        );
                    }
                }
                self.dependents.remove(uid);
            }
        }
    }

    /// Deletes everything in a terminating namespace, then the namespace.
    pub(crate) fn finalize_namespace(&mut self, name: &str) {
        for store in self.namespaced_stores() {
            let names: Vec<String> = self
                .list(&store, Some(name), None)
                .iter()
                .map(|o| str_at(o, "/metadata/name").to_owned())
                .collect();
            for object in names {
                self.remove(&store, name, &object);
            }
        }
        self.remove("/namespaces", "", name);
    }

    // ---- allocation ----

    pub(crate) fn allocate_service_ip(&mut self) -> String {
        self.next_service_ip += 1;
        let n = self.next_service_ip + 9;
        format!("10.96.{}.{}", n / 250, n % 250 + 1)
    }

    pub(crate) fn allocate_pod_ip(&mut self) -> String {
        self.next_pod_ip += 1;
        let n = self.next_pod_ip;
        format!("10.244.{}.{}", n / 250, n % 250 + 2)
    }
}

/// The patch formats `PATCH` accepts besides apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatchKind {
    Merge,
    Strategic,
    Json,
}

/// Checks (and fills in) `apiVersion` and `kind` of a body.
fn check_types(rt: &ResourceType, object: &mut Value) -> Result<(), ApiError> {
    let Some(map) = object.as_object_mut() else {
        return Err(ApiError::bad_request(format!(
            "the object provided is unrecognized (must be of type {})",
            rt.kind
        )));
    };
    let want = rt.api_version();
    match map.get("apiVersion").and_then(Value::as_str) {
        Some(v) if !v.is_empty() && v != want => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({want})"
            )));
        }
        _ => {}
    }
    match map.get("kind").and_then(Value::as_str) {
        Some(k) if !k.is_empty() && k != rt.kind => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                rt.kind
            )));
        }
        _ => {}
    }
    map.insert("apiVersion".to_owned(), json!(want));
    map.insert("kind".to_owned(), json!(rt.kind));
    match map.get("metadata") {
        None | Some(Value::Null) => {
            map.insert("metadata".to_owned(), json!({}));
        }
        Some(Value::Object(_)) => {}
        Some(_) => return Err(undecodable(rt, "metadata", "object")),
    }
    let meta = &map["metadata"];
    for field in ["labels", "annotations"] {
        match meta.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) if m.values().all(Value::is_string) => {}
            Some(_) => {
                return Err(undecodable(
                    rt,
                    &format!("metadata.{field}"),
                    "map[string]string",
                ));
            }
        }
    }
    match meta.get("finalizers") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => {}
        Some(_) => return Err(undecodable(rt, "metadata.finalizers", "[]string")),
    }
    match meta.get("ownerReferences") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) if a.iter().all(|o| o.is_object() && o["uid"].is_string()) => {}
        Some(_) => {
            return Err(undecodable(
                rt,
                "metadata.ownerReferences",
                "[]v1.OwnerReference",
            ));
        }
    }
    for field in ["name", "namespace", "generateName", "resourceVersion"] {
        match meta.get(field) {
            None | Some(Value::Null | Value::String(_)) => {}
            Some(_) => return Err(undecodable(rt, &format!("metadata.{field}"), "string")),
        }
    }
    if rt.builtin || rt.scale {
        for field in ["spec", "status"] {
            match map.get(field) {
                None | Some(Value::Null | Value::Object(_)) => {}
                Some(_) => return Err(undecodable(rt, field, "object")),
            }
        }
    }
    Ok(())
}

/// The API server's answer to a body whose field has the wrong JSON type.
fn undecodable(rt: &ResourceType, field: &str, want: &str) -> ApiError {
    ApiError::bad_request(format!(
        "{kind} in version \"{version}\" cannot be handled as a {kind}: json: cannot unmarshal into Go struct field {kind}.{field} of type {want}",
        kind = rt.kind,
        version = rt.version,
    ))
}

/// `spec.replicas` of a `Scale` body.
fn scale_replicas(body: &Value) -> Result<i64, ApiError> {
    body.pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .ok_or_else(|| {
            ApiError::invalid_kind(
                "Scale.autoscaling",
                "autoscaling",
                str_at(body, "/metadata/name"),
                &[FieldError::required("spec.replicas", "")],
            )
        })
}

/// Everything but metadata (and status, when it has its own subresource):
/// what bumps `metadata.generation`.
fn spec_of(object: &Value, exclude_status: bool) -> Value {
    let mut object = object.clone();
    if let Some(m) = object.as_object_mut() {
        m.remove("metadata");
        if exclude_status {
            m.remove("status");
        }
    }
    object
}

pub(crate) fn str_at<'a>(object: &'a Value, pointer: &str) -> &'a str {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

pub(crate) fn rv_of(object: &Value) -> u64 {
    str_at(object, "/metadata/resourceVersion")
        .parse()
        .unwrap_or(0)
}

pub(crate) fn finalizers(object: &Value) -> Vec<String> {
    object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn owner_uids(object: &Value) -> BTreeSet<String> {
    object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|o| o["uid"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn containers_of(pod: &Value) -> Vec<String> {
    ["/spec/containers", "/spec/initContainers"]
        .iter()
        .filter_map(|p| pod.pointer(p).and_then(Value::as_array))
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect()
}

/// Five characters as the API server's `generateName` appends them.
pub(crate) fn random_suffix() -> String {
    use rand::Rng as _;
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

/// A random (version 4) UUID.
pub(crate) fn new_uid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}
