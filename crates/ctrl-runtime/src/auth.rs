//! Bearer tokens shared by the services that accept them (ctrl-api,
//! ctrl-cluster-sync): kept only as SHA-256 digests, compared in constant
//! time, several at once so a token can rotate.

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Validator;

/// The `[auth]` section: accepted bearer tokens.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Accepted tokens; several allow rotation. At least 16 characters each.
    pub tokens: Vec<String>,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("tokens", &format!("<{} redacted>", self.tokens.len()))
            .finish()
    }
}

impl AuthConfig {
    /// At least one token, each at least 16 characters.
    pub fn validate(&self, v: &mut Validator) {
        self.validate_as("auth", v);
    }

    /// [`Self::validate`] for the section named `section`.
    pub fn validate_as(&self, section: &str, v: &mut Validator) {
        v.check(
            !self.tokens.is_empty(),
            &format!("{section}.tokens"),
            "must list at least one token",
        );
        for (i, t) in self.tokens.iter().enumerate() {
            v.check(
                t.len() >= 16,
                &format!("{section}.tokens[{i}]"),
                "must be at least 16 characters",
            );
        }
    }

    /// The tokens, ready for checking requests.
    pub fn bearer_tokens(&self) -> BearerTokens {
        BearerTokens::new(&self.tokens)
    }
}

/// The token of an `Authorization: Bearer <token>` header value, if it
/// has one (the one parser of the header, for every credential kind).
pub fn bearer(header: Option<&str>) -> Option<&str> {
    header
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// The bearer token of a request's headers, if any.
pub fn bearer_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    bearer(
        headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    )
}

/// The accepted bearer tokens, as digests.
#[derive(Clone, Default)]
pub struct BearerTokens {
    digests: Vec<[u8; 32]>,
}

impl std::fmt::Debug for BearerTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BearerTokens({} accepted)", self.digests.len())
    }
}

impl BearerTokens {
    /// Accepts each of `tokens` (the tokens themselves are not kept).
    pub fn new(tokens: &[String]) -> Self {
        Self {
            digests: tokens
                .iter()
                .map(|t| Sha256::digest(t.as_bytes()).into())
                .collect(),
        }
    }

    /// How many tokens are accepted.
    pub fn len(&self) -> usize {
        self.digests.len()
    }

    /// Whether no token is accepted.
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Whether `token` is one of the accepted tokens. Compares SHA-256
    /// digests in constant time, so neither a token's content nor its length
    /// leaks through timing; every configured token is checked.
    pub fn accepts(&self, token: &str) -> bool {
        self.position(token).is_some()
    }

    /// Which of the accepted tokens `token` is (its index in the
    /// configuration), comparing digests in constant time against every one.
    pub fn position(&self, token: &str) -> Option<usize> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.digests.iter().enumerate().fold(None, |found, (i, d)| {
            let equal: bool = d.ct_eq(&digest).into();
            found.or(equal.then_some(i))
        })
    }

    /// Checks a request's `Authorization` header (what each service's
    /// `Authorized` extractor calls).
    pub fn check_headers(&self, headers: &axum::http::HeaderMap) -> Result<(), &'static str> {
        self.authenticate(headers).map(|_| ())
    }

    /// [`Self::check_headers`], answering which token it was (for limits
    /// kept per token).
    pub fn authenticate(&self, headers: &axum::http::HeaderMap) -> Result<usize, &'static str> {
        Self::found(bearer_token(headers).map(|t| self.position(t)))
    }

    /// Checks an `Authorization` header value (`Bearer <token>`); the error
    /// says what is wrong without echoing the token.
    pub fn check_header(&self, header: Option<&str>) -> Result<(), &'static str> {
        Self::found(bearer(header).map(|t| self.position(t))).map(|_| ())
    }

    /// A lookup's outcome (no token / unknown token / which) as the answer.
    fn found(lookup: Option<Option<usize>>) -> Result<usize, &'static str> {
        match lookup {
            Some(Some(index)) => Ok(index),
            Some(None) => Err("invalid bearer token"),
            None => Err("missing bearer token (Authorization: Bearer <token>)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_configured_tokens() {
        let tokens = BearerTokens::new(&["old".into(), "new".into()]);
        assert!(tokens.accepts("old") && tokens.accepts("new"));
        assert!(!tokens.accepts("ne") && !tokens.accepts(""));
        assert_eq!(tokens.check_header(Some("Bearer new")), Ok(()));
        assert_eq!(
            tokens.check_header(Some("Bearer nope")),
            Err("invalid bearer token")
        );
        assert!(tokens.check_header(Some("Basic new")).is_err());
        assert!(tokens.check_header(None).is_err());
        assert!(!format!("{tokens:?}").contains("old"));
        assert_eq!(
            (tokens.position("old"), tokens.position("new")),
            (Some(0), Some(1))
        );
        assert_eq!(tokens.position("other"), None);
    }
}
