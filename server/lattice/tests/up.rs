//! End-to-end tests of the `lattice up` binary: it starts, serves, stops
//! cleanly on SIGTERM, and keeps desired state across restarts.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// One cell id per data dir, so parallel tests do not share containers.
fn cell_id(data_dir: &Path) -> String {
    let name = data_dir.file_name().and_then(|n| n.to_str()).unwrap_or("x");
    let cleaned: String = name.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    format!("up-test-{cleaned}")
}

fn free_port() -> u16 {
    // Bind port 0 and release it; the server binds it right after.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

struct Lattice {
    child: Child,
    base: String,
}

impl Lattice {
    fn start(data_dir: &Path, port: u16) -> Lattice {
        let child = Command::new(env!("CARGO_BIN_EXE_lattice"))
            .args([
                "up",
                "--router-listen",
                "127.0.0.1:0",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--log",
                "warn",
            ])
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--lifecycle-dir")
            .arg(common::lifecycle_dir())
            .args(["--cell-id", &cell_id(data_dir)])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn lattice");
        let lattice = Lattice {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while reqwest::blocking::get(format!("{}/v1/info", lattice.base)).is_err() {
            assert!(Instant::now() < deadline, "lattice did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        lattice
    }

    /// SIGTERM, then wait: a clean stop exits 0.
    fn stop(mut self) {
        // SAFETY-free: kill(2) through the libc crate on our own child's pid.
        let pid = self.child.id() as libc::pid_t;
        #[allow(unsafe_code)]
        // SAFETY: sending a signal to a pid we spawned and have not reaped.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill failed");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "lattice exited with {status}");
                return;
            }
            assert!(Instant::now() < deadline, "lattice did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Lattice {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn desired_state_survives_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let http = reqwest::blocking::Client::new();

    let lattice = Lattice::start(dir.path(), port);
    let resp = http
        .post(format!("{}/v1/desired_lrps", lattice.base))
        .json(&json!({
            "process_guid": "web", "domain": "apps", "rootfs": "docker:///busybox",
            "instances": 3, "action": {"run": {"path": "/bin/httpd"}}
        }))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 201);
    let resp = http
        .post(format!("{}/v1/tasks", lattice.base))
        .json(&json!({
            "task_guid": "t1", "domain": "jobs", "rootfs": "docker:///busybox",
            "action": {"run": {"path": "/bin/true"}}
        }))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 201);
    // An SSE follower must not keep the server from stopping.
    let _follower = http
        .get(format!("{}/v1/events", lattice.base))
        .send()
        .unwrap();
    lattice.stop();

    let lattice = Lattice::start(dir.path(), port);
    let lrp: Value = http
        .get(format!("{}/v1/desired_lrps/web", lattice.base))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(lrp["instances"], 3);
    let task: Value = http
        .get(format!("{}/v1/tasks/t1", lattice.base))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(task["task_guid"], "t1");
    lattice.stop();
}

#[test]
fn port_in_use_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = busy.local_addr().unwrap().port();
    let output = Command::new(env!("CARGO_BIN_EXE_lattice"))
        .args([
            "up",
            "--router-listen",
            "127.0.0.1:0",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--log",
            "off",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .expect("run lattice");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot listen on"), "{stderr}");
}
