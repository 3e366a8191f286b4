//! Restate's request identity: only the Restate server may invoke the
//! worker. The server signs every request with its Ed25519 key (a JWT in
//! `x-restate-jwt-v1`); the endpoint, given the public keys in
//! `restate.identity_keys`, refuses anything unsigned or signed by another
//! key (401).
//!
//! restate-sdk checks the JWT with `jsonwebtoken`, which needs a crypto
//! backend; its own backends would pull RustCrypto or aws-lc next to ring.
//! [`install`] gives it a verifier on ring instead (EdDSA only: the one
//! algorithm Restate signs with).

use jsonwebtoken::crypto::{CryptoProvider, JwkUtils, JwtSigner, JwtVerifier};
use jsonwebtoken::errors::{ErrorKind, Result};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};

/// An Ed25519 public key (raw 32 bytes) that checks signatures with ring.
struct Ed25519(Vec<u8>);

impl signature::Verifier<Vec<u8>> for Ed25519 {
    fn verify(&self, msg: &[u8], sig: &Vec<u8>) -> std::result::Result<(), signature::Error> {
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &self.0)
            .verify(msg, sig)
            .map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for Ed25519 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::EdDSA
    }
}

fn verifier(algorithm: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
    match algorithm {
        Algorithm::EdDSA => Ok(Box::new(Ed25519(key.as_bytes().to_vec()))),
        _ => Err(ErrorKind::InvalidAlgorithm.into()),
    }
}

/// The worker signs nothing.
fn signer(_: &Algorithm, _: &EncodingKey) -> Result<Box<dyn JwtSigner>> {
    Err(ErrorKind::InvalidAlgorithm.into())
}

static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: signer,
    verifier_factory: verifier,
    jwk_utils: JwkUtils::new_unimplemented(),
};

/// Makes ring the JWT backend of this process (once; later calls do nothing).
pub fn install() {
    let _ = PROVIDER.install_default();
}

/// Whether `key` is a request-identity public key restate-sdk accepts
/// (`publickeyv1_` and the base58 of 32 bytes).
pub fn is_valid_key(key: &str) -> bool {
    restate_sdk::prelude::Endpoint::builder()
        .identity_key(key)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_and_only_eddsa_verifies() {
        assert!(is_valid_key(
            "publickeyv1_3Jmacxu8C8DuVHbJAcjdy4uA39MkGarZDvFzPQpY3Sti"
        ));
        assert!(!is_valid_key("publickeyv1_nope"));
        assert!(!is_valid_key(
            "3Jmacxu8C8DuVHbJAcjdy4uA39MkGarZDvFzPQpY3Sti"
        ));
        let key = DecodingKey::from_ed_der(&[7; 32]);
        assert!(verifier(&Algorithm::HS256, &key).is_err());
        assert!(verifier(&Algorithm::EdDSA, &key).is_ok());
    }

    #[test]
    fn a_signature_verifies_only_with_its_key() {
        use ring::signature::KeyPair as _;
        let rng = ring::rand::SystemRandom::new();
        let der = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8(der.as_ref()).unwrap();
        let sig = pair.sign(b"message").as_ref().to_vec();
        let good = Ed25519(pair.public_key().as_ref().to_vec());
        use signature::Verifier as _;
        assert!(good.verify(b"message", &sig).is_ok());
        assert!(good.verify(b"other", &sig).is_err());
        assert!(Ed25519(vec![1; 32]).verify(b"message", &sig).is_err());
    }
}
