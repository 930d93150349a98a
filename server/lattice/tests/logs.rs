//! Logs end to end on the real Docker engine: an app's stdout and stderr
//! reach `ltc logs` followers in order per instance with the right tags, a
//! stalled follower slows no one, history replays for a new follower, and
//! the cell's and router's own lines join the app's stream.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{eventually, Cluster};
use futures::StreamExt;
use lattice_logs::{FollowOptions, LogFilter, LogsClient};
use lattice_models::log::{LogMessage, MessageType};
use lattice_models::{ActualLrpState, DesiredLrpCreateRequest};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);
const LINES: usize = 200;

async fn chatty_app(instances: i64) -> DesiredLrpCreateRequest {
    let rootfs = lattice_testkit::images::busybox_image().await;
    let script = format!(
        "i=0; while [ $i -lt {LINES} ]; do echo \"out $i\"; echo \"err $i\" >&2; i=$((i+1)); sleep 0.01; done; \
         exec httpd -f -p 8080 -h /tmp"
    );
    serde_json::from_value(json!({
        "process_guid": "chatty",
        "domain": "tests",
        "rootfs": rootfs,
        "instances": instances,
        "memory_mb": 32,
        "ports": [8080],
        "start_timeout": 60,
        "log_guid": "chatty",
        "routes": {"cf-router": [{"hostnames": ["chatty.localhost"], "port": 8080}]},
        "action": {"run": {"path": "/bin/sh", "args": ["-c", script]}},
        "monitor": {"run": {"path": "/.lattice/bin/healthcheck", "args": ["--port", "8080"]}},
    }))
    .expect("valid request")
}

/// The numbered APP lines per (instance, stream), in arrival order.
fn numbered(lines: &[LogMessage]) -> BTreeMap<(String, &'static str), Vec<usize>> {
    let mut by_key: BTreeMap<(String, &'static str), Vec<usize>> = BTreeMap::new();
    for line in lines.iter().filter(|l| l.source_type == "APP") {
        let (stream, expected_type) = if line.message.starts_with("out ") {
            ("out", MessageType::Out)
        } else if line.message.starts_with("err ") {
            ("err", MessageType::Err)
        } else {
            continue;
        };
        assert_eq!(line.message_type, expected_type, "{line:?}");
        let n = line.message[4..].parse().expect("numbered line");
        by_key
            .entry((line.source_instance.clone(), stream))
            .or_default()
            .push(n);
    }
    by_key
}

fn complete(by_key: &BTreeMap<(String, &'static str), Vec<usize>>, instances: usize) -> bool {
    by_key.len() == instances * 2 && by_key.values().all(|v| v.len() == LINES)
}

#[tokio::test(flavor = "multi_thread")]
async fn app_output_reaches_followers_in_order_with_cell_and_router_lines() {
    let cluster = Cluster::start().await;
    let logs = LogsClient::new(&cluster.base, None).expect("logs client");
    let live = FollowOptions {
        recent: false,
        ..Default::default()
    };
    let mut follower = logs.follow("chatty", &live).await.expect("follow");
    // A follower that never reads: it must not slow the app or the other.
    let _stalled = logs.follow("chatty", &live).await.expect("follow");

    cluster
        .client
        .create_desired_lrp(&chatty_app(2).await)
        .await
        .unwrap();
    let mut received = Vec::new();
    let collected = tokio::time::timeout(WAIT, async {
        while let Some(line) = follower.next().await {
            received.push(line.expect("log line"));
            if complete(&numbered(&received), 2) {
                return;
            }
        }
    })
    .await;
    assert!(
        collected.is_ok(),
        "follower got {:?}",
        numbered(&received)
            .iter()
            .map(|(k, v)| (k.clone(), v.len()))
            .collect::<Vec<_>>()
    );
    for ((instance, stream), numbers) in numbered(&received) {
        assert_eq!(
            numbers,
            (0..LINES).collect::<Vec<_>>(),
            "instance {instance} {stream} out of order"
        );
    }
    assert!(
        received
            .iter()
            .any(|l| l.source_type == "CELL" && l.message.starts_with("Creating container")),
        "no CELL line among {} lines: {:?}",
        received.len(),
        received
            .iter()
            .filter(|l| l.source_type != "APP")
            .map(|l| (&l.source_type, &l.message))
            .collect::<Vec<_>>()
    );

    // A new follower gets the history first.
    let replay = logs
        .recent("chatty", &LogFilter::default())
        .await
        .expect("recent");
    assert!(
        complete(&numbered(&replay), 2),
        "recent history is incomplete"
    );

    // Router access lines join the app's stream as RTR.
    eventually("both instances running", WAIT, || async {
        let lrps = cluster
            .client
            .actual_lrps_by_process_guid("chatty")
            .await
            .ok()?;
        (lrps.len() == 2 && lrps.iter().all(|l| l.state == ActualLrpState::Running)).then_some(())
    })
    .await;
    let http = reqwest::Client::new();
    eventually("an RTR line", WAIT, || async {
        let _ = http
            .get(format!("http://{}/", cluster.router))
            .header("host", "chatty.localhost")
            .send()
            .await;
        let filter = LogFilter {
            source: Some("RTR".into()),
            ..Default::default()
        };
        let lines = logs.recent("chatty", &filter).await.ok()?;
        lines
            .iter()
            .any(|l| l.message.contains("chatty.localhost"))
            .then_some(())
    })
    .await;

    // A crash shows as a CELL line.
    let victim = cluster.client.actual_lrp("chatty", 1).await.unwrap();
    common::kill_instance_container(&victim.instance_guid).await;
    eventually("a CELL line about the crash", WAIT, || async {
        let filter = LogFilter {
            source: Some("CELL".into()),
            instance: Some("1".into()),
        };
        let lines = logs.recent("chatty", &filter).await.ok()?;
        lines
            .iter()
            .any(|l| {
                l.message
                    .contains("Instance crashed: Exited with status 137")
            })
            .then_some(())
    })
    .await;
    cluster.stop().await;
}
