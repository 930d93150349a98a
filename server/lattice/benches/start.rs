//! How fast the one-machine cluster schedules and starts work, end to end
//! through the real receptor, auctioneer, rep, executor and Docker engine:
//! task submit -> COMPLETED, and LRP desire -> all instances RUNNING.
//!
//! Run: `cargo bench -p lattice --bench start` (needs Docker and
//! busybox-static; builds the static lifecycles on first use).

use std::sync::Arc;
use std::time::{Duration, Instant};

use lattice::cell::CellConfig;
use lattice::up::{Up, UpConfig};
use lattice_client::Client;
use lattice_models::{ActualLrpState, TaskState};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const TASKS: usize = 20;
const INSTANCES: i64 = 10;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let owner = lattice_testkit::docker::OwnerGuard::new("bench-cell");
    let data = tempfile::tempdir()?;
    let rootfs = lattice_testkit::images::busybox_image().await;
    let config = UpConfig {
        data_dir: data.path().to_path_buf(),
        store: String::new(),
        listen: "127.0.0.1:0".parse()?,
        domain: "localhost".into(),
        credentials: None,
        max_body_bytes: lattice_receptor::DEFAULT_MAX_BODY_BYTES,
        max_upload_bytes: lattice_fileserver::DEFAULT_MAX_UPLOAD_BYTES,
        allow_privileged: false,
        drain_timeout: Duration::from_secs(20),
        cell: Some(CellConfig {
            cell_id: owner.owner().to_string(),
            zone: "z1".into(),
            lifecycle_dir: lattice_testkit::lifecycles::build_static(),
            lifecycle_delivery: Default::default(),
            rep_listen: "127.0.0.1:0".parse()?,
            memory_mb: Some(8192),
            disk_mb: Some(100_000),
            containers: 64,
            max_download_bytes: lattice_executor::DEFAULT_MAX_DOWNLOAD_BYTES,
            cache_dir: data.path().join("cache"),
            presence_ttl: Duration::from_secs(10),
            advertise_container_network: None,
            evacuation_timeout: lattice::cell::DEFAULT_EVACUATION_TIMEOUT,
            spare_containers: 0,
            spare_containers_per_cell: lattice_rep::DEFAULT_SPARE_CONTAINERS_PER_CELL,
        }),
        converge_interval: Duration::from_secs(1),
        policy: Default::default(),
        hub: Arc::new(lattice_logs::LogHub::new(Default::default())),
        router_listen: None,
        ssh_listen: None,
    };
    let up = Up::prepare(config).await?;
    let client = Client::new(&format!("http://{}", up.receptor_address()?), None)?;
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(up.run(shutdown.clone()));

    // Tasks one after another: the latency a user waits for one task.
    let mut latencies = Vec::new();
    for i in 0..TASKS {
        let guid = format!("bench-task-{i}");
        let request = serde_json::from_value(json!({
            "task_guid": guid, "domain": "bench", "rootfs": rootfs, "memory_mb": 32,
            "action": {"run": {"path": "/bin/true"}},
        }))?;
        let started = Instant::now();
        client.create_task(&request).await?;
        loop {
            let task = client.task(&guid).await?;
            if task.state == TaskState::Completed {
                anyhow::ensure!(!task.failed, "task failed: {}", task.failure_reason);
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        latencies.push(started.elapsed());
        client.delete_task(&guid).await?;
    }
    latencies.sort();
    println!(
        "task submit -> COMPLETED ({TASKS} tasks, one at a time): p50 {:?}, p90 {:?}, max {:?}",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.9),
        latencies[latencies.len() - 1]
    );

    // An LRP of N instances, health-checked by the healthcheck lifecycle.
    let request = serde_json::from_value(json!({
        "process_guid": "bench-app", "domain": "bench", "rootfs": rootfs,
        "instances": INSTANCES, "memory_mb": 32, "ports": [8080],
        "action": {"run": {"path": "/bin/httpd", "args": ["-f", "-p", "8080", "-h", "/tmp"]}},
        "monitor": {"run": {"path": "/.lattice/bin/healthcheck", "args": ["--port", "8080"]}},
    }))?;
    let started = Instant::now();
    client.create_desired_lrp(&request).await?;
    let mut first = None;
    loop {
        let lrps = client.actual_lrps_by_process_guid("bench-app").await?;
        let running = lrps
            .iter()
            .filter(|l| l.state == ActualLrpState::Running)
            .count();
        if running > 0 && first.is_none() {
            first = Some(started.elapsed());
        }
        if running == INSTANCES as usize {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "LRP of {INSTANCES} instances: first RUNNING after {:?}, all RUNNING after {:?}",
        first.unwrap_or_default(),
        started.elapsed()
    );
    client.delete_desired_lrp("bench-app").await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    shutdown.cancel();
    running.await??;
    Ok(())
}
