//! Input checks shared by the services; each error names its field.

use ctrl_core::id::{self, IdKind};
use ctrl_core::names;

use crate::error::ApiError;

/// `value` must be an id of `kind`.
pub fn id(field: &str, kind: IdKind, value: &str) -> Result<(), ApiError> {
    if value.is_empty() {
        return Err(ApiError::invalid(field, "is required"));
    }
    id::validate(kind, value).map_err(|e| ApiError::invalid(field, e))
}

/// A display name: 1–128 characters, no control characters.
pub fn name(field: &str, value: &str) -> Result<(), ApiError> {
    let len = value.chars().count();
    if value.trim().is_empty() || len > 128 || value.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            field,
            "must be 1-128 characters without control characters",
        ));
    }
    Ok(())
}

/// A workspace, app or environment slug.
pub fn slug(field: &str, value: &str) -> Result<(), ApiError> {
    names::validate_slug(value).map_err(|e| ApiError::invalid(field, e))
}

/// A project slug (reserved words rejected).
pub fn project_slug(field: &str, value: &str) -> Result<(), ApiError> {
    names::validate_project_slug(value).map_err(|e| ApiError::invalid(field, e))
}

/// A git branch name as git accepts it (subset): 1–256 bytes, no control
/// characters, spaces or `..`, not starting with `-` or `/`.
pub fn branch(field: &str, value: &str) -> Result<(), ApiError> {
    let ok = !value.is_empty()
        && value.len() <= 256
        && !value
            .chars()
            .any(|c| c.is_control() || c == ' ' || c == '~' || c == '^' || c == ':' || c == '\\')
        && !value.contains("..")
        && !value.starts_with('-')
        && !value.starts_with('/')
        && !value.ends_with('/')
        && !value.ends_with(".lock");
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(field, "is not a valid git branch name"))
    }
}
