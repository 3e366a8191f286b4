//! `POST /webhooks/github`: the GitHub App's deliveries.
//!
//! In order, before anything is started: webhooks configured (else 404),
//! the body within GitHub's 25 MB (else 413), the signature
//! (`X-Hub-Signature-256`, constant time, against the configured secrets;
//! else 401, logged without the body), the delivery id and event headers
//! and the payload (else 400 naming what is wrong), and for pushes and pull
//! requests an app connected to the repository through that installation
//! (else 422). Then the delivery goes to the worker's `GitHubWebhook`
//! handler with the delivery id as Restate's idempotency key — a redelivery
//! is the same invocation, so it never deploys twice — and the answer is 202
//! with the invocation id. Events ctrl does not act on answer 200 "ignored".

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use ctrl_github::webhook::{self, Delivery, Event, WebhookError};
use serde_json::json;

use crate::error::ApiError;
use crate::state::AppState;

/// The route.
pub const PATH: &str = "/webhooks/github";

/// The webhook route, to mount on the API's router.
pub fn router(state: AppState) -> axum::Router {
    axum::Router::new()
        .route(PATH, axum::routing::post(receive))
        .with_state(state)
}

fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn refused(status: StatusCode, message: impl std::fmt::Display) -> Response {
    answer(status, json!({ "error": message.to_string() }))
}

async fn receive(State(s): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let secrets = s.webhook_secrets();
    if secrets.is_empty() {
        return refused(
            StatusCode::NOT_FOUND,
            "GitHub webhooks are not configured on this server ([github] webhook_secret)",
        );
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let delivery_header = header(webhook::DELIVERY_HEADER).unwrap_or("-").to_owned();
    let event_header = header(webhook::EVENT_HEADER).unwrap_or("-").to_owned();
    let Ok(body) = axum::body::to_bytes(body, webhook::MAX_PAYLOAD_BYTES).await else {
        tracing::warn!(delivery = %delivery_header, event = %event_header, "refused a webhook over 25 MB");
        return refused(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the payload is over {} bytes", webhook::MAX_PAYLOAD_BYTES),
        );
    };
    if let Err(e) = webhook::verify(&secrets, header(webhook::SIGNATURE_HEADER), &body) {
        tracing::warn!(delivery = %delivery_header, event = %event_header, bytes = body.len(), error = %e, "refused a webhook");
        return refused(StatusCode::UNAUTHORIZED, e);
    }
    match accept(
        &s,
        header(webhook::DELIVERY_HEADER),
        header(webhook::EVENT_HEADER),
        &body,
    )
    .await
    {
        Ok(response) => response,
        Err(Refusal::Bad(e)) => {
            tracing::info!(delivery = %delivery_header, event = %event_header, error = %e, "refused a webhook");
            refused(StatusCode::BAD_REQUEST, e)
        }
        Err(Refusal::Unknown(message)) => {
            tracing::info!(delivery = %delivery_header, event = %event_header, %message, "a webhook about nothing ctrl knows");
            refused(StatusCode::UNPROCESSABLE_ENTITY, message)
        }
        Err(Refusal::Api(e)) => refused(e.http_status(), e),
    }
}

enum Refusal {
    Bad(WebhookError),
    Unknown(String),
    Api(ApiError),
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Self {
        Self::Api(e)
    }
}

impl From<ctrl_db::Error> for Refusal {
    fn from(e: ctrl_db::Error) -> Self {
        Self::Api(e.into())
    }
}

async fn accept(
    s: &AppState,
    delivery: Option<&str>,
    event: Option<&str>,
    body: &[u8],
) -> Result<Response, Refusal> {
    let delivery_id = webhook::delivery_id(delivery).map_err(Refusal::Bad)?;
    let event_name = event.ok_or(Refusal::Bad(WebhookError::Header {
        header: webhook::EVENT_HEADER,
        problem: "missing",
    }))?;
    let Some(event) = webhook::parse(event_name, body).map_err(Refusal::Bad)? else {
        return Ok(answer(
            StatusCode::OK,
            json!({ "status": "ignored", "reason": format!("ctrl does not act on this {event_name} event") }),
        ));
    };
    if event == Event::Ping {
        return Ok(answer(StatusCode::OK, json!({ "status": "pong" })));
    }
    if let (Some(installation), Some(repository)) = (event.installation_id(), event.repository()) {
        let connected = ctrl_db::github::for_repository(
            s.db(),
            installation,
            repository.id,
            &repository.full_name,
        )
        .await?;
        if connected.is_empty() {
            return Err(Refusal::Unknown(format!(
                "no app is connected to {} through installation {installation} (ctrl repos connect)",
                repository.full_name
            )));
        }
    }
    let delivery = Delivery {
        delivery_id: delivery_id.to_owned(),
        event,
    };
    let invocation = s
        .ingress()
        .send(
            ctrl_core::workflows::GITHUB_WEBHOOK_SERVICE,
            &delivery.key(),
            ctrl_core::workflows::GITHUB_WEBHOOK_HANDLER,
            &delivery,
            delivery_id,
        )
        .await?;
    tracing::info!(delivery = %delivery_id, event = %event_name, key = %delivery.key(), %invocation, "webhook accepted");
    Ok(answer(
        StatusCode::ACCEPTED,
        json!({ "status": "accepted", "invocation_id": invocation }),
    ))
}
