//! [`RemoteStore`]: the store of a cell or router on another machine than
//! the brains, reached through a brain's internal API ([`crate::http`]), so
//! that only brains hold database credentials.
//!
//! # Calls
//! Each [`Store`](crate::Store) method is one HTTP request (the `impl Store`
//! is derived in [`crate::rpc`] from its list of operations) to the current brain. When a
//! brain cannot be connected to, the call goes to the next brain of the
//! list, which then becomes the current one. A call that writes a task or
//! LRP is only sent again when the first brain was never reached: a create
//! or compare-and-swap that did land and is sent twice would report a
//! conflict for the caller's own write. Reads and idempotent writes
//! (presence, locks, domains) move on after any transport failure.
//!
//! # The change feed
//! A background task follows one brain's event stream and republishes it
//! on a local broadcast, which [`Store::subscribe`](crate::Store::subscribe) hands out. It reconnects
//! with back-off, to the next brain when one cannot be reached, and resumes
//! right after the last event it saw when the brain still holds the events
//! since. A write through this store returns only after its event has
//! reached the local broadcast (when the feed follows the brain that took
//! the write), so that, as with the local backends, a subscriber sees the
//! events of the writes that returned before it looks.
//!
//! # Gaps
//! A reconnect that cannot resume (another brain, a restarted brain, a
//! brain that fell behind) may have missed events. That is counted
//! ([`RemoteStore::gaps`]) and logged, but subscribers are not told through
//! the receiver: a tokio broadcast receiver reports `Lagged` only when its
//! own buffer overflowed, and forcing that would mean publishing events that
//! did not happen. Consumers of a remote feed must therefore also re-read
//! the state they care about periodically, as they must after `Lagged`:
//! the rep re-checks its work every `sync_interval`, which bounds how late
//! a missed cancel is acted on.
//!
//! # Caveats
//! - "Events of writes committed after `subscribe`" holds for this store's
//!   own writes; an event of another process's write committed just before
//!   may still arrive after it, as it is in flight from the brain.
//! - Events of other processes arrive asynchronously, as with PostgreSQL.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;
use lattice_models::parse::{readable_items, Readable};
use lattice_models::Event;
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use tokio::sync::{broadcast, oneshot, watch};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::rpc::{
    Call, ErrorBody, FeedLine, FeedPosition, Reply, WireError, EVENTS_PATH, HEARTBEAT, PREFIX,
};
use crate::{EventReceiver, StoreError, StoreResult};

/// How many events a local subscriber may fall behind before it gets
/// `Lagged` (as for the local backends).
const EVENT_CAPACITY: usize = 4096;
/// How long connecting to a brain may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one call may take, answer included.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// A feed stream silent for this long (three missed heartbeats) is dead,
/// even if its connection looks open (a brain machine that vanished).
const IDLE_TIMEOUT: Duration = Duration::from_secs(HEARTBEAT.as_secs() * 3);
/// Back-off between attempts to follow the feed.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The longest feed line accepted: two records of the largest size the
/// receptor accepts, JSON-escaped, fit many times over.
const MAX_LINE_BYTES: usize = 64 * 1024 * 1024;

/// A [`Store`](crate::Store) served by one of several brains (see the module doc).
/// Dropping it stops following the feed; its subscribers then see
/// `Closed`.
pub struct RemoteStore {
    inner: Arc<Inner>,
    _stop: DropGuard,
}

pub(crate) struct Inner {
    http: reqwest::Client,
    /// Base URLs of the brains, without a trailing slash.
    urls: Arc<[String]>,
    secret: String,
    /// Index into `urls` of the brain calls go to first; shared with the
    /// feed follower, so calls and feed settle on the same brain.
    current: Arc<AtomicUsize>,
    events: broadcast::Sender<Event>,
    /// Where the follower is: which hub it is connected to, and the last
    /// event it delivered.
    feed: watch::Receiver<FeedState>,
    gaps: Arc<AtomicU64>,
}

#[derive(Debug, Clone, Default)]
struct FeedState {
    /// The hub of the stream being followed; `None` while disconnected.
    hub: Option<String>,
    /// The last event delivered to the local broadcast.
    seq: u64,
}

/// A brain URL as given, or why it is not one.
fn parse_url(url: &str) -> StoreResult<String> {
    let trimmed = url.trim().trim_end_matches('/');
    let parsed = reqwest::Url::parse(trimmed)
        .map_err(|e| StoreError::Backend(format!("invalid brain URL {url:?}: {e}")))?;
    if parsed.scheme() != "http" || parsed.host_str().is_none() {
        return Err(StoreError::Backend(format!(
            "invalid brain URL {url:?}: expected http://HOST:PORT (TLS is not supported; \
             keep brains and cells on a private network)"
        )));
    }
    Ok(trimmed.to_string())
}

/// An error and its causes, one line: reqwest's own message names little.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The [`StoreError`] a brain's error answer stands for.
pub(crate) fn store_error(error: WireError, url: &str) -> StoreError {
    match error {
        WireError::NotFound { record, key } => StoreError::NotFound { kind: record, key },
        WireError::AlreadyExists { record, key } => StoreError::AlreadyExists { kind: record, key },
        WireError::Conflict { record, key } => StoreError::Conflict { kind: record, key },
        WireError::Corrupt {
            record,
            key,
            reason,
        } => StoreError::Corrupt {
            kind: record,
            key,
            reason,
        },
        WireError::Backend { message } => StoreError::Backend(message),
        WireError::Unauthorized { .. } => unauthorized(url),
        WireError::BadRequest { message } => StoreError::Backend(format!(
            "the brain at {url} refused the request (is it another version?): {message}"
        )),
    }
}

fn unauthorized(url: &str) -> StoreError {
    StoreError::Backend(format!(
        "the brain at {url} refused the cluster secret: give the secret the brains run with \
         (--secret or LATTICE_SECRET)"
    ))
}

impl RemoteStore {
    /// Connects to the brains at `urls` (`http://HOST:PORT` of their
    /// receptors), in order of preference, authenticating with `secret`,
    /// and starts following the change feed.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when a URL is not `http://HOST:PORT`, the
    /// secret is empty, a brain refuses the secret (the message says so), or
    /// no brain can be reached: connect returns once the feed is followed,
    /// so that a subscriber misses nothing written after it.
    pub async fn connect(urls: Vec<String>, secret: String) -> StoreResult<RemoteStore> {
        if urls.is_empty() {
            return Err(StoreError::Backend("no brain URL given".to_string()));
        }
        if secret.is_empty() {
            return Err(StoreError::Backend(
                "the cluster secret is empty: give the secret the brains run with".to_string(),
            ));
        }
        let urls: Arc<[String]> = urls
            .iter()
            .map(|u| parse_url(u))
            .collect::<StoreResult<Vec<_>>>()?
            .into();
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_keepalive(Duration::from_secs(30))
            .build()
            .map_err(|e| {
                StoreError::Backend(format!("cannot make an HTTP client: {}", chain(&e)))
            })?;
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let (state_tx, state_rx) = watch::channel(FeedState::default());
        let current = Arc::new(AtomicUsize::new(0));
        let gaps = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        // Made before the first await: a connect that is dropped midway
        // stops the follower too.
        let stop_guard = stop.clone().drop_guard();
        let (first_tx, first_rx) = oneshot::channel();
        let follower = Follower {
            http: http.clone(),
            urls: urls.clone(),
            secret: secret.clone(),
            current: current.clone(),
            events: events.clone(),
            state: state_tx,
            gaps: gaps.clone(),
            stop,
        };
        tokio::spawn(follower.run(first_tx));
        match first_rx.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(StoreError::Backend(
                    "the change feed follower stopped before it connected".to_string(),
                ))
            }
        }
        Ok(RemoteStore {
            inner: Arc::new(Inner {
                http,
                urls,
                secret,
                current,
                events,
                feed: state_rx,
                gaps,
            }),
            _stop: stop_guard,
        })
    }

    /// How many times the feed reconnected without being able to resume:
    /// events may have been missed each time (see the module doc).
    pub fn gaps(&self) -> u64 {
        self.inner.gaps.load(Ordering::Relaxed)
    }

    /// The brain calls go to first now.
    pub fn brain(&self) -> &str {
        let index = self.inner.current.load(Ordering::Relaxed) % self.inner.urls.len();
        &self.inner.urls[index]
    }

    /// Whether the change feed is connected to a brain now.
    pub fn feed_connected(&self) -> bool {
        self.inner.feed.borrow().hub.is_some()
    }

    /// What sends the calls of the `Store` impl, which
    /// [`crate::rpc`] derives from its list of operations.
    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// The local end of the change feed ([`Store::subscribe`](crate::Store::subscribe)).
    pub(crate) fn subscribe_feed(&self) -> EventReceiver {
        self.inner.events.subscribe()
    }
}

impl Inner {
    /// Sends `call` to the current brain, or the next ones (see the module
    /// doc); for a write, waits until its event reached the local feed.
    /// A list call whose items are decoded one by one: an item this cell
    /// cannot decode (a newer version's, or a damaged record) is logged and
    /// skipped, so that the rest of the list still reaches the rep.
    pub(crate) async fn call_list<T: DeserializeOwned>(&self, call: Call) -> StoreResult<Vec<T>> {
        let method = split(&call)?.0;
        let items: Vec<Readable<T>> = self.call(call).await?;
        let (items, unreadable) = readable_items(items);
        for reason in unreadable {
            tracing::error!(method = %method, error = %reason, "skipping an unreadable record of a list from the brain");
        }
        Ok(items)
    }

    pub(crate) async fn call<T: DeserializeOwned>(&self, call: Call) -> StoreResult<T> {
        let retry_any_failure = !call.writes_record();
        let (method, args) = split(&call)?;
        let count = self.urls.len();
        let start = self.current.load(Ordering::Relaxed) % count;
        let mut failures = Vec::new();
        for attempt in 0..count {
            let index = (start + attempt) % count;
            let base = &self.urls[index];
            let sent = self
                .http
                .post(format!("{base}{PREFIX}/{method}"))
                .bearer_auth(&self.secret)
                .timeout(CALL_TIMEOUT)
                .json(&args)
                .send()
                .await;
            match sent {
                Ok(response) => {
                    if attempt > 0 {
                        // Another caller may have moved on already; either
                        // brain is fine, so a lost race changes nothing.
                        let _ = self.current.compare_exchange(
                            start,
                            index,
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                        );
                        tracing::info!(brain = %base, "store calls go to another brain now");
                    }
                    let reply: Reply<T> = answer(base, &method, response).await?;
                    if let Some(position) = reply.feed {
                        self.settle(position).await;
                    }
                    return Ok(reply.result);
                }
                Err(e) if e.is_connect() || retry_any_failure => {
                    failures.push(format!("{base}: {}", chain(&e)));
                }
                Err(e) => {
                    return Err(StoreError::Backend(format!(
                        "the brain at {base} did not answer {method}, which may or may not have \
                         been applied: {}",
                        chain(&e)
                    )))
                }
            }
        }
        Err(StoreError::Backend(format!(
            "cannot reach any brain for {method}: {}",
            failures.join("; ")
        )))
    }

    /// Waits until the follower delivered the event at `position`, or
    /// cannot: it follows another hub, or is disconnected.
    async fn settle(&self, position: FeedPosition) {
        let mut feed = self.feed.clone();
        // An error means the follower is gone (the store is being dropped):
        // nothing to wait for then.
        let _ = feed
            .wait_for(|state| {
                state.hub.as_deref() != Some(position.hub.as_str()) || state.seq >= position.seq
            })
            .await;
    }
}

/// The method name and the arguments of `call`.
fn split(call: &Call) -> StoreResult<(String, serde_json::Value)> {
    let encode_error =
        |e: &dyn std::fmt::Display| StoreError::Backend(format!("cannot encode a store call: {e}"));
    let serde_json::Value::Object(mut object) =
        serde_json::to_value(call).map_err(|e| encode_error(&e))?
    else {
        return Err(encode_error(&"not an object"));
    };
    let method = match object.remove("method") {
        Some(serde_json::Value::String(method)) => method,
        _ => return Err(encode_error(&"no method name")),
    };
    let args = object
        .remove("args")
        .unwrap_or_else(|| serde_json::Value::Object(Default::default()));
    Ok((method, args))
}

/// Reads a brain's answer to `method`.
async fn answer<T: DeserializeOwned>(
    base: &str,
    method: &str,
    response: reqwest::Response,
) -> StoreResult<Reply<T>> {
    let status = response.status();
    let body = response.bytes().await.map_err(|e| {
        StoreError::Backend(format!(
            "the brain at {base} broke off its answer to {method}: {}",
            chain(&e)
        ))
    })?;
    if status.is_success() {
        return serde_json::from_slice(&body).map_err(|e| {
            StoreError::Backend(format!(
                "the brain at {base} answered {method} with something unreadable: {e}"
            ))
        });
    }
    if let Ok(ErrorBody { error }) = serde_json::from_slice(&body) {
        return Err(store_error(error, base));
    }
    if status == StatusCode::UNAUTHORIZED {
        return Err(unauthorized(base));
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
    Err(StoreError::Backend(format!(
        "the brain at {base} answered {method} with {status} (is this a brain's receptor?): {text}"
    )))
}

// --- the feed follower -----------------------------------------------------

/// Follows one brain's event stream at a time (see the module doc).
struct Follower {
    http: reqwest::Client,
    urls: Arc<[String]>,
    secret: String,
    current: Arc<AtomicUsize>,
    events: broadcast::Sender<Event>,
    state: watch::Sender<FeedState>,
    gaps: Arc<AtomicU64>,
    stop: CancellationToken,
}

/// How one attempt to follow a stream ended.
enum SessionEnd {
    Stopped,
    /// It never got to the first line.
    Refused {
        unauthorized: bool,
        reason: String,
    },
    /// It was followed for a while, then broke.
    Broken(String),
}

impl Follower {
    /// Follows until stopped. `first` learns the outcome of the first
    /// round: connected, or why no brain could be followed (the follower
    /// then ends).
    async fn run(mut self, first: oneshot::Sender<StoreResult<()>>) {
        let mut first = Some(first);
        let mut resume: Option<FeedPosition> = None;
        let mut backoff = MIN_BACKOFF;
        let mut refusals: Vec<String> = Vec::new();
        loop {
            let count = self.urls.len();
            let index = self.current.load(Ordering::Relaxed) % count;
            let base = self.urls[index].clone();
            match self.session(&base, &mut resume, &mut first).await {
                SessionEnd::Stopped => return,
                SessionEnd::Broken(reason) => {
                    self.state.send_modify(|state| state.hub = None);
                    tracing::warn!(brain = %base, %reason, "lost the store's change feed; reconnecting");
                    backoff = MIN_BACKOFF;
                    refusals.clear();
                }
                SessionEnd::Refused {
                    unauthorized,
                    reason,
                } => {
                    if let Some(tx) = first.take() {
                        refusals.push(format!("{base}: {reason}"));
                        if unauthorized || refusals.len() >= count {
                            let error = if unauthorized {
                                self::unauthorized(&base)
                            } else {
                                StoreError::Backend(format!(
                                    "cannot reach any brain: {}",
                                    refusals.join("; ")
                                ))
                            };
                            let _ = tx.send(Err(error));
                            return;
                        }
                        first = Some(tx);
                    } else if refusals.is_empty() {
                        // Once per outage, not every attempt.
                        tracing::warn!(brain = %base, %reason, "cannot follow the store's change feed; trying the next brain");
                        refusals.push(reason);
                    } else {
                        tracing::debug!(brain = %base, %reason, "cannot follow the store's change feed yet");
                    }
                    let _ = self.current.compare_exchange(
                        index,
                        (index + 1) % count,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                }
            }
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Follows the stream of the brain at `base` until it breaks.
    async fn session(
        &mut self,
        base: &str,
        resume: &mut Option<FeedPosition>,
        first: &mut Option<oneshot::Sender<StoreResult<()>>>,
    ) -> SessionEnd {
        let mut request = self
            .http
            .get(format!("{base}{EVENTS_PATH}"))
            .bearer_auth(&self.secret);
        if let Some(position) = resume.as_ref() {
            request = request.query(&[
                ("hub", position.hub.clone()),
                ("after", position.seq.to_string()),
            ]);
        }
        let refused = |reason: String| SessionEnd::Refused {
            unauthorized: false,
            reason,
        };
        let response = tokio::select! {
            _ = self.stop.cancelled() => return SessionEnd::Stopped,
            sent = tokio::time::timeout(IDLE_TIMEOUT, request.send()) => match sent {
                Ok(Ok(response)) => response,
                Ok(Err(e)) => return refused(chain(&e)),
                Err(_) => return refused(format!("no answer within {IDLE_TIMEOUT:?}")),
            },
        };
        if response.status() == StatusCode::UNAUTHORIZED {
            return SessionEnd::Refused {
                unauthorized: true,
                reason: "the brain refused the cluster secret".to_string(),
            };
        }
        if !response.status().is_success() {
            return refused(format!(
                "the brain answered {} (is this a brain's receptor?)",
                response.status()
            ));
        }
        let mut lines = Lines::new(response.bytes_stream().boxed());
        let (hub, seq, resumed) = match self.next_line(&mut lines).await {
            Err(end) => return end,
            Ok(FeedLine::Hello { hub, seq, resumed }) => (hub, seq, resumed),
            Ok(other) => return refused(format!("the stream began with {other:?}, not a hello")),
        };
        if resume.is_some() && !resumed {
            let gaps = self.gaps.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(
                brain = %base,
                gaps,
                "the store's change feed could not resume where it was; events may have been \
                 missed (subscribers heal with their periodic re-reads)"
            );
        } else if resumed {
            tracing::info!(brain = %base, "the store's change feed resumed");
        }
        let mut position = FeedPosition { hub, seq };
        self.state.send_replace(FeedState {
            hub: Some(position.hub.clone()),
            seq: position.seq,
        });
        *resume = Some(position.clone());
        if let Some(first) = first.take() {
            let _ = first.send(Ok(()));
        }
        loop {
            let line = match self.next_line(&mut lines).await {
                Ok(line) => line,
                Err(SessionEnd::Refused { reason, .. }) => return SessionEnd::Broken(reason),
                Err(end) => return end,
            };
            match line {
                FeedLine::Event { seq, event } => {
                    if seq != position.seq + 1 {
                        // A brain never skips numbers; count it rather than
                        // trust it.
                        self.gaps.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(brain = %base, expected = position.seq + 1, got = seq, "the store's change feed skipped events");
                    }
                    // No subscriber is not an error: the event is not wanted.
                    let _ = self.events.send(event);
                    position.seq = seq;
                    *resume = Some(position.clone());
                    self.state.send_modify(|state| state.seq = seq);
                }
                FeedLine::Unreadable { seq, reason } => {
                    tracing::error!(brain = %base, seq, error = %reason, "skipping an unreadable event of the store's change feed");
                    position.seq = seq;
                    *resume = Some(position.clone());
                    self.state.send_modify(|state| state.seq = seq);
                }
                FeedLine::Ping {} => {}
                FeedLine::Hello { .. } => {
                    return SessionEnd::Broken("a second hello in one stream".to_string())
                }
            }
        }
    }

    /// The next line of the stream; a failure as a [`SessionEnd::Refused`]
    /// (the caller turns it into `Broken` once the stream was followed).
    async fn next_line(&self, lines: &mut Lines) -> Result<FeedLine, SessionEnd> {
        let refused = |reason: String| SessionEnd::Refused {
            unauthorized: false,
            reason,
        };
        tokio::select! {
            _ = self.stop.cancelled() => Err(SessionEnd::Stopped),
            line = tokio::time::timeout(IDLE_TIMEOUT, lines.next()) => match line {
                Ok(Some(Ok(line))) => Ok(line),
                Ok(Some(Err(reason))) => Err(refused(reason)),
                Ok(None) => Err(refused("the brain ended the stream".to_string())),
                Err(_) => Err(refused(format!("nothing from the brain for {IDLE_TIMEOUT:?}"))),
            },
        }
    }
}

/// Decodes one feed line. An event line whose event cannot be decoded (a
/// kind of a newer version, a record past the decoder's depth limit) comes
/// back as [`FeedLine::Unreadable`] with its number, so that the follower
/// skips it and keeps its position; reconnecting would only replay it.
fn decode_line(line: &[u8]) -> Result<FeedLine, String> {
    let err = match serde_json::from_slice(line) {
        Ok(line) => return Ok(line),
        Err(err) => err,
    };
    /// The envelope alone: serde_json skips the unread `event` without
    /// recursion, so this decodes whatever the event holds.
    #[derive(serde::Deserialize)]
    struct Envelope {
        #[serde(rename = "type")]
        kind: String,
        seq: Option<u64>,
    }
    match serde_json::from_slice::<Envelope>(line) {
        Ok(Envelope {
            kind,
            seq: Some(seq),
        }) if kind == "event" => Ok(FeedLine::Unreadable {
            seq,
            reason: err.to_string(),
        }),
        _ => Err(format!("an unreadable feed line: {err}")),
    }
}

/// Splits a byte stream into feed lines.
struct Lines {
    stream: BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: Vec<u8>,
}

impl Lines {
    fn new(stream: BoxStream<'static, reqwest::Result<bytes::Bytes>>) -> Lines {
        Lines {
            stream,
            buffer: Vec::new(),
        }
    }

    /// The next non-blank line, decoded; `None` at the end of the stream.
    async fn next(&mut self) -> Option<Result<FeedLine, String>> {
        let mut searched = 0;
        loop {
            if let Some(offset) = self.buffer[searched..].iter().position(|&b| b == b'\n') {
                let end = searched + offset;
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                searched = 0;
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Some(decode_line(&line));
            }
            searched = self.buffer.len();
            if self.buffer.len() > MAX_LINE_BYTES {
                return Some(Err(format!(
                    "a feed line longer than {MAX_LINE_BYTES} bytes"
                )));
            }
            match self.stream.next().await? {
                Ok(chunk) => self.buffer.extend_from_slice(&chunk),
                Err(e) => return Some(Err(chain(&e))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brain_urls_must_be_plain_http() {
        assert_eq!(
            parse_url(" http://10.0.0.1:8888/ ").expect("valid"),
            "http://10.0.0.1:8888"
        );
        for bad in ["https://brain:8888", "brain:8888", "", "ftp://x"] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn calls_split_into_a_path_and_a_body() {
        let (method, args) = split(&Call::RemoveCell {
            cell_id: "c1".into(),
        })
        .expect("splits");
        assert_eq!(method, "remove_cell");
        assert_eq!(args, serde_json::json!({"cell_id": "c1"}));
        let (method, args) = split(&Call::Domains {}).expect("splits");
        assert_eq!(method, "domains");
        assert_eq!(args, serde_json::json!({}));
    }

    #[test]
    fn regression_an_unreadable_event_is_skipped_with_its_number() {
        let deep = format!("{}1{}", "[".repeat(300), "]".repeat(300));
        let line = format!(r#"{{"type":"event","seq":7,"event":{deep}}}"#);
        match decode_line(line.as_bytes()).expect("an event line") {
            FeedLine::Unreadable { seq, reason } => {
                assert_eq!(seq, 7);
                assert!(reason.contains("recursion limit"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        let line = br#"{"type":"event","seq":8,"event":{"type":"newer_kind"}}"#;
        assert!(matches!(
            decode_line(line),
            Ok(FeedLine::Unreadable { seq: 8, .. })
        ));
        // A line that is not an event at all still ends the session.
        assert!(decode_line(b"{\"type\":\"hello\"}").is_err());
        assert!(decode_line(b"not json").is_err());
    }

    #[tokio::test]
    async fn lines_split_across_chunks_and_skip_blanks() {
        let hello = br#"{"type":"hello","hub":"h","seq":3,"resumed":false}"#;
        let mut text = Vec::new();
        text.extend_from_slice(hello);
        text.extend_from_slice(b"\n\n");
        text.extend_from_slice(br#"{"type":"ping"}"#);
        text.push(b'\n');
        // Chunks of 7 bytes: lines straddle chunk borders.
        let chunks: Vec<reqwest::Result<bytes::Bytes>> = text
            .chunks(7)
            .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
            .collect();
        let mut lines = Lines::new(futures::stream::iter(chunks).boxed());
        match lines.next().await {
            Some(Ok(FeedLine::Hello { hub, seq, resumed })) => {
                assert_eq!((hub.as_str(), seq, resumed), ("h", 3, false));
            }
            other => panic!("expected a hello, got {other:?}"),
        }
        assert!(matches!(lines.next().await, Some(Ok(FeedLine::Ping {}))));
        assert!(lines.next().await.is_none());
    }
}
