//! `builder --output PATH [-- START_COMMAND...]`: stages a Docker image.
//! Reads the image config Garden wrote into the container, writes the
//! execution metadata (start command, ports, user, working directory, env)
//! as JSON to PATH, and prints a one-line summary. See
//! [`lattice_lifecycles::builder`].
//!
//! Exit codes: 0 staged, 1 failed (no start command, unreadable config,
//! unwritable output), 2 bad usage.

use std::process::ExitCode;

use lattice_lifecycles::args::{EXIT_FAILURE, EXIT_USAGE};
use lattice_lifecycles::builder::{self, BuilderArgs, USAGE};

fn main() -> ExitCode {
    let args = match BuilderArgs::parse(std::env::args_os().skip(1).collect()) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!("builder: {err}\n{USAGE}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match builder::build_in_container(&args.output, &args.start_command) {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("builder: {err}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}
