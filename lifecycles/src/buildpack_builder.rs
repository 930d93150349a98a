//! The buildpack app lifecycle's builder: stages an app's bits with a
//! buildpack into a droplet, inside a container of the stack image.
//!
//! `buildpack-builder` runs, in order:
//! 1. **detect**: the buildpacks (one directory each under
//!    `--buildpacks-dir`, named after the buildpack) in name order, each
//!    `bin/detect BUILD_DIR`, until one exits 0; its first line of stdout is
//!    the detected name. `--buildpack NAME` takes that one without
//!    detection; `--skip-detect` takes the first in name order.
//! 2. **compile**: a buildpack with `bin/finalize` runs `bin/supply BUILD_DIR
//!    CACHE_DIR DEPS_DIR 0` (when present) then `bin/finalize BUILD_DIR
//!    CACHE_DIR DEPS_DIR 0`; any other runs `bin/compile BUILD_DIR
//!    CACHE_DIR`. As in Cloud Foundry: a buildpack that has `bin/finalize` is
//!    a "v3" one whose `bin/compile`, when it has one, is a shim running
//!    supply and finalize itself, so running supply and then compile would
//!    supply twice. The app directory is the `BUILD_DIR`, compiled in place.
//! 3. **release**: `bin/release BUILD_DIR` prints YAML with
//!    `default_process_types.web` and optional `config_vars` (see
//!    [`parse_release`]). A `web:` line in the app's `Procfile` wins over the
//!    buildpack's.
//!
//! It then writes the droplet (a gzip tar of `app/`, `deps/` when the
//! buildpack supplied anything, and [`STAGING_INFO_FILE`]) and the
//! [`StagingResult`] JSON. The scripts' stdout and stderr pass through to
//! the builder's (the staging logs); detect's and release's stdout are read.
//!
//! # Exit codes
//! 0 staged; 222 no buildpack detected the app (or none is there, or
//! `--buildpack` names a missing one); 223 supply, compile or finalize
//! failed; 224 release failed or printed unusable YAML; 1 another failure
//! (reading or writing files); 2 bad usage.
//!
//! # Guarantees
//! - On failure the droplet and the metadata are not written (a droplet
//!   left from an earlier run is kept: the paths are the caller's).

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use flate2::write::GzEncoder;
use flate2::Compression;
use lattice_models::lifecycle::{
    StagingInfo, StagingResult, STAGING_APP_DIR, STAGING_BUILDPACKS_DIR, STAGING_CACHE_DIR,
    STAGING_DEPS_DIR, STAGING_DROPLET_PATH, STAGING_INFO_FILE, STAGING_RESULT_PATH,
};
use lattice_models::EnvironmentVariable;

use crate::args::{flags_and_switches, UsageError, EXIT_FAILURE};
use crate::yaml::{self, Value};

pub const USAGE: &str = "usage: buildpack-builder [--app-dir DIR] [--buildpacks-dir DIR]
           [--output-droplet FILE] [--output-metadata FILE]
           [--cache-dir DIR] [--deps-dir DIR] [--buildpack NAME] [--skip-detect]";

/// No buildpack detected the app.
pub const EXIT_DETECT_FAILED: u8 = 222;
/// Supply, compile or finalize failed.
pub const EXIT_COMPILE_FAILED: u8 = 223;
/// Release failed or printed unusable YAML.
pub const EXIT_RELEASE_FAILED: u8 = 224;

/// What the command line asks for; every path has a default (the
/// `STAGING_*` constants of [`lattice_models::lifecycle`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuilderArgs {
    /// The app's bits: the buildpacks' `BUILD_DIR`, compiled in place.
    pub app_dir: PathBuf,
    /// One directory per buildpack, named after it.
    pub buildpacks_dir: PathBuf,
    pub output_droplet: PathBuf,
    /// Where the [`StagingResult`] JSON goes.
    pub output_metadata: PathBuf,
    /// The buildpacks' `CACHE_DIR`.
    pub cache_dir: PathBuf,
    /// The buildpacks' `DEPS_DIR`; the buildpack's own is `DEPS_DIR/0`.
    pub deps_dir: PathBuf,
    /// Use this buildpack, without detection.
    pub buildpack: Option<String>,
    /// Use the first buildpack in name order, without detection.
    pub skip_detect: bool,
}

impl Default for BuilderArgs {
    fn default() -> BuilderArgs {
        BuilderArgs {
            app_dir: STAGING_APP_DIR.into(),
            buildpacks_dir: STAGING_BUILDPACKS_DIR.into(),
            output_droplet: STAGING_DROPLET_PATH.into(),
            output_metadata: STAGING_RESULT_PATH.into(),
            cache_dir: STAGING_CACHE_DIR.into(),
            deps_dir: STAGING_DEPS_DIR.into(),
            buildpack: None,
            skip_detect: false,
        }
    }
}

impl BuilderArgs {
    /// `None` means help was asked for.
    ///
    /// # Errors
    /// An unknown flag, an empty path, or a `--buildpack` that is not a
    /// plain directory name.
    pub fn parse(args: Vec<OsString>) -> Result<Option<BuilderArgs>, UsageError> {
        let mut parsed = BuilderArgs::default();
        for flag in flags_and_switches(args, &["--skip-detect"])? {
            let name = flag.name.as_str();
            if name == "--help" {
                return Ok(None);
            }
            if name == "--skip-detect" {
                parsed.skip_detect = true;
                continue;
            }
            if name == "--buildpack" {
                parsed.buildpack = Some(buildpack_name(flag.value)?);
                continue;
            }
            let path = match name {
                "--app-dir" => &mut parsed.app_dir,
                "--buildpacks-dir" => &mut parsed.buildpacks_dir,
                "--output-droplet" => &mut parsed.output_droplet,
                "--output-metadata" => &mut parsed.output_metadata,
                "--cache-dir" => &mut parsed.cache_dir,
                "--deps-dir" => &mut parsed.deps_dir,
                other => return Err(UsageError(format!("unknown flag {other}"))),
            };
            if flag.value.is_empty() {
                return Err(UsageError(format!("{name} needs a path")));
            }
            *path = PathBuf::from(flag.value);
        }
        Ok(Some(parsed))
    }
}

/// A buildpack is named by its directory: a name with `/` (or `.`, `..`)
/// would reach outside the buildpacks directory.
fn buildpack_name(name: String) -> Result<String, UsageError> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(UsageError(format!(
            "--buildpack {name:?} is not a buildpack name"
        )));
    }
    Ok(name)
}

/// A step of staging, as error messages name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Supply,
    Compile,
    Finalize,
    Release,
}

impl Step {
    fn script(self) -> &'static str {
        match self {
            Step::Supply => "bin/supply",
            Step::Compile => "bin/compile",
            Step::Finalize => "bin/finalize",
            Step::Release => "bin/release",
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Step::Supply => "supply",
            Step::Compile => "compile",
            Step::Finalize => "finalize",
            Step::Release => "release",
        })
    }
}

/// Why staging failed; [`StageError::exit_code`] maps each to the
/// builder's exit code.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// The buildpacks directory holds no buildpack (a missing directory
    /// counts as empty: the staging task downloaded none).
    #[error("no buildpacks in {}", dir.display())]
    NoBuildpacks { dir: PathBuf },
    /// `--buildpack` names a buildpack the directory does not hold.
    #[error("buildpack {name:?} not found in {} (it holds: {})", dir.display(), found.join(", "))]
    UnknownBuildpack {
        name: String,
        dir: PathBuf,
        found: Vec<String>,
    },
    /// Every buildpack's `bin/detect` refused the app (or was missing).
    #[error("none of the buildpacks detected the app: {}", buildpacks.join(", "))]
    NoneDetected { buildpacks: Vec<String> },
    /// The chosen buildpack can compile nothing.
    #[error("buildpack {buildpack} has neither bin/compile nor bin/finalize in {looked_in}")]
    NoCompile {
        buildpack: String,
        looked_in: String,
    },
    /// The chosen buildpack says nothing about running the app.
    #[error("buildpack {buildpack} has no bin/release in {looked_in}")]
    NoRelease {
        buildpack: String,
        looked_in: String,
    },
    /// A script ran and failed; `status` reads "exit status N" or "killed
    /// by signal N".
    #[error("{step} failed: {status}")]
    StepFailed { step: Step, status: String },
    /// A script could not be started (not executable, bad interpreter).
    #[error("{step} failed: run {}: {source}", path.display())]
    StepNotRun {
        step: Step,
        path: PathBuf,
        source: io::Error,
    },
    /// `bin/release` printed YAML outside the subset, or not the expected
    /// shape.
    #[error("release printed unusable YAML: {0}")]
    ReleaseOutput(String),
    /// Reading or writing the builder's own files failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

impl StageError {
    /// The builder's exit code for this failure (see the module docs).
    pub fn exit_code(&self) -> u8 {
        match self {
            StageError::NoBuildpacks { .. }
            | StageError::UnknownBuildpack { .. }
            | StageError::NoneDetected { .. } => EXIT_DETECT_FAILED,
            StageError::StepFailed {
                step: Step::Release,
                ..
            }
            | StageError::StepNotRun {
                step: Step::Release,
                ..
            }
            | StageError::NoRelease { .. }
            | StageError::ReleaseOutput(_) => EXIT_RELEASE_FAILED,
            StageError::StepFailed { .. }
            | StageError::StepNotRun { .. }
            | StageError::NoCompile { .. } => EXIT_COMPILE_FAILED,
            StageError::Io { .. } => EXIT_FAILURE,
        }
    }
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StageError {
    let path = path.to_path_buf();
    move |source| StageError::Io {
        action,
        path,
        source,
    }
}

/// Where the buildpacks' scripts write their output (their stderr, and the
/// stdout of supply, compile and finalize).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptOutput {
    /// To the builder's own stdout and stderr: the staging logs.
    Inherit,
    /// Nowhere: for tests, whose harness captures only its own prints.
    Discard,
}

impl ScriptOutput {
    fn stdio(self) -> Stdio {
        match self {
            ScriptOutput::Inherit => Stdio::inherit(),
            ScriptOutput::Discard => Stdio::null(),
        }
    }
}

/// The buildpack chosen to compile the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chosen {
    /// Its directory name.
    pub buildpack: String,
    /// What its `bin/detect` printed, else its name.
    pub detected_as: String,
    /// Whether its `bin/detect` ran (and accepted the app).
    pub detected: bool,
}

/// Where a buildpack's scripts are: `dir` itself, or, when `dir` has no
/// `bin/` and holds exactly one folder (hidden entries aside), that folder:
/// a zip or tarball as GitHub serves it wraps the buildpack in
/// `NAME-BRANCH/`.
pub fn buildpack_root(dir: &Path) -> PathBuf {
    if dir.join("bin").is_dir() {
        return dir.to_path_buf();
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return dir.to_path_buf();
    };
    let visible: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|entry| !entry.file_name().to_string_lossy().starts_with('.'))
        .map(|entry| entry.path())
        .collect();
    match visible.as_slice() {
        [only] if only.is_dir() => only.clone(),
        _ => dir.to_path_buf(),
    }
}

/// Where a buildpack's scripts were looked for, for messages: "DIR", or
/// "DIR (unwrapped from its single folder)".
fn looked_in(dir: &Path, root: &Path) -> String {
    if dir == root {
        root.display().to_string()
    } else {
        format!("{} (its single top-level folder)", root.display())
    }
}

/// What `bin/release` says, read from its YAML.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Release {
    /// `default_process_types.web`, when set and not empty.
    pub web: Option<String>,
    /// `config_vars`, in order; a null value is empty.
    pub config_vars: Vec<EnvironmentVariable>,
}

/// Reads `bin/release` output: a map whose `default_process_types` (a map;
/// only `web` is used) and `config_vars` (a map of strings) may be absent.
/// Other keys (`addons`, ...) are ignored. Empty output is an empty release.
///
/// # Errors
/// YAML outside [`yaml`]'s subset, or those keys holding the wrong kind.
pub fn parse_release(text: &str) -> Result<Release, String> {
    let value = yaml::parse(text).map_err(|err| err.to_string())?;
    let mut release = Release::default();
    let entries = match value {
        Value::Null => return Ok(release),
        Value::Map(entries) => entries,
        other => return Err(format!("expected a map, found {}", other.kind())),
    };
    for (key, value) in entries {
        match (key.as_str(), value) {
            ("default_process_types", Value::Null) | ("config_vars", Value::Null) => {}
            ("default_process_types", types @ Value::Map(_)) => {
                release.web = match types.get("web") {
                    None | Some(Value::Null) => None,
                    Some(Value::Scalar(web)) => Some(web.trim().to_string()),
                    Some(other) => {
                        return Err(format!(
                            "default_process_types.web must be a string, found {}",
                            other.kind()
                        ))
                    }
                }
                .filter(|web| !web.is_empty());
            }
            ("config_vars", Value::Map(vars)) => {
                for (name, value) in vars {
                    let value = match value {
                        Value::Null => String::new(),
                        Value::Scalar(value) => value,
                        other => {
                            return Err(format!(
                                "config_vars.{name} must be a string, found {}",
                                other.kind()
                            ))
                        }
                    };
                    release
                        .config_vars
                        .push(EnvironmentVariable::new(name, value));
                }
            }
            (key @ ("default_process_types" | "config_vars"), other) => {
                return Err(format!("{key} must be a map, found {}", other.kind()))
            }
            _ => {}
        }
    }
    Ok(release)
}

/// The command of the `web:` line of a Procfile (`name: command` per line,
/// `#` comments), when it has a non-empty one.
pub fn procfile_web(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim() == "web")
        .map(|(_, command)| command.trim().to_string())
        .filter(|command| !command.is_empty())
}

/// Stages the app as the module docs describe, writing the builder's own
/// progress lines to `log`.
///
/// # Errors
/// See [`StageError`].
pub fn stage(
    args: &BuilderArgs,
    log: &mut dyn Write,
    output: ScriptOutput,
) -> Result<StagingResult, StageError> {
    let buildpacks = list_buildpacks(&args.buildpacks_dir)?;
    let chosen = choose(args, &buildpacks, log, output)?;
    let buildpack_dir = buildpack_root(&args.buildpacks_dir.join(&chosen.buildpack));

    std::fs::create_dir_all(&args.cache_dir).map_err(io_error("create", &args.cache_dir))?;
    let own_deps = args.deps_dir.join("0");
    std::fs::create_dir_all(&own_deps).map_err(io_error("create", &own_deps))?;
    compile(args, &chosen.buildpack, &buildpack_dir, output)?;
    let release = release(args, &chosen.buildpack, &buildpack_dir, output)?;

    let procfile = args.app_dir.join("Procfile");
    let procfile_web = match std::fs::read_to_string(&procfile) {
        Ok(text) => procfile_web(&text),
        Err(err) if err.kind() == io::ErrorKind::NotFound => None,
        Err(err) => return Err(io_error("read", &procfile)(err)),
    };
    let result = StagingResult {
        detected_buildpack: chosen.detected_as,
        start_command: procfile_web.or(release.web).unwrap_or_default(),
        buildpack: chosen.buildpack,
        env: release.config_vars,
    };

    let size = write_droplet(
        &args.app_dir,
        &args.deps_dir,
        &result.staging_info(),
        &args.output_droplet,
    )?;
    let json = serde_json::to_vec_pretty(&result)
        .expect("a staging result is plain strings, always serialisable");
    write_file(&args.output_metadata, &json)?;

    let detected = if chosen.detected {
        format!(" ({})", result.detected_buildpack)
    } else {
        String::new()
    };
    say(
        log,
        &format!(
            "-----> Staged with buildpack {}{detected}",
            result.buildpack
        ),
    );
    if result.start_command.is_empty() {
        say(
            log,
            "-----> No start command: the buildpack names no web process and the app has no \
             Procfile; give one when launching",
        );
    } else {
        say(
            log,
            &format!("-----> Start command: {}", result.start_command),
        );
    }
    say(log, &format!("-----> Droplet: {}", human_size(size)));
    Ok(result)
}

/// Writes a progress line. Best effort: losing the logs must not fail
/// staging, and flushing keeps the line ahead of the next script's output,
/// which goes straight to the same descriptor.
fn say(log: &mut dyn Write, line: &str) {
    let _ = writeln!(log, "{line}").and_then(|()| log.flush());
}

fn human_size(bytes: u64) -> String {
    match bytes {
        0..1024 => format!("{bytes} B"),
        1024..1_048_576 => format!("{:.1} KB", bytes as f64 / 1024.0),
        _ => format!("{:.1} MB", bytes as f64 / 1_048_576.0),
    }
}

/// The buildpacks' names: the directories (or links to directories) of
/// `dir` whose names are UTF-8 and not hidden, sorted. A missing `dir`
/// holds none.
fn list_buildpacks(dir: &Path) -> Result<Vec<String>, StageError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            return Err(StageError::NoBuildpacks {
                dir: dir.to_path_buf(),
            })
        }
        Err(err) => return Err(io_error("read", dir)(err)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_error("read", dir))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if !name.starts_with('.') && entry.path().is_dir() {
            names.push(name);
        }
    }
    if names.is_empty() {
        return Err(StageError::NoBuildpacks {
            dir: dir.to_path_buf(),
        });
    }
    names.sort();
    Ok(names)
}

fn choose(
    args: &BuilderArgs,
    buildpacks: &[String],
    log: &mut dyn Write,
    output: ScriptOutput,
) -> Result<Chosen, StageError> {
    if let Some(name) = &args.buildpack {
        if !buildpacks.contains(name) {
            return Err(StageError::UnknownBuildpack {
                name: name.clone(),
                dir: args.buildpacks_dir.clone(),
                found: buildpacks.to_vec(),
            });
        }
        say(
            log,
            &format!("-----> Using buildpack {name} (named: detection skipped)"),
        );
        return Ok(Chosen {
            buildpack: name.clone(),
            detected_as: name.clone(),
            detected: false,
        });
    }
    if args.skip_detect {
        // `list_buildpacks` never returns an empty list.
        let first = buildpacks[0].clone();
        say(
            log,
            &format!("-----> Detection skipped: using buildpack {first}"),
        );
        return Ok(Chosen {
            buildpack: first.clone(),
            detected_as: first,
            detected: false,
        });
    }
    for name in buildpacks {
        if let Some(detected_as) = detect(args, name, log, output) {
            say(
                log,
                &format!("-----> Buildpack {name} detected the app ({detected_as})"),
            );
            return Ok(Chosen {
                buildpack: name.clone(),
                detected_as,
                detected: true,
            });
        }
    }
    Err(StageError::NoneDetected {
        buildpacks: buildpacks.to_vec(),
    })
}

/// Runs `bin/detect BUILD_DIR`: the detected name when it exits 0. A
/// missing or unrunnable script detects nothing (with a warning, since
/// that is the buildpack's fault, not the app's).
fn detect(
    args: &BuilderArgs,
    name: &str,
    log: &mut dyn Write,
    output: ScriptOutput,
) -> Option<String> {
    let dir = args.buildpacks_dir.join(name);
    let root = buildpack_root(&dir);
    let script = root.join("bin/detect");
    if !script.exists() {
        say(
            log,
            &format!(
                "-----> Buildpack {name} has no bin/detect in {}: skipped",
                looked_in(&dir, &root)
            ),
        );
        return None;
    }
    let run = Command::new(&script)
        .arg(&args.app_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(output.stdio())
        .output();
    match run {
        Ok(done) if done.status.success() => {
            let stdout = String::from_utf8_lossy(&done.stdout);
            let first = stdout.lines().map(str::trim).find(|l| !l.is_empty());
            Some(first.unwrap_or(name).to_string())
        }
        Ok(_) => None,
        Err(err) => {
            say(
                log,
                &format!("-----> Buildpack {name}: cannot run bin/detect ({err}): skipped"),
            );
            None
        }
    }
}

fn compile(
    args: &BuilderArgs,
    buildpack: &str,
    dir: &Path,
    output: ScriptOutput,
) -> Result<(), StageError> {
    let deps_args = [
        args.app_dir.as_os_str(),
        args.cache_dir.as_os_str(),
        args.deps_dir.as_os_str(),
        "0".as_ref(),
    ];
    if dir.join(Step::Finalize.script()).exists() {
        if dir.join(Step::Supply.script()).exists() {
            run_step(Step::Supply, dir, &deps_args, output)?;
        }
        return run_step(Step::Finalize, dir, &deps_args, output);
    }
    if dir.join(Step::Compile.script()).exists() {
        return run_step(Step::Compile, dir, &deps_args[..2], output);
    }
    Err(StageError::NoCompile {
        buildpack: buildpack.to_string(),
        looked_in: looked_in(&args.buildpacks_dir.join(buildpack), dir),
    })
}

fn run_step(
    step: Step,
    dir: &Path,
    args: &[&std::ffi::OsStr],
    output: ScriptOutput,
) -> Result<(), StageError> {
    let script = dir.join(step.script());
    let status = Command::new(&script)
        .args(args)
        .stdin(Stdio::null())
        .stdout(output.stdio())
        .stderr(output.stdio())
        .status()
        .map_err(|source| StageError::StepNotRun {
            step,
            path: script,
            source,
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(StageError::StepFailed {
            step,
            status: describe(status),
        })
    }
}

/// "exit status N" or "killed by signal N".
fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => status.to_string(),
    }
}

fn release(
    args: &BuilderArgs,
    buildpack: &str,
    dir: &Path,
    output: ScriptOutput,
) -> Result<Release, StageError> {
    let script = dir.join(Step::Release.script());
    if !script.exists() {
        return Err(StageError::NoRelease {
            buildpack: buildpack.to_string(),
            looked_in: looked_in(&args.buildpacks_dir.join(buildpack), dir),
        });
    }
    let done = Command::new(&script)
        .arg(&args.app_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(output.stdio())
        .output()
        .map_err(|source| StageError::StepNotRun {
            step: Step::Release,
            path: script,
            source,
        })?;
    if !done.status.success() {
        return Err(StageError::StepFailed {
            step: Step::Release,
            status: describe(done.status),
        });
    }
    parse_release(&String::from_utf8_lossy(&done.stdout)).map_err(StageError::ReleaseOutput)
}

/// Writes `data` to `path` (creating its directory) through a temporary
/// file and a rename, so a reader never sees half of it.
fn write_file(path: &Path, data: &[u8]) -> Result<(), StageError> {
    let tmp = temporary(path);
    create_parent(path)?;
    std::fs::write(&tmp, data).map_err(io_error("write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io_error("write", path))
}

fn temporary(path: &Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".partial");
    PathBuf::from(tmp)
}

fn create_parent(path: &Path) -> Result<(), StageError> {
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => std::fs::create_dir_all(parent).map_err(io_error("create", parent)),
        None => Ok(()),
    }
}

/// Writes the droplet: a gzip tar of `app/` (the compiled `app_dir`),
/// `deps/` (when `deps_dir` holds any file) and `staging_info.yml` (as
/// JSON, which is YAML too, as Cloud Foundry writes it). Symbolic links are
/// kept as links. Returns the droplet's size.
///
/// # Errors
/// Reading the app or writing the droplet; no droplet is left at `output`
/// then (an earlier one is kept).
pub fn write_droplet(
    app_dir: &Path,
    deps_dir: &Path,
    info: &StagingInfo,
    output: &Path,
) -> Result<u64, StageError> {
    create_parent(output)?;
    let tmp = temporary(output);
    let written = write_droplet_to(app_dir, deps_dir, info, &tmp);
    if written.is_err() {
        // Best effort: a partial file next to the droplet harms no reader.
        let _ = std::fs::remove_file(&tmp);
    }
    let size = written?;
    std::fs::rename(&tmp, output).map_err(io_error("write", output))?;
    Ok(size)
}

fn write_droplet_to(
    app_dir: &Path,
    deps_dir: &Path,
    info: &StagingInfo,
    path: &Path,
) -> Result<u64, StageError> {
    let write = io_error("write", path);
    let file = File::create(path).map_err(io_error("create", path))?;
    let mut tar = tar::Builder::new(GzEncoder::new(file, Compression::default()));
    tar.follow_symlinks(false);
    tar.append_dir_all("app", app_dir)
        .map_err(io_error("archive", app_dir))?;
    if holds_files(deps_dir) {
        tar.append_dir_all("deps", deps_dir)
            .map_err(io_error("archive", deps_dir))?;
    }
    let json = serde_json::to_vec_pretty(info)
        .expect("staging info is plain strings, always serialisable");
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o644);
    header.set_size(json.len() as u64);
    header.set_mtime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs()),
    );
    tar.append_data(&mut header, STAGING_INFO_FILE, json.as_slice())
        .map_err(io_error("write", path))?;
    let file = tar
        .into_inner()
        .and_then(GzEncoder::finish)
        .map_err(write)?;
    file.sync_all().map_err(io_error("write", path))?;
    Ok(file.metadata().map_err(io_error("write", path))?.len())
}

/// Whether `dir` holds anything but (nested) empty directories. An
/// unreadable directory counts as holding files, so archiving it reports
/// the error.
fn holds_files(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return dir.exists();
    };
    entries.into_iter().any(|entry| match entry {
        Ok(entry) => match entry.file_type() {
            Ok(kind) if kind.is_dir() => holds_files(&entry.path()),
            _ => true,
        },
        Err(_) => true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::os;
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn parses_arguments_with_defaults() {
        assert_eq!(
            BuilderArgs::parse(os(&[])),
            Ok(Some(BuilderArgs::default()))
        );
        let parsed = BuilderArgs::parse(os(&[
            "--app-dir",
            "/a",
            "--buildpacks-dir=/b",
            "--output-droplet",
            "/d.tgz",
            "--output-metadata",
            "/r.json",
            "--cache-dir",
            "/c",
            "--deps-dir",
            "/deps",
            "--skip-detect",
            "--buildpack",
            "static-sh",
        ]));
        assert_eq!(
            parsed,
            Ok(Some(BuilderArgs {
                app_dir: "/a".into(),
                buildpacks_dir: "/b".into(),
                output_droplet: "/d.tgz".into(),
                output_metadata: "/r.json".into(),
                cache_dir: "/c".into(),
                deps_dir: "/deps".into(),
                buildpack: Some("static-sh".into()),
                skip_detect: true,
            }))
        );
        assert_eq!(BuilderArgs::parse(os(&["--help"])), Ok(None));
    }

    #[test]
    fn refuses_bad_arguments() {
        for bad in [
            &["--bogus", "1"][..],
            &["--app-dir="],
            &["--app-dir"],
            &["--buildpack", "../x"],
            &["--buildpack", ".."],
            &["--buildpack="],
            &["--skip-detect=yes"],
            &["static-sh"],
        ] {
            assert!(BuilderArgs::parse(os(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn reads_release_output() {
        let release = parse_release(
            "---\nconfig_vars:\n  A: one\n  EMPTY:\n  N: 2\n\
             default_process_types:\n  web: sh ./start.sh\n  worker: w\naddons: []\n",
        )
        .expect("valid");
        assert_eq!(
            release,
            Release {
                web: Some("sh ./start.sh".into()),
                config_vars: vec![
                    EnvironmentVariable::new("A", "one"),
                    EnvironmentVariable::new("EMPTY", ""),
                    EnvironmentVariable::new("N", "2"),
                ],
            }
        );
        assert_eq!(parse_release(""), Ok(Release::default()));
        assert_eq!(
            parse_release("--- {}\n"),
            Ok(Release::default()),
            "Ruby's empty hash"
        );
        assert_eq!(
            parse_release("default_process_types: {web: ''}\nconfig_vars: {}\n"),
            Ok(Release::default()),
            "an empty web command is none"
        );
        assert_eq!(
            parse_release("default_process_types: {worker: w}").map(|r| r.web),
            Ok(None)
        );
    }

    #[test]
    fn refuses_release_output_of_the_wrong_shape() {
        for (text, message) in [
            ("- a\n", "expected a map, found a list"),
            (
                "default_process_types: web\n",
                "default_process_types must be a map",
            ),
            (
                "default_process_types: {web: [a]}\n",
                "web must be a string",
            ),
            ("config_vars: [a]\n", "config_vars must be a map"),
            (
                "config_vars: {A: {b: c}}\n",
                "config_vars.A must be a string",
            ),
            ("web: |\n  x\n", "line 1: block scalars"),
        ] {
            let err = parse_release(text).expect_err(text);
            assert!(err.contains(message), "{text:?}: {err}");
        }
    }

    #[test]
    fn reads_the_procfile_web_line() {
        assert_eq!(
            procfile_web("# comment\nworker: w\nweb: node server.js --port=$PORT\n"),
            Some("node server.js --port=$PORT".to_string())
        );
        assert_eq!(procfile_web("worker: w\n"), None);
        assert_eq!(procfile_web("web:\n"), None);
        assert_eq!(procfile_web("#web: x\n"), None);
    }

    #[test]
    fn exit_codes_follow_cloud_foundry() {
        use lattice_models::lifecycle::{
            BUILDPACK_EXIT_COMPILE_FAILED, BUILDPACK_EXIT_DETECT_FAILED,
            BUILDPACK_EXIT_RELEASE_FAILED,
        };
        assert_eq!(i64::from(EXIT_DETECT_FAILED), BUILDPACK_EXIT_DETECT_FAILED);
        assert_eq!(
            i64::from(EXIT_COMPILE_FAILED),
            BUILDPACK_EXIT_COMPILE_FAILED
        );
        assert_eq!(
            i64::from(EXIT_RELEASE_FAILED),
            BUILDPACK_EXIT_RELEASE_FAILED
        );
        let failed = |step| StageError::StepFailed {
            step,
            status: "exit status 3".into(),
        };
        assert_eq!(failed(Step::Compile).exit_code(), 223);
        assert_eq!(failed(Step::Supply).exit_code(), 223);
        assert_eq!(failed(Step::Release).exit_code(), 224);
        assert_eq!(
            failed(Step::Compile).to_string(),
            "compile failed: exit status 3"
        );
        let none = StageError::NoneDetected {
            buildpacks: vec!["a".into(), "b".into()],
        };
        assert_eq!(none.exit_code(), 222);
        assert_eq!(
            none.to_string(),
            "none of the buildpacks detected the app: a, b"
        );
    }

    /// A buildpack in `root/name` whose scripts are the given shell bodies.
    fn buildpack(root: &Path, name: &str, scripts: &[(&str, &str)]) {
        let bin = root.join(name).join("bin");
        std::fs::create_dir_all(&bin).expect("temp dir is writable");
        for (script, body) in scripts {
            let path = bin.join(script);
            std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("writable");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .expect("own file");
        }
    }

    struct Staging {
        _dir: tempfile::TempDir,
        args: BuilderArgs,
    }

    fn staging() -> Staging {
        let dir = tempfile::tempdir().expect("temp dir is writable");
        let root = dir.path();
        let args = BuilderArgs {
            app_dir: root.join("app"),
            buildpacks_dir: root.join("buildpacks"),
            output_droplet: root.join("out/droplet.tgz"),
            output_metadata: root.join("out/result.json"),
            cache_dir: root.join("cache"),
            deps_dir: root.join("deps"),
            ..BuilderArgs::default()
        };
        std::fs::create_dir_all(&args.app_dir).expect("writable");
        std::fs::create_dir_all(&args.buildpacks_dir).expect("writable");
        Staging { _dir: dir, args }
    }

    fn stage_quietly(args: &BuilderArgs) -> (Result<StagingResult, StageError>, String) {
        let mut log = Vec::new();
        let result = stage(args, &mut log, ScriptOutput::Discard);
        (result, String::from_utf8(log).expect("utf-8 log"))
    }

    /// The droplet's entries: path -> content (empty for directories).
    fn droplet_entries(path: &Path) -> Vec<(String, String)> {
        let file = File::open(path).expect("droplet written");
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
        archive
            .entries()
            .expect("a tar")
            .map(|entry| {
                let mut entry = entry.expect("readable");
                let path = entry.path().expect("a path").to_string_lossy().into_owned();
                let mut content = String::new();
                entry.read_to_string(&mut content).expect("text");
                (path, content)
            })
            .collect()
    }

    const RELEASE: &str =
        "printf -- '---\\nconfig_vars:\\n  A: one\\ndefault_process_types:\\n  web: ./run\\n'";

    /// Issue 14: a buildpack archive as GitHub serves it holds one folder
    /// (`null-buildpack-master/bin/...`); a named buildpack whose detect
    /// always fails (Cloud Foundry's binary buildpack) is used anyway.
    #[test]
    fn a_named_buildpack_in_a_single_folder_is_used_without_detection() {
        let s = staging();
        let bps = &s.args.buildpacks_dir;
        buildpack(
            &bps.join("binary"),
            "binary-buildpack-master",
            &[
                ("detect", "exit 1"),
                ("compile", "touch \"$1/compiled\""),
                ("release", RELEASE),
            ],
        );
        std::fs::write(bps.join("binary/.hidden"), "").expect("writable");
        let args = BuilderArgs {
            buildpack: Some("binary".into()),
            ..s.args.clone()
        };
        let (result, log) = stage_quietly(&args);
        let result = result.expect("stages");
        assert_eq!(result.buildpack, "binary");
        assert_eq!(result.start_command, "./run");
        assert!(s.args.app_dir.join("compiled").is_file());
        assert!(log.contains("detection skipped"), "{log}");
        assert!(
            log.contains("-----> Staged with buildpack binary\n"),
            "no detected name when detection was skipped: {log}"
        );

        // Detection looks in the single folder too, and says so when it
        // finds no bin/detect there.
        buildpack(&bps.join("wrapped"), "inner", &[("compile", "exit 0")]);
        let (result, log) = stage_quietly(&s.args);
        assert!(
            matches!(result, Err(StageError::NoneDetected { .. })),
            "{result:?}"
        );
        assert!(
            log.contains("inner (its single top-level folder): skipped"),
            "{log}"
        );
        std::fs::create_dir(bps.join("binary/second")).expect("writable");
        assert_eq!(
            buildpack_root(&bps.join("binary")),
            bps.join("binary"),
            "two folders are not unwrapped"
        );
    }

    #[test]
    fn stages_with_the_first_detecting_buildpack_in_name_order() {
        let s = staging();
        let bps = &s.args.buildpacks_dir;
        buildpack(bps, "a-never", &[("detect", "exit 1")]);
        buildpack(bps, "b-no-detect", &[("compile", "exit 0")]);
        buildpack(
            bps,
            "c-good",
            &[
                ("detect", "test -f \"$1/app.txt\" && echo 'Good BP 1.0'"),
                (
                    "compile",
                    "touch \"$1/compiled\"; ln -s compiled \"$1/link\"; mkdir -p \"$2/warm\"",
                ),
                ("release", RELEASE),
            ],
        );
        buildpack(bps, "d-also", &[("detect", "exit 0")]);
        std::fs::write(s.args.app_dir.join("app.txt"), "bits").expect("writable");

        let (result, log) = stage_quietly(&s.args);
        let result = result.expect("stages");
        assert_eq!(
            result,
            StagingResult {
                detected_buildpack: "Good BP 1.0".into(),
                start_command: "./run".into(),
                buildpack: "c-good".into(),
                env: vec![EnvironmentVariable::new("A", "one")],
            }
        );
        assert!(
            log.contains("Buildpack b-no-detect has no bin/detect"),
            "{log}"
        );
        assert!(log.contains("-----> Start command: ./run"), "{log}");
        assert!(
            s.args.cache_dir.join("warm").is_dir(),
            "compile got CACHE_DIR"
        );

        let written: StagingResult = serde_json::from_slice(
            &std::fs::read(&s.args.output_metadata).expect("metadata written"),
        )
        .expect("json");
        assert_eq!(written, result);
        let entries = droplet_entries(&s.args.output_droplet);
        let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
        assert!(names.contains(&"app/compiled"), "{names:?}");
        assert!(names.contains(&"app/link"), "{names:?}");
        assert!(
            !names.iter().any(|n| n.starts_with("deps")),
            "no deps supplied: {names:?}"
        );
        let (_, info) = entries
            .iter()
            .find(|(n, _)| n == STAGING_INFO_FILE)
            .expect("staging info in the droplet");
        let info: StagingInfo = serde_json::from_str(info).expect("json, so yaml");
        assert_eq!(info, result.staging_info());
    }

    #[test]
    fn a_named_buildpack_skips_detection_and_the_procfile_wins() {
        let s = staging();
        let bps = &s.args.buildpacks_dir;
        buildpack(bps, "a-other", &[("detect", "exit 0")]);
        buildpack(
            bps,
            "b-chosen",
            &[
                ("detect", "exit 1"),
                ("compile", "exit 0"),
                ("release", RELEASE),
            ],
        );
        std::fs::write(s.args.app_dir.join("Procfile"), "web: ./custom\n").expect("writable");
        let args = BuilderArgs {
            buildpack: Some("b-chosen".into()),
            ..s.args.clone()
        };
        let result = stage_quietly(&args).0.expect("stages");
        assert_eq!(
            (
                result.buildpack.as_str(),
                result.detected_buildpack.as_str()
            ),
            ("b-chosen", "b-chosen")
        );
        assert_eq!(result.start_command, "./custom");

        let args = BuilderArgs {
            buildpack: Some("missing".into()),
            ..s.args.clone()
        };
        let err = stage_quietly(&args).0.expect_err("no such buildpack");
        assert_eq!(err.exit_code(), 222);
        assert!(
            err.to_string().contains("it holds: a-other, b-chosen"),
            "{err}"
        );
    }

    #[test]
    fn skip_detect_takes_the_first_buildpack() {
        let s = staging();
        buildpack(
            &s.args.buildpacks_dir,
            "only",
            &[
                ("detect", "exit 1"),
                ("compile", "exit 0"),
                ("release", "true"),
            ],
        );
        let args = BuilderArgs {
            skip_detect: true,
            ..s.args.clone()
        };
        let result = stage_quietly(&args).0.expect("stages");
        assert_eq!(result.buildpack, "only");
        assert_eq!(result.start_command, "", "release printed nothing");
    }

    #[test]
    fn supply_and_finalize_run_instead_of_compile_and_deps_are_kept() {
        let s = staging();
        buildpack(
            &s.args.buildpacks_dir,
            "v3",
            &[
                ("detect", "exit 0"),
                ("supply", "[ \"$4\" = 0 ] && echo tool > \"$3/$4/tool\""),
                // The shim would run supply again: it must not run.
                ("compile", "exit 9"),
                ("finalize", "cp \"$3/0/tool\" \"$1/tool-copy\""),
                ("release", RELEASE),
            ],
        );
        stage_quietly(&s.args).0.expect("stages");
        let entries = droplet_entries(&s.args.output_droplet);
        assert!(
            entries
                .iter()
                .any(|(n, c)| n == "deps/0/tool" && c == "tool\n"),
            "{entries:?}"
        );
        assert!(
            entries.iter().any(|(n, _)| n == "app/tool-copy"),
            "{entries:?}"
        );
    }

    #[test]
    fn failures_map_to_their_exit_codes_and_write_nothing() {
        let s = staging();
        let bps = &s.args.buildpacks_dir;
        let err = stage_quietly(&s.args).0.expect_err("no buildpacks");
        assert_eq!(
            (err.exit_code(), err.to_string()),
            (222, format!("no buildpacks in {}", bps.display()))
        );

        buildpack(bps, "a", &[("detect", "exit 1")]);
        buildpack(bps, "b", &[("detect", "exit 1")]);
        let err = stage_quietly(&s.args).0.expect_err("none detects");
        assert_eq!(
            err.to_string(),
            "none of the buildpacks detected the app: a, b"
        );

        buildpack(
            bps,
            "c",
            &[("detect", "exit 0"), ("compile", "echo broken >&2; exit 3")],
        );
        let err = stage_quietly(&s.args).0.expect_err("compile fails");
        assert_eq!(
            (err.exit_code(), err.to_string()),
            (223, "compile failed: exit status 3".to_string())
        );

        std::fs::remove_dir_all(bps.join("c")).expect("created above");
        buildpack(bps, "c", &[("detect", "exit 0"), ("compile", "kill -9 $$")]);
        let err = stage_quietly(&s.args).0.expect_err("compile killed");
        assert_eq!(err.to_string(), "compile failed: killed by signal 9");

        std::fs::remove_dir_all(bps.join("c")).expect("created above");
        buildpack(bps, "c", &[("detect", "exit 0"), ("release", "true")]);
        let err = stage_quietly(&s.args).0.expect_err("nothing compiles");
        assert_eq!(
            (err.exit_code(), err.to_string()),
            (
                223,
                format!(
                    "buildpack c has neither bin/compile nor bin/finalize in {}",
                    bps.join("c").display()
                )
            )
        );

        std::fs::remove_dir_all(bps.join("c")).expect("created above");
        buildpack(
            bps,
            "c",
            &[
                ("detect", "exit 0"),
                ("compile", "true"),
                ("release", "echo 'web: |'"),
            ],
        );
        let err = stage_quietly(&s.args).0.expect_err("bad release");
        assert_eq!(err.exit_code(), 224);
        assert!(
            err.to_string()
                .starts_with("release printed unusable YAML: line 1: block scalars"),
            "{err}"
        );

        std::fs::remove_dir_all(bps.join("c")).expect("created above");
        buildpack(
            bps,
            "c",
            &[
                ("detect", "exit 0"),
                ("compile", "true"),
                ("release", "exit 4"),
            ],
        );
        let err = stage_quietly(&s.args).0.expect_err("release fails");
        assert_eq!(
            (err.exit_code(), err.to_string()),
            (224, "release failed: exit status 4".to_string())
        );

        std::fs::remove_dir_all(bps.join("c")).expect("created above");
        buildpack(bps, "c", &[("detect", "exit 0"), ("compile", "true")]);
        let compile = bps.join("c/bin/compile");
        std::fs::set_permissions(&compile, std::fs::Permissions::from_mode(0o644))
            .expect("own file");
        let err = stage_quietly(&s.args)
            .0
            .expect_err("compile not executable");
        assert_eq!(err.exit_code(), 223);
        assert!(err.to_string().starts_with("compile failed: run "), "{err}");

        assert!(!s.args.output_droplet.exists());
        assert!(!s.args.output_metadata.exists());
    }

    #[test]
    fn stages_the_sample_app_with_the_sample_buildpacks() {
        let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples");
        let s = staging();
        for name in ["static-sh", "fails-compile"] {
            std::os::unix::fs::symlink(
                samples.join("buildpacks").join(name),
                s.args.buildpacks_dir.join(name),
            )
            .expect("temp dir is writable");
        }
        let app = samples.join("apps/static-app");
        for entry in std::fs::read_dir(&app).expect("the sample app exists") {
            let entry = entry.expect("readable");
            std::fs::copy(entry.path(), s.args.app_dir.join(entry.file_name())).expect("copied");
        }
        // fails-compile detects everything and sorts first.
        let err = stage_quietly(&s.args)
            .0
            .expect_err("fails-compile is chosen");
        assert_eq!(err.to_string(), "compile failed: exit status 3");

        std::fs::remove_file(s.args.buildpacks_dir.join("fails-compile")).expect("linked above");
        let result = stage_quietly(&s.args).0.expect("static-sh stages the app");
        assert_eq!(
            result,
            StagingResult {
                detected_buildpack: "Static-sh".into(),
                start_command: "sh ./start.sh".into(),
                buildpack: "static-sh".into(),
                env: vec![EnvironmentVariable::new(
                    "STATIC_SH_GREETING",
                    "hello from static-sh"
                )],
            }
        );
        let names: Vec<String> = droplet_entries(&s.args.output_droplet)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        for expected in [
            "app/index.html",
            "app/start.sh",
            "app/compiled-by-buildpack",
            "app/.profile.d/static-sh.sh",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} in {names:?}"
            );
        }
    }
}
