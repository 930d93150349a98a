//! One full convergence pass (gather + decide, nothing to change) on a big
//! steady cluster, SQLite and PostgreSQL.
//!
//! Run: `cargo bench -p lattice-converger --bench convergence [-- DESIRED
//! INSTANCES]` (defaults 200,000 desired LRPs of 5 instances each, so
//! 1,000,000 actual LRPs). Each backend gets a fresh store (SQLite: a
//! temporary file; PostgreSQL: a database on a local server started through
//! `lattice_testkit::postgres`), seeded with every instance RUNNING on one
//! of 100 live cells, so a pass must decide nothing; the bench checks that
//! it did. Seeding writes the store's rows directly, with multi-row
//! INSERTs in one transaction (the store's API writes a desired LRP per
//! commit, which at this size takes most of an hour on PostgreSQL); the
//! bench then checks that the store reads back every record it wrote.
//! Three passes per backend; each prints the gather time (the four reads
//! of [`lattice_converger::gather`]), the decide time
//! ([`lattice_converger::converge`]) and the resident memory the snapshot
//! added. Then, as the anchor in the same run, one gather the way it was
//! done before: every desired and actual LRP listed whole (record JSON
//! decoded). Results go to `docs/performance.md`.

// A bench measures wall time, not the cluster's clock.
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lattice_bbs::{
    suite, ActualLrpFilter, DesiredLrpFilter, PostgresStore, SharedStore, SqliteStore, StoreError,
};
use lattice_converger::{converge, gather, Convergence, Policy};
use lattice_models::{ActualLrp, ActualLrpState, ModificationTag, PortMapping};
use lattice_testkit::postgres::{PostgresServer, DURABLE_SETTINGS};

const CELLS: usize = 100;
const PASSES: usize = 3;
/// Rows per INSERT while seeding.
const SEED_BATCH: usize = 1_000;

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
        let path = dir.path().join("bench.db");
        runtime.block_on(async {
            let store: SharedStore = Arc::new(SqliteStore::open(&path).await?);
            let started = Instant::now();
            let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
                .await
                .map_err(seed_error)?;
            seed(&pool, desired, instances, now_nanos()).await?;
            pool.close().await;
            bench("sqlite", &store, started, desired, instances).await
        })?;
    }
    let server = PostgresServer::try_start_with(DURABLE_SETTINGS)
        .map_err(|e| StoreError::Backend(format!("cannot start postgresql: {e}")))?;
    let name = server.create_database();
    let result = runtime.block_on(async {
        let url = server.url(&name);
        let store: SharedStore = Arc::new(PostgresStore::connect(&url).await?);
        let started = Instant::now();
        let pool = sqlx::PgPool::connect(&url).await.map_err(seed_error)?;
        seed(&pool, desired, instances, now_nanos()).await?;
        // Fresh statistics, as autovacuum would gather them in time.
        sqlx::query("ANALYZE")
            .execute(&pool)
            .await
            .map_err(seed_error)?;
        pool.close().await;
        bench("postgres", &store, started, desired, instances).await
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
    seeding: Instant,
    desired: usize,
    instances: usize,
) -> Result<(), StoreError> {
    let lease = Duration::from_secs(3600);
    for c in 0..CELLS {
        store.upsert_cell(suite::cell(&cell_id(c)), lease).await?;
    }
    println!(
        "== {backend}: seeded in {:.1} s",
        seeding.elapsed().as_secs_f64()
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
    whole_records_anchor(store, desired, instances).await
}

/// The gather as it was: every desired and actual LRP read whole. Also
/// checks that the seeded rows decode as the records they stand for.
async fn whole_records_anchor(
    store: &SharedStore,
    desired: usize,
    instances: usize,
) -> Result<(), StoreError> {
    let rss_before = rss_kib();
    let started = Instant::now();
    let desired_lrps = store
        .list_desired_lrps(&DesiredLrpFilter::default())
        .await?;
    let actual_lrps = store.list_actual_lrps(&ActualLrpFilter::default()).await?;
    let elapsed = started.elapsed();
    let rss = rss_kib();
    assert_eq!(desired_lrps.len(), desired, "every desired LRP decodes");
    assert_eq!(
        actual_lrps.len(),
        desired * instances,
        "every actual LRP decodes"
    );
    let (d, index) = (desired / 2, instances / 2);
    let expected = running(&guid(d), index, d, 0);
    let stored = &actual_lrps[d * instances + index];
    assert_eq!(
        (&stored.process_guid, stored.index, &stored.cell_id),
        (&expected.process_guid, expected.index, &expected.cell_id),
        "the seeded rows are the records"
    );
    drop((desired_lrps, actual_lrps));
    println!(
        "   anchor: whole desired + actual LRPs listed in {:.3} s; RSS +{} MiB (process peak {} MiB)",
        elapsed.as_secs_f64(),
        rss.saturating_sub(rss_before) / 1024,
        peak_rss_kib() / 1024,
    );
    Ok(())
}

fn seed_error(e: sqlx::Error) -> StoreError {
    StoreError::Backend(format!("cannot seed the bench store: {e}"))
}

/// Writes every desired LRP and its instances, all RUNNING, as the rows
/// the store keeps (its columns and the record's JSON), in one
/// transaction of multi-row INSERTs. No events: nobody listens yet.
async fn seed<DB: sqlx::Database>(
    pool: &sqlx::Pool<DB>,
    desired: usize,
    instances: usize,
    now: i64,
) -> Result<(), StoreError>
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let mut tx = pool.begin().await.map_err(seed_error)?;
    for insert in seed_inserts(desired, instances, now) {
        sqlx::raw_sql(&insert)
            .execute(&mut *tx)
            .await
            .map_err(seed_error)?;
    }
    tx.commit().await.map_err(seed_error)
}

/// The INSERTs of the seed, [`SEED_BATCH`] rows each, values as SQL
/// literals (standard SQL, the same in both dialects), made as they are
/// run so that a million rows are never held at once.
fn seed_inserts(desired: usize, instances: usize, now: i64) -> impl Iterator<Item = String> {
    let desired_rows = (0..desired).map(move |d| {
        let guid = guid(d);
        let mut lrp = suite::desired_lrp(&guid, "bench", instances as i64);
        lrp.modification_tag = seed_tag(&guid);
        format!(
            "({}, {}, {}, {}, 0, {})",
            text(&guid),
            text(&lrp.domain),
            lrp.instances,
            text(&lrp.modification_tag.epoch),
            text(&serde_json::to_string(&lrp).expect("a model record serializes")),
        )
    });
    let actual_rows = (0..desired)
        .flat_map(move |d| (0..instances).map(move |index| (d, index)))
        .map(move |(d, index)| {
            let lrp = running(&guid(d), index, d, now);
            format!(
                "({}, {}, {}, {}, {}, {}, {}, '', {}, 0, {})",
                text(&lrp.process_guid),
                lrp.index,
                text(&lrp.domain),
                text(&lrp.cell_id),
                text(lrp.state.as_str()),
                lrp.since,
                lrp.crash_count,
                text(&lrp.modification_tag.epoch),
                text(&serde_json::to_string(&lrp).expect("a model record serializes")),
            )
        });
    let desired_inserts = batches(desired_rows).map(|rows| {
        format!(
            "INSERT INTO desired_lrps (process_guid, domain, instances, mod_epoch, mod_index, \
             record) VALUES {rows}"
        )
    });
    let actual_inserts = batches(actual_rows).map(|rows| {
        format!(
            "INSERT INTO actual_lrps (process_guid, instance_index, domain, cell_id, state, \
             since, crash_count, evacuating_cell_id, mod_epoch, mod_index, record) VALUES {rows}"
        )
    });
    desired_inserts.chain(actual_inserts)
}

/// `rows`, joined by commas, [`SEED_BATCH`] at a time.
fn batches(rows: impl Iterator<Item = String>) -> impl Iterator<Item = String> {
    let mut rows = rows.peekable();
    std::iter::from_fn(move || {
        rows.peek()?;
        Some(
            rows.by_ref()
                .take(SEED_BATCH)
                .collect::<Vec<_>>()
                .join(", "),
        )
    })
}

/// A SQL string literal.
fn text(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

fn guid(d: usize) -> String {
    format!("app-{d:07}")
}

/// A created record's tag, as the store would give it (any unique epoch).
fn seed_tag(key: &str) -> ModificationTag {
    ModificationTag {
        epoch: format!("seed-{key}"),
        index: 0,
    }
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
    lrp.modification_tag = seed_tag(&lrp.instance_guid);
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
