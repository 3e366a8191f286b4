//! `pods/{name}/exec` over WebSocket with the channel protocol
//! (`v5.channel.k8s.io`, else `v4.channel.k8s.io`): frames are one channel
//! byte (0 stdin, 1 stdout, 2 stderr, 3 status; v5 also 255 "close
//! channel") and data. The command runs as a local process on the host —
//! this fake has no containers — with the container's literal `env`
//! values, and its exit ends in a `Status` on channel 3 as the kubelet
//! sends it.

use std::process::{ExitStatus, Stdio};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use futures::{SinkExt as _, StreamExt as _};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_util::sync::CancellationToken;

use super::server::{Answer, Call, ResourcePath, error_answer};
use super::state::Shared;
use super::status::ApiError;

const V5: &str = "v5.channel.k8s.io";
const V4: &str = "v4.channel.k8s.io";
const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const STATUS: u8 = 3;
const CLOSE: u8 = 255;

fn bad(message: impl Into<String>) -> Answer {
    error_answer(&ApiError::bad_request(message))
}

/// What to run.
struct Command {
    argv: Vec<String>,
    env: Vec<(String, String)>,
    hostname: String,
    stdin: bool,
    stdout: bool,
    stderr: bool,
}

pub(crate) fn exec(
    shared: &Arc<Shared>,
    mut request: Request<Body>,
    call: &Call,
    rp: &ResourcePath,
    name: &str,
) -> Answer {
    let namespace = rp.namespace.clone().unwrap_or_default();
    let query = &call.query;
    let command = {
        let state = shared.lock();
        let Some(pod) = state.get_in("/pods", &namespace, name) else {
            return match state.registry.get("", "v1", "pods") {
                Some(rt) => error_answer(&ApiError::not_found(&rt, name)),
                None => error_answer(&ApiError::unknown_path()),
            };
        };
        let containers: Vec<&Value> = pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .map(|a| a.iter().collect())
            .unwrap_or_default();
        let container = match query.get("container").filter(|c| !c.is_empty()) {
            Some(c) => c.to_owned(),
            None if containers.len() == 1 => containers[0]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            None => {
                let names: Vec<&str> = containers
                    .iter()
                    .filter_map(|c| c["name"].as_str())
                    .collect();
                return bad(format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    names.join(" ")
                ));
            }
        };
        let Some(spec) = containers.iter().find(|c| c["name"] == container.as_str()) else {
            return bad(format!("container {container} is not valid for pod {name}"));
        };
        let running = pod
            .pointer("/status/containerStatuses")
            .and_then(Value::as_array)
            .and_then(|cs| cs.iter().find(|c| c["name"] == container.as_str()))
            .is_some_and(|c| c.pointer("/state/running").is_some());
        if !running {
            return bad(format!(
                "unable to upgrade connection: container not found (\"{container}\")"
            ));
        }
        let env = spec["env"]
            .as_array()
            .map(|vars| {
                vars.iter()
                    .filter_map(|v| {
                        Some((
                            v["name"].as_str()?.to_owned(),
                            v["value"].as_str()?.to_owned(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Command {
            argv: query
                .all("command")
                .into_iter()
                .map(str::to_owned)
                .collect(),
            env,
            hostname: name.to_owned(),
            stdin: query.flag("stdin"),
            stdout: query.flag("stdout"),
            stderr: query.flag("stderr"),
        }
    };
    if command.argv.is_empty() {
        return bad("you must specify at least 1 command");
    }
    if !command.stdin && !command.stdout && !command.stderr {
        return bad("you must specify at least 1 of stdin, stdout, stderr");
    }
    let header = |n: &str| {
        call.headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let upgrade = header("upgrade").eq_ignore_ascii_case("websocket")
        && header("connection")
            .to_ascii_lowercase()
            .contains("upgrade");
    let key = header("sec-websocket-key");
    if !upgrade || key.is_empty() {
        return bad("Upgrade request required");
    }
    let offered = header("sec-websocket-protocol");
    let offered: Vec<&str> = offered.split(',').map(str::trim).collect();
    let Some(protocol) = [V5, V4].into_iter().find(|p| offered.contains(p)) else {
        return bad(format!(
            "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server accepts [\"{V5}\" \"{V4}\"]"
        ));
    };
    let accept = {
        let digest = ring::digest::digest(
            &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
            format!("{key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11").as_bytes(),
        );
        STANDARD.encode(digest.as_ref())
    };
    let on_upgrade = hyper::upgrade::on(&mut request);
    let shutdown = shared.shutdown.clone();
    let v5 = protocol == V5;
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        session(ws, v5, command, shutdown).await;
    });
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert("upgrade", HeaderValue::from_static("websocket"));
    headers.insert("connection", HeaderValue::from_static("Upgrade"));
    headers.insert("sec-websocket-protocol", HeaderValue::from_static(protocol));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        headers.insert("sec-websocket-accept", v);
    }
    response
}

fn frame(channel: u8, data: &[u8]) -> Message {
    let mut bytes = Vec::with_capacity(data.len() + 1);
    bytes.push(channel);
    bytes.extend_from_slice(data);
    Message::binary(bytes)
}

fn pump<R: AsyncRead + Unpin + Send + 'static>(
    mut reader: R,
    channel: u8,
    tx: mpsc::Sender<Message>,
) {
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            match reader.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx.send(frame(channel, &buffer[..n])).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
}

/// The `Status` the kubelet reports for a finished command.
fn exit_status(argv: &[String], status: ExitStatus) -> Value {
    use std::os::unix::process::ExitStatusExt as _;
    let code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1);
    if code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!(
            "command terminated with non-zero exit code: error executing command [{}], exit code {code}",
            argv.join(" ")
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

fn start_failure(argv: &[String], error: &std::io::Error) -> Value {
    let program = argv.first().map(String::as_str).unwrap_or_default();
    let why = if error.kind() == std::io::ErrorKind::NotFound {
        format!("exec: \"{program}\": executable file not found in $PATH")
    } else {
        format!("exec: \"{program}\": {error}")
    };
    let message = format!(
        "error executing command in container: failed to exec in container: failed to start exec: OCI runtime exec failed: exec failed: unable to start container process: {why}: unknown"
    );
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("Internal error occurred: {message}"),
        "reason": "InternalError",
        "details": {"causes": [{"message": message}]},
        "code": 500,
    })
}

async fn session<S>(ws: WebSocketStream<S>, v5: bool, command: Command, shutdown: CancellationToken)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut sink, mut stream) = ws.split();
    let mut process = tokio::process::Command::new(&command.argv[0]);
    process
        .args(&command.argv[1..])
        .env_clear()
        .env("HOSTNAME", &command.hostname)
        .stdin(if command.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(if command.stdout {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(if command.stderr {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .kill_on_drop(true);
    for inherited in ["PATH", "HOME"] {
        if let Some(v) = std::env::var_os(inherited) {
            process.env(inherited, v);
        }
    }
    for (k, v) in &command.env {
        process.env(k, v);
    }
    let mut child = match process.spawn() {
        Ok(child) => child,
        Err(e) => {
            let status = start_failure(&command.argv, &e);
            let _ = sink
                .send(frame(STATUS, status.to_string().as_bytes()))
                .await;
            let _ = sink.close().await;
            return;
        }
    };
    let (tx, mut output) = mpsc::channel::<Message>(16);
    if let Some(out) = child.stdout.take() {
        pump(out, STDOUT, tx.clone());
    }
    if let Some(err) = child.stderr.take() {
        pump(err, STDERR, tx.clone());
    }
    drop(tx);
    let mut stdin = child.stdin.take();
    let mut exited: Option<ExitStatus> = None;
    let mut output_done = false;
    let mut client_open = true;
    let mut can_send = true;
    while exited.is_none() || !output_done {
        tokio::select! {
            message = output.recv(), if !output_done => match message {
                Some(message) => {
                    if can_send && sink.send(message).await.is_err() {
                        can_send = false;
                    }
                }
                None => output_done = true,
            },
            status = child.wait(), if exited.is_none() => match status {
                Ok(status) => exited = Some(status),
                Err(_) => return,
            },
            incoming = stream.next(), if client_open => match incoming {
                Some(Ok(Message::Binary(data))) => match data.first() {
                    Some(&STDIN) => {
                        if let Some(pipe) = stdin.as_mut()
                            && pipe.write_all(&data[1..]).await.is_err()
                        {
                            stdin = None;
                        }
                    }
                    Some(&CLOSE) if v5 && data.get(1) == Some(&STDIN) => stdin = None,
                    _ => {}
                },
                Some(Ok(Message::Close(_))) => {
                    // v4 clients close the connection when stdin ends.
                    stdin = None;
                    client_open = false;
                    can_send = false;
                }
                Some(Ok(_)) => {}
                None | Some(Err(_)) => {
                    stdin = None;
                    client_open = false;
                    can_send = false;
                }
            },
            () = shutdown.cancelled() => return,
        }
    }
    if can_send && let Some(status) = exited {
        let body = exit_status(&command.argv, status);
        let _ = sink.send(frame(STATUS, body.to_string().as_bytes())).await;
        let _ = sink.close().await;
    }
}
