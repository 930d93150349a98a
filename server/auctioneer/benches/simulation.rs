//! The auction simulation as a benchmark: how long the auction takes on big
//! clusters, and how well it places.
//!
//! `cargo bench -p lattice-auctioneer --bench simulation`
//!
//! Each scenario runs three times with the same seed; the placements must be
//! identical (same digest), and the time reported is the fastest and the
//! slowest run. Cells are 16, 32 or 64 GB in three zones, apps have about ten
//! instances of 128 to 512 MB (see `SimConfig::mixed`), 1,000 starts per
//! auction; the uniform scenario has equal cells and instances
//! (`SimConfig::uniform`), where every cell can end within one instance of
//! the mean. The auction runs on one thread, so placements/s is per core.

use std::time::Duration;

use lattice_auctioneer::simulation::{simulate, SimConfig, SimReport};

const RUNS: usize = 3;
const SEED: u64 = 20_150_401;

fn main() {
    let overloaded = SimConfig {
        tasks: 1_000,
        ..SimConfig::mixed(SEED, 100, 14_000)
    };
    let scenarios = [
        (
            "10k instances / 100 cells",
            SimConfig::mixed(SEED, 100, 10_000),
        ),
        (
            "100k instances / 1000 cells",
            SimConfig::mixed(SEED, 1_000, 100_000),
        ),
        (
            "100k instances / 1000 equal cells (uniform)",
            SimConfig::uniform(SEED, 1_000, 100_000),
        ),
        ("overloaded: 14k + 1k tasks / 100 cells", overloaded),
    ];

    for (name, config) in scenarios {
        let mut cpu = Vec::with_capacity(RUNS);
        let reports: Vec<SimReport> = (0..RUNS)
            .map(|_| {
                let before = thread_cpu_time();
                let report = simulate(&config).expect("the bench's configurations are valid");
                cpu.push(thread_cpu_time().saturating_sub(before));
                report
            })
            .collect();
        let times: Vec<Duration> = reports.iter().map(|r| r.duration).collect();
        let deterministic = reports
            .iter()
            .all(|r| r.placement_digest == reports[0].placement_digest);
        print_report(name, &reports[0], &times, &cpu, deterministic);
    }
}

/// CPU time this thread has run (Linux: `/proc/thread-self/schedstat`, in
/// ns), so the figure means "on one core" even when a shared machine's
/// load takes the core away now and then. Zero where unreadable.
fn thread_cpu_time() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .map(Duration::from_nanos)
        .unwrap_or_default()
}

fn print_report(
    name: &str,
    r: &SimReport,
    times: &[Duration],
    cpu: &[Duration],
    deterministic: bool,
) {
    let fastest = times.iter().min().copied().unwrap_or_default();
    let slowest = times.iter().max().copied().unwrap_or_default();
    let u = r.memory_utilisation;
    println!("== {name}");
    println!(
        "   auction time   {:.3} s fastest, {:.3} s slowest of {} runs; slowest batch {:.1} ms; {} batches",
        fastest.as_secs_f64(),
        slowest.as_secs_f64(),
        times.len(),
        r.slowest_batch.as_secs_f64() * 1e3,
        r.batches
    );
    let placed = r.lrps_placed + r.tasks_placed;
    println!(
        "   placements/s   {:.0} (fastest run), {:.0} (slowest run)",
        placed as f64 / fastest.as_secs_f64(),
        placed as f64 / slowest.as_secs_f64()
    );
    // CPU time covers the whole run (setup and commits too), so it bounds
    // the auction's own rate from below.
    let least_cpu = cpu.iter().min().copied().unwrap_or_default();
    println!(
        "   cpu time       {:.3} s least of {} runs, whole simulation: {:.0} placements per cpu-second at least",
        least_cpu.as_secs_f64(),
        cpu.len(),
        placed as f64 / least_cpu.as_secs_f64()
    );
    println!(
        "   lrps           {} requested, {} placed, {} failed",
        r.lrps_requested, r.lrps_placed, r.lrps_failed
    );
    println!(
        "   tasks          {} requested, {} placed, {} failed",
        r.tasks_requested, r.tasks_placed, r.tasks_failed
    );
    println!(
        "   memory use     mean {:.3}, stddev {:.4}, min {:.3}, max {:.3} (fraction of each cell)",
        u.mean, u.stddev, u.min, u.max
    );
    let c = r.instances_per_cell;
    println!(
        "   per cell       mean {:.2}, stddev {:.2}, min {}, max {} instances",
        c.mean, c.stddev, c.min, c.max
    );
    println!(
        "   spread         per zone {:?}; largest app {} instances, at most {} on one cell; zone imbalance {}",
        r.instances_per_zone,
        r.largest_app,
        r.max_instances_of_one_app_on_one_cell,
        r.max_zone_imbalance
    );
    println!(
        "   checks         overcommits {}, deterministic {}",
        r.overcommits,
        if deterministic { "yes" } else { "NO" }
    );
}
