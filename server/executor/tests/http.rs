//! Downloads and uploads against a local HTTP server, into and out of the
//! fake Garden.

mod common;

use std::sync::Arc;

use common::{tgz, TestServer};
use lattice_executor::fake::FakeGarden;
use lattice_executor::{
    ActionError, CollectingSink, ContainerRequest, Executor, ExecutorConfig, RunContext,
};
use lattice_models::action::{Action, DownloadAction, UploadAction};
use tokio_util::sync::CancellationToken;

const HANDLE: &str = "c1";

struct Harness {
    garden: FakeGarden,
    sink: Arc<CollectingSink>,
    executor: Executor,
    server: TestServer,
    _cache: tempfile::TempDir,
}

async fn harness() -> Harness {
    let garden = FakeGarden::new();
    let sink = CollectingSink::new();
    let cache = tempfile::tempdir().unwrap();
    let config = ExecutorConfig::new("cell", cache.path().join("downloads"));
    let executor = Executor::new(Arc::new(garden.clone()), sink.clone(), config);
    executor
        .create_container(ContainerRequest {
            handle: HANDLE.into(),
            rootfs: "docker:///busybox".into(),
            ..ContainerRequest::default()
        })
        .await
        .unwrap();
    Harness {
        garden,
        sink,
        executor,
        server: TestServer::start().await,
        _cache: cache,
    }
}

impl Harness {
    async fn run(&self, action: Action) -> Result<(), ActionError> {
        let context = RunContext {
            log_guid: "guid".into(),
            log_source: "STG".into(),
            ..RunContext::default()
        };
        self.executor
            .run(HANDLE, &action, &context, CancellationToken::new())
            .await
    }
}

fn download(from: String, to: &str, cache_key: Option<&str>) -> Action {
    Action::Download(DownloadAction {
        from,
        to: to.into(),
        cache_key: cache_key.map(str::to_string),
        artifact: None,
        user: None,
        log_source: None,
    })
}

fn upload(from: &str, to: String) -> Action {
    Action::Upload(UploadAction {
        from: from.into(),
        to,
        artifact: Some("droplet".into()),
        user: None,
        log_source: None,
    })
}

#[tokio::test]
async fn tgz_is_unpacked_into_the_destination() {
    let h = harness().await;
    let archive = tgz(&[
        ("bin/run", b"#!/bin/sh\n", 0o755),
        ("README", b"read me", 0o644),
    ]);
    h.server.serve("app.tgz", archive, None);
    let mut action = download(h.server.file_url("app.tgz"), "/app", None);
    if let Action::Download(d) = &mut action {
        d.artifact = Some("app bits".into());
    }
    h.run(action).await.unwrap();

    assert_eq!(h.garden.streamed_in()[0].1, "/app");
    assert_eq!(h.garden.file(HANDLE, "/app/README").unwrap(), "read me");
    assert_eq!(
        h.garden.file(HANDLE, "/app/bin/run").unwrap(),
        "#!/bin/sh\n"
    );
    let lines = h.sink.lines();
    assert_eq!(lines[0], "Downloading app bits...");
    assert!(lines[1].starts_with("Downloaded app bits ("), "{lines:?}");
    assert!(h.sink.messages().iter().all(|m| m.source_type == "STG"));
}

#[tokio::test]
async fn a_plain_file_is_written_at_the_destination() {
    let h = harness().await;
    h.server.serve("note", "hello", None);
    h.run(download(h.server.file_url("note"), "/tmp/note.txt", None))
        .await
        .unwrap();
    assert_eq!(h.garden.streamed_in()[0].1, "/tmp");
    assert_eq!(h.garden.file(HANDLE, "/tmp/note.txt").unwrap(), "hello");
}

#[tokio::test]
async fn without_a_cache_key_every_download_fetches() {
    let h = harness().await;
    h.server.serve("a.tgz", tgz(&[("a", b"1", 0o644)]), None);
    for _ in 0..2 {
        h.run(download(h.server.file_url("a.tgz"), "/a", None))
            .await
            .unwrap();
    }
    assert_eq!(h.server.hits("a.tgz"), 2);
}

#[tokio::test]
async fn cached_download_without_validators_is_not_fetched_again() {
    let h = harness().await;
    h.server
        .serve("lifecycle.tgz", tgz(&[("builder", b"v1", 0o755)]), None);
    let url = h.server.file_url("lifecycle.tgz");
    h.run(download(url.clone(), "/a", Some("lifecycle")))
        .await
        .unwrap();
    h.run(download(url.clone(), "/b", Some("lifecycle")))
        .await
        .unwrap();
    assert_eq!(h.server.hits("lifecycle.tgz"), 1);
    assert_eq!(h.garden.file(HANDLE, "/b/builder").unwrap(), "v1");

    // Another executor with the same cache directory reuses it too: the
    // cache is on disk, not in memory.
    let config = ExecutorConfig::new("cell", h._cache.path().join("downloads"));
    let again = Executor::new(Arc::new(h.garden.clone()), h.sink.clone(), config);
    again
        .run(
            HANDLE,
            &download(url, "/c", Some("lifecycle")),
            &RunContext::default(),
            CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(h.server.hits("lifecycle.tgz"), 1);
    assert_eq!(h.garden.file(HANDLE, "/c/builder").unwrap(), "v1");
}

#[tokio::test]
async fn cached_download_is_revalidated_with_its_etag() {
    let h = harness().await;
    let url = h.server.file_url("droplet.tgz");
    h.server
        .serve("droplet.tgz", tgz(&[("app", b"v1", 0o644)]), Some("\"v1\""));
    h.run(download(url.clone(), "/one", Some("droplet")))
        .await
        .unwrap();
    h.run(download(url.clone(), "/two", Some("droplet")))
        .await
        .unwrap();
    assert_eq!(h.server.hits("droplet.tgz"), 2);
    assert_eq!(h.server.not_modified(), 1, "the second fetch was a 304");
    assert_eq!(h.garden.file(HANDLE, "/two/app").unwrap(), "v1");

    h.server
        .serve("droplet.tgz", tgz(&[("app", b"v2", 0o644)]), Some("\"v2\""));
    h.run(download(url, "/three", Some("droplet")))
        .await
        .unwrap();
    assert_eq!(h.server.not_modified(), 1);
    assert_eq!(h.garden.file(HANDLE, "/three/app").unwrap(), "v2");
}

#[tokio::test]
async fn a_new_url_under_the_same_key_is_fetched() {
    let h = harness().await;
    h.server.serve("v1.tgz", tgz(&[("f", b"one", 0o644)]), None);
    h.server.serve("v2.tgz", tgz(&[("f", b"two", 0o644)]), None);
    h.run(download(h.server.file_url("v1.tgz"), "/x", Some("key")))
        .await
        .unwrap();
    h.run(download(h.server.file_url("v2.tgz"), "/y", Some("key")))
        .await
        .unwrap();
    assert_eq!(h.garden.file(HANDLE, "/y/f").unwrap(), "two");
}

#[tokio::test]
async fn failed_downloads_say_why() {
    let h = harness().await;
    let url = h.server.file_url("missing");
    let err = h.run(download(url.clone(), "/x", None)).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("failed to download {url}: server answered 404")
    );

    // Nothing listens on port 1.
    let err = h
        .run(download("http://127.0.0.1:1/x".into(), "/x", Some("k")))
        .await
        .unwrap_err();
    let reason = err.to_string();
    assert!(reason.contains("request failed"), "{reason}");
    assert!(
        reason.to_lowercase().contains("refused"),
        "the cause is named: {reason}"
    );
    assert!(h.garden.streamed_in().is_empty());
}

#[tokio::test]
async fn upload_posts_the_file() {
    let h = harness().await;
    h.garden
        .put_file(HANDLE, "/tmp/droplet.tgz", vec![7u8; 3000]);
    h.run(upload("/tmp/droplet.tgz", h.server.url("/upload")))
        .await
        .unwrap();
    let uploads = h.server.uploads();
    assert_eq!(uploads.len(), 1);
    assert_eq!(uploads[0].as_ref(), vec![7u8; 3000].as_slice());
    assert_eq!(
        h.sink.lines(),
        ["Uploading droplet...", "Uploaded droplet (2.9K)"]
    );
}

#[tokio::test]
async fn failed_uploads_say_why() {
    let h = harness().await;
    h.garden.put_file(HANDLE, "/tmp/f", "x");
    let to = h.server.url("/reject");
    let err = h.run(upload("/tmp/f", to.clone())).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("failed to upload /tmp/f to {to}: server answered 500")
    );

    let err = h
        .run(upload("/tmp/missing", h.server.url("/upload")))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("/tmp/missing not found"), "{err}");
    assert!(h.server.uploads().is_empty());
}

/// Regression (issue 15): a 2 MB gzip that expands to 2 GB was unzipped in
/// the cell's memory. Now it is unzipped to disk up to the container's disk
/// limit and the action fails with a clear error past it; nothing is
/// streamed in and no scratch file is left behind.
#[tokio::test]
async fn regression_a_decompression_bomb_fails_at_the_disk_limit() {
    let h = harness().await;
    // 256 MiB of zeros in a tar, gzip'd to a few hundred KiB.
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(256 << 20);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    builder
        .append_data(
            &mut header,
            "zeros",
            std::io::Read::take(std::io::repeat(0), 256 << 20),
        )
        .unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut gz, &builder.into_inner().unwrap()).unwrap();
    let bomb = gz.finish().unwrap();
    assert!(bomb.len() < 2 << 20, "{}", bomb.len());
    h.server.serve("bomb.tgz", bomb, None);

    let context = RunContext {
        log_guid: "guid".into(),
        log_source: "STG".into(),
        disk_mb: 8,
        ..RunContext::default()
    };
    let action = download(h.server.file_url("bomb.tgz"), "/app", None);
    let err = h
        .executor
        .run(HANDLE, &action, &context, CancellationToken::new())
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(message.contains("more than 8388608 bytes"), "{message}");
    assert!(h.garden.streamed_in().is_empty());
    let scratch = h._cache.path().join("downloads");
    let left: Vec<_> = std::fs::read_dir(&scratch)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");

    // A plain body past the limit is cut off while it downloads.
    h.server.serve("big", vec![b'x'; 9 << 20], None);
    let action = download(h.server.file_url("big"), "/tmp/big", Some("big"));
    let err = h
        .executor
        .run(HANDLE, &action, &context, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("more than 8388608 bytes"), "{err}");
}
