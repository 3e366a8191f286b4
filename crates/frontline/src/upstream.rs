//! A worker thread's HTTP/1.1 connections to instances: reused newest
//! first, handed back when a response has been read to its end, never
//! shared between threads.
//!
//! hyper-util's pooled client is general (any executor and connector,
//! HTTP/2, a task per request that waits to return the connection); on the
//! edge's hot path that generality cost about a tenth of its CPU per
//! request. This pool does only what the edge needs, on the worker's own
//! thread (its lock is never contended): a connection is obtained before
//! the request is built, so a refused or timed-out connect leaves the
//! request, body included, free to go to another instance; a connection
//! whose instance closed it while idle hands the request back unsent, and
//! it goes out on a fresh one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
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
    sender: SendRequest<Body>,
    since: Instant,
}

/// A connection to an instance, ready for one request.
#[derive(Debug)]
pub struct Connection {
    pool: Arc<Http1Pool>,
    authority: Authority,
    sender: SendRequest<Body>,
    /// Came from the idle list (so it may have been closed meanwhile).
    reused: bool,
}

/// Hands a connection back once its response has been read to the end.
#[derive(Debug)]
pub struct Checkin {
    pool: Arc<Http1Pool>,
    authority: Authority,
    sender: SendRequest<Body>,
}

impl Checkin {
    /// The response was read to its end: the connection may serve another.
    pub fn put(self) {
        self.pool.put(self.authority, self.sender);
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
        while let Some(mut sender) = self.checkout(authority) {
            // An idle connection is ready at once (or as soon as its task
            // has seen the last response out), unless it was closed.
            if sender.is_ready()
                || matches!(
                    tokio::time::timeout(self.connect_timeout, sender.ready()).await,
                    Ok(Ok(()))
                )
            {
                return Ok(self.wrap(authority, sender, true));
            }
        }
        let sender = self.connect(authority).await?;
        Ok(self.wrap(authority, sender, false))
    }

    fn wrap(
        self: &Arc<Self>,
        authority: &Authority,
        sender: SendRequest<Body>,
        reused: bool,
    ) -> Connection {
        Connection {
            pool: self.clone(),
            authority: authority.clone(),
            sender,
            reused,
        }
    }

    fn checkout(&self, authority: &Authority) -> Option<SendRequest<Body>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.get_mut(authority)?;
        while let Some(i) = list.pop() {
            if !i.sender.is_closed() && i.since.elapsed() < self.idle_timeout {
                return Some(i.sender);
            }
        }
        None
    }

    fn put(&self, authority: Authority, sender: SendRequest<Body>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if self.checkins.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            let timeout = self.idle_timeout;
            idle.retain(|_, list| {
                list.retain(|i| !i.sender.is_closed() && i.since.elapsed() < timeout);
                !list.is_empty()
            });
        }
        let list = idle.entry(authority).or_default();
        if list.len() < MAX_IDLE_PER_INSTANCE {
            list.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    async fn connect(&self, authority: &Authority) -> Result<SendRequest<Body>, std::io::Error> {
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
        tokio::spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!(error = %e, "instance connection ended with an error");
            }
        });
        Ok(sender)
    }
}

impl Connection {
    /// Sends `req` (origin-form URI, `Host` set) and answers the response
    /// head with what hands the connection back once its body is read. A
    /// reused connection that turns out closed before the request was
    /// written sends it on a fresh connection instead.
    pub async fn send(
        mut self,
        req: Request<Body>,
    ) -> Result<(Response<Incoming>, Checkin), hyper::Error> {
        let mut req = req;
        let mut reused = self.reused;
        loop {
            match self.sender.try_send_request(req).await {
                Ok(resp) => {
                    let checkin = Checkin {
                        pool: self.pool,
                        authority: self.authority,
                        sender: self.sender,
                    };
                    return Ok((resp, checkin));
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) if reused => {
                        req = unsent;
                        reused = false;
                        self.sender = match self.pool.connect(&self.authority).await {
                            Ok(s) => s,
                            Err(_) => return Err(e.into_error()),
                        };
                    }
                    _ => return Err(e.into_error()),
                },
            }
        }
    }
}
