//! Per-process scratch directories and the reaping of what crashed runs left.
//!
//! Each owning process gets `$TMPDIR/ctrl-testkit/<pid>-<start-time>/`; every
//! dependency gets a subdirectory there with its data, logs and pid file.
//! Before the first use in a process, [`scratch_dir`] reaps the directories of
//! owners that are no longer alive: it kills the process groups recorded in
//! their pid files (if those exact processes still run), removes containers of
//! podman instances, and deletes the directory.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::Error;
use crate::process::{ProcessId, kill_recorded};

/// The directory under which all owners' scratch directories live.
pub fn scratch_root() -> PathBuf {
    std::env::temp_dir().join("ctrl-testkit")
}

/// This process's scratch directory (created, after reaping stale ones, on first use).
pub fn scratch_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = scratch_root();
        reap_stale(&root);
        let me = ProcessId::current();
        let dir = root.join(format!("{}-{}", me.pid, me.start_time));
        fs::create_dir_all(&dir).expect("create the testkit scratch directory");
        dir
    })
}

/// The directory for one dependency instance: `given` (created if missing,
/// kept afterwards), or a fresh directory in this process's scratch dir that
/// is deleted when the returned guard drops.
pub(crate) fn instance_dir(
    given: Option<&Path>,
    prefix: &str,
) -> Result<(PathBuf, Option<TempDir>), Error> {
    match given {
        Some(dir) => {
            fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
            Ok((dir.to_owned(), None))
        }
        None => {
            let tmp = tempfile::Builder::new()
                .prefix(prefix)
                .tempdir_in(scratch_dir())
                .map_err(|e| Error::io(format!("create a {prefix}* scratch directory"), e))?;
            Ok((tmp.path().to_owned(), Some(tmp)))
        }
    }
}

/// What [`reap_stale`] cleaned up.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reaped {
    /// Owner directories removed.
    pub dirs: usize,
    /// Process groups killed.
    pub processes: usize,
}

/// Reaps every owner directory under `root` whose owner process is gone.
pub fn reap_stale(root: &Path) -> Reaped {
    let mut reaped = Reaped::default();
    let Ok(entries) = fs::read_dir(root) else {
        return reaped;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some((pid, start)) = name.to_str().and_then(|n| n.split_once('-')) else {
            continue;
        };
        let Some(owner) = ProcessId::parse(pid, start) else {
            continue;
        };
        if owner.is_alive() {
            continue;
        }
        reaped.processes += reap_orphans(&entry.path());
        if fs::remove_dir_all(entry.path()).is_ok() {
            reaped.dirs += 1;
        }
    }
    reaped
}

/// Kills the processes recorded in pid files under `dir` (three levels
/// deep) whose owner is no longer alive, and removes the containers of podman
/// instances whose service was such a process. Pid files of live owners are
/// left alone, so this is safe on a directory another process still uses.
/// Returns the number of process groups killed.
pub fn reap_orphans(dir: &Path) -> usize {
    let mut killed = 0;
    for path in files_below(dir, 3) {
        if path.extension().is_none_or(|e| e != "pid") {
            continue;
        }
        let Some((process, owner)) = read_pid_file(&path) else {
            continue;
        };
        if owner.is_alive() {
            continue;
        }
        if kill_recorded(process) {
            killed += 1;
        }
        // A podman instance's containers run under conmon, outside the
        // service's process group: remove them through its own config.
        if let Some(instance) = path.parent()
            && instance.join(crate::podman::CONTAINERS_CONF).is_file()
        {
            crate::podman::remove_all_containers(instance);
        }
        let _ = fs::remove_file(&path);
    }
    killed
}

/// Reads a pid file (`pid start-time owner-pid owner-start-time`): the
/// process and its owner.
pub fn read_pid_file(path: &Path) -> Option<(ProcessId, ProcessId)> {
    let text = fs::read_to_string(path).ok()?;
    let f: Vec<&str> = text.split_whitespace().collect();
    match f[..] {
        [pid, start, owner_pid, owner_start] => Some((
            ProcessId::parse(pid, start)?,
            ProcessId::parse(owner_pid, owner_start)?,
        )),
        _ => None,
    }
}

fn files_below(dir: &Path, depth: usize) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() && depth > 0 {
            out.extend(files_below(&entry.path(), depth - 1));
        } else if kind.is_file() {
            out.push(entry.path());
        }
    }
    out
}

/// Runs a maintenance command, ignoring its output (best effort), and kills
/// it if it has not finished within `timeout`. Returns whether it succeeded.
pub(crate) fn run_quietly(cmd: &mut Command, timeout: Duration) -> bool {
    let Ok(mut child) = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.success(),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
}
