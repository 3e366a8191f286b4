//! docker-compose.yml cannot run here (no Docker engine), so its tests
//! check what can go wrong without one: the file's structure, that it
//! publishes the native stack's ports, and that every service reads the
//! same config file as `cargo xtask dev` with exactly the environment that
//! file needs. With a `docker` client on PATH, `docker compose config`
//! validates it too.

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap};

    use yaml_rust2::{Yaml, YamlLoader};

    use crate::dev::ports;
    use crate::dev::repo_root as root;

    fn compose() -> Yaml {
        let text = std::fs::read_to_string(root().join("docker-compose.yml")).expect("read");
        let mut docs = YamlLoader::load_from_str(&text).expect("docker-compose.yml is YAML");
        assert_eq!(docs.len(), 1, "one document");
        docs.remove(0)
    }

    /// A service's key, following a `<<` merge (the `x-ctrl` anchor).
    fn get<'a>(service: &'a Yaml, key: &str) -> &'a Yaml {
        match &service[key] {
            Yaml::BadValue => &service["<<"][key],
            value => value,
        }
    }

    fn services(doc: &Yaml) -> Vec<(String, &Yaml)> {
        doc["services"]
            .as_hash()
            .expect("services is a mapping")
            .iter()
            .map(|(k, v)| (k.as_str().expect("service name").to_owned(), v))
            .collect()
    }

    fn strings(v: &Yaml) -> Vec<String> {
        v.as_vec()
            .map(|items| {
                items
                    .iter()
                    .map(|i| i.as_str().expect("a string").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn environment(service: &Yaml) -> HashMap<String, String> {
        get(service, "environment")
            .as_hash()
            .map(|h| {
                h.iter()
                    .map(|(k, v)| {
                        let value = match v {
                            Yaml::String(s) => s.clone(),
                            Yaml::Integer(i) => i.to_string(),
                            other => panic!("environment value {other:?}"),
                        };
                        (k.as_str().expect("env name").to_owned(), value)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn the_file_is_well_formed() {
        let doc = compose();
        let allowed = ["name", "services", "volumes", "networks", "x-ctrl"];
        for (key, _) in doc.as_hash().expect("a mapping") {
            let key = key.as_str().expect("string keys");
            assert!(allowed.contains(&key), "unexpected top-level key {key}");
        }
        let all = services(&doc);
        let names: BTreeSet<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
        let volumes: BTreeSet<&str> = doc["volumes"]
            .as_hash()
            .map(|h| h.keys().filter_map(Yaml::as_str).collect())
            .unwrap_or_default();
        for (name, service) in &all {
            assert!(
                !get(service, "image").is_badvalue() || !get(service, "build").is_badvalue(),
                "{name} has neither image nor build"
            );
            if let Some(deps) = get(service, "depends_on").as_hash() {
                for dep in deps.keys().filter_map(Yaml::as_str) {
                    assert!(names.contains(dep), "{name} depends on unknown {dep}");
                }
            }
            for volume in strings(get(service, "volumes")) {
                let source = volume.split(':').next().unwrap_or_default();
                if source.starts_with('.') {
                    assert!(
                        root().join(source).exists(),
                        "{name} mounts missing {source}"
                    );
                } else if !source.starts_with('/') {
                    assert!(
                        volumes.contains(source),
                        "{name}: undeclared volume {source}"
                    );
                }
            }
            for port in strings(get(service, "ports")) {
                assert!(
                    port.starts_with("127.0.0.1:"),
                    "{name} publishes {port} beyond loopback"
                );
            }
            if get(service, "network_mode").as_str() == Some("host") {
                assert!(
                    get(service, "ports").is_badvalue(),
                    "{name} uses host networking and cannot publish ports"
                );
            }
        }
        // ctrl's services run the images `cargo xtask images` builds: one
        // per Dockerfile target, read-only with a writable /tmp.
        let dockerfile =
            std::fs::read_to_string(root().join("deploy/Dockerfile")).expect("the Dockerfile");
        let targets: BTreeSet<String> = crate::images::targets(&dockerfile)
            .expect("targets")
            .into_iter()
            .map(|t| t.name)
            .collect();
        let mut used = BTreeSet::new();
        for (name, service) in &all {
            let image = get(service, "image").as_str().unwrap_or_default();
            if let Some(target) = image
                .strip_prefix("localhost/")
                .and_then(|i| i.strip_suffix(":dev"))
            {
                assert!(targets.contains(target), "{name}: no target {target}");
                assert_eq!(get(service, "read_only").as_bool(), Some(true), "{name}");
                assert_eq!(strings(get(service, "tmpfs")), ["/tmp"], "{name}");
                used.insert(target.to_owned());
            }
        }
        assert!(
            targets
                .iter()
                .all(|t| used.contains(t) || t == "ctrl-cluster-sync"),
            "targets no service runs: {targets:?} vs {used:?}"
        );
        docker_compose_config();
    }

    #[test]
    fn it_publishes_the_native_stacks_ports() {
        let doc = compose();
        let published = |service: &str| -> Vec<u16> {
            strings(get(&doc["services"][service], "ports"))
                .iter()
                .map(|p| {
                    p.split(':')
                        .nth(1)
                        .and_then(|h| h.parse().ok())
                        .expect("127.0.0.1:HOST:CONTAINER")
                })
                .collect()
        };
        assert_eq!(published("mariadb"), [ports::MYSQL]);
        assert_eq!(
            published("restate"),
            [ports::RESTATE_INGRESS, ports::RESTATE_ADMIN]
        );
        assert_eq!(published("ctrl-worker"), [ports::WORKER_HEALTH]);
        // ctrl-api and krane share the host's network (ctrl-api reads
        // krane's log endpoint there): their own listeners are the ports,
        // on loopback, and they reach the others through published ports.
        let api = environment(&doc["services"]["ctrl-api"]);
        assert_eq!(api["CTRL_API_LISTEN"], format!("127.0.0.1:{}", ports::API));
        assert_eq!(
            api["DATABASE_URL"],
            format!("mysql://ctrl:ctrl@127.0.0.1:{}/ctrl", ports::MYSQL)
        );
        assert_eq!(
            api["RESTATE_INGRESS_URL"],
            format!("http://127.0.0.1:{}", ports::RESTATE_INGRESS)
        );
        assert_eq!(
            api["RESTATE_ADMIN_URL"],
            format!("http://127.0.0.1:{}", ports::RESTATE_ADMIN)
        );
        let edge = environment(&doc["services"]["frontline"]);
        for (var, port) in [
            ("FRONTLINE_HTTP_LISTEN", ports::EDGE_HTTP),
            ("FRONTLINE_HTTPS_LISTEN", ports::EDGE_HTTPS),
            ("FRONTLINE_ADMIN_LISTEN", ports::EDGE_ADMIN),
        ] {
            assert_eq!(edge[var], format!("127.0.0.1:{port}"));
        }
        let krane = environment(&doc["services"]["krane"]);
        assert_eq!(
            krane["KRANE_LISTEN"],
            format!("127.0.0.1:{}", ports::KRANE_HEALTH)
        );
        assert_eq!(
            krane["CTRL_API_URL"],
            format!("http://127.0.0.1:{}", ports::API)
        );
    }

    /// `${VAR}` references of a config file: (name, has a default).
    fn references(text: &str) -> Vec<(String, bool)> {
        let mut out = Vec::new();
        for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
            let mut rest = line;
            while let Some(start) = rest.find("${") {
                let inner = &rest[start + 2..];
                let end = inner.find('}').expect("closed ${…}");
                let reference = &inner[..end];
                let (name, default) = match reference.split_once(":-") {
                    Some((name, _)) => (name, true),
                    None => (reference, false),
                };
                out.push((name.to_owned(), default));
                rest = &inner[end..];
            }
        }
        out
    }

    #[test]
    fn services_read_the_dev_config_files_with_the_environment_they_need() {
        let doc = compose();
        let mut checked = 0;
        for (name, service) in services(&doc) {
            let command = strings(get(service, "command"));
            let Some(at) = command.iter().position(|a| a == "--config") else {
                continue;
            };
            let in_container = &command[at + 1];
            let file = in_container
                .strip_prefix("/etc/ctrl/")
                .unwrap_or_else(|| panic!("{name} reads {in_container}, not from /etc/ctrl"));
            let volumes = strings(get(service, "volumes"));
            assert!(
                volumes.iter().any(|v| v == "./deploy/dev:/etc/ctrl:ro"),
                "{name} does not mount deploy/dev"
            );
            let text = std::fs::read_to_string(root().join("deploy/dev").join(file))
                .unwrap_or_else(|e| panic!("{name}: deploy/dev/{file}: {e}"));
            let refs = references(&text);
            let env = environment(service);
            for (var, has_default) in &refs {
                assert!(
                    *has_default || env.contains_key(var),
                    "{name}: {file} needs {var}, which the service does not set"
                );
            }
            // `agents ensure` reads the agent's token from the variable it names.
            let token_env = command
                .iter()
                .position(|a| a == "--token-env")
                .map(|at| command[at + 1].as_str());
            for var in env.keys() {
                assert!(
                    refs.iter().any(|(r, _)| r == var) || token_env == Some(var.as_str()),
                    "{name} sets {var}, which {file} never reads (a typo?)"
                );
            }
            checked += 1;
        }
        assert_eq!(
            checked, 7,
            "migrate, register-krane, register-frontline, ctrl-worker, ctrl-api, krane and frontline"
        );
    }

    /// `docker compose config` when a client with the compose plugin is
    /// installed (not on the machines this project is built on).
    fn docker_compose_config() {
        let has_compose = std::process::Command::new("docker")
            .args(["compose", "version"])
            .output()
            .is_ok_and(|out| out.status.success());
        if !has_compose {
            return;
        }
        let out = std::process::Command::new("docker")
            .args(["compose", "-f"])
            .arg(root().join("docker-compose.yml"))
            .args(["config", "--quiet"])
            .env("CTRL_TOKEN", "0123456789abcdef0123")
            .env("CTRL_AGENT_TOKEN", "0123456789abcdef0123456789abcdef")
            .env("CTRL_EDGE_TOKEN", "fedcba9876543210fedcba9876543210")
            .env(
                "CTRL_VAULT_KEY",
                "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            )
            .output()
            .expect("run docker compose config");
        assert!(
            out.status.success(),
            "docker compose config: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
