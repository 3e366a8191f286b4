//! A BuildKit client for one build on a remote BuildKit daemon (a Depot
//! machine): a `dockerfile.v0` solve of a context the daemon downloads
//! from a URL, exported as an image pushed to the registry, with the
//! client's *session* — the gRPC services the daemon calls back over a byte
//! stream — handing it the build secrets and the registry's credentials,
//! and the daemon's progress turned into [`BuildEvent`]s.
//!
//! The protocol, from moby/buildkit: the client opens `Control/Session`
//! (metadata: session id, shared key, and every method it serves), and the
//! stream's bytes carry an HTTP/2 connection on which the *daemon* is the
//! gRPC client and we serve `Secrets`, `Auth` and `Health`. `Solve` names
//! that session; `Status` streams vertexes and their logs by the solve's
//! ref. Dropping the `Solve` call cancels the build on the daemon.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

use futures::StreamExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, DuplexStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Request, Response, Status};
use zeroize::Zeroizing;

use crate::builder::{BuildError, BuildEvent, Events};

/// Code generated from the trimmed BuildKit protos in `proto/`.
#[allow(missing_docs, clippy::all, clippy::pedantic, unreachable_pub)]
pub mod proto {
    /// `moby.buildkit.v1`: the daemon's control API.
    pub mod control {
        tonic::include_proto!("moby.buildkit.v1");
    }
    /// `moby.buildkit.secrets.v1`: secrets, served by the client.
    pub mod secrets {
        tonic::include_proto!("moby.buildkit.secrets.v1");
    }
    /// `moby.filesync.v1`: registry credentials, served by the client.
    pub mod auth {
        tonic::include_proto!("moby.filesync.v1");
    }
    /// `grpc.health.v1`: the daemon's liveness check of a session.
    pub mod health {
        tonic::include_proto!("grpc.health.v1");
    }
}

use proto::auth::auth_server::{Auth, AuthServer};
use proto::auth::{CredentialsRequest, CredentialsResponse};
use proto::control::control_client::ControlClient;
use proto::control::{BytesMessage, Exporter, SolveRequest, StatusRequest, StatusResponse};
use proto::health::health_check_response::ServingStatus;
use proto::health::health_server::{Health, HealthServer};
use proto::health::{HealthCheckRequest, HealthCheckResponse};
use proto::secrets::secrets_server::{Secrets, SecretsServer};
use proto::secrets::{GetSecretRequest, GetSecretResponse};

/// Session metadata keys (BuildKit's `session` package, lower-cased as
/// gRPC metadata is).
pub const HEADER_SESSION_ID: &str = "x-docker-expose-session-uuid";
/// The session's name (informational).
pub const HEADER_SESSION_NAME: &str = "x-docker-expose-session-name";
/// A key the daemon uses to share local caches between sessions.
pub const HEADER_SESSION_SHARED_KEY: &str = "x-docker-expose-session-sharedkey";
/// One value per gRPC method the session serves (`/pkg.Service/Method`).
pub const HEADER_SESSION_METHOD: &str = "x-docker-expose-session-grpc-method";

/// The export response key of the pushed manifest's digest.
pub const EXPORTED_DIGEST: &str = "containerimage.digest";

/// The methods a ctrl session serves, as advertised to the daemon.
const SESSION_METHODS: [&str; 3] = [
    "/moby.buildkit.secrets.v1.Secrets/GetSecret",
    "/moby.filesync.v1.Auth/Credentials",
    "/grpc.health.v1.Health/Check",
];

/// Size of the in-memory pipe between a session stream and its HTTP/2
/// connection.
const PIPE_BYTES: usize = 256 << 10;

/// A BuildKit daemon reached over mutual TLS.
#[derive(Clone)]
pub struct Machine {
    /// `host:port` (a `tcp://` prefix is accepted).
    pub endpoint: String,
    /// The name its certificate is checked against.
    pub server_name: String,
    /// PEM of the CA its certificate chains to.
    pub ca_pem: String,
    /// PEM of the client certificate.
    pub cert_pem: String,
    /// PEM of the client key.
    pub key_pem: Zeroizing<String>,
}

impl fmt::Debug for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Machine")
            .field("endpoint", &self.endpoint)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl Machine {
    /// Connects (TLS with the client certificate, HTTP/2), bounded by
    /// `timeout`.
    pub async fn connect(&self, timeout: Duration) -> Result<Channel, BuildError> {
        let backend = |message: String| BuildError::Backend {
            operation: "connecting to the BuildKit machine",
            message,
        };
        let addr = self
            .endpoint
            .strip_prefix("tcp://")
            .unwrap_or(&self.endpoint);
        let tls = ClientTlsConfig::new()
            .domain_name(self.server_name.clone())
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(Identity::from_pem(&self.cert_pem, self.key_pem.as_bytes()));
        Endpoint::from_shared(format!("https://{addr}"))
            .map_err(|e| backend(format!("endpoint {addr:?}: {e}")))?
            .tls_config(tls)
            .map_err(|e| backend(format!("TLS material: {e}")))?
            .connect_timeout(timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(20))
            .connect()
            .await
            .map_err(|e| backend(format!("{addr}: {}", crate::error_chain(&e))))
    }
}

/// One solve: a Dockerfile build of a downloadable context, pushed.
pub struct Solve<'a> {
    /// The solve's ref (ties `Status` to it): the build id.
    pub reference: &'a str,
    /// Where the daemon downloads the context (a tar or tar.gz).
    pub context_url: &'a str,
    /// The Dockerfile's path inside the context.
    pub dockerfile: &'a str,
    /// Build arguments.
    pub build_args: &'a BTreeMap<String, String>,
    /// Target platform.
    pub platform: &'a str,
    /// `registry/path:tag` to push.
    pub image: &'a str,
    /// Build secrets by id, served through the session.
    pub secrets: &'a BTreeMap<String, Zeroizing<String>>,
    /// The registry host the image goes to, and its credentials, served
    /// through the session (none: anonymous).
    pub registry: (&'a str, Option<(&'a str, &'a str)>),
}

impl fmt::Debug for Solve<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Solve")
            .field("reference", &self.reference)
            .field("dockerfile", &self.dockerfile)
            .field("build_args", &self.build_args)
            .field("platform", &self.platform)
            .field("image", &self.image)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .field("registry", &self.registry.0)
            .finish_non_exhaustive()
    }
}

/// Runs `solve` on `channel` and returns the pushed manifest's digest,
/// sending the daemon's progress to `events`. Cancelling `cancel` drops the
/// solve, which cancels it on the daemon.
pub async fn solve(
    channel: Channel,
    solve: Solve<'_>,
    events: &Events,
    cancel: &CancellationToken,
) -> Result<String, BuildError> {
    let mut control = ControlClient::new(channel);
    let session_id = hex::encode(rand::random::<[u8; 16]>());
    let session = open_session(&mut control, &session_id, &solve).await?;

    // Progress, read concurrently with the solve; it ends when the solve
    // does (the daemon closes the stream).
    let progress = {
        let mut control = control.clone();
        let reference = solve.reference.to_owned();
        let events = events.clone();
        tokio::spawn(async move {
            let mut progress = Progress::default();
            if let Ok(stream) = control.status(StatusRequest { r#ref: reference }).await {
                let mut stream = stream.into_inner();
                while let Some(Ok(update)) = stream.next().await {
                    progress.apply(update, &events).await;
                }
            }
            progress
        })
    };

    let mut attrs: HashMap<String, String> = [
        ("context", solve.context_url),
        ("filename", solve.dockerfile),
        ("platform", solve.platform),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    for (k, v) in solve.build_args {
        attrs.insert(format!("build-arg:{k}"), v.clone());
    }
    let request = SolveRequest {
        r#ref: solve.reference.to_owned(),
        session: session_id,
        frontend: "dockerfile.v0".into(),
        frontend_attrs: attrs,
        entitlements: Vec::new(),
        exporters: vec![Exporter {
            r#type: "image".into(),
            attrs: [("name", solve.image), ("push", "true")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        }],
    };
    let outcome = tokio::select! {
        outcome = control.solve(request) => outcome,
        () = cancel.cancelled() => {
            session.abort();
            progress.abort();
            return Err(BuildError::Cancelled);
        }
    };
    session.abort();
    // The daemon ends the status stream with the solve; bounded in case
    // it does not.
    let progress = tokio::time::timeout(Duration::from_secs(5), progress)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    match outcome {
        Ok(response) => response
            .into_inner()
            .exporter_response
            .remove(EXPORTED_DIGEST)
            .filter(|d| d.starts_with("sha256:"))
            .ok_or_else(|| BuildError::Push {
                image: solve.image.to_owned(),
                message: "the BuildKit machine finished without the pushed image's digest".into(),
                transient: true,
            }),
        Err(status) => Err(progress.failure(&status)),
    }
}

/// Opens the session and serves ctrl's session services on it until the
/// returned task is aborted.
async fn open_session(
    control: &mut ControlClient<Channel>,
    session_id: &str,
    solve: &Solve<'_>,
) -> Result<tokio::task::JoinHandle<()>, BuildError> {
    let (outgoing_tx, outgoing_rx) = mpsc::channel::<BytesMessage>(16);
    let mut request = Request::new(ReceiverStream::new(outgoing_rx));
    let meta = request.metadata_mut();
    let value = |v: &str| {
        v.parse().map_err(|_| BuildError::Backend {
            operation: "opening the BuildKit session",
            message: format!("{v:?} is not a valid header value"),
        })
    };
    meta.insert(HEADER_SESSION_ID, value(session_id)?);
    meta.insert(HEADER_SESSION_NAME, value("ctrl")?);
    meta.insert(HEADER_SESSION_SHARED_KEY, value("ctrl")?);
    for method in SESSION_METHODS {
        meta.append(HEADER_SESSION_METHOD, value(method)?);
    }
    let incoming = control
        .session(request)
        .await
        .map_err(|status| BuildError::Backend {
            operation: "opening the BuildKit session",
            message: status.message().to_owned(),
        })?
        .into_inner();
    let io = pipe(incoming, outgoing_tx);
    let (host, credentials) = solve.registry;
    let routes =
        tonic::service::Routes::new(SecretsServer::new(SessionSecrets(solve.secrets.clone())))
            .add_service(AuthServer::new(SessionAuth {
                host: host.to_owned(),
                credentials: credentials.map(|(u, p)| (u.to_owned(), Zeroizing::new(p.to_owned()))),
            }))
            .add_service(HealthServer::new(SessionHealth));
    Ok(tokio::spawn(async move {
        let served = tonic::transport::Server::builder()
            .add_routes(routes)
            .serve_with_incoming(futures::stream::iter([Ok::<_, std::io::Error>(io)]))
            .await;
        if let Err(e) = served {
            tracing::debug!(error = %e, "BuildKit session ended");
        }
    }))
}

/// Joins a stream of [`BytesMessage`]s (received) and a sender of them
/// (sent) into one byte stream: what BuildKit's `Session` carries, on both
/// ends of it. The pumps stop when either side closes.
pub fn pipe<S>(incoming: S, outgoing: mpsc::Sender<BytesMessage>) -> DuplexStream
where
    S: futures::Stream<Item = Result<BytesMessage, Status>> + Send + Unpin + 'static,
{
    let (ours, theirs) = tokio::io::duplex(PIPE_BYTES);
    let (mut read_half, mut write_half) = tokio::io::split(theirs);
    tokio::spawn(async move {
        let mut incoming = incoming;
        while let Some(Ok(message)) = incoming.next().await {
            if write_half.write_all(&message.data).await.is_err() {
                break;
            }
        }
        let _ = write_half.shutdown().await;
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 << 10];
        loop {
            match read_half.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let message = BytesMessage {
                        data: buf[..n].to_vec(),
                    };
                    if outgoing.send(message).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    ours
}

/// What the progress stream told so far: vertex names, which step is
/// running, and the failing vertex's error.
#[derive(Default)]
struct Progress {
    names: HashMap<String, String>,
    started: std::collections::HashSet<String>,
    failed: Option<(String, String)>,
    /// Unterminated output per vertex.
    partial: HashMap<String, String>,
}

impl Progress {
    async fn apply(&mut self, update: StatusResponse, events: &Events) {
        for v in update.vertexes {
            self.names.insert(v.digest.clone(), v.name.clone());
            if v.started.is_some() && self.started.insert(v.digest.clone()) {
                let _ = events.send(BuildEvent::Step(v.name.clone())).await;
            }
            if v.cached && v.completed.is_some() {
                let _ = events
                    .send(BuildEvent::Line(format!("CACHED {}", v.name)))
                    .await;
            }
            if !v.error.is_empty() && self.failed.is_none() {
                self.failed = Some((v.name.clone(), v.error.clone()));
            }
        }
        for log in update.logs {
            let text = String::from_utf8_lossy(&log.msg);
            let pending = self.partial.entry(log.vertex).or_default();
            pending.push_str(&text);
            while let Some(end) = pending.find('\n') {
                let line: String = pending.drain(..=end).collect();
                let line = line.trim_end_matches(['\n', '\r']).to_owned();
                let _ = events.send(BuildEvent::Line(line)).await;
            }
        }
    }

    /// The error of a failed solve: the failing step when the progress
    /// named one.
    fn failure(self, status: &Status) -> BuildError {
        match status.code() {
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Aborted => {
                BuildError::Backend {
                    operation: "building on the BuildKit machine",
                    message: status.message().to_owned(),
                }
            }
            tonic::Code::Cancelled => BuildError::Cancelled,
            _ => match self.failed {
                Some((step, message)) => BuildError::StepFailed { step, message },
                None => BuildError::StepFailed {
                    step: "the build".into(),
                    message: status.message().to_owned(),
                },
            },
        }
    }
}

/// The build's secrets, by id.
struct SessionSecrets(BTreeMap<String, Zeroizing<String>>);

#[tonic::async_trait]
impl Secrets for SessionSecrets {
    async fn get_secret(
        &self,
        request: Request<GetSecretRequest>,
    ) -> Result<Response<GetSecretResponse>, Status> {
        let id = request.into_inner().id;
        match self.0.get(&id) {
            Some(value) => Ok(Response::new(GetSecretResponse {
                data: value.as_bytes().to_vec(),
            })),
            None => Err(Status::not_found(format!("secret {id} not found"))),
        }
    }
}

/// The registry's credentials, for its host only.
struct SessionAuth {
    host: String,
    credentials: Option<(String, Zeroizing<String>)>,
}

#[tonic::async_trait]
impl Auth for SessionAuth {
    async fn credentials(
        &self,
        request: Request<CredentialsRequest>,
    ) -> Result<Response<CredentialsResponse>, Status> {
        let host = request.into_inner().host;
        // Anything else (base images on Docker Hub, …) is pulled anonymously.
        let answer = match &self.credentials {
            Some((username, secret)) if host == self.host => CredentialsResponse {
                username: username.clone(),
                secret: secret.to_string(),
            },
            _ => CredentialsResponse::default(),
        };
        Ok(Response::new(answer))
    }
}

/// Tells the daemon the session is alive.
struct SessionHealth;

#[tonic::async_trait]
impl Health for SessionHealth {
    async fn check(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        Ok(Response::new(HealthCheckResponse {
            status: ServingStatus::Serving as i32,
        }))
    }
}
