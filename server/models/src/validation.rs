//! Validation shared by every request type.
//!
//! A [`ValidationError`] always names the offending field with a JSON-path-like
//! string (`action.serial.actions[1].run.path`) so that the receptor's 400
//! answer tells the user exactly what to fix.

use serde::{Deserialize, Serialize};

/// How deep actions may nest (`try` in `timeout` in `serial`...), counting
/// the recipe's root as 1. Real recipes use a handful of levels; the bound
/// keeps every stored record far below the JSON decoders' recursion limit
/// (128 in serde_json) wherever it is wrapped (lists, events, feed lines),
/// so that every reader can decode what the receptor accepted.
pub const MAX_ACTION_DEPTH: usize = 32;

/// A request that parsed as JSON but breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// Path of the offending field, e.g. `instances` or `action.run.path`.
    pub field: String,
    /// What is wrong, lower-case, no final period.
    pub message: String,
}

impl ValidationError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Prefix the field path, used when a nested validator reports upwards.
    pub fn within(mut self, parent: &str) -> Self {
        self.field = if self.field.is_empty() {
            parent.to_string()
        } else if self.field.starts_with('[') {
            format!("{parent}{}", self.field)
        } else {
            format!("{parent}.{}", self.field)
        };
        self
    }
}

/// Version of a stored record, used for compare-and-swap: every write must name
/// the tag it read, and the store bumps `index` on success. `epoch` changes when
/// a record is re-created, so a stale writer holding an old record can never
/// match a new one with the same key.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ModificationTag {
    pub epoch: String,
    pub index: u32,
}

/// Guids name tasks, processes and instances: `[A-Za-z0-9_-]+`.
pub fn validate_guid(field: &str, value: &str) -> Result<(), ValidationError> {
    if value.is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    if value.len() > 255 {
        return Err(ValidationError::new(
            field,
            "must be at most 255 characters",
        ));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(ValidationError::new(
            field,
            format!("{value:?} contains {bad:?}; only letters, digits, '-' and '_' are allowed"),
        ));
    }
    Ok(())
}

/// Domains group work for bulk operations; same alphabet as guids.
pub fn validate_domain(field: &str, value: &str) -> Result<(), ValidationError> {
    validate_guid(field, value)
}

pub fn validate_non_negative(field: &str, value: i64) -> Result<(), ValidationError> {
    if value < 0 {
        return Err(ValidationError::new(
            field,
            format!("must be >= 0, got {value}"),
        ));
    }
    Ok(())
}

pub fn validate_rootfs(field: &str, value: &str) -> Result<(), ValidationError> {
    if value.is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    let Some((scheme, rest)) = value.split_once("://") else {
        return Err(ValidationError::new(
            field,
            format!(
                "{value:?} is not a rootfs URL; expected docker:///IMAGE[#TAG] or preloaded:STACK"
            ),
        ));
    };
    match scheme {
        "docker" => {
            let image = rest.trim_start_matches('/');
            if image.is_empty() || image.starts_with('#') {
                return Err(ValidationError::new(
                    field,
                    format!("{value:?} names no image; expected docker:///IMAGE[#TAG]"),
                ));
            }
            Ok(())
        }
        "preloaded" => Ok(()),
        other => Err(ValidationError::new(
            field,
            format!("unsupported rootfs scheme {other:?}; expected docker:// or preloaded://"),
        )),
    }
}

pub fn validate_cpu_weight(field: &str, value: i64) -> Result<(), ValidationError> {
    if !(0..=100).contains(&value) {
        return Err(ValidationError::new(
            field,
            format!("must be between 0 and 100, got {value}"),
        ));
    }
    Ok(())
}

/// Paths, arguments and environment values end up as C strings (execve,
/// the engine's API), where a NUL byte would silently cut them short or fail
/// at run time on the cell.
pub fn validate_no_nul(field: &str, value: &str) -> Result<(), ValidationError> {
    if value.contains('\0') {
        return Err(ValidationError::new(
            field,
            "must not contain a NUL byte (\\u0000)",
        ));
    }
    Ok(())
}

pub fn validate_env(
    field: &str,
    env: &[crate::EnvironmentVariable],
) -> Result<(), ValidationError> {
    for (i, var) in env.iter().enumerate() {
        if var.name.is_empty() || var.name.contains('=') || var.name.contains('\0') {
            return Err(ValidationError::new(
                format!("{field}[{i}].name"),
                format!("{:?} is not a valid environment variable name", var.name),
            ));
        }
        validate_no_nul(&format!("{field}[{i}].value"), &var.value)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids() {
        assert!(validate_guid("g", "abc-DEF_123").is_ok());
        assert_eq!(validate_guid("g", "").unwrap_err().field, "g");
        assert!(validate_guid("g", "a b").is_err());
        assert!(validate_guid("g", "a/b").is_err());
        assert!(validate_guid("g", &"a".repeat(256)).is_err());
    }

    #[test]
    fn rootfs() {
        assert!(validate_rootfs("r", "docker:///busybox").is_ok());
        assert!(validate_rootfs("r", "docker:///library/busybox#1.36").is_ok());
        assert!(validate_rootfs("r", "docker://registry:5000/repo").is_ok());
        assert!(validate_rootfs("r", "preloaded:cflinuxfs4").is_err());
        assert!(validate_rootfs("r", "preloaded://cflinuxfs4").is_ok());
        assert!(validate_rootfs("r", "docker:///").is_err());
        assert!(validate_rootfs("r", "busybox").is_err());
        assert!(validate_rootfs("r", "http://x").is_err());
    }

    #[test]
    fn within_builds_paths() {
        let e = ValidationError::new("path", "bad")
            .within("run")
            .within("action");
        assert_eq!(e.field, "action.run.path");
        let e = ValidationError::new("[2]", "bad").within("actions");
        assert_eq!(e.field, "actions[2]");
    }
}
