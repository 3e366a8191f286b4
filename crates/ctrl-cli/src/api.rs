//! Reaching ctrl-api: where it is and the token (flags, environment, or the
//! local stack's `stack.env`), one gRPC channel, a timeout on every call and
//! errors a person can act on.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use ctrl_proto::Bearer;
use ctrl_proto::ctrl::v1 as pb;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// Where ctrl-api answers when nothing says otherwise (the local stack).
pub const DEFAULT_API_URL: &str = "http://127.0.0.1:7091";

/// The API address, token and default workspace, each from the first source
/// that has it: flags, then the environment, then the nearest
/// `.dev/stack.env`.
#[derive(Clone)]
pub struct Target {
    /// ctrl-api's address.
    pub url: String,
    token: Option<String>,
    /// The workspace to use when none is named (`CTRL_WORKSPACE`).
    pub workspace: Option<String>,
    /// The edge's HTTPS port as clients reach it (`CTRL_EDGE_HTTPS_PORT`;
    /// unset = 443), so printed URLs work as printed.
    pub edge_https_port: Option<u16>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("workspace", &self.workspace)
            .field("edge_https_port", &self.edge_https_port)
            .finish()
    }
}

impl Target {
    /// Resolves the target from flags, `env` (the process environment) and
    /// the `stack.env` found from `cwd` upwards.
    pub fn resolve(
        url_flag: Option<String>,
        token_flag: Option<String>,
        workspace_flag: Option<String>,
        env: &HashMap<String, String>,
        cwd: &Path,
    ) -> Result<Self> {
        let stack = match find_stack_env(cwd) {
            Some(path) => read_env_file(&path)?,
            None => HashMap::new(),
        };
        let pick = |flag: Option<String>, key: &str| {
            flag.or_else(|| env.get(key).filter(|v| !v.is_empty()).cloned())
                .or_else(|| stack.get(key).cloned())
        };
        let edge_https_port = match pick(None, "CTRL_EDGE_HTTPS_PORT") {
            Some(p) => Some(
                p.parse::<u16>()
                    .map_err(|_| anyhow!("CTRL_EDGE_HTTPS_PORT: {p:?} is not a port number"))?,
            ),
            None => None,
        };
        Ok(Self {
            url: pick(url_flag, "CTRL_API_URL").unwrap_or_else(|| DEFAULT_API_URL.to_owned()),
            token: pick(token_flag, "CTRL_TOKEN"),
            workspace: pick(workspace_flag, "CTRL_WORKSPACE"),
            edge_https_port,
        })
    }
}

/// `.dev/stack.env` in `dir` or the nearest parent that has one.
fn find_stack_env(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .map(|d| d.join(".dev/stack.env"))
        .find(|p| p.is_file())
}

/// `KEY=VALUE` lines; blank lines and `#` comments ignored.
fn read_env_file(path: &Path) -> Result<HashMap<String, String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect())
}

type Authed = InterceptedService<Channel, Bearer>;

/// The API: one lazily connected channel shared by every service client.
#[derive(Debug, Clone)]
pub struct Api {
    url: String,
    channel: Authed,
    timeout: Duration,
}

impl Api {
    /// A client for `target` (nothing is sent until the first call).
    pub fn new(target: &Target, timeout: Duration) -> Result<Self> {
        let token = target.token.as_deref().ok_or_else(|| {
            anyhow!(
                "no API token: set CTRL_TOKEN or pass --token (the local stack writes it to .dev/stack.env)"
            )
        })?;
        let bearer = Bearer::new(token)
            .ok_or_else(|| anyhow!("the API token contains characters a header cannot carry"))?;
        let endpoint = Endpoint::from_shared(target.url.clone())
            .map_err(|_| anyhow!("{:?} is not a valid API address", target.url))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(15))
            .keep_alive_timeout(Duration::from_secs(10));
        Ok(Self {
            url: target.url.clone(),
            channel: InterceptedService::new(endpoint.connect_lazy(), bearer),
            timeout,
        })
    }

    /// WorkspaceService.
    pub fn workspaces(&self) -> pb::workspace_service_client::WorkspaceServiceClient<Authed> {
        pb::workspace_service_client::WorkspaceServiceClient::new(self.channel.clone())
    }

    /// ProjectService.
    pub fn projects(&self) -> pb::project_service_client::ProjectServiceClient<Authed> {
        pb::project_service_client::ProjectServiceClient::new(self.channel.clone())
    }

    /// AppService.
    pub fn apps(&self) -> pb::app_service_client::AppServiceClient<Authed> {
        pb::app_service_client::AppServiceClient::new(self.channel.clone())
    }

    /// EnvironmentService.
    pub fn environments(&self) -> pb::environment_service_client::EnvironmentServiceClient<Authed> {
        pb::environment_service_client::EnvironmentServiceClient::new(self.channel.clone())
    }

    /// DeploymentService.
    pub fn deployments(&self) -> pb::deployment_service_client::DeploymentServiceClient<Authed> {
        pb::deployment_service_client::DeploymentServiceClient::new(self.channel.clone())
    }

    /// BuildService.
    pub fn builds(&self) -> pb::build_service_client::BuildServiceClient<Authed> {
        pb::build_service_client::BuildServiceClient::new(self.channel.clone())
    }

    /// CustomDomainService.
    pub fn custom_domains(
        &self,
    ) -> pb::custom_domain_service_client::CustomDomainServiceClient<Authed> {
        pb::custom_domain_service_client::CustomDomainServiceClient::new(self.channel.clone())
    }

    /// RegionService.
    pub fn regions(&self) -> pb::region_service_client::RegionServiceClient<Authed> {
        pb::region_service_client::RegionServiceClient::new(self.channel.clone())
    }

    /// RepositoryService.
    pub fn repositories(&self) -> pb::repository_service_client::RepositoryServiceClient<Authed> {
        pb::repository_service_client::RepositoryServiceClient::new(self.channel.clone())
    }

    /// A request carrying the call timeout (so the server gives up too).
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(message);
        req.set_timeout(self.timeout);
        req
    }

    /// Runs one call (or the opening of a stream) under the timeout and turns
    /// a failure into one line saying what was being done.
    pub async fn call<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T> {
        self.call_status(call)
            .await
            .map_err(|status| self.explain(what, &status))
    }

    /// [`Api::call`] keeping the status, for callers that decide on its code.
    pub async fn call_status<T>(
        &self,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, tonic::Status> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result.map(tonic::Response::into_inner),
            Err(_) => Err(tonic::Status::deadline_exceeded(format!(
                "ctrl-api at {} did not answer within {:?}",
                self.url, self.timeout
            ))),
        }
    }

    /// One line for a failed call: what was being done and why it failed.
    pub fn explain(&self, what: &str, status: &tonic::Status) -> anyhow::Error {
        use tonic::Code;
        let message = status.message();
        match status.code() {
            Code::Unavailable | Code::Unknown if is_transport(status) => anyhow!(
                "cannot reach ctrl-api at {} ({}); is the stack running? (`cargo xtask dev`)",
                self.url,
                transport_reason(status)
            ),
            Code::Unauthenticated => {
                anyhow!("{what}: the API token was refused; check CTRL_TOKEN (or .dev/stack.env)")
            }
            Code::NotFound => anyhow!("{what}: not found: {message}"),
            Code::InvalidArgument => anyhow!("{what}: invalid request: {message}"),
            Code::AlreadyExists => anyhow!("{what}: already exists: {message}"),
            Code::FailedPrecondition => anyhow!("{what}: not possible now: {message}"),
            Code::DeadlineExceeded => anyhow!("{what}: timed out: {message}"),
            code => anyhow!("{what}: {message} ({code:?})"),
        }
    }
}

/// Whether the call never reached ctrl-api (connection refused, DNS, TLS).
fn is_transport(status: &tonic::Status) -> bool {
    use std::error::Error as _;
    status
        .source()
        .is_some_and(|e| e.downcast_ref::<tonic::transport::Error>().is_some())
        || status.message().contains("transport error")
        || status.message().contains("tcp connect")
}

/// The innermost cause of a transport failure ("Connection refused", …).
fn transport_reason(status: &tonic::Status) -> String {
    use std::error::Error as _;
    let mut cause: Option<&(dyn std::error::Error + 'static)> = status.source();
    let mut last = status.message().to_owned();
    while let Some(e) = cause {
        last = e.to_string();
        cause = e.source();
    }
    last
}
