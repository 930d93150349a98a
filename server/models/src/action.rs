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

/// The largest `nofile` a process can be given: the kernel's default
/// `fs.nr_open`; a larger RLIMIT_NOFILE fails at spawn time.
pub const MAX_NOFILE: u64 = 1 << 20;

/// The largest `nproc`: the kernel's default `pid_max` on 64-bit hosts.
pub const MAX_NPROC: u64 = 1 << 22;

impl ResourceLimits {
    /// Both of Diego's limits are honoured (`nofile` as the process's
    /// RLIMIT_NOFILE, `nproc` as its container's PID limit); values that
    /// cannot be (0 would forbid the process itself, beyond the kernel's
    /// maximum fails at spawn) are refused here rather than on the cell.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let check = |field: &str, value: Option<u64>, max: u64| match value {
            Some(v) if v == 0 || v > max => Err(ValidationError::new(
                field,
                format!("must be between 1 and {max}, got {v}"),
            )),
            _ => Ok(()),
        };
        check("nofile", self.nofile, MAX_NOFILE)?;
        check("nproc", self.nproc, MAX_NPROC)
    }
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
    ///
    /// # Errors
    /// Besides field rules: an action nested more than
    /// [`MAX_ACTION_DEPTH`](crate::validation::MAX_ACTION_DEPTH) deep, named
    /// by the path of the first action past the limit.
    pub fn validate(&self) -> Result<(), ValidationError> {
        self.validate_at(1)
    }

    /// `depth` is this action's nesting level, 1 for a recipe's root.
    fn validate_at(&self, depth: usize) -> Result<(), ValidationError> {
        use crate::validation::{validate_no_nul, MAX_ACTION_DEPTH};
        let kind = self.kind();
        if depth > MAX_ACTION_DEPTH {
            return Err(ValidationError::new(
                kind,
                format!(
                    "actions are nested more than {MAX_ACTION_DEPTH} deep; flatten the recipe (e.g. one serial action instead of nested ones)"
                ),
            ));
        }
        let nested = |a: &Action| a.validate_at(depth + 1).map_err(|e| e.within("action"));
        let inner = match self {
            Action::Download(a) => validate_url("from", &a.from)
                .and_then(|_| validate_container_path("to", &a.to))
                .and_then(|_| validate_user(&a.user)),
            Action::Upload(a) => validate_container_path("from", &a.from)
                .and_then(|_| validate_url("to", &a.to))
                .and_then(|_| validate_user(&a.user)),
            Action::Run(a) => {
                if a.path.is_empty() {
                    Err(ValidationError::new("path", "must not be empty"))
                } else {
                    validate_no_nul("path", &a.path)
                        .and_then(|_| {
                            a.args.iter().enumerate().try_for_each(|(i, arg)| {
                                validate_no_nul(&format!("args[{i}]"), arg)
                            })
                        })
                        .and_then(|_| match &a.dir {
                            Some(dir) => validate_no_nul("dir", dir),
                            None => Ok(()),
                        })
                        .and_then(|_| validate_user(&a.user))
                        .and_then(|_| crate::validation::validate_env("env", &a.env))
                        .and_then(|_| match &a.resource_limits {
                            Some(limits) => {
                                limits.validate().map_err(|e| e.within("resource_limits"))
                            }
                            None => Ok(()),
                        })
                }
            }
            Action::Timeout(a) => {
                if a.timeout_ns <= 0 {
                    Err(ValidationError::new(
                        "timeout",
                        format!("must be > 0 nanoseconds, got {}", a.timeout_ns),
                    ))
                } else {
                    nested(&a.action)
                }
            }
            Action::Try(a) => nested(&a.action),
            Action::EmitProgress(a) => nested(&a.action),
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
                        a.validate_at(depth + 1)
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
    crate::validation::validate_no_nul(field, value)
}

fn validate_user(user: &Option<String>) -> Result<(), ValidationError> {
    match user {
        Some(user) => crate::validation::validate_no_nul("user", user),
        None => Ok(()),
    }
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

    fn nest_in_try(depth: usize) -> Action {
        let mut action = Action::run("/bin/true", &[]);
        for _ in 1..depth {
            action = Action::Try(TryAction {
                action: Box::new(action),
                log_source: None,
            });
        }
        action
    }

    #[test]
    fn regression_nesting_past_the_limit_names_the_path() {
        use crate::validation::MAX_ACTION_DEPTH;
        assert!(nest_in_try(MAX_ACTION_DEPTH).validate().is_ok());
        let err = nest_in_try(MAX_ACTION_DEPTH + 1).validate().unwrap_err();
        let expected = format!("{}run", "try.action.".repeat(MAX_ACTION_DEPTH));
        assert_eq!(err.field, expected);
        assert!(err.message.contains("nested more than 32"), "{err}");
        // The 62-deep recipe of the report.
        assert!(nest_in_try(62).validate().is_err());
    }

    #[test]
    fn regression_deepest_accepted_recipe_decodes_in_every_wrapper() {
        use crate::validation::MAX_ACTION_DEPTH;
        // Serial levels cost the most JSON depth (object, object, array).
        let mut action = Action::Run(RunAction {
            env: vec![EnvironmentVariable::new("A", "1")],
            ..match Action::run("/bin/true", &[]) {
                Action::Run(r) => r,
                _ => unreachable!("Action::run builds a run action"),
            }
        });
        for _ in 1..MAX_ACTION_DEPTH {
            action = Action::Serial(SerialAction {
                actions: vec![action],
                log_source: None,
            });
        }
        action.validate().expect("at the limit");
        // A list of records inside an event inside a feed line inside an
        // RPC answer: far more wrapping than any reader adds.
        let wrapped = json!({"a": [{"b": {"c": [{"d": {"e": {"action": action}}}]}}]});
        let text = serde_json::to_string(&wrapped).unwrap();
        let back: serde_json::Value =
            serde_json::from_str(&text).expect("under the decoder's limit");
        assert_eq!(back, wrapped);
    }

    #[test]
    fn regression_nul_bytes_refused() {
        let a = parse(json!({"run": {"path": "/bin/sh\0x"}})).unwrap();
        assert_eq!(a.validate().unwrap_err().field, "run.path");
        let a = parse(json!({"run": {"path": "/bin/sh", "args": ["ok", "a\0"]}})).unwrap();
        assert_eq!(a.validate().unwrap_err().field, "run.args[1]");
        let a = parse(json!({"run": {"path": "/bin/sh", "env": [{"name": "A", "value": "x\0y"}]}}))
            .unwrap();
        assert_eq!(a.validate().unwrap_err().field, "run.env[0].value");
        let a = parse(json!({"download": {"from": "http://x/y", "to": "/tmp/\0"}})).unwrap();
        assert_eq!(a.validate().unwrap_err().field, "download.to");
        let a = parse(json!({"upload": {"from": "/a\0", "to": "http://x/y"}})).unwrap();
        assert_eq!(a.validate().unwrap_err().field, "upload.from");
    }

    #[test]
    fn resource_limits_we_cannot_honour_are_refused() {
        let a = parse(json!({"run": {"path": "/a", "resource_limits": {"nproc": 0}}})).unwrap();
        assert_eq!(a.validate().unwrap_err().field, "run.resource_limits.nproc");
        let a = parse(json!({"run": {"path": "/a", "resource_limits": {"nofile": 4294967296u64}}}))
            .unwrap();
        assert_eq!(
            a.validate().unwrap_err().field,
            "run.resource_limits.nofile"
        );
        let a =
            parse(json!({"run": {"path": "/a", "resource_limits": {"nofile": 4096, "nproc": 64}}}))
                .unwrap();
        assert!(a.validate().is_ok());
        let err = parse(json!({"run": {"path": "/a", "resource_limits": {"as": 1}}})).unwrap_err();
        assert!(err.contains("as"), "{err}");
    }
}
