//! `lattice`: the server bundle's binary. It parses flags and hands over to
//! the library; exit codes: 0 ok, 1 failure, 2 usage.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use std::sync::Arc;

use lattice::cell::CellConfig;
use lattice::roles::{Brain, BrainConfig, CellRoleConfig, RouterRole, RouterRoleConfig};
use lattice::up::{Up, UpConfig};
use lattice_garden::docker::LifecycleDelivery;
use lattice_logs::debug::TracingLayer;
use lattice_logs::{HubConfig, HubSink, LogHub};
use lattice_receptor::Credentials;
use tokio_util::sync::CancellationToken;

/// The router makes a few dozen small allocations per request; mimalloc
/// serves them faster than glibc's allocator (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `--max-download-mb` by default: the executor's own default.
const DEFAULT_MAX_DOWNLOAD_MB: u64 = lattice_executor::DEFAULT_MAX_DOWNLOAD_BYTES >> 20;
#[derive(Parser)]
#[command(
    name = "lattice",
    version,
    about = "The lattice cluster runtime server bundle"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a whole one-machine cluster in this process (embedded store, local Docker).
    Up(UpArgs),
    /// Run a brain of a cluster of several machines: store, receptor, log
    /// hub, auctioneer, converger, and the store's internal API for cells.
    Brain(BrainArgs),
    /// Run a cell of a cluster of several machines: the rep and the Docker
    /// containers it runs, using the store through the brains.
    Cell(CellArgs),
    /// Run a router of a cluster of several machines: routes app traffic to
    /// the instances, following a brain's receptor.
    Router(RouterArgs),
}

#[derive(Args)]
struct BrainArgs {
    /// The store of the cluster's state: `postgres://USER:PASSWORD@HOST:PORT/DB`,
    /// shared by every brain. A SQLite file (`sqlite://PATH`, or empty for
    /// one in the data dir) serves a cluster of one brain only.
    #[arg(
        long,
        env = "LATTICE_STORE",
        default_value = "",
        hide_env_values = true
    )]
    store: String,
    /// Where a SQLite store is kept when --store names none. Default: the
    /// platform's data dir, e.g. ~/.local/share/lattice.
    #[arg(long, env = "LATTICE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Address of the receptor API (for `ltc`, cells and routers).
    #[arg(long, env = "LATTICE_LISTEN", default_value = "127.0.0.1:8888")]
    listen: SocketAddr,
    /// The cluster secret cells present to use the store and send logs;
    /// give every brain and cell the same. Prefer the environment variable:
    /// arguments are visible to every user of the machine.
    #[arg(long, env = "LATTICE_SECRET", hide_env_values = true)]
    secret: String,
    /// Require HTTP basic auth with this username on the public API (with --password).
    #[arg(long, env = "LATTICE_USERNAME", requires = "password")]
    username: Option<String>,
    /// Password for HTTP basic auth (with --username).
    #[arg(
        long,
        env = "LATTICE_PASSWORD",
        requires = "username",
        hide_env_values = true
    )]
    password: Option<String>,
    /// System domain apps are routed under: APP.DOMAIN.
    #[arg(long, env = "LATTICE_DOMAIN", default_value = "localhost")]
    domain: String,
    /// Where the SSH proxy (`ltc ssh`, `ssh -p 2222 diego:APP/0@HOST`)
    /// listens. Default: the --listen address with port 2222 (no proxy, with
    /// a warning, when that port is taken). Without --username/--password it
    /// listens on loopback only, whatever this says.
    #[arg(long, env = "LATTICE_SSH_LISTEN")]
    ssh_listen: Option<SocketAddr>,
    /// Run no SSH proxy: `ltc ssh` then does not work with this cluster.
    #[arg(long, conflicts_with = "ssh_listen")]
    no_ssh: bool,
    /// Where the routers take app traffic (HOST:PORT), told to `ltc` in /v1/info.
    #[arg(long, env = "LATTICE_ROUTER_ADDRESS")]
    router_address: Option<String>,
    /// Accept work that asks for `privileged: true` (containers with the
    /// host root's capabilities). Off by default: such work is refused with
    /// a 400 naming the field.
    #[arg(long, env = "LATTICE_ALLOW_PRIVILEGED")]
    allow_privileged: bool,
    /// Largest request body the receptor accepts, in bytes.
    #[arg(long, default_value_t = lattice_receptor::DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
    /// Largest app bits or droplet upload the file server accepts, in bytes.
    #[arg(long, default_value_t = lattice_fileserver::DEFAULT_MAX_UPLOAD_BYTES)]
    max_upload_bytes: u64,
    /// This brain's name in the auctioneer and converger locks (followed by
    /// a random part). Default: `brain-HOSTNAME`.
    #[arg(long, env = "LATTICE_BRAIN_ID")]
    brain_id: Option<String>,
    /// Lease of the auctioneer and converger locks: a standby brain takes
    /// over within about this long after the active one died.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    lock_ttl: Duration,
    /// Time between the converger's periodic passes; it also reacts to
    /// changes at once.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    converge_interval: Duration,
    /// How long a completed task is kept (for `ltc task`) before it expires.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    task_ttl: Duration,
    /// Log filter (tracing's EnvFilter syntax), e.g. `info` or `lattice=debug`.
    #[arg(long, env = "LATTICE_LOG", default_value = "info")]
    log: String,
}

#[derive(Args)]
struct CellArgs {
    /// The brains' receptor URLs (`http://HOST:PORT`), comma-separated, in
    /// order of preference; the cell moves to the next when one is down.
    #[arg(long, env = "LATTICE_BRAINS", required = true, value_delimiter = ',')]
    brain: Vec<String>,
    /// The cluster secret the brains run with.
    #[arg(long, env = "LATTICE_SECRET", hide_env_values = true)]
    secret: String,
    /// This cell's id; keep it stable across restarts so the cell finds
    /// its own containers again. No two live cells on one Docker engine
    /// may share one (a second is refused). Default: `cell-HOSTNAME-XXXXXXXX`,
    /// made at first start and kept in DATA_DIR/cell-id.
    #[arg(long, env = "LATTICE_CELL_ID")]
    cell_id: Option<String>,
    /// The cell's availability zone; an app's instances are spread over zones.
    #[arg(long, env = "LATTICE_ZONE", default_value = "z1")]
    zone: String,
    /// The address brains and routers reach this machine at: the rep is
    /// advertised there and instances' ports are published on it. Default:
    /// the address of the interface that routes to the first brain.
    #[arg(long, env = "LATTICE_ADVERTISE_ADDRESS")]
    advertise_address: Option<IpAddr>,
    /// The address instances' ports are published on, which routers send
    /// app traffic to. Default: --advertise-address. Set it when the cell
    /// runs in a container driving its host's Docker engine: then it is the
    /// host's address as routers see it (e.g. the gateway of their network).
    #[arg(long, env = "LATTICE_INSTANCE_ADDRESS")]
    instance_address: Option<IpAddr>,
    /// Where the rep's interface (called by the brains' auctioneer) listens.
    #[arg(long, env = "LATTICE_REP_LISTEN", default_value = "0.0.0.0:1800")]
    rep_listen: SocketAddr,
    /// Directory with the static lifecycle binaries placed into every
    /// container. Default: `lifecycles/` beside the `lattice` binary.
    #[arg(long, env = "LATTICE_LIFECYCLE_DIR")]
    lifecycle_dir: Option<PathBuf>,
    /// Upload the lifecycle binaries into every container before it starts
    /// instead of bind-mounting them (slower). Automatic when the Docker
    /// engine runs elsewhere (its host name differs from this machine's: a
    /// remote DOCKER_HOST, a cell in a container); set it when the engine
    /// shares the host name but not the files.
    #[arg(long, env = "LATTICE_UPLOAD_LIFECYCLES")]
    upload_lifecycles: bool,
    /// Where the cell keeps its download cache. Default: the platform's
    /// data dir, e.g. ~/.local/share/lattice.
    #[arg(long, env = "LATTICE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Memory the cell offers, in MB. Default: the machine's.
    #[arg(long)]
    cell_memory_mb: Option<i64>,
    /// Disk the cell offers, in MB. Default: the total size (not the free
    /// space) of the file system holding the Docker engine's data.
    #[arg(long)]
    cell_disk_mb: Option<i64>,
    /// Containers the cell runs at most.
    #[arg(long, default_value_t = 256)]
    cell_containers: i64,
    /// The most started, empty containers the cell keeps ready per app it
    /// runs (one per three of the app's instances on the cell, at least
    /// one), so that the app's next instances here (crashes restarted, a
    /// scale-up) start without waiting for Docker to create and start
    /// containers (a crashed instance RUNNING again in about 0.2 s instead
    /// of 0.6 s). Each is an idle container (about 17 MB of the engine's
    /// processes); 0 keeps none.
    #[arg(long, default_value_t = 3)]
    spare_containers: usize,
    /// The most spare containers the cell keeps for all its apps together
    /// (see `--spare-containers`); apps placed once it holds this many go
    /// without.
    #[arg(long, default_value_t = lattice_rep::DEFAULT_SPARE_CONTAINERS_PER_CELL)]
    spare_containers_per_cell: usize,
    /// The most one download may bring onto the cell, in MB: a droplet, a
    /// buildpack or a task's file, counting what an archive expands to. A
    /// container's own disk limit wins where it is lower.
    #[arg(long, default_value_t = DEFAULT_MAX_DOWNLOAD_MB, value_parser = clap::value_parser!(u64).range(1..))]
    max_download_mb: u64,
    /// How long the cell counts as alive without renewing its presence
    /// (renewed every third of it); its work is placed elsewhere after.
    /// Short, so that a lost cell's instances run elsewhere within seconds;
    /// raise it where the network to the brains is slow.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    presence_ttl: Duration,
    /// Tell routers to reach this cell's instances at their container
    /// addresses, skipping the engine's port proxy (faster). Only when the
    /// routers' machines route to this cell's container network; a router
    /// falls back to the published host port when the direct connection
    /// fails.
    #[arg(long, env = "LATTICE_ADVERTISE_CONTAINER_NETWORK")]
    advertise_container_network: bool,
    /// On SIGTERM the cell drains first: its running instances are placed
    /// on other cells and stop once their replacements run and are routed.
    /// This is the longest it waits for a replacement.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    evacuation_timeout: Duration,
    /// Log filter (tracing's EnvFilter syntax), e.g. `info` or `lattice=debug`.
    #[arg(long, env = "LATTICE_LOG", default_value = "info")]
    log: String,
}

#[derive(Args)]
struct RouterArgs {
    /// The brains' receptor URLs (`http://HOST:PORT`), comma-separated, in
    /// order of preference; the router follows one and moves to the next
    /// when it fails.
    #[arg(long, env = "LATTICE_BRAINS", required = true, value_delimiter = ',')]
    brain: Vec<String>,
    /// Where the router listens for app traffic (`http://APP.DOMAIN:PORT`);
    /// TCP routes listen on the same address.
    #[arg(long, env = "LATTICE_ROUTER_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Where to serve `GET /metrics` (Prometheus text), e.g.
    /// 127.0.0.1:8081; not served unless given. Behind the API's basic auth
    /// when --username/--password are given; without them, anyone who
    /// reaches the address can read it, so prefer a loopback address.
    #[arg(long, env = "LATTICE_ROUTER_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// The brain's API username, when it requires basic auth (with --password).
    #[arg(long, env = "LATTICE_USERNAME", requires = "password")]
    username: Option<String>,
    /// The brain's API password (with --username).
    #[arg(
        long,
        env = "LATTICE_PASSWORD",
        requires = "username",
        hide_env_values = true
    )]
    password: Option<String>,
    /// Log filter (tracing's EnvFilter syntax), e.g. `info` or `lattice=debug`.
    #[arg(long, env = "LATTICE_LOG", default_value = "info")]
    log: String,
}

#[derive(Args)]
struct UpArgs {
    /// Where the cluster keeps its state (the store, blobs). Default: the
    /// platform's data dir, e.g. ~/.local/share/lattice.
    #[arg(long, env = "LATTICE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The store of the cluster's state: empty for an embedded SQLite file in
    /// the data dir (nothing to install), `sqlite://PATH`, or
    /// `postgres://USER:PASSWORD@HOST:PORT/DB` so that several machines
    /// share one store.
    #[arg(
        long,
        env = "LATTICE_STORE",
        default_value = "",
        hide_env_values = true
    )]
    store: String,
    /// Address of the receptor API that `ltc` talks to.
    #[arg(long, env = "LATTICE_LISTEN", default_value = "127.0.0.1:8888")]
    listen: SocketAddr,
    /// Where the router listens for app traffic (`http://APP.DOMAIN:PORT`);
    /// TCP routes listen on the same address.
    #[arg(long, env = "LATTICE_ROUTER_LISTEN", default_value = "127.0.0.1:8080")]
    router_listen: SocketAddr,
    /// Run no router here.
    #[arg(long)]
    no_router: bool,
    /// Where the SSH proxy (`ltc ssh`, `ssh -p 2222 diego:APP/0@HOST`)
    /// listens. Default: the --listen address with port 2222 (no proxy, with
    /// a warning, when that port is taken). Without --username/--password it
    /// listens on loopback only, whatever this says.
    #[arg(long, env = "LATTICE_SSH_LISTEN")]
    ssh_listen: Option<SocketAddr>,
    /// Run no SSH proxy: `ltc ssh` then does not work with this cluster.
    #[arg(long, conflicts_with = "ssh_listen")]
    no_ssh: bool,
    /// System domain apps are routed under: APP.DOMAIN. `localhost` resolves
    /// without DNS on most systems.
    #[arg(long, env = "LATTICE_DOMAIN", default_value = "localhost")]
    domain: String,
    /// Require HTTP basic auth with this username (with --password).
    #[arg(long, env = "LATTICE_USERNAME", requires = "password")]
    username: Option<String>,
    /// Password for HTTP basic auth (with --username).
    #[arg(
        long,
        env = "LATTICE_PASSWORD",
        requires = "username",
        hide_env_values = true
    )]
    password: Option<String>,
    /// Largest app bits or droplet upload the file server accepts, in bytes.
    #[arg(long, default_value_t = lattice_fileserver::DEFAULT_MAX_UPLOAD_BYTES)]
    max_upload_bytes: u64,
    /// Accept work that asks for `privileged: true` (containers with the
    /// host root's capabilities). Off by default: such work is refused with
    /// a 400 naming the field.
    #[arg(long, env = "LATTICE_ALLOW_PRIVILEGED")]
    allow_privileged: bool,
    /// Largest request body the receptor accepts, in bytes.
    #[arg(long, default_value_t = lattice_receptor::DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
    /// Run no cell here: only the store, receptor and brain.
    #[arg(long)]
    no_cell: bool,
    /// Directory with the static lifecycle binaries placed into every
    /// container (`lattice-init`, `builder`, `launcher`, `healthcheck`), as
    /// `installers/build-lifecycles.sh` makes them. Default: `lifecycles/`
    /// beside the `lattice` binary.
    #[arg(long, env = "LATTICE_LIFECYCLE_DIR")]
    lifecycle_dir: Option<PathBuf>,
    /// This cell's id; keep it stable across restarts so the cell finds
    /// its own containers again. No two live cells on one Docker engine
    /// may share one (a second is refused). Default: `cell-HOSTNAME-XXXXXXXX`,
    /// made at first start and kept in DATA_DIR/cell-id.
    #[arg(long, env = "LATTICE_CELL_ID")]
    cell_id: Option<String>,
    /// The cell's availability zone.
    #[arg(long, default_value = "z1")]
    zone: String,
    /// Address of the rep's interface that the auctioneer calls.
    #[arg(long, default_value = "127.0.0.1:0")]
    rep_listen: SocketAddr,
    /// Memory the cell offers, in MB. Default: the machine's.
    #[arg(long)]
    cell_memory_mb: Option<i64>,
    /// Disk the cell offers, in MB. Default: the total size (not the free
    /// space) of the file system holding the Docker engine's data.
    #[arg(long)]
    cell_disk_mb: Option<i64>,
    /// Containers the cell runs at most.
    #[arg(long, default_value_t = 256)]
    cell_containers: i64,
    /// The most started, empty containers the cell keeps ready per app it
    /// runs (one per three of the app's instances on the cell, at least
    /// one), so that the app's next instances here (crashes restarted, a
    /// scale-up) start without waiting for Docker to create and start
    /// containers (a crashed instance RUNNING again in about 0.2 s instead
    /// of 0.6 s). Each is an idle container (about 17 MB of the engine's
    /// processes); 0 keeps none.
    #[arg(long, default_value_t = 3)]
    spare_containers: usize,
    /// The most spare containers the cell keeps for all its apps together
    /// (see `--spare-containers`); apps placed once it holds this many go
    /// without.
    #[arg(long, default_value_t = lattice_rep::DEFAULT_SPARE_CONTAINERS_PER_CELL)]
    spare_containers_per_cell: usize,
    /// The most one download may bring onto the cell, in MB: a droplet, a
    /// buildpack or a task's file, counting what an archive expands to. A
    /// container's own disk limit wins where it is lower.
    #[arg(long, default_value_t = DEFAULT_MAX_DOWNLOAD_MB, value_parser = clap::value_parser!(u64).range(1..))]
    max_download_mb: u64,
    /// Time between the converger's periodic passes; it also reacts to
    /// changes at once.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    converge_interval: Duration,
    /// How long a completed task is kept (for `ltc task`) before it expires.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    task_ttl: Duration,
    /// Log filter (tracing's EnvFilter syntax), e.g. `info` or `lattice=debug`.
    #[arg(long, env = "LATTICE_LOG", default_value = "info")]
    log: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = || tokio::runtime::Runtime::new().context("cannot start the async runtime");
    match cli.command {
        Command::Up(args) => {
            let hub = Arc::new(LogHub::new(HubConfig::default()));
            init_tracing(&args.log, hub.clone())?;
            runtime()?.block_on(up(args, hub))
        }
        Command::Brain(args) => {
            let hub = Arc::new(LogHub::new(HubConfig::default()));
            init_tracing(&args.log, hub.clone())?;
            runtime()?.block_on(brain(args, hub))
        }
        Command::Cell(args) => {
            init_stderr_tracing(&args.log)?;
            runtime()?.block_on(cell(args))
        }
        Command::Router(args) => {
            init_stderr_tracing(&args.log)?;
            runtime()?.block_on(router(args))
        }
    }
}

/// The basic-auth pair from --username/--password. An empty value counts as
/// unset, as a compose or environment file writes an unset variable; one
/// without the other is an error.
fn basic_auth(
    username: Option<String>,
    password: Option<String>,
) -> anyhow::Result<Option<(String, String)>> {
    let username = username.filter(|u| !u.is_empty());
    let password = password.filter(|p| !p.is_empty());
    match (username, password) {
        (Some(username), Some(password)) => Ok(Some((username, password))),
        (None, None) => Ok(None),
        (Some(_), None) => {
            anyhow::bail!("--username is set but --password (LATTICE_PASSWORD) is empty")
        }
        (None, Some(_)) => {
            anyhow::bail!("--password is set but --username (LATTICE_USERNAME) is empty")
        }
    }
}

/// Colours only on a terminal: escape codes in a file or `docker logs`
/// get in the way of reading and grepping.
fn color_logs() -> bool {
    use std::io::IsTerminal;
    std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal()
}

/// Logs of a role without a log hub of its own go to stderr only.
fn init_stderr_tracing(filter: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .with_context(|| format!("invalid --log filter {filter:?}"))?;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(color_logs())
        .with_env_filter(filter)
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}

/// Logs go to stderr (filtered by `--log`) and, at info and above, to the
/// log hub for `ltc debug-logs`.
fn init_tracing(filter: &str, hub: Arc<LogHub>) -> anyhow::Result<()> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;

    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .with_context(|| format!("invalid --log filter {filter:?}"))?;
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(color_logs())
        .with_filter(filter);
    let debug_logs = TracingLayer::new(Arc::new(HubSink::new(hub)))
        .with_filter(tracing_subscriber::filter::LevelFilter::INFO);
    tracing_subscriber::registry()
        .with(stderr)
        .with(debug_logs)
        .try_init()
        .context("cannot set up logging")?;
    Ok(())
}

/// The data dir given, or the platform's.
fn data_dir_or_default(dir: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match dir {
        Some(dir) => Ok(dir),
        None => Ok(directories::ProjectDirs::from("io", "lattice", "lattice")
            .context("cannot find a home directory for the data dir; pass --data-dir")?
            .data_dir()
            .to_path_buf()),
    }
}

/// The lifecycle dir given, or `lifecycles/` beside the binary.
fn lifecycle_dir_or_default(dir: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match dir {
        Some(dir) => Ok(dir),
        None => std::env::current_exe()
            .context("cannot locate the lattice binary; pass --lifecycle-dir")?
            .parent()
            .map(|dir| dir.join("lifecycles"))
            .context("the lattice binary has no directory; pass --lifecycle-dir"),
    }
}

/// A lease renewed every third of `ttl` needs a third that is not zero.
fn ensure_lease(flag: &str, ttl: Duration) -> anyhow::Result<()> {
    anyhow::ensure!(
        ttl >= Duration::from_millis(300),
        "{flag} must be at least 300ms, not {}",
        humantime::format_duration(ttl)
    );
    Ok(())
}

/// Apps' recent log lines survive a restart: kept in `DATA_DIR/logs`.
fn keep_logs_on_disk(hub: &LogHub, data_dir: &std::path::Path) -> anyhow::Result<()> {
    let dir = data_dir.join("logs");
    hub.keep_on_disk(lattice_logs::DiskConfig::new(&dir))
        .with_context(|| format!("cannot keep log lines in {}", dir.display()))
}

async fn brain(args: BrainArgs, hub: Arc<LogHub>) -> anyhow::Result<()> {
    lattice_models::routes::validate_hostname("--domain", &args.domain)?;
    ensure_lease("--lock-ttl", args.lock_ttl)?;
    anyhow::ensure!(
        !args.converge_interval.is_zero(),
        "--converge-interval must not be zero"
    );
    if args.secret.len() < 16 {
        tracing::warn!("the cluster secret is shorter than 16 characters; anyone who guesses it can change the cluster's state");
    }
    let credentials = basic_auth(args.username, args.password)?
        .map(|(username, password)| Credentials { username, password });
    if credentials.is_none() && !args.listen.ip().is_loopback() {
        tracing::warn!(listen = %args.listen, "the receptor listens beyond loopback without credentials; pass --username/--password");
    }
    let brain_id = match args.brain_id {
        Some(id) => id,
        None => lattice::cell::default_cell_id().replacen("cell-", "brain-", 1),
    };
    let data_dir = data_dir_or_default(args.data_dir)?;
    keep_logs_on_disk(&hub, &data_dir)?;
    let config = BrainConfig {
        store: args.store,
        data_dir,
        listen: args.listen,
        secret: args.secret,
        credentials,
        domain: args.domain,
        router_address: args.router_address,
        max_body_bytes: args.max_body_bytes,
        max_upload_bytes: args.max_upload_bytes,
        allow_privileged: args.allow_privileged,
        brain_id,
        lock_ttl: args.lock_ttl,
        converge_interval: args.converge_interval,
        policy: lattice_converger::Policy {
            completed_ttl: args.task_ttl,
            ..Default::default()
        },
        hub,
        drain_timeout: Duration::from_secs(10),
        ssh_listen: ssh_listen(args.no_ssh, args.ssh_listen, args.listen),
    };
    let shutdown = CancellationToken::new();
    lattice::shutdown::cancel_on_signal(shutdown.clone());
    let brain = Brain::prepare(config).await?;
    brain.run(shutdown).await
}

async fn cell(args: CellArgs) -> anyhow::Result<()> {
    ensure_lease("--presence-ttl", args.presence_ttl)?;
    let data_dir = data_dir_or_default(args.data_dir)?;
    let cell_id = match args.cell_id {
        Some(id) => id,
        None => lattice::cell::cell_id_for_data_dir(&data_dir)?,
    };
    lattice_models::validation::validate_guid("--cell-id", &cell_id)?;
    let config = CellRoleConfig {
        brains: args.brain,
        secret: args.secret,
        cell: CellConfig {
            cell_id,
            zone: args.zone,
            lifecycle_dir: lifecycle_dir_or_default(args.lifecycle_dir)?,
            lifecycle_delivery: if args.upload_lifecycles {
                LifecycleDelivery::Upload
            } else {
                LifecycleDelivery::Auto
            },
            rep_listen: args.rep_listen,
            memory_mb: args.cell_memory_mb,
            disk_mb: args.cell_disk_mb,
            containers: args.cell_containers,
            spare_containers: args.spare_containers,
            spare_containers_per_cell: args.spare_containers_per_cell,
            max_download_bytes: args.max_download_mb << 20,
            cache_dir: data_dir.join("cache"),
            presence_ttl: args.presence_ttl,
            advertise_container_network: Some(args.advertise_container_network),
            evacuation_timeout: args.evacuation_timeout,
        },
        advertise: args.advertise_address,
        instance_address: args.instance_address,
        drain_timeout: Duration::from_secs(10),
    };
    let shutdown = CancellationToken::new();
    lattice::shutdown::cancel_on_signal(shutdown.clone());
    lattice::roles::run_cell(config, shutdown).await
}

async fn router(args: RouterArgs) -> anyhow::Result<()> {
    let credentials = basic_auth(args.username, args.password)?
        .map(|(username, password)| lattice_client::Credentials::new(username, password));
    let config = RouterRoleConfig {
        brains: args.brain,
        listen: args.listen,
        credentials,
        metrics_listen: args.metrics_listen,
        drain_timeout: Duration::from_secs(10),
    };
    let shutdown = CancellationToken::new();
    lattice::shutdown::cancel_on_signal(shutdown.clone());
    let router = RouterRole::prepare(config).await?;
    router.run(shutdown).await
}

/// Where the SSH proxy listens: `--ssh-listen`, else the API's address
/// with the default port (given up, with a warning, when it is taken);
/// `None` with `--no-ssh`.
fn ssh_listen(
    no_ssh: bool,
    ssh_listen: Option<SocketAddr>,
    api_listen: SocketAddr,
) -> Option<lattice::ssh::SshListen> {
    if no_ssh {
        return None;
    }
    Some(match ssh_listen {
        Some(address) => lattice::ssh::SshListen {
            address,
            required: true,
        },
        None => lattice::ssh::SshListen {
            address: SocketAddr::new(api_listen.ip(), lattice_ssh::DEFAULT_SSH_PORT),
            required: false,
        },
    })
}

async fn up(args: UpArgs, hub: Arc<LogHub>) -> anyhow::Result<()> {
    let data_dir = data_dir_or_default(args.data_dir)?;
    keep_logs_on_disk(&hub, &data_dir)?;
    lattice_models::routes::validate_hostname("--domain", &args.domain)?;
    let credentials = basic_auth(args.username, args.password)?
        .map(|(username, password)| Credentials { username, password });
    if credentials.is_none() && !args.listen.ip().is_loopback() {
        tracing::warn!(listen = %args.listen, "the receptor listens beyond loopback without credentials; pass --username/--password");
    }
    let cell = if args.no_cell {
        None
    } else {
        let cell_id = match args.cell_id {
            Some(id) => id,
            None => lattice::cell::cell_id_for_data_dir(&data_dir)?,
        };
        lattice_models::validation::validate_guid("--cell-id", &cell_id)?;
        let lifecycle_dir = lifecycle_dir_or_default(args.lifecycle_dir)?;
        Some(CellConfig {
            cell_id,
            zone: args.zone,
            lifecycle_dir,
            lifecycle_delivery: LifecycleDelivery::Auto,
            rep_listen: args.rep_listen,
            memory_mb: args.cell_memory_mb,
            disk_mb: args.cell_disk_mb,
            containers: args.cell_containers,
            spare_containers: args.spare_containers,
            spare_containers_per_cell: args.spare_containers_per_cell,
            max_download_bytes: args.max_download_mb << 20,
            cache_dir: data_dir.join("cache"),
            presence_ttl: lattice_rep::DEFAULT_PRESENCE_TTL,
            // Its router runs on this machine: direct where it reaches.
            advertise_container_network: None,
            evacuation_timeout: lattice::cell::DEFAULT_EVACUATION_TIMEOUT,
        })
    };
    let config = UpConfig {
        store: args.store,
        hub,
        router_listen: (!args.no_router).then_some(args.router_listen),
        ssh_listen: ssh_listen(args.no_ssh, args.ssh_listen, args.listen),
        cell,
        converge_interval: args.converge_interval,
        policy: lattice_converger::Policy {
            completed_ttl: args.task_ttl,
            ..Default::default()
        },
        data_dir,
        listen: args.listen,
        domain: args.domain,
        credentials,
        max_body_bytes: args.max_body_bytes,
        max_upload_bytes: args.max_upload_bytes,
        allow_privileged: args.allow_privileged,
        drain_timeout: Duration::from_secs(10),
    };
    let shutdown = CancellationToken::new();
    lattice::shutdown::cancel_on_signal(shutdown.clone());
    let up = Up::prepare(config).await?;
    up.run(shutdown).await
}

#[cfg(test)]
mod tests {
    use super::basic_auth;

    #[test]
    fn regression_cell_disk_help_says_what_is_registered() {
        use clap::CommandFactory;
        let cli = super::Cli::command();
        for role in ["up", "cell"] {
            let command = cli.find_subcommand(role).expect("a role");
            let arg = command
                .get_arguments()
                .find(|a| a.get_id() == "cell_disk_mb")
                .expect("the flag");
            let help = arg.get_help().expect("documented").to_string();
            // `DockerGarden::machine_capacity` registers the file system's
            // size; the help once said "free disk".
            assert!(help.contains("total size"), "{role}: {help}");
            assert!(!help.contains("free disk"), "{role}: {help}");
        }
    }

    #[test]
    fn the_download_maximum_is_a_positive_number_of_mb_on_both_cell_roles() {
        use clap::Parser;
        let parse = |args: &[&str]| super::Cli::try_parse_from(args).map(|cli| cli.command);
        let Ok(super::Command::Up(up)) = parse(&["lattice", "up", "--max-download-mb", "10"])
        else {
            panic!("`up --max-download-mb 10` parses as up");
        };
        assert_eq!(up.max_download_mb, 10);
        let Ok(super::Command::Cell(cell)) = parse(&[
            "lattice",
            "cell",
            "--brain",
            "http://b:8889",
            "--secret",
            "s",
        ]) else {
            panic!("`cell --brain URL` parses as cell");
        };
        assert_eq!(
            cell.max_download_mb << 20,
            lattice_executor::DEFAULT_MAX_DOWNLOAD_BYTES
        );
        for role in ["up", "cell"] {
            let Err(err) = parse(&["lattice", role, "--max-download-mb", "0"]) else {
                panic!("{role}: 0 MB is refused");
            };
            assert!(err.to_string().contains("--max-download-mb"), "{err}");
        }
    }

    #[test]
    fn the_ssh_proxy_listens_beside_the_api_unless_told_otherwise() {
        let api: std::net::SocketAddr = "0.0.0.0:8888".parse().expect("valid");
        let default = super::ssh_listen(false, None, api).expect("on by default");
        assert_eq!(default.address.to_string(), "0.0.0.0:2222");
        assert!(!default.required, "a taken default port turns it off only");
        let asked: std::net::SocketAddr = "127.0.0.1:2200".parse().expect("valid");
        let explicit = super::ssh_listen(false, Some(asked), api).expect("on");
        assert_eq!((explicit.address, explicit.required), (asked, true));
        assert_eq!(super::ssh_listen(true, None, api), None);
    }

    #[test]
    fn empty_credentials_count_as_unset_but_half_a_pair_is_an_error() {
        let some = |s: &str| Some(s.to_string());
        assert_eq!(basic_auth(None, None).unwrap(), None);
        assert_eq!(basic_auth(some(""), some("")).unwrap(), None);
        assert_eq!(
            basic_auth(some("admin"), some("pw")).unwrap(),
            Some(("admin".to_string(), "pw".to_string()))
        );
        let err = basic_auth(some("admin"), some("")).unwrap_err();
        assert!(err.to_string().contains("--password"), "{err}");
        let err = basic_auth(some(""), some("pw")).unwrap_err();
        assert!(err.to_string().contains("--username"), "{err}");
    }
}
