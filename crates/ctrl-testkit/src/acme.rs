//! A real ACME CA, scriptable DNS and AWS's Route53 API on loopback ports.
//!
//! - [`ChallTestSrv`] is `pebble-challtestsrv` as a DNS server whose records
//!   change over HTTP during a test (TXT for DNS-01 and domain verification,
//!   CNAME, A, SERVFAIL). Every name it has no A record for resolves to
//!   127.0.0.1; a name without TXT records answers NOERROR with no answers.
//! - [`Pebble`] is Let's Encrypt's test CA, resolving names through a
//!   [`ChallTestSrv`] and validating HTTP-01 on a port the test serves. Its
//!   ACME listener uses a certificate from a CA of its own
//!   ([`Pebble::listener_ca_pem_path`]); the certificates it issues chain to
//!   a root that is new at every start ([`Pebble::root_pem`]).
//! - [`Moto`] is moto's server (Route53, S3 and the other AWS APIs, no
//!   signature checks) from the virtualenv `cargo xtask deps` installs.
//!
//! Like the other handles, each runs as a supervised child with its own
//! scratch directory and is killed on drop (see [`crate::process`]).

use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::ca::{LocalCa, client_config};
use crate::process::{Supervised, wait_ready};
use crate::{Error, free_port, free_ports, http_client, paths, reaper};

/// How long each server may take to become ready.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// How many times a start is tried when a chosen port was taken meanwhile.
const START_ATTEMPTS: u32 = 3;

/// How long one request to a management API may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one readiness probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// Whether a failed start lost a race for its ports and is worth another try
/// (says so on stderr).
pub(crate) fn retry_on_port_clash(name: &str, attempt: u32, error: &Error) -> bool {
    let clash = matches!(error, Error::Startup { tail, .. }
        if tail.to_ascii_lowercase().contains("address already in use"));
    let retry = clash && attempt < START_ATTEMPTS;
    if retry {
        eprintln!(
            "{name}: attempt {attempt} lost a port to another process, starting again: {error}"
        );
    }
    retry
}

/// A log file for a new attempt: the previous attempt's is removed, so its
/// "address already in use" cannot be taken for this one's.
pub(crate) fn fresh_log(dir: &Path, name: &str) -> Result<PathBuf, Error> {
    let log = dir.join(name);
    match fs::remove_file(&log) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(Error::io(format!("remove {}", log.display()), e))
        }
        _ => Ok(log),
    }
}

/// A name with the trailing dot challtestsrv keys its records by.
fn fqdn(host: &str) -> String {
    if host.ends_with('.') {
        host.to_owned()
    } else {
        format!("{host}.")
    }
}

/// Whether `url` answers HTTP at all (any status).
async fn answers(client: &reqwest::Client, url: &str) -> bool {
    client.get(url).timeout(PROBE_TIMEOUT).send().await.is_ok()
}

/// A DNS query for `ready.testkit. A` (id 0x7e57, recursion desired).
const READY_QUERY: &[u8] =
    b"\x7e\x57\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x05ready\x07testkit\x00\x00\x01\x00\x01";

/// Whether a DNS server answers a query over UDP at `addr`.
async fn dns_answers(addr: SocketAddr) -> bool {
    let Ok(socket) = tokio::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await else {
        return false;
    };
    if socket.send_to(READY_QUERY, addr).await.is_err() {
        return false;
    }
    let mut buf = [0u8; 512];
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, socket.recv_from(&mut buf)).await,
        Ok(Ok((n, from))) if from == addr && n >= 12 && buf[..2] == READY_QUERY[..2]
    )
}

/// `pebble-challtestsrv` serving DNS on a loopback port, records set over
/// its management API; killed on drop.
///
/// Only its DNS server runs (its own HTTP-01, HTTPS and TLS-ALPN-01
/// responders are off: tests serve challenges themselves). It answers A
/// queries for every name with 127.0.0.1 unless [`ChallTestSrv::add_a`] says
/// otherwise, and AAAA queries with nothing (so a validator never dials
/// `::1` while a responder listens on IPv4). Hosts are given without the
/// trailing dot (one is accepted too).
#[derive(Debug)]
pub struct ChallTestSrv {
    process: Supervised,
    management: u16,
    dns: SocketAddr,
    client: reqwest::Client,
    // Declared last: the directory is removed after the process is killed.
    _scratch: Option<TempDir>,
}

impl ChallTestSrv {
    /// Starts the server on free ports and waits until its management API
    /// and its DNS server answer.
    pub async fn start() -> Result<Self, Error> {
        let binary = paths::system_program("pebble-challtestsrv")?;
        let (dir, scratch) = reaper::instance_dir(None, "challtestsrv-")?;
        let client = http_client();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let [management, dns_port] = free_ports()?;
            let dns = SocketAddr::from((Ipv4Addr::LOCALHOST, dns_port));
            let mut cmd = Command::new(&binary);
            cmd.arg("-management")
                .arg(format!("127.0.0.1:{management}"))
                .arg("-dns01")
                .arg(dns.to_string())
                .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
                .args(["-defaultIPv6", ""])
                .current_dir(&dir);
            let log = fresh_log(&dir, "challtestsrv.log")?;
            let mut process = Supervised::spawn(
                "pebble-challtestsrv",
                cmd,
                &log,
                Some(&dir.join("challtestsrv.pid")),
            )?;
            let url = format!("http://127.0.0.1:{management}/");
            let ready = wait_ready(&mut process, STARTUP_TIMEOUT, || async {
                answers(&client, &url).await && dns_answers(dns).await
            })
            .await;
            match ready {
                Ok(()) => {
                    return Ok(Self {
                        process,
                        management,
                        dns,
                        client,
                        _scratch: scratch,
                    });
                }
                Err(e) if retry_on_port_clash("pebble-challtestsrv", attempt, &e) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The DNS server's address (UDP and TCP), e.g. for pebble's
    /// `-dnsserver` or a resolver's name server.
    pub fn dns_addr(&self) -> SocketAddr {
        self.dns
    }

    /// The management API's base URL, e.g. `http://127.0.0.1:8055`.
    pub fn management_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.management)
    }

    /// The server's pid.
    pub fn pid(&self) -> i32 {
        self.process.id().pid
    }

    /// The server's log (every record change and DNS question is logged).
    pub fn log_path(&self) -> &Path {
        self.process.log_path()
    }

    /// Adds the TXT record `value` for `host` (e.g.
    /// `_acme-challenge.example.test`). Values added for one host
    /// accumulate; [`ChallTestSrv::clear_txt`] removes them all.
    pub async fn set_txt(&self, host: &str, value: &str) -> Result<(), Error> {
        self.post("set-txt", json!({ "host": fqdn(host), "value": value }))
            .await
    }

    /// Removes every TXT record of `host`.
    pub async fn clear_txt(&self, host: &str) -> Result<(), Error> {
        self.post("clear-txt", json!({ "host": fqdn(host) })).await
    }

    /// Makes `host` a CNAME for `target` (replacing an earlier one).
    pub async fn set_cname(&self, host: &str, target: &str) -> Result<(), Error> {
        self.post(
            "set-cname",
            json!({ "host": fqdn(host), "target": fqdn(target) }),
        )
        .await
    }

    /// Removes the CNAME of `host`.
    pub async fn clear_cname(&self, host: &str) -> Result<(), Error> {
        self.post("clear-cname", json!({ "host": fqdn(host) }))
            .await
    }

    /// Answers A queries for `host` with `addresses` instead of the default
    /// 127.0.0.1 (replacing earlier addresses of `host`).
    pub async fn add_a(&self, host: &str, addresses: &[Ipv4Addr]) -> Result<(), Error> {
        let addresses: Vec<String> = addresses.iter().map(ToString::to_string).collect();
        self.post(
            "add-a",
            json!({ "host": fqdn(host), "addresses": addresses }),
        )
        .await
    }

    /// Removes the A records of `host` (it answers 127.0.0.1 again).
    pub async fn clear_a(&self, host: &str) -> Result<(), Error> {
        self.post("clear-a", json!({ "host": fqdn(host) })).await
    }

    /// Answers every query for `host` with SERVFAIL (to test DNS failures).
    pub async fn set_servfail(&self, host: &str) -> Result<(), Error> {
        self.post("set-servfail", json!({ "host": fqdn(host) }))
            .await
    }

    /// Answers queries for `host` normally again.
    pub async fn clear_servfail(&self, host: &str) -> Result<(), Error> {
        self.post("clear-servfail", json!({ "host": fqdn(host) }))
            .await
    }

    async fn post(&self, endpoint: &str, body: serde_json::Value) -> Result<(), Error> {
        let context = format!("pebble-challtestsrv: POST /{endpoint} {body}");
        let response = self
            .client
            .post(format!("{}/{endpoint}", self.management_url()))
            .json(&body)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|e| Error::request(&context, e))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            return Err(Error::request(
                context,
                format!("{status}: {}", text.trim()),
            ));
        }
        Ok(())
    }
}

/// Settings for [`Pebble::start_with`]; the defaults are pebble's own.
#[derive(Debug, Clone, Default)]
pub struct PebbleOptions {
    /// Percentage of valid nonces pebble rejects as `badNonce`
    /// (`PEBBLE_WFE_NONCEREJECT`; pebble's default is 5). `Some(0)` for
    /// tests that must not depend on the client's retry.
    pub nonce_reject: Option<u8>,
    /// Validity of issued certificates (pebble's `certificateValidityPeriod`,
    /// in whole seconds, at least 1; the default is 5 years). Pebble 2.4.0
    /// sets `notAfter` to `notBefore` + this − 1 s.
    pub validity: Option<Duration>,
    /// Percentage of new orders that reuse an existing valid authorization
    /// (`PEBBLE_AUTHZREUSE`; pebble's default is 50). `Some(0)` makes every
    /// order validate again.
    pub authz_reuse: Option<u8>,
}

/// A running `pebble` ACME CA on loopback ports; killed on drop.
///
/// Challenge names are resolved through the [`ChallTestSrv`] it was started
/// with, which must outlive it. HTTP-01 validation connects to
/// `http01_port` on the address the name resolves to (127.0.0.1 unless
/// changed); TLS-ALPN-01 to [`Pebble::tls_alpn01_port`]. Validation runs
/// without pebble's random delays.
#[derive(Debug)]
pub struct Pebble {
    process: Supervised,
    acme_port: u16,
    management_port: u16,
    http01_port: u16,
    tls_port: u16,
    ca_pem: String,
    ca_path: PathBuf,
    tls: Arc<rustls::ClientConfig>,
    // Declared last: the directory is removed after the process is killed.
    _scratch: Option<TempDir>,
}

impl Pebble {
    /// Starts pebble with its default behaviour (apart from validation
    /// delays) and waits until its directory answers.
    pub async fn start(dns: &ChallTestSrv, http01_port: u16) -> Result<Self, Error> {
        Self::start_with(dns, http01_port, PebbleOptions::default()).await
    }

    /// Starts pebble with `options` and waits until its directory and its
    /// management API answer.
    pub async fn start_with(
        dns: &ChallTestSrv,
        http01_port: u16,
        options: PebbleOptions,
    ) -> Result<Self, Error> {
        let binary = paths::system_program("pebble")?;
        let (dir, scratch) = reaper::instance_dir(None, "pebble-")?;

        // The ACME listener's certificate, from a CA of its own.
        let ca = LocalCa::generate()?;
        let leaf = ca.leaf(&["localhost", "127.0.0.1"])?;
        let ca_path = dir.join("listener-ca.pem");
        let (cert_path, key_path) = (dir.join("listener.pem"), dir.join("listener-key.pem"));
        let write = |path: &Path, text: &str| {
            fs::write(path, text).map_err(|e| Error::io(format!("write {}", path.display()), e))
        };
        write(&ca_path, &ca.cert_pem)?;
        write(&cert_path, &leaf.chain_pem)?;
        write(&key_path, &leaf.key_pem)?;
        fs::set_permissions(&key_path, fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::io(format!("restrict {}", key_path.display()), e))?;
        let tls = Arc::new(client_config(&ca.cert_pem)?);

        let mut attempt = 0;
        loop {
            attempt += 1;
            let [acme_port, management_port, tls_port] = free_ports()?;
            let mut config = json!({
                "listenAddress": format!("127.0.0.1:{acme_port}"),
                "managementListenAddress": format!("127.0.0.1:{management_port}"),
                "certificate": cert_path,
                "privateKey": key_path,
                "httpPort": http01_port,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
            });
            if let Some(validity) = options.validity {
                let seconds = validity.as_secs() + u64::from(validity.subsec_nanos() > 0);
                config["certificateValidityPeriod"] = json!(seconds.max(1));
            }
            let config_path = dir.join("pebble-config.json");
            write(&config_path, &json!({ "pebble": config }).to_string())?;

            let mut cmd = Command::new(&binary);
            cmd.arg("-config")
                .arg(&config_path)
                .arg("-dnsserver")
                .arg(dns.dns_addr().to_string())
                .current_dir(&dir);
            // Only our settings: a PEBBLE_* variable in the caller's
            // environment must not change the CA's behaviour.
            for (key, _) in std::env::vars_os() {
                if key.to_string_lossy().starts_with("PEBBLE_") {
                    cmd.env_remove(key);
                }
            }
            cmd.env("PEBBLE_VA_NOSLEEP", "1");
            if let Some(percent) = options.nonce_reject {
                cmd.env("PEBBLE_WFE_NONCEREJECT", percent.to_string());
            }
            if let Some(percent) = options.authz_reuse {
                cmd.env("PEBBLE_AUTHZREUSE", percent.to_string());
            }
            let log = fresh_log(&dir, "pebble.log")?;
            let mut process =
                Supervised::spawn("pebble", cmd, &log, Some(&dir.join("pebble.pid")))?;
            let ready = wait_ready(&mut process, STARTUP_TIMEOUT, || async {
                https_ok(&tls, acme_port, "/dir").await
                    && https_ok(&tls, management_port, "/roots/0").await
            })
            .await;
            match ready {
                Ok(()) => {
                    return Ok(Self {
                        process,
                        acme_port,
                        management_port,
                        http01_port,
                        tls_port,
                        ca_pem: ca.cert_pem,
                        ca_path,
                        tls,
                        _scratch: scratch,
                    });
                }
                Err(e) if retry_on_port_clash("pebble", attempt, &e) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The ACME directory URL, e.g. `https://127.0.0.1:14000/dir`.
    pub fn directory_url(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.acme_port)
    }

    /// The management API's base URL, e.g. `https://127.0.0.1:15000`
    /// (served with the same listener certificate).
    pub fn management_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.management_port)
    }

    /// The PEM file of the CA that signed the ACME listener's certificate
    /// (for `localhost` and `127.0.0.1`): what an ACME client must trust.
    /// It does not sign issued certificates; see [`Pebble::root_pem`].
    pub fn listener_ca_pem_path(&self) -> &Path {
        &self.ca_path
    }

    /// The listener CA certificate as PEM text (see
    /// [`Pebble::listener_ca_pem_path`]).
    pub fn listener_ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The port HTTP-01 validation connects to.
    pub fn http01_port(&self) -> u16 {
        self.http01_port
    }

    /// The port TLS-ALPN-01 validation connects to.
    pub fn tls_alpn01_port(&self) -> u16 {
        self.tls_port
    }

    /// Pebble's pid.
    pub fn pid(&self) -> i32 {
        self.process.id().pid
    }

    /// Pebble's log (requests and validation attempts).
    pub fn log_path(&self) -> &Path {
        self.process.log_path()
    }

    /// The ACME directory document (the endpoints `newNonce`, `newAccount`,
    /// `newOrder`, …). Pebble builds its URLs from the request's `Host`, so
    /// they name `127.0.0.1:<port>` as [`Pebble::directory_url`] does.
    pub async fn directory(&self) -> Result<serde_json::Value, Error> {
        let url = self.directory_url();
        let (status, body) = https_get(&self.tls, self.acme_port, "/dir", REQUEST_TIMEOUT).await?;
        if status != 200 {
            return Err(Error::request(
                format!("GET {url}"),
                format!("{status}: {}", body.trim()),
            ));
        }
        serde_json::from_str(&body).map_err(|e| Error::request(format!("GET {url}"), e))
    }

    /// The root certificate (PEM) that issued certificates chain to; pebble
    /// makes a new one at every start.
    pub async fn root_pem(&self) -> Result<String, Error> {
        self.management_pem("/roots/0").await
    }

    /// The intermediate certificate (PEM) that signs issued certificates.
    pub async fn intermediate_pem(&self) -> Result<String, Error> {
        self.management_pem("/intermediates/0").await
    }

    async fn management_pem(&self, path: &str) -> Result<String, Error> {
        let (status, body) =
            https_get(&self.tls, self.management_port, path, REQUEST_TIMEOUT).await?;
        if status != 200 || !body.contains("-----BEGIN CERTIFICATE-----") {
            return Err(Error::request(
                format!("GET {}{path}", self.management_url()),
                format!("{status}: {}", body.trim()),
            ));
        }
        Ok(body)
    }
}

/// A readiness probe: `GET path` answers 200 within [`PROBE_TIMEOUT`].
async fn https_ok(tls: &Arc<rustls::ClientConfig>, port: u16, path: &str) -> bool {
    https_get(tls, port, path, PROBE_TIMEOUT)
        .await
        .is_ok_and(|(status, _)| status == 200)
}

/// `GET path` from `https://127.0.0.1:<port>` trusting only `tls`'s roots:
/// (status, body). HTTP/1.0, so the body is never chunked and ends when the
/// server closes the connection; bounded by `timeout`.
async fn https_get(
    tls: &Arc<rustls::ClientConfig>,
    port: u16,
    path: &str,
    timeout: Duration,
) -> Result<(u16, String), Error> {
    let url = format!("https://127.0.0.1:{port}{path}");
    let request = async {
        let tcp = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .await
            .map_err(|e| Error::io(format!("connect for {url}"), e))?;
        let name = rustls::pki_types::ServerName::IpAddress(Ipv4Addr::LOCALHOST.into());
        let mut stream = tokio_rustls::TlsConnector::from(Arc::clone(tls))
            .connect(name, tcp)
            .await
            .map_err(|e| Error::io(format!("TLS handshake for {url}"), e))?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes())
            .await
            .map_err(|e| Error::io(format!("send GET {url}"), e))?;
        let mut raw = Vec::new();
        match stream.read_to_end(&mut raw).await {
            Ok(_) => {}
            // A server that closes without close_notify has still answered.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
            Err(e) => return Err(Error::io(format!("read the answer to GET {url}"), e)),
        }
        Ok::<_, Error>(raw)
    };
    let raw = tokio::time::timeout(timeout, request).await.map_err(|_| {
        Error::request(
            format!("GET {url}"),
            format!("no answer within {timeout:?}"),
        )
    })??;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::request(format!("GET {url}"), "no HTTP status line"))?;
    Ok((status, body.to_owned()))
}

/// moto's server (AWS APIs: Route53, S3, …) on a loopback port; killed on
/// drop.
///
/// It accepts any credentials and region; point an AWS SDK client at
/// [`Moto::endpoint_url`]. State lives in memory and is shared by every
/// client of one server ([`Moto::reset`] empties it).
#[derive(Debug)]
pub struct Moto {
    process: Supervised,
    port: u16,
    client: reqwest::Client,
    // Declared last: the directory is removed after the process is killed.
    _scratch: Option<TempDir>,
}

impl Moto {
    /// Starts `moto_server` from the virtualenv (`cargo xtask deps`
    /// installs it; see [`paths::moto_server_bin`]) and waits until it answers.
    pub async fn start() -> Result<Self, Error> {
        let binary = paths::moto_server_bin()?;
        let (dir, scratch) = reaper::instance_dir(None, "moto-")?;
        let client = http_client();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = free_port()?;
            let mut cmd = Command::new(&binary);
            cmd.args(["-H", "127.0.0.1", "-p"])
                .arg(port.to_string())
                .env("PYTHONUNBUFFERED", "1")
                .current_dir(&dir);
            let log = fresh_log(&dir, "moto.log")?;
            let mut process =
                Supervised::spawn("moto_server", cmd, &log, Some(&dir.join("moto.pid")))?;
            let url = format!("http://127.0.0.1:{port}/moto-api/");
            let ready = wait_ready(&mut process, STARTUP_TIMEOUT, || async {
                client
                    .get(&url)
                    .timeout(PROBE_TIMEOUT)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            })
            .await;
            match ready {
                Ok(()) => {
                    return Ok(Self {
                        process,
                        port,
                        client,
                        _scratch: scratch,
                    });
                }
                Err(e) if retry_on_port_clash("moto_server", attempt, &e) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The endpoint for AWS SDK clients, e.g. `http://127.0.0.1:5000`.
    pub fn endpoint_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The server's pid.
    pub fn pid(&self) -> i32 {
        self.process.id().pid
    }

    /// The server's log.
    pub fn log_path(&self) -> &Path {
        self.process.log_path()
    }

    /// Forgets every resource of every service (hosted zones, buckets, …).
    pub async fn reset(&self) -> Result<(), Error> {
        let url = format!("{}/moto-api/reset", self.endpoint_url());
        let response = self
            .client
            .post(&url)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|e| Error::request(format!("POST {url}"), e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(Error::request(format!("POST {url}"), status));
        }
        Ok(())
    }
}
