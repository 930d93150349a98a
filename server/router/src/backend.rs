//! The router's connections to backends.
//!
//! An exchange runs inside the task of the client's connection: the request
//! is written, the answer read and its body streamed by the same task that
//! parsed the client's request, with no connection task or channel between
//! them. Many small apps answer `Connection: close`, so every request is a
//! fresh backend connection; a general-purpose client hands each one to a
//! task of its own, which adds a spawn, a channel and a wake-up per request
//! (8% of the routed rate in the routing bench, docs/performance.md).
//!
//! # Guarantees
//! - A connection is kept for reuse only when its answer allowed it
//!   (HTTP/1.1 without `Connection: close`), the whole answer was read, and
//!   it has not closed since; it is dropped after
//!   [`Backends::idle_timeout`] unused.
//! - At most `max_idle_per_backend` idle connections are kept per address.
//! - A kept connection that turns out closed when taken is skipped; a
//!   request that a reused connection never started to send is sent again on
//!   a new connection (the backend cannot have seen it).

use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::header::{self, HeaderMap};
use hyper::{Request, Response, Version};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::body::RequestBody;

/// A backend connection, as the future that drives it. Built with upgrades
/// on, so a `101` hands its socket over however it is polled.
type Connection = Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>;

/// Why an exchange with a backend failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ExchangeError {
    /// No connection: nothing of the request was sent.
    #[error("cannot connect to {address}: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    #[error("no connection to {address} within {timeout:?}")]
    ConnectTimeout { address: String, timeout: Duration },
    /// Connected, but the exchange failed before a whole answer head came.
    #[error(transparent)]
    Exchange(#[from] hyper::Error),
}

impl ExchangeError {
    /// Whether the backend never got a connection, so never saw a byte.
    pub fn is_connect(&self) -> bool {
        matches!(self, Self::Connect { .. } | Self::ConnectTimeout { .. })
    }
}

/// Idle keep-alive connections per backend address, and the settings of new
/// ones.
pub(crate) struct Backends {
    idle: Mutex<HashMap<String, Vec<Idle>>>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle_per_backend: usize,
}

/// A kept connection. Nothing polls it while it waits: whoever takes it
/// finds out whether the backend closed it meanwhile.
struct Idle {
    sender: http1::SendRequest<RequestBody>,
    connection: Connection,
    since: Instant,
}

/// The connection an answer is being read from. The answer's body polls it;
/// when the body is done it goes back to the pool if it may be reused.
pub(crate) struct Live {
    address: String,
    sender: http1::SendRequest<RequestBody>,
    /// `None` once it ended (or was handed to an upgrade).
    connection: Option<Connection>,
    reusable: bool,
}

impl Backends {
    pub fn new(
        connect_timeout: Duration,
        idle_timeout: Duration,
        max_idle_per_backend: usize,
    ) -> Self {
        Self {
            idle: Mutex::new(HashMap::new()),
            connect_timeout,
            idle_timeout,
            max_idle_per_backend,
        }
    }

    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// Sends `request()` to `address` and reads the answer's head. The
    /// returned [`Live`] connection must be polled (by
    /// [`Live::poll_connection`]) while the answer's body is read.
    ///
    /// `request` is called again only when a reused connection turned out
    /// closed before sending anything.
    pub async fn exchange(
        &self,
        address: &str,
        mut request: impl FnMut() -> Request<RequestBody>,
    ) -> Result<(Response<Incoming>, Live), ExchangeError> {
        while let Some((mut sender, connection)) = self.take_idle(address).await {
            let (answer, connection) = sender
                .try_send_request(request())
                .await_with(connection)
                .await;
            match answer {
                Ok(response) => return Ok(live(address, sender, connection, response)),
                // Not sent at all: the backend closed the kept connection.
                Err(error) if error.message().is_some() => continue,
                Err(error) => return Err(error.into_error().into()),
            }
        }
        let (mut sender, connection) = self.connect(address).await?;
        let (answer, connection) = sender.send_request(request()).await_with(connection).await;
        Ok(live(address, sender, connection, answer?))
    }

    async fn connect(
        &self,
        address: &str,
    ) -> Result<(http1::SendRequest<RequestBody>, Connection), ExchangeError> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(address))
            .await
            .map_err(|_| ExchangeError::ConnectTimeout {
                address: address.to_string(),
                timeout: self.connect_timeout,
            })?
            .map_err(|source| ExchangeError::Connect {
                address: address.to_string(),
                source,
            })?;
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(backend = %address, error = %e, "cannot set TCP_NODELAY on a backend connection");
        }
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        Ok((sender, Box::pin(connection.with_upgrades())))
    }

    /// The most recently kept connection to `address` that is still open
    /// and ready for a request.
    async fn take_idle(
        &self,
        address: &str,
    ) -> Option<(http1::SendRequest<RequestBody>, Connection)> {
        loop {
            let idle = {
                let mut pool = lock(&self.idle);
                let kept = pool.get_mut(address)?;
                let idle = kept.pop();
                if kept.is_empty() {
                    pool.remove(address);
                }
                idle?
            };
            if idle.since.elapsed() >= self.idle_timeout {
                continue;
            }
            let Idle {
                mut sender,
                mut connection,
                ..
            } = idle;
            // Polling the connection lets it notice a close (and finish the
            // last exchange); it must then be ready at once, or it is dropped.
            let ready = poll_fn(|cx| {
                if connection.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(false);
                }
                Poll::Ready(matches!(sender.poll_ready(cx), Poll::Ready(Ok(()))))
            })
            .await;
            if ready {
                return Some((sender, connection));
            }
        }
    }

    fn keep(&self, live: Live) {
        let Live {
            address,
            sender,
            connection: Some(connection),
            reusable: true,
        } = live
        else {
            return;
        };
        let mut pool = lock(&self.idle);
        let kept = pool.entry(address).or_default();
        if kept.len() < self.max_idle_per_backend {
            kept.push(Idle {
                sender,
                connection,
                since: Instant::now(),
            });
        }
    }

    /// Drops connections idle for longer than the idle timeout.
    pub fn prune(&self) {
        let mut pool = lock(&self.idle);
        pool.retain(|_, kept| {
            kept.retain(|idle| idle.since.elapsed() < self.idle_timeout);
            !kept.is_empty()
        });
    }

    /// Closes every kept connection.
    pub fn clear(&self) {
        lock(&self.idle).clear();
    }
}

impl Live {
    /// Drives the connection, so the answer's body arrives. Once it ended
    /// the connection is not reused.
    pub fn poll_connection(&mut self, cx: &mut Context<'_>) {
        if let Some(connection) = &mut self.connection {
            if let Poll::Ready(result) = connection.as_mut().poll(cx) {
                if let Err(e) = result {
                    tracing::debug!(backend = %self.address, error = %e, "backend connection ended with an error");
                }
                self.connection = None;
            }
        }
    }

    /// Gives the connection to an upgrade: it runs in a task of its own
    /// until it hands its socket over.
    pub fn spawn_for_upgrade(mut self) {
        if let Some(connection) = self.connection.take() {
            let address = std::mem::take(&mut self.address);
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(backend = %address, error = %e, "backend connection failed before its upgrade");
                }
            });
        }
    }

    /// Called once the answer's body was read to its end: back to the pool
    /// if it may be reused.
    pub fn finish(self, backends: &Backends) {
        backends.keep(self);
    }
}

fn live(
    address: &str,
    sender: http1::SendRequest<RequestBody>,
    connection: Option<Connection>,
    response: Response<Incoming>,
) -> (Response<Incoming>, Live) {
    let reusable = response.version() == Version::HTTP_11
        && !asks_to_close(response.headers())
        && response.status() != hyper::StatusCode::SWITCHING_PROTOCOLS;
    let live = Live {
        address: address.to_string(),
        sender,
        connection,
        reusable,
    };
    (response, live)
}

fn asks_to_close(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("close"))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Awaits a request's answer while driving its connection in the same task.
trait AwaitWith: Future + Sized {
    fn await_with(self, connection: Connection) -> AwaitingAnswer<Self> {
        AwaitingAnswer {
            answer: Box::pin(self),
            connection: Some(connection),
        }
    }
}

impl<F: Future> AwaitWith for F {}

struct AwaitingAnswer<F> {
    answer: Pin<Box<F>>,
    /// `None` once it ended.
    connection: Option<Connection>,
}

impl<F: Future> Future for AwaitingAnswer<F> {
    /// The answer, and the connection unless it has ended.
    type Output = (F::Output, Option<Connection>);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        // The connection first: it writes the request and reads the answer
        // that the answer future then picks up.
        if let Some(connection) = &mut this.connection {
            if let Poll::Ready(result) = connection.as_mut().poll(cx) {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "backend connection ended before its answer");
                }
                // Dropping it fails a request it never took, so the answer
                // future always resolves.
                this.connection = None;
            }
        }
        let answer = std::task::ready!(this.answer.as_mut().poll(cx));
        Poll::Ready((answer, this.connection.take()))
    }
}
