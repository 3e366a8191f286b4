//! One module per group of commands; [`Ctx`] is what they share.

mod build;
mod deploy;
mod deployments;
mod domains;
mod logs;
mod regions;
mod repos;
mod tenancy;
mod variables;

use std::collections::HashMap;
use std::process::ExitCode;

use anyhow::Result;
use ctrl_proto::ctrl::v1 as pb;
use serde::Serialize;

use crate::api::Api;
use crate::args::{Command, Output};
use crate::output;
use crate::resolve;

/// What every command needs: the API, the workspace the user chose (if
/// any) and the output format.
#[derive(Debug)]
pub struct Ctx {
    /// The API client.
    pub api: Api,
    /// `--workspace`, else `CTRL_WORKSPACE` (also read from stack.env).
    pub workspace: Option<String>,
    /// `--output`.
    pub output: Output,
    /// The user's name (`$USER`), recorded as the actor of changes.
    pub user: String,
    /// The edge's HTTPS port, when not 443 (printed URLs carry it).
    pub edge_https_port: Option<u16>,
}

impl Ctx {
    /// A context from the parsed flags and the process environment.
    pub fn new(
        api: Api,
        workspace: Option<String>,
        output: Output,
        env: &HashMap<String, String>,
    ) -> Self {
        Self {
            api,
            workspace,
            output,
            user: env.get("USER").cloned().unwrap_or_else(|| "cli".into()),
            edge_https_port: None,
        }
    }

    fn json(&self) -> bool {
        self.output == Output::Json
    }

    fn workspace_ref(&self) -> Option<&str> {
        self.workspace.as_deref()
    }

    /// Waits until `get` answers `not_found`: the deletion `what` started
    /// has removed it (a cascade stops the instances first, so this takes
    /// as long as they take to stop). Ctrl-C stops waiting, not the deletion.
    async fn until_gone<T>(
        &self,
        what: &str,
        mut get: impl AsyncFnMut() -> std::result::Result<tonic::Response<T>, tonic::Status>,
    ) -> Result<()> {
        if !self.json() {
            eprintln!("deleting {what}: stopping its instances, then removing it");
        }
        let started = std::time::Instant::now();
        let wait = async {
            loop {
                match self.api.call_status(get()).await {
                    Err(status) if status.code() == tonic::Code::NotFound => return Ok(()),
                    Err(status)
                        if !matches!(
                            status.code(),
                            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
                        ) =>
                    {
                        return Err(self
                            .api
                            .explain(&format!("following the deletion of {what}"), &status));
                    }
                    _ => {}
                }
                if started.elapsed() > std::time::Duration::from_secs(900) {
                    anyhow::bail!(
                        "{what} is still being deleted after 15 minutes; it goes on in the background"
                    );
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        };
        tokio::select! {
            done = wait => done,
            _ = tokio::signal::ctrl_c() => {
                anyhow::bail!("stopped waiting; the deletion of {what} goes on in the background")
            }
        }
    }

    async fn workspace(&self) -> Result<pb::Workspace> {
        resolve::workspace(&self.api, self.workspace_ref()).await
    }

    /// Who makes a change: the person at the keyboard, through the CLI.
    fn actor(&self) -> pb::ActorInfo {
        pb::ActorInfo {
            id: self.user.clone(),
            name: self.user.clone(),
            r#type: pb::ActorType::User as i32,
            user_agent: concat!("ctrl-cli/", env!("CARGO_PKG_VERSION")).into(),
            ..Default::default()
        }
    }

    /// Reports a created object: as JSON, or one line.
    fn created(&self, value: &impl Serialize, line: &str) -> Result<()> {
        if self.json() {
            output::json(value)
        } else {
            println!("created {line}");
            Ok(())
        }
    }

    /// Reports a completed change: as `{"ok": true, "message": …}`, or the line.
    fn done(&self, line: &str) -> Result<()> {
        if self.json() {
            output::json(&serde_json::json!({ "ok": true, "message": line }))
        } else {
            println!("{line}");
            Ok(())
        }
    }
}

/// Runs one command; the exit code tells scripts whether it succeeded.
pub async fn run(ctx: &Ctx, command: Command) -> Result<ExitCode> {
    match command {
        Command::Workspaces(c) => tenancy::workspaces(ctx, c).await?,
        Command::Projects(c) => tenancy::projects(ctx, c).await?,
        Command::Apps(c) => tenancy::apps(ctx, c).await?,
        Command::Envs(c) => tenancy::envs(ctx, c).await?,
        Command::Env(c) => variables::run(ctx, c).await?,
        Command::Deploy(args) => return Box::pin(deploy::run(ctx, args)).await,
        Command::Deployments(c) => deployments::run(ctx, c).await?,
        Command::Rollback(args) => deployments::rollback(ctx, args).await?,
        Command::Promote(d) => deployments::promote(ctx, &d.deployment).await?,
        Command::Cancel(d) => deployments::cancel(ctx, &d.deployment).await?,
        Command::Stop(d) => deployments::stop(ctx, &d.deployment).await?,
        Command::Wake(d) => deployments::wake(ctx, &d.deployment).await?,
        Command::Logs(args) => logs::run(ctx, args).await?,
        Command::Domains(c) => domains::run(ctx, c).await?,
        Command::Repos(c) => repos::run(ctx, c).await?,
        Command::Regions(c) => regions::run(ctx, c).await?,
    }
    Ok(ExitCode::SUCCESS)
}
