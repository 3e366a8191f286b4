//! A worker thread's HTTP/1.1 connections to instances: reused newest
//! first, handed back when a response has been read to its end, never
//! shared between threads, and driven by the request that uses them.
//!
//! hyper-util's pooled client is general (any executor and connector,
//! HTTP/2, a task per connection, channels between it and the request);
//! on the edge's hot path that generality cost most of its CPU per
//! request. This pool does only what the edge needs, on the worker's own
//! thread (its lock is never contended):
//!
//! - A request without a body (most of an edge's traffic) takes the fast
//!   path, as nginx and pingora do: its head is written as one buffer, the
//!   response head parsed in place ([`crate::h1`]), and the response body
//!   read from the socket by the client connection's own task as the client
//!   takes it, with no task, channel or wake-up in between.
//! - A request with a body, or an upgrade, goes through hyper's client on
//!   the same pooled socket, driven from the client connection's task too;
//!   an upgraded connection is handed to a task of its own.
//! - A connection is obtained before the request is built, so a refused or
//!   timed-out connect leaves the request, body included, free to go to
//!   another instance. A reused connection its instance closed while idle is
//!   noticed before use (its socket said so), or, if the close crossed the
//!   request, the request goes out again on a fresh connection when that
//!   is safe: nothing of it was taken, or it is idempotent and nothing came
//!   back.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker, ready};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::http::uri::Authority;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::clock;
use crate::h1::{self, Chunked, Decoded, Framing, Malformed};
use crate::proxy::{Body, BoxError};
use crate::table::Map;

/// Idle connections kept per instance.
const MAX_IDLE_PER_INSTANCE: usize = 256;
/// Every this many check-ins, idle connections of every instance are swept
/// (closed or expired ones dropped, instances without any forgotten).
const SWEEP_EVERY: usize = 4096;
/// The first read of a response (its head, and a small body with it).
const HEAD_BUFFER: usize = 8 * 1024;
/// Room made for each read of a response body.
const BODY_READ: usize = 64 * 1024;

/// One worker's idle connections, by instance address.
#[derive(Debug)]
pub struct Http1Pool {
    /// By the instance's address (`host:port`).
    idle: Mutex<Map<Box<str>, Vec<Idle>>>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    checkins: AtomicUsize,
}

#[derive(Debug)]
struct Idle {
    stream: TcpStream,
    /// Checked in (by the coarse clock: the idle timeout is seconds).
    since: Instant,
}

impl Idle {
    /// Idle for less than `timeout`, and still open.
    fn usable(&self, timeout: Duration) -> bool {
        clock::coarse_instant().saturating_duration_since(self.since) < timeout
            && is_open(&self.stream)
    }
}

/// Whether an idle connection is still open and silent. Its socket's
/// readiness says so without a system call, unless something arrived
/// (the instance's close, or bytes it should not have sent).
fn is_open(stream: &TcpStream) -> bool {
    match stream.poll_read_ready(&mut Context::from_waker(Waker::noop())) {
        Poll::Pending => true,
        Poll::Ready(Err(_)) => false,
        Poll::Ready(Ok(())) => matches!(
            stream.try_read(&mut [0; 1]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
        ),
    }
}

/// A connection to an instance, ready for one request.
#[derive(Debug)]
pub struct Connection {
    pool: Arc<Http1Pool>,
    authority: Authority,
    stream: TcpStream,
    /// Came from the idle list (so its instance may have closed it).
    reused: bool,
}

/// A fast-path answer: the instance's head, its body still to be read.
#[derive(Debug)]
pub struct Fast {
    pub head: h1::Head,
    pub body: UpstreamBody,
}

impl Fast {
    /// The answer as hyper's server takes it.
    pub fn into_response(self) -> Result<Response<UpstreamBody>, Malformed> {
        let headers = self.head.header_map()?;
        let mut resp = Response::new(self.body);
        *resp.status_mut() = self.head.status;
        *resp.version_mut() = self.head.version;
        *resp.headers_mut() = headers;
        Ok(resp)
    }
}

/// Why a request sent on a [`Connection`] got no response head.
#[derive(Debug)]
pub enum Failed {
    /// The reused connection was closed, and a fresh one could not be made.
    Connect(std::io::Error),
    /// The exchange failed (cut off, malformed, the body over its limit).
    Exchange(BoxError),
}

/// How one attempt of the fast path failed.
enum Attempt {
    /// The connection was closed under the request, which may go again.
    Closed(BoxError),
    Failed(BoxError),
}

impl Http1Pool {
    /// A pool connecting within `connect_timeout`, keeping idle
    /// connections for `idle_timeout`.
    pub fn new(connect_timeout: Duration, idle_timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            idle: Mutex::default(),
            connect_timeout,
            idle_timeout,
            checkins: AtomicUsize::new(0),
        })
    }

    /// An idle connection to `authority` if one is open, else a new one.
    /// The error is the connect's (`TimedOut` after the connect timeout).
    pub async fn connection(
        self: &Arc<Self>,
        authority: &Authority,
    ) -> Result<Connection, std::io::Error> {
        let (stream, reused) = match self.checkout(authority) {
            Some(stream) => (stream, true),
            None => (self.connect(authority).await?, false),
        };
        Ok(Connection {
            pool: self.clone(),
            authority: authority.clone(),
            stream,
            reused,
        })
    }

    fn checkout(&self, authority: &Authority) -> Option<TcpStream> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.get_mut(authority.as_str())?;
        while let Some(i) = list.pop() {
            if i.usable(self.idle_timeout) {
                return Some(i.stream);
            }
        }
        None
    }

    fn put(&self, authority: &Authority, stream: TcpStream) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if self.checkins.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            let timeout = self.idle_timeout;
            idle.retain(|_, list| {
                list.retain(|i| i.usable(timeout));
                !list.is_empty()
            });
        }
        let idle_one = Idle {
            stream,
            since: clock::coarse_instant(),
        };
        match idle.get_mut(authority.as_str()) {
            Some(list) if list.len() < MAX_IDLE_PER_INSTANCE => list.push(idle_one),
            Some(_) => {}
            None => {
                idle.insert(authority.as_str().into(), vec![idle_one]);
            }
        }
    }

    /// A fresh connection for a request whose reused one was closed under
    /// it (its failure is the connect's, for the caller to retry elsewhere).
    async fn reconnect(&self, authority: &Authority) -> Result<TcpStream, Failed> {
        self.connect(authority).await.map_err(Failed::Connect)
    }

    async fn connect(&self, authority: &Authority) -> Result<TcpStream, std::io::Error> {
        let stream =
            tokio::time::timeout(self.connect_timeout, TcpStream::connect(authority.as_str()))
                .await
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "the connect timed out")
                })??;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

impl Connection {
    /// The fast path: sends a request without a body (`head`: its request
    /// line and headers, as the instance gets them) and answers its
    /// response, whose body reads the rest from the connection and hands
    /// it back at its end.
    pub async fn exchange(mut self, head: &[u8], method: &Method) -> Result<Fast, Failed> {
        // The instance closing the connection without an answer is sent
        // again only where that cannot do anything twice.
        let idempotent = method.is_idempotent();
        loop {
            match self.attempt(head, method, idempotent).await {
                Ok((head, buf)) => return Ok(self.respond(head, buf)),
                Err(Attempt::Closed(_)) if self.reused => {
                    self.reused = false;
                    self.stream = self.pool.reconnect(&self.authority).await?;
                }
                Err(Attempt::Closed(e) | Attempt::Failed(e)) => return Err(Failed::Exchange(e)),
            }
        }
    }

    /// Writes `request` and reads up to the final response head.
    async fn attempt(
        &mut self,
        request: &[u8],
        method: &Method,
        idempotent: bool,
    ) -> Result<(h1::Head, BytesMut), Attempt> {
        if let Err(e) = self.stream.write_all(request).await {
            // Not all of it was taken: the instance cannot have acted on it.
            return Err(Attempt::Closed(e.into()));
        }
        let mut buf = BytesMut::with_capacity(HEAD_BUFFER);
        let mut answered = false;
        loop {
            match h1::parse_response(&mut buf, method) {
                Ok(Some(head)) if head.status == hyper::StatusCode::SWITCHING_PROTOCOLS => {
                    return Err(Attempt::Failed(Malformed::UnaskedUpgrade.into()));
                }
                // 100 Continue, 103 Early Hints: the final head follows.
                Ok(Some(head)) if head.status.is_informational() => {
                    answered = true;
                    continue;
                }
                Ok(Some(head)) => return Ok((head, buf)),
                Ok(None) => {}
                Err(e) => return Err(Attempt::Failed(e.into())),
            }
            if buf.capacity() - buf.len() < 1024 {
                buf.reserve(HEAD_BUFFER);
            }
            let read = tokio::io::AsyncReadExt::read_buf(&mut self.stream, &mut buf).await;
            let nothing_back = buf.is_empty() && !answered;
            match read {
                Ok(0) | Err(_) if nothing_back && idempotent => {
                    return Err(Attempt::Closed(closed(read.err())));
                }
                Ok(0) => return Err(Attempt::Failed(closed(None))),
                Err(e) => return Err(Attempt::Failed(e.into())),
                Ok(_) => {}
            }
        }
    }

    fn respond(self, head: h1::Head, buf: BytesMut) -> Fast {
        let state = match head.framing {
            Framing::Empty => Frames::Done,
            Framing::Length(n) => Frames::Length(n),
            Framing::Chunked => Frames::Chunked(Chunked::default()),
            Framing::Close => Frames::Close,
        };
        let mut body = FastBody {
            state,
            buf,
            stream: Some(self.stream),
            keep_alive: head.keep_alive,
            pool: self.pool,
            authority: self.authority,
        };
        if matches!(body.state, Frames::Done) {
            body.finish();
        }
        Fast {
            head,
            body: UpstreamBody::Fast(body),
        }
    }

    /// Through hyper's client (a request with a body, or an upgrade):
    /// driven from this task until the response head is in, then by the
    /// response body as it is read. A reused connection that turns out
    /// closed before the request was written sends it on a fresh one.
    pub async fn send(
        mut self,
        req: Request<Body>,
        upgrade: bool,
    ) -> Result<Response<UpstreamBody>, Failed> {
        let mut req = req;
        loop {
            let (mut sender, conn) = http1::Builder::new()
                .handshake(TokioIo::new(self.stream))
                .await
                .map_err(|e| Failed::Exchange(e.into()))?;
            let mut driver = if upgrade {
                Driver::Upgrading(Box::pin(conn.with_upgrades()))
            } else {
                Driver::Plain(Box::new(conn))
            };
            let mut answer = std::pin::pin!(sender.try_send_request(req));
            let answered = std::future::poll_fn(|cx| {
                driver.drive(cx);
                answer.as_mut().poll(cx)
            })
            .await;
            match answered {
                Ok(resp) => {
                    let lease = Lease {
                        pool: self.pool,
                        authority: self.authority,
                        sender,
                        driver,
                    };
                    let lease = if resp.status() == hyper::StatusCode::SWITCHING_PROTOCOLS {
                        // The connection is the upgrade's now.
                        lease.detach();
                        None
                    } else {
                        Some(lease)
                    };
                    return Ok(resp.map(|body| UpstreamBody::Hyper { body, lease }));
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) if self.reused => {
                        req = unsent;
                        self.reused = false;
                        self.stream = self.pool.reconnect(&self.authority).await?;
                    }
                    _ => return Err(Failed::Exchange(e.into_error().into())),
                },
            }
        }
    }
}

fn closed(e: Option<std::io::Error>) -> BoxError {
    match e {
        Some(e) => e.into(),
        None => "the instance closed the connection before its response ended".into(),
    }
}

/// Where a fast-path response body is.
#[derive(Debug)]
enum Frames {
    Length(u64),
    Chunked(Chunked),
    Close,
    Done,
}

/// A fast-path response body: read from the instance's socket as the
/// client takes it; the connection goes back to the pool at its end.
#[derive(Debug)]
pub struct FastBody {
    state: Frames,
    /// Read, not yet handed on.
    buf: BytesMut,
    stream: Option<TcpStream>,
    keep_alive: bool,
    pool: Arc<Http1Pool>,
    authority: Authority,
}

impl FastBody {
    /// The body has ended: the connection serves another request if the
    /// instance keeps it and sent nothing past the body.
    fn finish(&mut self) {
        self.state = Frames::Done;
        if let Some(stream) = self.stream.take()
            && self.keep_alive
            && self.buf.is_empty()
        {
            self.pool.put(&self.authority, stream);
        }
    }

    fn poll_body(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BoxError>>> {
        loop {
            match &mut self.state {
                Frames::Done => return Poll::Ready(None),
                Frames::Length(left) if !self.buf.is_empty() => {
                    let take = usize::try_from(*left)
                        .unwrap_or(usize::MAX)
                        .min(self.buf.len());
                    *left -= take as u64;
                    let data = self.buf.split_to(take).freeze();
                    if *left == 0 {
                        self.finish();
                    }
                    return Poll::Ready(Some(Ok(data)));
                }
                Frames::Chunked(c) => match c.decode(&mut self.buf) {
                    Ok(Decoded::Data(d)) => return Poll::Ready(Some(Ok(d))),
                    Ok(Decoded::End) => {
                        self.finish();
                        return Poll::Ready(None);
                    }
                    Ok(Decoded::More) => {}
                    Err(e) => {
                        self.stream = None;
                        return Poll::Ready(Some(Err(e.into())));
                    }
                },
                Frames::Close if !self.buf.is_empty() => {
                    return Poll::Ready(Some(Ok(self.buf.split().freeze())));
                }
                Frames::Length(_) | Frames::Close => {}
            }
            let Some(stream) = &mut self.stream else {
                return Poll::Ready(Some(Err(closed(None))));
            };
            let room = match self.state {
                Frames::Length(left) => usize::try_from(left).unwrap_or(BODY_READ).min(BODY_READ),
                _ => BODY_READ,
            };
            if self.buf.capacity() - self.buf.len() < room {
                self.buf.reserve(room);
            }
            match ready!(tokio_util::io::poll_read_buf(
                Pin::new(stream),
                cx,
                &mut self.buf
            )) {
                Ok(0) if matches!(self.state, Frames::Close) => {
                    self.stream = None;
                    self.state = Frames::Done;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    self.stream = None;
                    return Poll::Ready(Some(Err(closed(None))));
                }
                Ok(_) => {}
                Err(e) => {
                    self.stream = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }
}

/// What reads and writes a hyper-driven connection; it only makes progress
/// while polled.
enum Driver {
    Plain(Box<http1::Connection<TokioIo<TcpStream>, Body>>),
    /// hyper names its upgradeable connection type only as a future.
    Upgrading(Pin<Box<dyn Future<Output = hyper::Result<()>> + Send + Sync>>),
    Ended,
}

impl Driver {
    /// Lets the connection make progress; notes when it has ended.
    fn drive(&mut self, cx: &mut Context<'_>) {
        let ended = match self {
            Self::Plain(conn) => Pin::new(&mut **conn).poll(cx),
            Self::Upgrading(conn) => conn.as_mut().poll(cx),
            Self::Ended => return,
        };
        if let Poll::Ready(ended) = ended {
            if let Err(e) = ended {
                tracing::debug!(error = %e, "instance connection ended with an error");
            }
            *self = Self::Ended;
        }
    }
}

/// A hyper-driven connection lent to one response: driven while its body
/// is read, its socket handed back once it has been read to the end.
pub struct Lease {
    pool: Arc<Http1Pool>,
    authority: Authority,
    sender: SendRequest<Body>,
    driver: Driver,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("authority", &self.authority)
            .finish()
    }
}

impl Lease {
    /// The response was read to its end: if hyper keeps the connection
    /// (it waits for another request), its socket serves another.
    fn put(mut self) {
        let mut cx = Context::from_waker(Waker::noop());
        self.driver.drive(&mut cx);
        let Driver::Plain(mut conn) = self.driver else {
            return;
        };
        if !self.sender.is_ready() {
            return;
        }
        drop(self.sender);
        if let Poll::Ready(Ok(())) = conn.poll_without_shutdown(&mut cx) {
            let parts = conn.into_parts();
            if parts.read_buf.is_empty() {
                self.pool.put(&self.authority, parts.io.into_inner());
            }
        }
    }

    /// The connection is being upgraded: it runs on a task of its own
    /// until it hands its stream to the upgrade.
    fn detach(self) {
        if let Driver::Upgrading(conn) = self.driver {
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "upgraded instance connection ended with an error");
                }
            });
        }
    }
}

/// A response body from an instance or a peer edge.
#[derive(Debug)]
pub enum UpstreamBody {
    /// From the fast path.
    Fast(FastBody),
    /// From hyper's client; `lease` drives a pooled connection.
    Hyper {
        body: Incoming,
        lease: Option<Lease>,
    },
}

impl From<Incoming> for UpstreamBody {
    fn from(body: Incoming) -> Self {
        Self::Hyper { body, lease: None }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // Read to the end (a server may stop polling once the length is
        // reached): the connection can serve another request. Otherwise
        // dropping it closes it.
        if let Self::Hyper { body, lease } = self
            && body.is_end_stream()
            && let Some(lease) = lease.take()
        {
            lease.put();
        }
    }
}

impl hyper::body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Fast(b) => b.poll_body(cx).map(|d| d.map(|d| d.map(Frame::data))),
            Self::Hyper { body, lease } => {
                let mut polled = Pin::new(&mut *body).poll_frame(cx);
                // Nothing buffered yet (the body has now said it wants
                // more): let the connection read some, then look again.
                if polled.is_pending()
                    && let Some(l) = lease
                {
                    l.driver.drive(cx);
                    polled = Pin::new(&mut *body).poll_frame(cx);
                }
                if let Poll::Ready(None) = polled
                    && let Some(l) = lease.take()
                {
                    l.put();
                }
                polled.map_err(BoxError::from)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Fast(b) => matches!(b.state, Frames::Done),
            Self::Hyper { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Fast(b) => match b.state {
                Frames::Done => SizeHint::with_exact(0),
                Frames::Length(n) => SizeHint::with_exact(n),
                _ => SizeHint::default(),
            },
            Self::Hyper { body, .. } => body.size_hint(),
        }
    }
}
