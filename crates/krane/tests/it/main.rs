//! krane and ctrl-cluster-sync together: the sync protocol against a real
//! MariaDB (`sync`), and the whole loop on real processes and podman
//! (`e2e`) or the fake Kubernetes API (`kubernetes`); the trust boundaries
//! attacked from outside (`security`).

mod e2e;
mod kubernetes;
mod security;
mod support;
mod sync;
