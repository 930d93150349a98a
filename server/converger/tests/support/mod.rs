//! Shared test harness: a SQLite store in a temporary directory, records in
//! given states, and a callback receiver on port 0.

#![allow(dead_code)] // each test binary uses a different part

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use lattice_bbs::{suite, SharedStore, SqliteStore};
use lattice_models::{ActualLrp, ActualLrpEvent, Task, TaskEvent};
use tempfile::TempDir;
use tokio::sync::mpsc;

/// Guard against a hang: long enough never to trip on a slow machine.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A fresh store in a new temporary directory; keep the directory alive as
/// long as the store.
pub async fn store() -> (TempDir, SharedStore) {
    let dir = tempfile::tempdir().expect("a temporary directory can be made");
    let store = SqliteStore::open(&dir.path().join("store.db"))
        .await
        .expect("a new store opens");
    (dir, Arc::new(store))
}

pub fn now() -> i64 {
    lattice_models::unix_nanos(std::time::SystemTime::now())
}

/// Stores a task and moves it through `events` (as of `at` nanoseconds),
/// claimed by `cell_id`.
pub async fn task_through(
    store: &SharedStore,
    mut task: Task,
    cell_id: &str,
    events: &[TaskEvent],
    at: i64,
) -> Task {
    task = store.create_task(task).await.expect("task is created");
    for event in events {
        task.apply(*event, at)
            .expect("the test names legal transitions");
        if *event == TaskEvent::Claim {
            task.cell_id = cell_id.to_string();
        }
        task = store.update_task(task).await.expect("task is updated");
    }
    task
}

/// Stores an actual LRP moved through `events`, on `cell_id` once claimed.
pub async fn actual_through(
    store: &SharedStore,
    process_guid: &str,
    index: i64,
    cell_id: &str,
    events: &[ActualLrpEvent],
    at: i64,
) -> ActualLrp {
    let mut lrp = store
        .create_actual_lrp(ActualLrp::unclaimed(process_guid, "apps", index, at))
        .await
        .expect("actual LRP is created");
    for event in events {
        lrp.apply(*event, at)
            .expect("the test names legal transitions");
        if *event == ActualLrpEvent::Claim {
            lrp.cell_id = cell_id.to_string();
        }
        lrp = store
            .update_actual_lrp(lrp)
            .await
            .expect("actual LRP is updated");
    }
    lrp
}

/// A task with a completion callback to `url`.
pub fn task_with_callback(task_guid: &str, url: &str) -> Task {
    let mut task = suite::task(task_guid, "apps", now());
    task.completion_callback_url = url.to_string();
    task
}

/// An HTTP server on port 0 answering every `POST /done` with `status` and
/// passing each body on.
pub struct CallbackServer {
    pub url: String,
    pub bodies: mpsc::UnboundedReceiver<serde_json::Value>,
}

pub async fn callback_server(status: StatusCode) -> CallbackServer {
    let (tx, bodies) = mpsc::unbounded_channel();
    let app = Router::new()
        .route(
            "/done",
            post(
                |State((tx, status)): State<(
                    mpsc::UnboundedSender<serde_json::Value>,
                    StatusCode,
                )>,
                 Json(body): Json<serde_json::Value>| async move {
                    // The receiver lives as long as the test that reads it.
                    let _ = tx.send(body);
                    status
                },
            ),
        )
        .with_state((tx, status));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("port 0 can be bound");
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    tokio::spawn(async move {
        axum::serve(listener, app)
            .await
            .expect("the test callback server serves");
    });
    CallbackServer {
        url: format!("http://{addr}/done"),
        bodies,
    }
}
