//! The desired state krane holds and how it is applied.
//!
//! **Invariant:** for one deployment, at most one apply or delete runs at a
//! time, and each run applies the *newest* state known when it starts — a
//! change that arrives meanwhile marks the deployment dirty and triggers one
//! more run. So two changes of a deployment never overlap and an older state
//! is never applied after a newer one; intermediate states that were
//! superseded before their turn are skipped (desired state is declarative).
//! Different deployments run in parallel, at most `max_concurrent_applies`.
//! A newer desired state interrupts an apply still waiting for its instances
//! (a rollout may wait through a long startup window): the newest state is
//! what counts, and a cancel or stop must not wait behind it.
//!
//! **No silent failures:** every report carries the latest problem in a
//! user's words and the number of attempts in a row that failed (apply
//! errors, crash loops); while an apply waits, what its instances show
//! (a failing health check) is reported every few seconds; a failed apply is
//! retried with backoff rather than at the next reconcile.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ctrl_proto::ctrl::v1 as pb;
use ctrl_provider::desired::{APP_SERVICE, workload_from_apply};
use ctrl_provider::{LogLine, LogOptions, Provider, State, WorkloadStatus};
use ctrl_runtime::now_ms;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use pb::deployment_state::State as Desired;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use tracing::Instrument;

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
    /// Deployments with a running apply task.
    slots: Mutex<HashMap<String, Slot>>,
    /// Failed attempts per deployment, for the current desired state.
    attempts: Mutex<HashMap<String, Attempts>>,
    /// What the last successful apply applied, per deployment.
    applied: Mutex<HashMap<String, Arc<pb::DeploymentState>>>,
    /// Fingerprint of the last instance report, per deployment.
    reported: Mutex<HashMap<String, String>>,
    /// (restarts, exit code) last reported per instance.
    events: Mutex<HashMap<String, (u32, Option<i64>)>>,
    /// No new work once stopping.
    stopping: std::sync::atomic::AtomicBool,
}

/// A deployment's apply task.
#[derive(Debug)]
struct Slot {
    /// Changed since the task read its state: run once more.
    dirty: bool,
    /// Bumped on every change, so a running apply can be interrupted.
    changed: tokio::sync::watch::Sender<u64>,
}

/// How running a deployment's current desired state went so far.
#[derive(Debug, Default, Clone)]
struct Attempts {
    /// The desired-state version these attempts are about.
    version: u64,
    /// Attempts in a row that failed.
    failed: u32,
    /// Why the last one failed, in a user's words.
    problem: Option<String>,
}

/// How often an apply that waits for its instances reports what they show.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

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
                attempts: Mutex::default(),
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

    /// Records the newest desired state of `id` and schedules a run; a
    /// different state than before also interrupts an apply in progress.
    fn set_desired(&self, id: &str, state: pb::DeploymentState) {
        let changed = {
            let mut desired = lock(&self.inner.desired);
            let changed = desired.get(id).is_none_or(|old| **old != state);
            desired.insert(id.to_owned(), Arc::new(state));
            changed
        };
        self.schedule(id, changed);
    }

    /// Schedules a run for `id` (or a re-run once the one in progress ends).
    fn mark(&self, id: &str) {
        self.schedule(id, false);
    }

    /// Schedules a run for `id`; with `interrupt`, an apply in progress
    /// stops waiting so the newest state runs at once.
    fn schedule(&self, id: &str, interrupt: bool) {
        if self
            .inner
            .stopping
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        let mut slots = lock(&self.inner.slots);
        if let Some(slot) = slots.get_mut(id) {
            slot.dirty = true;
            if interrupt {
                slot.changed.send_modify(|generation| *generation += 1);
            }
            return;
        }
        slots.insert(
            id.to_owned(),
            Slot {
                dirty: false,
                changed: tokio::sync::watch::channel(0).0,
            },
        );
        tokio::spawn(self.clone().run_slot(id.to_owned()));
    }

    async fn run_slot(self, id: String) {
        loop {
            let Ok(permit) = self.inner.permits.clone().acquire_owned().await else {
                return;
            };
            // Clear the flag, then read: a change after the read re-marks it
            // (and interrupts the apply through `changed`).
            let Some(mut changed) = lock(&self.inner.slots).get_mut(&id).map(|slot| {
                slot.dirty = false;
                slot.changed.subscribe()
            }) else {
                return;
            };
            let state = lock(&self.inner.desired).get(&id).cloned();
            if let Some(state) = state {
                // Everything logged while applying (provider included)
                // carries the deployment and the desired-state version.
                let span =
                    tracing::info_span!("apply", deployment_id = %id, version = state.version);
                self.run_one(&id, state, &mut changed)
                    .instrument(span)
                    .await;
            }
            drop(permit);
            let mut slots = lock(&self.inner.slots);
            if slots.get(&id).is_some_and(|slot| slot.dirty)
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

    async fn run_one(
        &self,
        id: &str,
        state: Arc<pb::DeploymentState>,
        changed: &mut tokio::sync::watch::Receiver<u64>,
    ) {
        match &state.state {
            Some(Desired::Apply(apply)) => {
                let again = lock(&self.inner.applied)
                    .get(id)
                    .is_some_and(|a| Arc::ptr_eq(a, &state));
                {
                    let mut attempts = lock(&self.inner.attempts);
                    let entry = attempts.entry(id.to_owned()).or_default();
                    if entry.version != state.version {
                        *entry = Attempts {
                            version: state.version,
                            ..Attempts::default()
                        };
                    }
                }
                let outcome = tokio::select! {
                    result = self.apply_reporting_progress(apply, state.version) => Some(result),
                    _ = changed.changed() => None,
                };
                match outcome {
                    None => {
                        tracing::info!(deployment_id = %id, "a newer desired state arrived: the apply stops here");
                        return;
                    }
                    Some(Ok(changed)) => {
                        self.inner.metrics.applies_ok.inc();
                        if changed && again {
                            // Same desired state, but the workload had drifted.
                            self.inner.metrics.reconcile_corrections.inc();
                            tracing::info!(deployment_id = %id, "drift corrected");
                        }
                        lock(&self.inner.applied).insert(id.to_owned(), state.clone());
                        if let Some(a) = lock(&self.inner.attempts).get_mut(id) {
                            a.failed = 0;
                            a.problem = None;
                        }
                    }
                    Some(Err(e)) => {
                        self.inner.metrics.applies_failed.inc();
                        let problem = problem_of(&e);
                        let failed = {
                            let mut attempts = lock(&self.inner.attempts);
                            let a = attempts.entry(id.to_owned()).or_default();
                            a.failed += 1;
                            a.problem = Some(problem);
                            a.failed
                        };
                        let retry = retry_delay(failed);
                        tracing::warn!(deployment_id = %id, error = %e, failed, ?retry, "apply failed; retrying");
                        let agent = self.clone();
                        let id = id.to_owned();
                        tokio::spawn(async move {
                            tokio::time::sleep(retry).await;
                            agent.mark(&id);
                        });
                    }
                }
                self.report(apply, state.version).await;
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
                                lock(&self.inner.attempts).remove(id);
                                // Forget the tombstone unless a newer state came.
                                let mut desired = lock(&self.inner.desired);
                                if desired.get(id).is_some_and(|s| Arc::ptr_eq(s, &state)) {
                                    desired.remove(id);
                                }
                            }
                            Err(e) => {
                                tracing::warn!(deployment_id = %id, code = ?e.code(), message = %e.message(), "removal report failed; retried by the reconcile")
                            }
                        }
                    }
                    Err(e) => {
                        self.inner.metrics.applies_failed.inc();
                        tracing::warn!(deployment_id = %id, error = %e, "delete failed; the reconcile retries it");
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

    /// [`Agent::apply`], reporting what the instances show every
    /// [`PROGRESS_EVERY`] while it waits for them (a health check that
    /// keeps failing during the startup window, say).
    async fn apply_reporting_progress(
        &self,
        apply: &pb::ApplyDeployment,
        version: u64,
    ) -> Result<bool, ctrl_provider::Error> {
        let applying = self.apply(apply);
        tokio::pin!(applying);
        let mut tick = tokio::time::interval(PROGRESS_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                result = &mut applying => return result,
                _ = tick.tick() => self.report(apply, version).await,
            }
        }
    }

    /// Reports the deployment's instances and its problem if they changed
    /// since the last report, and their new exits.
    async fn report(&self, apply: &pb::ApplyDeployment, version: u64) {
        let id = &apply.deployment_id;
        let attempts = lock(&self.inner.attempts)
            .get(id)
            .filter(|a| a.version == version)
            .cloned()
            .unwrap_or_default();
        let status = match self.inner.provider.status(&apply.k8s_name).await {
            Ok(s) => Some(s),
            Err(ctrl_provider::Error::NotFound(_)) => None,
            Err(e) => {
                tracing::warn!(deployment_id = %apply.deployment_id, error = %e, "status unavailable");
                return;
            }
        };
        // Nothing runs yet and nothing went wrong: nothing to say.
        if status.is_none() && attempts.problem.is_none() {
            return;
        }
        let instances = status
            .as_ref()
            .map(|s| instances(apply, s))
            .unwrap_or_default();
        let (crash_restarts, seen) = status.as_ref().map(observed_problem).unwrap_or_default();
        let problem = attempts.problem.clone().or(seen).unwrap_or_default();
        let failed_attempts = attempts.failed.max(crash_restarts);
        let fingerprint = format!(
            "{}|{problem}|{failed_attempts}|{version}",
            fingerprint(&instances)
        );
        if lock(&self.inner.reported).get(id) != Some(&fingerprint) {
            let update =
                pb::report_deployment_status_request::Change::Update(pb::DeploymentInstances {
                    deployment_id: id.clone(),
                    k8s_name: apply.k8s_name.clone(),
                    instances,
                    problem,
                    failed_attempts,
                    desired_version: version,
                });
            match self.inner.control.report(update).await {
                Ok(()) => {
                    self.inner.metrics.reports.inc();
                    lock(&self.inner.reported).insert(id.clone(), fingerprint);
                }
                Err(e) => {
                    tracing::warn!(deployment_id = %id, code = ?e.code(), message = %e.message(), "status report failed; retried later")
                }
            }
        }
        let Some(status) = status else {
            return;
        };
        let events = self.new_events(apply, &status);
        if !events.is_empty()
            && let Err(e) = self.inner.control.events(events).await
        {
            tracing::warn!(deployment_id = %id, message = %e.message(), "instance events not delivered");
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
                self.report(apply, state.version).await;
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

/// What a failed apply means to a user: the provider's reason without the
/// workload's internals ("exited with code 1 before becoming ready: <last
/// line>", "image localhost/x:1 not found: …").
fn problem_of(e: &ctrl_provider::Error) -> String {
    match e {
        ctrl_provider::Error::RolloutFailed { reason, .. } => tidy(reason),
        other => other.to_string(),
    }
}

/// Drops the `service "app" (replica 0): ` prefix and keeps only the last
/// line of the output the provider appends.
fn tidy(reason: &str) -> String {
    let reason = match reason.strip_prefix("service \"") {
        Some(rest) => rest.split_once("): ").map_or(reason, |(_, r)| r),
        None => reason,
    };
    match reason.split_once("; last output: ") {
        Some((what, output)) => {
            let last = output.rsplit(" | ").next().unwrap_or(output).trim();
            if last.is_empty() {
                what.to_owned()
            } else {
                format!("{what}: {last}")
            }
        }
        None => reason.to_owned(),
    }
}

/// What the instances show that a user should know (a health check that
/// fails, a crash loop), and how many times a crash-looping one restarted.
fn observed_problem(status: &WorkloadStatus) -> (u32, Option<String>) {
    let mut restarts = 0;
    let mut problem = None;
    for s in status
        .services
        .iter()
        .filter(|s| s.service == APP_SERVICE && !s.draining && !s.ready)
    {
        match s.state {
            State::Restarting | State::Failed => {
                restarts = restarts.max(s.restarts);
                problem.get_or_insert_with(|| s.message.clone());
            }
            State::Starting if !s.message.is_empty() => {
                problem.get_or_insert_with(|| s.message.clone());
            }
            _ => {}
        }
    }
    (restarts, problem.filter(|p| !p.is_empty()))
}

/// The pause before retrying a failed apply: 2 s, doubling, at most a minute.
fn retry_delay(failed: u32) -> Duration {
    let exponent = failed.saturating_sub(1).min(5);
    Duration::from_secs(2u64 << exponent).min(Duration::from_secs(60))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_rollout_reads_as_a_user_would_say_it() {
        assert_eq!(
            tidy(
                "service \"app\" (replica 0): exited with code 1 before becoming ready; last output: starting | boom: no config"
            ),
            "exited with code 1 before becoming ready: boom: no config"
        );
        assert_eq!(
            tidy("image localhost/x:1 not found: Docker responded with status code 404"),
            "image localhost/x:1 not found: Docker responded with status code 404"
        );
        assert_eq!(
            tidy(
                "service \"app\" (replica 1): not ready within 3s (last health check: GET /health answered 404 Not Found)"
            ),
            "not ready within 3s (last health check: GET /health answered 404 Not Found)"
        );
    }

    #[test]
    fn failed_applies_back_off_up_to_a_minute() {
        let delays: Vec<u64> = (1..=8).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(delays, [2, 4, 8, 16, 32, 60, 60, 60]);
    }
}
