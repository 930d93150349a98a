//! Metrics end to end on the real Docker engine: an instance holding a
//! known amount of memory shows it in `ltc status`, `ltc cells` and the
//! receptor's metrics endpoint; `/metrics` parses as Prometheus text and its
//! counters move when work is done.

mod common;

use std::time::Duration;

use common::{eventually, run_ltc, Cluster, ClusterOptions};
use lattice_models::{ActualLrpState, ContainerMetrics, DesiredLrpCreateRequest};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);
const MIB: u64 = 1024 * 1024;
/// What the instance holds in memory and writes to disk (see the test
/// kit's memory image).
const HELD_MEMORY_MB: u64 = 48;
const WRITTEN_DISK_MB: u64 = 8;

async fn memory_app(guid: &str) -> DesiredLrpCreateRequest {
    let rootfs = lattice_testkit::images::memory_image().await;
    serde_json::from_value(json!({
        "process_guid": guid,
        "domain": "tests",
        "rootfs": rootfs,
        "instances": 1,
        "memory_mb": 128,
        "disk_mb": 256,
        "start_timeout": 30,
        "action": {"run": {"path": "/bin/hold-memory", "args": [
            HELD_MEMORY_MB.to_string(), WRITTEN_DISK_MB.to_string()]}},
    }))
    .expect("valid request")
}

/// A scrape of `GET /metrics`, parsed.
async fn scrape(base: &str) -> prometheus_parse::Scrape {
    let response = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("the receptor answers");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .expect("text")
        .to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = response.text().await.expect("a body");
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("a scrape parses as Prometheus text")
}

/// The sum of the samples of `name` whose labels include `labels`.
fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_shows_the_memory_it_holds_and_the_counters_move() {
    let cluster = Cluster::start_with(ClusterOptions::default()).await;
    let before = scrape(&cluster.base).await;

    cluster
        .client
        .create_desired_lrp(&memory_app("hog").await)
        .await
        .expect("created");
    let metrics: ContainerMetrics = eventually("a usage sample of hog/0", WAIT, || async {
        let running = cluster
            .client
            .actual_lrps_by_process_guid("hog")
            .await
            .ok()?
            .iter()
            .any(|a| a.state == ActualLrpState::Running);
        let sample = cluster
            .client
            .actual_lrp_metrics("hog")
            .await
            .ok()?
            .into_iter()
            .next()?;
        // Sampled after the script filled its memory.
        (running && sample.memory_bytes >= (HELD_MEMORY_MB - 4) * MIB).then_some(sample)
    })
    .await;
    let range = (HELD_MEMORY_MB - 4) * MIB..=(HELD_MEMORY_MB + 40) * MIB;
    assert!(range.contains(&metrics.memory_bytes), "{metrics:?}");
    assert_eq!(metrics.memory_bytes_quota, 128 * MIB);
    assert!(metrics.disk_bytes >= WRITTEN_DISK_MB * MIB, "{metrics:?}");
    assert_eq!(metrics.disk_bytes_quota, 256 * MIB);
    assert_eq!(metrics.index, 0);
    assert_eq!(metrics.cell_id, cluster.cell_id);
    assert!(metrics.cpu_percentage >= 0.0, "{metrics:?}");

    let (code, out, err) = run_ltc(&cluster.base, None, &["status", "hog"]).await;
    assert_eq!(code, 0, "{err}");
    let row = out
        .lines()
        .find(|l| l.contains("RUNNING"))
        .unwrap_or_else(|| panic!("no running instance in\n{out}"));
    assert!(row.contains(" MB / 128 MB"), "{row}");
    assert!(row.contains(" MB / 256 MB"), "{row}");
    assert!(row.contains('%'), "{row}");

    let (code, out, err) = run_ltc(&cluster.base, None, &["status", "hog", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let memory = json["metrics"][0]["memory_bytes"]
        .as_u64()
        .expect("a sample");
    assert!(memory >= (HELD_MEMORY_MB - 4) * MIB, "{json}");

    let (code, out, err) = run_ltc(&cluster.base, None, &["cells", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let cells: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let used = cells[0]["usage"]["memory_bytes"].as_u64().expect("usage");
    assert!(used >= (HELD_MEMORY_MB - 4) * MIB, "{cells}");
    let (code, out, err) = run_ltc(&cluster.base, None, &["cells"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("/128"), "memory used/allocated in\n{out}");

    // One request the router answers itself: no such app.
    let routed = reqwest::Client::new()
        .get(format!("http://{}/", cluster.router))
        .header("host", "nothing-here.localhost")
        .send()
        .await
        .expect("the router answers");
    assert_eq!(routed.status(), 404);

    let after = eventually("the router's count of its answer", WAIT, || async {
        let after = scrape(&cluster.base).await;
        let counted = value(
            &after,
            "lattice_router_requests_total",
            &[("status", "404")],
        ) > value(
            &before,
            "lattice_router_requests_total",
            &[("status", "404")],
        );
        counted.then_some(after)
    })
    .await;
    let moved = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };
    let created = [
        ("api", "receptor"),
        ("method", "POST"),
        ("route", "/v1/desired_lrps"),
        ("status", "201"),
    ];
    assert!(moved("lattice_api_requests_total", &created) >= 1.0);
    assert!(
        moved(
            "lattice_api_request_duration_seconds_count",
            &[("route", "/v1/actual_lrps/:process_guid/metrics")]
        ) >= 1.0,
        "latency by route template"
    );
    assert!(moved("lattice_auction_rounds_total", &[]) >= 1.0);
    assert!(moved("lattice_auction_round_duration_seconds_count", &[]) >= 1.0);
    assert!(moved("lattice_auction_placed_total", &[("work", "lrp")]) >= 1.0);
    assert!(moved("lattice_converge_passes_total", &[]) >= 1.0);
    assert!(moved("lattice_converge_duration_seconds_count", &[]) >= 1.0);
    assert!(
        moved("lattice_log_lines_total", &[]) >= 1.0,
        "the cell's lines"
    );
    assert!(
        moved(
            "lattice_store_operation_duration_seconds_count",
            &[("operation", "create_desired_lrp"), ("outcome", "ok")]
        ) >= 1.0
    );
    assert!(moved("lattice_router_request_duration_seconds_count", &[]) >= 1.0);
    assert!(value(&after, "lattice_lrp_instances", &[("state", "RUNNING")]) >= 1.0);
    assert!(value(&after, "lattice_desired_lrps", &[]) >= 1.0);
    let cell = [("cell_id", cluster.cell_id.as_str())];
    assert!(
        value(&after, "lattice_cell_memory_used_bytes", &cell)
            >= ((HELD_MEMORY_MB - 4) * MIB) as f64
    );
    assert_eq!(
        value(&after, "lattice_cell_memory_allocated_bytes", &cell),
        (128 * MIB) as f64
    );

    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_sit_behind_the_api_credentials() {
    let cluster = Cluster::start_with(ClusterOptions {
        credentials: Some(lattice_receptor::Credentials {
            username: "admin".into(),
            password: "s3cret".into(),
        }),
        ..ClusterOptions::default()
    })
    .await;
    let http = reqwest::Client::new();
    let url = format!("{}/metrics", cluster.base);
    let anonymous = http.get(&url).send().await.expect("answers");
    assert_eq!(anonymous.status(), 401);
    let signed = http
        .get(&url)
        .basic_auth("admin", Some("s3cret"))
        .send()
        .await
        .expect("answers");
    assert_eq!(signed.status(), 200);
    let text = signed.text().await.expect("a body");
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("Prometheus text");
    assert!(text.contains("lattice_api_requests_total"), "{text}");

    // A router of its own serves /metrics on its metrics listener, behind
    // the same credentials.
    let router = lattice::roles::RouterRole::prepare(lattice::roles::RouterRoleConfig {
        brains: vec![cluster.base.clone()],
        listen: "127.0.0.1:0".parse().expect("an address"),
        credentials: Some(lattice_client::Credentials::new("admin", "s3cret")),
        metrics_listen: Some("127.0.0.1:0".parse().expect("an address")),
        drain_timeout: Duration::from_secs(5),
    })
    .await
    .expect("the router starts");
    let metrics = router.metrics_address().expect("a metrics listener");
    let stop_router = tokio_util::sync::CancellationToken::new();
    let routing = tokio::spawn(router.run(stop_router.clone()));
    let url = format!("http://{metrics}/metrics");
    let anonymous = http.get(&url).send().await.expect("answers");
    assert_eq!(anonymous.status(), 401);
    let signed = http
        .get(&url)
        .basic_auth("admin", Some("s3cret"))
        .send()
        .await
        .expect("answers");
    assert_eq!(signed.status(), 200);
    let text = signed.text().await.expect("a body");
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("Prometheus text");
    stop_router.cancel();
    routing
        .await
        .expect("the router task")
        .expect("the router stops cleanly");
    cluster.stop().await;
}
