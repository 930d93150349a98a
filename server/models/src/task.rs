//! Tasks: one-off work, run at most once.
//!
//! ```text
//! PENDING -> CLAIMED -> RUNNING -> COMPLETED -> RESOLVING -> (deleted)
//!    \__________\__________\______/^
//! ```
//! Any state before COMPLETED may jump to COMPLETED (failed, cancelled, cell
//! lost). Nothing ever goes back to PENDING: that is what makes "at most once"
//! hold even when the store is the only thing that survives a crash.

use serde::{Deserialize, Serialize};

use crate::action::Action;
use crate::egress::SecurityGroupRule;
use crate::validation::{self, ModificationTag, ValidationError};
use crate::EnvironmentVariable;

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskState {
    Pending,
    Claimed,
    Running,
    Completed,
    Resolving,
}

impl TaskState {
    pub const ALL: [TaskState; 5] = [
        TaskState::Pending,
        TaskState::Claimed,
        TaskState::Running,
        TaskState::Completed,
        TaskState::Resolving,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "PENDING",
            TaskState::Claimed => "CLAIMED",
            TaskState::Running => "RUNNING",
            TaskState::Completed => "COMPLETED",
            TaskState::Resolving => "RESOLVING",
        }
    }

    /// The state a task moves to on `event`, or why it cannot.
    pub fn transition(self, event: TaskEvent) -> Result<TaskState, InvalidTaskTransition> {
        use TaskEvent::*;
        use TaskState::*;
        let next = match (self, event) {
            (Pending, Claim) => Claimed,
            (Claimed, Start) => Running,
            (Pending | Claimed | Running, Complete) => Completed,
            (Completed, Resolve) => Resolving,
            // A resolver that died mid-callback hands the task back.
            (Resolving, Unresolve) => Completed,
            (from, event) => return Err(InvalidTaskTransition { from, event }),
        };
        Ok(next)
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, TaskState::Completed | TaskState::Resolving)
    }
}

impl std::fmt::Display for TaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happens to a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskEvent {
    /// A cell won the auction and claims the task.
    Claim,
    /// The cell started the task's container.
    Start,
    /// The task finished, failed, was cancelled or lost its cell.
    Complete,
    /// Someone took responsibility for the result (the completion callback).
    Resolve,
    /// The resolver gave up; the task waits to be resolved again.
    Unresolve,
}

impl TaskEvent {
    pub const ALL: [TaskEvent; 5] = [
        TaskEvent::Claim,
        TaskEvent::Start,
        TaskEvent::Complete,
        TaskEvent::Resolve,
        TaskEvent::Unresolve,
    ];
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a task in state {from} cannot {event:?}")]
pub struct InvalidTaskTransition {
    pub from: TaskState,
    pub event: TaskEvent,
}

/// `POST /v1/tasks`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskCreateRequest {
    pub task_guid: String,
    pub domain: String,
    pub rootfs: String,
    pub action: Action,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvironmentVariable>,
    #[serde(default)]
    pub cpu_weight: i64,
    #[serde(default)]
    pub disk_mb: i64,
    #[serde(default)]
    pub memory_mb: i64,
    #[serde(default)]
    pub privileged: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub log_guid: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub log_source: String,
    /// Diego's metrics id; stored and returned, we emit no container metrics.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub metrics_guid: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub result_file: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub completion_callback_url: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub annotation: String,
    /// Stored and returned; not enforced by our cells (see `egress`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress_rules: Vec<SecurityGroupRule>,
}

impl TaskCreateRequest {
    pub fn validate(&self) -> Result<(), ValidationError> {
        validation::validate_guid("task_guid", &self.task_guid)?;
        validation::validate_domain("domain", &self.domain)?;
        validation::validate_rootfs("rootfs", &self.rootfs)?;
        self.action.validate().map_err(|e| e.within("action"))?;
        validation::validate_env("env", &self.env)?;
        validation::validate_cpu_weight("cpu_weight", self.cpu_weight)?;
        validation::validate_non_negative("disk_mb", self.disk_mb)?;
        validation::validate_non_negative("memory_mb", self.memory_mb)?;
        crate::egress::validate_rules("egress_rules", &self.egress_rules)?;
        let callback = &self.completion_callback_url;
        let is_http = callback.starts_with("http://") || callback.starts_with("https://");
        if !callback.is_empty() && !is_http {
            return Err(ValidationError::new(
                "completion_callback_url",
                format!("{:?} is not an http(s) URL", self.completion_callback_url),
            ));
        }
        if self.annotation.len() > 10 * 1024 {
            return Err(ValidationError::new(
                "annotation",
                "must be at most 10240 bytes",
            ));
        }
        Ok(())
    }

    /// The stored task for an accepted request, PENDING as of `now_nanos`.
    pub fn into_task(self, now_nanos: i64) -> Task {
        Task {
            task_guid: self.task_guid,
            domain: self.domain,
            rootfs: self.rootfs,
            action: self.action,
            env: self.env,
            cpu_weight: self.cpu_weight,
            disk_mb: self.disk_mb,
            memory_mb: self.memory_mb,
            privileged: self.privileged,
            log_guid: self.log_guid,
            log_source: self.log_source,
            metrics_guid: self.metrics_guid,
            result_file: self.result_file,
            completion_callback_url: self.completion_callback_url,
            annotation: self.annotation,
            egress_rules: self.egress_rules,
            state: TaskState::Pending,
            cell_id: String::new(),
            failed: false,
            failure_reason: String::new(),
            result: String::new(),
            created_at: now_nanos,
            updated_at: now_nanos,
            first_completed_at: 0,
            modification_tag: ModificationTag::default(),
        }
    }
}

/// A task as stored and as answered by `GET /v1/tasks/:guid`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub task_guid: String,
    pub domain: String,
    pub rootfs: String,
    pub action: Action,
    #[serde(default)]
    pub env: Vec<EnvironmentVariable>,
    pub cpu_weight: i64,
    pub disk_mb: i64,
    pub memory_mb: i64,
    pub privileged: bool,
    pub log_guid: String,
    pub log_source: String,
    #[serde(default)]
    pub metrics_guid: String,
    pub result_file: String,
    pub completion_callback_url: String,
    pub annotation: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress_rules: Vec<SecurityGroupRule>,
    pub state: TaskState,
    /// The cell that claimed the task; empty while PENDING.
    pub cell_id: String,
    pub failed: bool,
    pub failure_reason: String,
    /// The first 10 KB of `result_file`, read when the task completed.
    pub result: String,
    /// Nanoseconds since the Unix epoch.
    pub created_at: i64,
    pub updated_at: i64,
    /// When the task first reached COMPLETED; drives expiry.
    #[serde(default)]
    pub first_completed_at: i64,
    #[serde(default)]
    pub modification_tag: ModificationTag,
}

impl Task {
    /// Applies `event` and records when it happened; the caller persists the
    /// result with compare-and-swap.
    pub fn apply(&mut self, event: TaskEvent, now_nanos: i64) -> Result<(), InvalidTaskTransition> {
        self.state = self.state.transition(event)?;
        self.updated_at = now_nanos;
        if event == TaskEvent::Complete && self.first_completed_at == 0 {
            self.first_completed_at = now_nanos;
        }
        Ok(())
    }

    /// Completes the task as failed with `reason`.
    pub fn fail(
        &mut self,
        reason: impl Into<String>,
        now_nanos: i64,
    ) -> Result<(), InvalidTaskTransition> {
        self.apply(TaskEvent::Complete, now_nanos)?;
        self.failed = true;
        self.failure_reason = reason.into();
        self.result.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every (state, event) pair: exactly the legal ones succeed.
    #[test]
    fn transition_table() {
        use TaskEvent::*;
        use TaskState::*;
        let legal = [
            (Pending, Claim, Claimed),
            (Claimed, Start, Running),
            (Pending, Complete, Completed),
            (Claimed, Complete, Completed),
            (Running, Complete, Completed),
            (Completed, Resolve, Resolving),
            (Resolving, Unresolve, Completed),
        ];
        for from in TaskState::ALL {
            for event in TaskEvent::ALL {
                let expected = legal
                    .iter()
                    .find(|(f, e, _)| *f == from && *e == event)
                    .map(|(_, _, to)| *to);
                assert_eq!(
                    from.transition(event).ok(),
                    expected,
                    "{from:?} --{event:?}-->"
                );
            }
        }
    }

    #[test]
    fn never_back_to_pending() {
        for from in TaskState::ALL {
            for event in TaskEvent::ALL {
                assert_ne!(from.transition(event).ok(), Some(TaskState::Pending));
            }
        }
    }

    #[test]
    fn state_wire_names() {
        assert_eq!(
            serde_json::to_string(&TaskState::Resolving).unwrap(),
            "\"RESOLVING\""
        );
    }
}
