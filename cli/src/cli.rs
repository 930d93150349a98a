//! The command line: the top-level parser and the list of commands. Each
//! command's flags are declared next to its `run`, in `commands/`.

use clap::{Parser, Subcommand};

use crate::commands;

/// ltc drives a lattice cluster: it runs apps (long-running processes) from
/// Docker images, submits tasks, lists work and cells, and shows what the
/// cluster is doing.
///
/// The receptor to talk to is saved by `ltc target URL`; LTC_TARGET,
/// LTC_USERNAME and LTC_PASSWORD override it for one command, and
/// LTC_CONFIG_DIR moves the config file.
///
/// Exit codes: 0 success, 1 failure, 2 usage error, 3 placement failed (an
/// app was not running in time).
#[derive(Debug, Parser)]
#[command(name = "ltc", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// One value per process, parsed once: boxing `create`'s many flags would
// only add an indirection.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create an app from a Docker image and wait until it runs.
    Create(commands::create::Args),
    /// Change the number of instances of an app and wait until they run.
    Scale(commands::scale::Args),
    /// Show an app and its instances.
    Status(commands::status::Args),
    /// List apps and tasks.
    List(commands::list::Args),
    /// Remove apps (their instances are stopped).
    #[command(visible_alias = "rm")]
    Remove(commands::remove::Args),
    /// Change an app's instances or routes.
    Update(commands::update::Args),
    /// Set an app's HTTP routes (Lattice's older form: PORT:HOST,...).
    UpdateRoutes(commands::update_routes::Args),
    /// Create an app from a JSON file (a DesiredLrpCreateRequest).
    SubmitLrp(commands::submit_lrp::Args),
    /// Show the cells and the instances on each.
    Visualize(commands::visualize::Args),
    /// Show an app's log lines, recent then live until Ctrl-C.
    Logs(commands::logs::Args),
    /// Show the cluster's own logs (receptor, brain, cells) until Ctrl-C.
    DebugLogs(commands::debug_logs::Args),
    /// Show or set the receptor ltc talks to.
    Target(commands::target::Args),
    /// Show the versions of ltc and of the receptor.
    Version(commands::version::Args),
    /// Submit a task described by a JSON file (a TaskCreateRequest).
    SubmitTask(commands::submit_task::Args),
    /// List tasks.
    ListTasks(commands::list_tasks::Args),
    /// Show one task, with its result or failure reason.
    Task(commands::task::Args),
    /// Cancel a task that has not completed yet.
    CancelTask(commands::cancel_task::Args),
    /// Delete a completed task (after its result was read).
    DeleteTask(commands::delete_task::Args),
    /// List the cells of the cluster and their capacity.
    Cells(commands::cells::Args),
    /// Print a shell completion script.
    Completions(commands::completions::Args),
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn usage_errors_are_clap_errors() {
        let err = Cli::try_parse_from(["ltc", "task"]).unwrap_err();
        assert_eq!(err.exit_code(), i32::from(crate::EXIT_USAGE));
    }
}
