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
        Lattice::start_with(data_dir, port, Some(&cell_id(data_dir)))
    }

    /// `lattice up` with `--cell-id` when `cell_id` is given, else the data
    /// dir's default one.
    fn start_with(data_dir: &Path, port: u16, cell_id: Option<&str>) -> Lattice {
        let mut command = Command::new(env!("CARGO_BIN_EXE_lattice"));
        command
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
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if let Some(cell_id) = cell_id {
            command.args(["--cell-id", cell_id]);
        }
        let child = command.spawn().expect("spawn lattice");
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

/// Removes, when dropped, every container the cells of these ids left
/// (default ids are only known once the clusters made them).
#[derive(Default)]
struct Leftovers(Vec<String>);

impl Drop for Leftovers {
    fn drop(&mut self) {
        let owners = std::mem::take(&mut self.0);
        let runtime = tokio::runtime::Runtime::new().expect("a runtime");
        runtime.block_on(async {
            let docker = lattice_testkit::docker::connect().await;
            for owner in owners {
                let _ = lattice_testkit::docker::remove_containers_by_label(&docker, &owner).await;
            }
        });
    }
}

fn default_cell_id(data_dir: &Path) -> String {
    std::fs::read_to_string(data_dir.join(lattice::cell::CELL_ID_FILE))
        .expect("the cluster kept its cell id in its data dir")
        .trim()
        .to_string()
}

/// Desires one instance of a process that runs until stopped.
fn desire_clock(lattice: &Lattice, rootfs: &str) {
    let resp = reqwest::blocking::Client::new()
        .post(format!("{}/v1/desired_lrps", lattice.base))
        .json(&json!({
            "process_guid": "clock", "domain": "apps", "rootfs": rootfs, "instances": 1,
            "action": {"run": {"path": "/bin/sh", "args": ["-c", "while sleep 1; do :; done"]}}
        }))
        .send()
        .expect("desire");
    assert_eq!(resp.status(), 201);
}

/// The running instance of `clock`: its instance guid and cell id.
fn running_clock(lattice: &Lattice) -> (String, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let lrps: Vec<Value> =
            reqwest::blocking::get(format!("{}/v1/actual_lrps/clock", lattice.base))
                .and_then(|r| r.json())
                .unwrap_or_default();
        if let [lrp] = lrps.as_slice() {
            if lrp["state"] == "RUNNING" {
                let field = |name: &str| lrp[name].as_str().expect("a string").to_string();
                return (field("instance_guid"), field("cell_id"));
            }
        }
        assert!(Instant::now() < deadline, "clock is not running: {lrps:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How many of `owner`'s containers run an instance: a process runs in
/// them (`lattice up` also keeps an empty spare container per app).
fn instance_containers_of(owner: &str) -> usize {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(async {
        let docker = lattice_testkit::docker::connect().await;
        let mut running = 0;
        for name in common::containers_of(owner).await {
            // One gone meanwhile runs nothing.
            if let Ok(inspect) = docker
                .inspect_container(name.trim_start_matches('/'), None)
                .await
            {
                if inspect.exec_ids.is_some_and(|ids| !ids.is_empty()) {
                    running += 1;
                }
            }
        }
        running
    })
}

/// Issue 14: the default cell id was `cell-HOSTNAME` for every cluster, and
/// a cell destroys at start every container carrying its id, so a second
/// `lattice up` on one engine destroyed the first one's instances.
#[test]
fn two_clusters_on_one_engine_keep_their_own_instances() {
    let rootfs = tokio::runtime::Runtime::new()
        .expect("a runtime")
        .block_on(lattice_testkit::images::busybox_image());
    let (one, two, three) = (
        tempfile::tempdir().expect("temp dir"),
        tempfile::tempdir().expect("temp dir"),
        tempfile::tempdir().expect("temp dir"),
    );
    let mut leftovers = Leftovers::default();

    let first = Lattice::start_with(one.path(), free_port(), None);
    let first_id = default_cell_id(one.path());
    leftovers.0.push(first_id.clone());
    desire_clock(&first, &rootfs);
    let (first_instance, cell) = running_clock(&first);
    assert_eq!(cell, first_id);

    let second = Lattice::start_with(two.path(), free_port(), None);
    let second_id = default_cell_id(two.path());
    leftovers.0.push(second_id.clone());
    assert_ne!(first_id, second_id, "each data dir has its own cell id");
    desire_clock(&second, &rootfs);
    let (_, cell) = running_clock(&second);
    assert_eq!(cell, second_id);
    assert_eq!(
        running_clock(&first),
        (first_instance.clone(), first_id.clone()),
        "the first cluster's instance was not touched"
    );
    assert_eq!(instance_containers_of(&first_id), 1);
    assert_eq!(instance_containers_of(&second_id), 1);

    // A cell started with a live cell's id is refused, and touches nothing.
    let port = free_port();
    let refused = Command::new(env!("CARGO_BIN_EXE_lattice"))
        .args([
            "up",
            "--router-listen",
            "127.0.0.1:0",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--log",
            "off",
            "--cell-id",
            &first_id,
        ])
        .arg("--data-dir")
        .arg(three.path())
        .arg("--lifecycle-dir")
        .arg(common::lifecycle_dir())
        .output()
        .expect("run lattice");
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains(&format!(
            "cell id {first_id} is in use by a running cell on this Docker engine"
        )),
        "{stderr}"
    );
    assert_eq!(running_clock(&first), (first_instance, first_id.clone()));
    assert_eq!(instance_containers_of(&first_id), 1);

    first.stop();
    second.stop();
    // Stopped cleanly, a cell lets its id go: it starts again at once.
    let again = Lattice::start_with(one.path(), free_port(), None);
    assert_eq!(default_cell_id(one.path()), first_id);
    running_clock(&again);
    again.stop();
}
