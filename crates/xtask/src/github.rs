//! Push to deploy on the local stack, without GitHub.
//!
//! `cargo xtask dev` runs the testkit's fake GitHub in process
//! ([`start_fake`]): a GitHub App ([`APP_ID`], the testkit's test key)
//! installed ([`INSTALLATION`]) on the private repository [`REPO`], with the
//! fake's control routes on, and points ctrl-worker (`[github]`) and
//! ctrl-api (`[github] webhook_secret`) at it ([`service_env`]).
//!
//! `cargo xtask github push` then acts as a developer and as GitHub: it
//! commits a directory's files (what `ctrl deploy --context` would upload:
//! `.dockerignore` honoured, never `.git` or `.dev`) through the fake's
//! control route, builds the `push` delivery (and, with `--pr`, the
//! `pull_request` one after it, as GitHub sends both: `opened` the first
//! time, `synchronize` after) with
//! the testkit's payload builders, signs it with the stack's webhook secret
//! and posts it to ctrl-api's `/webhooks/github`; then it follows the
//! deployments the delivery made (through the `ctrl` CLI) until they are
//! ready or failed, and prints where they answer and what the fake GitHub
//! recorded (deployment statuses, commit statuses, the pull request's
//! comment). Everything it needs is in `.dev/stack.env`.

use std::collections::{BTreeMap, HashMap};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use clap::{Args, Subcommand};
use ctrl_testkit::github::{
    FakeGitHub, FakeGitHubOptions, RepoOpts, TEST_APP_KEY_PEM, payloads, test_app_public_key_der,
};
use serde_json::{Value, json};

use crate::demo::Ctrl;

/// The dev stack's GitHub App.
pub(crate) const APP_ID: u64 = 4242;
/// Its slug: its comments are by `ctrl-dev[bot]`.
pub(crate) const APP_SLUG: &str = "ctrl-dev";
/// The app's installation on [`REPO`].
pub(crate) const INSTALLATION: u64 = 1;
/// The fake's repository (private, default branch `main`).
pub(crate) const REPO: &str = "demo/hello";

/// How long `push` follows the deployments.
const WAIT: Duration = Duration::from_secs(180);

/// Starts the fake GitHub on `port` with the app, its installation and the
/// repository (empty until the first push), control routes on.
pub(crate) async fn start_fake(port: u16) -> Result<FakeGitHub> {
    let fake = FakeGitHub::start_with(FakeGitHubOptions {
        port: Some(port),
        control_routes: true,
    })
    .await
    .with_context(|| format!("start the fake GitHub on 127.0.0.1:{port}"))?;
    fake.add_app(APP_ID, &test_app_public_key_der())
        .set_app_slug(APP_ID, APP_SLUG)
        .add_installation(INSTALLATION, APP_ID, &[REPO])
        .add_repo(
            REPO,
            RepoOpts {
                private: true,
                ..RepoOpts::default()
            },
        );
    Ok(fake)
}

/// The environment that points ctrl-worker's `[github]` at the fake (the
/// app and its key) and gives ctrl-api the webhook secret
/// (`deploy/dev/*.toml` read them).
pub(crate) fn service_env(url: &str, webhook_secret: &str) -> Vec<(&'static str, String)> {
    vec![
        ("CTRL_GITHUB_URL", url.to_owned()),
        ("CTRL_GITHUB_APP_ID", APP_ID.to_string()),
        ("CTRL_GITHUB_APP_KEY", TEST_APP_KEY_PEM.to_owned()),
        ("CTRL_GITHUB_WEBHOOK_SECRET", webhook_secret.to_owned()),
    ]
}

/// `cargo xtask github …`
#[derive(Debug, Args)]
pub(crate) struct GitHubArgs {
    #[command(subcommand)]
    command: GitHubCommand,
}

#[derive(Debug, Subcommand)]
enum GitHubCommand {
    /// Commit a directory to the dev stack's fake GitHub and deliver the
    /// signed push (or pull request) webhook to ctrl-api; then follow the
    /// deployment it made and show what GitHub was told.
    Push(PushArgs),
}

#[derive(Debug, Args)]
struct PushArgs {
    /// The repository (in the fake GitHub).
    #[arg(long, default_value = REPO)]
    repo: String,
    /// The directory whose files become the commit's whole tree
    /// (`.dockerignore` honoured; never `.git` or `.dev`).
    #[arg(long, default_value = "examples/hello")]
    dir: PathBuf,
    /// The branch (default: the repository's default branch).
    #[arg(long)]
    branch: Option<String>,
    /// The branch is this pull request's: after the push, also deliver its
    /// `pull_request` event (opened the first time, synchronize after), as
    /// GitHub does.
    #[arg(long)]
    pr: Option<u64>,
    /// The commit message (and the pull request's title).
    #[arg(long)]
    message: Option<String>,
    /// The commit's author (a GitHub login).
    #[arg(long, default_value = "octocat")]
    author: String,
    /// The dev stack's directory (its stack.env).
    #[arg(long, env = "CTRL_DEV_DIR", default_value = ".dev")]
    dev_dir: PathBuf,
}

pub(crate) async fn run(args: GitHubArgs) -> Result<()> {
    match args.command {
        GitHubCommand::Push(args) => push(args).await,
    }
}

/// What `cargo xtask dev` wrote to stack.env.
struct Stack {
    env: HashMap<String, String>,
    path: PathBuf,
    dev_dir: PathBuf,
}

impl Stack {
    fn load(dev_dir: &Path) -> Result<Self> {
        let path = dev_dir.join("stack.env");
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "read {} (is `cargo xtask dev` running? it writes the file once the stack is up)",
                path.display()
            )
        })?;
        let env = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        Ok(Self {
            env,
            path,
            dev_dir: dev_dir.to_owned(),
        })
    }

    fn get(&self, key: &str) -> Result<&str> {
        self.env
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
            .with_context(|| {
                format!(
                    "{} has no {key}: restart `cargo xtask dev` (this stack predates the fake GitHub)",
                    self.path.display()
                )
            })
    }
}

/// The files of `dir` as the build would see them: path → (contents,
/// executable).
fn tree(dir: &Path) -> Result<BTreeMap<String, (Vec<u8>, bool)>> {
    let packed = ctrl_build::context::pack(dir, "")
        .with_context(|| format!("read the files of {}", dir.display()))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(packed.gz.as_slice()));
    let mut files = BTreeMap::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let path = entry.path()?.to_string_lossy().replace('\\', "/");
        let executable = entry.header().mode()? & 0o111 != 0;
        let mut contents = Vec::new();
        entry.read_to_end(&mut contents)?;
        files.insert(path, (contents, executable));
    }
    if files.is_empty() {
        bail!("{} has no files to push", dir.display());
    }
    Ok(files)
}

/// A fresh delivery id, shaped like GitHub's (a UUID).
fn delivery_id() -> String {
    let b: [u8; 16] = rand::random();
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

async fn answer(response: reqwest::Response) -> Result<(u16, Value)> {
    let status = response.status().as_u16();
    let text = response.text().await?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

async fn push(args: PushArgs) -> Result<()> {
    let stack = Stack::load(&args.dev_dir)?;
    let github = stack.get("CTRL_GITHUB_URL")?.to_owned();
    let secret = stack.get("CTRL_GITHUB_WEBHOOK_SECRET")?.to_owned();
    let installation: u64 = stack
        .get("CTRL_GITHUB_INSTALLATION")?
        .parse()
        .context("CTRL_GITHUB_INSTALLATION is not a number")?;
    let api = stack.get("CTRL_API_URL")?.to_owned();
    let http = ctrl_testkit::http_client();

    // The developer's side: a commit of the directory's files.
    let files = tree(&args.dir)?;
    let message = args
        .message
        .clone()
        .unwrap_or_else(|| format!("Update {}", args.dir.display()));
    let executable: Vec<&str> = files
        .iter()
        .filter(|(_, (_, x))| *x)
        .map(|(p, _)| p.as_str())
        .collect();
    let body = json!({
        "branch": args.branch,
        "message": message,
        "author": args.author,
        "files": files.iter().map(|(p, (c, _))| (p.clone(), Value::String(STANDARD.encode(c)))).collect::<serde_json::Map<_, _>>(),
        "executable": executable,
    });
    let control = format!("{github}/_fake/repos/{}", args.repo);
    let (status, commit) = answer(
        http.post(format!("{control}/commits"))
            .json(&body)
            .send()
            .await
            .with_context(|| format!("reach the fake GitHub at {github}"))?,
    )
    .await?;
    if status != 201 {
        bail!("the fake GitHub refused the commit ({status}): {commit}");
    }
    let field = |name: &str| commit[name].as_str().unwrap_or_default().to_owned();
    let (sha, branch) = (field("sha"), field("branch"));
    let short = &sha[..7.min(sha.len())];
    let (added, modified, removed) = (
        strings(&commit["added"]),
        strings(&commit["modified"]),
        strings(&commit["removed"]),
    );
    println!(
        "committed {short} to {} {branch}: {message:?} ({} files; {} added, {} modified, {} removed)",
        args.repo,
        files.len(),
        added.len(),
        modified.len(),
        removed.len()
    );
    let repo = payloads::Repository {
        id: commit["repository_id"].as_u64().unwrap_or_default(),
        full_name: commit["full_name"].as_str().unwrap_or(&args.repo),
        private: commit["private"].as_bool().unwrap_or(true),
        default_branch: commit["default_branch"].as_str().unwrap_or("main"),
        installation_id: installation,
    };

    // GitHub's side: the signed deliveries. A commit pushed to a branch is
    // a `push`; when the branch is a pull request's, GitHub also sends the
    // `pull_request` event (ctrl deploys the commit once).
    let head = payloads::PushedCommit {
        sha: &sha,
        message: &message,
        author: &args.author,
        author_name: &args.author,
        author_email: commit["author_email"].as_str().unwrap_or_default(),
        timestamp: commit["timestamp"].as_i64().unwrap_or_default(),
        added: &added,
        modified: &modified,
        removed: &removed,
    };
    let before = field("before");
    let mut deliveries = vec![("push", payloads::push(&repo, &branch, &before, Some(&head)))];
    if let Some(number) = args.pr {
        let (status, pull) = answer(
            http.post(format!("{control}/pulls"))
                .json(&json!({ "number": number }))
                .send()
                .await?,
        )
        .await?;
        if !(200..300).contains(&status) {
            bail!("the fake GitHub refused pull request #{number} ({status}): {pull}");
        }
        let action = if pull["created"] == true {
            "opened"
        } else {
            "synchronize"
        };
        let pr = payloads::PullRequest {
            action,
            number,
            title: &message,
            branch: &branch,
            sha: &sha,
            head_repo: repo.full_name,
            sender: &args.author,
        };
        deliveries.push(("pull_request", payloads::pull_request(&repo, &pr)));
    }
    for (event, payload) in deliveries {
        let delivery = delivery_id();
        let body = serde_json::to_vec(&payload)?;
        let (status, answered) = answer(
            http.post(format!("{api}/webhooks/github"))
                .header("content-type", "application/json")
                .header("x-github-event", event)
                .header("x-github-delivery", &delivery)
                .header(
                    "x-hub-signature-256",
                    ctrl_github::webhook::sign(&secret, &body),
                )
                .header("user-agent", "GitHub-Hookshot/xtask")
                .body(body)
                .send()
                .await
                .with_context(|| format!("reach ctrl-api at {api}"))?,
        )
        .await?;
        let what = match payload["action"].as_str() {
            Some(action) => format!("{event} ({action} #{})", payload["number"]),
            None => event.to_owned(),
        };
        println!("delivered {what} {delivery} to {api}/webhooks/github: {status} {answered}");
        if status == 422 {
            bail!(
                "no app is connected to {}: connect one first, e.g. `ctrl repos connect --app demo/hello --repo {} --installation {installation}`",
                args.repo,
                args.repo
            );
        }
        if status != 202 {
            bail!("ctrl-api did not accept the delivery");
        }
    }

    follow(&stack, &args.repo, &sha, args.pr).await
}

/// The stack's `ctrl` CLI.
fn ctrl(stack: &Stack) -> Result<Ctrl> {
    let port = stack
        .get("CTRL_EDGE_HTTPS_PORT")?
        .parse()
        .context("CTRL_EDGE_HTTPS_PORT")?;
    Ok(Ctrl::new(
        &stack.dev_dir.join("bin/ctrl"),
        stack.get("CTRL_API_URL")?,
        stack.get("CTRL_TOKEN")?,
        port,
    ))
}

const TERMINAL: &[&str] = &[
    "READY",
    "FAILED",
    "SKIPPED",
    "AWAITING_APPROVAL",
    "STOPPED",
    "SUPERSEDED",
    "CANCELLED",
];

fn status_of(d: &Value) -> &str {
    d["status"]
        .as_str()
        .unwrap_or("")
        .trim_start_matches("DEPLOYMENT_STATUS_")
}

/// Follows the deployments of `sha` (one per connected app) until each is
/// done, then prints where they answer and what GitHub was told.
async fn follow(stack: &Stack, repo: &str, sha: &str, pr: Option<u64>) -> Result<()> {
    let ctrl = ctrl(stack)?;
    let connections = ctrl.json(&["repos", "list"]).await?;
    let apps: Vec<String> = connections
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| {
            c["repository"]
                .as_str()
                .is_some_and(|r| r.eq_ignore_ascii_case(repo))
        })
        .filter_map(|c| c["appId"].as_str().map(str::to_owned))
        .collect();
    println!(
        "following the deployment{} of {} (up to {}s)",
        if apps.len() == 1 { "" } else { "s" },
        &sha[..7],
        WAIT.as_secs()
    );
    let started = Instant::now();
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let done = loop {
        let mut found = Vec::new();
        for app in &apps {
            let list = ctrl
                .json(&["deployments", "list", "--app", app, "--limit", "50"])
                .await?;
            if let Some(d) = list
                .as_array()
                .into_iter()
                .flatten()
                .find(|d| d["git"]["commitSha"] == sha)
            {
                found.push(d.clone());
            }
        }
        for d in &found {
            let id = d["id"].as_str().unwrap_or_default().to_owned();
            let status = status_of(d).to_ascii_lowercase();
            if seen.get(&id) != Some(&status) {
                println!(
                    "  [{:>5.1}s] {id} ({}): {status}",
                    started.elapsed().as_secs_f64(),
                    d["environmentSlug"].as_str().unwrap_or_default()
                );
                seen.insert(id, status);
            }
        }
        if found.len() >= apps.len() && found.iter().all(|d| TERMINAL.contains(&status_of(d))) {
            break found;
        }
        if started.elapsed() > WAIT {
            bail!(
                "the deployment did not finish within {}s; see .dev/ctrl-worker.log and `ctrl deployments list --app …`",
                WAIT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };

    let ca = stack.get("CTRL_CA_FILE")?;
    let port = stack.get("CTRL_EDGE_HTTPS_PORT")?;
    let mut failed = Vec::new();
    for d in &done {
        let id = d["id"].as_str().unwrap_or_default();
        if status_of(d) == "READY" {
            let full = ctrl.json(&["deployments", "get", id]).await?;
            match url(&full, port) {
                Some(url) => println!("{id} is ready at {url}\n  try: curl --cacert {ca} {url}"),
                None => println!("{id} is ready"),
            }
        } else {
            let why = d["errorMessage"].as_str().unwrap_or_default();
            println!("{id} is {}: {why}", status_of(d).to_ascii_lowercase());
            if status_of(d) == "FAILED" {
                failed.push(id.to_owned());
            }
        }
    }
    reported(stack, repo, sha, pr).await?;
    if !failed.is_empty() {
        bail!("{} failed", failed.join(", "));
    }
    Ok(())
}

/// Where a ready deployment answers through the edge: production's live
/// (or environment) hostname, a preview's branch one, else its own.
fn url(d: &Value, port: &str) -> Option<String> {
    let production = d["environmentSlug"] == "production";
    let order: &[&str] = if production {
        &["LIVE", "ENVIRONMENT", "BRANCH", "NONE", "DEPLOYMENT"]
    } else {
        &["BRANCH", "NONE", "DEPLOYMENT", "ENVIRONMENT", "LIVE"]
    };
    let hostnames = d["hostnames"].as_array()?;
    order.iter().find_map(|sticky| {
        hostnames
            .iter()
            .find(|h| {
                h["stickiness"]
                    .as_str()
                    .is_some_and(|s| s.trim_start_matches("ROUTE_STICKINESS_") == *sticky)
            })
            .and_then(|h| h["fqdn"].as_str())
            .map(|fqdn| format!("https://{fqdn}:{port}"))
    })
}

/// Prints what the fake GitHub recorded for `sha` once the reports are in
/// (they trail the deployment by a moment).
async fn reported(stack: &Stack, repo: &str, sha: &str, pr: Option<u64>) -> Result<()> {
    let control = format!("{}/_fake/repos/{repo}", stack.get("CTRL_GITHUB_URL")?);
    let http = ctrl_testkit::http_client();
    let get = |path: String| {
        let http = http.clone();
        async move {
            let (status, body) = answer(http.get(path).send().await?).await?;
            anyhow::ensure!(status == 200, "the fake GitHub answered {status}: {body}");
            Ok::<_, anyhow::Error>(body)
        }
    };
    let finished = ["success", "failure", "error", "inactive"];
    let short = &sha[..7];
    let deadline = Instant::now() + Duration::from_secs(30);
    let (deployments, statuses, comment) = loop {
        let all = get(format!("{control}/deployments")).await?;
        let deployments: Vec<Value> = all
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| d["sha"] == sha)
            .cloned()
            .collect();
        let statuses = get(format!("{control}/statuses/{sha}")).await?;
        let comment = match pr {
            Some(n) => get(format!("{control}/comments/{n}"))
                .await?
                .as_array()
                .and_then(|c| c.first())
                .and_then(|c| c["body"].as_str())
                .map(str::to_owned),
            None => None,
        };
        let deployed = !deployments.is_empty()
            && deployments.iter().all(|d| {
                d["statuses"]
                    .as_array()
                    .and_then(|s| s.last())
                    .and_then(|s| s["state"].as_str())
                    .is_some_and(|s| finished.contains(&s))
            });
        let commented = pr.is_none()
            || comment
                .as_deref()
                .is_some_and(|c| c.contains(short) && !c.contains("⏳"));
        if (deployed && commented) || Instant::now() > deadline {
            break (deployments, statuses, comment);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    println!("GitHub (the fake at {control}) recorded for {short}:");
    for d in &deployments {
        let states: Vec<&str> = d["statuses"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["state"].as_str())
            .collect();
        let url = d["statuses"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["environment_url"].as_str())
            .next_back()
            .unwrap_or_default();
        println!(
            "  deployment {:?}: {}  {url}",
            d["environment"].as_str().unwrap_or_default(),
            states.join(" → ")
        );
    }
    let mut contexts: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for s in statuses.as_array().into_iter().flatten() {
        contexts
            .entry(s["context"].as_str().unwrap_or_default())
            .or_default()
            .push(s["state"].as_str().unwrap_or_default());
    }
    for (context, states) in contexts {
        println!("  commit status {context}: {}", states.join(" → "));
    }
    if let Some(n) = pr {
        match comment {
            Some(body) => {
                println!("  comment on pull request #{n}:");
                for line in body.lines().filter(|l| !l.starts_with("<!--")) {
                    if line.trim().is_empty() {
                        println!();
                    } else {
                        println!("    {line}");
                    }
                }
            }
            None => println!("  no comment on pull request #{n} yet"),
        }
    }
    Ok(())
}
