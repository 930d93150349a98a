//! Component tests of the HTTP and TCP routers: real routers on port 0 in
//! front of small local backends, driven by a real HTTP client. Loopback
//! only.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Query;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use lattice_router::{
    AccessLog, Endpoint, HttpRouter, HttpRouterConfig, RoutingTable, TableHandle, TcpRouter,
    TcpRouterConfig,
};
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// Upper bound on any one wait, so a broken router fails the test instead of
/// hanging it. Not a performance claim.
const PATIENCE: Duration = Duration::from_secs(30);

const MIB: usize = 1024 * 1024;

/// Access lines as the router hands them out: `(log_guid, line)`.
struct RecordingLog(mpsc::UnboundedSender<(String, String)>);

impl AccessLog for RecordingLog {
    fn log(&self, log_guid: &str, line: String) {
        // The receiver lives as long as the test that reads it.
        let _ = self.0.send((log_guid.to_string(), line));
    }
}

struct Router {
    address: SocketAddr,
    table: TableHandle,
    access: mpsc::UnboundedReceiver<(String, String)>,
    shutdown: CancellationToken,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Drop for Router {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Router {
    async fn start(table: RoutingTable) -> Router {
        let table = TableHandle::new(table);
        let (sender, access) = mpsc::unbounded_channel();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind router");
        let address = listener.local_addr().expect("router address");
        let shutdown = CancellationToken::new();
        let router = HttpRouter::new(
            table.clone(),
            Arc::new(RecordingLog(sender)),
            HttpRouterConfig::default(),
        );
        let served = tokio::spawn(router.serve(listener, shutdown.clone()));
        Router {
            address,
            table,
            access,
            shutdown,
            served,
        }
    }

    /// A client that resolves every test hostname to the router.
    fn client(&self) -> reqwest::Client {
        let mut builder = reqwest::Client::builder().no_proxy();
        for host in HOSTS {
            builder = builder.resolve(host, self.address);
        }
        builder.build().expect("build the test client")
    }

    fn url(&self, host: &str, path: &str) -> String {
        format!("http://{host}:{}{path}", self.address.port())
    }

    async fn next_access_line(&mut self) -> (String, String) {
        tokio::time::timeout(PATIENCE, self.access.recv())
            .await
            .expect("an access line within the patience bound")
            .expect("the router keeps the access log sink")
    }
}

const HOSTS: [&str; 6] = [
    "web.example",
    "nope.example",
    "dead.example",
    "mixed.example",
    "big.example",
    "slow.example",
];

/// A backend that answers with its index and offers helpers the tests use.
async fn backend(index: usize) -> SocketAddr {
    let app = axum::Router::new()
        .route("/", get(move || async move { format!("backend {index}") }))
        .route(
            "/headers",
            get(|headers: HeaderMap| async move {
                let map: HashMap<String, String> = headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").to_string()))
                    .collect();
                axum::Json(map)
            }),
        )
        .route(
            "/upload",
            post(|body: Body| async move {
                let mut stream = body.into_data_stream();
                let mut total = 0usize;
                while let Some(chunk) = stream.next().await {
                    total += chunk.expect("upload chunk").len();
                }
                total.to_string()
            }),
        )
        .route(
            "/download",
            get(|Query(q): Query<HashMap<String, usize>>| async move {
                let chunks = q["mib"];
                let stream = futures::stream::iter(0..chunks)
                    .map(|i| Ok::<_, std::io::Error>(Bytes::from(vec![(i % 251) as u8; MIB])));
                Body::from_stream(stream)
            }),
        );
    serve(app).await
}

async fn serve(app: axum::Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let address = listener.local_addr().expect("backend address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    address
}

/// An address on which nothing listens: bound, then released.
async fn dead_address() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("address")
}

fn endpoint(address: SocketAddr, index: i64) -> Endpoint {
    Endpoint {
        address: address.to_string(),
        fallback: None,
        process_guid: "web".into(),
        log_guid: "web-logs".into(),
        index,
        instance_guid: format!("web-{index}"),
    }
}

fn http_table(routes: &[(&str, Vec<Endpoint>)]) -> RoutingTable {
    RoutingTable {
        http: routes
            .iter()
            .map(|(host, endpoints)| (host.to_string(), endpoints.clone()))
            .collect(),
        tcp: HashMap::new(),
    }
}

async fn get_text(client: &reqwest::Client, url: &str) -> (StatusCode, String) {
    let response = client.get(url).send().await.expect("request");
    let status = response.status();
    (status, response.text().await.expect("body"))
}

#[tokio::test]
async fn round_robin_over_three_backends() {
    let mut endpoints = Vec::new();
    for i in 0..3 {
        endpoints.push(endpoint(backend(i).await, i as i64));
    }
    let mut router = Router::start(http_table(&[("web.example", endpoints.clone())])).await;
    let client = router.client();

    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..30 {
        // Host matching ignores case and port.
        let response = client
            .get(router.url("web.example", "/"))
            .header("host", "WEB.Example:9999")
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.text().await.expect("body");
        *seen.entry(body).or_default() += 1;
    }
    let expected: HashMap<String, usize> = (0..3).map(|i| (format!("backend {i}"), 10)).collect();
    assert_eq!(seen, expected, "one client in sequence: an even split");

    // One access line per request, charged to the app's log guid.
    let mut backends_logged = std::collections::HashSet::new();
    for _ in 0..30 {
        let (log_guid, line) = router.next_access_line().await;
        assert_eq!(log_guid, "web-logs");
        assert!(line.starts_with("web.example - ["), "{line}");
        assert!(line.contains("\"GET / HTTP/1.1\" 200 9 "), "{line}");
        let backend = endpoints
            .iter()
            .find(|e| line.contains(&format!("\"{}\"", e.address)))
            .unwrap_or_else(|| panic!("no backend address in {line}"));
        assert!(
            line.contains(&format!("app_index:\"{}\"", backend.index)),
            "{line}"
        );
        backends_logged.insert(backend.address.clone());
    }
    assert_eq!(backends_logged.len(), 3);
}

#[tokio::test]
async fn unknown_host_is_404_naming_it() {
    let live = backend(0).await;
    let router = Router::start(http_table(&[("web.example", vec![endpoint(live, 0)])])).await;
    let (status, body) = get_text(&router.client(), &router.url("nope.example", "/")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, "unknown route: nope.example\n");

    // A new table takes effect for the next request.
    router.table.set(http_table(&[
        ("web.example", vec![endpoint(live, 0)]),
        ("nope.example", vec![endpoint(live, 0)]),
    ]));
    let (status, body) = get_text(&router.client(), &router.url("nope.example", "/")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "backend 0");
}

#[tokio::test]
async fn a_dead_backend_among_live_ones_is_skipped() {
    let endpoints = vec![
        endpoint(backend(0).await, 0),
        endpoint(dead_address().await, 1),
        endpoint(backend(2).await, 2),
    ];
    let router = Router::start(http_table(&[("mixed.example", endpoints)])).await;
    let client = router.client();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..30 {
        let (status, body) = get_text(&client, &router.url("mixed.example", "/")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        *seen.entry(body).or_default() += 1;
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen.contains_key("backend 0") && seen.contains_key("backend 2"));
}

#[tokio::test]
async fn a_refused_container_address_falls_back_to_the_host_address() {
    // The only instance: its container address refuses, its host port
    // answers, so no request fails.
    let mut direct = endpoint(dead_address().await, 0);
    direct.fallback = Some(backend(0).await.to_string());
    let router = Router::start(http_table(&[("mixed.example", vec![direct])])).await;
    let client = router.client();
    for _ in 0..5 {
        let (status, body) = get_text(&client, &router.url("mixed.example", "/")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body, "backend 0");
    }
}

#[tokio::test]
async fn a_streamed_body_moves_on_whole_after_a_refused_connect() {
    let endpoints = vec![
        endpoint(dead_address().await, 0),
        endpoint(backend(1).await, 1),
    ];
    let router = Router::start(http_table(&[("mixed.example", endpoints)])).await;
    let client = router.client();
    // Round-robin starts once at the dead instance and once at the live one.
    for _ in 0..2 {
        let chunks = futures::stream::iter(0..4)
            .map(|i| Ok::<_, std::io::Error>(Bytes::from(vec![i as u8; MIB])));
        let response = client
            .post(router.url("mixed.example", "/upload"))
            .body(reqwest::Body::wrap_stream(chunks))
            .send()
            .await
            .expect("upload");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.text().await.expect("body"), (4 * MIB).to_string());
    }
}

/// A backend whose port accepts and then resets without answering, as the
/// engine's port proxy of an instance that just died does.
async fn resetting_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buffer = [0u8; 1024];
            // Read (part of) the request, so the reset comes after it was sent.
            let _ = stream.read(&mut buffer).await;
            // Linger 0: close with a reset, not a clean end of stream. Its
            // deprecation is about a drop that blocks, which 0 never does.
            #[allow(deprecated)]
            let _ = stream.set_linger(Some(Duration::ZERO));
            drop(stream);
        }
    });
    address
}

/// Regression (issue 15, item 5): killing an instance gave one 502, its port
/// having accepted and then reset.
#[tokio::test]
async fn an_idempotent_request_is_retried_once_after_a_reset_before_any_answer() {
    let endpoints = vec![
        endpoint(resetting_backend().await, 0),
        endpoint(backend(1).await, 1),
    ];
    let router = Router::start(http_table(&[("mixed.example", endpoints)])).await;
    let client = router.client();
    // Round-robin starts once at the resetting instance and once at the live one.
    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        for _ in 0..2 {
            let response = client
                .request(method.clone(), router.url("mixed.example", "/"))
                .send()
                .await
                .expect("request");
            let status = response.status();
            // The live backend has no DELETE route: 405 is its own answer.
            let expected = if method == reqwest::Method::GET {
                StatusCode::OK
            } else {
                StatusCode::METHOD_NOT_ALLOWED
            };
            assert_eq!(status, expected, "{method}");
        }
    }

    // A POST may have had its effect: it is not sent again.
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let response = client
            .post(router.url("mixed.example", "/upload"))
            .send()
            .await
            .expect("request");
        statuses.push(response.status());
    }
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::BAD_GATEWAY]);
}

/// With every instance resetting, the one retry is spent and the answer is
/// a 502, not a loop.
#[tokio::test]
async fn a_reset_from_every_instance_is_502() {
    let endpoints = vec![
        endpoint(resetting_backend().await, 0),
        endpoint(resetting_backend().await, 1),
        endpoint(resetting_backend().await, 2),
    ];
    let router = Router::start(http_table(&[("mixed.example", endpoints)])).await;
    let (status, body) = get_text(&router.client(), &router.url("mixed.example", "/")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(body, "bad gateway\n");
}

#[tokio::test]
async fn all_backends_dead_is_502() {
    let endpoints = vec![
        endpoint(dead_address().await, 0),
        endpoint(dead_address().await, 1),
    ];
    let mut router = Router::start(http_table(&[("dead.example", endpoints)])).await;
    let (status, body) = get_text(&router.client(), &router.url("dead.example", "/")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        body,
        "no instance of dead.example accepted the connection\n"
    );
    let (log_guid, line) = router.next_access_line().await;
    assert_eq!(log_guid, "web-logs");
    assert!(line.contains("\" 502 "), "{line}");
}

#[tokio::test]
async fn forwarded_headers_are_added() {
    let live = backend(0).await;
    let router = Router::start(http_table(&[("web.example", vec![endpoint(live, 0)])])).await;
    let client = router.client();
    let url = router.url("web.example", "/headers");

    let response = client
        .get(&url)
        .header("x-forwarded-for", "192.0.2.7")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    let headers: HashMap<String, String> = response.json().await.expect("json");
    assert_eq!(headers["x-forwarded-for"], "192.0.2.7, 127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(
        headers["host"],
        format!("web.example:{}", router.address.port()),
        "the backend sees the client's Host"
    );
    let start: u64 = headers["x-request-start"].parse().expect("milliseconds");
    assert!(start > 1_600_000_000_000, "ms since the epoch: {start}");
    uuid::Uuid::parse_str(&headers["x-vcap-request-id"]).expect("a fresh uuid");

    let headers: HashMap<String, String> = client
        .get(&url)
        .header("x-vcap-request-id", "keep-me")
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(headers["x-vcap-request-id"], "keep-me");
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
}

/// A WebSocket server that echoes every data message.
async fn websocket_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind ws");
    let address = listener.local_addr().expect("ws address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(message)) = ws.next().await {
                    let data = message.is_text() || message.is_binary();
                    if data && ws.send(message).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    address
}

#[tokio::test]
async fn websocket_echo_through_the_router() {
    let echo = websocket_echo().await;
    let router = Router::start(http_table(&[("web.example", vec![endpoint(echo, 0)])])).await;
    let stream = TcpStream::connect(router.address).await.expect("connect");
    let (mut ws, response) = tokio_tungstenite::client_async("ws://web.example/chat", stream)
        .await
        .expect("websocket handshake through the router");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);

    for i in 0..10 {
        let text = format!("hello {i}");
        ws.send(Message::text(text.clone())).await.expect("send");
        let echoed = ws.next().await.expect("an answer").expect("a message");
        assert_eq!(echoed, Message::text(text));
    }
    let blob = vec![42u8; 256 * 1024];
    ws.send(Message::binary(blob.clone())).await.expect("send");
    let echoed = ws.next().await.expect("an answer").expect("a message");
    assert_eq!(echoed.into_data().as_ref(), blob.as_slice());
    ws.close(None).await.expect("close");
}

#[tokio::test]
async fn a_50_mib_upload_streams_through() {
    let live = backend(0).await;
    let router = Router::start(http_table(&[("big.example", vec![endpoint(live, 0)])])).await;
    let chunks = futures::stream::iter(0..50)
        .map(|i| Ok::<_, std::io::Error>(Bytes::from(vec![i as u8; MIB])));
    let response = router
        .client()
        .post(router.url("big.example", "/upload"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .expect("upload");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.expect("body"), (50 * MIB).to_string());
}

#[tokio::test]
async fn a_50_mib_download_streams_through() {
    let live = backend(0).await;
    let mut router = Router::start(http_table(&[("big.example", vec![endpoint(live, 0)])])).await;
    let response = router
        .client()
        .get(router.url("big.example", "/download?mib=50"))
        .send()
        .await
        .expect("download");
    assert_eq!(response.status(), StatusCode::OK);
    let mut stream = response.bytes_stream();
    let mut total = 0usize;
    let mut last = None;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("download chunk");
        total += chunk.len();
        last = chunk.last().copied();
    }
    assert_eq!(total, 50 * MIB);
    assert_eq!(last, Some(49), "the last chunk arrived last");
    let (_, line) = router.next_access_line().await;
    assert!(line.contains(&format!("\" 200 {} ", 50 * MIB)), "{line}");
}

#[tokio::test]
async fn shutdown_lets_the_request_in_flight_finish() {
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let (arrived_tx, arrived) = tokio::sync::oneshot::channel::<()>();
    let slot = Arc::new(std::sync::Mutex::new(Some((arrived_tx, released))));
    let app = axum::Router::new().route(
        "/",
        get(move || {
            let slot = slot.clone();
            async move {
                let (arrived, released) =
                    slot.lock().expect("test lock").take().expect("one request");
                let _ = arrived.send(());
                let _ = released.await;
                "finished"
            }
        }),
    );
    let slow = serve(app).await;
    let mut router = Router::start(http_table(&[("slow.example", vec![endpoint(slow, 0)])])).await;
    let client = router.client();
    let url = router.url("slow.example", "/");
    let in_flight = tokio::spawn(async move { get_text(&client, &url).await });

    arrived.await.expect("the request reached the backend");
    router.shutdown.cancel();
    // The listener closes at once: new connections are refused.
    let mut refused = false;
    for _ in 0..100 {
        if TcpStream::connect(router.address).await.is_err() {
            refused = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(refused, "the router still accepts after shutdown");
    release.send(()).expect("the backend waits");
    let (status, body) = in_flight.await.expect("request task");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "finished");
    tokio::time::timeout(PATIENCE, &mut router.served)
        .await
        .expect("serve returns after the drain")
        .expect("serve task")
        .expect("serve result");
}

/// A TCP server that echoes every byte back.
async fn tcp_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
    let address = listener.local_addr().expect("echo address");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    address
}

/// Connects to `address`, retrying while the router has yet to open it.
async fn connect_when_open(address: SocketAddr) -> TcpStream {
    for _ in 0..300 {
        if let Ok(stream) = TcpStream::connect(address).await {
            return stream;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("nothing listens on {address}");
}

#[tokio::test]
async fn tcp_route_carries_an_echo_and_closes_with_the_route() {
    let echo = tcp_echo().await;
    let external = dead_address().await;
    let table = TableHandle::new(RoutingTable {
        http: HashMap::new(),
        tcp: HashMap::from([(
            external.port(),
            vec![endpoint(dead_address().await, 0), endpoint(echo, 1)],
        )]),
    });
    let shutdown = CancellationToken::new();
    let config = TcpRouterConfig {
        bind_ip: external.ip(),
        ..TcpRouterConfig::default()
    };
    let running = tokio::spawn(TcpRouter::new(table.clone(), config).run(shutdown.clone()));

    for round in 0..4 {
        // Every other connection starts at the dead instance and must move on.
        let mut stream = connect_when_open(external).await;
        let message = format!("ping {round}\n");
        stream.write_all(message.as_bytes()).await.expect("write");
        let mut answer = vec![0u8; message.len()];
        tokio::time::timeout(PATIENCE, stream.read_exact(&mut answer))
            .await
            .expect("an echo within the patience bound")
            .expect("read");
        assert_eq!(answer, message.as_bytes());
    }

    // Removing the route closes the port.
    table.set(RoutingTable::default());
    let mut closed = false;
    for _ in 0..300 {
        if TcpStream::connect(external).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(closed, "the listener of a removed route stays open");

    shutdown.cancel();
    tokio::time::timeout(PATIENCE, running)
        .await
        .expect("the tcp router stops")
        .expect("tcp router task");
}

/// How the counting backend treats a connection after each answer.
#[derive(Clone, Copy)]
enum AfterAnswer {
    KeepAlive,
    /// Answers `Connection: close` and closes.
    Close,
    /// Offers keep-alive, then closes the connection once idle for 50 ms.
    CloseWhenIdle,
}

/// A raw HTTP/1.1 backend that answers every request with the number of
/// the connection it came on (`conn 1`, `conn 2`, ...).
async fn counting_backend(after: AfterAnswer) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let mut connections = 0;
        while let Ok((mut stream, _)) = listener.accept().await {
            connections += 1;
            let number = connections;
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                loop {
                    let wait = match after {
                        AfterAnswer::CloseWhenIdle if !buffer.is_empty() => {
                            Duration::from_millis(50)
                        }
                        _ => PATIENCE,
                    };
                    // Read one request head (these requests have no body).
                    buffer.clear();
                    let mut chunk = [0u8; 1024];
                    while !buffer.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tokio::time::timeout(wait, stream.read(&mut chunk)).await {
                            Ok(Ok(n)) if n > 0 => buffer.extend_from_slice(&chunk[..n]),
                            _ => return,
                        }
                    }
                    let body = format!("conn {number}");
                    let close = matches!(after, AfterAnswer::Close);
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n{}\r\n{body}",
                        body.len(),
                        if close { "Connection: close\r\n" } else { "" }
                    );
                    if stream.write_all(answer.as_bytes()).await.is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    address
}

async fn routed_to(after: AfterAnswer) -> (Router, reqwest::Client, String) {
    let backend = counting_backend(after).await;
    let router = Router::start(http_table(&[("web.example", vec![endpoint(backend, 0)])])).await;
    let client = router.client();
    let url = router.url("web.example", "/");
    (router, client, url)
}

#[tokio::test]
async fn keep_alive_backend_connections_are_reused() {
    let (_router, client, url) = routed_to(AfterAnswer::KeepAlive).await;
    for _ in 0..5 {
        assert_eq!(
            get_text(&client, &url).await,
            (StatusCode::OK, "conn 1".to_string())
        );
    }
}

#[tokio::test]
async fn a_backend_that_closes_gets_a_new_connection_per_request() {
    let (_router, client, url) = routed_to(AfterAnswer::Close).await;
    for number in 1..=3 {
        assert_eq!(
            get_text(&client, &url).await,
            (StatusCode::OK, format!("conn {number}"))
        );
    }
}

#[tokio::test]
async fn a_kept_connection_the_backend_closed_is_not_used() {
    let (_router, client, url) = routed_to(AfterAnswer::CloseWhenIdle).await;
    assert_eq!(
        get_text(&client, &url).await,
        (StatusCode::OK, "conn 1".to_string())
    );
    // The backend closes its side while the router keeps the connection.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        get_text(&client, &url).await,
        (StatusCode::OK, "conn 2".to_string())
    );
}

#[tokio::test]
async fn a_sharded_router_serves_on_every_shard_and_owns_its_port() {
    let backend = counting_backend(AfterAnswer::Close).await;
    let listener =
        lattice_router::bind_shared("127.0.0.1:0".parse().expect("an address")).expect("bind");
    let address = listener.local_addr().expect("router address");
    let (sender, _access) = mpsc::unbounded_channel();
    let shutdown = CancellationToken::new();
    let served = tokio::spawn(HttpRouter::serve_sharded(
        TableHandle::new(http_table(&[("web.example", vec![endpoint(backend, 0)])])),
        Arc::new(RecordingLog(sender)),
        HttpRouterConfig::default(),
        listener,
        2,
        shutdown.clone(),
    ));
    // A second cluster on the same port is refused, as with a plain bind.
    let again = lattice_router::bind_shared(address).expect_err("the port is taken");
    assert_eq!(again.kind(), std::io::ErrorKind::AddrInUse);

    // A new connection each time: the kernel spreads them over the shards.
    for _ in 0..20 {
        let client = reqwest::Client::builder()
            .no_proxy()
            .resolve("web.example", address)
            .build()
            .expect("client");
        let (status, body) =
            get_text(&client, &format!("http://web.example:{}/", address.port())).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.starts_with("conn "), "{body}");
    }
    shutdown.cancel();
    tokio::time::timeout(PATIENCE, served)
        .await
        .expect("every shard stops at shutdown")
        .expect("the router task")
        .expect("the router serves until shutdown");
}

/// The state of the TCP socket from `local` to `remote` in this network
/// namespace (`/proc/net/tcp`), if there is one: 1 established, 6
/// TIME_WAIT, 8 CLOSE_WAIT, 9 LAST_ACK.
fn tcp_state(local: SocketAddr, remote: SocketAddr) -> Option<u8> {
    let hex = |address: SocketAddr| match address {
        SocketAddr::V4(v4) => format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(v4.ip().octets()),
            v4.port()
        ),
        SocketAddr::V6(_) => unreachable!("the test sockets are IPv4"),
    };
    let (local, remote) = (hex(local), hex(remote));
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&local.as_str()) && fields.get(2) == Some(&remote.as_str()))
            .then(|| u8::from_str_radix(fields[3], 16).expect("a hex state"))
    })
}

const TIME_WAIT: u8 = 6;

/// The side of a connection that closes first keeps its port in TIME_WAIT
/// for a minute: a router closing first would run out of ports to one busy
/// `Connection: close` app. The answer reaches the client at once all the
/// same.
#[tokio::test]
async fn after_a_connection_close_answer_the_backend_closes_first() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let backend = listener.local_addr().expect("address");
    let (router_side_sender, router_side) = tokio::sync::oneshot::channel();
    let (close_sender, close) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut stream, peer) = listener.accept().await.expect("accept");
        let mut head = Vec::new();
        let mut chunk = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut chunk).await.expect("read");
            assert!(n > 0, "the router closed before its request");
            head.extend_from_slice(&chunk[..n]);
        }
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbye")
            .await
            .expect("write");
        let _ = router_side_sender.send(peer);
        // Held open until the client has its answer.
        let _ = close.await;
    });
    let router = Router::start(http_table(&[("web.example", vec![endpoint(backend, 0)])])).await;
    let client = router.client();
    let answer = get_text(&client, &router.url("web.example", "/")).await;
    assert_eq!(answer, (StatusCode::OK, "bye".to_string()));
    let router_side = router_side.await.expect("the backend saw the router");
    close_sender.send(()).expect("the backend waits");

    // Whichever side closed first ends in TIME_WAIT.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        assert_ne!(
            tcp_state(router_side, backend),
            Some(TIME_WAIT),
            "the router closed the backend connection first"
        );
        if tcp_state(backend, router_side) == Some(TIME_WAIT) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the backend's side never reached TIME_WAIT (router side {:?}, backend side {:?})",
            tcp_state(router_side, backend),
            tcp_state(backend, router_side)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A backend that says it will close and does not is closed by the router
/// after a while, not kept forever.
#[tokio::test]
async fn a_backend_that_never_closes_after_connection_close_is_closed_by_the_router() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let backend = listener.local_addr().expect("address");
    let (router_side_sender, router_side) = tokio::sync::oneshot::channel();
    let (closed_sender, closed) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut stream, peer) = listener.accept().await.expect("accept");
        let mut chunk = [0u8; 1024];
        let _ = stream.read(&mut chunk).await;
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbye")
            .await
            .expect("write");
        let _ = router_side_sender.send(peer);
        // Never closes; reports when the router has.
        let end = stream.read(&mut chunk).await;
        let _ = closed_sender.send(end.map(|n| n == 0).unwrap_or(true));
    });
    let router = Router::start(http_table(&[("web.example", vec![endpoint(backend, 0)])])).await;
    let client = router.client();
    let answer = get_text(&client, &router.url("web.example", "/")).await;
    assert_eq!(answer, (StatusCode::OK, "bye".to_string()));
    router_side.await.expect("the backend saw the router");
    let closed = tokio::time::timeout(PATIENCE, closed)
        .await
        .expect("the router closes the connection in the end")
        .expect("the backend reports");
    assert!(
        closed,
        "the router sent more after the answer instead of closing"
    );
}
