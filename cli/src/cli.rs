//! The command line: the top-level parser and the list of commands. Each
//! command's flags are declared next to its `run`, in `commands/`, with its
//! `EXAMPLES` (the `Examples:` section of its `--help`).

use clap::{Parser, Subcommand};

use crate::commands;

/// ltc drives a lattice cluster: it runs apps (long-running processes) from
/// Docker images, submits tasks, lists work and cells, and shows what the
/// cluster is doing.
///
/// The receptor to talk to is saved by `ltc target URL`; LTC_TARGET,
/// LTC_USERNAME and LTC_PASSWORD override it for one command, and
/// LTC_CONFIG_DIR moves the config file.
#[derive(Debug, Parser)]
#[command(name = "ltc", version, propagate_version = true, max_term_width = 100,
          after_help = AFTER_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The end of `ltc --help`. The codes are those of `crate::EXIT_*`; a test
/// holds them together.
pub const AFTER_HELP: &str = "\
Examples:
  # Point ltc at the cluster `lattice up` started, and check that it works
  ltc target 127.0.0.1:8888
  ltc test
  # Run the sample app, see it, and follow its logs
  ltc create hello lattice/lattice-app -i 3
  ltc status hello
  ltc logs hello
  # Every command has its own examples
  ltc help create

Exit codes:
  0  success
  1  failure: the message and its causes are on stderr
  2  usage error: the command line was refused
  3  placement failed: staging or an app's instances were not running in time";

// One value per process, parsed once: boxing `create`'s many flags would
// only add an indirection.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create an app from a Docker image and wait until it runs.
    #[command(after_help = commands::create::EXAMPLES)]
    Create(commands::create::Args),
    /// Change the number of instances of an app and wait until they run.
    #[command(after_help = commands::scale::EXAMPLES)]
    Scale(commands::scale::Args),
    /// Show an app and its instances, with each one's CPU, memory and disk.
    #[command(after_help = commands::status::EXAMPLES)]
    Status(commands::status::Args),
    /// Open a shell or run a command in an instance, or forward local
    /// ports to it, through the cluster's SSH proxy.
    #[command(after_help = commands::ssh::EXAMPLES)]
    Ssh(commands::ssh::Args),
    /// List apps and tasks.
    #[command(after_help = commands::list::EXAMPLES)]
    List(commands::list::Args),
    /// Remove apps (their instances are stopped).
    #[command(visible_alias = "rm", after_help = commands::remove::EXAMPLES)]
    Remove(commands::remove::Args),
    /// Change an app's instances or routes.
    #[command(after_help = commands::update::EXAMPLES)]
    Update(commands::update::Args),
    /// Set an app's HTTP routes (Lattice's older form: PORT:HOST,...).
    #[command(after_help = commands::update_routes::EXAMPLES)]
    UpdateRoutes(commands::update_routes::Args),
    /// Create an app from a JSON file (a DesiredLrpCreateRequest).
    #[command(after_help = commands::submit_lrp::EXAMPLES)]
    SubmitLrp(commands::submit_lrp::Args),
    /// Show the cells, the instances on each, and their memory used against allocated.
    #[command(after_help = commands::visualize::EXAMPLES)]
    Visualize(commands::visualize::Args),
    /// Show an app's log lines, recent then live until Ctrl-C.
    #[command(after_help = commands::logs::EXAMPLES)]
    Logs(commands::logs::Args),
    /// Show the cluster's own logs (receptor, brain, cells) until Ctrl-C.
    #[command(after_help = commands::debug_logs::EXAMPLES)]
    DebugLogs(commands::debug_logs::Args),
    /// Test the cluster: create, route to, scale, log and remove a sample app.
    #[command(after_help = commands::test::EXAMPLES)]
    Test(commands::test::Args),
    /// Stage an app's source with a buildpack into a droplet.
    #[command(after_help = commands::build_droplet::EXAMPLES)]
    BuildDroplet(commands::build_droplet::Args),
    /// Run a droplet as an app and wait until it runs.
    #[command(after_help = commands::launch_droplet::EXAMPLES)]
    LaunchDroplet(commands::launch_droplet::Args),
    /// List the droplets.
    #[command(after_help = commands::list_droplets::EXAMPLES)]
    ListDroplets(commands::list_droplets::Args),
    /// Remove droplets.
    #[command(after_help = commands::remove_droplet::EXAMPLES)]
    RemoveDroplet(commands::remove_droplet::Args),
    /// Download a droplet's tarball to a file.
    #[command(after_help = commands::export_droplet::EXAMPLES)]
    ExportDroplet(commands::export_droplet::Args),
    /// Upload a droplet's tarball under a name.
    #[command(after_help = commands::import_droplet::EXAMPLES)]
    ImportDroplet(commands::import_droplet::Args),
    /// Show or set the receptor ltc talks to.
    #[command(after_help = commands::target::EXAMPLES)]
    Target(commands::target::Args),
    /// Show the versions of ltc and of the cluster.
    #[command(after_help = commands::version::EXAMPLES)]
    Version(commands::version::Args),
    /// Replace this ltc with the cluster's copy (same build as the cluster).
    #[command(after_help = commands::sync::EXAMPLES)]
    Sync(commands::sync::Args),
    /// Submit a task described by a JSON file (a TaskCreateRequest).
    #[command(after_help = commands::submit_task::EXAMPLES)]
    SubmitTask(commands::submit_task::Args),
    /// List tasks.
    #[command(after_help = commands::list_tasks::EXAMPLES)]
    ListTasks(commands::list_tasks::Args),
    /// Show one task, with its result or failure reason.
    #[command(after_help = commands::task::EXAMPLES)]
    Task(commands::task::Args),
    /// Cancel a task that has not completed yet.
    #[command(after_help = commands::cancel_task::EXAMPLES)]
    CancelTask(commands::cancel_task::Args),
    /// Delete a completed task (after its result was read).
    #[command(after_help = commands::delete_task::EXAMPLES)]
    DeleteTask(commands::delete_task::Args),
    /// List the cells of the cluster, whether they drain, their capacity and
    /// what their containers use, or drain one.
    #[command(after_help = commands::cells::EXAMPLES)]
    Cells(commands::cells::Args),
    /// Print a shell completion script (bash, zsh, fish, ...).
    #[command(alias = "completions", after_help = commands::completion::EXAMPLES)]
    Completion(commands::completion::Args),
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;
    use crate::{EXIT_FAILURE, EXIT_PLACEMENT, EXIT_USAGE};

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn usage_errors_are_clap_errors() {
        let err = Cli::try_parse_from(["ltc", "task"]).unwrap_err();
        assert_eq!(err.exit_code(), i32::from(crate::EXIT_USAGE));
    }

    /// The words of a command line as a shell would split them (quotes
    /// and backslashes), up to its first operator (`|`, `<`, `>`, `)`,
    /// `;`, `&`), where what ltc sees ends.
    fn shell_words(line: &str) -> Vec<String> {
        let mut words = Vec::new();
        let mut word: Option<String> = None;
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            match c {
                '\'' => {
                    let quoted: String = chars.by_ref().take_while(|&c| c != '\'').collect();
                    word.get_or_insert_with(String::new).push_str(&quoted);
                }
                '"' => {
                    let word = word.get_or_insert_with(String::new);
                    while let Some(c) = chars.next() {
                        match c {
                            '"' => break,
                            '\\' => word.extend(chars.next()),
                            c => word.push(c),
                        }
                    }
                }
                '\\' => word.get_or_insert_with(String::new).extend(chars.next()),
                '|' | '<' | '>' | ')' | ';' | '&' => break,
                c if c.is_whitespace() => words.extend(word.take()),
                c => word.get_or_insert_with(String::new).push(c),
            }
        }
        words.extend(word);
        words
    }

    /// The `ltc` command lines of an `Examples:` text: every line but the
    /// comments, from its word `ltc` on (`source <(ltc completion bash)`).
    fn example_command_lines(text: &str) -> Vec<Vec<String>> {
        text.lines()
            .skip(1)
            .map(str::trim)
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let start = line
                    .match_indices("ltc ")
                    .map(|(at, _)| at)
                    .find(|&at| at == 0 || line[..at].ends_with([' ', '(']))?;
                Some(shell_words(&line[start..]))
            })
            .collect()
    }

    #[test]
    fn shell_words_are_split_as_a_shell_does() {
        assert_eq!(
            shell_words(r#"ltc create a b -- /bin/sh -c 'echo "$X"; x' "a \"b\"" c\ d | jq"#),
            [
                "ltc",
                "create",
                "a",
                "b",
                "--",
                "/bin/sh",
                "-c",
                "echo \"$X\"; x",
                "a \"b\"",
                "c d"
            ]
        );
        assert_eq!(
            example_command_lines("Examples:\n  # ltc no\n  source <(ltc completion bash)\n"),
            [["ltc", "completion", "bash"]]
        );
    }

    /// Every command's `--help` ends with examples of that command, each
    /// of which ltc accepts, short enough not to be wrapped (clap wraps at
    /// `max_term_width`, 100), so that they can be copied as they are.
    #[test]
    fn every_command_has_examples_that_parse() {
        let cli = Cli::command();
        let mut checked = 0;
        for command in cli.get_subcommands() {
            let name = command.get_name();
            let examples = command
                .get_after_help()
                .map(|text| text.to_string())
                .unwrap_or_default();
            assert!(
                examples.starts_with("Examples:\n"),
                "`ltc {name} --help` has no examples: {examples:?}"
            );
            let lines = example_command_lines(&examples);
            assert!(!lines.is_empty(), "no `ltc {name}` line in {examples:?}");
            for words in &lines {
                let matches = Cli::command()
                    .try_get_matches_from(words)
                    .unwrap_or_else(|err| panic!("the example {words:?} is refused:\n{err}"));
                assert_eq!(
                    matches.subcommand_name(),
                    Some(name),
                    "an example of another command under {name}: {words:?}"
                );
            }
            for line in examples.lines() {
                assert!(line.chars().count() <= 96, "wrapped in --help: {line:?}");
            }
            checked += 1;
        }
        assert!(checked >= 20, "only {checked} commands were found");
    }

    #[test]
    fn the_top_level_help_has_examples_and_the_exit_codes() {
        let help = Cli::command().render_long_help().to_string();
        let examples = &help[help.find("\nExamples:\n").expect("examples") + 1..];
        let lines = example_command_lines(examples);
        assert!(lines.len() >= 3, "{help}");
        for words in &lines {
            // `ltc help create` is accepted by printing that help.
            if let Err(err) = Cli::command().try_get_matches_from(words) {
                assert_eq!(
                    err.kind(),
                    clap::error::ErrorKind::DisplayHelp,
                    "{words:?}: {err}"
                );
            }
        }
        for code in [
            "0  success".to_string(),
            format!("{EXIT_FAILURE}  failure"),
            format!("{EXIT_USAGE}  usage error"),
            format!("{EXIT_PLACEMENT}  placement failed"),
        ] {
            assert!(
                help.contains(&format!("\n  {code}")),
                "no {code:?} in:\n{help}"
            );
        }
    }

    const REFERENCE_BEGIN: &str = "<!-- BEGIN command reference: generated from the clap \
        definitions; `LTC_UPDATE_DOCS=1 cargo test -p ltc docs_` rewrites it -->\n";
    const REFERENCE_END: &str = "<!-- END command reference -->";

    /// The command reference of docs/cli.md: each command's usage line
    /// and summary, as `ltc --help` has them.
    fn command_reference() -> String {
        let mut cli = Cli::command();
        // Built, the subcommands know their full name (`ltc create`).
        cli.build();
        let mut text = String::from("| usage | what it does |\n|---|---|\n");
        for command in cli.get_subcommands_mut() {
            if command.get_name() == "help" {
                continue;
            }
            let usage = command.render_usage().to_string();
            let usage = usage.trim_start_matches("Usage: ").trim();
            let about = command
                .get_about()
                .map(|about| about.to_string())
                .unwrap_or_default();
            let aliases: Vec<String> = command
                .get_visible_aliases()
                .map(|alias| format!("`ltc {alias}`"))
                .collect();
            let aliases = if aliases.is_empty() {
                String::new()
            } else {
                format!(" Also {}.", aliases.join(", "))
            };
            // A `|` would end the table's cell, even in a code span.
            let usage = usage.replace('|', "\\|");
            text.push_str(&format!("| `{usage}` | {about}.{aliases} |\n"));
        }
        text
    }

    /// docs/cli.md cannot drift from the commands: its reference section
    /// must be what the clap definitions say. With `LTC_UPDATE_DOCS` set,
    /// the section is rewritten first (then commit the file).
    #[test]
    fn docs_cli_md_lists_every_command() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/cli.md");
        let doc = std::fs::read_to_string(path).expect("docs/cli.md is readable");
        let begin = doc
            .find(REFERENCE_BEGIN)
            .expect("docs/cli.md has the begin marker")
            + REFERENCE_BEGIN.len();
        let end = doc
            .find(REFERENCE_END)
            .expect("docs/cli.md has the end marker");
        let expected = command_reference();
        if std::env::var_os("LTC_UPDATE_DOCS").is_some() && doc[begin..end] != expected {
            let updated = format!("{}{expected}{}", &doc[..begin], &doc[end..]);
            std::fs::write(path, updated).expect("docs/cli.md is writable");
        }
        let doc = std::fs::read_to_string(path).expect("docs/cli.md is readable");
        let section = doc
            .split_once(REFERENCE_BEGIN)
            .and_then(|(_, rest)| rest.split_once(REFERENCE_END))
            .map(|(section, _)| section);
        assert_eq!(
            section,
            Some(expected.as_str()),
            "docs/cli.md's command reference is out of date; \
             rewrite it with `LTC_UPDATE_DOCS=1 cargo test -p ltc docs_`"
        );
    }
}
