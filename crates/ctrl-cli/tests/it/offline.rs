//! What `ctrl` says before (or instead of) reaching ctrl-api: one line
//! naming the problem, never a secret, and the exit code scripts expect.

use anyhow::Result;

use crate::support::run_ctrl;

fn closed_port_url() -> Result<String> {
    Ok(format!("http://127.0.0.1:{}", ctrl_testkit::free_port()?))
}

#[tokio::test]
async fn an_unreachable_api_is_one_line_that_says_what_to_do() -> Result<()> {
    let cwd = tempfile::tempdir()?;
    let url = closed_port_url()?;
    let run = run_ctrl(
        &["projects", "list"],
        &[
            ("CTRL_API_URL", &url),
            ("CTRL_TOKEN", "some-token-1234567890"),
        ],
        cwd.path(),
    )
    .await?;
    assert_eq!(run.code, Some(1), "{run}");
    assert_eq!(run.stderr.lines().count(), 1, "{run}");
    assert!(
        run.stderr
            .starts_with(&format!("error: cannot reach ctrl-api at {url}")),
        "{run}"
    );
    assert!(run.stderr.contains("cargo xtask dev"), "{run}");
    assert!(!run.stderr.contains("some-token"), "{run}");
    Ok(())
}

#[tokio::test]
async fn a_missing_token_is_named_with_where_to_find_it() -> Result<()> {
    let cwd = tempfile::tempdir()?;
    let run = run_ctrl(&["apps", "list"], &[], cwd.path()).await?;
    assert_eq!(run.code, Some(1), "{run}");
    assert!(run.stderr.contains("no API token"), "{run}");
    assert!(run.stderr.contains(".dev/stack.env"), "{run}");
    Ok(())
}

#[tokio::test]
async fn bad_arguments_are_refused_before_any_call_without_echoing_values() -> Result<()> {
    let cwd = tempfile::tempdir()?;
    // Nothing listens there: these must fail before calling the API.
    let url = closed_port_url()?;
    let env = [
        ("CTRL_API_URL", url.as_str()),
        ("CTRL_TOKEN", "some-token-1234567890"),
    ];

    let run = run_ctrl(
        &["env", "set", "--app", "web", "=very-secret-value"],
        &env,
        cwd.path(),
    )
    .await?;
    assert_eq!(run.code, Some(1), "{run}");
    assert!(run.stderr.contains("variable 1 has no key"), "{run}");
    assert!(!run.stderr.contains("very-secret-value"), "{run}");

    let run = run_ctrl(
        &["env", "set", "--app", "web", "OK=1", "very-secret-value"],
        &env,
        cwd.path(),
    )
    .await?;
    assert!(run.stderr.contains("variable 2 is not KEY=VALUE"), "{run}");
    assert!(!run.stderr.contains("very-secret-value"), "{run}");

    let run = run_ctrl(
        &["deployments", "list", "--app", "web", "--status", "bogus"],
        &env,
        cwd.path(),
    )
    .await?;
    assert_eq!(run.code, Some(1), "{run}");
    assert!(run.stderr.contains("unknown status \"bogus\""), "{run}");

    // Usage errors are clap's, with exit code 2.
    let run = run_ctrl(&["deploy", "--app", "web"], &env, cwd.path()).await?;
    assert_eq!(run.code, Some(2), "{run}");
    assert!(run.stderr.contains("--image"), "{run}");
    let run = run_ctrl(
        &["deploy", "--app", "web", "--image", "a", "--git", "o/r"],
        &env,
        cwd.path(),
    )
    .await?;
    assert_eq!(run.code, Some(2), "{run}");
    Ok(())
}
