//! Logs, exec and resource usage.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::query_parameters::{LogsOptions, StatsOptions};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use tokio::io::AsyncWriteExt;

use super::DockerProvider;
use super::observe::{Instance, Observed};
use crate::Error;
use crate::provider::{ExecRequest, ExecResult, LogLine, LogOptions, LogStream};
use crate::spec::Role;
use crate::status::ResourceUsage;

const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(60);

impl Observed {
    /// The containers of `service` (default: main) in the newest revision
    /// present for each replica.
    fn pick(&self, service: Option<&str>, replica: Option<u32>) -> Vec<&Instance> {
        let mut picked: Vec<&Instance> = Vec::new();
        for instance in &self.instances {
            let wanted = match service {
                Some(name) => instance.service == name,
                None => instance.role == Role::Main,
            };
            if !wanted || replica.is_some_and(|r| r != instance.replica) {
                continue;
            }
            match picked.iter_mut().find(|p| p.replica == instance.replica) {
                Some(p) if p.revision < instance.revision => *p = instance,
                Some(_) => {}
                None => picked.push(instance),
            }
        }
        picked
    }
}

impl DockerProvider {
    pub(super) async fn log_stream(
        &self,
        workload: &str,
        options: &LogOptions,
    ) -> Result<BoxStream<'static, Result<LogLine, Error>>, Error> {
        let observed = self.observe(workload).await?;
        if observed.is_empty() {
            return Err(Error::NotFound(workload.to_owned()));
        }
        let picked = observed.pick(options.service.as_deref(), options.replica);
        if picked.is_empty() {
            return Err(Error::InvalidSpec(format!(
                "workload {workload:?} has no service {:?}{}",
                options.service.as_deref().unwrap_or("main"),
                options
                    .replica
                    .map(|r| format!(" in replica {r}"))
                    .unwrap_or_default()
            )));
        }
        // podman 4 streams nothing at all for follow with tail=0; "from
        // now on" is the same request, spelled with `since` (whole seconds:
        // lines of the current second come too).
        let (since, tail) = match (options.follow, options.tail, options.since) {
            (true, Some(0), None) => (Some(SystemTime::now()), None),
            (_, tail, since) => (since, tail),
        };
        let since = since
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| i32::try_from(d.as_secs()).unwrap_or(i32::MAX));
        let streams = picked.into_iter().map(|instance| {
            let service = instance.service.clone();
            let replica = instance.replica;
            self.docker
                .logs(
                    &instance.id,
                    Some(LogsOptions {
                        follow: options.follow,
                        stdout: true,
                        stderr: true,
                        timestamps: true,
                        since,
                        tail: tail.map_or_else(|| "all".into(), |t| t.to_string()),
                        ..Default::default()
                    }),
                )
                .map_err(|e| Error::backend("read logs", e))
                .map_ok(move |chunk| {
                    let stream = match chunk {
                        LogOutput::StdErr { .. } => LogStream::Stderr,
                        _ => LogStream::Stdout,
                    };
                    let text = String::from_utf8_lossy(&chunk.into_bytes()).into_owned();
                    let lines: Vec<Result<LogLine, Error>> = text
                        .lines()
                        .map(|raw| {
                            let (timestamp, line) = match raw.split_once(' ') {
                                Some((ts, rest)) if looks_like_timestamp(ts) => {
                                    (Some(ts.to_owned()), rest)
                                }
                                _ => (None, raw),
                            };
                            Ok(LogLine {
                                service: service.clone(),
                                replica,
                                stream,
                                timestamp,
                                line: line.to_owned(),
                            })
                        })
                        .collect();
                    futures::stream::iter(lines)
                })
                .try_flatten()
                .boxed()
        });
        Ok(futures::stream::select_all(streams).boxed())
    }

    pub(super) async fn exec_in(
        &self,
        workload: &str,
        request: &ExecRequest,
    ) -> Result<ExecResult, Error> {
        if request.command.is_empty() {
            return Err(Error::InvalidSpec("exec needs a command".into()));
        }
        let observed = self.observe(workload).await?;
        if observed.is_empty() {
            return Err(Error::NotFound(workload.to_owned()));
        }
        let picked = observed.pick(request.service.as_deref(), Some(request.replica));
        let Some(instance) = picked.first().filter(|i| i.running()) else {
            return Err(Error::InvalidSpec(format!(
                "workload {workload:?} has no running service {:?} in replica {}",
                request.service.as_deref().unwrap_or("main"),
                request.replica
            )));
        };
        self.exec_container(&instance.id, request).await
    }

    /// Runs a command in one container and collects its output and exit code.
    pub(super) async fn exec_container(
        &self,
        id: &str,
        request: &ExecRequest,
    ) -> Result<ExecResult, Error> {
        let limit = request.timeout.unwrap_or(DEFAULT_EXEC_TIMEOUT);
        let run = async {
            let exec = self
                .docker
                .create_exec(
                    id,
                    CreateExecOptions {
                        attach_stdin: Some(request.stdin.is_some()),
                        attach_stdout: Some(true),
                        attach_stderr: Some(true),
                        tty: Some(request.tty),
                        env: Some(
                            request
                                .env
                                .iter()
                                .map(|(k, v)| format!("{k}={v}"))
                                .collect(),
                        ),
                        cmd: Some(request.command.clone()),
                        ..Default::default()
                    },
                )
                .await
                .map_err(|e| Error::backend("create exec", e))?;
            let started = self
                .docker
                .start_exec(
                    &exec.id,
                    Some(StartExecOptions {
                        tty: request.tty,
                        ..Default::default()
                    }),
                )
                .await
                .map_err(|e| Error::backend("start exec", e))?;
            let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
            if let StartExecResults::Attached {
                mut output,
                mut input,
            } = started
            {
                if let Some(data) = &request.stdin {
                    input
                        .write_all(data)
                        .await
                        .map_err(|e| Error::backend("write exec stdin", e))?;
                    input
                        .shutdown()
                        .await
                        .map_err(|e| Error::backend("close exec stdin", e))?;
                }
                while let Some(chunk) = output.next().await {
                    match chunk.map_err(|e| Error::backend("read exec output", e))? {
                        LogOutput::StdErr { message } => stderr.extend_from_slice(&message),
                        other => stdout.extend_from_slice(&other.into_bytes()),
                    }
                }
            }
            // The exit code is set once the process is gone.
            loop {
                let inspect = self
                    .docker
                    .inspect_exec(&exec.id)
                    .await
                    .map_err(|e| Error::backend("inspect exec", e))?;
                if inspect.running != Some(true)
                    && let Some(exit_code) = inspect.exit_code
                {
                    return Ok(ExecResult {
                        exit_code,
                        stdout,
                        stderr,
                    });
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(limit, run).await.map_err(|_| {
            Error::backend("exec", format!("command did not finish within {limit:?}"))
        })?
    }

    pub(super) async fn resource_usage(&self, workload: &str) -> Result<ResourceUsage, Error> {
        let observed = self.observe(workload).await?;
        if observed.is_empty() {
            return Err(Error::NotFound(workload.to_owned()));
        }
        let mut usage = ResourceUsage::default();
        let mut unlimited = false;
        for instance in observed.instances.iter().filter(|i| i.running()) {
            let mut stats = self.docker.stats(
                &instance.id,
                Some(StatsOptions {
                    stream: false,
                    one_shot: false,
                }),
            );
            let Some(sample) = self
                .call("read stats", async { stats.next().await.transpose() })
                .await?
            else {
                continue;
            };
            usage.containers += 1;
            if let (Some(cpu), Some(pre)) = (&sample.cpu_stats, &sample.precpu_stats) {
                let total = |c: &bollard::models::ContainerCpuStats| {
                    c.cpu_usage
                        .as_ref()
                        .and_then(|u| u.total_usage)
                        .unwrap_or(0)
                };
                let cpu_delta = total(cpu).saturating_sub(total(pre)) as f64;
                let system_delta = cpu
                    .system_cpu_usage
                    .unwrap_or(0)
                    .saturating_sub(pre.system_cpu_usage.unwrap_or(0))
                    as f64;
                let cpus = f64::from(cpu.online_cpus.unwrap_or(1).max(1));
                if system_delta > 0.0 {
                    usage.cpu_percent += cpu_delta / system_delta * cpus * 100.0;
                }
            }
            if let Some(memory) = &sample.memory_stats {
                usage.memory_used_mib += memory.usage.unwrap_or(0) as f64 / 1048576.0;
                match memory.limit {
                    Some(limit) if instance.memory_limit > 0 => {
                        usage.memory_limit_mib += limit as f64 / 1048576.0
                    }
                    _ => unlimited = true,
                }
            }
            for net in sample.networks.iter().flat_map(|n| n.values()) {
                usage.network_rx_bytes += net.rx_bytes.unwrap_or(0);
                usage.network_tx_bytes += net.tx_bytes.unwrap_or(0);
            }
            usage.pids += sample.pids_stats.and_then(|p| p.current).unwrap_or(0);
        }
        if unlimited {
            usage.memory_limit_mib = 0.0;
        }
        Ok(usage)
    }
}

fn looks_like_timestamp(s: &str) -> bool {
    s.len() >= 20 && s.as_bytes()[4] == b'-' && s.contains('T')
}
