//! What the API benches share: the state they serve.

use anyhow::Result;
use ctrl_api::state::AppState;
use ctrl_vault::{KeyConfig, Vault};

/// The token the benches call with.
pub(crate) const TOKEN: &str = "bench-token-0123456789abcdef";

/// State over a fresh database, with no Restate behind it and limits far
/// above what a bench does from one token.
pub(crate) async fn state() -> Result<AppState> {
    let db = ctrl_testkit::test_database().await?;
    let vault = Vault::new(&[KeyConfig {
        id: "bench".into(),
        base64: "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".into(),
    }])?;
    let nowhere = format!("http://127.0.0.1:{}", ctrl_testkit::free_port()?);
    let restate = (
        ctrl_api::restate::Ingress::new(&nowhere),
        ctrl_api::restate::Admin::new(&nowhere),
    );
    Ok(
        AppState::new(db.pool, vault, &[TOKEN.to_owned()], restate).with_limits(
            &ctrl_api::limits::LimitsConfig {
                requests_per_second: 1_000_000,
                burst: 1_000_000,
                streams_per_token: 5_000,
                ..ctrl_api::limits::LimitsConfig::default()
            },
        ),
    )
}
