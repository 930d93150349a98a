//! `lattice`: the server bundle's binary. It parses flags and hands over to
//! the library; exit codes: 0 ok, 1 failure, 2 usage.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use std::sync::Arc;

use lattice::cell::CellConfig;
use lattice::up::{Up, UpConfig};
use lattice_logs::debug::TracingLayer;
use lattice_logs::{HubConfig, HubSink, LogHub};
use lattice_receptor::Credentials;
use tokio_util::sync::CancellationToken;

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
    /// This machine's cell id; keep it stable across restarts so the cell
    /// finds its own containers again. Default: `cell-HOSTNAME`.
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
    /// Disk the cell offers, in MB. Default: the machine's free disk.
    #[arg(long)]
    cell_disk_mb: Option<i64>,
    /// Containers the cell runs at most.
    #[arg(long, default_value_t = 256)]
    cell_containers: i64,
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
    match cli.command {
        Command::Up(args) => {
            let hub = Arc::new(LogHub::new(HubConfig::default()));
            init_tracing(&args.log, hub.clone())?;
            let runtime =
                tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            runtime.block_on(up(args, hub))
        }
    }
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
        .with_ansi(std::env::var_os("NO_COLOR").is_none())
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

async fn up(args: UpArgs, hub: Arc<LogHub>) -> anyhow::Result<()> {
    let data_dir = match args.data_dir {
        Some(dir) => dir,
        None => directories::ProjectDirs::from("io", "lattice", "lattice")
            .context("cannot find a home directory for the data dir; pass --data-dir")?
            .data_dir()
            .to_path_buf(),
    };
    lattice_models::routes::validate_hostname("--domain", &args.domain)?;
    let credentials = match (args.username, args.password) {
        (Some(username), Some(password)) => Some(Credentials { username, password }),
        _ => None,
    };
    if credentials.is_none() && !args.listen.ip().is_loopback() {
        tracing::warn!(listen = %args.listen, "the receptor listens beyond loopback without credentials; pass --username/--password");
    }
    let cell = if args.no_cell {
        None
    } else {
        let cell_id = args.cell_id.unwrap_or_else(lattice::cell::default_cell_id);
        lattice_models::validation::validate_guid("--cell-id", &cell_id)?;
        let lifecycle_dir = match args.lifecycle_dir {
            Some(dir) => dir,
            None => std::env::current_exe()
                .context("cannot locate the lattice binary; pass --lifecycle-dir")?
                .parent()
                .map(|dir| dir.join("lifecycles"))
                .context("the lattice binary has no directory; pass --lifecycle-dir")?,
        };
        Some(CellConfig {
            cell_id,
            zone: args.zone,
            lifecycle_dir,
            rep_listen: args.rep_listen,
            memory_mb: args.cell_memory_mb,
            disk_mb: args.cell_disk_mb,
            containers: args.cell_containers,
            cache_dir: data_dir.join("cache"),
            presence_ttl: Duration::from_secs(30),
        })
    };
    let config = UpConfig {
        store: args.store,
        hub,
        router_listen: (!args.no_router).then_some(args.router_listen),
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
        drain_timeout: Duration::from_secs(10),
    };
    let shutdown = CancellationToken::new();
    lattice::shutdown::cancel_on_signal(shutdown.clone());
    let up = Up::prepare(config).await?;
    up.run(shutdown).await
}
