//! The Restate services, one per file. Names are part of the wire contract
//! (see `ctrl_core::workflows`) and pinned with `name = "..."`.

pub mod deletion;
pub mod deploy;
pub mod deployment;
pub mod routing;
