//! krane and ctrl-cluster-sync together: the sync protocol against a real
//! MariaDB (`sync`), and the whole loop on real processes and podman
//! (`e2e`) or the fake Kubernetes API (`kubernetes`).

mod e2e;
mod kubernetes;
mod support;
mod sync;
