//! The sweep: no deployment row stays on its way with nothing behind it.
//!
//! Every `sweep_interval`, deployments still progressing (pending …
//! finalizing) that have not changed for `sweep_grace` are looked up in
//! Restate (`sys_invocation`, admin `/query`): if no unfinished `Deploy`
//! invocation exists for one — it was never started, or its workflow ended
//! without finishing it — it is marked failed, naming why, and its
//! instances are stopped. If Restate cannot be asked, nothing is touched.
//! Every worker replica may sweep: the updates are conditional.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ctrl_core::status::DesiredState;
use ctrl_core::workflows::DEPLOY_SERVICE;
use ctrl_db::deployment;
use sqlx::MySqlPool;

use crate::errors::now_ms;

/// Why a swept deployment failed (shown on the deployment and its step).
pub const ORPHANED: &str = "Its workflow ended without finishing it (marked failed by the sweep).";

/// The sweep's settings and clients.
#[derive(Debug, Clone)]
pub struct Sweep {
    db: MySqlPool,
    admin_url: String,
    http: reqwest::Client,
    grace: Duration,
}

impl Sweep {
    /// A sweep over `db`, asking Restate's admin API at `admin_url` (with
    /// `api_key`, if any).
    pub fn new(
        db: MySqlPool,
        admin_url: &str,
        api_key: Option<&str>,
        grace: Duration,
    ) -> Result<Self> {
        let http = reqwest::Client::builder()
            .default_headers(
                ctrl_runtime::sections::bearer_headers(api_key).context("restate.api_key")?,
            )
            .no_proxy()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .build()
            .context("build the Restate admin client")?;
        Ok(Self {
            db,
            admin_url: admin_url.trim_end_matches('/').to_owned(),
            http,
            grace,
        })
    }

    /// Sweeps every `interval` until `stop` resolves.
    pub async fn run_every(&self, interval: Duration, stop: impl Future<Output = ()>) {
        let mut stop = std::pin::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(interval) => {}
            }
            match self.once().await {
                Ok(0) => {}
                Ok(n) => tracing::warn!(
                    failed = n,
                    "sweep: deployments without a workflow marked failed"
                ),
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "sweep skipped"),
            }
        }
    }

    /// One pass; returns how many deployments it failed.
    pub async fn once(&self) -> Result<usize> {
        let stale =
            deployment::list_progressing_since(&self.db, now_ms() - grace_ms(self.grace), 200)
                .await?;
        if stale.is_empty() {
            return Ok(0);
        }
        let ids: Vec<&str> = stale.iter().map(|(id, _)| id.as_str()).collect();
        let alive = self.unfinished_invocations(&ids).await?;
        let mut failed = 0;
        for (id, status) in &stale {
            if alive.contains(id) {
                continue;
            }
            if self.fail(id).await? {
                tracing::warn!(deployment_id = %id, %status, "no workflow behind a deployment on its way: failed");
                failed += 1;
            }
        }
        Ok(failed)
    }

    /// Keys of `Deploy` objects among `ids` with an unfinished invocation.
    async fn unfinished_invocations(&self, ids: &[&str]) -> Result<HashSet<String>> {
        let quoted: Vec<String> = ids
            .iter()
            .map(|id| format!("'{}'", id.replace('\'', "''")))
            .collect();
        let sql = format!(
            "SELECT target_service_key FROM sys_invocation WHERE target_service_name = '{DEPLOY_SERVICE}' \
             AND status <> 'completed' AND target_service_key IN ({})",
            quoted.join(", ")
        );
        let response = self
            .http
            .post(format!("{}/query", self.admin_url))
            .header("accept", "application/json")
            .json(&serde_json::json!({ "query": sql }))
            .send()
            .await
            .context("ask Restate for invocations")?;
        let status = response.status();
        if !status.is_success() {
            bail!(
                "Restate's admin API answered {status}: {}",
                response.text().await.unwrap_or_default()
            );
        }
        let body: serde_json::Value = response.json().await.context("read Restate's answer")?;
        let rows = body["rows"]
            .as_array()
            .context("Restate's answer has no rows")?;
        Ok(rows
            .iter()
            .filter_map(|r| r["target_service_key"].as_str().map(str::to_owned))
            .collect())
    }

    /// Fails one deployment and stops its instances; false if it finished meanwhile.
    async fn fail(&self, id: &str) -> Result<bool> {
        let now = now_ms();
        let mut tx = self.db.begin().await?;
        let failed = deployment::set_status_if_active(
            &mut *tx,
            id,
            ctrl_core::status::DeploymentStatus::Failed,
            Some(ORPHANED),
            now,
        )
        .await?;
        if failed {
            deployment::end_running_steps(&mut *tx, id, ORPHANED, now).await?;
            deployment::set_desired_everywhere(&mut tx, id, DesiredState::Stopped, now).await?;
        }
        tx.commit().await?;
        Ok(failed)
    }
}

fn grace_ms(grace: Duration) -> i64 {
    i64::try_from(grace.as_millis()).unwrap_or(i64::MAX)
}
