//! The server side of the fast path: a client connection's plain HTTP/1.1
//! requests served from its raw bytes, without hyper, as nginx serves
//! them; the other half of `upstream`'s fast path.
//!
//! hyper's server builds a request (URI, header map, body channel) and
//! encodes a response from one, with a timer per request head; for a
//! request without a body, which most of an edge's traffic is, the edge
//! needs none of that. Here the head is parsed in place (`httparse`), the
//! instance's head written straight from its bytes (`request_head`),
//! and the response head written from the instance's with one pass over
//! its headers. One timer per connection serves every deadline (the next
//! head, the instance's answer): resetting it to a later time costs no
//! timer-wheel work.
//!
//! The routing rules are `Proxy`'s own (`Proxy::destination`), as are
//! the header rules (`crate::headers`): the fast path serves only what it
//! can serve in full, a request without a body forwarded to this region's
//! HTTP/1.1 instances. Anything else (a body, an upgrade, HTTP/1.0 or
//! HTTP/2, a head hyper would refuse, or a request the edge answers itself:
//! unknown hosts, redirects, ACME, wake-ups, peers) hands the connection,
//! with the bytes read but not served, to hyper for the rest of its life.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::mem::MaybeUninit;
use std::ops::Range;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes, BytesMut};
use futures::FutureExt;
use http_body_util::BodyExt;
use hyper::body::Body as _;
use hyper::{Method, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;

use super::{Answer, Conn, Destination, Proxy, request_head};
use crate::headers::{self, DEPLOYMENT, Forward, HeaderSink, REQUEST_ID, is_hop_by_hop, is_listed};
use crate::table::{Deployment, Upstream};
use crate::upstream::{self, UpstreamBody};

/// First room for request heads (grown up to the configured maximum).
const HEAD_BUFFER: usize = 4 * 1024;
/// Headers a request head may have (hyper's limit too).
const MAX_HEADERS: usize = 100;
/// Response bytes gathered before they are written.
const WRITE_BUFFER: usize = 16 * 1024;

/// How a connection left the fast path.
#[derive(Debug)]
pub enum Left<I> {
    /// It is over (closed by either side, timed out, or the edge stops).
    Closed,
    /// For hyper, the bytes read but not served first.
    Hyper(Rewind<I>),
}

/// What became of the bytes read so far.
enum Prepared {
    /// A request the fast path serves.
    Ready(Box<Ready>),
    /// The head is not complete yet.
    Partial,
    /// Not for the fast path: hyper serves it (and answers what is not
    /// valid as it should).
    Hyper,
}

/// A request ready to go: its head read, routed, and the instance's head
/// written.
struct Ready {
    /// The length of the client's head in the buffer.
    len: usize,
    method: Method,
    /// Where the path lies in the buffer.
    path: Range<usize>,
    host: String,
    request_id: headers::RequestId,
    close: bool,
    deployment: Arc<Deployment>,
    /// The head for the instance.
    head: BytesMut,
}

/// A first look at the request head at the start of `buf`.
enum Look {
    /// A complete HTTP/1.1 head this long.
    Complete(usize),
    Partial,
    /// Not HTTP/1.1, or not valid.
    Hyper,
}

fn look<'h, 'b>(
    req: &mut httparse::Request<'h, 'b>,
    buf: &'b [u8],
    slots: &'h mut [MaybeUninit<httparse::Header<'b>>],
) -> Look {
    match req.parse_with_uninit_headers(buf, slots) {
        Ok(httparse::Status::Complete(len)) if req.version == Some(1) => Look::Complete(len),
        Ok(httparse::Status::Complete(_)) | Err(_) => Look::Hyper,
        Ok(httparse::Status::Partial) => Look::Partial,
    }
}

/// What the fast path needs from a request's headers; `None` if hyper
/// must serve it.
struct Plain<'b> {
    host: &'b [u8],
    hops: Option<&'b [u8]>,
    request_id: Option<&'b [u8]>,
    /// The client asked to close the connection after this request.
    close: bool,
}

impl<'b> Plain<'b> {
    fn of(
        method: &[u8],
        path: &[u8],
        headers: impl Iterator<Item = (&'b [u8], &'b [u8])>,
    ) -> Option<Self> {
        if method == b"CONNECT" || !path.starts_with(b"/") {
            return None;
        }
        let mut plain = Plain {
            host: b"",
            hops: None,
            request_id: None,
            close: false,
        };
        let mut hosts = 0;
        for (n, v) in headers {
            let is = |name: &str| n.eq_ignore_ascii_case(name.as_bytes());
            if is("host") {
                hosts += 1;
                plain.host = v;
            } else if is("content-length") {
                if v.trim_ascii() != b"0" {
                    return None;
                }
            } else if is("transfer-encoding") || is("upgrade") || is("expect") {
                return None;
            } else if is("connection") {
                plain.close |= is_listed(std::iter::once(v), b"close");
            } else if is(headers::HOPS.as_str()) {
                plain.hops = Some(v);
            } else if is(REQUEST_ID.as_str()) {
                plain.request_id = plain.request_id.or(Some(v));
            }
        }
        (hosts == 1).then_some(plain)
    }
}

impl Proxy {
    /// Parses the request head at the start of `buf` and, if the fast path
    /// can serve it, routes it and writes the instance's head. Synchronous:
    /// httparse's view of the head never outlives it.
    fn prepare(&self, buf: &[u8], conn: &Conn) -> Prepared {
        let mut slots = [const { MaybeUninit::uninit() }; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut []);
        let len = match look(&mut req, buf, &mut slots) {
            Look::Complete(len) => len,
            Look::Partial => return Prepared::Partial,
            Look::Hyper => return Prepared::Hyper,
        };
        let (Some(method), Some(path)) = (req.method, req.path) else {
            return Prepared::Hyper;
        };
        let pairs = req.headers.iter().map(|h| (h.name.as_bytes(), h.value));
        let Some(plain) = Plain::of(method.as_bytes(), path.as_bytes(), pairs.clone()) else {
            return Prepared::Hyper;
        };
        let Some(host) = headers::host_from_header(plain.host) else {
            return Prepared::Hyper;
        };
        let hops = headers::hops(plain.hops);
        let deployment = match self.destination(&host, hops, conn.tls, method.as_bytes(), path) {
            Destination::Forward(d) if d.upstream == Upstream::Http1 && !d.backends.is_empty() => d,
            _ => return Prepared::Hyper,
        };
        let Ok(method) = Method::from_bytes(method.as_bytes()) else {
            return Prepared::Hyper;
        };
        let request_id = headers::request_id(plain.request_id);
        let f = Forward {
            client: conn.client.as_bytes(),
            tls: conn.tls,
            host: &host,
            hops,
            request_id: request_id.as_bytes(),
            upgrade: false,
        };
        let head = request_head(method.as_str().as_bytes(), path.as_bytes(), &pairs, &f);
        let start = path.as_ptr() as usize - buf.as_ptr() as usize;
        Prepared::Ready(Box::new(Ready {
            len,
            method,
            path: start..start + path.len(),
            host,
            request_id,
            close: plain.close,
            deployment,
            head,
        }))
    }

    /// Serves `io`'s requests on the fast path until the connection ends
    /// or a request needs hyper (see the module's docs). `stop` says when
    /// the edge drains: an idle connection closes, a busy one after its
    /// response.
    pub async fn serve_fast<I>(
        &self,
        mut io: I,
        conn: &Conn,
        stop: &watch::Receiver<bool>,
    ) -> Left<I>
    where
        I: AsyncRead + AsyncWrite + Unpin,
    {
        let mut buf = BytesMut::with_capacity(HEAD_BUFFER);
        let mut out = BytesMut::new();
        let mut deadline = pin!(tokio::time::sleep(self.request_header_timeout));
        let mut stopping = pin!(async {
            let mut rx = stop.clone();
            let _ = rx.wait_for(|s| *s).await;
        });
        // The value only ever turns true: a change seen is the drain.
        let stopped_before = *stop.borrow();
        let draining = || stopped_before || stop.has_changed().unwrap_or(true);
        let mut now = Instant::now();
        loop {
            // The next head, within the request-header timeout.
            deadline
                .as_mut()
                .reset(tokio::time::Instant::from_std(now) + self.request_header_timeout);
            let r = loop {
                match self.prepare(&buf, conn) {
                    Prepared::Ready(r) => break r,
                    Prepared::Hyper => return Left::Hyper(Rewind::new(io, buf.freeze())),
                    // hyper answers 431.
                    Prepared::Partial if buf.len() >= self.max_header_bytes => {
                        return Left::Hyper(Rewind::new(io, buf.freeze()));
                    }
                    Prepared::Partial => {}
                }
                if buf.capacity() - buf.len() < 1024 {
                    buf.reserve(HEAD_BUFFER);
                }
                let idle = buf.is_empty();
                tokio::select! {
                    biased;
                    read = io.read_buf(&mut buf) => match read {
                        Ok(0) | Err(_) => return Left::Closed,
                        Ok(_) => {}
                    },
                    () = &mut deadline => return Left::Closed,
                    () = &mut stopping, if idle => return Left::Closed,
                }
            };
            now = Instant::now();
            let d = &r.deployment;
            self.traffic.record(self.worker, &d.id);

            // Its answer, within the response-header timeout.
            deadline
                .as_mut()
                .reset(tokio::time::Instant::from_std(now) + self.response_header_timeout);
            let sent = tokio::select! {
                biased;
                sent = self.exchange(d, &r.head, &r.method, false) => sent,
                () = &mut deadline => Err(self.timed_out()),
            };
            let close = r.close || draining();
            let (status, page) = match &sent {
                Ok((fast, _)) => (fast.head.status, None),
                Err(e) => {
                    let (status, message) = self.failure(e, "backend");
                    (status, Some(message))
                }
            };
            // httparse checked the path is visible ASCII.
            let path = std::str::from_utf8(&buf[r.path.clone()]).unwrap_or_default();
            let answer = Answer {
                start: now,
                request_id: r.request_id.as_bytes(),
                host: &r.host,
                status,
                deployment: Some(d),
            };
            self.served(
                conn,
                &answer,
                self.access_log.then_some((r.method.as_str(), path)),
            );
            let head_request = r.method == Method::HEAD;
            let request_id = r.request_id.as_bytes();
            let written = match (sent, page) {
                (Ok((mut fast, _in_flight)), _) => {
                    let framing =
                        response_head(&mut out, &fast, d, request_id, head_request, close);
                    send_body(&mut io, &mut out, &mut fast.body, framing).await
                }
                (Err(_), page) => {
                    let message = page.unwrap_or_default();
                    page_head(&mut out, status, &message, request_id, head_request, close);
                    write(&mut io, &mut out).await
                }
            };
            if written.is_err() {
                return Left::Closed;
            }
            buf.advance(r.len);
            if close {
                let _ = tokio::time::timeout(self.request_header_timeout, io.shutdown()).await;
                return Left::Closed;
            }
            now = Instant::now();
        }
    }
}

/// How a response body crosses to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ToClient {
    /// None follows (HEAD, 1xx, 204, 304): the head as the instance sent it.
    None,
    /// Exactly this many bytes (`Content-Length`).
    Length(u64),
    /// Chunked: the instance's length was not known.
    Chunked,
}

/// Writes the client's response head from the instance's: its headers
/// less hop-by-hop ones, the edge's (deployment, request id, a date if it
/// had none) and the framing of the body that follows.
fn response_head(
    out: &mut BytesMut,
    fast: &upstream::Fast,
    d: &Deployment,
    request_id: &[u8],
    head_request: bool,
    close: bool,
) -> ToClient {
    let status = fast.head.status;
    let framing = if head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        ToClient::None
    } else {
        match fast.body.size_hint().exact() {
            Some(n) => ToClient::Length(n),
            None => ToClient::Chunked,
        }
    };
    status_line(out, status);
    // Headers the instance's `Connection` names are hop-by-hop too (rare:
    // most name none, or only `keep-alive`).
    let named = |n: &[u8]| {
        let mut found = false;
        fast.head.each_header(|cn, cv| {
            found |= cn.eq_ignore_ascii_case(b"connection") && is_listed(std::iter::once(cv), n);
        });
        found
    };
    let mut dated = false;
    fast.head.each_header(|n, v| {
        let is = |name: &str| n.eq_ignore_ascii_case(name.as_bytes());
        if is_hop_by_hop(n)
            || (fast.head.connection_names && named(n))
            || is(DEPLOYMENT.as_str())
            || is(REQUEST_ID.as_str())
            || (framing != ToClient::None && is("content-length"))
        {
            return;
        }
        dated |= is("date");
        out.put(n, v);
    });
    if let Some(v) = &d.header {
        out.put(DEPLOYMENT.as_str().as_bytes(), v.as_bytes());
    }
    end_head(out, request_id, !dated, close, framing);
    framing
}

/// Writes a page of the edge's own, as `super::page` makes it for hyper.
fn page_head(
    out: &mut BytesMut,
    status: StatusCode,
    message: &str,
    request_id: &[u8],
    head_request: bool,
    close: bool,
) {
    status_line(out, status);
    out.put(b"content-type", b"text/plain; charset=utf-8");
    out.put(b"cache-control", b"no-store");
    let length = message.len() as u64 + 1;
    end_head(out, request_id, true, close, ToClient::Length(length));
    if !head_request {
        out.extend_from_slice(message.as_bytes());
        out.extend_from_slice(b"\n");
    }
}

fn status_line(out: &mut BytesMut, status: StatusCode) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// The headers every answer of the fast path ends with, and the blank line.
fn end_head(out: &mut BytesMut, request_id: &[u8], date: bool, close: bool, framing: ToClient) {
    out.put(REQUEST_ID.as_str().as_bytes(), request_id);
    if date {
        DATE.with_borrow_mut(|d| out.put(b"date", d.now()));
    }
    match framing {
        ToClient::None => {}
        ToClient::Length(n) => {
            let _ = write!(out, "content-length: {n}\r\n");
        }
        ToClient::Chunked => out.put(b"transfer-encoding", b"chunked"),
    }
    if close {
        out.put(b"connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
}

/// The HTTP date of this second, formatted once a second per thread.
struct Date {
    second: u64,
    text: Vec<u8>,
}

impl Date {
    fn now(&mut self) -> &[u8] {
        let now = SystemTime::now();
        let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if second != self.second || self.text.is_empty() {
            self.second = second;
            self.text = httpdate::fmt_http_date(now).into_bytes();
        }
        &self.text
    }
}

thread_local! {
    static DATE: RefCell<Date> = const { RefCell::new(Date { second: 0, text: Vec::new() }) };
}

/// Writes the response body after its head (already in `out`): bytes at
/// hand are written with the head, in one write; the rest as it comes.
/// An instance's body that fails half way fails the client connection
/// (its length cannot be honoured).
async fn send_body<I>(
    io: &mut I,
    out: &mut BytesMut,
    body: &mut UpstreamBody,
    framing: ToClient,
) -> Result<(), SendFailed>
where
    I: AsyncWrite + Unpin,
{
    if framing == ToClient::None {
        return write(io, out).await;
    }
    loop {
        // What is at hand goes with what is written already; before
        // waiting for more, what is gathered goes out.
        let frame = match body.frame().now_or_never() {
            Some(frame) => frame,
            None => {
                write(io, out).await?;
                body.frame().await
            }
        };
        let data = match frame {
            None => break,
            Some(Err(_)) => return Err(SendFailed),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if !data.is_empty() => data,
                _ => continue,
            },
        };
        if framing == ToClient::Chunked {
            let _ = write!(out, "{:x}\r\n", data.len());
        }
        if out.len() + data.len() <= WRITE_BUFFER {
            out.extend_from_slice(&data);
        } else {
            // A large piece goes out as it is, not copied.
            write(io, out).await?;
            io.write_all(&data).await.map_err(|_| SendFailed)?;
        }
        if framing == ToClient::Chunked {
            out.extend_from_slice(b"\r\n");
        }
        if out.len() >= WRITE_BUFFER {
            write(io, out).await?;
        }
    }
    if framing == ToClient::Chunked {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    write(io, out).await?;
    io.flush().await.map_err(|_| SendFailed)
}

/// The client connection failed (or the instance's body did): it closes.
#[derive(Debug)]
struct SendFailed;

async fn write<I: AsyncWrite + Unpin>(io: &mut I, out: &mut BytesMut) -> Result<(), SendFailed> {
    if !out.is_empty() {
        io.write_all(out).await.map_err(|_| SendFailed)?;
        out.clear();
    }
    io.flush().await.map_err(|_| SendFailed)
}

/// A connection with bytes already read from it, which it reads first.
#[derive(Debug)]
pub struct Rewind<I> {
    read: Bytes,
    io: I,
}

impl<I> Rewind<I> {
    /// `io`, which reads `read` first.
    pub fn new(io: I, read: Bytes) -> Self {
        Self { read, io }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Rewind<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.read.is_empty() {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        let n = this.read.len().min(buf.remaining());
        buf.put_slice(&this.read[..n]);
        this.read.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Rewind<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(raw: &str) -> Option<(String, bool)> {
        let mut slots = [const { MaybeUninit::uninit() }; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut []);
        let Look::Complete(_) = look(&mut req, raw.as_bytes(), &mut slots) else {
            return None;
        };
        let pairs = req.headers.iter().map(|h| (h.name.as_bytes(), h.value));
        let p = Plain::of(req.method?.as_bytes(), req.path?.as_bytes(), pairs)?;
        Some((String::from_utf8_lossy(p.host).into_owned(), p.close))
    }

    fn looked(raw: &[u8]) -> Look {
        let mut slots = [const { MaybeUninit::uninit() }; MAX_HEADERS];
        look(&mut httparse::Request::new(&mut []), raw, &mut slots)
    }

    #[test]
    fn plain_requests_take_the_fast_path_and_others_go_to_hyper() {
        assert_eq!(
            plain("GET /a?b HTTP/1.1\r\nHost: x.localhost\r\nContent-Length: 0\r\n\r\n"),
            Some(("x.localhost".into(), false))
        );
        assert_eq!(
            plain("HEAD / HTTP/1.1\r\nhost: x\r\nConnection: keep-alive, Close\r\n\r\n"),
            Some(("x".into(), true))
        );
        for hyper in [
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            "PUT / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n",
            "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
            "CONNECT x:443 HTTP/1.1\r\nHost: x\r\n\r\n",
        ] {
            assert_eq!(plain(hyper), None, "{hyper:?}");
        }
        for hyper in [
            &b"GET / HTTP/1.0\r\nHost: x\r\n\r\n"[..],
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"GET / HTTP/1.1\r\nHo st: x\r\n\r\n",
        ] {
            assert!(matches!(looked(hyper), Look::Hyper), "{hyper:?}");
        }
        assert!(matches!(
            looked(b"GET / HTTP/1.1\r\nHost: x\r\n"),
            Look::Partial
        ));
    }

    /// Client heads mangled at random (bytes changed, dropped, cut
    /// short) never panic the parse or the checks that follow it, and a
    /// complete head never claims more bytes than were read.
    #[test]
    fn mangled_heads_never_panic_the_fast_path() {
        let valid = b"GET /a?b=c HTTP/1.1\r\nHost: App.Localhost:7080\r\nX-Request-Id: r-1\r\n\
            Connection: keep-alive, close\r\nx-ctrl-frontline-hops: 2\r\nContent-Length: 0\r\n\r\n";
        let mut complete = 0;
        for _ in 0..20_000 {
            let buf = crate::h1::tests::mangle(valid);
            let mut slots = [const { MaybeUninit::uninit() }; MAX_HEADERS];
            let mut req = httparse::Request::new(&mut []);
            if let Look::Complete(len) = look(&mut req, &buf, &mut slots) {
                assert!(len <= buf.len());
                complete += 1;
                let pairs = req.headers.iter().map(|h| (h.name.as_bytes(), h.value));
                if let (Some(m), Some(p)) = (req.method, req.path)
                    && let Some(plain) = Plain::of(m.as_bytes(), p.as_bytes(), pairs)
                {
                    let _ = headers::host_from_header(plain.host);
                    let _ = headers::hops(plain.hops);
                    let id = headers::request_id(plain.request_id);
                    assert!((1..=128).contains(&id.as_bytes().len()));
                }
            }
        }
        assert!(
            complete > 1_000,
            "only {complete} mangled heads parsed whole"
        );
    }

    #[tokio::test]
    async fn a_rewound_connection_reads_what_was_read_first() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut r = Rewind::new(a, Bytes::from_static(b"GET / HT"));
        b.write_all(b"TP/1.1\r\n").await.unwrap();
        drop(b);
        let mut all = String::new();
        r.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "GET / HTTP/1.1\r\n");
    }
}
