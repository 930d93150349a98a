//! `lattice up` on a PostgreSQL store (`--store postgres://...`): the same
//! cluster, with its state in a real PostgreSQL server.

mod common;

use std::time::Duration;

use common::{eventually, Cluster, ClusterOptions};
use lattice_models::{ActualLrpState, TaskState};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn tasks_and_lrps_run_on_a_postgres_store() {
    let postgres = lattice_testkit::postgres::TestPostgres::start();
    let cluster = Cluster::start_with(ClusterOptions {
        store: postgres.url().to_string(),
        ..Default::default()
    })
    .await;
    let rootfs = lattice_testkit::images::busybox_image().await;

    let task = serde_json::from_value(json!({
        "task_guid": "pg-task", "domain": "tests", "rootfs": rootfs, "memory_mb": 32,
        "result_file": "/tmp/r",
        "action": {"run": {"path": "/bin/sh", "args": ["-c", "echo -n from-postgres > /tmp/r"]}},
    }))
    .unwrap();
    cluster.client.create_task(&task).await.unwrap();
    let done = eventually("the task to complete", WAIT, || async {
        let task = cluster.client.task("pg-task").await.ok()?;
        (task.state == TaskState::Completed).then_some(task)
    })
    .await;
    assert!(!done.failed, "{}", done.failure_reason);
    assert_eq!(done.result, "from-postgres");

    let app = serde_json::from_value(json!({
        "process_guid": "pg-app", "domain": "tests", "rootfs": rootfs, "instances": 2,
        "memory_mb": 32, "ports": [8080],
        "action": {"run": {"path": "/bin/httpd", "args": ["-f", "-p", "8080", "-h", "/tmp"]}},
        "monitor": {"run": {"path": "/.lattice/bin/healthcheck", "args": ["--port", "8080"]}},
    }))
    .unwrap();
    cluster.client.create_desired_lrp(&app).await.unwrap();
    eventually("2 running instances", WAIT, || async {
        let lrps = cluster
            .client
            .actual_lrps_by_process_guid("pg-app")
            .await
            .ok()?;
        let ok = lrps.len() == 2 && lrps.iter().all(|l| l.state == ActualLrpState::Running);
        ok.then_some(())
    })
    .await;
    cluster.stop().await;
}
