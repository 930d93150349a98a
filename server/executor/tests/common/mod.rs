//! A local HTTP server (port 0) that serves downloads and takes uploads, for
//! the download and upload tests.

#![allow(dead_code)] // each test binary uses a part of it

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

/// A file the server serves, with the ETag it advertises, if any.
#[derive(Clone)]
pub struct Served {
    pub body: Bytes,
    pub etag: Option<String>,
}

#[derive(Default)]
pub struct ServerState {
    files: Mutex<HashMap<String, Served>>,
    /// GETs per file name, whatever the answer.
    hits: Mutex<HashMap<String, usize>>,
    /// 304 answers given.
    not_modified: Mutex<usize>,
    uploads: Mutex<Vec<Bytes>>,
}

pub struct TestServer {
    pub addr: SocketAddr,
    state: Arc<ServerState>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        let state = Arc::new(ServerState::default());
        let app = Router::new()
            .route("/files/{name}", get(serve))
            .route("/upload", post(upload))
            .route(
                "/reject",
                post(|| async { StatusCode::INTERNAL_SERVER_ERROR }),
            )
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        TestServer { addr, state }
    }

    /// Serves `body` at `/files/<name>`.
    pub fn serve(&self, name: &str, body: impl Into<Bytes>, etag: Option<&str>) {
        self.state.files.lock().unwrap().insert(
            name.to_string(),
            Served {
                body: body.into(),
                etag: etag.map(str::to_string),
            },
        );
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The URL of `/files/<name>`.
    pub fn file_url(&self, name: &str) -> String {
        self.url(&format!("/files/{name}"))
    }

    pub fn hits(&self, name: &str) -> usize {
        self.state
            .hits
            .lock()
            .unwrap()
            .get(name)
            .copied()
            .unwrap_or(0)
    }

    pub fn not_modified(&self) -> usize {
        *self.state.not_modified.lock().unwrap()
    }

    pub fn uploads(&self) -> Vec<Bytes> {
        self.state.uploads.lock().unwrap().clone()
    }
}

async fn serve(
    State(state): State<Arc<ServerState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    *state.hits.lock().unwrap().entry(name.clone()).or_default() += 1;
    let Some(file) = state.files.lock().unwrap().get(&name).cloned() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if let Some(etag) = &file.etag {
        if headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            == Some(etag)
        {
            *state.not_modified.lock().unwrap() += 1;
            return StatusCode::NOT_MODIFIED.into_response();
        }
        return ([(header::ETAG, etag.clone())], file.body).into_response();
    }
    file.body.into_response()
}

async fn upload(State(state): State<Arc<ServerState>>, body: Bytes) -> StatusCode {
    state.uploads.lock().unwrap().push(body);
    StatusCode::CREATED
}

/// A gzip'd tar holding `files` (name, contents, mode).
pub fn tgz(files: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, contents, mode) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(contents.len() as u64);
        header.set_mode(*mode);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, name, *contents).unwrap();
    }
    let tar = builder.into_inner().unwrap();
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(&tar).unwrap();
    encoder.finish().unwrap()
}
