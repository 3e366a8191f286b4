//! `cargo xtask deps`: install or verify every real dependency the tests and
//! the dev stack use.
//!
//! Each dependency is one entry in [`all`]: how to tell that a usable version
//! is present, and how to install it (apt packages, a binary shipped in an
//! npm package, `cargo install`, pip into the user cache's virtualenv, or a
//! script of this repository into that virtualenv).
//! Adding one is one more entry. Checks are cheap `--version`/`--help`/
//! `dpkg-query` calls, so a warm run takes about a second; installs happen
//! only for what is missing.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use std::{env, fs};

use anyhow::{Context, Result, bail};
use ctrl_testkit::{kube_schema, paths};

/// One dependency: what it is for, how to check it, how to install it.
struct Dep {
    name: &'static str,
    purpose: &'static str,
    /// `Ok(description of what was found)` or `Err(why it is not usable)`.
    check: fn() -> Result<String, String>,
    install: Install,
}

enum Install {
    /// Debian packages; needs root (or password-less sudo).
    Apt(&'static [&'static str]),
    /// A static binary inside an npm package, copied into the user cache.
    NpmBinary {
        package: fn() -> String,
        path_in_package: &'static str,
        dest: fn() -> PathBuf,
    },
    /// `cargo install --locked <crate>`.
    Cargo(&'static str),
    /// `cargo install <crate>@<version> --features <features> --locked
    /// --root <root>`: a pinned tool in the user cache, off `PATH`.
    CargoPinned {
        krate: &'static str,
        version: &'static str,
        features: &'static [&'static str],
        root: fn() -> PathBuf,
    },
    /// Python packages (pinned requirement specifiers) installed with pip
    /// into a virtualenv made from Debian's `python3` (never a `python3`
    /// that happens to be first on `PATH`, such as a pyenv shim).
    Pip {
        venv: fn() -> PathBuf,
        packages: fn() -> Vec<String>,
    },
    /// A Python script of this repository copied to `dest` (in the
    /// virtualenv's `bin/`) with its shebang naming the virtualenv's python,
    /// as pip does for a package's console scripts.
    VenvScript {
        source: fn() -> PathBuf,
        dest: fn() -> PathBuf,
    },
}

/// Everything the tests and the dev stack need, in install order.
fn all() -> Vec<Dep> {
    vec![
        Dep {
            name: "restate-server",
            purpose: "durable workflows (tests, dev stack)",
            check: check_restate,
            install: Install::NpmBinary {
                package: || {
                    format!(
                        "@restatedev/restate-server-{}@{}",
                        npm_platform(),
                        paths::RESTATE_VERSION
                    )
                },
                path_in_package: "package/bin/restate-server",
                dest: paths::restate_server_install_path,
            },
        },
        Dep {
            name: "buf",
            purpose: "proto lint (tests)",
            check: check_buf,
            install: Install::NpmBinary {
                package: || {
                    let arch = match env::consts::ARCH {
                        "aarch64" => "linux-aarch64",
                        _ => "linux-x64",
                    };
                    format!("@bufbuild/buf-{arch}@{}", paths::BUF_VERSION)
                },
                path_in_package: "package/bin/buf",
                dest: paths::buf_install_path,
            },
        },
        Dep {
            name: "mariadb",
            purpose: "the database (tests, dev stack)",
            check: check_mariadb,
            install: Install::Apt(&["mariadb-server"]),
        },
        Dep {
            name: "podman",
            purpose: "containers behind the Docker-compatible API (tests, dev stack)",
            check: check_podman,
            // runc must be named: podman depends on `crun | runc`, and crun
            // fails on this kind of host (cgroups in hybrid mode). netavark
            // executes `iptables` for every published port, but its package
            // only recommends it. The engine test traces what podman runs
            // and fails when a package is missing here.
            install: Install::Apt(&[
                "podman",
                "runc",
                "netavark",
                "aardvark-dns",
                "catatonit",
                "fuse-overlayfs",
                "slirp4netns",
                "uidmap",
                "iptables",
            ]),
        },
        Dep {
            name: "strace",
            purpose: "tracing what podman executes (`deps --check`, the engine test)",
            check: || dpkg_installed("strace"),
            install: Install::Apt(&["strace"]),
        },
        Dep {
            name: "libc6-dev",
            purpose: "glibc's static libraries, for the static ctrl-init (secret variables)",
            check: || dpkg_installed("libc6-dev"),
            install: Install::Apt(&["libc6-dev"]),
        },
        Dep {
            name: "binutils",
            purpose: "`strip`, for the binaries `cargo xtask images` packs",
            check: || dpkg_installed("binutils"),
            install: Install::Apt(&["binutils"]),
        },
        Dep {
            name: "ca-certificates",
            purpose: "the CA bundle `cargo xtask images` puts into the images",
            check: || dpkg_installed("ca-certificates"),
            install: Install::Apt(&["ca-certificates"]),
        },
        Dep {
            name: "busybox-static",
            purpose: "tiny test images built without a registry",
            check: || dpkg_installed("busybox-static"),
            install: Install::Apt(&["busybox-static"]),
        },
        Dep {
            name: "nginx",
            purpose: "the reverse proxy frontline's benchmark compares against (started by the bench on loopback)",
            check: || dpkg_installed("nginx-light"),
            install: Install::Apt(&["nginx-light"]),
        },
        Dep {
            name: "pebble",
            purpose: "a real ACME CA (pebble) and scriptable DNS (pebble-challtestsrv) for tests",
            check: check_pebble,
            install: Install::Apt(&["pebble"]),
        },
        Dep {
            name: "python3-venv",
            purpose: "the virtualenv the Python tools are installed into (Debian's python3 has no ensurepip without it)",
            check: || dpkg_installed("python3-venv"),
            install: Install::Apt(&["python3-venv"]),
        },
        Dep {
            name: "moto",
            purpose: "AWS APIs (Route53, S3) on loopback for tests",
            check: check_moto,
            install: Install::Pip {
                venv: paths::venv_dir,
                packages: || vec![format!("moto[server]=={}", paths::MOTO_VERSION)],
            },
        },
        Dep {
            name: "kubernetes-validate",
            purpose: "Kubernetes' own schemas for the objects the Kubernetes backend renders (tests)",
            check: check_kubernetes_validate,
            install: Install::Pip {
                venv: paths::venv_dir,
                packages: || {
                    vec![format!(
                        "kubernetes-validate=={}",
                        paths::KUBERNETES_VALIDATE_VERSION
                    )]
                },
            },
        },
        Dep {
            name: "helm-python-sdk",
            purpose: "Helm's Go engine as a shared library, which ctrl-helm drives (tests)",
            check: check_helm_python_sdk,
            install: Install::Pip {
                venv: paths::venv_dir,
                packages: || {
                    vec![format!(
                        "helm-python-sdk=={}",
                        paths::HELM_PYTHON_SDK_VERSION
                    )]
                },
            },
        },
        Dep {
            name: "ctrl-helm",
            purpose: "the helm CLI's `template` and `show` on Helm's engine, for the Helm engine's tests",
            check: check_ctrl_helm,
            install: Install::VenvScript {
                source: paths::helm_program_source,
                dest: paths::helm_install_path,
            },
        },
        Dep {
            name: "s3s-fs",
            purpose: "S3 with signature checks on loopback (tests, dev stack)",
            check: check_s3s_fs,
            install: Install::CargoPinned {
                krate: "s3s-fs",
                version: paths::S3S_FS_VERSION,
                features: &["binary"],
                root: paths::s3s_fs_root,
            },
        },
        Dep {
            name: "docker-registry",
            purpose: "a container registry on loopback (tests, dev stack)",
            check: check_docker_registry,
            install: Install::Apt(&["docker-registry"]),
        },
        Dep {
            name: "cargo-nextest",
            purpose: "the test runner",
            check: || version_of(Command::new(cargo()).args(["nextest", "--version"])),
            install: Install::Cargo("cargo-nextest"),
        },
    ]
}

/// Programs ctrl's own code (testkit, xtask) runs by name; each must come
/// from a package [`apt_packages`] installs. A test keeps this list equal to
/// what the code names.
pub(crate) const PROGRAMS: &[&str] = &[
    "podman",
    "tar",
    "mariadbd",
    "mariadb-install-db",
    "busybox",
    "runc",
    "netavark",
    "catatonit",
    "iptables",
    "dpkg-query",
    "strace",
    "sleep",
    "nginx",
    "pebble",
    "pebble-challtestsrv",
    "docker-registry",
    "strip",
    "ldd",
];

/// Programs ctrl's code runs from the virtualenv by path (through
/// [`paths`]), never by name: `deps` installs them with pip (or as a
/// [`Install::VenvScript`]), and the interpreter their shebang names must
/// come from a package [`apt_packages`] installs, which the engine check and
/// its test verify. None of them executes another program.
pub(crate) fn venv_programs() -> [PathBuf; 3] {
    [
        paths::moto_install_path(),
        paths::kubernetes_validate_install_path(),
        paths::helm_install_path(),
    ]
}

/// Every Debian package `deps` installs.
pub(crate) fn apt_packages() -> Vec<&'static str> {
    all()
        .into_iter()
        .filter_map(|d| match d.install {
            Install::Apt(pkgs) => Some(pkgs.iter().copied()),
            _ => None,
        })
        .flatten()
        .collect()
}

/// `cargo xtask deps`: [`ensure`], then prove that the container engine
/// runs a container whose published port answers.
pub(crate) async fn run(check_only: bool) -> Result<()> {
    ensure(check_only)?;
    crate::engine::check(&apt_packages()).await
}

/// Checks every dependency and installs what is missing. With `check_only`,
/// reports and fails instead of installing.
pub(crate) fn ensure(check_only: bool) -> Result<()> {
    let deps = all();
    let mut missing = Vec::new();
    for dep in &deps {
        match (dep.check)() {
            Ok(found) => eprintln!("  ok       {:<19} {found}", dep.name),
            Err(why) => {
                eprintln!(
                    "  missing  {:<19} {why} (needed for {})",
                    dep.name, dep.purpose
                );
                missing.push(dep);
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    if check_only {
        bail!(
            "missing: {}; run `cargo xtask deps` to install",
            missing
                .iter()
                .map(|d| d.name)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }

    // All apt packages in one transaction, then the rest one by one.
    let apt: Vec<&str> = missing
        .iter()
        .filter_map(|d| match d.install {
            Install::Apt(pkgs) => Some(pkgs.iter().copied()),
            _ => None,
        })
        .flatten()
        .collect();
    if !apt.is_empty() {
        apt_install(&apt)?;
    }
    for dep in &missing {
        match &dep.install {
            Install::Apt(_) => {}
            Install::NpmBinary {
                package,
                path_in_package,
                dest,
            } => {
                npm_binary(&package(), path_in_package, &dest())
                    .with_context(|| format!("installing {}", dep.name))?;
            }
            Install::Cargo(krate) => cargo_install(krate)?,
            Install::CargoPinned {
                krate,
                version,
                features,
                root,
            } => cargo_install_pinned(krate, version, features, &root())?,
            Install::Pip { venv, packages } => pip_install(&venv(), &packages())
                .with_context(|| format!("installing {}", dep.name))?,
            Install::VenvScript { source, dest } => install_venv_script(&source(), &dest())
                .with_context(|| format!("installing {}", dep.name))?,
        }
        match (dep.check)() {
            Ok(found) => eprintln!("  ok       {:<19} {found} (installed)", dep.name),
            Err(why) => bail!(
                "{} is still not usable after installing it: {why}",
                dep.name
            ),
        }
    }
    Ok(())
}

// === checks ===

fn check_restate() -> Result<String, String> {
    let path = paths::restate_server_bin().map_err(|e| e.to_string())?;
    let version = version_of(Command::new(&path).arg("--version"))?;
    if !version.contains(paths::RESTATE_VERSION) {
        return Err(format!(
            "{} is {version}, expected {}",
            path.display(),
            paths::RESTATE_VERSION
        ));
    }
    Ok(format!("{version} ({})", path.display()))
}

fn check_buf() -> Result<String, String> {
    let path = paths::buf_bin().map_err(|e| e.to_string())?;
    let version = version_of(Command::new(&path).arg("--version"))?;
    if version != paths::BUF_VERSION {
        return Err(format!(
            "{} is {version}, expected {}",
            path.display(),
            paths::BUF_VERSION
        ));
    }
    Ok(format!("buf {version} ({})", path.display()))
}

fn check_mariadb() -> Result<String, String> {
    let server = paths::system_program("mariadbd").map_err(|e| e.to_string())?;
    paths::system_program("mariadb-install-db").map_err(|e| e.to_string())?;
    let version = version_of(Command::new(server).arg("--version"))?;
    // "mariadbd  Ver 10.11.19-MariaDB-0+deb12u1 for debian-linux-gnu ..."
    let number = version
        .split_whitespace()
        .find(|w| w.contains("-MariaDB"))
        .and_then(|w| w.split('-').next())
        .ok_or_else(|| format!("cannot read the version from {version:?}"))?;
    if !at_least(number, (10, 11)) {
        return Err(format!(
            "MariaDB {number} is too old, 10.11 or newer is needed"
        ));
    }
    Ok(format!("MariaDB {number}"))
}

fn check_podman() -> Result<String, String> {
    for program in ["runc", "netavark", "catatonit", "iptables"] {
        if paths::system_program(program).is_err()
            && !Path::new("/usr/lib/podman").join(program).is_file()
            && !Path::new("/usr/libexec/podman").join(program).is_file()
        {
            return Err(format!("{program} not found"));
        }
    }
    let podman = paths::system_program("podman").map_err(|e| e.to_string())?;
    let version = version_of(Command::new(podman).arg("--version"))?;
    let number = version.rsplit(' ').next().unwrap_or_default();
    if !at_least(number, (4, 3)) {
        return Err(format!(
            "podman {number} is too old, 4.3 or newer is needed"
        ));
    }
    Ok(format!("podman {number} with runc"))
}

fn check_pebble() -> Result<String, String> {
    for program in ["pebble", "pebble-challtestsrv"] {
        paths::system_program(program).map_err(|e| e.to_string())?;
    }
    dpkg_installed("pebble")
}

/// s3s-fs (or `$S3S_FS_BIN`) runs and, when it is the cached install, is
/// the pinned version.
fn check_s3s_fs() -> Result<String, String> {
    let path = paths::s3s_fs_bin().map_err(|e| e.to_string())?;
    let version = version_of(Command::new(&path).arg("--version"))?;
    if path == paths::s3s_fs_install_path() && !version.contains(paths::S3S_FS_VERSION) {
        return Err(format!(
            "{} is {version}, expected {}",
            path.display(),
            paths::S3S_FS_VERSION
        ));
    }
    Ok(format!("{version} ({})", path.display()))
}

fn check_docker_registry() -> Result<String, String> {
    paths::system_program("docker-registry").map_err(|e| e.to_string())?;
    dpkg_installed("docker-registry")
}

/// moto's server from the virtualenv (or `$MOTO_SERVER_BIN`) runs, and the
/// virtualenv holds the pinned version.
fn check_moto() -> Result<String, String> {
    let path = paths::moto_server_bin().map_err(|e| e.to_string())?;
    let mut help = Command::new(&path);
    help.arg("--help");
    let out = output_within(&mut help, Duration::from_secs(30))?;
    if !out.status.success() || !String::from_utf8_lossy(&out.stdout).contains("usage") {
        return Err(format!(
            "`{} --help` failed with {}: {}",
            path.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    if path == paths::moto_install_path() {
        let found = installed_python_version(&paths::venv_dir(), "moto");
        if found.as_deref() != Some(paths::MOTO_VERSION) {
            return Err(format!(
                "the virtualenv {} has moto {}, expected {}",
                paths::venv_dir().display(),
                found.as_deref().unwrap_or("(none)"),
                paths::MOTO_VERSION
            ));
        }
    }
    Ok(format!("moto {} ({})", paths::MOTO_VERSION, path.display()))
}

/// kubernetes-validate (or `$KUBERNETES_VALIDATE_BIN`) is the pinned version
/// (in the virtualenv) and validates a Deployment against the schemas of
/// the Kubernetes version ctrl's API types are for, through the testkit's
/// wrapper the tests use.
fn check_kubernetes_validate() -> Result<String, String> {
    let path = paths::kubernetes_validate_bin().map_err(|e| e.to_string())?;
    let mut version = Command::new(&path);
    version.arg("--version");
    let out = output_within(&mut version, Duration::from_secs(30))?;
    let found = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() {
        return Err(format!(
            "`{} --version` failed with {}: {}",
            path.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    if path == paths::kubernetes_validate_install_path()
        && (found != paths::KUBERNETES_VALIDATE_VERSION
            || installed_python_version(&paths::venv_dir(), "kubernetes_validate").as_deref()
                != Some(paths::KUBERNETES_VALIDATE_VERSION))
    {
        return Err(format!(
            "{} is {found}, expected {}",
            path.display(),
            paths::KUBERNETES_VALIDATE_VERSION
        ));
    }
    let deployment = serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "check"},
        "spec": {
            "selector": {"matchLabels": {"app": "check"}},
            "template": {
                "metadata": {"labels": {"app": "check"}},
                "spec": {"containers": [{"name": "check", "image": "busybox"}]},
            },
        },
    });
    let report = kube_schema::validate(&[deployment], kube_schema::KUBERNETES_VERSION)
        .map_err(|e| e.to_string())?;
    Ok(format!(
        "kubernetes-validate {found}, validates against Kubernetes {} ({})",
        report.schema_version,
        path.display()
    ))
}

/// The virtualenv holds the pinned helm-python-sdk, and its engine loads and
/// is the Helm release [`paths::HELM_VERSION`].
fn check_helm_python_sdk() -> Result<String, String> {
    let venv = paths::venv_dir();
    let found = installed_python_version(&venv, "helm_python_sdk");
    if found.as_deref() != Some(paths::HELM_PYTHON_SDK_VERSION) {
        return Err(format!(
            "the virtualenv {} has helm-python-sdk {}, expected {}",
            venv.display(),
            found.as_deref().unwrap_or("(none)"),
            paths::HELM_PYTHON_SDK_VERSION
        ));
    }
    let mut engine = Command::new(venv.join("bin").join("python"));
    engine.args([
        "-c",
        "import helm_python; print(helm_python.helm_sdk_version())",
    ]);
    let out = output_within(&mut engine, Duration::from_secs(30))?;
    let helm = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || helm != paths::HELM_VERSION {
        return Err(format!(
            "its engine did not load as Helm {} ({}; {helm} {})",
            paths::HELM_VERSION,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(format!(
        "helm-python-sdk {}, Helm {helm} engine",
        paths::HELM_PYTHON_SDK_VERSION
    ))
}

/// ctrl-helm (or `$HELM_BIN`) renders the test chart offline; the installed
/// copy is this repository's program (an edited program is installed again).
fn check_ctrl_helm() -> Result<String, String> {
    let path = paths::helm_bin().map_err(|e| e.to_string())?;
    if path == paths::helm_install_path() {
        let source = paths::helm_program_source();
        let expected = venv_script(&source, &paths::venv_dir().join("bin").join("python"))
            .map_err(|e| format!("{e:#}"))?;
        if fs::read_to_string(&path).ok().as_deref() != Some(expected.as_str()) {
            return Err(format!(
                "{} is not this repository's {}",
                path.display(),
                source.display()
            ));
        }
    }
    let run = |args: &[&OsStr]| -> Result<String, String> {
        let mut cmd = Command::new(&path);
        cmd.args(args);
        let out = output_within(&mut cmd, Duration::from_secs(60))?;
        if !out.status.success() {
            return Err(format!(
                "`{} {}` failed with {}: {}",
                path.display(),
                args.iter()
                    .map(|a| a.to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let version = run(&["version".as_ref(), "--short".as_ref()])?;
    let chart = paths::helm_test_chart();
    let rendered = run(&[
        "template".as_ref(),
        "check".as_ref(),
        chart.as_os_str(),
        "--namespace".as_ref(),
        "ctrl-check".as_ref(),
        "--set".as_ref(),
        "image=busybox".as_ref(),
    ])?;
    if !rendered.contains("# Source: hello/templates/deployment.yaml")
        || !rendered.contains("name: check-hello")
    {
        return Err(format!(
            "`{} template` rendered {} unexpectedly:\n{rendered}",
            path.display(),
            chart.display()
        ));
    }
    Ok(format!(
        "Helm {}, renders charts offline ({})",
        version.trim(),
        path.display()
    ))
}

/// The version of `package` installed in the virtualenv `venv`, read from
/// its `<name>-<version>.dist-info` directory (cheaper than starting Python).
fn installed_python_version(venv: &Path, package: &str) -> Option<String> {
    let prefix = format!("{package}-");
    for lib in fs::read_dir(venv.join("lib")).ok()?.flatten() {
        let Ok(entries) = fs::read_dir(lib.path().join("site-packages")) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(version) = name
                .strip_prefix(&prefix)
                .and_then(|rest| rest.strip_suffix(".dist-info"))
            {
                return Some(version.to_owned());
            }
        }
    }
    None
}

/// Runs `cmd` to completion with its output captured, killing it after `limit`.
fn output_within(cmd: &mut Command, limit: Duration) -> Result<std::process::Output, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run it: {e}"))?;
    let deadline = Instant::now() + limit;
    while child.try_wait().map_err(|e| e.to_string())?.is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("it did not finish within {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().map_err(|e| e.to_string())
}

fn dpkg_installed(package: &str) -> Result<String, String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Status} ${Version}", package])
        .output()
        .map_err(|e| format!("dpkg-query: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text.strip_prefix("install ok installed ") {
        Some(version) => Ok(format!("{package} {version}")),
        None => Err(format!("package {package} is not installed")),
    }
}

/// The first line a `--version` command prints.
fn version_of(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("cannot run it: {e}"))?;
    if !out.status.success() {
        return Err(format!("`--version` failed with {}", out.status));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.lines().next().unwrap_or_default().trim().to_owned())
}

/// Whether a dotted version is at least `(major, minor)`.
fn at_least(version: &str, min: (u32, u32)) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    found >= min
}

// === installers ===

fn apt_install(packages: &[&str]) -> Result<()> {
    let list = packages.join(" ");
    let manual = format!(
        "sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {list}"
    );
    let sudo = if nix::unistd::geteuid().is_root() {
        None
    } else if Command::new("sudo")
        .args(["-n", "true"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        Some("sudo")
    } else {
        bail!("installing {list} needs root. Run by hand:\n    {manual}");
    };
    let apt = |args: &[&str]| -> Result<bool> {
        let mut cmd = match sudo {
            Some(s) => {
                let mut c = Command::new(s);
                c.arg("apt-get");
                c
            }
            None => Command::new("apt-get"),
        };
        cmd.env("DEBIAN_FRONTEND", "noninteractive").args(args);
        eprintln!("  running  apt-get {}", args.join(" "));
        Ok(cmd.status().context("run apt-get")?.success())
    };
    let install: Vec<&str> = ["install", "-y", "--no-install-recommends"]
        .into_iter()
        .chain(packages.iter().copied())
        .collect();
    // A fresh machine may have empty package lists: update once, then install.
    if !apt(&["update"])? || !apt(&install)? {
        bail!("apt-get could not install {list}. Run by hand and read its errors:\n    {manual}");
    }
    Ok(())
}

/// Copies the binary at `path_in_package` of an npm package into `dest`,
/// using `npm pack` (no install scripts, no node_modules, no Node wrapper).
fn npm_binary(package: &str, path_in_package: &str, dest: &Path) -> Result<()> {
    let manual = format!(
        "cd /tmp && npm pack {package} && tar -xzf <the .tgz> && install -D {path_in_package} {}",
        dest.display()
    );
    let parent = dest.parent().context("install path has a parent")?;
    fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    let work = tempfile::Builder::new()
        .prefix(".download-")
        .tempdir_in(parent)
        .context("create a download directory")?;
    eprintln!("  running  npm pack {package}");
    let out = Command::new("npm")
        .args(["pack", "--silent", package, "--pack-destination"])
        .arg(work.path())
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run npm ({e}); install Node.js and npm (`apt-get install npm`), or by hand:\n    {manual}"))?;
    if !out.status.success() {
        bail!(
            "npm pack {package} failed: {}\nInstall by hand:\n    {manual}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let tarball = fs::read_dir(work.path())?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "tgz"))
        .context("npm pack wrote no .tgz")?;
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(work.path())
        .arg(path_in_package)
        .status()
        .context("run tar")?;
    if !status.success() {
        bail!(
            "could not extract {path_in_package} from {}",
            tarball.display()
        );
    }
    // Rename into place so a concurrent reader never sees half a binary.
    fs::rename(work.path().join(path_in_package), dest)
        .with_context(|| format!("move the binary to {}", dest.display()))?;
    Ok(())
}

/// Debian's interpreter, which `python3-venv` completes. A `python3` earlier
/// on `PATH` (pyenv, a user's build) would make the virtualenv depend on it.
const SYSTEM_PYTHON: &str = "/usr/bin/python3";

/// How long pip may wait on one network read before it retries.
const PIP_NETWORK_TIMEOUT_SECS: &str = "60";

/// Creates the virtualenv `venv` from [`SYSTEM_PYTHON`] if it has no working
/// interpreter, then installs `packages` into it with its own pip.
fn pip_install(venv: &Path, packages: &[String]) -> Result<()> {
    let python = venv.join("bin").join("python");
    let manual = format!(
        "{SYSTEM_PYTHON} -m venv --clear {venv} && {venv}/bin/python -m pip install {list}",
        venv = venv.display(),
        list = packages
            .iter()
            .map(|p| format!("'{p}'"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let works = Command::new(&python)
        .args(["-c", "import sys"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !works {
        if let Some(parent) = venv.parent() {
            fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
        }
        eprintln!(
            "  running  {SYSTEM_PYTHON} -m venv --clear {}",
            venv.display()
        );
        let status = Command::new(SYSTEM_PYTHON)
            .args(["-m", "venv", "--clear"])
            .arg(venv)
            .stdin(Stdio::null())
            .status()
            .with_context(|| format!("run {SYSTEM_PYTHON} (install python3-venv)"))?;
        if !status.success() {
            bail!(
                "could not create the virtualenv {}. Run by hand:\n    {manual}",
                venv.display()
            );
        }
    }
    eprintln!(
        "  running  pip install {} (a minute or two, once)",
        packages.join(" ")
    );
    let status = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
        ])
        .args(["--timeout", PIP_NETWORK_TIMEOUT_SECS, "--retries", "3"])
        .args(packages)
        .stdin(Stdio::null())
        .status()
        .context("run pip")?;
    if !status.success() {
        bail!(
            "pip could not install {}. Run by hand and read its errors:\n    {manual}",
            packages.join(" ")
        );
    }
    Ok(())
}

/// Installs the Python script `source` as `dest`, a program run by the
/// virtualenv's python next to it (see [`venv_script`]).
fn install_venv_script(source: &Path, dest: &Path) -> Result<()> {
    let dir = dest
        .parent()
        .context("the script's destination has a parent")?;
    let script = venv_script(source, &dir.join("python"))?;
    eprintln!("  running  install {} {}", source.display(), dest.display());
    // Rename into place so a concurrent reader never sees half a script.
    let staged = dir.join(".ctrl-script.new");
    fs::write(&staged, script).with_context(|| format!("write {}", staged.display()))?;
    fs::set_permissions(&staged, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("make {} executable", staged.display()))?;
    fs::rename(&staged, dest).with_context(|| format!("move the script to {}", dest.display()))?;
    Ok(())
}

/// The text of the script `source` with its `#!` line replaced by one that
/// runs `python`. Like pip's console scripts, an interpreter path a shebang
/// cannot hold (whitespace, or too long for the kernel) is started through
/// `/bin/sh`.
fn venv_script(source: &Path, python: &Path) -> Result<String> {
    let text = fs::read_to_string(source).with_context(|| format!("read {}", source.display()))?;
    let body = match text.strip_prefix("#!") {
        Some(rest) => rest.split_once('\n').map_or("", |(_, body)| body),
        None => text.as_str(),
    };
    let python = python.display().to_string();
    let shebang = if python.len() <= 127 && !python.contains(char::is_whitespace) {
        format!("#!{python}\n")
    } else {
        format!("#!/bin/sh\n'''exec' '{python}' \"$0\" \"$@\"\n' '''\n")
    };
    Ok(format!("{shebang}{body}"))
}

fn cargo_install(krate: &str) -> Result<()> {
    eprintln!("  running  cargo install --locked {krate} (a few minutes, once)");
    let status = Command::new(cargo())
        .args(["install", "--locked", krate])
        .status()
        .context("run cargo install")?;
    if !status.success() {
        bail!("cargo install {krate} failed; run by hand: cargo install --locked {krate}");
    }
    Ok(())
}

/// Installs one pinned version of a crate's binaries under `root` (its
/// `bin/`), with the crate's own lock file.
fn cargo_install_pinned(krate: &str, version: &str, features: &[&str], root: &Path) -> Result<()> {
    let spec = format!("{krate}@{version}");
    let features = features.join(",");
    let manual = format!(
        "cargo install {spec} --features '{features}' --locked --root {}",
        root.display()
    );
    eprintln!("  running  {manual} (about 4 minutes, once)");
    let mut cmd = Command::new(cargo());
    cmd.args(["install", &spec, "--locked", "--root"]).arg(root);
    if !features.is_empty() {
        cmd.args(["--features", &features]);
    }
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .context("run cargo install")?;
    if !status.success() {
        bail!("cargo install {spec} failed; run by hand and read its errors:\n    {manual}");
    }
    Ok(())
}

/// The cargo that runs us (`$CARGO`), or `cargo` from `PATH`.
pub(crate) fn cargo() -> PathBuf {
    env::var_os("CARGO").map_or_else(|| PathBuf::from("cargo"), PathBuf::from)
}

/// The suffix of the npm platform packages for this machine.
fn npm_platform() -> &'static str {
    match env::consts::ARCH {
        "aarch64" => "linux-arm64",
        _ => "linux-x64",
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::process::Command;

    use super::{PROGRAMS, at_least, install_venv_script, venv_script};

    /// Programs the code runs that `deps` does not install: the README's
    /// prerequisites (the Rust toolchain, Node/npm, apt) and optional tools.
    const PREREQUISITES: &[&str] = &["cargo", "npm", "apt-get", "sudo", "docker"];

    /// Every program the code names (in `Command::new` or
    /// `system_program` with a string literal) is in [`PROGRAMS`] or
    /// [`PREREQUISITES`].
    #[test]
    fn every_program_the_code_runs_is_listed() {
        let root = crate::dev::repo_root();
        let mut named = std::collections::BTreeSet::new();
        let mut stack = vec![root.join("crates")];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    for marker in ["Command::new(\"", "system_program(\""] {
                        for (i, _) in text.match_indices(marker) {
                            let rest = &text[i + marker.len()..];
                            let name = &rest[..rest.find('"').unwrap()];
                            named.insert((name.to_owned(), path.display().to_string()));
                        }
                    }
                }
            }
        }
        assert!(
            named.iter().any(|(n, _)| n == "podman"),
            "the scan found nothing: {named:?}"
        );
        let unlisted: Vec<_> = named
            .iter()
            .filter(|(n, _)| {
                !PROGRAMS.contains(&n.as_str()) && !PREREQUISITES.contains(&n.as_str())
            })
            .collect();
        assert!(
            unlisted.is_empty(),
            "programs the code runs that neither `deps` installs nor the README requires: {unlisted:?}"
        );
    }

    /// A script installed into a virtualenv runs with its python, also
    /// when the path has a space (which a shebang cannot hold).
    #[test]
    fn a_venv_script_runs_with_the_virtualenvs_python() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("tool");
        std::fs::write(
            &source,
            "#!/usr/bin/env python3\nimport sys\nprint(sys.argv[1:])\n",
        )
        .unwrap();
        assert_eq!(
            venv_script(&source, Path::new("/v/bin/python")).unwrap(),
            "#!/v/bin/python\nimport sys\nprint(sys.argv[1:])\n"
        );
        for venv in ["venv", "a venv"] {
            let bin = dir.path().join(venv).join("bin");
            std::fs::create_dir_all(&bin).unwrap();
            std::os::unix::fs::symlink("/usr/bin/python3", bin.join("python")).unwrap();
            install_venv_script(&source, &bin.join("tool")).unwrap();
            let out = Command::new(bin.join("tool"))
                .args(["a", "b c"])
                .output()
                .unwrap();
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                "['a', 'b c']\n",
                "{venv}: {out:?}"
            );
        }
    }

    #[test]
    fn compares_dotted_versions() {
        assert!(at_least("10.11.19", (10, 11)));
        assert!(at_least("11.4", (10, 11)));
        assert!(!at_least("10.6.12", (10, 11)));
        assert!(at_least("4.3.1", (4, 3)));
        assert!(!at_least("3.4", (4, 3)));
        assert!(!at_least("garbage", (1, 0)));
    }
}
