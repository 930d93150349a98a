//! The two body wrappers of the HTTP router.
//!
//! - [`BodySlot`] / [`RequestBody`]: the client's request body, streamed to
//!   the backend, and still in hand after a failed connect so the request can
//!   go to the next backend. Nothing is buffered.
//! - [`ResponseBody`]: the backend's answer (or a short local one) streamed to
//!   the client, counting bytes and writing the access line when it ends.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::Instant;

use crate::access_log::{AccessLog, AccessRecord};
use crate::backend::{Backends, Live};

/// Holds the client's request body until the first backend connection reads
/// from it.
///
/// # Guarantees
/// While [`BodySlot::untouched`] is true, not one byte of the body has been
/// read, so the request can be sent again, whole, to another backend.
pub(crate) struct BodySlot {
    body: Arc<Mutex<Option<Incoming>>>,
    end_stream: bool,
    size_hint: SizeHint,
}

impl BodySlot {
    pub fn new(body: Incoming) -> Self {
        Self {
            end_stream: body.is_end_stream(),
            size_hint: body.size_hint(),
            body: Arc::new(Mutex::new(Some(body))),
        }
    }

    /// A body to send to one backend; it takes the real body from the slot
    /// on its first poll.
    pub fn body(&self) -> RequestBody {
        RequestBody {
            slot: self.body.clone(),
            inner: None,
            end_stream: self.end_stream,
            size_hint: self.size_hint,
        }
    }

    /// Whether no attempt has started reading the body.
    pub fn untouched(&self) -> bool {
        lock(&self.body).is_some()
    }
}

/// A poisoned lock only means another request task panicked while holding
/// it; the `Option` inside is still meaningful.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The request body as one backend attempt sees it.
pub(crate) struct RequestBody {
    slot: Arc<Mutex<Option<Incoming>>>,
    inner: Option<Incoming>,
    /// Hints of the body as it was before anyone read it; hyper uses them to
    /// choose between no body, `Content-Length` and chunked encoding, so
    /// they must be those of the client's body.
    end_stream: bool,
    size_hint: SizeHint,
}

/// A second attempt found the body already taken by the first. The proxy
/// retries only untouched bodies, so this means a bug, not a client error.
#[derive(Debug, thiserror::Error)]
#[error("the request body was already sent to another backend")]
pub(crate) struct BodyAlreadyTaken;

impl Body for RequestBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.inner.is_none() {
            match lock(&this.slot).take() {
                Some(body) => this.inner = Some(body),
                None => return Poll::Ready(Some(Err(BodyAlreadyTaken.into()))),
            }
        }
        match this.inner.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            // Filled just above, or on an earlier poll.
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner
            .as_ref()
            .map_or(self.end_stream, Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.as_ref().map_or(self.size_hint, Body::size_hint)
    }
}

/// Writes the access line when the response ends (completely, or because
/// the client went away): exactly once per request.
pub(crate) struct PendingLog {
    pub record: AccessRecord,
    pub clock: Instant,
    pub sink: Arc<dyn AccessLog>,
}

impl PendingLog {
    fn emit(self, bytes_sent: u64) {
        let elapsed = self.clock.elapsed();
        // Counted when the answer is done, as the access line is: the
        // latency is the whole exchange, body included.
        metrics::counter!("lattice_router_requests_total", "status" => self.record.status.to_string())
            .increment(1);
        metrics::histogram!("lattice_router_request_duration_seconds")
            .record(elapsed.as_secs_f64());
        let line = self.record.line(bytes_sent, elapsed);
        match &self.record.log_guid {
            Some(log_guid) => self.sink.log(log_guid, line),
            // No app to charge it to (unknown route, missing Host).
            None => tracing::debug!(target: "lattice_router::access", "{line}"),
        }
    }
}

enum Content {
    /// The backend's body, and the connection it arrives on: polling the
    /// body drives the connection.
    Backend {
        body: Incoming,
        live: Option<Live>,
        backends: Arc<Backends>,
        /// The body gave its last frame.
        ended: bool,
    },
    Local(Option<Bytes>),
}

/// The body of the router's answer.
pub(crate) struct ResponseBody {
    content: Content,
    sent: u64,
    log: Option<PendingLog>,
}

impl ResponseBody {
    pub fn backend(body: Incoming, live: Live, backends: Arc<Backends>, log: PendingLog) -> Self {
        Self {
            content: Content::Backend {
                body,
                live: Some(live),
                backends,
                ended: false,
            },
            sent: 0,
            log: Some(log),
        }
    }

    pub fn local(text: impl Into<Bytes>, log: PendingLog) -> Self {
        let text: Bytes = text.into();
        Self {
            content: Content::Local((!text.is_empty()).then_some(text)),
            sent: 0,
            log: Some(log),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if let Content::Backend {
            body,
            live,
            backends,
            ended,
        } = &mut self.content
        {
            // Read to its end: the connection may serve another request.
            // Otherwise dropping it closes it, mid-answer.
            if let (true, Some(live)) = (*ended || body.is_end_stream(), live.take()) {
                live.finish(backends);
            }
        }
        if let Some(log) = self.log.take() {
            log.emit(self.sent);
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let frame = match &mut this.content {
            Content::Backend {
                body, live, ended, ..
            } => {
                if let Some(live) = live {
                    live.poll_connection(cx);
                }
                let frame = std::task::ready!(Pin::new(body).poll_frame(cx));
                *ended |= frame.is_none();
                frame
            }
            Content::Local(text) => text.take().map(|text| Ok(Frame::data(text))),
        };
        if let Some(data) = frame.as_ref().and_then(|f| f.as_ref().ok()?.data_ref()) {
            this.sent += data.len() as u64;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        match &self.content {
            Content::Backend { body, .. } => body.is_end_stream(),
            Content::Local(text) => text.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.content {
            Content::Backend { body, .. } => body.size_hint(),
            Content::Local(text) => {
                SizeHint::with_exact(text.as_ref().map_or(0, |t| t.len() as u64))
            }
        }
    }
}
