//! The HTTP router: an HTTP/1.1 reverse proxy that picks the backend by the
//! request's `Host` and balances round-robin over the route's instances.
//!
//! # Guarantees
//! - A request is sent to a second backend only if connecting to the first
//!   failed before a single byte of the request was read from the client
//!   (the `body` module keeps it in hand until then), or, once per request,
//!   if it is idempotent (RFC 9110 9.2.2: `GET`, `HEAD`, `OPTIONS`, `TRACE`,
//!   `PUT`, `DELETE`), no byte of its body was read, and the backend's
//!   connection failed before any byte of an answer (the engine's port proxy
//!   of an instance that just died accepts, then resets). Anything else that
//!   fails is a `502`.
//! - Request and response bodies are streamed; memory per request does not
//!   grow with body size.
//! - Exactly one access line per request, written when its response ends.
//! - On shutdown: stop accepting, let requests (and upgraded connections) in
//!   flight finish for up to [`HttpRouterConfig::drain_timeout`], then close
//!   what is left and warn.
//!
//! # Answers of its own
//! `400 missing host header`, `404 unknown route: HOST`, `502` when no
//! backend of the route accepted the connection or the exchange failed.
//!
//! # Caveats
//! - No timeout on a backend's answer once connected: long polls and slow
//!   downloads are the app's business. Idle client connections close after
//!   [`HttpRouterConfig::header_read_timeout`].
//! - An existing `X-Forwarded-Proto` is kept (a load balancer in front may
//!   have terminated TLS); it is only set to `http` when absent.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpSocket};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access_log::{AccessLog, AccessRecord};
use crate::backend::{Backends, Live};
use crate::body::{BodySlot, PendingLog, ResponseBody};
use crate::emitter::error_chain;
use crate::table::{RoutingTable, TableHandle};

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_REQUEST_START: HeaderName = HeaderName::from_static("x-request-start");
pub const X_VCAP_REQUEST_ID: HeaderName = HeaderName::from_static("x-vcap-request-id");

/// Headers that describe one connection, not the message (RFC 9110 7.6.1,
/// plus the pre-standard ones Go's reverse proxy also drops). They are never
/// forwarded; an upgrade sets its own `Connection`/`Upgrade` again.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Tuning of the HTTP router.
#[derive(Debug, Clone)]
pub struct HttpRouterConfig {
    /// How long a client may take to send a request's headers. hyper starts
    /// this timer whenever a connection waits for its next request, so it is
    /// also the idle timeout of keep-alive connections.
    pub header_read_timeout: Duration,
    /// How long in-flight requests may take to finish after shutdown.
    pub drain_timeout: Duration,
    /// How long to wait for a backend's TCP connection before trying the
    /// next one.
    pub connect_timeout: Duration,
    /// How long an idle pooled backend connection is kept for reuse.
    pub backend_idle_timeout: Duration,
    /// Idle pooled connections kept per backend address.
    pub max_idle_per_backend: usize,
}

impl Default for HttpRouterConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            backend_idle_timeout: Duration::from_secs(90),
            max_idle_per_backend: 64,
        }
    }
}

/// The HTTP reverse proxy. Build with [`HttpRouter::new`], run with
/// [`HttpRouter::serve`].
pub struct HttpRouter {
    proxy: Arc<Proxy>,
    config: HttpRouterConfig,
}

struct Proxy {
    table: TableHandle,
    round_robin: RoundRobin,
    /// Connects to backends and keeps their keep-alive connections.
    backends: Arc<Backends>,
    access_log: Arc<dyn AccessLog>,
    /// Every client connection and every upgraded tunnel, so shutdown can
    /// wait for them.
    tasks: TaskTracker,
    /// Fired when the drain timeout ran out: whatever is left closes.
    hard_stop: CancellationToken,
}

impl HttpRouter {
    pub fn new(
        table: TableHandle,
        access_log: Arc<dyn AccessLog>,
        config: HttpRouterConfig,
    ) -> Self {
        let backends = Backends::new(
            config.connect_timeout,
            config.backend_idle_timeout,
            config.max_idle_per_backend,
        );
        let proxy = Proxy {
            table,
            round_robin: RoundRobin::default(),
            backends: Arc::new(backends),
            access_log,
            tasks: TaskTracker::new(),
            hard_stop: CancellationToken::new(),
        };
        Self {
            proxy: Arc::new(proxy),
            config,
        }
    }

    /// Serves on `listener` until `shutdown` fires, then drains (see the
    /// module's guarantees) and returns.
    ///
    /// # Errors
    /// Only if the listener's address cannot be read; failures to accept a
    /// connection are logged and the loop goes on.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let address = listener.local_addr()?;
        tracing::info!(%address, "http router listening");
        let pruner = tokio::spawn({
            let backends = self.proxy.backends.clone();
            let shutdown = shutdown.clone();
            async move {
                // `interval` refuses a zero period.
                let period = (backends.idle_timeout() / 2).max(Duration::from_millis(100));
                let mut every = tokio::time::interval(period);
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = every.tick() => backends.prune(),
                    }
                }
            }
        });
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.config.header_read_timeout)
            .keep_alive(true);

        loop {
            let (stream, client) = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Usually out of file descriptors: pause instead of
                        // spinning, as connections close the fds come back.
                        tracing::warn!(error = %e, "http router cannot accept a connection");
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
                        }
                    }
                },
            };
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY on a client connection");
            }
            let proxy = self.proxy.clone();
            let builder = builder.clone();
            let shutdown = shutdown.clone();
            self.proxy.tasks.spawn(async move {
                let hard_stop = proxy.hard_stop.clone();
                let service = service_fn(move |request| {
                    let proxy = proxy.clone();
                    async move { Ok::<_, Infallible>(proxy.handle(request, client).await) }
                });
                let mut connection =
                    pin!(builder.serve_connection(TokioIo::new(stream), service).with_upgrades());
                let result = tokio::select! {
                    result = connection.as_mut() => result,
                    _ = shutdown.cancelled() => {
                        // Finish the request in flight, then close.
                        connection.as_mut().graceful_shutdown();
                        tokio::select! {
                            result = connection.as_mut() => result,
                            _ = hard_stop.cancelled() => return,
                        }
                    }
                };
                if let Err(e) = result {
                    // Clients that time out, reset or send garbage: normal
                    // traffic for a router, not worth more than debug.
                    tracing::debug!(%client, error = %error_chain(&e), "client connection ended with an error");
                }
            });
        }

        drop(listener);
        self.drain().await;
        let _ = pruner.await;
        self.proxy.backends.clear();
        tracing::info!(%address, "http router stopped");
        Ok(())
    }

    /// Serves on `shards` threads, each with a single-threaded runtime and
    /// a listener of its own on `listener`'s address, until `shutdown`
    /// fires; then each drains as [`HttpRouter::serve`] does.
    ///
    /// `listener` must come from [`bind_shared`]: the kernel spreads new
    /// connections over the shards' listeners, and a connection stays on
    /// its shard from accept to close, so no request wakes another thread.
    /// Against one multi-threaded runtime this served 33% more requests
    /// with a keep-alive backend and 6% more with a new backend connection
    /// per request (docs/performance.md).
    ///
    /// # Errors
    /// If a shard's listener cannot be bound or a shard cannot start.
    pub async fn serve_sharded(
        table: TableHandle,
        access_log: Arc<dyn AccessLog>,
        config: HttpRouterConfig,
        listener: TcpListener,
        shards: usize,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let address = listener.local_addr()?;
        let mut listeners = vec![listener.into_std()?];
        for _ in 1..shards.max(1) {
            listeners.push(bind_reusing_port(address)?.into_std()?);
        }
        let mut ended = Vec::new();
        for (shard, listener) in listeners.into_iter().enumerate() {
            let router = HttpRouter::new(table.clone(), access_log.clone(), config.clone());
            let shutdown = shutdown.clone();
            let (done, finished) = tokio::sync::oneshot::channel();
            // Sockets and timers only: with `enable_all`, every park of the
            // shard also reaped orphaned child processes it never has.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .build()?;
            std::thread::Builder::new()
                .name(format!("http-router-{shard}"))
                .spawn(move || {
                    let result = runtime.block_on(async move {
                        router
                            .serve(TcpListener::from_std(listener)?, shutdown)
                            .await
                    });
                    // The caller may have stopped waiting.
                    let _ = done.send(result);
                })?;
            ended.push(finished);
        }
        for finished in ended {
            match finished.await {
                Ok(result) => result?,
                Err(_) => return Err(std::io::Error::other("an http router shard panicked")),
            }
        }
        Ok(())
    }

    async fn drain(&self) {
        let tasks = &self.proxy.tasks;
        tasks.close();
        if tokio::time::timeout(self.config.drain_timeout, tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                open = tasks.len(),
                drain_timeout_ms = self.config.drain_timeout.as_millis() as u64,
                "http router drain timed out; closing the remaining connections"
            );
            self.proxy.hard_stop.cancel();
            tasks.wait().await;
        }
    }
}

impl Proxy {
    async fn handle(
        self: Arc<Self>,
        mut request: Request<Incoming>,
        client: SocketAddr,
    ) -> Response<ResponseBody> {
        let clock = Instant::now();
        let started = SystemTime::now();
        let host = request_host(&request);
        let request_id = request
            .headers()
            .get(&X_VCAP_REQUEST_ID)
            .filter(|v| !v.is_empty())
            .cloned()
            .unwrap_or_else(|| {
                HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
                    .expect("a uuid is a valid header value")
            });
        let forwarded_for = forwarded_for(request.headers(), client.ip());
        let mut record = AccessRecord {
            started,
            client,
            method: request.method().to_string(),
            host: host.clone().unwrap_or_else(|| "-".to_string()),
            path: request
                .uri()
                .path_and_query()
                .map_or_else(|| "/".to_string(), |p| p.to_string()),
            version: version_name(request.version()),
            referer: header_text(request.headers(), &header::REFERER),
            user_agent: header_text(request.headers(), &header::USER_AGENT),
            forwarded_for: forwarded_for.to_str().unwrap_or_default().to_string(),
            request_id: request_id.to_str().unwrap_or_default().to_string(),
            backend: "-".to_string(),
            log_guid: None,
            index: None,
            status: 0,
        };

        let Some(host) = host else {
            return self.answer(
                StatusCode::BAD_REQUEST,
                "missing host header\n".into(),
                record,
                clock,
            );
        };
        let table = self.table.current();
        let Some((route, endpoints)) = table.http_route(&host) else {
            return self.answer(
                StatusCode::NOT_FOUND,
                format!("unknown route: {host}\n"),
                record,
                clock,
            );
        };

        // Taken before the request is split: hyper hands the client's
        // connection over through this once our 101 answer is written.
        let client_upgrade = upgrade_protocol(request.headers())
            .map(|protocol| (protocol, hyper::upgrade::on(&mut request)));
        let (parts, body) = request.into_parts();
        let mut headers = forward_headers(&parts.headers);
        headers.insert(X_FORWARDED_FOR, forwarded_for);
        if !headers.contains_key(&X_FORWARDED_PROTO) {
            headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        }
        headers.insert(X_REQUEST_START, HeaderValue::from(unix_millis(started)));
        headers.insert(X_VCAP_REQUEST_ID, request_id);
        if let Some((protocol, _)) = &client_upgrade {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, protocol.clone());
        }
        // Backends get the origin form; the client's `Host` (or the
        // authority of an absolute-form target) says which app it meant.
        if !headers.contains_key(header::HOST) {
            if let Some(authority) = parts.uri.authority() {
                if let Ok(value) = HeaderValue::from_str(authority.as_str()) {
                    headers.insert(header::HOST, value);
                }
            }
        }
        let path = origin_form(&parts.uri);
        let body = BodySlot::new(body);

        let first = self.round_robin.next(route, &table);
        // Whether the one retry after a failed exchange was spent.
        let mut retried = false;
        for attempt in 0..endpoints.len() {
            let endpoint = &endpoints[(first + attempt) % endpoints.len()];
            record.log_guid = Some(endpoint.log_guid.clone());
            record.index = Some(endpoint.index);
            // The container's own address first when it has one; its host
            // address only if that connection fails.
            let addresses = std::iter::once(&endpoint.address).chain(&endpoint.fallback);
            for (position, address) in addresses.enumerate() {
                let has_fallback = position == 0 && endpoint.fallback.is_some();
                record.backend = address.clone();
                let request = || {
                    let mut outgoing = Request::new(body.body());
                    *outgoing.method_mut() = parts.method.clone();
                    *outgoing.uri_mut() = path.clone();
                    *outgoing.version_mut() = Version::HTTP_11;
                    *outgoing.headers_mut() = headers.clone();
                    outgoing
                };
                // Set only when the container address refused the connection.
                let mut try_host_address = false;
                match self.backends.exchange(address, request).await {
                    Ok((response, live)) => {
                        return self.proxied(
                            response,
                            live,
                            client_upgrade.map(|(_, on)| on),
                            record,
                            clock,
                        );
                    }
                    Err(e) if e.is_connect() && body.untouched() && has_fallback => {
                        tracing::debug!(
                            backend = %address,
                            process_guid = %endpoint.process_guid,
                            index = endpoint.index,
                            error = %error_chain(&e),
                            "instance refused the connection at its container address; trying its host address"
                        );
                        try_host_address = true;
                    }
                    Err(e) if e.is_connect() && body.untouched() => {
                        tracing::debug!(
                            backend = %address,
                            process_guid = %endpoint.process_guid,
                            index = endpoint.index,
                            error = %error_chain(&e),
                            "backend refused the connection; trying the next"
                        );
                    }
                    Err(e)
                        if !retried
                            && attempt + 1 < endpoints.len()
                            && body.untouched()
                            && client_upgrade.is_none()
                            && is_idempotent(&parts.method) =>
                    {
                        retried = true;
                        tracing::debug!(
                            backend = %address,
                            process_guid = %endpoint.process_guid,
                            index = endpoint.index,
                            error = %error_chain(&e),
                            "backend failed before answering; retrying the idempotent request on the next"
                        );
                    }
                    Err(e) => {
                        tracing::warn!(
                            backend = %address,
                            process_guid = %endpoint.process_guid,
                            index = endpoint.index,
                            error = %error_chain(&e),
                            "proxied request failed"
                        );
                        return self.answer(
                            StatusCode::BAD_GATEWAY,
                            "bad gateway\n".into(),
                            record,
                            clock,
                        );
                    }
                }
                // Only a connection refused at the container address tries the
                // host address of the same instance; every other failure that
                // may try again does so on the next instance (an instance that
                // failed mid-request is dying: its host port would fail too,
                // and spend the one retry).
                if !try_host_address {
                    break;
                }
            }
        }
        tracing::warn!(%host, backends = endpoints.len(), "no backend accepted the connection");
        self.answer(
            StatusCode::BAD_GATEWAY,
            format!("no instance of {host} accepted the connection\n"),
            record,
            clock,
        )
    }

    /// The router's own short text answer.
    fn answer(
        &self,
        status: StatusCode,
        text: String,
        mut record: AccessRecord,
        clock: Instant,
    ) -> Response<ResponseBody> {
        record.status = status.as_u16();
        let body = ResponseBody::local(Bytes::from(text), self.pending_log(record, clock));
        let mut response = Response::new(body);
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    }

    fn proxied(
        &self,
        mut response: Response<Incoming>,
        live: Live,
        client_upgrade: Option<OnUpgrade>,
        mut record: AccessRecord,
        clock: Instant,
    ) -> Response<ResponseBody> {
        record.status = response.status().as_u16();
        let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        if switching {
            let Some(client_upgrade) = client_upgrade else {
                // Switching protocols unasked would leave the client
                // speaking HTTP to something that does not.
                tracing::warn!(backend = %record.backend, "backend switched protocols without an upgrade request");
                return self.answer(
                    StatusCode::BAD_GATEWAY,
                    "bad gateway\n".into(),
                    record,
                    clock,
                );
            };
            let backend_upgrade = hyper::upgrade::on(&mut response);
            live.spawn_for_upgrade();
            self.spawn_tunnel(client_upgrade, backend_upgrade, record.backend.clone());
            let (mut parts, _) = response.into_parts();
            let upgrade = parts.headers.get(header::UPGRADE).cloned();
            strip_hop_by_hop(&mut parts.headers);
            if let Some(upgrade) = upgrade {
                parts
                    .headers
                    .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                parts.headers.insert(header::UPGRADE, upgrade);
            }
            let body = ResponseBody::local(Bytes::new(), self.pending_log(record, clock));
            return Response::from_parts(parts, body);
        }
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        Response::from_parts(
            parts,
            ResponseBody::backend(
                body,
                live,
                self.backends.clone(),
                self.pending_log(record, clock),
            ),
        )
    }

    /// Copies bytes both ways between the client and the backend once both
    /// sides have switched protocols (WebSocket and the like).
    fn spawn_tunnel(&self, client: OnUpgrade, backend: OnUpgrade, address: String) {
        let hard_stop = self.hard_stop.clone();
        self.tasks.spawn(async move {
            let tunnel = async {
                let client = client.await.map_err(|e| error_chain(&e))?;
                let backend = backend.await.map_err(|e| error_chain(&e))?;
                let (mut client, mut backend) = (TokioIo::new(client), TokioIo::new(backend));
                tokio::io::copy_bidirectional(&mut client, &mut backend)
                    .await
                    .map_err(|e| e.to_string())
            };
            tokio::select! {
                result = tunnel => match result {
                    Ok((up, down)) => tracing::debug!(backend = %address, up, down, "upgraded connection closed"),
                    Err(error) => tracing::debug!(backend = %address, %error, "upgraded connection failed"),
                },
                _ = hard_stop.cancelled() => tracing::debug!(backend = %address, "upgraded connection closed at shutdown"),
            }
        });
    }

    fn pending_log(&self, record: AccessRecord, clock: Instant) -> PendingLog {
        PendingLog {
            record,
            clock,
            sink: self.access_log.clone(),
        }
    }
}

/// Binds a listener for [`HttpRouter::serve_sharded`]: with `SO_REUSEPORT`,
/// so that each shard can bind the same address.
///
/// An address that something else listens on is refused, as a plain bind
/// would: a second cluster on the same port must fail, not share it.
///
/// # Errors
/// If the address cannot be bound (in use, not this machine's).
pub fn bind_shared(address: SocketAddr) -> std::io::Result<TcpListener> {
    drop(std::net::TcpListener::bind(address)?);
    bind_reusing_port(address)
}

fn bind_reusing_port(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(address)?;
    socket.listen(1024)
}

/// Per-route round-robin positions.
///
/// Keyed by the route's key in the table (not the requested host, which a
/// wildcard route lets clients choose freely), and pruned to the table's
/// routes whenever a new one is added, so it stays as small as the table.
#[derive(Default)]
struct RoundRobin {
    next: RwLock<std::collections::HashMap<String, AtomicUsize>>,
}

impl RoundRobin {
    /// The position to start at for `route` (callers take it modulo the
    /// endpoint count).
    fn next(&self, route: &str, table: &RoutingTable) -> usize {
        if let Some(counter) = self
            .next
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(route)
        {
            return counter.fetch_add(1, Ordering::Relaxed);
        }
        let mut counters = self.next.write().unwrap_or_else(PoisonError::into_inner);
        if counters.len() >= table.http.len() {
            counters.retain(|key, _| table.http.contains_key(key));
        }
        counters
            .entry(route.to_string())
            .or_default()
            .fetch_add(1, Ordering::Relaxed)
    }
}

/// The routing key of a request: the `Host` header (or the authority of an
/// absolute-form target), without port or trailing dot, lower-case.
/// Methods a client may send twice with the effect of once (RFC 9110 9.2.2),
/// so the router may too.
fn is_idempotent(method: &hyper::Method) -> bool {
    use hyper::Method;
    [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::TRACE,
        Method::PUT,
        Method::DELETE,
    ]
    .contains(method)
}

fn request_host<B>(request: &Request<B>) -> Option<String> {
    let raw = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()))?;
    let host = strip_port(raw.trim()).trim_end_matches('.');
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // IPv6 literal: `[::1]:8080`.
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// The protocol asked for, when the request is an upgrade (`Connection:
/// upgrade` and an `Upgrade` header).
fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| headers.get(header::UPGRADE).cloned())
        .flatten()
}

/// The client's headers minus hop-by-hop ones (including any the client
/// named in `Connection`).
fn forward_headers(incoming: &HeaderMap) -> HeaderMap {
    let mut headers = incoming.clone();
    strip_hop_by_hop(&mut headers);
    headers
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// `X-Forwarded-For` with the client's address appended to what earlier
/// proxies wrote.
fn forwarded_for(headers: &HeaderMap, client: IpAddr) -> HeaderValue {
    let earlier: Vec<&str> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    let mut value = earlier.join(", ");
    if !value.is_empty() {
        value.push_str(", ");
    }
    value.push_str(&client.to_string());
    // Built from values that were valid header values (`to_str` accepted
    // them) and an IP address, so it is one too; the fallback is defensive.
    HeaderValue::from_str(&value).unwrap_or_else(|_| {
        HeaderValue::from_str(&client.to_string()).expect("an IP address is a valid header value")
    })
}

fn header_text(headers: &HeaderMap, name: &HeaderName) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

fn version_name(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        _ => "HTTP/?",
    }
}

/// The request target to send a backend: path and query, `/` if empty.
fn origin_form(uri: &Uri) -> Uri {
    uri.path_and_query()
        .map_or_else(|| Uri::from_static("/"), |path| Uri::from(path.clone()))
}

fn unix_millis(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(host: Option<&str>, uri: &str) -> Request<()> {
        let mut builder = Request::builder().uri(uri);
        if let Some(host) = host {
            builder = builder.header(header::HOST, host);
        }
        builder.body(()).expect("a valid test request")
    }

    #[test]
    fn host_is_lower_case_without_port() {
        let host = |h: &str| request_host(&request(Some(h), "/"));
        assert_eq!(host("Web.Example:8080").as_deref(), Some("web.example"));
        assert_eq!(host("web.example.").as_deref(), Some("web.example"));
        assert_eq!(host("[::1]:80").as_deref(), Some("[::1]"));
        assert_eq!(host("").as_deref(), None);
        assert_eq!(
            request_host(&request(None, "http://Abs.Example:81/x")).as_deref(),
            Some("abs.example")
        );
        assert_eq!(request_host(&request(None, "/x")), None);
    }

    #[test]
    fn hop_by_hop_headers_are_not_forwarded() {
        let mut incoming = HeaderMap::new();
        incoming.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        incoming.insert("x-private", HeaderValue::from_static("1"));
        incoming.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        incoming.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        incoming.insert("x-app", HeaderValue::from_static("kept"));
        let forwarded = forward_headers(&incoming);
        let mut names: Vec<&str> = forwarded.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["content-length", "x-app"]);
    }

    #[test]
    fn upgrade_needs_both_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert_eq!(upgrade_protocol(&headers), None);
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert_eq!(
            upgrade_protocol(&headers),
            Some(HeaderValue::from_static("websocket"))
        );
        headers.remove(header::UPGRADE);
        assert_eq!(upgrade_protocol(&headers), None);
    }

    #[test]
    fn forwarded_for_appends_the_client() {
        let client: IpAddr = "10.1.2.3".parse().expect("an IP literal");
        let mut headers = HeaderMap::new();
        assert_eq!(forwarded_for(&headers, client), "10.1.2.3");
        headers.append(&X_FORWARDED_FOR, HeaderValue::from_static("1.1.1.1"));
        headers.append(
            &X_FORWARDED_FOR,
            HeaderValue::from_static("2.2.2.2, 3.3.3.3"),
        );
        assert_eq!(
            forwarded_for(&headers, client),
            "1.1.1.1, 2.2.2.2, 3.3.3.3, 10.1.2.3"
        );
    }
}
