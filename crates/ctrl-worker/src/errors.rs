//! One place deciding what a failure means to Restate: bad input, missing
//! rows and broken rules are terminal (no retry); everything else is
//! retried by Restate's (durable, bounded) retry policy.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use restate_sdk::prelude::{HandlerError, RunRetryPolicy, TerminalError};
use sqlx::{MySql, MySqlPool, Transaction};

/// A database error as a handler error.
pub fn db_error(e: ctrl_db::Error) -> HandlerError {
    match e {
        ctrl_db::Error::NotFound(what) => {
            TerminalError::new_with_code(404, format!("{what} not found")).into()
        }
        ctrl_db::Error::Corrupt(why) => {
            TerminalError::new_with_code(500, format!("stored data is invalid: {why}")).into()
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
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
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
