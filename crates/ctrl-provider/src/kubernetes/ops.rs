//! Logs (the pod log API), exec (the exec subresource, with the command's
//! real exit code) and resource usage (metrics.k8s.io when present).

use futures::{AsyncBufReadExt, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{AttachParams, LogParams};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{KubernetesProvider, observe};
use crate::Error;
use crate::provider::{ExecRequest, ExecResult, LogLine, LogOptions, LogStream};
use crate::status::ResourceUsage;

/// Pods with their replica index.
type IndexedPods = Vec<(u32, std::sync::Arc<Pod>)>;

/// The workload's pods with their replica index (from the status, which
/// numbers them the way instance names do), current revision first.
fn pods(provider: &KubernetesProvider, workload: &str) -> Result<(String, IndexedPods), Error> {
    let (namespace, _, _) = provider.current(workload)?;
    let status = provider.observe(workload, None, "")?;
    let mut out = Vec::new();
    for pod in provider.inner.caches.pods_of(workload) {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let entry = status
            .services
            .iter()
            .find(|s| s.provider_ref.split('/').next() == Some(name.as_str()));
        if let Some(s) = entry {
            out.push((s.replica, s.draining, pod));
        }
    }
    out.sort_by_key(|(replica, draining, _)| (*draining, *replica));
    Ok((namespace, out.into_iter().map(|(r, _, p)| (r, p)).collect()))
}

pub(super) async fn logs(
    provider: &KubernetesProvider,
    workload: &str,
    options: &LogOptions,
) -> Result<futures::stream::BoxStream<'static, Result<LogLine, Error>>, Error> {
    let (namespace, pods) = pods(provider, workload)?;
    let api: Api<Pod> = Api::namespaced(provider.inner.client.clone(), &namespace);
    let mut streams = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (replica, pod) in pods {
        if options.replica.is_some_and(|r| r != replica) || !seen.insert(replica) {
            continue;
        }
        let container = match &options.service {
            Some(s) => s.clone(),
            None => observe::main_container(&pod).unwrap_or_default().to_owned(),
        };
        let params = LogParams {
            container: Some(container.clone()),
            follow: options.follow,
            tail_lines: options.tail.map(i64::from),
            since_time: options.since.map(KubernetesProvider::since),
            timestamps: true,
            ..LogParams::default()
        };
        let name = pod.metadata.name.clone().unwrap_or_default();
        let reader = provider
            .call(
                format!("read the log of {namespace}/{name} ({container})"),
                api.log_stream(&name, &params),
            )
            .await?;
        let service = container.clone();
        streams.push(
            reader
                .lines()
                .map_err(move |e| Error::backend("read a pod log", e))
                .map_ok(move |line| {
                    let (timestamp, text) = match line.split_once(' ') {
                        Some((t, rest)) if t.len() >= 20 && t.as_bytes()[4] == b'-' => {
                            (Some(t.to_owned()), rest.to_owned())
                        }
                        _ => (None, line),
                    };
                    LogLine {
                        service: service.clone(),
                        replica,
                        // The pod log API merges both streams.
                        stream: LogStream::Stdout,
                        timestamp,
                        line: text,
                    }
                })
                .boxed(),
        );
    }
    if streams.is_empty() {
        return Err(Error::NotFound(format!(
            "{workload}: no instance{}",
            options
                .replica
                .map(|r| format!(" with replica {r}"))
                .unwrap_or_default()
        )));
    }
    Ok(futures::stream::select_all(streams).boxed())
}

pub(super) async fn exec(
    provider: &KubernetesProvider,
    workload: &str,
    request: &ExecRequest,
) -> Result<ExecResult, Error> {
    if request.command.is_empty() {
        return Err(Error::InvalidSpec("exec: the command is empty".into()));
    }
    let (namespace, pods) = pods(provider, workload)?;
    let Some((_, pod)) = pods.into_iter().find(|(r, _)| *r == request.replica) else {
        return Err(Error::NotFound(format!(
            "{workload}: no instance with replica {}",
            request.replica
        )));
    };
    let container = match &request.service {
        Some(s) => s.clone(),
        None => observe::main_container(&pod).unwrap_or_default().to_owned(),
    };
    // The exec API has no environment: `env` sets it for the command.
    let mut command = Vec::new();
    if !request.env.is_empty() {
        command.push("env".to_owned());
        command.extend(request.env.iter().map(|(k, v)| format!("{k}={v}")));
    }
    command.extend(request.command.iter().cloned());
    let name = pod.metadata.name.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(provider.inner.client.clone(), &namespace);
    let params = AttachParams::default()
        .container(container.clone())
        .stdin(request.stdin.is_some())
        .stdout(true)
        .stderr(!request.tty)
        .tty(request.tty);
    let timeout = request
        .timeout
        .unwrap_or(std::time::Duration::from_secs(60));
    let run = async {
        let mut process = api
            .exec(&name, command, &params)
            .await
            .map_err(|e| Error::backend(format!("exec in {namespace}/{name} ({container})"), e))?;
        let status = process.take_status();
        if let (Some(input), Some(mut stdin)) = (&request.stdin, process.stdin()) {
            stdin
                .write_all(input)
                .await
                .map_err(|e| Error::backend("write the command's stdin", e))?;
            stdin
                .shutdown()
                .await
                .map_err(|e| Error::backend("close the command's stdin", e))?;
        }
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let out = process.stdout();
        let err = process.stderr();
        let read_out = async {
            if let Some(mut out) = out {
                out.read_to_end(&mut stdout).await?;
            }
            Ok::<_, std::io::Error>(())
        };
        let read_err = async {
            if let Some(mut err) = err {
                err.read_to_end(&mut stderr).await?;
            }
            Ok::<_, std::io::Error>(())
        };
        let (a, b) = tokio::join!(read_out, read_err);
        a.and(b)
            .map_err(|e| Error::backend("read the command's output", e))?;
        let status = match status {
            Some(status) => status.await,
            None => None,
        };
        process
            .join()
            .await
            .map_err(|e| Error::backend("finish exec", e))?;
        let exit_code = exit_code(status.as_ref())?;
        Ok(ExecResult {
            exit_code,
            stdout,
            stderr,
        })
    };
    tokio::time::timeout(timeout, run).await.map_err(|_| {
        Error::backend(
            format!("exec in {namespace}/{name}"),
            format!("the command did not finish within {timeout:?}"),
        )
    })?
}

/// The exit code a remote command's final Status reports.
fn exit_code(
    status: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>,
) -> Result<i64, Error> {
    let Some(status) = status else {
        return Err(Error::backend(
            "exec",
            "the API server sent no final status for the command",
        ));
    };
    if status.status.as_deref() == Some("Success") {
        return Ok(0);
    }
    let code = status
        .details
        .as_ref()
        .and_then(|d| d.causes.as_ref())
        .into_iter()
        .flatten()
        .find(|c| c.reason.as_deref() == Some("ExitCode"))
        .and_then(|c| c.message.as_deref())
        .and_then(|m| m.parse().ok());
    match code {
        Some(code) => Ok(code),
        None => Err(Error::backend(
            "exec",
            status
                .message
                .clone()
                .unwrap_or_else(|| "the command failed".into()),
        )),
    }
}

pub(super) async fn resources(
    provider: &KubernetesProvider,
    workload: &str,
) -> Result<ResourceUsage, Error> {
    let (namespace, _, spec) = provider.current(workload)?;
    let status = provider.observe(workload, None, "")?;
    let running = status
        .services
        .iter()
        .filter(|s| !s.draining && s.ready)
        .count();
    let memory_limit: f64 = spec
        .as_ref()
        .map(|s| {
            s.services
                .iter()
                .filter(|x| x.is_long_lived())
                .map(|x| f64::from(x.resources.memory_mib))
                .sum::<f64>()
                * f64::from(status.ready_replicas)
        })
        .unwrap_or_default();
    let mut usage = ResourceUsage {
        memory_limit_mib: memory_limit,
        containers: u32::try_from(running).unwrap_or(u32::MAX),
        ..ResourceUsage::default()
    };
    let path = format!(
        "/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods?labelSelector={}%3D{workload}",
        super::manifests::WORKLOAD.replace('/', "%2F")
    );
    let request = http::Request::get(path)
        .body(Vec::new())
        .map_err(|e| Error::backend("build the metrics request", e))?;
    let answer: Result<serde_json::Value, _> =
        tokio::time::timeout(provider.timeout(), provider.inner.client.request(request))
            .await
            .map_err(|_| Error::backend("read pod metrics", "timed out"))?;
    let metrics = match answer {
        Ok(v) => v,
        // No metrics-server: zero usage, not an error (seed 004).
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 503 => return Ok(usage),
        Err(e) => return Err(Error::backend("read pod metrics", e)),
    };
    for pod in metrics["items"].as_array().into_iter().flatten() {
        for c in pod["containers"].as_array().into_iter().flatten() {
            usage.cpu_percent += cpu_cores(c["usage"]["cpu"].as_str().unwrap_or("0")) * 100.0;
            usage.memory_used_mib +=
                bytes(c["usage"]["memory"].as_str().unwrap_or("0")) / 1_048_576.0;
        }
    }
    Ok(usage)
}

/// A CPU quantity ("250m", "12345n", "1") in cores.
fn cpu_cores(q: &str) -> f64 {
    let (number, scale) = match q.char_indices().last() {
        Some((i, 'n')) => (&q[..i], 1e-9),
        Some((i, 'u')) => (&q[..i], 1e-6),
        Some((i, 'm')) => (&q[..i], 1e-3),
        _ => (q, 1.0),
    };
    number.parse::<f64>().unwrap_or(0.0) * scale
}

/// A memory quantity ("34Mi", "1024Ki", "1G", "123") in bytes.
fn bytes(q: &str) -> f64 {
    const SUFFIXES: &[(&str, f64)] = &[
        ("Ki", 1024.0),
        ("Mi", 1_048_576.0),
        ("Gi", 1_073_741_824.0),
        ("Ti", 1_099_511_627_776.0),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
    ];
    for (suffix, scale) in SUFFIXES {
        if let Some(n) = q.strip_suffix(suffix) {
            return n.parse::<f64>().unwrap_or(0.0) * scale;
        }
    }
    q.parse().unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert!((cpu_cores("250m") - 0.25).abs() < 1e-9);
        assert!((cpu_cores("12345678n") - 0.012_345_678).abs() < 1e-9);
        assert!((cpu_cores("2") - 2.0).abs() < 1e-9);
        assert!((bytes("34Mi") - 34.0 * 1_048_576.0).abs() < 1e-3);
        assert!((bytes("1024Ki") - 1_048_576.0).abs() < 1e-3);
        assert!((bytes("1G") - 1e9).abs() < 1e-3);
    }
}
