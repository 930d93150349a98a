//! ltc inside another program (end-to-end tests drive the cluster with it):
//! one command line run against a given target, writing to given outputs,
//! as the binary would run it.

use std::io::Write;

use clap::Parser as _;

use crate::cli::Cli;
use crate::config::{ConfigFile, SavedConfig, Target};
use crate::output::Stderr;
use crate::Context;

/// Runs `args` (starting with the program's name, as `std::env::args`)
/// against `target`, writing what `ltc` prints on stdout to `out` and on
/// stderr (usage errors, log lines shown while waiting, the error and its
/// causes) to `err`; returns the exit code `ltc` would have.
///
/// # Guarantees
/// No config file is read or written, the process environment is not read
/// (`-e NAME` without a value is refused as if NAME were unset), nothing
/// is coloured and no spinner or progress bar is drawn.
pub async fn run_with<I, S>(
    args: I,
    target: &Target,
    out: &mut dyn Write,
    err: impl Write + Send + 'static,
) -> u8
where
    I: IntoIterator<Item = S>,
    S: Into<std::ffi::OsString> + Clone,
{
    let stderr = Stderr::new(err, false, false);
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(usage) => {
            // `--help` and `--version` are "errors" that exit 0, as clap's.
            stderr.line(usage.render().to_string().trim_end());
            return u8::try_from(usage.exit_code()).unwrap_or(crate::EXIT_USAGE);
        }
    };
    let ctx = Context {
        // Never read: `ltc target` would save here, and cannot. `ltc ssh`
        // keeps its known hosts beside it: in LTC_CONFIG_DIR when the
        // embedding program sets it.
        config_file: ConfigFile::in_dir(
            &std::env::var_os(crate::config::ENV_CONFIG_DIR)
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|| "/nonexistent/ltc-embedded".into()),
        ),
        saved: SavedConfig::default(),
        target: target.clone(),
        color: false,
        stderr: stderr.clone(),
    };
    let no_env = |_: &str| None;
    match crate::run_in(cli, &|| Ok(ctx.clone()), &no_env, out).await {
        Ok(()) => 0,
        Err(error) if crate::is_broken_pipe(&error) => 0,
        Err(error) if crate::is_silent(&error) => crate::exit_code(&error),
        Err(error) => {
            stderr.line(&format!("error: {error:#}"));
            crate::exit_code(&error)
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Source;
    use crate::testing::SharedBuffer;

    use super::*;

    fn target(url: &str) -> Target {
        Target {
            url: url.to_string(),
            credentials: None,
            source: Source::Env,
        }
    }

    #[tokio::test]
    async fn usage_errors_help_and_failures_have_the_binarys_codes() {
        let unreachable = target("http://127.0.0.1:9");
        let err = SharedBuffer::default();
        let code = run_with(["ltc", "nope"], &unreachable, &mut Vec::new(), err.clone()).await;
        assert_eq!(code, crate::EXIT_USAGE);
        assert!(
            err.contents().contains("unrecognized subcommand 'nope'"),
            "{}",
            err.contents()
        );

        let err = SharedBuffer::default();
        let code = run_with(
            ["ltc", "--help"],
            &unreachable,
            &mut Vec::new(),
            err.clone(),
        )
        .await;
        assert_eq!(code, 0);
        assert!(err.contents().contains("Usage: ltc"), "{}", err.contents());

        let err = SharedBuffer::default();
        let code = run_with(
            ["ltc", "list-droplets"],
            &unreachable,
            &mut Vec::new(),
            err.clone(),
        )
        .await;
        assert_eq!(code, crate::EXIT_FAILURE);
        assert!(
            err.contents().starts_with("error: cannot list droplets: "),
            "{}",
            err.contents()
        );
    }

    #[tokio::test]
    async fn a_command_runs_against_the_given_target() {
        let receptor = crate::testing::TestReceptor::start().await;
        let mut out = Vec::new();
        let err = SharedBuffer::default();
        let code = run_with(
            ["ltc", "list", "--json"],
            &target(&receptor.url),
            &mut out,
            err.clone(),
        )
        .await;
        assert_eq!(code, 0, "{}", err.contents());
        let listing: serde_json::Value = serde_json::from_slice(&out).expect("JSON");
        assert_eq!(listing["tasks"], serde_json::json!([]));
    }
}
