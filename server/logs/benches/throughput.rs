//! End-to-end throughput of the log hub: one producer publishes N lines of
//! one app into a hub served over HTTP on loopback; one follower reads them
//! over Server-Sent Events with `LogsClient`. Reports lines/s (first publish
//! to last read) and the delay from publish to read (timestamps carried in
//! the lines).
//!
//! Two scenarios:
//! - `windowed`: the producer stays at most `WINDOW` lines ahead of the
//!   follower (less than the follower's queue), so nothing is dropped: the
//!   rate the whole path sustains.
//! - `burst`: the producer publishes as fast as it can; the follower's queue
//!   overflows and the hub drops lines for it (reported through the drop
//!   markers): what a slow reader costs, and that the producer never waits.
//!
//! `cargo bench -p lattice-logs --bench throughput [-- LINES]` (default
//! 200,000 lines).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use futures::StreamExt;
use lattice_logs::{FollowOptions, HubConfig, LogHub, LogsClient, SOURCE_LOGGREGATOR};
use lattice_models::log::{LogMessage, MessageType};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const LOG_GUID: &str = "bench-app";
/// How far the windowed producer may run ahead of the follower.
const WINDOW: u64 = 512;
const RUNS: usize = 3;

fn main() {
    let lines: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime can be built");
    println!("log hub throughput: {lines} lines of one app, one SSE follower over loopback");
    println!(
        "{:<9} {:>3} {:>10} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9}",
        "scenario",
        "run",
        "published/s",
        "delivered",
        "dropped",
        "lines/s",
        "p50 ms",
        "p99 ms",
        "max ms"
    );
    for scenario in [Scenario::Windowed, Scenario::Burst] {
        for run in 1..=RUNS {
            let result = runtime.block_on(measure(scenario, lines));
            println!(
                "{:<9} {:>3} {:>10.0} {:>10} {:>10} {:>9.0} {:>9.2} {:>9.2} {:>9.2}",
                scenario.name(),
                run,
                result.published_per_second,
                result.delivered,
                result.dropped,
                result.lines_per_second,
                result.p50_ms,
                result.p99_ms,
                result.max_ms,
            );
        }
    }
}

#[derive(Clone, Copy)]
enum Scenario {
    Windowed,
    Burst,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Windowed => "windowed",
            Scenario::Burst => "burst",
        }
    }
}

struct Measurement {
    /// Lines published per second, first to last publish.
    published_per_second: f64,
    /// Lines the follower read (not counting drop markers).
    delivered: u64,
    dropped: u64,
    /// Lines read per second, first publish to last read.
    lines_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

fn now_nanos() -> i64 {
    lattice_models::unix_nanos(SystemTime::now())
}

async fn measure(scenario: Scenario, lines: u64) -> Measurement {
    let hub = Arc::new(LogHub::new(HubConfig::default()));
    let shutdown = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("loopback has free ports");
    let address = listener
        .local_addr()
        .expect("a bound listener has an address");
    let app = lattice_logs::http::router(hub.clone(), shutdown.clone());
    let server_shutdown = shutdown.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(server_shutdown.cancelled_owned())
            .await
    });

    let client = LogsClient::new(&format!("http://{address}"), None).expect("a valid target");
    let mut stream = client
        .follow(LOG_GUID, &FollowOptions::default())
        .await
        .expect("the hub accepts the follower");
    // `follow` returned: the hub has registered the follower.

    let received = Arc::new(AtomicU64::new(0));
    let progress = Arc::new(Notify::new());
    let reader = {
        let received = received.clone();
        let progress = progress.clone();
        tokio::spawn(async move {
            let mut delays = Vec::with_capacity(lines as usize);
            let mut dropped = 0u64;
            while (delays.len() as u64) + dropped < lines {
                let message = stream
                    .next()
                    .await
                    .expect("the stream lasts until every line is accounted for")
                    .expect("the stream does not fail on loopback");
                if message.source_type == SOURCE_LOGGREGATOR {
                    dropped += message
                        .message
                        .split(' ')
                        .next()
                        .and_then(|n| n.parse::<u64>().ok())
                        .expect("a drop marker starts with its count");
                    continue;
                }
                delays.push(now_nanos() - message.timestamp);
                if received.fetch_add(1, Ordering::Relaxed).is_multiple_of(64) {
                    progress.notify_one();
                }
            }
            progress.notify_one();
            (delays, dropped, Instant::now())
        })
    };

    let text = "GET /v2/apps 200 OK: the quick brown fox jumps over the lazy dog, request id";
    let started = Instant::now();
    match scenario {
        Scenario::Windowed => {
            for i in 0..lines {
                while i >= received.load(Ordering::Relaxed) + WINDOW {
                    progress.notified().await;
                }
                hub.publish(line(i, text));
            }
        }
        Scenario::Burst => {
            let hub = hub.clone();
            tokio::task::spawn_blocking(move || {
                for i in 0..lines {
                    hub.publish(line(i, text));
                }
            })
            .await
            .expect("the producer does not panic");
        }
    }
    let published = started.elapsed();
    let (mut delays, dropped, finished) = reader.await.expect("the reader does not panic");
    shutdown.cancel();
    server
        .await
        .expect("the server does not panic")
        .expect("the server stops cleanly");

    delays.sort_unstable();
    let percentile = |p: f64| -> f64 {
        if delays.is_empty() {
            return 0.0;
        }
        let index = ((delays.len() as f64 - 1.0) * p).round() as usize;
        delays[index] as f64 / 1e6
    };
    let delivered = delays.len() as u64;
    Measurement {
        published_per_second: lines as f64 / published.as_secs_f64(),
        delivered,
        dropped,
        lines_per_second: delivered as f64 / finished.duration_since(started).as_secs_f64(),
        p50_ms: percentile(0.50),
        p99_ms: percentile(0.99),
        max_ms: percentile(1.0),
    }
}

fn line(i: u64, text: &str) -> LogMessage {
    LogMessage {
        log_guid: LOG_GUID.to_string(),
        source_type: "APP".to_string(),
        source_instance: "0".to_string(),
        message: format!("{text} {i}"),
        message_type: MessageType::Out,
        timestamp: now_nanos(),
    }
}
