//! The buildpack app lifecycle's launcher: runs a droplet unpacked in a
//! container of the stack image, as Cloud Foundry's launcher does.
//!
//! `droplet-launcher [--droplet-dir DIR] [-- CMD ARGS...]` (DIR defaults to
//! [`DROPLET_DIR`]) reads `DIR/staging_info.yml` and replaces itself (exec)
//! with the given command, or else with the droplet's start command.
//!
//! # Guarantees
//! - Working directory: `DIR/app`.
//! - Environment: the droplet's (the buildpack's `config_vars`), then the
//!   launcher's own, which wins (the cell sets `PORT`, `INSTANCE_INDEX`,
//!   ...), then `HOME=DIR/app` and `DEPS_DIR=DIR/deps`, which always win:
//!   the engine sets `HOME` from the user's passwd entry, and buildpacks
//!   expect the app's directory there.
//! - `VCAP_APPLICATION` (a JSON object the app's env carries, see `ltc
//!   launch-droplet`) gets this instance's `instance_index`, `instance_id`,
//!   `port` and `host`, as Cloud Foundry's launcher adds them: the LRP's env
//!   is the same for every instance, the cell's `INSTANCE_INDEX`,
//!   `INSTANCE_GUID` and `PORT` are not.
//! - Profile scripts: `DIR/deps/*/profile.d/*.sh`, then
//!   `DIR/app/.profile.d/*.sh`, then `DIR/app/.profile`, each group in name
//!   order, are sourced by `/bin/sh` before the command runs: buildpacks
//!   put their tools on `PATH` that way.
//! - No command given: the start command (a shell command line) runs with
//!   `/bin/sh -c`. A command given runs with exactly its arguments: it is
//!   executed directly (looked up in `PATH`) when there is no profile
//!   script, else by `/bin/sh` with `exec "$@"` after the sourcing.
//!
//! # Exit codes
//! Only when the command cannot be started (after exec, the code is the
//! program's): 1 when `staging_info.yml` is missing or unreadable, or when
//! no command is given and the droplet has no start command; 127 when the
//! program is not found or `DIR/app` cannot be entered; 126 when it cannot
//! be executed; 2 on bad usage.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

use lattice_models::lifecycle::{StagingInfo, DROPLET_DIR, STAGING_INFO_FILE};

use crate::args::{flags, UsageError, EXIT_FAILURE};
use crate::builder::shell_quote;
use crate::launcher::{self, merge_env, Launch, LaunchError};

pub const USAGE: &str = "usage: droplet-launcher [--droplet-dir DIR] [-- COMMAND [ARGS...]]";

/// The shell that runs start commands and sources profile scripts; the
/// stack image has it.
pub const SHELL: &str = "/bin/sh";

/// What the command line asks for; `None` from [`DropletLauncherArgs::parse`]
/// means help was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropletLauncherArgs {
    /// Where the droplet is unpacked.
    pub droplet_dir: PathBuf,
    /// Run this instead of the droplet's start command.
    pub command: Option<Vec<OsString>>,
}

impl DropletLauncherArgs {
    /// Flags before `--`, the command after it (`--` alone: the start
    /// command).
    ///
    /// # Errors
    /// An unknown flag, an empty `--droplet-dir`, or a stray argument
    /// before `--`.
    pub fn parse(args: Vec<OsString>) -> Result<Option<DropletLauncherArgs>, UsageError> {
        let split = args.iter().position(|arg| arg == "--");
        let (flag_args, command) = match split {
            Some(at) => {
                let mut flag_args = args;
                let command = flag_args.split_off(at + 1);
                flag_args.pop();
                (flag_args, (!command.is_empty()).then_some(command))
            }
            None => (args, None),
        };
        let mut droplet_dir = PathBuf::from(DROPLET_DIR);
        for flag in flags(flag_args)? {
            match flag.name.as_str() {
                "--help" => return Ok(None),
                "--droplet-dir" if !flag.value.is_empty() => {
                    droplet_dir = PathBuf::from(flag.value);
                }
                "--droplet-dir" => {
                    return Err(UsageError("--droplet-dir needs a path".to_string()))
                }
                other => return Err(UsageError(format!("unknown flag {other}"))),
            }
        }
        Ok(Some(DropletLauncherArgs {
            droplet_dir,
            command,
        }))
    }
}

/// Why the droplet could not be started.
#[derive(Debug, thiserror::Error)]
pub enum DropletError {
    /// No droplet is unpacked there.
    #[error("no droplet in {}: {} is missing", dir.display(), path.display())]
    NoStagingInfo { dir: PathBuf, path: PathBuf },
    #[error("read {}: {source}", path.display())]
    ReadStagingInfo { path: PathBuf, source: io::Error },
    /// Not the JSON `buildpack-builder` writes.
    #[error("{} is not a staging info document: {source}", path.display())]
    BadStagingInfo {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// No command was given and the buildpack named none.
    #[error("no command given and the droplet has no start command")]
    NoStartCommand,
    #[error(transparent)]
    Launch(#[from] LaunchError),
}

impl DropletError {
    /// The exit code the launcher ends with (see the module docs).
    pub fn exit_code(&self) -> u8 {
        match self {
            DropletError::Launch(err) => err.exit_code(),
            _ => EXIT_FAILURE,
        }
    }
}

/// Reads `droplet_dir/staging_info.yml`.
///
/// # Errors
/// Missing, unreadable, or not a [`StagingInfo`] in JSON.
pub fn read_staging_info(droplet_dir: &Path) -> Result<StagingInfo, DropletError> {
    let path = droplet_dir.join(STAGING_INFO_FILE);
    let data = match std::fs::read(&path) {
        Ok(data) => data,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            return Err(DropletError::NoStagingInfo {
                dir: droplet_dir.to_path_buf(),
                path,
            })
        }
        Err(source) => return Err(DropletError::ReadStagingInfo { path, source }),
    };
    serde_json::from_slice(&data).map_err(|source| DropletError::BadStagingInfo { path, source })
}

/// The profile scripts to source, in order (see the module docs).
pub fn profile_scripts(droplet_dir: &Path) -> Vec<PathBuf> {
    let mut scripts = Vec::new();
    for deps in sorted_entries(&droplet_dir.join("deps")) {
        scripts.extend(sorted_sh_files(&deps.join("profile.d")));
    }
    let app = droplet_dir.join("app");
    scripts.extend(sorted_sh_files(&app.join(".profile.d")));
    let profile = app.join(".profile");
    if profile.is_file() {
        scripts.push(profile);
    }
    scripts
}

/// The entries of `dir` in name order; none when it cannot be read.
fn sorted_entries(dir: &Path) -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    entries.sort();
    entries
}

fn sorted_sh_files(dir: &Path) -> Vec<PathBuf> {
    sorted_entries(dir)
        .into_iter()
        .filter(|path| path.extension().is_some_and(|ext| ext == "sh") && path.is_file())
        .collect()
}

/// Works out what to run (see the module docs): `command` or the droplet's
/// start command, in `droplet_dir/app`, sourcing `profile` first.
///
/// # Errors
/// [`DropletError::NoStartCommand`] when neither names anything to run.
pub fn plan(
    command: Option<Vec<OsString>>,
    info: &StagingInfo,
    droplet_dir: &Path,
    profile: &[PathBuf],
    own_env: impl IntoIterator<Item = (OsString, OsString)>,
) -> Result<Launch, DropletError> {
    let sourcing: String = profile
        .iter()
        .map(|script| format!(". {}\n", shell_quote(&script.to_string_lossy())))
        .collect();
    let (program, args) = match command {
        Some(command) if command.is_empty() => return Err(DropletError::NoStartCommand),
        Some(mut command) if profile.is_empty() => {
            let program = command.remove(0);
            (program, command)
        }
        Some(command) => {
            // `$0` names the script in error messages; "$@" is the command,
            // passed as arguments so that nothing in it is re-parsed.
            let mut args = vec![
                OsString::from("-c"),
                OsString::from(format!("{sourcing}exec \"$@\"")),
                OsString::from("droplet-launcher"),
            ];
            args.extend(command);
            (OsString::from(SHELL), args)
        }
        None if info.start_command.trim().is_empty() => return Err(DropletError::NoStartCommand),
        None => (
            OsString::from(SHELL),
            vec![
                OsString::from("-c"),
                OsString::from(format!("{sourcing}{}", info.start_command)),
            ],
        ),
    };
    let app_dir = droplet_dir.join("app");
    let droplet_env = info
        .env
        .iter()
        .map(|var| (OsString::from(&var.name), OsString::from(&var.value)));
    let fixed = [
        (OsString::from("HOME"), app_dir.clone().into_os_string()),
        (
            OsString::from("DEPS_DIR"),
            droplet_dir.join("deps").into_os_string(),
        ),
    ];
    let mut env = merge_env(merge_env(droplet_env, own_env), fixed);
    with_instance_vcap_application(&mut env);
    Ok(Launch {
        program,
        args,
        env,
        dir: app_dir,
    })
}

/// Adds this instance's fields to `VCAP_APPLICATION` (see the module docs).
/// A value that is not a JSON object is left as it is: it is the app's.
pub fn with_instance_vcap_application(env: &mut [(OsString, OsString)]) {
    let lookup = |name: &str| {
        env.iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.to_str())
            .map(str::to_string)
    };
    let Some(vcap) = lookup("VCAP_APPLICATION") else {
        return;
    };
    let Ok(serde_json::Value::Object(mut fields)) = serde_json::from_str(&vcap) else {
        return;
    };
    let number = |name: &str| {
        lookup(name)
            .and_then(|v| v.parse::<u64>().ok())
            .map(serde_json::Value::from)
    };
    if let Some(index) = number("INSTANCE_INDEX") {
        fields.insert("instance_index".to_string(), index);
    }
    if let Some(guid) = lookup("INSTANCE_GUID") {
        fields.insert("instance_id".to_string(), guid.into());
    }
    if let Some(port) = number("PORT") {
        fields.insert("port".to_string(), port);
    }
    fields.insert("host".to_string(), "0.0.0.0".into());
    let value = serde_json::Value::Object(fields).to_string();
    if let Some(entry) = env.iter_mut().find(|(n, _)| n == "VCAP_APPLICATION") {
        entry.1 = OsString::from(value);
    }
}

/// Replaces this process with the droplet's (or the given) command, as the
/// module docs describe. Returns only when that fails.
pub fn launch(args: DropletLauncherArgs) -> DropletError {
    let info = match read_staging_info(&args.droplet_dir) {
        Ok(info) => info,
        Err(err) => return err,
    };
    let profile = profile_scripts(&args.droplet_dir);
    match plan(
        args.command,
        &info,
        &args.droplet_dir,
        &profile,
        std::env::vars_os(),
    ) {
        Ok(launch) => launcher::exec(launch).into(),
        Err(err) => err,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::os;
    use lattice_models::EnvironmentVariable;

    fn pairs(list: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        list.iter()
            .map(|(n, v)| (OsString::from(n), OsString::from(v)))
            .collect()
    }

    #[test]
    fn vcap_application_gets_the_instance_fields() {
        let mut env = pairs(&[
            (
                "VCAP_APPLICATION",
                r#"{"application_name":"web","limits":{"mem":128}}"#,
            ),
            ("INSTANCE_INDEX", "2"),
            ("INSTANCE_GUID", "abc"),
            ("PORT", "8080"),
        ]);
        with_instance_vcap_application(&mut env);
        let vcap: serde_json::Value =
            serde_json::from_str(env[0].1.to_str().expect("utf-8")).expect("json");
        assert_eq!(
            vcap,
            serde_json::json!({"application_name": "web", "limits": {"mem": 128},
                "instance_index": 2, "instance_id": "abc", "port": 8080, "host": "0.0.0.0"})
        );
        let mut other = pairs(&[("VCAP_APPLICATION", "not json"), ("INSTANCE_INDEX", "1")]);
        with_instance_vcap_application(&mut other);
        assert_eq!(other[0].1, "not json", "the app's own value is kept");
    }

    #[test]
    fn parses_arguments() {
        let run = |dir: &str, command: Option<&[&str]>| {
            Ok(Some(DropletLauncherArgs {
                droplet_dir: dir.into(),
                command: command.map(os),
            }))
        };
        assert_eq!(DropletLauncherArgs::parse(os(&[])), run(DROPLET_DIR, None));
        assert_eq!(
            DropletLauncherArgs::parse(os(&["--droplet-dir", "/d", "--"])),
            run("/d", None)
        );
        assert_eq!(
            DropletLauncherArgs::parse(os(&["--", "sh", "-c", "--", "--droplet-dir"])),
            run(DROPLET_DIR, Some(&["sh", "-c", "--", "--droplet-dir"]))
        );
        assert_eq!(
            DropletLauncherArgs::parse(os(&["--droplet-dir=/d", "--", "x"])),
            run("/d", Some(&["x"]))
        );
        assert_eq!(DropletLauncherArgs::parse(os(&["--help"])), Ok(None));
        for bad in [
            &["sh"][..],
            &["--droplet-dir"],
            &["--droplet-dir=", "--", "x"],
            &["--bogus", "1"],
            &["x", "--", "y"],
        ] {
            assert!(DropletLauncherArgs::parse(os(bad)).is_err(), "{bad:?}");
        }
    }

    fn info() -> StagingInfo {
        StagingInfo {
            detected_buildpack: "Static-sh".into(),
            start_command: "sh ./start.sh".into(),
            env: vec![
                EnvironmentVariable::new("GREETING", "hello"),
                EnvironmentVariable::new("PORT", "1"),
            ],
        }
    }

    #[test]
    fn plans_the_start_command_with_droplet_and_own_env() {
        let own = pairs(&[("PORT", "8080"), ("HOME", "/root"), ("PATH", "/bin")]);
        let launch = plan(None, &info(), Path::new("/home/lattice"), &[], own).expect("plans");
        assert_eq!(
            launch,
            Launch {
                program: SHELL.into(),
                args: os(&["-c", "sh ./start.sh"]),
                env: pairs(&[
                    ("GREETING", "hello"),
                    ("PORT", "8080"),
                    ("HOME", "/home/lattice/app"),
                    ("PATH", "/bin"),
                    ("DEPS_DIR", "/home/lattice/deps"),
                ]),
                dir: "/home/lattice/app".into(),
            }
        );
    }

    #[test]
    fn sources_profile_scripts_first() {
        let profile = ["/d/deps/0/profile.d/a.sh".into(), "/d/app/.profile".into()];
        let launch = plan(None, &info(), Path::new("/d"), &profile, pairs(&[])).expect("plans");
        assert_eq!(
            launch.args,
            os(&[
                "-c",
                ". /d/deps/0/profile.d/a.sh\n. /d/app/.profile\nsh ./start.sh"
            ])
        );
        let command = os(&["echo", "a b", "$HOME"]);
        let launch = plan(
            Some(command),
            &info(),
            Path::new("/d"),
            &profile[1..],
            pairs(&[]),
        )
        .expect("plans");
        assert_eq!(launch.program, SHELL);
        assert_eq!(
            launch.args,
            os(&[
                "-c",
                ". /d/app/.profile\nexec \"$@\"",
                "droplet-launcher",
                "echo",
                "a b",
                "$HOME"
            ]),
            "the command's arguments are passed, not re-parsed"
        );
    }

    #[test]
    fn a_given_command_runs_directly_without_profile_scripts() {
        let launch = plan(
            Some(os(&["env"])),
            &info(),
            Path::new("/d"),
            &[],
            pairs(&[]),
        )
        .expect("plans");
        assert_eq!((launch.program, launch.args), ("env".into(), vec![]));
        let empty = StagingInfo::default();
        assert!(matches!(
            plan(None, &empty, Path::new("/d"), &[], pairs(&[])),
            Err(DropletError::NoStartCommand)
        ));
        assert_eq!(DropletError::NoStartCommand.exit_code(), 1);
    }

    #[test]
    fn finds_profile_scripts_in_order_and_reads_staging_info() {
        let dir = tempfile::tempdir().expect("temp dir is writable");
        let root = dir.path();
        let missing = read_staging_info(root).expect_err("nothing unpacked");
        assert_eq!(missing.exit_code(), 1);
        assert_eq!(
            missing.to_string(),
            format!(
                "no droplet in {}: {}/staging_info.yml is missing",
                root.display(),
                root.display()
            )
        );
        for path in [
            "deps/1/profile.d/a.sh",
            "deps/0/profile.d/z.sh",
            "deps/0/profile.d/notes.txt",
            "app/.profile.d/b.sh",
            "app/.profile.d/a.sh",
            "app/.profile",
        ] {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().expect("has a parent")).expect("writable");
            std::fs::write(&path, "").expect("writable");
        }
        let found: Vec<String> = profile_scripts(root)
            .iter()
            .map(|p| {
                p.strip_prefix(root)
                    .expect("under root")
                    .display()
                    .to_string()
            })
            .collect();
        assert_eq!(
            found,
            [
                "deps/0/profile.d/z.sh",
                "deps/1/profile.d/a.sh",
                "app/.profile.d/a.sh",
                "app/.profile.d/b.sh",
                "app/.profile"
            ]
        );

        std::fs::write(root.join(STAGING_INFO_FILE), "start_command: x\n").expect("writable");
        let bad = read_staging_info(root).expect_err("yaml, not json");
        assert!(matches!(bad, DropletError::BadStagingInfo { .. }), "{bad}");
        let written = serde_json::to_vec(&info()).expect("plain data");
        std::fs::write(root.join(STAGING_INFO_FILE), written).expect("writable");
        assert_eq!(read_staging_info(root).expect("valid"), info());
    }
}
