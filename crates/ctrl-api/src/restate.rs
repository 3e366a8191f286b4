//! Starting worker invocations through Restate's ingress.
//!
//! Every call has a timeout; "send" returns as soon as Restate has durably
//! accepted the invocation (the worker runs it later). Idempotency keys make
//! a retried send return the first invocation instead of starting another.

use std::time::Duration;

use serde::Deserialize;

use crate::error::ApiError;

/// The HTTP client for Restate: bounded connect and request times, and no
/// proxy (Restate is reached directly).
fn http_client() -> reqwest::Client {
    builder().build().expect("build the Restate HTTP client")
}

fn builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
}

/// A client for one Restate ingress.
#[derive(Debug, Clone)]
pub struct Ingress {
    base: String,
    http: reqwest::Client,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SendResponse {
    invocation_id: String,
}

impl Ingress {
    /// A client for the ingress at `base` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base: &str) -> Self {
        let http = http_client();
        Self {
            base: base.trim_end_matches('/').to_owned(),
            http,
        }
    }

    /// Whether the ingress answers its health endpoint (within 2 s).
    pub async fn is_healthy(&self) -> bool {
        self.http
            .get(format!("{}/restate/health", self.base))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }

    /// Calls `service/key/handler` and waits for its JSON result. A terminal
    /// error of the handler (a rule it enforces) is `failed_precondition`
    /// with the handler's message (404: `not_found`); transport problems and
    /// server errors are `unavailable`.
    pub async fn call<I: serde::Serialize, O: serde::de::DeserializeOwned>(
        &self,
        service: &str,
        key: &str,
        handler: &str,
        input: &I,
    ) -> Result<O, ApiError> {
        #[derive(Deserialize)]
        struct Failure {
            #[serde(default)]
            message: String,
        }
        let url = format!("{}/{service}/{key}/{handler}", self.base);
        let unavailable = |why: String| {
            tracing::warn!(%service, %handler, %key, error = %why, "call to the worker failed");
            ApiError::Unavailable("the workflow engine is not reachable; retry the request".into())
        };
        let response = self
            .http
            .post(&url)
            .header(
                "x-request-id",
                crate::observe::current_request_id().unwrap_or_default(),
            )
            .json(input)
            .send()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let status = response.status();
        if status.is_success() {
            // A handler without output answers with an empty body: JSON null.
            let body = response
                .bytes()
                .await
                .map_err(|e| unavailable(e.to_string()))?;
            let body: &[u8] = if body.is_empty() { b"null" } else { &body };
            return serde_json::from_slice(body).map_err(|e| unavailable(e.to_string()));
        }
        let body = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<Failure>(&body)
            .map(|f| f.message)
            .unwrap_or_default();
        match status.as_u16() {
            404 => Err(ApiError::NotFound(if message.is_empty() {
                "not found".into()
            } else {
                message
            })),
            400..=499 if !message.is_empty() => Err(ApiError::FailedPrecondition(message)),
            _ => Err(unavailable(format!("{status}: {body}"))),
        }
    }

    /// Sends `input` to `service/key/handler` without waiting for the
    /// result; returns the invocation id.
    pub async fn send<T: serde::Serialize>(
        &self,
        service: &str,
        key: &str,
        handler: &str,
        input: &T,
        idempotency_key: &str,
    ) -> Result<String, ApiError> {
        let url = format!("{}/{service}/{key}/{handler}/send", self.base);
        let unavailable = |why: String| {
            tracing::warn!(%service, %handler, %key, error = %why, "could not start an invocation");
            ApiError::Unavailable("the workflow engine is not reachable; retry the request".into())
        };
        let response = self
            .http
            .post(&url)
            .header(
                "x-request-id",
                crate::observe::current_request_id().unwrap_or_default(),
            )
            .header("idempotency-key", idempotency_key)
            .json(input)
            .send()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(unavailable(format!("{status}: {body}")));
        }
        let accepted: SendResponse = response
            .json()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        Ok(accepted.invocation_id)
    }
}

/// A client for Restate's admin API (invocation control).
#[derive(Debug, Clone)]
pub struct Admin {
    base: String,
    http: reqwest::Client,
}

impl Admin {
    /// A client for the admin API at `base` (e.g. `http://127.0.0.1:9070`).
    pub fn new(base: &str) -> Self {
        let http = http_client();
        Self {
            base: base.trim_end_matches('/').to_owned(),
            http,
        }
    }

    /// The same client sending `Authorization: Bearer <key>` (Restate's
    /// `restate.api_key`) with every call; `None` changes nothing.
    pub fn with_api_key(self, key: Option<&str>) -> anyhow::Result<Self> {
        if key.is_none() {
            return Ok(self);
        }
        let http = builder()
            .default_headers(ctrl_runtime::sections::bearer_headers(key)?)
            .build()?;
        Ok(Self { http, ..self })
    }

    /// Cancels an invocation; cancelling one that already finished (or is
    /// unknown) is not an error, so the call is idempotent.
    pub async fn cancel(&self, invocation_id: &str) -> Result<(), ApiError> {
        let url = format!("{}/invocations/{invocation_id}/cancel", self.base);
        let response = self.http.patch(&url).send().await.map_err(|e| {
            tracing::warn!(%invocation_id, error = %e, "could not reach the Restate admin API");
            ApiError::Unavailable("the workflow engine is not reachable; retry the request".into())
        })?;
        let status = response.status();
        if status.is_success()
            || status == reqwest::StatusCode::NOT_FOUND
            || status == reqwest::StatusCode::CONFLICT
        {
            return Ok(());
        }
        let body = response.text().await.unwrap_or_default();
        tracing::warn!(%invocation_id, %status, %body, "Restate refused to cancel an invocation");
        Err(ApiError::Unavailable(
            "the workflow engine refused to cancel; retry the request".into(),
        ))
    }
}
