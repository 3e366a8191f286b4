//! Uploading a packed build context to the presigned URL ctrl-api hands out
//! (BuildService.GenerateUploadURL): one HTTP PUT of exactly the packed
//! bytes with `Content-Type: application/gzip` and their
//! `Content-Length` (both are signed into the URL), streamed in
//! [`CHUNK`]-sized pieces so a progress bar can follow what was sent.
//!
//! HTTPS is rustls on ring with the system's roots, through hyper — not
//! reqwest, whose rustls would need a process-wide crypto provider (the
//! same choice as ctrl-build's registry client). The URL is never printed:
//! its query string is a signature.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use ctrl_build::context::human_bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Limited, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use indicatif::ProgressBar;

use crate::output::clip;

/// Size of the pieces the body is sent in.
pub const CHUNK: usize = 64 << 10;

/// How long an upload may take, start to answer.
pub const TIMEOUT: Duration = Duration::from_secs(600);

/// Longest refusal quoted in an error, in characters.
const MAX_REASON: usize = 300;

/// Most bytes of an answer's body read (an S3 error document is small).
const MAX_ANSWER: usize = 64 << 10;

/// PUTs `data` to `url` within `timeout`; `sent` advances by each chunk
/// handed to the connection (a hidden bar still counts). A non-2xx answer
/// is an error quoting its status and the S3 error's `Code` and `Message`.
pub async fn put(url: &str, data: Bytes, sent: &ProgressBar, timeout: Duration) -> Result<()> {
    let uri: http::Uri = url
        .parse()
        .map_err(|_| anyhow!("the upload URL ctrl-api gave is not a valid URL"))?;
    let host = uri.host().unwrap_or("the store").to_owned();
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => {
            return Err(anyhow!(
                "the upload URL ctrl-api gave is neither http nor https"
            ));
        }
    };
    let total = data.len();
    let bar = sent.clone();
    let chunks = (0..total).step_by(CHUNK).map(move |start| {
        let chunk = data.slice(start..(start + CHUNK).min(total));
        bar.inc(chunk.len() as u64);
        Ok::<_, Infallible>(Frame::data(chunk))
    });
    let body = StreamBody::new(futures::stream::iter(chunks).boxed());
    let req = http::Request::put(uri)
        .header(http::header::CONTENT_TYPE, "application/gzip")
        .header(http::header::CONTENT_LENGTH, total)
        .body(body)
        .context("building the upload request")?;

    let exchange = async {
        let mut connector = HttpConnector::new();
        connector.enforce_http(false);
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(10)));
        let answer = if https {
            let tls = hyper_rustls::HttpsConnectorBuilder::new()
                .with_provider_and_native_roots(Arc::new(rustls::crypto::ring::default_provider()))
                .context("loading the system's TLS root certificates")?
                .https_only()
                .enable_http1()
                .wrap_connector(connector);
            Client::builder(TokioExecutor::new())
                .build(tls)
                .request(req)
                .await
        } else {
            Client::builder(TokioExecutor::new())
                .build(connector)
                .request(req)
                .await
        };
        let answer = answer.with_context(|| format!("uploading the build context to {host}"))?;
        let status = answer.status();
        // The body matters only for a refusal; a broken one is no reason.
        let body = Limited::new(answer.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        anyhow::Ok((status, body))
    };
    let (status, body) = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| {
            anyhow!(
                "the upload to {host} did not finish within {} ({} of {} sent); try again, or leave \
                 large files out with .dockerignore",
                wait(timeout),
                human_bytes(sent.position().min(total as u64)),
                human_bytes(total as u64)
            )
        })??;
    if status.is_success() {
        return Ok(());
    }
    let reason = refusal(&body);
    Err(anyhow!(
        "the upload to {host} was refused: {status}{}",
        if reason.is_empty() {
            String::new()
        } else {
            format!(": {reason}")
        }
    ))
}

/// "10 minutes", "30 s".
fn wait(d: Duration) -> String {
    match d.as_secs() {
        s if s >= 120 && s % 60 == 0 => format!("{} minutes", s / 60),
        s if s >= 1 => format!("{s} s"),
        _ => format!("{} ms", d.as_millis()),
    }
}

/// What a refusal's body says: an S3 error document's `Code: Message`, or
/// else the body itself, whitespace collapsed; at most [`MAX_REASON`]
/// characters.
pub fn refusal(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let element = |name: &str| -> Option<String> {
        let open = format!("<{name}>");
        let start = text.find(&open)? + open.len();
        let end = start + text[start..].find(&format!("</{name}>"))?;
        Some(unescape(text[start..end].trim())).filter(|v| !v.is_empty())
    };
    let reason = match (element("Code"), element("Message")) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(one), None) | (None, Some(one)) => one,
        (None, None) => text.split_whitespace().collect::<Vec<_>>().join(" "),
    };
    clip(reason.trim(), MAX_REASON)
}

/// XML's five predefined entities.
fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use axum::body::Bytes as AxumBytes;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::put as put_route;

    use super::*;

    /// What the test server saw of one request.
    #[derive(Debug, Clone)]
    struct Seen {
        path_and_query: String,
        headers: HeaderMap,
        body: Vec<u8>,
    }

    /// A loopback server answering every PUT with `status` and `body`,
    /// recording what it got.
    async fn server(status: StatusCode, body: &'static str) -> (String, Arc<Mutex<Vec<Seen>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let app = axum::Router::new().route(
            "/{*key}",
            put_route(
                move |uri: axum::http::Uri, headers: HeaderMap, bytes: AxumBytes| {
                    let record = record.clone();
                    async move {
                        record.lock().expect("lock").push(Seen {
                            path_and_query: uri
                                .path_and_query()
                                .map(ToString::to_string)
                                .unwrap_or_default(),
                            headers,
                            body: bytes.to_vec(),
                        });
                        (status, body)
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(ctrl_runtime::net::nodelay(listener), app).await;
        });
        (format!("http://{addr}"), seen)
    }

    /// Bytes that are not all alike, over several chunks.
    fn payload(len: usize) -> Bytes {
        (0..len)
            .map(|i| u8::try_from((i * 7 + i / 251) % 256).unwrap_or(0))
            .collect::<Vec<u8>>()
            .into()
    }

    #[tokio::test]
    async fn an_upload_sends_exactly_the_bytes_with_their_type_and_length() {
        let (base, seen) = server(StatusCode::OK, "").await;
        let data = payload(3 * CHUNK + 123);
        let bar = ProgressBar::hidden();
        let url = format!("{base}/bucket/ws/app/ctx.tar.gz?X-Amz-Signature=abc&X-Amz-Expires=900");
        put(&url, data.clone(), &bar, Duration::from_secs(10))
            .await
            .expect("upload");

        let seen = seen.lock().expect("lock").clone();
        assert_eq!(seen.len(), 1, "one request");
        let got = &seen[0];
        assert_eq!(
            got.path_and_query, "/bucket/ws/app/ctx.tar.gz?X-Amz-Signature=abc&X-Amz-Expires=900",
            "the presigned query is sent as given"
        );
        assert_eq!(got.body, data.as_ref(), "exactly the packed bytes");
        assert_eq!(got.headers["content-type"], "application/gzip");
        assert_eq!(
            got.headers["content-length"],
            data.len().to_string().as_str()
        );
        assert!(
            !got.headers.contains_key("transfer-encoding"),
            "a signed length, not chunked: {:?}",
            got.headers
        );
        assert_eq!(
            bar.position(),
            data.len() as u64,
            "the bar counts every byte"
        );
    }

    #[tokio::test]
    async fn a_refused_upload_quotes_the_status_and_the_s3_error() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<Error>
  <Code>SignatureDoesNotMatch</Code>
  <Message>The request signature we calculated does not match the signature you provided. Check your key &amp; signing method.</Message>
  <RequestId>4442587FB7D0A2F9</RequestId>
</Error>"#;
        let (base, _) = server(StatusCode::FORBIDDEN, xml).await;
        let err = put(
            &format!("{base}/bucket/key?sig=x"),
            payload(1000),
            &ProgressBar::hidden(),
            Duration::from_secs(10),
        )
        .await
        .expect_err("a 403 is an error");
        let text = format!("{err:#}");
        assert!(text.contains("403 Forbidden"), "{text}");
        assert!(text.contains("SignatureDoesNotMatch: The request signature we calculated does not match the signature you provided. Check your key & signing method."), "{text}");
        assert!(!text.contains("RequestId"), "{text}");
        assert!(
            !text.contains("sig=x"),
            "the signed URL is never printed: {text}"
        );
    }

    #[tokio::test]
    async fn an_upload_that_takes_too_long_says_so() {
        // Accepts connections and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let hold = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                open.push(conn);
            }
        });
        let err = put(
            &format!("http://{addr}/bucket/key"),
            payload(10),
            &ProgressBar::hidden(),
            Duration::from_millis(300),
        )
        .await
        .expect_err("no answer is an error");
        let text = format!("{err:#}");
        assert!(text.contains("did not finish within 300 ms"), "{text}");
        assert!(text.contains("of 10 B sent"), "{text}");
        hold.abort();
    }

    #[test]
    fn refusals_are_the_s3_code_and_message_or_the_trimmed_body() {
        assert_eq!(
            refusal(
                b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"
            ),
            "AccessDenied: Request has expired"
        );
        assert_eq!(
            refusal(b"<Error><Code>EntityTooLarge</Code></Error>"),
            "EntityTooLarge"
        );
        assert_eq!(refusal(b"  upstream\n  timed out \n"), "upstream timed out");
        assert_eq!(refusal(b""), "");
        let long = format!(
            "<Error><Code>X</Code><Message>{}</Message></Error>",
            "m".repeat(1000)
        );
        let got = refusal(long.as_bytes());
        assert_eq!(got.chars().count(), MAX_REASON);
        assert!(got.starts_with("X: mmm") && got.ends_with('…'), "{got}");
    }
}
