//! The Depot backend: builds run on Depot's BuildKit machines.
//!
//! Per build, against Depot's Connect API (JSON over HTTPS, `Authorization:
//! Bearer`), in order:
//!
//! 1. `depot.core.v1.ProjectService/ListProjects`, and `CreateProject`
//!    (`{prefix}-{ctrl project id}`, the configured region and cache
//!    policy) when it is missing — one Depot project per ctrl project, so
//!    one customer's build cache never serves another's; remembered per
//!    process.
//! 2. `depot.cli.v1.BuildService/CreateBuild` (organization token) → the
//!    build's id and its one-time build token, used for everything after.
//! 3. `ReportBuildHealth` every few seconds while the build runs (Depot
//!    cancels builds whose client went away).
//! 4. `GetBuildKitConnection` until the machine is active (waiting the
//!    `waitMs` it asks for) → its endpoint, server name and mTLS material.
//! 5. The solve on the machine through [`crate::buildkit`]: the prepared
//!    context is shared as a presigned S3 URL the machine downloads, build
//!    secrets and the registry's credentials go through the session.
//! 6. `FinishBuild` with `success`, `error` or `canceled`, always.
//!
//! Like every backend it is idempotent per build id: a tag the registry
//! already has is reused, never built twice.

use std::collections::HashMap;
use std::fmt;
use std::io::Write as _;
use std::time::Duration;

use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use zeroize::Zeroizing;

use crate::builder::{
    BuildError, BuildEvent, BuildRequest, Builder, Built, Capabilities, Events, HowBuilt,
};
use crate::buildkit::{self, Machine, Solve};
use crate::context::Context;
use crate::registry::Registry;
use crate::store::ContextStore;

/// Platforms Depot builds natively.
const PLATFORMS: [&str; 2] = ["linux/amd64", "linux/arm64"];

/// Largest API response read.
const MAX_RESPONSE: usize = 1 << 20;

/// How often a running build reports that its client is alive.
const HEALTH_INTERVAL: Duration = Duration::from_secs(5);

/// Bounds on the wait Depot asks for between machine polls.
const POLL_MIN: Duration = Duration::from_millis(100);
const POLL_MAX: Duration = Duration::from_secs(5);

/// `[depot]`.
#[derive(Clone)]
pub struct DepotConfig {
    /// `https://api.depot.dev`.
    pub api_url: String,
    /// The organization token.
    pub token: Zeroizing<String>,
    /// Region of the projects created, e.g. `us-east-1`.
    pub project_region: String,
    /// Prefix of the projects' names (`{prefix}-{ctrl project id}`).
    pub project_prefix: String,
    /// Bytes of build cache a project keeps.
    pub cache_keep_bytes: u64,
    /// Days a project keeps its build cache.
    pub cache_keep_days: u32,
    /// Bound on each API call.
    pub request_timeout: Duration,
    /// Bound on one whole build (machine, solve, push).
    pub build_timeout: Duration,
}

impl fmt::Debug for DepotConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DepotConfig")
            .field("api_url", &self.api_url)
            .field("token", &"<redacted>")
            .field("project_region", &self.project_region)
            .field("project_prefix", &self.project_prefix)
            .finish_non_exhaustive()
    }
}

type HttpClient = Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

/// Why a Depot API call failed.
#[derive(Debug)]
struct ApiError {
    method: &'static str,
    /// The Connect code (`unauthenticated`, `unavailable`, …) or the
    /// transport's failure.
    code: String,
    message: String,
}

impl ApiError {
    fn transient(&self) -> bool {
        matches!(
            self.code.as_str(),
            "unavailable"
                | "deadline_exceeded"
                | "resource_exhausted"
                | "aborted"
                | "internal"
                | "unknown"
                | "transport"
                | "timeout"
        )
    }

    fn into_build_error(self, operation: &'static str) -> BuildError {
        let message = format!("Depot {}: {} ({})", self.method, self.message, self.code);
        if self.transient() {
            BuildError::Backend { operation, message }
        } else {
            BuildError::Refused { operation, message }
        }
    }
}

/// A client of Depot's Connect API.
#[derive(Clone)]
struct Api {
    http: HttpClient,
    url: String,
    timeout: Duration,
}

impl Api {
    /// One unary Connect call with a JSON body.
    async fn call<T: DeserializeOwned>(
        &self,
        method: &'static str,
        token: &str,
        body: &serde_json::Value,
    ) -> Result<T, ApiError> {
        let err = |code: &str, message: String| ApiError {
            method,
            code: code.to_owned(),
            message,
        };
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("{}/{method}", self.url))
            .header("content-type", "application/json")
            .header("connect-protocol-version", "1")
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| err("invalid_argument", e.to_string()))?;
        let exchange = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|e| err("transport", crate::error_chain(&e)))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_RESPONSE)
                .collect()
                .await
                .map_err(|e| err("transport", e.to_string()))?
                .to_bytes();
            Ok::<_, ApiError>((status, body))
        };
        let (status, body) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| err("timeout", format!("no answer within {:?}", self.timeout)))??;
        if status.is_success() {
            return serde_json::from_slice(&body)
                .map_err(|e| err("internal", format!("unexpected answer: {e}")));
        }
        #[derive(Deserialize)]
        struct ConnectError {
            code: String,
            #[serde(default)]
            message: String,
        }
        Err(match serde_json::from_slice::<ConnectError>(&body) {
            Ok(e) => err(&e.code, e.message),
            // A proxy's page, not Depot's answer.
            Err(_) => err(
                if status.is_server_error() {
                    "unavailable"
                } else {
                    "unknown"
                },
                format!("HTTP {status}"),
            ),
        })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Project {
    project_id: String,
    name: String,
}

#[derive(Deserialize)]
struct ListProjectsResponse {
    #[serde(default)]
    projects: Vec<Project>,
}

#[derive(Deserialize)]
struct CreateProjectResponse {
    project: Project,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateBuildResponse {
    build_id: String,
    build_token: String,
    #[serde(default)]
    build_url: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConnectionResponse {
    pending: Option<Pending>,
    active: Option<Active>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Pending {
    #[serde(default)]
    wait_ms: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Active {
    endpoint: String,
    server_name: String,
    cert: Pem,
    ca_cert: Pem,
}

#[derive(Deserialize)]
struct Pem {
    cert: String,
    #[serde(default)]
    key: String,
}

#[derive(Deserialize, Serialize)]
struct Empty {}

/// The Depot backend.
pub struct DepotBuilder {
    api: Api,
    config: DepotConfig,
    registry: Registry,
    store: ContextStore,
    capabilities: Capabilities,
    /// ctrl project id → Depot project id; the lock also keeps two builds
    /// of a new project from creating it twice.
    projects: tokio::sync::Mutex<HashMap<String, String>>,
}

impl fmt::Debug for DepotBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DepotBuilder")
            .field("config", &self.config)
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

impl DepotBuilder {
    /// Checks the configuration. Contexts are shared with the machines
    /// through `store`; images go to `registry`, which the machines must
    /// reach.
    pub fn new(
        config: DepotConfig,
        registry: Registry,
        store: ContextStore,
    ) -> Result<Self, String> {
        let url = config.api_url.trim_end_matches('/').to_owned();
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(format!(
                "depot.api_url {:?} must start with https:// (or http:// for a local stand-in)",
                config.api_url
            ));
        }
        if config.token.trim().is_empty() {
            return Err("depot.token is empty".into());
        }
        let https = crate::registry::https_connector(config.request_timeout)
            .map_err(|e| format!("Depot TLS roots: {e}"))?;
        Ok(Self {
            api: Api {
                http: Client::builder(TokioExecutor::new()).build(https),
                url,
                timeout: config.request_timeout,
            },
            config,
            registry,
            store,
            capabilities: Capabilities {
                platforms: PLATFORMS.map(str::to_owned).to_vec(),
                layer_cache: true,
                secrets: true,
            },
            projects: tokio::sync::Mutex::new(HashMap::new()),
        })
    }

    /// The Depot project of a ctrl project, created when missing.
    async fn project(&self, ctrl_project: &str) -> Result<String, BuildError> {
        let mut known = self.projects.lock().await;
        if let Some(id) = known.get(ctrl_project) {
            return Ok(id.clone());
        }
        let name = format!("{}-{ctrl_project}", self.config.project_prefix);
        let token = self.config.token.as_str();
        let listed: ListProjectsResponse = self
            .api
            .call(
                "depot.core.v1.ProjectService/ListProjects",
                token,
                &json!({}),
            )
            .await
            .map_err(|e| e.into_build_error("finding the Depot project"))?;
        let id = match listed.projects.into_iter().find(|p| p.name == name) {
            Some(p) => p.project_id,
            None => {
                let created: CreateProjectResponse = self
                    .api
                    .call(
                        "depot.core.v1.ProjectService/CreateProject",
                        token,
                        &json!({
                            "name": name,
                            "regionId": self.config.project_region,
                            "cachePolicy": {
                                "keepBytes": self.config.cache_keep_bytes.to_string(),
                                "keepDays": self.config.cache_keep_days,
                            },
                        }),
                    )
                    .await
                    .map_err(|e| e.into_build_error("creating the Depot project"))?;
                tracing::info!(project = %created.project.name, depot_project = %created.project.project_id, "created a Depot project");
                created.project.project_id
            }
        };
        known.insert(ctrl_project.to_owned(), id.clone());
        Ok(id)
    }

    /// Waits for the build's machine.
    async fn machine(
        &self,
        build: &CreateBuildResponse,
        platform: &str,
        cancel: &CancellationToken,
    ) -> Result<Machine, BuildError> {
        let request = json!({
            "buildId": build.build_id,
            "platform": builder_platform(platform),
            "requiredEngine": {"buildkit": {}},
        });
        loop {
            let answer: ConnectionResponse = self
                .api
                .call(
                    "depot.cli.v1.BuildService/GetBuildKitConnection",
                    &build.build_token,
                    &request,
                )
                .await
                .map_err(|e| e.into_build_error("getting a Depot machine"))?;
            if let Some(active) = answer.active {
                return Ok(Machine {
                    endpoint: active.endpoint,
                    server_name: active.server_name,
                    ca_pem: active.ca_cert.cert,
                    cert_pem: active.cert.cert,
                    key_pem: Zeroizing::new(active.cert.key),
                });
            }
            let wait = answer
                .pending
                .map_or(POLL_MIN, |p| Duration::from_millis(p.wait_ms))
                .clamp(POLL_MIN, POLL_MAX);
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = cancel.cancelled() => return Err(BuildError::Cancelled),
            }
        }
    }

    /// Tells Depot how the build ended (bounded; a failure is logged: the
    /// build's own outcome stands).
    async fn finish(&self, build: &CreateBuildResponse, outcome: &Result<String, BuildError>) {
        let result = match outcome {
            Ok(_) => json!({"buildId": build.build_id, "success": {}}),
            Err(BuildError::Cancelled) => json!({"buildId": build.build_id, "canceled": {}}),
            Err(e) => json!({"buildId": build.build_id, "error": {"error": e.to_string()}}),
        };
        let finished: Result<Empty, _> = self
            .api
            .call(
                "depot.cli.v1.BuildService/FinishBuild",
                &build.build_token,
                &result,
            )
            .await;
        if let Err(e) = finished {
            tracing::warn!(depot_build = %build.build_id, code = %e.code, error = %e.message, "could not finish the Depot build");
        }
    }

    /// Steps 2–6 for one build whose context is shared at `context_url`.
    async fn run(
        &self,
        req: &BuildRequest,
        project_id: &str,
        context_url: &str,
        dockerfile: &str,
        events: &Events,
        cancel: &CancellationToken,
    ) -> Result<String, BuildError> {
        let build: CreateBuildResponse = self
            .api
            .call(
                "depot.cli.v1.BuildService/CreateBuild",
                self.config.token.as_str(),
                &json!({"projectId": project_id}),
            )
            .await
            .map_err(|e| e.into_build_error("creating the Depot build"))?;
        let _ = events
            .send(BuildEvent::Line(format!(
                "Depot build {} {}",
                build.build_id, build.build_url
            )))
            .await;
        let health = {
            let api = self.api.clone();
            let body =
                json!({"buildId": build.build_id, "platform": builder_platform(&req.platform)});
            let token = Zeroizing::new(build.build_token.clone());
            tokio::spawn(async move {
                loop {
                    let reported: Result<Empty, _> = api
                        .call("depot.cli.v1.BuildService/ReportBuildHealth", &token, &body)
                        .await;
                    if let Err(e) = reported {
                        tracing::debug!(code = %e.code, error = %e.message, "Depot health report failed");
                    }
                    tokio::time::sleep(HEALTH_INTERVAL).await;
                }
            })
        };
        let outcome = async {
            let machine = self.machine(&build, &req.platform, cancel).await?;
            let _ = events
                .send(BuildEvent::Line(format!(
                    "Building on Depot machine {}",
                    machine.server_name
                )))
                .await;
            let channel = machine.connect(self.config.request_timeout).await?;
            let solve = Solve {
                reference: &req.build_id,
                context_url,
                dockerfile,
                build_args: &req.build_args,
                platform: &req.platform,
                image: &req.image.tagged(),
                secrets: &req.secrets,
                registry: (self.registry.host(), self.registry.credentials()),
            };
            buildkit::solve(channel, solve, events, cancel).await
        };
        let outcome = match tokio::time::timeout(self.config.build_timeout, outcome).await {
            Ok(outcome) => outcome,
            Err(_) => Err(BuildError::Backend {
                operation: "building on Depot",
                message: format!("no result within {:?}", self.config.build_timeout),
            }),
        };
        health.abort();
        self.finish(&build, &outcome).await;
        outcome
    }
}

#[async_trait::async_trait]
impl Builder for DepotBuilder {
    fn name(&self) -> &'static str {
        "depot"
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
        self.capabilities.check_platform(&req.platform)?;
        if let Some(built) = self.registry.earlier_push(req, events).await? {
            return Ok(built);
        }
        let project_id = self.project(&req.project_id).await?;
        let tar_gz = gzip(&context.tar).map_err(|e| BuildError::Backend {
            operation: "compressing the context",
            message: e.to_string(),
        })?;
        let ttl = self.config.build_timeout + Duration::from_secs(600);
        let context_url = self
            .store
            .share_prepared(&req.build_id, tar_gz, ttl)
            .await
            .map_err(|e| BuildError::Backend {
                operation: "sharing the context with Depot",
                message: e.to_string(),
            })?;
        let outcome = self
            .run(
                req,
                &project_id,
                &context_url,
                &context.dockerfile,
                events,
                cancel,
            )
            .await;
        if let Err(e) = self.store.delete_prepared(&req.build_id).await {
            tracing::debug!(error = %e, "could not delete the shared context");
        }
        let exported = outcome?;
        // The registry, not the machine's word, says what the tag is.
        let built = self
            .registry
            .pushed(req, events, HowBuilt::Built, "Depot")
            .await?;
        if built.digest != exported {
            tracing::warn!(digest = %built.digest, %exported, "the registry's digest differs from the one Depot exported");
        }
        Ok(built)
    }
}

/// Depot's name of the machine architecture a target platform builds on.
fn builder_platform(platform: &str) -> &'static str {
    if platform.ends_with("arm64") {
        "BUILDER_PLATFORM_ARM64"
    } else {
        "BUILDER_PLATFORM_AMD64"
    }
}

fn gzip(tar: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(tar)?;
    encoder.finish()
}
