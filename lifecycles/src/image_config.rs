//! Reading the image config that Garden writes into every container at
//! [`IMAGE_CONFIG_PATH`].

use std::path::{Path, PathBuf};

pub use lattice_models::lifecycle::{ImageConfig, IMAGE_CONFIG_PATH};

/// Why the image config could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file is missing or unreadable (not a container Garden made?).
    #[error("read image config {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not the JSON of an [`ImageConfig`].
    #[error("parse image config {}: {source}", path.display())]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// Reads and parses the image config at `path`.
///
/// # Errors
/// See [`ConfigError`].
pub fn read(path: &Path) -> Result<ImageConfig, ConfigError> {
    let text = std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&text).map_err(|source| ConfigError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_config_and_names_the_file_on_error() {
        let dir = tempfile::tempdir().expect("temp dir is writable");
        let path = dir.path().join("image-config.json");
        std::fs::write(&path, r#"{"cmd": ["sh"], "exposed_ports": [8080]}"#).expect("writable");
        let config = read(&path).expect("valid");
        assert_eq!(config.cmd, vec!["sh"]);
        assert_eq!(config.exposed_ports, vec![8080]);

        std::fs::write(&path, "{").expect("writable");
        let err = read(&path).expect_err("truncated json");
        assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
        let missing = read(&dir.path().join("missing.json")).expect_err("no such file");
        assert!(missing.to_string().contains("missing.json"), "{missing}");
    }
}
