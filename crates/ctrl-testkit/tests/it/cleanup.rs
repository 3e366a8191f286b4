//! Nothing a test starts outlives it: not on panic, not on SIGKILL.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ctrl_testkit::process::ProcessId;
use ctrl_testkit::reaper::{reap_stale, scratch_root};

/// How many servers `testkit-owner` starts; the container's pid comes after.
const SERVERS: usize = 6;

/// Runs `testkit-owner <mode>` and returns it with the identities it printed.
fn spawn_owner(mode: &str) -> Result<(std::process::Child, Vec<ProcessId>)> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_testkit-owner"))
        .arg(mode)
        .stdout(Stdio::piped())
        // Inherited: the owner's startup messages land in this test's output.
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("owner stdout")?).read_line(&mut line)?;
    let Some(pids) = line.strip_prefix("pids ") else {
        let _ = child.kill();
        bail!("testkit-owner did not start its dependencies (printed {line:?})");
    };
    let ids = pids
        .split_whitespace()
        .map(|p| ProcessId::of(p.parse()?).context(format!("process {p} is not running")))
        .collect::<Result<Vec<_>>>()?;
    assert_eq!(
        ids.len(),
        SERVERS + 1,
        "restate, mariadb, challtestsrv, pebble, moto, podman, container: {line}"
    );
    Ok((child, ids))
}

fn wait_until_gone(ids: &[ProcessId]) -> Vec<ProcessId> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let alive: Vec<ProcessId> = ids.iter().copied().filter(ProcessId::is_alive).collect();
        if alive.is_empty() || Instant::now() > deadline {
            return alive;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_panicking_owner_leaves_no_process_behind() -> Result<()> {
    let (mut child, ids) = spawn_owner("panic")?;
    let status = child.wait()?;
    assert!(!status.success(), "the owner panicked, so it must fail");
    let alive = wait_until_gone(&ids);
    assert!(alive.is_empty(), "still running after the panic: {alive:?}");
    Ok(())
}

#[test]
fn a_killed_owner_leaves_nothing_after_the_reaper_runs() -> Result<()> {
    let (mut child, ids) = spawn_owner("hang")?;
    let owner = ProcessId::of(i32::try_from(child.id())?).context("owner runs")?;
    // SIGKILL, as a test runner does on timeout: no destructor runs.
    child.kill()?;
    child.wait()?;

    // The kernel kills the servers themselves (parent-death signal).
    let alive = wait_until_gone(&ids[..SERVERS]);
    assert!(
        alive.is_empty(),
        "servers still running after SIGKILL: {alive:?}"
    );

    // The container runs under conmon, outside any group we own; the reaper
    // finds it through the dead owner's directory and removes it.
    let owner_dir = scratch_root().join(format!("{}-{}", owner.pid, owner.start_time));
    assert!(
        owner_dir.is_dir(),
        "the owner's scratch dir exists until reaped"
    );
    let reaped = reap_stale(&scratch_root());
    assert!(reaped.dirs >= 1, "{reaped:?}");
    assert!(!owner_dir.exists(), "the dead owner's directory is removed");
    let alive = wait_until_gone(&ids[SERVERS..]);
    assert!(
        alive.is_empty(),
        "container still running after reaping: {alive:?}"
    );
    Ok(())
}

#[test]
fn the_reaper_kills_processes_recorded_by_a_dead_owner() -> Result<()> {
    // A fake owner directory: same pid as us but another start time, so the
    // "owner" is certainly not alive.
    let root = tempfile::tempdir()?;
    let me = ProcessId::current();
    let dir = root
        .path()
        .join(format!("{}-{}", me.pid, me.start_time + 1));
    std::fs::create_dir_all(dir.join("dep"))?;
    let mut sleeper = Command::new("sleep").arg("300").process_group(0).spawn()?;
    let id = ProcessId::of(i32::try_from(sleeper.id())?).context("sleep runs")?;
    std::fs::write(
        dir.join("dep/dep.pid"),
        format!(
            "{} {} {} {}\n",
            id.pid,
            id.start_time,
            me.pid,
            me.start_time + 1
        ),
    )?;
    // A live owner's directory (ours) is left alone.
    let live = root.path().join(format!("{}-{}", me.pid, me.start_time));
    std::fs::create_dir_all(&live)?;

    let reaped = reap_stale(root.path());
    sleeper.wait()?;
    assert_eq!(reaped.processes, 1);
    assert_eq!(reaped.dirs, 1);
    assert!(!id.is_alive());
    assert!(!dir.exists());
    assert!(live.exists(), "a live owner's directory must not be reaped");
    Ok(())
}
