//! `GET /api/v1/namespaces/{ns}/pods/{name}/log`: what the fake
//! containers printed (`started <image>`, crash messages, lines added with
//! [`FakeKube::append_log`](super::FakeKube::append_log)), as plain text,
//! optionally followed.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{HeaderValue, Response};
use bytes::Bytes;
use serde_json::Value;
use tokio::sync::mpsc;

use super::kubelet::LogLine;
use super::server::{Answer, Call, ResourcePath, error_answer};
use super::state::{Shared, str_at};
use super::status::ApiError;
use super::time;

struct Options {
    timestamps: bool,
    since: Option<SystemTime>,
    tail: Option<usize>,
    limit_bytes: Option<usize>,
}

impl Options {
    fn render(&self, line: &LogLine) -> String {
        if self.timestamps {
            format!("{} {}\n", time::nanos(line.time), line.text)
        } else {
            format!("{}\n", line.text)
        }
    }

    fn keep(&self, line: &LogLine) -> bool {
        self.since.is_none_or(|since| line.time >= since)
    }
}

fn bad(message: String) -> Answer {
    error_answer(&ApiError::bad_request(message))
}

fn names(pod: &Value, list: &str) -> Vec<String> {
    pod.pointer(&format!("/spec/{list}"))
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn logs(shared: &Arc<Shared>, call: &Call, rp: &ResourcePath, name: &str) -> Answer {
    let namespace = rp.namespace.clone().unwrap_or_default();
    let query = &call.query;
    let state = shared.lock();
    let Some(pod) = state.get_in("/pods", &namespace, name) else {
        let Some(rt) = state.registry.get("", "v1", "pods") else {
            return error_answer(&ApiError::unknown_path());
        };
        return error_answer(&ApiError::not_found(&rt, name));
    };
    let containers = names(&pod, "containers");
    let init = names(&pod, "initContainers");
    let container = match query.get("container").filter(|c| !c.is_empty()) {
        Some(c) => c.to_owned(),
        None if containers.len() == 1 => containers[0].clone(),
        None => {
            let mut message = format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            );
            if !init.is_empty() {
                message.push_str(&format!(
                    " or one of the init containers: [{}]",
                    init.join(" ")
                ));
            }
            return bad(message);
        }
    };
    if !containers.contains(&container) && !init.contains(&container) {
        return bad(format!("container {container} is not valid for pod {name}"));
    }
    let status = ["containerStatuses", "initContainerStatuses"]
        .iter()
        .filter_map(|l| {
            pod.pointer(&format!("/status/{l}"))
                .and_then(Value::as_array)
        })
        .flatten()
        .find(|c| c["name"] == container.as_str());
    let restarts = status.and_then(|s| s["restartCount"].as_i64()).unwrap_or(0);
    let waiting = match status {
        None => Some("ContainerCreating".to_owned()),
        Some(s) if restarts == 0 => s
            .pointer("/state/waiting/reason")
            .and_then(Value::as_str)
            .map(|r| match r {
                "ErrImagePull" => "image can't be pulled".to_owned(),
                "ImagePullBackOff" => "trying and failing to pull image".to_owned(),
                other => other.to_owned(),
            }),
        Some(_) => None,
    };
    if let Some(reason) = waiting {
        return bad(format!(
            "container \"{container}\" in pod \"{name}\" is waiting to start: {reason}"
        ));
    }
    if query.flag("previous") && restarts == 0 {
        return bad(format!(
            "previous terminated container \"{container}\" in pod \"{name}\" not found"
        ));
    }
    let parse_number = |key: &str| -> Result<Option<i64>, String> {
        match query.get(key).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => v
                .parse::<i64>()
                .map(Some)
                .map_err(|_| format!("invalid {key}: {v}")),
        }
    };
    let since_seconds = match parse_number("sinceSeconds") {
        Ok(v) => v,
        Err(why) => return bad(why),
    };
    let tail = match parse_number("tailLines") {
        Ok(v) => v,
        Err(why) => return bad(why),
    };
    let limit_bytes = match parse_number("limitBytes") {
        Ok(v) => v,
        Err(why) => return bad(why),
    };
    let since_time = match query.get("sinceTime").filter(|v| !v.is_empty()) {
        None => None,
        Some(t) => match time::parse(t) {
            Some(t) => Some(t),
            None => return bad(format!("invalid sinceTime: {t}")),
        },
    };
    if since_seconds.is_some() && since_time.is_some() {
        return bad("at most one of sinceTime or sinceSeconds may be specified".to_owned());
    }
    let options = Options {
        timestamps: query.flag("timestamps"),
        since: since_time.or_else(|| {
            since_seconds.map(|s| {
                SystemTime::now()
                    .checked_sub(Duration::from_secs(u64::try_from(s.max(0)).unwrap_or(0)))
                    .unwrap_or(SystemTime::UNIX_EPOCH)
            })
        }),
        tail: tail.map(|t| usize::try_from(t.max(0)).unwrap_or(0)),
        limit_bytes: limit_bytes.map(|l| usize::try_from(l.max(0)).unwrap_or(0)),
    };
    let key = (namespace, name.to_owned(), container);
    let lines: Vec<LogLine> = state.logs.get(&key).cloned().unwrap_or_default();
    let uid = str_at(&pod, "/metadata/uid").to_owned();
    drop(state);
    let kept: Vec<&LogLine> = lines.iter().filter(|l| options.keep(l)).collect();
    let start = options.tail.map_or(0, |t| kept.len().saturating_sub(t));
    let mut text: String = kept[start..].iter().map(|l| options.render(l)).collect();
    if let Some(limit) = options.limit_bytes {
        truncate(&mut text, limit);
    }
    if !query.flag("follow") {
        return plain(Body::from(text));
    }
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(64);
    let shared = Arc::clone(shared);
    let mut sent_bytes = text.len();
    let mut seen = lines.len();
    tokio::spawn(async move {
        if !text.is_empty() && tx.send(Ok(Bytes::from(text))).await.is_err() {
            return;
        }
        loop {
            if options.limit_bytes.is_some_and(|l| sent_bytes >= l) {
                return;
            }
            let notified = shared.logs.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (fresh, alive) = {
                let state = shared.lock();
                let alive = !state.down
                    && state
                        .get_in("/pods", &key.0, &key.1)
                        .is_some_and(|p| str_at(&p, "/metadata/uid") == uid);
                let all = state.logs.get(&key).map(Vec::as_slice).unwrap_or_default();
                let fresh: Vec<LogLine> =
                    all.get(seen..).map(<[LogLine]>::to_vec).unwrap_or_default();
                seen = all.len().max(seen);
                (fresh, alive)
            };
            let mut chunk: String = fresh
                .iter()
                .filter(|l| options.keep(l))
                .map(|l| options.render(l))
                .collect();
            if let Some(limit) = options.limit_bytes {
                truncate(&mut chunk, limit.saturating_sub(sent_bytes));
            }
            if !chunk.is_empty() {
                sent_bytes += chunk.len();
                if tx.send(Ok(Bytes::from(chunk))).await.is_err() {
                    return;
                }
            }
            if !alive {
                return;
            }
            tokio::select! {
                () = notified => {}
                () = shared.shutdown.cancelled() => return,
                () = tx.closed() => return,
            }
        }
    });
    plain(Body::from_stream(
        tokio_stream::wrappers::ReceiverStream::new(rx),
    ))
}

fn truncate(text: &mut String, limit: usize) {
    if text.len() > limit {
        let mut cut = limit;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
}

fn plain(body: Body) -> Answer {
    let mut response = Response::new(body);
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static("text/plain"));
    response
}
