//! The fake Depot's Connect API, over plain HTTP as a client sees it, and
//! its machine's mutual TLS. (Real builds on the machine are proven by
//! ctrl-build's Depot backend tests.)

use std::time::Duration;

use anyhow::{Result, bail};
use ctrl_build::buildkit::Machine;
use ctrl_build::buildkit::proto::control::control_client::ControlClient;
use ctrl_build::buildkit::proto::control::{SolveRequest, StatusRequest};
use ctrl_testkit::depot::{
    CREATE_BUILD, CREATE_PROJECT, ConnectCode, FINISH_BUILD, FakeBuildStatus, FakeDepot,
    FakeDepotOptions, GET_BUILDKIT_CONNECTION, LIST_PROJECTS, REPORT_BUILD_HEALTH, TokenKind,
};
use ctrl_testkit::http_client;
use futures::StreamExt as _;
use serde_json::{Value, json};

/// One Connect call: (HTTP status, JSON answer or `null`).
async fn call(depot: &FakeDepot, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    let mut request = http_client()
        .post(format!("{}{path}", depot.url()))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = request.send().await.expect("the fake Depot answers");
    let status = response.status().as_u16();
    let text = response.text().await.expect("a body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The active connection of a new build (after its pending polls).
async fn active_machine(depot: &FakeDepot, org: &str) -> Result<(String, String, Machine)> {
    let project = depot.create_project("machine", "us-east-1");
    let (status, build) = call(
        depot,
        CREATE_BUILD,
        Some(org),
        json!({"projectId": project.id}),
    )
    .await;
    assert_eq!(status, 200, "{build}");
    let id = build["buildId"].as_str().unwrap_or_default().to_owned();
    let token = build["buildToken"].as_str().unwrap_or_default().to_owned();
    let ask = json!({"buildId": id, "platform": "BUILDER_PLATFORM_AMD64", "requiredEngine": {"buildkit": {}}});
    for _ in 0..5 {
        let (status, answer) =
            call(depot, GET_BUILDKIT_CONNECTION, Some(&token), ask.clone()).await;
        assert_eq!(status, 200, "{answer}");
        let active = &answer["active"];
        if active.is_object() {
            let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            return Ok((
                id,
                token,
                Machine {
                    endpoint: text(&active["endpoint"]),
                    server_name: text(&active["serverName"]),
                    ca_pem: text(&active["caCert"]["cert"]),
                    cert_pem: text(&active["cert"]["cert"]),
                    key_pem: text(&active["cert"]["key"]).into(),
                },
            ));
        }
    }
    bail!("the machine never became active")
}

#[tokio::test]
async fn the_fake_depot_answers_like_depots_connect_api() -> Result<()> {
    let depot = FakeDepot::start(FakeDepotOptions::default()).await?;
    let org = depot.org_token();

    // Connect's protocol: JSON only, a bearer token always.
    let r = http_client()
        .post(format!("{}{LIST_PROJECTS}", depot.url()))
        .header("content-type", "text/plain")
        .header("authorization", format!("Bearer {org}"))
        .body("{}")
        .send()
        .await?;
    assert_eq!(r.status(), 415);
    let (status, body) = call(&depot, LIST_PROJECTS, None, json!({})).await;
    assert_eq!((status, &body["code"]), (401, &json!("unauthenticated")));
    let (status, body) = call(&depot, LIST_PROJECTS, Some("nope"), json!({})).await;
    assert_eq!((status, &body["code"]), (401, &json!("unauthenticated")));
    let (status, body) = call(
        &depot,
        "/depot.cli.v1.BuildService/Nope",
        Some(&org),
        json!({}),
    )
    .await;
    assert_eq!((status, &body["code"]), (404, &json!("unimplemented")));

    // Projects: none, then one; proto3 JSON leaves empty lists out.
    let (status, body) = call(&depot, LIST_PROJECTS, Some(&org), json!({})).await;
    assert_eq!((status, body), (200, json!({})));
    let (status, body) = call(
        &depot,
        CREATE_PROJECT,
        Some(&org),
        json!({"name": "ctrl-p1", "regionId": "mars-1"}),
    )
    .await;
    assert_eq!((status, &body["code"]), (400, &json!("invalid_argument")));
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("mars-1"),
        "{body}"
    );
    let (status, body) = call(
        &depot,
        CREATE_PROJECT,
        Some(&org),
        json!({"name": "", "regionId": "us-east-1"}),
    )
    .await;
    assert_eq!((status, &body["code"]), (400, &json!("invalid_argument")));
    let (status, body) = call(
        &depot,
        CREATE_PROJECT,
        Some(&org),
        json!({"name": "ctrl-p1", "regionId": "eu-central-1", "cachePolicy": {"keepBytes": "1073741824", "keepDays": 7}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let project = &body["project"];
    let project_id = project["projectId"].as_str().unwrap_or_default().to_owned();
    assert_eq!(project_id.len(), 10);
    assert!(
        project_id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
        "{project_id}"
    );
    assert_eq!(project["organizationId"], json!(depot.org_id()));
    assert_eq!(project["regionId"], "eu-central-1");
    assert_eq!(
        project["cachePolicy"],
        json!({"keepBytes": "1073741824", "keepDays": 7})
    );
    assert!(
        project["createdAt"]
            .as_str()
            .unwrap_or_default()
            .ends_with('Z')
    );
    let (status, body) = call(&depot, LIST_PROJECTS, Some(&org), json!({})).await;
    assert_eq!((status, &body["projects"][0]), (200, project));
    assert_eq!(depot.projects().len(), 1);
    assert_eq!(depot.projects()[0].keep_bytes, 1 << 30);

    // Builds.
    let (status, body) = call(
        &depot,
        CREATE_BUILD,
        Some(&org),
        json!({"projectId": "nope"}),
    )
    .await;
    assert_eq!((status, &body["code"]), (404, &json!("not_found")));
    let (status, build) = call(
        &depot,
        CREATE_BUILD,
        Some(&org),
        json!({"projectId": project_id}),
    )
    .await;
    assert_eq!(status, 200, "{build}");
    let build_id = build["buildId"].as_str().unwrap_or_default().to_owned();
    let build_token = build["buildToken"].as_str().unwrap_or_default().to_owned();
    assert_eq!(
        build["buildUrl"],
        json!(format!(
            "https://depot.dev/orgs/{}/projects/{project_id}/builds/{build_id}",
            depot.org_id()
        ))
    );
    assert_eq!(build["projectId"], json!(project_id));
    // A build token is not the organization's.
    let (status, _) = call(&depot, LIST_PROJECTS, Some(&build_token), json!({})).await;
    assert_eq!(status, 403);

    // The machine: only for the build's own token; pending, then active.
    let ask = json!({"buildId": build_id, "platform": "BUILDER_PLATFORM_AMD64", "requiredEngine": {"buildkit": {}}});
    let (status, body) = call(&depot, GET_BUILDKIT_CONNECTION, Some(&org), ask.clone()).await;
    assert_eq!((status, &body["code"]), (403, &json!("permission_denied")));
    let (status, body) = call(
        &depot,
        GET_BUILDKIT_CONNECTION,
        Some(&build_token),
        json!({"buildId": build_id}),
    )
    .await;
    assert_eq!((status, &body["code"]), (400, &json!("invalid_argument")));
    let (status, body) = call(
        &depot,
        GET_BUILDKIT_CONNECTION,
        Some(&build_token),
        ask.clone(),
    )
    .await;
    assert_eq!((status, body), (200, json!({"pending": {"waitMs": 100}})));
    let (status, body) = call(
        &depot,
        GET_BUILDKIT_CONNECTION,
        Some(&build_token),
        ask.clone(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let active = &body["active"];
    assert_eq!(active["endpoint"], json!(depot.machine_endpoint()));
    assert_eq!(
        active["serverName"],
        json!(format!("machine-{build_id}.depot.test"))
    );
    let pem = |v: &Value, label: &str| {
        v.as_str()
            .unwrap_or_default()
            .starts_with(&format!("-----BEGIN {label}-----"))
    };
    assert!(pem(&active["cert"]["cert"], "CERTIFICATE"), "{active}");
    assert!(pem(&active["cert"]["key"], "PRIVATE KEY"), "{active}");
    assert!(pem(&active["caCert"]["cert"], "CERTIFICATE"), "{active}");
    assert_eq!(active["caCert"]["cert"], json!(depot.ca_pem()));

    // Health reports are counted.
    for _ in 0..2 {
        let (status, body) = call(
            &depot,
            REPORT_BUILD_HEALTH,
            Some(&build_token),
            json!({"buildId": build_id, "platform": "BUILDER_PLATFORM_AMD64"}),
        )
        .await;
        assert_eq!((status, body), (200, json!({})));
    }
    let fake = depot.build(&build_id).expect("the build is recorded");
    assert_eq!(
        (
            fake.health_reports,
            fake.connection_requests,
            fake.platforms.as_slice()
        ),
        (2, 2, ["BUILDER_PLATFORM_AMD64".to_owned()].as_slice())
    );

    // Finishing: exactly one result; the first outcome sticks.
    let (status, body) = call(
        &depot,
        FINISH_BUILD,
        Some(&build_token),
        json!({"buildId": build_id, "success": {}, "error": {"error": "x"}}),
    )
    .await;
    assert_eq!((status, &body["code"]), (400, &json!("invalid_argument")));
    let (status, body) = call(
        &depot,
        FINISH_BUILD,
        Some(&build_token),
        json!({"buildId": build_id}),
    )
    .await;
    assert_eq!((status, &body["code"]), (400, &json!("invalid_argument")));
    assert_eq!(depot.builds()[0].status, FakeBuildStatus::Running);
    let (status, body) = call(
        &depot,
        FINISH_BUILD,
        Some(&build_token),
        json!({"buildId": build_id, "error": {"error": "step 3 failed"}}),
    )
    .await;
    assert_eq!((status, body), (200, json!({})));
    let (status, _) = call(
        &depot,
        FINISH_BUILD,
        Some(&build_token),
        json!({"buildId": build_id, "success": {}}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        depot.builds()[0].status,
        FakeBuildStatus::Failed("step 3 failed".into())
    );
    let (status, body) = call(&depot, GET_BUILDKIT_CONNECTION, Some(&build_token), ask).await;
    assert_eq!(
        (status, &body["code"]),
        (400, &json!("failed_precondition"))
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("has finished"),
        "{body}"
    );

    // Injected failures hit the next call of that path only.
    depot.fail_next(LIST_PROJECTS, "unavailable");
    depot.fail_next(CREATE_BUILD, ConnectCode::ResourceExhausted);
    let (status, body) = call(&depot, LIST_PROJECTS, Some(&org), json!({})).await;
    assert_eq!((status, &body["code"]), (503, &json!("unavailable")));
    let (status, _) = call(&depot, LIST_PROJECTS, Some(&org), json!({})).await;
    assert_eq!(status, 200);
    let (status, body) = call(
        &depot,
        CREATE_BUILD,
        Some(&org),
        json!({"projectId": project_id}),
    )
    .await;
    assert_eq!((status, &body["code"]), (429, &json!("resource_exhausted")));

    // What was recorded: which token, never its value.
    let requests = depot.requests();
    let recorded = format!("{requests:?}");
    assert!(
        !recorded.contains(&org),
        "the organization token was recorded"
    );
    assert!(
        !recorded.contains(&build_token),
        "a build token was recorded"
    );
    assert_eq!(requests[0].status, 415);
    assert_eq!(requests[1].token, TokenKind::None);
    assert_eq!(requests[2].token, TokenKind::Unknown);
    assert!(requests.iter().any(|r| r.path == GET_BUILDKIT_CONNECTION
        && r.token == TokenKind::Build(build_id.clone())
        && r.body["buildId"] == json!(build_id)));
    assert!(requests.iter().any(|r| r.path == FINISH_BUILD
        && r.status == 400
        && r.code == Some(ConnectCode::InvalidArgument)));
    Ok(())
}

#[tokio::test]
async fn the_machine_takes_only_its_builds_client_certificates() -> Result<()> {
    let depot = FakeDepot::start(FakeDepotOptions {
        pending_polls: 0,
        ..FakeDepotOptions::default()
    })
    .await?;
    let org = depot.org_token();
    let (build_id, _, machine) = active_machine(&depot, &org).await?;

    // With the build's certificate: BuildKit's API, the call tied to the
    // build. A solve the machine refuses still ends its status stream.
    let channel = machine.connect(Duration::from_secs(5)).await?;
    let mut control = ControlClient::new(channel);
    let refused = control
        .solve(SolveRequest {
            r#ref: "bld_1".into(),
            session: "s1".into(),
            frontend: "gateway.v0".into(),
            ..SolveRequest::default()
        })
        .await;
    let status = refused.expect_err("an unsupported frontend");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("dockerfile.v0"), "{status:?}");
    let mut progress = control
        .status(StatusRequest {
            r#ref: "bld_1".into(),
        })
        .await?
        .into_inner();
    let ended = tokio::time::timeout(Duration::from_secs(5), progress.next()).await?;
    assert!(ended.is_none(), "{ended:?}");
    let solves = depot.solves();
    assert_eq!(solves.len(), 1);
    assert_eq!(solves[0].build_id.as_deref(), Some(build_id.as_str()));
    assert!(matches!(
        &solves[0].outcome,
        ctrl_testkit::depot::SolveOutcome::Failed(m) if m.contains("dockerfile.v0")
    ));
    assert_eq!(depot.build(&build_id).map(|b| b.solves), Some(1));

    // Without a client certificate, or with one of another CA: refused.
    let other = ctrl_testkit::ca::LocalCa::generate()?.leaf(&["intruder"])?;
    for (cert_pem, key_pem) in [
        (String::new(), String::new()),
        (other.chain_pem, other.key_pem),
    ] {
        let endpoint = machine.endpoint.trim_start_matches("tcp://");
        let mut tls = tonic::transport::ClientTlsConfig::new()
            .domain_name(machine.server_name.clone())
            .ca_certificate(tonic::transport::Certificate::from_pem(&machine.ca_pem));
        if !cert_pem.is_empty() {
            tls = tls.identity(tonic::transport::Identity::from_pem(cert_pem, key_pem));
        }
        let connected = tonic::transport::Endpoint::from_shared(format!("https://{endpoint}"))?
            .tls_config(tls)?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await;
        // TLS 1.3 reports the refusal on the first request at the latest.
        let refused = match connected {
            Err(_) => true,
            Ok(channel) => ControlClient::new(channel)
                .status(StatusRequest {
                    r#ref: "bld_1".into(),
                })
                .await
                .is_err(),
        };
        assert!(
            refused,
            "the machine took a connection without the build's certificate"
        );
    }
    assert_eq!(depot.solves().len(), 1);
    Ok(())
}
