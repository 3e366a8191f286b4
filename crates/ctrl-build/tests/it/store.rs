use std::time::{Duration, SystemTime};

use anyhow::Result;
use ctrl_build::context;
use ctrl_build::store::{CONTENT_TYPE, ContextStore, StoreConfig, StoreError};
use ctrl_testkit::{S3Server, http_client};

const BUCKET: &str = "contexts";

async fn store(ttl_seconds: u64) -> Result<(S3Server, ContextStore)> {
    let s3 = S3Server::start().await?;
    let config = StoreConfig {
        endpoint: s3.endpoint_url(),
        bucket: BUCKET.into(),
        access_key_id: s3.access_key().into(),
        secret_access_key: s3.secret_key().into(),
        force_path_style: true,
        max_upload_bytes: 64 << 10,
        upload_url_ttl_seconds: ttl_seconds,
        ..StoreConfig::default()
    };
    assert!(config.problems().is_empty(), "{:?}", config.problems());
    let store = ContextStore::new(&config);
    store.ensure_bucket().await?;
    store.ensure_bucket().await?; // idempotent
    Ok((s3, store))
}

async fn put(url: &str, body: Vec<u8>, content_type: &str) -> Result<reqwest::StatusCode> {
    Ok(http_client()
        .put(url)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await?
        .status())
}

#[tokio::test]
async fn an_upload_round_trips_and_is_scoped_to_its_app() -> Result<()> {
    let (_s3, store) = store(900).await?;
    let packed = context::pack(&crate::hello_dir(), "")?;
    let size = packed.gz.len() as u64;
    let upload = store
        .presign_upload("ws_1", "app_1", "n1", size, SystemTime::now())
        .await?;
    assert!(
        upload.key.starts_with("contexts/ws_1/app_1/"),
        "{}",
        upload.key
    );
    assert_eq!(
        put(&upload.url, packed.gz.clone(), CONTENT_TYPE).await?,
        200
    );
    assert_eq!(store.check("ws_1", "app_1", &upload.key).await?, size);
    assert_eq!(store.get(&upload.key).await?, packed.gz);

    // Another app's deployment cannot use it, nor a made-up key.
    for (ws, app, key) in [
        ("ws_1", "app_2", upload.key.as_str()),
        ("ws_2", "app_1", upload.key.as_str()),
        ("ws_1", "app_1", "contexts/ws_1/app_1/../app_2/x.tar.gz"),
    ] {
        let e = store.check(ws, app, key).await.unwrap_err();
        assert!(matches!(e, StoreError::Invalid(_)), "{ws}/{app}/{key}: {e}");
    }
    let e = store
        .check("ws_1", "app_1", "contexts/ws_1/app_1/never.tar.gz")
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Missing { .. }), "{e}");
    Ok(())
}

#[tokio::test]
async fn the_url_enforces_size_type_and_limit() -> Result<()> {
    let (_s3, store) = store(900).await?;
    let e = store
        .presign_upload("ws_1", "app_1", "big", (64 << 10) + 1, SystemTime::now())
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("size_bytes must be between 1 and 65536"),
        "{e}"
    );

    let upload = store
        .presign_upload("ws_1", "app_1", "n2", 100, SystemTime::now())
        .await?;
    // More bytes than signed for, or another content type: refused, nothing stored.
    assert_ne!(put(&upload.url, vec![7; 5000], CONTENT_TYPE).await?, 200);
    assert_ne!(put(&upload.url, vec![7; 100], "text/plain").await?, 200);
    assert!(matches!(
        store.check("ws_1", "app_1", &upload.key).await,
        Err(StoreError::Missing { .. })
    ));
    Ok(())
}

#[tokio::test]
async fn an_expired_url_is_refused() -> Result<()> {
    let (_s3, store) = store(10).await?;
    // Signed 11 s ago with a 10 s lifetime.
    let then = SystemTime::now() - Duration::from_secs(11);
    let upload = store
        .presign_upload("ws_1", "app_1", "old", 3, then)
        .await?;
    assert_ne!(put(&upload.url, vec![1, 2, 3], CONTENT_TYPE).await?, 200);
    assert!(matches!(
        store.check("ws_1", "app_1", &upload.key).await,
        Err(StoreError::Missing { .. })
    ));
    Ok(())
}
