//! Instance logs over the agents' own connections: `WatchLogRequests`
//! hands krane the log requests readers filed for its cluster
//! ([`ctrl_db::log_relay`]), and `PushLogs` records the lines it sends back
//! for the reader to collect. Nothing connects to an agent, and the reader
//! (ctrl-api, maybe another process or replica) meets the agent's stream in
//! the database.
//!
//! A push waits while its reader is more than
//! [`MAX_UNREAD_BATCHES`](ctrl_core::logs::MAX_UNREAD_BATCHES) behind, so a
//! fast app and a slow reader cost bounded rows; a reader that stays behind
//! ends the request with a reason. A push for a request whose reader left
//! answers `stop`.

// Handlers answer with connectrpc-axum's wire error.
#![allow(clippy::result_large_err)]

use std::time::Duration;

use connectrpc_axum::ConnectError;
use ctrl_core::id::IdKind;
use ctrl_core::logs::{MAX_BATCH_BYTES, MAX_LINE_BYTES, MAX_UNREAD_BATCHES, READER_GONE_AFTER};
use ctrl_db::log_relay::{self, RequestState};
use ctrl_proto::ctrl::v1 as pb;
use prost::Message;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::agents::Agent;
use crate::service::{ClusterSync, Stream, db_error, now_ms, stream};

/// Timings of the log relay's agent side.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// Pause between looks for new requests (the pick-up latency).
    pub poll_interval: Duration,
    /// Requests handed over per look.
    pub batch: u32,
    /// How long a push waits for a reader that is behind (less than the
    /// agents' call timeout, at least 5 s).
    pub push_wait: Duration,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_millis(200),
            batch: 16,
            push_wait: Duration::from_secs(3),
        }
    }
}

/// ClusterService.WatchLogRequests: the caller's cluster's pending requests
/// as they are filed, each claimed before it is sent (so one agent stream
/// answers it), with keepalives; ends at the first keepalive after the
/// credential is revoked.
pub async fn watch_log_requests(
    sync: &ClusterSync,
    agent: &Agent,
    req: pb::WatchLogRequestsRequest,
) -> Result<Stream<pb::WatchLogRequestsResponse>, ConnectError> {
    let cluster = sync.cluster(agent, req.cluster.as_ref()).await?;
    let (tx, rx) = mpsc::channel(16);
    let sync = sync.clone();
    let agent = agent.clone();
    tokio::spawn(async move {
        let _open = sync.metrics().stream_opened("log_requests");
        let settings = sync.settings().logs.clone();
        let keepalive = sync.settings().keepalive;
        let shutdown = sync.shutdown_signal();
        tokio::pin!(shutdown);
        let clusters = [cluster.id.clone()];
        let mut last_sent = Instant::now();
        loop {
            tokio::select! {
                () = shutdown.as_mut() => return,
                () = tx.closed() => return,
                () = tokio::time::sleep(settings.poll_interval) => {}
            }
            let pending = match log_relay::pending(sync.db(), &clusters, settings.batch).await {
                Ok(p) => p,
                Err(e) => {
                    // The agent reconnects (perhaps to a replica that can).
                    let _ = tx.send(Err(db_error(e))).await;
                    return;
                }
            };
            for request in pending {
                match log_relay::claim(sync.db(), &request.id, now_ms()).await {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(e) => {
                        let _ = tx.send(Err(db_error(e))).await;
                        return;
                    }
                }
                let message = pb::WatchLogRequestsResponse {
                    request: Some(pb::LogRequest {
                        request_id: request.id,
                        deployment_id: request.deployment_id,
                        follow: request.follow,
                        tail_lines: request.tail_lines,
                    }),
                };
                if tx.send(Ok(message)).await.is_err() {
                    return;
                }
                last_sent = Instant::now();
            }
            if last_sent.elapsed() >= keepalive {
                if !crate::agents::still_valid(sync.db(), &agent).await {
                    let _ = tx
                        .send(Err(ConnectError::new_unauthenticated(format!(
                            "agent credential {} was revoked",
                            agent.credential_id
                        ))))
                        .await;
                    return;
                }
                let keepalive = pb::WatchLogRequestsResponse { request: None };
                if tx.send(Ok(keepalive)).await.is_err() {
                    return;
                }
                last_sent = Instant::now();
            }
        }
    });
    Ok(stream(rx))
}

/// ClusterService.PushLogs: records one batch (once per number) for a
/// request of the caller's own cluster, then waits while the reader is far
/// behind; `stop` once the reader is gone or the request has ended.
pub async fn push_logs(
    sync: &ClusterSync,
    agent: &Agent,
    req: pb::PushLogsRequest,
) -> Result<pb::PushLogsResponse, ConnectError> {
    let cluster = sync.cluster(agent, req.cluster.as_ref()).await?;
    ctrl_core::id::validate(IdKind::LogRequest, &req.request_id)
        .map_err(|e| ConnectError::new_invalid_argument(format!("request_id: {e}")))?;
    let lines = req.batch.unwrap_or_default();
    check_batch(&lines)?;
    let recorded = !lines.lines.is_empty() || req.end;
    if recorded && req.seq == 0 {
        return Err(ConnectError::new_invalid_argument(
            "seq: must be 1 or more on a push with lines or the end (0 only asks whether the reader is there)",
        ));
    }
    if !req.end && !req.error.is_empty() {
        return Err(ConnectError::new_invalid_argument(
            "error: only the last push (end) says why the output cannot be read",
        ));
    }
    let stop = Ok(pb::PushLogsResponse { stop: true });
    let request = match log_relay::get(sync.db(), &req.request_id).await {
        Ok(r) => r,
        Err(ctrl_db::Error::NotFound(_)) => return stop,
        Err(e) => return Err(db_error(e)),
    };
    if request.cluster_id != cluster.id {
        return Err(agent.denied_request(&req.request_id));
    }
    let now = now_ms();
    let gone = now - request.reader_seen_at
        > i64::try_from(READER_GONE_AFTER.as_millis()).unwrap_or(i64::MAX);
    if request.state == RequestState::Ended || gone {
        return stop;
    }
    let body = recorded.then(|| lines.encode_to_vec());
    let push = log_relay::Push {
        id: &req.request_id,
        batch: body
            .as_deref()
            .filter(|_| !lines.lines.is_empty())
            .map(|b| (req.seq, b)),
        end: req.end.then_some(req.error.as_str()),
    };
    let mut tx = sync.db().begin().await.map_err(|e| db_error(e.into()))?;
    log_relay::push(&mut tx, &push, now)
        .await
        .map_err(db_error)?;
    tx.commit().await.map_err(|e| db_error(e.into()))?;
    if push.batch.is_some() {
        sync.metrics().log_batch();
    }
    if req.end {
        return stop;
    }
    wait_for_reader(sync, &req.request_id).await
}

/// Answers once the reader is at most [`MAX_UNREAD_BATCHES`] behind; a
/// reader still that far behind after `push_wait` ends the request.
async fn wait_for_reader(
    sync: &ClusterSync,
    id: &str,
) -> Result<pb::PushLogsResponse, ConnectError> {
    let settings = &sync.settings().logs;
    let deadline = Instant::now() + settings.push_wait;
    loop {
        let unread = log_relay::unread(sync.db(), id).await.map_err(db_error)?;
        if unread <= MAX_UNREAD_BATCHES {
            return Ok(pb::PushLogsResponse { stop: false });
        }
        if Instant::now() >= deadline {
            let why = format!(
                "the reader fell behind ({unread} batches unread for {:?}); lines after this were not sent",
                settings.push_wait
            );
            let mut tx = sync.db().begin().await.map_err(|e| db_error(e.into()))?;
            let end = log_relay::Push {
                id,
                batch: None,
                end: Some(&why),
            };
            log_relay::push(&mut tx, &end, now_ms())
                .await
                .map_err(db_error)?;
            tx.commit().await.map_err(|e| db_error(e.into()))?;
            return Ok(pb::PushLogsResponse { stop: true });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A batch within the relay's limits, each line naming its instance.
fn check_batch(lines: &pb::LogLines) -> Result<(), ConnectError> {
    if lines.encoded_len() > MAX_BATCH_BYTES {
        return Err(ConnectError::new_invalid_argument(format!(
            "batch: at most {MAX_BATCH_BYTES} bytes per push"
        )));
    }
    for (i, line) in lines.lines.iter().enumerate() {
        if line.line.len() > MAX_LINE_BYTES {
            return Err(ConnectError::new_invalid_argument(format!(
                "batch.lines[{i}].line: at most {MAX_LINE_BYTES} bytes (clip longer lines)"
            )));
        }
        if line.instance.is_empty() || line.instance.len() > 253 {
            return Err(ConnectError::new_invalid_argument(format!(
                "batch.lines[{i}].instance: must be 1-253 characters"
            )));
        }
    }
    Ok(())
}
