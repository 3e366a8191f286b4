//! Request counts per deployment and minute, reported in batches (never a
//! write per request); a report that fails is merged into the next one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ctrl_proto::ctrl::v1 as pb;

use crate::clock;
use crate::control::Control;
use crate::table::Map;

/// Entries kept while the control plane is away (then the oldest go).
const MAX_ENTRIES: usize = 100_000;

/// The counts not yet reported, one shard per worker thread (a request
/// only ever locks its own worker's shard).
#[derive(Debug)]
pub struct Traffic {
    shards: Vec<Mutex<Shard>>,
}

impl Default for Traffic {
    fn default() -> Self {
        Self::with_workers(1)
    }
}

/// One worker's counts: by deployment (looked up by its id as the table
/// holds it, without a copy), then by minute, oldest first.
#[derive(Debug, Default)]
struct Shard {
    by_deployment: Map<Arc<str>, Vec<Count>>,
    entries: usize,
}

/// Requests of one deployment in one minute (its start, unix ms), and
/// the last one's time.
#[derive(Debug, Clone, Copy)]
struct Count {
    minute: i64,
    requests: u64,
    last: i64,
}

impl Shard {
    /// Adds `requests` at `minute`, the last at `last`.
    fn add(&mut self, deployment_id: &Arc<str>, minute: i64, requests: u64, last: i64) {
        if let Some(counts) = self.by_deployment.get_mut(&**deployment_id)
            && let Some(c) = counts.iter_mut().rev().find(|c| c.minute == minute)
        {
            c.requests += requests;
            c.last = c.last.max(last);
            return;
        }
        if self.entries >= MAX_ENTRIES {
            self.drop_oldest();
        }
        self.by_deployment
            .entry(deployment_id.clone())
            .or_default()
            .push(Count {
                minute,
                requests,
                last,
            });
        self.entries += 1;
    }

    fn drop_oldest(&mut self) {
        let oldest = self
            .by_deployment
            .iter()
            .filter_map(|(id, counts)| {
                let (i, c) = counts.iter().enumerate().min_by_key(|(_, c)| c.minute)?;
                Some((c.minute, id.clone(), i))
            })
            .min_by_key(|(minute, _, _)| *minute);
        if let Some((_, id, i)) = oldest
            && let Some(counts) = self.by_deployment.get_mut(&id)
        {
            counts.remove(i);
            self.entries -= 1;
            if counts.is_empty() {
                self.by_deployment.remove(&id);
            }
        }
    }
}

impl Traffic {
    /// Counts for `workers` worker threads.
    pub fn with_workers(workers: usize) -> Self {
        Self {
            shards: (0..workers.max(1)).map(|_| Mutex::default()).collect(),
        }
    }

    /// Counts one request `worker` served for `deployment_id` now (to
    /// within the coarse clock's second).
    pub fn record(&self, worker: usize, deployment_id: &Arc<str>) {
        let now = clock::coarse_wall_ms();
        let minute = now - now.rem_euclid(60_000);
        let shard = &self.shards[worker % self.shards.len()];
        let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
        shard.add(deployment_id, minute, 1, now);
    }

    fn take(&self) -> Vec<pb::DeploymentTraffic> {
        let mut merged: HashMap<(Arc<str>, i64), (u64, i64)> = HashMap::new();
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            let taken = std::mem::take(&mut *shard);
            for (id, counts) in taken.by_deployment {
                for c in counts {
                    let e = merged.entry((id.clone(), c.minute)).or_insert((0, 0));
                    e.0 += c.requests;
                    e.1 = e.1.max(c.last);
                }
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
        let mut shard = self.shards[0].lock().unwrap_or_else(|e| e.into_inner());
        for t in batch {
            if shard.entries >= MAX_ENTRIES {
                break;
            }
            let id: Arc<str> = t.deployment_id.into();
            shard.add(&id, t.minute, t.requests, t.last_request_at);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn requests_of(batch: &[pb::DeploymentTraffic], id: &str) -> u64 {
        batch
            .iter()
            .filter(|t| t.deployment_id == id)
            .map(|t| t.requests)
            .sum()
    }

    #[test]
    fn counts_merge_across_workers_and_a_failed_report_comes_back() {
        let t = Traffic::with_workers(2);
        let (a, b): (Arc<str>, Arc<str>) = ("d_a".into(), "d_b".into());
        t.record(0, &a);
        t.record(1, &a);
        t.record(1, &b);
        let batch = t.take();
        assert_eq!(requests_of(&batch, "d_a"), 2);
        assert_eq!(requests_of(&batch, "d_b"), 1);
        assert!(batch.iter().all(|c| c.last_request_at >= c.minute));
        assert!(t.take().is_empty(), "taken once");
        t.put_back(batch);
        t.record(1, &a);
        let again = t.take();
        assert_eq!(requests_of(&again, "d_a"), 3);
        assert_eq!(requests_of(&again, "d_b"), 1);
    }

    #[test]
    fn a_full_shard_drops_its_oldest_minute() {
        let mut s = Shard::default();
        let (a, b): (Arc<str>, Arc<str>) = ("d_a".into(), "d_b".into());
        s.add(&a, 120_000, 1, 120_001);
        s.add(&a, 60_000, 4, 60_001);
        s.add(&b, 180_000, 2, 180_001);
        s.add(&a, 120_000, 1, 120_002);
        assert_eq!(s.entries, 3);
        s.drop_oldest();
        assert_eq!(s.entries, 2);
        let a_minutes: Vec<_> = s.by_deployment[&a]
            .iter()
            .map(|c| (c.minute, c.requests))
            .collect();
        assert_eq!(a_minutes, [(120_000, 2)]);
        assert_eq!(s.by_deployment[&b][0].requests, 2);
    }
}
