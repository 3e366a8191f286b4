//! A local certificate authority for the dev stack and the edge's tests:
//! the CA is kept in a directory (`ca.pem`, `ca-key.pem`, the key readable
//! only by its owner) so browsers and `curl --cacert` trust it across runs,
//! and it signs leaf certificates for any names.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

use crate::Error;

const CA_NAME: &str = "ctrl local development CA";

/// A leaf certificate.
#[derive(Debug, Clone)]
pub struct Leaf {
    /// PEM chain (the leaf; the CA is the trust anchor, not sent).
    pub chain_pem: String,
    /// PEM PKCS#8 private key.
    pub key_pem: String,
}

/// A certificate authority.
pub struct LocalCa {
    /// The CA certificate, PEM.
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCa").finish_non_exhaustive()
    }
}

fn tls_error(what: &'static str) -> impl FnOnce(rcgen::Error) -> Error {
    move |e| Error::Tls(format!("{what}: {e}"))
}

fn ca_params() -> Result<CertificateParams, Error> {
    let mut params =
        CertificateParams::new(Vec::<String>::new()).map_err(tls_error("CA parameters"))?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, CA_NAME);
    Ok(params)
}

impl LocalCa {
    /// A new CA kept in memory only.
    pub fn generate() -> Result<Self, Error> {
        let key = KeyPair::generate().map_err(tls_error("CA key"))?;
        let params = ca_params()?;
        let cert = params
            .self_signed(&key)
            .map_err(tls_error("CA certificate"))?;
        Ok(Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA in `dir` (`ca.pem`, `ca-key.pem`), created there if missing.
    pub fn load_or_create(dir: &Path) -> Result<Self, Error> {
        let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
        if let (Ok(cert_pem), Ok(key_pem)) = (
            std::fs::read_to_string(&cert_path),
            std::fs::read_to_string(&key_path),
        ) {
            let key = KeyPair::from_pem(&key_pem).map_err(tls_error("CA key in ca-key.pem"))?;
            return Ok(Self {
                cert_pem,
                issuer: Issuer::new(ca_params()?, key),
            });
        }
        let key = KeyPair::generate().map_err(tls_error("CA key"))?;
        let params = ca_params()?;
        let cert = params
            .self_signed(&key)
            .map_err(tls_error("CA certificate"))?;
        std::fs::write(&key_path, key.serialize_pem())
            .and_then(|()| {
                std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600))
            })
            .map_err(|e| Error::io("write the CA key", e))?;
        std::fs::write(&cert_path, cert.pem())
            .map_err(|e| Error::io("write the CA certificate", e))?;
        Ok(Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// A leaf certificate for `names` (wildcards allowed), signed by this CA.
    pub fn leaf(&self, names: &[&str]) -> Result<Leaf, Error> {
        let key = KeyPair::generate().map_err(tls_error("leaf key"))?;
        let params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .map_err(tls_error("leaf names"))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(tls_error("leaf certificate"))?;
        Ok(Leaf {
            chain_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A TLS client configuration (rustls with ring) that trusts only the
/// certificates in `ca_pem`.
pub(crate) fn client_config(ca_pem: &str) -> Result<rustls::ClientConfig, Error> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let tls_err = |what: &str, e: &dyn std::fmt::Display| Error::Tls(format!("{what}: {e}"));
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| tls_err("CA certificate", &e))?;
        roots.add(cert).map_err(|e| tls_err("CA certificate", &e))?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err("TLS versions", &e))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// `GET path` over HTTPS to `addr` with SNI and `Host` = `host`, trusting
/// only `ca_pem`: (status, body). One HTTP/1.1 request, `Connection:
/// close`, bounded by `timeout` — enough to prove a URL answers as a
/// browser or `curl --cacert` would see it.
pub async fn https_get(
    ca_pem: &str,
    addr: std::net::SocketAddr,
    host: &str,
    path: &str,
    timeout: std::time::Duration,
) -> Result<(u16, String), Error> {
    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tls_err = |what: &str, e: &dyn std::fmt::Display| Error::Tls(format!("{what}: {e}"));
    let config = client_config(ca_pem)?;
    let name = ServerName::try_from(host.to_owned()).map_err(|e| tls_err("server name", &e))?;
    let request = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| Error::io(format!("connect to {addr}"), e))?;
        let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| Error::io(format!("TLS handshake with {host} at {addr}"), e))?;
        tls.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .map_err(|e| Error::io("send the request", e))?;
        let mut raw = Vec::new();
        tls.read_to_end(&mut raw)
            .await
            .map_err(|e| Error::io("read the answer", e))?;
        Ok::<_, Error>(raw)
    };
    let raw = tokio::time::timeout(timeout, request)
        .await
        .map_err(|_| Error::request(format!("GET https://{host}{path}"), "timed out"))??;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            Error::request(format!("GET https://{host}{path}"), "no HTTP status line")
        })?;
    Ok((status, body.to_owned()))
}
