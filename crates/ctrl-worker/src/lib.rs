//! The Restate endpoint hosting ctrl's durable services.
//!
//! [`services`] holds one Restate component per file (Deploy with its
//! pipeline, wake, rollback and promote; Deployment; Routing). Handlers
//! stay thin — decode, call ctrl-core rules, perform side effects inside
//! named `ctx.run` blocks through ctrl-db — and [`errors`] decides once what
//! is terminal (with which code) and what Restate retries. [`sweep`] fails
//! deployments left on their way with no workflow behind them. [`builds`]
//! holds what the building phase uses (backend, registry, stores, GitHub).
//! [`identity`] makes sure only the Restate server invokes it. [`metrics`]
//! counts handler attempts and pipeline runs. [`startup`]
//! is the process: config → logging → database → endpoint →
//! self-registration (with retry and `force`) → health endpoint and sweep →
//! graceful shutdown.

pub mod builds;
pub mod config;
pub mod errors;
pub mod identity;
pub mod metrics;
pub mod serve;
pub mod services;
pub mod startup;
pub mod sweep;
