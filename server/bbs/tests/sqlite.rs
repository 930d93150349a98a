//! The store suite against the SQLite backend, each check on a fresh file,
//! plus what only SQLite has: reopening a file, its corruption handling and
//! the in-memory store.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use lattice_bbs::{suite, RecordKind, SharedStore, SqliteStore, Store, StoreError};
use lattice_models::Event;
use tempfile::TempDir;

/// A fresh store in a new temporary directory; keep the directory alive as
/// long as the store.
async fn file_store() -> (TempDir, SharedStore) {
    let dir = tempfile::tempdir().expect("a temporary directory can be made");
    let store = SqliteStore::open(&dir.path().join("store.db"))
        .await
        .expect("a new store opens");
    (dir, Arc::new(store))
}

macro_rules! suite_tests {
    ($($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let (_dir, store) = file_store().await;
                suite::$check(store).await;
            }
        )*
    };
}

suite_tests!(
    task_crud,
    desired_lrp_crud,
    actual_lrp_crud,
    duplicate_create_fails,
    missing_records_are_not_found,
    stale_tags_conflict,
    recreated_records_get_a_new_epoch,
    concurrent_conflicting_updates_one_wins,
    retried_updates_lose_nothing,
    task_filters_and_order,
    desired_lrp_filters_and_order,
    actual_lrp_filters_and_order,
    summaries_match_the_records,
    events_in_order_with_before_and_after,
    batch_create_skips_existing_and_publishes_in_order,
    only_successful_record_writes_publish,
    concurrent_events_follow_commit_order,
    cells_expire_and_renew,
    domains_expire_and_refresh,
    locks_are_leases,
    lock_contention_has_one_winner,
);

#[tokio::test]
async fn records_survive_closing_and_reopening_the_file() {
    let dir = tempfile::tempdir().expect("a temporary directory can be made");
    // Parent directories are created on open.
    let path = dir.path().join("data").join("bbs").join("store.db");
    let store = SqliteStore::open(&path).await.expect("a new store opens");
    let task = store
        .create_task(suite::task("t", "d", 1))
        .await
        .expect("create");
    let desired = store
        .create_desired_lrp(suite::desired_lrp("web", "d", 3))
        .await
        .expect("create");
    let mut actual = store
        .create_actual_lrp(suite::actual_lrp("web", "d", 0))
        .await
        .expect("create");
    actual.crash_count = 2;
    let actual = store.update_actual_lrp(actual).await.expect("update");
    store
        .upsert_cell(suite::cell("c1"), Duration::from_secs(60))
        .await
        .expect("upsert cell");
    store.upsert_domain("d", None).await.expect("upsert domain");
    assert!(store
        .acquire_lock("brain", "me", Duration::from_secs(60))
        .await
        .expect("acquire"));
    store.close().await;
    drop(store);

    let store = SqliteStore::open(&path).await.expect("the store reopens");
    assert_eq!(store.get_task("t").await.expect("task survived"), task);
    assert_eq!(
        store
            .get_desired_lrp("web")
            .await
            .expect("desired LRP survived"),
        desired
    );
    assert_eq!(
        store
            .get_actual_lrp("web", 0)
            .await
            .expect("actual LRP survived"),
        actual
    );
    assert_eq!(store.list_cells().await.expect("list"), [suite::cell("c1")]);
    assert_eq!(store.domains().await.expect("list"), ["d"]);
    assert_eq!(
        store.lock_owner("brain").await.expect("read").as_deref(),
        Some("me")
    );
    // The stored tags still guard writes after the restart.
    let again = store
        .update_actual_lrp(actual.clone())
        .await
        .expect("the tag read before the restart is current");
    assert_eq!(again.modification_tag.index, 2);
    assert!(matches!(
        store.update_actual_lrp(actual).await,
        Err(StoreError::Conflict { .. })
    ));
}

#[tokio::test]
async fn an_unreadable_record_is_reported_as_corrupt_and_skipped_by_lists() {
    let dir = tempfile::tempdir().expect("a temporary directory can be made");
    let path = dir.path().join("store.db");
    let store = SqliteStore::open(&path).await.expect("a new store opens");
    store
        .create_task(suite::task("t", "d", 1))
        .await
        .expect("create");
    store
        .create_task(suite::task("healthy", "d", 2))
        .await
        .expect("create");
    damage_task(&path, "t").await;

    match store.get_task("t").await {
        Err(StoreError::Corrupt { kind, key, .. }) => {
            assert_eq!((kind, key.as_str()), (RecordKind::Task, "t"));
        }
        other => panic!("expected a corrupt task, got {other:?}"),
    }
    // Issue 15: a list skips (and logs) the record it cannot decode rather
    // than hiding every other one from the converger, the rep and `ltc`.
    let listed = store
        .list_tasks(&Default::default())
        .await
        .expect("the list skips the damaged record");
    let guids: Vec<&str> = listed.iter().map(|t| t.task_guid.as_str()).collect();
    assert_eq!(guids, ["healthy"]);
}

/// Overwrites a task's JSON behind the store's back.
async fn damage_task(path: &Path, task_guid: &str) {
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("the store file opens");
    sqlx::query("UPDATE tasks SET record = '{not json' WHERE task_guid = ?")
        .bind(task_guid)
        .execute(&mut conn)
        .await
        .expect("the record is overwritten");
    conn.close().await.expect("the connection closes");
}

/// Dropping the caller's future after the write started neither loses the
/// write nor its event: the write runs on its own task.
#[tokio::test]
async fn a_dropped_write_still_commits_and_publishes() {
    let (_dir, store) = file_store().await;
    let mut events = store.subscribe();
    tokio::select! {
        biased;
        // On a busy machine the write may even finish within this first
        // poll; either way it must be stored and published.
        _ = store.create_task(suite::task("t", "d", 1)) => {}
        () = std::future::ready(()) => {}
    }
    let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("the event arrives")
        .expect("the feed is open");
    let Event::TaskCreated { task } = event else {
        panic!("expected task_created, got {event:?}");
    };
    assert_eq!(store.get_task("t").await.expect("the task is stored"), task);
}

#[tokio::test]
async fn the_in_memory_store_keeps_its_records() {
    let store: SharedStore = Arc::new(
        SqliteStore::open_in_memory()
            .await
            .expect("an in-memory store opens"),
    );
    suite::task_crud(store.clone()).await;
    suite::events_in_order_with_before_and_after(store.clone()).await;
    suite::actual_lrp_filters_and_order(store).await;
}

/// A store file written before migration 0003 (no summary columns) gets
/// them filled from its records when it opens, so an upgraded cluster's
/// first convergence pass sees its instances as they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_from_before_the_summary_columns_gets_them_from_its_records() {
    let (dir, store) = file_store().await;
    suite::write_records_for_summaries(&store).await;
    drop(store);
    // Make the file what a store before 0003 wrote: no columns, no record
    // of the migration.
    let path = dir.path().join("store.db");
    let old = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("the file opens");
    for statement in suite::UNDO_SUMMARY_COLUMNS {
        sqlx::query(statement)
            .execute(&old)
            .await
            .unwrap_or_else(|err| panic!("{statement}: {err}"));
    }
    old.close().await;

    let store: SharedStore = Arc::new(SqliteStore::open(&path).await.expect("the old file opens"));
    suite::summaries_say_what_the_records_say(&store).await;
}
