//! The file server's HTTP API, merged into the receptor's (which adds basic
//! auth and request logging around it). Errors are the receptor's JSON
//! `{"name", "message", "field"}`.
//!
//! Blobs (content-addressed):
//! - `PUT /v1/blobs`: the body is the blob. Optional `X-Content-Sha256`
//!   (64 hex digits): the upload is refused (400, nothing stored) unless the
//!   bytes have that digest. 201 `{"sha256", "size"}`.
//! - `GET|HEAD /v1/blobs/{sha256}`: the bytes, with `X-Content-Sha256` and
//!   `ETag`; 304 on a matching `If-None-Match`. `DELETE`: 204.
//!
//! Droplets (named tarballs, tar or gzip'd tar):
//! - `PUT /v1/droplets/{name}`: the body is the tarball; `X-Content-Sha256`
//!   is required, so a partial or altered upload is refused. Metadata is
//!   given as query parameters `buildpack`, `start_command`, `stack` (any
//!   text, URL-encoded). 201 with the droplet when new, 200 when it replaced
//!   one. An archive that is not safe to extract (see [`crate::archive`])
//!   is refused with 400 naming the bad entry.
//! - `POST /v1/droplets/{name}/upload`: the same for the executor's `upload`
//!   action, which can only POST a file's bytes to a URL: `X-Content-Sha256`
//!   is optional, metadata comes in the query.
//! - `GET /v1/droplets`: every droplet, sorted by name. `GET|DELETE
//!   /v1/droplets/{name}`: one (204 on delete).
//! - `PUT /v1/droplets/{name}/metadata`: replaces the metadata, a JSON
//!   `{"buildpack", "start_command", "stack"}` (each optional).
//! - `GET|HEAD /v1/droplets/{name}/download`: the tarball, with
//!   `X-Content-Sha256` and `ETag`; 304 on a matching `If-None-Match`.
//!
//! Static files: `GET|HEAD /v1/static/{path}` serves the static directory
//! (the lifecycle binaries) read-only; a path with `.`, `..` or a root is
//! refused with 400, one that resolves outside the directory is not found.
//!
//! Uploads over [`FileServerConfig::max_upload_bytes`] get 413
//! `RequestEntityTooLarge` (before reading when `Content-Length` says so,
//! else as soon as the limit is passed) and store nothing.
//!
//! [`FileServerConfig::max_upload_bytes`]: crate::FileServerConfig::max_upload_bytes

use std::sync::Arc;

use axum::body::{Body, BodyDataStream, Bytes};
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use futures::StreamExt;
use lattice_models::parse::from_json_slice;
use lattice_models::{ApiErrorBody, ApiErrorName};
use tokio_util::io::ReaderStream;

use crate::droplets::{Droplet, DropletMetadata, DropletName};
use crate::server::{FileServer, FileServerError};
use crate::store::{BlobError, BlobInfo, Sha256Hex};

pub use lattice_models::droplet::CHECKSUM_HEADER;

/// The field named in errors about [`CHECKSUM_HEADER`].
const CHECKSUM_FIELD: &str = "X-Content-Sha256";

/// How much of a refused upload is read and discarded before answering, so
/// that a client that already sent a modestly oversized body reads the 413
/// instead of a reset connection. Beyond it the connection is simply closed.
const DRAIN_LIMIT: u64 = 1024 * 1024;

/// Read size when streaming files out.
const READ_CHUNK: usize = 64 * 1024;

/// The file server's routes (see the module doc), with no state left to
/// provide.
pub fn router(fs: Arc<FileServer>) -> Router<()> {
    Router::new()
        .route("/v1/blobs", put(put_blob))
        .route("/v1/blobs/{sha256}", get(get_blob).delete(delete_blob))
        .route("/v1/droplets", get(list_droplets))
        .route(
            "/v1/droplets/{name}",
            get(get_droplet).put(put_droplet).delete(delete_droplet),
        )
        .route("/v1/droplets/{name}/metadata", put(put_metadata))
        .route("/v1/droplets/{name}/download", get(download_droplet))
        .route("/v1/droplets/{name}/upload", post(post_droplet))
        .route("/v1/static/{*path}", get(get_static))
        .with_state(fs)
}

/// A client error in the receptor's JSON shape.
#[derive(Debug)]
pub struct HttpError(pub ApiErrorBody);

impl HttpError {
    fn new(name: ApiErrorName, message: impl Into<String>, field: Option<&str>) -> HttpError {
        HttpError(ApiErrorBody {
            name,
            message: message.into(),
            field: field.map(str::to_string),
        })
    }

    fn internal() -> HttpError {
        HttpError::new(
            ApiErrorName::UnknownError,
            "the file server failed; see the server log",
            None,
        )
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.name.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self.0)).into_response()
    }
}

impl From<FileServerError> for HttpError {
    fn from(err: FileServerError) -> HttpError {
        let message = err.to_string();
        match err {
            FileServerError::Blob(BlobError::TooLarge { .. }) => {
                HttpError::new(ApiErrorName::RequestEntityTooLarge, message, None)
            }
            FileServerError::Blob(BlobError::ChecksumMismatch { .. }) => {
                HttpError::new(ApiErrorName::InvalidRequest, message, Some(CHECKSUM_FIELD))
            }
            FileServerError::Blob(BlobError::NotFound { .. })
            | FileServerError::DropletNotFound { .. }
            | FileServerError::StaticNotFound { .. } => {
                HttpError::new(ApiErrorName::ResourceNotFound, message, None)
            }
            FileServerError::Blob(BlobError::Body { .. }) => {
                tracing::debug!(error = %message, "upload body failed");
                HttpError::new(ApiErrorName::InvalidRequest, message, None)
            }
            FileServerError::UnsafeDroplet(_) => {
                HttpError::new(ApiErrorName::InvalidRequest, message, None)
            }
            FileServerError::InvalidStaticPath { .. } => {
                HttpError::new(ApiErrorName::InvalidRequest, message, Some("path"))
            }
            FileServerError::Blob(BlobError::Io { .. })
            | FileServerError::Index(_)
            | FileServerError::DropletBlobMissing { .. }
            | FileServerError::StaticIo { .. } => {
                tracing::error!(error = %message, "file server failed");
                HttpError::internal()
            }
        }
    }
}

// --- blobs ---------------------------------------------------------------------

async fn put_blob(
    State(fs): State<Arc<FileServer>>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<BlobInfo>), HttpError> {
    let expected = checksum_header(&headers)?;
    let mut body = body.into_data_stream();
    refuse_declared_oversize(&headers, fs.max_upload_bytes(), &mut body).await?;
    let result = fs.put_blob(&mut body, expected.as_ref()).await;
    let info = finish_upload(&mut body, result).await?;
    Ok((StatusCode::CREATED, Json(info)))
}

async fn get_blob(
    State(fs): State<Arc<FileServer>>,
    sha256: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let sha256 = digest_path(sha256)?;
    let (file, size) = fs.open_blob(&sha256).await?;
    Ok(file_response(file, size, Some(&sha256), &headers))
}

async fn delete_blob(
    State(fs): State<Arc<FileServer>>,
    sha256: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, HttpError> {
    let sha256 = digest_path(sha256)?;
    fs.delete_blob(&sha256).await?;
    Ok(StatusCode::NO_CONTENT)
}

// --- droplets ------------------------------------------------------------------

async fn list_droplets(State(fs): State<Arc<FileServer>>) -> Json<Vec<Droplet>> {
    Json(fs.droplets().await)
}

async fn get_droplet(
    State(fs): State<Arc<FileServer>>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<Droplet>, HttpError> {
    let name = droplet_name(name)?;
    Ok(Json(fs.droplet(&name).await?))
}

async fn put_droplet(
    State(fs): State<Arc<FileServer>>,
    name: Result<Path<String>, PathRejection>,
    metadata: Result<Query<DropletMetadata>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Droplet>), HttpError> {
    let name = droplet_name(name)?;
    let metadata = metadata_query(metadata)?;
    let Some(expected) = checksum_header(&headers)? else {
        return Err(HttpError::new(
            ApiErrorName::InvalidRequest,
            "a droplet upload needs its sha256 in X-Content-Sha256, so that a partial or altered upload is refused",
            Some(CHECKSUM_FIELD),
        ));
    };
    store_droplet(&fs, name, Some(expected), metadata, &headers, body).await
}

async fn post_droplet(
    State(fs): State<Arc<FileServer>>,
    name: Result<Path<String>, PathRejection>,
    metadata: Result<Query<DropletMetadata>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Droplet>), HttpError> {
    let name = droplet_name(name)?;
    let metadata = metadata_query(metadata)?;
    let expected = checksum_header(&headers)?;
    store_droplet(&fs, name, expected, metadata, &headers, body).await
}

async fn store_droplet(
    fs: &FileServer,
    name: DropletName,
    expected: Option<Sha256Hex>,
    metadata: DropletMetadata,
    headers: &HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Droplet>), HttpError> {
    let mut body = body.into_data_stream();
    refuse_declared_oversize(headers, fs.max_upload_bytes(), &mut body).await?;
    let result = fs
        .put_droplet(&name, &mut body, expected.as_ref(), metadata)
        .await;
    let (droplet, replaced) = finish_upload(&mut body, result).await?;
    let status = if replaced {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(droplet)))
}

async fn put_metadata(
    State(fs): State<Arc<FileServer>>,
    name: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Droplet>, HttpError> {
    let name = droplet_name(name)?;
    let body = body.map_err(|rejection| {
        let name = match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ApiErrorName::RequestEntityTooLarge,
            _ => ApiErrorName::InvalidRequest,
        };
        HttpError::new(name, rejection.body_text().to_lowercase(), None)
    })?;
    let metadata: DropletMetadata = from_json_slice(&body).map_err(|err| {
        let field = (!err.path.is_empty()).then_some(err.path.as_str());
        HttpError::new(ApiErrorName::InvalidJson, err.to_string(), field)
    })?;
    Ok(Json(fs.set_droplet_metadata(&name, metadata).await?))
}

async fn download_droplet(
    State(fs): State<Arc<FileServer>>,
    name: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let name = droplet_name(name)?;
    let (droplet, file, size) = fs.open_droplet(&name).await?;
    Ok(file_response(file, size, Some(&droplet.sha256), &headers))
}

async fn delete_droplet(
    State(fs): State<Arc<FileServer>>,
    name: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, HttpError> {
    let name = droplet_name(name)?;
    fs.delete_droplet(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

// --- static files ----------------------------------------------------------------

async fn get_static(
    State(fs): State<Arc<FileServer>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let Path(path) = path.map_err(|rejection| path_error(rejection, "path"))?;
    let (file, size) = fs.open_static(&path).await?;
    Ok(file_response(file, size, None, &headers))
}

// --- helpers ---------------------------------------------------------------------

fn path_error(rejection: PathRejection, field: &str) -> HttpError {
    HttpError::new(
        ApiErrorName::InvalidRequest,
        rejection.body_text().to_lowercase(),
        Some(field),
    )
}

fn droplet_name(raw: Result<Path<String>, PathRejection>) -> Result<DropletName, HttpError> {
    let Path(raw) = raw.map_err(|rejection| path_error(rejection, "name"))?;
    DropletName::parse(&raw)
        .map_err(|err| HttpError::new(ApiErrorName::InvalidRequest, err.to_string(), Some("name")))
}

fn digest_path(raw: Result<Path<String>, PathRejection>) -> Result<Sha256Hex, HttpError> {
    let Path(raw) = raw.map_err(|rejection| path_error(rejection, "sha256"))?;
    Sha256Hex::parse(&raw).map_err(|err| {
        HttpError::new(
            ApiErrorName::InvalidRequest,
            err.to_string(),
            Some("sha256"),
        )
    })
}

fn metadata_query(
    raw: Result<Query<DropletMetadata>, QueryRejection>,
) -> Result<DropletMetadata, HttpError> {
    raw.map(|Query(metadata)| metadata).map_err(|rejection| {
        HttpError::new(
            ApiErrorName::InvalidRequest,
            rejection.body_text().to_lowercase(),
            Some("query"),
        )
    })
}

/// The digest in [`CHECKSUM_HEADER`], if the client sent one.
fn checksum_header(headers: &HeaderMap) -> Result<Option<Sha256Hex>, HttpError> {
    let Some(value) = headers.get(CHECKSUM_HEADER) else {
        return Ok(None);
    };
    let invalid = || {
        HttpError::new(
            ApiErrorName::InvalidRequest,
            format!("{CHECKSUM_FIELD} must be a sha256 digest (64 hexadecimal digits)"),
            Some(CHECKSUM_FIELD),
        )
    };
    let text = value.to_str().map_err(|_| invalid())?;
    Sha256Hex::parse(text.trim())
        .map(Some)
        .map_err(|_| invalid())
}

/// Answers 413 before reading a body whose `Content-Length` is over `limit`.
async fn refuse_declared_oversize(
    headers: &HeaderMap,
    limit: u64,
    body: &mut BodyDataStream,
) -> Result<(), HttpError> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(length) if length > limit => {
            drain(body).await;
            Err(FileServerError::Blob(BlobError::TooLarge { limit }).into())
        }
        _ => Ok(()),
    }
}

/// Turns an upload's result into the answer, draining a refused oversized
/// body first.
async fn finish_upload<T>(
    body: &mut BodyDataStream,
    result: Result<T, FileServerError>,
) -> Result<T, HttpError> {
    match result {
        Ok(value) => Ok(value),
        Err(err) => {
            if err.is_too_large() {
                drain(body).await;
            }
            Err(err.into())
        }
    }
}

/// Reads and discards up to [`DRAIN_LIMIT`] more bytes of `body`.
async fn drain(body: &mut BodyDataStream) {
    let mut drained: u64 = 0;
    while drained < DRAIN_LIMIT {
        match body.next().await {
            Some(Ok(chunk)) => drained += chunk.len() as u64,
            _ => break,
        }
    }
}

/// Streams `file` as the answer, with its digest (when known) as
/// [`CHECKSUM_HEADER`] and `ETag`; a matching `If-None-Match` gets 304.
fn file_response(
    file: tokio::fs::File,
    size: u64,
    sha256: Option<&Sha256Hex>,
    request: &HeaderMap,
) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Some(sha256) = sha256 {
        let etag = format!("\"{sha256}\"");
        // Hex digits and quotes are valid in a header value.
        let etag_value =
            HeaderValue::from_str(&etag).expect("a quoted hex digest is a header value");
        let digest =
            HeaderValue::from_str(sha256.as_str()).expect("a hex digest is a header value");
        headers.insert(CHECKSUM_HEADER, digest);
        headers.insert(ETAG, etag_value);
        if matches_etag(request, &etag) {
            return (StatusCode::NOT_MODIFIED, headers).into_response();
        }
    }
    headers.insert(CONTENT_LENGTH, HeaderValue::from(size));
    let body = Body::from_stream(ReaderStream::with_capacity(file, READ_CHUNK));
    (StatusCode::OK, headers, body).into_response()
}

fn matches_etag(request: &HeaderMap, etag: &str) -> bool {
    request
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == etag || tag == "*")
}
