//! The store test suite, written once against the [`Store`](crate::Store)
//! trait and run against every backend (`tests/sqlite.rs`,
//! `tests/postgres.rs`).
//!
//! Each check is a `pub async fn` taking a fresh, empty store and panicking
//! when the backend breaks the contract documented on
//! [`Store`](crate::Store). A backend's test file calls every check, one
//! `#[tokio::test]` each; run the concurrency checks on a multi-threaded
//! runtime so that writers really race.
//!
//! The TTL checks sleep for real (a few hundred milliseconds): expiry is
//! wall-clock time kept by the store, which tokio's paused time cannot move.
//!
//! The sample builders ([`task`], [`desired_lrp`], [`actual_lrp`], [`cell`])
//! are public so that benchmarks and other tests build the same records.

use std::collections::HashSet;
use std::time::Duration;

use lattice_models::{
    Action, ActualLrp, ActualLrpEvent, ActualLrpState, CellCapacity, CellPresence, DesiredLrp,
    DesiredLrpCreateRequest, Event, ModificationTag, Task, TaskCreateRequest, TaskEvent, TaskState,
};
use tokio::sync::broadcast::error::TryRecvError;

use crate::{
    ActualLrpFilter, DesiredLrpFilter, EventReceiver, RecordKind, SharedStore, StoreError,
    TaskFilter,
};

// --- sample records --------------------------------------------------------

/// A PENDING task created at `created_at` (nanoseconds).
pub fn task(task_guid: &str, domain: &str, created_at: i64) -> Task {
    TaskCreateRequest {
        task_guid: task_guid.to_string(),
        domain: domain.to_string(),
        rootfs: "docker:///busybox".to_string(),
        action: Action::run("/bin/echo", &["hello"]),
        env: vec![lattice_models::EnvironmentVariable::new("LANG", "C")],
        cpu_weight: 10,
        disk_mb: 64,
        memory_mb: 128,
        privileged: false,
        log_guid: task_guid.to_string(),
        log_source: "TASK".to_string(),
        result_file: String::new(),
        completion_callback_url: String::new(),
        annotation: "suite".to_string(),
        metrics_guid: String::new(),
        egress_rules: Vec::new(),
    }
    .into_task(created_at)
}

/// A desired LRP of `instances` instances.
pub fn desired_lrp(process_guid: &str, domain: &str, instances: i64) -> DesiredLrp {
    DesiredLrpCreateRequest {
        process_guid: process_guid.to_string(),
        domain: domain.to_string(),
        rootfs: "docker:///busybox".to_string(),
        instances,
        setup: None,
        action: Action::run("/bin/httpd", &["-f", "-p", "8080"]),
        monitor: Some(Action::run("/bin/true", &[])),
        start_timeout: 60,
        env: Vec::new(),
        cpu_weight: 10,
        disk_mb: 64,
        memory_mb: 128,
        privileged: false,
        ports: vec![8080],
        routes: None,
        log_guid: process_guid.to_string(),
        log_source: "APP".to_string(),
        annotation: String::new(),
        metrics_guid: String::new(),
        egress_rules: Vec::new(),
        disable_ssh: false,
    }
    .into_desired_lrp()
}

/// An UNCLAIMED instance.
pub fn actual_lrp(process_guid: &str, domain: &str, index: i64) -> ActualLrp {
    ActualLrp::unclaimed(process_guid, domain, index, 1_000)
}

/// A cell presence.
pub fn cell(cell_id: &str) -> CellPresence {
    CellPresence {
        cell_id: cell_id.to_string(),
        zone: "z1".to_string(),
        rep_address: format!("http://{cell_id}.local:1800"),
        capacity: CellCapacity {
            memory_mb: 1024,
            disk_mb: 4096,
            containers: 16,
        },
        rootfs_providers: lattice_models::cell::docker_rootfs_providers(),
    }
}

fn tag(epoch: &str, index: u32) -> ModificationTag {
    ModificationTag {
        epoch: epoch.to_string(),
        index,
    }
}

fn assert_not_found<T: std::fmt::Debug>(result: Result<T, StoreError>, kind: RecordKind) {
    match result {
        Err(StoreError::NotFound { kind: k, .. }) if k == kind => {}
        other => panic!("expected {kind} not found, got {other:?}"),
    }
}

fn assert_conflict<T: std::fmt::Debug>(result: Result<T, StoreError>, kind: RecordKind) {
    match result {
        Err(StoreError::Conflict { kind: k, .. }) if k == kind => {}
        other => panic!("expected {kind} conflict, got {other:?}"),
    }
}

fn assert_already_exists<T: std::fmt::Debug>(result: Result<T, StoreError>, kind: RecordKind) {
    match result {
        Err(StoreError::AlreadyExists { kind: k, .. }) if k == kind => {}
        other => panic!("expected {kind} already exists, got {other:?}"),
    }
}

/// The next event, which must already have been published.
fn next_event(events: &mut EventReceiver) -> Event {
    match events.try_recv() {
        Ok(event) => event,
        Err(e) => panic!("expected an event, got {e:?}"),
    }
}

fn assert_no_event(events: &mut EventReceiver) {
    match events.try_recv() {
        Err(TryRecvError::Empty) => {}
        other => panic!("expected no event, got {other:?}"),
    }
}

// --- CRUD ------------------------------------------------------------------

/// Create, get, update, delete of a task; tags and returned records.
pub async fn task_crud(store: SharedStore) {
    let created = store
        .create_task(task("t1", "d", 5))
        .await
        .expect("create of a new task succeeds");
    assert!(
        !created.modification_tag.epoch.is_empty(),
        "create sets an epoch"
    );
    assert_eq!(created.modification_tag.index, 0, "create sets index 0");
    assert_eq!(store.get_task("t1").await.expect("task exists"), created);

    let mut claimed = created.clone();
    claimed
        .apply(TaskEvent::Claim, 6)
        .expect("a pending task can be claimed");
    claimed.cell_id = "cell-1".to_string();
    let updated = store
        .update_task(claimed.clone())
        .await
        .expect("update with the current tag succeeds");
    assert_eq!(
        updated.modification_tag,
        tag(&created.modification_tag.epoch, 1)
    );
    assert_eq!(updated.state, TaskState::Claimed);
    assert_eq!(updated.cell_id, "cell-1");
    assert_eq!(store.get_task("t1").await.expect("task exists"), updated);

    store
        .delete_task("t1", &updated.modification_tag)
        .await
        .expect("delete with the current tag succeeds");
    assert_not_found(store.get_task("t1").await, RecordKind::Task);
    assert!(store
        .list_tasks(&TaskFilter::default())
        .await
        .expect("list succeeds")
        .is_empty());
}

/// Create, get, update, delete of a desired LRP.
pub async fn desired_lrp_crud(store: SharedStore) {
    let created = store
        .create_desired_lrp(desired_lrp("web", "apps", 2))
        .await
        .expect("create of a new desired LRP succeeds");
    assert!(!created.modification_tag.epoch.is_empty());
    assert_eq!(created.modification_tag.index, 0);
    assert_eq!(store.get_desired_lrp("web").await.expect("exists"), created);

    let mut scaled = created.clone();
    scaled.instances = 5;
    let updated = store
        .update_desired_lrp(scaled)
        .await
        .expect("update with the current tag succeeds");
    assert_eq!(updated.instances, 5);
    assert_eq!(
        updated.modification_tag,
        tag(&created.modification_tag.epoch, 1)
    );
    assert_eq!(store.get_desired_lrp("web").await.expect("exists"), updated);

    // A write that changes nothing still bumps the tag.
    let again = store
        .update_desired_lrp(updated.clone())
        .await
        .expect("an unchanged update succeeds");
    assert_eq!(again.modification_tag.index, 2);

    store
        .delete_desired_lrp("web", &again.modification_tag)
        .await
        .expect("delete with the current tag succeeds");
    assert_not_found(store.get_desired_lrp("web").await, RecordKind::DesiredLrp);
}

/// Create, get, update, delete of an actual LRP, keyed by guid and index.
pub async fn actual_lrp_crud(store: SharedStore) {
    let zero = store
        .create_actual_lrp(actual_lrp("web", "apps", 0))
        .await
        .expect("create of index 0 succeeds");
    let one = store
        .create_actual_lrp(actual_lrp("web", "apps", 1))
        .await
        .expect("another index of the same process is another record");
    assert_eq!(zero.modification_tag.index, 0);
    assert_ne!(zero.modification_tag.epoch, one.modification_tag.epoch);
    assert_eq!(store.get_actual_lrp("web", 0).await.expect("exists"), zero);
    assert_eq!(store.get_actual_lrp("web", 1).await.expect("exists"), one);

    let mut claimed = one.clone();
    claimed
        .apply(ActualLrpEvent::Claim, 2_000)
        .expect("an unclaimed instance can be claimed");
    claimed.cell_id = "cell-1".to_string();
    claimed.instance_guid = "i-1".to_string();
    let updated = store
        .update_actual_lrp(claimed)
        .await
        .expect("update with the current tag succeeds");
    assert_eq!(updated.state, ActualLrpState::Claimed);
    assert_eq!(
        updated.modification_tag,
        tag(&one.modification_tag.epoch, 1)
    );
    assert_eq!(
        store.get_actual_lrp("web", 1).await.expect("exists"),
        updated
    );
    assert_eq!(
        store.get_actual_lrp("web", 0).await.expect("exists"),
        zero,
        "the other index is untouched"
    );

    store
        .delete_actual_lrp("web", 1, &updated.modification_tag)
        .await
        .expect("delete with the current tag succeeds");
    assert_not_found(store.get_actual_lrp("web", 1).await, RecordKind::ActualLrp);
    assert_eq!(
        store
            .get_actual_lrp("web", 0)
            .await
            .expect("index 0 remains"),
        zero
    );
}

/// A second create of the same key fails and leaves the first record alone.
pub async fn duplicate_create_fails(store: SharedStore) {
    let first = store
        .create_task(task("t", "d", 1))
        .await
        .expect("first create");
    assert_already_exists(
        store.create_task(task("t", "other", 2)).await,
        RecordKind::Task,
    );
    assert_eq!(store.get_task("t").await.expect("exists"), first);

    let first = store
        .create_desired_lrp(desired_lrp("web", "apps", 1))
        .await
        .expect("first create");
    assert_already_exists(
        store
            .create_desired_lrp(desired_lrp("web", "apps", 9))
            .await,
        RecordKind::DesiredLrp,
    );
    assert_eq!(store.get_desired_lrp("web").await.expect("exists"), first);

    let first = store
        .create_actual_lrp(actual_lrp("web", "apps", 0))
        .await
        .expect("first create");
    assert_already_exists(
        store.create_actual_lrp(actual_lrp("web", "other", 0)).await,
        RecordKind::ActualLrp,
    );
    assert_eq!(store.get_actual_lrp("web", 0).await.expect("exists"), first);
}

/// Get, update and delete of absent records fail with `NotFound`.
pub async fn missing_records_are_not_found(store: SharedStore) {
    let any = tag("e", 0);
    assert_not_found(store.get_task("nope").await, RecordKind::Task);
    assert_not_found(
        store.update_task(task("nope", "d", 1)).await,
        RecordKind::Task,
    );
    assert_not_found(store.delete_task("nope", &any).await, RecordKind::Task);

    assert_not_found(store.get_desired_lrp("nope").await, RecordKind::DesiredLrp);
    assert_not_found(
        store.update_desired_lrp(desired_lrp("nope", "d", 1)).await,
        RecordKind::DesiredLrp,
    );
    assert_not_found(
        store.delete_desired_lrp("nope", &any).await,
        RecordKind::DesiredLrp,
    );

    store
        .create_actual_lrp(actual_lrp("web", "d", 0))
        .await
        .expect("create succeeds");
    assert_not_found(store.get_actual_lrp("web", 1).await, RecordKind::ActualLrp);
    assert_not_found(store.get_actual_lrp("nope", 0).await, RecordKind::ActualLrp);
    assert_not_found(
        store.update_actual_lrp(actual_lrp("web", "d", 1)).await,
        RecordKind::ActualLrp,
    );
    assert_not_found(
        store.delete_actual_lrp("web", 1, &any).await,
        RecordKind::ActualLrp,
    );
}

// --- compare-and-swap ------------------------------------------------------

/// Updates and deletes with a stale tag (old index, or the epoch of an
/// earlier record with the same key) fail with `Conflict` and change nothing.
pub async fn stale_tags_conflict(store: SharedStore) {
    // Tasks.
    let v0 = store.create_task(task("t", "d", 1)).await.expect("create");
    let v1 = store
        .update_task(v0.clone())
        .await
        .expect("update with current tag");
    assert_conflict(store.update_task(v0.clone()).await, RecordKind::Task);
    assert_conflict(
        store.delete_task("t", &v0.modification_tag).await,
        RecordKind::Task,
    );
    assert_eq!(store.get_task("t").await.expect("still there"), v1);
    let ahead = tag(&v1.modification_tag.epoch, v1.modification_tag.index + 1);
    assert_conflict(store.delete_task("t", &ahead).await, RecordKind::Task);

    // Desired LRPs.
    let v0 = store
        .create_desired_lrp(desired_lrp("web", "d", 1))
        .await
        .expect("create");
    let mut scaled = v0.clone();
    scaled.instances = 3;
    let v1 = store.update_desired_lrp(scaled).await.expect("update");
    assert_conflict(
        store.update_desired_lrp(v0.clone()).await,
        RecordKind::DesiredLrp,
    );
    assert_conflict(
        store.delete_desired_lrp("web", &v0.modification_tag).await,
        RecordKind::DesiredLrp,
    );
    assert_eq!(store.get_desired_lrp("web").await.expect("still there"), v1);

    // Actual LRPs.
    let v0 = store
        .create_actual_lrp(actual_lrp("web", "d", 0))
        .await
        .expect("create");
    let v1 = store.update_actual_lrp(v0.clone()).await.expect("update");
    assert_conflict(
        store.update_actual_lrp(v0.clone()).await,
        RecordKind::ActualLrp,
    );
    assert_conflict(
        store
            .delete_actual_lrp("web", 0, &v0.modification_tag)
            .await,
        RecordKind::ActualLrp,
    );
    assert_eq!(
        store.get_actual_lrp("web", 0).await.expect("still there"),
        v1
    );
}

/// A record deleted and created again gets a new epoch: a writer holding a
/// tag of the old record cannot write the new one, even at the same index.
pub async fn recreated_records_get_a_new_epoch(store: SharedStore) {
    let old = store.create_task(task("t", "d", 1)).await.expect("create");
    store
        .delete_task("t", &old.modification_tag)
        .await
        .expect("delete");
    let new = store
        .create_task(task("t", "d", 2))
        .await
        .expect("create again");
    assert_ne!(new.modification_tag.epoch, old.modification_tag.epoch);
    assert_eq!(new.modification_tag.index, 0);
    assert_conflict(store.update_task(old).await, RecordKind::Task);

    let old = store
        .create_actual_lrp(actual_lrp("web", "d", 0))
        .await
        .expect("create");
    store
        .delete_actual_lrp("web", 0, &old.modification_tag)
        .await
        .expect("delete");
    let new = store
        .create_actual_lrp(actual_lrp("web", "d", 0))
        .await
        .expect("create again");
    assert_ne!(new.modification_tag.epoch, old.modification_tag.epoch);
    assert_conflict(
        store
            .delete_actual_lrp("web", 0, &old.modification_tag)
            .await,
        RecordKind::ActualLrp,
    );
}

/// Two writers that read the same version race to update it: exactly one
/// wins, the other gets `Conflict`, and the winner's write is stored.
pub async fn concurrent_conflicting_updates_one_wins(store: SharedStore) {
    for round in 0..20 {
        let guid = format!("web-{round}");
        let read = store
            .create_actual_lrp(actual_lrp(&guid, "d", 0))
            .await
            .expect("create");
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(2));
        let writers: Vec<_> = ["cell-a", "cell-b"]
            .into_iter()
            .map(|cell_id| {
                let (store, barrier) = (store.clone(), barrier.clone());
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
        let stored = store.get_actual_lrp(&guid, 0).await.expect("exists");
        assert_eq!(stored, winners[0]);
        assert_eq!(stored.modification_tag.index, 1);
    }
}

/// Writers that retry on `Conflict` lose no update: each of them increments
/// a counter through read-modify-write, and the final count is the sum.
pub async fn retried_updates_lose_nothing(store: SharedStore) {
    const WRITERS: i64 = 4;
    const INCREMENTS: i64 = 25;
    store
        .create_actual_lrp(actual_lrp("web", "d", 0))
        .await
        .expect("create");
    let writers: Vec<_> = (0..WRITERS)
        .map(|_| {
            let store = store.clone();
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
    let stored = store.get_actual_lrp("web", 0).await.expect("exists");
    assert_eq!(stored.crash_count, WRITERS * INCREMENTS);
    assert_eq!(
        i64::from(stored.modification_tag.index),
        WRITERS * INCREMENTS
    );
}

// --- lists -----------------------------------------------------------------

/// Tasks list by `created_at`, then guid, and honour every filter.
pub async fn task_filters_and_order(store: SharedStore) {
    // Created out of order; b and c share a timestamp.
    for (guid, domain, created_at) in [
        ("d", "x", 40),
        ("c", "y", 20),
        ("a", "x", 30),
        ("b", "x", 20),
    ] {
        store
            .create_task(task(guid, domain, created_at))
            .await
            .expect("create");
    }
    let mut claimed = store.get_task("a").await.expect("exists");
    claimed
        .apply(TaskEvent::Claim, 50)
        .expect("pending can be claimed");
    claimed.cell_id = "cell-1".to_string();
    store.update_task(claimed).await.expect("update");

    let guids = |tasks: Vec<Task>| tasks.into_iter().map(|t| t.task_guid).collect::<Vec<_>>();
    let list = |filter: TaskFilter| {
        let store = store.clone();
        async move { guids(store.list_tasks(&filter).await.expect("list succeeds")) }
    };
    assert_eq!(list(TaskFilter::default()).await, ["b", "c", "a", "d"]);
    assert_eq!(
        list(TaskFilter {
            domain: Some("x".into()),
            ..TaskFilter::default()
        })
        .await,
        ["b", "a", "d"]
    );
    assert_eq!(
        list(TaskFilter {
            cell_id: Some("cell-1".into()),
            ..TaskFilter::default()
        })
        .await,
        ["a"]
    );
    assert_eq!(
        list(TaskFilter {
            state: Some(TaskState::Pending),
            ..TaskFilter::default()
        })
        .await,
        ["b", "c", "d"]
    );
    assert_eq!(
        list(TaskFilter {
            domain: Some("x".into()),
            cell_id: None,
            state: Some(TaskState::Claimed),
        })
        .await,
        ["a"]
    );
    assert!(list(TaskFilter {
        domain: Some("y".into()),
        state: Some(TaskState::Claimed),
        cell_id: None,
    })
    .await
    .is_empty());
    assert!(list(TaskFilter {
        domain: Some("none".into()),
        ..TaskFilter::default()
    })
    .await
    .is_empty());
}

/// Desired LRPs list by process guid and honour the domain filter.
pub async fn desired_lrp_filters_and_order(store: SharedStore) {
    for (guid, domain) in [("web-b", "x"), ("api", "y"), ("web-a", "x")] {
        store
            .create_desired_lrp(desired_lrp(guid, domain, 1))
            .await
            .expect("create");
    }
    let guids =
        |lrps: Vec<DesiredLrp>| lrps.into_iter().map(|l| l.process_guid).collect::<Vec<_>>();
    let all = store
        .list_desired_lrps(&DesiredLrpFilter::default())
        .await
        .expect("list");
    assert_eq!(guids(all), ["api", "web-a", "web-b"]);
    let x = store
        .list_desired_lrps(&DesiredLrpFilter {
            domain: Some("x".into()),
        })
        .await
        .expect("list");
    assert_eq!(guids(x), ["web-a", "web-b"]);
    let none = store
        .list_desired_lrps(&DesiredLrpFilter {
            domain: Some("z".into()),
        })
        .await
        .expect("list");
    assert!(none.is_empty());
}

/// Actual LRPs list by process guid, then index (numerically), and honour
/// every filter.
pub async fn actual_lrp_filters_and_order(store: SharedStore) {
    for (guid, domain, index) in [
        ("web", "x", 10),
        ("api", "y", 0),
        ("web", "x", 2),
        ("web", "x", 0),
    ] {
        store
            .create_actual_lrp(actual_lrp(guid, domain, index))
            .await
            .expect("create");
    }
    let mut placed = store.get_actual_lrp("web", 2).await.expect("exists");
    placed.apply(ActualLrpEvent::Claim, 2).expect("can claim");
    placed.cell_id = "cell-1".to_string();
    store.update_actual_lrp(placed).await.expect("update");

    let keys = |lrps: Vec<ActualLrp>| {
        lrps.into_iter()
            .map(|l| format!("{}/{}", l.process_guid, l.index))
            .collect::<Vec<_>>()
    };
    let list = |filter: ActualLrpFilter| {
        let store = store.clone();
        async move {
            keys(
                store
                    .list_actual_lrps(&filter)
                    .await
                    .expect("list succeeds"),
            )
        }
    };
    assert_eq!(
        list(ActualLrpFilter::default()).await,
        ["api/0", "web/0", "web/2", "web/10"]
    );
    assert_eq!(
        list(ActualLrpFilter {
            process_guid: Some("web".into()),
            ..ActualLrpFilter::default()
        })
        .await,
        ["web/0", "web/2", "web/10"]
    );
    assert_eq!(
        list(ActualLrpFilter {
            domain: Some("y".into()),
            ..ActualLrpFilter::default()
        })
        .await,
        ["api/0"]
    );
    assert_eq!(
        list(ActualLrpFilter {
            cell_id: Some("cell-1".into()),
            ..ActualLrpFilter::default()
        })
        .await,
        ["web/2"]
    );
    assert_eq!(
        list(ActualLrpFilter {
            state: Some(ActualLrpState::Unclaimed),
            ..ActualLrpFilter::default()
        })
        .await,
        ["api/0", "web/0", "web/10"]
    );
    assert_eq!(
        list(ActualLrpFilter {
            cell_id: Some("cell-1".into()),
            state: Some(ActualLrpState::Claimed),
            ..ActualLrpFilter::default()
        })
        .await,
        ["web/2"]
    );
    assert!(list(ActualLrpFilter {
        process_guid: Some("api".into()),
        domain: Some("x".into()),
        cell_id: None,
        state: None,
    })
    .await
    .is_empty());
}

/// The summaries convergence reads say what the records say, in list
/// order, after creates, updates and deletes.
pub async fn summaries_match_the_records(store: SharedStore) {
    write_records_for_summaries(&store).await;
    summaries_say_what_the_records_say(&store).await;
}

/// SQL that turns a store back into one from before migration 0003 (the
/// summary columns): the same on SQLite and PostgreSQL.
pub const UNDO_SUMMARY_COLUMNS: [&str; 5] = [
    "ALTER TABLE desired_lrps DROP COLUMN instances",
    "ALTER TABLE actual_lrps DROP COLUMN since",
    "ALTER TABLE actual_lrps DROP COLUMN crash_count",
    "ALTER TABLE actual_lrps DROP COLUMN evacuating_cell_id",
    "DELETE FROM _sqlx_migrations WHERE version = 3",
];

/// The records [`summaries_say_what_the_records_say`] checks: created,
/// updated (scaled, crashed, evacuating) and deleted.
pub async fn write_records_for_summaries(store: &SharedStore) {
    for (guid, instances) in [("web", 3), ("api", 1), ("gone", 2)] {
        store
            .create_desired_lrp(desired_lrp(guid, "d", instances))
            .await
            .expect("create desired");
    }
    let mut scaled = store.get_desired_lrp("api").await.expect("exists");
    scaled.instances = 5;
    store.update_desired_lrp(scaled).await.expect("update");
    let gone = store.get_desired_lrp("gone").await.expect("exists");
    store
        .delete_desired_lrp("gone", &gone.modification_tag)
        .await
        .expect("delete");

    for (guid, index) in [("web", 1), ("web", 0), ("api", 0), ("web", 10)] {
        store
            .create_actual_lrp(actual_lrp(guid, "d", index))
            .await
            .expect("create actual");
    }
    let mut crashed = store.get_actual_lrp("web", 0).await.expect("exists");
    crashed.apply(ActualLrpEvent::Claim, 10).expect("can claim");
    crashed.cell_id = "cell-1".to_string();
    crashed.apply(ActualLrpEvent::Crash, 20).expect("can crash");
    crashed.crash_count = 3;
    store.update_actual_lrp(crashed).await.expect("update");
    let mut moving = store.get_actual_lrp("web", 1).await.expect("exists");
    let mut draining = moving.clone();
    draining.cell_id = "cell-draining".to_string();
    draining.instance_guid = "old".to_string();
    moving.evacuating_instance = Some(draining.as_evacuating());
    store.update_actual_lrp(moving).await.expect("update");
}

/// After [`write_records_for_summaries`]: the summaries convergence reads
/// say what the records say, in list order.
pub async fn summaries_say_what_the_records_say(store: &SharedStore) {
    let desired = store
        .list_desired_lrps(&DesiredLrpFilter::default())
        .await
        .expect("list");
    let summaries = store.list_desired_lrp_summaries().await.expect("summaries");
    assert_eq!(
        summaries,
        desired.iter().map(Into::into).collect::<Vec<_>>()
    );
    assert_eq!(summaries.len(), 2);
    assert_eq!(
        (summaries[0].process_guid.as_str(), summaries[0].instances),
        ("api", 5)
    );

    let actual = store
        .list_actual_lrps(&ActualLrpFilter::default())
        .await
        .expect("list");
    let summaries = store.list_actual_lrp_summaries().await.expect("summaries");
    assert_eq!(summaries, actual.iter().map(Into::into).collect::<Vec<_>>());
    let keys: Vec<_> = summaries
        .iter()
        .map(|s| format!("{}/{}", s.process_guid, s.index))
        .collect();
    assert_eq!(keys, ["api/0", "web/0", "web/1", "web/10"]);
    assert_eq!(summaries[1].state, ActualLrpState::Crashed);
    assert_eq!((summaries[1].since, summaries[1].crash_count), (20, 3));
    assert_eq!(summaries[1].cell_id, "cell-1");
    assert_eq!(
        summaries[2].evacuating_cell_id.as_deref(),
        Some("cell-draining")
    );
    assert_eq!(summaries[3].evacuating_cell_id, None);
}

// --- change feed -----------------------------------------------------------

/// Every write of a task or LRP publishes one event, in order, with the
/// stored records (tags included) and the right before/after.
pub async fn events_in_order_with_before_and_after(store: SharedStore) {
    let mut events = store.subscribe();

    let t0 = store.create_task(task("t", "d", 1)).await.expect("create");
    let mut claimed = t0.clone();
    claimed.apply(TaskEvent::Claim, 2).expect("can claim");
    let t1 = store.update_task(claimed).await.expect("update");
    store
        .delete_task("t", &t1.modification_tag)
        .await
        .expect("delete");

    let d0 = store
        .create_desired_lrp(desired_lrp("web", "d", 1))
        .await
        .expect("create");
    let mut scaled = d0.clone();
    scaled.instances = 2;
    let d1 = store.update_desired_lrp(scaled).await.expect("update");
    store
        .delete_desired_lrp("web", &d1.modification_tag)
        .await
        .expect("delete");

    let a0 = store
        .create_actual_lrp(actual_lrp("web", "d", 0))
        .await
        .expect("create");
    let mut claimed = a0.clone();
    claimed.apply(ActualLrpEvent::Claim, 3).expect("can claim");
    let a1 = store.update_actual_lrp(claimed).await.expect("update");
    store
        .delete_actual_lrp("web", 0, &a1.modification_tag)
        .await
        .expect("delete");

    let expected = [
        Event::TaskCreated { task: t0.clone() },
        Event::TaskChanged {
            task_before: t0,
            task_after: t1.clone(),
        },
        Event::TaskRemoved { task: t1 },
        Event::DesiredLrpCreated {
            desired_lrp: d0.clone(),
        },
        Event::DesiredLrpChanged {
            desired_lrp_before: d0,
            desired_lrp_after: d1.clone(),
        },
        Event::DesiredLrpRemoved { desired_lrp: d1 },
        Event::ActualLrpCreated {
            actual_lrp: a0.clone(),
        },
        Event::ActualLrpChanged {
            actual_lrp_before: a0,
            actual_lrp_after: a1.clone(),
        },
        Event::ActualLrpRemoved { actual_lrp: a1 },
    ];
    for (i, want) in expected.into_iter().enumerate() {
        assert_eq!(next_event(&mut events), want, "event {i}");
    }
    assert_no_event(&mut events);
}

/// A batch create makes the missing instances, leaves those that exist
/// untouched, and publishes one created event for each it made, in order.
pub async fn batch_create_skips_existing_and_publishes_in_order(store: SharedStore) {
    let existing = store
        .create_actual_lrp(actual_lrp("web", "d", 1))
        .await
        .expect("create");
    let mut events = store.subscribe();
    let created = store
        .create_actual_lrps(vec![
            actual_lrp("web", "d", 0),
            actual_lrp("web", "d", 1),
            actual_lrp("web", "d", 2),
        ])
        .await
        .expect("batch create");
    assert_eq!(created.len(), 3, "one result per instance");
    assert_eq!(created[1], None, "index 1 already existed");
    let a0 = created[0].clone().expect("index 0 created");
    let a2 = created[2].clone().expect("index 2 created");
    assert_eq!(a0.modification_tag.index, 0);
    assert_ne!(a0.modification_tag.epoch, a2.modification_tag.epoch);
    assert_eq!(store.get_actual_lrp("web", 0).await.expect("get 0"), a0);
    assert_eq!(store.get_actual_lrp("web", 2).await.expect("get 2"), a2);
    assert_eq!(
        store.get_actual_lrp("web", 1).await.expect("get 1"),
        existing,
        "the existing instance is untouched"
    );
    assert_eq!(
        next_event(&mut events),
        Event::ActualLrpCreated { actual_lrp: a0 }
    );
    assert_eq!(
        next_event(&mut events),
        Event::ActualLrpCreated { actual_lrp: a2 }
    );
    assert_no_event(&mut events);

    let none = store
        .create_actual_lrps(Vec::new())
        .await
        .expect("empty batch");
    assert!(none.is_empty());
    assert_no_event(&mut events);
}

/// Failed writes publish nothing; presence, domain and lock writes publish
/// nothing; a subscriber sees only writes committed after it subscribed.
pub async fn only_successful_record_writes_publish(store: SharedStore) {
    let t0 = store.create_task(task("t", "d", 1)).await.expect("create");
    let mut events = store.subscribe();

    let t1 = store.update_task(t0.clone()).await.expect("update");
    assert!(matches!(next_event(&mut events), Event::TaskChanged { .. }));

    assert_conflict(store.update_task(t0.clone()).await, RecordKind::Task);
    assert_conflict(
        store.delete_task("t", &t0.modification_tag).await,
        RecordKind::Task,
    );
    assert_already_exists(store.create_task(task("t", "d", 1)).await, RecordKind::Task);
    assert_not_found(
        store.update_task(task("nope", "d", 1)).await,
        RecordKind::Task,
    );
    store
        .upsert_cell(cell("c1"), Duration::from_secs(30))
        .await
        .expect("upsert cell");
    store.remove_cell("c1").await.expect("remove cell");
    store.upsert_domain("d", None).await.expect("upsert domain");
    store
        .acquire_lock("l", "me", Duration::from_secs(30))
        .await
        .expect("acquire lock");
    assert_no_event(&mut events);

    store
        .delete_task("t", &t1.modification_tag)
        .await
        .expect("delete");
    assert_eq!(next_event(&mut events), Event::TaskRemoved { task: t1 });
}

/// Under concurrent writers, each record's events arrive in the order of its
/// tags, each `before` is the previous `after`, and the last event matches
/// the stored record: the feed follows commit order.
pub async fn concurrent_events_follow_commit_order(store: SharedStore) {
    const RECORDS: i64 = 8;
    const UPDATES: u32 = 20;
    let mut events = store.subscribe();
    for index in 0..RECORDS {
        store
            .create_actual_lrp(actual_lrp("web", "d", index))
            .await
            .expect("create");
    }
    let writers: Vec<_> = (0..RECORDS)
        .map(|index| {
            let store = store.clone();
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

    let mut last: Vec<Option<ActualLrp>> = vec![None; RECORDS as usize];
    let total = RECORDS as usize * (1 + UPDATES as usize);
    for _ in 0..total {
        match next_event(&mut events) {
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
                assert_eq!(actual_lrp_after.crash_count, previous.crash_count + 1);
                *slot = Some(actual_lrp_after);
            }
            other => panic!("unexpected event {other:?}"),
        }
    }
    assert_no_event(&mut events);
    for (index, last) in last.into_iter().enumerate() {
        let stored = store
            .get_actual_lrp("web", index as i64)
            .await
            .expect("exists");
        assert_eq!(Some(stored), last, "the last event is the stored state");
    }
}

// --- cells, domains, locks ---------------------------------------------------

/// Cells list by id while their presence lasts; a renewal replaces the
/// presence and extends it; an expired cell disappears; removal is
/// immediate and idempotent.
pub async fn cells_expire_and_renew(store: SharedStore) {
    let long = Duration::from_secs(60);
    let short = Duration::from_millis(50);
    store.upsert_cell(cell("c2"), long).await.expect("upsert");
    store.upsert_cell(cell("c1"), long).await.expect("upsert");
    store.upsert_cell(cell("c3"), short).await.expect("upsert");
    let mut bigger = cell("c2");
    bigger.capacity.memory_mb = 4096;
    store
        .upsert_cell(bigger.clone(), long)
        .await
        .expect("renew");

    tokio::time::sleep(Duration::from_millis(200)).await;
    let cells = store.list_cells().await.expect("list");
    assert_eq!(cells, [cell("c1"), bigger], "c3 expired; c2 was replaced");

    // An expired cell comes back when its rep renews.
    store.upsert_cell(cell("c3"), long).await.expect("renew");
    let ids: Vec<_> = store
        .list_cells()
        .await
        .expect("list")
        .into_iter()
        .map(|c| c.cell_id)
        .collect();
    assert_eq!(ids, ["c1", "c2", "c3"]);

    store.remove_cell("c1").await.expect("remove");
    store
        .remove_cell("c1")
        .await
        .expect("removing again is not an error");
    store
        .remove_cell("never")
        .await
        .expect("removing an unknown cell is not an error");
    let ids: Vec<_> = store
        .list_cells()
        .await
        .expect("list")
        .into_iter()
        .map(|c| c.cell_id)
        .collect();
    assert_eq!(ids, ["c2", "c3"]);
}

/// Domains list sorted while fresh; `None` never expires; a refresh brings
/// an expired domain back, and can make an eternal one expire.
pub async fn domains_expire_and_refresh(store: SharedStore) {
    store.upsert_domain("b", None).await.expect("upsert");
    store
        .upsert_domain("a", Some(Duration::from_secs(60)))
        .await
        .expect("upsert");
    store
        .upsert_domain("c", Some(Duration::from_millis(50)))
        .await
        .expect("upsert");
    store.upsert_domain("d", None).await.expect("upsert");
    store
        .upsert_domain("d", Some(Duration::from_millis(50)))
        .await
        .expect("a refresh replaces the ttl");
    assert_eq!(
        store.domains().await.expect("list"),
        ["a", "b", "c", "d"].map(String::from)
    );

    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        store.domains().await.expect("list"),
        ["a", "b"].map(String::from)
    );

    store.upsert_domain("c", None).await.expect("refresh");
    assert_eq!(
        store.domains().await.expect("list"),
        ["a", "b", "c"].map(String::from)
    );
}

/// A lock is a lease: one owner at a time, renewable by its owner, free for
/// anyone once expired or released; only the owner can release it.
pub async fn locks_are_leases(store: SharedStore) {
    let long = Duration::from_secs(60);
    assert_eq!(store.lock_owner("brain").await.expect("read"), None);
    assert!(store
        .acquire_lock("brain", "a", long)
        .await
        .expect("acquire"));
    assert!(
        !store
            .acquire_lock("brain", "b", long)
            .await
            .expect("acquire"),
        "held by a"
    );
    assert!(
        store.acquire_lock("brain", "a", long).await.expect("renew"),
        "the owner renews"
    );
    assert_eq!(
        store.lock_owner("brain").await.expect("read").as_deref(),
        Some("a")
    );
    assert!(
        store
            .acquire_lock("other", "b", long)
            .await
            .expect("acquire"),
        "locks are independent"
    );

    // Someone else's release does nothing.
    store.release_lock("brain", "b").await.expect("release");
    assert_eq!(
        store.lock_owner("brain").await.expect("read").as_deref(),
        Some("a")
    );
    store.release_lock("brain", "a").await.expect("release");
    assert_eq!(store.lock_owner("brain").await.expect("read"), None);
    assert!(store
        .acquire_lock("brain", "b", long)
        .await
        .expect("acquire"));

    // An expired lease is free for the next owner; the old owner cannot
    // renew it any more.
    assert!(store
        .acquire_lock("lease", "a", Duration::from_millis(50))
        .await
        .expect("acquire"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        store.lock_owner("lease").await.expect("read"),
        None,
        "expired"
    );
    assert!(store
        .acquire_lock("lease", "b", long)
        .await
        .expect("take over"));
    assert!(!store
        .acquire_lock("lease", "a", long)
        .await
        .expect("acquire"));
    assert_eq!(
        store.lock_owner("lease").await.expect("read").as_deref(),
        Some("b")
    );
}

/// Many owners race for one free lock at once: exactly one gets it.
pub async fn lock_contention_has_one_winner(store: SharedStore) {
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(8));
    let contenders: Vec<_> = (0..8)
        .map(|i| {
            let (store, barrier) = (store.clone(), barrier.clone());
            tokio::spawn(async move {
                let owner = format!("owner-{i}");
                barrier.wait().await;
                let won = store
                    .acquire_lock("auctioneer", &owner, Duration::from_secs(60))
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
    let owner = store.lock_owner("auctioneer").await.expect("read");
    assert_eq!(owner.as_ref(), winners.iter().next());
}
