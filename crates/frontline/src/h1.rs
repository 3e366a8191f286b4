//! The HTTP/1.1 client side of the edge's fast path: the response head
//! parsed with `httparse`, the response body framed (RFC 9112 §6.3) and
//! decoded as it is read (the request, without a body, is written as one
//! buffer by `proxy`).
//!
//! Pure functions over buffers, no I/O: `upstream` does the reading and
//! writing. Anything unusual (a request body, an upgrade) goes through
//! hyper's client instead; what comes back here is checked as strictly as
//! hyper checks it (one Content-Length, a valid chunked encoding, bounded
//! heads, chunk lines and trailers).

use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, StatusCode, Version};

/// The largest response head read (hyper's default buffer limit is
/// about 400 KiB; an instance's head is rarely over a few KiB).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Headers a response head may have.
const MAX_HEADERS: usize = 128;
/// The longest chunk-size line (with extensions) or trailer section.
const MAX_CHUNK_LINE: usize = 4 * 1024;
const MAX_TRAILERS: usize = 16 * 1024;

/// Why an instance's answer cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Malformed {
    #[error("the response head is malformed: {0}")]
    Head(httparse::Error),
    #[error("the response head is over {MAX_HEAD_BYTES} bytes")]
    HeadTooLarge,
    #[error("the response has a header that is not valid")]
    Header,
    #[error("the response's Content-Length is not valid")]
    ContentLength,
    #[error("the response's chunked encoding is not valid")]
    Chunked,
    #[error("the response switched protocols although no upgrade was asked for")]
    UnaskedUpgrade,
}

/// A parsed response head, and how its body is framed.
#[derive(Debug)]
pub struct Head {
    pub status: StatusCode,
    pub version: Version,
    pub framing: Framing,
    /// The connection may carry another request once the body is read.
    pub keep_alive: bool,
    /// Its `Connection` headers name headers that are not hop-by-hop
    /// already (which then are, for this message).
    pub connection_names: bool,
    /// The head as it came: status line, headers, blank line.
    raw: Bytes,
}

/// How a response body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 204, 304, or `Content-Length: 0`).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the instance closes the connection.
    Close,
}

impl Head {
    /// Each header, in order, as the instance sent it.
    pub fn each_header<'a>(&'a self, mut f: impl FnMut(&'a [u8], &'a [u8])) {
        let raw: &'a [u8] = &self.raw;
        let mut slots = [const { MaybeUninit::uninit() }; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut []);
        // Parsed whole once already: the same again.
        if httparse::ParserConfig::default()
            .parse_response_with_uninit_headers(&mut parsed, raw, &mut slots)
            .is_ok()
        {
            for h in &*parsed.headers {
                f(h.name.as_bytes(), h.value);
            }
        }
    }

    /// The headers as a map; values are slices of the head's bytes, not
    /// copies.
    pub fn header_map(&self) -> Result<HeaderMap, Malformed> {
        let base = self.raw.as_ptr() as usize;
        let mut headers = HeaderMap::new();
        let mut bad = false;
        self.each_header(|name, value| {
            let start = value.as_ptr() as usize - base;
            let value = if value.is_empty() {
                Ok(HeaderValue::from_static(""))
            } else {
                HeaderValue::from_maybe_shared(self.raw.slice(start..start + value.len()))
            };
            match (HeaderName::from_bytes(name), value) {
                (Ok(n), Ok(v)) => {
                    headers.append(n, v);
                }
                _ => bad = true,
            }
        });
        if bad {
            return Err(Malformed::Header);
        }
        Ok(headers)
    }
}

/// Parses a response head at the start of `buf`: `Ok(None)` while it is
/// incomplete, else the head and, removed from `buf`, its bytes. An
/// informational (1xx) head is returned like any other; the caller skips
/// it.
pub fn parse_response(buf: &mut BytesMut, method: &Method) -> Result<Option<Head>, Malformed> {
    let mut slots = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut parsed,
        buf,
        &mut slots,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD_BYTES => {
            return Err(Malformed::HeadTooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(Malformed::Head(e)),
    };
    let status = StatusCode::from_u16(parsed.code.unwrap_or(0)).map_err(|_| Malformed::Header)?;
    let version = if parsed.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let headers = &*parsed.headers;
    let framing = framing(status, method, headers)?;
    let named = |name: &str| headers.iter().any(|h| h.name.eq_ignore_ascii_case(name));
    let keep_alive = version == Version::HTTP_11
        && !has_token(headers, "connection", "close")
        && framing != Framing::Close
        // Both framings named: the length is not to be trusted, nor
        // whatever follows the body (RFC 9112 §6.3, item 3).
        && !(named("transfer-encoding") && named("content-length"));
    let connection_names = values(headers, "connection")
        .flat_map(|v| v.split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .any(|t| !t.eq_ignore_ascii_case(b"close") && !crate::headers::is_hop_by_hop(t));
    Ok(Some(Head {
        status,
        version,
        framing,
        keep_alive,
        connection_names,
        raw: buf.split_to(len).freeze(),
    }))
}

/// The values of the headers called `name`, in order.
fn values<'h>(
    headers: &'h [httparse::Header<'_>],
    name: &'h str,
) -> impl DoubleEndedIterator<Item = &'h [u8]> {
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

/// RFC 9112 §6.3 for a response to `method`.
fn framing(
    status: StatusCode,
    method: &Method,
    headers: &[httparse::Header<'_>],
) -> Result<Framing, Malformed> {
    if *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(Framing::Empty);
    }
    if let Some(last) = values(headers, "transfer-encoding").next_back() {
        // Chunked must be the final coding; anything else runs to the close.
        let last = last.rsplit(|b| *b == b',').next().map(<[u8]>::trim_ascii);
        return Ok(match last {
            Some(c) if c.eq_ignore_ascii_case(b"chunked") => Framing::Chunked,
            _ => Framing::Close,
        });
    }
    let mut length = None;
    for v in values(headers, "content-length") {
        for part in v.split(|b| *b == b',') {
            let part = part.trim_ascii();
            if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
                return Err(Malformed::ContentLength);
            }
            let n: u64 = std::str::from_utf8(part)
                .ok()
                .and_then(|p| p.parse().ok())
                .ok_or(Malformed::ContentLength)?;
            if length.is_some_and(|l| l != n) {
                return Err(Malformed::ContentLength);
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(0) => Framing::Empty,
        Some(n) => Framing::Length(n),
        None => Framing::Close,
    })
}

fn has_token(headers: &[httparse::Header<'_>], name: &str, token: &str) -> bool {
    values(headers, name)
        .flat_map(|v| v.split(|b| *b == b','))
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Decodes a chunked body as its bytes arrive.
#[derive(Debug, Default)]
pub struct Chunked {
    state: ChunkState,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Before a chunk-size line.
    #[default]
    Size,
    /// Inside a chunk's data.
    Data(u64),
    /// After a chunk's data, before its CRLF.
    DataEnd,
    /// After the last chunk: trailer lines up to an empty one.
    Trailers,
    Done,
}

/// What the decoder made of the buffered bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Body data (consumed from the buffer).
    Data(Bytes),
    /// More bytes are needed.
    More,
    /// The body has ended (trailers, if any, were consumed and dropped).
    End,
}

impl Chunked {
    /// Decodes from the front of `buf`, consuming what it uses.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, Malformed> {
        loop {
            match self.state {
                ChunkState::Size => match httparse::parse_chunk_size(buf) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        buf.advance(used);
                        self.state = if size == 0 {
                            ChunkState::Trailers
                        } else {
                            ChunkState::Data(size)
                        };
                    }
                    Ok(httparse::Status::Partial) if buf.len() > MAX_CHUNK_LINE => {
                        return Err(Malformed::Chunked);
                    }
                    Ok(httparse::Status::Partial) => return Ok(Decoded::More),
                    Err(_) => return Err(Malformed::Chunked),
                },
                ChunkState::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::More);
                    }
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left)
                    };
                    return Ok(Decoded::Data(buf.split_to(take).freeze()));
                }
                ChunkState::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::More);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(Malformed::Chunked);
                    }
                    buf.advance(2);
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers => {
                    // Trailer fields are dropped: lines up to an empty one.
                    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
                        if buf.len() > MAX_TRAILERS {
                            return Err(Malformed::Chunked);
                        }
                        return Ok(Decoded::More);
                    };
                    if end > MAX_TRAILERS {
                        return Err(Malformed::Chunked);
                    }
                    buf.advance(end + 2);
                    if end == 0 {
                        self.state = ChunkState::Done;
                    }
                }
                ChunkState::Done => return Ok(Decoded::End),
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `valid` with a few bytes changed, dropped, or cut short, at random.
    pub(crate) fn mangle(valid: &[u8]) -> Vec<u8> {
        use rand::Rng;
        let mut rng = rand::rng();
        let mut raw = valid.to_vec();
        for _ in 0..rng.random_range(1..6) {
            if raw.is_empty() {
                break;
            }
            let i = rng.random_range(0..raw.len());
            match rng.random_range(0..3) {
                0 => raw[i] = rng.random(),
                1 => {
                    raw.remove(i);
                }
                _ => raw.truncate(i),
            }
        }
        raw
    }

    fn head(raw: &str, method: &Method) -> Result<Option<Head>, Malformed> {
        parse_response(&mut BytesMut::from(raw), method)
    }

    /// Instance heads mangled at random never panic the parse, the
    /// header walk or the map built from it.
    #[test]
    fn mangled_response_heads_never_panic() {
        let valid = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive, x-a\r\n\
            X-A: 1\r\nTransfer-Encoding: gzip, chunked\r\nDate: x\r\n\r\nabc";
        let mut parsed = 0;
        for _ in 0..20_000 {
            let raw = mangle(valid);
            let mut buf = BytesMut::from(&raw[..]);
            if let Ok(Some(h)) = parse_response(&mut buf, &Method::GET) {
                parsed += 1;
                let mut n = 0;
                h.each_header(|_, _| n += 1);
                if let Ok(map) = h.header_map() {
                    assert_eq!(map.len(), n);
                }
            }
        }
        assert!(parsed > 1_000, "only {parsed} mangled heads parsed whole");
    }

    #[test]
    fn heads_are_parsed_framed_and_consumed() {
        let mut buf = BytesMut::from(
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-A: 1\r\nX-A: 2\r\n\r\nabcHTTP",
        );
        let h = parse_response(&mut buf, &Method::GET).unwrap().unwrap();
        assert_eq!(h.status, StatusCode::OK);
        assert_eq!(h.framing, Framing::Length(3));
        assert!(h.keep_alive);
        assert!(!h.connection_names);
        assert_eq!(h.header_map().unwrap().get_all("x-a").iter().count(), 2);
        let mut names = Vec::new();
        h.each_header(|n, v| names.push((n.to_vec(), v.to_vec())));
        assert_eq!(
            names[1],
            (b"X-A".to_vec(), b"1".to_vec()),
            "as sent, in order"
        );
        assert_eq!(&buf[..], b"abcHTTP");

        let incomplete = "HTTP/1.1 200 OK\r\nContent-Len";
        let mut partial = BytesMut::from(incomplete);
        assert!(
            parse_response(&mut partial, &Method::GET)
                .unwrap()
                .is_none()
        );
        assert_eq!(
            &partial[..],
            incomplete.as_bytes(),
            "an incomplete head is left in place"
        );
    }

    #[test]
    fn a_connection_header_naming_other_headers_is_noted() {
        let names = |c: &str| {
            head(
                &format!("HTTP/1.1 200 OK\r\nConnection: {c}\r\nContent-Length: 0\r\n\r\n"),
                &Method::GET,
            )
            .unwrap()
            .unwrap()
            .connection_names
        };
        assert!(!names("keep-alive"));
        assert!(!names("Close"));
        assert!(!names("keep-alive, Upgrade"));
        assert!(names("keep-alive, X-Secret"));
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let f = |raw: &str, m: &Method| head(raw, m).unwrap().unwrap().framing;
        let get = &Method::GET;
        assert_eq!(
            f(
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                &Method::HEAD
            ),
            Framing::Empty
        );
        assert_eq!(f("HTTP/1.1 204 No Content\r\n\r\n", get), Framing::Empty);
        assert_eq!(
            f(
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
                get
            ),
            Framing::Empty
        );
        assert_eq!(f("HTTP/1.1 100 Continue\r\n\r\n", get), Framing::Empty);
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", get),
            Framing::Empty
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\n\r\n", get),
            Framing::Length(7)
        );
        assert_eq!(
            f(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                get
            ),
            Framing::Chunked
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", get),
            Framing::Close
        );
        assert_eq!(f("HTTP/1.1 200 OK\r\n\r\n", get), Framing::Close);
        let both = head(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n",
            get,
        )
        .unwrap()
        .unwrap();
        assert_eq!(both.framing, Framing::Chunked);
        assert!(
            !both.keep_alive,
            "a message naming both framings is never reused"
        );
    }

    #[test]
    fn connections_are_kept_only_when_http_1_1_says_so() {
        let keep = |raw: &str| head(raw, &Method::GET).unwrap().unwrap().keep_alive;
        assert!(keep("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n"));
        assert!(!keep(
            "HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 1\r\n\r\n"
        ));
        assert!(!keep("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n"));
        assert!(
            !keep("HTTP/1.1 200 OK\r\n\r\n"),
            "a body ending at the close ends the connection"
        );
    }

    #[test]
    fn bad_heads_are_refused_with_their_reason() {
        let get = &Method::GET;
        for raw in [
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        ] {
            assert!(
                matches!(head(raw, get), Err(Malformed::ContentLength)),
                "{raw}"
            );
        }
        assert!(matches!(
            head("HTTP/1.1 2x0 OK\r\n\r\n", get),
            Err(Malformed::Head(_))
        ));
        assert!(matches!(
            head("HTTP/1.1 200 OK\r\nBad Name: 1\r\n\r\n", get),
            Err(Malformed::Head(_))
        ));
        let huge = format!("HTTP/1.1 200 OK\r\nX: {}", "a".repeat(MAX_HEAD_BYTES));
        assert!(matches!(head(&huge, get), Err(Malformed::HeadTooLarge)));
    }

    /// Decodes `wire` fed in pieces of `step` bytes.
    fn dechunk(wire: &[u8], step: usize) -> Result<Vec<u8>, Malformed> {
        let mut c = Chunked::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut fed = 0;
        loop {
            match c.decode(&mut buf)? {
                Decoded::Data(d) => out.extend_from_slice(&d),
                Decoded::End => return Ok(out),
                Decoded::More if fed == wire.len() => return Err(Malformed::Chunked),
                Decoded::More => {
                    let end = (fed + step).min(wire.len());
                    buf.extend_from_slice(&wire[fed..end]);
                    fed = end;
                }
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_pieces() {
        let wire = b"5;ext=1\r\nhello\r\n1\r\n \r\n6\r\nworld!\r\n0\r\nx-trailer: t\r\n\r\n";
        for step in [1, 2, 3, 7, wire.len()] {
            assert_eq!(dechunk(wire, step).unwrap(), b"hello world!", "step {step}");
        }
        // What follows the body stays in the buffer (the next response).
        let mut c = Chunked::default();
        let mut buf = BytesMut::from(&b"1\r\na\r\n0\r\n\r\nHTTP/1.1"[..]);
        assert_eq!(
            c.decode(&mut buf).unwrap(),
            Decoded::Data(Bytes::from_static(b"a"))
        );
        assert_eq!(c.decode(&mut buf).unwrap(), Decoded::End);
        assert_eq!(&buf[..], b"HTTP/1.1");
    }

    #[test]
    fn bad_chunked_bodies_are_refused() {
        for wire in [
            &b"zz\r\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhelloXX0\r\n\r\n",
            b"ffffffffffffffffffff\r\n",
        ] {
            assert!(
                matches!(dechunk(wire, 1), Err(Malformed::Chunked)),
                "{wire:?}"
            );
        }
        let long = format!("1;{}\r\n", "e".repeat(MAX_CHUNK_LINE + 1));
        assert!(matches!(
            dechunk(long.as_bytes(), 4096),
            Err(Malformed::Chunked)
        ));
        // A body cut off before its last chunk is the caller's to report.
        assert!(matches!(dechunk(b"5\r\nhel", 1), Err(Malformed::Chunked)));
    }
}
