//! [`GitHub`], its configuration, and the one place requests are sent.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use http::header::{ACCEPT, AUTHORIZATION};
use http::{HeaderValue, Method, Response};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use octocrab::Octocrab;
use tokio::time::Instant;
use zeroize::Zeroizing;

use crate::app::{AppKey, Token};
use crate::error::{Failure, GitHubError};

/// GitHub's public API.
pub const DEFAULT_API_URL: &str = "https://api.github.com";

/// The most a JSON answer may weigh; GitHub's are a few kilobytes.
const MAX_JSON_BYTES: u64 = 4 << 20;

/// How much of an error body is kept for its message.
const MAX_ERROR_BYTES: u64 = 64 << 10;

/// How ctrl talks to GitHub (`[github]` in the worker's configuration).
#[derive(Clone)]
pub struct GitHubConfig {
    /// The REST API's base URL; `https://api.github.com` unless GitHub
    /// Enterprise Server or a test fake is used.
    pub api_url: String,
    /// The GitHub App's id; 0 when ctrl has no app (public repositories only).
    pub app_id: u64,
    /// The app's private key as PEM: PKCS#1 (`BEGIN RSA PRIVATE KEY`, what
    /// GitHub hands out) or PKCS#8 (`BEGIN PRIVATE KEY`). Empty without app.
    pub private_key_pem: Zeroizing<String>,
    /// Whether repositories may be read without an installation (public
    /// repositories, anonymously, at GitHub's low anonymous rate limit).
    pub allow_unauthenticated: bool,
    /// Deadline of each API request, from sending to the end of the answer.
    pub request_timeout: Duration,
    /// Deadline of a whole tarball download (its first byte must still come
    /// within `request_timeout`).
    pub tarball_timeout: Duration,
    /// The largest tarball ctrl downloads.
    pub max_tarball_bytes: u64,
}

impl Default for GitHubConfig {
    fn default() -> Self {
        Self {
            api_url: DEFAULT_API_URL.to_owned(),
            app_id: 0,
            private_key_pem: Zeroizing::new(String::new()),
            allow_unauthenticated: false,
            request_timeout: Duration::from_secs(30),
            tarball_timeout: Duration::from_secs(600),
            max_tarball_bytes: 512 << 20,
        }
    }
}

impl fmt::Debug for GitHubConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = if self.private_key_pem.trim().is_empty() {
            "<none>"
        } else {
            "<redacted>"
        };
        f.debug_struct("GitHubConfig")
            .field("api_url", &self.api_url)
            .field("app_id", &self.app_id)
            .field("private_key_pem", &key)
            .field("allow_unauthenticated", &self.allow_unauthenticated)
            .field("request_timeout", &self.request_timeout)
            .field("tarball_timeout", &self.tarball_timeout)
            .field("max_tarball_bytes", &self.max_tarball_bytes)
            .finish()
    }
}

/// A GitHub App client. Cheap to clone; clones share the HTTP connections
/// and the installation-token cache.
#[derive(Clone)]
pub struct GitHub {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    crab: Octocrab,
    api_url: String,
    pub(crate) app: Option<AppKey>,
    pub(crate) allow_unauthenticated: bool,
    pub(crate) request_timeout: Duration,
    pub(crate) tarball_timeout: Duration,
    pub(crate) max_tarball_bytes: u64,
    /// One slot per installation, locked while a token is minted so
    /// concurrent callers wait for one mint instead of each minting.
    pub(crate) tokens: Mutex<HashMap<u64, Arc<tokio::sync::Mutex<Option<Token>>>>>,
}

impl fmt::Debug for GitHub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitHub")
            .field("api_url", &self.inner.api_url)
            .field("app_id", &self.inner.app.as_ref().map(AppKey::app_id))
            .field("allow_unauthenticated", &self.inner.allow_unauthenticated)
            .finish_non_exhaustive()
    }
}

impl GitHub {
    /// Checks the configuration (URL, key, limits) and builds the client.
    /// Sends nothing.
    pub fn new(cfg: GitHubConfig) -> Result<Self, GitHubError> {
        // Taken apart so a new field cannot be forgotten here; the key is
        // zeroized when `private_key_pem` drops.
        let GitHubConfig {
            api_url,
            app_id,
            private_key_pem,
            allow_unauthenticated,
            request_timeout,
            tarball_timeout,
            max_tarball_bytes,
        } = cfg;
        let api_url = api_url.trim().trim_end_matches('/').to_owned();
        let uri: http::Uri = api_url.parse().map_err(|e| {
            GitHubError::config("github.api_url", format!("`{api_url}` is not a URL: {e}"))
        })?;
        if !matches!(uri.scheme_str(), Some("http" | "https"))
            || uri.authority().is_none()
            || uri.query().is_some()
        {
            return Err(GitHubError::config(
                "github.api_url",
                format!("`{api_url}` is not an http(s) URL without query"),
            ));
        }
        if request_timeout.is_zero() {
            return Err(GitHubError::config(
                "github.request_timeout",
                "must be more than zero",
            ));
        }
        if tarball_timeout.is_zero() {
            return Err(GitHubError::config(
                "github.tarball_timeout",
                "must be more than zero",
            ));
        }
        if max_tarball_bytes == 0 {
            return Err(GitHubError::config(
                "github.max_tarball_bytes",
                "must be more than zero",
            ));
        }
        let app = match (app_id, private_key_pem.trim().is_empty()) {
            (0, true) => None,
            (0, false) => {
                return Err(GitHubError::config(
                    "github.app_id",
                    "github.private_key is set but github.app_id is not",
                ));
            }
            (_, true) => {
                return Err(GitHubError::config(
                    "github.private_key",
                    "github.app_id is set but the app's private key is not",
                ));
            }
            (app_id, false) => Some(AppKey::parse(app_id, &private_key_pem)?),
        };
        let crab = Octocrab::builder()
            .base_uri(api_url.as_str())
            .map_err(|e| GitHubError::config("github.api_url", e.to_string()))?
            .set_connect_timeout(Some(request_timeout))
            .set_read_timeout(Some(request_timeout))
            .set_write_timeout(Some(request_timeout))
            .build()
            .map_err(|e| {
                GitHubError::config("github.api_url", format!("cannot set up HTTPS: {e}"))
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                crab,
                api_url,
                app,
                allow_unauthenticated,
                request_timeout,
                tarball_timeout,
                max_tarball_bytes,
                tokens: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Sends one request with GitHub's headers (and `body` as JSON) and
    /// returns once the answer's head has arrived (octocrab follows
    /// redirects on the way).
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        auth: &Auth<'_>,
        body: Option<&serde_json::Value>,
        deadline: Instant,
    ) -> Result<Response<Body>, GitHubError> {
        let mut request = http::Request::builder()
            .method(method.clone())
            .uri(format!("{}{path}", self.inner.api_url))
            .header(ACCEPT, "application/vnd.github+json");
        let credential = match auth {
            Auth::Anonymous => None,
            Auth::Jwt(jwt) => Some(Zeroizing::new(format!("Bearer {}", jwt.as_str()))),
            Auth::Token(token) => Some(Zeroizing::new(format!("token {}", token.secret()))),
        };
        if let Some(credential) = credential {
            let mut value = HeaderValue::from_str(&credential).map_err(|_| {
                GitHubError::Transient("GitHub issued a token that is not a valid header".into())
            })?;
            value.set_sensitive(true);
            request = request.header(AUTHORIZATION, value);
        }
        // octocrab adds `X-GitHub-Api-Version: 2022-11-28` and its User-Agent.
        let request =
            self.inner.crab.build_request(request, body).map_err(|e| {
                GitHubError::Transient(format!("cannot build {method} {path}: {e}"))
            })?;
        tracing::debug!(%method, path, "GitHub request");
        match tokio::time::timeout_at(deadline, self.inner.crab.execute(request)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(GitHubError::Transient(format!("{method} {path}: {e}"))),
            Err(_) => Err(GitHubError::Transient(format!(
                "{method} {path}: no answer within {:?}",
                self.inner.request_timeout
            ))),
        }
    }

    /// Sends a request with a small answer: `Ok(Ok(body))` for 2xx,
    /// `Ok(Err(failure))` for any other status.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        auth: &Auth<'_>,
        body: Option<&serde_json::Value>,
    ) -> Result<Result<Bytes, Failure>, GitHubError> {
        let deadline = Instant::now() + self.inner.request_timeout;
        let response = self
            .send(method.clone(), path, auth, body, deadline)
            .await?;
        read_answer(response, deadline, &format!("{method} {path}")).await
    }
}

/// Reads the answer of [`GitHub::send`] like [`GitHub::call`] does.
pub(crate) async fn read_answer(
    response: Response<Body>,
    deadline: Instant,
    what: &str,
) -> Result<Result<Bytes, Failure>, GitHubError> {
    let (parts, body) = response.into_parts();
    if parts.status.is_success() {
        match read_body(body, MAX_JSON_BYTES, deadline, false).await {
            Ok(bytes) => Ok(Ok(bytes)),
            Err(ReadError::TooLarge) => Err(GitHubError::Transient(format!(
                "{what}: the answer is larger than {MAX_JSON_BYTES} bytes"
            ))),
            Err(e) => Err(e.into_error(what)),
        }
    } else {
        let bytes = read_body(body, MAX_ERROR_BYTES, deadline, true)
            .await
            .map_err(|e| e.into_error(what))?;
        Ok(Err(Failure::new(
            parts.status.as_u16(),
            &parts.headers,
            &bytes,
            SystemTime::now(),
        )))
    }
}

/// The credential a request carries.
pub(crate) enum Auth<'a> {
    Anonymous,
    /// The app's JSON web token (`Authorization: Bearer …`), for `/app/…`.
    Jwt(&'a Zeroizing<String>),
    /// An installation token (`Authorization: token …`), for repositories.
    Token(&'a Token),
}

pub(crate) type Body = BoxBody<Bytes, octocrab::Error>;

#[derive(Debug)]
pub(crate) enum ReadError {
    TooLarge,
    Timeout,
    Failed(String),
}

impl ReadError {
    pub(crate) fn into_error(self, what: &str) -> GitHubError {
        match self {
            Self::TooLarge => GitHubError::Transient(format!("{what}: the answer is too large")),
            Self::Timeout => {
                GitHubError::Transient(format!("{what}: the answer did not finish in time"))
            }
            Self::Failed(e) => {
                GitHubError::Transient(format!("{what}: reading the answer failed: {e}"))
            }
        }
    }
}

/// Reads a body up to `limit` bytes before `deadline`. Past the limit it
/// fails with [`ReadError::TooLarge`], or, with `truncate`, stops reading
/// and returns what it has.
pub(crate) async fn read_body(
    mut body: Body,
    limit: u64,
    deadline: Instant,
    truncate: bool,
) -> Result<Bytes, ReadError> {
    let mut buf = BytesMut::new();
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(ReadError::Timeout),
            Ok(None) => return Ok(buf.freeze()),
            Ok(Some(Err(e))) => return Err(ReadError::Failed(e.to_string())),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        let room = usize::try_from(limit).unwrap_or(usize::MAX) - buf.len();
        if data.len() > room {
            if truncate {
                buf.extend_from_slice(&data[..room]);
                return Ok(buf.freeze());
            }
            return Err(ReadError::TooLarge);
        }
        buf.extend_from_slice(&data);
    }
}
