//! The store suite against a real PostgreSQL server (started by
//! `lattice_testkit::postgres`, one database per test), plus what only
//! PostgreSQL has: several store instances, as several processes would hold,
//! sharing one database and its change feed.
//!
//! Events from another store arrive asynchronously: those tests wait for
//! them with a generous guard against a hang (not a timing assertion), and
//! prove that nothing extra arrived by writing a marker last and checking it
//! is the next event.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use lattice_bbs::{
    open_store, suite, EventReceiver, PostgresStore, SharedStore, Store, StoreError,
};
use lattice_models::{ActualLrp, Event, TaskEvent};
use lattice_testkit::postgres::TestPostgres;
use sqlx::Connection;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

/// Long enough that only a broken feed reaches it.
const HANG_GUARD: Duration = Duration::from_secs(30);

async fn connect(pg: &TestPostgres) -> Arc<PostgresStore> {
    Arc::new(
        PostgresStore::connect(pg.url())
            .await
            .expect("the test database accepts a store"),
    )
}

macro_rules! suite_tests {
    ($($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let pg = TestPostgres::start();
                let store: SharedStore = connect(&pg).await;
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

/// The next event, waiting for it if it comes from another store.
async fn recv(events: &mut EventReceiver) -> Event {
    match tokio::time::timeout(HANG_GUARD, events.recv()).await {
        Ok(Ok(event)) => event,
        Ok(Err(e)) => panic!("the feed failed: {e}"),
        Err(_) => panic!("no event within {HANG_GUARD:?}"),
    }
}

/// Writes a marker task through `store` and checks that it is the next
/// event on every feed in `feeds`: nothing arrived in between.
async fn assert_marker_is_next(store: &dyn Store, feeds: &mut [&mut EventReceiver]) {
    let marker = store
        .create_task(suite::task("marker", "marker", 0))
        .await
        .expect("create marker");
    for events in feeds.iter_mut() {
        assert_eq!(
            recv(events).await,
            Event::TaskCreated {
                task: marker.clone()
            },
            "the marker is the next event: no duplicate, nothing extra"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_see_each_others_writes_in_commit_order() {
    let pg = TestPostgres::start();
    let (a, b) = (connect(&pg).await, connect(&pg).await);
    let (mut from_a, mut from_b) = (a.subscribe(), b.subscribe());

    // Alternate the writer: each store changes what the other wrote.
    let t0 = a
        .create_task(suite::task("t", "d", 1))
        .await
        .expect("create");
    let mut claimed = t0.clone();
    claimed.apply(TaskEvent::Claim, 2).expect("can claim");
    let t1 = b.update_task(claimed).await.expect("update");
    let d0 = b
        .create_desired_lrp(suite::desired_lrp("web", "d", 1))
        .await
        .expect("create");
    let mut scaled = d0.clone();
    scaled.instances = 3;
    let d1 = a.update_desired_lrp(scaled).await.expect("update");
    let a0 = a
        .create_actual_lrp(suite::actual_lrp("web", "d", 0))
        .await
        .expect("create");
    b.delete_task("t", &t1.modification_tag)
        .await
        .expect("delete");
    b.delete_actual_lrp("web", 0, &a0.modification_tag)
        .await
        .expect("delete");
    a.delete_desired_lrp("web", &d1.modification_tag)
        .await
        .expect("delete");

    let expected = [
        Event::TaskCreated { task: t0.clone() },
        Event::TaskChanged {
            task_before: t0,
            task_after: t1.clone(),
        },
        Event::DesiredLrpCreated {
            desired_lrp: d0.clone(),
        },
        Event::DesiredLrpChanged {
            desired_lrp_before: d0,
            desired_lrp_after: d1.clone(),
        },
        Event::ActualLrpCreated {
            actual_lrp: a0.clone(),
        },
        Event::TaskRemoved { task: t1 },
        Event::ActualLrpRemoved { actual_lrp: a0 },
        Event::DesiredLrpRemoved { desired_lrp: d1 },
    ];
    for (name, events) in [("a", &mut from_a), ("b", &mut from_b)] {
        for (i, want) in expected.iter().enumerate() {
            assert_eq!(&recv(events).await, want, "store {name}, event {i}");
        }
    }
    assert_marker_is_next(&*b, &mut [&mut from_a, &mut from_b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_in_two_stores_share_one_commit_order() {
    const RECORDS: i64 = 8;
    const UPDATES: usize = 15;
    let pg = TestPostgres::start();
    let (a, b) = (connect(&pg).await, connect(&pg).await);
    let (mut from_a, mut from_b) = (a.subscribe(), b.subscribe());
    let store_of = |index: i64| -> Arc<PostgresStore> {
        if index % 2 == 0 {
            a.clone()
        } else {
            b.clone()
        }
    };
    for index in 0..RECORDS {
        store_of(index)
            .create_actual_lrp(suite::actual_lrp("web", "d", index))
            .await
            .expect("create");
    }
    let writers: Vec<_> = (0..RECORDS)
        .map(|index| {
            let store = store_of(index);
            tokio::spawn(async move {
                for _ in 0..UPDATES {
                    let mut lrp = store.get_actual_lrp("web", index).await.expect("exists");
                    lrp.crash_count += 1;
                    store
                        .update_actual_lrp(lrp)
                        .await
                        .expect("sole writer of this index");
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer task does not panic");
    }

    let total = RECORDS as usize * (1 + UPDATES);
    let mut seen_by_a = Vec::with_capacity(total);
    for _ in 0..total {
        seen_by_a.push(recv(&mut from_a).await);
    }
    for (i, event) in seen_by_a.iter().enumerate() {
        assert_eq!(
            &recv(&mut from_b).await,
            event,
            "event {i}: both stores see one order"
        );
    }
    assert_marker_is_next(&*a, &mut [&mut from_a, &mut from_b]).await;

    // That one order is the commit order of every record.
    let mut last: Vec<Option<ActualLrp>> = vec![None; RECORDS as usize];
    for event in seen_by_a {
        match event {
            Event::ActualLrpCreated { actual_lrp } => {
                let slot = &mut last[actual_lrp.index as usize];
                assert!(slot.is_none(), "created once");
                *slot = Some(actual_lrp);
            }
            Event::ActualLrpChanged {
                actual_lrp_before,
                actual_lrp_after,
            } => {
                let slot = &mut last[actual_lrp_after.index as usize];
                let previous = slot.as_ref().expect("changed after created");
                assert_eq!(&actual_lrp_before, previous, "before is the previous after");
                assert_eq!(
                    actual_lrp_after.modification_tag.index,
                    previous.modification_tag.index + 1
                );
                *slot = Some(actual_lrp_after);
            }
            other => panic!("unexpected event {other:?}"),
        }
    }
    for (index, last) in last.into_iter().enumerate() {
        let stored = b.get_actual_lrp("web", index as i64).await.expect("exists");
        assert_eq!(Some(stored), last, "the last event is the stored state");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_updates_from_two_stores_one_wins() {
    let pg = TestPostgres::start();
    let (a, b) = (connect(&pg).await, connect(&pg).await);
    for round in 0..20 {
        let guid = format!("web-{round}");
        let read = a
            .create_actual_lrp(suite::actual_lrp(&guid, "d", 0))
            .await
            .expect("create");
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let writers: Vec<_> = [(a.clone(), "cell-a"), (b.clone(), "cell-b")]
            .into_iter()
            .map(|(store, cell_id)| {
                let barrier = barrier.clone();
                let mut claimed = read.clone();
                claimed.cell_id = cell_id.to_string();
                tokio::spawn(async move {
                    barrier.wait().await;
                    store.update_actual_lrp(claimed).await
                })
            })
            .collect();
        let mut winners = Vec::new();
        for writer in writers {
            match writer.await.expect("writer task does not panic") {
                Ok(lrp) => winners.push(lrp),
                Err(StoreError::Conflict { .. }) => {}
                Err(e) => panic!("expected success or conflict, got {e}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: exactly one writer wins");
        for store in [&a, &b] {
            let stored = store.get_actual_lrp(&guid, 0).await.expect("exists");
            assert_eq!(stored, winners[0], "both stores read the winner");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_increments_from_two_stores_lose_nothing() {
    const WRITERS_PER_STORE: i64 = 2;
    const INCREMENTS: i64 = 20;
    let pg = TestPostgres::start();
    let (a, b) = (connect(&pg).await, connect(&pg).await);
    a.create_actual_lrp(suite::actual_lrp("web", "d", 0))
        .await
        .expect("create");
    let writers: Vec<_> = [a.clone(), b.clone()]
        .into_iter()
        .flat_map(|store| (0..WRITERS_PER_STORE).map(move |_| store.clone()))
        .map(|store| {
            tokio::spawn(async move {
                let mut done = 0;
                while done < INCREMENTS {
                    let mut lrp = store.get_actual_lrp("web", 0).await.expect("exists");
                    lrp.crash_count += 1;
                    match store.update_actual_lrp(lrp).await {
                        Ok(_) => done += 1,
                        Err(StoreError::Conflict { .. }) => tokio::task::yield_now().await,
                        Err(e) => panic!("expected success or conflict, got {e}"),
                    }
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer task does not panic");
    }
    let stored = b.get_actual_lrp("web", 0).await.expect("exists");
    assert_eq!(stored.crash_count, 2 * WRITERS_PER_STORE * INCREMENTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_are_shared_by_two_stores() {
    let pg = TestPostgres::start();
    let (a, b) = (connect(&pg).await, connect(&pg).await);
    let long = Duration::from_secs(60);

    // Eight contenders, half on each store, race for one free lock.
    let barrier = Arc::new(tokio::sync::Barrier::new(8));
    let contenders: Vec<_> = (0..8)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            let barrier = barrier.clone();
            tokio::spawn(async move {
                let owner = format!("brain-{i}");
                barrier.wait().await;
                let won = store
                    .acquire_lock("auctioneer", &owner, long)
                    .await
                    .expect("acquire");
                (owner, won)
            })
        })
        .collect();
    let mut winners = HashSet::new();
    for contender in contenders {
        let (owner, won) = contender.await.expect("contender does not panic");
        if won {
            winners.insert(owner);
        }
    }
    assert_eq!(winners.len(), 1, "exactly one owner: {winners:?}");
    let winner = winners.into_iter().next();
    for store in [&a, &b] {
        assert_eq!(
            store.lock_owner("auctioneer").await.expect("read"),
            winner,
            "both stores agree on the owner"
        );
    }

    // A lease held through one store is refused through the other until
    // released.
    assert!(a
        .acquire_lock("converger", "a", long)
        .await
        .expect("acquire"));
    assert!(!b
        .acquire_lock("converger", "b", long)
        .await
        .expect("acquire"));
    b.release_lock("converger", "b")
        .await
        .expect("a release by a non-owner does nothing");
    assert_eq!(
        b.lock_owner("converger").await.expect("read").as_deref(),
        Some("a")
    );
    a.release_lock("converger", "a").await.expect("release");
    assert!(b
        .acquire_lock("converger", "b", long)
        .await
        .expect("acquire"));
    assert_eq!(
        a.lock_owner("converger").await.expect("read").as_deref(),
        Some("b")
    );
}

/// How many migrations the store ships.
fn migration_count() -> i64 {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres");
    let count = std::fs::read_dir(dir)
        .expect("the migrations directory exists")
        .filter(|entry| {
            entry
                .as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "sql"))
        })
        .count();
    i64::try_from(count).expect("a handful of migrations")
}

async fn applied_migrations(pg: &TestPostgres) -> i64 {
    let mut conn = sqlx::PgConnection::connect(pg.url())
        .await
        .expect("the test database accepts a connection");
    let applied = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&mut conn)
        .await
        .expect("the migrations table exists");
    conn.close().await.expect("the connection closes");
    applied
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_migrates_nothing_twice_and_keeps_the_records() {
    let pg = TestPostgres::start();
    let store = connect(&pg).await;
    let task = store
        .create_task(suite::task("t", "d", 1))
        .await
        .expect("create");
    store.upsert_domain("d", None).await.expect("upsert domain");
    store.close().await;
    drop(store);

    let store = connect(&pg).await;
    assert_eq!(store.get_task("t").await.expect("the task survived"), task);
    assert_eq!(store.domains().await.expect("list"), ["d"]);
    assert_eq!(applied_migrations(&pg).await, migration_count());
    // The tag read before the reconnect still guards writes.
    let again = store
        .update_task(task.clone())
        .await
        .expect("the tag is current");
    assert_eq!(again.modification_tag.index, 1);
    assert!(matches!(
        store.update_task(task).await,
        Err(StoreError::Conflict { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brains_starting_at_once_all_migrate_one_database() {
    let pg = TestPostgres::start();
    let connects: Vec<_> = (0..4)
        .map(|_| {
            let url = pg.url().to_string();
            tokio::spawn(async move { PostgresStore::connect(&url).await })
        })
        .collect();
    let mut stores = Vec::new();
    for connect in connects {
        stores.push(
            connect
                .await
                .expect("connect task does not panic")
                .expect("every concurrent connect succeeds"),
        );
    }
    assert_eq!(applied_migrations(&pg).await, migration_count());
    let created = stores[0]
        .create_task(suite::task("t", "d", 1))
        .await
        .expect("create");
    for store in &stores {
        assert_eq!(store.get_task("t").await.expect("one database"), created);
    }
}

/// An event whose notification was lost (inserted here without `NOTIFY`,
/// as if the listening connection had been down) still arrives: the feed
/// polls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_without_a_notification_arrive_by_polling() {
    let pg = TestPostgres::start();
    let store = connect(&pg).await;
    let mut events = store.subscribe();
    let event = Event::TaskCreated {
        task: suite::task("silent", "d", 1),
    };
    let mut conn = sqlx::PgConnection::connect(pg.url())
        .await
        .expect("the test database accepts a connection");
    sqlx::query("INSERT INTO events (event) VALUES ($1)")
        .bind(serde_json::to_string(&event).expect("events serialize"))
        .execute(&mut conn)
        .await
        .expect("insert");
    conn.close().await.expect("the connection closes");
    assert_eq!(recv(&mut events).await, event);
    assert_marker_is_next(&*store, &mut [&mut events]).await;
}

/// Killing the listening connections of both stores (as a restart of the
/// server or a network cut would) loses no event of either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_listening_connections_lose_no_event() {
    let pg = TestPostgres::start();
    let (a, b) = (connect(&pg).await, connect(&pg).await);
    let (mut from_a, mut from_b) = (a.subscribe(), b.subscribe());
    let mut conn = sqlx::PgConnection::connect(pg.url())
        .await
        .expect("the test database accepts a connection");
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND query LIKE 'LISTEN %'",
    )
    .fetch_all(&mut conn)
    .await
    .expect("terminate");
    conn.close().await.expect("the connection closes");
    assert_eq!(killed, [true, true], "one listening connection per store");

    let from_b_write = b
        .create_task(suite::task("after-b", "d", 1))
        .await
        .expect("create");
    let from_a_write = a
        .create_task(suite::task("after-a", "d", 2))
        .await
        .expect("create");
    for events in [&mut from_a, &mut from_b] {
        assert_eq!(
            recv(events).await,
            Event::TaskCreated {
                task: from_b_write.clone()
            }
        );
        assert_eq!(
            recv(events).await,
            Event::TaskCreated {
                task: from_a_write.clone()
            }
        );
    }
    assert_marker_is_next(&*b, &mut [&mut from_a, &mut from_b]).await;
}

/// Pruning every event, as after a quiet spell longer than the retention,
/// leaves a feed that still delivers everything, to both stores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feeds_keep_working_after_every_event_is_pruned() {
    let pg = TestPostgres::start();
    let (a, b) = (connect(&pg).await, connect(&pg).await);
    let (mut from_a, mut from_b) = (a.subscribe(), b.subscribe());
    let first = a
        .create_desired_lrp(suite::desired_lrp("web", "d", 1))
        .await
        .expect("create");
    for events in [&mut from_a, &mut from_b] {
        assert_eq!(
            recv(events).await,
            Event::DesiredLrpCreated {
                desired_lrp: first.clone()
            }
        );
    }
    let pruned = b.prune_events(Duration::ZERO).await.expect("prune");
    assert_eq!(pruned, 1, "the one event is pruned");

    let second = b
        .create_desired_lrp(suite::desired_lrp("api", "d", 1))
        .await
        .expect("create");
    let third = a
        .create_desired_lrp(suite::desired_lrp("worker", "d", 1))
        .await
        .expect("create");
    for events in [&mut from_a, &mut from_b] {
        assert_eq!(
            recv(events).await,
            Event::DesiredLrpCreated {
                desired_lrp: second.clone()
            }
        );
        assert_eq!(
            recv(events).await,
            Event::DesiredLrpCreated {
                desired_lrp: third.clone()
            }
        );
    }
    assert_marker_is_next(&*a, &mut [&mut from_a, &mut from_b]).await;
}

/// Dropping the caller's future after the write started neither loses the
/// write nor its event: the write runs on its own task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_write_still_commits_and_publishes() {
    let pg = TestPostgres::start();
    let store = connect(&pg).await;
    let mut events = store.subscribe();
    tokio::select! {
        biased;
        // On a busy machine the write may even finish within this first
        // poll; either way it must be stored and published.
        _ = store.create_task(suite::task("t", "d", 1)) => {}
        () = std::future::ready(()) => {}
    }
    let Event::TaskCreated { task } = recv(&mut events).await else {
        panic!("expected task_created");
    };
    assert_eq!(store.get_task("t").await.expect("the task is stored"), task);
}

/// A dropped store stops following the feed: its subscribers see it close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_store_ends_its_feed() {
    let pg = TestPostgres::start();
    let store = connect(&pg).await;
    let mut events = store.subscribe();
    drop(store);
    match tokio::time::timeout(HANG_GUARD, events.recv()).await {
        Ok(Err(RecvError::Closed)) => {}
        other => panic!("expected the feed to close, got {other:?}"),
    }
}

/// A store's writes are published by its own store before the write
/// returns, like SQLite's: a subscriber need not wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_writes_are_published_before_they_return() {
    let pg = TestPostgres::start();
    let (a, b) = (connect(&pg).await, connect(&pg).await);
    let mut from_a = a.subscribe();
    // Interleave the other store's writes so that a's read-back path, not
    // only its fast path, runs.
    for i in 0..10 {
        let other = b
            .create_task(suite::task(&format!("b-{i}"), "d", i))
            .await
            .expect("create");
        let mine = a
            .create_task(suite::task(&format!("a-{i}"), "d", i))
            .await
            .expect("create");
        assert_eq!(
            from_a.try_recv(),
            Ok(Event::TaskCreated { task: other }),
            "the other store's earlier write comes first"
        );
        assert_eq!(from_a.try_recv(), Ok(Event::TaskCreated { task: mine }));
        assert_eq!(from_a.try_recv(), Err(TryRecvError::Empty));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_store_picks_postgres_for_postgres_urls() {
    let pg = TestPostgres::start();
    let postgresql = pg.url().replacen("postgres://", "postgresql://", 1);
    for (guid, url) in [("via-postgres", pg.url()), ("via-postgresql", &postgresql)] {
        let dir = tempfile::tempdir().expect("a temporary directory can be made");
        let default = dir.path().join("bbs.db");
        let store = open_store(url, &default).await.expect("opens");
        store
            .create_task(suite::task(guid, "d", 1))
            .await
            .expect("create");
        assert!(!default.exists(), "no SQLite file was made");
    }
    let check = PostgresStore::connect(pg.url()).await.expect("connect");
    let tasks = check.list_tasks(&Default::default()).await.expect("list");
    let guids: Vec<_> = tasks.into_iter().map(|t| t.task_guid).collect();
    assert_eq!(
        guids,
        ["via-postgres", "via-postgresql"],
        "both wrote to PostgreSQL"
    );
}

/// A database written before migration 0003 (no summary columns) gets them
/// filled from its records when a brain connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_from_before_the_summary_columns_gets_them_from_its_records() {
    let pg = TestPostgres::start();
    let store = connect(&pg).await;
    let shared: lattice_bbs::SharedStore = store.clone();
    suite::write_records_for_summaries(&shared).await;
    drop(shared);
    store.close().await;
    drop(store);
    let mut old = sqlx::PgConnection::connect(pg.url())
        .await
        .expect("the test database accepts a connection");
    for statement in suite::UNDO_SUMMARY_COLUMNS {
        sqlx::query(statement)
            .execute(&mut old)
            .await
            .unwrap_or_else(|err| panic!("{statement}: {err}"));
    }
    old.close().await.expect("the connection closes");

    let store: lattice_bbs::SharedStore = connect(&pg).await;
    suite::summaries_say_what_the_records_say(&store).await;
}
