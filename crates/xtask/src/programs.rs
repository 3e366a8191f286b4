//! Which programs the stack executes, and which Debian package provides each.
//!
//! A program that podman, netavark, conmon or MariaDB's bootstrap executes
//! must come from a package `cargo xtask deps` installs (or from Debian's
//! essential set, present on every machine). Nothing lists those programs
//! reliably — netavark runs `iptables` without any package declaring it — so
//! we watch them: the command runs under `strace -f`, every `execve` is
//! recorded, and each program is traced back to its package with
//! `dpkg-query -S`. A program that was looked for but never found is named as
//! missing.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use std::{fs, thread};

use anyhow::{Context, Result, bail};

/// One `execve` seen in a trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Exec {
    pub(crate) pid: u32,
    pub(crate) path: String,
    pub(crate) argv: Vec<String>,
    /// Whether the call succeeded.
    pub(crate) ok: bool,
    /// The program that made the call (a forked child still runs its
    /// parent's program until it executes another).
    pub(crate) caller: String,
}

impl Exec {
    /// The program's file name (`iptables` for `/usr/sbin/iptables`).
    pub(crate) fn name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }
}

/// What a traced command executed on the host (a container's own processes
/// are left out: they run inside its image, not from the host's packages).
#[derive(Debug, Default)]
pub(crate) struct Trace {
    pub(crate) execs: Vec<Exec>,
}

impl Trace {
    /// Host programs that were executed, by path.
    pub(crate) fn executed(&self) -> BTreeSet<String> {
        self.execs
            .iter()
            .filter(|e| e.ok && !e.path.starts_with("/proc/"))
            .map(|e| e.path.clone())
            .collect()
    }

    /// Programs looked for (usually along `PATH`) and never found, with the
    /// program that looked for them.
    pub(crate) fn missing(&self) -> BTreeMap<String, String> {
        let found: HashSet<&str> = self.execs.iter().filter(|e| e.ok).map(Exec::name).collect();
        self.execs
            .iter()
            .filter(|e| !e.ok && !found.contains(e.name()))
            .map(|e| (e.name().to_owned(), e.caller.clone()))
            .collect()
    }

    /// Adds another trace's executions.
    pub(crate) fn extend(&mut self, other: Trace) {
        self.execs.extend(other.execs);
    }
}

/// The strace arguments that record executions and process creation.
pub(crate) fn strace_args(output: &Path) -> Vec<String> {
    vec![
        "-f".into(),
        "-q".into(),
        "-s".into(),
        "256".into(),
        "-e".into(),
        "trace=execve,execveat,clone,clone3,fork,vfork".into(),
        "-e".into(),
        "signal=none".into(),
        "-o".into(),
        output.display().to_string(),
    ]
}

/// Runs `program args…` under strace until it and everything it started
/// have exited (at most `limit`), and returns what it executed.
#[cfg(test)]
pub(crate) fn trace_command(cmd: &Command, limit: Duration) -> Result<Trace> {
    Traced::spawn(cmd)?.finish(limit)
}

/// A traced process running in the background (see [`Traced::finish`]).
#[derive(Debug)]
pub(crate) struct Traced {
    child: std::process::Child,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

impl Traced {
    /// Starts `cmd` (its program, arguments, environment and working
    /// directory) under strace without waiting for it; its output goes to
    /// `output.log` next to the trace.
    pub(crate) fn spawn(cmd: &Command) -> Result<Self> {
        let dir = tempfile::tempdir().context("create a trace directory")?;
        let out = dir.path().join("trace");
        let log =
            fs::File::create(dir.path().join("output.log")).context("create the output log")?;
        let mut strace = Command::new(strace()?);
        strace
            .args(strace_args(&out))
            .arg("--")
            .arg(cmd.get_program())
            .args(cmd.get_args())
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("clone the log handle")?)
            .stderr(log);
        for (key, value) in cmd.get_envs() {
            match value {
                Some(v) => strace.env(key, v),
                None => strace.env_remove(key),
            };
        }
        if let Some(dir) = cmd.get_current_dir() {
            strace.current_dir(dir);
        }
        let child = strace.spawn().context("run strace")?;
        Ok(Self {
            child,
            out,
            _dir: dir,
        })
    }

    /// The exit code of the traced command itself, once it has exited
    /// (the processes it left behind may still run).
    pub(crate) fn exit_code(&self) -> Option<i32> {
        let text = fs::read_to_string(&self.out).ok()?;
        let root = text.split_whitespace().next()?.to_owned();
        text.lines().find_map(|l| {
            let rest = l.strip_prefix(&root)?.trim_start();
            let code = rest.strip_prefix("+++ exited with ")?;
            code.split_whitespace().next()?.parse().ok()
        })
    }

    /// What the traced command printed so far.
    pub(crate) fn output(&self) -> String {
        fs::read_to_string(self._dir.path().join("output.log")).unwrap_or_default()
    }

    /// Waits (at most `limit`) until every traced process has exited, and
    /// returns the trace.
    pub(crate) fn finish(mut self, limit: Duration) -> Result<Trace> {
        wait_or_kill(&mut self.child, limit)?;
        let text = fs::read_to_string(&self.out).context("read the trace")?;
        Ok(parse(&text))
    }
}

impl Drop for Traced {
    fn drop(&mut self) {
        // Killing strace detaches its tracees; they finish on their own.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_or_kill(
    child: &mut std::process::Child,
    limit: Duration,
) -> Result<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the traced command did not finish within {limit:?}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// The strace binary (installed by `cargo xtask deps`).
pub(crate) fn strace() -> Result<PathBuf> {
    ctrl_testkit::paths::system_program("strace")
        .context("strace is not installed; run `cargo xtask deps`")
}

/// Parses `strace -f` output (see [`strace_args`]).
///
/// `runc init` is where a container begins: the process that executes it,
/// and everything it starts, run the container's own programs, which are
/// left out.
pub(crate) fn parse(text: &str) -> Trace {
    // Calls in the order they began: a call split by `<unfinished ...>`
    // keeps its place (a `clone` returns after its child's first `execve`
    // was already printed), and is completed by its `resumed` line.
    let mut calls: Vec<(u32, String)> = Vec::new();
    let mut pending: HashMap<u32, usize> = HashMap::new();
    for line in text.lines() {
        let Some((pid, rest)) = line.split_once(' ') else {
            continue;
        };
        let Ok(pid) = pid.trim().parse::<u32>() else {
            continue;
        };
        let rest = rest.trim_start();
        if let Some(first) = rest.strip_suffix("<unfinished ...>") {
            pending.insert(pid, calls.len());
            calls.push((pid, first.to_owned()));
        } else if rest.starts_with("<... ") {
            if let Some(i) = pending.remove(&pid) {
                let tail = rest.split_once("resumed>").map_or("", |(_, t)| t);
                calls[i].1.push_str(tail);
            }
        } else {
            calls.push((pid, rest.to_owned()));
        }
    }
    let mut parent: HashMap<u32, u32> = HashMap::new();
    let mut container: HashSet<u32> = HashSet::new();
    // The program each process runs (by name).
    let mut running: HashMap<u32, String> = HashMap::new();
    let mut execs = Vec::new();
    for (pid, call) in calls {
        let Some((_, result)) = call.rsplit_once(" = ") else {
            continue;
        };
        let result = result.split_whitespace().next().unwrap_or_default();
        let name = call.split('(').next().unwrap_or_default();
        match name {
            "clone" | "clone3" | "fork" | "vfork" => {
                if let Ok(child) = result.parse::<u32>() {
                    parent.insert(child, pid);
                    if let Some(program) = running.get(&pid).cloned() {
                        running.insert(child, program);
                    }
                    if in_container(pid, &parent, &container) {
                        container.insert(child);
                    }
                }
            }
            "execve" | "execveat" => {
                let strings = quoted_strings(&call);
                // execveat(dirfd, "path", ...): the path is still the first string.
                let Some(path) = strings.first().cloned() else {
                    continue;
                };
                let argv = strings.into_iter().skip(1).collect::<Vec<_>>();
                let ok = result == "0";
                if in_container(pid, &parent, &container) {
                    continue;
                }
                if ok && argv.get(1).is_some_and(|a| a == "init") && is_runc(&path, &argv) {
                    container.insert(pid);
                }
                let caller = running
                    .get(&pid)
                    .cloned()
                    .unwrap_or_else(|| "the traced command".to_owned());
                let exec = Exec {
                    pid,
                    path,
                    argv,
                    ok,
                    caller,
                };
                if ok {
                    running.insert(pid, exec.name().to_owned());
                }
                execs.push(exec);
            }
            _ => {}
        }
    }
    Trace { execs }
}

fn is_runc(path: &str, argv: &[String]) -> bool {
    let base = |s: &str| s.rsplit('/').next().unwrap_or(s).to_owned();
    base(path) == "runc" || argv.first().is_some_and(|a| base(a) == "runc")
}

fn in_container(pid: u32, parent: &HashMap<u32, u32>, container: &HashSet<u32>) -> bool {
    let mut at = pid;
    for _ in 0..64 {
        if container.contains(&at) {
            return true;
        }
        match parent.get(&at) {
            Some(&p) => at = p,
            None => return false,
        }
    }
    false
}

/// The C-style quoted strings of a strace line, unescaped enough for paths
/// and arguments (`\"` and `\\`).
fn quoted_strings(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c != '"' {
            continue;
        }
        let mut s = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    if let Some(next) = chars.next() {
                        s.push(next);
                    }
                }
                '"' => break,
                c => s.push(c),
            }
        }
        out.push(s);
    }
    out
}

// === packages ===

/// The installed Debian package that provides `path`, trying the path as
/// executed, its canonical form (alternatives such as
/// `/usr/sbin/iptables` → `xtables-legacy-multi`) and its merged-/usr twin.
pub(crate) fn package_of(path: &str) -> Option<String> {
    let mut candidates = vec![path.to_owned()];
    if let Ok(real) = fs::canonicalize(path) {
        candidates.push(real.display().to_string());
    }
    for c in candidates.clone() {
        if let Some(rest) = c.strip_prefix("/usr") {
            candidates.push(rest.to_owned());
        } else {
            candidates.push(format!("/usr{c}"));
        }
    }
    candidates.into_iter().find_map(|c| {
        let out = Command::new("dpkg-query").arg("-S").arg(&c).output().ok()?;
        if !out.status.success() {
            return None;
        }
        let text = String::from_utf8_lossy(&out.stdout);
        // "pkg[:arch][, pkg2]: /path" — diversions print "diversion by ...".
        text.lines()
            .filter(|l| !l.starts_with("diversion by"))
            .find_map(|l| l.rsplit_once(": ").map(|(pkgs, _)| pkgs.to_owned()))
            .and_then(|pkgs| pkgs.split(", ").next().map(str::to_owned))
            .map(|p| p.split(':').next().unwrap_or(&p).to_owned())
    })
}

/// Installed packages: name → (essential?, dependencies as alternatives,
/// virtual packages it provides).
#[derive(Debug, Default)]
pub(crate) struct Installed {
    packages: HashMap<String, Package>,
    providers: HashMap<String, Vec<String>>,
}

#[derive(Debug, Default)]
struct Package {
    essential: bool,
    depends: Vec<Vec<String>>,
}

impl Installed {
    /// Reads the dpkg database (one `dpkg-query` call).
    pub(crate) fn read() -> Result<Self> {
        let out = Command::new("dpkg-query")
            .args([
                "-W",
                "-f=${Package}\t${db:Status-Abbrev}\t${Essential}\t${Pre-Depends}, ${Depends}\t${Provides}\n",
            ])
            .output()
            .context("run dpkg-query")?;
        if !out.status.success() {
            bail!(
                "dpkg-query -W failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(Self::parse(&String::from_utf8_lossy(&out.stdout)))
    }

    fn parse(text: &str) -> Self {
        let names = |field: &str| -> Vec<Vec<String>> {
            field
                .split(',')
                .map(|group| {
                    group
                        .split('|')
                        .map(|alt| {
                            let name = alt.trim().split([' ', '(']).next().unwrap_or_default();
                            name.split(':').next().unwrap_or_default().to_owned()
                        })
                        .filter(|n| !n.is_empty())
                        .collect::<Vec<_>>()
                })
                .filter(|g| !g.is_empty())
                .collect()
        };
        let mut installed = Self::default();
        for line in text.lines() {
            let fields: Vec<&str> = line.split('\t').collect();
            let [name, status, essential, depends, provides] = fields[..] else {
                continue;
            };
            if !status.starts_with("ii") {
                continue;
            }
            for virt in names(provides).into_iter().flatten() {
                installed
                    .providers
                    .entry(virt)
                    .or_default()
                    .push(name.to_owned());
            }
            installed.packages.insert(
                name.to_owned(),
                Package {
                    essential: essential == "yes",
                    depends: names(depends),
                },
            );
        }
        installed
    }

    /// Whether `package` is one of Debian's essential packages.
    pub(crate) fn is_essential(&self, package: &str) -> bool {
        self.packages.get(package).is_some_and(|p| p.essential)
    }

    /// `roots` and every installed package they depend on, directly or not
    /// (through any installed alternative or provider).
    pub(crate) fn closure<'a>(&self, roots: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut queue: Vec<String> = roots.into_iter().map(str::to_owned).collect();
        while let Some(name) = queue.pop() {
            let Some(package) = self.packages.get(&name) else {
                // A virtual package: whatever installed package provides it.
                if let Some(providers) = self.providers.get(&name) {
                    queue.extend(providers.iter().cloned());
                }
                continue;
            };
            if !seen.insert(name) {
                continue;
            }
            queue.extend(package.depends.iter().flatten().cloned());
        }
        seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_executions_and_leaves_the_container_out() {
        let text = r#"100 execve("/usr/bin/podman", ["podman", "run"], 0x7ffd /* 30 vars */) = 0
100 clone(child_stack=NULL, flags=CLONE_VM|CLONE_VFORK|SIGCHLD <unfinished ...>
101 execve("/usr/bin/conmon", ["/usr/bin/conmon", "--api-version", "1"], 0x1 /* 3 vars */ <unfinished ...>
100 <... clone resumed>) = 101
101 <... execve resumed>) = 0
101 clone3({flags=CLONE_VM, exit_signal=SIGCHLD}, 88) = 102
102 execve("/usr/sbin/runc", ["/usr/sbin/runc", "create"], 0x2 /* 3 vars */) = 0
102 clone(child_stack=NULL, flags=SIGCHLD) = 103
103 execve("/proc/self/exe", ["runc", "init"], 0x3 /* 3 vars */) = 0
103 clone(child_stack=NULL, flags=SIGCHLD) = 104
104 execve("/bin/httpd", ["httpd", "-f"], 0x4 /* 1 var */) = 0
100 vfork() = 105
105 execve("/usr/local/sbin/iptables", ["iptables", "-t", "nat"], 0x5 /* 3 vars */) = -1 ENOENT (No such file or directory)
105 execve("/usr/sbin/iptables", ["iptables", "-t", "nat"], 0x5 /* 3 vars */) = -1 ENOENT (No such file or directory)
100 fork() = 106
106 execve("/usr/local/bin/nft", ["nft"], 0x5 /* 3 vars */) = -1 ENOENT (No such file or directory)
106 execve("/usr/sbin/nft", ["nft"], 0x5 /* 3 vars */) = 0
"#;
        let trace = parse(text);
        let executed = trace.executed();
        assert_eq!(
            executed.into_iter().collect::<Vec<_>>(),
            [
                "/usr/bin/conmon",
                "/usr/bin/podman",
                "/usr/sbin/nft",
                "/usr/sbin/runc"
            ]
        );
        let missing = trace.missing();
        assert_eq!(missing.len(), 1, "{missing:?}");
        assert_eq!(missing["iptables"], "podman");
        let init = trace
            .execs
            .iter()
            .find(|e| e.path == "/proc/self/exe")
            .unwrap();
        assert_eq!(init.argv, ["runc", "init"]);
    }

    #[test]
    fn closure_follows_alternatives_and_providers() {
        let db = "podman\tii \t\t, conmon (>= 2.0), runc | crun, netavark | cni-plugins\t\n\
                  conmon\tii \t\t, libc6\t\n\
                  runc\tii \t\t, libc6\t\n\
                  netavark\tii \t\t, libc6:any\t\n\
                  libc6\tii \tyes\t, \t\n\
                  mawk\tii \tyes\t, \tawk\n\
                  needs-awk\tii \t\t, awk\t\n\
                  iptables\tii \t\t, libc6\t\n\
                  removed\trc \t\t, \t\n";
        let installed = Installed::parse(db);
        let closure = installed.closure(["podman", "needs-awk"]);
        for p in [
            "podman",
            "conmon",
            "runc",
            "netavark",
            "libc6",
            "needs-awk",
            "mawk",
        ] {
            assert!(closure.contains(p), "{p} missing from {closure:?}");
        }
        assert!(!closure.contains("iptables"));
        assert!(!closure.contains("crun"));
        assert!(installed.is_essential("libc6"));
        assert!(!installed.is_essential("podman"));
        assert!(!installed.is_essential("removed"));
    }
}
