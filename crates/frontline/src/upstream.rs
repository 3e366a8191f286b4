//! A worker thread's HTTP/1.1 connections to instances: reused newest
//! first, handed back when a response has been read to its end, never
//! shared between threads, and driven by the request that uses them.
//!
//! hyper-util's pooled client is general (any executor and connector,
//! HTTP/2, a task per connection and channels between it and the request);
//! on the edge's hot path that generality cost a large share of its CPU per
//! request. This pool does only what the edge needs, on the worker's own
//! thread (its lock is never contended):
//!
//! - A connection has no task of its own. The request using it drives it
//!   (reads, writes, the request body) from the client connection's task,
//!   as pingora does, so a request costs no wake-ups between tasks.
//! - A connection is obtained before the request is built, so a refused or
//!   timed-out connect leaves the request, body included, free to go to
//!   another instance; a connection whose instance closed it while idle
//!   hands the request back unsent, and it goes out on a fresh one.
//! - An upgraded connection (a WebSocket) is handed to a task of its own.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::http::uri::Authority;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::proxy::Body;

/// Idle connections kept per instance.
const MAX_IDLE_PER_INSTANCE: usize = 256;
/// Every this many check-ins, idle connections of every instance are swept
/// (closed or expired ones dropped, instances without any forgotten).
const SWEEP_EVERY: usize = 4096;

/// One worker's idle connections, by instance address.
#[derive(Debug)]
pub struct Http1Pool {
    idle: Mutex<HashMap<Authority, Vec<Idle>>>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    checkins: AtomicUsize,
}

#[derive(Debug)]
struct Idle {
    link: Link,
    since: Instant,
}

/// What reads and writes one connection (hyper's dispatcher, upgrades
/// included); it only makes progress while polled.
type Driver = Pin<Box<dyn Future<Output = hyper::Result<()>> + Send + Sync>>;

/// One HTTP/1.1 connection: what sends requests on it and what drives it.
struct Link {
    sender: SendRequest<Body>,
    /// `None` once the connection has ended (closed, failed or upgraded).
    driver: Option<Driver>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("open", &self.is_open())
            .finish()
    }
}

impl Link {
    /// Lets the connection make progress; notes when it has ended.
    fn drive(&mut self, cx: &mut Context<'_>) {
        if let Some(driver) = &mut self.driver
            && let Poll::Ready(ended) = driver.as_mut().poll(cx)
        {
            if let Err(e) = ended {
                tracing::debug!(error = %e, "instance connection ended with an error");
            }
            self.driver = None;
        }
    }

    fn is_open(&self) -> bool {
        self.driver.is_some() && !self.sender.is_closed()
    }

    /// Whether the connection takes a request: driven until it says so,
    /// or ends, for at most `within`.
    async fn ready(&mut self, within: Duration) -> bool {
        let ready = std::future::poll_fn(|cx| {
            self.drive(cx);
            match self.sender.poll_ready(cx) {
                Poll::Ready(r) => Poll::Ready(r.is_ok()),
                Poll::Pending if self.driver.is_none() => Poll::Ready(false),
                Poll::Pending => Poll::Pending,
            }
        });
        matches!(tokio::time::timeout(within, ready).await, Ok(true))
    }
}

/// A connection to an instance, ready for one request.
#[derive(Debug)]
pub struct Connection {
    pool: Arc<Http1Pool>,
    authority: Authority,
    link: Link,
    /// Came from the idle list (so it may have been closed meanwhile).
    reused: bool,
}

/// A connection lent to one response: driven while its body is read,
/// handed back once it has been read to the end.
#[derive(Debug)]
pub struct Lease {
    pool: Arc<Http1Pool>,
    authority: Authority,
    link: Link,
}

impl Lease {
    /// Lets the connection make progress (read the response body, write
    /// the rest of the request's).
    pub fn drive(&mut self, cx: &mut Context<'_>) {
        self.link.drive(cx);
    }

    /// The response was read to its end: the connection may serve another.
    pub fn put(self) {
        self.pool.put(self.authority, self.link);
    }

    /// The connection is being upgraded: it runs on a task of its own
    /// until it hands its stream to the upgrade.
    pub fn detach(self) {
        if let Some(driver) = self.link.driver {
            tokio::spawn(async move {
                if let Err(e) = driver.await {
                    tracing::debug!(error = %e, "upgraded instance connection ended with an error");
                }
            });
        }
    }
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

    /// An idle connection to `authority` if one is alive, else a new one.
    /// The error is the connect's (`TimedOut` after the connect timeout).
    pub async fn connection(
        self: &Arc<Self>,
        authority: &Authority,
    ) -> Result<Connection, std::io::Error> {
        while let Some(mut link) = self.checkout(authority) {
            // An idle connection is ready at once, unless its instance
            // closed it meanwhile (driving it finds that out).
            if link.ready(self.connect_timeout).await {
                return Ok(self.wrap(authority, link, true));
            }
        }
        let link = self.connect(authority).await?;
        Ok(self.wrap(authority, link, false))
    }

    fn wrap(self: &Arc<Self>, authority: &Authority, link: Link, reused: bool) -> Connection {
        Connection {
            pool: self.clone(),
            authority: authority.clone(),
            link,
            reused,
        }
    }

    fn checkout(&self, authority: &Authority) -> Option<Link> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.get_mut(authority)?;
        while let Some(i) = list.pop() {
            if i.link.is_open() && i.since.elapsed() < self.idle_timeout {
                return Some(i.link);
            }
        }
        None
    }

    fn put(&self, authority: Authority, link: Link) {
        if !link.is_open() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if self.checkins.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            let timeout = self.idle_timeout;
            // Nobody drives an idle connection: drive each once here so a
            // connection its instance closed is seen ended and let go.
            let mut cx = Context::from_waker(Waker::noop());
            idle.retain(|_, list| {
                list.retain_mut(|i| {
                    i.link.drive(&mut cx);
                    i.link.is_open() && i.since.elapsed() < timeout
                });
                !list.is_empty()
            });
        }
        let list = idle.entry(authority).or_default();
        if list.len() < MAX_IDLE_PER_INSTANCE {
            list.push(Idle {
                link,
                since: Instant::now(),
            });
        }
    }

    async fn connect(&self, authority: &Authority) -> Result<Link, std::io::Error> {
        let stream =
            tokio::time::timeout(self.connect_timeout, TcpStream::connect(authority.as_str()))
                .await
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "the connect timed out")
                })??;
        stream.set_nodelay(true)?;
        let (sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        Ok(Link {
            sender,
            driver: Some(Box::pin(connection.with_upgrades())),
        })
    }
}

/// Why a request sent on a [`Connection`] got no response head.
#[derive(Debug)]
pub enum Failed {
    /// The reused connection was closed, and a fresh one could not be made.
    Connect(std::io::Error),
    /// The exchange failed (cut off, malformed, the body over its limit).
    Exchange(hyper::Error),
}

impl Connection {
    /// Sends `req` (origin-form URI, `Host` set), driving the connection
    /// until the response head is in, and answers it with the lease that
    /// drives the rest. A reused connection that turns out closed before
    /// the request was written sends it on a fresh connection instead.
    pub async fn send(mut self, req: Request<Body>) -> Result<(Response<Incoming>, Lease), Failed> {
        let mut req = req;
        let mut reused = self.reused;
        loop {
            let mut answer = std::pin::pin!(self.link.sender.try_send_request(req));
            let link = &mut self.link;
            let answered = std::future::poll_fn(|cx| {
                link.drive(cx);
                answer.as_mut().poll(cx)
            })
            .await;
            match answered {
                Ok(resp) => {
                    let lease = Lease {
                        pool: self.pool,
                        authority: self.authority,
                        link: self.link,
                    };
                    return Ok((resp, lease));
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) if reused => {
                        req = unsent;
                        reused = false;
                        self.link = self
                            .pool
                            .connect(&self.authority)
                            .await
                            .map_err(Failed::Connect)?;
                    }
                    _ => return Err(Failed::Exchange(e.into_error())),
                },
            }
        }
    }
}
