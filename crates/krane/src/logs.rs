//! `GET /v1/deployments/{id}/logs?follow=&tail=`: a deployment's output in
//! this region for ctrl-api's `StreamDeploymentLogs`, served on the HTTP
//! port when `[logs]` is configured, behind its bearer token.
//!
//! The body is NDJSON, one `ctrl.v1.StreamDeploymentLogsResponse` per line
//! in its JSON mapping (the same message ctrl-api forwards, so there is one
//! wire type). A failure after the first line is reported as a final
//! `LOG_STREAM_CTRL` line, since the status code is already sent.

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ctrl_core::logs::{DEFAULT_TAIL_LINES, MAX_TAIL_LINES};
use ctrl_proto::ctrl::v1 as pb;
use ctrl_provider::{LogLine, LogOptions, LogStream};
use ctrl_runtime::auth::BearerTokens;
use futures::StreamExt;
use serde::Deserialize;

use crate::agent::{Agent, LogsError};

#[derive(Clone)]
struct Logs {
    agent: Agent,
    region: String,
    tokens: std::sync::Arc<BearerTokens>,
}

/// The query string.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default)]
    follow: bool,
    tail: Option<u32>,
}

/// The log route, for `region`'s agent, accepting `token`.
pub fn router(agent: Agent, region: String, token: &str) -> axum::Router {
    axum::Router::new()
        .route("/v1/deployments/{deployment_id}/logs", get(logs))
        .with_state(Logs {
            agent,
            region,
            tokens: std::sync::Arc::new(BearerTokens::new(&[token.to_owned()])),
        })
}

async fn logs(
    State(s): State<Logs>,
    Path(deployment_id): Path<String>,
    headers: HeaderMap,
    params: Result<Query<Params>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if let Err(why) = s.tokens.check_header(header) {
        return (StatusCode::UNAUTHORIZED, why).into_response();
    }
    let Ok(Query(params)) = params else {
        return (
            StatusCode::BAD_REQUEST,
            format!("query: only follow=true|false and tail=<0..={MAX_TAIL_LINES}> are understood"),
        )
            .into_response();
    };
    let tail = params.tail.unwrap_or(DEFAULT_TAIL_LINES);
    if tail > MAX_TAIL_LINES {
        return (
            StatusCode::BAD_REQUEST,
            format!("tail: at most {MAX_TAIL_LINES} lines"),
        )
            .into_response();
    }
    let options = LogOptions {
        follow: params.follow,
        tail: Some(tail),
        ..LogOptions::default()
    };
    let lines = match s.agent.logs(&deployment_id, &options).await {
        Ok(lines) => lines,
        Err(LogsError::NotHere) => {
            return (
                StatusCode::NOT_FOUND,
                format!(
                    "deployment {deployment_id} has no instances in region {}",
                    s.region
                ),
            )
                .into_response();
        }
        Err(LogsError::Provider(ctrl_provider::Error::NotFound(_))) => {
            return (
                StatusCode::NOT_FOUND,
                format!(
                    "deployment {deployment_id} has no instances running in region {} now",
                    s.region
                ),
            )
                .into_response();
        }
        Err(LogsError::Provider(e)) => {
            tracing::warn!(deployment = %deployment_id, error = %e, "reading logs failed");
            return (
                StatusCode::BAD_GATEWAY,
                format!("reading the logs failed: {e}"),
            )
                .into_response();
        }
    };
    let region = s.region;
    let body = lines.map(move |item| {
        let message = match item {
            Ok((instance, line)) => to_message(&region, instance, line),
            Err(e) => pb::StreamDeploymentLogsResponse {
                region: region.clone(),
                stream: pb::LogStream::Ctrl as i32,
                line: format!("reading the logs failed: {e}"),
                ..Default::default()
            },
        };
        let mut json = serde_json::to_vec(&message).map_err(std::io::Error::other)?;
        json.push(b'\n');
        Ok::<_, std::io::Error>(Bytes::from(json))
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(body),
    )
        .into_response()
}

fn to_message(region: &str, instance: String, line: LogLine) -> pb::StreamDeploymentLogsResponse {
    pb::StreamDeploymentLogsResponse {
        region: region.to_owned(),
        instance,
        stream: match line.stream {
            LogStream::Stdout => pb::LogStream::Stdout,
            LogStream::Stderr => pb::LogStream::Stderr,
        } as i32,
        timestamp: line.timestamp.unwrap_or_default(),
        line: line.line,
    }
}
