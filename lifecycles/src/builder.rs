//! The Docker app lifecycle's builder: staging a Docker image means reading
//! its config and reporting how to run it.
//!
//! `builder --output PATH [-- START_COMMAND...]` reads
//! [`IMAGE_CONFIG_PATH`], writes the image's [`ExecutionMetadata`] as JSON
//! to PATH (creating its directory), and prints a short summary, which the
//! cell shows as staging (`STG`) logs. A START_COMMAND given (the user's,
//! from `ltc create APP IMAGE -- CMD...`) is the metadata's start command
//! instead of the image's, so an image that sets neither `ENTRYPOINT` nor
//! `CMD` (busybox, a base OS) can still run as an app.
//!
//! # Errors
//! Without a START_COMMAND, an image without a start command (neither
//! `ENTRYPOINT` nor `CMD`) cannot run as an app: the builder fails, and
//! writes nothing.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use lattice_models::lifecycle::{ExecutionMetadata, ImageConfig, IMAGE_CONFIG_PATH};

use crate::args::{flags, UsageError};
use crate::image_config::{self, ConfigError};

pub const USAGE: &str = "usage: builder --output PATH [-- START_COMMAND [ARGS...]]";

/// What the command line asks for; `None` from [`BuilderArgs::parse`] means
/// help was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuilderArgs {
    /// Where the execution metadata JSON goes.
    pub output: PathBuf,
    /// The start command the app will run with, when the user gave one
    /// (after `--`); empty: the image's.
    pub start_command: Vec<String>,
}

impl BuilderArgs {
    /// # Errors
    /// An unknown flag, `--output` missing, or a start command that is not
    /// UTF-8.
    pub fn parse(mut args: Vec<OsString>) -> Result<Option<BuilderArgs>, UsageError> {
        let start_command = match args.iter().position(|arg| arg == "--") {
            Some(at) => {
                let command = args.split_off(at + 1);
                args.pop();
                command
                    .into_iter()
                    .map(|word| {
                        word.into_string().map_err(|word| {
                            UsageError(format!("start command word {word:?} is not UTF-8"))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?
            }
            None => Vec::new(),
        };
        let mut output = None;
        for flag in flags(args)? {
            match flag.name.as_str() {
                "--help" => return Ok(None),
                "--output" if !flag.value.is_empty() => output = Some(PathBuf::from(flag.value)),
                "--output" => return Err(UsageError("--output needs a path".to_string())),
                other => return Err(UsageError(format!("unknown flag {other}"))),
            }
        }
        let output = output.ok_or_else(|| UsageError("--output is required".to_string()))?;
        Ok(Some(BuilderArgs {
            output,
            start_command,
        }))
    }
}

/// Why staging failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The image sets neither an entrypoint nor a cmd.
    #[error("the image has no start command: it sets neither ENTRYPOINT nor CMD")]
    NoStartCommand,
    #[error("write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The execution metadata of an image that can run: with `start_command`
/// as its start command when one is given, else the image's.
///
/// # Errors
/// [`BuildError::NoStartCommand`] when neither names a program.
pub fn execution_metadata(
    config: &ImageConfig,
    start_command: &[String],
) -> Result<ExecutionMetadata, BuildError> {
    ExecutionMetadata::runnable(config, start_command).ok_or(BuildError::NoStartCommand)
}

/// The human summary: the ports, then the start command as a shell would
/// take it.
pub fn summary(metadata: &ExecutionMetadata) -> String {
    let ports = match metadata.ports.as_slice() {
        [] => "Image exposes no ports".to_string(),
        [port] => format!("Image exposes port {port}"),
        ports => {
            let list: Vec<String> = ports.iter().map(u32::to_string).collect();
            format!("Image exposes ports {}", list.join(", "))
        }
    };
    let command: Vec<String> = metadata
        .start_command
        .iter()
        .map(|word| shell_quote(word))
        .collect();
    format!("{ports}; start command: {}", command.join(" "))
}

/// `word`, quoted when a shell would split or expand it, so the summary
/// reads as a command line that could be pasted.
pub fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Stages the image whose config is at `image_config`: writes its metadata
/// (with `start_command` when one is given) to `output` and returns the
/// summary to print.
///
/// # Errors
/// See [`BuildError`]; nothing is written on error.
pub fn build(
    image_config: &Path,
    output: &Path,
    start_command: &[String],
) -> Result<String, BuildError> {
    let config = image_config::read(image_config)?;
    let metadata = execution_metadata(&config, start_command)?;
    let json = serde_json::to_vec_pretty(&metadata)
        .expect("execution metadata is plain strings and numbers, always serialisable");
    let write = |source| BuildError::Write {
        path: output.to_path_buf(),
        source,
    };
    if let Some(parent) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(write)?;
    }
    std::fs::write(output, json).map_err(write)?;
    Ok(summary(&metadata))
}

/// [`build`] with the config Garden writes into every container.
///
/// # Errors
/// See [`build`].
pub fn build_in_container(output: &Path, start_command: &[String]) -> Result<String, BuildError> {
    build(Path::new(IMAGE_CONFIG_PATH), output, start_command)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::os;

    #[test]
    fn parses_arguments() {
        assert_eq!(
            BuilderArgs::parse(os(&["--output", "/tmp/r.json"])),
            Ok(Some(BuilderArgs {
                output: "/tmp/r.json".into(),
                start_command: Vec::new(),
            }))
        );
        assert_eq!(
            BuilderArgs::parse(os(&["--output", "/r", "--", "sh", "-c", "--", "x"])),
            Ok(Some(BuilderArgs {
                output: "/r".into(),
                start_command: vec!["sh".into(), "-c".into(), "--".into(), "x".into()],
            }))
        );
        assert_eq!(
            BuilderArgs::parse(os(&["--output=/r.json"])).map(|a| a.map(|a| a.output)),
            Ok(Some("/r.json".into()))
        );
        assert_eq!(BuilderArgs::parse(os(&["--help"])), Ok(None));
        assert!(BuilderArgs::parse(os(&[])).is_err(), "output is required");
        assert!(BuilderArgs::parse(os(&["--output="])).is_err());
        assert!(BuilderArgs::parse(os(&["--output", "x", "--bogus", "1"])).is_err());
    }

    #[test]
    fn refuses_an_image_without_start_command() {
        let config = ImageConfig {
            exposed_ports: vec![8080],
            ..Default::default()
        };
        assert!(matches!(
            execution_metadata(&config, &[]),
            Err(BuildError::NoStartCommand)
        ));
        let given = ["sh".to_string(), "-c".to_string(), "date".to_string()];
        let metadata = execution_metadata(&config, &given).expect("a start command is given");
        assert_eq!(metadata.start_command, given);
        assert_eq!(metadata.ports, vec![8080], "the rest is still the image's");
    }

    #[test]
    fn summarises_ports_and_command() {
        let mut metadata = ExecutionMetadata {
            start_command: vec!["sh".into(), "-c".into(), "echo $PORT".into()],
            ports: vec![8080],
            ..Default::default()
        };
        assert_eq!(
            summary(&metadata),
            "Image exposes port 8080; start command: sh -c 'echo $PORT'"
        );
        metadata.ports = vec![8080, 9090];
        metadata.start_command = vec!["/app".into(), "it's".into(), "".into()];
        assert_eq!(
            summary(&metadata),
            r"Image exposes ports 8080, 9090; start command: /app 'it'\''s' ''"
        );
        metadata.ports.clear();
        assert!(summary(&metadata).starts_with("Image exposes no ports;"));
    }

    #[test]
    fn writes_metadata_and_nothing_on_failure() {
        let dir = tempfile::tempdir().expect("temp dir is writable");
        let config = dir.path().join("image-config.json");
        std::fs::write(
            &config,
            r#"{"entrypoint": ["httpd"], "cmd": ["-f"], "env": ["A=1"],
                "working_dir": "/www", "user": "", "exposed_ports": [8080]}"#,
        )
        .expect("writable");
        let output = dir.path().join("out/result.json");
        let summary = build(&config, &output, &[]).expect("builds");
        assert_eq!(summary, "Image exposes port 8080; start command: httpd -f");
        let written: ExecutionMetadata =
            serde_json::from_slice(&std::fs::read(&output).expect("written")).expect("json");
        assert_eq!(written.start_command, vec!["httpd", "-f"]);
        assert_eq!(written.working_dir, "/www");
        assert_eq!(written.env[0].name, "A");

        std::fs::write(&config, r#"{"exposed_ports": [8080]}"#).expect("writable");
        let other = dir.path().join("other.json");
        assert!(matches!(
            build(&config, &other, &[]),
            Err(BuildError::NoStartCommand)
        ));
        assert!(!other.exists());
        let given = ["true".to_string()];
        let summary = build(&config, &other, &given).expect("a start command is given");
        assert_eq!(summary, "Image exposes port 8080; start command: true");
    }
}
