//! Which work goes to the next auction: a pure function of what the store
//! holds and what was sent to cells already.

use std::collections::{BTreeMap, HashMap};

use lattice_models::auction::{AuctionRequest, LrpKey, LrpStartRequest, Resource, TaskStart};
use lattice_models::{ActualLrp, ActualLrpState, DesiredLrp, Task, TaskState};

/// A piece of work sent to a cell, remembered so that it is not sent again
/// before the cell had time to claim it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SentKey {
    Task(String),
    Lrp(LrpKey),
}

/// The auction request for `tasks` that are PENDING and `actual` instances
/// that are UNCLAIMED, leaving out what `sent` says is on its way to a cell
/// and instances whose desired LRP is gone (the converger retires those).
/// Tasks keep the store's order (oldest first); LRPs come by process guid,
/// indices in the order given.
pub fn select(
    tasks: &[Task],
    actual: &[ActualLrp],
    desired: &[DesiredLrp],
    sent: impl Fn(&SentKey) -> bool,
) -> AuctionRequest {
    let tasks = tasks
        .iter()
        .filter(|t| t.state == TaskState::Pending)
        .filter(|t| !sent(&SentKey::Task(t.task_guid.clone())))
        .map(|t| TaskStart {
            task_guid: t.task_guid.clone(),
            domain: t.domain.clone(),
            resource: Resource::for_container(t.memory_mb, t.disk_mb),
            rootfs: t.rootfs.clone(),
        })
        .collect();
    let desired: HashMap<&str, &DesiredLrp> = desired
        .iter()
        .map(|d| (d.process_guid.as_str(), d))
        .collect();
    let mut by_process: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for instance in actual {
        let waiting = instance.state == ActualLrpState::Unclaimed
            && desired.contains_key(instance.process_guid.as_str())
            && !sent(&SentKey::Lrp(LrpKey::new(
                instance.process_guid.clone(),
                instance.index,
            )));
        if waiting {
            by_process
                .entry(instance.process_guid.as_str())
                .or_default()
                .push(instance.index);
        }
    }
    let lrps = by_process
        .into_iter()
        .map(|(guid, indices)| {
            let d = desired[guid];
            LrpStartRequest {
                process_guid: guid.to_string(),
                domain: d.domain.clone(),
                indices,
                resource: Resource::for_container(d.memory_mb, d.disk_mb),
                rootfs: d.rootfs.clone(),
            }
        })
        .collect();
    AuctionRequest { lrps, tasks }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use lattice_models::ActualLrpEvent;

    use super::*;

    fn task(guid: &str) -> Task {
        lattice_bbs::suite::task(guid, "d", 1)
    }

    fn desired(guid: &str) -> DesiredLrp {
        lattice_bbs::suite::desired_lrp(guid, "d", 3)
    }

    fn unclaimed(guid: &str, index: i64) -> ActualLrp {
        ActualLrp::unclaimed(guid, "d", index, 1)
    }

    fn nothing_sent(_: &SentKey) -> bool {
        false
    }

    #[test]
    fn pending_tasks_and_unclaimed_instances_of_desired_lrps() {
        let mut claimed = unclaimed("web", 1);
        claimed
            .apply(ActualLrpEvent::Claim, 2)
            .expect("unclaimed instances can be claimed");
        let mut running_task = task("t-running");
        running_task.state = TaskState::Running;
        let request = select(
            &[task("t1"), running_task, task("t2")],
            &[
                unclaimed("web", 2),
                claimed,
                unclaimed("web", 0),
                unclaimed("api", 0),
                unclaimed("gone", 0),
            ],
            &[desired("web"), desired("api")],
            nothing_sent,
        );
        let task_guids: Vec<_> = request.tasks.iter().map(|t| t.task_guid.as_str()).collect();
        assert_eq!(task_guids, ["t1", "t2"]);
        assert_eq!(request.tasks[0].resource, Resource::for_container(128, 64));
        let lrps: Vec<_> = request
            .lrps
            .iter()
            .map(|l| (l.process_guid.as_str(), l.indices.clone()))
            .collect();
        assert_eq!(lrps, [("api", vec![0]), ("web", vec![2, 0])]);
        assert_eq!(request.lrps[1].resource, Resource::for_container(128, 64));
    }

    #[test]
    fn work_on_its_way_to_a_cell_is_left_out() {
        let sent: HashSet<SentKey> = [
            SentKey::Task("t1".into()),
            SentKey::Lrp(LrpKey::new("web", 0)),
        ]
        .into();
        let request = select(
            &[task("t1"), task("t2")],
            &[unclaimed("web", 0), unclaimed("web", 1)],
            &[desired("web")],
            |key| sent.contains(key),
        );
        assert_eq!(request.tasks.len(), 1);
        assert_eq!(request.tasks[0].task_guid, "t2");
        assert_eq!(request.lrps.len(), 1);
        assert_eq!(request.lrps[0].indices, vec![1]);
    }

    #[test]
    fn nothing_waiting_is_an_empty_request() {
        let request = select(&[], &[unclaimed("web", 0)], &[], nothing_sent);
        assert_eq!(request, AuctionRequest::default());
    }
}
