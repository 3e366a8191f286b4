//! Services run as tasks of the test process (a package's tests cannot run
//! other packages' binaries): each gets a shutdown future, and dropping the
//! [`InProcess`] set fires them all, also when a test panics.

use std::future::Future;

use tokio::sync::oneshot;

/// The shutdown triggers of services started in this process.
#[derive(Debug, Default)]
pub struct InProcess {
    stops: Vec<oneshot::Sender<()>>,
}

impl InProcess {
    /// Spawns `serve(shutdown)`; `shutdown` completes when the set is
    /// dropped. An error the service returns is printed with its `name`.
    pub fn spawn<F, E>(&mut self, name: &'static str, serve: impl FnOnce(Shutdown) -> F)
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.stops.push(tx);
        let task = serve(Shutdown(rx));
        tokio::spawn(async move {
            if let Err(e) = task.await {
                eprintln!("{name}: {e:#}");
            }
        });
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
    }
}

/// Completes when the [`InProcess`] set that spawned the service is dropped.
#[derive(Debug)]
pub struct Shutdown(oneshot::Receiver<()>);

impl Shutdown {
    /// Waits for the shutdown.
    pub async fn wait(self) {
        let _ = self.0.await;
    }
}
