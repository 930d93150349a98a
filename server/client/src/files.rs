//! [`FileServerClient`]: the file server's API (upload bits, export and
//! import droplets), which the receptor serves.
//!
//! Files are streamed both ways, never held in memory whole. Uploads send
//! the file's digest, computed first, so the server refuses an upload that
//! arrived damaged or that changed while it was sent. Downloads are written
//! to a temporary file beside the destination, hashed on the way, and
//! renamed into place only when the digest matches the server's.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use lattice_models::droplet::{
    BlobInfo, Droplet, DropletMetadata, DropletName, Sha256Hex, CHECKSUM_HEADER,
};
use reqwest::header::CONTENT_LENGTH;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{error_from_body, transport_error, ClientError, Credentials};

/// Read size for hashing and sending files.
const CHUNK: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub struct FileServerClient {
    http: reqwest::Client,
    /// The receptor's base URL, without a trailing slash.
    target: String,
    credentials: Option<Credentials>,
}

impl FileServerClient {
    /// A client for the file server merged into the receptor at `target`
    /// (`http://host:port`), sending `credentials` as HTTP basic auth.
    pub fn new(target: impl Into<String>, credentials: Option<Credentials>) -> Self {
        Self::with_http(reqwest::Client::new(), target, credentials)
    }

    /// As [`FileServerClient::new`], with a configured HTTP client (proxy,
    /// timeouts).
    pub fn with_http(
        http: reqwest::Client,
        target: impl Into<String>,
        credentials: Option<Credentials>,
    ) -> Self {
        FileServerClient {
            http,
            target: target.into().trim_end_matches('/').to_string(),
            credentials,
        }
    }

    /// The URL a cell downloads the droplet from (for a recipe's
    /// `download` action).
    pub fn droplet_download_url(&self, name: &str) -> Result<String, ClientError> {
        let name = DropletName::parse(name)?;
        Ok(self.url(&format!("/v1/droplets/{name}/download")))
    }

    /// Uploads the file at `path` as a blob; `progress` is called with the
    /// bytes sent so far.
    ///
    /// # Errors
    /// [`ClientError::Api`] with 413 when it is over the server's limit, or
    /// 400 when the file changed while it was being sent.
    pub async fn upload_blob(
        &self,
        path: &Path,
        progress: impl Fn(u64) + Send + Sync + 'static,
    ) -> Result<BlobInfo, ClientError> {
        let (sha256, size) = hash_file(path).await?;
        let url = self.url("/v1/blobs");
        let body = file_body(path, progress).await?;
        let request = self
            .authorized(self.http.put(&url))
            .header(CHECKSUM_HEADER, sha256.as_str())
            .header(CONTENT_LENGTH, size)
            .body(body);
        self.json(&url, request).await
    }

    /// Uploads the tarball at `path` as the droplet `name` (replacing one of
    /// that name); `progress` is called with the bytes sent so far.
    ///
    /// # Errors
    /// As [`FileServerClient::upload_blob`], and 400 naming the entry when
    /// the archive is not safe to extract.
    pub async fn upload_droplet(
        &self,
        name: &str,
        path: &Path,
        metadata: &DropletMetadata,
        progress: impl Fn(u64) + Send + Sync + 'static,
    ) -> Result<Droplet, ClientError> {
        let name = DropletName::parse(name)?;
        let (sha256, size) = hash_file(path).await?;
        let url = self.url(&format!("/v1/droplets/{name}"));
        let body = file_body(path, progress).await?;
        let request = self
            .authorized(self.http.put(&url))
            .query(metadata)
            .header(CHECKSUM_HEADER, sha256.as_str())
            .header(CONTENT_LENGTH, size)
            .body(body);
        self.json(&url, request).await
    }

    /// Every droplet, sorted by name.
    pub async fn list_droplets(&self) -> Result<Vec<Droplet>, ClientError> {
        let url = self.url("/v1/droplets");
        self.json(&url, self.authorized(self.http.get(&url))).await
    }

    pub async fn droplet(&self, name: &str) -> Result<Droplet, ClientError> {
        let name = DropletName::parse(name)?;
        let url = self.url(&format!("/v1/droplets/{name}"));
        self.json(&url, self.authorized(self.http.get(&url))).await
    }

    /// Replaces a droplet's metadata.
    pub async fn set_droplet_metadata(
        &self,
        name: &str,
        metadata: &DropletMetadata,
    ) -> Result<Droplet, ClientError> {
        let name = DropletName::parse(name)?;
        let url = self.url(&format!("/v1/droplets/{name}/metadata"));
        let request = self.authorized(self.http.put(&url)).json(metadata);
        self.json(&url, request).await
    }

    /// Downloads the droplet `name` to `dest`; `progress` is called with
    /// the bytes received so far.
    ///
    /// # Guarantees
    /// `dest` is replaced only by a complete download whose digest matches
    /// the server's; on any error it is left as it was and no partial file
    /// remains.
    pub async fn download_droplet(
        &self,
        name: &str,
        dest: &Path,
        progress: impl Fn(u64),
    ) -> Result<BlobInfo, ClientError> {
        let name = DropletName::parse(name)?;
        let url = self.url(&format!("/v1/droplets/{name}/download"));
        self.download(&url, dest, progress).await
    }

    /// Downloads the blob `sha256` to `dest`, with the guarantees of
    /// [`FileServerClient::download_droplet`].
    pub async fn download_blob(
        &self,
        sha256: &Sha256Hex,
        dest: &Path,
        progress: impl Fn(u64),
    ) -> Result<BlobInfo, ClientError> {
        let url = self.url(&format!("/v1/blobs/{sha256}"));
        self.download(&url, dest, progress).await
    }

    pub async fn delete_droplet(&self, name: &str) -> Result<(), ClientError> {
        let name = DropletName::parse(name)?;
        let url = self.url(&format!("/v1/droplets/{name}"));
        let response = self.send(self.authorized(self.http.delete(&url))).await?;
        check_status(response).await.map(drop)
    }

    async fn download(
        &self,
        url: &str,
        dest: &Path,
        progress: impl Fn(u64),
    ) -> Result<BlobInfo, ClientError> {
        let response = self.send(self.authorized(self.http.get(url))).await?;
        let response = check_status(response).await?;
        let expected = response
            .headers()
            .get(CHECKSUM_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| Sha256Hex::parse(v).ok())
            .ok_or_else(|| ClientError::Decode {
                what: format!("the {CHECKSUM_HEADER} header of {url}"),
                source: "missing or not a sha256 digest".into(),
            })?;
        let dir = match dest.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let io_error = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ClientError::Io { path, source }
        };
        // Beside `dest`, so the final rename stays on one file system;
        // deleted on drop, so no error path leaves it behind.
        let temp = tempfile::Builder::new()
            .prefix(".download-")
            .tempfile_in(&dir)
            .map_err(io_error(&dir))?;
        let (file, temp_path) = temp.into_parts();
        let mut file = tokio::io::BufWriter::with_capacity(CHUNK, tokio::fs::File::from_std(file));
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        let mut chunks = response.bytes_stream();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|source| transport_error(&self.target, source))?;
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(io_error(&temp_path))?;
            size += chunk.len() as u64;
            progress(size);
        }
        file.flush().await.map_err(io_error(&temp_path))?;
        drop(file);
        let actual = Sha256Hex::from_hasher(hasher);
        if actual != expected {
            return Err(ClientError::ChecksumMismatch { expected, actual });
        }
        temp_path.persist(dest).map_err(|e| ClientError::Io {
            path: dest.to_path_buf(),
            source: e.error,
        })?;
        Ok(BlobInfo {
            sha256: actual,
            size,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.target)
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.credentials {
            Some(c) => request.basic_auth(&c.username, Some(&c.password)),
            None => request,
        }
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        request
            .send()
            .await
            .map_err(|source| transport_error(&self.target, source))
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let response = check_status(self.send(request).await?).await?;
        let bytes = response
            .bytes()
            .await
            .map_err(|source| transport_error(&self.target, source))?;
        serde_json::from_slice(&bytes).map_err(|source| ClientError::Decode {
            what: format!("the answer of {url}"),
            source: source.into(),
        })
    }
}

/// Passes a success through; turns an error status into [`ClientError`].
async fn check_status(response: reqwest::Response) -> Result<reqwest::Response, ClientError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let url = response.url().to_string();
    match response.bytes().await {
        Ok(body) => Err(error_from_body(&url, status.as_u16(), &body)),
        Err(source) => Err(transport_error(&url, source)),
    }
}

/// The digest and size of the file at `path`, read in chunks.
async fn hash_file(path: &Path) -> Result<(Sha256Hex, u64), ClientError> {
    let io_error = |source| ClientError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = tokio::fs::File::open(path).await.map_err(io_error)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; CHUNK];
    let mut size: u64 = 0;
    loop {
        let read = file.read(&mut buffer).await.map_err(io_error)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        size += read as u64;
    }
    Ok((Sha256Hex::from_hasher(hasher), size))
}

/// A request body that streams the file at `path`, reporting progress.
async fn file_body(
    path: &Path,
    progress: impl Fn(u64) + Send + Sync + 'static,
) -> Result<reqwest::Body, ClientError> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|source| ClientError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(reqwest::Body::wrap_stream(counted(
        tokio_util::io::ReaderStream::with_capacity(file, CHUNK),
        progress,
    )))
}

fn counted<S>(
    chunks: S,
    progress: impl Fn(u64) + Send + Sync + 'static,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static
where
    S: Stream<Item = std::io::Result<Bytes>> + Send + 'static,
{
    let mut sent: u64 = 0;
    chunks.inspect(move |chunk| {
        if let Ok(chunk) = chunk {
            sent += chunk.len() as u64;
            progress(sent);
        }
    })
}
