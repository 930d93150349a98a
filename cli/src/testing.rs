//! Test support: a real receptor in process, on port 0, over a SQLite store
//! in a temporary directory, with the log hub's routes merged in as the
//! server does it, and a [`Context`] that targets it; and a [`FakeCell`]
//! that plays the cell (and the brain) through the store and the hub, so
//! that the waits of `ltc create` and `ltc scale` see real state changes and
//! log lines.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use lattice_bbs::{ActualLrpFilter, DesiredLrpFilter, SharedStore, SqliteStore, TaskFilter};
use lattice_logs::LogHub;
use lattice_models::log::{LogMessage, MessageType, SOURCE_APP, SOURCE_CELL, SOURCE_STAGING};
use lattice_models::{
    unix_nanos, ActualLrp, ActualLrpEvent, ActualLrpState, DesiredLrp, PortMapping, TaskEvent,
    TaskState,
};
use lattice_receptor::ReceptorConfig;
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
    config: ReceptorConfig,
    address: SocketAddr,
    shutdown: CancellationToken,
    server: JoinHandle<std::io::Result<()>>,
}

impl TestReceptor {
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
        let server = serve(listener, &store, &hub, &config, &shutdown);
        TestReceptor {
            url: format!("http://{address}"),
            store,
            hub,
            dir,
            config,
            address,
            shutdown,
            server,
        }
    }

    /// Stops the server as `lattice` does on SIGTERM (which ends every log
    /// stream), then serves the same store and hub on the same port again.
    pub async fn restart(&mut self) {
        self.shutdown.cancel();
        (&mut self.server)
            .await
            .expect("the server task does not panic")
            .expect("the server shuts down cleanly");
        // std sets SO_REUSEADDR on Unix, so the port is free again at once.
        let listener = tokio::net::TcpListener::bind(self.address)
            .await
            .expect("the port the server just left can be bound again");
        self.shutdown = CancellationToken::new();
        self.server = serve(
            listener,
            &self.store,
            &self.hub,
            &self.config,
            &self.shutdown,
        );
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
        self.shutdown.cancel();
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

/// What the fake cell does with a staging task.
#[derive(Debug, Clone)]
pub(crate) enum StagingBehaviour {
    /// Completes it with this result (the builder's JSON).
    Succeed(String),
    /// Completes it failed with this reason.
    Fail(String),
}

/// What the fake cell does with an app's instances.
#[derive(Debug, Clone)]
pub(crate) enum LrpBehaviour {
    /// Claims and starts them: RUNNING on `cell-1` at `127.0.0.1:61000+index`.
    Run,
    /// Leaves them UNCLAIMED with this placement error, as an auction that
    /// found no room does.
    PlacementError(String),
    /// Claims them and crashes them once with this reason.
    Crash(String),
    /// Claims them, and starts them only once the flag is set: the test
    /// decides when the wait may end.
    RunWhenSet(Arc<AtomicBool>),
}

/// A task that plays the cell and the brain through the store: it completes
/// pending tasks, creates each desired LRP's missing instances, runs them
/// (or not) as told, and removes instances beyond the desired count. It
/// logs as a cell does, into the receptor's hub: CELL lines about each
/// container, STG lines of staging, APP lines of a crash. Stops when
/// dropped.
pub(crate) struct FakeCell {
    task: tokio::task::JoinHandle<()>,
}

/// How often the fake cell looks at the store; short, so tests are quick.
const FAKE_CELL_TICK: Duration = Duration::from_millis(20);

impl FakeCell {
    pub fn start(
        receptor: &TestReceptor,
        staging: StagingBehaviour,
        lrps: LrpBehaviour,
    ) -> FakeCell {
        let store = receptor.store.clone();
        let hub = receptor.hub.clone();
        let task = tokio::spawn(async move {
            loop {
                complete_tasks(&store, &hub, &staging).await;
                converge_lrps(&store, &hub, &lrps).await;
                tokio::time::sleep(FAKE_CELL_TICK).await;
            }
        });
        FakeCell { task }
    }
}

impl Drop for FakeCell {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn now() -> i64 {
    unix_nanos(SystemTime::now())
}

// The fake cell is the only writer of tasks' states and of actual LRPs in
// these tests (ltc only creates, cancels and deletes), so its compare-and-swap
// writes cannot conflict; a failure is a bug worth a panic, which the test
// then reports as a timeout with this message in its output.
const ONLY_WRITER: &str = "the fake cell is the only writer of this record";

async fn complete_tasks(store: &SharedStore, hub: &LogHub, staging: &StagingBehaviour) {
    let filter = TaskFilter {
        state: Some(TaskState::Pending),
        ..Default::default()
    };
    let pending = store.list_tasks(&filter).await.expect(ONLY_WRITER);
    for mut task in pending {
        task.apply(TaskEvent::Claim, now()).expect(ONLY_WRITER);
        task.cell_id = "cell-1".to_string();
        // ltc may cancel (complete) it in between; then leave it alone.
        let Ok(mut task) = store.update_task(task).await else {
            continue;
        };
        let guid = task.task_guid.clone();
        let say = |source, text: String| {
            hub.publish(log_line(
                &task.log_guid,
                source,
                "",
                &text,
                MessageType::Out,
            ))
        };
        say(
            SOURCE_CELL,
            format!("Creating container for task {guid} on cell cell-1"),
        );
        say(
            SOURCE_STAGING,
            "Reading the image's configuration".to_string(),
        );
        task.apply(TaskEvent::Start, now()).expect(ONLY_WRITER);
        let Ok(mut task) = store.update_task(task).await else {
            continue;
        };
        match staging {
            StagingBehaviour::Succeed(result) => {
                task.apply(TaskEvent::Complete, now()).expect(ONLY_WRITER);
                task.result = result.clone();
            }
            StagingBehaviour::Fail(reason) => {
                task.fail(reason.clone(), now()).expect(ONLY_WRITER);
            }
        }
        let _ = store.update_task(task).await;
    }
}

async fn converge_lrps(store: &SharedStore, hub: &LogHub, behaviour: &LrpBehaviour) {
    let desired = store
        .list_desired_lrps(&DesiredLrpFilter::default())
        .await
        .expect(ONLY_WRITER);
    let actuals = store
        .list_actual_lrps(&ActualLrpFilter::default())
        .await
        .expect(ONLY_WRITER);
    for actual in &actuals {
        let wanted = desired
            .iter()
            .any(|d| d.process_guid == actual.process_guid && actual.index < d.instances);
        if !wanted {
            store
                .delete_actual_lrp(&actual.process_guid, actual.index, &actual.modification_tag)
                .await
                .expect(ONLY_WRITER);
        }
    }
    for lrp in &desired {
        for index in 0..lrp.instances {
            let existing = actuals
                .iter()
                .find(|a| a.process_guid == lrp.process_guid && a.index == index);
            match existing {
                None => {
                    let mut fresh =
                        ActualLrp::unclaimed(&lrp.process_guid, &lrp.domain, index, now());
                    if let LrpBehaviour::PlacementError(reason) = behaviour {
                        fresh.placement_error = reason.clone();
                    }
                    store.create_actual_lrp(fresh).await.expect(ONLY_WRITER);
                }
                Some(actual) if actual.state == ActualLrpState::Unclaimed => {
                    place(store, hub, lrp, actual.clone(), behaviour).await;
                }
                Some(actual) if actual.state == ActualLrpState::Claimed => {
                    if let LrpBehaviour::RunWhenSet(flag) = behaviour {
                        if flag.load(Ordering::SeqCst) {
                            start(store, hub, lrp, actual.clone()).await;
                        }
                    }
                }
                Some(_) => {}
            }
        }
    }
}

async fn place(
    store: &SharedStore,
    hub: &LogHub,
    lrp: &DesiredLrp,
    mut actual: ActualLrp,
    behaviour: &LrpBehaviour,
) {
    if matches!(behaviour, LrpBehaviour::PlacementError(_)) {
        return;
    }
    actual
        .apply(ActualLrpEvent::Claim, now())
        .expect(ONLY_WRITER);
    actual.cell_id = "cell-1".to_string();
    actual.instance_guid = format!("{}-{}-guid", lrp.process_guid, actual.index);
    actual.address = "127.0.0.1".to_string();
    actual.ports = vec![PortMapping {
        container_port: lrp.ports.first().copied().unwrap_or(8080),
        host_port: 61000 + u32::try_from(actual.index).expect("test indexes are small"),
    }];
    let mut actual = store.update_actual_lrp(actual).await.expect(ONLY_WRITER);
    let instance = actual.index.to_string();
    hub.publish(log_line(
        &lrp.log_guid,
        SOURCE_CELL,
        &instance,
        "Creating container",
        MessageType::Out,
    ));
    match behaviour {
        LrpBehaviour::Crash(reason) => {
            hub.publish(log_line(
                &lrp.log_guid,
                SOURCE_APP,
                &instance,
                reason,
                MessageType::Err,
            ));
            actual
                .apply(ActualLrpEvent::Crash, now())
                .expect(ONLY_WRITER);
            actual.crash_count += 1;
            actual.crash_reason = reason.clone();
            store.update_actual_lrp(actual).await.expect(ONLY_WRITER);
        }
        LrpBehaviour::RunWhenSet(_) => {}
        LrpBehaviour::Run | LrpBehaviour::PlacementError(_) => {
            start(store, hub, lrp, actual).await;
        }
    }
}

/// Starts a CLAIMED instance.
async fn start(store: &SharedStore, hub: &LogHub, lrp: &DesiredLrp, mut actual: ActualLrp) {
    hub.publish(log_line(
        &lrp.log_guid,
        SOURCE_CELL,
        &actual.index.to_string(),
        "Container became healthy",
        MessageType::Out,
    ));
    actual
        .apply(ActualLrpEvent::Start, now())
        .expect(ONLY_WRITER);
    store.update_actual_lrp(actual).await.expect(ONLY_WRITER);
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
