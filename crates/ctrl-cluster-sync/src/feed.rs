//! One change feed per region: a single task polls the region's changes
//! (`version > head`, in version order) and broadcasts them to every agent
//! watching the region, so N agents cost one query per poll, not N.
//!
//! An agent that is behind catches up from the database first and then
//! follows the feed ([`crate::service`]'s Watch). That hand-over cannot lose
//! a change because of the order of three steps: the feed's starting head is
//! read *before* the feed accepts subscribers; a watcher subscribes *before*
//! its catch-up query; and writers commit in version order (ctrl-db's
//! `topology::next_version`). So every change is either at most the head a
//! watcher could have missed (then committed before its catch-up query ran)
//! or published to it after it subscribed. A watcher that falls more than
//! the broadcast buffer behind is told it lagged and catches up from the
//! database again — slow agents never slow the feed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ctrl_proto::ctrl::v1 as pb;
use sqlx::MySqlPool;
use tokio::sync::broadcast;

/// How feeds poll.
#[derive(Debug, Clone)]
pub struct FeedSettings {
    /// Pause between polls when nothing changed (the latency floor).
    pub poll_interval: Duration,
    /// Rows per query.
    pub page_size: u32,
    /// Changes kept for watchers that are momentarily slow.
    pub buffer: usize,
    /// A feed without watchers stops after this long.
    pub idle_stop: Duration,
}

impl Default for FeedSettings {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_millis(100),
            page_size: 1000,
            buffer: 4096,
            idle_stop: Duration::from_secs(30),
        }
    }
}

/// One desired-state change, converted once and shared by every watcher.
#[derive(Debug, Clone)]
pub struct Change {
    /// Its region version.
    pub version: u64,
    /// The state to send.
    pub state: Arc<pb::DeploymentState>,
}

/// Every region's feed.
#[derive(Debug)]
pub struct Feeds {
    db: MySqlPool,
    metrics: crate::metrics::SyncMetrics,
    settings: FeedSettings,
    regions: Mutex<HashMap<String, RegionFeed>>,
}

#[derive(Debug, Clone)]
struct RegionFeed {
    tx: broadcast::Sender<Change>,
    head: Arc<AtomicU64>,
}

/// A watcher's view of a region's feed.
#[derive(Debug)]
pub struct Subscription {
    /// Changes published after subscribing, in version order.
    pub changes: broadcast::Receiver<Change>,
    head: Arc<AtomicU64>,
}

impl Subscription {
    /// The highest version the feed has read; every change up to it has been
    /// published (it is raised only after publishing).
    pub fn head(&self) -> u64 {
        self.head.load(Ordering::Acquire)
    }
}

impl Feeds {
    /// Feeds reading from `db`.
    pub fn new(
        db: MySqlPool,
        settings: FeedSettings,
        metrics: crate::metrics::SyncMetrics,
    ) -> Arc<Self> {
        Arc::new(Self {
            db,
            metrics,
            settings,
            regions: Mutex::new(HashMap::new()),
        })
    }

    /// Subscribes to a region's feed, starting it if needed.
    pub async fn subscribe(self: &Arc<Self>, region_id: &str) -> ctrl_db::Result<Subscription> {
        if let Some(sub) = self.existing(region_id) {
            return Ok(sub);
        }
        // Read the starting head before anyone can subscribe (module docs).
        let head = ctrl_db::topology::current_version(&self.db, region_id).await?;
        let mut regions = self.regions.lock().unwrap_or_else(|e| e.into_inner());
        let feed = regions.entry(region_id.to_owned()).or_insert_with(|| {
            let (tx, _) = broadcast::channel(self.settings.buffer);
            let feed = RegionFeed {
                tx,
                head: Arc::new(AtomicU64::new(head)),
            };
            tokio::spawn(self.clone().run(region_id.to_owned(), feed.clone()));
            feed
        });
        Ok(Subscription {
            changes: feed.tx.subscribe(),
            head: feed.head.clone(),
        })
    }

    /// How many regions have a running feed.
    pub fn active(&self) -> usize {
        self.regions.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn existing(&self, region_id: &str) -> Option<Subscription> {
        let regions = self.regions.lock().unwrap_or_else(|e| e.into_inner());
        regions.get(region_id).map(|f| Subscription {
            changes: f.tx.subscribe(),
            head: f.head.clone(),
        })
    }

    /// The poll loop of one region, until it has had no watcher for
    /// `idle_stop`.
    async fn run(self: Arc<Self>, region_id: String, feed: RegionFeed) {
        tracing::debug!(region = %region_id, "change feed started");
        let mut idle_since: Option<tokio::time::Instant> = None;
        loop {
            if feed.tx.receiver_count() == 0 {
                let since = *idle_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() >= self.settings.idle_stop && self.stop_if_unwatched(&region_id)
                {
                    tracing::debug!(region = %region_id, "change feed stopped (no watchers)");
                    return;
                }
            } else {
                idle_since = None;
            }
            match self.poll(&region_id, &feed).await {
                // A full page: there is more right now.
                Ok(n) if n == self.settings.page_size as usize => continue,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(region = %region_id, error = %e, "change feed poll failed; retrying")
                }
            }
            tokio::time::sleep(self.settings.poll_interval).await;
        }
    }

    /// Removes the feed if nobody subscribed meanwhile (checked under the
    /// lock that subscribing takes).
    fn stop_if_unwatched(&self, region_id: &str) -> bool {
        let mut regions = self.regions.lock().unwrap_or_else(|e| e.into_inner());
        match regions.get(region_id) {
            Some(f) if f.tx.receiver_count() == 0 => {
                regions.remove(region_id);
                true
            }
            _ => false,
        }
    }

    /// Publishes the changes after the head; returns how many rows it read.
    async fn poll(&self, region_id: &str, feed: &RegionFeed) -> ctrl_db::Result<usize> {
        let head = feed.head.load(Ordering::Acquire);
        let rows =
            ctrl_db::topology::list_changes(&self.db, region_id, head, self.settings.page_size)
                .await?;
        let n = rows.len();
        self.metrics.feed_polled(region_id, n as u64);
        for row in rows {
            let version = row.version;
            if let Some(state) = crate::convert::change(row) {
                // No receiver is fine: nobody watches right now.
                let _ = feed.tx.send(Change {
                    version,
                    state: Arc::new(state),
                });
            }
            // Raised only after publishing: see `Subscription::head`.
            feed.head.store(version, Ordering::Release);
        }
        Ok(n)
    }
}
