//! One LRP instance on this cell: the I/O shell around its lifecycle
//! (`instance`). It claims the instance, then turns what it sees (runs
//! ending, the timer, the engine's report of a dead container, a cancel)
//! into events for [`instance::step`] and performs the effects it returns.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use lattice_bbs::modify::{modify_actual_lrp, Change, ModifyError};
use lattice_bbs::SharedStore;
use lattice_executor::{ActionError, ContainerRequest, Limits, RunContext};
use lattice_garden::{ContainerInfo, OWNER_PROPERTY};
use lattice_models::action::TimeoutAction;
use lattice_models::auction::LrpKey;
use lattice_models::crash::crash_count_after_crash;
use lattice_models::lifecycle::HEALTHCHECK_PATH;
use lattice_models::log::{SOURCE_APP, SOURCE_HEALTH};
use lattice_models::{
    Action, ActualLrp, ActualLrpEvent, ActualLrpState, DesiredLrp, PreferredAddress,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use crate::instance::{self, Effect, Event, Exit, InstanceState, Plan, Probe};
use crate::{
    clock, spares, ContainerExit, Rep, RepConfig, WorkKey, INDEX_PROPERTY, INSTANCE_GUID_PROPERTY,
    LOG_GUID_PROPERTY, PROCESS_GUID_PROPERTY,
};

fn now() -> i64 {
    lattice_models::unix_nanos(std::time::SystemTime::now())
}

/// Claims and runs the instance until it ends; never returns an error: a
/// failure becomes the instance's crash reason.
pub(crate) async fn run(rep: &Arc<Rep>, process_guid: &str, index: i64, cancel: CancellationToken) {
    let cell_id = rep.config.cell_id.clone();
    let spare = rep.spares.take(process_guid);
    let instance_guid = match &spare {
        Some(spare) => spare.instance_guid.clone(),
        None => uuid::Uuid::new_v4().to_string(),
    };
    let key = LrpKey::new(process_guid, index);
    let work_key = WorkKey::Lrp(key.clone());
    if !claim(&rep.store, process_guid, index, &cell_id, &instance_guid).await {
        if let Some(unkept) = spare.and_then(|spare| rep.spares.put_back(process_guid, spare)) {
            spares::discard(rep, &unkept.instance_guid).await;
        }
        rep.release(&work_key);
        return;
    }
    rep.set_instance_guid(&key, &instance_guid);
    let handle = container_handle(&instance_guid);
    let desired = match rep.store.get_desired_lrp(process_guid).await {
        Ok(desired) => desired,
        Err(err) => {
            tracing::info!(process_guid, index, error = %err, "desired LRP is gone; giving the instance back");
            give_back(&rep.store, process_guid, index, &instance_guid).await;
            rep.release(&work_key);
            if spare.is_some() {
                spares::discard(rep, &instance_guid).await;
            }
            return;
        }
    };
    // Made for an earlier app of the same guid: its container would be
    // the old definition's, and its name is the one this instance needs.
    let spare = match spare {
        Some(spare) if spare.epoch != desired.modification_tag.epoch => {
            spares::discard(rep, &instance_guid).await;
            None
        }
        spare => spare,
    };
    rep.cell_log(
        &desired.log_guid,
        &index.to_string(),
        if spare.is_some() {
            format!("Starting instance {index} in a spare container on cell {cell_id}")
        } else {
            format!("Creating container for instance {index} on cell {cell_id}")
        },
    );
    let mut shell = Shell::new(rep, &desired, index, instance_guid, handle, cancel);
    shell.spare = spare.is_some();
    shell.supervise(instance::create()).await;
    spares::instance_ended(rep, process_guid).await;
}

/// The container of the instance that runs as `instance_guid`.
pub(crate) fn container_handle(instance_guid: &str) -> String {
    format!("lattice-lrp-{instance_guid}")
}

/// Supervises an instance a previous run of the cell started and left
/// running (see `restart`), until it ends: it crashes when the processes
/// that run left are all gone, the container stops, or its monitor fails;
/// it stops when it is no longer ours.
///
/// # Caveats
/// The processes' output and exit status were attached to the previous
/// run: their further output is not collected, and a crash is reported
/// without the exit status.
pub(crate) async fn run_adopted(
    rep: &Arc<Rep>,
    desired: DesiredLrp,
    adoption: crate::restart::Adoption,
    cancel: CancellationToken,
) {
    let crate::restart::Adoption { lrp, container } = adoption;
    rep.cell_log(
        &desired.log_guid,
        &lrp.index.to_string(),
        format!(
            "Adopted the running container of instance {} after the cell restarted",
            lrp.index
        ),
    );
    let mut shell = Shell::new(
        rep,
        &desired,
        lrp.index,
        lrp.instance_guid,
        container.handle.clone(),
        cancel,
    );
    shell.left = container.processes.iter().cloned().collect();
    shell.info = Some(container);
    let start = instance::adopt(shell.elapsed());
    spares::replenish(rep, &desired);
    shell.supervise(start).await;
    spares::instance_ended(rep, &desired.process_guid).await;
}

/// A setup, action or health check running in the container.
struct Run {
    task: JoinHandle<Result<(), ActionError>>,
    /// Stops it; not a child of the instance's cancel token: when the
    /// instance stops is the core's decision (a RUNNING one drains first).
    token: CancellationToken,
}

/// The I/O of one instance: what runs in its container, its timer, and the
/// engine's word that the container died.
struct Shell<'a> {
    rep: &'a Arc<Rep>,
    desired: &'a DesiredLrp,
    index: i64,
    instance_guid: String,
    handle: String,
    plan: Plan,
    /// Where the container is reachable, once created (or adopted).
    info: Option<ContainerInfo>,
    /// Whether its container is a spare, started already (see `spares`).
    spare: bool,
    /// For an adopted instance: the processes the previous run left.
    left: HashSet<String>,
    setup: Option<Run>,
    action: Option<Run>,
    check: Option<Run>,
    timer: Option<(Pin<Box<Sleep>>, Event)>,
    /// Reported once, then no longer followed.
    exited: Option<watch::Receiver<Option<ContainerExit>>>,
    cancel: CancellationToken,
    cancel_seen: bool,
    /// The instance's times are counted from here.
    started: Instant,
}

impl<'a> Shell<'a> {
    fn new(
        rep: &'a Arc<Rep>,
        desired: &'a DesiredLrp,
        index: i64,
        instance_guid: String,
        handle: String,
        cancel: CancellationToken,
    ) -> Shell<'a> {
        let plan = plan(&rep.config, desired);
        Shell {
            rep,
            desired,
            index,
            exited: rep.container_exit(&LrpKey::new(desired.process_guid.clone(), index)),
            instance_guid,
            handle,
            plan,
            info: None,
            spare: false,
            left: HashSet::new(),
            setup: None,
            action: None,
            check: None,
            timer: None,
            cancel,
            cancel_seen: false,
            started: clock::now(),
        }
    }

    fn elapsed(&self) -> Duration {
        clock::now().duration_since(self.started)
    }

    /// Runs the lifecycle from `start` until it has ended.
    async fn supervise(mut self, start: (InstanceState, Vec<Effect>)) {
        let (mut state, effects) = start;
        let mut results = VecDeque::new();
        self.perform(effects, &mut results).await;
        while !matches!(state, InstanceState::Ended(_)) {
            let event = match results.pop_front() {
                Some(event) => event,
                None => self.next_event().await,
            };
            let (next, effects) = instance::step(&self.plan, state, event, self.elapsed());
            state = next;
            self.perform(effects, &mut results).await;
        }
    }

    /// The next thing that happened; a cancel first, then a dead container,
    /// so that neither is mistaken for a crash of the process.
    async fn next_event(&mut self) -> Event {
        tokio::select! {
            biased;
            _ = self.cancel.cancelled(), if !self.cancel_seen => {
                self.cancel_seen = true;
                Event::Cancelled
            }
            exit = container_died(&mut self.exited) => {
                self.exited = None;
                Event::ContainerDied(exit.status)
            }
            exit = finished(&mut self.setup) => Event::SetupExited(exit),
            exit = finished(&mut self.action) => Event::ActionExited(exit),
            exit = finished(&mut self.check) => Event::CheckExited(exit),
            event = fired(&mut self.timer) => event,
        }
    }

    /// Performs `effects` in order; the results of those performed to
    /// completion here go to `results`, to be stepped on next.
    async fn perform(&mut self, effects: Vec<Effect>, results: &mut VecDeque<Event>) {
        for effect in effects {
            if let Some(result) = self.perform_one(effect).await {
                results.push_back(result);
            }
        }
    }

    async fn perform_one(&mut self, effect: Effect) -> Option<Event> {
        let rep = self.rep;
        let process_guid = self.desired.process_guid.as_str();
        let index = self.index;
        match effect {
            Effect::CreateContainer => {
                if std::mem::take(&mut self.spare) {
                    if let Some(info) = spares::claim(rep, self.desired, &self.instance_guid).await
                    {
                        tracing::debug!(process_guid, index, handle = %self.handle, "instance takes a spare container");
                        self.info = Some(info);
                        spares::replenish(rep, self.desired);
                        return Some(Event::ContainerCreated);
                    }
                }
                let request = container_request(
                    rep,
                    self.desired,
                    Some(index),
                    &self.handle,
                    &self.instance_guid,
                );
                let began = clock::now();
                let created = {
                    let _creating = rep.spares.creating();
                    rep.executor.create_container(request).await
                };
                return Some(match created {
                    Ok(info) => {
                        tracing::debug!(process_guid, index, took = ?began.elapsed(), "container created and started");
                        self.info = Some(info);
                        spares::replenish(rep, self.desired);
                        Event::ContainerCreated
                    }
                    Err(err) => Event::CreateFailed(err.to_string()),
                });
            }
            // The plan has a setup and a monitor only when the desired LRP
            // does: with none, there is nothing to run and it has passed.
            Effect::RunSetup => match &self.desired.setup {
                Some(setup) => self.setup = Some(self.start(setup, self.app_source())),
                None => return Some(Event::SetupExited(Exit::Succeeded)),
            },
            Effect::StartAction => {
                self.action = Some(self.start(&self.desired.action, self.app_source()));
            }
            Effect::RunCheck => match &self.desired.monitor {
                Some(monitor) => self.check = Some(self.start(monitor, SOURCE_HEALTH)),
                None => return Some(Event::CheckExited(Exit::Succeeded)),
            },
            Effect::RunStartupCheck => match &self.desired.monitor {
                Some(monitor) => {
                    let check = startup_check(monitor);
                    self.check = Some(self.start(check.as_ref().unwrap_or(monitor), SOURCE_HEALTH));
                }
                None => return Some(Event::CheckExited(Exit::Succeeded)),
            },
            Effect::StopSetup => stop(&self.setup),
            Effect::StopAction => stop(&self.action),
            // Its result no longer matters.
            Effect::StopCheck => stop(&self.check.take()),
            Effect::ScheduleTick(after) => self.set_timer(after, Event::Tick),
            Effect::WaitDrainDelay(after) => self.set_timer(after, Event::DrainDelayOver),
            Effect::MarkRunning => {
                // Created before it can be marked; without an address it
                // cannot be RUNNING.
                let Some(info) = self.info.as_ref() else {
                    return Some(Event::MarkedRunning(false));
                };
                let marked = mark_running(
                    &rep.store,
                    rep.config.advertise_container_network,
                    self.desired,
                    index,
                    &self.instance_guid,
                    info,
                )
                .await;
                return Some(Event::MarkedRunning(marked));
            }
            Effect::Probe => return Some(Event::Probed(self.probe().await)),
            Effect::Log(line) => rep.cell_log(&self.desired.log_guid, &index.to_string(), line),
            Effect::Retire => rep.retire(
                &WorkKey::Lrp(LrpKey::new(process_guid, index)),
                &self.handle,
            ),
            Effect::RecordCrash { reason, ran_for } => {
                tracing::info!(process_guid, index, %reason, "instance crashed");
                crash(
                    &rep.store,
                    process_guid,
                    index,
                    &self.instance_guid,
                    &reason,
                    ran_for,
                )
                .await;
            }
            Effect::GiveBack => {
                give_back(&rep.store, process_guid, index, &self.instance_guid).await
            }
            Effect::Destroy => {
                let began = clock::now();
                match rep.executor.destroy(&self.handle).await {
                    Ok(()) => {
                        tracing::debug!(process_guid, index, handle = %self.handle, took = ?began.elapsed(), "instance container destroyed")
                    }
                    Err(err) => {
                        tracing::warn!(process_guid, index, handle = %self.handle, error = %err, "cannot destroy instance container")
                    }
                }
                rep.retired(&self.handle);
            }
        }
        None
    }

    fn app_source(&self) -> &'a str {
        if self.desired.log_source.is_empty() {
            SOURCE_APP
        } else {
            self.desired.log_source.as_str()
        }
    }

    /// Runs `action` in the container, its output logged as `source`.
    fn start(&self, action: &Action, source: &str) -> Run {
        let context = RunContext {
            log_guid: self.desired.log_guid.clone(),
            log_source: source.to_string(),
            instance: self.index.to_string(),
            env: self
                .info
                .as_ref()
                .map(|info| instance_env(self.desired, self.index, &self.instance_guid, info))
                .unwrap_or_default(),
            disk_mb: self.desired.disk_mb.max(0) as u64,
        };
        let token = CancellationToken::new();
        let task = tokio::spawn({
            let executor = self.rep.executor.clone();
            let handle = self.handle.clone();
            let action = action.clone();
            let token = token.clone();
            async move { executor.run(&handle, &action, &context, token).await }
        });
        Run { task, token }
    }

    fn set_timer(&mut self, after: Duration, event: Event) {
        self.timer = Some((Box::pin(tokio::time::sleep(after)), event));
    }

    /// Whether a process the previous run left still runs in the container.
    async fn probe(&self) -> Probe {
        match self.rep.executor.info(&self.handle).await {
            Ok(now) if now.running && now.processes.iter().any(|p| self.left.contains(p)) => {
                Probe::Alive
            }
            Ok(now) => Probe::Exited {
                oom_killed: now.oom_killed,
            },
            Err(lattice_garden::GardenError::ContainerNotFound(_)) => Probe::Gone,
            Err(err) => {
                tracing::warn!(process_guid = %self.desired.process_guid, index = self.index, error = %err, "cannot check an adopted instance");
                Probe::Unknown
            }
        }
    }
}

fn stop(run: &Option<Run>) {
    if let Some(run) = run {
        run.token.cancel();
    }
}

/// How `run` ended; never while there is none.
async fn finished(run: &mut Option<Run>) -> Exit {
    let Some(running) = run else {
        return std::future::pending().await;
    };
    let result = (&mut running.task).await;
    *run = None;
    match result {
        Ok(Ok(())) => Exit::Succeeded,
        Ok(Err(ActionError::Cancelled)) => Exit::Cancelled,
        Ok(Err(err)) => Exit::Failed(err.to_string()),
        Err(err) => Exit::Failed(format!("instance supervisor failed: {err}")),
    }
}

/// The timer's event once it fires; never while none is set.
async fn fired(timer: &mut Option<(Pin<Box<Sleep>>, Event)>) -> Event {
    let Some((sleep, _)) = timer else {
        return std::future::pending().await;
    };
    sleep.await;
    let (_, event) = timer.take().expect("the timer was set: it just fired");
    event
}

async fn claim(
    store: &SharedStore,
    process_guid: &str,
    index: i64,
    cell_id: &str,
    instance_guid: &str,
) -> bool {
    let mut lrp = match store.get_actual_lrp(process_guid, index).await {
        Ok(lrp) => lrp,
        Err(err) => {
            tracing::info!(process_guid, index, error = %err, "instance to claim is gone");
            return false;
        }
    };
    if lrp.state != ActualLrpState::Unclaimed || lrp.apply(ActualLrpEvent::Claim, now()).is_err() {
        tracing::info!(process_guid, index, state = %lrp.state, "instance is not unclaimed; not claiming it");
        return false;
    }
    lrp.cell_id = cell_id.to_string();
    lrp.instance_guid = instance_guid.to_string();
    match store.update_actual_lrp(lrp).await {
        Ok(_) => {
            tracing::info!(
                process_guid,
                index,
                cell_id,
                instance_guid,
                "instance claimed"
            );
            true
        }
        Err(err) => {
            tracing::info!(process_guid, index, error = %err, "lost the claim on the instance");
            false
        }
    }
}

/// The container of a spare of `desired`'s app, under `instance_guid`:
/// an instance's, less the index no instance has given it yet.
pub(crate) fn spare_request(
    rep: &Rep,
    desired: &DesiredLrp,
    instance_guid: &str,
) -> ContainerRequest {
    container_request(
        rep,
        desired,
        None,
        &container_handle(instance_guid),
        instance_guid,
    )
}

/// The container of an instance; `index` is `None` for a spare, whose
/// labels cannot change once an instance takes it (`Rep::lrp_of` tells).
fn container_request(
    rep: &Rep,
    desired: &DesiredLrp,
    index: Option<i64>,
    handle: &str,
    instance_guid: &str,
) -> ContainerRequest {
    let mut properties = BTreeMap::from([
        (OWNER_PROPERTY.to_string(), rep.config.cell_id.clone()),
        (
            PROCESS_GUID_PROPERTY.to_string(),
            desired.process_guid.clone(),
        ),
        (
            INSTANCE_GUID_PROPERTY.to_string(),
            instance_guid.to_string(),
        ),
        (LOG_GUID_PROPERTY.to_string(), desired.log_guid.clone()),
    ]);
    if let Some(index) = index {
        properties.insert(INDEX_PROPERTY.to_string(), index.to_string());
    }
    ContainerRequest {
        handle: handle.to_string(),
        rootfs: desired.rootfs.clone(),
        env: Vec::new(),
        limits: Limits {
            memory_mb: desired.memory_mb.max(0) as u64,
            cpu_weight: desired.cpu_weight.max(0) as u64,
            disk_mb: desired.disk_mb.max(0) as u64,
            pids: crate::pids_limit(
                std::iter::once(&desired.action)
                    .chain(desired.setup.as_ref())
                    .chain(desired.monitor.as_ref()),
            ),
        },
        ports: desired
            .ports
            .iter()
            .filter_map(|p| u16::try_from(*p).ok())
            .collect(),
        properties,
        privileged: desired.privileged,
        bind_mounts: Vec::new(),
    }
}

/// The environment Diego gives every instance, then the user's.
fn instance_env(
    desired: &DesiredLrp,
    index: i64,
    instance_guid: &str,
    info: &ContainerInfo,
) -> Vec<(String, String)> {
    let mut env = vec![
        ("INSTANCE_INDEX".to_string(), index.to_string()),
        ("INSTANCE_GUID".to_string(), instance_guid.to_string()),
        ("CF_INSTANCE_INDEX".to_string(), index.to_string()),
        ("CF_INSTANCE_GUID".to_string(), instance_guid.to_string()),
        ("CF_INSTANCE_IP".to_string(), info.host_ip.clone()),
    ];
    if let Some(first) = desired.ports.first() {
        env.push(("PORT".to_string(), first.to_string()));
        if let Some(mapping) = info.ports.iter().find(|m| m.container_port == *first) {
            env.push((
                "CF_INSTANCE_PORT".to_string(),
                mapping.host_port.to_string(),
            ));
            env.push((
                "CF_INSTANCE_ADDR".to_string(),
                format!("{}:{}", info.host_ip, mapping.host_port),
            ));
        }
    }
    // Diego's doc/environment.md: `HOST:CONTAINER` pairs, comma separated,
    // in the order of the LRP's ports.
    let pairs: Vec<String> = desired
        .ports
        .iter()
        .filter_map(|port| {
            info.ports
                .iter()
                .find(|m| m.container_port == *port)
                .map(|m| format!("{}:{}", m.host_port, m.container_port))
        })
        .collect();
    if !pairs.is_empty() {
        env.push(("CF_INSTANCE_PORTS".to_string(), pairs.join(",")));
    }
    env.extend(
        desired
            .env
            .iter()
            .map(|v| (v.name.clone(), v.value.clone())),
    );
    env
}

/// How the instance's lifecycle runs: from its desired LRP and the cell's
/// settings.
fn plan(config: &RepConfig, desired: &DesiredLrp) -> Plan {
    Plan {
        has_setup: desired.setup.is_some(),
        has_monitor: desired.monitor.is_some(),
        startup_check_waits: desired
            .monitor
            .as_ref()
            .is_some_and(|monitor| startup_check(monitor).is_some()),
        start_timeout: u64::try_from(desired.start_timeout)
            .ok()
            .filter(|secs| *secs > 0)
            .map(Duration::from_secs),
        starting_interval: config.starting_monitor_interval,
        running_interval: config.running_monitor_interval,
        adopted_probe_interval: config.adopted_check_interval,
        drain_delay: config.drain_delay,
    }
}

/// Resolves once the engine has reported the instance's container dead
/// (see `Rep::on_exit`); never when there is nothing to follow.
async fn container_died(
    exited: &mut Option<watch::Receiver<Option<ContainerExit>>>,
) -> ContainerExit {
    if let Some(receiver) = exited {
        if let Ok(exit) = receiver.wait_for(Option::is_some).await {
            if let Some(exit) = *exit {
                return exit;
            }
        }
    }
    // No allocation to follow, or it is gone: only the exec tells.
    std::future::pending().await
}
/// Why a write of the instance's record was refused.
const NOT_OURS: &str = "the instance is no longer this cell's claimed instance";

/// CLAIMED -> RUNNING with where it is reachable; false if the instance is
/// no longer ours.
async fn mark_running(
    store: &SharedStore,
    advertise_container_network: bool,
    desired: &DesiredLrp,
    index: i64,
    instance_guid: &str,
    info: &ContainerInfo,
) -> bool {
    let process_guid = desired.process_guid.as_str();
    let marked = modify_actual_lrp(store.as_ref(), process_guid, index, |lrp| {
        if lrp.instance_guid != instance_guid || lrp.state != ActualLrpState::Claimed {
            return Err(NOT_OURS);
        }
        lrp.apply(ActualLrpEvent::Start, now())
            .map_err(|_| NOT_OURS)?;
        lrp.address = info.host_ip.clone();
        lrp.instance_address = info.container_ip.clone();
        lrp.preferred_address = if advertise_container_network && !info.container_ip.is_empty() {
            PreferredAddress::Instance
        } else {
            PreferredAddress::Host
        };
        lrp.ports = info.ports.clone();
        Ok(Change::Update)
    })
    .await;
    match marked {
        Ok(_) => {
            tracing::info!(process_guid, index, instance_guid, "instance is running");
            true
        }
        Err(ModifyError::Refused(_)) => false,
        Err(err) if err.is_not_found() => false,
        Err(err) => {
            tracing::warn!(process_guid, index, error = %err, "cannot mark instance running");
            false
        }
    }
}

/// Records a crash of our instance: CRASHED with the reason and the crash
/// count; the converger decides when it starts again.
async fn crash(
    store: &SharedStore,
    process_guid: &str,
    index: i64,
    instance_guid: &str,
    reason: &str,
    ran_for: Duration,
) {
    update_ours(store, process_guid, index, instance_guid, |lrp| {
        lrp.apply(ActualLrpEvent::Crash, now()).ok()?;
        lrp.crash_count = crash_count_after_crash(lrp.crash_count, ran_for);
        lrp.crash_reason = reason.to_string();
        Some(())
    })
    .await;
}

/// Hands an instance this cell can no longer run back to the auction.
pub(crate) async fn give_back(
    store: &SharedStore,
    process_guid: &str,
    index: i64,
    instance_guid: &str,
) {
    update_ours(store, process_guid, index, instance_guid, |lrp| {
        lrp.apply(ActualLrpEvent::Unclaim, now()).ok()
    })
    .await;
}

/// Applies `change` to the instance if it is still ours (same instance
/// guid) and `change` applies, with compare-and-swap.
async fn update_ours(
    store: &SharedStore,
    process_guid: &str,
    index: i64,
    instance_guid: &str,
    change: impl Fn(&mut ActualLrp) -> Option<()> + Sync,
) {
    let updated = modify_actual_lrp(store.as_ref(), process_guid, index, |lrp| {
        if lrp.instance_guid != instance_guid || change(lrp).is_none() {
            return Ok::<_, Infallible>(Change::Keep);
        }
        Ok(Change::Update)
    })
    .await;
    match updated {
        Err(err) if !err.is_not_found() => {
            tracing::warn!(process_guid, index, error = %err, "cannot update instance");
        }
        _ => {}
    }
}

/// How often our healthcheck tries again inside a starting container:
/// a refused connect on the container's loopback costs next to nothing.
const STARTUP_RETRY_INTERVAL: Duration = Duration::from_millis(10);

/// The monitor of a starting instance. When it is our healthcheck, alone or
/// under a timeout as `ltc create` makes it, the same check told to try
/// again every [`STARTUP_RETRY_INTERVAL`] until it passes (within its own
/// timeout): one process per start instead of one engine exec per try,
/// which is most of the time a busy engine takes to see an instance
/// healthy. Any other monitor runs as it is (`None`).
fn startup_check(monitor: &Action) -> Option<Action> {
    match monitor {
        Action::Run(run)
            if run.path == HEALTHCHECK_PATH
                && !run
                    .args
                    .iter()
                    .any(|arg| arg.starts_with("--until-ready-interval")) =>
        {
            let mut run = run.clone();
            run.args.extend([
                "--until-ready-interval".to_string(),
                format!("{}ms", STARTUP_RETRY_INTERVAL.as_millis()),
            ]);
            Some(Action::Run(run))
        }
        Action::Timeout(timeout) => Some(Action::Timeout(TimeoutAction {
            action: Box::new(startup_check(&timeout.action)?),
            ..timeout.clone()
        })),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run action as a monitor's JSON gives it.
    fn run(path: &str, args: &[&str]) -> Action {
        serde_json::from_value(serde_json::json!({ "run": { "path": path, "args": args } }))
            .expect("a valid run action")
    }

    fn timeout(action: Action) -> Action {
        Action::Timeout(TimeoutAction {
            action: Box::new(action),
            timeout_ns: 1_000_000_000,
            log_source: None,
        })
    }

    #[test]
    fn only_a_check_that_waits_by_itself_starts_with_the_action() {
        let config = RepConfig::new(
            "cell",
            crate::fake::SMALL_CELL,
            crate::fake::UNSERVED_ADDRESS,
        );
        let mut desired = lattice_bbs::suite::desired_lrp("web", "apps", 1);
        desired.monitor = Some(timeout(run(HEALTHCHECK_PATH, &["--port", "8080"])));
        assert!(plan(&config, &desired).startup_check_waits);
        desired.monitor = Some(run("/bin/true", &[]));
        assert!(
            !plan(&config, &desired).startup_check_waits,
            "a monitor that fails at once must wait for the starting interval"
        );
        desired.monitor = None;
        assert!(!plan(&config, &desired).startup_check_waits);
    }

    #[test]
    fn our_healthcheck_keeps_trying_while_the_instance_starts() {
        let check = run(HEALTHCHECK_PATH, &["--port", "8080", "--timeout", "1000ms"]);
        let until_ready = run(
            HEALTHCHECK_PATH,
            &[
                "--port",
                "8080",
                "--timeout",
                "1000ms",
                "--until-ready-interval",
                "10ms",
            ],
        );
        assert_eq!(startup_check(&check), Some(until_ready.clone()));
        // As `ltc create` makes it: the timeout stays, around the new check.
        assert_eq!(startup_check(&timeout(check)), Some(timeout(until_ready)));
    }

    #[test]
    fn other_monitors_run_as_they_are() {
        let told_already = run(
            HEALTHCHECK_PATH,
            &["--port", "1", "--until-ready-interval", "5ms"],
        );
        for monitor in [
            run("/bin/true", &[]),
            timeout(run("/usr/bin/curl", &["localhost:8080"])),
            told_already,
            Action::Serial(lattice_models::action::SerialAction {
                actions: vec![run(HEALTHCHECK_PATH, &["--port", "1"])],
                log_source: None,
            }),
        ] {
            assert_eq!(startup_check(&monitor), None, "{monitor:?}");
        }
    }
}
