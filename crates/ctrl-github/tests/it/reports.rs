//! Reporting back to GitHub: deployments and their statuses, commit
//! statuses and pull request comments, against the fake.

use ctrl_github::{
    CommitState, CommitStatus, DeploymentState, DeploymentStatus, GitHubError, NewDeployment,
};
use ctrl_testkit::github::{
    AuthKind, CommitSpec, FakeCommitStatus, FakeDeploymentStatus, FakeGitHub, RepoOpts,
};

use super::{APP_ID, INSTALLATION, assert_auth, client, fake, repo, token_requests};

const PRIVATE: &str = "acme/private";

/// The fake with `acme/private` (in the installation) holding one commit,
/// whose SHA it returns.
async fn with_commit() -> (FakeGitHub, String) {
    let fake = fake().await;
    fake.add_repo(
        PRIVATE,
        RepoOpts {
            private: true,
            ..RepoOpts::default()
        },
    );
    let sha = fake.push(PRIVATE, "main", CommitSpec::new("first").file("a", "1"));
    (fake, sha)
}

fn preview(sha: &str) -> NewDeployment<'_> {
    NewDeployment {
        sha,
        environment: "preview/feature-x",
        description: "ctrl preview of feature-x",
        transient: true,
        production: false,
    }
}

fn status(state: DeploymentState, description: &str) -> DeploymentStatus<'_> {
    DeploymentStatus {
        state,
        description,
        log_url: None,
        environment_url: None,
    }
}

fn recorded(
    state: &str,
    description: &str,
    log: Option<&str>,
    env: Option<&str>,
) -> FakeDeploymentStatus {
    FakeDeploymentStatus {
        state: state.to_owned(),
        description: description.to_owned(),
        log_url: log.map(str::to_owned),
        environment_url: env.map(str::to_owned),
    }
}

#[tokio::test]
async fn deployment_statuses_are_recorded_in_order() {
    let (fake, sha) = with_commit().await;
    let gh = client(&fake);
    let r = repo(PRIVATE);

    let id = gh
        .create_deployment(INSTALLATION, &r, &preview(&sha))
        .await
        .unwrap();
    let log = "https://ctrl.example.com/deployments/d_1/logs";
    let url = "https://feature-x.preview.example.com";
    for s in [
        status(DeploymentState::Queued, "waiting for a build slot"),
        DeploymentStatus {
            log_url: Some(log),
            ..status(DeploymentState::InProgress, "building")
        },
        DeploymentStatus {
            log_url: Some(log),
            environment_url: Some(url),
            ..status(DeploymentState::Success, "live")
        },
    ] {
        gh.create_deployment_status(INSTALLATION, &r, id, &s)
            .await
            .unwrap();
    }

    let deployments = fake.deployments(PRIVATE);
    assert_eq!(deployments.len(), 1, "{deployments:?}");
    let d = &deployments[0];
    assert_eq!(
        (
            d.id,
            d.sha.as_str(),
            d.environment.as_str(),
            d.description.as_str(),
            d.transient,
            d.production
        ),
        (
            id,
            sha.as_str(),
            "preview/feature-x",
            "ctrl preview of feature-x",
            true,
            false
        )
    );
    assert_eq!(
        d.statuses,
        [
            recorded("queued", "waiting for a build slot", None, None),
            recorded("in_progress", "building", Some(log), None),
            recorded("success", "live", Some(log), Some(url)),
        ]
    );
    // One token for all four writes, sent as a token.
    assert_eq!(token_requests(&fake).len(), 1);
    assert_auth(&fake, AuthKind::Token);
    let writes: Vec<(String, u16)> = fake
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/repos/"))
        .map(|r| (r.method, r.status))
        .collect();
    assert_eq!(writes, vec![("POST".to_owned(), 201); 4]);

    // A later production deployment: GitHub's own default would demand
    // passing checks; ctrl asks for none, so a failed status does not stop it.
    gh.create_commit_status(
        INSTALLATION,
        &r,
        &sha,
        &CommitStatus {
            state: CommitState::Failure,
            context: "ci/tests",
            description: "1 test failed",
            target_url: None,
        },
    )
    .await
    .unwrap();
    let production = gh
        .create_deployment(
            INSTALLATION,
            &r,
            &NewDeployment {
                environment: "production",
                transient: false,
                production: true,
                ..preview(&sha)
            },
        )
        .await
        .unwrap();
    assert_ne!(production, id);
    let deployments = fake.deployments(PRIVATE);
    assert_eq!(deployments.len(), 2);
    assert!(deployments[1].production && !deployments[1].transient);
}

#[tokio::test]
async fn a_new_successful_deployment_makes_the_previous_one_inactive() {
    let (fake, sha) = with_commit().await;
    let gh = client(&fake);
    let r = repo(PRIVATE);
    let staging = NewDeployment {
        environment: "staging",
        transient: false,
        ..preview(&sha)
    };
    let first = gh
        .create_deployment(INSTALLATION, &r, &staging)
        .await
        .unwrap();
    gh.create_deployment_status(
        INSTALLATION,
        &r,
        first,
        &status(DeploymentState::Success, "live"),
    )
    .await
    .unwrap();
    let second = gh
        .create_deployment(INSTALLATION, &r, &staging)
        .await
        .unwrap();
    gh.create_deployment_status(
        INSTALLATION,
        &r,
        second,
        &status(DeploymentState::Success, "live"),
    )
    .await
    .unwrap();
    let states: Vec<Vec<String>> = fake
        .deployments(PRIVATE)
        .into_iter()
        .map(|d| d.statuses.into_iter().map(|s| s.state).collect())
        .collect();
    assert_eq!(states, [vec!["success", "inactive"], vec!["success"]]);
}

#[tokio::test]
async fn commit_statuses_are_recorded_and_long_descriptions_cut() {
    let (fake, sha) = with_commit().await;
    let gh = client(&fake);
    let r = repo(PRIVATE);
    let target = "https://ctrl.example.com/deployments/d_1";
    gh.create_commit_status(
        INSTALLATION,
        &r,
        &sha,
        &CommitStatus {
            state: CommitState::Pending,
            context: "ctrl/deploy",
            description: "Deploying",
            target_url: Some(target),
        },
    )
    .await
    .unwrap();
    // 200 characters of two bytes each: cut to 139 and "…".
    let long = "é".repeat(200);
    gh.create_commit_status(
        INSTALLATION,
        &r,
        &sha.to_ascii_uppercase(),
        &CommitStatus {
            state: CommitState::Success,
            context: "ctrl/deploy",
            description: &long,
            target_url: None,
        },
    )
    .await
    .unwrap();
    let cut = format!("{}…", "é".repeat(139));
    assert_eq!(
        fake.commit_statuses(PRIVATE, &sha),
        [
            FakeCommitStatus {
                state: "pending".into(),
                context: "ctrl/deploy".into(),
                description: "Deploying".into(),
                target_url: Some(target.into()),
            },
            FakeCommitStatus {
                state: "success".into(),
                context: "ctrl/deploy".into(),
                description: cut.clone(),
                target_url: None,
            },
        ]
    );

    // Deployment and deployment status descriptions are cut the same way
    // (the fake refuses more than 140 characters, as GitHub does).
    let id = gh
        .create_deployment(
            INSTALLATION,
            &r,
            &NewDeployment {
                description: &long,
                ..preview(&sha)
            },
        )
        .await
        .unwrap();
    gh.create_deployment_status(
        INSTALLATION,
        &r,
        id,
        &status(DeploymentState::Failure, &long),
    )
    .await
    .unwrap();
    let d = &fake.deployments(PRIVATE)[0];
    assert_eq!(d.description, cut);
    assert_eq!(d.statuses[0].description, cut);
    assert_eq!(d.statuses[0].description.chars().count(), 140);
}

#[tokio::test]
async fn find_comment_pages_through_the_comments() {
    let (fake, _) = with_commit().await;
    fake.set_app_slug(APP_ID, "ctrl-test")
        .add_pull_request(PRIVATE, 7);
    let gh = client(&fake);
    let r = repo(PRIVATE);
    let marker = "<!-- ctrl:preview -->";

    // Nothing yet: one page, empty.
    assert_eq!(
        gh.find_comment(INSTALLATION, &r, 7, marker).await.unwrap(),
        None
    );
    for i in 0..150 {
        fake.add_comment(PRIVATE, 7, "octocat", &format!("comment {i}"));
    }
    let ours = gh
        .create_comment(INSTALLATION, &r, 7, &format!("{marker}\nPreview: building"))
        .await
        .unwrap();
    let before = fake.requests().len();
    assert_eq!(
        gh.find_comment(INSTALLATION, &r, 7, marker).await.unwrap(),
        Some(ours)
    );
    let pages: Vec<(String, u16)> = fake.requests()[before..]
        .iter()
        .map(|r| (r.method.clone(), r.status))
        .collect();
    assert_eq!(
        pages,
        vec![("GET".to_owned(), 200); 2],
        "the marker is on page 2"
    );
    assert_eq!(
        gh.find_comment(INSTALLATION, &r, 7, "<!-- ctrl:other -->")
            .await
            .unwrap(),
        None
    );
    let comments = fake.comments(PRIVATE, 7);
    assert_eq!(comments.len(), 151);
    assert_eq!(comments[150].author, "ctrl-test[bot]");
    assert_eq!(comments[0].author, "octocat");

    // An unknown pull request: GitHub's 404, which may also mean no access.
    let e = gh
        .find_comment(INSTALLATION, &r, 8, marker)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, GitHubError::NoPermission { why, .. } if why.contains("pull request (or issue) #8 does not exist")),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_comment_is_created_then_updated() {
    let (fake, _) = with_commit().await;
    fake.add_pull_request(PRIVATE, 3);
    let gh = client(&fake);
    let r = repo(PRIVATE);

    let id = gh
        .create_comment(INSTALLATION, &r, 3, "Preview: building")
        .await
        .unwrap();
    gh.update_comment(
        INSTALLATION,
        &r,
        id,
        "Preview: live at https://x.example.com",
    )
    .await
    .unwrap();
    let comments = fake.comments(PRIVATE, 3);
    assert_eq!(comments.len(), 1);
    assert_eq!(
        (comments[0].id, comments[0].body.as_str(), comments[0].edits),
        (id, "Preview: live at https://x.example.com", 1)
    );
    assert_eq!(comments[0].author, format!("app-{APP_ID}[bot]"));
    let methods: Vec<(String, u16)> = fake
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/repos/"))
        .map(|r| (r.method, r.status))
        .collect();
    assert_eq!(
        methods,
        [("POST".to_owned(), 201), ("PATCH".to_owned(), 200)]
    );

    // Bodies over GitHub's limit are refused before anything is sent.
    let before = fake.requests().len();
    let e = gh
        .update_comment(INSTALLATION, &r, id, &"x".repeat(65_537))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &e,
            GitHubError::InvalidInput {
                field: "comment.body",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("65536"), "{e}");
    assert_eq!(fake.requests().len(), before);
    gh.update_comment(INSTALLATION, &r, id, &"ü".repeat(65_536))
        .await
        .unwrap();
    assert_eq!(fake.comments(PRIVATE, 3)[0].edits, 2);

    // A comment that is gone.
    let e = gh
        .update_comment(INSTALLATION, &r, id + 1_000, "x")
        .await
        .unwrap_err();
    assert!(
        matches!(&e, GitHubError::NoPermission { why, .. } if why.contains(&format!("comment {} does not exist", id + 1_000))),
        "{e:?}"
    );
}

#[tokio::test]
async fn reports_outside_the_installation_name_the_permission() {
    let (fake, _) = with_commit().await;
    // Public, but not in the installation: writes need it anyway.
    fake.add_repo("acme/hello", RepoOpts::default());
    fake.add_pull_request("acme/hello", 1);
    let sha = fake.push("acme/hello", "main", CommitSpec::new("hi"));
    let gh = client(&fake);
    let hello = repo("acme/hello");

    let check = |e: GitHubError, permission: &str| match &e {
        GitHubError::NoPermission {
            repository,
            permission: p,
            why,
            ..
        } => {
            assert_eq!(repository, "acme/hello");
            assert_eq!(*p, permission);
            assert!(why.contains("404 Not Found"), "{why}");
            assert!(
                why.contains(&format!("installation {INSTALLATION} does not include it")),
                "{why}"
            );
            assert!(!e.is_transient());
            let text = e.to_string();
            assert!(text.contains(&format!("\"{permission}\"")), "{text}");
            assert!(text.contains("acme/hello"), "{text}");
        }
        other => panic!("{other:?}"),
    };
    check(
        gh.create_deployment(INSTALLATION, &hello, &preview(&sha))
            .await
            .unwrap_err(),
        "Deployments: write",
    );
    check(
        gh.create_deployment_status(
            INSTALLATION,
            &hello,
            1,
            &status(DeploymentState::Queued, ""),
        )
        .await
        .unwrap_err(),
        "Deployments: write",
    );
    check(
        gh.create_commit_status(
            INSTALLATION,
            &hello,
            &sha,
            &CommitStatus {
                state: CommitState::Pending,
                context: "ctrl/deploy",
                description: "",
                target_url: None,
            },
        )
        .await
        .unwrap_err(),
        "Commit statuses: write",
    );
    check(
        gh.find_comment(INSTALLATION, &hello, 1, "m")
            .await
            .unwrap_err(),
        "Pull requests: write",
    );
    check(
        gh.create_comment(INSTALLATION, &hello, 1, "hi")
            .await
            .unwrap_err(),
        "Pull requests: write",
    );
    check(
        gh.update_comment(INSTALLATION, &hello, 1, "hi")
            .await
            .unwrap_err(),
        "Pull requests: write",
    );
    assert!(fake.deployments("acme/hello").is_empty());
    assert!(fake.comments("acme/hello", 1).is_empty());

    // In the installation but without the permission: GitHub's 403.
    fake.deny_permission(INSTALLATION, "deployments");
    let sha = fake.push(PRIVATE, "main", CommitSpec::new("second"));
    let e = gh
        .create_deployment(INSTALLATION, &repo(PRIVATE), &preview(&sha))
        .await
        .unwrap_err();
    assert_eq!(
        e,
        GitHubError::NoPermission {
            repository: PRIVATE.into(),
            what: "deployments",
            permission: "Deployments: write",
            why: "Resource not accessible by integration".into(),
        }
    );
}

#[tokio::test]
async fn github_refusals_carry_its_message() {
    let (fake, _) = with_commit().await;
    let gh = client(&fake);
    let r = repo(PRIVATE);
    let unknown = "0123456789abcdef0123456789abcdef01234567";
    let e = gh
        .create_deployment(INSTALLATION, &r, &preview(unknown))
        .await
        .unwrap_err();
    assert_eq!(
        e,
        GitHubError::Rejected {
            what: format!("the deployment of {unknown} to `preview/feature-x`"),
            message: format!("No ref found for: {unknown}"),
        }
    );
    assert!(!e.is_transient());
    let e = gh
        .create_commit_status(
            INSTALLATION,
            &r,
            unknown,
            &CommitStatus {
                state: CommitState::Error,
                context: "ctrl/deploy",
                description: "",
                target_url: None,
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&e, GitHubError::Rejected { message, .. } if message == &format!("No commit found for SHA: {unknown}")),
        "{e:?}"
    );
    // Inputs checked before anything is sent.
    let before = fake.requests().len();
    for e in [
        gh.create_deployment(INSTALLATION, &r, &preview("main"))
            .await
            .unwrap_err(),
        gh.create_deployment(
            INSTALLATION,
            &r,
            &NewDeployment {
                environment: " ",
                ..preview(unknown)
            },
        )
        .await
        .unwrap_err(),
        gh.create_comment(INSTALLATION, &r, 1, "")
            .await
            .unwrap_err(),
        gh.find_comment(INSTALLATION, &r, 1, "").await.unwrap_err(),
        gh.create_deployment_status(INSTALLATION, &r, 0, &status(DeploymentState::Queued, ""))
            .await
            .unwrap_err(),
    ] {
        assert!(matches!(e, GitHubError::InvalidInput { .. }), "{e:?}");
    }
    assert_eq!(fake.requests().len(), before);
}

#[tokio::test]
async fn server_errors_on_reports_are_transient() {
    let (fake, sha) = with_commit().await;
    fake.add_pull_request(PRIVATE, 2);
    let gh = client(&fake);
    let r = repo(PRIVATE);

    fake.fail_next("/repos/acme/private/deployments", 502);
    let e = gh
        .create_deployment(INSTALLATION, &r, &preview(&sha))
        .await
        .unwrap_err();
    assert!(e.is_transient(), "{e:?}");
    assert!(e.to_string().contains("502"), "{e}");
    assert!(fake.deployments(PRIVATE).is_empty());
    let id = gh
        .create_deployment(INSTALLATION, &r, &preview(&sha))
        .await
        .unwrap();

    fake.fail_next(
        &format!("/repos/acme/private/deployments/{id}/statuses"),
        503,
    );
    assert!(
        gh.create_deployment_status(INSTALLATION, &r, id, &status(DeploymentState::Queued, ""))
            .await
            .unwrap_err()
            .is_transient()
    );
    fake.fail_next("/repos/acme/private/statuses/", 500);
    assert!(
        gh.create_commit_status(
            INSTALLATION,
            &r,
            &sha,
            &CommitStatus {
                state: CommitState::Pending,
                context: "ctrl/deploy",
                description: "",
                target_url: None,
            },
        )
        .await
        .unwrap_err()
        .is_transient()
    );
    fake.fail_next("/repos/acme/private/issues/2/comments", 502);
    assert!(
        gh.find_comment(INSTALLATION, &r, 2, "m")
            .await
            .unwrap_err()
            .is_transient()
    );
    // A secondary rate limit (403 with retry-after) is one too.
    fake.fail_next("/repos/acme/private/issues/2/comments", 403);
    assert!(matches!(
        gh.create_comment(INSTALLATION, &r, 2, "hi")
            .await
            .unwrap_err(),
        GitHubError::RateLimited { .. }
    ));
    assert!(fake.comments(PRIVATE, 2).is_empty());
    gh.create_comment(INSTALLATION, &r, 2, "hi").await.unwrap();
    assert_eq!(fake.comments(PRIVATE, 2).len(), 1);
}

#[tokio::test]
async fn a_revoked_token_is_replaced_once_for_reports() {
    let (fake, sha) = with_commit().await;
    let gh = client(&fake);
    let r = repo(PRIVATE);
    gh.installation_token(INSTALLATION).await.unwrap();
    fake.revoke_tokens(INSTALLATION);
    gh.create_deployment(INSTALLATION, &r, &preview(&sha))
        .await
        .unwrap();
    assert_eq!(token_requests(&fake).len(), 2);
    let statuses: Vec<u16> = fake
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/deployments"))
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [401, 201]);
    assert_eq!(fake.deployments(PRIVATE).len(), 1);
}
