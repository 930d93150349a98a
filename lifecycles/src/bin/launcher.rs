//! `launcher [-- CMD ARGS...]`: becomes the given command, or the image's
//! entrypoint and cmd, with the image's environment (under the process's
//! own) and working directory. See [`lattice_lifecycles::launcher`] for the
//! rules and exit codes.

use std::process::ExitCode;

use lattice_lifecycles::args::EXIT_USAGE;
use lattice_lifecycles::launcher::{self, LauncherArgs, USAGE};

fn main() -> ExitCode {
    let command = match LauncherArgs::parse(std::env::args_os().skip(1).collect()) {
        Ok(LauncherArgs::Run(command)) => command,
        Ok(LauncherArgs::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!("launcher: {err}\n{USAGE}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    // Returns only when the command could not be started.
    let err = launcher::launch(command);
    eprintln!("launcher: {err}");
    ExitCode::from(err.exit_code())
}
