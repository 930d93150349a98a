//! The converger's loop against a real SQLite store: the lock decides who
//! converges, and changes are acted on without waiting for the interval.

mod support;

use std::time::Duration;

use axum::http::StatusCode;
use lattice_bbs::{suite, SharedStore};
use lattice_converger::{Converger, ConvergerConfig, LOCK_NAME};
use lattice_models::{ActualLrpEvent, ActualLrpState, Event, TaskEvent};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use support::*;

struct Running {
    shutdown: CancellationToken,
    handle: JoinHandle<()>,
}

impl Running {
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(PATIENCE, self.handle)
            .await
            .expect("the converger stops on shutdown")
            .expect("the converger task does not panic");
    }
}

/// Starts a converger whose periodic pass never comes during a test, so that
/// whatever it does was set off by the lock or by an event.
fn start(store: &SharedStore, owner: &str) -> Running {
    let mut config = ConvergerConfig::new(owner);
    config.interval = Duration::from_secs(3600);
    config.lock_ttl = Duration::from_secs(3);
    config.debounce = Duration::from_millis(50);
    let converger = Converger::new(store.clone(), config).expect("the http client builds");
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(converger.run(shutdown.clone()));
    Running { shutdown, handle }
}

/// Waits until the converger lock's holder satisfies `wanted`.
async fn lock_owner_becomes(
    store: &SharedStore,
    wanted: impl Fn(Option<&str>) -> bool,
) -> Option<String> {
    tokio::time::timeout(PATIENCE, async {
        loop {
            let owner = store.lock_owner(LOCK_NAME).await.expect("lock reads");
            if wanted(owner.as_deref()) {
                return owner;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the lock reaches the expected holder")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_two_convergers_holds_the_lock_and_the_other_takes_over() {
    let (_dir, store) = store().await;
    let a = start(&store, "brain-a");
    let b = start(&store, "brain-b");

    let first = lock_owner_becomes(&store, |o| o.is_some())
        .await
        .expect("someone holds the lock");
    assert!(first == "brain-a" || first == "brain-b", "{first}");
    let (holder, standby, standby_name) = if first == "brain-a" {
        (a, b, "brain-b")
    } else {
        (b, a, "brain-a")
    };

    holder.stop().await;
    lock_owner_becomes(&store, |o| o == Some(standby_name)).await;
    standby.stop().await;
    assert_eq!(
        store.lock_owner(LOCK_NAME).await.expect("lock reads"),
        None,
        "a stopped converger releases the lock"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_desired_lrp_is_started_without_waiting_for_the_interval() {
    let (_dir, store) = store().await;
    let running = start(&store, "brain");
    lock_owner_becomes(&store, |o| o == Some("brain")).await;

    let mut events = store.subscribe();
    store
        .create_desired_lrp(suite::desired_lrp("web", "apps", 2))
        .await
        .expect("desired LRP is created");
    let mut created = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        while created.len() < 2 {
            if let Event::ActualLrpCreated { actual_lrp } =
                events.recv().await.expect("feed is open")
            {
                created.push(actual_lrp.index);
            }
        }
    })
    .await
    .expect("the converger creates the instances");
    created.sort();
    // These UNCLAIMED creations on the feed are what wake the auctioneer.
    assert_eq!(created, vec![0, 1]);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_task_is_resolved_from_the_change_feed() {
    let (_dir, store) = store().await;
    let mut server = callback_server(StatusCode::OK).await;
    let running = start(&store, "brain");
    lock_owner_becomes(&store, |o| o == Some("brain")).await;

    let mut events = store.subscribe();
    let done = [TaskEvent::Claim, TaskEvent::Start, TaskEvent::Complete];
    task_through(
        &store,
        task_with_callback("cb", &server.url),
        "c",
        &done,
        now(),
    )
    .await;
    let body = tokio::time::timeout(PATIENCE, server.bodies.recv())
        .await
        .expect("the callback is posted")
        .expect("the server is alive");
    assert_eq!(body["task_guid"], "cb");
    tokio::time::timeout(PATIENCE, async {
        loop {
            if let Event::TaskRemoved { task } = events.recv().await.expect("feed is open") {
                assert_eq!(task.task_guid, "cb");
                return;
            }
        }
    })
    .await
    .expect("the resolved task is deleted");
    running.stop().await;
}

/// Issue 16: a lost cell's instances go back to the auction as soon as its
/// presence ends, not at the next periodic pass (an hour away here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_cells_instance_is_unclaimed_without_waiting_for_the_interval() {
    let (_dir, store) = store().await;
    store
        .upsert_cell(suite::cell("cell-gone"), Duration::from_secs(60))
        .await
        .expect("the cell registers");
    store
        .create_desired_lrp(suite::desired_lrp("web", "apps", 1))
        .await
        .expect("desired LRP is created");
    let running_on = [ActualLrpEvent::Claim, ActualLrpEvent::Start];
    actual_through(&store, "web", 0, "cell-gone", &running_on, now()).await;
    let running = start(&store, "brain");
    lock_owner_becomes(&store, |o| o == Some("brain")).await;
    // The first passes (taking the lock) found the cell alive.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        store.get_actual_lrp("web", 0).await.expect("reads").state,
        ActualLrpState::Running
    );

    let mut events = store.subscribe();
    store
        .remove_cell("cell-gone")
        .await
        .expect("the presence ends");
    tokio::time::timeout(PATIENCE, async {
        loop {
            if let Event::ActualLrpChanged {
                actual_lrp_after, ..
            } = events.recv().await.expect("feed is open")
            {
                if actual_lrp_after.state == ActualLrpState::Unclaimed {
                    return;
                }
            }
        }
    })
    .await
    // That change on the feed is what wakes the auctioneer.
    .expect("the instance is unclaimed");
    running.stop().await;
}
