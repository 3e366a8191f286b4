//! The worker process, in the order the seed prescribes: validated config →
//! logging → database (bounded retry) → Restate endpoint bound → self-
//! registration with the admin API (retry, `force` so a changed schema
//! replaces the old one) → health endpoint → serve until SIGTERM/SIGINT, then
//! stop accepting new invocations and let running handlers finish (or
//! suspend: Restate resumes them elsewhere).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use restate_sdk::endpoint::ServiceOptions;
use restate_sdk::prelude::Endpoint;
use restate_sdk::service::IntoServiceDefinition;
use sqlx::MySqlPool;
use tokio::net::TcpListener;

use crate::builds::Builds;
use crate::config::Config;
use crate::services::certificate::{CertificateObject, Issuer, RenewalObject};
use crate::services::custom_domain::{CustomDomainObject, Verifier};
use crate::services::deletion::DeletionObject;
use crate::services::deploy::{DeployObject, DeploySettings};
use crate::services::deployment::DeploymentObject;
use crate::services::github::GitHubWebhookObject;
use crate::services::github_status::{GitHubCommentObject, GitHubStatusObject, Reporter};
use crate::services::routing::RoutingObject;

/// Every Restate service of the worker, with its invocation retry policy:
/// the backstop behind each step's own bounded retries. Retries start fast
/// (a restarted worker is picked up within 100 ms) and back off to 30 s, about
/// six minutes in all; then the invocation pauses rather than dies, so an
/// operator can resume or cancel it and a cancelled pipeline still runs its
/// compensation.
pub fn endpoint(
    db: &MySqlPool,
    config: &Config,
    certs: &Certificates,
    builds: Arc<Builds>,
    metrics: &crate::metrics::WorkerMetrics,
) -> Result<Endpoint> {
    let options = || {
        ServiceOptions::new()
            .retry_policy_initial_interval(Duration::from_millis(100))
            .retry_policy_exponentiation_factor(2.0)
            .retry_policy_max_interval(Duration::from_secs(30))
            .retry_policy_max_attempts(20)
            .retry_policy_pause_on_max_attempts()
    };
    let reporter = Reporter::new(db.clone(), builds.github.clone(), config.dashboard_url());
    let mut builder = Endpoint::builder();
    for key in config.restate.identity_keys() {
        builder = builder
            .identity_key(key)
            .map_err(|e| anyhow::anyhow!("restate.identity_keys: {e}"))?;
    }
    let endpoint = builder
        .bind(
            DeploymentObject::new(db.clone())
                .into_service_definition()
                .options(options()),
        )
        // Only other handlers move routes.
        .bind(
            RoutingObject::new(db.clone())
                .into_service_definition()
                .options(options().ingress_private(true)),
        )
        // A build runs inside one step; Restate must not abort the attempt
        // before the build timeout (the default is 10 minutes).
        .bind(
            DeployObject::new(
                db.clone(),
                DeploySettings {
                    apex_domain: config.apex_domain().to_owned(),
                    ..DeploySettings::from(&config.deploy)
                },
                builds,
            )
            .with_metrics(metrics.clone())
            .into_service_definition()
            .options(options().abort_timeout(
                Duration::from_secs(config.build.timeout_seconds) + Duration::from_secs(300),
            )),
        )
        // ctrl-api hands it GitHub's deliveries through the ingress.
        .bind(
            GitHubWebhookObject::new(db.clone())
                .into_service_definition()
                .options(options()),
        )
        // Only the pipeline and the webhook handler report to GitHub.
        .bind(
            GitHubStatusObject::new(reporter.clone())
                .into_service_definition()
                .options(options().ingress_private(true)),
        )
        .bind(
            GitHubCommentObject::new(reporter)
                .into_service_definition()
                .options(options().ingress_private(true)),
        )
        .bind(
            DeletionObject::new(db.clone())
                .into_service_definition()
                .options(options()),
        )
        // ctrl-api (domains) and the worker's own bootstrap reach these
        // through the ingress.
        .bind(
            CertificateObject::new(db.clone(), certs.issuer.clone())
                .into_service_definition()
                .options(options()),
        )
        .bind(
            RenewalObject::new(db.clone(), certs.issuer.clone())
                .with_heartbeat(config.heartbeat.cert_renewal_url.get())
                .into_service_definition()
                .options(options()),
        )
        .bind(
            CustomDomainObject::new(db.clone(), certs.verifier.clone())
                .into_service_definition()
                .options(options()),
        )
        .build();
    Ok(endpoint)
}

/// What the certificate and custom-domain objects share.
#[derive(Debug, Clone)]
pub struct Certificates {
    /// None when ACME is disabled.
    pub issuer: Option<Arc<Issuer>>,
    /// Custom-domain verification.
    pub verifier: Arc<Verifier>,
}

impl Certificates {
    /// Builds the ACME issuer (if enabled), its DNS provider (if Route53 is
    /// enabled) and the domain verifier from the configuration.
    pub fn from_config(config: &Config) -> Result<Self> {
        let a = &config.acme;
        let issuer = if a.enabled {
            let vault = config
                .vault
                .as_ref()
                .context("acme.enabled needs [vault]")?
                .vault()
                .map_err(|e| anyhow::anyhow!("vault: {e}"))?;
            let dns: Option<Arc<dyn ctrl_acme::dns::DnsProvider>> = a.route53.enabled.then(|| {
                Arc::new(ctrl_acme::dns::Route53::new(
                    &ctrl_acme::dns::Route53Config {
                        access_key_id: a.route53.access_key_id.clone(),
                        secret_access_key: zeroize::Zeroizing::new(
                            a.route53.secret_access_key.clone(),
                        ),
                        region: a.route53.region.clone(),
                        hosted_zone_id: a.route53.hosted_zone_id.clone(),
                        endpoint: a.route53.endpoint.clone(),
                        timeout: Duration::from_secs(a.request_timeout_seconds),
                    },
                )) as Arc<dyn ctrl_acme::dns::DnsProvider>
            });
            let bundle = (!a.ca_bundle.is_empty()).then(|| std::path::Path::new(&a.ca_bundle));
            Some(Arc::new(Issuer {
                directory: ctrl_acme::acme::Directory::new(
                    &a.directory,
                    bundle,
                    Duration::from_secs(a.request_timeout_seconds),
                ),
                vault,
                dns,
                contact: format!("acme@{}", a.email_domain),
                validation_timeout: Duration::from_secs(a.validation_timeout_seconds),
                renew_before: Duration::from_secs(a.renew_before_days * 86_400),
                renewal_interval: Duration::from_secs(a.renewal_interval_seconds),
                renewal_spacing: Duration::from_secs(a.renewal_spacing_seconds),
                step_attempts: a.step_attempts,
                retry_failed_after: Duration::from_secs(a.retry_failed_after_seconds),
                session: tokio::sync::Mutex::default(),
            }))
        } else {
            None
        };
        let d = &config.custom_domains;
        let checker = ctrl_acme::verify::Checker::new(&d.nameservers, Duration::from_secs(5))
            .map_err(|e| anyhow::anyhow!("custom_domains: {e}"))?;
        Ok(Self {
            verifier: Arc::new(Verifier {
                checker,
                interval: Duration::from_secs(d.check_interval_seconds),
                give_up_after: Duration::from_secs(d.give_up_after_seconds),
                apex_addresses: d.apex_addresses.clone(),
                issue_certificates: issuer.is_some(),
                recheck_interval: Duration::from_secs(d.recheck_interval_seconds),
            }),
            issuer,
        })
    }
}

/// Seed 001's bootstrap, after registration: the renewal job is scheduled
/// (once: `Ensure` is a no-op when it already is), and with Route53 the
/// platform's wildcard `*.{apex}` has its row and is obtained (a no-op when
/// its certificate is current). Best effort: a failure is logged, the
/// worker serves anyway, and the next start tries again.
pub async fn bootstrap_certificates(config: &Config, db: &MySqlPool) -> Result<()> {
    use ctrl_core::workflows as wf;
    if !config.acme.enabled {
        return Ok(());
    }
    let http = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .build()
        .context("build the ingress client")?;
    let ingress = config.restate.ingress_url.trim_end_matches('/');
    let send = |path: String, body: serde_json::Value, key: Option<String>| {
        let mut req = http.post(format!("{ingress}/{path}/send"));
        // A handler without input takes no body at all.
        if !body.is_null() {
            req = req.json(&body);
        }
        if let Some(key) = key {
            req = req.header("idempotency-key", key);
        }
        async move {
            let r = req.send().await.context("Restate ingress unreachable")?;
            if !r.status().is_success() {
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                bail!("Restate ingress answered {status}: {body}");
            }
            Ok(())
        }
    };
    send(
        format!(
            "{}/{}/{}",
            wf::CERTIFICATE_RENEWAL_SERVICE,
            wf::RENEWAL_KEY,
            wf::ENSURE_RENEWAL_HANDLER
        ),
        serde_json::Value::Null,
        None,
    )
    .await?;
    if config.acme.route53.enabled {
        let wildcard = format!("*.{}", config.apex_domain());
        let now = crate::errors::now_ms();
        let new_id = ctrl_core::id::generate(ctrl_core::id::IdKind::CustomDomain, &mut rand::rng());
        let domain_id = ctrl_db::custom_domain::ensure_platform(
            db,
            &new_id,
            ctrl_core::domains::PLATFORM_OWNER,
            &wildcard,
            now,
        )
        .await?;
        ctrl_db::certificate::ensure_challenge(
            db,
            ctrl_core::domains::PLATFORM_OWNER,
            &domain_id,
            "dns-01",
            now,
            now,
        )
        .await?;
        send(
            format!(
                "{}/{wildcard}/{}",
                wf::CERTIFICATE_SERVICE,
                wf::OBTAIN_CERTIFICATE_HANDLER
            ),
            serde_json::to_value(wf::ObtainCertificate {
                domain_id,
                force: false,
            })?,
            // One bootstrap per minute at most, however often the worker restarts.
            Some(format!("bootstrap:{wildcard}:{}", now / 60_000)),
        )
        .await?;
        tracing::info!(%wildcard, "platform wildcard certificate ensured");
    }
    Ok(())
}

/// Registers `uri` with Restate's admin API (with `force`), retrying with
/// backoff for `attempts` attempts.
pub async fn register(
    admin_url: &str,
    api_key: Option<&str>,
    uri: &str,
    attempts: u32,
) -> Result<()> {
    let http = reqwest::Client::builder()
        .default_headers(
            ctrl_runtime::sections::bearer_headers(api_key).context("restate.api_key")?,
        )
        .no_proxy()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(15))
        .build()
        .context("build the registration client")?;
    let url = format!("{}/deployments", admin_url.trim_end_matches('/'));
    let mut delay = Duration::from_millis(250);
    for attempt in 1..=attempts {
        let result = http
            .post(&url)
            .json(&serde_json::json!({ "uri": uri, "force": true }))
            .send()
            .await;
        match result {
            Ok(r) if r.status().is_success() => {
                tracing::info!(%uri, "registered with Restate");
                return Ok(());
            }
            Ok(r) => {
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                tracing::warn!(attempt, %status, %body, "registration refused; retrying");
            }
            Err(e) => {
                tracing::warn!(attempt, error = %e, "Restate admin API not reachable; retrying")
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
    bail!("could not register {uri} with Restate at {admin_url} after {attempts} attempts")
}

#[derive(Clone)]
struct Health {
    db: MySqlPool,
    registered: Arc<AtomicBool>,
}

async fn ready(State(h): State<Health>) -> (StatusCode, &'static str) {
    if !h.registered.load(Ordering::SeqCst) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not registered with Restate yet",
        );
    }
    match tokio::time::timeout(Duration::from_secs(2), ctrl_db::ping(&h.db)).await {
        Ok(Ok(())) => (StatusCode::OK, "ready"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "database unreachable"),
    }
}

/// Serves the endpoint and the health routes until `shutdown` resolves.
pub async fn run(
    config: &Config,
    db: MySqlPool,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let listen = config.restate.listen_addr();
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let health_listener = TcpListener::bind(config.health.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.health.listen))?;
    tracing::info!(
        instance_id = %config.instance_id(),
        region = %config.region,
        restate = %listener.local_addr()?,
        health = %health_listener.local_addr()?,
        "ctrl-worker listening"
    );
    for unused in config.unused() {
        tracing::warn!("set but not used: {unused}");
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let certs = Certificates::from_config(config)?;
    let builds = Arc::new(Builds::from_config(config).await?);
    // In the background: a local stack's S3 may start after the worker.
    tokio::spawn({
        let (builds, config) = (builds.clone(), config.clone());
        async move { builds.create_bucket(&config).await }
    });
    crate::identity::install();
    if config.restate.identity_keys().next().is_none() {
        tracing::warn!(
            "restate.identity_keys is empty: the worker accepts requests that Restate did not sign; \
             keep its port private or configure the server's request identity key"
        );
    }
    let metrics = crate::metrics::WorkerMetrics::default();
    let services = endpoint(&db, config, &certs, builds, &metrics)?;
    let mut endpoint_stop = stop_rx.clone();
    let serving = tokio::spawn(crate::serve::serve(
        services,
        listener,
        async move {
            let _ = endpoint_stop.wait_for(|s| *s).await;
        },
        // In-flight handlers get this long to finish or suspend.
        Duration::from_secs(10),
        metrics.clone(),
    ));

    let db_for_sweep = db.clone();
    let registered = Arc::new(AtomicBool::new(config.restate.register_as.is_empty()));
    let health = axum::Router::new()
        .route("/health/live", get(|| async { "ok" }))
        .route("/health/ready", get(ready))
        .with_state(Health {
            db,
            registered: registered.clone(),
        })
        .merge(metrics.router());
    let mut health_stop = stop_rx.clone();
    let health_server = tokio::spawn(async move {
        let _ = axum::serve(ctrl_runtime::net::nodelay(health_listener), health)
            .with_graceful_shutdown(async move {
                let _ = health_stop.wait_for(|s| *s).await;
            })
            .await;
    });

    let sweeping = (config.deploy.sweep_interval_seconds > 0).then(|| {
        let sweep = crate::sweep::Sweep::new(
            db_for_sweep.clone(),
            &config.restate.admin_url,
            config.restate.api_key.get(),
            Duration::from_secs(config.deploy.sweep_grace_seconds),
        );
        let interval = Duration::from_secs(config.deploy.sweep_interval_seconds);
        let mut sweep_stop = stop_rx.clone();
        tokio::spawn(async move {
            match sweep {
                Ok(sweep) => {
                    sweep
                        .run_every(interval, async move {
                            let _ = sweep_stop.wait_for(|s| *s).await;
                        })
                        .await
                }
                Err(e) => tracing::error!(error = %e, "the sweep cannot start"),
            }
        })
    });

    if !config.restate.register_as.is_empty() {
        register(
            &config.restate.admin_url,
            config.restate.api_key.get(),
            &config.restate.register_as,
            config.restate.register_attempts,
        )
        .await?;
        registered.store(true, Ordering::SeqCst);
    }
    if let Err(e) = bootstrap_certificates(config, &db_for_sweep).await {
        tracing::error!(
            error = format!("{e:#}"),
            "certificate bootstrap failed; the next start retries"
        );
    }

    shutdown.await;
    tracing::info!("shutting down: finishing running handlers");
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(30), serving).await;
    let _ = health_server.await;
    if let Some(sweeping) = sweeping {
        let _ = sweeping.await;
    }
    Ok(())
}
