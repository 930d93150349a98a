//! The roles apart, for a cluster of several machines: `lattice brain`,
//! `lattice cell`, `lattice router`. `lattice up` ([`crate::up`]) runs the
//! same parts in one process.
//!
//! - **brain** ([`Brain`]): the store (PostgreSQL, shared by every brain),
//!   the receptor with the log hub, the auctioneer and the converger, and
//!   the store's internal API for cells (`/internal/...`, behind the
//!   cluster secret instead of the users' basic auth). Every brain serves
//!   the API; the auctioneer and converger act only in the brain that
//!   holds their lock (a lease in the store), the others stand by and take
//!   over within the lock's TTL.
//! - **cell** ([`run_cell`]): Docker garden, executor and rep on a
//!   [`RemoteStore`] (no database credentials on cells); logs go to every
//!   brain's hub, so that `ltc logs` works against any brain.
//! - **router** ([`run_router`]): the route emitter following a brain's
//!   receptor, and the HTTP and TCP routers; access lines go to that
//!   brain's hub.
//!
//! # Guarantees
//! A cell that cannot authenticate to a brain never registers: it fails
//! before it touches Docker or the store.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use lattice_auctioneer::runner::{Auctioneer, AuctioneerConfig};
use lattice_bbs::{RemoteStore, SharedStore};
use lattice_converger::{Converger, ConvergerConfig, Policy};
use lattice_executor::{LogMessage, LogSink};
use lattice_fileserver::FileServer;
use lattice_logs::{LogHub, RemoteSink};
use lattice_receptor::{Credentials, ReceptorConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cell::{Advertise, Cell, CellConfig};

/// Default lease of the auctioneer and converger locks: a standby brain
/// takes over at most this long (plus a third, its renewal period) after
/// the active one died.
pub const DEFAULT_LOCK_TTL: Duration = Duration::from_secs(15);

/// The brain's loops that only one brain of a cluster runs at a time.
pub struct BrainLoops {
    /// The lock owner: unique per process, so two brains never both hold a
    /// lock, whatever ids they were given.
    pub owner: String,
    pub lock_ttl: Duration,
    /// Time between the converger's periodic passes.
    pub converge_interval: Duration,
    pub policy: Policy,
    /// The secret cells' reps require of the auctioneer.
    pub rep_secret: Option<String>,
}

/// Starts the auctioneer and the converger on `tracker`; each acts while it
/// holds its lock and stands by otherwise, until `shutdown`.
///
/// # Errors
/// When the converger's HTTP client (for completion callbacks) cannot be made.
pub fn spawn_brain_loops(
    tracker: &TaskTracker,
    store: SharedStore,
    loops: BrainLoops,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // The two loops share nothing but the store: the converger's work
    // reaches the auctioneer through the change feed, so a standby brain's
    // auctioneer is never woken by anything in this process.
    let auctioneer = Auctioneer::new(
        store.clone(),
        AuctioneerConfig {
            lock_ttl: loops.lock_ttl,
            rep_secret: loops.rep_secret,
            ..AuctioneerConfig::new(loops.owner.clone())
        },
    );
    tracker.spawn(auctioneer.run(shutdown.clone()));
    let converger_config = ConvergerConfig {
        interval: loops.converge_interval,
        policy: loops.policy,
        lock_ttl: loops.lock_ttl,
        ..ConvergerConfig::new(loops.owner)
    };
    let converger =
        Converger::new(store, converger_config).context("cannot start the converger")?;
    tracker.spawn(converger.run(shutdown));
    Ok(())
}

/// A lock owner for a brain called `brain_id`: the id, for people reading
/// the lock, and a random part, for uniqueness.
pub fn lock_owner(brain_id: &str) -> String {
    format!("{brain_id}/{}", uuid::Uuid::new_v4().simple())
}

/// Waits for `tracker`'s tasks after a shutdown, at most `timeout`.
async fn drain(tracker: TaskTracker, timeout: Duration) {
    tracker.close();
    if tokio::time::timeout(timeout, tracker.wait()).await.is_err() {
        tracing::warn!(?timeout, "roles did not stop in time; exiting anyway");
    }
}

// --- brain -------------------------------------------------------------------

/// Everything `lattice brain` needs, resolved from flags.
#[derive(Clone)]
pub struct BrainConfig {
    /// The store: `postgres://...` for a cluster of several brains; a
    /// SQLite file (empty: `bbs.sqlite3` in `data_dir`) serves one brain.
    pub store: String,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// What cells present to use the store; never the users' password.
    pub secret: String,
    /// Users' basic auth of the public API.
    pub credentials: Option<Credentials>,
    pub domain: String,
    /// Where routers take app traffic, advertised in `/v1/info`.
    pub router_address: Option<String>,
    pub max_body_bytes: usize,
    /// Whether the receptor accepts `privileged: true` work.
    pub allow_privileged: bool,
    /// Largest file its file server accepts, in bytes.
    pub max_upload_bytes: u64,
    /// Names this brain in its lock owner (see [`lock_owner`]).
    pub brain_id: String,
    pub lock_ttl: Duration,
    pub converge_interval: Duration,
    pub policy: Policy,
    pub hub: Arc<LogHub>,
    pub drain_timeout: Duration,
    /// Where the SSH proxy (`ltc ssh`) listens; `None`: no proxy. Loopback
    /// only when the API has no credentials (see [`crate::ssh`]).
    pub ssh_listen: Option<crate::ssh::SshListen>,
}

/// A brain with its store open and its listener bound; [`Brain::run`]
/// serves it. Split in two so that errors surface before it says it is up.
pub struct Brain {
    config: BrainConfig,
    store: SharedStore,
    listener: TcpListener,
    file_server: Arc<FileServer>,
    ssh: Option<crate::ssh::PreparedSsh>,
}

impl Brain {
    /// Opens the store and binds the listener.
    ///
    /// # Errors
    /// An empty secret, a store that cannot be opened, a port in use.
    pub async fn prepare(config: BrainConfig) -> anyhow::Result<Brain> {
        anyhow::ensure!(
            !config.secret.is_empty(),
            "the cluster secret is empty: pass --secret or set LATTICE_SECRET"
        );
        let path = crate::up::store_path(&config.data_dir);
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
        let store = lattice_bbs::open_store(&config.store, &path)
            .await
            .with_context(|| {
                format!(
                    "cannot open the store {} (check --store)",
                    config.store.split("://").next().unwrap_or("")
                )
            })?;
        let store = lattice_bbs::InstrumentedStore::wrap(store);
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {} (try --listen)", config.listen))?;
        // Droplets and blobs stay on this brain's disk (see
        // docs/multi-machine.md); cells fetch them by URL.
        let file_server =
            crate::up::open_file_server(&config.data_dir, None, config.max_upload_bytes).await?;
        let ssh = match config.ssh_listen {
            Some(listen) => {
                crate::ssh::PreparedSsh::prepare(
                    &config.data_dir,
                    listen,
                    config.credentials.as_ref(),
                )
                .await?
            }
            None => None,
        };
        Ok(Brain {
            config,
            store,
            listener,
            file_server,
            ssh,
        })
    }

    pub fn address(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Where the SSH proxy listens, if this brain runs one.
    pub fn ssh_address(&self) -> Option<SocketAddr> {
        self.ssh.as_ref().and_then(|ssh| ssh.address().ok())
    }

    /// Serves the API and runs the loops until `shutdown`, then drains.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Brain {
            config,
            store,
            listener,
            file_server,
            ssh,
        } = self;
        let address = listener
            .local_addr()
            .context("the brain's listener has no address")?;
        let tracker = TaskTracker::new();
        let receptor = lattice_receptor::app_with_routes(
            store.clone(),
            ReceptorConfig {
                credentials: config.credentials.clone(),
                max_body_bytes: config.max_body_bytes,
                domain: config.domain.clone(),
                router_address: config.router_address.clone(),
                allow_privileged: config.allow_privileged,
                ltc_path: lattice_receptor::ltc_beside_current_exe(),
                ssh: match &ssh {
                    Some(ssh) => Some(ssh.info().context("ssh listener has no address")?),
                    None => None,
                },
                rep_secret: Some(config.secret.clone()),
            },
            shutdown.clone(),
            lattice_logs::http::router(config.hub.clone(), shutdown.clone())
                .merge(lattice_fileserver::router(file_server))
                .merge(lattice_ui::router())
                .merge(crate::metrics::route()),
        );
        let app = internal_routes(&store, &config, shutdown.clone()).merge(receptor);
        let app = crate::metrics::track_requests(app, "receptor");
        tracker.spawn(lattice_receptor::serve(listener, app, shutdown.clone()));
        tracker.spawn(crate::metrics::upkeep(shutdown.clone()));

        if let Some(ssh) = ssh {
            ssh.spawn(
                &tracker,
                store.clone(),
                config.credentials.as_ref(),
                config.secret.clone(),
                shutdown.clone(),
            );
        }
        let owner = lock_owner(&config.brain_id);
        spawn_brain_loops(
            &tracker,
            store,
            BrainLoops {
                owner: owner.clone(),
                lock_ttl: config.lock_ttl,
                converge_interval: config.converge_interval,
                policy: config.policy.clone(),
                rep_secret: Some(config.secret.clone()),
            },
            shutdown.clone(),
        )?;
        tracing::info!(
            %address,
            %owner,
            dashboard = %format!("http://{address}{}", lattice_ui::PATH),
            "brain is up"
        );
        shutdown.cancelled().await;
        drain(tracker, config.drain_timeout).await;
        tracing::info!("brain stopped");
        Ok(())
    }
}

/// What cells use, behind the cluster secret: the store, and the log hub's
/// routes under `/internal` (cells post their lines to
/// `/internal/v1/log_messages`). Merged beside the receptor, whose basic
/// auth does not apply to them.
fn internal_routes(
    store: &SharedStore,
    config: &BrainConfig,
    shutdown: CancellationToken,
) -> Router {
    let logs = Router::new().nest(
        "/internal",
        lattice_logs::http::router(config.hub.clone(), shutdown.clone()),
    );
    lattice_bbs::http::router(store.clone(), config.secret.clone(), shutdown).merge(
        lattice_bbs::http::require_secret(logs, config.secret.clone()),
    )
}

// --- cell --------------------------------------------------------------------

/// Everything `lattice cell` needs, resolved from flags.
#[derive(Clone)]
pub struct CellRoleConfig {
    /// The brains' receptor URLs, in order of preference.
    pub brains: Vec<String>,
    pub secret: String,
    pub cell: CellConfig,
    /// The address brains and routers reach this machine at; `None`: the
    /// address of the interface that routes to the first brain.
    pub advertise: Option<IpAddr>,
    /// Where instances' ports are published and routers reach them; `None`:
    /// the advertise address.
    pub instance_address: Option<IpAddr>,
    pub drain_timeout: Duration,
}

/// The user name a cell's log forwarder sends with the secret as password
/// (the forwarder speaks basic auth; the name carries nothing).
const LOG_USER: &str = "cell";

/// Sends every line to each brain's hub, so that every brain can serve
/// `ltc logs`; a brain that is down drops its copy once its queue is full.
struct FanOutSink(Vec<RemoteSink>);

impl FanOutSink {
    /// A sink to the log hub at each of `bases`, its forwarders running on
    /// `forwarders` until `stop`.
    fn start(
        bases: &[String],
        credentials: Option<lattice_client::Credentials>,
        forwarders: &TaskTracker,
        stop: &CancellationToken,
    ) -> anyhow::Result<FanOutSink> {
        let mut sinks = Vec::with_capacity(bases.len());
        for base in bases {
            let (sink, forwarder) = RemoteSink::new(base, credentials.clone())
                .with_context(|| format!("invalid brain URL {base:?}"))?;
            forwarders.spawn(forwarder.run(stop.clone()));
            sinks.push(sink);
        }
        Ok(FanOutSink(sinks))
    }
}

impl LogSink for FanOutSink {
    fn emit(&self, message: LogMessage) {
        if let Some((last, rest)) = self.0.split_last() {
            for sink in rest {
                sink.emit(message.clone());
            }
            last.emit(message);
        }
    }
}

/// The address of this machine's interface that routes to `brain_url`:
/// what the kernel would send from, found without sending anything.
async fn route_to(brain_url: &str) -> anyhow::Result<IpAddr> {
    let (host, port) = host_and_port(brain_url)?;
    let target = tokio::net::lookup_host((host.as_str(), port))
        .await
        .with_context(|| format!("cannot resolve the brain's host {host:?}"))?
        .next()
        .with_context(|| format!("the brain's host {host:?} has no address"))?;
    let unspecified: SocketAddr = if target.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = tokio::net::UdpSocket::bind(unspecified)
        .await
        .context("cannot open a socket to find this machine's address")?;
    // A UDP connect only picks the route; no packet leaves.
    socket
        .connect(target)
        .await
        .with_context(|| format!("no route to the brain at {target}"))?;
    let ip = socket
        .local_addr()
        .context("cannot read this machine's address")?
        .ip();
    anyhow::ensure!(
        !ip.is_unspecified(),
        "cannot tell this machine's address; pass --advertise-address"
    );
    Ok(ip)
}

/// Host and port of an `http://HOST:PORT` URL.
fn host_and_port(url: &str) -> anyhow::Result<(String, u16)> {
    let uri: axum::http::Uri = url
        .trim()
        .parse()
        .with_context(|| format!("brain URL {url:?} is not http://HOST:PORT"))?;
    anyhow::ensure!(
        uri.scheme_str() == Some("http"),
        "brain URL {url:?} is not http://HOST:PORT"
    );
    let host = uri
        .host()
        .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
        .filter(|h| !h.is_empty())
        .with_context(|| format!("brain URL {url:?} has no host"))?;
    // `Uri` takes any text after the colon and then has no port for it.
    let authority = uri.authority().map_or("", |a| a.as_str());
    let after_host = authority.rsplit(']').next().unwrap_or(authority);
    let port = match (after_host.contains(':'), uri.port_u16()) {
        (_, Some(port)) => port,
        (false, None) => 80,
        (true, None) => anyhow::bail!("brain URL {url:?} has an invalid port"),
    };
    Ok((host.to_string(), port))
}

/// Runs a cell whose store and log hub are the brains at
/// `config.brains`, until `shutdown`; then stops its work, deregisters and
/// sends the last log lines.
///
/// # Errors
/// When no brain can be reached, a brain refuses the secret (the message
/// says so), or the cell cannot start (Docker, lifecycle binaries).
pub async fn run_cell(config: CellRoleConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let remote = RemoteStore::connect(config.brains.clone(), config.secret.clone())
        .await
        .context(
            "cannot use the cluster's store through the brains (check --brain and --secret)",
        )?;
    let advertise = match config.advertise {
        Some(ip) => ip,
        None => route_to(remote.brain()).await?,
    };
    let store = lattice_bbs::InstrumentedStore::wrap(Arc::new(remote));

    // The forwarders outlive the cell, so that its last lines (stopping
    // work) are still sent.
    let forwarders = TaskTracker::new();
    let stop_forwarding = CancellationToken::new();
    let internal: Vec<String> = config
        .brains
        .iter()
        .map(|brain| format!("{}/internal", brain.trim().trim_end_matches('/')))
        .collect();
    let credentials = lattice_client::Credentials::new(LOG_USER, config.secret.clone());
    let logs: Arc<dyn LogSink> = Arc::new(FanOutSink::start(
        &internal,
        Some(credentials),
        &forwarders,
        &stop_forwarding,
    )?);

    let cell_id = config.cell.cell_id.clone();
    let result = async {
        let addresses = Advertise {
            rep: advertise,
            instances: config.instance_address.unwrap_or(advertise),
        };
        let cell = Cell::prepare_advertised(config.cell, Some(addresses), store.clone(), logs)
            .await?
            .with_rep_secret(config.secret);
        tracing::info!(%cell_id, rep = %addresses.rep, instances = %addresses.instances, "cell is up");
        // Told to stop, the cell first drains: its instances move to other
        // cells without a failed request, then it stops.
        let stop_cell = CancellationToken::new();
        let rep = cell.rep();
        let drain_first = {
            let stop_cell = stop_cell.clone();
            let store = store.clone();
            async move {
                shutdown.cancelled().await;
                drain_before_stop(&rep, &store).await;
                stop_cell.cancel();
            }
        };
        let run = async {
            let result = cell.run(stop_cell.clone()).await;
            stop_cell.cancel();
            result
        };
        let (result, ()) = tokio::join!(run, async {
            tokio::select! {
                () = drain_first => {}
                // The cell ended on its own (an error): nothing to drain.
                () = stop_cell.cancelled() => {}
            }
        });
        result
    }
    .await;
    stop_forwarding.cancel();
    drain(forwarders, config.drain_timeout).await;
    tracing::info!(%cell_id, "cell stopped");
    result
}

/// Drains the cell of `rep` (see [`lattice_rep::Rep::evacuate`]) when
/// another cell can take its instances; says why not otherwise.
pub async fn drain_before_stop(rep: &Arc<lattice_rep::Rep>, store: &SharedStore) {
    let cell_id = rep.cell_id().to_string();
    match store.list_cells().await {
        Ok(cells) if cells.iter().any(|c| c.cell_id != cell_id) => {
            tracing::info!(%cell_id, "draining the cell before it stops");
            let report = rep.evacuate().await;
            tracing::info!(%cell_id, handed_over = report.handed_over, replaced = report.replaced, timed_out = report.timed_out, "cell drained; stopping");
        }
        Ok(_) => {
            tracing::info!(%cell_id, "no other cell to move instances to; stopping without draining")
        }
        Err(err) => {
            tracing::warn!(%cell_id, error = %err, "cannot list the cells; stopping without draining")
        }
    }
}

// --- router ------------------------------------------------------------------

/// Everything `lattice router` needs, resolved from flags.
#[derive(Clone)]
pub struct RouterRoleConfig {
    /// The brains' receptor URLs, in order of preference: the route
    /// emitter follows one and moves to the next when it fails.
    pub brains: Vec<String>,
    pub listen: SocketAddr,
    /// Users' basic auth of the brain's public API.
    pub credentials: Option<lattice_client::Credentials>,
    /// Where `GET /metrics` is served (behind `credentials`, when given);
    /// `None`: nowhere. Not on `listen`: app traffic owns every path there.
    pub metrics_listen: Option<SocketAddr>,
    pub drain_timeout: Duration,
}

/// A router with its listeners bound; [`RouterRole::run`] serves it.
pub struct RouterRole {
    config: RouterRoleConfig,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
}

impl RouterRole {
    /// Binds the listener.
    ///
    /// # Errors
    /// A port in use.
    pub async fn prepare(config: RouterRoleConfig) -> anyhow::Result<RouterRole> {
        let listener = lattice_router::bind_shared(config.listen).with_context(|| {
            format!(
                "cannot listen for the router on {} (try --listen)",
                config.listen
            )
        })?;
        let metrics_listener = match config.metrics_listen {
            Some(address) => Some(TcpListener::bind(address).await.with_context(|| {
                format!(
                    "cannot listen for the router's metrics on {address} (try --metrics-listen)"
                )
            })?),
            None => None,
        };
        Ok(RouterRole {
            config,
            listener,
            metrics_listener,
        })
    }

    pub fn address(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Where `/metrics` is served, if anywhere.
    pub fn metrics_address(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// Routes until `shutdown`, then drains.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let metrics_address = self.metrics_address();
        let RouterRole {
            config,
            listener,
            metrics_listener,
        } = self;
        let address = listener
            .local_addr()
            .context("the router's listener has no address")?;
        let tracker = TaskTracker::new();
        let forwarders = TaskTracker::new();
        let stop_forwarding = CancellationToken::new();
        // Access lines go to every brain's log hub, as cells' lines do.
        let sink = FanOutSink::start(
            &config.brains,
            config.credentials.clone(),
            &forwarders,
            &stop_forwarding,
        )?;
        crate::router::spawn(
            &tracker,
            listener,
            &config.brains,
            config.credentials.clone(),
            Arc::new(sink),
            shutdown.clone(),
        )?;
        if let Some(metrics_listener) = metrics_listener {
            let credentials = config.credentials.as_ref().map(|c| Credentials {
                username: c.username.clone(),
                password: c.password.clone(),
            });
            let app = lattice_receptor::require_basic_auth(crate::metrics::route(), credentials);
            tracker.spawn(lattice_receptor::serve(
                metrics_listener,
                app,
                shutdown.clone(),
            ));
            tracker.spawn(crate::metrics::upkeep(shutdown.clone()));
        }
        tracing::info!(%address, metrics = ?metrics_address, brains = ?config.brains, "router is up");
        shutdown.cancelled().await;
        drain(tracker, config.drain_timeout).await;
        stop_forwarding.cancel();
        drain(forwarders, config.drain_timeout).await;
        tracing::info!("router stopped");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brain_urls_give_host_and_port() {
        assert_eq!(
            host_and_port("http://10.0.0.5:8888").expect("valid"),
            ("10.0.0.5".to_string(), 8888)
        );
        assert_eq!(
            host_and_port("http://brain.internal/").expect("valid"),
            ("brain.internal".to_string(), 80)
        );
        assert_eq!(
            host_and_port("http://[fd00::1]:8888").expect("valid"),
            ("fd00::1".to_string(), 8888)
        );
        for bad in ["https://x:1", "x:1", "http://:1", "http://x:port"] {
            assert!(host_and_port(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn the_route_to_a_loopback_brain_is_loopback() {
        let ip = route_to("http://127.0.0.1:8888").await.expect("a route");
        assert!(ip.is_loopback(), "{ip}");
    }

    #[test]
    fn lock_owners_are_unique_and_name_the_brain() {
        let (a, b) = (lock_owner("brain-1"), lock_owner("brain-1"));
        assert_ne!(a, b);
        assert!(a.starts_with("brain-1/"), "{a}");
    }
}
