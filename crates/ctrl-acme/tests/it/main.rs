//! The Route53 provider against moto (a real Route53 API implementation):
//! zones found by name, records written, replaced and removed, errors named.

use std::time::Duration;

use anyhow::Result;
use ctrl_acme::AcmeError;
use ctrl_acme::dns::{DnsProvider, Route53, Route53Config};
use ctrl_testkit::Moto;

fn provider(moto: &Moto, zone: &str) -> Route53 {
    Route53::new(&Route53Config {
        access_key_id: "AKIDTEST".into(),
        secret_access_key: zeroize::Zeroizing::new("not-a-real-secret".into()),
        region: "us-east-1".into(),
        hosted_zone_id: zone.into(),
        endpoint: moto.endpoint_url(),
        timeout: Duration::from_secs(5),
    })
}

/// The TXT values at `name` in every zone, read back through the SDK.
async fn txt(client: &aws_sdk_route53::Client, name: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for zone in client.list_hosted_zones().send().await?.hosted_zones() {
        let sets = client
            .list_resource_record_sets()
            .hosted_zone_id(zone.id())
            .send()
            .await?;
        for r in sets.resource_record_sets() {
            if r.r#type().as_str() == "TXT" && r.name().trim_end_matches('.') == name {
                out.extend(r.resource_records().iter().map(|v| v.value().to_owned()));
            }
        }
    }
    Ok(out)
}

fn sdk(moto: &Moto) -> aws_sdk_route53::Client {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    aws_sdk_route53::Client::from_conf(
        aws_sdk_route53::Config::builder()
            .behavior_version(aws_sdk_route53::config::BehaviorVersion::latest())
            .region(aws_sdk_route53::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_route53::config::Credentials::new(
                "AKIDTEST", "x", None, None, "test",
            ))
            .http_client(http)
            .endpoint_url(moto.endpoint_url())
            .build(),
    )
}

#[tokio::test]
async fn route53_publishes_replaces_and_removes_challenge_records() -> Result<()> {
    let moto = Moto::start().await?;
    let client = sdk(&moto);
    for zone in ["example.test.", "sub.example.test."] {
        client
            .create_hosted_zone()
            .name(zone)
            .caller_reference(zone)
            .send()
            .await?;
    }
    // The zone is found by the longest suffix.
    let dns = provider(&moto, "");
    let name = "_acme-challenge.deep.sub.example.test";
    ctrl_acme::dns::publish(
        &dns,
        name,
        "first",
        Duration::from_secs(5),
        Duration::from_millis(50),
    )
    .await?;
    assert_eq!(txt(&client, name).await?, ["\"first\""]);
    let sub_zone = client
        .list_hosted_zones_by_name()
        .dns_name("sub.example.test.")
        .send()
        .await?
        .hosted_zones()[0]
        .id()
        .to_owned();
    let in_sub = client
        .list_resource_record_sets()
        .hosted_zone_id(&sub_zone)
        .send()
        .await?;
    assert!(
        in_sub
            .resource_record_sets()
            .iter()
            .any(|r| r.name().trim_end_matches('.') == name),
        "written to the most specific zone"
    );
    // UPSERT replaces the value; deleting removes it; deleting again is fine.
    dns.upsert_txt(name, "second").await?;
    assert_eq!(txt(&client, name).await?, ["\"second\""]);
    dns.delete_txt(name, "second").await?;
    assert!(txt(&client, name).await?.is_empty());
    dns.delete_txt(name, "second").await?;

    // No zone for the name, or a zone that does not exist: refused, named.
    let err = dns
        .upsert_txt("_acme-challenge.other.test", "v")
        .await
        .expect_err("no zone");
    assert!(
        matches!(&err, AcmeError::Refused(m) if m.contains("no Route53 hosted zone contains")),
        "{err:?}"
    );
    let err = provider(&moto, "ZNOSUCHZONE")
        .upsert_txt(name, "v")
        .await
        .expect_err("no such zone");
    assert!(
        matches!(&err, AcmeError::Refused(m) if m.contains("ZNOSUCHZONE") || m.contains("NoSuchHostedZone")),
        "{err:?}"
    );
    assert!(!format!("{err:?}").contains("not-a-real-secret"));
    Ok(())
}
