//! Certificate issuance and custom-domain verification times, on the real
//! stack of the certificate tests (worker process, restate-server, MariaDB,
//! ctrl-api, frontline, pebble, challtestsrv, moto).
//!
//! `cargo bench -p ctrl-worker --bench certificates [-- ROUNDS]`
//!
//! - HTTP-01: `Certificate/{host}/Obtain` (forced) → the new certificate is
//!   what frontline presents for the host. pebble validates through
//!   frontline's real listener (`PEBBLE_VA_NOSLEEP`: no artificial delay).
//! - DNS-01: the same for the platform wildcard, through Route53 (moto) and
//!   the bridge into the DNS pebble asks.
//! - Verification: the CNAME is published → the domain is verified, with
//!   the check interval printed next to it (the expected latency is about
//!   half an interval plus one check).
//!
//! Figures are printed, never asserted: these machines are shared.

#[path = "../tests/it/harness.rs"]
#[allow(dead_code)]
mod harness;

#[path = "../tests/it/cert_stack.rs"]
#[allow(dead_code)]
mod cert_stack;

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use cert_stack::{APEX, Options, Stack};
use ctrl_proto::ctrl::v1 as pb;

/// The check interval of the stack's `[custom_domains]`.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5);
    let s = Stack::start(Options {
        route53: true,
        ..Options::default()
    })
    .await?;

    // Verification latency, and a verified domain for HTTP-01.
    let mut verify = Vec::new();
    let mut hosts = Vec::new();
    for n in 0..rounds {
        let host = format!("bench-{n}.customer.test");
        let d = s.add(&host).await?;
        s.wait_domain(&d.id, "first check", Duration::from_secs(30), |d| {
            d.check_attempts >= 1
        })
        .await?;
        let cname = d
            .records
            .iter()
            .find(|r| r.r#type == "CNAME")
            .context("CNAME")?;
        let t0 = Instant::now();
        s.dns.set_cname(&host, &cname.value).await?;
        s.wait_domain(&d.id, "verified", Duration::from_secs(30), |d| {
            d.status == pb::CustomDomainStatus::Verified as i32
        })
        .await?;
        verify.push(t0.elapsed());
        served(&s, &host, None).await?;
        hosts.push((host, d.id));
    }

    let mut http01 = Vec::new();
    for (host, id) in &hosts {
        let before = s.served_serial(host).await?;
        let t0 = Instant::now();
        obtain(&s, host, id).await?;
        served(&s, host, Some(&before)).await?;
        http01.push(t0.elapsed());
    }

    let wildcard = format!("*.{APEX}");
    let web = format!("web.{APEX}");
    served(&s, &web, None).await?;
    let wildcard_id: String =
        sqlx::query_scalar("SELECT id FROM custom_domains WHERE domain = ? AND platform = TRUE")
            .bind(&wildcard)
            .fetch_one(&s.h.db.pool)
            .await?;
    let mut dns01 = Vec::new();
    for _ in 0..rounds {
        let before = s.served_serial(&web).await?;
        let t0 = Instant::now();
        obtain(&s, &wildcard, &wildcard_id).await?;
        served(&s, &web, Some(&before)).await?;
        dns01.push(t0.elapsed());
    }

    println!("certificates: {rounds} rounds each (pebble with PEBBLE_VA_NOSLEEP, loopback)");
    report("HTTP-01 order → served by frontline", &mut http01);
    report(
        "DNS-01 (Route53 on moto) order → wildcard served",
        &mut dns01,
    );
    report(
        &format!("CNAME published → domain verified (check interval {CHECK_INTERVAL:?})"),
        &mut verify,
    );
    Ok(())
}

/// Forces a new order for `host` and waits for its outcome.
async fn obtain(s: &Stack, host: &str, domain_id: &str) -> Result<()> {
    let (status, body) =
        s.h.call(
            &format!("Certificate/{host}/Obtain"),
            serde_json::json!({ "domain_id": domain_id, "force": true }),
        )
        .await?;
    if status != 200 || body["status"] != "issued" {
        bail!("Obtain {host}: {status} {body}");
    }
    Ok(())
}

/// Waits until frontline presents a certificate for `host` (a different one
/// than `before`, if given).
async fn served(s: &Stack, host: &str, before: Option<&[u8]>) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(serial) = s.served_serial(host).await
            && before.is_none_or(|b| b != serial.as_slice())
            && s.https_get(host)
                .await
                .is_ok_and(|(status, _)| status == 200)
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{host}: no new certificate served within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn report(what: &str, samples: &mut [Duration]) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p50 = samples[samples.len() / 2];
    println!(
        "  {what}: p50 {:.0} ms, min {:.0} ms, max {:.0} ms",
        ms(p50),
        ms(samples[0]),
        ms(samples[samples.len() - 1])
    );
}
