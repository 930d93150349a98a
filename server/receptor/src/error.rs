//! The receptor's error policy.
//!
//! Every failure a client can cause or fix becomes an [`ApiError`] with a
//! status and a JSON body naming what is wrong (and the field, where there is
//! one). Failures of the server itself (the store's backend) are logged with
//! their cause and answered with a generic 500: internal details never reach
//! clients.
//!
//! Names are Diego's where Diego has one, so a Diego client can branch on
//! them: a missing record is `TaskNotFound`, `DesiredLRPNotFound` or
//! `ActualLRPIndexNotFound`; a duplicate create `TaskGuidAlreadyExists` or
//! `DesiredLRPAlreadyExists`; a body that parsed but breaks a rule
//! `InvalidTask` or `InvalidLRP`. The table is in `docs/api.md`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use lattice_bbs::modify::ModifyError;
use lattice_bbs::{RecordKind, StoreError};
use lattice_models::parse::ParseError;
use lattice_models::{ApiErrorBody, ApiErrorName, ValidationError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub name: ApiErrorName,
    pub message: String,
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(name: ApiErrorName, message: impl Into<String>) -> Self {
        Self {
            name,
            message: message.into(),
            field: None,
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ApiErrorName::ResourceNotFound, message)
    }

    /// A request body that parsed but breaks a rule, under Diego's name for
    /// the resource (`InvalidTask`, `InvalidLRP`).
    pub fn invalid(name: ApiErrorName, err: ValidationError) -> Self {
        ApiError {
            name,
            message: err.to_string(),
            field: Some(err.field),
        }
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ApiErrorName::ResourceConflict, message)
    }

    pub fn invalid_request(field: &str, message: impl Into<String>) -> Self {
        Self {
            name: ApiErrorName::InvalidRequest,
            message: message.into(),
            field: Some(field.to_string()),
        }
    }
}

impl From<ValidationError> for ApiError {
    fn from(err: ValidationError) -> Self {
        ApiError {
            name: ApiErrorName::InvalidRequest,
            message: err.to_string(),
            field: Some(err.field),
        }
    }
}

impl From<ParseError> for ApiError {
    fn from(err: ParseError) -> Self {
        let field = (!err.path.is_empty()).then(|| err.path.clone());
        ApiError {
            name: ApiErrorName::InvalidJson,
            message: err.to_string(),
            field,
        }
    }
}

/// A read-decide-write of the store that did not land: the store's error,
/// the handler's own refusal, or a record that kept changing (409: the
/// client may try again).
impl From<ModifyError<ApiError>> for ApiError {
    fn from(err: ModifyError<ApiError>) -> Self {
        match err {
            ModifyError::Store(err) => err.into(),
            ModifyError::Refused(err) => err,
            ModifyError::KeptChanging { kind, key } => {
                ApiError::conflict(format!("{kind} {key:?} kept changing; try again"))
            }
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound { kind, .. } => {
                let name = match kind {
                    RecordKind::Task => ApiErrorName::TaskNotFound,
                    RecordKind::DesiredLrp => ApiErrorName::DesiredLrpNotFound,
                    RecordKind::ActualLrp => ApiErrorName::ActualLrpIndexNotFound,
                    _ => ApiErrorName::ResourceNotFound,
                };
                ApiError::new(name, err.to_string())
            }
            StoreError::AlreadyExists { kind, .. } => {
                let name = match kind {
                    RecordKind::Task => ApiErrorName::TaskGuidAlreadyExists,
                    RecordKind::DesiredLrp => ApiErrorName::DesiredLrpAlreadyExists,
                    _ => ApiErrorName::ResourceConflict,
                };
                ApiError::new(name, err.to_string())
            }
            StoreError::Conflict { .. } => ApiError::conflict(err.to_string()),
            StoreError::Corrupt { .. } | StoreError::Backend(_) => {
                tracing::error!(error = %err, "store failed");
                ApiError::new(
                    ApiErrorName::UnknownError,
                    "the server's store failed; see the server log",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.name.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let unauthorized = self.name == ApiErrorName::Unauthorized;
        let body = ApiErrorBody {
            name: self.name,
            message: self.message,
            field: self.field,
        };
        let mut response = (status, Json(body)).into_response();
        if unauthorized {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"lattice\""),
            );
        }
        response
    }
}
