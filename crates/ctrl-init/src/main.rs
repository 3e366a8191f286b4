//! `ctrl-init PROGRAM [ARGS…]`: the entrypoint krane puts in front of a
//! workload that has secret variables (Docker backend).
//!
//! Secret values must never be part of a container's configuration, which
//! the engine stores on disk and shows to anyone who can inspect the
//! container. krane writes them instead to a file on a host tmpfs, mounted
//! read-only at [`SECRETS`]; this program reads them, adds them to its
//! environment and execs the workload (PATH lookup as `execvp`), so they
//! live only in memory: the tmpfs and the workload's environment.
//!
//! The file holds `NAME=value` entries, each ended by a NUL byte (values
//! may contain newlines). A missing or malformed file stops the container
//! with exit code 127 and a message on stderr; nothing is started without
//! its secrets.

use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

/// Where krane mounts the secrets (read-only, from a host tmpfs).
const SECRETS: &str = "/.ctrl/secrets/env";

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let Some(program) = args.next() else {
        eprintln!("ctrl-init: usage: ctrl-init PROGRAM [ARGS…]");
        return ExitCode::from(127);
    };
    let entries = match std::fs::read(SECRETS) {
        Ok(bytes) => bytes,
        Err(e) => {
            eprintln!("ctrl-init: cannot read the secret variables at {SECRETS}: {e}");
            return ExitCode::from(127);
        }
    };
    let mut command = Command::new(&program);
    command.args(args);
    for entry in entries.split(|b| *b == 0).filter(|e| !e.is_empty()) {
        let Some(eq) = entry.iter().position(|b| *b == b'=') else {
            eprintln!("ctrl-init: {SECRETS} holds an entry without '=' (no NAME=value)");
            return ExitCode::from(127);
        };
        let (name, value) = (&entry[..eq], &entry[eq + 1..]);
        command.env(os(name), os(value));
    }
    // Only returns on failure.
    let error = command.exec();
    eprintln!(
        "ctrl-init: cannot start {}: {error}",
        program.to_string_lossy()
    );
    ExitCode::from(127)
}

fn os(bytes: &[u8]) -> &std::ffi::OsStr {
    std::os::unix::ffi::OsStrExt::from_bytes(bytes)
}
