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
