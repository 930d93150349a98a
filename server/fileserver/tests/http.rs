//! Component tests: the file server's routes on a port-0 listener, a temp
//! dir for its data, and [`FileServerClient`] or plain HTTP against it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::response::IntoResponse;
use lattice_client::{ClientError, Credentials, FileServerClient};
use lattice_fileserver::{
    router, DropletMetadata, FileServer, FileServerConfig, Sha256Hex, CHECKSUM_HEADER,
};
use lattice_models::{ApiErrorBody, ApiErrorName};
use tower::ServiceExt;

struct Harness {
    data: tempfile::TempDir,
    static_dir: tempfile::TempDir,
    url: String,
    fs: Arc<FileServer>,
}

impl Harness {
    async fn start(max_upload_bytes: u64) -> Harness {
        let data = tempfile::tempdir().unwrap();
        let static_dir = tempfile::tempdir().unwrap();
        let config = FileServerConfig {
            dir: data.path().to_path_buf(),
            static_dir: Some(static_dir.path().to_path_buf()),
            max_upload_bytes,
        };
        let fs = Arc::new(FileServer::open(config).await.unwrap());
        let url = serve(router(fs.clone())).await;
        Harness {
            data,
            static_dir,
            url,
            fs,
        }
    }

    fn client(&self) -> FileServerClient {
        FileServerClient::new(&self.url, None)
    }

    fn blobs(&self) -> Vec<String> {
        files_in(&self.data.path().join("blobs"))
    }

    fn droplet_blobs(&self) -> Vec<String> {
        files_in(&self.data.path().join("droplets"))
    }
}

/// Serves `app` on a port-0 listener for the rest of the test.
async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}")
}

/// Every name in `dir`, hidden temporary files included.
fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// `len` bytes that do not repeat in any short period.
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u8
        })
        .collect()
}

/// A gzip'd tar as a buildpack would make one.
fn droplet_tgz(seed: u64) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, contents) in [
        ("app/run.sh", b"#!/bin/sh\nexec ./server\n".to_vec()),
        ("app/server", pseudo_random(200_000, seed)),
        ("staging_info.yml", b"start_command: ./run.sh\n".to_vec()),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(contents.len() as u64);
        header.set_mode(0o755);
        builder
            .append_data(&mut header, path, &contents[..])
            .unwrap();
    }
    let tar = builder.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

/// A tar whose single entry is written with raw header bytes, so it can
/// carry names the `tar` builder refuses.
fn raw_tar(path: &str, kind: tar::EntryType, link: Option<&str>) -> Vec<u8> {
    let mut header = tar::Header::new_gnu();
    header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
    if let Some(link) = link {
        header.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    header.set_entry_type(kind);
    header.set_size(if kind == tar::EntryType::Regular {
        4
    } else {
        0
    });
    header.set_mode(0o644);
    header.set_cksum();
    let mut builder = tar::Builder::new(Vec::new());
    let data: &[u8] = if kind == tar::EntryType::Regular {
        b"evil"
    } else {
        b""
    };
    builder.append(&header, data).unwrap();
    builder.into_inner().unwrap()
}

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

async fn error_body(response: reqwest::Response) -> ApiErrorBody {
    response.json().await.unwrap()
}

fn api_error(err: ClientError) -> (u16, ApiErrorBody) {
    match err {
        ClientError::Api { status, error } => (status, error),
        other => panic!("expected an API error, got {other}"),
    }
}

#[tokio::test]
async fn blob_round_trip_is_byte_for_byte() {
    let h = Harness::start(64 * 1024 * 1024).await;
    let http = reqwest::Client::new();
    let bytes = pseudo_random(3 * 1024 * 1024 + 7, 1);
    let sha256 = Sha256Hex::of_bytes(&bytes);

    let response = http
        .put(format!("{}/v1/blobs", h.url))
        .header(CHECKSUM_HEADER, sha256.as_str())
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let info: serde_json::Value = response.json().await.unwrap();
    assert_eq!(info["sha256"], sha256.as_str());
    assert_eq!(info["size"], bytes.len() as u64);
    assert_eq!(h.blobs(), vec![sha256.to_string()]);

    let blob_url = format!("{}/v1/blobs/{sha256}", h.url);
    let response = http.get(&blob_url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[CHECKSUM_HEADER], sha256.as_str());
    let etag = response.headers()["etag"].clone();
    assert!(response.bytes().await.unwrap() == bytes);

    let response = http.head(&blob_url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-length"],
        bytes.len().to_string().as_str()
    );
    assert!(response.bytes().await.unwrap().is_empty());

    // What the executor's download cache sends to revalidate.
    let response = http
        .get(&blob_url)
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);

    let response = http.delete(&blob_url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let response = http.get(&blob_url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        error_body(response).await.name,
        ApiErrorName::ResourceNotFound
    );
    assert!(h.blobs().is_empty());
}

#[tokio::test]
async fn client_blob_upload_and_download_with_progress() {
    let h = Harness::start(64 * 1024 * 1024).await;
    let local = tempfile::tempdir().unwrap();
    let bytes = pseudo_random(1024 * 1024, 2);
    let source = write_file(local.path(), "bits.zip", &bytes);

    let sent = Arc::new(AtomicU64::new(0));
    let seen = sent.clone();
    let info = h
        .client()
        .upload_blob(&source, move |n| seen.store(n, Ordering::SeqCst))
        .await
        .unwrap();
    assert_eq!(info.sha256, Sha256Hex::of_bytes(&bytes));
    assert_eq!(sent.load(Ordering::SeqCst), bytes.len() as u64);

    let dest = local.path().join("copy.zip");
    let received = AtomicU64::new(0);
    let downloaded = h
        .client()
        .download_blob(&info.sha256, &dest, |n| received.store(n, Ordering::SeqCst))
        .await
        .unwrap();
    assert_eq!(downloaded, info);
    assert_eq!(received.load(Ordering::SeqCst), bytes.len() as u64);
    assert!(std::fs::read(&dest).unwrap() == bytes);
}

#[tokio::test]
async fn wrong_checksum_is_refused_and_nothing_is_stored() {
    let h = Harness::start(1024 * 1024).await;
    let http = reqwest::Client::new();
    let wrong = Sha256Hex::of_bytes(b"other bytes");
    let response = http
        .put(format!("{}/v1/blobs", h.url))
        .header(CHECKSUM_HEADER, wrong.as_str())
        .body(pseudo_random(10_000, 3))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body = error_body(response).await;
    assert_eq!(body.name, ApiErrorName::InvalidRequest);
    assert_eq!(body.field.as_deref(), Some("X-Content-Sha256"));
    assert!(body.message.contains(wrong.as_str()), "{}", body.message);

    let response = http
        .put(format!("{}/v1/blobs", h.url))
        .header(CHECKSUM_HEADER, "not-a-digest")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    // The same for a droplet, whose index must not change either.
    let tgz = droplet_tgz(3);
    let response = http
        .put(format!("{}/v1/droplets/app", h.url))
        .header(CHECKSUM_HEADER, wrong.as_str())
        .body(tgz)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(h.blobs().is_empty());
    assert!(h.droplet_blobs().is_empty());
    assert!(h.client().list_droplets().await.unwrap().is_empty());
}

#[tokio::test]
async fn over_the_limit_is_413_and_nothing_is_stored() {
    let h = Harness::start(1000).await;
    let http = reqwest::Client::new();
    let bytes = pseudo_random(5000, 4);

    // Refused from its Content-Length, before reading.
    let response = http
        .put(format!("{}/v1/blobs", h.url))
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        error_body(response).await.name,
        ApiErrorName::RequestEntityTooLarge
    );

    // Refused while streaming: a chunked body has no length up front.
    let chunks: Vec<Vec<u8>> = bytes.chunks(700).map(<[u8]>::to_vec).collect();
    for url in [
        format!("{}/v1/blobs", h.url),
        format!("{}/v1/droplets/app/upload", h.url),
    ] {
        let response = http
            .request(
                if url.ends_with("upload") {
                    reqwest::Method::POST
                } else {
                    reqwest::Method::PUT
                },
                &url,
            )
            .body(reqwest::Body::wrap_stream(futures::stream::iter(
                chunks.clone().into_iter().map(Ok::<_, std::io::Error>),
            )))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE, "{url}");
    }

    // Exactly the limit is fine.
    let response = http
        .put(format!("{}/v1/blobs", h.url))
        .body(bytes[..1000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(
        h.blobs(),
        vec![Sha256Hex::of_bytes(&bytes[..1000]).to_string()]
    );
    assert!(h.droplet_blobs().is_empty());
}

#[tokio::test]
async fn droplet_upload_list_download_delete() {
    let h = Harness::start(64 * 1024 * 1024).await;
    let client = h.client();
    let local = tempfile::tempdir().unwrap();
    let tgz = droplet_tgz(5);
    let source = write_file(local.path(), "droplet.tgz", &tgz);
    let metadata = DropletMetadata {
        buildpack: Some("go_buildpack".into()),
        start_command: Some("./run.sh --greeting 'hé llo'\n&x=1".into()),
        stack: Some("cflinuxfs4".into()),
    };

    let droplet = client
        .upload_droplet("my-app", &source, &metadata, |_| {})
        .await
        .unwrap();
    assert_eq!(droplet.name.as_str(), "my-app");
    assert_eq!(droplet.sha256, Sha256Hex::of_bytes(&tgz));
    assert_eq!(droplet.size, tgz.len() as u64);
    assert_eq!(droplet.metadata(), metadata);
    assert!(droplet.created_at > 0);

    let listed = client.list_droplets().await.unwrap();
    assert_eq!(listed, vec![droplet.clone()]);
    assert_eq!(client.droplet("my-app").await.unwrap(), droplet);

    let dest = local.path().join("downloaded.tgz");
    let info = client
        .download_droplet("my-app", &dest, |_| {})
        .await
        .unwrap();
    assert_eq!(info.sha256, droplet.sha256);
    assert!(std::fs::read(&dest).unwrap() == tgz);

    let updated = client
        .set_droplet_metadata(
            "my-app",
            &DropletMetadata {
                start_command: Some("./other".into()),
                ..DropletMetadata::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.start_command.as_deref(), Some("./other"));
    assert_eq!(updated.buildpack, None);
    assert_eq!(updated.sha256, droplet.sha256);

    // Replacing it drops the old bytes.
    let newer = write_file(local.path(), "newer.tgz", &droplet_tgz(6));
    let replaced = client
        .upload_droplet("my-app", &newer, &DropletMetadata::default(), |_| {})
        .await
        .unwrap();
    assert_ne!(replaced.sha256, droplet.sha256);
    assert_eq!(h.droplet_blobs(), vec![replaced.sha256.to_string()]);

    client.delete_droplet("my-app").await.unwrap();
    assert!(client.list_droplets().await.unwrap().is_empty());
    assert!(h.droplet_blobs().is_empty());
    let (status, body) = api_error(
        client
            .download_droplet("my-app", &dest, |_| {})
            .await
            .unwrap_err(),
    );
    assert_eq!((status, body.name), (404, ApiErrorName::ResourceNotFound));
    let (status, _) = api_error(client.delete_droplet("my-app").await.unwrap_err());
    assert_eq!(status, 404);
    // The failed download left the earlier file as it was.
    assert!(std::fs::read(&dest).unwrap() == tgz);
}

#[tokio::test]
async fn export_then_import_round_trips_byte_for_byte() {
    let h = Harness::start(64 * 1024 * 1024).await;
    let client = h.client();
    let local = tempfile::tempdir().unwrap();
    let tgz = droplet_tgz(7);
    let original = write_file(local.path(), "original.tgz", &tgz);
    let metadata = DropletMetadata {
        start_command: Some("./run.sh".into()),
        ..DropletMetadata::default()
    };
    client
        .upload_droplet("app", &original, &metadata, |_| {})
        .await
        .unwrap();

    let exported = local.path().join("exported.tgz");
    client
        .download_droplet("app", &exported, |_| {})
        .await
        .unwrap();
    let imported = client
        .upload_droplet("app-copy", &exported, &metadata, |_| {})
        .await
        .unwrap();
    let again = local.path().join("again.tgz");
    client
        .download_droplet("app-copy", &again, |_| {})
        .await
        .unwrap();
    assert!(std::fs::read(&again).unwrap() == tgz);
    assert_eq!(imported.sha256, Sha256Hex::of_bytes(&tgz));

    // Same bytes, one file; deleting one droplet keeps the other's bytes.
    assert_eq!(h.droplet_blobs().len(), 1);
    client.delete_droplet("app").await.unwrap();
    assert_eq!(h.droplet_blobs().len(), 1);
    let last = local.path().join("last.tgz");
    client
        .download_droplet("app-copy", &last, |_| {})
        .await
        .unwrap();
    assert!(std::fs::read(&last).unwrap() == tgz);
}

#[tokio::test]
async fn malicious_droplets_are_refused_naming_the_entry() {
    let h = Harness::start(64 * 1024 * 1024).await;
    let client = h.client();
    let local = tempfile::tempdir().unwrap();
    let cases = [
        (raw_tar("../evil", tar::EntryType::Regular, None), "../evil"),
        (
            raw_tar("/etc/evil", tar::EntryType::Regular, None),
            "/etc/evil",
        ),
        (
            raw_tar("link", tar::EntryType::Symlink, Some("../../outside")),
            "link",
        ),
        (
            raw_tar("passwd", tar::EntryType::Link, Some("/etc/passwd")),
            "passwd",
        ),
    ];
    for (tar, entry) in cases {
        let path = write_file(local.path(), "bad.tar", &tar);
        let (status, body) = api_error(
            client
                .upload_droplet("bad", &path, &DropletMetadata::default(), |_| {})
                .await
                .unwrap_err(),
        );
        assert_eq!((status, body.name), (400, ApiErrorName::InvalidRequest));
        assert!(
            body.message.contains(&format!("{entry:?}")),
            "{entry}: {}",
            body.message
        );
    }

    // The executor's upload route checks too.
    let response = reqwest::Client::new()
        .post(format!("{}/v1/droplets/bad/upload", h.url))
        .body(raw_tar("../evil", tar::EntryType::Regular, None))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    // Not a tar at all.
    let path = write_file(local.path(), "notes.txt", &[b'x'; 4096]);
    let (status, _) = api_error(
        client
            .upload_droplet("bad", &path, &DropletMetadata::default(), |_| {})
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 400);

    assert!(client.list_droplets().await.unwrap().is_empty());
    assert!(h.droplet_blobs().is_empty());
}

#[tokio::test]
async fn droplet_put_needs_a_checksum_but_the_executor_upload_does_not() {
    let h = Harness::start(64 * 1024 * 1024).await;
    let http = reqwest::Client::new();
    let tgz = droplet_tgz(8);

    let response = http
        .put(format!("{}/v1/droplets/app", h.url))
        .body(tgz.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        error_body(response).await.field.as_deref(),
        Some("X-Content-Sha256")
    );
    assert!(h.droplet_blobs().is_empty());

    // As the executor's upload action sends it: a POST of the bytes, with
    // the metadata in the URL the recipe names.
    let response = http
        .post(format!("{}/v1/droplets/app/upload", h.url))
        .query(&[("start_command", "./run.sh"), ("buildpack", "go")])
        .body(tgz.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let droplet = h.client().droplet("app").await.unwrap();
    assert_eq!(droplet.sha256, Sha256Hex::of_bytes(&tgz));
    assert_eq!(droplet.start_command.as_deref(), Some("./run.sh"));
    assert_eq!(droplet.buildpack.as_deref(), Some("go"));

    // Uploading again replaces it: 200, not 201.
    let response = http
        .post(format!("{}/v1/droplets/app/upload", h.url))
        .body(tgz)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let response = http
        .post(format!("{}/v1/droplets/app/upload?colour=blue", h.url))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response = http
        .post(format!("{}/v1/droplets/bad.name/upload", h.url))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_body(response).await.field.as_deref(), Some("name"));
}

#[tokio::test]
async fn static_files_are_served_and_escapes_refused() {
    let h = Harness::start(1024).await;
    let root = h.static_dir.path();
    std::fs::create_dir(root.join("docker")).unwrap();
    std::fs::write(root.join("builder"), b"builder binary").unwrap();
    std::fs::write(root.join("docker/launcher"), b"launcher binary").unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), b"secret").unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret"), root.join("leak")).unwrap();

    let http = reqwest::Client::new();
    for (path, contents) in [
        ("builder", &b"builder binary"[..]),
        ("docker/launcher", &b"launcher binary"[..]),
    ] {
        let response = http
            .get(format!("{}/v1/static/{path}", h.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(&response.bytes().await.unwrap()[..], contents);
    }

    // Raw requests: an HTTP client would normalize `..` away before sending.
    let app = router(h.fs.clone());
    let status = |uri: &'static str| {
        let app = app.clone();
        async move {
            let request = Request::get(uri).body(Body::empty()).unwrap();
            app.oneshot(request).await.unwrap().status()
        }
    };
    for uri in [
        "/v1/static/../secret",
        "/v1/static/..%2F..%2Fetc%2Fpasswd",
        "/v1/static/%2e%2e/secret",
        "/v1/static/docker/../builder",
        "/v1/static/docker/./launcher",
        "/v1/static/%2Fetc%2Fpasswd",
    ] {
        assert_eq!(status(uri).await, StatusCode::BAD_REQUEST, "{uri}");
    }
    for uri in [
        "/v1/static/leak",
        "/v1/static/docker",
        "/v1/static/missing",
        "/v1/static/builder/x",
    ] {
        assert_eq!(status(uri).await, StatusCode::NOT_FOUND, "{uri}");
    }
    assert_eq!(status("/v1/static/builder").await, StatusCode::OK);
}

#[tokio::test]
async fn a_download_with_the_wrong_checksum_leaves_no_file() {
    // A server that lies about the digest, or sends none.
    let lying = axum::Router::new()
        .route(
            "/v1/droplets/app/download",
            axum::routing::get(|| async {
                (
                    [(CHECKSUM_HEADER, Sha256Hex::of_bytes(b"other").to_string())],
                    "not those bytes",
                )
            }),
        )
        .route(
            "/v1/droplets/bare/download",
            axum::routing::get(|| async { "no digest" }),
        );
    let url = serve(lying).await;
    let client = FileServerClient::new(url, None);
    let local = tempfile::tempdir().unwrap();
    let dest = write_file(local.path(), "app.tgz", b"previous export");

    let err = client
        .download_droplet("app", &dest, |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::ChecksumMismatch { .. }), "{err}");
    let err = client
        .download_droplet("bare", &dest, |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Decode { .. }), "{err}");
    assert_eq!(files_in(local.path()), vec!["app.tgz".to_string()]);
    assert_eq!(std::fs::read(&dest).unwrap(), b"previous export");
}

#[tokio::test]
async fn the_client_sends_its_credentials() {
    let h = Harness::start(1024).await;
    let guarded = router(h.fs.clone()).layer(axum::middleware::from_fn(
        |request: axum::extract::Request, next: axum::middleware::Next| async move {
            // "user:pass" in base64.
            let expected = "Basic dXNlcjpwYXNz";
            match request.headers().get("authorization") {
                Some(value) if value == expected => next.run(request).await,
                _ => StatusCode::UNAUTHORIZED.into_response(),
            }
        },
    ));
    let url = serve(guarded).await;
    let with = FileServerClient::new(&url, Some(Credentials::new("user", "pass")));
    assert!(with.list_droplets().await.unwrap().is_empty());
    let without = FileServerClient::new(&url, None);
    let err = without.list_droplets().await.unwrap_err();
    assert!(
        matches!(err, ClientError::UnexpectedStatus { status: 401, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn droplets_survive_a_restart_and_orphans_are_removed() {
    let h = Harness::start(64 * 1024 * 1024).await;
    let local = tempfile::tempdir().unwrap();
    let source = write_file(local.path(), "d.tgz", &droplet_tgz(9));
    let droplet = h
        .client()
        .upload_droplet("kept", &source, &DropletMetadata::default(), |_| {})
        .await
        .unwrap();
    // What a crash between storing bytes and recording them leaves.
    let orphan = Sha256Hex::of_bytes(b"orphan");
    std::fs::write(
        h.data.path().join("droplets").join(orphan.as_str()),
        b"orphan",
    )
    .unwrap();
    std::fs::write(h.data.path().join("droplets/.upload-x"), b"half").unwrap();

    let config = FileServerConfig::new(h.data.path());
    let reopened = FileServer::open(config).await.unwrap();
    assert_eq!(reopened.droplets().await, vec![droplet.clone()]);
    assert_eq!(h.droplet_blobs(), vec![droplet.sha256.to_string()]);
}
