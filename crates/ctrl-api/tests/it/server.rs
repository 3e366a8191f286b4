//! The real server on a loopback port, driven by the Connect client (JSON
//! and binary) and the tonic gRPC client.

use anyhow::Result;
use ctrl_proto::ctrl::v1 as pb;
use pb::ctrl_service_connect_client::CtrlServiceClient as ConnectCtrl;
use pb::workspace_service_client::WorkspaceServiceClient as GrpcWorkspaces;
use pb::workspace_service_connect_client::WorkspaceServiceClient as ConnectWorkspaces;
use tokio::net::TcpListener;

use crate::{TOKEN, state};

/// Serves the API on 127.0.0.1:<free port> until the test ends.
async fn serve() -> Result<(String, tokio::task::JoinHandle<()>)> {
    let (base, _ops, task) = serve_both().await?;
    Ok((base, task))
}

/// The API's port and its operations port, over one state.
async fn serve_both() -> Result<(String, String, tokio::task::JoinHandle<()>)> {
    let state = state().await?;
    let ops = crate::serve_ops(state.clone()).await?;
    let app = ctrl_api::rpc::router(state);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let task = tokio::spawn(async move {
        axum::serve(ctrl_runtime::net::nodelay(listener), app)
            .await
            .expect("serve");
    });
    Ok((base, ops, task))
}

fn grpc_request<T>(msg: T, token: Option<&str>) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    if let Some(token) = token {
        req.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
    }
    req
}

#[tokio::test]
async fn liveness_needs_no_token_everything_else_does() -> Result<()> {
    let (base, _server) = serve().await?;
    let anonymous = ConnectCtrl::builder(base.clone()).build()?;
    let live = anonymous
        .liveness(&pb::LivenessRequest {})
        .await?
        .into_inner();
    assert_eq!(live.status, "ok");
    assert!(!live.instance_id.is_empty());

    let no_token = ConnectWorkspaces::builder(base.clone()).build()?;
    let err = no_token
        .list_workspaces(&pb::ListWorkspacesRequest { page: None })
        .await
        .unwrap_err();
    assert_eq!(err.code(), connectrpc_axum_client::Code::Unauthenticated);
    assert!(
        err.message()
            .unwrap_or_default()
            .contains("missing bearer token")
    );
    let wrong = ConnectWorkspaces::builder(base.clone())
        .default_header("authorization", "Bearer nope")
        .build()?;
    let err = wrong
        .list_workspaces(&pb::ListWorkspacesRequest { page: None })
        .await
        .unwrap_err();
    assert_eq!(err.code(), connectrpc_axum_client::Code::Unauthenticated);

    let mut grpc = GrpcWorkspaces::connect(base.clone()).await?;
    let status = grpc
        .list_workspaces(grpc_request(pb::ListWorkspacesRequest { page: None }, None))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    let status = grpc
        .list_workspaces(grpc_request(
            pb::ListWorkspacesRequest { page: None },
            Some("nope"),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    // Both configured tokens work (rotation).
    grpc.list_workspaces(grpc_request(
        pb::ListWorkspacesRequest { page: None },
        Some("second-token-abcdefghijklmnop"),
    ))
    .await?;
    Ok(())
}

#[tokio::test]
async fn connect_json_connect_binary_and_grpc_see_the_same_data() -> Result<()> {
    let (base, _server) = serve().await?;
    let json = ConnectWorkspaces::builder(base.clone())
        .default_header("authorization", format!("Bearer {TOKEN}"))
        .build()?;
    let binary = ConnectWorkspaces::builder(base.clone())
        .use_proto()
        .default_header("authorization", format!("Bearer {TOKEN}"))
        .build()?;
    let mut grpc = GrpcWorkspaces::connect(base.clone()).await?;

    let created = json
        .create_workspace(&pb::CreateWorkspaceRequest {
            name: "Acme ✓".into(),
            slug: "acme".into(),
            actor: None,
        })
        .await?
        .into_inner()
        .workspace
        .expect("workspace");
    let get = pb::GetWorkspaceRequest {
        workspace_id: created.id.clone(),
    };
    let via_binary = binary.get_workspace(&get).await?.into_inner().workspace;
    let via_grpc = grpc
        .get_workspace(grpc_request(get.clone(), Some(TOKEN)))
        .await?
        .into_inner()
        .workspace;
    assert_eq!(via_binary.as_ref(), Some(&created));
    assert_eq!(via_grpc.as_ref(), Some(&created));

    // Errors carry the right code and a message naming the field, on every protocol.
    let bad = pb::CreateWorkspaceRequest {
        name: "x".into(),
        slug: "Not A Slug".into(),
        actor: None,
    };
    let err = json.create_workspace(&bad).await.unwrap_err();
    assert_eq!(err.code(), connectrpc_axum_client::Code::InvalidArgument);
    assert!(
        err.message().unwrap_or_default().starts_with("slug:"),
        "{err:?}"
    );
    let status = grpc
        .create_workspace(grpc_request(bad, Some(TOKEN)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().starts_with("slug:"));
    let dup = pb::CreateWorkspaceRequest {
        name: "x".into(),
        slug: "acme".into(),
        actor: None,
    };
    assert_eq!(
        binary.create_workspace(&dup).await.unwrap_err().code(),
        connectrpc_axum_client::Code::AlreadyExists
    );
    let missing = pb::GetWorkspaceRequest {
        workspace_id: "ws_0000000000000000".into(),
    };
    assert_eq!(
        grpc.get_workspace(grpc_request(missing, Some(TOKEN)))
            .await
            .unwrap_err()
            .code(),
        tonic::Code::NotFound
    );
    Ok(())
}

#[tokio::test]
async fn health_endpoints_and_request_limits() -> Result<()> {
    let (base, ops, _server) = serve_both().await?;
    let http = ctrl_testkit::http_client();
    for port in [&base, &ops] {
        let live = http.get(format!("{port}/health/live")).send().await?;
        assert_eq!(live.status(), 200);
    }
    // The public port serves the API and liveness only.
    for path in ["/health/ready", "/metrics"] {
        let r = http.get(format!("{base}{path}")).send().await?;
        assert_eq!(r.status(), 404, "{path} on the API port");
    }
    // No Restate behind this server's ingress address: not ready, and it says why.
    let ready = http.get(format!("{ops}/health/ready")).send().await?;
    assert_eq!(ready.status(), 503);
    assert_eq!(ready.text().await?, "restate unreachable");

    // A flood of readiness probes costs about one check a second, not one
    // each: 200 concurrent probes, then the counter.
    let started = std::time::Instant::now();
    let probes = (0..200).map(|_| http.get(format!("{ops}/health/ready")).send());
    for probe in futures::future::join_all(probes).await {
        assert_eq!(probe?.status(), 503);
    }
    // At most one check per started second (plus the first probe's).
    let bound = started.elapsed().as_secs() + 2;
    let metrics = http
        .get(format!("{ops}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let checks: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ctrl_api_readiness_checks_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no readiness counter in {metrics}"));
    println!("201 readiness probes ran {checks} checks");
    assert!(checks <= bound, "{checks} checks for 201 probes");

    // A body over the limit is refused before any handler runs.
    let huge = format!(
        "{{\"name\":\"{}\",\"slug\":\"big\"}}",
        "x".repeat(ctrl_api::rpc::MAX_REQUEST_BYTES + 1)
    );
    let response = http
        .post(format!("{base}/ctrl.v1.WorkspaceService/CreateWorkspace"))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(huge)
        .send()
        .await?;
    assert!(!response.status().is_success(), "{}", response.status());
    Ok(())
}

#[tokio::test]
async fn metrics_count_requests_by_rpc_protocol_and_code_and_request_ids_are_echoed() -> Result<()>
{
    let (base, ops, _server) = serve_both().await?;
    let http = ctrl_testkit::http_client();
    let call = |token: Option<&str>, request_id: Option<&str>| {
        let mut req = http
            .post(format!("{base}/ctrl.v1.WorkspaceService/ListWorkspaces"))
            .header("content-type", "application/json")
            .body("{}");
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(id) = request_id {
            req = req.header("x-request-id", id);
        }
        req.send()
    };
    let ok = call(Some(TOKEN), Some("trace-abc_1.2")).await?;
    assert_eq!(ok.status(), 200);
    assert_eq!(
        ok.headers()["x-request-id"],
        "trace-abc_1.2",
        "a sane caller id is kept"
    );
    let denied = call(None, Some("bad id with spaces")).await?;
    assert_eq!(denied.status(), 401);
    let generated = denied.headers()["x-request-id"].to_str()?.to_owned();
    assert!(
        !generated.contains(' ') && !generated.is_empty(),
        "a bad id is replaced: {generated}"
    );

    let mut grpc = GrpcWorkspaces::connect(base.clone()).await?;
    let missing = pb::GetWorkspaceRequest {
        workspace_id: "ws_0000000000000000".into(),
    };
    assert!(
        grpc.get_workspace(grpc_request(missing, Some(TOKEN)))
            .await
            .is_err()
    );

    let text = http
        .get(format!("{ops}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let has = |needle: &str| {
        text.lines()
            .any(|l| l.starts_with("ctrl_api_requests_total") && l.contains(needle))
    };
    assert!(
        has(r#"rpc="/ctrl.v1.WorkspaceService/ListWorkspaces",protocol="connect",code="ok"} 1"#),
        "{text}"
    );
    assert!(
        has(
            r#"rpc="/ctrl.v1.WorkspaceService/ListWorkspaces",protocol="connect",code="unauthenticated"} 1"#
        ),
        "{text}"
    );
    assert!(
        has(r#"rpc="/ctrl.v1.WorkspaceService/GetWorkspace",protocol="grpc",code="not_found"} 1"#),
        "{text}"
    );
    assert!(
        text.contains("ctrl_api_request_duration_seconds_bucket"),
        "{text}"
    );
    Ok(())
}

/// Frames a message as gRPC(-Web) does: flag 0, big-endian length, bytes.
fn grpc_web_frame(message: &impl prost::Message) -> Vec<u8> {
    let bytes = message.encode_to_vec();
    let mut out = vec![0u8];
    out.extend_from_slice(&u32::try_from(bytes.len()).expect("small").to_be_bytes());
    out.extend_from_slice(&bytes);
    out
}

/// Splits a gRPC-Web response body into (data frames, trailer text).
fn grpc_web_frames(body: &[u8]) -> (Vec<Vec<u8>>, String) {
    let (mut data, mut trailers, mut rest) = (Vec::new(), String::new(), body);
    while rest.len() >= 5 {
        let len = u32::from_be_bytes(rest[1..5].try_into().expect("4 bytes")) as usize;
        let payload = &rest[5..5 + len];
        if rest[0] & 0x80 != 0 {
            trailers.push_str(&String::from_utf8_lossy(payload));
        } else {
            data.push(payload.to_vec());
        }
        rest = &rest[5 + len..];
    }
    (data, trailers)
}

#[tokio::test]
async fn browsers_can_call_over_grpc_web() -> Result<()> {
    use prost::Message;
    let (base, _server) = serve().await?;
    let http = ctrl_testkit::http_client();
    let call = |path: &str, body: Vec<u8>, token: Option<&str>| {
        let mut req = http
            .post(format!("{base}{path}"))
            .header("content-type", "application/grpc-web+proto")
            .header("x-grpc-web", "1")
            .body(body);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req.send()
    };

    let response = call(
        "/ctrl.v1.CtrlService/Liveness",
        grpc_web_frame(&pb::LivenessRequest {}),
        None,
    )
    .await?;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()?
            .starts_with("application/grpc-web")
    );
    let (data, trailers) = grpc_web_frames(&response.bytes().await?);
    let live = pb::LivenessResponse::decode(data.first().expect("a message").as_slice())?;
    assert_eq!(live.status, "ok");
    assert!(trailers.contains("grpc-status:0"), "{trailers}");

    let list = grpc_web_frame(&pb::ListWorkspacesRequest { page: None });
    let denied = call(
        "/ctrl.v1.WorkspaceService/ListWorkspaces",
        list.clone(),
        None,
    )
    .await?;
    let status = denied
        .headers()
        .get("grpc-status")
        .map(|v| v.to_str().unwrap_or_default().to_owned());
    let (_, trailers) = grpc_web_frames(&denied.bytes().await?);
    assert!(
        status.as_deref() == Some("16") || trailers.contains("grpc-status:16"),
        "unauthenticated: {status:?} {trailers}"
    );
    let allowed = call(
        "/ctrl.v1.WorkspaceService/ListWorkspaces",
        list,
        Some(TOKEN),
    )
    .await?;
    let (data, trailers) = grpc_web_frames(&allowed.bytes().await?);
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
    pb::ListWorkspacesResponse::decode(data.first().expect("a message").as_slice())?;
    Ok(())
}

/// One HTTP/1.1 connection, as a keep-alive client (Connect-ES on Node)
/// uses it: raw requests and responses.
struct Http1 {
    stream: tokio::net::TcpStream,
    buffered: Vec<u8>,
}

/// A response read off an [`Http1`] connection.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Http1 {
    async fn connect(base: &str) -> Result<Self> {
        let stream = tokio::net::TcpStream::connect(base.trim_start_matches("http://")).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buffered: Vec::new(),
        })
    }

    async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(bytes).await
    }

    /// Reads one response (Content-Length framed, as the API answers unary calls).
    async fn answer(&mut self) -> Result<Answer> {
        use tokio::io::AsyncReadExt;
        let read = async {
            loop {
                if let Some(end) = self.buffered.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&self.buffered[..end]).into_owned();
                    let mut lines = head.lines();
                    let status = lines
                        .next()
                        .and_then(|l| l.split_whitespace().nth(1))
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(|| anyhow::anyhow!("no status line in {head:?}"))?;
                    let headers: Vec<(String, String)> = lines
                        .filter_map(|l| l.split_once(':'))
                        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
                        .collect();
                    let length: usize = headers
                        .iter()
                        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                        .and_then(|(_, v)| v.parse().ok())
                        .unwrap_or(0);
                    while self.buffered.len() < end + 4 + length {
                        let mut chunk = [0; 4096];
                        let n = self.stream.read(&mut chunk).await?;
                        anyhow::ensure!(n > 0, "connection closed inside a response body");
                        self.buffered.extend_from_slice(&chunk[..n]);
                    }
                    let body = String::from_utf8_lossy(&self.buffered[end + 4..end + 4 + length])
                        .into_owned();
                    self.buffered.drain(..end + 4 + length);
                    return Ok(Answer {
                        status,
                        headers,
                        body,
                    });
                }
                let mut chunk = [0; 4096];
                let n = self.stream.read(&mut chunk).await?;
                anyhow::ensure!(n > 0, "connection closed before a response");
                self.buffered.extend_from_slice(&chunk[..n]);
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), read).await?
    }
}

/// A request's head, its body sent separately (as Node writes them).
fn post_head(path: &str, content_type: &str, token: Option<&str>, length: usize) -> String {
    let auth = token.map_or_else(String::new, |t| format!("authorization: Bearer {t}\r\n"));
    format!(
        "POST {path} HTTP/1.1\r\nhost: ctrl\r\ncontent-type: {content_type}\r\n{auth}content-length: {length}\r\n\r\n"
    )
}

/// Any early answer (401, 404, 415) leaves an HTTP/1.1 connection usable:
/// the next request on it gets its answer. An answer that cannot wait for
/// the body (413) closes the connection and says so.
#[tokio::test]
async fn early_answers_leave_http1_connections_usable() -> Result<()> {
    let (base, _server) = serve().await?;
    let list = "/ctrl.v1.WorkspaceService/ListWorkspaces";
    let body = "{}";
    let cases: [(&str, &str, Option<&str>, u16); 3] = [
        (list, "application/json", None, 401),
        (
            "/ctrl.v1.NoSuchService/Nothing",
            "application/json",
            Some(TOKEN),
            404,
        ),
        (list, "text/plain", Some(TOKEN), 415),
    ];
    for (path, content_type, token, expected) in cases {
        let mut conn = Http1::connect(&base).await?;
        // The head first; the body only after the server had time to
        // answer without it (what made the next request fail).
        conn.send(post_head(path, content_type, token, body.len()).as_bytes())
            .await?;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        conn.send(body.as_bytes()).await?;
        let first = conn.answer().await?;
        assert_eq!(first.status, expected, "{path} {content_type}: {first:?}");
        if first.header("connection") == Some("close") {
            continue; // closed cleanly, and the client was told
        }
        let next = format!(
            "{}{body}",
            post_head(list, "application/json", Some(TOKEN), body.len())
        );
        conn.send(next.as_bytes()).await?;
        let second = conn.answer().await.map_err(|e| {
            anyhow::anyhow!("the request after a {expected} on the same connection failed: {e}")
        })?;
        assert_eq!(second.status, 200, "{second:?}");
        assert!(second.body.contains("\"page\""), "{second:?}");
    }

    // Too large to read: answered at once, with `connection: close`.
    let mut conn = Http1::connect(&base).await?;
    let huge = ctrl_api::rpc::MAX_REQUEST_BYTES + 1;
    conn.send(post_head(list, "application/json", Some(TOKEN), huge).as_bytes())
        .await?;
    let answer = conn.answer().await?;
    assert_eq!(answer.status, 413, "{answer:?}");
    assert_eq!(answer.header("connection"), Some("close"), "{answer:?}");
    assert!(answer.body.contains("resource_exhausted"), "{answer:?}");
    Ok(())
}
