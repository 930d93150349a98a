//! The `ltc` binary: parses the command line and runs it; see the library
//! for the commands and the exit codes.

use std::process::ExitCode;

use clap::Parser;
use ltc::cli::Cli;

fn main() -> ExitCode {
    // On a usage error clap prints it and exits with 2 (ltc::EXIT_USAGE).
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if ltc::is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) if ltc::is_silent(&err) => ExitCode::from(ltc::exit_code(&err)),
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(ltc::exit_code(&err))
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    use anyhow::Context as _;
    // One request at a time: a single-threaded runtime is all ltc needs.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    runtime.block_on(ltc::run(cli, &ltc::config::process_env, &mut out))
}
