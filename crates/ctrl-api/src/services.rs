//! The RPC implementations as plain async functions over [`AppState`]
//! (transport-independent, so tests can call them directly and the Connect
//! and gRPC adapters stay thin).
//!
//! [`AppState`]: crate::state::AppState

pub mod acme;
pub mod agents;
pub mod build;
pub mod custom_domain;
pub mod deployment;
pub mod repository;
pub mod settings;
pub mod tenancy;
