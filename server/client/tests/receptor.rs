//! The client against a real receptor in process (port 0, SQLite store in a
//! temporary directory): every endpoint, and every kind of error.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lattice_bbs::{SharedStore, SqliteStore};
use lattice_client::{Client, ClientError, Credentials};
use lattice_models::{
    Action, ActualLrp, ApiErrorName, CellCapacity, CellPresence, DesiredLrpCreateRequest,
    DesiredLrpUpdateRequest, Event, TaskCreateRequest, TaskState,
};
use lattice_receptor::ReceptorConfig;
use tokio_util::sync::CancellationToken;

struct Receptor {
    url: String,
    store: SharedStore,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Receptor {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start_with(config: ReceptorConfig) -> Receptor {
    let dir = tempfile::tempdir().unwrap();
    let store: SharedStore = Arc::new(
        SqliteStore::open(&dir.path().join("bbs.sqlite3"))
            .await
            .unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let app = lattice_receptor::app(store.clone(), config, shutdown.clone());
    tokio::spawn(lattice_receptor::serve(listener, app, shutdown.clone()));
    Receptor {
        url,
        store,
        shutdown,
        _dir: dir,
    }
}

async fn start() -> (Receptor, Client) {
    let receptor = start_with(ReceptorConfig::default()).await;
    let client = Client::new(&receptor.url, None).unwrap();
    (receptor, client)
}

fn task(guid: &str, domain: &str) -> TaskCreateRequest {
    TaskCreateRequest {
        task_guid: guid.into(),
        domain: domain.into(),
        rootfs: "docker:///busybox".into(),
        action: Action::run("/bin/true", &[]),
        env: vec![],
        cpu_weight: 0,
        disk_mb: 0,
        memory_mb: 0,
        privileged: false,
        log_guid: String::new(),
        log_source: String::new(),
        result_file: String::new(),
        completion_callback_url: String::new(),
        annotation: String::new(),
        metrics_guid: String::new(),
        egress_rules: Vec::new(),
    }
}

fn lrp(guid: &str, domain: &str, instances: i64) -> DesiredLrpCreateRequest {
    DesiredLrpCreateRequest {
        process_guid: guid.into(),
        domain: domain.into(),
        rootfs: "docker:///busybox".into(),
        instances,
        setup: None,
        action: Action::run("/bin/sleep", &["1000"]),
        monitor: None,
        start_timeout: 0,
        env: vec![],
        cpu_weight: 0,
        disk_mb: 0,
        memory_mb: 0,
        privileged: false,
        ports: vec![],
        routes: None,
        log_guid: String::new(),
        log_source: String::new(),
        annotation: String::new(),
        metrics_guid: String::new(),
        egress_rules: Vec::new(),
        disable_ssh: false,
    }
}

fn api_name(err: &ClientError) -> ApiErrorName {
    err.api_error_name()
        .unwrap_or_else(|| panic!("not an API error: {err:?}"))
}

#[tokio::test]
async fn info() {
    let (_receptor, client) = start().await;
    let info = client.info().await.unwrap();
    assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(info.domain, "localhost");
    assert_eq!(info.router_address, None);
}

#[tokio::test]
async fn task_lifecycle() {
    let (_receptor, client) = start().await;
    client.create_task(&task("t1", "apps")).await.unwrap();
    client.create_task(&task("t2", "batch")).await.unwrap();

    let err = client.create_task(&task("t1", "apps")).await.unwrap_err();
    assert_eq!(api_name(&err), ApiErrorName::TaskGuidAlreadyExists);
    assert_eq!(err.status(), Some(409));

    let guids = |tasks: Vec<lattice_models::Task>| {
        tasks.into_iter().map(|t| t.task_guid).collect::<Vec<_>>()
    };
    assert_eq!(guids(client.tasks().await.unwrap()), ["t1", "t2"]);
    assert_eq!(
        guids(client.tasks_by_domain("batch").await.unwrap()),
        ["t2"]
    );
    assert_eq!(client.task("t1").await.unwrap().state, TaskState::Pending);

    let err = client.delete_task("t1").await.unwrap_err();
    assert_eq!(api_name(&err), ApiErrorName::TaskNotDeletable);

    client.cancel_task("t1").await.unwrap();
    let cancelled = client.task("t1").await.unwrap();
    assert_eq!(cancelled.state, TaskState::Completed);
    assert!(cancelled.failed);

    client.delete_task("t1").await.unwrap();
    let err = client.task("t1").await.unwrap_err();
    assert_eq!(api_name(&err), ApiErrorName::TaskNotFound);
    assert!(err.is_not_found());
    assert_eq!(err.status(), Some(404));
}

#[tokio::test]
async fn invalid_requests_name_the_field() {
    let (receptor, client) = start().await;
    let mut bad = task("t1", "apps");
    bad.memory_mb = -1;
    let err = client.create_task(&bad).await.unwrap_err();
    assert_eq!(api_name(&err), ApiErrorName::InvalidTask);
    assert_eq!(err.to_string(), "memory_mb: must be >= 0, got -1");
    assert!(receptor.store.get_task("t1").await.is_err());
}

#[tokio::test]
async fn path_segments_are_encoded_not_interpreted() {
    let (_receptor, client) = start().await;
    // Reaches the task route as one segment, where the receptor refuses it
    // as a guid; unencoded it would have been another path.
    let err = client.task("a/b?c").await.unwrap_err();
    assert_eq!(api_name(&err), ApiErrorName::InvalidRequest);
    assert!(err.to_string().contains("a/b?c"), "{err}");

    let err = client.task("..").await.unwrap_err();
    assert!(
        matches!(err, ClientError::InvalidArgument { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn desired_lrp_lifecycle() {
    let (_receptor, client) = start().await;
    client
        .create_desired_lrp(&lrp("web", "apps", 2))
        .await
        .unwrap();
    client
        .create_desired_lrp(&lrp("worker", "jobs", 1))
        .await
        .unwrap();

    let guids = |lrps: Vec<lattice_models::DesiredLrp>| {
        lrps.into_iter().map(|l| l.process_guid).collect::<Vec<_>>()
    };
    assert_eq!(
        guids(client.desired_lrps().await.unwrap()),
        ["web", "worker"]
    );
    assert_eq!(
        guids(client.desired_lrps_by_domain("jobs").await.unwrap()),
        ["worker"]
    );

    let update = DesiredLrpUpdateRequest {
        instances: Some(5),
        ..Default::default()
    };
    client.update_desired_lrp("web", &update).await.unwrap();
    let web = client.desired_lrp("web").await.unwrap();
    assert_eq!(web.instances, 5);

    // A stale modification tag is refused.
    let mut stale_tag = web.modification_tag.clone();
    stale_tag.index += 100;
    let stale = DesiredLrpUpdateRequest {
        instances: Some(1),
        modification_tag: Some(stale_tag),
        ..Default::default()
    };
    let err = client.update_desired_lrp("web", &stale).await.unwrap_err();
    assert_eq!(api_name(&err), ApiErrorName::ResourceConflict);

    client.delete_desired_lrp("web").await.unwrap();
    let err = client.desired_lrp("web").await.unwrap_err();
    assert_eq!(api_name(&err), ApiErrorName::DesiredLrpNotFound);
}

#[tokio::test]
async fn actual_lrps() {
    let (receptor, client) = start().await;
    for (guid, domain, index) in [
        ("web", "apps", 0),
        ("web", "apps", 1),
        ("worker", "jobs", 0),
    ] {
        receptor
            .store
            .create_actual_lrp(ActualLrp::unclaimed(guid, domain, index, 1))
            .await
            .unwrap();
    }
    assert_eq!(client.actual_lrps().await.unwrap().len(), 3);
    assert_eq!(
        client
            .actual_lrps_by_process_guid("web")
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(client.actual_lrps_by_domain("jobs").await.unwrap().len(), 1);
    let one = client.actual_lrp("web", 1).await.unwrap();
    assert_eq!((one.process_guid.as_str(), one.index), ("web", 1));
    // Restarting an UNCLAIMED instance is accepted and changes nothing.
    client.restart_actual_lrp("web", 1).await.unwrap();
    let err = client.actual_lrp("web", 7).await.unwrap_err();
    assert_eq!(api_name(&err), ApiErrorName::ActualLrpIndexNotFound);
}

#[tokio::test]
async fn cells_and_domains() {
    let (receptor, client) = start().await;
    assert!(client.cells().await.unwrap().is_empty());
    let cell = CellPresence {
        cell_id: "cell-1".into(),
        zone: "z1".into(),
        rep_address: "http://127.0.0.1:1".into(),
        capacity: CellCapacity {
            memory_mb: 1024,
            disk_mb: 2048,
            containers: 10,
        },
        rootfs_providers: lattice_models::cell::docker_rootfs_providers(),
    };
    receptor
        .store
        .upsert_cell(cell.clone(), Duration::from_secs(60))
        .await
        .unwrap();
    let cells = client.cells().await.unwrap();
    assert_eq!(cells.len(), 1);
    assert_eq!(cells[0].presence, cell);

    client.upsert_domain("forever", None).await.unwrap();
    client
        .upsert_domain("for-a-while", Some(Duration::from_secs(3600)))
        .await
        .unwrap();
    assert_eq!(client.domains().await.unwrap(), ["for-a-while", "forever"]);
}

async fn next(events: &mut lattice_client::EventStream) -> Event {
    tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("an event within 10 s")
        .expect("the stream is open")
        .expect("the event decodes")
}

#[tokio::test]
async fn events_arrive_in_order() {
    let (_receptor, client) = start().await;
    let mut events = client.events().await.unwrap();
    client.create_task(&task("t1", "apps")).await.unwrap();
    client.cancel_task("t1").await.unwrap();

    match next(&mut events).await {
        Event::TaskCreated { task } => assert_eq!(task.task_guid, "t1"),
        other => panic!("expected task_created, got {other:?}"),
    }
    match next(&mut events).await {
        Event::TaskChanged {
            task_before,
            task_after,
        } => {
            assert_eq!(task_before.state, TaskState::Pending);
            assert_eq!(task_after.state, TaskState::Completed);
        }
        other => panic!("expected task_changed, got {other:?}"),
    }
}

#[tokio::test]
async fn basic_auth() {
    let receptor = start_with(ReceptorConfig {
        credentials: Some(lattice_receptor::Credentials {
            username: "admin".into(),
            password: "s3cret".into(),
        }),
        ..ReceptorConfig::default()
    })
    .await;

    let anonymous = Client::new(&receptor.url, None).unwrap();
    let err = anonymous.info().await.unwrap_err();
    assert_eq!(err.status(), Some(401));
    assert_eq!(api_name(&err), ApiErrorName::Unauthorized);
    // Refused subscriptions fail at once, not as the stream's first item.
    let err = anonymous
        .events()
        .await
        .err()
        .expect("the subscription is refused");
    assert_eq!(err.status(), Some(401));

    let wrong = Client::new(&receptor.url, Some(Credentials::new("admin", "nope"))).unwrap();
    assert_eq!(wrong.tasks().await.unwrap_err().status(), Some(401));

    let right = Client::new(&receptor.url, Some(Credentials::new("admin", "s3cret"))).unwrap();
    right.create_task(&task("t1", "apps")).await.unwrap();
    assert_eq!(right.tasks().await.unwrap().len(), 1);
}

#[tokio::test]
async fn unreachable_receptor() {
    let url = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let client = Client::new(&url, None).unwrap();
    let err = client.info().await.unwrap_err();
    assert!(matches!(err, ClientError::Unreachable { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("the receptor at {url} is not reachable")),
        "{message}"
    );
    assert!(
        message.contains("lattice up") && message.contains("ltc target"),
        "{message}"
    );
}

/// Something that is not a receptor answers with plain text.
#[tokio::test]
async fn non_receptor_errors_keep_status_and_body() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .fallback(|| async { (axum::http::StatusCode::BAD_GATEWAY, "upstream is down") });
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let client = Client::new(&url, None).unwrap();
    let err = client.tasks().await.unwrap_err();
    assert_eq!(err.status(), Some(502));
    assert_eq!(
        err.to_string(),
        format!("{url} answered HTTP 502: upstream is down")
    );
    server.abort();
}

/// A 2xx answer that is not the promised JSON is a decode error naming the call.
#[tokio::test]
async fn undecodable_answers_name_the_call() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(|| async { "not json" });
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let client = Client::new(&url, None).unwrap();
    let err = client.cells().await.unwrap_err();
    assert!(matches!(err, ClientError::Decode { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "could not decode the answer to GET /v1/cells from the receptor"
    );
    server.abort();
}
