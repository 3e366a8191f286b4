//! The Helm CLI the tests use (`ctrl-helm`, or `$HELM_BIN`) renders the
//! test chart as `helm template` does, and fails as helm does.

use std::path::Path;
use std::process::{Command, Output};

use ctrl_testkit::paths;

fn helm(args: &[&str], chart: &Path, more: &[&str]) -> Output {
    let bin = paths::helm_bin().expect("a Helm CLI (run `cargo xtask deps`)");
    Command::new(&bin)
        .args(args)
        .arg(chart)
        .args(more)
        .env_remove("HELM_NAMESPACE")
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", bin.display()))
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "helm failed with {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// How many lines of `text` are `line`.
fn lines(text: &str, line: &str) -> usize {
    text.lines().filter(|l| *l == line).count()
}

#[test]
fn renders_the_test_chart_like_helm_template() {
    let chart = paths::helm_test_chart();
    let dir = tempfile::tempdir().unwrap();
    let values = dir.path().join("values.yaml");
    std::fs::write(&values, "image: registry.local/hello:1\ngreeting: hi\n").unwrap();
    let values = values.to_str().unwrap();

    let out = helm(
        &["template", "web"],
        &chart,
        &["--namespace", "apps", "-f", values],
    );
    let text = stdout(&out);
    // Three documents, in Helm's install order, each headed by its source.
    let sources: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# Source: "))
        .collect();
    assert_eq!(
        sources,
        [
            "hello/templates/configmap.yaml",
            "hello/templates/service.yaml",
            "hello/templates/deployment.yaml"
        ],
        "{text}"
    );
    assert_eq!(text.lines().filter(|l| *l == "---").count(), 3, "{text}");
    assert!(text.starts_with("---\n# Source: hello/templates/configmap.yaml\n"));
    // .Release.Name through the fullname helper, .Release.Namespace, .Values.
    assert_eq!(lines(&text, "  name: web-hello"), 3, "{text}");
    assert_eq!(lines(&text, "  namespace: apps"), 3, "{text}");
    assert!(
        text.contains("    app.kubernetes.io/instance: web\n"),
        "{text}"
    );
    assert!(text.contains("    helm.sh/chart: hello-0.1.0\n"), "{text}");
    assert!(
        text.contains("image: \"registry.local/hello:1\"\n"),
        "{text}"
    );
    assert!(text.contains("  GREETING: \"hi\"\n"), "{text}");
    assert!(text.contains("  replicas: 1\n"), "{text}");
    // NOTES.txt is not a manifest.
    assert!(!text.contains("is installed in"), "{text}");

    // --set wins over -f; a release name containing the chart's is the full name.
    let out = helm(
        &["template", "hello-prod"],
        &chart,
        &["-n", "prod", "-f", values, "--set", "replicas=3"],
    );
    let text = stdout(&out);
    assert!(text.contains("  replicas: 3\n"), "{text}");
    assert_eq!(lines(&text, "  name: hello-prod"), 3, "{text}");
}

#[test]
fn a_missing_required_value_fails_with_helms_message() {
    let out = helm(&["template", "web"], &paths::helm_test_chart(), &[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(
            "Error: execution error at (hello/templates/deployment.yaml:22:20): \
             image is required: set it with --set image=REPOSITORY:TAG"
        ),
        "{stderr}"
    );

    let out = helm(
        &["template", "Web_1"],
        &paths::helm_test_chart(),
        &["--set", "image=x"],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(
            "Error: release name check failed: release name \"Web_1\": invalid release name"
        ),
        "{stderr}"
    );

    let out = helm(&["template", "web"], Path::new("/nonexistent/chart"), &[]);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "Error: path \"/nonexistent/chart\" not found\n"
    );
}

#[test]
fn shows_the_chart_and_its_version() {
    let out = helm(&["show", "chart"], &paths::helm_test_chart(), &[]);
    assert_eq!(
        stdout(&out),
        "apiVersion: v2\nappVersion: 1.0.0\ndescription: A tiny chart for ctrl's Helm tests\n\
         name: hello\ntype: application\nversion: 0.1.0\n\n"
    );
    let bin = paths::helm_bin().unwrap();
    let out = Command::new(bin)
        .args(["version", "--short"])
        .output()
        .unwrap();
    let version = stdout(&out);
    assert!(
        version.starts_with('v') && version.ends_with('\n'),
        "{version}"
    );
}
