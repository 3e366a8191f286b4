//! krane: the regional agent. It only calls out — to ctrl-cluster-sync — and
//! applies its region's desired state through a `ctrl-provider` backend.
//!
//! - [`stream`]: registration (heartbeat), the full snapshot at start and
//!   periodically, and `Watch` with reconnect and jittered backoff, handing
//!   every change to a [`stream::DesiredSink`].
//! - [`agent`]: the sink krane runs — the desired state per deployment,
//!   applied per deployment strictly one at a time (always the newest known
//!   state, so never out of order), different deployments in parallel up to
//!   a bound; periodic reconcile (drift, orphans); instance reports and
//!   events sent only when something changed.
//! - [`secrets`]: opens sealed environment variables just before a
//!   container starts.
//! - [`control`]: the ClusterService client (bearer token, timeouts).
//! - [`logs`]: answers `ctrl logs` over the same outbound connection — log
//!   requests in, batches of lines pushed back; krane listens on no port
//!   but its health endpoint.
//! - [`config`], [`http`] (health and metrics), [`run`]: the process.

pub mod agent;
pub mod config;
pub mod control;
pub mod http;
pub mod logs;
pub mod metrics;
pub mod run;
pub mod secrets;
pub mod stream;
