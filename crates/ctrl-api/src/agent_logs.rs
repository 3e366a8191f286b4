//! Instance logs read from the agents' log endpoints (krane's `[logs]`) for
//! DeploymentService.StreamDeploymentLogs: one request per region, lines
//! forwarded as they arrive. The agent already speaks the RPC's message
//! (NDJSON of `StreamDeploymentLogsResponse`), so lines pass through.
//!
//! A region that fails (unreachable, refused, no instances) becomes one
//! `LOG_STREAM_CTRL` line saying so; the other regions go on.

use std::sync::Arc;
use std::time::Duration;

use ctrl_db::cluster::LogSource;
use ctrl_proto::ctrl::v1 as pb;
use tokio::sync::mpsc;

/// How long an agent may take to answer with its first byte of headers.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a read without `follow` may take in all.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// A longer line from an agent is refused (it never sends one: lines are
/// JSON of one log line).
const MAX_LINE_BYTES: usize = 1 << 20;

/// One request for one region.
#[derive(Debug, Clone)]
pub struct LogRequest {
    /// The deployment.
    pub deployment_id: String,
    /// Keep streaming new lines.
    pub follow: bool,
    /// Past lines per instance.
    pub tail: u32,
}

/// The client for the agents' log endpoints; cheap to clone.
#[derive(Clone)]
pub struct AgentLogs {
    client: reqwest::Client,
    token: Arc<str>,
}

impl std::fmt::Debug for AgentLogs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentLogs").finish_non_exhaustive()
    }
}

impl AgentLogs {
    /// A client presenting `token` to the agents.
    pub fn new(token: &str) -> Self {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .tcp_keepalive(Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        Self {
            client,
            token: token.into(),
        }
    }

    /// Streams `source`'s lines into `tx` until the agent ends, the reader
    /// hangs up or `stop` resolves; a failure is sent as a notice line.
    pub async fn forward(
        &self,
        source: &LogSource,
        request: &LogRequest,
        tx: &mpsc::Sender<pb::StreamDeploymentLogsResponse>,
        stop: impl std::future::Future<Output = ()>,
    ) {
        let read = self.read(source, request, tx);
        let bounded = async {
            if request.follow {
                read.await
            } else {
                tokio::time::timeout(READ_TIMEOUT, read)
                    .await
                    .unwrap_or_else(|_| Err(format!("no end after {READ_TIMEOUT:?}")))
            }
        };
        let outcome = tokio::select! {
            outcome = bounded => outcome,
            () = tx.closed() => Ok(()),
            () = stop => Ok(()),
        };
        if let Err(why) = outcome {
            let _ = tx.send(notice(&source.region_name, why)).await;
        }
    }

    async fn read(
        &self,
        source: &LogSource,
        request: &LogRequest,
        tx: &mpsc::Sender<pb::StreamDeploymentLogsResponse>,
    ) -> Result<(), String> {
        // The id is validated (letters, digits, '_'), so it needs no escaping.
        let url = format!(
            "{}/v1/deployments/{}/logs?follow={}&tail={}",
            source.logs_url, request.deployment_id, request.follow, request.tail
        );
        let call = self.client.get(&url).bearer_auth(&*self.token).send();
        let mut response = tokio::time::timeout(ANSWER_TIMEOUT, call)
            .await
            .map_err(|_| format!("its agent did not answer within {ANSWER_TIMEOUT:?}"))?
            .map_err(|e| format!("its agent is unreachable: {}", describe(e)))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            let body: String = body.trim().chars().take(300).collect();
            return Err(format!("its agent answered {status}: {body}"));
        }
        let mut buffer: Vec<u8> = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("reading from its agent failed: {}", describe(e)))?
        {
            buffer.extend_from_slice(&chunk);
            while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=end).collect();
                let mut message: pb::StreamDeploymentLogsResponse =
                    serde_json::from_slice(&line)
                        .map_err(|e| format!("its agent sent an unreadable line: {e}"))?;
                // The region is the one asked, whatever the agent calls itself.
                message.region.clone_from(&source.region_name);
                if tx.send(message).await.is_err() {
                    return Ok(());
                }
            }
            if buffer.len() > MAX_LINE_BYTES {
                return Err(format!("its agent sent a line over {MAX_LINE_BYTES} bytes"));
            }
        }
        Ok(())
    }
}

/// A notice from ctrl about `region`'s stream.
pub fn notice(region: &str, text: impl std::fmt::Display) -> pb::StreamDeploymentLogsResponse {
    pb::StreamDeploymentLogsResponse {
        region: region.to_owned(),
        stream: pb::LogStream::Ctrl as i32,
        line: format!("logs of region {region}: {text}"),
        ..Default::default()
    }
}

/// A reqwest error with its causes, without the URL (the message names
/// the region; the agent's address is operator detail).
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
