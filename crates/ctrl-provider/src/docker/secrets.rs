//! Secret variables without plaintext in the engine's container config.
//!
//! The engine stores a container's configuration — its environment
//! included — on disk and shows it to anyone who can inspect the
//! container. A service with secret variables therefore gets them another
//! way: krane writes `NAME=value\0` entries to `<secrets_dir>/<container>/env`
//! on a host tmpfs (checked at start), bind-mounts that directory read-only
//! at `/.ctrl/secrets` and the static `ctrl-init` at `/.ctrl/init` (from a
//! copy in the same tmpfs, so an engine that sees only the host's files —
//! krane itself in a container — finds both), and
//! makes `ctrl-init` the entrypoint with the service's own command after
//! it. The values exist only in krane's memory (zeroized after use), the
//! tmpfs, and the workload's environment. Removing the container removes
//! its directory. (An `exec` session does not see them: it gets the
//! container's configured environment.)

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::error::Error;

/// Where `ctrl-init` is mounted in the container.
pub(super) const INIT_PATH: &str = "/.ctrl/init";
/// Where the container's secrets directory is mounted.
pub(super) const SECRETS_MOUNT: &str = "/.ctrl/secrets";

/// The host side: the init binary and the tmpfs directory.
#[derive(Debug, Clone)]
pub struct SecretDelivery {
    /// The static `ctrl-init` executable on the host.
    pub init_binary: PathBuf,
    /// A directory on a tmpfs, private to krane.
    pub dir: PathBuf,
}

impl SecretDelivery {
    /// Checks the setup and copies `ctrl-init` into the directory:
    /// `init_binary` is a static executable, `dir` exists (created 0700 if
    /// missing) and is on a tmpfs — secrets never touch a disk. The error
    /// names the setting.
    pub fn check(&self) -> Result<(), String> {
        let init = std::fs::metadata(&self.init_binary).map_err(|e| {
            format!(
                "docker.init_binary: {}: {e} (krane's image has it next to krane; \
                 `cargo xtask images --context-only` builds one into the context's bin/)",
                self.init_binary.display()
            )
        })?;
        if !init.is_file()
            || std::os::unix::fs::PermissionsExt::mode(&init.permissions()) & 0o111 == 0
        {
            return Err(format!(
                "docker.init_binary: {} is not an executable file",
                self.init_binary.display()
            ));
        }
        if is_dynamic(&self.init_binary)
            .map_err(|e| format!("docker.init_binary: {}: {e}", self.init_binary.display()))?
        {
            return Err(format!(
                "docker.init_binary: {} is dynamically linked; it must be static to run in any \
                 image (rustc -C target-feature=+crt-static, as `cargo xtask images` builds it)",
                self.init_binary.display()
            ));
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|e| format!("docker.secrets_dir: {}: {e}", self.dir.display()))?;
        let fs = nix::sys::statfs::statfs(&self.dir)
            .map_err(|e| format!("docker.secrets_dir: {}: {e}", self.dir.display()))?;
        if fs.filesystem_type() != nix::sys::statfs::TMPFS_MAGIC {
            return Err(format!(
                "docker.secrets_dir: {} is not on a tmpfs; secret values must never be written to a disk (e.g. use a directory under /run or /dev/shm)",
                self.dir.display()
            ));
        }
        let copy = self.init_source();
        let partial = self.dir.join(".ctrl-init.partial");
        std::fs::copy(&self.init_binary, &partial)
            .and_then(|_| {
                std::fs::set_permissions(
                    &partial,
                    std::os::unix::fs::PermissionsExt::from_mode(0o555),
                )
            })
            .and_then(|()| std::fs::rename(&partial, &copy))
            .map_err(|e| {
                format!(
                    "docker.secrets_dir: copy ctrl-init to {}: {e}",
                    copy.display()
                )
            })?;
        Ok(())
    }

    /// Where the engine bind-mounts `ctrl-init` from: krane's copy in the
    /// tmpfs directory (container names never start with a dot).
    pub(super) fn init_source(&self) -> PathBuf {
        self.dir.join(".ctrl-init")
    }

    /// The directory of `container`'s secrets.
    pub(super) fn container_dir(&self, container: &str) -> PathBuf {
        self.dir.join(container)
    }

    /// Writes `entries` (name, value) for `container`: a fresh directory
    /// (0755: the container's user must read it) with `env` (0444).
    pub(super) fn write(
        &self,
        container: &str,
        entries: &[(String, Zeroizing<String>)],
    ) -> Result<PathBuf, Error> {
        let dir = self.container_dir(container);
        let fail =
            |what: &str, e: std::io::Error| Error::backend(format!("{what} {}", dir.display()), e);
        remove_dir(&dir).map_err(|e| fail("clear", e))?;
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(&dir)
            .map_err(|e| fail("create", e))?;
        let mut content = Zeroizing::new(Vec::new());
        for (name, value) in entries {
            content.extend_from_slice(name.as_bytes());
            content.push(b'=');
            content.extend_from_slice(value.as_bytes());
            content.push(0);
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o444)
            .open(dir.join("env"))
            .map_err(|e| fail("write into", e))?;
        file.write_all(&content)
            .map_err(|e| fail("write into", e))?;
        Ok(dir)
    }

    /// Removes `container`'s secrets (none is fine).
    pub(super) fn remove(&self, container: &str) {
        let dir = self.container_dir(container);
        if let Err(e) = remove_dir(&dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "could not remove a container's secrets");
        }
    }
}

impl super::DockerProvider {
    /// Removes the secrets of containers that no longer exist (removed
    /// behind krane's back, or while it was down). Best effort, at connect.
    pub(super) async fn prune_secrets(&self) {
        let Some(delivery) = &self.config.secret_delivery else {
            return;
        };
        let filters = std::collections::HashMap::from([(
            "label".to_owned(),
            vec![format!(
                "{}={}",
                super::labels::MANAGED_BY,
                super::labels::MANAGED_BY_VALUE
            )],
        )]);
        let listed = self
            .call(
                "list containers",
                self.docker.list_containers(Some(
                    bollard::query_parameters::ListContainersOptions {
                        all: true,
                        filters: Some(filters),
                        ..Default::default()
                    },
                )),
            )
            .await;
        let containers = match listed {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot prune stale secrets: listing containers failed");
                return;
            }
        };
        let names: std::collections::HashSet<String> = containers
            .into_iter()
            .flat_map(|c| c.names.unwrap_or_default())
            .map(|n| n.trim_start_matches('/').to_owned())
            .collect();
        let Ok(entries) = std::fs::read_dir(&delivery.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') && !names.contains(&name) {
                delivery.remove(&name);
            }
        }
    }
}

fn remove_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Whether the ELF executable at `path` asks for a dynamic loader (has a
/// `PT_INTERP` program header). Only 64-bit little-endian ELF is accepted.
pub fn is_dynamic(path: &Path) -> Result<bool, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let field = |at: usize, len: usize| -> Result<u64, String> {
        let raw = bytes
            .get(at..at + len)
            .ok_or_else(|| "not an ELF executable (too short)".to_owned())?;
        let mut buf = [0u8; 8];
        buf[..len].copy_from_slice(raw);
        Ok(u64::from_le_bytes(buf))
    };
    if bytes.get(..4) != Some(b"\x7fELF") || bytes.get(4) != Some(&2) || bytes.get(5) != Some(&1) {
        return Err("not a 64-bit little-endian ELF executable".into());
    }
    let (phoff, phentsize, phnum) = (field(0x20, 8)?, field(0x36, 2)?, field(0x38, 2)?);
    for i in 0..phnum {
        let at = usize::try_from(phoff + i * phentsize).map_err(|e| e.to_string())?;
        if field(at, 4)? == 3 {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_executables_are_told_apart() {
        // This test binary is dynamically linked; a text file is no ELF.
        let me = std::env::current_exe().unwrap();
        assert_eq!(is_dynamic(&me), Ok(true));
        let text = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(text.path(), "#!/bin/sh\n").unwrap();
        assert!(is_dynamic(text.path()).is_err());
    }
}
