//! The receptor API's error body: `{"name": "InvalidRequest", "message": "..."}`,
//! plus the offending `field` where there is one.

use serde::{Deserialize, Serialize};

/// Error kinds, named as in Diego's receptor API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ApiErrorName {
    /// The body is not JSON, or not JSON of the expected shape (400).
    #[serde(rename = "InvalidJSON")]
    InvalidJson,
    /// Well-formed JSON that breaks a rule (400).
    InvalidRequest,
    /// Missing or wrong credentials (401).
    Unauthorized,
    /// No such task, LRP, instance or cell (404).
    ResourceNotFound,
    /// A record with that key exists, or it changed since it was read (409).
    ResourceConflict,
    /// The task is in a state that does not allow the operation (409).
    TaskNotDeletable,
    /// The body is larger than the server accepts (413).
    RequestEntityTooLarge,
    /// The server failed; details are in its log (500).
    UnknownError,
    /// A dependency of the server (the store) is unavailable (503).
    ServiceUnavailable,
}

impl ApiErrorName {
    pub fn status(self) -> u16 {
        match self {
            ApiErrorName::InvalidJson | ApiErrorName::InvalidRequest => 400,
            ApiErrorName::Unauthorized => 401,
            ApiErrorName::ResourceNotFound => 404,
            ApiErrorName::ResourceConflict | ApiErrorName::TaskNotDeletable => 409,
            ApiErrorName::RequestEntityTooLarge => 413,
            ApiErrorName::UnknownError => 500,
            ApiErrorName::ServiceUnavailable => 503,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiErrorBody {
    pub name: ApiErrorName,
    pub message: String,
    /// The offending field for `InvalidJSON` and `InvalidRequest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}
