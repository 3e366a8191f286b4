//! Listeners every server uses: accepted connections get `TCP_NODELAY`.
//!
//! Without it, Nagle's algorithm holds back the second small write of a
//! response (an HTTP/2 DATA or trailers frame after the HEADERS) until the
//! peer's delayed ACK, about 40 ms on Linux: a 3 ms RPC took 45 ms for a stock
//! gRPC client. Every `axum::serve` in the workspace takes [`nodelay`]'s
//! listener (a test checks the sources), and outbound clients set it too
//! (reqwest and tonic by default, sqlx since 0.9.1).

use axum::serve::{ListenerExt, TapIo};
use tokio::net::{TcpListener, TcpStream};

/// A TCP listener whose accepted connections have `TCP_NODELAY` set.
pub type NoDelayListener = TapIo<TcpListener, fn(&mut TcpStream)>;

/// Wraps `listener` so that every accepted connection has `TCP_NODELAY`.
pub fn nodelay(listener: TcpListener) -> NoDelayListener {
    listener.tap_io(set_nodelay as fn(&mut TcpStream))
}

fn set_nodelay(stream: &mut TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::warn!(error = %e, "cannot set TCP_NODELAY on an accepted connection");
    }
}

#[cfg(test)]
mod tests {
    use axum::serve::Listener;

    use super::*;

    #[tokio::test]
    async fn accepted_connections_have_nodelay() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let mut listener = nodelay(listener);
        let _client = TcpStream::connect(address).await.unwrap();
        let (accepted, _) = listener.accept().await;
        assert!(accepted.nodelay().unwrap());

        // Without the wrapper, Linux leaves Nagle on: the test can tell.
        let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = TcpStream::connect(plain.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = plain.accept().await.unwrap();
        assert!(!accepted.nodelay().unwrap());
    }

    /// Every `axum::serve(` call in the workspace's code serves a
    /// [`nodelay`] listener (a benchmark's baseline may say
    /// `// nodelay: off on purpose` on the line before).
    #[test]
    fn every_server_in_the_workspace_uses_nodelay() {
        let crates = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut stack = vec![crates];
        let mut calls = 0;
        let mut plain = Vec::new();
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "rs")
                    && !path.ends_with("ctrl-runtime/src/net.rs")
                {
                    let text = std::fs::read_to_string(&path).unwrap();
                    for (i, _) in text.match_indices("axum::serve(") {
                        let call = &text[i..text[i..].find(';').map_or(text.len(), |end| i + end)];
                        calls += 1;
                        let before = text[..i].lines().next_back().unwrap_or_default();
                        let exempt = text[..i].lines().rev().nth(1).unwrap_or_default();
                        let on_purpose = [before, exempt]
                            .iter()
                            .any(|l| l.contains("// nodelay: off on purpose"));
                        if !call.contains("nodelay(") && !on_purpose {
                            plain.push(format!(
                                "{}: {}",
                                path.display(),
                                call.lines().next().unwrap_or(call)
                            ));
                        }
                    }
                }
            }
        }
        assert!(calls > 3, "the scan found only {calls} servers");
        assert!(
            plain.is_empty(),
            "servers without TCP_NODELAY:\n{}",
            plain.join("\n")
        );
    }
}
