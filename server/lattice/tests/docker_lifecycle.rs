//! The Docker app lifecycle end to end, as `ltc create` drives it: a staging
//! task runs the builder on the image (here the built-in sample app, made
//! locally by the cell), then an LRP runs the image's own start command
//! through the launcher, health-checked by the healthcheck, routed.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{eventually, Cluster};
use lattice_models::lifecycle::ExecutionMetadata;
use lattice_models::{ActualLrpState, DesiredLrpCreateRequest, TaskCreateRequest, TaskState};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);
const ROOTFS: &str = "docker:///lattice/lattice-app#latest";

#[tokio::test(flavor = "multi_thread")]
async fn the_sample_app_stages_runs_and_answers_through_the_router() {
    let cluster = Cluster::start().await;

    let staging: TaskCreateRequest = serde_json::from_value(json!({
        "task_guid": "hello-staging",
        "domain": "lattice-staging",
        "rootfs": ROOTFS,
        "memory_mb": 64,
        "log_guid": "hello",
        "log_source": "STG",
        "result_file": "/tmp/lattice-staging.json",
        "action": {"run": {"path": "/.lattice/bin/builder", "args": ["--output", "/tmp/lattice-staging.json"]}},
    }))
    .unwrap();
    cluster.client.create_task(&staging).await.unwrap();
    let staged = eventually("staging to complete", WAIT, || async {
        let task = cluster.client.task("hello-staging").await.ok()?;
        (task.state == TaskState::Completed).then_some(task)
    })
    .await;
    assert!(!staged.failed, "{}", staged.failure_reason);
    let metadata: ExecutionMetadata = serde_json::from_str(&staged.result).expect("builder result");
    assert_eq!(metadata.ports, [8080]);
    assert_eq!(metadata.start_command, ["/bin/lattice-app"]);

    let app: DesiredLrpCreateRequest = serde_json::from_value(json!({
        "process_guid": "hello",
        "domain": "lattice",
        "rootfs": ROOTFS,
        "instances": 2,
        "memory_mb": 32,
        "ports": metadata.ports,
        "log_guid": "hello",
        "routes": {"cf-router": [{"hostnames": ["hello.localhost"], "port": 8080}]},
        "action": {"run": {"path": "/.lattice/bin/launcher", "args": []}},
        "monitor": {"run": {"path": "/.lattice/bin/healthcheck", "args": ["--port", "8080", "--uri", "/index"]}},
    }))
    .unwrap();
    cluster.client.create_desired_lrp(&app).await.unwrap();
    eventually("2 running instances", WAIT, || async {
        let lrps = cluster
            .client
            .actual_lrps_by_process_guid("hello")
            .await
            .ok()?;
        let ok = lrps.len() == 2 && lrps.iter().all(|l| l.state == ActualLrpState::Running);
        ok.then_some(())
    })
    .await;

    let http = reqwest::Client::new();
    let seen = eventually(
        "both instances to answer through the router",
        WAIT,
        || async {
            let mut seen = BTreeSet::new();
            for _ in 0..20 {
                let resp = http
                    .get(format!("http://{}/", cluster.router))
                    .header("host", "hello.localhost")
                    .send()
                    .await
                    .ok()?;
                if !resp.status().is_success() {
                    return None;
                }
                seen.insert(resp.text().await.ok()?);
            }
            let indices: BTreeSet<bool> = seen.iter().map(|b| b.contains("instance 0")).collect();
            (indices.len() == 2).then_some(seen)
        },
    )
    .await;
    assert!(
        seen.iter()
            .all(|body| body.starts_with("lattice-app: instance ")),
        "{seen:?}"
    );
    cluster.stop().await;
}
