//! Safety rules of the auction, checked on random clusters and requests:
//! something bad never happens, whatever the input.

use std::collections::{BTreeMap, HashMap};

use lattice_auctioneer::auction;
use lattice_models::auction::{
    AuctionRequest, AuctionResults, CellState, LrpKey, LrpStartRequest, PlacementError, Resource,
    TaskStart,
};
use proptest::prelude::*;

const PROCESSES: usize = 4;

/// Every process has one size, so "room for another instance" is well defined.
fn process_need(process: usize) -> Resource {
    Resource::for_container(100 + 150 * process as i64, 50 * process as i64)
}

fn process_guid(process: usize) -> String {
    format!("p{process}")
}

/// A limit, or 0 ("unlimited") now and then.
fn limit(max: i64) -> impl Strategy<Value = i64> {
    prop_oneof![1 => Just(0), 6 => 1..=max]
}

fn arb_cell(id: usize) -> impl Strategy<Value = CellState> {
    (
        limit(3000),
        limit(2000),
        limit(12),
        0.0..=1.0f64,
        prop_oneof![Just(""), Just("z1"), Just("z2")],
        prop::bool::weighted(0.15),
        prop::collection::vec((0..PROCESSES, 0..20i64), 0..4),
    )
        .prop_map(
            move |(memory, disk, containers, free, zone, evacuating, running)| {
                let total = Resource::new(memory, disk, containers);
                let available = Resource::new(
                    (memory as f64 * free) as i64,
                    (disk as f64 * free) as i64,
                    (containers as f64 * free) as i64,
                );
                CellState {
                    cell_id: format!("cell-{id:02}"),
                    zone: zone.to_string(),
                    total,
                    available,
                    lrps: running
                        .into_iter()
                        .map(|(p, i)| LrpKey::new(process_guid(p), i))
                        .collect(),
                    tasks: vec![],
                    evacuating,
                }
            },
        )
}

fn arb_cells() -> impl Strategy<Value = Vec<CellState>> {
    (0..8usize).prop_flat_map(|n| (0..n).map(arb_cell).collect::<Vec<_>>())
}

fn arb_request() -> impl Strategy<Value = AuctionRequest> {
    (
        prop::collection::vec((0..PROCESSES, prop::collection::vec(0..12i64, 1..6)), 0..5),
        prop::collection::vec(0..PROCESSES, 0..8),
    )
        .prop_map(|(starts, tasks)| AuctionRequest {
            lrps: starts
                .into_iter()
                .map(|(p, indices)| LrpStartRequest {
                    process_guid: process_guid(p),
                    domain: "d".into(),
                    indices,
                    resource: process_need(p),
                    rootfs: "docker:///app".into(),
                })
                .collect(),
            tasks: tasks
                .into_iter()
                .enumerate()
                .map(|(n, p)| TaskStart {
                    task_guid: format!("t{n}"),
                    domain: "d".into(),
                    resource: process_need(p),
                    rootfs: "docker:///task".into(),
                })
                .collect(),
        })
}

/// What is left on each cell after the results are applied, in the
/// dimensions the cell limits (`None` where it does not).
fn remaining(cells: &[CellState], results: &AuctionResults) -> HashMap<String, [Option<i64>; 3]> {
    let mut left: HashMap<String, [Option<i64>; 3]> = cells
        .iter()
        .map(|c| {
            let dim = |total: i64, available: i64| (total != 0).then_some(available);
            (
                c.cell_id.clone(),
                [
                    dim(c.total.memory_mb, c.available.memory_mb),
                    dim(c.total.disk_mb, c.available.disk_mb),
                    dim(c.total.containers, c.available.containers),
                ],
            )
        })
        .collect();
    let needs = results
        .lrps_placed
        .iter()
        .map(|p| (&p.cell_id, p.instance.resource))
        .chain(
            results
                .tasks_placed
                .iter()
                .map(|p| (&p.cell_id, p.task.resource)),
        );
    for (cell_id, need) in needs {
        let dims = left.get_mut(cell_id).expect("placements name known cells");
        for (slot, amount) in dims.iter_mut().zip([need.memory_mb, need.disk_mb, 1]) {
            if let Some(v) = slot {
                *v -= amount;
            }
        }
    }
    left
}

fn fits(left: &[Option<i64>; 3], need: &Resource) -> bool {
    left.iter()
        .zip([need.memory_mb, need.disk_mb, 1])
        .all(|(slot, amount)| slot.is_none_or(|v| amount <= v))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn no_cell_ends_over_capacity(cells in arb_cells(), request in arb_request()) {
        let results = auction(&cells, &request);
        for (cell_id, dims) in remaining(&cells, &results) {
            let original = cells.iter().find(|c| c.cell_id == cell_id).expect("known cell");
            let placed_any = results.lrps_placed.iter().any(|p| p.cell_id == cell_id)
                || results.tasks_placed.iter().any(|p| p.cell_id == cell_id);
            if placed_any {
                // A cell that was given work was not over capacity after it.
                prop_assert!(dims.iter().flatten().all(|&v| v >= 0), "{cell_id}: {dims:?}");
                prop_assert!(!original.evacuating, "{cell_id} is evacuating");
            }
        }
    }

    #[test]
    fn every_item_is_placed_once_or_failed_once(cells in arb_cells(), request in arb_request()) {
        let results = auction(&cells, &request);
        let mut wanted: BTreeMap<(String, i64), usize> = BTreeMap::new();
        for start in &request.lrps {
            for &index in &start.indices {
                *wanted.entry((start.process_guid.clone(), index)).or_default() += 1;
            }
        }
        let mut decided: BTreeMap<(String, i64), usize> = BTreeMap::new();
        let lrps = results.lrps_placed.iter().map(|p| &p.instance)
            .chain(results.lrps_failed.iter().map(|f| &f.instance));
        for instance in lrps {
            *decided.entry((instance.process_guid.clone(), instance.index)).or_default() += 1;
        }
        prop_assert_eq!(wanted, decided);

        let mut tasks: Vec<&str> = results.tasks_placed.iter().map(|p| p.task.task_guid.as_str())
            .chain(results.tasks_failed.iter().map(|f| f.task.task_guid.as_str()))
            .collect();
        tasks.sort_unstable();
        let mut wanted_tasks: Vec<&str> = request.tasks.iter().map(|t| t.task_guid.as_str()).collect();
        wanted_tasks.sort_unstable();
        prop_assert_eq!(tasks, wanted_tasks);
    }

    #[test]
    fn nothing_fails_that_still_fits_somewhere(cells in arb_cells(), request in arb_request()) {
        // Free resources only shrink during an auction, so an item that fits
        // a cell at the end also fitted when its turn came.
        let results = auction(&cells, &request);
        let left = remaining(&cells, &results);
        let open: Vec<&CellState> = cells.iter().filter(|c| !c.evacuating).collect();
        let failures = results.lrps_failed.iter().map(|f| (&f.instance.resource, &f.error))
            .chain(results.tasks_failed.iter().map(|f| (&f.task.resource, &f.error)));
        for (need, error) in failures {
            match error {
                PlacementError::NoCells => prop_assert!(cells.is_empty()),
                PlacementError::AllCellsEvacuating { .. } => prop_assert!(open.is_empty()),
                PlacementError::InsufficientResources { needed } => {
                    prop_assert_eq!(needed.containers, 1);
                    for cell in &open {
                        prop_assert!(
                            !fits(&left[&cell.cell_id], need),
                            "{:?} failed but fits {}", need, cell.cell_id
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn one_zone_never_stacks_a_process_while_an_empty_cell_has_room(
        cells in arb_cells(), request in arb_request()
    ) {
        let cells: Vec<CellState> = cells.into_iter()
            .map(|c| CellState { zone: "z".into(), ..c })
            .collect();
        let results = auction(&cells, &request);
        let left = remaining(&cells, &results);
        for process in 0..PROCESSES {
            let guid = process_guid(process);
            let mut count: HashMap<&str, usize> = HashMap::new();
            let mut new: HashMap<&str, usize> = HashMap::new();
            for c in cells.iter().filter(|c| !c.evacuating) {
                count.insert(&c.cell_id, c.lrps.iter().filter(|k| k.process_guid == guid).count());
            }
            for p in results.lrps_placed.iter().filter(|p| p.instance.process_guid == guid) {
                *count.get_mut(p.cell_id.as_str()).expect("placed on an open cell") += 1;
                *new.entry(&p.cell_id).or_default() += 1;
            }
            let empty_with_room = cells.iter().any(|c| {
                !c.evacuating && count[c.cell_id.as_str()] == 0
                    && fits(&left[&c.cell_id], &process_need(process))
            });
            if empty_with_room {
                for (cell_id, &n) in &new {
                    prop_assert!(
                        count[cell_id] < 2,
                        "{} got {} new of {} on a cell holding {} while an empty cell had room",
                        cell_id, n, guid, count[cell_id]
                    );
                }
            }
        }
    }

    #[test]
    fn deterministic_and_independent_of_cell_order(
        cells in arb_cells(), request in arb_request(), seed in any::<u64>()
    ) {
        let first = auction(&cells, &request);
        prop_assert_eq!(&auction(&cells, &request), &first);
        let mut shuffled = cells.clone();
        // Rotate by a seed-chosen amount; cell ids are unique here.
        if !shuffled.is_empty() {
            let by = (seed % shuffled.len() as u64) as usize;
            shuffled.rotate_left(by);
            shuffled.reverse();
        }
        prop_assert_eq!(&auction(&shuffled, &request), &first);
    }

    #[test]
    fn equal_empty_cells_take_exactly_their_capacity(
        cells in 1..6usize, per_cell in 1..5i64, instances in 0..30i64, memory in 1..512i64
    ) {
        let total = Resource::new(memory * per_cell, 0, 100);
        let cells: Vec<CellState> = (0..cells)
            .map(|i| CellState::new(format!("c{i}"), format!("z{}", i % 2), total))
            .collect();
        let request = AuctionRequest {
            lrps: vec![LrpStartRequest {
                process_guid: "web".into(),
                domain: "d".into(),
                indices: (0..instances).collect(),
                resource: Resource::for_container(memory, 0),
                rootfs: "docker:///app".into(),
            }],
            tasks: vec![],
        };
        let results = auction(&cells, &request);
        let capacity = cells.len() as i64 * per_cell;
        prop_assert_eq!(results.lrps_placed.len() as i64, instances.min(capacity));
        prop_assert_eq!(results.lrps_failed.len() as i64, (instances - capacity).max(0));
    }
}
