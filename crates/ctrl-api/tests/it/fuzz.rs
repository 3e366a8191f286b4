//! Bad input never yields `internal` and never takes the server down: every
//! unary RPC of every ctrl.v1 service (found in the descriptor, so new RPCs
//! are covered automatically) receives random bytes, truncated and
//! type-confused messages, invalid UTF-8, malformed JSON and valid messages
//! with huge strings, over Connect (JSON and binary) and gRPC framing —
//! the agents' services too (mounted as in the dev stack, called with the
//! agent credentials they take).

use anyhow::{Context as _, Result};
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, Kind, MessageDescriptor, Value};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

use crate::{EDGE_TOKEN, TOKEN, state};

/// A message with every string field set to `text` (nested to depth 2).
fn filled(desc: &MessageDescriptor, text: &str, depth: usize) -> DynamicMessage {
    let mut m = DynamicMessage::new(desc.clone());
    if depth == 0 {
        return m;
    }
    for field in desc.fields() {
        let value = match field.kind() {
            Kind::String if field.is_list() => Value::List(vec![Value::String(text.into()); 3]),
            Kind::String if !field.is_map() => Value::String(text.into()),
            Kind::Message(inner) if !field.is_list() && !field.is_map() => {
                Value::Message(filled(&inner, text, depth - 1))
            }
            Kind::Int32 if !field.is_list() => Value::I32(-1),
            Kind::Int64 if !field.is_list() => Value::I64(i64::MIN),
            Kind::Uint32 if !field.is_list() => Value::U32(u32::MAX),
            Kind::Enum(_) if !field.is_list() => Value::EnumNumber(9999),
            _ => continue,
        };
        m.set_field(&field, value);
    }
    m
}

/// The malformed and hostile request bodies for one RPC, as (content type, body).
fn payloads(desc: &MessageDescriptor, rng: &mut StdRng) -> Vec<(&'static str, Vec<u8>)> {
    let mut random = vec![0u8; rng.random_range(1..256)];
    rng.fill_bytes(&mut random);
    let huge = "x".repeat(1 << 20);
    let unicode = "é✓\u{0}\u{202e}日本".repeat(50);
    let valid = filled(desc, "ws_0000000000000000", 2).encode_to_vec();
    let mut truncated = valid.clone();
    truncated.truncate(valid.len() / 2 + 1);
    let mut json_wrong_types = serde_json::Map::new();
    for field in desc.fields() {
        json_wrong_types.insert(
            field.json_name().to_owned(),
            serde_json::json!({"nested": [1, 2, 3]}),
        );
    }
    vec![
        ("application/proto", random.clone()),
        ("application/proto", truncated),
        ("application/proto", filled(desc, &huge, 2).encode_to_vec()),
        (
            "application/proto",
            filled(desc, &unicode, 2).encode_to_vec(),
        ),
        ("application/proto", vec![0xff; 64]),
        ("application/json", random),
        ("application/json", b"{\"a\": ".to_vec()),
        (
            "application/json",
            vec![b'{', b'"', 0xff, 0xfe, b'"', b':', b'1', b'}'],
        ),
        (
            "application/json",
            serde_json::to_vec(&json_wrong_types).expect("json"),
        ),
        ("application/json", b"[]".to_vec()),
        ("application/json", b"null".to_vec()),
        (
            "application/json",
            serde_json::to_vec(&serde_json::json!({"workspaceId": huge, "appId": unicode}))
                .expect("json"),
        ),
    ]
}

#[tokio::test]
async fn malformed_input_to_every_rpc_never_yields_internal_or_a_crash() -> Result<()> {
    let s = state().await?.with_limits(&ctrl_api::limits::LimitsConfig {
        requests_per_second: 1_000_000,
        burst: 1_000_000,
        ..ctrl_api::limits::LimitsConfig::default()
    });
    let krane = "ctrl_agent_fuzz_krane_local_0123456789abcdef";
    ctrl_cluster_sync::agents::ensure(
        s.db(),
        &ctrl_cluster_sync::agents::Binding::krane("dev", "local", "local-1", "fuzz"),
        krane,
        1,
    )
    .await?;
    let nowhere = format!("http://127.0.0.1:{}", ctrl_testkit::free_port()?);
    let sync = ctrl_cluster_sync::ClusterSync::new(
        s.db().clone(),
        &nowhere,
        ctrl_cluster_sync::Settings::default(),
    );
    let base = crate::serve_router(ctrl_api::rpc::router_with(s, Some(sync))).await?;
    // Each service with the credential it takes.
    let token_for = |service: &str| match service {
        "ClusterService" => krane,
        "EdgeService" | "AcmeService" => EDGE_TOKEN,
        _ => TOKEN,
    };
    let http = ctrl_testkit::http_client();
    let pool = DescriptorPool::decode(ctrl_proto::FILE_DESCRIPTOR_SET)?;
    let mut rng = StdRng::seed_from_u64(0x00c7_71a9);
    let mut sent = 0;
    for service in pool.services().filter(|s| s.package_name() == "ctrl.v1") {
        for method in service.methods() {
            let path = format!("/{}/{}", service.full_name(), method.name());
            let token = token_for(service.name());
            let streaming = method.is_server_streaming();
            for (n, (content_type, body)) in
                payloads(&method.input(), &mut rng).into_iter().enumerate()
            {
                // Streams use the Connect streaming content types and envelope.
                let (content_type, body) = if streaming {
                    let mut framed = vec![0u8];
                    framed.extend_from_slice(&u32::try_from(body.len())?.to_be_bytes());
                    framed.extend_from_slice(&body);
                    (
                        if content_type.ends_with("json") {
                            "application/connect+json"
                        } else {
                            "application/connect+proto"
                        },
                        framed,
                    )
                } else {
                    (content_type, body)
                };
                let response = http
                    .post(format!("{base}{path}"))
                    .header("content-type", content_type)
                    .bearer_auth(token)
                    .body(body.clone())
                    .send()
                    .await
                    .with_context(|| format!("{path}: payload {n} ({content_type})"))?;
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                assert!(
                    status.as_u16() < 500 || status.as_u16() == 501,
                    "{path} ({content_type}) answered {status}: {text}"
                );
                assert!(
                    !text.contains("\"code\":\"internal\""),
                    "{path} ({content_type}) answered internal: {text}"
                );

                // The same bytes in gRPC framing.
                let mut grpc = vec![0u8];
                grpc.extend_from_slice(&u32::try_from(body.len())?.to_be_bytes());
                grpc.extend_from_slice(&body);
                let response = http
                    .post(format!("{base}{path}"))
                    .header("content-type", "application/grpc-web+proto")
                    .bearer_auth(token)
                    .body(grpc)
                    .send()
                    .await
                    .with_context(|| format!("{path}: payload {n} (gRPC-Web)"))?;
                let grpc_status = response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let body = response.bytes().await?;
                let trailer = String::from_utf8_lossy(&body);
                assert!(
                    grpc_status.as_deref() != Some("13") && !trailer.contains("grpc-status:13"),
                    "{path} gRPC internal: {trailer}"
                );
                sent += 2;
            }
        }
    }
    assert!(sent > 800, "only {sent} requests");
    // Still serving.
    let live = http
        .post(format!("{base}/ctrl.v1.CtrlService/Liveness"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await?;
    assert_eq!(live.status(), 200);
    Ok(())
}
