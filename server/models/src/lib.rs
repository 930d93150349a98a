//! Wire and store models of the lattice cluster runtime.
//!
//! Every type here speaks the JSON of Diego's receptor API (snake_case fields,
//! the same names), so that a Diego or Lattice user recognises the payloads.
//! The crate does no I/O: it holds serde types, their validation, and the
//! state machines of tasks and actual LRPs with their legal transitions.
//!
//! # Layout
//! - [`action`]: the composable action tree (`run`, `download`, `serial`, ...).
//! - [`task`]: one-off tasks and the task state machine.
//! - [`lrp`]: desired LRPs (what the user asked for) and actual LRPs (instances).
//! - [`cell`]: cell presence and capacity.
//! - [`routes`]: HTTP and TCP routes of an LRP.
//! - [`ssh`]: `ltc ssh` login names and the proxy-to-rep session frames.
//! - [`egress`]: egress rules (Diego's security group rules).
//! - [`event`]: the change events served on `/v1/events`.
//! - [`log`]: log lines of containers, as `ltc logs` shows them, and the
//!   log hub's filters.
//! - [`droplet`]: the file server's droplet and blob records.
//! - [`metrics`]: containers' and cells' resource usage, as cells sample it.
//! - [`validation`]: the shared validation error and helpers.
//! - [`api`]: the JSON error body of the receptor API.
//! - [`parse`]: JSON parsing that names the offending field.

pub mod action;
pub mod api;
pub mod auction;
pub mod cell;
pub mod crash;
pub mod droplet;
pub mod egress;
pub mod event;
pub mod lifecycle;
pub mod log;
pub mod lrp;
pub mod metrics;
pub mod pacing;
pub mod parse;
pub mod routes;
pub mod ssh;
pub mod task;
pub mod validation;

pub use action::Action;
pub use api::{ApiErrorBody, ApiErrorName, VersionResponse};
pub use cell::{CellCapacity, CellPresence, CellResponse};
pub use egress::SecurityGroupRule;
pub use event::Event;
pub use log::{LogMessage, MessageType};
pub use lrp::{
    ActualLrp, ActualLrpEvent, ActualLrpState, DesiredLrp, DesiredLrpCreateRequest,
    DesiredLrpUpdateRequest, EvacuatingInstance, PortMapping, PreferredAddress,
};
pub use metrics::{CellUsage, ContainerMetrics};
pub use routes::{HttpRoute, Routes, TcpRoute};
pub use task::{Task, TaskCreateRequest, TaskEvent, TaskState};
pub use validation::{ModificationTag, ValidationError};

/// Environment variable as Diego writes it: `{"name": "...", "value": "..."}`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentVariable {
    pub name: String,
    pub value: String,
}

impl EnvironmentVariable {
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// Current time as nanoseconds since the Unix epoch, the unit Diego uses for
/// `created_at` and `since`.
pub fn unix_nanos(time: std::time::SystemTime) -> i64 {
    time.duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
