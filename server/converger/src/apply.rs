//! Performs a [`Convergence`] on the store.
//!
//! Decisions are made on summaries; each action reads the whole record it
//! acts on, checks that the decision still applies to it, and writes with
//! compare-and-swap. On a conflict the record is read again: if the action
//! still applies to what is stored now it is retried, otherwise it is
//! skipped and the next pass decides again. An error on one action is logged and counted; the
//! other actions still run.
//!
//! # Guarantees
//! - A task is never made runnable again: a lost task is only ever completed
//!   (failed), and only while it is still CLAIMED or RUNNING on the vanished
//!   cell.
//! - An instance is only retired if, read again just before, its desired LRP
//!   is gone or no longer wants its index; an instance is only created for an
//!   index the desired LRP (read again) still wants.
//!
//! # Assumptions
//! Safe to cancel at any `.await`: each action is one atomic write (missing
//! instances: one per batch).

use std::collections::HashMap;
use std::convert::Infallible;

use lattice_bbs::modify::{modify_actual_lrp, modify_task, Change, Modified, ModifyError};
use lattice_bbs::{ActualLrpSummary, Store, StoreError};
use lattice_models::{ActualLrp, ActualLrpEvent, ActualLrpState, TaskState};

use crate::decide::{self, Convergence, LostTask, MissingInstance, Policy};

/// Most missing instances created in one commit.
const CREATE_BATCH: usize = 256;

/// What [`apply`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// UNCLAIMED actual LRPs created.
    pub started: usize,
    /// Actual LRPs deleted.
    pub retired: usize,
    /// CRASHED actual LRPs moved back to UNCLAIMED.
    pub restarted: usize,
    /// Actual LRPs of vanished cells moved back to UNCLAIMED.
    pub unclaimed: usize,
    /// UNCLAIMED actual LRPs the auctioneer is asked to place again.
    pub reauctioned: usize,
    /// Tasks of vanished cells completed failed.
    pub tasks_failed: usize,
    /// PENDING tasks the auctioneer is asked to place again.
    pub tasks_kicked: usize,
    /// Completed tasks deleted.
    pub tasks_expired: usize,
    /// Evacuating instances of vanished cells forgotten.
    pub evacuees_released: usize,
    /// Actions dropped because their record changed since the snapshot.
    pub skipped: usize,
    /// Actions that failed on a store error.
    pub errors: usize,
}

impl Applied {
    /// Whether the auctioneer has new or renewed work to place.
    pub fn wants_auction(&self) -> bool {
        self.started + self.restarted + self.unclaimed + self.reauctioned + self.tasks_kicked > 0
    }

    fn count(&mut self, outcome: Outcome, done: impl FnOnce(&mut Applied)) {
        match outcome {
            Outcome::Done => done(self),
            Outcome::Skipped => self.skipped += 1,
            Outcome::Failed => self.errors += 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Done,
    Skipped,
    Failed,
}

/// Performs every action of `convergence` as of `now_nanos`; `policy` is the
/// one the convergence was decided with (expiry is re-checked against it).
pub async fn apply(
    store: &dyn Store,
    convergence: &Convergence,
    now_nanos: i64,
    policy: &Policy,
) -> Applied {
    let mut applied = Applied::default();
    let mut desired = DesiredCache::default();

    // Wanted instances are created in batches of one commit each: a scale
    // to 500 is then a few writes, not 500 (see docs/performance.md).
    let mut to_create = Vec::with_capacity(convergence.start_missing.len());
    for missing in &convergence.start_missing {
        match still_wanted(store, &mut desired, missing).await {
            Ok(domain) => to_create.push(ActualLrp::unclaimed(
                &missing.process_guid,
                &domain,
                missing.index,
                now_nanos,
            )),
            Err(outcome) => applied.count(outcome, |_| {}),
        }
    }
    while !to_create.is_empty() {
        let rest = to_create.split_off(to_create.len().min(CREATE_BATCH));
        let batch = std::mem::replace(&mut to_create, rest);
        create_batch(store, batch, &mut applied).await;
    }
    for extra in &convergence.retire_extra {
        let outcome = retire(store, &mut desired, extra).await;
        applied.count(outcome, |a| a.retired += 1);
    }
    for lrp in &convergence.restart_crashed {
        let same_crash = |stored: &ActualLrp| {
            stored.state == ActualLrpState::Crashed
                && stored.since == lrp.since
                && stored.crash_count == lrp.crash_count
        };
        let outcome = transition(store, lrp, ActualLrpEvent::Restart, now_nanos, same_crash).await;
        applied.count(outcome, |a| a.restarted += 1);
    }
    for lrp in &convergence.unclaim_lost {
        let still_lost = |stored: &ActualLrp| {
            matches!(
                stored.state,
                ActualLrpState::Claimed | ActualLrpState::Running
            ) && stored.cell_id == lrp.cell_id
        };
        let outcome = transition(store, lrp, ActualLrpEvent::Unclaim, now_nanos, still_lost).await;
        applied.count(outcome, |a| a.unclaimed += 1);
    }
    for lrp in &convergence.release_lost_evacuees {
        let outcome = release_lost_evacuee(store, lrp).await;
        applied.count(outcome, |a| a.evacuees_released += 1);
    }
    for lrp in &convergence.reauction_stuck {
        // Debug: a cluster without room repeats this every pass (its
        // placement error is on the record, for `ltc status`).
        tracing::debug!(
            process_guid = %lrp.process_guid,
            index = lrp.index,
            "instance unclaimed for too long; asking the auctioneer again"
        );
    }
    applied.reauctioned = convergence.reauction_stuck.len();

    for lost in &convergence.fail_lost_tasks {
        let outcome = fail_lost_task(store, lost, now_nanos).await;
        applied.count(outcome, |a| a.tasks_failed += 1);
    }
    for task_guid in &convergence.kick_pending {
        tracing::debug!(%task_guid, "task pending for too long; asking the auctioneer again");
    }
    applied.tasks_kicked = convergence.kick_pending.len();
    for task_guid in &convergence.expire {
        let outcome = expire_task(store, task_guid, now_nanos, policy).await;
        applied.count(outcome, |a| a.tasks_expired += 1);
    }
    applied
}

/// Instances wanted per process guid, read once per pass: `None` when the
/// desired LRP is gone.
#[derive(Default)]
struct DesiredCache {
    records: HashMap<String, Option<(i64, String)>>,
}

impl DesiredCache {
    /// `(instances, domain)` of the desired LRP as stored now.
    async fn get(
        &mut self,
        store: &dyn Store,
        process_guid: &str,
    ) -> Result<Option<(i64, String)>, StoreError> {
        if let Some(known) = self.records.get(process_guid) {
            return Ok(known.clone());
        }
        let found = match store.get_desired_lrp(process_guid).await {
            Ok(lrp) => Some((lrp.instances, lrp.domain)),
            Err(StoreError::NotFound { .. }) => None,
            Err(err) => return Err(err),
        };
        self.records.insert(process_guid.to_string(), found.clone());
        Ok(found)
    }
}

/// The domain of `missing`'s desired LRP if, as stored now, it still wants
/// that index; otherwise what to count instead.
async fn still_wanted(
    store: &dyn Store,
    desired: &mut DesiredCache,
    missing: &MissingInstance,
) -> Result<String, Outcome> {
    let process_guid = missing.process_guid.as_str();
    let index = missing.index;
    match desired.get(store, process_guid).await {
        Ok(Some((instances, domain))) if index < instances => Ok(domain),
        Ok(_) => Err(Outcome::Skipped),
        Err(err) => {
            tracing::warn!(process_guid, index, error = %err, "cannot read desired LRP; not starting instance");
            Err(Outcome::Failed)
        }
    }
}

/// Creates `batch` in one write; an instance someone else created since
/// the snapshot is skipped (nothing is missing there).
async fn create_batch(store: &dyn Store, batch: Vec<ActualLrp>, applied: &mut Applied) {
    let count = batch.len();
    let first = batch
        .first()
        .map(|lrp| (lrp.process_guid.clone(), lrp.index));
    match store.create_actual_lrps(batch).await {
        Ok(created) => {
            for lrp in &created {
                match lrp {
                    Some(lrp) => {
                        tracing::info!(
                            process_guid = %lrp.process_guid,
                            index = lrp.index,
                            "instance missing; created it unclaimed"
                        );
                        applied.count(Outcome::Done, |a| a.started += 1);
                    }
                    None => applied.count(Outcome::Skipped, |_| {}),
                }
            }
        }
        Err(err) => {
            tracing::warn!(count, ?first, error = %err, "cannot create missing instances");
            applied.errors += count;
        }
    }
}

async fn retire(
    store: &dyn Store,
    desired: &mut DesiredCache,
    extra: &ActualLrpSummary,
) -> Outcome {
    let process_guid = extra.process_guid.as_str();
    let index = extra.index;
    match desired.get(store, process_guid).await {
        // Scaled up since the snapshot: the instance is wanted again.
        Ok(Some((instances, _))) if (0..instances).contains(&index) => return Outcome::Skipped,
        Ok(_) => {}
        Err(err) => {
            tracing::warn!(process_guid, index, error = %err, "cannot read desired LRP; not retiring instance");
            return Outcome::Failed;
        }
    }
    // The instance may change (claimed, started, crashed) before it is
    // deleted, but its index is still unwanted: retire what is there then.
    let retired = modify_actual_lrp(store, process_guid, index, |_| {
        Ok::<_, Infallible>(Change::Delete)
    })
    .await;
    match retired {
        Ok(_) => {
            tracing::info!(process_guid, index, cell_id = %extra.cell_id, "instance not desired; retired it");
            Outcome::Done
        }
        Err(err) => skipped_or_failed(err, |err| {
            tracing::warn!(process_guid, index, error = %err, "cannot retire instance");
        }),
    }
}

/// A write that did not happen: skipped when the record is gone or kept
/// changing (the next pass decides again), failed (and `log`ged) on a
/// store error.
fn skipped_or_failed(
    err: ModifyError<Infallible>,
    log: impl FnOnce(&ModifyError<Infallible>),
) -> Outcome {
    match err {
        ModifyError::Store(StoreError::NotFound { .. }) | ModifyError::KeptChanging { .. } => {
            Outcome::Skipped
        }
        err => {
            log(&err);
            Outcome::Failed
        }
    }
}

/// Applies `event` to the stored instance while `still_applies` holds for it.
/// Clears the record's evacuating instance if it is still on the vanished
/// cell decided on, with CAS. (Any evacuating instance of that cell is
/// lost, so whether it is the very one the snapshot saw does not matter.)
async fn release_lost_evacuee(store: &dyn Store, decided: &ActualLrpSummary) -> Outcome {
    let Some(lost_cell) = decided.evacuating_cell_id.as_deref() else {
        return Outcome::Skipped;
    };
    let released = modify_actual_lrp(store, &decided.process_guid, decided.index, |current| {
        let same = current
            .evacuating_instance
            .as_ref()
            .is_some_and(|e| e.cell_id == lost_cell);
        if !same {
            return Ok::<_, Infallible>(Change::Keep);
        }
        current.evacuating_instance = None;
        Ok(Change::Update)
    })
    .await;
    match released {
        Ok(Modified::Updated(_)) => {
            tracing::info!(process_guid = %decided.process_guid, index = decided.index, cell_id = %lost_cell, "forgot the evacuating instance of a vanished cell");
            Outcome::Done
        }
        Ok(_) => Outcome::Skipped,
        Err(err) => skipped_or_failed(err, |err| {
            tracing::warn!(process_guid = %decided.process_guid, index = decided.index, error = %err, "cannot forget an evacuating instance");
        }),
    }
}

async fn transition(
    store: &dyn Store,
    decided: &ActualLrpSummary,
    event: ActualLrpEvent,
    now: i64,
    still_applies: impl Fn(&ActualLrp) -> bool + Sync,
) -> Outcome {
    let process_guid = decided.process_guid.as_str();
    let index = decided.index;
    let cell_id = decided.cell_id.as_str();
    let changed = modify_actual_lrp(store, process_guid, index, |current| {
        if !still_applies(current) || current.apply(event, now).is_err() {
            return Ok::<_, Infallible>(Change::Keep);
        }
        Ok(Change::Update)
    })
    .await;
    match changed {
        Ok(Modified::Updated(_)) => {
            tracing::info!(
                process_guid,
                index,
                cell_id,
                crash_count = decided.crash_count,
                ?event,
                "instance back to unclaimed"
            );
            Outcome::Done
        }
        Ok(_) => Outcome::Skipped,
        Err(err) => skipped_or_failed(err, |err| {
            tracing::warn!(process_guid, index, cell_id, ?event, error = %err, "cannot update instance");
        }),
    }
}

async fn fail_lost_task(store: &dyn Store, lost: &LostTask, now: i64) -> Outcome {
    let task_guid = lost.task_guid.as_str();
    let cell_id = lost.cell_id.as_str();
    let failed = modify_task(store, task_guid, |task| {
        let still_lost = matches!(task.state, TaskState::Claimed | TaskState::Running)
            && task.cell_id == lost.cell_id;
        if !still_lost || task.fail(lost.reason.clone(), now).is_err() {
            return Ok::<_, Infallible>(Change::Keep);
        }
        Ok(Change::Update)
    })
    .await;
    match failed {
        Ok(Modified::Updated(_)) => {
            tracing::warn!(task_guid, cell_id, reason = %lost.reason, "task's cell vanished; completed it failed");
            Outcome::Done
        }
        Ok(_) => Outcome::Skipped,
        Err(err) => skipped_or_failed(err, |err| {
            tracing::warn!(task_guid, cell_id, error = %err, "cannot fail lost task");
        }),
    }
}

async fn expire_task(store: &dyn Store, task_guid: &str, now: i64, policy: &Policy) -> Outcome {
    let expired = modify_task(store, task_guid, |task| {
        Ok::<_, Infallible>(if decide::should_expire(task, now, policy) {
            Change::Delete
        } else {
            Change::Keep
        })
    })
    .await;
    match expired {
        Ok(Modified::Deleted(task)) => {
            tracing::info!(
                task_guid,
                failed = task.failed,
                "completed task expired; deleted it"
            );
            Outcome::Done
        }
        Ok(_) => Outcome::Skipped,
        Err(err) => skipped_or_failed(err, |err| {
            tracing::warn!(task_guid, error = %err, "cannot delete expired task");
        }),
    }
}
