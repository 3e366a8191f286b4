//! Deploying from source on the real stack: `ctrl deploy --context
//! examples/hello` packs and uploads the directory, the worker builds it on
//! podman and pushes it to a real registry, krane pulls it by digest and
//! runs it; a second deploy of the same context is served by the layer
//! cache; a failing Dockerfile fails the deploy with its step and output;
//! `ctrl logs --build` prints the build afterwards.

use std::path::Path;

use anyhow::Result;

use crate::support::{Stack, deployment_id, fetch, instance_url};

fn hello() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/hello")
        .display()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_is_built_pushed_and_served() -> Result<()> {
    let stack = Stack::start().await?;
    stack.ok(&["workspaces", "create", "acme"]).await?;
    stack.ok(&["projects", "create", "shop"]).await?;
    stack
        .ok(&["apps", "create", "web", "--project", "shop"])
        .await?;

    let hello = hello();
    let first = stack
        .ok(&[
            "deploy",
            "--app",
            "web",
            "--context",
            &hello,
            "--build-arg",
            "GREETING=built from a directory",
        ])
        .await?;
    assert!(
        first.stderr.contains("Packed") || first.stdout.contains("Packed"),
        "{first}"
    );
    assert!(
        first.stdout.contains("STEP") || first.stderr.contains("STEP"),
        "build output shown: {first}"
    );
    let url = instance_url(&first.stdout)?;
    assert_eq!(
        fetch(&format!("{url}/greeting.txt")).await?.trim(),
        "built from a directory"
    );
    let id = deployment_id(&first.stdout)?;
    let shown = stack.json(&["deployments", "get", &id]).await?;
    let image = shown["image"].as_str().unwrap_or_default().to_owned();
    assert!(
        image.contains("/ctrl/acme/shop-web@sha256:"),
        "pinned by digest: {shown}"
    );

    // The same context again: every layer from the cache.
    let second = stack
        .ok(&[
            "deploy",
            "--app",
            "web",
            "--context",
            &hello,
            "--build-arg",
            "GREETING=built from a directory",
        ])
        .await?;
    let all = format!("{}{}", second.stdout, second.stderr);
    assert!(
        all.contains("Using cache"),
        "the second build used the cache: {second}"
    );

    // The build's output stays readable.
    let logs = stack.ok(&["logs", "--build", &id]).await?;
    assert!(logs.stdout.contains("STEP 1/"), "{logs}");
    assert!(logs.stdout.contains("Pushed"), "{logs}");

    // A failing step fails the deploy with the step and its last output.
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("Dockerfile"),
        "FROM busybox\nRUN echo 'tests: 3 failed' && exit 7\n",
    )?;
    let failed = stack
        .ctrl(&[
            "deploy",
            "--app",
            "web",
            "--context",
            &dir.path().display().to_string(),
        ])
        .await?;
    assert!(!failed.success(), "{failed}");
    assert!(failed.stderr.contains("Build failed: STEP 2/"), "{failed}");
    assert!(failed.stderr.contains("tests: 3 failed"), "{failed}");
    Ok(())
}
