//! The auction itself: one batch of work placed on a snapshot of the cells.
//!
//! Like Diego's `auctionrunner/scheduler.go` it decides one item at a time on
//! a working copy of every cell, so each decision sees the resources (and the
//! instances) left by the one before, and it hands back every decision at
//! once; sending [`Work`](lattice_models::auction::Work) to the reps is the
//! caller's job. The rules are in the crate's README.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

use lattice_models::auction::{
    AuctionRequest, AuctionResults, CellState, LrpFailure, LrpInstance, LrpPlacement,
    LrpStartRequest, PlacementError, Resource, TaskFailure, TaskPlacement, TaskStart,
};

/// Score added for each instance of the same process already on a cell
/// (Diego's `LocalityOffset`). The resource part of a score is at most 3 on a
/// sane cell, so any cell without an instance beats any cell with one.
pub const SAME_PROCESS_PENALTY: f64 = 1000.0;

/// Places `request` on `cells` and returns every decision.
///
/// # Guarantees
/// - Pure and deterministic: the same cells and request give the same
///   results, whatever the order of `cells` (ties go to the lower cell id).
/// - Every LRP instance and task of the request appears exactly once in the
///   results, either placed or failed.
/// - The work placed on a cell never exceeds its `available` resources in a
///   dimension its `total` limits.
/// - An evacuating cell gets nothing.
/// - An item fails only if, when its turn came, no cell could hold it.
///
/// # Order
/// LRP instances first, then tasks. Instances are taken by index (every
/// process's index 0 before any index 1, so each app gets one instance before
/// any gets a second, as Diego does), then larger memory first (big items are
/// hardest to fit, so they go while the cells are emptiest); tasks larger
/// memory first. Equal items keep their request order. Results list items in
/// the order they were decided.
///
/// # Assumptions
/// - Cell ids are unique; of two cells with one id the first is used.
/// - Every instance and task takes exactly one container, whatever its
///   `resource.containers` says; negative memory or disk counts as 0.
/// - A `total` of 0 in a dimension means the cell does not limit that
///   dimension: it always fits and scores 0 there (a rep that cannot measure
///   its disk reports 0 rather than a made-up number).
pub fn auction(cells: &[CellState], request: &AuctionRequest) -> AuctionResults {
    let mut state = Working::new(cells, request);
    let mut results = AuctionResults::default();

    for (start, index) in lrp_order(&request.lrps) {
        let instance = LrpInstance {
            process_guid: start.process_guid.clone(),
            index,
            domain: start.domain.clone(),
            resource: start.resource,
            rootfs: start.rootfs.clone(),
        };
        match state.place_lrp(&start.process_guid, &need_of(&start.resource)) {
            Ok(cell_id) => results.lrps_placed.push(LrpPlacement {
                instance,
                cell_id: cell_id.to_string(),
            }),
            Err(error) => results.lrps_failed.push(LrpFailure { instance, error }),
        }
    }

    for task in task_order(&request.tasks) {
        match state.place_task(&need_of(&task.resource)) {
            Ok(cell_id) => results.tasks_placed.push(TaskPlacement {
                task: task.clone(),
                cell_id: cell_id.to_string(),
            }),
            Err(error) => results.tasks_failed.push(TaskFailure {
                task: task.clone(),
                error,
            }),
        }
    }
    results
}

/// What one item takes from a cell: its memory and disk (never negative, so
/// placing can only shrink what is available) and one container.
fn need_of(resource: &Resource) -> Resource {
    Resource::new(resource.memory_mb.max(0), resource.disk_mb.max(0), 1)
}

/// Every instance of every start request, in auction order.
fn lrp_order(starts: &[LrpStartRequest]) -> Vec<(&LrpStartRequest, i64)> {
    let mut order: Vec<_> = starts
        .iter()
        .flat_map(|s| s.indices.iter().map(move |&i| (s, i)))
        .collect();
    // Stable, so equal instances keep request order and the result is fixed.
    order.sort_by(|(a, ai), (b, bi)| {
        ai.cmp(bi)
            .then_with(|| b.resource.memory_mb.cmp(&a.resource.memory_mb))
    });
    order
}

fn task_order(tasks: &[TaskStart]) -> Vec<&TaskStart> {
    let mut order: Vec<_> = tasks.iter().collect();
    order.sort_by_key(|t| std::cmp::Reverse(t.resource.memory_mb));
    order
}

/// The auction's copy of one cell.
struct Cell<'a> {
    id: &'a str,
    /// Position in cell id order: ties go to the lower rank.
    rank: usize,
    zone: usize,
    total: Resource,
    available: Resource,
    /// `1 / total` per dimension, 0 where the cell does not limit it: scoring
    /// runs for every cell for every item, and this keeps it to multiplies.
    inverse_total: [f64; 3],
}

impl Cell<'_> {
    fn fits(&self, need: &Resource) -> bool {
        let dim = |total: i64, available: i64, need: i64| total == 0 || need <= available;
        dim(
            self.total.memory_mb,
            self.available.memory_mb,
            need.memory_mb,
        ) && dim(self.total.disk_mb, self.available.disk_mb, need.disk_mb)
            && dim(
                self.total.containers,
                self.available.containers,
                need.containers,
            )
    }

    /// Diego's `ComputeScore`: the fraction of each dimension that would be
    /// in use after placing `need`, summed. Lower is better.
    fn score(&self, need: &Resource) -> f64 {
        // 1 - (available - need) / total, written so an unlimited dimension
        // (inverse 0) adds exactly 0.
        let used = |total: i64, available: i64, need: i64, inverse: f64| {
            (total as f64 - available as f64 + need as f64) * inverse
        };
        let [m, d, c] = self.inverse_total;
        used(
            self.total.memory_mb,
            self.available.memory_mb,
            need.memory_mb,
            m,
        ) + used(self.total.disk_mb, self.available.disk_mb, need.disk_mb, d)
            + used(
                self.total.containers,
                self.available.containers,
                need.containers,
                c,
            )
    }

    /// Takes `need` from the limited dimensions. Callers check [`Cell::fits`]
    /// first, so nothing goes below zero.
    fn reserve(&mut self, need: &Resource) {
        if self.total.memory_mb != 0 {
            self.available.memory_mb -= need.memory_mb;
        }
        if self.total.disk_mb != 0 {
            self.available.disk_mb -= need.disk_mb;
        }
        if self.total.containers != 0 {
            self.available.containers -= need.containers;
        }
    }
}

fn inverse(total: i64) -> f64 {
    if total == 0 {
        0.0
    } else {
        1.0 / total as f64
    }
}

/// Where the instances of one process of this auction are, counting those the
/// cells already run and those placed so far.
struct Spread {
    /// Instances per cell (by position in `Working::cells`); sparse, because
    /// most processes touch few of many cells.
    per_cell: HashMap<usize, u32>,
    /// Instances per zone (by zone number).
    per_zone: Vec<u32>,
}

/// The working copy of the cluster for one auction.
struct Working<'a> {
    /// Cells that accept work, grouped by zone (so an LRP instance scans
    /// only the zones it may go to), by id within a zone.
    cells: Vec<Cell<'a>>,
    /// The cells of each zone, by zone number: a range of `cells`.
    zone_cells: Vec<Range<usize>>,
    /// Only the processes named in the request: others do not affect scores.
    spreads: HashMap<&'a str, Spread>,
    /// Instances of the process being placed, per cell: filled from its
    /// sparse `per_cell` and cleared again for each instance, so the hot loop
    /// over cells reads a plain slice instead of hashing.
    scratch: Vec<u32>,
    /// Why an item fails when no cell can hold it, if not for lack of room.
    no_cell: Option<PlacementError>,
}

impl<'a> Working<'a> {
    fn new(cells: &'a [CellState], request: &'a AuctionRequest) -> Self {
        let mut by_id: Vec<&CellState> = cells.iter().collect();
        by_id.sort_by(|a, b| a.cell_id.cmp(&b.cell_id));
        by_id.dedup_by(|later, first| later.cell_id == first.cell_id);
        let registered = by_id.len();
        by_id.retain(|c| !c.evacuating);

        let zones: BTreeMap<&str, usize> = by_id
            .iter()
            .map(|c| c.zone.as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .enumerate()
            .map(|(n, zone)| (zone, n))
            .collect();

        // Stable: by zone, and by id (rank) within a zone.
        let mut grouped: Vec<(usize, &CellState)> = by_id.iter().copied().enumerate().collect();
        grouped.sort_by_key(|(_, c)| zones[c.zone.as_str()]);
        let grouped_cells: Vec<&CellState> = grouped.iter().map(|&(_, c)| c).collect();
        let working: Vec<Cell<'a>> = grouped
            .iter()
            .map(|&(rank, c)| Cell {
                id: &c.cell_id,
                rank,
                zone: zones[c.zone.as_str()],
                total: c.total,
                available: c.available,
                inverse_total: [
                    inverse(c.total.memory_mb),
                    inverse(c.total.disk_mb),
                    inverse(c.total.containers),
                ],
            })
            .collect();

        let mut spreads: HashMap<&'a str, Spread> = request
            .lrps
            .iter()
            .map(|s| {
                let spread = Spread {
                    per_cell: HashMap::new(),
                    per_zone: vec![0; zones.len()],
                };
                (s.process_guid.as_str(), spread)
            })
            .collect();
        for (position, cell) in grouped_cells.iter().enumerate() {
            for key in &cell.lrps {
                if let Some(spread) = spreads.get_mut(key.process_guid.as_str()) {
                    *spread.per_cell.entry(position).or_insert(0) += 1;
                    spread.per_zone[working[position].zone] += 1;
                }
            }
        }

        let no_cell = if registered == 0 {
            Some(PlacementError::NoCells)
        } else if working.is_empty() {
            Some(PlacementError::AllCellsEvacuating { cells: registered })
        } else {
            None
        };

        let mut zone_cells = Vec::with_capacity(zones.len());
        let mut start = 0;
        for zone in 0..zones.len() {
            let count = working[start..]
                .iter()
                .take_while(|c| c.zone == zone)
                .count();
            zone_cells.push(start..start + count);
            start += count;
        }

        Self {
            scratch: vec![0; working.len()],
            cells: working,
            zone_cells,
            spreads,
            no_cell,
        }
    }

    fn failure(&self, need: &Resource) -> PlacementError {
        self.no_cell
            .clone()
            .unwrap_or(PlacementError::InsufficientResources { needed: *need })
    }

    /// Picks the cell for one instance of `process_guid`: among the cells
    /// that fit, those in the zones with the fewest instances of the process
    /// (Diego's "balance across zones"), and among those the lowest score
    /// with the same-process penalty.
    fn place_lrp(
        &mut self,
        process_guid: &str,
        need: &Resource,
    ) -> Result<&'a str, PlacementError> {
        let spread = self
            .spreads
            .get_mut(process_guid)
            .expect("Working::new made a spread for every process of the request");
        for (&cell, &count) in &spread.per_cell {
            self.scratch[cell] = count;
        }

        // The lowest (instances in the cell's zone, score, rank) among the
        // cells that fit: zones are taken level by level, fewest instances
        // first, and the first level with a cell that fits decides, so most
        // instances scan only some of the zones.
        let mut best: Option<(f64, usize, usize)> = None;
        let mut below: Option<u32> = None;
        while best.is_none() {
            let Some(level) = spread
                .per_zone
                .iter()
                .copied()
                .filter(|&count| below.is_none_or(|b| count > b))
                .min()
            else {
                break;
            };
            below = Some(level);
            for (zone, _) in spread
                .per_zone
                .iter()
                .enumerate()
                .filter(|&(_, &count)| count == level)
            {
                let range = self.zone_cells[zone].clone();
                for (cell, position) in self.cells[range.clone()].iter().zip(range) {
                    if !cell.fits(need) {
                        continue;
                    }
                    let score =
                        cell.score(need) + SAME_PROCESS_PENALTY * f64::from(self.scratch[position]);
                    let better = best.is_none_or(|(best_score, best_rank, _)| {
                        score < best_score || (score == best_score && cell.rank < best_rank)
                    });
                    if better {
                        best = Some((score, cell.rank, position));
                    }
                }
            }
        }

        for &cell in spread.per_cell.keys() {
            self.scratch[cell] = 0;
        }
        let Some((_, _, winner)) = best else {
            return Err(self.failure(need));
        };
        let cell = &mut self.cells[winner];
        cell.reserve(need);
        *spread.per_cell.entry(winner).or_insert(0) += 1;
        spread.per_zone[cell.zone] += 1;
        Ok(cell.id)
    }

    /// Picks the cell for one task: the lowest score among those that fit,
    /// which is the emptiest cell relative to its size.
    fn place_task(&mut self, need: &Resource) -> Result<&'a str, PlacementError> {
        let mut best: Option<(f64, usize, usize)> = None;
        for (position, cell) in self.cells.iter().enumerate() {
            if !cell.fits(need) {
                continue;
            }
            let score = cell.score(need);
            if best.is_none_or(|(best_score, best_rank, _)| {
                score < best_score || (score == best_score && cell.rank < best_rank)
            }) {
                best = Some((score, cell.rank, position));
            }
        }
        let Some((_, _, winner)) = best else {
            return Err(self.failure(need));
        };
        let cell = &mut self.cells[winner];
        cell.reserve(need);
        Ok(cell.id)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use lattice_models::auction::LrpKey;

    use super::*;

    const MB: i64 = 1;

    fn cell(id: &str, zone: &str, memory_mb: i64) -> CellState {
        CellState::new(id, zone, Resource::new(memory_mb, 100_000, 100))
    }

    fn start(process_guid: &str, instances: i64, memory_mb: i64) -> LrpStartRequest {
        LrpStartRequest {
            process_guid: process_guid.into(),
            domain: "d".into(),
            indices: (0..instances).collect(),
            resource: Resource::for_container(memory_mb, 10),
            rootfs: "docker:///app".into(),
        }
    }

    fn task(task_guid: &str, memory_mb: i64) -> TaskStart {
        TaskStart {
            task_guid: task_guid.into(),
            domain: "d".into(),
            resource: Resource::for_container(memory_mb, 10),
            rootfs: "docker:///task".into(),
        }
    }

    fn lrps(starts: Vec<LrpStartRequest>) -> AuctionRequest {
        AuctionRequest {
            lrps: starts,
            tasks: vec![],
        }
    }

    /// Instances placed per cell id.
    fn per_cell(results: &AuctionResults) -> HashMap<&str, usize> {
        let mut counts = HashMap::new();
        for p in &results.lrps_placed {
            *counts.entry(p.cell_id.as_str()).or_default() += 1;
        }
        counts
    }

    #[test]
    fn instances_spread_evenly_over_equal_cells() {
        for (instances, cells) in [(10, 4), (25, 7), (3, 5), (100, 10)] {
            let cells: Vec<_> = (0..cells)
                .map(|i| cell(&format!("c{i}"), "", 100_000))
                .collect();
            let results = auction(&cells, &lrps(vec![start("web", instances, 64)]));
            assert_eq!(results.lrps_placed.len(), instances as usize);
            let counts = per_cell(&results);
            let floor = instances as usize / cells.len();
            for c in &cells {
                let n = counts.get(c.cell_id.as_str()).copied().unwrap_or(0);
                assert!(
                    n == floor || n == floor + 1,
                    "{} got {n} of {instances} instances over {} cells",
                    c.cell_id,
                    cells.len()
                );
            }
        }
    }

    #[test]
    fn never_two_instances_on_one_cell_while_another_has_room() {
        // The big cell scores best for every instance, but the small ones
        // each have room for one, and spreading beats packing.
        let cells = vec![
            cell("big", "", 100_000),
            cell("small-1", "", 300),
            cell("small-2", "", 300),
            cell("small-3", "", 300),
        ];
        let results = auction(&cells, &lrps(vec![start("web", 4, 256)]));
        let counts = per_cell(&results);
        assert_eq!(counts.len(), 4, "{counts:?}");
        assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    }

    #[test]
    fn capacity_is_filled_then_items_fail_with_insufficient_resources() {
        let cells = vec![cell("a", "", 1024 * MB), cell("b", "", 1024 * MB)];
        let results = auction(&cells, &lrps(vec![start("web", 10, 256)]));
        assert_eq!(results.lrps_placed.len(), 8);
        assert_eq!(results.lrps_failed.len(), 2);
        for failure in &results.lrps_failed {
            assert_eq!(
                failure.error,
                PlacementError::InsufficientResources {
                    needed: Resource::new(256, 10, 1)
                }
            );
        }
        // The two that did not fit are the highest indices.
        let failed: Vec<i64> = results
            .lrps_failed
            .iter()
            .map(|f| f.instance.index)
            .collect();
        assert_eq!(failed, vec![8, 9]);
    }

    #[test]
    fn container_slots_limit_placement_whatever_the_request_says() {
        let mut small = CellState::new("a", "", Resource::new(100_000, 100_000, 2));
        small.available.containers = 1;
        // A request that claims to need no container still takes one.
        let mut web = start("web", 3, 1);
        web.resource.containers = 0;
        let results = auction(&[small], &lrps(vec![web]));
        assert_eq!(results.lrps_placed.len(), 1);
        assert_eq!(results.lrps_failed.len(), 2);
    }

    #[test]
    fn zones_are_balanced_before_cells() {
        let cells = vec![
            cell("a1", "z1", 10_000),
            cell("a2", "z1", 10_000),
            cell("a3", "z1", 10_000),
            cell("b1", "z2", 10_000),
        ];
        let results = auction(&cells, &lrps(vec![start("web", 4, 128)]));
        let counts = per_cell(&results);
        assert_eq!(counts["b1"], 2, "{counts:?}");
        assert_eq!(
            counts.get("a1").copied().unwrap_or(0)
                + counts.get("a2").copied().unwrap_or(0)
                + counts.get("a3").copied().unwrap_or(0),
            2
        );
    }

    #[test]
    fn instances_already_running_count_for_zones_and_cells() {
        let mut a1 = cell("a1", "z1", 10_000);
        a1.lrps.push(LrpKey::new("web", 0));
        let cells = vec![a1, cell("a2", "z1", 10_000), cell("b1", "z2", 10_000)];
        let mut web = start("web", 3, 128);
        web.indices = vec![1, 2];
        let results = auction(&cells, &lrps(vec![web]));
        let placed: Vec<(i64, &str)> = results
            .lrps_placed
            .iter()
            .map(|p| (p.instance.index, p.cell_id.as_str()))
            .collect();
        // Index 1 goes to the empty zone; index 2 to z1's empty cell, since
        // both zones now hold one and a1 already runs one.
        assert_eq!(placed, vec![(1, "b1"), (2, "a2")]);
    }

    #[test]
    fn a_zone_without_room_does_not_block_the_others() {
        let cells = vec![cell("a1", "z1", 10_000), cell("b1", "z2", 100)];
        let results = auction(&cells, &lrps(vec![start("web", 3, 128)]));
        assert_eq!(per_cell(&results)["a1"], 3);
    }

    #[test]
    fn tasks_go_to_the_emptiest_cell() {
        let mut full = cell("a", "", 1000);
        full.available.memory_mb = 200;
        let mut half = cell("b", "", 1000);
        half.available.memory_mb = 500;
        // Emptiest relative to its size, not in absolute megabytes.
        let mut big_but_busy = cell("c", "", 10_000);
        big_but_busy.available.memory_mb = 4000;
        let request = AuctionRequest {
            lrps: vec![],
            tasks: vec![task("t1", 100)],
        };
        let results = auction(&[full, half, big_but_busy], &request);
        assert_eq!(results.tasks_placed.len(), 1);
        assert_eq!(results.tasks_placed[0].cell_id, "b");
    }

    #[test]
    fn ties_go_to_the_lower_cell_id() {
        let cells = vec![cell("b", "", 1000), cell("a", "", 1000)];
        let request = AuctionRequest {
            lrps: vec![start("web", 1, 10)],
            tasks: vec![task("t", 10)],
        };
        let results = auction(&cells, &request);
        assert_eq!(results.lrps_placed[0].cell_id, "a");
        // The task sees "a" a little fuller now, so it takes "b".
        assert_eq!(results.tasks_placed[0].cell_id, "b");

        let tasks_only = AuctionRequest {
            lrps: vec![],
            tasks: vec![task("t", 10)],
        };
        assert_eq!(auction(&cells, &tasks_only).tasks_placed[0].cell_id, "a");
    }

    #[test]
    fn same_input_gives_same_output_whatever_the_cell_order() {
        let cells: Vec<_> = (0..6)
            .map(|i| cell(&format!("c{i}"), &format!("z{}", i % 2), 1000 + 300 * i))
            .collect();
        let request = AuctionRequest {
            lrps: vec![start("web", 7, 256), start("worker", 5, 512)],
            tasks: (0..6).map(|i| task(&format!("t{i}"), 128 * i)).collect(),
        };
        let first = auction(&cells, &request);
        assert_eq!(auction(&cells, &request), first);
        let mut reversed = cells.clone();
        reversed.reverse();
        assert_eq!(auction(&reversed, &request), first);
    }

    #[test]
    fn no_cells_fails_everything_with_no_cells() {
        let request = AuctionRequest {
            lrps: vec![start("web", 2, 1)],
            tasks: vec![task("t", 1)],
        };
        let results = auction(&[], &request);
        assert!(results.lrps_placed.is_empty() && results.tasks_placed.is_empty());
        assert_eq!(results.lrps_failed.len(), 2);
        assert!(results
            .lrps_failed
            .iter()
            .all(|f| f.error == PlacementError::NoCells));
        assert_eq!(results.tasks_failed[0].error, PlacementError::NoCells);
    }

    #[test]
    fn evacuating_cells_get_nothing() {
        let mut draining = cell("a", "", 100_000);
        draining.evacuating = true;
        let busy = cell("b", "", 1000);
        let results = auction(&[draining.clone(), busy], &lrps(vec![start("web", 3, 400)]));
        assert_eq!(per_cell(&results)["b"], 2);
        assert!(!per_cell(&results).contains_key("a"));

        let results = auction(&[draining], &lrps(vec![start("web", 1, 1)]));
        assert_eq!(
            results.lrps_failed[0].error,
            PlacementError::AllCellsEvacuating { cells: 1 }
        );
    }

    #[test]
    fn tasks_and_lrps_compete_for_the_same_resources() {
        let cells = vec![cell("a", "", 1024)];
        let request = AuctionRequest {
            tasks: vec![task("t", 512)],
            lrps: vec![start("web", 1, 768)],
        };
        let results = auction(&cells, &request);
        assert_eq!(results.lrps_placed.len(), 1, "LRPs go first");
        assert_eq!(results.tasks_failed.len(), 1);
        assert!(matches!(
            results.tasks_failed[0].error,
            PlacementError::InsufficientResources { .. }
        ));
    }

    #[test]
    fn every_app_gets_its_first_instance_before_any_gets_a_second() {
        let cells = vec![cell("a", "", 1000)];
        let request = lrps(vec![start("one", 3, 400), start("two", 3, 400)]);
        let results = auction(&cells, &request);
        let placed: Vec<(&str, i64)> = results
            .lrps_placed
            .iter()
            .map(|p| (p.instance.process_guid.as_str(), p.instance.index))
            .collect();
        assert_eq!(placed, vec![("one", 0), ("two", 0)]);
    }

    #[test]
    fn larger_instances_go_first_within_an_index() {
        let cells = vec![cell("a", "", 1000)];
        let request = lrps(vec![start("small", 1, 400), start("large", 1, 700)]);
        let results = auction(&cells, &request);
        assert_eq!(results.lrps_placed[0].instance.process_guid, "large");
        assert_eq!(results.lrps_failed[0].instance.process_guid, "small");
    }

    #[test]
    fn a_zero_total_means_unlimited() {
        // No disk or container limit reported: only memory limits the cell.
        let cells = vec![CellState::new("a", "", Resource::new(1000, 0, 0))];
        let mut web = start("web", 5, 200);
        web.resource.disk_mb = 1_000_000;
        let results = auction(&cells, &lrps(vec![web]));
        assert_eq!(results.lrps_placed.len(), 5);
    }

    #[test]
    fn a_duplicate_cell_id_is_ignored() {
        let first = cell("a", "", 100);
        let second = cell("a", "", 100_000);
        let results = auction(&[first, second], &lrps(vec![start("web", 2, 80)]));
        assert_eq!(results.lrps_placed.len(), 1);
        assert_eq!(results.lrps_failed.len(), 1);
    }

    #[test]
    fn negative_requests_take_nothing() {
        let mut a = cell("a", "", 1000);
        a.available.memory_mb = 0;
        let results = auction(&[a], &lrps(vec![start("web", 1, -500)]));
        assert_eq!(results.lrps_placed.len(), 1);
    }
}
