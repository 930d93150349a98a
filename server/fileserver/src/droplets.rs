//! Named droplets: `name -> {sha256, size, created_at, buildpack,
//! start_command, stack}`, kept as one small JSON file.
//!
//! The index is the only record of which droplet blob belongs to which name,
//! so every change is written to a temporary file, flushed, and renamed over
//! the old index: a crash leaves the old index or the new one, never half of
//! one. Callers serialize changes (the file server holds the index in a
//! mutex); the in-memory copy changes only once the file was written.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::store::Sha256Hex;

// The names and records are wire types, shared with the client.
pub use lattice_models::droplet::{
    Droplet, DropletMetadata, DropletName, InvalidDropletName, MAX_NAME_LEN,
};

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The index file could not be read or written.
    #[error("droplet index i/o failed at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The index file is not what this version writes; it is left as it is
    /// rather than replaced, so no droplet record is lost.
    #[error("droplet index {path} is unreadable: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// The file's shape; versioned so a later format can read this one.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct IndexFile {
    version: u32,
    droplets: Vec<Droplet>,
}

const INDEX_VERSION: u32 = 1;

#[derive(Debug)]
pub struct DropletIndex {
    path: PathBuf,
    droplets: BTreeMap<DropletName, Droplet>,
}

impl DropletIndex {
    /// Reads the index at `path`; a missing file is an empty index.
    pub async fn load(path: impl Into<PathBuf>) -> Result<DropletIndex, IndexError> {
        let path = path.into();
        let droplets = match tokio::fs::read(&path).await {
            Ok(bytes) => {
                let file: IndexFile =
                    serde_json::from_slice(&bytes).map_err(|source| IndexError::Corrupt {
                        path: path.clone(),
                        source,
                    })?;
                file.droplets
                    .into_iter()
                    .map(|d| (d.name.clone(), d))
                    .collect()
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => return Err(IndexError::Io { path, source }),
        };
        Ok(DropletIndex { path, droplets })
    }

    pub fn get(&self, name: &DropletName) -> Option<&Droplet> {
        self.droplets.get(name)
    }

    /// Every droplet, sorted by name.
    pub fn list(&self) -> Vec<Droplet> {
        self.droplets.values().cloned().collect()
    }

    /// Whether any droplet's bytes are the blob `sha256`.
    pub fn references(&self, sha256: &Sha256Hex) -> bool {
        self.droplets.values().any(|d| d.sha256 == *sha256)
    }

    /// Adds or replaces a droplet and writes the index; returns the one it
    /// replaced.
    ///
    /// # Errors
    /// [`IndexError::Io`]; the index is then unchanged, in memory and on disk.
    pub async fn insert(&mut self, droplet: Droplet) -> Result<Option<Droplet>, IndexError> {
        let mut next = self.droplets.clone();
        let previous = next.insert(droplet.name.clone(), droplet);
        self.save(next).await?;
        Ok(previous)
    }

    /// Removes a droplet and writes the index; returns it, if it was there.
    ///
    /// # Errors
    /// As [`DropletIndex::insert`].
    pub async fn remove(&mut self, name: &DropletName) -> Result<Option<Droplet>, IndexError> {
        if !self.droplets.contains_key(name) {
            return Ok(None);
        }
        let mut next = self.droplets.clone();
        let removed = next.remove(name);
        self.save(next).await?;
        Ok(removed)
    }

    async fn save(&mut self, next: BTreeMap<DropletName, Droplet>) -> Result<(), IndexError> {
        let file = IndexFile {
            version: INDEX_VERSION,
            droplets: next.values().cloned().collect(),
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(|source| IndexError::Io {
            path: self.path.clone(),
            source: io::Error::other(source),
        })?;
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || write_atomically(&path, &bytes))
            .await
            .map_err(|join| IndexError::Io {
                path: self.path.clone(),
                source: io::Error::other(join),
            })??;
        self.droplets = next;
        Ok(())
    }
}

/// Writes `bytes` to `path` by way of a flushed temporary file in the same
/// directory, so the rename is atomic and durable.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), IndexError> {
    let io_error = |source| IndexError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut temp = tempfile::Builder::new()
        .prefix(".droplets-")
        .tempfile_in(dir)
        .map_err(io_error)?;
    temp.write_all(bytes).map_err(io_error)?;
    temp.as_file().sync_all().map_err(io_error)?;
    temp.persist(path).map_err(|e| io_error(e.error))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn droplet(name: &str, bytes: &[u8]) -> Droplet {
        Droplet {
            name: DropletName::parse(name).unwrap(),
            sha256: Sha256Hex::of_bytes(bytes),
            size: bytes.len() as u64,
            created_at: 1,
            buildpack: Some("go".into()),
            start_command: None,
            stack: Some("cflinuxfs4".into()),
        }
    }

    #[test]
    fn names() {
        for good in ["a", "my-app_2", &"x".repeat(MAX_NAME_LEN)] {
            assert!(DropletName::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "a/b",
            "..",
            "a b",
            "é",
            "a.tgz",
            &"x".repeat(MAX_NAME_LEN + 1),
        ] {
            assert!(DropletName::parse(bad).is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<DropletName>("\"../x\"").is_err());
    }

    #[tokio::test]
    async fn index_survives_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("droplets.json");
        let mut index = DropletIndex::load(&path).await.unwrap();
        assert!(index.list().is_empty());
        let a = droplet("a", b"one");
        assert_eq!(index.insert(a.clone()).await.unwrap(), None);
        index.insert(droplet("b", b"two")).await.unwrap();
        let replaced = index.insert(droplet("a", b"three")).await.unwrap();
        assert_eq!(replaced, Some(a));
        assert!(index.references(&Sha256Hex::of_bytes(b"two")));
        assert!(!index.references(&Sha256Hex::of_bytes(b"one")));
        index
            .remove(&DropletName::parse("b").unwrap())
            .await
            .unwrap();

        let reloaded = DropletIndex::load(&path).await.unwrap();
        assert_eq!(reloaded.list(), vec![droplet("a", b"three")]);
        // Only the index itself: no temporary files left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[tokio::test]
    async fn a_failed_write_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        // The index's directory does not exist, so every write fails.
        let path = dir.path().join("missing/droplets.json");
        let mut index = DropletIndex::load(&path).await.unwrap();
        let err = index.insert(droplet("a", b"one")).await.unwrap_err();
        assert!(matches!(err, IndexError::Io { .. }), "{err}");
        assert!(index.list().is_empty());
    }

    #[tokio::test]
    async fn a_corrupt_index_is_an_error_not_an_empty_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("droplets.json");
        std::fs::write(&path, b"{not json").unwrap();
        let err = DropletIndex::load(&path).await.unwrap_err();
        assert!(matches!(err, IndexError::Corrupt { .. }), "{err}");
    }
}
