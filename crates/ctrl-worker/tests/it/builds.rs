//! Deployments built from source, on real components: the worker process
//! builds through podman's Docker API, pushes to a real registry, reads
//! uploads from a real S3 (s3s-fs); crashes are real SIGKILLs.

use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use ctrl_build::store::CONTENT_TYPE;
use ctrl_core::status::DeploymentStatus;
use ctrl_db::deployment::BuildSource;
use ctrl_db::types::{BuildStatus, SourceKind};
use ctrl_db::{build, deployment};
use ctrl_testkit::http_client;

use crate::build_stack::{Backend, BuildStack, DEPOT_TOKEN};

fn hello() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/hello")
}

#[tokio::test]
async fn an_uploaded_context_is_built_pushed_by_digest_and_deployed() -> Result<()> {
    let s = BuildStack::start(2, "").await?;
    let key = s.upload(&hello()).await?;
    let id = s.context_deployment(&s.h.production, &key).await?;
    s.h.deploy_to_ready(&id).await?;

    let d = deployment::get(&s.h.db.pool, &id).await?;
    assert_eq!(d.status, DeploymentStatus::Ready);
    let b = build::for_deployment(&s.h.db.pool, &id)
        .await?
        .context("build row")?;
    assert_eq!(b.status, BuildStatus::Succeeded);
    assert_eq!(d.build_id.as_deref(), Some(b.id.as_str()));
    let digest = s
        .digests
        .digest("ctrl/acme/shop-web", &id)
        .await?
        .context("the tag is in the registry")?;
    let expected = format!("{}/ctrl/acme/shop-web@{digest}", s.registry.host_port());
    assert_eq!(
        d.image.as_deref(),
        Some(expected.as_str()),
        "the image is pinned by digest"
    );
    assert_eq!(b.digest.as_deref(), Some(digest.as_str()));
    assert!(b.started_at.is_some() && b.finished_at.is_some());
    assert!(b.context_bytes.unwrap_or_default() > 0);
    let output = s.output(&b.id).await?;
    assert!(output.contains("STEP"), "{output}");
    assert!(output.contains("Pushed"), "{output}");

    // The deployed image is the built one, build argument included.
    let out = s
        .podman
        .command()?
        .args(["run", "--rm", &expected, "cat", "/www/greeting.txt"])
        .output()?;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "built by the worker",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[tokio::test]
async fn an_uploaded_context_builds_on_depot_and_is_deployed_by_digest() -> Result<()> {
    let s = BuildStack::start_on(Backend::Depot, 2, 120, "").await?;
    let key = s.upload(&hello()).await?;
    let id = s.context_deployment(&s.h.production, &key).await?;
    s.h.deploy_to_ready(&id).await?;

    let d = deployment::get(&s.h.db.pool, &id).await?;
    let b = build::for_deployment(&s.h.db.pool, &id)
        .await?
        .context("build row")?;
    assert_eq!(b.status, BuildStatus::Succeeded);
    assert_eq!(b.backend, "depot");
    let digest = s
        .digests
        .digest("ctrl/acme/shop-web", &id)
        .await?
        .context("the tag is in the registry")?;
    let expected = format!("{}/ctrl/acme/shop-web@{digest}", s.registry.host_port());
    assert_eq!(d.image.as_deref(), Some(expected.as_str()));
    let output = s.output(&b.id).await?;
    assert!(output.contains("Depot build"), "{output}");
    assert!(output.contains("Pushed"), "{output}");

    // One Depot project for the ctrl project, one finished build whose
    // machine solved this build with the deployment's build argument.
    let depot = s.depot.as_ref().context("depot")?;
    let projects = depot.projects();
    assert_eq!(projects.len(), 1);
    assert_eq!(projects[0].name, format!("ctrl-{}", d.project_id));
    let builds = depot.builds();
    assert_eq!(builds.len(), 1);
    assert_eq!(
        builds[0].status,
        ctrl_testkit::depot::FakeBuildStatus::Succeeded
    );
    let solves = depot.solves();
    assert_eq!(solves.len(), 1);
    assert_eq!(solves[0].reference, b.id);
    assert_eq!(
        solves[0]
            .frontend_attrs
            .get("build-arg:GREETING")
            .map(String::as_str),
        Some("built by the worker")
    );
    let out = s
        .podman
        .command()?
        .args(["run", "--rm", &expected, "cat", "/www/greeting.txt"])
        .output()?;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "built by the worker"
    );
    assert!(
        !s.h.worker_log(10_000).contains(DEPOT_TOKEN),
        "the Depot token is never logged"
    );
    Ok(())
}

#[tokio::test]
async fn a_failing_step_fails_the_deployment_with_the_step_and_its_output() -> Result<()> {
    let s = BuildStack::start(2, "").await?;
    let id = s
        .deploy_files(&[(
            "Dockerfile",
            "FROM busybox\nRUN echo preparing\nRUN echo 'compiler says: missing semicolon' && exit 2\nCMD [\"true\"]\n",
        )])
        .await?;
    let error = s.failure(&id).await?;
    assert!(error.starts_with("Build failed: STEP 3/"), "{error}");
    assert!(error.contains("exit 2"), "{error}");
    assert!(
        error.contains("missing semicolon"),
        "the last output lines are quoted: {error}"
    );
    let b = build::for_deployment(&s.h.db.pool, &id)
        .await?
        .context("build")?;
    assert_eq!(b.status, BuildStatus::Failed);
    assert!(s.tags().await?.is_empty(), "nothing was pushed");
    Ok(())
}

#[tokio::test]
async fn a_context_without_its_dockerfile_fails_before_building() -> Result<()> {
    let s = BuildStack::start(2, "").await?;
    let id = s
        .deploy_files(&[("app/Containerfile", "FROM busybox\n"), ("README.md", "hi")])
        .await?;
    let error = s.failure(&id).await?;
    assert_eq!(
        error,
        "no Dockerfile at \"Dockerfile\" in the build context (found [\"app/Containerfile\"]; pass the Dockerfile's path)"
    );
    Ok(())
}

#[tokio::test]
async fn a_corrupt_upload_fails_with_a_clear_error() -> Result<()> {
    let s = BuildStack::start(2, "").await?;
    let garbage = b"\x1f\x8b\x08\x00 this is not a gzip stream".to_vec();
    let upload = s
        .store
        .presign_upload(
            &s.h.workspace,
            &s.h.app,
            "corrupt",
            garbage.len() as u64,
            SystemTime::now(),
        )
        .await?;
    http_client()
        .put(&upload.url)
        .header("content-type", CONTENT_TYPE)
        .body(garbage)
        .send()
        .await?
        .error_for_status()?;
    let id = s.context_deployment(&s.h.production, &upload.key).await?;
    s.h.deploy(&id).await?;
    let error = s.failure(&id).await?;
    assert!(
        error.starts_with("the build context is not a valid tar.gz archive"),
        "{error}"
    );
    Ok(())
}

#[tokio::test]
async fn cancelling_a_deployment_stops_its_build() -> Result<()> {
    let s = BuildStack::start(2, "").await?;
    let id = s
        .deploy_files(&[(
            "Dockerfile",
            "FROM busybox\nRUN echo sleeping && sleep 120\n",
        )])
        .await?;
    s.wait_step_message(&id, "sleep 120").await?;
    // What CancelDeployment does first: the status, then the invocation.
    deployment::set_status_if_active(
        &s.h.db.pool,
        &id,
        DeploymentStatus::Cancelled,
        Some("Cancelled by user"),
        9,
    )
    .await?;
    let started = std::time::Instant::now();
    s.wait_build(&id, BuildStatus::Cancelled).await?;
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(s.tags().await?.is_empty(), "nothing was pushed");
    Ok(())
}

#[tokio::test]
async fn a_build_over_its_timeout_fails_saying_where_it_was() -> Result<()> {
    let s = BuildStack::start_with(2, 10, "").await?;
    let id = s
        .deploy_files(&[(
            "Dockerfile",
            "FROM busybox\nRUN echo waiting && sleep 120\n",
        )])
        .await?;
    let started = std::time::Instant::now();
    let error = s.failure(&id).await?;
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(
        error.starts_with("The build did not finish within 10 s (it was at STEP 2/"),
        "{error}"
    );
    let b = build::for_deployment(&s.h.db.pool, &id)
        .await?
        .context("build")?;
    assert_eq!(b.status, BuildStatus::Failed);
    assert!(s.tags().await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn builds_wait_for_a_slot_of_their_workspace_and_say_why() -> Result<()> {
    let s = BuildStack::start(1, "").await?;
    let slow = s
        .deploy_files(&[(
            "Dockerfile",
            "FROM busybox\nRUN sleep 4 && echo slow done\n",
        )])
        .await?;
    s.wait_step_message(&slow, "sleep 4").await?;
    let fast = s
        .deploy_files(&[("Dockerfile", "FROM busybox\nRUN echo fast\n")])
        .await?;
    s.wait_step_message(
        &fast,
        "Waiting for a build slot: 1 of 1 builds of this workspace are running",
    )
    .await?;
    let b = build::for_deployment(&s.h.db.pool, &fast)
        .await?
        .context("build")?;
    assert_eq!(b.status, BuildStatus::Queued);
    // Once the first build ends, the second takes its slot.
    s.wait_build(&fast, BuildStatus::Succeeded).await?;
    let first = build::for_deployment(&s.h.db.pool, &slow)
        .await?
        .context("build")?;
    let second = build::for_deployment(&s.h.db.pool, &fast)
        .await?
        .context("build")?;
    assert!(
        second.started_at >= first.finished_at,
        "the second build started only after the first finished"
    );
    Ok(())
}

#[tokio::test]
async fn a_worker_killed_during_the_build_resumes_it_once() -> Result<()> {
    let mut s = BuildStack::start(1, "").await?;
    let id = s
        .deploy_files(&[(
            "Dockerfile",
            "FROM busybox\nRUN echo step-one > /one\nRUN sleep 3 && echo slept > /two\nCMD [\"sleep\", \"60\"]\n",
        )])
        .await?;
    s.wait_step_message(&id, "sleep 3").await?;
    s.h.crash_worker().await?;
    s.h.wait_status(&id, DeploymentStatus::Deploying).await?;
    let b = s.build_of(&id).await?;
    assert_eq!(b.status, BuildStatus::Succeeded);
    assert_eq!(s.tags().await?, vec![id.clone()], "one image, one tag");
    let digest = s
        .digests
        .digest("ctrl/acme/shop-web", &id)
        .await?
        .context("pushed")?;
    let image = deployment::get(&s.h.db.pool, &id)
        .await?
        .image
        .unwrap_or_default();
    assert!(
        image.ends_with(&digest),
        "{image} is the pushed digest {digest}"
    );
    let output = s.output(&b.id).await?;
    assert!(
        output.contains("an earlier attempt of this build was interrupted"),
        "{output}"
    );

    // The slot was not leaked: another build of the workspace runs.
    let next = s
        .deploy_files(&[("Dockerfile", "FROM busybox\nRUN echo next\n")])
        .await?;
    s.wait_build(&next, BuildStatus::Succeeded).await?;
    Ok(())
}

#[tokio::test]
async fn a_worker_killed_during_the_push_pushes_the_same_image() -> Result<()> {
    let mut s = BuildStack::start(1, "").await?;
    // A layer big enough that the push takes a moment.
    let id = s
        .deploy_files(&[(
            "Dockerfile",
            "FROM busybox\nRUN dd if=/dev/urandom of=/blob bs=1M count=96 2>/dev/null\n",
        )])
        .await?;
    s.wait_step_message(&id, "Pushing").await?;
    s.h.crash_worker().await?;
    s.h.wait_status(&id, DeploymentStatus::Deploying).await?;
    let b = s.build_of(&id).await?;
    assert_eq!(b.status, BuildStatus::Succeeded);
    let output = s.output(&b.id).await?;
    assert!(
        output.contains("was built by an earlier attempt; pushing it")
            || output.contains("was pushed by an earlier attempt"),
        "the resumed attempt did not rebuild:\n{output}"
    );
    assert_eq!(s.tags().await?, vec![id.clone()]);
    let digest = s
        .digests
        .digest("ctrl/acme/shop-web", &id)
        .await?
        .context("pushed")?;
    assert!(
        deployment::get(&s.h.db.pool, &id)
            .await?
            .image
            .unwrap_or_default()
            .ends_with(&digest)
    );
    Ok(())
}

mod git {
    use ctrl_testkit::github::{Author, CommitSpec, FakeGitHub, RepoOpts, TEST_APP_KEY_PEM};

    use super::*;

    const APP_ID: u64 = 4242;
    const INSTALLATION: i64 = 77;

    /// A build stack whose worker reads repositories from a fake GitHub,
    /// as GitHub App `APP_ID` (installed on acme/private only).
    async fn stack() -> Result<(BuildStack, FakeGitHub)> {
        let github = FakeGitHub::start().await?;
        github.add_app(APP_ID, &ctrl_testkit::github::test_app_public_key_der());
        github.add_installation(u64::try_from(INSTALLATION)?, APP_ID, &["acme/private"]);
        let key = TEST_APP_KEY_PEM.replace('\n', "\\n");
        let s = BuildStack::start(
            2,
            &format!(
                "[github]\napi_url = \"{}\"\napp_id = {APP_ID}\nprivate_key_pem = \"{key}\"\nallow_unauthenticated_deployments = true\n",
                github.url()
            ),
        )
        .await?;
        Ok((s, github))
    }

    fn hello_commit(message: &str) -> CommitSpec {
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
                "FROM busybox\nARG GREETING=none\nCOPY index.html /www/index.html\nRUN echo \"$GREETING\" > /www/greeting.txt\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n",
            )
            .file("web/index.html", "hello from git\n")
            .file("README.md", "# hello\n")
    }

    async fn git_deployment(
        s: &BuildStack,
        repository: &str,
        branch: Option<&str>,
        installation: Option<i64>,
    ) -> Result<String> {
        let (repository, branch) = (repository.to_owned(), branch.map(str::to_owned));
        let id =
            s.h.pending_with(&s.h.preview, move |d| {
                d.source_kind = SourceKind::Git;
                d.image = None;
                d.git_repository = Some(repository);
                d.git_branch = branch;
                d.build = Some(BuildSource {
                    context_path: None,
                    dir: Some("web".into()),
                    dockerfile: Some("Dockerfile".into()),
                    args: [("GREETING".to_owned(), "from a branch".to_owned())].into(),
                    secrets: Vec::new(),
                    installation_id: installation,
                });
            })
            .await?;
        s.h.deploy(&id).await?;
        Ok(id)
    }

    #[tokio::test]
    async fn a_public_branch_is_resolved_built_and_its_commit_recorded() -> Result<()> {
        let (s, github) = stack().await?;
        github.add_repo("acme/hello", RepoOpts::default());
        let sha = github.push("acme/hello", "main", hello_commit("Add the web app"));
        let id = git_deployment(&s, "acme/hello", Some("main"), None).await?;
        s.h.wait_status(&id, DeploymentStatus::Deploying).await?;
        let d = deployment::get(&s.h.db.pool, &id).await?;
        assert_eq!(d.git_commit_sha.as_deref(), Some(sha.as_str()));
        assert_eq!(d.git_commit_message.as_deref(), Some("Add the web app"));
        assert_eq!(d.git_commit_author_handle.as_deref(), Some("octocat"));
        assert_eq!(d.git_commit_timestamp, Some(1_700_000_000_000));
        let b = s.build_of(&id).await?;
        assert_eq!(b.git_commit_sha.as_deref(), Some(sha.as_str()));
        let image = d.image.context("image")?;
        let out = s
            .podman
            .command()?
            .args([
                "run",
                "--rm",
                &image,
                "cat",
                "/www/index.html",
                "/www/greeting.txt",
            ])
            .output()?;
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "hello from git\nfrom a branch\n",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Public and unauthenticated: no token was minted, no JWT sent.
        assert!(
            github
                .requests()
                .iter()
                .all(|r| r.authorization_kind == ctrl_testkit::github::AuthKind::None),
            "{:?}",
            github.requests()
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_private_repository_builds_through_the_installation_and_fails_without() -> Result<()>
    {
        let (s, github) = stack().await?;
        github.add_repo(
            "acme/private",
            RepoOpts {
                private: true,
                ..RepoOpts::default()
            },
        );
        github.push("acme/private", "main", hello_commit("Private app"));
        let ok = git_deployment(&s, "acme/private", None, Some(INSTALLATION)).await?;
        s.h.wait_status(&ok, DeploymentStatus::Deploying).await?;
        assert_eq!(
            deployment::get(&s.h.db.pool, &ok)
                .await?
                .git_branch
                .as_deref(),
            Some("main"),
            "the default branch was resolved and recorded"
        );

        let denied = git_deployment(&s, "acme/private", Some("main"), None).await?;
        let error = s.failure(&denied).await?;
        assert_eq!(
            error,
            "ctrl cannot read the GitHub repository acme/private: the repository is private or does not exist and ctrl has no GitHub App installation for it"
        );
        Ok(())
    }

    #[tokio::test]
    async fn an_empty_repository_and_a_missing_branch_fail_precisely() -> Result<()> {
        let (s, github) = stack().await?;
        github.add_repo("acme/empty", RepoOpts::default());
        let empty = git_deployment(&s, "acme/empty", None, None).await?;
        github.add_repo("acme/hello", RepoOpts::default());
        github.push("acme/hello", "main", hello_commit("x"));
        let missing = git_deployment(&s, "acme/hello", Some("no-such-branch"), None).await?;
        let empty = s.failure(&empty).await?;
        assert_eq!(
            empty,
            "branch `main` has no commits: the repository is empty"
        );
        let missing = s.failure(&missing).await?;
        assert!(
            missing.contains("no-such-branch") && missing.contains("not found"),
            "{missing}"
        );
        Ok(())
    }
}

const VAULT_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// A deployment of `files` whose environment holds `NPM_TOKEN`, handed to
/// the build as a secret.
async fn deploy_with_secret(s: &BuildStack, files: &[(&str, &str)]) -> Result<String> {
    use prost::Message;
    let dir = tempfile::tempdir()?;
    for (name, body) in files {
        std::fs::write(dir.path().join(name), body)?;
    }
    let key = s.upload(dir.path()).await?;
    let vault = ctrl_vault::Vault::new(&[ctrl_vault::KeyConfig {
        id: "k1".into(),
        base64: VAULT_KEY.into(),
    }])?;
    let keyring = s.h.production.clone();
    let sealed = vault.seal(&keyring, b"tok-s3cr3t-123")?;
    let snapshot = ctrl_proto::ctrl::v1::EncryptedEnvironment {
        keyring,
        variables: [("NPM_TOKEN".to_owned(), sealed)].into(),
    }
    .encode_to_vec();
    let id =
        s.h.pending_with(&s.h.production, move |d| {
            d.source_kind = SourceKind::Context;
            d.image = None;
            d.encrypted_environment = snapshot;
            d.build = Some(BuildSource {
                context_path: Some(key),
                dir: Some(".".into()),
                dockerfile: Some("Dockerfile".into()),
                args: Default::default(),
                secrets: vec!["NPM_TOKEN".into()],
                installation_id: None,
            });
        })
        .await?;
    s.h.deploy(&id).await?;
    Ok(id)
}

#[tokio::test]
async fn a_variable_marked_for_builds_is_a_secret_of_the_build_only() -> Result<()> {
    let s = BuildStack::start(
        2,
        &format!("[vault]\nkeys = [{{ id = \"k1\", key = \"{VAULT_KEY}\" }}]\n"),
    )
    .await?;
    let id = deploy_with_secret(
        &s,
        &[(
            "Dockerfile",
            // The Dockerfile must not spell the value (its steps are printed).
            "FROM busybox\nRUN --mount=type=secret,id=NPM_TOKEN grep -q '^tok-s3cr3t-' /run/secrets/NPM_TOKEN && test \"$(wc -c < /run/secrets/NPM_TOKEN)\" -eq 14 && echo secret-matched\n",
        )],
    )
    .await?;
    s.h.wait_status(&id, DeploymentStatus::Deploying).await?;
    let b = s.build_of(&id).await?;
    let output = s.output(&b.id).await?;
    assert!(output.contains("secret-matched"), "{output}");
    assert!(!output.contains("tok-s3cr3t-123"), "{output}");
    let image = deployment::get(&s.h.db.pool, &id)
        .await?
        .image
        .context("image")?;
    // The local image the digest was pushed from.
    let (repository, _) = image.split_once('@').context("by digest")?;
    let saved = s
        .podman
        .command()?
        .args(["save", &format!("{repository}:{id}")])
        .output()?;
    assert!(
        saved.status.success(),
        "{}",
        String::from_utf8_lossy(&saved.stderr)
    );
    assert!(
        !saved.stdout.windows(14).any(|w| w == b"tok-s3cr3t-123"),
        "the secret is in the image"
    );
    assert!(
        !s.h.worker_log(400).contains("tok-s3cr3t-123"),
        "the secret is in the worker's log"
    );
    Ok(())
}

#[tokio::test]
async fn build_secrets_without_a_vault_fail_with_the_reason() -> Result<()> {
    let s = BuildStack::start(2, "").await?;
    let id = deploy_with_secret(&s, &[("Dockerfile", "FROM busybox\n")]).await?;
    let error = s.failure(&id).await?;
    assert_eq!(
        error,
        "This build needs secrets, and the worker has no [vault] to open them with."
    );
    Ok(())
}
