//! Names and labels: everything the backend needs to find a workload's
//! objects and read back its releases lives in container labels, so a
//! restarted agent (or another one) sees exactly what the last one did.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::spec::WorkloadSpec;

pub(super) const MANAGED_BY: &str = "ctrl.dev/managed-by";
pub(super) const MANAGED_BY_VALUE: &str = "ctrl-provider";
pub(super) const WORKLOAD: &str = "ctrl.dev/workload";
pub(super) const SERVICE: &str = "ctrl.dev/service";
pub(super) const ROLE: &str = "ctrl.dev/role";
pub(super) const REPLICA: &str = "ctrl.dev/replica";
pub(super) const REVISION: &str = "ctrl.dev/revision";
pub(super) const RELEASE: &str = "ctrl.dev/release";
pub(super) const SPEC_HASH: &str = "ctrl.dev/spec-hash";
/// The region of the agent that made the container.
pub(super) const REGION: &str = "ctrl.dev/region";
/// The cluster (cell) of the agent that made the container.
pub(super) const CLUSTER: &str = "ctrl.dev/cluster";
/// JSON list of [`ReleaseRecord`]s, current first.
pub(super) const RELEASES: &str = "ctrl.dev/releases";

/// Whether a label is the backend's own (not one of the spec's).
pub(super) fn is_internal(key: &str) -> bool {
    [
        MANAGED_BY, WORKLOAD, SERVICE, ROLE, REPLICA, REVISION, RELEASE, SPEC_HASH, RELEASES,
        REGION, CLUSTER,
    ]
    .contains(&key)
}

/// The network of a workload.
pub(super) fn network_name(workload: &str) -> String {
    format!("ctrl-{workload}")
}

/// The container of one service in one replica of one revision.
pub(super) fn container_name(workload: &str, service: &str, replica: u32, revision: u64) -> String {
    format!("{workload}-{service}-{replica}-r{revision}")
}

/// A persistent volume of one replica (kept across revisions).
pub(super) fn volume_name(workload: &str, service: &str, volume: &str, replica: u32) -> String {
    format!("{workload}-{service}-{volume}-{replica}")
}

/// One release the workload ran, with everything needed to run it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct ReleaseRecord {
    pub(super) release: String,
    pub(super) spec: WorkloadSpec,
}

/// Identifies a spec's content (replica count excluded: scaling is not a
/// new revision). Secret values are not part of it, only their references.
pub(super) fn spec_hash(spec: &WorkloadSpec) -> String {
    let mut normalized = spec.clone();
    normalized.replicas = 0;
    let json = serde_json::to_vec(&normalized).unwrap_or_default();
    hex::encode(&Sha256::digest(&json)[..12])
}

/// Whether a container's labels say another agent made it: another
/// region or cluster. Containers from before these labels (none set) are
/// taken as this agent's, so an upgrade leaves nothing behind.
pub(super) fn is_foreign(labels: &HashMap<String, String>, owner: &Owner) -> bool {
    labels.get(REGION).is_some_and(|r| *r != owner.region)
        || labels.get(CLUSTER).is_some_and(|c| *c != owner.cluster)
}

/// The agent a provider works for: what its containers are labelled with
/// and what it may touch (two agents can share one engine).
#[derive(Debug, Clone)]
pub(super) struct Owner {
    pub(super) region: String,
    pub(super) cluster: String,
}

/// The labels of one container.
pub(super) fn container_labels(
    spec: &WorkloadSpec,
    owner: &Owner,
    service: usize,
    replica: u32,
    revision: u64,
    releases: &str,
) -> BTreeMap<String, String> {
    let svc = &spec.services[service];
    let mut labels = spec.labels.clone();
    labels.extend([
        (MANAGED_BY.to_owned(), MANAGED_BY_VALUE.to_owned()),
        (WORKLOAD.to_owned(), spec.id.clone()),
        (SERVICE.to_owned(), svc.name.clone()),
        (ROLE.to_owned(), role_name(svc.role).to_owned()),
        (REPLICA.to_owned(), replica.to_string()),
        (REVISION.to_owned(), revision.to_string()),
        (RELEASE.to_owned(), spec.release.clone()),
        (SPEC_HASH.to_owned(), spec_hash(spec)),
        (RELEASES.to_owned(), releases.to_owned()),
        (REGION.to_owned(), owner.region.clone()),
        (CLUSTER.to_owned(), owner.cluster.clone()),
    ]);
    labels
}

pub(super) fn role_name(role: crate::spec::Role) -> &'static str {
    match role {
        crate::spec::Role::Init => "init",
        crate::spec::Role::Main => "main",
        crate::spec::Role::Sidecar => "sidecar",
    }
}
