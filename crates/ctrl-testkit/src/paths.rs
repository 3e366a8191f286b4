//! Where the dependencies are installed and where their throwaway state lives.
//!
//! `cargo xtask deps` installs into these locations and the testkit finds
//! binaries here, so both sides share one definition.

use std::env;
use std::path::{Path, PathBuf};

use crate::Error;

/// The pinned restate-server version (must match `restate-sdk` in Cargo.toml).
pub const RESTATE_VERSION: &str = "1.7.12";

/// The pinned buf version (proto lint and breaking-change checks).
pub const BUF_VERSION: &str = "1.75.0";

/// The pinned moto version (AWS APIs such as Route53 and S3 on loopback).
pub const MOTO_VERSION: &str = "5.2.5";

/// The pinned kubernetes-validate version: Kubernetes' own OpenAPI schemas as
/// JSON Schema, for Kubernetes 1.25 to 1.37, and a validator (see
/// [`crate::kube_schema`]).
pub const KUBERNETES_VALIDATE_VERSION: &str = "1.37.0";

/// The pinned helm-python-sdk version: Helm's Go SDK compiled into a shared
/// library, which `ctrl-helm` (see [`helm_bin`]) drives.
pub const HELM_PYTHON_SDK_VERSION: &str = "0.2.2";

/// The Helm release that [`HELM_PYTHON_SDK_VERSION`]'s engine is built
/// from, as `ctrl-helm version --short` names it.
pub const HELM_VERSION: &str = "v4.2.3";

/// The pinned s3s-fs version (S3 on a local directory, with SigV4 checks).
/// 0.15 and later need a newer rustc than the workspace's.
pub const S3S_FS_VERSION: &str = "0.14.1";

/// The user-level cache for downloaded tools and templates:
/// `$CTRL_CACHE_DIR`, else `$XDG_CACHE_HOME/ctrl`, else `~/.cache/ctrl`.
/// It survives fresh clones, so CI runs on one machine install once.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = env::var_os("CTRL_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("ctrl");
    }
    let home = env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    home.join(".cache").join("ctrl")
}

/// Where `cargo xtask deps` puts the static restate-server binary.
pub fn restate_server_install_path() -> PathBuf {
    cache_dir()
        .join(format!("restate-server-{RESTATE_VERSION}"))
        .join("restate-server")
}

/// The restate-server binary: `$RESTATE_SERVER_BIN` if set, else the cached install.
pub fn restate_server_bin() -> Result<PathBuf, Error> {
    let candidates: Vec<PathBuf> = env::var_os("RESTATE_SERVER_BIN")
        .map(PathBuf::from)
        .into_iter()
        .chain([restate_server_install_path()])
        .collect();
    first_existing("restate-server", &candidates)
}

/// The `--root` `cargo xtask deps` installs s3s-fs into (the binary is in its `bin/`).
pub fn s3s_fs_root() -> PathBuf {
    cache_dir().join(format!("s3s-fs-{S3S_FS_VERSION}"))
}

/// Where `cargo xtask deps` puts the s3s-fs binary.
pub fn s3s_fs_install_path() -> PathBuf {
    s3s_fs_root().join("bin").join("s3s-fs")
}

/// The s3s-fs binary: `$S3S_FS_BIN` if set, else the cached install.
pub fn s3s_fs_bin() -> Result<PathBuf, Error> {
    let candidates: Vec<PathBuf> = env::var_os("S3S_FS_BIN")
        .map(PathBuf::from)
        .into_iter()
        .chain([s3s_fs_install_path()])
        .collect();
    first_existing("s3s-fs", &candidates)
}

/// Where `cargo xtask deps` puts the static buf binary.
pub fn buf_install_path() -> PathBuf {
    cache_dir().join(format!("buf-{BUF_VERSION}")).join("buf")
}

/// The buf binary: `$BUF_BIN` if set, else the cached install.
pub fn buf_bin() -> Result<PathBuf, Error> {
    let candidates: Vec<PathBuf> = env::var_os("BUF_BIN")
        .map(PathBuf::from)
        .into_iter()
        .chain([buf_install_path()])
        .collect();
    first_existing("buf", &candidates)
}

/// The Python virtualenv `cargo xtask deps` creates for Python tools (moto,
/// kubernetes-validate, helm-python-sdk and `ctrl-helm`).
pub fn venv_dir() -> PathBuf {
    cache_dir().join("venv")
}

/// Where `cargo xtask deps` puts moto's server: `moto_server` in [`venv_dir`].
pub fn moto_install_path() -> PathBuf {
    venv_dir().join("bin").join("moto_server")
}

/// The moto_server binary: `$MOTO_SERVER_BIN` if set, else the one in the
/// virtualenv. Never one found on `PATH`: its version is nobody's choice.
pub fn moto_server_bin() -> Result<PathBuf, Error> {
    let candidates: Vec<PathBuf> = env::var_os("MOTO_SERVER_BIN")
        .map(PathBuf::from)
        .into_iter()
        .chain([moto_install_path()])
        .collect();
    first_existing("moto_server", &candidates)
}

/// Where `cargo xtask deps` puts kubernetes-validate: its entry point in [`venv_dir`].
pub fn kubernetes_validate_install_path() -> PathBuf {
    venv_dir().join("bin").join("kubernetes-validate")
}

/// The kubernetes-validate program: `$KUBERNETES_VALIDATE_BIN` if set, else
/// the one in the virtualenv (never one on `PATH`).
pub fn kubernetes_validate_bin() -> Result<PathBuf, Error> {
    let candidates: Vec<PathBuf> = env::var_os("KUBERNETES_VALIDATE_BIN")
        .map(PathBuf::from)
        .into_iter()
        .chain([kubernetes_validate_install_path()])
        .collect();
    first_existing("kubernetes-validate", &candidates)
}

/// The `ctrl-helm` program in the repository: a subset of the helm CLI
/// (`template`, `show chart`, `show values`, `version --short`, with helm's
/// syntax and output) on helm-python-sdk's engine.
pub fn helm_program_source() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("helm")
        .join("ctrl-helm")
}

/// A tiny chart (Deployment, Service, ConfigMap; a required `image` value)
/// for tests and for `cargo xtask deps`' check of [`helm_bin`].
pub fn helm_test_chart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("helm")
        .join("testdata")
        .join("hello")
}

/// Where `cargo xtask deps` installs [`helm_program_source`], its shebang
/// naming the virtualenv's python: `ctrl-helm` in [`venv_dir`].
pub fn helm_install_path() -> PathBuf {
    venv_dir().join("bin").join("ctrl-helm")
}

/// The Helm CLI for tests: `$HELM_BIN` if set (a real `helm` works too),
/// else the installed `ctrl-helm`. Never one on `PATH`.
pub fn helm_bin() -> Result<PathBuf, Error> {
    let candidates: Vec<PathBuf> = env::var_os("HELM_BIN")
        .map(PathBuf::from)
        .into_iter()
        .chain([helm_install_path()])
        .collect();
    first_existing("ctrl-helm", &candidates)
}

/// A system program (MariaDB's and podman's live in `/usr/sbin` or `/usr/bin`,
/// and `/usr/sbin` is not on every user's `PATH`).
pub fn system_program(name: &'static str) -> Result<PathBuf, Error> {
    let mut candidates: Vec<PathBuf> = env::var_os("PATH")
        .map(|p| env::split_paths(&p).map(|d| d.join(name)).collect())
        .unwrap_or_default();
    candidates.extend(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(|d| Path::new(d).join(name)));
    first_existing(name, &candidates)
}

fn first_existing(what: &'static str, candidates: &[PathBuf]) -> Result<PathBuf, Error> {
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| Error::NotInstalled {
            what,
            looked: candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// `ctrl-init`'s source: one file with no dependencies.
const CTRL_INIT_SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../ctrl-init/src/main.rs");

/// The static `ctrl-init` executable krane mounts into containers with
/// secret variables: `$CTRL_INIT_BIN` if set, else built from its source
/// with `rustc -C target-feature=+crt-static` (a static-pie that runs in
/// any image) into the cache, once per source version. Concurrent callers
/// each build to a temporary file and rename it into place.
pub fn ctrl_init_bin() -> Result<PathBuf, Error> {
    use sha2::Digest as _;
    if let Some(path) = env::var_os("CTRL_INIT_BIN") {
        return Ok(PathBuf::from(path));
    }
    let source = std::fs::read(CTRL_INIT_SOURCE)
        .map_err(|e| Error::io(format!("read {CTRL_INIT_SOURCE}"), e))?;
    let version: String = sha2::Sha256::digest(&source)
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect();
    let dir = cache_dir().join("ctrl-init").join(version);
    let binary = dir.join("ctrl-init");
    if binary.is_file() {
        return Ok(binary);
    }
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    let partial = dir.join(format!("ctrl-init.{}.partial", std::process::id()));
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = std::process::Command::new(rustc)
        .args([
            "--edition",
            "2024",
            "-O",
            "-C",
            "target-feature=+crt-static",
            "-o",
        ])
        .arg(&partial)
        .arg(CTRL_INIT_SOURCE)
        .output()
        .map_err(|e| Error::io("run rustc to build ctrl-init", e))?;
    if !out.status.success() {
        let _ = std::fs::remove_file(&partial);
        return Err(Error::io(
            format!(
                "build ctrl-init: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            std::io::ErrorKind::Other.into(),
        ));
    }
    std::fs::rename(&partial, &binary)
        .map_err(|e| Error::io(format!("move ctrl-init to {}", binary.display()), e))?;
    Ok(binary)
}
