use std::time::Duration;

use anyhow::{Result, bail};
use bollard::query_parameters::{PushImageOptionsBuilder, TagImageOptionsBuilder};
use ctrl_testkit::process::ProcessId;
use ctrl_testkit::{Podman, Registry, http_client};
use futures::StreamExt;

#[tokio::test]
async fn the_registry_answers_the_v2_api() -> Result<()> {
    let registry = Registry::start().await?;
    let response = http_client()
        .get(format!("{}/v2/", registry.url()))
        .send()
        .await?;
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let catalog: serde_json::Value = http_client()
        .get(format!("{}/v2/_catalog", registry.url()))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(catalog["repositories"], serde_json::json!([]));

    let pid = registry.pid();
    drop(registry);
    assert!(
        ProcessId::of(pid).is_none(),
        "docker-registry outlived its handle"
    );
    Ok(())
}

#[tokio::test]
async fn podman_pushes_an_image_to_the_registry() -> Result<()> {
    let (registry, podman) = tokio::try_join!(Registry::start(), Podman::start())?;
    podman.import_busybox_image("localhost/hello:1")?;
    let docker = podman.docker();
    let repo = format!("{}/hello", registry.host_port());
    docker
        .tag_image(
            "localhost/hello:1",
            Some(TagImageOptionsBuilder::new().repo(&repo).tag("1").build()),
        )
        .await?;
    let mut push = docker.push_image(
        &repo,
        Some(PushImageOptionsBuilder::new().tag("1").build()),
        None,
    );
    let pushed = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(info) = push.next().await {
            let info = info?;
            if let Some(error) = info.error_detail {
                bail!("push failed: {error:?}");
            }
        }
        Ok(())
    })
    .await;
    match pushed {
        Ok(result) => result?,
        Err(_) => bail!("the push did not finish within 60 s"),
    }

    let catalog: serde_json::Value = http_client()
        .get(format!("{}/v2/_catalog", registry.url()))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(catalog["repositories"], serde_json::json!(["hello"]));
    let tags: serde_json::Value = http_client()
        .get(format!("{}/v2/hello/tags/list", registry.url()))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(tags["tags"], serde_json::json!(["1"]));
    Ok(())
}
