//! Fetching download bodies over HTTP, with an on-disk cache keyed by the
//! action's `cache_key`.
//!
//! A cached artifact is stored as `<sha256(key)>.data` plus a `.json` beside it
//! with the URL and the validators (`ETag`, `Last-Modified`) the server sent.
//! A later download with the same key and URL revalidates with them (a 304
//! costs no body); when the server sent none, the cached copy is reused
//! without asking. A different URL under the same key is fetched afresh.
//!
//! # Caveats
//! The cache is best-effort: a cache that cannot be read or written is logged
//! and bypassed, never a failed download. Nothing is evicted yet; the cache
//! grows with the number of distinct keys.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use reqwest::header::{ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

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

    /// The body at `url`, from the cache when `cache_key` is given and the
    /// cached copy is still good.
    ///
    /// # Assumptions
    /// Safe to cancel at any `.await`: the cache files are replaced by rename,
    /// so a dropped fetch leaves the old copy or none.
    pub async fn fetch(&self, url: &str, cache_key: Option<&str>) -> Result<Bytes, DownloadError> {
        let Some(key) = cache_key.filter(|k| !k.is_empty()) else {
            return match self.get(url, None).await? {
                Fetched::Fresh { body, .. } => Ok(body),
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
                if let Some(body) = paths.read_data().await {
                    tracing::debug!(url, cache_key = key, "download cache hit");
                    return Ok(body);
                }
            }
        }
        match self.get(url, cached.as_ref()).await? {
            Fetched::NotModified => match paths.read_data().await {
                Some(body) => {
                    tracing::debug!(url, cache_key = key, "download cache revalidated");
                    Ok(body)
                }
                // The data vanished between the check and now: fetch it plainly.
                None => match self.get(url, None).await? {
                    Fetched::Fresh { body, entry } => {
                        paths.store(&entry, &body).await;
                        Ok(body)
                    }
                    Fetched::NotModified => Err(DownloadError::Status { status: 304 }),
                },
            },
            Fetched::Fresh { body, entry } => {
                paths.store(&entry, &body).await;
                Ok(body)
            }
        }
    }

    fn lock_for(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        // The map stays consistent even if a holder panicked.
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(key.to_string()).or_default().clone()
    }

    /// GET `url`, conditional on `cached`'s validators when given.
    async fn get(&self, url: &str, cached: Option<&CacheEntry>) -> Result<Fetched, DownloadError> {
        let mut request = self.http.get(url);
        if let Some(entry) = cached {
            if let Some(etag) = &entry.etag {
                request = request.header(IF_NONE_MATCH, etag);
            }
            if let Some(last_modified) = &entry.last_modified {
                request = request.header(IF_MODIFIED_SINCE, last_modified);
            }
        }
        let response = request.send().await.map_err(DownloadError::Request)?;
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
        let body = response.bytes().await.map_err(DownloadError::Request)?;
        Ok(Fetched::Fresh { body, entry })
    }
}

enum Fetched {
    Fresh { body: Bytes, entry: CacheEntry },
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

    async fn read_data(&self) -> Option<Bytes> {
        match tokio::fs::read(&self.data).await {
            Ok(data) => Some(Bytes::from(data)),
            Err(error) => {
                tracing::warn!(path = %self.data.display(), %error, "cached download unreadable");
                None
            }
        }
    }

    /// Writes data then entry, each by rename, so a reader never sees an
    /// entry whose data is partial. Failures are logged: the download itself
    /// succeeded.
    async fn store(&self, entry: &CacheEntry, body: &Bytes) {
        let dir = self.dir.clone();
        let (data_path, entry_path) = (self.data.clone(), self.entry.clone());
        let entry = entry.clone();
        let body = body.clone();
        let stored = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::create_dir_all(&dir)?;
            // Remove the old entry first, so a crash between the two renames
            // cannot pair the old validators with the new data.
            match std::fs::remove_file(&entry_path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            write_atomically(&dir, &data_path, &body)?;
            let json = serde_json::to_vec(&entry).map_err(std::io::Error::other)?;
            write_atomically(&dir, &entry_path, &json)
        })
        .await;
        match stored {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(path = %self.data.display(), %error, "could not cache download")
            }
            Err(error) => tracing::warn!(%error, "caching a download panicked"),
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
