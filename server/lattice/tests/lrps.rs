//! LRPs end to end on the real Docker engine: desired instances are started,
//! kept running through crashes, scaled, and removed without leftovers. The
//! crash policy and the start timeout, which need no engine, are tested on
//! the in-process cluster (`server/testkit/tests/cluster.rs`).

mod common;

use std::time::Duration;

use common::{eventually, Cluster, ClusterOptions};
use lattice_models::{ActualLrp, ActualLrpState, DesiredLrpCreateRequest, DesiredLrpUpdateRequest};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

/// An app of busybox httpd answering its instance index on $PORT, healthy
/// once it serves.
async fn web_app(guid: &str, instances: i64) -> DesiredLrpCreateRequest {
    let rootfs = lattice_testkit::images::busybox_image().await;
    app_serving(guid, instances, &rootfs, "echo $INSTANCE_INDEX")
}

/// An app of busybox httpd on $PORT answering what the shell command `page`
/// prints, healthy once it serves.
fn app_serving(guid: &str, instances: i64, rootfs: &str, page: &str) -> DesiredLrpCreateRequest {
    serde_json::from_value(json!({
        "process_guid": guid,
        "domain": "tests",
        "rootfs": rootfs,
        "instances": instances,
        "memory_mb": 32,
        "ports": [8080],
        "start_timeout": 30,
        "action": {"run": {"path": "/bin/sh", "args": ["-c",
            format!("{page} > /tmp/index.html; exec httpd -f -p $PORT -h /tmp")]}},
        "monitor": {"run": {"path": "/bin/wget", "args": ["-q", "-O", "/dev/null", "http://127.0.0.1:8080/index.html"]}},
    }))
    .expect("valid request")
}

async fn instances(cluster: &Cluster, guid: &str) -> Vec<ActualLrp> {
    cluster
        .client
        .actual_lrps_by_process_guid(guid)
        .await
        .expect("actual LRPs")
}

async fn all_running(cluster: &Cluster, guid: &str, count: usize) -> Vec<ActualLrp> {
    eventually(
        &format!("{count} running instances of {guid}"),
        WAIT,
        || async {
            let lrps = instances(cluster, guid).await;
            let running =
                lrps.len() == count && lrps.iter().all(|l| l.state == ActualLrpState::Running);
            running.then_some(lrps)
        },
    )
    .await
}

async fn containers_settle(cluster: &Cluster, count: usize) {
    eventually(&format!("{count} containers"), WAIT, || async {
        (cluster.containers().await.len() == count).then_some(())
    })
    .await;
}

/// `victim`'s index RUNNING again under another instance guid.
async fn replacement(cluster: &Cluster, victim: &ActualLrp) -> ActualLrp {
    eventually(
        &format!("a replacement for instance {}", victim.index),
        WAIT,
        || async {
            let lrp = cluster
                .client
                .actual_lrp(&victim.process_guid, victim.index)
                .await
                .ok()?;
            let fresh =
                lrp.state == ActualLrpState::Running && lrp.instance_guid != victim.instance_guid;
            fresh.then_some(lrp)
        },
    )
    .await
}

/// The name of the cluster's container that none of `lrps` runs in: the
/// app's spare.
async fn spare_container(cluster: &Cluster, lrps: &[ActualLrp]) -> String {
    cluster
        .containers()
        .await
        .into_iter()
        .find(|name| !lrps.iter().any(|l| name.ends_with(&l.instance_guid)))
        .expect("a container that no instance runs in")
}

/// The engine's id of the container named `name`: a container made anew
/// under the same name has another.
async fn container_id(name: &str) -> Option<String> {
    lattice_testkit::docker::connect()
        .await
        .inspect_container(name.trim_start_matches('/'), None)
        .await
        .expect("inspect")
        .id
}

async fn answer(lrp: &ActualLrp) -> String {
    let port = lrp.ports[0].host_port;
    reqwest::get(format!("http://{}:{port}/index.html", lrp.address))
        .await
        .expect("instance answers")
        .text()
        .await
        .expect("body")
}

#[tokio::test(flavor = "multi_thread")]
async fn instances_run_and_replace_a_killed_one() {
    let cluster = Cluster::start().await;
    cluster
        .client
        .create_desired_lrp(&web_app("web", 3).await)
        .await
        .unwrap();
    let lrps = all_running(&cluster, "web", 3).await;
    for lrp in &lrps {
        assert_eq!(lrp.cell_id, cluster.cell_id);
        assert_eq!(answer(lrp).await.trim(), lrp.index.to_string());
    }
    containers_settle(&cluster, 3).await;

    // Kill instance 1's container behind the cluster's back.
    let victim = lrps.iter().find(|l| l.index == 1).expect("index 1");
    common::kill_instance_container(&victim.instance_guid).await;
    let replaced = replacement(&cluster, victim).await;
    assert_eq!(replaced.crash_count, 1);
    assert_eq!(answer(&replaced).await.trim(), "1");
    containers_settle(&cluster, 3).await;
    cluster.stop().await;
}

/// Issue 16, goal 2, with `--spare-containers 1`: the cell keeps one
/// started, empty container of the app ready; a killed instance's
/// replacement runs in it (as instance 1, with its own environment), the
/// cell makes another, and removing the app removes its spare too.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_instance_restarts_in_the_spare_container_and_removal_leaves_nothing() {
    let cluster = Cluster::start_with(ClusterOptions {
        spare_containers: 1,
        ..Default::default()
    })
    .await;
    cluster
        .client
        .create_desired_lrp(&web_app("spared", 2).await)
        .await
        .unwrap();
    let lrps = all_running(&cluster, "spared", 2).await;
    containers_settle(&cluster, 3).await;
    let spare = spare_container(&cluster, &lrps).await;
    let spare_id = container_id(&spare).await;

    let victim = lrps.iter().find(|l| l.index == 1).expect("index 1");
    common::kill_instance_container(&victim.instance_guid).await;
    let replaced = replacement(&cluster, victim).await;
    assert!(
        spare.ends_with(&replaced.instance_guid),
        "instance 1 runs in the spare {spare}, not in {}",
        replaced.instance_guid
    );
    assert_eq!(
        container_id(&format!("lattice-lrp-{}", replaced.instance_guid)).await,
        spare_id,
        "the spare itself, not a container made anew under its name"
    );
    assert_eq!(answer(&replaced).await.trim(), "1");
    // The killed one goes, a new spare comes.
    containers_settle(&cluster, 3).await;

    cluster.client.delete_desired_lrp("spared").await.unwrap();
    containers_settle(&cluster, 0).await;
    cluster.stop().await;
}

/// A busybox image under `tag` whose `/build` holds `build`; the engine's
/// id of it.
async fn build_image(docker: &bollard::Docker, tag: &str, build: &str) -> String {
    use lattice_testkit::images;
    let mut rootfs = images::busybox_rootfs().expect("busybox rootfs");
    images::add_file(&mut rootfs, "build", 0o644, build.as_bytes()).expect("add /build");
    let rootfs = rootfs.into_inner().expect("rootfs tar");
    images::import_rootfs(
        docker,
        tag,
        rootfs,
        &["ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
    )
    .await
    .expect("import");
    docker
        .inspect_image(tag)
        .await
        .expect("inspect image")
        .id
        .expect("image id")
}

/// An image rebuilt under the same tag (`docker build -t` again) reaches a
/// killed instance's replacement: the spare made from the old build is not
/// taken, and the replacement runs the new build in a container of its own.
#[tokio::test(flavor = "multi_thread")]
async fn a_replacement_runs_an_image_rebuilt_under_the_same_tag_not_the_older_spare() {
    let docker = lattice_testkit::docker::connect().await;
    // Our own tag: other tests run beside this one on the same engine.
    let repository = format!("lattice-test/rebuilt-{}", uuid::Uuid::new_v4().simple());
    let tag = format!("{repository}:v1");
    let first = build_image(&docker, &tag, "first").await;
    let cluster = Cluster::start_with(ClusterOptions {
        spare_containers: 1,
        ..Default::default()
    })
    .await;
    let rootfs = format!("docker:///{repository}#v1");
    cluster
        .client
        .create_desired_lrp(&app_serving("rebuilt", 2, &rootfs, "cat /build"))
        .await
        .unwrap();
    let lrps = all_running(&cluster, "rebuilt", 2).await;
    containers_settle(&cluster, 3).await;
    let spare = spare_container(&cluster, &lrps).await;
    let spare_id = container_id(&spare).await;

    let second = build_image(&docker, &tag, "second").await;
    assert_ne!(first, second, "the rebuild made another image");
    let victim = lrps.iter().find(|l| l.index == 1).expect("index 1");
    common::kill_instance_container(&victim.instance_guid).await;
    let replaced = replacement(&cluster, victim).await;
    assert_eq!(answer(&replaced).await.trim(), "second");
    assert_ne!(
        container_id(&format!("lattice-lrp-{}", replaced.instance_guid)).await,
        spare_id,
        "not the spare made from the first build"
    );
    let untouched = lrps.iter().find(|l| l.index == 0).expect("index 0");
    assert_eq!(answer(untouched).await.trim(), "first");
    containers_settle(&cluster, 3).await;

    cluster.client.delete_desired_lrp("rebuilt").await.unwrap();
    containers_settle(&cluster, 0).await;
    cluster.stop().await;
    for image in [first, second] {
        lattice_testkit::images::remove_image(&docker, &image).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn scale_up_and_down_then_remove_leaves_nothing() {
    let cluster = Cluster::start().await;
    cluster
        .client
        .create_desired_lrp(&web_app("scaled", 3).await)
        .await
        .unwrap();
    all_running(&cluster, "scaled", 3).await;
    for target in [1usize, 4] {
        let update = DesiredLrpUpdateRequest {
            instances: Some(target as i64),
            ..Default::default()
        };
        cluster
            .client
            .update_desired_lrp("scaled", &update)
            .await
            .unwrap();
        let lrps = all_running(&cluster, "scaled", target).await;
        let mut indices: Vec<i64> = lrps.iter().map(|l| l.index).collect();
        indices.sort();
        assert_eq!(indices, (0..target as i64).collect::<Vec<_>>());
        containers_settle(&cluster, target).await;
    }
    cluster.client.delete_desired_lrp("scaled").await.unwrap();
    eventually("instances to go", WAIT, || async {
        instances(&cluster, "scaled").await.is_empty().then_some(())
    })
    .await;
    containers_settle(&cluster, 0).await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn restarting_the_whole_server_keeps_the_instance_count() {
    let guard = lattice_testkit::docker::OwnerGuard::new("restart-cell");
    let data = tempfile::tempdir().unwrap();
    let options = ClusterOptions::default();
    for round in 0..2 {
        let config = common::up_config(data.path(), guard.owner(), &options);
        let up = lattice::up::Up::prepare(config)
            .await
            .expect("cluster starts");
        let base = format!("http://{}", up.receptor_address().unwrap());
        let shutdown = tokio_util::sync::CancellationToken::new();
        let running = tokio::spawn(up.run(shutdown.clone()));
        let client = lattice_client::Client::new(&base, None).unwrap();
        if round == 0 {
            client
                .create_desired_lrp(&web_app("durable", 2).await)
                .await
                .unwrap();
        }
        eventually("2 running instances", WAIT, || async {
            let lrps = client.actual_lrps_by_process_guid("durable").await.ok()?;
            let ok = lrps.len() == 2 && lrps.iter().all(|l| l.state == ActualLrpState::Running);
            ok.then_some(())
        })
        .await;
        eventually("exactly 2 containers", WAIT, || async {
            (common::containers_of(guard.owner()).await.len() == 2).then_some(())
        })
        .await;
        shutdown.cancel();
        running.await.unwrap().unwrap();
    }
    assert!(common::containers_of(guard.owner()).await.is_empty());
}
