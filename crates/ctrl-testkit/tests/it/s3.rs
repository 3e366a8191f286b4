use std::time::Duration;

use anyhow::{Context, Result};
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use ctrl_testkit::process::ProcessId;
use ctrl_testkit::{S3Server, http_client};

#[tokio::test]
async fn s3s_fs_stores_objects_and_checks_signatures() -> Result<()> {
    let s3 = S3Server::start().await?;
    s3.create_bucket("artifacts").await?;
    let client = s3.client();
    client
        .put_object()
        .bucket("artifacts")
        .key("builds/app.tar")
        .body(ByteStream::from_static(b"hello, s3"))
        .send()
        .await?;
    let object = client
        .get_object()
        .bucket("artifacts")
        .key("builds/app.tar")
        .send()
        .await?;
    let body = object.body.collect().await?.into_bytes();
    assert_eq!(&body[..], b"hello, s3");

    let wrong = s3.client_with(s3.access_key(), "not-the-secret");
    let refused = wrong
        .get_object()
        .bucket("artifacts")
        .key("builds/app.tar")
        .send()
        .await
        .expect_err("a wrong secret must be refused");
    assert_eq!(
        refused.code(),
        Some("SignatureDoesNotMatch"),
        "{}",
        aws_sdk_s3::error::DisplayErrorContext(&refused)
    );

    let pid = s3.pid();
    drop(s3);
    assert!(ProcessId::of(pid).is_none(), "s3s-fs outlived its handle");
    Ok(())
}

#[tokio::test]
async fn a_presigned_put_url_works_with_a_plain_http_client() -> Result<()> {
    let s3 = S3Server::start().await?;
    s3.create_bucket("uploads").await?;
    let client = s3.client();
    let presigned = client
        .put_object()
        .bucket("uploads")
        .key("source.tar.gz")
        .presigned(PresigningConfig::expires_in(Duration::from_secs(300))?)
        .await?;
    let mut put = http_client().put(presigned.uri());
    for (name, value) in presigned.headers() {
        put = put.header(name, value);
    }
    let response = put.body("the source").send().await?;
    let status = response.status();
    let text = response.text().await?;
    assert!(status.is_success(), "{status}: {text}");

    let object = client
        .get_object()
        .bucket("uploads")
        .key("source.tar.gz")
        .send()
        .await
        .context("read back the uploaded object")?;
    assert_eq!(
        &object.body.collect().await?.into_bytes()[..],
        b"the source"
    );

    // The signature covers the key: the same URL for another key is refused.
    let other = presigned
        .uri()
        .replace("/uploads/source.tar.gz", "/uploads/other.tar.gz");
    let response = http_client().put(other).body("evil").send().await?;
    let status = response.status();
    let text = response.text().await?;
    assert_eq!(status, reqwest::StatusCode::FORBIDDEN, "{text}");
    assert!(text.contains("SignatureDoesNotMatch"), "{text}");
    Ok(())
}
