//! [`FakeDepot`]: a stateful, in-process stand-in for Depot (depot.dev) —
//! the parts of its Connect API that ctrl's Depot build backend calls, and
//! the BuildKit "machine" Depot hands out — for tests.
//!
//! # The Connect API
//!
//! Served on `http://127.0.0.1:{port}` ([`FakeDepot::url`]) as Connect's
//! unary protocol with JSON: `POST /{package}.{Service}/{Method}`, request
//! `Content-Type: application/json` (anything else: `415` with
//! `Accept-Post`; another method: `405`), a JSON object in proto3's JSON
//! mapping (lowerCamelCase or the proto's snake_case field names; int64 as
//! a string or a number; unknown fields ignored; an empty or non-object
//! body is `invalid_argument`). Answers are `200` with proto3 JSON as
//! Connect servers write it — fields at their default value (empty lists,
//! `0`, `""`) are left out, so an empty list of projects is `{}` — and
//! errors are Connect's: the code's HTTP status and
//! `{"code":"…","message":"…"}`. Every call needs
//! `Authorization: Bearer <token>` (missing or unknown: `unauthenticated`);
//! a token is either the organization's ([`FakeDepot::org_token`]) or a
//! build's (from `CreateBuild`). Unknown paths answer `unimplemented`
//! (`404`).
//!
//! - `/depot.core.v1.ProjectService/ListProjects` (organization token):
//!   `{}` → `{"projects":[project…]}`, oldest first. A project is
//!   `{"projectId","organizationId","name","regionId","createdAt"
//!   (RFC 3339),"cachePolicy":{"keepBytes":"<int64>","keepDays":n}}`.
//! - `/depot.core.v1.ProjectService/CreateProject` (organization token):
//!   `{"name","regionId","cachePolicy"?}` → `{"project":{…}}`. An empty name
//!   or a region other than [`REGIONS`] is `invalid_argument` (naming the
//!   region); without a cache policy Depot's default (50 GiB, 14 days)
//!   applies. Project ids are 10 random lowercase alphanumerics; names
//!   need not be unique.
//! - `/depot.cli.v1.BuildService/CreateBuild` (organization token):
//!   `{"projectId","options"?}` → `{"buildId","buildToken","buildUrl",
//!   "projectId"}`; an unknown project is `not_found`. Each build gets its
//!   own client certificate for the machine.
//! - `/depot.cli.v1.BuildService/GetBuildKitConnection` (that build's
//!   token; the organization's or another build's is `permission_denied`):
//!   `{"buildId","platform":"BUILDER_PLATFORM_AMD64"|"BUILDER_PLATFORM_ARM64"
//!   (or 1|2),"requiredEngine":{"buildkit":{}}}`. The first
//!   [`pending_polls`](FakeDepotOptions::pending_polls) calls of a build
//!   answer `{"pending":{"waitMs":100}}`, then
//!   `{"active":{"endpoint":"tcp://127.0.0.1:<port>","serverName":
//!   "machine-<buildId>.depot.test","cert":{"cert","key"},"caCert":{"cert"}}}`
//!   (PEM). A missing or unknown platform, or a `requiredEngine` without
//!   `buildkit`, is `invalid_argument`; a finished build is
//!   `failed_precondition` ("build … has finished").
//! - `/depot.cli.v1.BuildService/ReportBuildHealth` (the build's token):
//!   `{"buildId","platform"}` → `{}`; counted per build (also after the
//!   build finished, counted separately).
//! - `/depot.cli.v1.BuildService/FinishBuild` (the build's token):
//!   `{"buildId"}` and exactly one of `"success":{}`,
//!   `"error":{"error":"…"}`, `"canceled":{}` (none or several:
//!   `invalid_argument`) → `{}`. The first outcome sticks; finishing again
//!   answers `{}`. Finishing releases the build's machine: its running
//!   solves are cancelled and fail `unavailable`.
//!
//! # The machine
//!
//! One BuildKit daemon shared by all builds, a tonic gRPC server on
//! 127.0.0.1 with TLS that **requires a client certificate** from the
//! fake's CA; the certificate tells the machine which build a call belongs
//! to. It serves `moby.buildkit.v1.Control` (the daemon side of
//! [`ctrl_build::buildkit`]):
//!
//! - `Session`: needs `x-docker-expose-session-uuid` (else
//!   `invalid_argument`), records every `x-docker-expose-session-grpc-method`,
//!   and becomes, over the stream's bytes, an HTTP/2 connection on which the
//!   machine is the gRPC client of the session's services.
//! - `Status`: the progress of the solve with that ref, from its start
//!   (nothing is lost if it is called before or after `Solve`), ending
//!   with the solve. Like BuildKit, a finished solve's progress is replayed,
//!   and a ref no solve claims within 6 s ends with `not_found` ("no such
//!   job").
//! - `Solve`: `dockerfile.v0` only, with frontend attributes `context` (an
//!   `http://` URL of a tar or tar.gz, downloaded — at most 512 MiB, within
//!   the build timeout), `filename`, `platform` and `build-arg:*`, and
//!   exactly one exporter, `image` with `name` (`host:port/path:tag`, on
//!   the configured registry's host) and `push=true`; anything else is
//!   `invalid_argument`. It waits up to 5 s for the named session ("no
//!   active session for …"), checks it serves `Secrets/GetSecret`,
//!   `Auth/Credentials` and `Health/Check`, calls `Health/Check` once,
//!   asks `GetSecret` for each `RUN --mount=type=secret` of the Dockerfile
//!   (a `NotFound` fails the solve, with `unknown` naming the secret, only
//!   when the mount says `required=true` — BuildKit's default is optional
//!   — and an optional missing secret is left out), asks
//!   `Auth/Credentials` for the registry's host (an empty username is
//!   anonymous), then really builds and pushes with
//!   [`ctrl_build::docker::DockerBuilder`] on podman. Its steps become
//!   vertexes (digest `sha256:` of the name) and its lines their logs; a
//!   failure marks the failing vertex with the error and answers `unknown`
//!   with the builder's message (`unavailable` when the engine itself
//!   failed); success answers `containerimage.digest` and `image.name`.
//!   Dropping the `Solve` call cancels the build. One solve per ref at a
//!   time (`already_exists`).
//!
//! Tests inspect what happened with [`requests`](FakeDepot::requests)
//! (never a token), [`projects`](FakeDepot::projects),
//! [`builds`](FakeDepot::builds) and [`solves`](FakeDepot::solves), inject
//! failures with [`fail_next`](FakeDepot::fail_next) and change the
//! connection's delay with [`set_pending_polls`](FakeDepot::set_pending_polls).
//! The fake stops, and cancels its builds, when dropped.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io::Read as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, Method, Response, StatusCode, Uri};
use ctrl_build::builder::{BuildError, BuildEvent, BuildRequest, Builder as _, ImageName};
use ctrl_build::buildkit::proto::auth::CredentialsRequest;
use ctrl_build::buildkit::proto::auth::auth_client::AuthClient;
use ctrl_build::buildkit::proto::control::control_server::{Control, ControlServer};
use ctrl_build::buildkit::proto::control::{
    BytesMessage, Exporter, SolveRequest, SolveResponse, StatusRequest, StatusResponse, Vertex,
    VertexLog,
};
use ctrl_build::buildkit::proto::health::HealthCheckRequest;
use ctrl_build::buildkit::proto::health::health_client::HealthClient;
use ctrl_build::buildkit::proto::secrets::GetSecretRequest;
use ctrl_build::buildkit::proto::secrets::secrets_client::SecretsClient;
use ctrl_build::buildkit::{HEADER_SESSION_ID, HEADER_SESSION_METHOD};
use ctrl_build::context::{Layout, Limits};
use ctrl_build::docker::DockerBuilder;
use ctrl_build::registry::{Registry, RegistryConfig};
use futures::{Stream, StreamExt as _};
use hyper_util::rt::TokioIo;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};
use tokio::io::DuplexStream;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Channel, Endpoint, Identity, ServerTlsConfig};
use tonic::{Request, Status, Streaming};
use zeroize::Zeroizing;

use crate::Error;
use crate::ca::LocalCa;
use crate::clock::{now_secs, rfc3339};

/// `ProjectService/ListProjects`.
pub const LIST_PROJECTS: &str = "/depot.core.v1.ProjectService/ListProjects";
/// `ProjectService/CreateProject`.
pub const CREATE_PROJECT: &str = "/depot.core.v1.ProjectService/CreateProject";
/// `BuildService/CreateBuild`.
pub const CREATE_BUILD: &str = "/depot.cli.v1.BuildService/CreateBuild";
/// `BuildService/GetBuildKitConnection`.
pub const GET_BUILDKIT_CONNECTION: &str = "/depot.cli.v1.BuildService/GetBuildKitConnection";
/// `BuildService/ReportBuildHealth`.
pub const REPORT_BUILD_HEALTH: &str = "/depot.cli.v1.BuildService/ReportBuildHealth";
/// `BuildService/FinishBuild`.
pub const FINISH_BUILD: &str = "/depot.cli.v1.BuildService/FinishBuild";

/// The regions `CreateProject` accepts.
pub const REGIONS: [&str; 2] = ["us-east-1", "eu-central-1"];

/// The domain of the machine's names (`machine-<buildId>.depot.test`); its
/// certificate is for `*.depot.test`.
pub const MACHINE_DOMAIN: &str = "depot.test";

/// The session methods a solve needs the client to serve.
pub const SESSION_METHODS: [&str; 3] = [
    "/moby.buildkit.secrets.v1.Secrets/GetSecret",
    "/moby.filesync.v1.Auth/Credentials",
    "/grpc.health.v1.Health/Check",
];

/// Depot's default cache policy: 50 GiB.
const DEFAULT_KEEP_BYTES: i64 = 50 << 30;
/// Depot's default cache policy: 14 days.
const DEFAULT_KEEP_DAYS: i64 = 14;
/// What a pending connection asks the client to wait.
const PENDING_WAIT_MS: u64 = 100;
/// How long `Solve` waits for its session to appear.
const SESSION_WAIT: Duration = Duration::from_secs(5);
/// How long `Status` waits for a solve to claim its ref (BuildKit: 6 s).
const STATUS_WAIT: Duration = Duration::from_secs(6);
/// Bound on each call to the client's session services.
const SESSION_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest build context downloaded.
const MAX_CONTEXT_BYTES: usize = 512 << 20;
/// Bound on the registry requests of a push.
const REGISTRY_TIMEOUT: Duration = Duration::from_secs(30);
/// The platform built when the solve names none.
const DEFAULT_PLATFORM: &str = "linux/amd64";

/// A Connect error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectCode {
    /// `canceled` (HTTP 499).
    Canceled,
    /// `unknown` (500).
    Unknown,
    /// `invalid_argument` (400).
    InvalidArgument,
    /// `deadline_exceeded` (504).
    DeadlineExceeded,
    /// `not_found` (404).
    NotFound,
    /// `already_exists` (409).
    AlreadyExists,
    /// `permission_denied` (403).
    PermissionDenied,
    /// `resource_exhausted` (429).
    ResourceExhausted,
    /// `failed_precondition` (400).
    FailedPrecondition,
    /// `aborted` (409).
    Aborted,
    /// `out_of_range` (400).
    OutOfRange,
    /// `unimplemented` (404).
    Unimplemented,
    /// `internal` (500).
    Internal,
    /// `unavailable` (503).
    Unavailable,
    /// `data_loss` (500).
    DataLoss,
    /// `unauthenticated` (401).
    Unauthenticated,
}

impl ConnectCode {
    /// The code as Connect writes it (`not_found`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Canceled => "canceled",
            Self::Unknown => "unknown",
            Self::InvalidArgument => "invalid_argument",
            Self::DeadlineExceeded => "deadline_exceeded",
            Self::NotFound => "not_found",
            Self::AlreadyExists => "already_exists",
            Self::PermissionDenied => "permission_denied",
            Self::ResourceExhausted => "resource_exhausted",
            Self::FailedPrecondition => "failed_precondition",
            Self::Aborted => "aborted",
            Self::OutOfRange => "out_of_range",
            Self::Unimplemented => "unimplemented",
            Self::Internal => "internal",
            Self::Unavailable => "unavailable",
            Self::DataLoss => "data_loss",
            Self::Unauthenticated => "unauthenticated",
        }
    }

    /// The code named `name` (`not_found`).
    pub fn parse(name: &str) -> Option<Self> {
        ALL_CODES.into_iter().find(|c| c.as_str() == name)
    }

    /// The HTTP status Connect answers it with.
    pub fn http_status(self) -> u16 {
        match self {
            Self::Canceled => 499,
            Self::Unknown | Self::Internal | Self::DataLoss => 500,
            Self::InvalidArgument | Self::FailedPrecondition | Self::OutOfRange => 400,
            Self::DeadlineExceeded => 504,
            Self::NotFound | Self::Unimplemented => 404,
            Self::AlreadyExists | Self::Aborted => 409,
            Self::PermissionDenied => 403,
            Self::ResourceExhausted => 429,
            Self::Unavailable => 503,
            Self::Unauthenticated => 401,
        }
    }
}

/// Every Connect code.
const ALL_CODES: [ConnectCode; 16] = [
    ConnectCode::Canceled,
    ConnectCode::Unknown,
    ConnectCode::InvalidArgument,
    ConnectCode::DeadlineExceeded,
    ConnectCode::NotFound,
    ConnectCode::AlreadyExists,
    ConnectCode::PermissionDenied,
    ConnectCode::ResourceExhausted,
    ConnectCode::FailedPrecondition,
    ConnectCode::Aborted,
    ConnectCode::OutOfRange,
    ConnectCode::Unimplemented,
    ConnectCode::Internal,
    ConnectCode::Unavailable,
    ConnectCode::DataLoss,
    ConnectCode::Unauthenticated,
];

impl AsRef<str> for ConnectCode {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for ConnectCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which token a recorded request carried (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenKind {
    /// No `Authorization` header.
    None,
    /// The organization token.
    Org,
    /// The build token of the build with this id.
    Build(String),
    /// A token the fake did not issue, or not `Bearer`.
    Unknown,
}

/// One Connect request the fake answered.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    /// The path, e.g. [`CREATE_BUILD`].
    pub path: String,
    /// Which token it carried.
    pub token: TokenKind,
    /// The JSON body (`null` if it was not JSON), any token value in it
    /// replaced by `"<redacted>"`.
    pub body: Value,
    /// The HTTP status answered.
    pub status: u16,
    /// The Connect error answered, if any.
    pub code: Option<ConnectCode>,
}

/// A project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeProject {
    /// `projectId`: 10 lowercase alphanumerics.
    pub id: String,
    /// `organizationId`.
    pub organization_id: String,
    /// `name`.
    pub name: String,
    /// `regionId`, one of [`REGIONS`].
    pub region_id: String,
    /// `createdAt`, RFC 3339.
    pub created_at: String,
    /// `cachePolicy.keepBytes`.
    pub keep_bytes: i64,
    /// `cachePolicy.keepDays`.
    pub keep_days: i64,
}

/// How a build ended, as `FinishBuild` reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FakeBuildStatus {
    /// Not finished.
    Running,
    /// `success`.
    Succeeded,
    /// `error`, with its message.
    Failed(String),
    /// `canceled`.
    Canceled,
}

/// A build, and what its machine received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeBuild {
    /// `buildId`: 10 lowercase alphanumerics.
    pub id: String,
    /// Its project.
    pub project_id: String,
    /// Its outcome.
    pub status: FakeBuildStatus,
    /// The `options` sent to `CreateBuild` (`null` if none).
    pub options: Value,
    /// `GetBuildKitConnection` calls answered (pending or active).
    pub connection_requests: u32,
    /// Platforms asked for, distinct, in order (`BUILDER_PLATFORM_AMD64`).
    pub platforms: Vec<String>,
    /// `ReportBuildHealth` calls.
    pub health_reports: u32,
    /// Of those, calls after the build had finished.
    pub health_reports_after_finish: u32,
    /// `Solve` calls made with this build's client certificate.
    pub solves: u32,
    /// The methods its last session advertised.
    pub session_methods: Vec<String>,
    /// The secrets its machine received through the session, id → value.
    pub secrets: BTreeMap<String, String>,
    /// The registry username the session gave for the push (`Some("")`:
    /// anonymous; `None`: never asked).
    pub registry_username: Option<String>,
    /// The frontend attributes of its last solve.
    pub frontend_attrs: BTreeMap<String, String>,
}

/// How a solve ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SolveOutcome {
    /// Still running.
    Running,
    /// Built and pushed.
    Succeeded {
        /// The pushed manifest's digest.
        digest: String,
    },
    /// Failed with this message.
    Failed(String),
    /// The client dropped the call, or the build was finished under it.
    Cancelled,
}

/// One `Solve` call on the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeSolve {
    /// The solve's ref (ctrl's build id).
    pub reference: String,
    /// The Depot build whose client certificate called it.
    pub build_id: Option<String>,
    /// The session it named.
    pub session_id: String,
    /// The methods that session advertised (empty until it is found).
    pub session_methods: Vec<String>,
    /// The frontend.
    pub frontend: String,
    /// The frontend attributes.
    pub frontend_attrs: BTreeMap<String, String>,
    /// The exporters, `(type, attrs)`.
    pub exporters: Vec<(String, BTreeMap<String, String>)>,
    /// Whether the machine checked the session's health.
    pub health_checked: bool,
    /// The secrets received through the session, id → value.
    pub secrets: BTreeMap<String, String>,
    /// The registry username received (`Some("")`: anonymous).
    pub registry_username: Option<String>,
    /// How it ended.
    pub outcome: SolveOutcome,
}

/// How to start a [`FakeDepot`].
#[derive(Clone)]
pub struct FakeDepotOptions {
    /// The organization token.
    pub org_token: String,
    /// podman's Docker-compatible API socket, where solves build.
    pub podman_socket: PathBuf,
    /// The registry solves push to (`http://127.0.0.1:5000`, e.g.
    /// [`Registry::url`](crate::Registry::url)); exporters must name its
    /// host.
    pub registry_url: String,
    /// Bound on one build or push stream.
    pub build_timeout: Duration,
    /// `GetBuildKitConnection` calls answered `pending` per build.
    pub pending_polls: u32,
}

impl Default for FakeDepotOptions {
    /// A random organization token, no podman socket (solves fail
    /// `unavailable`), `http://127.0.0.1:5000`, 5 minutes, one pending poll.
    fn default() -> Self {
        Self {
            org_token: format!("depot_org_{}", random_lower_alnum(32)),
            podman_socket: PathBuf::new(),
            registry_url: "http://127.0.0.1:5000".to_owned(),
            build_timeout: Duration::from_secs(300),
            pending_polls: 1,
        }
    }
}

impl std::fmt::Debug for FakeDepotOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeDepotOptions")
            .field("org_token", &"<redacted>")
            .field("podman_socket", &self.podman_socket)
            .field("registry_url", &self.registry_url)
            .field("build_timeout", &self.build_timeout)
            .field("pending_polls", &self.pending_polls)
            .finish()
    }
}

/// The fake: its Connect API and its machine. Stops when dropped.
#[derive(Debug)]
pub struct FakeDepot {
    shared: Arc<Shared>,
    url: String,
    api_server: tokio::task::JoinHandle<()>,
    machine_server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeDepot {
    fn drop(&mut self) {
        self.shared.root.cancel();
        self.api_server.abort();
        self.machine_server.abort();
    }
}

impl FakeDepot {
    /// Starts the API and the machine on free loopback ports, with a new
    /// CA and a server certificate for `*.depot.test`.
    pub async fn start(options: FakeDepotOptions) -> Result<Self, Error> {
        let context = "start the fake Depot";
        // tonic's TLS takes rustls' process-wide provider; install ring
        // unless one is there (the workspace's only one).
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let api = crate::loopback_listener(context)?;
        let machine = crate::loopback_listener(context)?;
        let api_addr = api.local_addr().map_err(|e| Error::io(context, e))?;
        let machine_addr = machine.local_addr().map_err(|e| Error::io(context, e))?;
        let ca = LocalCa::generate()?;
        let wildcard = format!("*.{MACHINE_DOMAIN}");
        let server_cert = ca.leaf(&[wildcard.as_str()])?;
        let tls = ServerTlsConfig::new()
            .identity(Identity::from_pem(
                &server_cert.chain_pem,
                &server_cert.key_pem,
            ))
            .client_ca_root(Certificate::from_pem(&ca.cert_pem));
        let url = format!("http://{api_addr}");
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                org_id: random_lower_alnum(10),
                org_token: options.org_token,
                pending_polls: options.pending_polls,
                projects: Vec::new(),
                builds: Vec::new(),
                requests: Vec::new(),
                failures: Vec::new(),
                sessions: HashMap::new(),
                solves: Vec::new(),
                progress: HashMap::new(),
            }),
            ca,
            machine_addr,
            podman_socket: options.podman_socket,
            registry_url: options.registry_url,
            build_timeout: options.build_timeout,
            root: CancellationToken::new(),
        });

        let api = tokio::net::TcpListener::from_std(api).map_err(|e| Error::io(context, e))?;
        let router = axum::Router::new()
            .fallback(connect)
            .with_state(Arc::clone(&shared));
        let api_server = tokio::spawn(async move {
            if let Err(e) = axum::serve(ctrl_runtime::net::nodelay(api), router).await {
                tracing::warn!(error = %e, "the fake Depot's API stopped");
            }
        });

        let machine =
            tokio::net::TcpListener::from_std(machine).map_err(|e| Error::io(context, e))?;
        let mut server = tonic::transport::Server::builder()
            .tls_config(tls)
            .map_err(|e| Error::Tls(format!("the fake Depot machine's TLS: {e}")))?;
        let router = server.add_service(ControlServer::new(Machine {
            shared: Arc::clone(&shared),
        }));
        let shutdown = shared.root.clone().cancelled_owned();
        let machine_server = tokio::spawn(async move {
            let served = router
                .serve_with_incoming_shutdown(TcpListenerStream::new(machine), shutdown)
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "the fake Depot's machine stopped");
            }
        });
        Ok(Self {
            shared,
            url,
            api_server,
            machine_server,
        })
    }

    /// The API's base URL (`http://127.0.0.1:{port}`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The organization token.
    pub fn org_token(&self) -> String {
        self.state().org_token.clone()
    }

    /// The organization's id (in projects and build URLs).
    pub fn org_id(&self) -> String {
        self.state().org_id.clone()
    }

    /// The machine's endpoint as `GetBuildKitConnection` names it
    /// (`tcp://127.0.0.1:{port}`).
    pub fn machine_endpoint(&self) -> String {
        format!("tcp://{}", self.shared.machine_addr)
    }

    /// The PEM of the CA the machine's and the clients' certificates chain
    /// to.
    pub fn ca_pem(&self) -> &str {
        &self.shared.ca.cert_pem
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.shared.state)
    }

    /// Every Connect request answered so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state().requests.clone()
    }

    /// The projects, oldest first.
    pub fn projects(&self) -> Vec<FakeProject> {
        self.state().projects.clone()
    }

    /// The builds, oldest first.
    pub fn builds(&self) -> Vec<FakeBuild> {
        self.state()
            .builds
            .iter()
            .map(|b| b.public.clone())
            .collect()
    }

    /// The build with this id.
    pub fn build(&self, id: &str) -> Option<FakeBuild> {
        self.state()
            .builds
            .iter()
            .find(|b| b.public.id == id)
            .map(|b| b.public.clone())
    }

    /// Every `Solve` call on the machine, oldest first.
    pub fn solves(&self) -> Vec<FakeSolve> {
        self.state().solves.clone()
    }

    /// Creates a project as `CreateProject` would (for a test's setup).
    pub fn create_project(&self, name: &str, region_id: &str) -> FakeProject {
        let mut state = self.state();
        let project = new_project(
            &state,
            name,
            region_id,
            DEFAULT_KEEP_BYTES,
            DEFAULT_KEEP_DAYS,
        );
        state.projects.push(project.clone());
        project
    }

    /// The next request to `path` (e.g. [`CREATE_BUILD`]) that passes
    /// Connect's protocol checks (method, content type) is answered with
    /// the Connect error `code` (a [`ConnectCode`] or its name, e.g.
    /// `"unavailable"`) instead, whatever its token or body. Panics on a
    /// name that is not a Connect code.
    pub fn fail_next(&self, path: &str, code: impl AsRef<str>) -> &Self {
        let code = ConnectCode::parse(code.as_ref())
            .unwrap_or_else(|| panic!("{:?} is not a Connect error code", code.as_ref()));
        self.state().failures.push((path.to_owned(), code));
        self
    }

    /// `GetBuildKitConnection` answers `pending` to the first `n` calls of
    /// each build (counting calls already made).
    pub fn set_pending_polls(&self, n: u32) -> &Self {
        self.state().pending_polls = n;
        self
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the API and the machine share.
struct Shared {
    state: Mutex<State>,
    ca: LocalCa,
    machine_addr: SocketAddr,
    podman_socket: PathBuf,
    registry_url: String,
    build_timeout: Duration,
    /// Cancelled when the fake is dropped: stops the machine and its builds.
    root: CancellationToken,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("machine_addr", &self.machine_addr)
            .field("registry_url", &self.registry_url)
            .finish_non_exhaustive()
    }
}

struct State {
    org_id: String,
    org_token: String,
    pending_polls: u32,
    projects: Vec<FakeProject>,
    builds: Vec<BuildRecord>,
    requests: Vec<RecordedRequest>,
    failures: Vec<(String, ConnectCode)>,
    /// Open sessions by id.
    sessions: HashMap<String, SessionRecord>,
    solves: Vec<FakeSolve>,
    /// Progress logs by solve ref.
    progress: HashMap<String, Arc<watch::Sender<ProgressLog>>>,
}

struct BuildRecord {
    public: FakeBuild,
    token: String,
    cert_pem: String,
    key_pem: Zeroizing<String>,
    /// The client certificate's DER, to recognise the build on the machine.
    cert_der: Vec<u8>,
    /// Cancelled when the build finishes: its machine is released.
    machine: CancellationToken,
}

struct SessionRecord {
    channel: Channel,
    methods: Vec<String>,
}

/// Everything a solve reported, for `Status` streams.
#[derive(Default)]
struct ProgressLog {
    /// A solve claimed the ref.
    started: bool,
    events: Vec<StatusResponse>,
    /// The solve ended.
    done: bool,
}

// ---------------------------------------------------------------------------
// The Connect API.

/// An answer, built under the lock and sent after it.
enum Reply {
    Message(Value),
    Error(ConnectCode, String),
    /// A protocol-level refusal: status and headers, no body.
    Bare(u16, &'static str, &'static str),
}

impl Reply {
    fn error(code: ConnectCode, message: impl Into<String>) -> Self {
        Self::Error(code, message.into())
    }

    fn status(&self) -> u16 {
        match self {
            Self::Message(_) => 200,
            Self::Error(code, _) => code.http_status(),
            Self::Bare(status, ..) => *status,
        }
    }

    fn code(&self) -> Option<ConnectCode> {
        match self {
            Self::Error(code, _) => Some(*code),
            _ => None,
        }
    }
}

/// The procedures served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Procedure {
    ListProjects,
    CreateProject,
    CreateBuild,
    GetBuildKitConnection,
    ReportBuildHealth,
    FinishBuild,
}

impl Procedure {
    fn of(path: &str) -> Option<Self> {
        Some(match path {
            LIST_PROJECTS => Self::ListProjects,
            CREATE_PROJECT => Self::CreateProject,
            CREATE_BUILD => Self::CreateBuild,
            GET_BUILDKIT_CONNECTION => Self::GetBuildKitConnection,
            REPORT_BUILD_HEALTH => Self::ReportBuildHealth,
            FINISH_BUILD => Self::FinishBuild,
            _ => return None,
        })
    }
}

async fn connect(
    AxumState(shared): AxumState<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let path = uri.path().to_owned();
    let parsed = if body.is_empty() {
        Err("zero-length payload is not a valid JSON object".to_owned())
    } else {
        serde_json::from_slice::<Value>(&body).map_err(|e| format!("invalid JSON: {e}"))
    };
    let reply = {
        let mut state = lock(&shared.state);
        let token = token_kind(&state, &headers);
        let reply = route(
            &shared, &mut state, &method, &path, &headers, &parsed, &token,
        );
        let recorded = parsed.map_or(Value::Null, |v| redact(v, &state));
        state.requests.push(RecordedRequest {
            path,
            token,
            body: recorded,
            status: reply.status(),
            code: reply.code(),
        });
        reply
    };
    respond(reply)
}

fn respond(reply: Reply) -> Response<Body> {
    let status = StatusCode::from_u16(reply.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let response = Response::builder().status(status);
    let built = match reply {
        Reply::Message(value) => response
            .header("content-type", "application/json")
            .body(Body::from(value.to_string())),
        Reply::Error(code, message) => {
            let mut body = json!({"code": code.as_str()});
            if !message.is_empty() {
                body["message"] = Value::String(message);
            }
            response
                .header("content-type", "application/json")
                .body(Body::from(body.to_string()))
        }
        Reply::Bare(_, name, value) => response.header(name, value).body(Body::empty()),
    };
    built.unwrap_or_else(|_| Response::new(Body::from("the fake Depot built a bad response")))
}

fn token_kind(state: &State, headers: &HeaderMap) -> TokenKind {
    let Some(value) = headers.get("authorization") else {
        return TokenKind::None;
    };
    let Some((scheme, token)) = value.to_str().ok().and_then(|v| v.split_once(' ')) else {
        return TokenKind::Unknown;
    };
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return TokenKind::Unknown;
    }
    if token == state.org_token {
        return TokenKind::Org;
    }
    state
        .builds
        .iter()
        .find(|b| b.token == token)
        .map_or(TokenKind::Unknown, |b| {
            TokenKind::Build(b.public.id.clone())
        })
}

/// `value` with every string containing a token replaced.
fn redact(value: Value, state: &State) -> Value {
    match value {
        Value::String(s) => {
            let secret = (!state.org_token.is_empty() && s.contains(&state.org_token))
                || state.builds.iter().any(|b| s.contains(&b.token));
            Value::String(if secret { "<redacted>".to_owned() } else { s })
        }
        Value::Array(items) => Value::Array(items.into_iter().map(|v| redact(v, state)).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, redact(v, state)))
                .collect::<Map<_, _>>(),
        ),
        other => other,
    }
}

fn route(
    shared: &Shared,
    state: &mut State,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: &Result<Value, String>,
    token: &TokenKind,
) -> Reply {
    let Some(procedure) = Procedure::of(path) else {
        return Reply::error(
            ConnectCode::Unimplemented,
            format!("{} is not implemented", path.trim_start_matches('/')),
        );
    };
    if method != Method::POST {
        return Reply::Bare(405, "allow", "POST");
    }
    let json = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Reply::Bare(415, "accept-post", "application/json");
    }
    if let Some(at) = state.failures.iter().position(|(p, _)| p == path) {
        let (_, code) = state.failures.remove(at);
        return Reply::error(code, format!("injected {code} failure"));
    }
    let body = match body {
        Ok(v) if v.is_object() => v,
        Ok(_) => {
            return Reply::error(
                ConnectCode::InvalidArgument,
                "the request body is not a JSON object",
            );
        }
        Err(e) => return Reply::error(ConnectCode::InvalidArgument, e.clone()),
    };
    let result = match procedure {
        Procedure::ListProjects => list_projects(state, token),
        Procedure::CreateProject => create_project(state, token, body),
        Procedure::CreateBuild => create_build(shared, state, token, body),
        Procedure::GetBuildKitConnection => buildkit_connection(shared, state, token, body),
        Procedure::ReportBuildHealth => report_health(state, token, body),
        Procedure::FinishBuild => finish_build(state, token, body),
    };
    result.unwrap_or_else(|reply| reply)
}

/// A field by its JSON name or its proto name; `null` is absent.
fn field<'a>(body: &'a Value, camel: &str) -> Option<&'a Value> {
    let snake: String = camel
        .chars()
        .flat_map(|c| {
            let lower = c.to_ascii_lowercase();
            (c.is_ascii_uppercase())
                .then_some('_')
                .into_iter()
                .chain(std::iter::once(lower))
        })
        .collect();
    body.get(camel)
        .or_else(|| body.get(&snake))
        .filter(|v| !v.is_null())
}

/// A string field (absent: empty, as proto3 reads it).
fn string_field(body: &Value, camel: &str) -> Result<String, Reply> {
    match field(body, camel) {
        None => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(Reply::error(
            ConnectCode::InvalidArgument,
            format!("{camel}: expected a string, got {other}"),
        )),
    }
}

/// An integer field: a number, or a string of one (proto3 JSON's int64).
fn int_field(body: &Value, camel: &str) -> Result<Option<i64>, Reply> {
    let invalid = |v: &Value| {
        Reply::error(
            ConnectCode::InvalidArgument,
            format!("{camel}: expected an integer, got {v}"),
        )
    };
    match field(body, camel) {
        None => Ok(None),
        Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(|| invalid(&json!(n))),
        Some(Value::String(s)) => s.parse().map(Some).map_err(|_| invalid(&json!(s))),
        Some(other) => Err(invalid(other)),
    }
}

fn require_org(token: &TokenKind) -> Result<(), Reply> {
    match token {
        TokenKind::Org => Ok(()),
        TokenKind::Build(_) => Err(Reply::error(
            ConnectCode::PermissionDenied,
            "a build token cannot call this method",
        )),
        TokenKind::None => Err(Reply::error(
            ConnectCode::Unauthenticated,
            "missing bearer token",
        )),
        TokenKind::Unknown => Err(Reply::error(ConnectCode::Unauthenticated, "invalid token")),
    }
}

/// The index of the build named in `body`, whose token `token` must be.
fn require_build(state: &State, token: &TokenKind, body: &Value) -> Result<usize, Reply> {
    match token {
        TokenKind::None => {
            return Err(Reply::error(
                ConnectCode::Unauthenticated,
                "missing bearer token",
            ));
        }
        TokenKind::Unknown => {
            return Err(Reply::error(ConnectCode::Unauthenticated, "invalid token"));
        }
        TokenKind::Org | TokenKind::Build(_) => {}
    }
    let build_id = string_field(body, "buildId")?;
    if build_id.is_empty() {
        return Err(Reply::error(
            ConnectCode::InvalidArgument,
            "buildId is required",
        ));
    }
    match token {
        TokenKind::Build(id) if *id == build_id => state
            .builds
            .iter()
            .position(|b| b.public.id == build_id)
            .ok_or_else(|| {
                Reply::error(ConnectCode::NotFound, format!("build {build_id} not found"))
            }),
        _ => Err(Reply::error(
            ConnectCode::PermissionDenied,
            format!("the token is not valid for build {build_id}"),
        )),
    }
}

fn project_json(p: &FakeProject) -> Value {
    let mut project = Map::new();
    let mut put = |k: &str, v: &str| {
        if !v.is_empty() {
            project.insert(k.to_owned(), Value::String(v.to_owned()));
        }
    };
    put("projectId", &p.id);
    put("organizationId", &p.organization_id);
    put("name", &p.name);
    put("regionId", &p.region_id);
    put("createdAt", &p.created_at);
    let mut policy = Map::new();
    if p.keep_bytes != 0 {
        policy.insert("keepBytes".into(), Value::String(p.keep_bytes.to_string()));
    }
    if p.keep_days != 0 {
        policy.insert("keepDays".into(), json!(p.keep_days));
    }
    project.insert("cachePolicy".into(), Value::Object(policy));
    Value::Object(project)
}

fn new_project(
    state: &State,
    name: &str,
    region_id: &str,
    keep_bytes: i64,
    keep_days: i64,
) -> FakeProject {
    FakeProject {
        id: random_lower_alnum(10),
        organization_id: state.org_id.clone(),
        name: name.to_owned(),
        region_id: region_id.to_owned(),
        created_at: rfc3339(now_secs()),
        keep_bytes,
        keep_days,
    }
}

fn list_projects(state: &State, token: &TokenKind) -> Result<Reply, Reply> {
    require_org(token)?;
    let projects: Vec<Value> = state.projects.iter().map(project_json).collect();
    Ok(Reply::Message(if projects.is_empty() {
        json!({})
    } else {
        json!({ "projects": projects })
    }))
}

fn create_project(state: &mut State, token: &TokenKind, body: &Value) -> Result<Reply, Reply> {
    require_org(token)?;
    let invalid = |m: String| Reply::error(ConnectCode::InvalidArgument, m);
    let name = string_field(body, "name")?;
    if name.trim().is_empty() {
        return Err(invalid("name must not be empty".into()));
    }
    let region = string_field(body, "regionId")?;
    if !REGIONS.contains(&region.as_str()) {
        return Err(invalid(format!(
            "invalid region {region:?}: must be one of {}",
            REGIONS.join(", ")
        )));
    }
    let (mut keep_bytes, mut keep_days) = (DEFAULT_KEEP_BYTES, DEFAULT_KEEP_DAYS);
    if let Some(policy) = field(body, "cachePolicy") {
        if !policy.is_object() {
            return Err(invalid("cachePolicy must be an object".into()));
        }
        keep_bytes = int_field(policy, "keepBytes")?.unwrap_or(0);
        keep_days = int_field(policy, "keepDays")?.unwrap_or(0);
        if keep_bytes < 0 || keep_days < 0 {
            return Err(invalid(
                "cachePolicy.keepBytes and keepDays must not be negative".into(),
            ));
        }
    }
    let project = new_project(state, &name, &region, keep_bytes, keep_days);
    let answer = json!({ "project": project_json(&project) });
    state.projects.push(project);
    Ok(Reply::Message(answer))
}

fn create_build(
    shared: &Shared,
    state: &mut State,
    token: &TokenKind,
    body: &Value,
) -> Result<Reply, Reply> {
    require_org(token)?;
    let project_id = string_field(body, "projectId")?;
    if project_id.is_empty() {
        return Err(Reply::error(
            ConnectCode::InvalidArgument,
            "projectId is required",
        ));
    }
    if !state.projects.iter().any(|p| p.id == project_id) {
        return Err(Reply::error(
            ConnectCode::NotFound,
            format!("project {project_id} not found"),
        ));
    }
    let id = random_lower_alnum(10);
    let internal = |what: &str, e: &dyn std::fmt::Display| {
        Reply::error(ConnectCode::Internal, format!("{what}: {e}"))
    };
    let leaf = shared
        .ca
        .leaf(&[format!("build-{id}.clients.{MACHINE_DOMAIN}").as_str()])
        .map_err(|e| internal("client certificate", &e))?;
    let cert_der = CertificateDer::from_pem_slice(leaf.chain_pem.as_bytes())
        .map_err(|e| internal("client certificate", &e))?
        .as_ref()
        .to_vec();
    let token = format!("depot_build_{}", random_lower_alnum(40));
    let answer = json!({
        "buildId": id,
        "buildToken": token,
        "buildUrl": format!("https://depot.dev/orgs/{}/projects/{project_id}/builds/{id}", state.org_id),
        "projectId": project_id,
    });
    state.builds.push(BuildRecord {
        public: FakeBuild {
            id,
            project_id,
            status: FakeBuildStatus::Running,
            options: field(body, "options").cloned().unwrap_or(Value::Null),
            connection_requests: 0,
            platforms: Vec::new(),
            health_reports: 0,
            health_reports_after_finish: 0,
            solves: 0,
            session_methods: Vec::new(),
            secrets: BTreeMap::new(),
            registry_username: None,
            frontend_attrs: BTreeMap::new(),
        },
        token,
        cert_pem: leaf.chain_pem,
        key_pem: Zeroizing::new(leaf.key_pem),
        cert_der,
        machine: shared.root.child_token(),
    });
    Ok(Reply::Message(answer))
}

/// `BUILDER_PLATFORM_*` by name or number.
fn platform(body: &Value) -> Result<&'static str, Reply> {
    match field(body, "platform") {
        Some(Value::String(s)) if s == "BUILDER_PLATFORM_AMD64" => Ok("BUILDER_PLATFORM_AMD64"),
        Some(Value::String(s)) if s == "BUILDER_PLATFORM_ARM64" => Ok("BUILDER_PLATFORM_ARM64"),
        Some(Value::Number(n)) if n.as_i64() == Some(1) => Ok("BUILDER_PLATFORM_AMD64"),
        Some(Value::Number(n)) if n.as_i64() == Some(2) => Ok("BUILDER_PLATFORM_ARM64"),
        None => Err(Reply::error(
            ConnectCode::InvalidArgument,
            "platform is required (BUILDER_PLATFORM_AMD64 or BUILDER_PLATFORM_ARM64)",
        )),
        Some(other) => Err(Reply::error(
            ConnectCode::InvalidArgument,
            format!("unknown platform {other}"),
        )),
    }
}

fn buildkit_connection(
    shared: &Shared,
    state: &mut State,
    token: &TokenKind,
    body: &Value,
) -> Result<Reply, Reply> {
    let at = require_build(state, token, body)?;
    let pending_polls = state.pending_polls;
    let build = &mut state.builds[at];
    if build.public.status != FakeBuildStatus::Running {
        return Err(Reply::error(
            ConnectCode::FailedPrecondition,
            format!("build {} has finished", build.public.id),
        ));
    }
    let platform = platform(body)?;
    if let Some(engine) = field(body, "requiredEngine")
        && field(engine, "buildkit").is_none()
    {
        return Err(Reply::error(
            ConnectCode::InvalidArgument,
            format!("unsupported requiredEngine {engine}: only buildkit is available"),
        ));
    }
    let public = &mut build.public;
    if !public.platforms.iter().any(|p| p == platform) {
        public.platforms.push(platform.to_owned());
    }
    public.connection_requests += 1;
    if public.connection_requests <= pending_polls {
        return Ok(Reply::Message(
            json!({"pending": {"waitMs": PENDING_WAIT_MS}}),
        ));
    }
    Ok(Reply::Message(json!({
        "active": {
            "endpoint": format!("tcp://{}", shared.machine_addr),
            "serverName": format!("machine-{}.{MACHINE_DOMAIN}", public.id),
            "cert": {"cert": build.cert_pem, "key": build.key_pem.as_str()},
            "caCert": {"cert": shared.ca.cert_pem},
        }
    })))
}

fn report_health(state: &mut State, token: &TokenKind, body: &Value) -> Result<Reply, Reply> {
    let at = require_build(state, token, body)?;
    platform(body)?;
    let build = &mut state.builds[at].public;
    build.health_reports += 1;
    if build.status != FakeBuildStatus::Running {
        build.health_reports_after_finish += 1;
    }
    Ok(Reply::Message(json!({})))
}

fn finish_build(state: &mut State, token: &TokenKind, body: &Value) -> Result<Reply, Reply> {
    let at = require_build(state, token, body)?;
    let results: Vec<(&str, &Value)> = ["success", "error", "canceled"]
        .into_iter()
        .filter_map(|k| field(body, k).map(|v| (k, v)))
        .collect();
    let [(kind, result)] = results.as_slice() else {
        return Err(Reply::error(
            ConnectCode::InvalidArgument,
            format!(
                "exactly one of success, error, canceled must be set (got {})",
                results.len()
            ),
        ));
    };
    let status = match *kind {
        "success" => FakeBuildStatus::Succeeded,
        "error" => FakeBuildStatus::Failed(string_field(result, "error")?),
        _ => FakeBuildStatus::Canceled,
    };
    let build = &mut state.builds[at];
    if build.public.status == FakeBuildStatus::Running {
        build.public.status = status;
        build.machine.cancel();
    }
    Ok(Reply::Message(json!({})))
}

// ---------------------------------------------------------------------------
// The machine.

/// The BuildKit daemon.
struct Machine {
    shared: Arc<Shared>,
}

/// The responses of a server stream.
type ServerStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

impl Machine {
    /// The build whose client certificate made `request`.
    fn build_of<T>(&self, request: &Request<T>) -> Option<String> {
        let certs = request.peer_certs()?;
        let der = certs.first()?;
        lock(&self.shared.state)
            .builds
            .iter()
            .find(|b| b.cert_der == der.as_ref())
            .map(|b| b.public.id.clone())
    }

    /// The build's machine token (the root's without a build); `Err` if the
    /// build has finished, which released its machine.
    fn machine_of(&self, build: Option<&str>) -> Result<CancellationToken, Status> {
        let state = lock(&self.shared.state);
        let Some(record) = build.and_then(|id| state.builds.iter().find(|b| b.public.id == id))
        else {
            return Ok(self.shared.root.clone());
        };
        if record.public.status == FakeBuildStatus::Running {
            Ok(record.machine.clone())
        } else {
            Err(released(&record.public.id))
        }
    }

    /// Claims the progress log of `reference` for a new solve.
    fn claim(&self, reference: &str) -> Result<Arc<watch::Sender<ProgressLog>>, Status> {
        let mut state = lock(&self.shared.state);
        if let Some(log) = state.progress.get(reference) {
            let (started, done) = {
                let current = log.borrow();
                (current.started, current.done)
            };
            if !started {
                log.send_modify(|l| l.started = true);
                return Ok(Arc::clone(log));
            }
            if !done {
                return Err(Status::already_exists(format!("job ID {reference} exists")));
            }
        }
        let (log, _) = watch::channel(ProgressLog {
            started: true,
            ..ProgressLog::default()
        });
        let log = Arc::new(log);
        state
            .progress
            .insert(reference.to_owned(), Arc::clone(&log));
        Ok(log)
    }
}

fn released(build_id: &str) -> Status {
    Status::unavailable(format!(
        "build {build_id} has finished; its machine was released"
    ))
}

#[tonic::async_trait]
impl Control for Machine {
    async fn solve(
        &self,
        request: Request<SolveRequest>,
    ) -> Result<tonic::Response<SolveResponse>, Status> {
        let build_id = self.build_of(&request);
        let request = request.into_inner();
        let index = {
            let mut state = lock(&self.shared.state);
            let attrs: BTreeMap<String, String> = request
                .frontend_attrs
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if let Some(build) = build_id
                .as_deref()
                .and_then(|id| state.builds.iter_mut().find(|b| b.public.id == id))
            {
                build.public.solves += 1;
                build.public.frontend_attrs = attrs.clone();
            }
            state.solves.push(FakeSolve {
                reference: request.r#ref.clone(),
                build_id: build_id.clone(),
                session_id: request.session.clone(),
                session_methods: Vec::new(),
                frontend: request.frontend.clone(),
                frontend_attrs: attrs,
                exporters: request
                    .exporters
                    .iter()
                    .map(|e| {
                        let attrs = e.attrs.iter().map(|(k, v)| (k.clone(), v.clone()));
                        (e.r#type.clone(), attrs.collect())
                    })
                    .collect(),
                health_checked: false,
                secrets: BTreeMap::new(),
                registry_username: None,
                outcome: SolveOutcome::Running,
            });
            state.solves.len() - 1
        };
        let early = |status: Status| {
            update(&self.shared, index, |solve, _| {
                solve.outcome = SolveOutcome::Failed(status.message().to_owned());
            });
            status
        };
        let machine = self.machine_of(build_id.as_deref()).map_err(early)?;
        if request.r#ref.is_empty() {
            return Err(early(Status::invalid_argument("the solve has no ref")));
        }
        let log = self.claim(&request.r#ref).map_err(early)?;
        // Dropping this handler (the client went away) cancels the build.
        let cancel = machine.child_token();
        let guard = cancel.clone().drop_guard();
        let task = tokio::spawn(run_solve(
            Arc::clone(&self.shared),
            request,
            index,
            log,
            machine,
            cancel,
        ));
        let result = task.await.unwrap_or_else(|e| {
            Err(Status::internal(format!(
                "the fake machine's solve failed: {e}"
            )))
        });
        guard.disarm();
        result.map(tonic::Response::new)
    }

    type StatusStream = ServerStream<StatusResponse>;

    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<tonic::Response<Self::StatusStream>, Status> {
        let reference = request.into_inner().r#ref;
        if reference.is_empty() {
            return Err(Status::invalid_argument("status of an empty ref"));
        }
        let receiver = {
            let mut state = lock(&self.shared.state);
            state
                .progress
                .entry(reference.clone())
                .or_insert_with(|| Arc::new(watch::channel(ProgressLog::default()).0))
                .subscribe()
        };
        let deadline = tokio::time::Instant::now() + STATUS_WAIT;
        let stream = futures::stream::unfold(
            (receiver, 0usize, false),
            move |(mut receiver, next, ended)| {
                let reference = reference.clone();
                async move {
                    if ended {
                        return None;
                    }
                    loop {
                        let (item, started, done) = {
                            let log = receiver.borrow_and_update();
                            (log.events.get(next).cloned(), log.started, log.done)
                        };
                        if let Some(item) = item {
                            return Some((Ok(item), (receiver, next + 1, false)));
                        }
                        if done {
                            return None;
                        }
                        let changed = if started {
                            receiver.changed().await
                        } else {
                            match tokio::time::timeout_at(deadline, receiver.changed()).await {
                                Ok(changed) => changed,
                                Err(_) => {
                                    let missing =
                                        Status::not_found(format!("no such job {reference}"));
                                    return Some((Err(missing), (receiver, next, true)));
                                }
                            }
                        };
                        if changed.is_err() {
                            return None;
                        }
                    }
                }
            },
        );
        Ok(tonic::Response::new(Box::pin(stream)))
    }

    type SessionStream = ServerStream<BytesMessage>;

    async fn session(
        &self,
        request: Request<Streaming<BytesMessage>>,
    ) -> Result<tonic::Response<Self::SessionStream>, Status> {
        let build_id = self.build_of(&request);
        self.machine_of(build_id.as_deref())?;
        let metadata = request.metadata();
        let id = metadata
            .get(HEADER_SESSION_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                Status::invalid_argument(format!(
                    "no {HEADER_SESSION_ID} in the session's metadata"
                ))
            })?
            .to_owned();
        let methods: Vec<String> = metadata
            .get_all(HEADER_SESSION_METHOD)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect();
        let (outgoing, outgoing_rx) = mpsc::channel::<BytesMessage>(16);
        let io = ctrl_build::buildkit::pipe(request.into_inner(), outgoing);
        // The machine is the gRPC client of the session's services.
        let channel = Endpoint::from_static("http://session")
            .connect_with_connector_lazy(OnceConnector(Arc::new(Mutex::new(Some(io)))));
        {
            let mut state = lock(&self.shared.state);
            if let Some(build) = build_id
                .as_deref()
                .and_then(|b| state.builds.iter_mut().find(|r| r.public.id == b))
            {
                build.public.session_methods = methods.clone();
            }
            state
                .sessions
                .insert(id.clone(), SessionRecord { channel, methods });
        }
        let guard = SessionGuard {
            shared: Arc::clone(&self.shared),
            id,
        };
        let stream = ReceiverStream::new(outgoing_rx).map(move |message| {
            let _open = &guard;
            Ok::<_, Status>(message)
        });
        Ok(tonic::Response::new(Box::pin(stream)))
    }
}

/// Forgets a session when its stream is dropped.
struct SessionGuard {
    shared: Arc<Shared>,
    id: String,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        lock(&self.shared.state).sessions.remove(&self.id);
    }
}

/// Hands the session's byte stream to the channel, once.
#[derive(Clone)]
struct OnceConnector(Arc<Mutex<Option<DuplexStream>>>);

impl tonic::codegen::Service<Uri> for OnceConnector {
    type Response = TokioIo<DuplexStream>;
    type Error = std::io::Error;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let io = self.0.lock().unwrap_or_else(PoisonError::into_inner).take();
        std::future::ready(io.map(TokioIo::new).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "the session's stream is closed",
            )
        }))
    }
}

/// Changes solve `index` and its build under the lock.
fn update(
    shared: &Shared,
    index: usize,
    change: impl FnOnce(&mut FakeSolve, Option<&mut FakeBuild>),
) {
    let mut state = lock(&shared.state);
    let State { solves, builds, .. } = &mut *state;
    let Some(solve) = solves.get_mut(index) else {
        return;
    };
    let build = solve
        .build_id
        .as_deref()
        .and_then(|id| builds.iter_mut().find(|b| b.public.id == id))
        .map(|b| &mut b.public);
    change(solve, build);
}

/// Runs a claimed solve to its end and records how it ended.
async fn run_solve(
    shared: Arc<Shared>,
    request: SolveRequest,
    index: usize,
    log: Arc<watch::Sender<ProgressLog>>,
    machine: CancellationToken,
    cancel: CancellationToken,
) -> Result<SolveResponse, Status> {
    let mut progress = ProgressWriter { log, current: None };
    let mut result = Box::pin(execute(&shared, &request, index, &mut progress, &cancel)).await;
    if let Err(status) = &result
        && status.code() == tonic::Code::Cancelled
        && machine.is_cancelled()
    {
        let build = update_build_id(&shared, index);
        result = Err(released(&build));
    }
    let outcome = match &result {
        Ok(response) => SolveOutcome::Succeeded {
            digest: response
                .exporter_response
                .get(ctrl_build::buildkit::EXPORTED_DIGEST)
                .cloned()
                .unwrap_or_default(),
        },
        Err(_) if cancel.is_cancelled() => SolveOutcome::Cancelled,
        Err(status) => SolveOutcome::Failed(status.message().to_owned()),
    };
    update(&shared, index, |solve, _| solve.outcome = outcome);
    progress.end();
    result
}

fn update_build_id(shared: &Shared, index: usize) -> String {
    lock(&shared.state)
        .solves
        .get(index)
        .and_then(|s| s.build_id.clone())
        .unwrap_or_default()
}

/// The export a solve asks for: the image's name and its parts.
fn image_export(exporters: &[Exporter]) -> Result<(String, ImageName), Status> {
    let [exporter] = exporters else {
        return Err(Status::invalid_argument(format!(
            "the fake machine takes exactly one exporter, got {}",
            exporters.len()
        )));
    };
    if exporter.r#type != "image" {
        return Err(Status::invalid_argument(format!(
            "exporter {:?} not supported: the fake machine exports images only",
            exporter.r#type
        )));
    }
    let name = exporter
        .attrs
        .get("name")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| Status::invalid_argument("the image exporter needs a name"))?;
    if exporter.attrs.get("push").map(String::as_str) != Some("true") {
        return Err(Status::invalid_argument(
            "the image exporter must push (push=true)",
        ));
    }
    let image = parse_image(name).ok_or_else(|| {
        Status::invalid_argument(format!(
            "invalid image name {name:?}: expected host[:port]/path[:tag]"
        ))
    })?;
    Ok((name.clone(), image))
}

/// `host[:port]/path[:tag]` (no digest); the tag defaults to `latest`.
fn parse_image(name: &str) -> Option<ImageName> {
    let (host, rest) = name.split_once('/')?;
    let registry_like = host.contains('.') || host.contains(':') || host == "localhost";
    if !registry_like || rest.contains('@') {
        return None;
    }
    let (path, tag) = match rest.rsplit_once(':') {
        Some((path, tag)) if !tag.contains('/') => (path, tag),
        _ => (rest, "latest"),
    };
    if path.is_empty() || tag.is_empty() || path.split('/').any(str::is_empty) {
        return None;
    }
    Some(ImageName {
        registry: host.to_owned(),
        path: path.to_owned(),
        tag: tag.to_owned(),
    })
}

/// `host[:port]` of an `http(s)://` URL.
fn url_host(url: &str) -> &str {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or(url);
    rest.split('/').next().unwrap_or(rest)
}

/// Races `work` with the solve's cancellation.
async fn or_cancelled<T>(
    cancel: &CancellationToken,
    work: impl Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    tokio::select! {
        result = work => result,
        () = cancel.cancelled() => Err(Status::cancelled("context canceled")),
    }
}

/// Calls one of the session's services, bounded.
async fn session_call<T>(
    what: &str,
    call: impl Future<Output = Result<tonic::Response<T>, Status>>,
) -> Result<T, Status> {
    tokio::time::timeout(SESSION_CALL_TIMEOUT, call)
        .await
        .map_err(|_| {
            Status::deadline_exceeded(format!(
                "{what}: the session did not answer within {SESSION_CALL_TIMEOUT:?}"
            ))
        })?
        .map(tonic::Response::into_inner)
}

async fn execute(
    shared: &Shared,
    request: &SolveRequest,
    index: usize,
    progress: &mut ProgressWriter,
    cancel: &CancellationToken,
) -> Result<SolveResponse, Status> {
    if request.frontend != "dockerfile.v0" {
        return Err(Status::invalid_argument(format!(
            "frontend {:?} not supported: the fake machine runs dockerfile.v0",
            request.frontend
        )));
    }
    let (image_name, image) = image_export(&request.exporters)?;
    let registry_host = url_host(&shared.registry_url);
    if image.registry != registry_host {
        return Err(Status::invalid_argument(format!(
            "the fake machine pushes to {registry_host} (FakeDepotOptions::registry_url) only, not {}",
            image.registry
        )));
    }
    let attrs = &request.frontend_attrs;
    let context_url = attrs
        .get("context")
        .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
        .ok_or_else(|| {
            Status::invalid_argument(
                "the fake machine needs the frontend attribute context: an http(s) URL of a tar",
            )
        })?;
    let filename = attrs
        .get("filename")
        .map(String::as_str)
        .filter(|f| !f.is_empty())
        .unwrap_or(ctrl_build::context::DEFAULT_DOCKERFILE);
    let platform = attrs
        .get("platform")
        .map(String::as_str)
        .filter(|p| !p.is_empty())
        .unwrap_or(DEFAULT_PLATFORM);
    let build_args: BTreeMap<String, String> = attrs
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("build-arg:")?.to_owned(), v.clone())))
        .collect();

    // The session: advertised methods, then its health.
    let (channel, methods) =
        or_cancelled(cancel, wait_for_session(shared, &request.session)).await?;
    update(shared, index, |solve, _| {
        solve.session_methods.clone_from(&methods);
    });
    if let Some(missing) = SESSION_METHODS
        .iter()
        .find(|m| !methods.iter().any(|a| a == *m))
    {
        return Err(Status::invalid_argument(format!(
            "session {} does not serve {missing}",
            request.session
        )));
    }
    let mut health_client = HealthClient::new(channel.clone());
    let health = health_client.check(HealthCheckRequest {
        service: String::new(),
    });
    or_cancelled(cancel, session_call("Health/Check", health))
        .await
        .map_err(|e| {
            Status::unknown(format!(
                "session {} is not healthy: {}",
                request.session,
                e.message()
            ))
        })?;
    update(shared, index, |solve, _| solve.health_checked = true);

    // The context.
    progress.step("[internal] load remote build context");
    let download = async {
        download(context_url, shared.build_timeout)
            .await
            .map_err(Status::unknown)
    };
    let archive = match or_cancelled(cancel, download).await {
        Ok(archive) => archive,
        Err(e) => return Err(progress.fail(e)),
    };
    let prepared =
        ctrl_build::context::prepare(&archive, Layout::Root, "", filename, Limits::default());
    let context = match prepared {
        Ok(context) => context,
        Err(e) => return Err(progress.fail(Status::unknown(e.to_string()))),
    };
    progress.line(&format!(
        "transferred {} in {} entries",
        ctrl_build::context::human_bytes(context.bytes),
        context.entries
    ));
    let dockerfile = file_in_tar(&context.tar, &context.dockerfile).unwrap_or_default();

    // Secrets, through the session.
    let mut secrets: BTreeMap<String, Zeroizing<String>> = BTreeMap::new();
    for mount in secret_mounts(&dockerfile) {
        if secrets.contains_key(&mount.id) {
            continue;
        }
        let mut secrets_client = SecretsClient::new(channel.clone());
        let call = secrets_client.get_secret(GetSecretRequest {
            id: mount.id.clone(),
            annotations: HashMap::new(),
        });
        match or_cancelled(cancel, session_call("Secrets/GetSecret", call)).await {
            Ok(answer) => {
                let value = String::from_utf8_lossy(&answer.data).into_owned();
                update(shared, index, |solve, build| {
                    solve.secrets.insert(mount.id.clone(), value.clone());
                    if let Some(build) = build {
                        build.secrets.insert(mount.id.clone(), value.clone());
                    }
                });
                secrets.insert(mount.id, Zeroizing::new(value));
            }
            Err(e) if e.code() == tonic::Code::NotFound && !mount.required => {}
            Err(e) if e.code() == tonic::Code::Cancelled => return Err(e),
            Err(e) => {
                let message = if e.code() == tonic::Code::NotFound {
                    format!("secret {} not found", mount.id)
                } else {
                    format!("secret {}: {}", mount.id, e.message())
                };
                progress.step(&mount.instruction);
                return Err(progress.fail(Status::unknown(message)));
            }
        }
    }

    // The registry's credentials, through the session.
    let mut auth_client = AuthClient::new(channel);
    let call = auth_client.credentials(CredentialsRequest {
        host: registry_host.to_owned(),
    });
    let (username, password) = match or_cancelled(cancel, session_call("Auth/Credentials", call))
        .await
    {
        Ok(answer) => (answer.username, Zeroizing::new(answer.secret)),
        // BuildKit pulls and pushes anonymously when the session has none.
        Err(e) if e.code() == tonic::Code::Unimplemented => (String::new(), Zeroizing::default()),
        Err(e) if e.code() == tonic::Code::Cancelled => return Err(e),
        Err(e) => {
            return Err(progress.fail(Status::unknown(format!(
                "registry credentials for {registry_host}: {}",
                e.message()
            ))));
        }
    };
    update(shared, index, |solve, build| {
        solve.registry_username = Some(username.clone());
        if let Some(build) = build {
            build.registry_username = Some(username.clone());
        }
    });

    // The build and push, on podman.
    let registry = Registry::new(RegistryConfig {
        url: shared.registry_url.clone(),
        image_host: String::new(),
        repository: image.path.split('/').next().unwrap_or_default().to_owned(),
        username,
        password,
        request_timeout: REGISTRY_TIMEOUT,
    })
    .map_err(|e| progress.fail(Status::invalid_argument(e)))?;
    let mut builder = DockerBuilder::new(
        &shared.podman_socket.to_string_lossy(),
        shared.build_timeout,
        registry,
        platform,
    )
    .map_err(|e| {
        progress.fail(Status::unavailable(format!(
            "the fake machine's engine: {e}"
        )))
    })?;
    or_cancelled(cancel, async {
        builder
            .detect()
            .await
            .map_err(|e| Status::unavailable(format!("the fake machine's engine: {e}")))
    })
    .await
    .map_err(|e| progress.fail(e))?;
    let project_id = {
        let state = lock(&shared.state);
        let build = state.solves.get(index).and_then(|s| s.build_id.as_deref());
        state
            .builds
            .iter()
            .find(|b| Some(b.public.id.as_str()) == build)
            .map(|b| b.public.project_id.clone())
            .unwrap_or_default()
    };
    let build_request = BuildRequest {
        build_id: request.r#ref.clone(),
        // The Depot project: its cache is what a project isolates.
        project_id,
        image,
        build_args,
        platform: platform.to_owned(),
        labels: BTreeMap::new(),
        secrets,
    };
    let (events, mut events_rx) = mpsc::channel::<BuildEvent>(64);
    let build = async move {
        let built = builder
            .build(&build_request, context, &events, cancel)
            .await;
        drop(events);
        built
    };
    let forward = async {
        while let Some(event) = events_rx.recv().await {
            match event {
                BuildEvent::Step(name) => progress.step(&name),
                BuildEvent::Line(text) => progress.line(&text),
            }
        }
    };
    let (built, ()) = tokio::join!(build, forward);
    match built {
        Ok(built) => {
            progress.complete();
            Ok(SolveResponse {
                exporter_response: HashMap::from([
                    (
                        ctrl_build::buildkit::EXPORTED_DIGEST.to_owned(),
                        built.digest,
                    ),
                    ("image.name".to_owned(), image_name),
                ]),
            })
        }
        Err(BuildError::Cancelled) => Err(Status::cancelled("context canceled")),
        Err(BuildError::StepFailed { step, message }) => {
            progress.step_failed(&step, &message);
            Err(Status::unknown(message))
        }
        Err(e @ BuildError::Backend { .. }) => {
            Err(progress.fail(Status::unavailable(e.to_string())))
        }
        Err(e) => Err(progress.fail(Status::unknown(e.to_string()))),
    }
}

/// Waits up to [`SESSION_WAIT`] for session `id` to be open.
async fn wait_for_session(shared: &Shared, id: &str) -> Result<(Channel, Vec<String>), Status> {
    if id.is_empty() {
        return Err(Status::invalid_argument("the solve names no session"));
    }
    let deadline = tokio::time::Instant::now() + SESSION_WAIT;
    loop {
        let found = lock(&shared.state)
            .sessions
            .get(id)
            .map(|s| (s.channel.clone(), s.methods.clone()));
        if let Some(found) = found {
            return Ok(found);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Status::invalid_argument(format!(
                "no active session for {id}: context deadline exceeded"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Downloads the context, at most [`MAX_CONTEXT_BYTES`] within `timeout`.
async fn download(url: &str, timeout: Duration) -> Result<Vec<u8>, String> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .timeout(timeout)
        .build()
        .map_err(|e| format!("an HTTP client: {e}"))?;
    let shown = url.split('?').next().unwrap_or(url);
    let mut response = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("failed to load the build context from {shown}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!(
            "failed to load the build context from {shown}: invalid response status {}",
            response.status().as_u16()
        ));
    }
    let mut out = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("failed to load the build context from {shown}: {e}"))?
    {
        if out.len() + chunk.len() > MAX_CONTEXT_BYTES {
            return Err(format!(
                "the build context at {shown} is larger than {}",
                ctrl_build::context::human_bytes(MAX_CONTEXT_BYTES as u64)
            ));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// A file of an uncompressed tar, as text (at most 1 MiB).
fn file_in_tar(tar: &[u8], path: &str) -> Option<String> {
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries().ok()? {
        let mut entry = entry.ok()?;
        if entry.path().ok()?.to_string_lossy() == path {
            let mut text = String::new();
            (&mut entry).take(1 << 20).read_to_string(&mut text).ok()?;
            return Some(text);
        }
    }
    None
}

/// A `RUN --mount=type=secret,…` of a Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SecretMount {
    id: String,
    required: bool,
    /// The instruction, for the failing vertex's name.
    instruction: String,
}

/// The secret mounts of a Dockerfile, parsed simply: any `--mount=` option
/// with `type=secret` on any instruction (continuation lines joined). The
/// id defaults to the target's file name, as BuildKit's does.
fn secret_mounts(dockerfile: &str) -> Vec<SecretMount> {
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                instructions.push(std::mem::take(&mut current));
            }
        }
    }
    instructions.push(current);
    let mut mounts = Vec::new();
    for instruction in instructions {
        let instruction = instruction.split_whitespace().collect::<Vec<_>>().join(" ");
        for token in instruction.split(' ') {
            let Some(spec) = token.strip_prefix("--mount=") else {
                continue;
            };
            let mut options: HashMap<&str, &str> = HashMap::new();
            for part in spec.split(',') {
                let (key, value) = part.split_once('=').unwrap_or((part, "true"));
                options.insert(key.trim(), value.trim().trim_matches('"'));
            }
            if options.get("type") != Some(&"secret") {
                continue;
            }
            let target = ["target", "dst", "destination"]
                .iter()
                .find_map(|k| options.get(k));
            let id = options
                .get("id")
                .copied()
                .or_else(|| target.and_then(|t| t.rsplit('/').next()))
                .unwrap_or_default();
            if id.is_empty() {
                continue;
            }
            mounts.push(SecretMount {
                id: id.to_owned(),
                required: options
                    .get("required")
                    .is_some_and(|v| v.eq_ignore_ascii_case("true")),
                instruction: instruction.clone(),
            });
        }
    }
    mounts
}

/// Turns a solve's steps and lines into BuildKit's progress.
struct ProgressWriter {
    log: Arc<watch::Sender<ProgressLog>>,
    /// The running vertex.
    current: Option<Vertex>,
}

impl ProgressWriter {
    fn push(&self, vertexes: Vec<Vertex>, logs: Vec<VertexLog>) {
        self.log
            .send_modify(|log| log.events.push(StatusResponse { vertexes, logs }));
    }

    /// Completes the running vertex and starts one named `name`.
    fn step(&mut self, name: &str) {
        let mut vertexes = Vec::new();
        if let Some(mut previous) = self.current.take() {
            previous.completed = Some(now());
            vertexes.push(previous);
        }
        let vertex = Vertex {
            digest: vertex_digest(name),
            name: name.to_owned(),
            started: Some(now()),
            ..Vertex::default()
        };
        vertexes.push(vertex.clone());
        self.current = Some(vertex);
        self.push(vertexes, Vec::new());
    }

    /// A line of the running vertex's output.
    fn line(&mut self, text: &str) {
        if self.current.is_none() {
            self.step("[internal] build");
        }
        let digest = self
            .current
            .as_ref()
            .map(|v| v.digest.clone())
            .unwrap_or_default();
        self.push(
            Vec::new(),
            vec![VertexLog {
                vertex: digest,
                timestamp: Some(now()),
                stream: 1,
                msg: format!("{text}\n").into_bytes(),
            }],
        );
    }

    /// Completes the running vertex.
    fn complete(&mut self) {
        if let Some(mut vertex) = self.current.take() {
            vertex.completed = Some(now());
            self.push(vec![vertex], Vec::new());
        }
    }

    /// Marks the running vertex failed with the status's message, and
    /// returns the status.
    fn fail(&mut self, status: Status) -> Status {
        if self.current.is_none() {
            self.step("[internal] build");
        }
        if let Some(mut vertex) = self.current.take() {
            vertex.completed = Some(now());
            vertex.error = status.message().to_owned();
            self.push(vec![vertex], Vec::new());
        }
        status
    }

    /// Marks step `name` failed with `message`.
    fn step_failed(&mut self, name: &str, message: &str) {
        if self.current.as_ref().is_none_or(|v| v.name != name) {
            self.step(name);
        }
        self.fail(Status::unknown(message));
    }

    /// Ends the log: `Status` streams end.
    fn end(self) {
        self.log.send_modify(|log| log.done = true);
    }
}

fn vertex_digest(name: &str) -> String {
    let digest = Sha256::digest(name.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn now() -> prost_types::Timestamp {
    prost_types::Timestamp::from(SystemTime::now())
}

fn random_lower_alnum(n: usize) -> String {
    use rand::Rng as _;
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..n)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_mounts_are_found_like_buildkit_reads_them() {
        let dockerfile = "FROM busybox\n\
            # RUN --mount=type=secret,id=commented cat\n\
            RUN --mount=type=secret,id=token,required=true \\\n  \
                --mount=type=cache,target=/c cat /run/secrets/token\n\
            RUN --mount=type=secret,target=/run/secrets/npmrc cat /run/secrets/npmrc\n\
            RUN --mount=type=bind,id=no true\n";
        let mounts = secret_mounts(dockerfile);
        let ids: Vec<(&str, bool)> = mounts.iter().map(|m| (m.id.as_str(), m.required)).collect();
        assert_eq!(ids, [("token", true), ("npmrc", false)]);
        assert!(
            mounts[0]
                .instruction
                .starts_with("RUN --mount=type=secret,id=token")
        );
        assert!(mounts[0].instruction.ends_with("cat /run/secrets/token"));
    }

    #[test]
    fn image_names_and_hosts() {
        let image = parse_image("127.0.0.1:5000/ctrl/acme/web:d_1").unwrap();
        assert_eq!(
            (
                image.registry.as_str(),
                image.path.as_str(),
                image.tag.as_str()
            ),
            ("127.0.0.1:5000", "ctrl/acme/web", "d_1")
        );
        assert_eq!(parse_image("localhost/x").unwrap().tag, "latest");
        assert!(parse_image("busybox:1").is_none());
        assert!(parse_image("r.io/x@sha256:ab").is_none());
        assert_eq!(url_host("http://127.0.0.1:5000/"), "127.0.0.1:5000");
        assert_eq!(rfc3339(1_709_164_800), "2024-02-29T00:00:00Z");
    }

    #[test]
    fn proto_names_are_accepted_for_json_names() {
        let body = json!({"build_id": "b", "projectId": "p", "nothing": null});
        assert_eq!(field(&body, "buildId"), Some(&json!("b")));
        assert_eq!(field(&body, "projectId"), Some(&json!("p")));
        assert_eq!(field(&body, "nothing"), None);
        let policy = json!({"keepBytes": "42", "keep_days": 3});
        assert!(matches!(int_field(&policy, "keepBytes"), Ok(Some(42))));
        assert!(matches!(int_field(&policy, "keepDays"), Ok(Some(3))));
    }
}
