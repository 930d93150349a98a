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
//! - After a whole answer on a connection that may not be reused, the
//!   router closes only once the backend has (or after
//!   [`BACKEND_CLOSE_WAIT`]): the side that closes first keeps its port in
//!   TIME_WAIT for a minute, and a router closing first would run out of
//!   ports to a busy `Connection: close` app at about 470 requests/s
//!   (28,000 ephemeral ports / 60 s) unless `net.ipv4.tcp_tw_reuse` is 1.

use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::header::{self, HeaderMap};
use hyper::{Request, Response, Version};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::body::RequestBody;

/// A backend connection, as the future that drives it. Built with upgrades
/// on, so a `101` hands its socket over however it is polled.
type Connection = Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>;

/// How long the router waits for a backend to close a connection it said it
/// would close (`Connection: close`, HTTP/1.0) before closing it itself.
pub(crate) const BACKEND_CLOSE_WAIT: Duration = Duration::from_secs(1);

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
    ending: Ending,
    since: Instant,
}

/// The connection an answer is being read from. The answer's body polls it;
/// when the body is done it goes back to the pool if it may be reused.
pub(crate) struct Live {
    address: String,
    sender: http1::SendRequest<RequestBody>,
    /// `None` once it ended (or was handed to an upgrade).
    connection: Option<Connection>,
    ending: Ending,
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
        while let Some((mut sender, connection, ending)) = self.take_idle(address).await {
            let (answer, connection) = sender
                .try_send_request(request())
                .await_with(connection)
                .await;
            match answer {
                Ok(response) => return Ok(live(address, sender, connection, ending, response)),
                // Not sent at all: the backend closed the kept connection.
                Err(error) if error.message().is_some() => continue,
                Err(error) => return Err(error.into_error().into()),
            }
        }
        let (mut sender, connection, ending) = self.connect(address).await?;
        let (answer, connection) = sender.send_request(request()).await_with(connection).await;
        Ok(live(address, sender, connection, ending, answer?))
    }

    async fn connect(
        &self,
        address: &str,
    ) -> Result<(http1::SendRequest<RequestBody>, Connection, Ending), ExchangeError> {
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
        let ending = Ending::default();
        let stream = BackendStream {
            stream: Some(stream),
            ending: ending.clone(),
        };
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        Ok((sender, Box::pin(connection.with_upgrades()), ending))
    }

    /// The most recently kept connection to `address` that is still open
    /// and ready for a request.
    async fn take_idle(
        &self,
        address: &str,
    ) -> Option<(http1::SendRequest<RequestBody>, Connection, Ending)> {
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
                ending,
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
                return Some((sender, connection, ending));
            }
        }
    }

    fn keep(&self, live: Live) {
        let Live {
            address,
            sender,
            connection: Some(connection),
            ending,
            reusable: true,
        } = live
        else {
            // The whole answer was read and the backend is to close: let it.
            live.ending.set(Ending::ANSWERED);
            return;
        };
        let mut pool = lock(&self.idle);
        let kept = pool.entry(address).or_default();
        if kept.len() < self.max_idle_per_backend {
            kept.push(Idle {
                sender,
                connection,
                ending,
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
        self.ending.set(Ending::TUNNEL);
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
    ending: Ending,
    response: Response<Incoming>,
) -> (Response<Incoming>, Live) {
    let reusable = response.version() == Version::HTTP_11
        && !asks_to_close(response.headers())
        && response.status() != hyper::StatusCode::SWITCHING_PROTOCOLS;
    let live = Live {
        address: address.to_string(),
        sender,
        connection,
        ending,
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

/// What the exchanges on a backend socket have come to, shared by the socket
/// (inside hyper's connection) and the router's handle on it.
#[derive(Clone)]
struct Ending(Arc<AtomicU8>);

impl Default for Ending {
    fn default() -> Self {
        Self(Arc::new(AtomicU8::new(Self::OPEN)))
    }
}

impl Ending {
    /// Exchanging, or kept idle: dropped, the socket closes at once.
    const OPEN: u8 = 0;
    /// A whole answer came and the connection is not to be reused: the
    /// backend closes it, and the router after it.
    const ANSWERED: u8 = 1;
    /// Handed to an upgrade: a plain byte stream, whose shutdown is the
    /// half-close the peers asked for.
    const TUNNEL: u8 = 2;

    fn set(&self, state: u8) {
        self.0.store(state, Ordering::Relaxed);
    }

    fn get(&self) -> u8 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A backend socket that never closes first after a finished exchange.
struct BackendStream {
    /// `None` only while it is dropped.
    stream: Option<TcpStream>,
    ending: Ending,
}

impl BackendStream {
    fn stream(&mut self) -> Pin<&mut TcpStream> {
        Pin::new(
            self.stream
                .as_mut()
                .expect("a backend socket is taken only on drop"),
        )
    }
}

impl AsyncRead for BackendStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.stream().poll_read(cx, buf)
    }
}

impl AsyncWrite for BackendStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.stream().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.stream().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream
            .as_ref()
            .is_some_and(TcpStream::is_write_vectored)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream().poll_flush(cx)
    }

    /// hyper shuts an HTTP/1 connection down only once its last exchange is
    /// complete and it may not be reused; sending the FIN then would make
    /// the router the side that closes first. A tunnel's shutdown is real.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.ending.get() == Ending::TUNNEL {
            return self.stream().poll_shutdown(cx);
        }
        self.ending.set(Ending::ANSWERED);
        Poll::Ready(Ok(()))
    }
}

impl Drop for BackendStream {
    fn drop(&mut self) {
        let Some(stream) = self.stream.take() else {
            return;
        };
        if self.ending.get() != Ending::ANSWERED {
            return;
        }
        // Usually the backend's FIN came with its answer: closing now is
        // closing second.
        match stream.try_read(&mut [0u8; 1]) {
            Ok(0) => return,
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => return,
            _ => {}
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(close_after_backend(stream));
        }
    }
}

/// Waits (at most [`BACKEND_CLOSE_WAIT`]) for the backend to close, reading
/// and dropping anything it still sends, then closes.
async fn close_after_backend(stream: TcpStream) {
    let mut discard = [0u8; 512];
    let closed = async {
        loop {
            if stream.readable().await.is_err() {
                return;
            }
            match stream.try_read(&mut discard) {
                Ok(0) => return,
                Err(e) if e.kind() != io::ErrorKind::WouldBlock => return,
                _ => {}
            }
        }
    };
    let _ = tokio::time::timeout(BACKEND_CLOSE_WAIT, closed).await;
}
