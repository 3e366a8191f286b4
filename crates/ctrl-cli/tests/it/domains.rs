//! `ctrl domains` on the real stack: a domain added through the CLI shows
//! the records to publish, is listed and checked by the worker against a
//! scriptable DNS server, becomes verified once its TXT record is
//! published, appears among a deploy's URLs, and is removed; bad input is
//! refused in one line naming the domain.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::support::{CNAME_DOMAIN, Stack, V1};

const HOST: &str = "shop.customer.test";

fn str_field<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// `ctrl -o json domains get HOST` until `done` holds for it.
async fn wait_for(stack: &Stack, what: &str, done: impl Fn(&Value) -> bool) -> Result<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let d = stack.json(&["domains", "get", HOST]).await?;
        if done(&d) {
            return Ok(d);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{HOST}: {what} did not happen within 60 s: {d}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The line of `text` that mentions `needle`.
fn line_with<'a>(text: &'a str, needle: &str) -> Result<&'a str> {
    text.lines()
        .find(|l| l.contains(needle))
        .with_context(|| format!("no line with {needle:?} in:\n{text}"))
}

/// The words of the record row of type `kind` in `ctrl domains get`'s
/// output: mark (✓, ✗ or …), type, name, value.
fn record_row(text: &str, kind: &str) -> Result<Vec<String>> {
    text.lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .find(|words| words.len() == 4 && words[1] == kind)
        .with_context(|| format!("no {kind} record in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_domain_is_added_checked_verified_served_and_removed() -> Result<()> {
    let stack = Stack::start().await?;
    stack.ok(&["workspaces", "create", "acme"]).await?;
    stack.ok(&["projects", "create", "shop"]).await?;
    stack
        .ok(&["apps", "create", "web", "--project", "shop"])
        .await?;

    // Add: the id, the records to publish, what happens next.
    let added = stack
        .ok(&["domains", "add", "--app", "web", "Shop.Customer.TEST"])
        .await?;
    let first = added.stdout.lines().next().unwrap_or_default();
    assert!(
        first.starts_with(&format!("added {HOST} (dom_")) && first.ends_with("to web (production)"),
        "{added}"
    );
    let id = first
        .split_whitespace()
        .find_map(|w| w.strip_prefix("(dom_"))
        .map(|rest| format!("dom_{}", rest.trim_end_matches(')')))
        .with_context(|| format!("no id in:\n{added}"))?;
    let txt = line_with(&added.stdout, "TXT")?;
    assert!(
        txt.contains(&format!("_ctrl.{HOST}")) && txt.contains("ctrl-domain-verify="),
        "{added}"
    );
    let cname = line_with(&added.stdout, "CNAME")?;
    assert!(cname.contains(HOST), "{added}");
    assert!(
        cname.trim_end().ends_with(&format!(".{CNAME_DOMAIN}")),
        "{added}"
    );
    assert!(
        added
            .stdout
            .contains(&format!("ctrl checks about once a minute for up to 24 h; `ctrl domains get {HOST}` shows progress")),
        "{added}"
    );

    // Listed and shown: not verified yet, the records to publish.
    let listed = stack.ok(&["domains", "list", "--app", "shop/web"]).await?;
    assert!(listed.stdout.starts_with("DOMAIN "), "{listed}");
    let row = line_with(&listed.stdout, HOST)?;
    assert!(
        row.contains(" pending ") || row.contains(" verifying "),
        "{listed}"
    );
    let shown = stack
        .ok(&[
            "domains",
            "get",
            "--app",
            "web",
            "--env",
            "production",
            HOST,
        ])
        .await?;
    let status = line_with(&shown.stdout, "status")?;
    assert!(
        status.ends_with("pending") || status.ends_with("verifying"),
        "{shown}"
    );
    let txt = record_row(&shown.stdout, "TXT")?;
    assert_eq!(txt[2], format!("_ctrl.{HOST}"), "{shown}");
    assert!(txt[3].starts_with("ctrl-domain-verify="), "{shown}");
    let cname = record_row(&shown.stdout, "CNAME")?;
    assert_eq!(cname[2], HOST, "{shown}");
    assert!(cname[3].ends_with(&format!(".{CNAME_DOMAIN}")), "{shown}");
    // By id, and as JSON without --app (looked up in the workspace).
    let by_id = stack.json(&["domains", "get", &id]).await?;
    assert_eq!(str_field(&by_id, "domain"), HOST);
    let records = by_id["records"].as_array().context("records")?;
    assert_eq!(records.len(), 2, "{by_id}");

    // The worker checks the records: `get` says what it found vs expected.
    let checked = wait_for(&stack, "a check", |d| {
        d["checkAttempts"].as_i64().unwrap_or(0) >= 1
    })
    .await?;
    assert_eq!(str_field(&checked, "id"), id);
    let shown = stack.ok(&["domains", "get", HOST]).await?;
    let found = line_with(&shown.stdout, "found")?;
    assert!(found.contains("expected"), "{shown}");
    assert_eq!(record_row(&shown.stdout, "TXT")?[0], "✗", "{shown}");
    assert_eq!(record_row(&shown.stdout, "CNAME")?[0], "✗", "{shown}");

    // Bad input: one line naming the domain and what is wrong.
    let invalid = stack
        .ctrl(&["domains", "add", "--app", "web", "not_a host.example.com"])
        .await?;
    assert_eq!(invalid.code, Some(1), "{invalid}");
    assert_eq!(invalid.stderr.lines().count(), 1, "{invalid}");
    assert!(
        invalid
            .stderr
            .starts_with("error: adding not_a host.example.com: invalid request: domain:"),
        "{invalid}"
    );
    assert!(
        invalid
            .stderr
            .contains("\"not_a host.example.com\" is not a valid hostname"),
        "{invalid}"
    );
    let duplicate = stack
        .ctrl(&["domains", "add", "--app", "web", HOST])
        .await?;
    assert_eq!(duplicate.code, Some(1), "{duplicate}");
    assert!(
        duplicate
            .stderr
            .starts_with(&format!("error: adding {HOST}: already exists:")),
        "{duplicate}"
    );
    let unknown = stack
        .ctrl(&["domains", "get", "--app", "web", "nope.customer.test"])
        .await?;
    assert_eq!(unknown.code, Some(1), "{unknown}");
    assert!(
        unknown
            .stderr
            .contains("no custom domain \"nope.customer.test\" in app web (`ctrl domains list --app web [--env <env>]` shows them)"),
        "{unknown}"
    );

    // Publishing the TXT record verifies it (`verify` checks again now).
    let txt = records
        .iter()
        .find(|r| str_field(r, "type") == "TXT")
        .context("a TXT record")?;
    stack
        .dns
        .set_txt(str_field(txt, "name"), str_field(txt, "value"))
        .await?;
    let verify = stack
        .ok(&["domains", "verify", "--app", "web", HOST])
        .await?;
    assert!(
        verify.stdout.starts_with(&format!("{HOST} is pending"))
            || verify.stdout.starts_with(&format!("{HOST} is verifying"))
            || verify.stdout.starts_with(&format!("{HOST} is verified")),
        "{verify}"
    );
    wait_for(&stack, "verification", |d| {
        str_field(d, "status") == "CUSTOM_DOMAIN_STATUS_VERIFIED"
    })
    .await?;
    let listed = stack.ok(&["domains", "list", "--app", "web"]).await?;
    assert!(
        line_with(&listed.stdout, HOST)?.contains(" verified "),
        "{listed}"
    );
    // This stack's worker issues no certificates, and says so.
    wait_for(&stack, "the certificate state", |d| {
        d["certificate"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("not issued by this installation"))
    })
    .await?;
    let shown = stack.ok(&["domains", "get", HOST]).await?;
    assert_eq!(record_row(&shown.stdout, "TXT")?[0], "✓", "{shown}");
    let certificate = line_with(&shown.stdout, "certificate error")?;
    assert!(certificate.contains("[acme] enabled = false"), "{shown}");

    // A deploy ends with the environment's verified custom domains.
    let deployed = stack.ok(&["deploy", "--app", "web", "--image", V1]).await?;
    let url = line_with(&deployed.stdout, &format!("https://{HOST}"))?;
    assert!(url.trim_end().ends_with("(custom domain)"), "{deployed}");

    // Removal asks first: refused without a terminal unless --yes.
    let refused = stack.ctrl(&["domains", "rm", "--app", "web", HOST]).await?;
    assert_eq!(refused.code, Some(1), "{refused}");
    assert!(refused.stderr.contains("pass --yes"), "{refused}");
    stack.ok(&["domains", "get", &id]).await?;
    let removed = stack.ok(&["domains", "rm", "--yes", HOST]).await?;
    assert_eq!(
        removed.stdout.trim(),
        format!("removed custom domain {HOST}"),
        "{removed}"
    );
    let listed = stack.ok(&["domains", "list", "--app", "web"]).await?;
    assert!(
        listed
            .stdout
            .starts_with("no custom domains in web (production)"),
        "{listed}"
    );
    let gone = stack.ctrl(&["domains", "get", &id]).await?;
    assert_eq!(gone.code, Some(1), "{gone}");
    assert!(gone.stderr.contains("not found"), "{gone}");
    Ok(())
}
