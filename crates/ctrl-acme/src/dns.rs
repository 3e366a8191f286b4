//! DNS providers that publish DNS-01 TXT records, behind [`DnsProvider`];
//! [`Route53`] is the implementation (aws-sdk-route53 on rustls/ring).

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_route53::config::{Credentials, Region, timeout::TimeoutConfig};
use aws_sdk_route53::types::{
    Change, ChangeAction, ChangeBatch, ChangeStatus, ResourceRecord, ResourceRecordSet, RrType,
};
use zeroize::Zeroizing;

use crate::AcmeError;

/// The TTL of challenge records: short, they live for minutes.
pub const CHALLENGE_TTL: i64 = 60;

/// Publishes and removes TXT records.
#[async_trait]
pub trait DnsProvider: Send + Sync + fmt::Debug {
    /// Creates or replaces the TXT record `name` (no trailing dot) with the
    /// one `value`; returns a change id to wait on with [`Self::in_sync`].
    async fn upsert_txt(&self, name: &str, value: &str) -> Result<String, AcmeError>;
    /// Whether the change is live on every authoritative server.
    async fn in_sync(&self, change_id: &str) -> Result<bool, AcmeError>;
    /// Removes the TXT record `name` with `value`; a record that is already
    /// gone is not an error.
    async fn delete_txt(&self, name: &str, value: &str) -> Result<(), AcmeError>;
}

/// Publishes the TXT record `name` = `value` and waits until the provider
/// says it is live everywhere, polling every `poll` for up to `patience`
/// (Route53 answers PENDING for a while after a change).
pub async fn publish(
    dns: &dyn DnsProvider,
    name: &str,
    value: &str,
    patience: Duration,
    poll: Duration,
) -> Result<(), AcmeError> {
    let change = dns.upsert_txt(name, value).await?;
    let deadline = tokio::time::Instant::now() + patience;
    while !dns.in_sync(&change).await? {
        if tokio::time::Instant::now() >= deadline {
            return Err(AcmeError::Transient(format!(
                "the TXT record {name} is not in sync after {patience:?}"
            )));
        }
        tokio::time::sleep(poll).await;
    }
    Ok(())
}

/// Route53 credentials and zone.
#[derive(Clone)]
pub struct Route53Config {
    /// IAM access key id.
    pub access_key_id: String,
    /// IAM secret (never logged).
    pub secret_access_key: Zeroizing<String>,
    /// AWS region of the API (Route53 is global; `us-east-1` is usual).
    pub region: String,
    /// The hosted zone to write to; empty = find the zone by name.
    pub hosted_zone_id: String,
    /// Another endpoint (moto in tests); empty = AWS.
    pub endpoint: String,
    /// Bounds every API call.
    pub timeout: Duration,
}

impl fmt::Debug for Route53Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Route53Config")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("region", &self.region)
            .field("hosted_zone_id", &self.hosted_zone_id)
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

/// The Route53 provider.
#[derive(Debug, Clone)]
pub struct Route53 {
    client: aws_sdk_route53::Client,
    hosted_zone_id: String,
}

impl Route53 {
    /// A client with static credentials; the SDK's standard retry (3
    /// attempts) and `config.timeout` per operation.
    pub fn new(config: &Route53Config) -> Self {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let credentials = Credentials::new(
            &config.access_key_id,
            config.secret_access_key.as_str(),
            None,
            None,
            "ctrl-config",
        );
        let mut builder = aws_sdk_route53::Config::builder()
            .behavior_version(aws_sdk_route53::config::BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .credentials_provider(credentials)
            .http_client(http)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5).min(config.timeout))
                    .operation_attempt_timeout(config.timeout)
                    .operation_timeout(config.timeout * 3)
                    .build(),
            );
        if !config.endpoint.is_empty() {
            builder = builder.endpoint_url(&config.endpoint);
        }
        Self {
            client: aws_sdk_route53::Client::from_conf(builder.build()),
            hosted_zone_id: config.hosted_zone_id.clone(),
        }
    }

    /// The configured zone, or the hosted zone whose name is the longest
    /// suffix of `name`.
    async fn zone_for(&self, name: &str) -> Result<String, AcmeError> {
        if !self.hosted_zone_id.is_empty() {
            return Ok(self.hosted_zone_id.clone());
        }
        let name = name.trim_end_matches('.');
        let mut candidate = name;
        loop {
            let wanted = format!("{candidate}.");
            let found = self
                .client
                .list_hosted_zones_by_name()
                .dns_name(&wanted)
                .max_items(1)
                .send()
                .await
                .map_err(|e| route53_error("ListHostedZonesByName", &e))?;
            if let Some(zone) = found
                .hosted_zones()
                .iter()
                .find(|z| z.name().eq_ignore_ascii_case(&wanted))
            {
                return Ok(zone.id().trim_start_matches("/hostedzone/").to_owned());
            }
            match candidate.split_once('.') {
                Some((_, parent)) if parent.contains('.') => candidate = parent,
                _ => {
                    return Err(AcmeError::Refused(format!(
                        "no Route53 hosted zone contains {name}; set acme.route53.hosted_zone_id"
                    )));
                }
            }
        }
    }

    async fn change(
        &self,
        action: ChangeAction,
        name: &str,
        value: &str,
    ) -> Result<String, AcmeError> {
        let zone = self.zone_for(name).await?;
        let record = ResourceRecordSet::builder()
            .name(format!("{}.", name.trim_end_matches('.')))
            .r#type(RrType::Txt)
            .ttl(CHALLENGE_TTL)
            .resource_records(
                ResourceRecord::builder()
                    .value(format!("\"{value}\""))
                    .build()
                    .map_err(|e| AcmeError::Config(e.to_string()))?,
            )
            .build()
            .map_err(|e| AcmeError::Config(e.to_string()))?;
        let batch = ChangeBatch::builder()
            .comment("ctrl ACME DNS-01 challenge")
            .changes(
                Change::builder()
                    .action(action)
                    .resource_record_set(record)
                    .build()
                    .map_err(|e| AcmeError::Config(e.to_string()))?,
            )
            .build()
            .map_err(|e| AcmeError::Config(e.to_string()))?;
        let out = self
            .client
            .change_resource_record_sets()
            .hosted_zone_id(&zone)
            .change_batch(batch)
            .send()
            .await
            .map_err(|e| route53_error("ChangeResourceRecordSets", &e))?;
        Ok(out
            .change_info()
            .map(|c| c.id().trim_start_matches("/change/").to_owned())
            .unwrap_or_default())
    }
}

#[async_trait]
impl DnsProvider for Route53 {
    async fn upsert_txt(&self, name: &str, value: &str) -> Result<String, AcmeError> {
        self.change(ChangeAction::Upsert, name, value).await
    }

    async fn in_sync(&self, change_id: &str) -> Result<bool, AcmeError> {
        if change_id.is_empty() {
            return Ok(true);
        }
        let out = self
            .client
            .get_change()
            .id(change_id)
            .send()
            .await
            .map_err(|e| route53_error("GetChange", &e))?;
        Ok(out
            .change_info()
            .is_some_and(|c| *c.status() == ChangeStatus::Insync))
    }

    async fn delete_txt(&self, name: &str, value: &str) -> Result<(), AcmeError> {
        match self.change(ChangeAction::Delete, name, value).await {
            Ok(_) => Ok(()),
            // AWS answers InvalidChangeBatch ("… not found"), moto InvalidInput.
            Err(AcmeError::Refused(m))
                if m.contains("not found")
                    || m.contains("InvalidChangeBatch")
                    || m.contains("InvalidInput") =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

/// An SDK error as ours: throttling, timeouts and 5xx are transient; the
/// rest (bad credentials, bad zone, bad change) is refused with AWS's code
/// and message — never the credentials.
fn route53_error<E, R>(call: &str, e: &aws_sdk_route53::error::SdkError<E, R>) -> AcmeError
where
    E: aws_sdk_route53::error::ProvideErrorMetadata + fmt::Debug,
    R: fmt::Debug,
{
    use aws_sdk_route53::error::SdkError;
    match e {
        SdkError::ServiceError(s) => {
            let err = s.err();
            let code = err.code().unwrap_or("Unknown");
            let message = err.message().unwrap_or("");
            let text = format!("Route53 {call}: {code}: {message}");
            if code.contains("Throttling") || code == "PriorRequestNotComplete" {
                AcmeError::Transient(text)
            } else {
                AcmeError::Refused(text)
            }
        }
        SdkError::TimeoutError(_) => AcmeError::Transient(format!("Route53 {call}: timed out")),
        SdkError::DispatchFailure(d) => {
            AcmeError::Transient(format!("Route53 {call}: cannot reach the API: {d:?}"))
        }
        SdkError::ResponseError(_) => {
            AcmeError::Transient(format!("Route53 {call}: unreadable response"))
        }
        other => AcmeError::Transient(format!("Route53 {call}: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A provider whose changes are PENDING for `pending_polls` polls.
    #[derive(Debug, Default)]
    struct Slow {
        pending_polls: u32,
        polls: Mutex<u32>,
        records: Mutex<Vec<(String, String)>>,
    }

    #[async_trait]
    impl DnsProvider for Slow {
        async fn upsert_txt(&self, name: &str, value: &str) -> Result<String, AcmeError> {
            self.records
                .lock()
                .unwrap()
                .push((name.to_owned(), value.to_owned()));
            Ok("C123".into())
        }
        async fn in_sync(&self, change_id: &str) -> Result<bool, AcmeError> {
            assert_eq!(change_id, "C123");
            let mut polls = self.polls.lock().unwrap();
            *polls += 1;
            Ok(*polls > self.pending_polls)
        }
        async fn delete_txt(&self, _: &str, _: &str) -> Result<(), AcmeError> {
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn publishing_waits_until_the_change_is_in_sync() {
        let dns = Slow {
            pending_polls: 3,
            ..Slow::default()
        };
        publish(
            &dns,
            "_acme-challenge.example.com",
            "v",
            Duration::from_secs(60),
            Duration::from_secs(2),
        )
        .await
        .expect("in sync");
        assert_eq!(*dns.polls.lock().unwrap(), 4);
        assert_eq!(
            dns.records.lock().unwrap().as_slice(),
            [("_acme-challenge.example.com".to_owned(), "v".to_owned())]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_that_never_syncs_is_a_transient_error_after_the_patience() {
        let dns = Slow {
            pending_polls: u32::MAX,
            ..Slow::default()
        };
        let err = publish(
            &dns,
            "_acme-challenge.example.com",
            "v",
            Duration::from_secs(10),
            Duration::from_secs(2),
        )
        .await
        .expect_err("never in sync");
        assert!(
            matches!(&err, AcmeError::Transient(m) if m.contains("not in sync")),
            "{err:?}"
        );
        assert!(*dns.polls.lock().unwrap() <= 7);
    }
}
