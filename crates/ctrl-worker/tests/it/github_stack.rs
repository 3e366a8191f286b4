//! The stack of the GitHub webhook tests and benchmark: the build stack,
//! the fake GitHub (the app installed on a private acme/shop), ctrl-api's
//! router serving webhooks in process, and the app connected; plus GitHub's
//! payload shapes for acme/shop (`ctrl_testkit::github::payloads`).

use std::time::Duration;

use anyhow::{Context, Result};
use ctrl_db::deployment::Deployment;
use ctrl_db::settings::{BuildSettings, Scope};
use ctrl_db::{deployment, github as connections, settings};
use ctrl_github::webhook::sign;
use ctrl_testkit::github::{Author, CommitSpec, FakeGitHub, RepoOpts, TEST_APP_KEY_PEM, payloads};
use ctrl_testkit::http_client;
use serde_json::Value;

use crate::build_stack::BuildStack;
use crate::harness::eventually;

pub(crate) const APP_ID: u64 = 4242;
pub(crate) const INSTALLATION: i64 = 77;
pub(crate) const REPO: &str = "acme/shop";
pub(crate) const REPO_ID: i64 = 9_001;
pub(crate) const SECRET: &str = "webhook-secret-of-the-tests";

/// The build stack, the fake GitHub (the app installed on acme/shop, which
/// is private), the API serving webhooks, and the app connected.
pub(crate) struct Stack {
    pub(crate) s: BuildStack,
    pub(crate) github: FakeGitHub,
    pub(crate) api: String,
    _server: tokio::task::JoinHandle<()>,
}

impl Stack {
    pub(crate) async fn start() -> Result<Self> {
        let github = FakeGitHub::start().await?;
        github.add_app(APP_ID, &ctrl_testkit::github::test_app_public_key_der());
        github.add_installation(u64::try_from(INSTALLATION)?, APP_ID, &[REPO]);
        github.add_repo(
            REPO,
            RepoOpts {
                private: true,
                ..RepoOpts::default()
            },
        );
        let key = TEST_APP_KEY_PEM.replace('\n', "\\n");
        let s = BuildStack::start(
            2,
            &format!(
                "[github]\napi_url = \"{}\"\napp_id = {APP_ID}\nprivate_key_pem = \"{key}\"\ndashboard_url = \"https://dashboard.example.com\"\n",
                github.url()
            ),
        )
        .await?;
        for environment_id in [&s.h.production, &s.h.preview] {
            let scope = Scope {
                workspace_id: &s.h.workspace,
                app_id: &s.h.app,
                environment_id,
            };
            // What CreateApp records for each environment.
            settings::upsert_build(
                &s.h.db.pool,
                scope,
                &BuildSettings {
                    docker_context: "web".into(),
                    ..BuildSettings::default()
                },
                1,
            )
            .await?;
            settings::upsert_runtime(
                &s.h.db.pool,
                scope,
                &settings::RuntimeSettings::default(),
                1,
            )
            .await?;
        }
        let app = ctrl_db::tenancy::get_app(&s.h.db.pool, &s.h.app).await?;
        connections::connect(
            &s.h.db.pool,
            &connections::NewConnection {
                workspace_id: &s.h.workspace,
                project_id: &app.project_id,
                app_id: &s.h.app,
                installation_id: INSTALLATION,
                repository_full_name: REPO,
            },
            1,
        )
        .await?;
        let vault = ctrl_vault::Vault::new(&[ctrl_vault::KeyConfig {
            id: "k1".into(),
            base64: "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=".into(),
        }])?;
        let state = ctrl_api::state::AppState::new(
            s.h.db.pool.clone(),
            vault,
            &["api-token-0123456789abcdef".to_owned()],
            (
                ctrl_api::restate::Ingress::new(&s.h.restate.ingress_url()),
                ctrl_api::restate::Admin::new(&s.h.restate.admin_url()),
            ),
        )
        .with_webhook_secrets(vec![SECRET.to_owned()]);
        let router = ctrl_api::rpc::router(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let api = format!("http://{}", listener.local_addr()?);
        let server = tokio::spawn(async move {
            let _ = axum::serve(ctrl_runtime::net::nodelay(listener), router).await;
        });
        Ok(Self {
            s,
            github,
            api,
            _server: server,
        })
    }

    /// Replaces the build settings of the app's environment.
    pub(crate) async fn set_build(&self, environment_id: &str, build: BuildSettings) -> Result<()> {
        let h = &self.s.h;
        settings::upsert_build(
            &h.db.pool,
            Scope {
                workspace_id: &h.workspace,
                app_id: &h.app,
                environment_id,
            },
            &build,
            i64::try_from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)?
                    .as_millis(),
            )?,
        )
        .await?;
        Ok(())
    }

    /// A second app of the project (`api`, building `web/` too), with its
    /// environments, settings and region, connected to the same repository:
    /// a monorepo. Its id and its preview environment's.
    pub(crate) async fn second_app(&self) -> Result<(String, String)> {
        use ctrl_core::id::{IdKind, generate};
        use ctrl_db::tenancy::{self, NewApp, NewEnvironment};
        use ctrl_db::types::EnvironmentKind;
        let h = &self.s.h;
        let p = &h.db.pool;
        let project = tenancy::get_app(p, &h.app).await?.project_id;
        let app = generate(IdKind::App, &mut rand::rng());
        let mut preview = String::new();
        tenancy::insert_app(
            p,
            &NewApp {
                id: &app,
                workspace_id: &h.workspace,
                project_id: &project,
                name: "Api",
                slug: "api",
                default_branch: "main",
            },
            1,
        )
        .await?;
        for (slug, kind) in [
            ("production", EnvironmentKind::Production),
            ("preview", EnvironmentKind::Preview),
        ] {
            let env = generate(IdKind::Environment, &mut rand::rng());
            if kind == EnvironmentKind::Preview {
                preview.clone_from(&env);
            }
            tenancy::insert_environment(
                p,
                &NewEnvironment {
                    id: &env,
                    workspace_id: &h.workspace,
                    project_id: &project,
                    app_id: &app,
                    slug,
                    kind,
                    description: "",
                },
                1,
            )
            .await?;
            let scope = Scope {
                workspace_id: &h.workspace,
                app_id: &app,
                environment_id: &env,
            };
            settings::upsert_build(
                p,
                scope,
                &BuildSettings {
                    docker_context: "web".into(),
                    ..BuildSettings::default()
                },
                1,
            )
            .await?;
            settings::upsert_runtime(p, scope, &settings::RuntimeSettings::default(), 1).await?;
            let mut tx = p.begin().await?;
            settings::replace_regional(
                &mut tx,
                scope,
                &[settings::RegionPolicy {
                    region_id: &h.region,
                    min_replicas: 1,
                    max_replicas: 1,
                    cpu_threshold_percent: 0,
                    memory_threshold_percent: 0,
                }],
                1,
            )
            .await?;
            tx.commit().await?;
        }
        connections::connect(
            p,
            &connections::NewConnection {
                workspace_id: &h.workspace,
                project_id: &project,
                app_id: &app,
                installation_id: INSTALLATION,
                repository_full_name: REPO,
            },
            2,
        )
        .await?;
        Ok((app, preview))
    }

    /// Posts a delivery signed with `secret` (None: unsigned); the status
    /// and JSON answer.
    pub(crate) async fn deliver(
        &self,
        event: &str,
        delivery: &str,
        payload: &Value,
        secret: Option<&str>,
    ) -> Result<(u16, Value)> {
        let body = serde_json::to_vec(payload)?;
        let mut request = http_client()
            .post(format!("{}/webhooks/github", self.api))
            .header("content-type", "application/json")
            .header("x-github-event", event)
            .header("x-github-delivery", delivery)
            .header("user-agent", "GitHub-Hookshot/abc123");
        if let Some(secret) = secret {
            request = request.header("x-hub-signature-256", sign(secret, &body));
        }
        let response = request.body(body).send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    /// The deployments of the app, oldest first.
    pub(crate) async fn deployments(&self) -> Result<Vec<Deployment>> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM deployments WHERE app_id = ? ORDER BY created_at, pk",
        )
        .bind(&self.s.h.app)
        .fetch_all(&self.s.h.db.pool)
        .await?;
        let mut all = Vec::new();
        for id in ids {
            all.push(deployment::get(&self.s.h.db.pool, &id).await?);
        }
        Ok(all)
    }

    /// Waits for the deployment a delivery made.
    pub(crate) async fn made_by(&self, delivery: &str) -> Result<Deployment> {
        let key = format!("github:{delivery}");
        let made = eventually(Duration::from_secs(30), || async {
            Ok(
                deployment::find_by_idempotency_key(&self.s.h.db.pool, &self.s.h.app, &key)
                    .await?
                    .is_some(),
            )
        })
        .await;
        if made.is_err() {
            let invocations = self
                .s
                .h
                .query("SELECT target_service_key, status, last_failure, completion_failure, completion_result FROM sys_invocation WHERE target_service_name = 'GitHubWebhook'")
                .await?;
            anyhow::bail!(
                "no deployment for {delivery}; handler invocations: {invocations:?}\n{}",
                self.s.h.worker_log(40)
            );
        }
        deployment::find_by_idempotency_key(&self.s.h.db.pool, &self.s.h.app, &key)
            .await?
            .context("made")
    }
}

pub(crate) fn web_commit(message: &str, greeting: &str) -> CommitSpec {
    CommitSpec::new(message)
        .author(Author {
            login: Some("octocat".into()),
            name: "The Octocat".into(),
            email: "octocat@example.com".into(),
            avatar_url: "https://avatars.example.com/u/1".into(),
        })
        .date(1_700_000_000)
        .file(
            "web/Dockerfile",
            "FROM busybox\nCOPY index.html /www/index.html\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n",
        )
        .file("web/index.html", greeting)
}

/// acme/shop as the payloads name it, through the installation.
pub(crate) fn repository() -> payloads::Repository<'static> {
    payloads::Repository {
        id: REPO_ID as u64,
        full_name: REPO,
        private: true,
        default_branch: "main",
        installation_id: INSTALLATION as u64,
    }
}

/// A push event as GitHub sends it (the fields ctrl reads, and others).
pub(crate) fn push_payload(
    branch: &str,
    before: &str,
    after: &str,
    files: &[&str],
    deleted: bool,
) -> Value {
    let head = payloads::PushedCommit {
        sha: after,
        message: "Change the shop",
        author: "octocat",
        author_name: "The Octocat",
        author_email: "octocat@example.com",
        timestamp: 1_700_000_000,
        added: &[],
        modified: files,
        removed: &[],
    };
    payloads::push(&repository(), branch, before, (!deleted).then_some(&head))
}

pub(crate) fn pull_request_payload(
    action: &str,
    number: u32,
    branch: &str,
    sha: &str,
    head_repo: &str,
) -> Value {
    payloads::pull_request(
        &repository(),
        &payloads::PullRequest {
            action,
            number: u64::from(number),
            title: "Make the shop nicer",
            branch,
            sha,
            head_repo,
            sender: "contributor",
        },
    )
}

pub(crate) const ZERO: &str = payloads::ZERO_SHA;
