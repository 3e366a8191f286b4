//! Validation of user input that shapes what runs: runtime settings,
//! autoscaling bounds, environment variable names and image references.
//! Each error names the field and says what is allowed.

use std::fmt;

/// A rejected field and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field, as the API spells it (e.g. `runtime.port`).
    pub field: String,
    /// What is wrong, as a sentence fragment.
    pub message: String,
}

impl FieldError {
    /// A problem with `field`.
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for FieldError {}

/// Smallest CPU allocation per instance.
pub const MIN_CPU_MILLICORES: i32 = 250;
/// Smallest memory allocation per instance.
pub const MIN_MEMORY_MIB: i32 = 256;

/// Runtime settings as the rules see them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runtime<'a> {
    /// Listening port.
    pub port: i32,
    /// CPU per instance.
    pub cpu_millicores: i32,
    /// Memory per instance.
    pub memory_mib: i32,
    /// Ephemeral disk per instance.
    pub storage_mib: i32,
    /// Health-check path, if a health check is configured.
    pub health_check_path: Option<&'a str>,
    /// Seconds between the stop signal and a kill.
    pub termination_grace_seconds: i32,
}

/// All problems with runtime settings (empty = valid).
pub fn validate_runtime(r: &Runtime<'_>) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if !(1..=65535).contains(&r.port) {
        errors.push(FieldError::new(
            "runtime.port",
            "must be between 1 and 65535",
        ));
    }
    if r.cpu_millicores < MIN_CPU_MILLICORES {
        errors.push(FieldError::new(
            "runtime.cpu_millicores",
            format!("must be at least {MIN_CPU_MILLICORES}"),
        ));
    }
    if r.memory_mib < MIN_MEMORY_MIB {
        errors.push(FieldError::new(
            "runtime.memory_mib",
            format!("must be at least {MIN_MEMORY_MIB}"),
        ));
    }
    if r.storage_mib < 0 {
        errors.push(FieldError::new(
            "runtime.storage_mib",
            "must not be negative",
        ));
    }
    if let Some(path) = r.health_check_path
        && (!path.starts_with('/') || path.len() > 512 || path.chars().any(char::is_whitespace))
    {
        errors.push(FieldError::new(
            "runtime.health_check.path",
            "must start with \"/\", contain no spaces and be at most 512 characters",
        ));
    }
    if !(0..=3600).contains(&r.termination_grace_seconds) {
        errors.push(FieldError::new(
            "runtime.termination_grace_seconds",
            "must be between 0 and 3600",
        ));
    }
    errors
}

/// Checks replica bounds: `1 <= min <= max <= limit`.
pub fn validate_autoscaling(field: &str, min: u32, max: u32, limit: u32) -> Result<(), FieldError> {
    if min < 1 {
        return Err(FieldError::new(field, "min_replicas must be at least 1"));
    }
    if max < min {
        return Err(FieldError::new(
            field,
            "max_replicas must be at least min_replicas",
        ));
    }
    if max > limit {
        return Err(FieldError::new(
            field,
            format!("max_replicas must be at most {limit}"),
        ));
    }
    Ok(())
}

/// Checks an environment variable name: a letter or `_`, then letters,
/// digits and `_`, at most 256 characters; not one ctrl sets itself.
pub fn validate_env_key(key: &str) -> Result<(), FieldError> {
    let field = "variables.key";
    let mut bytes = key.bytes();
    let valid = key.len() <= 256
        && bytes
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !valid {
        return Err(FieldError::new(
            field,
            format!(
                "{key:?} must start with a letter or \"_\" and contain only letters, digits and \"_\" (at most 256)"
            ),
        ));
    }
    if key.starts_with("CTRL_") {
        return Err(FieldError::new(
            field,
            format!("{key:?}: names starting with CTRL_ are reserved"),
        ));
    }
    Ok(())
}

/// Checks a container image reference in the Docker grammar:
/// `[host[:port]/]path[:tag][@algorithm:hex]`, path components lowercase.
pub fn validate_image_reference(reference: &str) -> Result<(), FieldError> {
    let fail = |why: &str| {
        Err(FieldError::new(
            "image",
            format!("{reference:?} is not a valid image reference: {why}"),
        ))
    };
    if reference.is_empty() {
        return fail("it is empty");
    }
    if reference.len() > 512
        || reference
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return fail("it is too long or contains whitespace");
    }
    let (name_tag, digest) = match reference.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (reference, None),
    };
    if let Some(digest) = digest {
        let Some((algorithm, hex)) = digest.split_once(':') else {
            return fail("the digest must be algorithm:hex");
        };
        let algorithm_ok = !algorithm.is_empty()
            && algorithm
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b));
        if !algorithm_ok || hex.len() < 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return fail("the digest must be algorithm:hex with at least 32 hex digits");
        }
    }
    // A tag is a ":" after the last "/".
    let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_tag[last_slash..].rfind(':') {
        Some(i) => (
            &name_tag[..last_slash + i],
            Some(&name_tag[last_slash + i + 1..]),
        ),
        None => (name_tag, None),
    };
    if let Some(tag) = tag {
        let mut t = tag.bytes();
        let ok = tag.len() <= 128
            && t.next()
                .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
            && t.all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !ok {
            return fail(
                "the tag may contain letters, digits, \"_\", \".\" and \"-\" (at most 128)",
            );
        }
    }
    let mut components: Vec<&str> = name.split('/').collect();
    // The first component is a registry host if it looks like one.
    if components.len() > 1 {
        let first = components[0];
        if first.contains('.') || first.contains(':') || first == "localhost" {
            let (host, port) = first
                .split_once(':')
                .map_or((first, None), |(h, p)| (h, Some(p)));
            let host_ok = !host.is_empty()
                && host.split('.').all(|l| {
                    !l.is_empty()
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
            let port_ok = port.is_none_or(|p| {
                !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
            });
            if !host_ok || !port_ok {
                return fail("the registry host is malformed");
            }
            components.remove(0);
        }
    }
    for component in components {
        if !is_path_component(component) {
            return fail(
                "path components must be lowercase letters and digits separated by \".\", \"_\", \"__\" or \"-\"",
            );
        }
    }
    Ok(())
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
fn is_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn good() -> Runtime<'static> {
        Runtime {
            port: 8080,
            cpu_millicores: 250,
            memory_mib: 256,
            storage_mib: 0,
            health_check_path: Some("/health"),
            termination_grace_seconds: 30,
        }
    }

    #[test]
    fn runtime_rules() {
        assert!(validate_runtime(&good()).is_empty());
        let bad = Runtime {
            port: 0,
            cpu_millicores: 100,
            memory_mib: 128,
            storage_mib: -1,
            health_check_path: Some("health"),
            termination_grace_seconds: -1,
        };
        let fields: Vec<_> = validate_runtime(&bad)
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            [
                "runtime.port",
                "runtime.cpu_millicores",
                "runtime.memory_mib",
                "runtime.storage_mib",
                "runtime.health_check.path",
                "runtime.termination_grace_seconds"
            ]
        );
        assert!(
            validate_runtime(&Runtime {
                port: 65536,
                ..good()
            })[0]
                .to_string()
                .contains("between 1 and 65535")
        );
        assert!(
            validate_runtime(&Runtime {
                health_check_path: None,
                ..good()
            })
            .is_empty()
        );
    }

    #[test]
    fn autoscaling_bounds() {
        assert_eq!(validate_autoscaling("regions[0]", 1, 3, 10), Ok(()));
        assert!(
            validate_autoscaling("regions[0]", 0, 3, 10)
                .unwrap_err()
                .message
                .contains("at least 1")
        );
        assert!(
            validate_autoscaling("regions[0]", 3, 2, 10)
                .unwrap_err()
                .message
                .contains("at least min")
        );
        assert!(
            validate_autoscaling("regions[0]", 1, 11, 10)
                .unwrap_err()
                .message
                .contains("at most 10")
        );
    }

    #[test]
    fn env_keys() {
        for ok in ["A", "_X", "DATABASE_URL", "a1_b2"] {
            assert_eq!(validate_env_key(ok), Ok(()), "{ok}");
        }
        for bad in ["", "1A", "A-B", "A B", "Ä", &"A".repeat(257), "CTRL_TOKEN"] {
            assert!(validate_env_key(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn image_references() {
        for ok in [
            "nginx",
            "nginx:1.27",
            "library/nginx:latest",
            "docker.io/library/nginx:1.27-alpine",
            "ghcr.io/acme/api:v1.2.3",
            "localhost/bbhttpd:latest",
            "localhost:5000/team/app",
            "registry.example.com:443/a/b/c:tag_1",
            "my-app__x.y",
            "app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "ghcr.io/a/b:v1@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(validate_image_reference(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "Nginx",
            "nginx:",
            "nginx:-bad",
            "nginx latest",
            "/nginx",
            "nginx/",
            "a//b",
            "app@sha256:xyz",
            "app@sha256",
            "-app",
            "app-",
            "a..b",
            "bad_host.io:port/app",
        ] {
            let err = validate_image_reference(bad).expect_err(bad);
            assert_eq!(err.field, "image");
            assert!(err.message.contains("not a valid image reference"), "{err}");
        }
    }

    proptest! {
        #[test]
        fn image_validation_never_panics(s in "\\PC{0,80}") {
            let _ = validate_image_reference(&s);
        }
    }
}
