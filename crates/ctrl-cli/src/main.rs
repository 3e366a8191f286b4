//! `ctrl`: deploy apps and move their traffic (see `ctrl --help`).

use std::process::ExitCode;

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = ctrl_cli::args::Cli::parse();
    let env = std::env::vars().collect();
    let cwd = std::env::current_dir().unwrap_or_else(|_| ".".into());
    match ctrl_cli::run(cli, &env, &cwd).await {
        Ok(code) => code,
        Err(e) => {
            // One line: the context chain joined, never a backtrace.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
