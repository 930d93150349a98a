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
//! - `output`: tables, colours and time formatting shared by the commands.
//! - `progress`: the spinner of every long wait.
//! - `image`, `routes`: what users type (images, route and monitor flags)
//!   turned into the API's shapes, and back.
//! - `wait`: waiting for an app's instances, and why they are not running.
//! - `log_stream`: log lines for people, a follow of the log hub that
//!   reconnects, and the lines shown while create and scale wait.
//! - `bits`, `buildpacks`, `transfer`: the droplet commands' archives (app
//!   bits honouring `.cfignore`/`.gitignore`, zips as tgz), the buildpack
//!   kinds and well-known names, and uploads/downloads with progress bars.
//! - `cf_env`: the Cloud Foundry environment (`VCAP_APPLICATION`, ...) of
//!   buildpack apps and their staging.
//! - `embed`: [`run_with`], one command line against a given target, for
//!   programs (end-to-end tests) that drive a cluster with ltc.
//!
//! # Exit codes
//! 0 success; 1 failure (the message and its causes go to stderr); 2 usage
//! error (from clap); 3 placement failed: an app's instances (or its staging
//! task) were not running in time, as Lattice's `ltc create` reported.
//! `ltc ssh` exits with the remote command's status.

use std::io::{IsTerminal as _, Write};

use anyhow::Context as _;
use lattice_client::Client;
use lattice_client::LogsClient;

mod bits;
mod buildpacks;
mod cf_env;
pub mod cli;
pub mod commands;
pub mod config;
mod embed;
mod image;
mod log_stream;
mod output;
mod progress;
mod routes;
mod transfer;
mod wait;

pub use embed::run_with;
pub use wait::PlacementFailed;

use cli::{Cli, Command};
use config::{ConfigFile, SavedConfig, Target};

/// Exit code of a command that failed.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code of a command line that clap refused.
pub const EXIT_USAGE: u8 = 2;
/// Exit code of a command whose work was not placed or not running in time
/// ([`PlacementFailed`]).
pub const EXIT_PLACEMENT: u8 = 3;

/// The exit code for a command that failed with `err`: `ltc ssh`'s
/// remote command's own, or one of the codes above.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    if let Some(remote) = err.downcast_ref::<commands::ssh::RemoteExit>() {
        return remote.0;
    }
    if err.chain().any(|cause| cause.is::<PlacementFailed>()) {
        EXIT_PLACEMENT
    } else {
        EXIT_FAILURE
    }
}

/// What every command may need: the config file and the target in force.
#[derive(Debug, Clone)]
pub struct Context {
    pub config_file: ConfigFile,
    pub saved: SavedConfig,
    pub target: Target,
    /// Whether tables and blocks may be coloured: stdout is a terminal and
    /// `NO_COLOR` (no-color.org) is unset.
    pub color: bool,
    /// Where notices and the waits' log lines go.
    pub stderr: output::Stderr,
}

impl Context {
    /// Reads the config file and applies the environment overrides.
    pub fn load(env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Context> {
        let config_file = ConfigFile::locate(env)?;
        let saved = config_file.load()?;
        let target = config::resolve(&saved, env)?;
        let no_color = env("NO_COLOR").is_some();
        let color = std::io::stdout().is_terminal() && !no_color;
        Ok(Context {
            config_file,
            saved,
            target,
            color,
            stderr: output::Stderr::process(no_color),
        })
    }

    /// A client of the target in force.
    pub fn client(&self) -> anyhow::Result<Client> {
        Client::new(&self.target.url, self.target.credentials.clone())
            .context("cannot use the target; set another with `ltc target URL`")
    }

    /// A client of the log routes of the target in force (the receptor
    /// serves them, behind the same credentials).
    pub fn logs_client(&self) -> anyhow::Result<LogsClient> {
        LogsClient::new(&self.target.url, self.target.credentials.clone())
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
    run_in(cli, &|| Context::load(env), env, out).await
}

/// [`run`] with the context made by `ctx` ([`run_with`] gives its own).
async fn run_in(
    cli: Cli,
    ctx: &dyn Fn() -> anyhow::Result<Context>,
    env: &dyn Fn(&str) -> Option<String>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match cli.command {
        Command::Completion(args) => commands::completion::run(&args, out),
        Command::Target(args) => commands::target::run(&args, &ctx()?, out).await,
        Command::Version(args) => commands::version::run(&args, &ctx()?, out).await,
        Command::Sync(args) => commands::sync::run(&args, &ctx()?, out).await,
        Command::SubmitTask(args) => commands::submit_task::run(&args, &ctx()?, out).await,
        Command::ListTasks(args) => commands::list_tasks::run(&args, &ctx()?, out).await,
        Command::Task(args) => commands::task::run(&args, &ctx()?, out).await,
        Command::CancelTask(args) => commands::cancel_task::run(&args, &ctx()?, out).await,
        Command::DeleteTask(args) => commands::delete_task::run(&args, &ctx()?, out).await,
        Command::Cells(args) => commands::cells::run(&args, &ctx()?, out).await,
        Command::Create(args) => commands::create::run(&args, &ctx()?, env, out).await,
        Command::Scale(args) => commands::scale::run(&args, &ctx()?, out).await,
        Command::Status(args) => commands::status::run(&args, &ctx()?, out).await,
        Command::Ssh(args) => commands::ssh::run(&args, &ctx()?, out).await,
        Command::List(args) => commands::list::run(&args, &ctx()?, out).await,
        Command::Remove(args) => commands::remove::run(&args, &ctx()?, out).await,
        Command::Update(args) => commands::update::run(&args, &ctx()?, out).await,
        Command::UpdateRoutes(args) => commands::update_routes::run(&args, &ctx()?, out).await,
        Command::SubmitLrp(args) => commands::submit_lrp::run(&args, &ctx()?, out).await,
        Command::Visualize(args) => commands::visualize::run(&args, &ctx()?, out).await,
        Command::Logs(args) => commands::logs::run(&args, &ctx()?, out, output::ctrl_c()).await,
        Command::DebugLogs(args) => {
            commands::debug_logs::run(&args, &ctx()?, out, output::ctrl_c()).await
        }
        Command::Test(args) => commands::test::run(&args, &ctx()?, out, output::ctrl_c()).await,
        Command::BuildDroplet(args) => commands::build_droplet::run(&args, &ctx()?, env, out).await,
        Command::LaunchDroplet(args) => {
            commands::launch_droplet::run(&args, &ctx()?, env, out).await
        }
        Command::ListDroplets(args) => commands::list_droplets::run(&args, &ctx()?, out).await,
        Command::RemoveDroplet(args) => commands::remove_droplet::run(&args, &ctx()?, out).await,
        Command::ExportDroplet(args) => commands::export_droplet::run(&args, &ctx()?, out).await,
        Command::ImportDroplet(args) => commands::import_droplet::run(&args, &ctx()?, out).await,
    }?;
    out.flush().context("cannot write the output")
}

/// Whether `err` needs no message: the remote command of `ltc ssh`
/// failed, and said why itself.
pub fn is_silent(err: &anyhow::Error) -> bool {
    err.is::<commands::ssh::RemoteExit>()
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

    #[test]
    fn placement_failures_have_their_own_exit_code() {
        let failed = PlacementFailed {
            summary: "web is not running".into(),
            details: vec![],
        };
        let err = Err::<(), _>(failed)
            .context("cannot create web")
            .unwrap_err();
        assert_eq!(exit_code(&err), EXIT_PLACEMENT);
        assert_eq!(exit_code(&anyhow::anyhow!("other")), EXIT_FAILURE);
    }
}
