//! The executor against the real Docker engine, through the Docker Garden, in
//! containers of the locally built busybox image.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{tgz, TestServer};
use lattice_executor::{
    ActionError, CollectingSink, ContainerRequest, Executor, ExecutorConfig, Limits, RunContext,
    RESULT_FILE_MAX_BYTES,
};
use lattice_garden::docker::{DockerGarden, DockerGardenConfig};
use lattice_models::action::{Action, DownloadAction, TimeoutAction, UploadAction};
use lattice_models::log::MessageType;
use lattice_testkit::docker::OwnerGuard;
use tokio_util::sync::CancellationToken;

struct Harness {
    executor: Executor,
    sink: Arc<CollectingSink>,
    handle: String,
    // Dropped last: removes the test's containers even when it panics.
    _cache: tempfile::TempDir,
    _owner: OwnerGuard,
}

/// An executor on Docker with one fresh busybox container.
async fn harness(limits: Limits) -> Harness {
    let rootfs = lattice_testkit::images::busybox_image().await;
    let lifecycles = tokio::task::spawn_blocking(lattice_testkit::lifecycles::build_static)
        .await
        .expect("the build panics with its own message");
    let garden = DockerGarden::connect(DockerGardenConfig::new(lifecycles))
        .await
        .expect("the Docker engine is reachable");
    let owner = OwnerGuard::new("executor-test");
    let cache = tempfile::tempdir().unwrap();
    let mut config = ExecutorConfig::new(owner.owner(), cache.path());
    config.stop_grace = Duration::from_secs(2);
    let sink = CollectingSink::new();
    let executor = Executor::new(Arc::new(garden), sink.clone(), config);
    let handle = format!("{}-0", owner.owner());
    executor
        .create_container(ContainerRequest {
            handle: handle.clone(),
            rootfs,
            limits,
            properties: owner.properties(),
            ..ContainerRequest::default()
        })
        .await
        .unwrap();
    Harness {
        executor,
        sink,
        handle,
        _cache: cache,
        _owner: owner,
    }
}

impl Harness {
    async fn run_with(
        &self,
        action: &Action,
        cancel: CancellationToken,
    ) -> Result<(), ActionError> {
        let context = RunContext {
            log_guid: "guid".into(),
            log_source: "APP".into(),
            instance: "0".into(),
            env: vec![("GREETING".into(), "hi there".into())],
            disk_mb: 0,
        };
        self.executor
            .run(&self.handle, action, &context, cancel)
            .await
    }

    async fn run(&self, action: &Action) -> Result<(), ActionError> {
        self.run_with(action, CancellationToken::new()).await
    }
}

fn sh(script: &str) -> Action {
    Action::run("/bin/sh", &["-c", script])
}

#[tokio::test]
async fn run_writes_a_file_that_read_file_returns() {
    let h = harness(Limits::default()).await;
    h.run(&sh(
        "echo \"$GREETING\" > /tmp/result.txt; echo out; echo err >&2",
    ))
    .await
    .unwrap();
    let result = h
        .executor
        .read_file(&h.handle, "/tmp/result.txt", RESULT_FILE_MAX_BYTES)
        .await
        .unwrap();
    assert_eq!(result, "hi there\n");

    let messages = h.sink.messages();
    let line = |text: &str| messages.iter().find(|m| m.message == text).cloned();
    assert_eq!(
        line("out").expect("stdout logged").message_type,
        MessageType::Out
    );
    assert_eq!(
        line("err").expect("stderr logged").message_type,
        MessageType::Err
    );

    let err = h
        .executor
        .read_file(&h.handle, "/tmp", 100)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not a regular file"), "{err}");
}

#[tokio::test]
async fn failing_command_gives_its_status() {
    let h = harness(Limits::default()).await;
    let err = h.run(&sh("exit 3")).await.unwrap_err();
    assert_eq!(err.to_string(), "Exited with status 3");
}

#[tokio::test]
async fn download_unpacks_a_tgz_into_the_container() {
    let h = harness(Limits::default()).await;
    let server = TestServer::start().await;
    server.serve(
        "app.tgz",
        tgz(&[
            ("hello.txt", b"hello from the tgz\n", 0o644),
            ("bin/run", b"#!/bin/sh\necho ran\n", 0o755),
        ]),
        None,
    );
    let download = Action::Download(DownloadAction {
        from: server.file_url("app.tgz"),
        to: "/home/app".into(),
        cache_key: Some("app".into()),
        artifact: None,
        user: None,
        log_source: None,
    });
    h.run(&download).await.unwrap();
    h.run(&sh("cat /home/app/hello.txt && /home/app/bin/run"))
        .await
        .unwrap();
    let lines = h.sink.lines();
    assert!(
        lines.contains(&"hello from the tgz".to_string()),
        "{lines:?}"
    );
    assert!(lines.contains(&"ran".to_string()), "{lines:?}");
}

#[tokio::test]
async fn upload_sends_a_file_of_the_container() {
    let h = harness(Limits::default()).await;
    let server = TestServer::start().await;
    h.run(&sh("printf 'payload' > /tmp/out.bin")).await.unwrap();
    let upload = Action::Upload(UploadAction {
        from: "/tmp/out.bin".into(),
        to: server.url("/upload"),
        artifact: None,
        user: None,
        log_source: None,
    });
    h.run(&upload).await.unwrap();
    assert_eq!(
        server.uploads(),
        [axum::body::Bytes::from_static(b"payload")]
    );
}

/// No `sleep` process is left in the container.
async fn assert_no_sleep_left(h: &Harness) {
    h.run(&sh(
        "if ps | grep -v grep | grep -q 'sleep 100'; then exit 1; fi",
    ))
    .await
    .expect("the sleep was killed");
}

#[tokio::test]
async fn timeout_kills_the_process() {
    let h = harness(Limits::default()).await;
    let action = Action::Timeout(TimeoutAction {
        action: Box::new(Action::run("/bin/sleep", &["100"])),
        timeout_ns: 1_000_000_000,
        log_source: None,
    });
    let err = h.run(&action).await.unwrap_err();
    assert!(
        matches!(err, ActionError::TimedOut { timeout_ms: 1000 }),
        "{err}"
    );
    assert_no_sleep_left(&h).await;
}

#[tokio::test]
async fn cancellation_stops_a_running_process() {
    let h = harness(Limits::default()).await;
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        trigger.cancel();
    });
    let err = h
        .run_with(&Action::run("/bin/sleep", &["100"]), cancel)
        .await
        .unwrap_err();
    assert!(err.is_cancelled(), "{err}");
    assert_no_sleep_left(&h).await;
}

#[tokio::test]
async fn out_of_memory_is_named() {
    let h = harness(Limits {
        memory_mb: 32,
        ..Limits::default()
    })
    .await;
    // Holds 256 MiB in a shell variable: far beyond the limit.
    let err = h
        .run(&sh(
            "x=$(head -c 268435456 /dev/zero | tr '\\0' a); echo ${#x}",
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ActionError::OutOfMemory { status: 137 }),
        "{err}"
    );
}
