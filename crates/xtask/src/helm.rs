//! The Helm chart (`deploy/helm/ctrl`) cannot be installed here (no
//! Kubernetes cluster), so its tests check what can go wrong without one:
//! it renders with Helm's own engine (`ctrl-helm`, on helm-python-sdk) for
//! the value sets operators use, every object matches Kubernetes' own
//! schemas, and every service config it renders loads with that service's
//! own loader — a chart that renders a config the binary rejects fails
//! here, not in a cluster. Bad values are refused by `values.schema.json`
//! or the templates, naming the value.

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::PathBuf;
    use std::process::Command;

    use ctrl_testkit::kube_schema;
    use serde_json::Value;

    fn chart() -> PathBuf {
        crate::dev::repo_root().join("deploy/helm/ctrl")
    }

    /// Secret values every chart-made Secret needs (the region is the
    /// default values' aws/us-east-1).
    const SECRETS: &str = "
secrets:
  values:
    databasePassword: 0123456789abcdef
    apiToken: api-token-0123456789abcdef
    vaultKey: AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=
    kraneTokens: {aws-us-east-1: ctrl_agent_0123456789abcdef0123456789abcdef}
    frontlineTokens: {aws-us-east-1: ctrl_agent_fedcba9876543210fedcba9876543210}
restate:
  identityKeys: [publickeyv1_w7YHemBctH5Ck2nQRQ47iBBqhNHy4FV7t2Usbye7A6f]
";

    /// A production shape: cluster-sync on its own, an existing Secret,
    /// two regions (one on Cilium), Restate in its own namespace, metrics
    /// scraped by Prometheus from the monitoring namespace.
    const SEPARATE: &str = "
secrets:
  existingSecret: ctrl-secrets
clusterSync:
  mode: separate
restate:
  namespace: restate
  identityKeys: [publickeyv1_w7YHemBctH5Ck2nQRQ47iBBqhNHy4FV7t2Usbye7A6f]
platform:
  apexDomain: apps.example.com
  cnameDomain: edge.example.net
  apexAddresses: [203.0.113.10]
regions:
  - platform: aws
    name: us-east-1
    krane: {cellId: use1-a}
    frontline: {replicas: 3, peers: {aws/eu-west-1: 'http://frontline.eu-west-1.internal:80'}}
  - platform: aws
    name: eu-west-1
    krane: {cellId: euw1-a, networkPolicy: cilium}
    frontline: {enabled: false}
krane:
  rbac: {exec: true, metrics: true}
networkPolicy:
  metricsFrom:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}
monitoring:
  serviceMonitor: {enabled: true}
log:
  otlpEndpoint: http://otel-collector.observability:4317
  otlpSampleRatio: 0.25
worker:
  extraConfig: |
    [acme]
    enabled = true
    email_domain = \"example.com\"
";

    /// A region in another cluster: only its agents, pointed at the
    /// control plane's public agent endpoint.
    const REGION_ONLY: &str = "
api: {enabled: false}
worker: {enabled: false}
controlUrl: https://agents.ctrl.example.com
secrets:
  existingSecret: ctrl-agent-secrets
regions:
  - platform: gcp
    name: europe-west4
    krane: {cellId: euw4-a, networkPolicy: 'off'}
";

    /// `helm template` of the chart with `values` (a YAML document), as
    /// JSON objects; `Err` carries Helm's message.
    fn render(values: &str) -> Result<Vec<Value>, String> {
        let helm = ctrl_testkit::paths::helm_bin().map_err(|e| e.to_string())?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let file = dir.path().join("values.yaml");
        std::fs::write(&file, values).map_err(|e| e.to_string())?;
        let out = Command::new(helm)
            .args(["template", "rel"])
            .arg(chart())
            .args(["--namespace", "ctrl", "-f"])
            .arg(&file)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        ctrl_testkit::kube::yaml_documents(&String::from_utf8_lossy(&out.stdout))
    }

    fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
        objects.iter().filter(|o| o["kind"] == kind).collect()
    }

    fn name(o: &Value) -> &str {
        o["metadata"]["name"].as_str().unwrap_or_default()
    }

    /// The environment a pod gives its config: every variable the chart
    /// sets from its Secret, with plausible values.
    fn env() -> HashMap<String, String> {
        [
            ("CTRL_DB_PASSWORD", "0123456789abcdef"),
            ("CTRL_API_TOKEN", "api-token-0123456789abcdef"),
            (
                "CTRL_VAULT_KEY",
                "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            ),
            ("KRANE_TOKEN", "ctrl_agent_0123456789abcdef0123456789abcdef"),
            (
                "FRONTLINE_TOKEN",
                "ctrl_agent_fedcba9876543210fedcba9876543210",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// `text` through a service's own config loader.
    fn load<T>(
        text: &str,
        env: &HashMap<String, String>,
        prefix: &str,
    ) -> Result<(), ctrl_runtime::config::ConfigError>
    where
        T: serde::de::DeserializeOwned + ctrl_runtime::config::Validate,
    {
        ctrl_runtime::config::parse::<T>(text, "rendered.toml", env, prefix).map(|_| ())
    }

    /// Loads every rendered config with its service's own loader; returns
    /// the files loaded.
    fn load_configs(objects: &[Value]) -> Vec<String> {
        let env = env();
        let mut loaded = Vec::new();
        for map in of_kind(objects, "ConfigMap") {
            let Some(data) = map["data"].as_object() else {
                continue;
            };
            for (file, text) in data {
                let text = text.as_str().expect("config text");
                let where_ = format!("{} {file}", name(map));
                let result = match file.as_str() {
                    "ctrl-api.toml" => {
                        load::<ctrl_api::config::Config>(text, &env, ctrl_api::config::ENV_PREFIX)
                    }
                    "ctrl-worker.toml" => load::<ctrl_worker::config::Config>(
                        text,
                        &env,
                        ctrl_worker::config::ENV_PREFIX,
                    ),
                    "ctrl-cluster-sync.toml" => load::<ctrl_cluster_sync::config::Config>(
                        text,
                        &env,
                        ctrl_cluster_sync::config::ENV_PREFIX,
                    ),
                    "krane.toml" => {
                        load::<krane::config::Config>(text, &env, krane::config::ENV_PREFIX)
                    }
                    "frontline.toml" => {
                        load::<frontline::config::Config>(text, &env, frontline::config::ENV_PREFIX)
                    }
                    other => panic!("{where_}: no loader for {other}"),
                };
                if let Err(e) = result {
                    panic!("{where_} does not load:\n{e}\n---\n{text}");
                }
                loaded.push(where_);
            }
        }
        loaded
    }

    #[test]
    fn every_value_set_renders_objects_kubernetes_accepts_and_configs_the_services_load() {
        for (label, values, configs) in [
            ("defaults", SECRETS, 5),
            ("separate", SEPARATE, 7),
            ("region only", REGION_ONLY, 2),
        ] {
            let objects = render(values).unwrap_or_else(|e| panic!("{label}: {e}"));
            let report = kube_schema::validate(&objects, kube_schema::KUBERNETES_VERSION)
                .unwrap_or_else(|e| panic!("{label}: {e}"));
            assert_eq!(
                report.validated.len() + report.skipped.len(),
                objects.len(),
                "{label}"
            );
            let loaded = load_configs(&objects);
            assert_eq!(loaded.len(), configs, "{label}: {loaded:?}");
        }
    }

    #[test]
    fn the_value_sets_shape_the_release() {
        let defaults = render(SECRETS).expect("render");
        // Mounted: ctrl-api serves the agents, no cluster-sync workload.
        let deployments: Vec<&str> = of_kind(&defaults, "Deployment")
            .into_iter()
            .map(name)
            .collect();
        assert_eq!(
            deployments,
            [
                "rel-ctrl-api",
                "rel-ctrl-frontline-aws-us-east-1",
                "rel-ctrl-krane-aws-us-east-1",
                "rel-ctrl-worker"
            ]
        );
        let separate = render(SEPARATE).expect("render");
        let deployments: Vec<&str> = of_kind(&separate, "Deployment")
            .into_iter()
            .map(name)
            .collect();
        assert!(
            deployments.contains(&"rel-ctrl-cluster-sync"),
            "{deployments:?}"
        );
        assert!(deployments.contains(&"rel-ctrl-krane-aws-eu-west-1"));
        assert!(!deployments.contains(&"rel-ctrl-frontline-aws-eu-west-1"));
        // Every service exports its spans to the collector named once.
        for config in of_kind(&separate, "ConfigMap") {
            for (file, text) in config["data"].as_object().expect("data") {
                if file.ends_with(".toml") {
                    let text = text.as_str().expect("text");
                    assert!(
                        text.contains(
                            "otlp_endpoint = \"http://otel-collector.observability:4317\"\n\
                             otlp_sample_ratio = 0.25"
                        ),
                        "{file}: {text}"
                    );
                }
            }
        }
        // The existing Secret is used, none is made (not even for the Job).
        assert!(of_kind(&separate, "Secret").is_empty());
        // Both network policy modes are granted, exec and metrics too.
        let role = of_kind(&separate, "ClusterRole")[0].to_string();
        for needed in [
            "networkpolicies",
            "ciliumnetworkpolicies",
            "pods/exec",
            "metrics.k8s.io",
        ] {
            assert!(role.contains(needed), "{needed}: {role}");
        }
        let default_role = of_kind(&defaults, "ClusterRole")[0].to_string();
        for absent in ["ciliumnetworkpolicies", "pods/exec", "metrics.k8s.io"] {
            assert!(!default_role.contains(absent), "{absent}: {default_role}");
        }
        // Prometheus scrapes every metrics Service's port.
        let monitor = of_kind(&separate, "ServiceMonitor")[0];
        let scraped: Vec<&str> = monitor["spec"]["endpoints"]
            .as_array()
            .expect("endpoints")
            .iter()
            .filter_map(|e| e["port"].as_str())
            .collect();
        let exposed: Vec<(&str, &str)> = of_kind(&separate, "Service")
            .into_iter()
            .filter(|s| s["metadata"]["labels"]["ctrl.dev/metrics"] == "true")
            .flat_map(|s| {
                s["spec"]["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(move |p| Some((name(s), p["name"].as_str()?)))
            })
            .collect();
        assert_eq!(exposed.len(), 6, "{exposed:?}");
        for (service, port) in exposed {
            assert!(scraped.contains(&port), "{service}:{port} is not scraped");
        }
        let region_only = render(REGION_ONLY).expect("render");
        assert!(
            of_kind(&region_only, "Job").is_empty(),
            "no migration without the API"
        );
        let krane = of_kind(&region_only, "ConfigMap")
            .into_iter()
            .find(|m| name(m).contains("krane"))
            .expect("krane's config")
            .to_string();
        assert!(krane.contains("https://agents.ctrl.example.com"), "{krane}");
    }

    #[test]
    fn pods_run_unprivileged_and_probe_the_ports_they_serve() {
        for values in [SECRETS, SEPARATE, REGION_ONLY] {
            let objects = render(values).expect("render");
            let pods = objects
                .iter()
                .filter(|o| o["kind"] == "Deployment" || o["kind"] == "Job")
                .map(|o| (name(o), &o["spec"]["template"]["spec"]));
            for (workload, pod) in pods {
                assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{workload}");
                let init = pod["initContainers"].as_array().into_iter().flatten();
                for c in pod["containers"]
                    .as_array()
                    .expect("containers")
                    .iter()
                    .chain(init)
                {
                    let sc = &c["securityContext"];
                    assert_eq!(sc["readOnlyRootFilesystem"], true, "{workload}");
                    assert_eq!(sc["allowPrivilegeEscalation"], false, "{workload}");
                    assert_eq!(sc["capabilities"]["drop"][0], "ALL", "{workload}");
                    let ports: Vec<&str> = c["ports"]
                        .as_array()
                        .map(|p| p.iter().filter_map(|p| p["name"].as_str()).collect())
                        .unwrap_or_default();
                    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
                        if workload.ends_with("migrate") {
                            assert!(c[probe].is_null());
                            continue;
                        }
                        let get = &c[probe]["httpGet"];
                        let port = get["port"].as_str().expect("a named port");
                        assert!(
                            ports.contains(&port),
                            "{workload} {probe}: {port} not in {ports:?}"
                        );
                        let path = get["path"].as_str().expect("a path");
                        assert!(path.starts_with("/health/"), "{workload} {probe}: {path}");
                    }
                }
                // Only krane talks to the Kubernetes API.
                let krane = workload.contains("krane");
                assert_eq!(
                    pod["automountServiceAccountToken"] != false,
                    krane,
                    "{workload}"
                );
            }
        }
    }

    #[test]
    fn the_migration_job_registers_every_agent_and_only_ctrl_reaches_restate() {
        let objects = render(SEPARATE).expect("render");
        let job = of_kind(&objects, "Job")[0];
        assert!(
            job["metadata"]["annotations"]["helm.sh/hook"]
                .as_str()
                .is_some_and(|h| h.contains("pre-install") && h.contains("pre-upgrade"))
        );
        // No shell in the image: the migration runs first, as the init
        // container, then one container per agent registers its token,
        // which it alone receives.
        let pod = &job["spec"]["template"]["spec"];
        let command = |c: &Value| -> String {
            c["command"]
                .as_array()
                .expect("a command")
                .iter()
                .map(|a| a.as_str().expect("a string"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let init = pod["initContainers"].as_array().expect("init containers");
        assert_eq!(init.len(), 1);
        assert_eq!(
            command(&init[0]),
            "ctrl-api --config /etc/ctrl/ctrl-api.toml migrate"
        );
        assert_eq!(init[0]["image"], "ghcr.io/ctrl-dev/ctrl-api:0.1.0");
        let steps: Vec<(String, String)> = pod["containers"]
            .as_array()
            .expect("containers")
            .iter()
            .map(|c| (command(c), c["env"].to_string()))
            .collect();
        for (needed, token) in [
            (
                "--kind krane --platform aws --region us-east-1 --cell-id use1-a",
                "krane-aws-us-east-1-token",
            ),
            (
                "--kind krane --platform aws --region eu-west-1 --cell-id euw1-a",
                "krane-aws-eu-west-1-token",
            ),
            (
                "--kind frontline --platform aws --region us-east-1",
                "frontline-aws-us-east-1-token",
            ),
        ] {
            let (command, env) = steps
                .iter()
                .find(|(c, _)| c.contains(needed))
                .unwrap_or_else(|| panic!("{needed}: {steps:?}"));
            assert!(
                command.starts_with("ctrl-api --config /etc/ctrl/ctrl-api.toml agents ensure ")
                    && command.ends_with("--token-env AGENT_TOKEN"),
                "{command}"
            );
            assert!(env.contains(token), "{env}");
            // Each step gets its own agent's token only.
            let tokens = env.matches("\"krane-").count() + env.matches("\"frontline-").count();
            assert_eq!(tokens, 1, "{env}");
        }
        assert_eq!(steps.len(), 3, "{steps:?}");
        // Tokens come from the Secret as variables, never on the command line.
        assert!(!steps.iter().any(|(c, _)| c.contains("ctrl_agent_")));

        // Restate's guard: in Restate's namespace, its ingress and admin
        // ports open to this release's pods only.
        let guard = of_kind(&objects, "NetworkPolicy")
            .into_iter()
            .find(|p| name(p) == "rel-ctrl-restate")
            .expect("the Restate guard");
        assert_eq!(guard["metadata"]["namespace"], "restate");
        let rules = guard["spec"]["ingress"].as_array().expect("rules");
        let ctrl = rules
            .iter()
            .find(|r| r["ports"].is_array())
            .expect("ctrl's rule");
        assert_eq!(
            ctrl["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/instance"],
            "rel"
        );
        assert_eq!(
            ctrl["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
            "ctrl"
        );
        // The worker takes requests from Restate only.
        let worker = of_kind(&objects, "NetworkPolicy")
            .into_iter()
            .find(|p| name(p) == "rel-ctrl-worker")
            .expect("the worker's policy")
            .to_string();
        assert!(
            worker.contains("\"port\":\"restate\"")
                && worker.contains("app.kubernetes.io/name\":\"restate"),
            "{worker}"
        );
    }

    #[test]
    fn bad_values_are_refused_naming_the_value() {
        for (values, named) in [
            (
                "regions: [{platform: aws, name: US_East}]",
                "/regions/0/name",
            ),
            ("clusterSync: {mode: sideways}", "/clusterSync/mode"),
            (
                "secrets: {values: {apiToken: short}}",
                "/secrets/values/apiToken",
            ),
            (
                "secrets: {existingSecret: s}\nregions: [{platform: aws, name: x}]",
                "regions: aws/x needs krane.cellId",
            ),
            ("databse: {host: mysql}", "databse"),
            // Without a Secret to use, the chart says which value is missing.
            ("{}", "secrets.values.databasePassword is required"),
        ] {
            let err = render(values).expect_err(values);
            assert!(err.contains(named), "{values}: {err}");
        }
        // A token missing for one region is named with the region.
        let missing = SECRETS.replace(
            "frontlineTokens: {aws-us-east-1: ctrl_agent_fedcba9876543210fedcba9876543210}",
            "frontlineTokens: {}",
        );
        let err = render(&missing).expect_err("no frontline token");
        assert!(
            err.contains("secrets.values.frontlineTokens.aws-us-east-1"),
            "{err}"
        );
    }
}
