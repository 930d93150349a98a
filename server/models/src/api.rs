//! The receptor API's error body: `{"name": "InvalidRequest", "message": "..."}`,
//! plus the offending `field` where there is one.

use serde::{Deserialize, Serialize};

/// Error kinds, named as in Diego's receptor API (`errors.go`), plus a few
/// of ours for cases Diego has no name for (see `docs/api.md`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ApiErrorName {
    /// The body is not JSON, or not JSON of the expected shape (400).
    #[serde(rename = "InvalidJSON")]
    InvalidJson,
    /// A path parameter or header is malformed (400).
    InvalidRequest,
    /// A task that parsed but breaks a rule (400).
    InvalidTask,
    /// A desired LRP (or update) that parsed but breaks a rule (400).
    #[serde(rename = "InvalidLRP")]
    InvalidLrp,
    /// Missing or wrong credentials (401).
    Unauthorized,
    /// No task with that guid (404).
    TaskNotFound,
    /// No desired LRP with that process guid (404).
    #[serde(rename = "DesiredLRPNotFound")]
    DesiredLrpNotFound,
    /// No actual LRP at that process guid and index (404).
    #[serde(rename = "ActualLRPIndexNotFound")]
    ActualLrpIndexNotFound,
    /// No such endpoint, artifact or other record (404). Ours.
    ResourceNotFound,
    /// A task with that guid exists (409).
    TaskGuidAlreadyExists,
    /// A desired LRP with that process guid exists (409).
    #[serde(rename = "DesiredLRPAlreadyExists")]
    DesiredLrpAlreadyExists,
    /// The record changed since it was read, or is in a state that does not
    /// allow the operation (409). Ours.
    ResourceConflict,
    /// The task is in a state that does not allow the operation (409).
    TaskNotDeletable,
    /// The body is larger than the server accepts (413). Ours.
    RequestEntityTooLarge,
    /// The server failed; details are in its log (500).
    UnknownError,
    /// A dependency of the server (the store) is unavailable (503). Ours.
    ServiceUnavailable,
}

impl ApiErrorName {
    /// Every name, for tables and tests.
    pub const ALL: [ApiErrorName; 16] = [
        ApiErrorName::InvalidJson,
        ApiErrorName::InvalidRequest,
        ApiErrorName::InvalidTask,
        ApiErrorName::InvalidLrp,
        ApiErrorName::Unauthorized,
        ApiErrorName::TaskNotFound,
        ApiErrorName::DesiredLrpNotFound,
        ApiErrorName::ActualLrpIndexNotFound,
        ApiErrorName::ResourceNotFound,
        ApiErrorName::TaskGuidAlreadyExists,
        ApiErrorName::DesiredLrpAlreadyExists,
        ApiErrorName::ResourceConflict,
        ApiErrorName::TaskNotDeletable,
        ApiErrorName::RequestEntityTooLarge,
        ApiErrorName::UnknownError,
        ApiErrorName::ServiceUnavailable,
    ];

    pub fn status(self) -> u16 {
        use ApiErrorName::*;
        match self {
            InvalidJson | InvalidRequest | InvalidTask | InvalidLrp => 400,
            Unauthorized => 401,
            TaskNotFound | DesiredLrpNotFound | ActualLrpIndexNotFound | ResourceNotFound => 404,
            TaskGuidAlreadyExists
            | DesiredLrpAlreadyExists
            | ResourceConflict
            | TaskNotDeletable => 409,
            RequestEntityTooLarge => 413,
            UnknownError => 500,
            ServiceUnavailable => 503,
        }
    }

    /// The wire name, e.g. `DesiredLRPNotFound`.
    pub fn as_str(self) -> &'static str {
        use ApiErrorName::*;
        match self {
            InvalidJson => "InvalidJSON",
            InvalidRequest => "InvalidRequest",
            InvalidTask => "InvalidTask",
            InvalidLrp => "InvalidLRP",
            Unauthorized => "Unauthorized",
            TaskNotFound => "TaskNotFound",
            DesiredLrpNotFound => "DesiredLRPNotFound",
            ActualLrpIndexNotFound => "ActualLRPIndexNotFound",
            ResourceNotFound => "ResourceNotFound",
            TaskGuidAlreadyExists => "TaskGuidAlreadyExists",
            DesiredLrpAlreadyExists => "DesiredLRPAlreadyExists",
            ResourceConflict => "ResourceConflict",
            TaskNotDeletable => "TaskNotDeletable",
            RequestEntityTooLarge => "RequestEntityTooLarge",
            UnknownError => "UnknownError",
            ServiceUnavailable => "ServiceUnavailable",
        }
    }

    /// Whether the answer means "there is no such thing".
    pub fn is_not_found(self) -> bool {
        self.status() == 404
    }
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiErrorBody {
    pub name: ApiErrorName,
    pub message: String,
    /// The offending field for `InvalidJSON` and `InvalidRequest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_match_serde() {
        for name in ApiErrorName::ALL {
            assert_eq!(
                serde_json::to_value(name).unwrap(),
                serde_json::Value::String(name.as_str().to_string())
            );
        }
    }
}

/// `GET /v1/version`: the versions of what the cluster runs, as Lattice's
/// receptor answered (`receptor`, `ltc`, `lattice_release`, ...). A version
/// the cluster does not have (we run no Diego, CF or Garden release) is
/// omitted rather than sent empty.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cf_release: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cf_routing_release: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diego_release: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub garden_linux_release: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lattice_release: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lattice_release_image: Option<String>,
    /// The version of the `ltc` the cluster serves on `/v1/sync`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ltc: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receptor: Option<String>,
}

/// The architectures `/v1/sync/{arch}/ltc` names, in Lattice's spelling.
pub const SYNC_ARCHES: &[&str] = &["linux", "osx"];

/// The sync architecture of the machine this is compiled for, if it is one
/// `ltc sync` knows.
pub fn sync_arch() -> Option<&'static str> {
    if cfg!(target_os = "linux") {
        Some("linux")
    } else if cfg!(target_os = "macos") {
        Some("osx")
    } else {
        None
    }
}
