//! ltc: the command-line client of the lattice cluster runtime.
//!
//! It talks to the receptor through `lattice_client` and only formats what
//! the receptor says; every rule about work lives on the server.
//!
//! # Layout
//! - [`cli`]: the argument structs (clap derive); their docs are `--help`.
//! - [`commands`]: one file per command, each with a `run` that writes to a
//!   given output so that tests can capture it.
//! - [`config`]: the saved target and credentials, and their overrides.
//! - `output`: tables and time formatting shared by the commands.
//!
//! # Exit codes
//! 0 success; 1 failure (the message and its causes go to stderr); 2 usage
//! error (from clap).

use std::io::Write;

use anyhow::Context as _;
use lattice_client::Client;

pub mod cli;
pub mod commands;
pub mod config;
mod output;

use cli::{Cli, Command};
use config::{ConfigFile, SavedConfig, Target};

/// Exit code of a command that failed.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code of a command line that clap refused.
pub const EXIT_USAGE: u8 = 2;

/// What every command may need: the config file and the target in force.
#[derive(Debug, Clone)]
pub struct Context {
    pub config_file: ConfigFile,
    pub saved: SavedConfig,
    pub target: Target,
}

impl Context {
    /// Reads the config file and applies the environment overrides.
    pub fn load(env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Context> {
        let config_file = ConfigFile::locate(env)?;
        let saved = config_file.load()?;
        let target = config::resolve(&saved, env)?;
        Ok(Context {
            config_file,
            saved,
            target,
        })
    }

    /// A client of the target in force.
    pub fn client(&self) -> anyhow::Result<Client> {
        Client::new(&self.target.url, self.target.credentials.clone())
            .context("cannot use the target; set another with `ltc target URL`")
    }
}

/// Runs one parsed command line; `env` is the process environment (tests
/// pass their own).
pub async fn run(
    cli: Cli,
    env: &dyn Fn(&str) -> Option<String>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    // Loaded per command: completions need no config and must work even
    // with a broken one.
    let ctx = || Context::load(env);
    match cli.command {
        Command::Completions(args) => commands::completions::run(&args, out),
        Command::Target(args) => commands::target::run(&args, &ctx()?, out).await,
        Command::Version(args) => commands::version::run(&args, &ctx()?, out).await,
        Command::SubmitTask(args) => commands::submit_task::run(&args, &ctx()?, out).await,
        Command::ListTasks(args) => commands::list_tasks::run(&args, &ctx()?, out).await,
        Command::Task(args) => commands::task::run(&args, &ctx()?, out).await,
        Command::CancelTask(args) => commands::cancel_task::run(&args, &ctx()?, out).await,
        Command::DeleteTask(args) => commands::delete_task::run(&args, &ctx()?, out).await,
        Command::Cells(args) => commands::cells::run(&args, &ctx()?, out).await,
    }?;
    out.flush().context("cannot write the output")
}

/// Whether `err` is a closed stdout (`ltc list-tasks | head`), which is not a
/// failure of the command.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
pub(crate) mod testing;

#[cfg(test)]
mod tests {
    use std::io;

    use anyhow::Context as _;

    use super::*;

    #[test]
    fn broken_pipe_is_found_under_context() {
        let err = Err::<(), _>(io::Error::from(io::ErrorKind::BrokenPipe))
            .context("cannot write the output")
            .unwrap_err();
        assert!(is_broken_pipe(&err));
        let err = Err::<(), _>(io::Error::from(io::ErrorKind::NotFound))
            .context("cannot read")
            .unwrap_err();
        assert!(!is_broken_pipe(&err));
    }
}
