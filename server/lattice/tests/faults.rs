//! The fault suite (issue 15): a real `lattice up` (the binary, killed with
//! SIGKILL and started again on the same data dir) on the real Docker
//! engine.
//!
//! - (a) writes under random `kill -9` and restarts: no acknowledged write
//!   is lost;
//! - (b) tasks under container and server kills: none runs twice, all
//!   settle;
//! - (c) instance kills under router load: no 5xx;
//! - (f) a restart with many instances: the API answers while the
//!   leftovers are still being destroyed, and healthy instances are kept
//!   (same instance guid, same container).
//!
//! Seeded: every run prints its seed; `LATTICE_FAULTS_SEED=N` runs it again.
//! Small by default (CI); `LATTICE_FAULTS_SIZE=full` runs the sizes whose
//! figures are in docs/reliability.md (`LATTICE_FAULTS_INSTANCES=N` sets the
//! instances of (f)). Figures are printed, never asserted.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use lattice_testkit::docker::OwnerGuard;
use serde_json::{json, Value};

/// Upper bound on any one wait, so a broken server fails the suite instead
/// of hanging it. Not a performance claim.
const PATIENCE: Duration = Duration::from_secs(120);

fn full_size() -> bool {
    std::env::var("LATTICE_FAULTS_SIZE").is_ok_and(|s| s == "full")
}

/// The suite's random source, seeded from `LATTICE_FAULTS_SEED` or the
/// clock; the seed is printed so a failing run can be repeated.
fn seeded(test: &str) -> fastrand::Rng {
    let seed = match std::env::var("LATTICE_FAULTS_SEED") {
        Ok(seed) => seed.parse().expect("LATTICE_FAULTS_SEED is a number"),
        Err(_) => SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("after 1970")
            .as_nanos() as u64,
    };
    println!("faults {test}: seed {seed} (LATTICE_FAULTS_SEED={seed} repeats it)");
    fastrand::Rng::with_seed(seed)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One `lattice up` on a data dir that outlives its process.
struct Lattice {
    child: Option<Child>,
    port: u16,
    router_port: u16,
    data: tempfile::TempDir,
    logs: tempfile::TempDir,
    runs: usize,
    http: reqwest::blocking::Client,
    // Last: removes every container of the cell when the test ends.
    guard: OwnerGuard,
}

impl Lattice {
    fn start(name: &str) -> Lattice {
        let mut lattice = Lattice {
            child: None,
            port: free_port(),
            router_port: free_port(),
            data: tempfile::tempdir().expect("temp dir"),
            logs: tempfile::tempdir().expect("temp dir"),
            runs: 0,
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
            guard: OwnerGuard::new(name),
        };
        lattice.spawn();
        lattice.wait_up();
        lattice
    }

    fn spawn(&mut self) {
        self.runs += 1;
        let log = self.logs.path().join(format!("run-{}.log", self.runs));
        let log = std::fs::File::create(log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_lattice"))
            .args(["up", "--log", "info", "--converge-interval", "1s"])
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args([
                "--router-listen",
                &format!("127.0.0.1:{}", self.router_port),
            ])
            .args(["--cell-id", self.guard.owner(), "--cell-memory-mb", "4096"])
            .arg("--data-dir")
            .arg(self.data.path())
            .arg("--lifecycle-dir")
            .arg(common::lifecycle_dir())
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn lattice");
        self.child = Some(child);
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn answers(&self) -> bool {
        self.http
            .get(self.url("/v1/info"))
            .timeout(Duration::from_secs(1))
            .send()
            .is_ok_and(|r| r.status().is_success())
    }

    fn wait_up(&mut self) {
        let deadline = Instant::now() + PATIENCE;
        while !self.answers() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                let log = self.logs.path().join(format!("run-{}.log", self.runs));
                let log = std::fs::read_to_string(log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                panic!(
                    "lattice exited with {status}; its log ends:\n{}",
                    tail.join("\n")
                );
            }
            assert!(Instant::now() < deadline, "lattice did not come up");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL: no clean-up of any kind.
    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL lattice");
            child.wait().expect("reap lattice");
        }
    }

    /// Starts it again on the same data dir; how long until the API answered.
    fn restart(&mut self) -> Duration {
        self.kill9();
        let started = Instant::now();
        self.spawn();
        self.wait_up();
        started.elapsed()
    }

    fn get(&self, path: &str) -> Option<Value> {
        let response = self.http.get(self.url(path)).send().ok()?;
        response
            .status()
            .is_success()
            .then(|| response.json().ok())?
    }

    fn post(&self, path: &str, body: &Value) -> Option<u16> {
        self.http
            .post(self.url(path))
            .json(body)
            .send()
            .ok()
            .map(|r| r.status().as_u16())
    }

    fn owner(&self) -> &str {
        self.guard.owner()
    }
}

impl Drop for Lattice {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().expect("runtime")
}

fn busybox() -> String {
    runtime().block_on(lattice_testkit::images::busybox_image())
}

/// A web app of busybox httpd answering its index on `$PORT`.
fn web_app(guid: &str, rootfs: &str, instances: usize) -> Value {
    json!({
        "process_guid": guid, "domain": "faults", "rootfs": rootfs,
        "instances": instances, "memory_mb": 16, "ports": [8080],
        "log_guid": guid,
        "routes": {"cf-router": [{"hostnames": [format!("{guid}.localhost")], "port": 8080}]},
        "action": {"run": {"path": "/bin/sh", "args": ["-c",
            "echo $INSTANCE_INDEX > /tmp/index.html; exec httpd -f -p $PORT -h /tmp"]}},
        "monitor": {"run": {"path": "/.lattice/bin/healthcheck", "args": ["--port", "8080"]}},
    })
}

/// The app's instances: index -> (state, instance guid).
fn instances(lattice: &Lattice, guid: &str) -> BTreeMap<i64, (String, String)> {
    let Some(Value::Array(lrps)) = lattice.get(&format!("/v1/actual_lrps/{guid}")) else {
        return BTreeMap::new();
    };
    lrps.iter()
        .map(|l| {
            (
                l["index"].as_i64().unwrap_or(-1),
                (
                    l["state"].as_str().unwrap_or("").to_string(),
                    l["instance_guid"].as_str().unwrap_or("").to_string(),
                ),
            )
        })
        .collect()
}

fn all_running(lattice: &Lattice, guid: &str, count: usize) -> bool {
    let now = instances(lattice, guid);
    now.len() == count && now.values().all(|(state, _)| state == "RUNNING")
}

/// One GET through the router: its status, or `None` when the router
/// itself could not be reached.
fn routed_get(http: &reqwest::blocking::Client, router_port: u16, host: &str) -> Option<u16> {
    http.get(format!("http://127.0.0.1:{router_port}/index.html"))
        .header("host", host)
        .send()
        .ok()
        .map(|r| r.status().as_u16())
}

fn container_names(owner: &str) -> BTreeSet<String> {
    runtime()
        .block_on(common::containers_of(owner))
        .into_iter()
        .map(|n| n.trim_start_matches('/').to_string())
        .collect()
}

fn docker_kill(name: &str) {
    runtime().block_on(async {
        let docker = lattice_testkit::docker::connect().await;
        // Gone already (it ended or was replaced): nothing to kill.
        let _ = docker
            .kill_container(
                name,
                None::<bollard::query_parameters::KillContainerOptions>,
            )
            .await;
    });
}

/// (a) Writes while the server is killed with SIGKILL at random moments and
/// started again: every write it acknowledged is there afterwards.
#[test]
fn a_acknowledged_writes_survive_kill_9() {
    let mut rng = seeded("a");
    let (kills, writes): (usize, usize) = if full_size() { (10, 1000) } else { (3, 60) };
    let mut lattice = Lattice::start("faults-a");
    let rootfs = busybox();

    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, stop) = (acked.clone(), stop.clone());
        let url = lattice.url("/v1/desired_lrps");
        let http = lattice.http.clone();
        std::thread::spawn(move || {
            let mut unanswered = 0usize;
            for i in 0.. {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let guid = format!("w-{i}");
                // No instances: the write is the test, not the containers.
                let body = json!({
                    "process_guid": guid, "domain": "faults", "rootfs": rootfs,
                    "instances": 0, "memory_mb": 16,
                    "action": {"run": {"path": "/bin/true"}},
                });
                match http.post(&url).json(&body).send() {
                    Ok(r) if r.status().as_u16() == 201 => {
                        acked.lock().expect("no panic holding it").push(guid)
                    }
                    Ok(r) => panic!("write {guid} answered {}", r.status()),
                    // Killed under it: unknown outcome, not acknowledged.
                    Err(_) => {
                        unanswered += 1;
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            }
            unanswered
        })
    };
    let count = || acked.lock().expect("no panic holding it").len();
    let mut restarts = Vec::new();
    for kill in 0..kills {
        let target =
            (writes * (kill + 1) / kills).saturating_sub(rng.usize(0..writes / kills / 2 + 1));
        wait_for("writes to be acknowledged", || count() >= target);
        restarts.push(lattice.restart());
    }
    wait_for("all writes", || count() >= writes);
    stop.store(true, Ordering::SeqCst);
    let unanswered = writer.join().expect("writer");

    let stored: BTreeSet<String> = match lattice.get("/v1/desired_lrps") {
        Some(Value::Array(lrps)) => lrps
            .iter()
            .filter_map(|l| l["process_guid"].as_str().map(String::from))
            .collect(),
        other => panic!("cannot list desired LRPs: {other:?}"),
    };
    let acked = acked.lock().expect("no panic holding it").clone();
    let lost: Vec<&String> = acked.iter().filter(|g| !stored.contains(*g)).collect();
    println!(
        "faults a: {} acknowledged writes, {kills} kill -9, {unanswered} writes unanswered, {} lost; restarts took {:?}",
        acked.len(),
        lost.len(),
        restarts
    );
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
}

/// (b) Tasks while their containers and the server are killed: every task
/// settles (COMPLETED), and none runs twice.
#[test]
fn b_tasks_run_at_most_once_under_container_and_server_kills() {
    let mut rng = seeded("b");
    let (tasks, container_kills, server_kills): (usize, usize, usize) =
        if full_size() { (100, 20, 5) } else { (8, 2, 1) };
    let mut lattice = Lattice::start("faults-b");
    let rootfs = busybox();
    // Unique per run: a task's container is named after its guid, and the
    // engine is shared with other clusters.
    let guids: Vec<String> = (0..tasks)
        .map(|i| format!("{}-t-{i}", lattice.owner()))
        .collect();
    let since = SystemTime::now();
    for guid in &guids {
        let seconds = rng.u32(2..7);
        let status = lattice.post(
            "/v1/tasks",
            &json!({
                "task_guid": guid, "domain": "faults", "rootfs": rootfs, "memory_mb": 16,
                "log_guid": guid,
                "action": {"run": {"path": "/bin/sh", "args": ["-c",
                    format!("echo ran-{guid}; sleep {seconds}")]}},
            }),
        );
        assert_eq!(status, Some(201), "task {guid}");
    }
    let state = |lattice: &Lattice, guid: &str| {
        lattice
            .get(&format!("/v1/tasks/{guid}"))
            .map(|t| t["state"].as_str().unwrap_or("").to_string())
    };
    let mut killed = 0;
    let mut server_killed = 0;
    let mut rounds = 0;
    while killed < container_kills || server_killed < server_kills {
        rounds += 1;
        assert!(rounds < 100_000, "the kill loop does not end");
        let running: Vec<String> = container_names(lattice.owner())
            .into_iter()
            .filter(|n| n.starts_with("lattice-task-"))
            .collect();
        if running.is_empty() {
            // Every task ended before its share of kills: fewer kills.
            if guids
                .iter()
                .all(|g| state(&lattice, g).is_some_and(|s| s == "COMPLETED"))
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        // The server's kills are spread among the containers', while tasks
        // run: each kill is the server's in proportion to what is left.
        let (servers_left, containers_left) = (
            server_kills - server_killed,
            container_kills.saturating_sub(killed),
        );
        if servers_left > 0 && rng.usize(0..servers_left + containers_left) < servers_left {
            lattice.restart();
            server_killed += 1;
            continue;
        }
        docker_kill(&running[rng.usize(0..running.len())]);
        killed += 1;
    }
    wait_for("every task to settle", || {
        guids
            .iter()
            .all(|g| state(&lattice, g).is_some_and(|s| s == "COMPLETED"))
    });
    let since = since
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos() as i64;
    let mut runs = BTreeMap::new();
    let mut failed = 0;
    for guid in &guids {
        let marker = format!("ran-{guid}");
        let lines = match lattice.get(&format!("/v1/logs/{guid}?follow=false")) {
            Some(Value::Array(lines)) => lines,
            other => panic!("no recent logs of {guid}: {other:?}"),
        };
        let count = lines
            .iter()
            .filter(|l| l["message"].as_str() == Some(marker.as_str()))
            .filter(|l| l["timestamp"].as_i64().is_some_and(|t| t >= since))
            .count();
        runs.insert(guid.clone(), count);
        if lattice
            .get(&format!("/v1/tasks/{guid}"))
            .is_some_and(|t| t["failed"] == true)
        {
            failed += 1;
        }
    }
    let twice: Vec<_> = runs.iter().filter(|(_, n)| **n > 1).collect();
    println!(
        "faults b: {tasks} tasks, {killed} container kills, {server_killed} server kills: all settled, {failed} failed, {} ran twice",
        twice.len()
    );
    assert!(twice.is_empty(), "tasks ran more than once: {twice:?}");
}

/// (c) Instances killed under a steady load through the router: no request
/// gets a 5xx.
#[test]
fn c_instance_kills_under_router_load_give_no_5xx() {
    let mut rng = seeded("c");
    let kills = if full_size() { 10 } else { 2 };
    let lattice = Lattice::start("faults-c");
    let rootfs = busybox();
    assert_eq!(
        lattice.post("/v1/desired_lrps", &web_app("load", &rootfs, 3)),
        Some(201)
    );
    wait_for("3 running instances", || all_running(&lattice, "load", 3));
    let http = reqwest::blocking::Client::new();
    wait_for("the app to be routed", || {
        routed_get(&http, lattice.router_port, "load.localhost") == Some(200)
    });

    let stop = Arc::new(AtomicBool::new(false));
    let (sent, errors) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(Mutex::new(Vec::new())),
    );
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, sent, errors) = (stop.clone(), sent.clone(), errors.clone());
            let (http, port) = (http.clone(), lattice.router_port);
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let status = routed_get(&http, port, "load.localhost");
                    sent.fetch_add(1, Ordering::SeqCst);
                    if status.is_none_or(|s| s >= 500) {
                        errors.lock().expect("no panic holding it").push(status);
                    }
                }
            })
        })
        .collect();
    for _ in 0..kills {
        let index = rng.i64(0..3);
        let before = instances(&lattice, "load");
        let victim = before
            .get(&index)
            .map(|(_, g)| g.clone())
            .unwrap_or_default();
        docker_kill(&format!("lattice-lrp-{victim}"));
        wait_for("a replacement to run", || {
            let now = instances(&lattice, "load");
            now.len() == 3
                && now.values().all(|(s, _)| s == "RUNNING")
                && now.get(&index).is_some_and(|(_, g)| *g != victim)
        });
    }
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.join().expect("load client");
    }
    let errors = errors.lock().expect("no panic holding it").clone();
    println!(
        "faults c: {} requests, {kills} instance kills, {} 5xx or router errors",
        sent.load(Ordering::SeqCst),
        errors.len()
    );
    assert!(errors.is_empty(), "failed requests: {errors:?}");
}

/// (f) Regression (issue 15, item 4): after a `kill -9`, the API answers
/// while the leftovers are still being destroyed, and the running instances
/// are kept, not destroyed and started again.
#[test]
fn f_a_restart_keeps_healthy_instances_and_answers_at_once() {
    let mut rng = seeded("f");
    let count = match std::env::var("LATTICE_FAULTS_INSTANCES") {
        Ok(count) => count.parse().expect("LATTICE_FAULTS_INSTANCES is a number"),
        Err(_) if full_size() => 100,
        Err(_) => 10,
    };
    let mut lattice = Lattice::start("faults-f");
    let rootfs = busybox();
    assert_eq!(
        lattice.post("/v1/desired_lrps", &web_app("kept", &rootfs, count)),
        Some(201)
    );
    // Leftovers that cannot be kept: tasks (their outcome is unknown after
    // a restart) whose processes ignore SIGTERM, so destroying them takes
    // the engine's grace period.
    let leftovers = 3;
    for i in 0..leftovers {
        let status = lattice.post(
            "/v1/tasks",
            &json!({
                "task_guid": format!("{}-left-{i}", lattice.owner()), "domain": "faults", "rootfs": rootfs,
                "memory_mb": 16,
                "action": {"run": {"path": "/bin/sh", "args": ["-c", "trap '' TERM; sleep 600"]}},
            }),
        );
        assert_eq!(status, Some(201));
    }
    let created = Instant::now();
    wait_for("every instance to run", || {
        all_running(&lattice, "kept", count)
    });
    wait_for("the tasks to run", || {
        (0..leftovers).all(|i| {
            lattice
                .get(&format!("/v1/tasks/{}-left-{i}", lattice.owner()))
                .is_some_and(|t| t["state"] == "RUNNING")
        })
    });
    println!(
        "faults f: {count} instances and {leftovers} tasks running after {:?}",
        created.elapsed()
    );
    let before = instances(&lattice, "kept");
    // A task's container is `lattice-task-GUID-` and a random part.
    let task_containers: Vec<String> = (0..leftovers)
        .map(|i| format!("lattice-task-{}-left-{i}-", lattice.owner()))
        .collect();
    let has = |names: &BTreeSet<String>, prefix: &str| names.iter().any(|n| n.starts_with(prefix));

    let api = lattice.restart();
    let left_when_up = container_names(lattice.owner());
    let restarted = Instant::now();
    let http = reqwest::blocking::Client::new();
    wait_for("the app to answer through the router", || {
        routed_get(&http, lattice.router_port, "kept.localhost") == Some(200)
    });
    let routed = restarted.elapsed();
    wait_for("the leftovers to be destroyed", || {
        let now = container_names(lattice.owner());
        task_containers.iter().all(|c| !has(&now, c))
    });
    let cleaned = restarted.elapsed();
    println!(
        "faults f: restart with {count} instances: API answered {api:?} after the spawn; \
         routed again {routed:?} after that; leftovers destroyed {cleaned:?} after that"
    );

    // The API answered while the cleanup still ran.
    for container in &task_containers {
        assert!(
            has(&left_when_up, container),
            "{container} was destroyed before the API answered"
        );
    }
    for i in 0..leftovers {
        let task = lattice
            .get(&format!("/v1/tasks/{}-left-{i}", lattice.owner()))
            .expect("task");
        assert_eq!(task["state"], "COMPLETED");
        assert_eq!(
            task["failure_reason"],
            "cell restarted before the task completed"
        );
    }
    // Kept: every instance RUNNING under the same instance guid, in the
    // container it had.
    let after = instances(&lattice, "kept");
    assert_eq!(after, before, "instances were replaced");
    let now = container_names(lattice.owner());
    for (_, guid) in before.values() {
        assert!(
            now.contains(&format!("lattice-lrp-{guid}")),
            "container of {guid} is gone"
        );
    }
    // An adopted instance is still supervised: a kill is seen and healed.
    let index = rng.i64(0..count as i64);
    let victim = before[&index].1.clone();
    docker_kill(&format!("lattice-lrp-{victim}"));
    wait_for("the killed adopted instance to be replaced", || {
        let now = instances(&lattice, "kept");
        now.get(&index)
            .is_some_and(|(state, guid)| state == "RUNNING" && *guid != victim)
    });
}
