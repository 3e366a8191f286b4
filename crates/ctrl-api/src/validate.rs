//! Input checks shared by the services; each error names its field.

use ctrl_core::id::{self, IdKind};
use ctrl_core::names;

use crate::error::ApiError;

/// `value` must be an id of `kind`.
pub fn id(field: &str, kind: IdKind, value: &str) -> Result<(), ApiError> {
    if value.is_empty() {
        return Err(ApiError::invalid(field, "is required"));
    }
    id::validate(kind, value).map_err(|e| ApiError::invalid(field, e))?;
    if kind == IdKind::Deployment {
        // The request's span (crate::observe) carries it from here on.
        tracing::Span::current().record("deployment_id", tracing::field::display(value));
    }
    Ok(())
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

/// A GitHub repository as `owner/repo`.
pub fn repository(field: &str, value: &str) -> Result<(), ApiError> {
    names::validate_repository(value).map_err(|e| ApiError::invalid(field, e))
}

/// Build arguments: at most `max`, names like environment variables (at
/// most 256 bytes), values at most 4096 bytes without NUL.
pub fn build_args(
    field: &str,
    args: &std::collections::HashMap<String, String>,
    max: usize,
) -> Result<(), ApiError> {
    if args.len() > max {
        return Err(ApiError::invalid(
            field,
            format!("at most {max} build arguments, got {}", args.len()),
        ));
    }
    let mut names: Vec<&String> = args.keys().collect();
    names.sort();
    for name in names {
        let value = &args[name];
        let good_name = name.len() <= 256
            && name
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !good_name {
            return Err(ApiError::invalid(
                &format!("{field}[{name:?}]"),
                "names are letters, digits and \"_\", not starting with a digit, at most 256 bytes",
            ));
        }
        if value.len() > 4096 || value.contains('\0') {
            return Err(ApiError::invalid(
                &format!("{field}[{name:?}]"),
                "values are at most 4096 bytes, without NUL",
            ));
        }
    }
    Ok(())
}
