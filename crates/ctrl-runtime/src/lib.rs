//! What every ctrl binary does at startup.
//!
//! Today: [`config`] — one TOML file per service, `${VAR}` expanded from the
//! environment, environment overrides, defaults, and validation whose errors
//! name the field, all before any port opens. Telemetry initialisation,
//! shutdown signals and the admin server join it as the services need them.

pub mod config;
