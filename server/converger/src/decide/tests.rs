//! Unit tests of every duty, and property tests of the safety rules.

use std::collections::HashSet;
use std::time::Duration;

use lattice_bbs::suite;
use lattice_bbs::{ActualLrpSummary, DesiredLrpSummary};
use lattice_models::{
    ActualLrp, ActualLrpEvent, ActualLrpState, CellPresence, DesiredLrp, Task, TaskState,
};
use proptest::prelude::*;

use super::*;

const SEC: i64 = 1_000_000_000;
/// An arbitrary "now", far from zero so that subtracting ages stays positive.
const NOW: i64 = 1_000_000 * SEC;

fn actual(guid: &str, index: i64, state: ActualLrpState, cell: &str, since: i64) -> ActualLrp {
    let mut lrp = ActualLrp::unclaimed(guid, "apps", index, since);
    lrp.state = state;
    lrp.cell_id = cell.to_string();
    lrp
}

fn crashed(crash_count: i64, since: i64) -> ActualLrp {
    let mut lrp = actual("web", 0, ActualLrpState::Crashed, "cell-1", since);
    lrp.crash_count = crash_count;
    lrp
}

fn task(guid: &str, state: TaskState, cell: &str, updated_at: i64) -> Task {
    let mut task = suite::task(guid, "apps", updated_at);
    task.state = state;
    task.cell_id = cell.to_string();
    task.updated_at = updated_at;
    if state.is_terminal() {
        task.first_completed_at = updated_at;
    }
    task
}

fn snapshot_with_cells(cells: &[&str]) -> Snapshot {
    Snapshot {
        cells: cells.iter().map(|c| suite::cell(c)).collect(),
        ..Default::default()
    }
}

fn summaries(lrps: Vec<ActualLrp>) -> Vec<ActualLrpSummary> {
    lrps.iter().map(ActualLrpSummary::from).collect()
}

fn desired_summary(guid: &str, domain: &str, instances: i64) -> DesiredLrpSummary {
    (&suite::desired_lrp(guid, domain, instances)).into()
}

fn keys(lrps: &[ActualLrpSummary]) -> Vec<(String, i64)> {
    lrps.iter()
        .map(|l| (l.process_guid.clone(), l.index))
        .collect()
}

// --- LRPs --------------------------------------------------------------------

#[test]
fn forgets_evacuating_instances_of_vanished_cells_only() {
    let mut snap = snapshot_with_cells(&["cell-1", "cell-draining"]);
    snap.desired = vec![desired_summary("web", "apps", 2)];
    let mut draining = actual("web", 0, ActualLrpState::Running, "cell-draining", NOW);
    draining.instance_guid = "old-0".into();
    let mut moving = actual("web", 0, ActualLrpState::Unclaimed, "", NOW);
    moving.evacuating_instance = Some(draining.as_evacuating());
    let mut died = actual("web", 1, ActualLrpState::Running, "cell-gone", NOW);
    died.instance_guid = "old-1".into();
    let mut replaced = actual("web", 1, ActualLrpState::Running, "cell-1", NOW);
    replaced.evacuating_instance = Some(died.as_evacuating());
    snap.actual = summaries(vec![moving, replaced]);
    let out = converge(&snap, NOW, &Policy::default());
    assert_eq!(keys(&out.release_lost_evacuees), [("web".to_string(), 1)]);
    assert!(
        out.unclaim_lost.is_empty(),
        "the replacement's own cell is live"
    );
}

#[test]
fn starts_every_missing_index() {
    let mut snap = snapshot_with_cells(&["cell-1"]);
    snap.desired = vec![desired_summary("web", "apps", 3)];
    snap.actual = summaries(vec![actual(
        "web",
        1,
        ActualLrpState::Running,
        "cell-1",
        NOW,
    )]);
    let out = converge(&snap, NOW, &Policy::default());
    let indices: Vec<i64> = out.start_missing.iter().map(|m| m.index).collect();
    assert_eq!(indices, vec![0, 2]);
    assert!(out
        .start_missing
        .iter()
        .all(|m| m.process_guid == "web" && m.domain == "apps"));
    assert!(out.retire_extra.is_empty());
}

#[test]
fn retires_indices_at_or_above_instances_and_orphans() {
    let mut snap = snapshot_with_cells(&["cell-1"]);
    snap.desired = vec![desired_summary("web", "apps", 2)];
    snap.actual = summaries(vec![
        actual("web", 0, ActualLrpState::Running, "cell-1", NOW),
        actual("web", 1, ActualLrpState::Running, "cell-1", NOW),
        actual("web", 2, ActualLrpState::Running, "cell-1", NOW),
        actual("gone", 0, ActualLrpState::Unclaimed, "", NOW),
    ]);
    let out = converge(&snap, NOW, &Policy::default());
    assert_eq!(
        keys(&out.retire_extra),
        vec![("gone".to_string(), 0), ("web".to_string(), 2)]
    );
    assert!(out.start_missing.is_empty());
}

#[test]
fn unclaims_instances_of_vanished_cells() {
    let mut snap = snapshot_with_cells(&["alive"]);
    snap.desired = vec![desired_summary("web", "apps", 3)];
    snap.actual = summaries(vec![
        actual("web", 0, ActualLrpState::Running, "alive", NOW),
        actual("web", 1, ActualLrpState::Running, "dead", NOW),
        actual("web", 2, ActualLrpState::Claimed, "dead", NOW),
    ]);
    let out = converge(&snap, NOW, &Policy::default());
    assert_eq!(
        keys(&out.unclaim_lost),
        vec![("web".to_string(), 1), ("web".to_string(), 2)]
    );
}

#[test]
fn reauctions_instances_unclaimed_too_long() {
    let policy = Policy::default();
    let timeout = nanos(policy.unclaimed_timeout);
    let mut snap = snapshot_with_cells(&[]);
    snap.desired = vec![desired_summary("web", "apps", 2)];
    snap.actual = summaries(vec![
        actual("web", 0, ActualLrpState::Unclaimed, "", NOW - timeout),
        actual("web", 1, ActualLrpState::Unclaimed, "", NOW - timeout + 1),
    ]);
    let out = converge(&snap, NOW, &policy);
    assert_eq!(keys(&out.reauction_stuck), vec![("web".to_string(), 0)]);
    assert!(out.wants_auction());
}

#[test]
fn first_three_crashes_restart_at_once() {
    let policy = Policy::default();
    for count in 1..=3 {
        assert_eq!(policy.crash.backoff(count), Duration::ZERO, "crash {count}");
        assert_eq!(
            policy.crash.decision(count, NOW, NOW),
            CrashDecision::RestartNow,
            "crash {count}"
        );
    }
}

#[test]
fn later_crashes_wait_doubling_up_to_sixteen_minutes() {
    let policy = Policy::default();
    let min = 60;
    let expected = [
        (4, 30),
        (5, min),
        (6, 2 * min),
        (7, 4 * min),
        (8, 8 * min),
        (9, 16 * min),
        (10, 16 * min),
        (50, 16 * min),
        (199, 16 * min),
    ];
    for (count, secs) in expected {
        assert_eq!(
            policy.crash.backoff(count),
            Duration::from_secs(secs),
            "crash {count}"
        );
        let since = NOW - secs as i64 * SEC;
        assert_eq!(
            policy.crash.decision(count, since + 1, NOW),
            CrashDecision::WaitUntil(NOW + 1),
            "crash {count}, one nanosecond early"
        );
        assert_eq!(
            policy.crash.decision(count, since, NOW),
            CrashDecision::RestartNow,
            "crash {count}, on time"
        );
    }
}

#[test]
fn two_hundredth_crash_gives_up() {
    let policy = Policy::default();
    assert_eq!(policy.crash.decision(200, 0, NOW), CrashDecision::GiveUp);
    assert_eq!(policy.crash.decision(201, 0, NOW), CrashDecision::GiveUp);
    let mut snap = snapshot_with_cells(&["cell-1"]);
    snap.desired = vec![desired_summary("web", "apps", 1)];
    snap.actual = summaries(vec![crashed(200, 0)]);
    let out = converge(&snap, NOW, &policy);
    assert_eq!(keys(&out.gave_up), vec![("web".to_string(), 0)]);
    assert!(out.restart_crashed.is_empty());
    assert!(
        out.start_missing.is_empty(),
        "the index is taken, not missing"
    );
}

#[test]
fn crashed_instances_restart_when_due_and_say_when_next() {
    let policy = Policy::default();
    let mut snap = snapshot_with_cells(&["cell-1"]);
    snap.desired = vec![desired_summary("web", "apps", 3)];
    let mut due = crashed(4, NOW - 30 * SEC);
    due.index = 0;
    let mut waiting = crashed(5, NOW - 10 * SEC);
    waiting.index = 1;
    let mut later = crashed(9, NOW);
    later.index = 2;
    snap.actual = summaries(vec![due, waiting, later]);
    let out = converge(&snap, NOW, &policy);
    assert_eq!(keys(&out.restart_crashed), vec![("web".to_string(), 0)]);
    assert_eq!(out.next_restart_at, Some(NOW + 50 * SEC));
}

#[test]
fn crash_policy_durations_shrink_for_tests() {
    let policy = Policy {
        crash: CrashPolicy {
            backoff_min: Duration::from_millis(10),
            backoff_max: Duration::from_millis(40),
            ..CrashPolicy::default()
        },
        ..Policy::default()
    };
    assert_eq!(policy.crash.backoff(4), Duration::from_millis(10));
    assert_eq!(policy.crash.backoff(6), Duration::from_millis(40));
    assert_eq!(policy.crash.backoff(7), Duration::from_millis(40));
}

#[test]
fn crash_count_resets_after_a_long_run() {
    // The rule the cell applies, from the one crash policy in models.
    use lattice_models::crash::crash_count_after_crash;
    assert_eq!(crash_count_after_crash(0, Duration::from_secs(1)), 1);
    assert_eq!(crash_count_after_crash(7, Duration::from_secs(299)), 8);
    assert_eq!(crash_count_after_crash(7, Duration::from_secs(300)), 1);
}

// --- tasks -------------------------------------------------------------------

#[test]
fn fails_tasks_of_vanished_cells_and_never_kicks_them() {
    let mut snap = snapshot_with_cells(&["alive"]);
    snap.tasks = vec![
        task("on-alive", TaskState::Running, "alive", 0),
        task("running-lost", TaskState::Running, "dead", 0),
        task("claimed-lost", TaskState::Claimed, "dead", 0),
    ];
    let out = converge(&snap, NOW, &Policy::default());
    let lost: Vec<&str> = out
        .fail_lost_tasks
        .iter()
        .map(|t| t.task_guid.as_str())
        .collect();
    assert_eq!(lost, vec!["running-lost", "claimed-lost"]);
    assert!(out
        .fail_lost_tasks
        .iter()
        .all(|t| t.reason == CELL_DISAPPEARED_REASON && t.cell_id == "dead"));
    assert!(out.kick_pending.is_empty());
}

#[test]
fn kicks_tasks_pending_too_long() {
    let policy = Policy::default();
    let kick = nanos(policy.pending_kick_after);
    let mut snap = snapshot_with_cells(&[]);
    snap.tasks = vec![
        task("old", TaskState::Pending, "", NOW - kick),
        task("new", TaskState::Pending, "", NOW - kick + 1),
    ];
    let out = converge(&snap, NOW, &policy);
    assert_eq!(out.kick_pending, vec!["old".to_string()]);
}

#[test]
fn resolves_completed_tasks_with_a_callback() {
    let policy = Policy::default();
    let mut with = task("with", TaskState::Completed, "c", NOW);
    with.completion_callback_url = "http://example.test/done".into();
    let without = task("without", TaskState::Completed, "c", NOW);
    let mut snap = snapshot_with_cells(&[]);
    snap.tasks = vec![with, without];
    let out = converge(&snap, NOW, &policy);
    assert_eq!(out.resolve, vec!["with".to_string()]);
    assert!(out.expire.is_empty());
}

#[test]
fn retakes_tasks_resolving_too_long() {
    let policy = Policy::default();
    let timeout = nanos(policy.resolving_timeout);
    let mut stuck = task("stuck", TaskState::Resolving, "c", NOW - timeout);
    stuck.completion_callback_url = "http://example.test/done".into();
    let mut busy = task("busy", TaskState::Resolving, "c", NOW - timeout + 1);
    busy.completion_callback_url = "http://example.test/done".into();
    let mut snap = snapshot_with_cells(&[]);
    snap.tasks = vec![stuck, busy];
    let out = converge(&snap, NOW, &policy);
    assert_eq!(out.resolve, vec!["stuck".to_string()]);
}

#[test]
fn expires_tasks_completed_too_long_ago() {
    let policy = Policy {
        completed_ttl: Duration::from_secs(120),
        resolving_timeout: Duration::from_secs(60),
        ..Policy::default()
    };
    let mut snap = snapshot_with_cells(&[]);
    let mut old_with_callback = task("old-cb", TaskState::Completed, "c", NOW - 120 * SEC);
    old_with_callback.completion_callback_url = "http://example.test/done".into();
    let mut resolving_now = task("resolving", TaskState::Resolving, "c", NOW - 121 * SEC);
    // Its resolver took it a second ago: a callback is in flight.
    resolving_now.updated_at = NOW - SEC;
    snap.tasks = vec![
        task("old", TaskState::Completed, "c", NOW - 120 * SEC),
        task("young", TaskState::Completed, "c", NOW - 119 * SEC),
        old_with_callback,
        resolving_now,
    ];
    let out = converge(&snap, NOW, &policy);
    assert_eq!(out.expire, vec!["old".to_string(), "old-cb".to_string()]);
    assert!(out.resolve.is_empty());
}

// --- properties --------------------------------------------------------------

const GUIDS: [&str; 4] = ["p0", "p1", "p2", "p3"];
const CELLS: [&str; 4] = ["c0", "c1", "c2", "c3"];
const MAX_INDEX: i64 = 6;

fn state() -> impl Strategy<Value = ActualLrpState> {
    prop::sample::select(ActualLrpState::ALL.to_vec())
}

fn task_state() -> impl Strategy<Value = TaskState> {
    prop::sample::select(TaskState::ALL.to_vec())
}

/// Timestamps within ten minutes before `NOW`, so every age threshold of a
/// shrunken policy falls on both sides.
fn timestamp() -> impl Strategy<Value = i64> {
    (0..600 * SEC).prop_map(|age| NOW - age)
}

/// What the store holds: whole records, which a [`Snapshot`] summarises.
#[derive(Debug, Clone)]
struct World {
    desired: Vec<DesiredLrp>,
    actual: Vec<ActualLrp>,
    tasks: Vec<Task>,
    cells: Vec<CellPresence>,
}

impl World {
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            desired: self.desired.iter().map(Into::into).collect(),
            actual: self.actual.iter().map(Into::into).collect(),
            tasks: self.tasks.clone(),
            cells: self.cells.clone(),
        }
    }
}

fn world() -> impl Strategy<Value = World> {
    let desired = prop::collection::btree_map(prop::sample::select(GUIDS.to_vec()), 0..5i64, 0..4);
    let actuals = prop::collection::btree_map(
        (prop::sample::select(GUIDS.to_vec()), 0..MAX_INDEX),
        (
            state(),
            prop::sample::select(CELLS.to_vec()),
            0..205i64,
            timestamp(),
        ),
        0..16,
    );
    let tasks = prop::collection::vec(
        (
            task_state(),
            prop::sample::select(CELLS.to_vec()),
            timestamp(),
            any::<bool>(),
        ),
        0..8,
    );
    let live = prop::sample::subsequence(CELLS.to_vec(), 0..=CELLS.len());
    (desired, actuals, tasks, live).prop_map(|(desired, actuals, tasks, live)| World {
        desired: desired
            .into_iter()
            .map(|(guid, n)| suite::desired_lrp(guid, "apps", n))
            .collect(),
        actual: actuals
            .into_iter()
            .map(|((guid, index), (state, cell, crash_count, since))| {
                let mut lrp = actual(guid, index, state, cell, since);
                if state == ActualLrpState::Unclaimed {
                    lrp.cell_id.clear();
                }
                lrp.crash_count = crash_count;
                lrp
            })
            .collect(),
        tasks: tasks
            .into_iter()
            .enumerate()
            .map(|(i, (state, cell, at, callback))| {
                let cell = if state == TaskState::Pending {
                    ""
                } else {
                    cell
                };
                let mut t = task(&format!("t{i}"), state, cell, at);
                if callback {
                    t.completion_callback_url = "http://example.test/done".into();
                }
                t
            })
            .collect(),
        cells: live.into_iter().map(suite::cell).collect(),
    })
}

fn policy() -> Policy {
    Policy {
        crash: CrashPolicy {
            backoff_min: Duration::from_secs(30),
            backoff_max: Duration::from_secs(240),
            ..CrashPolicy::default()
        },
        ..Policy::default()
    }
}

/// What the store would hold after `apply` performed every action.
fn apply_to_world(world: &World, out: &Convergence, now: i64) -> World {
    let mut next = world.clone();
    let retired: HashSet<(String, i64)> = keys(&out.retire_extra).into_iter().collect();
    next.actual
        .retain(|a| !retired.contains(&(a.process_guid.clone(), a.index)));
    let transitions = out
        .restart_crashed
        .iter()
        .map(|a| (a, ActualLrpEvent::Restart))
        .chain(
            out.unclaim_lost
                .iter()
                .map(|a| (a, ActualLrpEvent::Unclaim)),
        );
    for (decided, event) in transitions {
        let stored = next
            .actual
            .iter_mut()
            .find(|a| a.process_guid == decided.process_guid && a.index == decided.index)
            .expect("a decision is made on a record of the snapshot");
        stored
            .apply(event, now)
            .expect("the decision only names legal transitions");
    }
    for missing in &out.start_missing {
        next.actual.push(ActualLrp::unclaimed(
            &missing.process_guid,
            &missing.domain,
            missing.index,
            now,
        ));
    }
    for lost in &out.fail_lost_tasks {
        let stored = next
            .tasks
            .iter_mut()
            .find(|t| t.task_guid == lost.task_guid)
            .expect("a decision is made on a record of the snapshot");
        stored
            .fail(lost.reason.clone(), now)
            .expect("a lost task is claimed or running, so it can complete");
    }
    next.tasks.retain(|t| !out.expire.contains(&t.task_guid));
    next
}

proptest! {
    #[test]
    fn never_more_starts_than_instances(world in world()) {
        let snap = world.snapshot();
        let out = converge(&snap, NOW, &policy());
        for desired in &snap.desired {
            let starts = out.start_missing.iter().filter(|m| m.process_guid == desired.process_guid).count();
            prop_assert!(starts as i64 <= desired.instances);
        }
        let mut seen = HashSet::new();
        for m in &out.start_missing {
            prop_assert!(seen.insert((m.process_guid.clone(), m.index)), "started twice: {m:?}");
            prop_assert!(!snap.actual.iter().any(|a| a.process_guid == m.process_guid && a.index == m.index));
        }
    }

    #[test]
    fn never_retires_a_wanted_index(world in world()) {
        let snap = world.snapshot();
        let out = converge(&snap, NOW, &policy());
        for retired in &out.retire_extra {
            let wanted = snap.desired.iter().any(|d| d.process_guid == retired.process_guid && retired.index < d.instances);
            prop_assert!(!wanted, "retired a wanted instance: {retired:?}");
        }
    }

    #[test]
    fn never_starts_and_retires_one_index(world in world()) {
        let snap = world.snapshot();
        let out = converge(&snap, NOW, &policy());
        let retired: HashSet<(String, i64)> = keys(&out.retire_extra).into_iter().collect();
        for m in &out.start_missing {
            prop_assert!(!retired.contains(&(m.process_guid.clone(), m.index)));
        }
        // Nor does a retired instance get restarted, unclaimed or re-auctioned.
        for other in [&out.restart_crashed, &out.unclaim_lost, &out.reauction_stuck, &out.gave_up] {
            for lrp in other {
                prop_assert!(!retired.contains(&(lrp.process_guid.clone(), lrp.index)));
            }
        }
    }

    #[test]
    fn lost_tasks_never_run_again(world in world()) {
        let snap = world.snapshot();
        let out = converge(&snap, NOW, &policy());
        let kicked: HashSet<&String> = out.kick_pending.iter().collect();
        for lost in &out.fail_lost_tasks {
            prop_assert!(!kicked.contains(&lost.task_guid));
        }
        for guid in &out.kick_pending {
            let task = snap.tasks.iter().find(|t| &t.task_guid == guid).expect("kicked tasks come from the snapshot");
            prop_assert_eq!(task.state, TaskState::Pending);
        }
        // Every task lands in at most one bucket.
        let mut seen = HashSet::new();
        let all = out.fail_lost_tasks.iter().map(|l| &l.task_guid)
            .chain(&out.kick_pending).chain(&out.resolve).chain(&out.expire);
        for guid in all {
            prop_assert!(seen.insert(guid), "task {guid} in two buckets");
        }
    }

    #[test]
    fn converging_after_applying_is_a_fixed_point(world in world()) {
        let policy = policy();
        let out = converge(&world.snapshot(), NOW, &policy);
        let next = apply_to_world(&world, &out, NOW);
        let again = converge(&next.snapshot(), NOW, &policy);
        prop_assert!(again.start_missing.is_empty(), "{:?}", again.start_missing);
        prop_assert!(again.retire_extra.is_empty(), "{:?}", again.retire_extra);
        prop_assert!(again.unclaim_lost.is_empty(), "{:?}", again.unclaim_lost);
        prop_assert!(again.restart_crashed.is_empty(), "{:?}", again.restart_crashed);
        prop_assert!(again.fail_lost_tasks.is_empty());
        prop_assert!(again.expire.is_empty());
        for desired in &next.desired {
            let count = next.actual.iter().filter(|a| a.process_guid == desired.process_guid).count();
            prop_assert_eq!(count as i64, desired.instances);
        }
    }
}
