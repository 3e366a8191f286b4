//! Serves the Restate endpoint over HTTP/2 cleartext, like the SDK's
//! `HttpServer`, but with `TCP_NODELAY` on every connection: without it,
//! Nagle's algorithm holds back a step's small journal frames until Restate's
//! delayed ACK (~40 ms), which made every `ctx.run` that awaited anything cost
//! 40 ms (a deploy took ~630 ms instead of ~60).

use std::future::Future;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use restate_sdk::prelude::Endpoint;
use tokio::net::TcpListener;

use crate::metrics::{MeasuredBody, WorkerMetrics};

/// Accepts connections until `stop` resolves, then lets open invocations
/// finish (or suspend) for up to `grace`; every invocation attempt is
/// counted and timed in `metrics`.
pub async fn serve(
    endpoint: Endpoint,
    listener: TcpListener,
    stop: impl Future,
    grace: Duration,
    metrics: WorkerMetrics,
) {
    let endpoint = Measured {
        inner: restate_sdk::hyper::HyperEndpoint::new(endpoint),
        metrics,
    };
    let graceful = GracefulShutdown::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, remote) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting a Restate connection failed");
                        continue;
                    }
                };
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::warn!(error = %e, %remote, "cannot set TCP_NODELAY");
                }
                let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), endpoint.clone());
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(%remote, error = ?e, "Restate connection ended");
                    }
                });
            }
            _ = &mut stop => break,
        }
    }
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("Restate connections still open after {grace:?}; closing them");
    }
}

/// The endpoint, measuring each attempt until its response stream ends.
#[derive(Clone)]
struct Measured {
    inner: restate_sdk::hyper::HyperEndpoint,
    metrics: WorkerMetrics,
}

impl Service<hyper::Request<Incoming>> for Measured {
    type Response = hyper::Response<MeasuredBody<restate_sdk::endpoint::ResponseBody>>;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn call(&self, req: hyper::Request<Incoming>) -> Self::Future {
        let guard = self.metrics.attempt(req.uri().path());
        let response = match self.inner.call(req).into_inner() {
            Ok(response) => response,
            Err(never) => match never {},
        };
        std::future::ready(Ok(response.map(|body| MeasuredBody::new(body, guard))))
    }
}
