//! One place deciding what a failure means to Restate: bad input, missing
//! rows and broken rules are terminal (no retry); everything else is
//! retried by Restate's (durable, bounded) retry policy. [`WorkflowError`]
//! names every terminal failure the handlers raise, with its code.

use std::time::Duration;

use restate_sdk::prelude::{HandlerError, RunRetryPolicy, TerminalError};
use sqlx::{MySql, MySqlPool, Transaction};

/// Every terminal failure of the worker's handlers. Its [`code`](Self::code)
/// is what ctrl-api sees: 4xx answers reach users as `failed_precondition`
/// (404: `not_found`) with the message, 5xx as internal errors.
///
/// Deliberately not a `std::error::Error`: restate-sdk turns any such error
/// into a *retryable* `HandlerError`, so `?` on a `WorkflowError` would retry
/// what must fail. The only conversions are the terminal ones below.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkflowError {
    /// A handler invoked on another object's key.
    WrongKey {
        /// The handler.
        handler: &'static str,
        /// Whose key it takes ("source", "target", "own").
        whose: &'static str,
    },
    /// The deployment row says neither what to run nor what to build.
    NoSource,
    /// The deployment needs a build and this worker has no build backend
    /// (or no store for uploads).
    BuildsUnavailable(String),
    /// The build failed: the user's source, Dockerfile or repository access.
    BuildFailed(String),
    /// The build, or its wait for a slot, took too long.
    BuildTimedOut(String),
    /// The environment has nowhere to run.
    NoRegion,
    /// Agents gave up on too many regions for the deployment to become ready.
    RegionsFailed(String),
    /// Not ready in time; with the last problem an agent reported.
    ReadinessTimeout {
        /// The readiness timeout.
        seconds: u64,
        /// The problems reported last, joined.
        last_problem: Option<String>,
    },
    /// Cancelled, failed or finished by someone else while the pipeline ran.
    NoLongerActive,
    /// The invocation was cancelled (Restate's own code: never raised for
    /// anything else, so the compensation can tell).
    Cancelled,
    /// A rule of `ctrl_core::gate` refused the operation.
    Refused(String),
    /// A row the handler needs does not exist.
    NotFound(&'static str),
    /// A value the handler was given or read cannot be used.
    Invalid(String),
    /// Stored data cannot be read back, or a name cannot be made: a bug.
    Internal(String),
}

impl std::fmt::Display for WorkflowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::WrongKey { handler, whose } => {
                write!(
                    f,
                    "{handler} must be invoked on the {whose} deployment's key"
                )
            }
            Self::NoSource => f.write_str("The deployment has neither an image nor a git source."),
            Self::NoRegion => {
                f.write_str("No schedulable region is configured for this environment.")
            }
            Self::ReadinessTimeout {
                seconds,
                last_problem,
            } => {
                write!(f, "Not enough regions became healthy within {seconds} s.")?;
                match last_problem {
                    Some(p) => write!(f, " Last problem: {p}"),
                    None => Ok(()),
                }
            }
            Self::NoLongerActive => {
                f.write_str("The deployment was cancelled or finished while its pipeline ran.")
            }
            Self::Cancelled => f.write_str("cancelled"),
            Self::NotFound(what) => write!(f, "{what} not found"),
            Self::RegionsFailed(m)
            | Self::Refused(m)
            | Self::Invalid(m)
            | Self::Internal(m)
            | Self::BuildsUnavailable(m)
            | Self::BuildFailed(m)
            | Self::BuildTimedOut(m) => f.write_str(m),
        }
    }
}

impl WorkflowError {
    /// The Restate error code: the one place codes are decided.
    pub fn code(&self) -> u16 {
        match self {
            Self::WrongKey { .. } | Self::NoSource | Self::NoRegion | Self::Invalid(_) => 400,
            Self::Cancelled => CANCELLED,
            Self::NotFound(_) => 404,
            Self::Refused(_) => 412,
            Self::NoLongerActive => 410,
            Self::RegionsFailed(_) | Self::BuildFailed(_) => 422,
            Self::BuildsUnavailable(_) => 501,
            Self::ReadinessTimeout { .. } | Self::BuildTimedOut(_) => 504,
            Self::Internal(_) => 500,
        }
    }
}

/// Restate's status code for a cancelled invocation.
pub const CANCELLED: u16 = 409;

impl From<WorkflowError> for TerminalError {
    fn from(e: WorkflowError) -> Self {
        TerminalError::new_with_code(e.code(), e.to_string())
    }
}

impl From<WorkflowError> for HandlerError {
    fn from(e: WorkflowError) -> Self {
        TerminalError::from(e).into()
    }
}

/// A database error as a handler error.
pub fn db_error(e: ctrl_db::Error) -> HandlerError {
    match e {
        ctrl_db::Error::NotFound(what) => WorkflowError::NotFound(what).into(),
        ctrl_db::Error::Corrupt(why) => {
            WorkflowError::Internal(format!("stored data is invalid: {why}")).into()
        }
        other => {
            tracing::warn!(error = %other, "database error; Restate will retry");
            HandlerError::from(other)
        }
    }
}

/// Starts a database transaction (errors as [`db_error`]).
pub async fn begin(db: &MySqlPool) -> Result<Transaction<'static, MySql>, HandlerError> {
    db.begin().await.map_err(|e| db_error(e.into()))
}

/// Commits a transaction (errors as [`db_error`]).
pub async fn commit(tx: Transaction<'_, MySql>) -> Result<(), HandlerError> {
    tx.commit().await.map_err(|e| db_error(e.into()))
}

/// The wall clock in unix milliseconds. Only call it inside `ctx.run`, whose
/// result is journaled, so a replay never sees a different time.
pub fn now_ms() -> i64 {
    ctrl_runtime::now_ms()
}

/// Retries of a compensation step: it must happen (a deployment row is never
/// left on its way with nothing behind it), so it is retried durably, backing
/// off to a minute, for as long as it takes (a database outage, say).
pub fn compensation_retry() -> RunRetryPolicy {
    RunRetryPolicy::new()
        .initial_delay(Duration::from_millis(200))
        .exponentiation_factor(2.0)
        .max_delay(Duration::from_secs(60))
}

/// Retries of one `ctx.run` step: about half a minute of exponential backoff
/// (0.2 s doubling to 5 s, 8 attempts), then the step fails terminally and
/// the handler's compensation runs. A worker crash is not an attempt: Restate
/// replays the journal and the step runs again from the start.
pub fn step_retry() -> RunRetryPolicy {
    RunRetryPolicy::new()
        .initial_delay(Duration::from_millis(200))
        .exponentiation_factor(2.0)
        .max_delay(Duration::from_secs(5))
        .max_attempts(8)
}
