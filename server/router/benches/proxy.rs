//! Proxy overhead benchmark: the same load straight to a small hyper backend
//! and through the HTTP router, in one run, on loopback.
//!
//! `cargo bench -p lattice-router --bench proxy`
//!
//! Each scenario sends a fixed number of GET requests over keep-alive
//! connections (one hyper client connection per worker, requests in
//! sequence on each), after a warm-up, and prints requests/s and the p50 and
//! p99 latency of each target and the ratio. Client, router and backend share
//! one process and the machine's cores, so absolute numbers are a floor, and
//! the ratio is the interesting part.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use lattice_router::{
    Endpoint, HttpRouter, HttpRouterConfig, RoutingTable, TableHandle, TracingAccessLog,
};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const REQUESTS: usize = 20_000;
const WARM_UP: usize = 2_000;
const HOST: &str = "bench.local";
const ANSWER: &[u8] = b"hello from the backend\n";

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(run());
}

async fn run() {
    let shutdown = CancellationToken::new();
    let backend = start_backend(shutdown.clone()).await;
    let router = start_router(backend, shutdown.clone()).await;

    println!(
        "proxy benchmark: {REQUESTS} GET requests per row, {} byte answers, keep-alive",
        ANSWER.len()
    );
    println!(
        "{:<8} {:>11} {:>12} {:>10} {:>10}",
        "target", "connections", "requests/s", "p50 µs", "p99 µs"
    );
    for connections in [1, 16, 64] {
        let direct = measure(backend, connections).await;
        let routed = measure(router, connections).await;
        direct.print("direct", connections);
        routed.print("router", connections);
        println!(
            "{:<8} {:>11} {:>11.2}x {:>9.2}x {:>9.2}x",
            "ratio",
            connections,
            routed.per_second / direct.per_second,
            routed.p50.as_secs_f64() / direct.p50.as_secs_f64(),
            routed.p99.as_secs_f64() / direct.p99.as_secs_f64(),
        );
    }
    shutdown.cancel();
}

async fn start_backend(shutdown: CancellationToken) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the backend");
    let address = listener.local_addr().expect("backend address");
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(_) => continue,
                },
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = service_fn(|_request: Request<hyper::body::Incoming>| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(ANSWER))))
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    address
}

async fn start_router(backend: SocketAddr, shutdown: CancellationToken) -> SocketAddr {
    let endpoint = Endpoint {
        address: backend.to_string(),
        fallback: None,
        process_guid: "bench".into(),
        log_guid: "bench".into(),
        index: 0,
        instance_guid: "bench-0".into(),
    };
    let table = TableHandle::new(RoutingTable {
        http: [(HOST.to_string(), vec![endpoint])].into(),
        tcp: Default::default(),
    });
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the router");
    let address = listener.local_addr().expect("router address");
    let router = HttpRouter::new(
        table,
        Arc::new(TracingAccessLog),
        HttpRouterConfig::default(),
    );
    tokio::spawn(router.serve(listener, shutdown));
    address
}

struct Stats {
    per_second: f64,
    p50: Duration,
    p99: Duration,
}

impl Stats {
    fn print(&self, target: &str, connections: usize) {
        println!(
            "{target:<8} {connections:>11} {:>12.0} {:>10.0} {:>10.0}",
            self.per_second,
            self.p50.as_secs_f64() * 1e6,
            self.p99.as_secs_f64() * 1e6,
        );
    }
}

/// Warms up, then sends [`REQUESTS`] requests to `target` over
/// `connections` keep-alive connections.
async fn measure(target: SocketAddr, connections: usize) -> Stats {
    load(target, connections, WARM_UP).await;
    let started = Instant::now();
    let mut latencies = load(target, connections, REQUESTS).await;
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Stats {
        per_second: REQUESTS as f64 / elapsed.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
    }
}

/// Sends `total` requests, shared out over `connections` workers; returns
/// every request's latency.
async fn load(target: SocketAddr, connections: usize, total: usize) -> Vec<Duration> {
    let remaining = Arc::new(AtomicUsize::new(total));
    let mut workers = Vec::new();
    for _ in 0..connections {
        let remaining = remaining.clone();
        workers.push(tokio::spawn(async move {
            let stream = TcpStream::connect(target).await.expect("connect");
            stream.set_nodelay(true).expect("nodelay");
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .expect("handshake");
            tokio::spawn(connection);
            let mut latencies = Vec::new();
            // Bounded: each iteration takes one of `total` tickets.
            while remaining
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                let request = Request::builder()
                    .uri("/")
                    .header(hyper::header::HOST, HOST)
                    .body(Empty::<Bytes>::new())
                    .expect("a valid request");
                let started = Instant::now();
                sender.ready().await.expect("connection ready");
                let response = sender.send_request(request).await.expect("response");
                assert!(
                    response.status().is_success(),
                    "status {}",
                    response.status()
                );
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .expect("body")
                    .to_bytes();
                latencies.push(started.elapsed());
                assert_eq!(body.as_ref(), ANSWER);
            }
            latencies
        }));
    }
    let mut all = Vec::with_capacity(total);
    for worker in workers {
        all.extend(worker.await.expect("load worker"));
    }
    all
}
