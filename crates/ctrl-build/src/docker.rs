//! The Docker backend: builds through a Docker Engine API (`POST /build`,
//! Docker or podman's compatible service), tags the result with the build
//! id and pushes it to the configured registry; the digest comes from the
//! registry itself.
//!
//! Resuming after a crash never produces a second image: the registry is
//! asked first (an earlier attempt may have pushed), then the engine (an
//! earlier attempt may have built it: the image carries the build id as a
//! label), and only then is the context built.

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::query_parameters::{BuildImageOptionsBuilder, PushImageOptionsBuilder};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::builder::{
    BuildError, BuildEvent, BuildRequest, Builder, Built, Capabilities, Events, HowBuilt, step_of,
};
use crate::context::Context;
use crate::registry::Registry;

/// Label carrying the build id on every image ctrl builds.
pub const BUILD_ID_LABEL: &str = "ctrl.build.id";

/// How long an engine call other than the build itself may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Builds on a Docker Engine API.
#[derive(Debug)]
pub struct DockerBuilder {
    docker: Docker,
    registry: Registry,
    capabilities: Capabilities,
}

impl DockerBuilder {
    /// Connects to the engine at `socket` (a unix socket path, optionally
    /// `unix://`-prefixed). `build_timeout` bounds one build or push stream.
    pub fn new(
        socket: &str,
        build_timeout: Duration,
        registry: Registry,
        platform: &str,
    ) -> Result<Self, String> {
        let path = socket.strip_prefix("unix://").unwrap_or(socket);
        if path.is_empty() {
            return Err("build.docker.socket is empty".into());
        }
        let docker = Docker::connect_with_unix(
            path,
            build_timeout.as_secs().max(1),
            bollard::API_DEFAULT_VERSION,
        )
        .map_err(|e| format!("build.docker.socket {socket:?}: {e}"))?;
        Ok(Self {
            docker,
            registry,
            capabilities: Capabilities {
                platforms: vec![platform.to_owned()],
                layer_cache: true,
                secrets: false,
            },
        })
    }

    /// The engine's client (for tests and health checks).
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    fn backend(operation: &'static str, e: impl std::fmt::Display) -> BuildError {
        BuildError::Backend {
            operation,
            message: e.to_string(),
        }
    }

    /// Whether the engine has our image with this build's label.
    async fn built_earlier(&self, req: &BuildRequest) -> Result<bool, BuildError> {
        let inspect =
            tokio::time::timeout(CALL_TIMEOUT, self.docker.inspect_image(&req.image.tagged()))
                .await
                .map_err(|_| Self::backend("inspect the image", "timed out"))?;
        match inspect {
            Ok(image) => Ok(image
                .config
                .and_then(|c| c.labels)
                .and_then(|l| l.get(BUILD_ID_LABEL).cloned())
                .is_some_and(|id| id == req.build_id)),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(false),
            Err(e) => Err(Self::backend("inspect the image", e)),
        }
    }

    async fn run_build(
        &self,
        req: &BuildRequest,
        context: Context,
        events: &Events,
        cancel: &CancellationToken,
    ) -> Result<(), BuildError> {
        let mut labels: HashMap<String, String> = req.labels.clone().into_iter().collect();
        labels.insert(BUILD_ID_LABEL.into(), req.build_id.clone());
        let args: HashMap<String, String> = req.build_args.clone().into_iter().collect();
        let options = BuildImageOptionsBuilder::new()
            .dockerfile(&context.dockerfile)
            .t(&req.image.tagged())
            .buildargs(&args)
            .labels(&labels)
            .platform(&req.platform)
            .rm(true)
            .forcerm(true)
            .build();
        let body = bollard::body_full(context.tar.into());
        let mut stream = self.docker.build_image(options, None, Some(body));
        let mut step = String::from("the build");
        let mut partial = String::new();
        loop {
            let item = tokio::select! {
                () = cancel.cancelled() => return Err(BuildError::Cancelled),
                item = stream.next() => item,
            };
            let Some(item) = item else { break };
            let info = match item {
                Ok(info) => info,
                Err(bollard::errors::Error::DockerStreamError { error }) => {
                    return Err(BuildError::StepFailed {
                        step,
                        message: error,
                    });
                }
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code,
                    message,
                }) if status_code < 500 => {
                    return Err(BuildError::StepFailed { step, message });
                }
                Err(e) => return Err(Self::backend("build", e)),
            };
            if let Some(error) = info.error_detail.and_then(|d| d.message) {
                return Err(BuildError::StepFailed {
                    step,
                    message: error,
                });
            }
            let Some(text) = info.stream.or(info.status) else {
                continue;
            };
            partial.push_str(&text);
            while let Some(end) = partial.find('\n') {
                let line: String = partial.drain(..=end).collect();
                let line = line.trim_end().to_owned();
                if let Some(s) = step_of(&line) {
                    step = s.to_owned();
                    let _ = events.send(BuildEvent::Step(step.clone())).await;
                }
                let _ = events.send(BuildEvent::Line(line)).await;
            }
        }
        if !partial.trim().is_empty() {
            let _ = events
                .send(BuildEvent::Line(partial.trim_end().to_owned()))
                .await;
        }
        Ok(())
    }

    async fn push(
        &self,
        req: &BuildRequest,
        events: &Events,
        cancel: &CancellationToken,
    ) -> Result<(), BuildError> {
        let image = req.image.tagged();
        let _ = events
            .send(BuildEvent::Step(format!("Pushing {image}")))
            .await;
        let credentials = self.registry.credentials().map(|(u, p)| DockerCredentials {
            username: Some(u.to_owned()),
            password: Some(p.to_owned()),
            serveraddress: Some(self.registry.host().to_owned()),
            ..Default::default()
        });
        let mut stream = self.docker.push_image(
            &req.image.repository(),
            Some(PushImageOptionsBuilder::new().tag(&req.image.tag).build()),
            credentials,
        );
        let failed = |message: String, transient: bool| BuildError::Push {
            image: image.clone(),
            message,
            transient,
        };
        loop {
            let item = tokio::select! {
                () = cancel.cancelled() => return Err(BuildError::Cancelled),
                item = stream.next() => item,
            };
            let Some(item) = item else { break };
            let info = match item {
                Ok(info) => info,
                Err(bollard::errors::Error::DockerStreamError { error }) => {
                    let transient = is_transient_push_error(&error);
                    return Err(failed(error, transient));
                }
                Err(e) => return Err(failed(e.to_string(), true)),
            };
            if let Some(error) = info.error_detail.and_then(|d| d.message) {
                let transient = is_transient_push_error(&error);
                return Err(failed(error, transient));
            }
            if let Some(status) = info.status {
                let _ = events.send(BuildEvent::Line(status)).await;
            }
        }
        Ok(())
    }
}

/// Registry 5xx and connection trouble are worth another attempt;
/// authentication and name errors are not.
fn is_transient_push_error(error: &str) -> bool {
    let e = error.to_ascii_lowercase();
    !(e.contains("unauthorized")
        || e.contains("authentication required")
        || e.contains("denied")
        || e.contains("invalid reference")
        || e.contains("name unknown"))
}

#[async_trait::async_trait]
impl Builder for DockerBuilder {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    async fn build(
        &self,
        req: &BuildRequest,
        context: Context,
        events: &Events,
        cancel: &CancellationToken,
    ) -> Result<Built, BuildError> {
        if !self.capabilities.platforms.contains(&req.platform) {
            return Err(BuildError::Unsupported(format!(
                "this builder builds for {:?}, not {}",
                self.capabilities.platforms, req.platform
            )));
        }
        let registry_error = |e: crate::registry::RegistryError| BuildError::Push {
            image: req.image.tagged(),
            transient: e.transient,
            message: e.to_string(),
        };
        let lookup = || self.registry.digest(&req.image.path, &req.image.tag);
        if let Some(digest) = lookup().await.map_err(registry_error)? {
            let _ = events
                .send(BuildEvent::Line(format!(
                    "{} was pushed by an earlier attempt ({digest}); using it",
                    req.image
                )))
                .await;
            return Ok(Built {
                image: req.image.by_digest(&digest),
                digest,
                how: HowBuilt::AlreadyPushed,
            });
        }
        let how = if self.built_earlier(req).await? {
            let _ = events
                .send(BuildEvent::Line(format!(
                    "{} was built by an earlier attempt; pushing it",
                    req.image
                )))
                .await;
            HowBuilt::PushedEarlierBuild
        } else {
            self.run_build(req, context, events, cancel).await?;
            HowBuilt::Built
        };
        self.push(req, events, cancel).await?;
        let digest = lookup()
            .await
            .map_err(registry_error)?
            .ok_or_else(|| BuildError::Push {
                image: req.image.tagged(),
                message: "the push finished but the registry does not have the tag".into(),
                transient: true,
            })?;
        let _ = events
            .send(BuildEvent::Line(format!("Pushed {} ({digest})", req.image)))
            .await;
        Ok(Built {
            image: req.image.by_digest(&digest),
            digest,
            how,
        })
    }
}
