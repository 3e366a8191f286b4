//! `cargo xtask test`: bootstrap what is missing, then run every test of the
//! workspace with cargo-nextest against one MariaDB shared by the whole run.

use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Context, Result};
use ctrl_testkit::MariaDb;
use ctrl_testkit::mariadb::SHARED_URL_ENV;

use crate::deps;

/// Runs the tests; `args` go to `cargo nextest run` (e.g. a filter).
pub(crate) async fn run(args: &[String]) -> Result<ExitCode> {
    let started = Instant::now();
    eprintln!("checking test dependencies");
    deps::ensure(false)?;

    // nextest runs every test in its own process; starting MariaDB once here
    // and exporting its URL lets all of them share it (a fresh database each)
    // instead of each starting a server. Killed when we exit, however we exit.
    let mariadb = MariaDb::start().await.context("start the shared MariaDB")?;

    let mut nextest = Command::new(deps::cargo());
    nextest.args(["nextest", "run", "--workspace"]);
    if std::env::var_os("CI").is_some() {
        nextest.args(["--profile", "ci"]);
    }
    nextest.args(args).env(SHARED_URL_ENV, mariadb.admin_url());
    let status = tokio::task::spawn_blocking(move || nextest.status())
        .await?
        .context("run cargo nextest")?;
    drop(mariadb);
    // Tidy the scratch directories the test processes left (they are dead now).
    ctrl_testkit::reaper::reap_stale(&ctrl_testkit::reaper::scratch_root());
    eprintln!("cargo xtask test finished in {:.1?}", started.elapsed());
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}
