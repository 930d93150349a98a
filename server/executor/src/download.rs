//! Fetching download bodies over HTTP, with an on-disk cache keyed by the
//! action's `cache_key`.
//!
//! A cached artifact is stored as `<sha256(key)>.data` plus a `.json` beside it
//! with the URL and the validators (`ETag`, `Last-Modified`) the server sent.
//! A later download with the same key and URL revalidates with them (a 304
//! costs no body); when the server sent none, the cached copy is reused
//! without asking. A different URL under the same key is fetched afresh.
//!
//! Bodies are streamed to files in the cache directory, never held whole in
//! memory, and a body longer than the caller's limit is cut off with
//! [`DownloadError::TooLarge`].
//!
//! # Caveats
//! The cache is best-effort: a cache that cannot be read or written is logged
//! and bypassed, never a failed download. Nothing is evicted yet; the cache
//! grows with the number of distinct keys.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use std::fs::File;

use reqwest::header::{ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use crate::error::DownloadError;

/// What we remember about a cached artifact.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CacheEntry {
    url: String,
    etag: Option<String>,
    last_modified: Option<String>,
}

impl CacheEntry {
    fn has_validators(&self) -> bool {
        self.etag.is_some() || self.last_modified.is_some()
    }
}

pub(crate) struct DownloadCache {
    http: reqwest::Client,
    dir: PathBuf,
    /// One lock per cache key, so two concurrent downloads of the same
    /// artifact fetch it once and never write its file at the same time.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl DownloadCache {
    pub fn new(http: reqwest::Client, dir: PathBuf) -> DownloadCache {
        DownloadCache {
            http,
            dir,
            locks: Mutex::new(HashMap::new()),
        }
    }

    /// The body at `url` as an open file at its start (unnamed, or the
    /// cached copy), from the cache when `cache_key` is given and the cached
    /// copy is still good. At most `max_bytes` long.
    ///
    /// # Errors
    /// [`DownloadError::TooLarge`] as soon as the body passes `max_bytes`
    /// (or announces it will); the partial file is removed.
    ///
    /// # Assumptions
    /// Safe to cancel at any `.await`: the cache files are replaced by rename,
    /// so a dropped fetch leaves the old copy or none; an open copy stays
    /// readable when a concurrent fetch replaces it.
    pub async fn fetch(
        &self,
        url: &str,
        cache_key: Option<&str>,
        max_bytes: u64,
    ) -> Result<File, DownloadError> {
        let Some(key) = cache_key.filter(|k| !k.is_empty()) else {
            return match self.get(url, None, max_bytes).await? {
                Fetched::Fresh { body, .. } => {
                    // Unnamed from here on: nothing is left behind.
                    Ok(body.into_file())
                }
                // get() only answers NotModified to a conditional request.
                Fetched::NotModified => Err(DownloadError::Status { status: 304 }),
            };
        };
        let lock = self.lock_for(key);
        let _guard = lock.lock().await;

        let paths = CachePaths::new(&self.dir, key);
        let cached = paths.read_entry().await.filter(|entry| entry.url == url);
        if let Some(entry) = &cached {
            if !entry.has_validators() {
                if let Some(body) = paths.open_data(max_bytes)? {
                    tracing::debug!(url, cache_key = key, "download cache hit");
                    return Ok(body);
                }
            }
        }
        match self.get(url, cached.as_ref(), max_bytes).await? {
            Fetched::NotModified => match paths.open_data(max_bytes)? {
                Some(body) => {
                    tracing::debug!(url, cache_key = key, "download cache revalidated");
                    Ok(body)
                }
                // The data vanished between the check and now: fetch it plainly.
                None => match self.get(url, None, max_bytes).await? {
                    Fetched::Fresh { body, entry } => paths.store(&entry, body).await,
                    Fetched::NotModified => Err(DownloadError::Status { status: 304 }),
                },
            },
            Fetched::Fresh { body, entry } => paths.store(&entry, body).await,
        }
    }

    fn lock_for(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        // The map stays consistent even if a holder panicked.
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(key.to_string()).or_default().clone()
    }

    /// GET `url`, conditional on `cached`'s validators when given.
    async fn get(
        &self,
        url: &str,
        cached: Option<&CacheEntry>,
        max_bytes: u64,
    ) -> Result<Fetched, DownloadError> {
        let mut request = self.http.get(url);
        if let Some(entry) = cached {
            if let Some(etag) = &entry.etag {
                request = request.header(IF_NONE_MATCH, etag);
            }
            if let Some(last_modified) = &entry.last_modified {
                request = request.header(IF_MODIFIED_SINCE, last_modified);
            }
        }
        let mut response = request.send().await.map_err(DownloadError::Request)?;
        let status = response.status();
        if status == StatusCode::NOT_MODIFIED && cached.is_some() {
            return Ok(Fetched::NotModified);
        }
        if !status.is_success() {
            return Err(DownloadError::Status {
                status: status.as_u16(),
            });
        }
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
                .map(str::to_string)
        };
        let entry = CacheEntry {
            url: url.to_string(),
            etag: header(ETAG),
            last_modified: header(LAST_MODIFIED),
        };
        if response.content_length().is_some_and(|len| len > max_bytes) {
            return Err(DownloadError::TooLarge { limit: max_bytes });
        }
        let disk = DownloadError::Disk;
        tokio::fs::create_dir_all(&self.dir).await.map_err(disk)?;
        let body = tempfile::NamedTempFile::new_in(&self.dir).map_err(disk)?;
        let mut file = tokio::fs::File::from_std(body.as_file().try_clone().map_err(disk)?);
        let mut written: u64 = 0;
        while let Some(chunk) = response.chunk().await.map_err(DownloadError::Request)? {
            written += chunk.len() as u64;
            if written > max_bytes {
                // `body` is dropped here, and its file with it.
                return Err(DownloadError::TooLarge { limit: max_bytes });
            }
            file.write_all(&chunk).await.map_err(disk)?;
        }
        file.flush().await.map_err(disk)?;
        file.seek(std::io::SeekFrom::Start(0)).await.map_err(disk)?;
        Ok(Fetched::Fresh { body, entry })
    }
}

enum Fetched {
    /// The body in a named temporary file of the cache directory, at its
    /// start; removed when dropped unless the cache keeps it.
    Fresh {
        body: tempfile::NamedTempFile,
        entry: CacheEntry,
    },
    NotModified,
}

struct CachePaths {
    dir: PathBuf,
    data: PathBuf,
    entry: PathBuf,
}

impl CachePaths {
    /// Keys are hashed so that any string makes a safe, bounded file name.
    fn new(dir: &Path, key: &str) -> CachePaths {
        let digest = Sha256::digest(key.as_bytes());
        let name: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        CachePaths {
            dir: dir.to_path_buf(),
            data: dir.join(format!("{name}.data")),
            entry: dir.join(format!("{name}.json")),
        }
    }

    async fn read_entry(&self) -> Option<CacheEntry> {
        let text = tokio::fs::read(&self.entry).await.ok()?;
        match serde_json::from_slice(&text) {
            Ok(entry) => Some(entry),
            Err(error) => {
                tracing::warn!(path = %self.entry.display(), %error, "ignoring unreadable cache entry");
                None
            }
        }
    }

    /// The cached data, opened; `None` when it is not there (or unreadable,
    /// which is logged).
    ///
    /// # Errors
    /// [`DownloadError::TooLarge`] when the copy is longer than `max_bytes`
    /// (cached for a container that could take more).
    fn open_data(&self, max_bytes: u64) -> Result<Option<File>, DownloadError> {
        match File::open(&self.data).and_then(|f| Ok((f.metadata()?.len(), f))) {
            Ok((len, _)) if len > max_bytes => Err(DownloadError::TooLarge { limit: max_bytes }),
            Ok((_, file)) => Ok(Some(file)),
            Err(error) => {
                if error.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %self.data.display(), %error, "cached download unreadable");
                }
                Ok(None)
            }
        }
    }

    /// Keeps `body` as the cached data, then writes its entry, each by
    /// rename, so a reader never sees an entry whose data is partial.
    /// Failures are logged: the download itself succeeded. Returns the body
    /// as an open file either way.
    async fn store(
        &self,
        entry: &CacheEntry,
        body: tempfile::NamedTempFile,
    ) -> Result<File, DownloadError> {
        let dir = self.dir.clone();
        let (data_path, entry_path) = (self.data.clone(), self.entry.clone());
        let entry = entry.clone();
        let stored = tokio::task::spawn_blocking(move || -> (File, std::io::Result<()>) {
            // Remove the old entry first, so a crash between the two renames
            // cannot pair the old validators with the new data.
            match std::fs::remove_file(&entry_path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return (body.into_file(), Err(e))
                }
                _ => {}
            }
            let file = match body.persist(&data_path) {
                Ok(file) => file,
                Err(e) => return (e.file.into_file(), Err(e.error)),
            };
            let json = match serde_json::to_vec(&entry) {
                Ok(json) => json,
                Err(e) => return (file, Err(std::io::Error::other(e))),
            };
            let written = write_atomically(&dir, &entry_path, &json);
            (file, written)
        })
        .await;
        match stored {
            Ok((file, Ok(()))) => Ok(file),
            Ok((file, Err(error))) => {
                tracing::warn!(path = %self.data.display(), %error, "could not cache download");
                Ok(file)
            }
            // The runtime is shutting down (or the closure panicked).
            Err(error) => Err(DownloadError::Disk(std::io::Error::other(error))),
        }
    }
}

fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    file.write_all(bytes)?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}
