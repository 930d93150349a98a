//! Write throughput of the SQLite store on a temporary file.
//!
//! Run: `cargo bench -p lattice-bbs --bench store`. Each row starts from a
//! fresh file; "writers" is how many tokio tasks issue the operations at
//! once (they share the work evenly). Results go to `docs/performance.md`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lattice_bbs::{suite, ActualLrpFilter, SharedStore, SqliteStore, StoreError};
use tempfile::TempDir;

const DESIRED_CREATES: usize = 5_000;
const ACTUAL_RECORDS: usize = 1_000;
const UPDATES_PER_RECORD: usize = 5;
const CONCURRENT_WRITERS: usize = 8;
const LIST_ROUNDS: usize = 50;

struct Row {
    operation: &'static str,
    writers: usize,
    count: usize,
    elapsed: Duration,
}

fn main() -> Result<(), StoreError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| StoreError::Backend(format!("cannot start the tokio runtime: {e}")))?;
    runtime.block_on(run())
}

async fn run() -> Result<(), StoreError> {
    let mut rows = Vec::new();
    for writers in [1, CONCURRENT_WRITERS] {
        let (_dir, store) = fresh_store().await?;
        rows.push(Row {
            operation: "desired LRP create",
            writers,
            count: DESIRED_CREATES,
            elapsed: create_desired(&store, writers).await?,
        });
    }
    for writers in [1, CONCURRENT_WRITERS] {
        let (_dir, store) = fresh_store().await?;
        rows.push(Row {
            operation: "actual LRP CAS update",
            writers,
            count: ACTUAL_RECORDS * UPDATES_PER_RECORD,
            elapsed: update_actual(&store, writers).await?,
        });
        if writers == 1 {
            // Reads of the records just written, for scale.
            let started = Instant::now();
            for _ in 0..LIST_ROUNDS {
                let listed = store.list_actual_lrps(&ActualLrpFilter::default()).await?;
                assert_eq!(listed.len(), ACTUAL_RECORDS, "every record is listed");
            }
            rows.push(Row {
                operation: "list 1,000 actual LRPs",
                writers: 1,
                count: LIST_ROUNDS,
                elapsed: started.elapsed(),
            });
        }
    }
    print_table(&rows);
    Ok(())
}

async fn fresh_store() -> Result<(TempDir, SharedStore), StoreError> {
    let dir = tempfile::tempdir()
        .map_err(|e| StoreError::Backend(format!("cannot make a temporary directory: {e}")))?;
    let store = SqliteStore::open(&dir.path().join("bench.db")).await?;
    Ok((dir, Arc::new(store)))
}

/// Splits `0..total` into `writers` runs of work, one tokio task each, and
/// returns how long all of them took.
async fn in_parallel<F, Fut>(total: usize, writers: usize, work: F) -> Result<Duration, StoreError>
where
    F: Fn(std::ops::Range<usize>) -> Fut,
    Fut: std::future::Future<Output = Result<(), StoreError>> + Send + 'static,
{
    let share = total.div_ceil(writers);
    let started = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| tokio::spawn(work(w * share..((w + 1) * share).min(total))))
        .collect();
    for task in tasks {
        task.await
            .map_err(|e| StoreError::Backend(format!("bench writer failed: {e}")))??;
    }
    Ok(started.elapsed())
}

async fn create_desired(store: &SharedStore, writers: usize) -> Result<Duration, StoreError> {
    in_parallel(DESIRED_CREATES, writers, |range| {
        let store = store.clone();
        async move {
            for i in range {
                store
                    .create_desired_lrp(suite::desired_lrp(&format!("lrp-{i}"), "bench", 3))
                    .await?;
            }
            Ok(())
        }
    })
    .await
}

/// Creates the records (untimed), then times `UPDATES_PER_RECORD` rounds of
/// compare-and-swap updates of every record, each writer owning a slice.
async fn update_actual(store: &SharedStore, writers: usize) -> Result<Duration, StoreError> {
    let mut records = Vec::with_capacity(ACTUAL_RECORDS);
    for index in 0..ACTUAL_RECORDS {
        let index = i64::try_from(index).unwrap_or(i64::MAX);
        records.push(
            store
                .create_actual_lrp(suite::actual_lrp("web", "bench", index))
                .await?,
        );
    }
    let records = Arc::new(records);
    in_parallel(ACTUAL_RECORDS, writers, |range| {
        let (store, records) = (store.clone(), records.clone());
        async move {
            let mut mine = records[range].to_vec();
            for round in 0..UPDATES_PER_RECORD {
                for lrp in &mut mine {
                    let mut next = lrp.clone();
                    next.crash_count = i64::try_from(round).unwrap_or(i64::MAX) + 1;
                    *lrp = store.update_actual_lrp(next).await?;
                }
            }
            Ok(())
        }
    })
    .await
}

fn print_table(rows: &[Row]) {
    println!("| operation | writers | count | seconds | ops/s |");
    println!("|---|---:|---:|---:|---:|");
    for row in rows {
        let seconds = row.elapsed.as_secs_f64();
        println!(
            "| {} | {} | {} | {:.3} | {:.0} |",
            row.operation,
            row.writers,
            row.count,
            seconds,
            row.count as f64 / seconds
        );
    }
}
