//! Evacuation end to end on the real Docker engine: a brain, a router and
//! cells as `lattice brain`, `lattice router` and `lattice cell` run them
//! (in this process), each cell a fresh owner label. A cell drained with
//! `ltc cells drain` and a cell told to stop (its shutdown, as SIGTERM
//! fires it) move their instances to the other cells while requests
//! through the router keep succeeding, and take no new work.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{containers_of, eventually, lifecycle_dir, run_ltc};
use lattice::cell::CellConfig;
use lattice::roles::{run_cell, Brain, BrainConfig, CellRoleConfig, RouterRole, RouterRoleConfig};
use lattice_client::Client;
use lattice_models::{ActualLrpState, DesiredLrpCreateRequest, DesiredLrpUpdateRequest};
use lattice_testkit::docker::OwnerGuard;
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(90);
const SECRET: &str = "evacuation-test-secret";
const HOST: &str = "drain.localhost";

struct TestCell {
    id: String,
    stop: CancellationToken,
    running: JoinHandle<anyhow::Result<()>>,
    _cleanup: CellCleanup,
}

/// When a test fails: stops the cell before its containers are removed, so
/// that it cannot start another one after the removal.
struct CellCleanup {
    cell: tokio::task::AbortHandle,
    _guard: OwnerGuard,
}

impl Drop for CellCleanup {
    fn drop(&mut self) {
        self.cell.abort();
    }
}

async fn start_cell(
    brain: &str,
    zone: &str,
    data: &std::path::Path,
    direct: Option<bool>,
) -> TestCell {
    let guard = OwnerGuard::new("evac-cell");
    let id = guard.owner().to_string();
    let config = CellRoleConfig {
        brains: vec![brain.to_string()],
        secret: SECRET.to_string(),
        cell: CellConfig {
            cell_id: id.clone(),
            zone: zone.to_string(),
            lifecycle_dir: lifecycle_dir(),
            lifecycle_delivery: Default::default(),
            rep_listen: "127.0.0.1:0".parse().expect("valid address"),
            memory_mb: Some(4096),
            disk_mb: Some(100_000),
            containers: 64,
            max_download_bytes: lattice_executor::DEFAULT_MAX_DOWNLOAD_BYTES,
            cache_dir: data.join(&id),
            presence_ttl: Duration::from_secs(10),
            advertise_container_network: direct,
            evacuation_timeout: Duration::from_secs(60),
            spare_containers: 0,
            spare_containers_per_cell: 0,
        },
        advertise: Some("127.0.0.1".parse().expect("valid address")),
        instance_address: None,
        drain_timeout: Duration::from_secs(10),
    };
    let stop = CancellationToken::new();
    let running = tokio::spawn(run_cell(config, stop.clone()));
    let client = Client::new(brain, None).expect("client");
    eventually(&format!("cell {id} to register"), WAIT, || async {
        let cells = client.cells().await.ok()?;
        cells.iter().any(|c| c.presence.cell_id == id).then_some(())
    })
    .await;
    TestCell {
        id,
        stop,
        _cleanup: CellCleanup {
            cell: running.abort_handle(),
            _guard: guard,
        },
        running,
    }
}

async fn web_app(guid: &str, instances: i64) -> DesiredLrpCreateRequest {
    let rootfs = lattice_testkit::images::busybox_image().await;
    serde_json::from_value(json!({
        "process_guid": guid,
        "domain": "tests",
        "rootfs": rootfs,
        "instances": instances,
        "memory_mb": 32,
        "ports": [8080],
        "routes": {"cf-router": [{"hostnames": [HOST], "port": 8080}]},
        "action": {"run": {"path": "/bin/sh", "args": ["-c",
            "echo $INSTANCE_INDEX > /tmp/index.html; exec httpd -f -p $PORT -h /tmp"]}},
        "monitor": {"run": {"path": "/.lattice/bin/healthcheck", "args": ["--port", "8080"]}},
    }))
    .expect("valid request")
}

/// Waits until `guid` has `count` RUNNING instances and no evacuating
/// one; the cell of each index.
async fn settled(client: &Client, guid: &str, count: usize) -> BTreeMap<i64, String> {
    eventually(
        &format!("{count} running instances of {guid}"),
        WAIT,
        || async {
            let lrps = client.actual_lrps_by_process_guid(guid).await.ok()?;
            let ok = lrps.len() == count
                && lrps
                    .iter()
                    .all(|l| l.state == ActualLrpState::Running && l.evacuating_instance.is_none());
            ok.then(|| lrps.into_iter().map(|l| (l.index, l.cell_id)).collect())
        },
    )
    .await
}

/// Requests through the router from 4 clients, each one request after
/// another, until stopped (at most 10,000 each): how many were sent and how
/// many failed (not a 200).
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    running: JoinHandle<()>,
}

impl Load {
    fn start(router: String) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let (s, n, f) = (stop.clone(), sent.clone(), failed.clone());
        let running = tokio::spawn(async move {
            let client = |_| {
                let (s, n, f, router) = (s.clone(), n.clone(), f.clone(), router.clone());
                async move {
                    let http = reqwest::Client::new();
                    for _ in 0..10_000 {
                        if s.load(Ordering::SeqCst) {
                            break;
                        }
                        let ok = http
                            .get(format!("http://{router}/index.html"))
                            .header("host", HOST)
                            .send()
                            .await
                            .is_ok_and(|r| r.status() == 200);
                        n.fetch_add(1, Ordering::SeqCst);
                        if !ok {
                            f.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            };
            futures::future::join_all((0..4).map(client)).await;
        });
        Load {
            stop,
            sent,
            failed,
            running,
        }
    }

    async fn finish(self) -> (usize, usize) {
        self.stop.store(true, Ordering::SeqCst);
        self.running.await.expect("the load does not panic");
        (
            self.sent.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
        )
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn drained_and_stopped_cells_hand_their_instances_over_without_a_failed_request() {
    let data = tempfile::tempdir().expect("temp dir");
    let brain = Brain::prepare(BrainConfig {
        store: String::new(),
        data_dir: data.path().join("brain"),
        listen: "127.0.0.1:0".parse().expect("valid address"),
        secret: SECRET.to_string(),
        credentials: None,
        domain: "localhost".to_string(),
        router_address: None,
        max_body_bytes: lattice_receptor::DEFAULT_MAX_BODY_BYTES,
        max_upload_bytes: lattice_fileserver::DEFAULT_MAX_UPLOAD_BYTES,
        allow_privileged: false,
        brain_id: "evac-brain".to_string(),
        lock_ttl: lattice::roles::DEFAULT_LOCK_TTL,
        converge_interval: Duration::from_secs(2),
        policy: Default::default(),
        hub: Arc::new(lattice_logs::LogHub::new(Default::default())),
        drain_timeout: Duration::from_secs(10),
        ssh_listen: None,
    })
    .await
    .expect("brain starts");
    let url = format!("http://{}", brain.address().expect("brain address"));
    let stop_brain = CancellationToken::new();
    let brain = tokio::spawn(brain.run(stop_brain.clone()));
    let client = Client::new(&url, None).expect("client");

    // One cell routed at its containers' own addresses (this machine
    // reaches them), one through the engine's published ports.
    let a = start_cell(&url, "z1", data.path(), None).await;
    let b = start_cell(&url, "z2", data.path(), Some(false)).await;
    let router = RouterRole::prepare(RouterRoleConfig {
        brains: vec![url.clone()],
        listen: "127.0.0.1:0".parse().expect("valid address"),
        credentials: None,
        drain_timeout: Duration::from_secs(10),
        metrics_listen: None,
    })
    .await
    .expect("router binds");
    let router_address = router.address().expect("router address").to_string();
    let stop_router = CancellationToken::new();
    let router = tokio::spawn(router.run(stop_router.clone()));

    client
        .create_desired_lrp(&web_app("drain", 4).await)
        .await
        .expect("created");
    let placement = settled(&client, "drain", 4).await;
    let on_a = placement.values().filter(|c| **c == a.id).count();
    assert_eq!(
        on_a, 2,
        "the auction spreads over both cells: {placement:?}"
    );
    eventually("the router to reach the app", WAIT, || async {
        let response = reqwest::Client::new()
            .get(format!("http://{router_address}/index.html"))
            .header("host", HOST)
            .send()
            .await
            .ok()?;
        (response.status() == 200).then_some(())
    })
    .await;

    // Drain cell A under load.
    let load = Load::start(router_address.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let (code, out, err) = run_ltc(&url, None, &["cells", "drain", &a.id]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("is draining"), "{out}");
    // The drain runs on the cell after the answer: wait for the move.
    let placement = eventually("the instances to move to cell B", WAIT, || async {
        let placement = settled(&client, "drain", 4).await;
        placement.values().all(|c| *c == b.id).then_some(placement)
    })
    .await;
    assert!(
        placement.values().all(|c| *c == b.id),
        "every instance moved off the drained cell: {placement:?}"
    );
    eventually("the drained cell's containers to go", WAIT, || async {
        containers_of(&a.id).await.is_empty().then_some(())
    })
    .await;
    let drained_in = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (sent, failed) = load.finish().await;
    println!("drain of a cell with 2 of 4 instances: {sent} requests through the router, {failed} failed, drained in {drained_in:?}");
    assert!(sent > 100, "the load ran: {sent} requests");
    assert_eq!(
        failed, 0,
        "no request failed while the cell drained ({sent} sent)"
    );

    // The drained cell takes no new work.
    client
        .update_desired_lrp(
            "drain",
            &DesiredLrpUpdateRequest {
                instances: Some(6),
                ..Default::default()
            },
        )
        .await
        .expect("scaled");
    let placement = settled(&client, "drain", 6).await;
    assert!(
        placement.values().all(|c| *c == b.id),
        "the drained cell got no new instance: {placement:?}"
    );

    // Cell B told to stop (as SIGTERM does) drains to a new cell C first.
    let c = start_cell(&url, "z1", data.path(), Some(true)).await;
    let load = Load::start(router_address.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    b.stop.cancel();
    b.running
        .await
        .expect("cell B does not panic")
        .expect("cell B stops cleanly");
    let placement = eventually("the instances to move to cell C", WAIT, || async {
        let placement = settled(&client, "drain", 6).await;
        placement
            .values()
            .all(|cell| *cell == c.id)
            .then_some(placement)
    })
    .await;
    assert!(
        placement.values().all(|cell| *cell == c.id),
        "a stopped cell's instances moved to the open cell: {placement:?}"
    );
    let (sent, failed) = load.finish().await;
    println!("stop (SIGTERM) of a cell with 6 instances: {sent} requests, {failed} failed");
    assert_eq!(
        failed, 0,
        "no request failed while the cell stopped ({sent} sent)"
    );
    assert!(
        containers_of(&b.id).await.is_empty(),
        "the stopped cell left no container"
    );

    // Teardown: nothing left to move.
    client.delete_desired_lrp("drain").await.expect("deleted");
    for cell in [a, c] {
        cell.stop.cancel();
        cell.running
            .await
            .expect("no panic")
            .expect("stops cleanly");
    }
    stop_router.cancel();
    router.await.expect("no panic").expect("router stops");
    stop_brain.cancel();
    brain.await.expect("no panic").expect("brain stops");
}
