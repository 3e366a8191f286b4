//! An ACME client cut into steps a durable workflow can journal.
//!
//! Each method is one round of requests against the CA that is safe to run
//! again: the order is addressed by its URL (journaled by the caller after
//! [`Session::new_order`]), [`Session::answer`] only answers challenges still
//! `pending`, and [`Session::finalize`] only finalizes an order still
//! `ready` — so a worker that crashes anywhere resumes the same order and
//! never orders a second certificate. Every request has a deadline.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeStatus, ChallengeType, Identifier,
    NewAccount, NewOrder, Order, OrderStatus, Problem, RetryPolicy,
};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::AcmeError;

/// First wait before re-reading an order the CA is working on, then
/// growing by [`POLL_BACKOFF`]: a fast CA answers within a round or two, a
/// slow one is asked rarely.
const POLL_FIRST: Duration = Duration::from_millis(100);
/// Growth of the wait between two reads of an order.
const POLL_BACKOFF: f32 = 2.0;

/// Let's Encrypt's production directory.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory (untrusted certificates, generous limits).
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// The directory URL for a configured name: `letsencrypt`,
/// `letsencrypt-staging`, or a URL as is.
pub fn directory_url(name: &str) -> &str {
    match name {
        "letsencrypt" => LETS_ENCRYPT,
        "letsencrypt-staging" => LETS_ENCRYPT_STAGING,
        url => url,
    }
}

/// How a certificate's names are proven.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChallengeKind {
    /// A file the edge serves at `/.well-known/acme-challenge/{token}`.
    Http01,
    /// A TXT record at `_acme-challenge.{domain}` (the only way for wildcards).
    Dns01,
}

impl ChallengeKind {
    /// The kind a hostname needs: DNS-01 for wildcards, else HTTP-01.
    pub fn for_hostname(hostname: &str) -> Self {
        if hostname.starts_with("*.") {
            Self::Dns01
        } else {
            Self::Http01
        }
    }

    /// As stored (`http-01`, `dns-01`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http01 => "http-01",
            Self::Dns01 => "dns-01",
        }
    }

    fn acme(self) -> ChallengeType {
        match self {
            Self::Http01 => ChallengeType::Http01,
            Self::Dns01 => ChallengeType::Dns01,
        }
    }
}

/// What to publish so the CA can validate one name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presentation {
    /// The name being validated (a wildcard's base domain for DNS-01).
    pub identifier: String,
    /// HTTP-01: the token in the path; DNS-01: the TXT record's name
    /// (`_acme-challenge.{identifier}`, no trailing dot).
    pub name: String,
    /// HTTP-01: the key authorization to answer; DNS-01: the TXT value.
    pub value: String,
}

/// A CA by its directory, with the roots to trust for its API.
#[derive(Debug, Clone)]
pub struct Directory {
    url: String,
    ca_bundle: Option<PathBuf>,
    timeout: Duration,
}

impl Directory {
    /// `url` of the directory; `ca_bundle` a PEM file to trust instead of the
    /// system roots (a private CA such as pebble); `timeout` bounds each
    /// request.
    pub fn new(url: &str, ca_bundle: Option<&Path>, timeout: Duration) -> Self {
        Self {
            url: directory_url(url).to_owned(),
            ca_bundle: ca_bundle.map(Path::to_path_buf),
            timeout,
        }
    }

    /// The directory URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn builder(&self) -> Result<instant_acme::AccountBuilder, AcmeError> {
        match &self.ca_bundle {
            Some(path) => Account::builder_with_root(path)
                .map_err(|e| AcmeError::Config(format!("CA bundle {}: {e}", path.display()))),
            None => Account::builder().map_err(|e| AcmeError::Config(e.to_string())),
        }
    }

    /// Registers a new account (terms agreed) with `contact` as its email.
    /// Returns its URL and its credentials (JSON with the private key: seal
    /// them before storing).
    pub async fn create_account(
        &self,
        contact: &str,
    ) -> Result<(String, Zeroizing<String>), AcmeError> {
        let mailto = format!("mailto:{contact}");
        let new = NewAccount {
            contact: &[&mailto],
            terms_of_service_agreed: true,
            only_return_existing: false,
        };
        let (account, credentials) = self
            .bounded(self.builder()?.create(&new, self.url.clone(), None))
            .await?;
        let json = serde_json::to_string(&credentials)
            .map_err(|e| AcmeError::Config(format!("cannot encode account credentials: {e}")))?;
        Ok((account.id().to_owned(), Zeroizing::new(json)))
    }

    /// A session of the account whose credentials [`Self::create_account`]
    /// returned.
    pub async fn session(&self, credentials: &str) -> Result<Session, AcmeError> {
        let credentials: AccountCredentials = serde_json::from_str(credentials)
            .map_err(|e| AcmeError::Config(format!("stored ACME account is unreadable: {e}")))?;
        let account = self
            .bounded(self.builder()?.from_credentials(credentials))
            .await?;
        Ok(Session {
            account,
            timeout: self.timeout,
        })
    }

    async fn bounded<T>(
        &self,
        f: impl Future<Output = Result<T, instant_acme::Error>>,
    ) -> Result<T, AcmeError> {
        bounded(self.timeout, &self.url, f).await
    }
}

async fn bounded<T>(
    timeout: Duration,
    what: &str,
    f: impl Future<Output = Result<T, instant_acme::Error>>,
) -> Result<T, AcmeError> {
    match tokio::time::timeout(timeout, f).await {
        Ok(result) => result.map_err(|e| match AcmeError::from(e) {
            AcmeError::Transient(m) => AcmeError::Transient(format!("ACME server at {what}: {m}")),
            other => other,
        }),
        Err(_) => Err(AcmeError::Transient(format!(
            "the ACME server at {what} did not answer within {timeout:?}"
        ))),
    }
}

/// An account logged in to its CA; cheap to clone, and meant to be kept:
/// it holds the directory and its connections (one TLS handshake, not one
/// per step).
#[derive(Clone)]
pub struct Session {
    account: Account,
    timeout: Duration,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("account", &self.account.id())
            .finish()
    }
}

/// Where an order stands after [`Session::wait_ready`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validation {
    /// Every name is validated: finalize.
    Ready,
    /// The CA is still validating.
    Pending,
}

impl Session {
    async fn order(&self, url: &str) -> Result<Order, AcmeError> {
        bounded(self.timeout, url, self.account.order(url.to_owned())).await
    }

    /// Orders a certificate for `hostname` (maybe `*.domain`); returns the
    /// order's URL, by which every later step finds it again.
    pub async fn new_order(&self, hostname: &str) -> Result<String, AcmeError> {
        let ids = [Identifier::Dns(hostname.to_owned())];
        let order = bounded(
            self.timeout,
            hostname,
            self.account.new_order(&NewOrder::new(&ids)),
        )
        .await?;
        Ok(order.url().to_owned())
    }

    /// What to publish for each of the order's names still to validate.
    pub async fn presentations(
        &self,
        order_url: &str,
        kind: ChallengeKind,
    ) -> Result<Vec<Presentation>, AcmeError> {
        self.within(order_url, async {
            let mut order = self.order(order_url).await?;
            let mut out = Vec::new();
            let mut authorizations = order.authorizations();
            while let Some(authz) = authorizations.next().await {
                let mut authz = authz?;
                match authz.status {
                    AuthorizationStatus::Pending => {}
                    AuthorizationStatus::Valid => continue,
                    status => {
                        return Err(AcmeError::Refused(format!(
                            "the authorization for {} is {status:?}",
                            authz.identifier()
                        )));
                    }
                }
                let identifier = match &authz.identifier().identifier {
                    Identifier::Dns(d) => d.clone(),
                    other => {
                        return Err(AcmeError::Refused(format!(
                            "unexpected identifier {other:?}"
                        )));
                    }
                };
                let Some(challenge) = authz.challenge(kind.acme()) else {
                    return Err(AcmeError::Refused(format!(
                        "the CA offers no {} challenge for {identifier}",
                        kind.as_str()
                    )));
                };
                let key_authorization = challenge.key_authorization();
                out.push(match kind {
                    ChallengeKind::Http01 => Presentation {
                        identifier,
                        name: challenge.token.clone(),
                        value: key_authorization.as_str().to_owned(),
                    },
                    ChallengeKind::Dns01 => Presentation {
                        name: format!("_acme-challenge.{identifier}"),
                        identifier,
                        value: key_authorization.dns_value(),
                    },
                });
            }
            Ok(out)
        })
        .await
    }

    /// Tells the CA the challenges are published (only those still
    /// `pending`: answering twice is harmless).
    pub async fn answer(&self, order_url: &str, kind: ChallengeKind) -> Result<(), AcmeError> {
        self.within(order_url, async {
            let mut order = self.order(order_url).await?;
            let mut authorizations = order.authorizations();
            while let Some(authz) = authorizations.next().await {
                let mut authz = authz?;
                if authz.status != AuthorizationStatus::Pending {
                    continue;
                }
                let Some(mut challenge) = authz.challenge(kind.acme()) else {
                    continue;
                };
                if challenge.status == ChallengeStatus::Pending {
                    challenge.set_ready().await?;
                }
            }
            Ok(())
        })
        .await
    }

    /// Runs one step's requests within the request deadline (a step makes a
    /// handful of requests; each must not hang).
    async fn within<T>(
        &self,
        what: &str,
        f: impl Future<Output = Result<T, AcmeError>>,
    ) -> Result<T, AcmeError> {
        let deadline = self.timeout * 4;
        tokio::time::timeout(deadline, f).await.unwrap_or_else(|_| {
            Err(AcmeError::Transient(format!(
                "the ACME server did not answer within {deadline:?} ({what})"
            )))
        })
    }

    /// Waits up to `patience` for the CA to validate; an invalid order is
    /// [`AcmeError::Refused`] with the CA's reason.
    pub async fn wait_ready(
        &self,
        order_url: &str,
        patience: Duration,
    ) -> Result<Validation, AcmeError> {
        let mut order = self.order(order_url).await?;
        let policy = RetryPolicy::new()
            .initial_delay(POLL_FIRST)
            .backoff(POLL_BACKOFF)
            .timeout(patience);
        let status = match tokio::time::timeout(patience + self.timeout, order.poll_ready(&policy))
            .await
        {
            Ok(Ok(status)) => status,
            Ok(Err(instant_acme::Error::Timeout(_))) | Err(_) => return Ok(Validation::Pending),
            Ok(Err(e)) => return Err(e.into()),
        };
        match status {
            OrderStatus::Ready | OrderStatus::Processing | OrderStatus::Valid => {
                Ok(Validation::Ready)
            }
            OrderStatus::Pending => Ok(Validation::Pending),
            OrderStatus::Invalid => Err(AcmeError::Refused(self.why_invalid(&mut order).await)),
        }
    }

    /// The CA's reason an order became invalid (the failed challenge's error).
    async fn why_invalid(&self, order: &mut Order) -> String {
        let mut reasons = Vec::new();
        if let Some(p) = &order.state().error {
            reasons.push(problem_text(p));
        }
        let mut authorizations = order.authorizations();
        while let Ok(Some(Ok(authz))) =
            tokio::time::timeout(self.timeout, authorizations.next()).await
        {
            for c in &authz.challenges {
                if let Some(p) = &c.error {
                    reasons.push(format!("{}: {}", authz.identifier(), problem_text(p)));
                }
            }
        }
        if reasons.is_empty() {
            "the CA marked the order invalid without a reason".into()
        } else {
            reasons.join("; ")
        }
    }

    /// Finalizes the order with `csr_der` if it is still `ready`, then waits
    /// up to `patience` for the chain (PEM, leaf first).
    pub async fn finalize(
        &self,
        order_url: &str,
        csr_der: &[u8],
        patience: Duration,
    ) -> Result<String, AcmeError> {
        let mut order = self.order(order_url).await?;
        match order.state().status {
            OrderStatus::Ready => {
                bounded(self.timeout, order_url, order.finalize_csr(csr_der)).await?;
            }
            OrderStatus::Processing | OrderStatus::Valid => {}
            OrderStatus::Invalid => {
                return Err(AcmeError::Refused(self.why_invalid(&mut order).await));
            }
            OrderStatus::Pending => {
                return Err(AcmeError::Transient(
                    "the order is not validated yet".into(),
                ));
            }
        }
        let policy = RetryPolicy::new()
            .initial_delay(POLL_FIRST)
            .backoff(POLL_BACKOFF)
            .timeout(patience);
        match tokio::time::timeout(patience + self.timeout, order.poll_certificate(&policy)).await {
            Ok(result) => result.map_err(AcmeError::from),
            Err(_) => Err(AcmeError::Transient(format!(
                "the CA did not issue the certificate within {patience:?}"
            ))),
        }
    }
}

/// A fresh P-256 key and a CSR for `hostname`: the key as PEM (seal it),
/// the CSR as DER.
pub fn key_and_csr(hostname: &str) -> Result<(Zeroizing<String>, Vec<u8>), AcmeError> {
    let mut params = rcgen::CertificateParams::new(vec![hostname.to_owned()])
        .map_err(|e| AcmeError::Refused(format!("{hostname:?} cannot be certified: {e}")))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let key = rcgen::KeyPair::generate()
        .map_err(|e| AcmeError::Config(format!("cannot generate a key: {e}")))?;
    let csr = params
        .serialize_request(&key)
        .map_err(|e| AcmeError::Config(format!("cannot build the CSR: {e}")))?;
    Ok((Zeroizing::new(key.serialize_pem()), csr.der().to_vec()))
}

/// The leaf's expiry (unix ms) and the names it covers, from a PEM chain.
pub fn inspect_chain(chain_pem: &str) -> Result<(i64, Vec<String>), AcmeError> {
    let bad = |why: String| AcmeError::Refused(format!("the CA returned an unusable chain: {why}"));
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(chain_pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
    let cert = pem.parse_x509().map_err(|e| bad(e.to_string()))?;
    let not_after = cert.validity().not_after.timestamp().saturating_mul(1000);
    let names = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some((*d).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Ok((not_after, names))
}

/// A problem document as one line for users: the detail, then the type.
fn problem_text(p: &Problem) -> String {
    let kind = p
        .r#type
        .as_deref()
        .map(|t| t.trim_start_matches("urn:ietf:params:acme:error:"));
    match (&p.detail, kind) {
        (Some(d), Some(k)) => format!("{d} ({k})"),
        (Some(d), None) => d.clone(),
        (None, Some(k)) => k.to_owned(),
        (None, None) => "unspecified error".into(),
    }
}

impl From<instant_acme::Error> for AcmeError {
    fn from(e: instant_acme::Error) -> Self {
        match e {
            instant_acme::Error::Api(p) => {
                let kind = p.r#type.as_deref().unwrap_or_default();
                let text = problem_text(&p);
                if kind.ends_with(":rateLimited") {
                    AcmeError::RateLimited {
                        retry_after: retry_after_from_detail(p.detail.as_deref().unwrap_or("")),
                        detail: text,
                    }
                } else if kind.ends_with(":serverInternal")
                    || kind.ends_with(":badNonce")
                    || p.status.is_some_and(|s| s >= 500)
                {
                    AcmeError::Transient(text)
                } else {
                    AcmeError::Refused(text)
                }
            }
            instant_acme::Error::Timeout(_) => {
                AcmeError::Transient("the ACME server did not finish in time".into())
            }
            other => AcmeError::Transient(other.to_string()),
        }
    }
}

/// Let's Encrypt names the end of a rate limit in its detail ("… retry
/// after 2026-12-05 10:00:00 UTC …"); the Retry-After header does not reach
/// us through the client.
fn retry_after_from_detail(detail: &str) -> Option<SystemTime> {
    let at = detail.to_ascii_lowercase().find("retry after ")? + "retry after ".len();
    let rest = &detail[at..];
    // "YYYY-MM-DD HH:MM:SS" (LE) or RFC 3339.
    let stamp: String = rest.chars().take(19).collect();
    let stamp = stamp.replacen(' ', "T", 1);
    let (date, time) = stamp.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, dd) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    let days = days_from_civil(y, m, dd);
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_need_dns_01() {
        assert_eq!(
            ChallengeKind::for_hostname("*.ctrl.example.com"),
            ChallengeKind::Dns01
        );
        assert_eq!(
            ChallengeKind::for_hostname("shop.example.com"),
            ChallengeKind::Http01
        );
    }

    #[test]
    fn directories_by_name() {
        assert_eq!(directory_url("letsencrypt"), LETS_ENCRYPT);
        assert_eq!(directory_url("letsencrypt-staging"), LETS_ENCRYPT_STAGING);
        assert_eq!(
            directory_url("https://127.0.0.1:14000/dir"),
            "https://127.0.0.1:14000/dir"
        );
    }

    #[test]
    fn a_rate_limit_names_its_end() {
        let at = retry_after_from_detail(
            "too many certificates (5) already issued for this exact set of identifiers in the last 168h0m0s, retry after 2026-12-05 10:00:00 UTC: see https://letsencrypt.org/docs/rate-limits/",
        )
        .expect("parsed");
        let secs = at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(secs, 1_796_464_800);
        assert_eq!(retry_after_from_detail("no hint here"), None);
    }

    #[test]
    fn problems_are_classified() {
        let problem = |kind: &str, status: u16| {
            instant_acme::Error::Api(
                serde_json::from_value::<Problem>(serde_json::json!({
                    "type": format!("urn:ietf:params:acme:error:{kind}"),
                    "detail": "because",
                    "status": status,
                }))
                .unwrap(),
            )
        };
        assert!(matches!(
            AcmeError::from(problem("rateLimited", 429)),
            AcmeError::RateLimited { .. }
        ));
        assert!(matches!(
            AcmeError::from(problem("serverInternal", 500)),
            AcmeError::Transient(_)
        ));
        let refused = AcmeError::from(problem("rejectedIdentifier", 400));
        assert_eq!(
            refused,
            AcmeError::Refused("because (rejectedIdentifier)".into())
        );
    }

    #[test]
    fn a_csr_and_key_are_made_for_the_name() {
        let (key, csr) = key_and_csr("shop.example.com").unwrap();
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(!csr.is_empty());
    }
}
