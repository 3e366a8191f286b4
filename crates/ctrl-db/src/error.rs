//! The crate's error type: "not found" and "already exists" are told apart
//! from database failures, so callers can answer `not_found` /
//! `already_exists` instead of `internal`.

/// A database operation's failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The row does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A unique key already holds this value; `key` names the index
    /// (e.g. `projects_workspace_slug`).
    #[error("already exists ({key})")]
    AlreadyExists {
        /// The violated unique index.
        key: String,
    },
    /// A stored value cannot be read back (a bug or a manual edit).
    #[error("stored value is invalid: {0}")]
    Corrupt(String),
    /// Anything else from the database or the connection.
    #[error(transparent)]
    Database(sqlx::Error),
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e
            && db.code().as_deref() == Some("23000")
            && db.message().starts_with("Duplicate entry")
        {
            // "Duplicate entry 'x' for key 'table.index'" (MySQL 8 prefixes the table).
            let key = db
                .message()
                .rsplit("for key '")
                .next()
                .map(|k| {
                    k.trim_end_matches('\'')
                        .rsplit('.')
                        .next()
                        .unwrap_or(k)
                        .to_owned()
                })
                .unwrap_or_default();
            return Self::AlreadyExists { key };
        }
        if let sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) = &e {
            return Self::Corrupt(e.to_string());
        }
        Self::Database(e)
    }
}

impl Error {
    /// Whether a row lock could not be taken in time (NOWAIT or lock wait
    /// timeout): MariaDB reports 1205, MySQL 8 reports 3572 for NOWAIT.
    pub fn is_lock_timeout(&self) -> bool {
        let Self::Database(sqlx::Error::Database(db)) = self else {
            return false;
        };
        db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
            .is_some_and(|e| matches!(e.number(), 1205 | 3572))
    }

    /// Whether a retry may succeed (connection problems, deadlocks, lock timeouts).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Database(sqlx::Error::Database(db)) => db
                .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                .is_some_and(|e| matches!(e.number(), 1205 | 1213 | 3572)),
            Self::Database(
                sqlx::Error::Io(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Protocol(_),
            ) => true,
            _ => false,
        }
    }
}
