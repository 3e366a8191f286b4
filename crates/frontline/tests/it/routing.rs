use std::time::{Duration, Instant};

use anyhow::Result;
use bytes::Bytes;
use ctrl_db::types::UpstreamProtocol;
use futures::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::{Request, StatusCode};

use crate::harness::{Backend, Ca, Edge, Ingress, Seed, Sync, get, host, send, wait_until, world};

/// Hosts route to their deployment's instances; unknown hosts, bad hosts
/// and loops get the edge's own answers; a rollback (a route move) reaches
/// the edge within the propagation target.
#[tokio::test]
async fn routes_follow_the_control_plane() -> Result<()> {
    let w = world("").await?;
    let (v1, v2) = (
        Backend::start("v1", false).await?,
        Backend::start("v2", false).await?,
    );
    let d1 = w
        .seed
        .deployment(&w.seed.production, UpstreamProtocol::Http1)
        .await?;
    let d2 = w
        .seed
        .deployment(&w.seed.production, UpstreamProtocol::Http1)
        .await?;
    w.seed.instances(&d1, &[v1.addr]).await?;
    w.seed.instances(&d2, &[v2.addr]).await?;
    let live = w.seed.route(&host("web"), &d1, &w.seed.production).await?;
    w.seed
        .route(&host("web-v2"), &d2, &w.seed.production)
        .await?;
    w.edge.wait_host(&host("web"), StatusCode::OK).await?;
    // The two routes may reach the edge in different batches.
    w.edge.wait_host(&host("web-v2"), StatusCode::OK).await?;

    let r = get(w.edge.http, &host("web"), "/").await?;
    assert_eq!((r.status, r.text().as_str()), (StatusCode::OK, "v1\n"));
    assert_eq!(r.deployment(), Some(d1.as_str()));
    assert!(r.headers.contains_key("x-request-id"));
    let r = get(
        w.edge.http,
        &format!("WEB-V2.{}.", crate::harness::APEX),
        "/",
    )
    .await?;
    assert_eq!(
        r.text(),
        "v2\n",
        "host matching ignores case and a trailing dot"
    );

    // What the app sees.
    let r = send(
        w.edge.http,
        Request::get("/headers")
            .header("host", host("web"))
            .header("x-request-id", "client-id-1")
            .header("x-forwarded-for", "203.0.113.9")
            .body(Full::new(Bytes::new()))?,
    )
    .await?;
    let seen = r.text();
    for line in [
        "x-forwarded-for: 203.0.113.9, 127.0.0.1",
        "x-forwarded-proto: http",
        &format!("x-forwarded-host: {}", host("web")),
        "x-request-id: client-id-1",
        "x-ctrl-frontline-hops: 1",
    ] {
        assert!(seen.contains(line), "{line:?} not in\n{seen}");
    }

    let r = get(w.edge.http, &host("nothing"), "/").await?;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.text().contains("No deployment serves"), "{}", r.text());
    let r = get(w.edge.http, "bad host!", "/").await?;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = send(
        w.edge.http,
        Request::get("/")
            .header("host", host("web"))
            .header("x-ctrl-frontline-hops", "10")
            .body(Full::new(Bytes::new()))?,
    )
    .await?;
    assert_eq!(r.status, StatusCode::LOOP_DETECTED);
    let r = send(
        w.edge.http,
        Request::post("/echo")
            .header("host", host("web"))
            .header("content-length", (2u64 << 30).to_string())
            .body(Full::new(Bytes::new()))?,
    )
    .await?;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);

    // Rollback at the edge: from the route's commit to the first answer from
    // the target, well inside the 100 ms target (measured loosely here; the
    // benchmark reports p50/p99).
    let started = Instant::now();
    w.seed.move_route(&live, &d2).await?;
    wait_until(
        "the live host to answer v2",
        Duration::from_secs(5),
        || async {
            get(w.edge.http, &host("web"), "/")
                .await
                .is_ok_and(|r| r.text() == "v2\n")
        },
    )
    .await?;
    eprintln!("route move visible after {:?}", started.elapsed());

    // A deployment stopped on purpose (production): 503, never woken.
    w.seed.stop(&d1).await?;
    w.seed
        .route(&host("web-d1"), &d1, &w.seed.production)
        .await?;
    w.edge
        .wait_host(&host("web-d1"), StatusCode::SERVICE_UNAVAILABLE)
        .await?;
    assert!(w.ingress.woken.lock().unwrap().is_empty());

    let (status, metrics) = w.edge.admin_get("/metrics").await?;
    assert_eq!(status, StatusCode::OK);
    assert!(
        metrics.contains("ctrl_frontline_requests_total"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ctrl_frontline_table_connected 1"),
        "{metrics}"
    );
    w.edge.shutdown().await
}

/// The control plane goes away: the edge keeps serving its table, says so,
/// and catches up on what changed meanwhile once it is back.
#[tokio::test]
async fn the_last_table_keeps_serving_while_the_control_plane_is_away() -> Result<()> {
    let mut w = world("").await?;
    let (v1, v2) = (
        Backend::start("v1", false).await?,
        Backend::start("v2", false).await?,
    );
    let d1 = w
        .seed
        .deployment(&w.seed.production, UpstreamProtocol::Http1)
        .await?;
    let d2 = w
        .seed
        .deployment(&w.seed.production, UpstreamProtocol::Http1)
        .await?;
    w.seed.instances(&d1, &[v1.addr]).await?;
    w.seed.instances(&d2, &[v2.addr]).await?;
    let live = w.seed.route(&host("web"), &d1, &w.seed.production).await?;
    w.edge.wait_host(&host("web"), StatusCode::OK).await?;

    w.sync.stop().await;
    wait_until("the edge to notice", Duration::from_secs(30), || async {
        w.edge
            .admin_get("/health/ready")
            .await
            .is_ok_and(|(s, t)| s == StatusCode::OK && t.contains("unreachable"))
    })
    .await?;
    for _ in 0..20 {
        assert_eq!(get(w.edge.http, &host("web"), "/").await?.text(), "v1\n");
    }
    let (_, metrics) = w.edge.admin_get("/metrics").await?;
    assert!(
        metrics.contains("ctrl_frontline_table_connected 0"),
        "{metrics}"
    );

    // Changed while away; seen after the control plane is back.
    w.seed.move_route(&live, &d2).await?;
    w.sync.restart().await?;
    wait_until("the edge to catch up", Duration::from_secs(30), || async {
        get(w.edge.http, &host("web"), "/")
            .await
            .is_ok_and(|r| r.text() == "v2\n")
    })
    .await?;
    w.edge.shutdown().await
}

/// TLS by SNI (exact, then the wildcard one level up), ALPN h2 and
/// http/1.1, and plain HTTP redirected for hosts with a certificate.
#[tokio::test]
async fn tls_by_sni_with_h2_and_redirects() -> Result<()> {
    let w = world("").await?;
    let ca = Ca::new()?;
    let v1 = Backend::start("v1", false).await?;
    let d1 = w
        .seed
        .deployment(&w.seed.production, UpstreamProtocol::Http1)
        .await?;
    w.seed.instances(&d1, &[v1.addr]).await?;
    w.seed.route(&host("web"), &d1, &w.seed.production).await?;
    w.seed
        .route(&host("exact"), &d1, &w.seed.production)
        .await?;
    w.seed
        .route("deep.web.edge.test", &d1, &w.seed.production)
        .await?;
    ca.store(&w.seed, &format!("*.{}", crate::harness::APEX))
        .await?;
    ca.store(&w.seed, &host("exact")).await?;
    wait_until(
        "certificates at the edge",
        Duration::from_secs(20),
        || async {
            ca.get(w.edge.https, &host("exact"), "/", false)
                .await
                .is_ok()
        },
    )
    .await?;

    for h2 in [false, true] {
        let r = ca.get(w.edge.https, &host("web"), "/", h2).await?;
        assert_eq!(r.text(), "v1\n");
        let expected = if h2 {
            hyper::Version::HTTP_2
        } else {
            hyper::Version::HTTP_11
        };
        assert_eq!(r.version, expected);
        let r = ca.get(w.edge.https, &host("web"), "/headers", h2).await?;
        assert!(
            r.text().contains("x-forwarded-proto: https"),
            "{}",
            r.text()
        );
    }
    // The wildcard covers one level only: no certificate for deep.web.
    assert!(
        ca.get(w.edge.https, "deep.web.edge.test", "/", false)
            .await
            .is_err()
    );

    let r = get(w.edge.http, &host("web"), "/a?b=c").await?;
    assert_eq!(r.status, StatusCode::PERMANENT_REDIRECT);
    let location = r.headers["location"].to_str()?;
    assert_eq!(
        location,
        format!("https://{}:{}/a?b=c", host("web"), w.edge.https.port())
    );
    // No certificate: plain HTTP is served.
    let r = get(w.edge.http, "deep.web.edge.test", "/").await?;
    assert_eq!(r.text(), "v1\n");
    w.edge.shutdown().await
}

/// WebSocket echo and 50 MiB streamed each way, through the edge.
#[tokio::test]
async fn websockets_and_large_streams_pass_through() -> Result<()> {
    let w = world("").await?;
    let v1 = Backend::start("v1", false).await?;
    let d1 = w
        .seed
        .deployment(&w.seed.production, UpstreamProtocol::Http1)
        .await?;
    w.seed.instances(&d1, &[v1.addr]).await?;
    w.seed.route(&host("web"), &d1, &w.seed.production).await?;
    w.edge.wait_host(&host("web"), StatusCode::OK).await?;

    let url = format!("ws://{}/ws", w.edge.http);
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)?;
    request.headers_mut().insert("host", host("web").parse()?);
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await?;
    for i in 0..5 {
        let text = format!("hello {i}");
        ws.send(tokio_tungstenite::tungstenite::Message::text(text.clone()))
            .await?;
        let back = ws.next().await.expect("an answer")?;
        assert_eq!(back.into_text()?.as_str(), text);
    }
    ws.close(None).await?;

    const SIZE: usize = 50 << 20;
    let r = get(w.edge.http, &host("web"), &format!("/bytes?n={SIZE}")).await?;
    assert_eq!((r.status, r.body.len()), (StatusCode::OK, SIZE));
    let upload = Bytes::from((0..SIZE).map(|i| (i % 251) as u8).collect::<Vec<_>>());
    let r = send(
        w.edge.http,
        Request::post("/echo")
            .header("host", host("web"))
            .body(Full::new(upload.clone()))?,
    )
    .await?;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body == upload, "the echo came back different");
    w.edge.shutdown().await
}

/// h2c upstreams; balancing across instances; an instance that refuses
/// connections is ejected and safe requests go elsewhere, without errors.
#[tokio::test]
async fn h2c_balancing_and_ejection() -> Result<()> {
    let w = world("").await?;
    let h2 = Backend::start("h2", true).await?;
    let dh = w
        .seed
        .deployment(&w.seed.production, UpstreamProtocol::H2c)
        .await?;
    w.seed.instances(&dh, &[h2.addr]).await?;
    w.seed.route(&host("grpc"), &dh, &w.seed.production).await?;

    let (a, b) = (
        Backend::start("a", false).await?,
        Backend::start("b", false).await?,
    );
    // A port nothing listens on.
    let dead = std::net::SocketAddr::from(([127, 0, 0, 1], ctrl_testkit::free_port()?));
    let d = w
        .seed
        .deployment(&w.seed.production, UpstreamProtocol::Http1)
        .await?;
    w.seed.instances(&d, &[a.addr, b.addr, dead]).await?;
    w.seed.route(&host("web"), &d, &w.seed.production).await?;
    w.edge.wait_host(&host("web"), StatusCode::OK).await?;
    w.edge.wait_host(&host("grpc"), StatusCode::OK).await?;

    assert_eq!(get(w.edge.http, &host("grpc"), "/").await?.text(), "h2\n");
    for _ in 0..200 {
        let r = get(w.edge.http, &host("web"), "/").await?;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    let (ha, hb) = (
        a.hits.load(std::sync::atomic::Ordering::Relaxed),
        b.hits.load(std::sync::atomic::Ordering::Relaxed),
    );
    assert!(
        ha > 40 && hb > 40,
        "both instances get traffic: {ha} / {hb}"
    );
    let (_, metrics) = w.edge.admin_get("/metrics").await?;
    let refused = metrics
        .lines()
        .find(|l| l.starts_with("ctrl_frontline_upstream_errors_total{kind=\"connect\"}"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    // Ejected after its first refusal: at most a few attempts ever reach it.
    assert!(
        (1..=5).contains(&refused),
        "connection refusals: {refused}\n{metrics}"
    );
    w.edge.shutdown().await
}

/// Each worker keeps its connections to an instance and reuses them; one
/// the instance closed while idle is replaced without the client seeing
/// it; and a request with a body whose connect was refused goes to another
/// instance (it was never sent).
#[tokio::test]
async fn instance_connections_are_reused_and_failed_connects_move_on() -> Result<()> {
    let w = world("[proxy]\nejection_seconds = 1\n").await?;
    let app = Backend::start_with("kept", false, Some(Duration::from_secs(1))).await?;
    w.host_on("kept", &[app.addr]).await?;
    w.edge.wait_host(&host("kept"), StatusCode::OK).await?;

    // 100 requests one after another: a connection or two (one per worker
    // thread at most), not one per request.
    let before = app.accepted.load(std::sync::atomic::Ordering::Relaxed);
    for _ in 0..100 {
        assert_eq!(get(w.edge.http, &host("kept"), "/").await?.text(), "kept\n");
    }
    let opened = app.accepted.load(std::sync::atomic::Ordering::Relaxed) - before;
    let workers = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    assert!(
        (1..=workers).contains(&opened),
        "{opened} connections for 100 requests ({workers} workers)"
    );

    // The instance closes idle connections after 1 s: the next request
    // still answers, on a new connection.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for _ in 0..5 {
        let r = get(w.edge.http, &host("kept"), "/").await?;
        assert_eq!((r.status, r.text().as_str()), (StatusCode::OK, "kept\n"));
    }
    assert!(app.accepted.load(std::sync::atomic::Ordering::Relaxed) > before + opened);

    // POSTs with a body, to a deployment with two dead instances beside a
    // live one, each after the ejections ran out (so most first try a
    // dead one): never a 502, the body always arrives whole.
    let live = Backend::start("live", false).await?;
    let [dead1, dead2] =
        ctrl_testkit::free_ports()?.map(|port| std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    w.host_on("post", &[dead1, dead2, live.addr]).await?;
    w.edge.wait_host(&host("post"), StatusCode::OK).await?;
    for i in 0..5 {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let body = format!("payload {i}");
        let r = send(
            w.edge.http,
            Request::post("/echo")
                .header("host", host("post"))
                .body(Full::new(Bytes::from(body.clone())))?,
        )
        .await?;
        assert_eq!((r.status, r.text()), (StatusCode::OK, body));
    }
    w.edge.shutdown().await
}

/// A request for an idle preview wakes it through EdgeService and is
/// answered once an instance runs; traffic is reported in batches.
#[tokio::test]
async fn idle_previews_wake_on_request() -> Result<()> {
    let w = world("[proxy]\nwake_timeout_seconds = 20\ntraffic_report_seconds = 1\n").await?;
    let v1 = Backend::start("preview", false).await?;
    let d = w
        .seed
        .deployment(&w.seed.preview, UpstreamProtocol::Http1)
        .await?;
    w.seed.route(&host("pr-1"), &d, &w.seed.preview).await?;
    w.seed.stop(&d).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The "worker": once asked, run the deployment again.
    let (seed_db, region, workspace, id) = (
        w.seed.db.clone(),
        w.seed.region.clone(),
        w.seed.workspace.clone(),
        d.clone(),
    );
    let woken = w.ingress.woken.clone();
    let addr = v1.addr;
    let worker = tokio::spawn(async move {
        loop {
            if woken.lock().unwrap().contains(&id) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        ctrl_db::deployment::set_desired_state(
            &seed_db,
            &id,
            ctrl_core::status::DesiredState::Running,
            9,
        )
        .await?;
        let mut tx = seed_db.begin().await?;
        ctrl_db::instance::replace_for_deployment(
            &mut tx,
            &workspace,
            &id,
            &region,
            &[ctrl_db::instance::ReportedInstance {
                new_id: "ins_woken".into(),
                name: "woken-0".into(),
                address: addr.to_string(),
                cpu_millicores: 100,
                memory_mib: 64,
                status: ctrl_db::types::InstanceStatus::Running,
            }],
            9,
        )
        .await?;
        tx.commit().await?;
        anyhow::Ok(())
    });
    let started = Instant::now();
    let pr = host("pr-1");
    let (r1, r2) = tokio::join!(get(w.edge.http, &pr, "/"), get(w.edge.http, &pr, "/"));
    let (r1, r2) = (r1?, r2?);
    assert_eq!(
        (r1.status, r1.text().as_str()),
        (StatusCode::OK, "preview\n")
    );
    assert_eq!(r2.text(), "preview\n");
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "answered only after the wake"
    );
    worker.await??;
    assert_eq!(
        *w.ingress.woken.lock().unwrap(),
        std::slice::from_ref(&d),
        "one wake for both requests"
    );

    wait_until("traffic counts", Duration::from_secs(10), || async {
        ctrl_db::edge::traffic_since(&w.seed.db, &d, 0)
            .await
            .is_ok_and(|t| t.iter().map(|(_, n)| n).sum::<u64>() >= 2)
    })
    .await?;
    w.edge.shutdown().await
}

/// A woken deployment may be reported running before its app listens: the
/// request that woke it keeps trying for a moment instead of answering 502.
#[tokio::test]
async fn a_woken_app_that_listens_late_still_answers() -> Result<()> {
    let w = world("[proxy]\nwake_timeout_seconds = 20\n").await?;
    let d = w
        .seed
        .deployment(&w.seed.preview, UpstreamProtocol::Http1)
        .await?;
    w.seed.route(&host("pr-late"), &d, &w.seed.preview).await?;
    w.seed.stop(&d).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The instance is reported at once; its app listens 700 ms later.
    let port = ctrl_testkit::free_port()?;
    let (seed_db, region, workspace, id) = (
        w.seed.db.clone(),
        w.seed.region.clone(),
        w.seed.workspace.clone(),
        d.clone(),
    );
    let woken = w.ingress.woken.clone();
    let worker = tokio::spawn(async move {
        while !woken.lock().unwrap().contains(&id) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        ctrl_db::deployment::set_desired_state(
            &seed_db,
            &id,
            ctrl_core::status::DesiredState::Running,
            9,
        )
        .await?;
        let mut tx = seed_db.begin().await?;
        ctrl_db::instance::replace_for_deployment(
            &mut tx,
            &workspace,
            &id,
            &region,
            &[ctrl_db::instance::ReportedInstance {
                new_id: "ins_late".into(),
                name: "late-0".into(),
                address: format!("127.0.0.1:{port}"),
                cpu_millicores: 100,
                memory_mib: 64,
                status: ctrl_db::types::InstanceStatus::Running,
            }],
            9,
        )
        .await?;
        tx.commit().await?;
        tokio::time::sleep(Duration::from_millis(700)).await;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let (mut stream, _) = listener.accept().await?;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = [0u8; 4096];
        let _ = stream.read(&mut buf).await?;
        stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nlate\n")
            .await?;
        anyhow::Ok(())
    });
    let r = get(w.edge.http, &host("pr-late"), "/").await?;
    assert_eq!((r.status, r.text().as_str()), (StatusCode::OK, "late\n"));
    worker.await??;
    w.edge.shutdown().await
}

/// A deployment that runs only in another region is served through that
/// region's edge (a configured peer), one hop further; without a peer that
/// has it, 503.
#[tokio::test]
async fn requests_for_other_regions_go_to_their_edge() -> Result<()> {
    let db = ctrl_testkit::test_database().await?;
    let seed = Seed::new(&db.pool).await?;
    let ingress = Ingress::start().await?;
    let sync = Sync::start(&db.pool, &ingress.url).await?;
    let other = seed.region("other").await?;
    let far = seed.region("far").await?;
    let edge_b = Edge::start_in("other", &sync.url(), "").await?;
    let edge_a = Edge::start(
        &sync.url(),
        &format!("[peers]\n\"dev/other\" = \"http://{}\"\n", edge_b.http),
    )
    .await?;
    let there = Backend::start("there", false).await?;
    let d = seed
        .deployment(&seed.production, UpstreamProtocol::Http1)
        .await?;
    seed.instances_in(&other, &d, &[there.addr]).await?;
    seed.route(&host("web"), &d, &seed.production).await?;
    let nowhere = Backend::start("far", false).await?;
    let d_far = seed
        .deployment(&seed.production, UpstreamProtocol::Http1)
        .await?;
    seed.instances_in(&far, &d_far, &[nowhere.addr]).await?;
    seed.route(&host("far"), &d_far, &seed.production).await?;

    edge_a.wait_host(&host("web"), StatusCode::OK).await?;
    let r = get(edge_a.http, &host("web"), "/headers").await?;
    assert_eq!(r.deployment(), Some(d.as_str()));
    assert!(
        r.text().contains("x-ctrl-frontline-hops: 2"),
        "two edges on the way:\n{}",
        r.text()
    );
    // No edge of region "far" is configured: nothing to forward to.
    edge_a
        .wait_host(&host("far"), StatusCode::SERVICE_UNAVAILABLE)
        .await?;
    assert!(there.hits.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    edge_a.shutdown().await?;
    edge_b.shutdown().await
}

/// Client connections are spread evenly over the edge's two workers
/// whatever the kernel's `SO_REUSEPORT` hash says: after each new
/// keep-alive connection, the workers' counts differ by at most one; and
/// closed connections are counted out.
#[tokio::test]
async fn client_connections_are_spread_evenly_over_the_workers() -> Result<()> {
    let w = world("").await?;
    let app = Backend::start("even", false).await?;
    w.host_on("even", &[app.addr]).await?;
    w.edge.wait_host(&host("even"), StatusCode::OK).await?;
    let counts = || async {
        let (_, text) = w.edge.admin_get("/metrics").await?;
        let of = |worker: &str| {
            text.lines()
                .find(|l| {
                    l.starts_with(&format!(
                        "ctrl_frontline_connections{{worker=\"{worker}\"}}"
                    ))
                })
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(0)
        };
        anyhow::Ok((of("0"), of("1")))
    };
    let mut kept = Vec::new();
    for n in 1..=12 {
        let stream = tokio::net::TcpStream::connect(w.edge.http).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let req = Request::get("/")
            .header("host", host("even"))
            .body(Full::new(Bytes::new()))?;
        let resp = sender.send_request(req).await?;
        assert_eq!(resp.status(), StatusCode::OK);
        kept.push(sender);
        let (a, b) = counts().await?;
        assert_eq!(a + b, n, "{a} + {b} connections counted, {n} open");
        assert!((a - b).abs() <= 1, "{a} and {b} connections after {n}");
    }
    drop(kept);
    wait_until(
        "closed connections to be counted out",
        Duration::from_secs(5),
        || async { counts().await.is_ok_and(|c| c == (0, 0)) },
    )
    .await?;
    w.edge.shutdown().await
}
