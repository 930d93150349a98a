//! Fault suite, input side (issue 15, parts d and e): what a user can send
//! must not take the cluster down.
//!
//! - (d) [`fuzzed_bodies_never_fail_the_server`]: bodies generated from the
//!   request types with proptest strategies, then mutated (fields removed,
//!   values of the wrong type or size, NUL bytes, deep nesting, unknown
//!   fields, cut or corrupted bytes), sent to a real `lattice up` (its own
//!   code, in process, embedded SQLite; no cell, so no container is made).
//!   Checked: no 5xx, nothing stored from a refused request (per guid, and
//!   in total), every stored record still lists through the typed client,
//!   the server answers at the end.
//! - (e) [`archive_bombs_and_traversal_stay_bounded`]: download actions of
//!   gzip bombs and of tars with `..`, absolute and symlinked paths, run by a
//!   real cell on the real Docker engine. Checked: each bomb fails with the
//!   size error, the process's peak RSS stays under a set cap, no file lands
//!   outside the data dir, no scratch file is left in the cell's cache.
//!
//! Seeded and printing the seed (`LATTICE_FAULTS_SEED` replays one);
//! `LATTICE_FAULTS_SIZE=full` runs the full size documented in
//! `docs/reliability.md`:
//!
//! ```text
//! cargo test -p lattice --test faults_input -- --nocapture
//! LATTICE_FAULTS_SIZE=full cargo test -p lattice --test faults_input -- --nocapture
//! ```

mod common;

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use common::{eventually, Cluster};
use lattice::up::{Up, UpConfig};
use lattice_models::TaskState;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// Whether the full size was asked for.
fn full_size() -> bool {
    std::env::var("LATTICE_FAULTS_SIZE").is_ok_and(|s| s == "full")
}

/// The run's seed: `LATTICE_FAULTS_SEED`, or a fresh one; printed either way
/// so that a failure can be replayed.
fn seed(part: &str) -> u64 {
    let seed = std::env::var("LATTICE_FAULTS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand_seed);
    println!("faults_input {part}: LATTICE_FAULTS_SEED={seed}");
    seed
}

fn rand_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // A std hasher's random keys: no extra dependency for one number.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(std::process::id() as u64);
    hasher.finish()
}

fn runner(seed: u64) -> TestRunner {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
    )
}

fn sample<S: Strategy>(runner: &mut TestRunner, strategy: &S) -> S::Value {
    strategy
        .new_tree(runner)
        .expect("strategies here never reject")
        .current()
}

// --- (d) the fuzzer -----------------------------------------------------------

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9/_.-]{1,12}",
        ".{0,8}",
        Just(String::new()),
        Just("/bin/sh".to_string()),
    ]
}

fn env() -> impl Strategy<Value = Value> {
    prop::collection::vec(("[A-Z_]{0,6}", text()), 0..3).prop_map(|vars| {
        Value::Array(
            vars.into_iter()
                .map(|(name, value)| json!({"name": name, "value": value}))
                .collect(),
        )
    })
}

fn action() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        (text(), prop::collection::vec(text(), 0..3), env())
            .prop_map(|(path, args, env)| json!({"run": {"path": path, "args": args, "env": env}})),
        (text(), text()).prop_map(
            |(from, to)| json!({"download": {"from": format!("http://x/{from}"), "to": to}})
        ),
        (text(), text()).prop_map(
            |(from, to)| json!({"upload": {"from": from, "to": format!("http://x/{to}")}})
        ),
        (0u64..3, 0u64..5000).prop_map(|(nofile, nproc)| json!({"run": {"path": "/a",
            "resource_limits": {"nofile": nofile, "nproc": nproc}}})),
    ];
    leaf.prop_recursive(4, 16, 3, |inner| {
        prop_oneof![
            inner.clone().prop_map(|a| json!({"try": {"action": a}})),
            (inner.clone(), -2i64..100_000)
                .prop_map(|(a, t)| json!({"timeout": {"action": a, "timeout_ms": t}})),
            inner
                .clone()
                .prop_map(|a| json!({"emit_progress": {"action": a, "start_message": "go"}})),
            prop::collection::vec(inner.clone(), 0..3)
                .prop_map(|v| json!({"serial": {"actions": v}})),
            prop::collection::vec(inner.clone(), 0..3)
                .prop_map(|v| json!({"parallel": {"actions": v}})),
            prop::collection::vec(inner, 0..3).prop_map(|v| json!({"codependent": {"actions": v}})),
        ]
    })
}

fn task_body(guid: String) -> impl Strategy<Value = Value> {
    (
        action(),
        env(),
        -1i64..2048,
        -1i64..2048,
        -1i64..120,
        any::<bool>(),
        text(),
    )
        .prop_map(
            move |(action, env, memory, disk, cpu, privileged, result_file)| {
                json!({
                    "task_guid": guid.clone(),
                    "domain": "fuzz",
                    "rootfs": "docker:///busybox",
                    "action": action,
                    "env": env,
                    "memory_mb": memory,
                    "disk_mb": disk,
                    "cpu_weight": cpu,
                    "privileged": privileged,
                    "result_file": result_file,
                })
            },
        )
}

fn lrp_body(guid: String) -> impl Strategy<Value = Value> {
    (
        action(),
        prop::option::of(action()),
        prop::collection::vec(0u32..70_000, 0..3),
        0i64..3,
        env(),
        "[a-z0-9.-]{0,12}",
    )
        .prop_map(move |(action, monitor, ports, instances, env, host)| {
            let mut body = json!({
                "process_guid": guid.clone(),
                "domain": "fuzz",
                "rootfs": "docker:///busybox",
                "instances": instances,
                "action": action,
                "ports": ports,
                "env": env,
                "memory_mb": 64,
                "routes": {"cf-router": [{"hostnames": [host], "port": 8080}]},
            });
            if let Some(monitor) = monitor {
                body["monitor"] = monitor;
            }
            body
        })
}

fn update_body() -> impl Strategy<Value = Value> {
    (
        prop::option::of(-2i64..5),
        prop::option::of("[a-z0-9.-]{0,12}"),
        prop::option::of(".{0,20}"),
    )
        .prop_map(|(instances, host, annotation)| {
            let mut body = json!({});
            if let Some(i) = instances {
                body["instances"] = json!(i);
            }
            if let Some(h) = host {
                body["routes"] = json!({"cf-router": [{"hostnames": [h], "port": 8080}]});
            }
            if let Some(a) = annotation {
                body["annotation"] = json!(a);
            }
            body
        })
}

fn nested(depth: usize) -> Value {
    let mut action = json!({"run": {"path": "/bin/true"}});
    for i in 1..depth {
        action = if i % 2 == 0 {
            json!({"try": {"action": action}})
        } else {
            json!({"serial": {"actions": [action]}})
        };
    }
    action
}

/// A value of the wrong type, size or content for any field.
fn weird_value(pick: u32) -> Value {
    match pick % 14 {
        0 => Value::Null,
        1 => json!(-1),
        2 => json!(i64::MAX),
        3 => json!(u64::MAX),
        4 => json!(1e308),
        5 => json!(""),
        6 => json!("nul\u{0}byte"),
        7 => json!("x".repeat(64 * 1024)),
        8 => json!([]),
        9 => json!({}),
        10 => json!(true),
        11 => nested(33 + (pick as usize % 40)),
        12 => json!("../../etc/passwd"),
        _ => json!({"run": {"path": "/a", "bogus": 1}}),
    }
}

/// The body as sent: the generated one, mutated by `how`.
fn mutate(mut body: Value, how: u32, pick: u32) -> Vec<u8> {
    let keys: Vec<String> = body
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    let key = keys
        .get(pick as usize % keys.len().max(1))
        .cloned()
        .unwrap_or_default();
    match how % 9 {
        0 => {}
        1 => {
            body.as_object_mut().map(|o| o.remove(&key));
        }
        2 => body[&key] = weird_value(pick),
        3 => body["not_a_field"] = json!(1),
        4 => body["action"] = nested(33 + (pick as usize % 60)),
        5 => body["env"] = json!([{"name": "A", "value": "x\u{0}y"}]),
        6 => {
            let mut bytes = serde_json::to_vec(&body).expect("serializable");
            bytes.truncate(pick as usize % bytes.len().max(1));
            return bytes;
        }
        7 => {
            let mut bytes = serde_json::to_vec(&body).expect("serializable");
            let at = pick as usize % bytes.len().max(1);
            bytes[at] = bytes[at].wrapping_add(1 + (pick % 200) as u8);
            return bytes;
        }
        _ => {
            // Nested past the JSON decoder's own limit.
            let depth = 130 + pick as usize % 200;
            return format!("{}1{}", "[".repeat(depth), "]".repeat(depth)).into_bytes();
        }
    }
    serde_json::to_vec(&body).expect("serializable")
}

struct Server {
    base: String,
    shutdown: CancellationToken,
    running: tokio::task::JoinHandle<anyhow::Result<()>>,
    _data: tempfile::TempDir,
}

/// `lattice up` without a cell or router: the receptor, store and brain.
async fn start_server() -> Server {
    let data = tempfile::tempdir().expect("temp dir");
    let config = UpConfig {
        data_dir: data.path().to_path_buf(),
        store: String::new(),
        listen: "127.0.0.1:0".parse().expect("valid address"),
        domain: "localhost".to_string(),
        credentials: None,
        max_body_bytes: lattice_receptor::DEFAULT_MAX_BODY_BYTES,
        max_upload_bytes: lattice_fileserver::DEFAULT_MAX_UPLOAD_BYTES,
        allow_privileged: false,
        drain_timeout: Duration::from_secs(20),
        cell: None,
        converge_interval: Duration::from_secs(1),
        policy: Default::default(),
        hub: std::sync::Arc::new(lattice_logs::LogHub::new(Default::default())),
        router_listen: None,
        ssh_listen: None,
    };
    let up = Up::prepare(config).await.expect("server starts");
    let base = format!("http://{}", up.receptor_address().expect("address"));
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(up.run(shutdown.clone()));
    Server {
        base,
        shutdown,
        running,
        _data: data,
    }
}

#[derive(Default)]
struct Tally {
    sent: usize,
    accepted: usize,
    refused: usize,
    server_errors: Vec<String>,
}

#[tokio::test(flavor = "multi_thread")]
async fn fuzzed_bodies_never_fail_the_server() {
    let seed = seed("d");
    let cases = if full_size() { 20_000 } else { 600 };
    let mut runner = runner(seed);
    let server = start_server().await;
    let http = reqwest::Client::new();
    let client = lattice_client::Client::new(&server.base, None).expect("a client");
    let mut tally = Tally::default();
    // Guids of what was accepted. Tasks are not counted: a task no cell
    // can run completes failed and expires after the task TTL.
    let mut tasks_accepted = std::collections::BTreeSet::new();
    let mut lrps_accepted = std::collections::BTreeSet::new();
    let started = std::time::Instant::now();

    // One LRP to update, so that refused updates can be seen to change nothing.
    let target = json!({
        "process_guid": "update-target",
        "domain": "fuzz",
        "rootfs": "docker:///busybox",
        "instances": 0,
        "action": {"run": {"path": "/bin/true"}},
        "ports": [8080],
        "routes": {"cf-router": [{"hostnames": ["target.localhost"], "port": 8080}]},
    });
    let created = http
        .post(format!("{}/v1/desired_lrps", server.base))
        .json(&target)
        .send()
        .await
        .expect("sent");
    assert!(
        created.status().is_success(),
        "{}",
        created.text().await.unwrap()
    );
    lrps_accepted.insert("update-target".to_string());

    for case in 0..cases {
        let (how, pick) = sample(&mut runner, &(any::<u32>(), any::<u32>()));
        let kind = case % 3;
        let guid = format!("g{case}");
        let (path, body) = match kind {
            0 => (
                "/v1/tasks".to_string(),
                sample(&mut runner, &task_body(guid.clone())),
            ),
            1 => (
                "/v1/desired_lrps".to_string(),
                sample(&mut runner, &lrp_body(guid.clone())),
            ),
            _ => (
                "/v1/desired_lrps/update-target".to_string(),
                sample(&mut runner, &update_body()),
            ),
        };
        let bytes = mutate(body, how, pick);
        let before = if kind == 2 {
            Some(client.desired_lrp("update-target").await.expect("readable"))
        } else {
            None
        };
        let request = if kind == 2 {
            http.put(format!("{}{path}", server.base))
        } else {
            http.post(format!("{}{path}", server.base))
        };
        let response = request
            .header("content-type", "application/json")
            .body(bytes.clone())
            .send()
            .await
            .expect("the server answers");
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        tally.sent += 1;
        if status.is_server_error() {
            tally.server_errors.push(format!(
                "{status} for {path} {}: {text}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
            ));
            continue;
        }
        if status.is_success() {
            tally.accepted += 1;
            // The guid as stored: a changed byte may have made another
            // valid guid of it.
            let stored: Value = serde_json::from_str(&text).unwrap_or_default();
            let stored_guid = |field: &str| stored[field].as_str().unwrap_or(&guid).to_string();
            match kind {
                0 => tasks_accepted.insert(stored_guid("task_guid")),
                1 => lrps_accepted.insert(stored_guid("process_guid")),
                _ => false,
            };
            continue;
        }
        tally.refused += 1;
        let error: Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{status} without a JSON error: {text}"));
        assert!(error["name"].is_string(), "{status}: {text}");
        // Nothing stored from a refused request.
        match kind {
            0 => assert!(
                client.task(&guid).await.is_err(),
                "refused task {guid} stored"
            ),
            1 => assert!(
                client.desired_lrp(&guid).await.is_err(),
                "refused LRP {guid} stored"
            ),
            _ => assert_eq!(
                client.desired_lrp("update-target").await.expect("readable"),
                before.expect("read before"),
                "a refused update changed the LRP"
            ),
        }
    }

    // Every stored record lists through the typed client (the path of `ltc
    // list` and the route-emitter), and nothing but what was accepted.
    let tasks = client.tasks().await.expect("tasks list");
    let lrps = client.desired_lrps().await.expect("LRPs list");
    let raw: Value = http
        .get(format!("{}/v1/tasks", server.base))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("a JSON list");
    let info = http
        .get(format!("{}/v1/info", server.base))
        .send()
        .await
        .expect("the server is alive");
    println!(
        "faults_input d: {} bodies in {:.1}s: {} accepted, {} refused, {} 5xx; stored {} tasks, {} LRPs",
        tally.sent,
        started.elapsed().as_secs_f64(),
        tally.accepted,
        tally.refused,
        tally.server_errors.len(),
        tasks.len(),
        lrps.len()
    );
    assert!(
        tally.server_errors.is_empty(),
        "{} 5xx (seed {seed}):\n{}",
        tally.server_errors.len(),
        tally.server_errors.join("\n")
    );
    let stray: Vec<&str> = tasks
        .iter()
        .map(|t| t.task_guid.as_str())
        .filter(|g| !tasks_accepted.contains(*g))
        .collect();
    assert!(stray.is_empty(), "tasks stored but refused: {stray:?}");
    serde_json::from_value::<Vec<lattice_models::Task>>(raw).expect("every stored task decodes");
    let stored: std::collections::BTreeSet<String> =
        lrps.into_iter().map(|l| l.process_guid).collect();
    assert_eq!(stored, lrps_accepted, "stored LRPs are the accepted ones");
    assert!(info.status().is_success());

    server.shutdown.cancel();
    server
        .running
        .await
        .expect("server task")
        .expect("server stops cleanly");
}

// --- (e) archive bombs and traversal --------------------------------------------

/// A gzip'd tar whose one file is `size` zero bytes; built streaming, so the
/// test holds only the compressed bytes.
fn gzip_bomb(size: u64) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let mut header = tar::Header::new_gnu();
    header.set_path("zeros").expect("a plain name");
    header.set_size(size);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    gz.write_all(header.as_bytes()).expect("in memory");
    std::io::copy(&mut std::io::Read::take(std::io::repeat(0), size), &mut gz).expect("in memory");
    let padding = (512 - size % 512) % 512;
    gz.write_all(&vec![0u8; padding as usize + 1024])
        .expect("in memory");
    gz.finish().expect("in memory")
}

/// A tar whose entries try to leave the destination: `..` paths, an
/// absolute path, and a file behind a symbolic link to `/`. Names carry
/// `marker`, so that the host can be searched for them.
fn evil_tar(marker: &str) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut raw = |name: &str, kind: tar::EntryType, link: Option<&str>, data: &[u8]| {
        let mut header = tar::Header::new_old();
        // Written into the header directly: the tar crate refuses to build
        // such names, an attacker's tool does not.
        let field = &mut header.as_old_mut().name;
        field.fill(0);
        field[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(link) = link {
            let field = &mut header.as_old_mut().linkname;
            field.fill(0);
            field[..link.len()].copy_from_slice(link.as_bytes());
        }
        header.set_entry_type(kind);
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append(&header, data).expect("in memory");
    };
    let up = format!("../../../../../../tmp/{marker}-dotdot");
    let absolute = format!("/tmp/{marker}-absolute");
    let through = format!("escape/tmp/{marker}-symlink");
    raw(&up, tar::EntryType::Regular, None, b"x");
    raw(&absolute, tar::EntryType::Regular, None, b"x");
    raw("escape", tar::EntryType::Symlink, Some("/"), b"");
    raw(&through, tar::EntryType::Regular, None, b"x");
    builder.into_inner().expect("in memory")
}

/// Serves `files` by name on an ephemeral port.
async fn serve(files: Vec<(&'static str, Vec<u8>)>) -> String {
    use axum::extract::Path as UrlPath;
    let files: std::sync::Arc<std::collections::HashMap<&'static str, bytes::Bytes>> =
        std::sync::Arc::new(files.into_iter().map(|(k, v)| (k, v.into())).collect());
    let app = axum::Router::new().route(
        "/{name}",
        axum::routing::get(move |UrlPath(name): UrlPath<String>| {
            let files = files.clone();
            async move {
                match files.get(name.as_str()) {
                    Some(body) => Ok(body.clone()),
                    None => Err(axum::http::StatusCode::NOT_FOUND),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}")
}

/// Peak and current resident memory of this process (the cluster runs in
/// it), in MiB.
fn rss_mib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("a memory field")
            / 1024
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Files under `dir` (recursively) whose names contain `marker`.
fn files_named(dir: &Path, marker: &str, depth: usize) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.to_string_lossy().contains(marker) {
            found.push(path.display().to_string());
        }
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir && depth > 0 {
            found.extend(files_named(&path, marker, depth - 1));
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn archive_bombs_and_traversal_stay_bounded() {
    let seed = seed("e");
    let full = full_size();
    // What each bomb expands to, against a container disk limit of 64 MB.
    let expanded: u64 = if full { 4 << 30 } else { 1 << 30 };
    let bombs = if full { 4 } else { 2 };
    let rss_cap_mib: u64 = 512;
    let marker = format!("lattice-escape-{seed}");
    let bomb = gzip_bomb(expanded);
    let bomb_bytes = bomb.len();
    let base = serve(vec![("bomb.tgz", bomb), ("evil.tar", evil_tar(&marker))]).await;
    let cluster = Cluster::start().await;
    let rootfs = lattice_testkit::images::busybox_image().await;
    let task = |guid: String, from: &str, disk_mb: i64| {
        let rootfs = rootfs.clone();
        let from = format!("{base}/{from}");
        async move {
            serde_json::from_value::<lattice_models::TaskCreateRequest>(json!({
                "task_guid": guid,
                "domain": "faults",
                "rootfs": rootfs,
                "disk_mb": disk_mb,
                "memory_mb": 64,
                "action": {"serial": {"actions": [
                    {"download": {"from": from, "to": "/app"}},
                    {"run": {"path": "/bin/sh", "args": ["-c", "ls -R /app > /dev/null"]}}
                ]}},
            }))
            .expect("a valid task")
        }
    };
    let started = std::time::Instant::now();
    let mut guids = Vec::new();
    for i in 0..bombs {
        let guid = format!("bomb-{i}");
        cluster
            .client
            .create_task(&task(guid.clone(), "bomb.tgz", 64).await)
            .await
            .expect("accepted");
        guids.push(guid);
    }
    cluster
        .client
        .create_task(&task("evil".into(), "evil.tar", 64).await)
        .await
        .expect("accepted");

    for guid in &guids {
        let done = eventually(
            &format!("task {guid}"),
            Duration::from_secs(600),
            || async {
                let t = cluster.client.task(guid).await.ok()?;
                (t.state == TaskState::Completed).then_some(t)
            },
        )
        .await;
        assert!(done.failed, "{guid} must fail");
        assert!(
            done.failure_reason.contains("more than 67108864 bytes"),
            "{guid}: {}",
            done.failure_reason
        );
    }
    let evil = eventually("the evil tar task", Duration::from_secs(300), || async {
        let t = cluster.client.task("evil").await.ok()?;
        (t.state == TaskState::Completed).then_some(t)
    })
    .await;
    let (peak, now) = rss_mib();
    let data_dir = cluster.data_dir().to_path_buf();
    let outside: Vec<String> = [Path::new("/tmp"), Path::new("/")]
        .iter()
        .flat_map(|dir| files_named(dir, &marker, 1))
        .chain(
            data_dir
                .parent()
                .map(|p| files_named(p, &marker, 1))
                .unwrap_or_default(),
        )
        .collect();
    // `image-configs` holds the images' configs the cell mounts into
    // containers: kept on purpose, not a download's scratch.
    let scratch_left: Vec<String> = std::fs::read_dir(data_dir.join("cache"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name() != "image-configs")
                .map(|e| e.path().display().to_string())
                .collect()
        })
        .unwrap_or_default();
    println!(
        "faults_input e: {bombs} bombs of {} MiB each (gzip of {} KiB) refused in {:.1}s; evil tar task failed={} ({}); \
         peak RSS {peak} MiB (cap {rss_cap_mib}), now {now} MiB; {} files outside the data dir; {} scratch files left",
        expanded >> 20,
        bomb_bytes >> 10,
        started.elapsed().as_secs_f64(),
        evil.failed,
        evil.failure_reason,
        outside.len(),
        scratch_left.len(),
    );
    assert!(
        outside.is_empty(),
        "files outside the data dir: {outside:?}"
    );
    assert!(
        scratch_left.is_empty(),
        "scratch files left: {scratch_left:?}"
    );
    assert!(
        peak < rss_cap_mib,
        "peak RSS {peak} MiB is over the cap of {rss_cap_mib} MiB"
    );
    cluster.stop().await;
}
