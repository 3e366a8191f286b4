//! What every ctrl binary does at startup.
//!
//! Today: [`config`] — one TOML file per service, `${VAR}` expanded from the
//! environment, environment overrides, defaults, and validation whose errors
//! name the field, all before any port opens — and [`sections`], the
//! `[database]` and `[log]` sections every service shares (with logging
//! initialisation) — [`auth`], the accepted bearer tokens, [`health`],
//! readiness checks cached against floods, [`metrics`], one Prometheus
//! registry per service with one naming scheme, [`net`], the
//! `TCP_NODELAY` listener every server uses, [`otlp`], span export to an
//! OpenTelemetry collector, [`now_ms`] and [`shutdown_signal`].

pub mod auth;
pub mod config;
pub mod health;
pub mod metrics;
pub mod net;
pub mod otlp;
pub mod sections;

/// The wall clock in unix milliseconds (0 before 1970, saturating after
/// the year 292 million), the one timestamp form every table stores.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Resolves on SIGINT or SIGTERM: when every service starts draining.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
