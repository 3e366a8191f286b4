//! Waking a Deploy workflow that waits for instances: after a report, if the
//! deployment is still in its pipeline and enough regions run their minimum,
//! send `Deploy/{id}/NotifyInstancesReady` through Restate's ingress.
//!
//! The workflow re-checks the database whenever it is woken (and once before
//! it first waits), so a lost, early or repeated notification is harmless;
//! this process only avoids sending the same one over and over: a deployment
//! is notified once per ready period (forgotten when it stops being ready,
//! so a later recovery notifies again) and at most once per `dedup_ttl`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ctrl_core::status::{DeploymentStatus, enough_regions_ready};
use ctrl_core::workflows::DEPLOY_SERVICE;
use sqlx::MySqlPool;

/// The Deploy object's shared handler that resolves the readiness awakeable.
pub const NOTIFY_HANDLER: &str = "NotifyInstancesReady";

/// Sends readiness notifications, deduplicated per process.
#[derive(Debug)]
pub struct Notifier {
    ingress: String,
    http: reqwest::Client,
    dedup_ttl: Duration,
    notified: Mutex<HashMap<String, Instant>>,
}

/// What a check did (for logs and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The deployment is not waiting in its pipeline.
    NotWaiting,
    /// Not enough regions run it yet.
    NotReady,
    /// Already notified recently.
    AlreadyNotified,
    /// The workflow was notified.
    Notified,
}

impl Notifier {
    /// Notifies through the ingress at `ingress_url`.
    pub fn new(ingress_url: &str) -> Self {
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5))
            .build()
            .expect("build the Restate HTTP client");
        Self {
            ingress: ingress_url.trim_end_matches('/').to_owned(),
            http,
            dedup_ttl: Duration::from_secs(300),
            notified: Mutex::new(HashMap::new()),
        }
    }

    /// Checks the deployment (as read after the report) and notifies its workflow if it
    /// became ready. Errors are the caller's to log: the workflow still has
    /// its own check and timeout.
    pub async fn after_report(
        &self,
        db: &MySqlPool,
        deployment: &ctrl_db::deployment::Deployment,
    ) -> anyhow::Result<Outcome> {
        let deployment_id = deployment.id.as_str();
        if !matches!(
            deployment.status,
            DeploymentStatus::Starting
                | DeploymentStatus::Building
                | DeploymentStatus::Deploying
                | DeploymentStatus::Network
                | DeploymentStatus::Finalizing
        ) {
            self.forget(deployment_id);
            return Ok(Outcome::NotWaiting);
        }
        let regions = ctrl_db::instance::readiness_by_region(db, deployment_id).await?;
        if !enough_regions_ready(&regions) {
            self.forget(deployment_id);
            return Ok(Outcome::NotReady);
        }
        if !self.claim(deployment_id) {
            return Ok(Outcome::AlreadyNotified);
        }
        let url = format!(
            "{}/{DEPLOY_SERVICE}/{deployment_id}/{NOTIFY_HANDLER}/send",
            self.ingress
        );
        let sent = async {
            let response = self.http.post(&url).send().await?;
            let status = response.status();
            if !status.is_success() {
                let body = response.text().await.unwrap_or_default();
                anyhow::bail!("Restate answered {status}: {body}");
            }
            Ok(())
        }
        .await;
        if let Err(e) = sent {
            // Let the next report try again.
            self.forget(deployment_id);
            return Err(e.context(format!("notify {DEPLOY_SERVICE}/{deployment_id}")));
        }
        tracing::info!(deployment = %deployment_id, "instances ready: workflow notified");
        Ok(Outcome::Notified)
    }

    /// Marks a deployment notified; false if it already was within the TTL.
    fn claim(&self, deployment_id: &str) -> bool {
        let mut notified = self.notified.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        notified.retain(|_, at| now.duration_since(*at) < self.dedup_ttl);
        if notified.contains_key(deployment_id) {
            return false;
        }
        notified.insert(deployment_id.to_owned(), now);
        true
    }

    fn forget(&self, deployment_id: &str) {
        self.notified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(deployment_id);
    }
}
