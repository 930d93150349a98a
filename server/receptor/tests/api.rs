//! Component tests of the receptor: a real server on an ephemeral port over a
//! real SQLite store, driven with plain HTTP so statuses and bodies are
//! checked exactly as a client sees them.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lattice_bbs::{SharedStore, SqliteStore};
use lattice_receptor::{Credentials, ReceptorConfig};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

struct Server {
    base: String,
    http: reqwest::Client,
    store: SharedStore,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start_with(config: ReceptorConfig) -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    let store: SharedStore = Arc::new(
        SqliteStore::open(&dir.path().join("bbs.sqlite3"))
            .await
            .expect("open store"),
    );
    let shutdown = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let app = lattice_receptor::app(store.clone(), config, shutdown.clone());
    tokio::spawn(lattice_receptor::serve(listener, app, shutdown.clone()));
    Server {
        base,
        http: reqwest::Client::new(),
        store,
        shutdown,
        _dir: dir,
    }
}

async fn start() -> Server {
    start_with(ReceptorConfig::default()).await
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, self.url(path));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::PUT, path, Some(body)).await
    }

    async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.send(reqwest::Method::DELETE, path, None).await
    }

    async fn post_raw(&self, path: &str, body: Vec<u8>) -> (StatusCode, Value) {
        let resp = self
            .http
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request");
        let status = resp.status();
        (status, resp.json().await.expect("json error body"))
    }
}

fn task_json(guid: &str) -> Value {
    json!({
        "task_guid": guid,
        "domain": "tests",
        "rootfs": "docker:///busybox",
        "action": {"run": {"path": "/bin/sh", "args": ["-c", "echo hi > /tmp/result"]}},
        "memory_mb": 64,
        "result_file": "/tmp/result",
        "annotation": "a note"
    })
}

fn lrp_json(guid: &str, instances: i64) -> Value {
    json!({
        "process_guid": guid,
        "domain": "apps",
        "rootfs": "docker:///busybox",
        "instances": instances,
        "action": {"run": {"path": "/bin/httpd", "args": ["-f", "-p", "8080"]}},
        "monitor": {"run": {"path": "/bin/true"}},
        "ports": [8080],
        "routes": {"cf-router": [{"hostnames": [format!("{guid}.localhost")], "port": 8080}]}
    })
}

fn assert_error(body: &Value, name: &str) {
    assert_eq!(body["name"], name, "error body: {body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "error body: {body}"
    );
}

#[tokio::test]
async fn info_names_version_and_domain() {
    let server = start().await;
    let (status, body) = server.get("/v1/info").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(body["domain"], "localhost");
}

#[tokio::test]
async fn task_happy_path() {
    let server = start().await;
    let (status, created) = server.post("/v1/tasks", task_json("t1")).await;
    // Diego's answer to a create: 201, no body (read it back).
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created, Value::Null);

    let (status, task) = server.get("/v1/tasks/t1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(task["state"], "PENDING");
    assert_eq!(task["modification_tag"]["index"], 0);
    assert_eq!(task["task_guid"], "t1");
    assert_eq!(task["result_file"], "/tmp/result");
    assert!(task["created_at"].as_i64().unwrap() > 0);

    let (_, list) = server.get("/v1/tasks").await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    let (_, by_domain) = server.get("/v1/domains/tests/tasks").await;
    assert_eq!(by_domain.as_array().unwrap().len(), 1);
    let (_, other_domain) = server.get("/v1/domains/other/tasks").await;
    assert!(other_domain.as_array().unwrap().is_empty());

    // Only a completed task can be deleted.
    let (status, body) = server.delete("/v1/tasks/t1").await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_error(&body, "TaskNotDeletable");

    let (status, _) = server.post("/v1/tasks/t1/cancel", json!({})).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, task) = server.get("/v1/tasks/t1").await;
    assert_eq!(task["state"], "COMPLETED");
    assert_eq!(task["failed"], true);
    assert_eq!(task["failure_reason"], "task was cancelled");

    let (status, body) = server.post("/v1/tasks/t1/cancel", json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_error(&body, "ResourceConflict");

    let (status, _) = server.delete("/v1/tasks/t1").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = server.get("/v1/tasks/t1").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error(&body, "TaskNotFound");
}

#[tokio::test]
async fn desired_lrp_happy_path() {
    let server = start().await;
    let (status, created) = server.post("/v1/desired_lrps", lrp_json("web", 2)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (status, lrp) = server.get("/v1/desired_lrps/web").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(lrp["instances"], 2);
    assert_eq!(lrp["routes"]["cf-router"][0]["port"], 8080);

    let (status, _) = server
        .put(
            "/v1/desired_lrps/web",
            json!({"instances": 5, "annotation": "x"}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, lrp) = server.get("/v1/desired_lrps/web").await;
    assert_eq!(lrp["instances"], 5);
    assert_eq!(lrp["annotation"], "x");
    assert_eq!(lrp["modification_tag"]["index"], 1);

    let (_, list) = server.get("/v1/desired_lrps").await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    let (_, by_domain) = server.get("/v1/domains/apps/desired_lrps").await;
    assert_eq!(by_domain.as_array().unwrap().len(), 1);

    let (status, _) = server.delete("/v1/desired_lrps/web").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = server.get("/v1/desired_lrps/web").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error(&body, "DesiredLRPNotFound");
}

#[tokio::test]
async fn actual_lrps_read_and_restart() {
    let server = start().await;
    // Actual LRPs are written by the brain and cells, not the receptor: seed
    // them through the store as those would.
    let now = lattice_models::unix_nanos(std::time::SystemTime::now());
    for index in 0..2 {
        server
            .store
            .create_actual_lrp(lattice_models::ActualLrp::unclaimed(
                "web", "apps", index, now,
            ))
            .await
            .unwrap();
    }
    let mut running = server.store.get_actual_lrp("web", 1).await.unwrap();
    running
        .apply(lattice_models::ActualLrpEvent::Claim, now)
        .unwrap();
    running.cell_id = "cell-a".into();
    let mut running = server.store.update_actual_lrp(running).await.unwrap();
    running
        .apply(lattice_models::ActualLrpEvent::Start, now)
        .unwrap();
    server.store.update_actual_lrp(running).await.unwrap();

    let (_, all) = server.get("/v1/actual_lrps").await;
    assert_eq!(all.as_array().unwrap().len(), 2);
    let (_, by_guid) = server.get("/v1/actual_lrps/web").await;
    assert_eq!(by_guid.as_array().unwrap().len(), 2);
    let (_, by_domain) = server.get("/v1/domains/apps/actual_lrps").await;
    assert_eq!(by_domain.as_array().unwrap().len(), 2);
    let (status, one) = server.get("/v1/actual_lrps/web/index/1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["state"], "RUNNING");
    assert_eq!(one["cell_id"], "cell-a");

    let (status, _) = server.delete("/v1/actual_lrps/web/index/1").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, one) = server.get("/v1/actual_lrps/web/index/1").await;
    assert_eq!(one["state"], "UNCLAIMED");
    assert_eq!(one["cell_id"], "");

    let (status, body) = server.get("/v1/actual_lrps/web/index/7").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error(&body, "ActualLRPIndexNotFound");
    let (status, body) = server.get("/v1/actual_lrps/web/index/x").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["field"], "index");
}

#[tokio::test]
async fn cells_and_domains() {
    let server = start().await;
    server
        .store
        .upsert_cell(
            lattice_models::CellPresence {
                cell_id: "cell-a".into(),
                zone: "z1".into(),
                rep_address: "http://127.0.0.1:1".into(),
                capacity: lattice_models::CellCapacity {
                    memory_mb: 1024,
                    disk_mb: 2048,
                    containers: 10,
                },
                rootfs_providers: lattice_models::cell::docker_rootfs_providers(),
            },
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    let (_, cells) = server.get("/v1/cells").await;
    assert_eq!(cells[0]["cell_id"], "cell-a");
    assert_eq!(cells[0]["capacity"]["memory_mb"], 1024);
    assert_eq!(cells[0]["allocated"]["containers"], 0);

    // Work claimed by the cell counts against it: a running task (64 MB)
    // and a claimed instance of a 128 MB LRP.
    server.post("/v1/tasks", task_json("t1")).await;
    let now = lattice_models::unix_nanos(std::time::SystemTime::now());
    let mut task = server.store.get_task("t1").await.unwrap();
    task.apply(lattice_models::TaskEvent::Claim, now).unwrap();
    task.cell_id = "cell-a".into();
    server.store.update_task(task).await.unwrap();
    let mut lrp = lrp_json("web", 1);
    lrp["memory_mb"] = json!(128);
    server.post("/v1/desired_lrps", lrp).await;
    let mut instance = lattice_models::ActualLrp::unclaimed("web", "apps", 0, now);
    instance
        .apply(lattice_models::ActualLrpEvent::Claim, now)
        .unwrap();
    instance.cell_id = "cell-a".into();
    server.store.create_actual_lrp(instance).await.unwrap();
    let (_, cells) = server.get("/v1/cells").await;
    assert_eq!(
        cells[0]["allocated"],
        json!({"memory_mb": 192, "disk_mb": 0, "containers": 2})
    );
    assert_eq!(cells[0]["tasks"], 1);
    assert_eq!(cells[0]["instances"], 1);

    let resp = server
        .http
        .put(server.url("/v1/domains/apps"))
        .header("cache-control", "max-age=60")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let resp = server
        .http
        .put(server.url("/v1/domains/forever"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let resp = server
        .http
        .put(server.url("/v1/domains/bad"))
        .header("cache-control", "no-cache")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let (_, domains) = server.get("/v1/domains").await;
    assert_eq!(domains, json!(["apps", "forever"]));
}

/// Every class of bad input gets the right status and error name, and
/// nothing is stored.
#[tokio::test]
async fn invalid_input_is_rejected_and_nothing_stored() {
    let server = start().await;

    // Not JSON at all.
    let (status, body) = server.post_raw("/v1/tasks", b"{not json".to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&body, "InvalidJSON");

    // Unknown action kind: named, with its path.
    let mut task = task_json("t-bad");
    task["action"] =
        json!({"serial": {"actions": [{"run": {"path": "/bin/true"}}, {"rn": {"path": "x"}}]}});
    let (status, body) = server.post("/v1/tasks", task).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&body, "InvalidJSON");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("unknown action kind \"rn\""),
        "{body}"
    );
    assert_eq!(body["field"], "action.serial.actions[1]");

    // Bad guid.
    let (status, body) = server.post("/v1/tasks", task_json("bad guid!")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&body, "InvalidTask");
    assert_eq!(body["field"], "task_guid");

    // Negative instances.
    let (status, body) = server.post("/v1/desired_lrps", lrp_json("web", -1)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&body, "InvalidLRP");
    assert_eq!(body["field"], "instances");

    // Negative memory, unknown field, out-of-range port.
    let mut lrp = lrp_json("web", 1);
    lrp["memory_mb"] = json!(-5);
    let (_, body) = server.post("/v1/desired_lrps", lrp).await;
    assert_eq!(body["field"], "memory_mb");
    let mut lrp = lrp_json("web", 1);
    lrp["instancez"] = json!(3);
    let (status, body) = server.post("/v1/desired_lrps", lrp).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["message"].as_str().unwrap().contains("instancez"),
        "{body}"
    );
    let mut lrp = lrp_json("web", 1);
    lrp["ports"] = json!([8080, 70000]);
    let (_, body) = server.post("/v1/desired_lrps", lrp).await;
    assert_eq!(body["field"], "ports[1]");

    // An empty action object.
    let mut lrp = lrp_json("web", 1);
    lrp["action"] = json!({});
    let (status, body) = server.post("/v1/desired_lrps", lrp).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&body, "InvalidJSON");

    // Bad update.
    let (status, body) = server
        .put("/v1/desired_lrps/missing", json!({"instances": 1}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error(&body, "DesiredLRPNotFound");

    // Oversized body.
    let big = format!(
        r#"{{"task_guid": "big", "annotation": "{}"}}"#,
        "x".repeat(2 * 1024 * 1024)
    );
    let (status, body) = server.post_raw("/v1/tasks", big.into_bytes()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_error(&body, "RequestEntityTooLarge");

    // Unknown endpoint: JSON 404.
    let (status, body) = server.get("/v1/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error(&body, "ResourceNotFound");

    let (_, tasks) = server.get("/v1/tasks").await;
    assert_eq!(tasks, json!([]));
    let (_, lrps) = server.get("/v1/desired_lrps").await;
    assert_eq!(lrps, json!([]));

    // Duplicate create: 409, and the first one is untouched.
    let (status, _) = server.post("/v1/desired_lrps", lrp_json("web", 1)).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = server.post("/v1/desired_lrps", lrp_json("web", 9)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_error(&body, "DesiredLRPAlreadyExists");
    let (_, lrp) = server.get("/v1/desired_lrps/web").await;
    assert_eq!(lrp["instances"], 1);
    let (status, _) = server.post("/v1/tasks", task_json("t1")).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = server.post("/v1/tasks", task_json("t1")).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_error(&body, "TaskGuidAlreadyExists");
}

/// Two updates made against the same version: exactly one wins.
#[tokio::test]
async fn concurrent_conditional_updates_one_wins() {
    let server = start().await;
    server.post("/v1/desired_lrps", lrp_json("web", 1)).await;
    let (_, lrp) = server.get("/v1/desired_lrps/web").await;
    let tag = lrp["modification_tag"].clone();

    let a = server.put(
        "/v1/desired_lrps/web",
        json!({"instances": 3, "modification_tag": tag}),
    );
    let b = server.put(
        "/v1/desired_lrps/web",
        json!({"instances": 7, "modification_tag": tag}),
    );
    let ((status_a, body_a), (status_b, body_b)) = tokio::join!(a, b);
    let mut statuses = [status_a, status_b];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::NO_CONTENT, StatusCode::CONFLICT],
        "{body_a} {body_b}"
    );
    let loser = if status_a == StatusCode::CONFLICT {
        body_a
    } else {
        body_b
    };
    assert_error(&loser, "ResourceConflict");

    let (_, lrp) = server.get("/v1/desired_lrps/web").await;
    let winner = if status_a == StatusCode::NO_CONTENT {
        3
    } else {
        7
    };
    assert_eq!(lrp["instances"], winner);
    assert_eq!(lrp["modification_tag"]["index"], 1);
}

#[tokio::test]
async fn events_stream_in_order() {
    let server = start().await;
    let resp = server
        .http
        .get(server.url("/v1/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut body = resp.bytes_stream();

    server.post("/v1/desired_lrps", lrp_json("web", 1)).await;
    server
        .put("/v1/desired_lrps/web", json!({"instances": 2}))
        .await;
    server.delete("/v1/desired_lrps/web").await;
    server.post("/v1/tasks", task_json("t1")).await;

    let mut text = String::new();
    let mut events: Vec<(String, Value)> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while events.len() < 4 {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .expect("events arrive in time")
            .expect("stream open")
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = text.find("\n\n") {
            let frame: String = text.drain(..end + 2).collect();
            let mut name = None;
            let mut data = None;
            for line in frame.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    name = Some(v.trim().to_string());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data = Some(serde_json::from_str::<Value>(v.trim()).unwrap());
                }
            }
            if let (Some(name), Some(data)) = (name, data) {
                events.push((name, data));
            }
        }
    }
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "desired_lrp_created",
            "desired_lrp_changed",
            "desired_lrp_removed",
            "task_created"
        ]
    );
    assert_eq!(events[1].1["desired_lrp_before"]["instances"], 1);
    assert_eq!(events[1].1["desired_lrp_after"]["instances"], 2);
    assert_eq!(events[2].1["desired_lrp"]["process_guid"], "web");
    assert_eq!(events[3].1["task"]["task_guid"], "t1");
}

#[tokio::test]
async fn basic_auth_when_configured() {
    let server = start_with(ReceptorConfig {
        credentials: Some(Credentials {
            username: "admin".into(),
            password: "s3cret".into(),
        }),
        ..Default::default()
    })
    .await;
    let resp = server
        .http
        .get(server.url("/v1/tasks"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.headers().contains_key("www-authenticate"));
    let body: Value = resp.json().await.unwrap();
    assert_error(&body, "Unauthorized");

    let resp = server
        .http
        .post(server.url("/v1/tasks"))
        .basic_auth("admin", Some("wrong"))
        .json(&task_json("t1"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    let resp = server
        .http
        .get(server.url("/v1/tasks"))
        .basic_auth("admin", Some("s3cret"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(server
        .store
        .list_tasks(&Default::default())
        .await
        .unwrap()
        .is_empty());
}

fn nested_try(depth: usize) -> Value {
    let mut action = json!({"run": {"path": "/bin/true"}});
    for _ in 1..depth {
        action = json!({"try": {"action": action}});
    }
    action
}

/// Regression (issue 15): a desired LRP nested 62 deep was accepted, and
/// then no reader could decode it.
#[tokio::test]
async fn regression_deep_nesting_is_refused_naming_the_path() {
    let server = start().await;
    for depth in [33, 62] {
        let mut lrp = lrp_json("deep", 1);
        lrp["action"] = nested_try(depth);
        let (status, body) = server
            .send(reqwest::Method::POST, "/v1/desired_lrps", Some(lrp))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{depth}: {body}");
        assert_error(&body, "InvalidLRP");
        let field = body["field"].as_str().expect("a field");
        assert!(field.starts_with("action.try.action.try"), "{field}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("nested more than 32"),
            "{body}"
        );
    }
    let mut task = task_json("deep");
    task["action"] = nested_try(40);
    let (status, body) = server
        .send(reqwest::Method::POST, "/v1/tasks", Some(task))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // Nothing stored; the deepest accepted recipe lists and reads back.
    let (_, list) = server
        .send(reqwest::Method::GET, "/v1/desired_lrps", None)
        .await;
    assert_eq!(list, json!([]));
    let mut lrp = lrp_json("deepest", 1);
    lrp["action"] = nested_try(32);
    let (status, body) = server
        .send(reqwest::Method::POST, "/v1/desired_lrps", Some(lrp))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let client = lattice_client::Client::new(&server.base, None).expect("a client");
    let lrps = client.desired_lrps().await.expect("lists");
    assert_eq!(lrps.len(), 1);
}

/// Regression (issue 15): `privileged: true` was accepted with no opt-in.
#[tokio::test]
async fn regression_privileged_needs_the_servers_opt_in() {
    let server = start().await;
    let mut task = task_json("root");
    task["privileged"] = json!(true);
    let (status, body) = server
        .send(reqwest::Method::POST, "/v1/tasks", Some(task.clone()))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "privileged", "{body}");
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("--allow-privileged"));
    let mut lrp = lrp_json("root", 1);
    lrp["privileged"] = json!(true);
    let (status, body) = server
        .send(reqwest::Method::POST, "/v1/desired_lrps", Some(lrp.clone()))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (_, tasks) = server.send(reqwest::Method::GET, "/v1/tasks", None).await;
    assert_eq!(tasks, json!([]), "nothing stored");

    let allowed = start_with(ReceptorConfig {
        allow_privileged: true,
        ..Default::default()
    })
    .await;
    let (status, body) = allowed
        .send(reqwest::Method::POST, "/v1/tasks", Some(task))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = allowed
        .send(reqwest::Method::POST, "/v1/desired_lrps", Some(lrp))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// Regression (issue 15): `basic` in lower case got a 401 (RFC 7617 makes
/// the scheme case-insensitive).
#[tokio::test]
async fn regression_basic_scheme_in_any_case() {
    let server = start_with(ReceptorConfig {
        credentials: Some(Credentials {
            username: "admin".into(),
            password: "s3cret".into(),
        }),
        ..Default::default()
    })
    .await;
    // base64("admin:s3cret")
    for scheme in ["Basic", "basic", "BASIC"] {
        let resp = server
            .http
            .get(server.url("/v1/tasks"))
            .header("authorization", format!("{scheme} YWRtaW46czNjcmV0"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{scheme}");
    }
}

/// Regression (issue 15): NUL bytes in paths and env values were accepted.
#[tokio::test]
async fn regression_nul_bytes_are_refused() {
    let server = start().await;
    let mut task = task_json("nul");
    task["env"] = json!([{"name": "A", "value": "x\u{0}y"}]);
    let (status, body) = server
        .send(reqwest::Method::POST, "/v1/tasks", Some(task))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "env[0].value", "{body}");
    let mut task = task_json("nul");
    task["action"] = json!({"run": {"path": "/bin/sh\u{0}"}});
    let (status, body) = server
        .send(reqwest::Method::POST, "/v1/tasks", Some(task))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "action.run.path", "{body}");
    let (_, tasks) = server.send(reqwest::Method::GET, "/v1/tasks", None).await;
    assert_eq!(tasks, json!([]), "nothing stored");
}

/// Issue 16: `GET /v1/image_config` asks a live cell; it refuses a rootfs
/// that is no image, and says so when no cell can be asked (a cell whose
/// rep cannot be reached is skipped).
#[tokio::test]
async fn image_config_needs_an_image_url_and_a_cell() {
    let server = start().await;
    let (status, body) = server
        .get("/v1/image_config?rootfs=preloaded:///cflinuxfs4")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["name"], "InvalidRequest");
    assert_eq!(body["field"], "rootfs");

    let (status, body) = server
        .get("/v1/image_config?rootfs=docker:///busybox%23latest")
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["name"], "ServiceUnavailable");

    server
        .store
        .upsert_cell(
            lattice_models::CellPresence {
                cell_id: "cell-unreachable".into(),
                zone: "z1".into(),
                // Nothing listens on port 1.
                rep_address: "http://127.0.0.1:1".into(),
                capacity: lattice_models::CellCapacity {
                    memory_mb: 1024,
                    disk_mb: 2048,
                    containers: 10,
                },
                rootfs_providers: lattice_models::cell::docker_rootfs_providers(),
            },
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    let (status, body) = server
        .get("/v1/image_config?rootfs=docker:///busybox%23latest")
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("no cell could read"),
        "{body}"
    );
}
