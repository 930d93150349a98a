//! The simulation at a size a test can afford: the invariants the bench
//! reports on, asserted.

use lattice_auctioneer::simulation::{simulate, SimConfig};

/// 30 cells in three zones, about 35% of their memory asked for, in batches
/// of 100 with some tasks mixed in.
fn roomy(seed: u64) -> SimConfig {
    SimConfig {
        tasks: 200,
        batch_size: 100,
        ..SimConfig::mixed(seed, 30, 1_500)
    }
}

#[test]
fn everything_is_placed_and_balanced_when_capacity_suffices() {
    for seed in [1, 2, 3] {
        let report = simulate(&roomy(seed)).expect("valid configuration");
        assert_eq!(report.batches, 15);
        assert_eq!((report.lrps_placed, report.lrps_failed), (1_500, 0));
        assert_eq!((report.tasks_placed, report.tasks_failed), (200, 0));
        assert_eq!(report.overcommits, 0);
        // Scores weigh memory as a fraction of each cell, so cells of 16 and
        // 64 GB fill to about the same fraction.
        let u = report.memory_utilisation;
        assert!(u.max - u.min < 0.15, "seed {seed}: {u:?}");
        // Apps are smaller than the cell count, so spreading puts at most one
        // instance of an app on a cell and zones differ by at most one.
        assert!(
            report.largest_app <= report.cells,
            "seed {seed}: {report:?}"
        );
        assert_eq!(
            report.max_instances_of_one_app_on_one_cell, 1,
            "seed {seed}"
        );
        assert!(report.max_zone_imbalance <= 1, "seed {seed}: {report:?}");
        assert_eq!(report.instances_per_zone.values().sum::<usize>(), 1_500);
    }
}

#[test]
fn overload_fails_the_excess_and_never_overcommits() {
    let report = simulate(&SimConfig {
        tasks: 300,
        ..SimConfig::mixed(9, 10, 2_000)
    })
    .expect("valid configuration");
    assert!(report.lrps_failed > 0, "{report:?}");
    assert_eq!(report.lrps_placed + report.lrps_failed, 2_000);
    assert_eq!(report.tasks_placed + report.tasks_failed, 300);
    assert_eq!(report.overcommits, 0);
    assert!(report.memory_utilisation.min > 0.9, "{report:?}");
}

#[test]
fn a_seed_fixes_the_run() {
    let a = simulate(&roomy(5)).expect("valid configuration");
    let b = simulate(&roomy(5)).expect("valid configuration");
    let c = simulate(&roomy(6)).expect("valid configuration");
    assert_eq!(a.placement_digest, b.placement_digest);
    assert_eq!(a.memory_utilisation, b.memory_utilisation);
    assert_ne!(a.placement_digest, c.placement_digest);
}

#[test]
fn equal_cells_and_instances_end_within_one_instance_of_the_mean() {
    for seed in [1, 2] {
        // 31 cells do not split evenly over three zones, so zone balance and
        // cell balance pull against each other here.
        let report = simulate(&SimConfig {
            batch_size: 100,
            ..SimConfig::uniform(seed, 31, 2_000)
        })
        .expect("valid configuration");
        assert_eq!((report.lrps_placed, report.lrps_failed), (2_000, 0));
        let per_cell = report.instances_per_cell;
        assert!(
            per_cell.max - per_cell.mean <= 1.0 && per_cell.mean - per_cell.min <= 1.0,
            "seed {seed}: {per_cell:?}"
        );
    }
}
