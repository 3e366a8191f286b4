//! Waking idle deployments on request: the first request asks the control
//! plane (at most once per [`ASK_EVERY`] per deployment, however many
//! requests wait), and every waiting request watches the routing table
//! until the deployment runs here, for at most the wake timeout.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::control::Control;
use crate::table::{Deployment, Routes, State};

/// How often the wake is asked again while requests wait.
const ASK_EVERY: Duration = Duration::from_secs(3);

/// Wake-ups in progress.
#[derive(Debug)]
pub struct Wakes {
    routes: Arc<Routes>,
    control: Control,
    timeout: Duration,
    asked: Mutex<HashMap<String, Instant>>,
}

impl Wakes {
    /// Wakes through `control`, waiting at most `timeout` per request.
    pub fn new(routes: Arc<Routes>, control: Control, timeout: Duration) -> Self {
        Self {
            routes,
            control,
            timeout,
            asked: Mutex::new(HashMap::new()),
        }
    }

    /// Wakes the deployment behind `host` and waits until it runs with a
    /// backend here or in a peer region; `None` when the wait timed out.
    pub async fn wake_and_wait(&self, deployment_id: &str, host: &str) -> Option<Arc<Deployment>> {
        let mut changed = self.routes.subscribe();
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            if let Some(d) = self.routes.current().route(host)
                && d.state == State::Running
                && (!d.backends.is_empty() || !d.peer_regions.is_empty())
            {
                return Some(d.clone());
            }
            self.ask(deployment_id);
            tokio::select! {
                _ = changed.changed() => {}
                () = tokio::time::sleep(ASK_EVERY) => {}
                () = tokio::time::sleep_until(deadline) => return None,
            }
        }
    }

    fn ask(&self, deployment_id: &str) {
        {
            let mut asked = self.asked.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            asked.retain(|_, at| now.duration_since(*at) < ASK_EVERY);
            if asked.contains_key(deployment_id) {
                return;
            }
            asked.insert(deployment_id.to_owned(), now);
        }
        let control = self.control.clone();
        let id = deployment_id.to_owned();
        tokio::spawn(async move {
            match control.wake(&id).await {
                Ok(()) => tracing::info!(deployment_id = %id, "woken by a request"),
                Err(e) => {
                    tracing::warn!(deployment_id = %id, error = %e.message(), "wake refused or failed")
                }
            }
        });
    }
}
