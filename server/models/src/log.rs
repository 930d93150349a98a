//! Log messages: one line of output of a container's process (or a line the
//! system writes about it), tagged so that `ltc logs` can show whose it is.
//!
//! The executor produces them, the log hub buffers and streams them. The
//! `source_type` names who wrote the line, as in Loggregator: `APP` for the
//! application, `STG` for staging, `CELL` for the cell (container lifecycle,
//! progress messages), `HEALTH` for health checks, `RTR` for the router; an
//! action may name its own source with `log_source`.

use serde::{Deserialize, Serialize};

/// Output of the application itself.
pub const SOURCE_APP: &str = "APP";
/// Output of staging (building a droplet).
pub const SOURCE_STAGING: &str = "STG";
/// Lines the cell writes about a container (creating, progress, failures).
pub const SOURCE_CELL: &str = "CELL";
/// Output of health checks.
pub const SOURCE_HEALTH: &str = "HEALTH";
/// Access lines written by the router.
pub const SOURCE_ROUTER: &str = "RTR";

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageType {
    Out,
    Err,
}

/// One log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogMessage {
    /// The `log_guid` of the task or desired LRP the line belongs to.
    pub log_guid: String,
    /// Who wrote the line: one of the `SOURCE_*` names or an action's
    /// `log_source`.
    pub source_type: String,
    /// The instance index of an LRP, or `""` when there is none (tasks).
    pub source_instance: String,
    /// The line, without its newline; always valid UTF-8 (invalid bytes are
    /// replaced).
    pub message: String,
    pub message_type: MessageType,
    /// When the line was read, in nanoseconds since the Unix epoch.
    pub timestamp: i64,
}

/// The Server-Sent Events name of a log line in the log hub's streams.
pub const LOG_EVENT: &str = "log";

/// The log guid under which the server's own tracing events are kept
/// (`ltc debug-logs`).
pub const DEBUG_LOG_GUID: &str = "lattice-debug";

/// The source of lines the log system writes itself (the drop marker), as
/// Loggregator named it.
pub const SOURCE_LOGGREGATOR: &str = "LGR";

/// Which lines of an app a reader wants; `None` matches every value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogFilter {
    /// Only lines of this `source_type` (`APP`, `CELL`, ...).
    pub source: Option<String>,
    /// Only lines of this `source_instance` (an LRP's index).
    pub instance: Option<String>,
}

impl LogFilter {
    pub fn matches(&self, message: &LogMessage) -> bool {
        self.source
            .as_ref()
            .is_none_or(|s| *s == message.source_type)
            && self
                .instance
                .as_ref()
                .is_none_or(|i| *i == message.source_instance)
    }
}

/// What a follower of the log hub asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FollowOptions {
    /// Start with the recent lines the hub still holds.
    pub recent: bool,
    /// See [`LogFilter::source`].
    pub source: Option<String>,
    /// See [`LogFilter::instance`].
    pub instance: Option<String>,
}

impl FollowOptions {
    pub fn filter(&self) -> LogFilter {
        LogFilter {
            source: self.source.clone(),
            instance: self.instance.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn wire_format() {
        let msg = LogMessage {
            log_guid: "app-1".into(),
            source_type: SOURCE_APP.into(),
            source_instance: "0".into(),
            message: "hello".into(),
            message_type: MessageType::Err,
            timestamp: 42,
        };
        let value = serde_json::to_value(&msg).unwrap();
        assert_eq!(
            value,
            json!({
                "log_guid": "app-1",
                "source_type": "APP",
                "source_instance": "0",
                "message": "hello",
                "message_type": "err",
                "timestamp": 42
            })
        );
        let back: LogMessage = serde_json::from_value(value).unwrap();
        assert_eq!(back, msg);
    }
}
