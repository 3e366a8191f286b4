//! Converging a workload to a spec: rolling replacement replica by replica,
//! health-gated, undone when the new revision does not become healthy.

use std::time::{Duration, Instant};

use bollard::query_parameters::{
    ListVolumesOptions, RemoveContainerOptions, RemoveVolumeOptions, RestartContainerOptions,
    StopContainerOptions,
};
use tokio::task::JoinSet;

use super::DockerProvider;
use super::labels::{self, ReleaseRecord};
use super::observe::{Instance, Observed};
use crate::Error;
use crate::provider::{DeployRequest, DeployResult};
use crate::spec::{Plan, Role, ServiceSpec, WorkloadKind, WorkloadSpec};

/// How often a rollout looks at a starting container.
const POLL: Duration = Duration::from_millis(100);

/// What an apply did.
#[derive(Debug)]
pub(super) struct Outcome {
    pub(super) release: String,
    pub(super) revision: u64,
    pub(super) changed: bool,
}

impl From<Outcome> for DeployResult {
    fn from(o: Outcome) -> Self {
        DeployResult {
            release: o.release,
            revision: o.revision,
            changed: o.changed,
        }
    }
}

/// `spec` with a partial update applied.
pub(super) fn updated_spec(
    mut spec: WorkloadSpec,
    request: &DeployRequest,
) -> Result<WorkloadSpec, Error> {
    spec.release = request.release.clone();
    for update in &request.services {
        let Some(service) = spec.services.iter_mut().find(|s| s.name == update.name) else {
            return Err(Error::InvalidSpec(format!(
                "deploy names unknown service {:?}",
                update.name
            )));
        };
        if let Some(image) = &update.image {
            service.image = image.clone();
        }
        if let Some(env) = &update.env {
            service.env = env.clone();
        }
        if let Some(secrets) = &update.secrets {
            service.secrets = secrets.clone();
        }
        if let Some(check) = &update.health_check {
            service.health_check = Some(check.clone());
        }
    }
    spec.plan()?;
    Ok(spec)
}

impl DockerProvider {
    /// Converges the workload to `spec`. `history` replaces the recorded
    /// release list (rollback reorders it); by default the new release is
    /// put in front of the recorded ones.
    pub(super) async fn apply(
        &self,
        spec: WorkloadSpec,
        history: Option<Vec<ReleaseRecord>>,
    ) -> Result<Outcome, Error> {
        let plan = spec.plan()?;
        self.ensure_network(&spec).await?;
        let observed = self.observe(&spec.id).await?;
        let previous = observed.releases()?;
        let hash = labels::spec_hash(&spec);
        // A revision with this exact spec that still has containers is
        // finished, not duplicated (a crash half-way, or an undo).
        let existing = observed
            .instances
            .iter()
            .filter(|i| i.spec_hash == hash)
            .max_by_key(|i| i.revision);
        let (revision, releases_json) = match existing {
            Some(instance) => (instance.revision, instance.releases_json.clone()),
            None => {
                let mut records = history.unwrap_or_else(|| previous.clone());
                records.retain(|r| r.release != spec.release);
                records.insert(
                    0,
                    ReleaseRecord {
                        release: spec.release.clone(),
                        spec: spec.clone(),
                    },
                );
                records.truncate(self.config.history.max(1));
                let json = serde_json::to_string(&records)
                    .map_err(|e| Error::backend("record the release", e))?;
                (observed.newest().map_or(1, |n| n.revision + 1), json)
            }
        };

        let mut changed = false;
        let mut drains = JoinSet::new();
        for replica in 0..spec.replicas {
            match self
                .converge_replica(
                    &spec,
                    &plan,
                    replica,
                    revision,
                    &releases_json,
                    &observed,
                    &mut drains,
                )
                .await
            {
                Ok(c) => changed |= c,
                Err(reason) => {
                    // Keep what is still draining: the undo reuses it.
                    drains.abort_all();
                    while drains.join_next().await.is_some() {}
                    return Err(self.undo(&spec, revision, &previous, reason).await);
                }
            }
        }
        // Replicas beyond the count (scale down), of any revision.
        for instance in observed
            .instances
            .iter()
            .filter(|i| i.replica >= spec.replicas)
        {
            changed = true;
            self.retire(&mut drains, instance.clone(), self.config.drain_delay);
        }
        while let Some(done) = drains.join_next().await {
            if let Ok(Err(e)) = done {
                tracing::warn!(workload = %spec.id, error = %e, "removing a replaced container failed; the next apply retries");
            }
        }
        Ok(Outcome {
            release: spec.release,
            revision,
            changed,
        })
    }

    /// After a failed rollout: back to the previous release if there was
    /// one, else remove what was created. Returns the error to report.
    async fn undo(
        &self,
        spec: &WorkloadSpec,
        failed_revision: u64,
        previous: &[ReleaseRecord],
        reason: String,
    ) -> Error {
        let failed = Error::RolloutFailed {
            workload: spec.id.clone(),
            reason: reason.clone(),
        };
        match previous.first() {
            Some(record)
                if record.release != spec.release
                    || labels::spec_hash(&record.spec) != labels::spec_hash(spec) =>
            {
                let mut back = record.spec.clone();
                back.replicas = spec.replicas;
                tracing::warn!(workload = %spec.id, release = %spec.release, %reason, back_to = %back.release, "rollout failed; restoring the previous release");
                match Box::pin(self.apply(back, Some(previous.to_vec()))).await {
                    Ok(_) => failed,
                    Err(e) => Error::RolloutFailed {
                        workload: spec.id.clone(),
                        reason: format!(
                            "{reason}; restoring the previous release also failed: {e}"
                        ),
                    },
                }
            }
            _ => {
                if let Ok(observed) = self.observe(&spec.id).await {
                    for instance in observed
                        .instances
                        .iter()
                        .filter(|i| i.revision == failed_revision)
                    {
                        self.remove_container(&instance.id, &instance.name)
                            .await
                            .ok();
                    }
                }
                failed
            }
        }
    }

    /// Brings one replica to `revision`; on success the replica's older
    /// containers are handed to `drains`. Returns whether anything changed,
    /// or why it failed (the replica's new containers are then removed).
    #[allow(clippy::too_many_arguments)]
    async fn converge_replica(
        &self,
        spec: &WorkloadSpec,
        plan: &Plan,
        replica: u32,
        revision: u64,
        releases_json: &str,
        observed: &Observed,
        drains: &mut JoinSet<Result<(), Error>>,
    ) -> Result<bool, String> {
        let old: Vec<&Instance> = observed
            .instances
            .iter()
            .filter(|i| i.replica == replica && i.revision != revision)
            .collect();
        let complete = plan.order.iter().all(|&i| {
            observed
                .find(&spec.services[i].name, replica, revision)
                .is_some()
        });
        let mut changed = false;
        // Same volumes or the same host port: the old one must go first.
        let exclusive = spec.kind == WorkloadKind::Stateful
            || spec
                .services
                .iter()
                .any(|s| s.ports.iter().any(|p| p.host.is_some()));
        if exclusive && !complete && !old.is_empty() {
            for instance in &old {
                self.stop_gracefully(instance)
                    .await
                    .map_err(|e| e.to_string())?;
                self.remove_container(&instance.id, &instance.name)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            changed = true;
        }

        let mut result = Ok(());
        for &index in &plan.order {
            let service = &spec.services[index];
            let id = match observed.find(&service.name, replica, revision) {
                Some(instance) => instance.id.clone(),
                None => {
                    changed = true;
                    match self
                        .create_container(spec, index, replica, revision, releases_json)
                        .await
                    {
                        Ok(id) => id,
                        Err(e) => {
                            result = Err(e.to_string());
                            break;
                        }
                    }
                }
            };
            match self.bring_up(&id, service, replica).await {
                Ok(started) => changed |= started,
                Err(reason) => {
                    result = Err(reason);
                    break;
                }
            }
        }
        if let Err(reason) = result {
            if let Ok(now) = self.observe(&spec.id).await {
                for instance in now
                    .instances
                    .iter()
                    .filter(|i| i.replica == replica && i.revision == revision)
                {
                    self.remove_container(&instance.id, &instance.name)
                        .await
                        .ok();
                }
            }
            return Err(reason);
        }
        if !exclusive {
            for instance in old {
                changed = true;
                self.retire(drains, instance.clone(), self.config.drain_delay);
            }
        }
        Ok(changed)
    }

    /// Starts one container if needed and waits until it is ready (inits:
    /// until they exit 0). Returns whether it had to be started.
    async fn bring_up(
        &self,
        id: &str,
        service: &ServiceSpec,
        replica: u32,
    ) -> Result<bool, String> {
        let what = format!("service {:?} (replica {replica})", service.name);
        let instance = self
            .instance(id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{what}: its container disappeared"))?;
        if instance.completed() || (instance.running() && service.health_check.is_none()) {
            return Ok(false);
        }
        let mut started = false;
        if !instance.running() {
            self.call(
                &format!("start {}", instance.name),
                self.docker
                    .start_container(id, None::<bollard::query_parameters::StartContainerOptions>),
            )
            .await
            .map_err(|e| format!("{what}: {e}"))?;
            started = true;
        }
        let budget = match &service.health_check {
            Some(check) => check.rollout_budget(),
            None => self.config.start_timeout,
        };
        let deadline = Instant::now() + budget;
        let restarts_before = instance.restarts;
        let mut last_probe = String::from("no probe yet");
        loop {
            let now = self
                .instance(id)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("{what}: its container disappeared"))?;
            if service.role == Role::Init {
                if now.exited() {
                    return if now.exit_code == Some(0) {
                        Ok(started)
                    } else {
                        Err(format!(
                            "{what}: init {}{}",
                            now.exit_message(),
                            self.log_tail(id).await
                        ))
                    };
                }
            } else if now.exited() || now.restarts > restarts_before {
                let happened = if now.exited() {
                    now.exit_message()
                } else {
                    // The engine restarted it already: say how it ended.
                    let restarts = now.restarts - restarts_before;
                    let times = if restarts == 1 {
                        "once"
                    } else {
                        "several times"
                    };
                    match now.exit_code {
                        Some(code) if code != 0 => {
                            format!("exited with code {code} (restarted {times})")
                        }
                        _ => format!("exited (restarted {times})"),
                    }
                };
                return Err(format!(
                    "{what}: {happened} before becoming ready{}",
                    self.log_tail(id).await
                ));
            } else if now.running() {
                match &service.health_check {
                    None => return Ok(started),
                    Some(check) => match self.probe(&now, check).await {
                        Ok(()) => return Ok(started),
                        Err(e) => last_probe = e,
                    },
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{what}: not ready within {budget:?} (last health check: {last_probe}){}",
                    self.log_tail(id).await
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Schedules `instance` to stop after `delay` and be removed.
    fn retire(&self, drains: &mut JoinSet<Result<(), Error>>, instance: Instance, delay: Duration) {
        let provider = self.clone();
        drains.spawn(async move {
            tokio::time::sleep(delay).await;
            provider.stop_gracefully(&instance).await?;
            provider
                .remove_container(&instance.id, &instance.name)
                .await
        });
    }

    /// Stops a container with its service's signal and grace period.
    pub(super) async fn stop_gracefully(&self, instance: &Instance) -> Result<(), Error> {
        let (signal, grace) = self.stop_settings(instance);
        let stop = self.docker.stop_container(
            &instance.id,
            Some(StopContainerOptions {
                signal,
                t: Some(grace),
            }),
        );
        // The engine waits up to the grace period before it answers.
        let limit =
            self.config.api_timeout + Duration::from_secs(u64::try_from(grace).unwrap_or(0));
        match tokio::time::timeout(limit, stop).await {
            Err(_) => Err(Error::backend(
                format!("stop {}", instance.name),
                "timed out",
            )),
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) if matches!(super::status_code(&e), Some(304 | 404)) => Ok(()),
            Ok(Err(e)) => Err(Error::backend(format!("stop {}", instance.name), e)),
        }
    }

    fn stop_settings(&self, instance: &Instance) -> (Option<String>, i32) {
        let spec = instance.service_spec();
        match spec {
            Some(s) => (
                Some(s.stop_signal.as_str().to_owned()),
                i32::try_from(s.stop_grace.as_secs()).unwrap_or(i32::MAX),
            ),
            None => (None, 10),
        }
    }

    /// Force-removes container `id` (named `name`) and its anonymous
    /// volumes, and its secrets' tmpfs directory; a missing one is fine.
    pub(super) async fn remove_container(&self, id: &str, name: &str) -> Result<(), Error> {
        let removed = self
            .call_raw(
                "remove container",
                self.docker.remove_container(
                    id,
                    Some(RemoveContainerOptions {
                        force: true,
                        v: true,
                        ..Default::default()
                    }),
                ),
            )
            .await?;
        let removed = match removed {
            Ok(()) => Ok(()),
            Err(e) if super::is_not_found(&e) || super::status_code(&e) == Some(409) => Ok(()),
            Err(e) => Err(Error::backend(format!("remove container {id}"), e)),
        };
        if removed.is_ok()
            && let Some(delivery) = &self.config.secret_delivery
        {
            delivery.remove(name);
        }
        removed
    }

    /// Deprovision: stop and remove every container, the persistent
    /// volumes and the network.
    pub(super) async fn remove_workload(&self, workload: &str) -> Result<(), Error> {
        let observed = self.observe(workload).await?;
        let removals = observed.instances.iter().map(|instance| async move {
            self.stop_gracefully(instance).await?;
            self.remove_container(&instance.id, &instance.name).await
        });
        for result in futures::future::join_all(removals).await {
            result?;
        }
        let filters = std::collections::HashMap::from([(
            "label".to_owned(),
            vec![format!("{}={workload}", labels::WORKLOAD)],
        )]);
        let volumes = self
            .call(
                "list volumes",
                self.docker.list_volumes(Some(ListVolumesOptions {
                    filters: Some(filters),
                })),
            )
            .await?;
        for volume in volumes.volumes.unwrap_or_default() {
            let removed = self
                .call_raw(
                    "remove volume",
                    self.docker
                        .remove_volume(&volume.name, Some(RemoveVolumeOptions { force: true })),
                )
                .await?;
            if let Err(e) = removed
                && !super::is_not_found(&e)
            {
                return Err(Error::backend(format!("remove volume {}", volume.name), e));
            }
        }
        let network = labels::network_name(workload);
        match self
            .call_raw("remove network", self.docker.remove_network(&network))
            .await?
        {
            Ok(()) => Ok(()),
            Err(e) if super::is_not_found(&e) => Ok(()),
            Err(e) => Err(Error::backend(format!("remove network {network}"), e)),
        }
    }

    /// Stops the long-lived services of every replica, sidecars before main.
    pub(super) async fn stop_workload(&self, workload: &str) -> Result<(), Error> {
        let observed = self.observe(workload).await?;
        let spec = observed.current_spec(workload)?;
        let plan = spec.plan()?;
        let stops = (0..spec.replicas).map(|replica| {
            let observed = &observed;
            let spec = &spec;
            let plan = &plan;
            async move {
                for &index in plan.order.iter().rev() {
                    let service = &spec.services[index];
                    if service.role == Role::Init {
                        continue;
                    }
                    for instance in observed.instances.iter().filter(|i| {
                        i.replica == replica && i.service == service.name && i.running()
                    }) {
                        self.stop_gracefully(instance).await?;
                    }
                }
                Ok::<_, Error>(())
            }
        });
        for result in futures::future::join_all(stops).await {
            result?;
        }
        Ok(())
    }

    /// Starts a stopped workload: the same as applying its current spec.
    pub(super) async fn start_workload(&self, workload: &str) -> Result<(), Error> {
        let spec = self.observe(workload).await?.current_spec(workload)?;
        self.apply(spec, None).await.map(|_| ())
    }

    /// Restarts one replica at a time, each service in start order, waiting
    /// for readiness before the next replica.
    pub(super) async fn restart_workload(&self, workload: &str) -> Result<(), Error> {
        let observed = self.observe(workload).await?;
        let spec = observed.current_spec(workload)?;
        let plan = spec.plan()?;
        let revision = observed.newest().map_or(0, |n| n.revision);
        for replica in 0..spec.replicas {
            for &index in &plan.order {
                let service = &spec.services[index];
                if service.role == Role::Init {
                    continue;
                }
                let Some(instance) = observed.find(&service.name, replica, revision) else {
                    continue;
                };
                let (signal, grace) = self.stop_settings(instance);
                let restart = self.docker.restart_container(
                    &instance.id,
                    Some(RestartContainerOptions {
                        signal,
                        t: Some(grace),
                    }),
                );
                let limit = self.config.api_timeout
                    + Duration::from_secs(u64::try_from(grace).unwrap_or(0));
                tokio::time::timeout(limit, restart)
                    .await
                    .map_err(|_| Error::backend(format!("restart {}", instance.name), "timed out"))?
                    .map_err(|e| Error::backend(format!("restart {}", instance.name), e))?;
                self.bring_up(&instance.id, service, replica)
                    .await
                    .map_err(|reason| Error::RolloutFailed {
                        workload: workload.to_owned(),
                        reason,
                    })?;
            }
        }
        Ok(())
    }
}
