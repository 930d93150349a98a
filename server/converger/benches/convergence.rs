//! One full convergence pass (gather + decide, nothing to change) on a big
//! steady cluster, SQLite and PostgreSQL.
//!
//! Run: `cargo bench -p lattice-converger --bench convergence [-- DESIRED
//! INSTANCES]` (defaults 200,000 desired LRPs of 5 instances each, so
//! 1,000,000 actual LRPs). Each backend gets a fresh store (SQLite: a
//! temporary file; PostgreSQL: a database on a local server started through
//! `lattice_testkit::postgres`), seeded with every instance RUNNING on one
//! of 100 live cells, so a pass must decide nothing; the bench checks that
//! it did. Seeding is not timed. Three passes per backend; each prints the
//! gather time (the four list queries of [`lattice_converger::gather`]),
//! the decide time ([`lattice_converger::converge`]) and the resident
//! memory the snapshot added. Results go to `docs/performance.md`.

// A bench measures wall time, not the cluster's clock.
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lattice_bbs::{suite, PostgresStore, SharedStore, SqliteStore, StoreError};
use lattice_converger::{converge, gather, Convergence, Policy};
use lattice_models::{ActualLrp, ActualLrpState, PortMapping};
use lattice_testkit::postgres::{PostgresServer, DURABLE_SETTINGS};

const CELLS: usize = 100;
const PASSES: usize = 3;
/// Instances written per `create_actual_lrps` call while seeding.
const SEED_BATCH: usize = 5_000;

fn main() -> Result<(), StoreError> {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let desired: usize = parse_arg(args.next(), 200_000, "DESIRED");
    let instances: usize = parse_arg(args.next(), 5, "INSTANCES");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| StoreError::Backend(format!("cannot start the tokio runtime: {e}")))?;

    println!("{desired} desired LRPs x {instances} instances on {CELLS} cells");
    {
        let dir = tempfile::tempdir()
            .map_err(|e| StoreError::Backend(format!("cannot make a temporary directory: {e}")))?;
        runtime.block_on(async {
            let store: SharedStore =
                Arc::new(SqliteStore::open(&dir.path().join("bench.db")).await?);
            bench("sqlite", &store, desired, instances).await
        })?;
    }
    let server = PostgresServer::try_start_with(DURABLE_SETTINGS)
        .map_err(|e| StoreError::Backend(format!("cannot start postgresql: {e}")))?;
    let name = server.create_database();
    let result = runtime.block_on(async {
        let store: SharedStore = Arc::new(PostgresStore::connect(&server.url(&name)).await?);
        bench("postgres", &store, desired, instances).await
    });
    if let Err(e) = server.drop_database(&name) {
        eprintln!("cannot drop bench database {name}: {e}");
    }
    result
}

fn parse_arg(arg: Option<String>, default: usize, what: &str) -> usize {
    match arg {
        None => default,
        Some(a) => a
            .parse()
            .unwrap_or_else(|_| panic!("{what} must be a positive number, not {a:?}")),
    }
}

async fn bench(
    backend: &str,
    store: &SharedStore,
    desired: usize,
    instances: usize,
) -> Result<(), StoreError> {
    let now = now_nanos();
    let started = Instant::now();
    seed(store, desired, instances, now).await?;
    println!(
        "== {backend}: seeded in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let policy = Policy::default();
    for pass in 1..=PASSES {
        let rss_before = rss_kib();
        let started = Instant::now();
        let snapshot = gather(store).await?;
        let gathered = started.elapsed();
        let rss_snapshot = rss_kib();
        let started = Instant::now();
        let convergence = converge(&snapshot, now_nanos(), &policy);
        let decided = started.elapsed();
        assert_eq!(
            snapshot.desired.len(),
            desired,
            "every desired LRP gathered"
        );
        assert_eq!(
            snapshot.actual.len(),
            desired * instances,
            "every actual LRP gathered"
        );
        assert_eq!(
            convergence,
            Convergence::default(),
            "a steady cluster needs no action"
        );
        drop((snapshot, convergence));
        println!(
            "   pass {pass}: gather {:.3} s + decide {:.3} s = {:.3} s; snapshot RSS +{} MiB (process peak {} MiB)",
            gathered.as_secs_f64(),
            decided.as_secs_f64(),
            (gathered + decided).as_secs_f64(),
            rss_snapshot.saturating_sub(rss_before) / 1024,
            peak_rss_kib() / 1024,
        );
    }
    Ok(())
}

/// Cells with a long lease, then every desired LRP and its instances, all
/// RUNNING on a live cell.
async fn seed(
    store: &SharedStore,
    desired: usize,
    instances: usize,
    now: i64,
) -> Result<(), StoreError> {
    let lease = Duration::from_secs(3600);
    for c in 0..CELLS {
        store.upsert_cell(suite::cell(&cell_id(c)), lease).await?;
    }
    let mut batch = Vec::with_capacity(SEED_BATCH);
    for d in 0..desired {
        let guid = format!("app-{d:07}");
        store
            .create_desired_lrp(suite::desired_lrp(&guid, "bench", instances as i64))
            .await?;
        for index in 0..instances {
            batch.push(running(&guid, index, d, now));
        }
        if batch.len() >= SEED_BATCH {
            store.create_actual_lrps(std::mem::take(&mut batch)).await?;
        }
    }
    if !batch.is_empty() {
        store.create_actual_lrps(batch).await?;
    }
    Ok(())
}

fn running(guid: &str, index: usize, d: usize, now: i64) -> ActualLrp {
    let cell = (d * 7 + index) % CELLS;
    let mut lrp = ActualLrp::unclaimed(guid, "bench", index as i64, now);
    lrp.state = ActualLrpState::Running;
    lrp.cell_id = cell_id(cell);
    lrp.instance_guid = format!("{guid}-{index}");
    lrp.address = format!("10.0.{}.{}", cell / 250, cell % 250);
    lrp.ports = vec![PortMapping {
        container_port: 8080,
        host_port: 40_000 + (d % 20_000) as u32,
    }];
    lrp
}

fn cell_id(n: usize) -> String {
    format!("cell-{n:03}")
}

fn now_nanos() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970");
    i64::try_from(since_epoch.as_nanos()).expect("nanoseconds since 1970 fit an i64 until 2262")
}

/// A line of `/proc/self/status` in KiB (Linux), 0 where unreadable.
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn rss_kib() -> u64 {
    status_kib("VmRSS:")
}

fn peak_rss_kib() -> u64 {
    status_kib("VmHWM:")
}
