//! One task on this cell, from claim to completion.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use lattice_bbs::modify::{modify_task, Change, Modified};
use lattice_bbs::SharedStore;
use lattice_executor::{ActionError, ContainerRequest, Limits, RunContext, RESULT_FILE_MAX_BYTES};
use lattice_garden::OWNER_PROPERTY;
use lattice_models::{Task, TaskEvent, TaskState};
use tokio_util::sync::CancellationToken;

use crate::{Rep, CELL_STOPPED_REASON, LOG_GUID_PROPERTY, TASK_GUID_PROPERTY};

/// How a task ended.
pub(crate) struct Outcome {
    failed: bool,
    failure_reason: String,
    result: String,
}

impl Outcome {
    pub(crate) fn failed(reason: impl Into<String>) -> Outcome {
        Outcome {
            failed: true,
            failure_reason: reason.into(),
            result: String::new(),
        }
    }

    fn succeeded(result: String) -> Outcome {
        Outcome {
            failed: false,
            failure_reason: String::new(),
            result,
        }
    }
}

fn now() -> i64 {
    lattice_models::unix_nanos(std::time::SystemTime::now())
}

/// The container name of one run of a task: unique on a Docker engine
/// shared by cells, even of two clusters that were given the same task guid
/// (the guid is the client's), hence the random part.
pub(crate) fn container_handle(task_guid: &str) -> String {
    let run = uuid::Uuid::new_v4().simple().to_string();
    format!("lattice-task-{task_guid}-{}", &run[..12])
}

/// Claims, runs and completes one task. Never returns an error: every
/// failure ends up in the task's `failure_reason`.
pub(crate) async fn run(rep: &Arc<Rep>, task_guid: &str, cancel: CancellationToken) {
    let cell_id = rep.config.cell_id.as_str();
    let span = tracing::info_span!("task", task_guid, cell_id);
    let _enter = span.enter();
    drop(_enter);

    // Claim: PENDING -> CLAIMED. Losing this race means another cell has it
    // (or it was cancelled): never run it.
    let task = match claim(&rep.store, task_guid, cell_id).await {
        Some(task) => task,
        None => return,
    };
    let handle = container_handle(task_guid);
    rep.cell_log(
        &task.log_guid,
        "",
        format!("Creating container for task {task_guid} on cell {cell_id}"),
    );
    let outcome = run_claimed(rep, &task, &handle, cancel).await;
    if outcome.failed {
        rep.cell_log(
            &task.log_guid,
            "",
            format!("Task failed: {}", outcome.failure_reason),
        );
    } else {
        rep.cell_log(&task.log_guid, "", "Task succeeded");
    }
    complete(&rep.store, task_guid, cell_id, outcome).await;
    if let Err(err) = rep.executor.destroy(&handle).await {
        tracing::warn!(task_guid, %handle, error = %err, "cannot destroy task container");
    }
}

async fn claim(store: &SharedStore, task_guid: &str, cell_id: &str) -> Option<Task> {
    let mut task = match store.get_task(task_guid).await {
        Ok(task) => task,
        Err(err) => {
            tracing::info!(task_guid, error = %err, "task to claim is gone");
            return None;
        }
    };
    if task.state != TaskState::Pending {
        tracing::info!(task_guid, state = %task.state, "task is no longer pending; not claiming it");
        return None;
    }
    task.apply(TaskEvent::Claim, now()).ok()?;
    task.cell_id = cell_id.to_string();
    match store.update_task(task).await {
        Ok(task) => {
            tracing::info!(task_guid, cell_id, "task claimed");
            Some(task)
        }
        Err(err) => {
            tracing::info!(task_guid, error = %err, "lost the claim on the task");
            None
        }
    }
}

async fn run_claimed(
    rep: &Arc<Rep>,
    task: &Task,
    handle: &str,
    cancel: CancellationToken,
) -> Outcome {
    let request = ContainerRequest {
        handle: handle.to_string(),
        rootfs: task.rootfs.clone(),
        env: Vec::new(),
        limits: Limits {
            memory_mb: task.memory_mb.max(0) as u64,
            cpu_weight: task.cpu_weight.max(0) as u64,
            disk_mb: task.disk_mb.max(0) as u64,
            pids: crate::pids_limit([&task.action]),
        },
        ports: Vec::new(),
        properties: BTreeMap::from([
            (OWNER_PROPERTY.to_string(), rep.config.cell_id.clone()),
            (TASK_GUID_PROPERTY.to_string(), task.task_guid.clone()),
            (LOG_GUID_PROPERTY.to_string(), task.log_guid.clone()),
        ]),
        privileged: task.privileged,
        bind_mounts: Vec::new(),
    };
    if let Err(err) = rep.executor.create_container(request).await {
        return Outcome::failed(format!("failed to create container: {err}"));
    }

    // CLAIMED -> RUNNING; a conflict means it was cancelled meanwhile.
    let mut running = task.clone();
    if running.apply(TaskEvent::Start, now()).is_err() {
        return Outcome::failed("task could not start");
    }
    if let Err(err) = rep.store.update_task(running).await {
        tracing::info!(task_guid = %task.task_guid, error = %err, "task changed before it started; not running it");
        return Outcome::failed(CELL_STOPPED_REASON);
    }

    let context = RunContext {
        log_guid: task.log_guid.clone(),
        log_source: if task.log_source.is_empty() {
            "TASK".to_string()
        } else {
            task.log_source.clone()
        },
        instance: String::new(),
        env: task
            .env
            .iter()
            .map(|v| (v.name.clone(), v.value.clone()))
            .collect(),
        disk_mb: task.disk_mb.max(0) as u64,
    };
    match rep
        .executor
        .run(handle, &task.action, &context, cancel)
        .await
    {
        Ok(()) if task.result_file.is_empty() => Outcome::succeeded(String::new()),
        Ok(()) => match rep
            .executor
            .read_file(handle, &task.result_file, RESULT_FILE_MAX_BYTES)
            .await
        {
            Ok(result) => Outcome::succeeded(result),
            Err(err) => Outcome::failed(format!(
                "failed to read result file {}: {err}",
                task.result_file
            )),
        },
        // Cancelled: by the user (the task is already COMPLETED and
        // `complete` leaves it), or because the cell is stopping.
        Err(ActionError::Cancelled) => Outcome::failed(CELL_STOPPED_REASON),
        Err(err) => Outcome::failed(err.to_string()),
    }
}

/// Completes the task with `outcome` unless it already completed (e.g. it was
/// cancelled) or moved to another cell.
pub(crate) async fn complete(
    store: &SharedStore,
    task_guid: &str,
    cell_id: &str,
    outcome: Outcome,
) {
    let completed = modify_task(store.as_ref(), task_guid, |task| {
        if task.state.is_terminal()
            || task.cell_id != cell_id
            || task.apply(TaskEvent::Complete, now()).is_err()
        {
            return Ok::<_, Infallible>(Change::Keep);
        }
        task.failed = outcome.failed;
        task.failure_reason = outcome.failure_reason.clone();
        task.result = outcome.result.clone();
        Ok(Change::Update)
    })
    .await;
    match completed {
        Ok(Modified::Updated(task)) => {
            tracing::info!(task_guid, failed = task.failed, reason = %task.failure_reason, "task completed");
        }
        Ok(_) => {}
        Err(err) if err.is_not_found() => {
            tracing::info!(task_guid, error = %err, "task to complete is gone");
        }
        Err(err) => tracing::error!(task_guid, error = %err, "cannot complete task"),
    }
}

#[cfg(test)]
mod handle_tests {
    #[test]
    fn two_runs_of_one_task_guid_get_two_container_names() {
        let first = super::container_handle("same-guid");
        let second = super::container_handle("same-guid");
        assert!(first.starts_with("lattice-task-same-guid-"), "{first}");
        assert_ne!(first, second);
    }
}
