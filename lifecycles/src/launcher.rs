//! The launcher: starts an app the way `docker run` would have.
//!
//! `launcher [-- CMD ARGS...]` replaces itself (exec) with the given command,
//! or, when none is given, with the image's entrypoint followed by its cmd,
//! read from [`IMAGE_CONFIG_PATH`]. Garden's containers run
//! `lattice-init pause` instead of the image's program, and Docker's exec
//! applies neither the image's working directory nor its entrypoint; the
//! launcher puts them back.
//!
//! # Guarantees
//! - Working directory: the image's `WORKDIR` (created when missing, as
//!   Docker does), else `/`.
//! - Environment: the image's `ENV` first, then the launcher's own
//!   environment, which wins: it carries what the cell sets (`PORT`,
//!   `INSTANCE_INDEX`, ...).
//! - A program named without `/` is looked up in `PATH` (of that merged
//!   environment) like a shell does, and gets its name as typed as `argv[0]`.
//! - The launcher does not change user: the cell starts it as the right one.
//!
//! # Exit codes
//! Only when the command cannot be started (after exec, the code is the
//! program's): 127 when the program is not found or the working directory
//! cannot be entered, 126 when it is found but cannot be executed, 1 when
//! the image config is unreadable or holds no start command, 2 on bad usage.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use lattice_models::lifecycle::{ImageConfig, IMAGE_CONFIG_PATH};

use crate::args::{UsageError, EXIT_FAILURE, EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND};
use crate::image_config::{self, ConfigError};

pub const USAGE: &str = "usage: launcher [-- COMMAND [ARGS...]]";

/// `PATH` when the environment sets none; the value Docker gives a
/// container.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LauncherArgs {
    Help,
    /// Run this command, or the image's when `None`.
    Run(Option<Vec<OsString>>),
}

impl LauncherArgs {
    /// `launcher`, `launcher --` (both: the image's command), or
    /// `launcher -- CMD ARGS...`.
    ///
    /// # Errors
    /// Anything before `--` other than a lone `-h`/`--help`.
    pub fn parse(args: Vec<OsString>) -> Result<LauncherArgs, UsageError> {
        let mut args = args.into_iter();
        let Some(first) = args.next() else {
            return Ok(LauncherArgs::Run(None));
        };
        let rest: Vec<OsString> = args.collect();
        match first.to_str() {
            Some("--") if rest.is_empty() => Ok(LauncherArgs::Run(None)),
            Some("--") => Ok(LauncherArgs::Run(Some(rest))),
            Some("-h" | "--help") if rest.is_empty() => Ok(LauncherArgs::Help),
            _ => Err(UsageError(format!(
                "unexpected argument {:?}: put the command after --",
                first.to_string_lossy()
            ))),
        }
    }
}

/// Why the command could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No command was given and the image sets neither entrypoint nor cmd.
    #[error("no command given and the image has no start command (ENTRYPOINT or CMD)")]
    NoStartCommand,
    #[error("change to working directory {}: {source}", dir.display())]
    Dir { dir: PathBuf, source: io::Error },
    /// Not in `PATH` (or, for a name with `/`, not an executable file).
    #[error("{program}: command not found")]
    NotFound { program: String },
    #[error("exec {}: {source}", program.display())]
    Exec { program: PathBuf, source: io::Error },
}

impl LaunchError {
    /// The exit code the launcher ends with, a shell's where one applies.
    pub fn exit_code(&self) -> u8 {
        match self {
            LaunchError::Config(_) | LaunchError::NoStartCommand => EXIT_FAILURE,
            LaunchError::Dir { .. } | LaunchError::NotFound { .. } => EXIT_NOT_FOUND,
            LaunchError::Exec { source, .. }
                if source.kind() == io::ErrorKind::PermissionDenied =>
            {
                EXIT_NOT_EXECUTABLE
            }
            LaunchError::Exec { .. } => EXIT_NOT_FOUND,
        }
    }
}

/// The process to become, before the program is looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// As given or configured; looked up in `PATH` when it holds no `/`.
    pub program: OsString,
    pub args: Vec<OsString>,
    /// The whole environment of the program.
    pub env: Vec<(OsString, OsString)>,
    pub dir: PathBuf,
}

/// Works out what to run: `command` or the image's start command, in the
/// image's working directory, with the image's environment under `own_env`.
///
/// # Errors
/// [`LaunchError::NoStartCommand`] when neither names a program.
pub fn plan(
    command: Option<Vec<OsString>>,
    config: &ImageConfig,
    own_env: impl IntoIterator<Item = (OsString, OsString)>,
) -> Result<Launch, LaunchError> {
    let command = command.unwrap_or_else(|| {
        config
            .start_command()
            .into_iter()
            .map(OsString::from)
            .collect()
    });
    let mut command = command.into_iter();
    let program = command.next().ok_or(LaunchError::NoStartCommand)?;
    let dir = if config.working_dir.is_empty() {
        PathBuf::from("/")
    } else {
        PathBuf::from(&config.working_dir)
    };
    let image_env = config
        .env_pairs()
        .into_iter()
        .map(|(name, value)| (OsString::from(name), OsString::from(value)));
    Ok(Launch {
        program,
        args: command.collect(),
        env: merge_env(image_env, own_env),
        dir,
    })
}

/// `base` overridden and extended by `overrides`, keeping first-seen order.
pub fn merge_env(
    base: impl IntoIterator<Item = (OsString, OsString)>,
    overrides: impl IntoIterator<Item = (OsString, OsString)>,
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = Vec::new();
    for (name, value) in base.into_iter().chain(overrides) {
        match env.iter_mut().find(|(existing, _)| *existing == name) {
            Some(entry) => entry.1 = value,
            None => env.push((name, value)),
        }
    }
    env
}

/// Finds `program` as a shell does: a name holding `/` is taken as a path
/// (relative to the current directory); any other is searched in the
/// directories of `path_var` (an empty entry is the current directory), or
/// of [`DEFAULT_PATH`] when it is unset. Only executable regular files (or
/// links to them) count.
pub fn resolve(program: &OsStr, path_var: Option<&OsStr>) -> Option<PathBuf> {
    if program.is_empty() {
        return None;
    }
    if program.as_bytes().contains(&b'/') {
        let path = PathBuf::from(program);
        return is_executable(&path).then_some(path);
    }
    let path_var = path_var.unwrap_or(OsStr::new(DEFAULT_PATH));
    std::env::split_paths(path_var)
        .map(|dir| {
            if dir.as_os_str().is_empty() {
                PathBuf::from(".").join(program)
            } else {
                dir.join(program)
            }
        })
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Enters `dir`, creating it first when it is missing (Docker creates a
/// missing `WORKDIR` too).
fn enter_dir(dir: &Path) -> io::Result<()> {
    match std::env::set_current_dir(dir) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)?;
            std::env::set_current_dir(dir)
        }
        other => other,
    }
}

/// Replaces this process with `command` (or the image's start command) as
/// described in the module docs. Returns only when that fails.
pub fn launch(command: Option<Vec<OsString>>) -> LaunchError {
    let config = match image_config::read(Path::new(IMAGE_CONFIG_PATH)) {
        Ok(config) => config,
        Err(err) => return err.into(),
    };
    match plan(command, &config, std::env::vars_os()) {
        Ok(launch) => exec(launch),
        Err(err) => err,
    }
}

/// Enters the launch's directory, finds its program in its `PATH`, and
/// replaces this process with it. Returns only when that fails.
pub(crate) fn exec(launch: Launch) -> LaunchError {
    if let Err(source) = enter_dir(&launch.dir) {
        return LaunchError::Dir {
            dir: launch.dir,
            source,
        };
    }
    let path_var = launch
        .env
        .iter()
        .find(|(name, _)| name == "PATH")
        .map(|(_, value)| value.as_os_str());
    let Some(resolved) = resolve(&launch.program, path_var) else {
        return LaunchError::NotFound {
            program: launch.program.to_string_lossy().into_owned(),
        };
    };
    // Command::exec resets the signal mask and SIGPIPE (which the Rust
    // runtime ignores) before execve, so the app starts as under a shell.
    let source = Command::new(&resolved)
        .arg0(&launch.program)
        .args(&launch.args)
        .env_clear()
        .envs(launch.env)
        .exec();
    LaunchError::Exec {
        program: resolved,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::os;

    fn pairs(list: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        list.iter()
            .map(|(n, v)| (OsString::from(n), OsString::from(v)))
            .collect()
    }

    #[test]
    fn parses_arguments() {
        assert_eq!(LauncherArgs::parse(os(&[])), Ok(LauncherArgs::Run(None)));
        assert_eq!(
            LauncherArgs::parse(os(&["--"])),
            Ok(LauncherArgs::Run(None))
        );
        assert_eq!(
            LauncherArgs::parse(os(&["--", "sh", "-c", "--", "x"])),
            Ok(LauncherArgs::Run(Some(os(&["sh", "-c", "--", "x"]))))
        );
        assert_eq!(LauncherArgs::parse(os(&["--help"])), Ok(LauncherArgs::Help));
        assert!(LauncherArgs::parse(os(&["sh"])).is_err());
        assert!(LauncherArgs::parse(os(&["--help", "x"])).is_err());
    }

    fn image() -> ImageConfig {
        ImageConfig {
            entrypoint: vec!["httpd".into()],
            cmd: vec!["-f".into(), "-p".into(), "8080".into()],
            env: vec!["PATH=/bin".into(), "GREETING=hello".into(), "PORT=1".into()],
            working_dir: "/www".into(),
            ..Default::default()
        }
    }

    #[test]
    fn plans_the_image_command_with_its_env_and_dir() {
        let launch = plan(
            None,
            &image(),
            pairs(&[("PORT", "8080"), ("HOME", "/root")]),
        )
        .expect("the image has a start command");
        assert_eq!(
            launch,
            Launch {
                program: "httpd".into(),
                args: os(&["-f", "-p", "8080"]),
                env: pairs(&[
                    ("PATH", "/bin"),
                    ("GREETING", "hello"),
                    ("PORT", "8080"),
                    ("HOME", "/root")
                ]),
                dir: "/www".into(),
            }
        );
    }

    #[test]
    fn a_given_command_replaces_the_image_command() {
        let command = os(&["sh", "-c", "echo $PORT"]);
        let launch = plan(Some(command), &image(), pairs(&[])).expect("a command is given");
        assert_eq!(launch.program, "sh");
        assert_eq!(launch.args, os(&["-c", "echo $PORT"]));
        assert_eq!(launch.dir, PathBuf::from("/www"), "still the image's dir");

        let bare = ImageConfig::default();
        let launch = plan(Some(os(&["true"])), &bare, pairs(&[])).expect("a command is given");
        assert_eq!(launch.dir, PathBuf::from("/"), "no WORKDIR means /");
        assert!(matches!(
            plan(None, &bare, pairs(&[])),
            Err(LaunchError::NoStartCommand)
        ));
        assert!(matches!(
            plan(Some(vec![]), &image(), pairs(&[])),
            Err(LaunchError::NoStartCommand)
        ));
    }

    #[test]
    fn own_environment_wins_and_order_is_kept() {
        let merged = merge_env(
            pairs(&[("A", "1"), ("B", "2")]),
            pairs(&[("C", "3"), ("A", "x")]),
        );
        assert_eq!(merged, pairs(&[("A", "x"), ("B", "2"), ("C", "3")]));
    }

    #[test]
    fn resolves_programs_like_a_shell() {
        let dir = tempfile::tempdir().expect("temp dir is writable");
        let (first, second) = (dir.path().join("first"), dir.path().join("second"));
        for sub in [&first, &second] {
            std::fs::create_dir(sub).expect("writable");
        }
        let write = |path: &Path, mode: u32| {
            std::fs::write(path, "#!/bin/sh\n").expect("writable");
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .expect("own file");
        };
        write(&first.join("app"), 0o644);
        write(&second.join("app"), 0o755);
        std::fs::create_dir(first.join("tool")).expect("writable");
        write(&second.join("tool"), 0o755);
        let path_var = std::env::join_paths([&first, &second]).expect("no colons in temp paths");

        assert_eq!(
            resolve(OsStr::new("app"), Some(&path_var)),
            Some(second.join("app")),
            "a file without the executable bit is skipped"
        );
        assert_eq!(
            resolve(OsStr::new("tool"), Some(&path_var)),
            Some(second.join("tool")),
            "a directory is skipped"
        );
        assert_eq!(resolve(OsStr::new("missing"), Some(&path_var)), None);
        let absolute = second.join("app");
        assert_eq!(
            resolve(absolute.as_os_str(), Some(OsStr::new(""))),
            Some(absolute.clone()),
            "a path is not searched"
        );
        assert_eq!(resolve(first.join("app").as_os_str(), None), None);
        assert_eq!(resolve(OsStr::new(""), Some(&path_var)), None);
        let sh = resolve(OsStr::new("sh"), None);
        assert!(
            sh.as_ref()
                .is_some_and(|p| p.is_absolute() && p.ends_with("sh")),
            "the default PATH is searched: {sh:?}"
        );
    }

    #[test]
    fn exit_codes_follow_the_shell() {
        let not_found = LaunchError::NotFound {
            program: "x".into(),
        };
        assert_eq!(not_found.exit_code(), 127);
        assert_eq!(not_found.to_string(), "x: command not found");
        let denied = LaunchError::Exec {
            program: "/x".into(),
            source: io::Error::from(io::ErrorKind::PermissionDenied),
        };
        assert_eq!(denied.exit_code(), 126);
        assert_eq!(LaunchError::NoStartCommand.exit_code(), 1);
    }
}
