//! Certificates and custom domains, below the workflows: ACME orders cut
//! into journaled steps ([`acme`]), DNS providers that publish DNS-01
//! records behind a trait with a Route53 implementation ([`dns`]), and the
//! DNS checks that verify a custom domain ([`verify`]).
//!
//! Nothing here touches the database or Restate: the worker's `Certificate`
//! and `CustomDomain` objects call these inside named `ctx.run` steps and
//! keep the state. Every network call has a deadline; errors say whether
//! trying again can help ([`AcmeError`]) and never carry secrets.

pub mod acme;
pub mod dns;
pub mod verify;

use std::time::SystemTime;

/// Why an ACME, DNS or verification step failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AcmeError {
    /// The CA limits us; try again after `retry_after` (if it said when).
    #[error("rate limited by the CA: {detail}")]
    RateLimited {
        /// When the CA said to come back.
        retry_after: Option<SystemTime>,
        /// The CA's words.
        detail: String,
    },
    /// The CA or DNS provider refused for good (its reason): trying the
    /// same again will not help.
    #[error("{0}")]
    Refused(String),
    /// A network failure, a timeout or a server error: worth retrying.
    #[error("{0}")]
    Transient(String),
    /// Our own configuration is wrong (a CA bundle, stored credentials).
    #[error("configuration: {0}")]
    Config(String),
}
