//! The composable action tree, as in Diego.
//!
//! On the wire every action is a one-key object naming its kind:
//! `{"run": {"path": "/bin/sh", "args": ["-c", "echo hi"]}}`. Parsing is
//! hand-written (not serde's enum derive) so that an unknown kind, an empty
//! object or two kinds in one object get an error that names the problem, and
//! so that `serde_path_to_error` can still report where it happened.

use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::validation::ValidationError;
use crate::EnvironmentVariable;

/// Every action kind, in the spelling of the wire format.
pub const ACTION_KINDS: &[&str] = &[
    "download",
    "upload",
    "run",
    "timeout",
    "try",
    "serial",
    "parallel",
    "codependent",
    "emit_progress",
];

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Download(DownloadAction),
    Upload(UploadAction),
    Run(RunAction),
    Timeout(TimeoutAction),
    Try(TryAction),
    Serial(SerialAction),
    Parallel(ParallelAction),
    Codependent(CodependentAction),
    EmitProgress(EmitProgressAction),
}

/// Fetch a file or an archive (tar, tgz) and put it at `to` in the container.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownloadAction {
    pub from: String,
    pub to: String,
    /// Downloads with the same key are fetched once per cell and reused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_source: Option<String>,
}

/// Send a file of the container to `to` (an HTTP URL) with a PUT-like POST.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadAction {
    pub from: String,
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_source: Option<String>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nofile: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nproc: Option<u64>,
}

/// Run a process in the container; a non-zero exit status fails the action.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunAction {
    pub path: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvironmentVariable>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_limits: Option<ResourceLimits>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_source: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suppress_log_output: bool,
}

/// Fail the inner action (and kill its processes) after `timeout_ns`.
///
/// On the wire this is Diego's form, `{"action": ..., "timeout": NANOSECONDS}`.
/// Our earlier spelling `"timeout_ms": MILLISECONDS` is still read (records
/// stored before, and existing scripts); it is always written back as Diego's.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "TimeoutWire")]
pub struct TimeoutAction {
    #[cfg_attr(feature = "openapi", schema(no_recursion))]
    pub action: Box<Action>,
    #[serde(rename = "timeout")]
    pub timeout_ns: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_source: Option<String>,
}

impl TimeoutAction {
    /// `timeout` as a duration; zero for a (rejected) non-positive value.
    pub fn duration(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(u64::try_from(self.timeout_ns).unwrap_or(0))
    }
}

/// What a timeout action may hold on the wire, before the two spellings of
/// its limit are reconciled.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TimeoutWire {
    action: Box<Action>,
    #[serde(default)]
    timeout: Option<i64>,
    #[serde(default)]
    timeout_ms: Option<i64>,
    #[serde(default)]
    log_source: Option<String>,
}

impl TryFrom<TimeoutWire> for TimeoutAction {
    type Error = String;

    fn try_from(wire: TimeoutWire) -> Result<Self, String> {
        let timeout_ns = match (wire.timeout, wire.timeout_ms) {
            (Some(ns), None) => ns,
            (None, Some(ms)) => ms.checked_mul(1_000_000).ok_or_else(|| {
                format!(
                    "timeout_ms {ms} is too large; give at most {} ms",
                    i64::MAX / 1_000_000
                )
            })?,
            (Some(_), Some(_)) => return Err(
                "give the limit once: \"timeout\" (nanoseconds, Diego's form) or \"timeout_ms\""
                    .to_string(),
            ),
            (None, None) => {
                return Err("missing field `timeout` (nanoseconds)".to_string());
            }
        };
        Ok(TimeoutAction {
            action: wire.action,
            timeout_ns,
            log_source: wire.log_source,
        })
    }
}

/// Run the inner action and ignore its failure.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TryAction {
    #[cfg_attr(feature = "openapi", schema(no_recursion))]
    pub action: Box<Action>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_source: Option<String>,
}

/// Run the actions one after another; the first failure stops the sequence.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialAction {
    #[cfg_attr(feature = "openapi", schema(no_recursion))]
    pub actions: Vec<Action>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_source: Option<String>,
}

/// Run the actions at once and wait for all; fails if any failed.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParallelAction {
    #[cfg_attr(feature = "openapi", schema(no_recursion))]
    pub actions: Vec<Action>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_source: Option<String>,
}

/// Run the actions at once; when the first one ends the others are cancelled.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodependentAction {
    #[cfg_attr(feature = "openapi", schema(no_recursion))]
    pub actions: Vec<Action>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_source: Option<String>,
}

/// Run the inner action, writing start/success/failure messages to the log.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmitProgressAction {
    #[cfg_attr(feature = "openapi", schema(no_recursion))]
    pub action: Box<Action>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_message_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_source: Option<String>,
}

impl<'de> Deserialize<'de> for Action {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ActionVisitor)
    }
}

struct ActionVisitor;

impl<'de> Visitor<'de> for ActionVisitor {
    type Value = Action;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "an action: an object with exactly one key, one of {}",
            ACTION_KINDS.join(", ")
        )
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Action, A::Error> {
        let Some(kind) = map.next_key::<String>()? else {
            return Err(de::Error::custom(format!(
                "empty action; expected one key, one of {}",
                ACTION_KINDS.join(", ")
            )));
        };
        let action = match kind.as_str() {
            "download" => Action::Download(map.next_value()?),
            "upload" => Action::Upload(map.next_value()?),
            "run" => Action::Run(map.next_value()?),
            "timeout" => Action::Timeout(map.next_value()?),
            "try" => Action::Try(map.next_value()?),
            "serial" => Action::Serial(map.next_value()?),
            "parallel" => Action::Parallel(map.next_value()?),
            "codependent" => Action::Codependent(map.next_value()?),
            "emit_progress" => Action::EmitProgress(map.next_value()?),
            other => {
                return Err(de::Error::custom(format!(
                    "unknown action kind {other:?}; expected one of {}",
                    ACTION_KINDS.join(", ")
                )))
            }
        };
        if let Some(extra) = map.next_key::<String>()? {
            return Err(de::Error::custom(format!(
                "an action has exactly one key; found {kind:?} and {extra:?}"
            )));
        }
        Ok(action)
    }
}

impl Action {
    /// The wire name of this action's kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Download(_) => "download",
            Action::Upload(_) => "upload",
            Action::Run(_) => "run",
            Action::Timeout(_) => "timeout",
            Action::Try(_) => "try",
            Action::Serial(_) => "serial",
            Action::Parallel(_) => "parallel",
            Action::Codependent(_) => "codependent",
            Action::EmitProgress(_) => "emit_progress",
        }
    }

    /// Checks the rules serde cannot express. Field paths in the error are
    /// relative to this action (`run.path`, `serial.actions[1].run.path`).
    pub fn validate(&self) -> Result<(), ValidationError> {
        let kind = self.kind();
        let inner = match self {
            Action::Download(a) => {
                validate_url("from", &a.from).and_then(|_| validate_container_path("to", &a.to))
            }
            Action::Upload(a) => {
                validate_container_path("from", &a.from).and_then(|_| validate_url("to", &a.to))
            }
            Action::Run(a) => {
                if a.path.is_empty() {
                    Err(ValidationError::new("path", "must not be empty"))
                } else {
                    crate::validation::validate_env("env", &a.env)
                }
            }
            Action::Timeout(a) => {
                if a.timeout_ns <= 0 {
                    Err(ValidationError::new(
                        "timeout",
                        format!("must be > 0 nanoseconds, got {}", a.timeout_ns),
                    ))
                } else {
                    a.action.validate().map_err(|e| e.within("action"))
                }
            }
            Action::Try(a) => a.action.validate().map_err(|e| e.within("action")),
            Action::EmitProgress(a) => a.action.validate().map_err(|e| e.within("action")),
            Action::Serial(SerialAction { actions, .. })
            | Action::Parallel(ParallelAction { actions, .. })
            | Action::Codependent(CodependentAction { actions, .. }) => {
                if actions.is_empty() {
                    Err(ValidationError::new(
                        "actions",
                        "must hold at least one action",
                    ))
                } else {
                    actions.iter().enumerate().try_for_each(|(i, a)| {
                        a.validate()
                            .map_err(|e| e.within(&format!("[{i}]")).within("actions"))
                    })
                }
            }
        };
        inner.map_err(|e| e.within(kind))
    }

    /// Every `run` action in the tree, depth first; used by tests and tools.
    pub fn run_actions(&self) -> Vec<&RunAction> {
        let mut out = Vec::new();
        self.collect_runs(&mut out);
        out
    }

    fn collect_runs<'a>(&'a self, out: &mut Vec<&'a RunAction>) {
        match self {
            Action::Run(r) => out.push(r),
            Action::Download(_) | Action::Upload(_) => {}
            Action::Timeout(TimeoutAction { action, .. })
            | Action::Try(TryAction { action, .. })
            | Action::EmitProgress(EmitProgressAction { action, .. }) => action.collect_runs(out),
            Action::Serial(SerialAction { actions, .. })
            | Action::Parallel(ParallelAction { actions, .. })
            | Action::Codependent(CodependentAction { actions, .. }) => {
                actions.iter().for_each(|a| a.collect_runs(out))
            }
        }
    }

    /// A `run` action with the given path and args; a convenience for callers.
    pub fn run(path: impl Into<String>, args: &[&str]) -> Action {
        Action::Run(RunAction {
            path: path.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            dir: None,
            env: Vec::new(),
            user: None,
            resource_limits: None,
            log_source: None,
            suppress_log_output: false,
        })
    }
}

fn validate_url(field: &str, value: &str) -> Result<(), ValidationError> {
    let ok = value.starts_with("http://") || value.starts_with("https://");
    if !ok || value.len() <= "http://".len() {
        return Err(ValidationError::new(
            field,
            format!("{value:?} is not an http(s) URL"),
        ));
    }
    Ok(())
}

fn validate_container_path(field: &str, value: &str) -> Result<(), ValidationError> {
    if value.is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> Result<Action, String> {
        crate::parse::from_json_value::<Action>(v).map_err(|e| e.to_string())
    }

    #[test]
    fn one_key_objects() {
        let a = parse(json!({"run": {"path": "/bin/true"}})).unwrap();
        assert_eq!(a.kind(), "run");
        assert_eq!(
            serde_json::to_value(&a).unwrap(),
            json!({"run": {"path": "/bin/true"}})
        );
    }

    #[test]
    fn unknown_kind_is_named() {
        let err = parse(json!({"rn": {"path": "/bin/true"}})).unwrap_err();
        assert!(err.contains("unknown action kind \"rn\""), "{err}");
    }

    #[test]
    fn two_kinds_rejected() {
        let err = parse(json!({"run": {"path": "a"}, "try": {"action": {"run": {"path": "b"}}}}))
            .unwrap_err();
        assert!(err.contains("exactly one key"), "{err}");
    }

    #[test]
    fn empty_action_rejected() {
        let err = parse(json!({})).unwrap_err();
        assert!(err.contains("empty action"), "{err}");
    }

    #[test]
    fn nested_error_has_path() {
        let err = parse(json!({"serial": {"actions": [{"run": {"path": "a"}}, {"bogus": {}}]}}))
            .unwrap_err();
        assert!(err.starts_with("serial.actions[1]"), "{err}");
    }

    #[test]
    fn unknown_field_rejected() {
        let err = parse(json!({"run": {"path": "a", "argz": []}})).unwrap_err();
        assert!(err.contains("argz"), "{err}");
    }

    #[test]
    fn validation_paths() {
        let a = parse(json!({"serial": {"actions": [
            {"run": {"path": "a"}},
            {"timeout": {"timeout": 0, "action": {"run": {"path": "b"}}}}
        ]}}))
        .unwrap();
        let err = a.validate().unwrap_err();
        assert_eq!(err.field, "serial.actions[1].timeout.timeout");

        let a = parse(json!({"try": {"action": {"run": {"path": ""}}}})).unwrap();
        assert_eq!(a.validate().unwrap_err().field, "try.action.run.path");

        let a = parse(json!({"parallel": {"actions": []}})).unwrap();
        assert_eq!(a.validate().unwrap_err().field, "parallel.actions");

        let a = parse(json!({"download": {"from": "ftp://x", "to": "/tmp"}})).unwrap();
        assert_eq!(a.validate().unwrap_err().field, "download.from");
    }

    #[test]
    fn timeout_in_diegos_nanoseconds_and_our_milliseconds() {
        let diego =
            parse(json!({"timeout": {"action": {"run": {"path": "a"}}, "timeout": 1_500_000}}))
                .unwrap();
        let ours =
            parse(json!({"timeout": {"action": {"run": {"path": "a"}}, "timeout_ms": 2}})).unwrap();
        let Action::Timeout(t) = &diego else {
            panic!("{diego:?}")
        };
        assert_eq!(t.duration(), std::time::Duration::from_micros(1500));
        let Action::Timeout(t) = &ours else {
            panic!("{ours:?}")
        };
        assert_eq!(t.timeout_ns, 2_000_000);
        // Always written in Diego's form.
        assert_eq!(
            serde_json::to_value(&ours).unwrap(),
            json!({"timeout": {"action": {"run": {"path": "a"}}, "timeout": 2_000_000}})
        );
        let both = parse(
            json!({"timeout": {"action": {"run": {"path": "a"}}, "timeout": 1, "timeout_ms": 1}}),
        );
        assert!(both.unwrap_err().contains("once"));
        let neither = parse(json!({"timeout": {"action": {"run": {"path": "a"}}}}));
        assert!(neither.unwrap_err().contains("timeout"));
        let typo = parse(json!({"timeout": {"action": {"run": {"path": "a"}}, "timeuot": 1}}));
        assert!(typo.unwrap_err().contains("timeuot"));
    }

    #[test]
    fn collects_runs() {
        let a = parse(json!({"codependent": {"actions": [
            {"run": {"path": "a"}},
            {"emit_progress": {"action": {"try": {"action": {"run": {"path": "b"}}}}}}
        ]}}))
        .unwrap();
        let paths: Vec<_> = a.run_actions().iter().map(|r| r.path.clone()).collect();
        assert_eq!(paths, ["a", "b"]);
    }
}
