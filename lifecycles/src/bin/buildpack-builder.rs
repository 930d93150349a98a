//! `buildpack-builder`: stages an app with buildpacks into a droplet, in a
//! container of the stack image. See [`lattice_lifecycles::buildpack_builder`]
//! for the steps, files and exit codes (0 staged, 222 not detected, 223
//! compile failed, 224 release failed, 1 other failure, 2 bad usage).

use std::process::ExitCode;

use lattice_lifecycles::args::EXIT_USAGE;
use lattice_lifecycles::buildpack_builder::{self, BuilderArgs, ScriptOutput, USAGE};

fn main() -> ExitCode {
    let args = match BuilderArgs::parse(std::env::args_os().skip(1).collect()) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!("buildpack-builder: {err}\n{USAGE}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match buildpack_builder::stage(&args, &mut std::io::stdout(), ScriptOutput::Inherit) {
        Ok(_) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("buildpack-builder: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}
