//! [`FileServer`]: the blob store, the droplets and the static directory
//! behind one handle, with the rules that tie them together.
//!
//! # On disk (under [`FileServerConfig::dir`])
//! - `blobs/<sha256>`: blobs uploaded as such (app bits, anything).
//! - `droplets/<sha256>`: droplet tarballs; two droplets with the same bytes
//!   share one file.
//! - `droplets.json`: the droplet index.
//!
//! Droplet blobs live apart from plain blobs so that deleting a droplet can
//! never delete a plain blob that happens to have the same bytes.

use std::path::{Component, Path, PathBuf};

use bytes::Bytes;
use futures::Stream;
use tokio::sync::Mutex;

use crate::archive::{check_archive, UnsafeArchive};
use crate::droplets::{Droplet, DropletIndex, DropletMetadata, DropletName, IndexError};
use crate::store::{BlobError, BlobInfo, BlobStore, BoxError, Sha256Hex};

/// Default upload limit: 1 GiB, above any droplet a buildpack makes.
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 1024 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct FileServerConfig {
    /// Where blobs, droplets and the droplet index are kept.
    pub dir: PathBuf,
    /// Served read-only under `/v1/static/` (the lifecycle binaries); none
    /// when unset.
    pub static_dir: Option<PathBuf>,
    /// Largest accepted upload, blob or droplet.
    pub max_upload_bytes: u64,
}

impl FileServerConfig {
    pub fn new(dir: impl Into<PathBuf>) -> FileServerConfig {
        FileServerConfig {
            dir: dir.into(),
            static_dir: None,
            max_upload_bytes: DEFAULT_MAX_UPLOAD_BYTES,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FileServerError {
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error(transparent)]
    Index(#[from] IndexError),
    /// The droplet upload is not a safe tar or gzip'd tar; nothing was
    /// stored.
    #[error("the droplet is refused: {0}")]
    UnsafeDroplet(#[source] UnsafeArchive),
    /// No droplet has this name.
    #[error("no droplet named {name}")]
    DropletNotFound { name: DropletName },
    /// The droplet is recorded but its bytes are gone from disk (removed by
    /// hand): a fault of the server, not of the client.
    #[error("droplet {name}'s bytes are missing from the store")]
    DropletBlobMissing { name: DropletName },
    /// The static path climbs, is absolute, or is empty.
    #[error("static path {path:?} must be relative, without `.` or `..` components")]
    InvalidStaticPath { path: String },
    /// Nothing (or nothing servable) under the static directory by that path.
    #[error("no static file {path:?}")]
    StaticNotFound { path: String },
    /// The static directory could not be read.
    #[error("static file i/o failed at {path}: {source}")]
    StaticIo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl FileServerError {
    pub fn is_too_large(&self) -> bool {
        matches!(self, FileServerError::Blob(BlobError::TooLarge { .. }))
    }
}

#[derive(Debug)]
pub struct FileServer {
    config: FileServerConfig,
    blobs: BlobStore,
    droplet_blobs: BlobStore,
    /// Held across the index write (an `.await`), hence tokio's mutex. Every
    /// change that makes a droplet blob appear or disappear happens under it,
    /// so a droplet never names a blob that a concurrent delete removed.
    droplets: Mutex<DropletIndex>,
}

impl FileServer {
    /// Opens (creating) the server's directory, removes interrupted uploads,
    /// and removes droplet blobs no droplet names (a crash between storing
    /// a droplet's bytes and recording it leaves one).
    pub async fn open(config: FileServerConfig) -> Result<FileServer, FileServerError> {
        let blobs = BlobStore::open_dir(config.dir.join("blobs")).await?;
        let droplet_blobs = BlobStore::open_dir(config.dir.join("droplets")).await?;
        let index = DropletIndex::load(config.dir.join("droplets.json")).await?;
        for sha256 in droplet_blobs.list().await? {
            if !index.references(&sha256) {
                tracing::info!(%sha256, "removing a droplet blob no droplet names");
                droplet_blobs.delete(&sha256).await?;
            }
        }
        Ok(FileServer {
            config,
            blobs,
            droplet_blobs,
            droplets: Mutex::new(index),
        })
    }

    pub fn config(&self) -> &FileServerConfig {
        &self.config
    }

    pub fn max_upload_bytes(&self) -> u64 {
        self.config.max_upload_bytes
    }

    // --- blobs ---------------------------------------------------------------

    /// Stores `body` as a blob; see [`BlobStore::put`].
    pub async fn put_blob<S, E>(
        &self,
        body: S,
        expected: Option<&Sha256Hex>,
    ) -> Result<BlobInfo, FileServerError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: Into<BoxError>,
    {
        Ok(self
            .blobs
            .put(body, expected, self.config.max_upload_bytes)
            .await?)
    }

    pub async fn open_blob(
        &self,
        sha256: &Sha256Hex,
    ) -> Result<(tokio::fs::File, u64), FileServerError> {
        Ok(self.blobs.open(sha256).await?)
    }

    pub async fn delete_blob(&self, sha256: &Sha256Hex) -> Result<(), FileServerError> {
        Ok(self.blobs.delete(sha256).await?)
    }

    // --- droplets --------------------------------------------------------------

    /// Stores `body` as the droplet `name`, replacing any droplet of that
    /// name; returns it and whether it replaced one.
    ///
    /// # Errors
    /// The blob store's errors for the body (too large, wrong checksum,
    /// broken body); [`FileServerError::UnsafeDroplet`] when it is not a safe
    /// tar or gzip'd tar (see [`crate::archive`]).
    ///
    /// # Guarantees
    /// A refused upload stores nothing and leaves any droplet of that name
    /// as it was.
    pub async fn put_droplet<S, E>(
        &self,
        name: &DropletName,
        body: S,
        expected: Option<&Sha256Hex>,
        metadata: DropletMetadata,
    ) -> Result<(Droplet, bool), FileServerError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: Into<BoxError>,
    {
        let staged = self
            .droplet_blobs
            .stage(body, expected, self.config.max_upload_bytes)
            .await?;
        let path = staged.path().to_path_buf();
        tokio::task::spawn_blocking(move || {
            let file = std::fs::File::open(&path)?;
            Ok::<_, std::io::Error>(check_archive(std::io::BufReader::new(file)))
        })
        .await
        .map_err(|join| self.droplet_io_error(std::io::Error::other(join)))?
        .map_err(|source| self.droplet_io_error(source))?
        .map_err(FileServerError::UnsafeDroplet)?;

        let mut droplet = Droplet {
            name: name.clone(),
            sha256: staged.info().sha256.clone(),
            size: staged.info().size,
            created_at: lattice_models::unix_nanos(std::time::SystemTime::now()),
            buildpack: None,
            start_command: None,
            stack: None,
        };
        droplet.set_metadata(metadata);

        let mut index = self.droplets.lock().await;
        self.droplet_blobs.commit(staged).await?;
        let previous = match index.insert(droplet.clone()).await {
            Ok(previous) => previous,
            Err(err) => {
                self.forget_unreferenced(&index, &droplet.sha256).await;
                return Err(err.into());
            }
        };
        if let Some(previous) = &previous {
            self.forget_unreferenced(&index, &previous.sha256).await;
        }
        tracing::info!(droplet = %name, sha256 = %droplet.sha256, size = droplet.size, "stored droplet");
        Ok((droplet, previous.is_some()))
    }

    /// Every droplet, sorted by name.
    pub async fn droplets(&self) -> Vec<Droplet> {
        self.droplets.lock().await.list()
    }

    pub async fn droplet(&self, name: &DropletName) -> Result<Droplet, FileServerError> {
        self.droplets
            .lock()
            .await
            .get(name)
            .cloned()
            .ok_or_else(|| FileServerError::DropletNotFound { name: name.clone() })
    }

    /// Replaces a droplet's metadata.
    pub async fn set_droplet_metadata(
        &self,
        name: &DropletName,
        metadata: DropletMetadata,
    ) -> Result<Droplet, FileServerError> {
        let mut index = self.droplets.lock().await;
        let mut droplet = index
            .get(name)
            .cloned()
            .ok_or_else(|| FileServerError::DropletNotFound { name: name.clone() })?;
        droplet.set_metadata(metadata);
        index.insert(droplet.clone()).await?;
        Ok(droplet)
    }

    /// The droplet and its tarball, opened for reading.
    ///
    /// # Guarantees
    /// The file is opened under the index lock, so a concurrent delete or
    /// replacement cannot remove it in between; once open, it reads to the
    /// end even if the droplet is deleted meanwhile.
    pub async fn open_droplet(
        &self,
        name: &DropletName,
    ) -> Result<(Droplet, tokio::fs::File, u64), FileServerError> {
        let index = self.droplets.lock().await;
        let droplet = index
            .get(name)
            .cloned()
            .ok_or_else(|| FileServerError::DropletNotFound { name: name.clone() })?;
        match self.droplet_blobs.open(&droplet.sha256).await {
            Ok((file, size)) => Ok((droplet, file, size)),
            Err(BlobError::NotFound { .. }) => {
                tracing::error!(droplet = %name, sha256 = %droplet.sha256, "a droplet's blob is missing");
                Err(FileServerError::DropletBlobMissing { name: name.clone() })
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Deletes the droplet, and its bytes when no other droplet shares them.
    pub async fn delete_droplet(&self, name: &DropletName) -> Result<Droplet, FileServerError> {
        let mut index = self.droplets.lock().await;
        let removed = index
            .remove(name)
            .await?
            .ok_or_else(|| FileServerError::DropletNotFound { name: name.clone() })?;
        self.forget_unreferenced(&index, &removed.sha256).await;
        tracing::info!(droplet = %name, "deleted droplet");
        Ok(removed)
    }

    /// Deletes a droplet blob no droplet names. A failure is logged, not
    /// returned: the droplet change it follows is already done, and the next
    /// start removes the blob.
    async fn forget_unreferenced(&self, index: &DropletIndex, sha256: &Sha256Hex) {
        if index.references(sha256) {
            return;
        }
        match self.droplet_blobs.delete(sha256).await {
            Ok(()) | Err(BlobError::NotFound { .. }) => {}
            Err(error) => tracing::warn!(%sha256, %error, "could not delete a droplet blob"),
        }
    }

    fn droplet_io_error(&self, source: std::io::Error) -> FileServerError {
        FileServerError::Blob(BlobError::Io {
            path: self.droplet_blobs.dir().to_path_buf(),
            source,
        })
    }

    // --- static files ------------------------------------------------------------

    /// A file under the static directory, opened for reading.
    ///
    /// # Errors
    /// [`FileServerError::InvalidStaticPath`] for a path with a root, `.` or
    /// `..`; [`FileServerError::StaticNotFound`] when there is no static
    /// directory, no such regular file, or the path resolves (through a
    /// symbolic link) outside the directory.
    pub async fn open_static(&self, path: &str) -> Result<(tokio::fs::File, u64), FileServerError> {
        let relative = static_relative_path(path)?;
        let not_found = || FileServerError::StaticNotFound {
            path: path.to_string(),
        };
        let dir = self.config.static_dir.as_ref().ok_or_else(not_found)?;
        let root = canonical(dir).await?.ok_or_else(not_found)?;
        let resolved = canonical(&root.join(&relative))
            .await?
            .ok_or_else(not_found)?;
        if !resolved.starts_with(&root) {
            tracing::warn!(path, resolved = %resolved.display(), "refused a static file outside the static directory");
            return Err(not_found());
        }
        // The resolved path, so what is opened is what was checked.
        let file =
            tokio::fs::File::open(&resolved)
                .await
                .map_err(|source| FileServerError::StaticIo {
                    path: resolved.clone(),
                    source,
                })?;
        let meta = file
            .metadata()
            .await
            .map_err(|source| FileServerError::StaticIo {
                path: resolved.clone(),
                source,
            })?;
        if !meta.is_file() {
            return Err(not_found());
        }
        Ok((file, meta.len()))
    }
}

/// `path` as plain names; anything else is refused before touching the disk.
fn static_relative_path(path: &str) -> Result<PathBuf, FileServerError> {
    let invalid = || FileServerError::InvalidStaticPath {
        path: path.to_string(),
    };
    if path.is_empty() || path.contains('\0') {
        return Err(invalid());
    }
    // Split by hand: `Path::components` silently drops `.` in the middle.
    let mut relative = PathBuf::new();
    for part in path.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err(invalid());
        }
        relative.push(part);
    }
    match relative
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
    {
        true => Ok(relative),
        false => Err(invalid()),
    }
}

/// The canonical form of `path`, or none when it does not exist.
async fn canonical(path: &Path) -> Result<Option<PathBuf>, FileServerError> {
    match tokio::fs::canonicalize(path).await {
        Ok(resolved) => Ok(Some(resolved)),
        // `a/b` where `a` is a file.
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            Ok(None)
        }
        Err(source) => Err(FileServerError::StaticIo {
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_paths() {
        for good in ["builder", "docker/launcher", "a.b..c"] {
            assert!(static_relative_path(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "..",
            "../x",
            "a/../b",
            "/etc/passwd",
            "a//b",
            "./a",
            "a/.",
            "a\0b",
        ] {
            assert!(static_relative_path(bad).is_err(), "{bad:?}");
        }
    }
}
