//! A content-addressed blob store in one directory: each blob is a file
//! named by the SHA-256 of its bytes.
//!
//! An upload is streamed into a temporary file in the same directory while
//! it is hashed and counted, and renamed to its digest only once it is
//! complete, within the size limit, and (when the uploader said what to
//! expect) matches the expected digest. A corrupted, partial or oversized
//! upload is therefore never visible under a digest.
//!
//! # Assumptions
//! One store per directory: opening a store removes the temporary files of
//! uploads a crash left behind, which would break another live store's
//! uploads in the same directory.

use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncWriteExt, BufWriter};

// The digest and blob record are wire types, shared with the client.
pub use lattice_models::droplet::{BlobInfo, InvalidSha256, Sha256Hex};

/// Any error a body stream can yield.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Names of uploads in progress start with this; a digest never does, so a
/// temporary file is never served.
const TEMP_PREFIX: &str = ".upload-";

/// Write buffer for uploads: large enough that small body chunks do not each
/// cost a system call.
const WRITE_BUFFER: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The upload went over the size limit; nothing was stored.
    #[error("the upload is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    /// The upload's bytes do not have the digest the uploader sent; nothing
    /// was stored.
    #[error(
        "the upload's sha256 is {actual}, not the {expected} it was sent with; nothing was stored"
    )]
    ChecksumMismatch {
        expected: Sha256Hex,
        actual: Sha256Hex,
    },
    /// No blob has this digest.
    #[error("no blob has sha256 {sha256}")]
    NotFound { sha256: Sha256Hex },
    /// The upload's body failed (the client went away, or sent a broken
    /// body); nothing was stored.
    #[error("reading the upload failed after {received} bytes: {source}")]
    Body {
        received: u64,
        #[source]
        source: BoxError,
    },
    /// The store's directory could not be read or written.
    #[error("blob store i/o failed at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// An upload that is complete and verified but not yet visible under its
/// digest; dropping it deletes its temporary file.
#[derive(Debug)]
pub struct StagedBlob {
    temp: tempfile::TempPath,
    info: BlobInfo,
}

impl StagedBlob {
    pub fn info(&self) -> &BlobInfo {
        &self.info
    }

    /// The temporary file, to inspect before committing.
    pub fn path(&self) -> &Path {
        &self.temp
    }
}

#[derive(Debug)]
pub struct BlobStore {
    dir: PathBuf,
}

impl BlobStore {
    /// Opens the store in `dir` (created if missing) and removes the
    /// temporary files of uploads a crash left behind.
    pub async fn open_dir(dir: impl Into<PathBuf>) -> Result<BlobStore, BlobError> {
        let dir = dir.into();
        tokio::fs::create_dir_all(&dir).await.map_err(io_at(&dir))?;
        let mut entries = tokio::fs::read_dir(&dir).await.map_err(io_at(&dir))?;
        while let Some(entry) = entries.next_entry().await.map_err(io_at(&dir))? {
            if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                let path = entry.path();
                tracing::info!(path = %path.display(), "removing an interrupted upload");
                tokio::fs::remove_file(&path).await.map_err(io_at(&path))?;
            }
        }
        Ok(BlobStore { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stores `body` under its digest: [`BlobStore::stage`] then
    /// [`BlobStore::commit`].
    ///
    /// # Errors
    /// As [`BlobStore::stage`]; nothing is stored on any error.
    pub async fn put<S, E>(
        &self,
        body: S,
        expected: Option<&Sha256Hex>,
        limit: u64,
    ) -> Result<BlobInfo, BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: Into<BoxError>,
    {
        let staged = self.stage(body, expected, limit).await?;
        self.commit(staged).await
    }

    /// Streams `body` into a temporary file while hashing it.
    ///
    /// # Errors
    /// [`BlobError::TooLarge`] as soon as more than `limit` bytes arrived;
    /// [`BlobError::ChecksumMismatch`] when `expected` is given and differs;
    /// [`BlobError::Body`] when the body fails. The temporary file is deleted
    /// on every error.
    ///
    /// # Assumptions
    /// Safe to cancel at any `.await`: the temporary file is deleted when the
    /// future is dropped.
    pub async fn stage<S, E>(
        &self,
        mut body: S,
        expected: Option<&Sha256Hex>,
        limit: u64,
    ) -> Result<StagedBlob, BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: Into<BoxError>,
    {
        let dir = self.dir.clone();
        let (file, temp) = tokio::task::spawn_blocking(move || {
            tempfile::Builder::new()
                .prefix(TEMP_PREFIX)
                .tempfile_in(&dir)
                .map(tempfile::NamedTempFile::into_parts)
                .map_err(io_at(&dir))
        })
        .await
        .map_err(|join| self.io_error(io::Error::other(join)))??;
        let temp_path = temp.to_path_buf();
        let mut writer = BufWriter::with_capacity(WRITE_BUFFER, tokio::fs::File::from_std(file));
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|source| BlobError::Body {
                received: size,
                source: source.into(),
            })?;
            size = size.saturating_add(chunk.len() as u64);
            if size > limit {
                return Err(BlobError::TooLarge { limit });
            }
            hasher.update(&chunk);
            writer.write_all(&chunk).await.map_err(io_at(&temp_path))?;
        }
        writer.flush().await.map_err(io_at(&temp_path))?;
        // On disk before it gets a name: a crash after the rename must not
        // leave a digest naming a file with missing bytes.
        writer
            .get_ref()
            .sync_all()
            .await
            .map_err(io_at(&temp_path))?;
        let info = BlobInfo {
            sha256: Sha256Hex::from_hasher(hasher),
            size,
        };
        if let Some(expected) = expected {
            if *expected != info.sha256 {
                return Err(BlobError::ChecksumMismatch {
                    expected: expected.clone(),
                    actual: info.sha256,
                });
            }
        }
        Ok(StagedBlob { temp, info })
    }

    /// Makes a staged upload visible under its digest, atomically.
    ///
    /// # Guarantees
    /// Readers see the whole blob or none: the file is renamed into place.
    /// Storing bytes that are already there replaces them with the same
    /// bytes; readers of the old file keep reading it.
    pub async fn commit(&self, staged: StagedBlob) -> Result<BlobInfo, BlobError> {
        let StagedBlob { temp, info } = staged;
        let path = self.path(&info.sha256);
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || {
            temp.persist(&path).map_err(|err| io_at(&path)(err.error))?;
            sync_dir(&dir)
        })
        .await
        .map_err(|join| self.io_error(io::Error::other(join)))??;
        Ok(info)
    }

    /// The blob's file, opened for reading, and its size.
    ///
    /// # Errors
    /// [`BlobError::NotFound`] when no blob has this digest.
    pub async fn open(&self, sha256: &Sha256Hex) -> Result<(tokio::fs::File, u64), BlobError> {
        let path = self.path(sha256);
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|source| self.not_found_or(sha256, &path, source))?;
        let size = file.metadata().await.map_err(io_at(&path))?.len();
        Ok((file, size))
    }

    /// The blob's size, without opening it.
    pub async fn size(&self, sha256: &Sha256Hex) -> Result<u64, BlobError> {
        let path = self.path(sha256);
        let meta = tokio::fs::metadata(&path)
            .await
            .map_err(|source| self.not_found_or(sha256, &path, source))?;
        Ok(meta.len())
    }

    /// Deletes the blob; readers that already opened it keep reading it.
    ///
    /// # Errors
    /// [`BlobError::NotFound`] when no blob has this digest.
    pub async fn delete(&self, sha256: &Sha256Hex) -> Result<(), BlobError> {
        let path = self.path(sha256);
        tokio::fs::remove_file(&path)
            .await
            .map_err(|source| self.not_found_or(sha256, &path, source))
    }

    /// The digests of every stored blob, sorted.
    pub async fn list(&self) -> Result<Vec<Sha256Hex>, BlobError> {
        let mut entries = tokio::fs::read_dir(&self.dir)
            .await
            .map_err(io_at(&self.dir))?;
        let mut digests = Vec::new();
        while let Some(entry) = entries.next_entry().await.map_err(io_at(&self.dir))? {
            if let Some(sha256) = entry
                .file_name()
                .to_str()
                .and_then(|name| Sha256Hex::parse(name).ok())
            {
                digests.push(sha256);
            }
        }
        digests.sort();
        Ok(digests)
    }

    /// Where the blob lives; the digest is hex, so it is a safe file name.
    pub fn path(&self, sha256: &Sha256Hex) -> PathBuf {
        self.dir.join(sha256.as_str())
    }

    fn not_found_or(&self, sha256: &Sha256Hex, path: &Path, source: io::Error) -> BlobError {
        if source.kind() == io::ErrorKind::NotFound {
            BlobError::NotFound {
                sha256: sha256.clone(),
            }
        } else {
            io_at(path)(source)
        }
    }

    fn io_error(&self, source: io::Error) -> BlobError {
        BlobError::Io {
            path: self.dir.clone(),
            source,
        }
    }
}

/// Makes a rename in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), BlobError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_at(dir))
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> BlobError + '_ {
    move |source| BlobError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: &[&[u8]]) -> impl Stream<Item = Result<Bytes, io::Error>> + Unpin {
        futures::stream::iter(
            parts
                .iter()
                .map(|part| Ok(Bytes::copy_from_slice(part)))
                .collect::<Vec<_>>(),
        )
    }

    fn files_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn put_open_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open_dir(dir.path()).await.unwrap();
        let info = store
            .put(chunks(&[b"hello ", b"world"]), None, 100)
            .await
            .unwrap();
        assert_eq!(info.size, 11);
        assert_eq!(info.sha256, Sha256Hex::of_bytes(b"hello world"));
        assert_eq!(files_in(dir.path()), vec![info.sha256.to_string()]);

        let (mut file, size) = store.open(&info.sha256).await.unwrap();
        let mut read = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut file, &mut read)
            .await
            .unwrap();
        assert_eq!((read.as_slice(), size), (&b"hello world"[..], 11));
        assert_eq!(store.list().await.unwrap(), vec![info.sha256.clone()]);

        store.delete(&info.sha256).await.unwrap();
        assert!(matches!(
            store.open(&info.sha256).await,
            Err(BlobError::NotFound { .. })
        ));
        assert!(matches!(
            store.delete(&info.sha256).await,
            Err(BlobError::NotFound { .. })
        ));
    }

    #[tokio::test]
    async fn refused_uploads_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open_dir(dir.path()).await.unwrap();
        let wrong = Sha256Hex::of_bytes(b"something else");
        let err = store
            .put(chunks(&[b"hello"]), Some(&wrong), 100)
            .await
            .unwrap_err();
        assert!(matches!(err, BlobError::ChecksumMismatch { .. }), "{err}");

        let err = store
            .put(chunks(&[b"12345", b"67890", b"x"]), None, 10)
            .await
            .unwrap_err();
        assert!(matches!(err, BlobError::TooLarge { limit: 10 }), "{err}");

        let broken = futures::stream::iter(vec![
            Ok(Bytes::from_static(b"part")),
            Err(io::Error::other("connection reset")),
        ]);
        let err = store.put(broken, None, 100).await.unwrap_err();
        assert!(matches!(err, BlobError::Body { received: 4, .. }), "{err}");
        assert!(files_in(dir.path()).is_empty());
    }

    #[tokio::test]
    async fn exactly_the_limit_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open_dir(dir.path()).await.unwrap();
        let info = store.put(chunks(&[b"12345"]), None, 5).await.unwrap();
        assert_eq!(info.size, 5);
    }

    #[tokio::test]
    async fn opening_removes_interrupted_uploads() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open_dir(dir.path()).await.unwrap();
        let info = store.put(chunks(&[b"kept"]), None, 100).await.unwrap();
        std::fs::write(dir.path().join(format!("{TEMP_PREFIX}abc")), b"half").unwrap();
        drop(store);
        let store = BlobStore::open_dir(dir.path()).await.unwrap();
        assert_eq!(files_in(dir.path()), vec![info.sha256.to_string()]);
        assert_eq!(store.size(&info.sha256).await.unwrap(), 4);
    }

    #[test]
    fn digests_parse_strictly() {
        let upper = "A".repeat(64);
        assert_eq!(Sha256Hex::parse(&upper).unwrap().as_str(), "a".repeat(64));
        assert!(Sha256Hex::parse(&"g".repeat(64)).is_err());
        assert!(Sha256Hex::parse(&"a".repeat(63)).is_err());
        assert!(Sha256Hex::parse("../../etc/passwd").is_err());
        assert_eq!(
            Sha256Hex::of_bytes(b"").as_str(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
