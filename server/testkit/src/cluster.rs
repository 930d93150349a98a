//! [`TestCluster`]: a brain and N cells in this process, without Docker.
//!
//! The brain is the production code on a SQLite store in a temporary
//! directory: the receptor (with the log hub's routes, as `lattice up`
//! merges them) on 127.0.0.1:0, the auctioneer and the converger. Each
//! cell is a real rep and executor ([`lattice_rep::fake::FakeRep`]) with
//! its own cell id, its own fake Garden and its own rep HTTP interface on
//! port 0, which the auctioneer calls as it calls any cell. Only the
//! containers are fake: a process does what its path's [`Script`] says
//! (exit at once, run until stopped, fail a health check, write a result
//! file), so claims, placement, crashes, restarts and cell loss are the
//! real components' doing, never canned store states.
//!
//! # Caveats
//! Time is real: the receptor, the reps and the store answer over sockets
//! and SQLite's threads, and a paused clock would advance past their
//! timeouts while they work. The builder's defaults shorten the loops'
//! intervals instead (presence, drain and route delays), so that cluster
//! behaviour takes milliseconds to a few seconds.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lattice_auctioneer::runner::{Auctioneer, AuctioneerConfig};
use lattice_bbs::{
    ActualLrpFilter, DesiredLrpFilter, EventReceiver, SharedStore, SqliteStore, Store, StoreError,
    StoreResult, TaskFilter,
};
use lattice_client::Client;
use lattice_converger::{Converger, ConvergerConfig};
pub use lattice_converger::{CrashPolicy, Policy};
pub use lattice_executor::fake::{FakeGarden, Script};
use lattice_logs::{HubSink, LogHub};
use lattice_models::{ActualLrp, CellCapacity, CellPresence, DesiredLrp, ModificationTag, Task};
use lattice_receptor::ReceptorConfig;
use lattice_rep::fake::FakeRep;
use lattice_rep::{Rep, RepConfig};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use crate::wait::{until, HANG_GUARD};

/// How a [`TestCluster`] is made; [`TestCluster::builder`] has defaults
/// sized for tests.
#[derive(Clone)]
pub struct ClusterBuilder {
    cells: usize,
    capacity: CellCapacity,
    zones: Vec<String>,
    converge_interval: Duration,
    policy: Policy,
    presence_ttl: Duration,
    receptor: ReceptorConfig,
    gardens: Vec<GardenSetup>,
}

/// What is done to every cell's fake Garden before the cell starts.
type GardenSetup = Arc<dyn Fn(&FakeGarden) + Send + Sync>;

impl ClusterBuilder {
    /// How many cells (ids `cell-0`, `cell-1`, ...).
    pub fn cells(mut self, cells: usize) -> Self {
        self.cells = cells;
        self
    }

    /// Memory of every cell, in MB.
    pub fn memory_mb(mut self, memory_mb: i64) -> Self {
        self.capacity.memory_mb = memory_mb;
        self
    }

    /// Containers every cell holds at most.
    pub fn containers(mut self, containers: i64) -> Self {
        self.capacity.containers = containers;
        self
    }

    /// Zones the cells are in, in turn (cell `i` in `zones[i % len]`).
    pub fn zones(mut self, zones: &[&str]) -> Self {
        self.zones = zones.iter().map(|z| z.to_string()).collect();
        self
    }

    /// Time between the converger's periodic passes (it also acts on
    /// changes at once).
    pub fn converge_interval(mut self, interval: Duration) -> Self {
        self.converge_interval = interval;
        self
    }

    /// The converger's crash restarts, timeouts and expiry.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// How long a cell's presence outlives the cell (a lost cell's work
    /// moves this long after it went).
    pub fn presence_ttl(mut self, ttl: Duration) -> Self {
        self.presence_ttl = ttl;
        self
    }

    /// The receptor's configuration; its `rep_secret` is the cluster's.
    pub fn receptor(mut self, config: ReceptorConfig) -> Self {
        self.receptor = config;
        self
    }

    /// Processes started with `path`, on every cell, follow `script`
    /// (others exit 0 at once). [`TestCluster::script`] changes it later.
    pub fn script(self, path: &str, script: Script) -> Self {
        let path = path.to_string();
        self.garden(move |garden| garden.script(&path, script.clone()))
    }

    /// Does `setup` to every cell's fake Garden before the cell starts
    /// (e.g. what images' configs are).
    pub fn garden(mut self, setup: impl Fn(&FakeGarden) + Send + Sync + 'static) -> Self {
        self.gardens.push(Arc::new(setup));
        self
    }

    /// Starts the brain and the cells; every cell is registered and
    /// serving when this returns.
    ///
    /// # Panics
    /// When a temporary directory, the store or a loopback port cannot be
    /// had: no cluster test can run without them.
    pub async fn start(self) -> TestCluster {
        let dir = tempfile::tempdir().expect("a temporary directory can be made");
        let store: SharedStore = Arc::new(
            SqliteStore::open(&dir.path().join("bbs.sqlite3"))
                .await
                .expect("a fresh store opens"),
        );
        // What the auctioneer and the receptor present to the reps.
        let secret = uuid::Uuid::new_v4().simple().to_string();
        let hub = Arc::new(LogHub::default());
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let listener = bind().await;
        let url = format!(
            "http://{}",
            listener
                .local_addr()
                .expect("a bound listener has an address")
        );
        let receptor = lattice_receptor::app_with_routes(
            store.clone(),
            ReceptorConfig {
                rep_secret: Some(secret.clone()),
                ..self.receptor.clone()
            },
            shutdown.clone(),
            lattice_logs::http::router(hub.clone(), shutdown.clone()),
        );
        tracker.spawn(lattice_receptor::serve(
            listener,
            receptor,
            shutdown.clone(),
        ));
        spawn_brain_loops(&tracker, &store, &self, &secret, &shutdown);
        let mut cluster = TestCluster {
            url,
            store,
            hub,
            secret,
            builder: self,
            cells: Vec::new(),
            shutdown,
            tracker,
            _dir: dir,
        };
        for i in 0..cluster.builder.cells {
            let cell = cluster.start_cell(i).await;
            cluster.cells.push(cell);
        }
        cluster
    }
}

/// The auctioneer and the converger, as a brain that holds both locks
/// runs them (see `lattice::roles::spawn_brain_loops`).
fn spawn_brain_loops(
    tracker: &TaskTracker,
    store: &SharedStore,
    builder: &ClusterBuilder,
    secret: &str,
    shutdown: &CancellationToken,
) {
    let owner = format!("test-brain/{}", uuid::Uuid::new_v4().simple());
    let auctioneer = Auctioneer::new(
        store.clone(),
        AuctioneerConfig {
            rep_secret: Some(secret.to_string()),
            // The auctioneer's own scan only heals lost events; a test
            // should not wait long for it either.
            scan_interval: Duration::from_millis(500),
            ..AuctioneerConfig::new(owner.clone())
        },
    );
    tracker.spawn(auctioneer.run(shutdown.clone()));
    let converger = Converger::new(
        store.clone(),
        ConvergerConfig {
            interval: builder.converge_interval,
            policy: builder.policy.clone(),
            ..ConvergerConfig::new(owner)
        },
    )
    .expect("the converger's HTTP client can be made");
    tracker.spawn(converger.run(shutdown.clone()));
}

async fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("port 0 on loopback can be bound")
}

/// One cell of a [`TestCluster`].
pub struct TestCell {
    pub cell_id: String,
    pub rep: Arc<Rep>,
    /// The cell's containers: script its processes, read what ran.
    pub garden: FakeGarden,
    /// Cuts the cell off the store when it is killed.
    link: Arc<Severable>,
    stop: CancellationToken,
    running: Option<JoinHandle<()>>,
    _fake: FakeRep,
}

impl TestCell {
    /// Whether the cell still runs (it was not killed).
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    async fn end(&mut self) {
        self.stop.cancel();
        if let Some(running) = self.running.take() {
            running.await.expect("a cell does not panic");
        }
    }
}

/// A brain and N cells in this process (see the module's doc).
pub struct TestCluster {
    url: String,
    store: SharedStore,
    hub: Arc<LogHub>,
    secret: String,
    builder: ClusterBuilder,
    cells: Vec<TestCell>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    /// Holds the store's file.
    _dir: tempfile::TempDir,
}

impl TestCluster {
    /// Defaults: two cells of 4 GB and 16 containers in one zone, a pass
    /// of the converger every second, a presence of one second.
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder {
            cells: 2,
            capacity: CellCapacity {
                memory_mb: 4096,
                disk_mb: 100_000,
                containers: 16,
            },
            zones: vec!["z1".to_string()],
            converge_interval: Duration::from_secs(1),
            policy: Policy::default(),
            presence_ttl: Duration::from_secs(1),
            receptor: ReceptorConfig::default(),
            gardens: Vec::new(),
        }
    }

    /// The receptor's base URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A client of the receptor, as `ltc` makes one.
    pub fn client(&self) -> Client {
        Client::new(&self.url, None).expect("the cluster's URL is valid")
    }

    /// The brain's store (the cells reach it through their own link).
    pub fn store(&self) -> &SharedStore {
        &self.store
    }

    /// The log hub behind `/v1/logs`, where the cells' lines go.
    pub fn hub(&self) -> &Arc<LogHub> {
        &self.hub
    }

    pub fn cell(&self, i: usize) -> &TestCell {
        &self.cells[i]
    }

    pub fn cells(&self) -> &[TestCell] {
        &self.cells
    }

    /// Processes started with `path` from now on, on every cell, follow
    /// `script`.
    pub fn script(&self, path: &str, script: Script) {
        for garden in self.gardens() {
            garden.script(path, script.clone());
        }
    }

    /// Every cell's fake Garden, e.g. to set what images' configs are.
    pub fn gardens(&self) -> impl Iterator<Item = &FakeGarden> {
        self.cells.iter().map(|cell| &cell.garden)
    }

    async fn start_cell(&self, i: usize) -> TestCell {
        let builder = &self.builder;
        let cell_id = format!("cell-{i}");
        let listener = bind().await;
        let address = listener
            .local_addr()
            .expect("a bound listener has an address");
        let link = Arc::new(Severable::new(self.store.clone()));
        let config = RepConfig {
            zone: builder.zones[i % builder.zones.len()].clone(),
            presence_ttl: builder.presence_ttl,
            drain_delay: Duration::from_millis(50),
            evacuation_route_delay: Duration::from_millis(100),
            evacuation_timeout: Duration::from_secs(30),
            ..RepConfig::new(&cell_id, builder.capacity, format!("http://{address}"))
        };
        let fake = FakeRep::new(
            config,
            link.clone(),
            Arc::new(HubSink::new(self.hub.clone())),
        );
        for setup in &builder.gardens {
            setup(&fake.garden);
        }
        let rep = fake.rep.clone();
        rep.reconcile()
            .await
            .expect("a new cell reconciles with a reachable store");
        let stop = self.shutdown.child_token();
        let app = lattice_rep::http::router_with_secret(rep.clone(), self.secret.clone());
        let running = tokio::spawn({
            let (rep, stop, cell_id) = (rep.clone(), stop.clone(), cell_id.clone());
            async move {
                if let Err(err) = lattice_rep::http::serve_and_run(rep, listener, app, stop).await {
                    tracing::error!(%cell_id, error = %err, "a test cell's rep server failed");
                }
            }
        });
        TestCell {
            cell_id,
            garden: fake.garden.clone(),
            rep,
            link,
            stop,
            running: Some(running),
            _fake: fake,
        }
    }

    /// Loses cell `i`, as when its machine dies: it is cut off the store
    /// first, so nothing it does afterwards reaches the cluster (its
    /// presence is not removed, its instances stay recorded on it), and
    /// its rep stops answering. The converger moves its work once the
    /// presence expires.
    pub async fn kill_cell(&mut self, i: usize) {
        let cell = &mut self.cells[i];
        cell.link.sever();
        cell.end().await;
    }

    /// Polls `check` until it returns `Some`; panics naming `what` after
    /// [`HANG_GUARD`].
    pub async fn until<T>(&self, what: &str, check: impl AsyncFnMut() -> Option<T>) -> T {
        until(what, check).await
    }

    /// The instances of `process_guid`, by index.
    pub async fn instances(&self, process_guid: &str) -> Vec<ActualLrp> {
        self.store
            .list_actual_lrps(&ActualLrpFilter {
                process_guid: Some(process_guid.to_string()),
                ..Default::default()
            })
            .await
            .expect("the test store is readable")
    }

    /// Stops every cell (each through its own shutdown), then the brain's
    /// loops and the receptor, and waits for all of them.
    pub async fn shutdown(mut self) {
        for cell in &mut self.cells {
            cell.end().await;
        }
        self.shutdown.cancel();
        self.tracker.close();
        tokio::time::timeout(HANG_GUARD, self.tracker.wait())
            .await
            .expect("the brain stops");
    }
}

impl Drop for TestCluster {
    /// A test that panicked still ends every loop (they stop on their own
    /// once the token fires).
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A cell's link to the store, which [`Severable::sever`] cuts: from then
/// on every call fails as an unreachable brain's would.
struct Severable {
    inner: SharedStore,
    severed: AtomicBool,
}

impl Severable {
    fn new(inner: SharedStore) -> Severable {
        Severable {
            inner,
            severed: AtomicBool::new(false),
        }
    }

    fn sever(&self) {
        self.severed.store(true, Ordering::SeqCst);
    }

    fn link(&self) -> StoreResult<&SharedStore> {
        if self.severed.load(Ordering::SeqCst) {
            Err(StoreError::Backend("the cell is cut off the store".into()))
        } else {
            Ok(&self.inner)
        }
    }
}

#[async_trait]
impl Store for Severable {
    async fn upsert_domain(&self, domain: &str, ttl: Option<Duration>) -> StoreResult<()> {
        self.link()?.upsert_domain(domain, ttl).await
    }
    async fn domains(&self) -> StoreResult<Vec<String>> {
        self.link()?.domains().await
    }
    async fn create_task(&self, task: Task) -> StoreResult<Task> {
        self.link()?.create_task(task).await
    }
    async fn get_task(&self, task_guid: &str) -> StoreResult<Task> {
        self.link()?.get_task(task_guid).await
    }
    async fn list_tasks(&self, filter: &TaskFilter) -> StoreResult<Vec<Task>> {
        self.link()?.list_tasks(filter).await
    }
    async fn update_task(&self, task: Task) -> StoreResult<Task> {
        self.link()?.update_task(task).await
    }
    async fn delete_task(&self, task_guid: &str, expected: &ModificationTag) -> StoreResult<()> {
        self.link()?.delete_task(task_guid, expected).await
    }
    async fn create_desired_lrp(&self, lrp: DesiredLrp) -> StoreResult<DesiredLrp> {
        self.link()?.create_desired_lrp(lrp).await
    }
    async fn get_desired_lrp(&self, process_guid: &str) -> StoreResult<DesiredLrp> {
        self.link()?.get_desired_lrp(process_guid).await
    }
    async fn list_desired_lrps(&self, filter: &DesiredLrpFilter) -> StoreResult<Vec<DesiredLrp>> {
        self.link()?.list_desired_lrps(filter).await
    }
    async fn update_desired_lrp(&self, lrp: DesiredLrp) -> StoreResult<DesiredLrp> {
        self.link()?.update_desired_lrp(lrp).await
    }
    async fn delete_desired_lrp(
        &self,
        process_guid: &str,
        expected: &ModificationTag,
    ) -> StoreResult<()> {
        self.link()?
            .delete_desired_lrp(process_guid, expected)
            .await
    }
    async fn create_actual_lrp(&self, lrp: ActualLrp) -> StoreResult<ActualLrp> {
        self.link()?.create_actual_lrp(lrp).await
    }
    async fn get_actual_lrp(&self, process_guid: &str, index: i64) -> StoreResult<ActualLrp> {
        self.link()?.get_actual_lrp(process_guid, index).await
    }
    async fn list_actual_lrps(&self, filter: &ActualLrpFilter) -> StoreResult<Vec<ActualLrp>> {
        self.link()?.list_actual_lrps(filter).await
    }
    async fn update_actual_lrp(&self, lrp: ActualLrp) -> StoreResult<ActualLrp> {
        self.link()?.update_actual_lrp(lrp).await
    }
    async fn delete_actual_lrp(
        &self,
        process_guid: &str,
        index: i64,
        expected: &ModificationTag,
    ) -> StoreResult<()> {
        self.link()?
            .delete_actual_lrp(process_guid, index, expected)
            .await
    }
    async fn upsert_cell(&self, presence: CellPresence, ttl: Duration) -> StoreResult<()> {
        self.link()?.upsert_cell(presence, ttl).await
    }
    async fn list_cells(&self) -> StoreResult<Vec<CellPresence>> {
        self.link()?.list_cells().await
    }
    async fn remove_cell(&self, cell_id: &str) -> StoreResult<()> {
        self.link()?.remove_cell(cell_id).await
    }
    async fn acquire_lock(&self, name: &str, owner: &str, ttl: Duration) -> StoreResult<bool> {
        self.link()?.acquire_lock(name, owner, ttl).await
    }
    async fn release_lock(&self, name: &str, owner: &str) -> StoreResult<()> {
        self.link()?.release_lock(name, owner).await
    }
    async fn lock_owner(&self, name: &str) -> StoreResult<Option<String>> {
        self.link()?.lock_owner(name).await
    }
    /// The feed of changes the cell saw before it was cut off keeps
    /// flowing; what the cell does about them cannot reach the store.
    fn subscribe(&self) -> EventReceiver {
        self.inner.subscribe()
    }
}
