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
