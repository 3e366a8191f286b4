//! The ClusterService RPCs over [`ClusterSync`], and their router.

// Handlers answer with connectrpc-axum's error type (the wire error); it is
// large, and boxing it on every path would only move the allocation.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use connectrpc_axum::tonic::BoxedStream;
use connectrpc_axum::{ConnectError, ConnectRequest, ConnectResponse, StreamBody};
use ctrl_core::id::{IdKind, generate};
use ctrl_core::status::DesiredState;
use ctrl_db::cluster::Cluster;
use ctrl_db::types::Backend;
use ctrl_proto::ctrl::v1 as pb;
use sqlx::MySqlPool;
use tokio::sync::{broadcast, mpsc};

use crate::agents::{Agent, AgentKind};
use crate::edge::{EdgeFeed, EdgeSettings};
use crate::feed::{FeedSettings, Feeds};
use crate::logs::LogSettings;
use crate::notify::Notifier;

/// Tunables of the service.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How often agents should send heartbeats.
    pub heartbeat_interval: Duration,
    /// Rows per query for catch-up and snapshots (also the snapshot's
    /// in-flight bound: memory stays at about one page per stream).
    pub page_size: u32,
    /// A watch that sent nothing for this long sends a keepalive.
    pub keepalive: Duration,
    /// A watch cursor more than this many versions behind is told to take a
    /// snapshot instead of replaying the whole history (0 = always replay).
    pub resync_after_versions: u64,
    /// The per-region change feeds.
    pub feed: FeedSettings,
    /// The edges' routing-table feed.
    pub edge: EdgeSettings,
    /// The log relay's agent side.
    pub logs: LogSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(30),
            page_size: 500,
            keepalive: Duration::from_secs(15),
            resync_after_versions: 100_000,
            feed: FeedSettings::default(),
            edge: EdgeSettings::default(),
            logs: LogSettings::default(),
        }
    }
}

/// Shared, cheaply cloned state of the service.
#[derive(Debug, Clone)]
pub struct ClusterSync {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: MySqlPool,
    metrics: crate::metrics::SyncMetrics,
    feeds: Arc<Feeds>,
    edge_feed: Arc<EdgeFeed>,
    notifier: Notifier,
    settings: Settings,
    shutdown: tokio::sync::watch::Sender<bool>,
}

impl ClusterSync {
    /// The service over a database (which also holds the agents'
    /// credentials, see [`crate::agents`]) and Restate's ingress (to wake
    /// Deploy workflows).
    pub fn new(db: MySqlPool, ingress_url: &str, settings: Settings) -> Self {
        let (shutdown, _) = tokio::sync::watch::channel(false);
        let metrics = crate::metrics::SyncMetrics::default();
        Self {
            inner: Arc::new(Inner {
                feeds: Feeds::new(db.clone(), settings.feed.clone(), metrics.clone()),
                edge_feed: EdgeFeed::new(db.clone(), settings.edge.clone()),
                notifier: Notifier::new(ingress_url, metrics.clone()),
                metrics,
                db,
                settings,
                shutdown,
            }),
        }
    }

    /// Ends every open stream (server drain); agents reconnect elsewhere.
    pub fn begin_shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }

    /// The change feeds (for metrics and tests).
    pub fn feeds(&self) -> &Arc<Feeds> {
        &self.inner.feeds
    }

    /// The service's metrics (register them where they are served).
    pub fn metrics(&self) -> &crate::metrics::SyncMetrics {
        &self.inner.metrics
    }

    pub(crate) fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    pub(crate) fn db(&self) -> &MySqlPool {
        &self.inner.db
    }

    pub(crate) fn edge_feed(&self) -> &Arc<EdgeFeed> {
        &self.inner.edge_feed
    }

    pub(crate) fn notifier(&self) -> &Notifier {
        &self.inner.notifier
    }

    pub(crate) fn shutdown_signal(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.inner.shutdown.subscribe();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }

    /// The caller's cluster: the request's key must be the credential's;
    /// `not_found` until it sent a heartbeat.
    pub(crate) async fn cluster(
        &self,
        agent: &Agent,
        key: Option<&pb::ClusterKey>,
    ) -> Result<Cluster, ConnectError> {
        let key = cluster_key(key)?;
        agent.check_cluster(&key.platform, &key.region, &key.cell_id)?;
        ctrl_db::cluster::find_cluster(self.db(), &key.platform, &key.region, &key.cell_id)
            .await
            .map_err(|e| match e {
                ctrl_db::Error::NotFound(_) => ConnectError::new_not_found(format!(
                    "cluster {}/{}/{} is not registered: send a Heartbeat first",
                    key.platform, key.region, key.cell_id
                )),
                other => db_error(other),
            })
    }
}

/// The krane agent that made the request (its credential authenticated):
/// taking it as a handler argument is what protects a ClusterService RPC.
#[derive(Debug, Clone)]
pub struct KraneAgent(pub Agent);

impl FromRequestParts<ClusterSync> for KraneAgent {
    type Rejection = ConnectError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ClusterSync,
    ) -> Result<Self, ConnectError> {
        crate::agents::authenticate(state.db(), &parts.headers, AgentKind::Krane)
            .await
            .map(Self)
    }
}

/// Database trouble is the agent's cue to retry: `unavailable`, details in
/// the log only.
pub(crate) fn db_error(e: ctrl_db::Error) -> ConnectError {
    match e {
        ctrl_db::Error::NotFound(what) => ConnectError::new_not_found(format!("{what} not found")),
        other => {
            tracing::warn!(error = %other, "database call failed");
            ConnectError::new_unavailable("the control plane database is not reachable; retry")
        }
    }
}

pub(crate) use ctrl_runtime::now_ms;

/// Validates a cluster key: each part a DNS label (lowercase letters,
/// digits, hyphens; at most 63).
fn cluster_key(key: Option<&pb::ClusterKey>) -> Result<&pb::ClusterKey, ConnectError> {
    let key = key.ok_or_else(|| ConnectError::new_invalid_argument("cluster: is required"))?;
    for (field, value) in [
        ("cluster.platform", &key.platform),
        ("cluster.region", &key.region),
        ("cluster.cell_id", &key.cell_id),
    ] {
        if !ctrl_core::names::is_dns_label(value) {
            return Err(ConnectError::new_invalid_argument(format!(
                "{field}: {}",
                ctrl_core::names::not_a_dns_label(value)
            )));
        }
    }
    Ok(key)
}

/// A deployment id field: present and id-sized (it is quoted in errors).
fn deployment_id(field: &str, id: &str) -> Result<(), ConnectError> {
    if id.is_empty() || id.len() > 64 {
        return Err(ConnectError::new_invalid_argument(format!(
            "{field}: is required, at most 64 characters"
        )));
    }
    Ok(())
}

/// ClusterService.Heartbeat: registers or refreshes the agent's cluster.
pub async fn heartbeat(
    sync: &ClusterSync,
    agent: &Agent,
    req: pb::HeartbeatRequest,
) -> Result<pb::HeartbeatResponse, ConnectError> {
    let key = cluster_key(req.cluster.as_ref())?;
    agent.check_cluster(&key.platform, &key.region, &key.cell_id)?;
    let backend = match req.backend() {
        pb::AgentBackend::Kubernetes => Backend::Kubernetes,
        pb::AgentBackend::Docker => Backend::Docker,
        pb::AgentBackend::Unspecified => {
            return Err(ConnectError::new_invalid_argument(
                "backend: must be AGENT_BACKEND_DOCKER or AGENT_BACKEND_KUBERNETES",
            ));
        }
    };
    if req.agent_version.len() > 64 {
        return Err(ConnectError::new_invalid_argument(
            "agent_version: at most 64 characters",
        ));
    }
    let (cluster_id, region_id) = {
        let mut rng = rand::rng();
        (
            generate(IdKind::Cluster, &mut rng),
            generate(IdKind::Region, &mut rng),
        )
    };
    let hb = ctrl_db::cluster::Heartbeat {
        new_cluster_id: &cluster_id,
        new_region_id: &region_id,
        region: &key.region,
        platform: &key.platform,
        cell_id: &key.cell_id,
        backend,
        agent_version: &req.agent_version,
    };
    let mut tx = sync.db().begin().await.map_err(|e| db_error(e.into()))?;
    let cluster = match ctrl_db::cluster::heartbeat(&mut tx, &hb, now_ms()).await {
        Ok(c) => c,
        Err(ctrl_db::Error::AlreadyExists { .. }) => {
            return Err(ConnectError::new_already_exists(format!(
                "cell {:?} already serves another region",
                key.cell_id
            )));
        }
        Err(e) => return Err(db_error(e)),
    };
    tx.commit().await.map_err(|e| db_error(e.into()))?;
    crate::agents::touch(sync.db(), agent, now_ms()).await;
    Ok(pb::HeartbeatResponse {
        cluster_id: cluster.id,
        region_id: cluster.region_id,
        heartbeat_interval_ms: i64::try_from(sync.inner.settings.heartbeat_interval.as_millis())
            .unwrap_or(i64::MAX),
    })
}

/// ClusterService.GetDesiredDeploymentState: one deployment's desired state
/// in the caller's region; `not_found` means "remove it".
pub async fn get_desired_deployment_state(
    sync: &ClusterSync,
    agent: &Agent,
    req: pb::GetDesiredDeploymentStateRequest,
) -> Result<pb::GetDesiredDeploymentStateResponse, ConnectError> {
    let cluster = sync.cluster(agent, req.cluster.as_ref()).await?;
    deployment_id("deployment_id", &req.deployment_id)?;
    let row = ctrl_db::topology::find_desired(sync.db(), &cluster.region_id, &req.deployment_id)
        .await
        .map_err(|e| match e {
            ctrl_db::Error::NotFound(_) => ConnectError::new_not_found(format!(
                "deployment {} has no desired state in region {}",
                req.deployment_id, cluster.region_name
            )),
            other => db_error(other),
        })?;
    let state = crate::convert::deployment_state(row, 0).map_err(|e| {
        tracing::warn!(error = %e, "desired state not sendable");
        ConnectError::new_failed_precondition(e.to_string())
    })?;
    Ok(pb::GetDesiredDeploymentStateResponse { state: Some(state) })
}

/// ClusterService.ReportDeploymentStatus: replaces the region's instances of
/// a deployment (or removes them), then marks a stopped deployment `stopped`
/// once nothing runs, or wakes a waiting pipeline once enough regions run it.
/// Only deployments placed in the caller's region can be reported running.
pub async fn report_deployment_status(
    sync: &ClusterSync,
    agent: &Agent,
    req: pb::ReportDeploymentStatusRequest,
) -> Result<pb::ReportDeploymentStatusResponse, ConnectError> {
    use pb::report_deployment_status_request::Change;
    let cluster = sync.cluster(agent, req.cluster.as_ref()).await?;
    let now = now_ms();
    let deployment_id = match req.change {
        Some(Change::Update(update)) => {
            deployment_id("update.deployment_id", &update.deployment_id)?;
            let deployment = ctrl_db::deployment::get(sync.db(), &update.deployment_id)
                .await
                .map_err(db_error)?;
            if !ctrl_db::topology::is_placed(sync.db(), &deployment.id, &cluster.region_id)
                .await
                .map_err(db_error)?
            {
                return Err(ConnectError::new_permission_denied(format!(
                    "deployment {} is not placed in region {}: its instances cannot be reported from here",
                    deployment.id, cluster.region_name
                )));
            }
            let reported: Vec<ctrl_db::instance::ReportedInstance> = update
                .instances
                .iter()
                .map(|i| instance(i, &mut rand::rng()))
                .collect::<Result<_, _>>()?;
            let mut tx = sync.db().begin().await.map_err(|e| db_error(e.into()))?;
            ctrl_db::instance::replace_for_deployment(
                &mut tx,
                &deployment.workspace_id,
                &deployment.id,
                &cluster.region_id,
                &reported,
                now,
            )
            .await
            .map_err(db_error)?;
            let problem = update.problem.trim();
            ctrl_db::topology::record_problem(
                &mut *tx,
                &deployment.id,
                &cluster.region_id,
                update.desired_version,
                (!problem.is_empty()).then_some(problem),
                update.failed_attempts,
                now,
            )
            .await
            .map_err(db_error)?;
            tx.commit().await.map_err(|e| db_error(e.into()))?;
            deployment.id
        }
        Some(Change::Removed(removed)) => {
            deployment_id("removed.deployment_id", &removed.deployment_id)?;
            ctrl_db::instance::delete_for_deployment(
                sync.db(),
                &removed.deployment_id,
                &cluster.region_id,
                now,
            )
            .await
            .map_err(db_error)?;
            removed.deployment_id
        }
        None => return Err(ConnectError::new_invalid_argument("change: is required")),
    };
    after_report(sync, &deployment_id, now).await;
    Ok(pb::ReportDeploymentStatusResponse {})
}

/// What follows a report; failures are logged, never the agent's problem.
async fn after_report(sync: &ClusterSync, deployment_id: &str, now: i64) {
    match ctrl_db::deployment::get(sync.db(), deployment_id).await {
        Ok(d) if d.desired_state == DesiredState::Stopped => {
            match ctrl_db::deployment::mark_stopped_if_drained(sync.db(), deployment_id, now).await
            {
                Ok(true) => {
                    tracing::info!(deployment_id = %deployment_id, "no instance left: stopped")
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(deployment_id = %deployment_id, error = %e, "could not mark stopped")
                }
            }
        }
        Ok(d) => {
            if let Err(e) = sync.inner.notifier.after_report(sync.db(), &d).await {
                tracing::warn!(deployment_id = %deployment_id, error = %e, "readiness notification failed");
            }
        }
        Err(ctrl_db::Error::NotFound(_)) => {}
        Err(e) => {
            tracing::warn!(deployment_id = %deployment_id, error = %e, "could not read deployment")
        }
    }
}

fn instance(
    i: &pb::Instance,
    rng: &mut impl rand::Rng,
) -> Result<ctrl_db::instance::ReportedInstance, ConnectError> {
    if i.name.is_empty() || i.name.len() > 253 {
        return Err(ConnectError::new_invalid_argument(format!(
            "instances.name: {:?} must be 1-253 characters",
            ctrl_core::names::clip(&i.name, 64)
        )));
    }
    let clamp = |v: i64| i32::try_from(v.max(0)).unwrap_or(i32::MAX);
    Ok(ctrl_db::instance::ReportedInstance {
        new_id: generate(IdKind::Instance, rng),
        name: i.name.clone(),
        address: i.address.clone(),
        cpu_millicores: clamp(i.cpu_millicores),
        memory_mib: clamp(i.memory_mib),
        status: crate::convert::instance_status(i.status()),
    })
}

/// ClusterService.ReportInstanceEvents: exits and crash loops onto the
/// instance rows (stale events are ignored by the query's guard).
pub async fn report_instance_events(
    sync: &ClusterSync,
    agent: &Agent,
    req: pb::ReportInstanceEventsRequest,
) -> Result<pb::ReportInstanceEventsResponse, ConnectError> {
    use pb::instance_event::State;
    let cluster = sync.cluster(agent, req.cluster.as_ref()).await?;
    for event in &req.events {
        let recorded = match &event.state {
            Some(State::Terminated(t)) if t.exit_code != 0 || t.oom_killed => {
                ctrl_db::instance::InstanceEvent {
                    name: &event.instance_name,
                    restart_count: event.restart_count,
                    exit_code: Some(t.exit_code),
                    reason: Some(t.reason.as_str()).filter(|r| !r.is_empty()),
                    oom_killed: t.oom_killed,
                    at: if t.finished_at > 0 {
                        t.finished_at
                    } else {
                        event.time
                    },
                    waiting: false,
                }
            }
            Some(State::Waiting(w)) => ctrl_db::instance::InstanceEvent {
                name: &event.instance_name,
                restart_count: event.restart_count,
                exit_code: None,
                reason: Some(w.reason.as_str()).filter(|r| !r.is_empty()),
                oom_killed: false,
                at: event.time,
                waiting: true,
            },
            _ => continue,
        };
        ctrl_db::instance::record_event(sync.db(), &cluster.region_id, &recorded)
            .await
            .map_err(db_error)?;
    }
    Ok(pb::ReportInstanceEventsResponse {})
}

pub(crate) type Stream<T> = StreamBody<BoxedStream<T>>;

/// Turns a channel into a response stream.
pub(crate) fn stream<T: Send + 'static>(
    mut rx: mpsc::Receiver<Result<T, ConnectError>>,
) -> Stream<T> {
    let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    StreamBody::new(Box::pin(stream) as BoxedStream<T>)
}

/// ClusterService.SyncDesiredState: every deployment that should run in the
/// caller's region, page by page (at most one page in memory), then the
/// version to resume Watch from — read before the first page, so a change
/// made while paging is sent again by Watch rather than missed.
pub async fn sync_desired_state(
    sync: &ClusterSync,
    agent: &Agent,
    req: pb::SyncDesiredStateRequest,
) -> Result<Stream<pb::SyncDesiredStateResponse>, ConnectError> {
    use pb::sync_desired_state_response::Event;
    let cluster = sync.cluster(agent, req.cluster.as_ref()).await?;
    let version = ctrl_db::topology::current_version(sync.db(), &cluster.region_id)
        .await
        .map_err(db_error)?;
    let page_size = sync.inner.settings.page_size;
    let (tx, rx) = mpsc::channel(page_size as usize);
    let sync = sync.clone();
    tokio::spawn(async move {
        let started = std::time::Instant::now();
        let mut after_pk = 0;
        let mut sent = 0u64;
        loop {
            let page = match ctrl_db::topology::snapshot_page(
                sync.db(),
                &cluster.region_id,
                after_pk,
                page_size,
            )
            .await
            {
                Ok(p) => p,
                Err(e) => {
                    let _ = tx.send(Err(db_error(e))).await;
                    return;
                }
            };
            let full = page.len() == page_size as usize;
            for row in page {
                after_pk = row.pk;
                if let Some(state) = crate::convert::change(row) {
                    sent += 1;
                    let msg = pb::SyncDesiredStateResponse {
                        event: Some(Event::Deployment(state)),
                    };
                    if tx.send(Ok(msg)).await.is_err() {
                        return;
                    }
                }
            }
            if !full {
                break;
            }
        }
        let done = pb::SyncDesiredStateResponse {
            event: Some(Event::Complete(pb::SyncComplete {
                version,
                deployments: sent,
            })),
        };
        if tx.send(Ok(done)).await.is_ok() {
            sync.metrics().snapshot_took("krane", started.elapsed());
        }
    });
    Ok(stream(rx))
}

/// ClusterService.Watch: catch up from the database, then follow the
/// region's shared feed (see [`crate::feed`] for why nothing is lost), with
/// keepalives; a lagging watcher catches up again. The stream ends at the
/// first keepalive after its credential is revoked.
pub async fn watch(
    sync: &ClusterSync,
    agent: &Agent,
    req: pb::WatchRequest,
) -> Result<Stream<pb::WatchResponse>, ConnectError> {
    let cluster = sync.cluster(agent, req.cluster.as_ref()).await?;
    crate::agents::touch(sync.db(), agent, now_ms()).await;
    let current = ctrl_db::topology::current_version(sync.db(), &cluster.region_id)
        .await
        .map_err(db_error)?;
    let (tx, rx) = mpsc::channel(64);
    let resync = |reason: String| {
        Ok(pb::WatchResponse {
            version: current,
            event: Some(pb::watch_response::Event::ResyncRequired(
                pb::ResyncRequired { reason },
            )),
        })
    };
    let cursor = req.version_last_seen;
    let limit = sync.inner.settings.resync_after_versions;
    if cursor > current {
        // The agent's cursor comes from another database (a restore, or a
        // different installation): its state cannot be trusted.
        let _ = tx.try_send(resync(format!(
            "cursor {cursor} is ahead of the region's version {current}"
        )));
        return Ok(stream(rx));
    }
    if limit > 0 && current - cursor > limit {
        let _ = tx.try_send(resync(format!(
            "cursor {cursor} is {} versions behind (more than {limit}); a snapshot is cheaper",
            current - cursor
        )));
        return Ok(stream(rx));
    }
    let sync = sync.clone();
    let agent = agent.clone();
    tokio::spawn(async move {
        let _open = sync.metrics().stream_opened("krane");
        let region = cluster.region_id.clone();
        if let Err(e) = follow(&sync, &agent, &region, cursor, &tx).await {
            let _ = tx.send(Err(e)).await;
        }
    });
    Ok(stream(rx))
}

/// Why a watch loop ended without an error.
enum Stop {
    /// The agent left or the server drains.
    Done,
    /// The feed lost messages for this watcher: catch up again.
    Lagged,
    /// The caller's credential was revoked.
    Revoked,
}

async fn follow(
    sync: &ClusterSync,
    agent: &Agent,
    region: &str,
    mut cursor: u64,
    tx: &mpsc::Sender<Result<pb::WatchResponse, ConnectError>>,
) -> Result<(), ConnectError> {
    let shutdown = sync.shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let mut sub = sync.inner.feeds.subscribe(region).await.map_err(db_error)?;
        // Catch up from the database.
        let page_size = sync.inner.settings.page_size;
        loop {
            let rows = ctrl_db::topology::list_changes(sync.db(), region, cursor, page_size)
                .await
                .map_err(db_error)?;
            let full = rows.len() == page_size as usize;
            for row in rows {
                let version = row.version;
                if let Some(state) = crate::convert::change(row)
                    && send(tx, version, Some(state)).await.is_err()
                {
                    return Ok(());
                }
                cursor = version;
            }
            if !full {
                break;
            }
        }
        // Follow the feed.
        let stop = live(sync, agent, &mut sub, &mut cursor, tx, &mut shutdown).await;
        match stop {
            Stop::Done => return Ok(()),
            Stop::Revoked => {
                return Err(ConnectError::new_unauthenticated(format!(
                    "agent credential {} was revoked",
                    agent.credential_id
                )));
            }
            Stop::Lagged => tracing::debug!(%region, cursor, "watcher lagged; catching up"),
        }
    }
}

async fn live(
    sync: &ClusterSync,
    agent: &Agent,
    sub: &mut crate::feed::Subscription,
    cursor: &mut u64,
    tx: &mpsc::Sender<Result<pb::WatchResponse, ConnectError>>,
    shutdown: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) -> Stop {
    let keepalive = sync.inner.settings.keepalive;
    loop {
        tokio::select! {
            () = shutdown.as_mut() => return Stop::Done,
            () = tx.closed() => return Stop::Done,
            change = sub.changes.recv() => match change {
                Ok(change) if change.version > *cursor => {
                    if send(tx, change.version, Some((*change.state).clone())).await.is_err() {
                        return Stop::Done;
                    }
                    *cursor = change.version;
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => return Stop::Lagged,
                // The feed stopped (it never does while watched); resubscribe.
                Err(broadcast::error::RecvError::Closed) => return Stop::Lagged,
            },
            () = tokio::time::sleep(keepalive) => {
                if !crate::agents::still_valid(sync.db(), agent).await {
                    return Stop::Revoked;
                }
                // Nothing pending means every change up to the head was
                // already handled (the head is raised after publishing), so
                // the cursor may skip versions no row carries any more.
                let head = sub.head();
                if sub.changes.is_empty() && head > *cursor {
                    *cursor = head;
                }
                if send(tx, *cursor, None).await.is_err() {
                    return Stop::Done;
                }
            }
        }
    }
}

async fn send(
    tx: &mpsc::Sender<Result<pb::WatchResponse, ConnectError>>,
    version: u64,
    state: Option<pb::DeploymentState>,
) -> Result<(), ()> {
    let event = state.map(pb::watch_response::Event::Deployment);
    tx.send(Ok(pb::WatchResponse { version, event }))
        .await
        .map_err(|_| ())
}

macro_rules! unary {
    ($handler:ident => $service:path, $req:ty, $resp:ty) => {
        async fn $handler(
            State(sync): State<ClusterSync>,
            KraneAgent(agent): KraneAgent,
            ConnectRequest(req): ConnectRequest<$req>,
        ) -> Result<ConnectResponse<$resp>, ConnectError> {
            $service(&sync, &agent, req).await.map(ConnectResponse::new)
        }
    };
}

unary!(heartbeat_rpc => heartbeat, pb::HeartbeatRequest, pb::HeartbeatResponse);
unary!(get_desired_rpc => get_desired_deployment_state, pb::GetDesiredDeploymentStateRequest, pb::GetDesiredDeploymentStateResponse);
unary!(report_status_rpc => report_deployment_status, pb::ReportDeploymentStatusRequest, pb::ReportDeploymentStatusResponse);
unary!(report_events_rpc => report_instance_events, pb::ReportInstanceEventsRequest, pb::ReportInstanceEventsResponse);
unary!(watch_rpc => watch, pb::WatchRequest, Stream<pb::WatchResponse>);
unary!(sync_rpc => sync_desired_state, pb::SyncDesiredStateRequest, Stream<pb::SyncDesiredStateResponse>);
unary!(watch_logs_rpc => crate::logs::watch_log_requests, pb::WatchLogRequestsRequest, Stream<pb::WatchLogRequestsResponse>);
unary!(push_logs_rpc => crate::logs::push_logs, pb::PushLogsRequest, pb::PushLogsResponse);

/// The gRPC side of the service (tonic).
pub type GrpcService = pb::cluster_service_server::ClusterServiceServer<pb::ClusterTonicService>;

/// The service's Connect router and gRPC service, for a
/// `connectrpc_axum::MakeServiceBuilder` (the standalone server's, or
/// ctrl-api's when mounted there).
pub fn parts(sync: ClusterSync) -> (axum::Router, GrpcService) {
    let (router, grpc) = pb::cluster_service_connect::ClusterServiceTonicCompatibleBuilder::new()
        .heartbeat(heartbeat_rpc)
        .watch(watch_rpc)
        .sync_desired_state(sync_rpc)
        .get_desired_deployment_state(get_desired_rpc)
        .report_deployment_status(report_status_rpc)
        .report_instance_events(report_events_rpc)
        .watch_log_requests(watch_logs_rpc)
        .push_logs(push_logs_rpc)
        .with_state(sync)
        .build();
    (router, grpc.max_decoding_message_size(4 << 20))
}
