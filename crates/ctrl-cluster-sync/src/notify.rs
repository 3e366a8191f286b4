//! Telling a Deploy handler that waits for instances (a pipeline or a wake)
//! that what it waits on changed: after a report, if the deployment is in a
//! pipeline phase and its regions' state — running instances, an agent's
//! problem, failed attempts — differs from what was last announced, send
//! `Deploy/{id}/NotifyInstancesChanged` through Restate's ingress, retried
//! a few times with backoff in the background (the agent's report never
//! waits for it).
//!
//! The handler re-checks the database whenever it is woken, and on its own
//! timer too, so a lost, early or repeated notification is harmless; this
//! process only avoids repeating one: it remembers per deployment the state
//! it announced (forgotten after `dedup_ttl`, when the deployment stops
//! waiting, or when sending failed).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ctrl_core::status::{DeploymentStatus, RegionReadiness};
use ctrl_core::workflows::{DEPLOY_SERVICE, NOTIFY_INSTANCES_HANDLER, WAKE_HANDLER, WakeInput};
use sqlx::MySqlPool;

/// Attempts to deliver one notification, and the pause before each retry.
const RETRY_DELAYS: [Duration; 3] = [
    Duration::from_millis(200),
    Duration::from_secs(1),
    Duration::from_secs(3),
];

/// Sends notifications, deduplicated per process.
#[derive(Debug, Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    ingress: String,
    http: reqwest::Client,
    dedup_ttl: Duration,
    /// Deployment → (announced state, when).
    announced: Mutex<HashMap<String, (String, Instant)>>,
    metrics: crate::metrics::SyncMetrics,
}

/// What a check did (for logs and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The deployment is not waiting in a pipeline phase.
    NotWaiting,
    /// Nothing changed since the last notification.
    Unchanged,
    /// A notification is on its way.
    Sent,
}

impl Notifier {
    /// Notifies through the ingress at `ingress_url`, counting outcomes.
    pub fn new(ingress_url: &str, metrics: crate::metrics::SyncMetrics) -> Self {
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5))
            .build()
            .expect("build the Restate HTTP client");
        Self {
            inner: Arc::new(Inner {
                ingress: ingress_url.trim_end_matches('/').to_owned(),
                http,
                dedup_ttl: Duration::from_secs(300),
                announced: Mutex::new(HashMap::new()),
                metrics,
            }),
        }
    }

    /// Checks the deployment (as read after the report) and notifies its
    /// waiting handler if what it waits on changed.
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
        if !self.claim(deployment_id, fingerprint(&regions)) {
            return Ok(Outcome::Unchanged);
        }
        let notifier = self.clone();
        let id = deployment_id.to_owned();
        tokio::spawn(async move { notifier.send(&id).await });
        Ok(Outcome::Sent)
    }

    /// Starts `Deploy/{id}/Wake` (one attempt, bounded by the client's
    /// timeouts; the edge asks again while it waits).
    pub async fn wake(&self, deployment_id: &str, idempotency_key: &str) -> anyhow::Result<()> {
        let url = format!(
            "{}/{DEPLOY_SERVICE}/{deployment_id}/{WAKE_HANDLER}/send",
            self.inner.ingress
        );
        let input = WakeInput {
            deployment_id: deployment_id.to_owned(),
        };
        let r = self
            .inner
            .http
            .post(&url)
            .header("idempotency-key", idempotency_key)
            .json(&input)
            .send()
            .await?;
        if !r.status().is_success() {
            anyhow::bail!(
                "Restate answered {}: {}",
                r.status(),
                r.text().await.unwrap_or_default()
            );
        }
        Ok(())
    }

    /// Delivers one notification, retrying with backoff; forgets the
    /// announced state if it never arrives (the next report tries again).
    async fn send(&self, deployment_id: &str) {
        let url = format!(
            "{}/{DEPLOY_SERVICE}/{deployment_id}/{NOTIFY_INSTANCES_HANDLER}/send",
            self.inner.ingress
        );
        let mut last = String::new();
        for delay in RETRY_DELAYS {
            match self.inner.http.post(&url).send().await {
                Ok(r) if r.status().is_success() => {
                    tracing::debug!(%deployment_id, "instances changed: handler notified");
                    self.inner.metrics.notified(true);
                    return;
                }
                Ok(r) => {
                    last = format!(
                        "Restate answered {}: {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    )
                }
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(delay).await;
        }
        self.forget(deployment_id);
        self.inner.metrics.notified(false);
        tracing::warn!(%deployment_id, error = %last, "notification not delivered; the handler's own re-check covers it");
    }

    /// Records `state` as announced; false if it already was within the TTL.
    fn claim(&self, deployment_id: &str, state: String) -> bool {
        let mut announced = self
            .inner
            .announced
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        announced.retain(|_, (_, at)| now.duration_since(*at) < self.inner.dedup_ttl);
        if announced
            .get(deployment_id)
            .is_some_and(|(known, _)| *known == state)
        {
            return false;
        }
        announced.insert(deployment_id.to_owned(), (state, now));
        true
    }

    fn forget(&self, deployment_id: &str) {
        self.inner
            .announced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(deployment_id);
    }
}

/// What a waiting handler would see, as a comparable string.
fn fingerprint(regions: &[RegionReadiness]) -> String {
    regions
        .iter()
        .map(|r| {
            format!(
                "{}|{}|{}|{}|{}",
                r.region,
                r.min_replicas,
                r.running,
                r.failed_attempts,
                r.problem.as_deref().unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}
