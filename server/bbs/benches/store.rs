//! Write throughput of the store, SQLite and PostgreSQL, from one command.
//!
//! Run: `cargo bench -p lattice-bbs --bench store`. Every measurement runs
//! on each backend: SQLite on a temporary file (WAL, `synchronous=NORMAL`);
//! PostgreSQL on a local server started through `lattice_testkit::postgres`,
//! twice: with every commit flushed to disk before it returns (the
//! production default) and with `synchronous_commit=off` (commits flushed
//! in the background, as SQLite's `NORMAL` does). Each row starts from a
//! fresh file or database; "writers" is how many tokio tasks issue the
//! operations at once (they share the work evenly). Results go to
//! `docs/performance.md`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lattice_bbs::{suite, ActualLrpFilter, PostgresStore, SharedStore, SqliteStore, StoreError};
use lattice_testkit::postgres::{PostgresServer, DURABLE_SETTINGS};
use tempfile::TempDir;

const DESIRED_CREATES: usize = 5_000;
const ACTUAL_RECORDS: usize = 1_000;
const UPDATES_PER_RECORD: usize = 5;
const CONCURRENT_WRITERS: usize = 8;
const LIST_ROUNDS: usize = 50;

/// PostgreSQL with durable files, commits acknowledged before the flush.
const ASYNC_COMMIT_SETTINGS: &[(&str, &str)] = &[
    ("fsync", "on"),
    ("full_page_writes", "on"),
    ("synchronous_commit", "off"),
];

struct Row {
    backend: &'static str,
    operation: &'static str,
    writers: usize,
    count: usize,
    elapsed: Duration,
}

/// Where fresh stores come from.
enum Backend {
    Sqlite,
    Postgres(PostgresServer),
}

/// What a fresh store needs kept alive, and cleaned up after it.
enum Scratch<'a> {
    /// Removed on drop, after the store.
    Dir {
        _dir: TempDir,
    },
    Database(&'a PostgresServer, String),
}

impl Drop for Scratch<'_> {
    fn drop(&mut self) {
        if let Scratch::Database(server, name) = self {
            if let Err(e) = server.drop_database(name) {
                eprintln!("cannot drop bench database {name}: {e}");
            }
        }
    }
}

impl Backend {
    async fn fresh_store(&self) -> Result<(Scratch<'_>, SharedStore), StoreError> {
        match self {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().map_err(|e| {
                    StoreError::Backend(format!("cannot make a temporary directory: {e}"))
                })?;
                let store = SqliteStore::open(&dir.path().join("bench.db")).await?;
                Ok((Scratch::Dir { _dir: dir }, Arc::new(store)))
            }
            Backend::Postgres(server) => {
                let name = server.create_database();
                let store = PostgresStore::connect(&server.url(&name)).await?;
                Ok((Scratch::Database(server, name), Arc::new(store)))
            }
        }
    }

    /// A second store on the same database, as another process would hold.
    async fn second_store(&self, scratch: &Scratch<'_>) -> Result<Option<SharedStore>, StoreError> {
        match (self, scratch) {
            (Backend::Postgres(server), Scratch::Database(_, name)) => Ok(Some(Arc::new(
                PostgresStore::connect(&server.url(name)).await?,
            ))),
            _ => Ok(None),
        }
    }
}

fn main() -> Result<(), StoreError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| StoreError::Backend(format!("cannot start the tokio runtime: {e}")))?;
    let start = |settings| {
        PostgresServer::try_start_with(settings)
            .map_err(|e| StoreError::Backend(format!("cannot start postgres: {e}")))
    };
    let backends = [
        ("sqlite", Backend::Sqlite),
        ("postgres", Backend::Postgres(start(DURABLE_SETTINGS)?)),
        (
            "postgres, synchronous_commit=off",
            Backend::Postgres(start(ASYNC_COMMIT_SETTINGS)?),
        ),
    ];
    let mut rows = Vec::new();
    for (name, backend) in &backends {
        runtime.block_on(run(name, backend, &mut rows))?;
    }
    print_table(&rows);
    Ok(())
}

async fn run(name: &'static str, backend: &Backend, rows: &mut Vec<Row>) -> Result<(), StoreError> {
    let mut row = |operation, writers, count, elapsed| {
        rows.push(Row {
            backend: name,
            operation,
            writers,
            count,
            elapsed,
        })
    };
    for writers in [1, CONCURRENT_WRITERS] {
        let (_scratch, store) = backend.fresh_store().await?;
        let elapsed = create_desired(&store, writers).await?;
        row("desired LRP create", writers, DESIRED_CREATES, elapsed);
    }
    for writers in [1, CONCURRENT_WRITERS] {
        let (_scratch, store) = backend.fresh_store().await?;
        let elapsed = update_actual(&store, writers).await?;
        row(
            "actual LRP CAS update",
            writers,
            ACTUAL_RECORDS * UPDATES_PER_RECORD,
            elapsed,
        );
        if writers == 1 {
            // Reads of the records just written, for scale.
            let started = Instant::now();
            for _ in 0..LIST_ROUNDS {
                let listed = store.list_actual_lrps(&ActualLrpFilter::default()).await?;
                assert_eq!(listed.len(), ACTUAL_RECORDS, "every record is listed");
            }
            row("list 1,000 actual LRPs", 1, LIST_ROUNDS, started.elapsed());
        }
    }
    // The change feed across processes: creates through one store, timed
    // until a second store on the same database has published all of them.
    let (scratch, store) = backend.fresh_store().await?;
    if let Some(observer) = backend.second_store(&scratch).await? {
        let mut events = observer.subscribe();
        // Receive while the writes run: the feed holds only so many events
        // for a subscriber that falls behind.
        let seen = tokio::spawn(async move {
            for _ in 0..DESIRED_CREATES {
                events.recv().await.map_err(|e| {
                    StoreError::Backend(format!("the second store's feed failed: {e}"))
                })?;
            }
            Ok::<_, StoreError>(())
        });
        let started = Instant::now();
        create_desired(&store, CONCURRENT_WRITERS).await?;
        seen.await
            .map_err(|e| StoreError::Backend(format!("the observer failed: {e}")))??;
        row(
            "desired LRP create, seen by a 2nd store",
            CONCURRENT_WRITERS,
            DESIRED_CREATES,
            started.elapsed(),
        );
    }
    Ok(())
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
    println!("| backend | operation | writers | count | seconds | ops/s |");
    println!("|---|---|---:|---:|---:|---:|");
    for row in rows {
        let seconds = row.elapsed.as_secs_f64();
        println!(
            "| {} | {} | {} | {} | {:.3} | {:.0} |",
            row.backend,
            row.operation,
            row.writers,
            row.count,
            seconds,
            row.count as f64 / seconds
        );
    }
}
