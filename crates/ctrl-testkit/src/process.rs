//! Child processes that never outlive their owner.
//!
//! Every dependency runs as a direct child in its own process group, so the
//! whole group can be signalled by pid. Three mechanisms make sure nothing is
//! left behind:
//!
//! 1. [`Supervised`]'s `Drop` kills the group (runs on normal exit and when a
//!    test panics and unwinds);
//! 2. the child is spawned with `PR_SET_PDEATHSIG = SIGKILL` from one
//!    process-lifetime thread, so the kernel kills it when the owning process
//!    dies for any reason (a test timeout's SIGKILL included). The signal is
//!    tied to the *thread* that forked, which is why spawning is funnelled
//!    through that thread rather than done from short-lived runtime threads;
//! 3. a pid file `pid start-time owner-pid owner-start-time` lets a later run
//!    find and kill what an earlier, crashed owner left (see [`crate::reaper`]).
//!    Processes are identified by pid *and* start time, never by name, so a
//!    recycled pid is never killed by mistake.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::Error;

/// A process identity that survives pid reuse: the pid plus the kernel's
/// start time of the process (clock ticks since boot, `/proc/<pid>/stat`
/// field 22).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessId {
    /// The operating-system pid.
    pub pid: i32,
    /// Start time in clock ticks since boot.
    pub start_time: u64,
}

impl ProcessId {
    /// The identity of a running (non-zombie) process, or `None` if there is none.
    pub fn of(pid: i32) -> Option<Self> {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name (field 2) is in parentheses and may contain spaces.
        let rest = &stat[stat.rfind(')')? + 1..];
        let mut fields = rest.split_whitespace();
        let state = fields.next()?; // field 3
        if state == "Z" || state == "X" {
            return None;
        }
        let start_time = fields.nth(18)?.parse().ok()?; // field 22
        Some(Self { pid, start_time })
    }

    /// The identity of the current process.
    pub fn current() -> Self {
        let pid = i32::try_from(std::process::id()).expect("pid fits in i32");
        Self::of(pid).expect("the current process is alive")
    }

    /// Whether this very process (same pid, same start time) is still running.
    pub fn is_alive(&self) -> bool {
        Self::of(self.pid).is_some_and(|now| now.start_time == self.start_time)
    }

    /// Parses the `pid start_time` form used in directory and pid-file names.
    pub(crate) fn parse(pid: &str, start_time: &str) -> Option<Self> {
        Some(Self {
            pid: pid.parse().ok()?,
            start_time: start_time.parse().ok()?,
        })
    }
}

/// Spawns `cmd` as the leader of a new process group that the kernel kills
/// when this process dies.
fn spawn_owned(mut cmd: Command) -> io::Result<Child> {
    type Job = (Command, mpsc::Sender<io::Result<Child>>);
    static SPAWNER: OnceLock<mpsc::Sender<Job>> = OnceLock::new();

    let owner = nix::unistd::getpid();
    cmd.process_group(0);
    // SAFETY: the closure runs between fork and exec and only makes two
    // async-signal-safe system calls (prctl, getppid); it allocates nothing.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            // The owner may have died between fork and prctl.
            if nix::unistd::getppid() != owner {
                return Err(io::Error::from_raw_os_error(nix::libc::ESRCH));
            }
            Ok(())
        });
    }

    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        thread::Builder::new()
            .name("ctrl-testkit-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawn the testkit spawner thread");
        tx
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner
        .send((cmd, reply_tx))
        .map_err(|_| io::Error::other("the spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("the spawner thread is gone"))?
}

/// A running dependency process with its log file and optional pid file.
///
/// Dropping it kills the process group with SIGKILL and reaps the child; use
/// [`Supervised::terminate`] for a graceful stop.
#[derive(Debug)]
pub struct Supervised {
    name: String,
    child: Child,
    id: ProcessId,
    log_path: PathBuf,
    pid_file: Option<PathBuf>,
    exit: Option<ExitStatus>,
}

impl Supervised {
    /// Starts `cmd` with stdin closed and stdout/stderr appended to `log_path`.
    /// If `pid_file` is given, the process and owner identities are written there.
    pub fn spawn(
        name: &str,
        mut cmd: Command,
        log_path: &Path,
        pid_file: Option<&Path>,
    ) -> Result<Self, Error> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .map_err(|e| Error::io(format!("open log file {}", log_path.display()), e))?;
        let log_err = log
            .try_clone()
            .map_err(|e| Error::io("clone log file handle", e))?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        let program = cmd.get_program().to_string_lossy().into_owned();
        let child =
            spawn_owned(cmd).map_err(|e| Error::io(format!("start {name} ({program})"), e))?;
        let pid = i32::try_from(child.id()).expect("pid fits in i32");
        // The child exists until we reap it, so its stat entry is readable.
        let id = ProcessId::of(pid).unwrap_or(ProcessId { pid, start_time: 0 });
        let mut this = Self {
            name: name.to_owned(),
            child,
            id,
            log_path: log_path.to_owned(),
            pid_file: None,
            exit: None,
        };
        if let Some(path) = pid_file {
            let owner = ProcessId::current();
            let line = format!(
                "{} {} {} {}\n",
                id.pid, id.start_time, owner.pid, owner.start_time
            );
            fs::write(path, line)
                .map_err(|e| Error::io(format!("write pid file {}", path.display()), e))?;
            this.pid_file = Some(path.to_owned());
        }
        Ok(this)
    }

    /// The process identity (pid and start time).
    pub fn id(&self) -> ProcessId {
        self.id
    }

    /// The name given at spawn time, used in messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The log file receiving stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The exit status if the process has ended (reaps it), `None` while it runs.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }

    /// Sends SIGTERM to the process group, waits up to `grace`, then SIGKILLs.
    pub fn terminate(&mut self, grace: Duration) {
        self.signal_group(Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while self.exit_status().is_none() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }

    /// Kills the process group with SIGKILL and reaps the child.
    pub fn kill(&mut self) {
        self.signal_group(Signal::SIGKILL);
        if self.exit.is_none() {
            self.exit = self.child.wait().ok();
        }
        if let Some(path) = self.pid_file.take() {
            let _ = fs::remove_file(path);
        }
    }

    fn signal_group(&self, signal: Signal) {
        // The group outlives its leader while members remain, so signal it even
        // if the leader already exited; ESRCH just means nothing is left.
        let _ = killpg(Pid::from_raw(self.id.pid), signal);
    }

    /// The last `lines` lines of the log file, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log_path, lines)
    }

    /// An error for a process that failed to become ready, with its log tail.
    pub fn startup_error(&mut self, reason: impl Into<String>) -> Error {
        let mut reason = reason.into();
        if let Some(status) = self.exit_status() {
            reason = format!("{reason} (the process exited: {status})");
        }
        Error::Startup {
            name: self.name.clone(),
            reason,
            log: self.log_path.clone(),
            tail: self.log_tail(40),
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `lines` lines of a text file (reads at most the last 64 KiB).
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(mut file) = File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut buf = Vec::new();
    let _ = file.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Kills a process group recorded in a pid file if its leader is still the
/// same process. Returns whether something was killed.
pub(crate) fn kill_recorded(id: ProcessId) -> bool {
    if id.is_alive() {
        killpg(Pid::from_raw(id.pid), Signal::SIGKILL).is_ok()
    } else {
        false
    }
}

/// Polls `ready` every 50 ms until it returns true, the process exits, or
/// `timeout` passes; failures carry the process's log tail.
pub(crate) async fn wait_ready<F, Fut>(
    process: &mut Supervised,
    timeout: Duration,
    mut ready: F,
) -> Result<(), Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if process.exit_status().is_some() {
            return Err(process.startup_error("exited during startup"));
        }
        if ready().await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(process.startup_error(format!("not ready after {timeout:?}")));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
