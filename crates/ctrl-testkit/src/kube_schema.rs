//! Kubernetes' own schemas for the objects ctrl renders.
//!
//! [`validate`] checks objects against the JSON schemas generated from
//! Kubernetes' OpenAPI documents, strictly (an unknown field is an error),
//! with [kubernetes-validate](https://pypi.org/project/kubernetes-validate/)
//! (installed by `cargo xtask deps`; it ships the schemas of Kubernetes 1.25
//! to 1.37). All objects of one call go to one run of the validator, one
//! file each, so a few hundred objects take seconds.
//!
//! What the schemas can catch: unknown fields, wrong types, missing required
//! fields, and kinds or API versions that Kubernetes does not have. What
//! they cannot: the values an API server's validation code rejects — the
//! OpenAPI documents list no enums (`imagePullPolicy: Sometimes` passes),
//! patterns or lengths (a name with capitals passes).
//!
//! Custom resources (a kind of an API group that is not Kubernetes' own,
//! such as cilium.io's CiliumNetworkPolicy) have no schema here: they are
//! listed in [`Report::skipped`]. A kind the schemas do not know in one of
//! Kubernetes' own groups (a typo, an API version that was removed) is a
//! violation.

use std::fmt;
use std::fs::{self, File};
use std::io;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::paths;

/// The Kubernetes version of ctrl's API types (k8s-openapi's `v1_33`), the
/// oldest that ctrl supports: what validates there validates later.
pub const KUBERNETES_VERSION: &str = "1.33.0";

/// Kubernetes' own API groups (every group in the schemas of 1.25 to 1.37).
/// A custom resource's group has a dot and is none of these.
const KUBERNETES_GROUPS: &[&str] = &[
    "",
    "admission.k8s.io",
    "admissionregistration.k8s.io",
    "apiextensions.k8s.io",
    "apiregistration.k8s.io",
    "apps",
    "authentication.k8s.io",
    "authorization.k8s.io",
    "autoscaling",
    "batch",
    "certificates.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
    "events.k8s.io",
    "extensions",
    "flowcontrol.apiserver.k8s.io",
    "imagepolicy.k8s.io",
    "internal.apiserver.k8s.io",
    "lifecycle.k8s.io",
    "networking.k8s.io",
    "node.k8s.io",
    "policy",
    "rbac.authorization.k8s.io",
    "resource.k8s.io",
    "scheduling.k8s.io",
    "storage.k8s.io",
    "storagemigration.k8s.io",
];

/// How long one run may take: a start-up allowance plus a share per object.
const RUN_BASE: Duration = Duration::from_secs(60);
const RUN_PER_OBJECT: Duration = Duration::from_millis(200);

/// Which object: its apiVersion, kind, namespace and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    /// `apiVersion`, e.g. `apps/v1`.
    pub api_version: String,
    /// `kind`, e.g. `Deployment`.
    pub kind: String,
    /// `metadata.namespace`, if set.
    pub namespace: Option<String>,
    /// `metadata.name` (or, without one, `metadata.generateName`).
    pub name: String,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// What one [`validate`] call found: every object was either validated or
/// skipped.
#[derive(Debug, Clone)]
pub struct Report {
    /// The Kubernetes version whose schemas were used (`1.33`): the newest
    /// the validator has that is not newer than the one asked for.
    pub schema_version: String,
    /// Objects that match their schema.
    pub validated: Vec<ObjectRef>,
    /// Custom resources, which have no schema here.
    pub skipped: Vec<Skipped>,
}

/// An object [`validate`] could not check.
#[derive(Debug, Clone)]
pub struct Skipped {
    /// The object.
    pub object: ObjectRef,
    /// The validator's words.
    pub reason: String,
}

/// An object that does not match Kubernetes' schema.
#[derive(Debug, Clone)]
pub struct Violation {
    /// The object.
    pub object: ObjectRef,
    /// Where in it, dotted (`spec.template.spec.containers.0.image`); empty
    /// for the object itself.
    pub path: String,
    /// The validator's message.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}: {}", self.object, self.message)
        } else {
            write!(f, "{}: {}: {}", self.object, self.path, self.message)
        }
    }
}

/// Why [`validate`] failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The validator is not installed.
    #[error("kubernetes-validate is not installed at {looked}: run `cargo xtask deps`")]
    NotInstalled {
        /// Where it was looked for.
        looked: String,
    },
    /// An input is not a Kubernetes object (no kind, no name, ...).
    #[error("object {index} of {total} is not a Kubernetes object: {reason}")]
    NotAnObject {
        /// Its position in the input, from 0.
        index: usize,
        /// How many objects were given.
        total: usize,
        /// What is missing or wrong.
        reason: String,
    },
    /// Objects do not match their schemas.
    #[error("{}", describe_violations(.schema_version, .total, .violations))]
    Invalid {
        /// The Kubernetes version of the schemas.
        schema_version: String,
        /// How many objects were given.
        total: usize,
        /// One per failing object (the validator reports the first problem
        /// of each).
        violations: Vec<Violation>,
    },
    /// The validator has no schemas for that Kubernetes version.
    #[error("no schemas for Kubernetes {version}: {message}")]
    UnsupportedVersion {
        /// The version asked for.
        version: String,
        /// The validator's words.
        message: String,
    },
    /// The validator failed in a way that says nothing about the objects.
    #[error("kubernetes-validate at {program} failed ({status}): {detail}")]
    Validator {
        /// The program that ran.
        program: String,
        /// Its exit status.
        status: String,
        /// What went wrong, with what it printed.
        detail: String,
    },
    /// The temporary files could not be written or read.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

fn describe_violations(schema_version: &str, total: &usize, violations: &[Violation]) -> String {
    let mut text = format!(
        "{} of {total} objects do not match Kubernetes {schema_version}'s schemas:",
        violations.len()
    );
    for v in violations {
        text.push_str("\n  ");
        text.push_str(&v.to_string());
    }
    text
}

fn io_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

/// Validates every object against the real Kubernetes schemas of `version`
/// (e.g. "1.33.0", see [`KUBERNETES_VERSION`]), strictly: unknown fields are
/// errors. Custom resources are listed in [`Report::skipped`]; any object
/// that does not match its schema fails the call with an [`Error::Invalid`]
/// naming each such object and the validator's message.
pub fn validate(objects: &[Value], version: &str) -> Result<Report, Error> {
    let program = paths::kubernetes_validate_bin().map_err(|e| match e {
        crate::Error::NotInstalled { looked, .. } => Error::NotInstalled { looked },
        other => Error::Validator {
            program: "kubernetes-validate".to_owned(),
            status: "not started".to_owned(),
            detail: other.to_string(),
        },
    })?;
    validate_with(&program, objects, version)
}

/// [`validate`] with the validator at `program`.
fn validate_with(program: &Path, objects: &[Value], version: &str) -> Result<Report, Error> {
    let wanted = major_minor(version).ok_or_else(|| Error::UnsupportedVersion {
        version: version.to_owned(),
        message: "not a Kubernetes version such as 1.33.0".to_owned(),
    })?;
    let inputs = objects
        .iter()
        .enumerate()
        .map(|(index, object)| {
            input(object).map_err(|reason| Error::NotAnObject {
                index,
                total: objects.len(),
                reason,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if inputs.is_empty() {
        return Ok(Report {
            schema_version: wanted,
            validated: Vec::new(),
            skipped: Vec::new(),
        });
    }

    let dir = tempfile::Builder::new()
        .prefix("kube-schema-")
        .tempdir()
        .map_err(io_error("create a directory for the objects"))?;
    let files: Vec<String> = (0..inputs.len()).map(|i| format!("{i:05}.json")).collect();
    for (file, input) in files.iter().zip(&inputs) {
        let text = serde_json::to_vec(&input.written).map_err(|e| Error::Io {
            context: format!("serialize {}", input.object),
            source: e.into(),
        })?;
        fs::write(dir.path().join(file), text).map_err(io_error(format!("write {file}")))?;
    }
    // The output goes to files: no pipe to drain while waiting.
    let out_dir = tempfile::Builder::new()
        .prefix("kube-schema-out-")
        .tempdir()
        .map_err(io_error("create a directory for the validator's output"))?;
    let stdout_path = out_dir.path().join("stdout");
    let stderr_path = out_dir.path().join("stderr");
    let stdout = File::create(&stdout_path).map_err(io_error("create the output file"))?;
    let stderr = File::create(&stderr_path).map_err(io_error("create the error file"))?;
    let mut cmd = Command::new(program);
    cmd.args(["--strict", "--kubernetes-version", version])
        .args(&files)
        .current_dir(dir.path())
        // Objects are UTF-8 whatever the locale.
        .env("PYTHONUTF8", "1")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    let limit = RUN_BASE + RUN_PER_OBJECT * u32::try_from(inputs.len()).unwrap_or(u32::MAX);
    let status = run(&mut cmd, program, limit)?;
    let printed =
        fs::read_to_string(&stdout_path).map_err(io_error("read the validator's output"))?;
    let complaints = fs::read_to_string(&stderr_path).unwrap_or_default();
    let failed = |detail: String| Error::Validator {
        program: program.display().to_string(),
        status: status.to_string(),
        detail,
    };

    let parsed = parse(&printed, &files);
    if let Some(message) = parsed.fatal {
        return Err(Error::UnsupportedVersion {
            version: version.to_owned(),
            message,
        });
    }
    let schema_version = parsed.schema_version.unwrap_or(wanted);
    let mut report = Report {
        schema_version: schema_version.clone(),
        validated: Vec::new(),
        skipped: Vec::new(),
    };
    let mut violations = Vec::new();
    let mut broken = Vec::new();
    for (input, verdict) in inputs.into_iter().zip(parsed.verdicts) {
        match verdict {
            Some(Verdict::Passed) => report.validated.push(input.object),
            Some(Verdict::Failed { path, message }) => violations.push(Violation {
                object: input.object,
                path,
                message,
            }),
            Some(Verdict::NoSchema(reason)) if input.kubernetes_group => {
                violations.push(Violation {
                    message: format!(
                        "Kubernetes {schema_version} has no kind {} in {} ({reason})",
                        input.object.kind, input.object.api_version
                    ),
                    object: input.object,
                    path: String::new(),
                });
            }
            Some(Verdict::NoSchema(reason)) => report.skipped.push(Skipped {
                object: input.object,
                reason,
            }),
            Some(Verdict::Broken(message)) => broken.push(format!("{}: {message}", input.object)),
            None => broken.push(format!("{}: no verdict", input.object)),
        }
    }
    if !broken.is_empty() {
        if broken
            .iter()
            .all(|b| b.ends_with("list index out of range"))
        {
            // It looks for the newest schemas not newer than the version
            // asked for, and finds none.
            return Err(Error::UnsupportedVersion {
                version: version.to_owned(),
                message: "kubernetes-validate has no schemas that old".to_owned(),
            });
        }
        let mut detail = broken.join("\n  ");
        if !complaints.trim().is_empty() {
            detail.push_str("\n--- its error output ---\n");
            detail.push_str(tail(&complaints, 40));
        }
        return Err(failed(detail));
    }
    if !violations.is_empty() {
        return Err(Error::Invalid {
            schema_version,
            total: report.validated.len() + report.skipped.len() + violations.len(),
            violations,
        });
    }
    Ok(report)
}

/// Runs `cmd` to completion, killing it after `limit`.
fn run(cmd: &mut Command, program: &Path, limit: Duration) -> Result<ExitStatus, Error> {
    let mut child = cmd.spawn().map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            Error::NotInstalled {
                looked: program.display().to_string(),
            }
        } else {
            Error::Io {
                context: format!("run {}", program.display()),
                source: e,
            }
        }
    })?;
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child
            .try_wait()
            .map_err(io_error(format!("wait for {}", program.display())))?
        {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::Validator {
                program: program.display().to_string(),
                status: "killed".to_owned(),
                detail: format!("it did not finish within {limit:?}"),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> &str {
    let trimmed = text.trim_end();
    let start = trimmed
        .rmatch_indices('\n')
        .nth(lines.saturating_sub(1))
        .map_or(0, |(i, _)| i + 1);
    &trimmed[start..]
}

/// "1.33" of "1.33.0", "v1.33" or "1.33".
fn major_minor(version: &str) -> Option<String> {
    let version = version.strip_prefix('v').unwrap_or(version);
    let mut parts = version.split('.');
    let major = parts.next().filter(|p| is_number(p))?;
    let minor = parts.next().filter(|p| is_number(p))?;
    match parts.next() {
        None => {}
        Some(patch) if is_number(patch) && parts.next().is_none() => {}
        Some(_) => return None,
    }
    Some(format!("{major}.{minor}"))
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// One object as the validator gets it.
#[derive(Debug)]
struct Input {
    object: ObjectRef,
    /// Whether its API group is one of Kubernetes' own.
    kubernetes_group: bool,
    /// What is written for the validator (with a name if it had only a
    /// generateName: the validator names every object it reports on).
    written: Value,
}

fn input(value: &Value) -> Result<Input, String> {
    let object = value
        .as_object()
        .ok_or_else(|| format!("a JSON {} instead of an object", json_type(value)))?;
    let text = |field: &str| -> Result<String, String> {
        match object.get(field) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(Value::String(_)) | None => Err(format!("it has no {field}")),
            Some(other) => Err(format!("its {field} is a JSON {}", json_type(other))),
        }
    };
    let api_version = text("apiVersion")?;
    let kind = text("kind")?;
    let metadata = object
        .get("metadata")
        .and_then(Value::as_object)
        .ok_or_else(|| format!("the {kind} has no metadata"))?;
    let field = |name: &str| -> Result<Option<String>, String> {
        match metadata.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(format!(
                "the {kind}'s metadata.{name} is a JSON {}",
                json_type(other)
            )),
        }
    };
    let namespace = field("namespace")?;
    let mut written = value.clone();
    let name = match (field("name")?, field("generateName")?) {
        (Some(name), _) if !name.is_empty() => name,
        (_, Some(prefix)) if !prefix.is_empty() => {
            written["metadata"]["name"] = Value::String(format!("{prefix}generated"));
            prefix
        }
        _ => {
            return Err(format!(
                "the {kind} has neither metadata.name nor metadata.generateName"
            ));
        }
    };
    let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
    Ok(Input {
        kubernetes_group: !group.contains('.') || KUBERNETES_GROUPS.contains(&group),
        object: ObjectRef {
            api_version,
            kind,
            namespace,
            name,
        },
        written,
    })
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// What the validator said about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Passed,
    Failed {
        path: String,
        message: String,
    },
    /// "Couldn't find schema for kind …".
    NoSchema(String),
    /// It could not check the object.
    Broken(String),
}

#[derive(Debug, Default)]
struct Parsed {
    /// One per file, in order.
    verdicts: Vec<Option<Verdict>>,
    /// The schema version named in its lines ("1.33").
    schema_version: Option<String>,
    /// A `FATAL` line: no schemas for that version.
    fatal: Option<String>,
}

/// Reads kubernetes-validate's report: one line per object, starting with
/// its level and file name —
///
/// ```text
/// INFO 00000.json passed for resource deployment/web against version 1.33
/// ERROR 00001.json did not validate for resource deployment/web2 against version 1.33: spec: Additional properties are not allowed ('foo' was unexpected)
/// WARN 00002.json Couldn't find schema for kind CiliumNetworkPolicy with api version cilium.io/v2 for kubernetes version 1.33
/// ERROR 00003.json could not be validated: …
/// FATAL kubernetes-validate 1.37.0 does not support kubernetes version 1.99
/// ```
///
/// A line that starts none of these continues the previous message.
fn parse(printed: &str, files: &[String]) -> Parsed {
    let mut parsed = Parsed {
        verdicts: vec![None; files.len()],
        ..Parsed::default()
    };
    let index = |file: &str| files.iter().position(|f| f == file);
    let mut last: Option<usize> = None;
    for line in printed.lines() {
        if line.starts_with("FATAL ") {
            parsed.fatal = Some(line.to_owned());
            last = None;
            continue;
        }
        let entry = ["INFO ", "ERROR ", "WARN "].iter().find_map(|level| {
            let rest = line.strip_prefix(level)?;
            let (file, rest) = rest.split_once(' ')?;
            Some((*level, index(file)?, rest))
        });
        let Some((level, i, rest)) = entry else {
            // A message that spans lines.
            if let Some(Some(Verdict::Failed { message, .. } | Verdict::Broken(message))) =
                last.and_then(|i| parsed.verdicts.get_mut(i))
            {
                message.push('\n');
                message.push_str(line);
            }
            continue;
        };
        let verdict = match level {
            "INFO " if rest.starts_with("passed for resource ") => {
                if let Some((_, version)) = rest.rsplit_once(" against version ") {
                    parsed
                        .schema_version
                        .get_or_insert_with(|| version.trim().to_owned());
                }
                Verdict::Passed
            }
            "ERROR " if rest.starts_with("did not validate for resource ") => {
                let after = rest
                    .split_once(" against version ")
                    .map_or(rest, |(_, after)| after);
                let (version, after) = after.split_once(": ").unwrap_or(("", after));
                if !version.is_empty() {
                    parsed
                        .schema_version
                        .get_or_insert_with(|| version.to_owned());
                }
                let (path, message) = after.split_once(": ").unwrap_or(("", after));
                Verdict::Failed {
                    path: path.to_owned(),
                    message: message.to_owned(),
                }
            }
            "WARN " if rest.starts_with("Couldn't find schema for kind ") => {
                Verdict::NoSchema(rest.to_owned())
            }
            _ => Verdict::Broken(
                rest.strip_prefix("could not be validated: ")
                    .unwrap_or(rest)
                    .to_owned(),
            ),
        };
        parsed.verdicts[i] = Some(verdict);
        last = Some(i);
    }
    parsed
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn deployment(name: &str) -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": "ctrl-test"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {
                        "containers": [{
                            "name": "web",
                            "image": "registry.local/web:1",
                            "imagePullPolicy": "IfNotPresent",
                            "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                        }],
                    },
                },
            },
        })
    }

    fn invalid(result: Result<Report, Error>) -> Vec<Violation> {
        match result {
            Err(Error::Invalid { violations, .. }) => violations,
            other => panic!("expected schema violations, got {other:?}"),
        }
    }

    #[test]
    fn a_valid_deployment_passes() {
        let report = validate(&[deployment("web")], KUBERNETES_VERSION).unwrap();
        assert_eq!(report.schema_version, "1.33");
        assert_eq!(report.validated.len(), 1);
        assert_eq!(report.validated[0].to_string(), "Deployment ctrl-test/web");
        assert!(report.skipped.is_empty());
    }

    #[test]
    fn a_wrong_type_fails_naming_the_object_and_the_field() {
        let mut bad = deployment("web");
        bad["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = json!(5);
        let violations = invalid(validate(&[deployment("ok"), bad], KUBERNETES_VERSION));
        assert_eq!(violations.len(), 1, "{violations:?}");
        let v = &violations[0];
        assert_eq!(v.object.to_string(), "Deployment ctrl-test/web");
        assert_eq!(v.path, "spec.template.spec.containers.0.imagePullPolicy");
        assert!(v.message.contains("is not of type 'string'"), "{v}");
    }

    /// Kubernetes' OpenAPI documents carry no enums: an API server rejects
    /// `Sometimes`, the schemas do not. Kept as a test so that nobody counts
    /// on them for it.
    #[test]
    fn enum_values_are_not_in_the_schemas() {
        let mut sometimes = deployment("web");
        sometimes["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] =
            json!("Sometimes");
        let report = validate(&[sometimes], KUBERNETES_VERSION).unwrap();
        assert_eq!(report.validated.len(), 1);
    }

    #[test]
    fn an_unknown_field_fails_in_strict_mode() {
        let mut bad = deployment("web");
        bad["spec"]["foo"] = json!("bar");
        let err = validate(&[bad], KUBERNETES_VERSION).unwrap_err();
        let text = err.to_string();
        let violations = invalid(Err(err));
        assert_eq!(violations[0].path, "spec");
        assert!(
            violations[0]
                .message
                .contains("Additional properties are not allowed ('foo' was unexpected)"),
            "{text}"
        );
        assert!(text.contains("Deployment ctrl-test/web: spec: "), "{text}");
    }

    #[test]
    fn custom_resources_are_skipped() {
        let policy = json!({
            "apiVersion": "cilium.io/v2",
            "kind": "CiliumNetworkPolicy",
            "metadata": {"name": "web", "namespace": "ctrl-test"},
            "spec": {"endpointSelector": {}, "ingress": [{}]},
        });
        let application = json!({
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Application",
            "metadata": {"name": "web", "namespace": "argocd"},
            "spec": {"project": "default"},
        });
        let report = validate(
            &[policy, deployment("web"), application],
            KUBERNETES_VERSION,
        )
        .unwrap();
        assert_eq!(report.validated.len(), 1);
        let skipped: Vec<String> = report
            .skipped
            .iter()
            .map(|s| s.object.to_string())
            .collect();
        assert_eq!(
            skipped,
            [
                "CiliumNetworkPolicy ctrl-test/web",
                "Application argocd/web"
            ]
        );
        assert!(
            report.skipped[0].reason.contains("CiliumNetworkPolicy"),
            "{:?}",
            report.skipped[0]
        );
    }

    #[test]
    fn unknown_kinds_of_kubernetes_groups_fail() {
        let mut typo = deployment("web");
        typo["kind"] = json!("Deploymnet");
        let removed = json!({
            "apiVersion": "policy/v1beta1",
            "kind": "PodSecurityPolicy",
            "metadata": {"name": "restricted"},
            "spec": {},
        });
        let violations = invalid(validate(&[typo, removed], KUBERNETES_VERSION));
        assert_eq!(violations.len(), 2, "{violations:?}");
        assert!(
            violations[0]
                .message
                .starts_with("Kubernetes 1.33 has no kind Deploymnet in apps/v1"),
            "{}",
            violations[0]
        );
        assert_eq!(violations[1].object.kind, "PodSecurityPolicy");
    }

    #[test]
    fn a_secret_with_string_data_passes() {
        let secret = json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "web-env", "namespace": "ctrl-test"},
            "type": "Opaque",
            "stringData": {"DATABASE_URL": "mysql://u:p@db/app", "ÄPFEL": "grün ✓"},
        });
        let report = validate(&[secret], KUBERNETES_VERSION).unwrap();
        assert_eq!(report.validated[0].to_string(), "Secret ctrl-test/web-env");
    }

    #[test]
    fn objects_with_only_a_generate_name_are_validated() {
        let job = json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"generateName": "migrate-"},
            "spec": {"template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "m", "image": "busybox"}],
            }}},
        });
        let report = validate(&[job], KUBERNETES_VERSION).unwrap();
        assert_eq!(report.validated[0].to_string(), "Job migrate-");
    }

    #[test]
    fn hundreds_of_objects_take_one_run() {
        let objects: Vec<Value> = (0..300).map(|i| deployment(&format!("web-{i}"))).collect();
        let started = Instant::now();
        let report = validate(&objects, KUBERNETES_VERSION).unwrap();
        assert_eq!(report.validated.len(), 300);
        assert_eq!(report.validated[299].name, "web-299");
        let took = started.elapsed();
        assert!(took < Duration::from_secs(30), "300 objects took {took:?}");
    }

    #[test]
    fn bad_inputs_and_versions_are_named() {
        let err = validate(
            &[deployment("a"), json!({"kind": "Pod"})],
            KUBERNETES_VERSION,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "object 1 of 2 is not a Kubernetes object: it has no apiVersion"
        );
        let err = validate(
            &[json!({"apiVersion": "v1", "kind": "Pod", "metadata": {}})],
            KUBERNETES_VERSION,
        )
        .unwrap_err();
        assert!(err.to_string().contains("neither metadata.name"), "{err}");
        assert!(matches!(
            validate(&[deployment("a")], "1.99.0"),
            Err(Error::UnsupportedVersion { .. })
        ));
        assert!(matches!(
            validate(&[deployment("a")], "1.20.0"),
            Err(Error::UnsupportedVersion { .. })
        ));
        assert!(matches!(
            validate(&[deployment("a")], "latest"),
            Err(Error::UnsupportedVersion { .. })
        ));
        assert_eq!(validate(&[], "1.33").unwrap().validated.len(), 0);
    }

    #[test]
    fn a_missing_validator_is_named() {
        let err = validate_with(
            Path::new("/nonexistent/kubernetes-validate"),
            &[deployment("a")],
            KUBERNETES_VERSION,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "kubernetes-validate is not installed at /nonexistent/kubernetes-validate: run `cargo xtask deps`"
        );
    }

    #[test]
    fn parses_the_report() {
        let files: Vec<String> = (0..5).map(|i| format!("{i:05}.json")).collect();
        let printed = "\
INFO 00000.json passed for resource deployment/web against version 1.33
ERROR 00001.json did not validate for resource deployment/web2 against version 1.33: spec: Additional properties are not allowed ('foo' was unexpected)
WARN 00002.json Couldn't find schema for kind CiliumNetworkPolicy with api version cilium.io/v2 for kubernetes version 1.33
ERROR 00004.json did not validate for resource configmap/c against version 1.33: : first line
second line
";
        let parsed = parse(printed, &files);
        assert_eq!(parsed.schema_version.as_deref(), Some("1.33"));
        assert_eq!(parsed.verdicts[0], Some(Verdict::Passed));
        assert_eq!(
            parsed.verdicts[1],
            Some(Verdict::Failed {
                path: "spec".to_owned(),
                message: "Additional properties are not allowed ('foo' was unexpected)".to_owned()
            })
        );
        assert!(matches!(parsed.verdicts[2], Some(Verdict::NoSchema(_))));
        assert_eq!(parsed.verdicts[3], None);
        assert_eq!(
            parsed.verdicts[4],
            Some(Verdict::Failed {
                path: String::new(),
                message: "first line\nsecond line".to_owned()
            })
        );
        assert_eq!(major_minor("v1.33.2").as_deref(), Some("1.33"));
        assert_eq!(major_minor("1.33").as_deref(), Some("1.33"));
        assert_eq!(major_minor("1.33.x"), None);
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
    }
}
