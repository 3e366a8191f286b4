//! Readiness checks that cost the same however often they are asked: one
//! check at a time, its answer reused for a short while. A flood of
//! `/health/ready` requests then costs one database ping (and one Restate
//! call) per `ttl`, not one per request.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A check's answer, reused for `ttl`; concurrent askers share one check.
#[derive(Debug)]
pub struct CachedCheck<T> {
    ttl: Duration,
    last: tokio::sync::Mutex<Option<(Instant, T)>>,
    runs: AtomicU64,
}

impl<T: Clone> CachedCheck<T> {
    /// Answers are reused for `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            last: tokio::sync::Mutex::new(None),
            runs: AtomicU64::new(0),
        }
    }

    /// The last answer if it is younger than `ttl`, else `check`'s (run
    /// once, while other askers wait for it).
    pub async fn get<F: Future<Output = T>>(&self, check: impl FnOnce() -> F) -> T {
        let mut last = self.last.lock().await;
        if let Some((at, answer)) = last.as_ref()
            && at.elapsed() < self.ttl
        {
            return answer.clone();
        }
        self.runs.fetch_add(1, Ordering::Relaxed);
        let answer = check().await;
        *last = Some((Instant::now(), answer.clone()));
        answer
    }

    /// How many times the check ran (for metrics).
    pub fn runs(&self) -> u64 {
        self.runs.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn concurrent_askers_share_one_check_until_it_expires() {
        let cached = Arc::new(CachedCheck::new(Duration::from_millis(200)));
        let asks = (0..50).map(|_| {
            let cached = cached.clone();
            tokio::spawn(async move {
                cached
                    .get(|| async {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        "ready"
                    })
                    .await
            })
        });
        for ask in asks {
            assert_eq!(ask.await.unwrap(), "ready");
        }
        assert_eq!(cached.runs(), 1);
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(cached.get(|| async { "not ready" }).await, "not ready");
        assert_eq!(cached.runs(), 2);
    }
}
