//! `ctrl-github` against `ctrl_testkit::github::FakeGitHub`: tokens, commit
//! resolution, tarballs, reports (deployments, statuses, comments) and
//! every error the worker has to tell apart.

mod reports;

use std::collections::BTreeMap;
use std::io::Read as _;
use std::time::{Duration, SystemTime};

use ctrl_github::{Commit, GitHub, GitHubConfig, GitHubError, RepoRef, Want};
use ctrl_testkit::github::{
    AuthKind, Author, CommitSpec, FakeGitHub, OTHER_TEST_APP_KEY_PEM, RecordedRequest, RepoOpts,
    TEST_APP_KEY_PEM, test_app_public_key_der,
};
use zeroize::Zeroizing;

const APP_ID: u64 = 4242;
const INSTALLATION: u64 = 77;

/// A fake with the test app installed on `acme/private`.
async fn fake() -> FakeGitHub {
    let fake = FakeGitHub::start().await.unwrap();
    fake.add_app(APP_ID, &test_app_public_key_der())
        .add_installation(INSTALLATION, APP_ID, &["acme/private"]);
    fake
}

fn config(fake: &FakeGitHub) -> GitHubConfig {
    GitHubConfig {
        api_url: fake.url().to_owned(),
        app_id: APP_ID,
        private_key_pem: Zeroizing::new(TEST_APP_KEY_PEM.to_owned()),
        allow_unauthenticated: true,
        request_timeout: Duration::from_secs(10),
        ..GitHubConfig::default()
    }
}

fn client(fake: &FakeGitHub) -> GitHub {
    GitHub::new(config(fake)).unwrap()
}

fn repo(full_name: &str) -> RepoRef {
    RepoRef::parse(full_name).unwrap()
}

fn token_requests(fake: &FakeGitHub) -> Vec<RecordedRequest> {
    fake.requests()
        .into_iter()
        .filter(|r| r.path == format!("/app/installations/{INSTALLATION}/access_tokens"))
        .collect()
}

/// Every request was authenticated as the endpoint requires: the JWT only
/// on `/app/…`, and `expected` everywhere else.
fn assert_auth(fake: &FakeGitHub, expected: AuthKind) {
    for r in fake.requests() {
        let want = if r.path.starts_with("/app/") {
            AuthKind::Jwt
        } else {
            expected
        };
        assert_eq!(r.authorization_kind, want, "{r:?}");
    }
}

#[tokio::test]
async fn installation_token_is_minted_once_and_reused() {
    let fake = fake().await;
    fake.add_repo(
        "acme/private",
        RepoOpts {
            private: true,
            ..RepoOpts::default()
        },
    );
    let sha = fake.push(
        "acme/private",
        "main",
        CommitSpec::new("first").file("a", "1"),
    );
    let gh = client(&fake);

    let first = gh.installation_token(INSTALLATION).await.unwrap();
    let second = gh.installation_token(INSTALLATION).await.unwrap();
    assert_eq!(first.secret(), second.secret());
    assert!(first.secret().starts_with("ghs_"));
    let left = first
        .expires_at()
        .duration_since(SystemTime::now())
        .unwrap();
    assert!(
        left > Duration::from_secs(3500) && left <= Duration::from_secs(3600),
        "{left:?}"
    );
    assert!(!format!("{first:?}").contains(first.secret()));

    // Clones share the cache; resolving and downloading reuse the token.
    let other = gh.clone();
    let commit = other
        .resolve(
            &repo("acme/private"),
            Some(INSTALLATION),
            Want::DefaultBranch,
        )
        .await
        .unwrap();
    assert_eq!(commit.sha, sha);
    gh.tarball(&repo("acme/private"), Some(INSTALLATION), &sha)
        .await
        .unwrap();

    let minted = token_requests(&fake);
    assert_eq!(minted.len(), 1, "{minted:?}");
    assert_eq!(minted[0].method, "POST");
    assert_eq!(minted[0].status, 201);
    assert_auth(&fake, AuthKind::Token);
    // GitHub's headers on every API request.
    for r in fake
        .requests()
        .iter()
        .filter(|r| !r.path.starts_with("/_codeload/"))
    {
        assert_eq!(
            r.accept.as_deref(),
            Some("application/vnd.github+json"),
            "{r:?}"
        );
        assert_eq!(r.api_version.as_deref(), Some("2022-11-28"), "{r:?}");
        assert_eq!(r.user_agents.len(), 1, "{r:?}");
    }
}

#[tokio::test]
async fn installation_token_is_refreshed_near_expiry() {
    let fake = fake().await;
    // Four minutes left is inside the five-minute margin: never reused.
    fake.set_token_ttl(Duration::from_secs(4 * 60));
    let gh = client(&fake);
    let a = gh.installation_token(INSTALLATION).await.unwrap();
    let b = gh.installation_token(INSTALLATION).await.unwrap();
    assert_ne!(a.secret(), b.secret());
    assert_eq!(token_requests(&fake).len(), 2);

    fake.set_token_ttl(Duration::from_secs(3600));
    let c = gh.installation_token(INSTALLATION).await.unwrap();
    let d = gh.installation_token(INSTALLATION).await.unwrap();
    assert_ne!(b.secret(), c.secret());
    assert_eq!(c.secret(), d.secret());
    assert_eq!(token_requests(&fake).len(), 3);
    assert_auth(&fake, AuthKind::Token);
}

#[tokio::test]
async fn resolves_default_branch_named_branch_and_pinned_commit_anonymously() {
    let fake = fake().await;
    fake.add_repo(
        "acme/hello",
        RepoOpts {
            private: false,
            default_branch: "trunk".into(),
        },
    );
    let first = fake.push(
        "acme/hello",
        "trunk",
        CommitSpec::new("first").date(1_700_000_000),
    );
    let head = fake.push(
        "acme/hello",
        "trunk",
        CommitSpec::new("second\n\nwith a body")
            .date(1_700_000_100)
            .file("x", "y"),
    );
    let stranger = Author {
        login: None,
        name: "Jane Doe".into(),
        email: "jane@example.com".into(),
        avatar_url: String::new(),
    };
    let feature = fake.push(
        "acme/hello",
        "feature/fix#1",
        CommitSpec::new("fix").author(stranger).date(1_700_000_200),
    );
    let gh = client(&fake);
    let hello = repo("acme/hello");

    let commit = gh.resolve(&hello, None, Want::DefaultBranch).await.unwrap();
    assert_eq!(
        commit,
        Commit {
            sha: head.clone(),
            branch: Some("trunk".into()),
            message: "second\n\nwith a body".into(),
            author_handle: "octocat".into(),
            author_avatar_url: "https://avatars.githubusercontent.com/u/583231?v=4".into(),
            timestamp_ms: 1_700_000_100_000,
        }
    );

    let commit = gh
        .resolve(&hello, None, Want::Branch("feature/fix#1".into()))
        .await
        .unwrap();
    assert_eq!(commit.sha, feature);
    assert_eq!(commit.branch.as_deref(), Some("feature/fix#1"));
    // No GitHub account behind the email: the name, and no avatar.
    assert_eq!(commit.author_handle, "Jane Doe");
    assert_eq!(commit.author_avatar_url, "");

    let pinned = gh
        .resolve(&hello, None, Want::Commit(first.to_uppercase()))
        .await
        .unwrap();
    assert_eq!(
        (pinned.sha.as_str(), pinned.branch.as_deref()),
        (first.as_str(), None)
    );
    assert_eq!(pinned.timestamp_ms, 1_700_000_000_000);
    let short = gh
        .resolve(&hello, None, Want::Commit(first[..7].into()))
        .await
        .unwrap();
    assert_eq!(short.sha, first);

    // Exactly the documented requests, all anonymous.
    let paths: Vec<String> = fake.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        paths,
        [
            "/repos/acme/hello".to_owned(),
            "/repos/acme/hello/commits/heads/trunk".to_owned(),
            "/repos/acme/hello/commits/heads/feature/fix%231".to_owned(),
            format!("/repos/acme/hello/commits/{first}"),
            format!("/repos/acme/hello/commits/{}", &first[..7]),
        ]
    );
    assert_auth(&fake, AuthKind::None);
}

#[tokio::test]
async fn private_repositories_need_an_installation_that_includes_them() {
    let fake = fake().await;
    fake.add_repo(
        "acme/private",
        RepoOpts {
            private: true,
            ..RepoOpts::default()
        },
    )
    .add_repo(
        "acme/secret",
        RepoOpts {
            private: true,
            ..RepoOpts::default()
        },
    );
    let sha = fake.push("acme/private", "main", CommitSpec::new("hi"));
    fake.push("acme/secret", "main", CommitSpec::new("hi"));
    let gh = client(&fake);

    // Anonymous: GitHub answers 404, as for a repository that does not exist.
    let e = gh
        .resolve(&repo("acme/private"), None, Want::DefaultBranch)
        .await
        .unwrap_err();
    assert_eq!(
        e,
        GitHubError::NoAccess {
            repository: "acme/private".into(),
            why: "the repository is private or does not exist and ctrl has no GitHub App installation for it".into(),
        }
    );
    assert!(!e.is_transient());
    assert_auth(&fake, AuthKind::None);

    let commit = gh
        .resolve(
            &repo("acme/private"),
            Some(INSTALLATION),
            Want::Branch("main".into()),
        )
        .await
        .unwrap();
    assert_eq!(commit.sha, sha);

    // The installation does not include acme/secret.
    let e = gh
        .resolve(
            &repo("acme/secret"),
            Some(INSTALLATION),
            Want::DefaultBranch,
        )
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "repository acme/secret (or the GitHub App installation 77 does not include it) was not found on GitHub"
    );

    // An installation GitHub does not know (uninstalled, or another app's).
    let e = gh
        .resolve(&repo("acme/private"), Some(404_404), Want::DefaultBranch)
        .await
        .unwrap_err();
    let GitHubError::NoAccess { repository, why } = &e else {
        panic!("{e:?}");
    };
    assert_eq!(repository, "acme/private");
    assert!(
        why.contains("installation 404404") && why.contains("uninstalled"),
        "{why}"
    );

    let private_reads: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/repos/acme/private") && r.status == 200)
        .collect();
    assert!(!private_reads.is_empty());
    assert!(
        private_reads
            .iter()
            .all(|r| r.authorization_kind == AuthKind::Token)
    );
}

#[tokio::test]
async fn unauthenticated_reads_can_be_disabled() {
    let fake = fake().await;
    fake.add_repo("acme/hello", RepoOpts::default());
    fake.push("acme/hello", "main", CommitSpec::new("hi"));
    let gh = GitHub::new(GitHubConfig {
        allow_unauthenticated: false,
        ..config(&fake)
    })
    .unwrap();
    let e = gh
        .resolve(&repo("acme/hello"), None, Want::DefaultBranch)
        .await
        .unwrap_err();
    assert_eq!(
        e,
        GitHubError::NoAccess {
            repository: "acme/hello".into(),
            why: "no GitHub App installation given and unauthenticated deployments are not allowed"
                .into(),
        }
    );
    let e = gh
        .tarball(&repo("acme/hello"), None, &"a".repeat(40))
        .await
        .unwrap_err();
    assert!(matches!(e, GitHubError::NoAccess { .. }), "{e:?}");
    assert_eq!(fake.requests(), []);
}

#[tokio::test]
async fn missing_refs_and_empty_repositories() {
    let fake = fake().await;
    fake.add_repo("acme/hello", RepoOpts::default())
        .add_repo("acme/empty", RepoOpts::default());
    let sha = fake.push("acme/hello", "main", CommitSpec::new("hi"));
    let gh = client(&fake);
    let hello = repo("acme/hello");

    let e = gh
        .resolve(&hello, None, Want::Branch("nope".into()))
        .await
        .unwrap_err();
    assert_eq!(
        e,
        GitHubError::NotFound {
            what: "branch `nope` of acme/hello".into()
        }
    );
    assert_eq!(
        e.to_string(),
        "branch `nope` of acme/hello was not found on GitHub"
    );
    let missing = "0123456789abcdef0123456789abcdef01234567";
    let e = gh
        .resolve(&hello, None, Want::Commit(missing.into()))
        .await
        .unwrap_err();
    assert_eq!(
        e,
        GitHubError::NotFound {
            what: format!("commit {missing} of acme/hello")
        }
    );
    // The tarball endpoint answers 404 for a missing commit too; the client
    // checks the repository to tell the two apart.
    let e = gh.tarball(&hello, None, missing).await.unwrap_err();
    assert_eq!(
        e,
        GitHubError::NotFound {
            what: format!("commit {missing} of acme/hello")
        }
    );
    let e = gh
        .resolve(&repo("acme/nothing"), None, Want::Branch("main".into()))
        .await
        .unwrap_err();
    assert!(matches!(e, GitHubError::NoAccess { .. }), "{e:?}");

    let empty = repo("acme/empty");
    let e = gh
        .resolve(&empty, None, Want::DefaultBranch)
        .await
        .unwrap_err();
    assert_eq!(
        e,
        GitHubError::EmptyBranch {
            branch: "main".into()
        }
    );
    let e = gh
        .resolve(&empty, None, Want::Branch("dev".into()))
        .await
        .unwrap_err();
    assert_eq!(
        e,
        GitHubError::EmptyBranch {
            branch: "dev".into()
        }
    );
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.path == "/repos/acme/empty/commits/heads/main" && r.status == 409)
    );
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.path == "/repos/acme/hello/commits/heads/nope" && r.status == 422)
    );
    // Sanity: the repository itself resolves.
    assert_eq!(
        gh.resolve(&hello, None, Want::DefaultBranch)
            .await
            .unwrap()
            .sha,
        sha
    );
}

#[tokio::test]
async fn inputs_are_checked_before_any_request() {
    let fake = fake().await;
    let gh = client(&fake);
    let hello = repo("acme/hello");
    let field = |e: GitHubError| match e {
        GitHubError::InvalidInput { field, .. } => field,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        field(RepoRef::new("ac me", "x").unwrap_err()),
        "repository.owner"
    );
    assert_eq!(
        field(RepoRef::parse("acme/..").unwrap_err()),
        "repository.name"
    );
    let e = gh
        .resolve(&hello, None, Want::Branch("a..b".into()))
        .await
        .unwrap_err();
    assert_eq!(field(e), "branch");
    let e = gh
        .resolve(&hello, None, Want::Branch("x\u{0}".into()))
        .await
        .unwrap_err();
    assert_eq!(field(e), "branch");
    let e = gh
        .resolve(&hello, None, Want::Commit("main".into()))
        .await
        .unwrap_err();
    assert_eq!(field(e), "commit_sha");
    let e = gh.tarball(&hello, None, "abc1234").await.unwrap_err();
    assert_eq!(field(e), "commit_sha");
    assert_eq!(fake.requests(), []);
}

#[tokio::test]
async fn tarball_round_trips_like_githubs() {
    let fake = fake().await;
    fake.add_repo(
        "acme/private",
        RepoOpts {
            private: true,
            ..RepoOpts::default()
        },
    );
    let spec = CommitSpec::new("app")
        .file("README.md", "hello\n")
        .file("src/main.rs", "fn main() {}\n")
        .file("src/deep/nested/file.txt", vec![0_u8, 1, 2, 255])
        .executable("bin/start", "#!/bin/sh\nexec app\n");
    let sha = fake.push("acme/private", "main", spec.clone());
    let gh = client(&fake);

    let bytes = gh
        .tarball(&repo("acme/private"), Some(INSTALLATION), &sha)
        .await
        .unwrap();
    let Unpacked {
        comment,
        tops: top_dirs,
        files,
    } = unpack(&bytes);
    assert_eq!(comment.as_deref(), Some(sha.as_str()), "pax global header");
    assert_eq!(top_dirs, [format!("acme-private-{}", &sha[..7])]);
    let want: BTreeMap<String, (Vec<u8>, u32)> = spec
        .files
        .iter()
        .map(|(path, f)| {
            let mode = if f.executable { 0o775 } else { 0o664 };
            (path.clone(), (f.contents.clone(), mode))
        })
        .collect();
    assert_eq!(files, want);

    // The API redirects to codeload with a token in the URL; the client
    // follows it.
    let tail: Vec<(String, u16)> = fake
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("tarball") || r.path.starts_with("/_codeload/"))
        .map(|r| (r.path, r.status))
        .collect();
    assert_eq!(
        tail,
        [
            (format!("/repos/acme/private/tarball/{sha}"), 302),
            (format!("/_codeload/acme/private/legacy.tar.gz/{sha}"), 200),
        ]
    );
    assert_auth(&fake, AuthKind::Token);
}

#[tokio::test]
async fn tarballs_over_the_limit_are_refused() {
    let fake = fake().await;
    fake.add_repo("acme/big", RepoOpts::default());
    // Incompressible, so the gzip stays large.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let noise: Vec<u8> = (0..200_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let sha = fake.push(
        "acme/big",
        "main",
        CommitSpec::new("big").file("blob", noise),
    );
    let gh = GitHub::new(GitHubConfig {
        max_tarball_bytes: 100_000,
        ..config(&fake)
    })
    .unwrap();
    let want = GitHubError::TooLarge {
        what: format!("the tarball of acme/big at {sha}"),
        limit_bytes: 100_000,
    };
    // Streamed without Content-Length: stopped while reading.
    let e = gh.tarball(&repo("acme/big"), None, &sha).await.unwrap_err();
    assert_eq!(e, want);
    assert!(e.to_string().contains("github.max_tarball_bytes"), "{e}");
    // With Content-Length: refused before reading.
    fake.set_codeload_content_length(true);
    let e = gh.tarball(&repo("acme/big"), None, &sha).await.unwrap_err();
    assert_eq!(e, want);
    // Within the limit it downloads.
    let roomy = GitHub::new(GitHubConfig {
        max_tarball_bytes: 1 << 20,
        ..config(&fake)
    })
    .unwrap();
    assert!(
        roomy
            .tarball(&repo("acme/big"), None, &sha)
            .await
            .unwrap()
            .len()
            > 100_000
    );
}

#[tokio::test]
async fn server_errors_and_rate_limits_are_transient() {
    let fake = fake().await;
    fake.add_repo("acme/hello", RepoOpts::default());
    let sha = fake.push("acme/hello", "main", CommitSpec::new("hi"));
    let gh = client(&fake);
    let hello = repo("acme/hello");

    fake.fail_next("/repos/acme/hello", 503);
    let e = gh
        .resolve(&hello, None, Want::DefaultBranch)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, GitHubError::Transient(m) if m.contains("503")),
        "{e:?}"
    );
    assert!(e.is_transient());
    // Injected once: the next call succeeds.
    assert_eq!(
        gh.resolve(&hello, None, Want::DefaultBranch)
            .await
            .unwrap()
            .sha,
        sha
    );

    fake.fail_next("/repos/acme/hello/commits", 429);
    let e = gh
        .resolve(&hello, None, Want::Branch("main".into()))
        .await
        .unwrap_err();
    assert_eq!(
        e,
        GitHubError::RateLimited {
            retry_after: Some(Duration::from_secs(60))
        }
    );
    assert!(e.is_transient());

    fake.fail_next("/_codeload/", 502);
    let e = gh.tarball(&hello, None, &sha).await.unwrap_err();
    assert!(e.is_transient(), "{e:?}");

    fake.fail_next("/app/installations", 500);
    let e = gh.installation_token(INSTALLATION).await.unwrap_err();
    assert!(e.is_transient(), "{e:?}");

    // The primary limit: 403 with x-ratelimit-remaining 0; retry at the reset.
    fake.set_anonymous_rate_limit(0);
    let e = gh
        .resolve(&hello, None, Want::DefaultBranch)
        .await
        .unwrap_err();
    let GitHubError::RateLimited {
        retry_after: Some(after),
    } = e
    else {
        panic!("{e:?}");
    };
    assert!(
        after > Duration::from_secs(3500) && after <= Duration::from_secs(3600),
        "{after:?}"
    );

    // Nobody listening: a connection error.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gone = GitHub::new(GitHubConfig {
        api_url: format!("http://127.0.0.1:{port}"),
        ..config(&fake)
    })
    .unwrap();
    let e = gone
        .resolve(&hello, None, Want::DefaultBranch)
        .await
        .unwrap_err();
    assert!(e.is_transient(), "{e:?}");
}

#[tokio::test]
async fn a_jwt_signed_with_another_key_is_refused() {
    let fake = fake().await;
    fake.add_repo(
        "acme/private",
        RepoOpts {
            private: true,
            ..RepoOpts::default()
        },
    );
    fake.push("acme/private", "main", CommitSpec::new("hi"));
    let gh = GitHub::new(GitHubConfig {
        private_key_pem: Zeroizing::new(OTHER_TEST_APP_KEY_PEM.to_owned()),
        ..config(&fake)
    })
    .unwrap();
    let e = gh.installation_token(INSTALLATION).await.unwrap_err();
    let GitHubError::Config { field, why } = &e else {
        panic!("{e:?}");
    };
    assert_eq!(*field, "github.private_key");
    assert!(
        why.contains("A JSON web token could not be decoded"),
        "{why}"
    );
    assert!(!e.is_transient());
    let again = gh
        .resolve(
            &repo("acme/private"),
            Some(INSTALLATION),
            Want::DefaultBranch,
        )
        .await
        .unwrap_err();
    assert_eq!(again, e);
    let minted = token_requests(&fake);
    assert_eq!(minted.len(), 2);
    assert!(
        minted
            .iter()
            .all(|r| r.status == 401 && r.authorization_kind == AuthKind::Jwt)
    );
    // Nothing was read from the repository.
    assert!(fake.requests().iter().all(|r| r.path.starts_with("/app/")));
}

#[tokio::test]
async fn a_revoked_token_is_replaced_once() {
    let fake = fake().await;
    fake.add_repo(
        "acme/private",
        RepoOpts {
            private: true,
            ..RepoOpts::default()
        },
    );
    let sha = fake.push("acme/private", "main", CommitSpec::new("hi"));
    let gh = client(&fake);
    let private = repo("acme/private");
    gh.resolve(&private, Some(INSTALLATION), Want::DefaultBranch)
        .await
        .unwrap();
    fake.revoke_tokens(INSTALLATION);
    let commit = gh
        .resolve(&private, Some(INSTALLATION), Want::DefaultBranch)
        .await
        .unwrap();
    assert_eq!(commit.sha, sha);
    assert_eq!(token_requests(&fake).len(), 2);
    let refused: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.status == 401)
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].path, "/repos/acme/private");
}

#[tokio::test]
async fn configuration_errors_name_the_field() {
    let fake = fake().await;
    let field = |cfg: GitHubConfig| match GitHub::new(cfg) {
        Err(GitHubError::Config { field, .. }) => field,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        field(GitHubConfig {
            api_url: "not a url".into(),
            ..config(&fake)
        }),
        "github.api_url"
    );
    assert_eq!(
        field(GitHubConfig {
            api_url: "ftp://x".into(),
            ..config(&fake)
        }),
        "github.api_url"
    );
    assert_eq!(
        field(GitHubConfig {
            app_id: 0,
            ..config(&fake)
        }),
        "github.app_id"
    );
    assert_eq!(
        field(GitHubConfig {
            private_key_pem: Zeroizing::new(String::new()),
            ..config(&fake)
        }),
        "github.private_key"
    );
    assert_eq!(
        field(GitHubConfig {
            private_key_pem: Zeroizing::new("garbage".into()),
            ..config(&fake)
        }),
        "github.private_key"
    );
    assert_eq!(
        field(GitHubConfig {
            request_timeout: Duration::ZERO,
            ..config(&fake)
        }),
        "github.request_timeout"
    );
    assert_eq!(
        field(GitHubConfig {
            max_tarball_bytes: 0,
            ..config(&fake)
        }),
        "github.max_tarball_bytes"
    );
    // The key never shows in Debug output.
    let debug = format!("{:?}", config(&fake));
    assert!(
        debug.contains("<redacted>") && !debug.contains("PRIVATE KEY"),
        "{debug}"
    );

    // Without an app, installations cannot be used; public reads still work.
    let no_app = GitHub::new(GitHubConfig {
        app_id: 0,
        private_key_pem: Zeroizing::new(String::new()),
        ..config(&fake)
    })
    .unwrap();
    let e = no_app.installation_token(INSTALLATION).await.unwrap_err();
    assert!(
        matches!(
            e,
            GitHubError::Config {
                field: "github.app_id",
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(fake.requests(), []);
}

/// A tarball's contents: the pax global header's `comment`, the top
/// directories, and every file below its top directory with its mode.
struct Unpacked {
    comment: Option<String>,
    tops: Vec<String>,
    files: BTreeMap<String, (Vec<u8>, u32)>,
}

/// Unpacks a gzip'd tarball.
fn unpack(gz: &[u8]) -> Unpacked {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(gz));
    let mut comment = None;
    let mut tops = Vec::new();
    let mut files = BTreeMap::new();
    for (i, entry) in archive.entries().unwrap().enumerate() {
        let mut entry = entry.unwrap();
        let kind = entry.header().entry_type();
        if kind == tar::EntryType::XGlobalHeader {
            assert_eq!(i, 0, "the global header comes first");
            let mut data = String::new();
            entry.read_to_string(&mut data).unwrap();
            comment = data
                .lines()
                .find_map(|l| l.split_once(" comment=").map(|(_, v)| v.to_owned()));
            continue;
        }
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let (top, rest) = path.split_once('/').unwrap_or((path.as_str(), ""));
        if !tops.contains(&top.to_owned()) {
            tops.push(top.to_owned());
        }
        if kind == tar::EntryType::Regular {
            let mode = entry.header().mode().unwrap();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            files.insert(rest.to_owned(), (data, mode));
        }
    }
    Unpacked {
        comment,
        tops,
        files,
    }
}
