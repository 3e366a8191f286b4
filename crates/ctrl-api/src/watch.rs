//! One change feed per watched deployment, shared by all its watchers.
//!
//! The first `WatchDeployment` of a deployment starts a poll loop that
//! re-reads it every [`POLL`] and publishes what changed on a
//! `tokio::sync::watch` channel; every later watcher subscribes to the same
//! channel. A thousand watchers of one deployment cost one query loop, so
//! the unary RPCs sharing the database pool keep their latency. The loop
//! ends with the deployment's terminal status, a read error (passed to the
//! watchers), server shutdown, or its last watcher leaving.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ctrl_proto::ctrl::v1 as pb;
use tokio::sync::watch;

use crate::error::ApiError;
use crate::state::AppState;

/// How often a feed re-reads its deployment.
pub const POLL: Duration = Duration::from_millis(250);

/// What a feed publishes: the deployment as last read, or why it stopped.
#[derive(Debug, Clone)]
pub enum Update {
    /// The deployment's current state.
    Deployment(Arc<pb::Deployment>),
    /// Reading it failed; the watchers end with this error.
    Failed(ApiError),
}

/// The feeds by deployment id.
#[derive(Debug, Default)]
pub struct Feeds {
    feeds: Mutex<HashMap<String, watch::Sender<Update>>>,
}

impl Feeds {
    /// A receiver of `first`'s deployment's feed, starting the feed (with
    /// `first` as its value) if none runs. Its current value is where a
    /// watcher starts.
    pub fn subscribe(&self, state: &AppState, first: pb::Deployment) -> watch::Receiver<Update> {
        let mut feeds = self.lock();
        if let Some(tx) = feeds.get(&first.id)
            && !tx.is_closed()
        {
            return tx.subscribe();
        }
        let id = first.id.clone();
        let (tx, rx) = watch::channel(Update::Deployment(Arc::new(first)));
        feeds.insert(id.clone(), tx.clone());
        tokio::spawn(poll(state.clone(), id, tx));
        rx
    }

    /// How many feeds run (one per watched deployment).
    pub fn running(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Sender<Update>>> {
        self.feeds
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Forgets `id`'s feed — unless, without `force`, a watcher arrived
    /// meanwhile (then it goes on). Whether it is forgotten.
    fn retire(&self, id: &str, tx: &watch::Sender<Update>, force: bool) -> bool {
        let mut feeds = self.lock();
        if !force && tx.receiver_count() > 0 {
            return false;
        }
        if feeds.get(id).is_some_and(|t| t.same_channel(tx)) {
            feeds.remove(id);
        }
        true
    }
}

fn terminal(tx: &watch::Sender<Update>) -> bool {
    matches!(&*tx.borrow(), Update::Deployment(d) if is_terminal(d))
}

/// Whether a watch of `d` is over (a status it does not leave by itself).
pub fn is_terminal(d: &pb::Deployment) -> bool {
    use pb::DeploymentStatus as P;
    matches!(
        P::try_from(d.status),
        Ok(P::Ready | P::Failed | P::Skipped | P::Stopped | P::Superseded | P::Cancelled)
    )
}

/// The feed's loop: read, publish changes, stop when nobody listens or
/// nothing more can change.
async fn poll(state: AppState, id: String, tx: watch::Sender<Update>) {
    let shutdown = state.shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let done = terminal(&tx);
        if (done || tx.receiver_count() == 0) && state.watch_feeds().retire(&id, &tx, done) {
            return;
        }
        tokio::select! {
            () = &mut shutdown => {
                state.watch_feeds().lock().remove(&id);
                return;
            }
            () = tokio::time::sleep(POLL) => {}
        }
        match crate::services::deployment::load_full(&state, &id).await {
            Ok(now) => {
                tx.send_if_modified(|current| match current {
                    Update::Deployment(d) if **d == now => false,
                    _ => {
                        *current = Update::Deployment(Arc::new(now));
                        true
                    }
                });
            }
            Err(e) => {
                tx.send_replace(Update::Failed(e));
                state.watch_feeds().retire(&id, &tx, true);
                return;
            }
        }
    }
}
