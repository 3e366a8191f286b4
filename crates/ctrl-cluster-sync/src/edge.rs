//! `ctrl.v1.EdgeService`: the routing table for the regional edges
//! (frontline), pushed as a snapshot and then an ordered change stream.
//!
//! One feed per process polls ctrl-db's edge change log (`version > head`,
//! every `poll_interval`), reads the current state of every key a poll found
//! *once*, and broadcasts it to every watching edge; each watcher turns it
//! into its region's view (addresses of its own region's instances, peer
//! regions for the others). A watcher that is behind catches up from the
//! database first; the hand-over cannot lose a change for the same reasons
//! as the agents' feed ([`crate::feed`]): the feed's head is read before it
//! accepts subscribers, a watcher subscribes before its catch-up, and
//! ctrl-db's edge writers commit in version order.

// Handlers answer with connectrpc-axum's error type (the wire error), as in
// `service`.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use connectrpc_axum::{ConnectError, ConnectRequest, ConnectResponse};
use ctrl_core::status::DesiredState;
use ctrl_db::edge::{Certificate, Deployment, Instance, Kind};
use ctrl_proto::ctrl::v1 as pb;
use pb::watch_routes_response::Event;
use sqlx::MySqlPool;
use tokio::sync::{broadcast, mpsc};

use crate::agents::{Agent, AgentKind};
use crate::service::{ClusterSync, Stream, db_error, now_ms, stream};

/// How the edge feed polls and what it keeps.
#[derive(Debug, Clone)]
pub struct EdgeSettings {
    /// Pause between polls when nothing changed: the floor of the
    /// commit-to-edge latency (the edge's target is 100 ms at p99).
    pub poll_interval: Duration,
    /// Changes per query.
    pub page_size: u32,
    /// Batches kept for watchers that are momentarily slow.
    pub buffer: usize,
    /// Changes are kept at least this long (an edge that was away longer
    /// takes a snapshot when it comes back).
    pub keep_changes: Duration,
    /// Traffic counts are kept this long.
    pub keep_traffic: Duration,
    /// A stream that sent nothing for this long sends a keepalive.
    pub keepalive: Duration,
}

impl Default for EdgeSettings {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_millis(20),
            page_size: 1000,
            buffer: 1024,
            keep_changes: Duration::from_secs(3600),
            keep_traffic: Duration::from_secs(7 * 24 * 3600),
            keepalive: Duration::from_secs(15),
        }
    }
}

/// The current state of every key one batch of changes touched (`None`:
/// the entry is gone), read once and shared by every watcher.
#[derive(Debug, Default)]
pub struct Batch {
    /// The highest version in the batch.
    pub version: u64,
    hosts: BTreeMap<String, Option<String>>,
    deployments: BTreeMap<String, Option<(Deployment, Vec<Instance>)>>,
    certificates: BTreeMap<String, Option<Certificate>>,
}

/// Reads the state of the keys in `changes` (one consistent-enough read:
/// anything newer than the batch arrives again with its own change).
async fn resolve(db: &MySqlPool, changes: &[ctrl_db::edge::Change]) -> ctrl_db::Result<Batch> {
    let mut batch = Batch {
        version: changes.last().map_or(0, |c| c.version),
        ..Batch::default()
    };
    let keys = |kind: Kind| -> Vec<String> {
        changes
            .iter()
            .filter(|c| c.kind == kind)
            .map(|c| c.key.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    };
    let (host_keys, mut deployment_keys, cert_keys) = (
        keys(Kind::Host),
        keys(Kind::Deployment),
        keys(Kind::Certificate),
    );
    let hosts = ctrl_db::edge::hosts(db, &host_keys).await?;
    for h in &host_keys {
        let target = hosts
            .iter()
            .find(|r| &r.fqdn == h)
            .map(|r| r.deployment_id.clone());
        // A host is sent with the deployment it points at, so an edge never
        // holds a host whose deployment it does not know.
        if let Some(d) = &target
            && !deployment_keys.contains(d)
        {
            deployment_keys.push(d.clone());
        }
        batch.hosts.insert(h.clone(), target);
    }
    batch.deployments = deployment_views(db, &deployment_keys).await?;
    let certs = ctrl_db::edge::certificates(db, &cert_keys).await?;
    for c in cert_keys {
        let found = certs.iter().find(|x| x.hostname == c).cloned();
        batch.certificates.insert(c, found);
    }
    Ok(batch)
}

async fn deployment_views(
    db: &MySqlPool,
    ids: &[String],
) -> ctrl_db::Result<BTreeMap<String, Option<(Deployment, Vec<Instance>)>>> {
    let rows = ctrl_db::edge::deployments(db, ids).await?;
    let instances = ctrl_db::edge::instances(db, ids).await?;
    let mut out = BTreeMap::new();
    for id in ids {
        let view = rows.iter().find(|d| &d.id == id).map(|d| {
            let mine: Vec<Instance> = instances
                .iter()
                .filter(|i| &i.deployment_id == id)
                .cloned()
                .collect();
            (d.clone(), mine)
        });
        out.insert(id.clone(), view);
    }
    Ok(out)
}

/// The process's edge feed.
#[derive(Debug)]
pub struct EdgeFeed {
    db: MySqlPool,
    settings: EdgeSettings,
    running: Mutex<Option<Running>>,
}

#[derive(Debug, Clone)]
struct Running {
    tx: broadcast::Sender<Arc<Batch>>,
    head: Arc<AtomicU64>,
}

/// A watcher's view of the feed.
#[derive(Debug)]
struct Subscription {
    batches: broadcast::Receiver<Arc<Batch>>,
    head: Arc<AtomicU64>,
}

impl EdgeFeed {
    /// A feed over `db` (started by its first watcher).
    pub fn new(db: MySqlPool, settings: EdgeSettings) -> Arc<Self> {
        Arc::new(Self {
            db,
            settings,
            running: Mutex::new(None),
        })
    }

    /// The settings.
    pub fn settings(&self) -> &EdgeSettings {
        &self.settings
    }

    async fn subscribe(self: &Arc<Self>) -> ctrl_db::Result<Subscription> {
        if let Some(r) = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            return Ok(Subscription {
                batches: r.tx.subscribe(),
                head: r.head.clone(),
            });
        }
        // Read the starting head before anyone can subscribe (module docs).
        let head = ctrl_db::edge::current_version(&self.db).await?;
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let r = running.get_or_insert_with(|| {
            let (tx, _) = broadcast::channel(self.settings.buffer);
            let r = Running {
                tx,
                head: Arc::new(AtomicU64::new(head)),
            };
            tokio::spawn(self.clone().run(r.clone()));
            r
        });
        Ok(Subscription {
            batches: r.tx.subscribe(),
            head: r.head.clone(),
        })
    }

    /// Polls for as long as the process lives (one cheap indexed query per
    /// interval), and prunes old changes and traffic once a minute.
    async fn run(self: Arc<Self>, feed: Running) {
        tracing::debug!("edge feed started");
        let mut last_prune = tokio::time::Instant::now() - Duration::from_secs(3600);
        loop {
            match self.poll(&feed).await {
                Ok(n) if n == self.settings.page_size as usize => continue,
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "edge feed poll failed; retrying"),
            }
            if last_prune.elapsed() >= Duration::from_secs(60) {
                last_prune = tokio::time::Instant::now();
                self.prune().await;
            }
            tokio::time::sleep(self.settings.poll_interval).await;
        }
    }

    async fn poll(&self, feed: &Running) -> ctrl_db::Result<usize> {
        let head = feed.head.load(Ordering::Acquire);
        let changes = ctrl_db::edge::list_changes(&self.db, head, self.settings.page_size).await?;
        let n = changes.len();
        if n == 0 {
            return Ok(0);
        }
        let batch = resolve(&self.db, &changes).await?;
        let version = batch.version;
        let _ = feed.tx.send(Arc::new(batch));
        // Raised only after publishing (see the agents' feed).
        feed.head.store(version, Ordering::Release);
        Ok(n)
    }

    async fn prune(&self) {
        let now = now_ms();
        let keep = |d: Duration| now - i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        if let Err(e) =
            ctrl_db::edge::prune(&self.db, keep(self.settings.keep_changes), 10_000).await
        {
            tracing::warn!(error = %e, "could not prune edge changes");
        }
        if let Err(e) =
            ctrl_db::edge::prune_traffic(&self.db, keep(self.settings.keep_traffic)).await
        {
            tracing::warn!(error = %e, "could not prune traffic counts");
        }
    }
}

/// The calling edge's region, validated: it must be the credential's.
fn region(agent: &Agent, r: Option<&pb::EdgeRegion>) -> Result<(String, String), ConnectError> {
    let r = r.ok_or_else(|| ConnectError::new_invalid_argument("region: is required"))?;
    for (field, value) in [
        ("region.platform", &r.platform),
        ("region.region", &r.region),
    ] {
        if !ctrl_core::names::is_dns_label(value) {
            return Err(ConnectError::new_invalid_argument(format!(
                "{field}: {}",
                ctrl_core::names::not_a_dns_label(value)
            )));
        }
    }
    agent.check_region(&r.platform, &r.region)?;
    Ok((r.platform.clone(), r.region.clone()))
}

/// How the edge treats a deployment: route, wake on request, or refuse.
fn state_of(d: &Deployment) -> pb::EdgeDeploymentState {
    if d.desired_state == DesiredState::Running {
        pb::EdgeDeploymentState::Running
    } else if ctrl_core::gate::check_wake_on_request(&d.gate_facts()).is_ok() {
        pb::EdgeDeploymentState::Idle
    } else {
        pb::EdgeDeploymentState::Stopped
    }
}

/// A deployment as seen from `(platform, region)`.
fn view(d: &Deployment, instances: &[Instance], me: &(String, String)) -> pb::EdgeDeployment {
    let running = instances
        .iter()
        .filter(|i| i.status == ctrl_db::types::InstanceStatus::Running);
    let mut addresses = Vec::new();
    let mut peers = BTreeSet::new();
    for i in running {
        if i.platform == me.0 && i.region == me.1 {
            addresses.push(i.address.clone());
        } else {
            peers.insert(format!("{}/{}", i.platform, i.region));
        }
    }
    pb::EdgeDeployment {
        deployment_id: d.id.clone(),
        workspace_id: d.workspace_id.clone(),
        project_id: d.project_id.clone(),
        app_id: d.app_id.clone(),
        environment_id: d.environment_id.clone(),
        upstream_protocol: crate::convert::upstream_protocol(d.upstream_protocol) as i32,
        state: state_of(d) as i32,
        addresses,
        peer_regions: peers.into_iter().collect(),
    }
}

fn certificate(c: &Certificate) -> pb::EdgeCertificate {
    pb::EdgeCertificate {
        hostname: c.hostname.clone(),
        certificate_pem: c.certificate.clone(),
        sealed_private_key: c.encrypted_private_key.clone(),
        keyring: c.workspace_id.clone(),
        not_after: c.not_after,
    }
}

/// The messages of one batch for one region, ending with the commit marker
/// (a message without event at the batch's version).
fn messages(batch: &Batch, me: &(String, String)) -> Vec<pb::WatchRoutesResponse> {
    let v = batch.version;
    let msg = |event| pb::WatchRoutesResponse {
        version: v,
        event: Some(event),
    };
    let mut out = Vec::new();
    // Deployments first: a host is applied after the deployment it names.
    for (id, d) in &batch.deployments {
        out.push(match d {
            Some((d, instances)) => msg(Event::Deployment(view(d, instances, me))),
            None => msg(Event::DeploymentRemoved(id.clone())),
        });
    }
    for (h, target) in &batch.hosts {
        out.push(match target {
            Some(d) => msg(Event::Host(pb::EdgeHost {
                hostname: h.clone(),
                deployment_id: d.clone(),
            })),
            None => msg(Event::HostRemoved(h.clone())),
        });
    }
    for (h, c) in &batch.certificates {
        out.push(match c {
            Some(c) => msg(Event::Certificate(certificate(c))),
            None => msg(Event::CertificateRemoved(h.clone())),
        });
    }
    out.push(pb::WatchRoutesResponse {
        version: v,
        event: None,
    });
    out
}

type Tx = mpsc::Sender<Result<pb::WatchRoutesResponse, ConnectError>>;

async fn send_all(tx: &Tx, msgs: Vec<pb::WatchRoutesResponse>) -> Result<(), ()> {
    for m in msgs {
        tx.send(Ok(m)).await.map_err(|_| ())?;
    }
    Ok(())
}

/// Sends the whole table as of one version; returns that version.
async fn snapshot(
    db: &MySqlPool,
    me: &(String, String),
    reason: String,
    tx: &Tx,
) -> Result<Option<u64>, ConnectError> {
    let mut conn = db.acquire().await.map_err(|e| db_error(e.into()))?;
    let snap = ctrl_db::edge::snapshot(&mut conn).await.map_err(db_error)?;
    drop(conn);
    let v = snap.version;
    let msg = |event| pb::WatchRoutesResponse {
        version: v,
        event: Some(event),
    };
    let mut by_deployment: HashMap<&str, Vec<Instance>> = HashMap::new();
    for i in &snap.instances {
        by_deployment
            .entry(&i.deployment_id)
            .or_default()
            .push(i.clone());
    }
    let mut msgs = vec![msg(Event::SnapshotBegin(pb::SnapshotBegin { reason }))];
    for d in &snap.deployments {
        let instances = by_deployment
            .get(d.id.as_str())
            .map_or(&[][..], Vec::as_slice);
        msgs.push(msg(Event::Deployment(view(d, instances, me))));
    }
    for h in &snap.hosts {
        msgs.push(msg(Event::Host(pb::EdgeHost {
            hostname: h.fqdn.clone(),
            deployment_id: h.deployment_id.clone(),
        })));
    }
    for c in &snap.certificates {
        msgs.push(msg(Event::Certificate(certificate(c))));
    }
    let entries = (snap.deployments.len() + snap.hosts.len() + snap.certificates.len()) as u64;
    msgs.push(msg(Event::SnapshotEnd(pb::SnapshotEnd { entries })));
    Ok(send_all(tx, msgs).await.ok().map(|()| v))
}

/// EdgeService.WatchRoutes: a snapshot or a catch-up from the database, then
/// the shared feed, with keepalives.
pub async fn watch_routes(
    sync: &ClusterSync,
    agent: &Agent,
    req: pb::WatchRoutesRequest,
) -> Result<Stream<pb::WatchRoutesResponse>, ConnectError> {
    let me = region(agent, req.region.as_ref())?;
    crate::agents::touch(sync.db(), agent, now_ms()).await;
    let (tx, rx) = mpsc::channel(256);
    let sync = sync.clone();
    let agent = agent.clone();
    tokio::spawn(async move {
        let _open = sync.metrics().stream_opened("edge");
        if let Err(e) = follow(&sync, &agent, &me, req.version_last_seen, &tx).await {
            let _ = tx.send(Err(e)).await;
        }
    });
    Ok(stream(rx))
}

async fn follow(
    sync: &ClusterSync,
    agent: &Agent,
    me: &(String, String),
    mut cursor: u64,
    tx: &Tx,
) -> Result<(), ConnectError> {
    let feed = sync.edge_feed();
    let db = sync.db();
    let shutdown = sync.shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let mut sub = feed.subscribe().await.map_err(db_error)?;
        let resumable = cursor > 0
            && ctrl_db::edge::can_resume(db, cursor)
                .await
                .map_err(db_error)?;
        if resumable {
            // Catch up from the database.
            loop {
                let changes = ctrl_db::edge::list_changes(db, cursor, feed.settings.page_size)
                    .await
                    .map_err(db_error)?;
                let Some(last) = changes.last().map(|c| c.version) else {
                    break;
                };
                let batch = resolve(db, &changes).await.map_err(db_error)?;
                if send_all(tx, messages(&batch, me)).await.is_err() {
                    return Ok(());
                }
                cursor = last;
            }
        } else {
            let reason = if cursor == 0 {
                "first connection".to_owned()
            } else {
                format!("cursor {cursor} cannot be resumed (pruned, or from another database)")
            };
            let started = std::time::Instant::now();
            match snapshot(db, me, reason, tx).await? {
                Some(v) => cursor = v,
                None => return Ok(()),
            }
            sync.metrics().snapshot_took("edge", started.elapsed());
        }
        // Follow the feed.
        let keepalive = feed.settings.keepalive;
        loop {
            tokio::select! {
                () = shutdown.as_mut() => return Ok(()),
                () = tx.closed() => return Ok(()),
                batch = sub.batches.recv() => match batch {
                    Ok(batch) if batch.version > cursor => {
                        if send_all(tx, messages(&batch, me)).await.is_err() {
                            return Ok(());
                        }
                        cursor = batch.version;
                    }
                    Ok(_) => {}
                    // Lagged or restarted: catch up again.
                    Err(_) => break,
                },
                () = tokio::time::sleep(keepalive) => {
                    if !crate::agents::still_valid(db, agent).await {
                        return Err(ConnectError::new_unauthenticated(format!(
                            "agent credential {} was revoked",
                            agent.credential_id
                        )));
                    }
                    let head = sub.head.load(Ordering::Acquire);
                    if sub.batches.is_empty() && head > cursor {
                        cursor = head;
                    }
                    if tx.send(Ok(pb::WatchRoutesResponse { version: cursor, event: None })).await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// EdgeService.WakeDeployment: the wake rule for requests (a stopped,
/// idle preview that ran before), then the worker's `Deploy/{id}/Wake`
/// with the same idempotency key as the API's WakeDeployment, so requests,
/// retries and a user's wake all land on one invocation.
pub async fn wake_deployment(
    sync: &ClusterSync,
    agent: &Agent,
    req: pb::EdgeServiceWakeDeploymentRequest,
) -> Result<pb::EdgeServiceWakeDeploymentResponse, ConnectError> {
    region(agent, req.region.as_ref())?;
    let id = req.deployment_id;
    let rows = ctrl_db::edge::deployments(sync.db(), std::slice::from_ref(&id))
        .await
        .map_err(db_error)?;
    let d = rows
        .first()
        .ok_or_else(|| ConnectError::new_not_found(format!("deployment {id} not found")))?;
    if d.desired_state == DesiredState::Running {
        return Ok(pb::EdgeServiceWakeDeploymentResponse {});
    }
    ctrl_core::gate::check_wake_on_request(&d.gate_facts())
        .map_err(|e| ConnectError::new_failed_precondition(e.message()))?;
    let row = ctrl_db::deployment::get(sync.db(), &id)
        .await
        .map_err(db_error)?;
    sync.notifier()
        .wake(
            &id,
            &ctrl_core::workflows::wake_idempotency_key(&id, row.updated_at),
        )
        .await
        .map_err(|e| {
            tracing::warn!(deployment_id = %id, error = %e, "could not start a wake");
            ConnectError::new_unavailable("the workflow engine is not reachable; retry")
        })?;
    tracing::info!(deployment_id = %id, "woken by a request at the edge");
    Ok(pb::EdgeServiceWakeDeploymentResponse {})
}

/// EdgeService.ReportTraffic: one batched write per report.
pub async fn report_traffic(
    sync: &ClusterSync,
    agent: &Agent,
    req: pb::ReportTrafficRequest,
) -> Result<pb::ReportTrafficResponse, ConnectError> {
    let (platform, name) = region(agent, req.region.as_ref())?;
    if req.traffic.len() > 10_000 {
        return Err(ConnectError::new_invalid_argument(
            "traffic: at most 10000 entries per report",
        ));
    }
    let mut rows = Vec::with_capacity(req.traffic.len());
    for (i, t) in req.traffic.into_iter().enumerate() {
        if t.deployment_id.is_empty() || t.deployment_id.len() > 48 || t.minute % 60_000 != 0 {
            return Err(ConnectError::new_invalid_argument(format!(
                "traffic[{i}]: needs a deployment_id (at most 48 characters) and a minute that is a multiple of 60000"
            )));
        }
        rows.push(ctrl_db::edge::Traffic {
            deployment_id: t.deployment_id,
            minute: t.minute,
            requests: t.requests,
            last_request_at: t.last_request_at,
        });
    }
    let region_id = ctrl_db::cluster::find_region(sync.db(), &name, &platform)
        .await
        .map_err(db_error)?
        .map_or_else(|| format!("{platform}/{name}"), |r| r.id);
    let mut tx = sync.db().begin().await.map_err(|e| db_error(e.into()))?;
    ctrl_db::edge::add_traffic(&mut tx, &region_id, &rows)
        .await
        .map_err(db_error)?;
    tx.commit().await.map_err(|e| db_error(e.into()))?;
    Ok(pb::ReportTrafficResponse {})
}

/// The edge that made the request (its frontline credential
/// authenticated): what protects an EdgeService RPC.
#[derive(Debug, Clone)]
pub struct EdgeAgent(pub Agent);

impl FromRequestParts<ClusterSync> for EdgeAgent {
    type Rejection = ConnectError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ClusterSync,
    ) -> Result<Self, ConnectError> {
        crate::agents::authenticate(state.db(), &parts.headers, AgentKind::Frontline)
            .await
            .map(Self)
    }
}

macro_rules! edge_rpc {
    ($handler:ident => $service:path, $req:ty, $resp:ty) => {
        async fn $handler(
            State(sync): State<ClusterSync>,
            EdgeAgent(agent): EdgeAgent,
            ConnectRequest(req): ConnectRequest<$req>,
        ) -> Result<ConnectResponse<$resp>, ConnectError> {
            $service(&sync, &agent, req).await.map(ConnectResponse::new)
        }
    };
}

edge_rpc!(watch_rpc => watch_routes, pb::WatchRoutesRequest, Stream<pb::WatchRoutesResponse>);
edge_rpc!(wake_rpc => wake_deployment, pb::EdgeServiceWakeDeploymentRequest, pb::EdgeServiceWakeDeploymentResponse);
edge_rpc!(traffic_rpc => report_traffic, pb::ReportTrafficRequest, pb::ReportTrafficResponse);

/// The gRPC side of the edge service (tonic).
pub type EdgeGrpcService = pb::edge_service_server::EdgeServiceServer<pb::EdgeTonicService>;

/// The edge service's Connect router and gRPC service.
pub fn parts(sync: ClusterSync) -> (axum::Router, EdgeGrpcService) {
    let (router, grpc) = pb::edge_service_connect::EdgeServiceTonicCompatibleBuilder::new()
        .watch_routes(watch_rpc)
        .wake_deployment(wake_rpc)
        .report_traffic(traffic_rpc)
        .with_state(sync)
        .build();
    (router, grpc.max_decoding_message_size(4 << 20))
}
