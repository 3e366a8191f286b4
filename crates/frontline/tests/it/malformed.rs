//! Hostile and broken clients: each case must leave the edge serving, and
//! connections must not pile up (nor memory with them).

use std::time::Duration;

use anyhow::Result;
use ctrl_db::types::UpstreamProtocol;
use hyper::StatusCode;
use rand::{Rng, RngCore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{Backend, Edge, Ingress, Seed, Sync, get, host};

/// Reads until EOF or `within`; true if the server closed the connection.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
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
async fn hostile_inputs_never_break_the_edge() -> Result<()> {
    let db = ctrl_testkit::test_database().await?;
    let seed = Seed::new(&db.pool).await?;
    let ingress = Ingress::start().await?;
    let sync = Sync::start(&db.pool, &ingress.url).await?;
    let edge = Edge::start(
        &sync.url(),
        "[proxy]\nrequest_header_timeout_seconds = 1\nmax_header_bytes = 16384\n",
    )
    .await?;
    let v1 = Backend::start("v1", false).await?;
    let d = seed
        .deployment(&seed.production, UpstreamProtocol::Http1)
        .await?;
    seed.instances(&d, &[v1.addr]).await?;
    seed.route(&host("web"), &d, &seed.production).await?;
    edge.wait_host(&host("web"), StatusCode::OK).await?;

    // Oversized headers: 431, connection closed.
    let mut s = TcpStream::connect(edge.http).await?;
    let big = "a".repeat(64 * 1024);
    s.write_all(
        format!(
            "GET / HTTP/1.1\r\nHost: {}\r\nX-Big: {big}\r\n\r\n",
            host("web")
        )
        .as_bytes(),
    )
    .await?;
    let mut answer = vec![0u8; 64];
    let n = s.read(&mut answer).await?;
    assert!(
        String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 431"),
        "{:?}",
        String::from_utf8_lossy(&answer[..n])
    );

    // Slowloris: headers trickled one byte at a time are cut off.
    let mut s = TcpStream::connect(edge.http).await?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: web").await?;
    let trickle = async {
        for b in b".edge.test\r\nX-Slow: 1" {
            if s.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), trickle).await?;
    assert!(
        closed_within(&mut s, Duration::from_secs(5)).await,
        "slow headers cut off"
    );

    // A connection that never says anything.
    let mut s = TcpStream::connect(edge.http).await?;
    assert!(
        closed_within(&mut s, Duration::from_secs(5)).await,
        "silent connection closed"
    );

    // Garbage instead of a TLS ClientHello, and a truncated real one.
    for garbage in [
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        vec![0x16, 0x03, 0x01, 0xff, 0xff, 0x01],
        {
            let mut v = vec![0u8; 512];
            rand::rng().fill_bytes(&mut v);
            v
        },
    ] {
        let mut s = TcpStream::connect(edge.https).await?;
        let _ = s.write_all(&garbage).await;
        assert!(
            closed_within(&mut s, Duration::from_secs(12)).await,
            "bad ClientHello closed"
        );
    }

    // HTTP/2 protocol errors: a valid preface then nonsense frames.
    let mut s = TcpStream::connect(edge.http).await?;
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await?;
    s.write_all(&[0, 0, 4, 0xff, 0xff, 0, 0, 0, 1, 1, 2, 3, 4])
        .await?;
    s.write_all(&[0, 0, 1, 1, 0x05, 0, 0, 0, 0, 0]).await?; // HEADERS on stream 0
    assert!(
        closed_within(&mut s, Duration::from_secs(5)).await,
        "h2 protocol error closes"
    );

    // Random Host headers: never a 5xx.
    let mut rng = rand::rng();
    for _ in 0..300 {
        let len = rng.random_range(0..80);
        let raw: String = (0..len)
            .map(|_| char::from(rng.random_range(0x21u8..0x7f)))
            .collect();
        let Ok(r) = get(edge.http, &raw, "/").await else {
            continue; // not even a valid header value: refused client-side
        };
        assert!(
            r.status.is_client_error(),
            "host {raw:?} answered {}",
            r.status
        );
    }

    // Many broken connections do not accumulate memory.
    let before = rss_kib();
    for i in 0..1500 {
        let target = if i % 2 == 0 { edge.http } else { edge.https };
        let mut s = TcpStream::connect(target).await?;
        let _ = s.write_all(b"\x16\x03\x01\x00\x10garbage-garbage!").await;
        drop(s);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib();
    eprintln!("RSS before {before} KiB, after 1500 broken connections {after} KiB");
    assert!(
        after < before + 64 * 1024,
        "RSS grew from {before} to {after} KiB"
    );

    // Still serving.
    assert_eq!(get(edge.http, &host("web"), "/").await?.text(), "v1\n");
    edge.shutdown().await
}

/// A keep-alive connection that stays idle after its request is closed
/// after the request-header timeout (the idle timeout towards clients).
#[tokio::test]
async fn idle_keep_alive_connections_are_closed() -> Result<()> {
    let db = ctrl_testkit::test_database().await?;
    let seed = Seed::new(&db.pool).await?;
    let ingress = Ingress::start().await?;
    let sync = Sync::start(&db.pool, &ingress.url).await?;
    let edge = Edge::start(&sync.url(), "[proxy]\nrequest_header_timeout_seconds = 1\n").await?;
    let v1 = Backend::start("v1", false).await?;
    let d = seed
        .deployment(&seed.production, UpstreamProtocol::Http1)
        .await?;
    seed.instances(&d, &[v1.addr]).await?;
    seed.route(&host("web"), &d, &seed.production).await?;
    edge.wait_host(&host("web"), StatusCode::OK).await?;

    let mut s = TcpStream::connect(edge.http).await?;
    s.write_all(format!("GET / HTTP/1.1\r\nHost: {}\r\n\r\n", host("web")).as_bytes())
        .await?;
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await?;
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Nothing more is sent: the edge closes it.
    assert!(
        closed_within(&mut s, Duration::from_secs(5)).await,
        "idle connection closed"
    );
    edge.shutdown().await
}
