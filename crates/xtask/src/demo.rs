//! The deployment the dev stack ends with, made through the `ctrl` CLI as a
//! user would: workspace `demo`, project `demo`, app `hello`, the tiny
//! images `localhost/hello:v1` and `:v2` built on the stack's podman, and v1
//! deployed with its progress on the terminal. A re-run reuses all of it:
//! krane brings the live deployment's containers back on its own.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ctrl_testkit::{Podman, images};

use crate::dev::Edge;
use serde_json::Value;

pub(crate) const WORKSPACE: &str = "demo";
pub(crate) const APP: &str = "demo/hello";
pub(crate) const IMAGE_V1: &str = "localhost/hello:v1";
pub(crate) const IMAGE_V2: &str = "localhost/hello:v2";

/// The demo's live deployment and where it answers.
#[derive(Debug)]
pub(crate) struct Demo {
    pub(crate) deployment: String,
    /// Its URLs through the edge (HTTPS, the stack's port), the first one
    /// checked to answer.
    pub(crate) urls: Vec<String>,
    pub(crate) body: String,
    pub(crate) reused: bool,
}

/// Runs the `ctrl` binary with the stack's address, token and workspace.
#[derive(Debug)]
pub(crate) struct Ctrl {
    bin: PathBuf,
    env: Vec<(&'static str, String)>,
}

impl Ctrl {
    pub(crate) fn new(bin: &Path, api_url: &str, token: &str, edge_https_port: u16) -> Self {
        Self {
            bin: bin.to_owned(),
            env: vec![
                ("CTRL_API_URL", api_url.to_owned()),
                ("CTRL_TOKEN", token.to_owned()),
                ("CTRL_WORKSPACE", WORKSPACE.to_owned()),
                ("CTRL_EDGE_HTTPS_PORT", edge_https_port.to_string()),
            ],
        }
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.args(args)
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// `ctrl -o json args…`, parsed.
    pub(crate) async fn json(&self, args: &[&str]) -> Result<Value> {
        let mut all = vec!["-o", "json"];
        all.extend_from_slice(args);
        let out = tokio::time::timeout(Duration::from_secs(60), self.command(&all).output())
            .await
            .with_context(|| format!("ctrl {} hung", all.join(" ")))??;
        if !out.status.success() {
            bail!(
                "ctrl {} failed: {}",
                all.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        serde_json::from_slice(&out.stdout)
            .with_context(|| format!("ctrl {} printed no JSON", all.join(" ")))
    }

    /// `ctrl args…` with its output on this terminal.
    async fn show(&self, args: &[&str]) -> Result<()> {
        let status = self.command(args).status().await?;
        if !status.success() {
            bail!("ctrl {} failed", args.join(" "));
        }
        Ok(())
    }
}

fn has_slug(list: &Value, slug: &str) -> bool {
    list.as_array()
        .is_some_and(|all| all.iter().any(|x| x["slug"] == slug))
}

/// Makes sure the demo exists and runs; returns where it answers.
pub(crate) async fn ensure(ctrl: &Ctrl, podman: &Podman, edge: &Edge, ca: &Path) -> Result<Demo> {
    images::build_http_image(podman.docker(), IMAGE_V1).await?;
    images::derive_image(podman.docker(), IMAGE_V1, IMAGE_V2, &[("VERSION", "v2")]).await?;

    if !has_slug(&ctrl.json(&["workspaces", "list"]).await?, WORKSPACE) {
        ctrl.show(&["workspaces", "create", WORKSPACE, "--name", "Demo"])
            .await?;
    }
    let (project, app) = APP.split_once('/').unwrap_or((APP, APP));
    if !has_slug(&ctrl.json(&["projects", "list"]).await?, project) {
        ctrl.show(&["projects", "create", project, "--name", "Demo"])
            .await?;
    }
    if !has_slug(
        &ctrl.json(&["apps", "list", "--project", project]).await?,
        app,
    ) {
        ctrl.show(&[
            "apps",
            "create",
            app,
            "--project",
            project,
            "--name",
            "Hello",
        ])
        .await?;
    }

    let live = live_deployment(ctrl).await?;
    if let Some(id) = &live {
        eprintln!("the demo's live deployment {id} exists; waiting for krane to run it again");
        if let Some((urls, body)) =
            answering_edge(ctrl, id, edge, ca, Duration::from_secs(90)).await?
        {
            return Ok(demo(id.clone(), urls, body, true));
        }
        eprintln!("{id} does not answer; deploying the demo again");
    }
    eprintln!();
    ctrl.show(&["deploy", "--app", APP, "--image", IMAGE_V1])
        .await?;
    let id = live_deployment(ctrl)
        .await?
        .context("the demo deployment finished but is not live")?;
    let (urls, body) = answering_edge(ctrl, &id, edge, ca, Duration::from_secs(30))
        .await?
        .with_context(|| format!("{id} is ready but does not answer through the edge"))?;
    Ok(demo(id, urls, body, false))
}

fn demo(deployment: String, urls: Vec<String>, body: String, reused: bool) -> Demo {
    Demo {
        deployment,
        urls,
        body,
        reused,
    }
}

async fn live_deployment(ctrl: &Ctrl) -> Result<Option<String>> {
    let app = ctrl.json(&["apps", "get", APP]).await?;
    Ok(app["liveDeploymentId"]
        .as_str()
        .filter(|id| !id.is_empty())
        .map(str::to_owned))
}

/// The deployment's URLs through the edge and the answer of the first,
/// once it answers over HTTPS with the stack's CA; `None` if the deployment
/// is not ready or the edge does not answer within `wait` (krane may still
/// be bringing its containers back after a restart).
async fn answering_edge(
    ctrl: &Ctrl,
    id: &str,
    edge: &Edge,
    ca: &Path,
    wait: Duration,
) -> Result<Option<(Vec<String>, String)>> {
    let ca_pem = std::fs::read_to_string(ca).with_context(|| format!("read {}", ca.display()))?;
    let https = std::net::SocketAddr::from(([127, 0, 0, 1], edge.https));
    let deadline = Instant::now() + wait;
    loop {
        let d = ctrl.json(&["deployments", "get", id]).await?;
        if d["status"] != "DEPLOYMENT_STATUS_READY" {
            return Ok(None);
        }
        // The live hostname first: it is the one that follows rollbacks.
        let mut hosts: Vec<(bool, String)> = d["hostnames"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|h| {
                let live = h["stickiness"] == "ROUTE_STICKINESS_LIVE";
                h["fqdn"].as_str().map(|f| (!live, f.to_owned()))
            })
            .collect();
        hosts.sort();
        let hosts: Vec<String> = hosts.into_iter().map(|(_, h)| h).collect();
        if let Some(first) = hosts.first() {
            let answer =
                ctrl_testkit::ca::https_get(&ca_pem, https, first, "/", Duration::from_secs(5))
                    .await;
            if let Ok((200, body)) = answer {
                let body = body.trim().to_owned();
                let urls = hosts
                    .iter()
                    .map(|h| format!("https://{h}:{}", edge.https))
                    .collect();
                return Ok(Some((urls, body)));
            }
        }
        if Instant::now() > deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
