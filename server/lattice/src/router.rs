//! The router role: the route emitter follows the receptor's event stream
//! and keeps the routing table; the HTTP router proxies `APP.DOMAIN` to the
//! app's running instances, the TCP router forwards external ports. It
//! reaches the receptor over HTTP, so it runs the same way on another
//! machine.

use std::sync::Arc;

use lattice_client::{Client, Credentials};
use lattice_executor::LogSink;
use lattice_models::log::{LogMessage, MessageType, SOURCE_ROUTER};
use lattice_router::{
    AccessLog, EmitterConfig, HttpRouter, HttpRouterConfig, RouteEmitter, TableHandle, TcpRouter,
    TcpRouterConfig,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Access lines go to the app's log stream as RTR lines: into the hub of
/// this process, or to a brain's (`RemoteSink`) from a router of its own.
struct SinkAccessLog(Arc<dyn LogSink>);

impl AccessLog for SinkAccessLog {
    fn log(&self, log_guid: &str, line: String) {
        self.0.emit(LogMessage {
            log_guid: log_guid.to_string(),
            source_type: SOURCE_ROUTER.to_string(),
            source_instance: String::new(),
            message: line,
            message_type: MessageType::Out,
            timestamp: lattice_models::unix_nanos(std::time::SystemTime::now()),
        });
    }
}

/// Runs the emitter, the HTTP router on `listener` (from
/// [`lattice_router::bind_shared`]; one shard per core) and the TCP router until
/// `shutdown`, following the first of the receptors at `receptor_urls` that
/// works (the brains of one cluster); access lines go to `access_log`.
pub fn spawn(
    tracker: &TaskTracker,
    listener: TcpListener,
    receptor_urls: &[String],
    credentials: Option<Credentials>,
    access_log: Arc<dyn LogSink>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut clients = receptor_urls
        .iter()
        .map(|url| Client::new(url, credentials.clone()))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter();
    let first = clients
        .next()
        .ok_or_else(|| anyhow::anyhow!("no receptor URL to follow"))?;
    let table = TableHandle::default();
    let bind_ip = listener.local_addr()?.ip();
    tracker.spawn(
        RouteEmitter::new(first, EmitterConfig::default())
            .with_fallbacks(clients)
            .run(table.clone(), shutdown.clone()),
    );
    let access_log: Arc<dyn AccessLog> = Arc::new(SinkAccessLog(access_log));
    let shards = std::thread::available_parallelism().map_or(1, usize::from);
    let http = HttpRouter::serve_sharded(
        table.clone(),
        access_log,
        HttpRouterConfig::default(),
        listener,
        shards,
        shutdown.clone(),
    );
    tracker.spawn(async move {
        if let Err(err) = http.await {
            tracing::error!(error = %err, "http router failed");
        }
    });
    let tcp = TcpRouter::new(
        table,
        TcpRouterConfig {
            bind_ip,
            ..Default::default()
        },
    );
    tracker.spawn(tcp.run(shutdown));
    Ok(())
}
