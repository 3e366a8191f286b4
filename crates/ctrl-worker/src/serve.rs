//! Serves the Restate endpoint over HTTP/2 cleartext, like the SDK's
//! `HttpServer`, but with `TCP_NODELAY` on every connection: without it,
//! Nagle's algorithm holds back a step's small journal frames until Restate's
//! delayed ACK (~40 ms), which made every `ctx.run` that awaited anything cost
//! 40 ms (a deploy took ~630 ms instead of ~60).

use std::future::Future;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use restate_sdk::prelude::Endpoint;
use tokio::net::TcpListener;

/// Accepts connections until `stop` resolves, then lets open invocations
/// finish (or suspend) for up to `grace`.
pub async fn serve(endpoint: Endpoint, listener: TcpListener, stop: impl Future, grace: Duration) {
    let endpoint = restate_sdk::hyper::HyperEndpoint::new(endpoint);
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
