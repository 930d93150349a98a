//! The auctioneer's loop against real cells: reps on the fake Garden in
//! an in-process cluster ([`TestCluster`]), reached over HTTP as in
//! production. The pure auction is tested in `scheduler.rs` and by the
//! simulation; these check what only the loop sees: cells' answers (a
//! draining cell, a cell that does not answer) and where work lands.

use std::collections::BTreeMap;
use std::time::Duration;

use lattice_models::{ActualLrpState, DesiredLrpCreateRequest};
use lattice_testkit::cluster::{Script, TestCluster};
use serde_json::json;

const SERVER: &str = "/bin/server";

fn app(guid: &str, instances: i64) -> DesiredLrpCreateRequest {
    serde_json::from_value(json!({
        "process_guid": guid, "domain": "tests", "rootfs": "docker:///busybox",
        "instances": instances, "memory_mb": 64,
        "action": {"run": {"path": SERVER}},
    }))
    .expect("a valid request")
}

/// Waits until `guid` has `count` RUNNING instances; how many each cell
/// runs.
async fn running_per_cell(
    cluster: &TestCluster,
    guid: &str,
    count: usize,
) -> BTreeMap<String, usize> {
    cluster
        .until(
            &format!("{count} running instances of {guid}"),
            async || {
                let lrps = cluster.instances(guid).await;
                let running: Vec<_> = lrps
                    .iter()
                    .filter(|l| l.state == ActualLrpState::Running)
                    .collect();
                (lrps.len() == count && running.len() == count).then(|| {
                    running.iter().fold(BTreeMap::new(), |mut cells, l| {
                        *cells.entry(l.cell_id.clone()).or_insert(0) += 1;
                        cells
                    })
                })
            },
        )
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn instances_are_balanced_across_zones_then_cells() {
    let cluster = TestCluster::builder()
        .cells(4)
        .zones(&["z1", "z2"])
        .script(SERVER, Script::runs_until_stopped())
        .start()
        .await;
    cluster
        .client()
        .create_desired_lrp(&app("web", 8))
        .await
        .unwrap();
    let per_cell = running_per_cell(&cluster, "web", 8).await;
    assert_eq!(
        per_cell,
        BTreeMap::from([
            ("cell-0".to_string(), 2),
            ("cell-1".to_string(), 2),
            ("cell-2".to_string(), 2),
            ("cell-3".to_string(), 2),
        ])
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_draining_cell_is_given_no_work() {
    let cluster = TestCluster::builder()
        .cells(3)
        .script(SERVER, Script::runs_until_stopped())
        .start()
        .await;
    let report = cluster.cell(1).rep.evacuate().await;
    assert_eq!(report.handed_over, 0, "nothing ran there yet");
    cluster
        .client()
        .create_desired_lrp(&app("web", 4))
        .await
        .unwrap();
    let per_cell = running_per_cell(&cluster, "web", 4).await;
    assert_eq!(
        per_cell,
        BTreeMap::from([("cell-0".to_string(), 2), ("cell-2".to_string(), 2)])
    );
    assert!(cluster.cell(1).garden.processes().is_empty());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cell_that_does_not_answer_is_passed_over_while_its_presence_lasts() {
    // The lost cell stays listed for a minute: only its silence tells.
    let mut cluster = TestCluster::builder()
        .cells(2)
        .presence_ttl(Duration::from_secs(60))
        .script(SERVER, Script::runs_until_stopped())
        .start()
        .await;
    cluster.kill_cell(0).await;
    let listed = cluster.store().list_cells().await.unwrap();
    assert_eq!(listed.len(), 2, "the lost cell's presence has not expired");
    cluster
        .client()
        .create_desired_lrp(&app("web", 3))
        .await
        .unwrap();
    let per_cell = running_per_cell(&cluster, "web", 3).await;
    assert_eq!(per_cell, BTreeMap::from([("cell-1".to_string(), 3)]));
    cluster.shutdown().await;
}
