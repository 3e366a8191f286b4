//! Real dependencies for tests, benchmarks and the local dev stack.
//!
//! `ctrl-testkit` starts the servers ctrl depends on — [`RestateServer`],
//! [`MariaDb`] (and fresh databases in it via [`test_database`]),
//! [`Podman`]'s Docker-compatible API, and in [`acme`] Let's Encrypt's test
//! CA [`Pebble`], the DNS server [`ChallTestSrv`] whose records a test
//! changes over HTTP, and [`Moto`] for AWS's Route53 API; [`S3Server`], a
//! real S3 API (s3s-fs) that checks request signatures; and [`Registry`], a
//! container registry (Debian's `docker-registry`) that podman pushes to over
//! plain HTTP — as child processes on loopback ports with their own
//! directories, waits until they
//! are ready, and guarantees they go away: handles kill their process group
//! on drop, the kernel kills them if the owner dies (panic, timeout,
//! SIGKILL), and stale leftovers of crashed runs are reaped through pid files
//! (see [`process`] and [`reaper`]). Startup failures carry the dependency's
//! log tail. [`ca::LocalCa`] is a local certificate authority for TLS in the
//! dev stack and the edge's tests. ctrl's own services, when a test runs them
//! as tasks, are stopped the same way by an [`InProcess`] set;
//! [`wait_until_ok`] waits for their health endpoints.
//! [`OtlpCollector`] receives the spans a service exports over OTLP/gRPC.
//! [`kube_schema::validate`] checks Kubernetes objects against Kubernetes'
//! own schemas (kubernetes-validate), and [`paths::helm_bin`] is a Helm CLI
//! (`ctrl-helm`: `helm template` and `helm show` on Helm's own engine).
//!
//! It does not install anything: `cargo xtask deps` does, into the locations
//! named in [`paths`]. Nothing here is a mock; each handle is the real server
//! — except [`github::FakeGitHub`], an in-process stand-in for GitHub's REST
//! API (which cannot run locally), [`depot::FakeDepot`], one for Depot's
//! API and the BuildKit machine it hands out (which builds for real on
//! [`Podman`]), and [`kube::FakeKube`], a stateful Kubernetes API server
//! (with its controllers and a fake node) for the Kubernetes backend and
//! krane, which no test machine could run for real.

pub mod acme;
pub mod ca;
pub mod depot;
pub mod github;
pub mod images;
pub mod in_process;
pub mod kube;
pub mod kube_schema;
pub mod mariadb;
pub mod otlp;
pub mod paths;
pub mod podman;
pub mod process;
pub mod reaper;
pub mod registry;
pub mod restate;
pub mod s3;

mod clock;
mod error;

use std::net::{Ipv4Addr, TcpListener};
use std::time::Duration;

pub use acme::{ChallTestSrv, Moto, Pebble, PebbleOptions};
pub use depot::{FakeDepot, FakeDepotOptions};
pub use error::Error;
pub use in_process::InProcess;
pub use kube::FakeKube;
pub use mariadb::{MariaDb, TestDatabase, test_database};
pub use otlp::OtlpCollector;
pub use podman::{Podman, StorageDriver};
pub use registry::Registry;
pub use restate::{RestatePorts, RestateServer};
pub use s3::S3Server;

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// Another process may take it before it is used; the starters retry with a
/// new port when a bind fails for that reason.
pub fn free_port() -> Result<u16, Error> {
    free_ports::<1>().map(|[port]| port)
}

/// `N` distinct TCP ports on 127.0.0.1 that were free a moment ago. Unlike
/// `N` calls of [`free_port`], which may return the same port twice, every
/// port is held until all are chosen.
pub fn free_ports<const N: usize>() -> Result<[u16; N], Error> {
    let context = "find free ports on 127.0.0.1";
    // Every listener stays bound until the end, so no port comes twice.
    let mut held = Vec::new();
    let mut ports = [0; N];
    let mut found = 0;
    while found < N {
        if held.len() >= N + MAX_HIJACKED_PORTS {
            return Err(Error::request(
                context,
                format!(
                    "{MAX_HIJACKED_PORTS} ports in a row are redirected elsewhere (stale container port rules?)"
                ),
            ));
        }
        let listener =
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| Error::io(context, e))?;
        let port = listener
            .local_addr()
            .map_err(|e| Error::io(context, e))?
            .port();
        if reaches(&listener) {
            ports[found] = port;
            found += 1;
        }
        held.push(listener);
    }
    Ok(ports)
}

/// How many redirected ports [`free_ports`] skips before it gives up.
const MAX_HIJACKED_PORTS: usize = 20;

/// A listener on a free loopback port that is reached (see
/// [`free_ports`]), non-blocking for tokio.
pub(crate) fn loopback_listener(context: &str) -> Result<TcpListener, Error> {
    let mut tries = 0;
    let listener = loop {
        let listener =
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| Error::io(context, e))?;
        if reaches(&listener) {
            break listener;
        }
        tries += 1;
        if tries > 20 {
            return Err(Error::request(
                context,
                "no loopback port reaches its listener",
            ));
        }
    };
    listener
        .set_nonblocking(true)
        .map_err(|e| Error::io(context, e))?;
    Ok(listener)
}

/// Whether a connection to the listener's port arrives at the listener.
/// A port can be free to bind yet redirected: a NAT rule left by a
/// container whose cleanup never ran (podman's rootful port forwarding)
/// sends loopback traffic for it to a dead address, so a server bound
/// there never sees its clients.
fn reaches(listener: &TcpListener) -> bool {
    let Ok(addr) = listener.local_addr() else {
        return false;
    };
    let Ok(client) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let Ok(me) = client.local_addr() else {
        return false;
    };
    if listener.set_nonblocking(true).is_err() {
        return false;
    }
    let deadline = std::time::Instant::now() + Duration::from_millis(500);
    loop {
        match listener.accept() {
            Ok((_, peer)) if peer == me => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if std::time::Instant::now() > deadline {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(_) => return false,
        }
    }
}

/// An HTTP client for talking to local dependencies: short timeouts, and no
/// proxy (an `HTTP_PROXY` in the environment must not catch loopback calls).
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(30))
        .build()
        .expect("build an HTTP client")
}

/// Waits until `url` answers a 2xx status (e.g. a `/health/ready`), polling
/// every 100 ms for at most `limit`.
pub async fn wait_until_ok(url: &str, limit: Duration) -> Result<(), Error> {
    let client = http_client();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let answer = client
            .get(url)
            .timeout(Duration::from_millis(500))
            .send()
            .await;
        match answer {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) if tokio::time::Instant::now() > deadline => {
                return Err(Error::request(
                    format!("waiting for {url}"),
                    format!("still {} after {limit:?}", r.status()),
                ));
            }
            Err(e) if tokio::time::Instant::now() > deadline => {
                return Err(Error::request(
                    format!("waiting for {url}"),
                    format!("no answer after {limit:?}: {e}"),
                ));
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_listener_is_reached_and_ports_are_distinct() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        assert!(reaches(&listener));
        let ports = free_ports::<8>().unwrap();
        let distinct: std::collections::BTreeSet<u16> = ports.into_iter().collect();
        assert_eq!(distinct.len(), 8);
    }
}
