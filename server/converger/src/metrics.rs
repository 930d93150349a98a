//! The converger's figures for `/metrics`: what the cluster holds, counted
//! on each pass's snapshot (so only the active converger's brain reports
//! them), and how long a pass takes.

use std::time::Duration;

use lattice_models::{ActualLrpState, TaskState};

use crate::Snapshot;

/// What a snapshot holds, counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub desired_lrps: u64,
    /// The sum of the desired LRPs' `instances`.
    pub desired_instances: u64,
    /// Actual LRPs, in the order of [`ActualLrpState::ALL`].
    pub instances: [u64; 4],
    /// Tasks, in the order of [`TaskState::ALL`].
    pub tasks: [u64; 5],
}

/// Counts `snapshot`.
pub fn counts(snapshot: &Snapshot) -> Counts {
    let mut counts = Counts {
        desired_lrps: snapshot.desired.len() as u64,
        desired_instances: snapshot
            .desired
            .iter()
            .map(|d| u64::try_from(d.instances).unwrap_or(0))
            .sum(),
        ..Counts::default()
    };
    for actual in &snapshot.actual {
        if let Some(i) = ActualLrpState::ALL.iter().position(|s| *s == actual.state) {
            counts.instances[i] += 1;
        }
    }
    for task in &snapshot.tasks {
        if let Some(i) = TaskState::ALL.iter().position(|s| *s == task.state) {
            counts.tasks[i] += 1;
        }
    }
    counts
}

/// Sets the gauges of what the cluster holds; every state is set, zeros
/// included, so that a state that emptied reads 0 rather than its last
/// value.
pub fn record_snapshot(snapshot: &Snapshot) {
    let counts = counts(snapshot);
    metrics::gauge!("lattice_desired_lrps").set(counts.desired_lrps as f64);
    metrics::gauge!("lattice_lrp_instances_desired").set(counts.desired_instances as f64);
    for (state, n) in ActualLrpState::ALL.iter().zip(counts.instances) {
        metrics::gauge!("lattice_lrp_instances", "state" => state.as_str()).set(n as f64);
    }
    for (state, n) in TaskState::ALL.iter().zip(counts.tasks) {
        metrics::gauge!("lattice_tasks", "state" => state.as_str()).set(n as f64);
    }
}

/// Records one pass (snapshot, decisions, writes).
pub fn record_pass(elapsed: Duration) {
    metrics::counter!("lattice_converge_passes_total").increment(1);
    metrics::histogram!("lattice_converge_duration_seconds").record(elapsed.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use lattice_bbs::suite;

    use super::*;

    #[test]
    fn a_snapshot_is_counted_by_state() {
        let mut crashed = suite::actual_lrp("web", "d", 1);
        crashed.state = ActualLrpState::Crashed;
        let mut running = suite::task("t2", "d", 2);
        running.state = TaskState::Running;
        let snapshot = Snapshot {
            desired: vec![
                (&suite::desired_lrp("web", "d", 3)).into(),
                (&suite::desired_lrp("api", "d", 2)).into(),
            ],
            actual: vec![
                (&suite::actual_lrp("web", "d", 0)).into(),
                (&crashed).into(),
            ],
            tasks: vec![suite::task("t1", "d", 1), running],
            cells: Vec::new(),
        };
        let counts = counts(&snapshot);
        assert_eq!(counts.desired_lrps, 2);
        assert_eq!(counts.desired_instances, 5);
        let unclaimed = suite::actual_lrp("web", "d", 0).state;
        let at = |state| {
            ActualLrpState::ALL
                .iter()
                .position(|s| *s == state)
                .unwrap()
        };
        assert_eq!(counts.instances[at(unclaimed)], 1);
        assert_eq!(counts.instances[at(ActualLrpState::Crashed)], 1);
        assert_eq!(counts.instances.iter().sum::<u64>(), 2);
        let task_at = |state| TaskState::ALL.iter().position(|s| *s == state).unwrap();
        assert_eq!(counts.tasks[task_at(TaskState::Running)], 1);
        assert_eq!(counts.tasks.iter().sum::<u64>(), 2);
    }
}
