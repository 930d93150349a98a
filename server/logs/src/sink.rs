//! Sinks that deliver the executor's lines to a hub: [`HubSink`] in the
//! process that runs the hub, [`RemoteSink`] on a cell of another machine.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use lattice_client::{
    error_from_body, parse_target, transport_error, ClientError, Credentials, CONNECT_TIMEOUT,
};
use lattice_executor::LogSink;
use lattice_models::log::LogMessage;
use reqwest::header::CONTENT_TYPE;
use reqwest::{RequestBuilder, Url};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::hub::LogHub;

/// The media type of `POST /v1/log_messages`.
pub const NDJSON: &str = "application/x-ndjson";

/// Publishes straight into a hub in the same process.
pub struct HubSink {
    hub: Arc<LogHub>,
}

impl HubSink {
    pub fn new(hub: Arc<LogHub>) -> HubSink {
        HubSink { hub }
    }
}

impl LogSink for HubSink {
    fn emit(&self, message: LogMessage) {
        self.hub.publish(message);
    }
}

/// Tuning of a [`RemoteSink`] and its [`Forwarder`].
#[derive(Debug, Clone)]
pub struct RemoteSinkConfig {
    /// Lines queued for sending; more are dropped (and counted).
    pub queue: usize,
    /// Most lines sent in one request.
    pub batch_lines: usize,
    /// First wait after a failed request; doubles up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// How long one request may take.
    pub request_timeout: Duration,
    /// How long, after shutdown, the forwarder keeps sending what is queued.
    pub flush_timeout: Duration,
}

impl Default for RemoteSinkConfig {
    fn default() -> Self {
        Self {
            queue: 10_000,
            batch_lines: 1_000,
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            flush_timeout: Duration::from_secs(3),
        }
    }
}

/// A [`LogSink`] for a cell whose hub is on another machine: `emit` queues
/// the line (or drops it when the queue is full, never waiting), and the
/// [`Forwarder`] made with it sends the queue in batches to
/// `POST /v1/log_messages`.
pub struct RemoteSink {
    tx: mpsc::Sender<LogMessage>,
    dropped: Arc<AtomicU64>,
}

impl RemoteSink {
    /// A sink for the server at `base_url` (the receptor that serves the
    /// hub's API) and the forwarder to run for it.
    ///
    /// # Errors
    /// [`ClientError::InvalidTarget`] for a URL that is not
    /// `http://host:port[/prefix]`; [`ClientError::Setup`] if no HTTP
    /// client can be made.
    pub fn new(
        base_url: &str,
        credentials: Option<Credentials>,
    ) -> Result<(RemoteSink, Forwarder), ClientError> {
        Self::with_config(base_url, credentials, RemoteSinkConfig::default())
    }

    pub fn with_config(
        base_url: &str,
        credentials: Option<Credentials>,
        config: RemoteSinkConfig,
    ) -> Result<(RemoteSink, Forwarder), ClientError> {
        let mut url = parse_target(base_url)?;
        url.path_segments_mut()
            // parse_target only accepts http URLs with a host, which always
            // have a path.
            .expect("an http URL can be a base")
            .pop_if_empty()
            .extend(["v1", "log_messages"]);
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(config.request_timeout)
            .build()
            .map_err(ClientError::Setup)?;
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        let sink = RemoteSink {
            tx,
            dropped: dropped.clone(),
        };
        let forwarder = Forwarder {
            rx,
            http,
            url,
            credentials,
            config,
            dropped,
        };
        Ok((sink, forwarder))
    }

    /// Lines dropped so far because the queue was full (or the forwarder
    /// stopped).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl LogSink for RemoteSink {
    fn emit(&self, message: LogMessage) {
        if self.tx.try_send(message).is_err() {
            metrics::counter!(crate::hub::LOG_LINES_DROPPED, "reason" => "forward_queue_full")
                .increment(1);
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            // Warn on 1, 2, 4, 8, ... drops: visible, but not a flood of its own.
            if dropped.is_power_of_two() {
                tracing::warn!(
                    dropped,
                    "log forwarding queue full or stopped; dropping log lines"
                );
            }
        }
    }
}

/// Sends a [`RemoteSink`]'s lines to the hub. Run it with [`Forwarder::run`].
pub struct Forwarder {
    rx: mpsc::Receiver<LogMessage>,
    http: reqwest::Client,
    /// `.../v1/log_messages`.
    url: Url,
    credentials: Option<Credentials>,
    config: RemoteSinkConfig,
    dropped: Arc<AtomicU64>,
}

/// Why a batch did not go through.
enum SendFailure {
    /// The hub (or the network) may accept it later.
    Retry(ClientError),
    /// The hub refused it (4xx): sending it again cannot help.
    Rejected(ClientError),
}

impl Forwarder {
    /// Sends queued lines until `shutdown`, then for at most
    /// [`RemoteSinkConfig::flush_timeout`] sends what is still queued.
    ///
    /// # Guarantees
    /// Lines of one sink arrive in the order they were emitted. A batch the
    /// hub could not take is retried, with back-off, until it can (lines
    /// emitted meanwhile queue up, then drop); a batch the hub refuses (4xx)
    /// is dropped and logged. Ends early when every sink is dropped.
    ///
    /// # Caveats
    /// A batch in flight at shutdown is sent again while flushing, as its
    /// answer never came: the hub may then hold those lines twice.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut batch: Vec<LogMessage> = Vec::new();
        let mut backoff = self.config.min_backoff;
        let mut failing = false;
        loop {
            if batch.is_empty() {
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => break,
                    message = self.rx.recv() => match message {
                        Some(message) => batch.push(message),
                        None => break,
                    },
                }
            }
            self.fill(&mut batch);
            let request = self.request(&batch);
            let outcome = tokio::select! {
                outcome = send(request, self.target()) => outcome,
                _ = shutdown.cancelled() => break,
            };
            match outcome {
                Ok(()) => {
                    if failing {
                        tracing::info!(url = %self.url, "log hub reachable again");
                        failing = false;
                    }
                    batch.clear();
                    backoff = self.config.min_backoff;
                }
                Err(SendFailure::Rejected(error)) => {
                    tracing::warn!(
                        url = %self.url,
                        lines = batch.len(),
                        error = %error,
                        "log hub refused a batch of log lines; dropping it"
                    );
                    self.dropped
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    metrics::counter!(crate::hub::LOG_LINES_DROPPED, "reason" => "refused")
                        .increment(batch.len() as u64);
                    batch.clear();
                }
                Err(SendFailure::Retry(error)) => {
                    if !failing {
                        tracing::warn!(
                            url = %self.url,
                            error = %error,
                            "cannot send log lines to the log hub; retrying with back-off"
                        );
                        failing = true;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.cancelled() => break,
                    }
                    backoff = (backoff * 2).min(self.config.max_backoff);
                }
            }
        }
        self.flush(batch).await;
    }

    /// Adds what is queued to `batch`, up to the batch size, without waiting.
    fn fill(&mut self, batch: &mut Vec<LogMessage>) {
        while batch.len() < self.config.batch_lines {
            match self.rx.try_recv() {
                Ok(message) => batch.push(message),
                Err(_) => break,
            }
        }
    }

    /// Sends `batch` and everything still queued, one batch at a time, until
    /// done, a batch fails, or the flush timeout runs out.
    async fn flush(mut self, mut batch: Vec<LogMessage>) {
        // No more lines from the sinks: what is queued now is all there is.
        self.rx.close();
        let deadline = Instant::now() + self.config.flush_timeout;
        loop {
            self.fill(&mut batch);
            if batch.is_empty() {
                return;
            }
            let request = self.request(&batch);
            let reason = match tokio::time::timeout_at(deadline, send(request, self.target())).await
            {
                Ok(Ok(())) => {
                    batch.clear();
                    continue;
                }
                Ok(Err(SendFailure::Retry(e) | SendFailure::Rejected(e))) => e.to_string(),
                Err(_) => "flush timeout".to_string(),
            };
            let mut lost = batch.len();
            while self.rx.try_recv().is_ok() {
                lost += 1;
            }
            self.dropped.fetch_add(lost as u64, Ordering::Relaxed);
            metrics::counter!(crate::hub::LOG_LINES_DROPPED, "reason" => "shutdown")
                .increment(lost as u64);
            tracing::warn!(lost, %reason, "log lines not sent at shutdown");
            return;
        }
    }

    fn target(&self) -> String {
        self.url.to_string()
    }

    /// The NDJSON request for `batch`.
    fn request(&self, batch: &[LogMessage]) -> RequestBuilder {
        let mut body = Vec::with_capacity(batch.len() * 160);
        for message in batch {
            // Writing strings and integers into a Vec cannot fail.
            serde_json::to_writer(&mut body, message).expect("a log line is always serialisable");
            body.push(b'\n');
        }
        let request = self
            .http
            .post(self.url.clone())
            .header(CONTENT_TYPE, NDJSON)
            .body(Bytes::from(body));
        match &self.credentials {
            Some(c) => request.basic_auth(&c.username, Some(&c.password)),
            None => request,
        }
    }
}

async fn send(request: RequestBuilder, target: String) -> Result<(), SendFailure> {
    let response = request
        .send()
        .await
        .map_err(|e| SendFailure::Retry(transport_error(&target, e)))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body = response.bytes().await.unwrap_or_default();
    let error = error_from_body(&target, status.as_u16(), &body);
    // 408 and 429 say "later"; any other 4xx says "never like this".
    let retry = status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429;
    if retry {
        Err(SendFailure::Retry(error))
    } else {
        Err(SendFailure::Rejected(error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lattice_models::log::MessageType;

    fn line(text: &str) -> LogMessage {
        LogMessage {
            log_guid: "app".into(),
            source_type: "APP".into(),
            source_instance: "0".into(),
            message: text.into(),
            message_type: MessageType::Out,
            timestamp: 1,
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let config = RemoteSinkConfig {
            queue: 2,
            ..RemoteSinkConfig::default()
        };
        let (sink, _forwarder) =
            RemoteSink::with_config("http://127.0.0.1:1", None, config).expect("a valid target");
        for i in 0..5 {
            sink.emit(line(&i.to_string()));
        }
        assert_eq!(sink.dropped(), 3);
    }

    #[test]
    fn posts_ndjson_to_the_ingest_endpoint() {
        let (_sink, forwarder) =
            RemoteSink::new("http://127.0.0.1:1/lattice", None).expect("a valid target");
        let request = forwarder
            .request(&[line("a"), line("b")])
            .build()
            .expect("a valid request");
        assert_eq!(
            request.url().as_str(),
            "http://127.0.0.1:1/lattice/v1/log_messages"
        );
        let body = request
            .body()
            .and_then(|b| b.as_bytes())
            .expect("a buffered body");
        let lines: Vec<LogMessage> = std::str::from_utf8(body)
            .expect("JSON is UTF-8")
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is a LogMessage"))
            .collect();
        assert_eq!(lines, [line("a"), line("b")]);
    }
}
