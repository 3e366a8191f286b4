//! A real S3 API on a loopback port: s3s-fs over a fresh directory.
//!
//! Unlike moto, s3s-fs checks SigV4 signatures, so a wrong secret is refused
//! (`SignatureDoesNotMatch`) and presigned URLs are really verified. Objects
//! live as plain files in a throwaway directory. Like the other handles,
//! the server runs as a supervised child and is killed on drop (see
//! [`crate::process`]).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use tempfile::TempDir;

use crate::acme::{fresh_log, retry_on_port_clash};
use crate::process::{Supervised, wait_ready};
use crate::{Error, free_port, http_client, paths, reaper};

/// How long the server may take to become ready (it takes ~0.05 s).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long one S3 call from [`S3Server::client`] may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The region clients sign for (s3s-fs accepts any).
pub const REGION: &str = "us-east-1";

/// `s3s-fs` serving S3 from a fresh directory on a loopback port, with
/// static credentials; killed on drop.
#[derive(Debug)]
pub struct S3Server {
    process: Supervised,
    port: u16,
    access_key: String,
    secret_key: String,
    // Declared last: the directory is removed after the process is killed.
    _scratch: Option<TempDir>,
}

impl S3Server {
    /// Starts s3s-fs (`cargo xtask deps` installs it; see
    /// [`paths::s3s_fs_bin`]) on a free port with fresh credentials and an
    /// empty data directory, and waits until it answers HTTP.
    pub async fn start() -> Result<Self, Error> {
        let access_key = format!("TESTKIT{:013X}", rand::random::<u64>() >> 12);
        let secret_key = format!("{:032x}", rand::random::<u128>());
        Self::start_in(None, None, &access_key, &secret_key).await
    }

    /// [`S3Server::start`] with the data kept in `dir` (not removed on
    /// drop), on `port` when given, with these credentials (the dev stack's).
    pub async fn start_in(
        dir: Option<&Path>,
        fixed_port: Option<u16>,
        access_key: &str,
        secret_key: &str,
    ) -> Result<Self, Error> {
        let binary = paths::s3s_fs_bin()?;
        let (dir, scratch) = reaper::instance_dir(dir, "s3-")?;
        let data = dir.join("data");
        std::fs::create_dir_all(&data)
            .map_err(|e| Error::io(format!("create {}", data.display()), e))?;
        let (access_key, secret_key) = (access_key.to_owned(), secret_key.to_owned());
        let client = http_client();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = match fixed_port {
                Some(port) => port,
                None => free_port()?,
            };
            let mut cmd = Command::new(&binary);
            cmd.args(["--host", "127.0.0.1", "--port"])
                .arg(port.to_string())
                .arg("--access-key")
                .arg(&access_key)
                .arg("--secret-key")
                .arg(&secret_key)
                .arg(&data)
                .current_dir(&dir);
            let log = fresh_log(&dir, "s3s-fs.log")?;
            let mut process =
                Supervised::spawn("s3s-fs", cmd, &log, Some(&dir.join("s3s-fs.pid")))?;
            let url = format!("http://127.0.0.1:{port}/");
            let ready = wait_ready(&mut process, STARTUP_TIMEOUT, || async {
                // Any HTTP answer will do: an unsigned request is refused.
                client
                    .get(&url)
                    .timeout(Duration::from_millis(500))
                    .send()
                    .await
                    .is_ok()
            })
            .await;
            match ready {
                Ok(()) => {
                    return Ok(Self {
                        process,
                        port,
                        access_key,
                        secret_key,
                        _scratch: scratch,
                    });
                }
                Err(e) if fixed_port.is_none() && retry_on_port_clash("s3s-fs", attempt, &e) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The endpoint for S3 clients, e.g. `http://127.0.0.1:8014` (use
    /// path-style addressing).
    pub fn endpoint_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The access key the server accepts.
    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    /// The secret key the server accepts.
    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    /// The server's pid.
    pub fn pid(&self) -> i32 {
        self.process.id().pid
    }

    /// The server's log.
    pub fn log_path(&self) -> &Path {
        self.process.log_path()
    }

    /// An SDK client for this server with its credentials.
    pub fn client(&self) -> aws_sdk_s3::Client {
        self.client_with(&self.access_key, &self.secret_key)
    }

    /// An SDK client for this server signing with the given credentials
    /// (e.g. a wrong secret, to see it refused).
    pub fn client_with(&self, access_key: &str, secret_key: &str) -> aws_sdk_s3::Client {
        // rustls on ring, never the SDK's default aws-lc client: one crypto stack.
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let credentials = Credentials::new(access_key, secret_key, None, None, "ctrl-testkit");
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .credentials_provider(credentials)
            .http_client(http)
            .endpoint_url(self.endpoint_url())
            .force_path_style(true)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(2))
                    .operation_attempt_timeout(REQUEST_TIMEOUT)
                    .operation_timeout(REQUEST_TIMEOUT * 3)
                    .build(),
            )
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// Creates the bucket `name` (a signed CreateBucket).
    pub async fn create_bucket(&self, name: &str) -> Result<(), Error> {
        self.client()
            .create_bucket()
            .bucket(name)
            .send()
            .await
            .map_err(|e| {
                Error::request(
                    format!("create the S3 bucket {name}"),
                    aws_sdk_s3::error::DisplayErrorContext(e),
                )
            })?;
        Ok(())
    }
}
