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
//! - `lrps`: running one LRP instance, or supervising an adopted one.
//! - `restart`: what a restarted rep keeps, fails, gives back and destroys.
//! - `usage`: sampling what the cell's containers use ([`Rep::container_metrics`]).
//! - [`http`]: the rep's HTTP interface and the client the auctioneer uses.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lattice_bbs::{SharedStore, StoreError, TaskFilter};
use lattice_executor::{Executor, LogMessage, LogSink, MessageType};
use lattice_models::auction::{CellState, LrpKey, Resource, Work};
use lattice_models::{CellCapacity, CellPresence, ContainerMetrics, Event};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub mod http;
mod lrps;
mod restart;
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
    pub presence_ttl: Duration,
    /// How often running work is compared with the BBS, to heal missed events.
    pub sync_interval: Duration,
    /// How often a starting instance's monitor runs until it first passes.
    pub starting_monitor_interval: Duration,
    /// How often a running instance's monitor runs.
    pub running_monitor_interval: Duration,
    /// How often an instance adopted after a restart is checked for its
    /// process (its output and exit are no longer attached to this run).
    pub adopted_check_interval: Duration,
    /// How long a RUNNING instance that is being stopped keeps serving, so
    /// that routers drop it before its process stops.
    pub drain_delay: Duration,
    /// How often the usage of the cell's containers is sampled.
    pub usage_interval: Duration,
}

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
            presence_ttl: Duration::from_secs(30),
            sync_interval: Duration::from_secs(5),
            starting_monitor_interval: Duration::from_millis(200),
            running_monitor_interval: Duration::from_secs(10),
            adopted_check_interval: Duration::from_secs(1),
            drain_delay: Duration::from_secs(1),
            usage_interval: Duration::from_secs(5),
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
}

pub struct Rep {
    config: RepConfig,
    store: SharedStore,
    executor: Executor,
    /// Where the cell's own lines about the work it runs go (source CELL).
    logs: Arc<dyn LogSink>,
    /// A std mutex: held only for map updates, never across an `.await`.
    work: Mutex<HashMap<WorkKey, Allocation>>,
    /// The latest usage samples; a std mutex, held only to swap them.
    usage: Mutex<usage::Samples>,
    tracker: TaskTracker,
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
        Arc::new(Rep {
            config,
            store,
            executor,
            logs,
            work: Mutex::new(HashMap::new()),
            usage: Mutex::new(usage::Samples::default()),
            tracker: TaskTracker::new(),
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
            lrps::run_adopted(&rep, desired, adoption, cancel).await;
            rep.release(&key);
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
        let used = work.values().fold(Resource::ZERO, |acc, a| {
            acc.checked_add(&a.resource).unwrap_or(acc)
        });
        let available = Resource {
            memory_mb: (total.memory_mb - used.memory_mb).max(0),
            disk_mb: (total.disk_mb - used.disk_mb).max(0),
            containers: (total.containers - used.containers).max(0),
        };
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
            evacuating: false,
        }
    }

    /// Starts the work the cell won; returns what it could not take (no
    /// room left, or already running), for the auctioneer to place again.
    pub fn perform(self: &Arc<Self>, work: Work) -> Work {
        let mut rejected = Work::default();
        for lrp in work.lrps {
            let key = WorkKey::Lrp(lrp.key());
            let Some(cancel) = self.reserve(&key, lrp.resource) else {
                rejected.lrps.push(lrp);
                continue;
            };
            let rep = self.clone();
            self.tracker.spawn(async move {
                lrps::run(&rep, &lrp.process_guid, lrp.index, cancel).await;
                rep.release(&key);
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
    fn reserve(&self, key: &WorkKey, need: Resource) -> Option<CancellationToken> {
        let state = self.state();
        let mut work = self.work.lock().expect("rep work map poisoned");
        let fits =
            state.available.contains(&need) || is_unlimited(&state.total, &need, &state.available);
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
            },
        );
        Some(cancel)
    }

    fn release(&self, key: &WorkKey) {
        self.work.lock().expect("rep work map poisoned").remove(key);
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

    fn instance_guid_of(&self, key: &LrpKey) -> Option<String> {
        self.work
            .lock()
            .expect("rep work map poisoned")
            .get(&WorkKey::Lrp(key.clone()))
            .and_then(|a| a.instance_guid.clone())
    }

    /// Renews presence, reacts to changes of the tasks it runs (a cancel
    /// stops the container), and re-checks them periodically, until
    /// `shutdown`; then stops its work and deregisters the cell.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let oom_stop = shutdown.child_token();
        let oom_watch = tokio::spawn(self.clone().watch_oom(oom_stop.clone()));
        let sampler = tokio::spawn(self.clone().sample_usage(oom_stop.clone()));
        let mut events = self.store.subscribe();
        let mut presence = tokio::time::interval(self.config.presence_ttl / 3);
        let mut sync = tokio::time::interval(self.config.sync_interval);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = presence.tick() => {
                    if let Err(err) = self.store.upsert_cell(self.presence(), self.config.presence_ttl).await {
                        tracing::warn!(cell_id = %self.config.cell_id, error = %err, "cannot renew cell presence");
                    }
                }
                _ = sync.tick() => self.sync_work().await,
                event = events.recv() => match event {
                    Ok(event) => self.on_event(&event),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => self.sync_work().await,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                },
            }
        }
        oom_stop.cancel();
        if let Err(err) = oom_watch.await {
            tracing::error!(error = %err, "the OOM watch failed");
        }
        if let Err(err) = sampler.await {
            tracing::error!(error = %err, "the usage sampler failed");
        }
        self.stop().await;
    }

    /// Follows the engine's out-of-memory kills in this cell's containers
    /// until `stop`, re-subscribing (with back-off) when the engine's stream
    /// ends or fails. A child process killed for memory leaves the instance
    /// running, so this is the only trace of it.
    async fn watch_oom(self: Arc<Self>, stop: CancellationToken) {
        let filter = std::collections::BTreeMap::from([(
            lattice_garden::OWNER_PROPERTY.to_string(),
            self.config.cell_id.clone(),
        )]);
        let mut backoff = Duration::from_millis(100);
        loop {
            let subscribed = tokio::select! {
                _ = stop.cancelled() => return,
                subscribed = self.executor.garden().oom_events(&filter) => subscribed,
            };
            match subscribed {
                Ok(mut events) => loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        event = futures::StreamExt::next(&mut events) => match event {
                            Some(event) => {
                                backoff = Duration::from_millis(100);
                                self.on_oom(&event);
                            }
                            None => break,
                        },
                    }
                },
                Err(err) => {
                    tracing::warn!(cell_id = %self.config.cell_id, error = %err, "cannot follow the engine's OOM events")
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
                    (container, usage, tokio::time::Instant::now())
                }
            })
            .buffer_unordered(USAGE_CONCURRENCY)
            .collect()
            .await;
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

    /// Logs an OOM kill to the cell's log and the work's log stream.
    fn on_oom(&self, event: &lattice_garden::OomEvent) {
        let property = |key: &str| event.properties.get(key).map(String::as_str);
        let log_guid = property(LOG_GUID_PROPERTY).unwrap_or_default();
        if let Some(process_guid) = property(PROCESS_GUID_PROPERTY) {
            let index = property(INDEX_PROPERTY).unwrap_or_default();
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
    /// cell; instances go back to the auction) and removes the presence.
    async fn stop(&self) {
        for key in self.running_keys() {
            self.cancel(&key);
        }
        self.tracker.close();
        self.tracker.wait().await;
        if let Err(err) = self.store.remove_cell(&self.config.cell_id).await {
            tracing::warn!(cell_id = %self.config.cell_id, error = %err, "cannot deregister cell");
        }
        tracing::info!(cell_id = %self.config.cell_id, "rep stopped");
    }
}

/// A dimension of 0 in the cell's total means the cell does not limit it.
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
    use std::sync::Arc;

    use lattice_executor::fake::FakeGarden;
    use lattice_executor::{CollectingSink, ContainerRequest, Executor, ExecutorConfig};
    use lattice_models::CellCapacity;
    use tokio_util::sync::CancellationToken;

    use super::*;

    /// Regression (issue 15): a child process OOM-killed left the instance
    /// RUNNING and nothing was reported.
    #[tokio::test]
    async fn regression_a_child_oom_is_logged_for_the_instance() {
        let garden = FakeGarden::new();
        let sink = CollectingSink::new();
        let cache = tempfile::tempdir().expect("a temp dir");
        let executor = Executor::new(
            Arc::new(garden.clone()),
            sink.clone(),
            ExecutorConfig::new("cell-oom", cache.path()),
        );
        let store: SharedStore = Arc::new(
            lattice_bbs::SqliteStore::open_in_memory()
                .await
                .expect("a store"),
        );
        let capacity = CellCapacity {
            memory_mb: 1024,
            disk_mb: 1024,
            containers: 8,
        };
        let rep = Rep::new(
            RepConfig::new("cell-oom", capacity, "http://127.0.0.1:1"),
            store,
            executor.clone(),
            sink.clone(),
        );
        executor
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
        while !garden.has_oom_subscribers() {
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
