//! `cargo xtask images`: ctrl's container images, one per service, built
//! from `deploy/Dockerfile` through the Docker API (Docker, or podman's
//! compatible service).
//!
//! No stage needs a base image or a network. The binaries are built on this
//! machine; the build context holds them (`bin/`, debug info stripped) and a
//! root filesystem with exactly what they load at run time (`rootfs/`: the
//! dynamic loader and the libraries `ldd` names, the CA bundle, `/etc/passwd`
//! and `/etc/group` naming uid 10001, an empty `/tmp`). Each target is sent
//! only the binaries its stage copies, which the Dockerfile itself says.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bollard::Docker;

/// How long one target's build may take (the context upload included).
const BUILD_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, clap::Args)]
pub(crate) struct ImagesArgs {
    /// The cargo profile the binaries are built with.
    #[arg(long, default_value = "release")]
    profile: String,
    /// Take the binaries from this directory instead of building them
    /// (e.g. the test build's `target/debug`).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Images are named `<prefix>/<target>:<tag>`.
    #[arg(long, default_value = "localhost")]
    prefix: String,
    #[arg(long, default_value = "dev")]
    tag: String,
    /// The Docker API (default: `DOCKER_HOST`, else /var/run/docker.sock).
    #[arg(long)]
    docker_host: Option<String>,
    /// Where the build context is written (default: under the target dir).
    #[arg(long)]
    context_dir: Option<PathBuf>,
    /// Only write the build context, for `docker build --target <name>`
    /// elsewhere.
    #[arg(long)]
    context_only: bool,
}

/// A target of the Dockerfile: a stage that copies binaries from `bin/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) name: String,
    /// File names under `bin/` its stage copies.
    pub(crate) binaries: Vec<String>,
}

pub(crate) async fn run(args: ImagesArgs) -> Result<()> {
    let bin_dir = match args.bin_dir {
        Some(dir) => dir,
        None => crate::dev::build_services(&args.profile)?,
    };
    let context = args
        .context_dir
        .unwrap_or_else(|| crate::dev::target_dir().join("images").join("context"));
    let targets = assemble(&bin_dir, &context)?;
    eprintln!("build context in {}", context.display());
    if args.context_only {
        return Ok(());
    }
    let host = args
        .docker_host
        .or_else(|| std::env::var("DOCKER_HOST").ok())
        .unwrap_or_else(|| "unix:///var/run/docker.sock".to_owned());
    let docker = connect(&host)?;
    let width = targets.iter().map(|t| t.name.len()).max().unwrap_or(0)
        + args.prefix.len()
        + args.tag.len()
        + 2;
    println!("{:<width$} {:>10}", "image", "size (uncompressed)");
    for target in &targets {
        let image = format!("{}/{}:{}", args.prefix, target.name, args.tag);
        build_target(&docker, &context, target, &image).await?;
        let size = docker
            .inspect_image(&image)
            .await
            .with_context(|| format!("inspect {image}"))?
            .size
            .unwrap_or_default();
        println!("{image:<width$} {:>6.1} MiB", size as f64 / 1048576.0);
    }
    Ok(())
}

/// The targets of `dockerfile`: each stage that copies from `bin/`, with the
/// binaries it copies.
pub(crate) fn targets(dockerfile: &str) -> Result<Vec<Target>> {
    let mut targets: Vec<Target> = Vec::new();
    for line in dockerfile.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["FROM", _, "AS", name] => targets.push(Target {
                name: (*name).to_owned(),
                binaries: Vec::new(),
            }),
            ["COPY", sources @ .., _dest] => {
                let Some(stage) = targets.last_mut() else {
                    bail!("COPY before any stage: {line}");
                };
                for source in sources.iter().filter(|s| !s.starts_with("--")) {
                    if let Some(binary) = source.strip_prefix("bin/") {
                        if binary.is_empty() || binary.contains('/') {
                            bail!("copy single binaries from bin/: {line}");
                        }
                        stage.binaries.push(binary.to_owned());
                    }
                }
            }
            _ => {}
        }
    }
    targets.retain(|t| !t.binaries.is_empty());
    Ok(targets)
}

/// Writes the build context into `context` (replacing what was there) and
/// returns the Dockerfile's targets.
fn assemble(bin_dir: &Path, context: &Path) -> Result<Vec<Target>> {
    let dockerfile_path = crate::dev::repo_root().join("deploy/Dockerfile");
    let dockerfile = fs::read_to_string(&dockerfile_path)
        .with_context(|| format!("read {}", dockerfile_path.display()))?;
    let targets = targets(&dockerfile)?;
    if context.exists() {
        fs::remove_dir_all(context).with_context(|| format!("clear {}", context.display()))?;
    }
    let bin = context.join("bin");
    let rootfs = context.join("rootfs");
    fs::create_dir_all(&bin).with_context(|| format!("create {}", bin.display()))?;
    fs::write(context.join("Dockerfile"), &dockerfile)?;

    let binaries: BTreeSet<&str> = targets
        .iter()
        .flat_map(|t| t.binaries.iter().map(String::as_str))
        .collect();
    let mut libraries = BTreeSet::new();
    for name in binaries {
        let source = if name == "ctrl-init" {
            // Static, built once from its single source file.
            ctrl_testkit::paths::ctrl_init_bin()?
        } else {
            bin_dir.join(name)
        };
        if !source.is_file() {
            bail!(
                "{} is missing: build it first, or leave out --bin-dir",
                source.display()
            );
        }
        let dest = bin.join(name);
        let strip = Command::new(ctrl_testkit::paths::system_program("strip")?)
            .arg("--strip-debug")
            .arg("-o")
            .arg(&dest)
            .arg(&source)
            .status()
            .context("run strip")?;
        if !strip.success() {
            bail!("strip {} failed", source.display());
        }
        libraries.extend(linked_libraries(&source)?);
    }

    for library in &libraries {
        copy_into(&rootfs, library)?;
    }
    copy_into(&rootfs, Path::new(CA_BUNDLE))?;
    let etc = rootfs.join("etc");
    fs::write(
        etc.join("passwd"),
        "root:x:0:0:root:/:/sbin/nologin\nctrl:x:10001:10001:ctrl:/tmp:/sbin/nologin\n",
    )?;
    fs::write(etc.join("group"), "root:x:0:\nctrl:x:10001:\n")?;
    // /etc/hosts first (the engine writes it), then DNS.
    fs::write(etc.join("nsswitch.conf"), "hosts: files dns\n")?;
    let tmp = rootfs.join("tmp");
    fs::create_dir_all(&tmp)?;
    fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o1777))?;
    Ok(targets)
}

/// The CA bundle of Debian's `ca-certificates`.
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The shared objects `binary` loads, the dynamic loader included, as `ldd`
/// resolves them (none for a static binary).
fn linked_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new(ctrl_testkit::paths::system_program("ldd")?)
        .arg(binary)
        .output()
        .context("run ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || text.contains("statically linked") {
        return Ok(Vec::new());
    }
    parse_ldd(&text).with_context(|| format!("the libraries of {}", binary.display()))
}

pub(crate) fn parse_ldd(text: &str) -> Result<Vec<PathBuf>> {
    let mut libraries = Vec::new();
    for line in text.lines().map(str::trim) {
        let path = match line.split_once(" => ") {
            Some((name, _)) if line.ends_with("not found") => bail!("{name} not found"),
            Some((_, rest)) => rest,
            None => line,
        };
        let path = path.split(" (").next().unwrap_or_default();
        if path.starts_with('/') {
            libraries.push(PathBuf::from(path));
        }
    }
    Ok(libraries)
}

/// Copies the host's `file` (following symlinks) to the same path under `root`.
fn copy_into(root: &Path, file: &Path) -> Result<()> {
    let dest = root.join(file.strip_prefix("/").unwrap_or(file));
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::copy(file, &dest).with_context(|| format!("copy {}", file.display()))?;
    Ok(())
}

fn connect(host: &str) -> Result<Docker> {
    let docker = if let Some(socket) = host.strip_prefix("unix://") {
        Docker::connect_with_unix(socket, 600, bollard::API_DEFAULT_VERSION)
    } else {
        bail!("--docker-host must be unix:///path/to/socket, not {host}");
    };
    docker.with_context(|| format!("connect to the Docker API at {host}"))
}

/// Builds `target` as `image`, sending only the files its stage copies.
async fn build_target(docker: &Docker, context: &Path, target: &Target, image: &str) -> Result<()> {
    let mut tar = tar::Builder::new(Vec::new());
    tar.follow_symlinks(false);
    tar.append_path_with_name(context.join("Dockerfile"), "Dockerfile")?;
    tar.append_dir_all("rootfs", context.join("rootfs"))?;
    for binary in &target.binaries {
        tar.append_path_with_name(context.join("bin").join(binary), format!("bin/{binary}"))?;
    }
    let body = tar.into_inner()?;
    ctrl_testkit::images::build_context(docker, image, Some(&target.name), body, BUILD_TIMEOUT)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_service_has_a_target_holding_its_binary() {
        let dockerfile = fs::read_to_string(crate::dev::repo_root().join("deploy/Dockerfile"))
            .expect("the Dockerfile");
        let all = targets(&dockerfile).expect("targets");
        let names: Vec<&str> = all.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "ctrl-api",
                "ctrl-worker",
                "ctrl-cluster-sync",
                "krane",
                "frontline",
                "ctrl"
            ]
        );
        for target in &all {
            let main = if target.name == "ctrl" {
                "ctrl"
            } else {
                &target.name
            };
            assert_eq!(target.binaries[0], main, "{target:?}");
        }
        let krane = all.iter().find(|t| t.name == "krane").expect("krane");
        assert_eq!(krane.binaries, ["krane", "ctrl-init"]);
        assert!(
            targets("FROM scratch AS x\nCOPY bin/ /usr/local/bin/\n")
                .is_err_and(|e| e.to_string().contains("single binaries"))
        );
    }

    #[test]
    fn ldd_output_names_every_library_and_refuses_a_missing_one() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f80)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f81)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f82)\n";
        assert_eq!(
            parse_ldd(text).expect("parsed"),
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
        let missing = "\tlibssl.so.3 => not found\n";
        assert!(parse_ldd(missing).is_err_and(|e| e.to_string().contains("libssl.so.3")));
    }
}
