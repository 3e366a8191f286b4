//! Request counts per deployment and minute, reported in batches (never a
//! write per request); a report that fails is merged into the next one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ctrl_proto::ctrl::v1 as pb;

use crate::clock;
use crate::control::Control;

/// Entries kept while the control plane is away (then the oldest go).
const MAX_ENTRIES: usize = 100_000;

/// The counts not yet reported, one shard per worker thread (a request
/// only ever locks its own worker's shard).
#[derive(Debug)]
pub struct Traffic {
    shards: Vec<Mutex<HashMap<Minute, (u64, i64)>>>,
}

impl Default for Traffic {
    fn default() -> Self {
        Self::with_workers(1)
    }
}

/// A deployment and the start of a minute (unix ms); counted: requests and
/// the last one's time.
type Minute = (Arc<str>, i64);

impl Traffic {
    /// Counts for `workers` worker threads.
    pub fn with_workers(workers: usize) -> Self {
        Self {
            shards: (0..workers.max(1)).map(|_| Mutex::default()).collect(),
        }
    }

    /// Counts one request `worker` served for `deployment_id` now.
    pub fn record(&self, worker: usize, deployment_id: &Arc<str>) {
        let now = clock::wall_ms();
        let minute = now - now.rem_euclid(60_000);
        let key = (deployment_id.clone(), minute);
        let shard = &self.shards[worker % self.shards.len()];
        let mut counts = shard.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = counts.get_mut(&key) {
            e.0 += 1;
            e.1 = now;
            return;
        }
        if counts.len() >= MAX_ENTRIES
            && let Some(oldest) = counts.keys().min_by_key(|(_, m)| *m).cloned()
        {
            counts.remove(&oldest);
        }
        counts.insert(key, (1, now));
    }

    fn take(&self) -> Vec<pb::DeploymentTraffic> {
        let mut merged: HashMap<Minute, (u64, i64)> = HashMap::new();
        for shard in &self.shards {
            let mut counts = shard.lock().unwrap_or_else(|e| e.into_inner());
            for (k, (n, last)) in counts.drain() {
                let e = merged.entry(k).or_insert((0, 0));
                e.0 += n;
                e.1 = e.1.max(last);
            }
        }
        merged
            .into_iter()
            .map(
                |((deployment_id, minute), (requests, last))| pb::DeploymentTraffic {
                    deployment_id: deployment_id.to_string(),
                    minute,
                    requests,
                    last_request_at: last,
                },
            )
            .collect()
    }

    fn put_back(&self, batch: Vec<pb::DeploymentTraffic>) {
        let mut counts = self.shards[0].lock().unwrap_or_else(|e| e.into_inner());
        for t in batch {
            if counts.len() >= MAX_ENTRIES {
                break;
            }
            let e = counts
                .entry((t.deployment_id.into(), t.minute))
                .or_insert((0, 0));
            e.0 += t.requests;
            e.1 = e.1.max(t.last_request_at);
        }
    }

    /// Reports every `every` until `shutdown`, then once more.
    pub async fn report_loop(
        &self,
        control: Control,
        every: Duration,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        loop {
            let stop = tokio::select! {
                () = &mut shutdown => true,
                () = tokio::time::sleep(every) => false,
            };
            self.flush(&control).await;
            if stop {
                return;
            }
        }
    }

    /// Sends what is pending (in chunks the control plane accepts).
    pub async fn flush(&self, control: &Control) {
        let batch = self.take();
        for chunk in batch.chunks(5_000) {
            if let Err(e) = control.report_traffic(chunk.to_vec()).await {
                tracing::warn!(error = %e.message(), "traffic report failed; kept for the next one");
                self.put_back(chunk.to_vec());
            }
        }
    }
}
