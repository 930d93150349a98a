//! The cell role: Docker garden + executor + rep, with the rep's HTTP
//! interface on its own listener (the auctioneer reaches it the same way
//! whether it runs in this process or on another machine).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use lattice_bbs::SharedStore;
use lattice_executor::{Executor, ExecutorConfig, LogSink};
use lattice_garden::docker::{
    CellLock, DockerGarden, DockerGardenConfig, LifecycleDelivery, INIT_BINARY,
};
use lattice_garden::Garden;
use lattice_models::CellCapacity;
use lattice_rep::{Rep, RepConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The built-in sample app's image, made locally by every cell from the
/// `samples/lattice-app` binary of its lifecycle dir.
pub const SAMPLE_APP_IMAGE: &str = "lattice/lattice-app:latest";

#[derive(Debug, Clone)]
pub struct CellConfig {
    pub cell_id: String,
    pub zone: String,
    /// Directory with the static lifecycle binaries (`lattice-init`, ...).
    pub lifecycle_dir: PathBuf,
    /// Whether they are bind-mounted or uploaded into each container.
    pub lifecycle_delivery: LifecycleDelivery,
    /// Where the rep's HTTP interface listens.
    pub rep_listen: SocketAddr,
    /// Capacity overrides; `None` takes the machine's.
    pub memory_mb: Option<i64>,
    pub disk_mb: Option<i64>,
    pub containers: i64,
    /// See `lattice_executor::ExecutorConfig::max_download_bytes`.
    pub max_download_bytes: u64,
    pub cache_dir: PathBuf,
    pub presence_ttl: Duration,
    /// Whether routers reach this cell's containers at their own addresses
    /// (`--advertise-container-network`); `None`: this machine's own
    /// reach, for a cell whose router runs on the same machine (`lattice
    /// up`).
    pub advertise_container_network: Option<bool>,
    /// How long a drain waits at most for an instance's replacement.
    pub evacuation_timeout: Duration,
    /// Spare containers kept ready per app (`lattice_rep::RepConfig::spare_containers`).
    pub spare_containers: usize,
    /// Spare containers kept ready for all apps together
    /// (`lattice_rep::RepConfig::spare_containers_per_cell`).
    pub spare_containers_per_cell: usize,
}

/// The default of [`CellConfig::evacuation_timeout`]: long enough for a
/// replacement to pull nothing and start (our images are local), short
/// enough that a cell told to stop does stop when none can be placed.
pub const DEFAULT_EVACUATION_TIMEOUT: Duration = Duration::from_secs(120);

/// The addresses a cell is reached at from other machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Advertise {
    /// Where brains reach the rep's interface.
    pub rep: IpAddr,
    /// Where the Docker engine publishes instances' ports and routers send
    /// their traffic. The same as `rep` unless the cell runs in a container
    /// driving its host's engine: then it is the host's address.
    pub instances: IpAddr,
}

pub struct Cell {
    rep: Arc<Rep>,
    /// Held while the cell lives: no other cell with this id can start on
    /// this engine meanwhile (and destroy this one's containers).
    lock: CellLock,
    listener: TcpListener,
    /// Required of callers of the rep's interface, when set.
    rep_secret: Option<String>,
}

impl Cell {
    /// Connects to Docker, binds the rep's listener and registers the cell;
    /// [`Cell::run`] reconciles the cell's containers with the BBS.
    /// Container output and the cell's own lines about its work go to
    /// `logs` (the log hub). The rep advertises its listener's own address
    /// and instances' ports are published on 127.0.0.1: right when every
    /// role shares one machine (see [`Cell::prepare_advertised`]).
    pub async fn prepare(
        config: CellConfig,
        store: SharedStore,
        logs: Arc<dyn LogSink>,
    ) -> anyhow::Result<Cell> {
        Cell::prepare_advertised(config, None, store, logs).await
    }

    /// Like [`Cell::prepare`], for a cell that brains and routers on other
    /// machines reach at `advertise`: the rep advertises
    /// `http://REP:PORT` (PORT: where its listener is bound) and
    /// instances' ports are published on `advertise.instances`, which is
    /// what routers are then told to send traffic to.
    pub async fn prepare_advertised(
        config: CellConfig,
        advertise: Option<Advertise>,
        store: SharedStore,
        logs: Arc<dyn LogSink>,
    ) -> anyhow::Result<Cell> {
        let mut garden_config = DockerGardenConfig {
            lifecycle_delivery: config.lifecycle_delivery,
            image_config_dir: config.cache_dir.join("image-configs"),
            ..DockerGardenConfig::new(&config.lifecycle_dir)
        };
        if let Some(advertise) = advertise {
            garden_config.host_ip = advertise.instances.to_string();
        }
        let garden = DockerGarden::connect(garden_config)
            .await
            .with_context(|| {
                format!(
                    "cannot start the cell (is Docker running, and does {} hold the static lifecycle binaries? \
                     build them with installers/build-lifecycles.sh, or pass --no-cell)",
                    config.lifecycle_dir.display()
                )
            })?;
        // Before anything else touches the engine: reconciling destroys every
        // container carrying this id, which must never hit a live cell's.
        let lock = garden
            .lock_cell(&config.cell_id, &config.lifecycle_dir.join(INIT_BINARY))
            .await
            .with_context(|| format!("cannot start cell {}", config.cell_id))?;
        let sample = config.lifecycle_dir.join("samples").join("lattice-app");
        if sample.is_file() {
            garden
                .ensure_program_image(SAMPLE_APP_IMAGE, &sample, &["EXPOSE 8080".to_string()])
                .await
                .context("cannot build the sample app's image")?;
        } else {
            tracing::info!(path = %sample.display(), "no sample app binary; `ltc create APP lattice/lattice-app` will not work");
        }
        let (machine_memory_mb, machine_disk_mb) = garden
            .machine_capacity()
            .await
            .context("cannot read the machine's capacity from Docker")?;
        let advertise_container_network = match config.advertise_container_network {
            Some(advertise) => advertise,
            None => garden.container_network_is_local().await,
        };
        tracing::info!(
            cell_id = %config.cell_id,
            advertise_container_network,
            "routers reach this cell's instances {}",
            if advertise_container_network {
                "at their container addresses (skipping the engine's port proxy)"
            } else {
                "at the host's published ports"
            }
        );
        let capacity = CellCapacity {
            memory_mb: config.memory_mb.unwrap_or(machine_memory_mb as i64),
            disk_mb: config.disk_mb.unwrap_or(machine_disk_mb as i64),
            containers: config.containers,
        };
        let listener = TcpListener::bind(config.rep_listen)
            .await
            .with_context(|| format!("cannot listen for the rep on {}", config.rep_listen))?;
        let bound = listener
            .local_addr()
            .context("rep listener has no address")?;
        // SocketAddr's display brackets an IPv6 address, as a URL needs.
        let rep_address = match advertise {
            Some(advertise) => format!("http://{}", SocketAddr::new(advertise.rep, bound.port())),
            None => format!("http://{bound}"),
        };
        let executor = Executor::new(
            Arc::new(garden),
            logs.clone(),
            ExecutorConfig {
                max_download_bytes: config.max_download_bytes,
                ..ExecutorConfig::new(config.cell_id.clone(), config.cache_dir.clone())
            },
        );
        let rep = Rep::new(
            RepConfig {
                zone: config.zone.clone(),
                presence_ttl: config.presence_ttl,
                advertise_container_network,
                evacuation_timeout: config.evacuation_timeout,
                spare_containers: config.spare_containers,
                spare_containers_per_cell: config.spare_containers_per_cell,
                ..RepConfig::new(config.cell_id.clone(), capacity, rep_address)
            },
            store,
            executor,
            logs,
        );
        rep.register()
            .await
            .context("cannot register the cell with the store")?;
        tracing::info!(cell_id = %config.cell_id, ?capacity, "cell registered");
        Ok(Cell {
            rep,
            lock,
            listener,
            rep_secret: None,
        })
    }

    /// The cell's rep (to drain it before [`Cell::run`]'s shutdown).
    pub fn rep(&self) -> Arc<Rep> {
        self.rep.clone()
    }

    /// Makes the rep's interface answer only callers presenting `secret`
    /// (the auctioneer, given the same).
    pub fn with_rep_secret(mut self, secret: String) -> Cell {
        self.rep_secret = Some(secret);
        self
    }

    /// Reconciles the cell with the store (see [`Rep::reconcile`]), then
    /// serves the rep and runs its loops until `shutdown`.
    ///
    /// Reconciling here rather than in [`Cell::prepare`] lets the receptor
    /// answer at once after a restart, however many containers the cell
    /// must look at. Until it is done the rep's listener queues the
    /// auctioneer's calls. A store or engine that cannot be reached is
    /// retried until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut pause = Duration::from_millis(100);
        loop {
            match self.rep.reconcile().await {
                Ok(()) => break,
                Err(err) => {
                    tracing::warn!(cell_id = %self.rep.cell_id(), error = %err, "cannot reconcile the cell with the store; retrying");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(Duration::from_secs(5));
        }
        tracing::info!(cell_id = %self.rep.cell_id(), "cell reconciled");
        // `/metrics` beside the rep's interface, behind the same secret.
        let app = lattice_rep::http::router(self.rep.clone()).merge(crate::metrics::route());
        let app = match self.rep_secret {
            Some(secret) => lattice_bbs::http::require_secret(app, secret),
            None => app,
        };
        let app = crate::metrics::track_requests(app, "rep");
        let upkeep = tokio::spawn(crate::metrics::upkeep(shutdown.clone()));
        let served =
            lattice_rep::http::serve_and_run(self.rep.clone(), self.listener, app, shutdown).await;
        if let Err(err) = upkeep.await {
            tracing::error!(error = %err, "the metrics upkeep failed");
        }
        // Let go of the id at once, so that a restart need not wait for the
        // engine to see this process's connection close.
        self.lock.release().await;
        served.context("rep server failed")?;
        Ok(())
    }
}

/// The file in a data dir that keeps its cell's default id.
pub const CELL_ID_FILE: &str = "cell-id";

/// The default id of the cell whose data dir is `data_dir`: the one kept
/// in `DATA_DIR/cell-id`, else a new `cell-HOSTNAME-XXXXXXXX` (8 random hex
/// digits) written there. One per data dir, so that two clusters on one
/// machine (two `lattice up` with their own data dirs) never share an id,
/// and stable across restarts, so that a cell finds its own containers
/// again.
///
/// # Errors
/// The file cannot be read or written, or holds no valid id (the message
/// names it).
pub fn cell_id_for_data_dir(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join(CELL_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let id = text.trim().to_string();
            lattice_models::validation::validate_guid("cell id", &id).with_context(|| {
                format!(
                    "{} holds no valid cell id; fix it or remove it to get a new one",
                    path.display()
                )
            })?;
            return Ok(id);
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => {
            return Err(err).with_context(|| format!("cannot read {}", path.display()));
        }
    }
    let random = uuid::Uuid::new_v4().simple().to_string();
    // A v4 uuid's simple form is 32 hex digits.
    let id = format!("{}-{}", default_cell_id(), &random[..8]);
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    // Written whole then renamed: a crash never leaves half an id.
    let partial = data_dir.join(format!("{CELL_ID_FILE}.partial"));
    std::fs::write(&partial, format!("{id}\n"))
        .and_then(|()| std::fs::rename(&partial, &path))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(id)
}

/// The host's name as a cell id (`cell-HOSTNAME`), made a valid guid; the
/// stem of [`cell_id_for_data_dir`]'s ids and of brains' default ids.
pub fn default_cell_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let cleaned: String = host
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if cleaned.is_empty() {
        "cell-0".to_string()
    } else {
        format!("cell-{cleaned}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_dir_keeps_its_own_cell_id() {
        let root = tempfile::tempdir().expect("temp dir is writable");
        let (one, two) = (root.path().join("one"), root.path().join("two"));
        let first = cell_id_for_data_dir(&one).expect("made");
        assert!(first.starts_with(&default_cell_id()), "{first}");
        lattice_models::validation::validate_guid("id", &first).expect("a valid guid");
        assert_eq!(cell_id_for_data_dir(&one).expect("read"), first, "kept");
        let second = cell_id_for_data_dir(&two).expect("made");
        assert_ne!(first, second, "another data dir, another id");

        std::fs::write(one.join(CELL_ID_FILE), "no/good\n").expect("writable");
        let err = format!("{:#}", cell_id_for_data_dir(&one).unwrap_err());
        assert!(err.contains("holds no valid cell id"), "{err}");
    }
}
