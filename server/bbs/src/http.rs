//! The store over HTTP: what a brain serves so that cells on other machines
//! use the cluster's store without database credentials ([`router`]). The
//! methods and their wire types come from [`crate::rpc`], which the client,
//! [`RemoteStore`](crate::RemoteStore), shares.
//!
//! # Endpoints
//! Every request must carry the cluster secret as `Authorization: Bearer
//! SECRET` (or as the password of HTTP basic auth, for clients that only
//! speak that, such as the log forwarder); anything else gets a 401.
//! - `POST /internal/v1/store/{method}`: one [`Store`] method, named as in
//!   the trait (`get_task`, `update_actual_lrp`, ...), its arguments as a
//!   JSON object. Success: 200 `{"result": ..., "feed": ...}`, where `feed`
//!   (writes of tasks and LRPs only) is the [`FeedPosition`] after the
//!   write's event. Failure: `{"error": {"kind": ...}}` with the
//!   [`StoreError`] variant's fields, so that the client rebuilds the same
//!   variant; 404 not found, 409 already exists, 412 conflict, 500 corrupt,
//!   503 backend, 400 a request that is not a known method with valid
//!   arguments, 401 a missing or wrong secret.
//! - `GET /internal/v1/store/events?hub=H&after=N`: the change feed as
//!   newline-delimited JSON [`FeedLine`]s: a `hello`, then every event in
//!   commit order, each with its sequence number, and a `ping` every
//!   [`HEARTBEAT`] so that a client notices a dead connection. With `hub`
//!   and `after` from an earlier stream, the stream resumes right after
//!   event `after` when this server still holds the events since
//!   (`resumed: true` in the hello); otherwise it starts at the present.
//!
//! # The feed hub
//! One subscription to the store per router numbers the events (`seq`)
//! under one hub id, and keeps the last [`REPLAY_EVENTS`] for resuming
//! streams. A write handler drains that subscription itself before it
//! answers, so the `feed` position it returns covers its own event: the
//! store publishes a write's event before the write returns (both backends
//! guarantee it).
//!
//! # Guarantees
//! - A stream delivers each event of the store at most once, in the store's
//!   order, numbered without holes; a resumed stream continues the numbers.
//! - A hub that falls behind its store (more than the store's broadcast
//!   capacity) cannot know what it missed: it takes a new hub id and ends
//!   every stream, so that no client resumes across the hole unaware.
//!
//! # Caveats
//! - Hub ids and numbers are per server: a client that moves to another
//!   brain cannot resume there and has missed what happened in between.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio_util::sync::CancellationToken;

use crate::rpc::{dispatch, Call, ErrorBody, FeedLine, FeedQuery, WireError};
pub use crate::rpc::{FeedPosition, EVENTS_PATH, HEARTBEAT, NDJSON, PREFIX};
use crate::{EventReceiver, SharedStore};

/// How many recent events a hub keeps for streams that resume.
pub const REPLAY_EVENTS: usize = 4096;
/// How many events a stream may fall behind before it is ended (its client
/// resumes from the replay buffer).
const LIVE_CAPACITY: usize = 1024;

fn status(error: &WireError) -> StatusCode {
    match error {
        WireError::NotFound { .. } => StatusCode::NOT_FOUND,
        WireError::AlreadyExists { .. } => StatusCode::CONFLICT,
        WireError::Conflict { .. } => StatusCode::PRECONDITION_FAILED,
        WireError::Corrupt { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        WireError::Backend { .. } => StatusCode::SERVICE_UNAVAILABLE,
        WireError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
        WireError::BadRequest { .. } => StatusCode::BAD_REQUEST,
    }
}

impl IntoResponse for WireError {
    fn into_response(self) -> Response {
        (status(&self), Json(ErrorBody { error: self })).into_response()
    }
}

// --- authentication --------------------------------------------------------

/// Wraps `router` so that every request must carry `secret` (see the module
/// doc); used for the store API and for other internal routes a brain
/// serves beside it (the log hub's ingest for cells).
pub fn require_secret(router: Router, secret: String) -> Router {
    let expected: Arc<[u8; 32]> = Arc::new(Sha256::digest(secret.as_bytes()).into());
    router.layer(axum::middleware::from_fn(
        move |req: Request, next: Next| {
            let expected = expected.clone();
            async move {
                if presents_secret(&req, &expected) {
                    next.run(req).await
                } else {
                    WireError::Unauthorized {
                        message: "missing or wrong cluster secret: give this brain's --secret \
                              (as `Authorization: Bearer SECRET`)"
                            .to_string(),
                    }
                    .into_response()
                }
            }
        },
    ))
}

fn presents_secret(req: &Request, expected: &[u8; 32]) -> bool {
    let Some(header) = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    // Scheme names are case-insensitive (RFC 7235 section 2.1).
    let (scheme, param) = header.trim_start().split_once(' ').unwrap_or((header, ""));
    let given = if scheme.eq_ignore_ascii_case("bearer") {
        param.trim().as_bytes().to_vec()
    } else if scheme.eq_ignore_ascii_case("basic") {
        let b64 = param;
        let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b64.trim()) else {
            return false;
        };
        // `user:secret`; the user name carries nothing.
        match raw.iter().position(|&b| b == b':') {
            Some(colon) => raw[colon + 1..].to_vec(),
            None => return false,
        }
    } else {
        return false;
    };
    let given: [u8; 32] = Sha256::digest(&given).into();
    // Digests have one length and are compared without an early exit, so
    // neither the time nor the length of a guess tells how close it was.
    given.ct_eq(expected).into()
}

// --- the feed hub ------------------------------------------------------------

/// Numbers the store's events and fans them out to streams (see the module
/// doc).
struct FeedHub {
    /// A std mutex: held to drain the subscription and publish, never across
    /// an `.await`.
    inner: Mutex<HubInner>,
}

struct HubInner {
    /// The store subscription; read only under the lock, so events are
    /// numbered once and in order whoever drains.
    source: EventReceiver,
    id: String,
    seq: u64,
    /// The last [`REPLAY_EVENTS`] encoded event lines, oldest first.
    ring: VecDeque<(u64, Bytes)>,
    live: broadcast::Sender<Bytes>,
}

fn new_hub_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// One line of the stream, newline included.
fn encode_line(line: &FeedLine) -> Bytes {
    // Events are plain data (strings, numbers, maps with string keys):
    // serializing them cannot fail.
    let mut bytes = serde_json::to_vec(line).expect("a feed line is always serializable");
    bytes.push(b'\n');
    Bytes::from(bytes)
}

impl FeedHub {
    fn new(source: EventReceiver) -> FeedHub {
        FeedHub {
            inner: Mutex::new(HubInner {
                source,
                id: new_hub_id(),
                seq: 0,
                ring: VecDeque::new(),
                live: broadcast::channel(LIVE_CAPACITY).0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HubInner> {
        // A panic while holding the lock leaves the numbering consistent
        // (each step either happened or not), so a poisoned lock is usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Numbers and publishes everything the store has published so far;
    /// the position after the last of it.
    fn pump(&self) -> FeedPosition {
        let mut hub = self.lock();
        loop {
            match hub.source.try_recv() {
                Ok(event) => {
                    hub.seq += 1;
                    let seq = hub.seq;
                    let line = encode_line(&FeedLine::Event { seq, event });
                    if hub.ring.len() == REPLAY_EVENTS {
                        hub.ring.pop_front();
                    }
                    hub.ring.push_back((seq, line.clone()));
                    // No stream is not an error: the event is not wanted now.
                    let _ = hub.live.send(line);
                }
                Err(TryRecvError::Lagged(missed)) => {
                    tracing::warn!(
                        missed,
                        "the store feed hub fell behind its store; streams restart and their clients resync"
                    );
                    hub.id = new_hub_id();
                    hub.ring.clear();
                    // Dropping the old sender ends every stream on it.
                    hub.live = broadcast::channel(LIVE_CAPACITY).0;
                }
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            }
        }
        FeedPosition {
            hub: hub.id.clone(),
            seq: hub.seq,
        }
    }

    /// Starts a stream for a client that last saw `after` of `hub`: its
    /// hello, the events to replay, and the live events after them.
    fn attach(&self, query: &FeedQuery) -> (Bytes, Vec<Bytes>, broadcast::Receiver<Bytes>) {
        self.pump();
        let hub = self.lock();
        let resume_from = match (&query.hub, query.after) {
            (Some(id), Some(after)) if *id == hub.id && after <= hub.seq => {
                let oldest = hub.ring.front().map_or(hub.seq + 1, |(seq, _)| *seq);
                // Every event after `after` is still held.
                (after + 1 >= oldest).then_some(after)
            }
            _ => None,
        };
        let replay: Vec<Bytes> = match resume_from {
            Some(after) => hub
                .ring
                .iter()
                .filter(|(seq, _)| *seq > after)
                .map(|(_, line)| line.clone())
                .collect(),
            None => Vec::new(),
        };
        let hello = encode_line(&FeedLine::Hello {
            hub: hub.id.clone(),
            seq: resume_from.unwrap_or(hub.seq),
            resumed: resume_from.is_some(),
        });
        // Subscribed under the lock that publishing takes: nothing falls
        // between the replay and the live events, nothing is in both.
        (hello, replay, hub.live.subscribe())
    }
}

/// Keeps the hub numbering events while no write drains it, until
/// `shutdown` or the store goes.
async fn follow_store(hub: Arc<FeedHub>, mut doorbell: EventReceiver, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            rung = doorbell.recv() => match rung {
                // The doorbell only says "something was published"; the
                // hub's own subscription carries it.
                Ok(_) | Err(RecvError::Lagged(_)) => {
                    hub.pump();
                }
                Err(RecvError::Closed) => return,
            },
        }
    }
}

// --- the router --------------------------------------------------------------

#[derive(Clone)]
struct ServerState {
    store: SharedStore,
    hub: Arc<FeedHub>,
    /// Ends feed streams, so that a server's graceful shutdown is not held
    /// up by clients that never disconnect.
    shutdown: CancellationToken,
}

/// The store's internal API over `store` (see the module doc), behind
/// `secret`. Feed streams end, and the hub stops numbering events, when
/// `shutdown` fires.
///
/// # Panics
/// Outside a tokio runtime: it starts the task that numbers events.
pub fn router(store: SharedStore, secret: String, shutdown: CancellationToken) -> Router {
    let hub = Arc::new(FeedHub::new(store.subscribe()));
    tokio::spawn(follow_store(
        hub.clone(),
        store.subscribe(),
        shutdown.clone(),
    ));
    let state = ServerState {
        store,
        hub,
        shutdown,
    };
    let routes = Router::new()
        .route(EVENTS_PATH, get(events))
        .route(&format!("{PREFIX}/{{method}}"), post(call))
        .with_state(state);
    require_secret(routes, secret)
}

async fn call(
    State(state): State<ServerState>,
    Path(method): Path<String>,
    body: Bytes,
) -> Response {
    let args: serde_json::Value = if body.iter().all(u8::is_ascii_whitespace) {
        serde_json::Value::Object(Default::default())
    } else {
        match serde_json::from_slice(&body) {
            Ok(args) => args,
            Err(e) => {
                return WireError::BadRequest {
                    message: format!("the arguments of {method:?} are not JSON: {e}"),
                }
                .into_response()
            }
        }
    };
    let call: Call = match serde_json::from_value(serde_json::json!({
        "method": method,
        "args": args,
    })) {
        Ok(call) => call,
        Err(e) => {
            return WireError::BadRequest {
                message: format!("not a store method with valid arguments: {method:?}: {e}"),
            }
            .into_response()
        }
    };
    let hub = &state.hub;
    match dispatch(state.store.as_ref(), call, || hub.pump()).await {
        Ok(reply) => ([(CONTENT_TYPE, "application/json")], reply).into_response(),
        Err(e) => WireError::from(e).into_response(),
    }
}

async fn events(State(state): State<ServerState>, Query(query): Query<FeedQuery>) -> Response {
    let (hello, replay, live) = state.hub.attach(&query);
    let mut pending: VecDeque<Bytes> = VecDeque::with_capacity(replay.len() + 1);
    pending.push_back(hello);
    pending.extend(replay);
    let stream = FeedStream {
        pending,
        live,
        heartbeat: tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT),
        shutdown: state.shutdown.clone(),
    };
    let body = futures::stream::unfold(stream, |mut stream| async move {
        let line = stream.next_line().await?;
        Some((Ok::<_, std::convert::Infallible>(line), stream))
    });
    (
        StatusCode::OK,
        [(CONTENT_TYPE, NDJSON)],
        Body::from_stream(body),
    )
        .into_response()
}

/// The state of one feed stream.
struct FeedStream {
    /// The hello and the replayed events, sent first.
    pending: VecDeque<Bytes>,
    live: broadcast::Receiver<Bytes>,
    heartbeat: tokio::time::Interval,
    shutdown: CancellationToken,
}

impl FeedStream {
    /// The next line, or `None` to end the stream: on shutdown, when the
    /// hub restarted, or when this stream fell behind (its client resumes).
    async fn next_line(&mut self) -> Option<Bytes> {
        if let Some(line) = self.pending.pop_front() {
            return Some(line);
        }
        tokio::select! {
            _ = self.shutdown.cancelled() => None,
            _ = self.heartbeat.tick() => Some(encode_line(&FeedLine::Ping {})),
            line = self.live.recv() => match line {
                Ok(line) => {
                    self.heartbeat.reset();
                    Some(line)
                }
                Err(RecvError::Lagged(_) | RecvError::Closed) => None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{RecordKind, StoreError};
    use lattice_models::Event;

    #[test]
    fn every_store_error_survives_the_wire() {
        let errors = [
            StoreError::NotFound {
                kind: RecordKind::Task,
                key: "t".into(),
            },
            StoreError::AlreadyExists {
                kind: RecordKind::DesiredLrp,
                key: "d".into(),
            },
            StoreError::Conflict {
                kind: RecordKind::ActualLrp,
                key: "a/0".into(),
            },
            StoreError::Corrupt {
                kind: RecordKind::Cell,
                key: "c".into(),
                reason: "bad json".into(),
            },
            StoreError::Backend("db down".into()),
        ];
        for error in errors {
            let before = error.to_string();
            let json = serde_json::to_string(&ErrorBody {
                error: error.into(),
            })
            .expect("serializable");
            let body: ErrorBody = serde_json::from_str(&json).expect("deserializable");
            let after = crate::remote::store_error(body.error, "http://brain").to_string();
            assert_eq!(after, before, "{json}");
        }
    }

    fn request_with(header: Option<&str>) -> Request {
        let mut builder = Request::builder().uri("/");
        if let Some(value) = header {
            builder = builder.header(AUTHORIZATION, value);
        }
        builder.body(Body::empty()).expect("a valid request")
    }

    #[test]
    fn the_secret_is_accepted_as_bearer_or_basic_password_only() {
        let expected: [u8; 32] = Sha256::digest(b"s3cret").into();
        let basic = |pair: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            )
        };
        assert!(presents_secret(
            &request_with(Some("Bearer s3cret")),
            &expected
        ));
        assert!(presents_secret(
            &request_with(Some(&basic("cell:s3cret"))),
            &expected
        ));
        // Regression: scheme names are case-insensitive (RFC 7235).
        let lower = basic("cell:s3cret").replacen("Basic", "basic", 1);
        assert!(presents_secret(&request_with(Some(&lower)), &expected));
        assert!(presents_secret(
            &request_with(Some("bearer s3cret")),
            &expected
        ));
        for wrong in [
            None,
            Some("Bearer s3cre"),
            Some("Bearer s3cret2"),
            Some("Bearer "),
            Some("s3cret"),
            Some(basic("s3cret").as_str()),
            Some(basic("s3cret:x").as_str()),
            Some("Basic !!!"),
        ] {
            assert!(
                !presents_secret(&request_with(wrong), &expected),
                "{wrong:?}"
            );
        }
    }

    #[tokio::test]
    async fn the_hub_numbers_events_and_resumes_within_its_buffer() {
        let (tx, rx) = broadcast::channel(16);
        let hub = FeedHub::new(rx);
        let event = |guid: &str| Event::TaskCreated {
            task: crate::suite::task(guid, "d", 1),
        };
        tx.send(event("a")).expect("the hub subscribes");
        tx.send(event("b")).expect("the hub subscribes");
        let position = hub.pump();
        assert_eq!(position.seq, 2);

        // Resuming after event 1 replays event 2 only.
        let (hello, replay, _live) = hub.attach(&FeedQuery {
            hub: Some(position.hub.clone()),
            after: Some(1),
        });
        match serde_json::from_slice::<FeedLine>(&hello).expect("a feed line") {
            FeedLine::Hello { seq, resumed, .. } => {
                assert_eq!(seq, 1);
                assert!(resumed);
            }
            other => panic!("expected a hello, got {other:?}"),
        }
        assert_eq!(replay.len(), 1);
        match serde_json::from_slice::<FeedLine>(&replay[0]).expect("a feed line") {
            FeedLine::Event { seq, event: e } => {
                assert_eq!(seq, 2);
                assert_eq!(e, event("b"));
            }
            other => panic!("expected an event, got {other:?}"),
        }

        // Another hub's position, or none, starts at the present.
        for query in [
            FeedQuery {
                hub: Some("other".into()),
                after: Some(1),
            },
            FeedQuery::default(),
        ] {
            let (hello, replay, _live) = hub.attach(&query);
            match serde_json::from_slice::<FeedLine>(&hello).expect("a feed line") {
                FeedLine::Hello { seq, resumed, .. } => {
                    assert_eq!(seq, 2);
                    assert!(!resumed);
                }
                other => panic!("expected a hello, got {other:?}"),
            }
            assert!(replay.is_empty());
        }
    }

    #[tokio::test]
    async fn a_hub_that_falls_behind_takes_a_new_id_and_ends_its_streams() {
        let (tx, rx) = broadcast::channel(2);
        let hub = FeedHub::new(rx);
        let before = hub.pump();
        let (_, _, mut live) = hub.attach(&FeedQuery::default());
        for guid in ["a", "b", "c", "d"] {
            tx.send(Event::TaskCreated {
                task: crate::suite::task(guid, "d", 1),
            })
            .expect("the hub subscribes");
        }
        let after = hub.pump();
        assert_ne!(after.hub, before.hub, "a new id after the hole");
        assert!(matches!(live.recv().await, Err(RecvError::Closed)));
        let (hello, _, _) = hub.attach(&FeedQuery {
            hub: Some(before.hub),
            after: Some(before.seq),
        });
        match serde_json::from_slice::<FeedLine>(&hello).expect("a feed line") {
            FeedLine::Hello { resumed, .. } => assert!(!resumed, "no resuming across a hole"),
            other => panic!("expected a hello, got {other:?}"),
        }
    }
}
