//! The testkit's error type: every message says what failed and what to do.

use std::io;
use std::path::PathBuf;

/// Why a dependency could not be started or used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A required program is missing.
    #[error(
        "{what} not found (looked in: {looked}); install the test dependencies with `cargo xtask deps`"
    )]
    NotInstalled {
        /// The program or package that is missing.
        what: &'static str,
        /// Where it was looked for.
        looked: String,
    },
    /// A process started but did not become ready.
    #[error("{name} did not become ready: {reason}\n--- last lines of {} ---\n{tail}", log.display())]
    Startup {
        /// The dependency's name.
        name: String,
        /// What went wrong.
        reason: String,
        /// Its log file.
        log: PathBuf,
        /// The last lines of that log.
        tail: String,
    },
    /// A file-system or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Certificates or keys could not be made.
    #[error("{0}")]
    Tls(String),
    /// A request to a started dependency failed.
    #[error("{context}: {message}")]
    Request {
        /// What was being done.
        context: String,
        /// What the dependency answered or why it could not be reached.
        message: String,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn request(context: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Self::Request {
            context: context.into(),
            message: message.to_string(),
        }
    }
}
