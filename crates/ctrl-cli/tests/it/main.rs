//! The `ctrl` binary against a real stack (MariaDB, restate-server,
//! ctrl-worker, ctrl-api with the ClusterService, krane on podman,
//! pebble-challtestsrv as the DNS custom domains are checked with), and on
//! its own for the errors it reports before reaching any server; deploys
//! from a local directory against a scripted API and object store;
//! connected repositories and the approval of a held deployment.

mod deploy;
mod domains;
mod from_source;
mod logs;
mod offline;
mod repos;
mod source;
mod support;
