//! A deterministic auction simulation, after Diego's `docs/020-the-simulation.md`:
//! the real [`auction`] function against in-process cells, with no network
//! and no Docker, so the algorithm can be judged apart from communication.
//!
//! A seed decides everything (cell sizes, apps, instance counts, arrival
//! order), so a run can be repeated exactly. Starts arrive in batches as the
//! real auctioneer would hold them; after each batch the simulation commits
//! the placements to its cells, as the reps would, and the next batch sees
//! them.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use lattice_models::auction::{
    AuctionRequest, CellState, LrpKey, LrpStartRequest, Resource, TaskStart,
};

use crate::auction;

/// The cluster and the load to simulate.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    pub seed: u64,
    pub cells: usize,
    /// Cell `i` is in zone `z{i % zones}`.
    pub zones: usize,
    /// Each cell draws its size from this list.
    pub cell_sizes: Vec<Resource>,
    pub apps: usize,
    /// LRP instances over all apps; each instance joins a random app, so app
    /// sizes vary around `instances / apps`.
    pub instances: usize,
    /// Each app draws the memory and disk of its instances from this list.
    pub instance_sizes: Vec<Resource>,
    pub tasks: usize,
    /// Each task draws its memory and disk from this list.
    pub task_sizes: Vec<Resource>,
    /// LRP instances per auction; tasks are spread evenly over the batches.
    pub batch_size: usize,
}

impl SimConfig {
    /// A mixed cluster: three zones; cells of 16, 32 and 64 GB; apps of about
    /// ten instances of 128 to 512 MB. The load uses about 75% of the memory
    /// when `instances` is 100 per cell.
    pub fn mixed(seed: u64, cells: usize, instances: usize) -> Self {
        const GB: i64 = 1024;
        Self {
            seed,
            cells,
            zones: 3,
            cell_sizes: vec![
                Resource::new(16 * GB, 100 * GB, 250),
                Resource::new(32 * GB, 200 * GB, 250),
                Resource::new(64 * GB, 400 * GB, 500),
            ],
            apps: (instances / 10).max(1),
            instances,
            instance_sizes: vec![
                Resource::for_container(128, 512),
                Resource::for_container(256, 1024),
                Resource::for_container(256, 1024),
                Resource::for_container(512, 2048),
            ],
            tasks: 0,
            task_sizes: vec![Resource::for_container(256, 1024)],
            batch_size: 1000,
        }
    }

    /// A uniform cluster: three zones; every cell 32 GB, 200 GB disk, 250
    /// containers; every instance 256 MB and 1 GB disk; apps of about ten
    /// instances. Here sizes allow a perfect spread, so every cell should end
    /// within one instance of the mean.
    pub fn uniform(seed: u64, cells: usize, instances: usize) -> Self {
        const GB: i64 = 1024;
        Self {
            cell_sizes: vec![Resource::new(32 * GB, 200 * GB, 250)],
            instance_sizes: vec![Resource::for_container(256, 1024)],
            ..Self::mixed(seed, cells, instances)
        }
    }

    fn validate(&self) -> Result<(), SimError> {
        if self.zones == 0 {
            return Err(SimError::NoZones);
        }
        if self.batch_size == 0 {
            return Err(SimError::ZeroBatchSize);
        }
        if self.cells > 0 && self.cell_sizes.is_empty() {
            return Err(SimError::EmptyList("cell_sizes"));
        }
        if self.instances > 0 && self.apps == 0 {
            return Err(SimError::NoApps);
        }
        if self.apps > 0 && self.instance_sizes.is_empty() {
            return Err(SimError::EmptyList("instance_sizes"));
        }
        if self.tasks > 0 && self.task_sizes.is_empty() {
            return Err(SimError::EmptyList("task_sizes"));
        }
        if let Some(size) = self
            .cell_sizes
            .iter()
            .find(|s| s.memory_mb <= 0 || s.disk_mb <= 0 || s.containers <= 0)
        {
            return Err(SimError::BadCellSize(*size));
        }
        Ok(())
    }
}

/// A configuration the simulation cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// Cells are assigned to zones round-robin, so there must be one.
    #[error("zones must be at least 1")]
    NoZones,
    /// Batches of zero would never end.
    #[error("batch_size must be at least 1")]
    ZeroBatchSize,
    /// Instances need an app to belong to.
    #[error("instances need at least one app")]
    NoApps,
    /// A list to draw sizes from is empty while something needs a size.
    #[error("{0} must not be empty")]
    EmptyList(&'static str),
    /// Simulated cells are limited in every dimension, so that utilisation
    /// and overcommit mean something.
    #[error("cell size {0} must be positive in every dimension")]
    BadCellSize(Resource),
}

/// What a simulation run did.
#[derive(Debug, Clone, PartialEq)]
pub struct SimReport {
    pub cells: usize,
    pub batches: usize,
    pub lrps_requested: usize,
    pub lrps_placed: usize,
    pub lrps_failed: usize,
    pub tasks_requested: usize,
    pub tasks_placed: usize,
    pub tasks_failed: usize,
    /// Wall time spent inside [`auction`], summed over batches (setup and
    /// commits excluded).
    pub duration: Duration,
    /// The slowest single batch.
    pub slowest_batch: Duration,
    /// Memory in use per cell as a fraction of its total, over all cells.
    pub memory_utilisation: Stats,
    /// LRP instances per cell, over all cells. With cells of one size and
    /// instances of one size, every cell should be within one instance of
    /// the mean.
    pub instances_per_cell: Stats,
    /// LRP instances per zone, after the run.
    pub instances_per_zone: BTreeMap<String, usize>,
    /// Instances of the largest app.
    pub largest_app: usize,
    /// The most instances one app has on one cell.
    pub max_instances_of_one_app_on_one_cell: usize,
    /// Over all apps, the largest difference between the zone with most and
    /// the zone with fewest of its instances.
    pub max_zone_imbalance: usize,
    /// Placements that did not fit the cell they went to: must be 0.
    pub overcommits: usize,
    /// A hash of where everything went, to compare runs.
    pub placement_digest: u64,
}

/// Summary of one number over the cells.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    pub mean: f64,
    /// Population standard deviation.
    pub stddev: f64,
    pub min: f64,
    pub max: f64,
}

impl Stats {
    fn of(values: &[f64]) -> Stats {
        if values.is_empty() {
            return Stats {
                mean: 0.0,
                stddev: 0.0,
                min: 0.0,
                max: 0.0,
            };
        }
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        Stats {
            mean,
            stddev: variance.sqrt(),
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }
    }
}

/// Runs the simulation described by `config`.
///
/// # Errors
/// [`SimError`] if the configuration cannot be simulated.
pub fn simulate(config: &SimConfig) -> Result<SimReport, SimError> {
    config.validate()?;
    let mut rng = SplitMix64::new(config.seed);

    let mut cells: Vec<CellState> = (0..config.cells)
        .map(|i| {
            let size = *rng.pick(&config.cell_sizes);
            CellState::new(
                format!("cell-{i:05}"),
                format!("z{}", i % config.zones),
                size,
            )
        })
        .collect();
    let position: HashMap<String, usize> = cells
        .iter()
        .enumerate()
        .map(|(i, c)| (c.cell_id.clone(), i))
        .collect();

    let app_sizes: Vec<Resource> = (0..config.apps)
        .map(|_| *rng.pick(&config.instance_sizes))
        .collect();
    let mut app_instances = vec![0_i64; config.apps];
    for _ in 0..config.instances {
        app_instances[rng.below(config.apps)] += 1;
    }
    let mut arrival: Vec<usize> = (0..config.apps).collect();
    rng.shuffle(&mut arrival);

    let mut batches = lrp_batches(&arrival, &app_instances, &app_sizes, config.batch_size);
    for (n, task) in (0..config.tasks).enumerate() {
        let batch = n * batches.len() / config.tasks;
        batches[batch].tasks.push(TaskStart {
            task_guid: format!("task-{task:06}"),
            domain: "sim".into(),
            resource: *rng.pick(&config.task_sizes),
            rootfs: "docker:///sim".into(),
        });
    }

    let mut report = SimReport {
        cells: config.cells,
        batches: batches.len(),
        lrps_requested: config.instances,
        lrps_placed: 0,
        lrps_failed: 0,
        tasks_requested: config.tasks,
        tasks_placed: 0,
        tasks_failed: 0,
        duration: Duration::ZERO,
        slowest_batch: Duration::ZERO,
        memory_utilisation: Stats::of(&[]),
        instances_per_cell: Stats::of(&[]),
        instances_per_zone: BTreeMap::new(),
        largest_app: app_instances.iter().copied().max().unwrap_or(0) as usize,
        max_instances_of_one_app_on_one_cell: 0,
        max_zone_imbalance: 0,
        overcommits: 0,
        placement_digest: 0,
    };

    for request in &batches {
        #[allow(clippy::disallowed_methods)] // Measures the auction's own wall time.
        let started = Instant::now();
        let results = auction(&cells, request);
        let took = started.elapsed();
        report.duration += took;
        report.slowest_batch = report.slowest_batch.max(took);

        report.lrps_placed += results.lrps_placed.len();
        report.lrps_failed += results.lrps_failed.len();
        report.tasks_placed += results.tasks_placed.len();
        report.tasks_failed += results.tasks_failed.len();
        // What the reps would do on receiving their work.
        for p in &results.lrps_placed {
            let cell = &mut cells[position[&p.cell_id]];
            report.overcommits += usize::from(!take(cell, &p.instance.resource));
            cell.lrps.push(p.instance.key());
        }
        for p in &results.tasks_placed {
            let cell = &mut cells[position[&p.cell_id]];
            report.overcommits += usize::from(!take(cell, &p.task.resource));
            cell.tasks.push(p.task.task_guid.clone());
        }
    }

    measure(&cells, config.zones, &mut report);
    Ok(report)
}

/// Takes one container of `resource` from the cell; false if it did not fit
/// (the cell is then left as it was).
fn take(cell: &mut CellState, resource: &Resource) -> bool {
    let need = Resource::for_container(resource.memory_mb, resource.disk_mb);
    match cell.available.checked_sub(&need) {
        Some(left) => {
            cell.available = left;
            true
        }
        None => false,
    }
}

/// Cuts the apps, in arrival order, into batches of `batch_size` instances;
/// an app cut by a batch boundary continues in the next batch.
fn lrp_batches(
    arrival: &[usize],
    app_instances: &[i64],
    app_sizes: &[Resource],
    batch_size: usize,
) -> Vec<AuctionRequest> {
    let mut batches = vec![AuctionRequest::default()];
    let mut in_batch = 0;
    for &app in arrival {
        let mut next_index = 0;
        while next_index < app_instances[app] {
            if in_batch == batch_size {
                batches.push(AuctionRequest::default());
                in_batch = 0;
            }
            let room = (batch_size - in_batch) as i64;
            let end = app_instances[app].min(next_index + room);
            let batch = batches.last_mut().expect("batches starts with one entry");
            batch.lrps.push(LrpStartRequest {
                process_guid: format!("app-{app:06}"),
                domain: "sim".into(),
                indices: (next_index..end).collect(),
                resource: app_sizes[app],
                rootfs: "docker:///sim".into(),
            });
            in_batch += (end - next_index) as usize;
            next_index = end;
        }
    }
    batches
}

fn measure(cells: &[CellState], zones: usize, report: &mut SimReport) {
    let utilisation: Vec<f64> = cells
        .iter()
        .map(|c| 1.0 - c.available.memory_mb as f64 / c.total.memory_mb as f64)
        .collect();
    report.memory_utilisation = Stats::of(&utilisation);
    let counts: Vec<f64> = cells.iter().map(|c| c.lrps.len() as f64).collect();
    report.instances_per_cell = Stats::of(&counts);

    let mut per_app_zone: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut digest = Fnv::new();
    for (i, cell) in cells.iter().enumerate() {
        *report
            .instances_per_zone
            .entry(cell.zone.clone())
            .or_default() += cell.lrps.len();
        let zone = i % zones;
        let mut per_app: HashMap<&str, usize> = HashMap::new();
        for key in &cell.lrps {
            *per_app.entry(&key.process_guid).or_default() += 1;
            per_app_zone
                .entry(&key.process_guid)
                .or_insert_with(|| vec![0; zones])[zone] += 1;
        }
        let most = per_app.values().copied().max().unwrap_or(0);
        report.max_instances_of_one_app_on_one_cell =
            report.max_instances_of_one_app_on_one_cell.max(most);

        // Commit order is deterministic, but hash a sorted copy anyway so the
        // digest says "same placements", not "same order of commits".
        let mut lrps: Vec<&LrpKey> = cell.lrps.iter().collect();
        lrps.sort();
        let mut tasks: Vec<&String> = cell.tasks.iter().collect();
        tasks.sort();
        digest.write(cell.cell_id.as_bytes());
        for key in lrps {
            digest.write(key.process_guid.as_bytes());
            digest.write(&key.index.to_le_bytes());
        }
        for task in tasks {
            digest.write(task.as_bytes());
        }
    }
    report.max_zone_imbalance = per_app_zone
        .values()
        .map(|z| z.iter().max().unwrap_or(&0) - z.iter().min().unwrap_or(&0))
        .max()
        .unwrap_or(0);
    report.placement_digest = digest.finish();
}

/// splitmix64: a tiny, good-enough generator for simulation seeds (not for
/// anything secret). Written out so a seed means the same run forever,
/// whatever a random-number crate does in its next version.
struct SplitMix64(u64);

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (Lemire's multiply; the bias is below 2^-40 for
    /// the sizes simulated). `n` must be positive.
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    fn pick<'t, T>(&mut self, items: &'t [T]) -> &'t T {
        &items[self.below(items.len())]
    }

    /// Fisher-Yates.
    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

/// FNV-1a, for the placement digest: std's hashers are not promised to stay
/// the same across Rust versions.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        // A separator, so ("ab", "c") and ("a", "bc") differ.
        self.0 = (self.0 ^ 0xff).wrapping_mul(0x0000_0100_0000_01b3);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_reference_values() {
        // First outputs for seed 1234567 from the reference C implementation.
        let mut rng = SplitMix64::new(1_234_567);
        assert_eq!(rng.next_u64(), 6_457_827_717_110_365_317);
        assert_eq!(rng.next_u64(), 3_203_168_211_198_807_973);
    }

    #[test]
    fn below_stays_in_range_and_shuffle_permutes() {
        let mut rng = SplitMix64::new(7);
        assert!((0..1000).all(|_| rng.below(3) < 3));
        let mut items: Vec<u32> = (0..50).collect();
        rng.shuffle(&mut items);
        assert_ne!(items, (0..50).collect::<Vec<_>>());
        items.sort_unstable();
        assert_eq!(items, (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn batches_hold_at_most_batch_size_instances_and_keep_every_index() {
        let batches = lrp_batches(&[1, 0], &[5, 7], &[Resource::for_container(1, 1); 2], 4);
        let sizes: Vec<usize> = batches
            .iter()
            .map(|b| b.lrps.iter().map(|l| l.indices.len()).sum())
            .collect();
        assert_eq!(sizes, vec![4, 4, 4]);
        let app1: Vec<i64> = batches
            .iter()
            .flat_map(|b| &b.lrps)
            .filter(|l| l.process_guid == "app-000001")
            .flat_map(|l| l.indices.clone())
            .collect();
        assert_eq!(app1, (0..7).collect::<Vec<_>>());
    }

    #[test]
    fn invalid_configs_are_refused() {
        let ok = SimConfig::mixed(1, 3, 10);
        assert_eq!(
            simulate(&SimConfig {
                zones: 0,
                ..ok.clone()
            }),
            Err(SimError::NoZones)
        );
        assert_eq!(
            simulate(&SimConfig {
                batch_size: 0,
                ..ok.clone()
            }),
            Err(SimError::ZeroBatchSize)
        );
        assert_eq!(
            simulate(&SimConfig {
                apps: 0,
                ..ok.clone()
            }),
            Err(SimError::NoApps)
        );
        let bad = Resource::new(1, 0, 1);
        assert_eq!(
            simulate(&SimConfig {
                cell_sizes: vec![bad],
                ..ok
            }),
            Err(SimError::BadCellSize(bad))
        );
    }
}
