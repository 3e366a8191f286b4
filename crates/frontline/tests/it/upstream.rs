//! The edge's HTTP/1.1 fast path against an instance that writes its
//! answers by hand: every way RFC 9112 frames a response body, informational
//! answers, malformed answers, and a connection closed under a request; and
//! its server side against a client that writes by hand too: pipelined
//! requests, a connection handed to hyper half way, `Connection: close`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use bytes::BytesMut;
use frontline::h1::{self, Chunked, Decoded, Framing};

use crate::harness::{World, host, world};

/// An instance speaking HTTP/1.1 by hand, answering by path (see
/// [`answer`]); it notes each request line with the index of the
/// connection it came on.
struct Raw {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<(usize, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Raw {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Raw {
    async fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(AtomicUsize::new(0));
        let log = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let index = accepted.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(serve(stream, index, log.clone()));
            }
        });
        Ok(Self { addr, seen, task })
    }

    /// The connection indexes that requests for `line` came on.
    fn connections_of(&self, line: &str) -> Vec<usize> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, l)| l == line)
            .map(|(c, _)| *c)
            .collect()
    }
}

/// What the instance writes for a request, and whether it then closes.
fn answer(method: &str, path: &str) -> (&'static [u8], bool) {
    if method == "HEAD" {
        return (b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n", false);
    }
    match path {
        "/chunked" => (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhello \r\n5;x=y\r\nworld\r\n0\r\nx-checksum: 1\r\n\r\n",
            false,
        ),
        "/close" => (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the close",
            true,
        ),
        "/hints" => (
            b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhints",
            false,
        ),
        "/304" => (b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n", false),
        "/named" => (
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nX-Kept: 2\r\nContent-Length: 2\r\n\r\nok",
            false,
        ),
        "/conflict" => (
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc",
            true,
        ),
        "/cut" => (b"HTTP/1.1 200 OK\r\nContent-Len", true),
        "/short" => (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", true),
        "/bad-chunk" => (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            true,
        ),
        _ => (b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nraw\n", false),
    }
}

/// Serves one connection. After answering `/arm`, the next request on
/// the connection is read and the connection closed without an answer
/// (an instance closing an idle keep-alive connection just as a request
/// crosses it).
async fn serve(mut stream: TcpStream, index: usize, seen: Arc<Mutex<Vec<(usize, String)>>>) {
    let mut buf = Vec::new();
    let mut armed = false;
    loop {
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        // A request body is read and dropped.
        let length = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        while buf.len() < length {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..length);
        let line = head.lines().next().unwrap_or_default().to_owned();
        seen.lock().unwrap().push((index, line.clone()));
        if armed {
            return;
        }
        let mut words = line.split(' ');
        let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or("/"));
        let (bytes, close) = answer(method, path);
        if stream.write_all(bytes).await.is_err() || close {
            return;
        }
        armed = path == "/arm";
    }
}

/// An edge serving `host("raw")` from one [`Raw`] instance.
async fn served() -> Result<(World, Raw)> {
    let w = world("").await?;
    let raw = Raw::start().await?;
    w.host_on("raw", &[raw.addr]).await?;
    w.edge.wait_host(&host("raw"), StatusCode::OK).await?;
    Ok((w, raw))
}

/// One client connection to the edge (so one edge worker, one pool).
struct Client(SendRequest<Full<Bytes>>);

/// An answer whose body may have failed part way (unlike the
/// harness's `Answer`, whose body was read whole).
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Result<Bytes>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(Self(sender))
    }

    async fn send(&mut self, method: Method, path: &str) -> Result<Reply> {
        self.0.ready().await?;
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", host("raw"))
            .body(Full::new(Bytes::new()))?;
        let resp =
            tokio::time::timeout(Duration::from_secs(10), self.0.send_request(req)).await??;
        let (parts, body) = resp.into_parts();
        let body = tokio::time::timeout(Duration::from_secs(10), body.collect())
            .await?
            .map(|b| b.to_bytes())
            .map_err(anyhow::Error::from);
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    async fn text(&mut self, path: &str) -> Result<(StatusCode, String)> {
        let a = self.send(Method::GET, path).await?;
        Ok((a.status, String::from_utf8_lossy(&a.body?).into_owned()))
    }
}

/// Chunked bodies (extensions, trailers) arrive decoded and leave their
/// connection reusable; a body that ends at the close arrives whole, and
/// its connection is never reused.
#[tokio::test]
async fn chunked_and_close_delimited_bodies_arrive_whole() -> Result<()> {
    let (w, raw) = served().await?;
    let mut c = Client::connect(w.edge.http).await?;
    for _ in 0..3 {
        assert_eq!(
            c.text("/chunked").await?,
            (StatusCode::OK, "hello world".into())
        );
    }
    let chunked = raw.connections_of("GET /chunked HTTP/1.1");
    assert!(
        chunked.iter().all(|&i| i == chunked[0]),
        "chunked answers came on connections {chunked:?}"
    );
    for _ in 0..3 {
        assert_eq!(
            c.text("/close").await?,
            (StatusCode::OK, "until the close".into())
        );
    }
    let mut closing = raw.connections_of("GET /close HTTP/1.1");
    closing.dedup();
    assert_eq!(
        closing.len(),
        3,
        "a connection that ended its body by closing was reused"
    );
    w.edge.shutdown().await
}

/// HEAD and 304 answers have no body whatever their headers say; an
/// informational answer (103 Early Hints) is followed by the real one;
/// all of it on one kept connection.
#[tokio::test]
async fn bodiless_and_informational_answers_keep_the_connection() -> Result<()> {
    let (w, raw) = served().await?;
    let mut c = Client::connect(w.edge.http).await?;
    let head = c.send(Method::HEAD, "/").await?;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.headers["content-length"], "4");
    assert!(head.body?.is_empty());
    let not_modified = c.send(Method::GET, "/304").await?;
    assert_eq!(not_modified.status, StatusCode::NOT_MODIFIED);
    assert!(not_modified.body?.is_empty());
    assert_eq!(c.text("/hints").await?, (StatusCode::OK, "hints".into()));
    assert_eq!(c.text("/").await?, (StatusCode::OK, "raw\n".into()));
    let lines = [
        "HEAD / HTTP/1.1",
        "GET /304 HTTP/1.1",
        "GET /hints HTTP/1.1",
    ];
    let used: Vec<usize> = lines.iter().flat_map(|l| raw.connections_of(l)).collect();
    assert_eq!(used.len(), 3);
    assert!(used.iter().all(|&i| i == used[0]), "connections {used:?}");
    w.edge.shutdown().await
}

/// A head with two lengths, or cut off, is a 502; a body cut short or
/// badly chunked aborts the client's connection (never a whole-looking
/// answer); the edge serves on.
#[tokio::test]
async fn malformed_answers_are_refused() -> Result<()> {
    let (w, _raw) = served().await?;
    let mut c = Client::connect(w.edge.http).await?;
    for path in ["/conflict", "/cut"] {
        let a = c.send(Method::GET, path).await?;
        assert_eq!(a.status, StatusCode::BAD_GATEWAY, "{path}");
        assert!(String::from_utf8_lossy(&a.body?).contains("cut off or malformed"));
    }
    for path in ["/short", "/bad-chunk"] {
        // The head may or may not have left before the body broke.
        let mut fresh = Client::connect(w.edge.http).await?;
        let whole = fresh
            .send(Method::GET, path)
            .await
            .is_ok_and(|a| a.body.is_ok());
        assert!(!whole, "{path}: a broken body was passed off as whole");
    }
    assert_eq!(c.text("/").await?, (StatusCode::OK, "raw\n".into()));
    w.edge.shutdown().await
}

/// The instance closes a kept connection just as a request crosses it: an
/// idempotent request goes again on a fresh connection (the client never
/// sees it); a POST, which the instance may have acted on, is not sent
/// twice.
#[tokio::test]
async fn a_connection_closed_under_a_request_is_retried_only_when_safe() -> Result<()> {
    let (w, raw) = served().await?;
    let mut c = Client::connect(w.edge.http).await?;
    assert_eq!(c.text("/arm").await?, (StatusCode::OK, "raw\n".into()));
    assert_eq!(c.text("/again").await?, (StatusCode::OK, "raw\n".into()));
    let again = raw.connections_of("GET /again HTTP/1.1");
    assert_eq!(again.len(), 2, "the request was not sent again: {again:?}");
    assert_ne!(again[0], again[1]);
    assert_eq!(again[0], raw.connections_of("GET /arm HTTP/1.1")[0]);

    assert_eq!(c.text("/arm").await?, (StatusCode::OK, "raw\n".into()));
    let post = c.send(Method::POST, "/once").await?;
    assert_eq!(post.status, StatusCode::BAD_GATEWAY);
    assert_eq!(raw.connections_of("POST /once HTTP/1.1").len(), 1);
    w.edge.shutdown().await
}

/// A response as a hand-written client reads it.
#[derive(Debug)]
struct Read {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

/// Sends one GET head (`path`, `Host: host`, then `extra` header lines)
/// on `stream` and reads its response.
async fn get_on(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    host: &str,
    path: &str,
    extra: &str,
) -> Result<Read> {
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n").as_bytes())
        .await?;
    let mut answers = read_responses(stream, buf, &[Method::GET]).await?;
    Ok(answers.remove(0))
}

/// Reads the responses to `methods`, in order, from `stream` (what is
/// left of `buf` first), framed as RFC 9112 says.
async fn read_responses(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    methods: &[Method],
) -> Result<Vec<Read>> {
    async fn more(stream: &mut TcpStream, buf: &mut BytesMut) -> Result<usize> {
        Ok(tokio::time::timeout(Duration::from_secs(10), stream.read_buf(buf)).await??)
    }
    let mut out = Vec::new();
    for method in methods {
        let head = loop {
            match h1::parse_response(buf, method)? {
                Some(h) if h.status.is_informational() => {}
                Some(h) => break h,
                None => anyhow::ensure!(more(stream, buf).await? > 0, "closed before a head"),
            }
        };
        let mut body = Vec::new();
        match head.framing {
            Framing::Empty => {}
            Framing::Length(n) => {
                let n = usize::try_from(n)?;
                while buf.len() < n {
                    anyhow::ensure!(more(stream, buf).await? > 0, "closed in a body");
                }
                body.extend_from_slice(&buf.split_to(n));
            }
            Framing::Chunked => {
                let mut chunked = Chunked::default();
                loop {
                    match chunked.decode(buf)? {
                        Decoded::Data(d) => body.extend_from_slice(&d),
                        Decoded::End => break,
                        Decoded::More => {
                            anyhow::ensure!(more(stream, buf).await? > 0, "closed in a body");
                        }
                    }
                }
            }
            Framing::Close => while more(stream, buf).await? > 0 {},
        }
        out.push(Read {
            status: head.status,
            headers: head.header_map()?,
            body,
        });
    }
    Ok(out)
}

/// Requests written back to back in one write are answered in order on
/// the one connection, each framed for the client (a body that ended at
/// the instance's close arrives chunked, its connection kept); a request
/// with a body hands the connection to hyper half way, and what the client
/// sent after it is still answered.
#[tokio::test]
async fn pipelined_requests_and_a_hand_over_to_hyper_share_one_connection() -> Result<()> {
    let (w, raw) = served().await?;
    let h = host("raw");
    let mut c = TcpStream::connect(w.edge.http).await?;
    let requests = format!(
        "GET /chunked HTTP/1.1\r\nHost: {h}\r\n\r\n\
         GET /close HTTP/1.1\r\nHost: {h}\r\nX-Request-Id: mine-1\r\n\r\n\
         HEAD / HTTP/1.1\r\nHost: {h}\r\n\r\n\
         POST /form HTTP/1.1\r\nHost: {h}\r\nContent-Length: 3\r\n\r\nabc\
         GET /after HTTP/1.1\r\nHost: {h}\r\n\r\n"
    );
    c.write_all(requests.as_bytes()).await?;
    let methods = [
        Method::GET,
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::GET,
    ];
    let mut buf = BytesMut::new();
    let answers = read_responses(&mut c, &mut buf, &methods).await?;
    let bodies: Vec<_> = answers
        .iter()
        .map(|a| (a.status, String::from_utf8_lossy(&a.body).into_owned()))
        .collect();
    assert_eq!(
        bodies,
        [
            (StatusCode::OK, "hello world".into()),
            (StatusCode::OK, "until the close".into()),
            (StatusCode::OK, String::new()),
            (StatusCode::OK, "raw\n".into()),
            (StatusCode::OK, "raw\n".into()),
        ]
    );
    for a in &answers {
        assert!(a.headers.contains_key("date"), "{:?}", a.headers);
        assert!(
            a.headers.contains_key("x-ctrl-deployment"),
            "{:?}",
            a.headers
        );
        assert!(!a.headers.contains_key("connection"), "{:?}", a.headers);
    }
    assert_eq!(answers[0].headers["transfer-encoding"], "chunked");
    assert_eq!(answers[1].headers["transfer-encoding"], "chunked");
    assert_eq!(answers[1].headers["x-request-id"], "mine-1");
    assert_eq!(answers[2].headers["content-length"], "4");
    assert_eq!(
        raw.connections_of("POST /form HTTP/1.1").len(),
        1,
        "the body's request reached the instance once"
    );
    assert_eq!(raw.connections_of("GET /after HTTP/1.1").len(), 1);
    // Still the same client connection, now hyper's.
    let again = get_on(&mut c, &mut buf, &h, "/", "").await?;
    assert_eq!(again.body, b"raw\n");
    w.edge.shutdown().await
}

/// `Connection: close` from the client is answered with it, and the edge
/// then closes; a client's keep-alive connection is not closed.
#[tokio::test]
async fn a_client_asking_to_close_is_answered_then_closed() -> Result<()> {
    let (w, _raw) = served().await?;
    let h = host("raw");
    let mut c = TcpStream::connect(w.edge.http).await?;
    let mut buf = BytesMut::new();
    let kept = get_on(&mut c, &mut buf, &h, "/", "").await?;
    assert!(!kept.headers.contains_key("connection"));
    let closing = get_on(&mut c, &mut buf, &h, "/", "Connection: close\r\n").await?;
    assert_eq!(closing.body, b"raw\n");
    assert_eq!(closing.headers["connection"], "close");
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut rest)).await??;
    assert_eq!(n, 0, "bytes after the last answer: {rest:?}");
    w.edge.shutdown().await
}

/// Headers the instance's `Connection` header names are hop-by-hop for
/// that answer: the client never sees them, nor the `Connection` itself.
#[tokio::test]
async fn headers_an_answer_names_in_connection_do_not_cross() -> Result<()> {
    let (w, _raw) = served().await?;
    let h = host("raw");
    let mut c = TcpStream::connect(w.edge.http).await?;
    let mut buf = BytesMut::new();
    let a = get_on(&mut c, &mut buf, &h, "/named", "").await?;
    assert_eq!(a.body, b"ok");
    assert_eq!(a.headers["x-kept"], "2");
    assert!(!a.headers.contains_key("x-secret"), "{:?}", a.headers);
    assert!(!a.headers.contains_key("connection"), "{:?}", a.headers);
    w.edge.shutdown().await
}
