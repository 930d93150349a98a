//! The auctioneer's loop: gathers pending work from the BBS, asks every
//! cell's rep for its state, runs [`auction`](crate::auction) and sends each
//! cell the work it won.
//!
//! Only the holder of the `auctioneer` lock (a lease in the BBS) auctions, so
//! two brains never place the same work twice at once. Even so, placement is
//! only a proposal: a rep runs a task only after claiming it with
//! compare-and-swap, so a task sent twice still runs at most once.

use std::collections::HashMap;
use std::time::Duration;

use lattice_bbs::modify::{modify_actual_lrp, modify_task, Change};
use lattice_bbs::{ActualLrpFilter, DesiredLrpFilter, SharedStore, StoreError, TaskFilter};
use lattice_client::RepClient;
use lattice_models::auction::{AuctionRequest, CellState, LrpKey};
use lattice_models::pacing::settle_then_space;
use lattice_models::{ActualLrpState, Event, TaskState};
use tokio::time::Instant;

use crate::pending::{self, SentKey};
use tokio_util::sync::CancellationToken;

/// Name of the BBS lock only the active auctioneer holds.
pub const LOCK_NAME: &str = "auctioneer";

#[derive(Debug, Clone)]
pub struct AuctioneerConfig {
    /// Lock owner id: unique per brain process.
    pub owner: String,
    /// How long the first new work after a quiet spell waits for the rest
    /// of its burst (the writes of one convergence pass, several crashes at
    /// once), so that they go in one auction.
    pub settle: Duration,
    /// Rounds start at most this often: under a stream of work (e.g.
    /// `ltc scale web 500` written one instance at a time) each round
    /// places what gathered meanwhile, in one batch.
    pub round_spacing: Duration,
    /// How long a task sent to a cell may stay PENDING before it is
    /// auctioned again (the cell may have died before claiming it).
    pub resend_after: Duration,
    /// Lease of the auctioneer lock; renewed every third of it.
    pub lock_ttl: Duration,
    /// How often pending work is looked for even without events.
    pub scan_interval: Duration,
    /// The secret reps require (the cluster secret), if they do.
    pub rep_secret: Option<String>,
}

impl AuctioneerConfig {
    pub fn new(owner: impl Into<String>) -> Self {
        Self {
            owner: owner.into(),
            settle: Duration::from_millis(10),
            round_spacing: Duration::from_millis(50),
            resend_after: Duration::from_secs(10),
            lock_ttl: Duration::from_secs(15),
            scan_interval: Duration::from_secs(2),
            rep_secret: None,
        }
    }
}

/// What one auction round did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RoundReport {
    pub tasks_placed: usize,
    pub tasks_failed: usize,
    pub lrps_placed: usize,
    pub lrps_failed: usize,
    /// Work a cell refused or could not be reached for; auctioned again.
    pub returned: usize,
}

/// The auctioneer's loop. It is woken by the store's change feed only (new
/// tasks, instances that became UNCLAIMED) and by its own scan: a brain
/// that stands by is never woken by another part of its process.
pub struct Auctioneer {
    store: SharedStore,
    reps: RepClient,
    config: AuctioneerConfig,
    /// Work sent to a cell and when; not re-sent until `resend_after`.
    sent: HashMap<SentKey, Instant>,
}

impl Auctioneer {
    pub fn new(store: SharedStore, config: AuctioneerConfig) -> Self {
        Self {
            store,
            reps: match &config.rep_secret {
                Some(secret) => RepClient::with_secret(secret.clone()),
                None => RepClient::new(),
            },
            config,
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
        let mut last_round: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = renew.tick() => {
                    active = self.hold_lock(active).await;
                }
                _ = scan.tick() => pending_work = true,
                event = events.recv() => match event {
                    Ok(event) => {
                        self.forget_delivered(&event);
                        pending_work |= wants_auction(&event);
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => pending_work = true,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                },
            }
            if active && pending_work {
                let at = settle_then_space(
                    crate::clock::now(),
                    last_round,
                    self.config.settle,
                    self.config.round_spacing,
                );
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep_until(at) => {}
                }
                last_round = Some(crate::clock::now());
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

    /// Work that a cell claimed, or that is waiting again (an instance
    /// restarted after a crash, a restart request), needs no memory of
    /// having been sent: the next auction must see it at once.
    fn forget_delivered(&mut self, event: &Event) {
        match event {
            Event::ActualLrpChanged {
                actual_lrp_after: lrp,
                ..
            } => {
                self.sent.remove(&SentKey::Lrp(LrpKey::new(
                    lrp.process_guid.clone(),
                    lrp.index,
                )));
            }
            Event::ActualLrpRemoved { actual_lrp: lrp } => {
                self.sent.remove(&SentKey::Lrp(LrpKey::new(
                    lrp.process_guid.clone(),
                    lrp.index,
                )));
            }
            Event::TaskChanged {
                task_after: task, ..
            }
            | Event::TaskRemoved { task } => {
                self.sent.remove(&SentKey::Task(task.task_guid.clone()));
            }
            _ => {}
        }
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
        let now = crate::clock::now();
        let resend_after = self.config.resend_after;
        self.sent
            .retain(|_, at| now.duration_since(*at) < resend_after);
        let request = self.pending_work().await?;
        if request.tasks.is_empty() && request.lrps.is_empty() {
            return Ok(RoundReport::default());
        }
        let (cells, addresses) = self.cell_states().await?;
        let results = crate::auction(&cells, &request);
        metrics::counter!("lattice_auction_rounds_total").increment(1);
        let mut report = RoundReport {
            tasks_placed: results.tasks_placed.len(),
            lrps_placed: results.lrps_placed.len(),
            ..Default::default()
        };
        for (cell_id, work) in results.work_by_cell() {
            let keys: Vec<SentKey> = work
                .tasks
                .iter()
                .map(|t| SentKey::Task(t.task_guid.clone()))
                .chain(work.lrps.iter().map(|l| SentKey::Lrp(l.key())))
                .collect();
            for key in &keys {
                self.sent.insert(key.clone(), now);
            }
            let returned: Vec<SentKey> = match addresses.get(&cell_id) {
                None => keys,
                Some(address) => match self.reps.perform(address, &work).await {
                    Ok(rejected) => rejected
                        .tasks
                        .iter()
                        .map(|t| SentKey::Task(t.task_guid.clone()))
                        .chain(rejected.lrps.iter().map(|l| SentKey::Lrp(l.key())))
                        .collect(),
                    Err(err) => {
                        tracing::warn!(%cell_id, error = %err, "cell did not take its work; it goes to the next auction");
                        keys
                    }
                },
            };
            // Returned work stays pending and goes to the next round.
            for key in &returned {
                self.sent.remove(key);
                match key {
                    SentKey::Task(_) => report.tasks_placed -= 1,
                    SentKey::Lrp(_) => report.lrps_placed -= 1,
                }
            }
            report.returned += returned.len();
        }
        for failure in &results.tasks_failed {
            self.fail_task(&failure.task.task_guid, &failure.error.to_string())
                .await;
            report.tasks_failed += 1;
        }
        for failure in &results.lrps_failed {
            let instance = &failure.instance;
            self.mark_placement_error(
                &instance.process_guid,
                instance.index,
                &failure.error.to_string(),
            )
            .await;
            report.lrps_failed += 1;
        }
        metrics::counter!("lattice_auction_placement_failures_total", "work" => "task")
            .increment(report.tasks_failed as u64);
        metrics::counter!("lattice_auction_placement_failures_total", "work" => "lrp")
            .increment(report.lrps_failed as u64);
        metrics::counter!("lattice_auction_placed_total", "work" => "task")
            .increment(report.tasks_placed as u64);
        metrics::counter!("lattice_auction_placed_total", "work" => "lrp")
            .increment(report.lrps_placed as u64);
        // From the snapshot to the last write: what a round costs.
        metrics::histogram!("lattice_auction_round_duration_seconds")
            .record(now.elapsed().as_secs_f64());
        if report != RoundReport::default() {
            tracing::info!(
                tasks_placed = report.tasks_placed,
                tasks_failed = report.tasks_failed,
                lrps_placed = report.lrps_placed,
                lrps_failed = report.lrps_failed,
                returned = report.returned,
                cells = cells.len(),
                "auction done"
            );
        }
        Ok(report)
    }

    /// PENDING tasks and UNCLAIMED instances not already sent to a cell
    /// (chosen by [`pending::select`]); the store is asked only for those.
    async fn pending_work(&self) -> Result<AuctionRequest, StoreError> {
        let tasks = self
            .store
            .list_tasks(&TaskFilter {
                state: Some(TaskState::Pending),
                ..Default::default()
            })
            .await?;
        let unclaimed = self
            .store
            .list_actual_lrps(&ActualLrpFilter {
                state: Some(ActualLrpState::Unclaimed),
                ..Default::default()
            })
            .await?;
        let desired = if unclaimed.is_empty() {
            Vec::new()
        } else {
            self.store
                .list_desired_lrps(&DesiredLrpFilter::default())
                .await?
        };
        Ok(pending::select(&tasks, &unclaimed, &desired, |key| {
            self.sent.contains_key(key)
        }))
    }

    /// Records why an instance could not be placed, for `ltc status`; it
    /// stays UNCLAIMED and is auctioned again later.
    async fn mark_placement_error(&self, process_guid: &str, index: i64, error: &str) {
        let recorded = modify_actual_lrp(self.store.as_ref(), process_guid, index, |actual| {
            if actual.state != ActualLrpState::Unclaimed || actual.placement_error == error {
                return Ok::<_, std::convert::Infallible>(Change::Keep);
            }
            actual.placement_error = error.to_string();
            Ok(Change::Update)
        })
        .await;
        if let Err(err) = recorded {
            tracing::info!(process_guid, index, error = %err, "cannot record the instance's placement error; the next round tries again");
        }
    }

    /// Lists the live cells once and asks each for its state: the states
    /// of the cells that answered (a cell that does not takes no part in
    /// this auction), and every live cell's rep address by id.
    async fn cell_states(&self) -> Result<(Vec<CellState>, HashMap<String, String>), StoreError> {
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
        let addresses = cells
            .into_iter()
            .map(|c| (c.cell_id, c.rep_address))
            .collect();
        Ok((states, addresses))
    }

    /// A task no cell can take completes failed: it is never left PENDING
    /// forever, and never runs later by surprise.
    async fn fail_task(&self, task_guid: &str, reason: &str) {
        let now = lattice_models::unix_nanos(std::time::SystemTime::now());
        let failed = modify_task(self.store.as_ref(), task_guid, |task| {
            if task.state != TaskState::Pending || task.fail(reason, now).is_err() {
                return Ok::<_, std::convert::Infallible>(Change::Keep);
            }
            Ok(Change::Update)
        })
        .await;
        match failed {
            Ok(lattice_bbs::modify::Modified::Updated(_)) => {
                tracing::info!(task_guid, reason, "task could not be placed")
            }
            Ok(_) => {}
            Err(err) => {
                tracing::info!(task_guid, error = %err, "cannot fail the unplaceable task; the next round decides")
            }
        }
    }
}

fn wants_auction(event: &Event) -> bool {
    match event {
        Event::TaskCreated { .. } => true,
        Event::ActualLrpCreated { actual_lrp } => actual_lrp.state == ActualLrpState::Unclaimed,
        Event::ActualLrpChanged {
            actual_lrp_after, ..
        } => actual_lrp_after.state == ActualLrpState::Unclaimed,
        _ => false,
    }
}
