//! Component tests of the hub's HTTP API, its client and the remote sink,
//! on loopback servers bound to port 0.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lattice_executor::LogSink;
use lattice_logs::{
    ClientError, FollowOptions, HubConfig, LogFilter, LogHub, LogsClient, RemoteSink,
    RemoteSinkConfig, DEBUG_LOG_GUID,
};
use lattice_models::log::{LogMessage, MessageType};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

struct Server {
    url: String,
    hub: Arc<LogHub>,
    shutdown: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start() -> Server {
        Self::start_with(axum::Router::new()).await
    }

    /// Serves the hub's router merged with `extra` (or wrapped by a layer).
    async fn start_with(extra: axum::Router) -> Server {
        let hub = Arc::new(LogHub::new(HubConfig::default()));
        let shutdown = CancellationToken::new();
        let app = lattice_logs::http::router(hub.clone(), shutdown.clone()).merge(extra);
        Self::serve(app, hub, shutdown).await
    }

    async fn serve(app: axum::Router, hub: Arc<LogHub>, shutdown: CancellationToken) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("loopback has free ports");
        let url = format!(
            "http://{}",
            listener
                .local_addr()
                .expect("a bound listener has an address")
        );
        let stop = shutdown.clone();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        });
        Server {
            url,
            hub,
            shutdown,
            task,
        }
    }

    fn client(&self) -> LogsClient {
        LogsClient::new(&self.url, None).expect("a valid target")
    }

    async fn post(&self, body: impl Into<reqwest::Body>) -> reqwest::Response {
        reqwest::Client::new()
            .post(format!("{}/v1/log_messages", self.url))
            .body(body)
            .send()
            .await
            .expect("the server answers")
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task
            .await
            .expect("the server does not panic")
            .expect("the server stops cleanly");
    }
}

fn line(guid: &str, source: &str, instance: &str, text: &str) -> LogMessage {
    LogMessage {
        log_guid: guid.into(),
        source_type: source.into(),
        source_instance: instance.into(),
        message: text.into(),
        message_type: MessageType::Out,
        timestamp: 7,
    }
}

fn ndjson(lines: &[LogMessage]) -> String {
    lines
        .iter()
        .map(|l| serde_json::to_string(l).expect("serialisable") + "\n")
        .collect()
}

fn texts(lines: &[LogMessage]) -> Vec<&str> {
    lines.iter().map(|l| l.message.as_str()).collect()
}

#[tokio::test]
async fn ingested_lines_are_read_back_as_recent() {
    let server = Server::start().await;
    let body = ndjson(&[
        line("app", "APP", "0", "one"),
        line("app", "CELL", "1", "two"),
        line("other", "APP", "0", "elsewhere"),
    ]);
    // The last line without its newline, and a blank line: both fine.
    let body = format!("\n{}", body.trim_end());
    let response = server.post(body).await;
    assert_eq!(response.status(), 204);

    let client = server.client();
    let all = client
        .recent("app", &LogFilter::default())
        .await
        .expect("recent lines");
    assert_eq!(texts(&all), ["one", "two"]);
    assert_eq!(all[1], line("app", "CELL", "1", "two"));
    let filtered = client
        .recent(
            "app",
            &LogFilter {
                source: Some("CELL".into()),
                instance: Some("1".into()),
            },
        )
        .await
        .expect("recent lines");
    assert_eq!(texts(&filtered), ["two"]);
    let none = client
        .recent("nobody", &LogFilter::default())
        .await
        .expect("an unknown app has no lines");
    assert!(none.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn a_bad_line_is_refused_by_number_and_the_lines_before_it_are_kept() {
    let server = Server::start().await;
    let good = ndjson(&[line("app", "APP", "0", "kept")]);
    let body = format!(
        "{good}\n{{\"log_guid\":\"app\",\"source_type\":\"APP\",\"source_instance\":\"0\",\
         \"message\":\"x\",\"message_type\":\"loud\",\"timestamp\":1}}\n{good}"
    );
    let response = server.post(body).await;
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.expect("a JSON error");
    assert_eq!(error["name"], "InvalidJSON");
    let message = error["message"].as_str().expect("a message");
    assert!(message.starts_with("line 3: "), "{message}");
    assert_eq!(error["field"], "message_type");
    assert_eq!(
        texts(&server.hub.recent("app", &LogFilter::default())),
        ["kept"],
        "the line before is kept, the line after is never read"
    );

    let response = server.post("{\"log_guid\":\n").await;
    let error: Value = response.json().await.expect("a JSON error");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("line 1: ")),
        "{error}"
    );

    let empty_guid = ndjson(&[line("", "APP", "0", "x")]);
    let response = server.post(empty_guid).await;
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.expect("a JSON error");
    assert_eq!(error["name"], "InvalidRequest");
    assert_eq!(error["field"], "log_guid");
    server.stop().await;
}

#[tokio::test]
async fn an_overlong_line_is_refused() {
    let server = Server::start().await;
    let long = "x".repeat(lattice_logs::http::MAX_INGEST_LINE_BYTES + 1);
    let response = server
        .post(format!(
            "{}{long}\n",
            ndjson(&[line("app", "APP", "0", "ok")])
        ))
        .await;
    assert_eq!(response.status(), 413);
    let error: Value = response.json().await.expect("a JSON error");
    assert_eq!(error["name"], "RequestEntityTooLarge");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("line 2 ")),
        "{error}"
    );
    assert_eq!(server.hub.recent("app", &LogFilter::default()).len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn a_follower_gets_recent_then_live_lines_in_order_until_shutdown() {
    let server = Server::start().await;
    server.hub.publish(line("app", "APP", "0", "before"));
    server
        .hub
        .publish(line("app", "CELL", "0", "before, other source"));
    let client = server.client();
    let mut stream = client
        .follow(
            "app",
            &FollowOptions {
                recent: true,
                source: Some("APP".into()),
                instance: None,
            },
        )
        .await
        .expect("the hub accepts the follower");
    // `follow` returned after the answer's headers, so the follower is
    // registered: nothing published from here on can be missed.
    assert_eq!(server.hub.follower_count("app"), 1);
    let live: Vec<LogMessage> = (0..100)
        .map(|i| line("app", "APP", "0", &format!("live {i}")))
        .collect();
    let response = server
        .post(ndjson(&live[..50]) + &ndjson(&[line("app", "CELL", "0", "filtered")]))
        .await;
    assert_eq!(response.status(), 204);
    for message in &live[50..] {
        server.hub.publish(message.clone());
    }

    let mut got = Vec::new();
    for _ in 0..101 {
        got.push(
            stream
                .next()
                .await
                .expect("the stream is open")
                .expect("no error"),
        );
    }
    assert_eq!(got[0].message, "before");
    assert_eq!(&got[1..], &live[..]);

    server.shutdown.cancel();
    assert!(
        stream.next().await.is_none(),
        "a clean end, not an error, on shutdown"
    );
    server
        .task
        .await
        .expect("the server does not panic")
        .expect("the server stops cleanly although a follower was connected");
}

#[tokio::test]
async fn debug_logs_are_rendered_unless_raw() {
    let server = Server::start().await;
    let raw = r#"{"timestamp":"2025-01-01T00:00:00.000000000Z","level":"INFO","target":"lattice_rep::run","fields":{"message":"started","index":2}}"#;
    server.hub.publish(line(DEBUG_LOG_GUID, "rep", "", raw));
    server.hub.publish(line(
        DEBUG_LOG_GUID,
        "receptor",
        "",
        "{\"not\":\"a debug line\"}",
    ));
    let client = server.client();
    let rep_only = LogFilter {
        source: Some("rep".into()),
        instance: None,
    };
    let human = client
        .debug_recent(&rep_only, false)
        .await
        .expect("debug lines");
    assert_eq!(texts(&human), ["INFO started index=2"]);
    let as_json = client
        .debug_recent(&rep_only, true)
        .await
        .expect("debug lines");
    assert_eq!(texts(&as_json), [raw]);

    let mut stream = client
        .debug_follow(
            &FollowOptions {
                recent: true,
                ..FollowOptions::default()
            },
            false,
        )
        .await
        .expect("the hub accepts the follower");
    let first = stream.next().await.expect("open").expect("no error");
    assert_eq!(first.message, "INFO started index=2");
    server.stop().await;
}

#[tokio::test]
async fn bad_queries_get_a_json_error_naming_the_parameter() {
    let server = Server::start().await;
    for (path, field) in [
        ("/v1/logs/app?follow=yes", "follow"),
        ("/v1/logs/app?raw=true", "raw"),
        ("/v1/debug_logs?sorce=APP", "sorce"),
    ] {
        let response = reqwest::get(format!("{}{path}", server.url))
            .await
            .expect("the server answers");
        assert_eq!(response.status(), 400, "{path}");
        let error: Value = response.json().await.expect("a JSON error");
        assert_eq!(error["name"], "InvalidRequest", "{path}");
        assert_eq!(error["field"], field, "{path}");
    }
    let client = server.client();
    let err = client
        .recent("..", &LogFilter::default())
        .await
        .expect_err("a guid that is not a path segment");
    assert!(
        matches!(
            err,
            ClientError::InvalidArgument {
                what: "log guid",
                ..
            }
        ),
        "{err}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_stream_cut_midway_is_an_error_not_an_end() {
    // A server that sends one event, then drops the connection without
    // ending the chunked body.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("loopback has free ports");
    let address = listener
        .local_addr()
        .expect("a bound listener has an address");
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("the client connects");
        let event = format!(
            "event: log\ndata: {}\n\n",
            serde_json::to_string(&line("app", "APP", "0", "only")).expect("serialisable")
        );
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{event}\r\n",
            event.len()
        );
        // Read the request first, so that closing does not reset it unread.
        let mut request = [0u8; 4096];
        let _ = tokio::io::AsyncReadExt::read(&mut socket, &mut request).await;
        socket
            .write_all(response.as_bytes())
            .await
            .expect("the client reads");
    });
    let client = LogsClient::new(&format!("http://{address}"), None).expect("a valid target");
    let mut stream = client
        .follow("app", &FollowOptions::default())
        .await
        .expect("the fake server accepts");
    let first = stream.next().await.expect("one event").expect("no error");
    assert_eq!(first.message, "only");
    server.await.expect("the fake server does not panic");
    let end = stream.next().await.expect("an item, not a clean end");
    assert!(matches!(end, Err(ClientError::Transport { .. })), "{end:?}");
}

fn fast_retries() -> RemoteSinkConfig {
    RemoteSinkConfig {
        batch_lines: 7,
        min_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(20),
        ..RemoteSinkConfig::default()
    }
}

#[tokio::test]
async fn a_remote_sink_delivers_in_order_and_retries_a_failing_hub() {
    // The first request gets a 503: the batch must be sent again, not lost.
    let failed_once = Arc::new(AtomicBool::new(false));
    let hub = Arc::new(LogHub::new(HubConfig::default()));
    let shutdown = CancellationToken::new();
    let flaky = {
        let failed_once = failed_once.clone();
        axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                let failed_once = failed_once.clone();
                async move {
                    if failed_once.swap(true, Ordering::SeqCst) {
                        next.run(request).await
                    } else {
                        axum::response::IntoResponse::into_response((
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            "not yet",
                        ))
                    }
                }
            },
        )
    };
    let app = lattice_logs::http::router(hub.clone(), shutdown.clone()).layer(flaky);
    let server = Server::serve(app, hub, shutdown).await;

    let mut follower = server.hub.follow("app", FollowOptions::default());
    let (sink, forwarder) =
        RemoteSink::with_config(&server.url, None, fast_retries()).expect("a valid target");
    let sink_shutdown = CancellationToken::new();
    let forwarding = tokio::spawn(forwarder.run(sink_shutdown.clone()));
    let sent: Vec<LogMessage> = (0..50)
        .map(|i| line("app", "APP", &(i % 3).to_string(), &format!("remote {i}")))
        .collect();
    for message in &sent {
        sink.emit(message.clone());
    }
    let mut got = Vec::new();
    for _ in 0..sent.len() {
        got.push(follower.next().await.expect("the hub is alive"));
    }
    assert_eq!(got, sent);
    assert!(
        failed_once.load(Ordering::SeqCst),
        "the first batch was refused"
    );
    assert_eq!(sink.dropped(), 0);

    sink_shutdown.cancel();
    forwarding.await.expect("the forwarder does not panic");
    server.stop().await;
}

#[tokio::test]
async fn a_remote_sink_flushes_what_is_queued_at_shutdown() {
    let server = Server::start().await;
    let (sink, forwarder) =
        RemoteSink::with_config(&server.url, None, fast_retries()).expect("a valid target");
    for i in 0..20 {
        sink.emit(line("app", "APP", "0", &i.to_string()));
    }
    // Already cancelled: everything goes out through the shutdown flush.
    let shutdown = CancellationToken::new();
    shutdown.cancel();
    forwarder.run(shutdown).await;
    let got = server.hub.recent("app", &LogFilter::default());
    assert_eq!(
        texts(&got),
        (0..20).map(|i| i.to_string()).collect::<Vec<_>>()
    );
    // The forwarder is gone: further lines are dropped, not queued forever.
    sink.emit(line("app", "APP", "0", "late"));
    assert_eq!(sink.dropped(), 1);
    server.stop().await;
}

#[tokio::test]
async fn a_remote_sink_drops_a_batch_the_hub_refuses() {
    let server = Server::start().await;
    let (sink, forwarder) = RemoteSink::with_config(
        &server.url,
        None,
        RemoteSinkConfig {
            batch_lines: 1,
            ..fast_retries()
        },
    )
    .expect("a valid target");
    // The hub refuses an empty log guid (400): retrying cannot help.
    sink.emit(line("", "APP", "0", "refused"));
    sink.emit(line("app", "APP", "0", "accepted"));
    let mut follower = server.hub.follow(
        "app",
        FollowOptions {
            recent: true,
            ..FollowOptions::default()
        },
    );
    let shutdown = CancellationToken::new();
    let forwarding = tokio::spawn(forwarder.run(shutdown.clone()));
    let got = follower.next().await.expect("the hub is alive");
    assert_eq!(got.message, "accepted");
    assert_eq!(sink.dropped(), 1);
    shutdown.cancel();
    forwarding.await.expect("the forwarder does not panic");
    server.stop().await;
}
