//! frontline: the regional edge. It serves every deployment's hostnames
//! from an in-memory routing table that the control plane pushes (no
//! database on the request path), and keeps serving the last table it had
//! while the control plane is away.
//!
//! - [`table`]: the table (hosts → deployments → this region's backends,
//!   certificates), swapped whole on every change.
//! - [`sync`]: follows `ctrl.v1.EdgeService.WatchRoutes` (snapshot, then
//!   ordered changes) over [`control`], the control-plane client.
//! - [`proxy`]: the request path (routing, redirects, wake, balancing,
//!   forwarding, WebSockets), with the server side of the HTTP/1.1 fast
//!   path for plain requests (hyper serves the rest); [`headers`] (what
//!   crosses the edge in headers), [`upstream`] (each worker's HTTP/1.1
//!   connections to instances, and the fast path's client side over
//!   [`h1`]), [`wake`] and [`traffic`] serve it.
//! - [`tls`]: SNI certificates from the table, keys opened by the vault.
//! - [`server`]: listeners and drain; [`metrics`], [`config`], [`clock`].

pub mod clock;
pub mod config;
pub mod control;
pub mod h1;
pub mod headers;
pub mod metrics;
pub mod proxy;
pub mod server;
pub mod sync;
pub mod table;
pub mod tls;
pub mod traffic;
pub mod upstream;
pub mod wake;
