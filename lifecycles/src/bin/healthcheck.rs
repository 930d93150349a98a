//! `healthcheck --port N [--uri /path] [--timeout 1s] [--host H]
//! [--until-ready-interval 10ms]`: a TCP (or, with `--uri`, HTTP) probe,
//! with `--until-ready-interval` tried again until healthy or timed out.
//! Exit codes: 0 healthy, 1 unhealthy (one line on stderr says why), 2 bad
//! usage. See [`lattice_lifecycles::healthcheck`].

use std::process::ExitCode;

use lattice_lifecycles::args::{EXIT_FAILURE, EXIT_USAGE};
use lattice_lifecycles::healthcheck::{self, HealthcheckArgs, USAGE};

fn main() -> ExitCode {
    let args = match HealthcheckArgs::parse(std::env::args_os().skip(1).collect()) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!("healthcheck: {err}\n{USAGE}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match healthcheck::check(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(unhealthy) => {
            eprintln!("{unhealthy}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}
