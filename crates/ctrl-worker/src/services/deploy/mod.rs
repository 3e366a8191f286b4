//! `Deploy` (virtual object keyed by deployment id): the deployment
//! pipeline (`Deploy`), waking a stopped deployment (`Wake`), deleting it
//! (`Delete`), `Rollback`, `Promote`, and the shared
//! `NotifyInstancesChanged` through which
//! cluster-sync wakes a handler that waits for instances. Names and inputs
//! are in `ctrl_core::workflows`.

mod delete;
mod live;
mod pipeline;
mod wake;

use std::sync::Arc;
use std::time::Duration;

use ctrl_core::status::DesiredState;
use ctrl_core::workflows::{
    DeleteDeploymentInput, DeployInput, LiveSwap, PromoteInput, RollbackInput,
    ScheduleDesiredStateChange, WakeInput,
};
use restate_sdk::prelude::*;
use sqlx::MySqlPool;
use tracing::Instrument;

pub use pipeline::SUPERSEDED;

use crate::config::DeployConfig;
use crate::services::deployment::DeploymentObjectClient;

/// State key of the awakeable a handler waits on for instances.
const READINESS_AWAKEABLE: &str = "instances_ready_awakeable";

/// What the Deploy object takes from the configuration.
#[derive(Debug, Clone)]
pub struct DeploySettings {
    /// How long a replaced live deployment keeps running (instant rollback).
    pub retire_previous_live: Duration,
    /// How long older previews of a branch keep running after a newer one.
    pub retire_previous_preview: Duration,
    /// How long to wait for instances before failing.
    pub readiness_timeout: Duration,
    /// Failed attempts in a row after which a region is given up.
    pub max_failed_attempts: u32,
    /// How often a wait re-checks the database without a notification.
    pub readiness_recheck: Duration,
    /// How long a deletion waits for the agents to remove the instances.
    pub delete_drain: Duration,
    /// Generated hostnames end in this domain.
    pub apex_domain: String,
}

impl From<&DeployConfig> for DeploySettings {
    fn from(c: &DeployConfig) -> Self {
        Self {
            retire_previous_live: Duration::from_secs(c.retire_previous_live_seconds),
            retire_previous_preview: Duration::from_secs(c.retire_previous_preview_seconds),
            readiness_timeout: Duration::from_secs(c.readiness_timeout_seconds),
            max_failed_attempts: c.max_failed_attempts,
            readiness_recheck: Duration::from_secs(c.readiness_recheck_seconds),
            delete_drain: Duration::from_secs(c.delete_drain_seconds),
            apex_domain: c.apex_domain.clone(),
        }
    }
}

/// The Deploy object.
#[derive(Debug, Clone)]
pub struct DeployObject {
    db: MySqlPool,
    settings: Arc<DeploySettings>,
    builds: Arc<crate::builds::Builds>,
    metrics: crate::metrics::WorkerMetrics,
}

impl DeployObject {
    /// The object over a database pool, with what builds need.
    pub fn new(
        db: MySqlPool,
        settings: DeploySettings,
        builds: Arc<crate::builds::Builds>,
    ) -> Self {
        Self {
            db,
            settings: Arc::new(settings),
            builds,
            metrics: crate::metrics::WorkerMetrics::default(),
        }
    }

    /// Records pipeline runs in `metrics` (the worker's served registry).
    #[must_use]
    pub fn with_metrics(mut self, metrics: crate::metrics::WorkerMetrics) -> Self {
        self.metrics = metrics;
        self
    }
}

#[restate_sdk::object(name = "Deploy")]
impl DeployObject {
    /// Runs the deployment's pipeline (see `pipeline`).
    #[handler(name = "Deploy")]
    async fn deploy(
        &self,
        ctx: ObjectContext<'_>,
        Json(req): Json<DeployInput>,
    ) -> HandlerResult<()> {
        // One span per attempt, so a trace shows which deployment it was.
        let span = tracing::info_span!("deploy", deployment_id = %ctx.key());
        pipeline::run(
            &self.db,
            &self.settings,
            &self.builds,
            &self.metrics,
            &ctx,
            req,
        )
        .instrument(span)
        .await
    }

    /// Starts a stopped deployment's instances again and waits until they
    /// are ready, like a deploy (see `wake`).
    #[handler(name = "Wake")]
    async fn wake(&self, ctx: ObjectContext<'_>, Json(req): Json<WakeInput>) -> HandlerResult<()> {
        let span = tracing::info_span!("wake", deployment_id = %ctx.key());
        wake::run(&self.db, &self.settings, &ctx, req)
            .instrument(span)
            .await
    }

    /// Deletes the deployment (see `delete`).
    #[handler(name = "Delete")]
    async fn delete(
        &self,
        ctx: ObjectContext<'_>,
        Json(req): Json<DeleteDeploymentInput>,
    ) -> HandlerResult<()> {
        delete::run(&self.db, &self.settings, &ctx, req).await
    }

    /// Moves the app's live traffic back to an earlier deployment and
    /// freezes auto-promotion. Keyed by the live (source) deployment.
    #[handler(name = "Rollback")]
    async fn rollback(
        &self,
        ctx: ObjectContext<'_>,
        Json(req): Json<RollbackInput>,
    ) -> HandlerResult<Json<LiveSwap>> {
        live::rollback(&self.db, &ctx, req).await
    }

    /// Makes a deployment live and re-enables auto-promotion. Keyed by the
    /// target.
    #[handler(name = "Promote")]
    async fn promote(
        &self,
        ctx: ObjectContext<'_>,
        Json(req): Json<PromoteInput>,
    ) -> HandlerResult<Json<LiveSwap>> {
        live::promote(&self.db, &ctx, req, self.settings.retire_previous_live).await
    }

    /// Wakes a handler waiting for instances, if one waits. It re-checks the
    /// database when woken, so an early or repeated call is harmless.
    #[handler(name = "NotifyInstancesChanged")]
    async fn notify_instances_changed(&self, ctx: SharedObjectContext<'_>) -> HandlerResult<()> {
        if let Some(id) = ctx.get::<String>(READINESS_AWAKEABLE).await? {
            ctx.resolve_awakeable(&id, ());
        }
        Ok(())
    }
}

/// Schedules a deployment to stop after `after` (fire-and-forget, durable).
fn retire(ctx: &ObjectContext<'_>, deployment_id: &str, after: Duration, overwrite: bool) {
    let change = ScheduleDesiredStateChange {
        delay_millis: u64::try_from(after.as_millis()).unwrap_or(u64::MAX),
        state: DesiredState::Stopped.as_str().into(),
        overwrite,
    };
    ctx.object_client::<DeploymentObjectClient<'_>>(deployment_id)
        .schedule(Json(change))
        .send();
}
