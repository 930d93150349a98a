//! Change events, served as Server-Sent Events on `/v1/events`. The SSE event
//! name is [`Event::name`]; the data is the JSON of the payload, with Diego's
//! keys (`desired_lrp`, `desired_lrp_before`/`desired_lrp_after`, ...).

use serde::{Deserialize, Serialize};

use crate::lrp::{ActualLrp, DesiredLrp};
use crate::task::Task;

// The changed variants carry two records; boxing them would add an
// allocation per event for no gain, since events are cloned and sent whole.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum Event {
    DesiredLrpCreated {
        desired_lrp: DesiredLrp,
    },
    DesiredLrpChanged {
        desired_lrp_before: DesiredLrp,
        desired_lrp_after: DesiredLrp,
    },
    DesiredLrpRemoved {
        desired_lrp: DesiredLrp,
    },
    ActualLrpCreated {
        actual_lrp: ActualLrp,
    },
    ActualLrpChanged {
        actual_lrp_before: ActualLrp,
        actual_lrp_after: ActualLrp,
    },
    ActualLrpRemoved {
        actual_lrp: ActualLrp,
    },
    TaskCreated {
        task: Task,
    },
    TaskChanged {
        task_before: Task,
        task_after: Task,
    },
    TaskRemoved {
        task: Task,
    },
}

impl Event {
    /// The SSE event name, e.g. `desired_lrp_created`.
    pub fn name(&self) -> &'static str {
        match self {
            Event::DesiredLrpCreated { .. } => "desired_lrp_created",
            Event::DesiredLrpChanged { .. } => "desired_lrp_changed",
            Event::DesiredLrpRemoved { .. } => "desired_lrp_removed",
            Event::ActualLrpCreated { .. } => "actual_lrp_created",
            Event::ActualLrpChanged { .. } => "actual_lrp_changed",
            Event::ActualLrpRemoved { .. } => "actual_lrp_removed",
            Event::TaskCreated { .. } => "task_created",
            Event::TaskChanged { .. } => "task_changed",
            Event::TaskRemoved { .. } => "task_removed",
        }
    }

    /// The SSE data: the payload object without the event name.
    pub fn data(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        value
            .get_mut("data")
            .map(serde_json::Value::take)
            .unwrap_or_default()
    }

    /// Rebuilds an event from an SSE name and data, as a client reads them.
    pub fn from_parts(name: &str, data: &str) -> Result<Event, serde_json::Error> {
        let data: serde_json::Value = serde_json::from_str(data)?;
        serde_json::from_value(serde_json::json!({ "type": name, "data": data }))
    }

    /// The process guid this event is about, if it is an LRP event.
    pub fn process_guid(&self) -> Option<&str> {
        match self {
            Event::DesiredLrpCreated { desired_lrp } | Event::DesiredLrpRemoved { desired_lrp } => {
                Some(&desired_lrp.process_guid)
            }
            Event::DesiredLrpChanged {
                desired_lrp_after, ..
            } => Some(&desired_lrp_after.process_guid),
            Event::ActualLrpCreated { actual_lrp } | Event::ActualLrpRemoved { actual_lrp } => {
                Some(&actual_lrp.process_guid)
            }
            Event::ActualLrpChanged {
                actual_lrp_after, ..
            } => Some(&actual_lrp_after.process_guid),
            Event::TaskCreated { .. } | Event::TaskChanged { .. } | Event::TaskRemoved { .. } => {
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_round_trip() {
        let lrp = ActualLrp::unclaimed("web", "apps", 3, 42);
        let event = Event::ActualLrpCreated { actual_lrp: lrp };
        let data = serde_json::to_string(&event.data()).unwrap();
        assert!(data.starts_with("{\"actual_lrp\":"), "{data}");
        assert_eq!(Event::from_parts(event.name(), &data).unwrap(), event);
    }
}
