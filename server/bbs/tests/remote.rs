//! The store over HTTP: the whole store suite against a [`RemoteStore`]
//! served by [`lattice_bbs::http::router`] over a SQLite store, plus what
//! only the remote store has: the secret, failover between two brains of
//! one PostgreSQL store, and feed streams that resume.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lattice_bbs::{suite, PostgresStore, RemoteStore, SharedStore, SqliteStore, Store, StoreError};
use lattice_models::Event;
use lattice_testkit::postgres::TestPostgres;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "test-secret-0123456789";
/// Long enough that only a broken feed reaches it.
const HANG_GUARD: Duration = Duration::from_secs(30);

/// One brain's store API on a loopback port, until dropped.
struct Served {
    url: String,
    shutdown: CancellationToken,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Served {
    async fn start(store: SharedStore) -> Served {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port is free");
        let address: SocketAddr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let shutdown = CancellationToken::new();
        let app = lattice_bbs::http::router(store, SECRET.to_string(), shutdown.clone());
        let stop = shutdown.clone();
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
                .expect("the store API serves");
        });
        Served {
            url: format!("http://{address}"),
            shutdown,
            server: Some(server),
        }
    }

    /// Stops serving and waits until the port is closed.
    async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            server.await.expect("the server task does not panic");
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn sqlite_store(dir: &tempfile::TempDir) -> SharedStore {
    Arc::new(
        SqliteStore::open(&dir.path().join("store.db"))
            .await
            .expect("a new store opens"),
    )
}

macro_rules! suite_tests {
    ($($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let dir = tempfile::tempdir().expect("a temporary directory can be made");
                let served = Served::start(sqlite_store(&dir).await).await;
                let remote = RemoteStore::connect(vec![served.url.clone()], SECRET.to_string())
                    .await
                    .expect("the remote store connects");
                suite::$check(Arc::new(remote)).await;
            }
        )*
    };
}

suite_tests!(
    task_crud,
    desired_lrp_crud,
    actual_lrp_crud,
    duplicate_create_fails,
    missing_records_are_not_found,
    stale_tags_conflict,
    recreated_records_get_a_new_epoch,
    concurrent_conflicting_updates_one_wins,
    retried_updates_lose_nothing,
    task_filters_and_order,
    desired_lrp_filters_and_order,
    actual_lrp_filters_and_order,
    summaries_match_the_records,
    events_in_order_with_before_and_after,
    batch_create_skips_existing_and_publishes_in_order,
    only_successful_record_writes_publish,
    concurrent_events_follow_commit_order,
    cells_expire_and_renew,
    domains_expire_and_refresh,
    locks_are_leases,
    lock_contention_has_one_winner,
);

/// Every method of the store API, with arguments it accepts.
fn every_call() -> Vec<(&'static str, serde_json::Value)> {
    use serde_json::json;
    let tag = json!({"epoch": "e", "index": 0});
    let task = serde_json::to_value(suite::task("t", "d", 1)).expect("serializable");
    let desired = serde_json::to_value(suite::desired_lrp("web", "d", 1)).expect("serializable");
    let actual = serde_json::to_value(suite::actual_lrp("web", "d", 0)).expect("serializable");
    let cell = serde_json::to_value(suite::cell("c1")).expect("serializable");
    let ttl = json!({"secs": 30, "nanos": 0});
    vec![
        ("upsert_domain", json!({"domain": "d", "ttl": null})),
        ("domains", json!({})),
        ("create_task", json!({"task": task})),
        ("get_task", json!({"task_guid": "t"})),
        ("list_tasks", json!({"filter": {}})),
        ("update_task", json!({"task": task})),
        ("delete_task", json!({"task_guid": "t", "expected": tag})),
        ("create_desired_lrp", json!({"lrp": desired})),
        ("get_desired_lrp", json!({"process_guid": "web"})),
        ("list_desired_lrps", json!({"filter": {}})),
        ("update_desired_lrp", json!({"lrp": desired})),
        (
            "delete_desired_lrp",
            json!({"process_guid": "web", "expected": tag}),
        ),
        ("create_actual_lrp", json!({"lrp": actual})),
        ("get_actual_lrp", json!({"process_guid": "web", "index": 0})),
        ("list_actual_lrps", json!({"filter": {}})),
        ("update_actual_lrp", json!({"lrp": actual})),
        (
            "delete_actual_lrp",
            json!({"process_guid": "web", "index": 0, "expected": tag}),
        ),
        ("upsert_cell", json!({"presence": cell, "ttl": ttl})),
        ("list_cells", json!({})),
        ("remove_cell", json!({"cell_id": "c1"})),
        (
            "acquire_lock",
            json!({"name": "l", "owner": "o", "ttl": ttl}),
        ),
        ("release_lock", json!({"name": "l", "owner": "o"})),
        ("lock_owner", json!({"name": "l"})),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_secret_every_call_and_the_feed_are_refused() {
    let dir = tempfile::tempdir().expect("a temporary directory can be made");
    let store = sqlite_store(&dir).await;
    let served = Served::start(store.clone()).await;
    let http = reqwest::Client::new();
    let calls = every_call();
    assert_eq!(calls.len(), 23, "one per Store method");

    // The right secret passes for every method: the arguments are valid.
    for (method, args) in &calls {
        let response = http
            .post(format!("{}/internal/v1/store/{method}", served.url))
            .bearer_auth(SECRET)
            .json(args)
            .send()
            .await
            .expect("the server answers");
        assert_ne!(response.status(), 401, "{method} with the secret");
        assert_ne!(response.status(), 400, "{method}: valid arguments");
    }
    // Clean the slate, then refuse every call without the right secret.
    let _ = store.remove_cell("c1").await;
    let before = store
        .list_tasks(&Default::default())
        .await
        .expect("list tasks");
    let wrong = [
        Some(format!("Bearer {SECRET}x")),
        Some("Bearer ".to_string()),
        Some(format!("Basic {SECRET}")),
        None,
    ];
    for (method, args) in &calls {
        for auth in &wrong {
            let mut request = http
                .post(format!("{}/internal/v1/store/{method}", served.url))
                .json(args);
            if let Some(auth) = auth {
                request = request.header("authorization", auth);
            }
            let response = request.send().await.expect("the server answers");
            assert_eq!(response.status(), 401, "{method} with {auth:?}");
            let body: serde_json::Value = response.json().await.expect("a JSON error");
            assert_eq!(body["error"]["kind"], "unauthorized", "{body}");
            let message = body["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains("secret"), "{message}");
        }
    }
    let response = http
        .get(format!("{}/internal/v1/store/events", served.url))
        .bearer_auth("wrong")
        .send()
        .await
        .expect("the server answers");
    assert_eq!(response.status(), 401);
    assert!(
        store.list_cells().await.expect("list cells").is_empty(),
        "a refused upsert_cell stored nothing"
    );
    assert_eq!(
        store
            .list_tasks(&Default::default())
            .await
            .expect("list tasks"),
        before,
        "refused writes changed nothing"
    );

    // The client refuses to start with a wrong secret, and says why.
    match RemoteStore::connect(vec![served.url.clone()], "wrong".to_string()).await {
        Err(StoreError::Backend(message)) => {
            assert!(message.contains("secret"), "{message}");
            assert!(message.contains(&served.url), "{message}");
        }
        Err(e) => panic!("expected a backend error, got {e}"),
        Ok(_) => panic!("a wrong secret must not connect"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_methods_and_bad_arguments_are_bad_requests() {
    let dir = tempfile::tempdir().expect("a temporary directory can be made");
    let served = Served::start(sqlite_store(&dir).await).await;
    let http = reqwest::Client::new();
    for (method, body) in [
        ("drop_everything", "{}"),
        ("get_task", r#"{"guid": "t"}"#),
        ("get_task", "not json"),
    ] {
        let response = http
            .post(format!("{}/internal/v1/store/{method}", served.url))
            .bearer_auth(SECRET)
            .body(body)
            .send()
            .await
            .expect("the server answers");
        assert_eq!(response.status(), 400, "{method} {body}");
        let body: serde_json::Value = response.json().await.expect("a JSON error");
        assert_eq!(body["error"]["kind"], "bad_request", "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_reachable_brain_fails_to_connect_naming_each() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a loopback port is free")
        .port();
    let url = format!("http://127.0.0.1:{port}");
    match RemoteStore::connect(vec![url.clone()], SECRET.to_string()).await {
        Err(StoreError::Backend(message)) => {
            assert!(message.contains("cannot reach any brain"), "{message}");
            assert!(message.contains(&url), "{message}");
        }
        Err(e) => panic!("expected a backend error, got {e}"),
        Ok(_) => panic!("nothing listens there"),
    }
    for bad in [vec![], vec!["https://brain:8888".to_string()]] {
        assert!(RemoteStore::connect(bad, SECRET.to_string()).await.is_err());
    }
}

async fn recv(events: &mut lattice_bbs::EventReceiver) -> Event {
    match tokio::time::timeout(HANG_GUARD, events.recv()).await {
        Ok(Ok(event)) => event,
        Ok(Err(e)) => panic!("the feed failed: {e}"),
        Err(_) => panic!("no event within {HANG_GUARD:?}"),
    }
}

/// Waits (guarded against a hang) until `ready` holds.
async fn until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    while !ready() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_and_the_feed_fail_over_between_brains_of_one_postgres_store() {
    let pg = TestPostgres::start();
    let brain = |_: ()| async {
        let store: SharedStore = Arc::new(
            PostgresStore::connect(pg.url())
                .await
                .expect("the test database accepts a store"),
        );
        Served::start(store).await
    };
    let (a, b) = (brain(()).await, brain(()).await);
    let remote = RemoteStore::connect(vec![a.url.clone(), b.url.clone()], SECRET.to_string())
        .await
        .expect("the remote store connects");
    assert_eq!(remote.brain(), a.url, "the first brain is preferred");
    let mut events = remote.subscribe();

    let first = remote
        .create_task(suite::task("before", "d", 1))
        .await
        .expect("brain a takes the write");
    assert_eq!(recv(&mut events).await, Event::TaskCreated { task: first });
    assert_eq!(remote.gaps(), 0);

    a.stop().await;

    // Calls move on to brain b: a read, then a write, which is safe to send
    // to b because a was never reached for it.
    assert_eq!(
        remote
            .get_task("before")
            .await
            .expect("brain b answers")
            .task_guid,
        "before"
    );
    assert_eq!(remote.brain(), b.url);
    assert!(remote
        .acquire_lock("auctioneer", "me", Duration::from_secs(30))
        .await
        .expect("brain b answers"));

    // The feed follows b too; it could not resume there, and says so.
    until("the feed to follow brain b", || {
        remote.feed_connected() && remote.gaps() == 1
    })
    .await;
    let second = remote
        .create_task(suite::task("after", "d", 2))
        .await
        .expect("brain b takes the write");
    assert_eq!(recv(&mut events).await, Event::TaskCreated { task: second });
    let guids: Vec<String> = remote
        .list_tasks(&Default::default())
        .await
        .expect("list")
        .into_iter()
        .map(|t| t.task_guid)
        .collect();
    assert_eq!(guids, ["before", "after"]);

    b.stop().await;
    match remote.get_task("before").await {
        Err(StoreError::Backend(message)) => {
            assert!(message.contains("cannot reach any brain"), "{message}")
        }
        other => panic!("no brain is left: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_remote_store_closes_its_feed() {
    let dir = tempfile::tempdir().expect("a temporary directory can be made");
    let served = Served::start(sqlite_store(&dir).await).await;
    let remote = RemoteStore::connect(vec![served.url.clone()], SECRET.to_string())
        .await
        .expect("the remote store connects");
    let mut events = remote.subscribe();
    drop(remote);
    match tokio::time::timeout(HANG_GUARD, events.recv()).await {
        Ok(Err(RecvError::Closed)) => {}
        other => panic!("expected the feed to close, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_of_other_processes_arrive_on_the_feed() {
    let dir = tempfile::tempdir().expect("a temporary directory can be made");
    let store = sqlite_store(&dir).await;
    let served = Served::start(store.clone()).await;
    let remote = RemoteStore::connect(vec![served.url.clone()], SECRET.to_string())
        .await
        .expect("the remote store connects");
    let mut events = remote.subscribe();
    // Written on the brain's side, not through the remote store.
    let task = store
        .create_task(suite::task("local", "d", 1))
        .await
        .expect("create");
    assert_eq!(recv(&mut events).await, Event::TaskCreated { task });
}
