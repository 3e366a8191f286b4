//! The `ctrl` binary against a real stack (MariaDB, restate-server,
//! ctrl-worker, ctrl-api with the ClusterService, krane on podman,
//! pebble-challtestsrv as the DNS custom domains are checked with), and on
//! its own for the errors it reports before reaching any server.

mod deploy;
mod domains;
mod logs;
mod offline;
mod support;
