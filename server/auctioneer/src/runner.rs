//! The auctioneer's loop: gathers pending work from the BBS, asks every
//! cell's rep for its state, runs [`auction`](crate::auction) and sends each
//! cell the work it won.
//!
//! Only the holder of the `auctioneer` lock (a lease in the BBS) auctions, so
//! two brains never place the same work twice at once. Even so, placement is
//! only a proposal: a rep runs a task only after claiming it with
//! compare-and-swap, so a task sent twice still runs at most once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use lattice_bbs::{SharedStore, StoreError, TaskFilter};
use lattice_models::auction::{AuctionRequest, CellState, Resource, TaskStart};
use lattice_models::{Event, TaskState};
use lattice_rep::http::RepClient;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Name of the BBS lock only the active auctioneer holds.
pub const LOCK_NAME: &str = "auctioneer";

#[derive(Debug, Clone)]
pub struct AuctioneerConfig {
    /// Lock owner id: unique per brain process.
    pub owner: String,
    /// How long work is gathered before an auction, so that many starts
    /// (e.g. `ltc scale web 100`) go in one batch.
    pub batch_window: Duration,
    /// How long a task sent to a cell may stay PENDING before it is
    /// auctioned again (the cell may have died before claiming it).
    pub resend_after: Duration,
    /// Lease of the auctioneer lock; renewed every third of it.
    pub lock_ttl: Duration,
    /// How often pending work is looked for even without events.
    pub scan_interval: Duration,
}

impl AuctioneerConfig {
    pub fn new(owner: impl Into<String>) -> Self {
        Self {
            owner: owner.into(),
            batch_window: Duration::from_millis(50),
            resend_after: Duration::from_secs(10),
            lock_ttl: Duration::from_secs(15),
            scan_interval: Duration::from_secs(2),
        }
    }
}

/// What one auction round did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RoundReport {
    pub tasks_placed: usize,
    pub tasks_failed: usize,
    pub tasks_returned: usize,
}

pub struct Auctioneer {
    store: SharedStore,
    reps: RepClient,
    config: AuctioneerConfig,
    /// Wakes the loop early (the converger calls it after creating work).
    wake: Arc<Notify>,
    /// Tasks sent to a cell and when; not re-sent until `resend_after`.
    sent: HashMap<String, Instant>,
}

impl Auctioneer {
    pub fn new(store: SharedStore, config: AuctioneerConfig, wake: Arc<Notify>) -> Self {
        Self {
            store,
            reps: RepClient::new(),
            config,
            wake,
            sent: HashMap::new(),
        }
    }

    /// Auctions until `shutdown`, while holding the lock; a standby keeps
    /// trying to take it. Errors are logged; the loop never ends on one.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut events = self.store.subscribe();
        let mut renew = tokio::time::interval(self.config.lock_ttl / 3);
        let mut scan = tokio::time::interval(self.config.scan_interval);
        let mut active = false;
        let mut pending_work = true;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = renew.tick() => {
                    active = self.hold_lock(active).await;
                }
                _ = scan.tick() => pending_work = true,
                _ = self.wake.notified() => pending_work = true,
                event = events.recv() => match event {
                    Ok(event) => pending_work |= wants_auction(&event),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => pending_work = true,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                },
            }
            if active && pending_work {
                // Let more work arrive, so it is placed in one batch.
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(self.config.batch_window) => {}
                }
                pending_work = false;
                if let Err(err) = self.round().await {
                    tracing::warn!(error = %err, "auction round failed; will retry");
                    pending_work = true;
                }
            }
        }
        if active {
            if let Err(err) = self.store.release_lock(LOCK_NAME, &self.config.owner).await {
                tracing::warn!(error = %err, "cannot release the auctioneer lock");
            }
        }
        tracing::info!("auctioneer stopped");
    }

    async fn hold_lock(&self, was_active: bool) -> bool {
        match self
            .store
            .acquire_lock(LOCK_NAME, &self.config.owner, self.config.lock_ttl)
            .await
        {
            Ok(active) => {
                if active != was_active {
                    tracing::info!(owner = %self.config.owner, active, "auctioneer lock changed hands");
                }
                active
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot renew the auctioneer lock; standing by");
                false
            }
        }
    }

    /// One auction: snapshot pending work and cell states, decide, send.
    pub async fn round(&mut self) -> Result<RoundReport, StoreError> {
        let now = Instant::now();
        let resend_after = self.config.resend_after;
        self.sent.retain(|_, at| now.duration_since(*at) < resend_after);
        let pending = self
            .store
            .list_tasks(&TaskFilter {
                state: Some(TaskState::Pending),
                ..Default::default()
            })
            .await?;
        let tasks: Vec<TaskStart> = pending
            .iter()
            .filter(|t| !self.sent.contains_key(&t.task_guid))
            .map(|t| TaskStart {
                task_guid: t.task_guid.clone(),
                domain: t.domain.clone(),
                resource: Resource::for_container(t.memory_mb, t.disk_mb),
                rootfs: t.rootfs.clone(),
            })
            .collect();
        if tasks.is_empty() {
            return Ok(RoundReport::default());
        }
        let cells = self.cell_states().await?;
        let request = AuctionRequest {
            lrps: Vec::new(),
            tasks,
        };
        let results = crate::auction(&cells, &request);
        let mut report = RoundReport::default();
        let cells_by_id: HashMap<String, String> = self
            .store
            .list_cells()
            .await?
            .into_iter()
            .map(|c| (c.cell_id, c.rep_address))
            .collect();
        for (cell_id, work) in results.work_by_cell() {
            let Some(address) = cells_by_id.get(&cell_id) else {
                continue;
            };
            for task in &work.tasks {
                self.sent.insert(task.task_guid.clone(), now);
            }
            report.tasks_placed += work.tasks.len();
            match self.reps.perform(address, &work).await {
                Ok(rejected) => {
                    // Returned work stays PENDING and goes to the next round.
                    for task in &rejected.tasks {
                        self.sent.remove(&task.task_guid);
                    }
                    report.tasks_returned += rejected.tasks.len();
                    report.tasks_placed -= rejected.tasks.len();
                }
                Err(err) => {
                    tracing::warn!(%cell_id, error = %err, "cell did not take its work; it goes to the next auction");
                    for task in &work.tasks {
                        self.sent.remove(&task.task_guid);
                    }
                    report.tasks_placed -= work.tasks.len();
                    report.tasks_returned += work.tasks.len();
                }
            }
        }
        for failure in &results.tasks_failed {
            self.fail_task(&failure.task.task_guid, &failure.error.to_string()).await;
            report.tasks_failed += 1;
        }
        if report != RoundReport::default() {
            tracing::info!(
                placed = report.tasks_placed,
                failed = report.tasks_failed,
                returned = report.tasks_returned,
                cells = cells.len(),
                "auction done"
            );
        }
        Ok(report)
    }

    /// Asks every live cell for its state; a cell that does not answer
    /// takes no part in this auction.
    async fn cell_states(&self) -> Result<Vec<CellState>, StoreError> {
        let cells = self.store.list_cells().await?;
        let queries = cells.iter().map(|cell| {
            let reps = self.reps.clone();
            async move { (cell.cell_id.clone(), reps.state(&cell.rep_address).await) }
        });
        let mut states = Vec::new();
        for (cell_id, state) in futures::future::join_all(queries).await {
            match state {
                Ok(state) => states.push(state),
                Err(err) => tracing::warn!(%cell_id, error = %err, "cell did not report its state"),
            }
        }
        Ok(states)
    }

    /// A task no cell can take completes failed: it is never left PENDING
    /// forever, and never runs later by surprise.
    async fn fail_task(&self, task_guid: &str, reason: &str) {
        let now = lattice_models::unix_nanos(std::time::SystemTime::now());
        let Ok(mut task) = self.store.get_task(task_guid).await else {
            return;
        };
        if task.state != TaskState::Pending || task.fail(reason, now).is_err() {
            return;
        }
        match self.store.update_task(task).await {
            Ok(_) => tracing::info!(task_guid, reason, "task could not be placed"),
            Err(err) => tracing::info!(task_guid, error = %err, "task changed while failing placement; next round decides"),
        }
    }
}

fn wants_auction(event: &Event) -> bool {
    matches!(event, Event::TaskCreated { .. })
}
