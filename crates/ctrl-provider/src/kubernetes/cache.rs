//! List/watch caches of the objects the backend manages in its region and
//! cluster: controllers (Deployments, StatefulSets), Services and Pods.
//!
//! Status, list, rollout waits and "is this already applied?" read the
//! caches, so they cost no API request; each cache is one watch for the
//! whole agent (not one per workload), kept current by kube-runtime's
//! reflector with its backoff, and a change bumps [`Caches::changed`] so a
//! rollout wait wakes up instead of polling.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::manifests::{CLUSTER, MANAGED_BY, MANAGED_BY_VALUE, REGION, WORKLOAD};
use crate::Error;

/// The caches and the tasks that fill them (stopped on drop).
#[derive(Debug)]
pub(super) struct Caches {
    pub(super) deployments: Store<Deployment>,
    pub(super) statefulsets: Store<StatefulSet>,
    pub(super) services: Store<Service>,
    pub(super) pods: Store<Pod>,
    changed: watch::Sender<u64>,
    /// Pods by workload, as of a change count: rebuilt by the first lookup
    /// after a change, so a reconcile of N workloads scans the pods once,
    /// not N times.
    pod_index: std::sync::Mutex<(u64, Arc<PodIndex>)>,
    _tasks: JoinSet<()>,
}

type PodIndex = std::collections::HashMap<String, Vec<Arc<Pod>>>;

impl Caches {
    /// Starts the watches selecting `region` and `cluster`; waits up to
    /// `timeout` for their first lists.
    pub(super) async fn start(
        client: &Client,
        region: &str,
        cluster: &str,
        timeout: Duration,
    ) -> Result<Self, Error> {
        let selector =
            format!("{MANAGED_BY}={MANAGED_BY_VALUE},{REGION}={region},{CLUSTER}={cluster}");
        let (changed, _) = watch::channel(0);
        let mut tasks = JoinSet::new();
        let deployments = spawn::<Deployment>(client, &selector, &changed, &mut tasks);
        let statefulsets = spawn::<StatefulSet>(client, &selector, &changed, &mut tasks);
        let services = spawn::<Service>(client, &selector, &changed, &mut tasks);
        let pods = spawn::<Pod>(client, &selector, &changed, &mut tasks);
        let ready = async {
            deployments.wait_until_ready().await?;
            statefulsets.wait_until_ready().await?;
            services.wait_until_ready().await?;
            pods.wait_until_ready().await
        };
        match tokio::time::timeout(timeout, ready).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(Error::backend("start the watches", e)),
            Err(_) => {
                return Err(Error::backend(
                    "list the managed objects",
                    format!("the Kubernetes API did not answer within {timeout:?}"),
                ));
            }
        }
        Ok(Self {
            deployments,
            statefulsets,
            services,
            pods,
            changed,
            pod_index: std::sync::Mutex::new((u64::MAX, Arc::default())),
            _tasks: tasks,
        })
    }

    /// A receiver that sees every later change of any cache.
    pub(super) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The pods of `workload`.
    pub(super) fn pods_of(&self, workload: &str) -> Vec<Arc<Pod>> {
        // The count is read before the store: an index built now holds at
        // least every change counted.
        let version = *self.changed.borrow();
        let index = {
            let mut cached = self.pod_index.lock().unwrap_or_else(|e| e.into_inner());
            if cached.0 != version {
                let mut index = PodIndex::new();
                for pod in self.pods.state() {
                    if let Some(w) = label(pod.as_ref(), WORKLOAD) {
                        index.entry(w.to_owned()).or_default().push(pod.clone());
                    }
                }
                *cached = (version, Arc::new(index));
            }
            cached.1.clone()
        };
        index.get(workload).cloned().unwrap_or_default()
    }

    /// The namespace a workload's objects live in, if any is cached.
    pub(super) fn namespace_of(&self, workload: &str) -> Option<String> {
        let by_label = |meta: &kube::api::ObjectMeta| {
            (meta
                .labels
                .as_ref()
                .and_then(|l| l.get(WORKLOAD))
                .map(String::as_str)
                == Some(workload))
            .then(|| meta.namespace.clone())
            .flatten()
        };
        self.deployments
            .find(|d| by_label(&d.metadata).is_some())
            .and_then(|d| d.metadata.namespace.clone())
            .or_else(|| {
                self.statefulsets
                    .find(|s| by_label(&s.metadata).is_some())
                    .and_then(|s| s.metadata.namespace.clone())
            })
            .or_else(|| {
                self.services
                    .find(|s| by_label(&s.metadata).is_some())
                    .and_then(|s| s.metadata.namespace.clone())
            })
    }

    /// The cached Deployment or StatefulSet named `workload` in `namespace`.
    pub(super) fn controller(&self, namespace: &str, workload: &str) -> Option<Cached> {
        if let Some(d) = self
            .deployments
            .get(&ObjectRef::new(workload).within(namespace))
        {
            return Some(Cached::Deployment(d));
        }
        self.statefulsets
            .get(&ObjectRef::new(workload).within(namespace))
            .map(Cached::StatefulSet)
    }

    /// Every cached controller.
    pub(super) fn controllers(&self) -> Vec<Cached> {
        let mut all: Vec<Cached> = self
            .deployments
            .state()
            .into_iter()
            .map(Cached::Deployment)
            .collect();
        all.extend(
            self.statefulsets
                .state()
                .into_iter()
                .map(Cached::StatefulSet),
        );
        all
    }
}

/// A cached controller object.
#[derive(Debug, Clone)]
pub(super) enum Cached {
    Deployment(Arc<Deployment>),
    StatefulSet(Arc<StatefulSet>),
}

impl Cached {
    pub(super) fn meta(&self) -> &kube::api::ObjectMeta {
        match self {
            Cached::Deployment(d) => &d.metadata,
            Cached::StatefulSet(s) => &s.metadata,
        }
    }

    pub(super) fn annotation(&self, key: &str) -> Option<&str> {
        self.meta()
            .annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .map(String::as_str)
    }

    /// Replicas asked for (`spec.replicas`, default 1).
    pub(super) fn replicas(&self) -> u32 {
        let replicas = match self {
            Cached::Deployment(d) => d.spec.as_ref().and_then(|s| s.replicas),
            Cached::StatefulSet(s) => s.spec.as_ref().and_then(|s| s.replicas),
        };
        u32::try_from(replicas.unwrap_or(1)).unwrap_or(0)
    }

    pub(super) fn is_stateful(&self) -> bool {
        matches!(self, Cached::StatefulSet(_))
    }

    pub(super) fn kind(&self) -> &'static str {
        match self {
            Cached::Deployment(_) => "Deployment",
            Cached::StatefulSet(_) => "StatefulSet",
        }
    }
}

/// The value of label `key` of an object.
pub(super) fn label<'a, K: Resource>(object: &'a K, key: &str) -> Option<&'a str> {
    object
        .meta()
        .labels
        .as_ref()
        .and_then(|l| l.get(key))
        .map(String::as_str)
}

fn spawn<K>(
    client: &Client,
    selector: &str,
    changed: &watch::Sender<u64>,
    tasks: &mut JoinSet<()>,
) -> Store<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store::<K>();
    let api: Api<K> = Api::all(client.clone());
    let config = watcher::Config::default().labels(selector);
    let changed = changed.clone();
    // Every event counts as a change — relist markers too: the store swaps
    // in a relisted state at `InitDone`, which carries no object.
    let stream = reflector::reflector(writer, watcher(api, config)).default_backoff();
    tasks.spawn(async move {
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => {
                    changed.send_modify(|n| *n = n.wrapping_add(1));
                }
                Err(e) => {
                    tracing::warn!(kind = %K::kind(&()), error = %e, "watch failed; retrying");
                }
            }
        }
    });
    reader
}
