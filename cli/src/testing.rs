//! Test support: a real receptor in process, on port 0, over a SQLite store
//! in a temporary directory, with the log hub's routes merged in as the
//! server does it, and a [`Context`] that targets it; or a whole cluster
//! ([`lattice_testkit::cluster::TestCluster`]: the brain and real reps on
//! the fake Garden) behind the same, so that the waits of `ltc create`,
//! `ltc scale` and `ltc test` see what the real components do.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use lattice_bbs::{ActualLrpFilter, DesiredLrpFilter, SharedStore, SqliteStore};
use lattice_logs::LogHub;
use lattice_models::lifecycle::{BUILDER_PATH, HEALTHCHECK_PATH, LAUNCHER_PATH};
use lattice_models::log::{LogMessage, MessageType, SOURCE_APP};
use lattice_models::{unix_nanos, ActualLrp, ActualLrpState, PortMapping};
use lattice_receptor::ReceptorConfig;
use lattice_testkit::cluster::{ClusterBuilder, CrashPolicy, Policy, Script, TestCluster};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{ENV_CONFIG_DIR, ENV_TARGET};
use crate::output::Stderr;
use crate::Context;

pub(crate) struct TestReceptor {
    pub url: String,
    pub store: SharedStore,
    /// The log hub behind `/v1/logs`; tests publish into it.
    pub hub: Arc<LogHub>,
    /// Holds the store's file and the config dir of [`TestReceptor::context`].
    pub dir: tempfile::TempDir,
    server: Server,
}

/// What serves a [`TestReceptor`].
enum Server {
    /// The receptor alone: nothing acts on what is stored but the test.
    Receptor {
        config: Box<ReceptorConfig>,
        address: SocketAddr,
        shutdown: CancellationToken,
        task: JoinHandle<std::io::Result<()>>,
    },
    /// A whole cluster: its brain and cells act on what ltc stores.
    Cluster(Box<TestCluster>),
}

/// What the staging builder of [`app_cluster`] prints: one STG line.
pub(crate) const STAGING_STDOUT: &str = "Reading the image's configuration\n";

/// A cluster of one cell on which `ltc create` stages through a task
/// (the cells cannot read images' configs) whose builder finds `staged`
/// (its JSON), and whose apps start and pass their health checks at once.
pub(crate) fn app_cluster(staged: &str) -> ClusterBuilder {
    TestCluster::builder()
        .cells(1)
        .garden(|garden| garden.fail_image_configs("the engine cannot be asked"))
        .script(
            BUILDER_PATH,
            Script::exits(0)
                .stdout(STAGING_STDOUT)
                .writes(crate::commands::create::STAGING_RESULT, staged.to_string()),
        )
        .script(LAUNCHER_PATH, Script::runs_until_stopped())
        .script(HEALTHCHECK_PATH, Script::exits(0))
}

/// A crash policy that restarts nothing for an hour: a crashed instance
/// stays CRASHED, with one crash, while a test looks at it.
pub(crate) fn no_restarts() -> Policy {
    Policy {
        crash: CrashPolicy {
            immediate_restarts: 0,
            backoff_min: Duration::from_secs(3600),
            ..CrashPolicy::default()
        },
        ..Policy::default()
    }
}

impl TestReceptor {
    /// `builder`'s cluster, with ltc's context pointed at its receptor.
    pub async fn with_cluster(builder: ClusterBuilder) -> TestReceptor {
        let cluster = builder.start().await;
        TestReceptor {
            url: cluster.url().to_string(),
            store: cluster.store().clone(),
            hub: cluster.hub().clone(),
            dir: tempfile::tempdir().expect("a temp dir can be created"),
            server: Server::Cluster(Box::new(cluster)),
        }
    }

    /// The cluster behind this receptor.
    ///
    /// # Panics
    /// When it serves the receptor alone.
    pub fn cluster(&self) -> &TestCluster {
        match &self.server {
            Server::Cluster(cluster) => cluster,
            Server::Receptor { .. } => panic!("this test serves the receptor alone"),
        }
    }

    pub async fn start() -> TestReceptor {
        TestReceptor::start_with(ReceptorConfig::default()).await
    }

    pub async fn start_with(config: ReceptorConfig) -> TestReceptor {
        let dir = tempfile::tempdir().expect("a temp dir can be created");
        let store: SharedStore = Arc::new(
            SqliteStore::open(&dir.path().join("bbs.sqlite3"))
                .await
                .expect("a fresh store opens"),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("port 0 on loopback can be bound");
        let address = listener
            .local_addr()
            .expect("a bound listener has an address");
        let hub = Arc::new(LogHub::default());
        let shutdown = CancellationToken::new();
        let task = serve(listener, &store, &hub, &config, &shutdown);
        TestReceptor {
            url: format!("http://{address}"),
            store,
            hub,
            dir,
            server: Server::Receptor {
                config: Box::new(config),
                address,
                shutdown,
                task,
            },
        }
    }

    /// Stops the server as `lattice` does on SIGTERM (which ends every log
    /// stream), then serves the same store and hub on the same port again.
    ///
    /// # Panics
    /// When it serves a cluster.
    pub async fn restart(&mut self) {
        let Server::Receptor {
            config,
            address,
            shutdown,
            task,
        } = &mut self.server
        else {
            panic!("only a receptor alone restarts");
        };
        shutdown.cancel();
        (&mut *task)
            .await
            .expect("the server task does not panic")
            .expect("the server shuts down cleanly");
        // std sets SO_REUSEADDR on Unix, so the port is free again at once.
        let listener = tokio::net::TcpListener::bind(*address)
            .await
            .expect("the port the server just left can be bound again");
        *shutdown = CancellationToken::new();
        *task = serve(listener, &self.store, &self.hub, config, shutdown);
    }

    /// What ltc would load with `LTC_TARGET` set to this receptor and its
    /// config dir in the temp dir, plus `extra` variables.
    pub fn context(&self, extra: &[(&str, &str)]) -> Context {
        let mut env: HashMap<String, String> = extra
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env.entry(ENV_TARGET.to_string())
            .or_insert_with(|| self.url.clone());
        env.insert(
            ENV_CONFIG_DIR.to_string(),
            self.dir.path().join("ltc").display().to_string(),
        );
        let mut ctx =
            Context::load(&move |name| env.get(name).cloned()).expect("the test config loads");
        // Whether the test runner's stdout and stderr are terminals must not
        // change what the tests see.
        ctx.color = false;
        ctx.stderr = Stderr::new(std::io::sink(), false, false);
        ctx
    }

    /// [`TestReceptor::context`], with its stderr captured.
    pub fn context_with_stderr(&self, extra: &[(&str, &str)]) -> (Context, SharedBuffer) {
        let mut ctx = self.context(extra);
        let stderr = SharedBuffer::default();
        ctx.stderr = Stderr::new(stderr.clone(), false, false);
        (ctx, stderr)
    }
}

impl Drop for TestReceptor {
    fn drop(&mut self) {
        // A cluster stops itself when dropped.
        if let Server::Receptor { shutdown, .. } = &self.server {
            shutdown.cancel();
        }
    }
}

/// The receptor with the hub's routes, as `lattice up` serves them.
fn serve(
    listener: tokio::net::TcpListener,
    store: &SharedStore,
    hub: &Arc<LogHub>,
    config: &ReceptorConfig,
    shutdown: &CancellationToken,
) -> JoinHandle<std::io::Result<()>> {
    let logs = lattice_logs::http::router(hub.clone(), shutdown.clone());
    let app =
        lattice_receptor::app_with_routes(store.clone(), config.clone(), shutdown.clone(), logs);
    tokio::spawn(lattice_receptor::serve(listener, app, shutdown.clone()))
}

/// An in-memory output that a command writes to while the test reads it.
#[derive(Debug, Clone, Default)]
pub(crate) struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

impl SharedBuffer {
    pub fn contents(&self) -> String {
        let bytes = self.0.lock().expect("no writer panics holding it").clone();
        String::from_utf8(bytes).expect("ltc prints UTF-8")
    }
}

impl Write for SharedBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .expect("no writer panics holding it")
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Waits until `condition` holds, checking every few milliseconds. The
/// limit only keeps a broken test from hanging: nothing here is meant to
/// take more than a fraction of it.
pub(crate) async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    const HANG_GUARD: Duration = Duration::from_secs(60);
    let waited = tokio::time::timeout(HANG_GUARD, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "never happened: {what}");
}

/// A log line of `log_guid`, stamped now.
pub(crate) fn log_line(
    log_guid: &str,
    source: &str,
    instance: &str,
    text: &str,
    kind: MessageType,
) -> LogMessage {
    LogMessage {
        log_guid: log_guid.to_string(),
        source_type: source.to_string(),
        source_instance: instance.to_string(),
        message: text.to_string(),
        message_type: kind,
        timestamp: now(),
    }
}

/// What a command wrote to its output buffer.
pub(crate) fn output(buffer: Vec<u8>) -> String {
    String::from_utf8(buffer).expect("ltc prints UTF-8")
}

/// A valid task request for `guid`, as a user would write it.
pub(crate) fn task_json(guid: &str) -> String {
    format!(
        r#"{{
  "task_guid": "{guid}",
  "domain": "tests",
  "rootfs": "docker:///busybox",
  "action": {{"run": {{"path": "/bin/true"}}}},
  "memory_mb": 64
}}"#
    )
}

fn now() -> i64 {
    unix_nanos(SystemTime::now())
}

/// Seeds one instance of `process_guid` in `state` on `cell` (empty for
/// none), as the cell side would leave it; for the read-only commands.
pub(crate) async fn seed_actual(
    store: &SharedStore,
    process_guid: &str,
    index: i64,
    state: ActualLrpState,
    cell: &str,
) -> ActualLrp {
    let mut actual = ActualLrp::unclaimed(process_guid, "lattice", index, now());
    let created = store
        .create_actual_lrp(actual.clone())
        .await
        .expect("a fresh key is free");
    actual.modification_tag = created.modification_tag;
    actual.state = state;
    actual.cell_id = cell.to_string();
    if state == ActualLrpState::Running || state == ActualLrpState::Claimed {
        actual.instance_guid = format!("{process_guid}-{index}-guid");
        actual.address = "10.0.0.5".to_string();
        actual.ports = vec![PortMapping {
            container_port: 8080,
            host_port: 61000 + u32::try_from(index).expect("test indexes are small"),
        }];
    }
    store
        .update_actual_lrp(actual)
        .await
        .expect("nobody else writes it")
}

/// The request `ltc create APP busybox` would send, for tests that need an
/// app without staging one.
pub(crate) fn app_request(app: &str, instances: i64) -> lattice_models::DesiredLrpCreateRequest {
    let json = serde_json::json!({
        "process_guid": app,
        "domain": "lattice",
        "rootfs": "docker:///busybox",
        "instances": instances,
        "action": {"run": {"path": "/.lattice/bin/launcher"}},
        "memory_mb": 128,
        "disk_mb": 256,
        "ports": [8080],
        "env": [{"name": "MODE", "value": "test"}],
        "routes": {"cf-router": [{"hostnames": [format!("{app}.localhost")], "port": 8080}]},
        "log_guid": app,
        "log_source": "APP"
    });
    serde_json::from_value(json).expect("the test request is well-formed")
}

/// A tiny HTTP server that plays the router and the sample app in one, for
/// `ltc test`: it routes `Host: H` to the RUNNING instances of the desired
/// LRP that has the HTTP route H, round-robin, and answers as lattice-app
/// does (`/` and `/index`), logging an APP line per request into the hub as
/// the app would. A host with no running instance gets `404 unknown route`,
/// as from the real router. Stops when dropped.
pub(crate) struct FakeRouter {
    task: JoinHandle<()>,
}

impl FakeRouter {
    /// A listener for it, bound first so that the receptor can be told the
    /// router's address (`ReceptorConfig::router_address`) before it starts.
    pub async fn bind() -> (tokio::net::TcpListener, SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("port 0 on loopback can be bound");
        let address = listener
            .local_addr()
            .expect("a bound listener has an address");
        (listener, address)
    }

    pub fn start(listener: tokio::net::TcpListener, receptor: &TestReceptor) -> FakeRouter {
        let store = receptor.store.clone();
        let hub = receptor.hub.clone();
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (store, hub, next) = (store.clone(), hub.clone(), next.clone());
                tokio::spawn(async move {
                    // A client that goes away mid-request is its business.
                    let _ = route_one(stream, &store, &hub, &next).await;
                });
            }
        });
        FakeRouter { task }
    }
}

impl Drop for FakeRouter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves one request on `stream`, then closes it.
async fn route_one(
    stream: tokio::net::TcpStream,
    store: &SharedStore,
    hub: &LogHub,
    next: &std::sync::atomic::AtomicUsize,
) -> std::io::Result<()> {
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::io::BufReader::new(stream);
    let mut request_line = String::new();
    stream.read_line(&mut request_line).await?;
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_string();
    let mut host = String::new();
    loop {
        let mut header = String::new();
        if stream.read_line(&mut header).await? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.trim().eq_ignore_ascii_case("host") {
                host = value.trim().to_string();
            }
        }
    }
    let desired = store
        .list_desired_lrps(&DesiredLrpFilter::default())
        .await
        .expect("the test store is readable");
    let lrp = desired.into_iter().find(|lrp| {
        lrp.routes
            .http
            .iter()
            .any(|route| route.hostnames.contains(&host))
    });
    let mut running = match &lrp {
        Some(lrp) => store
            .list_actual_lrps(&ActualLrpFilter {
                process_guid: Some(lrp.process_guid.clone()),
                ..Default::default()
            })
            .await
            .expect("the test store is readable")
            .into_iter()
            .filter(|a| a.state == ActualLrpState::Running)
            .collect(),
        None => Vec::new(),
    };
    running.sort_by_key(|a| a.index);
    let (status, body) = match (&lrp, running.is_empty()) {
        (Some(lrp), false) => {
            let instance = &running[next.fetch_add(1, Ordering::SeqCst) % running.len()];
            let index = instance.index;
            hub.publish(log_line(
                &lrp.log_guid,
                SOURCE_APP,
                &index.to_string(),
                &format!("lattice-app instance {index}: GET {path} -> 200 OK"),
                MessageType::Out,
            ));
            let body = match path.as_str() {
                "/index" => format!("{index}\n"),
                _ => format!(
                    "lattice-app: instance {index}, guid {}, up 0 s\n",
                    instance.instance_guid
                ),
            };
            ("200 OK", body)
        }
        _ => ("404 Not Found", format!("unknown route: {host}\n")),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let stream = stream.get_mut();
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
