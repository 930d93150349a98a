//! A task runs at most once, even when its cell dies mid-run: the cell is
//! killed (SIGKILL, no clean-up) while the task runs, then restarted; the
//! task ends failed and its command ran exactly once.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lattice_testkit::docker::OwnerGuard;
use serde_json::{json, Value};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn start(data_dir: &Path, port: u16, cell_id: &str, log: &Path) -> Child {
    let log = std::fs::File::create(log).expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_lattice"))
        .args([
            "up",
            "--router-listen",
            "127.0.0.1:0",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--log",
            "info",
        ])
        .args(["--cell-id", cell_id, "--cell-memory-mb", "2048"])
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--lifecycle-dir")
        .arg(common::lifecycle_dir())
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn lattice");
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::blocking::get(format!("http://127.0.0.1:{port}/v1/info")).is_err() {
        assert!(Instant::now() < deadline, "lattice did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

fn task(port: u16) -> Value {
    reqwest::blocking::get(format!("http://127.0.0.1:{port}/v1/tasks/once"))
        .and_then(|r| r.json())
        .expect("task")
}

fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How often the task's command announced itself in the log hub at or after
/// `since` (the hub keeps lines of earlier runs on disk).
fn marker_count(port: u16, since: std::time::SystemTime) -> usize {
    let since = since
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos() as i64;
    let lines: Vec<Value> =
        reqwest::blocking::get(format!("http://127.0.0.1:{port}/v1/logs/once?follow=false"))
            .and_then(|r| r.json())
            .expect("recent logs");
    lines
        .iter()
        .filter(|line| line["message"].as_str() == Some("ran-the-command-once"))
        .filter(|line| line["timestamp"].as_i64().is_some_and(|t| t >= since))
        .count()
}

#[test]
fn a_task_whose_cell_dies_is_failed_and_never_rerun() {
    let rootfs = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(lattice_testkit::images::busybox_image());
    let guard = OwnerGuard::new("once-cell");
    let data = tempfile::tempdir().expect("temp dir");
    let logs = tempfile::tempdir().expect("temp dir");
    let (log1, log2) = (
        logs.path().join("first.log"),
        logs.path().join("second.log"),
    );
    let port = free_port();

    let first_started = std::time::SystemTime::now();
    let mut first = start(data.path(), port, guard.owner(), &log1);
    let resp = reqwest::blocking::Client::new()
        .post(format!("http://127.0.0.1:{port}/v1/tasks"))
        .json(&json!({
            "task_guid": "once", "domain": "tests", "rootfs": rootfs, "memory_mb": 64,
            "log_guid": "once",
            "action": {"run": {"path": "/bin/sh", "args": ["-c", "echo ran-the-command-once; sleep 300"]}}
        }))
        .send()
        .expect("submit");
    assert_eq!(resp.status(), 201);
    wait_for("the task to run", || {
        task(port)["state"] == "RUNNING" && marker_count(port, first_started) == 1
    });

    first.kill().expect("SIGKILL the cell");
    first.wait().expect("reap");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let left = rt.block_on(common::containers_of(guard.owner()));
    assert_eq!(
        left.len(),
        1,
        "the killed cell left its task container behind: {left:?}"
    );

    let second_started = std::time::SystemTime::now();
    let mut second = start(data.path(), port, guard.owner(), &log2);
    wait_for("the task to complete", || {
        task(port)["state"] == "COMPLETED"
    });
    let done = task(port);
    assert_eq!(done["failed"], true);
    assert_eq!(
        done["failure_reason"],
        "cell restarted before the task completed"
    );
    // Give a wrongly restarted task every chance to show itself.
    std::thread::sleep(Duration::from_secs(2));
    // It ran once in the first server; it must not run in the second.
    assert_eq!(
        marker_count(port, second_started),
        0,
        "the command must run exactly once"
    );
    // The first run's line survived the kill: the hub keeps lines on disk.
    assert_eq!(marker_count(port, first_started), 1);
    // The restarted cell destroys what it does not keep in the background.
    wait_for("the task's container to be destroyed", || {
        rt.block_on(common::containers_of(guard.owner())).is_empty()
    });
    second.kill().expect("stop");
    second.wait().expect("reap");
}
