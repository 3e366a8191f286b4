//! `ctrl domains add|list|get|verify|rm`: users' own hostnames for an
//! environment. `add` prints the DNS records to publish; ctrl then checks
//! them until they are right (about once a minute, for up to 24 hours),
//! routes the domain to the environment's live deployment and orders its
//! certificate. `get` shows where that stands.

use anyhow::{Result, anyhow};
use ctrl_proto::ctrl::v1 as pb;

use super::Ctx;
use crate::args::{DomainArg, DomainsCommand, EnvTarget};
use crate::output::{self, Table, ago_at, clip, date, enum_name, now_ms, until_at};
use crate::resolve;

/// What happens after `add` (the worker's defaults).
const NEXT: &str = "ctrl checks about once a minute for up to 24 h";

/// Longest certificate error shown in a list (`get` shows all of it).
const LIST_ERROR_CHARS: usize = 60;

/// `ctrl domains …`
pub(super) async fn run(ctx: &Ctx, cmd: DomainsCommand) -> Result<()> {
    match cmd {
        DomainsCommand::Add { target, domain } => add(ctx, &target, &domain).await,
        DomainsCommand::List { target } => list(ctx, &target).await,
        DomainsCommand::Get(arg) => {
            let d = find(ctx, &arg).await?;
            if ctx.json() {
                return output::json(&d);
            }
            print_lines(&detail_lines(&d, now_ms()));
            Ok(())
        }
        DomainsCommand::Verify(arg) => {
            let d = find(ctx, &arg).await?;
            let api = &ctx.api;
            let req = api.request(pb::RetryVerificationRequest {
                domain_id: d.id.clone(),
                actor: Some(ctx.actor()),
            });
            let after = api
                .call(
                    &format!("verifying {}", d.domain),
                    api.custom_domains().retry_verification(req),
                )
                .await?
                .status;
            ctx.done(&format!(
                "{} is {}; `ctrl domains get {}` shows what the checks find",
                d.domain,
                status(after),
                d.domain
            ))
        }
        DomainsCommand::Rm { domain, confirm } => {
            let d = find(ctx, &domain).await?;
            output::confirm(
                confirm.yes,
                &format!(
                    "Remove custom domain {}? It stops routing and its certificate is deleted.",
                    d.domain
                ),
            )?;
            let api = &ctx.api;
            let req = api.request(pb::DeleteCustomDomainRequest {
                domain_id: d.id.clone(),
                actor: Some(ctx.actor()),
            });
            api.call(
                &format!("removing {}", d.domain),
                api.custom_domains().delete_custom_domain(req),
            )
            .await?;
            ctx.done(&format!("removed custom domain {}", d.domain))
        }
    }
}

/// `ctrl domains add`
async fn add(ctx: &Ctx, target: &EnvTarget, domain: &str) -> Result<()> {
    let api = &ctx.api;
    let app = resolve::app(api, ctx.workspace_ref(), &target.app).await?;
    let env = resolve::environment(api, &app, &target.env).await?;
    let req = api.request(pb::AddCustomDomainRequest {
        environment_id: env.id.clone(),
        domain: domain.to_owned(),
        actor: Some(ctx.actor()),
    });
    let d = api
        .call(
            &format!("adding {domain}"),
            api.custom_domains().add_custom_domain(req),
        )
        .await?
        .custom_domain
        .ok_or_else(|| anyhow!("the API returned no custom domain"))?;
    if ctx.json() {
        return output::json(&d);
    }
    let place = format!("{} ({})", resolve::app_label(&target.app, &app), env.slug);
    print_lines(&added_lines(&d, &place));
    Ok(())
}

/// `ctrl domains list`
async fn list(ctx: &Ctx, target: &EnvTarget) -> Result<()> {
    let api = &ctx.api;
    let app = resolve::app(api, ctx.workspace_ref(), &target.app).await?;
    let env = resolve::environment(api, &app, &target.env).await?;
    let domains = resolve::custom_domains(api, &env.id).await?;
    if ctx.json() {
        return output::json(&domains);
    }
    let label = resolve::app_label(&target.app, &app);
    let flags = if env.slug == "production" {
        format!("--app {label}")
    } else {
        format!("--app {label} --env {}", env.slug)
    };
    list_table(&domains, now_ms()).print(&format!(
        "no custom domains in {label} ({}); add one with `ctrl domains add {flags} <host>`",
        env.slug
    ))
}

/// The domain a `get`, `verify` or `rm` names.
async fn find(ctx: &Ctx, arg: &DomainArg) -> Result<pb::CustomDomain> {
    resolve::custom_domain(
        &ctx.api,
        ctx.workspace_ref(),
        &arg.domain,
        arg.app.as_deref(),
        arg.env.as_deref(),
    )
    .await
}

fn print_lines(lines: &[String]) {
    for line in lines {
        println!("{line}");
    }
}

/// What `add` prints: the id, the records to publish, what happens next.
fn added_lines(d: &pb::CustomDomain, place: &str) -> Vec<String> {
    let mut out = vec![
        format!("added {} ({}) to {place}", d.domain, d.id),
        String::new(),
        "Create these DNS records at your DNS provider:".to_owned(),
    ];
    out.extend(
        records_table(d, false)
            .lines()
            .iter()
            .map(|l| format!("  {l}")),
    );
    out.push(String::new());
    out.push(format!(
        "{NEXT}; `ctrl domains get {}` shows progress",
        d.domain
    ));
    out
}

/// The records to publish; `marks` puts ✓/✗ (or … before the first
/// check) in front of each.
fn records_table(d: &pb::CustomDomain, marks: bool) -> Table {
    let mut table = if marks {
        Table::new(&["", "TYPE", "NAME", "VALUE"])
    } else {
        Table::new(&["TYPE", "NAME", "VALUE"])
    };
    for r in &d.records {
        let mut row = vec![r.r#type.clone(), r.name.clone(), r.value.clone()];
        if marks {
            row.insert(0, record_mark(d, r).to_owned());
        }
        table.row(row);
    }
    table
}

/// Whether the last check found `r`: the TXT record proves ownership, the
/// CNAME routes. An apex's A/AAAA records have no flag of their own: the
/// domain is only verified with them right.
fn record_mark(d: &pb::CustomDomain, r: &pb::DnsRecord) -> &'static str {
    let verified = d.status == pb::CustomDomainStatus::Verified as i32;
    if d.last_checked_at == 0 && !verified {
        return "…";
    }
    let found = match r.r#type.as_str() {
        "TXT" => d.ownership_verified,
        "CNAME" => d.cname_verified,
        _ => verified,
    };
    if found { "✓" } else { "✗" }
}

/// `ctrl domains list`'s table at `now`.
fn list_table(domains: &[pb::CustomDomain], now: i64) -> Table {
    let mut table = Table::new(&["DOMAIN", "STATUS", "CERTIFICATE", "CHECKS", "LAST CHECK"]);
    for d in domains {
        table.row(vec![
            d.domain.clone(),
            status(d.status),
            certificate_cell(d.certificate.as_ref()),
            d.check_attempts.to_string(),
            ago_at(d.last_checked_at, now),
        ]);
    }
    table
}

/// A certificate in a few words: "issued, expires 2027-03-01", "failed: …",
/// "issuing" (with why an order is being retried), or "-" when there is
/// none.
fn certificate_cell(c: Option<&pb::CertificateState>) -> String {
    let Some(c) = c else {
        return "-".into();
    };
    match pb::CertificateStatus::try_from(c.status) {
        Ok(pb::CertificateStatus::Issued) if c.expires_at > 0 => {
            format!("issued, expires {}", date(c.expires_at))
        }
        Ok(pb::CertificateStatus::Failed) if !c.error.is_empty() => {
            format!("failed: {}", clip(&c.error, LIST_ERROR_CHARS))
        }
        Ok(pb::CertificateStatus::Issuing) if !c.error.is_empty() => {
            format!("issuing, retrying: {}", clip(&c.error, LIST_ERROR_CHARS))
        }
        Ok(pb::CertificateStatus::None | pb::CertificateStatus::Unspecified) => "-".into(),
        _ => certificate_status(c.status),
    }
}

/// `ctrl domains get`'s view at `now`: the fields, the records with what
/// the last check found, and what to do next.
fn detail_lines(d: &pb::CustomDomain, now: i64) -> Vec<String> {
    let mut fields = vec![
        ("domain", d.domain.clone()),
        ("id", d.id.clone()),
        ("status", status(d.status)),
        ("checks", d.check_attempts.to_string()),
        (
            "last check",
            if d.last_checked_at > 0 {
                ago_at(d.last_checked_at, now)
            } else {
                "not yet".into()
            },
        ),
    ];
    if !d.verification_error.is_empty() {
        fields.push(("found", d.verification_error.clone()));
    }
    let cert = d.certificate.clone().unwrap_or_default();
    fields.push((
        "certificate",
        match pb::CertificateStatus::try_from(cert.status) {
            Ok(pb::CertificateStatus::None | pb::CertificateStatus::Unspecified) | Err(_)
                if d.status != pb::CustomDomainStatus::Verified as i32 =>
            {
                "none yet (ordered once the domain is verified)".into()
            }
            // Verified without one: certificates are off on this server.
            Ok(pb::CertificateStatus::Unspecified) | Err(_) => "none".into(),
            // The error is why the order under way is being retried.
            Ok(pb::CertificateStatus::Issuing) if !cert.error.is_empty() => {
                "issuing, retrying after an error".into()
            }
            Ok(_) => certificate_status(cert.status),
        },
    ));
    if cert.expires_at > 0 {
        fields.push((
            "expires",
            format!(
                "{} ({})",
                date(cert.expires_at),
                until_at(cert.expires_at, now)
            ),
        ));
    }
    if cert.issued_at > 0 {
        fields.push(("issued", ago_at(cert.issued_at, now)));
    }
    if !cert.error.is_empty() {
        fields.push(("certificate error", cert.error));
    }
    fields.push(("added", ago_at(d.created_at, now)));

    let mut out = output::field_lines(&fields);
    out.push(String::new());
    out.push("records".to_owned());
    out.extend(
        records_table(d, true)
            .lines()
            .iter()
            .map(|l| format!("  {l}")),
    );
    let next = match pb::CustomDomainStatus::try_from(d.status) {
        Ok(pb::CustomDomainStatus::Pending | pb::CustomDomainStatus::Verifying) => Some(format!(
            "{NEXT}; `ctrl domains verify {}` checks again now",
            d.domain
        )),
        Ok(pb::CustomDomainStatus::Failed) => Some(format!(
            "checks stopped; once the records are right, `ctrl domains verify {}` starts again",
            d.domain
        )),
        _ => None,
    };
    if let Some(next) = next {
        out.push(String::new());
        out.push(next);
    }
    out
}

/// A custom domain's status as a word.
fn status(value: i32) -> String {
    pb::CustomDomainStatus::try_from(value).map_or_else(
        |_| format!("status {value}"),
        |s| enum_name(s.as_str_name(), "CUSTOM_DOMAIN_STATUS_"),
    )
}

/// A certificate's status as a word.
fn certificate_status(value: i32) -> String {
    pb::CertificateStatus::try_from(value).map_or_else(
        |_| format!("status {value}"),
        |s| enum_name(s.as_str_name(), "CERTIFICATE_STATUS_"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    fn domain(status: pb::CustomDomainStatus) -> pb::CustomDomain {
        pb::CustomDomain {
            id: "dom_abc".into(),
            domain: "shop.example.com".into(),
            status: status as i32,
            records: vec![
                pb::DnsRecord {
                    r#type: "TXT".into(),
                    name: "_ctrl.shop.example.com".into(),
                    value: "ctrl-domain-verify=tok".into(),
                },
                pb::DnsRecord {
                    r#type: "CNAME".into(),
                    name: "shop.example.com".into(),
                    value: "x1.edge.example.net".into(),
                },
            ],
            created_at: NOW - 600_000,
            target_cname: "x1.edge.example.net".into(),
            certificate: Some(pb::CertificateState {
                status: pb::CertificateStatus::None as i32,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn add_prints_the_id_the_records_and_what_happens_next() {
        let lines = added_lines(&domain(pb::CustomDomainStatus::Pending), "web (production)");
        assert_eq!(
            lines,
            [
                "added shop.example.com (dom_abc) to web (production)",
                "",
                "Create these DNS records at your DNS provider:",
                "  TYPE   NAME                    VALUE",
                "  TXT    _ctrl.shop.example.com  ctrl-domain-verify=tok",
                "  CNAME  shop.example.com        x1.edge.example.net",
                "",
                "ctrl checks about once a minute for up to 24 h; \
                 `ctrl domains get shop.example.com` shows progress",
            ]
        );
    }

    #[test]
    fn the_list_shows_status_certificate_and_checks() {
        let pending = domain(pb::CustomDomainStatus::Pending);
        let mut verified = domain(pb::CustomDomainStatus::Verified);
        verified.domain = "www.example.com".into();
        verified.check_attempts = 3;
        verified.last_checked_at = NOW - 120_000;
        verified.certificate = Some(pb::CertificateState {
            status: pb::CertificateStatus::Issued as i32,
            expires_at: 1_803_906_000_000,
            issued_at: NOW - 1000,
            error: String::new(),
        });
        let mut failed = domain(pb::CustomDomainStatus::Verified);
        failed.domain = "api.example.com".into();
        failed.check_attempts = 1;
        failed.last_checked_at = NOW - 5000;
        failed.certificate = Some(pb::CertificateState {
            status: pb::CertificateStatus::Failed as i32,
            error: "urn:ietf:params:acme:error:rateLimited: too many certificates already issued for this domain".into(),
            ..Default::default()
        });
        let mut issuing = domain(pb::CustomDomainStatus::Verified);
        issuing.domain = "www2.example.com".into();
        issuing.check_attempts = 2;
        issuing.last_checked_at = NOW - 7_200_000;
        issuing.certificate = Some(pb::CertificateState {
            status: pb::CertificateStatus::Issuing as i32,
            error: "the CA at https://acme.test/dir did not answer".into(),
            ..Default::default()
        });
        let table = list_table(&[failed, pending, verified, issuing], NOW);
        assert_eq!(
            table.lines(),
            [
                "DOMAIN            STATUS    CERTIFICATE                                                           CHECKS  LAST CHECK",
                "api.example.com   verified  failed: urn:ietf:params:acme:error:rateLimited: too many certificat…  1       5s ago",
                "shop.example.com  pending   -                                                                     0       -",
                "www.example.com   verified  issued, expires 2027-03-01                                            3       2m ago",
                "www2.example.com  verified  issuing, retrying: the CA at https://acme.test/dir did not answer     2       2h ago",
            ]
        );
        assert!(list_table(&[], NOW).is_empty());
    }

    #[test]
    fn get_marks_each_record_with_what_the_last_check_found() {
        // Not checked yet: nothing is marked wrong.
        let lines = detail_lines(&domain(pb::CustomDomainStatus::Pending), NOW);
        assert!(
            lines
                .contains(&"  …  TXT    _ctrl.shop.example.com  ctrl-domain-verify=tok".to_owned()),
            "{lines:#?}"
        );
        assert!(
            lines.contains(&"last check   not yet".to_owned()),
            "{lines:#?}"
        );

        let mut d = domain(pb::CustomDomainStatus::Verifying);
        d.check_attempts = 4;
        d.last_checked_at = NOW - 30_000;
        d.ownership_verified = true;
        d.verification_error = "no CNAME at shop.example.com (expected x1.edge.example.net)".into();
        let lines = detail_lines(&d, NOW);
        assert_eq!(
            lines,
            [
                "domain       shop.example.com",
                "id           dom_abc",
                "status       verifying",
                "checks       4",
                "last check   30s ago",
                "found        no CNAME at shop.example.com (expected x1.edge.example.net)",
                "certificate  none yet (ordered once the domain is verified)",
                "added        10m ago",
                "",
                "records",
                "     TYPE   NAME                    VALUE",
                "  ✓  TXT    _ctrl.shop.example.com  ctrl-domain-verify=tok",
                "  ✗  CNAME  shop.example.com        x1.edge.example.net",
                "",
                "ctrl checks about once a minute for up to 24 h; \
                 `ctrl domains verify shop.example.com` checks again now",
            ]
        );
    }

    #[test]
    fn get_shows_the_certificate_with_expiry_and_error() {
        let mut d = domain(pb::CustomDomainStatus::Verified);
        d.last_checked_at = NOW - 3_600_000;
        d.cname_verified = true;
        // Verified without a certificate: certificates are off.
        let lines = detail_lines(&d, NOW);
        assert!(
            lines.contains(&"certificate  none".to_owned()),
            "{lines:#?}"
        );

        d.certificate = Some(pb::CertificateState {
            status: pb::CertificateStatus::Issued as i32,
            expires_at: NOW + 89 * 86_400_000 + 5000,
            issued_at: NOW - 86_400_000,
            error: String::new(),
        });
        let lines = detail_lines(&d, NOW);
        for want in [
            "certificate  issued",
            "expires      2027-04-14 (in 89d)",
            "issued       1d ago",
            "  ✗  TXT    _ctrl.shop.example.com  ctrl-domain-verify=tok",
            "  ✓  CNAME  shop.example.com        x1.edge.example.net",
        ] {
            assert!(
                lines.contains(&want.to_owned()),
                "no {want:?} in {lines:#?}"
            );
        }
        assert!(
            !lines.iter().any(|l| l.contains("ctrl domains verify")),
            "{lines:#?}"
        );

        d.certificate = Some(pb::CertificateState {
            status: pb::CertificateStatus::Issuing as i32,
            error: "the CA at https://acme.test/dir did not answer".into(),
            ..Default::default()
        });
        let lines = detail_lines(&d, NOW);
        for want in [
            "certificate        issuing, retrying after an error",
            "certificate error  the CA at https://acme.test/dir did not answer",
        ] {
            assert!(
                lines.contains(&want.to_owned()),
                "no {want:?} in {lines:#?}"
            );
        }

        d.status = pb::CustomDomainStatus::Failed as i32;
        d.verification_error = "not verified within 24.0 h; last check: no TXT".into();
        d.certificate = Some(pb::CertificateState {
            status: pb::CertificateStatus::Failed as i32,
            error: "CAA record forbids issuance".into(),
            ..Default::default()
        });
        let lines = detail_lines(&d, NOW);
        for want in [
            "certificate        failed",
            "certificate error  CAA record forbids issuance",
            "found              not verified within 24.0 h; last check: no TXT",
            "checks stopped; once the records are right, `ctrl domains verify shop.example.com` starts again",
        ] {
            assert!(
                lines.contains(&want.to_owned()),
                "no {want:?} in {lines:#?}"
            );
        }
    }

    #[test]
    fn an_apex_address_is_right_once_the_domain_is_verified() {
        let mut d = domain(pb::CustomDomainStatus::Verifying);
        d.apex = true;
        d.last_checked_at = NOW;
        let a = pb::DnsRecord {
            r#type: "A".into(),
            name: "example.com".into(),
            value: "192.0.2.1".into(),
        };
        assert_eq!(record_mark(&d, &a), "✗");
        d.status = pb::CustomDomainStatus::Verified as i32;
        assert_eq!(record_mark(&d, &a), "✓");
    }
}
