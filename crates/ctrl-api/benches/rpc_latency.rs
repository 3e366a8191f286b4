//! Latency of small unary RPCs over gRPC, Connect and gRPC-Web, with the
//! listener as every server has it (`TCP_NODELAY`, `ctrl_runtime::net`) and,
//! as the baseline in the same run, the same router on a plain listener
//! (Nagle on — how ctrl-api served before).
//!
//! `cargo bench -p ctrl-api --bench rpc_latency [-- CALLS]`
//!
//! Everything is real: MariaDB, the router, HTTP/2 (gRPC: tonic) and
//! HTTP/1.1 (Connect JSON, gRPC-Web: reqwest) on loopback. It prints p50
//! and p99 per RPC and protocol, and the ratio plain/nodelay of the p50.

mod common;

#[path = "../tests/it/fixtures.rs"]
#[allow(dead_code)]
mod fixtures;

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use common::{TOKEN, state};
use ctrl_core::status::DeploymentStatus;
use ctrl_proto::ctrl::v1 as pb;
use prost::Message;
use tokio::net::TcpListener;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let calls: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200);
    let state = state().await?;
    // A list answer of about 4 KB, and one deployment to read.
    for i in 0..24 {
        ctrl_api::services::tenancy::create_workspace(
            &state,
            pb::CreateWorkspaceRequest {
                name: format!("Workspace number {i} with a name long enough to weigh something"),
                slug: format!("ws-{i}"),
                actor: None,
            },
        )
        .await?;
    }
    let app = fixtures::app(&state, false).await?;
    let deployment_id = fixtures::deployment(
        &state,
        &app.app,
        &app.production.id,
        None,
        DeploymentStatus::Ready,
        "bench",
    )
    .await?;
    let workspace_id = app.app.workspace_id.clone();

    let router = ctrl_api::rpc::router(state);
    let nodelay = TcpListener::bind("127.0.0.1:0").await?;
    let plain = TcpListener::bind("127.0.0.1:0").await?;
    let servers = [
        format!("http://{}", nodelay.local_addr()?),
        format!("http://{}", plain.local_addr()?),
    ];
    let r = router.clone();
    tokio::spawn(async move { axum::serve(ctrl_runtime::net::nodelay(nodelay), r).await });
    // The baseline: the listener ctrl-api had before (Nagle on).
    // nodelay: off on purpose
    tokio::spawn(async move { axum::serve(plain, router).await });

    println!("rpc_latency: {calls} calls each after 20 warm-up calls; p50 / p99 in ms");
    println!(
        "{:<16} {:<9} {:>17} {:>17} {:>7}",
        "rpc", "protocol", "nodelay", "plain (before)", "p50 x"
    );
    let rpcs: [(&str, &str, Vec<u8>, String); 3] = [
        (
            "WorkspaceService",
            "ListWorkspaces",
            pb::ListWorkspacesRequest { page: None }.encode_to_vec(),
            "{}".to_owned(),
        ),
        (
            "WorkspaceService",
            "GetWorkspace",
            pb::GetWorkspaceRequest {
                workspace_id: workspace_id.clone(),
            }
            .encode_to_vec(),
            format!("{{\"workspaceId\":\"{workspace_id}\"}}"),
        ),
        (
            "DeploymentService",
            "GetDeployment",
            pb::GetDeploymentRequest {
                deployment_id: deployment_id.clone(),
            }
            .encode_to_vec(),
            format!("{{\"deploymentId\":\"{deployment_id}\"}}"),
        ),
    ];
    for (service, method, proto, json) in &rpcs {
        for protocol in ["grpc", "connect", "grpc-web"] {
            let mut figures = Vec::new();
            for base in &servers {
                let mut client = Client::new(protocol, base).await?;
                let path = format!("/ctrl.v1.{service}/{method}");
                for _ in 0..20 {
                    client.call(base, &path, proto, json).await?;
                }
                let mut samples = Vec::with_capacity(calls);
                for _ in 0..calls {
                    let started = Instant::now();
                    client.call(base, &path, proto, json).await?;
                    samples.push(started.elapsed());
                }
                samples.sort();
                figures.push((percentile(&samples, 50), percentile(&samples, 99)));
            }
            let (fast, slow) = (figures[0], figures[1]);
            println!(
                "{:<16} {:<9} {:>7.2} / {:>7.2} {:>7.2} / {:>7.2} {:>6.1}x",
                method,
                protocol,
                ms(fast.0),
                ms(fast.1),
                ms(slow.0),
                ms(slow.1),
                slow.0.as_secs_f64() / fast.0.as_secs_f64().max(1e-9)
            );
        }
    }
    Ok(())
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One client per protocol, reused for every call (keep-alive, as real clients).
enum Client {
    /// HTTP/2 with gRPC framing (tonic's transport, as a stock gRPC client).
    Grpc(tonic::client::Grpc<tonic::transport::Channel>),
    /// HTTP/1.1: Connect JSON, or gRPC-Web binary.
    Http1 { http: reqwest::Client, web: bool },
}

impl Client {
    async fn new(protocol: &str, base: &str) -> Result<Self> {
        Ok(match protocol {
            "grpc" => {
                let channel = tonic::transport::Endpoint::from_shared(base.to_owned())?
                    .connect()
                    .await?;
                Self::Grpc(tonic::client::Grpc::new(channel))
            }
            other => Self::Http1 {
                http: reqwest::Client::builder().http1_only().no_proxy().build()?,
                web: other == "grpc-web",
            },
        })
    }

    async fn call(&mut self, base: &str, path: &str, proto: &[u8], json: &str) -> Result<()> {
        let url = format!("{base}{path}");
        match self {
            Self::Grpc(grpc) => {
                grpc.ready().await?;
                let mut request = tonic::Request::new(bytes::Bytes::copy_from_slice(proto));
                request
                    .metadata_mut()
                    .insert("authorization", format!("Bearer {TOKEN}").parse()?);
                grpc.unary::<_, bytes::Bytes, _>(request, path.parse()?, RawCodec)
                    .await
                    .map_err(|s| anyhow::anyhow!("{s}"))?;
            }
            Self::Http1 { http, web: false } => {
                let response = http
                    .post(url)
                    .header("content-type", "application/json")
                    .header("authorization", format!("Bearer {TOKEN}"))
                    .body(json.to_owned())
                    .send()
                    .await?;
                anyhow::ensure!(response.status().is_success(), "{}", response.status());
                response.bytes().await?;
            }
            Self::Http1 { http, web: true } => {
                let mut framed = vec![0u8];
                framed.extend_from_slice(&u32::try_from(proto.len())?.to_be_bytes());
                framed.extend_from_slice(proto);
                let response = http
                    .post(url)
                    .header("content-type", "application/grpc-web+proto")
                    .header("x-grpc-web", "1")
                    .header("authorization", format!("Bearer {TOKEN}"))
                    .body(framed)
                    .send()
                    .await?;
                anyhow::ensure!(response.status().is_success(), "{}", response.status());
                let body = response.bytes().await.context("gRPC-Web body")?;
                anyhow::ensure!(
                    String::from_utf8_lossy(&body).contains("grpc-status:0"),
                    "gRPC-Web call failed"
                );
            }
        }
        Ok(())
    }
}

/// Passes protobuf bytes through unchanged (the bench measures transport,
/// not codegen).
#[derive(Debug, Clone, Copy)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = bytes::Bytes;
    type Decode = bytes::Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        *self
    }
    fn decoder(&mut self) -> Self::Decoder {
        *self
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = bytes::Bytes;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Self::Item,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), Self::Error> {
        use bytes::BufMut;
        dst.put(item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = bytes::Bytes;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Self::Item>, Self::Error> {
        use bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}
