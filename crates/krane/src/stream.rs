//! Following the region's desired state: register, take a full snapshot,
//! then watch from the snapshot's version — reconnecting with a jittered
//! backoff, re-snapshotting periodically and whenever the server asks.
//!
//! The cursor advances when a change is *received* and handed to the sink:
//! the sink keeps the newest state per deployment and applies it on its own
//! schedule, so a received change is never lost while the process lives,
//! and a restarted process starts from a snapshot.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use ctrl_proto::ctrl::v1 as pb;
use rand::Rng;
use tokio::sync::watch;

use crate::control::Control;
use crate::metrics::Metrics;

/// Where desired-state changes go.
pub trait DesiredSink: Send + Sync + 'static {
    /// A deployment's new desired state (from a snapshot or the watch).
    fn changed(&self, state: pb::DeploymentState);
    /// A snapshot ended: `present` are the deployments it contained; every
    /// other deployment should not run.
    fn snapshot_complete(&self, present: &HashSet<String>, version: u64);
}

/// The deployment a state is about.
pub fn deployment_id(state: &pb::DeploymentState) -> Option<&str> {
    match state.state.as_ref()? {
        pb::deployment_state::State::Apply(a) => Some(&a.deployment_id),
        pb::deployment_state::State::Delete(d) => Some(&d.deployment_id),
    }
}

/// Timings of the stream.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// Full snapshot interval.
    pub full_sync: Duration,
    /// Reconnect delay range.
    pub reconnect: (Duration, Duration),
}

/// What the stream has done so far (health and metrics read it).
#[derive(Debug, Default)]
pub struct StreamState {
    /// A heartbeat succeeded.
    pub registered: AtomicBool,
    /// A snapshot completed.
    pub synced: AtomicBool,
    /// The heartbeat interval the server asked for (ms).
    pub heartbeat_ms: AtomicU64,
}

/// Sends heartbeats until `stop`; the first success marks the agent
/// registered. Failures retry after a jittered delay.
pub async fn heartbeat_loop(
    control: Control,
    backend: pb::AgentBackend,
    state: Arc<StreamState>,
    reconnect: (Duration, Duration),
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let wait = match control.heartbeat(backend).await {
            Ok(r) => {
                if !state.registered.swap(true, Ordering::SeqCst) {
                    tracing::info!(cluster = %r.cluster_id, region = %r.region_id, "registered");
                }
                let ms = u64::try_from(r.heartbeat_interval_ms)
                    .unwrap_or(30_000)
                    .max(100);
                state.heartbeat_ms.store(ms, Ordering::Relaxed);
                Duration::from_millis(ms)
            }
            Err(e) => {
                tracing::warn!(code = ?e.code(), message = %e.message(), "heartbeat failed; retrying");
                jitter(reconnect)
            }
        };
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

pub(crate) fn jitter((min, max): (Duration, Duration)) -> Duration {
    if max <= min {
        return min;
    }
    rand::rng().random_range(min..=max)
}

/// Why a stream pass ended.
enum Next {
    /// Take a snapshot, then watch again.
    Snapshot,
    /// Reconnect the watch after a pause.
    Reconnect,
    /// Shut down.
    Stop,
}

/// Snapshot + watch until `stop`.
pub async fn follow(
    control: Control,
    sink: Arc<dyn DesiredSink>,
    settings: StreamSettings,
    state: Arc<StreamState>,
    metrics: Metrics,
    mut stop: watch::Receiver<bool>,
) {
    // Wait for registration: before it, every call answers not_found.
    while !state.registered.load(Ordering::SeqCst) {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
    let mut need_snapshot = true;
    let mut last_snapshot = tokio::time::Instant::now();
    loop {
        if need_snapshot {
            match snapshot(&control, sink.as_ref(), &metrics).await {
                Ok(version) => {
                    metrics.cursor.set(version);
                    state.synced.store(true, Ordering::SeqCst);
                    last_snapshot = tokio::time::Instant::now();
                    need_snapshot = false;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "snapshot failed; retrying");
                    if pause(&mut stop, settings.reconnect).await {
                        return;
                    }
                    continue;
                }
            }
        }
        let until_snapshot = settings.full_sync.saturating_sub(last_snapshot.elapsed());
        let next = tokio::select! {
            _ = stop.wait_for(|s| *s) => Next::Stop,
            () = tokio::time::sleep(until_snapshot) => Next::Snapshot,
            next = watch_once(&control, sink.as_ref(), &metrics) => next,
        };
        match next {
            Next::Stop => return,
            Next::Snapshot => need_snapshot = true,
            Next::Reconnect => {
                metrics.reconnects.inc();
                if pause(&mut stop, settings.reconnect).await {
                    return;
                }
            }
        }
    }
}

/// Sleeps a jittered reconnect delay; true if stopped meanwhile.
async fn pause(stop: &mut watch::Receiver<bool>, reconnect: (Duration, Duration)) -> bool {
    tokio::select! {
        _ = stop.wait_for(|s| *s) => true,
        () = tokio::time::sleep(jitter(reconnect)) => false,
    }
}

/// Moves the cursor forward (never back: versions only grow on a stream).
fn advance(metrics: &Metrics, version: u64) {
    if version > metrics.cursor.get() {
        metrics.cursor.set(version);
    }
}

/// One full snapshot into the sink; returns the version to watch from.
async fn snapshot(
    control: &Control,
    sink: &dyn DesiredSink,
    metrics: &Metrics,
) -> anyhow::Result<u64> {
    use pb::sync_desired_state_response::Event;
    let started = std::time::Instant::now();
    let mut stream = control.snapshot().await?;
    let mut present = HashSet::new();
    while let Some(msg) = stream.message().await? {
        match msg.event {
            Some(Event::Deployment(state)) => {
                if let Some(id) = deployment_id(&state) {
                    present.insert(id.to_owned());
                }
                metrics.changes.inc();
                sink.changed(state);
            }
            Some(Event::Complete(done)) => {
                sink.snapshot_complete(&present, done.version);
                metrics.snapshots.inc();
                tracing::info!(deployments = present.len(), version = done.version, took = ?started.elapsed(), "snapshot applied");
                return Ok(done.version);
            }
            None => {}
        }
    }
    anyhow::bail!("the snapshot ended without its final message")
}

/// Watches from the current cursor until the stream ends or asks for a
/// snapshot.
async fn watch_once(control: &Control, sink: &dyn DesiredSink, metrics: &Metrics) -> Next {
    use pb::watch_response::Event;
    let cursor = metrics.cursor.get();
    let mut stream = match control.watch(cursor).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(code = ?e.code(), message = %e.message(), "watch failed to open");
            return Next::Reconnect;
        }
    };
    tracing::debug!(cursor, "watching");
    loop {
        match stream.message().await {
            Ok(Some(msg)) => match msg.event {
                Some(Event::Deployment(change)) => {
                    metrics.changes.inc();
                    sink.changed(change);
                    advance(metrics, msg.version);
                }
                Some(Event::ResyncRequired(r)) => {
                    tracing::info!(reason = %r.reason, "server asked for a snapshot");
                    return Next::Snapshot;
                }
                None => {
                    advance(metrics, msg.version);
                }
            },
            Ok(None) => {
                tracing::info!("watch ended by the server; reconnecting");
                return Next::Reconnect;
            }
            Err(e) => {
                tracing::warn!(code = ?e.code(), message = %e.message(), "watch broke; reconnecting");
                return Next::Reconnect;
            }
        }
    }
}
