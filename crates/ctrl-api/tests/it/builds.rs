//! BuildService and CreateDeployment's sources to build, against a real S3
//! (s3s-fs) and MariaDB.

use std::collections::HashMap;
use std::time::SystemTime;

use anyhow::Result;
use ctrl_api::error::ApiError;
use ctrl_api::services::{build as svc, deployment};
use ctrl_api::state::AppState;
use ctrl_build::store::{CONTENT_TYPE, ContextStore, StoreConfig};
use ctrl_proto::ctrl::v1 as pb;
use ctrl_testkit::{S3Server, http_client};

use crate::state;

pub(crate) const BUCKET: &str = "contexts";

/// The store of a fresh S3 server (its bucket created), with a 1 MiB limit.
pub(crate) async fn store() -> Result<(S3Server, ContextStore)> {
    let s3 = S3Server::start().await?;
    let store = ContextStore::new(&StoreConfig {
        endpoint: s3.endpoint_url(),
        bucket: BUCKET.into(),
        access_key_id: s3.access_key().into(),
        secret_access_key: s3.secret_key().into(),
        force_path_style: true,
        max_upload_bytes: 1 << 20,
        ..StoreConfig::default()
    });
    store.ensure_bucket().await?;
    Ok((s3, store))
}

/// Uploads `bytes` through a URL from GenerateUploadURL; returns its key.
pub(crate) async fn upload(s: &AppState, app: &pb::App, bytes: Vec<u8>) -> Result<String> {
    let u = svc::generate_upload_url(
        s,
        pb::GenerateUploadUrlRequest {
            app_id: app.id.clone(),
            size_bytes: i64::try_from(bytes.len())?,
        },
    )
    .await?;
    http_client()
        .put(&u.upload_url)
        .header("content-type", CONTENT_TYPE)
        .body(bytes)
        .send()
        .await?
        .error_for_status()?;
    Ok(u.build_context_path)
}

fn field(e: ApiError) -> String {
    match e {
        ApiError::InvalidArgument { field, .. } => field,
        other => panic!("expected invalid_argument, got {other:?}"),
    }
}

#[tokio::test]
async fn upload_urls_are_bounded_scoped_and_refused_without_a_store() -> Result<()> {
    let plain = state().await?;
    let app = crate::fixtures::app(&plain, true).await?.app;
    let req = |size| pb::GenerateUploadUrlRequest {
        app_id: app.id.clone(),
        size_bytes: size,
    };
    assert_eq!(
        svc::generate_upload_url(&plain, req(10)).await.unwrap_err(),
        ApiError::FailedPrecondition(
            "this server takes no build contexts ([build_contexts] is not configured)".into()
        )
    );

    let (_s3, store) = store().await?;
    let s = state().await?.with_build_contexts(store);
    let app = crate::fixtures::app(&s, true).await?.app;
    let req = |size| pb::GenerateUploadUrlRequest {
        app_id: app.id.clone(),
        size_bytes: size,
    };
    for size in [0, -1, (1 << 20) + 1] {
        let e = svc::generate_upload_url(&s, req(size)).await.unwrap_err();
        assert_eq!(field(e), "size_bytes", "{size}");
    }
    let u = svc::generate_upload_url(&s, req(1000)).await?;
    assert!(
        u.build_context_path
            .starts_with(&format!("contexts/{}/{}/", app.workspace_id, app.id)),
        "{}",
        u.build_context_path
    );
    assert_eq!(u.max_size_bytes, 1 << 20);
    let now = i64::try_from(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)?
            .as_millis(),
    )?;
    assert!(u.expires_at > now, "expires in the future");
    let missing = svc::generate_upload_url(
        &s,
        pb::GenerateUploadUrlRequest {
            app_id: "app_0000000000000000".into(),
            size_bytes: 10,
        },
    )
    .await;
    assert!(matches!(missing, Err(ApiError::NotFound(_))), "{missing:?}");
    Ok(())
}

fn context_request(app: &pb::App, key: &str) -> pb::CreateDeploymentRequest {
    pb::CreateDeploymentRequest {
        app_id: app.id.clone(),
        environment_slug: "production".into(),
        source: Some(pb::create_deployment_request::Source::ContextBuild(
            pb::ContextSource {
                build_context_path: key.into(),
                dockerfile_path: String::new(),
            },
        )),
        ..Default::default()
    }
}

#[tokio::test]
async fn bad_sources_are_refused_naming_the_field_and_nothing_is_created() -> Result<()> {
    let (_s3, store) = store().await?;
    let s = state().await?.with_build_contexts(store);
    let fx = crate::fixtures::app(&s, true).await?;
    let app = fx.app;
    let key = upload(&s, &app, b"not even a tarball".to_vec()).await?;

    // Never uploaded / another app's / made up.
    let never = format!("contexts/{}/{}/never.tar.gz", app.workspace_id, app.id);
    let e = deployment::create_deployment(&s, context_request(&app, &never))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ApiError::FailedPrecondition(m) if m.contains("was not uploaded")),
        "{e:?}"
    );
    for foreign in [
        format!(
            "contexts/{}/app_0000000000000001/x.tar.gz",
            app.workspace_id
        ),
        "contexts/../secret.tar.gz".to_owned(),
        String::new(),
    ] {
        let e = deployment::create_deployment(&s, context_request(&app, &foreign))
            .await
            .unwrap_err();
        assert_eq!(field(e), "context_build.build_context_path", "{foreign}");
    }
    let mut escaping = context_request(&app, &key);
    if let Some(pb::create_deployment_request::Source::ContextBuild(c)) = &mut escaping.source {
        c.dockerfile_path = "../../etc/Dockerfile".into();
    }
    assert_eq!(
        field(
            deployment::create_deployment(&s, escaping)
                .await
                .unwrap_err()
        ),
        "context_build.dockerfile_path"
    );
    for (args, expected) in [
        (
            HashMap::from([("1BAD".to_owned(), "x".to_owned())]),
            "build_args[\"1BAD\"]",
        ),
        (
            HashMap::from([("OK".to_owned(), "x".repeat(5000))]),
            "build_args[\"OK\"]",
        ),
        (
            (0..65).map(|n| (format!("A{n}"), String::new())).collect(),
            "build_args",
        ),
    ] {
        let mut r = context_request(&app, &key);
        r.build_args = args;
        assert_eq!(
            field(deployment::create_deployment(&s, r).await.unwrap_err()),
            expected
        );
    }
    let mut image_with_args = context_request(&app, &key);
    image_with_args.source = Some(pb::create_deployment_request::Source::Image(
        pb::ImageSource {
            image: "localhost/demo:1".into(),
        },
    ));
    image_with_args.build_args = HashMap::from([("A".to_owned(), "b".to_owned())]);
    assert_eq!(
        field(
            deployment::create_deployment(&s, image_with_args)
                .await
                .unwrap_err()
        ),
        "build_args"
    );
    for (repository, installation, expected) in [
        ("not a repo", 0, "git_build.repository"),
        ("acme/web/extra", 0, "git_build.repository"),
        ("acme/web", -4, "git_build.installation_id"),
    ] {
        let mut r = context_request(&app, &key);
        r.source = Some(pb::create_deployment_request::Source::GitBuild(
            pb::GitSource {
                repository: repository.into(),
                installation_id: installation,
                ..Default::default()
            },
        ));
        assert_eq!(
            field(deployment::create_deployment(&s, r).await.unwrap_err()),
            expected
        );
    }
    assert_eq!(
        ctrl_db::deployment::count_for_app(s.db(), &app.id).await?,
        0,
        "nothing was created"
    );
    Ok(())
}
