//! An in-process one-machine cluster (`lattice up`'s own code) on ephemeral
//! ports, with a real store, the real Docker engine and a cell whose id is a
//! fresh owner label, so everything it creates is removed afterwards.

#![allow(dead_code)]

pub mod browser;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lattice::cell::CellConfig;
use lattice::up::{Up, UpConfig};
use lattice_client::Client;
use lattice_testkit::docker::OwnerGuard;
use tokio_util::sync::CancellationToken;

pub struct Cluster {
    pub client: Client,
    pub base: String,
    /// `host:port` of the cluster's router.
    pub router: String,
    /// Where the cluster's SSH proxy listens.
    pub ssh: std::net::SocketAddr,
    pub cell_id: String,
    shutdown: CancellationToken,
    running: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _data: tempfile::TempDir,
    // Declared last: dropped after the cluster stops, removing leftovers.
    guard: OwnerGuard,
}

pub struct ClusterOptions {
    pub memory_mb: i64,
    pub policy: lattice_converger::Policy,
    /// `--store`; empty for the embedded SQLite file.
    pub store: String,
    /// The API's basic auth; `None`: open.
    pub credentials: Option<lattice_receptor::Credentials>,
    /// `--spare-containers`.
    pub spare_containers: usize,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            memory_mb: 4096,
            policy: lattice_converger::Policy::default(),
            store: String::new(),
            credentials: None,
            spare_containers: 0,
        }
    }
}

/// The static lifecycle binaries, built once per test run;
/// `LATTICE_TEST_LIFECYCLE_DIR` points at prebuilt ones instead.
pub fn lifecycle_dir() -> PathBuf {
    match std::env::var_os("LATTICE_TEST_LIFECYCLE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => lattice_testkit::lifecycles::build_static(),
    }
}

pub fn up_config(data_dir: &Path, cell_id: &str, options: &ClusterOptions) -> UpConfig {
    UpConfig {
        data_dir: data_dir.to_path_buf(),
        store: options.store.clone(),
        listen: "127.0.0.1:0".parse().expect("valid address"),
        domain: "localhost".to_string(),
        credentials: options.credentials.clone(),
        max_body_bytes: lattice_receptor::DEFAULT_MAX_BODY_BYTES,
        max_upload_bytes: lattice_fileserver::DEFAULT_MAX_UPLOAD_BYTES,
        allow_privileged: false,
        drain_timeout: Duration::from_secs(20),
        cell: Some(CellConfig {
            cell_id: cell_id.to_string(),
            zone: "z1".to_string(),
            lifecycle_dir: lifecycle_dir(),
            lifecycle_delivery: Default::default(),
            rep_listen: "127.0.0.1:0".parse().expect("valid address"),
            memory_mb: Some(options.memory_mb),
            disk_mb: Some(100_000),
            containers: 64,
            max_download_bytes: lattice_executor::DEFAULT_MAX_DOWNLOAD_BYTES,
            cache_dir: data_dir.join("cache"),
            presence_ttl: Duration::from_secs(10),
            advertise_container_network: None,
            evacuation_timeout: lattice::cell::DEFAULT_EVACUATION_TIMEOUT,
            spare_containers: options.spare_containers,
            spare_containers_per_cell: lattice_rep::DEFAULT_SPARE_CONTAINERS_PER_CELL,
        }),
        converge_interval: Duration::from_secs(1),
        policy: options.policy.clone(),
        hub: std::sync::Arc::new(lattice_logs::LogHub::new(lattice_logs::HubConfig::default())),
        router_listen: Some("127.0.0.1:0".parse().expect("valid address")),
        ssh_listen: Some(lattice::ssh::SshListen {
            address: "127.0.0.1:0".parse().expect("valid address"),
            required: true,
        }),
    }
}

impl Cluster {
    pub async fn start() -> Cluster {
        Self::start_with(ClusterOptions::default()).await
    }

    pub async fn start_with(options: ClusterOptions) -> Cluster {
        let guard = OwnerGuard::new("test-cell");
        let data = tempfile::tempdir().expect("temp dir");
        let config = up_config(data.path(), guard.owner(), &options);
        let up = Up::prepare(config).await.expect("cluster starts");
        let address = up.receptor_address().expect("receptor address");
        let base = format!("http://{address}");
        let router = up.router_address().expect("router address").to_string();
        let ssh = up.ssh_address().expect("ssh address");
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(up.run(shutdown.clone()));
        let credentials = options
            .credentials
            .as_ref()
            .map(|c| lattice_client::Credentials::new(c.username.clone(), c.password.clone()));
        let client = Client::new(&base, credentials).expect("client");
        Cluster {
            client,
            base,
            router,
            ssh,
            cell_id: guard.owner().to_string(),
            shutdown,
            running: Some(running),
            _data: data,
            guard,
        }
    }

    /// Stops the cluster as SIGTERM would, and waits for it.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(running) = self.running.take() {
            running
                .await
                .expect("cluster task")
                .expect("cluster stops cleanly");
        }
    }

    /// The cluster's data dir (store, blobs, the cell's cache).
    pub fn data_dir(&self) -> &Path {
        self._data.path()
    }

    /// Containers of this cluster's cell that exist now.
    pub async fn containers(&self) -> Vec<String> {
        containers_of(&self.cell_id).await
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// `docker kill` of an instance's container, behind the cluster's back.
#[allow(dead_code)] // Not every test binary kills an instance.
pub async fn kill_instance_container(instance_guid: &str) {
    lattice_testkit::docker::connect()
        .await
        .kill_container(
            &format!("lattice-lrp-{instance_guid}"),
            None::<bollard::query_parameters::KillContainerOptions>,
        )
        .await
        .expect("docker kill");
}

pub async fn containers_of(owner: &str) -> Vec<String> {
    let docker = lattice_testkit::docker::connect().await;
    let filters = std::collections::HashMap::from([(
        "label".to_string(),
        vec![format!("{}={owner}", lattice_garden::OWNER_PROPERTY)],
    )]);
    let options = bollard::query_parameters::ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    docker
        .list_containers(Some(options))
        .await
        .expect("list containers")
        .into_iter()
        .flat_map(|c| c.names.unwrap_or_default())
        .collect()
}

/// Polls `check` until it returns `Some`, or panics naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What a command wrote to stderr, readable while it runs.
#[derive(Clone, Default)]
pub struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Captured {
    pub fn contents(&self) -> Vec<u8> {
        self.0.lock().expect("no writer panics holding it").clone()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .expect("no writer panics holding it")
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `ltc ARGS` in process against the receptor at `url`: its exit code,
/// stdout and stderr.
pub async fn run_ltc(
    url: &str,
    credentials: Option<lattice_client::Credentials>,
    args: &[&str],
) -> (u8, String, String) {
    let target = ltc::config::Target {
        url: url.to_string(),
        credentials,
        source: ltc::config::Source::Env,
    };
    let mut out = Vec::new();
    let err = Captured::default();
    let argv = std::iter::once("ltc").chain(args.iter().copied());
    let code = ltc::run_with(argv, &target, &mut out, err.clone()).await;
    (
        code,
        String::from_utf8(out).expect("ltc prints UTF-8"),
        String::from_utf8(err.contents()).expect("ltc prints UTF-8"),
    )
}
