//! The request path: hostname → deployment → a backend in this region (or a
//! peer region's edge), with no I/O but the forwarded request itself.
//!
//! Per request: normalise the host (400 if malformed), refuse loops (508
//! past `max_hops`), answer the ACME HTTP-01 path on plain HTTP, look the
//! host up (404), redirect plain HTTP to HTTPS where a certificate exists
//! (308), wake an idle deployment and wait for it (503 + Retry-After when it
//! takes too long), pick a backend by the power of two choices on in-flight
//! requests, and forward with `X-Forwarded-*`, a request id and the hop
//! count. A backend that refuses a connection, or does not accept it within
//! the connect timeout, is ejected for a while, and a request that can be
//! replayed (no body, safe method) goes to another one.
//!
//! Two ways in share these rules: [`Proxy::handle`] for requests hyper's
//! server parsed, and `fast` for the plain HTTP/1.1 requests it serves from
//! their raw bytes (`Proxy::destination` decides for both).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::Body as _;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rand::Rng;

use crate::clock;
use crate::config::Config;
use crate::control::Control;
use crate::headers::{Forward, forward_headers, strip_hop_by_hop};
use crate::metrics::Metrics;
use crate::table::{Backend, Deployment, Routes, State, Upstream};
use crate::traffic::Traffic;
use crate::upstream::{self, Http1Pool, UpstreamBody};
use crate::wake::Wakes;

/// Errors of bodies that cross the proxy.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// A body in either direction.
pub type Body = BoxBody<Bytes, BoxError>;

pub use crate::headers::{DEPLOYMENT, HOPS, REQUEST_ID};
pub use fast::{Left, Rewind};

mod fast;
const ACME_PREFIX: &str = "/.well-known/acme-challenge/";
/// Connection attempts of a replayable request to a deployment it just
/// woke, [`STARTING_RETRY_DELAY`] apart once every instance refused: about
/// three seconds for a freshly started app to listen.
const STARTING_ATTEMPTS: usize = 30;
/// Pause between rounds of those attempts.
const STARTING_RETRY_DELAY: Duration = Duration::from_millis(100);

/// The connection a request came in on.
#[derive(Debug, Clone)]
pub struct Conn {
    /// The client.
    pub peer: SocketAddr,
    /// Over TLS.
    pub tls: bool,
    /// The client's address as a header value, made once per connection.
    client: HeaderValue,
}

impl Conn {
    /// A connection from `peer`.
    pub fn new(peer: SocketAddr, tls: bool) -> Self {
        let client = HeaderValue::try_from(peer.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Self { peer, tls, client }
    }
}

/// What handling a request needs, shared by every connection.
#[derive(Debug)]
pub struct Proxy {
    routes: Arc<Routes>,
    control: Control,
    /// HTTP/1.1 to this region's instances.
    instances: Arc<Http1Pool>,
    /// HTTP/1.1 to peer edges.
    peer_client: Client<HttpConnector, Body>,
    /// h2c to instances that speak it.
    h2c: Client<HttpConnector, Body>,
    peers: Vec<(String, Uri)>,
    https_port: Option<u16>,
    redirect_https: bool,
    response_header_timeout: Duration,
    /// The wait for a client's request head (the fast path's; hyper's own
    /// is set on its builder).
    request_header_timeout: Duration,
    /// The largest request head (the fast path hands a larger one to
    /// hyper, which answers 431).
    max_header_bytes: usize,
    connect_timeout: Duration,
    max_body_bytes: u64,
    max_hops: u32,
    ejection: Duration,
    metrics: Arc<Metrics>,
    traffic: Arc<Traffic>,
    wakes: Arc<Wakes>,
    /// Which worker thread this proxy serves (its metrics and counts shard).
    worker: usize,
    /// Access log lines are on (decided once: the filter is fixed at start).
    access_log: bool,
}

fn client(config: &Config, h2c: bool) -> Client<HttpConnector, Body> {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(config.proxy.connect_timeout()));
    connector.set_nodelay(true);
    connector.enforce_http(true);
    let mut b = Client::builder(TokioExecutor::new());
    b.pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(config.proxy.idle_timeout_seconds))
        .pool_max_idle_per_host(256)
        .timer(TokioTimer::new());
    if h2c {
        b.http2_only(true)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .http2_keep_alive_timeout(Duration::from_secs(10));
    }
    b.build(connector)
}

impl Proxy {
    /// The proxy for `config`; `https_port` is where clients reach TLS
    /// (for redirects), if anywhere.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: &Config,
        worker: usize,
        https_port: Option<u16>,
        routes: Arc<Routes>,
        control: Control,
        metrics: Arc<Metrics>,
        traffic: Arc<Traffic>,
        wakes: Arc<Wakes>,
    ) -> anyhow::Result<Self> {
        let mut peers = Vec::new();
        for (region, url) in &config.peers {
            peers.push((region.clone(), url.trim_end_matches('/').parse::<Uri>()?));
        }
        Ok(Self {
            access_log: tracing::enabled!(target: "frontline::access", tracing::Level::INFO),
            wakes,
            worker,
            routes,
            control,
            instances: Http1Pool::new(
                config.proxy.connect_timeout(),
                Duration::from_secs(config.proxy.idle_timeout_seconds),
            ),
            peer_client: client(config, false),
            h2c: client(config, true),
            peers,
            https_port,
            redirect_https: config.listen.redirect_https,
            response_header_timeout: Duration::from_secs(
                config.proxy.response_header_timeout_seconds,
            ),
            request_header_timeout: Duration::from_secs(
                config.proxy.request_header_timeout_seconds,
            ),
            max_header_bytes: config.proxy.max_header_bytes.max(8192),
            connect_timeout: config.proxy.connect_timeout(),
            max_body_bytes: config.proxy.max_body_bytes,
            max_hops: config.proxy.max_hops,
            ejection: Duration::from_secs(config.proxy.ejection_seconds),
            metrics,
            traffic,
        })
    }

    /// Handles one request; never fails (every problem is an answer).
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        conn: Conn,
    ) -> Result<Response<Body>, std::convert::Infallible> {
        let start = Instant::now();
        let request_id =
            crate::headers::request_id(req.headers().get(REQUEST_ID).map(HeaderValue::as_bytes))
                .to_header_value();
        // What the access log needs, kept only when it is on.
        let logged = self
            .access_log
            .then(|| (req.method().clone(), req.uri().clone()));
        let (mut response, host, deployment) = self.route(req, &conn, &request_id).await;
        response
            .headers_mut()
            .insert(REQUEST_ID, request_id.clone());
        let answer = Answer {
            start,
            request_id: request_id.as_bytes(),
            host: &host,
            status: response.status(),
            deployment: deployment.as_deref(),
        };
        let logged = logged.as_ref().map(|(m, u)| (m.as_str(), u.path()));
        self.served(&conn, &answer, logged);
        Ok(response)
    }

    /// Counts an answered request and, when access logs are on, writes
    /// its line (`logged`: its method and path).
    fn served(&self, conn: &Conn, a: &Answer<'_>, logged: Option<(&str, &str)>) {
        let elapsed = a.start.elapsed();
        self.metrics
            .request(self.worker, a.deployment, a.status, elapsed);
        if let Some((method, path)) = logged {
            tracing::info!(
                target: "frontline::access",
                request_id = std::str::from_utf8(a.request_id).unwrap_or("-"),
                client = %conn.peer.ip(),
                tls = conn.tls,
                method,
                host = a.host,
                path = &path[..path.floor_char_boundary(256)],
                status = a.status.as_u16(),
                deployment_id = a.deployment.map_or("-", |d| &*d.id),
                duration_ms = elapsed.as_secs_f64() * 1000.0,
                "request"
            );
        }
    }

    /// Where a request for `host` goes, from what its head says: the
    /// routing rules both ways of serving a request share.
    fn destination(
        &self,
        host: &str,
        hops: u32,
        tls: bool,
        method: &[u8],
        path: &str,
    ) -> Destination {
        if hops >= self.max_hops {
            return Destination::Page(
                StatusCode::LOOP_DETECTED,
                format!("The request crossed {hops} edges: a routing loop."),
                None,
            );
        }
        if !tls && method == b"GET" && path.starts_with(ACME_PREFIX) {
            return Destination::Acme(path[ACME_PREFIX.len()..].to_owned());
        }
        let found = self.routes.with_current(|table| {
            let deployment = table.route(host).cloned()?;
            let redirect = (!tls && self.redirect_https)
                .then_some(self.https_port)
                .flatten()
                .filter(|_| table.certificate(host).is_some());
            Some((deployment, redirect))
        });
        let Some((deployment, redirect)) = found else {
            return if self.routes.is_ready() {
                Destination::Page(
                    StatusCode::NOT_FOUND,
                    format!("No deployment serves {host}."),
                    None,
                )
            } else {
                Destination::Page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The edge has not received its routing table yet.".to_owned(),
                    None,
                )
            };
        };
        if let Some(port) = redirect {
            return Destination::Redirect(port, deployment);
        }
        match deployment.state {
            State::Running => Destination::Forward(deployment),
            State::Stopped => Destination::Page(
                StatusCode::SERVICE_UNAVAILABLE,
                "This deployment is stopped.".to_owned(),
                Some(deployment),
            ),
            State::Idle => Destination::Wake(deployment),
        }
    }

    async fn route(
        &self,
        req: Request<Incoming>,
        conn: &Conn,
        request_id: &HeaderValue,
    ) -> (Response<Body>, String, Option<Arc<Deployment>>) {
        let Some(host) = host_of(&req) else {
            return (
                page(StatusCode::BAD_REQUEST, "Bad or missing Host header."),
                "-".into(),
                None,
            );
        };
        let hops = crate::headers::hops(req.headers().get(HOPS).map(HeaderValue::as_bytes));
        let method = req.method().as_str().as_bytes();
        let (deployment, starting) =
            match self.destination(&host, hops, conn.tls, method, req.uri().path()) {
                Destination::Page(status, message, d) => return (page(status, &message), host, d),
                Destination::Acme(token) => return (self.acme(&host, &token).await, host, None),
                Destination::Redirect(port, d) => {
                    return (redirect(&host, port, req.uri()), host, Some(d));
                }
                Destination::Forward(d) => (d, false),
                Destination::Wake(d) => match self.wakes.wake_and_wait(&d.id, &host).await {
                    Some(d) => (d, true),
                    None => {
                        let mut r = page(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "This deployment is starting; retry in a few seconds.",
                        );
                        r.headers_mut()
                            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
                        return (r, host, Some(d));
                    }
                },
            };
        self.traffic.record(self.worker, &deployment.id);
        let how = Forwarding {
            host: &host,
            hops,
            request_id,
            starting,
        };
        let response = self.forward(req, &deployment, conn, how).await;
        (response, host, Some(deployment))
    }

    async fn acme(&self, host: &str, token: &str) -> Response<Body> {
        match self.control.acme_authorization(host, token).await {
            Ok(authorization) => Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "text/plain")
                .body(full(authorization))
                .unwrap_or_else(|_| page(StatusCode::INTERNAL_SERVER_ERROR, "")),
            Err(s)
                if s.code() == tonic::Code::NotFound
                    || s.code() == tonic::Code::InvalidArgument =>
            {
                page(StatusCode::NOT_FOUND, "No such ACME challenge.")
            }
            Err(s) => {
                tracing::warn!(%host, error = %s.message(), "ACME lookup failed");
                page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The control plane cannot be reached to answer this challenge.",
                )
            }
        }
    }

    async fn forward(
        &self,
        mut req: Request<Incoming>,
        d: &Deployment,
        conn: &Conn,
        how: Forwarding<'_>,
    ) -> Response<Body> {
        let Forwarding {
            host,
            hops,
            request_id,
            starting,
        } = how;
        if let Some(len) = content_length(req.headers())
            && self.max_body_bytes > 0
            && len > self.max_body_bytes
        {
            return page(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!(
                    "The request body is larger than {} bytes.",
                    self.max_body_bytes
                ),
            );
        }
        let upgrade = is_upgrade(&req).then(|| hyper::upgrade::on(&mut req));
        let replayable = is_replayable(&req);
        let (mut parts, body) = req.into_parts();
        let f = Forward {
            client: conn.client.as_bytes(),
            tls: conn.tls,
            host,
            hops,
            request_id: request_id.as_bytes(),
            upgrade: upgrade.is_some(),
        };
        let path_and_query = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| hyper::http::uri::PathAndQuery::from_static("/"));
        let h2c = d.upstream == Upstream::H2c && upgrade.is_none();

        // Most requests: no body, to this region's instances over HTTP/1.1.
        if !d.backends.is_empty() && !h2c && upgrade.is_none() && body.is_end_stream() {
            let head = request_head(
                parts.method.as_str().as_bytes(),
                path_and_query.as_str().as_bytes(),
                &crate::headers::pairs(&parts.headers).into_iter(),
                &f,
            );
            let sent = self.within_header_timeout(self.exchange(d, &head, &parts.method, starting));
            let sent = sent
                .await
                .and_then(|(fast, guard)| match fast.into_response() {
                    Ok(resp) => Ok((resp, guard)),
                    Err(e) => {
                        let e = SendError::Exchange(e.into());
                        self.count(&e);
                        Err(e)
                    }
                });
            return match sent {
                Ok((resp, guard)) => self.respond(resp, d, Some(guard)),
                Err(e) => self.upstream_failure(&e, "backend"),
            };
        }
        let mut headers = HeaderMap::with_capacity(parts.headers.len() + 6);
        forward_headers(
            &crate::headers::pairs(&parts.headers).into_iter(),
            &f,
            &mut headers,
        );
        parts.headers = headers;
        parts.version = Version::HTTP_11;
        let mut body = Some(body);

        // Where to send it: this region's backends, else a peer edge.
        if d.backends.is_empty() {
            let Some(peer) = self.peer_for(d) else {
                return page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "No instance of this deployment runs in this region.",
                );
            };
            let body = self.request_body(body.take());
            let mut uri = peer.clone().into_parts();
            uri.path_and_query = Some(path_and_query.clone());
            let Ok(uri) = Uri::from_parts(uri) else {
                return page(StatusCode::BAD_REQUEST, "Bad request path.");
            };
            let mut req = Request::from_parts(parts, body);
            *req.uri_mut() = uri;
            let sent = self.within_header_timeout(async {
                self.peer_client
                    .request(req)
                    .await
                    .map(|r| r.map(UpstreamBody::from))
                    .map_err(SendError::from_client)
            });
            return match sent.await {
                Ok(resp) => self.respond(resp, d, None),
                Err(e) => {
                    self.count(&e);
                    self.upstream_failure(&e, "peer")
                }
            };
        }

        // A request with a body or an upgrade (through hyper's client on a
        // pooled connection), or to an h2c instance. A deployment this
        // request just woke may run before its app listens: a replayable
        // request keeps trying its instances for a moment instead of
        // failing on the first refusal. Over HTTP/1.1 the connection is
        // made before the request is handed over, so any request whose
        // connect failed can go to another instance.
        let attempts = match (replayable || !h2c, starting) {
            (true, true) => STARTING_ATTEMPTS,
            (true, false) => d.backends.len().min(3),
            (false, _) => 1,
        };
        let mut tried: Vec<usize> = Vec::new();
        // The request went to hyper's client: it cannot go again.
        let mut consumed = false;
        let mut last_error = SendError::Unavailable;
        for attempt in 0..attempts {
            let Some(backend) = next_backend(d, &mut tried, attempts, starting).await else {
                break;
            };
            let Some(authority) = backend.authority.clone() else {
                continue;
            };
            let guard = InFlight::new(backend.clone());
            let sent = if h2c {
                let body = if replayable {
                    Empty::new().map_err(|e| match e {}).boxed()
                } else {
                    self.request_body(body.take())
                };
                let mut uri = hyper::http::uri::Parts::default();
                uri.scheme = Some(hyper::http::uri::Scheme::HTTP);
                uri.authority = Some(authority);
                uri.path_and_query = Some(path_and_query.clone());
                let Ok(uri) = Uri::from_parts(uri) else {
                    return page(StatusCode::BAD_REQUEST, "Bad request path.");
                };
                // The last attempt takes the parts; earlier ones copy them.
                let this = if attempt + 1 == attempts {
                    std::mem::replace(&mut parts, Request::new(()).into_parts().0)
                } else {
                    parts.clone()
                };
                let mut out = Request::from_parts(this, body);
                *out.uri_mut() = uri;
                *out.version_mut() = Version::HTTP_2;
                self.within_header_timeout(async {
                    self.h2c
                        .request(out)
                        .await
                        .map(|r| r.map(UpstreamBody::from))
                        .map_err(SendError::from_client)
                })
                .await
            } else {
                match self.instances.connection(&authority).await {
                    Err(e) => Err(SendError::connect(e)),
                    Ok(connection) => {
                        consumed = true;
                        let body = self.request_body(body.take());
                        let this = std::mem::replace(&mut parts, Request::new(()).into_parts().0);
                        let mut out = Request::from_parts(this, body);
                        *out.uri_mut() = Uri::from(path_and_query.clone());
                        self.within_header_timeout(async {
                            connection
                                .send(out, upgrade.is_some())
                                .await
                                .map_err(SendError::from_failed)
                        })
                        .await
                    }
                }
            };
            match sent {
                Ok(mut resp) => {
                    if resp.status() == StatusCode::SWITCHING_PROTOCOLS
                        && let Some(client_side) = upgrade
                    {
                        let upstream_side = hyper::upgrade::on(&mut resp);
                        tokio::spawn(tunnel(client_side, upstream_side));
                    }
                    return self.respond(resp, d, Some(guard));
                }
                Err(e) => {
                    self.failed(backend, d, &e);
                    let retry = e.is_connect() && (replayable || !h2c) && !consumed;
                    last_error = e;
                    if !retry {
                        break;
                    }
                }
            }
        }
        self.upstream_failure(&last_error, "backend")
    }

    /// Sends a request without a body (`head`, from [`request_head`]) to
    /// one of `d`'s instances over HTTP/1.1, on the fast path. A connect
    /// that fails moves it to another instance (up to three; for a
    /// deployment it just woke, for about three seconds). The answer keeps
    /// its instance counted in flight until its body ends.
    async fn exchange(
        &self,
        d: &Deployment,
        head: &[u8],
        method: &Method,
        starting: bool,
    ) -> Result<(upstream::Fast, InFlight), SendError> {
        let attempts = if starting {
            STARTING_ATTEMPTS
        } else {
            d.backends.len().min(3)
        };
        let mut tried = Vec::new();
        let mut last_error = SendError::Unavailable;
        for _ in 0..attempts {
            let Some(backend) = next_backend(d, &mut tried, attempts, starting).await else {
                break;
            };
            let Some(authority) = &backend.authority else {
                continue;
            };
            let guard = InFlight::new(backend.clone());
            let sent = match self.instances.connection(authority).await {
                Err(e) => Err(SendError::connect(e)),
                Ok(connection) => connection
                    .exchange(head, method)
                    .await
                    .map_err(SendError::from_failed),
            };
            match sent {
                Ok(resp) => return Ok((resp, guard)),
                Err(e) => {
                    self.failed(backend, d, &e);
                    let retry = e.is_connect();
                    last_error = e;
                    if !retry {
                        break;
                    }
                }
            }
        }
        Err(last_error)
    }

    /// Counts a failed attempt; a backend that did not take the connection
    /// is ejected for a while.
    fn failed(&self, backend: &Backend, d: &Deployment, e: &SendError) {
        self.count(e);
        if e.is_connect() {
            let until = clock::mono_ms() + self.ejection.as_millis() as u64;
            backend.ejected_until.store(until, Ordering::Relaxed);
            tracing::warn!(address = %backend.address, deployment_id = %d.id, kind = e.kind(), "backend did not take the connection; ejected");
        }
    }

    fn request_body(&self, body: Option<Incoming>) -> Body {
        match body {
            Some(b) if self.max_body_bytes > 0 => {
                Limited::new(b, self.max_body_bytes as usize).boxed()
            }
            Some(b) => b.map_err(BoxError::from).boxed(),
            None => Empty::new().map_err(|e| match e {}).boxed(),
        }
    }

    fn peer_for(&self, d: &Deployment) -> Option<&Uri> {
        self.peers
            .iter()
            .find(|(region, _)| d.peer_regions.contains(region))
            .map(|(_, uri)| uri)
    }

    /// Waits at most the response-header timeout for `sent`.
    /// (A timeout is counted here; other failures where they happen.)
    async fn within_header_timeout<F, T>(&self, sent: F) -> Result<T, SendError>
    where
        F: std::future::Future<Output = Result<T, SendError>>,
    {
        tokio::time::timeout(self.response_header_timeout, sent)
            .await
            .unwrap_or_else(|_| Err(self.timed_out()))
    }

    /// The response-header timeout passed: counted, and its error.
    fn timed_out(&self) -> SendError {
        self.metrics.upstream_error(SendError::Timeout.kind());
        SendError::Timeout
    }

    /// Counts a failure other than a timeout (counted where it happens).
    fn count(&self, e: &SendError) {
        if !matches!(e, SendError::Timeout | SendError::Unavailable) {
            self.metrics.upstream_error(e.kind());
        }
    }

    fn upstream_failure(&self, e: &SendError, to: &str) -> Response<Body> {
        let (status, message) = self.failure(e, to);
        page(status, &message)
    }

    /// The answer to a request that got no response head (the failure
    /// logged, `to` naming where it went).
    fn failure(&self, e: &SendError, to: &str) -> (StatusCode, String) {
        let (status, msg) = match e {
            SendError::Timeout => (
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "The deployment did not answer within {} s.",
                    self.response_header_timeout.as_secs()
                ),
            ),
            SendError::Connect {
                timed_out: true, ..
            } => (
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "The deployment did not accept the connection within {} ms.",
                    self.connect_timeout.as_millis()
                ),
            ),
            SendError::Connect { .. } => (
                StatusCode::BAD_GATEWAY,
                "The deployment refused the connection.".to_owned(),
            ),
            SendError::Exchange(x) if is_body_limit(x.as_ref()) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "The request body is larger than {} bytes.",
                    self.max_body_bytes
                ),
            ),
            SendError::Exchange(_) => (
                StatusCode::BAD_GATEWAY,
                "The deployment's answer was cut off or malformed.".to_owned(),
            ),
            SendError::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "No instance of this deployment is available.".to_owned(),
            ),
        };
        if let SendError::Connect { error, .. } | SendError::Exchange(error) = e {
            tracing::warn!(to, kind = e.kind(), error = %error_chain(error.as_ref()), "upstream request failed");
        }
        (status, msg)
    }

    fn respond(
        &self,
        resp: Response<UpstreamBody>,
        d: &Deployment,
        guard: Option<InFlight>,
    ) -> Response<Body> {
        let (mut parts, body) = resp.into_parts();
        if parts.status != StatusCode::SWITCHING_PROTOCOLS {
            strip_hop_by_hop(&mut parts.headers);
        }
        if let Some(v) = &d.header {
            parts.headers.insert(DEPLOYMENT, v.clone());
        }
        let body = GuardedBody {
            inner: body,
            _guard: guard,
        };
        Response::from_parts(parts, body.boxed())
    }
}

/// Where a request goes ([`Proxy::destination`]).
#[derive(Debug)]
enum Destination {
    /// The edge answers itself: a status and a short message (and the
    /// deployment, if one was found).
    Page(StatusCode, String, Option<Arc<Deployment>>),
    /// The ACME HTTP-01 challenge with this token.
    Acme(String),
    /// To HTTPS on this port.
    Redirect(u16, Arc<Deployment>),
    /// Woken first: the deployment is idle.
    Wake(Arc<Deployment>),
    /// To a running deployment.
    Forward(Arc<Deployment>),
}

/// A request answered, as its metrics and access log line see it.
#[derive(Debug)]
struct Answer<'a> {
    start: Instant,
    request_id: &'a [u8],
    host: &'a str,
    status: StatusCode,
    deployment: Option<&'a Deployment>,
}

/// Why a request got no response head.
#[derive(Debug)]
enum SendError {
    /// No connection: refused, unreachable, or not accepted in time.
    Connect { timed_out: bool, error: BoxError },
    /// The exchange failed: cut off, malformed, or the body over its limit.
    Exchange(BoxError),
    /// No response head within the response-header timeout.
    Timeout,
    /// No instance could be tried.
    Unavailable,
}

impl SendError {
    fn connect(e: std::io::Error) -> Self {
        Self::Connect {
            timed_out: e.kind() == std::io::ErrorKind::TimedOut,
            error: e.into(),
        }
    }

    /// An error of the instance pool's exchange.
    fn from_failed(e: upstream::Failed) -> Self {
        match e {
            upstream::Failed::Connect(e) => Self::connect(e),
            upstream::Failed::Exchange(e) => Self::Exchange(e),
        }
    }

    /// An error of hyper-util's client (peers, h2c).
    fn from_client(e: hyper_util::client::legacy::Error) -> Self {
        if e.is_connect() {
            let timed_out = in_chain(&e, |s| {
                s.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
            });
            Self::Connect {
                timed_out,
                error: e.into(),
            }
        } else {
            Self::Exchange(e.into())
        }
    }

    fn is_connect(&self) -> bool {
        matches!(self, Self::Connect { .. })
    }

    /// The metric label.
    fn kind(&self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Unavailable => "unavailable",
            Self::Connect {
                timed_out: true, ..
            } => "connect_timeout",
            Self::Connect { .. } => "connect",
            Self::Exchange(e) if is_body_limit(e.as_ref()) => "body_limit",
            Self::Exchange(_) => "protocol",
        }
    }
}

/// Whether any error in `e`'s chain satisfies `test`.
fn in_chain(
    e: &(dyn std::error::Error + 'static),
    test: impl Fn(&(dyn std::error::Error + 'static)) -> bool,
) -> bool {
    let mut source = Some(e);
    while let Some(s) = source {
        if test(s) {
            return true;
        }
        source = s.source();
    }
    false
}

fn is_body_limit(e: &(dyn std::error::Error + 'static)) -> bool {
    in_chain(e, |s| s.is::<http_body_util::LengthLimitError>())
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Counts a request in flight on a backend until its response body ends.
#[derive(Debug)]
struct InFlight(Arc<Backend>);

impl InFlight {
    fn new(b: Arc<Backend>) -> Self {
        b.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(b)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its backend's in-flight count until it
/// ends or is dropped.
struct GuardedBody {
    inner: UpstreamBody,
    _guard: Option<InFlight>,
}

impl hyper::body::Body for GuardedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What one request's forwarding needs to know besides the request.
#[derive(Debug, Clone, Copy)]
struct Forwarding<'a> {
    /// The requested host.
    host: &'a str,
    /// Edges it went through so far.
    hops: u32,
    /// Its request id.
    request_id: &'a HeaderValue,
    /// It just woke the deployment (whose app may not listen yet).
    starting: bool,
}

/// Power of two choices on in-flight requests, among backends not ejected
/// and not tried yet; if every one is ejected, any not tried (better a
/// likely failure than a certain 503).
fn pick(backends: &[Arc<Backend>], tried: &[usize]) -> Option<usize> {
    // The clock is read only if some backend was ever ejected.
    let now = std::cell::OnceCell::new();
    let fresh = |i: &usize| !tried.contains(i);
    let available = |i: &usize| {
        fresh(i) && {
            let b = &backends[*i];
            b.ejected_until.load(Ordering::Relaxed) == 0
                || b.available(*now.get_or_init(clock::mono_ms))
        }
    };
    // Scans instead of collecting: no allocation on the request path.
    let any_available = (0..backends.len()).any(|i| available(&i));
    let candidate = |i: &usize| {
        if any_available {
            available(i)
        } else {
            fresh(i)
        }
    };
    let nth = |k: usize| (0..backends.len()).filter(candidate).nth(k);
    match (0..backends.len()).filter(candidate).count() {
        0 => None,
        1 => nth(0),
        n => {
            let mut rng = rand::rng();
            let a = rng.random_range(0..n);
            let mut b = rng.random_range(0..n - 1);
            if b >= a {
                b += 1;
            }
            let (a, b) = (nth(a)?, nth(b)?);
            let load = |i: usize| backends[i].in_flight.load(Ordering::Relaxed);
            Some(if load(b) < load(a) { b } else { a })
        }
    }
}

/// The next backend of `d` an attempt tries ([`pick`]), never one tried
/// already; for a deployment just woken, once each was tried, all of them
/// again after a pause.
async fn next_backend<'d>(
    d: &'d Deployment,
    tried: &mut Vec<usize>,
    attempts: usize,
    starting: bool,
) -> Option<&'d Arc<Backend>> {
    if starting && !d.backends.is_empty() && tried.len() == d.backends.len() {
        tried.clear();
        tokio::time::sleep(STARTING_RETRY_DELAY).await;
    }
    let i = pick(&d.backends, tried)?;
    if attempts > 1 {
        tried.push(i);
    }
    Some(&d.backends[i])
}

/// The head of a request without a body as an instance gets it: its
/// request line (`target` in origin form) and [`forward_headers`]' headers.
fn request_head<'h, H>(method: &[u8], target: &[u8], headers: &H, f: &Forward<'_>) -> BytesMut
where
    H: Iterator<Item = (&'h [u8], &'h [u8])> + Clone,
{
    let size: usize = headers.clone().map(|(n, v)| n.len() + v.len() + 4).sum();
    let mut head = BytesMut::with_capacity(size + target.len() + f.host.len() * 2 + 256);
    head.extend_from_slice(method);
    head.extend_from_slice(b" ");
    head.extend_from_slice(target);
    head.extend_from_slice(b" HTTP/1.1\r\n");
    forward_headers(headers, f, &mut head);
    head.extend_from_slice(b"\r\n");
    head
}

async fn tunnel(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    match tokio::try_join!(client, upstream) {
        Ok((c, u)) => {
            let (mut c, mut u) = (TokioIo::new(c), TokioIo::new(u));
            if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut u).await {
                tracing::debug!(error = %e, "upgraded connection ended");
            }
        }
        Err(e) => tracing::debug!(error = %e, "upgrade did not complete"),
    }
}

/// The request's host: lowercase, without port or trailing dot; `None` if
/// missing or not a hostname.
pub fn host_of<B>(req: &Request<B>) -> Option<String> {
    match req.uri().authority() {
        Some(a) => crate::headers::normalize_host(a.host()),
        None => crate::headers::host_from_header(req.headers().get(header::HOST)?.as_bytes()),
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// A WebSocket (or other HTTP/1.1) upgrade request.
fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

/// Safe to send again to another backend: a safe method and no body.
fn is_replayable<B>(req: &Request<B>) -> bool {
    matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
        && !req.headers().contains_key(header::TRANSFER_ENCODING)
        && content_length(req.headers()).is_none_or(|n| n == 0)
        && !is_upgrade(req)
}

fn full(s: impl Into<Bytes>) -> Body {
    Full::new(s.into()).map_err(|e| match e {}).boxed()
}

/// A small plain-text answer of the edge itself.
pub fn page(status: StatusCode, message: &str) -> Response<Body> {
    let mut r = Response::new(full(format!("{message}\n")));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn redirect(host: &str, port: u16, uri: &Uri) -> Response<Body> {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let location = if port == 443 {
        format!("https://{host}{path}")
    } else {
        format!("https://{host}:{port}{path}")
    };
    let mut r = page(
        StatusCode::PERMANENT_REDIRECT,
        &format!("Moved to {location}"),
    );
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_is_the_authority_or_the_host_header() {
        let req = Request::builder()
            .uri("/")
            .header(header::HOST, "App.Localhost:8443")
            .body(())
            .unwrap();
        assert_eq!(host_of(&req), Some("app.localhost".into()));
        let absolute = Request::builder()
            .uri("http://Other.Localhost/")
            .header(header::HOST, "app.localhost")
            .body(())
            .unwrap();
        assert_eq!(host_of(&absolute), Some("other.localhost".into()));
        let no_host = Request::builder().uri("/").body(()).unwrap();
        assert_eq!(host_of(&no_host), None);
    }

    #[test]
    fn a_bodiless_request_is_written_as_one_head() {
        let f = Forward {
            client: b"192.0.2.7",
            tls: false,
            host: "x.example",
            hops: 0,
            request_id: b"rid",
            upgrade: false,
        };
        let headers = [(&b"Accept"[..], &b"*/*"[..]), (b"Host", b"X.Example:80")];
        let head = request_head(b"GET", b"/a/b?c=d", &headers.into_iter(), &f);
        assert_eq!(
            std::str::from_utf8(&head).unwrap(),
            "GET /a/b?c=d HTTP/1.1\r\nAccept: */*\r\nx-forwarded-for: 192.0.2.7\r\n\
             x-forwarded-proto: http\r\nx-forwarded-host: x.example\r\nhost: x.example\r\n\
             x-request-id: rid\r\nx-ctrl-frontline-hops: 1\r\n\r\n"
        );
    }

    #[test]
    fn two_choices_prefer_the_less_loaded_and_skip_ejected() {
        let backends = crate::table::Backends::default();
        let list: Vec<_> = ["a:1", "b:1", "c:1"]
            .iter()
            .map(|a| backends.get(a))
            .collect();
        list[0].in_flight.store(100, Ordering::Relaxed);
        list[1].in_flight.store(100, Ordering::Relaxed);
        // c wins every pairing it is in; a and b split the rest.
        let picks: Vec<usize> = (0..300).filter_map(|_| pick(&list, &[])).collect();
        let c = picks.iter().filter(|&&i| i == 2).count();
        assert!(c > 150, "c chosen {c} of 300");
        list[2].ejected_until.store(u64::MAX, Ordering::Relaxed);
        assert!((0..100).all(|_| pick(&list, &[]) != Some(2)));
        assert_eq!(
            pick(&list, &[0, 1]),
            Some(2),
            "all others tried: the ejected one"
        );
        assert_eq!(pick(&list, &[0, 1, 2]), None);
    }
}
