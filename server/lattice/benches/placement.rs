//! Placement time on each store backend (SQLite, PostgreSQL): how long a
//! cluster of ten cells takes from `POST /v1/desired_lrps` of N instances
//! until every instance is placed (claimed by a cell) and until every one
//! is RUNNING; then the same for scaling it from N to 2N.
//!
//! Everything is the real code but the containers: a brain
//! ([`lattice::roles::Brain`]: store, receptor, auctioneer, converger, and
//! the store's internal API) and ten cells in two zones, each a real rep
//! and executor on a [`RemoteStore`] through the brain, as `lattice cell`
//! runs them. Only Garden is the recording fake of `lattice_executor::fake`,
//! so no Docker is involved and hundreds of instances fit on one machine;
//! an instance's process "runs" until the cell stops it.
//!
//! Each measure runs three times, each on a fresh cluster and a fresh
//! store (a SQLite file in a temp dir; a new database on one PostgreSQL
//! server with durable settings, started by the bench).
//!
//! Run: `cargo bench -p lattice --bench placement` (needs the PostgreSQL
//! binaries, see `lattice_testkit::postgres`). `PLACEMENT_LOG=info` (a
//! tracing filter) prints the cluster's logs, e.g. each auction round.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use lattice::roles::{Brain, BrainConfig};
use lattice_bbs::{RemoteStore, SharedStore};
use lattice_client::{Client, EventStream};
use lattice_executor::fake::Script;
use lattice_executor::{LogMessage, LogSink};
use lattice_models::{ActualLrpState, CellCapacity, Event};
use lattice_rep::fake::FakeRep;
use lattice_rep::RepConfig;
use lattice_testkit::postgres::{PostgresServer, DURABLE_SETTINGS};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const CELLS: usize = 10;
const ZONES: [&str; 2] = ["z1", "z2"];
/// Each cell: 16 GB, 100 GB of disk, 256 containers; an instance takes
/// 32 MB, so 2 x 500 instances on ten cells use a fifth of the memory.
const CAPACITY: CellCapacity = CellCapacity {
    memory_mb: 16_384,
    disk_mb: 100_000,
    containers: 256,
};
const SIZES: [i64; 2] = [100, 500];
const RUNS: usize = 3;
/// Only keeps a broken run from hanging the bench.
const HANG_GUARD: Duration = Duration::from_secs(120);
const SECRET: &str = "placement-bench-secret";
/// The path of the app's process, which the fake Garden runs "forever".
const APP_PATH: &str = "/bin/app";

/// Cell lines ("Creating container ...") go nowhere: they are not measured.
struct Discard;

impl LogSink for Discard {
    fn emit(&self, _message: LogMessage) {}
}

/// A brain and its cells, all in this process, on one store.
struct Cluster {
    client: Client,
    brain: JoinHandle<anyhow::Result<()>>,
    stop_brain: CancellationToken,
    cells: Vec<JoinHandle<()>>,
    stop_cells: CancellationToken,
    _data: tempfile::TempDir,
}

impl Cluster {
    /// A brain on `store` (empty: SQLite in a temp dir) and [`CELLS`] cells
    /// registered through it.
    async fn start(store: String) -> anyhow::Result<Cluster> {
        let data = tempfile::tempdir()?;
        let brain = Brain::prepare(BrainConfig {
            store,
            data_dir: data.path().join("brain"),
            listen: "127.0.0.1:0".parse()?,
            secret: SECRET.to_string(),
            credentials: None,
            domain: "localhost".to_string(),
            router_address: None,
            max_body_bytes: lattice_receptor::DEFAULT_MAX_BODY_BYTES,
            max_upload_bytes: lattice_fileserver::DEFAULT_MAX_UPLOAD_BYTES,
            allow_privileged: false,
            brain_id: "bench-brain".to_string(),
            lock_ttl: lattice::roles::DEFAULT_LOCK_TTL,
            // `lattice brain`'s default; it also reacts to changes at once.
            converge_interval: Duration::from_secs(10),
            policy: Default::default(),
            hub: Arc::new(lattice_logs::LogHub::new(Default::default())),
            drain_timeout: Duration::from_secs(10),
            ssh_listen: None,
        })
        .await?;
        let url = format!("http://{}", brain.address()?);
        let stop_brain = CancellationToken::new();
        let brain = tokio::spawn(brain.run(stop_brain.clone()));
        let stop_cells = CancellationToken::new();
        let mut cells = Vec::with_capacity(CELLS);
        for i in 0..CELLS {
            let cell_id = format!("cell-{i}");
            let zone = ZONES[i % ZONES.len()];
            cells.push(start_cell(&url, &cell_id, zone, stop_cells.clone()).await?);
        }
        Ok(Cluster {
            client: Client::new(&url, None)?,
            brain,
            stop_brain,
            cells,
            stop_cells,
            _data: data,
        })
    }

    /// Stops the cells (their instances go back to the store, they
    /// deregister), then the brain.
    async fn stop(self) -> anyhow::Result<()> {
        self.stop_cells.cancel();
        for cell in self.cells {
            cell.await.context("a cell panicked")?;
        }
        self.stop_brain.cancel();
        self.brain.await.context("the brain panicked")??;
        Ok(())
    }
}

/// A real rep and executor on a fake Garden, reaching the store through
/// the brain at `brain_url`, as `lattice cell` does; registered when this
/// returns, running until `shutdown`.
async fn start_cell(
    brain_url: &str,
    cell_id: &str,
    zone: &str,
    shutdown: CancellationToken,
) -> anyhow::Result<JoinHandle<()>> {
    let store: SharedStore =
        Arc::new(RemoteStore::connect(vec![brain_url.to_string()], SECRET.to_string()).await?);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let rep_address = format!("http://{}", listener.local_addr()?);
    let cell = FakeRep::new(
        RepConfig {
            zone: zone.to_string(),
            ..RepConfig::new(cell_id, CAPACITY, rep_address)
        },
        store,
        Arc::new(Discard),
    );
    cell.garden
        .script(APP_PATH, Script::runs_for(Duration::from_secs(24 * 3600)));
    cell.rep.reconcile().await?;
    let app = lattice_rep::http::router(cell.rep.clone());
    Ok(tokio::spawn(async move {
        // `cell` (its executor's cache) lives as long as the cell runs.
        let _ = lattice_rep::http::serve_and_run(cell.rep.clone(), listener, app, shutdown).await;
    }))
}

/// When the instances of one measure were all placed, all running, and how
/// evenly they were spread.
struct Timing {
    placed: Duration,
    running: Duration,
    /// Fewest and most instances on one cell.
    per_cell: (usize, usize),
    /// Instances in each zone.
    per_zone: Vec<usize>,
}

/// Each instance's last known state and whether it is on a cell, by index,
/// as the receptor's event stream tells it.
type Instances = HashMap<i64, (ActualLrpState, bool)>;

/// Follows the receptor's event stream until `guid` has `instances`
/// instances on a cell (CLAIMED or RUNNING), then until all are RUNNING;
/// times from `started`. Events rather than polling, so that the measure
/// adds no store reads of its own (a 10 ms poll of 1,000 instances is 100
/// lists a second, on the same two cores) and sees each change at once.
async fn wait_for(
    client: &Client,
    events: &mut EventStream,
    known: &mut Instances,
    guid: &str,
    instances: usize,
    started: Instant,
) -> anyhow::Result<Timing> {
    let count = |known: &Instances, states: &[ActualLrpState]| {
        known
            .values()
            .filter(|(state, on_a_cell)| *on_a_cell && states.contains(state))
            .count()
    };
    let mut placed = None;
    let follow = async {
        loop {
            if placed.is_none()
                && count(known, &[ActualLrpState::Claimed, ActualLrpState::Running]) >= instances
            {
                placed = Some(started.elapsed());
            }
            if count(known, &[ActualLrpState::Running]) >= instances {
                return anyhow::Ok(started.elapsed());
            }
            let event = events
                .next()
                .await
                .context("the event stream ended (fell behind?)")??;
            match event {
                Event::ActualLrpCreated { actual_lrp: lrp }
                | Event::ActualLrpChanged {
                    actual_lrp_after: lrp,
                    ..
                } if lrp.process_guid == guid => {
                    known.insert(lrp.index, (lrp.state, !lrp.cell_id.is_empty()));
                }
                Event::ActualLrpRemoved { actual_lrp: lrp } if lrp.process_guid == guid => {
                    known.remove(&lrp.index);
                }
                _ => {}
            }
        }
    };
    let running = tokio::time::timeout(HANG_GUARD, follow)
        .await
        .with_context(|| format!("{guid}: not all {instances} running after {HANG_GUARD:?}"))??;

    let lrps = client.actual_lrps_by_process_guid(guid).await?;
    anyhow::ensure!(
        lrps.len() == instances,
        "{guid}: {} instances, {instances} wanted",
        lrps.len()
    );
    let mut per_cell: BTreeMap<String, usize> =
        (0..CELLS).map(|i| (format!("cell-{i}"), 0)).collect();
    let mut per_zone = vec![0; ZONES.len()];
    for lrp in &lrps {
        *per_cell.entry(lrp.cell_id.clone()).or_default() += 1;
        let cell: usize = lrp
            .cell_id
            .trim_start_matches("cell-")
            .parse()
            .context("an instance on an unknown cell")?;
        per_zone[cell % ZONES.len()] += 1;
    }
    Ok(Timing {
        placed: placed.unwrap_or(running),
        running,
        per_cell: (
            per_cell.values().copied().min().unwrap_or(0),
            per_cell.values().copied().max().unwrap_or(0),
        ),
        per_zone,
    })
}

/// One row of the results table.
struct Row {
    backend: &'static str,
    measure: String,
    run: usize,
    timing: Timing,
}

/// On a fresh cluster: desire `instances` instances, wait for them, then
/// scale to twice as many and wait again.
async fn measure(
    backend: &'static str,
    store: String,
    instances: i64,
    run: usize,
) -> anyhow::Result<[Row; 2]> {
    let cluster = Cluster::start(store).await?;
    let guid = format!("bench-app-{instances}-{run}");
    let request = serde_json::from_value(json!({
        "process_guid": guid, "domain": "bench", "rootfs": "docker:///busybox",
        "instances": instances, "memory_mb": 32, "disk_mb": 64,
        "action": {"run": {"path": APP_PATH}},
    }))?;
    let mut events = cluster.client.events().await?;
    let mut known = Instances::new();
    let started = Instant::now();
    cluster.client.create_desired_lrp(&request).await?;
    let desire = wait_for(
        &cluster.client,
        &mut events,
        &mut known,
        &guid,
        instances as usize,
        started,
    )
    .await?;

    let update = serde_json::from_value(json!({"instances": 2 * instances}))?;
    let started = Instant::now();
    cluster.client.update_desired_lrp(&guid, &update).await?;
    let scale = wait_for(
        &cluster.client,
        &mut events,
        &mut known,
        &guid,
        2 * instances as usize,
        started,
    )
    .await?;
    drop(events);
    cluster.stop().await?;
    Ok([
        Row {
            backend,
            measure: format!("desire {instances}"),
            run,
            timing: desire,
        },
        Row {
            backend,
            measure: format!("scale {instances} -> {}", 2 * instances),
            run,
            timing: scale,
        },
    ])
}

fn millis(duration: Duration) -> String {
    format!("{}", duration.as_millis())
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    if let Ok(filter) = std::env::var("PLACEMENT_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .init();
    }
    let postgres = tokio::task::spawn_blocking(|| PostgresServer::try_start_with(DURABLE_SETTINGS))
        .await?
        .context("cannot start PostgreSQL")?;
    let mut rows = Vec::new();
    for backend in ["sqlite", "postgres"] {
        for instances in SIZES {
            for run in 1..=RUNS {
                let (store, database) = match backend {
                    "postgres" => {
                        let database = postgres.create_database();
                        (postgres.url(&database), Some(database))
                    }
                    _ => (String::new(), None),
                };
                let measured = measure(backend, store, instances, run)
                    .await
                    .with_context(|| format!("{backend}, {instances} instances, run {run}"))?;
                for row in measured {
                    eprintln!(
                        "{} {} run {}: placed {} ms, running {} ms",
                        row.backend,
                        row.measure,
                        row.run,
                        millis(row.timing.placed),
                        millis(row.timing.running)
                    );
                    rows.push(row);
                }
                if let Some(database) = database {
                    postgres.drop_database(&database)?;
                }
            }
        }
    }

    println!();
    println!(
        "{CELLS} cells in {} zones; time from the request to all instances placed (CLAIMED \
         or RUNNING on a cell) and to all RUNNING, seen on the receptor's event stream",
        ZONES.len()
    );
    println!(
        "{:<9} {:<16} {:>3} {:>10} {:>11} {:>16} {:>10}",
        "backend", "measure", "run", "placed ms", "running ms", "per cell min-max", "per zone"
    );
    for row in &rows {
        println!(
            "{:<9} {:<16} {:>3} {:>10} {:>11} {:>16} {:>10}",
            row.backend,
            row.measure,
            row.run,
            millis(row.timing.placed),
            millis(row.timing.running),
            format!("{}-{}", row.timing.per_cell.0, row.timing.per_cell.1),
            row.timing
                .per_zone
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("/"),
        );
    }
    drop(postgres);
    Ok(())
}
