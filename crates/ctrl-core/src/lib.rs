//! Pure domain logic of the ctrl control plane.
//!
//! Ids ([`id`]), names for DNS and Kubernetes ([`names`]), the deployment
//! status machine ([`status`]), generated hostnames ([`domains`]), the
//! deploy-gate rules for rollback, promote, stop and wake ([`gate`]), the
//! validation of settings and image references ([`settings`]) and the names and
//! inputs of the worker's Restate services ([`workflows`]). The API and
//! the worker both call these, so they give the same answers and messages.
//!
//! Deliberately free of I/O and async: every function is a plain function of
//! its inputs (randomness is passed in, so Restate handlers can supply their
//! deterministic generator) and is unit- and property-tested as such.

pub mod domains;
pub mod gate;
pub mod id;
pub mod logs;
pub mod names;
pub mod settings;
pub mod status;
pub mod workflows;
