//! The Docker app lifecycle's files: what Garden writes into every container
//! and what the lifecycle binaries read and write.
//!
//! Garden writes the image's config (from the engine's image inspection) to
//! [`IMAGE_CONFIG_PATH`] and the static lifecycle binaries to
//! [`LIFECYCLE_BIN_DIR`]. The `builder` turns the [`ImageConfig`] into an
//! [`ExecutionMetadata`] (what staging reports: start command, ports, ...);
//! the `launcher` runs the image's start command with its environment and
//! working directory; the `healthcheck` probes a port.
//!
//! The buildpack app lifecycle stages an app's bits in a container of the
//! stack image: `buildpack-builder` runs the buildpacks' `bin/detect`,
//! `bin/supply`, `bin/compile` (or `bin/finalize`) and `bin/release`, writes
//! a droplet (a gzip tar of `app/`, optional `deps/`, and [`StagingInfo`] as
//! `staging_info.yml`) and reports a [`StagingResult`]; `droplet-launcher`
//! runs the droplet unpacked in [`DROPLET_DIR`].
//!
//! The derivations are here, beside the types, so that the CLI, the server
//! and the binaries agree on them.

use serde::{Deserialize, Deserializer, Serialize};

use crate::EnvironmentVariable;

/// Directory of the lifecycle binaries inside every container.
pub const LIFECYCLE_BIN_DIR: &str = "/.lattice/bin";
/// The image's config, as JSON ([`ImageConfig`]), inside every container.
pub const IMAGE_CONFIG_PATH: &str = "/.lattice/image-config.json";
/// `builder --output PATH [-- START_COMMAND...]`: writes
/// [`ExecutionMetadata`] to PATH (START_COMMAND, when given, as its start
/// command: the image then needs none).
pub const BUILDER_PATH: &str = "/.lattice/bin/builder";
/// `launcher [-- CMD ARGS...]`: runs the image's (or the given) command.
pub const LAUNCHER_PATH: &str = "/.lattice/bin/launcher";
/// `healthcheck --port N [--uri /path] [--timeout 1s] [--host H]`.
pub const HEALTHCHECK_PATH: &str = "/.lattice/bin/healthcheck";

/// `buildpack-builder [--app-dir D] [--buildpacks-dir D] [--output-droplet F]
/// [--output-metadata F] [--cache-dir D] [--deps-dir D] [--buildpack NAME]
/// [--skip-detect]`: stages an app with buildpacks (defaults below).
pub const BUILDPACK_BUILDER_PATH: &str = "/.lattice/bin/buildpack-builder";
/// `droplet-launcher [--droplet-dir D] [-- CMD ARGS...]`: runs a droplet
/// unpacked in D (default [`DROPLET_DIR`]).
pub const DROPLET_LAUNCHER_PATH: &str = "/.lattice/bin/droplet-launcher";

/// Where the staging task puts the app's bits; compiled in place.
pub const STAGING_APP_DIR: &str = "/tmp/app";
/// Where the staging task unpacks the buildpacks, one directory per
/// buildpack, named after it.
pub const STAGING_BUILDPACKS_DIR: &str = "/tmp/buildpacks";
/// Where `buildpack-builder` writes the droplet (gzip tar).
pub const STAGING_DROPLET_PATH: &str = "/tmp/droplet.tgz";
/// Where `buildpack-builder` writes the [`StagingResult`] JSON.
pub const STAGING_RESULT_PATH: &str = "/tmp/result.json";
/// The buildpacks' `CACHE_DIR`.
pub const STAGING_CACHE_DIR: &str = "/tmp/cache";
/// The buildpacks' `DEPS_DIR` (index 0 is the buildpack's own).
pub const STAGING_DEPS_DIR: &str = "/tmp/deps";

/// Where a droplet is unpacked in the app's container: `app/` (also the
/// app's `HOME` and working directory), `deps/`, [`STAGING_INFO_FILE`].
pub const DROPLET_DIR: &str = "/home/lattice";
/// The droplet's description of itself, at the droplet's root: a
/// [`StagingInfo`] written as JSON, which is also YAML, as Cloud Foundry
/// writes it.
pub const STAGING_INFO_FILE: &str = "staging_info.yml";

/// `buildpack-builder` exit code: no buildpack detected the app.
pub const BUILDPACK_EXIT_DETECT_FAILED: i64 = 222;
/// `buildpack-builder` exit code: `bin/supply`, `bin/compile` or
/// `bin/finalize` failed.
pub const BUILDPACK_EXIT_COMPILE_FAILED: i64 = 223;
/// `buildpack-builder` exit code: `bin/release` failed or printed something
/// that is not the expected YAML.
pub const BUILDPACK_EXIT_RELEASE_FAILED: i64 = 224;

/// What the buildpack builder reports (as JSON, the staging task's result).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StagingResult {
    /// What the buildpack's `bin/detect` printed (its first line), or the
    /// buildpack's name when it printed nothing or detection was skipped.
    pub detected_buildpack: String,
    /// The shell command that starts the app's web process (run with
    /// `/bin/sh -c` in `app/`): the app's `Procfile` `web:` entry, else the
    /// buildpack's `default_process_types.web`. Empty when neither names
    /// one; the app then needs a command given at launch.
    pub start_command: String,
    /// The name (directory) of the buildpack that compiled the app.
    pub buildpack: String,
    /// The buildpack's `config_vars`, in the order it printed them.
    pub env: Vec<EnvironmentVariable>,
}

/// `staging_info.yml` at the root of a droplet: how to start it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StagingInfo {
    /// As in [`StagingResult::detected_buildpack`].
    pub detected_buildpack: String,
    /// As in [`StagingResult::start_command`].
    pub start_command: String,
    /// The buildpack's `config_vars`: the app's environment, under the
    /// environment the cell gives the process.
    pub env: Vec<EnvironmentVariable>,
}

impl StagingResult {
    /// The part of the result the droplet carries.
    pub fn staging_info(&self) -> StagingInfo {
        StagingInfo {
            detected_buildpack: self.detected_buildpack.clone(),
            start_command: self.start_command.clone(),
            env: self.env.clone(),
        }
    }
}

/// The parts of a Docker image's config the lifecycle uses. Every field is
/// empty when the image does not set it (`null` reads as empty too).
/// Also what the receptor's `GET /v1/image_config` answers (ours).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ImageConfig {
    #[serde(deserialize_with = "null_as_default")]
    pub entrypoint: Vec<String>,
    #[serde(deserialize_with = "null_as_default")]
    pub cmd: Vec<String>,
    /// `NAME=value` strings, as Docker stores them.
    #[serde(deserialize_with = "null_as_default")]
    pub env: Vec<String>,
    #[serde(deserialize_with = "null_as_default")]
    pub working_dir: String,
    #[serde(deserialize_with = "null_as_default")]
    pub user: String,
    /// Exposed TCP ports, sorted, without duplicates (see
    /// [`parse_exposed_ports`]).
    #[serde(deserialize_with = "null_as_default")]
    pub exposed_ports: Vec<u32>,
}

impl ImageConfig {
    /// What `docker run` would run: the entrypoint followed by the cmd.
    pub fn start_command(&self) -> Vec<String> {
        self.entrypoint.iter().chain(&self.cmd).cloned().collect()
    }

    /// The environment as name/value pairs, in the image's order. An entry
    /// without `=` or with an empty name is skipped: Docker's exec would
    /// not set it either.
    pub fn env_pairs(&self) -> Vec<(String, String)> {
        self.env
            .iter()
            .filter_map(|entry| entry.split_once('='))
            .filter(|(name, _)| !name.is_empty())
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }
}

/// The TCP ports of Docker's `ExposedPorts` keys (`"8080/tcp"`; a key
/// without a protocol is TCP, as Docker reads it), sorted, without
/// duplicates. UDP/SCTP ports, port 0 and unparsable keys are left out.
pub fn parse_exposed_ports<'a>(keys: impl IntoIterator<Item = &'a str>) -> Vec<u32> {
    let mut ports: Vec<u32> = keys
        .into_iter()
        .filter_map(|key| {
            let (port, protocol) = key.split_once('/').unwrap_or((key, "tcp"));
            if !protocol.eq_ignore_ascii_case("tcp") {
                return None;
            }
            port.trim().parse::<u16>().ok().filter(|p| *p != 0)
        })
        .map(u32::from)
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// What the Docker builder reports about an image: how to start it and
/// which ports it serves. Written as JSON by `builder --output PATH`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExecutionMetadata {
    /// Entrypoint followed by cmd; never empty when written by the builder.
    pub start_command: Vec<String>,
    /// Exposed TCP ports, sorted; empty when the image exposes none.
    pub ports: Vec<u32>,
    /// The image's user; empty for the engine's default (root).
    pub user: String,
    /// The image's working directory; empty for `/`.
    pub working_dir: String,
    pub env: Vec<EnvironmentVariable>,
}

impl ExecutionMetadata {
    /// Derives the metadata from an image's config. The start command may
    /// be empty; the builder refuses such an image.
    pub fn from_image(config: &ImageConfig) -> ExecutionMetadata {
        ExecutionMetadata {
            start_command: config.start_command(),
            ports: config.exposed_ports.clone(),
            user: config.user.clone(),
            working_dir: config.working_dir.clone(),
            env: config
                .env_pairs()
                .into_iter()
                .map(|(name, value)| EnvironmentVariable { name, value })
                .collect(),
        }
    }
}

impl ExecutionMetadata {
    /// The metadata of an image that can run as an app: with
    /// `start_command` as its start command when one is given (the user's,
    /// after `--`), else the image's; `None` when neither names a program.
    /// What the Docker builder decides, and `ltc create` when it reads the
    /// image's config through the receptor.
    pub fn runnable(config: &ImageConfig, start_command: &[String]) -> Option<ExecutionMetadata> {
        let mut metadata = ExecutionMetadata::from_image(config);
        if !start_command.is_empty() {
            metadata.start_command = start_command.to_vec();
        }
        (!metadata.start_command.is_empty()).then_some(metadata)
    }
}

fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn exposed_ports_keep_tcp_only_sorted() {
        let keys = [
            "9090/tcp", "53/udp", "8080/tcp", "8080", "7070/TCP", "x/tcp",
        ];
        assert_eq!(parse_exposed_ports(keys), vec![7070, 8080, 9090]);
        assert!(parse_exposed_ports(["0/tcp", "70000/tcp", "1/sctp"]).is_empty());
        assert!(parse_exposed_ports([]).is_empty());
    }

    #[test]
    fn image_config_wire_format() {
        let config = ImageConfig {
            entrypoint: vec!["httpd".into()],
            cmd: vec!["-f".into()],
            env: vec!["A=1".into()],
            working_dir: "/www".into(),
            user: "nobody".into(),
            exposed_ports: vec![8080],
        };
        let wire = json!({
            "entrypoint": ["httpd"], "cmd": ["-f"], "env": ["A=1"],
            "working_dir": "/www", "user": "nobody", "exposed_ports": [8080]
        });
        assert_eq!(serde_json::to_value(&config).expect("plain data"), wire);
        assert_eq!(
            serde_json::from_value::<ImageConfig>(wire).expect("valid"),
            config
        );
    }

    #[test]
    fn absent_and_null_fields_read_as_empty() {
        let config: ImageConfig = serde_json::from_value(json!({
            "entrypoint": null, "cmd": ["sh"], "working_dir": null, "future_field": 1
        }))
        .expect("lenient");
        assert_eq!(
            config,
            ImageConfig {
                cmd: vec!["sh".into()],
                ..Default::default()
            }
        );
    }

    #[test]
    fn start_command_is_entrypoint_then_cmd() {
        let mut config = ImageConfig {
            entrypoint: vec!["/bin/app".into(), "--serve".into()],
            cmd: vec!["--port".into(), "8080".into()],
            ..Default::default()
        };
        assert_eq!(
            config.start_command(),
            vec!["/bin/app", "--serve", "--port", "8080"]
        );
        config.entrypoint.clear();
        assert_eq!(config.start_command(), vec!["--port", "8080"]);
        config.cmd.clear();
        assert!(config.start_command().is_empty());
    }

    #[test]
    fn env_pairs_split_at_the_first_equals_and_skip_malformed() {
        let config = ImageConfig {
            env: vec![
                "PATH=/bin".into(),
                "EQ=a=b".into(),
                "EMPTY=".into(),
                "NOVALUE".into(),
                "=x".into(),
            ],
            ..Default::default()
        };
        let pairs = config.env_pairs();
        let pairs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        assert_eq!(pairs, vec![("PATH", "/bin"), ("EQ", "a=b"), ("EMPTY", "")]);
    }

    #[test]
    fn staging_result_and_info_wire_format() {
        let result = StagingResult {
            detected_buildpack: "Static-sh".into(),
            start_command: "sh ./start.sh".into(),
            buildpack: "static-sh".into(),
            env: vec![EnvironmentVariable::new("A", "1")],
        };
        assert_eq!(
            serde_json::to_value(&result).expect("plain data"),
            json!({
                "detected_buildpack": "Static-sh",
                "start_command": "sh ./start.sh",
                "buildpack": "static-sh",
                "env": [{"name": "A", "value": "1"}]
            })
        );
        assert_eq!(
            serde_json::to_value(result.staging_info()).expect("plain data"),
            json!({
                "detected_buildpack": "Static-sh",
                "start_command": "sh ./start.sh",
                "env": [{"name": "A", "value": "1"}]
            })
        );
        let sparse: StagingInfo =
            serde_json::from_value(json!({"start_command": "x"})).expect("lenient");
        assert_eq!(sparse.start_command, "x");
        assert!(sparse.env.is_empty());
    }

    #[test]
    fn execution_metadata_from_image() {
        let config = ImageConfig {
            entrypoint: vec!["httpd".into()],
            cmd: vec!["-f".into(), "-p".into(), "8080".into()],
            env: vec!["GREETING=hello".into()],
            working_dir: "/www".into(),
            user: "nobody".into(),
            exposed_ports: vec![8080, 9090],
        };
        let metadata = ExecutionMetadata::from_image(&config);
        assert_eq!(
            serde_json::to_value(&metadata).expect("plain data"),
            json!({
                "start_command": ["httpd", "-f", "-p", "8080"],
                "ports": [8080, 9090],
                "user": "nobody",
                "working_dir": "/www",
                "env": [{"name": "GREETING", "value": "hello"}]
            })
        );
    }
}
