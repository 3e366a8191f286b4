//! GitHub App authentication: the app's RS256 JSON web token, signed here
//! with `ring`, and the installation tokens it is traded for.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::Method;
use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::client::{Auth, GitHub};
use crate::error::{GitHubError, token_failure};
use crate::time::parse_rfc3339_ms;

/// A cached installation token is replaced this long before it expires, so
/// no request starts with a token about to lapse.
pub const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

/// How long the app's JSON web token is valid (GitHub allows at most ten
/// minutes; `iat` is backdated a minute for clock drift).
const JWT_LIFETIME: Duration = Duration::from_secs(9 * 60);
const JWT_BACKDATE: Duration = Duration::from_secs(60);

const KEY_FIELD: &str = "github.private_key";

/// An installation access token (`ghs_…`). `Debug` does not show it.
#[derive(Clone)]
pub struct Token {
    secret: Zeroizing<String>,
    expires_at: SystemTime,
}

impl Token {
    /// The token itself, for an `Authorization` header or a git URL.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// When GitHub stops accepting it.
    pub fn expires_at(&self) -> SystemTime {
        self.expires_at
    }

    /// Whether the cache should mint a new token instead of this one.
    fn needs_refresh(&self, now: SystemTime) -> bool {
        now + TOKEN_REFRESH_MARGIN >= self.expires_at
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("secret", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// The app's id and private key.
pub(crate) struct AppKey {
    app_id: u64,
    key: RsaKeyPair,
}

impl fmt::Debug for AppKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppKey")
            .field("app_id", &self.app_id)
            .finish_non_exhaustive()
    }
}

impl AppKey {
    /// Parses a PEM RSA private key, PKCS#1 or PKCS#8. Errors name
    /// `github.private_key` and never repeat the key.
    pub(crate) fn parse(app_id: u64, pem: &str) -> Result<Self, GitHubError> {
        let (label, der) = pem_block(pem).map_err(|why| GitHubError::config(KEY_FIELD, why))?;
        let key = match label.as_str() {
            "RSA PRIVATE KEY" => RsaKeyPair::from_der(&der),
            "PRIVATE KEY" => RsaKeyPair::from_pkcs8(&der),
            "ENCRYPTED PRIVATE KEY" => {
                return Err(GitHubError::config(
                    KEY_FIELD,
                    "the key is encrypted; give ctrl the unencrypted key GitHub issued",
                ));
            }
            other => {
                return Err(GitHubError::config(
                    KEY_FIELD,
                    format!(
                        "expected an RSA private key (PEM `RSA PRIVATE KEY` or `PRIVATE KEY`), found `{other}`"
                    ),
                ));
            }
        }
        .map_err(|e| {
            GitHubError::config(
                KEY_FIELD,
                format!("not a usable RSA private key ({e}); GitHub App keys are RSA, 2048 bits or more"),
            )
        })?;
        Ok(Self { app_id, key })
    }

    pub(crate) fn app_id(&self) -> u64 {
        self.app_id
    }

    /// The app's JSON web token at `now`: `{"alg":"RS256","typ":"JWT"}`,
    /// `iat` a minute ago, `exp` in nine minutes, `iss` the app id.
    pub(crate) fn jwt(&self, now: SystemTime) -> Result<Zeroizing<String>, GitHubError> {
        let unix = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_err(|_| GitHubError::config("clock", "the system clock is before 1970"))?;
        let claims = serde_json::json!({
            "iat": (unix - JWT_BACKDATE).as_secs(),
            "exp": (unix + JWT_LIFETIME).as_secs(),
            "iss": self.app_id.to_string(),
        });
        let mut jwt = Zeroizing::new(format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(claims.to_string()),
        ));
        let mut signature = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                jwt.as_bytes(),
                &mut signature,
            )
            .map_err(|_| {
                GitHubError::config(KEY_FIELD, "signing the app's JSON web token failed")
            })?;
        jwt.push('.');
        jwt.push_str(&URL_SAFE_NO_PAD.encode(signature));
        Ok(jwt)
    }
}

/// The label and DER contents of the first PEM block. Accepts keys whose
/// newlines were written as `\n` (as environment variables often carry them).
fn pem_block(pem: &str) -> Result<(String, Zeroizing<Vec<u8>>), String> {
    let unescaped;
    let pem = if !pem.trim().contains('\n') && pem.contains("\\n") {
        unescaped = Zeroizing::new(pem.replace("\\n", "\n"));
        unescaped.as_str()
    } else {
        pem
    };
    let mut lines = pem.lines().map(str::trim);
    let label = lines
        .by_ref()
        .find_map(|l| l.strip_prefix("-----BEGIN ")?.strip_suffix("-----"))
        .ok_or("not a PEM key: no `-----BEGIN …-----` line")?
        .to_owned();
    let end = format!("-----END {label}-----");
    let mut base64 = Zeroizing::new(String::new());
    let mut ended = false;
    for line in lines {
        if line == end {
            ended = true;
            break;
        }
        if line.contains(':') {
            return Err("the key is encrypted (PEM headers such as Proc-Type); give ctrl the unencrypted key GitHub issued".into());
        }
        base64.push_str(line);
    }
    if !ended {
        return Err(format!("not a PEM key: no `{end}` line"));
    }
    let der = STANDARD
        .decode(base64.as_bytes())
        .map_err(|_| "not a PEM key: the body is not base64".to_owned())?;
    Ok((label, Zeroizing::new(der)))
}

#[derive(Deserialize)]
struct TokenJson {
    token: String,
    expires_at: String,
}

impl GitHub {
    /// A token for the installation, from the cache while it has more than
    /// [`TOKEN_REFRESH_MARGIN`] left, else freshly minted with
    /// `POST /app/installations/{id}/access_tokens`.
    pub async fn installation_token(&self, installation_id: u64) -> Result<Token, GitHubError> {
        let Some(app) = self.inner.app.as_ref() else {
            return Err(GitHubError::config(
                "github.app_id",
                format!(
                    "no GitHub App is configured, so the installation {installation_id} cannot be used"
                ),
            ));
        };
        if installation_id == 0 {
            return Err(GitHubError::invalid("installation_id", "must not be 0"));
        }
        let slot = self.token_slot(installation_id);
        let mut cached = slot.lock().await;
        if let Some(token) = cached.as_ref()
            && !token.needs_refresh(SystemTime::now())
        {
            return Ok(token.clone());
        }
        let token = self.mint(app, installation_id).await?;
        *cached = Some(token.clone());
        Ok(token)
    }

    /// Drops a token GitHub refused, unless it was replaced meanwhile.
    pub(crate) async fn forget_token(&self, installation_id: u64, token: &Token) {
        let slot = self.token_slot(installation_id);
        let mut cached = slot.lock().await;
        if cached.as_ref().is_some_and(|c| c.secret == token.secret) {
            *cached = None;
        }
    }

    fn token_slot(&self, installation_id: u64) -> Arc<tokio::sync::Mutex<Option<Token>>> {
        let mut tokens = self
            .inner
            .tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        tokens.entry(installation_id).or_default().clone()
    }

    async fn mint(&self, app: &AppKey, installation_id: u64) -> Result<Token, GitHubError> {
        let jwt = app.jwt(SystemTime::now())?;
        let path = format!("/app/installations/{installation_id}/access_tokens");
        let body = match self
            .call(Method::POST, &path, &Auth::Jwt(&jwt), None)
            .await?
        {
            Ok(body) => body,
            Err(failure) => return Err(token_failure(&failure, app.app_id(), installation_id)),
        };
        let parsed: TokenJson = serde_json::from_slice(&body)
            .map_err(|e| GitHubError::Transient(format!("POST {path}: unexpected answer: {e}")))?;
        let token = Zeroizing::new(parsed.token);
        let expires_ms = parse_rfc3339_ms(&parsed.expires_at).ok_or_else(|| {
            GitHubError::Transient(format!(
                "POST {path}: unreadable expires_at `{}`",
                parsed.expires_at
            ))
        })?;
        let expires_at = SystemTime::UNIX_EPOCH
            + Duration::from_millis(u64::try_from(expires_ms).unwrap_or_default());
        tracing::debug!(
            installation_id,
            ?expires_at,
            "minted a GitHub installation token"
        );
        Ok(Token {
            secret: token,
            expires_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    use ctrl_testkit::github::{TEST_APP_KEY_PEM, public_key_der};
    use ring::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};

    use super::*;

    #[test]
    fn jwt_is_rs256_signed_with_githubs_claims() {
        let key = AppKey::parse(12345, TEST_APP_KEY_PEM).unwrap();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let jwt = key.jwt(now).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header, serde_json::json!({"alg": "RS256", "typ": "JWT"}));
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(
            claims,
            serde_json::json!({"iat": 1_800_000_000 - 60, "exp": 1_800_000_000 + 540, "iss": "12345"})
        );
        let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        let public = public_key_der(TEST_APP_KEY_PEM);
        let verifier = UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &public);
        let signed = format!("{}.{}", parts[0], parts[1]);
        verifier.verify(signed.as_bytes(), &signature).unwrap();
        // Tampered claims do not verify.
        let forged = format!("{}.{}", parts[0], URL_SAFE_NO_PAD.encode(br#"{"iss":"1"}"#));
        assert!(verifier.verify(forged.as_bytes(), &signature).is_err());
    }

    #[test]
    fn accepts_pkcs1_pkcs8_and_escaped_newlines() {
        let pkcs1 = pem_block(TEST_APP_KEY_PEM).unwrap().1;
        let pkcs8 = pkcs8_from_pkcs1(&pkcs1);
        let pem8 = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            STANDARD.encode(pkcs8)
        );
        let a = AppKey::parse(1, TEST_APP_KEY_PEM).unwrap();
        let b = AppKey::parse(1, &pem8).unwrap();
        assert_eq!(a.key.public().as_ref(), b.key.public().as_ref());
        let escaped = TEST_APP_KEY_PEM.trim().replace('\n', "\\n");
        let c = AppKey::parse(1, &escaped).unwrap();
        assert_eq!(a.key.public().as_ref(), c.key.public().as_ref());
    }

    #[test]
    fn key_errors_name_the_field_and_never_the_key() {
        let body_line = TEST_APP_KEY_PEM.lines().nth(1).unwrap();
        let cases = [
            ("", "no `-----BEGIN"),
            ("hello", "no `-----BEGIN"),
            (
                &TEST_APP_KEY_PEM[..TEST_APP_KEY_PEM.len() / 2],
                "no `-----END RSA PRIVATE KEY-----` line",
            ),
            (
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----",
                "found `CERTIFICATE`",
            ),
            (
                "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----",
                "encrypted",
            ),
            (
                "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nAAAA\n-----END RSA PRIVATE KEY-----",
                "encrypted",
            ),
            (
                "-----BEGIN RSA PRIVATE KEY-----\n!!!!\n-----END RSA PRIVATE KEY-----",
                "not base64",
            ),
            (
                "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----",
                "not a usable RSA private key",
            ),
        ];
        for (pem, want) in cases {
            let e = AppKey::parse(1, pem).unwrap_err();
            let GitHubError::Config { field, why } = &e else {
                panic!("{e:?}");
            };
            assert_eq!(*field, "github.private_key");
            assert!(why.contains(want), "{pem:?}: {why}");
            assert!(!e.to_string().contains(body_line));
        }
    }

    #[test]
    fn tokens_refresh_five_minutes_before_expiry() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let token = |left: u64| Token {
            secret: Zeroizing::new("ghs_x".into()),
            expires_at: now + Duration::from_secs(left),
        };
        assert!(!token(3600).needs_refresh(now));
        assert!(!token(301).needs_refresh(now));
        assert!(token(300).needs_refresh(now));
        assert!(token(0).needs_refresh(now));
        assert!(!format!("{:?}", token(1)).contains("ghs_x"));
    }

    /// PKCS#8 `PrivateKeyInfo` around a PKCS#1 RSA key (DER by hand).
    fn pkcs8_from_pkcs1(pkcs1: &[u8]) -> Vec<u8> {
        fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
            let mut out = vec![tag];
            let len = body.len();
            if len < 128 {
                out.push(len as u8);
            } else {
                let bytes: Vec<u8> = len
                    .to_be_bytes()
                    .into_iter()
                    .skip_while(|b| *b == 0)
                    .collect();
                out.push(0x80 | bytes.len() as u8);
                out.extend(bytes);
            }
            out.extend_from_slice(body);
            out
        }
        // rsaEncryption 1.2.840.113549.1.1.1, NULL parameters.
        let oid = [
            0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
        ];
        let algorithm = tlv(0x30, &[&oid[..], &[0x05, 0x00]].concat());
        let body = [&[0x02, 0x01, 0x00][..], &algorithm, &tlv(0x04, pkcs1)].concat();
        tlv(0x30, &body)
    }
}
