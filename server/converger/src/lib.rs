//! The converger: the brain's janitor. It compares what is desired with what
//! the store says is actual, and acts: starts missing LRP instances, retires
//! extra ones, restarts crashed ones with Diego's back-off, puts the work of
//! vanished cells back up for auction (instances) or fails it (tasks, which
//! run at most once), asks the auctioneer again about work stuck unplaced,
//! delivers task completion callbacks and expires completed tasks.
//!
//! It must never run a task twice, never retire an instance its desired LRP
//! still wants, and never end on an error: every problem is logged and the
//! next pass heals what this one missed. Only the holder of the
//! [`LOCK_NAME`] lock acts; a standby keeps trying to take it.
//!
//! # Layout
//! - [`decide`]: [`decide::converge`], the pure decisions on a [`Snapshot`]
//!   (restarts follow [`CrashPolicy`], the one crash policy, in models).
//! - [`apply`]: performs the decisions with compare-and-swap.
//! - [`callbacks`]: task completion callbacks (COMPLETED -> RESOLVING ->
//!   deleted).
//! - [`metrics`]: the cluster's counts and the passes' durations, for
//!   `/metrics`.
//! - `clock`: the converger's one reading of the clock.
//! - [`Converger`]: one pass ([`Converger::converge_once`]) and the loop
//!   ([`Converger::run`]).

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use lattice_bbs::{EventReceiver, SharedStore, StoreError, TaskFilter};
use lattice_models::pacing::settle_then_space;
use lattice_models::{ActualLrpState, Event, TaskState};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub mod apply;
pub mod callbacks;
mod clock;
pub mod decide;
pub mod metrics;

pub use apply::Applied;
pub use callbacks::{CallbackConfig, CallbackCounts, Resolution, Resolver};
pub use decide::{converge, Convergence, Policy, Snapshot, CELL_DISAPPEARED_REASON};
pub use lattice_models::crash::CrashPolicy;

/// Name of the BBS lock only the active converger holds.
pub const LOCK_NAME: &str = "converger";

#[derive(Debug, Clone)]
pub struct ConvergerConfig {
    /// Lock owner id: unique per brain process.
    pub owner: String,
    /// Time between periodic passes; they heal whatever events were missed.
    pub interval: Duration,
    /// Lease of the converger lock; renewed every third of it.
    pub lock_ttl: Duration,
    pub policy: Policy,
    pub callbacks: CallbackConfig,
    /// After a relevant event in a quiet spell (an app desired, scaled or
    /// deleted), how long to gather the rest of its burst before a pass.
    pub settle: Duration,
    /// Event-driven passes start at most this often, so a stream of
    /// changes costs one pass per `debounce`. A crash the policy restarts
    /// at once waits for neither.
    pub debounce: Duration,
    /// How often the live cells are listed, so that a cell whose presence
    /// expired is acted on at once rather than at the next periodic pass
    /// (the store raises no event when a presence lapses). One small read.
    pub presence_check: Duration,
}

impl ConvergerConfig {
    /// Diego's defaults: a pass every 30 s, a 15 s lease.
    ///
    /// The converger never wakes the auctioneer itself: the instances it
    /// creates or unclaims reach the auctioneer through the store's change
    /// feed, and stuck work through the auctioneer's own scan. So a brain
    /// that stands by is never woken by the active one's converger.
    pub fn new(owner: impl Into<String>) -> Self {
        ConvergerConfig {
            owner: owner.into(),
            interval: Duration::from_secs(30),
            lock_ttl: Duration::from_secs(15),
            policy: Policy::default(),
            callbacks: CallbackConfig::default(),
            settle: Duration::from_millis(10),
            debounce: Duration::from_millis(75),
            presence_check: Duration::from_millis(250),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConvergerError {
    /// The state to converge could not be read; nothing was done.
    #[error("cannot read the state to converge: {0}")]
    Snapshot(#[from] StoreError),
    /// The HTTP client for completion callbacks could not be built.
    #[error("cannot build the callback http client: {0}")]
    HttpClient(#[from] reqwest::Error),
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub applied: Applied,
    /// CRASHED instances left alone for good (crashed too often).
    pub gave_up: usize,
    pub callbacks: CallbackCounts,
}

pub struct Converger {
    store: SharedStore,
    config: ConvergerConfig,
    resolver: Resolver,
    /// Resolutions started from the loop, awaited on shutdown.
    tracker: TaskTracker,
    /// Instances already reported as given up, `(process_guid, index,
    /// since)`, so each is logged once rather than every pass.
    gave_up: Mutex<HashSet<(String, i64, i64)>>,
}

impl Converger {
    /// # Errors
    /// [`ConvergerError::HttpClient`] if the callback client cannot be built.
    pub fn new(store: SharedStore, config: ConvergerConfig) -> Result<Self, ConvergerError> {
        let resolver = Resolver::new(
            store.clone(),
            config.callbacks.clone(),
            config.policy.clone(),
        )?;
        Ok(Converger {
            store,
            config,
            resolver,
            tracker: TaskTracker::new(),
            gave_up: Mutex::new(HashSet::new()),
        })
    }

    /// One pass: snapshot, decide, apply, and deliver the callbacks that are
    /// due (awaited). Does not take the lock: the caller decides who
    /// converges.
    ///
    /// # Errors
    /// [`ConvergerError::Snapshot`] if the store cannot be read; failures of
    /// single actions are counted in the report instead.
    pub async fn converge_once(&self) -> Result<Report, ConvergerError> {
        let (mut report, convergence) = self.decide_and_apply().await?;
        let never = CancellationToken::new();
        let resolutions = futures::future::join_all(
            convergence
                .resolve
                .iter()
                .map(|guid| self.resolver.resolve(guid, &never)),
        )
        .await;
        for resolution in resolutions {
            report.callbacks.add(resolution);
        }
        Ok(report)
    }

    /// Converges while holding the lock, until `shutdown`; a standby keeps
    /// trying to take the lock. Errors are logged; the loop never ends on one.
    /// On shutdown, callbacks in flight hand their tasks back, and the lock
    /// is released.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut events = Some(self.store.subscribe());
        let mut renew = tokio::time::interval(self.config.lock_ttl / 3);
        renew.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut periodic = tokio::time::interval(self.config.interval);
        periodic.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut presence = tokio::time::interval(self.config.presence_check);
        presence.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut live_cells: Option<HashSet<String>> = None;
        let mut active = false;
        let mut next_pass: Option<Instant> = None;
        let mut last_pass: Option<Instant> = None;
        loop {
            let wake = next_pass;
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = renew.tick() => {
                    let was_active = active;
                    active = self.hold_lock(active).await;
                    if active && !was_active {
                        next_pass = Some(clock::now());
                    }
                }
                _ = periodic.tick() => next_pass = Some(clock::now()),
                _ = presence.tick(), if active => {
                    if self.cells_vanished(&mut live_cells).await {
                        next_pass = Some(clock::now());
                    }
                }
                event = next_event(&mut events) => match event {
                    Ok(event) => {
                        if active {
                            self.on_event(&event, &shutdown, &mut next_pass, last_pass);
                        }
                    }
                    // Missed events: a pass finds whatever they were about.
                    Err(RecvError::Lagged(missed)) => {
                        tracing::debug!(missed, "converger fell behind the change feed");
                        soon(&mut next_pass, event_pass_at(clock::now(), last_pass, &self.config));
                    }
                    Err(RecvError::Closed) => {
                        tracing::warn!("change feed closed; converging on the interval only");
                        events = None;
                    }
                },
                _ = sleep_until(wake) => {
                    next_pass = None;
                    if active {
                        last_pass = Some(clock::now());
                        next_pass = self.pass(&shutdown).await;
                    }
                }
            }
        }
        self.tracker.close();
        self.tracker.wait().await;
        if active {
            if let Err(err) = self.store.release_lock(LOCK_NAME, &self.config.owner).await {
                tracing::warn!(owner = %self.config.owner, error = %err, "cannot release the converger lock");
            }
        }
        tracing::info!(owner = %self.config.owner, "converger stopped");
    }

    /// Takes or renews the lock; whether this process holds it now.
    async fn hold_lock(&self, was_active: bool) -> bool {
        let owner = self.config.owner.as_str();
        match self
            .store
            .acquire_lock(LOCK_NAME, owner, self.config.lock_ttl)
            .await
        {
            Ok(true) => {
                if !was_active {
                    tracing::info!(owner, "took the converger lock; converging");
                }
                true
            }
            Ok(false) => {
                if was_active {
                    tracing::warn!(owner, "lost the converger lock; standing by");
                }
                false
            }
            // Unsure whether the lease still holds: stop acting until it is
            // renewed, rather than risk two active convergers.
            Err(err) => {
                tracing::warn!(owner, error = %err, "cannot renew the converger lock; standing by");
                false
            }
        }
    }

    fn on_event(
        &self,
        event: &Event,
        shutdown: &CancellationToken,
        next_pass: &mut Option<Instant>,
        last_pass: Option<Instant>,
    ) {
        if let Some(task_guid) = completed_with_callback(event) {
            self.spawn_resolve(task_guid.to_string(), shutdown);
        }
        if restarts_at_once(event, &self.config.policy) {
            *next_pass = Some(clock::now());
        } else if wants_pass(event) {
            soon(
                next_pass,
                event_pass_at(clock::now(), last_pass, &self.config),
            );
        }
    }

    /// Lists the live cells; whether one of `known` (the cells seen last
    /// time) is gone now: its presence expired or it deregistered, so its
    /// work is to be placed elsewhere. A failed read changes nothing.
    async fn cells_vanished(&self, known: &mut Option<HashSet<String>>) -> bool {
        let cells = match self.store.list_cells().await {
            Ok(cells) => cells,
            Err(err) => {
                tracing::debug!(error = %err, "cannot list the cells to watch their presence");
                return false;
            }
        };
        let live: HashSet<String> = cells.into_iter().map(|c| c.cell_id).collect();
        let gone: Vec<&String> = known
            .as_ref()
            .map(|known| known.difference(&live).collect())
            .unwrap_or_default();
        let vanished = !gone.is_empty();
        if vanished {
            tracing::info!(cells = ?gone, "cell presence ended; converging at once");
        }
        *known = Some(live);
        vanished
    }

    /// One pass of the loop; callbacks are started in the background. Returns
    /// when to look again before the next tick, if a crashed instance
    /// becomes restartable sooner.
    async fn pass(&self, shutdown: &CancellationToken) -> Option<Instant> {
        match self.decide_and_apply().await {
            Ok((report, convergence)) => {
                for task_guid in convergence.resolve {
                    self.spawn_resolve(task_guid, shutdown);
                }
                if report.applied != Applied::default() {
                    tracing::info!(?report, "convergence pass acted");
                }
                convergence.next_restart_at.map(|at| {
                    let wait = at.saturating_sub(now());
                    clock::now() + Duration::from_nanos(u64::try_from(wait).unwrap_or(0))
                })
            }
            Err(err) => {
                tracing::warn!(error = %err, "convergence pass failed; will retry");
                None
            }
        }
    }

    fn spawn_resolve(&self, task_guid: String, shutdown: &CancellationToken) {
        let resolver = self.resolver.clone();
        let cancel = shutdown.child_token();
        self.tracker.spawn(async move {
            resolver.resolve(&task_guid, &cancel).await;
        });
    }

    async fn decide_and_apply(&self) -> Result<(Report, Convergence), ConvergerError> {
        let started = clock::now();
        let snapshot = self.snapshot().await?;
        crate::metrics::record_snapshot(&snapshot);
        let now = now();
        let convergence = decide::converge(&snapshot, now, &self.config.policy);
        self.log_gave_up(&convergence).await;
        let applied =
            apply::apply(self.store.as_ref(), &convergence, now, &self.config.policy).await;
        let report = Report {
            applied,
            gave_up: convergence.gave_up.len(),
            callbacks: CallbackCounts::default(),
        };
        crate::metrics::record_pass(started.elapsed());
        Ok((report, convergence))
    }

    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        gather(&self.store).await
    }

    /// Logs each instance newly given up once, with its crash reason (read
    /// from its record: the snapshot holds summaries).
    async fn log_gave_up(&self, convergence: &Convergence) {
        let current: HashSet<(String, i64, i64)> = convergence
            .gave_up
            .iter()
            .map(|l| (l.process_guid.clone(), l.index, l.since))
            .collect();
        let new: Vec<_> = {
            // A poisoned set only means a pass panicked mid-update; the set
            // is still a valid set, at worst one line is logged twice.
            let mut reported = self.gave_up.lock().unwrap_or_else(|e| e.into_inner());
            let new = convergence
                .gave_up
                .iter()
                .filter(|l| !reported.contains(&(l.process_guid.clone(), l.index, l.since)))
                .collect();
            *reported = current;
            new
        };
        for lrp in new {
            let crash_reason = match self
                .store
                .get_actual_lrp(&lrp.process_guid, lrp.index)
                .await
            {
                Ok(record) => record.crash_reason,
                Err(err) => format!("(unreadable: {err})"),
            };
            tracing::warn!(
                process_guid = %lrp.process_guid,
                index = lrp.index,
                cell_id = %lrp.cell_id,
                crash_count = lrp.crash_count,
                crash_reason = %crash_reason,
                "instance crashed too often; no longer restarting it"
            );
        }
    }
}

/// Events after which a pass should look soon rather than at the next tick.
/// Completed tasks are not among them: their callback is started directly.
fn wants_pass(event: &Event) -> bool {
    match event {
        Event::DesiredLrpCreated { .. }
        | Event::DesiredLrpChanged { .. }
        | Event::DesiredLrpRemoved { .. }
        | Event::ActualLrpRemoved { .. } => true,
        Event::ActualLrpChanged {
            actual_lrp_before,
            actual_lrp_after,
        } => {
            actual_lrp_after.state == ActualLrpState::Crashed
                && actual_lrp_before.state != ActualLrpState::Crashed
        }
        _ => false,
    }
}

/// A new crash that the crash policy restarts without waiting (one of the
/// first `immediate_restarts`): the pass runs at once, without the
/// debounce, since every millisecond here is an instance missing.
fn restarts_at_once(event: &Event, policy: &Policy) -> bool {
    match event {
        Event::ActualLrpChanged {
            actual_lrp_before,
            actual_lrp_after,
        } => {
            actual_lrp_after.state == ActualLrpState::Crashed
                && actual_lrp_before.state != ActualLrpState::Crashed
                && policy.crash.backoff(actual_lrp_after.crash_count).is_zero()
                && actual_lrp_after.crash_count < policy.crash.max_restart_attempts
        }
        _ => false,
    }
}

/// The task that has just completed and has a callback. A task handed back
/// by a failed callback (RESOLVING -> COMPLETED) is not one: reacting to it
/// would retry in a tight loop; the periodic pass retries it.
fn completed_with_callback(event: &Event) -> Option<&str> {
    match event {
        Event::TaskChanged {
            task_before,
            task_after,
        } if task_after.state == TaskState::Completed
            && !task_before.state.is_terminal()
            && !task_after.completion_callback_url.is_empty() =>
        {
            Some(&task_after.task_guid)
        }
        _ => None,
    }
}

/// When an event-driven pass starts for a change seen at `now`.
fn event_pass_at(now: Instant, last_pass: Option<Instant>, config: &ConvergerConfig) -> Instant {
    settle_then_space(now, last_pass, config.settle, config.debounce)
}

/// Schedules a pass at `at`, never later than one already due.
fn soon(next_pass: &mut Option<Instant>, at: Instant) {
    *next_pass = Some(next_pass.map_or(at, |due| due.min(at)));
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn next_event(events: &mut Option<EventReceiver>) -> Result<Event, RecvError> {
    match events {
        Some(events) => events.recv().await,
        None => std::future::pending().await,
    }
}

fn now() -> i64 {
    lattice_models::unix_nanos(SystemTime::now())
}

/// Reads everything the decisions need (the "gather" half of a pass; the
/// convergence bench times it with [`decide::converge`]): LRPs as
/// summaries, which read a few columns and decode no record, so that a
/// pass over 1,000,000 instances stays within a second or two; tasks and
/// cells whole (they are few, and their decisions read more of them).
///
/// The order matters: cells are read last. A cell registers before it
/// claims anything, so every cell named by a claim read earlier is either in
/// the cell list or truly gone. Read the other way round, a cell that
/// registered and claimed between the two reads would look vanished and its
/// fresh work would be taken away.
///
/// # Errors
/// The first [`StoreError`] of the reads.
pub async fn gather(store: &SharedStore) -> Result<Snapshot, StoreError> {
    // The three reads are independent: run them at once (each on a
    // connection of its own), then the cells.
    let every_task = TaskFilter::default();
    let (desired, actual, tasks) = tokio::try_join!(
        store.list_desired_lrp_summaries(),
        store.list_actual_lrp_summaries(),
        store.list_tasks(&every_task),
    )?;
    let cells = store.list_cells().await?;
    Ok(Snapshot {
        desired,
        actual,
        tasks,
        cells,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use lattice_bbs::suite;

    fn changed(before: TaskState, after: TaskState, callback: &str) -> Event {
        let mut task_before = suite::task("t", "apps", 1);
        task_before.state = before;
        task_before.completion_callback_url = callback.to_string();
        let mut task_after = task_before.clone();
        task_after.state = after;
        Event::TaskChanged {
            task_before,
            task_after,
        }
    }

    #[test]
    fn a_fresh_completion_with_a_callback_is_resolved_at_once() {
        let event = changed(TaskState::Running, TaskState::Completed, "http://x.test/");
        assert_eq!(completed_with_callback(&event), Some("t"));
    }

    #[test]
    fn a_handed_back_task_waits_for_the_periodic_pass() {
        let event = changed(TaskState::Resolving, TaskState::Completed, "http://x.test/");
        assert_eq!(completed_with_callback(&event), None);
        let event = changed(TaskState::Running, TaskState::Completed, "");
        assert_eq!(completed_with_callback(&event), None);
    }

    #[test]
    fn only_a_new_crash_of_an_instance_wants_a_pass() {
        let before = suite::actual_lrp("web", "apps", 0);
        let mut crashed = before.clone();
        crashed.state = ActualLrpState::Crashed;
        let crash = Event::ActualLrpChanged {
            actual_lrp_before: before.clone(),
            actual_lrp_after: crashed.clone(),
        };
        let recrash = Event::ActualLrpChanged {
            actual_lrp_before: crashed.clone(),
            actual_lrp_after: crashed,
        };
        let created = Event::ActualLrpCreated { actual_lrp: before };
        assert!(wants_pass(&crash));
        assert!(!wants_pass(&recrash));
        assert!(!wants_pass(&created));
    }

    #[test]
    fn a_stream_of_changes_is_passed_over_at_most_every_debounce() {
        let config = ConvergerConfig::new("test");
        let last = clock::now();
        let now = last + Duration::from_millis(5);
        assert_eq!(
            event_pass_at(now, Some(last), &config),
            last + config.debounce
        );
        let mut next_pass = Some(now + Duration::from_millis(1));
        soon(&mut next_pass, event_pass_at(now, Some(last), &config));
        assert_eq!(
            next_pass,
            Some(now + Duration::from_millis(1)),
            "a pass already due sooner stays"
        );
    }

    #[test]
    fn only_an_immediately_restartable_crash_skips_the_debounce() {
        let policy = Policy::default();
        let before = suite::actual_lrp("web", "apps", 0);
        let crash = |count: i64| {
            let mut after = before.clone();
            after.state = ActualLrpState::Crashed;
            after.crash_count = count;
            Event::ActualLrpChanged {
                actual_lrp_before: before.clone(),
                actual_lrp_after: after,
            }
        };
        assert!(restarts_at_once(&crash(1), &policy));
        assert!(restarts_at_once(
            &crash(policy.crash.immediate_restarts),
            &policy
        ));
        assert!(!restarts_at_once(
            &crash(policy.crash.immediate_restarts + 1),
            &policy
        ));
        let created = Event::ActualLrpCreated { actual_lrp: before };
        assert!(!restarts_at_once(&created, &policy));
    }
}
