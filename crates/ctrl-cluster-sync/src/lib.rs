//! ctrl-cluster-sync: the `ctrl.v1.ClusterService` the regional agents
//! (krane) call. Agents only call out: they register with `Heartbeat`, follow
//! their region's desired state with `Watch` (and `SyncDesiredState` for full
//! snapshots, `GetDesiredDeploymentState` for point lookups), report what
//! runs, and answer log requests (`WatchLogRequests`, `PushLogs`); a report that makes a waiting deployment ready wakes its Deploy
//! workflow through Restate's ingress.
//!
//! - [`agents`]: the agents' credentials, each bound to the cluster or
//!   region it serves; every RPC acts only as its caller.
//! - [`feed`]: one change feed per region — a single database poll loop
//!   fanned out to every agent of the region, with catch-up from the database
//!   for agents that are behind.
//! - [`service`]: the RPCs over [`ClusterSync`] state, and the router that
//!   serves them over Connect and gRPC (standalone, or mounted in ctrl-api).
//! - [`logs`]: instance logs over the agents' own connections — log
//!   requests handed to krane, the lines it pushes back recorded for the
//!   reader (no agent listens on a port).
//! - [`edge`]: the edges' `ctrl.v1.EdgeService` (frontline): the routing
//!   table as a snapshot and an ordered change stream, wake on request,
//!   traffic reports — with the edges' own tokens.
//! - [`convert`]: database rows → wire messages.
//! - [`notify`]: the readiness notification to the Deploy workflow.
//! - [`metrics`]: open streams, feed polls, notifications, snapshots.
//! - [`config`], [`server`]: the standalone binary.

pub mod agents;
pub mod config;
pub mod convert;
pub mod edge;
pub mod feed;
pub mod logs;
pub mod metrics;
pub mod notify;
pub mod server;
pub mod service;

pub use service::{ClusterSync, Settings};
