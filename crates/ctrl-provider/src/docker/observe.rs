//! What runs: a workload's containers as [`Instance`]s read from the engine,
//! and the status computed from them.

use std::collections::{BTreeMap, HashMap};

use bollard::models::{ContainerInspectResponse, ContainerStateStatusEnum};
use bollard::query_parameters::ListContainersOptions;

use super::DockerProvider;
use super::labels::{self, ReleaseRecord};
use crate::Error;
use crate::spec::{Role, WorkloadSpec};

/// One container of a workload, as the engine reports it.
#[derive(Debug, Clone)]
pub(super) struct Instance {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) service: String,
    pub(super) role: Role,
    pub(super) replica: u32,
    pub(super) revision: u64,
    pub(super) release: String,
    pub(super) spec_hash: String,
    pub(super) releases_json: String,
    pub(super) status: ContainerStateStatusEnum,
    pub(super) exit_code: Option<i64>,
    pub(super) oom_killed: bool,
    pub(super) restarts: u32,
    pub(super) memory_limit: i64,
    /// Container port → published host port.
    pub(super) host_ports: BTreeMap<u16, u16>,
}

impl Instance {
    pub(super) fn running(&self) -> bool {
        self.status == ContainerStateStatusEnum::RUNNING
    }

    pub(super) fn exited(&self) -> bool {
        matches!(
            self.status,
            ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD
        )
    }

    /// This container's own service definition, from the release records
    /// it carries (its own release is always among them).
    pub(super) fn service_spec(&self) -> Option<crate::ServiceSpec> {
        serde_json::from_str::<Vec<ReleaseRecord>>(&self.releases_json)
            .ok()?
            .into_iter()
            .find(|r| r.release == self.release)?
            .spec
            .services
            .into_iter()
            .find(|s| s.name == self.service)
    }

    /// An init that finished successfully.
    pub(super) fn completed(&self) -> bool {
        self.role == Role::Init && self.exited() && self.exit_code == Some(0)
    }

    /// Exit 137 with a memory limit is how an OOM kill shows on podman,
    /// which never sets `OOMKilled`.
    pub(super) fn looks_oom_killed(&self) -> bool {
        self.oom_killed || (self.exit_code == Some(137) && self.memory_limit > 0 && self.exited())
    }

    pub(super) fn exit_message(&self) -> String {
        match self.exit_code {
            Some(137) if self.looks_oom_killed() => format!(
                "killed: out of memory (exit 137, limit {} MiB)",
                self.memory_limit / (1024 * 1024)
            ),
            Some(code) => format!("exited with code {code}"),
            None => "exited".into(),
        }
    }

    fn from_inspect(c: ContainerInspectResponse) -> Option<Self> {
        let config = c.config?;
        let labels = config.labels.unwrap_or_default();
        let get = |k: &str| labels.get(k).cloned().unwrap_or_default();
        let role = match get(labels::ROLE).as_str() {
            "init" => Role::Init,
            "sidecar" => Role::Sidecar,
            _ => Role::Main,
        };
        let state = c.state.unwrap_or_default();
        let mut host_ports = BTreeMap::new();
        let ports = c.network_settings.and_then(|n| n.ports).unwrap_or_default();
        for (key, bindings) in ports {
            let Some(container) = key.split('/').next().and_then(|p| p.parse::<u16>().ok()) else {
                continue;
            };
            let host = bindings
                .unwrap_or_default()
                .into_iter()
                .find_map(|b| b.host_port.and_then(|p| p.parse::<u16>().ok()));
            if let Some(host) = host {
                host_ports.insert(container, host);
            }
        }
        Some(Self {
            id: c.id?,
            name: c
                .name
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_owned(),
            service: get(labels::SERVICE),
            role,
            replica: get(labels::REPLICA).parse().ok()?,
            revision: get(labels::REVISION).parse().ok()?,
            release: get(labels::RELEASE),
            spec_hash: get(labels::SPEC_HASH),
            releases_json: get(labels::RELEASES),
            status: state.status.unwrap_or(ContainerStateStatusEnum::EMPTY),
            exit_code: state.exit_code,
            oom_killed: state.oom_killed.unwrap_or(false),
            restarts: c
                .restart_count
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(0),
            memory_limit: c.host_config.and_then(|h| h.memory).unwrap_or(0),
            host_ports,
        })
    }
}

/// Everything a workload has on the engine.
#[derive(Debug, Clone, Default)]
pub(super) struct Observed {
    pub(super) instances: Vec<Instance>,
}

impl Observed {
    pub(super) fn is_empty(&self) -> bool {
        self.instances.is_empty()
    }

    /// The newest revision present.
    pub(super) fn newest(&self) -> Option<&Instance> {
        self.instances.iter().max_by_key(|i| i.revision)
    }

    /// The releases recorded on the newest revision, current first.
    pub(super) fn releases(&self) -> Result<Vec<ReleaseRecord>, Error> {
        let Some(newest) = self.newest() else {
            return Ok(Vec::new());
        };
        serde_json::from_str(&newest.releases_json).map_err(|e| {
            Error::backend(
                format!("read the releases of container {}", newest.name),
                format!("label {} is not valid: {e}", labels::RELEASES),
            )
        })
    }

    /// The spec the workload currently converges to, with the replica count
    /// that is actually deployed.
    pub(super) fn current_spec(&self, workload: &str) -> Result<WorkloadSpec, Error> {
        let mut spec = self
            .releases()?
            .into_iter()
            .next()
            .map(|r| r.spec)
            .ok_or_else(|| Error::NotFound(workload.to_owned()))?;
        spec.replicas = self.replica_count().max(1);
        Ok(spec)
    }

    /// Distinct replica indices present.
    pub(super) fn replica_count(&self) -> u32 {
        let mut replicas: Vec<u32> = self.instances.iter().map(|i| i.replica).collect();
        replicas.sort_unstable();
        replicas.dedup();
        u32::try_from(replicas.len()).unwrap_or(u32::MAX)
    }

    /// The instance of `service` in `replica` at `revision`.
    pub(super) fn find(&self, service: &str, replica: u32, revision: u64) -> Option<&Instance> {
        self.instances
            .iter()
            .find(|i| i.service == service && i.replica == replica && i.revision == revision)
    }
}

impl DockerProvider {
    /// Lists and inspects every container of `workload`.
    pub(super) async fn observe(&self, workload: &str) -> Result<Observed, Error> {
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![format!("{}={workload}", labels::WORKLOAD)],
        )]);
        let summaries = self
            .read_raw("list containers", || {
                self.docker.list_containers(Some(ListContainersOptions {
                    all: true,
                    filters: Some(filters.clone()),
                    ..Default::default()
                }))
            })
            .await?
            .map_err(|e| Error::backend("list containers", e))?;
        let inspections =
            futures::future::join_all(summaries.into_iter().filter_map(|s| s.id).map(
                |id| async move {
                    match self.inspect(&id).await {
                        Ok(c) => Ok(c),
                        // Removed between list and inspect.
                        Err(Error::NotFound(_)) => Ok(None),
                        Err(e) => Err(e),
                    }
                },
            ))
            .await;
        let owner = self.owner();
        let mut instances = Vec::new();
        for inspected in inspections {
            let Some(container) = inspected? else {
                continue;
            };
            let foreign = container
                .config
                .as_ref()
                .and_then(|c| c.labels.as_ref())
                .is_some_and(|l| labels::is_foreign(l, &owner));
            if foreign {
                continue;
            }
            if let Some(instance) = Instance::from_inspect(container) {
                instances.push(instance);
            }
        }
        instances.sort_by(|a, b| {
            (a.replica, a.revision, &a.name).cmp(&(b.replica, b.revision, &b.name))
        });
        Ok(Observed { instances })
    }

    /// Every managed workload, from the labels of its containers (the
    /// newest revision's).
    pub(super) async fn list_workloads(&self) -> Result<Vec<crate::WorkloadSummary>, Error> {
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![format!(
                "{}={}",
                labels::MANAGED_BY,
                labels::MANAGED_BY_VALUE
            )],
        )]);
        let summaries = self
            .read_raw("list containers", || {
                self.docker.list_containers(Some(ListContainersOptions {
                    all: true,
                    filters: Some(filters.clone()),
                    ..Default::default()
                }))
            })
            .await?
            .map_err(|e| Error::backend("list containers", e))?;
        let owner = self.owner();
        let mut newest: BTreeMap<String, (u64, crate::WorkloadSummary)> = BTreeMap::new();
        for container in summaries {
            let Some(all) = container.labels else {
                continue;
            };
            // Another agent's: never listed, so never taken for an orphan.
            if labels::is_foreign(&all, &owner) {
                continue;
            }
            let Some(workload) = all.get(labels::WORKLOAD).cloned() else {
                continue;
            };
            let revision = all
                .get(labels::REVISION)
                .and_then(|r| r.parse().ok())
                .unwrap_or(0);
            if newest.get(&workload).is_some_and(|(r, _)| *r >= revision) {
                continue;
            }
            let release = all.get(labels::RELEASE).cloned().unwrap_or_default();
            let spec_labels = all
                .into_iter()
                .filter(|(k, _)| !labels::is_internal(k))
                .collect();
            let summary = crate::WorkloadSummary {
                id: workload.clone(),
                release,
                labels: spec_labels,
            };
            newest.insert(workload, (revision, summary));
        }
        Ok(newest.into_values().map(|(_, s)| s).collect())
    }

    pub(super) async fn inspect(
        &self,
        id: &str,
    ) -> Result<Option<ContainerInspectResponse>, Error> {
        let found = self
            .read_raw("inspect container", || {
                self.docker.inspect_container(
                    id,
                    None::<bollard::query_parameters::InspectContainerOptions>,
                )
            })
            .await?;
        match found {
            Ok(c) => Ok(Some(c)),
            Err(e) if super::is_not_found(&e) => Ok(None),
            Err(e) => Err(Error::backend(format!("inspect container {id}"), e)),
        }
    }

    pub(super) async fn instance(&self, id: &str) -> Result<Option<Instance>, Error> {
        Ok(self.inspect(id).await?.and_then(Instance::from_inspect))
    }
}
