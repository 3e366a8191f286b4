//! Integration tests of ctrl-build against real components: podman's
//! Docker-compatible API builds, Debian's docker-registry receives the
//! pushes, s3s-fs stores the uploads.

mod depot;
mod docker;
mod store;

use std::path::Path;

/// The example app shipped in `examples/hello`.
pub(crate) fn hello_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/hello")
}

/// A request for `tag` of `ctrl/acme/hello` on the registry at `host`, with
/// one build argument.
pub(crate) fn request(
    host: &str,
    build_id: &str,
    tag: &str,
    greeting: &str,
) -> ctrl_build::builder::BuildRequest {
    ctrl_build::builder::BuildRequest {
        build_id: build_id.into(),
        project_id: "proj_hello".into(),
        image: ctrl_build::builder::ImageName {
            registry: host.into(),
            path: "ctrl/acme/hello".into(),
            tag: tag.into(),
        },
        build_args: [("GREETING".into(), greeting.into())].into(),
        platform: "linux/amd64".into(),
        labels: Default::default(),
        secrets: Default::default(),
    }
}

/// Runs a build on any backend, collecting its events.
pub(crate) async fn run_build(
    b: &dyn ctrl_build::builder::Builder,
    req: &ctrl_build::builder::BuildRequest,
    ctx: ctrl_build::context::Context,
    cancel: &tokio_util::sync::CancellationToken,
) -> (
    Result<ctrl_build::builder::Built, ctrl_build::builder::BuildError>,
    Vec<ctrl_build::builder::BuildEvent>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    let collect = tokio::spawn(async move {
        let mut events = Vec::new();
        while let Some(e) = rx.recv().await {
            events.push(e);
        }
        events
    });
    let result = b.build(req, ctx, &tx, cancel).await;
    drop(tx);
    (result, collect.await.unwrap_or_default())
}
