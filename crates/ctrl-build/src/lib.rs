//! Builds of deployments from source.
//!
//! - [`context`]: packing a directory like `docker build` sends it (the
//!   CLI), and preparing an untrusted archive — an upload or a GitHub
//!   tarball — into a bounded, re-rooted context whose Dockerfile exists.
//! - [`store`] (feature `s3`): uploaded contexts in S3 through presigned
//!   PUT URLs scoped to an app.
//! - [`builder`] (feature `backends`): the [`builder::Builder`] trait with
//!   its [`builder::Capabilities`], like `ctrl_provider::Provider`; the
//!   pipeline's building phase calls it. Backends: [`docker`] (a Docker
//!   Engine API: Docker, or podman's compatible service) and [`depot`]
//!   (features `backends` + `s3`: Depot's BuildKit machines, driven
//!   through [`buildkit`], BuildKit's gRPC API with its session).
//! - [`registry`] (feature `backends`): where images are pushed, and the
//!   digest a pushed tag points to.
//!
//! Every backend is idempotent per build id: a retried build reuses what an
//! earlier attempt pushed or built, so a crash never yields two images.

pub mod context;

#[cfg(feature = "backends")]
pub mod builder;
#[cfg(feature = "backends")]
pub mod buildkit;
#[cfg(all(feature = "backends", feature = "s3"))]
pub mod depot;
#[cfg(feature = "backends")]
pub mod docker;
#[cfg(feature = "backends")]
pub mod registry;
#[cfg(feature = "s3")]
pub mod store;

/// An error and its sources on one line (SDK and transport errors say
/// little at the top).
#[cfg(any(feature = "s3", feature = "backends"))]
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
