//! Routing end to end on the real Docker engine: apps are reachable at
//! `APP.DOMAIN` through the cluster's router, balanced over their running
//! instances, through kills and scale-downs without failed requests.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{eventually, Cluster};
use lattice_models::{ActualLrpState, DesiredLrpCreateRequest, DesiredLrpUpdateRequest};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(60);

async fn web_app(guid: &str, instances: i64) -> DesiredLrpCreateRequest {
    let rootfs = lattice_testkit::images::busybox_image().await;
    serde_json::from_value(json!({
        "process_guid": guid,
        "domain": "tests",
        "rootfs": rootfs,
        "instances": instances,
        "memory_mb": 32,
        "ports": [8080],
        "routes": {"cf-router": [{"hostnames": [format!("{guid}.localhost")], "port": 8080}]},
        "action": {"run": {"path": "/bin/sh", "args": ["-c",
            "echo $INSTANCE_INDEX > /tmp/index.html; exec httpd -f -p $PORT -h /tmp"]}},
        "monitor": {"run": {"path": "/.lattice/bin/healthcheck", "args": ["--port", "8080"]}},
    }))
    .expect("valid request")
}

/// One request through the router for `host`: (status, body).
async fn get(http: &reqwest::Client, router: &str, host: &str) -> (u16, String) {
    let resp = http
        .get(format!("http://{router}/index.html"))
        .header("host", host)
        .send()
        .await
        .expect("router answers");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

async fn running(cluster: &Cluster, guid: &str, count: usize) {
    eventually(&format!("{count} running instances"), WAIT, || async {
        let lrps = cluster
            .client
            .actual_lrps_by_process_guid(guid)
            .await
            .ok()?;
        let ok = lrps.len() == count && lrps.iter().all(|l| l.state == ActualLrpState::Running);
        ok.then_some(())
    })
    .await;
}

/// Waits until requests through the router reach exactly `expected`.
async fn routed_to(cluster: &Cluster, http: &reqwest::Client, host: &str, expected: &[&str]) {
    let expected: BTreeSet<String> = expected.iter().map(|s| s.to_string()).collect();
    eventually(
        &format!("routes of {host} to reach {expected:?}"),
        WAIT,
        || async {
            let mut seen = BTreeSet::new();
            for _ in 0..30 {
                let (status, body) = get(http, &cluster.router, host).await;
                if status != 200 {
                    return None;
                }
                seen.insert(body.trim().to_string());
            }
            (seen == expected).then_some(())
        },
    )
    .await;
}

/// Sends requests in a loop until stopped; counts failures (non-200).
fn request_loop(
    router: String,
    host: String,
) -> (
    Arc<AtomicBool>,
    Arc<AtomicUsize>,
    Arc<AtomicUsize>,
    tokio::task::JoinHandle<()>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let (s, n, f) = (stop.clone(), sent.clone(), failed.clone());
    let handle = tokio::spawn(async move {
        let http = reqwest::Client::new();
        // Bounded: at most 20,000 requests, however long the test runs.
        for _ in 0..20_000 {
            if s.load(Ordering::SeqCst) {
                break;
            }
            let (status, _) = get(&http, &router, &host).await;
            n.fetch_add(1, Ordering::SeqCst);
            if status != 200 {
                f.fetch_add(1, Ordering::SeqCst);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    (stop, sent, failed, handle)
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_reach_every_instance_and_survive_a_kill() {
    let cluster = Cluster::start().await;
    let http = reqwest::Client::new();
    cluster
        .client
        .create_desired_lrp(&web_app("web", 3).await)
        .await
        .unwrap();
    running(&cluster, "web", 3).await;
    routed_to(&cluster, &http, "WEB.localhost:8080", &["0", "1", "2"]).await;

    // Unknown hosts are named in a 404.
    let (status, body) = get(&http, &cluster.router, "nope.localhost").await;
    assert_eq!(status, 404);
    assert!(body.contains("nope.localhost"), "{body}");

    // Kill instance 2 behind the cluster's back; once its replacement is in
    // the table, no request fails.
    let victim = cluster.client.actual_lrp("web", 2).await.unwrap();
    common::kill_instance_container(&victim.instance_guid).await;
    eventually("a replacement for instance 2", WAIT, || async {
        let lrp = cluster.client.actual_lrp("web", 2).await.ok()?;
        (lrp.state == ActualLrpState::Running && lrp.instance_guid != victim.instance_guid)
            .then_some(())
    })
    .await;
    routed_to(&cluster, &http, "web.localhost", &["0", "1", "2"]).await;
    let mut failures = 0;
    for _ in 0..60 {
        if get(&http, &cluster.router, "web.localhost").await.0 != 200 {
            failures += 1;
        }
    }
    assert_eq!(
        failures, 0,
        "requests failed after the replacement was routed"
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn scaling_down_under_load_drops_no_request() {
    let cluster = Cluster::start().await;
    let http = reqwest::Client::new();
    cluster
        .client
        .create_desired_lrp(&web_app("steady", 3).await)
        .await
        .unwrap();
    running(&cluster, "steady", 3).await;
    routed_to(&cluster, &http, "steady.localhost", &["0", "1", "2"]).await;

    let (stop, sent, failed, handle) =
        request_loop(cluster.router.clone(), "steady.localhost".into());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let update = DesiredLrpUpdateRequest {
        instances: Some(1),
        ..Default::default()
    };
    cluster
        .client
        .update_desired_lrp("steady", &update)
        .await
        .unwrap();
    common::eventually("one container left", WAIT, || async {
        (cluster.containers().await.len() == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    handle.await.unwrap();
    assert!(
        sent.load(Ordering::SeqCst) > 20,
        "the loop sent too few requests to mean anything"
    );
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "requests failed during the scale-down"
    );
    routed_to(&cluster, &http, "steady.localhost", &["0"]).await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tcp_route_carries_raw_tcp() {
    let cluster = Cluster::start().await;
    let external = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut app = web_app("echo", 2).await;
    app.ports = vec![5222];
    app.routes = Some(
        serde_json::from_value(json!({
            "tcp-router": [{"external_port": external, "container_port": 5222}]
        }))
        .unwrap(),
    );
    app.action = serde_json::from_value(
        json!({"run": {"path": "/bin/nc", "args": ["-ll", "-p", "5222", "-e", "/bin/cat"]}}),
    )
    .unwrap();
    app.monitor = Some(
        serde_json::from_value(
            json!({"run": {"path": "/.lattice/bin/healthcheck", "args": ["--port", "5222"]}}),
        )
        .unwrap(),
    );
    cluster.client.create_desired_lrp(&app).await.unwrap();
    running(&cluster, "echo", 2).await;
    let router_ip = cluster.router.split(':').next().unwrap().to_string();
    let echoed = eventually("an echo through the TCP route", WAIT, || async {
        let mut stream = tokio::net::TcpStream::connect((router_ip.as_str(), external))
            .await
            .ok()?;
        stream.write_all(b"hello over tcp\n").await.ok()?;
        let mut buf = vec![0u8; 15];
        tokio::time::timeout(Duration::from_secs(2), stream.read_exact(&mut buf))
            .await
            .ok()?
            .ok()?;
        Some(buf)
    })
    .await;
    assert_eq!(echoed, b"hello over tcp\n");
    cluster.stop().await;
}
