//! Cluster behaviour without Docker, on [`TestCluster`]: the brain's and
//! the cells' real code, only the containers fake. What these check used
//! to need the engine (`server/lattice/tests/lrps.rs`, `roles.rs`,
//! `evacuation.rs`), which still test the engine's side of the same.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use lattice_converger::{CrashPolicy, Policy};
use lattice_executor::fake::Script;
use lattice_garden::Garden as _;
use lattice_models::{
    ActualLrp, ActualLrpState, DesiredLrpCreateRequest, DesiredLrpUpdateRequest, TaskCreateRequest,
    TaskState,
};
use lattice_testkit::cluster::{TestCell, TestCluster};
use serde_json::json;

/// The app's process: a server, running until it is stopped.
const SERVER: &str = "/bin/server";
/// The app's health check.
const CHECK: &str = "/bin/check";

/// `instances` of a server with a health check, 32 MB each.
fn web_app(guid: &str, instances: i64) -> DesiredLrpCreateRequest {
    serde_json::from_value(json!({
        "process_guid": guid,
        "domain": "tests",
        "rootfs": "docker:///busybox",
        "instances": instances,
        "memory_mb": 32,
        "ports": [8080],
        "start_timeout": 30,
        "action": {"run": {"path": SERVER}},
        "monitor": {"run": {"path": CHECK}},
    }))
    .expect("a valid request")
}

/// A cluster whose servers run until stopped and pass their checks.
fn builder() -> lattice_testkit::cluster::ClusterBuilder {
    TestCluster::builder()
        .script(SERVER, Script::runs_until_stopped())
        .script(CHECK, Script::exits(0))
}

/// Waits until `guid` has exactly `count` instances, all RUNNING.
async fn all_running(cluster: &TestCluster, guid: &str, count: usize) -> Vec<ActualLrp> {
    cluster
        .until(
            &format!("{count} running instances of {guid}"),
            async || {
                let lrps = cluster.instances(guid).await;
                let running =
                    lrps.len() == count && lrps.iter().all(|l| l.state == ActualLrpState::Running);
                running.then_some(lrps)
            },
        )
        .await
}

/// Containers on `cell` now.
async fn containers(cell: &TestCell) -> usize {
    cell.garden
        .list(&BTreeMap::new())
        .await
        .expect("the fake lists")
        .len()
}

/// Waits until the cells hold `count` containers in all.
async fn containers_settle(cluster: &TestCluster, count: usize) {
    cluster
        .until(&format!("{count} containers"), async || {
            let mut total = 0;
            for cell in cluster.cells().iter().filter(|c| c.is_running()) {
                total += containers(cell).await;
            }
            (total == count).then_some(())
        })
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn instances_spread_over_the_cells_and_a_dead_one_is_replaced() {
    let cluster = builder().cells(3).start().await;
    let client = cluster.client();
    client.create_desired_lrp(&web_app("web", 6)).await.unwrap();
    let lrps = all_running(&cluster, "web", 6).await;
    let per_cell = lrps.iter().fold(BTreeMap::new(), |mut m, l| {
        *m.entry(l.cell_id.clone()).or_insert(0) += 1;
        m
    });
    assert_eq!(
        per_cell.values().copied().collect::<Vec<_>>(),
        [2, 2, 2],
        "{per_cell:?}"
    );
    containers_settle(&cluster, 6).await;

    // Instance 1's container dies behind the cluster's back.
    let victim = lrps.iter().find(|l| l.index == 1).expect("index 1");
    let cell = cluster
        .cells()
        .iter()
        .find(|c| c.cell_id == victim.cell_id)
        .expect("its cell");
    cell.garden
        .exited(&format!("lattice-lrp-{}", victim.instance_guid), Some(137));
    let replaced = cluster
        .until("a replacement for instance 1", async || {
            let lrp = cluster.store().get_actual_lrp("web", 1).await.ok()?;
            let fresh =
                lrp.state == ActualLrpState::Running && lrp.instance_guid != victim.instance_guid;
            fresh.then_some(lrp)
        })
        .await;
    assert_eq!(replaced.crash_count, 1);
    containers_settle(&cluster, 6).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn scale_up_and_down_then_remove_leaves_nothing() {
    let cluster = builder().start().await;
    let client = cluster.client();
    client
        .create_desired_lrp(&web_app("scaled", 3))
        .await
        .unwrap();
    all_running(&cluster, "scaled", 3).await;
    for target in [1usize, 4] {
        let update = DesiredLrpUpdateRequest {
            instances: Some(target as i64),
            ..Default::default()
        };
        client.update_desired_lrp("scaled", &update).await.unwrap();
        let lrps = all_running(&cluster, "scaled", target).await;
        let indices: Vec<i64> = lrps.iter().map(|l| l.index).collect();
        assert_eq!(indices, (0..target as i64).collect::<Vec<_>>());
        containers_settle(&cluster, target).await;
    }
    client.delete_desired_lrp("scaled").await.unwrap();
    cluster
        .until("the instances to go", async || {
            cluster.instances("scaled").await.is_empty().then_some(())
        })
        .await;
    containers_settle(&cluster, 0).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crashing_app_is_restarted_by_the_crash_policy_then_given_up() {
    let policy = Policy {
        crash: CrashPolicy {
            immediate_restarts: 2,
            backoff_min: Duration::from_millis(300),
            backoff_max: Duration::from_millis(600),
            max_restart_attempts: 4,
        },
        ..Default::default()
    };
    let cluster = builder()
        .policy(policy)
        .converge_interval(Duration::from_millis(200))
        .script("/bin/crash", Script::exits(9))
        .start()
        .await;
    let mut app = web_app("crasher", 1);
    app.action = serde_json::from_value(json!({"run": {"path": "/bin/crash"}})).unwrap();
    app.monitor = None;
    cluster.client().create_desired_lrp(&app).await.unwrap();

    // Crashes 1 and 2 restart at once, 3 after a back-off; at 4 it stops.
    let given_up = cluster
        .until("the instance to be given up", async || {
            let lrp = cluster.store().get_actual_lrp("crasher", 0).await.ok()?;
            (lrp.state == ActualLrpState::Crashed && lrp.crash_count >= 4).then_some(lrp)
        })
        .await;
    assert_eq!(given_up.crash_reason, "Exited with status 9");
    assert_eq!(given_up.crash_count, 4, "never restarted past the limit");
    let started = cluster
        .cells()
        .iter()
        .map(|c| c.garden.processes_of("/bin/crash").len())
        .sum::<usize>();
    assert_eq!(started, 4, "one run per crash");
    containers_settle(&cluster, 0).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_monitor_that_never_passes_crashes_after_the_start_timeout() {
    let cluster = builder().script(CHECK, Script::exits(1)).start().await;
    let mut app = web_app("unhealthy", 1);
    app.start_timeout = 1;
    cluster.client().create_desired_lrp(&app).await.unwrap();
    let crashed = cluster
        .until("the instance to crash", async || {
            let lrp = cluster.store().get_actual_lrp("unhealthy", 0).await.ok()?;
            (lrp.crash_count >= 1).then_some(lrp)
        })
        .await;
    assert!(
        crashed.crash_reason.contains("start timeout of 1 s"),
        "{}",
        crashed.crash_reason
    );
    cluster
        .client()
        .delete_desired_lrp("unhealthy")
        .await
        .unwrap();
    containers_settle(&cluster, 0).await;
    cluster.shutdown().await;
}

fn sleeping_task(guid: &str) -> TaskCreateRequest {
    serde_json::from_value(json!({
        "task_guid": guid, "domain": "tests", "rootfs": "docker:///busybox",
        "memory_mb": 32, "action": {"run": {"path": SERVER}},
    }))
    .expect("a valid task")
}

/// The cell each RUNNING instance of `guid` is on, by index.
async fn placement(cluster: &TestCluster, guid: &str) -> BTreeMap<i64, String> {
    cluster
        .instances(guid)
        .await
        .into_iter()
        .filter(|l| l.state == ActualLrpState::Running)
        .map(|l| (l.index, l.cell_id))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_cells_work_moves_and_its_task_fails_once() {
    let mut cluster = builder().cells(3).zones(&["z1", "z1", "z2"]).start().await;
    let client = cluster.client();
    client.create_task(&sleeping_task("long")).await.unwrap();
    let victim = cluster
        .until("the task to run", async || {
            let task = cluster.store().get_task("long").await.ok()?;
            (task.state == TaskState::Running).then_some(task.cell_id)
        })
        .await;
    client.create_desired_lrp(&web_app("web", 6)).await.unwrap();
    all_running(&cluster, "web", 6).await;
    let before = placement(&cluster, "web").await;
    assert!(
        before.values().any(|cell| *cell == victim),
        "the spread puts instances on the task's cell too: {before:?}"
    );

    let index: usize = victim
        .trim_start_matches("cell-")
        .parse()
        .expect("cells are cell-N");
    cluster.kill_cell(index).await;

    let after = cluster
        .until("the instances to run on the other cells", async || {
            let now = placement(&cluster, "web").await;
            (now.len() == 6 && now.values().all(|cell| *cell != victim)).then_some(now)
        })
        .await;
    for (index, cell) in &before {
        if *cell != victim {
            assert_eq!(after.get(index), Some(cell), "instance {index} stayed put");
        }
    }
    let failed = cluster
        .until("the task to fail", async || {
            let task = cluster.store().get_task("long").await.ok()?;
            (task.state == TaskState::Completed).then_some(task)
        })
        .await;
    assert!(failed.failed);
    assert_eq!(
        failed.failure_reason,
        lattice_converger::CELL_DISAPPEARED_REASON
    );
    let ran: usize = cluster
        .cells()
        .iter()
        .map(|c| {
            c.garden
                .processes_of(SERVER)
                .iter()
                .filter(|p| p.handle.starts_with("lattice-task-long-"))
                .count()
        })
        .sum();
    assert_eq!(ran, 1, "the task ran once, on the lost cell");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_draining_cell_hands_its_instances_over_without_a_gap() {
    let cluster = builder().cells(2).start().await;
    let client = cluster.client();
    client.create_desired_lrp(&web_app("web", 4)).await.unwrap();
    all_running(&cluster, "web", 4).await;
    let drained = cluster.cell(0);
    let moving: BTreeSet<i64> = placement(&cluster, "web")
        .await
        .into_iter()
        .filter(|(_, cell)| *cell == drained.cell_id)
        .map(|(index, _)| index)
        .collect();
    assert!(!moving.is_empty(), "both cells hold instances");

    // Every index keeps a RUNNING instance (the evacuating one, then its
    // replacement) for as long as the drain takes.
    let report = {
        let watch = async {
            loop {
                for lrp in cluster.instances("web").await {
                    // An evacuating instance serves until it is released.
                    let serving =
                        lrp.state == ActualLrpState::Running || lrp.evacuating_instance.is_some();
                    assert!(serving, "instance {} has no running copy", lrp.index);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::select! {
            report = drained.rep.evacuate() => report,
            () = watch => unreachable!("the watch only ends by a failed assertion"),
        }
    };
    assert_eq!(report.handed_over, moving.len(), "{report:?}");
    assert_eq!(report.replaced, moving.len(), "{report:?}");
    let after = placement(&cluster, "web").await;
    assert!(
        after.values().all(|cell| *cell != drained.cell_id),
        "{after:?}"
    );
    cluster
        .until("the drained cell's containers to go", async || {
            (containers(drained).await == 0).then_some(())
        })
        .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_result_comes_back_and_what_no_cell_holds_fails() {
    let cluster = builder()
        .memory_mb(256)
        .script(
            "/bin/report",
            Script::exits(0).writes("/tmp/result.json", r#"{"ok":true}"#),
        )
        .start()
        .await;
    let client = cluster.client();
    let task: TaskCreateRequest = serde_json::from_value(json!({
        "task_guid": "reporter", "domain": "tests", "rootfs": "docker:///busybox",
        "memory_mb": 32, "action": {"run": {"path": "/bin/report"}},
        "result_file": "/tmp/result.json",
    }))
    .unwrap();
    client.create_task(&task).await.unwrap();
    let mut too_big = sleeping_task("too-big");
    too_big.memory_mb = 1024;
    client.create_task(&too_big).await.unwrap();
    for guid in ["reporter", "too-big"] {
        cluster
            .until(&format!("{guid} to complete"), async || {
                let task = cluster.store().get_task(guid).await.ok()?;
                (task.state == TaskState::Completed).then_some(())
            })
            .await;
    }
    let done = cluster.store().get_task("reporter").await.unwrap();
    assert!(!done.failed, "{}", done.failure_reason);
    assert_eq!(done.result, r#"{"ok":true}"#);
    let refused = cluster.store().get_task("too-big").await.unwrap();
    assert!(refused.failed);
    assert!(
        refused.failure_reason.starts_with("insufficient resources"),
        "{}",
        refused.failure_reason
    );
    cluster.shutdown().await;
}
