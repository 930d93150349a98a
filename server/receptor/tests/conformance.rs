//! Conformance with Diego's receptor wire contract.
//!
//! Each request here is written as Diego's receptor docs (`doc/tasks.md`,
//! `doc/lrps.md`, `doc/actions.md`, `doc/api_*.md`) and Lattice's `ltc`
//! write it, as raw JSON text, and is sent to a real server (port 0, real
//! SQLite store). The answers are checked the way Diego's Go client reads
//! them: status, headers, body shape, and the error-name table. Creates must
//! answer 201 with an empty body and no content type, byte for byte, because
//! Diego's client treats any body on a create as a failure.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lattice_bbs::{SharedStore, SqliteStore};
use lattice_receptor::{Credentials, ReceptorConfig};
use reqwest::header::{HeaderMap, CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
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

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    bytes: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or_else(|e| {
            panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.bytes))
        })
    }

    fn content_type(&self) -> Option<&str> {
        self.headers
            .get(CONTENT_TYPE)
            .map(|v| v.to_str().expect("ascii"))
    }

    /// Diego's answer to a create: 201, no body, no content type.
    fn assert_empty_created(&self) {
        assert_eq!(
            self.status,
            StatusCode::CREATED,
            "{}",
            String::from_utf8_lossy(&self.bytes)
        );
        assert_eq!(self.bytes, b"", "a create answers with an empty body");
        assert_eq!(
            self.content_type(),
            None,
            "an empty 201 has no content type"
        );
        assert_eq!(
            self.headers.get(CONTENT_LENGTH).map(|v| v.as_bytes()),
            Some(&b"0"[..])
        );
    }

    /// Diego's error body: `{"name": NAME, "message": ...}` as JSON.
    fn assert_error(&self, status: StatusCode, name: &str) {
        assert_eq!(
            self.status,
            status,
            "{}",
            String::from_utf8_lossy(&self.bytes)
        );
        assert_eq!(self.content_type(), Some("application/json"));
        let body = self.json();
        assert_eq!(body["name"], name, "{body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}"
        );
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

/// A server as an operator running Diego's examples would start it: they
/// ask for privileged containers, which need the opt-in
/// (`--allow-privileged`).
async fn start() -> Server {
    start_with(ReceptorConfig {
        allow_privileged: true,
        ..Default::default()
    })
    .await
}

impl Server {
    async fn send(&self, method: Method, path: &str, body: Option<&str>) -> Answer {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request
                .header(CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.expect("request");
        Answer {
            status: response.status(),
            headers: response.headers().clone(),
            bytes: response.bytes().await.expect("body").to_vec(),
        }
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: &str) -> Answer {
        self.send(Method::POST, path, Some(body)).await
    }
}

/// Every key of `sent` comes back with the same value in `read`.
fn assert_returned(sent: &Value, read: &Value) {
    for (key, value) in sent.as_object().expect("an object") {
        assert_eq!(&read[key], value, "field {key:?} changed on the way back");
    }
}

/// A task as Diego's `doc/tasks.md` describes it, with every field.
const DIEGO_TASK: &str = r#"{
    "task_guid": "some-guid",
    "domain": "some-domain",
    "rootfs": "docker:///docker-org/docker-image",
    "env": [
        {"name": "ENV_NAME_A", "value": "ENV_VALUE_A"},
        {"name": "ENV_NAME_B", "value": "ENV_VALUE_B"}
    ],
    "cpu_weight": 57,
    "disk_mb": 1024,
    "memory_mb": 128,
    "privileged": true,
    "action": {
        "run": {
            "path": "/path/to/executable",
            "args": ["some", "args"],
            "dir": "/path/to/working/directory",
            "env": [{"name": "FOO", "value": "1"}],
            "resource_limits": {"nofile": 1000},
            "user": "vcap",
            "log_source": "some-log-source",
            "suppress_log_output": true
        }
    },
    "result_file": "/path/to/return",
    "completion_callback_url": "http://optional/callback/that/will/receive/result",
    "log_guid": "some-log-guid",
    "log_source": "some-log-source",
    "metrics_guid": "some-metrics-guid",
    "annotation": "arbitrary metadata",
    "egress_rules": [
        {"protocol": "tcp", "destinations": ["0.0.0.0/0"], "port_range": {"start": 1, "end": 1024}, "log": true},
        {"protocol": "udp", "destinations": ["8.8.0.0/16"], "ports": [53], "log": false},
        {"protocol": "icmp", "destinations": ["10.0.0.1"], "icmp_info": {"type": 0, "code": 0}, "log": false},
        {"protocol": "all", "destinations": ["0.0.0.0-9.255.255.255"], "log": false}
    ]
}"#;

/// A desired LRP as Diego's `doc/lrps.md` describes it, with every field,
/// every action kind of `doc/actions.md` (timeout in Diego's nanoseconds),
/// and the routes Lattice's `ltc create` sends (with its `diego-ssh` key).
const DIEGO_DESIRED_LRP: &str = r#"{
    "process_guid": "some-guid",
    "domain": "some-domain",
    "rootfs": "docker:///docker-org/docker-image",
    "instances": 17,
    "env": [
        {"name": "ENV_NAME_A", "value": "ENV_VALUE_A"},
        {"name": "ENV_NAME_B", "value": "ENV_VALUE_B"}
    ],
    "cpu_weight": 57,
    "disk_mb": 1024,
    "memory_mb": 128,
    "privileged": true,
    "setup": {
        "serial": {
            "actions": [
                {"download": {"from": "http://file-server/v1/static/lifecycle.tgz", "to": "/tmp/lifecycle", "cache_key": "lifecycle", "artifact": "lifecycle", "user": "vcap", "log_source": "STG"}},
                {"emit_progress": {
                    "start_message": "Downloading app...",
                    "success_message": "Downloaded app",
                    "failure_message_prefix": "Failed to download app",
                    "log_source": "STG",
                    "action": {"try": {"action": {"run": {"path": "/bin/true", "user": "vcap"}}, "log_source": "STG"}}
                }}
            ],
            "log_source": "STG"
        }
    },
    "action": {
        "codependent": {
            "actions": [
                {"run": {"path": "/tmp/lifecycle/launcher", "args": ["app", "start"], "user": "vcap"}},
                {"parallel": {"actions": [
                    {"upload": {"from": "/tmp/out", "to": "http://file-server/v1/droplets/x", "artifact": "out", "user": "vcap", "log_source": "APP"}}
                ], "log_source": "APP"}}
            ],
            "log_source": "APP"
        }
    },
    "monitor": {
        "timeout": {
            "action": {"run": {"path": "/tmp/lifecycle/healthcheck", "args": ["-port=8080"], "user": "vcap", "log_source": "HEALTH"}},
            "timeout": 30000000000,
            "log_source": "HEALTH"
        }
    },
    "start_timeout": 60,
    "ports": [8080, 5050, 2222],
    "routes": {
        "cf-router": [{"hostnames": ["a.example.com", "b.example.com"], "port": 8080}],
        "tcp-router": [{"router_group_guid": "default-tcp", "external_port": 61000, "container_port": 5050}],
        "diego-ssh": {"container_port": 2222, "private_key": "-----BEGIN RSA PRIVATE KEY-----\nMIIB...\n-----END RSA PRIVATE KEY-----\n"}
    },
    "log_guid": "some-log-guid",
    "log_source": "some-log-source",
    "metrics_guid": "some-metrics-guid",
    "annotation": "arbitrary metadata",
    "egress_rules": [
        {"protocol": "all", "destinations": ["0.0.0.0-9.255.255.255"], "log": false},
        {"protocol": "tcp", "destinations": ["0.0.0.0/0"], "ports": [53], "log": false}
    ]
}"#;

#[tokio::test]
async fn task_create_is_an_empty_201_and_reads_back_whole() {
    let server = start().await;
    server
        .post("/v1/tasks", DIEGO_TASK)
        .await
        .assert_empty_created();

    let read = server.get("/v1/tasks/some-guid").await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.content_type(), Some("application/json"));
    let task = read.json();
    assert_returned(&serde_json::from_str(DIEGO_TASK).unwrap(), &task);
    // The fields of Diego's TaskResponse beyond the request.
    assert_eq!(task["state"], "PENDING");
    assert_eq!(task["cell_id"], "");
    assert_eq!(task["failed"], false);
    assert_eq!(task["failure_reason"], "");
    assert_eq!(task["result"], "");
    assert!(task["created_at"].as_i64().is_some_and(|t| t > 0));

    // Lists are arrays of the same shape.
    let list = server.get("/v1/tasks").await.json();
    assert_eq!(list[0], task);
    let by_domain = server.get("/v1/domains/some-domain/tasks").await.json();
    assert_eq!(by_domain[0], task);

    // Cancel (POST .../cancel) and delete answer 204 with no body.
    let cancel = server
        .send(Method::POST, "/v1/tasks/some-guid/cancel", None)
        .await;
    assert_eq!(
        (cancel.status, cancel.bytes.len()),
        (StatusCode::NO_CONTENT, 0)
    );
    let delete = server
        .send(Method::DELETE, "/v1/tasks/some-guid", None)
        .await;
    assert_eq!(
        (delete.status, delete.bytes.len()),
        (StatusCode::NO_CONTENT, 0)
    );
}

#[tokio::test]
async fn desired_lrp_create_update_and_unknown_routes_round_trip() {
    let server = start().await;
    server
        .post("/v1/desired_lrps", DIEGO_DESIRED_LRP)
        .await
        .assert_empty_created();

    let read = server.get("/v1/desired_lrps/some-guid").await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.content_type(), Some("application/json"));
    let lrp = read.json();
    let sent: Value = serde_json::from_str(DIEGO_DESIRED_LRP).unwrap();
    assert_returned(&sent, &lrp);
    assert_eq!(lrp["modification_tag"]["index"], 0);
    assert!(lrp["modification_tag"]["epoch"]
        .as_str()
        .is_some_and(|e| !e.is_empty()));

    // Diego's DesiredLRPUpdateRequest: instances, routes, annotation; an
    // unknown router's entry set by an update is kept too.
    let routes = json!({
        "cf-router": [{"hostnames": ["c.example.com"], "port": 8080}],
        "diego-ssh": {"container_port": 2222, "private_key": "other"},
        "custom-router": [{"anything": ["goes", 1, null]}]
    });
    let update = json!({"instances": 3, "routes": routes, "annotation": "new"}).to_string();
    let answer = server
        .send(Method::PUT, "/v1/desired_lrps/some-guid", Some(&update))
        .await;
    assert_eq!(
        (answer.status, answer.bytes.len()),
        (StatusCode::NO_CONTENT, 0)
    );
    let lrp = server.get("/v1/desired_lrps/some-guid").await.json();
    assert_eq!(lrp["instances"], 3);
    assert_eq!(lrp["annotation"], "new");
    assert_eq!(lrp["routes"], routes);
    assert_eq!(lrp["metrics_guid"], "some-metrics-guid");

    let by_domain = server
        .get("/v1/domains/some-domain/desired_lrps")
        .await
        .json();
    assert_eq!(by_domain[0], lrp);

    let delete = server
        .send(Method::DELETE, "/v1/desired_lrps/some-guid", None)
        .await;
    assert_eq!(
        (delete.status, delete.bytes.len()),
        (StatusCode::NO_CONTENT, 0)
    );
}

/// Our own spelling of the timeout (`timeout_ms`) is still read, and read
/// back in Diego's.
#[tokio::test]
async fn timeout_ms_is_read_and_returned_as_diegos_nanoseconds() {
    let server = start().await;
    let mut lrp: Value = serde_json::from_str(DIEGO_DESIRED_LRP).unwrap();
    lrp["monitor"] =
        json!({"timeout": {"action": {"run": {"path": "/bin/true"}}, "timeout_ms": 1500}});
    server
        .post("/v1/desired_lrps", &lrp.to_string())
        .await
        .assert_empty_created();
    let read = server.get("/v1/desired_lrps/some-guid").await.json();
    assert_eq!(
        read["monitor"],
        json!({"timeout": {"action": {"run": {"path": "/bin/true"}}, "timeout": 1_500_000_000_i64}})
    );
}

#[tokio::test]
async fn actual_lrps_cells_and_domains_have_diegos_shapes() {
    let server = start().await;
    let now = lattice_models::unix_nanos(std::time::SystemTime::now());
    server
        .store
        .create_actual_lrp(lattice_models::ActualLrp::unclaimed(
            "some-guid",
            "some-domain",
            0,
            now,
        ))
        .await
        .unwrap();
    let one = server.get("/v1/actual_lrps/some-guid/index/0").await;
    assert_eq!(one.status, StatusCode::OK);
    let one = one.json();
    for key in [
        "process_guid",
        "instance_guid",
        "cell_id",
        "domain",
        "index",
        "address",
        "ports",
        "state",
        "crash_count",
        "since",
        "evacuating",
        "modification_tag",
    ] {
        assert!(
            one.get(key).is_some(),
            "ActualLRPResponse lacks {key}: {one}"
        );
    }
    assert_eq!(one["evacuating"], false);
    assert_eq!(one["state"], "UNCLAIMED");
    for path in [
        "/v1/actual_lrps",
        "/v1/actual_lrps/some-guid",
        "/v1/domains/some-domain/actual_lrps",
    ] {
        assert_eq!(server.get(path).await.json(), json!([one]), "{path}");
    }
    // Killing an index (DELETE) answers 204.
    let kill = server
        .send(Method::DELETE, "/v1/actual_lrps/some-guid/index/0", None)
        .await;
    assert_eq!((kill.status, kill.bytes.len()), (StatusCode::NO_CONTENT, 0));

    server
        .store
        .upsert_cell(
            lattice_models::CellPresence {
                cell_id: "cell_z1-0".into(),
                zone: "z1".into(),
                rep_address: "http://127.0.0.1:1".into(),
                capacity: lattice_models::CellCapacity {
                    memory_mb: 512,
                    disk_mb: 1024,
                    containers: 124,
                },
                rootfs_providers: lattice_models::cell::docker_rootfs_providers(),
            },
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    let cells = server.get("/v1/cells").await.json();
    assert_eq!(cells[0]["cell_id"], "cell_z1-0");
    assert_eq!(cells[0]["zone"], "z1");
    assert_eq!(
        cells[0]["capacity"],
        json!({"memory_mb": 512, "disk_mb": 1024, "containers": 124})
    );
    assert_eq!(cells[0]["rootfs_providers"], json!({"docker": []}));

    // Domains: PUT with an optional Cache-Control max-age, 204; GET lists.
    let answer = server
        .http
        .put(format!("{}/v1/domains/some-domain", server.base))
        .header("Cache-Control", "max-age=60")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        server.get("/v1/domains").await.json(),
        json!(["some-domain"])
    );
}

#[tokio::test]
async fn events_are_server_sent_events_with_diegos_names() {
    let server = start().await;
    let response = server
        .http
        .get(format!("{}/v1/events", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[CONTENT_TYPE].to_str().unwrap(),
        "text/event-stream"
    );
    server
        .post("/v1/desired_lrps", DIEGO_DESIRED_LRP)
        .await
        .assert_empty_created();
    let mut stream = response.bytes_stream();
    let mut text = String::new();
    // Reads until the whole first event (ended by a blank line) has come.
    while !text.contains("desired_lrp_created") || !text.contains("\n\n") {
        let chunk = stream.next().await.expect("the stream stays open").unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let event = text
        .split("\n\n")
        .find(|e| e.contains("event: desired_lrp_created"))
        .expect("a desired_lrp_created event");
    let data = event
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .expect("event data");
    let data: Value = serde_json::from_str(data).unwrap();
    assert_eq!(data["desired_lrp"]["process_guid"], "some-guid");
}

/// Diego's error names, one request each, with status and body shape.
#[tokio::test]
async fn error_name_table() {
    let server = start().await;
    server
        .post("/v1/tasks", DIEGO_TASK)
        .await
        .assert_empty_created();
    server
        .post("/v1/desired_lrps", DIEGO_DESIRED_LRP)
        .await
        .assert_empty_created();
    let bad_task = DIEGO_TASK.replace("\"some-guid\"", "\"bad guid!\"");
    let bad_lrp = DIEGO_DESIRED_LRP.replace("\"instances\": 17", "\"instances\": -1");
    let table: Vec<(Method, &str, Option<&str>, StatusCode, &str)> = vec![
        (
            Method::GET,
            "/v1/tasks/missing",
            None,
            StatusCode::NOT_FOUND,
            "TaskNotFound",
        ),
        (
            Method::POST,
            "/v1/tasks/missing/cancel",
            None,
            StatusCode::NOT_FOUND,
            "TaskNotFound",
        ),
        (
            Method::DELETE,
            "/v1/tasks/missing",
            None,
            StatusCode::NOT_FOUND,
            "TaskNotFound",
        ),
        (
            Method::GET,
            "/v1/desired_lrps/missing",
            None,
            StatusCode::NOT_FOUND,
            "DesiredLRPNotFound",
        ),
        (
            Method::PUT,
            "/v1/desired_lrps/missing",
            Some(r#"{"instances": 1}"#),
            StatusCode::NOT_FOUND,
            "DesiredLRPNotFound",
        ),
        (
            Method::DELETE,
            "/v1/desired_lrps/missing",
            None,
            StatusCode::NOT_FOUND,
            "DesiredLRPNotFound",
        ),
        (
            Method::GET,
            "/v1/actual_lrps/missing/index/0",
            None,
            StatusCode::NOT_FOUND,
            "ActualLRPIndexNotFound",
        ),
        (
            Method::DELETE,
            "/v1/actual_lrps/missing/index/0",
            None,
            StatusCode::NOT_FOUND,
            "ActualLRPIndexNotFound",
        ),
        (
            Method::POST,
            "/v1/tasks",
            Some(DIEGO_TASK),
            StatusCode::CONFLICT,
            "TaskGuidAlreadyExists",
        ),
        (
            Method::POST,
            "/v1/desired_lrps",
            Some(DIEGO_DESIRED_LRP),
            StatusCode::CONFLICT,
            "DesiredLRPAlreadyExists",
        ),
        (
            Method::DELETE,
            "/v1/tasks/some-guid",
            None,
            StatusCode::CONFLICT,
            "TaskNotDeletable",
        ),
        (
            Method::POST,
            "/v1/tasks",
            Some("{\"task_guid\": "),
            StatusCode::BAD_REQUEST,
            "InvalidJSON",
        ),
        (
            Method::POST,
            "/v1/desired_lrps",
            Some("[]"),
            StatusCode::BAD_REQUEST,
            "InvalidJSON",
        ),
        (
            Method::POST,
            "/v1/tasks",
            Some(&bad_task),
            StatusCode::BAD_REQUEST,
            "InvalidTask",
        ),
        (
            Method::POST,
            "/v1/desired_lrps",
            Some(&bad_lrp),
            StatusCode::BAD_REQUEST,
            "InvalidLRP",
        ),
        (
            Method::PUT,
            "/v1/desired_lrps/some-guid",
            Some(r#"{"instances": -1}"#),
            StatusCode::BAD_REQUEST,
            "InvalidLRP",
        ),
    ];
    for (method, path, body, status, name) in table {
        let answer = server.send(method.clone(), path, body).await;
        answer.assert_error(status, name);
    }

    let guarded = start_with(ReceptorConfig {
        credentials: Some(Credentials {
            username: "user".into(),
            password: "pass".into(),
        }),
        ..Default::default()
    })
    .await;
    guarded
        .get("/v1/tasks")
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "Unauthorized");
}

/// Strict where Diego has no field: a typo is a 400 naming it, and nothing
/// is stored.
#[tokio::test]
async fn typos_are_refused_by_name_and_nothing_is_stored() {
    let server = start().await;
    let cases = [
        (
            "/v1/tasks",
            DIEGO_TASK.replace("\"memory_mb\"", "\"memroy_mb\""),
            "memroy_mb",
        ),
        (
            "/v1/desired_lrps",
            DIEGO_DESIRED_LRP.replace("\"start_timeout\"", "\"start_timout\""),
            "start_timout",
        ),
        (
            "/v1/desired_lrps",
            DIEGO_DESIRED_LRP.replace("\"hostnames\"", "\"hostname\""),
            "hostname",
        ),
        (
            "/v1/desired_lrps",
            DIEGO_DESIRED_LRP.replace("\"router_group_guid\"", "\"router_group\""),
            "router_group",
        ),
        (
            "/v1/desired_lrps",
            DIEGO_DESIRED_LRP.replace("\"destinations\"", "\"destination\""),
            "destination",
        ),
        (
            "/v1/tasks",
            DIEGO_TASK.replace("\"suppress_log_output\"", "\"suppress_logs\""),
            "suppress_logs",
        ),
    ];
    for (path, body, typo) in cases {
        let answer = server.post(path, &body).await;
        answer.assert_error(StatusCode::BAD_REQUEST, "InvalidJSON");
        let message = answer.json()["message"].as_str().unwrap().to_string();
        assert!(message.contains(typo), "{typo}: {message}");
    }
    // A well-formed but invalid egress rule names its field.
    let bad = DIEGO_TASK.replace("\"protocol\": \"udp\"", "\"protocol\": \"udpp\"");
    let answer = server.post("/v1/tasks", &bad).await;
    answer.assert_error(StatusCode::BAD_REQUEST, "InvalidTask");
    assert_eq!(answer.json()["field"], "egress_rules[1].protocol");

    assert_eq!(server.get("/v1/tasks").await.json(), json!([]));
    assert_eq!(server.get("/v1/desired_lrps").await.json(), json!([]));
}

#[tokio::test]
async fn version_and_sync() {
    let dir = tempfile::tempdir().unwrap();
    let ltc = dir.path().join("ltc");
    let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&ltc, &bytes).unwrap();
    let server = start_with(ReceptorConfig {
        ltc_path: Some(ltc),
        ..Default::default()
    })
    .await;

    let version = server.get("/v1/version").await;
    assert_eq!(version.status, StatusCode::OK);
    let version = version.json();
    assert_eq!(version["receptor"], env!("CARGO_PKG_VERSION"));
    assert_eq!(version["ltc"], env!("CARGO_PKG_VERSION"));
    assert_eq!(version["lattice_release"], env!("CARGO_PKG_VERSION"));
    // What we do not run is omitted, not sent empty.
    assert!(version.get("diego_release").is_none(), "{version}");

    let arch = lattice_models::api::sync_arch().expect("tests run on linux or macOS");
    let got = server.get(&format!("/v1/sync/{arch}/ltc")).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.content_type(), Some("application/octet-stream"));
    assert_eq!(got.bytes, bytes);

    let other = if arch == "linux" { "osx" } else { "linux" };
    let answer = server.get(&format!("/v1/sync/{other}/ltc")).await;
    answer.assert_error(StatusCode::NOT_FOUND, "ResourceNotFound");
    let message = answer.json()["message"].as_str().unwrap().to_string();
    assert!(
        message.contains(&format!("no ltc for {other}")),
        "{message}"
    );
    server
        .get(&format!("/v1/sync/{arch}/receptor"))
        .await
        .assert_error(StatusCode::NOT_FOUND, "ResourceNotFound");
    server
        .get("/v1/sync/windows/ltc")
        .await
        .assert_error(StatusCode::NOT_FOUND, "ResourceNotFound");

    // Without an ltc beside it, the server says so.
    let bare = start().await;
    let answer = bare.get(&format!("/v1/sync/{arch}/ltc")).await;
    answer.assert_error(StatusCode::NOT_FOUND, "ResourceNotFound");
    assert!(bare.get("/v1/version").await.json().get("ltc").is_none());
}

/// The served OpenAPI document is the checked-in one.
#[tokio::test]
async fn openapi_document_is_served() {
    let server = start().await;
    let served = server.get("/v1/openapi.json").await;
    assert_eq!(served.status, StatusCode::OK);
    assert_eq!(served.content_type(), Some("application/json"));
    let checked_in: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/openapi.json"
        ))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(served.json(), checked_in);
}
