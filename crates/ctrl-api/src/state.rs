//! What every handler shares.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use ctrl_vault::Vault;
use sqlx::MySqlPool;

/// Shared, cheaply cloned handler state.
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: MySqlPool,
    vault: Vault,
}

impl AppState {
    /// State over a database pool and a vault.
    pub fn new(db: MySqlPool, vault: Vault) -> Self {
        Self {
            inner: Arc::new(Inner { db, vault }),
        }
    }

    /// The database pool.
    pub fn db(&self) -> &MySqlPool {
        &self.inner.db
    }

    /// The vault for environment variables.
    pub fn vault(&self) -> &Vault {
        &self.inner.vault
    }

    /// The current time in unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}
