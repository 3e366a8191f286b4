//! Following the control plane's routing table: WatchRoutes from the last
//! version applied, snapshots built aside and swapped in whole, changes
//! applied batch by batch (a batch ends with a message without event), and
//! a reconnect with capped, jittered backoff whenever the stream ends. While
//! the control plane is away the last table keeps serving; health and
//! metrics say it is stale.

use std::sync::Arc;
use std::time::Duration;

use ctrl_proto::ctrl::v1 as pb;
use futures::StreamExt;
use pb::watch_routes_response::Event;
use rand::Rng;

use crate::control::Control;
use crate::table::{Builder, CertificateLoader, Routes, Table};

/// Backoff bounds between reconnects.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Follows the table until `shutdown` resolves.
pub async fn run(
    control: Control,
    routes: Arc<Routes>,
    certs: Arc<dyn CertificateLoader>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut backoff = BACKOFF_MIN;
    loop {
        let cursor = routes.cursor();
        let outcome = tokio::select! {
            () = &mut shutdown => return,
            o = follow(&control, &routes, certs.as_ref(), cursor) => o,
        };
        routes.set_connected(false);
        match outcome {
            Ok(progressed) => {
                tracing::info!("routing stream ended; reconnecting");
                if progressed {
                    backoff = BACKOFF_MIN;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "routing stream failed; serving the last table and retrying");
            }
        }
        let jitter = rand::rng().random_range(0.5..1.0);
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(backoff.mul_f64(jitter)) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One stream; `Ok(true)` if it delivered anything.
async fn follow(
    control: &Control,
    routes: &Routes,
    certs: &dyn CertificateLoader,
    cursor: u64,
) -> Result<bool, tonic::Status> {
    let mut stream = control.watch(cursor).await?;
    routes.set_connected(true);
    tracing::info!(cursor, "following the routing table");
    let mut snapshot: Option<Builder<'_>> = None;
    let mut batch: Option<Builder<'_>> = None;
    let mut progressed = false;
    while let Some(msg) = stream.next().await {
        let msg = msg?;
        progressed = true;
        match msg.event {
            Some(Event::SnapshotBegin(b)) => {
                tracing::info!(reason = %b.reason, "receiving a snapshot of the routing table");
                batch = None;
                snapshot = Some(Builder::new(Table::default(), &routes.backends, certs));
            }
            Some(Event::SnapshotEnd(end)) => {
                let Some(b) = snapshot.take() else {
                    return Err(tonic::Status::internal("snapshot end without a beginning"));
                };
                let table = b.finish(msg.version);
                let (hosts, deployments, certificates) = table.sizes();
                routes.publish(table);
                routes.backends.prune();
                tracing::info!(
                    version = msg.version,
                    entries = end.entries,
                    hosts,
                    deployments,
                    certificates,
                    "routing table replaced"
                );
            }
            Some(event) => {
                let target = match snapshot.as_mut() {
                    Some(s) => s,
                    None => batch.get_or_insert_with(|| {
                        Builder::new((*routes.current()).clone(), &routes.backends, certs)
                    }),
                };
                target.apply(event);
            }
            None => {
                // The end of a batch, or a keepalive.
                if let Some(b) = batch.take() {
                    routes.publish(b.finish(msg.version));
                } else if snapshot.is_none() {
                    // Nothing changed up to this version: only the cursor moves.
                    routes.advance(msg.version);
                }
            }
        }
    }
    Ok(progressed)
}
