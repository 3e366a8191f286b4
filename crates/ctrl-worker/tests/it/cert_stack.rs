//! The stack for certificates and custom domains, on real components: the
//! worker process on a real restate-server and MariaDB, ctrl-api (with
//! cluster-sync mounted) and frontline in process, pebble as the ACME CA
//! validating HTTP-01 through frontline's real listener, challtestsrv as
//! the DNS server both pebble and the domain verifier ask, and moto as
//! Route53 (a bridge mirrors its TXT records into challtestsrv, so pebble
//! really sees what the worker wrote). Shared by the tests and the
//! `certificates` benchmark.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ctrl_api::state::AppState;
use ctrl_core::domains::Sticky;
use ctrl_core::id::{IdKind, generate};
use ctrl_db::instance::ReportedInstance;
use ctrl_db::types::InstanceStatus;
use ctrl_proto::ctrl::v1 as pb;
use ctrl_testkit::{ChallTestSrv, Moto, Pebble, PebbleOptions};

use crate::harness::Harness;

pub(crate) const VAULT_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
/// The edge's credential (frontline of dev/local), registered at start.
pub(crate) const EDGE_TOKEN: &str = "ctrl_agent_test_edge_local_0123456789abcdef";
pub(crate) const APEX: &str = "ctrl.test";
pub(crate) const CNAME_DOMAIN: &str = "edge.ctrl-dns.test";

/// Everything, wired.
pub(crate) struct Stack {
    pub(crate) h: Harness,
    pub(crate) dns: ChallTestSrv,
    pub(crate) pebble: Pebble,
    pub(crate) moto: Option<Moto>,
    pub(crate) api: AppState,
    pub(crate) edge: frontline_edge::Edge,
    /// The production deployment the environment's live route points at.
    pub(crate) live: String,
    _backend: tokio::task::JoinHandle<()>,
    _api_server: tokio::task::JoinHandle<()>,
    _bridge: Option<tokio::task::JoinHandle<()>>,
}

/// Options of a stack.
#[derive(Default)]
pub(crate) struct Options {
    /// Route53 on moto (DNS-01, the platform wildcard bootstrap).
    pub(crate) route53: bool,
    /// pebble's certificate validity.
    pub(crate) validity: Option<Duration>,
    /// Extra `[acme]` lines.
    pub(crate) acme: &'static str,
    /// Another ACME directory than pebble's.
    pub(crate) directory: Option<String>,
    /// A Route53 hosted zone id to use (instead of finding it by name).
    pub(crate) hosted_zone_id: Option<&'static str>,
    /// `[heartbeat] cert_renewal_url`.
    pub(crate) heartbeat_url: Option<String>,
}

impl Stack {
    pub(crate) async fn start(o: Options) -> Result<Self> {
        let dns = ChallTestSrv::start().await?;
        let http01 = ctrl_testkit::free_port()?;
        let pebble = Pebble::start_with(
            &dns,
            http01,
            PebbleOptions {
                validity: o.validity,
                ..PebbleOptions::default()
            },
        )
        .await?;
        let moto = if o.route53 {
            let moto = Moto::start().await?;
            create_zone(&moto.endpoint_url(), APEX).await?;
            Some(moto)
        } else {
            None
        };
        let route53 = match &moto {
            Some(m) => format!(
                "[acme.route53]\nenabled = true\naccess_key_id = \"AKIDTEST\"\nsecret_access_key = \"s3cr3t-route53-key\"\nregion = \"us-east-1\"\nendpoint = \"{}\"\nhosted_zone_id = \"{}\"\n",
                m.endpoint_url(),
                o.hosted_zone_id.unwrap_or_default(),
            ),
            None => String::new(),
        };
        let worker = format!(
            "apex_domain = \"{APEX}\"\n\
             [acme]\nenabled = true\nemail_domain = \"{APEX}\"\ndirectory = \"{dir}\"\nca_bundle = \"{ca}\"\n\
             request_timeout_seconds = 10\nvalidation_timeout_seconds = 30\nrenewal_spacing_seconds = 0\n{extra}\n\
             {route53}\
             [custom_domains]\nnameservers = [\"{ns}\"]\ncheck_interval_seconds = 1\ngive_up_after_seconds = 3600\nrecheck_interval_seconds = 1\napex_addresses = [\"127.0.0.1\"]\n\
             [vault]\nkeys = [{{ id = \"k1\", key = \"{VAULT_KEY}\" }}]\n{heartbeat}",
            heartbeat = o
                .heartbeat_url
                .as_ref()
                .map(|url| format!("[heartbeat]\ncert_renewal_url = \"{url}\"\n"))
                .unwrap_or_default(),
            dir = o
                .directory
                .clone()
                .unwrap_or_else(|| pebble.directory_url()),
            ca = pebble.listener_ca_pem_path().display(),
            extra = o.acme,
            ns = dns.dns_addr(),
        );
        let h = Harness::start_with(&worker).await?;

        // The API, with cluster-sync mounted (the edge's control plane).
        let vault = ctrl_vault::Vault::new(&[ctrl_vault::KeyConfig {
            id: "k1".into(),
            base64: VAULT_KEY.into(),
        }])?;
        let api = AppState::new(
            h.db.pool.clone(),
            vault,
            &["api-token-0123456789abcdef".to_owned()],
            (
                ctrl_api::restate::Ingress::new(&h.restate.ingress_url()),
                ctrl_api::restate::Admin::new(&h.restate.admin_url()),
            ),
        )
        .with_custom_domains(ctrl_api::config::CustomDomainsConfig {
            cname_domain: CNAME_DOMAIN.into(),
            platform_domains: vec![APEX.into()],
            apex_addresses: Vec::new(),
        });
        ctrl_cluster_sync::agents::ensure(
            &h.db.pool,
            &ctrl_cluster_sync::agents::Binding::frontline("dev", "local", "test edge"),
            EDGE_TOKEN,
            0,
        )
        .await?;
        let sync = ctrl_cluster_sync::ClusterSync::new(
            h.db.pool.clone(),
            &h.restate.ingress_url(),
            ctrl_cluster_sync::service::Settings::default(),
        );
        let router = ctrl_api::rpc::router_with(api.clone(), Some(sync));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let api_url = format!("http://{}", listener.local_addr()?);
        let api_server = tokio::spawn(async move {
            let _ = axum::serve(ctrl_runtime::net::nodelay(listener), router).await;
        });

        // The app: one instance answering "hello".
        let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let backend_addr = backend.local_addr()?;
        let backend_task = tokio::spawn(async move {
            let app = axum::Router::new().route(
                "/",
                axum::routing::get(|| async { "hello from the live deployment" }),
            );
            let _ = axum::serve(ctrl_runtime::net::nodelay(backend), app).await;
        });
        let live = h.ready_deployment(&h.production).await?;
        let reported = [ReportedInstance {
            new_id: generate(IdKind::Instance, &mut rand::rng()),
            name: format!("{live}-0"),
            address: backend_addr.to_string(),
            cpu_millicores: 250,
            memory_mib: 256,
            status: InstanceStatus::Running,
        }];
        let mut tx = h.db.pool.begin().await?;
        ctrl_db::instance::replace_for_deployment(
            &mut tx,
            &h.workspace,
            &live,
            &h.region,
            &reported,
            3,
        )
        .await?;
        tx.commit().await?;
        h.route(&h.production, &live, &format!("web.{APEX}"), Sticky::Live)
            .await?;

        let edge = frontline_edge::Edge::start(&api_url, http01).await?;
        let bridge = moto
            .as_ref()
            .map(|m| tokio::spawn(bridge(m.endpoint_url(), dns.management_url())));
        Ok(Self {
            h,
            dns,
            pebble,
            moto,
            api,
            edge,
            live,
            _backend: backend_task,
            _api_server: api_server,
            _bridge: bridge,
        })
    }

    /// Adds `domain` to the production environment through the API.
    pub(crate) async fn add(&self, domain: &str) -> Result<pb::CustomDomain> {
        self.add_in(&self.h.production, domain).await
    }

    /// Adds `domain` to `environment` through the API.
    pub(crate) async fn add_in(&self, environment: &str, domain: &str) -> Result<pb::CustomDomain> {
        let r = ctrl_api::services::custom_domain::add_custom_domain(
            &self.api,
            pb::AddCustomDomainRequest {
                environment_id: environment.to_owned(),
                domain: domain.into(),
                actor: None,
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("add {domain}: {e}"))?;
        r.custom_domain.context("no domain in the answer")
    }

    /// The domain as the API shows it.
    pub(crate) async fn get(&self, id: &str) -> Result<pb::CustomDomain> {
        ctrl_api::services::custom_domain::get_custom_domain(
            &self.api,
            pb::GetCustomDomainRequest {
                domain_id: id.into(),
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("get {id}: {e}"))?
        .custom_domain
        .context("no domain")
    }

    /// Waits until the domain, as the API shows it, satisfies `f`.
    pub(crate) async fn wait_domain(
        &self,
        id: &str,
        what: &str,
        limit: Duration,
        f: impl Fn(&pb::CustomDomain) -> bool,
    ) -> Result<pb::CustomDomain> {
        let deadline = Instant::now() + limit;
        loop {
            let d = self.get(id).await?;
            if f(&d) {
                return Ok(d);
            }
            if Instant::now() > deadline {
                bail!(
                    "{what}: not within {limit:?}; domain is {d:#?}\nworker log:\n{}",
                    self.h.worker_log(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `GET https://{host}/` through frontline, trusting pebble's root.
    pub(crate) async fn https_get(&self, host: &str) -> Result<(u16, String)> {
        let root = self.pebble.root_pem().await?;
        Ok(
            ctrl_testkit::ca::https_get(&root, self.edge.https, host, "/", Duration::from_secs(5))
                .await?,
        )
    }

    /// The serial of the certificate frontline presents for `host`.
    pub(crate) async fn served_serial(&self, host: &str) -> Result<Vec<u8>> {
        served_serial(self.edge.https, host).await
    }
}

/// Creates a Route53 hosted zone on moto.
async fn create_zone(endpoint: &str, zone: &str) -> Result<()> {
    let client = route53(endpoint);
    client
        .create_hosted_zone()
        .name(format!("{zone}."))
        .caller_reference(format!("ctrl-test-{}", rand::random::<u64>()))
        .send()
        .await
        .context("create hosted zone on moto")?;
    Ok(())
}

fn route53(endpoint: &str) -> aws_sdk_route53::Client {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let config = aws_sdk_route53::Config::builder()
        .behavior_version(aws_sdk_route53::config::BehaviorVersion::latest())
        .region(aws_sdk_route53::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_route53::config::Credentials::new(
            "AKIDTEST", "secret", None, None, "test",
        ))
        .http_client(http)
        .endpoint_url(endpoint)
        .build();
    aws_sdk_route53::Client::from_conf(config)
}

/// Every TXT record in moto's zones: (name without the dot, values).
pub(crate) async fn moto_txt_records(endpoint: &str) -> Result<Vec<(String, Vec<String>)>> {
    let client = route53(endpoint);
    let mut out = Vec::new();
    for zone in client.list_hosted_zones().send().await?.hosted_zones() {
        let records = client
            .list_resource_record_sets()
            .hosted_zone_id(zone.id())
            .send()
            .await?;
        for r in records.resource_record_sets() {
            if r.r#type().as_str() == "TXT" {
                out.push((
                    r.name().trim_end_matches('.').to_owned(),
                    r.resource_records()
                        .iter()
                        .map(|v| v.value().trim_matches('"').to_owned())
                        .collect(),
                ));
            }
        }
    }
    Ok(out)
}

/// Mirrors moto's TXT records into challtestsrv every 50 ms (moto does not
/// serve DNS): what the worker writes to "Route53" is what pebble resolves.
async fn bridge(moto: String, challtestsrv: String) {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("client");
    let mut mirrored: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    loop {
        if let Ok(records) = moto_txt_records(&moto).await {
            let now: std::collections::BTreeMap<_, _> = records.into_iter().collect();
            for (name, values) in &now {
                if mirrored.get(name) != Some(values) {
                    let host = format!("{name}.");
                    let _ = http
                        .post(format!("{challtestsrv}/clear-txt"))
                        .json(&serde_json::json!({ "host": host }))
                        .send()
                        .await;
                    for v in values {
                        let _ = http
                            .post(format!("{challtestsrv}/set-txt"))
                            .json(&serde_json::json!({ "host": host, "value": v }))
                            .send()
                            .await;
                    }
                }
            }
            for name in mirrored.keys() {
                if !now.contains_key(name) {
                    let _ = http
                        .post(format!("{challtestsrv}/clear-txt"))
                        .json(&serde_json::json!({ "host": format!("{name}.") }))
                        .send()
                        .await;
                }
            }
            mirrored = now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The serial of the leaf `addr` presents for SNI `host` (no verification:
/// this only identifies which certificate is served).
pub(crate) async fn served_serial(addr: SocketAddr, host: &str) -> Result<Vec<u8>> {
    #[derive(Debug)]
    struct AnyCert(Arc<rustls::crypto::CryptoProvider>);
    impl rustls::client::danger::ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &rustls::pki_types::CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                m,
                c,
                d,
                &self.0.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &rustls::pki_types::CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                m,
                c,
                d,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let tls = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(
            rustls::pki_types::ServerName::try_from(host.to_owned())?,
            tcp,
        ),
    )
    .await??;
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .context("no certificate presented")?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| anyhow::anyhow!("unreadable certificate: {e}"))?;
    Ok(cert.raw_serial().to_vec())
}

/// frontline in process, its plain-HTTP listener on pebble's HTTP-01 port.
mod frontline_edge {
    use super::*;

    pub(crate) struct Edge {
        pub(crate) https: SocketAddr,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        task: Option<tokio::task::JoinHandle<()>>,
    }

    impl Edge {
        pub(crate) async fn start(control_url: &str, http_port: u16) -> Result<Self> {
            let toml = format!(
                r#"
                [region]
                platform = "dev"
                name = "local"
                [control]
                url = "{control_url}"
                token = "{EDGE_TOKEN}"
                call_timeout_seconds = 3
                [listen]
                http = "127.0.0.1:{http_port}"
                https = "127.0.0.1:0"
                admin = "127.0.0.1:0"
                shutdown_grace_seconds = 1
                [vault]
                keys = [{{ id = "k1", key = "{VAULT_KEY}" }}]
                "#
            );
            let config: frontline::config::Config = ctrl_runtime::config::parse(
                &toml,
                "frontline.toml",
                &std::collections::HashMap::new(),
                frontline::config::ENV_PREFIX,
            )?;
            let listeners = frontline::server::Listeners::bind(&config).await?;
            let https = listeners.https.as_ref().context("https")?.local_addr()?;
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(async move {
                if let Err(e) = frontline::server::run(&config, listeners, async move {
                    let _ = rx.await;
                })
                .await
                {
                    eprintln!("frontline: {e:#}");
                }
            });
            Ok(Self {
                https,
                stop: Some(tx),
                task: Some(task),
            })
        }
    }

    impl Drop for Edge {
        fn drop(&mut self) {
            if let Some(s) = self.stop.take() {
                let _ = s.send(());
            }
            if let Some(t) = self.task.take() {
                t.abort();
            }
        }
    }
}
