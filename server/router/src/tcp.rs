//! The TCP router: one listener per external port of the routing table,
//! forwarding raw bytes to the route's instances, round-robin.
//!
//! A supervisor compares the ports the table wants with the ports it has
//! open whenever the table changes: it opens the missing ones and closes the
//! ones no longer routed. A port it cannot bind (in use, privileged) is
//! logged and tried again every [`TcpRouterConfig::rebind_interval`]; it
//! never stops the others.
//!
//! # Guarantees
//! - A closed route stops accepting at once; connections already forwarded
//!   go on until either side closes them (or the router shuts down).
//! - A connection goes to the next instance when connecting to one fails;
//!   once connected, it stays with that instance.
//! - On shutdown, every listener closes and open connections get
//!   [`TcpRouterConfig::drain_timeout`] to finish before they are cut.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::table::TableHandle;

/// Tuning of the TCP router.
#[derive(Debug, Clone)]
pub struct TcpRouterConfig {
    /// The address every route's listener binds (with the route's external
    /// port).
    pub bind_ip: IpAddr,
    /// How long to wait for an instance's TCP connection before trying the
    /// next one.
    pub connect_timeout: Duration,
    /// How often to retry binding ports that could not be bound.
    pub rebind_interval: Duration,
    /// How long open connections may go on after shutdown.
    pub drain_timeout: Duration,
}

impl Default for TcpRouterConfig {
    fn default() -> Self {
        Self {
            // Nothing is exposed beyond the machine unless asked for.
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            connect_timeout: Duration::from_secs(5),
            rebind_interval: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// The TCP router. Build with [`TcpRouter::new`], run with [`TcpRouter::run`].
pub struct TcpRouter {
    table: TableHandle,
    config: TcpRouterConfig,
}

/// What every listener and connection task shares.
#[derive(Clone)]
struct Shared {
    table: TableHandle,
    connect_timeout: Duration,
    tasks: TaskTracker,
    /// Fired when the drain timeout ran out.
    hard_stop: CancellationToken,
}

impl TcpRouter {
    pub fn new(table: TableHandle, config: TcpRouterConfig) -> Self {
        Self { table, config }
    }

    /// Opens and closes listeners as the table changes until `shutdown`
    /// fires, then drains (see the module's guarantees).
    pub async fn run(self, shutdown: CancellationToken) {
        let shared = Shared {
            table: self.table.clone(),
            connect_timeout: self.config.connect_timeout,
            tasks: TaskTracker::new(),
            hard_stop: CancellationToken::new(),
        };
        let mut changes = self.table.subscribe();
        // Port -> the token that closes its listener.
        let mut open: HashMap<u16, CancellationToken> = HashMap::new();
        // Ports whose bind failed, so the warning is written once, not on
        // every retry.
        let mut failed: HashSet<u16> = HashSet::new();

        loop {
            let wanted: BTreeSet<u16> = changes.borrow_and_update().tcp.keys().copied().collect();
            open.retain(|port, stop| {
                let keep = wanted.contains(port);
                if !keep {
                    stop.cancel();
                    tracing::info!(port, "tcp route removed; listener closed");
                }
                keep
            });
            failed.retain(|port| wanted.contains(port));
            let missing: Vec<u16> = wanted
                .iter()
                .copied()
                .filter(|port| !open.contains_key(port))
                .collect();
            for port in missing {
                let address = SocketAddr::new(self.config.bind_ip, port);
                match TcpListener::bind(address).await {
                    Ok(listener) => {
                        tracing::info!(%address, "tcp route listening");
                        failed.remove(&port);
                        let stop = shutdown.child_token();
                        open.insert(port, stop.clone());
                        shared
                            .tasks
                            .spawn(listen(listener, port, stop, shared.clone()));
                    }
                    Err(e) if failed.insert(port) => {
                        tracing::warn!(%address, error = %e, "cannot listen for a tcp route; will retry");
                    }
                    Err(e) => {
                        tracing::debug!(%address, error = %e, "still cannot listen for a tcp route")
                    }
                }
            }

            tokio::select! {
                _ = shutdown.cancelled() => break,
                changed = changes.changed() => {
                    if changed.is_err() {
                        // Cannot happen while `self.table` holds the sender;
                        // without it there will be no new table, so wait.
                        shutdown.cancelled().await;
                        break;
                    }
                }
                _ = tokio::time::sleep(self.config.rebind_interval), if !failed.is_empty() => {}
            }
        }

        // The listeners' tokens are children of `shutdown`: they are closing.
        shared.tasks.close();
        if tokio::time::timeout(self.config.drain_timeout, shared.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                open = shared.tasks.len(),
                "tcp router drain timed out; closing the remaining connections"
            );
            shared.hard_stop.cancel();
            shared.tasks.wait().await;
        }
        tracing::info!("tcp router stopped");
    }
}

/// Accepts on one route's port until `stop` fires.
async fn listen(listener: TcpListener, port: u16, stop: CancellationToken, shared: Shared) {
    // Round-robin position of this port; only this task touches it.
    let mut next: usize = 0;
    loop {
        let (client, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Usually out of file descriptors: pause, do not spin.
                    tracing::warn!(port, error = %e, "tcp router cannot accept a connection");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
                    }
                }
            },
        };
        let start = next;
        next = next.wrapping_add(1);
        shared
            .tasks
            .spawn(forward(client, peer, port, start, shared.clone()));
    }
}

/// Connects `client` to an instance of the route on `port` (starting at
/// position `start`) and copies bytes both ways until either side closes.
async fn forward(mut client: TcpStream, peer: SocketAddr, port: u16, start: usize, shared: Shared) {
    // Copy the candidates out so that a long connection does not keep an old
    // table alive.
    let candidates: Vec<String> = match shared.table.current().tcp.get(&port) {
        Some(endpoints) if !endpoints.is_empty() => {
            let n = endpoints.len();
            // An instance's container address, then its host address.
            (0..n)
                .map(|i| &endpoints[(start + i) % n])
                .flat_map(|e| std::iter::once(&e.address).chain(&e.fallback).cloned())
                .collect()
        }
        _ => {
            tracing::debug!(port, %peer, "tcp route vanished before the connection was forwarded");
            return;
        }
    };
    for address in &candidates {
        let connect =
            tokio::time::timeout(shared.connect_timeout, TcpStream::connect(address.as_str()));
        let mut backend = match connect.await {
            Ok(Ok(backend)) => backend,
            Ok(Err(e)) => {
                tracing::debug!(port, backend = %address, error = %e, "instance refused the connection; trying the next");
                continue;
            }
            Err(_) => {
                tracing::debug!(port, backend = %address, "connecting to the instance timed out; trying the next");
                continue;
            }
        };
        if let Err(e) = backend
            .set_nodelay(true)
            .and_then(|()| client.set_nodelay(true))
        {
            tracing::debug!(port, error = %e, "cannot set TCP_NODELAY");
        }
        tokio::select! {
            copied = tokio::io::copy_bidirectional(&mut client, &mut backend) => match copied {
                Ok((up, down)) => tracing::debug!(port, %peer, backend = %address, up, down, "tcp connection closed"),
                Err(e) => tracing::debug!(port, %peer, backend = %address, error = %e, "tcp connection failed"),
            },
            _ = shared.hard_stop.cancelled() => {
                tracing::debug!(port, %peer, backend = %address, "tcp connection closed at shutdown");
            }
        }
        return;
    }
    tracing::warn!(port, %peer, instances = candidates.len(), "no instance accepted the tcp connection");
}
