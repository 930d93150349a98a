//! What the converger should do, decided on a snapshot of the store.
//!
//! [`converge`] is a pure function: it reads no clock (`now_nanos` is passed
//! in), does no I/O and draws no random number. Its answer is a
//! [`Convergence`]: named buckets of actions that [`crate::apply`] performs
//! with compare-and-swap. Because every action is re-checked against the
//! record it was decided on, a decision made on a slightly stale snapshot is
//! at worst skipped, and the next pass decides again.
//!
//! # Guarantees
//! - At most `instances` starts per desired LRP, only for indices that have
//!   no actual LRP; never a start and a retire of the same index.
//! - An index below `instances` is never retired while its desired LRP exists.
//! - A task is never put back to run: a task whose cell vanished is failed,
//!   and only PENDING tasks (never claimed) are kicked to the auctioneer.
//! - Each actual LRP and each task lands in at most one bucket.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::time::Duration;

use lattice_bbs::{ActualLrpSummary, DesiredLrpSummary};
use lattice_models::crash::{CrashDecision, CrashPolicy};
use lattice_models::{ActualLrpState, CellPresence, Task, TaskState};

/// Failure reason of a task whose cell's presence expired while it was
/// claimed or running. The task is not run again: its outcome is unknown.
pub const CELL_DISAPPEARED_REASON: &str = "cell disappeared before completion";

/// The state the converger looks at, read from the store in one pass. LRPs
/// are summaries (the columns decisions read), so that a pass over a
/// million instances decodes no record; [`crate::apply`] reads the whole
/// record of each instance it acts on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub desired: Vec<DesiredLrpSummary>,
    pub actual: Vec<ActualLrpSummary>,
    pub tasks: Vec<Task>,
    /// Cells whose presence has not expired.
    pub cells: Vec<CellPresence>,
}

/// The converger's timings, with Diego's defaults. Tests shrink them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// When a CRASHED instance starts again: the one crash policy, shared
    /// with the cell, which counts the crashes
    /// ([`lattice_models::crash::crash_count_after_crash`]).
    pub crash: CrashPolicy,
    /// An UNCLAIMED instance older than this is offered to the auctioneer
    /// again (the auction that should have placed it may have been lost).
    pub unclaimed_timeout: Duration,
    /// A PENDING task older than this is offered to the auctioneer again.
    pub pending_kick_after: Duration,
    /// A RESOLVING task not touched for this long has lost its resolver (it
    /// died mid-callback): the callback is tried again. Longer than one
    /// callback's attempts take, so a live resolver is never overtaken.
    pub resolving_timeout: Duration,
    /// A completed task is deleted this long after it first completed,
    /// whether or not its callback got through (as Diego does).
    pub completed_ttl: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            crash: CrashPolicy::default(),
            unclaimed_timeout: Duration::from_secs(30),
            pending_kick_after: Duration::from_secs(30),
            resolving_timeout: Duration::from_secs(60),
            completed_ttl: Duration::from_secs(120),
        }
    }
}

/// An index of a desired LRP that has no actual LRP.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct MissingInstance {
    pub process_guid: String,
    pub domain: String,
    pub index: i64,
}

/// A task claimed by a cell that is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostTask {
    pub task_guid: String,
    /// The vanished cell; the task is only failed if it is still there.
    pub cell_id: String,
    pub reason: String,
}

/// The converger's decisions, one bucket per duty.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Convergence {
    /// Indices below `instances` with no actual LRP: create them UNCLAIMED.
    pub start_missing: Vec<MissingInstance>,
    /// Instances at or above `instances`, or of no desired LRP: delete them.
    pub retire_extra: Vec<ActualLrpSummary>,
    /// CRASHED instances the crash policy restarts now.
    pub restart_crashed: Vec<ActualLrpSummary>,
    /// CRASHED instances that crashed too often; they are left alone.
    pub gave_up: Vec<ActualLrpSummary>,
    /// Earliest time a CRASHED instance that waits becomes restartable, so
    /// the runner can look again then instead of at its next tick.
    pub next_restart_at: Option<i64>,
    /// CLAIMED/RUNNING instances on a vanished cell: back to UNCLAIMED.
    pub unclaim_lost: Vec<ActualLrpSummary>,
    /// UNCLAIMED for longer than `unclaimed_timeout`: ask the auctioneer again.
    pub reauction_stuck: Vec<ActualLrpSummary>,
    /// Records whose evacuating instance's cell vanished (it died while it
    /// drained): forget that instance, so routers stop sending to it.
    pub release_lost_evacuees: Vec<ActualLrpSummary>,
    /// CLAIMED/RUNNING tasks on a vanished cell: complete them failed.
    pub fail_lost_tasks: Vec<LostTask>,
    /// PENDING for longer than `pending_kick_after`: ask the auctioneer again.
    pub kick_pending: Vec<String>,
    /// Completed tasks whose callback is due (again).
    pub resolve: Vec<String>,
    /// Completed tasks past `completed_ttl`: delete them.
    pub expire: Vec<String>,
}

impl Convergence {
    /// Whether the auctioneer has something new to look at.
    pub fn wants_auction(&self) -> bool {
        !(self.start_missing.is_empty()
            && self.restart_crashed.is_empty()
            && self.unclaim_lost.is_empty()
            && self.reauction_stuck.is_empty()
            && self.kick_pending.is_empty())
    }
}

/// Decides every duty of the converger on `snapshot` as of `now_nanos`.
pub fn converge(snapshot: &Snapshot, now_nanos: i64, policy: &Policy) -> Convergence {
    let live: HashSet<&str> = snapshot.cells.iter().map(|c| c.cell_id.as_str()).collect();
    let mut out = Convergence::default();
    converge_lrps(snapshot, &live, now_nanos, policy, &mut out);
    for task in &snapshot.tasks {
        converge_task(task, &live, now_nanos, policy, &mut out);
    }
    out
}

/// Walks the desired LRPs and their instances side by side, both sorted by
/// process guid (as the store lists them; sorted here otherwise), so a
/// pass over a million instances hashes nothing and looks nothing up.
///
/// # Assumptions
/// Process guids of desired LRPs, and `(process_guid, index)` of actual
/// LRPs, are unique (they are the store's keys).
fn converge_lrps(
    snapshot: &Snapshot,
    live: &HashSet<&str>,
    now: i64,
    policy: &Policy,
    out: &mut Convergence,
) {
    let desired = sorted(&snapshot.desired, |a, b| {
        a.process_guid.cmp(&b.process_guid)
    });
    let actual = sorted(&snapshot.actual, |a, b| {
        (a.process_guid.as_str(), a.index).cmp(&(b.process_guid.as_str(), b.index))
    });
    let mut desired = desired.into_iter().peekable();
    for instances in actual.chunk_by(|a, b| a.process_guid == b.process_guid) {
        let process_guid = instances[0].process_guid.as_str();
        // Desired LRPs that sort before this one have no instance at all.
        while let Some(lrp) = desired.next_if(|d| d.process_guid.as_str() < process_guid) {
            start_missing(lrp, &[], out);
        }
        let lrp = desired.next_if(|d| d.process_guid == process_guid);
        for actual in instances {
            converge_instance(actual, lrp, live, now, policy, out);
        }
        if let Some(lrp) = lrp {
            start_missing(lrp, instances, out);
        }
    }
    for lrp in desired {
        start_missing(lrp, &[], out);
    }
}

/// `items` in the order of `compare`: borrowed as they are when already
/// sorted (the store's lists are), sorted otherwise.
fn sorted<T>(items: &[T], compare: impl Fn(&T, &T) -> Ordering) -> Vec<&T> {
    let mut refs: Vec<&T> = items.iter().collect();
    if !refs.is_sorted_by(|a, b| compare(a, b).is_le()) {
        refs.sort_by(|a, b| compare(a, b));
    }
    refs
}

/// The decisions about one instance; `desired` is its desired LRP, if any.
fn converge_instance(
    actual: &ActualLrpSummary,
    desired: Option<&DesiredLrpSummary>,
    live: &HashSet<&str>,
    now: i64,
    policy: &Policy,
    out: &mut Convergence,
) {
    if actual
        .evacuating_cell_id
        .as_ref()
        .is_some_and(|cell_id| !live.contains(cell_id.as_str()))
    {
        out.release_lost_evacuees.push(actual.clone());
    }
    let wanted = desired.is_some_and(|d| (0..d.instances).contains(&actual.index));
    if !wanted {
        out.retire_extra.push(actual.clone());
        return;
    }
    match actual.state {
        ActualLrpState::Unclaimed => {
            if older_than(actual.since, now, policy.unclaimed_timeout) {
                out.reauction_stuck.push(actual.clone());
            }
        }
        ActualLrpState::Claimed | ActualLrpState::Running => {
            if !live.contains(actual.cell_id.as_str()) {
                out.unclaim_lost.push(actual.clone());
            }
        }
        ActualLrpState::Crashed => {
            match policy.crash.decision(actual.crash_count, actual.since, now) {
                CrashDecision::RestartNow => out.restart_crashed.push(actual.clone()),
                CrashDecision::GiveUp => out.gave_up.push(actual.clone()),
                CrashDecision::WaitUntil(at) => {
                    out.next_restart_at = Some(out.next_restart_at.map_or(at, |t| t.min(at)));
                }
            }
        }
    }
}

/// Starts every index of `lrp` below its instance count that `instances`
/// (its actual LRPs, sorted by index) lacks.
fn start_missing(lrp: &DesiredLrpSummary, instances: &[&ActualLrpSummary], out: &mut Convergence) {
    let mut present = instances.iter().map(|a| a.index).peekable();
    for index in 0..lrp.instances.max(0) {
        while present.next_if(|&i| i < index).is_some() {}
        if present.peek() != Some(&index) {
            out.start_missing.push(MissingInstance {
                process_guid: lrp.process_guid.clone(),
                domain: lrp.domain.clone(),
                index,
            });
        }
    }
}

fn converge_task(
    task: &Task,
    live: &HashSet<&str>,
    now: i64,
    policy: &Policy,
    out: &mut Convergence,
) {
    match task.state {
        TaskState::Pending => {
            if older_than(task.updated_at, now, policy.pending_kick_after) {
                out.kick_pending.push(task.task_guid.clone());
            }
        }
        TaskState::Claimed | TaskState::Running => {
            if !live.contains(task.cell_id.as_str()) {
                out.fail_lost_tasks.push(LostTask {
                    task_guid: task.task_guid.clone(),
                    cell_id: task.cell_id.clone(),
                    reason: CELL_DISAPPEARED_REASON.to_string(),
                });
            }
        }
        TaskState::Completed | TaskState::Resolving => {
            if should_expire(task, now, policy) {
                out.expire.push(task.task_guid.clone());
            } else if should_resolve(task, now, policy) {
                out.resolve.push(task.task_guid.clone());
            }
        }
    }
}

/// Whether a completed task is past its time to live. A RESOLVING one is
/// only expired once its resolver looks dead, so that a callback in flight
/// is not cut off.
pub fn should_expire(task: &Task, now_nanos: i64, policy: &Policy) -> bool {
    let expired = older_than(completed_at(task), now_nanos, policy.completed_ttl);
    match task.state {
        TaskState::Completed => expired,
        TaskState::Resolving => {
            expired && older_than(task.updated_at, now_nanos, policy.resolving_timeout)
        }
        _ => false,
    }
}

/// Whether a task's completion callback should be (re)tried now: it is
/// COMPLETED with a callback URL, or RESOLVING by a resolver that looks dead,
/// and not expired.
pub fn should_resolve(task: &Task, now_nanos: i64, policy: &Policy) -> bool {
    if task.completion_callback_url.is_empty() || should_expire(task, now_nanos, policy) {
        return false;
    }
    match task.state {
        TaskState::Completed => true,
        TaskState::Resolving => older_than(task.updated_at, now_nanos, policy.resolving_timeout),
        _ => false,
    }
}

/// When the task first completed; records written before that field existed
/// fall back to the last update.
fn completed_at(task: &Task) -> i64 {
    if task.first_completed_at > 0 {
        task.first_completed_at
    } else {
        task.updated_at
    }
}

fn older_than(at: i64, now: i64, age: Duration) -> bool {
    now.saturating_sub(at) >= nanos(age)
}

pub(crate) fn nanos(duration: Duration) -> i64 {
    i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
