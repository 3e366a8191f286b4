//! Proof that the container engine works on this machine: a throwaway
//! podman instance runs one container with a published port, and the port
//! answers HTTP. Run under strace, so when it fails the report names the
//! program that was missing (netavark looking for `iptables`, say) instead of
//! podman's "No such file or directory".

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ctrl_testkit::{Podman, StorageDriver};

use crate::deps::{PROGRAMS, venv_programs};
use crate::programs::{Exec, Installed, Trace, Traced, package_of};

const IMAGE: &str = "localhost/ctrl-engine-check:1";
const CONTAINER: &str = "ctrl-engine-check";
/// How long the container may take to answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(30);

/// The outcome of one engine check.
#[derive(Debug)]
pub(crate) struct Proof {
    /// `Ok` when the published port answered HTTP, else why not.
    pub(crate) answered: Result<(), String>,
    /// What podman and its helpers executed on the host, start to removal.
    pub(crate) trace: Trace,
}

/// Starts a throwaway podman, runs one container with a published port on
/// 127.0.0.1, asks it for `/`, removes it — all under strace.
pub(crate) async fn prove() -> Result<Proof> {
    let podman = Podman::builder()
        .storage_driver(StorageDriver::Vfs)
        .start()
        .await
        .context("start a podman API service")?;
    podman
        .import_busybox_image(IMAGE)
        .context("import a busybox image")?;
    let port = ctrl_testkit::free_port()?;
    let mut run = podman.command()?;
    run.args(["run", "--detach", "--name", CONTAINER, "--publish"])
        .arg(format!("127.0.0.1:{port}:8080"))
        .args([IMAGE, "/bin/httpd", "-f", "-p", "8080", "-h", "/bin"]);
    let started = Traced::spawn(&run)?;
    let answered = tokio::task::spawn_blocking(move || {
        let answered = wait_started(&started).and_then(|()| wait_answer(port));
        (started, answered)
    })
    .await?;
    let (started, answered) = answered;
    // Removing it runs the teardown path (port rules, network) too.
    let mut remove = podman.command()?;
    remove.args(["rm", "--force", "--time", "0", CONTAINER]);
    let removal = Traced::spawn(&remove)?;
    let mut trace = tokio::task::spawn_blocking(move || {
        let removed = removal.finish(Duration::from_secs(60));
        let mut trace = started.finish(Duration::from_secs(60))?;
        trace.extend(removed?);
        anyhow::Ok(trace)
    })
    .await??;
    trace.execs.retain(|e| !e.path.is_empty());
    Ok(Proof { answered, trace })
}

/// Waits until `podman run` itself has exited, and says why it failed.
fn wait_started(run: &Traced) -> Result<(), String> {
    let deadline = Instant::now() + ANSWER_WITHIN;
    loop {
        match run.exit_code() {
            Some(0) => return Ok(()),
            Some(code) => {
                return Err(format!(
                    "`podman run` exited with {code}: {}",
                    run.output().trim()
                ));
            }
            None if Instant::now() >= deadline => {
                return Err(format!(
                    "`podman run` did not finish within {ANSWER_WITHIN:?}"
                ));
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Waits until the published port answers an HTTP request.
fn wait_answer(port: u16) -> Result<(), String> {
    let deadline = Instant::now() + ANSWER_WITHIN;
    let mut last = String::new();
    while Instant::now() < deadline {
        match get(port) {
            Ok(status) if status.starts_with("HTTP/") => return Ok(()),
            Ok(other) => last = format!("answered {other:?}"),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!(
        "the container runs, but 127.0.0.1:{port} did not answer HTTP within {ANSWER_WITHIN:?} ({last})"
    ))
}

fn get(port: u16) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(1),
    )?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut buf = [0; 64];
    let n = stream.read(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned())
}

/// Problems with what a trace shows: programs looked for and not found,
/// and programs from packages that `cargo xtask deps` does not install
/// (directly or as a dependency) and that are not essential to Debian.
pub(crate) fn unprovided(trace: &Trace, apt_packages: &[&str]) -> Result<Vec<String>> {
    let installed = Installed::read()?;
    let closure = installed.closure(apt_packages.iter().copied());
    let mut problems = Vec::new();
    for (program, caller) in trace.missing() {
        problems.push(format!(
            "{caller} executes `{program}`, which is not installed"
        ));
    }
    let mut reported = BTreeSet::new();
    for path in trace.executed() {
        match package_of(&path) {
            None => problems.push(format!("{path} is executed but belongs to no package")),
            Some(package) if closure.contains(&package) || installed.is_essential(&package) => {}
            Some(package) => {
                if reported.insert(package.clone()) {
                    problems.push(format!(
                        "{path} comes from package {package}, which `cargo xtask deps` does not install"
                    ));
                }
            }
        }
    }
    Ok(problems)
}

/// The programs ctrl's own code runs by name ([`PROGRAMS`]), and the
/// interpreters of those it runs from the virtualenv ([`venv_programs`]),
/// as if traced.
pub(crate) fn direct_programs() -> Trace {
    let by_name = PROGRAMS.iter().map(|program| {
        let path = ctrl_testkit::paths::system_program(program).map_or_else(
            |_| format!("/usr/bin/{program}"),
            |p| p.display().to_string(),
        );
        Exec {
            pid: 0,
            ok: Path::new(&path).is_file(),
            path,
            argv: Vec::new(),
            caller: "ctrl's code".to_owned(),
        }
    });
    // The kernel starts a script's interpreter without an `execve` of its own.
    let interpreters = venv_programs().into_iter().map(|script| {
        let (path, caller) = match interpreter(&script) {
            Some(python) => (python, script.display().to_string()),
            // A script that is not there is missing itself.
            None => (script.display().to_string(), "ctrl's code".to_owned()),
        };
        Exec {
            pid: 0,
            ok: Path::new(&path).is_file(),
            path,
            argv: Vec::new(),
            caller,
        }
    });
    Trace {
        execs: by_name.chain(interpreters).collect(),
    }
}

/// The interpreter a script's `#!` line names.
fn interpreter(script: &Path) -> Option<String> {
    let mut head = [0; 256];
    let n = std::fs::File::open(script)
        .and_then(|mut f| f.read(&mut head))
        .ok()?;
    let head = String::from_utf8_lossy(&head[..n]);
    let line = head.strip_prefix("#!")?.lines().next()?;
    line.split_whitespace().next().map(str::to_owned)
}

/// `cargo xtask deps`'s engine check: the container answers, and every
/// program involved comes from an installed package; else exactly what is wrong.
pub(crate) async fn check(apt_packages: &[&str]) -> Result<()> {
    let started = Instant::now();
    let mut proof = prove().await?;
    proof.trace.extend(direct_programs());
    let problems = unprovided(&proof.trace, apt_packages)?;
    match (&proof.answered, problems.is_empty()) {
        (Ok(()), true) => {
            eprintln!(
                "  ok       {:<19} a container with a published port answered ({:.1?})",
                "engine",
                started.elapsed()
            );
            Ok(())
        }
        (answered, _) => {
            let mut lines = Vec::new();
            if let Err(why) = answered {
                lines.push(why.clone());
            }
            lines.extend(problems);
            bail!(
                "the container engine does not work:\n  - {}\nRun `cargo xtask deps` to install what is missing.",
                lines.join("\n  - ")
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;
    use crate::deps::apt_packages;
    use crate::programs::trace_command;

    /// What MariaDB's bootstrap script executes (the testkit and the dev
    /// stack run it once per machine).
    fn mariadb_bootstrap() -> Trace {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd =
            Command::new(ctrl_testkit::paths::system_program("mariadb-install-db").unwrap());
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", dir.path().join("data").display()))
            .args([
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
                "--user=root",
            ]);
        trace_command(&cmd, Duration::from_secs(180)).unwrap()
    }

    /// The guard against a fresh machine missing a program: everything
    /// podman, conmon, netavark and MariaDB's bootstrap execute, and every
    /// program ctrl's code runs by name, comes from a package `deps`
    /// installs (or from Debian's essential set).
    #[tokio::test]
    async fn every_program_the_stack_executes_comes_from_a_package_deps_installs() {
        let proof = prove().await.unwrap();
        let mut trace = proof.trace;
        let problems = unprovided(&trace, &apt_packages()).unwrap();
        assert!(
            problems.is_empty(),
            "podman's start of a container needs programs a fresh machine lacks:\n  {}\n({:?})",
            problems.join("\n  "),
            proof.answered
        );
        let names: BTreeSet<String> = trace
            .execs
            .iter()
            .filter(|e| e.ok)
            .map(|e| e.name().to_owned())
            .collect();
        for expected in ["podman", "conmon", "runc", "netavark"] {
            assert!(
                names.contains(expected),
                "the trace never saw {expected}: {names:?}"
            );
        }
        trace.extend(mariadb_bootstrap());
        trace.extend(direct_programs());
        let problems = unprovided(&trace, &apt_packages()).unwrap();
        assert!(
            problems.is_empty(),
            "programs a fresh machine would lack:\n  {}",
            problems.join("\n  ")
        );
        proof.answered.unwrap();
    }
}
