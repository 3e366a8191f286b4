//! Certificates and custom domains end to end (see [`crate::cert_stack`]):
//! verification states, HTTP-01 through frontline, the DNS-01 wildcard,
//! renewal, crashes in the middle of an order, and bad input.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ctrl_core::domains::Sticky;
use ctrl_core::id::{IdKind, generate};
use ctrl_db::types::ChallengeStatus;
use ctrl_proto::ctrl::v1 as pb;

use crate::cert_stack::{APEX, CNAME_DOMAIN, Options, Stack, moto_txt_records};
use crate::harness::eventually;

/// A user's domain, from nothing in DNS to verified, routed, certified by
/// pebble through frontline's HTTP-01 path and served over TLS; the states
/// in between show what was found against what was expected.
#[tokio::test]
async fn a_custom_domain_is_verified_certified_and_served() -> Result<()> {
    let s = Stack::start(Options::default()).await?;
    let host = "shop.customer.test";
    let d = s.add(host).await?;
    assert_eq!(d.status, pb::CustomDomainStatus::Pending as i32);
    let cname = d
        .records
        .iter()
        .find(|r| r.r#type == "CNAME")
        .context("a CNAME record to create")?;
    assert_eq!(cname.name, host);
    assert!(
        cname.value.ends_with(&format!(".{CNAME_DOMAIN}")),
        "{cname:?}"
    );
    let txt = d
        .records
        .iter()
        .find(|r| r.r#type == "TXT")
        .context("TXT")?;
    assert_eq!(txt.name, format!("_ctrl.{host}"));
    assert!(txt.value.starts_with("ctrl-domain-verify="));

    // Nothing published yet: checked, not verified, and says what is missing.
    let d = s
        .wait_domain(&d.id, "a first check", Duration::from_secs(20), |d| {
            d.check_attempts >= 1
        })
        .await?;
    assert_eq!(d.status, pb::CustomDomainStatus::Verifying as i32);
    assert!(
        d.verification_error.contains("no CNAME"),
        "{}",
        d.verification_error
    );
    assert!(
        d.verification_error.contains("no TXT"),
        "{}",
        d.verification_error
    );

    // A CNAME to the wrong place is named as such.
    s.dns.set_cname(host, "somewhere-else.example.test").await?;
    s.wait_domain(
        &d.id,
        "the wrong CNAME reported",
        Duration::from_secs(20),
        |d| {
            d.verification_error
                .contains("points at somewhere-else.example.test")
        },
    )
    .await?;
    assert!(
        s.https_get(host).await.is_err(),
        "no certificate before verification"
    );

    // The right CNAME: verified, routed, certified, served.
    s.dns.clear_cname(host).await?;
    s.dns.set_cname(host, &cname.value).await?;
    let verified_at = Instant::now();
    let d = s
        .wait_domain(&d.id, "verified", Duration::from_secs(20), |d| {
            d.status == pb::CustomDomainStatus::Verified as i32
        })
        .await?;
    assert!(d.cname_verified);
    let route = ctrl_db::route::find_by_fqdn(&s.h.db.pool, host)
        .await?
        .context("a route for the domain")?;
    assert_eq!(route.deployment_id, s.live);
    assert_eq!(route.sticky, Sticky::Environment);

    let d = s
        .wait_domain(&d.id, "certificate issued", Duration::from_secs(60), |d| {
            d.certificate.as_ref().is_some_and(|c| {
                c.status != pb::CertificateStatus::Issuing as i32
                    && c.status != pb::CertificateStatus::None as i32
            })
        })
        .await?;
    let cert = d.certificate.context("certificate state")?;
    assert_eq!(
        cert.status,
        pb::CertificateStatus::Issued as i32,
        "certificate: {cert:?}"
    );
    assert!(cert.expires_at > 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    let (status, body) = loop {
        match s.https_get(host).await {
            Ok(answer) => break answer,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e),
        }
    };
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("hello from the live deployment"), "{body}");
    println!(
        "HTTP-01: CNAME published → verified → certificate served in {:?}",
        verified_at.elapsed()
    );

    // The private key is sealed, never stored in plaintext.
    let (key,): (Vec<u8>,) =
        sqlx::query_as("SELECT encrypted_private_key FROM certificates WHERE hostname = ?")
            .bind(host)
            .fetch_one(&s.h.db.pool)
            .await?;
    assert!(!String::from_utf8_lossy(&key).contains("PRIVATE KEY"));
    let challenge = ctrl_db::certificate::challenge(&s.h.db.pool, &d.id)
        .await?
        .context("challenge row")?;
    assert_eq!(challenge.status, ChallengeStatus::Verified);
    assert_eq!(challenge.expires_at, cert.expires_at);

    // Verifying again (the user's `ctrl domains verify`) re-routes nothing
    // new and orders nothing: the certificate is current.
    let before = ctrl_db::certificate::find(&s.h.db.pool, host)
        .await?
        .context("certificate")?;
    ctrl_api::services::custom_domain::retry_verification(
        &s.api,
        pb::RetryVerificationRequest {
            domain_id: d.id.clone(),
            actor: None,
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    s.wait_domain(&d.id, "verified again", Duration::from_secs(20), |d| {
        d.status == pb::CustomDomainStatus::Verified as i32
    })
    .await?;
    let pool = s.h.db.pool.clone();
    let id = d.id.clone();
    eventually(Duration::from_secs(20), || async {
        Ok(ctrl_db::certificate::challenge(&pool, &id)
            .await?
            .is_some_and(|c| c.status == ChallengeStatus::Verified))
    })
    .await?;
    let after = ctrl_db::certificate::find(&s.h.db.pool, host)
        .await?
        .context("certificate")?;
    assert_eq!(after, before, "no second certificate for a current one");

    // Deleting removes route, challenge, certificate and the domain.
    ctrl_api::services::custom_domain::delete_custom_domain(
        &s.api,
        pb::DeleteCustomDomainRequest {
            domain_id: d.id.clone(),
            actor: None,
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    assert!(
        ctrl_db::route::find_by_fqdn(&s.h.db.pool, host)
            .await?
            .is_none()
    );
    assert!(
        ctrl_db::certificate::find(&s.h.db.pool, host)
            .await?
            .is_none()
    );
    assert!(
        ctrl_db::certificate::challenge(&s.h.db.pool, &d.id)
            .await?
            .is_none()
    );
    assert!(
        ctrl_db::custom_domain::find(&s.h.db.pool, &d.id)
            .await?
            .is_none()
    );
    Ok(())
}

/// Bad input is refused by name, and nothing is written.
#[tokio::test]
async fn bad_domains_are_refused_by_name() -> Result<()> {
    let s = Stack::start(Options::default()).await?;
    for (bad, says) in [
        ("not a host", "not a valid hostname"),
        ("*.customer.test", "wildcard"),
        ("app.ctrl.test", "platform's own domain"),
        ("x.edge.ctrl-dns.test", "platform's own domain"),
    ] {
        let err = s.add(bad).await.expect_err(bad).to_string();
        assert!(err.contains(says) && err.contains("domain"), "{bad}: {err}");
    }
    s.add("twice.customer.test").await?;
    let err = s
        .add("Twice.Customer.Test.")
        .await
        .expect_err("duplicate")
        .to_string();
    assert!(err.contains("already added"), "{err}");
    let rows: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM custom_domains WHERE platform = FALSE")
            .fetch_one(&s.h.db.pool)
            .await?;
    assert_eq!(rows, 1, "only the one valid domain was stored");
    Ok(())
}

/// An apex cannot carry a CNAME: it verifies by its TXT record and its
/// addresses pointing at the edge; a TXT record alone verifies a subdomain
/// too.
#[tokio::test]
async fn apexes_and_txt_only_domains_verify_by_their_txt_record() -> Result<()> {
    let s = Stack::start(Options::default()).await?;
    let apex = s.add("customer-apex.test").await?;
    assert!(apex.apex);
    assert!(
        apex.records.iter().all(|r| r.r#type != "CNAME"),
        "{:?}",
        apex.records
    );
    // The apex points elsewhere: named, with the edge's address expected.
    s.dns
        .add_a(
            "customer-apex.test",
            &[std::net::Ipv4Addr::new(127, 0, 0, 9)],
        )
        .await?;
    let sub = s.add("txt-only.customer.test").await?;
    for d in [&apex, &sub] {
        let txt = d
            .records
            .iter()
            .find(|r| r.r#type == "TXT")
            .context("TXT")?;
        s.dns
            .set_txt(&txt.name, "ctrl-domain-verify=wrong-token")
            .await?;
    }
    let d = s
        .wait_domain(
            &apex.id,
            "the wrong token reported",
            Duration::from_secs(20),
            |d| d.verification_error.contains("wrong-token"),
        )
        .await?;
    assert!(!d.ownership_verified);
    for d in [&apex, &sub] {
        let txt = d
            .records
            .iter()
            .find(|r| r.r#type == "TXT")
            .context("TXT")?;
        s.dns.clear_txt(&txt.name).await?;
        s.dns.set_txt(&txt.name, &txt.value).await?;
    }
    let d = s
        .wait_domain(
            &apex.id,
            "the wrong address reported",
            Duration::from_secs(20),
            |d| d.ownership_verified,
        )
        .await?;
    assert_eq!(d.status, pb::CustomDomainStatus::Verifying as i32);
    assert!(
        d.verification_error
            .contains("resolves to 127.0.0.9, expected 127.0.0.1"),
        "{}",
        d.verification_error
    );
    // Back to challtestsrv's default answer: the edge's 127.0.0.1.
    s.dns.clear_a("customer-apex.test").await?;
    for d in [&apex, &sub] {
        let v = s
            .wait_domain(&d.id, "verified by TXT", Duration::from_secs(20), |d| {
                d.status == pb::CustomDomainStatus::Verified as i32
            })
            .await?;
        assert!(v.ownership_verified && !v.cname_verified, "{v:?}");
    }
    Ok(())
}

/// Another workspace verified the domain first (by CNAME); proving
/// ownership with the TXT record takes it over: the first claim fails with
/// the reason, the route moves to the new owner's environment.
#[tokio::test]
async fn a_contested_domain_goes_to_whoever_proves_ownership() -> Result<()> {
    let s = Stack::start(Options::default()).await?;
    let host = "contested.customer.test";
    let first = s.add(host).await?;
    let cname = first
        .records
        .iter()
        .find(|r| r.r#type == "CNAME")
        .context("CNAME")?;
    s.dns.set_cname(host, &cname.value).await?;
    s.wait_domain(
        &first.id,
        "first claim verified",
        Duration::from_secs(20),
        |d| d.status == pb::CustomDomainStatus::Verified as i32,
    )
    .await?;

    // A second workspace with its own app and environment claims it.
    let other = other_environment(&s).await?;
    let second = ctrl_api::services::custom_domain::add_custom_domain(
        &s.api,
        pb::AddCustomDomainRequest {
            environment_id: other.clone(),
            domain: host.into(),
            actor: None,
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?
    .custom_domain
    .context("domain")?;
    // Its CNAME is not published (the first owner's is): contested, so
    // only the TXT record could prove it.
    let pending = s
        .wait_domain(
            &second.id,
            "contested check",
            Duration::from_secs(20),
            |d| d.check_attempts >= 1,
        )
        .await?;
    assert!(
        pending
            .verification_error
            .contains("TXT record is required"),
        "{}",
        pending.verification_error
    );
    let txt = second
        .records
        .iter()
        .find(|r| r.r#type == "TXT")
        .context("TXT")?;
    s.dns.set_txt(&txt.name, &txt.value).await?;
    s.wait_domain(
        &second.id,
        "second claim verified",
        Duration::from_secs(20),
        |d| d.status == pb::CustomDomainStatus::Verified as i32,
    )
    .await?;
    let revoked = s.get(&first.id).await?;
    assert_eq!(revoked.status, pb::CustomDomainStatus::Failed as i32);
    assert!(
        revoked
            .verification_error
            .contains("claimed by another workspace")
    );
    let route = ctrl_db::route::find_by_fqdn(&s.h.db.pool, host)
        .await?
        .context("route")?;
    assert_eq!(route.environment_id, other);
    Ok(())
}

/// A second workspace, project, app and production environment.
async fn other_environment(s: &Stack) -> Result<String> {
    let p = &s.h.db.pool;
    let (ws, proj, app, env) = (
        generate(IdKind::Workspace, &mut rand::rng()),
        generate(IdKind::Project, &mut rand::rng()),
        generate(IdKind::App, &mut rand::rng()),
        generate(IdKind::Environment, &mut rand::rng()),
    );
    ctrl_db::tenancy::insert_workspace(p, &ws, "Other", "other", 1).await?;
    ctrl_db::tenancy::insert_project(p, &proj, &ws, "Site", "site", 1).await?;
    ctrl_db::tenancy::insert_app(
        p,
        &ctrl_db::tenancy::NewApp {
            id: &app,
            workspace_id: &ws,
            project_id: &proj,
            name: "Site",
            slug: "site",
            default_branch: "main",
        },
        1,
    )
    .await?;
    ctrl_db::tenancy::insert_environment(
        p,
        &ctrl_db::tenancy::NewEnvironment {
            id: &env,
            workspace_id: &ws,
            project_id: &proj,
            app_id: &app,
            slug: "production",
            kind: ctrl_db::types::EnvironmentKind::Production,
            description: "",
        },
        1,
    )
    .await?;
    Ok(env)
}

/// At start the worker ensures the platform wildcard through DNS-01 on
/// "Route53" (moto, mirrored into the DNS pebble asks): the wildcard is
/// issued, served for the generated hostnames, and no TXT record is left.
#[tokio::test]
async fn the_platform_wildcard_is_bootstrapped_through_dns_01() -> Result<()> {
    let started = Instant::now();
    let s = Stack::start(Options {
        route53: true,
        ..Options::default()
    })
    .await?;
    let wildcard = format!("*.{APEX}");
    eventually(Duration::from_secs(60), || async {
        Ok(ctrl_db::certificate::find(&s.h.db.pool, &wildcard)
            .await?
            .is_some())
    })
    .await
    .with_context(|| format!("wildcard not issued; worker log:\n{}", s.h.worker_log(60)))?;
    let host = format!("web.{APEX}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let (status, body) = loop {
        match s.https_get(&host).await {
            Ok(answer) => break answer,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e),
        }
    };
    assert_eq!(status, 200, "{body}");
    println!(
        "DNS-01: worker start → wildcard served in {:?} (stack start included)",
        started.elapsed()
    );
    let moto = s.moto.as_ref().context("moto")?;
    eventually(Duration::from_secs(10), || async {
        Ok(moto_txt_records(&moto.endpoint_url()).await?.is_empty())
    })
    .await
    .context("TXT records left in Route53")?;
    // The Route53 secret never reaches the worker's log.
    assert!(!s.h.worker_log(10_000).contains("s3cr3t-route53-key"));
    Ok(())
}

/// Short-lived certificates are renewed by the durable job (same id, new
/// expiry) and the edge serves the new one without a restart; each run of
/// the job calls the monitoring heartbeat (seed 001's
/// `heartbeat.cert_renewal_url`).
#[tokio::test]
async fn certificates_are_renewed_and_served_without_a_restart() -> Result<()> {
    let beats = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let heartbeat_url = format!("http://{}/beat/s3cr3t-checkly", listener.local_addr()?);
    let counter = beats.clone();
    let monitor = tokio::spawn(async move {
        let app = axum::Router::new().route(
            "/beat/s3cr3t-checkly",
            axum::routing::get(move || {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async { "ok" }
            }),
        );
        let _ = axum::serve(ctrl_runtime::net::nodelay(listener), app).await;
    });
    let s = Stack::start(Options {
        validity: Some(Duration::from_secs(120)),
        acme: "renew_before_days = 1\nrenewal_interval_seconds = 2",
        heartbeat_url: Some(heartbeat_url),
        ..Options::default()
    })
    .await?;
    let host = "renew.customer.test";
    add_with_cname(&s, host).await?;
    eventually(Duration::from_secs(60), || async {
        Ok(ctrl_db::certificate::find(&s.h.db.pool, host)
            .await?
            .is_some())
    })
    .await?;
    let first = ctrl_db::certificate::find(&s.h.db.pool, host)
        .await?
        .context("certificate")?;
    let mut served = Vec::new();
    eventually(Duration::from_secs(10), || async {
        Ok(s.served_serial(host).await.is_ok())
    })
    .await?;
    served.push(s.served_serial(host).await?);
    eventually(Duration::from_secs(60), || async {
        let now = ctrl_db::certificate::find(&s.h.db.pool, host).await?;
        Ok(now.is_some_and(|c| c.not_after > first.not_after))
    })
    .await
    .with_context(|| format!("not renewed; worker log:\n{}", s.h.worker_log(60)))?;
    let renewed = ctrl_db::certificate::find(&s.h.db.pool, host)
        .await?
        .context("certificate")?;
    assert_eq!(renewed.id, first.id, "a renewal keeps the certificate's id");
    eventually(Duration::from_secs(10), || async {
        Ok(s.served_serial(host).await? != served[0])
    })
    .await
    .context("the edge still serves the old certificate")?;
    let runs = beats.load(std::sync::atomic::Ordering::SeqCst);
    assert!(runs >= 2, "the heartbeat was called {runs} times");
    assert!(
        !s.h.worker_log(10_000).contains("s3cr3t-checkly"),
        "the heartbeat URL is a credential: never logged"
    );
    monitor.abort();
    Ok(())
}

/// Names of the journaled entries of `service/key`'s invocations.
async fn journal(s: &Stack, service: &str, key: &str) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for inv in s
        .h
        .query(&format!(
            "SELECT id FROM sys_invocation WHERE target_service_name = '{service}' AND target_service_key = '{key}'"
        ))
        .await?
    {
        let id = inv["id"].as_str().unwrap_or_default().to_owned();
        for e in s
            .h
            .query(&format!("SELECT name FROM sys_journal WHERE id = '{id}'"))
            .await?
        {
            if let Some(n) = e["name"].as_str() {
                names.push(n.to_owned());
            }
        }
    }
    Ok(names)
}

/// Adds `host` to production and publishes its CNAME.
async fn add_with_cname(s: &Stack, host: &str) -> Result<pb::CustomDomain> {
    let d = s.add(host).await?;
    let cname = d
        .records
        .iter()
        .find(|r| r.r#type == "CNAME")
        .context("CNAME")?;
    s.dns.set_cname(host, &cname.value).await?;
    Ok(d)
}

/// Waits until `Certificate/{key}` has journaled the step named `step`.
async fn wait_for_step(s: &Stack, key: &str, step: &str) -> Result<()> {
    eventually(Duration::from_secs(30), || async {
        Ok(journal(s, "Certificate", key)
            .await?
            .iter()
            .any(|n| n == step))
    })
    .await
}

/// How many certificates pebble issued.
fn issued_by_pebble(s: &Stack) -> Result<usize> {
    let log = std::fs::read_to_string(s.pebble.log_path())?;
    Ok(log.matches("Issued certificate serial").count())
}

/// After a crash: the certificate is stored once, issued once, and served.
async fn assert_issued_once(s: &Stack, host: &str) -> Result<()> {
    eventually(Duration::from_secs(60), || async {
        Ok(ctrl_db::certificate::find(&s.h.db.pool, host)
            .await?
            .is_some())
    })
    .await
    .with_context(|| format!("no certificate; worker log:\n{}", s.h.worker_log(60)))?;
    // Let a (wrong) second order show if there were one.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(ctrl_db::certificate::count(&s.h.db.pool, host).await?, 1);
    assert_eq!(
        issued_by_pebble(s)?,
        1,
        "pebble issued more than one certificate"
    );
    let tls_host = host.replace("*.", "web.");
    eventually(Duration::from_secs(10), || async {
        Ok(s.https_get(&tls_host)
            .await
            .is_ok_and(|(status, _)| status == 200))
    })
    .await
    .context("the certificate is not served")?;
    Ok(())
}

/// SIGKILL after the order is created (held in the step presenting the
/// challenge by a lock on its row): the restarted worker resumes the same
/// journaled order.
#[tokio::test]
async fn a_worker_killed_after_the_order_is_created_resumes_it() -> Result<()> {
    let mut s = Stack::start(Options::default()).await?;
    let host = "crash-order.customer.test";
    let d = add_with_cname(&s, host).await?;
    // Claimed (pending): lock the row before the order's challenge is written.
    let pool = s.h.db.pool.clone();
    eventually(Duration::from_secs(20), || async {
        Ok(ctrl_db::certificate::challenge(&pool, &d.id)
            .await?
            .is_some_and(|c| c.status == ChallengeStatus::Pending))
    })
    .await?;
    let mut lock = pool.begin().await?;
    sqlx::query("SELECT status FROM acme_challenges WHERE domain_id = ? FOR UPDATE")
        .bind(&d.id)
        .fetch_one(&mut *lock)
        .await?;
    eventually(Duration::from_secs(20), || async {
        Ok(journal(&s, "Certificate", host)
            .await?
            .iter()
            .any(|n| n == "create order"))
    })
    .await
    .context("no order created")?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.h.crash_worker().await?;
    lock.rollback().await?;
    assert_issued_once(&s, host).await
}

/// SIGKILL while the CA validates the presented challenge.
#[tokio::test]
async fn a_worker_killed_after_the_challenge_is_presented_resumes_it() -> Result<()> {
    let mut s = Stack::start(Options::default()).await?;
    let host = "crash-present.customer.test";
    add_with_cname(&s, host).await?;
    wait_for_step(&s, host, "present challenges")
        .await
        .context("no challenge presented")?;
    s.h.crash_worker().await?;
    assert_issued_once(&s, host).await
}

/// SIGKILL after the order is finalized (held before storing by a lock on
/// the certificate's hostname): the chain is journaled, stored once.
#[tokio::test]
async fn a_worker_killed_after_finalize_stores_the_certificate_once() -> Result<()> {
    let mut s = Stack::start(Options::default()).await?;
    let host = "crash-finalize.customer.test";
    let pool = s.h.db.pool.clone();
    // A gap lock on the (absent) hostname blocks the insert of the store step.
    let mut lock = pool.begin().await?;
    sqlx::query("SELECT id FROM certificates WHERE hostname = ? FOR UPDATE")
        .bind(host)
        .fetch_optional(&mut *lock)
        .await?;
    add_with_cname(&s, host).await?;
    wait_for_step(&s, host, "finalize order")
        .await
        .context("the order was not finalized")?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(issued_by_pebble(&s)?, 1, "finalized before the crash");
    s.h.crash_worker().await?;
    lock.rollback().await?;
    assert_issued_once(&s, host).await
}

/// SIGKILL with the DNS-01 TXT record published: resumed, issued once, and
/// the record is removed.
#[tokio::test]
async fn a_worker_killed_during_dns_01_leaves_no_txt_record() -> Result<()> {
    let mut s = Stack::start(Options {
        route53: true,
        ..Options::default()
    })
    .await?;
    let wildcard = format!("*.{APEX}");
    wait_for_step(&s, &wildcard, "present challenges")
        .await
        .context("no TXT record presented")?;
    s.h.crash_worker().await?;
    assert_issued_once(&s, &wildcard).await?;
    let moto = s.moto.as_ref().context("moto")?;
    eventually(Duration::from_secs(10), || async {
        Ok(moto_txt_records(&moto.endpoint_url()).await?.is_empty())
    })
    .await
    .context("TXT records left in Route53")?;
    Ok(())
}

/// An unreachable CA: the API shows the order retrying and why, then failed
/// naming the directory; the domain itself stays verified and routed.
#[tokio::test]
async fn an_unreachable_ca_is_reported_then_fails_the_order() -> Result<()> {
    let closed = ctrl_testkit::free_port()?;
    let directory = format!("https://127.0.0.1:{closed}/dir");
    let s = Stack::start(Options {
        directory: Some(directory.clone()),
        acme: "step_attempts = 3",
        ..Options::default()
    })
    .await?;
    let host = "no-ca.customer.test";
    let d = add_with_cname(&s, host).await?;
    let retrying = s
        .wait_domain(&d.id, "the retry shown", Duration::from_secs(30), |d| {
            d.certificate.as_ref().is_some_and(|c| {
                c.status == pb::CertificateStatus::Issuing as i32 && c.error.contains("retrying")
            })
        })
        .await?;
    let error = &retrying.certificate.context("certificate")?.error;
    assert!(error.contains(&format!("127.0.0.1:{closed}")), "{error}");
    let failed = s
        .wait_domain(&d.id, "the order failed", Duration::from_secs(60), |d| {
            d.certificate
                .as_ref()
                .is_some_and(|c| c.status == pb::CertificateStatus::Failed as i32)
        })
        .await?;
    assert!(
        failed
            .certificate
            .context("certificate")?
            .error
            .contains(&format!("127.0.0.1:{closed}"))
    );
    assert_eq!(failed.status, pb::CustomDomainStatus::Verified as i32);
    assert!(
        ctrl_db::certificate::find(&s.h.db.pool, host)
            .await?
            .is_none()
    );
    Ok(())
}

/// The CA refuses (its validation cannot reach the edge): the order fails
/// with the CA's own words, nothing is stored, and the user can see why.
#[tokio::test]
async fn a_ca_refusal_fails_the_order_with_the_cas_reason() -> Result<()> {
    let s = Stack::start(Options::default()).await?;
    let host = "refused.customer.test";
    let d = s.add(host).await?;
    let cname = d
        .records
        .iter()
        .find(|r| r.r#type == "CNAME")
        .context("CNAME")?;
    // pebble resolves the name (through its CNAME) to an address nothing
    // listens on.
    let nowhere = [std::net::Ipv4Addr::new(127, 0, 0, 2)];
    s.dns.add_a(host, &nowhere).await?;
    s.dns.add_a(&cname.value, &nowhere).await?;
    s.dns.set_cname(host, &cname.value).await?;
    let failed = s
        .wait_domain(&d.id, "the order failed", Duration::from_secs(60), |d| {
            d.certificate
                .as_ref()
                .is_some_and(|c| c.status == pb::CertificateStatus::Failed as i32)
        })
        .await?;
    let error = failed.certificate.context("certificate")?.error;
    println!("CA refusal shown as: {error}");
    assert!(
        error.contains("127.0.0.2") || error.contains("connection"),
        "{error}"
    );
    assert!(
        ctrl_db::certificate::find(&s.h.db.pool, host)
            .await?
            .is_none()
    );
    Ok(())
}

/// Route53 refuses (no such hosted zone): the wildcard's order fails with
/// AWS's code and message, never the credentials.
#[tokio::test]
async fn a_route53_error_fails_the_wildcard_with_awss_reason() -> Result<()> {
    let s = Stack::start(Options {
        route53: true,
        hosted_zone_id: Some("ZNOSUCHZONE"),
        ..Options::default()
    })
    .await?;
    let wildcard = format!("*.{APEX}");
    let pool = s.h.db.pool.clone();
    let domain_id: String =
        sqlx::query_scalar("SELECT id FROM custom_domains WHERE domain = ? AND platform = TRUE")
            .bind(&wildcard)
            .fetch_one(&pool)
            .await?;
    eventually(Duration::from_secs(60), || async {
        Ok(ctrl_db::certificate::challenge(&pool, &domain_id)
            .await?
            .is_some_and(|c| c.status == ChallengeStatus::Failed))
    })
    .await
    .with_context(|| format!("not failed; worker log:\n{}", s.h.worker_log(40)))?;
    let c = ctrl_db::certificate::challenge(&pool, &domain_id)
        .await?
        .context("challenge")?;
    let error = c.last_error.unwrap_or_default();
    assert!(
        error.contains("Route53") && error.contains("ZNOSUCHZONE"),
        "{error}"
    );
    assert!(!error.contains("s3cr3t"), "{error}");
    assert!(!s.h.worker_log(10_000).contains("s3cr3t-route53-key"));
    Ok(())
}

/// A domain verified before its environment has any deployment routes
/// nowhere yet, then follows each new deployment of that (preview)
/// environment.
#[tokio::test]
async fn a_domain_follows_its_environments_new_deployments() -> Result<()> {
    let s = Stack::start(Options::default()).await?;
    let host = "preview.customer.test";
    let d = s.add_in(&s.h.preview, host).await?;
    let cname = d
        .records
        .iter()
        .find(|r| r.r#type == "CNAME")
        .context("CNAME")?;
    s.dns.set_cname(host, &cname.value).await?;
    s.wait_domain(&d.id, "verified", Duration::from_secs(20), |d| {
        d.status == pb::CustomDomainStatus::Verified as i32
    })
    .await?;
    let route = ctrl_db::route::find_by_fqdn(&s.h.db.pool, host)
        .await?
        .context("route")?;
    assert_eq!(route.deployment_id, "", "nothing to route to yet");
    for _ in 0..2 {
        let id =
            s.h.pending_deployment(&s.h.preview, Some("feature"))
                .await?;
        s.h.deploy_to_ready(&id).await?;
        let route = ctrl_db::route::find_by_fqdn(&s.h.db.pool, host)
            .await?
            .context("route")?;
        assert_eq!(
            route.deployment_id, id,
            "the domain follows the newest deployment"
        );
    }
    Ok(())
}

/// A verified domain is checked again: a CNAME removed later shows on the
/// domain while it keeps routing; put back, the note goes away.
#[tokio::test]
async fn a_record_removed_after_verification_shows_on_the_domain() -> Result<()> {
    let s = Stack::start(Options::default()).await?;
    let host = "drift.customer.test";
    let d = s.add(host).await?;
    let cname = d
        .records
        .iter()
        .find(|r| r.r#type == "CNAME")
        .context("CNAME")?;
    s.dns.set_cname(host, &cname.value).await?;
    s.wait_domain(&d.id, "verified", Duration::from_secs(20), |d| {
        d.status == pb::CustomDomainStatus::Verified as i32
    })
    .await?;
    s.dns.clear_cname(host).await?;
    let drifted = s
        .wait_domain(
            &d.id,
            "the removed CNAME shown",
            Duration::from_secs(20),
            |d| d.verification_error.contains("re-check: no CNAME"),
        )
        .await?;
    assert_eq!(drifted.status, pb::CustomDomainStatus::Verified as i32);
    assert!(!drifted.cname_verified);
    assert!(
        ctrl_db::route::find_by_fqdn(&s.h.db.pool, host)
            .await?
            .is_some()
    );
    s.dns.set_cname(host, &cname.value).await?;
    s.wait_domain(&d.id, "the note gone", Duration::from_secs(20), |d| {
        d.verification_error.is_empty() && d.cname_verified
    })
    .await?;
    Ok(())
}
