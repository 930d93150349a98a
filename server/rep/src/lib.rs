//! The rep: a cell's agent.
//!
//! It keeps the cell's presence in the BBS, answers the auctioneer with the
//! cell's free capacity ([`Rep::state`]), performs the work it wins
//! ([`Rep::perform`]), and keeps the BBS in step with the containers that
//! really exist on the cell. It runs work through the executor and never
//! touches Docker itself.
//!
//! # Guarantees
//! - A task runs at most once: the rep only runs a task after claiming it
//!   with compare-and-swap (PENDING -> CLAIMED, so two cells can never both
//!   win), and a task it finds CLAIMED or RUNNING on itself after a restart is
//!   completed failed, never started again.
//! - Capacity is never over-committed: work that does not fit in what is
//!   left is handed back to the auctioneer as failed.
//! - After a restart, an instance still running healthy in its container
//!   is adopted, not destroyed and started again; only the rest is
//!   destroyed, in the background (see `restart`).
//!
//! # Layout
//! - [`Rep`]: state, perform, and the background loops ([`Rep::run`]).
//! - `tasks`: running one task from claim to completion.
//! - `instance`: an LRP instance's lifecycle, a pure state machine.
//! - `lrps`: its I/O shell: claims, runs and supervises one instance (or
//!   an adopted one) by performing what `instance` decides.
//! - `clock`: the rep's one reading of the clock.
//! - `restart`: what a restarted rep keeps, fails, gives back and destroys.
//! - [`evacuation`]: handing running instances over when the cell drains
//!   ([`Rep::evacuate`]).
//! - `spares`: started, empty containers kept ready per app (opt-in), for
//!   an instance to start in without waiting for the engine.
//! - `session`: `ltc ssh` sessions into an instance's container.
//! - `usage`: sampling what the cell's containers use ([`Rep::container_metrics`]).
//! - [`http`]: the rep's HTTP interface and the client the auctioneer uses.
//! - `fake` (feature `fake`): a rep on the recording fake Garden, for tests.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lattice_bbs::modify::{modify_actual_lrp, Change, ModifyError};
use lattice_bbs::{SharedStore, StoreError, TaskFilter};
use lattice_executor::{Executor, LogMessage, LogSink, MessageType};
use lattice_garden::{ContainerEvent, ContainerEventKind};
use lattice_models::auction::{CellState, LrpKey, Resource, Work};
use lattice_models::{CellCapacity, CellPresence, ContainerMetrics, Event};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod clock;
pub mod evacuation;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
pub mod http;
mod instance;
mod lrps;
mod restart;
mod session;
mod spares;

pub use spares::wanted as spare_containers_wanted;
mod tasks;
mod usage;

/// Container label naming the task a container runs.
pub const TASK_GUID_PROPERTY: &str = "io.lattice.task-guid";
/// Container labels naming the LRP instance a container runs.
pub const PROCESS_GUID_PROPERTY: &str = "io.lattice.process-guid";
pub const INDEX_PROPERTY: &str = "io.lattice.index";
pub const INSTANCE_GUID_PROPERTY: &str = "io.lattice.instance-guid";
/// Container label with the work's log guid, so that an event about the
/// container alone (an OOM kill) reaches the work's log stream.
pub const LOG_GUID_PROPERTY: &str = "io.lattice.log-guid";

/// How long a cell's presence lasts without renewal, by default: renewed
/// every second, so a cell is counted lost 2 to 3 s after it stopped.
pub const DEFAULT_PRESENCE_TTL: Duration = Duration::from_secs(3);

/// How many leftover containers a restarted cell destroys at once.
const DESTROY_CONCURRENCY: usize = 16;

/// How many containers' usage is read from the engine at once.
const USAGE_CONCURRENCY: usize = 8;

/// Crash reason of an instance whose cell restarted or stopped under it.
pub const CELL_STOPPED_CRASH_REASON: &str = "cell stopped";

/// Failure reason of a task whose cell restarted while it ran.
pub const CELL_RESTARTED_REASON: &str = "cell restarted before the task completed";
/// Failure reason of a task whose cell shut down while it ran.
pub const CELL_STOPPED_REASON: &str = "cell shut down before the task completed";

#[derive(Debug, Clone)]
pub struct RepConfig {
    pub cell_id: String,
    pub zone: String,
    /// What the cell offers to the auction.
    pub capacity: CellCapacity,
    /// Where the auctioneer reaches this rep's HTTP interface.
    pub rep_address: String,
    /// How long the cell's presence lasts without renewal; renewed every third.
    /// Short ([`DEFAULT_PRESENCE_TTL`]), so that a lost cell's work moves
    /// within seconds; renewal runs in its own task, so that slow work of
    /// the rep never holds it up.
    pub presence_ttl: Duration,
    /// How often running work is compared with the BBS, to heal missed events.
    pub sync_interval: Duration,
    /// How often a starting instance's monitor runs until it first passes:
    /// often (50 ms by default), since a user waits for that first success;
    /// then every `running_monitor_interval`.
    pub starting_monitor_interval: Duration,
    /// How often a running instance's monitor runs.
    pub running_monitor_interval: Duration,
    /// How often an instance adopted after a restart is checked for its
    /// process (its output and exit are no longer attached to this run).
    pub adopted_check_interval: Duration,
    /// How long a RUNNING instance that is being stopped keeps serving, so
    /// that routers drop it before its process stops.
    pub drain_delay: Duration,
    /// Whether routers reach this cell's containers at their own addresses
    /// (one machine, or a container network routed between machines): its
    /// instances are then RUNNING with `preferred_address: INSTANCE`, and
    /// routers skip the engine's port proxy.
    pub advertise_container_network: bool,
    /// How long an evacuating instance keeps serving at most while its
    /// replacement is not RUNNING (Diego's evacuation timeout).
    pub evacuation_timeout: Duration,
    /// How long an evacuating instance keeps serving after its replacement
    /// is RUNNING, so that routers have added the replacement first.
    pub evacuation_route_delay: Duration,
    /// How often the usage of the cell's containers is sampled.
    pub usage_interval: Duration,
    /// The most started, empty containers kept ready per app the cell
    /// runs (one per three of its instances here, at least one), so that its next instances here (crashes started
    /// again, a scale-up) skip the engine's create and start (see
    /// `spares`). 0: none.
    pub spare_containers: usize,
    /// The most spare containers the cell keeps for all its apps together
    /// (each is an idle container: a few of the engine's processes); apps
    /// placed later go without once the cell holds this many.
    pub spare_containers_per_cell: usize,
}

/// The default of [`RepConfig::spare_containers_per_cell`].
pub const DEFAULT_SPARE_CONTAINERS_PER_CELL: usize = 12;

impl RepConfig {
    /// Defaults for everything but identity and capacity.
    pub fn new(
        cell_id: impl Into<String>,
        capacity: CellCapacity,
        rep_address: impl Into<String>,
    ) -> RepConfig {
        RepConfig {
            cell_id: cell_id.into(),
            zone: String::new(),
            capacity,
            rep_address: rep_address.into(),
            presence_ttl: DEFAULT_PRESENCE_TTL,
            sync_interval: Duration::from_secs(5),
            starting_monitor_interval: Duration::from_millis(50),
            running_monitor_interval: Duration::from_secs(10),
            adopted_check_interval: Duration::from_secs(1),
            drain_delay: Duration::from_secs(1),
            advertise_container_network: false,
            evacuation_timeout: Duration::from_secs(10 * 60),
            evacuation_route_delay: Duration::from_secs(1),
            usage_interval: Duration::from_secs(5),
            spare_containers: 0,
            spare_containers_per_cell: DEFAULT_SPARE_CONTAINERS_PER_CELL,
        }
    }
}

/// What a cell holds resources for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum WorkKey {
    Task(String),
    Lrp(LrpKey),
}

/// Work the cell holds resources for.
struct Allocation {
    resource: Resource,
    cancel: CancellationToken,
    /// For an LRP instance: the instance guid it runs under, once claimed.
    instance_guid: Option<String>,
    /// An instance handed over by an evacuation: the record is no longer
    /// its own, and only the evacuation decides when it stops.
    handed_over: bool,
    /// Set (to the init's exit status, if known) when the engine reports
    /// that the work's container died, so its supervisor ends at once.
    exited: watch::Sender<Option<ContainerExit>>,
}

/// The engine reported that a container's init exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ContainerExit {
    pub status: Option<i64>,
}

pub struct Rep {
    config: RepConfig,
    store: SharedStore,
    executor: Executor,
    /// Where the cell's own lines about the work it runs go (source CELL).
    logs: Arc<dyn LogSink>,
    /// A std mutex: held only for map updates, never across an `.await`.
    work: Mutex<HashMap<WorkKey, Allocation>>,
    /// What instances that ended still hold while their containers are
    /// destroyed, by container handle: counted as used, but their keys are
    /// free, so that a replacement of the same index (a crash restarted at
    /// once) is taken while the old container goes.
    retiring: Mutex<HashMap<String, Resource>>,
    /// The latest usage samples; a std mutex, held only to swap them.
    usage: Mutex<usage::Samples>,
    spares: spares::Spares,
    tracker: TaskTracker,
    /// Set once the cell drains: it takes no new work from then on.
    evacuating: AtomicBool,
    /// Held by the evacuation that runs, so that a second request (a
    /// SIGTERM after `ltc cells drain`) waits for it to end.
    evacuation: tokio::sync::Mutex<()>,
}

/// What [`Rep::evacuate`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EvacuationReport {
    /// Instances handed over to be placed elsewhere.
    pub handed_over: usize,
    /// Of those, how many stopped once their replacement was RUNNING.
    pub replaced: usize,
    /// Of those, how many stopped at the evacuation timeout instead.
    pub timed_out: usize,
    /// Instances that were still starting: stopped and given back at once.
    pub given_back: usize,
    /// Tasks still running when the evacuation timeout passed (a task is
    /// never moved; stopping the cell fails these).
    pub tasks_left: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum RepError {
    #[error("cannot reach the store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot list the cell's containers: {0}")]
    Garden(#[from] lattice_garden::GardenError),
}

impl Rep {
    pub fn new(
        config: RepConfig,
        store: SharedStore,
        executor: Executor,
        logs: Arc<dyn LogSink>,
    ) -> Arc<Rep> {
        let spares = spares::Spares::new(config.spare_containers, config.spare_containers_per_cell);
        Arc::new(Rep {
            config,
            store,
            executor,
            logs,
            work: Mutex::new(HashMap::new()),
            retiring: Mutex::new(HashMap::new()),
            usage: Mutex::new(usage::Samples::default()),
            spares,
            tracker: TaskTracker::new(),
            evacuating: AtomicBool::new(false),
            evacuation: tokio::sync::Mutex::new(()),
        })
    }

    pub fn cell_id(&self) -> &str {
        &self.config.cell_id
    }

    /// Writes a CELL line to the work's log stream (`ltc logs`), e.g.
    /// "Creating container"; nothing when the work has no log guid.
    fn cell_log(&self, log_guid: &str, instance: &str, message: impl Into<String>) {
        if log_guid.is_empty() {
            return;
        }
        self.logs.emit(LogMessage {
            log_guid: log_guid.to_string(),
            source_type: lattice_models::log::SOURCE_CELL.to_string(),
            source_instance: instance.to_string(),
            message: message.into(),
            message_type: MessageType::Out,
            timestamp: lattice_models::unix_nanos(std::time::SystemTime::now()),
        });
    }

    fn presence(&self) -> CellPresence {
        CellPresence {
            cell_id: self.config.cell_id.clone(),
            zone: self.config.zone.clone(),
            rep_address: self.config.rep_address.clone(),
            capacity: self.config.capacity,
            rootfs_providers: lattice_models::cell::docker_rootfs_providers(),
        }
    }

    /// Brings the BBS and the cell's containers into agreement after a
    /// (re)start, then registers the cell. Call before [`Rep::run`] and
    /// before the rep answers auctions.
    ///
    /// What the previous run left is decided on a snapshot (see `restart`):
    /// a task the BBS says is CLAIMED or RUNNING here has an unknown outcome,
    /// so it is completed failed (never run again); an instance still
    /// running in its container is adopted and supervised as if this run had
    /// started it; other instances go back to the auction.
    ///
    /// # Guarantees
    /// Returns once the decisions are recorded, without waiting for the
    /// containers that are not kept to be destroyed: that runs in the
    /// background, several at a time, tracked like the cell's other work.
    pub async fn reconcile(self: &Arc<Self>) -> Result<(), RepError> {
        let cell_id = self.config.cell_id.clone();
        let tasks = self
            .store
            .list_tasks(&TaskFilter {
                cell_id: Some(cell_id.clone()),
                ..Default::default()
            })
            .await?;
        let lrps = self
            .store
            .list_actual_lrps(&lattice_bbs::ActualLrpFilter {
                cell_id: Some(cell_id.clone()),
                ..Default::default()
            })
            .await?;
        let containers = self.executor.list_owned().await?;
        let mut plan = restart::plan(&cell_id, &tasks, &lrps, containers);
        tracing::info!(
            %cell_id,
            failed_tasks = plan.fail_tasks.len(),
            adopted = plan.adopt.len(),
            given_back = plan.give_back.len(),
            destroyed = plan.destroy.len(),
            "reconciling with what the previous run left"
        );
        for task_guid in &plan.fail_tasks {
            tasks::complete(
                &self.store,
                task_guid,
                &cell_id,
                tasks::Outcome::failed(CELL_RESTARTED_REASON),
            )
            .await;
        }
        for adoption in std::mem::take(&mut plan.adopt) {
            if let Err(adoption) = self.adopt(adoption).await {
                plan.destroy.push(adoption.container.handle);
                plan.give_back.push(adoption.lrp);
            }
        }
        for lrp in &plan.give_back {
            lrps::give_back(
                &self.store,
                &lrp.process_guid,
                lrp.index,
                &lrp.instance_guid,
            )
            .await;
        }
        self.store
            .upsert_cell(self.presence(), self.config.presence_ttl)
            .await?;
        let executor = self.executor.clone();
        self.tracker.spawn(async move {
            use futures::StreamExt;
            futures::stream::iter(plan.destroy)
                .for_each_concurrent(DESTROY_CONCURRENCY, |handle| {
                    let executor = executor.clone();
                    async move {
                        tracing::info!(%handle, "destroying a container left by a previous run");
                        if let Err(err) = executor.destroy(&handle).await {
                            tracing::warn!(%handle, error = %err, "cannot destroy leftover container");
                        }
                    }
                })
                .await;
        });
        Ok(())
    }

    /// Holds the instance's resources and supervises it in its container;
    /// gives the adoption back when its desired LRP is gone or it no longer
    /// fits.
    async fn adopt(self: &Arc<Self>, adoption: restart::Adoption) -> Result<(), restart::Adoption> {
        let lrp = &adoption.lrp;
        let desired = match self.store.get_desired_lrp(&lrp.process_guid).await {
            Ok(desired) => desired,
            Err(err) => {
                tracing::info!(process_guid = %lrp.process_guid, index = lrp.index, error = %err, "not adopting an instance whose desired LRP cannot be read");
                return Err(adoption);
            }
        };
        let key = WorkKey::Lrp(LrpKey::new(lrp.process_guid.clone(), lrp.index));
        let need = Resource::for_container(desired.memory_mb, desired.disk_mb);
        let Some(cancel) = self.reserve(&key, need) else {
            tracing::info!(process_guid = %lrp.process_guid, index = lrp.index, "not adopting an instance that no longer fits the cell");
            return Err(adoption);
        };
        self.set_instance_guid(
            &LrpKey::new(lrp.process_guid.clone(), lrp.index),
            &lrp.instance_guid,
        );
        tracing::info!(process_guid = %lrp.process_guid, index = lrp.index, instance_guid = %lrp.instance_guid, handle = %adoption.container.handle, "adopting a running instance");
        let rep = self.clone();
        self.tracker.spawn(async move {
            // Releases the allocation on every path (see `lrps`).
            lrps::run_adopted(&rep, desired, adoption, cancel).await;
        });
        Ok(())
    }

    /// Registers (or renews) the cell's presence, so that the auctioneer
    /// counts it while [`Rep::reconcile`] still runs: its calls wait on the
    /// rep's listener until the rep serves.
    pub async fn register(&self) -> Result<(), RepError> {
        self.store
            .upsert_cell(self.presence(), self.config.presence_ttl)
            .await?;
        Ok(())
    }

    /// What the cell holds and has free, for the auction.
    pub fn state(&self) -> CellState {
        let total = Resource::from(self.config.capacity);
        let work = self.work.lock().expect("rep work map poisoned");
        let retiring = self.retiring.lock().expect("rep retiring map poisoned");
        let available = available(&total, &work, &retiring);
        drop(retiring);
        let mut task_guids = Vec::new();
        let mut lrps = Vec::new();
        for key in work.keys() {
            match key {
                WorkKey::Task(guid) => task_guids.push(guid.clone()),
                WorkKey::Lrp(key) => lrps.push(key.clone()),
            }
        }
        task_guids.sort();
        lrps.sort();
        CellState {
            cell_id: self.config.cell_id.clone(),
            zone: self.config.zone.clone(),
            total,
            available,
            lrps,
            tasks: task_guids,
            evacuating: self.is_evacuating(),
        }
    }

    /// Starts the work the cell won; returns what it could not take (no
    /// room left, or already running), for the auctioneer to place again.
    pub fn perform(self: &Arc<Self>, work: Work) -> Work {
        if self.is_evacuating() {
            // A draining cell takes no new work (the auctioneer knows from
            // the cell's state; this covers an auction already under way).
            return work;
        }
        let mut rejected = Work::default();
        for lrp in work.lrps {
            let key = WorkKey::Lrp(lrp.key());
            let Some(cancel) = self.reserve(&key, lrp.resource) else {
                rejected.lrps.push(lrp);
                continue;
            };
            let rep = self.clone();
            self.tracker.spawn(async move {
                // Releases the allocation on every path (see `lrps`).
                lrps::run(&rep, &lrp.process_guid, lrp.index, cancel).await;
            });
        }
        for task in work.tasks {
            let key = WorkKey::Task(task.task_guid.clone());
            let Some(cancel) = self.reserve(&key, task.resource) else {
                rejected.tasks.push(task);
                continue;
            };
            let rep = self.clone();
            self.tracker.spawn(async move {
                tasks::run(&rep, &task.task_guid, cancel).await;
                rep.release(&key);
            });
        }
        rejected
    }

    /// Holds `need` for `key` if it fits; the token cancels the work.
    ///
    /// # Guarantees
    /// Atomic: what is free is read and the work inserted under one hold
    /// of the lock, so concurrent performs never over-commit the cell.
    fn reserve(&self, key: &WorkKey, need: Resource) -> Option<CancellationToken> {
        let total = Resource::from(self.config.capacity);
        let mut work = self.work.lock().expect("rep work map poisoned");
        let retiring = self.retiring.lock().expect("rep retiring map poisoned");
        let available = available(&total, &work, &retiring);
        drop(retiring);
        let fits = available.contains(&need) || is_unlimited(&total, &need, &available);
        if work.contains_key(key) || !fits {
            return None;
        }
        let cancel = CancellationToken::new();
        work.insert(
            key.clone(),
            Allocation {
                resource: need,
                cancel: cancel.clone(),
                instance_guid: None,
                handed_over: false,
                exited: watch::Sender::new(None),
            },
        );
        Some(cancel)
    }

    fn release(&self, key: &WorkKey) {
        self.work.lock().expect("rep work map poisoned").remove(key);
    }

    /// Frees the key of an instance that ended while its container
    /// (`handle`) is destroyed; its resources stay held until
    /// [`Rep::retired`].
    fn retire(&self, key: &WorkKey, handle: &str) {
        let mut work = self.work.lock().expect("rep work map poisoned");
        if let Some(allocation) = work.remove(key) {
            self.retiring
                .lock()
                .expect("rep retiring map poisoned")
                .insert(handle.to_string(), allocation.resource);
        }
    }

    /// The container `handle` of a retired instance is gone.
    fn retired(&self, handle: &str) {
        self.retiring
            .lock()
            .expect("rep retiring map poisoned")
            .remove(handle);
    }

    fn cancel(&self, key: &WorkKey) {
        if let Some(allocation) = self.work.lock().expect("rep work map poisoned").get(key) {
            allocation.cancel.cancel();
        }
    }

    fn cancel_task(&self, task_guid: &str) {
        self.cancel(&WorkKey::Task(task_guid.to_string()));
    }

    /// Records the instance guid an LRP allocation runs under, so events
    /// about another instance guid stop it.
    fn set_instance_guid(&self, key: &LrpKey, instance_guid: &str) {
        if let Some(allocation) = self
            .work
            .lock()
            .expect("rep work map poisoned")
            .get_mut(&WorkKey::Lrp(key.clone()))
        {
            allocation.instance_guid = Some(instance_guid.to_string());
        }
    }

    fn running_keys(&self) -> Vec<WorkKey> {
        self.work
            .lock()
            .expect("rep work map poisoned")
            .keys()
            .cloned()
            .collect()
    }

    /// Follows the engine's report that the container of `key`'s instance
    /// died (see [`Rep::on_container_event`]); `None` without an
    /// allocation.
    pub(crate) fn container_exit(
        &self,
        key: &LrpKey,
    ) -> Option<watch::Receiver<Option<ContainerExit>>> {
        self.work
            .lock()
            .expect("rep work map poisoned")
            .get(&WorkKey::Lrp(key.clone()))
            .map(|a| a.exited.subscribe())
    }

    /// The instance guid the cell runs `key` under, while the record is
    /// its own to follow (not handed over by an evacuation).
    fn instance_guid_of(&self, key: &LrpKey) -> Option<String> {
        self.work
            .lock()
            .expect("rep work map poisoned")
            .get(&WorkKey::Lrp(key.clone()))
            .filter(|a| !a.handed_over)
            .and_then(|a| a.instance_guid.clone())
    }

    /// Marks `key`'s allocation (if it still runs `instance_guid`) as
    /// handed over or not; returns whether it did.
    fn set_handed_over(&self, key: &LrpKey, instance_guid: &str, handed_over: bool) -> bool {
        let mut work = self.work.lock().expect("rep work map poisoned");
        match work.get_mut(&WorkKey::Lrp(key.clone())) {
            Some(a) if a.instance_guid.as_deref() == Some(instance_guid) => {
                a.handed_over = handed_over;
                true
            }
            _ => false,
        }
    }

    /// Whether the cell still runs `key` under `instance_guid`.
    fn runs(&self, key: &LrpKey, instance_guid: &str) -> bool {
        self.work
            .lock()
            .expect("rep work map poisoned")
            .get(&WorkKey::Lrp(key.clone()))
            .is_some_and(|a| a.instance_guid.as_deref() == Some(instance_guid))
    }

    /// How many instances of `process_guid`'s app the cell holds.
    fn instances_of(&self, process_guid: &str) -> usize {
        self.work
            .lock()
            .expect("rep work map poisoned")
            .keys()
            .filter(|key| matches!(key, WorkKey::Lrp(key) if key.process_guid == process_guid))
            .count()
    }

    /// The instance a container of the cell runs, from its labels: a
    /// container made as a spare has no index label, its instance guid says
    /// which instance took it. `None` for a task's container or a spare no
    /// instance took.
    fn lrp_of(
        &self,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> Option<(LrpKey, String)> {
        let process_guid = labels.get(PROCESS_GUID_PROPERTY)?;
        let instance_guid = labels.get(INSTANCE_GUID_PROPERTY)?;
        if let Some(index) = labels.get(INDEX_PROPERTY) {
            let index = index.parse().ok()?;
            return Some((
                LrpKey::new(process_guid.clone(), index),
                instance_guid.clone(),
            ));
        }
        self.work
            .lock()
            .expect("rep work map poisoned")
            .iter()
            .find_map(|(key, allocation)| match key {
                WorkKey::Lrp(key)
                    if key.process_guid == *process_guid
                        && allocation.instance_guid.as_ref() == Some(instance_guid) =>
                {
                    Some((key.clone(), instance_guid.clone()))
                }
                _ => None,
            })
    }

    /// Whether the cell drains (and takes no new work).
    pub fn is_evacuating(&self) -> bool {
        self.evacuating.load(Ordering::SeqCst)
    }

    /// Drains the cell (Diego's evacuation): from now on it takes no new
    /// work; each instance RUNNING here is handed over (the auctioneer
    /// places a replacement on another cell) and keeps serving until its
    /// replacement is RUNNING and routed ([`RepConfig::evacuation_route_delay`]),
    /// or [`RepConfig::evacuation_timeout`] passes; then it stops. Instances
    /// still starting are stopped and given back at once. Tasks running
    /// here run on to their end, as Diego lets them (a task runs at most
    /// once, so it is never moved). Returns when every handed-over instance
    /// is released and every task ended, or at the timeout (stopping the
    /// cell then fails the tasks left); the instances stop after the drain
    /// delay, in the background.
    ///
    /// # Guarantees
    /// Idempotent: a second call waits for the first and hands over only
    /// what started meanwhile (nothing: the cell took no new work).
    ///
    /// # Caveats
    /// A draining cell stays draining until it restarts.
    pub async fn evacuate(self: &Arc<Self>) -> EvacuationReport {
        use evacuation::{Evacuee, Next, StopReason};

        let _running = self.evacuation.lock().await;
        self.evacuating.store(true, Ordering::SeqCst);
        let cell_id = self.config.cell_id.clone();
        let deadline = clock::now() + self.config.evacuation_timeout;
        let mut report = EvacuationReport::default();
        let mut pending: Vec<Evacuee> = Vec::new();
        let instances: Vec<(LrpKey, String)> = {
            let work = self.work.lock().expect("rep work map poisoned");
            work.iter()
                .filter_map(|(key, a)| match key {
                    WorkKey::Lrp(key) if !a.handed_over => {
                        Some((key.clone(), a.instance_guid.clone().unwrap_or_default()))
                    }
                    _ => None,
                })
                .collect()
        };
        for (key, instance_guid) in instances {
            if self.hand_over(&key, &instance_guid).await {
                pending.push(Evacuee::new(key, instance_guid));
            } else {
                // Not running yet (or no longer ours): nothing routes to
                // it, so it stops and its index goes back to the auction.
                self.cancel(&WorkKey::Lrp(key));
                report.given_back += 1;
            }
        }
        report.handed_over = pending.len();
        tracing::info!(%cell_id, handed_over = report.handed_over, given_back = report.given_back, "cell is draining: its instances move to other cells");

        let mut events = self.store.subscribe();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        while !pending.is_empty() {
            tokio::select! {
                _ = tick.tick() => {}
                // Any change may be a replacement starting; a lagging or
                // closed feed only leaves the tick.
                _ = events.recv() => {}
            }
            let mut still = Vec::with_capacity(pending.len());
            for mut evacuee in pending {
                let key = evacuee.key.clone();
                let record = match self
                    .store
                    .get_actual_lrp(&key.process_guid, key.index)
                    .await
                {
                    Ok(record) => Some(record),
                    Err(StoreError::NotFound { .. }) => None,
                    Err(err) => {
                        tracing::warn!(process_guid = %key.process_guid, index = key.index, error = %err, "cannot follow an evacuating instance");
                        still.push(evacuee);
                        continue;
                    }
                };
                // Its process ended meanwhile: nothing left to serve.
                let next = if self.runs(&key, &evacuee.instance_guid) {
                    evacuee.step(
                        record.as_ref(),
                        clock::now(),
                        deadline,
                        self.config.evacuation_route_delay,
                    )
                } else {
                    Next::Stop(StopReason::Ended)
                };
                let Next::Stop(reason) = next else {
                    still.push(evacuee);
                    continue;
                };
                if reason.needs_release() {
                    self.release_evacuee(&key, &evacuee.instance_guid).await;
                }
                match reason {
                    StopReason::Replaced => report.replaced += 1,
                    StopReason::TimedOut => report.timed_out += 1,
                    StopReason::Removed | StopReason::Released | StopReason::Ended => {}
                }
                tracing::info!(process_guid = %key.process_guid, index = key.index, instance_guid = %evacuee.instance_guid, ?reason, "evacuated instance stops");
                // Stops after the drain delay, so routers drop it first.
                self.cancel(&WorkKey::Lrp(key));
            }
            pending = still;
        }
        report.tasks_left = self.tasks_finished_by(deadline).await;
        tracing::info!(%cell_id, ?report, "cell drained");
        report
    }

    /// Waits until no task runs on the cell or `deadline` passes; how many
    /// still run then.
    async fn tasks_finished_by(&self, deadline: tokio::time::Instant) -> usize {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            let running = self
                .running_keys()
                .iter()
                .filter(|key| matches!(key, WorkKey::Task(_)))
                .count();
            if running == 0 || crate::clock::now() >= deadline {
                if running > 0 {
                    tracing::warn!(cell_id = %self.config.cell_id, tasks = running, "evacuation timeout passed with tasks still running");
                }
                return running;
            }
            tokio::select! {
                _ = tick.tick() => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// Hands `key`'s running instance over with CAS; false when it is not
    /// this cell's running instance `instance_guid`.
    async fn hand_over(&self, key: &LrpKey, instance_guid: &str) -> bool {
        if instance_guid.is_empty() || !self.set_handed_over(key, instance_guid, true) {
            return false;
        }
        let cell_id = self.config.cell_id.as_str();
        let handed = modify_actual_lrp(
            self.store.as_ref(),
            &key.process_guid,
            key.index,
            |record| {
                let now = lattice_models::unix_nanos(std::time::SystemTime::now());
                *record = evacuation::hand_over(record, cell_id, instance_guid, now)
                    .ok_or("not this cell's running instance")?;
                Ok::<_, &str>(Change::Update)
            },
        )
        .await;
        match handed {
            Ok(_) => return true,
            Err(ModifyError::Refused(_)) => {}
            Err(err) if err.is_not_found() => {}
            Err(err) => {
                tracing::warn!(process_guid = %key.process_guid, index = key.index, error = %err, "cannot hand an instance over");
            }
        }
        self.set_handed_over(key, instance_guid, false);
        false
    }

    /// Clears `key`'s evacuating instance `instance_guid` with CAS (routers
    /// then drop it).
    async fn release_evacuee(&self, key: &LrpKey, instance_guid: &str) {
        let released = modify_actual_lrp(
            self.store.as_ref(),
            &key.process_guid,
            key.index,
            |record| match evacuation::release(record, instance_guid) {
                Some(next) => {
                    *record = next;
                    Ok::<_, Infallible>(Change::Update)
                }
                None => Ok(Change::Keep),
            },
        )
        .await;
        match released {
            Err(err) if !err.is_not_found() => {
                tracing::warn!(process_guid = %key.process_guid, index = key.index, error = %err, "cannot release an evacuated instance");
            }
            _ => {}
        }
    }

    /// Renews presence, reacts to changes of the tasks it runs (a cancel
    /// stops the container), and re-checks them periodically, until
    /// `shutdown`; then stops its work and deregisters the cell.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let engine_stop = shutdown.child_token();
        let engine_watch = tokio::spawn(self.clone().watch_engine(engine_stop.clone()));
        // Not a child of `shutdown`: the presence is renewed while the work
        // stops, so that the converger does not take the cell for lost
        // meanwhile, and ends just before it is removed.
        let presence_stop = CancellationToken::new();
        let presence = tokio::spawn(self.clone().renew_presence(presence_stop.clone()));
        let sampler = tokio::spawn(self.clone().sample_usage(engine_stop.clone()));
        let mut events = self.store.subscribe();
        let mut sync = tokio::time::interval(self.config.sync_interval);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = sync.tick() => self.sync_work().await,
                event = events.recv() => match event {
                    Ok(event) => self.on_event(&event),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => self.sync_work().await,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                },
            }
        }
        engine_stop.cancel();
        if let Err(err) = engine_watch.await {
            tracing::error!(error = %err, "the engine watch failed");
        }
        if let Err(err) = sampler.await {
            tracing::error!(error = %err, "the usage sampler failed");
        }
        self.stop(move || async move {
            presence_stop.cancel();
            if let Err(err) = presence.await {
                tracing::error!(error = %err, "the presence renewal failed");
            }
        })
        .await;
    }

    /// Renews the cell's presence every third of its TTL until `stop`. A
    /// task of its own: a slow store call elsewhere in the rep (a sync of
    /// many instances) must not let a short presence lapse.
    async fn renew_presence(self: Arc<Self>, stop: CancellationToken) {
        let mut presence = tokio::time::interval(self.config.presence_ttl / 3);
        presence.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = presence.tick() => {}
            }
            let renewed = tokio::select! {
                _ = stop.cancelled() => return,
                renewed = self.store.upsert_cell(self.presence(), self.config.presence_ttl) => renewed,
            };
            if let Err(err) = renewed {
                tracing::warn!(cell_id = %self.config.cell_id, error = %err, "cannot renew cell presence");
            }
        }
    }

    /// Follows the engine's events about this cell's containers until
    /// `stop`, re-subscribing (with back-off) when the engine's stream ends
    /// or fails: out-of-memory kills (a child process killed for memory
    /// leaves the instance running, so this is the only trace of it) and
    /// deaths (so an instance whose container was killed is reported
    /// crashed at once, not when an exec or a poll notices).
    async fn watch_engine(self: Arc<Self>, stop: CancellationToken) {
        let filter = std::collections::BTreeMap::from([(
            lattice_garden::OWNER_PROPERTY.to_string(),
            self.config.cell_id.clone(),
        )]);
        let mut backoff = Duration::from_millis(100);
        loop {
            let subscribed = tokio::select! {
                _ = stop.cancelled() => return,
                subscribed = self.executor.garden().container_events(&filter) => subscribed,
            };
            match subscribed {
                Ok(mut events) => loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        event = futures::StreamExt::next(&mut events) => match event {
                            Some(event) => {
                                backoff = Duration::from_millis(100);
                                self.on_container_event(&event);
                            }
                            None => break,
                        },
                    }
                },
                Err(err) => {
                    tracing::warn!(cell_id = %self.config.cell_id, error = %err, "cannot follow the engine's container events")
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// The latest usage sample of every container of the cell (see
    /// `usage`), sorted by process guid and index, then task guid.
    pub fn container_metrics(&self) -> Vec<ContainerMetrics> {
        self.usage
            .lock()
            .expect("rep usage samples poisoned")
            .latest
            .clone()
    }

    /// Samples the usage of the cell's containers every
    /// `usage_interval` until `stop`. A failed round is logged and the next
    /// one tried; the samples of the last good round stay served.
    async fn sample_usage(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.config.usage_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                sampled = self.sample_usage_once() => if let Err(err) = sampled {
                    tracing::warn!(cell_id = %self.config.cell_id, error = %err, "cannot sample the usage of the cell's containers");
                },
            }
        }
    }

    /// One round of sampling: every running container of the cell, a few
    /// at a time; a container that vanished meanwhile is left out.
    async fn sample_usage_once(&self) -> Result<(), RepError> {
        use futures::StreamExt;
        let containers = self.executor.list_owned().await?;
        let garden = self.executor.garden().clone();
        let readings: Vec<_> = futures::stream::iter(containers.into_iter().filter(|c| c.running))
            .map(|container| {
                let garden = garden.clone();
                async move {
                    let usage = garden.usage(&container.handle).await;
                    (container, usage, clock::now())
                }
            })
            .buffer_unordered(USAGE_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        // A container made as a spare has no index label: the instance that
        // took it gives it; one no instance took is not work.
        let readings: Vec<_> = readings
            .into_iter()
            .filter_map(|(mut container, usage, at)| {
                let labels = &container.properties;
                if labels.contains_key(PROCESS_GUID_PROPERTY)
                    && !labels.contains_key(INDEX_PROPERTY)
                {
                    let (key, _) = self.lrp_of(labels)?;
                    container
                        .properties
                        .insert(INDEX_PROPERTY.to_string(), key.index.to_string());
                }
                Some((container, usage, at))
            })
            .collect();
        let allocations: HashMap<WorkKey, Resource> = self
            .work
            .lock()
            .expect("rep work map poisoned")
            .iter()
            .map(|(key, allocation)| (key.clone(), allocation.resource))
            .collect();
        let timestamp = lattice_models::unix_nanos(std::time::SystemTime::now());
        let mut samples = self.usage.lock().expect("rep usage samples poisoned");
        let mut readings_now = HashMap::new();
        let mut latest = Vec::new();
        for (container, usage, at) in readings {
            let usage = match usage {
                Ok(usage) => usage,
                Err(lattice_garden::GardenError::ContainerNotFound(_)) => continue,
                Err(err) => {
                    tracing::debug!(handle = %container.handle, error = %err, "cannot sample a container");
                    continue;
                }
            };
            let reading = usage::CpuReading {
                cpu_nanos: usage.cpu_nanos,
                at,
            };
            let cpu =
                usage::cpu_percentage(samples.readings.get(&container.handle).copied(), reading);
            let allocated = usage::work_key(&container.properties)
                .and_then(|key| allocations.get(&key).copied());
            latest.push(usage::sample(
                &self.config.cell_id,
                &container,
                usage,
                cpu,
                allocated,
                timestamp,
            ));
            readings_now.insert(container.handle, reading);
        }
        latest.sort_by(|a, b| {
            (&a.process_guid, a.index, &a.task_guid).cmp(&(&b.process_guid, b.index, &b.task_guid))
        });
        let state = self.state();
        let allocated = state
            .total
            .checked_sub(&state.available)
            .unwrap_or(Resource::ZERO);
        usage::record_cell_gauges(&self.config.cell_id, &latest, allocated, state.total);
        samples.latest = latest;
        samples.readings = readings_now;
        Ok(())
    }

    fn on_container_event(&self, event: &ContainerEvent) {
        match event.kind {
            ContainerEventKind::OutOfMemory => self.on_oom(event),
            ContainerEventKind::Exited { status } => self.on_exit(event, status),
        }
    }

    /// Tells the supervisor of the instance whose container died, if it is
    /// the one this cell runs now (same instance guid): a container of an
    /// instance already stopped or replaced is none of its business.
    fn on_exit(&self, event: &ContainerEvent, status: Option<i64>) {
        let Some((key, instance_guid)) = self.lrp_of(&event.properties) else {
            return;
        };
        let (process_guid, index) = (key.process_guid.as_str(), key.index);
        let work = self.work.lock().expect("rep work map poisoned");
        if let Some(allocation) = work.get(&WorkKey::Lrp(key.clone())) {
            if allocation.instance_guid.as_deref() == Some(instance_guid.as_str()) {
                tracing::debug!(process_guid, index, instance_guid, ?status, handle = %event.handle, "the engine reports the instance's container died");
                allocation
                    .exited
                    .send_replace(Some(ContainerExit { status }));
            }
        }
    }

    /// Logs an OOM kill to the cell's log and the work's log stream.
    fn on_oom(&self, event: &ContainerEvent) {
        let property = |key: &str| event.properties.get(key).map(String::as_str);
        let log_guid = property(LOG_GUID_PROPERTY).unwrap_or_default();
        if let Some(process_guid) = property(PROCESS_GUID_PROPERTY) {
            let index = property(INDEX_PROPERTY)
                .map(str::to_string)
                .or_else(|| {
                    self.lrp_of(&event.properties)
                        .map(|(key, _)| key.index.to_string())
                })
                .unwrap_or_default();
            let index = index.as_str();
            tracing::warn!(cell_id = %self.config.cell_id, process_guid, index, handle = %event.handle, "out of memory: the kernel killed a process of an instance");
            self.cell_log(
                log_guid,
                index,
                format!("Out of memory: a process of instance {index} was killed for exceeding the memory limit (memory_mb)"),
            );
        } else if let Some(task_guid) = property(TASK_GUID_PROPERTY) {
            tracing::warn!(cell_id = %self.config.cell_id, task_guid, handle = %event.handle, "out of memory: the kernel killed a process of a task");
            self.cell_log(
                log_guid,
                "",
                "Out of memory: a process of the task was killed for exceeding the memory limit (memory_mb)",
            );
        } else {
            tracing::warn!(cell_id = %self.config.cell_id, handle = %event.handle, "out of memory in a container of this cell");
        }
    }

    fn on_event(&self, event: &Event) {
        match event {
            Event::TaskChanged { task_after, .. }
                if task_after.state.is_terminal() && task_after.cell_id == self.config.cell_id =>
            {
                self.cancel_task(&task_after.task_guid)
            }
            Event::TaskRemoved { task } => self.cancel_task(&task.task_guid),
            Event::ActualLrpChanged {
                actual_lrp_after: lrp,
                ..
            } => {
                let key = LrpKey::new(lrp.process_guid.clone(), lrp.index);
                if let Some(mine) = self.instance_guid_of(&key) {
                    if lrp.instance_guid != mine || lrp.cell_id != self.config.cell_id {
                        self.cancel(&WorkKey::Lrp(key));
                    }
                }
            }
            Event::ActualLrpRemoved { actual_lrp: lrp } => {
                self.cancel(&WorkKey::Lrp(LrpKey::new(
                    lrp.process_guid.clone(),
                    lrp.index,
                )));
            }
            _ => {}
        }
    }

    /// Stops work that the BBS says is over (cancelled, deleted, retired) or
    /// no longer this cell's: a missed event must not leave any running.
    async fn sync_work(&self) {
        for key in self.running_keys() {
            let guid = match key {
                WorkKey::Task(guid) => guid,
                WorkKey::Lrp(key) => {
                    let Some(mine) = self.instance_guid_of(&key) else {
                        continue;
                    };
                    match self
                        .store
                        .get_actual_lrp(&key.process_guid, key.index)
                        .await
                    {
                        Ok(lrp)
                            if lrp.instance_guid == mine && lrp.cell_id == self.config.cell_id => {}
                        Ok(_) | Err(StoreError::NotFound { .. }) => self.cancel(&WorkKey::Lrp(key)),
                        Err(err) => {
                            tracing::warn!(process_guid = %key.process_guid, index = key.index, error = %err, "cannot check instance")
                        }
                    }
                    continue;
                }
            };
            match self.store.get_task(&guid).await {
                Ok(task) if task.state.is_terminal() => self.cancel_task(&guid),
                Ok(task) if !task.cell_id.is_empty() && task.cell_id != self.config.cell_id => {
                    self.cancel_task(&guid)
                }
                Ok(_) => {}
                Err(StoreError::NotFound { .. }) => self.cancel_task(&guid),
                Err(err) => tracing::warn!(task_guid = %guid, error = %err, "cannot check task"),
            }
        }
    }

    /// Stops all work (tasks complete failed: a task never survives its
    /// cell; instances go back to the auction), then ends the presence's
    /// renewal (`end_renewal`) and removes the presence.
    async fn stop<F: std::future::Future<Output = ()>>(&self, end_renewal: impl FnOnce() -> F) {
        for key in self.running_keys() {
            self.cancel(&key);
        }
        self.spares.stop();
        self.tracker.close();
        self.tracker.wait().await;
        self.spares.destroy_all(self).await;
        end_renewal().await;
        if let Err(err) = self.store.remove_cell(&self.config.cell_id).await {
            tracing::warn!(cell_id = %self.config.cell_id, error = %err, "cannot deregister cell");
        }
        tracing::info!(cell_id = %self.config.cell_id, "rep stopped");
    }
}

/// A dimension of 0 in the cell's total means the cell does not limit it.
/// What `work` leaves free of `total`.
/// What is free of `total` besides the work held and the resources of
/// ended instances whose containers are still being destroyed.
fn available(
    total: &Resource,
    work: &HashMap<WorkKey, Allocation>,
    retiring: &HashMap<String, Resource>,
) -> Resource {
    let used = work
        .values()
        .map(|a| &a.resource)
        .chain(retiring.values())
        .fold(Resource::ZERO, |acc, r| acc.checked_add(r).unwrap_or(acc));
    Resource {
        memory_mb: (total.memory_mb - used.memory_mb).max(0),
        disk_mb: (total.disk_mb - used.disk_mb).max(0),
        containers: (total.containers - used.containers).max(0),
    }
}

fn is_unlimited(total: &Resource, need: &Resource, available: &Resource) -> bool {
    let fits = |t: i64, n: i64, a: i64| t == 0 || n <= a;
    fits(total.memory_mb, need.memory_mb, available.memory_mb)
        && fits(total.disk_mb, need.disk_mb, available.disk_mb)
        && fits(total.containers, need.containers, available.containers)
}

/// The container's PID limit for a recipe: the largest `nproc` any of its
/// `run` actions asks for, or 0 (the backend's default, 1024) when none does.
///
/// Diego's `nproc` is a per-process rlimit; a PID limit on the whole
/// container is what really bounds a fork bomb (RLIMIT_NPROC counts per user
/// across the host, and is not enforced for root), so the largest request
/// becomes the container's limit.
pub(crate) fn pids_limit<'a>(actions: impl IntoIterator<Item = &'a lattice_models::Action>) -> u64 {
    actions
        .into_iter()
        .flat_map(|action| action.run_actions())
        .filter_map(|run| run.resource_limits.as_ref()?.nproc)
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod oom_tests {
    use std::collections::BTreeMap;

    use lattice_executor::ContainerRequest;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::fake::TestRep;

    /// Regression (issue 15): a child process OOM-killed left the instance
    /// RUNNING and nothing was reported.
    #[tokio::test]
    async fn regression_a_child_oom_is_logged_for_the_instance() {
        let cell = TestRep::small("cell-oom").await;
        let (rep, garden, sink) = (cell.rep(), cell.garden(), &cell.logs);
        rep.executor
            .create_container(ContainerRequest {
                handle: "web-0".into(),
                rootfs: "docker:///busybox".into(),
                properties: BTreeMap::from([
                    (lattice_garden::OWNER_PROPERTY.into(), "cell-oom".into()),
                    (PROCESS_GUID_PROPERTY.into(), "web".into()),
                    (INDEX_PROPERTY.into(), "3".into()),
                    (LOG_GUID_PROPERTY.into(), "web-logs".into()),
                ]),
                ..ContainerRequest::default()
            })
            .await
            .expect("created");
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(rep.clone().run(shutdown.clone()));
        while !garden.has_event_subscribers() {
            tokio::task::yield_now().await;
        }
        garden.oom("web-0");
        let line = loop {
            if let Some(m) = sink
                .messages()
                .into_iter()
                .find(|m| m.message.starts_with("Out of memory"))
            {
                break m;
            }
            tokio::task::yield_now().await;
        };
        assert_eq!(line.log_guid, "web-logs");
        assert_eq!(line.source_instance, "3");
        assert_eq!(line.source_type, lattice_models::log::SOURCE_CELL);
        assert!(line.message.contains("instance 3"), "{}", line.message);
        shutdown.cancel();
        running.await.expect("the rep stops");
    }
}

#[cfg(test)]
mod exit_tests {
    use std::time::Duration;

    use lattice_executor::fake::Script;
    use lattice_models::auction::{LrpInstance, Resource, Work};
    use lattice_models::{ActualLrpState, Event};
    use tokio_util::sync::CancellationToken;

    use crate::fake::TestRep;

    /// Issue 16: the engine's report that an instance's container died
    /// makes the instance CRASHED at once, though its process has not been
    /// seen to end (an exec can keep looking alive for a while).
    #[tokio::test]
    async fn an_instance_whose_container_died_crashes_at_once() {
        let cell = TestRep::small("cell-exit").await;
        let (rep, garden, store) = (cell.rep(), cell.garden(), &cell.store);
        garden.script("/bin/httpd", Script::runs_for(Duration::from_secs(3600)));
        store
            .create_desired_lrp(lattice_bbs::suite::desired_lrp("web", "apps", 1))
            .await
            .expect("desired");
        store
            .create_actual_lrp(lattice_bbs::suite::actual_lrp("web", "apps", 0))
            .await
            .expect("actual");
        let mut events = store.subscribe();
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(rep.clone().run(shutdown.clone()));
        while !garden.has_event_subscribers() {
            tokio::task::yield_now().await;
        }
        let rejected = rep.perform(Work {
            lrps: vec![LrpInstance {
                process_guid: "web".into(),
                index: 0,
                domain: "apps".into(),
                resource: Resource::for_container(128, 64),
                rootfs: "docker:///busybox".into(),
            }],
            tasks: Vec::new(),
        });
        assert!(rejected.is_empty());
        async fn next_change(events: &mut lattice_bbs::EventReceiver) -> lattice_models::ActualLrp {
            loop {
                if let Ok(Event::ActualLrpChanged {
                    actual_lrp_after, ..
                }) = events.recv().await
                {
                    return actual_lrp_after;
                }
            }
        }
        let patience = Duration::from_secs(20);
        let instance = loop {
            let lrp = tokio::time::timeout(patience, next_change(&mut events))
                .await
                .expect("the instance changes");
            if lrp.state == ActualLrpState::Running {
                break lrp;
            }
        };
        garden.exited(
            &format!("lattice-lrp-{}", instance.instance_guid),
            Some(137),
        );
        // The next change of the instance is the crash: nothing else writes it.
        let crashed = tokio::time::timeout(patience, next_change(&mut events))
            .await
            .expect("the instance crashes");
        assert_eq!(crashed.state, ActualLrpState::Crashed);
        assert_eq!(
            crashed.crash_reason,
            "Exited with status 137 (its container died)"
        );
        assert_eq!(crashed.crash_count, 1);
        shutdown.cancel();
        running.await.expect("the rep stops");
    }
}

#[cfg(test)]
mod pids_tests {
    use lattice_models::action::{ResourceLimits, SerialAction};
    use lattice_models::Action;

    fn run_with_nproc(nproc: Option<u64>) -> Action {
        let mut action = Action::run("/bin/app", &[]);
        if let Action::Run(run) = &mut action {
            run.resource_limits = Some(ResourceLimits {
                nofile: None,
                nproc,
            });
        }
        action
    }

    #[test]
    fn largest_nproc_of_the_recipe_is_the_container_limit() {
        let serial = Action::Serial(SerialAction {
            actions: vec![run_with_nproc(Some(10)), run_with_nproc(None)],
            log_source: None,
        });
        let monitor = run_with_nproc(Some(200));
        assert_eq!(super::pids_limit([&serial, &monitor]), 200);
        assert_eq!(super::pids_limit([&Action::run("/bin/app", &[])]), 0);
    }
}

#[cfg(test)]
mod evacuation_tests {
    use std::time::Duration;

    use lattice_bbs::suite;
    use lattice_executor::fake::Script;
    use lattice_models::auction::{LrpInstance, Resource, TaskStart, Work};
    use lattice_models::{ActualLrp, ActualLrpEvent, ActualLrpState, TaskState};
    use tokio_util::sync::CancellationToken;

    use lattice_testkit::wait::until;

    use super::*;
    use crate::fake::{TestRep, SMALL_CELL, UNSERVED_ADDRESS};

    const CELL: &str = "cell-draining";

    /// A rep on the fake Garden with short drain delays.
    async fn draining_cell() -> TestRep {
        TestRep::new(RepConfig {
            starting_monitor_interval: Duration::from_millis(10),
            drain_delay: Duration::from_millis(50),
            evacuation_route_delay: Duration::from_millis(200),
            evacuation_timeout: Duration::from_secs(30),
            ..RepConfig::new(CELL, SMALL_CELL, UNSERVED_ADDRESS)
        })
        .await
    }

    /// The rep's evacuation on a real store and the recording fake Garden:
    /// the running instance is handed over, keeps running while its
    /// replacement starts elsewhere, and stops once that one has run for
    /// the route delay; the draining cell takes no new work.
    #[tokio::test]
    async fn a_draining_cell_hands_its_instance_over_and_stops_it_once_replaced() {
        let cell = draining_cell().await;
        let (rep, store) = (cell.rep(), &cell.store);
        cell.garden()
            .script("/bin/httpd", Script::runs_for(Duration::from_secs(3600)));
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(rep.clone().run(shutdown.clone()));
        store
            .create_desired_lrp(suite::desired_lrp("web", "apps", 1))
            .await
            .expect("desired");
        store
            .create_actual_lrp(ActualLrp::unclaimed("web", "apps", 0, 1))
            .await
            .expect("actual");
        let instance = LrpInstance {
            process_guid: "web".into(),
            index: 0,
            domain: "apps".into(),
            resource: Resource::for_container(0, 0),
            rootfs: "docker:///busybox".into(),
        };
        let work = Work {
            lrps: vec![instance.clone()],
            tasks: vec![],
        };
        assert!(rep.perform(work.clone()).is_empty());
        let old = until("the instance to run", async || {
            let lrp = store.get_actual_lrp("web", 0).await.ok()?;
            (lrp.state == ActualLrpState::Running).then_some(lrp)
        })
        .await;

        let draining = tokio::spawn({
            let rep = rep.clone();
            async move { rep.evacuate().await }
        });
        let handed = until("the instance to be handed over", async || {
            let lrp = store.get_actual_lrp("web", 0).await.ok()?;
            lrp.evacuating_instance.is_some().then_some(lrp)
        })
        .await;
        assert_eq!(handed.state, ActualLrpState::Unclaimed);
        assert_eq!(
            handed
                .evacuating_instance
                .as_ref()
                .map(|e| &e.instance_guid),
            Some(&old.instance_guid)
        );
        assert!(rep.state().evacuating, "the auction is told");
        assert_eq!(rep.perform(work.clone()).lrps.len(), 1, "no new work");
        assert_eq!(rep.state().lrps.len(), 1, "the old instance still serves");

        // Another cell claims and starts the replacement.
        let mut replacement = handed;
        replacement
            .apply(ActualLrpEvent::Claim, 2)
            .expect("unclaimed");
        replacement.cell_id = "cell-other".into();
        replacement.instance_guid = "new".into();
        let mut replacement = store.update_actual_lrp(replacement).await.expect("claimed");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(rep.state().lrps.len(), 1, "claimed is not running yet");
        replacement
            .apply(ActualLrpEvent::Start, 3)
            .expect("claimed");
        store.update_actual_lrp(replacement).await.expect("running");

        let report = draining.await.expect("the drain does not panic");
        assert_eq!(
            report,
            EvacuationReport {
                handed_over: 1,
                replaced: 1,
                timed_out: 0,
                given_back: 0,
                tasks_left: 0,
            }
        );
        let after = store.get_actual_lrp("web", 0).await.expect("kept");
        assert_eq!(after.evacuating_instance, None, "released");
        assert_eq!(
            (after.cell_id.as_str(), after.state),
            ("cell-other", ActualLrpState::Running),
            "the replacement is untouched"
        );
        until("the old instance to stop", async || {
            rep.state().lrps.is_empty().then_some(())
        })
        .await;
        shutdown.cancel();
        running.await.expect("the rep stops");
    }

    /// Diego's rule for tasks on a draining cell: the running one runs to
    /// its end (a task is never moved, and the drain does not fail it), the
    /// drain waits for it, and the cell takes no new task meanwhile.
    #[tokio::test]
    async fn a_draining_cell_lets_its_running_task_finish_and_takes_no_new_one() {
        let cell = draining_cell().await;
        let (rep, store) = (cell.rep(), &cell.store);
        cell.garden()
            .script("/bin/echo", Script::runs_for(Duration::from_millis(500)));
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(rep.clone().run(shutdown.clone()));
        let start = |task_guid: &str| Work {
            lrps: vec![],
            tasks: vec![TaskStart {
                task_guid: task_guid.into(),
                domain: "jobs".into(),
                resource: Resource::for_container(0, 0),
                rootfs: "docker:///busybox".into(),
            }],
        };
        for task_guid in ["long", "late"] {
            store
                .create_task(suite::task(task_guid, "jobs", 1))
                .await
                .expect("created");
        }
        assert!(rep.perform(start("long")).is_empty());
        until("the task to run", async || {
            let task = store.get_task("long").await.ok()?;
            (task.state == TaskState::Running).then_some(())
        })
        .await;

        let draining = tokio::spawn({
            let rep = rep.clone();
            async move { rep.evacuate().await }
        });
        until("the cell to drain", async || {
            rep.state().evacuating.then_some(())
        })
        .await;
        assert_eq!(rep.perform(start("late")).tasks.len(), 1, "no new task");

        let report = draining.await.expect("the drain does not panic");
        assert_eq!(report.tasks_left, 0, "the drain waited for the task");
        let long = store.get_task("long").await.expect("kept");
        assert_eq!(long.state, TaskState::Completed);
        assert!(!long.failed, "{}", long.failure_reason);
        let late = store.get_task("late").await.expect("kept");
        assert_eq!(late.state, TaskState::Pending, "left for another cell");
        shutdown.cancel();
        running.await.expect("the rep stops");
    }
}

#[cfg(test)]
mod reserve_tests {
    use std::sync::Barrier;

    use lattice_models::CellCapacity;

    use super::*;
    use crate::fake::{TestRep, UNSERVED_ADDRESS};

    /// Regression (issue 18): `reserve` read what was free, let go of the
    /// lock and took it again to insert, so performs racing on one cell
    /// could both take the last room.
    #[tokio::test(flavor = "multi_thread")]
    async fn concurrent_reserves_never_over_commit() {
        let capacity = CellCapacity {
            memory_mb: 1000,
            disk_mb: 100_000,
            containers: 1000,
        };
        let cell = TestRep::new(RepConfig::new("cell-race", capacity, UNSERVED_ADDRESS)).await;
        let rep = cell.rep();
        let need = Resource::for_container(100, 10);
        const RACERS: usize = 64;
        for round in 0..20 {
            let start = Barrier::new(RACERS);
            let reserved: usize = std::thread::scope(|scope| {
                let racers: Vec<_> = (0..RACERS)
                    .map(|i| {
                        let (rep, start) = (&rep, &start);
                        scope.spawn(move || {
                            start.wait();
                            let key = WorkKey::Task(format!("task-{round}-{i}"));
                            rep.reserve(&key, need).is_some()
                        })
                    })
                    .collect();
                racers
                    .into_iter()
                    .map(|racer| usize::from(racer.join().expect("no panic")))
                    .sum()
            });
            assert_eq!(reserved, 10, "round {round}: exactly what fits");
            assert_eq!(rep.state().available.memory_mb, 0, "round {round}");
            for key in rep.running_keys() {
                rep.release(&key);
            }
        }
    }
}
