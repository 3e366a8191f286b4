//! One place deciding what a failure means to Restate: bad input, missing
//! rows and broken rules are terminal (no retry); everything else is
//! retried by Restate's (durable, bounded) retry policy.

use std::time::{SystemTime, UNIX_EPOCH};

use restate_sdk::prelude::{HandlerError, TerminalError};

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

/// The wall clock in unix milliseconds. Only call it inside `ctx.run`, whose
/// result is journaled, so a replay never sees a different time.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
