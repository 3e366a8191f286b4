//! The worker's metrics (`ctrl_worker_…`; see [`ctrl_runtime::metrics`]),
//! served at `/metrics` on the health listener:
//!
//! - `handler_attempts_total{service,handler}` and
//!   `handler_attempt_duration_seconds{service,handler}`: every invocation
//!   attempt Restate sends (`/invoke/{service}/{handler}`) and how long its
//!   stream stayed open (until the handler ended, suspended or failed; a
//!   retry is another attempt), and `handler_attempts_in_flight`;
//! - `deploys_total{outcome}` (`ready`, `failed`) and
//!   `deploy_step_duration_seconds{step}`: each pipeline run as it ends, and
//!   the time each of its phases took (from its `deployment_steps` rows).
//!
//! Restate's own metrics cover invocation outcomes and retries from the
//! server's side.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use hyper::body::{Body, Frame, SizeHint};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

use ctrl_runtime::metrics::MetricsRegistry;

/// A Restate handler.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandlerLabels {
    /// The Restate service or object, e.g. `Deploy`.
    pub service: String,
    /// The handler, e.g. `Deploy`.
    pub handler: String,
}

/// How a pipeline run ended.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `ready` or `failed`.
    pub outcome: &'static str,
}

/// A pipeline phase.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    /// `queued`, `building`, `deploying`, ...
    pub step: &'static str,
}

/// The worker's metrics; cheap to clone (clones share the series).
#[derive(Debug, Clone)]
pub struct WorkerMetrics {
    registry: MetricsRegistry,
    attempts: Family<HandlerLabels, Counter>,
    attempt_duration: Family<HandlerLabels, Histogram>,
    in_flight: Gauge,
    deploys: Family<OutcomeLabels, Counter>,
    step_duration: Family<StepLabels, Histogram>,
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        let registry = MetricsRegistry::new("worker");
        let buckets = || Histogram::new(exponential_buckets(0.005, 2.0, 16));
        let m = Self {
            registry,
            attempts: Family::default(),
            attempt_duration: Family::new_with_constructor(buckets),
            in_flight: Gauge::default(),
            deploys: Family::default(),
            step_duration: Family::new_with_constructor(buckets),
        };
        let r = &m.registry;
        r.register(
            "handler_attempts",
            "Invocation attempts Restate sent, by service and handler",
            m.attempts.clone(),
        );
        r.register(
            "handler_attempt_duration_seconds",
            "How long each attempt's stream stayed open, by service and handler",
            m.attempt_duration.clone(),
        );
        r.register(
            "handler_attempts_in_flight",
            "Attempts running now",
            m.in_flight.clone(),
        );
        r.register(
            "deploys",
            "Pipeline runs that ended, by outcome (ready, failed)",
            m.deploys.clone(),
        );
        r.register(
            "deploy_step_duration_seconds",
            "Time each phase of an ended pipeline run took, by step",
            m.step_duration.clone(),
        );
        m
    }
}

impl WorkerMetrics {
    /// `GET /metrics`.
    pub fn router(&self) -> axum::Router {
        self.registry.router()
    }

    /// The exposition text (for tests).
    pub fn render(&self) -> String {
        self.registry.render()
    }

    /// Counts an attempt of the handler at `path` (`/invoke/{service}/{handler}`;
    /// other paths, such as discovery, are not attempts) until the returned
    /// guard is dropped.
    pub fn attempt(&self, path: &str) -> Option<AttemptGuard> {
        let mut parts = path.trim_start_matches('/').split('/');
        let (Some("invoke"), Some(service), Some(handler), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let labels = HandlerLabels {
            service: service.to_owned(),
            handler: handler.to_owned(),
        };
        self.attempts.get_or_create(&labels).inc();
        self.in_flight.inc();
        Some(AttemptGuard {
            duration: self.attempt_duration.get_or_create(&labels).clone(),
            in_flight: self.in_flight.clone(),
            started: Instant::now(),
        })
    }

    /// Records an ended pipeline run and how long each of its steps took.
    pub fn deploy_ended(&self, ready: bool, steps: &[ctrl_db::deployment::Step]) {
        let outcome = if ready { "ready" } else { "failed" };
        self.deploys.get_or_create(&OutcomeLabels { outcome }).inc();
        for s in steps {
            if let Some(ended) = s.ended_at {
                let seconds = (ended - s.started_at).max(0) as f64 / 1000.0;
                self.step_duration
                    .get_or_create(&StepLabels {
                        step: s.step.as_str(),
                    })
                    .observe(seconds);
            }
        }
    }
}

/// Observes an attempt's duration when its response stream ends.
#[derive(Debug)]
pub struct AttemptGuard {
    duration: Histogram,
    in_flight: Gauge,
    started: Instant,
}

impl Drop for AttemptGuard {
    fn drop(&mut self) {
        self.duration.observe(self.started.elapsed().as_secs_f64());
        self.in_flight.dec();
    }
}

/// A response body that holds its attempt's guard until it ends.
#[derive(Debug)]
pub struct MeasuredBody<B> {
    inner: Pin<Box<B>>,
    guard: Option<AttemptGuard>,
}

impl<B> MeasuredBody<B> {
    /// `inner`, measured by `guard`.
    pub fn new(inner: B, guard: Option<AttemptGuard>) -> Self {
        Self {
            inner: Box::pin(inner),
            guard,
        }
    }
}

impl<B: Body> Body for MeasuredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = self.inner.as_mut().poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.guard.take();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_invocations_are_attempts_and_they_are_timed() {
        let m = WorkerMetrics::default();
        assert!(m.attempt("/discover").is_none());
        assert!(m.attempt("/invoke/Deploy").is_none());
        let guard = m.attempt("/invoke/Deploy/Deploy");
        assert!(
            m.render()
                .contains("ctrl_worker_handler_attempts_in_flight 1")
        );
        drop(guard);
        let text = m.render();
        assert!(
            text.contains(
                "ctrl_worker_handler_attempts_total{service=\"Deploy\",handler=\"Deploy\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("ctrl_worker_handler_attempts_in_flight 0"),
            "{text}"
        );
        assert!(
            text.contains("ctrl_worker_handler_attempt_duration_seconds_count{service=\"Deploy\",handler=\"Deploy\"} 1"),
            "{text}"
        );
    }
}
