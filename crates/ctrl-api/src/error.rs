//! The API's error type and its one mapping from lower layers.
//!
//! User mistakes are `InvalidArgument` (naming the field), `NotFound`,
//! `AlreadyExists` or `FailedPrecondition`; database and other internal
//! failures become `Internal` with a generic message (details go to the log,
//! never to the client).

use std::fmt;

/// Why an RPC failed, in the API's terms (Connect/gRPC codes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// Bad input; `field` is the request field, e.g. `slug`.
    InvalidArgument {
        /// The offending field.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The named thing does not exist.
    NotFound(String),
    /// A unique name or key is taken.
    AlreadyExists(String),
    /// A rule forbids it now (e.g. a rollback target that is not ready).
    FailedPrecondition(String),
    /// Missing or wrong credentials.
    Unauthenticated,
    /// A dependency is down or overloaded; retrying may help.
    Unavailable(String),
    /// Anything else; the message is safe to show (details were logged).
    Internal(String),
}

impl ApiError {
    /// The HTTP status for plain HTTP routes (the webhook), matching the
    /// Connect code `rpc::to_connect` gives.
    pub fn http_status(&self) -> axum::http::StatusCode {
        use axum::http::StatusCode as S;
        match self {
            Self::InvalidArgument { .. } => S::BAD_REQUEST,
            Self::NotFound(_) => S::NOT_FOUND,
            Self::AlreadyExists(_) => S::CONFLICT,
            Self::FailedPrecondition(_) => S::PRECONDITION_FAILED,
            Self::Unauthenticated => S::UNAUTHORIZED,
            Self::Unavailable(_) => S::SERVICE_UNAVAILABLE,
            Self::Internal(_) => S::INTERNAL_SERVER_ERROR,
        }
    }

    /// Bad input in `field`.
    pub fn invalid(field: &str, message: impl fmt::Display) -> Self {
        Self::InvalidArgument {
            field: field.to_owned(),
            message: message.to_string(),
        }
    }

    /// The Connect/gRPC code name (`invalid_argument`, ...).
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidArgument { .. } => "invalid_argument",
            Self::NotFound(_) => "not_found",
            Self::AlreadyExists(_) => "already_exists",
            Self::FailedPrecondition(_) => "failed_precondition",
            Self::Unauthenticated => "unauthenticated",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal",
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidArgument { field, message } => write!(f, "{field}: {message}"),
            Self::NotFound(m)
            | Self::AlreadyExists(m)
            | Self::FailedPrecondition(m)
            | Self::Unavailable(m)
            | Self::Internal(m) => f.write_str(m),
            Self::Unauthenticated => f.write_str("missing or invalid bearer token"),
        }
    }
}

impl std::error::Error for ApiError {}

impl From<ctrl_db::Error> for ApiError {
    fn from(e: ctrl_db::Error) -> Self {
        match e {
            ctrl_db::Error::NotFound(what) => Self::NotFound(format!("{what} not found")),
            ctrl_db::Error::AlreadyExists { key } => {
                Self::AlreadyExists(already_exists_message(&key))
            }
            e if e.is_transient() => {
                tracing::warn!(error = %e, "transient database error");
                Self::Unavailable("the database is busy; retry the request".into())
            }
            e => {
                tracing::error!(error = %e, "database error");
                Self::Internal("internal error".into())
            }
        }
    }
}

impl From<ctrl_cluster_sync::agents::IssueError> for ApiError {
    fn from(e: ctrl_cluster_sync::agents::IssueError) -> Self {
        match e {
            ctrl_cluster_sync::agents::IssueError::Invalid(i) => Self::invalid(i.field, i.message),
            ctrl_cluster_sync::agents::IssueError::Db(e) => e.into(),
        }
    }
}

impl From<ctrl_core::gate::GateError> for ApiError {
    fn from(e: ctrl_core::gate::GateError) -> Self {
        Self::FailedPrecondition(e.message())
    }
}

/// A user-facing message for a violated unique index.
fn already_exists_message(key: &str) -> String {
    match key {
        "workspaces_slug" => "a workspace with this slug already exists".into(),
        "projects_workspace_slug" => {
            "a project with this slug already exists in the workspace".into()
        }
        "apps_project_slug" => "an app with this slug already exists in the project".into(),
        "environments_app_slug" => {
            "an environment with this slug already exists for the app".into()
        }
        "environments_one_production" => "the app already has a production environment".into(),
        other => format!("already exists ({other})"),
    }
}
