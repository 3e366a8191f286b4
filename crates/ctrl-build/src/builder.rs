//! The [`Builder`] trait every build backend implements, what it is asked
//! to do ([`BuildRequest`]), what it reports while working ([`BuildEvent`])
//! and how it fails ([`BuildError`]).

use std::collections::BTreeMap;
use std::fmt;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::context::Context;

/// What a backend can do; the pipeline checks a request against it before
/// starting, so an impossible build fails with a clear reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// Target platforms it builds for, e.g. `linux/amd64`.
    pub platforms: Vec<String>,
    /// Reuses layers of earlier builds of the same context.
    pub layer_cache: bool,
    /// Passes secrets to `RUN --mount=type=secret` without storing them.
    pub secrets: bool,
}

impl Capabilities {
    /// Refuses a platform the backend does not build for.
    pub fn check_platform(&self, platform: &str) -> Result<(), BuildError> {
        if self.platforms.iter().any(|p| p == platform) {
            return Ok(());
        }
        Err(BuildError::Unsupported(format!(
            "this builder builds for {:?}, not {platform}",
            self.platforms
        )))
    }
}

/// The image a build produces: `repository:tag` before it is pushed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageName {
    /// Registry host (and port), e.g. `127.0.0.1:5000` or `ghcr.io`.
    pub registry: String,
    /// Path inside the registry, e.g. `ctrl/acme/web`.
    pub path: String,
    /// Tag, e.g. the deployment id.
    pub tag: String,
}

impl ImageName {
    /// `registry/path` (no tag).
    pub fn repository(&self) -> String {
        format!("{}/{}", self.registry, self.path)
    }

    /// `registry/path:tag`.
    pub fn tagged(&self) -> String {
        format!("{}/{}:{}", self.registry, self.path, self.tag)
    }

    /// `registry/path@digest`.
    pub fn by_digest(&self, digest: &str) -> String {
        format!("{}/{}@{digest}", self.registry, self.path)
    }
}

impl fmt::Display for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.tagged())
    }
}

/// One build.
#[derive(Clone)]
pub struct BuildRequest {
    /// The build's id (labelled on the image, so a retry recognises its own
    /// earlier result).
    pub build_id: String,
    /// The ctrl project it belongs to (backends that isolate caches per
    /// customer key them by it).
    pub project_id: String,
    /// Where the result is pushed.
    pub image: ImageName,
    /// Build arguments.
    pub build_args: BTreeMap<String, String>,
    /// Target platform (`build_platform`), e.g. `linux/amd64`.
    pub platform: String,
    /// Labels put on the image (ids of what it belongs to).
    pub labels: BTreeMap<String, String>,
    /// Build secrets by id (`RUN --mount=type=secret,id=ID`): never a build
    /// argument, never in a layer; redacted in `Debug`.
    pub secrets: BTreeMap<String, zeroize::Zeroizing<String>>,
}

impl fmt::Debug for BuildRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BuildRequest")
            .field("build_id", &self.build_id)
            .field("project_id", &self.project_id)
            .field("image", &self.image)
            .field("build_args", &self.build_args)
            .field("platform", &self.platform)
            .field("labels", &self.labels)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The pushed image.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Built {
    /// `registry/path@sha256:…`, what deployments run.
    pub image: String,
    /// `sha256:…` of the pushed manifest.
    pub digest: String,
    /// How the result came about.
    pub how: HowBuilt,
}

/// Whether a build ran, or an earlier attempt's result was reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum HowBuilt {
    /// Built and pushed now.
    Built,
    /// An earlier attempt had built it; pushed now.
    PushedEarlierBuild,
    /// An earlier attempt had pushed it already.
    AlreadyPushed,
}

/// What a backend reports while it works, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildEvent {
    /// A line of build output.
    Line(String),
    /// The build moved to a new step (e.g. `STEP 2/4: RUN make`).
    Step(String),
}

/// Where a backend sends its [`BuildEvent`]s.
pub type Events = mpsc::Sender<BuildEvent>;

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A build step failed: the user's Dockerfile or code.
    #[error("{step} failed: {message}")]
    StepFailed {
        /// The failing step (e.g. `STEP 3/4: RUN make`), or "the build".
        step: String,
        /// The engine's error.
        message: String,
    },
    /// The request cannot be built by this backend (e.g. a platform it does
    /// not offer).
    #[error("{0}")]
    Unsupported(String),
    /// The registry refused the push or its credentials.
    #[error("pushing {image} failed: {message}")]
    Push {
        /// The image.
        image: String,
        /// Why.
        message: String,
        /// Whether trying again may help (registry 5xx, connection errors).
        transient: bool,
    },
    /// The build was cancelled.
    #[error("the build was cancelled")]
    Cancelled,
    /// The backend refused the request on grounds trying again does not
    /// change (credentials, permissions, an invalid setting).
    #[error("{operation}: {message}")]
    Refused {
        /// What was being done.
        operation: &'static str,
        /// Why.
        message: String,
    },
    /// The backend could not be reached or failed on its own account.
    #[error("{operation}: {message}")]
    Backend {
        /// What was being done.
        operation: &'static str,
        /// Why.
        message: String,
    },
}

impl BuildError {
    /// Whether trying the build again may succeed (the backend or registry
    /// being unreachable), as opposed to the user's build failing.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Backend { .. } => true,
            Self::Push { transient, .. } => *transient,
            Self::StepFailed { .. }
            | Self::Unsupported(_)
            | Self::Refused { .. }
            | Self::Cancelled => false,
        }
    }
}

/// A build backend.
#[async_trait::async_trait]
pub trait Builder: Send + Sync + fmt::Debug {
    /// Its name as recorded on builds (`docker`, `depot`).
    fn name(&self) -> &'static str;

    /// What it can do.
    fn capabilities(&self) -> &Capabilities;

    /// Builds `context` as `req.image`, pushes it and returns it by digest,
    /// reporting output to `events`. Idempotent per `req.build_id`: when an
    /// earlier attempt already built or pushed it, that result is reused
    /// (never a second image with another digest). Stops promptly with
    /// [`BuildError::Cancelled`] when `cancel` fires.
    async fn build(
        &self,
        req: &BuildRequest,
        context: Context,
        events: &Events,
        cancel: &CancellationToken,
    ) -> Result<Built, BuildError>;
}

/// Recognises the step lines of the engines' build output: buildah/podman
/// (`STEP 2/4: RUN make`), Docker's classic builder (`Step 2/4 : RUN make`).
pub fn step_of(line: &str) -> Option<&str> {
    let rest = line
        .strip_prefix("STEP ")
        .or_else(|| line.strip_prefix("Step "))?;
    let (count, _) = rest.split_once(':')?;
    let count = count.trim();
    let (n, of) = count.split_once('/')?;
    (n.parse::<u32>().is_ok() && of.parse::<u32>().is_ok()).then_some(line.trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_recognised_in_both_engines_output() {
        assert_eq!(step_of("STEP 2/4: RUN make"), Some("STEP 2/4: RUN make"));
        assert_eq!(
            step_of("Step 1/3 : FROM busybox\n"),
            Some("Step 1/3 : FROM busybox")
        );
        assert_eq!(step_of("STEP is a word: no"), None);
        assert_eq!(step_of("compiling step 2/4: x"), None);
    }

    #[test]
    fn image_names_render() {
        let n = ImageName {
            registry: "127.0.0.1:5000".into(),
            path: "ctrl/acme/web".into(),
            tag: "d_1".into(),
        };
        assert_eq!(n.tagged(), "127.0.0.1:5000/ctrl/acme/web:d_1");
        assert_eq!(
            n.by_digest("sha256:ab"),
            "127.0.0.1:5000/ctrl/acme/web@sha256:ab"
        );
    }
}
