//! The trust boundaries, attacked from outside over real sockets on a real
//! MariaDB: ctrl-api with the agents' services mounted (as in the dev
//! stack), agents holding their own credentials. Each test is one attack
//! and shows it refused, with nothing written.

use std::time::Duration;

use anyhow::Result;
use ctrl_cluster_sync::agents::{self, AgentKind, Binding};
use ctrl_proto::ctrl::v1 as pb;
use krane::control::Control;
use pb::report_deployment_status_request::Change;
use sqlx::MySqlPool;

use crate::support::{Seed, TOKEN, agent_token};

const VAULT_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// ctrl-api with ClusterService and EdgeService mounted, on a free port.
struct Api {
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Api {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn api(db: &MySqlPool, keepalive: Duration) -> Result<Api> {
    let vault = ctrl_vault::Vault::new(&[ctrl_vault::KeyConfig {
        id: "k1".into(),
        base64: VAULT_KEY.into(),
    }])?;
    // No Restate behind these addresses: nothing here starts a workflow.
    let nowhere = format!("http://127.0.0.1:{}", ctrl_testkit::free_port()?);
    let state = ctrl_api::state::AppState::new(
        db.clone(),
        vault,
        &[TOKEN.to_owned()],
        (
            ctrl_api::restate::Ingress::new(&nowhere),
            ctrl_api::restate::Admin::new(&nowhere),
        ),
    );
    let defaults = ctrl_cluster_sync::Settings::default();
    let settings = ctrl_cluster_sync::Settings {
        keepalive,
        edge: ctrl_cluster_sync::edge::EdgeSettings {
            keepalive,
            ..defaults.edge.clone()
        },
        ..defaults
    };
    let sync = ctrl_cluster_sync::ClusterSync::new(db.clone(), &nowhere, settings);
    let app = ctrl_api::rpc::router_with(state, Some(sync));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let task = tokio::spawn(async move {
        let _ = axum::serve(ctrl_runtime::net::nodelay(listener), app).await;
    });
    Ok(Api { url, task })
}

fn key(region: &str, cell: &str) -> pb::ClusterKey {
    pb::ClusterKey {
        platform: "dev".into(),
        region: region.into(),
        cell_id: cell.into(),
    }
}

fn control(api: &Api, token: &str, key: pb::ClusterKey) -> Result<Control> {
    Control::new(&api.url, token, key, Duration::from_secs(5))
}

async fn credential(db: &MySqlPool, kind: AgentKind, region: &str, cell: &str) -> Result<String> {
    let token = format!(
        "ctrl_agent_test_{}_{region}_{cell}_0123456789",
        kind.as_str()
    );
    let binding = Binding {
        kind,
        platform: "dev",
        region,
        cell_id: cell,
        name: "attacker's own",
    };
    agents::ensure(db, &binding, &token, 1).await?;
    Ok(token)
}

async fn regions(db: &MySqlPool) -> Result<Vec<String>> {
    Ok(ctrl_db::cluster::list_regions(db)
        .await?
        .into_iter()
        .map(|r| format!("{}/{}", r.platform, r.name))
        .collect())
}

fn running(name: &str, address: &str) -> pb::Instance {
    pb::Instance {
        name: name.into(),
        address: address.into(),
        status: pb::InstanceStatus::Running as i32,
        cpu_millicores: 100,
        memory_mib: 64,
    }
}

fn update(deployment: &str, instances: Vec<pb::Instance>) -> Change {
    Change::Update(pb::DeploymentInstances {
        deployment_id: deployment.into(),
        instances,
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_can_only_act_as_their_own_cluster() -> Result<()> {
    let db = ctrl_testkit::test_database().await?;
    let seed = Seed::new(&db.pool).await?;
    let api = api(&db.pool, Duration::from_secs(15)).await?;
    let mine = agent_token(&db.pool, "local-1").await?;

    // The API's token does not open the agents' service.
    let err = control(&api, TOKEN, key("local", "local-1"))?
        .heartbeat(pb::AgentBackend::Docker)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");

    // A real credential cannot heartbeat as another region, or another
    // cell of its own region: nothing is registered.
    for other in [key("other", "other-1"), key("local", "local-2")] {
        let err = control(&api, &mine, other.clone())?
            .heartbeat(pb::AgentBackend::Docker)
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
        assert!(
            err.message().contains("bound to dev/local/local-1"),
            "{}",
            err.message()
        );
        let err = control(&api, &mine, other)?.snapshot().await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    }
    assert_eq!(regions(&db.pool).await?, ["dev/local"]);
    assert!(
        ctrl_db::cluster::find_cluster(&db.pool, "dev", "local", "local-2")
            .await
            .is_err()
    );

    // A frontline credential is not a krane's.
    let edge = credential(&db.pool, AgentKind::Frontline, "local", "").await?;
    let err = control(&api, &edge, key("local", "local-1"))?
        .heartbeat(pb::AgentBackend::Docker)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("frontline"), "{}", err.message());

    // Fake reports: region other's agent claims instances, at its own
    // address, for a deployment placed only in dev/local.
    let d = seed.deployment(&db.pool).await?;
    seed.set(&db.pool, &d, true, 1).await?;
    let intruder = control(
        &api,
        &credential(&db.pool, AgentKind::Krane, "other", "other-1").await?,
        key("other", "other-1"),
    )?;
    intruder.heartbeat(pb::AgentBackend::Docker).await?;
    let err = intruder
        .report(update(&d, vec![running("fake-0", "203.0.113.66:80")]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(
        ctrl_db::instance::list_by_deployment(&db.pool, &d)
            .await?
            .is_empty(),
        "no instance was recorded"
    );
    // Its own desired state does not include the deployment either.
    assert!(intruder.desired(&d).await?.is_none());

    // The rightful agent reports the same deployment.
    let owner = control(&api, &mine, key("local", "local-1"))?;
    owner.heartbeat(pb::AgentBackend::Docker).await?;
    owner
        .report(update(&d, vec![running("web-0", "127.0.0.1:4000")]))
        .await?;
    let instances = ctrl_db::instance::list_by_deployment(&db.pool, &d).await?;
    assert_eq!(instances.len(), 1);
    assert_eq!(instances[0].address, "127.0.0.1:4000");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edges_are_bound_to_their_region_and_agents_open_no_api() -> Result<()> {
    let db = ctrl_testkit::test_database().await?;
    Seed::new(&db.pool).await?;
    let api = api(&db.pool, Duration::from_secs(15)).await?;
    let krane = agent_token(&db.pool, "local-1").await?;
    let edge = credential(&db.pool, AgentKind::Frontline, "local", "").await?;
    let channel = tonic::transport::Channel::from_shared(api.url.clone())?.connect_lazy();
    let mut edges = pb::edge_service_client::EdgeServiceClient::new(channel);
    let watch = |token: &str, region: &str| {
        let mut req = tonic::Request::new(pb::WatchRoutesRequest {
            region: Some(pb::EdgeRegion {
                platform: "dev".into(),
                region: region.into(),
            }),
            version_last_seen: 0,
        });
        req.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
        req
    };
    // Its own region: the table streams.
    let mut stream = edges
        .watch_routes(watch(&edge, "local"))
        .await?
        .into_inner();
    assert!(stream.message().await?.is_some());
    // Another region's table, a krane's credential, the API's token: refused.
    for (token, region, code) in [
        (edge.as_str(), "other", tonic::Code::PermissionDenied),
        (krane.as_str(), "local", tonic::Code::PermissionDenied),
        (TOKEN, "local", tonic::Code::Unauthenticated),
    ] {
        let err = edges.watch_routes(watch(token, region)).await.unwrap_err();
        assert_eq!(err.code(), code, "{token:.12} on {region}: {err:?}");
    }

    // Agent credentials open no service of the public API.
    let client = ctrl_testkit::http_client();
    for token in [&krane, &edge] {
        let r = client
            .post(format!(
                "{}/ctrl.v1.WorkspaceService/ListWorkspaces",
                api.url
            ))
            .header("content-type", "application/json")
            .bearer_auth(token)
            .body("{}")
            .send()
            .await?;
        assert_eq!(r.status(), 401);
        let body = r.text().await?;
        assert!(body.contains("agent credential"), "{body}");
        assert!(!body.contains(token.as_str()), "the token is not echoed");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_issue_and_revoke_credentials_and_revocation_ends_streams() -> Result<()> {
    let db = ctrl_testkit::test_database().await?;
    Seed::new(&db.pool).await?;
    let api = api(&db.pool, Duration::from_millis(300)).await?;
    let client = ctrl_testkit::http_client();
    let call = |method: &str, body: serde_json::Value| {
        client
            .post(format!("{}/ctrl.v1.RegionService/{method}", api.url))
            .header("content-type", "application/json")
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
    };

    // Bad bindings are named before anything is stored.
    for (body, field) in [
        (
            serde_json::json!({"kind": "AGENT_KIND_FRONTLINE", "platform": "dev", "region": "local", "cellId": "c1", "name": "x"}),
            "cell_id",
        ),
        (
            serde_json::json!({"kind": "AGENT_KIND_KRANE", "platform": "dev", "region": "local", "name": "x"}),
            "cell_id",
        ),
        (
            serde_json::json!({"kind": "AGENT_KIND_KRANE", "platform": "dev", "region": "Local", "cellId": "c1", "name": "x"}),
            "region",
        ),
        (
            serde_json::json!({"platform": "dev", "region": "local", "cellId": "c1", "name": "x"}),
            "kind",
        ),
    ] {
        let r = call("CreateAgentCredential", body).await?;
        assert_eq!(r.status(), 400);
        let text = r.text().await?;
        assert!(text.contains(field), "{field}: {text}");
    }
    assert!(ctrl_db::agent::list(&db.pool, None).await?.is_empty());

    // Issue: the token is in the answer only; the database keeps a digest.
    let issued: serde_json::Value = call(
        "CreateAgentCredential",
        serde_json::json!({"kind": "AGENT_KIND_KRANE", "platform": "dev", "region": "local", "cellId": "local-1", "name": "prod krane"}),
    )
    .await?
    .json()
    .await?;
    let token = issued["token"].as_str().expect("a token").to_owned();
    let id = issued["credential"]["id"]
        .as_str()
        .expect("an id")
        .to_owned();
    assert!(token.starts_with(agents::TOKEN_PREFIX) && token.len() > 60);
    assert_eq!(issued["credential"]["tokenHint"], token[token.len() - 4..]);
    let stored: Vec<(Vec<u8>,)> = sqlx::query_as("SELECT token_digest FROM agent_credentials")
        .fetch_all(&db.pool)
        .await?;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].0.len(), 32);
    let dump: Vec<(String,)> = sqlx::query_as(
        "SELECT CONCAT_WS('|', id, kind, platform, region, cell_id, name, token_hint, HEX(token_digest)) FROM agent_credentials",
    )
    .fetch_all(&db.pool)
    .await?;
    assert!(!dump[0].0.contains(&token[agents::TOKEN_PREFIX.len()..]));
    let listed: serde_json::Value = call("ListAgentCredentials", serde_json::json!({}))
        .await?
        .json()
        .await?;
    assert_eq!(listed["credentials"][0]["id"], id.as_str());
    assert!(!listed.to_string().contains(&token));

    // The agent works, and its watch is open.
    let agent = control(&api, &token, key("local", "local-1"))?;
    agent.heartbeat(pb::AgentBackend::Docker).await?;
    let mut watch = agent.watch(0).await?;
    assert!(watch.message().await?.is_some(), "a keepalive");
    let used: serde_json::Value = call("ListAgentCredentials", serde_json::json!({}))
        .await?
        .json()
        .await?;
    assert!(used["credentials"][0]["lastUsedAt"].as_str().is_some());

    // Revoked: calls are refused and the open stream ends.
    let revoked: serde_json::Value = call(
        "RevokeAgentCredential",
        serde_json::json!({ "credentialId": id }),
    )
    .await?
    .json()
    .await?;
    let at = revoked["credential"]["revokedAt"].clone();
    assert!(at.as_str().is_some(), "{revoked}");
    let err = agent.heartbeat(pb::AgentBackend::Docker).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match watch.message().await {
                Ok(Some(_)) => {}
                other => return other,
            }
        }
    })
    .await
    .expect("the watch ends within a few keepalives");
    let err = ended.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("revoked"), "{}", err.message());

    // Revoking again keeps the first time; only active credentials list by default.
    let again: serde_json::Value = call(
        "RevokeAgentCredential",
        serde_json::json!({ "credentialId": id }),
    )
    .await?
    .json()
    .await?;
    assert_eq!(again["credential"]["revokedAt"], at);
    let active: serde_json::Value = call("ListAgentCredentials", serde_json::json!({}))
        .await?
        .json()
        .await?;
    assert!(active["credentials"].as_array().is_none_or(Vec::is_empty));
    let all: serde_json::Value = call(
        "ListAgentCredentials",
        serde_json::json!({ "includeRevoked": true }),
    )
    .await?
    .json()
    .await?;
    assert_eq!(all["credentials"].as_array().map(Vec::len), Some(1));
    Ok(())
}

/// The krane of dev/local/local-1, with its own credential.
async fn local_agent(api: &Api, db: &MySqlPool) -> Result<Control> {
    control(
        api,
        &agent_token(db, "local-1").await?,
        key("local", "local-1"),
    )
}

/// A push from `control` for `request`.
fn push(request: &str, seq: u64, lines: &[&str], end: bool) -> pb::PushLogsRequest {
    pb::PushLogsRequest {
        cluster: None,
        request_id: request.into(),
        seq,
        batch: Some(pb::LogLines {
            lines: lines
                .iter()
                .map(|l| pb::InstanceLogLine {
                    instance: "web-0".into(),
                    stream: pb::LogStream::Stdout as i32,
                    timestamp: String::new(),
                    line: (*l).into(),
                })
                .collect(),
        }),
        end,
        error: String::new(),
    }
}

/// The next log request on `stream` (keepalives skipped).
async fn next_request(
    stream: &mut tonic::Streaming<pb::WatchLogRequestsResponse>,
) -> Result<pb::LogRequest> {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.message().await? {
                Some(pb::WatchLogRequestsResponse {
                    request: Some(request),
                }) => return Ok(request),
                Some(_) => {}
                None => anyhow::bail!("the log request stream ended"),
            }
        }
    })
    .await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_travel_over_the_agents_own_connection_and_only_its_own() -> Result<()> {
    let db = ctrl_testkit::test_database().await?;
    let seed = Seed::new(&db.pool).await?;
    let api = api(&db.pool, Duration::from_secs(15)).await?;
    let owner = local_agent(&api, &db.pool).await?;
    owner.heartbeat(pb::AgentBackend::Docker).await?;
    let intruder = control(
        &api,
        &credential(&db.pool, AgentKind::Krane, "other", "other-1").await?,
        key("other", "other-1"),
    )?;
    intruder.heartbeat(pb::AgentBackend::Docker).await?;
    let d = seed.deployment(&db.pool).await?;
    seed.set(&db.pool, &d, true, 1).await?;

    // No log route and no advertised address: the agents' table has no
    // column for one any more.
    let columns: Vec<(String,)> = sqlx::query_as(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = 'clusters'",
    )
    .fetch_all(&db.pool)
    .await?;
    assert!(!columns.iter().any(|(c,)| c.contains("url")), "{columns:?}");

    // The API's token does not open the relay.
    let err = control(&api, TOKEN, key("local", "local-1"))?
        .log_requests()
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");

    // A reader asks for the deployment's output through the public API.
    let mut owner_requests = owner.log_requests().await?;
    let mut intruder_requests = intruder.log_requests().await?;
    let channel = tonic::transport::Channel::from_shared(api.url.clone())?.connect_lazy();
    let mut deployments = pb::deployment_service_client::DeploymentServiceClient::new(channel);
    let mut read = tonic::Request::new(pb::StreamDeploymentLogsRequest {
        deployment_id: d.clone(),
        follow: true,
        ..Default::default()
    });
    read.metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse()?);
    let mut reader = deployments.stream_deployment_logs(read).await?.into_inner();

    // Only the region's own agent is asked.
    let request = next_request(&mut owner_requests).await?;
    assert_eq!(request.deployment_id, d);
    assert!(request.follow);
    assert!(
        tokio::time::timeout(
            Duration::from_millis(800),
            next_request(&mut intruder_requests)
        )
        .await
        .is_err(),
        "another region's agent is never handed the request"
    );

    // Another region's agent cannot answer it, even knowing its id.
    let err = intruder
        .push_logs(push(&request.request_id, 1, &["forged line"], false))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains("dev/other/other-1"),
        "{}",
        err.message()
    );

    // The owner's lines reach the reader once each, in order, named by
    // the region the request went to — a retried push is not repeated.
    assert!(
        !owner
            .push_logs(push(&request.request_id, 1, &["one", "two"], false))
            .await?
    );
    assert!(
        !owner
            .push_logs(push(&request.request_id, 1, &["one", "two"], false))
            .await?
    );
    assert!(
        !owner
            .push_logs(push(&request.request_id, 2, &["three"], false))
            .await?
    );
    let mut got = Vec::new();
    while got.len() < 3 {
        let m = tokio::time::timeout(Duration::from_secs(10), reader.message())
            .await??
            .expect("a line");
        assert_eq!((m.region.as_str(), m.instance.as_str()), ("local", "web-0"));
        got.push(m.line);
    }
    assert_eq!(got, ["one", "two", "three"], "never the forged line");

    // The reader leaves: the agent's next push is told to stop, and the
    // relay keeps nothing.
    drop(reader);
    let stopped = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if owner
                .push_logs(push(&request.request_id, 0, &[], false))
                .await?
            {
                return anyhow::Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(matches!(stopped, Ok(Ok(()))), "{stopped:?}");
    let left: (i64, i64) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM log_requests), (SELECT COUNT(*) FROM log_batches)",
    )
    .fetch_one(&db.pool)
    .await?;
    assert_eq!(left, (0, 0));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_falls_behind_bounds_what_the_relay_holds() -> Result<()> {
    let db = ctrl_testkit::test_database().await?;
    let seed = Seed::new(&db.pool).await?;
    let api = api(&db.pool, Duration::from_secs(15)).await?;
    let owner = local_agent(&api, &db.pool).await?;
    let cluster = owner.heartbeat(pb::AgentBackend::Docker).await?.cluster_id;
    let d = seed.deployment(&db.pool).await?;
    // A reader that filed a request and then reads nothing.
    let id = ctrl_core::id::generate(ctrl_core::id::IdKind::LogRequest, &mut rand::rng());
    let now = ctrl_runtime::now_ms();
    ctrl_db::log_relay::file(
        &db.pool,
        &ctrl_db::log_relay::NewRequest {
            id: &id,
            cluster_id: &cluster,
            deployment_id: &d,
            follow: true,
            tail_lines: 0,
        },
        now,
    )
    .await?;
    let max = ctrl_core::logs::MAX_UNREAD_BATCHES;
    for seq in 1..=max {
        assert!(!owner.push_logs(push(&id, seq, &["line"], false)).await?);
    }
    // One more waits for the reader (the server's push_wait), then ends
    // the request with the reason instead of piling up rows.
    let stop = owner
        .push_logs(push(&id, max + 1, &["line"], false))
        .await?;
    assert!(stop, "the push is told to stop");
    let request = ctrl_db::log_relay::get(&db.pool, &id).await?;
    assert_eq!(request.state, ctrl_db::log_relay::RequestState::Ended);
    assert!(
        request
            .error
            .as_deref()
            .is_some_and(|e| e.contains("fell behind")),
        "{request:?}"
    );
    assert_eq!(ctrl_db::log_relay::unread(&db.pool, &id).await?, max + 1);
    assert!(
        owner
            .push_logs(push(&id, max + 2, &["line"], false))
            .await?
    );
    assert_eq!(ctrl_db::log_relay::unread(&db.pool, &id).await?, max + 1);

    // Bad pushes are named.
    let err = owner
        .push_logs(push("lrq_nope", 1, &["x"], false))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("request_id"), "{}", err.message());
    let err = owner
        .push_logs(push(&id, 0, &["x"], false))
        .await
        .unwrap_err();
    assert!(err.message().contains("seq"), "{}", err.message());
    let long = "x".repeat(ctrl_core::logs::MAX_LINE_BYTES + 1);
    let err = owner
        .push_logs(push(&id, max + 3, &[&long], false))
        .await
        .unwrap_err();
    assert!(
        err.message().contains("batch.lines[0].line"),
        "{}",
        err.message()
    );
    Ok(())
}
