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
use bollard::query_parameters::PushImageOptionsBuilder;
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
    socket: std::path::PathBuf,
    timeout: Duration,
    registry: Registry,
    capabilities: Capabilities,
}

impl DockerBuilder {
    /// A builder for the engine at `socket` (a unix socket path, optionally
    /// `unix://`-prefixed). `build_timeout` bounds one build or push stream.
    /// The engine need not be up yet: it is reached when a build starts.
    pub fn new(
        socket: &str,
        build_timeout: Duration,
        registry: Registry,
        platform: &str,
    ) -> Result<Self, String> {
        let path = socket.strip_prefix("unix://").unwrap_or(socket);
        if path.is_empty() {
            return Err("build.docker_socket is empty".into());
        }
        Ok(Self {
            socket: path.into(),
            timeout: build_timeout,
            registry,
            capabilities: Capabilities {
                platforms: vec![platform.to_owned()],
                layer_cache: true,
                secrets: false,
            },
        })
    }

    /// A client of the engine (bollard checks that the socket exists).
    pub fn docker(&self) -> Result<Docker, BuildError> {
        Docker::connect_with_unix(
            &self.socket.to_string_lossy(),
            self.timeout.as_secs().max(1),
            bollard::API_DEFAULT_VERSION,
        )
        .map_err(|e| {
            Self::backend(
                "reach the build engine",
                format!("{}: {e}", self.socket.display()),
            )
        })
    }

    /// Asks the engine what it is: podman's compatible API takes build
    /// secrets with the context (`secrets=["id=…,src=…"]`, files it moves
    /// out of the context before building); Docker's needs a BuildKit
    /// session, which this backend does not speak.
    pub async fn detect(&mut self) -> Result<(), String> {
        let docker = self.docker().map_err(|e| e.to_string())?;
        let version = tokio::time::timeout(CALL_TIMEOUT, docker.version())
            .await
            .map_err(|_| "the engine did not answer /version".to_owned())?
            .map_err(|e| format!("the engine's /version: {e}"))?;
        let podman = version
            .components
            .unwrap_or_default()
            .iter()
            .any(|c| c.name.to_ascii_lowercase().contains("podman"));
        self.capabilities.secrets = podman;
        Ok(())
    }

    fn backend(operation: &'static str, e: impl std::fmt::Display) -> BuildError {
        BuildError::Backend {
            operation,
            message: e.to_string(),
        }
    }

    /// Whether the engine has our image with this build's label.
    async fn built_earlier(&self, req: &BuildRequest) -> Result<bool, BuildError> {
        let docker = self.docker()?;
        let inspect = tokio::time::timeout(CALL_TIMEOUT, docker.inspect_image(&req.image.tagged()))
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
        let (tar, secrets) = with_secrets(context.tar, &req.secrets)
            .map_err(|e| Self::backend("add the build secrets", e))?;
        let query = build_query(
            &req.image.tagged(),
            &context.dockerfile,
            req,
            &labels,
            &secrets,
        )
        .map_err(|e| Self::backend("encode the build request", e))?;
        let mut stream = Box::pin(raw_build(&self.socket, &query, tar).await.map_err(
            |e| match e {
                RawError::Refused(status, message) if status < 500 => BuildError::StepFailed {
                    step: "the build".into(),
                    message,
                },
                other => Self::backend("build", other),
            },
        )?);
        let mut step = String::from("the build");
        let mut partial = String::new();
        loop {
            let item = tokio::select! {
                () = cancel.cancelled() => return Err(BuildError::Cancelled),
                item = stream.next() => item,
            };
            let Some(item) = item else { break };
            let message = match item {
                Ok(message) => message,
                Err(e) => return Err(Self::backend("build", e)),
            };
            if let Some(error) = message.error {
                return Err(BuildError::StepFailed {
                    step,
                    message: error,
                });
            }
            let Some(text) = message.text else {
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
        let docker = self.docker()?;
        let mut stream = docker.push_image(
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
        if !req.secrets.is_empty() && !self.capabilities.secrets {
            return Err(BuildError::Unsupported(
                "this build engine cannot receive build secrets (Docker's API needs a BuildKit session; podman's takes them): unmark the variables' build_secret or build on podman".into(),
            ));
        }
        self.capabilities.check_platform(&req.platform)?;
        if let Some(built) = self.registry.earlier_push(req, events).await? {
            return Ok(built);
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
        self.registry.pushed(req, events, how, "the push").await
    }
}

/// The engine's API version the raw build speaks (Docker ≥ 1.41 and podman
/// 4 accept it).
const BUILD_API: &str = "v1.41";

/// A secret's id and the file in the context that holds it.
type SecretFile = (String, String);

/// Where each build secret goes in the context: a random file name, which
/// podman moves out of the context before building (so no layer sees it).
fn with_secrets(
    tar: Vec<u8>,
    secrets: &std::collections::BTreeMap<String, zeroize::Zeroizing<String>>,
) -> std::io::Result<(Vec<u8>, Vec<SecretFile>)> {
    if secrets.is_empty() {
        return Ok((tar, Vec::new()));
    }
    // Drop the end-of-archive blocks, append the secrets, close again.
    let mut archive = tar::Archive::new(tar.as_slice());
    let mut out = tar::Builder::new(Vec::new());
    for entry in archive.entries()? {
        let mut entry = entry?;
        let mut header = entry.header().clone();
        let path = entry.path()?.into_owned();
        if header.entry_type().is_symlink() || header.entry_type().is_hard_link() {
            let target = entry.link_name()?.unwrap_or_default().into_owned();
            out.append_link(&mut header, &path, target)?;
        } else {
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data)?;
            out.append_data(&mut header, &path, data.as_slice())?;
        }
    }
    let mut ids = Vec::new();
    for (id, value) in secrets {
        let file = format!(
            ".ctrl-build-secret-{}",
            hex::encode(rand::random::<[u8; 12]>())
        );
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o600);
        header.set_size(value.len() as u64);
        out.append_data(&mut header, &file, value.as_bytes())?;
        ids.push((id.clone(), file));
    }
    Ok((out.into_inner()?, ids))
}

/// The `/build` query: what bollard would send, plus `secrets`.
fn build_query(
    tag: &str,
    dockerfile: &str,
    req: &BuildRequest,
    labels: &HashMap<String, String>,
    secrets: &[SecretFile],
) -> Result<String, serde_json::Error> {
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("t", tag)
        .append_pair("dockerfile", dockerfile)
        .append_pair("buildargs", &serde_json::to_string(&req.build_args)?)
        .append_pair("labels", &serde_json::to_string(labels)?)
        .append_pair("platform", &req.platform)
        .append_pair("rm", "true")
        .append_pair("forcerm", "true");
    if !secrets.is_empty() {
        let specs: Vec<String> = secrets
            .iter()
            .map(|(id, file)| format!("id={id},src={file}"))
            .collect();
        q.append_pair("secrets", &serde_json::to_string(&specs)?);
    }
    Ok(q.finish())
}

/// One line of `/build` output.
#[derive(Debug, Default)]
struct BuildMessage {
    /// Output text (may hold several lines, or part of one).
    text: Option<String>,
    /// The engine's error: the build failed.
    error: Option<String>,
}

/// Why the raw build request failed.
#[derive(Debug, thiserror::Error)]
enum RawError {
    #[error("cannot reach the engine: {0}")]
    Connect(String),
    #[error("the engine answered {0}: {1}")]
    Refused(u16, String),
    #[error("the build output broke off: {0}")]
    Stream(String),
}

/// `POST /build` over the engine's unix socket, the context as the body;
/// the answer's JSON lines as they come. The connection is closed (and the
/// engine stops the build) when the stream is dropped.
async fn raw_build(
    socket: &std::path::Path,
    query: &str,
    tar: Vec<u8>,
) -> Result<impl futures::Stream<Item = Result<BuildMessage, RawError>> + use<>, RawError> {
    use http_body_util::BodyExt;
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| RawError::Connect(format!("{}: {e}", socket.display())))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| RawError::Connect(e.to_string()))?;
    let connection = AbortOnDrop(tokio::spawn(async move {
        let _ = connection.await;
    }));
    let request = hyper::Request::post(format!("http://engine/{BUILD_API}/build?{query}"))
        .header(hyper::header::HOST, "engine")
        .header(hyper::header::CONTENT_TYPE, "application/x-tar")
        .body(http_body_util::Full::new(bytes::Bytes::from(tar)))
        .map_err(|e| RawError::Connect(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| RawError::Connect(e.to_string()))?;
    let status = response.status();
    let body = response.into_body();
    if !status.is_success() {
        let bytes = tokio::time::timeout(CALL_TIMEOUT, body.collect())
            .await
            .ok()
            .and_then(Result::ok)
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let message = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).trim().to_owned());
        return Err(RawError::Refused(status.as_u16(), message));
    }
    Ok(json_lines(body, connection))
}

/// Splits the response into JSON lines and decodes each.
fn json_lines(
    body: hyper::body::Incoming,
    connection: AbortOnDrop,
) -> impl futures::Stream<Item = Result<BuildMessage, RawError>> {
    use http_body_util::BodyExt;
    let state = (body, Vec::<u8>::new(), connection, false);
    futures::stream::unfold(
        state,
        |(mut body, mut pending, connection, mut done)| async move {
            loop {
                if let Some(end) = pending.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=end).collect();
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    return Some((Ok(decode(&line)), (body, pending, connection, done)));
                }
                if done {
                    if pending.iter().all(u8::is_ascii_whitespace) {
                        return None;
                    }
                    let line = std::mem::take(&mut pending);
                    return Some((Ok(decode(&line)), (body, pending, connection, true)));
                }
                match body.frame().await {
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            pending.extend_from_slice(&data);
                        }
                    }
                    Some(Err(e)) => {
                        return Some((
                            Err(RawError::Stream(e.to_string())),
                            (body, Vec::new(), connection, true),
                        ));
                    }
                    None => done = true,
                }
            }
        },
    )
}

/// One JSON line of `/build` output (`stream`, `status`, `error`,
/// `errorDetail.message`); a line that is not JSON is output text.
fn decode(line: &[u8]) -> BuildMessage {
    match serde_json::from_slice::<serde_json::Value>(line) {
        Ok(v) => BuildMessage {
            text: v["stream"]
                .as_str()
                .or_else(|| v["status"].as_str())
                .map(str::to_owned),
            error: v["errorDetail"]["message"]
                .as_str()
                .or_else(|| v["error"].as_str())
                .map(str::to_owned),
        },
        Err(_) => BuildMessage {
            text: Some(String::from_utf8_lossy(line).into_owned()),
            error: None,
        },
    }
}

/// Aborts the connection task when the build's stream is dropped (a
/// cancelled build closes its connection; the engine then stops).
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_engine_that_is_not_up_is_a_transient_error_not_a_startup_failure() {
        let registry = Registry::new(crate::registry::RegistryConfig {
            url: "http://127.0.0.1:9".into(),
            image_host: String::new(),
            repository: "ctrl".into(),
            username: String::new(),
            password: String::new().into(),
            request_timeout: Duration::from_secs(1),
        })
        .expect("registry");
        let mut builder = DockerBuilder::new(
            "unix:///nonexistent/engine.sock",
            Duration::from_secs(10),
            registry,
            "linux/amd64",
        )
        .expect("a worker starts before its engine");
        let e = builder.docker().expect_err("no engine there");
        assert!(e.is_transient(), "{e}");
        assert!(e.to_string().contains("/nonexistent/engine.sock"), "{e}");
        let detected = builder.detect().await;
        assert!(detected.is_err(), "nothing to detect");
    }

    #[test]
    fn the_build_query_carries_secrets_by_file_never_by_value() {
        let req = BuildRequest {
            build_id: "bld_1".into(),
            project_id: "proj_1".into(),
            image: crate::builder::ImageName {
                registry: "r".into(),
                path: "p".into(),
                tag: "t".into(),
            },
            build_args: [("A".to_owned(), "b c".to_owned())].into(),
            platform: "linux/amd64".into(),
            labels: Default::default(),
            secrets: [(
                "TOKEN".to_owned(),
                zeroize::Zeroizing::new("v4lue".to_owned()),
            )]
            .into(),
        };
        let (tar, files) = with_secrets(Vec::new(), &req.secrets).expect("tar");
        assert_eq!(files.len(), 1);
        assert!(files[0].1.starts_with(".ctrl-build-secret-"));
        let query = build_query("r/p:t", "Dockerfile", &req, &HashMap::new(), &files).expect("q");
        assert!(!query.contains("v4lue"), "{query}");
        assert!(
            query.contains("secrets=%5B%22id%3DTOKEN%2Csrc%3D.ctrl-build-secret-"),
            "{query}"
        );
        assert!(
            query.contains("buildargs=%7B%22A%22%3A%22b+c%22%7D"),
            "{query}"
        );
        // The value travels only inside the context, in the named file.
        let mut archive = tar::Archive::new(tar.as_slice());
        let mut entry = archive
            .entries()
            .expect("entries")
            .next()
            .expect("one")
            .expect("ok");
        assert_eq!(entry.path().expect("path").to_string_lossy(), files[0].1);
        let mut value = String::new();
        std::io::Read::read_to_string(&mut entry, &mut value).expect("read");
        assert_eq!(value, "v4lue");
    }
}
