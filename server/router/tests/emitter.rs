//! The route-emitter against a real receptor in process (port 0, SQLite
//! store in a temporary directory). Desired LRPs go through the receptor's
//! API as a user's would; actual LRPs are written straight to the store, as
//! the rep would.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lattice_bbs::{SharedStore, SqliteStore};
use lattice_client::Client;
use lattice_models::{
    Action, ActualLrp, ActualLrpState, DesiredLrpCreateRequest, HttpRoute, PortMapping, Routes,
    TcpRoute,
};
use lattice_receptor::ReceptorConfig;
use lattice_router::{EmitterConfig, RouteEmitter, RoutingTable, TableHandle};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Upper bound on one wait for the table, so a broken emitter fails the test
/// instead of hanging it. Not a performance claim.
const PATIENCE: Duration = Duration::from_secs(30);

struct Receptor {
    address: SocketAddr,
    store: SharedStore,
    shutdown: CancellationToken,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Drop for Receptor {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Receptor {
    /// Shuts the receptor down and waits until it has stopped serving.
    async fn stop(mut self) {
        self.shutdown.cancel();
        tokio::time::timeout(PATIENCE, &mut self.served)
            .await
            .expect("the receptor stops")
            .expect("receptor task")
            .expect("receptor serve");
    }
}

async fn start_receptor(store: SharedStore, listener: TcpListener) -> Receptor {
    let address = listener.local_addr().expect("receptor address");
    let shutdown = CancellationToken::new();
    let app = lattice_receptor::app(store.clone(), ReceptorConfig::default(), shutdown.clone());
    let served = tokio::spawn(lattice_receptor::serve(listener, app, shutdown.clone()));
    Receptor {
        address,
        store,
        shutdown,
        served,
    }
}

async fn open_store(dir: &tempfile::TempDir) -> SharedStore {
    Arc::new(
        SqliteStore::open(&dir.path().join("bbs.sqlite3"))
            .await
            .expect("open store"),
    )
}

fn test_config() -> EmitterConfig {
    EmitterConfig {
        // Long enough that only events drive the changes these tests wait for.
        resync_interval: Duration::from_secs(3600),
        settle: Duration::from_millis(1),
        debounce: Duration::from_millis(5),
        min_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(100),
    }
}

struct Emitter {
    table: TableHandle,
    changes: watch::Receiver<Arc<RoutingTable>>,
    shutdown: CancellationToken,
    running: tokio::task::JoinHandle<()>,
}

impl Drop for Emitter {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn start_emitter(receptor: SocketAddr) -> Emitter {
    let client = Client::new(&format!("http://{receptor}"), None).expect("client");
    let table = TableHandle::default();
    let changes = table.subscribe();
    let shutdown = CancellationToken::new();
    let running =
        tokio::spawn(RouteEmitter::new(client, test_config()).run(table.clone(), shutdown.clone()));
    Emitter {
        table,
        changes,
        shutdown,
        running,
    }
}

impl Emitter {
    /// Waits until the table satisfies `check`.
    async fn until(
        &mut self,
        what: &str,
        check: impl Fn(&RoutingTable) -> bool,
    ) -> Arc<RoutingTable> {
        let waited = tokio::time::timeout(PATIENCE, self.changes.wait_for(|t| check(t))).await;
        match waited {
            Ok(Ok(table)) => table.clone(),
            Ok(Err(_)) => panic!("the table handle was dropped"),
            Err(_) => panic!("the table never showed {what}: {:?}", self.table.current()),
        }
    }
}

fn web_lrp() -> DesiredLrpCreateRequest {
    DesiredLrpCreateRequest {
        process_guid: "web".into(),
        domain: "apps".into(),
        rootfs: "docker:///busybox".into(),
        instances: 2,
        setup: None,
        action: Action::run("/bin/httpd", &["-f"]),
        monitor: None,
        start_timeout: 0,
        env: vec![],
        cpu_weight: 0,
        disk_mb: 0,
        memory_mb: 0,
        privileged: false,
        ports: vec![8080, 5222],
        routes: Some(Routes {
            http: vec![HttpRoute {
                hostnames: vec!["Web.Example".into()],
                port: 8080,
            }],
            tcp: vec![TcpRoute {
                external_port: 61000,
                container_port: 5222,
                router_group_guid: None,
            }],
            other: Default::default(),
        }),
        log_guid: "web-logs".into(),
        log_source: String::new(),
        annotation: String::new(),
        metrics_guid: String::new(),
        egress_rules: Vec::new(),
        disable_ssh: false,
    }
}

fn running(index: i64) -> ActualLrp {
    let mut lrp = ActualLrp::unclaimed("web", "apps", index, 1);
    lrp.state = ActualLrpState::Running;
    lrp.cell_id = "cell-1".into();
    lrp.instance_guid = format!("web-{index}");
    lrp.address = "127.0.0.1".into();
    let base = 60000 + 10 * index as u32;
    lrp.ports = vec![
        PortMapping {
            container_port: 8080,
            host_port: base,
        },
        PortMapping {
            container_port: 5222,
            host_port: base + 1,
        },
    ];
    lrp
}

fn http_addresses(table: &RoutingTable, host: &str) -> Vec<String> {
    table
        .http
        .get(host)
        .map(|e| e.iter().map(|e| e.address.clone()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn running_instances_enter_and_leave_the_table() {
    let dir = tempfile::tempdir().expect("temp dir");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let receptor = start_receptor(open_store(&dir).await, listener).await;
    let client = Client::new(&format!("http://{}", receptor.address), None).expect("client");
    let mut emitter = start_emitter(receptor.address);

    client
        .create_desired_lrp(&web_lrp())
        .await
        .expect("desire web");
    let store = &receptor.store;
    store
        .create_actual_lrp(running(0))
        .await
        .expect("instance 0");
    let mut one = ActualLrp::unclaimed("web", "apps", 1, 1);
    one = store.create_actual_lrp(one).await.expect("instance 1");

    let table = emitter
        .until("instance 0", |t| {
            http_addresses(t, "web.example").len() == 1
        })
        .await;
    assert_eq!(http_addresses(&table, "web.example"), ["127.0.0.1:60000"]);
    let tcp = &table.tcp[&61000];
    assert_eq!(tcp.len(), 1);
    assert_eq!(tcp[0].address, "127.0.0.1:60001");
    assert_eq!(tcp[0].log_guid, "web-logs");

    // Instance 1 comes up.
    let mut up = running(1);
    up.modification_tag = one.modification_tag.clone();
    let up = store
        .update_actual_lrp(up)
        .await
        .expect("instance 1 running");
    let table = emitter
        .until("both instances", |t| {
            http_addresses(t, "web.example").len() == 2
        })
        .await;
    assert_eq!(
        http_addresses(&table, "web.example"),
        ["127.0.0.1:60000", "127.0.0.1:60010"]
    );

    // Instance 1 crashes: it leaves the table.
    let mut crashed = up;
    crashed.state = ActualLrpState::Crashed;
    crashed.crash_count = 1;
    store
        .update_actual_lrp(crashed)
        .await
        .expect("instance 1 crashed");
    let table = emitter
        .until("instance 1 gone", |t| {
            http_addresses(t, "web.example").len() == 1
        })
        .await;
    assert_eq!(http_addresses(&table, "web.example"), ["127.0.0.1:60000"]);
    assert_eq!(table.tcp[&61000].len(), 1);

    // The LRP is no longer desired: its routes go.
    client.delete_desired_lrp("web").await.expect("delete web");
    emitter
        .until("an empty table", RoutingTable::is_empty)
        .await;

    emitter.shutdown.cancel();
    tokio::time::timeout(PATIENCE, &mut emitter.running)
        .await
        .expect("the emitter stops on shutdown")
        .expect("emitter task");
}

#[tokio::test]
async fn the_emitter_resyncs_after_the_receptor_restarts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open_store(&dir).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let receptor = start_receptor(store.clone(), listener).await;
    let address = receptor.address;
    let client = Client::new(&format!("http://{address}"), None).expect("client");
    let mut emitter = start_emitter(address);

    client
        .create_desired_lrp(&web_lrp())
        .await
        .expect("desire web");
    store
        .create_actual_lrp(running(0))
        .await
        .expect("instance 0");
    emitter
        .until("instance 0", |t| {
            http_addresses(t, "web.example").len() == 1
        })
        .await;

    // The receptor goes away, ending the event stream; changes made while
    // it is down reach no subscriber.
    receptor.stop().await;
    store
        .create_actual_lrp(running(1))
        .await
        .expect("instance 1");
    let mut gone = store.get_actual_lrp("web", 0).await.expect("instance 0");
    gone.state = ActualLrpState::Crashed;
    store
        .update_actual_lrp(gone)
        .await
        .expect("instance 0 crashed");
    assert_eq!(
        http_addresses(&emitter.table.current(), "web.example"),
        ["127.0.0.1:60000"],
        "the last table stays in force while the receptor is away"
    );

    // Back on the same address: the emitter reconnects and re-reads.
    let listener = TcpListener::bind(address)
        .await
        .expect("rebind the receptor address");
    let _receptor = start_receptor(store.clone(), listener).await;
    let table = emitter
        .until("the state written while away", |t| {
            http_addresses(t, "web.example") == ["127.0.0.1:60010"]
        })
        .await;
    assert_eq!(table.tcp[&61000][0].index, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_emitter_moves_to_another_receptor_when_its_receptor_dies() {
    // Two receptors on one store, as two brains on one database.
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open_store(&dir).await;
    let first = start_receptor(
        store.clone(),
        TcpListener::bind("127.0.0.1:0").await.expect("bind"),
    )
    .await;
    let second = start_receptor(
        store.clone(),
        TcpListener::bind("127.0.0.1:0").await.expect("bind"),
    )
    .await;
    let client =
        |address: SocketAddr| Client::new(&format!("http://{address}"), None).expect("client");
    let table = TableHandle::default();
    let mut changes = table.subscribe();
    let shutdown = CancellationToken::new();
    let emitter = RouteEmitter::new(client(first.address), test_config())
        .with_fallbacks([client(second.address)]);
    let running_emitter = tokio::spawn(emitter.run(table.clone(), shutdown.clone()));
    let until = |changes: &mut watch::Receiver<Arc<RoutingTable>>,
                 want: &'static [&'static str]| {
        let mut changes = changes.clone();
        async move {
            tokio::time::timeout(
                PATIENCE,
                changes.wait_for(|t| http_addresses(t, "web.example") == want),
            )
            .await
            .unwrap_or_else(|_| panic!("the table never routed web.example to {want:?}"))
            .expect("table handle")
            .clone()
        }
    };

    client(first.address)
        .create_desired_lrp(&web_lrp())
        .await
        .expect("desire web");
    store
        .create_actual_lrp(running(0))
        .await
        .expect("instance 0");
    until(&mut changes, &["127.0.0.1:60000"]).await;

    // The followed receptor dies for good; the other one still serves.
    first.stop().await;
    store
        .create_actual_lrp(running(1))
        .await
        .expect("instance 1");
    until(&mut changes, &["127.0.0.1:60000", "127.0.0.1:60010"]).await;

    // And it follows the second one's events from then on.
    let mut gone = store.get_actual_lrp("web", 0).await.expect("instance 0");
    gone.state = ActualLrpState::Crashed;
    store
        .update_actual_lrp(gone)
        .await
        .expect("instance 0 crashed");
    until(&mut changes, &["127.0.0.1:60010"]).await;

    shutdown.cancel();
    running_emitter.await.expect("emitter task");
    drop(second);
}
