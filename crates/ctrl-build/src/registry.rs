//! The container registry builds push to: its address, the path prefix of
//! ctrl's images, credentials, and a small client of the Distribution API
//! for what the engine does not tell us reliably — the digest a tag points
//! to (`HEAD /v2/<name>/manifests/<tag>`), with Basic or token auth.

use std::fmt;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::header::{ACCEPT, AUTHORIZATION, LOCATION, WWW_AUTHENTICATE};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use zeroize::Zeroizing;

use crate::builder::{BuildError, BuildEvent, BuildRequest, Built, Events, HowBuilt};

/// HTTPS (rustls on ring, the platform's roots) or plain HTTP. Not reqwest:
/// its rustls needs a process-wide crypto provider, which every other
/// reqwest client in the workspace would then have to install too.
type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// HTTPS (rustls on ring, the platform's roots) or plain HTTP, HTTP/1.1,
/// connecting within `connect_timeout`: the build backends' one HTTP client.
pub(crate) fn https_connector(
    connect_timeout: Duration,
) -> std::io::Result<hyper_rustls::HttpsConnector<HttpConnector>> {
    let mut connector = HttpConnector::new();
    connector.enforce_http(false);
    connector.set_connect_timeout(Some(connect_timeout));
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))?
        .https_or_http()
        .enable_http1()
        .wrap_connector(connector))
}

/// Largest token response read.
const MAX_BODY: usize = 64 << 10;

/// Manifest media types a digest lookup accepts (the registry answers with
/// the digest of the manifest as pushed).
const MANIFEST_TYPES: &str = "application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.index.v1+json";

/// Where images go.
#[derive(Clone)]
pub struct RegistryConfig {
    /// `http://127.0.0.1:5000` or `https://ghcr.io`.
    pub url: String,
    /// The registry's name in image references (what engines push to and
    /// pull from) when it differs from `url`'s host, e.g. the worker reaches
    /// `http://registry:5000` but hosts pull `127.0.0.1:5051/…`; empty =
    /// `url`'s host.
    pub image_host: String,
    /// Path prefix of ctrl's repositories, e.g. `ctrl` or `acme-org/ctrl`.
    pub repository: String,
    /// Empty = anonymous.
    pub username: String,
    /// Password or token.
    pub password: Zeroizing<String>,
    /// Bound on each registry request.
    pub request_timeout: Duration,
}

impl fmt::Debug for RegistryConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryConfig")
            .field("url", &self.url)
            .field("image_host", &self.image_host)
            .field("repository", &self.repository)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// Why a registry request failed.
#[derive(Debug, thiserror::Error)]
#[error("registry {url}: {message}")]
pub struct RegistryError {
    /// The registry.
    pub url: String,
    /// What happened.
    pub message: String,
    /// Whether trying again may help.
    pub transient: bool,
}

/// A client of one registry.
#[derive(Clone)]
pub struct Registry {
    config: RegistryConfig,
    host: String,
    http: HttpClient,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A response's status and headers, and its body if asked for.
struct Response {
    status: StatusCode,
    headers: hyper::HeaderMap,
    body: Bytes,
}

impl Registry {
    /// Checks the configuration (the URL must be http(s)://host[:port]).
    pub fn new(config: RegistryConfig) -> Result<Self, String> {
        let rest = config
            .url
            .strip_prefix("https://")
            .or_else(|| config.url.strip_prefix("http://"))
            .ok_or_else(|| {
                format!(
                    "registry.url {:?} must start with http:// or https://",
                    config.url
                )
            })?;
        let host = rest.trim_end_matches('/');
        if host.is_empty() || host.contains('/') {
            return Err(format!(
                "registry.url {:?} must be scheme://host[:port] without a path (put the path in registry.repository)",
                config.url
            ));
        }
        let repo = config.repository.trim_matches('/');
        if repo.is_empty()
            || !repo.split('/').all(|part| {
                !part.is_empty()
                    && part.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)
                    })
            })
        {
            return Err(format!(
                "registry.repository {:?} must be a path of lowercase letters, digits, \".\", \"_\" and \"-\"",
                config.repository
            ));
        }
        let https = https_connector(config.request_timeout)
            .map_err(|e| format!("registry TLS roots: {e}"))?;
        let http = Client::builder(TokioExecutor::new()).build(https);
        let host = if config.image_host.is_empty() {
            host.to_owned()
        } else {
            config.image_host.clone()
        };
        Ok(Self {
            host,
            config: RegistryConfig {
                repository: repo.to_owned(),
                ..config
            },
            http,
        })
    }

    /// `host[:port]` as it appears in image names.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The configured path prefix.
    pub fn repository_prefix(&self) -> &str {
        &self.config.repository
    }

    /// Credentials for the engine's push, if any.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        (!self.config.username.is_empty())
            .then(|| (self.config.username.as_str(), self.config.password.as_str()))
    }

    fn err(&self, message: impl Into<String>, transient: bool) -> RegistryError {
        RegistryError {
            url: self.config.url.clone(),
            message: message.into(),
            transient,
        }
    }

    /// One request, bounded by the request timeout (headers and body).
    async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(hyper::header::HeaderName, String)],
    ) -> Result<Response, RegistryError> {
        let mut req = Request::builder().method(method.clone()).uri(url);
        for (name, value) in headers {
            req = req.header(name, value);
        }
        let req = req
            .body(Empty::new())
            .map_err(|e| self.err(format!("{method} {url}: {e}"), false))?;
        let exchange = async {
            let response = self
                .http
                .request(req)
                .await
                .map_err(|e| self.err(format!("{method} {url}: {e}"), true))?;
            let (parts, body) = response.into_parts();
            let body = if method == Method::HEAD {
                Bytes::new()
            } else {
                Limited::new(body, MAX_BODY)
                    .collect()
                    .await
                    .map_err(|e| self.err(format!("{method} {url}: {e}"), true))?
                    .to_bytes()
            };
            Ok(Response {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(self.config.request_timeout, exchange)
            .await
            .map_err(|_| {
                self.err(
                    format!(
                        "{method} {url}: no answer within {:?}",
                        self.config.request_timeout
                    ),
                    true,
                )
            })?
    }

    /// What an earlier attempt of `req` pushed, if it did (told to
    /// `events`): the first thing every backend asks, so a retried build is
    /// never built twice.
    pub(crate) async fn earlier_push(
        &self,
        req: &BuildRequest,
        events: &Events,
    ) -> Result<Option<Built>, BuildError> {
        let Some(digest) = self.tag_digest(req).await? else {
            return Ok(None);
        };
        let _ = events
            .send(BuildEvent::Line(format!(
                "{} was pushed by an earlier attempt ({digest}); using it",
                req.image
            )))
            .await;
        Ok(Some(Built {
            image: req.image.by_digest(&digest),
            digest,
            how: HowBuilt::AlreadyPushed,
        }))
    }

    /// The image `req` just pushed, by the digest the registry has for its
    /// tag (told to `events`). `who` names the pusher in the error when the
    /// tag is missing.
    pub(crate) async fn pushed(
        &self,
        req: &BuildRequest,
        events: &Events,
        how: HowBuilt,
        who: &str,
    ) -> Result<Built, BuildError> {
        let digest = self
            .tag_digest(req)
            .await?
            .ok_or_else(|| BuildError::Push {
                image: req.image.tagged(),
                message: format!("{who} finished but the registry does not have the tag"),
                transient: true,
            })?;
        let _ = events
            .send(BuildEvent::Line(format!("Pushed {} ({digest})", req.image)))
            .await;
        Ok(Built {
            image: req.image.by_digest(&digest),
            digest,
            how,
        })
    }

    /// [`Registry::digest`] of `req`'s tag, as a build error.
    async fn tag_digest(&self, req: &BuildRequest) -> Result<Option<String>, BuildError> {
        self.digest(&req.image.path, &req.image.tag)
            .await
            .map_err(|e| BuildError::Push {
                image: req.image.tagged(),
                transient: e.transient,
                message: e.to_string(),
            })
    }

    /// The digest `path:tag` points to, or `None` if the tag does not exist.
    pub async fn digest(&self, path: &str, tag: &str) -> Result<Option<String>, RegistryError> {
        let url = format!(
            "{}/v2/{path}/manifests/{tag}",
            self.config.url.trim_end_matches('/')
        );
        let accept = (ACCEPT, MANIFEST_TYPES.to_owned());
        let mut response = self
            .send(Method::HEAD, &url, std::slice::from_ref(&accept))
            .await?;
        if response.status == StatusCode::UNAUTHORIZED {
            let challenge = response
                .headers
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let auth = self.authorize(&challenge, path).await?;
            response = self
                .send(Method::HEAD, &url, &[accept, (AUTHORIZATION, auth)])
                .await?;
        }
        match response.status {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => response
                .headers
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .filter(|d| d.starts_with("sha256:"))
                .map(|d| Some(d.to_owned()))
                .ok_or_else(|| {
                    self.err("the registry did not return Docker-Content-Digest", false)
                }),
            s if s.is_server_error() => Err(self.err(format!("HEAD {url} answered {s}"), true)),
            s => Err(self.err(
                format!("HEAD {url} answered {s} (check registry.username and registry.password)"),
                false,
            )),
        }
    }

    /// The `Authorization` value answering a `WWW-Authenticate` challenge:
    /// Basic with the configured credentials, or a bearer token from the
    /// challenge's realm (Docker's token auth).
    async fn authorize(&self, challenge: &str, path: &str) -> Result<String, RegistryError> {
        use base64::Engine;
        let basic = self.credentials().map(|(u, p)| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        });
        if challenge.to_ascii_lowercase().starts_with("basic") {
            return basic.ok_or_else(|| {
                self.err(
                    "the registry needs credentials: set registry.username and registry.password",
                    false,
                )
            });
        }
        let Some(params) = challenge.strip_prefix("Bearer ") else {
            return Err(self.err(format!("unsupported auth challenge {challenge:?}"), false));
        };
        let param = |name: &str| {
            params.split(',').find_map(|kv| {
                let (k, v) = kv.trim().split_once('=')?;
                (k == name).then(|| v.trim_matches('"').to_owned())
            })
        };
        let realm =
            param("realm").ok_or_else(|| self.err("token challenge without realm", false))?;
        let url = format!(
            "{realm}?service={}&scope=repository:{path}:pull",
            param("service").unwrap_or_default()
        );
        let mut headers = Vec::new();
        if let Some(basic) = basic {
            headers.push((AUTHORIZATION, basic));
        }
        let mut response = self.send(Method::GET, &url, &headers).await?;
        if response.status.is_redirection()
            && let Some(next) = response.headers.get(LOCATION).and_then(|v| v.to_str().ok())
        {
            let next = next.to_owned();
            response = self.send(Method::GET, &next, &headers).await?;
        }
        if !response.status.is_success() {
            return Err(self.err(
                format!("token request to {realm} answered {}", response.status),
                response.status.is_server_error(),
            ));
        }
        let body: serde_json::Value = serde_json::from_slice(&response.body)
            .map_err(|e| self.err(format!("token response: {e}"), false))?;
        let token = body["token"]
            .as_str()
            .or_else(|| body["access_token"].as_str())
            .ok_or_else(|| self.err("token response without a token", false))?;
        Ok(format!("Bearer {token}"))
    }
}
