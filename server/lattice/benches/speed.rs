//! Issue 16's speed goals, end to end against the real Docker engine, each
//! beside what a user would compare it to, measured in the same run:
//!
//! - `create`: `ltc create APP IMAGE` (in process, against a one-machine
//!   cluster running `lattice up`'s code) until the app's first answer
//!   through the router, against `docker run -d -p` of the same image until
//!   its first answer on the published port. Rounds alternate the two.
//! - `heal`: instances killed until their replacements are RUNNING: 1 of
//!   3, and 3 of 10 at once, two ways: `docker kill` of their containers
//!   (the engine kills and reports), and `kill -9` of the app's process
//!   from the host (a crash or an OOM kill; the container stays). The
//!   anchor is the engine's own `docker kill` + `docker start` of a
//!   container of the same image until it answers again.
//! - `cell-loss` (SQLite) and `cell-loss-postgres`: a brain and two
//!   `lattice cell` processes with default settings; `kill -9` of the cell
//!   holding half of 8 instances until all 8 are RUNNING on the other. The
//!   killed cell then starts again and must destroy its stale instances
//!   (no more containers of the app running than desired).
//!
//! `--spare-containers N` runs the one-machine cluster of `create` and
//! `heal` with `lattice up --spare-containers N` (default 3, as `lattice
//! up`); `heal` kills only once the app's spares are ready. `cell-loss`
//! runs its cells with `lattice cell`'s defaults.
//!
//! Run: `cargo bench -p lattice --bench speed -- [SCENARIO...] [--rounds N]
//! [--spare-containers N]`
//! (all scenarios, 5 rounds by default; needs Docker, busybox-static and,
//! for PostgreSQL, Debian's postgresql). `RUST_LOG` (e.g.
//! `lattice_rep=debug`) adds the in-process cluster's own log on stderr.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::{BTreeMap, HashMap};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use lattice::up::Up;
use lattice_client::{Client, Credentials};
use lattice_models::{ActualLrp, ActualLrpState, Event};
use lattice_testkit::docker::OwnerGuard;
use lattice_testkit::images::{DOCKER_APP_IMAGE, DOCKER_APP_PORT};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "speed-bench-secret-0123456789";
const USER: (&str, &str) = ("admin", "speed-bench-password");
/// Guards against a hang only.
const PATIENCE: Duration = Duration::from_secs(120);

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    // The cluster runs in this process: RUST_LOG shows where its time goes.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let mut scenarios = Vec::new();
    let mut rounds = 5;
    // `lattice up`'s default.
    let mut spares = 3;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--rounds" => {
                rounds = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| anyhow::anyhow!("--rounds needs a number"))?
            }
            "--spare-containers" => {
                spares = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| anyhow::anyhow!("--spare-containers needs a number"))?
            }
            // cargo bench passes --bench.
            "--bench" => {}
            "create" | "heal" | "cell-loss" | "cell-loss-postgres" => scenarios.push(arg),
            other => anyhow::bail!("unknown argument {other:?}"),
        }
    }
    if scenarios.is_empty() {
        scenarios = ["create", "heal", "cell-loss", "cell-loss-postgres"]
            .map(String::from)
            .to_vec();
    }
    println!("load (uptime): {}", uptime());
    lattice_testkit::images::docker_app_image().await;
    lattice_testkit::images::busybox_image().await;
    for scenario in scenarios {
        match scenario.as_str() {
            "create" => create(rounds, spares).await?,
            "heal" => heal(rounds, spares).await?,
            "cell-loss" => cell_loss(rounds, false).await?,
            "cell-loss-postgres" => cell_loss(rounds, true).await?,
            _ => unreachable!("checked above"),
        }
        println!("load (uptime): {}", uptime());
    }
    Ok(())
}

fn uptime() -> String {
    Command::new("uptime")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn free_port() -> u16 {
    // Bind port 0 and release it; the next user binds it right after.
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a loopback port is free")
        .port()
}

fn millis(d: Duration) -> String {
    format!("{}", d.as_millis())
}

fn summary(label: &str, times: &[Duration]) {
    let mut sorted = times.to_vec();
    sorted.sort();
    let list: Vec<String> = times.iter().map(|t| millis(*t)).collect();
    println!(
        "{label}: median {} ms, min {} ms, max {} ms (rounds: {})",
        sorted[sorted.len() / 2].as_millis(),
        sorted[0].as_millis(),
        sorted[sorted.len() - 1].as_millis(),
        list.join(", ")
    );
}

/// GETs `url` (with `host` as the Host header) every 5 ms until it answers
/// 2xx.
async fn first_answer(http: &reqwest::Client, url: &str, host: Option<&str>) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut request = http.get(url);
        if let Some(host) = host {
            request = request.header("host", host);
        }
        if let Ok(response) = request.send().await {
            if response.status().is_success() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{url} never answered");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A one-machine cluster as `lattice up` runs it, with its defaults for
/// the converger and the cell's presence.
struct OneMachine {
    client: Client,
    base: String,
    router: String,
    owner: OwnerGuard,
    shutdown: CancellationToken,
    running: tokio::task::JoinHandle<anyhow::Result<()>>,
    _data: tempfile::TempDir,
}

impl OneMachine {
    async fn start(spare_containers: usize) -> anyhow::Result<OneMachine> {
        let owner = OwnerGuard::new("speed-cell");
        let data = tempfile::tempdir()?;
        let mut config = common::up_config(
            data.path(),
            owner.owner(),
            &common::ClusterOptions {
                spare_containers,
                ..Default::default()
            },
        );
        config.converge_interval = Duration::from_secs(10);
        if let Some(cell) = config.cell.as_mut() {
            cell.presence_ttl = lattice_rep::DEFAULT_PRESENCE_TTL;
        }
        let up = Up::prepare(config).await?;
        let base = format!("http://{}", up.receptor_address()?);
        let router = up
            .router_address()
            .ok_or_else(|| anyhow::anyhow!("no router"))?
            .to_string();
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(up.run(shutdown.clone()));
        Ok(OneMachine {
            client: Client::new(&base, None)?,
            base,
            router,
            owner,
            shutdown,
            running,
            _data: data,
        })
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.running.await??;
        drop(self.owner);
        Ok(())
    }
}

/// `ltc create` until the first routed answer, against `docker run -d -p`
/// until the first answer, alternating.
async fn create(rounds: usize, spares: usize) -> anyhow::Result<()> {
    println!(
        "== create: `ltc create APP {DOCKER_APP_IMAGE}` vs `docker run -d -p` ({rounds} rounds)"
    );
    let cluster = OneMachine::start(spares).await?;
    let http = reqwest::Client::new();
    let label = format!(
        "{}={}",
        lattice_garden::OWNER_PROPERTY,
        cluster.owner.owner()
    );
    let mut docker_times = Vec::new();
    let mut ltc_returned = Vec::new();
    let mut lattice_times = Vec::new();
    for round in 0..rounds {
        let port = free_port();
        let started = Instant::now();
        let run = tokio::process::Command::new("docker")
            .args(["run", "-d", "--label", &label, "-p"])
            .arg(format!("127.0.0.1:{port}:{DOCKER_APP_PORT}"))
            .arg(DOCKER_APP_IMAGE)
            .output()
            .await?;
        anyhow::ensure!(run.status.success(), "docker run failed: {run:?}");
        first_answer(&http, &format!("http://127.0.0.1:{port}/"), None).await;
        docker_times.push(started.elapsed());
        let id = String::from_utf8_lossy(&run.stdout).trim().to_string();
        tokio::process::Command::new("docker")
            .args(["rm", "-f", &id])
            .stdout(Stdio::null())
            .status()
            .await?;

        let app = format!("speed-{round}");
        let started = Instant::now();
        let (code, out, err) = common::run_ltc(
            &cluster.base,
            None,
            &["create", &app, DOCKER_APP_IMAGE, "--timeout", "60s"],
        )
        .await;
        ltc_returned.push(started.elapsed());
        anyhow::ensure!(code == 0, "ltc create failed: {out}\n{err}");
        first_answer(
            &http,
            &format!("http://{}/", cluster.router),
            Some(&format!("{app}.localhost")),
        )
        .await;
        lattice_times.push(started.elapsed());
        cluster.client.delete_desired_lrp(&app).await?;
        // Let the instance drain and go before the next round.
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    summary("docker run -d -p -> first answer", &docker_times);
    summary("ltc create -> ltc returned", &ltc_returned);
    summary("ltc create -> first routed answer", &lattice_times);
    cluster.stop().await
}

/// An app of busybox httpd on $PORT, health-checked.
async fn web_app(
    guid: &str,
    instances: i64,
) -> anyhow::Result<lattice_models::DesiredLrpCreateRequest> {
    let rootfs = lattice_testkit::images::busybox_image().await;
    Ok(serde_json::from_value(json!({
        "process_guid": guid,
        "log_guid": guid,
        "domain": "bench",
        "rootfs": rootfs,
        "instances": instances,
        "memory_mb": 32,
        "ports": [8080],
        "action": {"run": {"path": "/bin/httpd", "args": ["-f", "-p", "8080", "-h", "/tmp"]}},
        "monitor": {"run": {"path": "/.lattice/bin/healthcheck", "args": ["--port", "8080"]}},
    }))?)
}

/// Waits until `guid` has `count` RUNNING instances (none on `not_on`);
/// instance guid and cell per index.
async fn all_running(
    client: &Client,
    guid: &str,
    count: usize,
    not_on: Option<&str>,
) -> anyhow::Result<BTreeMap<i64, ActualLrp>> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Ok(lrps) = client.actual_lrps_by_process_guid(guid).await {
            let ok = lrps.len() == count
                && lrps.iter().all(|l| {
                    l.state == ActualLrpState::Running && Some(l.cell_id.as_str()) != not_on
                });
            if ok {
                return Ok(lrps.into_iter().map(|l| (l.index, l)).collect());
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{guid} never had {count} instances running"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Container ids labelled with all of `labels`, running only unless `all`.
async fn containers(labels: &[(&str, &str)], all: bool) -> anyhow::Result<Vec<String>> {
    let docker = lattice_testkit::docker::connect().await;
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let filters = HashMap::from([("label".to_string(), labels)]);
    let options = bollard::query_parameters::ListContainersOptionsBuilder::default()
        .all(all)
        .filters(&filters)
        .build();
    Ok(docker
        .list_containers(Some(options))
        .await?
        .into_iter()
        .filter_map(|c| c.id)
        .collect())
}

/// How many running containers with `labels` run a process: instances'
/// containers, not the cells' empty spares.
async fn instance_containers(labels: &[(&str, &str)]) -> anyhow::Result<usize> {
    let docker = lattice_testkit::docker::connect().await;
    let mut running = 0;
    for id in containers(labels, false).await? {
        match docker.inspect_container(&id, None).await {
            Ok(inspect) if inspect.exec_ids.as_ref().is_some_and(|ids| !ids.is_empty()) => {
                running += 1
            }
            // Gone meanwhile, or empty.
            _ => {}
        }
    }
    Ok(running)
}

/// Waits until `app` has `containers` running: its instances' and its
/// spares'.
async fn spares_ready(owner: &str, app: &str, containers_wanted: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let running = containers(
            &[
                (lattice_garden::OWNER_PROPERTY, owner),
                (lattice_rep::PROCESS_GUID_PROPERTY, app),
            ],
            false,
        )
        .await?;
        if running.len() >= containers_wanted {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{app} has {} containers running, not {containers_wanted}",
            running.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn kill_container(docker: &bollard::Docker, id: &str) -> anyhow::Result<()> {
    let options = bollard::query_parameters::KillContainerOptionsBuilder::default()
        .signal("KILL")
        .build();
    docker.kill_container(id, Some(options)).await?;
    Ok(())
}

#[derive(Clone, Copy)]
enum Kill {
    /// `docker kill`: the engine kills the container and reports it.
    Container,
    /// `kill -9` of the app's process on the host, as a crash or the OOM
    /// killer would: the container itself stays up.
    Process,
}

impl Kill {
    fn label(self) -> &'static str {
        match self {
            Kill::Container => "docker kill",
            Kill::Process => "app process kill -9",
        }
    }

    fn slug(self) -> &'static str {
        match self {
            Kill::Container => "container",
            Kill::Process => "process",
        }
    }
}

/// The host pid of the app's own process (`/bin/httpd`, not the
/// `lattice-init spawn` that started it) in container `id`.
async fn app_process(docker: &bollard::Docker, id: &str) -> anyhow::Result<i32> {
    let options = bollard::query_parameters::TopOptionsBuilder::new()
        .ps_args("-o pid,args")
        .build();
    let top = docker.top_processes(id, Some(options)).await?;
    top.processes
        .unwrap_or_default()
        .iter()
        .find(|row| {
            row.get(1)
                .is_some_and(|args| args.starts_with("/bin/httpd"))
        })
        .and_then(|row| row.first()?.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no /bin/httpd process in container {id}"))
}

fn kill_process(pid: i32) -> anyhow::Result<()> {
    let pid = rustix::process::Pid::from_raw(pid)
        .ok_or_else(|| anyhow::anyhow!("no such process: {pid}"))?;
    rustix::process::kill_process(pid, rustix::process::Signal::KILL)
        .map_err(|e| anyhow::anyhow!("kill -9 {pid:?}: {e}"))
}

/// Killed instances until their replacements are RUNNING, with the
/// engine's restart of a killed container as the anchor.
async fn heal(rounds: usize, spares: usize) -> anyhow::Result<()> {
    println!("== heal: instances killed until RUNNING again ({rounds} rounds each, {spares} spare containers per app)");
    let cluster = OneMachine::start(spares).await?;
    let http = reqwest::Client::new();
    let owner = cluster.owner.owner().to_string();
    // Connected once: a kill is timed from its request, not from agreeing
    // on an API version with the engine.
    let docker = lattice_testkit::docker::connect().await;

    // The anchor: the engine restarting a killed container of the image.
    let label = format!("{}={owner}", lattice_garden::OWNER_PROPERTY);
    let port = free_port();
    let run = tokio::process::Command::new("docker")
        .args(["run", "-d", "--label", &label, "-p"])
        .arg(format!("127.0.0.1:{port}:{DOCKER_APP_PORT}"))
        .arg(DOCKER_APP_IMAGE)
        .output()
        .await?;
    anyhow::ensure!(run.status.success(), "docker run failed: {run:?}");
    let id = String::from_utf8_lossy(&run.stdout).trim().to_string();
    let url = format!("http://127.0.0.1:{port}/");
    first_answer(&http, &url, None).await;
    let mut anchor = Vec::new();
    for _ in 0..rounds {
        let started = Instant::now();
        kill_container(&docker, &id).await?;
        let status = tokio::process::Command::new("docker")
            .args(["start", &id])
            .stdout(Stdio::null())
            .status()
            .await?;
        anyhow::ensure!(status.success(), "docker start failed");
        first_answer(&http, &url, None).await;
        anchor.push(started.elapsed());
    }
    tokio::process::Command::new("docker")
        .args(["rm", "-f", &id])
        .stdout(Stdio::null())
        .status()
        .await?;
    summary(
        "docker kill + docker start -> first answer (anchor)",
        &anchor,
    );

    for (instances, killed, how) in [
        (3_i64, 1_usize, Kill::Container),
        (10, 3, Kill::Container),
        (3, 1, Kill::Process),
        (10, 3, Kill::Process),
    ] {
        let mut crashed_after = Vec::new();
        let mut running_after = Vec::new();
        for round in 0..rounds {
            let app = format!("heal-{instances}-{}-{round}", how.slug());
            cluster
                .client
                .create_desired_lrp(&web_app(&app, instances).await?)
                .await?;
            let before = all_running(&cluster.client, &app, instances as usize, None).await?;
            let mut events = cluster.client.events().await?;
            let victims: Vec<i64> = (0..killed as i64).collect();
            let wanted = lattice_rep::spare_containers_wanted(spares, instances as usize);
            spares_ready(&owner, &app, instances as usize + wanted).await?;
            let mut ids = Vec::new();
            for index in &victims {
                let found = containers(
                    &[
                        (lattice_garden::OWNER_PROPERTY, &owner),
                        (
                            lattice_rep::INSTANCE_GUID_PROPERTY,
                            &before[index].instance_guid,
                        ),
                    ],
                    false,
                )
                .await?;
                anyhow::ensure!(
                    found.len() == 1,
                    "instance {index} has containers {found:?}"
                );
                ids.extend(found);
            }
            let mut pids = Vec::new();
            for id in &ids {
                pids.push(match how {
                    Kill::Container => 0,
                    Kill::Process => app_process(&docker, id).await?,
                });
            }
            let started = Instant::now();
            // In a task of its own: the engine answers `docker kill` only
            // after its kill, and the events meanwhile are read as they
            // come, not all at once when it has answered.
            let killing = tokio::spawn({
                let docker = docker.clone();
                async move {
                    let kills = ids.iter().zip(&pids).map(|(id, pid)| async {
                        match how {
                            Kill::Container => kill_container(&docker, id).await?,
                            Kill::Process => kill_process(*pid)?,
                        }
                        anyhow::Ok(started.elapsed())
                    });
                    futures::future::try_join_all(kills).await
                }
            });
            let mut first_crash = None;
            let mut healed = std::collections::BTreeSet::new();
            // Where the time goes: each victim's state changes, in ms.
            let mut timeline: BTreeMap<i64, Vec<String>> = BTreeMap::new();
            let deadline = tokio::time::Instant::now() + PATIENCE;
            while healed.len() < victims.len() {
                let event = tokio::time::timeout_at(deadline, events.next())
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("event stream ended"))??;
                if let Event::ActualLrpChanged {
                    actual_lrp_after: after,
                    ..
                } = event
                {
                    if after.process_guid != app || !victims.contains(&after.index) {
                        continue;
                    }
                    timeline.entry(after.index).or_default().push(format!(
                        "{:?} {}",
                        after.state,
                        millis(started.elapsed())
                    ));
                    if after.state == ActualLrpState::Crashed && first_crash.is_none() {
                        first_crash = Some(started.elapsed());
                    }
                    if after.state == ActualLrpState::Running
                        && after.instance_guid != before[&after.index].instance_guid
                    {
                        healed.insert(after.index);
                    }
                }
            }
            running_after.push(started.elapsed());
            crashed_after.push(first_crash.unwrap_or_default());
            let killed_after: Vec<String> = killing.await??.into_iter().map(millis).collect();
            println!(
                "  {killed} of {instances}, {}, round {round}: killed after {} ms",
                how.label(),
                killed_after.join(", ")
            );
            for (index, changes) in &timeline {
                println!(
                    "  {killed} of {instances}, {}, round {round}, index {index}: {}",
                    how.label(),
                    changes.join(", ")
                );
            }
            cluster.client.delete_desired_lrp(&app).await?;
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        summary(
            &format!("{killed} of {instances}, {} -> first CRASHED", how.label()),
            &crashed_after,
        );
        summary(
            &format!(
                "{killed} of {instances}, {} -> all RUNNING again",
                how.label()
            ),
            &running_after,
        );
    }
    cluster.stop().await
}

/// A `lattice` process, killed when dropped.
struct Process(Child);

impl Process {
    fn spawn(args: &[String]) -> anyhow::Result<Process> {
        let child = Command::new(env!("CARGO_BIN_EXE_lattice"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        Ok(Process(child))
    }

    fn kill(&mut self) {
        // An error means it has exited already.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

fn brain_args(data: &std::path::Path, port: u16, store: Option<&str>) -> Vec<String> {
    let mut args: Vec<String> = [
        "brain",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--secret",
        SECRET,
        "--username",
        USER.0,
        "--password",
        USER.1,
        "--brain-id",
        "speed-brain",
        "--log",
        "warn",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(store) = store {
        args.extend(["--store".to_string(), store.to_string()]);
    }
    args.extend([
        "--data-dir".to_string(),
        data.join("brain").display().to_string(),
    ]);
    args
}

fn cell_args(data: &std::path::Path, brain: &str, id: &str) -> Vec<String> {
    [
        "cell",
        "--brain",
        brain,
        "--secret",
        SECRET,
        "--cell-id",
        id,
        "--zone",
        "z1",
        "--rep-listen",
        "127.0.0.1:0",
        "--advertise-address",
        "127.0.0.1",
        "--cell-memory-mb",
        "4096",
        "--cell-disk-mb",
        "100000",
        "--cell-containers",
        "64",
        "--log",
        "warn",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        "--lifecycle-dir".to_string(),
        common::lifecycle_dir().display().to_string(),
        "--data-dir".to_string(),
        data.join(id).display().to_string(),
    ])
    .collect()
}

async fn registered(client: &Client, id: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Ok(cells) = client.cells().await {
            if cells.iter().any(|c| c.presence.cell_id == id) {
                return Ok(());
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "cell {id} never registered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `kill -9` of one of two cells until its instances run on the other;
/// then it comes back and must destroy its stale instances.
async fn cell_loss(rounds: usize, postgres: bool) -> anyhow::Result<()> {
    const INSTANCES: usize = 8;
    let backend = if postgres { "PostgreSQL" } else { "SQLite" };
    println!("== cell loss ({backend}): kill -9 of one of two cells holding {INSTANCES} instances ({rounds} rounds)");
    let mut detected = Vec::new();
    let mut moved = Vec::new();
    let mut cleaned = Vec::new();
    for round in 0..rounds {
        let pg = postgres.then(lattice_testkit::postgres::TestPostgres::start);
        let data = tempfile::tempdir()?;
        let port = free_port();
        let brain_url = format!("http://127.0.0.1:{port}");
        let _brain = Process::spawn(&brain_args(
            data.path(),
            port,
            pg.as_ref().map(|pg| pg.url()),
        ))?;
        let client = Client::new(&brain_url, Some(Credentials::new(USER.0, USER.1)))?;
        let deadline = Instant::now() + PATIENCE;
        while client.info().await.is_err() {
            anyhow::ensure!(Instant::now() < deadline, "the brain never answered");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let owners = [OwnerGuard::new("speed-loss"), OwnerGuard::new("speed-loss")];
        let mut cells = Vec::new();
        for owner in &owners {
            cells.push(Process::spawn(&cell_args(
                data.path(),
                &brain_url,
                owner.owner(),
            ))?);
            registered(&client, owner.owner()).await?;
        }
        let app = format!("loss-{round}");
        client
            .create_desired_lrp(&web_app(&app, INSTANCES as i64).await?)
            .await?;
        let before = all_running(&client, &app, INSTANCES, None).await?;
        let victim = owners[0].owner().to_string();
        let on_victim = before.values().filter(|l| l.cell_id == victim).count();
        anyhow::ensure!(on_victim > 0, "no instance on the victim: {before:?}");

        let started = Instant::now();
        cells[0].kill();
        let mut first_moved = None;
        let deadline = Instant::now() + PATIENCE;
        loop {
            let lrps = client.actual_lrps_by_process_guid(&app).await?;
            if first_moved.is_none()
                && lrps
                    .iter()
                    .any(|l| before[&l.index].cell_id == victim && l.cell_id != victim)
            {
                first_moved = Some(started.elapsed());
            }
            let done = lrps.len() == INSTANCES
                && lrps
                    .iter()
                    .all(|l| l.state == ActualLrpState::Running && l.cell_id != victim);
            if done {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "the instances never moved");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        moved.push(started.elapsed());
        detected.push(first_moved.unwrap_or_default());
        println!(
            "round {round}: {on_victim} instances on the killed cell; first unclaimed after {} ms, all RUNNING elsewhere after {} ms",
            millis(first_moved.unwrap_or_default()),
            millis(started.elapsed())
        );

        // The stale containers still run while the cell is down; once it is
        // back, it must destroy them.
        let app_label = [(lattice_rep::PROCESS_GUID_PROPERTY, app.as_str())];
        let stale = instance_containers(&app_label).await?;
        let back = Instant::now();
        cells[0] = Process::spawn(&cell_args(data.path(), &brain_url, &victim))?;
        registered(&client, &victim).await?;
        let deadline = Instant::now() + PATIENCE;
        loop {
            let running = instance_containers(&app_label).await?;
            if running == INSTANCES {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "stale instances were never destroyed ({running} running)"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        cleaned.push(back.elapsed());
        let after = all_running(&client, &app, INSTANCES, None).await?;
        println!(
            "round {round}: {stale} containers of the app running while the cell was down; {INSTANCES} after it came back ({} ms), {} RUNNING instances",
            millis(back.elapsed()),
            after.len()
        );
        drop(cells);
        drop(owners);
    }
    summary(
        &format!("{backend}: kill -9 -> first instance unclaimed"),
        &detected,
    );
    summary(
        &format!("{backend}: kill -9 -> all RUNNING on the other cell"),
        &moved,
    );
    summary(
        &format!("{backend}: cell back -> stale containers destroyed"),
        &cleaned,
    );
    Ok(())
}
