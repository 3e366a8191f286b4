//! Rootful podman serving the Docker-compatible API on a unix socket.
//!
//! Each instance has its own storage, run and temp directories, selected by
//! its own `containers.conf` and `storage.conf`, so parallel tests never see
//! each other's containers or images. The configuration carries the settings
//! that make podman work on a machine without systemd and with cgroups in
//! hybrid mode (runc, not crun; ulimits within the hard limits; cgroupfs; file
//! events; short exec cleanup delay) — see `reference/local-infra.md` §8.
//! Its `registries.conf` marks registries on `127.0.0.1` as plain HTTP, so
//! images can be pushed to a [`crate::Registry`].
//!
//! Containers run under `conmon`, outside the API service's process group, so
//! on drop (and in the reaper) the instance removes all of its containers
//! through the podman CLI with its own configuration before the service dies.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bollard::Docker;
use tempfile::TempDir;

use crate::process::{Supervised, wait_ready};
use crate::{Error, paths, reaper};

/// File name of an instance's containers.conf (the reaper recognises
/// podman instance directories by it).
pub(crate) const CONTAINERS_CONF: &str = "containers.conf";
const STORAGE_CONF: &str = "storage.conf";
const REGISTRIES_CONF: &str = "registries.conf";

/// The storage driver for an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageDriver {
    /// Kernel overlayfs: layers are shared, fast for real-size images.
    Overlay,
    /// Plain copies: no mounts at all; fine for the tiny test images.
    Vfs,
}

/// How to start a podman API service; see [`Podman::builder`].
#[derive(Debug, Clone)]
pub struct PodmanBuilder {
    dir: Option<PathBuf>,
    driver: StorageDriver,
    startup_timeout: Duration,
}

impl PodmanBuilder {
    /// Keep the instance's state in `dir` instead of a throwaway directory;
    /// it is not deleted on drop (containers are still removed).
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// The storage driver (default overlay).
    pub fn storage_driver(mut self, driver: StorageDriver) -> Self {
        self.driver = driver;
        self
    }

    /// Writes the configuration, starts `podman system service` and waits
    /// until the Docker API answers `_ping`.
    pub async fn start(self) -> Result<Podman, Error> {
        let podman = paths::system_program("podman")?;
        paths::system_program("runc")?;
        let (dir, scratch) = reaper::instance_dir(self.dir.as_deref(), "podman-")?;
        write_config(&dir, self.driver)?;
        let socket = dir.join("podman.sock");
        let _ = fs::remove_file(&socket);
        let mut cmd = Command::new(podman);
        configure(&mut cmd, &dir);
        // conmon drops files (an `oom` marker after an OOM kill) into the
        // service's working directory: keep them in the instance directory.
        cmd.current_dir(&dir);
        cmd.args(["system", "service", "--time=0"])
            .arg(format!("unix://{}", socket.display()));
        let mut process = Supervised::spawn(
            "podman system service",
            cmd,
            &dir.join("service.log"),
            Some(&dir.join("service.pid")),
        )?;
        // bollard wants the socket to exist before it builds a client.
        let connect = |socket: &Path| {
            Docker::connect_with_unix(&socket.to_string_lossy(), 30, bollard::API_DEFAULT_VERSION)
                .map_err(|e| Error::request("create a Docker API client", e))
        };
        wait_ready(&mut process, self.startup_timeout, || {
            let probe = connect(&socket).ok();
            async move {
                match probe {
                    Some(docker) => tokio::time::timeout(Duration::from_secs(1), docker.ping())
                        .await
                        .is_ok_and(|r| r.is_ok()),
                    None => false,
                }
            }
        })
        .await?;
        let docker = connect(&socket)?;
        Ok(Podman {
            process: Some(process),
            socket,
            dir,
            docker,
            _scratch: scratch,
        })
    }
}

/// A running podman API service; on drop its containers are removed, the
/// service is killed and throwaway state is deleted.
#[derive(Debug)]
pub struct Podman {
    process: Option<Supervised>,
    socket: PathBuf,
    dir: PathBuf,
    docker: Docker,
    // Declared last: the directory is removed after everything else.
    _scratch: Option<TempDir>,
}

impl Podman {
    /// A builder with test defaults: throwaway directory, overlay storage.
    pub fn builder() -> PodmanBuilder {
        PodmanBuilder {
            dir: None,
            driver: StorageDriver::Overlay,
            startup_timeout: Duration::from_secs(30),
        }
    }

    /// Starts an instance with the test defaults.
    pub async fn start() -> Result<Self, Error> {
        Self::builder().start().await
    }

    /// The instance directory: config, storage, runtime state.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The API socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The value for `DOCKER_HOST`, e.g. `unix:///…/podman.sock`.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// A Docker API client connected to this instance.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// The service's pid, while it runs.
    pub fn pid(&self) -> Option<i32> {
        self.process.as_ref().map(|p| p.id().pid)
    }

    /// A `podman` CLI command bound to this instance's storage (for image
    /// imports and other set-up the Docker API does not cover).
    pub fn command(&self) -> Result<Command, Error> {
        let mut cmd = Command::new(paths::system_program("podman")?);
        configure(&mut cmd, &self.dir);
        Ok(cmd)
    }

    /// Imports a tiny image made from the static busybox (package
    /// `busybox-static`) as `tag`, laid out like Docker Hub's `busybox`:
    /// `/bin/busybox` with a link for every applet it has, `/etc/passwd`,
    /// `/tmp`, and `CMD ["/bin/sh"]`. No registry is reachable here, so test
    /// images (and `FROM busybox` in example apps) are built locally.
    pub fn import_busybox_image(&self, tag: &str) -> Result<(), Error> {
        let busybox = paths::system_program("busybox")?;
        let build = tempfile::Builder::new()
            .prefix("rootfs-")
            .tempdir_in(&self.dir)
            .map_err(|e| Error::io("create a rootfs directory", e))?;
        let bin = build.path().join("rootfs/bin");
        fs::create_dir_all(&bin).map_err(|e| Error::io("create rootfs/bin", e))?;
        fs::copy(&busybox, bin.join("busybox")).map_err(|e| Error::io("copy busybox", e))?;
        let list = Command::new(&busybox)
            .arg("--list")
            .output()
            .map_err(|e| Error::io("list busybox applets", e))?;
        let applets = String::from_utf8_lossy(&list.stdout).into_owned();
        for applet in applets.lines().filter(|a| !a.is_empty() && *a != "busybox") {
            std::os::unix::fs::symlink("busybox", bin.join(applet))
                .map_err(|e| Error::io(format!("link {applet}"), e))?;
        }
        let root = build.path().join("rootfs");
        for dir in ["etc", "tmp", "root"] {
            fs::create_dir_all(root.join(dir)).map_err(|e| Error::io("create rootfs dirs", e))?;
        }
        fs::set_permissions(
            root.join("tmp"),
            std::os::unix::fs::PermissionsExt::from_mode(0o1777),
        )
        .map_err(|e| Error::io("chmod /tmp", e))?;
        fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n",
        )
        .map_err(|e| Error::io("write /etc/passwd", e))?;
        fs::write(root.join("etc/group"), "root:x:0:\nnobody:x:65534:\n")
            .map_err(|e| Error::io("write /etc/group", e))?;
        let tar = build.path().join("rootfs.tar");
        let mut pack = Command::new("tar");
        pack.arg("-C")
            .arg(build.path().join("rootfs"))
            .arg("-cf")
            .arg(&tar)
            .arg(".");
        run_checked(&mut pack, "pack the busybox rootfs")?;
        let mut import = self.command()?;
        import
            .args(["import", "--change", r#"CMD ["/bin/sh"]"#])
            .arg(&tar)
            .arg(tag);
        run_checked(&mut import, &format!("import the busybox image as {tag}"))
    }

    /// Removes every container, then stops the service (SIGTERM, SIGKILL after `grace`).
    pub fn stop(&mut self, grace: Duration) {
        remove_all_containers(&self.dir);
        if let Some(mut process) = self.process.take() {
            process.terminate(grace);
        }
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        self.stop(Duration::ZERO);
    }
}

fn run_checked(cmd: &mut Command, what: &str) -> Result<(), Error> {
    let out = cmd.output().map_err(|e| Error::io(what, e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::request(
            what,
            format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ))
    }
}

/// Points a podman command at the instance in `dir`.
fn configure(cmd: &mut Command, dir: &Path) {
    cmd.env("CONTAINERS_CONF", dir.join(CONTAINERS_CONF))
        .env("CONTAINERS_STORAGE_CONF", dir.join(STORAGE_CONF))
        .env("CONTAINERS_REGISTRIES_CONF", dir.join(REGISTRIES_CONF));
}

/// Force-removes all containers of the podman instance in `dir` (best
/// effort, bounded): used on drop, by the reaper after a crash, and by
/// tests whose stack was killed outright — a container outlives its owner
/// (it runs under conmon), and so does its port-forwarding rule unless
/// podman removes it.
pub fn remove_all_containers(dir: &Path) {
    let Ok(podman) = paths::system_program("podman") else {
        return;
    };
    let mut cmd = Command::new(podman);
    configure(&mut cmd, dir);
    cmd.args(["rm", "--all", "--force", "--time", "0"]);
    reaper::run_quietly(&mut cmd, Duration::from_secs(60));
}

fn write_config(dir: &Path, driver: StorageDriver) -> Result<(), Error> {
    for sub in ["storage", "run", "tmp", "volumes"] {
        fs::create_dir_all(dir.join(sub))
            .map_err(|e| Error::io(format!("create {}", dir.join(sub).display()), e))?;
    }
    let d = dir.display();
    let containers = format!(
        r#"# Written by ctrl-testkit. Why each setting: reference/local-infra.md §8.4.
[containers]
# Rootful defaults (1048576) cannot be applied without CAP_SYS_RESOURCE.
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
# crun refuses cgroups in hybrid mode; runc copes.
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
# Each exec otherwise leaves two conmon processes for 5 minutes.
exit_command_delay = 5
tmp_dir = "{d}/tmp"
volume_path = "{d}/volumes"
"#
    );
    let driver = match driver {
        StorageDriver::Overlay => "overlay",
        StorageDriver::Vfs => "vfs",
    };
    let storage = format!(
        "[storage]\ndriver = \"{driver}\"\nrunroot = \"{d}/run\"\ngraphroot = \"{d}/storage\"\n"
    );
    // Registries on loopback (the testkit's `Registry`) speak plain HTTP.
    let registries =
        "# Written by ctrl-testkit.\n[[registry]]\nlocation = \"127.0.0.1\"\ninsecure = true\n";
    fs::write(dir.join(REGISTRIES_CONF), registries)
        .map_err(|e| Error::io("write registries.conf", e))?;
    fs::write(dir.join(CONTAINERS_CONF), containers)
        .map_err(|e| Error::io("write containers.conf", e))?;
    fs::write(dir.join(STORAGE_CONF), storage).map_err(|e| Error::io("write storage.conf", e))
}
