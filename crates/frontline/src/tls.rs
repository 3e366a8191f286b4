//! TLS: certificates from the routing table, chosen by SNI (the exact
//! host, then the wildcard one level up), keys opened by the vault only in
//! this process's memory; ALPN offers HTTP/2 and HTTP/1.1.

use std::sync::Arc;

use anyhow::{Context, anyhow};
use ctrl_proto::ctrl::v1 as pb;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::table::{CertificateLoader, Routes};

/// The one crypto provider (ring), as rustls' process default.
pub fn provider() -> Arc<CryptoProvider> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // Fails only if another provider was installed first: then that one stays.
    let _ = CryptoProvider::install_default(rustls::crypto::ring::default_provider());
    provider
}

/// Opens sealed keys with the vault.
#[derive(Debug)]
pub struct VaultLoader {
    vault: Option<ctrl_vault::Vault>,
    provider: Arc<CryptoProvider>,
}

impl VaultLoader {
    /// A loader over `vault` (`None`: every certificate fails, saying why).
    pub fn new(vault: Option<ctrl_vault::Vault>) -> Self {
        Self {
            vault,
            provider: provider(),
        }
    }
}

impl CertificateLoader for VaultLoader {
    fn load(&self, c: &pb::EdgeCertificate) -> anyhow::Result<Arc<CertifiedKey>> {
        let vault = self
            .vault
            .as_ref()
            .ok_or_else(|| anyhow!("frontline has no [vault] keys to open the private key"))?;
        let key_pem = vault
            .open(&c.keyring, &c.sealed_private_key)
            .map_err(|e| anyhow!("cannot open the private key: {e}"))?;
        certified_key(&c.certificate_pem, &key_pem, &self.provider)
    }
}

/// A key pair from a PEM chain and a PEM private key.
pub fn certified_key(
    chain_pem: &str,
    key_pem: &[u8],
    provider: &CryptoProvider,
) -> anyhow::Result<Arc<CertifiedKey>> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .context("certificate chain is not PEM")?;
    anyhow::ensure!(!chain.is_empty(), "certificate chain is empty");
    let key = PrivateKeyDer::from_pem_slice(key_pem).context("private key is not PEM")?;
    let key = provider
        .key_provider
        .load_private_key(key)
        .context("private key is not usable")?;
    Ok(Arc::new(CertifiedKey::new(chain, key)))
}

/// Picks the certificate for a ClientHello from the live table.
#[derive(Debug)]
pub struct Resolver {
    routes: Arc<Routes>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello
            .server_name()?
            .trim_end_matches('.')
            .to_ascii_lowercase();
        self.routes.current().certificate(&name).cloned()
    }
}

/// The server config: table certificates, ALPN h2 then http/1.1.
pub fn server_config(routes: Arc<Routes>) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Resolver { routes }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
