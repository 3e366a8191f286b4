//! The public API server of ctrl: every `ctrl.v1` service over Connect
//! (JSON and binary) and gRPC on one port.
//!
//! [`services`] holds the RPC implementations as plain functions over
//! [`state::AppState`] — validation with ctrl-core, persistence with ctrl-db —
//! returning [`error::ApiError`], which maps to Connect/gRPC codes in one place.
//! [`agent_logs`] reads instance output from the regions' agents through the log relay;
//! [`webhook`] takes the GitHub App's deliveries (a plain HTTP route);
//! [`watch`] shares one change feed among a deployment's watchers, and
//! [`limits`] keeps one caller from starving the others.

pub mod agent_logs;
pub mod config;
pub mod error;
pub mod limits;
pub mod observe;
pub mod paging;
pub mod restate;
pub mod rpc;
pub mod server;
pub mod services;
pub mod state;
pub mod validate;
pub mod watch;
pub mod webhook;
