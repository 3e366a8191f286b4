//! Uploaded build contexts in S3 (or any S3-compatible store): presigned
//! PUT URLs bound to one key, one exact size and one content type; reads
//! bounded by the same size limit. Keys are scoped by workspace and app
//! (`contexts/{workspace}/{app}/{random}.tar.gz`), so a deployment can only
//! build an upload made for its own app.

use std::fmt;
use std::time::{Duration, SystemTime};

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};

/// The content type uploads must declare.
pub const CONTENT_TYPE: &str = "application/gzip";

/// Where contexts are stored: the `[build_contexts]` section of ctrl-api's
/// and ctrl-worker's configuration (one shape, read by both).
#[derive(Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// S3 endpoint URL; empty = AWS's for the region.
    pub endpoint: String,
    /// Region (any value for most S3-compatible servers).
    pub region: String,
    /// Bucket.
    pub bucket: String,
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key; never logged.
    pub secret_access_key: String,
    /// Path-style URLs (`endpoint/bucket/key`), needed by most self-hosted stores.
    pub force_path_style: bool,
    /// Largest upload accepted, in bytes.
    pub max_upload_bytes: u64,
    /// How long an upload URL works.
    pub upload_url_ttl_seconds: u64,
    /// Bound on each S3 request.
    pub request_timeout_seconds: u64,
    /// Create the bucket at start-up if it does not exist (local stacks).
    pub create_bucket: bool,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            region: "us-east-1".into(),
            bucket: String::new(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
            force_path_style: false,
            max_upload_bytes: 512 << 20,
            upload_url_ttl_seconds: 900,
            request_timeout_seconds: 30,
            create_bucket: false,
        }
    }
}

impl StoreConfig {
    /// Whether uploads are configured at all (a bucket is named).
    pub fn enabled(&self) -> bool {
        !self.bucket.is_empty()
    }

    /// What is wrong with the section, as (field, problem) pairs naming
    /// `build_contexts.*` fields; nothing when it is not enabled.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut p = Vec::new();
        if !self.enabled() {
            return p;
        }
        let scheme_ok = ["http://", "https://"]
            .iter()
            .any(|s| self.endpoint.starts_with(s));
        if !self.endpoint.is_empty() && !scheme_ok {
            p.push(("build_contexts.endpoint", "must be an http(s) URL".into()));
        }
        if self.access_key_id.is_empty() || self.secret_access_key.is_empty() {
            p.push((
                "build_contexts.access_key_id",
                "access_key_id and secret_access_key are required".into(),
            ));
        }
        if !(1024..=(50u64 << 30)).contains(&self.max_upload_bytes) {
            p.push((
                "build_contexts.max_upload_bytes",
                "must be between 1 KiB and 50 GiB".into(),
            ));
        }
        if !(10..=7 * 24 * 3600).contains(&self.upload_url_ttl_seconds) {
            p.push((
                "build_contexts.upload_url_ttl_seconds",
                "must be between 10 s and 7 days".into(),
            ));
        }
        if !(1..=600).contains(&self.request_timeout_seconds) {
            p.push((
                "build_contexts.request_timeout_seconds",
                "must be between 1 and 600".into(),
            ));
        }
        p
    }
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreConfig")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("force_path_style", &self.force_path_style)
            .field("max_upload_bytes", &self.max_upload_bytes)
            .finish_non_exhaustive()
    }
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The request itself is wrong (size over the limit, foreign key).
    #[error("{0}")]
    Invalid(String),
    /// The object is not there (never uploaded, or expired and removed).
    #[error("the build context {key} was not uploaded (or has been removed)")]
    Missing {
        /// Its key.
        key: String,
    },
    /// The store failed or could not be reached.
    #[error("build context store: {0}")]
    Unavailable(String),
}

/// The store of uploaded contexts.
#[derive(Debug, Clone)]
pub struct ContextStore {
    client: aws_sdk_s3::Client,
    bucket: String,
    max_upload_bytes: u64,
    upload_url_ttl: Duration,
}

/// A presigned upload.
#[derive(Debug, Clone)]
pub struct Upload {
    /// PUT here.
    pub url: String,
    /// The object's key.
    pub key: String,
    /// Unix ms after which the URL is refused.
    pub expires_at_ms: i64,
}

impl ContextStore {
    /// A store over `config`.
    pub fn new(config: &StoreConfig) -> Self {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let credentials = Credentials::new(
            &config.access_key_id,
            &config.secret_access_key,
            None,
            None,
            "ctrl-config",
        );
        let timeout = Duration::from_secs(config.request_timeout_seconds);
        let mut builder = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .credentials_provider(credentials)
            .http_client(http)
            .force_path_style(config.force_path_style)
            .timeout_config(
                aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                    .connect_timeout(timeout)
                    .operation_attempt_timeout(timeout)
                    .build(),
            );
        if !config.endpoint.is_empty() {
            builder = builder.endpoint_url(&config.endpoint);
        }
        Self {
            client: aws_sdk_s3::Client::from_conf(builder.build()),
            bucket: config.bucket.clone(),
            max_upload_bytes: config.max_upload_bytes,
            upload_url_ttl: Duration::from_secs(config.upload_url_ttl_seconds),
        }
    }

    /// The largest upload accepted.
    pub fn max_upload_bytes(&self) -> u64 {
        self.max_upload_bytes
    }

    /// The key prefix of an app's uploads.
    pub fn prefix(workspace_id: &str, app_id: &str) -> String {
        format!("contexts/{workspace_id}/{app_id}/")
    }

    /// A presigned PUT for a new upload of exactly `size` bytes for the app.
    /// `nonce` makes the key unique (random, from the caller).
    pub async fn presign_upload(
        &self,
        workspace_id: &str,
        app_id: &str,
        nonce: &str,
        size: u64,
        now: SystemTime,
    ) -> Result<Upload, StoreError> {
        if size == 0 || size > self.max_upload_bytes {
            return Err(StoreError::Invalid(format!(
                "size_bytes must be between 1 and {} ({}), got {size}",
                self.max_upload_bytes,
                crate::context::human_bytes(self.max_upload_bytes)
            )));
        }
        let key = format!("{}{nonce}.tar.gz", Self::prefix(workspace_id, app_id));
        let presigning = PresigningConfig::builder()
            .start_time(now)
            .expires_in(self.upload_url_ttl)
            .build()
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        let request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .content_type(CONTENT_TYPE)
            .content_length(i64::try_from(size).unwrap_or(i64::MAX))
            .presigned(presigning)
            .await
            .map_err(|e| StoreError::Unavailable(crate::error_chain(&e)))?;
        let expires = now + self.upload_url_ttl;
        Ok(Upload {
            url: request.uri().to_owned(),
            key,
            expires_at_ms: expires
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        })
    }

    /// Checks that `key` is one of the app's uploads and returns its size.
    pub async fn check(
        &self,
        workspace_id: &str,
        app_id: &str,
        key: &str,
    ) -> Result<u64, StoreError> {
        let prefix = Self::prefix(workspace_id, app_id);
        let rest = key.strip_prefix(&prefix).unwrap_or_default();
        if rest.is_empty() || !rest.ends_with(".tar.gz") || rest.contains('/') || key.len() > 512 {
            return Err(StoreError::Invalid(format!(
                "build_context_path {key:?} is not an upload of this app (get one from BuildService.GenerateUploadURL)"
            )));
        }
        let head = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await;
        match head {
            Ok(h) => {
                let size = u64::try_from(h.content_length().unwrap_or(0)).unwrap_or(0);
                if size > self.max_upload_bytes {
                    return Err(StoreError::Invalid(format!(
                        "the build context is {} but at most {} is accepted",
                        crate::context::human_bytes(size),
                        crate::context::human_bytes(self.max_upload_bytes)
                    )));
                }
                Ok(size)
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => {
                Err(StoreError::Missing { key: key.into() })
            }
            Err(e) => Err(StoreError::Unavailable(crate::error_chain(&e))),
        }
    }

    /// Downloads an upload (at most the upload limit).
    pub async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        let object = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| {
                if e.as_service_error().is_some_and(|s| s.is_no_such_key()) {
                    StoreError::Missing { key: key.into() }
                } else {
                    StoreError::Unavailable(crate::error_chain(&e))
                }
            })?;
        let mut body = object.body;
        let mut data = Vec::new();
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?
        {
            data.extend_from_slice(&chunk);
            if data.len() as u64 > self.max_upload_bytes {
                return Err(StoreError::Invalid(format!(
                    "the build context is larger than {}",
                    crate::context::human_bytes(self.max_upload_bytes)
                )));
            }
        }
        Ok(data)
    }

    /// The key of a build's prepared context, shared with a remote builder.
    pub fn prepared_key(build_id: &str) -> String {
        format!("prepared/{build_id}.tar.gz")
    }

    /// Stores a build's prepared context (a tar.gz) for a remote builder and
    /// returns a presigned GET of it valid for `ttl`. Idempotent per build.
    pub async fn share_prepared(
        &self,
        build_id: &str,
        tar_gz: Vec<u8>,
        ttl: Duration,
    ) -> Result<String, StoreError> {
        let key = Self::prepared_key(build_id);
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .content_type(CONTENT_TYPE)
            .body(tar_gz.into())
            .send()
            .await
            .map_err(|e| StoreError::Unavailable(crate::error_chain(&e)))?;
        let presigning =
            PresigningConfig::expires_in(ttl).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&key)
            .presigned(presigning)
            .await
            .map_err(|e| StoreError::Unavailable(crate::error_chain(&e)))?;
        Ok(request.uri().to_owned())
    }

    /// Deletes a build's prepared context (done with it; a missing one is
    /// fine).
    pub async fn delete_prepared(&self, build_id: &str) -> Result<(), StoreError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(Self::prepared_key(build_id))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| StoreError::Unavailable(crate::error_chain(&e)))
    }

    /// Creates the bucket if it does not exist (the local stack's start).
    pub async fn ensure_bucket(&self) -> Result<(), StoreError> {
        match self
            .client
            .create_bucket()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error().is_some_and(|s| {
                    s.is_bucket_already_owned_by_you() || s.is_bucket_already_exists()
                }) =>
            {
                Ok(())
            }
            Err(e) => Err(StoreError::Unavailable(crate::error_chain(&e))),
        }
    }
}
