//! `droplet-launcher [--droplet-dir DIR] [-- CMD ARGS...]`: becomes the
//! droplet's start command (or the given command) in `DIR/app`, with the
//! droplet's environment under the process's own. See
//! [`lattice_lifecycles::droplet_launcher`] for the rules and exit codes.

use std::process::ExitCode;

use lattice_lifecycles::args::EXIT_USAGE;
use lattice_lifecycles::droplet_launcher::{self, DropletLauncherArgs, USAGE};

fn main() -> ExitCode {
    let args = match DropletLauncherArgs::parse(std::env::args_os().skip(1).collect()) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!("droplet-launcher: {err}\n{USAGE}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    // Returns only when the command could not be started.
    let err = droplet_launcher::launch(args);
    eprintln!("droplet-launcher: {err}");
    ExitCode::from(err.exit_code())
}
