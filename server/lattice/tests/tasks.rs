//! Tasks end to end on the real Docker engine: receptor -> auctioneer ->
//! rep -> executor -> garden, and back to a COMPLETED task.

mod common;

use std::time::Duration;

use common::{eventually, Cluster, ClusterOptions};
use lattice_models::{Task, TaskCreateRequest, TaskState};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

async fn request(guid: &str, action: serde_json::Value) -> TaskCreateRequest {
    let rootfs = lattice_testkit::images::busybox_image().await;
    serde_json::from_value(json!({
        "task_guid": guid,
        "domain": "tests",
        "rootfs": rootfs,
        "action": action,
        "memory_mb": 64,
        "result_file": "/tmp/result",
    }))
    .expect("valid request")
}

fn sh(script: &str) -> serde_json::Value {
    json!({"run": {"path": "/bin/sh", "args": ["-c", script]}})
}

async fn completed(cluster: &Cluster, guid: &str) -> Task {
    eventually(&format!("task {guid} to complete"), WAIT, || async {
        let task = cluster.client.task(guid).await.ok()?;
        (task.state == TaskState::Completed).then_some(task)
    })
    .await
}

async fn run_task(cluster: &Cluster, guid: &str, action: serde_json::Value) -> Task {
    cluster
        .client
        .create_task(&request(guid, action).await)
        .await
        .expect("task accepted");
    completed(cluster, guid).await
}

async fn no_containers_left(cluster: &Cluster) {
    eventually("task containers to be destroyed", WAIT, || async {
        cluster.containers().await.is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn task_result_comes_back() {
    let cluster = Cluster::start().await;
    let task = run_task(&cluster, "result", sh("echo -n 42 > /tmp/result")).await;
    assert!(!task.failed, "{}", task.failure_reason);
    assert_eq!(task.result, "42");
    assert_eq!(task.cell_id, cluster.cell_id);
    no_containers_left(&cluster).await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_command_fails_with_exit_status() {
    let cluster = Cluster::start().await;
    let task = run_task(&cluster, "fails", sh("exit 3")).await;
    assert!(task.failed);
    assert_eq!(task.failure_reason, "Exited with status 3");
    assert_eq!(task.result, "");
    no_containers_left(&cluster).await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn timeout_fails_and_kills_the_inner_action() {
    let cluster = Cluster::start().await;
    // Diego's form: the limit in nanoseconds.
    let action = json!({"timeout": {"timeout": 300_000_000, "action": sh("sleep 100")}});
    let task = run_task(&cluster, "timeout", action).await;
    assert!(task.failed);
    assert_eq!(task.failure_reason, "timed out after 300 ms");
    no_containers_left(&cluster).await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn try_ignores_failure() {
    let cluster = Cluster::start().await;
    let action = json!({"serial": {"actions": [
        sh("echo a > /tmp/result"),
        {"try": {"action": sh("exit 1")}},
        sh("echo b >> /tmp/result"),
    ]}});
    let task = run_task(&cluster, "try", action).await;
    assert!(!task.failed, "{}", task.failure_reason);
    assert_eq!(task.result, "a\nb\n");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn serial_stops_at_first_failure() {
    let cluster = Cluster::start().await;
    // The third step would succeed and write the result; it must not run.
    let action = json!({"serial": {"actions": [
        sh("echo first > /tmp/result"),
        sh("exit 7"),
        sh("echo third > /tmp/result"),
    ]}});
    let task = run_task(&cluster, "serial", action).await;
    assert!(task.failed);
    assert_eq!(task.failure_reason, "Exited with status 7");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn parallel_runs_every_action() {
    let cluster = Cluster::start().await;
    let action = json!({"serial": {"actions": [
        {"parallel": {"actions": [
            sh("sleep 0.3; echo slow > /tmp/slow"),
            sh("echo fast > /tmp/fast"),
        ]}},
        sh("cat /tmp/fast /tmp/slow > /tmp/result"),
    ]}});
    let task = run_task(&cluster, "parallel", action).await;
    assert!(!task.failed, "{}", task.failure_reason);
    assert_eq!(task.result, "fast\nslow\n");

    // One failing branch fails the whole, after the others finished.
    let action = json!({"parallel": {"actions": [sh("exit 2"), sh("sleep 0.2")]}});
    let task = run_task(&cluster, "parallel-fails", action).await;
    assert!(task.failed);
    assert!(
        task.failure_reason.contains("Exited with status 2"),
        "{}",
        task.failure_reason
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn codependent_cancels_the_others_when_one_ends() {
    let cluster = Cluster::start().await;
    // Without cancellation the first action would hold the task for 300 s.
    let action = json!({"serial": {"actions": [
        {"codependent": {"actions": [sh("sleep 300"), sh("echo done > /tmp/done")]}},
        sh("cat /tmp/done > /tmp/result"),
    ]}});
    let task = run_task(&cluster, "codependent", action).await;
    assert!(!task.failed, "{}", task.failure_reason);
    assert_eq!(task.result, "done\n");
    no_containers_left(&cluster).await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_stops_a_running_task() {
    let cluster = Cluster::start().await;
    cluster
        .client
        .create_task(&request("cancel-me", sh("sleep 300")).await)
        .await
        .unwrap();
    eventually("task to run", WAIT, || async {
        let task = cluster.client.task("cancel-me").await.ok()?;
        (task.state == TaskState::Running).then_some(())
    })
    .await;
    cluster
        .client
        .cancel_task("cancel-me")
        .await
        .expect("cancel accepted");
    let task = completed(&cluster, "cancel-me").await;
    assert!(task.failed);
    assert_eq!(task.failure_reason, "task was cancelled");
    no_containers_left(&cluster).await;
    cluster
        .client
        .delete_task("cancel-me")
        .await
        .expect("completed task deletes");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_limit_is_enforced() {
    let cluster = Cluster::start().await;
    let mut req = request(
        "hungry",
        sh("x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo ${#x} > /tmp/result"),
    )
    .await;
    req.memory_mb = 32;
    cluster.client.create_task(&req).await.unwrap();
    let task = completed(&cluster, "hungry").await;
    assert!(task.failed, "a task over its memory limit must fail");
    assert!(
        task.failure_reason.contains("137"),
        "{}",
        task.failure_reason
    );
    no_containers_left(&cluster).await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_no_cell_can_hold_fails_with_insufficient_resources() {
    let cluster = Cluster::start_with(ClusterOptions {
        memory_mb: 512,
        ..Default::default()
    })
    .await;
    let mut req = request("too-big", sh("true")).await;
    req.memory_mb = 100_000;
    cluster.client.create_task(&req).await.unwrap();
    let task = completed(&cluster, "too-big").await;
    assert!(task.failed);
    assert!(
        task.failure_reason.starts_with("insufficient resources"),
        "{}",
        task.failure_reason
    );
    assert_eq!(task.cell_id, "");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_image_fails_the_task_clearly() {
    let cluster = Cluster::start().await;
    let mut req = request("no-image", sh("true")).await;
    req.rootfs = "docker:///lattice-test/does-not-exist#1".to_string();
    cluster.client.create_task(&req).await.unwrap();
    let task = completed(&cluster, "no-image").await;
    assert!(task.failed);
    assert!(
        task.failure_reason.contains("lattice-test/does-not-exist"),
        "{}",
        task.failure_reason
    );
    no_containers_left(&cluster).await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn completion_callback_receives_the_task_and_it_is_deleted() {
    let cluster = Cluster::start().await;
    let (sender, mut received) = tokio::sync::mpsc::unbounded_channel::<serde_json::Value>();
    let app = axum::Router::new().route(
        "/done",
        axum::routing::post(move |axum::Json(task): axum::Json<serde_json::Value>| {
            let sender = sender.clone();
            async move {
                let _ = sender.send(task);
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let callback = format!("http://{}/done", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mut req = request("called-back", sh("echo -n hi > /tmp/result")).await;
    req.completion_callback_url = callback;
    cluster.client.create_task(&req).await.unwrap();
    let task = tokio::time::timeout(WAIT, received.recv())
        .await
        .expect("callback in time")
        .expect("callback body");
    assert_eq!(task["task_guid"], "called-back");
    assert_eq!(task["failed"], false);
    assert_eq!(task["result"], "hi");
    eventually("the resolved task to be deleted", WAIT, || async {
        cluster
            .client
            .task("called-back")
            .await
            .is_err()
            .then_some(())
    })
    .await;
    cluster.stop().await;
}
