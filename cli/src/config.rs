//! Where ltc sends its requests: the target URL and optional credentials.
//!
//! They are saved by `ltc target` as JSON in `config.json` in the config dir
//! (`LTC_CONFIG_DIR`, else the platform's, e.g. `~/.config/ltc`), and can be
//! overridden per command by `LTC_TARGET`, `LTC_USERNAME` and `LTC_PASSWORD`.
//!
//! # Guarantees
//! - The file is written with mode 0600 (it may hold a password) by a rename,
//!   so a crash never leaves a half-written config behind.
//! - Saved credentials are only sent to the saved target: when `LTC_TARGET`
//!   names another receptor, only `LTC_USERNAME`/`LTC_PASSWORD` apply.

use std::io::Write;
use std::path::{Path, PathBuf};

use lattice_client::Credentials;
use serde::{Deserialize, Serialize};

/// The receptor `lattice up` listens on by default.
pub const DEFAULT_TARGET: &str = "http://127.0.0.1:8888";

pub const ENV_CONFIG_DIR: &str = "LTC_CONFIG_DIR";
pub const ENV_TARGET: &str = "LTC_TARGET";
pub const ENV_USERNAME: &str = "LTC_USERNAME";
pub const ENV_PASSWORD: &str = "LTC_PASSWORD";

const FILE_NAME: &str = "config.json";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Neither `LTC_CONFIG_DIR` nor a home directory is known.
    #[error("cannot find a config directory; set {ENV_CONFIG_DIR}")]
    NoConfigDir,
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid ltc config; fix or delete it")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid target {target:?}: {reason}")]
    InvalidTarget {
        target: String,
        reason: &'static str,
    },
}

/// The content of `config.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

impl SavedConfig {
    pub fn credentials(&self) -> Option<Credentials> {
        self.username
            .as_ref()
            .map(|u| Credentials::new(u, self.password.clone().unwrap_or_default()))
    }
}

/// Where a setting came from, so that `ltc target` can say why it is what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Default,
    File,
    Env,
}

/// The target in force for this command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub url: String,
    pub credentials: Option<Credentials>,
    pub source: Source,
}

/// The config file, located but not necessarily existing.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    path: PathBuf,
}

impl ConfigFile {
    /// `$LTC_CONFIG_DIR/config.json`, else the platform's config dir.
    pub fn locate(env: &dyn Fn(&str) -> Option<String>) -> Result<ConfigFile, ConfigError> {
        let dir = match env(ENV_CONFIG_DIR).filter(|d| !d.is_empty()) {
            Some(dir) => PathBuf::from(dir),
            None => directories::ProjectDirs::from("io", "lattice", "ltc")
                .ok_or(ConfigError::NoConfigDir)?
                .config_dir()
                .to_path_buf(),
        };
        Ok(ConfigFile::in_dir(&dir))
    }

    pub fn in_dir(dir: &Path) -> ConfigFile {
        ConfigFile {
            path: dir.join(FILE_NAME),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved config; an absent file is an empty config.
    pub fn load(&self) -> Result<SavedConfig, ConfigError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(SavedConfig::default()),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        serde_json::from_slice(&bytes).map_err(|source| ConfigError::Parse {
            path: self.path.clone(),
            source,
        })
    }

    /// Writes `config` with mode 0600, replacing the file atomically.
    pub fn save(&self, config: &SavedConfig) -> Result<(), ConfigError> {
        let write_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ConfigError::Write { path, source }
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        create_private_dir(dir).map_err(write_err(dir))?;
        let tmp = self.path.with_extension("json.tmp");
        let mut json = serde_json::to_vec_pretty(config)
            // Strings and options only: serialising cannot fail.
            .expect("a SavedConfig always serialises");
        json.push(b'\n');
        let mut file = open_private(&tmp).map_err(write_err(&tmp))?;
        file.write_all(&json)
            .and_then(|()| file.sync_all())
            .map_err(write_err(&tmp))?;
        std::fs::rename(&tmp, &self.path).map_err(write_err(&self.path))
    }
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

#[cfg(unix)]
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // `mode` applies only when the file is created; a leftover temp file may
    // have been made by hand with other bits.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(file)
}

#[cfg(not(unix))]
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::File::create(path)
}

/// The target in force: `LTC_TARGET` over the saved one over the default;
/// `LTC_USERNAME`/`LTC_PASSWORD` over the saved credentials.
pub fn resolve(
    saved: &SavedConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Target, ConfigError> {
    let saved_url = saved.target.as_deref().map(normalize_target).transpose()?;
    let env_url = env(ENV_TARGET)
        .filter(|t| !t.is_empty())
        .map(|t| normalize_target(&t))
        .transpose()?;
    let (url, source) = match (env_url, &saved_url) {
        (Some(url), _) => (url, Source::Env),
        (None, Some(url)) => (url.clone(), Source::File),
        (None, None) => (DEFAULT_TARGET.to_string(), Source::Default),
    };
    // Saved credentials belong to the saved target and go nowhere else.
    let saved_credentials = if saved_url.as_deref() == Some(url.as_str()) {
        saved.credentials()
    } else {
        None
    };
    let credentials = match (env(ENV_USERNAME), env(ENV_PASSWORD)) {
        (Some(username), password) => {
            Some(Credentials::new(username, password.unwrap_or_default()))
        }
        (None, Some(password)) => saved_credentials.map(|c| Credentials::new(c.username, password)),
        (None, None) => saved_credentials,
    };
    Ok(Target {
        url,
        credentials,
        source,
    })
}

/// `host:port` becomes `http://host:port`; a trailing `/` goes. Anything
/// else is checked by the client when it is used.
pub fn normalize_target(target: &str) -> Result<String, ConfigError> {
    let target = target.trim();
    if target.is_empty() {
        return Err(ConfigError::InvalidTarget {
            target: target.to_string(),
            reason: "must not be empty",
        });
    }
    let url = if target.contains("://") {
        target.to_string()
    } else {
        format!("http://{target}")
    };
    Ok(url.trim_end_matches('/').to_string())
}

/// Reads the process environment; tests pass their own lookup instead.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn config_dir_override() {
        let dir = tempfile::tempdir().unwrap();
        let dir_str = dir.path().to_str().unwrap();
        let file = ConfigFile::locate(&env_of(&[(ENV_CONFIG_DIR, dir_str)])).unwrap();
        assert_eq!(file.path(), dir.path().join("config.json"));
    }

    #[test]
    fn missing_file_is_empty_config() {
        let dir = tempfile::tempdir().unwrap();
        let file = ConfigFile::in_dir(&dir.path().join("not-yet"));
        assert_eq!(file.load().unwrap(), SavedConfig::default());
        let target = resolve(&file.load().unwrap(), &env_of(&[])).unwrap();
        assert_eq!(target.url, DEFAULT_TARGET);
        assert_eq!(target.source, Source::Default);
        assert_eq!(target.credentials, None);
    }

    #[test]
    fn save_and_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let file = ConfigFile::in_dir(&dir.path().join("nested/dir"));
        let config = SavedConfig {
            target: Some("http://10.0.0.1:8888".into()),
            username: Some("admin".into()),
            password: Some("s3cret".into()),
        };
        file.save(&config).unwrap();
        assert_eq!(file.load().unwrap(), config);
        let target = resolve(&config, &env_of(&[])).unwrap();
        assert_eq!(target.source, Source::File);
        assert_eq!(
            target.credentials,
            Some(Credentials::new("admin", "s3cret"))
        );
    }

    #[cfg(unix)]
    #[test]
    fn file_with_credentials_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = ConfigFile::in_dir(dir.path());
        // A pre-existing world-readable file must not stay world-readable.
        std::fs::write(file.path(), "{}").unwrap();
        std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
        file.save(&SavedConfig {
            target: Some("http://x:1".into()),
            username: Some("u".into()),
            password: Some("p".into()),
        })
        .unwrap();
        let mode = std::fs::metadata(file.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn damaged_file_names_itself() {
        let dir = tempfile::tempdir().unwrap();
        let file = ConfigFile::in_dir(dir.path());
        std::fs::write(file.path(), "{not json").unwrap();
        let err = file.load().unwrap_err();
        assert!(err.to_string().contains("config.json"), "{err}");
    }

    #[test]
    fn env_overrides_target_and_credentials() {
        let saved = SavedConfig {
            target: Some("http://saved:1".into()),
            username: Some("saved-user".into()),
            password: Some("saved-pass".into()),
        };
        let target = resolve(
            &saved,
            &env_of(&[
                (ENV_TARGET, "other:2"),
                (ENV_USERNAME, "env-user"),
                (ENV_PASSWORD, "env-pass"),
            ]),
        )
        .unwrap();
        assert_eq!(target.url, "http://other:2");
        assert_eq!(target.source, Source::Env);
        assert_eq!(
            target.credentials,
            Some(Credentials::new("env-user", "env-pass"))
        );
    }

    #[test]
    fn saved_credentials_stay_with_the_saved_target() {
        let saved = SavedConfig {
            target: Some("http://saved:1".into()),
            username: Some("u".into()),
            password: Some("p".into()),
        };
        let elsewhere = resolve(&saved, &env_of(&[(ENV_TARGET, "http://other:2")])).unwrap();
        assert_eq!(elsewhere.credentials, None);
        let same = resolve(&saved, &env_of(&[(ENV_TARGET, "saved:1/")])).unwrap();
        assert_eq!(same.credentials, Some(Credentials::new("u", "p")));
        let new_password = resolve(&saved, &env_of(&[(ENV_PASSWORD, "q")])).unwrap();
        assert_eq!(new_password.credentials, Some(Credentials::new("u", "q")));
    }

    #[test]
    fn bare_host_port_gets_http() {
        assert_eq!(
            normalize_target("127.0.0.1:8888").unwrap(),
            "http://127.0.0.1:8888"
        );
        assert_eq!(
            normalize_target("localhost:8888/").unwrap(),
            "http://localhost:8888"
        );
        assert_eq!(normalize_target("http://h:1").unwrap(), "http://h:1");
        assert!(normalize_target("  ").is_err());
    }
}
