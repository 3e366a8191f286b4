//! One caller cannot starve the others: watchers of a deployment share one
//! feed, each token has a request rate and a cap on open streams, and
//! requests without a valid token share one small rate.

use std::time::Duration;

use anyhow::Result;
use ctrl_api::limits::LimitsConfig;
use ctrl_api::state::AppState;
use ctrl_core::status::DeploymentStatus;
use ctrl_proto::ctrl::v1 as pb;
use pb::deployment_service_client::DeploymentServiceClient;
use tonic::transport::Channel;

use crate::{TOKEN, fixtures, serve, state};

fn authed<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    req
}

async fn deploying(s: &AppState) -> Result<String> {
    let app = fixtures::app(s, true).await?;
    fixtures::deployment(
        s,
        &app.app,
        &app.production.id,
        None,
        DeploymentStatus::Deploying,
        "w",
    )
    .await
}

/// A gRPC client on its own HTTP/2 connection.
async fn client(base: &str) -> Result<DeploymentServiceClient<Channel>> {
    Ok(DeploymentServiceClient::new(
        Channel::from_shared(base.to_owned())?.connect().await?,
    ))
}

async fn watch(
    client: &mut DeploymentServiceClient<Channel>,
    id: &str,
) -> Result<tonic::Streaming<pb::WatchDeploymentResponse>, tonic::Status> {
    let req = pb::WatchDeploymentRequest {
        deployment_id: id.into(),
    };
    Ok(client
        .watch_deployment(authed(req, TOKEN))
        .await?
        .into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_watchers_share_one_feed_and_every_one_sees_the_change() -> Result<()> {
    let s = state().await?.with_limits(&LimitsConfig {
        streams_per_token: 2000,
        requests_per_second: 10_000,
        burst: 10_000,
        ..LimitsConfig::default()
    });
    let id = deploying(&s).await?;
    let base = serve(s.clone()).await?;
    // Ten connections of a hundred HTTP/2 streams each.
    let mut streams = Vec::new();
    for _ in 0..10 {
        let mut client = client(&base).await?;
        for _ in 0..100 {
            let mut stream = watch(&mut client, &id).await?;
            let first = stream.message().await?.expect("the current state");
            assert_eq!(
                first.deployment.map(|d| d.status),
                Some(pb::DeploymentStatus::Deploying as i32)
            );
            streams.push(stream);
        }
    }
    assert_eq!(s.watch_feeds().running(), 1, "one feed for 1000 watchers");
    assert_eq!(s.limits().open_streams(0), 1000);

    // Unary calls still answer meanwhile.
    let mut client = client(&base).await?;
    let got = client
        .get_deployment(authed(
            pb::GetDeploymentRequest {
                deployment_id: id.clone(),
            },
            TOKEN,
        ))
        .await?;
    assert!(got.into_inner().deployment.is_some());

    // One change reaches every watcher, and ends its stream (ready).
    ctrl_db::deployment::compare_and_set_status(
        s.db(),
        &id,
        DeploymentStatus::Deploying,
        DeploymentStatus::Ready,
        9,
    )
    .await?;
    for stream in &mut streams {
        let next = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await??
            .expect("the change");
        assert_eq!(
            next.deployment.map(|d| d.status),
            Some(pb::DeploymentStatus::Ready as i32)
        );
        assert!(stream.message().await?.is_none(), "ends at ready");
    }
    drop(streams);
    for _ in 0..100 {
        if s.watch_feeds().running() == 0 && s.limits().open_streams(0) == 0 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!(
        "{} feeds and {} streams left",
        s.watch_feeds().running(),
        s.limits().open_streams(0)
    )
}

#[tokio::test]
async fn a_token_has_a_cap_on_open_streams_and_a_rate() -> Result<()> {
    let s = state().await?.with_limits(&LimitsConfig {
        streams_per_token: 3,
        requests_per_second: 1,
        burst: 20,
        ..LimitsConfig::default()
    });
    let id = deploying(&s).await?;
    let base = serve(s.clone()).await?;
    let mut client = client(&base).await?;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(watch(&mut client, &id).await?);
    }
    let refused = watch(&mut client, &id).await.unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(refused.message().contains("streams open"), "{refused:?}");
    drop(open.pop());
    let mut again = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if let Ok(stream) = watch(&mut client, &id).await {
            again = Some(stream);
            break;
        }
    }
    assert!(again.is_some(), "a closed stream frees its slot");

    // The burst is spent quickly; then the token waits, told how long.
    let http = ctrl_testkit::http_client();
    let mut exhausted = None;
    for _ in 0..40 {
        let r = http
            .post(format!("{base}/ctrl.v1.WorkspaceService/ListWorkspaces"))
            .header("content-type", "application/json")
            .bearer_auth(TOKEN)
            .body("{}")
            .send()
            .await?;
        if r.status() == 429 {
            exhausted = Some(r.text().await?);
            break;
        }
    }
    let body = exhausted.expect("the rate limit was reached");
    assert!(
        body.contains("resource_exhausted") && body.contains("retry in"),
        "{body}"
    );
    // The other token is not affected.
    let other = http
        .post(format!("{base}/ctrl.v1.WorkspaceService/ListWorkspaces"))
        .header("content-type", "application/json")
        .bearer_auth("second-token-abcdefghijklmnop")
        .body("{}")
        .send()
        .await?;
    assert_eq!(other.status(), 200);
    Ok(())
}

#[tokio::test]
async fn a_flood_without_valid_tokens_leaves_the_api_to_its_users() -> Result<()> {
    let s = state().await?.with_limits(&LimitsConfig {
        unauthenticated_per_second: 5,
        ..LimitsConfig::default()
    });
    let base = serve(s).await?;
    let http = ctrl_testkit::http_client();
    let started = std::time::Instant::now();
    let flood = (0..300).map(|i| {
        http.post(format!("{base}/ctrl.v1.WorkspaceService/ListWorkspaces"))
            .header("content-type", "application/json")
            .bearer_auth(format!("not-a-token-{i}"))
            .body("{}")
            .send()
    });
    let mut refused = 0;
    let mut unauthenticated = 0;
    for r in futures::future::join_all(flood).await {
        match r?.status().as_u16() {
            429 => refused += 1,
            401 => unauthenticated += 1,
            other => anyhow::bail!("unexpected {other}"),
        }
    }
    println!("300 bad-token requests: {unauthenticated} checked, {refused} refused by the rate");
    // The rate's burst (5), then 5 a second for as long as the flood took.
    let allowed = 5 + 5 * (started.elapsed().as_secs() + 1);
    assert!(
        unauthenticated <= allowed,
        "{unauthenticated} checked, more than {allowed}"
    );
    assert_eq!(refused + unauthenticated, 300);
    let ok = http
        .post(format!("{base}/ctrl.v1.WorkspaceService/ListWorkspaces"))
        .header("content-type", "application/json")
        .bearer_auth(TOKEN)
        .body("{}")
        .send()
        .await?;
    assert_eq!(ok.status(), 200, "a valid token still gets in");
    Ok(())
}
