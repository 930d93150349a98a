//! `ltc completion SHELL` (also `ltc completions`): a completion script from
//! the same definitions as `--help`, so the two never disagree.

use std::io::Write;

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Cli;

pub const EXAMPLES: &str = "\
Examples:
  # bash: complete in this shell, or in every new one
  source <(ltc completion bash)
  ltc completion bash > ~/.local/share/bash-completion/completions/ltc
  # zsh: into a directory of $fpath
  ltc completion zsh > \"${fpath[1]}/_ltc\"
  # fish
  ltc completion fish > ~/.config/fish/completions/ltc.fish";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: Shell,
}

pub fn run(args: &Args, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut command = Cli::command();
    clap_complete::generate(args.shell, &mut command, "ltc", out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::Command;

    #[test]
    fn every_shell_knows_the_commands() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut out = Vec::new();
            run(&Args { shell }, &mut out).unwrap();
            let script = String::from_utf8(out).unwrap();
            for command in ["create", "submit-task", "list-tasks", "test", "completion"] {
                assert!(script.contains(command), "{shell}: no {command}:\n{script}");
            }
        }
    }

    #[test]
    fn completions_is_an_alias() {
        let cli = Cli::try_parse_from(["ltc", "completions", "zsh"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Completion(Args { shell: Shell::Zsh })
        ));
    }
}
