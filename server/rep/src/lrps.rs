//! One LRP instance on this cell: claim, container, setup, action, monitor,
//! RUNNING, and its end (crash, or stop because it is no longer ours).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use lattice_bbs::{SharedStore, StoreError};
use lattice_executor::{ActionError, ContainerRequest, Limits, RunContext};
use lattice_garden::{ContainerInfo, OWNER_PROPERTY};
use lattice_models::auction::LrpKey;
use lattice_models::crash::crash_count_after_crash;
use lattice_models::log::{SOURCE_APP, SOURCE_HEALTH};
use lattice_models::{ActualLrp, ActualLrpEvent, ActualLrpState, DesiredLrp, PreferredAddress};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{
    ContainerExit, Rep, INDEX_PROPERTY, INSTANCE_GUID_PROPERTY, LOG_GUID_PROPERTY,
    PROCESS_GUID_PROPERTY,
};

const CAS_RETRIES: usize = 8;

fn now() -> i64 {
    lattice_models::unix_nanos(std::time::SystemTime::now())
}

/// How an instance ended on this cell.
enum Ended {
    /// The process exited, the monitor failed, or it never became healthy.
    Crashed { reason: String, ran_for: Duration },
    /// The instance is no longer ours (retired, restarted, cell stopping).
    Stopped,
}

/// Claims and runs the instance until it ends; never returns an error: a
/// failure becomes the instance's crash reason.
pub(crate) async fn run(rep: &Arc<Rep>, process_guid: &str, index: i64, cancel: CancellationToken) {
    let cell_id = rep.config.cell_id.clone();
    let instance_guid = uuid::Uuid::new_v4().to_string();
    let key = LrpKey::new(process_guid, index);
    let work_key = crate::WorkKey::Lrp(key.clone());
    if !claim(&rep.store, process_guid, index, &cell_id, &instance_guid).await {
        rep.release(&work_key);
        return;
    }
    rep.set_instance_guid(&key, &instance_guid);
    let exited = rep.container_exit(&key);
    let desired = match rep.store.get_desired_lrp(process_guid).await {
        Ok(desired) => desired,
        Err(err) => {
            tracing::info!(process_guid, index, error = %err, "desired LRP is gone; giving the instance back");
            give_back(&rep.store, process_guid, index, &instance_guid).await;
            rep.release(&work_key);
            return;
        }
    };
    let handle = container_handle(&instance_guid);
    let instance = index.to_string();
    let log_guid = desired.log_guid.as_str();
    rep.cell_log(
        log_guid,
        &instance,
        format!("Creating container for instance {index} on cell {cell_id}"),
    );
    let ended = run_instance(
        rep,
        &desired,
        index,
        &handle,
        &instance_guid,
        &cancel,
        exited,
    )
    .await;
    finish(rep, &desired, index, &handle, &instance_guid, ended).await;
}

/// The container of the instance that runs as `instance_guid`.
pub(crate) fn container_handle(instance_guid: &str) -> String {
    format!("lattice-lrp-{instance_guid}")
}

/// Records how the instance ended (crashed, or handed back), then destroys
/// its container. Frees the instance's key first (its resources stay held
/// until the container is gone), so a replacement placed here at once is
/// not turned away.
async fn finish(
    rep: &Arc<Rep>,
    desired: &DesiredLrp,
    index: i64,
    handle: &str,
    instance_guid: &str,
    ended: Ended,
) {
    let process_guid = desired.process_guid.as_str();
    let instance = index.to_string();
    let log_guid = desired.log_guid.as_str();
    rep.retire(
        &crate::WorkKey::Lrp(LrpKey::new(process_guid, index)),
        handle,
    );
    match ended {
        Ended::Crashed { reason, ran_for } => {
            tracing::info!(process_guid, index, %reason, "instance crashed");
            rep.cell_log(log_guid, &instance, format!("Instance crashed: {reason}"));
            crash(
                &rep.store,
                process_guid,
                index,
                instance_guid,
                &reason,
                ran_for,
            )
            .await;
        }
        Ended::Stopped => {
            rep.cell_log(log_guid, &instance, "Stopping instance");
            give_back(&rep.store, process_guid, index, instance_guid).await
        }
    }
    if let Err(err) = rep.executor.destroy(handle).await {
        tracing::warn!(process_guid, index, %handle, error = %err, "cannot destroy instance container");
    }
    rep.retired(handle);
    rep.cell_log(log_guid, &instance, "Destroyed container");
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
    let instance = lrp.index.to_string();
    rep.cell_log(
        &desired.log_guid,
        &instance,
        format!(
            "Adopted the running container of instance {} after the cell restarted",
            lrp.index
        ),
    );
    let ended = supervise_adopted(rep, &desired, &lrp, &container, &cancel).await;
    finish(
        rep,
        &desired,
        lrp.index,
        &container.handle,
        &lrp.instance_guid,
        ended,
    )
    .await;
}

async fn supervise_adopted(
    rep: &Arc<Rep>,
    desired: &DesiredLrp,
    lrp: &ActualLrp,
    container: &ContainerInfo,
    cancel: &CancellationToken,
) -> Ended {
    let handle = container.handle.as_str();
    let left: std::collections::HashSet<&String> = container.processes.iter().collect();
    let health = RunContext {
        log_guid: desired.log_guid.clone(),
        log_source: SOURCE_HEALTH.to_string(),
        instance: lrp.index.to_string(),
        env: instance_env(desired, lrp.index, &lrp.instance_guid, container),
        disk_mb: desired.disk_mb.max(0) as u64,
    };
    let adopted = Instant::now();
    let mut exited = rep.container_exit(&LrpKey::new(lrp.process_guid.clone(), lrp.index));
    // The monitor runs at once: only a healthy instance stays adopted.
    let mut next_monitor = adopted;
    loop {
        match rep.executor.info(handle).await {
            Ok(now) if now.running && now.processes.iter().any(|p| left.contains(p)) => {}
            Ok(now) => {
                let reason = if now.oom_killed {
                    "out of memory (the cell had restarted)"
                } else {
                    "exited (the cell had restarted; its exit status is not known)"
                };
                return Ended::Crashed {
                    reason: reason.to_string(),
                    ran_for: adopted.elapsed(),
                };
            }
            Err(lattice_garden::GardenError::ContainerNotFound(_)) => {
                return Ended::Crashed {
                    reason: "its container is gone".to_string(),
                    ran_for: adopted.elapsed(),
                }
            }
            Err(err) => {
                tracing::warn!(process_guid = %lrp.process_guid, index = lrp.index, error = %err, "cannot check an adopted instance")
            }
        }
        if let Some(monitor) = desired
            .monitor
            .as_ref()
            .filter(|_| Instant::now() >= next_monitor)
        {
            let token = CancellationToken::new();
            let check = rep.executor.run(handle, monitor, &health, token.clone());
            let mut check = std::pin::pin!(check);
            let result = tokio::select! {
                result = &mut check => result,
                _ = cancel.cancelled() => {
                    token.cancel();
                    let _ = check.await;
                    tokio::time::sleep(rep.config.drain_delay).await;
                    return Ended::Stopped;
                }
            };
            match result {
                Ok(()) => {}
                Err(ActionError::Cancelled) => return Ended::Stopped,
                Err(err) => {
                    return Ended::Crashed {
                        reason: format!("instance became unhealthy: {err}"),
                        ran_for: adopted.elapsed(),
                    }
                }
            }
            next_monitor = Instant::now() + rep.config.running_monitor_interval;
        }
        tokio::select! {
            _ = cancel.cancelled() => {
                // Routers drop it before its processes stop.
                tokio::time::sleep(rep.config.drain_delay).await;
                return Ended::Stopped;
            }
            exit = container_died(&mut exited) => return died(exit, Some(adopted)),
            _ = tokio::time::sleep(rep.config.adopted_check_interval) => {}
        }
    }
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

fn container_request(
    rep: &Rep,
    desired: &DesiredLrp,
    index: i64,
    handle: &str,
    instance_guid: &str,
) -> ContainerRequest {
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
        properties: BTreeMap::from([
            (OWNER_PROPERTY.to_string(), rep.config.cell_id.clone()),
            (
                PROCESS_GUID_PROPERTY.to_string(),
                desired.process_guid.clone(),
            ),
            (INDEX_PROPERTY.to_string(), index.to_string()),
            (
                INSTANCE_GUID_PROPERTY.to_string(),
                instance_guid.to_string(),
            ),
            (LOG_GUID_PROPERTY.to_string(), desired.log_guid.clone()),
        ]),
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

/// The crash of an instance whose container the engine reported dead.
fn died(exit: ContainerExit, running_since: Option<Instant>) -> Ended {
    let reason = match exit.status {
        Some(status) => format!("Exited with status {status} (its container died)"),
        None => "its container died".to_string(),
    };
    Ended::Crashed {
        reason,
        ran_for: running_since.map(|s| s.elapsed()).unwrap_or_default(),
    }
}

async fn run_instance(
    rep: &Arc<Rep>,
    desired: &DesiredLrp,
    index: i64,
    handle: &str,
    instance_guid: &str,
    cancel: &CancellationToken,
    mut exited: Option<watch::Receiver<Option<ContainerExit>>>,
) -> Ended {
    let no_time = Duration::ZERO;
    let request = container_request(rep, desired, index, handle, instance_guid);
    let info = match rep.executor.create_container(request).await {
        Ok(info) => info,
        Err(err) => {
            return Ended::Crashed {
                reason: format!("failed to create container: {err}"),
                ran_for: no_time,
            }
        }
    };
    let instance = index.to_string();
    rep.cell_log(
        &desired.log_guid,
        &instance,
        "Successfully created container",
    );
    let env = instance_env(desired, index, instance_guid, &info);
    let context = |source: &str| RunContext {
        log_guid: desired.log_guid.clone(),
        log_source: source.to_string(),
        instance: index.to_string(),
        env: env.clone(),
        disk_mb: desired.disk_mb.max(0) as u64,
    };
    let app_source = if desired.log_source.is_empty() {
        SOURCE_APP
    } else {
        desired.log_source.as_str()
    };

    if let Some(setup) = &desired.setup {
        match rep
            .executor
            .run(handle, setup, &context(app_source), cancel.child_token())
            .await
        {
            Ok(()) => {}
            Err(ActionError::Cancelled) => return Ended::Stopped,
            Err(err) => {
                return Ended::Crashed {
                    reason: format!("setup failed: {err}"),
                    ran_for: no_time,
                }
            }
        }
    }

    // Not a child of `cancel`: a stopping instance keeps serving for the
    // drain delay, so routers drop it before its process stops.
    let action_cancel = CancellationToken::new();
    let action = {
        let executor = rep.executor.clone();
        let handle = handle.to_string();
        let action = desired.action.clone();
        let context = context(app_source);
        let token = action_cancel.clone();
        tokio::spawn(async move { executor.run(&handle, &action, &context, token).await })
    };
    let mut action = std::pin::pin!(action);
    if desired.monitor.is_some() {
        rep.cell_log(
            &desired.log_guid,
            &instance,
            "Starting health monitoring of container",
        );
    }
    let started = Instant::now();
    let deadline = (desired.start_timeout > 0)
        .then(|| started + Duration::from_secs(desired.start_timeout as u64));
    let mut running_since: Option<Instant> = None;
    let health_context = context(SOURCE_HEALTH);

    loop {
        let interval = if running_since.is_some() {
            rep.config.running_monitor_interval
        } else {
            rep.config.starting_monitor_interval
        };
        tokio::select! {
            result = &mut action => return action_ended(result, cancel, running_since),
            exit = container_died(&mut exited) => {
                // The exec may not notice a dead container at once; it ends
                // when the container is destroyed.
                action_cancel.cancel();
                return died(exit, running_since);
            }
            _ = cancel.cancelled() => {
                if running_since.is_some() {
                    tokio::time::sleep(rep.config.drain_delay).await;
                }
                action_cancel.cancel();
                let _ = (&mut action).await;
                return Ended::Stopped;
            }
            _ = tokio::time::sleep(interval) => {}
        }
        if running_since.is_none() && deadline.is_some_and(|d| Instant::now() >= d) {
            action_cancel.cancel();
            let _ = (&mut action).await;
            return Ended::Crashed {
                reason: format!(
                    "instance did not become healthy within the start timeout of {} s",
                    desired.start_timeout
                ),
                ran_for: no_time,
            };
        }
        let health = match &desired.monitor {
            None => Ok(()),
            Some(monitor) => {
                let monitor_cancel = CancellationToken::new();
                let check = {
                    let executor = rep.executor.clone();
                    let handle = handle.to_string();
                    let monitor = monitor.clone();
                    let context = health_context.clone();
                    let token = monitor_cancel.clone();
                    tokio::spawn(
                        async move { executor.run(&handle, &monitor, &context, token).await },
                    )
                };
                let mut check = std::pin::pin!(check);
                tokio::select! {
                    result = &mut action => {
                        monitor_cancel.cancel();
                        let _ = (&mut check).await;
                        return action_ended(result, cancel, running_since);
                    }
                    exit = container_died(&mut exited) => {
                        monitor_cancel.cancel();
                        action_cancel.cancel();
                        return died(exit, running_since);
                    }
                    _ = cancel.cancelled() => {
                        monitor_cancel.cancel();
                        let _ = (&mut check).await;
                        if running_since.is_some() {
                            tokio::time::sleep(rep.config.drain_delay).await;
                        }
                        action_cancel.cancel();
                        let _ = (&mut action).await;
                        return Ended::Stopped;
                    }
                    result = &mut check => result.unwrap_or_else(|_| Err(ActionError::Cancelled)),
                }
            }
        };
        match (health, running_since) {
            (Ok(()), None) => {
                if desired.monitor.is_some() {
                    rep.cell_log(&desired.log_guid, &instance, "Container became healthy");
                }
                if !mark_running(
                    &rep.store,
                    rep.config.advertise_container_network,
                    desired,
                    index,
                    instance_guid,
                    &info,
                )
                .await
                {
                    action_cancel.cancel();
                    let _ = (&mut action).await;
                    return Ended::Stopped;
                }
                running_since = Some(Instant::now());
            }
            (Ok(()), Some(_)) => {}
            (Err(ActionError::Cancelled), _) => {
                action_cancel.cancel();
                let _ = (&mut action).await;
                return Ended::Stopped;
            }
            // Still starting: keep checking until the deadline.
            (Err(_), None) => {}
            (Err(err), Some(since)) => {
                action_cancel.cancel();
                let _ = (&mut action).await;
                return Ended::Crashed {
                    reason: format!("instance became unhealthy: {err}"),
                    ran_for: since.elapsed(),
                };
            }
        }
    }
}

fn action_ended(
    result: Result<Result<(), ActionError>, tokio::task::JoinError>,
    cancel: &CancellationToken,
    running_since: Option<Instant>,
) -> Ended {
    if cancel.is_cancelled() {
        return Ended::Stopped;
    }
    let reason = match result {
        Ok(Ok(())) => "Exited with status 0".to_string(),
        Ok(Err(ActionError::Cancelled)) => return Ended::Stopped,
        Ok(Err(err)) => err.to_string(),
        Err(err) => format!("instance supervisor failed: {err}"),
    };
    Ended::Crashed {
        reason,
        ran_for: running_since.map(|s| s.elapsed()).unwrap_or_default(),
    }
}

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
    for _ in 0..CAS_RETRIES {
        let Ok(mut lrp) = store.get_actual_lrp(process_guid, index).await else {
            return false;
        };
        if lrp.instance_guid != instance_guid || lrp.state != ActualLrpState::Claimed {
            return false;
        }
        if lrp.apply(ActualLrpEvent::Start, now()).is_err() {
            return false;
        }
        lrp.address = info.host_ip.clone();
        lrp.instance_address = info.container_ip.clone();
        lrp.preferred_address = if advertise_container_network && !info.container_ip.is_empty() {
            PreferredAddress::Instance
        } else {
            PreferredAddress::Host
        };
        lrp.ports = info.ports.clone();
        match store.update_actual_lrp(lrp).await {
            Ok(_) => {
                tracing::info!(process_guid, index, instance_guid, "instance is running");
                return true;
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(err) => {
                tracing::warn!(process_guid, index, error = %err, "cannot mark instance running");
                return false;
            }
        }
    }
    false
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
/// guid), with compare-and-swap.
async fn update_ours(
    store: &SharedStore,
    process_guid: &str,
    index: i64,
    instance_guid: &str,
    change: impl Fn(&mut ActualLrp) -> Option<()>,
) {
    for _ in 0..CAS_RETRIES {
        let Ok(mut lrp) = store.get_actual_lrp(process_guid, index).await else {
            return;
        };
        if lrp.instance_guid != instance_guid || change(&mut lrp).is_none() {
            return;
        }
        match store.update_actual_lrp(lrp).await {
            Ok(_) => return,
            Err(StoreError::Conflict { .. }) => continue,
            Err(err) => {
                tracing::warn!(process_guid, index, error = %err, "cannot update instance");
                return;
            }
        }
    }
}
