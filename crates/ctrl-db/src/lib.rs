//! MySQL access for the control plane.
//!
//! The only crate with SQL: it owns the migrations in the workspace's
//! `migrations/` directory (embedded at compile time as [`MIGRATOR`]) and,
//! as the schema grows, every query with its typed rows. Functions take an
//! executor so callers choose between a pool and a transaction. No business
//! rules live here: the domain crate decides, this crate persists.
//!
//! Works with MySQL 8 and MariaDB 10.11+ (tests run on MariaDB).

/// The forward-only migrations of `migrations/`, applied by the services'
/// `migrate` commands, the dev stack and `ctrl_testkit::test_database`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");
