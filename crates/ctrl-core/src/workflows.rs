//! The wire contract of the worker's Restate services: names and inputs
//! shared by ctrl-api (which starts invocations through the ingress) and
//! ctrl-worker (which serves them). Names are part of the contract; inputs
//! are versionable JSON (fields may be added, never renamed or removed).

use serde::{Deserialize, Serialize};

/// The virtual object running a deployment's pipeline, keyed by deployment id.
pub const DEPLOY_SERVICE: &str = "Deploy";
/// Its handler that runs the pipeline (invoked with the deployment id as
/// both key and idempotency key, so a retried start never runs twice).
pub const DEPLOY_HANDLER: &str = "Deploy";

/// Input of `Deploy/{deployment_id}/Deploy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployInput {
    /// The deployment to run (its row holds everything else).
    pub deployment_id: String,
}

/// Waking a stopped deployment, on its own Deploy object: desired state
/// running, then the same wait for instances as a deploy, then `ready`.
pub const WAKE_HANDLER: &str = "Wake";

/// The idempotency key of a wake: one wake per stop (the deployment row
/// changes when it stops), so the API, the edge and their retries all land
/// on the same invocation.
pub fn wake_idempotency_key(deployment_id: &str, updated_at: i64) -> String {
    format!("wake:{deployment_id}:{updated_at}")
}

/// Input of `Deploy/{deployment_id}/Wake`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WakeInput {
    /// The deployment to wake (the object's key).
    pub deployment_id: String,
}

/// Deleting one deployment, on its own Deploy object (so it never overlaps
/// its pipeline or a wake): stop it everywhere, wait until its instances
/// are gone (bounded), then remove its rows.
pub const DELETE_DEPLOYMENT_HANDLER: &str = "Delete";

/// Input of `Deploy/{deployment_id}/Delete`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteDeploymentInput {
    /// The deployment to delete (the object's key).
    pub deployment_id: String,
    /// Part of a cascade that deletes its app or environment: the live
    /// deployment may go too.
    #[serde(default)]
    pub cascade: bool,
}

/// The virtual object deleting an environment, app, project or workspace
/// with everything below it, keyed by the id of what is deleted.
pub const DELETION_SERVICE: &str = "Deletion";
/// Its one handler.
pub const DELETION_HANDLER: &str = "Delete";

/// Input of `Deletion/{id}/Delete`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletionInput {
    /// What to delete (`env_…`, `app_…`, `proj_…` or `ws_…`; the object's key).
    pub id: String,
}

/// The Deploy object's shared handler through which cluster-sync tells a
/// handler waiting for instances (a pipeline or a wake) that their state
/// or an agent's problem changed: it re-checks the database.
pub const NOTIFY_INSTANCES_HANDLER: &str = "NotifyInstancesChanged";

/// Rollback, on the Deploy object of the deployment live now (the source),
/// so it never waits behind a newer deployment's pipeline.
pub const ROLLBACK_HANDLER: &str = "Rollback";

/// Input of `Deploy/{source_deployment_id}/Rollback`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackInput {
    /// The deployment live now.
    pub source_deployment_id: String,
    /// The earlier deployment to make live.
    pub target_deployment_id: String,
}

/// Promote, on the Deploy object of the deployment to make live.
pub const PROMOTE_HANDLER: &str = "Promote";

/// Input of `Deploy/{target_deployment_id}/Promote`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromoteInput {
    /// The deployment to make live.
    pub target_deployment_id: String,
}

/// Output of Rollback and Promote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveSwap {
    /// The deployment that was live before (empty if none).
    #[serde(default)]
    pub previous_deployment_id: String,
}

/// The virtual object serialising a deployment's desired-state changes,
/// keyed by deployment id.
pub const DEPLOYMENT_SERVICE: &str = "Deployment";
/// Its handler scheduling a change (delay 0 = now; last writer wins):
/// ingress-private, the worker's own handlers call it.
pub const SCHEDULE_DESIRED_STATE_HANDLER: &str = "ScheduleDesiredStateChange";
/// Its handler stopping the deployment now if the user's stop rules allow
/// (StopDeployment; no input).
pub const STOP_HANDLER: &str = "Stop";

/// Input of `Deployment/{deployment_id}/Stop`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopInput {
    /// Who asked (for the worker's log).
    #[serde(default)]
    pub actor: String,
}

/// Input of `Deployment/{deployment_id}/ScheduleDesiredStateChange`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleDesiredStateChange {
    /// Milliseconds to wait before applying it.
    pub delay_millis: u64,
    /// `"running"` or `"stopped"`.
    pub state: String,
    /// Replace a change already scheduled (false: keep it, do nothing).
    pub overwrite: bool,
}

/// The virtual object ordering, renewing and storing the certificate of one
/// hostname (maybe `*.domain`), keyed by the hostname.
pub const CERTIFICATE_SERVICE: &str = "Certificate";
/// Its handler: obtain (or renew) the certificate if it is missing or due.
pub const OBTAIN_CERTIFICATE_HANDLER: &str = "Obtain";

/// Input of `Certificate/{hostname}/Obtain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObtainCertificate {
    /// The custom domain (or platform name) row the challenge belongs to.
    pub domain_id: String,
    /// Order even if the stored certificate is not due.
    #[serde(default)]
    pub force: bool,
}

/// Output of `Certificate/{hostname}/Obtain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateOutcome {
    /// `"issued"`, `"current"` (nothing was due), `"skipped"` (the domain is
    /// gone or not verified) or `"failed"`.
    pub status: String,
    /// The certificate's expiry, unix ms (0 if none).
    #[serde(default)]
    pub not_after: i64,
    /// Why it failed (the CA's words), empty otherwise.
    #[serde(default)]
    pub error: String,
}

/// The singleton object (key [`RENEWAL_KEY`]) that renews certificates due
/// within the renewal window and reschedules itself.
pub const CERTIFICATE_RENEWAL_SERVICE: &str = "CertificateRenewal";
/// Its key.
pub const RENEWAL_KEY: &str = "global";
/// Starts the renewal chain unless it is already scheduled (the worker calls
/// it at every start).
pub const ENSURE_RENEWAL_HANDLER: &str = "Ensure";

/// The virtual object verifying and removing one custom domain, keyed by
/// its id.
pub const CUSTOM_DOMAIN_SERVICE: &str = "CustomDomain";
/// (Re)starts verification: pending, no attempts, a check now and then
/// about once a minute until verified or given up.
pub const START_VERIFICATION_HANDLER: &str = "StartVerification";
/// Removes the domain with its route, challenge and certificate.
pub const DELETE_CUSTOM_DOMAIN_HANDLER: &str = "Delete";

/// Input of `CustomDomain/{domain_id}/StartVerification` and `.../Delete`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomDomainInput {
    /// The custom domain (the object's key).
    pub domain_id: String,
}

/// The GitHub webhook handler (virtual object keyed by installation and
/// repository, so one repository's deliveries run in order); its input is
/// `ctrl_github::webhook::Delivery`, sent with the delivery id as the
/// idempotency key.
pub const GITHUB_WEBHOOK_SERVICE: &str = "GitHubWebhook";
/// Handles one delivery.
pub const GITHUB_WEBHOOK_HANDLER: &str = "Handle";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deploy_input_is_plain_json() {
        let input = DeployInput {
            deployment_id: "d_0123456789abcdef".into(),
        };
        let json = serde_json::to_string(&input).unwrap();
        assert_eq!(json, r#"{"deployment_id":"d_0123456789abcdef"}"#);
        // Unknown fields from a newer sender are ignored by an older reader.
        let newer: DeployInput =
            serde_json::from_str(r#"{"deployment_id":"d_x","extra":1}"#).unwrap();
        assert_eq!(newer.deployment_id, "d_x");
    }
}
