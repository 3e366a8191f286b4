//! Instance logs for DeploymentService.StreamDeploymentLogs, read through
//! the regions' agents without ever connecting to one: for each region the
//! reader files a request ([`ctrl_db::log_relay`]), the cluster-sync replica
//! holding that region's krane stream hands it over (`WatchLogRequests`),
//! and krane pushes the lines back (`PushLogs`). The database is the
//! rendezvous, so ctrl-api and cluster-sync may be separate processes and
//! replicas. The reader consumes (deletes) batches as it forwards them and
//! removes its request when it leaves, also when the client hangs up.
//!
//! A region that fails (no agent, agent silent, the agent's own error)
//! becomes one `LOG_STREAM_CTRL` line saying so; the other regions go on.

use std::time::Duration;

use ctrl_core::id::{IdKind, generate};
use ctrl_core::logs::{AGENT_GONE_AFTER, READER_GONE_AFTER, READER_REFRESH};
use ctrl_db::cluster::LogSource;
use ctrl_db::log_relay::{self, NewRequest, RequestState};
use ctrl_proto::ctrl::v1 as pb;
use ctrl_runtime::now_ms;
use prost::Message;
use sqlx::MySqlPool;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Pause between reads of the relay when nothing arrived.
const POLL: Duration = Duration::from_millis(150);
/// Batches read per query.
const PAGE: u32 = 32;
/// How long a request may wait for its agent to pick it up.
const PICKUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a read without `follow` may take in all.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Requests whose reader vanished (a crashed replica) and batches nobody
/// read are swept after this long.
const SWEEP_AFTER: Duration = Duration::from_secs(600);

/// One request for one region.
#[derive(Debug, Clone)]
pub struct LogRequest {
    /// The deployment.
    pub deployment_id: String,
    /// Keep streaming new lines.
    pub follow: bool,
    /// Past lines per instance.
    pub tail: u32,
}

/// Streams `source`'s lines into `tx` until the agent ends, the reader
/// hangs up or `stop` resolves; a failure is sent as a notice line.
pub async fn forward(
    db: &MySqlPool,
    source: &LogSource,
    request: &LogRequest,
    tx: &mpsc::Sender<pb::StreamDeploymentLogsResponse>,
    stop: impl std::future::Future<Output = ()>,
) {
    let Some(cluster_id) = &source.cluster_id else {
        let _ = tx
            .send(notice(
                &source.region_name,
                "no agent ever registered there",
            ))
            .await;
        return;
    };
    let id = generate(IdKind::LogRequest, &mut rand::rng());
    let filed = NewRequest {
        id: &id,
        cluster_id,
        deployment_id: &request.deployment_id,
        follow: request.follow,
        tail_lines: request.tail,
    };
    let now = now_ms();
    let _ = log_relay::sweep(db, now - ms(SWEEP_AFTER), now - ms(SWEEP_AFTER)).await;
    if let Err(e) = log_relay::file(db, &filed, now).await {
        tracing::warn!(error = %e, "filing a log request failed");
        let _ = tx
            .send(notice(
                &source.region_name,
                "the control plane database is not reachable; retry",
            ))
            .await;
        return;
    }
    // Removes the request however this ends (also when the task is dropped).
    let _remove = Remove {
        db: db.clone(),
        id: id.clone(),
    };
    let relay = relay(db, &id, source, tx);
    let bounded = async {
        if request.follow {
            relay.await
        } else {
            tokio::time::timeout(READ_TIMEOUT, relay)
                .await
                .unwrap_or_else(|_| Err(format!("no end after {READ_TIMEOUT:?}")))
        }
    };
    let outcome = tokio::select! {
        outcome = bounded => outcome,
        () = tx.closed() => Ok(()),
        () = stop => Ok(()),
    };
    if let Err(why) = outcome {
        let _ = tx.send(notice(&source.region_name, why)).await;
    }
}

/// Forwards the request's batches until it ends; `Err` says why it failed.
async fn relay(
    db: &MySqlPool,
    id: &str,
    source: &LogSource,
    tx: &mpsc::Sender<pb::StreamDeploymentLogsResponse>,
) -> Result<(), String> {
    let unreachable = |e: ctrl_db::Error| {
        tracing::warn!(error = %e, "reading the log relay failed");
        "the control plane database is not reachable; retry".to_owned()
    };
    let mut after = 0u64;
    let mut refreshed = Instant::now();
    loop {
        // The state is read before the batches: an end seen here was
        // recorded after the last batch, so that read finds every batch.
        let request = match log_relay::get(db, id).await {
            Ok(r) => r,
            Err(ctrl_db::Error::NotFound(_)) => {
                return Err("the request was dropped (the reader fell silent)".into());
            }
            Err(e) => return Err(unreachable(e)),
        };
        let batches = log_relay::batches(db, id, after, PAGE)
            .await
            .map_err(unreachable)?;
        let full = batches.len() == PAGE as usize;
        for (seq, body) in batches {
            let lines = pb::LogLines::decode(body.as_slice())
                .map_err(|e| format!("its agent sent an unreadable batch: {e}"))?;
            for line in lines.lines {
                let message = pb::StreamDeploymentLogsResponse {
                    region: source.region_name.clone(),
                    instance: line.instance,
                    stream: line.stream,
                    timestamp: line.timestamp,
                    line: line.line,
                };
                if tx.send(message).await.is_err() {
                    return Ok(());
                }
            }
            after = seq;
        }
        if after > 0 {
            log_relay::consume(db, id, after)
                .await
                .map_err(unreachable)?;
        }
        let now = now_ms();
        if refreshed.elapsed() >= READER_REFRESH {
            log_relay::touch_reader(db, id, now)
                .await
                .map_err(unreachable)?;
            refreshed = Instant::now();
        }
        if full {
            continue;
        }
        match request.state {
            RequestState::Ended => {
                return match request.error {
                    Some(error) => Err(error),
                    None => Ok(()),
                };
            }
            RequestState::Pending if now - request.created_at > ms(PICKUP_TIMEOUT) => {
                let heartbeat = if source.last_heartbeat_at > 0 {
                    format!(
                        "its last heartbeat was {} s ago",
                        (now - source.last_heartbeat_at) / 1000
                    )
                } else {
                    "it never sent a heartbeat".to_owned()
                };
                return Err(format!(
                    "its agent did not pick up the request within {PICKUP_TIMEOUT:?} \
                     (is krane running and connected? {heartbeat})"
                ));
            }
            RequestState::Claimed => {
                let seen = request
                    .agent_seen_at
                    .or(request.claimed_at)
                    .unwrap_or(request.created_at);
                if now - seen > ms(AGENT_GONE_AFTER) {
                    return Err(format!(
                        "its agent stopped answering ({} s without a word)",
                        (now - seen) / 1000
                    ));
                }
            }
            RequestState::Pending => {}
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Deletes the request when the read ends (on a task: drop cannot wait).
struct Remove {
    db: MySqlPool,
    id: String,
}

impl Drop for Remove {
    fn drop(&mut self) {
        let (db, id) = (self.db.clone(), std::mem::take(&mut self.id));
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                if let Err(e) = log_relay::remove(&db, &id).await {
                    tracing::debug!(error = %e, request = %id, "removing a log request failed; the sweep will");
                }
            });
        }
    }
}

/// A notice from ctrl about `region`'s stream.
pub fn notice(region: &str, text: impl std::fmt::Display) -> pb::StreamDeploymentLogsResponse {
    pb::StreamDeploymentLogsResponse {
        region: region.to_owned(),
        stream: pb::LogStream::Ctrl as i32,
        line: format!("logs of region {region}: {text}"),
        ..Default::default()
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

// The reader refreshes well within the time after which agents give up on it.
const _: () = assert!(READER_REFRESH.as_secs() * 3 <= READER_GONE_AFTER.as_secs());
