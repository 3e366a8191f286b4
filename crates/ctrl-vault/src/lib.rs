//! Envelope encryption of secrets.
//!
//! Every value is encrypted with its own random 256-bit data key (AES-256-GCM);
//! the data key is encrypted ("wrapped") with a key-encryption key from the
//! configuration. The *keyring* — the environment id for environment
//! variables, the workspace id for private keys — is bound to both layers as
//! associated data, so a value copied to another environment does not open.
//! Sealed values name the key that wrapped them, so keys rotate: new values use
//! the first configured key, older values still open with the others.
//!
//! Sealed format (version 1):
//! `0x01 | key-id length (1) | key id | dek nonce (12) | wrapped dek (48) | nonce (12) | ciphertext + tag`.
//!
//! Plaintext never appears in errors or `Debug` output. Keys for data keys in
//! S3 (the production design) can replace the configured keys behind the same
//! [`Vault::seal`]/[`Vault::open`] interface.

use std::collections::HashMap;
use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore;
use zeroize::Zeroizing;

const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const DEK_LEN: usize = 32;
const WRAPPED_DEK_LEN: usize = DEK_LEN + 16;

/// Why a vault could not be built or a value could not be sealed or opened.
/// Messages never contain secret material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// No key was configured.
    #[error("the vault needs at least one key")]
    NoKeys,
    /// A configured key is not valid.
    #[error("vault key {id:?}: {reason}")]
    BadKey {
        /// The key's id.
        id: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The value was sealed with a key that is not configured (any more).
    #[error("the value was sealed with vault key {0:?}, which is not configured")]
    UnknownKey(String),
    /// The bytes are not a sealed value of a known format.
    #[error("not a sealed value (bad format or truncated)")]
    Malformed,
    /// Authentication failed: wrong keyring, wrong key material, or tampering.
    #[error(
        "the sealed value does not open with this keyring (tampered, or sealed for another keyring)"
    )]
    Forged,
}

/// A configured key: an id (stored with every value it seals) and 32 bytes
/// of key material in standard base64.
#[derive(Clone)]
pub struct KeyConfig {
    /// Short id, 1–64 ASCII characters, e.g. "2026-11".
    pub id: String,
    /// Base64 of 32 random bytes (`openssl rand -base64 32`).
    pub base64: String,
}

impl fmt::Debug for KeyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyConfig")
            .field("id", &self.id)
            .field("base64", &"<redacted>")
            .finish()
    }
}

/// Seals and opens secrets; cheap to clone and share.
#[derive(Clone)]
pub struct Vault {
    current: String,
    keys: HashMap<String, Aes256Gcm>,
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ids: Vec<_> = self.keys.keys().collect();
        ids.sort();
        f.debug_struct("Vault")
            .field("current", &self.current)
            .field("keys", &ids)
            .finish()
    }
}

impl Vault {
    /// Builds a vault from keys; the first one seals new values.
    pub fn new(keys: &[KeyConfig]) -> Result<Self, Error> {
        let first = keys.first().ok_or(Error::NoKeys)?;
        let mut map = HashMap::new();
        for key in keys {
            let bad = |reason: &str| Error::BadKey {
                id: key.id.clone(),
                reason: reason.to_owned(),
            };
            if key.id.is_empty() || key.id.len() > 64 || !key.id.is_ascii() {
                return Err(bad("the id must be 1-64 ASCII characters"));
            }
            let material = Zeroizing::new(
                STANDARD
                    .decode(key.base64.trim())
                    .map_err(|_| bad("the key is not valid base64"))?,
            );
            if material.len() != 32 {
                return Err(bad("the key must be 32 bytes (base64 of 32 random bytes)"));
            }
            let cipher = Aes256Gcm::new_from_slice(&material)
                .map_err(|_| bad("the key must be 32 bytes"))?;
            if map.insert(key.id.clone(), cipher).is_some() {
                return Err(bad("the id is configured twice"));
            }
        }
        Ok(Self {
            current: first.id.clone(),
            keys: map,
        })
    }

    /// The id of the key that seals new values.
    pub fn current_key_id(&self) -> &str {
        &self.current
    }

    /// Encrypts `plaintext` for `keyring`.
    pub fn seal(&self, keyring: &str, plaintext: &[u8]) -> Result<Vec<u8>, Error> {
        let kek = &self.keys[&self.current];
        let mut rng = rand::rng();
        let mut dek = Zeroizing::new([0u8; DEK_LEN]);
        rng.fill_bytes(dek.as_mut());
        let mut dek_nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut dek_nonce);
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);

        let dek_aad = aad("dek", keyring);
        let wrapped = kek
            .encrypt(
                &Nonce::from(dek_nonce),
                Payload {
                    msg: dek.as_ref(),
                    aad: &dek_aad,
                },
            )
            .map_err(|_| Error::Malformed)?;
        let value_aad = aad("value", keyring);
        let cipher = Aes256Gcm::new(&Key::<Aes256Gcm>::from(*dek));
        let ciphertext = cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: &value_aad,
                },
            )
            .map_err(|_| Error::Malformed)?;

        let id = self.current.as_bytes();
        let mut out =
            Vec::with_capacity(2 + id.len() + NONCE_LEN * 2 + WRAPPED_DEK_LEN + ciphertext.len());
        out.push(VERSION);
        out.push(u8::try_from(id.len()).expect("ids are at most 64 bytes"));
        out.extend_from_slice(id);
        out.extend_from_slice(&dek_nonce);
        out.extend_from_slice(&wrapped);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        Ok(out)
    }

    /// Decrypts a value sealed for `keyring`.
    pub fn open(&self, keyring: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
        let (&version, rest) = sealed.split_first().ok_or(Error::Malformed)?;
        if version != VERSION {
            return Err(Error::Malformed);
        }
        let (&id_len, rest) = rest.split_first().ok_or(Error::Malformed)?;
        let id_len = usize::from(id_len);
        if rest.len() < id_len + NONCE_LEN + WRAPPED_DEK_LEN + NONCE_LEN + 16 {
            return Err(Error::Malformed);
        }
        let (id, rest) = rest.split_at(id_len);
        let (dek_nonce, rest) = rest.split_at(NONCE_LEN);
        let (wrapped, rest) = rest.split_at(WRAPPED_DEK_LEN);
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let id = std::str::from_utf8(id).map_err(|_| Error::Malformed)?;
        let dek_nonce: [u8; NONCE_LEN] = dek_nonce.try_into().map_err(|_| Error::Malformed)?;
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| Error::Malformed)?;
        let kek = self
            .keys
            .get(id)
            .ok_or_else(|| Error::UnknownKey(id.to_owned()))?;

        let dek_aad = aad("dek", keyring);
        let dek = Zeroizing::new(
            kek.decrypt(
                &Nonce::from(dek_nonce),
                Payload {
                    msg: wrapped,
                    aad: &dek_aad,
                },
            )
            .map_err(|_| Error::Forged)?,
        );
        let value_aad = aad("value", keyring);
        let cipher = Aes256Gcm::new_from_slice(&dek).map_err(|_| Error::Forged)?;
        cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &value_aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| Error::Forged)
    }
}

/// Associated data binding a layer of a sealed value to its keyring.
fn aad(layer: &str, keyring: &str) -> Vec<u8> {
    format!("ctrl-vault/v1/{layer}/{keyring}").into_bytes()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn key(id: &str, byte: u8) -> KeyConfig {
        KeyConfig {
            id: id.into(),
            base64: STANDARD.encode([byte; 32]),
        }
    }

    #[test]
    fn seals_and_opens_for_the_same_keyring_only() {
        let vault = Vault::new(&[key("k1", 1)]).unwrap();
        let sealed = vault.seal("env_a", b"postgres://user:secret@db").unwrap();
        assert_eq!(
            vault.open("env_a", &sealed).unwrap().as_slice(),
            b"postgres://user:secret@db"
        );
        assert_eq!(vault.open("env_b", &sealed).unwrap_err(), Error::Forged);
        assert!(
            !sealed.windows(6).any(|w| w == b"secret"),
            "no plaintext in the sealed bytes"
        );
    }

    #[test]
    fn every_seal_is_different() {
        let vault = Vault::new(&[key("k1", 1)]).unwrap();
        assert_ne!(
            vault.seal("env", b"x").unwrap(),
            vault.seal("env", b"x").unwrap()
        );
    }

    #[test]
    fn any_tampering_is_detected() {
        let vault = Vault::new(&[key("k1", 1)]).unwrap();
        let sealed = vault.seal("env", b"value").unwrap();
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert!(
                vault.open("env", &bad).is_err(),
                "flipping byte {i} went unnoticed"
            );
        }
    }

    #[test]
    fn keys_rotate_and_old_values_still_open() {
        let old = Vault::new(&[key("2026-01", 1)]).unwrap();
        let sealed_old = old.seal("env", b"old").unwrap();
        let rotated = Vault::new(&[key("2026-11", 2), key("2026-01", 1)]).unwrap();
        assert_eq!(rotated.current_key_id(), "2026-11");
        assert_eq!(rotated.open("env", &sealed_old).unwrap().as_slice(), b"old");
        let sealed_new = rotated.seal("env", b"new").unwrap();
        assert_eq!(
            old.open("env", &sealed_new).unwrap_err(),
            Error::UnknownKey("2026-11".into())
        );
        let same_id_other_material = Vault::new(&[key("2026-01", 9)]).unwrap();
        assert_eq!(
            same_id_other_material.open("env", &sealed_old).unwrap_err(),
            Error::Forged
        );
    }

    #[test]
    fn bad_configuration_is_named() {
        assert_eq!(Vault::new(&[]).unwrap_err(), Error::NoKeys);
        let short = KeyConfig {
            id: "k".into(),
            base64: STANDARD.encode([0u8; 16]),
        };
        assert!(
            Vault::new(&[short])
                .unwrap_err()
                .to_string()
                .contains("32 bytes")
        );
        let garbage = KeyConfig {
            id: "k".into(),
            base64: "not base64!".into(),
        };
        assert!(
            Vault::new(&[garbage])
                .unwrap_err()
                .to_string()
                .contains("base64")
        );
        assert!(
            Vault::new(&[key("k", 1), key("k", 2)])
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
        assert!(Vault::new(&[key("", 1)]).is_err());
    }

    #[test]
    fn debug_output_never_shows_key_material() {
        let config = key("k1", 7);
        let vault = Vault::new(std::slice::from_ref(&config)).unwrap();
        let b64 = config.base64.clone();
        assert!(!format!("{config:?}").contains(&b64));
        assert!(!format!("{vault:?}").contains(&b64));
        assert!(format!("{vault:?}").contains("k1"));
    }

    proptest! {
        #[test]
        fn round_trips_any_value_and_rejects_any_garbage(value in proptest::collection::vec(any::<u8>(), 0..512), garbage in proptest::collection::vec(any::<u8>(), 0..200)) {
            let vault = Vault::new(&[key("k1", 3)]).unwrap();
            let sealed = vault.seal("keyring", &value).unwrap();
            let opened = vault.open("keyring", &sealed).unwrap();
            prop_assert_eq!(opened.as_slice(), value.as_slice());
            prop_assert!(vault.open("keyring", &garbage).is_err());
        }
    }
}
