//! The desired state krane holds and how it is applied.
//!
//! **Invariant:** for one deployment, at most one apply or delete runs at a
//! time, and each run applies the *newest* state known when it starts — a
//! change that arrives meanwhile marks the deployment dirty and triggers one
//! more run. So two changes of a deployment never overlap and an older state
//! is never applied after a newer one; intermediate states that were
//! superseded before their turn are skipped (desired state is declarative).
//! Different deployments run in parallel, at most `max_concurrent_applies`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ctrl_proto::ctrl::v1 as pb;
use ctrl_provider::desired::{APP_SERVICE, workload_from_apply};
use ctrl_provider::{LogLine, LogOptions, Provider, State, WorkloadStatus};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use pb::deployment_state::State as Desired;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::control::Control;
use crate::metrics::Metrics;
use crate::stream::{DesiredSink, deployment_id};

/// The label carrying a workload's deployment id (set by `desired.rs`).
const DEPLOYMENT_LABEL: &str = "ctrl.dev/deployment-id";

/// The agent's state; cheap to clone.
#[derive(Debug, Clone)]
pub struct Agent {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    control: Control,
    provider: Arc<dyn Provider>,
    metrics: Metrics,
    max_concurrent: usize,
    permits: Arc<Semaphore>,
    /// Newest desired state per deployment (deletes stay until done).
    desired: Mutex<HashMap<String, Arc<pb::DeploymentState>>>,
    /// Deployments with a running apply task → whether they changed since
    /// that task read their state.
    slots: Mutex<HashMap<String, bool>>,
    /// What the last successful apply applied, per deployment.
    applied: Mutex<HashMap<String, Arc<pb::DeploymentState>>>,
    /// Fingerprint of the last instance report, per deployment.
    reported: Mutex<HashMap<String, String>>,
    /// (restarts, exit code) last reported per instance.
    events: Mutex<HashMap<String, (u32, Option<i64>)>>,
    /// No new work once stopping.
    stopping: std::sync::atomic::AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Agent {
    /// An agent applying through `provider` and reporting to `control`.
    pub fn new(
        control: Control,
        provider: Arc<dyn Provider>,
        metrics: Metrics,
        max_concurrent: usize,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                control,
                provider,
                metrics,
                max_concurrent,
                permits: Arc::new(Semaphore::new(max_concurrent)),
                desired: Mutex::default(),
                slots: Mutex::default(),
                applied: Mutex::default(),
                reported: Mutex::default(),
                events: Mutex::default(),
                stopping: Default::default(),
            }),
        }
    }

    /// Deployments that should run here.
    pub fn desired_running(&self) -> usize {
        lock(&self.inner.desired)
            .values()
            .filter(|s| matches!(s.state, Some(Desired::Apply(_))))
            .count()
    }

    /// Stops taking work and waits (up to `grace`) for running applies;
    /// workloads keep running.
    pub async fn drain(&self, grace: Duration) {
        self.inner
            .stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let all = u32::try_from(self.inner.max_concurrent).unwrap_or(u32::MAX);
        if tokio::time::timeout(grace, self.inner.permits.acquire_many(all))
            .await
            .is_err()
        {
            tracing::warn!("applies still running after {grace:?}; leaving them");
        }
    }

    fn set_desired(&self, id: &str, state: pb::DeploymentState) {
        lock(&self.inner.desired).insert(id.to_owned(), Arc::new(state));
        self.mark(id);
    }

    /// Schedules a run for `id` (or a re-run if one is in progress).
    fn mark(&self, id: &str) {
        if self
            .inner
            .stopping
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        let mut slots = lock(&self.inner.slots);
        if let Some(dirty) = slots.get_mut(id) {
            *dirty = true;
            return;
        }
        slots.insert(id.to_owned(), false);
        tokio::spawn(self.clone().run_slot(id.to_owned()));
    }

    async fn run_slot(self, id: String) {
        loop {
            let Ok(permit) = self.inner.permits.clone().acquire_owned().await else {
                return;
            };
            // Clear the flag, then read: a change after the read re-marks it.
            lock(&self.inner.slots).insert(id.clone(), false);
            let state = lock(&self.inner.desired).get(&id).cloned();
            if let Some(state) = state {
                self.run_one(&id, state).await;
            }
            drop(permit);
            let mut slots = lock(&self.inner.slots);
            if slots.get(&id).copied().unwrap_or(false)
                && !self
                    .inner
                    .stopping
                    .load(std::sync::atomic::Ordering::SeqCst)
            {
                continue;
            }
            slots.remove(&id);
            return;
        }
    }

    async fn run_one(&self, id: &str, state: Arc<pb::DeploymentState>) {
        match &state.state {
            Some(Desired::Apply(apply)) => {
                let again = lock(&self.inner.applied)
                    .get(id)
                    .is_some_and(|a| Arc::ptr_eq(a, &state));
                match self.apply(apply).await {
                    Ok(changed) => {
                        self.inner.metrics.applies_ok.inc();
                        if changed && again {
                            // Same desired state, but the workload had drifted.
                            self.inner.metrics.reconcile_corrections.inc();
                            tracing::info!(deployment = %id, "drift corrected");
                        }
                        lock(&self.inner.applied).insert(id.to_owned(), state.clone());
                    }
                    Err(e) => {
                        self.inner.metrics.applies_failed.inc();
                        tracing::warn!(deployment = %id, error = %e, "apply failed; the reconcile retries it");
                    }
                }
                self.report(apply).await;
            }
            Some(Desired::Delete(delete)) => {
                match self.inner.provider.deprovision(&delete.k8s_name).await {
                    Ok(()) => {
                        self.inner.metrics.deletes.inc();
                        let removed = pb::report_deployment_status_request::Change::Removed(
                            pb::DeploymentRemoved {
                                deployment_id: delete.deployment_id.clone(),
                                k8s_name: delete.k8s_name.clone(),
                            },
                        );
                        match self.inner.control.report(removed).await {
                            Ok(()) => {
                                self.inner.metrics.reports.inc();
                                lock(&self.inner.reported).remove(id);
                                lock(&self.inner.applied).remove(id);
                                // Forget the tombstone unless a newer state came.
                                let mut desired = lock(&self.inner.desired);
                                if desired.get(id).is_some_and(|s| Arc::ptr_eq(s, &state)) {
                                    desired.remove(id);
                                }
                            }
                            Err(e) => {
                                tracing::warn!(deployment = %id, code = ?e.code(), message = %e.message(), "removal report failed; retried by the reconcile")
                            }
                        }
                    }
                    Err(e) => {
                        self.inner.metrics.applies_failed.inc();
                        tracing::warn!(deployment = %id, error = %e, "delete failed; the reconcile retries it");
                    }
                }
            }
            None => {}
        }
    }

    /// Applies one deployment; true if anything changed.
    async fn apply(&self, apply: &pb::ApplyDeployment) -> Result<bool, ctrl_provider::Error> {
        let spec = workload_from_apply(apply)?;
        let result = self.inner.provider.provision(&spec).await?;
        Ok(result.changed)
    }

    /// Reports the deployment's instances if they changed since the last
    /// report, and their new exits.
    async fn report(&self, apply: &pb::ApplyDeployment) {
        let status = match self.inner.provider.status(&apply.k8s_name).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(deployment = %apply.deployment_id, error = %e, "status unavailable");
                return;
            }
        };
        let instances = instances(apply, &status);
        let fingerprint = fingerprint(&instances);
        let id = &apply.deployment_id;
        if lock(&self.inner.reported).get(id) != Some(&fingerprint) {
            let update =
                pb::report_deployment_status_request::Change::Update(pb::DeploymentInstances {
                    deployment_id: id.clone(),
                    k8s_name: apply.k8s_name.clone(),
                    instances,
                });
            match self.inner.control.report(update).await {
                Ok(()) => {
                    self.inner.metrics.reports.inc();
                    lock(&self.inner.reported).insert(id.clone(), fingerprint);
                }
                Err(e) => {
                    tracing::warn!(deployment = %id, code = ?e.code(), message = %e.message(), "status report failed; retried later")
                }
            }
        }
        let events = self.new_events(apply, &status);
        if !events.is_empty()
            && let Err(e) = self.inner.control.events(events).await
        {
            tracing::warn!(deployment = %id, message = %e.message(), "instance events not delivered");
        }
    }

    fn new_events(
        &self,
        apply: &pb::ApplyDeployment,
        status: &WorkloadStatus,
    ) -> Vec<pb::InstanceEvent> {
        let now = now_ms();
        let mut seen = lock(&self.inner.events);
        let mut out = Vec::new();
        for s in status
            .services
            .iter()
            .filter(|s| s.service == APP_SERVICE && !s.draining)
        {
            let name = instance_name(&apply.k8s_name, s.replica);
            let key = (s.restarts, s.exit_code);
            let previous = seen.insert(name.clone(), key);
            let exited = s.exit_code.is_some_and(|c| c != 0) || s.oom_killed;
            if previous == Some(key) || !(exited || s.restarts > 0) {
                continue;
            }
            let state = if s.state == State::Restarting && s.restarts >= 3 {
                pb::instance_event::State::Waiting(pb::InstanceWaiting {
                    reason: "CrashLoopBackOff".into(),
                    message: s.message.clone(),
                })
            } else {
                pb::instance_event::State::Terminated(pb::InstanceTerminated {
                    exit_code: i32::try_from(s.exit_code.unwrap_or(0)).unwrap_or(-1),
                    signal: 0,
                    reason: if s.oom_killed { "OOMKilled" } else { "Error" }.into(),
                    message: s.message.clone(),
                    oom_killed: s.oom_killed,
                    finished_at: now,
                })
            };
            out.push(pb::InstanceEvent {
                deployment_id: apply.deployment_id.clone(),
                instance_name: name,
                container_id: s.provider_ref.clone(),
                restart_count: i32::try_from(s.restarts).unwrap_or(i32::MAX),
                time: now,
                state: Some(state),
                attributes: [("image".to_owned(), apply.image.clone())].into(),
            });
        }
        out
    }

    /// Re-applies everything desired (fixes drift, retries failures) and
    /// resolves workloads that nothing here asks for (orphans: asked about
    /// with a point lookup, removed when the answer is "not found").
    pub async fn reconcile(&self) {
        let ids: Vec<String> = lock(&self.inner.desired).keys().cloned().collect();
        self.inner
            .metrics
            .desired
            .set(i64::try_from(self.desired_running()).unwrap_or(0));
        for id in &ids {
            self.mark(id);
        }
        let workloads = match self.inner.provider.list().await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list workloads; orphans are checked next time");
                return;
            }
        };
        let known: HashSet<String> = ids.into_iter().collect();
        for w in workloads {
            let Some(deployment) = w.labels.get(DEPLOYMENT_LABEL) else {
                continue;
            };
            if known.contains(deployment) {
                continue;
            }
            match self.inner.control.desired(deployment).await {
                Ok(Some(state)) => self.set_desired(deployment, state),
                Ok(None) => {
                    tracing::info!(%deployment, workload = %w.id, "orphan workload: removing");
                    self.inner.metrics.reconcile_corrections.inc();
                    self.set_desired(
                        deployment,
                        pb::DeploymentState {
                            version: 0,
                            state: Some(Desired::Delete(pb::DeleteDeployment {
                                k8s_namespace: w
                                    .labels
                                    .get("ctrl.dev/namespace")
                                    .cloned()
                                    .unwrap_or_default(),
                                k8s_name: w.id.clone(),
                                deployment_id: deployment.clone(),
                            })),
                        },
                    );
                }
                Err(e) => {
                    tracing::warn!(%deployment, message = %e.message(), "orphan check failed")
                }
            }
        }
    }

    /// Reports every desired deployment's instances that changed.
    pub async fn report_all(&self) {
        let applies: Vec<Arc<pb::DeploymentState>> =
            lock(&self.inner.desired).values().cloned().collect();
        for state in applies {
            if let Some(Desired::Apply(apply)) = &state.state {
                self.report(apply).await;
            }
        }
    }
}

/// A deployment's output in this region: (instance name, line) items.
pub type InstanceLogs = BoxStream<'static, Result<(String, LogLine), ctrl_provider::Error>>;

/// Why [`Agent::logs`] has nothing to stream.
#[derive(Debug)]
pub enum LogsError {
    /// The deployment has no desired state in this region.
    NotHere,
    /// The backend could not read them (e.g. the workload is gone).
    Provider(ctrl_provider::Error),
}

impl Agent {
    /// The output of a deployment's instances here, each line with the
    /// instance name the status reports use.
    pub async fn logs(
        &self,
        deployment_id: &str,
        options: &LogOptions,
    ) -> Result<InstanceLogs, LogsError> {
        let workload = match lock(&self.inner.desired)
            .get(deployment_id)
            .and_then(|s| s.state.as_ref())
        {
            Some(Desired::Apply(a)) => a.k8s_name.clone(),
            Some(Desired::Delete(d)) => d.k8s_name.clone(),
            None => return Err(LogsError::NotHere),
        };
        let lines = self
            .inner
            .provider
            .logs(&workload, options)
            .await
            .map_err(LogsError::Provider)?;
        Ok(lines
            .map_ok(move |line| (instance_name(&workload, line.replica), line))
            .boxed())
    }
}

impl DesiredSink for Agent {
    fn changed(&self, state: pb::DeploymentState) {
        let Some(id) = deployment_id(&state).map(str::to_owned) else {
            return;
        };
        self.set_desired(&id, state);
    }

    fn snapshot_complete(&self, present: &HashSet<String>, _version: u64) {
        // Whatever the snapshot did not contain should not run.
        let gone: Vec<(String, String, String)> = lock(&self.inner.desired)
            .iter()
            .filter(|(id, _)| !present.contains(*id))
            .filter_map(|(id, s)| match &s.state {
                Some(Desired::Apply(a)) => {
                    Some((id.clone(), a.k8s_namespace.clone(), a.k8s_name.clone()))
                }
                _ => None,
            })
            .collect();
        for (id, namespace, name) in gone {
            self.set_desired(
                &id,
                pb::DeploymentState {
                    version: 0,
                    state: Some(Desired::Delete(pb::DeleteDeployment {
                        k8s_namespace: namespace,
                        k8s_name: name,
                        deployment_id: id.clone(),
                    })),
                },
            );
        }
        // Workloads nobody knows about are found by a reconcile pass.
        let agent = self.clone();
        tokio::spawn(async move { agent.reconcile().await });
    }
}

/// The instance name of a replica: stable across releases of a deployment.
fn instance_name(workload: &str, replica: u32) -> String {
    format!("{workload}-{replica}")
}

/// The instances of a deployment as ClusterService reports them: one per
/// replica of the app service (draining containers excluded).
fn instances(apply: &pb::ApplyDeployment, status: &WorkloadStatus) -> Vec<pb::Instance> {
    let mut by_name: BTreeMap<String, pb::Instance> = BTreeMap::new();
    for s in status
        .services
        .iter()
        .filter(|s| s.service == APP_SERVICE && !s.draining)
    {
        let name = instance_name(&apply.k8s_name, s.replica);
        let address = status
            .endpoints
            .iter()
            .find(|e| e.service == APP_SERVICE && e.replica == s.replica)
            .map(|e| e.address.clone())
            .unwrap_or_default();
        let state = match s.state {
            State::Running if s.ready => pb::InstanceStatus::Running,
            State::Failed | State::Restarting => pb::InstanceStatus::Failed,
            _ => pb::InstanceStatus::Pending,
        };
        let instance = pb::Instance {
            name: name.clone(),
            address,
            cpu_millicores: apply.cpu_millicores,
            memory_mib: apply.memory_mib,
            status: state as i32,
        };
        // Mid-rollout a replica has two containers: report the better one.
        let better = by_name
            .get(&name)
            .is_none_or(|old| rank(instance.status) > rank(old.status));
        if better {
            by_name.insert(name, instance);
        }
    }
    by_name.into_values().collect()
}

fn rank(status: i32) -> u8 {
    match pb::InstanceStatus::try_from(status) {
        Ok(pb::InstanceStatus::Running) => 3,
        Ok(pb::InstanceStatus::Pending) => 2,
        Ok(pb::InstanceStatus::Failed) => 1,
        _ => 0,
    }
}

/// Identifies an instance set (sorted `name|address|status`).
fn fingerprint(instances: &[pb::Instance]) -> String {
    let mut lines: Vec<String> = instances
        .iter()
        .map(|i| format!("{}|{}|{}", i.name, i.address, i.status))
        .collect();
    lines.sort();
    hex::encode(Sha256::digest(lines.join("\n").as_bytes()))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
