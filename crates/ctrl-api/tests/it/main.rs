//! ctrl-api against a real MariaDB.

mod tenancy;

use ctrl_api::state::AppState;
use ctrl_vault::{KeyConfig, Vault};

/// State over a fresh database and a test vault key.
pub(crate) async fn state() -> anyhow::Result<AppState> {
    let db = ctrl_testkit::test_database().await?;
    let vault = Vault::new(&[KeyConfig {
        id: "test".into(),
        base64: "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".into(),
    }])?;
    Ok(AppState::new(db.pool, vault))
}
