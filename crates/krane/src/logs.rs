//! Answers requests for instance logs over krane's own outbound connection:
//! `WatchLogRequests` brings each request (one per reader of `ctrl logs`),
//! and the lines go back in batches with `PushLogs`. krane listens on no
//! port for logs; a region behind NAT serves them as well as any.
//!
//! A batch is sent when it reaches [`FLUSH_BYTES`], [`FLUSH_AFTER`] after
//! its first line, or the end; a followed stream that stays quiet sends an
//! empty push every [`AGENT_PROBE`] to learn whether its reader left. Pushes
//! wait for the reader (back-pressure), so a fast app never buffers more
//! than a batch here. At most [`MAX_READERS`] requests are answered at once.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ctrl_core::logs::{AGENT_PROBE, MAX_BATCH_BYTES, MAX_LINE_BYTES};
use ctrl_proto::ctrl::v1 as pb;
use ctrl_provider::{LogLine, LogOptions, LogStream};
use futures::StreamExt;
use prost::Message;
use tokio::sync::{Semaphore, watch};

use crate::agent::{Agent, LogsError};
use crate::control::Control;
use crate::stream::{StreamState, jitter};

/// A batch is sent once it holds this many bytes…
const FLUSH_BYTES: usize = MAX_BATCH_BYTES / 2;
/// …or this long after its first line.
const FLUSH_AFTER: Duration = Duration::from_millis(100);
/// Requests answered at once; more are told to retry.
const MAX_READERS: usize = 32;
/// Tries of one push before the request is given up.
const PUSH_TRIES: u32 = 3;

// A batch below the flush size plus one clipped line stays within the limit.
const _: () = assert!(FLUSH_BYTES + MAX_LINE_BYTES + 1024 <= MAX_BATCH_BYTES);

/// Follows the cluster's log requests until `stop`, reconnecting after a
/// jittered pause; each request is answered on its own task.
pub async fn serve(
    control: Control,
    agent: Agent,
    state: Arc<StreamState>,
    reconnect: (Duration, Duration),
    mut stop: watch::Receiver<bool>,
) {
    let readers = Arc::new(Semaphore::new(MAX_READERS));
    loop {
        // Before registration every call answers not_found.
        if state.registered.load(Ordering::SeqCst) {
            match control.log_requests().await {
                Ok(mut requests) => loop {
                    let next = tokio::select! {
                        _ = stop.wait_for(|s| *s) => return,
                        next = requests.message() => next,
                    };
                    match next {
                        Ok(Some(pb::WatchLogRequestsResponse {
                            request: Some(request),
                        })) => answer(&control, &agent, &readers, request, &stop),
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(e) => {
                            tracing::warn!(code = ?e.code(), message = %e.message(), "log request stream ended; reconnecting");
                            break;
                        }
                    }
                },
                Err(e) => {
                    tracing::warn!(code = ?e.code(), message = %e.message(), "cannot open the log request stream; retrying");
                }
            }
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(jitter(reconnect)) => {}
        }
    }
}

/// Answers one request on its own task (or refuses it at once when
/// [`MAX_READERS`] are being answered).
fn answer(
    control: &Control,
    agent: &Agent,
    readers: &Arc<Semaphore>,
    request: pb::LogRequest,
    stop: &watch::Receiver<bool>,
) {
    let (control, agent, mut stop) = (control.clone(), agent.clone(), stop.clone());
    let permit = readers.clone().try_acquire_owned();
    tokio::spawn(async move {
        let mut push = Pusher {
            control: &control,
            request_id: request.request_id.clone(),
            seq: 0,
        };
        let Ok(_permit) = permit else {
            let why = format!(
                "{MAX_READERS} log readers are being answered in this region; retry shortly"
            );
            let _ = push.end(&why).await;
            return;
        };
        let stopped = tokio::select! {
            () = stream(&agent, &request, &mut push) => false,
            _ = stop.wait_for(|s| *s) => true,
        };
        if stopped {
            let _ = push.end("krane is shutting down; retry").await;
        }
    });
}

/// Reads the deployment's output and pushes it until it ends or the reader
/// leaves; every failure reaches the reader as the end's error.
async fn stream(agent: &Agent, request: &pb::LogRequest, push: &mut Pusher<'_>) {
    let options = LogOptions {
        follow: request.follow,
        tail: Some(request.tail_lines),
        ..LogOptions::default()
    };
    let id = &request.deployment_id;
    let mut lines = match agent.logs(id, &options).await {
        Ok(lines) => lines,
        Err(e) => {
            let why = match e {
                LogsError::NotHere => format!("deployment {id} has no instances here"),
                LogsError::Provider(ctrl_provider::Error::NotFound(_)) => {
                    format!("deployment {id} has no instances running here now")
                }
                LogsError::Provider(e) => {
                    tracing::warn!(deployment_id = %id, error = %e, "reading logs failed");
                    format!("reading the logs failed: {e}")
                }
            };
            let _ = push.end(&why).await;
            return;
        }
    };
    // Tells the reader the request was taken, before any line exists.
    if !matches!(push.probe().await, Ok(false)) {
        return;
    }
    let mut batch = pb::LogLines::default();
    let mut size = 0;
    let mut first_at = None::<tokio::time::Instant>;
    loop {
        let wait = match first_at {
            Some(at) => (at + FLUSH_AFTER).saturating_duration_since(tokio::time::Instant::now()),
            None => AGENT_PROBE,
        };
        let next = tokio::time::timeout(wait, lines.next()).await;
        let outcome = match next {
            Ok(Some(Ok((instance, line)))) => {
                let line = to_line(instance, line);
                size += line.encoded_len() + 8;
                batch.lines.push(line);
                first_at.get_or_insert_with(tokio::time::Instant::now);
                if size < FLUSH_BYTES {
                    continue;
                }
                push.batch(std::mem::take(&mut batch)).await
            }
            Ok(Some(Err(e))) => {
                let why = format!("reading the logs failed: {e}");
                let _ = push.send(std::mem::take(&mut batch), Some(&why)).await;
                return;
            }
            Ok(None) => {
                let _ = push.send(std::mem::take(&mut batch), Some("")).await;
                return;
            }
            Err(_) if batch.lines.is_empty() => push.probe().await,
            Err(_) => push.batch(std::mem::take(&mut batch)).await,
        };
        size = 0;
        first_at = None;
        match outcome {
            Ok(false) => {}
            Ok(true) => return,
            Err(e) => {
                tracing::warn!(deployment_id = %id, code = ?e.code(), message = %e.message(), "pushing logs failed; giving up this request");
                return;
            }
        }
    }
}

/// One request's pushes, numbered in order.
struct Pusher<'a> {
    control: &'a Control,
    request_id: String,
    seq: u64,
}

impl Pusher<'_> {
    /// Pushes lines; `Ok(true)` = stop.
    async fn batch(&mut self, lines: pb::LogLines) -> Result<bool, tonic::Status> {
        self.send(lines, None).await
    }

    /// Asks whether the reader is still there; `Ok(true)` = stop.
    async fn probe(&mut self) -> Result<bool, tonic::Status> {
        self.try_push(0, pb::LogLines::default(), None).await
    }

    /// The last push, with the reason it ends (empty: it simply ended).
    async fn end(&mut self, why: &str) -> Result<bool, tonic::Status> {
        self.send(pb::LogLines::default(), Some(why)).await
    }

    async fn send(
        &mut self,
        lines: pb::LogLines,
        end: Option<&str>,
    ) -> Result<bool, tonic::Status> {
        self.seq += 1;
        self.try_push(self.seq, lines, end).await
    }

    /// A push, retried with the same number (the server records it once).
    async fn try_push(
        &self,
        seq: u64,
        lines: pb::LogLines,
        end: Option<&str>,
    ) -> Result<bool, tonic::Status> {
        let push = pb::PushLogsRequest {
            cluster: None,
            request_id: self.request_id.clone(),
            seq,
            batch: Some(lines),
            end: end.is_some(),
            error: end.unwrap_or_default().to_owned(),
        };
        let mut tries = 0;
        loop {
            tries += 1;
            match self.control.push_logs(push.clone()).await {
                Ok(stop) => return Ok(stop),
                Err(e) if tries < PUSH_TRIES && retryable(e.code()) => {
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(tries))).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

fn retryable(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown
    )
}

/// A provider's line as the relay carries it, clipped to [`MAX_LINE_BYTES`].
fn to_line(instance: String, line: LogLine) -> pb::InstanceLogLine {
    let mut text = line.line;
    if text.len() > MAX_LINE_BYTES {
        let keep = ctrl_core::names::clip(&text, MAX_LINE_BYTES - 3).len();
        text.truncate(keep);
        text.push('…');
    }
    pb::InstanceLogLine {
        instance,
        stream: match line.stream {
            LogStream::Stdout => pb::LogStream::Stdout,
            LogStream::Stderr => pb::LogStream::Stderr,
        } as i32,
        timestamp: line.timestamp.unwrap_or_default(),
        line: text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_clipped_on_a_character_boundary() {
        let line = |text: String| LogLine {
            service: "app".into(),
            replica: 0,
            stream: LogStream::Stderr,
            timestamp: None,
            line: text,
        };
        let long = "é".repeat(MAX_LINE_BYTES);
        let clipped = to_line("web-0".into(), line(long));
        assert!(
            clipped.line.len() <= MAX_LINE_BYTES,
            "{}",
            clipped.line.len()
        );
        assert!(clipped.line.ends_with('…'));
        assert_eq!(clipped.stream, pb::LogStream::Stderr as i32);
        let short = to_line("web-0".into(), line("hello".into()));
        assert_eq!(short.line, "hello");
    }
}
