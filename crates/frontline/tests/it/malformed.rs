//! Hostile, broken and slow peers, one case per test: each must get a
//! clear answer or a closed connection, leave the edge serving, and leave
//! nothing behind (no piled-up connections, no memory).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Result;
use ctrl_db::types::UpstreamProtocol;
use hyper::StatusCode;
use rand::{Rng, RngCore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::{Backend, World, get, host, world};

/// An edge serving `host("web")` from one instance answering "v1"
/// (`extra` appended to its config); the instance lives as long as the
/// second value.
async fn served(extra: &str) -> Result<(World, Backend)> {
    let w = world(extra).await?;
    let v1 = Backend::start("v1", false).await?;
    w.host_on("web", &[v1.addr]).await?;
    w.edge.wait_host(&host("web"), StatusCode::OK).await?;
    Ok((w, v1))
}

/// The edge still answers, then stops cleanly.
async fn still_serving_then_stop(w: World) -> Result<()> {
    assert_eq!(get(w.edge.http, &host("web"), "/").await?.text(), "v1\n");
    w.edge.shutdown().await
}

/// Reads until EOF or `within`; true if the server closed the connection.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

/// The first bytes the server answers on `stream`, as text.
async fn answer_head(stream: &mut TcpStream) -> Result<String> {
    let mut answer = vec![0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer)).await??;
    Ok(String::from_utf8_lossy(&answer[..n]).into_owned())
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn oversized_headers_answer_431() -> Result<()> {
    let (s, _v1) = served("[proxy]\nmax_header_bytes = 16384\n").await?;
    let mut c = TcpStream::connect(s.edge.http).await?;
    let big = "a".repeat(64 * 1024);
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nX-Big: {big}\r\n\r\n",
        host("web")
    );
    // The edge may close before reading it all: the answer still comes.
    let _ = c.write_all(request.as_bytes()).await;
    let head = answer_head(&mut c).await?;
    assert!(head.starts_with("HTTP/1.1 431"), "{head:?}");
    assert!(closed_within(&mut c, Duration::from_secs(5)).await);
    still_serving_then_stop(s).await
}

#[tokio::test]
async fn headers_trickled_byte_by_byte_are_cut_off() -> Result<()> {
    let (s, _v1) = served("[proxy]\nrequest_header_timeout_seconds = 1\n").await?;
    let mut c = TcpStream::connect(s.edge.http).await?;
    c.write_all(b"GET / HTTP/1.1\r\nHost: web").await?;
    let started = Instant::now();
    let mut cut = false;
    // A byte every 300 ms would take 6 s; the edge allows 1 s for headers.
    for b in b".edge.test\r\nX-Slow: 1\r\n\r\n" {
        if c.write_all(&[*b]).await.is_err() {
            cut = true;
            break;
        }
        if closed_within(&mut c, Duration::from_millis(300)).await {
            cut = true;
            break;
        }
    }
    assert!(cut, "slow headers were not cut off");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "cut off after {:?}",
        started.elapsed()
    );
    still_serving_then_stop(s).await
}

#[tokio::test]
async fn a_connection_that_never_speaks_is_closed() -> Result<()> {
    let (s, _v1) = served("[proxy]\nrequest_header_timeout_seconds = 1\n").await?;
    let mut c = TcpStream::connect(s.edge.http).await?;
    assert!(closed_within(&mut c, Duration::from_secs(5)).await);
    still_serving_then_stop(s).await
}

#[tokio::test]
async fn invalid_tls_client_hellos_are_refused() -> Result<()> {
    let (s, _v1) = served("").await?;
    let mut random = vec![0u8; 512];
    rand::rng().fill_bytes(&mut random);
    // Plain HTTP on the TLS port; a record header promising more than it
    // sends; a handshake record with a nonsense body; random bytes.
    let cases: [(&str, Vec<u8>); 4] = [
        ("plain HTTP", b"GET / HTTP/1.1\r\n\r\n".to_vec()),
        ("truncated record", vec![0x16, 0x03, 0x01, 0xff, 0xff, 0x01]),
        (
            "nonsense handshake",
            b"\x16\x03\x01\x00\x10garbage-garbage!".to_vec(),
        ),
        ("random bytes", random),
    ];
    for (what, bytes) in cases {
        let mut c = TcpStream::connect(s.edge.https).await?;
        let _ = c.write_all(&bytes).await;
        // The truncated record waits for its rest: the handshake timeout (10 s) ends it.
        assert!(
            closed_within(&mut c, Duration::from_secs(12)).await,
            "{what}: connection left open"
        );
    }
    let (status, metrics) = s.edge.admin_get("/metrics").await?;
    assert_eq!(status, StatusCode::OK);
    assert!(
        metrics
            .lines()
            .any(|l| l.contains("tls_handshakes") && !l.contains("\"ok\"") && !l.starts_with('#')),
        "failed handshakes are counted:\n{metrics}"
    );
    still_serving_then_stop(s).await
}

#[tokio::test]
async fn http2_protocol_errors_close_the_connection() -> Result<()> {
    let (s, _v1) = served("").await?;
    let mut c = TcpStream::connect(s.edge.http).await?;
    c.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await?;
    // A frame of an unknown type, then HEADERS on stream 0 (forbidden).
    c.write_all(&[0, 0, 4, 0xff, 0xff, 0, 0, 0, 1, 1, 2, 3, 4])
        .await?;
    c.write_all(&[0, 0, 1, 1, 0x05, 0, 0, 0, 0, 0]).await?;
    assert!(closed_within(&mut c, Duration::from_secs(5)).await);
    still_serving_then_stop(s).await
}

#[tokio::test]
async fn random_host_headers_never_answer_5xx() -> Result<()> {
    let (s, _v1) = served("").await?;
    let mut rng = rand::rng();
    let mut answered = 0;
    for _ in 0..300 {
        let len = rng.random_range(0..80);
        let raw: String = (0..len)
            .map(|_| char::from(rng.random_range(0x21u8..0x7f)))
            .collect();
        let Ok(r) = get(s.edge.http, &raw, "/").await else {
            continue; // not even a valid header value: refused client-side
        };
        answered += 1;
        assert!(
            r.status.is_client_error(),
            "host {raw:?} answered {}",
            r.status
        );
    }
    assert!(answered > 100, "only {answered} of 300 were sent");
    still_serving_then_stop(s).await
}

/// Thousands of broken connections (plain and TLS) leave no memory behind:
/// after a warm-up, the next 4000 grow the process by under 1 KiB each
/// (a leak of one connection's buffers each would be tens of MiB).
#[tokio::test]
async fn broken_connections_leave_no_memory_behind() -> Result<()> {
    let (s, _v1) = served("[proxy]\nrequest_header_timeout_seconds = 1\n").await?;
    let storm = |n: usize| {
        let (http, https) = (s.edge.http, s.edge.https);
        async move {
            for i in 0..n {
                let target = if i % 2 == 0 { http } else { https };
                let mut c = TcpStream::connect(target).await?;
                let _ = c.write_all(b"\x16\x03\x01\x00\x10garbage-garbage!").await;
                // Half wait for the edge to close, half hang up first.
                if i % 4 < 2 {
                    let _ = closed_within(&mut c, Duration::from_secs(2)).await;
                }
            }
            anyhow::Ok(())
        }
    };
    storm(500).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = rss_kib();
    storm(4000).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib();
    eprintln!("RSS after warm-up {before} KiB, after 4000 more broken connections {after} KiB");
    assert!(
        after < before + 4000,
        "RSS grew from {before} to {after} KiB over 4000 broken connections"
    );
    still_serving_then_stop(s).await
}

/// A keep-alive connection that stays idle after its request is closed
/// after the request-header timeout (the idle timeout towards clients).
#[tokio::test]
async fn idle_keep_alive_connections_are_closed() -> Result<()> {
    let (s, _v1) = served("[proxy]\nrequest_header_timeout_seconds = 1\n").await?;
    let mut c = TcpStream::connect(s.edge.http).await?;
    c.write_all(format!("GET / HTTP/1.1\r\nHost: {}\r\n\r\n", host("web")).as_bytes())
        .await?;
    let head = answer_head(&mut c).await?;
    assert!(head.starts_with("HTTP/1.1 200"), "{head:?}");
    assert!(
        closed_within(&mut c, Duration::from_secs(5)).await,
        "idle connection closed"
    );
    still_serving_then_stop(s).await
}

/// An instance that accepts the connection but never answers: 504 after
/// the response-header timeout, naming it.
#[tokio::test]
async fn an_instance_that_never_answers_gets_504_after_the_header_timeout() -> Result<()> {
    let (s, _v1) = served("[proxy]\nresponse_header_timeout_seconds = 1\n").await?;
    let mute = TcpListener::bind("127.0.0.1:0").await?;
    let mute_addr = mute.local_addr()?;
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((c, _)) = mute.accept().await {
            open.push(c); // read nothing, answer nothing
        }
    });
    let h = host("mute");
    s.host_on("mute", &[mute_addr]).await?;
    s.edge.wait_host(&h, StatusCode::GATEWAY_TIMEOUT).await?;
    let started = Instant::now();
    let r = get(s.edge.http, &h, "/").await?;
    let took = started.elapsed();
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(
        r.text().contains("did not answer within 1 s"),
        "{}",
        r.text()
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "answered after {took:?}"
    );
    held.abort();
    still_serving_then_stop(s).await
}

/// An instance whose accept queue is full (SYNs dropped): 504 after the
/// connect timeout, not a hang, and the instance is ejected.
#[tokio::test]
async fn an_instance_that_never_accepts_gets_504_after_the_connect_timeout() -> Result<()> {
    let (s, _v1) = served("[proxy]\nconnect_timeout_ms = 300\n").await?;
    // A listener that never accepts, its backlog filled by a few clients:
    // the kernel then drops further SYNs, as for an overloaded instance.
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let full = socket.listen(0)?;
    let full_addr = full.local_addr()?;
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(c)) =
            tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(full_addr)).await
        {
            fillers.push(c);
        }
    }
    let probe =
        tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(full_addr)).await;
    assert!(
        probe.is_err(),
        "the backlog did not fill ({} fillers)",
        fillers.len()
    );
    let h = host("full");
    s.host_on("full", &[full_addr]).await?;
    s.edge.wait_host(&h, StatusCode::GATEWAY_TIMEOUT).await?;
    let started = Instant::now();
    let r = get(s.edge.http, &h, "/").await?;
    let took = started.elapsed();
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(
        r.text()
            .contains("did not accept the connection within 300 ms"),
        "{}",
        r.text()
    );
    assert!(took < Duration::from_secs(3), "answered after {took:?}");
    let (_, metrics) = s.edge.admin_get("/metrics").await?;
    assert!(
        metrics.contains("connect_timeout"),
        "the upstream error is counted by kind:\n{metrics}"
    );
    drop(full);
    still_serving_then_stop(s).await
}

/// A preview woken by a request that does not come up in time: 503 with a
/// Retry-After after the wake timeout, having asked for the wake once.
#[tokio::test]
async fn a_wake_that_does_not_finish_in_time_answers_503_with_retry_after() -> Result<()> {
    let (s, _v1) = served("[proxy]\nwake_timeout_seconds = 1\n").await?;
    let d = s
        .seed
        .deployment(&s.seed.preview, UpstreamProtocol::Http1)
        .await?;
    // Idle before it is routed, so the host's first answer is the wake's.
    s.seed.stop(&d).await?;
    let h = host("pr-slow");
    s.seed.route(&h, &d, &s.seed.preview).await?;
    // Nothing runs it again: the wake is asked for and never completes.
    s.edge
        .wait_host(&h, StatusCode::SERVICE_UNAVAILABLE)
        .await?;
    let started = Instant::now();
    let r = get(s.edge.http, &h, "/").await?;
    let took = started.elapsed();
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        r.headers.get("retry-after").and_then(|v| v.to_str().ok()),
        Some("5")
    );
    assert!(r.text().contains("starting"), "{}", r.text());
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "answered after {took:?}"
    );
    assert!(
        s.ingress.woken.lock().expect("lock").contains(&d),
        "the wake was asked for"
    );
    still_serving_then_stop(s).await
}
