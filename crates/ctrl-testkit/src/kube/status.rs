//! The API server's `Status` errors: the reasons, codes, messages and
//! `details` the real kube-apiserver sends (k8s.io/apimachinery's
//! `errors` package and `field.Error`).

use serde_json::{Value, json};

use super::registry::ResourceType;

/// An error answer: an HTTP code and a `Status` body.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub(crate) code: u16,
    pub(crate) body: Value,
}

impl ApiError {
    pub(crate) fn new(code: u16, reason: &str, message: impl Into<String>) -> Self {
        Self {
            code,
            body: status_body(code, reason, &message.into(), None),
        }
    }

    fn with_details(mut self, details: Value) -> Self {
        if let Some(map) = self.body.as_object_mut() {
            map.insert("details".to_owned(), details);
        }
        self
    }

    pub(crate) fn message(&self) -> &str {
        self.body["message"].as_str().unwrap_or_default()
    }

    pub(crate) fn reason(&self) -> &str {
        self.body["reason"].as_str().unwrap_or_default()
    }

    pub(crate) fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub(crate) fn unknown_path() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .with_details(json!({}))
    }

    pub(crate) fn not_found(rt: &ResourceType, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", rt.qualified_resource()),
        )
        .with_details(details(rt, name))
    }

    pub(crate) fn namespace_not_found(namespace: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("namespaces \"{namespace}\" not found"),
        )
        .with_details(json!({"name": namespace, "kind": "namespaces"}))
    }

    pub(crate) fn already_exists(rt: &ResourceType, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", rt.qualified_resource()),
        )
        .with_details(details(rt, name))
    }

    /// A stale `metadata.resourceVersion` (optimistic concurrency).
    pub(crate) fn stale(rt: &ResourceType, name: &str) -> Self {
        Self::conflict(
            rt,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    pub(crate) fn conflict(rt: &ResourceType, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                rt.qualified_resource()
            ),
        )
        .with_details(details(rt, name))
    }

    /// Server-side apply conflicts: `(field path, manager description)`.
    pub(crate) fn apply_conflicts(conflicts: &[(String, String)]) -> Self {
        let n = conflicts.len();
        let mut by_manager: Vec<(&str, Vec<&str>)> = Vec::new();
        for (field, manager) in conflicts {
            match by_manager.iter_mut().find(|(m, _)| *m == manager.as_str()) {
                Some((_, fields)) => fields.push(field),
                None => by_manager.push((manager, vec![field])),
            }
        }
        by_manager.sort_by(|a, b| a.0.cmp(b.0));
        let message = if n == 1 {
            format!(
                "Apply failed with 1 conflict: conflict with {}: {}",
                conflicts[0].1, conflicts[0].0
            )
        } else {
            let mut message = format!("Apply failed with {n} conflicts: ");
            let parts: Vec<String> = by_manager
                .iter()
                .map(|(manager, fields)| {
                    let mut part = format!("conflicts with {manager}:");
                    for field in fields {
                        part.push_str("\n- ");
                        part.push_str(field);
                    }
                    part
                })
                .collect();
            message.push_str(&parts.join("\n"));
            message
        };
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|(field, manager)| {
                json!({
                    "reason": "FieldManagerConflict",
                    "message": format!("conflict with {manager}"),
                    "field": field,
                })
            })
            .collect();
        Self::new(409, "Conflict", message).with_details(json!({"causes": causes}))
    }

    /// `422 Invalid` listing every field error.
    pub(crate) fn invalid(rt: &ResourceType, name: &str, errors: &[FieldError]) -> Self {
        Self::invalid_kind(&rt.qualified_kind(), &rt.group, name, errors)
    }

    pub(crate) fn invalid_kind(
        qualified_kind: &str,
        group: &str,
        name: &str,
        errors: &[FieldError],
    ) -> Self {
        let list: Vec<String> = errors.iter().map(FieldError::to_string).collect();
        let joined = if list.len() == 1 {
            list[0].clone()
        } else {
            format!("[{}]", list.join(", "))
        };
        let kind = qualified_kind.split('.').next().unwrap_or(qualified_kind);
        let mut details = json!({"name": name, "kind": kind});
        if !group.is_empty() {
            details["group"] = json!(group);
        }
        details["causes"] = errors.iter().map(FieldError::cause).collect();
        Self::new(
            422,
            "Invalid",
            format!("{qualified_kind} \"{name}\" is invalid: {joined}"),
        )
        .with_details(details)
    }

    pub(crate) fn forbidden(rt: &ResourceType, name: &str, why: &str) -> Self {
        Self::new(
            403,
            "Forbidden",
            format!("{} \"{name}\" is forbidden: {why}", rt.qualified_resource()),
        )
        .with_details(details(rt, name))
    }

    pub(crate) fn namespace_terminating(rt: &ResourceType, name: &str, namespace: &str) -> Self {
        let mut error = Self::forbidden(
            rt,
            name,
            &format!(
                "unable to create new content in namespace {namespace} because it is being terminated"
            ),
        );
        error.body["details"]["causes"] = json!([{
            "reason": "NamespaceTerminating",
            "message": format!("namespace {namespace} is being terminated"),
            "field": "metadata.namespace",
        }]);
        error
    }

    pub(crate) fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
        .with_details(json!({}))
    }

    pub(crate) fn unsupported_media_type(content_type: &str, accepted: &[&str]) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format ({content_type}) - accepted media types include: {}",
                accepted.join(", ")
            ),
        )
    }

    pub(crate) fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    pub(crate) fn service_unavailable() -> Self {
        Self::new(
            503,
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
        )
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        let message = message.into();
        Self::new(
            500,
            "InternalError",
            format!("Internal error occurred: {message}"),
        )
        .with_details(json!({"causes": [{"message": message}]}))
    }

    pub(crate) fn too_large() -> Self {
        Self::new(
            413,
            "RequestEntityTooLarge",
            "Request entity too large: limit is 3145728",
        )
    }

    /// The error an injected fault answers with: the reason the real server
    /// pairs with `code`.
    pub(crate) fn injected(code: u16) -> Self {
        let (reason, message) = match code {
            400 => (
                "BadRequest",
                "the server rejected our request for an unknown reason",
            ),
            401 => ("Unauthorized", "Unauthorized"),
            403 => ("Forbidden", "forbidden: injected failure"),
            404 => (
                "NotFound",
                "the server could not find the requested resource",
            ),
            405 => (
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            ),
            409 => ("Conflict", "the server reported a conflict"),
            410 => ("Expired", "the resource version is too old"),
            422 => (
                "Invalid",
                "the server rejected our request due to an error in our request",
            ),
            429 => (
                "TooManyRequests",
                "the server has received too many requests and has asked us to try again later",
            ),
            500 => (
                "InternalError",
                "an error on the server (\"injected failure\") has prevented the request from succeeding",
            ),
            503 => (
                "ServiceUnavailable",
                "the server is currently unable to handle the request",
            ),
            504 => (
                "Timeout",
                "the server was unable to return a response in the time allotted, but may still be processing the request",
            ),
            _ => ("", "injected failure"),
        };
        let mut error = Self::new(code, reason, message);
        if matches!(code, 429 | 503 | 504) {
            error = error.with_details(json!({"retryAfterSeconds": 1}));
        }
        error
    }
}

fn details(rt: &ResourceType, name: &str) -> Value {
    let mut details = json!({"name": name, "kind": rt.plural});
    if !rt.group.is_empty() {
        details["group"] = json!(rt.group);
    }
    details
}

/// A `Status` object.
pub(crate) fn status_body(code: u16, reason: &str, message: &str, details: Option<Value>) -> Value {
    let mut body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": if code < 400 { "Success" } else { "Failure" },
    });
    if !message.is_empty() {
        body["message"] = json!(message);
    }
    if code != 200 {
        body["code"] = json!(code);
    }
    if !reason.is_empty() {
        body["reason"] = json!(reason);
    }
    if let Some(details) = details {
        body["details"] = details;
    }
    body
}

/// One `field.Error`: how a field failed validation.
#[derive(Debug, Clone)]
pub(crate) struct FieldError {
    pub(crate) field: String,
    pub(crate) kind: FieldErrorKind,
    pub(crate) detail: String,
}

#[derive(Debug, Clone)]
pub(crate) enum FieldErrorKind {
    Invalid(Value),
    Required,
    Duplicate(Value),
    Forbidden,
    NotSupported(Value, Vec<String>),
    TooLong(usize),
}

impl FieldError {
    pub(crate) fn invalid(
        field: impl Into<String>,
        value: Value,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            field: field.into(),
            kind: FieldErrorKind::Invalid(value),
            detail: detail.into(),
        }
    }

    pub(crate) fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            kind: FieldErrorKind::Required,
            detail: detail.into(),
        }
    }

    pub(crate) fn duplicate(field: impl Into<String>, value: Value) -> Self {
        Self {
            field: field.into(),
            kind: FieldErrorKind::Duplicate(value),
            detail: String::new(),
        }
    }

    pub(crate) fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            kind: FieldErrorKind::Forbidden,
            detail: detail.into(),
        }
    }

    pub(crate) fn not_supported(
        field: impl Into<String>,
        value: Value,
        supported: &[&str],
    ) -> Self {
        Self {
            field: field.into(),
            kind: FieldErrorKind::NotSupported(
                value,
                supported.iter().map(|s| (*s).to_owned()).collect(),
            ),
            detail: String::new(),
        }
    }

    pub(crate) fn immutable(field: impl Into<String>, value: Value) -> Self {
        Self::invalid(field, value, "field is immutable")
    }

    /// The message without the field: `Invalid value: "X": detail`.
    fn body(&self) -> String {
        let with_detail = |head: String| {
            if self.detail.is_empty() {
                head
            } else {
                format!("{head}: {}", self.detail)
            }
        };
        match &self.kind {
            FieldErrorKind::Invalid(value) => {
                with_detail(format!("Invalid value: {}", go_value(value)))
            }
            FieldErrorKind::Required => with_detail("Required value".to_owned()),
            FieldErrorKind::Duplicate(value) => format!("Duplicate value: {}", go_value(value)),
            FieldErrorKind::Forbidden => with_detail("Forbidden".to_owned()),
            FieldErrorKind::NotSupported(value, supported) => {
                let quoted: Vec<String> = supported.iter().map(|s| format!("\"{s}\"")).collect();
                format!(
                    "Unsupported value: {}: supported values: {}",
                    go_value(value),
                    quoted.join(", ")
                )
            }
            FieldErrorKind::TooLong(max) => {
                format!("Too long: may not be more than {max} bytes")
            }
        }
    }

    fn cause(&self) -> Value {
        let reason = match self.kind {
            FieldErrorKind::Invalid(_) => "FieldValueInvalid",
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::Duplicate(_) => "FieldValueDuplicate",
            FieldErrorKind::Forbidden => "FieldValueForbidden",
            FieldErrorKind::NotSupported(..) => "FieldValueNotSupported",
            FieldErrorKind::TooLong(_) => "FieldValueTooLong",
        };
        json!({"reason": reason, "message": self.body(), "field": self.field})
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

/// A value as Go's `%#v` prints it in validation messages (strings quoted,
/// numbers bare, anything else as JSON).
fn go_value(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".to_owned(),
        other => other.to_string(),
    }
}
