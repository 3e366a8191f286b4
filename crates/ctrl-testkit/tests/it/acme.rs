use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ctrl_testkit::process::ProcessId;
use ctrl_testkit::{ChallTestSrv, Moto, Pebble, PebbleOptions, free_port, http_client};
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// A resolver that asks only `server`, without caching, hosts file or
/// system configuration, so every lookup sees the records as they are now.
fn resolver(server: SocketAddr) -> Result<TokioResolver> {
    let mut name_server = NameServerConfig::udp_and_tcp(server.ip());
    for connection in &mut name_server.connections {
        connection.port = server.port();
    }
    let mut builder = TokioResolver::builder_with_config(
        ResolverConfig::from_name_servers(vec![name_server]),
        TokioRuntimeProvider::default(),
    );
    let options = builder.options_mut();
    options.cache_size = 0;
    options.use_hosts_file = ResolveHosts::Never;
    options.timeout = Duration::from_secs(2);
    options.attempts = 1;
    Ok(builder.build()?)
}

async fn txt(resolver: &TokioResolver, name: &str) -> Result<Vec<String>> {
    match resolver.lookup(name, RecordType::TXT).await {
        Ok(lookup) => Ok(lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::TXT(t) => Some(
                    t.txt_data
                        .iter()
                        .map(|part| String::from_utf8_lossy(part).into_owned())
                        .collect(),
                ),
                _ => None,
            })
            .collect()),
        Err(e) if e.is_no_records_found() => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

fn gone(pid: i32) -> bool {
    ProcessId::of(pid).is_none()
}

#[tokio::test]
async fn challtestsrv_serves_the_records_a_test_sets() -> Result<()> {
    let started = Instant::now();
    let dns = ChallTestSrv::start().await?;
    eprintln!("pebble-challtestsrv ready in {:?}", started.elapsed());
    let resolver = resolver(dns.dns_addr())?;

    // TXT, as for DNS-01 or domain verification; values accumulate.
    let name = "_acme-challenge.app.example.test.";
    assert!(txt(&resolver, name).await?.is_empty());
    dns.set_txt("_acme-challenge.app.example.test", "token-1")
        .await?;
    assert_eq!(txt(&resolver, name).await?, ["token-1"]);
    dns.set_txt("_acme-challenge.app.example.test.", "token-2")
        .await?;
    let mut both = txt(&resolver, name).await?;
    both.sort();
    assert_eq!(both, ["token-1", "token-2"]);
    dns.clear_txt("_acme-challenge.app.example.test").await?;
    assert!(txt(&resolver, name).await?.is_empty());

    // CNAME, as a customer's domain pointing at the edge.
    dns.set_cname("app.customer.test", "edge.ctrl.test").await?;
    let lookup = resolver
        .lookup("app.customer.test.", RecordType::CNAME)
        .await?;
    let targets: Vec<String> = lookup
        .answers()
        .iter()
        .filter_map(|r| match &r.data {
            RData::CNAME(c) => Some(c.0.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(targets, ["edge.ctrl.test."]);
    dns.clear_cname("app.customer.test").await?;

    // A: 127.0.0.1 for every name unless set.
    let ips = |lookup: hickory_resolver::lookup_ip::LookupIp| lookup.iter().collect::<Vec<_>>();
    let localhost = IpAddr::from(Ipv4Addr::LOCALHOST);
    assert_eq!(
        ips(resolver.lookup_ip("anything.example.test.").await?),
        [localhost]
    );
    let edge = Ipv4Addr::new(10, 1, 2, 3);
    dns.add_a("edge.ctrl.test", &[edge]).await?;
    assert_eq!(
        ips(resolver.lookup_ip("edge.ctrl.test.").await?),
        [IpAddr::from(edge)]
    );
    dns.clear_a("edge.ctrl.test").await?;
    assert_eq!(
        ips(resolver.lookup_ip("edge.ctrl.test.").await?),
        [localhost]
    );

    // SERVFAIL is an error, not an empty answer.
    dns.set_servfail("broken.example.test").await?;
    let err = resolver
        .lookup("broken.example.test.", RecordType::TXT)
        .await
        .expect_err("SERVFAIL");
    assert!(!err.is_no_records_found(), "{err}");
    dns.clear_servfail("broken.example.test").await?;
    assert!(txt(&resolver, "broken.example.test.").await?.is_empty());

    let pid = dns.pid();
    drop(dns);
    assert!(gone(pid), "pebble-challtestsrv {pid} outlived its handle");
    Ok(())
}

#[tokio::test]
async fn pebble_serves_its_directory_and_root() -> Result<()> {
    let dns = ChallTestSrv::start().await?;
    let started = Instant::now();
    let options = PebbleOptions {
        nonce_reject: Some(0),
        validity: Some(Duration::from_secs(90)),
        authz_reuse: Some(0),
    };
    let pebble = Pebble::start_with(&dns, free_port()?, options).await?;
    eprintln!("pebble ready in {:?}", started.elapsed());

    // The directory, with every endpoint on the listener's address.
    let url = pebble.directory_url();
    let authority = url
        .strip_prefix("https://")
        .and_then(|rest| rest.split('/').next())
        .context("directory URL")?;
    let directory = pebble.directory().await?;
    for field in ["newNonce", "newAccount", "newOrder"] {
        let endpoint = directory[field].as_str().unwrap_or_default();
        assert!(
            endpoint.starts_with(&format!("https://{authority}/")),
            "{field}: {directory}"
        );
    }

    // The listener's certificate also holds for `localhost`, under the CA
    // in the file an ACME client is given.
    let ca_pem = std::fs::read_to_string(pebble.listener_ca_pem_path())?;
    assert_eq!(ca_pem, pebble.listener_ca_pem());
    let (status, body) = ctrl_testkit::ca::https_get(
        &ca_pem,
        authority.parse()?,
        "localhost",
        "/dir",
        Duration::from_secs(5),
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("newOrder"), "{body}");

    // The root and intermediate that issued certificates chain to.
    let root = pebble.root_pem().await?;
    let intermediate = pebble.intermediate_pem().await?;
    for pem in [&root, &intermediate] {
        let certs =
            CertificateDer::pem_slice_iter(pem.as_bytes()).collect::<Result<Vec<_>, _>>()?;
        assert_eq!(certs.len(), 1, "{pem}");
    }
    assert_ne!(root, intermediate);

    // The options reached pebble.
    let log = std::fs::read_to_string(pebble.log_path())?;
    assert!(
        log.contains("Using certificate validity period of 90 seconds"),
        "{log}"
    );
    assert!(log.contains("reject 0% of good nonces"), "{log}");

    let pid = pebble.pid();
    drop(pebble);
    assert!(gone(pid), "pebble {pid} outlived its handle");
    Ok(())
}

#[tokio::test]
async fn moto_serves_route53() -> Result<()> {
    let started = Instant::now();
    let moto = Moto::start().await?;
    eprintln!("moto_server ready in {:?}", started.elapsed());
    let client = http_client();
    let answer = client
        .get(format!("{}/moto-api/", moto.endpoint_url()))
        .send()
        .await?;
    assert!(answer.status().is_success(), "{}", answer.status());

    // moto picks the service from the signature's scope (it checks no
    // signature): a Route53 call without an SDK.
    let zones = client
        .get(format!("{}/2013-04-01/hostedzone", moto.endpoint_url()))
        .header(
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/route53/aws4_request, \
             SignedHeaders=host, Signature=0",
        )
        .send()
        .await?;
    assert!(zones.status().is_success(), "{}", zones.status());
    let body = zones.text().await?;
    assert!(body.contains("<ListHostedZonesResponse"), "{body}");
    moto.reset().await?;

    let pid = moto.pid();
    drop(moto);
    assert!(gone(pid), "moto_server {pid} outlived its handle");
    Ok(())
}
