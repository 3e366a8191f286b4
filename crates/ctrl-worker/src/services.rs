//! The Restate services, one per file. Names are part of the wire contract
//! (see `ctrl_core::workflows`) and pinned with `name = "..."`.

pub mod certificate;
pub mod custom_domain;
pub mod deletion;
pub mod deploy;
pub mod deployment;
pub mod github;
pub mod github_status;
pub mod routing;
