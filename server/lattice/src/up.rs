//! `lattice up`: the whole one-machine cluster in one process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use lattice_bbs::SharedStore;
use lattice_converger::Policy;
use lattice_fileserver::{FileServer, FileServerConfig};
use lattice_logs::{HubSink, LogHub};
use lattice_receptor::{Credentials, ReceptorConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cell::{Cell, CellConfig};
use crate::ssh::PreparedSsh;

/// Everything `lattice up` needs, resolved from flags.
#[derive(Clone)]
pub struct UpConfig {
    pub data_dir: PathBuf,
    /// The store: empty for the embedded SQLite file in the data dir,
    /// `sqlite://PATH`, or `postgres://USER:PASSWORD@HOST/DB`.
    pub store: String,
    pub listen: SocketAddr,
    pub domain: String,
    pub credentials: Option<Credentials>,
    pub max_body_bytes: usize,
    /// Whether the receptor accepts `privileged: true` work.
    pub allow_privileged: bool,
    /// Largest app bits or droplet upload the file server accepts.
    pub max_upload_bytes: u64,
    /// How long roles may take to finish after a shutdown signal.
    pub drain_timeout: Duration,
    /// The cell of this machine; `None` runs the brain and receptor only.
    pub cell: Option<CellConfig>,
    /// Time between the converger's periodic passes (it also reacts to
    /// events at once).
    pub converge_interval: Duration,
    /// Crash restarts, expiry of completed tasks, re-auction timeouts.
    pub policy: Policy,
    /// Where app, cell and server logs are kept and served (`ltc logs`).
    pub hub: Arc<LogHub>,
    /// Where the router listens for app traffic; `None`: no router here.
    pub router_listen: Option<SocketAddr>,
    /// Where the SSH proxy (`ltc ssh`) listens; `None`: no proxy. Loopback
    /// only when the API has no credentials (see [`crate::ssh`]).
    pub ssh_listen: Option<crate::ssh::SshListen>,
}

/// The file of the embedded store inside the data dir.
pub fn store_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("bbs.sqlite3")
}

/// The file server kept in `data_dir/fileserver`, serving `static_dir`
/// read-only when given.
pub(crate) async fn open_file_server(
    data_dir: &Path,
    static_dir: Option<PathBuf>,
    max_upload_bytes: u64,
) -> anyhow::Result<Arc<FileServer>> {
    let server = FileServer::open(FileServerConfig {
        dir: data_dir.join("fileserver"),
        static_dir,
        max_upload_bytes,
    })
    .await
    .context("cannot open the file server's blob store")?;
    Ok(Arc::new(server))
}

/// Opens the store, prepares the cell and binds the receptor; the caller
/// then calls [`Up::run`]. Split in two so that errors (port in use,
/// unreadable data dir, no Docker) surface before the server says it is up.
pub struct Up {
    config: UpConfig,
    file_server: Arc<FileServer>,
    store: SharedStore,
    listener: TcpListener,
    router_listener: Option<TcpListener>,
    ssh: Option<PreparedSsh>,
    cell: Option<Cell>,
    /// What the cell's rep requires of the auctioneer.
    rep_secret: String,
}

impl Up {
    pub async fn prepare(config: UpConfig) -> anyhow::Result<Up> {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
        let path = store_path(&config.data_dir);
        let store: SharedStore = lattice_bbs::open_store(&config.store, &path)
            .await
            .with_context(|| match config.store.as_str() {
                "" => format!("cannot open the store at {}", path.display()),
                spec => format!(
                    "cannot open the store {} (check --store)",
                    spec.split("://").next().unwrap_or("")
                ),
            })?;
        let store = lattice_bbs::InstrumentedStore::wrap(store);
        let listener = TcpListener::bind(config.listen).await.with_context(|| {
            format!(
                "cannot listen on {} (is another lattice running? try --listen)",
                config.listen
            )
        })?;
        let router_listener = match config.router_listen {
            Some(address) => Some(lattice_router::bind_shared(address).with_context(|| {
                format!("cannot listen for the router on {address} (try --router-listen)")
            })?),
            None => None,
        };
        let ssh = match config.ssh_listen {
            Some(listen) => {
                PreparedSsh::prepare(&config.data_dir, listen, config.credentials.as_ref()).await?
            }
            None => None,
        };
        // Only this process's auctioneer may hand the cell work, though
        // its rep listens on a port other local users could reach.
        let rep_secret = uuid::Uuid::new_v4().simple().to_string();
        let cell = match &config.cell {
            Some(cell) => {
                let sink = Arc::new(HubSink::new(config.hub.clone()));
                let prepared = Cell::prepare(cell.clone(), store.clone(), sink).await?;
                Some(prepared.with_rep_secret(rep_secret.clone()))
            }
            None => None,
        };
        let file_server = open_file_server(
            &config.data_dir,
            config.cell.as_ref().map(|c| c.lifecycle_dir.clone()),
            config.max_upload_bytes,
        )
        .await?;
        Ok(Up {
            config,
            file_server,
            store,
            listener,
            router_listener,
            ssh,
            cell,
            rep_secret,
        })
    }

    /// Where the SSH proxy listens, if this cluster runs one.
    pub fn ssh_address(&self) -> Option<SocketAddr> {
        self.ssh.as_ref().and_then(|ssh| ssh.address().ok())
    }

    pub fn receptor_address(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Where the router listens, if this cluster has one.
    pub fn router_address(&self) -> Option<SocketAddr> {
        self.router_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// Runs every role until `shutdown` fires, then drains.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let router_address = self.router_address();
        let Up {
            config,
            store,
            listener,
            router_listener,
            ssh,
            cell,
            file_server,
            rep_secret,
        } = self;
        let tracker = TaskTracker::new();
        let address = listener
            .local_addr()
            .context("receptor listener has no address")?;
        let receptor_config = ReceptorConfig {
            credentials: config.credentials.clone(),
            max_body_bytes: config.max_body_bytes,
            domain: config.domain.clone(),
            router_address: router_address.map(|a| a.to_string()),
            allow_privileged: config.allow_privileged,
            ltc_path: lattice_receptor::ltc_beside_current_exe(),
            ssh: match &ssh {
                Some(ssh) => Some(ssh.info().context("ssh listener has no address")?),
                None => None,
            },
            rep_secret: Some(rep_secret.clone()),
        };
        let logs = lattice_logs::http::router(config.hub.clone(), shutdown.clone());
        let files = lattice_fileserver::router(file_server);
        let app = lattice_receptor::app_with_routes(
            store.clone(),
            receptor_config,
            shutdown.clone(),
            logs.merge(files)
                .merge(lattice_ui::router())
                .merge(crate::metrics::route()),
        );
        let app = crate::metrics::track_requests(app, "receptor");
        tracker.spawn(lattice_receptor::serve(listener, app, shutdown.clone()));
        tracker.spawn(crate::metrics::upkeep(shutdown.clone()));

        if let Some(router_listener) = router_listener {
            let credentials = config
                .credentials
                .as_ref()
                .map(|c| lattice_client::Credentials::new(c.username.clone(), c.password.clone()));
            crate::router::spawn(
                &tracker,
                router_listener,
                &[format!("http://{address}")],
                credentials,
                Arc::new(HubSink::new(config.hub.clone())),
                shutdown.clone(),
            )?;
        }

        crate::roles::spawn_brain_loops(
            &tracker,
            store.clone(),
            crate::roles::BrainLoops {
                owner: format!("brain-{}", uuid::Uuid::new_v4()),
                lock_ttl: crate::roles::DEFAULT_LOCK_TTL,
                converge_interval: config.converge_interval,
                policy: config.policy.clone(),
                rep_secret: Some(rep_secret.clone()),
            },
            shutdown.clone(),
        )?;
        if let Some(ssh) = ssh {
            ssh.spawn(
                &tracker,
                store.clone(),
                config.credentials.as_ref(),
                rep_secret,
                shutdown.clone(),
            );
        }

        if let Some(cell) = cell {
            let shutdown = shutdown.clone();
            tracker.spawn(async move {
                if let Err(err) = cell.run(shutdown).await {
                    tracing::error!(error = %format!("{err:#}"), "cell failed");
                }
            });
        }
        tracing::info!(
            %address,
            dashboard = %format!("http://{address}{}", lattice_ui::PATH),
            data_dir = %config.data_dir.display(),
            "lattice is up"
        );
        tracker.close();

        shutdown.cancelled().await;
        if config.cell.is_some() {
            // Its brain, router and only cell stop together: there is no
            // other cell its instances could move to.
            tracing::info!("one-machine cluster: stopping without draining the cell (no other cell to move its instances to)");
        }
        if tokio::time::timeout(config.drain_timeout, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(timeout = ?config.drain_timeout, "roles did not stop in time; exiting anyway");
        }
        tracing::info!("lattice stopped");
        Ok(())
    }
}
