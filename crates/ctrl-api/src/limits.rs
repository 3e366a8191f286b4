//! Limits on the public API, so one caller cannot starve the others:
//! a request rate per API token (GCRA through `governor`), one shared rate
//! for requests without a valid token, and a cap on each token's open
//! streams. A refused request is `resource_exhausted` with how long to
//! wait; the limits are `[limits]` in the config.

// Refusals are connectrpc-axum's wire error, as the handlers answer.
#![allow(clippy::result_large_err)]

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use connectrpc_axum::ConnectError;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::Deserialize;

/// The `[limits]` section.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Sustained requests per second for each API token.
    pub requests_per_second: u32,
    /// Requests a token may make at once above the sustained rate.
    pub burst: u32,
    /// Requests per second without a valid token, all callers together
    /// (beyond it, even checking the token is skipped).
    pub unauthenticated_per_second: u32,
    /// Open streams (WatchDeployment, StreamDeploymentLogs,
    /// StreamBuildLogs) per token.
    pub streams_per_token: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            requests_per_second: 100,
            burst: 200,
            unauthenticated_per_second: 50,
            streams_per_token: 500,
        }
    }
}

impl LimitsConfig {
    /// Every limit is at least 1.
    pub fn validate(&self, v: &mut ctrl_runtime::config::Validator) {
        for (field, value) in [
            ("limits.requests_per_second", self.requests_per_second),
            ("limits.burst", self.burst),
            (
                "limits.unauthenticated_per_second",
                self.unauthenticated_per_second,
            ),
        ] {
            v.check(value >= 1, field, "must be at least 1");
        }
        v.check(
            self.streams_per_token >= 1,
            "limits.streams_per_token",
            "must be at least 1",
        );
    }
}

/// The limiters of one API process.
pub struct Limits {
    per_token: DefaultKeyedRateLimiter<usize>,
    anonymous: DefaultDirectRateLimiter,
    streams: Arc<Vec<AtomicUsize>>,
    max_streams: usize,
    config: LimitsConfig,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn at_least_one(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

impl Limits {
    /// Limits for `tokens` API tokens.
    pub fn new(config: &LimitsConfig, tokens: usize) -> Self {
        let quota = Quota::per_second(at_least_one(config.requests_per_second))
            .allow_burst(at_least_one(config.burst));
        let anonymous = Quota::per_second(at_least_one(config.unauthenticated_per_second));
        Self {
            per_token: RateLimiter::keyed(quota),
            anonymous: RateLimiter::direct(anonymous),
            streams: Arc::new((0..tokens).map(|_| AtomicUsize::new(0)).collect()),
            max_streams: config.streams_per_token.max(1),
            config: *config,
        }
    }

    /// A request with token `token` (its index): refused when the token
    /// is over its rate.
    pub fn request(&self, token: usize) -> Result<(), ConnectError> {
        self.per_token.check_key(&token).map_err(|wait| {
            exhausted(
                &format!(
                    "this token's rate limit ({} requests per second, bursts of {}) is exceeded",
                    self.config.requests_per_second, self.config.burst
                ),
                wait.wait_time_from(DefaultClock::default().now()),
            )
        })
    }

    /// A request without a valid token: refused when such requests are
    /// over their shared rate.
    pub fn unauthenticated(&self) -> Result<(), ConnectError> {
        self.anonymous.check().map_err(|wait| {
            exhausted(
                "too many requests without a valid token",
                wait.wait_time_from(DefaultClock::default().now()),
            )
        })
    }

    /// A stream opened with `token`: held until the stream ends; refused
    /// when the token has its maximum open.
    pub fn open_stream(&self, token: usize) -> Result<StreamPermit, ConnectError> {
        let Some(count) = self.streams.get(token) else {
            return Err(ConnectError::new_unauthenticated("unknown token"));
        };
        let max = self.max_streams;
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .map_err(|_| {
                ConnectError::new_resource_exhausted(format!(
                    "this token has {max} streams open, its limit; close one first"
                ))
            })?;
        Ok(StreamPermit {
            streams: self.streams.clone(),
            token,
        })
    }

    /// Streams open per token (for metrics and tests).
    pub fn open_streams(&self, token: usize) -> usize {
        self.streams
            .get(token)
            .map_or(0, |c| c.load(Ordering::Acquire))
    }
}

fn exhausted(what: &str, wait: Duration) -> ConnectError {
    let millis = wait.as_millis().max(1);
    ConnectError::new_resource_exhausted(format!("{what}; retry in {millis} ms"))
}

/// One open stream of a token; dropping it frees the slot.
#[derive(Debug)]
pub struct StreamPermit {
    streams: Arc<Vec<AtomicUsize>>,
    token: usize,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        if let Some(count) = self.streams.get(self.token) {
            count.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(config: LimitsConfig) -> Limits {
        Limits::new(&config, 2)
    }

    #[test]
    fn a_token_over_its_rate_waits_and_others_do_not() {
        let l = limits(LimitsConfig {
            requests_per_second: 1,
            burst: 3,
            ..LimitsConfig::default()
        });
        for _ in 0..3 {
            l.request(0).unwrap();
        }
        let refused = l.request(0).unwrap_err();
        assert_eq!(refused.code(), connectrpc_axum::Code::ResourceExhausted);
        let message = refused.message().unwrap_or_default();
        assert!(message.contains("retry in"), "{message}");
        l.request(1).unwrap();
    }

    #[test]
    fn streams_are_capped_per_token_and_freed_on_drop() {
        let l = limits(LimitsConfig {
            streams_per_token: 2,
            ..LimitsConfig::default()
        });
        let a = l.open_stream(0).unwrap();
        let _b = l.open_stream(0).unwrap();
        assert!(l.open_stream(0).is_err());
        let _other = l.open_stream(1).unwrap();
        drop(a);
        assert_eq!(l.open_streams(0), 1);
        let _c = l.open_stream(0).unwrap();
        assert!(l.open_stream(7).is_err(), "no such token");
    }

    #[test]
    fn unauthenticated_requests_share_one_rate() {
        let l = limits(LimitsConfig {
            unauthenticated_per_second: 2,
            ..LimitsConfig::default()
        });
        let allowed = (0..10).filter(|_| l.unauthenticated().is_ok()).count();
        assert_eq!(allowed, 2);
    }
}
