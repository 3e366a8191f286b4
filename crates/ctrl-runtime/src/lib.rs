//! What every ctrl binary does at startup.
//!
//! Today: [`config`] — one TOML file per service, `${VAR}` expanded from the
//! environment, environment overrides, defaults, and validation whose errors
//! name the field, all before any port opens — and [`sections`], the
//! `[database]` and `[log]` sections every service shares (with logging
//! initialisation) — [`auth`], the accepted bearer tokens, [`health`],
//! readiness checks cached against floods, [`net`], the
//! `TCP_NODELAY` listener every server uses, and [`shutdown_signal`].

pub mod auth;
pub mod config;
pub mod health;
pub mod net;
pub mod sections;

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
