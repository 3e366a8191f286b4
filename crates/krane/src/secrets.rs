//! Opening sealed environment variables just before a container starts:
//! the plaintext exists only in memory (zeroized on drop) and in the
//! container's environment — never in krane's logs, errors or files.

use async_trait::async_trait;
use ctrl_provider::SecretResolver;
use ctrl_provider::desired::parse_sealed_reference;
use ctrl_provider::spec::SecretRef;
use zeroize::Zeroizing;

/// Opens `sealed:<keyring>:<hex>` references with the vault.
#[derive(Debug)]
pub struct VaultSecrets {
    vault: Option<ctrl_vault::Vault>,
}

impl VaultSecrets {
    /// A resolver over `vault` (`None`: every secret fails, naming the variable).
    pub fn new(vault: Option<ctrl_vault::Vault>) -> Self {
        Self { vault }
    }
}

#[async_trait]
impl SecretResolver for VaultSecrets {
    async fn resolve(&self, secret: &SecretRef) -> Result<Zeroizing<String>, String> {
        let vault = self.vault.as_ref().ok_or_else(|| {
            format!(
                "variable {} is sealed but krane has no [vault] keys configured",
                secret.env
            )
        })?;
        let (keyring, sealed) = parse_sealed_reference(&secret.reference)
            .ok_or_else(|| format!("variable {}: not a sealed reference", secret.env))?;
        let plain = vault
            .open(keyring, &sealed)
            .map_err(|e| format!("variable {}: cannot open: {e}", secret.env))?;
        let text = String::from_utf8(plain.to_vec())
            .map_err(|_| format!("variable {}: value is not UTF-8", secret.env))?;
        Ok(Zeroizing::new(text))
    }
}
