//! The rules for what crosses the edge in headers, in one place for both
//! ways a request is served (hyper's, and the fast path's raw heads):
//! which host a request is for, its request id and hop count, which
//! headers never cross a proxy (hop-by-hop), and what the edge adds to a
//! forwarded request (`X-Forwarded-*`, `Host`, the request id, the hops).

use bytes::BytesMut;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use rand::Rng;

/// Hop counter carried between edges.
pub const HOPS: HeaderName = HeaderName::from_static("x-ctrl-frontline-hops");
/// Request id, kept if sane, else generated.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Which deployment answered (debugging, and the edge tests).
pub const DEPLOYMENT: HeaderName = HeaderName::from_static("x-ctrl-deployment");
const FORWARDED_FOR: &str = "x-forwarded-for";
const FORWARDED_PROTO: &str = "x-forwarded-proto";
const FORWARDED_HOST: &str = "x-forwarded-host";

/// Headers that never cross a proxy as they are (RFC 9110 §7.6.1, and
/// the proxy credentials meant for this hop).
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Whether a header (by name, any case) is hop-by-hop.
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    HOP_BY_HOP
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h.as_bytes()))
}

/// Whether `name` is one of the comma-separated tokens of `values` (the
/// `Connection` headers of a message).
pub fn is_listed<'v>(mut values: impl Iterator<Item = &'v [u8]>, name: &[u8]) -> bool {
    values.any(|v| {
        v.split(|b| *b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(name))
    })
}

/// Removes the hop-by-hop headers of a message, and those its
/// `Connection` headers name.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over the names, no hashing.
    if !headers.keys().any(|n| is_hop_by_hop(n.as_str().as_bytes())) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .filter_map(|t| HeaderName::from_bytes(t.trim_ascii()).ok())
        .collect();
    for h in named.iter().map(HeaderName::as_str).chain(HOP_BY_HOP) {
        headers.remove(h);
    }
}

/// The host a `Host` header value names: lowercase, without port or
/// trailing dot; `None` if it is not a hostname.
pub fn host_from_header(value: &[u8]) -> Option<String> {
    let h = std::str::from_utf8(value).ok()?;
    // `name[:port]`; anything else fails the hostname rule below.
    let name = match h.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => h,
    };
    normalize_host(name)
}

/// Lowercase, no trailing dot, and a hostname by ctrl's one rule
/// (`ctrl_core::names::is_hostname`: the rule routes were made by).
pub fn normalize_host(raw: &str) -> Option<String> {
    let h = raw.trim_end_matches('.').to_ascii_lowercase();
    ctrl_core::names::is_hostname(&h).then_some(h)
}

/// The edges a request crossed so far, from its hop header (0 if none or
/// not a number).
pub fn hops(value: Option<&[u8]>) -> u32 {
    value
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// A request's id, held inline (no allocation on the request path).
#[derive(Debug, Clone, Copy)]
pub struct RequestId {
    bytes: [u8; 128],
    len: u8,
}

impl RequestId {
    /// Its bytes (valid in a header value).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// As a header value (hyper's path).
    pub fn to_header_value(&self) -> HeaderValue {
        HeaderValue::from_bytes(self.as_bytes()).unwrap_or_else(|_| HeaderValue::from_static("-"))
    }
}

/// The client's request id if sane (1-128 of `[A-Za-z0-9._:-]`), else a
/// new one (32 hex digits).
pub fn request_id(value: Option<&[u8]>) -> RequestId {
    let mut id = RequestId {
        bytes: [0; 128],
        len: 0,
    };
    if let Some(v) = value
        && (1..=128).contains(&v.len())
        && v.iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    {
        id.bytes[..v.len()].copy_from_slice(v);
        id.len = v.len() as u8;
        return id;
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let n = rand::rng().random::<u128>();
    for (i, digit) in id.bytes[..32].iter_mut().enumerate() {
        *digit = HEX[((n >> (124 - 4 * i)) & 0xf) as usize];
    }
    id.len = 32;
    id
}

/// Where the headers of a forwarded request go: a head written for an
/// instance, or the header map of a request hyper's client sends.
pub trait HeaderSink {
    /// Adds one header (name and value as they are valid on the wire).
    fn put(&mut self, name: &[u8], value: &[u8]);
}

impl HeaderSink for BytesMut {
    fn put(&mut self, name: &[u8], value: &[u8]) {
        self.reserve(name.len() + value.len() + 4);
        self.extend_from_slice(name);
        self.extend_from_slice(b": ");
        self.extend_from_slice(value);
        self.extend_from_slice(b"\r\n");
    }
}

impl HeaderSink for HeaderMap {
    fn put(&mut self, name: &[u8], value: &[u8]) {
        // Both came from a parsed message or from the edge: valid.
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            self.append(n, v);
        }
    }
}

/// What the edge adds to a request it forwards.
#[derive(Debug, Clone, Copy)]
pub struct Forward<'a> {
    /// The client's address (`X-Forwarded-For`).
    pub client: &'a [u8],
    /// It came over TLS (`X-Forwarded-Proto`).
    pub tls: bool,
    /// The requested host, normalised (`Host`, `X-Forwarded-Host`).
    pub host: &'a str,
    /// Edges it crossed before this one.
    pub hops: u32,
    /// Its request id.
    pub request_id: &'a [u8],
    /// It asks to upgrade the connection (its `Upgrade` header crosses).
    pub upgrade: bool,
}

/// Writes the headers of a forwarded request into `sink`: the client's
/// `headers` (name, value), less the hop-by-hop ones (those its
/// `Connection` names too) and those the edge sets, then the edge's own.
/// The first edge (`hops` 0) sets `X-Forwarded-Proto` and `-Host`; a
/// later one keeps what the first set, and appends to `X-Forwarded-For`.
pub fn forward_headers<'h, H>(headers: &H, f: &Forward<'_>, sink: &mut impl HeaderSink)
where
    H: Iterator<Item = (&'h [u8], &'h [u8])> + Clone,
{
    let is = |n: &[u8], name: &str| n.eq_ignore_ascii_case(name.as_bytes());
    let (mut chain, mut proto, mut connection) = (None, false, false);
    for (n, v) in headers.clone() {
        if is(n, FORWARDED_FOR) {
            chain = chain.or(Some(v));
        } else if is(n, FORWARDED_PROTO) {
            proto = true;
        } else if is(n, "connection") {
            connection = true;
        }
    }
    let connection_values = || {
        headers
            .clone()
            .filter(|(n, _)| n.eq_ignore_ascii_case(b"connection"))
            .map(|(_, v)| v)
    };
    for (n, v) in headers.clone() {
        let set_here = is(n, "host")
            || is(n, REQUEST_ID.as_str())
            || is(n, HOPS.as_str())
            || is(n, FORWARDED_FOR)
            || (f.hops == 0 && (is(n, FORWARDED_PROTO) || is(n, FORWARDED_HOST)));
        let crosses = if is(n, "upgrade") {
            f.upgrade
        } else {
            !(is_hop_by_hop(n) || connection && is_listed(connection_values(), n))
        };
        if crosses && !set_here {
            sink.put(n, v);
        }
    }
    if f.upgrade {
        sink.put(b"connection", b"upgrade");
    }
    match chain.filter(|c| !c.is_empty()) {
        Some(c) => sink.put(FORWARDED_FOR.as_bytes(), &[c, b", ", f.client].concat()),
        None => sink.put(FORWARDED_FOR.as_bytes(), f.client),
    }
    if !proto || f.hops == 0 {
        let scheme: &[u8] = if f.tls { b"https" } else { b"http" };
        sink.put(FORWARDED_PROTO.as_bytes(), scheme);
    }
    if f.hops == 0 {
        sink.put(FORWARDED_HOST.as_bytes(), f.host.as_bytes());
    }
    sink.put(b"host", f.host.as_bytes());
    sink.put(REQUEST_ID.as_str().as_bytes(), f.request_id);
    let mut hops = itoa::Buffer::new();
    let hops = hops.format(f.hops.saturating_add(1));
    sink.put(HOPS.as_str().as_bytes(), hops.as_bytes());
}

/// A header map's entries as the byte pairs [`forward_headers`] reads
/// (more than once: the map's own iterator cannot be copied).
pub fn pairs(headers: &HeaderMap) -> Vec<(&[u8], &[u8])> {
    headers
        .iter()
        .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_normalised_or_refused() {
        assert_eq!(
            normalize_host("Shop.Example.COM."),
            Some("shop.example.com".into())
        );
        for bad in [
            "",
            ".",
            "a..b",
            "a b",
            "evil\u{0}.com",
            &"a".repeat(64),
            "x/y",
        ] {
            assert_eq!(normalize_host(bad), None, "{bad:?}");
        }
        assert_eq!(
            host_from_header(b"App.Localhost:8443"),
            Some("app.localhost".into())
        );
        assert_eq!(host_from_header(b"app.localhost:x"), None);
        assert_eq!(host_from_header(b"\xff.localhost"), None);
    }

    #[test]
    fn request_ids_are_kept_if_sane() {
        assert_eq!(request_id(Some(b"abc-123")).as_bytes(), b"abc-123");
        assert_eq!(request_id(Some(&[b'a'; 128])).as_bytes(), &[b'a'; 128]);
        let generated = request_id(Some(b"a b<script>"));
        assert_eq!(generated.as_bytes().len(), 32);
        assert!(generated.as_bytes().iter().all(u8::is_ascii_hexdigit));
        assert_ne!(
            generated.as_bytes(),
            request_id(None).as_bytes(),
            "fresh each time"
        );
        assert_eq!(generated.to_header_value(), generated.as_bytes());
    }

    #[test]
    fn hop_counts_are_read_leniently() {
        assert_eq!(hops(Some(b" 3 ")), 3);
        assert_eq!(hops(Some(b"x")), 0);
        assert_eq!(hops(None), 0);
    }

    fn forwarded(raw: &[(&str, &str)], hops: u32, upgrade: bool) -> (BytesMut, HeaderMap) {
        let f = Forward {
            client: b"192.0.2.7",
            tls: true,
            host: "app.example.com",
            hops,
            request_id: b"rid",
            upgrade,
        };
        let pairs = raw.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()));
        let mut head = BytesMut::new();
        forward_headers(&pairs, &f, &mut head);
        let mut map = HeaderMap::new();
        forward_headers(&pairs, &f, &mut map);
        (head, map)
    }

    #[test]
    fn forwarded_requests_lose_hop_by_hop_headers_and_gain_the_edges() {
        let (head, h) = forwarded(
            &[
                ("Host", "evil.example"),
                ("Connection", "keep-alive, X-Secret"),
                ("X-Secret", "1"),
                ("Transfer-Encoding", "chunked"),
                ("X-Forwarded-For", "10.1.1.1"),
                ("X-Forwarded-Host", "spoofed"),
                ("Proxy-Authorization", "Basic x"),
                ("Upgrade", "websocket"),
                ("Accept", "*/*"),
            ],
            0,
            false,
        );
        assert_eq!(
            std::str::from_utf8(&head).unwrap(),
            "Accept: */*\r\nx-forwarded-for: 10.1.1.1, 192.0.2.7\r\nx-forwarded-proto: https\r\n\
             x-forwarded-host: app.example.com\r\nhost: app.example.com\r\nx-request-id: rid\r\n\
             x-ctrl-frontline-hops: 1\r\n"
        );
        assert_eq!(h.len(), 7, "{h:?}");
        assert_eq!(h["x-forwarded-for"], "10.1.1.1, 192.0.2.7");
        assert_eq!(h["host"], "app.example.com");
    }

    #[test]
    fn a_later_edge_keeps_what_the_first_set() {
        let (_, h) = forwarded(
            &[
                ("x-forwarded-proto", "http"),
                ("x-forwarded-host", "first.example"),
                ("x-ctrl-frontline-hops", "1"),
            ],
            1,
            false,
        );
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "first.example");
        assert_eq!(h["x-forwarded-for"], "192.0.2.7");
        assert_eq!(h[HOPS], "2");
        assert_eq!(h.get_all(HOPS).iter().count(), 1);
    }

    #[test]
    fn an_upgrade_keeps_its_upgrade_header() {
        let (_, h) = forwarded(
            &[("connection", "Upgrade"), ("upgrade", "websocket")],
            0,
            true,
        );
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
    }

    #[test]
    fn responses_lose_hop_by_hop_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("close, x-a"));
        h.insert("x-a", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-b", HeaderValue::from_static("2"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-b"));
    }
}
