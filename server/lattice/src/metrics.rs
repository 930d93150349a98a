//! `GET /metrics`: the process's figures in Prometheus's text format.
//!
//! Components record through the `metrics` facade (counters, gauges,
//! histograms; a no-op until a recorder is installed). This module installs
//! the Prometheus recorder once per process ([`handle`]), serves its render
//! ([`route`]), keeps its histograms drained ([`upkeep`]), and counts the
//! HTTP APIs' requests by matched route ([`track_requests`]).
//!
//! One recorder per process: `lattice up` shows every role's figures on one
//! endpoint; `lattice brain`, `cell` and `router` each show their own.
//!
//! Which endpoint, behind what (the rule of that component's API):
//! - brain and `lattice up`: on the receptor's listener, behind the API's
//!   basic auth when it has credentials;
//! - cell: on the rep's listener, behind the cluster secret
//!   (`Authorization: Bearer SECRET`);
//! - router: on its own listener (`--metrics-listen`, loopback by default,
//!   since app traffic owns every path of the router's), behind the API's
//!   basic auth when the router was given credentials.

use std::sync::OnceLock;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

/// Histogram buckets of every `*_seconds` metric: 1 ms to 10 s, roughly
/// doubling, which spans a store read to a slow auction round.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How often histograms are drained when nobody scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The content type of Prometheus's text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's Prometheus recorder, installed on first call.
pub fn handle() -> PrometheusHandle {
    HANDLE.get_or_init(install).clone()
}

fn builder() -> PrometheusBuilder {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_string()), LATENCY_BUCKETS)
        .expect("the latency buckets are not empty")
}

fn install() -> PrometheusHandle {
    let handle = match builder().install_recorder() {
        Ok(handle) => handle,
        Err(err) => {
            // Only this module installs a recorder, so this is a bug; serve
            // an empty page rather than fail the server.
            tracing::error!(error = %err, "cannot install the metrics recorder; /metrics stays empty");
            builder().build_recorder().handle()
        }
    };
    describe();
    handle
}

/// `# HELP` lines of every metric the components record.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "lattice_api_requests_total",
        "HTTP API requests answered, by api, method, matched route template and status"
    );
    describe_histogram!(
        "lattice_api_request_duration_seconds",
        Unit::Seconds,
        "time to the response's headers of HTTP API requests, by api, method and route"
    );
    describe_gauge!(
        "lattice_desired_lrps",
        "desired LRPs (active converger's last pass)"
    );
    describe_gauge!(
        "lattice_lrp_instances_desired",
        "instances the desired LRPs ask for, summed (active converger's last pass)"
    );
    describe_gauge!(
        "lattice_lrp_instances",
        "actual LRPs by state (active converger's last pass)"
    );
    describe_gauge!(
        "lattice_tasks",
        "tasks by state (active converger's last pass)"
    );
    describe_counter!(
        "lattice_auction_rounds_total",
        "auction rounds that had work to place"
    );
    describe_histogram!(
        "lattice_auction_round_duration_seconds",
        Unit::Seconds,
        "an auction round, from reading the work to sending it to the cells"
    );
    describe_counter!(
        "lattice_auction_placed_total",
        "tasks and LRP instances the auction placed and a cell took, by work"
    );
    describe_counter!(
        "lattice_auction_placement_failures_total",
        "tasks and LRP instances no cell could take, by work"
    );
    describe_counter!(
        "lattice_converge_passes_total",
        "convergence passes of the active converger"
    );
    describe_histogram!(
        "lattice_converge_duration_seconds",
        Unit::Seconds,
        "a convergence pass: snapshot, decisions and writes"
    );
    describe_counter!(
        "lattice_router_requests_total",
        "requests the HTTP router answered, by status"
    );
    describe_histogram!(
        "lattice_router_request_duration_seconds",
        Unit::Seconds,
        "a routed request, until the last byte of its answer"
    );
    describe_counter!(
        "lattice_log_lines_total",
        "log lines published to this process's log hub"
    );
    describe_counter!(
        lattice_logs::hub::LOG_LINES_DROPPED,
        "log lines lost, by reason"
    );
    describe_histogram!(
        lattice_bbs::instrumented::STORE_OPERATION_DURATION,
        Unit::Seconds,
        "store operations, by operation and outcome"
    );
    for (name, help) in [
        ("lattice_cell_containers", "containers the cell sampled"),
        (
            "lattice_cell_cpu_percentage",
            "CPU its containers use, in percent of one core",
        ),
        (
            "lattice_cell_memory_used_bytes",
            "memory its containers use",
        ),
        ("lattice_cell_disk_used_bytes", "disk its containers wrote"),
        (
            "lattice_cell_memory_allocated_bytes",
            "memory its work asked for",
        ),
        (
            "lattice_cell_disk_allocated_bytes",
            "disk its work asked for",
        ),
        (
            "lattice_cell_memory_capacity_bytes",
            "memory the cell offers",
        ),
        ("lattice_cell_disk_capacity_bytes", "disk the cell offers"),
    ] {
        describe_gauge!(name, help);
    }
}

/// `GET /metrics`, rendering [`handle`]'s recorder. Merge it where the
/// component's API is served, behind the same authentication.
pub fn route() -> Router {
    let handle = handle();
    Router::new().route(
        "/metrics",
        get(move || {
            let handle = handle.clone();
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)],
                    handle.render(),
                )
            }
        }),
    )
}

/// Drains the histograms every few seconds until `shutdown`, so that their
/// memory stays bounded when nobody scrapes.
pub async fn upkeep(shutdown: CancellationToken) {
    let handle = handle();
    let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => handle.run_upkeep(),
        }
    }
}

/// `app` with every request counted and timed under `api` (`receptor`,
/// `rep`), by method, matched route template (never the raw path: one
/// series per route, however many guids) and status. Requests that match no
/// route count as route `unmatched`.
///
/// Long-lived answers (the event stream, followed logs) are timed to their
/// headers.
pub fn track_requests(app: Router, api: &'static str) -> Router {
    app.layer(axum::middleware::from_fn_with_state(api, track))
}

async fn track(State(api): State<&'static str>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or_else(
        || "unmatched".to_string(),
        |path| route_label(path.as_str()),
    );
    let method = method_label(req.method());
    let started = tokio::time::Instant::now();
    let response = next.run(req).await;
    let elapsed = started.elapsed();
    metrics::counter!(
        "lattice_api_requests_total",
        "api" => api,
        "method" => method,
        "route" => route.clone(),
        "status" => response.status().as_u16().to_string(),
    )
    .increment(1);
    metrics::histogram!(
        "lattice_api_request_duration_seconds",
        "api" => api,
        "method" => method,
        "route" => route,
    )
    .record(elapsed.as_secs_f64());
    response.into_response()
}

/// A route template as a label: `/v1/tasks/{task_guid}` becomes
/// `/v1/tasks/:task_guid`, as Diego's docs write it. Braces are legal in a
/// label value, but some scrapers' parsers end the label set at the first
/// `}`.
fn route_label(template: &str) -> String {
    template.replace('{', ":").replace('}', "")
}

/// The standard methods by name; any other (clients may invent them) as
/// `other`, so that the label stays bounded.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Method, Request, StatusCode};
    use tower::ServiceExt;

    use super::*;

    async fn scrape() -> String {
        let response = route()
            .oneshot(
                Request::get("/metrics")
                    .body(Body::empty())
                    .expect("a request"),
            )
            .await
            .expect("answered");
        assert_eq!(response.status(), StatusCode::OK);
        let body = axum::body::to_bytes(response.into_body(), 1 << 24)
            .await
            .expect("a body");
        String::from_utf8(body.to_vec()).expect("text")
    }

    /// The value of the sample of `name` whose labels include all of
    /// `labels`, 0 when there is none.
    fn value(scrape: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
        let lines = scrape.lines().map(|l| Ok(l.to_string()));
        let parsed = prometheus_parse::Scrape::parse(lines).expect("Prometheus text");
        parsed
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

    #[tokio::test]
    async fn requests_are_counted_by_route_template() {
        let app = track_requests(
            Router::new().route("/v1/things/{guid}", get(|| async { "ok" })),
            "test",
        );
        let labels = [
            ("api", "test"),
            ("route", "/v1/things/:guid"),
            ("status", "200"),
        ];
        let before = value(&scrape().await, "lattice_api_requests_total", &labels);
        for guid in ["a", "b", "c"] {
            let response = app
                .clone()
                .oneshot(
                    Request::get(format!("/v1/things/{guid}"))
                        .body(Body::empty())
                        .expect("a request"),
                )
                .await
                .expect("answered");
            assert_eq!(response.status(), StatusCode::OK);
        }
        let response = app
            .clone()
            .oneshot(
                Request::get("/nowhere")
                    .body(Body::empty())
                    .expect("a request"),
            )
            .await
            .expect("answered");
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let after = scrape().await;
        assert_eq!(
            value(&after, "lattice_api_requests_total", &labels) - before,
            3.0
        );
        assert!(
            !after.contains("/v1/things/a"),
            "raw paths never become labels"
        );
        assert!(
            after.contains("lattice_api_request_duration_seconds_bucket"),
            "latencies are histograms"
        );
        assert!(
            after.contains("# HELP lattice_api_requests_total"),
            "{after}"
        );
    }

    #[test]
    fn route_templates_read_as_diego_writes_them() {
        assert_eq!(
            route_label("/v1/actual_lrps/{process_guid}/index/{index}"),
            "/v1/actual_lrps/:process_guid/index/:index"
        );
        assert_eq!(route_label("/v1/tasks"), "/v1/tasks");
    }

    #[test]
    fn odd_methods_share_one_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::DELETE), "DELETE");
        let odd = Method::from_bytes(b"BREW").expect("a method");
        assert_eq!(method_label(&odd), "other");
    }
}
