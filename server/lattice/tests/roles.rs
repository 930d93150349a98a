//! The roles apart, end to end: `lattice brain`, `lattice cell` and
//! `lattice router` as separate processes on loopback ports, sharing a real
//! PostgreSQL store through the brains, running containers on the real
//! Docker engine.
//!
//! Every process is stopped when its guard drops (SIGTERM, then SIGKILL if
//! it lingers), and every cell's id is a fresh owner label, so that its
//! containers are removed afterwards, even those of a killed cell.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::eventually;
use lattice_bbs::{PostgresStore, Store};
use lattice_client::{Client, Credentials};
use lattice_models::{ActualLrpState, DesiredLrpCreateRequest, TaskCreateRequest, TaskState};
use lattice_testkit::docker::OwnerGuard;
use lattice_testkit::postgres::TestPostgres;
use serde_json::json;

/// Guards against a hang; the waits end as soon as their condition holds.
const WAIT: Duration = Duration::from_secs(90);
const SECRET: &str = "roles-test-secret-0123456789";
const USER: (&str, &str) = ("admin", "roles-test-password");
/// Short, so that a killed cell's work moves within seconds.
const PRESENCE_TTL: &str = "3s";
/// Short, so that a standby brain takes over within seconds.
const LOCK_TTL: &str = "3s";

fn free_port() -> u16 {
    // Bind port 0 and release it; the process binds it right after.
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a loopback port is free")
        .port()
}

/// A `lattice` process, stopped when dropped.
struct Process {
    name: String,
    child: Child,
}

impl Process {
    fn spawn(name: &str, args: &[String], stderr: Stdio) -> Process {
        let child = Command::new(env!("CARGO_BIN_EXE_lattice"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Process {
            name: name.to_string(),
            child,
        }
    }

    /// SIGKILL: the process gets no chance to clean up, as on a crash.
    fn kill(&mut self) {
        // An error means it has exited already.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and SIGKILL if it has not stopped after a while.
    fn terminate(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("{} did not stop on SIGTERM; killing it", self.name);
        self.kill();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.terminate();
    }
}

struct BrainProcess {
    process: Process,
}

struct CellProcess {
    id: String,
    zone: String,
    process: Process,
}

/// A cluster of separate processes.
/// Fields drop in declaration order: routers and cells stop while the
/// brains still serve them, then the brains, then the owner guards remove
/// containers, then the database goes.
struct Roles {
    routers: Vec<(String, Process)>,
    cells: Vec<CellProcess>,
    brains: Vec<BrainProcess>,
    owners: Vec<OwnerGuard>,
    pg: TestPostgres,
    data: tempfile::TempDir,
}

impl Roles {
    fn new() -> Roles {
        Roles {
            pg: TestPostgres::start(),
            data: tempfile::tempdir().expect("a temporary directory can be made"),
            brains: Vec::new(),
            cells: Vec::new(),
            routers: Vec::new(),
            owners: Vec::new(),
        }
    }

    /// Starts a brain named `id` and waits until its API answers.
    async fn brain(&mut self, id: &str) -> String {
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let args: Vec<String> = [
            "brain",
            "--store",
            self.pg.url(),
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--secret",
            SECRET,
            "--username",
            USER.0,
            "--password",
            USER.1,
            "--brain-id",
            id,
            "--lock-ttl",
            LOCK_TTL,
            "--converge-interval",
            "1s",
            "--log",
            "warn",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([
            "--data-dir".to_string(),
            self.data.path().join(id).display().to_string(),
        ])
        .collect();
        let process = Process::spawn(id, &args, Stdio::inherit());
        let client = client(&url);
        eventually(&format!("{id} to answer"), WAIT, || async {
            client.info().await.ok()
        })
        .await;
        self.brains.push(BrainProcess { process });
        url
    }

    fn cell_args(&self, brains: &[String], id: &str, zone: &str, secret: &str) -> Vec<String> {
        [
            "cell",
            "--brain",
            &brains.join(","),
            "--secret",
            secret,
            "--cell-id",
            id,
            "--zone",
            zone,
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
            "--presence-ttl",
            PRESENCE_TTL,
            "--log",
            "warn",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([
            "--lifecycle-dir".to_string(),
            common::lifecycle_dir().display().to_string(),
            "--data-dir".to_string(),
            self.data.path().join(id).display().to_string(),
        ])
        .collect()
    }

    /// Starts a cell following `brains` and waits until it is registered.
    async fn cell(&mut self, brains: &[String], zone: &str) -> String {
        self.cell_with(brains, zone, &[]).await
    }

    /// Like [`Roles::cell`], with more arguments for `lattice cell`.
    async fn cell_with(&mut self, brains: &[String], zone: &str, extra: &[&str]) -> String {
        let owner = OwnerGuard::new("roles-cell");
        let id = owner.owner().to_string();
        self.owners.push(owner);
        let mut args = self.cell_args(brains, &id, zone, SECRET);
        args.extend(extra.iter().map(|a| a.to_string()));
        let process = Process::spawn(&id, &args, Stdio::inherit());
        let client = client(&brains[0]);
        eventually(&format!("cell {id} to register"), WAIT, || async {
            let cells = client.cells().await.ok()?;
            cells.iter().any(|c| c.presence.cell_id == id).then_some(())
        })
        .await;
        self.cells.push(CellProcess {
            id: id.clone(),
            zone: zone.to_string(),
            process,
        });
        id
    }

    /// Starts a router following `brain` and waits until it accepts
    /// connections; its `host:port`.
    async fn router(&mut self, brain: &str) -> String {
        let port = free_port();
        let address = format!("127.0.0.1:{port}");
        let args: Vec<String> = [
            "router",
            "--brain",
            brain,
            "--listen",
            &address,
            "--username",
            USER.0,
            "--password",
            USER.1,
            "--log",
            "warn",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let process = Process::spawn("router", &args, Stdio::inherit());
        eventually("the router to listen", WAIT, || async {
            tokio::net::TcpStream::connect(&address).await.ok()
        })
        .await;
        self.routers.push((address.clone(), process));
        address
    }

    fn zone_of(&self, cell_id: &str) -> String {
        self.cells
            .iter()
            .find(|c| c.id == cell_id)
            .map(|c| c.zone.clone())
            .unwrap_or_else(|| panic!("{cell_id} is none of this test's cells"))
    }

    fn cell_process(&mut self, cell_id: &str) -> &mut Process {
        &mut self
            .cells
            .iter_mut()
            .find(|c| c.id == cell_id)
            .unwrap_or_else(|| panic!("{cell_id} is none of this test's cells"))
            .process
    }
}

fn client(url: &str) -> Client {
    Client::new(url, Some(Credentials::new(USER.0, USER.1))).expect("a valid brain URL")
}

async fn web_app(guid: &str, instances: i64) -> DesiredLrpCreateRequest {
    let rootfs = lattice_testkit::images::busybox_image().await;
    serde_json::from_value(json!({
        "process_guid": guid,
        "log_guid": guid,
        "domain": "tests",
        "rootfs": rootfs,
        "instances": instances,
        "memory_mb": 32,
        "ports": [8080],
        "routes": {"cf-router": [{"hostnames": [format!("{guid}.localhost")], "port": 8080}]},
        "action": {"run": {"path": "/bin/sh", "args": ["-c",
            "echo $INSTANCE_INDEX > /tmp/index.html; exec httpd -f -p $PORT -h /tmp"]}},
        "monitor": {"run": {"path": "/.lattice/bin/healthcheck", "args": ["--port", "8080"]}},
    }))
    .expect("a valid desired LRP")
}

async fn sleeping_task(guid: &str) -> TaskCreateRequest {
    let rootfs = lattice_testkit::images::busybox_image().await;
    serde_json::from_value(json!({
        "task_guid": guid, "domain": "tests", "rootfs": rootfs, "memory_mb": 32,
        "action": {"run": {"path": "/bin/sleep", "args": ["3600"]}},
    }))
    .expect("a valid task")
}

/// Waits until `guid` has `count` RUNNING instances; cell id per index.
async fn running(client: &Client, guid: &str, count: usize) -> BTreeMap<i64, String> {
    eventually(
        &format!("{count} running instances of {guid}"),
        WAIT,
        || async {
            let lrps = client.actual_lrps_by_process_guid(guid).await.ok()?;
            let ok = lrps.len() == count && lrps.iter().all(|l| l.state == ActualLrpState::Running);
            ok.then(|| {
                lrps.into_iter()
                    .map(|l| (l.index, l.cell_id))
                    .collect::<BTreeMap<_, _>>()
            })
        },
    )
    .await
}

/// Containers labelled with `label=value` now, with their owner (cell).
async fn containers_labelled(label: &str, value: &str) -> Vec<String> {
    let docker = lattice_testkit::docker::connect().await;
    let filters = HashMap::from([("label".to_string(), vec![format!("{label}={value}")])]);
    let options = bollard::query_parameters::ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    docker
        .list_containers(Some(options))
        .await
        .expect("the engine lists containers")
        .into_iter()
        .map(|c| {
            c.labels
                .unwrap_or_default()
                .get(lattice_garden::OWNER_PROPERTY)
                .cloned()
                .unwrap_or_default()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn instances_spread_over_cells_and_zones_and_answer_through_a_router() {
    let mut roles = Roles::new();
    let brain = roles.brain("brain-a").await;
    let brains = [brain.clone()];
    for zone in ["z1", "z1"] {
        roles.cell(&brains, zone).await;
    }
    // As a cell in a container driving its host's engine: the rep is
    // reached at one address, the instances at another.
    let apart = roles
        .cell_with(&brains, "z2", &["--instance-address", "127.0.0.2"])
        .await;
    let router = roles.router(&brain).await;
    let client = client(&brain);

    client
        .create_desired_lrp(&web_app("spread", 6).await)
        .await
        .expect("the brain takes the app");
    let placement = running(&client, "spread", 6).await;
    let cells: BTreeSet<&String> = placement.values().collect();
    let zones: BTreeSet<String> = cells.iter().map(|c| roles.zone_of(c)).collect();
    assert_eq!(
        cells.len(),
        3,
        "one app's instances use every cell: {placement:?}"
    );
    assert_eq!(zones.len(), 2, "and both zones: {placement:?}");
    let cell = client
        .cells()
        .await
        .expect("cells")
        .into_iter()
        .find(|c| c.presence.cell_id == apart)
        .expect("the cell with its own instance address is listed");
    assert!(
        cell.presence.rep_address.starts_with("http://127.0.0.1:"),
        "the rep stays on the advertise address: {}",
        cell.presence.rep_address
    );
    // The rep's interface answers only the cluster secret (the auctioneer
    // presented it to place the instances above).
    let rep_state = format!("{}/v1/state", cell.presence.rep_address);
    let http = reqwest::Client::new();
    let anonymous = http.get(&rep_state).send().await.expect("the rep answers");
    assert_eq!(anonymous.status(), 401, "the rep without the secret");
    let with_secret = http
        .get(&rep_state)
        .bearer_auth(SECRET)
        .send()
        .await
        .expect("the rep answers");
    assert_eq!(with_secret.status(), 200, "the rep with the secret");
    for lrp in client
        .actual_lrps_by_process_guid("spread")
        .await
        .expect("instances")
    {
        let expected = if lrp.cell_id == apart {
            "127.0.0.2"
        } else {
            "127.0.0.1"
        };
        assert_eq!(
            lrp.address, expected,
            "instance {} on {}",
            lrp.index, lrp.cell_id
        );
    }

    // Every instance answers through the router, on its cell's address.
    let http = reqwest::Client::new();
    eventually(
        "every instance to answer through the router",
        WAIT,
        || async {
            let mut seen = BTreeSet::new();
            for _ in 0..60 {
                let response = http
                    .get(format!("http://{router}/index.html"))
                    .header("host", "spread.localhost")
                    .send()
                    .await
                    .ok()?;
                if response.status() != 200 {
                    return None;
                }
                seen.insert(response.text().await.ok()?.trim().to_string());
            }
            (seen.len() == 6).then_some(())
        },
    )
    .await;

    // The cells' lines about the app (through the internal API, with the
    // secret) and the router's access lines (through the public API) reach
    // the brain's log hub.
    let logs = reqwest::Client::new();
    eventually(
        "CELL and RTR lines in the brain's log hub",
        WAIT,
        || async {
            let lines: Vec<serde_json::Value> = logs
                .get(format!("{brain}/v1/logs/spread"))
                .basic_auth(USER.0, Some(USER.1))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let sources: BTreeSet<&str> = lines
                .iter()
                .filter_map(|l| l["source_type"].as_str())
                .collect();
            (sources.contains("CELL") && sources.contains("RTR")).then_some(())
        },
    )
    .await;

    // The brain's public API wants the users' password; its internal API
    // wants the cluster secret, and the users' password is not it.
    let anonymous = reqwest::Client::new();
    let status = anonymous
        .get(format!("{brain}/v1/cells"))
        .send()
        .await
        .expect("the brain answers")
        .status();
    assert_eq!(status, 401);
    let status = anonymous
        .post(format!("{brain}/internal/v1/store/list_cells"))
        .basic_auth(USER.0, Some(USER.1))
        .json(&json!({}))
        .send()
        .await
        .expect("the brain answers")
        .status();
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_cells_work_moves_and_its_task_fails_once() {
    let mut roles = Roles::new();
    let brain = roles.brain("brain-a").await;
    let brains = [brain.clone()];
    for zone in ["z1", "z1", "z2"] {
        roles.cell(&brains, zone).await;
    }
    let client = client(&brain);

    client
        .create_task(&sleeping_task("long").await)
        .await
        .expect("the brain takes the task");
    let victim = eventually("the task to run", WAIT, || async {
        let task = client.task("long").await.ok()?;
        (task.state == TaskState::Running).then_some(task.cell_id)
    })
    .await;
    client
        .create_desired_lrp(&web_app("web", 6).await)
        .await
        .expect("the brain takes the app");
    let before = running(&client, "web", 6).await;
    let moved: BTreeSet<i64> = before
        .iter()
        .filter(|(_, cell)| **cell == victim)
        .map(|(index, _)| *index)
        .collect();
    assert!(
        !moved.is_empty(),
        "the spread puts instances on the task's cell too: {before:?}"
    );

    roles.cell_process(&victim).kill();

    let after = eventually("the instances to run on the other cells", WAIT, || async {
        let placement = running(&client, "web", 6).await;
        placement
            .values()
            .all(|cell| *cell != victim)
            .then_some(placement)
    })
    .await;
    for (index, cell) in &before {
        if *cell != victim {
            assert_eq!(after.get(index), Some(cell), "instance {index} stayed put");
        }
    }
    let failed = eventually("the task to fail", WAIT, || async {
        let task = client.task("long").await.ok()?;
        (task.state == TaskState::Completed).then_some(task)
    })
    .await;
    assert!(failed.failed);
    assert_eq!(
        failed.failure_reason,
        lattice_converger::CELL_DISAPPEARED_REASON
    );
    assert_eq!(failed.cell_id, victim);

    // More work through the same brain, run to completion: the auctioneer
    // and converger have since gone round again. The failed task did not
    // run again anywhere.
    let rootfs = lattice_testkit::images::busybox_image().await;
    let probe: TaskCreateRequest = serde_json::from_value(json!({
        "task_guid": "probe", "domain": "tests", "rootfs": rootfs, "memory_mb": 32,
        "action": {"run": {"path": "/bin/true", "args": []}},
    }))
    .expect("a valid task");
    client
        .create_task(&probe)
        .await
        .expect("the brain takes the task");
    eventually("the probe task to complete", WAIT, || async {
        let task = client.task("probe").await.ok()?;
        (task.state == TaskState::Completed).then_some(())
    })
    .await;
    let again = client.task("long").await.expect("the failed task is kept");
    assert_eq!(again.state, TaskState::Completed);
    assert_eq!(again.cell_id, victim);
    let owners = containers_labelled(lattice_rep::TASK_GUID_PROPERTY, "long").await;
    assert!(
        owners.iter().all(|owner| *owner == victim),
        "the task's only container is the dead cell's: {owners:?}"
    );
}

/// The lock owner's brain id (`brain-a/...` -> `brain-a`).
async fn lock_holder(store: &PostgresStore, lock: &str) -> Option<String> {
    let owner = store.lock_owner(lock).await.ok()??;
    owner.split('/').next().map(str::to_string)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_standby_brain_takes_over_when_the_active_one_dies() {
    let mut roles = Roles::new();
    let store = PostgresStore::connect(roles.pg.url())
        .await
        .expect("the test database accepts a store");
    let a = roles.brain("brain-a").await;
    // Brain a alone: it takes both locks before b exists.
    for lock in [
        lattice_auctioneer::runner::LOCK_NAME,
        lattice_converger::LOCK_NAME,
    ] {
        eventually(
            &format!("brain-a to hold the {lock} lock"),
            WAIT,
            || async {
                (lock_holder(&store, lock).await.as_deref() == Some("brain-a")).then_some(())
            },
        )
        .await;
    }
    let b = roles.brain("brain-b").await;
    let brains = [a.clone(), b.clone()];
    roles.cell(&brains, "z1").await;
    roles.cell(&brains, "z2").await;
    let client_b = client(&b);
    client_b
        .create_desired_lrp(&web_app("before", 2).await)
        .await
        .expect("brain b serves the API too");
    running(&client_b, "before", 2).await;
    assert_eq!(
        lock_holder(&store, lattice_auctioneer::runner::LOCK_NAME)
            .await
            .as_deref(),
        Some("brain-a"),
        "the standby served the API without taking the lock"
    );

    roles.brains[0].process.kill();

    client_b
        .create_desired_lrp(&web_app("after", 2).await)
        .await
        .expect("brain b takes the app");
    running(&client_b, "after", 2).await;
    for lock in [
        lattice_auctioneer::runner::LOCK_NAME,
        lattice_converger::LOCK_NAME,
    ] {
        eventually(
            &format!("brain-b to take the {lock} lock"),
            WAIT,
            || async {
                (lock_holder(&store, lock).await.as_deref() == Some("brain-b")).then_some(())
            },
        )
        .await;
    }
    // The cells followed: both still renew their presence through brain b.
    let cells = client_b.cells().await.expect("brain b lists cells");
    assert_eq!(cells.len(), 2, "{cells:?}");
    running(&client_b, "before", 2).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cell_with_a_wrong_secret_exits_and_never_registers() {
    let mut roles = Roles::new();
    let brain = roles.brain("brain-a").await;
    let owner = OwnerGuard::new("roles-bad-cell");
    let id = owner.owner().to_string();
    roles.owners.push(owner);
    let args = roles.cell_args(std::slice::from_ref(&brain), &id, "z1", "not-the-secret");
    let mut process = Process::spawn(&id, &args, Stdio::piped());
    let mut stderr = process.child.stderr.take().expect("stderr is piped");
    let status = eventually("the cell to exit", WAIT, || {
        let exited = process
            .child
            .try_wait()
            .expect("the child can be waited for");
        async move { exited }
    })
    .await;
    assert_eq!(status.code(), Some(1), "{status}");
    let mut text = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut text).expect("stderr is readable");
    assert!(
        text.contains("secret"),
        "the error names the secret: {text}"
    );

    let cells = client(&brain).cells().await.expect("the brain lists cells");
    assert!(cells.iter().all(|c| c.presence.cell_id != id), "{cells:?}");
    assert!(containers_labelled(lattice_garden::OWNER_PROPERTY, &id)
        .await
        .is_empty());
}

/// Runs `ltc` against `brain` with the users' credentials: exit code and
/// what it printed (stdout, then stderr).
async fn ltc_against(brain: &str, args: &[&str]) -> (u8, String) {
    let credentials = Some(Credentials::new(USER.0, USER.1));
    let (code, out, err) = common::run_ltc(brain, credentials, args).await;
    (code, out + &err)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_droplet_is_built_and_launched_through_a_brain() {
    let stack = lattice_testkit::images::stack_image().await;
    let mut roles = Roles::new();
    let brain = roles.brain("brain-d").await;
    let brains = [brain.clone()];
    roles.cell(&brains, "z1").await;
    let router = roles.router(&brain).await;
    let samples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../lifecycles/samples");
    let sample = |path: &str| samples.join(path).display().to_string();

    // Staged on the cell, which fetches the bits from and sends the
    // droplet to the brain's file server.
    let (code, out) = ltc_against(
        &brain,
        &[
            "build-droplet",
            "site",
            &sample("apps/static-app"),
            "-b",
            &sample("buildpacks/static-sh"),
            "--stack",
            &stack,
        ],
    )
    .await;
    assert_eq!(code, 0, "build-droplet through a brain: {out}");
    let (code, out) = ltc_against(&brain, &["launch-droplet", "site-app", "site"]).await;
    assert_eq!(code, 0, "launch-droplet through a brain: {out}");
    running(&client(&brain), "site-app", 1).await;
    let http = reqwest::Client::new();
    eventually(
        "the droplet's app to answer through the router",
        WAIT,
        || async {
            let response = http
                .get(format!("http://{router}/"))
                .header("host", "site-app.localhost")
                .send()
                .await
                .ok()?;
            response.status().is_success().then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_brain_serves_the_dashboard_behind_the_users_credentials() {
    let mut roles = Roles::new();
    let brain = roles.brain("brain-ui").await;
    let http = reqwest::Client::new();
    let anonymous = http
        .get(format!("{brain}/ui"))
        .send()
        .await
        .expect("the brain answers");
    assert_eq!(anonymous.status(), 401);
    for (path, content_type) in [
        ("/ui", "text/html; charset=utf-8"),
        ("/ui/app.js", "text/javascript; charset=utf-8"),
    ] {
        let response = http
            .get(format!("{brain}{path}"))
            .basic_auth(USER.0, Some(USER.1))
            .send()
            .await
            .expect("the brain answers");
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.headers()["content-type"], content_type, "{path}");
    }
}

/// A cell that went away is shown as such on the dashboard's cluster page
/// once its presence expires (no event says so: the page re-reads cells).
#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_shows_a_cell_that_went_away() {
    use common::browser::{until, Driver};
    use futures::FutureExt;

    let mut roles = Roles::new();
    let brain = roles.brain("brain-ui-cells").await;
    let brains = [brain.clone()];
    let stays = roles.cell(&brains, "z1").await;
    let goes = roles.cell(&brains, "z2").await;
    let driver = Driver::start().await;
    let browser = driver.browser().await;
    let outcome = std::panic::AssertUnwindSafe(async {
        let address = brain.trim_start_matches("http://");
        browser
            .goto(&format!(
                "http://{}:{}@{address}/ui#/cluster",
                USER.0, USER.1
            ))
            .await
            .expect("open the dashboard");
        until(
            &browser,
            "both cells",
            &format!(
                "return document.querySelector('.cell[data-cell=\"{stays}\"]:not(.gone)') && \
                 document.querySelector('.cell[data-cell=\"{goes}\"]:not(.gone)')"
            ),
        )
        .await;
        roles.cell_process(&goes).kill();
        until(
            &browser,
            "the killed cell as gone",
            &format!(
                "return document.querySelector('.cell.gone[data-cell=\"{goes}\"]')\
                 ?.textContent.includes('went away')"
            ),
        )
        .await;
        let stays_live = browser
            .execute(
                &format!("return !document.querySelector('.cell.gone[data-cell=\"{stays}\"]')"),
                vec![],
            )
            .await
            .expect("script runs");
        assert_eq!(
            stays_live,
            json!(true),
            "the live cell is not shown as gone"
        );
    })
    .catch_unwind()
    .await;
    // Ended whatever happened: a browser left running outlives the test.
    let _ = browser.close().await;
    drop(driver);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
