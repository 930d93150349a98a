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

/// Issue 14, items 1 and 5: `ltc create`'s own help example (an image
/// setting neither ENTRYPOINT nor CMD, a start command after `--`) failed
/// staging with "the image has no start command"; `--run-as-root` on an
/// image without users crash-looped with "unable to find user root".
#[tokio::test(flavor = "multi_thread")]
async fn ltc_create_runs_a_cmd_less_image_without_users_as_root() {
    const IMAGE: &str = "lattice-test/no-cmd-no-users:v1";
    let engine = lattice_testkit::docker::connect().await;
    let path = "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    lattice_testkit::images::ensure_image(&engine, IMAGE, &[path], || {
        Ok(lattice_testkit::images::busybox_rootfs_without_users()?.into_inner()?)
    })
    .await
    .expect("image imported");
    let cluster = Cluster::start().await;

    let script = "echo \"uid $(id -u)\" > /tmp/index.html; exec httpd -f -p $PORT -h /tmp";
    let (code, out, err) = common::run_ltc(
        &cluster.base,
        None,
        &[
            "create",
            "rooted",
            IMAGE,
            "-p",
            "8080",
            "--run-as-root",
            "--timeout",
            "60s",
            "--",
            "sh",
            "-c",
            script,
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains(&format!("Staged {IMAGE}: start command sh -c")),
        "{out}"
    );
    let lrp = cluster.client.desired_lrp("rooted").await.expect("desired");
    assert_eq!(lrp.action.run_actions()[0].user.as_deref(), Some("0"));

    let http = reqwest::Client::new();
    let body = eventually("the app to answer through the router", WAIT, || async {
        let response = http
            .get(format!("http://{}/index.html", cluster.router))
            .header("host", "rooted.localhost")
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.text().await.ok()
    })
    .await;
    assert_eq!(body.trim(), "uid 0");

    // Without a start command the image is still refused, saying why.
    let (code, _, err) = common::run_ltc(
        &cluster.base,
        None,
        &["create", "nocmd", IMAGE, "--no-routes", "--timeout", "60s"],
    )
    .await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("staging lattice-test/no-cmd-no-users:v1 failed"),
        "{err}"
    );
    cluster.stop().await;
}
