//! The Restate endpoint hosting ctrl's durable services.
//!
//! [`services`] holds one Restate component per file (today: the
//! `Deployment` object; Deploy, Routing and Versioning follow). Handlers
//! stay thin — decode, call ctrl-core rules, perform side effects inside
//! named `ctx.run` blocks through ctrl-db — and [`errors`] decides once what
//! is terminal and what Restate retries. [`startup`] is the process: config
//! → logging → database → endpoint → self-registration (with retry and
//! `force`) → health endpoint → graceful shutdown.

pub mod config;
pub mod errors;
pub mod serve;
pub mod services;
pub mod startup;
