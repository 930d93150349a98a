//! `ltc completions SHELL`: a completion script from the same definitions
//! as `--help`, so the two never disagree.

use std::io::Write;

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Cli;

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
    use super::*;

    #[test]
    fn bash_completion_knows_the_commands() {
        let mut out = Vec::new();
        run(&Args { shell: Shell::Bash }, &mut out).unwrap();
        let script = String::from_utf8(out).unwrap();
        assert!(script.contains("submit-task"), "{script}");
        assert!(script.contains("list-tasks"), "{script}");
    }
}
