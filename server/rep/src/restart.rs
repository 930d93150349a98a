//! What a restarted rep does with what its previous run left: a pure
//! decision over a snapshot (the cell's tasks, actual LRPs and containers),
//! applied by [`Rep::reconcile`](crate::Rep::reconcile).
//!
//! # Rules
//! - A task CLAIMED or RUNNING here has an unknown outcome: it is completed
//!   failed (a task runs at most once), and its container destroyed.
//! - A container is adopted when it still runs the instance the store says
//!   is RUNNING here: same process guid, index and instance guid, the
//!   container running and at least one process of the previous run alive.
//!   At most one container per instance is adopted.
//! - Every other container is destroyed; every other instance CLAIMED or
//!   RUNNING here goes back to the auction.

use std::collections::{BTreeMap, HashSet};

use lattice_garden::ContainerInfo;
use lattice_models::{ActualLrp, ActualLrpState, Task, TaskState};

use crate::{INDEX_PROPERTY, INSTANCE_GUID_PROPERTY, PROCESS_GUID_PROPERTY};

/// An instance of this cell and the container that still runs it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Adoption {
    pub lrp: ActualLrp,
    pub container: ContainerInfo,
}

/// What to do after a restart; see the module's rules.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct RestartPlan {
    /// Guids of tasks to complete failed.
    pub fail_tasks: Vec<String>,
    /// Instances to keep, with their containers.
    pub adopt: Vec<Adoption>,
    /// Instances to hand back to the auction.
    pub give_back: Vec<ActualLrp>,
    /// Handles of containers to destroy.
    pub destroy: Vec<String>,
}

/// The instance a container was made for, from its labels: process guid,
/// instance guid, and the index when it has one (a container made as a
/// spare has none: the instance that took it is found by its guid).
fn instance_of(container: &ContainerInfo) -> Option<(&str, &str, Option<i64>)> {
    let label = |key: &str| container.properties.get(key).map(String::as_str);
    let process_guid = label(PROCESS_GUID_PROPERTY)?;
    let instance_guid = label(INSTANCE_GUID_PROPERTY)?;
    let index = match label(INDEX_PROPERTY) {
        Some(index) => Some(index.parse().ok()?),
        None => None,
    };
    Some((process_guid, instance_guid, index))
}

/// Decides, for the cell `cell_id`, from its tasks, actual LRPs and
/// containers (as the store and Garden list them after a restart).
pub(crate) fn plan(
    cell_id: &str,
    tasks: &[Task],
    lrps: &[ActualLrp],
    containers: Vec<ContainerInfo>,
) -> RestartPlan {
    let mut plan = RestartPlan {
        fail_tasks: tasks
            .iter()
            .filter(|t| t.cell_id == cell_id)
            .filter(|t| matches!(t.state, TaskState::Claimed | TaskState::Running))
            .map(|t| t.task_guid.clone())
            .collect(),
        ..Default::default()
    };
    let running: BTreeMap<(&str, &str), &ActualLrp> = lrps
        .iter()
        .filter(|l| l.cell_id == cell_id && l.state == ActualLrpState::Running)
        .map(|l| ((l.process_guid.as_str(), l.instance_guid.as_str()), l))
        .collect();
    let mut adopted: HashSet<(String, i64)> = HashSet::new();
    for container in containers {
        let lrp = instance_of(&container).and_then(|(process_guid, instance_guid, index)| {
            running
                .get(&(process_guid, instance_guid))
                .filter(|l| index.is_none_or(|index| index == l.index))
        });
        let alive = container.running && !container.processes.is_empty();
        match lrp {
            Some(lrp) if alive && adopted.insert((lrp.process_guid.clone(), lrp.index)) => {
                plan.adopt.push(Adoption {
                    lrp: (*lrp).clone(),
                    container,
                });
            }
            _ => plan.destroy.push(container.handle),
        }
    }
    plan.give_back = lrps
        .iter()
        .filter(|l| l.cell_id == cell_id)
        .filter(|l| matches!(l.state, ActualLrpState::Claimed | ActualLrpState::Running))
        .filter(|l| !adopted.contains(&(l.process_guid.clone(), l.index)))
        .cloned()
        .collect();
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    const CELL: &str = "cell-1";

    fn lrp(
        process_guid: &str,
        index: i64,
        instance_guid: &str,
        state: ActualLrpState,
    ) -> ActualLrp {
        ActualLrp {
            instance_guid: instance_guid.into(),
            cell_id: CELL.into(),
            state,
            ..ActualLrp::unclaimed(process_guid, "tests", index, 1)
        }
    }

    fn container(handle: &str, labels: Option<(&str, i64, &str)>, alive: bool) -> ContainerInfo {
        let mut properties = BTreeMap::new();
        if let Some((process_guid, index, instance_guid)) = labels {
            properties.insert(PROCESS_GUID_PROPERTY.to_string(), process_guid.to_string());
            properties.insert(INDEX_PROPERTY.to_string(), index.to_string());
            properties.insert(
                INSTANCE_GUID_PROPERTY.to_string(),
                instance_guid.to_string(),
            );
        }
        ContainerInfo {
            handle: handle.into(),
            host_ip: "127.0.0.1".into(),
            container_ip: String::new(),
            ports: Vec::new(),
            properties,
            running: true,
            oom_killed: false,
            image: String::new(),
            processes: if alive {
                vec!["exec-1".into()]
            } else {
                Vec::new()
            },
        }
    }

    fn handles(adoptions: &[Adoption]) -> Vec<&str> {
        adoptions
            .iter()
            .map(|a| a.container.handle.as_str())
            .collect()
    }

    #[test]
    fn a_live_container_of_a_running_instance_is_adopted() {
        let lrps = [lrp("web", 0, "i-0", ActualLrpState::Running)];
        let plan = plan(
            CELL,
            &[],
            &lrps,
            vec![container("c0", Some(("web", 0, "i-0")), true)],
        );
        assert_eq!(handles(&plan.adopt), ["c0"]);
        assert!(plan.destroy.is_empty());
        assert!(plan.give_back.is_empty());
    }

    #[test]
    fn a_container_made_as_a_spare_is_adopted_by_its_instance_guid() {
        let lrps = [lrp("web", 4, "i-4", ActualLrpState::Running)];
        let spare = |handle, instance_guid: &str| {
            let mut container = container(handle, None, true);
            container
                .properties
                .insert(PROCESS_GUID_PROPERTY.to_string(), "web".to_string());
            container.properties.insert(
                INSTANCE_GUID_PROPERTY.to_string(),
                instance_guid.to_string(),
            );
            container
        };
        let mut untaken = spare("c-spare", "i-spare");
        untaken.processes.clear();
        let plan = plan(CELL, &[], &lrps, vec![spare("c4", "i-4"), untaken]);
        assert_eq!(handles(&plan.adopt), ["c4"]);
        assert_eq!(plan.adopt[0].lrp.index, 4);
        assert_eq!(plan.destroy, ["c-spare"]);
        assert!(plan.give_back.is_empty());
    }

    #[test]
    fn what_does_not_match_is_destroyed_and_given_back() {
        let lrps = [
            // Its process died while the cell was down.
            lrp("web", 0, "i-0", ActualLrpState::Running),
            // A newer instance guid: the container is of an older one.
            lrp("web", 1, "i-1-new", ActualLrpState::Running),
            // Still starting: no health seen, so not adopted.
            lrp("web", 2, "i-2", ActualLrpState::Claimed),
            // Another cell's.
            ActualLrp {
                cell_id: "cell-2".into(),
                ..lrp("web", 3, "i-3", ActualLrpState::Running)
            },
        ];
        let mut stopped = container("c-stopped", Some(("web", 0, "i-0")), true);
        stopped.running = false;
        let containers = vec![
            container("c0", Some(("web", 0, "i-0")), false),
            stopped,
            container("c1", Some(("web", 1, "i-1-old")), true),
            container("c2", Some(("web", 2, "i-2")), true),
            container("c3", Some(("web", 3, "i-3")), true),
            container("task", None, true),
        ];
        let plan = plan(CELL, &[], &lrps, containers);
        assert!(plan.adopt.is_empty());
        assert_eq!(plan.destroy, ["c0", "c-stopped", "c1", "c2", "c3", "task"]);
        let given_back: Vec<i64> = plan.give_back.iter().map(|l| l.index).collect();
        assert_eq!(given_back, [0, 1, 2]);
    }

    #[test]
    fn one_container_per_instance_is_adopted() {
        let lrps = [lrp("web", 0, "i-0", ActualLrpState::Running)];
        let containers = vec![
            container("a", Some(("web", 0, "i-0")), true),
            container("b", Some(("web", 0, "i-0")), true),
        ];
        let plan = plan(CELL, &[], &lrps, containers);
        assert_eq!(handles(&plan.adopt), ["a"]);
        assert_eq!(plan.destroy, ["b"]);
        assert!(plan.give_back.is_empty());
    }

    #[test]
    fn claimed_and_running_tasks_fail_others_stay() {
        let task = |guid: &str, state: TaskState| -> Task {
            serde_json::from_value(serde_json::json!({
                "task_guid": guid, "domain": "tests", "rootfs": "docker:///busybox",
                "action": {"run": {"path": "/bin/true"}},
                "cpu_weight": 0, "disk_mb": 0, "memory_mb": 0, "privileged": false,
                "log_guid": "", "log_source": "", "result_file": "",
                "completion_callback_url": "", "annotation": "",
                "state": state, "cell_id": CELL, "failed": false,
                "failure_reason": "", "result": "", "created_at": 1, "updated_at": 1,
            }))
            .expect("a valid task")
        };
        let tasks = [
            task("claimed", TaskState::Claimed),
            task("running", TaskState::Running),
            task("done", TaskState::Completed),
        ];
        let plan = plan(CELL, &tasks, &[], Vec::new());
        assert_eq!(plan.fail_tasks, ["claimed", "running"]);
    }
}
