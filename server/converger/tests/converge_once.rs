//! One convergence pass against a real SQLite store: each duty's effect on
//! the stored records, and completion callbacks to a local HTTP server.

mod support;

use std::time::Duration;

use axum::http::StatusCode;
use lattice_bbs::{suite, ActualLrpFilter, EventReceiver, SharedStore, StoreError};
use lattice_converger::{
    CallbackConfig, Converger, ConvergerConfig, Policy, CELL_DISAPPEARED_REASON,
};
use lattice_models::{ActualLrpEvent, ActualLrpState, Event, TaskEvent, TaskState};

use support::*;

/// A converger, and a subscription to the store's change feed (how the
/// auctioneer learns of work) taken before its first pass.
fn converger(store: &SharedStore, policy: Policy) -> (Converger, EventReceiver) {
    let on_work = store.subscribe();
    let mut config = ConvergerConfig::new("test-brain");
    config.policy = policy;
    config.callbacks = CallbackConfig {
        backoff: Duration::from_millis(10),
        ..CallbackConfig::default()
    };
    let converger = Converger::new(store.clone(), config).expect("the http client builds");
    (converger, on_work)
}

/// Whether the feed carried, since the last look, an event that wakes the
/// auctioneer (an instance that is UNCLAIMED now).
fn wakes_auctioneer(events: &mut EventReceiver) -> bool {
    let mut wakes = false;
    while let Ok(event) = events.try_recv() {
        wakes |= match event {
            Event::ActualLrpCreated { actual_lrp } => actual_lrp.state == ActualLrpState::Unclaimed,
            Event::ActualLrpChanged {
                actual_lrp_after, ..
            } => actual_lrp_after.state == ActualLrpState::Unclaimed,
            _ => false,
        };
    }
    wakes
}

async fn actuals(store: &SharedStore, process_guid: &str) -> Vec<(i64, ActualLrpState)> {
    let filter = ActualLrpFilter {
        process_guid: Some(process_guid.to_string()),
        ..Default::default()
    };
    store
        .list_actual_lrps(&filter)
        .await
        .expect("actual LRPs list")
        .into_iter()
        .map(|a| (a.index, a.state))
        .collect()
}

#[tokio::test]
async fn creates_missing_instances_unclaimed_and_wakes_the_auctioneer() {
    let (_dir, store) = store().await;
    store
        .create_desired_lrp(suite::desired_lrp("web", "apps", 3))
        .await
        .expect("desired LRP is created");
    let (converger, mut on_work) = converger(&store, Policy::default());

    let report = converger.converge_once().await.expect("pass runs");
    assert_eq!(report.applied.started, 3);
    assert!(wakes_auctioneer(&mut on_work));
    use ActualLrpState::Unclaimed;
    assert_eq!(
        actuals(&store, "web").await,
        vec![(0, Unclaimed), (1, Unclaimed), (2, Unclaimed)]
    );

    let again = converger.converge_once().await.expect("pass runs");
    assert_eq!(again.applied.started, 0, "{again:?}");
    assert!(!wakes_auctioneer(&mut on_work));
}

#[tokio::test]
async fn retires_instances_above_a_lowered_count() {
    let (_dir, store) = store().await;
    let desired = store
        .create_desired_lrp(suite::desired_lrp("web", "apps", 3))
        .await
        .expect("desired LRP is created");
    let (converger, _) = converger(&store, Policy::default());
    converger.converge_once().await.expect("pass runs");

    let mut lowered = desired;
    lowered.instances = 1;
    store
        .update_desired_lrp(lowered)
        .await
        .expect("desired LRP is updated");
    let report = converger.converge_once().await.expect("pass runs");
    assert_eq!(report.applied.retired, 2);
    assert_eq!(
        actuals(&store, "web").await,
        vec![(0, ActualLrpState::Unclaimed)]
    );
}

#[tokio::test]
async fn retires_instances_of_a_removed_desired_lrp() {
    let (_dir, store) = store().await;
    let now = now();
    actual_through(&store, "gone", 0, "cell-1", &[ActualLrpEvent::Claim], now).await;
    let (converger, _) = converger(&store, Policy::default());
    let report = converger.converge_once().await.expect("pass runs");
    assert_eq!(report.applied.retired, 1);
    assert!(actuals(&store, "gone").await.is_empty());
}

#[tokio::test]
async fn unclaims_instances_of_a_vanished_cell_only() {
    let (_dir, store) = store().await;
    let now = now();
    store
        .create_desired_lrp(suite::desired_lrp("web", "apps", 2))
        .await
        .expect("desired LRP is created");
    store
        .upsert_cell(suite::cell("alive"), Duration::from_secs(60))
        .await
        .expect("cell registers");
    let running = [ActualLrpEvent::Claim, ActualLrpEvent::Start];
    actual_through(&store, "web", 0, "alive", &running, now).await;
    actual_through(&store, "web", 1, "ghost", &running, now).await;
    let (converger, mut on_work) = converger(&store, Policy::default());

    let report = converger.converge_once().await.expect("pass runs");
    assert_eq!(report.applied.unclaimed, 1);
    assert!(wakes_auctioneer(&mut on_work));
    let lost = store
        .get_actual_lrp("web", 1)
        .await
        .expect("instance exists");
    assert_eq!(lost.state, ActualLrpState::Unclaimed);
    assert_eq!(lost.cell_id, "");
    let kept = store
        .get_actual_lrp("web", 0)
        .await
        .expect("instance exists");
    assert_eq!(kept.state, ActualLrpState::Running);
    assert_eq!(kept.cell_id, "alive");
}

#[tokio::test]
async fn restarts_crashed_instances_until_the_policy_gives_up() {
    let (_dir, store) = store().await;
    let now = now();
    store
        .create_desired_lrp(suite::desired_lrp("web", "apps", 2))
        .await
        .expect("desired LRP is created");
    let crash = [
        ActualLrpEvent::Claim,
        ActualLrpEvent::Start,
        ActualLrpEvent::Crash,
    ];
    for (index, crash_count) in [(0, 1), (1, 200)] {
        let mut lrp = actual_through(&store, "web", index, "cell-1", &crash, now).await;
        lrp.crash_count = crash_count;
        store
            .update_actual_lrp(lrp)
            .await
            .expect("crash count is stored");
    }
    let (converger, _) = converger(&store, Policy::default());

    let report = converger.converge_once().await.expect("pass runs");
    assert_eq!(report.applied.restarted, 1);
    assert_eq!(report.gave_up, 1);
    let restarted = store
        .get_actual_lrp("web", 0)
        .await
        .expect("instance exists");
    assert_eq!(restarted.state, ActualLrpState::Unclaimed);
    assert_eq!(restarted.crash_count, 1, "a restart keeps the count");
    let given_up = store
        .get_actual_lrp("web", 1)
        .await
        .expect("instance exists");
    assert_eq!(given_up.state, ActualLrpState::Crashed);
}

#[tokio::test]
async fn fails_a_task_of_a_vanished_cell_and_never_runs_it_again() {
    let (_dir, store) = store().await;
    let task = task_through(
        &store,
        suite::task("lost", "apps", now()),
        "ghost",
        &[TaskEvent::Claim, TaskEvent::Start],
        now(),
    )
    .await;
    assert_eq!(task.state, TaskState::Running);
    let mut events = store.subscribe();
    let (converger, _) = converger(&store, Policy::default());

    let report = converger.converge_once().await.expect("pass runs");
    assert_eq!(report.applied.tasks_failed, 1);
    let failed = store.get_task("lost").await.expect("task exists");
    assert_eq!(failed.state, TaskState::Completed);
    assert!(failed.failed);
    assert_eq!(failed.failure_reason, CELL_DISAPPEARED_REASON);

    let again = converger.converge_once().await.expect("pass runs");
    assert_eq!(again.applied.tasks_failed, 0);
    assert_eq!(again.applied.tasks_kicked, 0);
    assert_eq!(
        store.get_task("lost").await.expect("task exists").state,
        TaskState::Completed
    );
    while let Ok(event) = events.try_recv() {
        if let Event::TaskChanged { task_after, .. } = event {
            assert_ne!(
                task_after.state,
                TaskState::Pending,
                "the lost task went back to PENDING"
            );
        }
    }
}

#[tokio::test]
async fn kicks_a_task_pending_too_long() {
    let (_dir, store) = store().await;
    let long_ago = now() - 60 * 1_000_000_000;
    store
        .create_task(suite::task("stuck", "apps", long_ago))
        .await
        .expect("task is created");
    store
        .create_task(suite::task("fresh", "apps", now()))
        .await
        .expect("task is created");
    let (converger, mut on_work) = converger(&store, Policy::default());

    let report = converger.converge_once().await.expect("pass runs");
    assert_eq!(report.applied.tasks_kicked, 1);
    // The auctioneer's own scan finds it; nothing is written for a kick.
    assert!(!wakes_auctioneer(&mut on_work));
    assert_eq!(
        store.get_task("stuck").await.expect("task exists").state,
        TaskState::Pending
    );
}

#[tokio::test]
async fn deletes_an_expired_completed_task() {
    let (_dir, store) = store().await;
    let long_ago = now() - 10 * 60 * 1_000_000_000;
    let done = [TaskEvent::Claim, TaskEvent::Start, TaskEvent::Complete];
    task_through(
        &store,
        suite::task("old", "apps", long_ago),
        "c",
        &done,
        long_ago,
    )
    .await;
    task_through(
        &store,
        suite::task("young", "apps", now()),
        "c",
        &done,
        now(),
    )
    .await;
    let (converger, _) = converger(&store, Policy::default());

    let report = converger.converge_once().await.expect("pass runs");
    assert_eq!(report.applied.tasks_expired, 1);
    assert!(matches!(
        store.get_task("old").await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(
        store.get_task("young").await.expect("task exists").state,
        TaskState::Completed
    );
}

#[tokio::test]
async fn delivers_a_completion_callback_and_deletes_the_task() {
    let (_dir, store) = store().await;
    let mut server = callback_server(StatusCode::OK).await;
    let done = [TaskEvent::Claim, TaskEvent::Start, TaskEvent::Complete];
    task_through(
        &store,
        task_with_callback("cb", &server.url),
        "c",
        &done,
        now(),
    )
    .await;
    let (converger, _) = converger(&store, Policy::default());

    let report = converger.converge_once().await.expect("pass runs");
    assert_eq!(report.callbacks.delivered, 1, "{report:?}");
    let body = server.bodies.try_recv().expect("the callback was posted");
    assert_eq!(body["task_guid"], "cb");
    assert_eq!(body["state"], "RESOLVING");
    assert_eq!(body["completion_callback_url"], server.url.as_str());
    assert!(matches!(
        store.get_task("cb").await,
        Err(StoreError::NotFound { .. })
    ));
}

#[tokio::test]
async fn a_failing_callback_leaves_the_task_completed_for_a_retry() {
    let (_dir, store) = store().await;
    let mut server = callback_server(StatusCode::INTERNAL_SERVER_ERROR).await;
    let done = [TaskEvent::Claim, TaskEvent::Start, TaskEvent::Complete];
    task_through(
        &store,
        task_with_callback("cb", &server.url),
        "c",
        &done,
        now(),
    )
    .await;
    let (converger, _) = converger(&store, Policy::default());

    let report = converger.converge_once().await.expect("pass runs");
    assert_eq!(report.callbacks.handed_back, 1, "{report:?}");
    let mut attempts = 0;
    while server.bodies.try_recv().is_ok() {
        attempts += 1;
    }
    assert_eq!(attempts, 3, "a 5xx is retried up to the attempt limit");
    let task = store.get_task("cb").await.expect("task still exists");
    assert_eq!(task.state, TaskState::Completed);

    // The next pass tries again.
    let again = converger.converge_once().await.expect("pass runs");
    assert_eq!(again.callbacks.handed_back, 1, "{again:?}");
}

#[tokio::test]
async fn a_rejected_callback_is_not_retried_within_the_pass() {
    let (_dir, store) = store().await;
    let mut server = callback_server(StatusCode::BAD_REQUEST).await;
    let done = [TaskEvent::Claim, TaskEvent::Start, TaskEvent::Complete];
    task_through(
        &store,
        task_with_callback("cb", &server.url),
        "c",
        &done,
        now(),
    )
    .await;
    let (converger, _) = converger(&store, Policy::default());

    let report = converger.converge_once().await.expect("pass runs");
    assert_eq!(report.callbacks.handed_back, 1, "{report:?}");
    assert!(server.bodies.try_recv().is_ok());
    assert!(
        server.bodies.try_recv().is_err(),
        "a 4xx is not retried at once"
    );
    assert_eq!(
        store.get_task("cb").await.expect("task exists").state,
        TaskState::Completed
    );
}

#[tokio::test]
async fn an_unreachable_callback_leaves_the_task_completed() {
    let (_dir, store) = store().await;
    // Bind and drop a listener: the port is then (almost surely) closed.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("port 0 can be bound");
        listener
            .local_addr()
            .expect("a bound listener has an address")
    };
    let url = format!("http://{closed}/done");
    let done = [TaskEvent::Claim, TaskEvent::Start, TaskEvent::Complete];
    task_through(&store, task_with_callback("cb", &url), "c", &done, now()).await;
    let (converger, _) = converger(&store, Policy::default());

    let report = converger.converge_once().await.expect("pass runs");
    assert_eq!(report.callbacks.handed_back, 1, "{report:?}");
    assert_eq!(
        store.get_task("cb").await.expect("task exists").state,
        TaskState::Completed
    );
}
